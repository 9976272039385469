/* The plain C element-wise kernels (libm's expf), and the scalar table. */
#include <math.h>

#include "cpu/attention_internal.h"
#include "cpu/vector_ops.h"

/* Same contract as the SIMD exp: no subnormal results. */
#define EXP_FLUSH_BELOW (-87.33654475f)

static void exp_row(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] < EXP_FLUSH_BELOW ? 0.0f : expf(x[i]);
}

static void silu_mul_row(float *out, const float *gate, const float *up, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

static void rmsnorm_row(float *out, const float *x, const float *w, size_t n, float eps)
{
    if (n == 0)
        return;
    float ss = 0.0f;
    for (size_t i = 0; i < n; i++)
        ss += x[i] * x[i];
    float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (size_t i = 0; i < n; i++)
        out[i] = w ? (x[i] * inv) * w[i] : x[i] * inv;
}

static void add_row(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

const cpu_vector_ops cpu_vector_ops_scalar = {
    .isa = CPU_ISA_SCALAR,
    .exp = exp_row,
    .silu_mul = silu_mul_row,
    .rmsnorm = rmsnorm_row,
    .add = add_row,
    .attention_block = cpu_attention_block_scalar,
};
