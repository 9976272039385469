/* Stop strings over streamed text.
 *
 * Generation produces text piece by piece (one detokenized token at a
 * time); a stop string may span pieces. The matcher holds back any tail
 * that could still be the start of a stop string, emits the rest, and on a
 * match cuts the text just before the stop string (which is not emitted,
 * nor anything after it), as Ollama and llama.cpp do.
 *
 * A match is reported as soon as a stop string is complete in the text
 * pushed so far (generation should stop at once). When several are
 * complete after the same push, the one that starts earliest wins (the
 * first in the list on equal starts), so the cut is the first occurrence of
 * any stop string in the text.
 *
 * Emitted text never ends inside a UTF-8 sequence: an incomplete sequence at
 * the end of the text is held back too (until it completes or flush). */
#ifndef ALM_SAMPLE_STOP_STRINGS_H
#define ALM_SAMPLE_STOP_STRINGS_H

#include <stdbool.h>
#include <stddef.h>

#include "alm.h"

typedef struct stop_matcher stop_matcher;

/* Copies n NUL-terminated stop strings (n may be 0: everything passes).
 * Each must be non-empty, valid UTF-8. */
int stop_matcher_new(const char *const *strings, size_t n, stop_matcher **out,
                     alm_error *err);
void stop_matcher_free(stop_matcher *m);

/* Feeds the next piece of text (len bytes, need not be NUL-terminated).
 * On return, *emit points to *emit_len bytes that are final and may be shown
 * now (valid until the next call on this matcher; not NUL-terminated), and
 * *matched tells whether a stop string has been found: then *emit is the text
 * up to the stop string and the stream is over (later pushes emit nothing
 * and report the match again). Returns 0 or -ENOMEM / -EINVAL. */
int stop_matcher_push(stop_matcher *m, const char *piece, size_t len,
                      const char **emit, size_t *emit_len, bool *matched);

/* End of the stream: emits the text still held back (none after a match).
 * The matcher then emits nothing more until stop_matcher_reset. */
int stop_matcher_flush(stop_matcher *m, const char **emit, size_t *emit_len);

/* Index (in the list given to new) of the stop string that matched, or -1. */
int stop_matcher_matched_index(const stop_matcher *m);

/* Bytes currently held back (pushed but not yet emitted). */
size_t stop_matcher_held(const stop_matcher *m);

/* Starts a new stream with the same stop strings. */
void stop_matcher_reset(stop_matcher *m);

#endif
