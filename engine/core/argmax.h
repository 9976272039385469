/* Index of the largest value (the lowest index on ties): greedy decoding;
 * and that value's softmax probability (a draft stops below draft_p_min). */
#ifndef ALM_CORE_ARGMAX_H
#define ALM_CORE_ARGMAX_H

#include <math.h>
#include <stdint.h>

static inline int32_t alm_argmax(const float *v, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

/* softmax(v)[i] where v[i] == max, the largest of v: 1 / sum exp(v - max),
 * summed in double so that a large vocabulary loses nothing. */
static inline float alm_top_probability(const float *v, int n, float max)
{
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += exp((double)(v[i] - max));
    return (float)(1.0 / sum);
}

#endif
