/* alm_tokenizer_encode: added tokens are cut out of the raw text first;
 * each piece between them is normalized, searched again for normalized
 * added tokens, pre-tokenized into words, and each word goes through BPE.
 * All working memory belongs to the call. */
#include <errno.h>
#include <stdlib.h>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

typedef struct encode_call {
    const alm_tokenizer *tok;
    idvec ids;
    match_ctx match;
    strbuf normalized, scratch;
    pretok_scratch pre;
    bpe_scratch bpe;
    bool segment_at_start; /* the raw segment being encoded starts the text */
} encode_call;

static int on_word(void *ctx, const char *w, size_t len, alm_error *err)
{
    encode_call *c = ctx;
    return bpe_encode_word(&c->tok->bpe, &c->bpe, w, len, &c->ids, err);
}

static int on_normalized_segment(void *ctx, const char *s, size_t len, size_t offset,
                                 int32_t token, alm_error *err)
{
    encode_call *c = ctx;
    if (token >= 0)
        return idvec_push(&c->ids, token) < 0 ? alm_error_set(err, -ENOMEM, "out of memory") : 0;
    return pretokenizer_run(&c->tok->pretok, &c->pre, s, len, c->segment_at_start && offset == 0,
                            on_word, c, err);
}

static int on_raw_segment(void *ctx, const char *s, size_t len, size_t offset, int32_t token,
                          alm_error *err)
{
    encode_call *c = ctx;
    if (token >= 0)
        return idvec_push(&c->ids, token) < 0 ? alm_error_set(err, -ENOMEM, "out of memory") : 0;
    c->segment_at_start = offset == 0;
    const alm_tokenizer *tok = c->tok;
    if (tok->norm.n == 0)
        return added_vocab_split(&tok->added, true, &c->match, s, len, on_normalized_segment, c, err);
    int r = normalizer_apply(&tok->norm, &c->match, s, len, &c->normalized, &c->scratch, err);
    if (r < 0)
        return r;
    /* Later callbacks never touch c->normalized, so it stays valid here. */
    return added_vocab_split(&tok->added, true, &c->match, c->normalized.data ? c->normalized.data : "",
                             c->normalized.len, on_normalized_segment, c, err);
}

int alm_tokenizer_encode(const alm_tokenizer *tok, const char *text, size_t len,
                         bool add_special, int32_t **ids, size_t *n_ids, alm_error *err)
{
    if (!tok || !ids || !n_ids || (!text && len))
        return alm_error_set(err, -EINVAL, "alm_tokenizer_encode: missing argument");
    *ids = NULL;
    *n_ids = 0;
    if (!text)
        text = "";
    if (!utf8_validate(text, len))
        return alm_error_set(err, -EINVAL, "alm_tokenizer_encode: text is not valid UTF-8");

    encode_call c = { .tok = tok };
    int r = pretok_scratch_init(&c.pre, &tok->pretok, &c.match);
    if (r < 0) {
        alm_error_set(err, r, "out of memory");
    } else {
        /* Roughly one token per four bytes of source text. */
        if (idvec_reserve(&c.ids, len / 4 + 8) < 0)
            r = alm_error_set(err, -ENOMEM, "out of memory");
        if (r == 0 && add_special)
            r = idvec_append(&c.ids, tok->post.prefix.data, tok->post.prefix.len) < 0
                    ? alm_error_set(err, -ENOMEM, "out of memory")
                    : 0;
        if (r == 0)
            r = added_vocab_split(&tok->added, false, &c.match, text, len, on_raw_segment, &c, err);
        if (r == 0 && add_special)
            r = idvec_append(&c.ids, tok->post.suffix.data, tok->post.suffix.len) < 0
                    ? alm_error_set(err, -ENOMEM, "out of memory")
                    : 0;
    }
    pretok_scratch_free(&c.pre);
    bpe_scratch_free(&c.bpe);
    strbuf_free(&c.normalized);
    strbuf_free(&c.scratch);
    match_ctx_free(&c.match);
    if (r < 0) {
        idvec_free(&c.ids);
        return r;
    }
    if (c.ids.len == 0 && idvec_reserve(&c.ids, 1) < 0)
        return alm_error_set(err, -ENOMEM, "out of memory");
    *ids = c.ids.data;
    *n_ids = c.ids.len;
    return 0;
}
