/* What every generation loop shares: the sampler, the streaming text, the
 * generated ids and the reasons to stop. A loop (plain or speculative)
 * produces tokens; session_emit decides whether generation goes on. */
#ifndef ALM_GENERATE_SESSION_H
#define ALM_GENERATE_SESSION_H

#include <stdbool.h>

#include "alm.h"
#include "generate/text_stream.h"
#include "sample/sampler.h"

typedef struct gen_session {
    const alm_generate_params *params;
    int vocab;
    sampler *sampler;
    text_stream *text;
    alm_text_fn on_text;
    void *user;
    const int32_t *eos;
    size_t n_eos;
    int32_t *ids;          /* generated so far */
    size_t n_ids;
    alm_finish_reason finish;
    bool done;
} gen_session;

int session_init(gen_session *g, const alm_model *model, const alm_generate_params *p,
                 alm_text_fn on_text, void *user, alm_error *err);
void session_clear(gen_session *g);

/* Takes a sampled token: EOS ends generation (the token is not kept),
 * otherwise it is appended and streamed; then max_tokens, stop strings and
 * cancellation may end it. Returns 0 or a negative errno; g->done says
 * whether to stop. */
int session_emit(gen_session *g, int32_t id, alm_error *err);

/* Flushes the text still held back (when generation did not end on a stop
 * string or a cancel). */
int session_finish(gen_session *g, alm_error *err);

/* Room left in max_tokens. */
static inline int session_remaining(const gen_session *g)
{
    return g->params->max_tokens - (int)g->n_ids;
}

#endif
