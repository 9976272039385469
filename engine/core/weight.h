/* A weight matrix as the model stores it: dense (F32/F16/BF16) or MLX affine
 * quantized, always pointing into the mapped file, never copied.
 *
 * Shapes follow PyTorch's nn.Linear: W is [rows = out_features][cols =
 * in_features] and y = W x. For MLX affine quantization with `bits` and
 * `group_size` (see ../shared/README.md):
 *   data:   u32 [rows][cols * bits / 32], value j of a word at bits
 *           [j*bits, (j+1)*bits), lowest first
 *   scales, biases: [rows][cols / group_size] of scale_dtype
 *   W[r][c] = scales[r][c / g] * q[r][c] + biases[r][c / g]
 * An embedding table is the same with rows = vocabulary entries. */
#ifndef ALM_CORE_WEIGHT_H
#define ALM_CORE_WEIGHT_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"

typedef struct alm_weight {
    int rows;
    int cols;
    /* 0 for dense weights, else 2, 4 or 8. */
    int bits;
    int group_size;
    /* Dense: element type of data. Quantized: ALM_DTYPE_U32. */
    alm_dtype dtype;
    const void *data;
    /* Quantized only. */
    alm_dtype scale_dtype;   /* F32, F16 or BF16 */
    const void *scales;
    const void *biases;
    /* Reserved for a backend that keeps its own copy (e.g. on a GPU). */
    void *backend_data;
} alm_weight;

/* Bytes of one row of packed data. */
static inline size_t alm_weight_row_bytes(const alm_weight *w)
{
    if (w->bits)
        return (size_t)w->cols * (size_t)w->bits / 8;
    return (size_t)w->cols * alm_dtype_size(w->dtype);
}

#endif
