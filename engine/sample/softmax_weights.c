#include "sample/softmax_weights.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* The loops below are compiled (meson.build) with -fno-trapping-math,
 * without which GCC will not turn their float selects into vector blends,
 * and on x86-64 also cloned for AVX2 and AVX-512, picked at load time.
 * Floating-point contraction stays off (ISO C mode), so every clone gives
 * the same bits and a seed gives the same tokens on every machine. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ACROSS_ISAS __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#ifndef ACROSS_ISAS
#define ACROSS_ISAS
#endif

/* Lane count of the explicit-lane loops: 16 floats fill one AVX-512
 * register, two AVX2 or four SSE ones. */
enum { LANES = 16 };
/* Block of the blocked sum: short enough that drawing rescans little,
 * long enough that the per-block work is negligible. */
enum { SUM_BLOCK = 512 };

/* e^x for x <= 0 (x may be -inf): relative error about 1e-7, results
 * under FLT_MIN (x < -87) flush to 0. Plain arithmetic and selects, so that
 * loops calling it vectorise. */
static inline float exp_nonpositive(float x)
{
    /* Cody-Waite reduction x = n ln2 + r, |r| <= ln2 / 2 (ln2 split in a
     * part exact in float and a correction), then e^r by its Taylor series
     * to r^7 (truncation error under 2e-9 at |r| = 0.347) and 2^n built in
     * the exponent bits. Clamping first keeps 2^n a normal float and maps
     * -inf to a finite value; the final select restores 0 there. */
    const float clamped = x < -87.0f ? -87.0f : x;
    /* Round to nearest by adding 1.5 * 2^23 (no SSE4.1 round needed). */
    const float shifter = 12582912.0f;
    float n = (clamped * 1.44269504088896341f + shifter) - shifter;
    float r = clamped - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * (r * r) + r + 1.0f;
    int32_t exponent = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &exponent, sizeof scale);
    float y = p * scale;
    return x < -87.0f ? 0.0f : y;
}

/* A signed integer with the order of the float (-0 just below +0; NaNs
 * beyond the infinities: positive ones above +inf, negative ones below
 * -inf). Integer min/max reductions vectorise where float ones, which must
 * respect NaN, do not. The transform is its own inverse. */
static inline int32_t signed_order_key(float x)
{
    int32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits ^ ((bits >> 31) & 0x7fffffff);
}

static inline float from_signed_order_key(int32_t key)
{
    int32_t bits = key ^ ((key >> 31) & 0x7fffffff);
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

ACROSS_ISAS float logits_max(const float *x, int n, bool *nan_seen)
{
    int32_t highest = INT32_MIN, lowest = INT32_MAX;
    for (int i = 0; i < n; i++) {
        int32_t key = signed_order_key(x[i]);
        highest = key > highest ? key : highest;
        lowest = key < lowest ? key : lowest;
    }
    *nan_seen = highest > signed_order_key(INFINITY) || lowest < signed_order_key(-INFINITY);
    return from_signed_order_key(highest);
}

/* Scans in blocks whose test vectorises, then finds the index within the
 * block that has one. */
enum { SCAN_BLOCK = 64 };

ACROSS_ISAS int first_greater(const float *x, int n, float v)
{
    int b = 0;
    for (; b + SCAN_BLOCK <= n; b += SCAN_BLOCK) {
        int any = 0;
        for (int k = 0; k < SCAN_BLOCK; k++)
            any |= x[b + k] > v;
        if (any)
            break;
    }
    for (int i = b; i < n; i++)
        if (x[i] > v)
            return i;
    return n;
}

ACROSS_ISAS int first_equal(const float *x, int n, float v)
{
    int b = 0;
    for (; b + SCAN_BLOCK <= n; b += SCAN_BLOCK) {
        int any = 0;
        for (int k = 0; k < SCAN_BLOCK; k++)
            any |= x[b + k] == v;
        if (any)
            break;
    }
    for (int i = b; i < n; i++)
        if (x[i] == v)
            return i;
    return n;
}

ACROSS_ISAS int count_at_least(const float *x, int n, float v)
{
    int count = 0;
    for (int i = 0; i < n; i++)
        count += x[i] >= v;
    return count;
}

ACROSS_ISAS void softmax_weights(const float *logits, int n, float max, float inv_t,
                     float logit_floor, float weight_floor, float *out)
{
    for (int i = 0; i < n; i++) {
        float l = logits[i];
        float w = exp_nonpositive((l - max) * inv_t);
        int keep = (l >= logit_floor) & (w >= weight_floor);
        out[i] = keep ? w : 0.0f;
    }
}

ACROSS_ISAS void apply_weight_floor(float *w, int n, float floor)
{
    for (int i = 0; i < n; i++)
        w[i] = w[i] >= floor ? w[i] : 0.0f;
}

/* One block's sum: LANES running sums in double, combined pairwise. */
ACROSS_ISAS static double block_sum(const float *w, int n)
{
    double lane[LANES] = { 0 };
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++)
            lane[k] += (double)w[i + k];
    double tail = 0.0;
    for (; i < n; i++)
        tail += (double)w[i];
    for (int width = LANES / 2; width > 0; width /= 2)
        for (int k = 0; k < width; k++)
            lane[k] += lane[k + width];
    return lane[0] + tail;
}

double weights_sum(const float *w, int n)
{
    double total = 0.0;
    for (int b = 0; b < n; b += SUM_BLOCK)
        total += block_sum(w + b, n - b < SUM_BLOCK ? n - b : SUM_BLOCK);
    return total;
}

int32_t weights_draw(const float *w, int n, double total, double u)
{
    const double target = u * total;
    double running = 0.0;
    for (int b = 0; b < n; b += SUM_BLOCK) {
        int len = n - b < SUM_BLOCK ? n - b : SUM_BLOCK;
        double block = block_sum(w + b, len);
        if (running + block > target) {
            /* The draw falls in this block (so it holds a positive weight):
             * walk it one weight at a time. */
            int32_t last_positive = -1;
            for (int i = b; i < b + len; i++) {
                if (w[i] > 0.0f) {
                    running += w[i];
                    last_positive = i;
                    if (running > target)
                        return i;
                }
            }
            return last_positive;  /* the block's order of addition rounded */
        }
        running += block;
    }
    /* Only u * total rounding up to total gets here: the last positive. */
    for (int i = n - 1; i >= 0; i--)
        if (w[i] > 0.0f)
            return i;
    return -1;
}
