#include "generate/session.h"

#include <errno.h>
#include <stdlib.h>

#include "core/error.h"

int session_init(gen_session *g, const alm_model *model, const alm_generate_params *p,
                 alm_text_fn on_text, void *user, alm_error *err)
{
    *g = (gen_session){ .params = p, .on_text = on_text, .user = user,
                        .finish = ALM_FINISH_LENGTH };
    if (p->max_tokens < 0)
        return alm_error_set(err, -EINVAL, "max_tokens must be >= 0");
    const alm_tokenizer *tok = alm_model_tokenizer(model);
    g->vocab = alm_model_vocab_size(model);
    sampling_params sp = {
        .temperature = p->sampling.temperature, .top_k = p->sampling.top_k,
        .top_p = p->sampling.top_p, .min_p = p->sampling.min_p, .seed = p->sampling.seed,
    };
    int r = sampler_new(&sp, g->vocab, &g->sampler, err);
    if (r == 0)
        r = text_stream_new(tok, p->stop, p->n_stop, &g->text, err);
    if (r == 0) {
        /* + ALM_MAX_DRAFT_TOKENS: a speculative step may produce that many
         * more before the loop looks at max_tokens. */
        g->ids = malloc(sizeof(int32_t) * ((size_t)p->max_tokens + ALM_MAX_DRAFT_TOKENS + 1));
        if (!g->ids)
            r = alm_error_set(err, -ENOMEM, "out of memory");
    }
    if (r < 0) {
        session_clear(g);
        return r;
    }
    g->n_eos = alm_tokenizer_eos_ids(tok, &g->eos);
    if (p->max_tokens == 0)
        g->done = true;
    return 0;
}

void session_clear(gen_session *g)
{
    sampler_free(g->sampler);
    text_stream_free(g->text);
    free(g->ids);
    g->sampler = NULL;
    g->text = NULL;
    g->ids = NULL;
}

static bool is_eos(const gen_session *g, int32_t id)
{
    for (size_t i = 0; i < g->n_eos; i++)
        if (g->eos[i] == id)
            return true;
    return false;
}

int session_emit(gen_session *g, int32_t id, alm_error *err)
{
    if (g->done)
        return 0;
    if (!g->params->ignore_eos && is_eos(g, id)) {
        g->finish = ALM_FINISH_EOS;
        g->done = true;
        return 0;
    }
    g->ids[g->n_ids++] = id;
    bool stopped = false, cancelled = false;
    int r = text_stream_push(g->text, id, g->on_text, g->user, &stopped, &cancelled, err);
    if (r < 0)
        return r;
    if (stopped || cancelled) {
        g->finish = stopped ? ALM_FINISH_STOP : ALM_FINISH_CANCELLED;
        g->done = true;
    } else if (session_remaining(g) <= 0) {
        g->finish = ALM_FINISH_LENGTH;
        g->done = true;
    }
    return 0;
}

int session_finish(gen_session *g, alm_error *err)
{
    if (g->finish == ALM_FINISH_STOP || g->finish == ALM_FINISH_CANCELLED)
        return 0;
    return text_stream_finish(g->text, g->on_text, g->user, err);
}
