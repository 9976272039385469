/* The BPE model (tokenizer.json "model", type "BPE"), as HF tokenizers runs
 * it: a word starts as its characters (or <0xNN> byte tokens, or <unk>),
 * then adjacent pairs are merged by rank, lowest rank first and leftmost on
 * ties, until no pair has a merge. */
#ifndef ALM_TOKENIZER_BPE_H
#define ALM_TOKENIZER_BPE_H

#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "alm.h"
#include "tokenizer/buffers.h"
#include "tokenizer/token_map.h"
#include "tokenizer/word_cache.h"

typedef struct merge_entry {
    uint64_t pair; /* left id << 32 | right id; UINT64_MAX: empty slot */
    int32_t rank;
    int32_t new_id;
} merge_entry;

typedef struct bpe_model {
    /* The vocabulary: id -> string (one arena) and string -> id. */
    char *strings;
    uint32_t *offset; /* UINT32_MAX: no token has this id */
    uint32_t *length;
    int32_t n_ids;    /* one past the largest id */
    token_map vocab;

    merge_entry *merges; /* open addressing by pair */
    size_t merge_mask;

    int32_t unk_id;      /* -1: no unk token configured */
    bool unk_missing;    /* configured but not in the vocabulary */
    char *unk_token;
    bool fuse_unk;
    bool byte_fallback;
    bool ignore_merges;
    char *prefix;        /* continuing_subword_prefix, or NULL */
    size_t prefix_len;
    char *suffix;        /* end_of_word_suffix, or NULL */
    size_t suffix_len;
    int32_t byte_ids[256]; /* <0xNN> tokens, -1 when absent */
    /* The id of each one-character token below U+0800 (-1: none), so that
     * words start without hashing every character. NULL with affixes. */
    int32_t *char_ids;
    /* whole[id]: BPE turns the token's own string into just this token, so
     * a word equal to it needs no merging (computed once at load). */
    bool *whole;
    /* Every pair of adjacent characters inside some token (a + b << 32 |
     * c; UINT64_MAX: empty slot). No merge can join two characters that
     * are not such a pair, so a long word can be cut there and its parts
     * merged apart (and cached) with the same result. NULL: never cut. */
    uint64_t *bigrams;
    size_t bigram_mask;
} bpe_model;

/* Per-call working memory (and the call's word cache). Zero-initialise. */
typedef struct bpe_scratch {
    struct bpe_symbol *symbols;
    size_t symbols_cap;
    struct bpe_merge *heap;
    size_t heap_cap;
    strbuf piece; /* a character with prefix/suffix */
    idvec word;   /* one word's ids */
    word_cache cache;
} bpe_scratch;

int bpe_from_json(bpe_model *m, JsonObject *model, const char *where, alm_error *err);
void bpe_free(bpe_model *m);
void bpe_scratch_free(bpe_scratch *s);

/* The model's string for id, or NULL. */
static inline const char *bpe_token(const bpe_model *m, int32_t id, size_t *len)
{
    if (id < 0 || id >= m->n_ids || m->offset[id] == UINT32_MAX)
        return NULL;
    if (len)
        *len = m->length[id];
    return m->strings + m->offset[id];
}

/* Tokenizes one pre-tokenized word and appends its ids to out. */
int bpe_encode_word(const bpe_model *m, bpe_scratch *s, const char *w, size_t len, idvec *out,
                    alm_error *err);

#endif
