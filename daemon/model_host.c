/* Resident models, the generation worker and the loader: see model_host.h.
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
#include <sys/random.h>
#include <time.h>

#include "core/error.h"
#include "model_resolve.h"
#include "request_queue.h"
#include "settings_effective.h"

/* What a load produced: everything a request needs, freed as one. */
typedef struct model_set {
    alm_model *target, *draft;
    alm_pool *pool;
    alm_seq *seq, *draft_seq;
    char model_name[256], draft_name[256], device[16];
    int threads, context_length;
    double loaded_at;
    size_t memory_bytes;
} model_set;

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

static void model_set_free(model_set *set)
{
    if (!set)
        return;
    alm_seq_free(set->seq);
    alm_seq_free(set->draft_seq);
    alm_pool_free(set->pool);
    alm_model_free(set->target);
    alm_model_free(set->draft);
    free(set);
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
    set->memory_bytes = alm_model_weight_bytes(set->target) + alm_seq_memory_bytes(set->seq);
    if (set->draft)
        set->memory_bytes += alm_model_weight_bytes(set->draft) +
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

typedef struct stream_state {
    model_host *host;
    queued_request *q;
    GString *text;
} stream_state;

static int on_text(void *user, const char *text, size_t len)
{
    stream_state *s = user;
    if (atomic_load(&s->q->cancelled) || atomic_load(&s->host->stopping))
        return 1;
    g_string_append_len(s->text, text, (gssize)len);
    post(s->host, s->q->req->client_id, protocol_token_event_line(&s->q->req->id, text, len),
         false);
    return 0;
}

/* Chat: the prompt is one user message in the model's chat format, ending
 * with the opening of the assistant's turn. */
static int render_chat(const alm_model *model, const char *prompt, char **out,
                       alm_error *err)
{
    const alm_chat_message message = { .role = "user", .content = prompt };
    return alm_chat_render(model, &message, 1, true, out, err);
}

/* Tokens of the prompt; a chat prompt is complete after rendering (BOS and
 * special tokens as text), so nothing more is added. */
static int tokenize_prompt(const model_set *set, const generate_request *req, int32_t **ids,
                           size_t *n_ids, protocol_error_code *code, alm_error *err)
{
    const alm_tokenizer *tok = alm_model_tokenizer(set->target);
    *code = PROTOCOL_ERROR_INVALID_VALUE;
    if (req->chat) {
        char *rendered = NULL;
        int r = render_chat(set->target, req->prompt, &rendered, err);
        if (r < 0)
            return r;
        if (!rendered)
            return alm_error_set(err, -EINVAL, "the chat template gave no text");
        r = alm_tokenizer_encode(tok, rendered, strlen(rendered), false, ids, n_ids, err);
        free(rendered);
        return r;
    }
    return alm_tokenizer_encode(tok, req->prompt, strlen(req->prompt), true, ids, n_ids, err);
}

/* Keeps the part of the cache that equals the prompt's start (at least one
 * prompt token must run, for its logits), and returns how many prompt
 * tokens are cached. The draft keeps the same prefix when it holds it, or
 * starts empty. */
static size_t reuse_prefix(model_set *set, const int32_t *ids, size_t n_ids, bool with_draft)
{
    int held = alm_seq_length(set->seq);
    const int32_t *cached = alm_seq_tokens(set->seq);
    size_t common = 0;
    while (common < (size_t)held && common < n_ids && cached[common] == ids[common])
        common++;
    if (common >= n_ids)
        common = n_ids - 1;
    if (with_draft) {
        int draft_held = alm_seq_length(set->draft_seq);
        const int32_t *draft_cached = alm_seq_tokens(set->draft_seq);
        bool same = (size_t)draft_held >= common &&
                    memcmp(draft_cached, ids, common * sizeof *ids) == 0;
        if (!same)
            common = 0;
        alm_seq_truncate(set->draft_seq, (int)common);
    }
    alm_seq_truncate(set->seq, (int)common);
    return common;
}

static uint64_t random_seed(void)
{
    uint64_t seed;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) == (ssize_t)sizeof seed)
        return seed;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30);
}

/* The engine's parameters: the request's values, else the stored settings. */
static alm_generate_params request_params(model_host *h, const model_set *set,
                                          const generate_request *req, bool *with_draft)
{
    alm_error warn = { 0 };
    settings_store *st = h->store;
    alm_generate_params p = alm_generate_default_params();
    p.max_tokens = req->has_max_tokens ? req->max_tokens
                                       : (int)settings_effective_int(st, "max_tokens", &warn);
    p.sampling.temperature = (float)(req->has_temperature
                                         ? req->temperature
                                         : settings_effective_number(st, "temperature", &warn));
    p.sampling.top_p = (float)(req->has_top_p ? req->top_p
                                              : settings_effective_number(st, "top_p", &warn));
    p.sampling.top_k = req->has_top_k ? req->top_k
                                      : (int)settings_effective_int(st, "top_k", &warn);
    p.sampling.min_p = (float)(req->has_min_p ? req->min_p
                                              : settings_effective_number(st, "min_p", &warn));
    p.sampling.seed = req->has_seed ? req->seed : random_seed();

    char *mode = NULL;
    alm_error merr = { 0 };
    if (settings_effective(st, "speculative", &mode, NULL, &merr) < 0)
        mode = NULL;
    *with_draft = false;
    p.speculative.mode = ALM_SPECULATIVE_OFF;
    if (req->use_draft && mode && strcmp(mode, "draft") == 0 && set->draft_seq) {
        p.speculative.mode = ALM_SPECULATIVE_DRAFT;
        *with_draft = true;
    } else if (req->use_draft && mode && strcmp(mode, "ngram") == 0) {
        p.speculative.mode = ALM_SPECULATIVE_NGRAM;
    }
    free(mode);
    p.speculative.num_draft_tokens = (int)settings_effective_int(st, "num_draft_tokens", &warn);
    p.speculative.draft_p_min = (float)settings_effective_number(st, "draft_p_min", &warn);
    if (warn.code)
        log_warning(h->log, "%s", warn.message);
    return p;
}

static int speculation_depth(const alm_speculative_stats *s)
{
    int depth = 0;
    for (int i = 0; i < ALM_MAX_DRAFT_TOKENS; i++)
        if (s->drafted_by_position[i])
            depth = i + 1;
    return depth;
}

static JsonObject *done_result(const int32_t *ids, size_t n_ids, const char *text,
                               const alm_generate_stats *st, size_t cached,
                               const alm_generate_params *p)
{
    JsonObject *result = json_object_new();
    JsonArray *id_array = json_array_sized_new((guint)n_ids);
    for (size_t i = 0; i < n_ids; i++)
        json_array_add_int_element(id_array, ids[i]);
    json_object_set_array_member(result, "ids", id_array);
    json_object_set_string_member(result, "text", text);

    const alm_speculative_stats *s = &st->speculative;
    JsonObject *stats = json_object_new();
    json_object_set_int_member(stats, "prompt_tokens", (gint64)st->prompt_tokens + (gint64)cached);
    json_object_set_int_member(stats, "cached_prompt_tokens", (gint64)cached);
    json_object_set_int_member(stats, "generated_tokens", st->generated_tokens);
    json_object_set_double_member(stats, "prefill_tok_s", st->prefill_tok_s);
    json_object_set_double_member(stats, "decode_tok_s", st->decode_tok_s);
    json_object_set_string_member(stats, "finish_reason", alm_finish_reason_name(st->finish));
    const char *mode = p->speculative.mode == ALM_SPECULATIVE_DRAFT   ? "draft"
                       : p->speculative.mode == ALM_SPECULATIVE_NGRAM ? "ngram"
                                                                      : "off";
    json_object_set_string_member(stats, "speculative", mode);
    json_object_set_int_member(stats, "drafted", s->drafted);
    json_object_set_int_member(stats, "accepted", s->accepted);
    json_object_set_double_member(stats, "acceptance_rate",
                                  s->drafted ? (double)s->accepted / (double)s->drafted : 0.0);
    JsonArray *by_position = json_array_new();
    int depth = speculation_depth(s);
    for (int i = 0; i < depth; i++)
        json_array_add_int_element(by_position, s->accepted_by_position[i]);
    json_object_set_array_member(stats, "accepted_by_position", by_position);
    /* The first token comes from the prompt pass, not a verification. */
    json_object_set_double_member(stats, "tokens_per_target_pass",
                                  s->target_passes ? (double)(st->generated_tokens - 1) /
                                                         (double)s->target_passes
                                                   : 0.0);
    json_object_set_object_member(result, "stats", stats);
    return result;
}

static void log_request(model_host *h, const model_set *set, const generate_request *req,
                        const alm_generate_stats *st, size_t cached, double started,
                        bool with_draft)
{
    int64_t by_position[ALM_MAX_DRAFT_TOKENS];
    int depth = speculation_depth(&st->speculative);
    for (int i = 0; i < depth; i++)
        by_position[i] = st->speculative.accepted_by_position[i];
    request_log_entry entry = {
        .started_at = started,
        .finished_at = now_unix(),
        .model = set->model_name,
        .draft_model = with_draft ? set->draft_name : "",
        .prompt_tokens = st->prompt_tokens + (int64_t)cached,
        .generated_tokens = st->generated_tokens,
        .prefill_seconds = st->prefill_seconds,
        .decode_seconds = st->decode_seconds,
        .drafted = st->speculative.drafted,
        .accepted = st->speculative.accepted,
        .accepted_by_position = by_position,
        .n_positions = (size_t)depth,
        .finish_reason = alm_finish_reason_name(st->finish),
        .client_uid = (int64_t)req->uid,
    };
    alm_error err = { 0 };
    if (settings_store_log_request(h->store, &entry, &err) < 0)
        log_warning(h->log, "cannot log the request: %s", err.message);
}

static void run_generate(model_host *h, model_set *set, queued_request *q)
{
    generate_request *req = q->req;
    if (!set) {
        char reason[600];
        pthread_mutex_lock(&h->lock);
        snprintf(reason, sizeof reason, "%s", h->load_error);
        pthread_mutex_unlock(&h->lock);
        post_error(h, req->client_id, &req->id, PROTOCOL_ERROR_INTERNAL,
                   "no model is loaded%s%s", reason[0] ? ": " : "", reason);
        return;
    }
    double started = now_unix();
    alm_error err = { 0 };
    int32_t *prompt = NULL, *out_ids = NULL;
    size_t n_prompt = 0, n_out = 0;
    protocol_error_code code;
    if (tokenize_prompt(set, req, &prompt, &n_prompt, &code, &err) < 0) {
        post_error(h, req->client_id, &req->id, code, "%s", err.message);
        return;
    }
    if (n_prompt == 0) {
        free(prompt);
        post_error(h, req->client_id, &req->id, PROTOCOL_ERROR_INVALID_VALUE,
                   "the prompt is empty");
        return;
    }
    if (n_prompt > h->config->max_prompt_tokens) {
        free(prompt);
        post_error(h, req->client_id, &req->id, PROTOCOL_ERROR_TOO_LARGE,
                   "prompt of %zu tokens, more than max_prompt_tokens (%zu)", n_prompt,
                   h->config->max_prompt_tokens);
        return;
    }
    if (n_prompt >= (size_t)set->context_length) {
        free(prompt);
        post_error(h, req->client_id, &req->id, PROTOCOL_ERROR_TOO_LARGE,
                   "prompt of %zu tokens leaves no room in the context of %d tokens "
                   "(context_length)", n_prompt, set->context_length);
        return;
    }
    bool with_draft;
    alm_generate_params params = request_params(h, set, req, &with_draft);
    size_t cached = reuse_prefix(set, prompt, n_prompt, with_draft);

    stream_state stream = { h, q, g_string_new(NULL) };
    alm_generate_stats st;
    memset(&st, 0, sizeof st);
    int r = alm_generate(set->seq, with_draft ? set->draft_seq : NULL, set->pool,
                         prompt + cached, n_prompt - cached, &params, on_text, &stream,
                         &out_ids, &n_out, &st, &err);
    free(prompt);
    if (r < 0) {
        /* The caches may hold a half-finished pass: start afresh next time. */
        alm_seq_truncate(set->seq, 0);
        if (set->draft_seq)
            alm_seq_truncate(set->draft_seq, 0);
        log_error(h->log, "generation failed: %s", err.message);
        post_error(h, req->client_id, &req->id, PROTOCOL_ERROR_INTERNAL, "%s", err.message);
    } else {
        log_request(h, set, req, &st, cached, started, with_draft);
        if (atomic_load(&q->cancelled)) {
            log_info(h->log, "request of client %llu cancelled after %d tokens",
                     (unsigned long long)req->client_id, st.generated_tokens);
        } else if (atomic_load(&h->stopping) && st.finish == ALM_FINISH_CANCELLED) {
            post_error(h, req->client_id, &req->id, PROTOCOL_ERROR_CANCELLED,
                       "almd is shutting down");
        } else {
            JsonObject *result = done_result(out_ids, n_out, stream.text->str, &st, cached,
                                             &params);
            post(h, req->client_id, protocol_done_event_line(&req->id, result), true);
            json_object_unref(result);
        }
    }
    free(out_ids);
    g_string_free(stream.text, TRUE);
}

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
        pthread_mutex_unlock(&h->lock);
        run_generate(h, set, q);
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
