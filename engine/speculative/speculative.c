#include "speculative/speculative.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/argmax.h"
#include "core/cleanup.h"
#include "core/clock.h"
#include "core/error.h"
#include "speculative/draft_length.h"
#include "speculative/ngram.h"

int speculative_check_params(const alm_speculative_params *p, const alm_seq *draft,
                             alm_error *err)
{
    if (p->mode == ALM_SPECULATIVE_OFF)
        return 0;
    if (p->num_draft_tokens < 0 || p->num_draft_tokens > ALM_MAX_DRAFT_TOKENS)
        return alm_error_set(err, -EINVAL, "num_draft_tokens %d: expected 1 to %d, or auto",
                             p->num_draft_tokens, ALM_MAX_DRAFT_TOKENS);
    if (!(p->draft_p_min >= 0.0f && p->draft_p_min < 1.0f))
        return alm_error_set(err, -EINVAL, "draft_p_min %g: expected a probability in [0, 1)",
                             (double)p->draft_p_min);
    bool uses_draft = alm_speculative_uses_draft(p->mode);
    bool uses_ngram = p->mode == ALM_SPECULATIVE_NGRAM || p->mode == ALM_SPECULATIVE_HYBRID;
    if (uses_draft && !draft)
        return alm_error_set(err, -EINVAL, "%s speculation needs a draft model",
                             alm_speculative_mode_name(p->mode));
    if (uses_draft &&
        (p->draft_vocab < 0 || p->draft_vocab > alm_model_vocab_size(alm_seq_model(draft))))
        return alm_error_set(err, -EINVAL, "draft_vocab %d: expected 0 (all) to %d",
                             p->draft_vocab, alm_model_vocab_size(alm_seq_model(draft)));
    if (uses_ngram &&
        (p->ngram_min < 1 || p->ngram_max < p->ngram_min || p->ngram_max > 64))
        return alm_error_set(err, -EINVAL, "n-gram lengths %d..%d: expected 1 <= min <= max <= 64",
                             p->ngram_min, p->ngram_max);
    return 0;
}

int speculative_prefill_draft(alm_seq *draft, const alm_seq *target, alm_pool *pool,
                              alm_error *err)
{
    int have = alm_seq_length(draft), want = alm_seq_length(target);
    const int32_t *mine = alm_seq_tokens(draft), *theirs = alm_seq_tokens(target);
    /* Keep what the two share, redo the rest. */
    int same = 0;
    while (same < have && same < want && mine[same] == theirs[same])
        same++;
    alm_seq_truncate(draft, same);
    if (want - same > alm_seq_capacity(draft) - same)
        return alm_error_set(err, -ENOSPC, "the draft's context (%d) is shorter than the prompt (%d)",
                             alm_seq_capacity(draft), want);
    return alm_seq_forward(draft, pool, theirs + same, want - same, 0, NULL, err);
}

int32_t speculative_accept(sampler *smp, float *p, const float *q, int32_t x, int vocab)
{
    double ratio = q[x] > 0 ? (double)p[x] / q[x] : 0.0;
    if (sampler_uniform(smp) < ratio)
        return SPECULATIVE_ACCEPTED;
    /* Rejected: draw from normalize(max(0, p - q)). It is empty only when
     * p == q up to rounding, and then x would have been accepted with
     * probability 1 but for that rounding: draw from p instead. */
    double mass = 0.0;
    for (int v = 0; v < vocab; v++) {
        float w = p[v] - q[v];
        mass += w > 0 ? w : 0.0f;
    }
    if (mass > 0)
        for (int v = 0; v < vocab; v++)
            p[v] = p[v] > q[v] ? p[v] - q[v] : 0.0f;
    int32_t t = sampler_sample_from_probs(smp, p, vocab);
    return t < 0 ? SPECULATIVE_FAILED : t;
}

/* Everything one decode needs besides the session. */
typedef struct spec_state {
    gen_session *g;
    alm_seq *target, *draft;
    alm_pool *pool;
    const alm_speculative_params *params;
    alm_speculative_stats *stats;
    bool greedy;
    int vocab;
    sampler *draft_sampler;
    float *target_logits;   /* [k + 1][vocab] */
    float *draft_logits;    /* [vocab] */
    float *q;               /* [k][vocab]: the draft's processed distributions */
    float *p;               /* [vocab] */
    int32_t *feed;          /* [target capacity + 1]: the draft's catch-up */
    bool history_wanted;    /* n-gram lookup proposes (ngram or hybrid) */
    int32_t *history;       /* prompt + output, for n-gram lookup */
    size_t history_len, history_cap;
    draft_length length;
    const draft_override *override; /* bench-only: replaces the draft's proposals */
} spec_state;

/* One pass of the draft model over tokens: its logits, or when greedy only
 * their argmax (best) and, for draft_p_min, its probability (top). */
static int draft_pass(spec_state *s, const int32_t *tokens, int n, int32_t *best, float *top,
                      alm_error *err)
{
    if (!s->greedy)
        return alm_seq_forward(s->draft, s->pool, tokens, n, 1, s->draft_logits, err);
    return alm_seq_forward_argmax(s->draft, s->pool, tokens, n, 1, best,
                                  s->params->draft_p_min > 0.0f ? top : NULL, err);
}

/* Greedy drafting with no threshold: the catch-up pass over feed[0..n_feed)
 * and the k - 1 passes after it in one call, each fed the argmax of the
 * one before (on a GPU without a trip to the host in between). */
static int draft_greedy(spec_state *s, int n_feed, int k, int32_t *d, alm_error *err)
{
    int r = alm_seq_decode_greedy(s->draft, s->pool, s->feed, n_feed, k, d, NULL, err);
    if (r < 0)
        return r;
    s->stats->draft_passes += k;
    int target_len = alm_seq_length(s->target);
    for (int i = 0; i < k; i++) {
        if (d[i] < 0)
            return alm_error_set(err, -EINVAL, "draft sampling failed: the logits are not finite");
        /* the bench's override replaces the proposals, not what the draft
         * fed itself: its cache is set right after verification */
        if (s->override)
            d[i] = s->override->propose(s->override->user, target_len + 1 + i, d[i]);
    }
    return k;
}

/* Drafts up to k tokens with the draft model into d[]; q[i] gets the
 * distribution d[i] was drawn from. Returns how many were drafted. */
static int draft_with_model(spec_state *s, int32_t cur, int k, int32_t *d, alm_error *err)
{
    alm_seq *draft = s->draft;
    const int32_t *committed = alm_seq_tokens(s->target);
    int target_len = alm_seq_length(s->target);
    int have = alm_seq_length(draft);
    if (have > target_len)
        have = target_len;
    alm_seq_truncate(draft, have);

    /* Catch up on what the draft has not seen (tokens it did not propose,
     * a bonus token), then cur, in one pass. */
    int n_feed = target_len - have;
    if (alm_seq_capacity(draft) - have < n_feed + 1 + k)
        return 0; /* no room left in the draft's cache: verify cur alone */
    memcpy(s->feed, committed + have, sizeof(int32_t) * (size_t)n_feed);
    s->feed[n_feed++] = cur;
    if (s->greedy && s->params->draft_p_min <= 0.0f)
        return draft_greedy(s, n_feed, k, d, err);
    int32_t best = -1;
    float top = 1.0f;
    int r = draft_pass(s, s->feed, n_feed, &best, &top, err);
    if (r < 0)
        return r;
    s->stats->draft_passes++;

    int n = 0;
    while (n < k) {
        /* the draft's confidence: the top probability of its distribution */
        float p_min = s->params->draft_p_min;
        if (p_min > 0.0f && !s->greedy) {
            const float *l = s->draft_logits;
            top = alm_top_probability(l, s->vocab, l[alm_argmax(l, s->vocab)]);
        }
        if (p_min > 0.0f && top < p_min)
            break;
        float *q = s->q + (size_t)n * s->vocab;
        int32_t x;
        if (s->greedy) {
            x = best;
            if (x < 0)
                return alm_error_set(err, -EINVAL, "draft sampling failed: the logits are not finite");
        } else {
            r = sampler_probs(s->draft_sampler, s->draft_logits, s->vocab, q);
            if (r < 0)
                return alm_error_set(err, r, "draft sampling failed");
            x = sampler_sample_from_probs(s->draft_sampler, q, s->vocab);
            if (x < 0)
                return alm_error_set(err, x, "draft sampling failed");
        }
        if (s->override)
            x = s->override->propose(s->override->user, target_len + 1 + n, x);
        d[n++] = x;
        if (n == k)
            break;
        r = draft_pass(s, &x, 1, &best, &top, err);
        if (r < 0)
            return r;
        s->stats->draft_passes++;
    }
    return n;
}

/* Drafts by n-gram lookup; the "distribution" of each proposal is a point
 * mass on it. */
static int draft_with_ngram(spec_state *s, int k, int32_t *d)
{
    int n = ngram_propose(s->history, s->history_len, s->params->ngram_max,
                          s->params->ngram_min, k, d);
    if (!s->greedy)
        for (int i = 0; i < n; i++) {
            float *q = s->q + (size_t)i * s->vocab;
            memset(q, 0, sizeof(float) * (size_t)s->vocab);
            q[d[i]] = 1.0f;
        }
    return n;
}

static int history_push(spec_state *s, int32_t id)
{
    if (s->history_len == s->history_cap) {
        size_t cap = s->history_cap * 2 + 64;
        int32_t *grown = realloc(s->history, sizeof *grown * cap);
        if (!grown)
            return -ENOMEM;
        s->history = grown;
        s->history_cap = cap;
    }
    s->history[s->history_len++] = id;
    return 0;
}

/* Emits a token into the session (and the n-gram history). */
static int emit(spec_state *s, int32_t id, alm_error *err)
{
    if (s->history_wanted && history_push(s, id) < 0)
        return alm_error_set(err, -ENOMEM, "out of memory");
    return session_emit(s->g, id, err);
}

/* One draft-verify-accept step. */
static int speculative_step(spec_state *s, int32_t *cur, alm_error *err)
{
    gen_session *g = s->g;
    int target_len = alm_seq_length(s->target);
    int k = draft_length_next(&s->length);
    /* No more proposals than tokens still wanted or room in the cache. */
    int room = alm_seq_capacity(s->target) - target_len - 1;
    if (k > session_remaining(g) - 1)
        k = session_remaining(g) - 1;
    if (k > room)
        k = room;
    if (k < 0)
        k = 0;

    int32_t d[ALM_MAX_DRAFT_TOKENS];
    double t0 = alm_now_seconds();
    int n = 0;
    if (k > 0) {
        switch (s->params->mode) {
        case ALM_SPECULATIVE_NGRAM:
            n = draft_with_ngram(s, k, d);
            if (n > 0)
                s->stats->lookup_passes++;
            break;
        case ALM_SPECULATIVE_HYBRID:
            /* A continuation found in the text costs nothing; the draft
             * model runs only where lookup has none. One source per step,
             * chosen from the text alone (never from the target's
             * randomness), so each proposal's q is the distribution it
             * was drawn from and the acceptance rule stays exact. */
            n = draft_with_ngram(s, k, d);
            if (n == 0)
                n = draft_with_model(s, *cur, k, d, err);
            else
                s->stats->lookup_passes++;
            break;
        default:
            n = draft_with_model(s, *cur, k, d, err);
            break;
        }
        if (n < 0)
            return n;
    }
    double t1 = alm_now_seconds();

    /* Verify: the target scores cur and every proposal in one pass. */
    int32_t batch[ALM_MAX_DRAFT_TOKENS + 1];
    batch[0] = *cur;
    memcpy(batch + 1, d, sizeof(int32_t) * (size_t)n);
    /* greedy: only the target's argmax at each position is needed */
    int32_t want[ALM_MAX_DRAFT_TOKENS + 1];
    int r = s->greedy ? alm_seq_forward_argmax(s->target, s->pool, batch, n + 1, n + 1, want, NULL, err)
                      : alm_seq_forward(s->target, s->pool, batch, n + 1, n + 1, s->target_logits, err);
    if (r < 0)
        return r;
    for (int i = 0; s->greedy && i <= n; i++)
        if (want[i] < 0)
            return alm_error_set(err, -EINVAL, "sampling failed: the logits are not finite");
    double t2 = alm_now_seconds();

    /* Accept proposals while the target agrees (greedy) or by the
     * speculative sampling rule; then one more token from the target. */
    int accepted = 0;
    int32_t next = -1;
    for (int i = 0; i < n && next < 0; i++) {
        const float *logits = s->target_logits + (size_t)i * s->vocab;
        if (s->greedy) {
            if (want[i] != d[i])
                next = want[i];
        } else {
            r = sampler_probs(g->sampler, logits, s->vocab, s->p);
            if (r < 0)
                return alm_error_set(err, r, "sampling failed: the logits are not finite");
            const float *q = s->q + (size_t)i * s->vocab;
            next = speculative_accept(g->sampler, s->p, q, d[i], s->vocab);
            if (next == SPECULATIVE_FAILED)
                return alm_error_set(err, -EINVAL, "sampling failed: no residual to draw from");
        }
        if (next < 0) {
            accepted++;
            s->stats->accepted_by_position[i]++;
        }
    }
    if (next < 0) {
        const float *logits = s->target_logits + (size_t)n * s->vocab;
        next = s->greedy ? want[n] : sampler_sample(g->sampler, logits, s->vocab);
        if (next < 0)
            return alm_error_set(err, next, "sampling failed: the logits are not finite");
    }

    for (int i = 0; i < n; i++)
        s->stats->drafted_by_position[i]++;
    s->stats->drafted += n;
    s->stats->accepted += accepted;
    s->stats->target_passes++;
    s->stats->draft_seconds += t1 - t0;
    s->stats->target_seconds += t2 - t1;
    draft_length_update(&s->length, n, accepted, t1 - t0, t2 - t1);
    if (s->override && s->override->verified)
        s->override->verified(s->override->user, n, accepted);

    /* The caches forget the rejected proposals; the draft keeps what it
     * shares with the target (it may have fed itself other tokens than
     * the proposals, see draft_greedy) and catches up on the rest at its
     * next step. */
    alm_seq_truncate(s->target, target_len + 1 + accepted);
    if (s->draft) {
        int len = alm_seq_length(s->draft), keep = target_len + 1 + accepted;
        const int32_t *mine = alm_seq_tokens(s->draft), *theirs = alm_seq_tokens(s->target);
        int same = len < target_len ? len : target_len;   /* a prefix of the target's before this step */
        while (same < len && same < keep && mine[same] == theirs[same])
            same++;
        if (same < len)
            alm_seq_truncate(s->draft, same);
    }

    for (int i = 0; i < accepted && !g->done; i++) {
        r = emit(s, d[i], err);
        if (r < 0)
            return r;
    }
    if (!g->done) {
        r = emit(s, next, err);
        if (r < 0)
            return r;
    }
    *cur = next;
    return 0;
}

static void spec_state_clear(spec_state *s)
{
    if (s->draft)
        alm_seq_set_vocab_limit(s->draft, 0);
    sampler_free(s->draft_sampler);
    free(s->target_logits);
    free(s->draft_logits);
    free(s->q);
    free(s->p);
    free(s->feed);
    free(s->history);
}

int speculative_decode_overridden(gen_session *g, alm_seq *target, alm_seq *draft,
                                  alm_pool *pool, int32_t cur, const draft_override *override,
                                  alm_speculative_stats *stats, alm_error *err)
{
    const alm_generate_params *gp = g->params;
    _cleanup_(spec_state_clear) spec_state s = {
        .g = g, .target = target, .pool = pool, .params = &gp->speculative, .stats = stats,
        .greedy = gp->sampling.temperature == 0.0f, .vocab = g->vocab, .override = override,
    };
    /* A replaced token has no draft probability: only greedy verification
     * makes sense of it. */
    if (override && (!s.greedy || gp->speculative.mode != ALM_SPECULATIVE_DRAFT))
        return alm_error_set(err, -EINVAL, "a draft override needs a draft model and greedy decoding");
    if (alm_speculative_uses_draft(gp->speculative.mode)) {
        /* Proposals from the first draft_vocab ids only. Exactness does
         * not suffer: q is the distribution the proposal was drawn from,
         * zero outside those ids, and the acceptance rule and the residual
         * max(0, p - q) hold for any q. */
        s.draft = draft;
        int r = alm_seq_set_vocab_limit(draft, gp->speculative.draft_vocab);
        if (r < 0)
            return alm_error_set(err, r, "draft_vocab %d is outside the draft's vocabulary",
                                 gp->speculative.draft_vocab);
    }
    size_t v = (size_t)g->vocab;
    s.target_logits = malloc(sizeof(float) * v * (ALM_MAX_DRAFT_TOKENS + 1));
    s.draft_logits = malloc(sizeof(float) * v);
    s.q = malloc(sizeof(float) * v * ALM_MAX_DRAFT_TOKENS);
    s.p = malloc(sizeof(float) * v);
    s.feed = malloc(sizeof(int32_t) * ((size_t)alm_seq_capacity(target) + 1));
    if (!s.target_logits || !s.draft_logits || !s.q || !s.p || !s.feed)
        return alm_error_set(err, -ENOMEM, "out of memory");
    if (!s.greedy) {
        /* The draft samples with the target's settings (so that q is
         * processed like p) but its own random stream. */
        sampling_params dp = *sampler_get_params(g->sampler);
        dp.seed ^= 0x9e3779b97f4a7c15ull;
        int r = sampler_new(&dp, g->vocab, &s.draft_sampler, err);
        if (r < 0)
            return r;
    }
    s.history_wanted = gp->speculative.mode == ALM_SPECULATIVE_NGRAM ||
                       gp->speculative.mode == ALM_SPECULATIVE_HYBRID;
    if (s.history_wanted) {
        /* The history: what the target holds, then cur. */
        int len = alm_seq_length(target);
        const int32_t *t = alm_seq_tokens(target);
        for (int i = 0; i < len; i++)
            if (history_push(&s, t[i]) < 0)
                return alm_error_set(err, -ENOMEM, "out of memory");
        if (history_push(&s, cur) < 0)
            return alm_error_set(err, -ENOMEM, "out of memory");
    }
    draft_length_init(&s.length, gp->speculative.num_draft_tokens);

    while (!g->done) {
        if (alm_seq_length(target) >= alm_seq_capacity(target)) {
            g->finish = ALM_FINISH_CONTEXT;
            break;
        }
        int r = speculative_step(&s, &cur, err);
        if (r < 0)
            return r;
    }
    return 0;
}

int speculative_decode(gen_session *g, alm_seq *target, alm_seq *draft, alm_pool *pool,
                       int32_t cur, alm_speculative_stats *stats, alm_error *err)
{
    return speculative_decode_overridden(g, target, draft, pool, cur, NULL, stats, err);
}
