/* The sampler's vector loops: the largest logit, scans, softmax weights
 * exp((logit - max) / T) with the filters' floors applied, their sum, and a
 * draw from them. Written so that the compiler vectorises them (explicit
 * lanes instead of reductions that would need reassociation); every result
 * is deterministic (same inputs, same bits). */
#ifndef ALM_SAMPLE_SOFTMAX_WEIGHTS_H
#define ALM_SAMPLE_SOFTMAX_WEIGHTS_H

#include <stdbool.h>
#include <stdint.h>

/* The largest of x[0..n) (n >= 1); *nan_seen tells whether any is NaN. */
float logits_max(const float *x, int n, bool *nan_seen);

/* The index of the first x[i] > v (or == v), or n when there is none. */
int first_greater(const float *x, int n, float v);
int first_equal(const float *x, int n, float v);

/* How many of x[0..n) are >= v. */
int count_at_least(const float *x, int n, float v);

/* out[i] = exp((logits[i] - max) * inv_t) where logits[i] >= logit_floor and
 * that weight is >= weight_floor, else 0. max must be the largest logit.
 * The exponential is computed here (relative error about 1e-7; weights
 * below FLT_MIN, that is exponents under -87, become 0). */
void softmax_weights(const float *logits, int n, float max, float inv_t,
                     float logit_floor, float weight_floor, float *out);

/* Sets the weights below floor to 0. */
void apply_weight_floor(float *w, int n, float floor);

/* Sum of w[0..n) in double, in a fixed blocked order that weights_draw
 * repeats. */
double weights_sum(const float *w, int n);

/* The index selected by u in [0, 1) from non-negative weights w[0..n) that
 * sum (weights_sum) to total > 0: the first i where the running sum exceeds
 * u * total. Never an index of weight 0. */
int32_t weights_draw(const float *w, int n, double total, double u);

#endif
