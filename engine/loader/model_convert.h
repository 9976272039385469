/* alm-engine convert: an HF model folder with F32/F16/BF16 safetensors
 * quantized into the MLX layout, as mlx_lm.convert writes it: every matrix
 * (".weight" of two or more dimensions: the linear layers, the embedding,
 * stacked experts) quantized with MLX's affine rule (loader/mlx_quantize.h),
 * scales and biases in the source's dtype; norms and linear biases copied
 * as they are; config.json gains "quantization" and "quantization_config";
 * tokenizer and generation files copied; weights in one or several shards
 * with model.safetensors.index.json. The folder is written under a
 * temporary name next to DST and renamed when complete. */
#ifndef ALM_LOADER_MODEL_CONVERT_H
#define ALM_LOADER_MODEL_CONVERT_H

#include <stddef.h>

#include "alm.h"

typedef struct convert_params {
    int bits;                /* 2, 4 or 8 */
    int group_size;          /* 32, 64 or 128 */
    size_t max_shard_bytes;  /* 0: 5 GB, as mlx_lm */
    int n_threads;           /* <= 0: one per CPU */
} convert_params;

typedef struct convert_report {
    size_t tensors_quantized;  /* matrices */
    size_t tensors_copied;     /* vectors and anything else */
    size_t bytes_in;           /* source safetensors */
    size_t bytes_out;          /* written safetensors */
    int shards;
} convert_report;

/* Refuses (with a message naming the file or tensor): a source already
 * quantized, dtypes other than F32/F16/BF16, a matrix whose width the group
 * size does not divide, a DST that exists and is not an empty folder. */
int model_convert(const char *src, const char *dst, const convert_params *params,
                  convert_report *report, alm_error *err);

#endif
