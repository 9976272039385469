#include "generate/text_stream.h"

#include <errno.h>
#include <stdlib.h>

#include "core/error.h"
#include "sample/stop_strings.h"

struct text_stream {
    alm_detokenizer *detok;
    stop_matcher *stops;
};

int text_stream_new(const alm_tokenizer *tok, const char *const *stop, size_t n_stop,
                    text_stream **out, alm_error *err)
{
    if (!tok && n_stop)
        return alm_error_set(err, -EINVAL,
                             "stop strings need a tokenizer, and this model has none (it takes token ids)");
    text_stream *t = calloc(1, sizeof *t);
    if (!t)
        return alm_error_set(err, -ENOMEM, "out of memory");
    if (!tok) {
        /* A model without a tokenizer (random weights) generates ids only:
         * there is no text to stream. */
        *out = t;
        return 0;
    }
    /* Special tokens (e.g. <|im_end|>) are not part of the visible text. */
    int r = alm_detokenizer_new(tok, true, &t->detok);
    if (r < 0) {
        free(t);
        return alm_error_set(err, r, "cannot start the detokenizer");
    }
    r = stop_matcher_new(stop, n_stop, &t->stops, err);
    if (r < 0) {
        text_stream_free(t);
        return r;
    }
    *out = t;
    return 0;
}

void text_stream_free(text_stream *t)
{
    if (!t)
        return;
    alm_detokenizer_free(t->detok);
    stop_matcher_free(t->stops);
    free(t);
}

static int deliver(const char *text, size_t len, alm_text_fn on_text, void *user, bool *cancelled)
{
    if (len && on_text && on_text(user, text, len) != 0)
        *cancelled = true;
    return 0;
}

int text_stream_push(text_stream *t, int32_t id, alm_text_fn on_text, void *user,
                     bool *stopped, bool *cancelled, alm_error *err)
{
    if (!t->detok)
        return 0;
    char *piece = NULL;
    int n = alm_detokenizer_push(t->detok, id, &piece);
    if (n < 0)
        return alm_error_set(err, n, "cannot detokenize token %d", id);
    const char *emit;
    size_t emit_len;
    int r = stop_matcher_push(t->stops, piece, (size_t)n, &emit, &emit_len, stopped);
    if (r == 0)
        deliver(emit, emit_len, on_text, user, cancelled);
    free(piece);
    return r < 0 ? alm_error_set(err, r, "out of memory") : 0;
}

int text_stream_finish(text_stream *t, alm_text_fn on_text, void *user, alm_error *err)
{
    if (!t->detok)
        return 0;
    char *rest = NULL;
    int n = alm_detokenizer_flush(t->detok, &rest);
    if (n < 0)
        return alm_error_set(err, n, "cannot finish detokenizing");
    const char *emit;
    size_t emit_len;
    bool stopped = false, cancelled = false;
    int r = stop_matcher_push(t->stops, rest, (size_t)n, &emit, &emit_len, &stopped);
    free(rest);
    if (r < 0)
        return alm_error_set(err, r, "out of memory");
    deliver(emit, emit_len, on_text, user, &cancelled);
    if (!stopped && !cancelled) {
        r = stop_matcher_flush(t->stops, &emit, &emit_len);
        if (r < 0)
            return alm_error_set(err, r, "out of memory");
        deliver(emit, emit_len, on_text, user, &cancelled);
    }
    return 0;
}
