/* An immutable-after-build hash map from byte strings to ids (the
 * vocabulary). Keys are not copied: they must outlive the map. */
#ifndef ALM_TOKENIZER_TOKEN_MAP_H
#define ALM_TOKENIZER_TOKEN_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct token_map_entry {
    const char *key;
    uint32_t len;
    int32_t value;
    uint64_t hash;
} token_map_entry;

typedef struct token_map {
    token_map_entry *slots; /* open addressing, linear probing; key NULL = empty */
    size_t mask;
    size_t count;
} token_map;

/* Sizes the table for up to `expected` keys. Returns 0 or -ENOMEM. */
int token_map_init(token_map *m, size_t expected);
void token_map_free(token_map *m);
/* Inserts or, when the key is present, replaces the value. */
int token_map_put(token_map *m, const char *key, size_t len, int32_t value);
/* The value, or -1 when absent. */
int32_t token_map_get(const token_map *m, const char *key, size_t len);
/* The same with the key's hash_bytes() already computed. */
int32_t token_map_get_hashed(const token_map *m, const char *key, size_t len, uint64_t hash);

#endif
