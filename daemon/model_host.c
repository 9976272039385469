/* Resident models, the generation worker and the loader: see model_host.h.
 * What one request does is in generation.c.
 *
 * Locking: one mutex guards the queue, the serving and pending sets, the
 * running request and the status fields; the worker drops it while it
 * generates. Models are immutable, so the loader builds a new set without
 * the lock. Cancellation flags are atomics so that on_text (called for each
 * piece of text) never takes the lock. */
#include "model_host.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "generation.h"
#include "model_resolve.h"
#include "model_set.h"
#include "request_queue.h"
#include "settings_effective.h"

typedef struct queued_request {
    generate_request *req;
    atomic_bool cancelled;
} queued_request;

typedef struct load_job {
    uint64_t client_id;
    protocol_id id;
} load_job;

struct model_host {
    const daemon_config *config;
    settings_store *store;
    mailbox *mailbox;
    const daemon_log *log;

    pthread_mutex_t lock;
    pthread_cond_t wake;            /* the worker: work, a set to swap in, or stop */
    request_queue *queue;
    model_set *serving;
    model_set *pending;             /* loaded, waiting to be swapped in */
    load_job pending_job;           /* whom to tell once pending serves */
    queued_request *running;
    bool loading;
    bool load_thread_started;       /* loader needs joining */
    bool worker_started;
    atomic_bool stopping;
    char load_error[512];
    char load_progress[600];        /* what the running load does now */

    pthread_t worker;
    pthread_t loader;
    load_job load;                  /* the running load's requester */
};

static double now_unix(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void generate_request_free(generate_request *req)
{
    if (!req)
        return;
    free(req->prompt);
    free(req);
}

static void queued_request_free(void *item)
{
    queued_request *q = item;
    if (!q)
        return;
    generate_request_free(q->req);
    free(q);
}

/* ------------------------------------------------------------ replies */

static void post(model_host *h, uint64_t client_id, char *line, bool final)
{
    if (client_id == MODEL_HOST_STATE_CHANGED) {
        free(line);
        return;
    }
    mailbox_post(h->mailbox, client_id, line, final);
}

static void post_error(model_host *h, uint64_t client_id, const protocol_id *id,
                       protocol_error_code code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void post_error(model_host *h, uint64_t client_id, const protocol_id *id,
                       protocol_error_code code, const char *fmt, ...)
{
    char message[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    post(h, client_id, protocol_error_line(id, code, "%s", message), true);
}

static void post_progress(model_host *h, const load_job *job, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void post_progress(model_host *h, const load_job *job, const char *fmt, ...)
{
    char message[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    log_info(h->log, "%s", message);
    pthread_mutex_lock(&h->lock);
    snprintf(h->load_progress, sizeof h->load_progress, "%s", message);
    pthread_mutex_unlock(&h->lock);
    /* The loop shows it in systemd's STATUS=. */
    mailbox_post(h->mailbox, MODEL_HOST_STATE_CHANGED, NULL, false);
    if (job->client_id == MODEL_HOST_STATE_CHANGED)
        return;
    JsonObject *fields = json_object_new();
    json_object_set_string_member(fields, "message", message);
    post(h, job->client_id, protocol_event_line(&job->id, "progress", fields), false);
    json_object_unref(fields);
}

static void notify_state_changed(model_host *h)
{
    mailbox_post(h->mailbox, MODEL_HOST_STATE_CHANGED, NULL, false);
}

/* ------------------------------------------------------------ loading */

static int load_model_named(model_host *h, const load_job *job, const char *what,
                            const char *name, const char *device, alm_model **out,
                            alm_error *err)
{
    char *dir = NULL;
    int r = model_resolve(h->config, name, &dir, err);
    if (r < 0)
        return alm_error_prefix(err, "%s", what);
    post_progress(h, job, "loading %s %s from %s", what, name, dir);
    alm_model_params params = alm_model_default_params();
    params.device = device;
    r = alm_model_load(dir, &params, out, err);
    free(dir);
    if (r < 0)
        return alm_error_prefix(err, "%s %s", what, name);
    return 0;
}

/* Builds a model set from the stored settings. */
static int build_model_set(model_host *h, const load_job *job, model_set **out, alm_error *err)
{
    alm_error warn = { 0 };
    char *model = NULL, *draft = NULL, *device = NULL;
    int r = settings_effective(h->store, "model", &model, NULL, err);
    if (r >= 0)
        r = settings_effective(h->store, "draft_model", &draft, NULL, err);
    if (r >= 0)
        r = settings_effective(h->store, "device", &device, NULL, err);
    if (r < 0) {
        free(model);
        free(draft);
        free(device);
        return r;
    }
    model_set *set = calloc(1, sizeof *set);
    if (!set) {
        r = alm_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    snprintf(set->model_name, sizeof set->model_name, "%s", model);
    snprintf(set->draft_name, sizeof set->draft_name, "%s", draft);
    snprintf(set->device, sizeof set->device, "%s", device);
    set->threads = (int)settings_effective_int(h->store, "threads", &warn);
    set->context_length = (int)settings_effective_int(h->store, "context_length", &warn);

    r = load_model_named(h, job, "model", model, device, &set->target, err);
    if (r >= 0 && *draft) {
        r = load_model_named(h, job, "draft model", draft, device, &set->draft, err);
        if (r >= 0) {
            post_progress(h, job, "checking that %s can draft for %s", draft, model);
            r = alm_check_draft(set->target, set->draft, err);
            if (r < 0)
                alm_error_prefix(err, "draft_model %s does not fit model %s", draft, model);
        }
    }
    if (r < 0)
        goto out;
    int capacity = set->context_length;
    if (capacity > alm_model_max_context(set->target))
        capacity = alm_model_max_context(set->target);
    if (set->draft && capacity > alm_model_max_context(set->draft))
        capacity = alm_model_max_context(set->draft);
    set->context_length = capacity;
    r = alm_pool_new(set->threads, &set->pool);
    if (r < 0) {
        r = alm_error_set(err, r, "cannot start %d threads: %s", set->threads, strerror(-r));
        goto out;
    }
    set->threads = alm_pool_size(set->pool);
    r = alm_seq_new(set->target, capacity, &set->seq, err);
    if (r >= 0 && set->draft)
        r = alm_seq_new(set->draft, capacity, &set->draft_seq, err);
    if (r < 0)
        goto out;
    set->memory_bytes = alm_model_memory_bytes(set->target) + alm_seq_memory_bytes(set->seq);
    if (set->draft)
        set->memory_bytes += alm_model_memory_bytes(set->draft) +
                             alm_seq_memory_bytes(set->draft_seq);
    set->loaded_at = now_unix();
    *out = set;
    set = NULL;
out:
    model_set_free(set);
    free(model);
    free(draft);
    free(device);
    return r;
}

static void *loader_main(void *arg)
{
    model_host *h = arg;
    load_job job = h->load;   /* written before the thread started */
    alm_error err = { 0 };
    model_set *set = NULL;
    int r = build_model_set(h, &job, &set, &err);
    /* Said before the set is handed over: the worker posts done as soon as
     * it serves, and no event may follow done. */
    if (r >= 0)
        post_progress(h, &job, "loaded; switching over once the running request is done");

    pthread_mutex_lock(&h->lock);
    if (r < 0 || atomic_load(&h->stopping)) {
        h->loading = false;
        bool serving = h->serving != NULL;
        if (r < 0)
            snprintf(h->load_error, sizeof h->load_error, "%s", err.message);
        /* Requests that waited for the first load now get their answer. */
        pthread_cond_signal(&h->wake);
        pthread_mutex_unlock(&h->lock);
        model_set_free(set);
        if (r < 0) {
            log_error(h->log, "loading failed: %s%s", err.message,
                      serving ? " (the old models keep serving)" : "");
            post_error(h, job.client_id, &job.id,
                       r == -ENOENT ? PROTOCOL_ERROR_NOT_FOUND : PROTOCOL_ERROR_INVALID_VALUE,
                       "%s%s", err.message, serving ? "; the old models keep serving" : "");
        } else {
            post_error(h, job.client_id, &job.id, PROTOCOL_ERROR_CANCELLED,
                       "almd is shutting down");
        }
        notify_state_changed(h);
        return NULL;
    }
    h->pending = set;
    h->pending_job = job;
    h->load_error[0] = '\0';
    pthread_cond_signal(&h->wake);
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

int model_host_load(model_host *host, uint64_t client_id, const protocol_id *id,
                    alm_error *err)
{
    pthread_mutex_lock(&host->lock);
    if (atomic_load(&host->stopping)) {
        pthread_mutex_unlock(&host->lock);
        return alm_error_set(err, -ESHUTDOWN, "almd is shutting down");
    }
    if (host->loading) {
        pthread_mutex_unlock(&host->lock);
        return alm_error_set(err, -EBUSY, "a restart is already running");
    }
    if (host->load_thread_started) {
        /* The previous loader has finished (loading is false): reap it. */
        pthread_join(host->loader, NULL);
        host->load_thread_started = false;
    }
    host->load = (load_job){ .client_id = client_id };
    if (id)
        host->load.id = *id;
    host->loading = true;
    int r = pthread_create(&host->loader, NULL, loader_main, host);
    if (r != 0) {
        host->loading = false;
        pthread_mutex_unlock(&host->lock);
        return alm_error_set(err, -r, "cannot start the loader thread: %s", strerror(r));
    }
    host->load_thread_started = true;
    pthread_mutex_unlock(&host->lock);
    return 0;
}

/* ------------------------------------------------------------ generation */

static JsonObject *restart_result(const model_set *set)
{
    JsonObject *result = json_object_new();
    json_object_set_string_member(result, "model", set->model_name);
    json_object_set_string_member(result, "draft_model", set->draft_name);
    json_object_set_string_member(result, "device", set->device);
    json_object_set_int_member(result, "threads", set->threads);
    json_object_set_int_member(result, "context_length", set->context_length);
    json_object_set_int_member(result, "memory_bytes", (gint64)set->memory_bytes);
    return result;
}

static void *worker_main(void *arg)
{
    model_host *h = arg;
    pthread_mutex_lock(&h->lock);
    for (;;) {
        /* Requests wait while the first load runs: they want a model. */
        while (!atomic_load(&h->stopping) && !h->pending &&
               (request_queue_length(h->queue) == 0 || (!h->serving && h->loading)))
            pthread_cond_wait(&h->wake, &h->lock);
        if (atomic_load(&h->stopping))
            break;
        if (h->pending) {
            model_set *old = h->serving;
            h->serving = h->pending;
            h->pending = NULL;
            h->loading = false;
            load_job job = h->pending_job;
            model_set *now = h->serving;
            pthread_mutex_unlock(&h->lock);
            model_set_free(old);
            log_notice(h->log, "serving model %s%s%s (%zu MiB with caches, %d threads)",
                       now->model_name, now->draft_name[0] ? ", draft " : "",
                       now->draft_name, now->memory_bytes >> 20, now->threads);
            JsonObject *result = restart_result(now);
            post(h, job.client_id, protocol_done_event_line(&job.id, result), true);
            json_object_unref(result);
            notify_state_changed(h);
            pthread_mutex_lock(&h->lock);
            continue;
        }
        queued_request *q = request_queue_pop(h->queue, NULL);
        h->running = q;
        model_set *set = h->serving;
        char no_model_reason[sizeof h->load_error];
        snprintf(no_model_reason, sizeof no_model_reason, "%s", h->load_error);
        pthread_mutex_unlock(&h->lock);
        const generation_env env = {
            .config = h->config, .store = h->store, .mailbox = h->mailbox, .log = h->log,
            .stopping = &h->stopping,
        };
        generation_run(&env, set, no_model_reason, q->req, &q->cancelled);
        pthread_mutex_lock(&h->lock);
        h->running = NULL;
        queued_request_free(q);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

/* ------------------------------------------------------------ lifecycle */

int model_host_new(const model_host_options *options, model_host **out, alm_error *err)
{
    model_host *h = calloc(1, sizeof *h);
    if (!h)
        return alm_error_set(err, -ENOMEM, "out of memory");
    h->config = options->config;
    h->store = options->store;
    h->mailbox = options->mailbox;
    h->log = options->log;
    h->queue = request_queue_new();
    if (!h->queue) {
        free(h);
        return alm_error_set(err, -ENOMEM, "out of memory");
    }
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->wake, NULL);
    atomic_init(&h->stopping, false);
    int r = pthread_create(&h->worker, NULL, worker_main, h);
    if (r != 0) {
        model_host_free(h);
        return alm_error_set(err, -r, "cannot start the worker thread: %s", strerror(r));
    }
    h->worker_started = true;
    *out = h;
    return 0;
}

int model_host_submit(model_host *host, generate_request *req)
{
    queued_request *q = calloc(1, sizeof *q);
    if (!q) {
        generate_request_free(req);
        return -ENOMEM;
    }
    q->req = req;
    atomic_init(&q->cancelled, false);
    pthread_mutex_lock(&host->lock);
    int r = atomic_load(&host->stopping) ? -ESHUTDOWN
                                         : request_queue_push(host->queue, req->client_id, q);
    if (r == 0)
        pthread_cond_signal(&host->wake);
    pthread_mutex_unlock(&host->lock);
    if (r < 0)
        queued_request_free(q);
    return r;
}

static void drop_request(void *item, void *user)
{
    (void)user;
    queued_request_free(item);
}

void model_host_cancel_client(model_host *host, uint64_t client_id)
{
    pthread_mutex_lock(&host->lock);
    request_queue_remove_client(host->queue, client_id, drop_request, NULL);
    if (host->running && host->running->req->client_id == client_id)
        atomic_store(&host->running->cancelled, true);
    /* A restart it asked for goes on: its lines are dropped by the loop,
     * which no longer knows the client (ids are never reused). */
    pthread_mutex_unlock(&host->lock);
}

static void answer_cancelled(void *item, void *user)
{
    model_host *h = user;
    queued_request *q = item;
    post_error(h, q->req->client_id, &q->req->id, PROTOCOL_ERROR_CANCELLED,
               "almd is shutting down");
    queued_request_free(q);
}

void model_host_shutdown(model_host *host)
{
    if (!host)
        return;
    pthread_mutex_lock(&host->lock);
    atomic_store(&host->stopping, true);
    /* Every lane: pop in order and answer. */
    uint64_t client_id;
    queued_request *q;
    while ((q = request_queue_pop(host->queue, &client_id)))
        answer_cancelled(q, host);
    /* The running request sees stopping in on_text. */
    pthread_cond_broadcast(&host->wake);
    bool join_worker = host->worker_started, join_loader = host->load_thread_started;
    host->worker_started = false;
    host->load_thread_started = false;
    pthread_mutex_unlock(&host->lock);
    if (join_worker)
        pthread_join(host->worker, NULL);
    if (join_loader)
        pthread_join(host->loader, NULL);
}

void model_host_free(model_host *host)
{
    if (!host)
        return;
    model_host_shutdown(host);
    model_set_free(host->serving);
    model_set_free(host->pending);
    request_queue_free(host->queue, queued_request_free);
    pthread_cond_destroy(&host->wake);
    pthread_mutex_destroy(&host->lock);
    free(host);
}

void model_host_get_status(model_host *host, model_host_status *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&host->lock);
    const model_set *set = host->serving;
    out->ready = set != NULL;
    out->loading = host->loading;
    if (set) {
        snprintf(out->model, sizeof out->model, "%s", set->model_name);
        snprintf(out->draft_model, sizeof out->draft_model, "%s", set->draft_name);
        snprintf(out->device, sizeof out->device, "%s", set->device);
        out->since = set->loaded_at;
        out->memory_bytes = set->memory_bytes;
        out->threads = set->threads;
        out->context_length = set->context_length;
    }
    out->queued = request_queue_length(host->queue);
    out->generating = host->running != NULL;
    snprintf(out->load_error, sizeof out->load_error, "%s", host->load_error);
    if (host->loading)
        snprintf(out->load_progress, sizeof out->load_progress, "%s", host->load_progress);
    pthread_mutex_unlock(&host->lock);
}
