/* MLX affine quantization (mlx.core.quantize, as mlx_lm.convert applies
 * it), bit for bit: for each group of group_size values of a row, in
 * float32,
 *   scale = max((max - min) / (2^bits - 1), 1e-7), bias = min,
 * both rounded to the source's dtype for storage, then
 *   q = clamp(round_half_even((w - bias) / scale), 0, 2^bits - 1)
 * with the stored (rounded) scale and bias, packed into u32 words lowest
 * bits first. Checked against ../shared/models/coder-target-4bit, which
 * this reproduces exactly from coder-target. */
#ifndef ALM_LOADER_MLX_QUANTIZE_H
#define ALM_LOADER_MLX_QUANTIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"

/* Quantizes rows [row0, row1) of a [rows][cols] matrix w of dtype (F32,
 * F16 or BF16). Outputs (any may be NULL when not wanted) are the whole
 * matrix's: q [rows][cols * bits / 32] u32, scales and biases
 * [rows][cols / group_size] of dtype. cols must be a multiple of
 * group_size, group_size of 32 / bits. Returns false when the rows hold a
 * value that is not finite (nothing sensible can be stored then). */
bool mlx_quantize_rows(const void *w, alm_dtype dtype, int cols, int bits, int group_size,
                       size_t row0, size_t row1, uint32_t *q, void *scales, void *biases);

#endif
