/* The SIMD vocabulary shared by the AVX2 and AVX-512 kernel files: a vector
 * type `vec` of VLEN floats and the few operations the kernels are written
 * in (arithmetic, exp, horizontal reductions, masks), plus the element-wise
 * row functions built on them.
 *
 * The instruction set is the one the including file is compiled for
 * (-mavx512f or -mavx2 -mfma): each ISA file includes this header, so the
 * algorithms are written once and compiled once per ISA. Include it only
 * from files built with those flags. */
#ifndef ALM_CPU_VECTOR_OPS_SIMD_H
#define ALM_CPU_VECTOR_OPS_SIMD_H

#include <immintrin.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#define SIMD_INLINE static inline __attribute__((always_inline))

#if defined(__AVX512F__)

typedef __m512 vec;
#define VLEN 16

SIMD_INLINE vec v_zero(void) { return _mm512_setzero_ps(); }
/* x, held in a register: stops the compiler from folding the load that made
 * x into each instruction using it (a load per use, which costs load
 * bandwidth where x is used several times). */
SIMD_INLINE vec v_pin(vec x)
{
    __asm__("" : "+v"(x));
    return x;
}
SIMD_INLINE vec v_set1(float x) { return _mm512_set1_ps(x); }
SIMD_INLINE vec v_load(const float *p) { return _mm512_loadu_ps(p); }
SIMD_INLINE void v_store(float *p, vec x) { _mm512_storeu_ps(p, x); }
SIMD_INLINE vec v_add(vec a, vec b) { return _mm512_add_ps(a, b); }
SIMD_INLINE vec v_sub(vec a, vec b) { return _mm512_sub_ps(a, b); }
SIMD_INLINE vec v_mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
SIMD_INLINE vec v_div(vec a, vec b) { return _mm512_div_ps(a, b); }
/* a * b + c */
SIMD_INLINE vec v_fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
/* max/min return b where either is NaN (the x86 rule): callers put the
 * value that should carry a NaN through in b. */
SIMD_INLINE vec v_max(vec a, vec b) { return _mm512_max_ps(a, b); }
SIMD_INLINE vec v_min(vec a, vec b) { return _mm512_min_ps(a, b); }
SIMD_INLINE float v_hsum(vec x) { return _mm512_reduce_add_ps(x); }
SIMD_INLINE float v_hmax(vec x) { return _mm512_reduce_max_ps(x); }
SIMD_INLINE vec v_iota(void)
{
    return _mm512_set_ps(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
}
SIMD_INLINE vec v_round(vec x)
{
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
/* p * 2^n for integral n in [-150, 150]. */
SIMD_INLINE vec v_ldexp(vec p, vec n) { return _mm512_scalef_ps(p, n); }
/* x where lo <= p <= hi, -inf elsewhere (the attention mask). */
SIMD_INLINE vec v_keep_between(vec x, vec p, vec lo, vec hi)
{
    __mmask16 in = _mm512_cmp_ps_mask(p, lo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(p, hi, _CMP_LE_OQ);
    return _mm512_mask_blend_ps(in, _mm512_set1_ps(-INFINITY), x);
}
/* r, with 0 in the lanes where x < limit. */
SIMD_INLINE vec v_zero_where_below(vec r, vec x, float limit)
{
    __mmask16 below = _mm512_cmp_ps_mask(x, _mm512_set1_ps(limit), _CMP_LT_OQ);
    return _mm512_mask_blend_ps(below, r, _mm512_setzero_ps());
}
/* m, with 0 in the lanes where m is -inf. */
SIMD_INLINE vec v_finite_or_zero(vec m)
{
    __mmask16 ninf = _mm512_cmp_ps_mask(m, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ);
    return _mm512_mask_blend_ps(ninf, m, _mm512_setzero_ps());
}

/* The low halves of a and b, end to end; and the high halves. */
SIMD_INLINE vec v_low_halves(vec a, vec b)
{
    return _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0));
}
SIMD_INLINE vec v_high_halves(vec a, vec b)
{
    return _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2));
}

/* Horizontal sums of VLEN vectors at once: lane V_REDUCE_LANE(i) of the
 * result is the sum of the lanes of a[i]. A transpose-and-add tree, 3
 * instructions per input vector instead of a full reduction each; the
 * first two levels shuffle within 128-bit lanes, which is cheaper than
 * across them. */
#define V_REDUCE_LANE(i) (i)
SIMD_INLINE vec v_reduce_many(const vec a[VLEN])
{
    vec x[8], z[4], e[2];
    for (int j = 0; j < 8; j++)   /* per 128-bit lane: a[2j], a[2j+1], a[2j], a[2j+1] */
        x[j] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * j], a[2 * j + 1]),
                             _mm512_unpackhi_ps(a[2 * j], a[2 * j + 1]));
    for (int j = 0; j < 4; j++) { /* element c of each 128-bit lane <- a[4j + c] */
        __m512d lo = _mm512_unpacklo_pd(_mm512_castps_pd(x[2 * j]), _mm512_castps_pd(x[2 * j + 1]));
        __m512d hi = _mm512_unpackhi_pd(_mm512_castps_pd(x[2 * j]), _mm512_castps_pd(x[2 * j + 1]));
        z[j] = _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));
    }
    for (int j = 0; j < 2; j++)   /* quarters 0-1: a[8j + c], quarters 2-3: a[8j + 4 + c] */
        e[j] = _mm512_add_ps(_mm512_shuffle_f32x4(z[2 * j], z[2 * j + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(z[2 * j], z[2 * j + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    /* element c of quarter q <- a[4q + c] */
    return _mm512_add_ps(_mm512_shuffle_f32x4(e[0], e[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(e[0], e[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

#elif defined(__AVX2__) && defined(__FMA__)

typedef __m256 vec;
#define VLEN 8

SIMD_INLINE vec v_zero(void) { return _mm256_setzero_ps(); }
SIMD_INLINE vec v_pin(vec x)
{
    __asm__("" : "+x"(x));
    return x;
}
SIMD_INLINE vec v_set1(float x) { return _mm256_set1_ps(x); }
SIMD_INLINE vec v_load(const float *p) { return _mm256_loadu_ps(p); }
SIMD_INLINE void v_store(float *p, vec x) { _mm256_storeu_ps(p, x); }
SIMD_INLINE vec v_add(vec a, vec b) { return _mm256_add_ps(a, b); }
SIMD_INLINE vec v_sub(vec a, vec b) { return _mm256_sub_ps(a, b); }
SIMD_INLINE vec v_mul(vec a, vec b) { return _mm256_mul_ps(a, b); }
SIMD_INLINE vec v_div(vec a, vec b) { return _mm256_div_ps(a, b); }
SIMD_INLINE vec v_fma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
SIMD_INLINE vec v_max(vec a, vec b) { return _mm256_max_ps(a, b); }
SIMD_INLINE vec v_min(vec a, vec b) { return _mm256_min_ps(a, b); }
SIMD_INLINE float v_hsum(vec x)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
SIMD_INLINE float v_hmax(vec x)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
SIMD_INLINE vec v_iota(void) { return _mm256_set_ps(7, 6, 5, 4, 3, 2, 1, 0); }
SIMD_INLINE vec v_round(vec x)
{
    return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
/* p * 2^n for integral n in [-252, 254]: two factors, each a normal
 * power of two, so that both ends of the float range are reached. */
SIMD_INLINE vec v_ldexp(vec p, vec n)
{
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i n1 = _mm256_srai_epi32(ni, 1);
    __m256i n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    vec s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    vec s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}
SIMD_INLINE vec v_keep_between(vec x, vec p, vec lo, vec hi)
{
    vec in = _mm256_and_ps(_mm256_cmp_ps(p, lo, _CMP_GE_OQ), _mm256_cmp_ps(p, hi, _CMP_LE_OQ));
    return _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), x, in);
}
SIMD_INLINE vec v_zero_where_below(vec r, vec x, float limit)
{
    return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(limit), _CMP_LT_OQ), r);
}
SIMD_INLINE vec v_finite_or_zero(vec m)
{
    return _mm256_andnot_ps(_mm256_cmp_ps(m, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ), m);
}

SIMD_INLINE vec v_low_halves(vec a, vec b) { return _mm256_permute2f128_ps(a, b, 0x20); }
SIMD_INLINE vec v_high_halves(vec a, vec b) { return _mm256_permute2f128_ps(a, b, 0x31); }

#define V_REDUCE_LANE(i) (i)
SIMD_INLINE vec v_reduce_many(const vec a[VLEN])
{
    vec x[4], z[2];
    for (int j = 0; j < 4; j++)   /* per 128-bit half: a[2j], a[2j+1], a[2j], a[2j+1] */
        x[j] = _mm256_add_ps(_mm256_unpacklo_ps(a[2 * j], a[2 * j + 1]),
                             _mm256_unpackhi_ps(a[2 * j], a[2 * j + 1]));
    for (int j = 0; j < 2; j++) { /* element c of each half <- a[4j + c] */
        __m256d lo = _mm256_unpacklo_pd(_mm256_castps_pd(x[2 * j]), _mm256_castps_pd(x[2 * j + 1]));
        __m256d hi = _mm256_unpackhi_pd(_mm256_castps_pd(x[2 * j]), _mm256_castps_pd(x[2 * j + 1]));
        z[j] = _mm256_add_ps(_mm256_castpd_ps(lo), _mm256_castpd_ps(hi));
    }
    /* element c of half h <- a[4h + c] */
    return _mm256_add_ps(_mm256_permute2f128_ps(z[0], z[1], 0x20),
                         _mm256_permute2f128_ps(z[0], z[1], 0x31));
}

#else
#error "vector_ops_simd.h needs -mavx512f or -mavx2 -mfma"
#endif

/* ln(FLT_MIN): below it exp is no normal float, and gives 0. */
#define EXP_FLUSH_BELOW (-87.33654475f)

/* exp(x): x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, so r is
 * exact to float precision), e^r by its Taylor series to degree 7
 * (truncation error 5e-9 relative), scaled by 2^n. Within 1 ulp or so
 * (< 2e-7 relative) for results that are normal floats; 0 below
 * EXP_FLUSH_BELOW (never a subnormal, which some CPUs take microcode
 * assists to produce), +inf past 88.73, NaN for NaN. */
SIMD_INLINE vec v_exp(vec x)
{
    /* Clamped so that n stays small; the clamps keep a NaN (second
     * operand) and the flush below restores the true 0 and inf. */
    vec xc = v_min(v_set1(89.0f), v_max(v_set1(-88.0f), x));
    vec n = v_round(v_mul(xc, v_set1(1.44269504088896341f)));
    vec r = v_fma(n, v_set1(-0.693359375f), xc);
    r = v_fma(n, v_set1(2.12194440e-4f), r);
    vec p = v_set1(1.0f / 5040.0f);
    p = v_fma(p, r, v_set1(1.0f / 720.0f));
    p = v_fma(p, r, v_set1(1.0f / 120.0f));
    p = v_fma(p, r, v_set1(1.0f / 24.0f));
    p = v_fma(p, r, v_set1(1.0f / 6.0f));
    p = v_fma(p, r, v_set1(0.5f));
    p = v_fma(p, r, v_set1(1.0f));
    p = v_fma(p, r, v_set1(1.0f));
    return v_zero_where_below(v_ldexp(p, n), x, EXP_FLUSH_BELOW);
}

/* ------------------------------------------------------------ rows */

/* The last n % VLEN elements of a row go through a vector in a stack
 * buffer, so that they get exactly the arithmetic of the body. */
#define SIMD_TAIL(n) ((n) % VLEN)

static inline void simd_exp_row(float *y, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + VLEN <= n; i += VLEN)
        v_store(y + i, v_exp(v_load(x + i)));
    if (SIMD_TAIL(n)) {
        float buf[VLEN] = { 0 };
        memcpy(buf, x + i, sizeof(float) * SIMD_TAIL(n));
        v_store(buf, v_exp(v_load(buf)));
        memcpy(y + i, buf, sizeof(float) * SIMD_TAIL(n));
    }
}

SIMD_INLINE vec v_silu_mul(vec g, vec u)
{
    vec e = v_exp(v_sub(v_zero(), g));
    return v_mul(v_div(g, v_add(v_set1(1.0f), e)), u);
}

static inline void simd_silu_mul_row(float *out, const float *gate, const float *up, size_t n)
{
    size_t i = 0;
    for (; i + VLEN <= n; i += VLEN)
        v_store(out + i, v_silu_mul(v_load(gate + i), v_load(up + i)));
    if (SIMD_TAIL(n)) {
        float g[VLEN] = { 0 }, u[VLEN] = { 0 };
        memcpy(g, gate + i, sizeof(float) * SIMD_TAIL(n));
        memcpy(u, up + i, sizeof(float) * SIMD_TAIL(n));
        v_store(g, v_silu_mul(v_load(g), v_load(u)));
        memcpy(out + i, g, sizeof(float) * SIMD_TAIL(n));
    }
}

static inline void simd_rmsnorm_row(float *out, const float *x, const float *w, size_t n,
                                    float eps)
{
    if (n == 0)
        return;
    /* Four partial sums: independent chains, and a shorter rounding path. */
    vec s0 = v_zero(), s1 = v_zero(), s2 = v_zero(), s3 = v_zero();
    size_t i = 0;
    for (; i + 4 * VLEN <= n; i += 4 * VLEN) {
        vec a = v_load(x + i), b = v_load(x + i + VLEN);
        vec c = v_load(x + i + 2 * VLEN), d = v_load(x + i + 3 * VLEN);
        s0 = v_fma(a, a, s0);
        s1 = v_fma(b, b, s1);
        s2 = v_fma(c, c, s2);
        s3 = v_fma(d, d, s3);
    }
    for (; i + VLEN <= n; i += VLEN) {
        vec a = v_load(x + i);
        s0 = v_fma(a, a, s0);
    }
    if (SIMD_TAIL(n)) {
        float buf[VLEN] = { 0 };
        memcpy(buf, x + i, sizeof(float) * SIMD_TAIL(n));
        vec a = v_load(buf);
        s1 = v_fma(a, a, s1);
    }
    float ss = v_hsum(v_add(v_add(s0, s1), v_add(s2, s3)));
    float inv = 1.0f / sqrtf(ss / (float)n + eps);
    vec vinv = v_set1(inv);
    for (i = 0; i + VLEN <= n; i += VLEN) {
        vec y = v_mul(v_load(x + i), vinv);
        v_store(out + i, w ? v_mul(y, v_load(w + i)) : y);
    }
    for (; i < n; i++)   /* the same two roundings as the vectors */
        out[i] = w ? (x[i] * inv) * w[i] : x[i] * inv;
}

static inline void simd_add_row(float *y, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + VLEN <= n; i += VLEN)
        v_store(y + i, v_add(v_load(y + i), v_load(x + i)));
    for (; i < n; i++)
        y[i] += x[i];
}

#endif
