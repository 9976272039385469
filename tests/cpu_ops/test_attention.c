/* CPU attention (engine/cpu/attention*) against a float64 reference, on
 * every instruction set this CPU runs: head_dim 16/32/64/128 (and 24, 80,
 * 8 for the ragged paths), GQA groups 6/2, 4/4, 12/4, 3/1, 1 to 64 query
 * tokens, positions from 0 and 100 (and further, across many key tiles),
 * full causal and sliding-window masks, outlier channels in q and k. Every
 * run splits the items between two "threads" with poisoned scratch sized
 * exactly as asked, checks that they write every output and that the split
 * changes no bit; the cache rows past the last query are NaN, so reading
 * one shows. Then head-group splitting (min_items), out == q, and the
 * validation of arguments. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/attention.h"
#include "cpu/attention_internal.h"
#include "tap.h"

static const char *isa_label(cpu_isa isa)
{
    return isa == CPU_ISA_AVX512 ? "avx512" : isa == CPU_ISA_AVX2 ? "avx2" : "scalar";
}

#define TOLERANCE 1e-5   /* relative to the largest magnitude of the output row */
#define NAN_ROWS 4       /* cache rows past the last query position, all NaN */

typedef struct rng {
    uint64_t s;
} rng;

static double uniform(rng *r)   /* [-1, 1) */
{
    r->s = r->s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(r->s >> 11) / (double)(1ULL << 52) - 1.0;
}

typedef struct shape {
    int n_heads, n_kv_heads, head_dim, n_tok, pos0, window;
} shape;

typedef struct problem {
    shape sh;
    int ctx;           /* positions the queries may see: pos0 + n_tok */
    float *q, *k, *v;
    double *ref;       /* [n_tok][n_heads][head_dim] */
} problem;

static void fill_problem(problem *p, const shape *sh, uint64_t seed)
{
    rng r = { seed };
    p->sh = *sh;
    p->ctx = sh->pos0 + sh->n_tok;
    int d = sh->head_dim;
    size_t nq = (size_t)sh->n_tok * sh->n_heads * d;
    size_t kv_row = (size_t)sh->n_kv_heads * d;
    size_t nkv = (size_t)(p->ctx + NAN_ROWS) * kv_row;
    p->q = malloc(sizeof(float) * nq);
    p->k = malloc(sizeof(float) * nkv);
    p->v = malloc(sizeof(float) * nkv);
    p->ref = malloc(sizeof(double) * nq);
    /* Two outlier channels, as real models have: large in q and k alike,
     * so that some scores are large and the softmax is peaked. */
    int out1 = 3 % d, out2 = (d * 2) / 3;
    for (size_t i = 0; i < nq; i++) {
        int c = (int)(i % (size_t)d);
        double x = uniform(&r);
        p->q[i] = (float)((c == out1 || c == out2) ? 5.0 * x : x);
    }
    for (size_t i = 0; i < nkv; i++) {
        int c = (int)(i % (size_t)d);
        double x = uniform(&r);
        p->k[i] = (float)((c == out1 || c == out2) ? 5.0 * x : x);
        p->v[i] = (float)(2.0 * uniform(&r));
    }
    for (size_t i = (size_t)p->ctx * kv_row; i < nkv; i++)
        p->k[i] = p->v[i] = NAN;

    /* The reference: softmax(q k / sqrt(d)) v in float64 from the same
     * float inputs. */
    int group = sh->n_heads / sh->n_kv_heads;
    double scale = 1.0 / sqrt((double)d);
    double *w = malloc(sizeof(double) * (size_t)p->ctx);
    for (int t = 0; t < sh->n_tok; t++) {
        int pos = sh->pos0 + t;
        int first = sh->window > 0 && pos - sh->window + 1 > 0 ? pos - sh->window + 1 : 0;
        for (int h = 0; h < sh->n_heads; h++) {
            const float *qh = p->q + ((size_t)t * sh->n_heads + h) * d;
            size_t off = (size_t)(h / group) * d;
            double max = -INFINITY, sum = 0.0;
            for (int j = first; j <= pos; j++) {
                double s = 0.0;
                for (int i = 0; i < d; i++)
                    s += (double)qh[i] * p->k[(size_t)j * kv_row + off + i];
                w[j] = s * scale;
                if (w[j] > max)
                    max = w[j];
            }
            for (int j = first; j <= pos; j++)
                sum += (w[j] = exp(w[j] - max));
            double *o = p->ref + ((size_t)t * sh->n_heads + h) * d;
            for (int i = 0; i < d; i++) {
                double acc = 0.0;
                for (int j = first; j <= pos; j++)
                    acc += w[j] * p->v[(size_t)j * kv_row + off + i];
                o[i] = acc / sum;
            }
        }
    }
    free(w);
}

static void free_problem(problem *p)
{
    free(p->q);
    free(p->k);
    free(p->v);
    free(p->ref);
}

static attention_args args_for(const problem *p, float *out, int min_items)
{
    return (attention_args){
        .q = p->q, .k = p->k, .v = p->v, .out = out,
        .n_tok = p->sh.n_tok, .pos0 = p->sh.pos0,
        .n_heads = p->sh.n_heads, .n_kv_heads = p->sh.n_kv_heads,
        .head_dim = p->sh.head_dim, .window = p->sh.window, .min_items = min_items,
    };
}

static float *poisoned(size_t n)
{
    float *x = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    for (size_t i = 0; i < n; i++)
        x[i] = NAN;
    return x;
}

/* Worst |out - ref| / (TOLERANCE * max |ref row|) over the rows (<= 1
 * passes); +inf when an output is not finite. */
static double worst_ratio(const problem *p, const float *out)
{
    int d = p->sh.head_dim;
    size_t rows = (size_t)p->sh.n_tok * p->sh.n_heads;
    double worst = 0.0;
    for (size_t r = 0; r < rows; r++) {
        const double *ref = p->ref + r * d;
        double mag = 0.0;
        for (int i = 0; i < d; i++)
            mag = fmax(mag, fabs(ref[i]));
        for (int i = 0; i < d; i++) {
            double o = out[r * d + i];
            if (!isfinite(o))
                return INFINITY;
            worst = fmax(worst, fabs(o - ref[i]) / (TOLERANCE * mag + 1e-30));
        }
    }
    return worst;
}

/* Runs all items as two threads would (each half with its own scratch)
 * and, when `twice`, as one; returns the worst ratio, or +inf when the two
 * runs differ. */
static double run_split(const cpu_vector_ops *ops, const problem *p, int min_items,
                        size_t *items_out, bool twice)
{
    size_t n_out = (size_t)p->sh.n_tok * p->sh.n_heads * p->sh.head_dim;
    float *out = poisoned(n_out), *whole = poisoned(n_out);
    attention_args a = args_for(p, out, min_items);
    size_t items = cpu_attention_items(&a);
    size_t nscratch = cpu_attention_scratch_floats(&a);
    float *s0 = poisoned(nscratch), *s1 = poisoned(nscratch);
    size_t mid = items / 2;
    cpu_attention_run(ops, &a, 0, mid, s0);
    cpu_attention_run(ops, &a, mid, items, s1);
    double worst = worst_ratio(p, out);
    if (twice) {
        attention_args b = args_for(p, whole, min_items);
        cpu_attention_run(ops, &b, 0, items + 5, s0);   /* past the end: ignored */
        if (memcmp(out, whole, sizeof(float) * n_out) != 0)
            worst = INFINITY;
    }
    free(out);
    free(whole);
    free(s0);
    free(s1);
    if (items_out)
        *items_out = items;
    return worst;
}

static const int head_dims[] = { 16, 32, 64, 128 };
static const int head_groups[][2] = { { 6, 2 }, { 4, 4 }, { 12, 4 }, { 3, 1 } };
static const int token_counts[] = { 1, 2, 5, 17, 64 };
static const int first_positions[] = { 0, 100 };
static const int windows[] = { 0, 16 };
#define COUNT(a) (int)(sizeof(a) / sizeof((a)[0]))

static void test_grid(const cpu_vector_ops *const *ops, int n_ops)
{
    double worst[3] = { 0 };
    int cases = 0, bad_case[3] = { 0 };
    uint64_t seed = 1;
    for (int di = 0; di < COUNT(head_dims); di++)
    for (int gi = 0; gi < COUNT(head_groups); gi++)
    for (int ti = 0; ti < COUNT(token_counts); ti++)
    for (int pi = 0; pi < COUNT(first_positions); pi++)
    for (int wi = 0; wi < COUNT(windows); wi++) {
        shape sh = { head_groups[gi][0], head_groups[gi][1], head_dims[di],
                     token_counts[ti], first_positions[pi], windows[wi] };
        problem p;
        fill_problem(&p, &sh, seed++);
        for (int o = 0; o < n_ops; o++) {
            /* (the one-call run on every third shape: it is the slow part
             * under the sanitizers) */
            double r = run_split(ops[o], &p, 0, NULL, seed % 3 == 0);
            if (r > worst[o])
                worst[o] = r;
            if (r > 1.0 && !bad_case[o]++)
                tap_diag("%s: heads %d/%d, head_dim %d, %d tokens from %d, window %d: "
                         "error %.3g x tolerance", isa_label(ops[o]->isa), sh.n_heads,
                         sh.n_kv_heads, sh.head_dim, sh.n_tok, sh.pos0, sh.window, r);
        }
        free_problem(&p);
        cases++;
    }
    for (int o = 0; o < n_ops; o++)
        tap_ok(worst[o] <= 1.0,
               "%s: %d shapes within %.0e of float64 (worst %.3f x tolerance), "
               "split and whole runs identical", isa_label(ops[o]->isa), cases, TOLERANCE, worst[o]);
}

/* Head dims the SIMD kernels take in pieces or pass to the scalar one,
 * and long contexts crossing many key tiles. */
static void test_odd_shapes(const cpu_vector_ops *const *ops, int n_ops)
{
    static const shape shapes[] = {
        { 6, 2, 24, 5, 30, 0 },  { 6, 2, 24, 40, 0, 0 },  { 4, 1, 80, 1, 70, 0 },
        { 4, 1, 80, 33, 7, 20 }, { 2, 2, 8, 9, 3, 0 },    { 6, 2, 64, 1, 1000, 0 },
        { 6, 2, 64, 40, 300, 100 }, { 3, 1, 64, 70, 0, 1 }, { 8, 1, 32, 3, 150, 0 },
        { 8, 1, 32, 48, 129, 64 },
    };
    for (int o = 0; o < n_ops; o++) {
        double worst = 0.0;
        for (int i = 0; i < COUNT(shapes); i++) {
            problem p;
            fill_problem(&p, &shapes[i], 1000 + (uint64_t)i);
            double r = run_split(ops[o], &p, 0, NULL, true);
            if (r > 1.0)
                tap_diag("%s: odd shape %d: error %.3g x tolerance", isa_label(ops[o]->isa),
                         i, r);
            worst = fmax(worst, r);
            free_problem(&p);
        }
        tap_ok(worst <= 1.0, "%s: head_dim 8/24/80, long contexts, windows 1..100 "
               "(worst %.3f x tolerance)", isa_label(ops[o]->isa), worst);
    }
}

/* min_items splits each group of query heads into more items. */
static void test_head_splits(const cpu_vector_ops *const *ops, int n_ops)
{
    shape sh = { 12, 2, 64, 1, 200, 0 };
    problem p;
    fill_problem(&p, &sh, 77);
    for (int o = 0; o < n_ops; o++) {
        size_t items1 = 0, items2 = 0, items5 = 0, items99 = 0;
        double r = run_split(ops[o], &p, 1, &items1, true);
        r = fmax(r, run_split(ops[o], &p, 4, &items2, true));
        r = fmax(r, run_split(ops[o], &p, 5, &items5, true));
        r = fmax(r, run_split(ops[o], &p, 99, &items99, true));
        /* (5 threads: 10 items of 1 or 2 heads, 2 per thread) */
        tap_ok(items1 == 2 && items2 == 4 && items5 == 10 && items99 == 12 && r <= 1.0,
               "%s: decode with min_items 1/4/5/99: %zu/%zu/%zu/%zu items, all correct",
               isa_label(ops[o]->isa), items1, items2, items5, items99);
    }
    free_problem(&p);
}

/* The output may overwrite the queries. */
static void test_in_place(const cpu_vector_ops *const *ops, int n_ops)
{
    shape sh = { 6, 2, 64, 20, 10, 0 };
    problem p;
    fill_problem(&p, &sh, 5);
    size_t nq = (size_t)sh.n_tok * sh.n_heads * sh.head_dim;
    for (int o = 0; o < n_ops; o++) {
        float *q = malloc(sizeof(float) * nq);
        memcpy(q, p.q, sizeof(float) * nq);
        attention_args a = args_for(&p, q, 0);
        a.q = q;
        float *scratch = poisoned(cpu_attention_scratch_floats(&a));
        cpu_attention_run(ops[o], &a, 0, cpu_attention_items(&a), scratch);
        tap_ok(worst_ratio(&p, q) <= 1.0, "%s: out == q", isa_label(ops[o]->isa));
        free(scratch);
        free(q);
    }
    free_problem(&p);
}

static void test_scale(const cpu_vector_ops *const *ops, int n_ops)
{
    /* scale = 2 / sqrt(d) equals the default on queries doubled. */
    shape sh = { 4, 2, 32, 7, 5, 0 };
    problem p;
    fill_problem(&p, &sh, 9);
    size_t nq = (size_t)sh.n_tok * sh.n_heads * sh.head_dim;
    float *q2 = malloc(sizeof(float) * nq), *o1 = malloc(sizeof(float) * nq),
          *o2 = malloc(sizeof(float) * nq);
    for (size_t i = 0; i < nq; i++)
        q2[i] = 2.0f * p.q[i];
    for (int o = 0; o < n_ops; o++) {
        attention_args a = args_for(&p, o1, 0), b = args_for(&p, o2, 0);
        a.scale = 2.0f / sqrtf(32.0f);
        b.q = q2;
        float *scratch = poisoned(cpu_attention_scratch_floats(&a));
        cpu_attention_run(ops[o], &a, 0, cpu_attention_items(&a), scratch);
        cpu_attention_run(ops[o], &b, 0, cpu_attention_items(&b), scratch);
        double diff = 0.0;
        for (size_t i = 0; i < nq; i++)
            diff = fmax(diff, fabs((double)o1[i] - o2[i]));
        tap_ok(diff < 1e-5, "%s: explicit scale (max difference %.2g)",
               isa_label(ops[o]->isa), diff);
        free(scratch);
    }
    free(q2);
    free(o1);
    free(o2);
    free_problem(&p);
}

/* Work of a block: rows times the keys its tiles cover. */
static double block_work(const attention_args *a, const attention_block *b)
{
    int last = a->pos0 + b->t0 + b->n_tok - 1;
    int first = a->window > 0 && a->pos0 + b->t0 - a->window + 1 > 0
                    ? a->pos0 + b->t0 - a->window + 1 : 0;
    return (double)b->n_tok * b->n_heads * (last - first + 1);
}

/* Items split by count between 2 or 3 threads give each about the same
 * work, even in a causal prefill or with a sliding window; and the items
 * cover every (token, head) exactly once. */
static void test_balance(void)
{
    static const shape shapes[] = {
        { 6, 2, 64, 512, 0, 0 }, { 3, 1, 64, 512, 0, 0 }, { 12, 4, 64, 300, 0, 0 },
        { 4, 4, 32, 129, 40, 0 }, { 6, 2, 64, 512, 0, 64 }, { 6, 2, 64, 1, 600, 0 },
        { 3, 1, 64, 1, 600, 0 }, { 6, 2, 64, 2000, 0, 0 }, { 6, 2, 64, 2000, 0, 500 },
    };
    float x = 0.0f;
    for (int i = 0; i < COUNT(shapes); i++) {
        const shape *sh = &shapes[i];
        for (int threads = 2; threads <= 3; threads++) {
            attention_args a = { .q = &x, .k = &x, .v = &x, .out = &x, .n_tok = sh->n_tok,
                                 .pos0 = sh->pos0, .n_heads = sh->n_heads,
                                 .n_kv_heads = sh->n_kv_heads, .head_dim = sh->head_dim,
                                 .window = sh->window, .min_items = threads };
            size_t items = cpu_attention_items(&a);
            int *seen = calloc((size_t)sh->n_tok * sh->n_heads, sizeof(int));
            double work[3] = { 0 }, total = 0.0;
            int group = sh->n_heads / sh->n_kv_heads;
            for (int t = 0; t < threads; t++) {
                size_t i0 = items * (size_t)t / (size_t)threads;
                size_t i1 = items * (size_t)(t + 1) / (size_t)threads;
                for (size_t it = i0; it < i1; it++) {
                    attention_block b = cpu_attention_item_block(&a, it);
                    work[t] += block_work(&a, &b);
                    for (int tok = b.t0; tok < b.t0 + b.n_tok; tok++)
                        for (int g = 0; g < b.n_heads; g++)
                            seen[tok * sh->n_heads + b.kv_head * group + b.head0 + g]++;
                }
                total += work[t];
            }
            int once = 1;
            for (int j = 0; j < sh->n_tok * sh->n_heads; j++)
                once &= seen[j] == 1;
            double most = fmax(work[0], fmax(work[1], work[2]));
            double excess = most / (total / threads) - 1.0;
            /* Decode of one KV head can only split its group of heads:
             * 3 heads on 2 threads are 2 + 1 at best. Blocks are whole:
             * thirds of a prefill are rougher than halves. (A prefill of
             * only a few blocks is not balanced: it is short anyway.) */
            double allowed = sh->n_tok == 1 ? 0.34 : threads == 2 ? 0.06 : 0.12;
            tap_ok(once && excess <= allowed,
                   "heads %d/%d, %d tokens from %d, window %d on %d threads: %zu items, "
                   "each row once, busiest thread %.1f%% over the mean",
                   sh->n_heads, sh->n_kv_heads, sh->n_tok, sh->pos0, sh->window, threads,
                   items, 100.0 * excess);
            free(seen);
        }
    }
}

static void test_validation(void)
{
    float x[64] = { 0 };
    attention_args good = { .q = x, .k = x, .v = x, .out = x, .n_tok = 1, .pos0 = 0,
                            .n_heads = 2, .n_kv_heads = 1, .head_dim = 16 };
    alm_error err = { 0 };
    tap_ok(cpu_attention_check(&good, &err) == 0 && cpu_attention_items(&good) == 1,
           "a valid call is accepted");
    struct { const char *what; attention_args a; } bad[] = {
        { "heads not a multiple of KV heads", good },
        { "no KV heads", good },
        { "head_dim 0", good },
        { "no tokens", good },
        { "negative position", good },
        { "positions past 2^24", good },
        { "negative window", good },
        { "missing cache", good },
        { "NaN scale", good },
        { "negative min_items", good },
    };
    bad[0].a.n_heads = 3, bad[0].a.n_kv_heads = 2;
    bad[1].a.n_kv_heads = 0;
    bad[2].a.head_dim = 0;
    bad[3].a.n_tok = 0;
    bad[4].a.pos0 = -1;
    bad[5].a.pos0 = (1 << 24);
    bad[6].a.window = -1;
    bad[7].a.v = NULL;
    bad[8].a.scale = NAN;
    bad[9].a.min_items = -1;
    for (int i = 0; i < COUNT(bad); i++) {
        err = (alm_error){ 0 };
        int r = cpu_attention_check(&bad[i].a, &err);
        tap_ok(r == -EINVAL && err.message[0] && cpu_attention_items(&bad[i].a) == 0,
               "refused: %s (%s)", bad[i].what, err.message);
    }
    tap_ok(cpu_attention_check(NULL, NULL) == -EINVAL && cpu_attention_items(NULL) == 0 &&
           cpu_attention_scratch_floats(NULL) == 0, "no arguments");

    /* Scratch depends on the shape only and never shrinks as n_tok grows. */
    attention_args s = { .n_heads = 12, .n_kv_heads = 4, .head_dim = 64 };
    size_t prev = 0;
    int monotone = 1;
    for (s.n_tok = 1; s.n_tok <= 100; s.n_tok++) {
        size_t n = cpu_attention_scratch_floats(&s);
        if (n < prev || n == 0)
            monotone = 0;
        prev = n;
    }
    tap_ok(monotone, "scratch size needs no pointers, grows with n_tok (%zu floats at 100)", prev);
}

/* A token's output must not depend on the pass it is computed in, for
 * passes of up to ATTN_EXACT_TOKENS tokens: speculative verification runs
 * k + 1 tokens at once and must reproduce one-token decoding bit for bit.
 * Every token of a 16-token pass, and of shorter passes at every offset,
 * against its own one-token pass (with the head groups split, as a decode
 * step on several threads does). */
static void test_pass_size_invariance(const cpu_vector_ops *const *ops, int n_ops)
{
    static const int groups[][2] = { { 6, 2 }, { 4, 4 }, { 12, 4 }, { 3, 1 }, { 16, 1 } };
    static const int dims[] = { 64, 128, 24 };
    static const int starts[] = { 0, 70, 200 };
    static const int wins[] = { 0, 16, 100 };
    const int N = ATTN_EXACT_TOKENS;
    for (int o = 0; o < n_ops; o++) {
        long compared = 0, differ = 0;
        for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
            for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
                for (size_t si = 0; si < sizeof starts / sizeof starts[0]; si++)
                    for (size_t wi = 0; wi < sizeof wins / sizeof wins[0]; wi++) {
                        shape sh = { groups[g][0], groups[g][1], dims[di], N, starts[si], wins[wi] };
                        problem p;
                        fill_problem(&p, &sh, 7 + g * 131 + di * 17 + si * 5 + wi);
                        size_t row = (size_t)sh.n_heads * (size_t)sh.head_dim;
                        float *single = malloc(sizeof(float) * row * (size_t)N);
                        float *out = malloc(sizeof(float) * row * (size_t)N);
                        attention_args whole = args_for(&p, out, 0);
                        size_t scratch_n = cpu_attention_scratch_floats(&whole);
                        float *scratch = malloc(sizeof(float) * (scratch_n ? scratch_n : 1));
                        for (int t = 0; t < N; t++) {
                            attention_args a = args_for(&p, single + (size_t)t * row, 2);
                            a.q = p.q + (size_t)t * row;
                            a.n_tok = 1;
                            a.pos0 = sh.pos0 + t;
                            cpu_attention_run(ops[o], &a, 0, cpu_attention_items(&a), scratch);
                        }
                        for (int n = 2; n <= N; n *= 2) {
                            for (int t0 = 0; t0 + n <= N; t0 += n) {
                                attention_args a = args_for(&p, out + (size_t)t0 * row, 0);
                                a.q = p.q + (size_t)t0 * row;
                                a.n_tok = n;
                                a.pos0 = sh.pos0 + t0;
                                cpu_attention_run(ops[o], &a, 0, cpu_attention_items(&a), scratch);
                            }
                            compared++;
                            differ += memcmp(single, out, sizeof(float) * row * (size_t)N) != 0;
                        }
                        free(scratch);
                        free(out);
                        free(single);
                        free_problem(&p);
                    }
        tap_ok(differ == 0,
               "%s: passes of 2..%d tokens give every token the bits of its one-token pass (%ld of %ld configurations differ)",
               isa_label(ops[o]->isa), N, differ, compared);
    }
}

int main(void)
{
    const cpu_vector_ops *ops[3];
    int n_ops = 0;
    const cpu_isa all[] = { CPU_ISA_SCALAR, CPU_ISA_AVX2, CPU_ISA_AVX512 };
    for (int i = 0; i < 3; i++) {
        const cpu_vector_ops *o = cpu_vector_ops_for(all[i]);
        if (o)
            ops[n_ops++] = o;
        else
            tap_diag("%s: not run (this CPU lacks it)", isa_label(all[i]));
    }
    tap_ok(n_ops >= 1 && ops[0]->isa == CPU_ISA_SCALAR, "the scalar kernels always run");

    test_grid(ops, n_ops);
    test_odd_shapes(ops, n_ops);
    test_head_splits(ops, n_ops);
    test_in_place(ops, n_ops);
    test_scale(ops, n_ops);
    test_pass_size_invariance(ops, n_ops);
    test_balance();
    test_validation();
    return tap_done();
}
