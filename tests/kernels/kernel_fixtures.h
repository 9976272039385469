/* Random weights and activations for the kernel tests and the benchmark,
 * and a float64 reference computed straight from the formula in
 * engine/core/weight.h. */
#ifndef ALM_TESTS_KERNEL_FIXTURES_H
#define ALM_TESTS_KERNEL_FIXTURES_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/weight.h"

typedef struct test_rng {
    uint64_t s;
} test_rng;

static inline uint64_t rng_next(test_rng *r)
{
    /* splitmix64: tiny, deterministic, good enough for test data */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline double rng_uniform(test_rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

static inline double rng_normal(test_rng *r)
{
    double u = rng_uniform(r), v = rng_uniform(r);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

static inline void store_param(alm_dtype t, void *base, size_t i, float v)
{
    if (t == ALM_DTYPE_F32) {
        memcpy((float *)base + i, &v, sizeof v);
    } else if (t == ALM_DTYPE_F16) {
        _Float16 h = (_Float16)v;
        memcpy((uint16_t *)base + i, &h, sizeof h);
    } else {
        uint16_t h = alm_f32_to_bf16(v);
        memcpy((uint16_t *)base + i, &h, sizeof h);
    }
}

/* A weight with its own buffers (freed by fixture_weight_free). */
typedef struct fixture_weight {
    alm_weight w;
    void *data, *scales, *biases;
} fixture_weight;

/* MLX-like random quantized weights: random q, scales ~ N(0, 0.02), biases
 * near -2^(bits-1) * scale (so that W is centred on zero, as after
 * quantizing a real layer). */
static inline int fixture_quant(fixture_weight *f, test_rng *rng, int rows, int cols, int bits,
                                int group, alm_dtype scale_dtype)
{
    memset(f, 0, sizeof *f);
    size_t words = (size_t)rows * (size_t)cols * (size_t)bits / 32;
    size_t groups = (size_t)rows * (size_t)(cols / group);
    size_t psize = alm_dtype_size(scale_dtype);
    f->data = malloc(words * 4 + 1);
    f->scales = malloc(groups * psize);
    f->biases = malloc(groups * psize);
    if (!f->data || !f->scales || !f->biases)
        return -1;
    /* One byte off alignment: a mapped file gives no guarantee. */
    uint8_t *base = (uint8_t *)f->data + 1;
    for (size_t i = 0; i < words; i++) {
        uint32_t v = (uint32_t)rng_next(rng);
        memcpy(base + 4 * i, &v, 4);
    }
    for (size_t i = 0; i < groups; i++) {
        float s = (float)(rng_normal(rng) * 0.02);
        float b = (float)(-(double)(1 << (bits - 1)) * s * (1.0 + 0.1 * rng_normal(rng)));
        store_param(scale_dtype, f->scales, i, s);
        store_param(scale_dtype, f->biases, i, b);
    }
    f->w = (alm_weight){
        .rows = rows, .cols = cols, .bits = bits, .group_size = group,
        .dtype = ALM_DTYPE_U32, .data = base,
        .scale_dtype = scale_dtype, .scales = f->scales, .biases = f->biases,
    };
    return 0;
}

/* Dense weights ~ N(0, 0.05). The data starts at an odd 2-byte offset
 * for 16-bit types, as tensors in a mapped file may. */
static inline int fixture_dense(fixture_weight *f, test_rng *rng, int rows, int cols,
                                alm_dtype dtype)
{
    memset(f, 0, sizeof *f);
    size_t n = (size_t)rows * (size_t)cols, es = alm_dtype_size(dtype);
    f->data = malloc(n * es + 8);
    if (!f->data)
        return -1;
    uint8_t *base = (uint8_t *)f->data + (es == 2 ? 2 : 4);
    for (size_t i = 0; i < n; i++)
        store_param(dtype, base, i, (float)(rng_normal(rng) * 0.05));
    f->w = (alm_weight){ .rows = rows, .cols = cols, .dtype = dtype, .data = base };
    return 0;
}

static inline void fixture_weight_free(fixture_weight *f)
{
    free(f->data);
    free(f->scales);
    free(f->biases);
}

/* Activations ~ N(0, 1) with a few outliers 50 times larger. */
static inline void fixture_activations(test_rng *rng, float *x, int n_tok, size_t stride,
                                       int cols)
{
    for (int t = 0; t < n_tok; t++) {
        float *xt = x + (size_t)t * stride;
        for (int c = 0; c < cols; c++)
            xt[c] = (float)rng_normal(rng);
        for (int k = 0; k < 3; k++)
            xt[rng_next(rng) % (uint64_t)cols] *= 50.0f;
    }
}

/* W[r][c] from the formula in weight.h, as float (scale * q rounded, then
 * + bias rounded: what the float32 reference computes). */
static inline float fixture_element(const alm_weight *w, int r, int c)
{
    if (!w->bits)
        return alm_load_as_f32(w->dtype, w->data, (size_t)r * (size_t)w->cols + (size_t)c);
    size_t words_per_row = (size_t)w->cols * (size_t)w->bits / 32;
    int per_word = 32 / w->bits;
    uint32_t word;
    memcpy(&word, (const uint8_t *)w->data + 4 * ((size_t)r * words_per_row + (size_t)(c / per_word)),
           4);
    uint32_t q = (word >> ((c % per_word) * w->bits)) & ((1u << w->bits) - 1u);
    size_t gi = (size_t)r * (size_t)(w->cols / w->group_size) + (size_t)(c / w->group_size);
    float s = alm_load_as_f32(w->scale_dtype, w->scales, gi);
    float b = alm_load_as_f32(w->scale_dtype, w->biases, gi);
    float sq = s * (float)q;
    return sq + b;
}

/* |scale * q| of W[r][c] (0 for dense weights): the part of a quantized
 * weight that multiplies the quantized activations in the integer kernels
 * (the biases meet sums of the exact x). */
static inline double fixture_scaled_q(const alm_weight *w, int r, int c)
{
    if (!w->bits)
        return 0.0;
    size_t words_per_row = (size_t)w->cols * (size_t)w->bits / 32;
    int per_word = 32 / w->bits;
    uint32_t word;
    memcpy(&word, (const uint8_t *)w->data + 4 * ((size_t)r * words_per_row + (size_t)(c / per_word)),
           4);
    uint32_t q = (word >> ((c % per_word) * w->bits)) & ((1u << w->bits) - 1u);
    size_t gi = (size_t)r * (size_t)(w->cols / w->group_size) + (size_t)(c / w->group_size);
    return fabs((double)alm_load_as_f32(w->scale_dtype, w->scales, gi) * (double)q);
}

/* The bound on the error that quantizing the activations to integers with
 * the largest value xq_max per group adds: each x is off by at most
 * dx_g / 2 with dx_g = max|x_g| / xq_max (plus 1% for the fp32 rounding of
 * x / dx_g, which is at most 2^-24 xq_max dx_g), so
 *   |y - exact| <= sum_g max|x_g| / (2 xq_max) * 1.01 * sum_(c in g) |s_g q_c|.
 * act[t][r - r0] gets that bound divided by xq_max's numerator: act = sum_g
 * max|x_g| * sum |s q| / 2, to be divided by the kernel's xq_max. */
static inline void fixture_activation_bound(const alm_weight *w, const float *x, int n_tok,
                                            size_t x_stride, int r0, int r1, double *act)
{
    int n = r1 - r0;
    for (int r = r0; r < r1; r++)
        for (int t = 0; t < n_tok; t++) {
            const float *xt = x + (size_t)t * x_stride;
            double b = 0.0;
            if (w->bits) {
                for (int g = 0; g < w->cols / w->group_size; g++) {
                    double mx = 0.0, sq = 0.0;
                    for (int i = 0; i < w->group_size; i++) {
                        int c = g * w->group_size + i;
                        mx = fmax(mx, fabs((double)xt[c]));
                        sq += fixture_scaled_q(w, r, c);
                    }
                    b += mx * sq / 2.0;
                }
            }
            act[(size_t)t * (size_t)n + (size_t)(r - r0)] = b;
        }
}

/* ref[t][r - r0] = sum_c W[r][c] x[t][c] in float64, and mag = sum |W x|. */
static inline void fixture_reference(const alm_weight *w, const float *x, int n_tok,
                                     size_t x_stride, int r0, int r1, double *ref, double *mag)
{
    int n = r1 - r0;
    float *row = malloc(sizeof(float) * (size_t)w->cols);
    for (int r = r0; r < r1; r++) {
        for (int c = 0; c < w->cols; c++)
            row[c] = fixture_element(w, r, c);
        for (int t = 0; t < n_tok; t++) {
            const float *xt = x + (size_t)t * x_stride;
            double s = 0.0, m = 0.0;
            for (int c = 0; c < w->cols; c++) {
                double p = (double)row[c] * (double)xt[c];
                s += p;
                m += fabs(p);
            }
            ref[(size_t)t * (size_t)n + (size_t)(r - r0)] = s;
            mag[(size_t)t * (size_t)n + (size_t)(r - r0)] = m;
        }
    }
    free(row);
}

#endif
