/* Chat templates: each family rendered byte for byte as transformers'
 * apply_chat_template renders the published templates in templates/ (the
 * expected strings were written from those templates), detection from
 * chat_template.jinja, tokenizer_config.json (string and named list) and the
 * vocabulary, and the errors. Fixtures are model folders made at run time:
 * a small tokenizer from tests/data plus a template. */
#include <errno.h>
#include <ftw.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alm.h"
#include "chat/chat_format.h"
#include "tap.h"
#include "test_util.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static const alm_chat_message conv_a[] = {
    { "system", "You are terse." }, { "user", " Hi there \n" },
};
static const alm_chat_message conv_b[] = {
    { "user", "Write fib." }, { "assistant", " def fib(n): pass \n" }, { "user", "Faster?" },
};
static const alm_chat_message conv_c[] = {
    { "system", "S" }, { "user", "U1" }, { "assistant", "A1" }, { "user", "U2" },
};

typedef struct expectation {
    const char *template_file;     /* in templates/ */
    const char *tokenizer;         /* under ALM_TEST_DATA/models */
    const alm_chat_message *msgs;
    size_t n;
    const char *expected;
} expectation;

#define CONV(c) c, N_OF(c)
#define LLAMA3_HEAD(role) "<|start_header_id|>" role "<|end_header_id|>\n\n"
#define LLAMA31_SYSTEM "<|begin_of_text|>" LLAMA3_HEAD("system") \
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"

static const expectation expectations[] = {
    { "llama3.jinja", "tokenizers/llama3-bpe", CONV(conv_a),
      "<|begin_of_text|>" LLAMA3_HEAD("system") "You are terse.<|eot_id|>"
      LLAMA3_HEAD("user") "Hi there<|eot_id|>" LLAMA3_HEAD("assistant") },
    { "llama3.jinja", "tokenizers/llama3-bpe", CONV(conv_b),
      "<|begin_of_text|>" LLAMA3_HEAD("user") "Write fib.<|eot_id|>"
      LLAMA3_HEAD("assistant") "def fib(n): pass<|eot_id|>"
      LLAMA3_HEAD("user") "Faster?<|eot_id|>" LLAMA3_HEAD("assistant") },
    { "llama3.1.jinja", "tokenizers/llama3-bpe", CONV(conv_a),
      LLAMA31_SYSTEM "You are terse.<|eot_id|>" LLAMA3_HEAD("user") "Hi there<|eot_id|>"
      LLAMA3_HEAD("assistant") },
    { "llama3.1.jinja", "tokenizers/llama3-bpe", CONV(conv_b),
      LLAMA31_SYSTEM "<|eot_id|>" LLAMA3_HEAD("user") "Write fib.<|eot_id|>"
      LLAMA3_HEAD("assistant") "def fib(n): pass<|eot_id|>"
      LLAMA3_HEAD("user") "Faster?<|eot_id|>" LLAMA3_HEAD("assistant") },
    { "qwen2.jinja", "tiny/qwen2-bias", CONV(conv_a),
      "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\n Hi there \n<|im_end|>\n"
      "<|im_start|>assistant\n" },
    { "qwen2.jinja", "tiny/qwen2-bias", CONV(conv_b),
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
      "<|im_start|>user\nWrite fib.<|im_end|>\n"
      "<|im_start|>assistant\n def fib(n): pass \n<|im_end|>\n"
      "<|im_start|>user\nFaster?<|im_end|>\n<|im_start|>assistant\n" },
    { "qwen2.5.jinja", "tiny/qwen2-bias", CONV(conv_b),
      "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
      "assistant.<|im_end|>\n<|im_start|>user\nWrite fib.<|im_end|>\n"
      "<|im_start|>assistant\n def fib(n): pass \n<|im_end|>\n"
      "<|im_start|>user\nFaster?<|im_end|>\n<|im_start|>assistant\n" },
    { "qwen2.5.jinja", "tiny/qwen2-bias", CONV(conv_c),
      "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n"
      "<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n"
      "<|im_start|>assistant\n" },
    { "mixtral-v0.1.jinja", "tokenizers/spm-bpe", CONV(conv_b),
      "<s>[INST] Write fib. [/INST] def fib(n): pass \n</s>[INST] Faster? [/INST]" },
    { "mistral-v0.2.jinja", "tokenizers/spm-bpe", CONV(conv_a),
      "<s> [INST] You are terse.\n\n Hi there \n [/INST]" },
    { "mistral-v0.2.jinja", "tokenizers/spm-bpe", CONV(conv_b),
      "<s> [INST] Write fib. [/INST]  def fib(n): pass \n</s> [INST] Faster? [/INST]" },
    { "mistral-v0.2.jinja", "tokenizers/spm-bpe", CONV(conv_c),
      "<s> [INST] S\n\nU1 [/INST] A1</s> [INST] U2 [/INST]" },
    { "mistral-v0.3.jinja", "tokenizers/spm-bpe", CONV(conv_a),
      "<s>[INST] You are terse.\n\n Hi there \n[/INST]" },
    { "mistral-v0.3.jinja", "tokenizers/spm-bpe", CONV(conv_b),
      "<s>[INST] Write fib.[/INST] def fib(n): pass</s>[INST] Faster?[/INST]" },
    { "mistral-v0.3.jinja", "tokenizers/spm-bpe", CONV(conv_c),
      "<s>[INST] U1[/INST] A1</s>[INST] S\n\nU2[/INST]" },
};

/* ------------------------------------------------------------ fixtures */

typedef enum template_place {
    PLACE_NONE,          /* tokenizer files only */
    PLACE_JINJA,         /* chat_template.jinja */
    PLACE_CONFIG,        /* tokenizer_config.json "chat_template": "..." */
    PLACE_CONFIG_LIST,   /* ... [{"name": "default", "template": "..."}] */
    PLACE_CONFIG_NUMBER, /* ... 42: malformed */
} template_place;

static char *read_all(const char *path)
{
    gchar *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL))
        return NULL;
    char *copy = strdup(text);
    g_free(text);
    return copy;
}

static int write_all(const char *dir, const char *name, const char *text)
{
    char *path = g_build_filename(dir, name, NULL);
    int ok = g_file_set_contents(path, text, -1, NULL);
    g_free(path);
    return ok ? 0 : -EIO;
}

/* tokenizer_config.json from the source folder with chat_template set. */
static char *config_with_template(const char *src_config, const char *tmpl, template_place place)
{
    char *text = read_all(src_config);
    JsonParser *parser = json_parser_new();
    if (!text || !json_parser_load_from_data(parser, text, -1, NULL)) {
        free(text);
        g_object_unref(parser);
        return NULL;
    }
    free(text);
    JsonObject *root = json_node_get_object(json_parser_get_root(parser));
    if (place == PLACE_CONFIG) {
        json_object_set_string_member(root, "chat_template", tmpl);
    } else if (place == PLACE_CONFIG_LIST) {
        JsonArray *list = json_array_new();
        JsonObject *tool = json_object_new();
        json_object_set_string_member(tool, "name", "tool_use");
        json_object_set_string_member(tool, "template", "{{ unrelated }}");
        json_array_add_object_element(list, tool);
        JsonObject *def = json_object_new();
        json_object_set_string_member(def, "name", "default");
        json_object_set_string_member(def, "template", tmpl);
        json_array_add_object_element(list, def);
        json_object_set_array_member(root, "chat_template", list);
    } else {
        json_object_set_int_member(root, "chat_template", 42);
    }
    JsonGenerator *gen = json_generator_new();
    json_generator_set_root(gen, json_parser_get_root(parser));
    gchar *out = json_generator_to_data(gen, NULL);
    char *copy = strdup(out);
    g_free(out);
    g_object_unref(gen);
    g_object_unref(parser);
    return copy;
}

/* A temporary model folder: the tokenizer files of models/<tokenizer> and
 * the template file placed as asked. Returns the folder (free and remove
 * with remove_fixture), or NULL. */
static char *make_fixture(const char *tokenizer, const char *template_file, template_place place)
{
    char *dir = strdup("/tmp/alm-chat-test-XXXXXX");
    if (!dir || !mkdtemp(dir)) {
        free(dir);
        return NULL;
    }
    char *src = test_path("ALM_TEST_DATA", "models");
    char *src_tok = g_build_filename(src, tokenizer, "tokenizer.json", NULL);
    char *src_config = g_build_filename(src, tokenizer, "tokenizer_config.json", NULL);
    char *tok_text = read_all(src_tok);
    char *tmpl = NULL;
    if (template_file) {
        char *tpath = g_build_filename(CHAT_TEMPLATES_DIR, template_file, NULL);
        tmpl = read_all(tpath);
        g_free(tpath);
    }
    int r = tok_text ? write_all(dir, "tokenizer.json", tok_text) : -EIO;
    char *config = NULL;
    if (place == PLACE_NONE || place == PLACE_JINJA)
        config = read_all(src_config);
    else if (tmpl || place == PLACE_CONFIG_NUMBER)
        config = config_with_template(src_config, tmpl, place);
    if (r == 0)
        r = config ? write_all(dir, "tokenizer_config.json", config) : -EIO;
    if (r == 0 && place == PLACE_JINJA)
        r = tmpl ? write_all(dir, "chat_template.jinja", tmpl) : -EIO;
    free(config);
    free(tmpl);
    free(tok_text);
    g_free(src_tok);
    g_free(src_config);
    free(src);
    if (r < 0) {
        tap_diag("cannot make a fixture from %s", tokenizer);
        free(dir);
        return NULL;
    }
    return dir;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static void remove_fixture(char *dir)
{
    if (dir)
        nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

/* Detects and renders the folder's format: the code alm_chat_render runs,
 * without needing model weights in the fixture. */
static int render_dir(const char *dir, const alm_chat_message *msgs, size_t n, bool gen,
                      char **out, alm_error *err)
{
    *out = NULL;
    alm_tokenizer *tok = NULL;
    int r = alm_tokenizer_load(dir, &tok, err);
    if (r < 0)
        return r;
    chat_format f;
    r = chat_format_detect(dir, tok, &f, err);
    if (r == 0) {
        r = chat_format_render(&f, msgs, n, gen, out, err);
        chat_format_clear(&f);
    }
    alm_tokenizer_free(tok);
    return r;
}

static void check_rendered(const char *what, const char *dir, const alm_chat_message *msgs,
                           size_t n, const char *expected)
{
    char *out = NULL;
    alm_error err = { 0 };
    int r = dir ? render_dir(dir, msgs, n, true, &out, &err) : -EIO;
    bool same = r == 0 && strcmp(out, expected) == 0;
    tap_ok(same, "%s", what);
    if (!same) {
        tap_diag("r=%d %s", r, err.message);
        tap_diag("got:      %s", out ? g_strescape(out, NULL) : "(none)");
        tap_diag("expected: %s", g_strescape(expected, NULL));
    }
    free(out);
}

/* ------------------------------------------------------------ tests */

static void test_published_templates(void)
{
    for (size_t i = 0; i < N_OF(expectations); i++) {
        const expectation *e = &expectations[i];
        char *dir = make_fixture(e->tokenizer, e->template_file, PLACE_JINJA);
        char what[160];
        snprintf(what, sizeof what, "%s, conversation %zu (chat_template.jinja)",
                 e->template_file, i);
        check_rendered(what, dir, e->msgs, e->n, e->expected);
        remove_fixture(dir);
    }
}

static void test_tokenizer_config_places(void)
{
    const expectation *llama3 = &expectations[0];
    char *dir = make_fixture(llama3->tokenizer, llama3->template_file, PLACE_CONFIG);
    check_rendered("template as tokenizer_config.json's chat_template string", dir,
                   llama3->msgs, llama3->n, llama3->expected);
    remove_fixture(dir);

    const expectation *qwen = &expectations[5];
    dir = make_fixture(qwen->tokenizer, qwen->template_file, PLACE_CONFIG_LIST);
    check_rendered("template from a named list: the one named default", dir,
                   qwen->msgs, qwen->n, qwen->expected);
    remove_fixture(dir);

    dir = make_fixture("tokenizers/spm-bpe", NULL, PLACE_CONFIG_NUMBER);
    char *out = NULL;
    alm_error err = { 0 };
    int r = dir ? render_dir(dir, conv_b, N_OF(conv_b), true, &out, &err) : -EIO;
    tap_ok(r == -EINVAL && strstr(err.message, "chat_template is neither"),
           "chat_template of the wrong type is an error: %s", err.message);
    free(out);
    remove_fixture(dir);
}

static void test_vocabulary_fallback(void)
{
    /* No template anywhere: the special tokens decide. */
    char *dir = make_fixture("tokenizers/llama3-bpe", NULL, PLACE_NONE);
    check_rendered("Llama-3 from <|start_header_id|> etc. in the vocabulary", dir,
                   conv_a, N_OF(conv_a), expectations[0].expected);
    remove_fixture(dir);

    dir = make_fixture("tiny/qwen2-bias", NULL, PLACE_NONE);
    check_rendered("ChatML from <|im_start|> in the vocabulary (no default system prompt)", dir,
                   conv_c, N_OF(conv_c), expectations[7].expected);
    remove_fixture(dir);

    dir = make_fixture("tokenizers/spm-bpe", NULL, PLACE_NONE);
    char *out = NULL;
    alm_error err = { 0 };
    int r = dir ? render_dir(dir, conv_b, N_OF(conv_b), true, &out, &err) : -EIO;
    tap_ok(r == -ENOTSUP && strstr(err.message, "has no chat template") &&
           strstr(err.message, dir ? dir : "?"),
           "no template and no chat tokens: -ENOTSUP naming the folder: %s", err.message);
    free(out);
    remove_fixture(dir);
}

static void test_errors(void)
{
    chat_format f;
    alm_error err = { 0 };
    int r = chat_format_from_template("{{ messages | tojson }}", NULL, NULL, &f, &err);
    tap_ok(r == -ENOTSUP && strstr(err.message, "none of the known families"),
           "an unknown template is -ENOTSUP: %s", err.message);
    r = chat_format_from_template("<s>[INST] <<SYS>>\\n{{ system }}", NULL, NULL, &f, &err);
    tap_ok(r == -ENOTSUP, "Llama-2's <<SYS>> format is not taken for Mistral's");

    r = chat_format_from_template("[INST]", NULL, NULL, &f, &err);
    tap_ok(r == 0 && f.family == CHAT_FAMILY_MISTRAL, "[INST] means Mistral");
    if (r == 0) {
        char *out = NULL;
        static const alm_chat_message two_users[] = { { "user", "a" }, { "user", "b" } };
        r = chat_format_render(&f, two_users, 2, true, &out, &err);
        tap_ok(r == -EINVAL && strstr(err.message, "alternate") && !out,
               "Mistral refuses turns that do not alternate: %s", err.message);
        static const alm_chat_message tool[] = { { "user", "a" }, { "tool", "b" } };
        r = chat_format_render(&f, tool, 2, true, &out, &err);
        tap_ok(r == -EINVAL && strstr(err.message, "\"tool\""),
               "Mistral refuses other roles: %s", err.message);
        static const alm_chat_message no_content[] = { { "user", NULL } };
        r = chat_format_render(&f, no_content, 1, true, &out, &err);
        tap_ok(r == -EINVAL, "a message without content is refused");
        chat_format_clear(&f);
    }
}

static void test_encoding(void)
{
    /* The rendered text is meant to be encoded with special tokens parsed
     * and none added: the markers must come out as their own ids. */
    char *dir = make_fixture("tokenizers/llama3-bpe", "llama3.jinja", PLACE_JINJA);
    char *out = NULL;
    alm_error err = { 0 };
    alm_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int r = dir ? render_dir(dir, conv_a, N_OF(conv_a), true, &out, &err) : -EIO;
    if (r == 0)
        r = alm_tokenizer_load(dir, &tok, &err);
    if (r == 0)
        r = alm_tokenizer_encode(tok, out, strlen(out), false, &ids, &n, &err);
    int headers = 0, eots = 0;
    for (size_t i = 0; r == 0 && i < n; i++) {
        const char *s = alm_tokenizer_token_string(tok, ids[i]);
        headers += s && strcmp(s, "<|start_header_id|>") == 0;
        eots += s && strcmp(s, "<|eot_id|>") == 0;
    }
    tap_ok(r == 0 && n > 0 && ids[0] == alm_tokenizer_bos_id(tok) && headers == 3 && eots == 2,
           "rendered Llama-3 text encodes to BOS, 3 header and 2 eot tokens (%d, %d)",
           headers, eots);
    free(ids);
    alm_tokenizer_free(tok);
    free(out);
    remove_fixture(dir);
}

static void test_public_api(void)
{
    /* tiny/qwen2-bias ships a plain ChatML chat_template.jinja. */
    char *path = test_path("ALM_TEST_DATA", "models/tiny/qwen2-bias");
    alm_model *m = NULL;
    alm_error err = { 0 };
    int r = alm_model_load(path, NULL, &m, &err);
    tap_ok(r == 0, "load tiny/qwen2-bias: %s", err.message);
    if (r == 0) {
        tap_ok(strcmp(alm_model_dir(m), path) == 0, "alm_model_dir is the folder loaded");
        char *out = NULL;
        r = alm_chat_render(m, conv_b, N_OF(conv_b), false, &out, &err);
        tap_ok(r == 0 && strcmp(out, "<|im_start|>user\nWrite fib.<|im_end|>\n"
                                     "<|im_start|>assistant\n def fib(n): pass \n<|im_end|>\n"
                                     "<|im_start|>user\nFaster?<|im_end|>\n") == 0,
               "alm_chat_render: ChatML without the generation prompt");
        free(out);
        alm_model_free(m);
    }
    free(path);

    path = test_path("ALM_TEST_DATA", "models/tiny/llama2-spm");
    m = NULL;
    r = alm_model_load(path, NULL, &m, &err);
    if (r == 0) {
        char *out = NULL;
        r = alm_chat_render(m, conv_b, N_OF(conv_b), true, &out, &err);
        tap_ok(r == -ENOTSUP && !out && strstr(err.message, "tokenizer_config.json has no "
                                                            "chat_template and no known chat tokens"),
               "alm_chat_render on a model without a chat format: %s", err.message);
        alm_model_free(m);
    } else {
        tap_ok(0, "load tiny/llama2-spm: %s", err.message);
    }
    free(path);
}

int main(void)
{
    if (!getenv("ALM_TEST_DATA"))
        return tap_skip_all("ALM_TEST_DATA is not set");
    test_published_templates();
    test_tokenizer_config_places();
    test_vocabulary_fallback();
    test_errors();
    test_encoding();
    test_public_api();
    return tap_done();
}
