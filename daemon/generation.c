/* One generate request on a model set: see generation.h. */
#include "generation.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/error.h"
#include "settings_effective.h"

static double now_unix(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void post_error(const generation_env *h, const generate_request *req,
                       protocol_error_code code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void post_error(const generation_env *h, const generate_request *req,
                       protocol_error_code code, const char *fmt, ...)
{
    char message[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    mailbox_post(h->mailbox, req->client_id, protocol_error_line(&req->id, code, "%s", message),
                 true);
}

typedef struct stream_state {
    const generation_env *env;
    const generate_request *req;
    const atomic_bool *cancelled;
    GString *text;
} stream_state;

static int on_text(void *user, const char *text, size_t len)
{
    stream_state *s = user;
    if (atomic_load(s->cancelled) || atomic_load(s->env->stopping))
        return 1;
    g_string_append_len(s->text, text, (gssize)len);
    mailbox_post(s->env->mailbox, s->req->client_id,
                 protocol_token_event_line(&s->req->id, text, len), false);
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
static alm_generate_params request_params(const generation_env *h, const model_set *set,
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
    p.ignore_eos = req->ignore_eos;

    char *mode = NULL;
    alm_error merr = { 0 };
    if (settings_effective(st, "speculative", &mode, NULL, &merr) < 0)
        mode = NULL;
    *with_draft = false;
    p.speculative.mode = ALM_SPECULATIVE_OFF;
    if (req->use_draft && mode) {
        bool draft = strcmp(mode, "draft") == 0, hybrid = strcmp(mode, "hybrid") == 0;
        if ((draft || hybrid) && set->draft_seq) {
            p.speculative.mode = draft ? ALM_SPECULATIVE_DRAFT : ALM_SPECULATIVE_HYBRID;
            *with_draft = true;
        } else if (hybrid || strcmp(mode, "ngram") == 0) {
            /* hybrid without a draft model: lookup alone */
            p.speculative.mode = ALM_SPECULATIVE_NGRAM;
        }
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
    json_object_set_string_member(stats, "speculative", alm_speculative_mode_name(p->speculative.mode));
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

static void log_request(const generation_env *h, const model_set *set, const generate_request *req,
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

void generation_run(const generation_env *h, model_set *set, const char *no_model_reason,
                    const generate_request *req, const atomic_bool *cancelled)
{
    if (!set) {
        post_error(h, req, PROTOCOL_ERROR_INTERNAL, "no model is loaded%s%s",
                   no_model_reason && *no_model_reason ? ": " : "",
                   no_model_reason ? no_model_reason : "");
        return;
    }
    double started = now_unix();
    alm_error err = { 0 };
    int32_t *prompt = NULL, *out_ids = NULL;
    size_t n_prompt = 0, n_out = 0;
    protocol_error_code code;
    if (tokenize_prompt(set, req, &prompt, &n_prompt, &code, &err) < 0) {
        post_error(h, req, code, "%s", err.message);
        return;
    }
    if (n_prompt == 0) {
        free(prompt);
        post_error(h, req, PROTOCOL_ERROR_INVALID_VALUE,
                   "the prompt is empty");
        return;
    }
    if (n_prompt > h->config->max_prompt_tokens) {
        free(prompt);
        post_error(h, req, PROTOCOL_ERROR_TOO_LARGE,
                   "prompt of %zu tokens, more than max_prompt_tokens (%zu)", n_prompt,
                   h->config->max_prompt_tokens);
        return;
    }
    if (n_prompt >= (size_t)set->context_length) {
        free(prompt);
        post_error(h, req, PROTOCOL_ERROR_TOO_LARGE,
                   "prompt of %zu tokens leaves no room in the context of %d tokens "
                   "(context_length)", n_prompt, set->context_length);
        return;
    }
    bool with_draft;
    alm_generate_params params = request_params(h, set, req, &with_draft);
    size_t cached = reuse_prefix(set, prompt, n_prompt, with_draft);

    stream_state stream = { h, req, cancelled, g_string_new(NULL) };
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
        post_error(h, req, PROTOCOL_ERROR_INTERNAL, "%s", err.message);
    } else {
        log_request(h, set, req, &st, cached, started, with_draft);
        if (atomic_load(cancelled)) {
            log_info(h->log, "request of client %llu cancelled after %d tokens",
                     (unsigned long long)req->client_id, st.generated_tokens);
        } else if (atomic_load(h->stopping) && st.finish == ALM_FINISH_CANCELLED) {
            post_error(h, req, PROTOCOL_ERROR_CANCELLED,
                       "almd is shutting down");
        } else {
            JsonObject *result = done_result(out_ids, n_out, stream.text->str, &st, cached,
                                             &params);
            mailbox_post(h->mailbox, req->client_id, protocol_done_event_line(&req->id, result), true);
            json_object_unref(result);
        }
    }
    free(out_ids);
    g_string_free(stream.text, TRUE);
}
