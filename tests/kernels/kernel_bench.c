/* alm-kernel-bench: speed of the CPU matrix kernels on the shapes of
 * coder-target (hidden 384, intermediate 1024, 6 layers, vocabulary 8192),
 * 4-bit (group 64, BF16 scales) and BF16 dense, for each instruction set
 * this CPU runs. Prints JSON.
 *
 *   alm-kernel-bench [--threads-rows-split N] [--repeat N] [--isa NAME]
 *                    [--activation-bits N] [--cpu-time]
 *
 * --threads-rows-split N times the share of one of N threads (rows split
 * as the CPU backend splits them); prepare is included, as each thread
 * prepares its own activations. --repeat N: timed batches per point
 * (median reported). --activation-bits N: the integer kernels' variant
 * with N-bit activations (AVX-512: 16, or 8 for 4-bit weights), where the
 * ISA has it. Times are medians of batches of calls, monotonic clock (or
 * the thread's CPU time with --cpu-time, for a busy machine); "min_ns" / "us_per_pass_min" give the fastest batch too (on a
 * busy machine the least disturbed). Format "4bit-g64-packed" is the same
 * 4-bit weights repacked with cpu_matmul_pack (where the ISA has a packed
 * kernel), timed in the same run. "model" lines run the matmuls of one forward pass in order (so
 * that the caches see the whole 7 MB, as in real use) and sum them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/matmul.h"
#include "kernels/kernel_fixtures.h"

typedef struct shape {
    const char *name;
    int rows, cols;
    int per_layer;   /* 0: once per pass (lm_head) */
} shape;

static const shape shapes[] = {
    { "q_proj/o_proj", 384, 384, 2 },
    { "k_proj/v_proj", 128, 384, 2 },
    { "gate_proj/up_proj", 1024, 384, 2 },
    { "down_proj", 384, 1024, 1 },
    { "lm_head", 8192, 384, 0 },
};
#define N_SHAPES (int)(sizeof shapes / sizeof shapes[0])
#define N_LAYERS 6
static const int token_counts[] = { 1, 2, 4, 5, 8, 512 };
#define N_COUNTS (int)(sizeof token_counts / sizeof token_counts[0])

/* clock: CLOCK_MONOTONIC, or with --cpu-time the thread's CPU time (on a
 * shared machine that leaves out the time other processes hold the core). */
static double now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct bench {
    int split;
    int repeat;
    clockid_t clock;
    float *x, *y;
    void *scratch;
} bench;

static void one_call(const bench *b, const cpu_kernels *k, const alm_weight *w, int n_tok)
{
    int r0 = 0, r1 = w->rows;
    if (b->split > 1) {
        /* The first thread's share, 16-row aligned like the backend's. */
        int units = (w->rows + 15) / 16;
        int per = (units + b->split - 1) / b->split;
        r1 = per * 16 < w->rows ? per * 16 : w->rows;
    }
    cpu_matmul_prepare(k, w, b->x, n_tok, (size_t)w->cols, b->scratch);
    cpu_matmul_rows(k, w, b->scratch, b->x, n_tok, (size_t)w->cols, b->y, (size_t)w->rows, r0, r1);
}

/* Median ns per call over `repeat` batches of calls (and the fastest
 * batch's in *min). */
static double time_median(const bench *b, const cpu_kernels *k, const alm_weight *const *ws,
                          int n_w, int n_tok, double *min)
{
    /* Calibrate a batch to about 200 us. */
    double t0 = now_ns(b->clock);
    for (int i = 0; i < n_w; i++)
        one_call(b, k, ws[i], n_tok);
    double once = now_ns(b->clock) - t0;
    int batch = once > 200e3 ? 1 : (int)(200e3 / (once + 1.0)) + 1;
    double *samples = malloc(sizeof(double) * (size_t)b->repeat);
    for (int s = 0; s < b->repeat; s++) {
        double a = now_ns(b->clock);
        for (int it = 0; it < batch; it++)
            for (int i = 0; i < n_w; i++)
                one_call(b, k, ws[i], n_tok);
        samples[s] = (now_ns(b->clock) - a) / batch;
    }
    qsort(samples, (size_t)b->repeat, sizeof(double), cmp_double);
    double med = samples[b->repeat / 2];
    *min = samples[0];
    free(samples);
    return med;
}

int main(int argc, char **argv)
{
    bench b = { .split = 1, .repeat = 31, .clock = CLOCK_MONOTONIC };
    const char *only = NULL;
    int act_bits = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads-rows-split") == 0 && i + 1 < argc) {
            b.split = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
            b.repeat = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--activation-bits") == 0 && i + 1 < argc) {
            act_bits = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--cpu-time") == 0) {
            b.clock = CLOCK_THREAD_CPUTIME_ID;
        } else if (strcmp(argv[i], "--isa") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--threads-rows-split N] [--repeat N] [--isa NAME] "
                            "[--activation-bits N] [--cpu-time]\n",
                    argv[0]);
            return 2;
        }
    }
    if (b.split < 1 || b.repeat < 1) {
        fprintf(stderr, "%s: --threads-rows-split and --repeat must be positive\n", argv[0]);
        return 2;
    }

    test_rng rng = { 7 };
    /* Weights of one whole model per format, so that the model lines see
     * the real working set. Index: layer * N_SHAPES + shape (lm_head once). */
    enum { Q4, BF16, Q4P, N_FORMATS };
    static const char *format_names[N_FORMATS] = { "4bit-g64", "bf16", "4bit-g64-packed" };
    fixture_weight model[N_FORMATS][N_LAYERS * 7 + 1];
    const alm_weight *seq[N_FORMATS][N_LAYERS * 7 + 1];
    const alm_weight *by_shape[N_FORMATS][N_SHAPES];
    int n_seq = 0;
    for (int f = 0; f < Q4P; f++) {
        n_seq = 0;
        for (int l = 0; l < N_LAYERS; l++)
            for (int s = 0; s < N_SHAPES; s++)
                for (int m = 0; m < shapes[s].per_layer; m++) {
                    fixture_weight *fw = &model[f][n_seq];
                    if (f == Q4)
                        fixture_quant(fw, &rng, shapes[s].rows, shapes[s].cols, 4, 64,
                                      ALM_DTYPE_BF16);
                    else
                        fixture_dense(fw, &rng, shapes[s].rows, shapes[s].cols, ALM_DTYPE_BF16);
                    seq[f][n_seq++] = &fw->w;
                    if (l == 0 && m == 0)
                        by_shape[f][s] = &fw->w;
                }
        fixture_weight *fw = &model[f][n_seq];
        if (f == Q4)
            fixture_quant(fw, &rng, 8192, 384, 4, 64, ALM_DTYPE_BF16);
        else
            fixture_dense(fw, &rng, 8192, 384, ALM_DTYPE_BF16);
        seq[f][n_seq++] = &fw->w;
        by_shape[f][N_SHAPES - 1] = &fw->w;
    }

    int max_tok = 512, max_cols = 1024, max_rows = 8192;
    b.x = malloc(sizeof(float) * (size_t)max_tok * (size_t)max_cols);
    b.y = malloc(sizeof(float) * (size_t)max_tok * (size_t)max_rows);
    fixture_activations(&rng, b.x, max_tok, (size_t)max_cols, max_cols);

    printf("{\n  \"threads_rows_split\": %d,\n  \"repeat\": %d,\n  \"results\": [", b.split,
           b.repeat);
    int first = 1;
    static const cpu_isa isas[] = { CPU_ISA_AVX512, CPU_ISA_AVX2, CPU_ISA_SCALAR };
    for (int ii = 0; ii < 3; ii++) {
        const cpu_kernels *k = cpu_kernels_for(isas[ii]);
        if (!k || (only && strcmp(only, cpu_isa_name(isas[ii])) != 0))
            continue;
        if (act_bits && cpu_kernels_for_activation(isas[ii], act_bits))
            k = cpu_kernels_for_activation(isas[ii], act_bits);
        size_t need = 0;
        /* The packed copies (Q4P), where this ISA has them. */
        alm_weight packed_w[N_LAYERS * 7 + 1];
        void *packed_data[N_LAYERS * 7 + 1] = { NULL };
        bool have_packed = cpu_matmul_pack_size(k, seq[Q4][0]) > 0;
        for (int i = 0; have_packed && i < n_seq; i++) {
            size_t bytes = cpu_matmul_pack_size(k, seq[Q4][i]);
            packed_w[i] = *seq[Q4][i];
            packed_data[i] = aligned_alloc(64, (bytes + 63) / 64 * 64);
            if (!packed_data[i] || cpu_matmul_pack(k, &packed_w[i], packed_data[i], bytes) < 0) {
                fprintf(stderr, "%s: cpu_matmul_pack failed\n", argv[0]);
                return 1;
            }
            packed_w[i].backend_data = packed_data[i];
            seq[Q4P][i] = &packed_w[i];
        }
        for (int s = 0; have_packed && s < N_SHAPES; s++)
            for (int i = 0; i < n_seq; i++)
                if (seq[Q4][i] == by_shape[Q4][s])
                    by_shape[Q4P][s] = seq[Q4P][i];
        for (int f = 0; f < Q4P; f++)
            for (int i = 0; i < n_seq; i++) {
                size_t s = cpu_matmul_scratch_size(k, seq[f][i], max_tok);
                if (s > need)
                    need = s;
            }
        b.scratch = aligned_alloc(64, (need + 63) / 64 * 64);
        for (int f = 0; f < N_FORMATS; f++) {
            if (f == Q4P && !have_packed)
                continue;
            for (int ci = 0; ci < N_COUNTS; ci++) {
                int n_tok = token_counts[ci];
                /* The scalar kernels are slow: skip their prefill. */
                if (isas[ii] == CPU_ISA_SCALAR && n_tok > 8)
                    continue;
                for (int s = 0; s < N_SHAPES; s++) {
                    const alm_weight *w = by_shape[f][s];
                    double min_ns;
                    double ns = time_median(&b, k, &w, 1, n_tok, &min_ns);
                    double macs = (double)w->rows * w->cols * n_tok / b.split;
                    printf("%s\n    {\"isa\": \"%s\", \"format\": \"%s\", \"shape\": \"%s\", "
                           "\"rows\": %d, \"cols\": %d, \"n_tok\": %d, \"median_ns\": %.0f, \"min_ns\": %.0f, "
                           "\"weights_per_ns\": %.2f, \"gflops\": %.1f}",
                           first ? "" : ",", cpu_isa_name(isas[ii]), format_names[f],
                           shapes[s].name, w->rows, w->cols, n_tok, ns, min_ns,
                           (double)w->rows * w->cols / b.split / ns, 2.0 * macs / ns);
                    first = 0;
                }
                double min_ns;
                double ns = time_median(&b, k, seq[f], n_seq, n_tok, &min_ns);
                printf(",\n    {\"isa\": \"%s\", \"format\": \"%s\", \"shape\": \"model\", "
                       "\"activation_bits\": %d, \"matmuls\": %d, \"n_tok\": %d, "
                       "\"us_per_pass\": %.2f, \"us_per_pass_min\": %.2f, \"us_per_token\": %.2f}",
                       cpu_isa_name(isas[ii]), format_names[f],
                       cpu_kernels_activation_bits(k), n_seq, n_tok, ns / 1e3, min_ns / 1e3,
                       ns / 1e3 / n_tok);
            }
        }
        free(b.scratch);
        for (int i = 0; i < n_seq; i++)
            free(packed_data[i]);
    }
    printf("\n  ]\n}\n");
    for (int f = 0; f < Q4P; f++)
        for (int i = 0; i < n_seq; i++)
            fixture_weight_free(&model[f][i]);
    free(b.x);
    free(b.y);
    return 0;
}
