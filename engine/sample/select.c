#include "sample/select.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "sample/softmax_weights.h"

/* Up to this k, top-k keeps a min-heap on the stack while reading the
 * logits once; above it, a sampled estimate is cheaper. */
enum { HEAP_MAX = 256 };
/* Histogram buckets: the top 12 bits of an order-preserving key (sign,
 * exponent and 3 mantissa bits: ranges 12.5% wide), and for weights in
 * [0, 1] the bits of the float itself, of which 1017 buckets are used.
 * Each histogram takes 16 KiB of stack. */
enum { KEY_SHIFT = 20, KEY_BUCKETS = 1 << (32 - KEY_SHIFT) };
enum { WEIGHT_BUCKETS = (0x3f800000 >> KEY_SHIFT) + 1 };

static inline void swap_floats(float *a, float *b)
{
    float t = *a;
    *a = *b;
    *b = t;
}

static float median_of_three(float a, float b, float c)
{
    if (a > b)
        swap_floats(&a, &b);
    if (b > c)
        b = c;
    return a > b ? a : b;
}

/* The largest value v of a[0..n) (n >= 1) such that `above` plus the weight
 * of the elements >= v reaches target, where an element weighs 1
 * (weight_is_value false) or its own value (true); `above` is the weight of
 * larger elements that are not in a. Three-way quickselect: expected linear
 * time, duplicates cost nothing extra. Reorders a. */
static float quickselect_threshold(float *a, int n, double target, double above,
                                   bool weight_is_value)
{
    int lo = 0, hi = n;
    for (;;) {
        float pivot = median_of_three(a[lo], a[lo + (hi - lo) / 2], a[hi - 1]);
        /* [lo, greater) > pivot, [greater, less) == pivot, [less, hi) < pivot:
         * descending, as the cut is counted from the top. */
        int greater = lo, i = lo, less = hi;
        double weight_greater = 0.0, weight_equal = 0.0;
        while (i < less) {
            float v = a[i];
            double w = weight_is_value ? (double)v : 1.0;
            if (v > pivot) {
                swap_floats(&a[greater++], &a[i++]);
                weight_greater += w;
            } else if (v < pivot) {
                swap_floats(&a[i], &a[--less]);
            } else {
                i++;
                weight_equal += w;
            }
        }
        if (greater > lo && above + weight_greater >= target) {
            hi = greater;  /* the cut lies among the larger values */
        } else if (above + weight_greater + weight_equal >= target || less == hi) {
            /* The pivot completes the target (or nothing is left below it,
             * which only rounding in target can cause: keep everything). */
            return pivot;
        } else {
            above += weight_greater + weight_equal;
            lo = less;
        }
    }
}

/* Copies the x[i] >= v, in order, to out (which may be x itself: the
 * write index never passes the read index) and returns how many; count is
 * that number, known beforehand. When few pass, a branch is cheapest (it is
 * predicted right); otherwise every value is written and the index
 * advances only for those that pass. */
static int gather_at_least(const float *x, int n, float v, int count, float *out)
{
    int m = 0;
    if (count < n / 8) {
        for (int i = 0; i < n; i++)
            if (x[i] >= v)
                out[m++] = x[i];
    } else {
        for (int i = 0; i < n; i++) {
            float y = x[i];
            out[m] = y;
            m += y >= v;
        }
    }
    return m;
}

static void sift_down_min_heap(float *heap, int n, int i)
{
    for (;;) {
        int smallest = i, left = 2 * i + 1, right = left + 1;
        if (left < n && heap[left] < heap[smallest])
            smallest = left;
        if (right < n && heap[right] < heap[smallest])
            smallest = right;
        if (smallest == i)
            return;
        swap_floats(&heap[i], &heap[smallest]);
        i = smallest;
    }
}

static float kth_largest_by_heap(const float *logits, int n, int k)
{
    float heap[HEAP_MAX];
    memcpy(heap, logits, (size_t)k * sizeof *heap);
    for (int i = k / 2 - 1; i >= 0; i--)
        sift_down_min_heap(heap, k, i);
    /* After the first few hundred logits, few beat the root: jump from one
     * that does to the next with a vectorised scan. */
    for (int i = k; (i += first_greater(logits + i, n - i, heap[0])) < n; i++) {
        heap[0] = logits[i];
        sift_down_min_heap(heap, k, 0);
    }
    return heap[0];
}

/* Maps a float to an unsigned key with the same order (-inf lowest). */
static inline uint32_t order_key(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits & 0x80000000u ? ~bits : bits | 0x80000000u;
}

static float kth_largest_by_histogram(const float *logits, int n, int k, float *scratch)
{
    uint32_t count[KEY_BUCKETS];
    memset(count, 0, sizeof count);
    for (int i = 0; i < n; i++)
        count[order_key(logits[i]) >> KEY_SHIFT]++;
    /* From the top, the bucket where the count reaches k holds the cut. */
    int64_t above = 0;
    int bucket = KEY_BUCKETS - 1;
    while (above + count[bucket] < (uint32_t)k)
        above += count[bucket--];
    int m = 0;
    for (int i = 0; i < n; i++)
        if ((int)(order_key(logits[i]) >> KEY_SHIFT) == bucket)
            scratch[m++] = logits[i];
    return quickselect_threshold(scratch, m, k, (double)above, false);
}

/* Large k: a strided sample of the logits estimates a value a little
 * below the k-th largest; one vectorised count confirms that at least k
 * logits reach it, and only those (about 1.25 k) are gathered for an exact
 * quickselect. If the estimate was too high (rare), the histogram decides. */
static float kth_largest_by_sampling(const float *logits, int n, int k, float *scratch)
{
    enum { SAMPLE = 1024 };
    if (n < 4 * SAMPLE)
        return kth_largest_by_histogram(logits, n, k, scratch);
    const int stride = n / SAMPLE;
    for (int i = 0; i < SAMPLE; i++)
        scratch[i] = logits[(size_t)i * stride];
    /* The expected rank of the k-th largest in the sample, plus a margin
     * of four standard deviations (binomial), so that the estimate is
     * almost always at or below it. */
    double expected = (double)k * SAMPLE / n;
    int rank = (int)(1.25 * expected + 4.0 * sqrt(expected) + 2.0);
    if (rank > SAMPLE)
        rank = SAMPLE;
    float estimate = quickselect_threshold(scratch, SAMPLE, rank, 0.0, false);
    int count = count_at_least(logits, n, estimate);
    if (count < k)
        return kth_largest_by_histogram(logits, n, k, scratch);
    int m = gather_at_least(logits, n, estimate, count, scratch);
    return quickselect_threshold(scratch, m, k, 0.0, false);
}

float select_kth_largest(const float *logits, int n, int k, float *scratch)
{
    return k <= HEAP_MAX ? kth_largest_by_heap(logits, n, k)
                         : kth_largest_by_sampling(logits, n, k, scratch);
}

static inline int weight_bucket(float w)
{
    uint32_t bits;
    memcpy(&bits, &w, sizeof bits);
    int b = (int)(bits >> KEY_SHIFT);
    return b < WEIGHT_BUCKETS ? b : WEIGHT_BUCKETS - 1;  /* w <= 1, but never trust it */
}

float select_nucleus_floor(const float *w, int n, double total, double top_p, float *scratch)
{
    const double target = top_p * total;
    /* Light tokens never reach the nucleus: all tokens lighter than
     * (1 - top_p) * total / n together weigh less than the (1 - top_p)
     * share that may be cut, so none of them can be needed to reach
     * top_p. Half of that is a safe floor; it skips most of a peaked
     * distribution. */
    const float light = (float)(0.5 * (1.0 - top_p) * total / n);

    /* Keep only the heavy weights (light > 0, so no weight of 0 is among
     * them), in scratch. */
    int heavy = gather_at_least(w, n, light, count_at_least(w, n, light), scratch);
    float *h = scratch;

    /* Their mass per bucket. Two interleaved histograms halve the chains of
     * dependent additions when neighbours fall in the same bucket. */
    double mass[2][WEIGHT_BUCKETS];
    memset(mass, 0, sizeof mass);
    for (int i = 0; i < heavy; i++)
        mass[i & 1][weight_bucket(h[i])] += h[i];

    /* From the top, the first non-empty bucket where the mass reaches the
     * target holds the cut; `above` is the mass of the buckets before it.
     * The heavy mass exceeds the target (see above), so only rounding could
     * run past the end: the loop then stops at the lowest non-empty bucket,
     * and the quickselect keeps all of it. The largest weight, 1, is heavy,
     * so some bucket is non-empty. */
    double above = 0.0, bucket_mass = 0.0;
    int bucket = -1;
    for (int b = WEIGHT_BUCKETS - 1; b >= 0; b--) {
        double m = mass[0][b] + mass[1][b];
        if (m == 0.0)
            continue;
        above += bucket_mass;
        bucket = b;
        bucket_mass = m;
        if (above + bucket_mass >= target)
            break;
    }

    /* The bucket's weights, then the exact cut among them. */
    int m = 0;
    for (int i = 0; i < heavy; i++) {
        float x = h[i];
        h[m] = x;
        m += weight_bucket(x) == bucket;
    }
    return quickselect_threshold(h, m, target, above, true);
}
