/* Stop strings: one Knuth-Morris-Pratt automaton per stop string, fed every
 * byte once. Its state is the length of the longest prefix of the stop
 * string that ends the text so far, which answers both questions at once:
 * a state equal to the string's length is a match, and the largest state
 * over all strings is how much of the tail must be held back. Each push
 * costs O(piece length * number of stop strings), whatever the strings. */
#include "sample/stop_strings.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "core/error.h"

typedef struct stop_string {
    char *text;
    size_t len;
    /* failure[i]: length of the longest proper prefix of text[0..i] that is
     * also its suffix (where to resume after a mismatch). */
    size_t *failure;
    size_t state;
} stop_string;

struct stop_matcher {
    stop_string *stops;
    size_t n_stops;
    /* Text pushed but not yet emitted, preceded by handed_out bytes that the
     * previous call returned (kept until the next call so that the pointer
     * it gave out stays valid). */
    char *buf;
    size_t len, cap;
    size_t handed_out;
    int matched;    /* index of the stop string found, or -1 */
    bool finished;  /* after a match or a flush */
};

static void compute_failure(const char *t, size_t len, size_t *failure)
{
    size_t k = 0;
    failure[0] = 0;
    for (size_t i = 1; i < len; i++) {
        while (k > 0 && t[i] != t[k])
            k = failure[k - 1];
        if (t[i] == t[k])
            k++;
        failure[i] = k;
    }
}

/* Advances the automaton by one byte; state < len on entry. */
static inline size_t kmp_step(const stop_string *s, size_t state, char c)
{
    while (state > 0 && s->text[state] != c)
        state = s->failure[state - 1];
    if (s->text[state] == c)
        state++;
    return state;
}

void stop_matcher_free(stop_matcher *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_stops; i++) {
        free(m->stops[i].text);
        free(m->stops[i].failure);
    }
    free(m->stops);
    free(m->buf);
    free(m);
}

int stop_matcher_new(const char *const *strings, size_t n, stop_matcher **out,
                     alm_error *err)
{
    if (!out || (n > 0 && !strings))
        return alm_error_set(err, -EINVAL, "stop strings: missing argument");
    *out = NULL;
    if (n > INT32_MAX)
        return alm_error_set(err, -EINVAL, "stop strings: %zu is too many", n);
    for (size_t i = 0; i < n; i++) {
        if (!strings[i] || strings[i][0] == '\0')
            return alm_error_set(err, -EINVAL, "stop strings: string %zu is empty", i);
        if (!g_utf8_validate(strings[i], -1, NULL))
            return alm_error_set(err, -EINVAL,
                                 "stop strings: string %zu is not valid UTF-8", i);
    }
    stop_matcher *m = calloc(1, sizeof *m);
    if (!m)
        return alm_error_set(err, -ENOMEM, "stop strings: out of memory");
    m->matched = -1;
    if (n > 0) {
        m->stops = calloc(n, sizeof *m->stops);
        if (!m->stops) {
            free(m);
            return alm_error_set(err, -ENOMEM, "stop strings: out of memory");
        }
    }
    for (size_t i = 0; i < n; i++) {
        stop_string *s = &m->stops[i];
        s->len = strlen(strings[i]);
        s->text = strdup(strings[i]);
        s->failure = malloc(s->len * sizeof *s->failure);
        m->n_stops = i + 1;  /* so that free releases what exists so far */
        if (!s->text || !s->failure) {
            stop_matcher_free(m);
            return alm_error_set(err, -ENOMEM, "stop strings: out of memory");
        }
        compute_failure(s->text, s->len, s->failure);
    }
    *out = m;
    return 0;
}

void stop_matcher_reset(stop_matcher *m)
{
    m->len = 0;
    m->handed_out = 0;
    m->matched = -1;
    m->finished = false;
    for (size_t i = 0; i < m->n_stops; i++)
        m->stops[i].state = 0;
}

int stop_matcher_matched_index(const stop_matcher *m)
{
    return m->matched;
}

size_t stop_matcher_held(const stop_matcher *m)
{
    return m->finished ? 0 : m->len - m->handed_out;
}

/* Forgets the bytes handed out by the previous call. */
static void drop_handed_out(stop_matcher *m)
{
    if (m->handed_out == 0)
        return;
    memmove(m->buf, m->buf + m->handed_out, m->len - m->handed_out);
    m->len -= m->handed_out;
    m->handed_out = 0;
}

static int reserve(stop_matcher *m, size_t extra)
{
    if (extra > SIZE_MAX / 2 - m->len)
        return -ENOMEM;
    size_t need = m->len + extra;
    if (need <= m->cap)
        return 0;
    size_t cap = m->cap ? m->cap : 64;
    while (cap < need)
        cap *= 2;
    char *buf = realloc(m->buf, cap);
    if (!buf)
        return -ENOMEM;
    m->buf = buf;
    m->cap = cap;
    return 0;
}

/* Where an incomplete UTF-8 sequence at the end of text[0..len) starts, or
 * len when the text ends on a character boundary (invalid bytes count as
 * complete: holding them would not make them valid). */
static size_t incomplete_utf8_tail(const char *text, size_t len)
{
    for (size_t back = 1; back <= 4 && back <= len; back++) {
        unsigned char c = (unsigned char)text[len - back];
        if ((c & 0xc0) == 0x80)
            continue;  /* continuation byte: the lead is further back */
        size_t need = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                    : (c & 0xf8) == 0xf0 ? 4 : 1;
        return back < need ? len - back : len;
    }
    return len;
}

int stop_matcher_push(stop_matcher *m, const char *piece, size_t len,
                      const char **emit, size_t *emit_len, bool *matched)
{
    if (!m || (!piece && len > 0) || !emit || !emit_len || !matched)
        return -EINVAL;
    drop_handed_out(m);
    *emit = m->buf;
    *emit_len = 0;
    *matched = m->matched >= 0;
    if (m->finished)
        return 0;
    if (reserve(m, len) < 0)
        return -ENOMEM;
    if (len > 0)
        memcpy(m->buf + m->len, piece, len);
    size_t old_len = m->len;
    m->len += len;
    *emit = m->buf;

    /* Run every automaton over the new bytes. A string's first completion
     * is its earliest occurrence; across strings, the earliest start wins. */
    size_t best_start = SIZE_MAX, hold = 0;
    int best = -1;
    for (size_t i = 0; i < m->n_stops; i++) {
        stop_string *s = &m->stops[i];
        size_t state = s->state;
        for (size_t pos = old_len; pos < m->len; pos++) {
            state = kmp_step(s, state, m->buf[pos]);
            if (state == s->len) {
                /* The matched prefix was held back, so it starts in buf. */
                size_t start = pos + 1 - s->len;
                if (start < best_start) {
                    best_start = start;
                    best = (int)i;
                }
                break;
            }
        }
        s->state = state;
        if (state > hold)
            hold = state;
    }

    if (best >= 0) {
        m->matched = best;
        m->finished = true;
        *emit_len = best_start;
        *matched = true;
        m->handed_out = m->len;
        return 0;
    }
    size_t cut = m->len - hold;
    size_t tail = incomplete_utf8_tail(m->buf, m->len);
    if (tail < cut)
        cut = tail;
    *emit_len = cut;
    m->handed_out = cut;
    return 0;
}

int stop_matcher_flush(stop_matcher *m, const char **emit, size_t *emit_len)
{
    if (!m || !emit || !emit_len)
        return -EINVAL;
    drop_handed_out(m);
    *emit = m->buf;
    *emit_len = m->finished ? 0 : m->len;
    m->handed_out = m->len;
    m->finished = true;
    for (size_t i = 0; i < m->n_stops; i++)
        m->stops[i].state = 0;
    return 0;
}
