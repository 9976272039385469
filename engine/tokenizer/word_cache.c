#include "tokenizer/word_cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Bounds the memory one call may spend on its cache. */
#define WORD_CACHE_MAX_ENTRIES (1u << 18)

void word_cache_free(word_cache *c)
{
    free(c->slots);
    strbuf_free(&c->keys);
    idvec_free(&c->ids);
    memset(c, 0, sizeof *c);
}

bool word_cache_get(const word_cache *c, const char *w, size_t len, uint64_t hash,
                    const int32_t **ids, size_t *n)
{
    if (!c->slots)
        return false;
    for (size_t i = hash & c->mask;; i = (i + 1) & c->mask) {
        const word_cache_entry *e = &c->slots[i];
        if (e->key_off == UINT32_MAX)
            return false;
        if (e->hash == hash && e->key_len == len && memcmp(c->keys.data + e->key_off, w, len) == 0) {
            *ids = c->ids.data + e->ids_off;
            *n = e->n_ids;
            return true;
        }
    }
}

static int resize(word_cache *c, size_t slots)
{
    word_cache_entry *s = malloc(slots * sizeof *s);
    if (!s)
        return -ENOMEM;
    for (size_t i = 0; i < slots; i++)
        s[i].key_off = UINT32_MAX;
    size_t mask = slots - 1;
    for (size_t i = 0; c->slots && i <= c->mask; i++) {
        word_cache_entry *e = &c->slots[i];
        if (e->key_off == UINT32_MAX)
            continue;
        size_t j = e->hash & mask;
        while (s[j].key_off != UINT32_MAX)
            j = (j + 1) & mask;
        s[j] = *e;
    }
    free(c->slots);
    c->slots = s;
    c->mask = mask;
    return 0;
}

int word_cache_put(word_cache *c, const char *w, size_t len, uint64_t hash, const int32_t *ids,
                   size_t n)
{
    if (len > WORD_CACHE_MAX_WORD || c->count >= WORD_CACHE_MAX_ENTRIES)
        return 0;
    if (!c->slots || (c->count + 1) * 2 > c->mask + 1) {
        int r = resize(c, c->slots ? (c->mask + 1) * 2 : 256);
        if (r < 0)
            return r;
    }
    size_t key_off = c->keys.len, ids_off = c->ids.len;
    if (strbuf_append(&c->keys, w, len) < 0 || idvec_append(&c->ids, ids, n) < 0)
        return -ENOMEM;
    size_t i = hash & c->mask;
    while (c->slots[i].key_off != UINT32_MAX)
        i = (i + 1) & c->mask;
    c->slots[i] = (word_cache_entry){ hash, (uint32_t)key_off, (uint32_t)len, (uint32_t)ids_off,
                                      (uint32_t)n };
    c->count++;
    return 0;
}
