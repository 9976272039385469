/* Attention of a prefill pass on the tensor cores.
 *
 * Why a second kernel: attention.cu gives each (head, token) a block and
 * each key a lane, which suits a decode step (one query, many keys) but
 * makes a 512-token prompt read every key row once per query, from L1, in
 * 512-byte strides. Here a block takes 64 queries of one head (16 per
 * warp) and walks the keys in tiles of 64: the tile is read once from the
 * cache (float16) into shared memory, and the scores S = Q K^T
 * and the sums P V are mma.m16n8k16 (float32 accumulation) with the online
 * softmax between them, the scores never leaving registers. The
 * accumulator layout of S is the A-operand layout of P V, so the
 * probabilities go from one mma to the next without shared memory; the B
 * operands come from the tiles with ldmatrix (transposed for V).
 *
 * The results differ from attention.cu's by the float16 rounding of q and
 * the probabilities (about 1e-3 of max|v|), so it serves passes that
 * are not graphs and not verifications: a token verified with its drafts
 * must get the logits it gets decoded alone, bit for bit. */
#include <math.h>

#include <cuda_fp16.h>

#include "cuda_kernels.h"
#include "fragment_layout.cuh"

#define FLASH_WARPS 4
#define FLASH_QUERIES (16 * FLASH_WARPS)
#define FLASH_KEYS 64

static __device__ __forceinline__ void mma_16816(float c[4], const uint32_t a[4], uint32_t b0,
                                                 uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Four 8x8 float16 matrices from shared memory, lanes 8i..8i+7 giving the
 * rows of matrix i; TRANS: each lane gets a column pair instead of a row
 * pair. */
template <bool TRANS>
static __device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const __half *row)
{
    uint32_t at = (uint32_t)__cvta_generic_to_shared(row);
    if (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(at));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(at));
}

static __device__ __forceinline__ uint32_t pack_half2(float lo, float hi)
{
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&h);
}

/* D: the head dimension. Shared rows are D + 8 halves long, so that the 8
 * rows one ldmatrix reads fall in different banks. */
template <int D>
static __global__ void __launch_bounds__(32 * FLASH_WARPS)
flash_kernel(cuda_attention_shape a, const float *q, int n_tok, int pos0, const __half *k_cache,
             const __half *v_cache, float *out, __half *frag)
{
    constexpr int STRIDE = D + 8, KSTEPS = D / 16, DTILES = D / 8;
    __shared__ __align__(16) __half ks[FLASH_KEYS * STRIDE];
    __shared__ __align__(16) __half vs[FLASH_KEYS * STRIDE];

    const int head = blockIdx.x, t_block = blockIdx.y * FLASH_QUERIES;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    const int kv_head = head / (a.n_heads / a.n_kv_heads);
    const size_t kv_row = (size_t)a.n_kv_heads * D;
    const __half *kbase = k_cache + (size_t)kv_head * D, *vbase = v_cache + (size_t)kv_head * D;

    /* the warp's rows g and g + 8; padding rows (past n_tok) read the last
     * token's query and are never stored */
    const int t0 = t_block + warp * 16;
    const int qpos[2] = { pos0 + t0 + g, pos0 + t0 + g + 8 };

    /* Q as A fragments, scaled so that the softmax is in base 2 */
    const float scale = 1.4426950408889634f / sqrtf((float)D);
    uint32_t qa[KSTEPS][4];
#pragma unroll
    for (int s = 0; s < KSTEPS; s++)
#pragma unroll
        for (int p = 0; p < 4; p++) {
            int t = min(t0 + g + ((p & 1) ? 8 : 0), n_tok - 1);
            int c = s * 16 + 2 * tq + ((p & 2) ? 8 : 0);
            float2 v = *reinterpret_cast<const float2 *>(q + ((size_t)t * a.n_heads + head) * D + c);
            qa[s][p] = pack_half2(v.x * scale, v.y * scale);
        }

    /* keys lo .. hi - 1 cover every query of the block */
    const int t_last = min(t_block + FLASH_QUERIES, n_tok) - 1;
    const int hi = pos0 + t_last + 1;
    int lo = a.window > 0 ? max(0, pos0 + t_block - a.window + 1) : 0;
    lo -= lo % FLASH_KEYS;

    float o[DTILES][4];
#pragma unroll
    for (int n = 0; n < DTILES; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = { -INFINITY, -INFINITY }, l[2] = { 0.0f, 0.0f };

    for (int k0 = lo; k0 < hi; k0 += FLASH_KEYS) {
        __syncthreads();   /* every warp is done with the previous tile */
        /* keys past hi are not written yet: zeros, so that their (masked)
         * probabilities of 0 never meet a NaN of the cache */
        for (int i = threadIdx.x; i < FLASH_KEYS * D / 8; i += 32 * FLASH_WARPS) {
            const int key = i / (D / 8), c = (i % (D / 8)) * 8, p = k0 + key;
            uint4 kv = make_uint4(0u, 0u, 0u, 0u), vv = kv;
            if (p < hi) {
                kv = __ldg(reinterpret_cast<const uint4 *>(kbase + (size_t)p * kv_row + c));
                vv = __ldg(reinterpret_cast<const uint4 *>(vbase + (size_t)p * kv_row + c));
            }
            *reinterpret_cast<uint4 *>(ks + key * STRIDE + c) = kv;
            *reinterpret_cast<uint4 *>(vs + key * STRIDE + c) = vv;
        }
        __syncthreads();
        /* a warp whose queries all come before the tile has nothing in it */
        if (k0 > pos0 + t0 + 15)
            continue;

        /* S = Q K^T: 16 queries x 64 keys, 8 tiles of 8 keys */
        float sc[8][4];
#pragma unroll
        for (int n = 0; n < 8; n++)
            sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.0f;
        const int mi = lane >> 3, r8 = lane & 7;
#pragma unroll
        for (int s = 0; s < KSTEPS; s++)
#pragma unroll
            for (int n2 = 0; n2 < 4; n2++) {
                uint32_t b[4];
                ldmatrix_x4<false>(b, ks + (n2 * 16 + (mi >> 1) * 8 + r8) * STRIDE + s * 16 + (mi & 1) * 8);
                mma_16816(sc[2 * n2], qa[s], b[0], b[1]);
                mma_16816(sc[2 * n2 + 1], qa[s], b[2], b[3]);
            }

        /* mask, then the online softmax of rows g (i = 0, 1) and g + 8 */
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int key = k0 + n * 8 + 2 * tq + (i & 1), qp = qpos[i >> 1];
                if (key > qp || (a.window > 0 && key <= qp - a.window))
                    sc[n][i] = -INFINITY;
            }
        float corr[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float mx = -INFINITY;
#pragma unroll
            for (int n = 0; n < 8; n++)
                mx = fmaxf(mx, fmaxf(sc[n][2 * r], sc[n][2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float m_new = fmaxf(m[r], mx);
            /* a row with no key yet subtracts 0, not -infinity */
            const float base = m_new == -INFINITY ? 0.0f : m_new;
            corr[r] = exp2f(m[r] - base);
            float sum = 0.0f;
#pragma unroll
            for (int n = 0; n < 8; n++) {
                sc[n][2 * r] = exp2f(sc[n][2 * r] - base);
                sc[n][2 * r + 1] = exp2f(sc[n][2 * r + 1] - base);
                sum += sc[n][2 * r] + sc[n][2 * r + 1];
            }
            l[r] = l[r] * corr[r] + sum;   /* this lane's share; summed at the end */
            m[r] = m_new;
        }
#pragma unroll
        for (int n = 0; n < DTILES; n++) {
            o[n][0] *= corr[0];
            o[n][1] *= corr[0];
            o[n][2] *= corr[1];
            o[n][3] *= corr[1];
        }

        /* O += P V: the probabilities of keys 16 kk .. 16 kk + 15 are the
         * A fragment of step kk */
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            const uint32_t pa[4] = { pack_half2(sc[2 * kk][0], sc[2 * kk][1]),
                                     pack_half2(sc[2 * kk][2], sc[2 * kk][3]),
                                     pack_half2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                                     pack_half2(sc[2 * kk + 1][2], sc[2 * kk + 1][3]) };
#pragma unroll
            for (int d2 = 0; d2 < KSTEPS; d2++) {
                uint32_t b[4];
                ldmatrix_x4<true>(b, vs + (kk * 16 + (mi & 1) * 8 + r8) * STRIDE + d2 * 16 + (mi >> 1) * 8);
                mma_16816(o[2 * d2], pa, b[0], b[1]);
                mma_16816(o[2 * d2 + 1], pa, b[2], b[3]);
            }
        }
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
    const int dim = a.n_heads * D;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int t = t0 + g + 8 * r;
        if (t >= n_tok)
            continue;
        const float inv = 1.0f / l[r];
        float *row = out + ((size_t)t * a.n_heads + head) * D;
#pragma unroll
        for (int n = 0; n < DTILES; n++) {
            const int c = n * 8 + 2 * tq;
            const float v0 = o[n][2 * r] * inv, v1 = o[n][2 * r + 1] * inv;
            *reinterpret_cast<float2 *>(row + c) = make_float2(v0, v1);
            if (frag) {
                frag[fragment_index(t, head * D + c, dim / 16)] = __float2half_rn(v0);
                frag[fragment_index(t, head * D + c + 1, dim / 16)] = __float2half_rn(v1);
            }
        }
    }
}

bool cuda_flash_attention_fits(const cuda_attention_shape *a)
{
    return (a->head_dim == 16 || a->head_dim == 32 || a->head_dim == 64 || a->head_dim == 128) &&
           a->n_kv_heads > 0 && a->n_heads % a->n_kv_heads == 0;
}

cudaError_t cuda_flash_attention(const cuda_attention_shape *a, const float *q, int n_tok,
                                 int pos0, const cuda_kv *k_cache_bits, const cuda_kv *v_cache_bits, float *out,
                                 void *frag, cudaStream_t s)
{
    const __half *k_cache = reinterpret_cast<const __half *>(k_cache_bits);
    const __half *v_cache = reinterpret_cast<const __half *>(v_cache_bits);
    if (!cuda_flash_attention_fits(a) || n_tok < 1 ||
        (frag && (a->n_heads * a->head_dim) % CUDA_TILE_COLS))
        return cudaErrorInvalidValue;
    dim3 grid((unsigned)a->n_heads, (unsigned)((n_tok + FLASH_QUERIES - 1) / FLASH_QUERIES));
    __half *fh = (__half *)frag;
    switch (a->head_dim) {
    case 16: flash_kernel<16><<<grid, 32 * FLASH_WARPS, 0, s>>>(*a, q, n_tok, pos0, k_cache, v_cache, out, fh); break;
    case 32: flash_kernel<32><<<grid, 32 * FLASH_WARPS, 0, s>>>(*a, q, n_tok, pos0, k_cache, v_cache, out, fh); break;
    case 64: flash_kernel<64><<<grid, 32 * FLASH_WARPS, 0, s>>>(*a, q, n_tok, pos0, k_cache, v_cache, out, fh); break;
    default: flash_kernel<128><<<grid, 32 * FLASH_WARPS, 0, s>>>(*a, q, n_tok, pos0, k_cache, v_cache, out, fh); break;
    }
    return cudaGetLastError();
}
