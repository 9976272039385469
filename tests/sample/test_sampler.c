/* The sampler: greedy, reproducibility, the distribution it draws from
 * (chi-square against softmax(logits / T)), the exact token sets top-k,
 * top-p and min-p keep, the order they apply in, and a randomized
 * comparison against a plain sort-based reference of transformers'
 * warpers. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sample/rng.h"
#include "sample/sampler.h"
#include "sample/select.h"
#include "sample/softmax_weights.h"
#include "tap.h"

#define N_ELEMS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static sampler *make(float temperature, int top_k, float top_p, float min_p,
                     uint64_t seed, int vocab)
{
    sampling_params p = { temperature, top_k, top_p, min_p, seed };
    sampler *s = NULL;
    alm_error err = { 0 };
    if (sampler_new(&p, vocab, &s, &err) < 0) {
        tap_diag("sampler_new failed: %s", err.message);
        return NULL;
    }
    return s;
}

/* probs of the given sampler; true when exactly the listed ids are > 0 and
 * the whole vector sums to 1. */
static bool keeps_exactly(float temperature, int top_k, float top_p, float min_p,
                          const float *logits, int vocab, const int *ids, int n_ids)
{
    sampler *s = make(temperature, top_k, top_p, min_p, 1, vocab);
    float *probs = calloc((size_t)vocab, sizeof *probs);
    bool ok = s && probs && sampler_probs(s, logits, vocab, probs) == 0;
    double sum = 0.0;
    int n_kept = 0;
    for (int i = 0; ok && i < vocab; i++) {
        sum += probs[i];
        if (probs[i] > 0.0f) {
            n_kept++;
            bool listed = false;
            for (int j = 0; j < n_ids; j++)
                listed |= ids[j] == i;
            if (!listed) {
                tap_diag("token %d kept (p=%g) but not expected", i, (double)probs[i]);
                ok = false;
            }
        }
    }
    if (ok && n_kept != n_ids) {
        tap_diag("%d tokens kept, %d expected", n_kept, n_ids);
        ok = false;
    }
    if (ok && fabs(sum - 1.0) > 1e-5) {
        tap_diag("probabilities sum to %.9f", sum);
        ok = false;
    }
    free(probs);
    sampler_free(s);
    return ok;
}

static void softmax_scaled(const float *logits, int n, double temperature, double *out)
{
    double max = -INFINITY, sum = 0.0;
    for (int i = 0; i < n; i++)
        if (logits[i] > max)
            max = logits[i];
    for (int i = 0; i < n; i++)
        sum += out[i] = exp((logits[i] - max) / temperature);
    for (int i = 0; i < n; i++)
        out[i] /= sum;
}

/* Upper 1e-6 quantile of chi-square with df degrees of freedom
 * (Wilson-Hilferty; z = 4.753 for a one-sided 1e-6 tail). */
static double chi2_critical(int df)
{
    double a = 2.0 / (9.0 * df);
    double c = 1.0 - a + 4.753 * sqrt(a);
    return df * c * c * c;
}

static double chi_square(const long *counts, const double *p, int n, long draws)
{
    double chi = 0.0;
    for (int i = 0; i < n; i++) {
        if (p[i] <= 0.0)
            continue;
        double expected = p[i] * (double)draws;
        chi += (counts[i] - expected) * (counts[i] - expected) / expected;
    }
    return chi;
}

static int support(const double *p, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += p[i] > 0.0;
    return k;
}

static void test_params_validation(void)
{
    const sampling_params bad[] = {
        { -0.5f, 0, 1.0f, 0.0f, 0 },
        { NAN, 0, 1.0f, 0.0f, 0 },
        { INFINITY, 0, 1.0f, 0.0f, 0 },
        { 1e-40f, 0, 1.0f, 0.0f, 0 },
        { 1.0f, -1, 1.0f, 0.0f, 0 },
        { 1.0f, 0, 1.5f, 0.0f, 0 },
        { 1.0f, 0, -0.1f, 0.0f, 0 },
        { 1.0f, 0, NAN, 0.0f, 0 },
        { 1.0f, 0, 1.0f, -0.1f, 0 },
        { 1.0f, 0, 1.0f, 1.1f, 0 },
    };
    for (int i = 0; i < N_ELEMS(bad); i++) {
        sampler *s = NULL;
        alm_error err = { 0 };
        int r = sampler_new(&bad[i], 100, &s, &err);
        tap_ok(r == -EINVAL && s == NULL && err.message[0] != '\0',
               "invalid params #%d rejected: %s", i, err.message);
    }
    sampling_params good = sampling_params_greedy();
    sampler *s = NULL;
    alm_error err = { 0 };
    tap_ok(sampler_new(&good, 0, &s, &err) == -EINVAL, "vocabulary 0 rejected: %s",
           err.message);
    good = (sampling_params){ 1.0f, 0, 0.0f, 1.0f, 7 };
    tap_ok(sampler_new(&good, 10, &s, &err) == 0, "edge values top_p 0, min_p 1 accepted");
    tap_ok(sampler_get_params(s)->seed == 7, "params are kept");
    sampler_free(s);
}

static void test_greedy(void)
{
    const float logits[] = { 0.5f, 3.0f, -INFINITY, 3.0f, 2.9f, 3.0f };
    sampler *s = make(0.0f, 0, 1.0f, 0.0f, 1, 6);
    tap_ok(sampler_sample(s, logits, 6) == 1, "greedy: argmax, lowest id on exact ties");
    float probs[6];
    tap_ok(sampler_probs(s, logits, 6, probs) == 0 && probs[1] == 1.0f && probs[0] == 0.0f &&
               probs[3] == 0.0f && probs[5] == 0.0f,
           "greedy probs: one-hot on the argmax");
    /* Greedy ignores the filters and the random state. */
    sampler_free(s);
    s = make(0.0f, 3, 0.5f, 0.2f, 99, 6);
    bool same = true;
    for (int i = 0; i < 100; i++)
        same &= sampler_sample(s, logits, 6) == 1;
    tap_ok(same, "greedy: the same token every time, whatever the filters");

    /* A larger random vocabulary: argmax agrees with a plain scan. */
    enum { V = 50000 };
    float *big = malloc(V * sizeof *big);
    rng r;
    rng_seed(&r, 5);
    int best = 0;
    for (int i = 0; i < V; i++) {
        big[i] = (float)(rng_uniform(&r) * 40.0 - 20.0);
        if (big[i] > big[best])
            best = i;
    }
    sampler_free(s);
    s = make(0.0f, 0, 1.0f, 0.0f, 1, V);
    tap_ok(sampler_sample(s, big, V) == best, "greedy over %d tokens = argmax %d", V, best);
    big[V - 1] = big[best];
    tap_ok(sampler_sample(s, big, V) == best, "tie with the last token: the lower id wins");
    free(big);
    sampler_free(s);
}

static void test_invalid_logits(void)
{
    sampler *greedy = make(0.0f, 0, 1.0f, 0.0f, 1, 4);
    sampler *sampling = make(0.8f, 2, 0.9f, 0.05f, 1, 4);
    const float with_nan[] = { 0.0f, NAN, 1.0f, 2.0f };
    const float with_inf[] = { 0.0f, INFINITY, 1.0f, 2.0f };
    const float all_masked[] = { -INFINITY, -INFINITY, -INFINITY, -INFINITY };
    const float fine[] = { 0.0f, 1.0f, 2.0f, 3.0f };
    float probs[4];
    sampler *both[] = { greedy, sampling };
    for (int i = 0; i < 2; i++) {
        const char *mode = i ? "sampling" : "greedy";
        tap_ok(sampler_sample(both[i], with_nan, 4) == -EINVAL, "%s: NaN logit rejected", mode);
        tap_ok(sampler_sample(both[i], with_inf, 4) == -EINVAL, "%s: +inf logit rejected", mode);
        tap_ok(sampler_sample(both[i], all_masked, 4) == -EINVAL,
               "%s: every token masked is rejected", mode);
        tap_ok(sampler_probs(both[i], with_nan, 4, probs) == -EINVAL,
               "%s: probs rejects NaN", mode);
        tap_ok(sampler_sample(both[i], fine, 5) == -EINVAL &&
                   sampler_sample(both[i], fine, 0) == -EINVAL,
               "%s: vocabulary outside 1..max_vocab rejected", mode);
    }
    sampler_free(greedy);
    sampler_free(sampling);
}

static void test_reproducibility(void)
{
    /* Known answers of xoshiro256** seeded through splitmix64, computed with
     * an independent implementation: the stream is the same everywhere. */
    rng r;
    rng_seed(&r, 0);
    uint64_t a = rng_next(&r), b = rng_next(&r);
    tap_ok(a == 0x99ec5f36cb75f2b4u && b == 0xbf6e1f784956452au,
           "rng: known output for seed 0");
    rng_seed(&r, 42);
    tap_ok(rng_next(&r) == 0x15780b2e0c2ec716u, "rng: known output for seed 42");

    enum { V = 1000, N = 2000 };
    float logits[V];
    for (int i = 0; i < V; i++)
        logits[i] = (float)sin(i * 0.37) * 3.0f;
    sampler *s1 = make(1.0f, 0, 1.0f, 0.0f, 1234, V);
    sampler *s2 = make(1.0f, 0, 1.0f, 0.0f, 1234, V);
    sampler *s3 = make(1.0f, 0, 1.0f, 0.0f, 1235, V);
    int32_t *seq1 = malloc(N * sizeof *seq1);
    bool same = true;
    int differ = 0;
    for (int i = 0; i < N; i++) {
        seq1[i] = sampler_sample(s1, logits, V);
        same &= seq1[i] == sampler_sample(s2, logits, V);
        differ += seq1[i] != sampler_sample(s3, logits, V);
    }
    tap_ok(same, "same seed: same %d tokens", N);
    tap_ok(differ > N / 2, "different seeds: %d of %d tokens differ", differ, N);
    sampler_reseed(s3, 1234);
    same = true;
    for (int i = 0; i < N; i++)
        same &= seq1[i] == sampler_sample(s3, logits, V);
    tap_ok(same, "reseed restarts the stream");
    free(seq1);
    sampler_free(s1);
    sampler_free(s2);
    sampler_free(s3);
}

/* Draws from the sampler and checks the counts against expected (chi-square
 * at a 1e-6 false-alarm level); also checks that they do NOT fit `wrong`
 * when given, so the test has power. */
static void check_draws(sampler *s, const float *logits, int vocab, const double *expected,
                        const double *wrong, long draws, const char *what)
{
    long *counts = calloc((size_t)vocab, sizeof *counts);
    bool valid = true;
    for (long i = 0; i < draws; i++) {
        int32_t id = sampler_sample(s, logits, vocab);
        if (id < 0 || id >= vocab) {
            valid = false;
            break;
        }
        counts[id]++;
    }
    int outside = 0;
    for (int i = 0; i < vocab; i++)
        outside += expected[i] <= 0.0 && counts[i] > 0;
    double chi = chi_square(counts, expected, vocab, draws);
    double critical = chi2_critical(support(expected, vocab) - 1);
    tap_ok(valid && outside == 0 && chi < critical,
           "%s: %ld draws fit (chi-square %.1f < %.1f, %d outside the support)", what,
           draws, chi, critical, outside);
    if (wrong) {
        double chi_wrong = chi_square(counts, wrong, vocab, draws);
        tap_ok(chi_wrong > 10 * critical, "%s: and do not fit the wrong distribution (%.0f)",
               what, chi_wrong);
    }
    free(counts);
}

static void test_distribution(void)
{
    const float logits[] = { 1.0f, 2.5f, -0.5f, 0.0f, 3.0f, 1.5f, -2.0f, 2.0f, 0.7f, -INFINITY };
    enum { V = N_ELEMS(logits) };
    double plain[V];
    softmax_scaled(logits, V, 1.0, plain);
    const float temperatures[] = { 0.7f, 1.3f };
    for (int t = 0; t < 2; t++) {
        double expected[V];
        softmax_scaled(logits, V, temperatures[t], expected);
        sampler *s = make(temperatures[t], 0, 1.0f, 0.0f, 77 + t, V);
        float probs[V];
        double max_err = 0.0;
        sampler_probs(s, logits, V, probs);
        for (int i = 0; i < V; i++)
            max_err = fmax(max_err, fabs(probs[i] - expected[i]));
        tap_ok(max_err < 1e-6, "T=%.1f: probs = softmax(logits / T) (max error %.2g)",
               (double)temperatures[t], max_err);
        char what[64];
        snprintf(what, sizeof what, "T=%.1f", (double)temperatures[t]);
        check_draws(s, logits, V, expected, plain, 200000, what);
        sampler_free(s);
    }

    /* With filters, draws follow sampler_probs (the distribution speculative
     * sampling reasons about). */
    sampler *s = make(0.9f, 6, 0.9f, 0.05f, 5, V);
    float probs[V];
    double expected[V];
    sampler_probs(s, logits, V, probs);
    for (int i = 0; i < V; i++)
        expected[i] = probs[i];
    check_draws(s, logits, V, expected, NULL, 100000, "top-k 6, top-p 0.9, min-p 0.05");
    sampler_free(s);

    /* Explicit weights, not normalised, with zeros that must never come up. */
    const float weights[] = { 0.0f, 1.0f, 3.0f, 0.0f, 4.0f };
    const double weights_expected[] = { 0.0, 0.125, 0.375, 0.0, 0.5 };
    s = make(1.0f, 0, 1.0f, 0.0f, 11, 5);
    long counts[5] = { 0 };
    bool valid = true;
    for (long i = 0; i < 100000; i++) {
        int32_t id = sampler_sample_from_probs(s, weights, 5);
        if (id < 0 || id >= 5) {
            valid = false;
            break;
        }
        counts[id]++;
    }
    double chi = chi_square(counts, weights_expected, 5, 100000);
    tap_ok(valid && counts[0] == 0 && counts[3] == 0 && chi < chi2_critical(2),
           "sample_from_probs: follows unnormalised weights, never a zero (chi-square %.1f)",
           chi);
    const float negative[] = { 0.5f, -0.1f, 0.6f };
    const float zeros[] = { 0.0f, 0.0f };
    const float nan_weight[] = { 0.5f, NAN };
    tap_ok(sampler_sample_from_probs(s, negative, 3) == -EINVAL &&
               sampler_sample_from_probs(s, zeros, 2) == -EINVAL &&
               sampler_sample_from_probs(s, nan_weight, 2) == -EINVAL,
           "sample_from_probs: negative, NaN or all-zero weights rejected");
    double sum = 0.0, lo = 1.0, hi = 0.0;
    for (int i = 0; i < 100000; i++) {
        double u = sampler_uniform(s);
        sum += u;
        lo = fmin(lo, u);
        hi = fmax(hi, u);
    }
    tap_ok(lo >= 0.0 && hi < 1.0 && fabs(sum / 100000 - 0.5) < 0.005,
           "uniform: in [0, 1), mean %.4f", sum / 100000);
    sampler_free(s);
}

static void test_top_k(void)
{
    const float l[] = { 1.0f, 5.0f, 3.0f, 5.0f, 2.0f, 4.0f };
    enum { V = N_ELEMS(l) };
    tap_ok(keeps_exactly(1.0f, 2, 1.0f, 0.0f, l, V, (int[]){ 1, 3 }, 2), "top-k 2");
    tap_ok(keeps_exactly(1.0f, 1, 1.0f, 0.0f, l, V, (int[]){ 1, 3 }, 2),
           "top-k 1 with a tie at the top keeps both (as transformers)");
    tap_ok(keeps_exactly(1.0f, 3, 1.0f, 0.0f, l, V, (int[]){ 1, 3, 5 }, 3), "top-k 3");
    tap_ok(keeps_exactly(1.0f, 6, 1.0f, 0.0f, l, V, (int[]){ 0, 1, 2, 3, 4, 5 }, 6),
           "top-k = vocabulary keeps all");
    tap_ok(keeps_exactly(1.0f, 1000, 1.0f, 0.0f, l, V, (int[]){ 0, 1, 2, 3, 4, 5 }, 6),
           "top-k > vocabulary keeps all");
    const float tie[] = { 5.0f, 4.0f, 3.0f, 4.0f };
    tap_ok(keeps_exactly(1.0f, 2, 1.0f, 0.0f, tie, 4, (int[]){ 0, 1, 3 }, 3),
           "top-k 2 with a tie at the cut keeps the whole tie");
    const float masked[] = { -INFINITY, 2.0f, -INFINITY, -INFINITY };
    tap_ok(keeps_exactly(1.0f, 3, 1.0f, 0.0f, masked, 4, (int[]){ 1 }, 1),
           "top-k larger than the unmasked tokens: -inf tokens keep probability 0");
    const float equal[] = { 0.5f, 0.5f, 0.5f, 0.5f, 0.5f };
    tap_ok(keeps_exactly(1.0f, 2, 1.0f, 0.0f, equal, 5, (int[]){ 0, 1, 2, 3, 4 }, 5),
           "top-k on all-equal logits keeps all");

    /* Sampling never leaves the set. */
    sampler *s = make(2.0f, 2, 1.0f, 0.0f, 3, V);
    bool inside = true;
    int seen1 = 0, seen3 = 0;
    for (int i = 0; i < 5000; i++) {
        int32_t id = sampler_sample(s, l, V);
        inside &= id == 1 || id == 3;
        seen1 += id == 1;
        seen3 += id == 3;
    }
    tap_ok(inside && seen1 > 2000 && seen3 > 2000, "top-k 2: draws stay in the set (%d/%d)",
           seen1, seen3);
    sampler_free(s);

    /* T > 0 with top-k 1 is greedy. */
    const float one[] = { 0.1f, 0.3f, 0.2f };
    s = make(5.0f, 1, 1.0f, 0.0f, 3, 3);
    bool always = true;
    for (int i = 0; i < 1000; i++)
        always &= sampler_sample(s, one, 3) == 1;
    tap_ok(always, "top-k 1 always draws the argmax");
    sampler_free(s);
}

/* Logits whose softmax is the given probabilities. */
static void logits_of(const double *p, int n, float *out)
{
    for (int i = 0; i < n; i++)
        out[i] = p[i] > 0.0 ? (float)log(p[i]) : -INFINITY;
}

static void test_top_p(void)
{
    /* Probabilities 0.15, 0.5, 0.05, 0.3 (ids 1, 3, 0, 2 by rank). */
    const double p[] = { 0.15, 0.5, 0.05, 0.3 };
    float l[4];
    logits_of(p, 4, l);
    tap_ok(keeps_exactly(1.0f, 0, 0.45f, 0.0f, l, 4, (int[]){ 1 }, 1),
           "top-p 0.45: the top token alone reaches it");
    tap_ok(keeps_exactly(1.0f, 0, 0.55f, 0.0f, l, 4, (int[]){ 1, 3 }, 2),
           "top-p 0.55: two tokens");
    tap_ok(keeps_exactly(1.0f, 0, 0.79f, 0.0f, l, 4, (int[]){ 1, 3 }, 2),
           "top-p 0.79: still two (0.8 >= 0.79)");
    tap_ok(keeps_exactly(1.0f, 0, 0.81f, 0.0f, l, 4, (int[]){ 0, 1, 3 }, 3),
           "top-p 0.81: three");
    tap_ok(keeps_exactly(1.0f, 0, 0.96f, 0.0f, l, 4, (int[]){ 0, 1, 2, 3 }, 4),
           "top-p 0.96: all four");
    tap_ok(keeps_exactly(1.0f, 0, 0.01f, 0.0f, l, 4, (int[]){ 1 }, 1),
           "top-p so small that only one token stays");
    tap_ok(keeps_exactly(1.0f, 0, 0.0f, 0.0f, l, 4, (int[]){ 1 }, 1),
           "top-p 0: the most probable token stays");

    /* Renormalisation: the kept probabilities are 0.5 / 0.8 and 0.3 / 0.8. */
    sampler *s = make(1.0f, 0, 0.7f, 0.0f, 1, 4);
    float probs[4];
    sampler_probs(s, l, 4, probs);
    tap_ok(fabs(probs[1] - 0.625) < 1e-6 && fabs(probs[3] - 0.375) < 1e-6,
           "top-p renormalises the kept tokens (%.6f, %.6f)", (double)probs[1],
           (double)probs[3]);
    sampler_free(s);

    /* Ties at the cut: 0.4 then three tokens of 0.2. Top-p 0.5 needs one
     * of them; all three are kept (transformers would keep an arbitrary
     * one, depending on torch.sort's order among equal values). */
    const double tied[] = { 0.2, 0.4, 0.2, 0.2 };
    logits_of(tied, 4, l);
    tap_ok(keeps_exactly(1.0f, 0, 0.5f, 0.0f, l, 4, (int[]){ 0, 1, 2, 3 }, 4),
           "top-p with a tie at the cut keeps the whole tie");
    tap_ok(keeps_exactly(1.0f, 0, 0.3f, 0.0f, l, 4, (int[]){ 1 }, 1),
           "top-p that the top token reaches alone leaves the tie out");

    const float equal[] = { 2.0f, 2.0f, 2.0f, 2.0f, 2.0f, 2.0f };
    tap_ok(keeps_exactly(1.0f, 0, 0.3f, 0.0f, equal, 6, (int[]){ 0, 1, 2, 3, 4, 5 }, 6),
           "top-p on all-equal logits keeps all");

    const float masked[] = { -INFINITY, 1.0f, -INFINITY, 0.0f, -INFINITY };
    tap_ok(keeps_exactly(1.0f, 0, 0.99f, 0.0f, masked, 5, (int[]){ 1, 3 }, 2),
           "top-p never keeps -inf tokens");
}

static void test_min_p(void)
{
    /* Weights relative to the maximum: 1, 0.5, 0.2, 0.09. */
    const double p[] = { 0.09, 1.0, 0.5, 0.2 };
    float l[4];
    logits_of(p, 4, l);
    tap_ok(keeps_exactly(1.0f, 0, 1.0f, 0.1f, l, 4, (int[]){ 1, 2, 3 }, 3),
           "min-p 0.1 drops the token at 0.09 of the maximum");
    tap_ok(keeps_exactly(1.0f, 0, 1.0f, 0.21f, l, 4, (int[]){ 1, 2 }, 2), "min-p 0.21");
    tap_ok(keeps_exactly(1.0f, 0, 1.0f, 1.0f, l, 4, (int[]){ 1 }, 1),
           "min-p 1 keeps only the maximum");
    const float equal[] = { -1.0f, -1.0f, -1.0f };
    tap_ok(keeps_exactly(1.0f, 0, 1.0f, 1.0f, equal, 3, (int[]){ 0, 1, 2 }, 3),
           "min-p 1 on all-equal logits keeps all");
    /* After temperature: logits 0, -2, -4 give ratios 1, 0.135, 0.018 at
     * T = 1 but 1, 0.37, 0.135 at T = 2. */
    const float t[] = { 0.0f, -2.0f, -4.0f };
    tap_ok(keeps_exactly(1.0f, 0, 1.0f, 0.1f, t, 3, (int[]){ 0, 1 }, 2), "min-p 0.1 at T=1");
    tap_ok(keeps_exactly(2.0f, 0, 1.0f, 0.1f, t, 3, (int[]){ 0, 1, 2 }, 3),
           "min-p 0.1 at T=2: min-p sees the tempered distribution");
}

static void test_order(void)
{
    /* 0.4, 0.3, 0.2, 0.1. Top-k 2 first leaves 0.571, 0.429, so top-p 0.5
     * then keeps one token; top-p first would have kept two. */
    const double p[] = { 0.1, 0.3, 0.4, 0.2 };
    float l[4];
    logits_of(p, 4, l);
    tap_ok(keeps_exactly(1.0f, 2, 0.5f, 0.0f, l, 4, (int[]){ 2 }, 1),
           "top-p applies to what top-k left (renormalised)");
    /* Temperature first: softmax(2, 1, 0) = 0.665, 0.245, 0.09 keeps two
     * for top-p 0.7; at T = 0.5 it is 0.867, 0.117, 0.016: one. */
    const float t[] = { 1.0f, 2.0f, 0.0f };
    tap_ok(keeps_exactly(1.0f, 0, 0.7f, 0.0f, t, 3, (int[]){ 0, 1 }, 2), "top-p 0.7 at T=1");
    tap_ok(keeps_exactly(0.5f, 0, 0.7f, 0.0f, t, 3, (int[]){ 1 }, 1),
           "top-p 0.7 at T=0.5: temperature applies first");
    /* Min-p after top-p: with 0.4, 0.3, 0.2, 0.1, top-p 0.5 keeps 0.4 and
     * 0.3, and min-p 0.6 (>= 0.24) keeps both; min-p first would have left
     * 0.571, 0.429, of which top-p 0.5 keeps one. */
    logits_of(p, 4, l);
    tap_ok(keeps_exactly(1.0f, 0, 0.5f, 0.6f, l, 4, (int[]){ 1, 2 }, 2),
           "min-p applies after top-p");
}

/* --------------------------------------------------------- the kernels */

static int compare_desc_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

static void test_kernels(void)
{
    /* The exponential against libm's, over the whole range it serves. */
    enum { N = 20001 };
    float *x = malloc(N * sizeof *x), *w = malloc(N * sizeof *w);
    for (int i = 0; i < N; i++)
        x[i] = -87.0f * (float)i / (N - 1);
    softmax_weights(x, N, 0.0f, 1.0f, -INFINITY, 0.0f, w);
    double worst = 0.0;
    for (int i = 0; i < N; i++)
        worst = fmax(worst, fabs(w[i] - exp((double)x[i])) / exp((double)x[i]));
    tap_ok(worst < 3e-7, "exp over [-87, 0]: worst relative error %.2g", worst);
    const float edge[] = { 0.0f, -87.5f, -1000.0f, -INFINITY, -0.0f };
    softmax_weights(edge, 5, 0.0f, 1.0f, -INFINITY, 0.0f, w);
    tap_ok(w[0] == 1.0f && w[1] == 0.0f && w[2] == 0.0f && w[3] == 0.0f && w[4] == 1.0f,
           "exp: 1 at 0, 0 below -87 and at -inf");

    bool nan_seen;
    const float with_nan[] = { 1.0f, -NAN, 2.0f };
    const float with_pos_nan[] = { 1.0f, NAN, 2.0f };
    const float plain[] = { -INFINITY, -3.0f, -0.0f, 0.0f, -1.0f };
    tap_ok(logits_max(plain, 5, &nan_seen) == 0.0f && !nan_seen, "max of ordinary values");
    logits_max(with_nan, 3, &nan_seen);
    tap_ok(nan_seen, "max notices a negative NaN");
    logits_max(with_pos_nan, 3, &nan_seen);
    tap_ok(nan_seen, "max notices a positive NaN");
    tap_ok(first_equal(plain, 5, 0.0f) == 2, "first_equal: -0 == 0, the first wins");
    tap_ok(first_greater(x, N, 0.0f) == N && first_greater(x, N, -1.0f) == 0,
           "first_greater: none, and the first");

    /* k-th largest on every path (heap, histogram, sampling and its
     * fallback) against a sort. */
    enum { V = 20000 };
    float *logits = malloc(V * sizeof *logits), *sorted = malloc(V * sizeof *sorted);
    float *scratch = malloc(V * sizeof *scratch);
    rng r;
    rng_seed(&r, 8);
    const int sizes[] = { 1, 7, 300, 4095, 5000, V };
    const int ks[] = { 1, 2, 40, 256, 257, 1000, 3999 };
    int wrong = 0, cases = 0;
    for (int si = 0; si < N_ELEMS(sizes); si++) {
        for (int shape = 0; shape < 3; shape++) {
            int n = sizes[si];
            for (int i = 0; i < n; i++) {
                double u = rng_uniform(&r) * 20.0 - 10.0;
                /* Continuous, coarse (many ties), or mostly masked. */
                logits[i] = shape == 0 ? (float)u : shape == 1 ? (float)round(u)
                          : rng_uniform(&r) < 0.9 ? -INFINITY : (float)u;
            }
            memcpy(sorted, logits, (size_t)n * sizeof *sorted);
            qsort(sorted, (size_t)n, sizeof *sorted, compare_desc_float);
            for (int ki = 0; ki < N_ELEMS(ks); ki++) {
                if (ks[ki] > n)
                    continue;
                cases++;
                float got = select_kth_largest(logits, n, ks[ki], scratch);
                if (got != sorted[ks[ki] - 1]) {
                    if (wrong++ < 3)
                        tap_diag("n %d shape %d k %d: %g, expected %g", n, shape, ks[ki],
                                 (double)got, (double)sorted[ks[ki] - 1]);
                }
            }
        }
    }
    tap_ok(wrong == 0, "k-th largest: %d cases match a sort", cases);
    /* Every 8th logit large: the sample sees only those, the estimate is too
     * high, and the histogram must take over. */
    for (int i = 0; i < 8192; i++)
        logits[i] = i % 8 == 0 ? 10.0f : (float)(i % 1000) * 0.001f;
    memcpy(sorted, logits, 8192 * sizeof *sorted);
    qsort(sorted, 8192, sizeof *sorted, compare_desc_float);
    tap_ok(select_kth_largest(logits, 8192, 2000, scratch) == sorted[1999],
           "k-th largest when the sample misleads");

    /* Nucleus floor: the defining property, and the same cut whether the
     * scratch is separate or the input itself. */
    for (int i = 0; i < 5000; i++)
        w[i] = (float)exp(-rng_uniform(&r) * 12.0);
    w[17] = 1.0f;
    double total = weights_sum(w, 5000);
    float cut = select_nucleus_floor(w, 5000, total, 0.8, scratch);
    double above = 0.0, at_or_above = 0.0;
    for (int i = 0; i < 5000; i++) {
        above += w[i] > cut ? w[i] : 0.0;
        at_or_above += w[i] >= cut ? w[i] : 0.0;
    }
    tap_ok(above < 0.8 * total && at_or_above >= 0.8 * total,
           "nucleus floor: the tokens above it weigh < 0.8, with it >= 0.8 (%.4f, %.4f)",
           above / total, at_or_above / total);
    tap_ok(select_nucleus_floor(w, 5000, total, 0.8, w) == cut,
           "nucleus floor: same cut when the scratch is the input");
    free(x);
    free(w);
    free(logits);
    free(sorted);
    free(scratch);
}

/* ------------------------------------------------- randomized reference */

static int compare_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* transformers' warpers, written plainly in double: temperature, top-k
 * (scores below the k-th largest removed), top-p (tie groups taken in
 * descending order while the mass before them is < top_p, at least one),
 * min-p (p < min_p * max p removed), softmax. */
static void reference_probs(const float *logits, int vocab, const sampling_params *sp,
                            double *out)
{
    double *score = malloc((size_t)vocab * sizeof *score);
    double *sorted = malloc((size_t)vocab * sizeof *sorted);
    for (int i = 0; i < vocab; i++)
        score[i] = logits[i] / (double)sp->temperature;
    if (sp->top_k > 0 && sp->top_k < vocab) {
        memcpy(sorted, score, (size_t)vocab * sizeof *sorted);
        qsort(sorted, (size_t)vocab, sizeof *sorted, compare_desc);
        double kth = sorted[sp->top_k - 1];
        for (int i = 0; i < vocab; i++)
            if (score[i] < kth)
                score[i] = -INFINITY;
    }
    if (sp->top_p < 1.0f) {
        double max = -INFINITY, sum = 0.0;
        for (int i = 0; i < vocab; i++)
            max = fmax(max, score[i]);
        for (int i = 0; i < vocab; i++)
            sum += sorted[i] = out[i] = exp(score[i] - max);
        qsort(sorted, (size_t)vocab, sizeof *sorted, compare_desc);
        double before = 0.0, cut = sorted[0];
        for (int i = 0; i < vocab;) {
            int j = i;
            double group = 0.0;
            while (j < vocab && sorted[j] == sorted[i])
                group += sorted[j++];
            if (i > 0 && !(before < sp->top_p * sum))
                break;
            cut = sorted[i];
            before += group;
            i = j;
        }
        for (int i = 0; i < vocab; i++)
            if (out[i] < cut)
                score[i] = -INFINITY;
    }
    double max = -INFINITY, sum = 0.0;
    for (int i = 0; i < vocab; i++)
        max = fmax(max, score[i]);
    for (int i = 0; i < vocab; i++) {
        out[i] = exp(score[i] - max);
        if (out[i] < sp->min_p)
            out[i] = 0.0;
        sum += out[i];
    }
    for (int i = 0; i < vocab; i++)
        out[i] /= sum;
    free(score);
    free(sorted);
}

static void test_against_reference(void)
{
    enum { V = 5000, TRIALS = 300 };
    const float temperatures[] = { 0.3f, 0.7f, 1.0f, 1.6f };
    const int top_ks[] = { 0, 1, 7, 40, 256, 257, 900, V };
    const float top_ps[] = { 1.0f, 0.97f, 0.8f, 0.5f, 0.13f, 0.0f };
    const float min_ps[] = { 0.0f, 0.0f, 0.02f, 0.3f };
    float *logits = malloc(V * sizeof *logits);
    float *probs = malloc(V * sizeof *probs);
    double *ref = malloc(V * sizeof *ref);
    rng r;
    rng_seed(&r, 2024);
    int set_mismatch = 0, value_mismatch = 0, sum_off = 0;
    double worst = 0.0;
    for (int trial = 0; trial < TRIALS; trial++) {
        /* One trial in three quantises the logits, which makes many ties;
         * one in three is a few strong tokens over a long flat tail, where
         * the nucleus reaches tokens far lighter than the top one. */
        int kind = trial % 3;
        double spread = 4.0 + rng_uniform(&r) * 10.0;
        for (int i = 0; i < V; i++) {
            double x = (rng_uniform(&r) * 2.0 - 1.0) * spread;
            if (kind == 1)
                x = round(x * 2.0) / 2.0;
            else if (kind == 2)
                x = i < 3 ? 8.0 - i : rng_uniform(&r) * 0.5;
            logits[i] = rng_uniform(&r) < 0.03 ? -INFINITY : (float)x;
        }
        sampling_params sp = {
            temperatures[rng_next(&r) % N_ELEMS(temperatures)],
            top_ks[rng_next(&r) % N_ELEMS(top_ks)],
            top_ps[rng_next(&r) % N_ELEMS(top_ps)],
            min_ps[rng_next(&r) % N_ELEMS(min_ps)],
            (uint64_t)trial,
        };
        sampler *s = NULL;
        if (sampler_new(&sp, V, &s, NULL) < 0 || sampler_probs(s, logits, V, probs) < 0) {
            set_mismatch++;
            sampler_free(s);
            continue;
        }
        reference_probs(logits, V, &sp, ref);
        double sum = 0.0;
        bool reported = false;
        for (int i = 0; i < V; i++) {
            sum += probs[i];
            if ((probs[i] > 0.0f) != (ref[i] > 0.0)) {
                set_mismatch++;
                if (!reported)
                    tap_diag("trial %d (T %g k %d p %g min-p %g): token %d %g vs %g", trial,
                             (double)sp.temperature, sp.top_k, (double)sp.top_p,
                             (double)sp.min_p, i, (double)probs[i], ref[i]);
                reported = true;
            }
            double err = fabs(probs[i] - ref[i]);
            worst = fmax(worst, err);
            value_mismatch += err > 1e-5 + 1e-4 * ref[i];
        }
        sum_off += fabs(sum - 1.0) > 1e-5;
        sampler_free(s);
    }
    tap_ok(set_mismatch == 0, "random trials: kept sets match the reference (%d tokens differ)",
           set_mismatch);
    tap_ok(value_mismatch == 0, "random trials: probabilities match (worst error %.2g)", worst);
    tap_ok(sum_off == 0, "random trials: probs sum to 1 (%d trials off)", sum_off);
    free(logits);
    free(probs);
    free(ref);
}

int main(void)
{
    test_params_validation();
    test_greedy();
    test_invalid_logits();
    test_reproducibility();
    test_distribution();
    test_top_k();
    test_top_p();
    test_min_p();
    test_order();
    test_kernels();
    test_against_reference();
    return tap_done();
}
