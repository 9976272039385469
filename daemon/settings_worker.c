/* The settings thread: see settings_worker.h. */
#include "settings_worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "model_resolve.h"
#include "settings_effective.h"
#include "settings_keys.h"

typedef struct change_item {
    struct change_item *next;
    settings_change *change;
} change_item;

struct settings_worker {
    const daemon_config *config;
    settings_store *store;
    mailbox *mailbox;
    const daemon_log *log;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    change_item *head, *tail;
    bool stopping;
    bool started;
    pthread_t thread;
};

void settings_change_free(settings_change *change)
{
    if (!change)
        return;
    free(change->key);
    free(change->value);
    free(change);
}

/* Loads a model to prove it loadable (the weights are mapped, so this is
 * quick). Sets *code for the reply on failure. */
static int load_for_check(settings_worker *w, const char *key, const char *name,
                          alm_model **out, protocol_error_code *code, alm_error *err)
{
    char *dir = NULL;
    int r = model_resolve(w->config, name, &dir, err);
    if (r < 0) {
        *code = r == -ENOENT ? PROTOCOL_ERROR_NOT_FOUND : PROTOCOL_ERROR_INVALID_VALUE;
        return alm_error_prefix(err, "%s", key);
    }
    r = alm_model_load(dir, NULL, out, err);
    free(dir);
    if (r < 0) {
        *code = PROTOCOL_ERROR_INVALID_VALUE;
        return alm_error_prefix(err, "%s: %s cannot be loaded", key, name);
    }
    return 0;
}

/* model and draft_model must name loadable folders, and the pair that the
 * next restart would load must fit: a refused pair is never stored, so a
 * restart cannot fail on it (unless a folder changes meanwhile). */
static int check_models(settings_worker *w, const char *key, const char *value,
                        protocol_error_code *code, alm_error *err)
{
    bool is_draft = strcmp(key, "draft_model") == 0;
    if (is_draft && !*value)
        return 0;
    char *other = NULL;
    int r = settings_effective(w->store, is_draft ? "model" : "draft_model", &other, NULL, err);
    if (r < 0) {
        *code = PROTOCOL_ERROR_INTERNAL;
        return r;
    }
    alm_model *candidate = NULL, *partner = NULL;
    r = load_for_check(w, key, value, &candidate, code, err);
    if (r >= 0 && *other) {
        const char *other_key = is_draft ? "model" : "draft_model";
        r = load_for_check(w, other_key, other, &partner, code, err);
        if (r < 0) {
            alm_error_prefix(err, "cannot check %s against the stored %s", key, other_key);
        } else {
            const alm_model *target = is_draft ? partner : candidate;
            const alm_model *draft = is_draft ? candidate : partner;
            r = alm_check_draft(target, draft, err);
            if (r < 0) {
                *code = PROTOCOL_ERROR_INVALID_VALUE;
                if (is_draft)
                    alm_error_prefix(err, "draft_model %s does not fit model %s", value, other);
                else
                    alm_error_prefix(err, "model %s does not fit the draft_model %s (unset "
                                     "draft_model first)", value, other);
            }
        }
    }
    alm_model_free(candidate);
    alm_model_free(partner);
    free(other);
    return r;
}

static void reply_error(settings_worker *w, const settings_change *c, protocol_error_code code,
                        const char *message)
{
    mailbox_post(w->mailbox, c->client_id, protocol_error_line(&c->id, code, "%s", message),
                 true);
}

static void apply_change(settings_worker *w, const settings_change *c)
{
    const settings_key *k = settings_key_lookup(c->key);
    alm_error err = { 0 };
    protocol_error_code code = PROTOCOL_ERROR_INVALID_VALUE;
    if (!k) {
        reply_error(w, c, PROTOCOL_ERROR_NOT_FOUND, "unknown setting");
        return;
    }
    const char *value = c->unset ? k->default_value : c->value;
    /* An unset model falls back to the default model, which must fit a
     * stored draft like any other. */
    bool check = k->type == SETTINGS_TYPE_MODEL && (!c->unset || strcmp(c->key, "model") == 0);
    if (check && check_models(w, c->key, value, &code, &err) < 0) {
        reply_error(w, c, code, err.message);
        return;
    }
    int r = c->unset ? settings_store_unset(w->store, c->key, c->changed_by, &err)
                     : settings_store_set(w->store, c->key, c->value, c->changed_by, &err);
    if (r < 0) {
        log_error(w->log, "config.%s %s: %s", c->unset ? "unset" : "set", c->key, err.message);
        reply_error(w, c, PROTOCOL_ERROR_INTERNAL, err.message);
        return;
    }
    if (r > 0)
        log_notice(w->log, "%s %s %s%s%s%s%s", c->changed_by, c->unset ? "unset" : "set",
                   c->key, c->unset ? " (default \"" : " to \"", value, "\"",
                   k->needs_reload ? ", takes effect on restart" : "");
    JsonObject *result = json_object_new();
    json_object_set_string_member(result, "key", k->name);
    json_object_set_string_member(result, "value", value);
    json_object_set_boolean_member(result, "changed", r > 0);
    json_object_set_boolean_member(result, "restart_needed", k->needs_reload);
    mailbox_post(w->mailbox, c->client_id, protocol_result_line(&c->id, result), true);
    json_object_unref(result);
}

static void *worker_main(void *arg)
{
    settings_worker *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->stopping && !w->head)
            pthread_cond_wait(&w->wake, &w->lock);
        if (w->stopping)
            break;
        change_item *it = w->head;
        w->head = it->next;
        if (!w->head)
            w->tail = NULL;
        pthread_mutex_unlock(&w->lock);
        apply_change(w, it->change);
        settings_change_free(it->change);
        free(it);
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int settings_worker_new(const daemon_config *config, settings_store *store, mailbox *mb,
                        const daemon_log *log, settings_worker **out, alm_error *err)
{
    settings_worker *w = calloc(1, sizeof *w);
    if (!w)
        return alm_error_set(err, -ENOMEM, "out of memory");
    *w = (settings_worker){ .config = config, .store = store, .mailbox = mb, .log = log };
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    int r = pthread_create(&w->thread, NULL, worker_main, w);
    if (r != 0) {
        settings_worker_free(w);
        return alm_error_set(err, -r, "cannot start the settings thread: %s", strerror(r));
    }
    w->started = true;
    *out = w;
    return 0;
}

int settings_worker_submit(settings_worker *w, settings_change *change)
{
    change_item *it = malloc(sizeof *it);
    if (!it) {
        settings_change_free(change);
        return -ENOMEM;
    }
    it->next = NULL;
    it->change = change;
    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        pthread_mutex_unlock(&w->lock);
        settings_change_free(change);
        free(it);
        return -ESHUTDOWN;
    }
    if (w->tail)
        w->tail->next = it;
    else
        w->head = it;
    w->tail = it;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

void settings_worker_shutdown(settings_worker *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    change_item *list = w->head;
    w->head = w->tail = NULL;
    bool join = w->started;
    w->started = false;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    while (list) {
        change_item *next = list->next;
        reply_error(w, list->change, PROTOCOL_ERROR_CANCELLED, "almd is shutting down");
        settings_change_free(list->change);
        free(list);
        list = next;
    }
    if (join)
        pthread_join(w->thread, NULL);
}

void settings_worker_free(settings_worker *w)
{
    if (!w)
        return;
    settings_worker_shutdown(w);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
