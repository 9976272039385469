/* Vectors produced by the Hugging Face tokenizers library itself
 * (tools/make_oracle_vectors.mjs): for the three test tokenizers and for
 * variants of them that exercise the other supported components
 * (Metaspace, NFC/NFKC/NFD, Lowercase, Strip, regex Replace, every Split
 * behavior, Digits, Whitespace, added-token flags, unk handling, Bert and
 * Roberta post-processors, no decoder, text-level Strip and Replace):
 * random and edge-case texts, slices of Python source, and random id lists
 * that cut characters in half. Encoding, decoding and streaming must all
 * agree with the library exactly. */
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "tok_fixtures.h"

#ifndef TOK_ORACLE_DIR
#error "TOK_ORACLE_DIR must name tests/tokenizer/data"
#endif

static const char *const oracle_files[] = {
    "coder", "llama3", "spm", "spm-metaspace", "spm-metaspace-always", "spm-metaspace-never",
    "spm-nfkc-lower", "spm-strip-regex", "spm-unk-fused", "spm-unk-unfused", "spm-no-unk",
    "spm-added-flags", "coder-added-flags", "llama3-splits", "llama3-digits-whitespace",
    "llama3-gpt2", "llama3-replace-after-join",
};

/* Writes base tokenizer.json with the patch applied (as the generator does)
 * into a new folder. */
static char *make_variant(const char *base, JsonObject *patch)
{
    char rel[512];
    snprintf(rel, sizeof rel, "%s/tokenizer.json", base);
    char *path = tok_data_path(rel);
    JsonParser *p = path ? tok_read_json(path) : NULL;
    free(path);
    if (!p)
        return NULL;
    JsonObject *root = json_node_get_object(json_parser_get_root(p));
    JsonObjectIter it;
    const gchar *name;
    JsonNode *value;
    json_object_iter_init(&it, patch);
    while (json_object_iter_next(&it, &name, &value)) {
        if (strcmp(name, "model") == 0) {
            JsonObject *model = json_object_get_object_member(root, "model");
            JsonObjectIter mi;
            const gchar *key;
            JsonNode *v;
            json_object_iter_init(&mi, json_node_get_object(value));
            while (json_object_iter_next(&mi, &key, &v))
                json_object_set_member(model, key, json_node_copy(v));
        } else if (strcmp(name, "added_tokens_extra") == 0) {
            JsonArray *added = json_object_get_array_member(root, "added_tokens");
            JsonArray *extra = json_node_get_array(value);
            for (guint i = 0; i < json_array_get_length(extra); i++)
                json_array_add_element(added, json_node_copy(json_array_get_element(extra, i)));
        } else {
            json_object_set_member(root, name, json_node_copy(value));
        }
    }
    JsonGenerator *g = json_generator_new();
    json_generator_set_root(g, json_parser_get_root(p));
    gchar *text = json_generator_to_data(g, NULL);
    char *dir = tok_tmpdir();
    bool ok = dir && tok_write_file(dir, "tokenizer.json", text);
    g_free(text);
    g_object_unref(g);
    g_object_unref(p);
    if (!ok) {
        tok_rmtree(dir);
        return NULL;
    }
    return dir;
}

typedef struct tally {
    size_t checked, failed;
} tally;

static void count(tally *t, bool ok, const char *what, const char *file, size_t index,
                  const char *text, size_t len)
{
    t->checked++;
    if (ok)
        return;
    if (t->failed++ < 3) {
        char shown[120];
        tap_diag("%s: %s case %zu differs (\"%s\")", file, what, index,
                 text ? tok_preview(text, len, shown, sizeof shown) : "");
    }
}

static bool same_text(const char *got, size_t len, const tok_string *want)
{
    return got && want->s && len == want->len && memcmp(got, want->s, len) == 0;
}

static void check_file(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/oracle-%s.json", TOK_ORACLE_DIR, name);
    JsonParser *p = tok_read_json(path);
    if (!tap_ok(p != NULL, "%s: oracle file reads", name))
        return;
    JsonObject *root = json_node_get_object(json_parser_get_root(p));
    char *dir = make_variant(json_object_get_string_member(root, "base"),
                             json_object_get_object_member(root, "patch"));
    alm_tokenizer *tok = dir ? tok_load_checked(dir, name) : NULL;
    size_t nt, nd, nds, nid, nids;
    tok_string *text = tok_json_strings(path, "text", &nt);
    tok_string *dec = tok_json_strings(path, "decoded", &nd);
    tok_string *dec_skip = tok_json_strings(path, "decoded_skip", &nds);
    tok_string *id_dec = tok_json_strings(path, "id_decoded", &nid);
    tok_string *id_dec_skip = tok_json_strings(path, "id_decoded_skip", &nids);
    JsonArray *cases = json_object_get_array_member(root, "cases");
    JsonArray *id_cases = json_object_get_array_member(root, "id_cases");
    bool shape = nt == json_array_get_length(cases) && nd == nt && nds == nt &&
                 nid == json_array_get_length(id_cases) && nids == nid;
    tap_ok(shape, "%s: %zu texts and %zu id lists", name, nt, nid);

    tally enc = { 0 }, enc_special = { 0 }, decoded = { 0 }, streamed = { 0 };
    for (size_t i = 0; tok && shape && i < nt; i++) {
        JsonObject *c = json_array_get_object_element(cases, (guint)i);
        size_t n_plain, n_special, n_got, len;
        int32_t *plain = tok_json_ids(json_object_get_array_member(c, "ids"), &n_plain);
        int32_t *special = tok_json_ids(json_object_get_array_member(c, "ids_special"), &n_special);
        int32_t *got = tok_encode(tok, text[i].s, text[i].len, false, &n_got);
        bool same = got && tok_ids_equal(got, n_got, plain, n_plain);
        if (!same && enc.failed < 3) {
            tok_diag_ids("want", plain, n_plain);
            tok_diag_ids("got ", got, n_got);
        }
        count(&enc, same, "encode", name, i, text[i].s, text[i].len);
        free(got);
        got = tok_encode(tok, text[i].s, text[i].len, true, &n_got);
        count(&enc_special, got && tok_ids_equal(got, n_got, special, n_special),
              "encode with special tokens", name, i, text[i].s, text[i].len);
        free(got);
        for (int skip = 0; skip < 2; skip++) {
            const tok_string *want = skip ? &dec_skip[i] : &dec[i];
            if (!want->s)
                continue; /* HF itself panics on this one */
            char *out = tok_decode(tok, special, n_special, skip, &len);
            count(&decoded, same_text(out, len, want), skip ? "decode skipping special" : "decode",
                  name, i, text[i].s, text[i].len);
            free(out);
            out = tok_stream(tok, special, n_special, skip, &len);
            count(&streamed, same_text(out, len, want), "stream", name, i, text[i].s, text[i].len);
            free(out);
        }
        free(plain);
        free(special);
    }
    for (size_t i = 0; tok && shape && i < nid; i++) {
        size_t n, len;
        int32_t *ids = tok_json_ids(
            json_object_get_array_member(json_array_get_object_element(id_cases, (guint)i), "ids"),
            &n);
        for (int skip = 0; skip < 2; skip++) {
            const tok_string *want = skip ? &id_dec_skip[i] : &id_dec[i];
            if (!want->s)
                continue;
            char *out = tok_decode(tok, ids, n, skip, &len);
            count(&decoded, same_text(out, len, want), "decode of random ids", name, i, NULL, 0);
            free(out);
            out = tok_stream(tok, ids, n, skip, &len);
            count(&streamed, same_text(out, len, want), "stream of random ids", name, i, NULL, 0);
            free(out);
        }
        free(ids);
    }
    tap_ok(tok && enc.checked && !enc.failed, "%s: encode matches HF (%zu/%zu)", name,
           enc.checked - enc.failed, enc.checked);
    tap_ok(tok && enc_special.checked && !enc_special.failed,
           "%s: encode with special tokens matches HF (%zu/%zu)", name,
           enc_special.checked - enc_special.failed, enc_special.checked);
    tap_ok(tok && decoded.checked && !decoded.failed, "%s: decode matches HF (%zu/%zu)", name,
           decoded.checked - decoded.failed, decoded.checked);
    tap_ok(tok && streamed.checked && !streamed.failed,
           "%s: streamed decode matches HF (%zu/%zu)", name, streamed.checked - streamed.failed,
           streamed.checked);

    tok_json_strings_free(text, nt);
    tok_json_strings_free(dec, nd);
    tok_json_strings_free(dec_skip, nds);
    tok_json_strings_free(id_dec, nid);
    tok_json_strings_free(id_dec_skip, nids);
    alm_tokenizer_free(tok);
    tok_rmtree(dir);
    g_object_unref(p);
}

int main(void)
{
    if (!getenv("ALM_TEST_DATA"))
        return tap_skip_all("ALM_TEST_DATA is not set");
    for (size_t i = 0; i < sizeof oracle_files / sizeof oracle_files[0]; i++)
        check_file(oracle_files[i]);
    return tap_done();
}
