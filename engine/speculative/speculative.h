/* Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a draft
 * proposes up to k tokens, the target scores all k + 1 positions in one
 * pass, and each proposal x is kept with probability min(1, p(x) / q(x));
 * at the first rejection the token is drawn from normalize(max(0, p - q)),
 * and when all k are kept a bonus token is drawn from the target. p and q
 * are the target's and the draft's distributions after the same sampling
 * processing, so the output is distributed exactly as plain sampling from
 * the target; at temperature 0 it is identical to greedy decoding. */
#ifndef ALM_SPECULATIVE_H
#define ALM_SPECULATIVE_H

#include "alm.h"
#include "generate/session.h"

#define SPECULATIVE_ACCEPTED (-1)
#define SPECULATIVE_FAILED (-2)

/* The acceptance rule for one proposal x drawn from q, given the target's
 * p (both processed distributions over vocab tokens): SPECULATIVE_ACCEPTED
 * with probability min(1, p(x) / q(x)), otherwise the token to emit instead,
 * drawn from normalize(max(0, p - q)) (p is overwritten by the residual).
 * SPECULATIVE_FAILED when nothing can be drawn. */
int32_t speculative_accept(sampler *s, float *p, const float *q, int32_t x, int vocab);

/* Checks the speculative parameters (and that a draft is given exactly
 * when the mode needs one). */
int speculative_check_params(const alm_speculative_params *p, const alm_seq *draft,
                             alm_error *err);

/* Brings the draft's cache up to the target's (the prompt). */
int speculative_prefill_draft(alm_seq *draft, const alm_seq *target, alm_pool *pool,
                              alm_error *err);

/* Decodes until the session is done. cur: the last emitted token, which
 * the target's cache does not hold yet. */
int speculative_decode(gen_session *g, alm_seq *target, alm_seq *draft, alm_pool *pool,
                       int32_t cur, alm_speculative_stats *stats, alm_error *err);

/* A benchmark's hook into draft-model speculation (synthetic acceptance):
 * propose replaces each token the draft model proposes, pos being the
 * index it would take in the target's sequence (the draft model still
 * runs, and then reads the replacement); verified, when set, hears after
 * each target pass how many of its n proposals were kept. Greedy only. */
typedef struct draft_override {
    int32_t (*propose)(void *user, int pos, int32_t drafted);
    void (*verified)(void *user, int n, int accepted);
    void *user;
} draft_override;

/* speculative_decode with the draft's proposals passed through override. */
int speculative_decode_overridden(gen_session *g, alm_seq *target, alm_seq *draft,
                                  alm_pool *pool, int32_t cur, const draft_override *override,
                                  alm_speculative_stats *stats, alm_error *err);

#endif
