/* Benchmark of the CPU attention and element-wise kernels, for
 * the coder-target shape (6 query heads, 2 KV heads, head_dim 64): decode
 * (one query) at contexts 64, 512 and 2048 and a whole decode step's worth
 * (6 layers' caches at context 600), verification of 8 draft tokens
 * at 512, a 512-token prefill, and the element-wise rows of one token
 * (silu_mul over the intermediate 1024, rmsnorm over hidden 384, exp over
 * 4096). Attention runs on one thread and on two (the project's pool, items
 * split by count). Prints JSON: median microseconds per call, per
 * instruction set.
 *
 *   alm-attention-bench [seconds per case, default 0.3] [scalar|avx2|avx512 [case]] */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/threadpool.h"
#include "cpu/attention.h"

#define N_HEADS 6
#define N_KV_HEADS 2
#define HEAD_DIM 64
#define MAX_CONTEXT 2048
#define LAYERS 6            /* coder-target's: a decode step's caches, in turn */
#define MAX_SAMPLES 20000

static const char *isa_label(cpu_isa isa)
{
    return isa == CPU_ISA_AVX512 ? "avx512" : isa == CPU_ISA_AVX2 ? "avx2" : "scalar";
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct bench_case {
    const cpu_vector_ops *ops;
    int kind;           /* 0 attention, 1 silu_mul, 2 rmsnorm, 3 exp */
    attention_args a;
    float *scratch;     /* per thread: scratch + i * scratch_floats */
    size_t scratch_floats;
    alm_pool *pool;     /* attention on 2 threads when set */
    int layers;         /* attention over this many caches in turn */
    size_t layer_floats;
    float *x, *y, *w;
    size_t n;
} bench_case;

/* One thread's share of the items, split by count as the backend does. */
static void attention_share(void *p, int index, int n_threads)
{
    bench_case *c = p;
    int i0, i1;
    alm_pool_split((int)cpu_attention_items(&c->a), 1, index, n_threads, &i0, &i1);
    for (int l = 0; l < c->layers; l++) {
        attention_args a = c->a;
        a.k += (size_t)l * c->layer_floats;
        a.v += (size_t)l * c->layer_floats;
        cpu_attention_run(c->ops, &a, (size_t)i0, (size_t)i1,
                          c->scratch + (size_t)index * c->scratch_floats);
    }
}

static void run_once(bench_case *c)
{
    switch (c->kind) {
    case 0:
        if (c->pool)
            alm_pool_run(c->pool, attention_share, c);
        else
            attention_share(c, 0, 1);
        break;
    case 1: c->ops->silu_mul(c->y, c->x, c->w, c->n); break;
    case 2: c->ops->rmsnorm(c->y, c->x, c->w, c->n, 1e-5f); break;
    case 3: c->ops->exp(c->y, c->x, c->n); break;
    }
}

/* Median microseconds per call over as many calls as fit in `seconds`;
 * the fastest call into *min (a shared, busy machine inflates medians). */
static double median_us(bench_case *c, double seconds, double *samples, double *min)
{
    run_once(c);   /* warm caches */
    int n = 0;
    double start = now_s();
    while (n < MAX_SAMPLES && (n < 5 || now_s() - start < seconds)) {
        double t0 = now_s();
        run_once(c);
        samples[n++] = (now_s() - t0) * 1e6;
    }
    qsort(samples, (size_t)n, sizeof *samples, cmp_double);
    *min = samples[0];
    return samples[n / 2];
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 0.3;
    if (!(seconds > 0.0))
        seconds = 0.3;

    size_t layer_floats = (size_t)MAX_CONTEXT * N_KV_HEADS * HEAD_DIM;
    size_t kv_floats = layer_floats * LAYERS;
    size_t q_floats = (size_t)512 * N_HEADS * HEAD_DIM;
    float *k = malloc(sizeof(float) * kv_floats), *v = malloc(sizeof(float) * kv_floats);
    float *q = malloc(sizeof(float) * q_floats), *out = malloc(sizeof(float) * q_floats);
    size_t row_floats = 4096;
    float *x = malloc(sizeof(float) * row_floats), *y = malloc(sizeof(float) * row_floats);
    float *w = malloc(sizeof(float) * row_floats);
    double *samples = malloc(sizeof(double) * MAX_SAMPLES);
    uint64_t s = 42;
    for (size_t i = 0; i < kv_floats; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        k[i] = (float)((double)(s >> 40) / (double)(1 << 24) - 0.5);
        v[i] = (float)((double)((s >> 16) & 0xffffff) / (double)(1 << 24) - 0.5);
    }
    for (size_t i = 0; i < q_floats; i++)
        q[i] = k[i % kv_floats] * 2.0f;
    for (size_t i = 0; i < row_floats; i++) {
        x[i] = 8.0f * v[i];
        w[i] = 1.0f + k[i];
    }

    /* decode_step: one query at context 600 in each of the 6 layers' caches
     * (3.7 MB, so they come from L3 as in a real decode step, not from
     * the L2 that one cache fits in). */
    static const struct { const char *name; int n_tok, context, layers; } attn_cases[] = {
        { "decode", 1, 64, 1 }, { "decode", 1, 512, 1 }, { "decode", 1, 2048, 1 },
        { "decode_step", 1, 600, LAYERS }, { "verify", 8, 512, 1 }, { "prefill", 512, 512, 1 },
    };
    static const struct { const char *name; int kind; size_t n; } row_cases[] = {
        { "silu_mul", 1, 1024 }, { "rmsnorm", 2, 384 }, { "exp", 3, 4096 },
    };

    printf("{\n  \"shape\": {\"n_heads\": %d, \"n_kv_heads\": %d, \"head_dim\": %d},\n",
           N_HEADS, N_KV_HEADS, HEAD_DIM);
    printf("  \"unit\": \"microseconds per call: median (us) and fastest (min_us)\",\n");
    printf("  \"results\": [");
    alm_pool *pool = NULL;
    if (alm_pool_new(2, &pool) < 0)
        pool = NULL;
    const cpu_isa isas[] = { CPU_ISA_SCALAR, CPU_ISA_AVX2, CPU_ISA_AVX512 };
    int first = 1;
    for (int ii = 0; ii < 3; ii++) {
        const cpu_vector_ops *ops = cpu_vector_ops_for(isas[ii]);
        if (!ops || (argc > 2 && strcmp(argv[2], isa_label(isas[ii])) != 0))
            continue;
        for (size_t ci = 0; ci < sizeof attn_cases / sizeof attn_cases[0]; ci++) {
            if (argc > 3 && strcmp(argv[3], attn_cases[ci].name) != 0)
                continue;
            /* One thread, then two as the backend would run them (one
             * scratch each, items split by count, min_items = threads). */
            for (int threads = 1; threads <= 2; threads++) {
                if (threads == 2 && !pool)
                    continue;
                bench_case c = { .ops = ops, .kind = 0, .pool = threads == 2 ? pool : NULL,
                                 .layers = attn_cases[ci].layers, .layer_floats = layer_floats };
                c.a = (attention_args){
                    .q = q, .k = k, .v = v, .out = out,
                    .n_tok = attn_cases[ci].n_tok,
                    .pos0 = attn_cases[ci].context - attn_cases[ci].n_tok,
                    .n_heads = N_HEADS, .n_kv_heads = N_KV_HEADS, .head_dim = HEAD_DIM,
                    .min_items = threads,
                };
                c.scratch_floats = (cpu_attention_scratch_floats(&c.a) + 15) / 16 * 16;
                c.scratch = aligned_alloc(64, sizeof(float) * c.scratch_floats * 2);
                double min, us = median_us(&c, seconds, samples, &min);
                printf("%s\n    {\"isa\": \"%s\", \"case\": \"%s\", \"threads\": %d, "
                       "\"n_tok\": %d, \"context\": %d, \"layers\": %d, \"items\": %zu, "
                       "\"us\": %.2f, \"min_us\": %.2f}",
                       first ? "" : ",", isa_label(ops->isa), attn_cases[ci].name, threads,
                       attn_cases[ci].n_tok, attn_cases[ci].context, attn_cases[ci].layers,
                       cpu_attention_items(&c.a), us, min);
                first = 0;
                free(c.scratch);
            }
        }
        for (size_t ci = 0; ci < sizeof row_cases / sizeof row_cases[0]; ci++) {
            if (argc > 3 && strcmp(argv[3], row_cases[ci].name) != 0)
                continue;
            bench_case c = { .ops = ops, .kind = row_cases[ci].kind, .x = x, .y = y, .w = w,
                             .n = row_cases[ci].n };
            double min, us = median_us(&c, seconds / 3, samples, &min);
            printf("%s\n    {\"isa\": \"%s\", \"case\": \"%s\", \"n\": %zu, \"us\": %.3f, "
                   "\"min_us\": %.3f}",
                   first ? "" : ",", isa_label(ops->isa), row_cases[ci].name, row_cases[ci].n, us, min);
            first = 0;
        }
    }
    printf("\n  ]\n}\n");
    if (pool)
        alm_pool_free(pool);
    free(k);
    free(v);
    free(q);
    free(out);
    free(x);
    free(y);
    free(w);
    free(samples);
    return 0;
}
