/* Plain C kernels: the fallback for CPUs without AVX2 and the baseline the
 * vector kernels are tested against. fp32 throughout; the weights are
 * unpacked (or converted) once per group and applied to every token. */
#include <string.h>

#include "cpu/matmul_internal.h"

/* Columns converted at a time for dense weights. */
#define DENSE_BLOCK 256

/* Quantized: the per-group sums of x, token after token. */
static size_t scalar_scratch_size(const alm_weight *w, int n_tok)
{
    if (!w->bits)
        return 64;
    return quant_sums_bytes(w) * (size_t)n_tok;
}

static void scalar_prepare(const alm_weight *w, const float *x, int n_tok, size_t x_stride,
                           void *scratch)
{
    if (!w->bits)
        return;
    int gs = w->group_size, groups = quant_groups(w);
    for (int t = 0; t < n_tok; t++) {
        const float *xt = x + (size_t)t * x_stride;
        float *sums = (float *)((uint8_t *)scratch + quant_sums_bytes(w) * (size_t)t);
        for (int g = 0; g < groups; g++) {
            float s = 0.0f;
            for (int i = 0; i < gs; i++)
                s += xt[g * gs + i];
            sums[g] = s;
        }
    }
}

static float dot_u8(const uint8_t *q, const float *x, int n)
{
    /* Four partial sums: independent chains, and a little less rounding. */
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    for (int i = 0; i < n; i += 4) {
        s0 += (float)q[i] * x[i];
        s1 += (float)q[i + 1] * x[i + 1];
        s2 += (float)q[i + 2] * x[i + 2];
        s3 += (float)q[i + 3] * x[i + 3];
    }
    return (s0 + s1) + (s2 + s3);
}

static void scalar_rows_quant(const alm_weight *w, const void *scratch, const float *x,
                              int n_tok, size_t x_stride, float *y, size_t y_stride,
                              int r0, int r1)
{
    int gs = w->group_size, groups = quant_groups(w);
    size_t row_bytes = alm_weight_row_bytes(w);
    size_t sums_bytes = quant_sums_bytes(w);
    uint8_t q[128];
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)r * row_bytes;
        for (int t = 0; t < n_tok; t++)
            y[(size_t)t * y_stride + (size_t)r] = 0.0f;
        for (int g = 0; g < groups; g++) {
            size_t pi = (size_t)r * (size_t)groups + (size_t)g;
            float scale = quant_param(w, w->scales, pi);
            float bias = quant_param(w, w->biases, pi);
            for (int i = 0; i < gs; i++)
                q[i] = (uint8_t)quant_value(row, w->bits, g * gs + i);
            for (int t = 0; t < n_tok; t++) {
                const float *xt = x + (size_t)t * x_stride + (size_t)g * (size_t)gs;
                const float *sums = (const float *)((const uint8_t *)scratch + sums_bytes * (size_t)t);
                /* sum (s q + b) x = s sum(q x) + b sum(x) */
                y[(size_t)t * y_stride + (size_t)r] += scale * dot_u8(q, xt, gs) + bias * sums[g];
            }
        }
    }
}

static void scalar_rows_dense(const alm_weight *w, const float *x, int n_tok,
                              size_t x_stride, float *y, size_t y_stride, int r0, int r1)
{
    size_t cols = (size_t)w->cols;
    float wf[DENSE_BLOCK];
    for (int r = r0; r < r1; r++) {
        for (int t = 0; t < n_tok; t++)
            y[(size_t)t * y_stride + (size_t)r] = 0.0f;
        for (size_t c0 = 0; c0 < cols; c0 += DENSE_BLOCK) {
            size_t n = cols - c0 < DENSE_BLOCK ? cols - c0 : DENSE_BLOCK;
            for (size_t i = 0; i < n; i++)
                wf[i] = alm_load_as_f32(w->dtype, w->data, (size_t)r * cols + c0 + i);
            for (int t = 0; t < n_tok; t++) {
                const float *xt = x + (size_t)t * x_stride + c0;
                float s0 = 0.0f, s1 = 0.0f;
                size_t i = 0;
                for (; i + 2 <= n; i += 2) {
                    s0 += wf[i] * xt[i];
                    s1 += wf[i + 1] * xt[i + 1];
                }
                if (i < n)
                    s0 += wf[i] * xt[i];
                y[(size_t)t * y_stride + (size_t)r] += s0 + s1;
            }
        }
    }
}

static void scalar_rows(const alm_weight *w, const void *scratch, const float *x, int n_tok,
                        size_t x_stride, float *y, size_t y_stride, int r0, int r1)
{
    if (w->bits)
        scalar_rows_quant(w, scratch, x, n_tok, x_stride, y, y_stride, r0, r1);
    else
        scalar_rows_dense(w, x, n_tok, x_stride, y, y_stride, r0, r1);
}

const cpu_kernels cpu_kernels_scalar = {
    .isa = CPU_ISA_SCALAR,
    .activation_bits = 32,
    .scratch_size = scalar_scratch_size,
    .prepare = scalar_prepare,
    .rows = scalar_rows,
};
