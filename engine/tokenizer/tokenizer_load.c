/* alm_tokenizer_load: reads tokenizer.json and the optional config files,
 * builds every component, then the id tables and the BOS/EOS facts. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/json_util.h"
#include "tokenizer/special_config.h"
#include "tokenizer/tokenizer.h"

int32_t tokenizer_token_id(const alm_tokenizer *tok, const char *s, size_t len)
{
    int32_t id = added_vocab_find_content(&tok->added, s, len);
    return id >= 0 ? id : token_map_get(&tok->bpe.vocab, s, len);
}

/* id -> string for decoding: the model's vocabulary, then the added tokens
 * on top (HF looks in the added vocabulary first). */
static int build_id_tables(alm_tokenizer *tok, alm_error *err)
{
    int32_t n = tok->bpe.n_ids;
    for (size_t i = 0; i < tok->added.n; i++)
        if (!tok->added.tokens[i].disabled && tok->added.tokens[i].id >= n)
            n = tok->added.tokens[i].id + 1;
    tok->n_ids = n;
    size_t count = n ? (size_t)n : 1;
    tok->token_str = calloc(count, sizeof *tok->token_str);
    tok->token_len = calloc(count, sizeof *tok->token_len);
    tok->special = calloc(count, sizeof *tok->special);
    tok->decode_str = calloc(count, sizeof *tok->decode_str);
    tok->decode_len = calloc(count, sizeof *tok->decode_len);
    tok->skip = calloc(count, sizeof *tok->skip);
    if (!tok->token_str || !tok->token_len || !tok->special || !tok->decode_str ||
        !tok->decode_len || !tok->skip)
        return alm_error_set(err, -ENOMEM, "out of memory");
    for (int32_t id = 0; id < tok->bpe.n_ids; id++) {
        size_t len = 0;
        const char *s = bpe_token(&tok->bpe, id, &len);
        tok->token_str[id] = s;
        tok->token_len[id] = (uint32_t)len;
    }
    /* In file order, so a later entry for the same id wins. */
    for (size_t i = 0; i < tok->added.n; i++) {
        const added_token *t = &tok->added.tokens[i];
        if (t->disabled)
            continue;
        tok->token_str[t->id] = t->content;
        tok->token_len[t->id] = (uint32_t)t->len;
        tok->special[t->id] = t->special;
    }
    for (int32_t id = 0; id < n; id++) {
        tok->decode_str[id] = tok->token_str[id];
        tok->decode_len[id] = tok->token_len[id];
    }
    for (size_t i = 0; i < tok->added.n; i++) {
        const added_token *t = &tok->added.tokens[i];
        if (t->disabled || !t->normalized)
            continue;
        tok->decode_str[t->id] = t->match;
        tok->decode_len[t->id] = (uint32_t)t->match_len;
    }
    /* HF skips by string: whatever decodes from a special token's text. */
    for (int32_t id = 0; id < n; id++) {
        if (!tok->decode_str[id])
            continue;
        for (size_t i = 0; i < tok->added.n && !tok->skip[id]; i++) {
            const added_token *t = &tok->added.tokens[i];
            tok->skip[id] = t->special && !t->disabled && t->len == tok->decode_len[id] &&
                            memcmp(t->content, tok->decode_str[id], t->len) == 0;
        }
    }
    return 0;
}

static int add_eos(alm_tokenizer *tok, int32_t id)
{
    for (size_t i = 0; i < tok->n_eos; i++)
        if (tok->eos_ids[i] == id)
            return 0;
    int32_t *p = realloc(tok->eos_ids, (tok->n_eos + 1) * sizeof *p);
    if (!p)
        return -ENOMEM;
    tok->eos_ids = p;
    tok->eos_ids[tok->n_eos++] = id;
    return 0;
}

static int apply_special_config(alm_tokenizer *tok, const special_config *c, bool has_post,
                                 alm_error *err)
{
    int32_t bos = c->bos_token ? tokenizer_token_id(tok, c->bos_token, strlen(c->bos_token)) : -1;
    int32_t eos = c->eos_token ? tokenizer_token_id(tok, c->eos_token, strlen(c->eos_token)) : -1;

    /* transformers (TokenizersBackend) replaces the post-processor with
     * "[bos] $A [eos]" when tokenizer_config.json names add_bos_token or
     * add_eos_token, or when tokenizer.json has no post-processor. */
    if (c->has_add_bos || c->has_add_eos || !has_post) {
        post_processor_free(&tok->post);
        if ((c->add_bos && bos >= 0 && idvec_push(&tok->post.prefix, bos) < 0) ||
            (c->add_eos && eos >= 0 && idvec_push(&tok->post.suffix, eos) < 0))
            return alm_error_set(err, -ENOMEM, "out of memory");
    }

    tok->bos_id = bos >= 0 ? bos : tok->post.prefix.len ? tok->post.prefix.data[0] : -1;

    int r = 0;
    for (size_t i = 0; i < c->generation_eos.len && r == 0; i++)
        r = add_eos(tok, c->generation_eos.data[i]);
    if (eos >= 0 && r == 0)
        r = add_eos(tok, eos);
    for (size_t i = 0; i < c->config_eos.len && r == 0; i++)
        r = add_eos(tok, c->config_eos.data[i]);
    return r < 0 ? alm_error_set(err, r, "out of memory") : 0;
}

static int load_tokenizer_json(alm_tokenizer *tok, const char *path, bool *has_post,
                               alm_error *err)
{
    JsonParser *parser;
    JsonNode *root;
    int r = json_load_file(path, &parser, &root, err);
    if (r < 0)
        return r;
    if (!JSON_NODE_HOLDS_OBJECT(root)) {
        g_object_unref(parser);
        return alm_error_set(err, -EINVAL, "%s: the top level must be an object", path);
    }
    JsonObject *o = json_node_get_object(root);
    JsonObject *model;
    JsonArray *added;
    char where[4200];
    *has_post = json_member(o, "post_processor") != NULL;

    if ((r = json_get_object(o, "model", true, &model, path, err)) < 0 ||
        (r = json_get_array(o, "added_tokens", false, &added, path, err)) < 0)
        goto out;
    snprintf(where, sizeof where, "%s: model", path);
    if ((r = bpe_from_json(&tok->bpe, model, where, err)) < 0)
        goto out;
    snprintf(where, sizeof where, "%s: normalizer", path);
    if ((r = normalizer_from_json(&tok->norm, json_member(o, "normalizer"), where, err)) < 0)
        goto out;
    snprintf(where, sizeof where, "%s: pre_tokenizer", path);
    if ((r = pretokenizer_from_json(&tok->pretok, json_member(o, "pre_tokenizer"), where, err)) <
        0)
        goto out;
    snprintf(where, sizeof where, "%s: post_processor", path);
    if ((r = post_processor_from_json(&tok->post, json_member(o, "post_processor"), where,
                                      err)) < 0)
        goto out;
    snprintf(where, sizeof where, "%s: decoder", path);
    if ((r = decoder_from_json(&tok->dec, json_member(o, "decoder"), where, err)) < 0)
        goto out;
    snprintf(where, sizeof where, "%s: added_tokens", path);
    if ((r = added_vocab_from_json(&tok->added, added, where, err)) < 0 ||
        (r = added_vocab_build(&tok->added, &tok->norm, &tok->bpe.vocab, tok->bpe.vocab.count,
                               err)) < 0)
        goto out;
    r = build_id_tables(tok, err);
out:
    g_object_unref(parser);
    return r;
}

int alm_tokenizer_load(const char *model_dir, alm_tokenizer **out, alm_error *err)
{
    if (!model_dir || !out)
        return alm_error_set(err, -EINVAL, "alm_tokenizer_load: missing argument");
    *out = NULL;
    alm_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok)
        return alm_error_set(err, -ENOMEM, "out of memory");
    tok->bos_id = -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
    bool has_post = false;
    special_config cfg;
    int r = load_tokenizer_json(tok, path, &has_post, err);
    if (r == 0 && (r = special_config_load(&cfg, model_dir, err)) == 0) {
        r = apply_special_config(tok, &cfg, has_post, err);
        special_config_free(&cfg);
    }
    if (r < 0) {
        alm_tokenizer_free(tok);
        return r;
    }
    *out = tok;
    return 0;
}

void alm_tokenizer_free(alm_tokenizer *tok)
{
    if (!tok)
        return;
    normalizer_free(&tok->norm);
    pretokenizer_free(&tok->pretok);
    bpe_free(&tok->bpe);
    added_vocab_free(&tok->added);
    post_processor_free(&tok->post);
    decoder_free(&tok->dec);
    free(tok->token_str);
    free(tok->token_len);
    free(tok->special);
    free(tok->decode_str);
    free(tok->decode_len);
    free(tok->skip);
    free(tok->eos_ids);
    free(tok);
}
