/* Round trips and streaming: decode(encode(s)) gives s back for random
 * texts (byte-level tokenizers always; the sentencepiece-style one when s
 * holds no '▁' and no special-token text), and the detokenizer, fed ids
 * one at a time, emits exactly what decode gives for the whole list, never
 * half a UTF-8 character, and without waiting for flush when nothing is
 * pending. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "tok_fixtures.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint32_t rnd(uint32_t n)
{
    /* xorshift64*: deterministic, so failures reproduce. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32) % n;
}

static size_t put_utf8(char *o, uint32_t c)
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | (c >> 6));
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12));
        o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18));
    o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

static const char *const words[] = {
    "def ", "return", " self", "    ", "\n", "\t", "(", ")", ":", "==", "\"\"\"", "# note",
    "import os", "x1", "42", "3.14", " ", "  ", "\r\n", "naïve", "日本語", "😀", "'s", "İ",
};

/* A random valid UTF-8 text of up to max_chars pieces. */
static size_t random_text(char *out, size_t max_chars, bool allow_specials)
{
    size_t o = 0, n = 1 + rnd((uint32_t)max_chars);
    for (size_t i = 0; i < n; i++) {
        uint32_t kind = rnd(10);
        if (kind < 4) {
            const char *w = words[rnd(sizeof words / sizeof words[0])];
            memcpy(out + o, w, strlen(w));
            o += strlen(w);
        } else if (kind < 6) {
            o += put_utf8(out + o, 0x20 + rnd(0x5F)); /* printable ASCII */
        } else if (kind < 9) {
            uint32_t c = rnd(4) == 0 ? 0x10000 + rnd(0x10000) : 0x80 + rnd(0xFF00);
            if (c >= 0xD800 && c < 0xE000)
                c = 0xE9;
            o += put_utf8(out + o, c);
        } else if (allow_specials) {
            const char *s = rnd(2) ? "<|im_start|>" : "<|endoftext|>";
            memcpy(out + o, s, strlen(s));
            o += strlen(s);
        } else {
            o += put_utf8(out + o, rnd(0x20)); /* a control character */
        }
    }
    return o;
}

/* Valid UTF-8 throughout (embedded NULs allowed). */
static bool valid_utf8(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = p[i] < 0x80 ? 1 : p[i] < 0xE0 ? 2 : p[i] < 0xF0 ? 3 : 4;
        if (p[i] >= 0x80 && p[i] < 0xC2)
            return false;
        if (i + n > len)
            return false;
        for (size_t k = 1; k < n; k++)
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
        i += n;
    }
    return true;
}

static alm_tokenizer *load(const char *rel)
{
    char *dir = tok_data_path(rel);
    alm_tokenizer *tok = dir ? tok_load_checked(dir, rel) : NULL;
    free(dir);
    return tok;
}

static void test_round_trip(const alm_tokenizer *tok, const char *what, bool spm)
{
    char text[4096];
    int fails = 0;
    for (int i = 0; i < 300; i++) {
        size_t len = random_text(text, 60, !spm);
        text[len] = '\0';
        if (spm && (len == 0 || memmem(text, len, "\xE2\x96\x81", 3)))
            continue;
        size_t n, back_len;
        int32_t *ids = tok_encode(tok, text, len, false, &n);
        char *back = ids ? tok_decode(tok, ids, n, false, &back_len) : NULL;
        if (!back || back_len != len || memcmp(back, text, len) != 0) {
            if (fails++ < 3) {
                char shown[128];
                tap_diag("%s: round trip of \"%s\" differs", what,
                         tok_preview(text, len, shown, sizeof shown));
            }
        }
        free(back);
        free(ids);
    }
    tap_ok(fails == 0, "%s: decode(encode(s)) == s for 300 random texts", what);
}

/* Pushes ids one by one; checks each piece is whole UTF-8 and that the
 * concatenation is the full decode. */
static bool stream_matches(const alm_tokenizer *tok, const int32_t *ids, size_t n, bool skip,
                           bool *pieces_valid)
{
    size_t want_len;
    char *want = tok_decode(tok, ids, n, skip, &want_len);
    alm_detokenizer *d;
    if (!want || alm_detokenizer_new(tok, skip, &d) < 0) {
        free(want);
        return false;
    }
    char *got = malloc(want_len * 2 + 64);
    size_t got_len = 0;
    bool ok = true;
    for (size_t i = 0; i <= n && ok; i++) {
        char *piece = NULL;
        int r = i < n ? alm_detokenizer_push(d, ids[i], &piece) : alm_detokenizer_flush(d, &piece);
        ok = r >= 0 && piece && got_len + (size_t)r <= want_len * 2 + 64;
        if (ok) {
            if (!valid_utf8(piece, (size_t)r))
                *pieces_valid = false;
            memcpy(got + got_len, piece, (size_t)r);
            got_len += (size_t)r;
        }
        free(piece);
    }
    ok = ok && got_len == want_len && memcmp(got, want, want_len) == 0;
    alm_detokenizer_free(d);
    free(got);
    free(want);
    return ok;
}

static void test_stream_random_ids(const alm_tokenizer *tok, const char *what)
{
    int32_t vocab = alm_tokenizer_vocab_size(tok);
    int32_t ids[64];
    int fails = 0;
    bool pieces_valid = true;
    for (int i = 0; i < 300; i++) {
        size_t n = rnd(64);
        for (size_t k = 0; k < n; k++) {
            /* Low ids hold the specials and (spm) the <0xNN> byte tokens. */
            ids[k] = rnd(3) == 0 ? (int32_t)rnd(300) : (int32_t)rnd((uint32_t)vocab);
        }
        for (int skip = 0; skip < 2; skip++)
            if (!stream_matches(tok, ids, n, skip, &pieces_valid) && fails++ < 3)
                tok_diag_ids("stream differs for", ids, n);
    }
    tap_ok(fails == 0, "%s: streaming 300 random id lists equals decode", what);
    tap_ok(pieces_valid, "%s: every streamed piece is whole UTF-8", what);
}

/* Text that encodes to many partial-character tokens. */
static void test_stream_partial_chars(const alm_tokenizer *tok, const char *what)
{
    const char *text = "日本語のテキスト 😀🎉 naïve ① Cửa Việt";
    size_t n;
    int32_t *ids = tok_encode(tok, text, strlen(text), true, &n);
    bool valid = true;
    tap_ok(ids && stream_matches(tok, ids, n, false, &valid) && valid,
           "%s: streams multi-byte characters split over tokens", what);
    free(ids);
}

/* Text is emitted as soon as it is final, not at flush. */
static void test_stream_prompt(const alm_tokenizer *tok, const char *what, const char *text,
                               const char *before_flush)
{
    size_t n;
    int32_t *ids = tok_encode(tok, text, strlen(text), false, &n);
    alm_detokenizer *d;
    char *out = NULL;
    int r = ids && alm_detokenizer_new(tok, true, &d) == 0 ? 0 : -1;
    for (size_t i = 0; i < n && r >= 0; i++)
        r = alm_detokenizer_push(d, ids[i], &out); /* appends */
    char shown[96];
    tok_preview(before_flush, strlen(before_flush), shown, sizeof shown);
    tap_ok(r >= 0 && out && strcmp(out, before_flush) == 0, "%s: \"%s\" is out before flush",
           what, shown);
    free(out);
    out = NULL;
    if (r >= 0) {
        r = alm_detokenizer_flush(d, &out);
        tap_ok(r >= 0 && out && strcmp(out, text + strlen(before_flush)) == 0,
               "%s: flush gives the rest", what);
        free(out);
        out = NULL;
        /* After flush the detokenizer starts a new text. */
        for (size_t i = 0; i < n && r >= 0; i++)
            r = alm_detokenizer_push(d, ids[i], &out);
        char *rest = NULL;
        if (r >= 0)
            r = alm_detokenizer_flush(d, &rest);
        size_t total = (out ? strlen(out) : 0) + (rest ? strlen(rest) : 0);
        tap_ok(r >= 0 && total == strlen(text) && strncmp(out, text, strlen(out)) == 0,
               "%s: a flushed detokenizer starts over", what);
        free(rest);
        int32_t bad = alm_tokenizer_vocab_size(tok);
        char *none = NULL;
        tap_ok(alm_detokenizer_push(d, bad, &none) == -EINVAL &&
                   alm_detokenizer_push(d, -1, &none) == -EINVAL,
               "%s: invalid ids are refused", what);
        free(none);
        alm_detokenizer_free(d);
    }
    free(out);
    free(ids);
}

int main(void)
{
    if (!getenv("ALM_TEST_DATA"))
        return tap_skip_all("ALM_TEST_DATA is not set");
    alm_tokenizer *coder = load("models/tiny/qwen2-bias");
    alm_tokenizer *llama3 = load("models/tokenizers/llama3-bpe");
    alm_tokenizer *spm = load("models/tokenizers/spm-bpe");
    if (!coder || !llama3 || !spm)
        return tap_done();

    test_round_trip(coder, "coder", false);
    test_round_trip(llama3, "llama3-bpe", false);
    test_round_trip(spm, "spm-bpe", true);

    test_stream_random_ids(coder, "coder");
    test_stream_random_ids(llama3, "llama3-bpe");
    test_stream_random_ids(spm, "spm-bpe");

    test_stream_partial_chars(coder, "coder");
    test_stream_partial_chars(llama3, "llama3-bpe");
    test_stream_partial_chars(spm, "spm-bpe");

    test_stream_prompt(coder, "coder", "def main():\n    return 1\n", "def main():\n    return 1\n");
    /* A spm text ending in a byte-fallback character: the last <0xNN> run
     * may still grow, so it waits for flush; everything before is out. */
    test_stream_prompt(spm, "spm-bpe", "Hello world, naïve ①", "Hello world, naïve ");
    test_stream_prompt(llama3, "llama3-bpe", "x = 1 # 😀", "x = 1 # 😀");

    alm_tokenizer_free(coder);
    alm_tokenizer_free(llama3);
    alm_tokenizer_free(spm);
    return tap_done();
}
