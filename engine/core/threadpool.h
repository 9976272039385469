/* A pool of worker threads for data-parallel kernels. One job at a time:
 * alm_pool_run calls fn(ctx, i, n) on every thread, the caller being
 * thread 0, and returns when all have finished. Workers spin briefly before
 * sleeping, so that back-to-back jobs (dozens per decode step) cost about a
 * microsecond each rather than a futex round trip. */
#ifndef ALM_CORE_THREADPOOL_H
#define ALM_CORE_THREADPOOL_H

#include <stdalign.h>

typedef struct alm_pool alm_pool;
typedef void (*alm_pool_fn)(void *ctx, int thread_index, int n_threads);

/* n_threads <= 0: one per online CPU. */
int alm_pool_new(int n_threads, alm_pool **out);
void alm_pool_free(alm_pool *pool);
int alm_pool_size(const alm_pool *pool);
void alm_pool_run(alm_pool *pool, alm_pool_fn fn, void *ctx);

/* Inside a job: returns once every thread of the pool has called it. All
 * threads must call it the same number of times. */
void alm_pool_barrier(alm_pool *pool);

/* Splits [0, n) into n_parts nearly equal ranges, aligned to `align`. */
void alm_pool_split(int n, int align, int part, int n_parts, int *begin, int *end);

#endif
