/* Synthetic acceptance: the replacement policy, and a generation loop that
 * hands it to speculative decoding (the flow of alm_generate, greedy and
 * with a draft model only). */
#include "speculative/synthetic_acceptance.h"

#include <errno.h>
#include <stdlib.h>

#include "core/error.h"
#include "generate/generate.h"
#include "speculative/speculative.h"

static uint64_t next_random(uint64_t *state)
{
    uint64_t x = (*state += 0x9e3779b97f4a7c15ull);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void synthetic_acceptance_init(synthetic_acceptance *sa, const int32_t *recorded, size_t n_recorded,
                               int first_pos, double rate, int vocab, uint64_t seed)
{
    *sa = (synthetic_acceptance){ .recorded = recorded, .n_recorded = n_recorded,
                                  .first_pos = first_pos, .rate = rate, .vocab = vocab, .rng = seed };
}

static int32_t propose(void *user, int pos, int32_t drafted)
{
    synthetic_acceptance *sa = user;
    long i = (long)pos - sa->first_pos;
    if (i < 0 || (size_t)i >= sa->n_recorded || sa->vocab < 2)
        return drafted; /* beyond the record: nothing to stand in for */
    int32_t want = sa->recorded[i];
    sa->proposed++;
    /* 53 random bits: a uniform double in [0, 1) */
    double u = (double)(next_random(&sa->rng) >> 11) * 0x1.0p-53;
    if (u < sa->rate) {
        sa->as_recorded++;
        return want;
    }
    /* any other id, uniformly */
    uint32_t other = (uint32_t)(next_random(&sa->rng) % (uint64_t)(sa->vocab - 1));
    return (int32_t)(((uint32_t)want + 1 + other) % (uint32_t)sa->vocab);
}

/* A pass looked at the proposals up to and including the first rejected
 * one. */
static void verified(void *user, int n, int accepted)
{
    synthetic_acceptance *sa = user;
    sa->kept += accepted;
    sa->looked_at += accepted < n ? accepted + 1 : accepted;
}

int synthetic_generate(alm_seq *seq, alm_seq *draft, alm_pool *pool, const int32_t *prompt,
                       size_t n_prompt, const alm_generate_params *p,
                       synthetic_acceptance *sa, int32_t **ids_out, size_t *n_ids_out,
                       alm_generate_stats *stats, alm_error *err)
{
    if (p->sampling.temperature != 0.0f || p->speculative.mode != ALM_SPECULATIVE_DRAFT)
        return alm_error_set(err, -EINVAL,
                             "synthetic acceptance needs greedy decoding (temperature 0) and a draft model");
    if (!(sa->rate >= 0.0 && sa->rate <= 1.0))
        return alm_error_set(err, -EINVAL, "synthetic acceptance %g: expected a rate in [0, 1]", sa->rate);
    draft_override override = { propose, verified, sa };
    return generate_run(seq, draft, pool, prompt, n_prompt, p, NULL, NULL, &override, ids_out,
                        n_ids_out, stats, err);
}
