/* Plain (non-speculative) generation: prefill the prompt, then one token per
 * pass, sampled from the last logits, streamed as text. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "generate/text_stream.h"
#include "sample/sampler.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

alm_generate_params alm_generate_default_params(void)
{
    return (alm_generate_params){
        .max_tokens = 128,
        .sampling = { .temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .seed = 0 },
    };
}

const char *alm_finish_reason_name(alm_finish_reason r)
{
    switch (r) {
    case ALM_FINISH_LENGTH: return "length";
    case ALM_FINISH_EOS: return "eos";
    case ALM_FINISH_STOP: return "stop";
    case ALM_FINISH_CONTEXT: return "context";
    case ALM_FINISH_CANCELLED: return "cancelled";
    }
    return "unknown";
}

static bool is_eos(const int32_t *eos, size_t n_eos, int32_t id)
{
    for (size_t i = 0; i < n_eos; i++)
        if (eos[i] == id)
            return true;
    return false;
}

static void sampler_freep(sampler **s) { sampler_free(*s); }
static void text_stream_freep(text_stream **t) { text_stream_free(*t); }

int alm_generate(alm_seq *seq, alm_pool *pool, const int32_t *prompt, size_t n_prompt,
                 const alm_generate_params *p, alm_text_fn on_text, void *user,
                 int32_t **ids_out, size_t *n_ids_out, alm_generate_stats *stats,
                 alm_error *err)
{
    alm_generate_stats st = { .prompt_tokens = (int)n_prompt, .finish = ALM_FINISH_LENGTH };
    if (n_prompt == 0)
        return alm_error_set(err, -EINVAL, "the prompt is empty: generation needs at least one token");
    if (p->max_tokens < 0)
        return alm_error_set(err, -EINVAL, "max_tokens must be >= 0");

    const alm_model *model = alm_seq_model(seq);
    const alm_tokenizer *tok = alm_model_tokenizer(model);
    int vocab = alm_model_vocab_size(model);
    sampling_params sp = {
        .temperature = p->sampling.temperature, .top_k = p->sampling.top_k,
        .top_p = p->sampling.top_p, .min_p = p->sampling.min_p, .seed = p->sampling.seed,
    };
    _cleanup_(sampler_freep) sampler *smp = NULL;
    int r = sampler_new(&sp, vocab, &smp, err);
    if (r < 0)
        return r;
    _cleanup_(text_stream_freep) text_stream *text = NULL;
    r = text_stream_new(tok, p->stop, p->n_stop, &text, err);
    if (r < 0)
        return r;
    _cleanup_free_ float *logits = malloc(sizeof(float) * (size_t)vocab);
    _cleanup_free_ int32_t *ids = malloc(sizeof(int32_t) * ((size_t)p->max_tokens + 1));
    if (!logits || !ids)
        return alm_error_set(err, -ENOMEM, "out of memory");
    const int32_t *eos;
    size_t n_eos = alm_tokenizer_eos_ids(tok, &eos);

    double t0 = now_seconds();
    r = alm_seq_forward(seq, pool, prompt, (int)n_prompt, 1, logits, err);
    if (r < 0)
        return r;
    double t1 = now_seconds();
    st.prefill_seconds = t1 - t0;

    size_t n = 0;
    int decode_passes = 0;
    for (;;) {
        if (n == (size_t)p->max_tokens) {
            st.finish = ALM_FINISH_LENGTH;
            break;
        }
        int32_t id = sampler_sample(smp, logits, vocab);
        if (id < 0)
            return alm_error_set(err, id, "sampling failed: the logits are not finite");
        if (!p->ignore_eos && is_eos(eos, n_eos, id)) {
            st.finish = ALM_FINISH_EOS;
            break;
        }
        ids[n++] = id;
        bool stopped = false, cancelled = false;
        r = text_stream_push(text, id, on_text, user, &stopped, &cancelled, err);
        if (r < 0)
            return r;
        if (stopped || cancelled) {
            st.finish = stopped ? ALM_FINISH_STOP : ALM_FINISH_CANCELLED;
            break;
        }
        if (n == (size_t)p->max_tokens)
            continue; /* no pass needed for a token nobody will follow */
        if (alm_seq_length(seq) >= alm_seq_capacity(seq)) {
            st.finish = ALM_FINISH_CONTEXT;
            break;
        }
        r = alm_seq_forward(seq, pool, &id, 1, 1, logits, err);
        if (r < 0)
            return r;
        decode_passes++;
    }
    double t2 = now_seconds();
    if (st.finish != ALM_FINISH_STOP && st.finish != ALM_FINISH_CANCELLED) {
        r = text_stream_finish(text, on_text, user, err);
        if (r < 0)
            return r;
    }

    st.generated_tokens = (int)n;
    st.decode_seconds = t2 - t1;
    st.prefill_tok_s = st.prefill_seconds > 0 ? (double)n_prompt / st.prefill_seconds : 0.0;
    st.decode_tok_s = decode_passes > 0 && st.decode_seconds > 0
                          ? (double)decode_passes / st.decode_seconds : 0.0;
    if (stats)
        *stats = st;
    if (ids_out)
        *ids_out = TAKE_PTR(ids);
    if (n_ids_out)
        *n_ids_out = n;
    return 0;
}
