/* The thresholds of top-k and top-p, found without sorting the vocabulary:
 * a bucket histogram over the float bits finds the narrow range that holds
 * the cut, and a three-way quickselect settles it among the few values in
 * that range. */
#ifndef ALM_SAMPLE_SELECT_H
#define ALM_SAMPLE_SELECT_H

/* The k-th largest of logits[0..n) (1 <= k <= n; ties counted, so every
 * logit >= the result is in the top k or tied with its last member).
 * scratch: n floats (used only for large k). */
float select_kth_largest(const float *logits, int n, int k, float *scratch);

/* The top-p cut over non-negative weights w[0..n) that sum to total (the
 * largest weight is 1): the smallest weight v such that the weights > v
 * sum to less than top_p * total. Keeping every weight >= v keeps the
 * smallest set of heaviest tokens whose mass reaches top_p, with ties at the
 * cut kept whole. scratch: n floats, or w itself (which is then
 * overwritten). */
float select_nucleus_floor(const float *w, int n, double total, double top_p, float *scratch);

#endif
