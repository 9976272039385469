#include "tokenizer/pattern.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/buffers.h"
#include "tokenizer/json_util.h"
#include "tokenizer/utf8.h"

/* The JIT stack grows on demand up to this size: patterns such as
 * \s+(?!\S) backtrack over long runs of spaces. */
#define JIT_STACK_MAX (64u << 20)

/* Oniguruma (HF's Split and Replace) and Rust's regex crate (HF's built-in
 * patterns) give \s and \w their Unicode definitions: White_Space, and
 * Alphabetic + Mark + Decimal_Number + Connector_Punctuation +
 * Join_Control. PCRE2's UCP versions differ at the edges (U+180E is \s
 * there, marks are not \w), so the escapes are spelled out as properties. */
#define WORD_PROPS "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}"
/* White_Space as explicit ranges: the JIT turns these into a few compares,
 * much faster than a property lookup per character. */
#define SPACE_RANGES                                                                          \
    "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}"     \
    "\\x{3000}"

static int translate(const char *re, size_t len, strbuf *out)
{
    bool in_class = false;
    size_t class_start = 0;
    int r = 0;
    for (size_t i = 0; i < len && r == 0; i++) {
        char c = re[i];
        if (c == '\\' && i + 1 < len) {
            char e = re[i + 1];
            const char *rep = NULL;
            if (e == 's')
                rep = in_class ? SPACE_RANGES : "[" SPACE_RANGES "]";
            else if (e == 'S')
                rep = in_class ? "\\P{White_Space}" : "[^" SPACE_RANGES "]";
            else if (e == 'w')
                rep = in_class ? WORD_PROPS : "[" WORD_PROPS "]";
            else if (e == 'W' && !in_class)
                rep = "[^" WORD_PROPS "]";
            if (rep) {
                r = strbuf_append(out, rep, strlen(rep));
            } else if (e == 'Q') {
                /* \Q...\E is literal text: copy it untouched. */
                const char *end = NULL;
                for (size_t k = i + 2; k + 1 < len; k++)
                    if (re[k] == '\\' && re[k + 1] == 'E') {
                        end = re + k + 2;
                        break;
                    }
                size_t stop = end ? (size_t)(end - re) : len;
                r = strbuf_append(out, re + i, stop - i);
                i = stop - 1;
                continue;
            } else {
                r = strbuf_append(out, re + i, 2);
            }
            i++;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = true;
            class_start = i + 1;
            if (class_start < len && re[class_start] == '^')
                class_start++;
        } else if (in_class && c == '[' && i + 1 < len && re[i + 1] == ':') {
            /* A POSIX class [:name:] inside a class. */
            const char *end = memmem(re + i + 2, len - i - 2, ":]", 2);
            if (end) {
                size_t stop = (size_t)(end - re) + 2;
                r = strbuf_append(out, re + i, stop - i);
                i = stop - 1;
                continue;
            }
        } else if (in_class && c == ']' && i != class_start) {
            in_class = false; /* a ']' right after '[' or '[^' is literal */
        }
        r = strbuf_putc(out, c);
    }
    return r;
}

int pattern_init_regex(tok_pattern *p, const char *regex, size_t len, alm_error *err)
{
    memset(p, 0, sizeof *p);
    int code;
    PCRE2_SIZE offset;
    strbuf tr = { 0 };
    if (translate(regex, len, &tr) < 0) {
        strbuf_free(&tr);
        return alm_error_set(err, -ENOMEM, "out of memory");
    }
    p->re = pcre2_compile((PCRE2_SPTR)(tr.data ? tr.data : ""), tr.len, PCRE2_UTF | PCRE2_UCP,
                          &code, &offset, NULL);
    strbuf_free(&tr);
    if (!p->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return alm_error_set(err, -EINVAL, "invalid regex /%.*s/ at offset %zu: %s",
                             (int)(len > 120 ? 120 : len), regex, (size_t)offset, (char *)msg);
    }
    /* Without JIT support the interpreter gives the same answers, slower. */
    (void)pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE);
    return 0;
}

int pattern_init_literal(tok_pattern *p, const char *s, size_t len)
{
    memset(p, 0, sizeof *p);
    p->literal = malloc(len + 1);
    if (!p->literal)
        return -ENOMEM;
    memcpy(p->literal, s, len);
    p->literal[len] = '\0';
    p->literal_len = len;
    return 0;
}

int pattern_from_json(tok_pattern *p, JsonNode *node, const char *where, alm_error *err)
{
    memset(p, 0, sizeof *p);
    if (!node || !JSON_NODE_HOLDS_OBJECT(node))
        return alm_error_set(err, -EINVAL, "%s: \"pattern\" must be an object", where);
    JsonObject *o = json_node_get_object(node);
    const char *s;
    int r;
    if (json_member(o, "Regex")) {
        if ((r = json_get_string(o, "Regex", true, &s, where, err)) < 0)
            return r;
        if ((r = pattern_init_regex(p, s, strlen(s), err)) < 0)
            return alm_error_prefix(err, "%s", where);
        return 0;
    }
    if (json_member(o, "String")) {
        if ((r = json_get_string(o, "String", true, &s, where, err)) < 0)
            return r;
        if (pattern_init_literal(p, s, strlen(s)) < 0)
            return alm_error_set(err, -ENOMEM, "out of memory");
        return 0;
    }
    return alm_error_set(err, -EINVAL, "%s: \"pattern\" must hold \"String\" or \"Regex\"", where);
}

void pattern_free(tok_pattern *p)
{
    free(p->literal);
    pcre2_code_free(p->re);
    memset(p, 0, sizeof *p);
}

void match_ctx_free(match_ctx *m)
{
    pcre2_match_data_free(m->md);
    pcre2_match_context_free(m->mctx);
    pcre2_jit_stack_free(m->jit_stack);
    memset(m, 0, sizeof *m);
}

static int regex_find(const tok_pattern *p, match_ctx *m, const char *s, size_t len, size_t from,
                      size_t *start, size_t *end, alm_error *err)
{
    if (!m->md) {
        /* One pair is enough: only the overall match is used. */
        m->md = pcre2_match_data_create(1, NULL);
        if (!m->md)
            return alm_error_set(err, -ENOMEM, "out of memory");
    }
    for (;;) {
        int rc = pcre2_match(p->re, (PCRE2_SPTR)s, len, from, PCRE2_NO_UTF_CHECK, m->md, m->mctx);
        if (rc >= 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m->md);
            *start = ov[0];
            *end = ov[1];
            return 1;
        }
        if (rc == PCRE2_ERROR_NOMATCH)
            return 0;
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !m->jit_stack) {
            if (!m->mctx && !(m->mctx = pcre2_match_context_create(NULL)))
                return alm_error_set(err, -ENOMEM, "out of memory");
            m->jit_stack = pcre2_jit_stack_create(256u << 10, JIT_STACK_MAX, NULL);
            if (!m->jit_stack)
                return alm_error_set(err, -ENOMEM, "out of memory");
            pcre2_jit_stack_assign(m->mctx, NULL, m->jit_stack);
            continue;
        }
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return alm_error_set(err, -E2BIG, "regex match failed: %s", (char *)msg);
    }
}

int pattern_find(const tok_pattern *p, match_ctx *m, const char *s, size_t len, size_t from,
                 size_t *start, size_t *end, alm_error *err)
{
    if (p->re)
        return regex_find(p, m, s, len, from, start, end, err);
    /* An empty literal never matches (HF returns the whole input unsplit). */
    if (p->literal_len == 0 || from >= len || len - from < p->literal_len)
        return 0;
    const char *hit = memmem(s + from, len - from, p->literal, p->literal_len);
    if (!hit)
        return 0;
    *start = (size_t)(hit - s);
    *end = *start + p->literal_len;
    return 1;
}

int pattern_iter_next(pattern_iter *it, size_t *start, size_t *end, alm_error *err)
{
    while (it->pos <= it->len) {
        int r = pattern_find(it->p, it->m, it->s, it->len, it->pos, start, end, err);
        if (r <= 0) {
            it->pos = it->len + 1;
            return r;
        }
        if (*start == *end && it->has_last && it->last_match_end == *start) {
            /* Step over one character so that an empty match cannot repeat. */
            if (it->pos >= it->len) {
                it->pos = it->len + 1;
                return 0;
            }
            it->pos += utf8_char_len((unsigned char)it->s[it->pos]);
            continue;
        }
        it->pos = *end;
        it->last_match_end = *end;
        it->has_last = true;
        return 1;
    }
    return 0;
}
