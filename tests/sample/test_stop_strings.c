/* Stop strings over streamed pieces: matches across piece boundaries,
 * overlapping prefixes, several strings (earliest wins), held-back text
 * released when it turns out not to be a stop, UTF-8, and a randomized
 * comparison with a brute-force search. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "sample/rng.h"
#include "sample/stop_strings.h"
#include "tap.h"

#define N_ELEMS(a) ((int)(sizeof(a) / sizeof((a)[0])))

typedef struct stream_result {
    char out[512];
    size_t out_len;
    bool matched;
    int index;
    bool chunks_valid_utf8;  /* every emitted chunk on its own */
} stream_result;

static void append(stream_result *r, const char *text, size_t len)
{
    if (len > 0 && !g_utf8_validate(text, (gssize)len, NULL))
        r->chunks_valid_utf8 = false;
    if (r->out_len + len < sizeof r->out) {
        memcpy(r->out + r->out_len, text, len);
        r->out_len += len;
    }
    r->out[r->out_len] = '\0';
}

/* Pushes the pieces (NULL-terminated list), stopping at a match, then
 * flushes. */
static stream_result run(const char *const *stops, size_t n_stops, const char *const *pieces)
{
    stream_result r = { .index = -1, .chunks_valid_utf8 = true };
    stop_matcher *m = NULL;
    if (stop_matcher_new(stops, n_stops, &m, NULL) < 0) {
        tap_diag("stop_matcher_new failed");
        return r;
    }
    for (int i = 0; pieces[i] && !r.matched; i++) {
        const char *emit;
        size_t emit_len;
        if (stop_matcher_push(m, pieces[i], strlen(pieces[i]), &emit, &emit_len, &r.matched) < 0)
            tap_diag("push failed");
        append(&r, emit, emit_len);
    }
    const char *emit;
    size_t emit_len;
    stop_matcher_flush(m, &emit, &emit_len);
    append(&r, emit, emit_len);
    r.index = stop_matcher_matched_index(m);
    stop_matcher_free(m);
    return r;
}

static bool is(stream_result r, const char *out, int index)
{
    bool ok = strcmp(r.out, out) == 0 && r.index == index && r.matched == (index >= 0);
    if (!ok)
        tap_diag("got \"%s\" (stop %d), expected \"%s\" (stop %d)", r.out, r.index, out, index);
    return ok;
}

static void test_basics(void)
{
    tap_ok(is(run(NULL, 0, (const char *[]){ "hello", " world", NULL }), "hello world", -1),
           "no stop strings: everything passes");

    const char *eos[] = { "</s>" };
    tap_ok(is(run(eos, 1, (const char *[]){ "abc<", "/", "s>def", NULL }), "abc", 0),
           "stop string across three pieces; text after it is dropped");
    tap_ok(is(run(eos, 1, (const char *[]){ "abc</s>def", NULL }), "abc", 0),
           "stop string inside one piece");
    tap_ok(is(run(eos, 1, (const char *[]){ "</s>", NULL }), "", 0),
           "stop string at the very start: nothing emitted");
    tap_ok(is(run(eos, 1, (const char *[]){ "a<", "/", "x", NULL }), "a</x", -1),
           "held-back text released when it turns out not to be a stop");
    tap_ok(is(run(eos, 1, (const char *[]){ "a<", "/s", NULL }), "a</s", -1),
           "held-back prefix emitted at flush");

    /* Step by step: what is emitted and held after each push. */
    stop_matcher *m = NULL;
    stop_matcher_new(eos, 1, &m, NULL);
    const char *emit;
    size_t len;
    bool matched;
    stop_matcher_push(m, "abc<", 4, &emit, &len, &matched);
    tap_ok(len == 3 && memcmp(emit, "abc", 3) == 0 && !matched && stop_matcher_held(m) == 1,
           "\"abc<\": emits \"abc\", holds \"<\"");
    stop_matcher_push(m, "/s", 2, &emit, &len, &matched);
    tap_ok(len == 0 && !matched && stop_matcher_held(m) == 3, "\"/s\": emits nothing, holds 3");
    stop_matcher_push(m, "x", 1, &emit, &len, &matched);
    tap_ok(len == 4 && memcmp(emit, "</sx", 4) == 0 && !matched && stop_matcher_held(m) == 0,
           "\"x\": releases \"</sx\"");
    stop_matcher_push(m, "</s>tail", 8, &emit, &len, &matched);
    tap_ok(len == 0 && matched && stop_matcher_matched_index(m) == 0, "then the match");
    stop_matcher_push(m, "more", 4, &emit, &len, &matched);
    tap_ok(len == 0 && matched, "after a match: nothing more is emitted");
    stop_matcher_flush(m, &emit, &len);
    tap_ok(len == 0, "flush after a match emits nothing");
    stop_matcher_reset(m);
    stop_matcher_push(m, "ok</", 4, &emit, &len, &matched);
    tap_ok(len == 2 && memcmp(emit, "ok", 2) == 0 && !matched &&
               stop_matcher_matched_index(m) == -1,
           "reset starts a new stream");
    stop_matcher_push(m, "", 0, &emit, &len, &matched);
    tap_ok(len == 0 && !matched && stop_matcher_held(m) == 2, "an empty piece changes nothing");
    stop_matcher_free(m);
}

static void test_overlaps(void)
{
    const char *aab[] = { "aab" };
    tap_ok(is(run(aab, 1, (const char *[]){ "a", "a", "a", "b", NULL }), "a", 0),
           "\"aab\" in \"aaab\", one byte at a time");
    tap_ok(is(run(aab, 1, (const char *[]){ "aaab", NULL }), "a", 0), "\"aab\" in \"aaab\", at once");
    tap_ok(is(run(aab, 1, (const char *[]){ "aa", "aa", "c", NULL }), "aaaac", -1),
           "\"aaaa\" then \"c\": all released");
    const char *abab[] = { "abac" };
    tap_ok(is(run(abab, 1, (const char *[]){ "ab", "ab", "ac", NULL }), "ab", 0),
           "\"abac\" in \"ababac\" (restart inside a partial match)");
}

static void test_several(void)
{
    const char *two[] = { "world", "lo w" };
    tap_ok(is(run(two, 2, (const char *[]){ "hello world", NULL }), "hel", 1),
           "two stop strings: the earliest occurrence wins");
    tap_ok(is(run(two, 2, (const char *[]){ "h", "e", "l", "l", "o", " ", "w", "o", NULL }),
              "hel", 1),
           "the same, byte by byte");

    /* In one piece, a longer string that starts earlier wins even though a
     * shorter one completes first inside it. */
    const char *nested[] = { "bc", "abcd" };
    tap_ok(is(run(nested, 2, (const char *[]){ "xabcd", NULL }), "x", 1),
           "earliest start within one piece");
    /* Streamed, generation stops as soon as "bc" is complete. */
    tap_ok(is(run(nested, 2, (const char *[]){ "xa", "bc", "d", NULL }), "xa", 0),
           "streamed: the first string to complete stops the stream");
    const char *same_start[] = { "ab", "abc" };
    tap_ok(is(run(same_start, 2, (const char *[]){ "zabc", NULL }), "z", 0),
           "equal starts: the first in the list is reported");
    /* One stop string's prefix is held while another completes. */
    const char *hold[] = { "xyz", "b" };
    tap_ok(is(run(hold, 2, (const char *[]){ "axy", "b", NULL }), "axy", 1),
           "a held prefix of one string is emitted before another's match");
}

static void test_utf8(void)
{
    const char *accent[] = { "é!" };
    stream_result r = run(accent, 1, (const char *[]){ "caf", "é", "!", " ok", NULL });
    tap_ok(is(r, "caf", 0), "multi-byte stop string across pieces");
    const char *japanese[] = { "日本" };
    r = run(japanese, 1, (const char *[]){ "今日", "は", NULL });
    tap_ok(is(r, "今日は", -1) && r.chunks_valid_utf8,
           "held multi-byte prefix (日) released whole");
    r = run(japanese, 1, (const char *[]){ "今日", "本語", NULL });
    tap_ok(is(r, "今", 0), "multi-byte match: cut before 日本");
    /* Pieces that split a character (a caller feeding raw bytes). */
    r = run(NULL, 0, (const char *[]){ "a\xc3", "\xa9", "b\xe6\x97", "\xa5", NULL });
    tap_ok(is(r, "a\xc3\xa9" "b\xe6\x97\xa5", -1) && r.chunks_valid_utf8,
           "a character split over pieces is never emitted in halves");
    const char *e[] = { "é" };
    r = run(e, 1, (const char *[]){ "x\xc3", "\xa9y", NULL });
    tap_ok(is(r, "x", 0), "stop string whose bytes arrive in two pieces");
    r = run(NULL, 0, (const char *[]){ "end\xe6\x97", NULL });
    tap_ok(is(r, "end\xe6\x97", -1), "an incomplete sequence at the end comes out at flush");
}

static void test_invalid(void)
{
    stop_matcher *m = NULL;
    alm_error err = { 0 };
    const char *empty[] = { "ok", "" };
    tap_ok(stop_matcher_new(empty, 2, &m, &err) == -EINVAL && !m,
           "empty stop string rejected: %s", err.message);
    const char *bad[] = { "\xff\xfe" };
    tap_ok(stop_matcher_new(bad, 1, &m, &err) == -EINVAL && !m,
           "invalid UTF-8 rejected: %s", err.message);
    tap_ok(stop_matcher_new(NULL, 1, &m, &err) == -EINVAL, "missing list rejected");
}

/* Brute force: the stream stops at the end of the first piece after which
 * some stop string occurs in the text; the cut is the earliest start of an
 * occurrence in the text so far (first in the list on equal starts). */
static void reference(const char *text, const size_t *piece_ends, int n_pieces,
                      char stops[][8], int n_stops, size_t *cut, int *index)
{
    for (int p = 0; p < n_pieces; p++) {
        size_t end = piece_ends[p];
        size_t best = (size_t)-1;
        int best_index = -1;
        for (int s = 0; s < n_stops; s++) {
            size_t len = strlen(stops[s]);
            for (size_t start = 0; start + len <= end; start++) {
                if (memcmp(text + start, stops[s], len) == 0) {
                    if (start < best) {
                        best = start;
                        best_index = s;
                    }
                    break;
                }
            }
        }
        if (best_index >= 0) {
            *cut = best;
            *index = best_index;
            return;
        }
    }
    *cut = piece_ends[n_pieces - 1];
    *index = -1;
}

/* The longest suffix of text[0..len) that is a proper prefix of a stop. */
static size_t longest_partial(const char *text, size_t len, char stops[][8], int n_stops)
{
    size_t best = 0;
    for (int s = 0; s < n_stops; s++) {
        size_t slen = strlen(stops[s]);
        for (size_t k = slen - 1; k > best; k--)
            if (k <= len && memcmp(text + len - k, stops[s], k) == 0) {
                best = k;
                break;
            }
    }
    return best;
}

static void test_random(void)
{
    enum { CASES = 3000 };
    rng r;
    rng_seed(&r, 99);
    int wrong_output = 0, wrong_hold = 0;
    for (int c = 0; c < CASES; c++) {
        char stops[3][8];
        int n_stops = 1 + (int)(rng_next(&r) % 3);
        const char *list[3];
        for (int s = 0; s < n_stops; s++) {
            int len = 1 + (int)(rng_next(&r) % 4);
            for (int i = 0; i < len; i++)
                stops[s][i] = (char)('a' + rng_next(&r) % 3);
            stops[s][len] = '\0';
            list[s] = stops[s];
        }
        char text[41];
        int text_len = 1 + (int)(rng_next(&r) % 40);
        for (int i = 0; i < text_len; i++)
            text[i] = (char)('a' + rng_next(&r) % 3);
        text[text_len] = '\0';
        size_t ends[40];
        int n_pieces = 0;
        for (size_t at = 0; at < (size_t)text_len;) {
            size_t piece = 1 + rng_next(&r) % 5;
            at = at + piece > (size_t)text_len ? (size_t)text_len : at + piece;
            ends[n_pieces++] = at;
        }
        size_t cut;
        int index;
        reference(text, ends, n_pieces, stops, n_stops, &cut, &index);

        stop_matcher *m = NULL;
        stop_matcher_new(list, (size_t)n_stops, &m, NULL);
        char out[64];
        size_t out_len = 0, start = 0;
        bool matched = false;
        for (int p = 0; p < n_pieces && !matched; p++) {
            const char *emit;
            size_t len;
            stop_matcher_push(m, text + start, ends[p] - start, &emit, &len, &matched);
            memcpy(out + out_len, emit, len);
            out_len += len;
            start = ends[p];
            /* Without a match, exactly the partial prefix is held back. */
            if (!matched &&
                (out_len + stop_matcher_held(m) != ends[p] ||
                 stop_matcher_held(m) != longest_partial(text, ends[p], stops, n_stops)))
                wrong_hold++;
        }
        const char *emit;
        size_t len;
        stop_matcher_flush(m, &emit, &len);
        memcpy(out + out_len, emit, len);
        out_len += len;
        if (out_len != cut || memcmp(out, text, cut) != 0 ||
            stop_matcher_matched_index(m) != index) {
            if (wrong_output++ < 3)
                tap_diag("text \"%s\" stops %d (\"%s\"...): got %zu bytes, stop %d; expected %zu, "
                         "stop %d", text, n_stops, stops[0], out_len,
                         stop_matcher_matched_index(m), cut, index);
        }
        stop_matcher_free(m);
    }
    tap_ok(wrong_output == 0, "%d random streams match a brute-force search (%d differ)", CASES,
           wrong_output);
    tap_ok(wrong_hold == 0, "held-back text is exactly the longest partial match (%d off)",
           wrong_hold);
}

int main(void)
{
    test_basics();
    test_overlaps();
    test_several();
    test_utf8();
    test_invalid();
    test_random();
    return tap_done();
}
