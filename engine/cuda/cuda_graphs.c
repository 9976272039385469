/* The signature buffer and the least-recently-used cache of graphs. */
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_graphs.h"

void cuda_signature_clear(cuda_signature *sig)
{
    sig->len = 0;
    sig->out_of_memory = false;
}

void cuda_signature_add(cuda_signature *sig, const void *p, size_t n)
{
    if (sig->out_of_memory)
        return;
    if (sig->len + n > sig->cap) {
        size_t cap = sig->cap ? sig->cap : 4096;
        while (cap < sig->len + n)
            cap *= 2;
        uint8_t *grown = realloc(sig->bytes, cap);
        if (!grown) {
            sig->out_of_memory = true;
            return;
        }
        sig->bytes = grown;
        sig->cap = cap;
    }
    memcpy(sig->bytes + sig->len, p, n);
    sig->len += n;
}

void cuda_signature_free(cuda_signature *sig)
{
    free(sig->bytes);
    memset(sig, 0, sizeof *sig);
}

typedef struct cached_graph {
    uint8_t *sig;
    size_t len;
    cudaGraphExec_t exec;
    uint64_t last_use;
} cached_graph;

struct cuda_graph_cache {
    cached_graph *entries;
    int n, capacity;
    uint64_t clock;
};

cuda_graph_cache *cuda_graph_cache_new(int capacity)
{
    cuda_graph_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->entries = calloc((size_t)capacity, sizeof *c->entries);
    if (!c->entries) {
        free(c);
        return NULL;
    }
    c->capacity = capacity;
    return c;
}

static void drop(cached_graph *e)
{
    cudaGraphExecDestroy(e->exec);
    free(e->sig);
    memset(e, 0, sizeof *e);
}

void cuda_graph_cache_free(cuda_graph_cache *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n; i++)
        drop(&c->entries[i]);
    free(c->entries);
    free(c);
}

cudaGraphExec_t cuda_graph_cache_find(cuda_graph_cache *c, const cuda_signature *sig)
{
    for (int i = 0; i < c->n; i++) {
        cached_graph *e = &c->entries[i];
        if (e->len == sig->len && memcmp(e->sig, sig->bytes, sig->len) == 0) {
            e->last_use = ++c->clock;
            return e->exec;
        }
    }
    return NULL;
}

bool cuda_graph_cache_add(cuda_graph_cache *c, const cuda_signature *sig, cudaGraphExec_t exec)
{
    uint8_t *copy = malloc(sig->len ? sig->len : 1);
    if (!copy) {
        cudaGraphExecDestroy(exec);
        return false;
    }
    memcpy(copy, sig->bytes, sig->len);
    int slot = c->n;
    if (c->n == c->capacity) {
        slot = 0;
        for (int i = 1; i < c->n; i++)
            if (c->entries[i].last_use < c->entries[slot].last_use)
                slot = i;
        drop(&c->entries[slot]);
    } else {
        c->n++;
    }
    c->entries[slot] = (cached_graph){ copy, sig->len, exec, ++c->clock };
    return true;
}
