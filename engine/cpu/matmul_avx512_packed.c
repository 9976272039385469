/* AVX-512 VNNI kernel for 4-bit weights repacked once at load time, 16 rows
 * side by side ("row-interleaved"), still 4 bits per weight.
 *
 * Why: the row-major kernel (matmul_avx512_quant.c) puts 128 columns of
 * one row in a vector, so every 64 bytes of weights it must convert,
 * permute the group scales and fma per row and token, and sum 16 lanes
 * horizontally at the end: 11 vector operations per 4 dot products at one
 * token (26% of the vpdpbusd peak of a Zen 5 core, measured; this kernel
 * 44%, and 73% at 8 tokens: docs/BENCHMARKS.md). Here lane j of a vector holds one u32
 * word (8 columns) of row r + j, so a vector is 16 rows x 8 columns: the
 * activations of those 8 columns are the same for all lanes (a broadcast
 * memory operand of vpdpbusd), a lane stays in one (row, group) for the
 * whole group, and integer sums run over the whole group before one
 * conversion and two fmas per group, token and 16 rows. The result of 16
 * rows is one vector: no horizontal sums.
 *
 * Numerics: for each token the float operations are the same sequence
 * whatever the number of tokens in the pass or the rows around it (the
 * integer sums per group are exact, whichever chains they run in), so a
 * token's result never depends on the pass it is in (speculative decoding
 * relies on it). They differ from the row-major kernel's in the last bits:
 * a model uses one or the other for all of its passes (a weight is packed
 * at load or never).
 *
 * Activations: the layout cpu_matmul_prepare writes for 4-bit weights
 * (qlayout, two digits, streams of even and odd columns); word k of a row
 * sits in chunk k / 16, lane k % 16 of it.
 *
 * Packed layout (cpu_matmul_pack): a header, then per block of 16 rows
 * (the last zero padded), per group: the group's words, gs / 8 vectors of
 * [16 rows][u32], then the 16 rows' scales and 16 biases in the source
 * dtype (F32, or F16/BF16 kept at 16 bits), so that a pass streams the
 * weights in order. */
#include <string.h>

#include "cpu/matmul_avx512.h"

#define BLOCK_ROWS 16
#define PACK_MAGIC 0x3470636b6d6c6101ull   /* "alm4pck" + version 1 */
#define PACK_HEADER_BYTES 64

typedef struct pack_header {
    uint64_t magic;
    const void *source;    /* the w->data and w->scales it was made from */
    const void *source_scales;
    int rows, cols, group_size;
    int param_bytes;       /* 2 (F16/BF16) or 4 (F32) */
    alm_dtype scale_dtype;
    size_t group_bytes;    /* one group of one block: words, scales, biases */
    size_t block_bytes;
} pack_header;

_Static_assert(sizeof(pack_header) <= PACK_HEADER_BYTES, "pack header fits its slot");

static bool packable(const alm_weight *w)
{
    return w->bits == 4 && w->dtype == ALM_DTYPE_U32 &&
           (w->group_size == 32 || w->group_size == 64 || w->group_size == 128) &&
           w->cols % w->group_size == 0 && w->rows > 0 &&
           (w->scale_dtype == ALM_DTYPE_F32 || w->scale_dtype == ALM_DTYPE_F16 ||
            w->scale_dtype == ALM_DTYPE_BF16);
}

static pack_header pack_geometry(const alm_weight *w)
{
    pack_header h;
    memset(&h, 0, sizeof h);
    h.magic = PACK_MAGIC;
    h.source = w->data;
    h.source_scales = w->scales;
    h.rows = w->rows;
    h.cols = w->cols;
    h.group_size = w->group_size;
    h.scale_dtype = w->scale_dtype;
    h.param_bytes = w->scale_dtype == ALM_DTYPE_F32 ? 4 : 2;
    h.group_bytes = (size_t)(w->group_size / 8) * 64 + 2 * BLOCK_ROWS * (size_t)h.param_bytes;
    h.block_bytes = h.group_bytes * (size_t)(w->cols / w->group_size);
    return h;
}

size_t avx512_pack_size(const alm_weight *w)
{
    if (!packable(w))
        return 0;
    pack_header h = pack_geometry(w);
    size_t blocks = (size_t)(w->rows + BLOCK_ROWS - 1) / BLOCK_ROWS;
    return PACK_HEADER_BYTES + blocks * h.block_bytes;
}

int avx512_pack(const alm_weight *w, void *dst, size_t bytes)
{
    size_t need = avx512_pack_size(w);
    if (!need || bytes < need)
        return -1;
    pack_header h = pack_geometry(w);
    uint8_t *out = dst;
    memcpy(out, &h, sizeof h);
    memset(out + sizeof h, 0, PACK_HEADER_BYTES - sizeof h);
    const uint8_t *src = w->data;
    size_t row_bytes = alm_weight_row_bytes(w);
    int groups = w->cols / w->group_size, words = w->group_size / 8;
    int blocks = (w->rows + BLOCK_ROWS - 1) / BLOCK_ROWS;
    size_t pb = (size_t)h.param_bytes;
    for (int b = 0; b < blocks; b++) {
        for (int g = 0; g < groups; g++) {
            uint8_t *p = out + PACK_HEADER_BYTES + (size_t)b * h.block_bytes +
                         (size_t)g * h.group_bytes;
            uint8_t *scales = p + (size_t)words * 64, *biases = scales + BLOCK_ROWS * pb;
            for (int j = 0; j < BLOCK_ROWS; j++) {
                int r = b * BLOCK_ROWS + j;
                bool real = r < w->rows;
                for (int k = 0; k < words; k++) {
                    uint8_t *lane = p + (size_t)k * 64 + (size_t)j * 4;
                    if (real)
                        memcpy(lane, src + (size_t)r * row_bytes + ((size_t)g * words + k) * 4, 4);
                    else
                        memset(lane, 0, 4);
                }
                size_t at = ((size_t)r * (size_t)groups + (size_t)g) * pb;
                if (real) {
                    memcpy(scales + j * pb, (const uint8_t *)w->scales + at, pb);
                    memcpy(biases + j * pb, (const uint8_t *)w->biases + at, pb);
                } else {
                    memset(scales + j * pb, 0, pb);
                    memset(biases + j * pb, 0, pb);
                }
            }
        }
    }
    return 0;
}

const void *avx512_packed_of(const alm_weight *w)
{
    const void *p = w->backend_data;
    if (!p || !packable(w))
        return NULL;
    pack_header h;
    memcpy(&h, p, sizeof h);
    /* A weight that is the first rows of the packed one (a vocabulary
     * limited lm_head) uses the same blocks. */
    if (h.magic != PACK_MAGIC || h.source != w->data || h.source_scales != w->scales ||
        w->rows > h.rows || h.cols != w->cols || h.group_size != w->group_size ||
        h.scale_dtype != w->scale_dtype)
        return NULL;
    return p;
}

/* ------------------------------------------------------------ kernel */

typedef struct pctx {
    pack_header h;
    const uint8_t *blocks;    /* block 0, group 0 */
    const uint8_t *scratch;
    qlayout L;
    int words;                /* per group */
    int groups;
    float *y;
    size_t y_stride;
    int r0, r1;               /* rows to store */
} pctx;

static inline __attribute__((always_inline)) __m512i bcast32(const uint8_t *p)
{
    int v;
    memcpy(&v, p, sizeof v);
    return _mm512_set1_epi32(v);
}

/* The 16 scales (or biases) at p as f32. */
static inline __attribute__((always_inline)) __m512 load_params(const uint8_t *p, const int PB,
                                                                 const alm_dtype DT)
{
    if (PB == 4)
        return _mm512_loadu_ps(p);
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    if (DT == ALM_DTYPE_F16)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Activation bytes of one token in a chunk (2 digits x 2 streams x 64):
 * the tokens of a tile are this far apart. */
#define TOKEN_CHUNK_BYTES 256

/* Word k of the group for tokens [0, T) (xg: token 0's high digit, even
 * columns, at the group's first word), into the integer sums s[RB][T][C]:
 * C = 8 chains (high and low digit x even and odd columns x even and odd
 * words: parity tells which), 4 (the same for all words) or 2 (high, low
 * digit). */
static inline __attribute__((always_inline))
void packed_word(const uint8_t *wk, size_t block_bytes, const uint8_t *xg, int k, int parity,
                 __m512i s[][MAX_TOK][8], const int RB, const int T, const int C)
{
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    __m512i even[2], odd[2];
    UNROLL
    for (int i = 0; i < RB; i++) {
        __m512i wv = _mm512_loadu_si512(wk + (size_t)i * block_bytes);
        even[i] = _mm512_and_si512(wv, low4);
        odd[i] = _mm512_and_si512(_mm512_srli_epi16(wv, 4), low4);
    }
    UNROLL
    for (int j = 0; j < T; j++) {
        /* [high digit: even, odd columns][low digit: even, odd], 64 apart */
        const uint8_t *xp = xg + TOKEN_CHUNK_BYTES * j + 4 * k;
        __m512i h_e = bcast32(xp), h_o = bcast32(xp + 64);
        __m512i l_e = bcast32(xp + 128), l_o = bcast32(xp + 192);
        UNROLL
        for (int i = 0; i < RB; i++) {
            if (C >= 4) {
                const int c = C == 8 ? 4 * parity : 0;
                s[i][j][c] = _mm512_dpbusd_epi32(s[i][j][c], even[i], h_e);
                s[i][j][c + 1] = _mm512_dpbusd_epi32(s[i][j][c + 1], odd[i], h_o);
                s[i][j][c + 2] = _mm512_dpbusd_epi32(s[i][j][c + 2], even[i], l_e);
                s[i][j][c + 3] = _mm512_dpbusd_epi32(s[i][j][c + 3], odd[i], l_o);
            } else {
                s[i][j][0] = _mm512_dpbusd_epi32(s[i][j][0], even[i], h_e);
                s[i][j][1] = _mm512_dpbusd_epi32(s[i][j][1], even[i], l_e);
                s[i][j][0] = _mm512_dpbusd_epi32(s[i][j][0], odd[i], h_o);
                s[i][j][1] = _mm512_dpbusd_epi32(s[i][j][1], odd[i], l_o);
            }
        }
    }
}

/* Rows [16 b, 16 (b + RB)) x tokens [t, t + T), all columns.
 *
 * C integer chains per (block, token): enough independent dot products in
 * flight to hide their latency (4 cycles, 2 issued a cycle) with the
 * fewest registers: 8 for one or two (block, token) pairs, 4 up to four,
 * else 2. */
static inline __attribute__((always_inline))
void packed_tile(const pctx *q, int b, int t, const alm_dtype DT, const int RB, const int T)
{
    const int C = RB * T <= 2 ? 8 : RB * T <= 4 ? 4 : 2;
    const int PB = DT == ALM_DTYPE_F32 ? 4 : 2;
    __m512 acc[2][MAX_TOK];
    UNROLL
    for (int i = 0; i < RB; i++)
        UNROLL
        for (int j = 0; j < T; j++)
            acc[i][j] = _mm512_setzero_ps();
    const uint8_t *wg = q->blocks + (size_t)b * q->h.block_bytes;
    const size_t block_bytes = q->h.block_bytes;
    const float *heads[MAX_TOK];
    UNROLL
    for (int j = 0; j < T; j++)
        heads[j] = (const float *)token_head(&q->L, q->scratch, t + j);

    for (int g = 0; g < q->groups; g++, wg += q->h.group_bytes) {
        /* The group's first word, in the activation layout. */
        int w0 = g * q->words;
        const uint8_t *xg = q->scratch + q->L.digits_off + q->L.chunk_stride * (size_t)(w0 >> 4) +
                            TOKEN_CHUNK_BYTES * (size_t)t + (size_t)(w0 & 15) * 4;
        __m512i s[2][MAX_TOK][8];
        UNROLL
        for (int i = 0; i < RB; i++)
            UNROLL
            for (int j = 0; j < T; j++)
                UNROLL
                for (int c = 0; c < C; c++)
                    s[i][j][c] = _mm512_setzero_si512();
        /* words per group: 4, 8 or 16 */
        for (int k = 0; k < q->words; k += 4) {
            UNROLL
            for (int kk = 0; kk < 4; kk++)
                packed_word(wg + (size_t)(k + kk) * 64, block_bytes, xg, k + kk, kk & 1, s, RB, T, C);
        }
        /* y += (sum q xq) * scale * dx + bias * sum(x), per group: the
         * integer sum is exact (|sum| < 128 x 15 x 32640 < 2^26). */
        const uint8_t *params = wg + (size_t)q->words * 64;
        UNROLL
        for (int i = 0; i < RB; i++) {
            const uint8_t *pi = params + (size_t)i * block_bytes;
            __m512 sc = load_params(pi, PB, DT);
            __m512 bs = load_params(pi + BLOCK_ROWS * PB, PB, DT);
            UNROLL
            for (int j = 0; j < T; j++) {
                __m512 sums = _mm512_set1_ps(heads[j][g]);
                __m512 dx = _mm512_set1_ps(
                    ((const float *)((const uint8_t *)heads[j] + q->L.dx_off))[g]);
                __m512i hi = s[i][j][0], lo = s[i][j][1];
                if (C >= 4) {
                    hi = _mm512_add_epi32(hi, lo);
                    lo = _mm512_add_epi32(s[i][j][2], s[i][j][3]);
                }
                if (C == 8) {
                    hi = _mm512_add_epi32(hi, _mm512_add_epi32(s[i][j][4], s[i][j][5]));
                    lo = _mm512_add_epi32(lo, _mm512_add_epi32(s[i][j][6], s[i][j][7]));
                }
                __m512i sum = _mm512_add_epi32(_mm512_slli_epi32(hi, 8), lo);
                acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(sc, dx), acc[i][j]);
                acc[i][j] = _mm512_fmadd_ps(bs, sums, acc[i][j]);
            }
        }
    }
    UNROLL
    for (int i = 0; i < RB; i++) {
        int r = (b + i) * BLOCK_ROWS;
        int lo = q->r0 > r ? q->r0 - r : 0, hi = q->r1 - r < BLOCK_ROWS ? q->r1 - r : BLOCK_ROWS;
        __mmask16 m = (__mmask16)(mask16(hi) & ~mask16(lo));
        UNROLL
        for (int j = 0; j < T; j++)
            _mm512_mask_storeu_ps(q->y + (size_t)(t + j) * q->y_stride + (size_t)r, m, acc[i][j]);
    }
}

/* Blocks [b0, b1) (a multiple of RB of them), tokens [t, t + T). */
typedef void (*packed_tile_fn)(const pctx *q, int b0, int b1, int t);

#define PACKED_TILE(DT, NAME, RB, T)                                                  \
    static void packed_tile_##NAME##_##RB##_##T(const pctx *q, int b0, int b1, int t) \
    {                                                                                 \
        for (int b = b0; b < b1; b += RB)                                             \
            packed_tile(q, b, t, DT, RB, T);                                          \
    }
/* Tiles: up to four tokens by two blocks (a weight vector unpacked once
 * for up to 8 (block, token) pairs: measured 15-17% faster at 2 and 4
 * tokens than one block), five tokens by one block (two blocks would
 * spill registers; measured faster than 4 + 1), and one block alone for
 * an odd block out. More tokens go by fours: a token's result is the same
 * whichever tile it is in, so the split is free. */
#define PACKED_TILES(DT, NAME)                                                              \
    PACKED_TILE(DT, NAME, 2, 1) PACKED_TILE(DT, NAME, 2, 2) PACKED_TILE(DT, NAME, 2, 3)       \
    PACKED_TILE(DT, NAME, 2, 4) PACKED_TILE(DT, NAME, 1, 1) PACKED_TILE(DT, NAME, 1, 2)       \
    PACKED_TILE(DT, NAME, 1, 3) PACKED_TILE(DT, NAME, 1, 4) PACKED_TILE(DT, NAME, 1, 5)
PACKED_TILES(ALM_DTYPE_F32, f32)
PACKED_TILES(ALM_DTYPE_F16, f16)
PACKED_TILES(ALM_DTYPE_BF16, bf16)

#define PACKED_TILE_T 5
#define PACKED_ROW(NAME, RB)                                                              \
    { packed_tile_##NAME##_##RB##_1, packed_tile_##NAME##_##RB##_2,                        \
      packed_tile_##NAME##_##RB##_3, packed_tile_##NAME##_##RB##_4, NULL }
/* [F32, F16, BF16][blocks per tile - 1][T - 1]; NULL: no such tile */
static const packed_tile_fn packed_tiles[3][2][PACKED_TILE_T] = {
    { { packed_tile_f32_1_1, packed_tile_f32_1_2, packed_tile_f32_1_3, packed_tile_f32_1_4,
        packed_tile_f32_1_5 }, PACKED_ROW(f32, 2) },
    { { packed_tile_f16_1_1, packed_tile_f16_1_2, packed_tile_f16_1_3, packed_tile_f16_1_4,
        packed_tile_f16_1_5 }, PACKED_ROW(f16, 2) },
    { { packed_tile_bf16_1_1, packed_tile_bf16_1_2, packed_tile_bf16_1_3, packed_tile_bf16_1_4,
        packed_tile_bf16_1_5 }, PACKED_ROW(bf16, 2) },
};

/* Tokens in the next tile when `left` remain. */
static inline int next_tile_tokens(int left)
{
    return left == 5 ? 5 : left < 4 ? left : 4;
}

/* Bytes of packed weights a thread sweeps once per tile of tokens. */
#define PACKED_L2_WEIGHTS (256 * 1024)

void avx512_packed_rows(const alm_weight *w, const void *packed, const void *scratch, int n_tok,
                        float *y, size_t y_stride, int r0, int r1)
{
    pctx q;
    memcpy(&q.h, packed, sizeof q.h);
    q.blocks = (const uint8_t *)packed + PACK_HEADER_BYTES;
    q.scratch = scratch;
    q.L = quant_layout(w, n_tok, 2);
    q.words = w->group_size / 8;
    q.groups = w->cols / w->group_size;
    q.y = y;
    q.y_stride = y_stride;
    q.r0 = r0;
    q.r1 = r1;
    int k = w->scale_dtype == ALM_DTYPE_F32 ? 0 : w->scale_dtype == ALM_DTYPE_F16 ? 1 : 2;
    int b0 = r0 / BLOCK_ROWS, b1 = (r1 + BLOCK_ROWS - 1) / BLOCK_ROWS;
    /* Blocks whose weights stay in L2 (with the token block's activations)
     * while every tile of tokens passes over them. */
    int span = (int)(PACKED_L2_WEIGHTS / q.h.block_bytes);
    if (span < 2)
        span = 2;

    for (int t0 = 0; t0 < n_tok; t0 += TOKEN_BLOCK) {
        int t1 = t0 + TOKEN_BLOCK < n_tok ? t0 + TOKEN_BLOCK : n_tok;
        for (int c0 = b0; c0 < b1; c0 += span) {
            int c1 = c0 + span < b1 ? c0 + span : b1;
            for (int t = t0; t < t1;) {
                int T = next_tile_tokens(t1 - t);
                const packed_tile_fn *tiles = packed_tiles[k][0], *pairs = packed_tiles[k][1];
                int c = c0;
                if (pairs[T - 1]) {
                    c = c0 + (c1 - c0) / 2 * 2;
                    if (c > c0)
                        pairs[T - 1](&q, c0, c, t);
                }
                if (c < c1)
                    tiles[T - 1](&q, c, c1, t);
                t += T;
            }
        }
    }
}
