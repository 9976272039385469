/* Prefill matmuls through cuBLAS (see cuda_gemm.h for why). */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>

#include <cublas_v2.h>

#include "cuda/cuda_error.h"
#include "cuda/cuda_gemm.h"

#define STR_(x) #x
#define STR(x) STR_(x)
/* The major version this build's headers declare: its ABI. */
#define CUBLAS_LIBRARY "libcublas.so." STR(CUBLAS_VER_MAJOR)

/* Limits of one slice of rows: its float16 weights (for SwiGLU, gate and
 * up each) and its float32 results. Every matrix of an 8B layer is one
 * slice; larger ones (a 70B layer's MLP) take several, each still rows
 * enough to fill the GPU. 128 MB and 64 MB. */
#define MAX_SLICE_HALVES ((size_t)64 << 20)
#define MAX_SLICE_FLOATS ((size_t)16 << 20)

typedef struct cublas_api {
    void *lib;
    __typeof__(cublasCreate_v2) *create;
    __typeof__(cublasDestroy_v2) *destroy;
    __typeof__(cublasSetStream_v2) *set_stream;
    __typeof__(cublasGemmEx) *gemm_ex;
    __typeof__(cublasGetStatusString) *status_string;
} cublas_api;

/* A device buffer that grows to the largest size asked for. */
typedef struct buffer {
    void *p;
    size_t bytes;
} buffer;

/* Buffers grow to what the passes ask for, so that a model (or a draft)
 * whose passes stay small pays no memory for the GEMM. */
struct cuda_gemm {
    cublas_api api;
    cublasHandle_t handle;
    cudaStream_t stream;
    buffer w[2];     /* a slice of dequantized rows: gate (or the only matrix), up */
    buffer c[2];     /* its GEMM results [n_tok][slice rows] */
    buffer x;        /* the activations, row-major float16 [n_tok][columns] */
};

static int round_up(int a, int b) { return (a + b - 1) / b * b; }

static int cublas_fail(const cuda_gemm *g, alm_error *err, cublasStatus_t st, const char *what)
{
    const char *why = g->api.status_string ? g->api.status_string(st) : "failed";
    return alm_error_set(err, st == CUBLAS_STATUS_ALLOC_FAILED ? -ENOMEM : -EIO,
                         "cuBLAS: %s: %s (status %d)", what, why, (int)st);
}

static int reserve(buffer *b, size_t bytes, alm_error *err)
{
    if (b->bytes >= bytes)
        return 0;
    cudaFree(b->p);
    b->p = NULL;
    b->bytes = 0;
    cudaError_t e = cudaMalloc(&b->p, bytes);
    if (e != cudaSuccess) {
        b->p = NULL;
        size_t free_bytes = 0, total = 0;
        (void)cudaGetLastError();
        if (e == cudaErrorMemoryAllocation && cudaMemGetInfo(&free_bytes, &total) == cudaSuccess)
            return alm_error_set(err, -ENOMEM,
                                 "not enough GPU memory for the prefill GEMM's buffers: %.0f MiB "
                                 "more needed, %.0f MiB of %.0f MiB free",
                                 bytes / 1048576.0, free_bytes / 1048576.0, total / 1048576.0);
        return cuda_fail(err, e, "allocating the prefill GEMM's buffers");
    }
    b->bytes = bytes;
    return 0;
}

static int open_cublas(cublas_api *api, alm_error *err)
{
    api->lib = dlopen(CUBLAS_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (!api->lib)
        return alm_error_set(err, -ENOENT, "cannot open %s (%s)", CUBLAS_LIBRARY, dlerror());
    api->create = (__typeof__(api->create))dlsym(api->lib, "cublasCreate_v2");
    api->destroy = (__typeof__(api->destroy))dlsym(api->lib, "cublasDestroy_v2");
    api->set_stream = (__typeof__(api->set_stream))dlsym(api->lib, "cublasSetStream_v2");
    api->gemm_ex = (__typeof__(api->gemm_ex))dlsym(api->lib, "cublasGemmEx");
    api->status_string = (__typeof__(api->status_string))dlsym(api->lib, "cublasGetStatusString");
    if (!api->create || !api->destroy || !api->set_stream || !api->gemm_ex) {
        dlclose(api->lib);
        api->lib = NULL;
        return alm_error_set(err, -ENOENT,
                             "%s lacks cublasCreate_v2, cublasSetStream_v2 or cublasGemmEx",
                             CUBLAS_LIBRARY);
    }
    return 0;
}

int cuda_gemm_probe(alm_error *err)
{
    cublas_api api = { 0 };
    int r = open_cublas(&api, err);
    if (r == 0)
        dlclose(api.lib);
    return r;
}

void cuda_gemm_free(cuda_gemm *g)
{
    if (!g)
        return;
    if (g->stream)
        cudaStreamSynchronize(g->stream);
    for (int i = 0; i < 2; i++) {
        cudaFree(g->w[i].p);
        cudaFree(g->c[i].p);
    }
    cudaFree(g->x.p);
    if (g->handle)
        g->api.destroy(g->handle);
    if (g->api.lib)
        dlclose(g->api.lib);
    free(g);
}

int cuda_gemm_new(cudaStream_t s, cuda_gemm **out, alm_error *err)
{
    cuda_gemm *g = calloc(1, sizeof *g);
    if (!g)
        return alm_error_set(err, -ENOMEM, "out of memory");
    int r = open_cublas(&g->api, err);
    if (r < 0) {
        free(g);
        return r;
    }
    g->stream = s;
    cublasStatus_t st = g->api.create(&g->handle);
    if (st != CUBLAS_STATUS_SUCCESS) {
        g->handle = NULL;
        r = cublas_fail(g, err, st, "creating a handle");
    } else if ((st = g->api.set_stream(g->handle, s)) != CUBLAS_STATUS_SUCCESS) {
        r = cublas_fail(g, err, st, "setting the stream");
    }
    if (r < 0) {
        cuda_gemm_free(g);
        return r;
    }
    *out = g;
    return 0;
}

/* C[n_tok][rows] = X W^T over a slice of rows: in cuBLAS's column-major
 * terms C^T (rows x n_tok) = W (the row-major slice, transposed) X^T. */
static int gemm(cuda_gemm *g, const void *w, int rows, int cols, int n_tok, void *c, alm_error *err)
{
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t st = g->api.gemm_ex(g->handle, CUBLAS_OP_T, CUBLAS_OP_N, rows, n_tok, cols, &one,
                                       w, CUDA_R_16F, cols, g->x.p, CUDA_R_16F, cols, &zero, c,
                                       CUDA_R_32F, rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return st == CUBLAS_STATUS_SUCCESS ? 0 : cublas_fail(g, err, st, "GEMM");
}

/* Rows of a slice: whole tiles, as many as the limits allow. */
static int slice_rows(int rows, int cols, int n_tok)
{
    size_t by_w = MAX_SLICE_HALVES / (size_t)cols, by_c = MAX_SLICE_FLOATS / (size_t)n_tok;
    size_t n = by_w < by_c ? by_w : by_c;
    n = n / CUDA_TILE_ROWS * CUDA_TILE_ROWS;
    size_t all = (size_t)round_up(rows, CUDA_TILE_ROWS);
    return (int)(n < all ? n : all);
}

/* One matrix (or gate and up) over its rows [0, n_rows): slices
 * dequantized, multiplied, and finished by the epilogue e (whose slice
 * fields are set here). The activations are in g->x. */
static int run_slices(cuda_gemm *g, const cuda_matrix *w, const cuda_matrix *up, int n_rows,
                      int n_tok, cuda_epilogue e, alm_error *err)
{
    int cols = w->n_kb * CUDA_TILE_COLS, n_m = up ? 2 : 1;
    int step = slice_rows(n_rows, cols, n_tok);
    if (step < CUDA_TILE_ROWS)
        return alm_error_set(err, -EINVAL, "prefill GEMM: %d tokens of %d columns are too many",
                             n_tok, cols);
    const cuda_matrix *m[2] = { w, up };
    int r = 0;
    for (int i = 0; i < n_m && r == 0; i++) {
        r = reserve(&g->w[i], (size_t)step * (size_t)cols * 2, err);
        if (r == 0)
            r = reserve(&g->c[i], (size_t)step * (size_t)n_tok * sizeof(float), err);
    }
    for (int row0 = 0; row0 < n_rows && r == 0; row0 += step) {
        int rows = n_rows - row0 < step ? n_rows - row0 : step;
        int padded = round_up(rows, CUDA_TILE_ROWS);
        for (int i = 0; i < n_m && r == 0; i++) {
            cudaError_t ce = cuda_dequantize_rows(m[i], row0, padded, g->w[i].p, g->stream);
            r = ce == cudaSuccess ? gemm(g, g->w[i].p, padded, cols, n_tok, g->c[i].p, err)
                                  : cuda_fail(err, ce, "dequantizing for the prefill GEMM");
        }
        if (r < 0)
            break;
        e.row0 = row0;
        e.n_rows = rows;
        e.ld = padded;
        e.gate = g->c[0].p;
        e.up = up ? g->c[1].p : NULL;
        cudaError_t ce = cuda_matmul_epilogue(&e, g->stream);
        if (ce != cudaSuccess)
            r = cuda_fail(err, ce, "the prefill GEMM's epilogue");
    }
    return r;
}

static int load_activations(cuda_gemm *g, const void *frag, int n_tok, int cols, alm_error *err)
{
    int r = reserve(&g->x, (size_t)n_tok * (size_t)cols * 2, err);
    if (r < 0)
        return r;
    cudaError_t e = cuda_fragments_to_rows(frag, n_tok, cols, g->x.p, g->stream);
    return e == cudaSuccess ? 0 : cuda_fail(err, e, "activations for the prefill GEMM");
}

int cuda_gemm_matmul(cuda_gemm *g, const cuda_matrix *w, const cuda_matrix *up, const void *frag,
                     int n_tok, const float *bias, const float *up_bias, float *y, int y_stride,
                     int accumulate, float alpha, void *frag_out, alm_error *err)
{
    if (n_tok < 1 || y_stride < 1 || y_stride > w->rows ||
        (up && (up->rows != w->rows || up->n_kb != w->n_kb)) ||
        (frag_out && y_stride % CUDA_TILE_COLS))
        return alm_error_set(err, -EINVAL, "prefill GEMM: mismatched shapes");
    int r = load_activations(g, frag, n_tok, w->n_kb * CUDA_TILE_COLS, err);
    if (r < 0)
        return r;
    cuda_epilogue e = { .n_tok = n_tok, .bias = bias, .up_bias = up_bias, .y = y,
                        .y_stride = y_stride, .accumulate = accumulate, .alpha = alpha,
                        .frag_out = frag_out };
    return run_slices(g, w, up, y_stride, n_tok, e, err);
}

int cuda_gemm_matmul_many(cuda_gemm *g, const cuda_matrix *const *w, int n_w, const void *frag,
                          int n_tok, const float *const *bias, float *const *y, alm_error *err)
{
    if (n_tok < 1 || n_w < 1)
        return alm_error_set(err, -EINVAL, "prefill GEMM: no tokens or no matrices");
    for (int i = 1; i < n_w; i++)
        if (w[i]->n_kb != w[0]->n_kb)
            return alm_error_set(err, -EINVAL, "prefill GEMM: matrices of different inputs");
    int r = load_activations(g, frag, n_tok, w[0]->n_kb * CUDA_TILE_COLS, err);
    for (int i = 0; i < n_w && r == 0; i++) {
        cuda_epilogue e = { .n_tok = n_tok, .bias = bias ? bias[i] : NULL, .y = y[i],
                            .y_stride = w[i]->rows, .alpha = 1.0f };
        r = run_slices(g, w[i], NULL, w[i]->rows, n_tok, e, err);
    }
    return r;
}
