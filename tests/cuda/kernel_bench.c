/* Times each CUDA kernel alone on shapes of Llama 3 8B (4-bit, groups of
 * 64), as JSON lines: microseconds per launch (200 back to back: "us" as
 * stream launches, "us_graph" replayed from a CUDA graph, as a decode step
 * runs them, without the host's launch cost) and the bandwidth that means
 * for the matmuls. Tells which kernel holds a decode
 * step back from the memory roofline. A matmul cycles through copies of
 * its weights that together exceed the L2 cache (as a decode step's
 * layers do), so that its bandwidth is the memory's.
 *
 *   cuda-kernel-bench [prefill | attention]
 *
 * prefill: only the pieces of a 512-token pass; attention: only a decode
 * step's attention (at 540 and 1000 keys), a second of the GPU's time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#ifdef ALM_HAVE_CUBLAS
#include "cuda/cuda_gemm.h"
#endif
#include "cuda/cuda_kernels.h"

#define LAUNCHES 200

static float *device_floats(size_t n, float value)
{
    float *host = malloc(n * sizeof *host), *dev = NULL;
    for (size_t i = 0; i < n; i++)
        host[i] = value * (float)((i * 2654435761u) % 1000u) / 1000.0f;
    cudaMalloc((void **)&dev, n * sizeof *dev);
    cudaMemcpy(dev, host, n * sizeof *dev, cudaMemcpyHostToDevice);
    free(host);
    return dev;
}

/* device_floats' values, as the float16 of a KV cache */
static cuda_kv *device_kv(size_t n, float value)
{
    _Float16 *host = malloc(n * sizeof *host);
    cuda_kv *dev = NULL;
    for (size_t i = 0; i < n; i++)
        host[i] = (_Float16)(value * (float)((i * 2654435761u) % 1000u) / 1000.0f);
    cudaMalloc((void **)&dev, n * sizeof *dev);
    cudaMemcpy(dev, host, n * sizeof *dev, cudaMemcpyHostToDevice);
    free(host);
    return dev;
}

static cuda_matrix make_matrix(int rows, int cols, int bits)
{
    cuda_raw_weight raw = { .rows = rows, .cols = cols, .bits = bits, .group_size = 64,
                            .dtype = CUDA_BF16, .scale_dtype = CUDA_BF16 };
    size_t data = bits ? (size_t)rows * cols * bits / 8 : (size_t)rows * cols * 2;
    size_t scales = (size_t)rows * (cols / 64) * 2;
    void *d = NULL, *sc = NULL;
    cudaMalloc(&d, data);
    cudaMemset(d, 0x5a, data);
    cudaMalloc(&sc, scales);
    cudaMemset(sc, 0x3c, scales);
    raw.data = d;
    raw.scales = raw.biases = sc;
    cuda_matrix m = { 0 };
    int b = bits ? bits : 16;
    cudaMalloc((void **)&m.tiles, cuda_matrix_tile_bytes(rows, cols, b));
    if (bits)
        cudaMalloc(&m.scale_bias, cuda_matrix_scale_bytes(rows, cols, 64));
    cuda_repack_weight(&raw, &m, 0);
    cudaDeviceSynchronize();
    cudaFree(d);
    cudaFree(sc);
    return m;
}

static cudaEvent_t ev0, ev1;
static cudaStream_t bs;   /* the launches' stream (the legacy one cannot be captured) */

static void start(void) { cudaEventRecord(ev0, bs); }

static double stop_us(void)
{
    float ms = 0.0f;
    cudaEventRecord(ev1, bs);
    cudaEventSynchronize(ev1);
    cudaEventElapsedTime(&ms, ev0, ev1);
    return ms * 1e3 / LAUNCHES;
}

/* Microseconds per launch of LAUNCH (a statement that may use r, the
 * launch's index), into US as stream launches and into US_GRAPH replayed
 * from a graph of all of them (the second replay, the first warms up). */
#define TIME_LAUNCHES(us, us_graph, LAUNCH)                                          \
    do {                                                                              \
        start();                                                                      \
        for (int r = 0; r < LAUNCHES; r++) {                                          \
            LAUNCH;                                                                   \
        }                                                                             \
        (us) = stop_us();                                                             \
        cudaGraph_t graph_ = NULL;                                                    \
        cudaGraphExec_t exec_ = NULL;                                                 \
        (us_graph) = -1.0;                                                            \
        if (cudaStreamBeginCapture(bs, cudaStreamCaptureModeThreadLocal) == cudaSuccess) { \
            for (int r = 0; r < LAUNCHES; r++) {                                      \
                LAUNCH;                                                               \
            }                                                                         \
            if (cudaStreamEndCapture(bs, &graph_) == cudaSuccess &&                   \
                cudaGraphInstantiate(&exec_, graph_, 0) == cudaSuccess) {             \
                cudaGraphLaunch(exec_, bs);                                           \
                start();                                                              \
                cudaGraphLaunch(exec_, bs);                                           \
                (us_graph) = stop_us();                                               \
            }                                                                         \
        }                                                                             \
        if (exec_)                                                                    \
            cudaGraphExecDestroy(exec_);                                              \
        if (graph_)                                                                   \
            cudaGraphDestroy(graph_);                                                 \
    } while (0)

#define MAX_COPIES 64
#define COPIES_BYTES ((size_t)512 << 20)

static void bench_matmul(const char *name, int rows, int cols, int bits, int n_tok, int swiglu)
{
    int b = bits ? bits : 16;
    double bytes = (double)(cuda_matrix_tile_bytes(rows, cols, b) +
                            (bits ? cuda_matrix_scale_bytes(rows, cols, 64) : 0)) * (swiglu ? 2 : 1);
    int copies = (int)((double)COPIES_BYTES / bytes) + 1;
    if (copies > MAX_COPIES)
        copies = MAX_COPIES;
    cuda_matrix w[MAX_COPIES], up[MAX_COPIES];
    for (int c = 0; c < copies; c++) {
        w[c] = make_matrix(rows, cols, bits);
        up[c] = swiglu ? make_matrix(rows, cols, bits) : (cuda_matrix){ 0 };
    }
    float *x = device_floats((size_t)n_tok * cols, 1.0f), *y = device_floats((size_t)n_tok * rows, 0.0f);
    void *frag = NULL;
    cudaMalloc(&frag, cuda_fragment_bytes(n_tok, cols));
    cuda_to_fragments(x, n_tok, cols, NULL, 0.0f, frag, bs);
    for (int i = 0; i < 10; i++)
        cuda_matmul(&w[i % copies], swiglu ? &up[i % copies] : NULL, frag, n_tok, NULL, NULL, y,
                    rows, 0, 1.0f, bs);
    double us, us_graph;
    TIME_LAUNCHES(us, us_graph,
                  cuda_matmul(&w[r % copies], swiglu ? &up[r % copies] : NULL, frag, n_tok, NULL,
                              NULL, y, rows, 0, 1.0f, bs));
    printf("{\"kernel\": \"matmul\", \"shape\": \"%s\", \"bits\": %d, \"n_tok\": %d, \"copies\": %d, \"us\": %.2f, \"us_graph\": %.2f, \"gb_s\": %.0f, \"error\": \"%s\"}\n",
           name, b, n_tok, copies, us, us_graph, bytes / (us_graph * 1e-6) / 1e9, cudaGetErrorString(cudaGetLastError()));
    for (int c = 0; c < copies; c++) {
        cudaFree(w[c].tiles);
        cudaFree(w[c].scale_bias);
        cudaFree(up[c].tiles);
        cudaFree(up[c].scale_bias);
    }
    cudaFree(x);
    cudaFree(y);
    cudaFree(frag);
}

static void bench_small(int n_tok, int pos0)
{
    const int hidden = 4096, heads = 32, kv = 8, d = 128, ctx = 4096;
    cuda_attention_shape a = { heads, kv, d, 0 };
    float *x = device_floats((size_t)n_tok * 14336, 1.0f), *norm = device_floats(14336, 1.0f);
    float *q = device_floats((size_t)n_tok * heads * d, 1.0f), *k = device_floats((size_t)n_tok * kv * d, 1.0f);
    float *v = device_floats((size_t)n_tok * kv * d, 1.0f), *out = device_floats((size_t)n_tok * heads * d, 0.0f);
    cuda_kv *kc = device_kv((size_t)ctx * kv * d, 0.5f), *vc = device_kv((size_t)ctx * kv * d, 0.5f);
    float *cs = device_floats((size_t)ctx * d / 2, 1.0f), *sn = device_floats((size_t)ctx * d / 2, 1.0f);
    size_t parts = (size_t)heads * 32 * (ctx / CUDA_ATTENTION_SPLIT_KEYS);
    float *partials = device_floats(parts * cuda_attention_partial_floats(d), 0.0f);
    unsigned *counters = NULL;
    const size_t n_counters = CUDA_ATTENTION_COUNTERS(heads, n_tok);
    cudaMalloc((void **)&counters, n_counters * sizeof *counters);
    cudaMemset(counters, 0, n_counters * sizeof *counters);
    /* as a decode step runs it: the last block merges */
    const cuda_attention_scratch scratch = { partials, parts, counters, n_counters, 0 };
    /* and as it runs it on a GPU with thread block clusters */
    const cuda_attention_scratch clustered = { NULL, 0, NULL, 0, cuda_attention_cluster_blocks(&a) };
    void *frag = NULL;
    cudaMalloc(&frag, cuda_fragment_bytes(n_tok, 14336));
    static const int dims[] = { 4096, 14336 };
    double us, us_graph;
    for (int i = 0; i < 2; i++) {
        TIME_LAUNCHES(us, us_graph, cuda_to_fragments(x, n_tok, dims[i], norm, 1e-5f, frag, bs));
        printf("{\"kernel\": \"to_fragments\", \"dim\": %d, \"n_tok\": %d, \"us\": %.2f, \"us_graph\": %.2f}\n",
               dims[i], n_tok, us, us_graph);
    }
    TIME_LAUNCHES(us, us_graph,
                  cuda_rope_store(&a, cs, sn, NULL, NULL, 1e-5f, q, k, v, n_tok, pos0, NULL, kc, vc, bs));
    printf("{\"kernel\": \"rope_store\", \"n_tok\": %d, \"us\": %.2f, \"us_graph\": %.2f}\n", n_tok, us, us_graph);
    TIME_LAUNCHES(us, us_graph,
                  cuda_attention(&a, q, n_tok, pos0, NULL, 0, kc, vc, out, &scratch, NULL, bs));
    printf("{\"kernel\": \"attention\", \"n_tok\": %d, \"pos0\": %d, \"us\": %.2f, \"us_graph\": %.2f, \"error\": \"%s\"}\n",
           n_tok, pos0, us, us_graph, cudaGetErrorString(cudaGetLastError()));
    if (clustered.cluster) {
        TIME_LAUNCHES(us, us_graph,
                      cuda_attention(&a, q, n_tok, pos0, NULL, 0, kc, vc, out, &clustered, NULL, bs));
        printf("{\"kernel\": \"attention_cluster\", \"cluster\": %d, \"n_tok\": %d, \"pos0\": %d, \"us\": %.2f, \"us_graph\": %.2f, \"error\": \"%s\"}\n",
               clustered.cluster, n_tok, pos0, us, us_graph, cudaGetErrorString(cudaGetLastError()));
    }
    /* a decode step's rope and attention in one launch, as the engine runs
     * them on a GPU with thread block clusters */
    if (clustered.cluster && n_tok == 1 && pos0 < clustered.cluster * CUDA_ATTENTION_SPLIT_KEYS) {
        const cuda_rope rope = { cs, sn, NULL, NULL, 1e-5f };
        TIME_LAUNCHES(us, us_graph,
                      cuda_rope_attention(&a, &rope, q, k, v, n_tok, pos0, NULL, 0, kc, vc, out, &clustered, NULL, bs));
        printf("{\"kernel\": \"rope_attention_cluster\", \"cluster\": %d, \"pos0\": %d, \"us\": %.2f, \"us_graph\": %.2f, \"error\": \"%s\"}\n",
               clustered.cluster, pos0, us, us_graph, cudaGetErrorString(cudaGetLastError()));
    }
    if (n_tok >= CUDA_FLASH_MIN_TOKENS) {
        TIME_LAUNCHES(us, us_graph, cuda_flash_attention(&a, q, n_tok, pos0, kc, vc, out, frag, bs));
        printf("{\"kernel\": \"flash_attention\", \"n_tok\": %d, \"pos0\": %d, \"us\": %.2f, \"us_graph\": %.2f, \"error\": \"%s\"}\n",
               n_tok, pos0, us, us_graph, cudaGetErrorString(cudaGetLastError()));
    }
    (void)hidden;
    cudaFree(x); cudaFree(norm); cudaFree(q); cudaFree(k); cudaFree(v); cudaFree(out);
    cudaFree(kc); cudaFree(vc); cudaFree(cs); cudaFree(sn); cudaFree(partials); cudaFree(counters); cudaFree(frag);
}

#ifdef ALM_HAVE_CUBLAS
/* The pieces of a prefill pass's matmul through cuBLAS: dequantizing the
 * weights into float16 alone, and the whole (dequantize, GEMM, epilogue),
 * with the FLOP rate that means. */
static void bench_prefill_matmul(const char *name, int rows, int cols, int n_tok, int swiglu)
{
    cuda_gemm *g = NULL;
    alm_error err = { 0 };
    if (cuda_gemm_new(0, &g, &err) < 0) {
        printf("{\"kernel\": \"gemm\", \"shape\": \"%s\", \"error\": \"%s\"}\n", name, err.message);
        return;
    }
    cuda_matrix w = make_matrix(rows, cols, 4), up = swiglu ? make_matrix(rows, cols, 4) : (cuda_matrix){ 0 };
    float *x = device_floats((size_t)n_tok * cols, 1.0f), *y = device_floats((size_t)n_tok * rows, 0.0f);
    void *frag = NULL, *frag_out = NULL, *halves = NULL;
    cudaMalloc(&frag, cuda_fragment_bytes(n_tok, cols));
    cudaMalloc(&frag_out, cuda_fragment_bytes(n_tok, rows));
    cudaMalloc(&halves, (size_t)rows * cols * 2);
    cuda_to_fragments(x, n_tok, cols, NULL, 0.0f, frag, 0);
    const int reps = 20;
    for (int i = 0; i < 2; i++)
        cuda_dequantize_rows(&w, 0, rows, halves, 0);
    cudaDeviceSynchronize();
    cudaEventRecord(ev0, 0);
    for (int i = 0; i < reps * (swiglu ? 2 : 1); i++)
        cuda_dequantize_rows(&w, 0, rows, halves, 0);
    float ms_dq = 0.0f, ms = 0.0f;
    cudaEventRecord(ev1, 0);
    cudaEventSynchronize(ev1);
    cudaEventElapsedTime(&ms_dq, ev0, ev1);
    int r = 0;
    for (int i = 0; i < 2 && r == 0; i++)
        r = cuda_gemm_matmul(g, &w, swiglu ? &up : NULL, frag, n_tok, NULL, NULL, y, rows, 0, 1.0f,
                             swiglu ? frag_out : NULL, &err);
    cudaDeviceSynchronize();
    cudaEventRecord(ev0, 0);
    for (int i = 0; i < reps && r == 0; i++)
        r = cuda_gemm_matmul(g, &w, swiglu ? &up : NULL, frag, n_tok, NULL, NULL, y, rows, 0, 1.0f,
                             swiglu ? frag_out : NULL, &err);
    cudaEventRecord(ev1, 0);
    cudaEventSynchronize(ev1);
    cudaEventElapsedTime(&ms, ev0, ev1);
    double us = ms * 1e3 / reps, flop = 2.0 * rows * cols * n_tok * (swiglu ? 2 : 1);
    printf("{\"kernel\": \"gemm\", \"shape\": \"%s\", \"n_tok\": %d, \"us\": %.1f, \"dequant_us\": %.1f, \"tflop_s\": %.0f, \"error\": \"%s\"}\n",
           name, n_tok, us, ms_dq * 1e3 / reps, flop / (us * 1e-6) / 1e12, r == 0 ? cudaGetErrorString(cudaGetLastError()) : err.message);
    cuda_gemm_free(g);
    cudaFree(w.tiles); cudaFree(w.scale_bias); cudaFree(up.tiles); cudaFree(up.scale_bias);
    cudaFree(x); cudaFree(y); cudaFree(frag); cudaFree(frag_out); cudaFree(halves);
}
#endif

int main(int argc, char **argv)
{
    if (cuda_matmul_setup() != cudaSuccess || cuda_attention_setup() != cudaSuccess) {
        fprintf(stderr, "cuda-kernel-bench: no usable GPU\n");
        return 1;
    }
    cudaEventCreate(&ev0);
    cudaEventCreate(&ev1);
    cudaStreamCreateWithFlags(&bs, cudaStreamNonBlocking);
    /* cuda-kernel-bench prefill: only the pieces of a 512-token pass */
    if (argc > 1 && strcmp(argv[1], "prefill") == 0) {
#ifdef ALM_HAVE_CUBLAS
        bench_prefill_matmul("qkv 6144x4096", 6144, 4096, 512, 0);
        bench_prefill_matmul("o 4096x4096", 4096, 4096, 512, 0);
        bench_prefill_matmul("gate+up 14336x4096", 14336, 4096, 512, 1);
        bench_prefill_matmul("down 4096x14336", 4096, 14336, 512, 0);
#endif
        bench_small(512, 0);
        return 0;
    }
    /* cuda-kernel-bench attention: a decode step's attention only */
    if (argc > 1 && strcmp(argv[1], "attention") == 0) {
        bench_small(1, 540);
        bench_small(1, 1000);
        return 0;
    }
    static const int toks[] = { 1, 5, 32 };
    for (int i = 0; i < 3; i++) {
        bench_matmul("q_proj 4096x4096", 4096, 4096, 4, toks[i], 0);
        bench_matmul("k_proj 1024x4096", 1024, 4096, 4, toks[i], 0);
        bench_matmul("gate+up 14336x4096", 14336, 4096, 4, toks[i], 1);
        bench_matmul("down 4096x14336", 4096, 14336, 4, toks[i], 0);
        bench_matmul("lm_head 128256x4096", 128256, 4096, 4, toks[i], 0);
    }
    /* a decode step's q/k/v in one launch, and llama3-70b's matmuls */
    bench_matmul("qkv 6144x4096", 6144, 4096, 4, 1, 0);
    bench_matmul("70b qkv 10240x8192", 10240, 8192, 4, 1, 0);
    bench_matmul("70b o 8192x8192", 8192, 8192, 4, 1, 0);
    bench_matmul("70b gate+up 28672x8192", 28672, 8192, 4, 1, 1);
    bench_matmul("70b down 8192x28672", 8192, 28672, 4, 1, 0);
    bench_matmul("q_proj bf16", 4096, 4096, 0, 1, 0);
    bench_matmul("down bf16", 4096, 14336, 0, 1, 0);
    bench_small(1, 540);
    bench_small(1, 4000);
    bench_small(5, 540);
    bench_small(32, 0);
    bench_small(512, 0);
    return 0;
}
