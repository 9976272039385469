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


/* Quantized weights (matmul_avx512_quant.c), activations quantized to
 * act_bits = 8 or 16 bits per element. */
size_t avx512_quant_scratch_size(const alm_weight *w, int n_tok, int act_bits);
void avx512_quant_prepare(const alm_weight *w, const float *x, int n_tok, size_t x_stride,
                          void *scratch, int act_bits);
void avx512_quant_rows(const alm_weight *w, const void *scratch, int n_tok, float *y,
                       size_t y_stride, int r0, int r1, int act_bits);

#endif
