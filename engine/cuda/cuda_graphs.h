/* Passes replayed as CUDA graphs.
 *
 * A decode step launches about ten small kernels per layer; launched one by
 * one, the gaps between them cost as much as the work of a small model. The
 * backend records what a pass would do as a signature (every operation with
 * its arguments, all but the position, which the kernels then read from
 * device memory), captures the pass once as a graph, and replays that graph
 * for every later pass with the same signature. */
#ifndef ALM_CUDA_GRAPHS_H
#define ALM_CUDA_GRAPHS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

/* The bytes that identify a pass. */
typedef struct cuda_signature {
    uint8_t *bytes;
    size_t len, cap;
    bool out_of_memory;
} cuda_signature;

void cuda_signature_clear(cuda_signature *sig);
void cuda_signature_add(cuda_signature *sig, const void *p, size_t n);
void cuda_signature_free(cuda_signature *sig);

typedef struct cuda_graph_cache cuda_graph_cache;

/* A cache of up to capacity executable graphs; NULL when out of memory. */
cuda_graph_cache *cuda_graph_cache_new(int capacity);
void cuda_graph_cache_free(cuda_graph_cache *cache);
/* The graph captured for this signature, or NULL. */
cudaGraphExec_t cuda_graph_cache_find(cuda_graph_cache *cache, const cuda_signature *sig);
/* Keeps exec (owned from now on) for sig, evicting the least recently used
 * graph when full; false (exec destroyed) when out of memory. */
bool cuda_graph_cache_add(cuda_graph_cache *cache, const cuda_signature *sig, cudaGraphExec_t exec);

#endif
