/* The generation loop behind alm_generate, with the one hook a benchmark
 * needs: a draft override (speculative/speculative.h) that replaces the
 * draft model's proposals (synthetic acceptance). */
#ifndef ALM_GENERATE_GENERATE_H
#define ALM_GENERATE_GENERATE_H

#include "alm.h"
#include "speculative/speculative.h"

/* alm_generate with override (NULL: none; otherwise greedy draft
 * speculation only, see speculative_decode_overridden). */
int generate_run(alm_seq *seq, alm_seq *draft, alm_pool *pool, const int32_t *prompt,
                 size_t n_prompt, const alm_generate_params *params, alm_text_fn on_text,
                 void *user, const draft_override *override, int32_t **ids, size_t *n_ids,
                 alm_generate_stats *stats, alm_error *err);

#endif
