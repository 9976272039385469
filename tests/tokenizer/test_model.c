/* BPE model options on a hand-made vocabulary where their effect is
 * visible: ignore_merges (a word that is a token is taken whole even when
 * no merge makes it), unknown characters with and without fuse_unk,
 * byte_fallback, merge ranks, and added tokens whose ids HF assigns. */
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "tok_fixtures.h"

/* "abc" is a token, but the merges only ever make "ab" + "c" from it. */
static const char base_json[] =
    "{\"added_tokens\": [%s],\n"
    " \"normalizer\": null,\n"
    " \"pre_tokenizer\": {\"type\": \"WhitespaceSplit\"},\n"
    " \"post_processor\": null, \"decoder\": {\"type\": \"Fuse\"},\n"
    " \"model\": {\"type\": \"BPE\", \"unk_token\": %s, \"fuse_unk\": %s,"
    " \"byte_fallback\": %s, \"ignore_merges\": %s,\n"
    "  \"vocab\": {\"<unk>\": 0, \"a\": 1, \"b\": 2, \"c\": 3, \"ab\": 4, \"bc\": 5, \"abc\": 6,"
    " \"<0xC3>\": 7, \"<0xA9>\": 8, \"ca\": 9},\n"
    "  \"merges\": [\"a b\", \"b c\", \"c a\"]}}";

static alm_tokenizer *make(const char *added, const char *unk, bool fuse, bool bytes,
                           bool ignore)
{
    char json[2048];
    snprintf(json, sizeof json, base_json, added, unk, fuse ? "true" : "false",
             bytes ? "true" : "false", ignore ? "true" : "false");
    char *dir = tok_tmpdir();
    alm_tokenizer *tok = NULL;
    alm_error err = { 0 };
    if (dir && tok_write_file(dir, "tokenizer.json", json) &&
        alm_tokenizer_load(dir, &tok, &err) < 0)
        tap_diag("load failed: %s", err.message);
    tok_rmtree(dir);
    return tok;
}

static bool encodes_to(const alm_tokenizer *tok, const char *text, const int32_t *want,
                       size_t n_want)
{
    size_t n;
    int32_t *ids = tok ? tok_encode(tok, text, strlen(text), false, &n) : NULL;
    bool ok = ids && tok_ids_equal(ids, n, want, n_want);
    if (!ok)
        tok_diag_ids(text, ids, ids ? n : 0);
    free(ids);
    return ok;
}

/* continuing_subword_prefix and end_of_word_suffix (WordPiece-style BPE);
 * expected ids from HF tokenizers 0.23. */
static void test_affixes(void)
{
    static const char json[] =
        "{\"added_tokens\": [], \"normalizer\": null,"
        " \"pre_tokenizer\": {\"type\": \"WhitespaceSplit\"}, \"post_processor\": null,"
        " \"decoder\": {\"type\": \"Fuse\"},"
        " \"model\": {\"type\": \"BPE\", \"continuing_subword_prefix\": \"##\","
        " \"end_of_word_suffix\": \"</w>\", \"unk_token\": \"[UNK]\", \"fuse_unk\": false,"
        " \"vocab\": {\"[UNK]\": 0, \"a\": 1, \"##b\": 2, \"##c\": 3, \"##b</w>\": 4,"
        " \"##c</w>\": 5, \"ab\": 6, \"ab</w>\": 7, \"abc</w>\": 8, \"a</w>\": 9, \"##a\": 10,"
        " \"##a</w>\": 11, \"b\": 12, \"b</w>\": 13},"
        " \"merges\": [[\"a\", \"##b\"], [\"a\", \"##b</w>\"], [\"ab\", \"##c</w>\"]]}}";
    char *dir = tok_tmpdir();
    alm_tokenizer *tok = NULL;
    alm_error err = { 0 };
    if (dir && tok_write_file(dir, "tokenizer.json", json) &&
        alm_tokenizer_load(dir, &tok, &err) < 0)
        tap_diag("load failed: %s", err.message);
    tok_rmtree(dir);
    tap_ok(encodes_to(tok, "abc", (const int32_t[]){ 8 }, 1), "affixes: abc -> abc</w>");
    tap_ok(encodes_to(tok, "abab", (const int32_t[]){ 6, 10, 4 }, 3),
           "affixes: abab -> ab ##a ##b</w>");
    tap_ok(encodes_to(tok, "abcab ab a", (const int32_t[]){ 6, 3, 10, 4, 7, 9 }, 6),
           "affixes: abcab ab a -> ab ##c ##a ##b</w> ab</w> a</w>");
    tap_ok(encodes_to(tok, "xab", (const int32_t[]){ 0, 10, 4 }, 3),
           "affixes: an unknown first character");
    alm_tokenizer_free(tok);
}

int main(void)
{
    test_affixes();
    alm_tokenizer *plain = make("", "\"<unk>\"", true, false, false);
    alm_tokenizer *ignore = make("", "\"<unk>\"", true, false, true);
    tap_ok(encodes_to(plain, "abc", (const int32_t[]){ 4, 3 }, 2),
           "merges: abc -> ab c (a b ranks first, nothing makes abc)");
    tap_ok(encodes_to(ignore, "abc", (const int32_t[]){ 6 }, 1),
           "ignore_merges: abc is a token, taken whole");
    tap_ok(encodes_to(ignore, "abca", (const int32_t[]){ 4, 9 }, 2),
           "ignore_merges: abca is no token, so it is merged: ab ca");
    tap_ok(encodes_to(plain, "bca", (const int32_t[]){ 5, 1 }, 2),
           "ranks: b c (rank 1) before c a (rank 2)");
    tap_ok(encodes_to(plain, "axyzb é", (const int32_t[]){ 1, 0, 2, 0 }, 4),
           "fuse_unk: x y z become one <unk>");
    alm_tokenizer_free(plain);
    alm_tokenizer_free(ignore);

    alm_tokenizer *unfused = make("", "\"<unk>\"", false, false, false);
    tap_ok(encodes_to(unfused, "axyb", (const int32_t[]){ 1, 0, 0, 2 }, 4),
           "without fuse_unk: one <unk> per character");
    alm_tokenizer_free(unfused);

    alm_tokenizer *none = make("", "null", false, false, false);
    tap_ok(encodes_to(none, "axyb", (const int32_t[]){ 4 }, 1),
           "without an unk token, unknown characters are dropped and a, b merge (as HF)");
    alm_tokenizer_free(none);

    /* é is C3 A9: both bytes have tokens; x has none and falls to <unk>. */
    alm_tokenizer *bytes = make("", "\"<unk>\"", true, true, false);
    tap_ok(encodes_to(bytes, "aéb", (const int32_t[]){ 1, 7, 8, 2 }, 4),
           "byte_fallback: é -> <0xC3> <0xA9>");
    tap_ok(encodes_to(bytes, "axb", (const int32_t[]){ 1, 0, 2 }, 3),
           "byte_fallback: a character without byte tokens -> <unk>");
    tap_ok(encodes_to(bytes, "xéb", (const int32_t[]){ 7, 8, 0, 2 }, 4),
           "byte_fallback after an open <unk> run: bytes first, as HF orders them");
    size_t len;
    char *text = bytes ? tok_decode(bytes, (const int32_t[]){ 1, 7, 8, 2 }, 4, false, &len) : NULL;
    tap_ok(text && strcmp(text, "a<0xC3><0xA9>b") == 0,
           "without a ByteFallback decoder byte tokens stay as written");
    free(text);
    alm_tokenizer_free(bytes);

    /* Added tokens: a content the model knows keeps the model's id, the
     * others get the next free ids, whatever "id" the file says. */
    alm_tokenizer *added = make(
        "{\"id\": 50, \"content\": \"bc\", \"special\": false, \"normalized\": false},"
        " {\"id\": 51, \"content\": \"[X]\", \"special\": true, \"normalized\": false},"
        " {\"id\": 77, \"content\": \"[Y]\", \"special\": true, \"normalized\": false}",
        "\"<unk>\"", true, false, false);
    tap_ok(encodes_to(added, "a[X]bc[Y]", (const int32_t[]){ 1, 10, 5, 11 }, 4),
           "added tokens: bc keeps id 5, [X] and [Y] get 10 and 11");
    tap_ok(added && alm_tokenizer_vocab_size(added) == 12 && alm_tokenizer_is_special(added, 11) &&
               !alm_tokenizer_is_special(added, 5),
           "added tokens: vocabulary of 12, [Y] special, bc not");
    text = added ? tok_decode(added, (const int32_t[]){ 1, 10, 5, 11 }, 4, true, &len) : NULL;
    tap_ok(text && strcmp(text, "abc") == 0, "skip_special drops [X] and [Y]");
    free(text);
    alm_tokenizer_free(added);
    return tap_done();
}
