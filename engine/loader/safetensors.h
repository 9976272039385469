/* safetensors files, memory-mapped and validated; a model folder's shards
 * (model.safetensors.index.json) are one tensor_store.
 *
 * Format: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]},
 *  "__metadata__": {...}}, then the data; offsets are relative to the byte
 * after the header. Everything is checked before a tensor is handed out:
 * header length bound, well-formed JSON, known dtype, shape x element size ==
 * byte range, ranges inside the file and not overlapping, no name given
 * twice (in a file or across shards). Tensor data is aligned to its element
 * size: the rare tensor stored at an odd offset gets an aligned private
 * copy. */
#ifndef ALM_LOADER_SAFETENSORS_H
#define ALM_LOADER_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "alm.h"
#include "core/dtype.h"

#define TENSOR_MAX_DIMS 4

typedef struct stored_tensor {
    const char *name;
    const char *file;         /* path of the file it lives in (for messages) */
    alm_dtype dtype;
    int n_dims;
    int64_t shape[TENSOR_MAX_DIMS];
    const void *data;         /* into the read-only mapping */
    size_t n_bytes;
} stored_tensor;

typedef struct tensor_store tensor_store;

/* Opens one .safetensors file. */
int tensor_store_open_file(const char *path, tensor_store **out, alm_error *err);
/* Opens a model folder: model.safetensors.index.json when present (every
 * shard it names, every tensor it maps must be in that shard), else
 * model.safetensors, else the folder's only *.safetensors files. */
int tensor_store_open_dir(const char *dir, tensor_store **out, alm_error *err);
void tensor_store_free(tensor_store *store);

/* An in-memory store (random-weight models): one anonymous mapping of
 * `bytes` (zero-filled, backed by pages only when first written, huge pages
 * where the kernel offers them) that the caller fills through *base and
 * describes with tensor_store_add; tensor_store_seal then indexes it, and it
 * is read like a store opened from files. source names it in messages. */
int tensor_store_new_memory(const char *source, size_t bytes, tensor_store **out, void **base,
                            alm_error *err);
/* Describes a tensor at offset (aligned to its element size) of the memory
 * store's region. */
int tensor_store_add(tensor_store *store, const char *name, alm_dtype dtype, int n_dims,
                     const int64_t *shape, size_t offset, alm_error *err);
/* Sorts and indexes the tensors added (a name given twice is an error). */
int tensor_store_seal(tensor_store *store, alm_error *err);

/* NULL when absent. */
const stored_tensor *tensor_store_find(const tensor_store *store, const char *name);
size_t tensor_store_count(const tensor_store *store);
/* Tensors sorted by name; NULL past the end. */
const stored_tensor *tensor_store_at(const tensor_store *store, size_t i);
/* Bytes mapped, over all files (or the memory region). */
size_t tensor_store_mapped_bytes(const tensor_store *store);
/* Lets the pages wholly inside [p, p + len) of a mapped file leave this
 * process's memory (they come back from the file if read again): for
 * tensors a backend keeps its own copy of. A memory store's pages are the
 * only copy and stay. Returns the bytes released. */
size_t tensor_store_release(tensor_store *store, const void *p, size_t len);
/* The file or folder the store was opened from (for messages). */
const char *tensor_store_source(const tensor_store *store);

#endif
