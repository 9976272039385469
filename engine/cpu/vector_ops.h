/* Element-wise CPU kernels over rows of floats (exp, silu(g) * u, RMSNorm,
 * add), and the per-ISA attention kernel behind engine/cpu/attention.h.
 *
 * Each instruction set has one const table of function pointers; the caller
 * picks the table once, usually for the ISA the matrix kernels run
 * (cpu_kernels_isa(cpu_kernels_select())), and calls through it. Nothing is
 * global. All row functions take any length n >= 0 and any alignment; the
 * SIMD versions treat a ragged tail exactly like the body. */
#ifndef ALM_CPU_VECTOR_OPS_H
#define ALM_CPU_VECTOR_OPS_H

#include <stddef.h>

#include "cpu/matmul.h"   /* cpu_isa */

struct attention_args;
struct attention_block;

typedef struct cpu_vector_ops {
    cpu_isa isa;

    /* y[i] = exp(x[i]). y may equal x. Relative error <= 2e-7 where the
     * result is a normal float; exactly 0 for x < ln(FLT_MIN) = -87.34
     * (so -inf gives 0, never a subnormal), +inf above 88.73, NaN for NaN. */
    void (*exp)(float *y, const float *x, size_t n);

    /* out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)), the
     * SwiGLU activation. out may equal gate or up. */
    void (*silu_mul)(float *out, const float *gate, const float *up, size_t n);

    /* out = x / sqrt(mean(x^2) + eps) * weight, computed in float32 as
     * Hugging Face's RMSNorm does ((x * inv) * weight); weight NULL: no
     * weight. out may equal x. n = 0: nothing. */
    void (*rmsnorm)(float *out, const float *x, const float *weight, size_t n, float eps);

    /* y[i] += x[i]. */
    void (*add)(float *y, const float *x, size_t n);

    /* Internal: one block of attention work (attention_internal.h); call
     * cpu_attention_run instead. */
    void (*attention_block)(const struct attention_args *a, const struct attention_block *b,
                            float *scratch);
} cpu_vector_ops;

/* The table for isa, or NULL when this CPU (or this build) lacks it. The
 * AVX-512 table needs AVX-512 F besides AVX2 and FMA, so it is available
 * wherever the AVX-512 matrix kernels are. */
const cpu_vector_ops *cpu_vector_ops_for(cpu_isa isa);

#endif
