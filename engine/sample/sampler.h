/* Next-token sampling: temperature, top-k, top-p and min-p, applied in the
 * order Hugging Face transformers' generate applies its warpers, then a draw.
 *
 * Semantics (scores s = logits / temperature, p = softmax(s)):
 *   temperature 0   greedy: the argmax, the lowest id on exact ties.
 *   top_k > 0       keeps every token whose score is >= the k-th largest
 *                   score (so tokens tied with the k-th are all kept, as
 *                   transformers' TopKLogitsWarper does). 0 = off.
 *   top_p < 1       on the distribution left by top-k, keeps the smallest
 *                   set of most probable tokens whose probabilities add up
 *                   to >= top_p, at least one token. Tokens tied with the
 *                   least probable kept token are all kept: transformers
 *                   then keeps an arbitrary subset that depends on
 *                   torch.sort's order among equal values; keeping the whole
 *                   tie makes the result independent of token order. This is
 *                   the only departure, and it needs exactly equal
 *                   probabilities at the cut. 1 = off; 0 keeps only the most
 *                   probable token(s).
 *   min_p > 0       keeps tokens with p >= min_p * max p (after temperature;
 *                   the most probable token always stays). 0 = off.
 * Filtered tokens get probability 0; the rest are renormalised. Weights
 * are computed in float: a token less likely than e^-87 (1.6e-38) times the
 * most likely one gets probability 0, as float32 softmax would round it.
 *
 * Logits may be -inf (masked tokens, probability 0); NaN and +inf are
 * rejected (-EINVAL), as are logits where every token is -inf.
 *
 * Threads: a sampler is not shared between threads for sampling (it owns
 * its random state and a scratch buffer). sampler_probs takes a const
 * sampler and uses only the caller's output vector as scratch, so several
 * threads may compute probabilities with one sampler at the same time. */
#ifndef ALM_SAMPLE_SAMPLER_H
#define ALM_SAMPLE_SAMPLER_H

#include <stdint.h>

#include "alm.h"

typedef struct sampling_params {
    float temperature;  /* 0 = greedy */
    int top_k;          /* 0 = off */
    float top_p;        /* 1 = off */
    float min_p;        /* 0 = off */
    uint64_t seed;      /* same seed, same draws */
} sampling_params;

/* Greedy decoding: temperature 0, every filter off, seed 0. */
sampling_params sampling_params_greedy(void);

typedef struct sampler sampler;

/* Validates params (temperature finite and >= 0, top_k >= 0, top_p and
 * min_p in [0, 1]) and preallocates scratch for vocabularies of up to
 * max_vocab tokens, so that sampling never allocates. */
int sampler_new(const sampling_params *params, int max_vocab, sampler **out,
                alm_error *err);
void sampler_free(sampler *s);

const sampling_params *sampler_get_params(const sampler *s);

/* Restarts the random stream as if the sampler had just been created with
 * this seed (and records it in the params). */
void sampler_reseed(sampler *s, uint64_t seed);

/* The next token: the argmax when greedy, otherwise a draw from the
 * processed distribution. Returns the token id (0 <= id < vocab), or a
 * negative errno: -EINVAL for vocab outside 1..max_vocab or invalid logits. */
int32_t sampler_sample(sampler *s, const float *logits, int vocab);

/* The processed distribution over the whole vocabulary: probs[i] is the
 * probability of token i after temperature, top-k, top-p and min-p (0 for
 * filtered tokens; sums to 1). One-hot on the argmax when greedy. probs is
 * also the only scratch this uses. Returns 0 or a negative errno. Speculative
 * sampling computes the target's p and the draft's q with this, so that both
 * see the same processing. */
int sampler_probs(const sampler *s, const float *logits, int vocab, float *probs);

/* Draws from an explicit distribution, such as a speculative residual
 * max(0, p - q): probs are non-negative weights that need not sum to 1
 * (they are normalised here). A token of weight 0 is never drawn. Returns
 * the token id, or -EINVAL when a weight is negative or not finite, when all
 * are 0, or when vocab is out of range. */
int32_t sampler_sample_from_probs(sampler *s, const float *probs, int vocab);

/* Uniform in [0, 1) from the sampler's stream (speculative acceptance tests
 * use it: accept a draft token when uniform < p / q). */
double sampler_uniform(sampler *s);

#endif
