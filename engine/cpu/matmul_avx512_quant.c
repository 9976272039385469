/* AVX-512 VNNI kernels for MLX affine quantized weights (2, 4, 8 bits).
 *
 * cpu_matmul_prepare quantizes each token's activations once, group by
 * group (the weight's groups), to integers xq = round(x / dx_g) with dx_g =
 * max|x| of the group / XQ_MAX, and writes them as D signed bytes
 * ("digits"), most significant first: xq = 256 d1 + d0 for D = 2. A 64-byte
 * chunk of packed weights is unpacked into bytes q (one shift and one AND
 * per bit field; no shuffle: the digits are stored in the bit fields'
 * order) and vpdpbusd multiplies them with the digits, 4 byte pairs per
 * 32-bit lane. A lane sums at most 8 (4-bit) or 16 (2-bit) products, so
 * sum q * xq fits in int32 exactly and the digits recombine with a shift
 * between them. A lane lies inside one group, so lanes are
 * scaled by scale_g * dx_g in float and accumulated across chunks, with one
 * horizontal sum per row and token at the end; the biases enter as
 * sum_g bias_g * sum_g(x), the sums (of the exact x) coming from prepare.
 *
 * Activation precision (D digits, chosen with the kernel table:
 * cpu_kernels_for_activation):
 *   16 bits (D = 2, the default): |x - xq dx| <= dx / 2 = max|x_g| / 65200
 *     per element, so |y - exact| <= sum_g max|x_g| / 65200 * sum_g |s q|
 *     (the biases meet the exact sums of x). The product needs logits within
 *     1e-3 of their range and the greedy references (margins down to
 *     0.0014): 16 bits keeps both (tests/conformance), at 2 dot products per
 *     64 weights. (24 bits, 3 dot products, was the first default: measured
 *     20 to 30% slower for 2 to 512 tokens, and no more accurate where the
 *     tests look; removed.)
 *   8 bits (D = 1): an experiment (ALM_ACTIVATION_BITS=8), 4-bit weights
 *     only, one dot product per 64 weights; error max|x_g| / 254 per
 *     element: breaks greedy references of all three 4-bit models.
 * Why integers: vpdpbusd (64 byte products each) against 8 FMAs plus 15
 * shifts and permutes to turn 128 nibbles into floats: measured 4.2 against
 * 6.4 cycles per 128 weights for one token with 24-bit activations.
 *
 * The work is tiled as R rows x T tokens of accumulators in registers, so
 * that a chunk of weights is unpacked once for T tokens and a chunk of
 * digits is loaded once for R rows. */
#include <math.h>
#include <string.h>

#include "cpu/matmul_avx512.h"

/* The largest |xq| for D digits: below what two signed digits hold (127 *
 * 256 + 127 = 32639), with room for the rounding of x / dx; one digit is a
 * plain int8. */
static inline float xq_max(int digits)
{
    return digits == 2 ? 32600.0f : 127.0f;
}
/* Offset that makes the two digits of xq + offset unsigned bytes; XOR with
 * it turns each byte back into the signed digit. */
#define XQ_OFFSET 0x8080

/* Digits per activation: 2 (16 bits); 1 for the 8-bit experiment, which
 * exists for 4-bit weights only (others keep 16 bits). */
static int quant_digits(const alm_weight *w, int act_bits)
{
    return act_bits == 8 && w->bits == 4 ? 1 : 2;
}

size_t avx512_quant_scratch_size(const alm_weight *w, int n_tok, int act_bits)
{
    return quant_layout(w, n_tok, quant_digits(w, act_bits)).total_bytes;
}

/* ------------------------------------------------------------ quantized: prepare */

/* Stores the D digits of 16 activations (already multiplied by 1/dx) of
 * stream p, lanes [k, k + 16) of a chunk. */
static inline __attribute__((always_inline))
void store_digits(__m512 scaled, uint8_t *chunk, int streams, int p, int k, const int D)
{
    __m512i xq = _mm512_cvtps_epi32(scaled);   /* round to nearest even */
    if (D == 1) {
        /* |xq| <= 127 already; saturation only guards the rounding. */
        _mm_storeu_si128((__m128i *)(chunk + (size_t)p * 64 + k), _mm512_cvtsepi32_epi8(xq));
        return;
    }
    __m512i off = _mm512_set1_epi32(XQ_OFFSET);
    __m512i v = _mm512_xor_si512(_mm512_add_epi32(xq, off), off);
    UNROLL
    for (int d = 0; d < D; d++)
        _mm_storeu_si128((__m128i *)(chunk + (size_t)(d * streams + p) * 64 + k),
                         _mm512_cvtepi32_epi8(_mm512_srli_epi32(v, 8 * (D - 1 - d))));
}

static inline __attribute__((always_inline))
void quant_prepare_token(const alm_weight *w, const qlayout *L, const float *x,
                         uint8_t *scratch, int t, const int D)
{
    uint8_t *head = scratch + L->head_bytes * (size_t)t;
    int cols = w->cols, gs = w->group_size, gs_log2 = ilog2(gs);

    /* Per group: the sum of x (exact x, for the biases), and the scale dx
     * that maps max |x| of the group to XQ_MAX. */
    float *sums = (float *)head;
    float *dxs = (float *)(head + L->dx_off);
    bool finite = true;
    for (int g = 0; g < L->groups; g++) {
        __m512 s = _mm512_setzero_ps(), m = _mm512_setzero_ps();
        for (int i = 0; i < gs; i += 16) {
            __m512 v = _mm512_loadu_ps(x + g * gs + i);
            s = _mm512_add_ps(s, v);
            m = _mm512_max_ps(m, _mm512_abs_ps(v));
        }
        float sum = hsum(s), mx = _mm512_reduce_max_ps(m);
        sums[g] = sum;
        /* max_ps drops NaN; the sum keeps it (and Inf). */
        if (!isfinite(sum) || !isfinite(mx)) {
            finite = false;
            mx = 0.0f;
        }
        dxs[g] = mx / xq_max(D);
    }
    size_t pad = L->dx_off - sizeof(float) * (size_t)L->groups;
    memset(sums + L->groups, 0, pad);
    memset(dxs + L->groups, 0, pad);

    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    int P = L->streams;
    for (int c = 0; c < L->chunks; c++) {
        uint8_t *chunk = (uint8_t *)chunk_digits(L, scratch, c, t);
        int base = c * L->chunk_elems;
        for (int k = 0; k < 64; k += 16) {
            /* The 16 * P consecutive columns feeding lanes [k, k + 16);
             * each run of 16 lies inside one group. */
            int first = base + k * P;
            __m512 v[4] = { _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                            _mm512_setzero_ps() };
            for (int i = 0; i < P; i++) {
                int col = first + 16 * i, left = cols - col;
                if (left > 0) {
                    float dx = dxs[col >> gs_log2];
                    float inv = dx > 0.0f ? 1.0f / dx : 0.0f;
                    v[i] = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask16(left), x + col),
                                         _mm512_set1_ps(inv));
                }
            }
            if (P == 1) {
                store_digits(v[0], chunk, 1, 0, k, D);
            } else if (P == 2) {
                store_digits(_mm512_permutex2var_ps(v[0], even, v[1]), chunk, 2, 0, k, D);
                store_digits(_mm512_permutex2var_ps(v[0], odd, v[1]), chunk, 2, 1, k, D);
            } else {
                __m512 e0 = _mm512_permutex2var_ps(v[0], even, v[1]);
                __m512 o0 = _mm512_permutex2var_ps(v[0], odd, v[1]);
                __m512 e1 = _mm512_permutex2var_ps(v[2], even, v[3]);
                __m512 o1 = _mm512_permutex2var_ps(v[2], odd, v[3]);
                store_digits(_mm512_permutex2var_ps(e0, even, e1), chunk, 4, 0, k, D);
                store_digits(_mm512_permutex2var_ps(o0, even, o1), chunk, 4, 1, k, D);
                store_digits(_mm512_permutex2var_ps(e0, odd, e1), chunk, 4, 2, k, D);
                store_digits(_mm512_permutex2var_ps(o0, odd, o1), chunk, 4, 3, k, D);
            }
        }
    }
    if (!finite) {
        /* NaN or Inf in x: the result is NaN, as in fp32. */
        for (int g = 0; g < L->groups; g++)
            dxs[g] = NAN;
    }
}

/* ------------------------------------------------------------ quantized: rows */

typedef struct qctx {
    const alm_weight *w;
    qlayout L;
    const uint8_t *data;
    size_t row_bytes;
    const uint8_t *scratch;
    float *y;
    size_t y_stride;
    __mmask64 tail_mask;   /* bytes of the last chunk of a row (1..64) */
    int gs_log2;
    __m512i scale_index;   /* lane -> group within a chunk */
} qctx;

/* Unpacks 64 bytes of packed weights into streams of bytes q. */
static inline __attribute__((always_inline))
void unpack_chunk(__m512i wv, const int BITS, __m512i *u)
{
    if (BITS == 8) {
        u[0] = wv;
    } else if (BITS == 4) {
        const __m512i m = _mm512_set1_epi8(0x0f);
        u[0] = _mm512_and_si512(wv, m);
        u[1] = _mm512_and_si512(_mm512_srli_epi16(wv, 4), m);
    } else {
        const __m512i m = _mm512_set1_epi8(0x03);
        u[0] = _mm512_and_si512(wv, m);
        u[1] = _mm512_and_si512(_mm512_srli_epi16(wv, 2), m);
        u[2] = _mm512_and_si512(_mm512_srli_epi16(wv, 4), m);
        u[3] = _mm512_and_si512(_mm512_srli_epi16(wv, 6), m);
    }
}

/* sum over a chunk of q * xq, per lane, as float; xv: the chunk's digits,
 * [digit][stream]. */
static inline __attribute__((always_inline))
__m512 chunk_dot(const __m512i *u, const __m512i *xv, const int BITS, const int D)
{
    const int P = 8 / BITS;
    /* xq = 256 d1 + d0: one chain, shifted by
     * 8 bits between digits (measured as fast as independent chains per
     * digit, with fewer instructions). 8-bit weights, two digits: a lane
     * holds at most 4 x 255 x 32639, well inside int32. */
    __m512i s = _mm512_setzero_si512();
    UNROLL
    for (int d = 0; d < D; d++) {
        if (d)
            s = _mm512_slli_epi32(s, 8);
        UNROLL
        for (int p = 0; p < P; p++)
            s = _mm512_dpbusd_epi32(s, u[p], xv[d * P + p]);
    }
    return _mm512_cvtepi32_ps(s);
}

/* Scales and biases of groups [g0, g0 + 16) (masked by gm) of rows
 * [r, r + R) as f32. One switch on the dtype for the whole tile: inside
 * the row loop it cost more than the conversions. */
static inline __attribute__((always_inline))
void load_tile_params(const alm_weight *w, int r, int g0, __mmask16 gm, __m512 *sc, __m512 *bs,
                      const int R)
{
    size_t groups = (size_t)(w->cols >> ilog2(w->group_size));
    size_t first = (size_t)r * groups + (size_t)g0;
    switch (w->scale_dtype) {
    case ALM_DTYPE_BF16: {
        const uint16_t *sp = (const uint16_t *)w->scales + first;
        const uint16_t *bp = (const uint16_t *)w->biases + first;
        UNROLL
        for (int i = 0; i < R; i++) {
            sc[i] = _mm512_castsi512_ps(_mm512_slli_epi32(
                _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(gm, sp + (size_t)i * groups)), 16));
            bs[i] = _mm512_castsi512_ps(_mm512_slli_epi32(
                _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(gm, bp + (size_t)i * groups)), 16));
        }
        break;
    }
    case ALM_DTYPE_F16: {
        const uint16_t *sp = (const uint16_t *)w->scales + first;
        const uint16_t *bp = (const uint16_t *)w->biases + first;
        UNROLL
        for (int i = 0; i < R; i++) {
            sc[i] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gm, sp + (size_t)i * groups));
            bs[i] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gm, bp + (size_t)i * groups));
        }
        break;
    }
    default: {
        const float *sp = (const float *)w->scales + first;
        const float *bp = (const float *)w->biases + first;
        UNROLL
        for (int i = 0; i < R; i++) {
            sc[i] = _mm512_maskz_loadu_ps(gm, sp + (size_t)i * groups);
            bs[i] = _mm512_maskz_loadu_ps(gm, bp + (size_t)i * groups);
        }
        break;
    }
    }
}

/* One chunk of rows [r, r + R) (wc: the chunk in row r) for T tokens (xc:
 * the chunk's digits of the first token; the others follow). */
static inline __attribute__((always_inline))
void quant_chunk(const qctx *q, const uint8_t *wc, const uint8_t *xc, __m512i sidx,
                 __m512 acc[][MAX_TOK], __m512 scx[][MAX_TOK], const int BITS, const int D,
                 const int R, const int T, const bool last)
{
    const size_t chunk_bytes = (size_t)D * (size_t)(8 / BITS) * 64;
    __m512i u[MAX_R][4];
    UNROLL
    for (int i = 0; i < R; i++) {
        const uint8_t *wp = wc + (size_t)i * q->row_bytes;
        __m512i wv = last ? _mm512_maskz_loadu_epi8(q->tail_mask, wp) : _mm512_loadu_si512(wp);
        unpack_chunk(wv, BITS, u[i]);
    }
    UNROLL
    for (int j = 0; j < T; j++) {
        const uint8_t *xd = xc + (size_t)j * chunk_bytes;
        __m512i xv[8];
        const int vectors = D * 8 / BITS;   /* digits x streams */
        UNROLL
        for (int k = 0; k < vectors; k++)
            xv[k] = _mm512_loadu_si512(xd + k * 64);
        UNROLL
        for (int i = 0; i < R; i++)
            acc[i][j] = _mm512_fmadd_ps(chunk_dot(u[i], xv, BITS, D),
                                        _mm512_permutexvar_ps(sidx, scx[i][j]), acc[i][j]);
    }
}

/* Rows [r, r + R) x tokens [t, t + T) over all columns.
 *
 * The columns go by segments of 16 groups: the scales and biases of a
 * segment are converted to one f32 vector per row, kept in registers (a
 * round trip through memory would stall on store forwarding), and each
 * chunk picks its lanes' scales out of it with one permute. */
static inline __attribute__((always_inline))
void quant_tile(const qctx *q, int r, int t, const int BITS, const int D, const int R,
                const int T)
{
    const alm_weight *w = q->w;
    const qlayout *L = &q->L;
    const int CE = 512 / BITS;
    const int gs_log2 = ilog2(w->group_size);
    /* Chunks per segment of 16 groups (16 * group >= CE for every format). */
    const int seg_chunks = (16 << gs_log2) / CE;
    __m512 acc[MAX_R][MAX_TOK];
    UNROLL
    for (int i = 0; i < R; i++)
        UNROLL
        for (int j = 0; j < T; j++)
            acc[i][j] = _mm512_setzero_ps();
    const uint8_t *tok[MAX_TOK];
    UNROLL
    for (int j = 0; j < T; j++)
        tok[j] = token_head(L, q->scratch, t + j);
    const uint8_t *wrow = q->data + (size_t)r * q->row_bytes;
    /* scale[g] * dx[g] of the segment's groups, per row and token: read
     * back whole (store forwarding works) by the permutes below. */
    __m512 scx[MAX_R][MAX_TOK];

    for (int g0 = 0, c0 = 0; g0 < L->groups; g0 += 16, c0 += seg_chunks) {
        int ng = L->groups - g0;
        int c1 = ng > 16 ? c0 + seg_chunks : L->chunks;
        __mmask16 gm = mask16(ng);
        __m512 sc[MAX_R], bs[MAX_R];
        load_tile_params(w, r, g0, gm, sc, bs, R);
        UNROLL
        for (int j = 0; j < T; j++) {
            __m512 sums = _mm512_maskz_loadu_ps(gm, (const float *)tok[j] + g0);
            __m512 dxs = _mm512_maskz_loadu_ps(gm, (const float *)(tok[j] + L->dx_off) + g0);
            UNROLL
            for (int i = 0; i < R; i++) {
                /* the biases: sum_g bias[g] * sum_g(x) */
                acc[i][j] = _mm512_fmadd_ps(bs[i], sums, acc[i][j]);
                scx[i][j] = _mm512_mul_ps(sc[i], dxs);
            }
        }
        /* The last chunk of a row may be partial: it alone takes a masked
         * load, outside the loop. */
        int c_end = c1 == L->chunks ? c1 - 1 : c1;
        int c = c0;
        /* The groups of the chunk's lanes, within the segment: they move on
         * by CE / gs per chunk, or by one every gs / CE chunks. */
        const uint8_t *wc = wrow + (size_t)c * 64;
        const uint8_t *xc = chunk_digits(L, q->scratch, c, t);
        if (gs_log2 <= ilog2(CE)) {
            const __m512i step = _mm512_set1_epi32(CE >> gs_log2);
            __m512i sidx = q->scale_index;
            for (; c < c_end; c++) {
                quant_chunk(q, wc, xc, sidx, acc, scx, BITS, D, R, T, false);
                sidx = _mm512_add_epi32(sidx, step);
                wc += 64;
                xc += L->chunk_stride;
            }
            if (c < c1)
                quant_chunk(q, wc, xc, sidx, acc, scx, BITS, D, R, T, true);
        } else {
            for (; c < c1; c++) {
                __m512i sidx = _mm512_set1_epi32(((c * CE) >> gs_log2) - g0);
                quant_chunk(q, wc, xc, sidx, acc, scx, BITS, D, R, T, c == L->chunks - 1);
                wc += 64;
                xc += L->chunk_stride;
            }
        }
    }
    store_tile_sums(acc, R, T, q->y, q->y_stride, r, t);
}

/* Tiles over rows [r0, r1) (a multiple of R of them), tokens [t, t + T). */
typedef void (*quant_tile_fn)(const qctx *q, int r0, int r1, int t);

#define QUANT_TILE(BITS, D, R, T)                                                         \
    static void quant_tile_##BITS##_##D##_##R##_##T(const qctx *q, int r0, int r1, int t) \
    {                                                                                     \
        for (int r = r0; r < r1; r += R)                                                  \
            quant_tile(q, r, t, BITS, D, R, T);                                           \
    }
/* Rows per tile: 8 for one token, 4 for two, else 2; more would spill
 * registers. Each T also has the smaller tiles for leftover rows. */
#define QUANT_TILES_SMALL(BITS, D, T) QUANT_TILE(BITS, D, 1, T) QUANT_TILE(BITS, D, 2, T)
#define QUANT_TILES(BITS, D)                                                         \
    QUANT_TILES_SMALL(BITS, D, 1) QUANT_TILE(BITS, D, 4, 1) QUANT_TILE(BITS, D, 8, 1) \
    QUANT_TILES_SMALL(BITS, D, 2) QUANT_TILE(BITS, D, 4, 2)                          \
    QUANT_TILES_SMALL(BITS, D, 3) QUANT_TILES_SMALL(BITS, D, 4)                      \
    QUANT_TILES_SMALL(BITS, D, 5) QUANT_TILES_SMALL(BITS, D, 6)                      \
    QUANT_TILES_SMALL(BITS, D, 7) QUANT_TILES_SMALL(BITS, D, 8)
#define QUANT_TILES_D(D) QUANT_TILES(2, D) QUANT_TILES(4, D) QUANT_TILES(8, D)
/* The 8-bit experiment only for 4-bit weights (the models' format): each
 * variant adds a third of this file's compile time. */
QUANT_TILES(4, 1)
QUANT_TILES_D(2)

#define QUANT_ROW_T(BITS, D, T) { quant_tile_##BITS##_##D##_1_##T, quant_tile_##BITS##_##D##_2_##T }
#define QUANT_ROW(BITS, D)                                                                   \
    { { quant_tile_##BITS##_##D##_1_1, quant_tile_##BITS##_##D##_2_1,                        \
        quant_tile_##BITS##_##D##_4_1, quant_tile_##BITS##_##D##_8_1 },                      \
      { quant_tile_##BITS##_##D##_1_2, quant_tile_##BITS##_##D##_2_2,                        \
        quant_tile_##BITS##_##D##_4_2 },                                                     \
      QUANT_ROW_T(BITS, D, 3), QUANT_ROW_T(BITS, D, 4), QUANT_ROW_T(BITS, D, 5),             \
      QUANT_ROW_T(BITS, D, 6), QUANT_ROW_T(BITS, D, 7), QUANT_ROW_T(BITS, D, 8) }
#define QUANT_ROWS_D(D) { QUANT_ROW(2, D), QUANT_ROW(4, D), QUANT_ROW(8, D) }
/* [digits - 1][bits 2, 4, 8][T - 1][log2 R]; see quant_digits. */
static const quant_tile_fn quant_tiles[2][3][MAX_TOK][4] = {
    { { { NULL } }, QUANT_ROW(4, 1), { { NULL } } },
    QUANT_ROWS_D(2),
};

/* log2 of the rows per tile for T tokens (the largest in quant_tiles):
 * 8 rows for one token (measured 8 to 15% faster than 4), 4 for two (12-17%
 * faster than 2), 2 from three tokens on (4 would spill registers). */
static const int quant_tile_rlog2[MAX_TOK] = { 3, 2, 1, 1, 1, 1, 1, 1 };
/* Tokens per tile when there are more than MAX_TOK (measured: 4 to 8 are
 * within a few percent of each other). */
static const int quant_big_t = 4;

static void quant_tile_range(const qctx *q, const quant_tile_fn (*tiles)[4], int T, int r0,
                             int r1, int ta, int tb)
{
    for (int t = ta; t < tb; t += T) {
        /* Tiles of R rows, then the leftover rows in smaller tiles. */
        int r = r0;
        for (int rl = quant_tile_rlog2[T - 1]; rl >= 0; rl--) {
            int n = (r1 - r) >> rl << rl;
            if (n > 0)
                tiles[T - 1][rl](q, r, r + n, t);
            r += n;
        }
    }
}

void avx512_quant_rows(const alm_weight *w, const void *scratch, int n_tok, float *y,
                       size_t y_stride, int r0, int r1, int act_bits)
{
    qctx q;
    int digits = quant_digits(w, act_bits);
    q.w = w;
    q.L = quant_layout(w, n_tok, digits);
    q.data = w->data;
    q.row_bytes = alm_weight_row_bytes(w);
    q.scratch = scratch;
    q.y = y;
    q.y_stride = y_stride;
    q.tail_mask = mask64((int)(q.row_bytes - (size_t)(q.L.chunks - 1) * 64));
    q.gs_log2 = ilog2(w->group_size);
    /* Lane j of a chunk covers columns [j * E, (j + 1) * E) of it. */
    int e_log2 = ilog2(q.L.chunk_elems) - 4, gs_log2 = ilog2(w->group_size);
    int idx[16];
    for (int j = 0; j < 16; j++)
        idx[j] = w->group_size <= q.L.chunk_elems ? (j << e_log2) >> gs_log2 : 0;
    q.scale_index = _mm512_loadu_si512(idx);
    int b = w->bits == 2 ? 0 : w->bits == 4 ? 1 : 2;
    const quant_tile_fn (*tiles)[4] = quant_tiles[digits - 1][b];

    for (int t0 = 0; t0 < n_tok; t0 += TOKEN_BLOCK) {
        int t1 = t0 + TOKEN_BLOCK < n_tok ? t0 + TOKEN_BLOCK : n_tok;
        int n = t1 - t0;
        if (n <= MAX_TOK) {
            quant_tile_range(&q, tiles, n, r0, r1, t0, t1);
            continue;
        }
        int full = n / quant_big_t * quant_big_t;
        quant_tile_range(&q, tiles, quant_big_t, r0, r1, t0, t0 + full);
        if (full < n)
            quant_tile_range(&q, tiles, n - full, r0, r1, t0 + full, t1);
    }
}

/* One function per digit count, so that each store_digits is unrolled. */
#define QUANT_PREPARE(D)                                                                   \
    static void quant_prepare_##D(const alm_weight *w, const float *x, int n_tok,          \
                                  size_t x_stride, void *scratch)                          \
    {                                                                                      \
        qlayout L = quant_layout(w, n_tok, D);                                             \
        for (int t = 0; t < n_tok; t++)                                                    \
            quant_prepare_token(w, &L, x + (size_t)t * x_stride, scratch, t, D);           \
    }
QUANT_PREPARE(1)
QUANT_PREPARE(2)

void avx512_quant_prepare(const alm_weight *w, const float *x, int n_tok, size_t x_stride,
                          void *scratch, int act_bits)
{
    if (quant_digits(w, act_bits) == 1)
        quant_prepare_1(w, x, n_tok, x_stride, scratch);
    else
        quant_prepare_2(w, x, n_tok, x_stride, scratch);
}
