/* Helpers shared by the AVX-512 kernel files (matmul_avx512.c: dense and
 * entry points, matmul_avx512_quant.c: quantized). Included only by files
 * compiled with AVX-512 flags. */
#ifndef ALM_CPU_MATMUL_AVX512_H
#define ALM_CPU_MATMUL_AVX512_H

#include <immintrin.h>
#include <stdint.h>

#include "cpu/matmul_internal.h"

/* Loops over the rows, tokens and streams of a tile have constant trip
 * counts: unrolled, their arrays of vectors become registers. */
#define UNROLL _Pragma("GCC unroll 16")
/* Tile arrays have these fixed sizes, never [R][T]: a variable-length
 * array would live in memory even once R and T are constants. */
#define MAX_R 8
#define MAX_TOK 8
/* Tokens whose prepared activations are reused across all the rows of a
 * thread before moving on (they stay in L2). */
#define TOKEN_BLOCK 64

/* The first n lanes (none for n <= 0). */
static inline __mmask16 mask16(int n)
{
    if (n <= 0)
        return 0;
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u);
}

static inline __mmask64 mask64(int n)
{
    if (n <= 0)
        return 0;
    return n >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1);
}

static inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

/* The horizontal sums of a, b, c, d, in that order: 9 operations for four
 * sums instead of 8 per sum. */
static inline __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d)
{
    __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    __m512d abd = _mm512_castps_pd(ab), cdd = _mm512_castps_pd(cd);
    __m512 abcd = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(abd, cdd)),
                                _mm512_castpd_ps(_mm512_unpackhi_pd(abd, cdd)));
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(abcd), _mm512_extractf32x8_ps(abcd, 1));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* y[t + j][r + i] = sum of the lanes of v[i][j], for a tile. */
static inline __attribute__((always_inline))
void store_tile_sums(__m512 v[][MAX_TOK], const int R, const int T, float *y, size_t y_stride,
                     int r, int t)
{
    if (T == 1 && R % 4 == 0) {
        /* one token: its rows are contiguous in y */
        UNROLL
        for (int i = 0; i < R; i += 4)
            _mm_storeu_ps(y + (size_t)t * y_stride + (size_t)(r + i),
                          hsum4(v[i][0], v[i + 1][0], v[i + 2][0], v[i + 3][0]));
        return;
    }
    __m512 flat[MAX_R * MAX_TOK + 3];
    float sums[MAX_R * MAX_TOK + 3];
    int n = 0;
    UNROLL
    for (int j = 0; j < T; j++)
        UNROLL
        for (int i = 0; i < R; i++)
            flat[n++] = v[i][j];
    while (n % 4)
        flat[n++] = _mm512_setzero_ps();
    UNROLL
    for (int k = 0; k < n; k += 4)
        _mm_storeu_ps(sums + k, hsum4(flat[k], flat[k + 1], flat[k + 2], flat[k + 3]));
    UNROLL
    for (int j = 0; j < T; j++)
        UNROLL
        for (int i = 0; i < R; i++)
            y[(size_t)(t + j) * y_stride + (size_t)(r + i)] = sums[j * R + i];
}


/* The activations of quantized weights as cpu_matmul_prepare writes them
 * (matmul_avx512_quant.c); both quantized kernels read this layout. */
typedef struct qlayout {
    int bits;
    int streams;       /* 8 / bits */
    int chunk_elems;   /* elements in 64 bytes of packed weights */
    int chunks;        /* per row, the last one possibly partial */
    int groups;
    int n_tok;
    int digits;        /* activation bytes per element: 1 or 2 */
    /* Scratch: per token a head of [sums of x per group | dx per group],
     * then the digits chunk-major, [chunk][token][digits][streams][64]:
     * the tokens of a tile sit side by side at constant offsets. */
    size_t dx_off;        /* within a head */
    size_t head_bytes;
    size_t digits_off;
    size_t chunk_bytes;   /* digits x streams x 64 bytes */
    size_t chunk_stride;  /* n_tok * chunk_bytes */
    size_t total_bytes;
} qlayout;

/* bits, group sizes and chunk sizes are powers of two (cpu_matmul_check). */
static inline int ilog2(int v) { return __builtin_ctz((unsigned)v); }

static inline qlayout quant_layout(const alm_weight *w, int n_tok, int digits)
{
    qlayout L;
    L.digits = digits;
    int ce_log2 = 9 - ilog2(w->bits);
    L.bits = w->bits;
    L.streams = 8 >> ilog2(w->bits);
    L.chunk_elems = 1 << ce_log2;
    L.chunks = (w->cols + L.chunk_elems - 1) >> ce_log2;
    L.groups = w->cols >> ilog2(w->group_size);
    L.n_tok = n_tok;
    L.dx_off = align64(sizeof(float) * (size_t)L.groups);
    L.head_bytes = 2 * L.dx_off;
    L.digits_off = L.head_bytes * (size_t)n_tok;
    L.chunk_bytes = (size_t)digits * (size_t)L.streams * 64;
    L.chunk_stride = L.chunk_bytes * (size_t)n_tok;
    L.total_bytes = L.digits_off + L.chunk_stride * (size_t)L.chunks;
    return L;
}

static inline const uint8_t *token_head(const qlayout *L, const uint8_t *scratch, int t)
{
    return scratch + L->head_bytes * (size_t)t;
}

static inline const uint8_t *chunk_digits(const qlayout *L, const uint8_t *scratch, int c, int t)
{
    return scratch + L->digits_off + L->chunk_stride * (size_t)c + L->chunk_bytes * (size_t)t;
}

/* Quantized weights (matmul_avx512_quant.c), activations quantized to
 * act_bits = 8 or 16 bits per element. */
size_t avx512_quant_scratch_size(const alm_weight *w, int n_tok, int act_bits);
void avx512_quant_prepare(const alm_weight *w, const float *x, int n_tok, size_t x_stride,
                          void *scratch, int act_bits);
void avx512_quant_rows(const alm_weight *w, const void *scratch, int n_tok, float *y,
                       size_t y_stride, int r0, int r1, int act_bits);


/* 4-bit weights repacked 16 rows side by side (matmul_avx512_packed.c):
 * bytes of the copy (0: w is not 4-bit, or not supported); writes it (0, or
 * -1 when bytes is short); the copy w->backend_data holds, if it is one
 * made from w; the kernel over it (activations from avx512_quant_prepare
 * with 16 bits). */
size_t avx512_pack_size(const alm_weight *w);
int avx512_pack(const alm_weight *w, void *dst, size_t bytes);
const void *avx512_packed_of(const alm_weight *w);
void avx512_packed_rows(const alm_weight *w, const void *packed, const void *scratch, int n_tok,
                        float *y, size_t y_stride, int r0, int r1);

#endif
