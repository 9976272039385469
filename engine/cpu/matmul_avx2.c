/* AVX2 + FMA + F16C kernels, for CPUs without AVX-512 VNNI. Compiled with
 * those flags; only ever called once the dispatcher has seen the CPU run
 * them.
 *
 * fp32 FMA throughout, on weights converted in registers. Quantized
 * weights: 8 packed bytes are widened to 8 dwords and each bit field is
 * masked out and converted to float; the activations are prepared as
 * streams that match the bit fields (see matmul_internal.h), so no weight
 * is ever shuffled. Each group accumulates sum(q x) in its own register,
 * scaled once per group; the biases enter as bias[g] * sum_g(x).
 * Work is tiled as R rows x T tokens so that weights are unpacked once for
 * T tokens. */
#include <immintrin.h>
#include <string.h>

#include "cpu/matmul_internal.h"

/* Loops over the rows, tokens and streams of a tile have constant trip
 * counts: unrolled, their arrays of vectors become registers. */
#define UNROLL _Pragma("GCC unroll 16")
/* Tile arrays have these fixed sizes, never [R][T]: a variable-length
 * array would live in memory even once R and T are constants. */
#define MAX_R 4
#define MAX_TOK 8

#define TOKEN_BLOCK 64

/* ------------------------------------------------------------ layout */

/* Per token: [sums: one float per group][streams of x: per 8 packed bytes,
 * `streams` runs of 8 floats]. */
static size_t quant_token_bytes(const alm_weight *w)
{
    return quant_sums_bytes(w) + align64(sizeof(float) * (size_t)w->cols);
}

static size_t avx2_scratch_size(const alm_weight *w, int n_tok)
{
    if (!w->bits)
        return 64;
    return quant_token_bytes(w) * (size_t)n_tok;
}

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static void avx2_prepare(const alm_weight *w, const float *x, int n_tok, size_t x_stride,
                         void *scratch)
{
    if (!w->bits)
        return;
    int gs = w->group_size, groups = quant_groups(w), P = quant_streams(w);
    int block = 8 * P;
    for (int t = 0; t < n_tok; t++) {
        const float *xt = x + (size_t)t * x_stride;
        uint8_t *dst = (uint8_t *)scratch + quant_token_bytes(w) * (size_t)t;
        float *sums = (float *)dst;
        float *xs = (float *)(dst + quant_sums_bytes(w));
        for (int g = 0; g < groups; g++) {
            __m256 s = _mm256_setzero_ps();
            for (int i = 0; i < gs; i += 8)
                s = _mm256_add_ps(s, _mm256_loadu_ps(xt + g * gs + i));
            sums[g] = hsum8(s);
        }
        /* Stream p of a block: elements p, p + P, ... (cols is a multiple
         * of the block: groups are multiples of 32 columns). */
        for (int c = 0; c < w->cols; c += block)
            UNROLL
            for (int p = 0; p < P; p++)
                for (int k = 0; k < 8; k++)
                    xs[c + p * 8 + k] = xt[c + k * P + p];
    }
}

/* ------------------------------------------------------------ quantized */

typedef struct qctx {
    const alm_weight *w;
    size_t row_bytes;
    const uint8_t *scratch;
    size_t token_bytes;
    float *y;
    size_t y_stride;
} qctx;

static inline __m256i load8_u8(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)v));
}

static inline __attribute__((always_inline))
void quant_tile(const qctx *q, int r, int t, const int BITS, const int R, const int T)
{
    const alm_weight *w = q->w;
    const int P = 8 / BITS;
    const int gs = w->group_size;
    const int groups = quant_groups(w);
    const __m256i mask = _mm256_set1_epi32((1 << BITS) - 1);
    __m256 acc[MAX_R][MAX_TOK];
    UNROLL
    for (int i = 0; i < R; i++)
        UNROLL
        for (int j = 0; j < T; j++)
            acc[i][j] = _mm256_setzero_ps();
    const float *xs[MAX_TOK];
    UNROLL
    for (int j = 0; j < T; j++)
        xs[j] = (const float *)(q->scratch + q->token_bytes * (size_t)(t + j) +
                                quant_sums_bytes(w));

    for (int g = 0; g < groups; g++) {
        __m256 gacc[MAX_R][MAX_TOK][4];
        UNROLL
        for (int i = 0; i < R; i++)
            UNROLL
            for (int j = 0; j < T; j++)
                UNROLL
                for (int p = 0; p < P; p++)
                    gacc[i][j][p] = _mm256_setzero_ps();
        for (int c = g * gs; c < (g + 1) * gs; c += 8 * P) {
            __m256 qf[MAX_R][4];
            UNROLL
            for (int i = 0; i < R; i++) {
                __m256i v = load8_u8((const uint8_t *)w->data + (size_t)(r + i) * q->row_bytes +
                                     (size_t)c * (size_t)BITS / 8);
                UNROLL
                for (int p = 0; p < P; p++)
                    qf[i][p] = _mm256_cvtepi32_ps(
                        _mm256_and_si256(_mm256_srli_epi32(v, p * BITS), mask));
            }
            UNROLL
            for (int j = 0; j < T; j++)
                UNROLL
                for (int p = 0; p < P; p++) {
                    __m256 xv = _mm256_loadu_ps(xs[j] + c + p * 8);
                    UNROLL
                    for (int i = 0; i < R; i++)
                        gacc[i][j][p] = _mm256_fmadd_ps(qf[i][p], xv, gacc[i][j][p]);
                }
        }
        UNROLL
        for (int i = 0; i < R; i++) {
            __m256 s = _mm256_set1_ps(
                quant_param(w, w->scales, (size_t)(r + i) * (size_t)groups + (size_t)g));
            UNROLL
            for (int j = 0; j < T; j++) {
                __m256 sum = gacc[i][j][0];
                for (int p = 1; p < P; p++)
                    sum = _mm256_add_ps(sum, gacc[i][j][p]);
                acc[i][j] = _mm256_fmadd_ps(sum, s, acc[i][j]);
            }
        }
    }

    UNROLL
    for (int i = 0; i < R; i++)
        UNROLL
        for (int j = 0; j < T; j++) {
            const float *sums = (const float *)(q->scratch + q->token_bytes * (size_t)(t + j));
            float b = 0.0f;
            for (int g = 0; g < groups; g++)
                b += quant_param(w, w->biases, (size_t)(r + i) * (size_t)groups + (size_t)g) *
                     sums[g];
            q->y[(size_t)(t + j) * q->y_stride + (size_t)(r + i)] = hsum8(acc[i][j]) + b;
        }
}

#define MAX_T 4 /* tokens per tile */

/* Visits rows [r0, r1) x tokens [0, n_tok) tile by tile: blocks of
 * TOKEN_BLOCK tokens, each split into runs of MAX_T tokens and a shorter
 * rest of T tokens; rows in groups of tile_rows[T - 1] ("wide" tiles), then
 * single rows for what is left. */
typedef void (*tile_visit_fn)(const void *ctx, int T, int wide, int r, int t);

static void for_each_tile(int n_tok, int r0, int r1, const int *tile_rows,
                          tile_visit_fn visit, const void *ctx)
{
    for (int t0 = 0; t0 < n_tok; t0 += TOKEN_BLOCK) {
        int t1 = t0 + TOKEN_BLOCK < n_tok ? t0 + TOKEN_BLOCK : n_tok;
        int full_t = (t1 - t0) / MAX_T * MAX_T;
        for (int part = 0; part < 2; part++) {
            int T = part == 0 ? MAX_T : (t1 - t0) - full_t;
            int ta = part == 0 ? t0 : t0 + full_t;
            int tb = part == 0 ? t0 + full_t : t1;
            if (T == 0 || ta >= tb)
                continue;
            int R = tile_rows[T - 1];
            int r = r0;
            for (; r + R <= r1; r += R)
                for (int t = ta; t < tb; t += T)
                    visit(ctx, T, 1, r, t);
            for (; r < r1; r++)
                for (int t = ta; t < tb; t += T)
                    visit(ctx, T, 0, r, t);
        }
    }
}

typedef void (*quant_tile_fn)(const qctx *q, int r, int t);

#define QUANT_TILE(BITS, R, T)                                              \
    static void quant_tile_##BITS##_##R##_##T(const qctx *q, int r, int t)  \
    {                                                                       \
        quant_tile(q, r, t, BITS, R, T);                                    \
    }
#define QUANT_TILES(BITS)                                                   \
    QUANT_TILE(BITS, 1, 1) QUANT_TILE(BITS, 2, 1)                           \
    QUANT_TILE(BITS, 1, 2) QUANT_TILE(BITS, 1, 3) QUANT_TILE(BITS, 1, 4)
QUANT_TILES(2)
QUANT_TILES(4)
QUANT_TILES(8)

#define QUANT_ROW(BITS)                                                     \
    { { quant_tile_##BITS##_1_1, quant_tile_##BITS##_2_1 },                 \
      { quant_tile_##BITS##_1_2, quant_tile_##BITS##_1_2 },                 \
      { quant_tile_##BITS##_1_3, quant_tile_##BITS##_1_3 },                 \
      { quant_tile_##BITS##_1_4, quant_tile_##BITS##_1_4 } }
/* [bits][T - 1] = { R = 1, R = max } */
static const quant_tile_fn quant_tiles[3][4][2] = {
    QUANT_ROW(2), QUANT_ROW(4), QUANT_ROW(8),
};
static const int quant_tile_rows[4] = { 2, 1, 1, 1 };

struct quant_visit_ctx {
    const qctx *q;
    int bits_index;   /* 2, 4, 8 bits: 0, 1, 2 */
};

static void quant_visit(const void *ctx, int T, int wide, int r, int t)
{
    const struct quant_visit_ctx *v = ctx;
    quant_tiles[v->bits_index][T - 1][wide](v->q, r, t);
}

static void quant_rows(const alm_weight *w, const void *scratch, int n_tok, float *y,
                       size_t y_stride, int r0, int r1)
{
    qctx q = {
        .w = w,
        .row_bytes = alm_weight_row_bytes(w),
        .scratch = scratch,
        .token_bytes = quant_token_bytes(w),
        .y = y,
        .y_stride = y_stride,
    };
    struct quant_visit_ctx v = { &q, w->bits == 2 ? 0 : w->bits == 4 ? 1 : 2 };
    for_each_tile(n_tok, r0, r1, quant_tile_rows, quant_visit, &v);
}

/* ------------------------------------------------------------ dense */

typedef struct dctx {
    const alm_weight *w;
    const float *x;
    size_t x_stride;
    float *y;
    size_t y_stride;
} dctx;

static inline __attribute__((always_inline))
__m256 load8_weights(const void *data, size_t off, const alm_dtype DT)
{
    if (DT == ALM_DTYPE_BF16) {
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)data + off));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    if (DT == ALM_DTYPE_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)data + off)));
    return _mm256_loadu_ps((const float *)data + off);
}

static inline __attribute__((always_inline))
void dense_tile(const dctx *d, int r, int t, const alm_dtype DT, const int R, const int T)
{
    const alm_weight *w = d->w;
    const size_t cols = (size_t)w->cols;
    const size_t full = cols / 8 * 8;
    __m256 acc[MAX_R][MAX_TOK];
    UNROLL
    for (int i = 0; i < R; i++)
        UNROLL
        for (int j = 0; j < T; j++)
            acc[i][j] = _mm256_setzero_ps();
    for (size_t c = 0; c < full; c += 8) {
        __m256 wv[MAX_R];
        UNROLL
        for (int i = 0; i < R; i++)
            wv[i] = load8_weights(w->data, (size_t)(r + i) * cols + c, DT);
        UNROLL
        for (int j = 0; j < T; j++) {
            __m256 xv = _mm256_loadu_ps(d->x + (size_t)(t + j) * d->x_stride + c);
            UNROLL
            for (int i = 0; i < R; i++)
                acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
        }
    }
    UNROLL
    for (int i = 0; i < R; i++)
        UNROLL
        for (int j = 0; j < T; j++) {
            const float *xt = d->x + (size_t)(t + j) * d->x_stride;
            float s = hsum8(acc[i][j]);
            for (size_t c = full; c < cols; c++)
                s += alm_load_as_f32(DT, w->data, (size_t)(r + i) * cols + c) * xt[c];
            d->y[(size_t)(t + j) * d->y_stride + (size_t)(r + i)] = s;
        }
}

typedef void (*dense_tile_fn)(const dctx *d, int r, int t);

#define DENSE_TILE(DT, NAME, R, T)                                          \
    static void dense_tile_##NAME##_##R##_##T(const dctx *d, int r, int t)  \
    {                                                                       \
        dense_tile(d, r, t, DT, R, T);                                      \
    }
#define DENSE_TILES(DT, NAME)                                               \
    DENSE_TILE(DT, NAME, 1, 1) DENSE_TILE(DT, NAME, 4, 1)                   \
    DENSE_TILE(DT, NAME, 1, 2) DENSE_TILE(DT, NAME, 4, 2)                   \
    DENSE_TILE(DT, NAME, 1, 3) DENSE_TILE(DT, NAME, 3, 3)                   \
    DENSE_TILE(DT, NAME, 1, 4) DENSE_TILE(DT, NAME, 2, 4)
DENSE_TILES(ALM_DTYPE_F32, f32)
DENSE_TILES(ALM_DTYPE_F16, f16)
DENSE_TILES(ALM_DTYPE_BF16, bf16)

#define DENSE_ROW(NAME)                                                     \
    { { dense_tile_##NAME##_1_1, dense_tile_##NAME##_4_1 },                 \
      { dense_tile_##NAME##_1_2, dense_tile_##NAME##_4_2 },                 \
      { dense_tile_##NAME##_1_3, dense_tile_##NAME##_3_3 },                 \
      { dense_tile_##NAME##_1_4, dense_tile_##NAME##_2_4 } }
static const dense_tile_fn dense_tiles[3][4][2] = {
    DENSE_ROW(f32), DENSE_ROW(f16), DENSE_ROW(bf16),
};
static const int dense_tile_rows[4] = { 4, 4, 3, 2 };

struct dense_visit_ctx {
    const dctx *d;
    int dtype_index;  /* F32, F16, BF16: 0, 1, 2 */
};

static void dense_visit(const void *ctx, int T, int wide, int r, int t)
{
    const struct dense_visit_ctx *v = ctx;
    dense_tiles[v->dtype_index][T - 1][wide](v->d, r, t);
}

static void dense_rows(const alm_weight *w, const float *x, int n_tok, size_t x_stride,
                       float *y, size_t y_stride, int r0, int r1)
{
    dctx d = { .w = w, .x = x, .x_stride = x_stride, .y = y, .y_stride = y_stride };
    struct dense_visit_ctx v = { &d, w->dtype == ALM_DTYPE_F16 ? 1 : w->dtype == ALM_DTYPE_BF16 ? 2 : 0 };
    for_each_tile(n_tok, r0, r1, dense_tile_rows, dense_visit, &v);
}

static void avx2_rows(const alm_weight *w, const void *scratch, const float *x, int n_tok,
                      size_t x_stride, float *y, size_t y_stride, int r0, int r1)
{
    if (w->bits)
        quant_rows(w, scratch, n_tok, y, y_stride, r0, r1);
    else
        dense_rows(w, x, n_tok, x_stride, y, y_stride, r0, r1);
}

const cpu_kernels cpu_kernels_avx2 = {
    .isa = CPU_ISA_AVX2,
    .activation_bits = 32,
    .scratch_size = avx2_scratch_size,
    .prepare = avx2_prepare,
    .rows = avx2_rows,
};
