/* The reference vectors computed with Hugging Face tokenizers/transformers:
 * every text encodes to exactly the reference ids (with and without the
 * special tokens encode adds), the ids decode to exactly the reference
 * text, and streaming the ids through the detokenizer gives that same
 * text. Also the prompts of the greedy references and the BOS/EOS facts. */
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "tok_fixtures.h"

/* The texts of a reference file, in file order, read with exact lengths. */
typedef struct ref_texts {
    tok_string *text, *decoded;
    size_t n_text, n_decoded;
} ref_texts;

static bool ref_texts_read(const char *path, ref_texts *t)
{
    t->text = tok_json_strings(path, "text", &t->n_text);
    t->decoded = tok_json_strings(path, "decoded", &t->n_decoded);
    return t->n_text > 0 && t->n_text == t->n_decoded;
}

static void ref_texts_free(ref_texts *t)
{
    tok_json_strings_free(t->text, t->n_text);
    tok_json_strings_free(t->decoded, t->n_decoded);
}

/* One vector: text -> ids (add_special as given) and ids -> decoded. */
static void check_vector(const alm_tokenizer *tok, const char *what, JsonObject *v,
                         const tok_string *text, const tok_string *decoded, bool add_special)
{
    size_t n_want, n_got, len;
    char shown[96];
    tok_preview(text->s, text->len, shown, sizeof shown);
    int32_t *want = tok_json_ids(json_object_get_array_member(v, "ids"), &n_want);
    int32_t *got = tok_encode(tok, text->s, text->len, add_special, &n_got);
    if (!tap_ok(got && tok_ids_equal(got, n_got, want, n_want), "%s: encode \"%s\"", what, shown)) {
        tok_diag_ids("want", want, n_want);
        tok_diag_ids("got ", got, n_got);
    }
    char *out = tok_decode(tok, want, n_want, false, &len);
    if (!tap_ok(out && len == decoded->len && memcmp(out, decoded->s, len) == 0,
                "%s: decode \"%s\"", what, shown))
        tap_diag("decoded text differs");
    free(out);
    out = tok_stream(tok, want, n_want, false, &len);
    tap_ok(out && len == decoded->len && memcmp(out, decoded->s, len) == 0,
           "%s: streamed decode \"%s\"", what, shown);
    free(out);
    free(want);
    free(got);
}

/* Checks list against the file-order texts starting at *at. */
static void check_vector_list(const alm_tokenizer *tok, const char *what, JsonArray *list,
                              const ref_texts *t, size_t *at, bool add_special)
{
    for (guint i = 0; i < json_array_get_length(list) && *at < t->n_text; i++, (*at)++)
        check_vector(tok, what, json_array_get_object_element(list, i), &t->text[*at],
                     &t->decoded[*at], add_special);
}

static void check_eos_bos(const alm_tokenizer *tok, const char *what, const int32_t *eos,
                          size_t n_eos, int32_t bos)
{
    const int32_t *got;
    size_t n = alm_tokenizer_eos_ids(tok, &got);
    tap_ok(tok_ids_equal(got, n, eos, n_eos), "%s: EOS ids", what);
    tap_ok(alm_tokenizer_bos_id(tok) == bos, "%s: BOS id %d (got %d)", what, bos,
           alm_tokenizer_bos_id(tok));
}

/* The coder tokenizer: tokenizer-vectors.json has ids without special
 * tokens; this tokenizer adds none, so add_special changes nothing. */
static void test_coder(void)
{
    char *dir = NULL, *refs = tok_data_path("refs/tokenizer-vectors.json");
    const char *def = getenv("ALM_DEFAULT_MODELS");
    if (def) {
        size_t n = strlen(def) + 32;
        dir = malloc(n);
        snprintf(dir, n, "%s/coder-target-4bit", def);
    }
    alm_tokenizer *tok = dir ? tok_load_checked(dir, "coder") : NULL;
    JsonParser *p = refs ? tok_read_json(refs) : NULL;
    ref_texts t = { 0 };
    if (tok && p && ref_texts_read(refs, &t)) {
        JsonArray *list = json_node_get_array(json_parser_get_root(p));
        size_t at = 0;
        check_vector_list(tok, "coder", list, &t, &at, false);
        at = 0;
        check_vector_list(tok, "coder +special", list, &t, &at, true);
        tap_ok(alm_tokenizer_vocab_size(tok) == 8192, "coder: vocabulary of 8192");
        tap_ok(alm_tokenizer_is_special(tok, 1) && !alm_tokenizer_is_special(tok, 3),
               "coder: <|im_start|> is special, ordinary tokens are not");
        const char *s = alm_tokenizer_token_string(tok, 2);
        tap_ok(s && strcmp(s, "<|im_end|>") == 0, "coder: token 2 is <|im_end|>");
        tap_ok(alm_tokenizer_token_string(tok, 8192) == NULL &&
                   alm_tokenizer_token_string(tok, -1) == NULL,
               "coder: no string for ids out of range");
        check_eos_bos(tok, "coder", (const int32_t[]){ 0 }, 1, -1);
    } else {
        tap_ok(false, "coder tokenizer and its reference vectors are there");
    }
    ref_texts_free(&t);
    if (p)
        g_object_unref(p);
    alm_tokenizer_free(tok);
    free(dir);
    free(refs);
}

/* A tokenizer with `plain` and `with_special_tokens` vector lists. */
static void test_two_lists(const char *model, const char *refs_name, const char *what)
{
    char *dir = tok_data_path(model), *refs = tok_data_path(refs_name);
    alm_tokenizer *tok = dir ? tok_load_checked(dir, what) : NULL;
    JsonParser *p = refs ? tok_read_json(refs) : NULL;
    ref_texts t = { 0 };
    if (tok && p && ref_texts_read(refs, &t)) {
        JsonObject *o = json_node_get_object(json_parser_get_root(p));
        char label[128];
        size_t at = 0;
        check_vector_list(tok, what, json_object_get_array_member(o, "plain"), &t, &at, false);
        snprintf(label, sizeof label, "%s +special", what);
        check_vector_list(tok, label, json_object_get_array_member(o, "with_special_tokens"), &t,
                          &at, true);
        tap_ok(at == t.n_text, "%s: all %zu reference texts checked", what, t.n_text);
    } else {
        tap_ok(false, "%s and its reference vectors are there", what);
    }
    ref_texts_free(&t);
    if (p)
        g_object_unref(p);
    alm_tokenizer_free(tok);
    free(dir);
    free(refs);
}

static void test_special_facts(void)
{
    char *dir = tok_data_path("models/tokenizers/llama3-bpe");
    alm_tokenizer *tok = tok_load_checked(dir, "llama3-bpe");
    if (tok)
        check_eos_bos(tok, "llama3-bpe", (const int32_t[]){ 4 }, 1, 0);
    alm_tokenizer_free(tok);
    free(dir);
    dir = tok_data_path("models/tokenizers/spm-bpe");
    tok = tok_load_checked(dir, "spm-bpe");
    if (tok)
        check_eos_bos(tok, "spm-bpe", (const int32_t[]){ 2 }, 1, 1);
    alm_tokenizer_free(tok);
    free(dir);
    dir = tok_data_path("models/tiny/llama2-spm");
    tok = tok_load_checked(dir, "llama2-spm");
    if (tok)
        check_eos_bos(tok, "llama2-spm", (const int32_t[]){ 2 }, 1, 1);
    alm_tokenizer_free(tok);
    free(dir);
}

/* The prompts the greedy references were generated from. */
static void test_greedy_prompts(void)
{
    char *refs = tok_data_path("refs/greedy.json");
    const char *def = getenv("ALM_DEFAULT_MODELS");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/coder-target-4bit", def ? def : ".");
    alm_tokenizer *tok = tok_load_checked(dir, "coder (greedy prompts)");
    JsonParser *p = refs ? tok_read_json(refs) : NULL;
    if (tok && p) {
        JsonObject *models = json_object_get_object_member(
            json_node_get_object(json_parser_get_root(p)), "models");
        JsonArray *list = json_object_get_array_member(models, "coder-target-4bit");
        for (guint i = 0; i < json_array_get_length(list); i++) {
            JsonObject *e = json_array_get_object_element(list, i);
            const char *prompt = json_object_get_string_member(e, "prompt");
            size_t nw, ng, len;
            int32_t *want = tok_json_ids(json_object_get_array_member(e, "prompt_ids"), &nw);
            int32_t *got = tok_encode(tok, prompt, strlen(prompt), true, &ng);
            tap_ok(got && tok_ids_equal(got, ng, want, nw), "greedy prompt %u encodes", i);
            /* The generated continuation decodes to the reference text. */
            int32_t *gen = tok_json_ids(json_object_get_array_member(e, "greedy_ids"), &ng);
            char *text = tok_decode(tok, gen, ng, false, &len);
            const char *want_text = json_object_get_string_member(e, "greedy_text");
            tap_ok(text && strcmp(text, want_text) == 0, "greedy continuation %u decodes", i);
            free(text);
            text = tok_stream(tok, gen, ng, false, &len);
            tap_ok(text && strcmp(text, want_text) == 0, "greedy continuation %u streams", i);
            free(text);
            free(gen);
            free(want);
            free(got);
        }
    }
    if (p)
        g_object_unref(p);
    alm_tokenizer_free(tok);
    free(refs);
}

static void test_llama2_spm_prompts(void)
{
    char *refs = tok_data_path("refs/tiny-llama2-spm-greedy.json");
    char *dir = tok_data_path("models/tiny/llama2-spm");
    alm_tokenizer *tok = dir ? tok_load_checked(dir, "llama2-spm") : NULL;
    JsonParser *p = refs ? tok_read_json(refs) : NULL;
    if (tok && p) {
        JsonArray *list = json_node_get_array(json_parser_get_root(p));
        for (guint i = 0; i < json_array_get_length(list); i++) {
            JsonObject *e = json_array_get_object_element(list, i);
            const char *prompt = json_object_get_string_member(e, "prompt");
            size_t nw, ng;
            int32_t *want =
                tok_json_ids(json_object_get_array_member(e, "prompt_ids_with_bos"), &nw);
            int32_t *got = tok_encode(tok, prompt, strlen(prompt), true, &ng);
            tap_ok(got && tok_ids_equal(got, ng, want, nw), "llama2-spm prompt %u with BOS", i);
            free(want);
            free(got);
        }
    }
    if (p)
        g_object_unref(p);
    alm_tokenizer_free(tok);
    free(dir);
    free(refs);
}

int main(void)
{
    if (!getenv("ALM_TEST_DATA"))
        return tap_skip_all("ALM_TEST_DATA is not set");
    test_coder();
    test_two_lists("models/tokenizers/llama3-bpe", "refs/llama3-bpe-vectors.json", "llama3-bpe");
    test_two_lists("models/tokenizers/spm-bpe", "refs/spm-bpe-vectors.json", "spm-bpe");
    test_two_lists("models/tiny/llama2-spm", "refs/spm-bpe-vectors.json", "llama2-spm");
    test_special_facts();
    test_greedy_prompts();
    test_llama2_spm_prompts();
    return tap_done();
}
