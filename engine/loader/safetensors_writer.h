/* Writing safetensors files (alm-engine convert) as MLX writes them, byte
 * for byte: the header JSON with the tensors sorted by name and
 * "__metadata__": {"format": "mlx"} last, padded with spaces to a multiple
 * of 8 bytes, then the tensors' data in the same order, end to end (no
 * holes). A model's tensors have even element counts, so every U32 and F32
 * tensor lands on a 4-byte boundary; a reader copies one that would not. */
#ifndef ALM_LOADER_SAFETENSORS_WRITER_H
#define ALM_LOADER_SAFETENSORS_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "alm.h"
#include "core/dtype.h"
#include "loader/safetensors.h"

typedef struct tensor_out {
    char *name;
    alm_dtype dtype;
    int n_dims;
    int64_t shape[TENSOR_MAX_DIMS];
    size_t n_bytes;     /* shape x element size */
    size_t source;      /* the caller's: which tensor this is */
} tensor_out;

/* Produces the n_bytes of tensor t into buf. */
typedef int (*tensor_fill_fn)(void *ctx, const tensor_out *t, void *buf, alm_error *err);

/* Writes path (created, not overwritten) with the n tensors (names
 * distinct), each filled by fill when its turn comes. */
int safetensors_write(const char *path, const tensor_out *tensors, size_t n, tensor_fill_fn fill,
                      void *ctx, alm_error *err);

/* Bytes of the file safetensors_write would write. */
size_t safetensors_file_bytes(const tensor_out *tensors, size_t n);

#endif
