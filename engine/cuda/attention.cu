/* Rotary embedding with the KV-cache store, and attention over the cache.
 *
 * Attention is split along the keys ("flash decoding"): one block per
 * (split, KV head, token) runs the online softmax over its keys for the
 * query heads that share the KV head, and the last of those blocks to
 * finish merges the splits' (max, sum, weighted values) (or, without
 * counters for it, a second kernel). A decode step has one token, so
 * without the split a long context would leave most of the GPU idle. */
#include <math.h>

#include <cuda_fp16.h>

#include "cuda_kernels.h"
#include "fragment_layout.cuh"
#include "launch_overlap.cuh"

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


/* Decoding and verifying: one block per (split, KV head, token) takes the
 * split's keys in tiles of CUDA_ATTENTION_SPLIT_KEYS, copied into shared
 * memory with cp.async (every copy of a tile in flight at once: at a few
 * hundred keys the whole cache of a layer is a few MB, so the time is a
 * trip to memory, not bandwidth), and computes the query heads that share
 * the KV head (grouped-query attention reads K and V once for them), a
 * warp per head: scores with a lane per key, then the weighted values with
 * a lane per 4 dimensions. Up to ATTN_WARPS heads a block; more take
 * several blocks (blockIdx.y = kv_head * rounds + round). */
#define ATTN_THREADS 256
#define ATTN_WARPS (ATTN_THREADS / 32)
#define ATTN_KEYS CUDA_ATTENTION_SPLIT_KEYS
static_assert(ATTN_KEYS == 64, "the score loop gives a lane two keys");

/* K rows padded by 4 floats: lanes reading different keys' float4 at the
 * same column then hit different banks. */
static __host__ __device__ inline size_t attention_smem_floats(int d, int heads)
{
    return (size_t)ATTN_KEYS * (size_t)(d + 4) + (size_t)ATTN_KEYS * (size_t)d +
           (size_t)heads * (size_t)d + (size_t)heads * ATTN_KEYS;
}

static __device__ __forceinline__ void copy16_async(float *dst, const float *src)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"((uint32_t)__cvta_generic_to_shared(dst)),
                 "l"(src));
}

static __device__ inline float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Starts copying keys and values base + from .. base + to - 1 of kv_head
 * into the tile's shared memory (row key - base). */
static __device__ inline void copy_keys(const cuda_attention_shape &a, int kv_head, const float *k_cache,
                                        const float *v_cache, int base, int from, int to, float *ks,
                                        float *vs)
{
    const int d = a.head_dim, d4 = d / 4;
    for (int i = from * d4 + (int)threadIdx.x; i < to * d4; i += ATTN_THREADS) {
        const int key = i / d4, c = i % d4 * 4;
        const size_t at = ((size_t)(base + key) * a.n_kv_heads + kv_head) * d + c;
        copy16_async(ks + key * (d + 4) + c, k_cache + at);
        copy16_async(vs + key * d + c, v_cache + at);
    }
}

/* Floats of one split's partial result: (max, sum), two floats of padding
 * so that the values start 16 bytes in, then head_dim weighted values. */
static __host__ __device__ inline size_t partial_stride(int d) { return (size_t)d + 4u; }

/* Merges a query head's splits (partials: partial_stride apart) into
 * out_row (and frag, for token t, the head's first column col0): sum_s
 * e^(m_s - max) v_s over sum_s e^(m_s - max) l_s. By one warp, so that the
 * loads of all splits are in flight together (the time here is trips to
 * L2, not arithmetic): a lane per split for the maxima and sums, a lane
 * per 4 columns for the values, the splits in order. One function for
 * merge_splits and the last block of an attention launch, so that the two
 * give the same bits. __ldcg: other blocks of the launch wrote the
 * partials. */
static __device__ __forceinline__ void merge_row(const float *parts, int splits, int d, float *out_row,
                                                 __half *frag, int t, int col0, int frag_steps)
{
    const int lane = threadIdx.x & 31;
    const size_t stride = partial_stride(d);
    float max = -INFINITY;
    for (int s = lane; s < splits; s += 32)
        max = fmaxf(max, __ldcg(parts + (size_t)s * stride));
    max = warp_max(max);
    float sum = 0.0f;
    for (int s = lane; s < splits; s += 32) {
        const float m = __ldcg(parts + (size_t)s * stride);
        if (m != -INFINITY)
            sum += expf(m - max) * __ldcg(parts + (size_t)s * stride + 1);
    }
    const float total = warp_sum(sum);
    for (int c0 = 0; c0 < d; c0 += 128) {
        const int c = c0 + 4 * lane;
        const bool has = c < d;
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int s0 = 0; s0 < splits; s0 += 32) {
            /* the weight of split s0 + lane, handed to every lane */
            float w = 0.0f;
            if (s0 + lane < splits) {
                const float m = __ldcg(parts + (size_t)(s0 + lane) * stride);
                w = m == -INFINITY ? 0.0f : expf(m - max);
            }
            const int n = min(32, splits - s0);
#pragma unroll 8
            for (int j = 0; j < n; j++) {
                const float ws = __shfl_sync(0xffffffffu, w, j);
                if (has) {
                    const float4 x = __ldcg(reinterpret_cast<const float4 *>(parts + (size_t)(s0 + j) * stride + 4 + c));
                    v.x += ws * x.x;
                    v.y += ws * x.y;
                    v.z += ws * x.z;
                    v.w += ws * x.w;
                }
            }
        }
        if (!has)
            continue;
        const float r[4] = { v.x / total, v.y / total, v.z / total, v.w / total };
        for (int i = 0; i < 4; i++) {
            out_row[c + i] = r[i];
            if (frag)
                frag[fragment_index(t, col0 + c + i, frag_steps)] = __float2half_rn(r[i]);
        }
    }
}

/* V4: float4s of the head dimension per lane (d <= 128 * V4). */
template <int V4>
static __global__ void __launch_bounds__(ATTN_THREADS)
attention_kernel(cuda_attention_shape a, const float *q, int pos0, const int *pos_dev, int span,
                 const float *k_cache, const float *v_cache, float *out, float *partials,
                 unsigned *counters, __half *frag)
{
    extern __shared__ __align__(16) float sm[];
    let_next_kernel_start();
    const int d = a.head_dim, d4 = d / 4, group = a.n_heads / a.n_kv_heads;
    const int rounds = (group + ATTN_WARPS - 1) / ATTN_WARPS;
    const int split = blockIdx.x, splits = gridDim.x, t = blockIdx.z;
    const int kv_head = blockIdx.y / rounds, h0 = blockIdx.y % rounds * ATTN_WARPS;
    const int nh = min(ATTN_WARPS, group - h0);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *ks = sm, *vs = ks + ATTN_KEYS * (d + 4), *qs = vs + ATTN_KEYS * d, *ps = qs + nh * d;

    /* splits past the context (a grid sized for a longer one) find no
     * keys and leave a partial of max -infinity, which the merge skips.
     * pos_dev is safe to read before the kernels before this one are done:
     * a graph copies it before its first kernel, which starts the chain of
     * early starts. */
    const int pass0 = pos_dev ? *pos_dev : pos0, pos = pass0 + t;
    const int first = a.window > 0 && pos - a.window + 1 > 0 ? pos - a.window + 1 : 0;
    const int chunk = span / splits;
    const int lo = max(first, split * chunk), hi = min(pos + 1, (split + 1) * chunk);

    /* The first tile's keys before the pass's first position were stored by
     * earlier passes: their copies start while the kernels before finish
     * (those store only the pass's own keys). */
    const int early = lo < hi ? max(0, min(min(ATTN_KEYS, hi - lo), pass0 - lo)) : 0;
    copy_keys(a, kv_head, k_cache, v_cache, lo, 0, early, ks, vs);
    wait_for_previous_kernels();

    const float scale = 1.0f / sqrtf((float)d);
    const float *qh = q + ((size_t)t * a.n_heads + (size_t)kv_head * group + h0) * d;
    for (int i = threadIdx.x; i < nh * d; i += ATTN_THREADS)
        qs[i] = qh[i] * scale;

    const bool mine = warp < nh;
    float m = -INFINITY, l = 0.0f;
    float4 acc[V4];
#pragma unroll
    for (int v = 0; v < V4; v++)
        acc[v] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int base = lo; base < hi; base += ATTN_KEYS) {
        const int nk = min(ATTN_KEYS, hi - base);
        __syncthreads();   /* q is in; the previous tile is done with */
        copy_keys(a, kv_head, k_cache, v_cache, base, base == lo ? early : 0, nk, ks, vs);
        asm volatile("cp.async.commit_group;\ncp.async.wait_all;\n" ::: "memory");
        __syncthreads();
        if (mine) {
            const float4 *q4 = reinterpret_cast<const float4 *>(qs + warp * d);
            float s[2];
#pragma unroll
            for (int k2 = 0; k2 < 2; k2++) {
                const int key = lane + 32 * k2;
                float dot = -INFINITY;
                if (key < nk) {
                    const float4 *kr = reinterpret_cast<const float4 *>(ks + key * (d + 4));
                    dot = 0.0f;
                    for (int c = 0; c < d4; c++) {
                        const float4 kk = kr[c], qq = q4[c];
                        dot += qq.x * kk.x + qq.y * kk.y + qq.z * kk.z + qq.w * kk.w;
                    }
                }
                s[k2] = dot;
            }
            const float new_max = fmaxf(m, warp_max(fmaxf(s[0], s[1])));
            const float corr = expf(m - new_max);
            const float e0 = lane < nk ? expf(s[0] - new_max) : 0.0f;
            const float e1 = lane + 32 < nk ? expf(s[1] - new_max) : 0.0f;
            l = l * corr + warp_sum(e0 + e1);
            float *p = ps + warp * ATTN_KEYS;
            p[lane] = e0;
            p[lane + 32] = e1;
            __syncwarp();
#pragma unroll
            for (int v = 0; v < V4; v++) {
                acc[v].x *= corr;
                acc[v].y *= corr;
                acc[v].z *= corr;
                acc[v].w *= corr;
            }
            for (int key = 0; key < nk; key++) {
                const float pk = p[key];
#pragma unroll
                for (int v = 0; v < V4; v++) {
                    const int c = (v * 32 + lane) * 4;
                    if (c < d) {
                        const float4 vv = *reinterpret_cast<const float4 *>(vs + key * d + c);
                        acc[v].x += pk * vv.x;
                        acc[v].y += pk * vv.y;
                        acc[v].z += pk * vv.z;
                        acc[v].w += pk * vv.w;
                    }
                }
            }
            m = new_max;
            __syncwarp();   /* p is rewritten by the next tile */
        }
    }
    const int head = kv_head * group + h0 + warp;
    const size_t row = (size_t)t * a.n_heads + head;
    float *part = partials + (row * splits + split) * partial_stride(d);
    if (mine) {
        if (splits > 1 && lane == 0) {
            part[0] = m;
            part[1] = l;
        }
#pragma unroll
        for (int v = 0; v < V4; v++) {
            const int c = (v * 32 + lane) * 4;
            if (c >= d)
                continue;
            if (splits > 1) {
                *reinterpret_cast<float4 *>(part + 4 + c) = acc[v];
                continue;
            }
            const float r[4] = { acc[v].x, acc[v].y, acc[v].z, acc[v].w };
            for (int i = 0; i < 4; i++) {
                out[row * d + c + i] = r[i] / l;
                if (frag)
                    frag[fragment_index(t, head * d + c + i, a.n_heads * d / 16)] = __float2half_rn(r[i] / l);
            }
        }
    }
    if (splits == 1 || !counters)
        return;   /* one split: done; no counters: merge_splits merges */
    /* The last block of the (KV head, token) to finish merges the splits
     * of its heads (one launch less): each block makes its partials
     * visible, then counts itself in; the last resets the count for the
     * next launch. */
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned *count = counters + (size_t)t * gridDim.y + blockIdx.y;
        last = atomicAdd(count, 1u) == (unsigned)splits - 1u;
        if (last)
            *count = 0u;
    }
    __syncthreads();
    if (last && mine) {
        __threadfence();
        merge_row(partials + row * splits * partial_stride(d), splits, d, out + row * d, frag, t, head * d,
                  a.n_heads * d / 16);
    }
}

static __global__ void merge_splits(int n_heads, int d, int splits, const float *partials, float *out,
                                    __half *frag)
{
    let_next_kernel_start();
    wait_for_previous_kernels();
    const size_t row = (size_t)blockIdx.y * n_heads + blockIdx.x;
    merge_row(partials + row * splits * partial_stride(d), splits, d, out + row * d, frag, (int)blockIdx.y,
              (int)blockIdx.x * d, n_heads * d / 16);
}

cudaError_t cuda_attention(const cuda_attention_shape *a, const float *q, int n_tok, int pos0,
                           const int *pos_dev, int max_span, const float *k_cache,
                           const float *v_cache, float *out, const cuda_attention_scratch *scratch,
                           void *frag, cudaStream_t s)
{
    float *partials = scratch->partials;
    const size_t max_parts = scratch->max_parts;
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
    const int group = a->n_heads / a->n_kv_heads, rounds = (group + ATTN_WARPS - 1) / ATTN_WARPS;
    dim3 grid((unsigned)splits, (unsigned)(a->n_kv_heads * rounds), (unsigned)n_tok);
    /* counters for the last block's merge, where there are enough */
    unsigned *counters = (size_t)grid.y * (size_t)n_tok <= scratch->max_counters ? scratch->counters : NULL;
    size_t smem = attention_smem_floats(a->head_dim, group < ATTN_WARPS ? group : ATTN_WARPS) * sizeof(float);
    cudaError_t e;
    if (a->head_dim <= 128)
        e = launch_overlapped(attention_kernel<1>, grid, dim3(ATTN_THREADS), smem, s, *a, q, pos0,
                              pos_dev, span, k_cache, v_cache, out, partials, counters, fh);
    else
        e = launch_overlapped(attention_kernel<2>, grid, dim3(ATTN_THREADS), smem, s, *a, q, pos0,
                              pos_dev, span, k_cache, v_cache, out, partials, counters, fh);
    if (e != cudaSuccess || splits == 1 || counters)
        return e;
    return launch_overlapped(merge_splits, dim3((unsigned)a->n_heads, (unsigned)n_tok), dim3(32), 0, s,
                             a->n_heads, a->head_dim, splits, (const float *)partials, out, fh);
}

size_t cuda_attention_partial_floats(int head_dim) { return partial_stride(head_dim); }

cudaError_t cuda_attention_setup(void)
{
    const int most = (int)(attention_smem_floats(MAX_HEAD_DIM, ATTN_WARPS) * sizeof(float));
    cudaError_t e = cudaFuncSetAttribute(attention_kernel<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, most);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(attention_kernel<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, most);
    return e;
}
