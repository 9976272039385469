/* Bad input never crashes and always explains itself: missing and
 * malformed files, unknown component types (named in the message),
 * inconsistent vocabularies, bad config files, invalid UTF-8 and invalid
 * ids; also what the config files decide (BOS/EOS, add_bos_token), and
 * randomly damaged tokenizer.json files. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "tok_fixtures.h"

/* A small valid tokenizer.json; tests swap single members with strreplace. */
static const char minimal[] =
    "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null,\n"
    " \"added_tokens\": [{\"id\": 0, \"content\": \"<s>\", \"single_word\": false,"
    " \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true},\n"
    "  {\"id\": 1, \"content\": \"</s>\", \"single_word\": false, \"lstrip\": false,"
    " \"rstrip\": false, \"normalized\": false, \"special\": true}],\n"
    " \"normalizer\": null,\n"
    " \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\s+\"},"
    " \"behavior\": \"Isolated\", \"invert\": false},\n"
    " \"post_processor\": null,\n"
    " \"decoder\": {\"type\": \"Fuse\"},\n"
    " \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": \"<unk>\","
    " \"fuse_unk\": true, \"byte_fallback\": false,"
    " \"vocab\": {\"<s>\": 0, \"</s>\": 1, \"<unk>\": 2, \"a\": 3, \"b\": 4, \"ab\": 5, \" \": 6,"
    " \"abab\": 7},\n"
    "  \"merges\": [\"a b\", [\"ab\", \"ab\"]]}}\n";

/* minimal with one substring replaced (which must occur). */
static char *variant(const char *from, const char *to)
{
    const char *at = strstr(minimal, from);
    if (!at)
        return NULL;
    size_t pre = (size_t)(at - minimal), n = strlen(minimal) - strlen(from) + strlen(to);
    char *s = malloc(n + 1);
    memcpy(s, minimal, pre);
    strcpy(s + pre, to);
    strcat(s, at + strlen(from));
    return s;
}

/* Writes the files into a new folder and loads it. Returns the load result
 * (the tokenizer, if any, in *out). */
static int load_files(const char *tokenizer_json, const char *config_name, const char *config,
                      alm_tokenizer **out, alm_error *err)
{
    char *dir = tok_tmpdir();
    *out = NULL;
    if (!dir)
        return -EIO;
    if (tokenizer_json)
        tok_write_file(dir, "tokenizer.json", tokenizer_json);
    if (config_name)
        tok_write_file(dir, config_name, config);
    int r = alm_tokenizer_load(dir, out, err);
    tok_rmtree(dir);
    return r;
}

/* Expects loading to fail with code and a message containing needle. */
static void expect_failure(const char *what, const char *json, int code, const char *needle)
{
    alm_error err = { 0 };
    alm_tokenizer *tok;
    int r = json ? load_files(json, NULL, NULL, &tok, &err) : -1;
    tap_ok(r == code && tok == NULL && strstr(err.message, needle) != NULL,
           "%s: refused (%d, \"%s\")", what, r, err.message);
    alm_tokenizer_free(tok);
}

static void expect_variant_failure(const char *what, const char *from, const char *to, int code,
                                   const char *needle)
{
    char *json = variant(from, to);
    if (!json) {
        tap_ok(false, "%s: test variant applies", what);
        return;
    }
    expect_failure(what, json, code, needle);
    free(json);
}

static void test_files(void)
{
    alm_error err = { 0 };
    alm_tokenizer *tok = NULL;
    int r = alm_tokenizer_load("/nonexistent/alm-model", &tok, &err);
    tap_ok(r == -ENOENT && !tok && strstr(err.message, "tokenizer.json"),
           "missing folder: -ENOENT naming tokenizer.json (\"%s\")", err.message);
    r = load_files(NULL, "config.json", "{}", &tok, &err);
    tap_ok(r == -ENOENT && !tok, "folder without tokenizer.json: -ENOENT");
    tap_ok(alm_tokenizer_load(NULL, &tok, &err) == -EINVAL, "NULL folder: -EINVAL");

    expect_failure("malformed JSON", "{\"model\": {\"vocab\": {\"a\": 1,}}", -EINVAL,
                   "malformed JSON");
    expect_failure("empty file", "", -EINVAL, "tokenizer.json");
    expect_failure("top level not an object", "[1, 2, 3]", -EINVAL, "must be an object");
    expect_variant_failure("no model", "\"model\": {", "\"modell\": {", -EINVAL,
                           "missing \"model\"");
}

static void test_unknown_types(void)
{
    expect_variant_failure("WordPiece model", "\"type\": \"BPE\"", "\"type\": \"WordPiece\"",
                           -ENOTSUP, "model type 'WordPiece' is not supported");
    expect_variant_failure("unknown normalizer", "\"normalizer\": null",
                           "\"normalizer\": {\"type\": \"BertNormalizer\"}", -ENOTSUP,
                           "normalizer type 'BertNormalizer' is not supported");
    expect_variant_failure("unknown normalizer inside a Sequence", "\"normalizer\": null",
                           "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": "
                           "[{\"type\": \"NFC\"}, {\"type\": \"Precompiled\"}]}",
                           -ENOTSUP, "normalizer type 'Precompiled'");
    expect_variant_failure("unknown pre-tokenizer", "\"pre_tokenizer\": {",
                           "\"pre_tokenizer\": {\"type\": \"Punctuation\"}, \"x\": {", -ENOTSUP,
                           "pre-tokenizer type 'Punctuation' is not supported");
    expect_variant_failure("unknown decoder", "{\"type\": \"Fuse\"}", "{\"type\": \"CTC\"}",
                           -ENOTSUP, "decoder type 'CTC' is not supported");
    expect_variant_failure("unknown post-processor", "\"post_processor\": null",
                           "\"post_processor\": {\"type\": \"Magic\"}", -ENOTSUP,
                           "post-processor type 'Magic' is not supported");
    expect_variant_failure("component without a type", "{\"type\": \"Fuse\"}", "{}", -EINVAL,
                           "missing \"type\"");
}

static void test_bad_members(void)
{
    expect_variant_failure("bad regex", "\\\\s+", "(unclosed", -EINVAL, "invalid regex");
    expect_variant_failure("unknown Split behavior", "\"Isolated\"", "\"Sideways\"", -EINVAL,
                           "unknown Split behavior 'Sideways'");
    expect_variant_failure("merge of an unknown token", "\"a b\"", "\"a z\"", -EINVAL,
                           "token \"z\" is not in the vocabulary");
    expect_variant_failure("merge without a space", "\"a b\"", "\"ab\"", -EINVAL, "merge 0");
    expect_variant_failure("merge result not in the vocabulary", "\"abab\": 7", "\"abba\": 7",
                           -EINVAL, "token \"abab\" is not in the vocabulary");
    expect_variant_failure("vocab id not an integer", "\"b\": 4", "\"b\": \"four\"", -EINVAL,
                           "id of \"b\" must be an integer");
    expect_variant_failure("negative vocab id", "\"b\": 4", "\"b\": -4", -EINVAL,
                           "out of range");
    expect_variant_failure("BPE dropout", "\"dropout\": null", "\"dropout\": 0.1", -ENOTSUP,
                           "dropout");
    expect_variant_failure("boolean of the wrong type", "\"fuse_unk\": true",
                           "\"fuse_unk\": \"yes\"", -EINVAL, "\"fuse_unk\" must be a boolean");
    expect_variant_failure("added token without content", "\"content\": \"</s>\",", "", -EINVAL,
                           "missing \"content\"");
    expect_variant_failure("template with an unknown token", "\"post_processor\": null",
                           "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": "
                           "[{\"SpecialToken\": {\"id\": \"<bos>\", \"type_id\": 0}}, "
                           "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], "
                           "\"special_tokens\": {}}",
                           -EINVAL, "'<bos>' is not in special_tokens");
    expect_variant_failure("Metaspace with a long replacement", "{\"type\": \"Fuse\"}",
                           "{\"type\": \"Metaspace\", \"replacement\": \"ab\"}", -EINVAL,
                           "one character");
}

static void test_configs(void)
{
    alm_error err = { 0 };
    alm_tokenizer *tok;
    int r = load_files(minimal, "tokenizer_config.json", "{\"eos_token\": ", &tok, &err);
    tap_ok(r == -EINVAL && strstr(err.message, "tokenizer_config.json"),
           "malformed tokenizer_config.json is named (\"%s\")", err.message);
    r = load_files(minimal, "generation_config.json", "{\"eos_token_id\": \"two\"}", &tok, &err);
    tap_ok(r == -EINVAL && strstr(err.message, "eos_token_id"),
           "eos_token_id of the wrong type is refused (\"%s\")", err.message);

    /* Without a post-processor nothing is added unless asked for. */
    r = load_files(minimal, "tokenizer_config.json", "{\"bos_token\": \"<s>\"}", &tok, &err);
    size_t n;
    int32_t *ids = tok ? tok_encode(tok, "ab", 2, true, &n) : NULL;
    tap_ok(r == 0 && ids && n == 1 && ids[0] == 5 && alm_tokenizer_bos_id(tok) == 0,
           "no post-processor: nothing added, BOS still known");
    free(ids);
    alm_tokenizer_free(tok);

    /* add_bos_token / add_eos_token build the template, as transformers does. */
    r = load_files(minimal, "tokenizer_config.json",
                   "{\"bos_token\": {\"content\": \"<s>\"}, \"eos_token\": \"</s>\","
                   " \"add_bos_token\": true, \"add_eos_token\": true}",
                   &tok, &err);
    ids = tok ? tok_encode(tok, "abab", 4, true, &n) : NULL;
    tap_ok(r == 0 && ids && n == 3 && ids[0] == 0 && ids[1] == 7 && ids[2] == 1,
           "add_bos_token and add_eos_token: <s> abab </s>");
    free(ids);
    ids = tok ? tok_encode(tok, "abab", 4, false, &n) : NULL;
    tap_ok(ids && n == 1 && ids[0] == 7, "add_special=false adds nothing");
    free(ids);
    alm_tokenizer_free(tok);

    /* They override a template in tokenizer.json too. */
    char *with_template = variant(
        "\"post_processor\": null",
        "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": "
        "[{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, "
        "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"special_tokens\": "
        "{\"<s>\": {\"id\": \"<s>\", \"ids\": [0], \"tokens\": [\"<s>\"]}}}");
    r = load_files(with_template, NULL, NULL, &tok, &err);
    ids = tok ? tok_encode(tok, "ab", 2, true, &n) : NULL;
    tap_ok(r == 0 && ids && n == 2 && ids[0] == 0 && alm_tokenizer_bos_id(tok) == 0,
           "TemplateProcessing adds <s>; BOS taken from it");
    free(ids);
    alm_tokenizer_free(tok);
    r = load_files(with_template, "tokenizer_config.json", "{\"add_bos_token\": false}", &tok,
                   &err);
    ids = tok ? tok_encode(tok, "ab", 2, true, &n) : NULL;
    tap_ok(r == 0 && ids && n == 1 && ids[0] == 5, "add_bos_token=false overrides the template");
    free(ids);
    alm_tokenizer_free(tok);
    free(with_template);

    /* EOS ids from all three files, in order, without duplicates. */
    char *dir = tok_tmpdir();
    tok_write_file(dir, "tokenizer.json", minimal);
    tok_write_file(dir, "generation_config.json", "{\"eos_token_id\": [1, 6]}");
    tok_write_file(dir, "tokenizer_config.json", "{\"eos_token\": \"</s>\"}");
    tok_write_file(dir, "config.json", "{\"eos_token_id\": 3, \"bos_token_id\": null}");
    r = alm_tokenizer_load(dir, &tok, &err);
    const int32_t *eos;
    size_t n_eos = tok ? alm_tokenizer_eos_ids(tok, &eos) : 0;
    tap_ok(r == 0 && n_eos == 3 && eos[0] == 1 && eos[1] == 6 && eos[2] == 3 &&
               alm_tokenizer_bos_id(tok) == -1,
           "EOS ids merged from generation_config, tokenizer_config and config");
    alm_tokenizer_free(tok);
    tok_rmtree(dir);
}

static void test_api_misuse(void)
{
    alm_error err = { 0 };
    alm_tokenizer *tok;
    if (load_files(minimal, NULL, NULL, &tok, &err) < 0) {
        tap_ok(false, "minimal tokenizer loads: %s", err.message);
        return;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    int r = alm_tokenizer_encode(tok, "a\xC3", 2, false, &ids, &n, &err);
    tap_ok(r == -EINVAL && !ids && strstr(err.message, "UTF-8"), "invalid UTF-8 is refused");
    r = alm_tokenizer_encode(tok, "a\xED\xA0\x80", 4, false, &ids, &n, &err);
    tap_ok(r == -EINVAL, "an encoded surrogate is refused");
    r = alm_tokenizer_encode(tok, "abab ab", 7, false, &ids, &n, &err);
    tap_ok(r == 0 && n == 3 && ids[0] == 7 && ids[1] == 6 && ids[2] == 5,
           "minimal: \"abab ab\" -> abab, ' ', ab (string and pair merges)");
    free(ids);
    ids = NULL;
    /* fuse_unk: a run of unknown characters is one <unk>. */
    r = alm_tokenizer_encode(tok, "xyzab", 5, false, &ids, &n, &err);
    tap_ok(r == 0 && n == 2 && ids[0] == 2 && ids[1] == 5, "fuse_unk: xyz -> one <unk>");
    free(ids);
    ids = NULL;
    r = alm_tokenizer_encode(tok, "", 0, true, &ids, &n, &err);
    tap_ok(r == 0 && n == 0 && ids, "empty text: no ids, still a buffer to free");
    free(ids);
    char *text = NULL;
    size_t len;
    int32_t bad[] = { 3, 99 };
    r = alm_tokenizer_decode(tok, bad, 2, false, &text, &len, &err);
    tap_ok(r == -EINVAL && !text && strstr(err.message, "invalid token id 99"),
           "decoding an unknown id fails (\"%s\")", err.message);
    int32_t neg[] = { -5 };
    r = alm_tokenizer_decode(tok, neg, 1, false, &text, &len, &err);
    tap_ok(r == -EINVAL, "decoding a negative id fails");
    int32_t good[] = { 0, 7, 1 };
    r = alm_tokenizer_decode(tok, good, 3, true, &text, &len, &err);
    tap_ok(r == 0 && text && strcmp(text, "abab") == 0, "skip_special drops <s> and </s>");
    free(text);
    tap_ok(alm_tokenizer_encode(NULL, "a", 1, false, &ids, &n, &err) == -EINVAL &&
               alm_tokenizer_decode(tok, NULL, 3, false, &text, &len, &err) == -EINVAL,
           "NULL arguments are refused");
    alm_tokenizer_free(tok);
    alm_tokenizer_free(NULL);
}

/* Truncated and bit-flipped tokenizer.json files: load must return
 * normally (success or a message), never crash or leak (ASan run). */
static void test_damaged_files(void)
{
    uint32_t seed = 12345;
    size_t len = strlen(minimal);
    char *buf = malloc(len + 1);
    int loaded = 0, refused = 0, silent = 0;
    for (int i = 0; i < 300; i++) {
        memcpy(buf, minimal, len + 1);
        seed = seed * 1103515245u + 12345u;
        if (i % 2 == 0) {
            buf[(seed >> 8) % len] = '\0'; /* truncate */
        } else {
            for (int k = 0; k < 3; k++) {
                seed = seed * 1103515245u + 12345u;
                buf[(seed >> 8) % len] = (char)(" {}[]\":,0a\\\xC3"[(seed >> 20) % 13]);
            }
        }
        alm_error err = { 0 };
        alm_tokenizer *tok;
        int r = load_files(buf, NULL, NULL, &tok, &err);
        if (r == 0) {
            loaded++;
            size_t n;
            int32_t *ids = tok_encode(tok, "abab ba", 7, true, &n);
            free(ids);
            alm_tokenizer_free(tok);
        } else {
            refused++;
            silent += err.message[0] == '\0';
        }
    }
    free(buf);
    tap_ok(loaded + refused == 300 && silent == 0,
           "300 damaged files: %d loaded, %d refused, all refusals explained", loaded, refused);
}

int main(void)
{
    test_files();
    test_unknown_types();
    test_bad_members();
    test_configs();
    test_api_misuse();
    test_damaged_files();
    return tap_done();
}
