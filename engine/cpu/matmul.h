/* CPU matrix kernels over alm_weight, on the packed weights as stored.
 *
 * A matmul is split in two steps so that a thread pool can share the work:
 *   1. cpu_matmul_prepare (one thread): converts the activations into
 *      whatever the kernel consumes (e.g. int16 with per-group scales), into a
 *      caller-provided scratch buffer of cpu_matmul_scratch_size bytes;
 *   2. cpu_matmul_rows (any number of threads, disjoint row ranges):
 *      y[t][r] = sum_c W[r][c] * x[t][c] for t < n_tok, r0 <= r < r1.
 * Accumulation is fp32 (or exact integer). Dense weights and the fp32
 * quantized kernels match a float64 reference of the dequantized weights to
 * ~1e-5 relative to sum |W||x|; the integer quantized kernels (AVX-512)
 * add the rounding of the activations, at most max|x_g| / (2 * 32600) per
 * element with 16-bit activations (x_g: the element's group).
 *
 * The instruction set (scalar, AVX2, AVX-512 (+VNNI/BF16)) is chosen once at
 * run time by cpu_kernels_select and passed in; nothing is global. */
#ifndef ALM_CPU_MATMUL_H
#define ALM_CPU_MATMUL_H

#include <stdbool.h>
#include <stddef.h>

#include "core/weight.h"

typedef enum cpu_isa {
    CPU_ISA_SCALAR,
    CPU_ISA_AVX2,     /* AVX2 + FMA + F16C */
    CPU_ISA_AVX512,   /* AVX-512 F/BW/VL/DQ (+ VNNI, BF16 where present) */
} cpu_isa;

typedef struct cpu_kernels cpu_kernels;

/* The best instruction set this CPU runs, or the one named by the
 * ALM_CPU_ISA environment variable ("scalar", "avx2", "avx512") when set
 * (never one the CPU lacks); with the activation precision named by
 * ALM_ACTIVATION_BITS ("8", "16") where that set has it (AVX-512), else
 * its default. */
const cpu_kernels *cpu_kernels_select(void);
const cpu_kernels *cpu_kernels_for(cpu_isa isa); /* NULL if unsupported here */
/* The kernels of isa whose quantized path takes activations quantized to
 * bits per element (AVX-512: 16, its default, or 8, an experiment applied
 * to 4-bit weights only); NULL if isa is unsupported here or has no such
 * variant. */
const cpu_kernels *cpu_kernels_for_activation(cpu_isa isa, int bits);
/* 8 or 16 for integer kernels, 32 for fp32 activations. */
int cpu_kernels_activation_bits(const cpu_kernels *k);
cpu_isa cpu_kernels_isa(const cpu_kernels *k);
const char *cpu_isa_name(cpu_isa isa);

/* 0 when the kernels take w; otherwise -EINVAL and the reason in why
 * (which may be NULL). Quantized: bits 2, 4 or 8, group 32, 64 or 128
 * dividing cols, scales/biases F32, F16 or BF16. Dense: F32, F16 or BF16,
 * any cols. The functions below give zeros for a weight refused here. */
int cpu_matmul_check(const alm_weight *w, char *why, size_t why_len);

size_t cpu_matmul_scratch_size(const cpu_kernels *k, const alm_weight *w, int n_tok);
void cpu_matmul_prepare(const cpu_kernels *k, const alm_weight *w,
                        const float *x, int n_tok, size_t x_stride,
                        void *scratch);
void cpu_matmul_rows(const cpu_kernels *k, const alm_weight *w,
                     const void *scratch, const float *x, int n_tok,
                     size_t x_stride, float *y, size_t y_stride, int r0, int r1);

/* Optional, once per weight after loading (4-bit weights on AVX-512): a
 * copy of w's quantized data repacked for the faster kernel, still 4 bits
 * per weight (plus the scales and biases). cpu_matmul_pack_size gives its
 * bytes, 0 when k has no packed layout for w (then use w as it is).
 * cpu_matmul_pack writes it into dst (64-byte aligned, at least that many
 * bytes): 0, or -EINVAL with nothing usable in dst. The caller then sets
 * w->backend_data = dst, keeps dst unchanged while w is in use, and frees
 * it after; cpu_matmul_rows uses the copy whenever w->backend_data is one
 * made from this w by these kernels (or from a weight whose first rows w
 * is: same data and scales, fewer rows), else w's own data. Prepared
 * activations are the same either way. Use it for every weight of a model
 * or for none: the packed kernel rounds differently in the last bits, and
 * a model's passes must agree (speculative decoding). */
size_t cpu_matmul_pack_size(const cpu_kernels *k, const alm_weight *w);
int cpu_matmul_pack(const cpu_kernels *k, const alm_weight *w, void *dst, size_t bytes);

/* Dequantizes / converts row r of w into out[cols] (embedding lookup). */
void cpu_weight_row(const alm_weight *w, int r, float *out);

#endif
