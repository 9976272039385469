#include "speculative/ngram.h"

#include <string.h>

int ngram_propose(const int32_t *history, size_t len, int n_max, int n_min, int k,
                  int32_t *out)
{
    for (int n = n_max; n >= n_min && n >= 1; n--) {
        if ((size_t)n >= len)
            continue;
        const int32_t *tail = history + len - n;
        /* Most recent first; the match must end before the tail starts so
         * that at least one token follows it. */
        for (size_t start = len - n; start-- > 0;) {
            if (history[start] != tail[0] ||
                memcmp(history + start, tail, sizeof(int32_t) * (size_t)n) != 0)
                continue;
            size_t next = start + (size_t)n;
            int count = 0;
            while (count < k && next + (size_t)count < len) {
                out[count] = history[next + count];
                count++;
            }
            if (count > 0)
                return count;
        }
    }
    return 0;
}
