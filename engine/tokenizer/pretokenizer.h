/* Pre-tokenizers (tokenizer.json "pre_tokenizer"): split normalized text
 * into words, and for byte-level tokenizers map each byte to its alphabet
 * character. Stages run depth-first: each piece a stage produces goes
 * through the following stages and on to the sink (the model) at once, so
 * that no list of all pieces is ever built. */
#ifndef ALM_TOKENIZER_PRETOKENIZER_H
#define ALM_TOKENIZER_PRETOKENIZER_H

#include <json-glib/json-glib.h>
#include <stdbool.h>

#include "alm.h"
#include "tokenizer/buffers.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pattern.h"

typedef enum pre_kind {
    PRE_SPLIT,      /* Split, and Digits/Whitespace/WhitespaceSplit as splits */
    PRE_BYTE_LEVEL, /* optional prefix space, optional GPT-2 regex, byte mapping */
    PRE_METASPACE,  /* spaces -> replacement, optional prefix, optional split */
} pre_kind;

typedef enum split_behavior {
    SPLIT_REMOVED,
    SPLIT_ISOLATED,
    SPLIT_MERGED_WITH_PREVIOUS,
    SPLIT_MERGED_WITH_NEXT,
    SPLIT_CONTIGUOUS,
} split_behavior;

typedef enum prepend_scheme {
    PREPEND_ALWAYS,
    PREPEND_FIRST, /* only for the piece that starts the input */
    PREPEND_NEVER,
} prepend_scheme;

typedef struct pre_step {
    pre_kind kind;
    tok_pattern pattern; /* Split; ByteLevel's GPT-2 regex when use_regex */
    split_behavior behavior;
    bool invert;
    bool add_prefix_space; /* ByteLevel */
    bool use_regex;        /* ByteLevel */
    char replacement[4];   /* Metaspace, UTF-8 */
    size_t replacement_len;
    prepend_scheme scheme; /* Metaspace */
    bool split;            /* Metaspace */
} pre_step;

typedef struct pretokenizer {
    pre_step *steps;
    size_t n;
    byte_level_alphabet alphabet;
} pretokenizer;

/* Per-call scratch space: one buffer and span list per stage depth. */
typedef struct pretok_scratch {
    strbuf *bufs;
    struct span_list *spans;
    size_t depth;
    match_ctx *m;
} pretok_scratch;

/* Receives each final piece (never empty). */
typedef int (*pretok_sink)(void *ctx, const char *piece, size_t len, alm_error *err);

int pretokenizer_from_json(pretokenizer *p, JsonNode *node, const char *where, alm_error *err);
void pretokenizer_free(pretokenizer *p);

int pretok_scratch_init(pretok_scratch *s, const pretokenizer *p, match_ctx *m);
void pretok_scratch_free(pretok_scratch *s);

/* Splits s[0..len). at_start: s begins the original input (Metaspace's
 * "first" scheme prepends only there). */
int pretokenizer_run(const pretokenizer *p, pretok_scratch *scratch, const char *s, size_t len,
                     bool at_start, pretok_sink sink, void *ctx, alm_error *err);

#endif
