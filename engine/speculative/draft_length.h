/* Choosing how many tokens to draft (num_draft_tokens = auto).
 *
 * With per-token acceptance probability a, drafting k tokens yields on
 * average (1 - a^(k+1)) / (1 - a) tokens per target pass, at a cost of k
 * draft steps plus one verification over k + 1 tokens. The controller keeps
 * running estimates of a (from how far each step got) and of both costs
 * (from measured times), and picks the k with the best tokens per second. */
#ifndef ALM_SPECULATIVE_DRAFT_LENGTH_H
#define ALM_SPECULATIVE_DRAFT_LENGTH_H

#include <stdbool.h>

#include "alm.h"

typedef struct draft_length {
    int fixed;                 /* > 0: always this k */
    int k;                     /* current choice */
    double accepted, rejected; /* decayed counts */
    double draft_step;         /* seconds per draft token (running mean); 0 = unknown */
    double verify[ALM_MAX_DRAFT_TOKENS + 1]; /* seconds per verify pass of k + 1 tokens */
} draft_length;

void draft_length_init(draft_length *d, int num_draft_tokens);
int draft_length_next(const draft_length *d);
/* After a step that drafted `drafted`, of which `accepted` were kept. */
void draft_length_update(draft_length *d, int drafted, int accepted,
                         double draft_seconds, double verify_seconds);

#endif
