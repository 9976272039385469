/* The methods of docs/PROTOCOL.md. The table in common/protocol.c has
 * already checked the params' names, types and ranges; what is left here is
 * access, the settings' own validation, and the work. */
#include "methods.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "settings_effective.h"
#include "settings_keys.h"

#ifndef ALM_VERSION
#define ALM_VERSION "unknown"
#endif

typedef void (*method_handler)(server *srv, client *c, const protocol_request *req);

static double now_unix(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void reply_result(client *c, const protocol_request *req, JsonObject *result)
{
    client_send(c, protocol_result_line(&req->id, result));
    json_object_unref(result);
}

static void reply_error(client *c, const protocol_request *req, protocol_error_code code,
                        const char *message)
{
    client_send(c, protocol_error_line(&req->id, code, "%s", message));
}

/* ISO 8601, UTC, seconds. */
static void iso_time(double t, char *out, size_t size)
{
    time_t secs = (time_t)t;
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ------------------------------------------------------------ status, stats */

static void method_status(server *srv, client *c, const protocol_request *req)
{
    model_host_status st;
    model_host_get_status(srv->host, &st);
    JsonObject *r = json_object_new();
    const char *state = st.ready ? "ready" : st.loading ? "loading" : "no_model";
    json_object_set_string_member(r, "state", state);
    json_object_set_boolean_member(r, "ready", st.ready);
    json_object_set_boolean_member(r, "loading", st.loading);
    json_object_set_string_member(r, "model", st.model);
    json_object_set_string_member(r, "draft_model", st.draft_model);
    json_object_set_string_member(r, "device", st.device);
    char since[32] = "";
    if (st.ready)
        iso_time(st.since, since, sizeof since);
    json_object_set_string_member(r, "since", since);
    char started[32];
    iso_time(srv->started_at, started, sizeof started);
    json_object_set_string_member(r, "started", started);
    json_object_set_double_member(r, "uptime_s", now_unix() - srv->started_at);
    json_object_set_int_member(r, "pid", getpid());
    json_object_set_string_member(r, "version", ALM_VERSION);
    json_object_set_int_member(r, "protocol_version", PROTOCOL_VERSION);
    json_object_set_int_member(r, "clients", g_hash_table_size(srv->clients));
    json_object_set_int_member(r, "queued", (gint64)st.queued);
    json_object_set_int_member(r, "threads", st.threads);
    json_object_set_int_member(r, "context_length", st.context_length);
    json_object_set_string_member(r, "load_error", st.load_error);
    reply_result(c, req, r);
}

static void method_stats(server *srv, client *c, const protocol_request *req)
{
    request_stats rs;
    alm_error err = { 0 };
    if (settings_store_request_stats(srv->store, &rs, &err) < 0) {
        reply_error(c, req, PROTOCOL_ERROR_INTERNAL, err.message);
        return;
    }
    model_host_status st;
    model_host_get_status(srv->host, &st);
    JsonObject *r = json_object_new();
    json_object_set_double_member(r, "uptime_s", now_unix() - srv->started_at);
    json_object_set_string_member(r, "model", st.model);
    json_object_set_string_member(r, "draft_model", st.draft_model);
    json_object_set_int_member(r, "requests", rs.requests);
    json_object_set_int_member(r, "prompt_tokens", rs.prompt_tokens);
    json_object_set_int_member(r, "generated_tokens", rs.generated_tokens);
    json_object_set_double_member(r, "prefill_tok_s",
                                  rs.prefill_seconds > 0
                                      ? (double)rs.prompt_tokens / rs.prefill_seconds
                                      : 0.0);
    /* Each request's first token comes from its prompt pass. */
    int64_t decoded = rs.generated_tokens - rs.requests;
    json_object_set_double_member(r, "decode_tok_s",
                                  rs.decode_seconds > 0 && decoded > 0
                                      ? (double)decoded / rs.decode_seconds
                                      : 0.0);
    json_object_set_int_member(r, "drafted", rs.drafted);
    json_object_set_int_member(r, "accepted", rs.accepted);
    json_object_set_double_member(r, "acceptance_rate",
                                  rs.drafted ? (double)rs.accepted / (double)rs.drafted : 0.0);
    JsonArray *by_position = json_array_new();
    for (size_t i = 0; i < rs.n_positions; i++)
        json_array_add_int_element(by_position, rs.accepted_by_position[i]);
    json_object_set_array_member(r, "accepted_by_position", by_position);
    json_object_set_int_member(r, "memory_bytes", (gint64)st.memory_bytes);
    request_stats_clear(&rs);
    reply_result(c, req, r);
}

/* ------------------------------------------------------------ config */

static JsonObject *setting_object(server *srv, const settings_key *k, alm_error *err)
{
    char *value = NULL;
    bool is_default = true;
    alm_error local = { 0 };
    if (settings_effective(srv->store, k->name, &value, &is_default, &local) < 0) {
        *err = local;
        return NULL;
    }
    if (local.code)
        log_warning(srv->log, "%s", local.message);
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "key", k->name);
    json_object_set_string_member(o, "value", value);
    json_object_set_boolean_member(o, "is_default", is_default);
    json_object_set_string_member(o, "default", k->default_value);
    json_object_set_boolean_member(o, "needs_restart", k->needs_reload);
    json_object_set_string_member(o, "help", k->help);
    free(value);
    return o;
}

static void method_config_get(server *srv, client *c, const protocol_request *req)
{
    const char *key = NULL;
    protocol_param_string(req, "key", &key);
    alm_error err = { 0 };
    const settings_key *k = settings_key_lookup(key);
    if (!k) {
        settings_key_validate(key, "", NULL, &err);   /* the message lists the keys */
        reply_error(c, req, PROTOCOL_ERROR_NOT_FOUND, err.message);
        return;
    }
    JsonObject *o = setting_object(srv, k, &err);
    if (!o) {
        reply_error(c, req, PROTOCOL_ERROR_INTERNAL, err.message);
        return;
    }
    reply_result(c, req, o);
}

static void method_config_list(server *srv, client *c, const protocol_request *req)
{
    JsonArray *settings = json_array_new();
    for (size_t i = 0; i < settings_key_count(); i++) {
        alm_error err = { 0 };
        JsonObject *o = setting_object(srv, settings_key_at(i), &err);
        if (!o) {
            json_array_unref(settings);
            reply_error(c, req, PROTOCOL_ERROR_INTERNAL, err.message);
            return;
        }
        json_array_add_object_element(settings, o);
    }
    JsonObject *r = json_object_new();
    json_object_set_array_member(r, "settings", settings);
    reply_result(c, req, r);
}

/* Syntax is checked here, at once; the rest (models that must load and fit)
 * on the settings thread, which answers. */
static void submit_change(server *srv, client *c, const protocol_request *req, bool unset,
                          const char *key, char *value)
{
    settings_change *change = calloc(1, sizeof *change);
    if (!change || !(change->key = strdup(key))) {
        free(change);
        free(value);
        reply_error(c, req, PROTOCOL_ERROR_INTERNAL, "out of memory");
        return;
    }
    change->client_id = c->id;
    change->id = req->id;
    change->unset = unset;
    change->value = value;
    snprintf(change->changed_by, sizeof change->changed_by, "%s", c->peer.name);
    int r = settings_worker_submit(srv->settings, change);
    if (r < 0) {
        reply_error(c, req, r == -ESHUTDOWN ? PROTOCOL_ERROR_CANCELLED : PROTOCOL_ERROR_INTERNAL,
                    r == -ESHUTDOWN ? "almd is shutting down" : "out of memory");
        return;
    }
    c->outstanding++;
}

static void method_config_set(server *srv, client *c, const protocol_request *req)
{
    const char *key = NULL;
    protocol_param_string(req, "key", &key);
    char *text = protocol_param_scalar_text(req, "value");
    char *normalized = NULL;
    alm_error err = { 0 };
    if (!text) {
        reply_error(c, req, PROTOCOL_ERROR_INTERNAL, "out of memory");
        return;
    }
    int r = settings_key_validate(key, text, &normalized, &err);
    free(text);
    if (r < 0) {
        reply_error(c, req, r == -ENOENT ? PROTOCOL_ERROR_NOT_FOUND : PROTOCOL_ERROR_INVALID_VALUE,
                    err.message);
        return;
    }
    submit_change(srv, c, req, false, key, normalized);
}

static void method_config_unset(server *srv, client *c, const protocol_request *req)
{
    const char *key = NULL;
    protocol_param_string(req, "key", &key);
    alm_error err = { 0 };
    if (!settings_key_lookup(key)) {
        settings_key_validate(key, "", NULL, &err);
        reply_error(c, req, PROTOCOL_ERROR_NOT_FOUND, err.message);
        return;
    }
    submit_change(srv, c, req, true, key, NULL);
}

/* ------------------------------------------------------------ streaming */

static void method_generate(server *srv, client *c, const protocol_request *req)
{
    generate_request *g = calloc(1, sizeof *g);
    const char *prompt = NULL;
    protocol_param_string(req, "prompt", &prompt);
    if (!g || !(g->prompt = strdup(prompt ? prompt : ""))) {
        free(g);
        reply_error(c, req, PROTOCOL_ERROR_INTERNAL, "out of memory");
        return;
    }
    g->client_id = c->id;
    g->id = req->id;
    g->uid = c->peer.uid;
    g->use_draft = true;
    protocol_param_bool(req, "chat", &g->chat);
    protocol_param_bool(req, "draft", &g->use_draft);
    protocol_param_bool(req, "ignore_eos", &g->ignore_eos);
    int64_t v;
    if ((g->has_max_tokens = protocol_param_int(req, "max_tokens", &v)))
        g->max_tokens = (int)v;
    if ((g->has_top_k = protocol_param_int(req, "top_k", &v)))
        g->top_k = (int)v;
    if ((g->has_seed = protocol_param_int(req, "seed", &v)))
        g->seed = (uint64_t)v;
    g->has_temperature = protocol_param_number(req, "temperature", &g->temperature);
    g->has_top_p = protocol_param_number(req, "top_p", &g->top_p);
    g->has_min_p = protocol_param_number(req, "min_p", &g->min_p);
    int r = model_host_submit(srv->host, g);
    if (r < 0) {
        reply_error(c, req, r == -ESHUTDOWN ? PROTOCOL_ERROR_CANCELLED : PROTOCOL_ERROR_INTERNAL,
                    r == -ESHUTDOWN ? "almd is shutting down" : "out of memory");
        return;
    }
    c->outstanding++;
}

static void method_restart(server *srv, client *c, const protocol_request *req)
{
    alm_error err = { 0 };
    int r = model_host_load(srv->host, c->id, &req->id, &err);
    if (r < 0) {
        reply_error(c, req,
                    r == -EBUSY        ? PROTOCOL_ERROR_BUSY
                    : r == -ESHUTDOWN  ? PROTOCOL_ERROR_CANCELLED
                                       : PROTOCOL_ERROR_INTERNAL,
                    err.message);
        return;
    }
    log_notice(srv->log, "%s asked for a restart", c->peer.name);
    c->outstanding++;
}

/* ------------------------------------------------------------ dispatch */

static const method_handler handlers[PROTOCOL_METHOD_COUNT_] = {
    [PROTOCOL_METHOD_STATUS] = method_status,
    [PROTOCOL_METHOD_STATS] = method_stats,
    [PROTOCOL_METHOD_GENERATE] = method_generate,
    [PROTOCOL_METHOD_CONFIG_GET] = method_config_get,
    [PROTOCOL_METHOD_CONFIG_LIST] = method_config_list,
    [PROTOCOL_METHOD_CONFIG_SET] = method_config_set,
    [PROTOCOL_METHOD_CONFIG_UNSET] = method_config_unset,
    [PROTOCOL_METHOD_RESTART] = method_restart,
};

void methods_dispatch(server *srv, client *c, const protocol_request *req)
{
    const protocol_method *m = req->method;
    if (srv->stopping) {
        reply_error(c, req, PROTOCOL_ERROR_CANCELLED, "almd is shutting down");
        return;
    }
    if (m->needs_admin && !c->peer.admin) {
        char message[300];
        const char *group = srv->config->admin_group;
        snprintf(message, sizeof message, "%s is for root and members of the group %s%s; "
                 "%s is neither", m->name, group,
                 peer_group_exists(group) ? "" : " (which does not exist)", c->peer.name);
        reply_error(c, req, PROTOCOL_ERROR_FORBIDDEN, message);
        return;
    }
    handlers[m->id](srv, c, req);
}
