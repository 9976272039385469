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
 * 1024 + q), and one subtraction and one fused multiply-add make them
 * scale * q + bias. The same kernel multiplies 1 to 32 tokens: the weights
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
    int r = (int)(idx % 16u);
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

/* Index (in halves) of x[tok][c] in the fragments: 8-token tiles, 16-column
 * steps, 32 lanes, 4 halves (cols 2t, 2t+1, 2t+8, 2t+9 of token g). */
static __device__ inline size_t fragment_index(int tok, int c, int n_steps)
{
    int j = tok >> 3, g = tok & 7, step = c >> 4, c16 = c & 15;
    int lane = g * 4 + ((c16 & 7) >> 1);
    int h = ((c16 >> 3) << 1) | (c16 & 1);
    return (((size_t)j * (size_t)n_steps + (size_t)step) * 32u + (size_t)lane) * 4u + (size_t)h;
}

/* One block per token and 512 columns: each block sums the row's squares
 * itself (a few KB from L2), so that a single token's row is still spread
 * over many SMs. */
#define FRAGMENT_COLS 512

static __global__ void to_fragments(const float *x, int n_tok, int dim, const float *norm,
                                    float eps, __half *frag)
{
    int tok = blockIdx.x, c0 = blockIdx.y * FRAGMENT_COLS;
    int padded = ceil_div(dim, CUDA_TILE_COLS) * CUDA_TILE_COLS, n_steps = padded / 16;
    const float *row = x + (size_t)tok * (size_t)dim;
    float inv = 1.0f;
    if (norm && tok < n_tok) {
        __shared__ float partial[THREADS / 32];
        float ss = 0.0f;
        for (int c = threadIdx.x; c < dim; c += blockDim.x)
            ss += row[c] * row[c];
        for (int o = 16; o > 0; o >>= 1)
            ss += __shfl_xor_sync(0xffffffffu, ss, o);
        if ((threadIdx.x & 31) == 0)
            partial[threadIdx.x >> 5] = ss;
        __syncthreads();
        ss = 0.0f;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++)
            ss += partial[w];
        inv = 1.0f / sqrtf(ss / (float)dim + eps);
    }
    int c1 = min(padded, c0 + FRAGMENT_COLS);
    for (int c = c0 + threadIdx.x; c < c1; c += blockDim.x) {
        float v = 0.0f;
        if (tok < n_tok && c < dim)
            v = norm ? (row[c] * inv) * norm[c] : row[c];
        frag[fragment_index(tok, c, n_steps)] = __float2half_rn(v);
    }
}

cudaError_t cuda_to_fragments(const float *x, int n_tok, int dim, const float *norm, float eps,
                              void *frag, cudaStream_t s)
{
    int padded_tokens = ceil_div(n_tok, 8) * 8;
    dim3 grid((unsigned)padded_tokens, (unsigned)ceil_div(dim, FRAGMENT_COLS));
    to_fragments<<<grid, THREADS, 0, s>>>(x, n_tok, dim, norm, eps, (__half *)frag);
    return cudaGetLastError();
}

/* ---------------------------------------------------------------- matmul */

/* Up to three matrices of the same input: end to end (the blocks of
 * q, k and v in one launch: tile_start says where each begins), or, for
 * SwiGLU, gate and up side by side (w[0], w[1]). */
typedef struct matmul_params {
    cuda_matrix w[3];
    const float *bias[3];
    float *y[3];
    int tile_start[3];
    const uint2 *frag;
    int n_tok;
    int accumulate;
    float alpha;
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

/* The four A registers of 16-column step s from a lane's words; sb holds
 * the (scale, bias) of rows g and g + 8 for steps 0-1 and for steps 2-3
 * (one group, or two of 32 columns). */
template <int BITS>
static __device__ inline void a_fragment(const uint32_t *words, int s, const __half2 sb[4],
                                         uint32_t a[4])
{
    if (BITS == 16) {
#pragma unroll
        for (int p = 0; p < 4; p++)
            a[p] = words[s * 4 + p];
    } else {
        constexpr int PER_WORD = 16 / BITS;
        constexpr uint32_t MASK = ((1u << BITS) - 1u) * 0x00010001u;
        const __half2 lo = sb[(s >> 1) * 2], hi = sb[(s >> 1) * 2 + 1];
        const __half2 scale[2] = { __low2half2(lo), __low2half2(hi) };
        const __half2 bias[2] = { __high2half2(lo), __high2half2(hi) };
        const __half2 offset = __float2half2_rn(1024.0f);
#pragma unroll
        for (int p = 0; p < 4; p++) {
            int ps = s * 4 + p;
            uint32_t u = ((words[ps / PER_WORD] >> ((ps % PER_WORD) * BITS)) & MASK) | 0x64006400u;
            __half2 q = __hsub2(bits_half2(u), offset);
            a[p] = half2_bits(__hfma2(q, scale[p & 1], bias[p & 1]));
        }
    }
}

template <int WPL>
static __device__ inline void load_words(const uint32_t *src, uint32_t *dst)
{
    if (WPL == 2) {
        uint2 v = __ldg(reinterpret_cast<const uint2 *>(src));
        dst[0] = v.x;
        dst[1] = v.y;
    } else {
#pragma unroll
        for (int i = 0; i < WPL / 4; i++) {
            uint4 v = __ldg(reinterpret_cast<const uint4 *>(src) + i);
            dst[4 * i] = v.x;
            dst[4 * i + 1] = v.y;
            dst[4 * i + 2] = v.z;
            dst[4 * i + 3] = v.w;
        }
    }
}

/* One block per 16-row tile; its 8 warps split the 64-column blocks and add
 * their sums through shared memory at the end. Each warp first issues every
 * load of UNROLL blocks (weights, scales, activations; indices clamped so
 * that no load waits on a branch), then computes: the loads of one
 * iteration are in flight together, which is what keeps the memory busy. */
template <int BITS, int NT8, bool SWIGLU, int MIN_BLOCKS>
static __global__ void __launch_bounds__(THREADS, MIN_BLOCKS) matmul_kernel(matmul_params p)
{
    constexpr int WPL = BITS == 16 ? 16 : BITS;
    constexpr int UNROLL = 16 / WPL;   /* 64 bytes of weights per lane in flight */
    constexpr int NM = SWIGLU ? 2 : 1;
    constexpr int NB = NT8 == 1 ? UNROLL : 1;   /* blocks whose activations are preloaded */
    constexpr int NA = 1;   /* independent accumulators (more than one measured no faster) */
    __shared__ float reduce[WARPS][NM * NT8 * 128];

    int sel = 0, tile = blockIdx.x;
    if (!SWIGLU) {
        sel = tile >= p.tile_start[2] ? 2 : tile >= p.tile_start[1] ? 1 : 0;
        tile -= p.tile_start[sel];
    }
    const cuda_matrix &w0 = p.w[sel];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, n_kb = w0.n_kb, n_steps = n_kb * 4;
    const int token_tiles = (p.n_tok + 7) >> 3;
    /* Lanes whose token (g) is past the last one load no activations. */
    bool has_token[NT8];
#pragma unroll
    for (int j = 0; j < NT8; j++)
        has_token[j] = j < token_tiles && j * 8 + g < p.n_tok;

    float acc[NM][NA][NT8][4];
#pragma unroll
    for (int m = 0; m < NM; m++)
#pragma unroll
        for (int a = 0; a < NA; a++)
#pragma unroll
            for (int j = 0; j < NT8; j++)
                acc[m][a][j][0] = acc[m][a][j][1] = acc[m][a][j][2] = acc[m][a][j][3] = 0.0f;

    const uint32_t *base[NM];
    const __half2 *sbase[NM];
    int shift[NM];
#pragma unroll
    for (int m = 0; m < NM; m++) {
        const cuda_matrix &wm = m == 0 ? w0 : p.w[1];
        base[m] = wm.tiles + ((size_t)tile * (size_t)n_kb * 32u + (size_t)lane) * WPL;
        sbase[m] = (const __half2 *)wm.scale_bias + (size_t)tile * (size_t)wm.n_groups * 16u + g;
        shift[m] = wm.group_shift;
    }

    for (int kb0 = warp; kb0 < n_kb; kb0 += WARPS * UNROLL) {
        uint32_t words[NM][UNROLL][WPL];
        __half2 sb[NM][UNROLL][4];
        uint2 b[NB][4][NT8];
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            int kb = min(kb0 + u * WARPS, n_kb - 1);
#pragma unroll
            for (int m = 0; m < NM; m++) {
                load_words<WPL>(base[m] + (size_t)kb * 32u * WPL, words[m][u]);
                if (BITS != 16) {
                    int g0 = (kb * 64) >> shift[m], g1 = (kb * 64 + 32) >> shift[m];
                    sb[m][u][0] = __ldg(sbase[m] + g0 * 16);
                    sb[m][u][1] = __ldg(sbase[m] + g0 * 16 + 8);
                    sb[m][u][2] = __ldg(sbase[m] + g1 * 16);
                    sb[m][u][3] = __ldg(sbase[m] + g1 * 16 + 8);
                }
            }
            if (NB == UNROLL) {
#pragma unroll
                for (int s = 0; s < 4; s++)
                    b[u % NB][s][0] = has_token[0]
                        ? __ldg(p.frag + (size_t)(kb * 4 + s) * 32u + lane) : make_uint2(0u, 0u);
            }
        }
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            int kb = kb0 + u * WARPS;
            if (kb >= n_kb)
                break;
            if (NB == 1) {
#pragma unroll
                for (int s = 0; s < 4; s++)
#pragma unroll
                    for (int j = 0; j < NT8; j++)
                        b[0][s][j] = has_token[j]
                            ? __ldg(p.frag + ((size_t)j * n_steps + (size_t)(kb * 4 + s)) * 32u + lane)
                            : make_uint2(0u, 0u);
            }
#pragma unroll
            for (int s = 0; s < 4; s++) {
#pragma unroll
                for (int m = 0; m < NM; m++) {
                    uint32_t a[4];
                    a_fragment<BITS>(words[m][u], s, sb[m][u], a);
#pragma unroll
                    for (int j = 0; j < NT8; j++)
                        mma_16816(acc[m][u % NA][j], a, b[u % NB][s][j]);
                }
            }
        }
    }

#pragma unroll
    for (int m = 0; m < NM; m++)
#pragma unroll
        for (int j = 0; j < NT8; j++)
#pragma unroll
            for (int i = 0; i < 4; i++)
            {
                float v = 0.0f;
#pragma unroll
                for (int a = 0; a < NA; a++)
                    v += acc[m][a][j][i];
                reduce[warp][(m * NT8 + j) * 128 + i * 32 + lane] = v;
            }
    __syncthreads();

    for (int e = threadIdx.x; e < NT8 * 128; e += THREADS) {
        int j = e >> 7, i = (e >> 5) & 3, ln = e & 31;
        int row = tile * 16 + (ln >> 2) + ((i & 2) ? 8 : 0);
        int tok = j * 8 + (ln & 3) * 2 + (i & 1);
        if (row >= w0.rows || tok >= p.n_tok)
            continue;
        float v = 0.0f;
        for (int w = 0; w < WARPS; w++)
            v += reduce[w][e];
        if (p.bias[sel])
            v += p.bias[sel][row];
        if (SWIGLU) {
            float u = 0.0f;
            for (int w = 0; w < WARPS; w++)
                u += reduce[w][NT8 * 128 + e];
            if (p.bias[1])
                u += p.bias[1][row];
            v = v / (1.0f + expf(-v)) * u;
        }
        float *out = p.y[sel] + (size_t)tok * (size_t)w0.rows + (size_t)row;
        *out = p.accumulate ? *out + p.alpha * v : p.alpha * v;
    }
}

template <int BITS, bool SWIGLU>
static void launch_tokens(const matmul_params *p, unsigned tiles, cudaStream_t s)
{
    /* Up to 8 tokens (decoding, verifying): registers capped so that two
     * blocks share an SM, which keeps more weight loads in flight (gate/up
     * of Llama 3 8B: 56 -> 40 us). */
    if (p->n_tok <= 8)
        matmul_kernel<BITS, 1, SWIGLU, 2><<<tiles, THREADS, 0, s>>>(*p);
    else if (p->n_tok <= 16)
        matmul_kernel<BITS, 2, SWIGLU, 1><<<tiles, THREADS, 0, s>>>(*p);
    else
        matmul_kernel<BITS, 4, SWIGLU, 1><<<tiles, THREADS, 0, s>>>(*p);
}

template <bool SWIGLU>
static cudaError_t launch_bits(const matmul_params *p, unsigned tiles, cudaStream_t s)
{
    switch (p->w[0].bits) {
    case 2: launch_tokens<2, SWIGLU>(p, tiles, s); break;
    case 4: launch_tokens<4, SWIGLU>(p, tiles, s); break;
    case 8: launch_tokens<8, SWIGLU>(p, tiles, s); break;
    case 16: launch_tokens<16, SWIGLU>(p, tiles, s); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

static int same_input(const cuda_matrix *a, const cuda_matrix *b)
{
    return a->bits == b->bits && a->n_kb == b->n_kb;
}

static cudaError_t launch_chunks(matmul_params *p, bool swiglu, unsigned tiles, int n_kb,
                                 const void *frag, int n_tok, float *const *y, int n_y,
                                 cudaStream_t s)
{
    size_t chunk_halves = (size_t)(CUDA_MATMUL_TOKENS / 8) * (size_t)n_kb * 4u * 32u * 4u;
    for (int t0 = 0; t0 < n_tok; t0 += CUDA_MATMUL_TOKENS) {
        p->frag = (const uint2 *)((const __half *)frag + (size_t)(t0 / CUDA_MATMUL_TOKENS) * chunk_halves);
        p->n_tok = n_tok - t0 < CUDA_MATMUL_TOKENS ? n_tok - t0 : CUDA_MATMUL_TOKENS;
        for (int i = 0; i < n_y; i++)
            p->y[i] = y[i] + (size_t)t0 * (size_t)p->w[i].rows;
        cudaError_t e = swiglu ? launch_bits<true>(p, tiles, s) : launch_bits<false>(p, tiles, s);
        if (e != cudaSuccess)
            return e;
    }
    return cudaSuccess;
}

cudaError_t cuda_matmul(const cuda_matrix *w, const cuda_matrix *up, const void *frag, int n_tok,
                        const float *bias, const float *up_bias, float *y, int y_stride,
                        int accumulate, float alpha, cudaStream_t s)
{
    if (up && (!same_input(up, w) || up->rows != w->rows))
        return cudaErrorInvalidValue;
    /* rows may be fewer than the matrix holds: a prefix of whole tiles
     * (the first logits of a limited vocabulary). */
    matmul_params p = { { *w, up ? *up : *w, *w }, { bias, up_bias, NULL }, { NULL, NULL, NULL },
                        { 0, 1 << 30, 1 << 30 }, NULL, 0, accumulate, alpha };
    p.w[0].rows = y_stride;   /* the output's row length is the rows computed */
    if (y_stride > w->rows)
        return cudaErrorInvalidValue;
    if (up)
        p.w[1].rows = y_stride;
    unsigned tiles = (unsigned)ceil_div(y_stride, CUDA_TILE_ROWS);
    float *ys[2] = { y, y };
    return launch_chunks(&p, up != NULL, tiles, w->n_kb, frag, n_tok, ys, up ? 2 : 1, s);
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
                        { 0, 1 << 30, 1 << 30 }, NULL, 0, 0, 1.0f };
    unsigned tiles = 0;
    for (int i = 0; i < n_w; i++) {
        p.w[i] = *w[i];
        p.bias[i] = bias ? bias[i] : NULL;
        p.tile_start[i] = (int)tiles;
        tiles += (unsigned)ceil_div(w[i]->rows, CUDA_TILE_ROWS);
    }
    return launch_chunks(&p, false, tiles, w[0]->n_kb, frag, n_tok, y, n_w, s);
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
    __half2 sb = ((const __half2 *)m->scale_bias)[((size_t)tile * (size_t)m->n_groups + (size_t)(col >> m->group_shift)) * 16u + (size_t)rr];
    return __low2float(sb) * (float)q + __high2float(sb);
}

static __global__ void embed_kernel(cuda_matrix table, const int32_t *tokens, float *x)
{
    int t = blockIdx.x, id = tokens[t];
    for (int c = threadIdx.x; c < table.cols; c += blockDim.x)
        x[(size_t)t * (size_t)table.cols + (size_t)c] = tile_value(&table, id, c);
}

cudaError_t cuda_embed(const cuda_matrix *table, const int32_t *tokens, int n_tok, float *x,
                       cudaStream_t s)
{
    if (n_tok > 0)
        embed_kernel<<<n_tok, THREADS, 0, s>>>(*table, tokens, x);
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
