/* Index of the largest value (the lowest index on ties): greedy decoding. */
#ifndef ALM_CORE_ARGMAX_H
#define ALM_CORE_ARGMAX_H

#include <stdint.h>

static inline int32_t alm_argmax(const float *v, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

#endif
