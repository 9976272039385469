#include "speculative/draft_length.h"

#include <math.h>

/* Weight of history in the running estimates: about the last 20 steps. */
#define DECAY 0.95

void draft_length_init(draft_length *d, int num_draft_tokens)
{
    *d = (draft_length){ .fixed = num_draft_tokens };
    /* Start from the usual sweet spot, and assume a fair acceptance until
     * measured. */
    d->k = num_draft_tokens > 0 ? num_draft_tokens : 4;
    d->accepted = 2.0;
    d->rejected = 1.0;
}

int draft_length_next(const draft_length *d) { return d->k; }

/* Verify cost of k + 1 tokens: measured, or extrapolated from the nearest
 * measured k with a slope fitted between the two farthest apart. */
static double verify_cost(const draft_length *d, int k)
{
    if (d->verify[k] > 0)
        return d->verify[k];
    int lo = -1, hi = -1;
    for (int i = 0; i <= ALM_MAX_DRAFT_TOKENS; i++) {
        if (d->verify[i] > 0) {
            if (lo < 0)
                lo = i;
            hi = i;
        }
    }
    if (lo < 0)
        return 0;
    double base = d->verify[lo];
    /* Without two points, assume each extra token costs 10% of a pass. */
    double slope = hi > lo ? (d->verify[hi] - d->verify[lo]) / (hi - lo) : 0.1 * base;
    if (slope < 0)
        slope = 0;
    return base + slope * (k - lo);
}

void draft_length_update(draft_length *d, int drafted, int accepted,
                         double draft_seconds, double verify_seconds)
{
    if (drafted <= 0)
        return;
    d->accepted = d->accepted * DECAY + accepted;
    d->rejected = d->rejected * DECAY + (accepted < drafted ? 1.0 : 0.0);
    double step = draft_seconds / drafted;
    d->draft_step = d->draft_step > 0 ? 0.8 * d->draft_step + 0.2 * step : step;
    double *v = &d->verify[drafted];
    *v = *v > 0 ? 0.8 * *v + 0.2 * verify_seconds : verify_seconds;
    if (d->fixed > 0)
        return;

    /* a: chance that a proposal is kept, given that the ones before it were */
    double a = d->accepted / (d->accepted + d->rejected);
    if (a > 0.995)
        a = 0.995;
    int best = d->k;
    double best_rate = 0;
    for (int k = 1; k <= ALM_MAX_DRAFT_TOKENS; k++) {
        double cost = k * d->draft_step + verify_cost(d, k);
        if (cost <= 0)
            continue;
        double tokens = (1.0 - pow(a, k + 1)) / (1.0 - a);
        double rate = tokens / cost;
        if (rate > best_rate * 1.0001) {
            best_rate = rate;
            best = k;
        }
    }
    /* Move gradually: costs of lengths not yet tried are extrapolated. */
    if (best > d->k + 1)
        best = d->k + 1;
    if (best < d->k - 2)
        best = d->k - 2;
    d->k = best < 1 ? 1 : best;
}
