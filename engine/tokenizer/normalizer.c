#include "tokenizer/normalizer.h"

#include <errno.h>
#include <glib.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/json_util.h"
#include "tokenizer/utf8.h"

static int add_step(normalizer *n, const norm_step *s)
{
    norm_step *p = realloc(n->steps, (n->n + 1) * sizeof *p);
    if (!p)
        return -ENOMEM;
    n->steps = p;
    n->steps[n->n++] = *s;
    return 0;
}

static int dup_text(norm_step *s, const char *text)
{
    s->text_len = strlen(text);
    s->text = malloc(s->text_len + 1);
    if (!s->text)
        return -ENOMEM;
    memcpy(s->text, text, s->text_len + 1);
    return 0;
}

static int parse_one(void *ctx, JsonNode *node, const char *where, int depth, alm_error *err)
{
    normalizer *n = ctx;
    JsonObject *o;
    const char *type;
    int r = json_component_head(node, "a normalizer", "normalizers", depth, where, parse_one, ctx, &o,
                                &type, err);
    if (r != 0)
        return r < 0 ? r : 0;

    norm_step s = { 0 };
    const char *text;
    if (strcmp(type, "Prepend") == 0) {
        s.kind = NORM_PREPEND;
        if ((r = json_get_string(o, "prepend", true, &text, where, err)) < 0)
            return r;
        if (dup_text(&s, text) < 0)
            return alm_error_set(err, -ENOMEM, "out of memory");
    } else if (strcmp(type, "Replace") == 0) {
        s.kind = NORM_REPLACE;
        if ((r = json_get_string(o, "content", true, &text, where, err)) < 0)
            return r;
        if ((r = pattern_from_json(&s.pattern, json_member(o, "pattern"), where, err)) < 0)
            return r;
        if (dup_text(&s, text) < 0) {
            pattern_free(&s.pattern);
            return alm_error_set(err, -ENOMEM, "out of memory");
        }
    } else if (strcmp(type, "Lowercase") == 0) {
        s.kind = NORM_LOWERCASE;
    } else if (strcmp(type, "NFC") == 0) {
        s.kind = NORM_NFC;
    } else if (strcmp(type, "NFD") == 0) {
        s.kind = NORM_NFD;
    } else if (strcmp(type, "NFKC") == 0) {
        s.kind = NORM_NFKC;
    } else if (strcmp(type, "NFKD") == 0) {
        s.kind = NORM_NFKD;
    } else if (strcmp(type, "Strip") == 0) {
        s.kind = NORM_STRIP;
        if ((r = json_get_bool(o, "strip_left", true, &s.left, where, err)) < 0 ||
            (r = json_get_bool(o, "strip_right", true, &s.right, where, err)) < 0)
            return r;
    } else {
        return alm_error_set(err, -ENOTSUP, "%s: normalizer type '%s' is not supported", where,
                             type);
    }
    if (add_step(n, &s) < 0) {
        pattern_free(&s.pattern);
        free(s.text);
        return alm_error_set(err, -ENOMEM, "out of memory");
    }
    return 0;
}

int normalizer_from_json(normalizer *n, JsonNode *node, const char *where, alm_error *err)
{
    memset(n, 0, sizeof *n);
    if (!node || JSON_NODE_HOLDS_NULL(node))
        return 0;
    int r = parse_one(n, node, where, 0, err);
    if (r < 0)
        normalizer_free(n);
    return r;
}

void normalizer_free(normalizer *n)
{
    for (size_t i = 0; i < n->n; i++) {
        pattern_free(&n->steps[i].pattern);
        free(n->steps[i].text);
    }
    free(n->steps);
    memset(n, 0, sizeof *n);
}

static int replace_all(const norm_step *st, match_ctx *m, const char *s, size_t len, strbuf *out,
                       alm_error *err)
{
    pattern_iter it;
    pattern_iter_init(&it, &st->pattern, m, s, len);
    size_t done = 0, a, b;
    int r;
    while ((r = pattern_iter_next(&it, &a, &b, err)) == 1) {
        if (strbuf_append(out, s + done, a - done) < 0 ||
            strbuf_append(out, st->text, st->text_len) < 0)
            return alm_error_set(err, -ENOMEM, "out of memory");
        done = b;
    }
    if (r < 0)
        return r;
    if (strbuf_append(out, s + done, len - done) < 0)
        return alm_error_set(err, -ENOMEM, "out of memory");
    return 0;
}

static int lowercase(const char *s, size_t len, strbuf *out)
{
    for (size_t i = 0; i < len;) {
        uint32_t c = utf8_next(s, &i);
        char buf[4];
        if (c == 0x130) {
            /* The one character whose lowercase is two: i + combining dot. */
            if (strbuf_append(out, "i\xCC\x87", 3) < 0)
                return -ENOMEM;
            continue;
        }
        uint32_t l = c < 0x80 ? (c >= 'A' && c <= 'Z' ? c + 32 : c) : g_unichar_tolower(c);
        if (strbuf_append(out, buf, utf8_encode(l, buf)) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* glib stops normalizing at a NUL byte, so NUL-free chunks are normalized
 * one by one (NUL neither composes nor decomposes, so this is exact). */
static int unicode_normalize(norm_kind kind, const char *s, size_t len, strbuf *out)
{
    GNormalizeMode mode = kind == NORM_NFC    ? G_NORMALIZE_NFC
                          : kind == NORM_NFD  ? G_NORMALIZE_NFD
                          : kind == NORM_NFKC ? G_NORMALIZE_NFKC
                                              : G_NORMALIZE_NFKD;
    size_t i = 0;
    while (i < len) {
        const char *nul = memchr(s + i, '\0', len - i);
        size_t chunk = nul ? (size_t)(nul - (s + i)) : len - i;
        if (chunk) {
            gchar *norm = g_utf8_normalize(s + i, (gssize)chunk, mode);
            if (!norm)
                return -EINVAL;
            int r = strbuf_append(out, norm, strlen(norm));
            g_free(norm);
            if (r < 0)
                return r;
        }
        i += chunk;
        if (nul) {
            if (strbuf_putc(out, '\0') < 0)
                return -ENOMEM;
            i++;
        }
    }
    return 0;
}

static int strip(const norm_step *st, const char *s, size_t len, strbuf *out)
{
    size_t a = 0, b = len;
    if (st->left) {
        while (a < b) {
            size_t j = a;
            if (!unicode_is_white_space(utf8_next(s, &j)))
                break;
            a = j;
        }
    }
    if (st->right) {
        while (b > a) {
            size_t start = b - 1;
            while (start > a && ((unsigned char)s[start] & 0xC0) == 0x80)
                start--;
            size_t j = start;
            if (!unicode_is_white_space(utf8_next(s, &j)))
                break;
            b = start;
        }
    }
    return strbuf_append(out, s + a, b - a);
}

static int apply_step(const norm_step *st, match_ctx *m, const char *s, size_t len, strbuf *out,
                      alm_error *err)
{
    int r = 0;
    switch (st->kind) {
    case NORM_PREPEND:
        if (len && (r = strbuf_append(out, st->text, st->text_len)) < 0)
            break;
        r = strbuf_append(out, s, len);
        break;
    case NORM_REPLACE:
        return replace_all(st, m, s, len, out, err);
    case NORM_LOWERCASE:
        r = lowercase(s, len, out);
        break;
    case NORM_NFC:
    case NORM_NFD:
    case NORM_NFKC:
    case NORM_NFKD:
        r = unicode_normalize(st->kind, s, len, out);
        if (r == -EINVAL)
            return alm_error_set(err, r, "unicode normalization failed");
        break;
    case NORM_STRIP:
        r = strip(st, s, len, out);
        break;
    }
    if (r < 0)
        return alm_error_set(err, r, "out of memory");
    return 0;
}

int normalizer_apply(const normalizer *n, match_ctx *m, const char *s, size_t len, strbuf *out,
                     strbuf *tmp, alm_error *err)
{
    strbuf_clear(out);
    if (n->n == 0)
        return strbuf_append(out, s, len) < 0 ? alm_error_set(err, -ENOMEM, "out of memory") : 0;
    /* Ping-pong between out and tmp so that the last step writes to out. */
    strbuf *dst = (n->n % 2) ? out : tmp, *other = (n->n % 2) ? tmp : out;
    const char *src = s;
    size_t src_len = len;
    for (size_t i = 0; i < n->n; i++) {
        strbuf_clear(dst);
        int r = apply_step(&n->steps[i], m, src, src_len, dst, err);
        if (r < 0)
            return r;
        src = dst->data ? dst->data : "";
        src_len = dst->len;
        strbuf *t = dst;
        dst = other;
        other = t;
    }
    return 0;
}
