/* Streaming detokenization. The decoder chain is split into three parts:
 *
 *   per-token steps (Replace, Strip, Metaspace, ByteFallback)
 *   -> one join (Fuse, or ByteLevel: bytes, then lossy UTF-8)
 *   -> steps on the joined text (Strip only)
 *
 * Tokens are decoded in windows that end at a token after which nothing
 * earlier can change: a ByteFallback run of <0xNN> tokens stays open until
 * a non-byte token arrives (a run is valid UTF-8 as a whole or becomes one
 * U+FFFD per byte). ByteLevel's bytes are held while they end in an
 * incomplete UTF-8 sequence, and a text-level Strip holds back trailing
 * characters it might still strip and strips the start only once. So the
 * concatenated output always equals alm_tokenizer_decode of all the ids.
 * A chain of any other shape is decoded whole at flush (still exact). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

typedef enum detok_mode {
    DETOK_STREAM,      /* the chain has the shape above */
    DETOK_SPACE_JOIN,  /* no decoder: tokens joined with spaces */
    DETOK_WHOLE,       /* any other chain: decode everything at flush */
} detok_mode;

/* A text-level Strip, applied incrementally. */
typedef struct strip_filter {
    const dec_step *step;
    size_t start_left; /* content characters still to strip at the start */
    bool in_body;      /* the start has been passed */
    strbuf held;       /* trailing content characters that may be stripped */
    size_t held_chars;
} strip_filter;

struct alm_detokenizer {
    const alm_tokenizer *tok;
    bool skip_special;
    detok_mode mode;
    size_t join;          /* index of the join step (d->n when there is none) */
    size_t byte_fallback; /* index of the ByteFallback step, or SIZE_MAX */

    strlist window;     /* tokens of the open window */
    size_t window_first; /* index (among decoded tokens) of its first token */
    size_t tokens_seen;  /* decoded (not skipped) tokens so far */
    strlist a, b;       /* scratch lists */
    strbuf bytes;       /* ByteLevel bytes not yet converted */
    strip_filter *strips;
    size_t n_strips;
    strbuf text, tmp;
    match_ctx match;
    int32_t *all; /* DETOK_WHOLE: every id so far */
    size_t n_all, cap_all;
};

static bool per_token_step(dec_kind k)
{
    return k == DEC_REPLACE || k == DEC_STRIP || k == DEC_METASPACE || k == DEC_BYTE_FALLBACK;
}

static void plan(alm_detokenizer *d)
{
    const decoder *dec = &d->tok->dec;
    d->byte_fallback = SIZE_MAX;
    if (!dec->present) {
        d->mode = DETOK_SPACE_JOIN;
        return;
    }
    d->mode = DETOK_STREAM;
    d->join = dec->n;
    for (size_t i = 0; i < dec->n; i++) {
        dec_kind k = dec->steps[i].kind;
        if (d->join == dec->n) {
            if (k == DEC_FUSE || k == DEC_BYTE_LEVEL)
                d->join = i;
            else if (k == DEC_BYTE_FALLBACK && d->byte_fallback == SIZE_MAX)
                d->byte_fallback = i;
            else if (!per_token_step(k))
                d->mode = DETOK_WHOLE;
        } else if (k == DEC_STRIP) {
            d->n_strips++;
        } else if (k != DEC_FUSE) {
            d->mode = DETOK_WHOLE; /* Fuse on one string changes nothing */
        }
    }
}

int alm_detokenizer_new(const alm_tokenizer *tok, bool skip_special, alm_detokenizer **out)
{
    if (!tok || !out)
        return -EINVAL;
    alm_detokenizer *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    d->tok = tok;
    d->skip_special = skip_special;
    plan(d);
    if (d->mode == DETOK_STREAM && d->n_strips) {
        d->strips = calloc(d->n_strips, sizeof *d->strips);
        if (!d->strips) {
            free(d);
            return -ENOMEM;
        }
        size_t k = 0;
        for (size_t i = d->join + 1; i < tok->dec.n; i++)
            if (tok->dec.steps[i].kind == DEC_STRIP) {
                d->strips[k].step = &tok->dec.steps[i];
                d->strips[k].start_left = tok->dec.steps[i].start;
                k++;
            }
    }
    *out = d;
    return 0;
}

void alm_detokenizer_free(alm_detokenizer *d)
{
    if (!d)
        return;
    strlist_free(&d->window);
    strlist_free(&d->a);
    strlist_free(&d->b);
    strbuf_free(&d->bytes);
    for (size_t i = 0; i < d->n_strips; i++)
        strbuf_free(&d->strips[i].held);
    free(d->strips);
    strbuf_free(&d->text);
    strbuf_free(&d->tmp);
    match_ctx_free(&d->match);
    free(d->all);
    free(d);
}

/* Starts a new text, as if freshly created. */
static void reset(alm_detokenizer *d)
{
    strlist_clear(&d->window);
    d->window_first = d->tokens_seen = 0;
    strbuf_clear(&d->bytes);
    for (size_t i = 0; i < d->n_strips; i++) {
        d->strips[i].start_left = d->strips[i].step->start;
        d->strips[i].in_body = false;
        strbuf_clear(&d->strips[i].held);
        d->strips[i].held_chars = 0;
    }
    d->n_all = 0;
}

/* Appends text to *out (NULL or a malloc'ed C string). */
static int append_out(char **out, const char *s, size_t len)
{
    size_t old = *out ? strlen(*out) : 0;
    char *p = realloc(*out, old + len + 1);
    if (!p)
        return -ENOMEM;
    if (len)
        memcpy(p + old, s, len);
    p[old + len] = '\0';
    *out = p;
    return 0;
}

/* Runs one strip filter over s; what it lets through goes to out. */
static int strip_feed(strip_filter *f, const char *s, size_t len, strbuf *out)
{
    const dec_step *st = f->step;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        uint32_t c = utf8_next(s, &j);
        if (!f->in_body) {
            if (f->start_left > 0 && c == st->ch) {
                f->start_left--;
                i = j;
                continue;
            }
            f->in_body = true;
        }
        int r;
        if (st->stop > 0 && c == st->ch) {
            r = strbuf_append(&f->held, s + i, j - i);
            f->held_chars++;
        } else {
            r = strbuf_append(out, f->held.data, f->held.len);
            strbuf_clear(&f->held);
            f->held_chars = 0;
            if (r == 0)
                r = strbuf_append(out, s + i, j - i);
        }
        if (r < 0)
            return r;
        i = j;
    }
    return 0;
}

/* At the end of the text: the held characters minus what stop strips. */
static int strip_finish(strip_filter *f, strbuf *out)
{
    size_t drop = f->step->stop < f->held_chars ? f->step->stop : f->held_chars;
    size_t keep = f->held.len;
    while (drop-- > 0) {
        do
            keep--;
        while (keep > 0 && ((unsigned char)f->held.data[keep] & 0xC0) == 0x80);
    }
    int r = strbuf_append(out, f->held.data, keep);
    strbuf_clear(&f->held);
    f->held_chars = 0;
    return r;
}

/* Sends joined text through the strip filters and appends it to *out. */
static int emit_text(alm_detokenizer *d, const char *s, size_t len, bool final, char **out,
                     size_t *emitted)
{
    strbuf *cur = &d->text, *next = &d->tmp;
    strbuf_clear(cur);
    if (strbuf_append(cur, s, len) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < d->n_strips; i++) {
        strbuf_clear(next);
        int r = strip_feed(&d->strips[i], cur->data, cur->len, next);
        if (r == 0 && final)
            r = strip_finish(&d->strips[i], next);
        if (r < 0)
            return r;
        strbuf *t = cur;
        cur = next;
        next = t;
    }
    if (cur->len && append_out(out, cur->data, cur->len) < 0)
        return -ENOMEM;
    *emitted += cur->len;
    return 0;
}

/* Decodes the open window through the per-token steps and the join. */
static int close_window(alm_detokenizer *d, bool final, char **out, size_t *emitted)
{
    const decoder *dec = &d->tok->dec;
    strlist_clear(&d->a);
    for (size_t i = 0; i < d->window.n; i++) {
        size_t len;
        const char *s = strlist_at(&d->window, i, &len);
        if (strlist_push(&d->a, s, len) < 0)
            return -ENOMEM;
    }
    strlist *cur = &d->a, *other = &d->b;
    int r = 0;
    if (d->window.n &&
        (r = decoder_run(dec, 0, d->join, &cur, &other, d->window_first == 0, &d->match, NULL)) <
            0)
        return r;
    strlist_clear(&d->window);
    d->window_first = d->tokens_seen;

    strbuf joined = { 0 };
    bool byte_level = d->join < dec->n && dec->steps[d->join].kind == DEC_BYTE_LEVEL;
    for (size_t i = 0; i < cur->n && r == 0; i++) {
        size_t len;
        const char *s = strlist_at(cur, i, &len);
        r = byte_level ? decoder_byte_level_bytes(dec, s, len, &d->bytes)
                       : strbuf_append(&joined, s, len);
    }
    if (r == 0 && byte_level) {
        size_t used = 0;
        r = utf8_lossy_append(&joined, d->bytes.data ? d->bytes.data : "", d->bytes.len, final,
                              &used);
        if (r == 0 && used > 0) {
            memmove(d->bytes.data, d->bytes.data + used, d->bytes.len - used);
            d->bytes.len -= used;
        }
    }
    if (r == 0)
        r = emit_text(d, joined.data ? joined.data : "", joined.len, final, out, emitted);
    strbuf_free(&joined);
    return r;
}

/* Whether the token, after the steps before ByteFallback, is a byte token
 * (which keeps the window open). */
static int is_byte_token(alm_detokenizer *d, const char *s, size_t len, bool first, bool *yes)
{
    unsigned char b;
    if (d->byte_fallback == 0) {
        *yes = decoder_byte_token(s, len, &b);
        return 0;
    }
    strlist_clear(&d->a);
    if (strlist_push(&d->a, s, len) < 0)
        return -ENOMEM;
    strlist *cur = &d->a, *other = &d->b;
    int r = decoder_run(&d->tok->dec, 0, d->byte_fallback, &cur, &other, first, &d->match, NULL);
    if (r < 0)
        return r;
    const char *t = strlist_at(cur, 0, &len);
    *yes = cur->n == 1 && decoder_byte_token(t, len, &b);
    return 0;
}

int alm_detokenizer_push(alm_detokenizer *d, int32_t id, char **out)
{
    if (!d || !out)
        return -EINVAL;
    const alm_tokenizer *tok = d->tok;
    if (id < 0 || id >= tok->n_ids || !tok->token_str[id])
        return -EINVAL;
    if (!*out && append_out(out, "", 0) < 0)
        return -ENOMEM;
    if (d->skip_special && tok->skip[id])
        return 0;
    const char *s = tok->decode_str[id];
    size_t len = tok->decode_len[id];
    size_t emitted = 0;
    int r = 0;
    switch (d->mode) {
    case DETOK_WHOLE:
        if (d->n_all == d->cap_all) {
            size_t cap = d->cap_all ? d->cap_all * 2 : 64;
            int32_t *p = realloc(d->all, cap * sizeof *p);
            if (!p)
                return -ENOMEM;
            d->all = p;
            d->cap_all = cap;
        }
        d->all[d->n_all++] = id;
        return 0;
    case DETOK_SPACE_JOIN:
        if ((d->tokens_seen++ > 0 && append_out(out, " ", 1) < 0) || append_out(out, s, len) < 0)
            return -ENOMEM;
        return (int)(len + (d->tokens_seen > 1));
    case DETOK_STREAM:
        break;
    }
    bool first = d->tokens_seen == 0, open = false;
    d->tokens_seen++;
    if (strlist_push(&d->window, s, len) < 0)
        return -ENOMEM;
    if (d->byte_fallback != SIZE_MAX && (r = is_byte_token(d, s, len, first, &open)) < 0)
        return r;
    if (!open && (r = close_window(d, false, out, &emitted)) < 0)
        return r;
    return emitted > INT32_MAX ? -E2BIG : (int)emitted;
}

int alm_detokenizer_flush(alm_detokenizer *d, char **out)
{
    if (!d || !out)
        return -EINVAL;
    if (!*out && append_out(out, "", 0) < 0)
        return -ENOMEM;
    size_t emitted = 0;
    int r = 0;
    if (d->mode == DETOK_WHOLE) {
        char *text = NULL;
        size_t len = 0;
        r = alm_tokenizer_decode(d->tok, d->all, d->n_all, false, &text, &len, NULL);
        if (r == 0 && (r = append_out(out, text, len)) == 0)
            emitted = len;
        free(text);
    } else if (d->mode == DETOK_STREAM) {
        r = close_window(d, true, out, &emitted);
    }
    reset(d);
    if (r < 0)
        return r;
    return emitted > INT32_MAX ? -E2BIG : (int)emitted;
}
