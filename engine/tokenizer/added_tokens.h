/* Added tokens (tokenizer.json "added_tokens"): special and user tokens
 * that are cut out of the text before the model sees it and never go
 * through BPE. Matching is leftmost-longest, like HF's Aho-Corasick
 * automaton. Tokens with normalized=false match the raw text; those with
 * normalized=true match the normalized text (their content normalized the
 * same way). */
#ifndef ALM_TOKENIZER_ADDED_TOKENS_H
#define ALM_TOKENIZER_ADDED_TOKENS_H

#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "alm.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/token_map.h"

typedef struct added_token {
    int32_t id;
    char *content;
    size_t len;
    bool single_word, lstrip, rstrip, normalized, special;
    char *match; /* what is searched for: content, or content normalized */
    size_t match_len;
    bool disabled; /* empty, or replaced by a later entry with the same content */
} added_token;

typedef struct added_matcher {
    uint32_t *order;      /* token indices by (first byte, length descending) */
    uint32_t bucket[257]; /* order[bucket[b] .. bucket[b + 1]) start with byte b */
    size_t n;
} added_matcher;

typedef struct added_vocab {
    added_token *tokens;
    size_t n;
    added_matcher raw;        /* normalized == false */
    added_matcher normalized; /* normalized == true */
    tok_pattern word_char;    /* Rust's \w, for single_word tokens */
} added_vocab;

/* A segment of text: token >= 0 is an added token's id, -1 plain text. */
typedef int (*added_segment_fn)(void *ctx, const char *s, size_t len, size_t offset,
                                int32_t token, alm_error *err);

int added_vocab_from_json(added_vocab *v, JsonArray *list, const char *where, alm_error *err);
/* Gives each token its id the way HF's AddedVocabulary does when it loads
 * tokenizer.json (the "id" members only draw a warning there): a content
 * that is already a model token takes that token's id, any other the next
 * free id after the model's vocabulary (vocab_count entries). Then builds
 * the matchers; normalized tokens are matched in normalized form. */
int added_vocab_build(added_vocab *v, const normalizer *norm, const token_map *vocab,
                      size_t vocab_count, alm_error *err);
void added_vocab_free(added_vocab *v);

/* Cuts s into text and token segments (in order) with the raw or the
 * normalized token set. Like HF, an empty s yields one empty text segment. */
int added_vocab_split(const added_vocab *v, bool normalized_set, match_ctx *m, const char *s,
                      size_t len, added_segment_fn fn, void *ctx, alm_error *err);

/* The id of an added token by content, or -1. */
int32_t added_vocab_find_content(const added_vocab *v, const char *s, size_t len);

#endif
