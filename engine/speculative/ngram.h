/* Prompt lookup ("n-gram") drafting: the continuation of the most recent
 * earlier occurrence of the text's last n tokens is a good guess wherever
 * output repeats its input (code edits, quoting, lists). */
#ifndef ALM_SPECULATIVE_NGRAM_H
#define ALM_SPECULATIVE_NGRAM_H

#include <stddef.h>
#include <stdint.h>

/* Looks for the last n tokens of history[0..len) earlier in it, for n from
 * n_max down to n_min, and copies up to k tokens that followed the most
 * recent match into out. Returns how many (0 when nothing matched). */
int ngram_propose(const int32_t *history, size_t len, int n_max, int n_min, int k,
                  int32_t *out);

#endif
