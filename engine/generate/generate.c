/* alm_generate: prefill the prompt, then decode, plainly (one token per
 * target pass) or speculatively (engine/speculative/). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/cleanup.h"
#include "core/clock.h"
#include "core/error.h"
#include "generate/generate.h"
#include "generate/session.h"
#include "speculative/speculative.h"

alm_generate_params alm_generate_default_params(void)
{
    return (alm_generate_params){
        .max_tokens = 128,
        .sampling = { .temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .seed = 0 },
        .speculative = { .mode = ALM_SPECULATIVE_OFF, .num_draft_tokens = 4,
                         .draft_p_min = 0.0f, .ngram_max = 3, .ngram_min = 1 },
    };
}

const char *alm_speculative_mode_name(alm_speculative_mode m)
{
    switch (m) {
    case ALM_SPECULATIVE_OFF: return "off";
    case ALM_SPECULATIVE_DRAFT: return "draft";
    case ALM_SPECULATIVE_NGRAM: return "ngram";
    case ALM_SPECULATIVE_HYBRID: return "hybrid";
    }
    return "unknown";
}

bool alm_speculative_uses_draft(alm_speculative_mode m)
{
    return m == ALM_SPECULATIVE_DRAFT || m == ALM_SPECULATIVE_HYBRID;
}

const char *alm_finish_reason_name(alm_finish_reason r)
{
    switch (r) {
    case ALM_FINISH_LENGTH: return "length";
    case ALM_FINISH_EOS: return "eos";
    case ALM_FINISH_STOP: return "stop";
    case ALM_FINISH_CONTEXT: return "context";
    case ALM_FINISH_CANCELLED: return "cancelled";
    }
    return "unknown";
}

/* Greedy steps decoded in one call (alm_seq_decode_greedy) at most, and
 * the output latency they may add: the text of a call's tokens reaches the
 * caller together, so a call takes as many steps as fit in that time (on
 * a GPU, where a call saves the trips to the host between its steps, up to
 * the most; on a CPU, whose steps are slow, few or one). */
#define GREEDY_STEPS_MAX 8
#define GREEDY_CALL_SECONDS 0.02

/* The steps the next greedy call may take, after one of `steps` steps
 * that took `seconds`. */
static int greedy_steps(int steps, double seconds)
{
    double per_step = seconds / steps;
    if (!(per_step > 0.0))
        return 1;
    double fit = GREEDY_CALL_SECONDS / per_step;
    return fit >= GREEDY_STEPS_MAX ? GREEDY_STEPS_MAX : fit >= 1.0 ? (int)fit : 1;
}

/* Greedy: up to *steps steps in one call, each emitted; *cur becomes the
 * last id and *steps what the next call may take. */
static int greedy_call(gen_session *g, alm_seq *seq, alm_pool *pool, int32_t *cur, int room,
                       int *steps, alm_error *err)
{
    int32_t ids[GREEDY_STEPS_MAX];
    int n = *steps;
    if (n > session_remaining(g))
        n = session_remaining(g);
    if (n > room)
        n = room;
    if (n < 1)
        n = 1;
    int before = alm_seq_length(seq);
    double t0 = alm_now_seconds();
    int r = alm_seq_decode_greedy(seq, pool, cur, 1, n, ids, NULL, err);
    if (r < 0)
        return r;
    *steps = greedy_steps(n, alm_now_seconds() - t0);
    for (int j = 0; j < n && !g->done; j++) {
        if (ids[j] < 0)
            return alm_error_set(err, -EINVAL, "sampling failed: the logits are not finite");
        r = session_emit(g, ids[j], err);
        if (r < 0)
            return r;
        /* done early: the cache keeps what one step at a time would have
         * fed, cur and the ids before this one */
        if (g->done && j < n - 1)
            alm_seq_truncate(seq, before + 1 + j);
    }
    *cur = ids[n - 1];
    return 0;
}

/* One token per pass: the baseline speculation must beat. */
static int plain_decode(gen_session *g, alm_seq *seq, alm_pool *pool, float *logits,
                        int32_t cur, alm_error *err)
{
    int steps = 1;
    while (!g->done) {
        int room = alm_seq_capacity(seq) - alm_seq_length(seq);
        if (room <= 0) {
            g->finish = ALM_FINISH_CONTEXT;
            break;
        }
        int r;
        if (sampler_get_params(g->sampler)->temperature == 0.0f) {
            /* the argmax is all that is needed (on a GPU, all that crosses
             * the bus) */
            r = greedy_call(g, seq, pool, &cur, room, &steps, err);
            if (r < 0)
                return r;
            continue;
        }
        r = alm_seq_forward(seq, pool, &cur, 1, 1, logits, err);
        if (r < 0)
            return r;
        cur = sampler_sample(g->sampler, logits, g->vocab);
        if (cur < 0)
            return alm_error_set(err, cur, "sampling failed: the logits are not finite");
        r = session_emit(g, cur, err);
        if (r < 0)
            return r;
    }
    return 0;
}

static void session_clearp(gen_session *g) { session_clear(g); }

int generate_run(alm_seq *seq, alm_seq *draft, alm_pool *pool, const int32_t *prompt,
                 size_t n_prompt, const alm_generate_params *p, alm_text_fn on_text,
                 void *user, const draft_override *override, int32_t **ids_out,
                 size_t *n_ids_out, alm_generate_stats *stats, alm_error *err)
{
    const alm_speculative_params *spec = &p->speculative;
    if (n_prompt == 0)
        return alm_error_set(err, -EINVAL, "the prompt is empty: generation needs at least one token");
    int r = speculative_check_params(spec, draft, err);
    if (r < 0)
        return r;
    if (alm_speculative_uses_draft(spec->mode)) {
        r = alm_check_draft(alm_seq_model(seq), alm_seq_model(draft), err);
        if (r < 0)
            return r;
    }

    _cleanup_(session_clearp) gen_session g;
    r = session_init(&g, alm_seq_model(seq), p, on_text, user, err);
    if (r < 0)
        return r;
    _cleanup_free_ float *logits = malloc(sizeof(float) * (size_t)g.vocab);
    if (!logits)
        return alm_error_set(err, -ENOMEM, "out of memory");

    alm_generate_stats st = { .prompt_tokens = (int)n_prompt };
    double t0 = alm_now_seconds();
    r = alm_seq_forward(seq, pool, prompt, (int)n_prompt, 1, logits, err);
    if (r == 0 && alm_speculative_uses_draft(spec->mode))
        r = speculative_prefill_draft(draft, seq, pool, err);
    if (r < 0)
        return r;
    int32_t first = -1;
    if (!g.done) {
        first = sampler_sample(g.sampler, logits, g.vocab);
        if (first < 0)
            return alm_error_set(err, first, "sampling failed: the logits are not finite");
        r = session_emit(&g, first, err);
        if (r < 0)
            return r;
    }
    double t1 = alm_now_seconds();

    if (!g.done) {
        if (spec->mode == ALM_SPECULATIVE_OFF)
            r = plain_decode(&g, seq, pool, logits, first, err);
        else
            r = speculative_decode_overridden(&g, seq, draft, pool, first, override,
                                              &st.speculative, err);
        if (r < 0)
            return r;
    }
    double t2 = alm_now_seconds();
    r = session_finish(&g, err);
    if (r < 0)
        return r;

    st.generated_tokens = (int)g.n_ids;
    st.finish = g.finish;
    st.prefill_seconds = t1 - t0;
    st.decode_seconds = t2 - t1;
    st.prefill_tok_s = st.prefill_seconds > 0 ? (double)n_prompt / st.prefill_seconds : 0.0;
    st.decode_tok_s = g.n_ids > 1 && st.decode_seconds > 0
                          ? (double)(g.n_ids - 1) / st.decode_seconds : 0.0;
    if (stats)
        *stats = st;
    if (n_ids_out)
        *n_ids_out = g.n_ids;
    if (ids_out)
        *ids_out = TAKE_PTR(g.ids);
    return 0;
}

int alm_generate(alm_seq *seq, alm_seq *draft, alm_pool *pool, const int32_t *prompt,
                 size_t n_prompt, const alm_generate_params *p, alm_text_fn on_text,
                 void *user, int32_t **ids, size_t *n_ids, alm_generate_stats *stats,
                 alm_error *err)
{
    return generate_run(seq, draft, pool, prompt, n_prompt, p, on_text, user, NULL, ids, n_ids,
                        stats, err);
}
