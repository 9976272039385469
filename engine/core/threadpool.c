/* Thread pool with spin-then-sleep workers and an in-job barrier.
 *
 * A decode step of a small model is ~0.2 ms and runs a few dozen parallel
 * phases, so waking workers through the kernel for each one would cost more
 * than the work. Workers therefore spin on a job counter for a while after
 * each job (and between the phases of one job, in alm_pool_barrier) and only
 * then sleep on a futex. */
#include "core/threadpool.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

/* How long an idle worker spins before it sleeps: long enough to bridge the
 * gap between two decode steps (sampling, detokenizing), short enough not to
 * burn a core for long when nothing comes. */
#define SPIN_BEFORE_SLEEP 200000

typedef struct {
    alignas(64) atomic_uint count;
    alignas(64) atomic_uint generation;
} pool_barrier;

struct alm_pool {
    int n_threads;
    pthread_t *threads;

    /* Bumped by alm_pool_run for every job; workers wait for it to change. */
    alignas(64) atomic_uint job_generation;
    atomic_int sleepers;
    alm_pool_fn fn;
    void *ctx;
    bool stopping;

    alignas(64) atomic_int remaining;
    pool_barrier barrier;
};

struct worker_arg {
    alm_pool *pool;
    int index;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* Waits for *addr to differ from old (or, with until_zero, to reach 0).
 * Spins first: the other threads are normally microseconds away. When the
 * machine is oversubscribed the thread we wait for may not be running at
 * all, and spinning would burn the time slice it needs, so after a while
 * the CPU is handed over with sched_yield. */
#define SPIN_BEFORE_YIELD 4000

static void wait_while_equal(atomic_uint *addr, unsigned old)
{
    for (int spins = 0; atomic_load_explicit(addr, memory_order_acquire) == old; spins++) {
        if (spins < SPIN_BEFORE_YIELD)
            cpu_relax();
        else
            sched_yield();
    }
}

static void wait_until_zero(atomic_int *addr)
{
    for (int spins = 0; atomic_load_explicit(addr, memory_order_acquire) > 0; spins++) {
        if (spins < SPIN_BEFORE_YIELD)
            cpu_relax();
        else
            sched_yield();
    }
}

static void futex_wait(atomic_uint *addr, unsigned expected)
{
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake_all(atomic_uint *addr)
{
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

static void *worker_main(void *p)
{
    struct worker_arg arg = *(struct worker_arg *)p;
    free(p);
    alm_pool *pool = arg.pool;
    /* Jobs are counted from the pool's creation, not from when this thread
     * got to run: a job posted before then must not be missed. */
    unsigned seen = 0;

    for (;;) {
        unsigned gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&pool->job_generation, memory_order_acquire)) == seen) {
            if (++spins < SPIN_BEFORE_SLEEP) {
                cpu_relax();
                continue;
            }
            atomic_fetch_add(&pool->sleepers, 1);
            futex_wait(&pool->job_generation, seen);
            atomic_fetch_sub(&pool->sleepers, 1);
            spins = 0;
        }
        seen = gen;
        if (pool->stopping)
            return NULL;
        pool->fn(pool->ctx, arg.index, pool->n_threads);
        atomic_fetch_sub_explicit(&pool->remaining, 1, memory_order_release);
    }
}

int alm_pool_new(int n_threads, alm_pool **out)
{
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    alm_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return -ENOMEM;
    pool->n_threads = n_threads;
    pool->threads = calloc((size_t)n_threads, sizeof *pool->threads);
    if (!pool->threads) {
        free(pool);
        return -ENOMEM;
    }
    for (int i = 1; i < n_threads; i++) {
        struct worker_arg *arg = malloc(sizeof *arg);
        int r = arg ? 0 : ENOMEM;
        if (arg) {
            *arg = (struct worker_arg){ pool, i };
            r = pthread_create(&pool->threads[i], NULL, worker_main, arg);
            if (r)
                free(arg);
        }
        if (r) {
            pool->n_threads = i; /* stop the ones already running */
            alm_pool_free(pool);
            return -r;
        }
    }
    *out = pool;
    return 0;
}

void alm_pool_free(alm_pool *pool)
{
    if (!pool)
        return;
    pool->stopping = true;
    atomic_fetch_add_explicit(&pool->job_generation, 1, memory_order_release);
    futex_wake_all(&pool->job_generation);
    for (int i = 1; i < pool->n_threads; i++)
        pthread_join(pool->threads[i], NULL);
    free(pool->threads);
    free(pool);
}

int alm_pool_size(const alm_pool *pool) { return pool->n_threads; }

void alm_pool_run(alm_pool *pool, alm_pool_fn fn, void *ctx)
{
    if (pool->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->ctx = ctx;
    atomic_store_explicit(&pool->remaining, pool->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool->job_generation, 1, memory_order_release);
    if (atomic_load(&pool->sleepers) > 0)
        futex_wake_all(&pool->job_generation);

    fn(ctx, 0, pool->n_threads);
    wait_until_zero(&pool->remaining);
}

void alm_pool_barrier(alm_pool *pool)
{
    int n = pool->n_threads;
    if (n == 1)
        return;
    pool_barrier *b = &pool->barrier;
    unsigned gen = atomic_load_explicit(&b->generation, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->count, 1, memory_order_acq_rel) == (unsigned)n - 1) {
        atomic_store_explicit(&b->count, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&b->generation, 1, memory_order_release);
        return;
    }
    wait_while_equal(&b->generation, gen);
}

void alm_pool_split(int n, int align, int part, int n_parts, int *begin, int *end)
{
    if (align < 1)
        align = 1;
    int units = (n + align - 1) / align;
    int per = units / n_parts, extra = units % n_parts;
    int b = part * per + (part < extra ? part : extra);
    int e = b + per + (part < extra ? 1 : 0);
    b *= align;
    e *= align;
    *begin = b < n ? b : n;
    *end = e < n ? e : n;
}
