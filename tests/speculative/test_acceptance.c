/* The speculative sampling rule on its own: for made-up target and draft
 * distributions p and q, drawing x ~ q and applying speculative_accept must
 * yield tokens distributed exactly as p. A chi-square test over many draws
 * checks it, and the same test is shown to catch two wrong rules (keep x
 * when a fresh draw from p agrees, else draw again; on rejection draw from p
 * instead of the residual). */
#include <math.h>
#include <string.h>

#include "speculative/speculative.h"
#include "tap.h"

#define VOCAB 6
#define DRAWS 200000

typedef enum { RULE_EXACT, RULE_MATCH_OR_REDRAW, RULE_NO_RESIDUAL } rule;

static int32_t draw(sampler *s, const float *probs)
{
    return sampler_sample_from_probs(s, probs, VOCAB);
}

static int32_t one_token(sampler *s, rule r, const float *p, const float *q)
{
    float work[VOCAB];
    int32_t x = draw(s, q);
    switch (r) {
    case RULE_EXACT: {
        memcpy(work, p, sizeof work);
        int32_t t = speculative_accept(s, work, q, x, VOCAB);
        return t == SPECULATIVE_ACCEPTED ? x : t;
    }
    case RULE_MATCH_OR_REDRAW: {
        /* keep x when a draw from p agrees, else draw again from p */
        int32_t y = draw(s, p);
        return x == y ? x : draw(s, p);
    }
    case RULE_NO_RESIDUAL: {
        double ratio = q[x] > 0 ? p[x] / q[x] : 0;
        return sampler_uniform(s) < ratio ? x : draw(s, p);
    }
    }
    return -1;
}

/* Chi-square statistic of the counts against p. */
static double chi_square(const long *counts, const float *p, long n)
{
    double chi = 0;
    for (int v = 0; v < VOCAB; v++) {
        double e = p[v] * (double)n;
        if (e > 0)
            chi += (counts[v] - e) * (counts[v] - e) / e;
        else if (counts[v] > 0)
            chi += INFINITY;
    }
    return chi;
}

static double run(rule r, const float *p, const float *q, uint64_t seed)
{
    sampling_params sp = { .temperature = 1.0f, .top_p = 1.0f, .seed = seed };
    sampler *s;
    sampler_new(&sp, VOCAB, &s, NULL);
    long counts[VOCAB] = { 0 };
    for (long i = 0; i < DRAWS; i++)
        counts[one_token(s, r, p, q)]++;
    sampler_free(s);
    return chi_square(counts, p, DRAWS);
}

int main(void)
{
    /* 5 degrees of freedom: P(chi2 > 25) < 1.4e-4, so an exact rule passes
     * practically always and a biased one (chi2 in the thousands here)
     * fails. */
    const double limit = 25.0;
    static const struct { const char *name; float p[VOCAB], q[VOCAB]; } cases[] = {
        { "draft close to target", { .30f, .25f, .20f, .15f, .07f, .03f }, { .28f, .27f, .18f, .16f, .08f, .03f } },
        { "draft overconfident", { .20f, .20f, .20f, .20f, .10f, .10f }, { .70f, .10f, .05f, .05f, .05f, .05f } },
        { "draft misses tokens", { .10f, .40f, .00f, .30f, .20f, .00f }, { .50f, .00f, .25f, .25f, .00f, .00f } },
        { "identical", { .5f, .1f, .1f, .1f, .1f, .1f }, { .5f, .1f, .1f, .1f, .1f, .1f } },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double chi = run(RULE_EXACT, cases[i].p, cases[i].q, 1000 + i);
        tap_ok(chi < limit, "exact rule, %s: chi-square %.1f < %.0f", cases[i].name, chi, limit);
    }
    /* The test has teeth: wrong rules fail it on a case where p != q. */
    double chi = run(RULE_NO_RESIDUAL, cases[1].p, cases[1].q, 7);
    tap_ok(chi > limit, "rule without the residual is caught: chi-square %.1f", chi);
    chi = run(RULE_MATCH_OR_REDRAW, cases[1].p, cases[1].q, 8);
    tap_ok(chi > limit, "match-or-redraw rule is caught: chi-square %.1f", chi);
    /* And the rule keeps as many proposals as theory allows (an "always
     * draw from p" rule would be exact but never keep one). */
    sampling_params sp = { .temperature = 1.0f, .top_p = 1.0f, .seed = 3 };
    sampler *s;
    sampler_new(&sp, VOCAB, &s, NULL);
    long kept = 0;
    for (long i = 0; i < DRAWS; i++) {
        float work[VOCAB];
        memcpy(work, cases[0].p, sizeof work);
        int32_t x = draw(s, cases[0].q);
        kept += speculative_accept(s, work, cases[0].q, x, VOCAB) == SPECULATIVE_ACCEPTED;
    }
    sampler_free(s);
    /* Expected acceptance: sum_x min(p(x), q(x)) = 0.96 for case 0. */
    double rate = (double)kept / DRAWS;
    tap_ok(fabs(rate - 0.96) < 0.005, "acceptance rate %.4f is sum min(p, q) = 0.96", rate);
    return tap_done();
}
