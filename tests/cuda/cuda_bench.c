/* GPU timings of one model against the memory roofline, as one JSON line:
 *   cuda-bench PRESET|DIR [BITS]
 * PRESET builds random weights of a real shape (alm_model_new_random, BITS
 * 0 for BF16, default 4); DIR loads a model folder. Reports the device's
 * copy bandwidth, the bytes a decode step reads, and so the roofline; then
 * prefill of 512 tokens, decode steps, and passes over 2..16 tokens (the
 * verification of k draft tokens) as multiples of one decode step. Decode
 * is timed twice, interleaved: with passes replayed as CUDA graphs (the
 * default) and launched kernel by kernel (ALM_CUDA_GRAPHS=0); prefill
 * three ways: through cuBLAS (where it is found) with the tensor-core
 * attention (the default), with the decode attention kernel instead
 * (ALM_CUDA_FLASH=0), and through the matmul kernel too (ALM_CUDA_GEMM=0).
 * decode_ms and pass_cost hand every token's logits to the host;
 * decode_ms_argmax and pass_cost_argmax take the argmax on the GPU, as
 * greedy generation and speculative verification do (only the ids cross
 * the bus): the cost of a verification as speculative decoding pays it.
 * decode_ms_queued is greedy generation's step: its passes queued back to
 * back, no trip to the host between them (alm_seq_decode_greedy). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alm.h"
#include "core/clock.h"
#include "cuda/cuda_backend.h"
#if defined(ALM_CUDA_PROBES) && ALM_CUDA_PROBES
#include "cuda/cuda_kernels.h"

/* A diagnostic build (probes.cuh): the decode steps' records of the probed
 * kernels as CSV (kind, block x, block y, SM, the timer at marks 0-7). */
static void write_probes(const char *path)
{
    const size_t most = 1u << 17;   /* a ring's newest: about 5 steps of the matmuls' */
    unsigned long long *rec = malloc(most * 9 * sizeof *rec);
    FILE *f = fopen(path, "w");
    if (!rec || !f) {
        fprintf(stderr, "cuda-bench: cannot write %s\n", path);
        free(rec);
        if (f)
            fclose(f);
        return;
    }
    fprintf(f, "kind,bx,by,sm,t0,t1,t2,t3,t4,t5,t6,t7\n");
    size_t (*readers[])(unsigned long long *, size_t) = { cuda_attention_probes, cuda_matmul_probes };
    for (int r = 0; r < 2; r++) {
        const size_t n = readers[r](rec, most);
        for (size_t i = 0; i < n; i++) {
            const unsigned long long *x = rec + i * 9;
            fprintf(f, "%llu,%llu,%llu,%llu", x[0] >> 48, x[0] >> 32 & 0xffffu, x[0] >> 16 & 0xffffu,
                    x[0] & 0xffffu);
            for (int m = 1; m < 9; m++)
                fprintf(f, ",%llu", x[m]);
            fputc('\n', f);
        }
    }
    fclose(f);
    free(rec);
}
#endif

#define PROMPT 512
#define STEPS 64
#define REPEAT 5

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: cuda-bench PRESET|DIR [BITS]\n");
        return 2;
    }
    alm_error err = { 0 };
    double gbs = 0.0;
    if (cuda_copy_bandwidth((size_t)1 << 30, 3, &gbs, &err) < 0) {
        fprintf(stderr, "cuda-bench: %s\n", err.message);
        return 1;
    }
    alm_model_params mp = alm_model_default_params();
    mp.device = "cuda";
    alm_model *model = NULL;
    double t0 = alm_now_seconds();
    int r;
    if (strchr(argv[1], '/')) {
        r = alm_model_load(argv[1], &mp, &model, &err);
    } else {
        alm_random_params rp = alm_random_default_params();
        if (argc > 2)
            rp.bits = atoi(argv[2]);
        r = alm_model_new_random(argv[1], &rp, &mp, &model, &err);
    }
    if (r < 0) {
        fprintf(stderr, "cuda-bench: %s\n", err.message);
        return 1;
    }
    double load_s = alm_now_seconds() - t0;
    alm_pool *pool = NULL;
    alm_pool_new(1, &pool);
    alm_seq *seq = NULL;
    if (alm_seq_new(model, PROMPT + STEPS + 64, &seq, &err) < 0) {
        fprintf(stderr, "cuda-bench: %s\n", err.message);
        return 1;
    }
    int vocab = alm_model_vocab_size(model);
    int32_t *tokens = malloc(sizeof *tokens * (PROMPT + STEPS + 64));
    for (int i = 0; i < PROMPT + STEPS + 64; i++)
        tokens[i] = (int32_t)((i * 7919u + 13u) % (unsigned)vocab);
    float *logits = malloc(sizeof(float) * (size_t)vocab * 16);

    /* prefill: 512 tokens, logits of the last; by default, with the decode
     * attention kernel (ALM_CUDA_FLASH=0), and with that and the matmul
     * kernel (ALM_CUDA_GEMM=0 too), interleaved */
    alm_error why = { 0 };
    bool gemm = cuda_prefill_gemm(&why);
    alm_seq *paths[3] = { seq, NULL, NULL };
    for (int p = 1; p < 3 && r == 0; p++) {
        /* the work buffers, and so the path, are made at the first pass */
        setenv("ALM_CUDA_FLASH", "0", 1);
        if (p == 2)
            setenv("ALM_CUDA_GEMM", "0", 1);
        r = alm_seq_new(model, PROMPT + 8, &paths[p], &err);
        if (r == 0)
            r = alm_seq_forward(paths[p], pool, tokens, PROMPT, 1, logits, &err);
        unsetenv("ALM_CUDA_GEMM");
        unsetenv("ALM_CUDA_FLASH");
    }
    double prefill[3][REPEAT];
    for (int rep = -1; rep < REPEAT && r == 0; rep++) {
        for (int p = 0; p < 3 && r == 0; p++) {
            alm_seq_truncate(paths[p], 0);
            double s = alm_now_seconds();
            r = alm_seq_forward(paths[p], pool, tokens, PROMPT, 1, logits, &err);
            if (rep >= 0)
                prefill[p][rep] = alm_now_seconds() - s;
        }
    }
    alm_seq_free(paths[1]);
    alm_seq_free(paths[2]);
    /* the same prompt in a sequence whose passes are launched directly */
    alm_seq *direct = NULL;
    setenv("ALM_CUDA_GRAPHS", "0", 1);
    if (r == 0)
        r = alm_seq_new(model, PROMPT + STEPS + 64, &direct, &err);
    if (r == 0)
        r = alm_seq_forward(direct, pool, tokens, PROMPT, 1, logits, &err);
    unsetenv("ALM_CUDA_GRAPHS");
    /* decode: STEPS single-token passes after the prompt; QUEUED: greedy
     * generation's calls (alm_seq_decode_greedy: the passes queued back to
     * back, each fed the argmax of the one before on the GPU, the ids
     * back at the end) */
    enum { GRAPHS, DIRECT, ARGMAX, QUEUED, WAYS };   /* logits to the host; without graphs; argmax on the GPU */
    double decode[WAYS][REPEAT];
    int32_t ids[STEPS];
    for (int rep = 0; rep < REPEAT && r == 0; rep++) {
        for (int way = 0; way < WAYS && r == 0; way++) {
            alm_seq *sq = way == DIRECT ? direct : seq;
            alm_seq_truncate(sq, PROMPT);
            double s = alm_now_seconds();
            if (way == QUEUED)
                r = alm_seq_decode_greedy(sq, pool, &tokens[PROMPT], 1, STEPS, ids, NULL, &err);
            for (int i = 0; i < STEPS && r == 0 && way != QUEUED; i++)
                r = way == ARGMAX ? alm_seq_forward_argmax(sq, pool, &tokens[PROMPT + i], 1, 1, ids, NULL, &err)
                                  : alm_seq_forward(sq, pool, &tokens[PROMPT + i], 1, 1, logits, &err);
            decode[way][rep] = (alm_now_seconds() - s) / STEPS;
        }
    }
    alm_seq_free(direct);
#if defined(ALM_CUDA_PROBES) && ALM_CUDA_PROBES
    if (r == 0 && getenv("ALM_PROBE_FILE"))
        write_probes(getenv("ALM_PROBE_FILE"));
#endif
    if (r < 0) {
        fprintf(stderr, "cuda-bench: %s\n", err.message);
        return 1;
    }
    double step = median(decode[GRAPHS], REPEAT);
    size_t bytes = alm_model_decode_bytes(model);
    /* A copy of n bytes reads n and writes n: the memory moves gbs. */
    double roofline = (double)bytes / (gbs * 1e9);
    printf("{\"model\": \"%s\", \"bits\": \"%s\", \"load_s\": %.1f, \"copy_read_plus_write_gb_s\": %.0f, "
           "\"decode_bytes\": %zu, \"roofline_ms\": %.3f, \"prefill_tok_s\": %.0f, "
           "\"prefill_tok_s_no_flash\": %.0f, \"prefill_tok_s_kernel\": %.0f, \"prefill_gemm\": \"%s\", "
           "\"decode_ms\": %.3f, "
           "\"decode_tok_s\": %.1f, \"roofline_fraction\": %.3f, \"decode_ms_direct\": %.3f, "
           "\"graph_speedup\": %.3f, \"pass_cost\": {",
           argv[1], argc > 2 ? argv[2] : "default", load_s, gbs, bytes, roofline * 1e3,
           PROMPT / median(prefill[0], REPEAT), PROMPT / median(prefill[1], REPEAT),
           PROMPT / median(prefill[2], REPEAT),
           gemm ? "cublas" : why.message, step * 1e3, 1.0 / step, roofline / step,
           median(decode[DIRECT], REPEAT) * 1e3, median(decode[DIRECT], REPEAT) / step);
    static const int sizes[] = { 2, 4, 5, 8, 9, 16 };
    const double step_argmax = median(decode[ARGMAX], REPEAT), step_queued = median(decode[QUEUED], REPEAT);
    for (int argmax = 0; argmax < 2; argmax++) {
        if (argmax)
            printf("}, \"decode_ms_queued\": %.3f, \"roofline_fraction_queued\": %.3f, "
                   "\"decode_ms_argmax\": %.3f, \"pass_cost_argmax\": {",
                   step_queued * 1e3, roofline / step_queued, step_argmax * 1e3);
        for (size_t j = 0; j < sizeof sizes / sizeof sizes[0]; j++) {
            int n = sizes[j];
            double t[REPEAT];
            for (int rep = 0; rep < REPEAT && r == 0; rep++) {
                double s = alm_now_seconds();
                for (int i = 0; i < 16 && r == 0; i++) {
                    alm_seq_truncate(seq, PROMPT);
                    r = argmax ? alm_seq_forward_argmax(seq, pool, &tokens[PROMPT], n, n, ids, NULL, &err)
                               : alm_seq_forward(seq, pool, &tokens[PROMPT], n, n, logits, &err);
                }
                t[rep] = (alm_now_seconds() - s) / 16;
            }
            printf("%s\"%d\": %.3f", j ? ", " : "", n, median(t, REPEAT) / (argmax ? step_argmax : step));
        }
    }
    printf("}}\n");
    free(tokens);
    free(logits);
    alm_seq_free(seq);
    alm_pool_free(pool);
    alm_model_free(model);
    return r < 0;
}
