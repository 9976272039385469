/* Rotary embedding with the KV-cache store, and attention over the cache.
 *
 * Attention is split along the keys ("flash decoding"): one block per
 * (split, KV head, token) runs the online softmax over its keys for the
 * query heads that share the KV head, and the last of those blocks to
 * finish merges the splits' (max, sum, weighted values) (or, without
 * counters for it, a second kernel). A decode step has one token, so
 * without the split a long context would leave most of the GPU idle. */
#include <math.h>

#include <cooperative_groups.h>
#include <cuda_fp16.h>

#include "cuda_kernels.h"
#include "fragment_layout.cuh"
#include "launch_overlap.cuh"
#include "probes.cuh"

PROBES_DEFINE(cuda_attention_probes)

#define MAX_HEAD_DIM CUDA_MAX_HEAD_DIM

/* 0 at build time (-DALM_ATTENTION_CLUSTER=0): never merge in clusters,
 * to measure what they gain. */
#ifndef ALM_ATTENTION_CLUSTER
#define ALM_ATTENTION_CLUSTER 1
#endif

static __device__ inline float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Four values of a head's output, columns col .. col + 3 (col a multiple
 * of 4) of token t's row: one float4 store at out (16-byte aligned), and,
 * frag not NULL, their float16 fragments: columns col and col + 1 are one
 * lane's neighbouring halves, col + 2 and col + 3 the next lane's (4
 * halves on), so two half2 stores (ncu: the scalar stores were a fifth of
 * the decode attention's global sectors in excess). */
static __device__ __forceinline__ void store_four(float *out, __half *frag, int t, int col, int frag_steps,
                                                  float4 r)
{
    *reinterpret_cast<float4 *>(out) = r;
    if (frag) {
        __half2 *at = reinterpret_cast<__half2 *>(frag + fragment_index(t, col, frag_steps));
        at[0] = __floats2half2_rn(r.x, r.y);
        at[2] = __floats2half2_rn(r.z, r.w);
    }
}

/* ---------------------------------------------------------------- rope + store */

/* The arithmetic of the per-head norm and the rotation, one definition for
 * rope_store_kernel and the attention that does them itself
 * (cuda_rope_attention), so that the two give the same bits: the explicit
 * roundings leave the compiler no choice of where to fuse a multiply-add. */

/* 1 / rms of a head (ss: its sum of squares, by head_sum_of_squares) */
static __device__ __forceinline__ float head_inverse_rms(float ss, int d, float eps)
{
    return 1.0f / sqrtf(ss / (float)d + eps);
}

static __device__ __forceinline__ float normed(float x, float inv, float w)
{
    return __fmul_rn(__fmul_rn(x, inv), w);
}

/* (x0, x1), columns i and i + d/2 of a head, turned by the angle (c, s). */
static __device__ __forceinline__ float2 rotated(float x0, float x1, float c, float s)
{
    return make_float2(__fmaf_rn(x0, c, -__fmul_rn(x1, s)), __fmaf_rn(x1, c, __fmul_rn(x0, s)));
}

/* The sum of squares of a head's d values at x (shared memory), by one
 * warp: 32 columns at a time, each chunk summed across the warp, the
 * chunks in order; rope_store's block (a thread a column, a warp a chunk)
 * adds the same numbers in the same order. */
static __device__ __forceinline__ float head_sum_of_squares(const float *x, int d)
{
    const int lane = threadIdx.x & 31;
    float ss = 0.0f;
    for (int c = 0; c < d; c += 32) {
        const float v = c + lane < d ? x[c + lane] : 0.0f;
        ss += warp_sum(__fmul_rn(v, v));
    }
    return ss;
}

static __global__ void rope_store_kernel(cuda_attention_shape a, const float *cos_table,
                                         const float *sin_table, const float *q_norm,
                                         const float *k_norm, float eps, float *q, const float *k,
                                         const float *v, int pos0, const int *pos_dev,
                                         __half *k_cache, __half *v_cache)
{
    __shared__ float buf[MAX_HEAD_DIM];
    __shared__ float partial[32];
    let_next_kernel_start();
    const int t = blockIdx.x, head = blockIdx.y, d = a.head_dim, half = d / 2;
    /* pos_dev: safe to read early (see attention_kernel) */
    const int pos = (pos_dev ? *pos_dev : pos0) + t;
    const float *src, *norm = head < a.n_heads ? q_norm : k_norm;
    /* A thread's rotation (cos, sin) and norm weight, constants of the
     * model: loaded while the kernel before finishes, so that the loads
     * after the wait are only of what it wrote (blockDim.x >= d: a thread
     * has at most one column i < d, and one pair i < d / 2). */
    const int i0 = (int)threadIdx.x;
    const float cos_i = i0 < half ? cos_table[(size_t)pos * half + i0] : 0.0f;
    const float sin_i = i0 < half ? sin_table[(size_t)pos * half + i0] : 0.0f;
    const float norm_i = norm && i0 < d ? norm[i0] : 0.0f;
    wait_for_previous_kernels();
    float *q_dst = nullptr;
    __half *k_dst = nullptr;
    if (head < a.n_heads) {
        src = q_dst = q + ((size_t)t * a.n_heads + head) * d;
    } else {
        int kh = head - a.n_heads;
        size_t at = ((size_t)pos * a.n_kv_heads + kh) * d, from = ((size_t)t * a.n_kv_heads + kh) * d;
        src = k + from;
        k_dst = k_cache + at;
        if (i0 < d)
            v_cache[at + i0] = __float2half_rn(v[from + i0]);
    }
    const float x = i0 < d ? src[i0] : 0.0f;
    if (norm) {
        /* head_sum_of_squares' order: a warp's chunk, then the chunks */
        const float ss = warp_sum(__fmul_rn(x, x));
        if ((threadIdx.x & 31) == 0)
            partial[threadIdx.x >> 5] = ss;
        __syncthreads();
        float sum = 0.0f;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++)
            sum += partial[w];
        if (i0 < d)
            buf[i0] = normed(x, head_inverse_rms(sum, d, eps), norm_i);
    } else if (i0 < d) {
        buf[i0] = x;
    }
    __syncthreads();
    if (i0 < half) {
        const float2 y = rotated(buf[i0], buf[i0 + half], cos_i, sin_i);
        if (q_dst) {
            q_dst[i0] = y.x;
            q_dst[i0 + half] = y.y;
        } else {
            k_dst[i0] = __float2half_rn(y.x);
            k_dst[i0 + half] = __float2half_rn(y.y);
        }
    }
}

cudaError_t cuda_rope_store(const cuda_attention_shape *a, const float *cos_table,
                            const float *sin_table, const float *q_norm, const float *k_norm,
                            float eps, float *q, const float *k, const float *v, int n_tok,
                            int pos0, const int *pos_dev, cuda_kv *k_cache, cuda_kv *v_cache,
                            cudaStream_t s)
{
    if (a->head_dim > MAX_HEAD_DIM || a->head_dim % 8)
        return cudaErrorInvalidValue;
    dim3 grid((unsigned)n_tok, (unsigned)(a->n_heads + a->n_kv_heads));
    int threads = (a->head_dim + 31) / 32 * 32;
    return launch_overlapped(rope_store_kernel, grid, dim3((unsigned)threads), 0, s, *a, cos_table,
                             sin_table, q_norm, k_norm, eps, q, k, v, pos0, pos_dev,
                             reinterpret_cast<__half *>(k_cache), reinterpret_cast<__half *>(v_cache));
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
/* Blocks an SM the registers are sized for (__launch_bounds__): two, as
 * the shared memory allows. Without it, ptxas (CUDA 13) gave the kernels
 * with float16 tiles 64 to 80 registers and spilled; with it 87 to 94 and
 * no spill. */
#define ATTN_SM_BLOCKS 2
#define ATTN_KEYS CUDA_ATTENTION_SPLIT_KEYS
static_assert(ATTN_KEYS == 64, "the score loop gives a lane two keys");

/* A tile's keys and values in shared memory, float16 as the cache holds
 * them: K rows padded by 8 halves (16 bytes), so that lanes reading
 * different keys' 16 bytes at the same column hit different banks. */
static __host__ __device__ inline int key_stride(int d) { return d + 8; }

/* Floats of the shared memory: the tile's keys and values (halves), the
 * block's query heads, and the warps' scores. */
static __host__ __device__ inline size_t attention_smem_floats(int d, int heads)
{
    return (size_t)ATTN_KEYS * (size_t)key_stride(d) / 2 + (size_t)ATTN_KEYS * (size_t)d / 2 +
           (size_t)heads * (size_t)d + (size_t)ATTN_WARPS * ATTN_KEYS;
}

/* Where the parts of that memory begin. */
struct attention_smem {
    __half *ks, *vs;
    float *qs, *ps;

    __device__ __forceinline__ attention_smem(float *sm, int d, int nh)
    {
        ks = reinterpret_cast<__half *>(sm);
        vs = ks + ATTN_KEYS * key_stride(d);
        qs = reinterpret_cast<float *>(vs + ATTN_KEYS * d);
        ps = qs + nh * d;
    }
};

/* Warps a query head: where a KV head has fewer query heads than the
 * block has warps (llama3's 4), the spare warps share the tile's keys
 * (each its own online softmax, combined once at the end by
 * combine_warps), so that the chain of a tile's score and value loops,
 * which is what a short context's attention waits on, is shorter. A
 * power of two, so that it divides the tile. 0 at build time
 * (-DALM_ATTENTION_WARP_SPLIT=0): a warp a head. */
#ifndef ALM_ATTENTION_WARP_SPLIT
#define ALM_ATTENTION_WARP_SPLIT 1
#endif
static __host__ __device__ __forceinline__ int warps_per_head(int heads)
{
    int w = 1;
    while (ALM_ATTENTION_WARP_SPLIT && 2 * w * heads <= ATTN_WARPS)
        w *= 2;
    return w;
}

static __device__ __forceinline__ void copy16_async(void *dst, const void *src)
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
 * into the tile's shared memory (row key - base), 8 halves a copy. */
static __device__ inline void copy_keys(const cuda_attention_shape &a, int kv_head, const __half *k_cache,
                                        const __half *v_cache, int base, int from, int to, __half *ks,
                                        __half *vs)
{
    const int d = a.head_dim, d8 = d / 8;
    for (int i = from * d8 + (int)threadIdx.x; i < to * d8; i += ATTN_THREADS) {
        const int key = i / d8, c = i % d8 * 8;
        const size_t at = ((size_t)(base + key) * a.n_kv_heads + kv_head) * d + c;
        copy16_async(ks + key * key_stride(d) + c, k_cache + at);
        copy16_async(vs + key * d + c, v_cache + at);
    }
}

/* Two halves of 32 bits as floats. */
static __device__ __forceinline__ float2 halves(uint32_t u)
{
    return __half22float2(*reinterpret_cast<const __half2 *>(&u));
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
        store_four(out_row + c, frag, t, col0 + c, frag_steps,
                   make_float4(v.x / total, v.y / total, v.z / total, v.w / total));
    }
}

/* A warp's partial result (partial_stride(d) floats): max, sum, padding,
 * then the weighted values, a lane's 4 columns at a time. */
template <int V4>
static __device__ __forceinline__ void store_partial(float *part, float m, float l, const float4 *acc, int d)
{
    const int lane = threadIdx.x & 31;
    if (lane == 0) {
        part[0] = m;
        part[1] = l;
    }
#pragma unroll
    for (int v = 0; v < V4; v++) {
        const int c = (v * 32 + lane) * 4;
        if (c < d)
            *reinterpret_cast<float4 *>(part + 4 + c) = acc[v];
    }
}

/* acc *= f: an online softmax's weighted values when its maximum moves. */
template <int V4>
static __device__ __forceinline__ void scale_values(float4 (&acc)[V4], float f)
{
#pragma unroll
    for (int v = 0; v < V4; v++) {
        acc[v].x *= f;
        acc[v].y *= f;
        acc[v].z *= f;
        acc[v].w *= f;
    }
}

/* q . k of one key: its row of d halves in the tile (kr) against the
 * query head (q4), 8 columns at a time (16 bytes of the key, two float4
 * of q), in the order every attention path adds them. D: the head
 * dimension where it is a constant (0: d_arg). */
template <int D>
static __device__ __forceinline__ float key_dot(const uint4 *kr, const float4 *q4, int d_arg)
{
    const int d = D ? D : d_arg;
    float dot = 0.0f;
    auto add = [&](int c) {
        const uint4 kk = kr[c];
        const float2 k0 = halves(kk.x), k1 = halves(kk.y), k2 = halves(kk.z), k3 = halves(kk.w);
        const float4 qa = q4[2 * c], qb = q4[2 * c + 1];
        dot += qa.x * k0.x + qa.y * k0.y + qa.z * k1.x + qa.w * k1.y;
        dot += qb.x * k2.x + qb.y * k2.y + qb.z * k3.x + qb.w * k3.y;
    };
    if constexpr (D > 0) {
#pragma unroll
        for (int c = 0; c < D / 8; c++)
            add(c);
    } else {
        for (int c = 0; c < d / 8; c++)
            add(c);
    }
    return dot;
}

/* One warp's query head over a tile of nk keys in shared memory (ks, vs),
 * folded into its online softmax (max m, sum l, weighted values acc: a
 * lane per 4 columns). p: the warp's ATTN_KEYS floats of scratch. D: the
 * head dimension where it is a constant (0: d_arg), so that the loops
 * unroll: the same arithmetic in the same order, the same bits (with the
 * single barrier of take_tile, a decode step's attention at 540 keys alone
 * on an H100 went 10.9 -> 8.6 us in session 21's variant build; see
 * docs/BENCHMARKS.md). */
template <int V4, int D = 0>
static __device__ __forceinline__ void attend_tile(const __half *ks, const __half *vs, const float *qh,
                                                   float *p, int d_arg, int nk, float &m, float &l,
                                                   float4 (&acc)[V4])
{
    const int d = D ? D : d_arg;
    const int lane = threadIdx.x & 31;
    const float4 *q4 = reinterpret_cast<const float4 *>(qh);
    float s[2];
#pragma unroll
    for (int k2 = 0; k2 < 2; k2++) {
        const int key = lane + 32 * k2;
        s[k2] = key < nk ? key_dot<D>(reinterpret_cast<const uint4 *>(ks + key * key_stride(d)), q4, d) : -INFINITY;
    }
    const float new_max = fmaxf(m, warp_max(fmaxf(s[0], s[1])));
    const float corr = expf(m - new_max);
    const float e0 = lane < nk ? expf(s[0] - new_max) : 0.0f;
    const float e1 = lane + 32 < nk ? expf(s[1] - new_max) : 0.0f;
    l = l * corr + warp_sum(e0 + e1);
    p[lane] = e0;
    p[lane + 32] = e1;
    __syncwarp();
    scale_values(acc, corr);
    auto weigh = [&](int key) {
        const float pk = p[key];
#pragma unroll
        for (int v = 0; v < V4; v++) {
            const int c = (v * 32 + lane) * 4;
            if (c < d) {
                const uint2 vv = *reinterpret_cast<const uint2 *>(vs + key * d + c);
                const float2 v01 = halves(vv.x), v23 = halves(vv.y);
                acc[v].x += pk * v01.x;
                acc[v].y += pk * v01.y;
                acc[v].z += pk * v23.x;
                acc[v].w += pk * v23.y;
            }
        }
    };
    if constexpr (D > 0) {
#pragma unroll 8
        for (int key = 0; key < nk; key++)
            weigh(key);
    } else {
        for (int key = 0; key < nk; key++)
            weigh(key);
    }
    m = new_max;
    __syncwarp();   /* p is rewritten by the next tile */
}

/* Online softmax (m, l, acc) rescaled to a maximum `most` >= m: its part
 * of the combination of several (combine_warps, combine_halves). */
template <int V4>
static __device__ __forceinline__ void rescale_softmax(float most, float m, float &l, float4 (&acc)[V4])
{
    const float f = m == -INFINITY ? 0.0f : expf(m - most);
    l *= f;
    scale_values(acc, f);
}

/* Another online softmax (ms, ls, values x) added to (l, acc), which is at
 * the maximum `most` already. */
template <int V4>
static __device__ __forceinline__ void absorb_softmax(float most, float ms, float ls, const float4 (&x)[V4],
                                                      int d, float &l, float4 (&acc)[V4])
{
    const int lane = threadIdx.x & 31;
    const float fs = ms == -INFINITY ? 0.0f : expf(ms - most);
    l += fs * ls;
#pragma unroll
    for (int v = 0; v < V4; v++) {
        if ((v * 32 + lane) * 4 < d) {
            acc[v].x += fs * x[v].x;
            acc[v].y += fs * x[v].y;
            acc[v].z += fs * x[v].z;
            acc[v].w += fs * x[v].w;
        }
    }
}

/* The wph warps of each head (warps hw * wph .. + wph - 1) fold their
 * online softmaxes into the first one's: max M of their maxima, and the
 * sums and values each scaled by e^(m - M). stage: shared memory free for
 * ATTN_WARPS partials (partial_stride(d) apart). Every thread calls it. */
template <int V4>
static __device__ __forceinline__ void combine_warps(float *stage, int d, int wph, bool active, float &m,
                                                     float &l, float4 (&acc)[V4])
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t stride = partial_stride(d);
    __syncthreads();   /* the last tile is done with: stage may be the tile's memory */
    float *mine = stage + warp * stride;
    if (active)
        store_partial<V4>(mine, m, l, acc, d);
    __syncthreads();
    if (!active || warp % wph)
        return;
    float most = m;
    for (int s = 1; s < wph; s++)
        most = fmaxf(most, mine[s * stride]);
    if (most == -INFINITY)
        return;   /* no keys for this head here */
    rescale_softmax<V4>(most, m, l, acc);
    for (int s = 1; s < wph; s++) {
        const float *theirs = mine + s * stride;
        float4 x[V4];
#pragma unroll
        for (int v = 0; v < V4; v++) {
            const int c = (v * 32 + lane) * 4;
            x[v] = c < d ? *reinterpret_cast<const float4 *>(theirs + 4 + c) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
        absorb_softmax<V4>(most, theirs[0], theirs[1], x, d, l, acc);
    }
    m = most;
}

/* One warp's query head over a tile of nk keys as decoding's two warps of
 * a head take it (warps_per_head 2): keys 0 .. 31 and 32 .. 63 (the
 * tile's halves) each their own online softmax (m[h], l[h], acc[h]),
 * with attend_tile's arithmetic for nk keys of which a lane has one; then
 * combine_halves folds them as combine_warps folds the two warps'. So a
 * warp a (token, head) gives a decode step's bits, the halves' chains
 * side by side. The softmaxes start empty (one tile a block). */
template <int V4, int D = 0>
static __device__ __forceinline__ void attend_halves(const __half *ks, const __half *vs, const float *qh,
                                                     float *p, int d_arg, int nk, float (&m)[2], float (&l)[2],
                                                     float4 (&acc)[2][V4])
{
    const int d = D ? D : d_arg;
    const int lane = threadIdx.x & 31;
    const float4 *q4 = reinterpret_cast<const float4 *>(qh);
    const int n[2] = { min(32, nk), nk - 32 };   /* keys of each half; the second's may be none */
    float s[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        s[h] = lane < n[h] ? key_dot<D>(reinterpret_cast<const uint4 *>(ks + (32 * h + lane) * key_stride(d)), q4, d)
                           : -INFINITY;
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
        if (n[h] <= 0)
            continue;
        const float new_max = fmaxf(m[h], warp_max(s[h]));
        const float corr = expf(m[h] - new_max);
        const float e = lane < n[h] ? expf(s[h] - new_max) : 0.0f;
        l[h] = l[h] * corr + warp_sum(e);
        p[32 * h + lane] = e;
        scale_values(acc[h], corr);
        m[h] = new_max;
    }
    __syncwarp();
    auto weigh = [&](int h, int key) {
        const float pk = p[32 * h + key];
#pragma unroll
        for (int v = 0; v < V4; v++) {
            const int c = (v * 32 + lane) * 4;
            if (c < d) {
                const uint2 vv = *reinterpret_cast<const uint2 *>(vs + (32 * h + key) * d + c);
                const float2 v01 = halves(vv.x), v23 = halves(vv.y);
                acc[h][v].x += pk * v01.x;
                acc[h][v].y += pk * v01.y;
                acc[h][v].z += pk * v23.x;
                acc[h][v].w += pk * v23.y;
            }
        }
    };
    /* n[1] <= n[0] */
    if constexpr (D > 0) {
#pragma unroll 8
        for (int key = 0; key < n[0]; key++) {
            weigh(0, key);
            if (key < n[1])
                weigh(1, key);
        }
    } else {
        for (int key = 0; key < n[0]; key++) {
            weigh(0, key);
            if (key < n[1])
                weigh(1, key);
        }
    }
}

/* The second half's softmax folded into the first's, as combine_warps
 * folds a head's second warp into its first. */
template <int V4>
static __device__ __forceinline__ void combine_halves(int d, float (&m)[2], float (&l)[2], float4 (&acc)[2][V4])
{
    const float most = fmaxf(m[0], m[1]);
    if (most == -INFINITY)
        return;
    rescale_softmax<V4>(most, m[0], l[0], acc[0]);
    absorb_softmax<V4>(most, m[1], l[1], acc[1], d, l[0], acc[0]);
    m[0] = most;
}

/* What the attention kernels share: the block's query heads in shared
 * memory, each head's online softmax in its warps (warps_per_head), a tile
 * of keys at a time, folded into one warp a head at the end. */
template <int V4>
struct block_softmax {
    int d, wph, hw, keys_w, key0;
    bool active, mine;   /* the warp works on head hw; and holds its result */
    float m, l;
    float4 acc[V4];

    __device__ __forceinline__ block_softmax(int head_dim, int nh)
    {
        const int warp = threadIdx.x >> 5;
        d = head_dim;
        wph = warps_per_head(nh);
        hw = warp / wph;
        keys_w = ATTN_KEYS / wph;
        key0 = warp % wph * keys_w;
        active = hw < nh;
        mine = active && warp % wph == 0;
        m = -INFINITY;
        l = 0.0f;
#pragma unroll
        for (int v = 0; v < V4; v++)
            acc[v] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }

    /* qs = the nh heads at qh, scaled by 1/sqrt(d) */
    __device__ __forceinline__ void load_query(const float *qh, int nh, float *qs) const
    {
        const float scale = 1.0f / sqrtf((float)d);
        for (int i = threadIdx.x; i < nh * d; i += ATTN_THREADS)
            qs[i] = __fmul_rn(qh[i], scale);
    }

    /* Keys base .. base + nk - 1 (the first `from` already on their way
     * into ks, vs: the first tile's all of them), every thread of the
     * block; those from `cached` on are in ks, vs already (the ROPE
     * attention's own keys: not in the cache yet). */
    __device__ __forceinline__ void take_tile(const cuda_attention_shape &a, int kv_head, const __half *k_cache,
                                              const __half *v_cache, int base, int from, int cached, int nk,
                                              __half *ks, __half *vs, const float *qs, float *ps)
    {
        if (from >= cached) {
            /* nothing left to copy (a first tile): the thread's own copies
             * done, one barrier makes them, q and the tile's rows whole */
            asm volatile("cp.async.commit_group;\ncp.async.wait_all;\n" ::: "memory");
            __syncthreads();
        } else {
            __syncthreads();   /* q is in; the previous tile is done with */
            copy_keys(a, kv_head, k_cache, v_cache, base, from, cached, ks, vs);
            asm volatile("cp.async.commit_group;\ncp.async.wait_all;\n" ::: "memory");
            __syncthreads();
        }
        if (!active || key0 >= nk)
            return;
        float *p = ps + (threadIdx.x >> 5) * ATTN_KEYS;
        const int n = min(keys_w, nk - key0);
        if (V4 == 1 && d == 128)   /* most models' heads */
            attend_tile<V4, 128>(ks + key0 * key_stride(d), vs + key0 * d, qs + hw * d, p, d, n, m, l, acc);
        else
            attend_tile<V4>(ks + key0 * key_stride(d), vs + key0 * d, qs + hw * d, p, d, n, m, l, acc);
    }

    /* After the last tile, every thread: stage is the tile's memory
     * (ATTN_WARPS partials of partial_stride(d) floats fit in its keys). */
    __device__ __forceinline__ void finish(__half *tile)
    {
        float *stage = reinterpret_cast<float *>(tile);
        if (wph > 1)
            combine_warps<V4>(stage, d, wph, active, m, l, acc);
    }
};

/* What the attention needs to do rope_store's work itself (ROPE): the
 * rotation's tables, the norms, the pass's keys and values as the q/k/v
 * projection left them, and the cache to store them in. */
struct rope_inputs {
    cuda_rope rope;
    const float *k, *v;
    __half *k_cache, *v_cache;
};

/* Floats of shared memory the ROPE attention adds to a block's for a pass
 * of n_tok tokens: the rotation's cos and sin for up to n_tok positions
 * (d each), the norms' weights (2 d), the 1 / rms of the block's query
 * heads and of the pass's keys (ATTN_WARPS + n_tok), padded, and the
 * pass's keys in float32 while they are normalized and rotated (n_tok d;
 * the tile holds them as float16). */
static __host__ __device__ inline size_t rope_smem_floats(int d, int n_tok)
{
    return (size_t)(2 * n_tok + 2) * (size_t)d + ATTN_WARPS + (size_t)n_tok + 4;
}

/* A block's share of rope_store in the ROPE attention, on the q, k and v
 * the projection left (its arithmetic, with the helpers above, so that the
 * results are rope_store's bit for bit):
 * - the block's nh query heads of tokens t .. t + nq - 1 (q_heads: token
 *   t's, the next token's n_heads * d floats on; positions pass0 + t ..)
 *   into qs (token by token, nh * d floats each), normalized, rotated and
 *   scaled by 1/sqrt(d) as load_query scales them;
 * - the pass's own keys j0 .. j1 - 1 (j1 - 1 <= t + nq - 1; positions
 *   pass0 + j), which lie in the block's tile of keys from lo, normalized
 *   and rotated into the tile's rows of ks, with their values into vs (the
 *   tile's keys before pass0 come from the cache, by cp.async); and,
 *   store, the block's tokens' own keys and values into the cache, for the
 *   passes after this one (so each once: of all the blocks that take key
 *   j, token j's is the one whose window surely holds it; no block of this
 *   launch reads the cache's copy).
 * extra: rope_smem_floats(d, t + nq) floats. The rotation's tables and the
 * norms' weights, constants of the model, load while the kernels before
 * finish; this waits for them (every thread), then loads what they wrote. */
static __device__ __forceinline__ void rope_rows(const cuda_attention_shape &a, const rope_inputs &r, int pass0,
                                                 int t, int nq, int kv_head, const float *q_heads, int nh, int lo,
                                                 int j0, int j1, bool store, __half *ks, __half *vs, float *qs,
                                                 float *extra)
{
    const int d = a.head_dim, half = d / 2, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int np = j1 > j0 ? j1 - j0 : 0, t_last = t + nq - 1, nqh = nq * nh;
    /* the table: positions pass0 + jr .. pass0 + t_last */
    const int jr = np ? min(j0, t) : t, n_rot = t_last - jr + 1;
    float *rot = extra, *q_w = rot + (size_t)n_rot * d, *k_w = q_w + d, *inv = k_w + d;
    float *kf = inv + ATTN_WARPS + t_last + 4;   /* the pass's keys j0 .. j1 - 1 in float32 */
    const cuda_rope &rp = r.rope;
    for (int i = threadIdx.x; i < n_rot * half; i += ATTN_THREADS) {
        const int row = i / half, c = i % half;
        const size_t at = (size_t)(pass0 + jr + row) * half + c;
        rot[row * d + c] = rp.cos_table[at];
        rot[row * d + half + c] = rp.sin_table[at];
    }
    for (int i = threadIdx.x; i < d; i += ATTN_THREADS) {
        if (rp.q_norm)
            q_w[i] = rp.q_norm[i];
        if (rp.k_norm && np)
            k_w[i] = rp.k_norm[i];
    }
    wait_for_previous_kernels();
    PROBE_MARK(true, 1);
    for (int i = threadIdx.x; i < nqh * d; i += ATTN_THREADS)
        qs[i] = q_heads[(size_t)(i / (nh * d)) * a.n_heads * d + i % (nh * d)];
    for (int i = threadIdx.x; i < np * d; i += ATTN_THREADS) {
        const int j = j0 + i / d, c = i % d, row = pass0 + j - lo;
        const size_t from = ((size_t)j * a.n_kv_heads + kv_head) * d + c;
        kf[i] = r.k[from];
        const __half v = __float2half_rn(r.v[from]);
        vs[row * d + c] = v;
        if (store && j >= t && j <= t_last)
            r.v_cache[((size_t)(pass0 + j) * a.n_kv_heads + kv_head) * d + c] = v;
    }
    __syncthreads();
    PROBE_MARK(true, 2);
    /* rows: the query heads, then the keys */
    const int rows = nqh + np;
#define ROW_AT(row) ((row) < nqh ? qs + (row) * d : kf + ((row) - nqh) * d)
    if (rp.q_norm || rp.k_norm) {
        for (int row = warp; row < rows; row += ATTN_WARPS) {
            if (!(row < nqh ? rp.q_norm : rp.k_norm))
                continue;
            const float ss = head_sum_of_squares(ROW_AT(row), d);
            if (lane == 0)
                inv[row] = head_inverse_rms(ss, d, rp.eps);
        }
        __syncthreads();
    }
    const float scale = 1.0f / sqrtf((float)d);
    for (int p = threadIdx.x; p < rows * half; p += ATTN_THREADS) {
        const int row = p / half, i = p % half;
        const bool is_q = row < nqh;
        const int j = is_q ? t + row / nh : j0 + row - nqh;
        float *x = ROW_AT(row);
        float x0 = x[i], x1 = x[i + half];
        if (is_q ? rp.q_norm != nullptr : rp.k_norm != nullptr) {
            const float *w = is_q ? q_w : k_w;
            x0 = normed(x0, inv[row], w[i]);
            x1 = normed(x1, inv[row], w[i + half]);
        }
        const float *cs = rot + (size_t)(j - jr) * d;
        const float2 y = rotated(x0, x1, cs[i], cs[half + i]);
        if (is_q) {
            x[i] = __fmul_rn(y.x, scale);
            x[i + half] = __fmul_rn(y.y, scale);
        } else {
            /* the key as the cache holds it, in the tile's row */
            const __half y0 = __float2half_rn(y.x), y1 = __float2half_rn(y.y);
            __half *row_k = ks + (pass0 + j - lo) * key_stride(d);
            row_k[i] = y0;
            row_k[i + half] = y1;
            if (store && j >= t && j <= t_last) {
                __half *to = r.k_cache + ((size_t)(pass0 + j) * a.n_kv_heads + kv_head) * d;
                to[i] = y0;
                to[i + half] = y1;
            }
        }
    }
#undef ROW_AT
    /* take_tile's barrier makes qs and the tile's rows whole */
}

/* A warp's result for a (token t, head) over one split (row: t's row of
 * that head): where there are several splits, its partial for the merge;
 * else the output itself, and its fragments. */
template <int V4>
static __device__ __forceinline__ void store_split(const cuda_attention_shape &a, float *partials, int split,
                                                   int splits, size_t row, int t, int head, float *out,
                                                   __half *frag, float m, float l, const float4 (&acc)[V4])
{
    const int d = a.head_dim, lane = threadIdx.x & 31;
    if (splits > 1) {
        store_partial<V4>(partials + (row * splits + split) * partial_stride(d), m, l, acc, d);
        return;
    }
#pragma unroll
    for (int v = 0; v < V4; v++) {
        const int c = (v * 32 + lane) * 4;
        if (c < d)
            store_four(out + row * d + c, frag, t, head * d + c, a.n_heads * d / 16,
                       make_float4(acc[v].x / l, acc[v].y / l, acc[v].z / l, acc[v].w / l));
    }
}

/* Whether this block is the last of the n blocks that count at `count` to
 * get here: each makes its writes visible, then counts itself in; the
 * last resets the count for the next launch, and then sees the others'
 * writes. Every thread calls it. */
static __device__ __forceinline__ bool last_to_finish(unsigned *count, unsigned n)
{
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(count, 1u) == n - 1u;
        if (last)
            *count = 0u;
    }
    __syncthreads();
    if (last)
        __threadfence();
    return last;
}

/* V4: float4s of the head dimension per lane (d <= 128 * V4). */
template <int V4, bool ROPE>
static __global__ void __launch_bounds__(ATTN_THREADS, ATTN_SM_BLOCKS)
attention_kernel(const __grid_constant__ cuda_attention_shape a, const float *q, int pos0, const int *pos_dev,
                 int span, const __half *k_cache, const __half *v_cache, float *out, float *partials,
                 unsigned *counters, __half *frag, const __grid_constant__ rope_inputs r)
{
    extern __shared__ __align__(16) float sm[];
    let_next_kernel_start();
    const int d = a.head_dim, group = a.n_heads / a.n_kv_heads;
    const int rounds = (group + ATTN_WARPS - 1) / ATTN_WARPS;
    const int split = blockIdx.x, splits = gridDim.x, t = blockIdx.z;
    const int kv_head = blockIdx.y / rounds, h0 = blockIdx.y % rounds * ATTN_WARPS;
    const int nh = min(ATTN_WARPS, group - h0);
    const attention_smem at(sm, d, nh);
    __half *ks = at.ks, *vs = at.vs;
    float *qs = at.qs, *ps = at.ps;

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
    const float *q_heads = q + ((size_t)t * a.n_heads + (size_t)kv_head * group + h0) * d;
    if (ROPE) {
        /* one tile a block (the launch makes sure): the pass's keys in it
         * are j0 .. j1 - 1 */
        const int j0 = max(lo, pass0) - pass0, j1 = hi - pass0;
        rope_rows(a, r, pass0, t, 1, kv_head, q_heads, nh, lo, j0, j1, h0 == 0, ks, vs, qs, ps + ATTN_WARPS * ATTN_KEYS);
    } else {
        wait_for_previous_kernels();
        /* the rest of the first tile (the pass's own keys) on its way while q loads */
        copy_keys(a, kv_head, k_cache, v_cache, lo, early, lo < hi ? min(ATTN_KEYS, hi - lo) : 0, ks, vs);
    }
    block_softmax<V4> heads(d, nh);
    if (!ROPE)
        heads.load_query(q_heads, nh, qs);
    for (int base = lo; base < hi; base += ATTN_KEYS) {
        /* ROPE: one tile, whose keys from `early` on are in already */
        const int nk = min(ATTN_KEYS, hi - base);
        heads.take_tile(a, kv_head, k_cache, v_cache, base, base == lo ? (ROPE ? early : nk) : 0,
                        ROPE ? early : nk, nk, ks, vs, qs, ps);
    }
    heads.finish(ks);
    const int hw = heads.hw;
    const bool mine = heads.mine;
    const float m = heads.m, l = heads.l;
    const int head = kv_head * group + h0 + hw;
    const size_t row = (size_t)t * a.n_heads + head;
    if (mine)
        store_split<V4>(a, partials, split, splits, row, t, head, out, frag, m, l, heads.acc);
    if (splits == 1 || !counters)
        return;   /* one split: done; no counters: merge_splits merges */
    /* the last block of the (KV head, token) to finish merges the splits
     * of its heads (one launch less) */
    if (last_to_finish(counters + (size_t)t * gridDim.y + blockIdx.y, (unsigned)splits) && mine)
        merge_row(partials + row * splits * partial_stride(d), splits, d, out + row * d, frag, t, head * d,
                  a.n_heads * d / 16);
}

/* Verifying (ROPE, one tile a block) where decoding gives each query head
 * of a KV head two warps (warps_per_head 2: llama3's 4 heads a KV head):
 * a block takes two tokens, a warp a (token, head) that does the work of
 * decoding's two (attend_halves, combine_halves), so that a verified token
 * gets a decode step's bits. The tile (and the pass's keys in it, rotated
 * once) serves both tokens: 5 tokens take 3 blocks a (split, KV head)
 * instead of 5, in one wave on an H100. 0 at build time
 * (-DALM_ATTENTION_PAIRS=0): a block a token, to measure what it gains. */
#ifndef ALM_ATTENTION_PAIRS
#define ALM_ATTENTION_PAIRS 1
#endif
#define PAIR_HEADS (ATTN_WARPS / 2)

/* Whether a pass takes attention_pair_kernel (with the ROPE kernels that
 * rope_fits, no clusters): a window would start a token's keys inside a
 * tile, where its halves are not decoding's. */
static bool pairs_fit(const cuda_attention_shape *a, int n_tok)
{
    const int group = a->n_heads / a->n_kv_heads;
    return ALM_ATTENTION_PAIRS && n_tok >= 2 && a->window <= 0 && group <= PAIR_HEADS &&
           warps_per_head(group) == 2;
}

template <int V4>
static __global__ void __launch_bounds__(ATTN_THREADS, ATTN_SM_BLOCKS)
attention_pair_kernel(const __grid_constant__ cuda_attention_shape a, const float *q, int n_tok, int pos0,
                      const int *pos_dev, int span, const __half *k_cache, const __half *v_cache, float *out,
                      float *partials, unsigned *counters, __half *frag, const __grid_constant__ rope_inputs r)
{
    extern __shared__ __align__(16) float sm[];
    let_next_kernel_start();
    const int d = a.head_dim, group = a.n_heads / a.n_kv_heads;   /* at most PAIR_HEADS (pairs_fit) */
    const int split = blockIdx.x, splits = gridDim.x, kv_head = blockIdx.y;
    const int t0 = 2 * (int)blockIdx.z, nq = min(2, n_tok - t0);
    const int warp = threadIdx.x >> 5;
    const int slot = warp / PAIR_HEADS, hw = warp % PAIR_HEADS, t = t0 + slot;
    const bool active = slot < nq && hw < group;
    const attention_smem at(sm, d, 2 * group);
    __half *ks = at.ks, *vs = at.vs;
    float *qs = at.qs, *ps = at.ps;

    /* as attention_kernel, the block's keys those of its last token */
    const int pass0 = pos_dev ? *pos_dev : pos0, last = pass0 + t0 + nq - 1;
    const int chunk = span / splits, lo = split * chunk, hi = min(last + 1, lo + chunk);
    const int early = lo < hi ? max(0, min(hi - lo, pass0 - lo)) : 0;
    copy_keys(a, kv_head, k_cache, v_cache, lo, 0, early, ks, vs);
    const float *q_heads = q + ((size_t)t0 * a.n_heads + (size_t)kv_head * group) * d;
    rope_rows(a, r, pass0, t0, nq, kv_head, q_heads, group, lo, max(lo, pass0) - pass0, hi - pass0, true, ks, vs,
              qs, ps + ATTN_WARPS * ATTN_KEYS);
    asm volatile("cp.async.commit_group;\ncp.async.wait_all;\n" ::: "memory");
    __syncthreads();   /* the tile's rows and q whole */

    float m[2] = { -INFINITY, -INFINITY }, l[2] = { 0.0f, 0.0f };
    float4 acc[2][V4];
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int v = 0; v < V4; v++)
            acc[h][v] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const int nk = active ? min(pass0 + t + 1, lo + chunk) - lo : 0;   /* token t's keys of the tile */
    if (nk > 0) {
        const float *qh = qs + (slot * group + hw) * d;
        float *p = ps + warp * ATTN_KEYS;
        if (V4 == 1 && d == 128)
            attend_halves<V4, 128>(ks, vs, qh, p, d, nk, m, l, acc);
        else
            attend_halves<V4>(ks, vs, qh, p, d, nk, m, l, acc);
        combine_halves<V4>(d, m, l, acc);
    }
    const int head = kv_head * group + hw;
    const size_t row = (size_t)t * a.n_heads + head;
    if (active)   /* a warp without keys here leaves (-infinity, 0, 0) for the merge to skip */
        store_split<V4>(a, partials, split, splits, row, t, head, out, frag, m[0], l[0], acc[0]);
    if (splits == 1 || !counters)
        return;
    /* the last block of the (token pair, KV head) merges, as in attention_kernel */
    if (last_to_finish(counters + (size_t)blockIdx.z * gridDim.y + blockIdx.y, (unsigned)splits) && active)
        merge_row(partials + row * splits * partial_stride(d), splits, d, out + row * d, frag, t, head * d,
                  a.n_heads * d / 16);
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

/* ---------------------------------------------------------------- attention in clusters */

/* The same attention with the splits' merge inside a thread block cluster
 * (compute capability 9.0+): the CLUSTER blocks of a (KV head, token) are
 * one cluster; block b takes the tiles of CUDA_ATTENTION_SPLIT_KEYS keys
 * numbered b, b + CLUSTER, b + 2 CLUSTER, ... of the context, leaves its
 * partial (max, sum, weighted values) in its own shared memory, and block
 * 0 reads the others' over the cluster's shared memory and merges them.
 *
 * Why: in a decode step the attention is a chain of latencies, not
 * bandwidth (a layer's cache is a few MB). Through global memory the
 * merge costs the partials' stores, a fence, an atomic counter and three
 * to five trips to L2 for the last block; here it is a cluster barrier and
 * one trip to the neighbours' shared memory. The tiles a block takes
 * depend on the position only, never on the pass's other tokens or the
 * launch's size, so a verification gives bit for bit the logits of
 * decoding its tokens one by one, and a graph's launch serves every
 * context length. Up to CLUSTER tiles (1024 keys at 16) the splits are
 * those of attention_kernel and the arithmetic is merge_row's: the same
 * bits.
 *
 * ROPE (one token: a decode step): q, k and v are as the q/k/v projection
 * left them, and each block rotates (and normalizes) its query heads
 * itself; the block whose tiles hold the new position does the same for
 * the new key and stores it and its value into the cache (no other block
 * reads them), then takes them from shared memory. That is rope_store's
 * arithmetic (the helpers above), so the results are rope_store's and then
 * this kernel's, bit for bit, one kernel in the chain of a layer fewer. */
template <int V4, int CLUSTER, bool ROPE>
static __global__ void __launch_bounds__(ATTN_THREADS, ATTN_SM_BLOCKS)
attention_cluster_kernel(cuda_attention_shape a, const float *q, int pos0, const int *pos_dev,
                         const __half *k_cache, const __half *v_cache, float *out, __half *frag,
                         const __grid_constant__ rope_inputs r)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    extern __shared__ __align__(16) float sm[];
    let_next_kernel_start();
    PROBE_BEGIN(ROPE);
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    const int d = a.head_dim, group = a.n_heads / a.n_kv_heads;
    const int rounds = (group + ATTN_WARPS - 1) / ATTN_WARPS;
    const int rank = (int)blockIdx.x, t = blockIdx.z;
    const int kv_head = blockIdx.y / rounds, h0 = blockIdx.y % rounds * ATTN_WARPS;
    const int nh = min(ATTN_WARPS, group - h0);
    const int lane = threadIdx.x & 31;
    const attention_smem at(sm, d, nh);
    __half *ks = at.ks, *vs = at.vs;
    float *qs = at.qs, *ps = at.ps;
    float *parts = ps + ATTN_WARPS * ATTN_KEYS;   /* nh partials, partial_stride(d) apart */

    /* pos_dev: safe to read early (see attention_kernel) */
    const int pass0 = pos_dev ? *pos_dev : pos0, pos = pass0 + t;
    const int first = a.window > 0 && pos - a.window + 1 > 0 ? pos - a.window + 1 : 0;
    const int tile0 = first / ATTN_KEYS, tile_end = pos / ATTN_KEYS + 1;
    int tile = tile0 + ((rank - tile0 % CLUSTER) % CLUSTER + CLUSTER) % CLUSTER;
    /* the keys of a tile: [lo, hi) */
#define TILE_LO(j) max(first, (j) * ATTN_KEYS)
#define TILE_HI(j) min(pos + 1, ((j) + 1) * ATTN_KEYS)
    const int early = tile < tile_end ? max(0, min(TILE_HI(tile) - TILE_LO(tile), pass0 - TILE_LO(tile))) : 0;
    if (tile < tile_end)
        copy_keys(a, kv_head, k_cache, v_cache, TILE_LO(tile), 0, early, ks, vs);
    const float *q_heads = q + ((size_t)t * a.n_heads + (size_t)kv_head * group + h0) * d;
    block_softmax<V4> heads(d, nh);
    const int first_nk = tile < tile_end ? TILE_HI(tile) - TILE_LO(tile) : 0;
    if (ROPE) {
        /* one token, one tile a block (the launch makes sure): the block
         * whose tile holds the new position rotates and stores its key */
        const int holds = tile < tile_end && TILE_HI(tile) == pos + 1;
        rope_rows(a, r, pass0, 0, 1, kv_head, q_heads, nh, tile < tile_end ? TILE_LO(tile) : 0, 0, holds, h0 == 0, ks,
                  vs, qs, parts + nh * partial_stride(d));
    } else {
        wait_for_previous_kernels();
        /* the rest of the first tile (the pass's own keys) on its way while q loads */
        if (tile < tile_end)
            copy_keys(a, kv_head, k_cache, v_cache, TILE_LO(tile), early, first_nk, ks, vs);
        heads.load_query(q_heads, nh, qs);
    }
    for (bool first_tile = true; tile < tile_end; tile += CLUSTER, first_tile = false)
        heads.take_tile(a, kv_head, k_cache, v_cache, TILE_LO(tile), first_tile ? (ROPE ? early : first_nk) : 0,
                        ROPE ? early : TILE_HI(tile) - TILE_LO(tile), TILE_HI(tile) - TILE_LO(tile), ks, vs, qs,
                        ps);
    PROBE_MARK(ROPE, 3);
    heads.finish(ks);
    PROBE_MARK(ROPE, 4);
    const int hw = heads.hw;
    const bool mine = heads.mine;
    const float m = heads.m, l = heads.l;
    const float4 *acc = heads.acc;
#undef TILE_LO
#undef TILE_HI
    const size_t stride = partial_stride(d);
    if (mine)
        store_partial<V4>(parts + hw * stride, m, l, acc, d);
    cluster.sync();   /* every block's partials are in */
    PROBE_MARK(ROPE, 5);
    if (rank == 0 && mine) {
        /* merge_row's arithmetic, every load of the CLUSTER partials
         * issued before the first is used */
        const float *part = parts + hw * stride;
        float pm = -INFINITY, pl = 0.0f;
        if (lane < CLUSTER) {
            const float *their = cluster.map_shared_rank(part, (unsigned)lane);
            pm = their[0];
            pl = their[1];
        }
        const int head = kv_head * group + h0 + hw;
        const size_t row = (size_t)t * a.n_heads + head;
        const int frag_steps = a.n_heads * d / 16;
        float max = 0.0f, total = 0.0f, w = 0.0f;   /* of the partials: the same for every v */
#pragma unroll
        for (int v = 0; v < V4; v++) {
            const int c = (v * 32 + lane) * 4;
            const bool has = c < d;
            float4 x[CLUSTER];
#pragma unroll
            for (int j = 0; j < CLUSTER; j++)
                x[j] = has ? *reinterpret_cast<const float4 *>(cluster.map_shared_rank(part, (unsigned)j) + 4 + c)
                           : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (v == 0) {
                max = warp_max(pm);
                total = warp_sum(lane < CLUSTER && pm != -INFINITY ? expf(pm - max) * pl : 0.0f);
                w = lane < CLUSTER && pm != -INFINITY ? expf(pm - max) : 0.0f;
            }
            float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
            for (int j = 0; j < CLUSTER; j++) {
                const float wj = __shfl_sync(0xffffffffu, w, j);
                sum.x += wj * x[j].x;
                sum.y += wj * x[j].y;
                sum.z += wj * x[j].z;
                sum.w += wj * x[j].w;
            }
            if (!has)
                continue;
            store_four(out + row * d + c, frag, t, head * d + c, frag_steps,
                       make_float4(sum.x / total, sum.y / total, sum.z / total, sum.w / total));
        }
    }
    PROBE_MARK(ROPE, 6);
    cluster.sync();   /* block 0 is done reading the others' shared memory */
    PROBE_END(ROPE, PROBE_ATTENTION);
#endif
}

/* Floats of the cluster kernel's shared memory (rope: of the ROPE one, a
 * decode step's). */
static size_t cluster_smem_floats(int d, int heads, bool rope)
{
    return attention_smem_floats(d, heads) + (size_t)heads * partial_stride(d) + (rope ? rope_smem_floats(d, 1) : 0);
}

/* How a pass's keys are split: `splits` blocks of `chunk` keys (a tile or
 * more) over `span` keys. Splits of a fixed number of keys, so that a
 * token's result does not depend on the other tokens of its pass:
 * verifying draft tokens then gives bit for bit the logits of decoding
 * them one by one. Only a pass too large for the partials (long prompts)
 * takes longer splits. */
typedef struct key_splits {
    int span, chunk, splits;
} key_splits;

static key_splits split_keys(const cuda_attention_shape *a, int n_tok, int pos0, const int *pos_dev, int max_span,
                             size_t max_parts)
{
    key_splits k;
    const int span = pos_dev ? max_span : pos0 + n_tok, rows = a->n_heads * n_tok;
    k.chunk = CUDA_ATTENTION_SPLIT_KEYS;
    k.splits = (span + k.chunk - 1) / k.chunk;
    while (k.splits > 1 && (size_t)rows * (size_t)k.splits > max_parts) {
        k.chunk *= 2;
        k.splits = (span + k.chunk - 1) / k.chunk;
    }
    k.span = k.splits * k.chunk;
    return k;
}

/* What the ROPE kernels take: at most CUDA_ROPE_ATTENTION_MAX_TOKENS
 * tokens, one tile of keys a block (a cluster: one token, and no more
 * tiles than blocks). */
static bool rope_fits(const cuda_attention_shape *a, int n_tok, int pos0, const int *pos_dev, int max_span,
                      const cuda_attention_scratch *scratch)
{
    if (n_tok < 1 || n_tok > CUDA_ROPE_ATTENTION_MAX_TOKENS)
        return false;
    if (scratch->cluster)
        return n_tok == 1 && (pos_dev ? max_span : pos0 + 1) <= scratch->cluster * CUDA_ATTENTION_SPLIT_KEYS;
    return split_keys(a, n_tok, pos0, pos_dev, max_span, scratch->max_parts).chunk == CUDA_ATTENTION_SPLIT_KEYS;
}

bool cuda_rope_attention_fits(const cuda_attention_shape *a, int n_tok, int pos0, const int *pos_dev, int max_span,
                              const cuda_attention_scratch *scratch)
{
    return rope_fits(a, n_tok, pos0, pos_dev, max_span, scratch);
}

/* cuda_attention, or with r (rope_fits) the ROPE kernels. */
template <bool ROPE>
static cudaError_t launch_attention(const cuda_attention_shape *a, const float *q, int n_tok, int pos0,
                                    const int *pos_dev, int max_span, const __half *k_cache, const __half *v_cache,
                                    float *out, const cuda_attention_scratch *scratch, __half *frag,
                                    const rope_inputs &r, cudaStream_t s)
{
    if (frag && (a->n_heads * a->head_dim) % CUDA_TILE_COLS)
        return cudaErrorInvalidValue;
    if (a->head_dim > MAX_HEAD_DIM || a->head_dim % 8 || a->n_kv_heads < 1 || a->n_heads % a->n_kv_heads)
        return cudaErrorInvalidValue;
    if (ROPE && !rope_fits(a, n_tok, pos0, pos_dev, max_span, scratch))
        return cudaErrorInvalidValue;
    const int group = a->n_heads / a->n_kv_heads, rounds = (group + ATTN_WARPS - 1) / ATTN_WARPS;
    const int heads = group < ATTN_WARPS ? group : ATTN_WARPS;
    if (scratch->cluster) {
        const int cluster = scratch->cluster;
        void (*kernel)(cuda_attention_shape, const float *, int, const int *, const __half *, const __half *,
                       float *, __half *, rope_inputs);
        if (cluster == 16)
            kernel = a->head_dim <= 128 ? attention_cluster_kernel<1, 16, ROPE> : attention_cluster_kernel<2, 16, ROPE>;
        else if (cluster == 8)
            kernel = a->head_dim <= 128 ? attention_cluster_kernel<1, 8, ROPE> : attention_cluster_kernel<2, 8, ROPE>;
        else
            return cudaErrorInvalidValue;
        const size_t smem = cluster_smem_floats(a->head_dim, heads, ROPE) * sizeof(float);
        return launch_overlapped_clusters(kernel, dim3((unsigned)cluster, (unsigned)(a->n_kv_heads * rounds),
                                                       (unsigned)n_tok),
                                          dim3(ATTN_THREADS), smem, s, (unsigned)cluster, *a, q, pos0, pos_dev,
                                          k_cache, v_cache, out, frag, r);
    }
    const key_splits k = split_keys(a, n_tok, pos0, pos_dev, max_span, scratch->max_parts);
    float *partials = scratch->partials;
    /* two tokens a block (attention_pair_kernel), or one */
    const bool pairs = ROPE && pairs_fit(a, n_tok);
    const dim3 grid((unsigned)k.splits, (unsigned)(a->n_kv_heads * rounds),
                    (unsigned)(pairs ? (n_tok + 1) / 2 : n_tok));
    /* counters for the last block's merge, where there are enough */
    unsigned *counters = (size_t)grid.y * (size_t)grid.z <= scratch->max_counters ? scratch->counters : NULL;
    const size_t smem = (attention_smem_floats(a->head_dim, pairs ? 2 * group : heads) +
                         (ROPE ? rope_smem_floats(a->head_dim, n_tok) : 0)) *
                        sizeof(float);
    cudaError_t e;
    if (pairs)
        e = launch_overlapped(a->head_dim <= 128 ? attention_pair_kernel<1> : attention_pair_kernel<2>, grid,
                              dim3(ATTN_THREADS), smem, s, *a, q, n_tok, pos0, pos_dev, k.span, k_cache, v_cache,
                              out, partials, counters, frag, r);
    else
        e = launch_overlapped(a->head_dim <= 128 ? attention_kernel<1, ROPE> : attention_kernel<2, ROPE>, grid,
                              dim3(ATTN_THREADS), smem, s, *a, q, pos0, pos_dev, k.span, k_cache, v_cache, out,
                              partials, counters, frag, r);
    if (e != cudaSuccess || k.splits == 1 || counters)
        return e;
    return launch_overlapped(merge_splits, dim3((unsigned)a->n_heads, (unsigned)n_tok), dim3(32), 0, s,
                             a->n_heads, a->head_dim, k.splits, (const float *)partials, out, frag);
}

cudaError_t cuda_attention(const cuda_attention_shape *a, const float *q, int n_tok, int pos0,
                           const int *pos_dev, int max_span, const cuda_kv *k_cache,
                           const cuda_kv *v_cache, float *out, const cuda_attention_scratch *scratch,
                           void *frag, cudaStream_t s)
{
    const rope_inputs none = {};
    return launch_attention<false>(a, q, n_tok, pos0, pos_dev, max_span, reinterpret_cast<const __half *>(k_cache),
                                   reinterpret_cast<const __half *>(v_cache), out, scratch, (__half *)frag, none, s);
}

cudaError_t cuda_rope_attention(const cuda_attention_shape *a, const cuda_rope *rope, const float *q,
                                const float *k, const float *v, int n_tok, int pos0, const int *pos_dev,
                                int max_span, cuda_kv *k_cache, cuda_kv *v_cache, float *out,
                                const cuda_attention_scratch *scratch, void *frag, cudaStream_t s)
{
    __half *kc = reinterpret_cast<__half *>(k_cache), *vc = reinterpret_cast<__half *>(v_cache);
    const rope_inputs r = { *rope, k, v, kc, vc };
    return launch_attention<true>(a, q, n_tok, pos0, pos_dev, max_span, kc, vc, out, scratch, (__half *)frag, r, s);
}

size_t cuda_attention_partial_floats(int head_dim) { return partial_stride(head_dim); }

static bool clusters_supported(void)
{
    int device = 0, major = 0;
    return ALM_ATTENTION_CLUSTER && cudaGetDevice(&device) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
           major >= 9;
}

template <int V4, int CLUSTER, bool ROPE>
static cudaError_t setup_cluster_kernel(void)
{
    const int most = (int)(cluster_smem_floats(MAX_HEAD_DIM, ATTN_WARPS, ROPE) * sizeof(float));
    cudaError_t e = cudaFuncSetAttribute(attention_cluster_kernel<V4, CLUSTER, ROPE>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, most);
    if (e == cudaSuccess && CLUSTER > 8)
        e = cudaFuncSetAttribute(attention_cluster_kernel<V4, CLUSTER, ROPE>,
                                 cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    return e;
}

cudaError_t cuda_attention_setup(void)
{
    const int most = (int)(attention_smem_floats(MAX_HEAD_DIM, ATTN_WARPS) * sizeof(float));
    const int most_rope = most + (int)(rope_smem_floats(MAX_HEAD_DIM, CUDA_ROPE_ATTENTION_MAX_TOKENS) * sizeof(float));
    cudaError_t e = cudaFuncSetAttribute(attention_kernel<1, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, most);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(attention_kernel<2, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, most);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(attention_kernel<1, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, most_rope);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(attention_kernel<2, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, most_rope);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(attention_pair_kernel<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, most_rope);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(attention_pair_kernel<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, most_rope);
    if (e == cudaSuccess && clusters_supported()) {
        e = setup_cluster_kernel<1, 8, false>();
        if (e == cudaSuccess) e = setup_cluster_kernel<2, 8, false>();
        if (e == cudaSuccess) e = setup_cluster_kernel<1, 16, false>();
        if (e == cudaSuccess) e = setup_cluster_kernel<2, 16, false>();
        if (e == cudaSuccess) e = setup_cluster_kernel<1, 8, true>();
        if (e == cudaSuccess) e = setup_cluster_kernel<2, 8, true>();
        if (e == cudaSuccess) e = setup_cluster_kernel<1, 16, true>();
        if (e == cudaSuccess) e = setup_cluster_kernel<2, 16, true>();
    }
    return e;
}

/* Whether the GPU can place a cluster of `blocks` attention blocks of this
 * shape at all (a cluster lives in one GPC; blocks of a large head
 * dimension take most of an SM's shared memory). Asked of the ROPE
 * kernel, the larger, so that the answer holds for both. */
template <int V4, int CLUSTER>
static bool cluster_fits(const cuda_attention_shape *a)
{
    const int group = a->n_heads / a->n_kv_heads;
    cudaLaunchAttribute attr = cluster_attribute(CLUSTER);
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(CLUSTER, (unsigned)a->n_kv_heads, 1);
    config.blockDim = dim3(ATTN_THREADS);
    config.dynamicSmemBytes =
        cluster_smem_floats(a->head_dim, group < ATTN_WARPS ? group : ATTN_WARPS, true) * sizeof(float);
    config.attrs = &attr;
    config.numAttrs = 1;
    int clusters = 0;
    return cudaOccupancyMaxActiveClusters(&clusters, attention_cluster_kernel<V4, CLUSTER, true>, &config) ==
               cudaSuccess &&
           clusters > 0;
}

int cuda_attention_cluster_blocks(const cuda_attention_shape *a)
{
    if (!clusters_supported() || a->head_dim > MAX_HEAD_DIM || a->head_dim % 4 || a->n_kv_heads < 1 ||
        a->n_heads % a->n_kv_heads)
        return 0;
    int blocks = 0;
    if (a->head_dim <= 128 ? cluster_fits<1, 16>(a) : cluster_fits<2, 16>(a))
        blocks = 16;
    else if (a->head_dim <= 128 ? cluster_fits<1, 8>(a) : cluster_fits<2, 8>(a))
        blocks = 8;
    /* A refusal above (16 refused, 8 placed included) is an answer, not an
     * error for the next launch's cudaGetLastError to report. */
    cudaGetLastError();
    return blocks;
}
