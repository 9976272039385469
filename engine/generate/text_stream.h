/* From generated ids to the text a user sees: incremental detokenization
 * (never a broken UTF-8 sequence) followed by stop-string matching (text
 * that may begin a stop string is held back; the stop string itself is never
 * emitted). */
#ifndef ALM_GENERATE_TEXT_STREAM_H
#define ALM_GENERATE_TEXT_STREAM_H

#include <stdbool.h>

#include "alm.h"

typedef struct text_stream text_stream;

int text_stream_new(const alm_tokenizer *tok, const char *const *stop, size_t n_stop,
                    text_stream **out, alm_error *err);
void text_stream_free(text_stream *t);

/* Adds one token; calls on_text (may be NULL) with text that became final.
 * *stopped: a stop string was completed; *cancelled: on_text asked to stop. */
int text_stream_push(text_stream *t, int32_t id, alm_text_fn on_text, void *user,
                     bool *stopped, bool *cancelled, alm_error *err);
/* End of generation: emits what is still held back. */
int text_stream_finish(text_stream *t, alm_text_fn on_text, void *user, alm_error *err);

#endif
