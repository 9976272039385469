/* Weights in the tile layout, activations as float16 fragments, and the
 * matmul that multiplies them on the tensor cores (mma.m16n8k16, float32
 * accumulation).
 *
 * Why this layout: decoding reads every weight once per token, so the
 * kernel must stream the packed bits at the memory's speed and spend as few
 * instructions as possible turning them into numbers. In the tile layout a
 * lane's 128-bit load holds exactly the values its A fragments need, so
 * there is no shuffling; two values of one row sit 16 bits apart in a word,
 * so one AND/OR turns them into a half2 (the 0x6400 trick: the float16
 * 1024 + q), and two fused multiply-adds make them scale * q + bias
 * (dequant_pair). The same kernel multiplies 1 to 32 tokens: the weights
 * are read once whatever the count, which is what verifying k + 1 draft
 * tokens needs.
 *
 * Lane L (g = L / 4, t = L % 4) of the warp that handles 16 rows and one
 * 16-column step needs the pairs (row g, cols 2t, 2t+1), (row g+8, same),
 * (row g, cols 2t+8, 2t+9), (row g+8, same): pairs p = 0..3 of that step.
 * A 64-column block has 4 steps, 16 pairs per lane, stored in `bits` words
 * (16 / bits pairs per word, a pair's two values at bits slot*bits and
 * 16 + slot*bits), or 16 words of half2 for dense weights. */
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include "cuda_kernels.h"
#include "fragment_layout.cuh"
#include "launch_overlap.cuh"
#include "probes.cuh"

PROBES_DEFINE(cuda_matmul_probes)

#define THREADS 256
#define WARPS (THREADS / 32)

static __host__ __device__ inline int words_per_lane(int bits) { return bits == 16 ? 16 : bits; }
static __host__ __device__ inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

size_t cuda_matrix_tile_bytes(int rows, int cols, int bits)
{
    return (size_t)ceil_div(rows, CUDA_TILE_ROWS) * (size_t)ceil_div(cols, CUDA_TILE_COLS) * 32u *
           (size_t)words_per_lane(bits) * 4u;
}

size_t cuda_matrix_scale_bytes(int rows, int cols, int group_size)
{
    int padded = ceil_div(cols, CUDA_TILE_COLS) * CUDA_TILE_COLS;
    return (size_t)ceil_div(rows, CUDA_TILE_ROWS) * (size_t)ceil_div(padded, group_size) * 16u * 4u;
}

size_t cuda_fragment_bytes(int n_tok, int dim)
{
    return (size_t)ceil_div(n_tok, 8) * 8u * (size_t)ceil_div(dim, CUDA_TILE_COLS) *
           CUDA_TILE_COLS * 2u;
}

/* ---------------------------------------------------------------- repacking */

static __device__ inline float load_float(int dtype, const void *base, size_t i)
{
    switch (dtype) {
    case CUDA_F32: return ((const float *)base)[i];
    case CUDA_F16: return __half2float(((const __half *)base)[i]);
    default: return __bfloat162float(((const __nv_bfloat16 *)base)[i]);
    }
}

/* Row (within the tile) and first column (within the block) of pair ps of
 * lane's stream. */
static __device__ inline void pair_position(int lane, int ps, int *row, int *col)
{
    int s = ps >> 2, p = ps & 3;
    *row = (lane >> 2) + ((p & 1) ? 8 : 0);
    *col = s * 16 + 2 * (lane & 3) + ((p & 2) ? 8 : 0);
}

static __device__ inline uint32_t raw_quant(const cuda_raw_weight *w, int row, int col)
{
    if (row >= w->rows || col >= w->cols)
        return 0;
    size_t words_per_row = (size_t)w->cols * (size_t)w->bits / 32u;
    size_t bit = (size_t)col * (size_t)w->bits;
    uint32_t word = ((const uint32_t *)w->data)[(size_t)row * words_per_row + bit / 32u];
    return (word >> (bit % 32u)) & ((1u << w->bits) - 1u);
}

static __device__ inline uint32_t raw_half_bits(const cuda_raw_weight *w, int row, int col)
{
    if (row >= w->rows || col >= w->cols)
        return 0;
    float v = load_float(w->dtype, w->data, (size_t)row * (size_t)w->cols + (size_t)col);
    return __half_as_ushort(__float2half_rn(v));
}

static __global__ void repack_tiles(cuda_raw_weight w, cuda_matrix m, size_t n_words)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n_words)
        return;
    int wpl = words_per_lane(m.bits);
    int word = (int)(idx % (size_t)wpl);
    int lane = (int)(idx / (size_t)wpl % 32u);
    int kb = (int)(idx / ((size_t)wpl * 32u) % (size_t)m.n_kb);
    int tile = (int)(idx / ((size_t)wpl * 32u * (size_t)m.n_kb));
    uint32_t out = 0;
    if (m.bits == 16) {
        int r, c;
        pair_position(lane, word, &r, &c);
        int row = tile * 16 + r, col = kb * 64 + c;
        out = raw_half_bits(&w, row, col) | raw_half_bits(&w, row, col + 1) << 16;
    } else {
        int per_word = 16 / m.bits;
        for (int slot = 0; slot < per_word; slot++) {
            int r, c;
            pair_position(lane, word * per_word + slot, &r, &c);
            int row = tile * 16 + r, col = kb * 64 + c;
            out |= raw_quant(&w, row, col) << (slot * m.bits);
            out |= raw_quant(&w, row, col + 1) << (16 + slot * m.bits);
        }
    }
    m.tiles[idx] = out;
}

static __global__ void repack_scales(cuda_raw_weight w, cuda_matrix m, size_t n)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n)
        return;
    /* [tile][group][g][2]: rows g and g + 8 side by side, the two a lane
     * of group g needs, so that one 8-byte load brings both. */
    int r = (int)(idx % 16u);
    r = (r >> 1) + ((r & 1) ? 8 : 0);
    int group = (int)(idx / 16u % (size_t)m.n_groups);
    int tile = (int)(idx / (16u * (size_t)m.n_groups));
    int row = tile * 16 + r, raw_groups = w.cols / w.group_size;
    float scale = 0.0f, bias = 0.0f;
    if (row < w.rows && group < raw_groups) {
        size_t i = (size_t)row * (size_t)raw_groups + (size_t)group;
        scale = load_float(w.scale_dtype, w.scales, i);
        bias = load_float(w.scale_dtype, w.biases, i);
    }
    ((__half2 *)m.scale_bias)[idx] = __floats2half2_rn(scale, bias);
}

cudaError_t cuda_repack_weight(const cuda_raw_weight *raw, cuda_matrix *m, cudaStream_t s)
{
    m->rows = raw->rows;
    m->cols = raw->cols;
    m->bits = raw->bits ? raw->bits : 16;
    m->n_kb = ceil_div(raw->cols, CUDA_TILE_COLS);
    m->group_shift = 0;
    m->n_groups = 0;
    if (raw->bits) {
        while ((1 << m->group_shift) < raw->group_size)
            m->group_shift++;
        m->n_groups = ceil_div(m->n_kb * CUDA_TILE_COLS, raw->group_size);
    }
    size_t n_words = cuda_matrix_tile_bytes(raw->rows, raw->cols, m->bits) / 4u;
    repack_tiles<<<(unsigned)((n_words + 255) / 256), 256, 0, s>>>(*raw, *m, n_words);
    if (raw->bits) {
        size_t n = cuda_matrix_scale_bytes(raw->rows, raw->cols, raw->group_size) / 4u;
        repack_scales<<<(unsigned)((n + 255) / 256), 256, 0, s>>>(*raw, *m, n);
    }
    return cudaGetLastError();
}

/* ---------------------------------------------------------------- activations */


/* One block per token and 512 columns: each block sums the row's squares
 * itself (a few KB from L2), so that a single token's row is still spread
 * over many SMs. */
#define FRAGMENT_COLS 512
static_assert(FRAGMENT_COLS % THREADS == 0, "a thread takes whole columns of a block's share");
/* Squares a thread loads at once: the time of the sum is trips to L2, so
 * its loads go out together (on an H200, replayed from a graph, a
 * 4096-wide row took 4.0 us one load at a time and 1.6 batched, a
 * 14336-wide one 11.2 and 2.8). The sum keeps the order of the columns,
 * so the values are those of the plain loop. */
#define ROW_BATCH 16

static __global__ void to_fragments(const float *x, int n_tok, int dim, const float *norm,
                                    float eps, __half *frag)
{
    let_next_kernel_start();
    PROBE_BEGIN(true);
    int tok = blockIdx.x, c0 = blockIdx.y * FRAGMENT_COLS;
    int padded = ceil_div(dim, CUDA_TILE_COLS) * CUDA_TILE_COLS, n_steps = padded / 16;
    int c1 = min(padded, c0 + FRAGMENT_COLS);
    /* the thread's norm weights (constants of the model) while the kernel
     * before finishes */
    float weight[FRAGMENT_COLS / THREADS];
#pragma unroll
    for (int k = 0; k < FRAGMENT_COLS / THREADS; k++) {
        const int c = c0 + (int)threadIdx.x + k * THREADS;
        weight[k] = norm && c < dim ? norm[c] : 0.0f;
    }
    wait_for_previous_kernels();
    PROBE_MARK(true, 2);
    const float *row = x + (size_t)tok * (size_t)dim;
    float inv = 1.0f;
    if (norm && tok < n_tok) {
        __shared__ float partial[THREADS / 32];
        float ss = 0.0f;
        for (int b = threadIdx.x; b < dim; b += ROW_BATCH * THREADS) {
            float v[ROW_BATCH];
#pragma unroll
            for (int j = 0; j < ROW_BATCH; j++)
                v[j] = b + j * THREADS < dim ? row[b + j * THREADS] : 0.0f;
#pragma unroll
            for (int j = 0; j < ROW_BATCH; j++)
                if (b + j * THREADS < dim)
                    ss += v[j] * v[j];
        }
        for (int o = 16; o > 0; o >>= 1)
            ss += __shfl_xor_sync(0xffffffffu, ss, o);
        if ((threadIdx.x & 31) == 0)
            partial[threadIdx.x >> 5] = ss;
        __syncthreads();
        ss = 0.0f;
        for (int w = 0; w < THREADS / 32; w++)
            ss += partial[w];
        inv = 1.0f / sqrtf(ss / (float)dim + eps);
    }
#pragma unroll
    for (int k = 0; k < FRAGMENT_COLS / THREADS; k++) {
        const int c = c0 + (int)threadIdx.x + k * THREADS;
        if (c >= c1)
            break;
        float v = 0.0f;
        if (tok < n_tok && c < dim)
            v = norm ? (row[c] * inv) * weight[k] : row[c];
        frag[fragment_index(tok, c, n_steps)] = __float2half_rn(v);
    }
    PROBE_END(true, PROBE_FRAGMENTS);
}

cudaError_t cuda_to_fragments(const float *x, int n_tok, int dim, const float *norm, float eps,
                              void *frag, cudaStream_t s)
{
    int padded_tokens = ceil_div(n_tok, 8) * 8;
    dim3 grid((unsigned)padded_tokens, (unsigned)ceil_div(dim, FRAGMENT_COLS));
    return launch_overlapped(to_fragments, grid, dim3(THREADS), 0, s, x, n_tok, dim, norm, eps,
                             (__half *)frag);
}

/* ---------------------------------------------------------------- matmul */

/* Up to three matrices of the same input: end to end (the tiles of q, k
 * and v in one launch: tile_start says where each begins), or, for SwiGLU,
 * gate and up side by side (w[0], w[1]). split warps share a tile's
 * columns; a block of split * tiles_per_block warps takes tiles_per_block
 * tiles. */
typedef struct matmul_params {
    cuda_matrix w[3];
    const float *bias[3];
    float *y[3];
    int tile_start[3];
    int n_tiles;
    int split;
    int tiles_per_block;
    const uint2 *frag;
    int n_tok;
    int accumulate;
    float alpha;
    __half *frag_out;   /* not NULL: y also as fragments (frag_steps 16-column steps) */
    int frag_steps;
    int tok0;           /* the launch's first token in the whole pass */
} matmul_params;

static __device__ inline void mma_16816(float c[4], const uint32_t a[4], uint2 b)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b.x), "r"(b.y));
}

static __device__ inline uint32_t half2_bits(__half2 h)
{
    return *reinterpret_cast<uint32_t *>(&h);
}

static __device__ inline __half2 bits_half2(uint32_t u)
{
    return *reinterpret_cast<__half2 *>(&u);
}

/* (w & mask) | bits in one LOP3. Written out because the compiler, with
 * both constants as immediates, splits it into two instructions (seen in
 * the SASS): one instruction per pair of weights of the decode loop. */
template <uint32_t MASK, uint32_t BITS_SET>
static __device__ __forceinline__ uint32_t mask_set(uint32_t w)
{
    uint32_t u;
    asm("lop3.b32 %0, %1, %2, %3, 0xea;\n" : "=r"(u) : "r"(w), "n"(MASK), "n"(BITS_SET));
    return u;
}

/* The float16 pair (scale * q + bias) at pair slot PS of a lane's words.
 * Within a byte, masking the slot's bits in place and setting the
 * exponent of 1024 (one LOP3) gives the half 1024 + f q, f = 2^(bits * k)
 * for the k-th slot of the byte; one fma by (1/f, -1024/f), exact, gives q;
 * a second gives scale * q + bias. Slots of a word's upper byte come from
 * the word shifted by 8, once per word. */
template <int BITS, int PS>
static __device__ __forceinline__ uint32_t dequant_pair(const uint32_t *words, __half2 scale,
                                                        __half2 bias)
{
    constexpr int PER_WORD = 16 / BITS, PER_BYTE = 8 / BITS;
    constexpr int slot = PS % PER_WORD, k = slot % PER_BYTE, e = k * BITS;
    constexpr uint32_t mask = (((1u << BITS) - 1u) << e) * 0x10001u;
    uint32_t w = words[PS / PER_WORD];
    if constexpr (slot >= PER_BYTE)
        w >>= 8;
    const uint32_t u = mask_set<mask, 0x64006400u>(w);
    /* float16 bits of 1/f = 2^-e and of -1024/f = -2^(10-e) */
    constexpr uint32_t inv = (uint32_t)(15 - e) << 10, off = 0x8000u | (uint32_t)(25 - e) << 10;
    __half2 q = __hfma2(bits_half2(u), bits_half2(inv | inv << 16), bits_half2(off | off << 16));
    return half2_bits(__hfma2(q, scale, bias));
}

/* The four A registers of 16-column step S from a lane's words; sb holds
 * (scale, bias) of rows g and g + 8 for the step's group (groups of 32:
 * sb[0] for steps 0-1, sb[1] for steps 2-3). */
template <int BITS, bool GS32, int S>
static __device__ __forceinline__ void a_fragment(const uint32_t *words, const uint2 *sb,
                                                  uint32_t a[4])
{
    if constexpr (BITS == 16) {
#pragma unroll
        for (int p = 0; p < 4; p++)
            a[p] = words[S * 4 + p];
    } else {
        const uint2 v = sb[GS32 ? S >> 1 : 0];
        const __half2 lo = bits_half2(v.x), hi = bits_half2(v.y);
        const __half2 scale[2] = { __low2half2(lo), __low2half2(hi) };
        const __half2 bias[2] = { __high2half2(lo), __high2half2(hi) };
        a[0] = dequant_pair<BITS, S * 4 + 0>(words, scale[0], bias[0]);
        a[1] = dequant_pair<BITS, S * 4 + 1>(words, scale[1], bias[1]);
        a[2] = dequant_pair<BITS, S * 4 + 2>(words, scale[0], bias[0]);
        a[3] = dequant_pair<BITS, S * 4 + 3>(words, scale[1], bias[1]);
    }
}

/* What one warp streams: its tile of each matrix and its range of 64-column
 * blocks. The loop keeps pointers that move by a constant per chunk, and
 * each block of a chunk sits at a constant offset from them, so that the
 * addresses cost an add per chunk instead of 64-bit multiplies per block
 * (the SASS of the decode loop had a quarter of its instructions in
 * address arithmetic). */
template <int NM>
struct warp_stream {
    const uint8_t *words[NM];    /* the lane's bytes of the next chunk to copy */
    const uint8_t *scales[NM];   /* the lane's (rows g, g + 8) pair of group 0 */
    int shift[NM];
    const uint8_t *act;          /* staged tokens: the lane's first piece of the next chunk's activations */
    int act_block;               /* one token: the block of the chunk that piece belongs to (U: none) */
    bool act_lane;               /* up to 8: whether the lane copies (its piece of a step holds a token's) */
    int act_read;                /* byte offset of the lane's fragment in a step's staged activations */
    int kb_lo, kb_hi;
};

/* The pipeline: each warp copies its next chunks of weights (and their
 * group parameters) from memory into its own ring of STAGES slots of shared
 * memory with cp.async, which needs no registers while the bytes are on
 * their way, so that STAGES - 1 chunks are in flight while one is
 * computed. A lane copies exactly the weights it later reads; a group's
 * parameters are copied once, by lane 4g for the four lanes of row pair
 * g (they took a third of the ring when every lane copied its own), so
 * the warp synchronizes once per chunk. */
/* The tuning constants can be set at build time (meson -Dnvcc_flags=...,
 * tests/cuda/device/stage.sh --variant) so that one call of a GPU machine
 * times several settings side by side. */
#ifndef ALM_MATMUL_STAGES
#define ALM_MATMUL_STAGES 3
#endif
#define STAGES ALM_MATMUL_STAGES
static_assert(STAGES >= 2, "the pipeline needs a chunk in flight while one is computed");
/* warps per SM for up to 8 tokens, in blocks of WARPS: 24 warps (3 stages
 * of 3 KB per warp leave room for three such blocks; measured with ncu: at
 * 2 blocks, 16 warps, the schedulers found an eligible warp only half of
 * the time) */
#ifndef ALM_MATMUL_DECODE_BLOCKS
#define ALM_MATMUL_DECODE_BLOCKS 3
#endif
#define DECODE_BLOCKS ALM_MATMUL_DECODE_BLOCKS
/* Warps an SM holds for up to 8 tokens (registers and shared memory are
 * sized for them), and the most a block has: a tile's warps share their
 * sums through the block's shared memory, so a split of up to 12 needs
 * blocks of up to 12 warps (2 an SM). */
#define SM_WARPS (DECODE_BLOCKS * WARPS)
#ifndef ALM_MATMUL_MAX_BLOCK_WARPS
#define ALM_MATMUL_MAX_BLOCK_WARPS 12
#endif
#define MAX_WARPS ALM_MATMUL_MAX_BLOCK_WARPS
static_assert(SM_WARPS % MAX_WARPS == 0, "whole blocks fill an SM");
/* Up to this many tokens (0, 1 or 8), the activations travel in the ring
 * with the weights, so that a warp never waits on them (as loads of their
 * own, each chunk waited a trip to L2: the profile's L1TEX stalls). One
 * token takes 32 bytes a 16-column step; up to 8 (verifying draft tokens)
 * take 256, so their chunks hold one block and the ring one stage more.
 * On the H100, 8 made SwiGLU (gate+up) at 5 tokens faster (34.2 -> 25.6
 * us) but q_proj and down slower (5.8 -> 7.9, 16.7 -> 23.3 us): their
 * chunks would otherwise hold 4 blocks, SwiGLU's (two matrices) 2. Hence
 * a setting for each. */
#ifndef ALM_MATMUL_STAGE_TOKENS
#define ALM_MATMUL_STAGE_TOKENS 1
#endif
#ifndef ALM_MATMUL_STAGE_TOKENS_SWIGLU
#define ALM_MATMUL_STAGE_TOKENS_SWIGLU 8
#endif
#define STAGE_TOKENS ALM_MATMUL_STAGE_TOKENS
static_assert(STAGE_TOKENS == 0 || STAGE_TOKENS == 1 || STAGE_TOKENS == 8, "tokens staged: 0, 1 or 8");
static_assert(ALM_MATMUL_STAGE_TOKENS_SWIGLU == 0 || ALM_MATMUL_STAGE_TOKENS_SWIGLU == 1 ||
              ALM_MATMUL_STAGE_TOKENS_SWIGLU == 8, "tokens staged: 0, 1 or 8");
template <bool SWIGLU>
static constexpr int staged_tokens() { return SWIGLU ? ALM_MATMUL_STAGE_TOKENS_SWIGLU : STAGE_TOKENS; }
/* weight bytes per lane in one chunk of the pipeline, over all matrices */
#ifndef ALM_MATMUL_CHUNK_LANE_BYTES
#define ALM_MATMUL_CHUNK_LANE_BYTES 64
#endif

template <int BITS, int NM, bool GS32, int TOKS>
struct pipe_shape {
    static constexpr int WPL = BITS == 16 ? 16 : BITS;
    static constexpr int SBN = GS32 ? 2 : 1;
    /* blocks per chunk: ALM_MATMUL_CHUNK_LANE_BYTES of weights per lane over
     * all matrices, at least one block, at most 4 */
    static constexpr int U0 = ALM_MATMUL_CHUNK_LANE_BYTES / (WPL * 4 * NM) > 0
                                  ? ALM_MATMUL_CHUNK_LANE_BYTES / (WPL * 4 * NM) : 1;
    static constexpr int U = TOKS == 8 ? 1 : U0 > 4 ? 4 : U0;
    static constexpr int LANE_BYTES = WPL * 4;                    /* one block, one matrix */
    static constexpr int BLOCK_BYTES = 32 * LANE_BYTES;           /* the next block of a tile */
    static constexpr int PIECE = LANE_BYTES < 16 ? LANE_BYTES : 16;
    static constexpr int PIECES = LANE_BYTES / PIECE;
    static constexpr int WORD_BYTES = NM * U * 32 * LANE_BYTES;   /* one chunk's weights */
    /* a group's (scale, bias) of the tile's 16 rows: 64 bytes, copied once
     * (lanes 4g .. 4g + 3 all read row pair g's 8 bytes) */
    static constexpr int SCALE_BYTES = BITS == 16 ? 0 : NM * U * SBN * 64;
    /* staged tokens: their activations of the chunk's steps, a step as
     * the fragments hold it (8 tokens: 256 bytes) or token 0's 32 */
    static constexpr int STEP_ACT = TOKS * 32;
    static constexpr int ACT_BYTES = U * 4 * STEP_ACT;
    static constexpr int SLOT_BYTES = WORD_BYTES + SCALE_BYTES + ACT_BYTES;
    /* up to 8 staged tokens: a stage more where three blocks still fit an
     * SM (228 KB, 1 KB of it reserved per block); where not even the usual
     * stages fit, those tokens take the loads (FITS false) */
    static constexpr int THIRD_OF_SM = (228 * 1024 - 3 * 1024) / 3;
    static constexpr int STAGES_ = TOKS == 8 && WARPS * (STAGES + 1) * SLOT_BYTES <= THIRD_OF_SM
                                       ? STAGES + 1 : STAGES;
    static constexpr bool FITS = TOKS != 8 || WARPS * STAGES_ * SLOT_BYTES <= THIRD_OF_SM;
    static constexpr int WARP_BYTES = STAGES_ * SLOT_BYTES;
};

/* 16 bytes that fill whole 32-byte sectors across the warp (lanes side by
 * side) bypass L1; smaller or strided pieces go through it, so that the
 * sector a piece shares with the next is fetched once. */
static __device__ __forceinline__ void cp_async(uint32_t dst, const void *src, int bytes, bool whole)
{
    if (bytes == 16 && whole)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
    else if (bytes == 16)
        asm volatile("cp.async.ca.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(dst), "l"(src));
}

static __device__ __forceinline__ void cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}

template <int N>
static __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/* Starts copying the chunk of blocks kb0 .. kb0 + U - 1 (those in the
 * warp's range; st.words points at kb0's) into slot (byte offset of the
 * warp's slot), then moves st.words to the next chunk. Weights sit in
 * 16-byte pieces with the 32 lanes side by side (no bank conflicts), group
 * parameters as 64 bytes per block and matrix (8 bytes per row pair). */
template <int BITS, int NM, bool GS32, int TOKS>
static __device__ __forceinline__ void issue_chunk(warp_stream<NM> &st, int kb0, uint32_t slot,
                                                   int lane)
{
    using P = pipe_shape<BITS, NM, GS32, TOKS>;
#pragma unroll
    for (int u = 0; u < P::U; u++) {
        if (u > 0 && kb0 + u >= st.kb_hi)
            break;
#pragma unroll
        for (int m = 0; m < NM; m++) {
            const uint8_t *src = st.words[m] + u * P::BLOCK_BYTES;
#pragma unroll
            for (int i = 0; i < P::PIECES; i++)
                cp_async(slot + (uint32_t)((((m * P::U + u) * P::PIECES + i) * 32 + lane) * P::PIECE),
                         src + i * P::PIECE, P::PIECE, P::PIECES == 1);
            if (BITS != 16 && (lane & 3) == 0) {
                /* a group's 16 rows take 64 bytes: row pair g's 8 from lane 4g */
                const uint32_t group = (uint32_t)(((kb0 + u) * 64) >> st.shift[m]);
                const uint8_t *sp = st.scales[m] + group * 64u;
                const uint32_t s0 = slot + P::WORD_BYTES + (uint32_t)(((m * P::U + u) * P::SBN) * 64 + (lane >> 2) * 8);
                cp_async(s0, sp, 8, false);
                if (GS32)
                    cp_async(s0 + 64, sp + 64, 8, false);
            }
        }
    }
#pragma unroll
    for (int m = 0; m < NM; m++)
        st.words[m] += P::U * P::BLOCK_BYTES;
}

/* Staged tokens: starts copying the activations of the chunk kb0 .. into
 * slot in 16-byte pieces (cached in L1: the warps of an SM share them).
 * One token: a step's 32 bytes by lanes 2s and 2s + 1; up to 8: the
 * chunk's one block, lanes 16h + i copying piece i of steps h and h + 2
 * where piece i holds a token's. Apart from issue_chunk because they come
 * from the kernel before, which the weights do not. */
template <int BITS, int NM, bool GS32, int TOKS>
static __device__ __forceinline__ void issue_activations(warp_stream<NM> &st, int kb0, uint32_t slot,
                                                         int lane)
{
    using P = pipe_shape<BITS, NM, GS32, TOKS>;
    const uint32_t at = slot + (uint32_t)(P::WORD_BYTES + P::SCALE_BYTES);
    if (TOKS == 1 && st.act_block < P::U && kb0 + st.act_block < st.kb_hi)
        cp_async(at + (uint32_t)(lane * 16), st.act, 16, false);
    if (TOKS == 8 && st.act_lane) {
        const uint32_t d = (uint32_t)((lane >> 4) * 256 + (lane & 15) * 16);
        cp_async(at + d, st.act, 16, false);
        cp_async(at + d + 512, st.act + 512, 16, false);
    }
    if (TOKS)
        st.act += P::U * 1024;
}

/* One 16-column step S of a block: its A fragment times the NT8 token
 * fragments. */
template <int BITS, int NT8, int NM, bool GS32, int S>
static __device__ __forceinline__ void step(const uint32_t *w, const uint2 *sb, const uint2 (&b)[NT8],
                                            float (&acc)[NT8][4])
{
    uint32_t a[4];
    a_fragment<BITS, GS32, S>(w, sb, a);
#pragma unroll
    for (int j = 0; j < NT8; j++)
        mma_16816(acc[j], a, b[j]);
}

/* Multiplies the chunk of blocks kb0 .. (in the warp's range, below kb_hi)
 * in slot (generic pointer) with the activations; frag[j] points at the
 * lane's fragment of 8-token group j at block kb0. */
template <int BITS, int NT8, int NM, bool GS32, int TOKS>
static __device__ __forceinline__ void compute_chunk(int kb0, int kb_hi, const uint8_t *slot,
                                                     const uint2 *const (&frag)[NT8], int act_read,
                                                     int lane, float (&acc)[NM][NT8][4])
{
    using P = pipe_shape<BITS, NM, GS32, TOKS>;
    /* Staged tokens: the activations came with the weights; otherwise up
     * to 8 tokens: every block's at once, so that their loads overlap;
     * more: block by block (registers). */
    constexpr int NB = NT8 == 1 && !TOKS ? P::U : 1;
    uint2 b[NB][4][NT8];
#pragma unroll
    for (int u = 0; u < P::U; u++) {
        if (u > 0 && kb0 + u >= kb_hi)
            break;
        if (NB == 1 || u == 0) {
#pragma unroll
            for (int v = 0; v < NB; v++) {
                const int bu = NB == 1 ? u : v;
                if (v > 0 && kb0 + v >= kb_hi)
                    break;
#pragma unroll
                for (int s = 0; s < 4; s++)
#pragma unroll
                    for (int j = 0; j < NT8; j++)
                        b[v][s][j] = TOKS ? *reinterpret_cast<const uint2 *>(
                                                slot + P::WORD_BYTES + P::SCALE_BYTES + (bu * 4 + s) * P::STEP_ACT + act_read)
                                          : __ldg(frag[j] + (bu * 4 + s) * 32);
            }
        }
#pragma unroll
        for (int m = 0; m < NM; m++) {
            uint32_t w[P::WPL];
#pragma unroll
            for (int i = 0; i < P::PIECES; i++) {
                const uint8_t *at = slot + (((m * P::U + u) * P::PIECES + i) * 32 + lane) * P::PIECE;
                if (P::PIECE == 16) {
                    uint4 v = *reinterpret_cast<const uint4 *>(at);
                    w[4 * i] = v.x;
                    w[4 * i + 1] = v.y;
                    w[4 * i + 2] = v.z;
                    w[4 * i + 3] = v.w;
                } else {
                    uint2 v = *reinterpret_cast<const uint2 *>(at);
                    w[2 * i] = v.x;
                    w[2 * i + 1] = v.y;
                }
            }
            uint2 sb[P::SBN];
            if (BITS != 16) {
                const uint2 *s = reinterpret_cast<const uint2 *>(slot + P::WORD_BYTES) + ((m * P::U + u) * P::SBN) * 8 + (lane >> 2);
                sb[0] = s[0];
                if (GS32)
                    sb[GS32 ? 1 : 0] = s[8];
            }
            step<BITS, NT8, NM, GS32, 0>(w, sb, b[NB == 1 ? 0 : u][0], acc[m]);
            step<BITS, NT8, NM, GS32, 1>(w, sb, b[NB == 1 ? 0 : u][1], acc[m]);
            step<BITS, NT8, NM, GS32, 2>(w, sb, b[NB == 1 ? 0 : u][2], acc[m]);
            step<BITS, NT8, NM, GS32, 3>(w, sb, b[NB == 1 ? 0 : u][3], acc[m]);
        }
    }
}

/* Each warp streams one tile's columns kb_lo .. kb_hi - 1 (a 1/split share)
 * through its pipeline. The split warps of a tile add their sums through
 * shared memory at the end, in a fixed order. A token's result depends only
 * on the matrix (split comes from its shape), never on the tokens beside
 * it. */
/* What the compiler sizes a kernel's registers for (__launch_bounds__):
 * up to 8 tokens, SM_WARPS warps an SM in blocks of up to MAX_WARPS; more
 * tokens, a block of up to WARPS warps (their accumulators take registers),
 * or a wide block of up to MAX_WARPS, two an SM where the registers allow
 * (without SwiGLU: as one block of 12 warps alone on its SM, down at 32
 * tokens took 30.3 us against 24.5 in blocks of 8; and capping blocks of 8
 * the same way made q_proj at 32 tokens slower, 8.1 -> 9.1 us). */
enum { FOR_DECODE, FOR_MANY, FOR_MANY_WIDE };

template <int FOR>
static constexpr int bound_threads() { return FOR == FOR_MANY ? WARPS * 32 : MAX_WARPS * 32; }

template <int FOR, bool SWIGLU>
static constexpr int bound_blocks()
{
    return FOR == FOR_DECODE ? SM_WARPS / MAX_WARPS : FOR == FOR_MANY_WIDE && !SWIGLU ? 2 : 1;
}

/* Element e of a block's results: its matrix (sel), row and token, and
 * where it goes (NULL: past the rows or tokens, nothing to store). */
struct out_element {
    float *out;
    int tl, r, sel, row, tok;
};

template <bool SWIGLU, int NT8>
static __device__ __forceinline__ out_element epilogue_element(const matmul_params &p, int e)
{
    out_element o = {};
    o.tl = e / (NT8 * 128);
    o.r = e % (NT8 * 128);
    const int t = blockIdx.x * p.tiles_per_block + o.tl;
    if (e >= p.tiles_per_block * NT8 * 128 || t >= p.n_tiles)
        return o;
    if (!SWIGLU)
        o.sel = t >= p.tile_start[2] ? 2 : t >= p.tile_start[1] ? 1 : 0;
    const int j = o.r >> 7, i = (o.r >> 5) & 3, ln = o.r & 31;
    o.row = (t - p.tile_start[o.sel]) * 16 + (ln >> 2) + ((i & 2) ? 8 : 0);
    o.tok = j * 8 + (ln & 3) * 2 + (i & 1);
    const int rows = p.w[o.sel].rows;
    if (o.row < rows && o.tok < p.n_tok)
        o.out = p.y[o.sel] + (size_t)o.tok * (size_t)rows + (size_t)o.row;
    return o;
}

/* Accumulating into y: the value a thread's first result adds to, loaded
 * as soon as the kernels before are done, so that the epilogue does not
 * wait a trip to L2 for it. */
template <bool SWIGLU, int NT8>
static __device__ __forceinline__ float value_before(const matmul_params &p)
{
    if (!p.accumulate)
        return 0.0f;
    const out_element o = epilogue_element<SWIGLU, NT8>(p, (int)threadIdx.x);
    return o.out ? *o.out : 0.0f;
}

template <int BITS, int NT8, bool SWIGLU, bool GS32, int FOR, int TOKS>
static __global__ void __launch_bounds__(bound_threads<FOR>(), (bound_blocks<FOR, SWIGLU>()))
matmul_kernel(matmul_params p)
{
    constexpr int NM = SWIGLU ? 2 : 1;
    static_assert(!TOKS || NT8 == 1, "staged tokens are a case of up to 8");
    using P = pipe_shape<BITS, NM, GS32, TOKS>;
    extern __shared__ __align__(16) uint8_t smem[];

    let_next_kernel_start();
    /* probed: the accumulating matmuls (the o projection: 64 column
     * blocks or fewer; else down) and the SwiGLU */
    [[maybe_unused]] const bool probed = SWIGLU || p.accumulate;
    PROBE_BEGIN(probed);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2;
    const int split = p.split, per_block = p.tiles_per_block;
    const int tile = blockIdx.x * per_block + warp / split, part = warp % split;
    const bool has_tile = tile < p.n_tiles;

    float before = 0.0f;   /* value_before */
    float acc[NM][NT8][4];
#pragma unroll
    for (int m = 0; m < NM; m++)
#pragma unroll
        for (int j = 0; j < NT8; j++)
            acc[m][j][0] = acc[m][j][1] = acc[m][j][2] = acc[m][j][3] = 0.0f;

    warp_stream<NM> st;
    const uint2 *frag[NT8];
    uint8_t *ring = smem + (size_t)warp * P::WARP_BYTES;
    const uint32_t ring_addr = (uint32_t)__cvta_generic_to_shared(ring);
    int n_chunks = 0;
    if (has_tile) {
        int sel = 0;
        if (!SWIGLU)
            sel = tile >= p.tile_start[2] ? 2 : tile >= p.tile_start[1] ? 1 : 0;
        const int local = tile - p.tile_start[sel];
        const int n_kb = p.w[sel].n_kb, n_steps = n_kb * 4;
        st.kb_lo = part * n_kb / split;
        st.kb_hi = (part + 1) * n_kb / split;
#pragma unroll
        for (int m = 0; m < NM; m++) {
            const cuda_matrix &wm = p.w[SWIGLU ? m : sel];
            st.words[m] = (const uint8_t *)(wm.tiles + (((size_t)local * (size_t)n_kb + (size_t)st.kb_lo) * 32u +
                                                        (size_t)lane) * P::WPL);
            st.scales[m] = (const uint8_t *)((const uint2 *)wm.scale_bias + (size_t)local * (size_t)wm.n_groups * 8u + g);
            st.shift[m] = wm.group_shift;
        }
        /* The lane's activations: a lane whose token is past the count
         * reads the first token's (the same sectors as lanes 0-3, so no
         * extra traffic and no predicate); its products land in columns
         * of the result that are never stored. */
#pragma unroll
        for (int j = 0; j < NT8; j++)
            frag[j] = p.frag + (size_t)st.kb_lo * 128u +
                      (j * 8 + g < p.n_tok ? (size_t)j * (size_t)n_steps * 32u + (size_t)lane : (size_t)(lane & 3));
        /* staged tokens (issue_activations): where the lane's pieces come
         * from and where it reads its fragment */
        st.act = reinterpret_cast<const uint8_t *>(p.frag + (size_t)st.kb_lo * 128u) +
                 (TOKS == 1 ? (lane >> 1) * 256 + (lane & 1) * 16 : (lane >> 4) * 256 + (lane & 15) * 16);
        st.act_block = lane >> 3;
        st.act_lane = (lane & 15) < 2 * p.n_tok;
        st.act_read = TOKS == 1 || g >= p.n_tok ? (lane & 3) * 8 : lane * 8;

        n_chunks = (st.kb_hi - st.kb_lo + P::U - 1) / P::U;
        /* The first chunks' weights while the kernel before finishes, then
         * (once it has) their activations, a commit per chunk: the first
         * group holds every early chunk's weights and chunk 0's
         * activations, so the count of groups in flight is as before. */
#pragma unroll
        for (int c = 0; c < P::STAGES_ - 1; c++)
            if (c < n_chunks)
                issue_chunk<BITS, NM, GS32, TOKS>(st, st.kb_lo + c * P::U, ring_addr + c * P::SLOT_BYTES, lane);
    }
    PROBE_MARK(probed, 1);
    wait_for_previous_kernels();
    PROBE_MARK(probed, 2);
    before = value_before<SWIGLU, NT8>(p);
    if (has_tile) {
#pragma unroll
        for (int c = 0; c < P::STAGES_ - 1; c++) {
            if (c < n_chunks)
                issue_activations<BITS, NM, GS32, TOKS>(st, st.kb_lo + c * P::U, ring_addr + c * P::SLOT_BYTES, lane);
            cp_async_commit();
        }
        /* byte offsets in the ring of the chunk computed and the one copied */
        uint32_t compute_at = 0, issue_at = (P::STAGES_ - 1) * P::SLOT_BYTES;
        for (int kb = st.kb_lo; kb < st.kb_hi; kb += P::U) {
            cp_async_wait<P::STAGES_ - 2>();   /* chunk kb has landed */
            if (kb == st.kb_lo)
                PROBE_MARK(probed, 3);
            /* ... the group parameters too, which lane 4g copied for lanes
             * 4g .. 4g + 3; and every lane is done with the slot that
             * issue_chunk now refills */
            __syncwarp();
            const int next = kb + (P::STAGES_ - 1) * P::U;
            if (next < st.kb_hi) {
                issue_chunk<BITS, NM, GS32, TOKS>(st, next, ring_addr + issue_at, lane);
                issue_activations<BITS, NM, GS32, TOKS>(st, next, ring_addr + issue_at, lane);
            }
            cp_async_commit();
            compute_chunk<BITS, NT8, NM, GS32, TOKS>(kb, st.kb_hi, ring + compute_at, frag, st.act_read, lane, acc);
#pragma unroll
            for (int j = 0; j < NT8; j++)
                frag[j] += P::U * 128;
            compute_at = compute_at == (P::STAGES_ - 1) * P::SLOT_BYTES ? 0 : compute_at + P::SLOT_BYTES;
            issue_at = issue_at == (P::STAGES_ - 1) * P::SLOT_BYTES ? 0 : issue_at + P::SLOT_BYTES;
        }
        cp_async_wait<0>();
    }
    PROBE_MARK(probed, 4);
    __syncthreads();   /* the rings become the reduction buffer */
    PROBE_MARK(probed, 5);

    float (*reduce)[NM * NT8 * 128] = reinterpret_cast<float (*)[NM * NT8 * 128]>(smem);
#pragma unroll
    for (int m = 0; m < NM; m++)
#pragma unroll
        for (int j = 0; j < NT8; j++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                reduce[warp][(m * NT8 + j) * 128 + i * 32 + lane] = acc[m][j][i];
    __syncthreads();

    for (int e = threadIdx.x; e < per_block * NT8 * 128; e += blockDim.x) {
        const out_element o = epilogue_element<SWIGLU, NT8>(p, e);
        if (!o.out)
            continue;
        const int tl = o.tl, r = o.r, row = o.row, tok = o.tok, sel = o.sel;
        float v = 0.0f;
        for (int w = tl * split; w < (tl + 1) * split; w++)
            v += reduce[w][r];
        if (p.bias[sel])
            v += p.bias[sel][row];
        if (SWIGLU) {
            float u = 0.0f;
            for (int w = tl * split; w < (tl + 1) * split; w++)
                u += reduce[w][NT8 * 128 + r];
            if (p.bias[1])
                u += p.bias[1][row];
            v = v / (1.0f + expf(-v)) * u;
        }
        float *out = o.out;
        *out = p.accumulate ? (e == (int)threadIdx.x ? before : *out) + p.alpha * v : p.alpha * v;
        if (p.frag_out)
            p.frag_out[fragment_index(p.tok0 + tok, row, p.frag_steps)] = __float2half_rn(*out);
    }
    PROBE_END(probed, SWIGLU ? PROBE_SWIGLU : p.w[0].n_kb <= 64 ? PROBE_O_PROJ : PROBE_DOWN);
}

/* Dynamic shared memory of a block of warps warps: their rings (which
 * then hold the reduction). */
template <int BITS, int NT8, bool SWIGLU, bool GS32, int TOKS>
static constexpr int block_smem(int warps)
{
    constexpr int NM = SWIGLU ? 2 : 1;
    constexpr int ring = pipe_shape<BITS, NM, GS32, TOKS>::WARP_BYTES;
    constexpr int reduce = NM * NT8 * 128 * 4;
    return warps * (ring > reduce ? ring : reduce);
}

template <int BITS, int NT8, bool SWIGLU, bool GS32, int FOR, int TOKS = 0>
static cudaError_t launch_one(const matmul_params *p, unsigned blocks, cudaStream_t s)
{
    const int warps = p->split * p->tiles_per_block;
    return launch_overlapped(matmul_kernel<BITS, NT8, SWIGLU, GS32, FOR, TOKS>, dim3(blocks),
                             dim3((unsigned)(warps * 32)),
                             (size_t)block_smem<BITS, NT8, SWIGLU, GS32, TOKS>(warps), s, *p);
}

template <int BITS, int NT8, bool SWIGLU, bool GS32, int FOR, int TOKS = 0>
static cudaError_t allow_smem()
{
    return cudaFuncSetAttribute(matmul_kernel<BITS, NT8, SWIGLU, GS32, FOR, TOKS>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                block_smem<BITS, NT8, SWIGLU, GS32, TOKS>(bound_threads<FOR>() / 32));
}

/* Up to 8 tokens (decoding, verifying): SM_WARPS warps an SM, so that
 * more weight loads are in flight; more tokens: fewer (bound_blocks). */
template <int BITS, bool SWIGLU, bool GS32>
static cudaError_t for_token_counts(const matmul_params *p, unsigned blocks, cudaStream_t s)
{
    constexpr int STAGED = staged_tokens<SWIGLU>();
    if (!p) {
        cudaError_t e = allow_smem<BITS, 1, SWIGLU, GS32, FOR_DECODE>();
        if (e == cudaSuccess && STAGED >= 1)
            e = allow_smem<BITS, 1, SWIGLU, GS32, FOR_DECODE, 1>();
        if constexpr (STAGED == 8 && pipe_shape<BITS, SWIGLU ? 2 : 1, GS32, 8>::FITS)
            if (e == cudaSuccess)
                e = allow_smem<BITS, 1, SWIGLU, GS32, FOR_DECODE, 8>();
        if (e == cudaSuccess)
            e = allow_smem<BITS, 2, SWIGLU, GS32, FOR_MANY>();
        if (e == cudaSuccess)
            e = allow_smem<BITS, 4, SWIGLU, GS32, FOR_MANY>();
        if (e == cudaSuccess)
            e = allow_smem<BITS, 2, SWIGLU, GS32, FOR_MANY_WIDE>();
        if (e == cudaSuccess)
            e = allow_smem<BITS, 4, SWIGLU, GS32, FOR_MANY_WIDE>();
        return e;
    }
    if (p->n_tok == 1 && STAGED >= 1)
        return launch_one<BITS, 1, SWIGLU, GS32, FOR_DECODE, 1>(p, blocks, s);
    if constexpr (STAGED == 8 && pipe_shape<BITS, SWIGLU ? 2 : 1, GS32, 8>::FITS)
        if (p->n_tok <= 8)
            return launch_one<BITS, 1, SWIGLU, GS32, FOR_DECODE, 8>(p, blocks, s);
    if (p->n_tok <= 8)
        return launch_one<BITS, 1, SWIGLU, GS32, FOR_DECODE>(p, blocks, s);
    const bool wide = p->split * p->tiles_per_block > WARPS;
    if (p->n_tok <= 16)
        return wide ? launch_one<BITS, 2, SWIGLU, GS32, FOR_MANY_WIDE>(p, blocks, s)
                    : launch_one<BITS, 2, SWIGLU, GS32, FOR_MANY>(p, blocks, s);
    return wide ? launch_one<BITS, 4, SWIGLU, GS32, FOR_MANY_WIDE>(p, blocks, s)
                : launch_one<BITS, 4, SWIGLU, GS32, FOR_MANY>(p, blocks, s);
}

/* Launches the kernel for p's format (p NULL: allows every variant its
 * shared memory, once per process). */
template <bool SWIGLU>
static cudaError_t for_formats(const matmul_params *p, int bits, bool gs32, unsigned blocks,
                               cudaStream_t s)
{
    switch (bits) {
    case 2: return gs32 ? for_token_counts<2, SWIGLU, true>(p, blocks, s) : for_token_counts<2, SWIGLU, false>(p, blocks, s);
    case 4: return gs32 ? for_token_counts<4, SWIGLU, true>(p, blocks, s) : for_token_counts<4, SWIGLU, false>(p, blocks, s);
    case 8: return gs32 ? for_token_counts<8, SWIGLU, true>(p, blocks, s) : for_token_counts<8, SWIGLU, false>(p, blocks, s);
    case 16: return for_token_counts<16, SWIGLU, false>(p, blocks, s);
    default: return cudaErrorInvalidValue;
    }
}

cudaError_t cuda_matmul_setup(void)
{
    static const int formats[] = { 2, 4, 8 };
    cudaError_t e = cudaSuccess;
    for (int i = 0; i < 3 && e == cudaSuccess; i++)
        for (int gs32 = 0; gs32 < 2 && e == cudaSuccess; gs32++) {
            e = for_formats<false>(NULL, formats[i], gs32, 0, 0);
            if (e == cudaSuccess)
                e = for_formats<true>(NULL, formats[i], gs32, 0, 0);
        }
    if (e == cudaSuccess)
        e = for_formats<false>(NULL, 16, false, 0, 0);
    if (e == cudaSuccess)
        e = for_formats<true>(NULL, 16, false, 0, 0);
    return e;
}

template <bool SWIGLU>
static cudaError_t launch_bits(const matmul_params *p, unsigned blocks, cudaStream_t s)
{
    bool gs32 = p->w[0].bits != 16 && p->w[0].group_shift < 6;
    return for_formats<SWIGLU>(p, p->w[0].bits, gs32, blocks, s);
}

typedef struct matmul_shape {
    int split;             /* warps a tile */
    int tiles_per_block;
} matmul_shape;

/* Warps per tile and tiles per block. A decode step's matmuls take one or
 * two waves of warps, so the warps left idle in the last wave are lost
 * bandwidth: a split is scored by the share of the waves' warp slots it
 * fills (the GPU holds SM_WARPS warps an SM), the fewest warps winning a
 * tie, so that long matrices stream long runs of columns per warp.
 * Matrices of more tiles than a wave holds keep one warp a tile. Splits
 * other than 1, 2, 4 and 8 (3, 6, 12) only where each warp still streams 8
 * blocks of columns: on the H100 a 12-way split took llama3-8b's down
 * (4096 x 14336, 256 tiles) from 16.5 to 14.0 us, but q_proj (4096
 * columns) got slower, and splits of 3 and 6 of matrices a few hundred
 * columns wide made the small models slower (the coder pair 5-9%, each
 * warp had 2 or 3 blocks of columns). Blocks are of split *
 * tiles_per_block warps, a divisor of SM_WARPS so that whole blocks fill
 * an SM, and at most WARPS where the split allows: smaller blocks leave a
 * smaller last wave (llama3-70b's gate+up: 95.1 us in blocks of 12 warps,
 * 91.2-91.7 in blocks of 6, and the 70B step 16.86 against 16.40 ms).
 * Depends on the shape only (never on the tokens), so a token's sums are
 * added in the same order in every pass. */
static matmul_shape choose_shape(int tiles, int n_kb)
{
    int device = 0, sms = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms < 1)
        sms = 132;
    const long wave = (long)SM_WARPS * sms;
    matmul_shape best = { 1, 1 };
    double best_fill = 0.0;
    for (int split = 1; split <= MAX_WARPS; split++) {
        if (split > n_kb)
            break;
        if ((split & (split - 1)) != 0 && split * 8 > n_kb)
            continue;
        const int most = split <= WARPS ? WARPS : MAX_WARPS;
        int per_block = 0;
        for (int t = most / split; t >= 1 && !per_block; t--)
            if (SM_WARPS % (split * t) == 0)
                per_block = t;
        if (!per_block)
            continue;
        const long warps = (long)tiles * split;
        if (split > 1 && warps > wave * 2)
            break;
        const double fill = (double)warps / (double)((warps + wave - 1) / wave * wave);
        if (fill > best_fill + 1e-9) {
            best_fill = fill;
            best = (matmul_shape){ split, per_block };
        }
    }
    return best;
}

static int same_input(const cuda_matrix *a, const cuda_matrix *b)
{
    return a->bits == b->bits && a->n_kb == b->n_kb && a->group_shift == b->group_shift;
}

/* shape: from the whole matrices' tiles (a prefix of rows, as a limited
 * vocabulary asks, is computed as the whole matrix would be). */
static cudaError_t launch_chunks(matmul_params *p, bool swiglu, int tiles, matmul_shape shape,
                                 int n_kb, const void *frag, int n_tok, float *const *y, int n_y,
                                 cudaStream_t s)
{
    p->n_tiles = tiles;
    p->split = shape.split;
    /* fewer tiles than a block holds: a block of just those */
    p->tiles_per_block = shape.tiles_per_block < tiles ? shape.tiles_per_block : tiles;
    unsigned blocks = (unsigned)ceil_div(tiles, p->tiles_per_block);
    size_t chunk_halves = (size_t)(CUDA_MATMUL_TOKENS / 8) * (size_t)n_kb * 4u * 32u * 4u;
    for (int t0 = 0; t0 < n_tok; t0 += CUDA_MATMUL_TOKENS) {
        p->frag = (const uint2 *)((const __half *)frag + (size_t)(t0 / CUDA_MATMUL_TOKENS) * chunk_halves);
        p->n_tok = n_tok - t0 < CUDA_MATMUL_TOKENS ? n_tok - t0 : CUDA_MATMUL_TOKENS;
        p->tok0 = t0;
        for (int i = 0; i < n_y; i++)
            p->y[i] = y[i] + (size_t)t0 * (size_t)p->w[i].rows;
        cudaError_t e = swiglu ? launch_bits<true>(p, blocks, s) : launch_bits<false>(p, blocks, s);
        if (e != cudaSuccess)
            return e;
    }
    return cudaSuccess;
}

static cudaError_t matmul(const cuda_matrix *w, const cuda_matrix *up, const void *frag, int n_tok,
                          const float *bias, const float *up_bias, float *y, int y_stride,
                          int accumulate, float alpha, void *frag_out, cudaStream_t s)
{
    if (up && (!same_input(up, w) || up->rows != w->rows))
        return cudaErrorInvalidValue;
    /* rows may be fewer than the matrix holds: a prefix of whole tiles
     * (the first logits of a limited vocabulary). */
    matmul_params p = { { *w, up ? *up : *w, *w }, { bias, up_bias, NULL }, { NULL, NULL, NULL },
                        { 0, 1 << 30, 1 << 30 }, 0, 1, 1, NULL, 0, accumulate, alpha };
    p.w[0].rows = y_stride;   /* the output's row length is the rows computed */
    if (y_stride > w->rows)
        return cudaErrorInvalidValue;
    if (up)
        p.w[1].rows = y_stride;
    if (frag_out && y_stride % CUDA_TILE_COLS)
        return cudaErrorInvalidValue;
    p.frag_out = (__half *)frag_out;
    p.frag_steps = y_stride / 16;
    matmul_shape shape = choose_shape(ceil_div(w->rows, CUDA_TILE_ROWS), w->n_kb);
    float *ys[2] = { y, y };
    return launch_chunks(&p, up != NULL, ceil_div(y_stride, CUDA_TILE_ROWS), shape, w->n_kb, frag,
                         n_tok, ys, up ? 2 : 1, s);
}

cudaError_t cuda_matmul(const cuda_matrix *w, const cuda_matrix *up, const void *frag, int n_tok,
                        const float *bias, const float *up_bias, float *y, int y_stride,
                        int accumulate, float alpha, cudaStream_t s)
{
    return matmul(w, up, frag, n_tok, bias, up_bias, y, y_stride, accumulate, alpha, NULL, s);
}

cudaError_t cuda_swiglu_fragments(const cuda_matrix *gate, const cuda_matrix *up, const void *frag,
                                  int n_tok, const float *gate_bias, const float *up_bias, float *y,
                                  void *frag_out, cudaStream_t s)
{
    return matmul(gate, up, frag, n_tok, gate_bias, up_bias, y, gate->rows, 0, 1.0f, frag_out, s);
}

cudaError_t cuda_matmul_many(const cuda_matrix *const *w, int n_w, const void *frag, int n_tok,
                             const float *const *bias, float *const *y, cudaStream_t s)
{
    if (n_w < 1 || n_w > 3)
        return cudaErrorInvalidValue;
    for (int i = 1; i < n_w; i++)
        if (!same_input(w[i], w[0]))
            return cudaErrorInvalidValue;
    matmul_params p = { { *w[0], *w[0], *w[0] }, { NULL, NULL, NULL }, { NULL, NULL, NULL },
                        { 0, 1 << 30, 1 << 30 }, 0, 1, 1, NULL, 0, 0, 1.0f };
    int tiles = 0;
    for (int i = 0; i < n_w; i++) {
        p.w[i] = *w[i];
        p.bias[i] = bias ? bias[i] : NULL;
        p.tile_start[i] = tiles;
        tiles += ceil_div(w[i]->rows, CUDA_TILE_ROWS);
    }
    return launch_chunks(&p, false, tiles, choose_shape(tiles, w[0]->n_kb), w[0]->n_kb, frag,
                         n_tok, y, n_w, s);
}

/* ---------------------------------------------------------------- embedding */

/* W[row][col] of a tile-layout matrix, in float32 as the file defines it. */
static __device__ inline float tile_value(const cuda_matrix *m, int row, int col)
{
    int tile = row >> 4, rr = row & 15, kb = col >> 6, cc = col & 63;
    int s = cc >> 4, c16 = cc & 15;
    int lane = (rr & 7) * 4 + ((c16 & 7) >> 1), high = c16 & 1;
    int ps = s * 4 + ((rr >> 3) | ((c16 >> 3) << 1));
    int wpl = words_per_lane(m->bits);
    const uint32_t *words = m->tiles + (((size_t)tile * (size_t)m->n_kb + (size_t)kb) * 32u + (size_t)lane) * (size_t)wpl;
    if (m->bits == 16) {
        uint32_t w = words[ps];
        return __half2float(__ushort_as_half((unsigned short)(high ? w >> 16 : w & 0xffffu)));
    }
    int per_word = 16 / m->bits;
    uint32_t q = (words[ps / per_word] >> ((ps % per_word) * m->bits + 16 * high)) & ((1u << m->bits) - 1u);
    size_t slot = (size_t)((rr & 7) * 2 + (rr >> 3));
    __half2 sb = ((const __half2 *)m->scale_bias)[((size_t)tile * (size_t)m->n_groups + (size_t)(col >> m->group_shift)) * 16u + slot];
    return __low2float(sb) * (float)q + __high2float(sb);
}

static __global__ void embed_kernel(cuda_matrix table, const int32_t *tokens, float *x)
{
    let_next_kernel_start();
    wait_for_previous_kernels();
    int t = blockIdx.x, id = tokens[t];
    for (int c = threadIdx.x; c < table.cols; c += blockDim.x)
        x[(size_t)t * (size_t)table.cols + (size_t)c] = tile_value(&table, id, c);
}

cudaError_t cuda_embed(const cuda_matrix *table, const int32_t *tokens, int n_tok, float *x,
                       cudaStream_t s)
{
    if (n_tok > 0)
        return launch_overlapped(embed_kernel, dim3((unsigned)n_tok), dim3(THREADS), 0, s, *table,
                                 tokens, x);
    return cudaGetLastError();
}

cudaError_t cuda_copy_repeat(void *dst, const void *src, size_t bytes, int reps, cudaStream_t s)
{
    for (int i = 0; i < reps; i++) {
        cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s);
        if (e != cudaSuccess)
            return e;
    }
    return cudaSuccess;
}
