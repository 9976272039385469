/* The kernels around a library GEMM for prefill (cuda_gemm.c): weights out
 * of the tile layout into row-major float16, activations out of the
 * fragments into row-major float16, and the matmul kernel's epilogue (bias,
 * SwiGLU, alpha, accumulation, fragments of the result) over the GEMM's
 * float32 results.
 *
 * Each dequantized weight is the float16 the matmul kernel computes for it
 * (one fused multiply-add of q, scale and bias), so the two paths differ
 * only in the order of the float32 sums. */
#include <cuda_fp16.h>

#include "cuda_kernels.h"
#include "fragment_layout.cuh"

#define THREADS 256

static __host__ __device__ inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

/* One thread per pair of columns (2c, 2c + 1) of a row: the pair sits in
 * one word of one lane (tile layout, cuda_kernels.h and matmul.cu), its two
 * values 16 bits apart, and both share a group. */
static __global__ void dequantize_rows(cuda_matrix m, int row0, int n_rows, __half2 *out)
{
    const int pairs = m.n_kb * (CUDA_TILE_COLS / 2);
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)n_rows * (size_t)pairs)
        return;
    const int r = (int)(idx / (size_t)pairs), col = (int)(idx % (size_t)pairs) * 2;
    const int row = row0 + r;
    const int tile = row >> 4, rr = row & 15, kb = col >> 6, cc = col & 63;
    const int step = cc >> 4, c16 = cc & 15;
    const int lane = (rr & 7) * 4 + ((c16 & 7) >> 1);
    const int ps = step * 4 + ((rr >> 3) | ((c16 >> 3) << 1));
    const int wpl = m.bits == 16 ? 16 : m.bits;
    const uint32_t *words = m.tiles + (((size_t)tile * (size_t)m.n_kb + (size_t)kb) * 32u + (size_t)lane) * (size_t)wpl;
    __half2 v;
    if (m.bits == 16) {
        uint32_t w = words[ps];
        v = *reinterpret_cast<__half2 *>(&w);
    } else {
        const int per_word = 16 / m.bits, slot = ps % per_word;
        const uint32_t w = words[ps / per_word], mask = (1u << m.bits) - 1u;
        const uint32_t q0 = (w >> (slot * m.bits)) & mask, q1 = (w >> (16 + slot * m.bits)) & mask;
        const int sb_slot = (rr & 7) * 2 + (rr >> 3);
        const __half2 sb = ((const __half2 *)m.scale_bias)[((size_t)tile * (size_t)m.n_groups + (size_t)(col >> m.group_shift)) * 16u + (size_t)sb_slot];
        /* q < 256 is exact in float16 */
        v = __hfma2(__halves2half2(__uint2half_rn(q0), __uint2half_rn(q1)), __low2half2(sb),
                    __high2half2(sb));
    }
    out[idx] = v;
}

cudaError_t cuda_dequantize_rows(const cuda_matrix *m, int row0, int n_rows, void *out, cudaStream_t s)
{
    if (row0 < 0 || n_rows < 0 || row0 % CUDA_TILE_ROWS ||
        row0 + n_rows > ceil_div(m->rows, CUDA_TILE_ROWS) * CUDA_TILE_ROWS)
        return cudaErrorInvalidValue;
    size_t n = (size_t)n_rows * (size_t)m->n_kb * (CUDA_TILE_COLS / 2);
    if (n)
        dequantize_rows<<<(unsigned)((n + THREADS - 1) / THREADS), THREADS, 0, s>>>(*m, row0, n_rows,
                                                                                 (__half2 *)out);
    return cudaGetLastError();
}

static __global__ void fragments_to_rows(const __half *frag, int n_tok, int cols, __half *x)
{
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)n_tok * (size_t)cols)
        return;
    const int tok = (int)(idx / (size_t)cols), c = (int)(idx % (size_t)cols);
    x[idx] = frag[fragment_index(tok, c, cols / 16)];
}

cudaError_t cuda_fragments_to_rows(const void *frag, int n_tok, int cols, void *x, cudaStream_t s)
{
    if (cols % CUDA_TILE_COLS)
        return cudaErrorInvalidValue;
    size_t n = (size_t)n_tok * (size_t)cols;
    if (n)
        fragments_to_rows<<<(unsigned)((n + THREADS - 1) / THREADS), THREADS, 0, s>>>(
            (const __half *)frag, n_tok, cols, (__half *)x);
    return cudaGetLastError();
}

static __global__ void matmul_epilogue(cuda_epilogue e)
{
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)e.n_tok * (size_t)e.n_rows)
        return;
    const int tok = (int)(idx / (size_t)e.n_rows), r = (int)(idx % (size_t)e.n_rows);
    const int row = e.row0 + r;
    float v = e.gate[(size_t)tok * (size_t)e.ld + (size_t)r];
    if (e.bias)
        v += e.bias[row];
    if (e.up) {
        float u = e.up[(size_t)tok * (size_t)e.ld + (size_t)r];
        if (e.up_bias)
            u += e.up_bias[row];
        v = v / (1.0f + expf(-v)) * u;
    }
    float *out = e.y + (size_t)tok * (size_t)e.y_stride + (size_t)row;
    *out = e.accumulate ? *out + e.alpha * v : e.alpha * v;
    if (e.frag_out)
        ((__half *)e.frag_out)[fragment_index(tok, row, e.y_stride / 16)] = __float2half_rn(*out);
}

cudaError_t cuda_matmul_epilogue(const cuda_epilogue *e, cudaStream_t s)
{
    if (e->frag_out && e->y_stride % CUDA_TILE_COLS)
        return cudaErrorInvalidValue;
    size_t n = (size_t)e->n_tok * (size_t)e->n_rows;
    if (n)
        matmul_epilogue<<<(unsigned)((n + THREADS - 1) / THREADS), THREADS, 0, s>>>(*e);
    return cudaGetLastError();
}
