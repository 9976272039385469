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

/* One thread per 8 columns of a row, one 16-byte store: columns 8h ..
 * 8h + 7 of a 16-column step are pair slot ps of 4 neighbouring lanes
 * (tile layout, cuda_kernels.h and matmul.cu), each pair's two values 16
 * bits apart in one word, all 8 in one group. (One thread per pair with
 * 4-byte stores ran at under a third of the memory's bandwidth: 58% of a
 * prefill GEMM's time was this kernel.) */
static __global__ void dequantize_rows(cuda_matrix m, int row0, int n_rows, uint4 *out)
{
    const int eights = m.n_kb * (CUDA_TILE_COLS / 8);
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)n_rows * (size_t)eights)
        return;
    const int r = (int)(idx / (size_t)eights), col = (int)(idx % (size_t)eights) * 8;
    const int row = row0 + r;
    const int tile = row >> 4, rr = row & 15, kb = col >> 6, cc = col & 63;
    const int step = cc >> 4, h = (cc >> 3) & 1;
    const int ps = step * 4 + ((rr >> 3) | (h << 1));
    const int wpl = m.bits == 16 ? 16 : m.bits;
    const uint32_t *words = m.tiles + (((size_t)tile * (size_t)m.n_kb + (size_t)kb) * 32u + (size_t)((rr & 7) * 4)) * (size_t)wpl;
    uint32_t v[4];
    if (m.bits == 16) {
#pragma unroll
        for (int t = 0; t < 4; t++)
            v[t] = words[t * wpl + ps];
    } else {
        const int per_word = 16 / m.bits, slot = ps % per_word;
        const uint32_t mask = (1u << m.bits) - 1u;
        const int sb_slot = (rr & 7) * 2 + (rr >> 3);
        const __half2 sb = ((const __half2 *)m.scale_bias)[((size_t)tile * (size_t)m.n_groups + (size_t)(col >> m.group_shift)) * 16u + (size_t)sb_slot];
#pragma unroll
        for (int t = 0; t < 4; t++) {
            const uint32_t w = words[t * wpl + ps / per_word];
            const uint32_t q0 = (w >> (slot * m.bits)) & mask, q1 = (w >> (16 + slot * m.bits)) & mask;
            /* q < 256 is exact in float16 */
            __half2 d = __hfma2(__halves2half2(__uint2half_rn(q0), __uint2half_rn(q1)), __low2half2(sb),
                                __high2half2(sb));
            v[t] = *reinterpret_cast<uint32_t *>(&d);
        }
    }
    out[idx] = make_uint4(v[0], v[1], v[2], v[3]);
}

cudaError_t cuda_dequantize_rows(const cuda_matrix *m, int row0, int n_rows, void *out, cudaStream_t s)
{
    if (row0 < 0 || n_rows < 0 || row0 % CUDA_TILE_ROWS ||
        row0 + n_rows > ceil_div(m->rows, CUDA_TILE_ROWS) * CUDA_TILE_ROWS)
        return cudaErrorInvalidValue;
    size_t n = (size_t)n_rows * (size_t)m->n_kb * (CUDA_TILE_COLS / 8);
    if (n)
        dequantize_rows<<<(unsigned)((n + THREADS - 1) / THREADS), THREADS, 0, s>>>(*m, row0, n_rows,
                                                                                 (uint4 *)out);
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
