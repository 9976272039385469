/* Normalizers (tokenizer.json "normalizer"): string rewrites applied to the
 * text between added tokens before pre-tokenization. A Sequence is flattened
 * into a list of steps. Offsets are not tracked: alm needs only ids. */
#ifndef ALM_TOKENIZER_NORMALIZER_H
#define ALM_TOKENIZER_NORMALIZER_H

#include <json-glib/json-glib.h>
#include <stdbool.h>

#include "alm.h"
#include "tokenizer/buffers.h"
#include "tokenizer/pattern.h"

typedef enum norm_kind {
    NORM_PREPEND,   /* text before non-empty input */
    NORM_REPLACE,   /* every match of pattern -> text */
    NORM_LOWERCASE, /* per character, as Rust's char::to_lowercase */
    NORM_NFC,
    NORM_NFD,
    NORM_NFKC,
    NORM_NFKD,
    NORM_STRIP, /* White_Space on the left and/or right */
} norm_kind;

typedef struct norm_step {
    norm_kind kind;
    tok_pattern pattern;
    char *text;
    size_t text_len;
    bool left, right;
} norm_step;

typedef struct normalizer {
    norm_step *steps;
    size_t n;
} normalizer;

/* node may be NULL (no normalizer). Unknown types are refused by name. */
int normalizer_from_json(normalizer *n, JsonNode *node, const char *where, alm_error *err);
void normalizer_free(normalizer *n);

/* Normalizes s[0..len) into out (replacing its content); tmp is scratch. */
int normalizer_apply(const normalizer *n, match_ctx *m, const char *s, size_t len, strbuf *out,
                     strbuf *tmp, alm_error *err);

#endif
