#include "tokenizer/decoder.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/json_util.h"
#include "tokenizer/utf8.h"

/* ------------------------------------------------------------ strlist */

int strlist_push(strlist *l, const char *s, size_t len)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        size_t *a = realloc(l->start, cap * sizeof *a);
        if (!a)
            return -ENOMEM;
        l->start = a;
        size_t *b = realloc(l->len, cap * sizeof *b);
        if (!b)
            return -ENOMEM;
        l->len = b;
        l->cap = cap;
    }
    size_t at = l->buf.len;
    if (strbuf_append(&l->buf, s, len) < 0)
        return -ENOMEM;
    l->start[l->n] = at;
    l->len[l->n] = len;
    l->n++;
    return 0;
}

void strlist_clear(strlist *l)
{
    strbuf_clear(&l->buf);
    l->n = 0;
}

void strlist_free(strlist *l)
{
    strbuf_free(&l->buf);
    free(l->start);
    free(l->len);
    memset(l, 0, sizeof *l);
}

/* ------------------------------------------------------------ parsing */

static int one_char(JsonObject *o, const char *name, uint32_t *ch, const char *where,
                    alm_error *err)
{
    const char *s;
    int r = json_get_string(o, name, true, &s, where, err);
    if (r < 0)
        return r;
    size_t len = strlen(s), i = 0;
    if (len == 0 || !utf8_validate(s, len) || utf8_count_chars(s, len) != 1)
        return alm_error_set(err, -EINVAL, "%s: \"%s\" must be one character", where, name);
    *ch = utf8_next(s, &i);
    return 0;
}

static int add_step(decoder *d, const dec_step *s)
{
    dec_step *p = realloc(d->steps, (d->n + 1) * sizeof *p);
    if (!p)
        return -ENOMEM;
    d->steps = p;
    d->steps[d->n++] = *s;
    return 0;
}

static int parse_one(void *ctx, JsonNode *node, const char *where, int depth, alm_error *err)
{
    decoder *d = ctx;
    JsonObject *o;
    const char *type;
    int r = json_component_head(node, "a decoder", "decoders", depth, where, parse_one, ctx, &o,
                                &type, err);
    if (r != 0)
        return r < 0 ? r : 0;
    dec_step s = { 0 };
    if (strcmp(type, "ByteLevel") == 0) {
        s.kind = DEC_BYTE_LEVEL;
    } else if (strcmp(type, "ByteFallback") == 0) {
        s.kind = DEC_BYTE_FALLBACK;
    } else if (strcmp(type, "Fuse") == 0) {
        s.kind = DEC_FUSE;
    } else if (strcmp(type, "Strip") == 0) {
        uint64_t start, stop;
        s.kind = DEC_STRIP;
        if ((r = one_char(o, "content", &s.ch, where, err)) < 0 ||
            (r = json_get_uint(o, "start", 0, &start, where, err)) < 0 ||
            (r = json_get_uint(o, "stop", 0, &stop, where, err)) < 0)
            return r;
        s.start = (size_t)start;
        s.stop = (size_t)stop;
    } else if (strcmp(type, "Metaspace") == 0) {
        const char *scheme;
        s.kind = DEC_METASPACE;
        if ((r = one_char(o, "replacement", &s.ch, where, err)) < 0 ||
            (r = json_get_string(o, "prepend_scheme", false, &scheme, where, err)) < 0)
            return r;
        if (scheme) {
            if (strcmp(scheme, "always") && strcmp(scheme, "first") && strcmp(scheme, "never"))
                return alm_error_set(err, -EINVAL, "%s: unknown Metaspace prepend_scheme '%s'",
                                     where, scheme);
            s.strip_first = strcmp(scheme, "never") != 0;
        } else if ((r = json_get_bool(o, "add_prefix_space", true, &s.strip_first, where, err)) <
                   0) {
            return r;
        }
    } else if (strcmp(type, "Replace") == 0) {
        const char *content;
        s.kind = DEC_REPLACE;
        if ((r = json_get_string(o, "content", true, &content, where, err)) < 0 ||
            (r = pattern_from_json(&s.pattern, json_member(o, "pattern"), where, err)) < 0)
            return r;
        s.text_len = strlen(content);
        if (!(s.text = strdup(content))) {
            pattern_free(&s.pattern);
            return alm_error_set(err, -ENOMEM, "out of memory");
        }
    } else {
        return alm_error_set(err, -ENOTSUP, "%s: decoder type '%s' is not supported", where,
                             type);
    }
    if (add_step(d, &s) < 0) {
        pattern_free(&s.pattern);
        free(s.text);
        return alm_error_set(err, -ENOMEM, "out of memory");
    }
    return 0;
}

int decoder_from_json(decoder *d, JsonNode *node, const char *where, alm_error *err)
{
    memset(d, 0, sizeof *d);
    byte_level_alphabet_init(&d->alphabet);
    if (!node || JSON_NODE_HOLDS_NULL(node))
        return 0;
    d->present = true;
    int r = parse_one(d, node, where, 0, err);
    if (r < 0)
        decoder_free(d);
    return r;
}

void decoder_free(decoder *d)
{
    for (size_t i = 0; i < d->n; i++) {
        pattern_free(&d->steps[i].pattern);
        free(d->steps[i].text);
    }
    free(d->steps);
    d->steps = NULL;
    d->n = 0;
}

/* ------------------------------------------------------------ steps */

bool decoder_byte_token(const char *s, size_t len, unsigned char *byte)
{
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return false;
    unsigned v = 0;
    for (int k = 3; k < 5; k++) {
        char c = s[k];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return false;
        v = v * 16 + d;
    }
    *byte = (unsigned char)v;
    return true;
}

int decoder_byte_level_bytes(const decoder *d, const char *s, size_t len, strbuf *out)
{
    size_t mark = out->len;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        uint32_t c = utf8_next(s, &j);
        int16_t b = c < BYTE_LEVEL_MAX_CP ? d->alphabet.byte_of[c] : -1;
        if (b < 0) {
            /* Not all characters are in the alphabet: HF keeps the token's
             * own UTF-8 bytes instead. */
            out->len = mark;
            return strbuf_append(out, s, len);
        }
        if (strbuf_putc(out, (char)b) < 0)
            return -ENOMEM;
        i = j;
    }
    return 0;
}

int decoder_strip(const dec_step *st, const char *s, size_t len, strbuf *out)
{
    size_t a = 0, b = len;
    for (size_t k = 0; k < st->start && a < len; k++) {
        size_t j = a;
        if (utf8_next(s, &j) != st->ch)
            break;
        a = j;
    }
    for (size_t k = 0; k < st->stop && b > 0; k++) {
        size_t c = b - 1;
        while (c > 0 && ((unsigned char)s[c] & 0xC0) == 0x80)
            c--;
        size_t j = c;
        if (utf8_next(s, &j) != st->ch)
            break;
        b = c;
    }
    /* Rust would panic when the two cuts cross; an empty result is saner. */
    return a < b ? strbuf_append(out, s + a, b - a) : 0;
}

static int flush_bytes(strlist *out, strbuf *bytes)
{
    int r = 0;
    if (bytes->len == 0)
        return 0;
    if (utf8_validate(bytes->data, bytes->len)) {
        r = strlist_push(out, bytes->data, bytes->len);
    } else {
        /* An invalid run becomes one U+FFFD per byte (not per subpart). */
        for (size_t k = 0; k < bytes->len && r == 0; k++)
            r = strlist_push(out, UTF8_REPLACEMENT, 3);
    }
    strbuf_clear(bytes);
    return r;
}

static int step_byte_fallback(const strlist *in, strlist *out, strbuf *tmp)
{
    int r = 0;
    strbuf_clear(tmp);
    for (size_t i = 0; i < in->n && r == 0; i++) {
        size_t len;
        const char *s = strlist_at(in, i, &len);
        unsigned char b;
        if (decoder_byte_token(s, len, &b)) {
            r = strbuf_putc(tmp, (char)b);
            continue;
        }
        if ((r = flush_bytes(out, tmp)) == 0)
            r = strlist_push(out, s, len);
    }
    if (r == 0)
        r = flush_bytes(out, tmp);
    return r;
}

static int step_metaspace(const dec_step *st, const strlist *in, strlist *out, strbuf *tmp,
                          bool first)
{
    int r = 0;
    for (size_t i = 0; i < in->n && r == 0; i++) {
        size_t len;
        const char *s = strlist_at(in, i, &len);
        strbuf_clear(tmp);
        for (size_t k = 0; k < len && r == 0;) {
            size_t j = k;
            uint32_t c = utf8_next(s, &j);
            if (c != st->ch)
                r = strbuf_append(tmp, s + k, j - k);
            else if (!(first && i == 0 && st->strip_first))
                r = strbuf_putc(tmp, ' ');
            k = j;
        }
        if (r == 0)
            r = strlist_push(out, tmp->data ? tmp->data : "", tmp->len);
    }
    return r;
}

static int step_apply(const decoder *d, const dec_step *st, const strlist *in, strlist *out,
                      bool first, match_ctx *m, alm_error *err)
{
    strbuf tmp = { 0 };
    int r = 0;
    switch (st->kind) {
    case DEC_BYTE_LEVEL: {
        strbuf bytes = { 0 };
        for (size_t i = 0; i < in->n && r == 0; i++) {
            size_t len;
            const char *s = strlist_at(in, i, &len);
            r = decoder_byte_level_bytes(d, s, len, &bytes);
        }
        if (r == 0)
            r = utf8_lossy_append(&tmp, bytes.data ? bytes.data : "", bytes.len, true, NULL);
        if (r == 0)
            r = strlist_push(out, tmp.data ? tmp.data : "", tmp.len);
        strbuf_free(&bytes);
        break;
    }
    case DEC_FUSE:
        for (size_t i = 0; i < in->n && r == 0; i++) {
            size_t len;
            const char *s = strlist_at(in, i, &len);
            r = strbuf_append(&tmp, s, len);
        }
        if (r == 0)
            r = strlist_push(out, tmp.data ? tmp.data : "", tmp.len);
        break;
    case DEC_BYTE_FALLBACK:
        r = step_byte_fallback(in, out, &tmp);
        break;
    case DEC_METASPACE:
        r = step_metaspace(st, in, out, &tmp, first);
        break;
    case DEC_STRIP:
        for (size_t i = 0; i < in->n && r == 0; i++) {
            size_t len;
            const char *s = strlist_at(in, i, &len);
            strbuf_clear(&tmp);
            if ((r = decoder_strip(st, s, len, &tmp)) == 0)
                r = strlist_push(out, tmp.data ? tmp.data : "", tmp.len);
        }
        break;
    case DEC_REPLACE:
        for (size_t i = 0; i < in->n && r == 0; i++) {
            size_t len, a, b, done = 0;
            const char *s = strlist_at(in, i, &len);
            strbuf_clear(&tmp);
            pattern_iter it;
            pattern_iter_init(&it, &st->pattern, m, s, len);
            while ((r = pattern_iter_next(&it, &a, &b, err)) == 1) {
                if (strbuf_append(&tmp, s + done, a - done) < 0 ||
                    strbuf_append(&tmp, st->text, st->text_len) < 0) {
                    r = -ENOMEM;
                    break;
                }
                done = b;
            }
            if (r < 0 && r != -ENOMEM) {
                strbuf_free(&tmp); /* a regex failure, already described */
                return r;
            }
            if (r == 0 && (r = strbuf_append(&tmp, s + done, len - done)) == 0)
                r = strlist_push(out, tmp.data ? tmp.data : "", tmp.len);
        }
        break;
    }
    strbuf_free(&tmp);
    return r < 0 ? alm_error_set(err, r, "out of memory") : 0;
}

int decoder_run(const decoder *d, size_t from, size_t to, strlist **tokens, strlist **scratch,
                bool first, match_ctx *m, alm_error *err)
{
    for (size_t i = from; i < to; i++) {
        strlist_clear(*scratch);
        int r = step_apply(d, &d->steps[i], *tokens, *scratch, first, m, err);
        if (r < 0)
            return r;
        strlist *t = *tokens;
        *tokens = *scratch;
        *scratch = t;
    }
    return 0;
}

int decoder_decode(const decoder *d, strlist *tokens, strbuf *out, alm_error *err)
{
    strbuf_clear(out);
    strlist scratch = { 0 };
    strlist *cur = tokens, *other = &scratch;
    match_ctx m = { 0 };
    int r = decoder_run(d, 0, d->n, &cur, &other, true, &m, err);
    match_ctx_free(&m);
    for (size_t i = 0; i < cur->n && r == 0; i++) {
        size_t len;
        const char *s = strlist_at(cur, i, &len);
        /* Without a decoder HF joins the tokens with spaces. */
        if (!d->present && i > 0 && strbuf_putc(out, ' ') < 0)
            r = alm_error_set(err, -ENOMEM, "out of memory");
        else if (strbuf_append(out, s, len) < 0)
            r = alm_error_set(err, -ENOMEM, "out of memory");
    }
    strlist_free(&scratch);
    return r;
}
