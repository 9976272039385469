/* Shared between the dispatcher (matmul.c) and the per-ISA kernel files:
 * the table of kernel entry points and the activation layouts that
 * cpu_matmul_prepare writes into the scratch buffer.
 *
 * Every layout depends only on (cols, bits, group_size, dtype) of the
 * weight, never on its scales, so one prepared activation serves every
 * weight with the same four values (the CPU backend relies on it). */
#ifndef ALM_CPU_MATMUL_INTERNAL_H
#define ALM_CPU_MATMUL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cpu/matmul.h"

struct cpu_kernels {
    cpu_isa isa;
    /* Precision of the activations the quantized kernels consume: 16 or 8
     * bits per element (integer kernels; 8 for 4-bit weights only, others
     * take 16), 32 for fp32 (scalar, AVX2). */
    int activation_bits;
    /* Optional (NULL: none): a copy of w in the layout of this table's
     * fastest kernel (cpu_matmul_pack). */
    size_t (*pack_size)(const alm_weight *w);
    int (*pack)(const alm_weight *w, void *dst, size_t bytes);
    size_t (*scratch_size)(const alm_weight *w, int n_tok);
    void (*prepare)(const alm_weight *w, const float *x, int n_tok, size_t x_stride,
                    void *scratch);
    void (*rows)(const alm_weight *w, const void *scratch, const float *x, int n_tok,
                 size_t x_stride, float *y, size_t y_stride, int r0, int r1);
};

/* Defined in the ISA files; only ever called where the CPU runs them. */
extern const cpu_kernels cpu_kernels_scalar;
extern const cpu_kernels cpu_kernels_avx2;
extern const cpu_kernels cpu_kernels_avx512;        /* 16-bit activations */
extern const cpu_kernels cpu_kernels_avx512_act8;   /* experiment, 4-bit weights */

static inline size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Activations of quantized weights are split into `streams` (8 / bits)
 * interleaved sequences so that each unpacked bit field of a packed word
 * meets its own activation without any shuffle of the weights: in a block
 * of `lanes` bytes of packed weights (lanes * streams elements), stream p
 * holds elements p, p + streams, p + 2 * streams, ... */
static inline int quant_streams(const alm_weight *w) { return 8 / w->bits; }

static inline int quant_groups(const alm_weight *w) { return w->cols / w->group_size; }

/* Sum of x over each quantization group, one float per group, the row
 * padded to a multiple of 16 floats: the biases are applied per group as
 * bias[g] * sum_g(x), outside the inner loops. */
static inline size_t quant_sums_bytes(const alm_weight *w)
{
    return align64(sizeof(float) * (size_t)quant_groups(w));
}

/* Loads element i of a scales/biases array of any supported dtype. */
static inline float quant_param(const alm_weight *w, const void *base, size_t i)
{
    return alm_load_as_f32(w->scale_dtype, base, i);
}

/* Value i of a row of packed quantized data (u32 words, lowest bits first),
 * read through memcpy: the mapped file gives no alignment guarantee. */
static inline unsigned quant_value(const uint8_t *row, int bits, int i)
{
    /* Bit fields never straddle a byte for bits in {2, 4, 8}, and the u32
     * words are little-endian, so byte b holds values [b * 8 / bits, ...). */
    int per_byte = 8 / bits;
    unsigned byte = row[i / per_byte];
    return (byte >> ((i % per_byte) * bits)) & ((1u << bits) - 1u);
}

#endif
