/* alm_tokenizer_decode and the read-only accessors. */
#include <errno.h>
#include <stdlib.h>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

int alm_tokenizer_decode(const alm_tokenizer *tok, const int32_t *ids, size_t n_ids,
                         bool skip_special, char **text, size_t *len, alm_error *err)
{
    if (!tok || !text || (!ids && n_ids))
        return alm_error_set(err, -EINVAL, "alm_tokenizer_decode: missing argument");
    *text = NULL;
    if (len)
        *len = 0;
    strlist tokens = { 0 };
    strbuf out = { 0 };
    int r = 0;
    for (size_t i = 0; i < n_ids && r == 0; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->n_ids || !tok->token_str[id]) {
            r = alm_error_set(err, -EINVAL, "alm_tokenizer_decode: invalid token id %d at %zu",
                              id, i);
            break;
        }
        if (skip_special && tok->skip[id])
            continue;
        if (strlist_push(&tokens, tok->decode_str[id], tok->decode_len[id]) < 0)
            r = alm_error_set(err, -ENOMEM, "out of memory");
    }
    if (r == 0)
        r = decoder_decode(&tok->dec, &tokens, &out, err);
    strlist_free(&tokens);
    if (r == 0) {
        size_t n = out.len;
        if (!(*text = strbuf_steal(&out)))
            r = alm_error_set(err, -ENOMEM, "out of memory");
        else if (len)
            *len = n;
    }
    strbuf_free(&out);
    return r;
}

int32_t alm_tokenizer_vocab_size(const alm_tokenizer *tok)
{
    return tok ? tok->n_ids : 0;
}

const char *alm_tokenizer_token_string(const alm_tokenizer *tok, int32_t id)
{
    if (!tok || id < 0 || id >= tok->n_ids)
        return NULL;
    return tok->token_str[id];
}

bool alm_tokenizer_is_special(const alm_tokenizer *tok, int32_t id)
{
    return tok && id >= 0 && id < tok->n_ids && tok->special[id];
}

size_t alm_tokenizer_eos_ids(const alm_tokenizer *tok, const int32_t **ids)
{
    if (ids)
        *ids = tok ? tok->eos_ids : NULL;
    return tok ? tok->n_eos : 0;
}

int32_t alm_tokenizer_bos_id(const alm_tokenizer *tok)
{
    return tok ? tok->bos_id : -1;
}
