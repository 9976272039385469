/* Temperature, top-k, top-p and min-p, then a draw (see sampler.h for the
 * exact semantics).
 *
 * Every filter here keeps the tokens whose score is at or above a threshold
 * (ties at the cut stay), so processing reduces to finding two numbers: a
 * logit floor (top-k) and a weight floor (top-p, min-p) on the unnormalised
 * weights w = exp((logit - max) / T), whose maximum is exactly 1. Neither
 * needs a sort (select.c): top-k is a k-th largest selection, top-p a
 * weighted one. The rest is a few vectorised passes (softmax_weights.c). */
#include "sample/sampler.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "sample/rng.h"
#include "sample/select.h"
#include "sample/softmax_weights.h"

struct sampler {
    sampling_params params;
    rng random;
    int max_vocab;
    /* max_vocab floats each: the draw's weights, and scratch */
    float *weights;
    float *work;
};

sampling_params sampling_params_greedy(void)
{
    return (sampling_params){ .temperature = 0.0f, .top_k = 0, .top_p = 1.0f,
                              .min_p = 0.0f, .seed = 0 };
}

static int check_params(const sampling_params *p, alm_error *err)
{
    /* The comparisons are written so that NaN fails them. */
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return alm_error_set(err, -EINVAL,
                             "sampling: temperature %g must be finite and >= 0",
                             (double)p->temperature);
    if (p->temperature > 0.0f && !isfinite(1.0f / p->temperature))
        return alm_error_set(err, -EINVAL,
                             "sampling: temperature %g is too small (use 0 for greedy)",
                             (double)p->temperature);
    if (p->top_k < 0)
        return alm_error_set(err, -EINVAL, "sampling: top_k %d must be >= 0 (0 = off)",
                             p->top_k);
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f))
        return alm_error_set(err, -EINVAL,
                             "sampling: top_p %g must be in [0, 1] (1 = off)",
                             (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return alm_error_set(err, -EINVAL,
                             "sampling: min_p %g must be in [0, 1] (0 = off)",
                             (double)p->min_p);
    return 0;
}

int sampler_new(const sampling_params *params, int max_vocab, sampler **out,
                alm_error *err)
{
    if (!params || !out)
        return alm_error_set(err, -EINVAL, "sampler_new: missing argument");
    *out = NULL;
    int r = check_params(params, err);
    if (r < 0)
        return r;
    if (max_vocab < 1)
        return alm_error_set(err, -EINVAL, "sampler_new: vocabulary size %d must be >= 1",
                             max_vocab);
    sampler *s = calloc(1, sizeof *s);
    if (!s)
        return alm_error_set(err, -ENOMEM, "sampler_new: out of memory");
    s->weights = malloc((size_t)max_vocab * sizeof *s->weights);
    s->work = malloc((size_t)max_vocab * sizeof *s->work);
    if (!s->weights || !s->work) {
        free(s->weights);
        free(s->work);
        free(s);
        return alm_error_set(err, -ENOMEM,
                             "sampler_new: out of memory for 2 x %d scratch floats", max_vocab);
    }
    s->params = *params;
    s->max_vocab = max_vocab;
    rng_seed(&s->random, params->seed);
    *out = s;
    return 0;
}

void sampler_free(sampler *s)
{
    if (!s)
        return;
    free(s->weights);
    free(s->work);
    free(s);
}

const sampling_params *sampler_get_params(const sampler *s)
{
    return &s->params;
}

void sampler_reseed(sampler *s, uint64_t seed)
{
    s->params.seed = seed;
    rng_seed(&s->random, seed);
}

double sampler_uniform(sampler *s)
{
    return rng_uniform(&s->random);
}

/* The largest logit. Rejects NaN and +inf (a broken forward pass must not
 * turn into plausible tokens) and logits where every token is masked. */
static int checked_max(const float *logits, int vocab, float *max_out)
{
    bool nan_seen;
    float max = logits_max(logits, vocab, &nan_seen);
    if (nan_seen || max == INFINITY || max == -INFINITY)
        return -EINVAL;
    *max_out = max;
    return 0;
}

/* Greedy: the argmax, the lowest id on exact ties; or a negative errno. */
static int32_t greedy_token(const float *logits, int vocab)
{
    float max;
    int r = checked_max(logits, vocab, &max);
    return r < 0 ? r : first_equal(logits, vocab, max);
}

/* Writes the processed, unnormalised weights of every token into weights
 * (0 for filtered tokens) and their sum (weights_sum) into *total. work, a
 * second vocabulary-sized buffer, saves recomputing the weights after
 * top-p; without it (NULL) weights doubles as the scratch. Sampling mode
 * only (temperature > 0). */
static int process_logits(const sampling_params *p, const float *logits, int vocab,
                          float *weights, float *work, double *total)
{
    float max;
    int r = checked_max(logits, vocab, &max);
    if (r < 0)
        return r;
    const float inv_t = 1.0f / p->temperature;
    float *scratch = work ? work : weights;

    /* Top-k: the k-th largest logit is the floor (dividing by T > 0 keeps
     * the order, so the selection runs on the raw logits). */
    float logit_floor = -INFINITY;
    if (p->top_k > 0 && p->top_k < vocab)
        logit_floor = select_kth_largest(logits, vocab, p->top_k, scratch);

    if (p->top_p >= 1.0f) {
        /* Min-p alone: p >= min_p * max p, that is w >= min_p since the
         * largest weight is exactly 1. */
        softmax_weights(logits, vocab, max, inv_t, logit_floor, p->min_p, weights);
        *total = weights_sum(weights, vocab);
        return 0;
    }

    /* Top-p, on the distribution top-k left, then min-p. */
    softmax_weights(logits, vocab, max, inv_t, logit_floor, 0.0f, weights);
    float weight_floor = select_nucleus_floor(weights, vocab, weights_sum(weights, vocab),
                                              p->top_p, scratch);
    if (p->min_p > weight_floor)
        weight_floor = p->min_p;
    if (work)
        apply_weight_floor(weights, vocab, weight_floor);
    else  /* the selection reordered the weights: compute them again */
        softmax_weights(logits, vocab, max, inv_t, logit_floor, weight_floor, weights);
    *total = weights_sum(weights, vocab);  /* >= 1: the maximum keeps weight 1 */
    return 0;
}

static bool vocab_ok(const sampler *s, int vocab)
{
    return vocab >= 1 && vocab <= s->max_vocab;
}

int32_t sampler_sample(sampler *s, const float *logits, int vocab)
{
    if (!s || !logits || !vocab_ok(s, vocab))
        return -EINVAL;
    if (s->params.temperature == 0.0f)
        return greedy_token(logits, vocab);
    double total;
    int r = process_logits(&s->params, logits, vocab, s->weights, s->work, &total);
    if (r < 0)
        return r;
    return weights_draw(s->weights, vocab, total, rng_uniform(&s->random));
}

int sampler_probs(const sampler *s, const float *logits, int vocab, float *probs)
{
    if (!s || !logits || !probs || !vocab_ok(s, vocab))
        return -EINVAL;
    if (s->params.temperature == 0.0f) {
        int32_t argmax = greedy_token(logits, vocab);
        if (argmax < 0)
            return argmax;
        memset(probs, 0, (size_t)vocab * sizeof *probs);
        probs[argmax] = 1.0f;
        return 0;
    }
    double total;
    int r = process_logits(&s->params, logits, vocab, probs, NULL, &total);
    if (r < 0)
        return r;
    const float scale = (float)(1.0 / total);
    for (int i = 0; i < vocab; i++)
        probs[i] *= scale;
    return 0;
}

int32_t sampler_sample_from_probs(sampler *s, const float *probs, int vocab)
{
    if (!s || !probs || vocab < 1)
        return -EINVAL;
    int bad = 0;
    for (int i = 0; i < vocab; i++)
        bad |= !(probs[i] >= 0.0f && probs[i] < INFINITY);
    double total = weights_sum(probs, vocab);
    if (bad || !(total > 0.0))
        return -EINVAL;
    return weights_draw(probs, vocab, total, rng_uniform(&s->random));
}
