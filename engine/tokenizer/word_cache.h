/* A word -> ids cache for one encode call. Source code repeats the same
 * words constantly, so most words skip BPE entirely. It lives in the call's
 * scratch space, never in the shared tokenizer, so threads need no lock. */
#ifndef ALM_TOKENIZER_WORD_CACHE_H
#define ALM_TOKENIZER_WORD_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/buffers.h"

/* Words longer than this are not cached (HF does the same). */
#define WORD_CACHE_MAX_WORD 256

typedef struct word_cache_entry {
    uint64_t hash;
    uint32_t key_off; /* UINT32_MAX: empty slot */
    uint32_t key_len;
    uint32_t ids_off;
    uint32_t n_ids;
} word_cache_entry;

typedef struct word_cache {
    word_cache_entry *slots;
    size_t mask;
    size_t count;
    strbuf keys;
    idvec ids;
} word_cache;

void word_cache_free(word_cache *c);
bool word_cache_get(const word_cache *c, const char *w, size_t len, uint64_t hash,
                    const int32_t **ids, size_t *n);
/* Best effort: a full cache simply stops growing. Returns 0 or -ENOMEM. */
int word_cache_put(word_cache *c, const char *w, size_t len, uint64_t hash, const int32_t *ids,
                   size_t n);

#endif
