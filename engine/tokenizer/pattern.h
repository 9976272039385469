/* A pattern as tokenizer.json spells it: {"String": "..."} (a literal) or
 * {"Regex": "..."} (Oniguruma syntax in HF; PCRE2 here, which agrees on
 * everything these files use: classes, \p{..}, (?i:..), lookahead).
 * The compiled pattern is shared by all threads; matching needs a
 * match_ctx of its own per call. */
#ifndef ALM_TOKENIZER_PATTERN_H
#define ALM_TOKENIZER_PATTERN_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>

#include <json-glib/json-glib.h>

#include "alm.h"

typedef struct tok_pattern {
    char *literal; /* the literal when re is NULL (may be empty) */
    size_t literal_len;
    pcre2_code *re;
} tok_pattern;

typedef struct match_ctx {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
} match_ctx;

/* Compiles a UTF-8 regex with Unicode properties, JIT when available. */
int pattern_init_regex(tok_pattern *p, const char *regex, size_t len, alm_error *err);
int pattern_init_literal(tok_pattern *p, const char *s, size_t len);
/* Reads {"String": ...} or {"Regex": ...}; `where` names the component. */
int pattern_from_json(tok_pattern *p, JsonNode *node, const char *where, alm_error *err);
void pattern_free(tok_pattern *p);
void match_ctx_free(match_ctx *m);

/* The first match in s[0..len) that starts at or after `from`. Returns 1 and
 * sets [*start, *end), 0 when none, or a negative errno. s must be valid
 * UTF-8 (checked once at the API boundary). */
int pattern_find(const tok_pattern *p, match_ctx *m, const char *s, size_t len, size_t from,
                 size_t *start, size_t *end, alm_error *err);

/* Iterates over matches like Rust's find_iter: left to right, non
 * overlapping, and never an empty match right where the previous match
 * ended. */
typedef struct pattern_iter {
    const tok_pattern *p;
    match_ctx *m;
    const char *s;
    size_t len;
    size_t pos;
    size_t last_match_end;
    bool has_last;
} pattern_iter;

static inline void pattern_iter_init(pattern_iter *it, const tok_pattern *p, match_ctx *m,
                                     const char *s, size_t len)
{
    *it = (pattern_iter){ .p = p, .m = m, .s = s, .len = len };
}

/* 1 with the next match, 0 at the end, or a negative errno. */
int pattern_iter_next(pattern_iter *it, size_t *start, size_t *end, alm_error *err);

#endif
