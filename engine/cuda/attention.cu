/* Rotary embedding with the KV-cache store, and attention over the cache.
 *
 * Attention is split along the keys ("flash decoding"): one block per
 * (query head, token, split) runs the online softmax over its keys with
 * one warp per key at a time, and a second kernel merges the splits'
 * (max, sum, weighted values). A decode step has one token, so without the
 * split a long context would leave most of the GPU idle. */
#include <math.h>

#include <cuda_fp16.h>

#include "cuda_kernels.h"
#include "fragment_layout.cuh"
#include "launch_overlap.cuh"

#define ATTN_WARPS 4
#define MAX_HEAD_DIM 256

static __device__ inline float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ---------------------------------------------------------------- rope + store */

static __global__ void rope_store_kernel(cuda_attention_shape a, const float *cos_table,
                                         const float *sin_table, const float *q_norm,
                                         const float *k_norm, float eps, float *q, const float *k,
                                         const float *v, int pos0, const int *pos_dev,
                                         float *k_cache, float *v_cache)
{
    __shared__ float buf[MAX_HEAD_DIM];
    __shared__ float partial[32];
    let_next_kernel_start();
    wait_for_previous_kernels();
    const int t = blockIdx.x, head = blockIdx.y, d = a.head_dim, half = d / 2;
    const int pos = (pos_dev ? *pos_dev : pos0) + t;
    const float *src, *norm;
    float *dst;
    if (head < a.n_heads) {
        src = dst = q + ((size_t)t * a.n_heads + head) * d;
        norm = q_norm;
    } else {
        int kh = head - a.n_heads;
        size_t at = ((size_t)pos * a.n_kv_heads + kh) * d, from = ((size_t)t * a.n_kv_heads + kh) * d;
        src = k + from;
        dst = k_cache + at;
        norm = k_norm;
        for (int i = threadIdx.x; i < d; i += blockDim.x)
            v_cache[at + i] = v[from + i];
    }
    float ss = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        buf[i] = src[i];
        ss += buf[i] * buf[i];
    }
    if (norm) {
        ss = warp_sum(ss);
        if ((threadIdx.x & 31) == 0)
            partial[threadIdx.x >> 5] = ss;
        __syncthreads();
        ss = 0.0f;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++)
            ss += partial[w];
        float inv = 1.0f / sqrtf(ss / (float)d + eps);
        for (int i = threadIdx.x; i < d; i += blockDim.x)
            buf[i] = (buf[i] * inv) * norm[i];
    }
    __syncthreads();
    const float *c = cos_table + (size_t)pos * half, *s = sin_table + (size_t)pos * half;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float x0 = buf[i], x1 = buf[i + half];
        dst[i] = x0 * c[i] - x1 * s[i];
        dst[i + half] = x1 * c[i] + x0 * s[i];
    }
}

cudaError_t cuda_rope_store(const cuda_attention_shape *a, const float *cos_table,
                            const float *sin_table, const float *q_norm, const float *k_norm,
                            float eps, float *q, const float *k, const float *v, int n_tok,
                            int pos0, const int *pos_dev, float *k_cache, float *v_cache,
                            cudaStream_t s)
{
    if (a->head_dim > MAX_HEAD_DIM || a->head_dim % 2)
        return cudaErrorInvalidValue;
    dim3 grid((unsigned)n_tok, (unsigned)(a->n_heads + a->n_kv_heads));
    int threads = (a->head_dim + 31) / 32 * 32;
    return launch_overlapped(rope_store_kernel, grid, dim3((unsigned)threads), 0, s, *a, cos_table,
                             sin_table, q_norm, k_norm, eps, q, k, v, pos0, pos_dev, k_cache,
                             v_cache);
}

/* ---------------------------------------------------------------- attention */

size_t cuda_attention_partial_floats(int head_dim) { return (size_t)head_dim + 2u; }

/* PER_LANE: head-dimension values each lane holds (head_dim <= 32 * PER_LANE).
 * A warp takes 32 keys at a time, one per lane: each lane computes its
 * key's score from the whole query (no shuffles per key), the warp takes
 * the tile's max and sum once, then adds the 32 value rows with the
 * lanes splitting the head dimension (coalesced). */
template <int PER_LANE>
static __global__ void attention_kernel(cuda_attention_shape a, const float *q, int pos0,
                                        const int *pos_dev, int span, const float *k_cache,
                                        const float *v_cache, float *out, float *partials,
                                        __half *frag)
{
    __shared__ float warp_max[ATTN_WARPS], warp_sum_[ATTN_WARPS];
    __shared__ float warp_acc[ATTN_WARPS][32 * PER_LANE];
    __shared__ __align__(16) float qs[32 * PER_LANE];
    let_next_kernel_start();
    wait_for_previous_kernels();
    const int head = blockIdx.x, t = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, d = a.head_dim;
    const int kv_head = head / (a.n_heads / a.n_kv_heads);
    /* splits past the context (a grid sized for a longer one) find no
     * keys and leave a partial of max -infinity, which the merge skips */
    const int pos = (pos_dev ? *pos_dev : pos0) + t;
    int first = a.window > 0 && pos - a.window + 1 > 0 ? pos - a.window + 1 : 0;
    int chunk = (span + splits - 1) / splits;
    int lo = max(first, split * chunk), hi = min(pos + 1, (split + 1) * chunk);

    const float scale = 1.0f / sqrtf((float)d);
    const float *qh = q + ((size_t)t * a.n_heads + head) * d;
    for (int c = threadIdx.x; c < d; c += blockDim.x)
        qs[c] = qh[c] * scale;
    __syncthreads();
    float acc[PER_LANE];
#pragma unroll
    for (int i = 0; i < PER_LANE; i++)
        acc[i] = 0.0f;
    const size_t kv_row = (size_t)a.n_kv_heads * d;
    const float *kbase = k_cache + (size_t)kv_head * d, *vbase = v_cache + (size_t)kv_head * d;
    float m = -INFINITY, l = 0.0f;
    for (int base = lo + warp * 32; base < hi; base += ATTN_WARPS * 32) {
        int p = base + lane;
        float score = -INFINITY;
        if (p < hi) {
            const float4 *kr = reinterpret_cast<const float4 *>(kbase + (size_t)p * kv_row);
            float dot = 0.0f;
            for (int c = 0; c < d / 4; c++) {
                float4 k4 = __ldg(kr + c);
                dot += qs[4 * c] * k4.x + qs[4 * c + 1] * k4.y + qs[4 * c + 2] * k4.z + qs[4 * c + 3] * k4.w;
            }
            score = dot;
        }
        float tile_max = score;
        for (int o = 16; o > 0; o >>= 1)
            tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, o));
        float new_max = fmaxf(m, tile_max);
        float corr = expf(m - new_max);
        float e = p < hi ? expf(score - new_max) : 0.0f;
        l = l * corr + warp_sum(e);
#pragma unroll
        for (int i = 0; i < PER_LANE; i++)
            acc[i] *= corr;
        int n = min(32, hi - base);
        for (int j = 0; j < n; j++) {
            float pj = __shfl_sync(0xffffffffu, e, j);
            const float *vr = vbase + (size_t)(base + j) * kv_row;
#pragma unroll
            for (int i = 0; i < PER_LANE; i++) {
                int c = i * 32 + lane;
                if (c < d)
                    acc[i] += pj * vr[c];
            }
        }
        m = new_max;
    }
    if (lane == 0) {
        warp_max[warp] = m;
        warp_sum_[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < PER_LANE; i++)
        warp_acc[warp][i * 32 + lane] = acc[i];
    __syncthreads();

    float block_max = -INFINITY;
    for (int w = 0; w < ATTN_WARPS; w++)
        block_max = fmaxf(block_max, warp_max[w]);
    float weight[ATTN_WARPS], total = 0.0f;
    for (int w = 0; w < ATTN_WARPS; w++) {
        weight[w] = warp_max[w] == -INFINITY ? 0.0f : expf(warp_max[w] - block_max);
        total += weight[w] * warp_sum_[w];
    }
    size_t row = (size_t)t * a.n_heads + head;
    if (splits == 1) {
        for (int c = threadIdx.x; c < d; c += blockDim.x) {
            float v = 0.0f;
            for (int w = 0; w < ATTN_WARPS; w++)
                v += weight[w] * warp_acc[w][c];
            out[row * d + c] = v / total;
            if (frag)
                frag[fragment_index(t, head * d + c, a.n_heads * d / 16)] = __float2half_rn(v / total);
        }
    } else {
        float *part = partials + (row * splits + split) * (size_t)(d + 2);
        if (threadIdx.x == 0) {
            part[0] = block_max;
            part[1] = total;
        }
        for (int c = threadIdx.x; c < d; c += blockDim.x) {
            float v = 0.0f;
            for (int w = 0; w < ATTN_WARPS; w++)
                v += weight[w] * warp_acc[w][c];
            part[2 + c] = v;
        }
    }
}

static __global__ void merge_splits(int n_heads, int d, int splits, const float *partials, float *out,
                                    __half *frag)
{
    let_next_kernel_start();
    wait_for_previous_kernels();
    const size_t row = (size_t)blockIdx.y * n_heads + blockIdx.x;
    const float *parts = partials + row * splits * (size_t)(d + 2);
    float max = -INFINITY;
    for (int s = 0; s < splits; s++)
        max = fmaxf(max, parts[(size_t)s * (d + 2)]);
    float total = 0.0f;
    for (int s = 0; s < splits; s++) {
        float m = parts[(size_t)s * (d + 2)];
        if (m != -INFINITY)
            total += expf(m - max) * parts[(size_t)s * (d + 2) + 1];
    }
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float v = 0.0f;
        for (int s = 0; s < splits; s++) {
            float m = parts[(size_t)s * (d + 2)];
            if (m != -INFINITY)
                v += expf(m - max) * parts[(size_t)s * (d + 2) + 2 + c];
        }
        out[row * d + c] = v / total;
        if (frag)
            frag[fragment_index((int)blockIdx.y, (int)blockIdx.x * d + c, n_heads * d / 16)] =
                __float2half_rn(v / total);
    }
}

cudaError_t cuda_attention(const cuda_attention_shape *a, const float *q, int n_tok, int pos0,
                           const int *pos_dev, int max_span, const float *k_cache,
                           const float *v_cache, float *out, float *partials, size_t max_parts,
                           void *frag, cudaStream_t s)
{
    if (frag && (a->n_heads * a->head_dim) % CUDA_TILE_COLS)
        return cudaErrorInvalidValue;
    __half *fh = (__half *)frag;
    if (a->head_dim > MAX_HEAD_DIM || a->head_dim % 4 || a->n_kv_heads < 1 ||
        a->n_heads % a->n_kv_heads)
        return cudaErrorInvalidValue;
    /* Splits of a fixed number of keys, so that a token's result does not
     * depend on the other tokens of its pass: verifying draft tokens then
     * gives bit for bit the logits of decoding them one by one. Only a
     * pass too large for the partials (long prompts) takes longer splits. */
    int span = pos_dev ? max_span : pos0 + n_tok, rows = a->n_heads * n_tok;
    int chunk = CUDA_ATTENTION_SPLIT_KEYS;
    int splits = (span + chunk - 1) / chunk;
    while (splits > 1 && (size_t)rows * (size_t)splits > max_parts) {
        chunk *= 2;
        splits = (span + chunk - 1) / chunk;
    }
    span = splits * chunk;
    dim3 grid((unsigned)a->n_heads, (unsigned)n_tok, (unsigned)splits);
    int threads = 32 * ATTN_WARPS;
    cudaError_t e;
    if (a->head_dim <= 32)
        e = launch_overlapped(attention_kernel<1>, grid, dim3((unsigned)threads), 0, s, *a, q, pos0,
                               pos_dev, span, k_cache, v_cache, out, partials, fh);
    else if (a->head_dim <= 64)
        e = launch_overlapped(attention_kernel<2>, grid, dim3((unsigned)threads), 0, s, *a, q, pos0,
                               pos_dev, span, k_cache, v_cache, out, partials, fh);
    else if (a->head_dim <= 128)
        e = launch_overlapped(attention_kernel<4>, grid, dim3((unsigned)threads), 0, s, *a, q, pos0,
                               pos_dev, span, k_cache, v_cache, out, partials, fh);
    else
        e = launch_overlapped(attention_kernel<8>, grid, dim3((unsigned)threads), 0, s, *a, q, pos0,
                               pos_dev, span, k_cache, v_cache, out, partials, fh);
    if (e != cudaSuccess || splits == 1)
        return e;
    return launch_overlapped(merge_splits, dim3((unsigned)a->n_heads, (unsigned)n_tok), dim3(128), 0, s,
                             a->n_heads, a->head_dim, splits, (const float *)partials, out, fh);
}
