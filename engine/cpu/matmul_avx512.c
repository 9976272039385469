/* AVX-512 kernels for dense weights (F32, F16, BF16), and the entry points
 * of the AVX-512 kernel table (quantized weights: matmul_avx512_quant.c).
 * Compiled with AVX-512 flags; only ever called once the dispatcher has
 * seen the CPU run them.
 *
 * fp32 FMA on weights converted in registers (BF16 -> F32 is a shift,
 * F16 -> F32 is vcvtph2ps), tiled as R rows x T tokens of accumulators so
 * that a weight vector is converted once for T tokens and an activation
 * vector loaded once for R rows. */
#include <string.h>

#include "cpu/matmul_avx512.h"

/* Dense BF16: x is stored as 32-column blocks of [16 even][16 odd]
 * columns, matching the two halves of the bf16 pairs in a 32-bit lane. */
static size_t bf16_token_bytes(const alm_weight *w)
{
    return align64(sizeof(float) * (size_t)((w->cols + 31) / 32 * 32));
}

static size_t dense_scratch_size(const alm_weight *w, int n_tok)
{
    if (w->dtype == ALM_DTYPE_BF16)
        return bf16_token_bytes(w) * (size_t)n_tok;
    return 64;
}

/* ------------------------------------------------------------ dense */

typedef struct dctx {
    const alm_weight *w;
    const float *x;       /* F32/F16: x itself; BF16: the prepared copy */
    size_t x_stride;      /* in floats */
    float *y;
    size_t y_stride;
} dctx;

/* Rows [r, r + R) x tokens [t, t + T), dtype DT, 32 columns per step.
 * Each (row, token) has two accumulators (the two 16-column halves of a
 * step; for BF16 the even and odd columns) so that enough independent FMA
 * chains are in flight to hide the FMA latency. */
static inline __attribute__((always_inline))
void dense_tile(const dctx *d, int r, int t, const alm_dtype DT, const int R, const int T)
{
    const alm_weight *w = d->w;
    const int cols = w->cols;
    __m512 acc[MAX_R][MAX_TOK], acc2[MAX_R][MAX_TOK];
    UNROLL
    for (int i = 0; i < R; i++)
        UNROLL
        for (int j = 0; j < T; j++)
            acc[i][j] = acc2[i][j] = _mm512_setzero_ps();
    const float *xt = d->x + (size_t)t * d->x_stride;
    const __m512i hi_mask = _mm512_set1_epi32((int)0xffff0000u);

    for (int c = 0; c < cols; c += 32) {
        bool full = c + 32 <= cols;
        __mmask16 m0 = mask16(cols - c), m1 = mask16(cols - c - 16);
        __m512 w0[MAX_R], w1[MAX_R];
        UNROLL
        for (int i = 0; i < R; i++) {
            size_t off = (size_t)(r + i) * (size_t)cols + (size_t)c;
            if (DT == ALM_DTYPE_BF16) {
                /* a 32-bit lane holds columns 2k (low half) and 2k + 1 */
                const uint16_t *p = (const uint16_t *)w->data + off;
                __m512i v = full ? _mm512_loadu_si512(p)
                                 : _mm512_maskz_loadu_epi16((__mmask32)mask64(cols - c), p);
                w0[i] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
                w1[i] = _mm512_castsi512_ps(_mm512_and_si512(v, hi_mask));
            } else if (DT == ALM_DTYPE_F16) {
                const uint16_t *p = (const uint16_t *)w->data + off;
                w0[i] = _mm512_cvtph_ps(full ? _mm256_loadu_si256((const __m256i *)p)
                                             : _mm256_maskz_loadu_epi16(m0, p));
                w1[i] = _mm512_cvtph_ps(full ? _mm256_loadu_si256((const __m256i *)(p + 16))
                                             : _mm256_maskz_loadu_epi16(m1, p + 16));
            } else {
                const float *p = (const float *)w->data + off;
                w0[i] = full ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m0, p);
                w1[i] = full ? _mm512_loadu_ps(p + 16) : _mm512_maskz_loadu_ps(m1, p + 16);
            }
        }
        UNROLL
        for (int j = 0; j < T; j++) {
            /* BF16: the prepared x, [16 even][16 odd] per 32 columns, zero
             * padded; F16/F32: x itself, masked at the end. */
            const float *xp = xt + (size_t)j * d->x_stride + c;
            __m512 x0, x1;
            if (DT == ALM_DTYPE_BF16 || full) {
                x0 = _mm512_loadu_ps(xp);
                x1 = _mm512_loadu_ps(xp + 16);
            } else {
                x0 = _mm512_maskz_loadu_ps(m0, xp);
                x1 = _mm512_maskz_loadu_ps(m1, xp + 16);
            }
            UNROLL
            for (int i = 0; i < R; i++) {
                acc[i][j] = _mm512_fmadd_ps(w0[i], x0, acc[i][j]);
                acc2[i][j] = _mm512_fmadd_ps(w1[i], x1, acc2[i][j]);
            }
        }
    }
    UNROLL
    for (int i = 0; i < R; i++)
        UNROLL
        for (int j = 0; j < T; j++)
            acc[i][j] = _mm512_add_ps(acc[i][j], acc2[i][j]);
    store_tile_sums(acc, R, T, d->y, d->y_stride, r, t);
}

/* Tiles over rows [r0, r1) (a multiple of R of them), tokens [t, t + T). */
typedef void (*dense_tile_fn)(const dctx *d, int r0, int r1, int t);

#define DENSE_TILE(DT, NAME, R, T)                                                  \
    static void dense_tile_##NAME##_##R##_##T(const dctx *d, int r0, int r1, int t) \
    {                                                                               \
        for (int r = r0; r < r1; r += R)                                            \
            dense_tile(d, r, t, DT, R, T);                                          \
    }
/* The tiles built: 4 rows for one or two tokens, 2 for three or four (16
 * accumulators), 1 for any count up to eight (up to eight tokens in one
 * pass over the weights, which matters when they come from memory: a
 * verify pass); which are used: dense_small_rlog2, dense_big_rlog2. */
#define DENSE_TILES(DT, NAME)                                                       \
    DENSE_TILE(DT, NAME, 1, 1) DENSE_TILE(DT, NAME, 2, 1) DENSE_TILE(DT, NAME, 4, 1)  \
    DENSE_TILE(DT, NAME, 1, 2) DENSE_TILE(DT, NAME, 2, 2) DENSE_TILE(DT, NAME, 4, 2)  \
    DENSE_TILE(DT, NAME, 1, 3) DENSE_TILE(DT, NAME, 2, 3)                            \
    DENSE_TILE(DT, NAME, 1, 4) DENSE_TILE(DT, NAME, 2, 4)                            \
    DENSE_TILE(DT, NAME, 1, 5) DENSE_TILE(DT, NAME, 1, 6)                            \
    DENSE_TILE(DT, NAME, 1, 7) DENSE_TILE(DT, NAME, 1, 8)
DENSE_TILES(ALM_DTYPE_F32, f32)
DENSE_TILES(ALM_DTYPE_F16, f16)
DENSE_TILES(ALM_DTYPE_BF16, bf16)

/* [F32, F16, BF16][T - 1][log2 R], NULL past the largest R for that T. */
#define DENSE_ROW(NAME)                                                                  \
    { { dense_tile_##NAME##_1_1, dense_tile_##NAME##_2_1, dense_tile_##NAME##_4_1 },     \
      { dense_tile_##NAME##_1_2, dense_tile_##NAME##_2_2, dense_tile_##NAME##_4_2 },     \
      { dense_tile_##NAME##_1_3, dense_tile_##NAME##_2_3, NULL },                        \
      { dense_tile_##NAME##_1_4, dense_tile_##NAME##_2_4, NULL },                        \
      { dense_tile_##NAME##_1_5, NULL, NULL }, { dense_tile_##NAME##_1_6, NULL, NULL },  \
      { dense_tile_##NAME##_1_7, NULL, NULL }, { dense_tile_##NAME##_1_8, NULL, NULL } }
static const dense_tile_fn dense_tiles[3][MAX_TOK][3] = {
    DENSE_ROW(f32), DENSE_ROW(f16), DENSE_ROW(bf16),
};
/* log2 of the rows per tile, [T - 1]. Passes of up to MAX_TOK tokens
 * (decode, verify): one row, which streams the weights best (BF16
 * coder-target's matrices, one thread, busy machine: one token 7% faster
 * than with 4 rows; 2 and 4 tokens cost 1.0-1.1x and 1.4-1.5x one token,
 * against 1.15x and 1.9-2.3x with 4 and 2 rows per tile).
 * Prefill tiles: 2 rows x 4 tokens, FMA-bound. A token's result is the
 * same in any tile (tests/kernels), so the choice is free. */
static const int dense_small_rlog2[MAX_TOK] = { 0, 0, 0, 0, 0, 0, 0, 0 };
static const int dense_big_rlog2[MAX_TOK] = { 2, 2, 1, 1, 0, 0, 0, 0 };
/* Tokens per tile when there are more than MAX_TOK: 4 tokens x 2 rows is
 * FMA-bound where 8 x 1 would wait on loads. */
#define DENSE_BIG_T 4

static void dense_tile_range(const dctx *d, int k, const int *rlog2, int T, int r0, int r1,
                             int ta, int tb)
{
    for (int t = ta; t < tb; t += T) {
        int r = r0;
        for (int rl = rlog2[T - 1]; rl >= 0; rl--) {
            int n = (r1 - r) >> rl << rl;
            if (n > 0)
                dense_tiles[k][T - 1][rl](d, r, r + n, t);
            r += n;
        }
    }
}

static void dense_prepare_bf16(const alm_weight *w, const float *x, int n_tok, size_t x_stride,
                               void *scratch)
{
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    int cols = w->cols;
    for (int t = 0; t < n_tok; t++) {
        const float *xt = x + (size_t)t * x_stride;
        float *dst = (float *)((uint8_t *)scratch + bf16_token_bytes(w) * (size_t)t);
        for (int c = 0; c < cols; c += 32) {
            __m512 a = _mm512_maskz_loadu_ps(mask16(cols - c), xt + c);
            __m512 b = cols - c > 16 ? _mm512_maskz_loadu_ps(mask16(cols - c - 16), xt + c + 16)
                                     : _mm512_setzero_ps();
            _mm512_storeu_ps(dst + c, _mm512_permutex2var_ps(a, even, b));
            _mm512_storeu_ps(dst + c + 16, _mm512_permutex2var_ps(a, odd, b));
        }
    }
}

static void dense_rows(const alm_weight *w, const void *scratch, const float *x, int n_tok,
                       size_t x_stride, float *y, size_t y_stride, int r0, int r1)
{
    dctx d = { .w = w, .x = x, .x_stride = x_stride, .y = y, .y_stride = y_stride };
    int k = 0;
    if (w->dtype == ALM_DTYPE_F16) {
        k = 1;
    } else if (w->dtype == ALM_DTYPE_BF16) {
        k = 2;
        d.x = scratch;
        d.x_stride = bf16_token_bytes(w) / sizeof(float);
    }
    for (int t0 = 0; t0 < n_tok; t0 += TOKEN_BLOCK) {
        int t1 = t0 + TOKEN_BLOCK < n_tok ? t0 + TOKEN_BLOCK : n_tok;
        int n = t1 - t0;
        if (n <= MAX_TOK) {
            dense_tile_range(&d, k, dense_small_rlog2, n, r0, r1, t0, t1);
            continue;
        }
        int full = n / DENSE_BIG_T * DENSE_BIG_T;
        dense_tile_range(&d, k, dense_big_rlog2, DENSE_BIG_T, r0, r1, t0, t0 + full);
        if (full < n)
            dense_tile_range(&d, k, dense_big_rlog2, n - full, r0, r1, t0 + full, t1);
    }
}

/* ------------------------------------------------------------ entry points */

/* One table per activation precision of the quantized kernels (see
 * matmul_avx512_quant.c); dense weights are the same in both. */
#define AVX512_TABLE(NAME, BITS)                                                              \
    static size_t avx512_scratch_size_##BITS(const alm_weight *w, int n_tok)                  \
    {                                                                                         \
        return w->bits ? avx512_quant_scratch_size(w, n_tok, BITS)                            \
                       : dense_scratch_size(w, n_tok);                                        \
    }                                                                                         \
    static void avx512_prepare_##BITS(const alm_weight *w, const float *x, int n_tok,         \
                                      size_t x_stride, void *scratch)                         \
    {                                                                                         \
        if (w->bits)                                                                          \
            avx512_quant_prepare(w, x, n_tok, x_stride, scratch, BITS);                       \
        else if (w->dtype == ALM_DTYPE_BF16)                                                  \
            dense_prepare_bf16(w, x, n_tok, x_stride, scratch);                               \
    }                                                                                         \
    static void avx512_rows_##BITS(const alm_weight *w, const void *scratch, const float *x,  \
                                   int n_tok, size_t x_stride, float *y, size_t y_stride,     \
                                   int r0, int r1)                                            \
    {                                                                                         \
        const void *packed = BITS == 16 && w->bits ? avx512_packed_of(w) : NULL;             \
        if (packed)                                                                           \
            avx512_packed_rows(w, packed, scratch, n_tok, y, y_stride, r0, r1);               \
        else if (w->bits)                                                                     \
            avx512_quant_rows(w, scratch, n_tok, y, y_stride, r0, r1, BITS);                  \
        else                                                                                  \
            dense_rows(w, scratch, x, n_tok, x_stride, y, y_stride, r0, r1);                  \
    }                                                                                         \
    const cpu_kernels NAME = {                                                                \
        .isa = CPU_ISA_AVX512,                                                                \
        .activation_bits = BITS,                                                              \
        .pack_size = BITS == 16 ? avx512_pack_size : NULL,                                    \
        .pack = BITS == 16 ? avx512_pack : NULL,                                              \
        .scratch_size = avx512_scratch_size_##BITS,                                           \
        .prepare = avx512_prepare_##BITS,                                                     \
        .rows = avx512_rows_##BITS,                                                           \
    };
AVX512_TABLE(cpu_kernels_avx512, 16)
AVX512_TABLE(cpu_kernels_avx512_act8, 8)
