/* Monotonic time in seconds, for statistics and benchmarks. */
#ifndef ALM_CORE_CLOCK_H
#define ALM_CORE_CLOCK_H

#include <time.h>

static inline double alm_now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
