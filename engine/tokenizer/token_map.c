#include "tokenizer/token_map.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/hash.h"

int token_map_init(token_map *m, size_t expected)
{
    size_t n = 16;
    while (n < expected * 2 + 1) {
        if (n > SIZE_MAX / 4 / sizeof(token_map_entry))
            return -ENOMEM;
        n *= 2;
    }
    m->slots = calloc(n, sizeof *m->slots);
    if (!m->slots)
        return -ENOMEM;
    m->mask = n - 1;
    m->count = 0;
    return 0;
}

void token_map_free(token_map *m)
{
    free(m->slots);
    m->slots = NULL;
    m->mask = m->count = 0;
}

static int token_map_grow(token_map *m)
{
    token_map bigger;
    int r = token_map_init(&bigger, (m->mask + 1));
    if (r < 0)
        return r;
    for (size_t i = 0; i <= m->mask; i++) {
        const token_map_entry *e = &m->slots[i];
        if (!e->key)
            continue;
        size_t j = e->hash & bigger.mask;
        while (bigger.slots[j].key)
            j = (j + 1) & bigger.mask;
        bigger.slots[j] = *e;
    }
    bigger.count = m->count;
    free(m->slots);
    *m = bigger;
    return 0;
}

int token_map_put(token_map *m, const char *key, size_t len, int32_t value)
{
    if (len > UINT32_MAX)
        return -EINVAL;
    if ((m->count + 1) * 2 > m->mask + 1) {
        int r = token_map_grow(m);
        if (r < 0)
            return r;
    }
    uint64_t h = hash_bytes(key, len);
    size_t i = h & m->mask;
    for (;;) {
        token_map_entry *e = &m->slots[i];
        if (!e->key) {
            /* An empty key still needs a non-NULL pointer to mark the slot. */
            *e = (token_map_entry){ key ? key : "", (uint32_t)len, value, h };
            m->count++;
            return 0;
        }
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0) {
            e->value = value;
            return 0;
        }
        i = (i + 1) & m->mask;
    }
}

int32_t token_map_get(const token_map *m, const char *key, size_t len)
{
    return token_map_get_hashed(m, key, len, hash_bytes(key, len));
}

int32_t token_map_get_hashed(const token_map *m, const char *key, size_t len, uint64_t h)
{
    if (!m->slots)
        return -1;
    size_t i = h & m->mask;
    for (;;) {
        const token_map_entry *e = &m->slots[i];
        if (!e->key)
            return -1;
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0)
            return e->value;
        i = (i + 1) & m->mask;
    }
}
