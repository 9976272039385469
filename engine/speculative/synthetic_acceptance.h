/* Synthetic acceptance: the real cost of speculative decoding at a chosen
 * acceptance rate, on models (random weights) whose drafts would otherwise
 * never be accepted. The target's plain greedy output is recorded first;
 * then, during speculative decoding, the draft model runs as usual (its cost
 * is real) but each token it proposes is replaced by the recorded token
 * with probability `rate` and by another token otherwise. Greedy
 * verification keeps exactly the recorded ones up to the first other one,
 * so each proposal the target looks at is kept with probability `rate`. */
#ifndef ALM_SPECULATIVE_SYNTHETIC_ACCEPTANCE_H
#define ALM_SPECULATIVE_SYNTHETIC_ACCEPTANCE_H

#include <stddef.h>
#include <stdint.h>

#include "alm.h"

typedef struct synthetic_acceptance {
    const int32_t *recorded;  /* the target's greedy tokens after the prompt */
    size_t n_recorded;
    int first_pos;            /* the position of recorded[0]: the prompt's length */
    double rate;
    int vocab;
    uint64_t rng;
    long proposed;            /* proposals replaced */
    long as_recorded;         /* ... by the recorded token */
    long looked_at;           /* proposals the target verified up to a rejection */
    long kept;                /* ... and kept: kept / looked_at estimates rate */
} synthetic_acceptance;

void synthetic_acceptance_init(synthetic_acceptance *sa, const int32_t *recorded, size_t n_recorded,
                               int first_pos, double rate, int vocab, uint64_t seed);

/* alm_generate for a benchmark: greedy, speculative with a draft model,
 * every proposal replaced as described above. seq and draft as for
 * alm_generate; params must ask for temperature 0 and draft speculation. */
int synthetic_generate(alm_seq *seq, alm_seq *draft, alm_pool *pool, const int32_t *prompt,
                       size_t n_prompt, const alm_generate_params *params,
                       synthetic_acceptance *sa, int32_t **ids, size_t *n_ids,
                       alm_generate_stats *stats, alm_error *err);

#endif
