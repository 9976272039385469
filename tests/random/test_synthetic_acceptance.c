/* Synthetic acceptance on a tiny random pair (target "tiny", draft
 * "tiny-draft", 4-bit): the target's plain greedy output is recorded, then
 * speculative decoding with the draft's proposals replaced:
 * - the output is the recorded one (greedy speculation is exact, whatever
 *   is proposed);
 * - the fraction of verified proposals kept is the requested rate (0.8 and
 *   0.5 within 0.05 over ~900 proposals; 0 and 1 exactly), and the usual
 *   statistics agree with the hook's counts;
 * - sampling (temperature > 0) is refused. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "alm.h"
#include "speculative/synthetic_acceptance.h"
#include "tap.h"

#define GEN_TOKENS_MAX 1000
#define N_PROMPT 16

static alm_pool *pool;
/* 1000 tokens (about 900 verified proposals at a rate of 0.8: a standard
 * error of 0.013); 400 under the sanitizers, with a wider bound. */
static int gen_tokens = GEN_TOKENS_MAX;
static double slack = 0.05;

static alm_model *build(const char *preset, uint64_t seed)
{
    alm_random_params p = { .bits = 4, .group_size = 64, .seed = seed };
    alm_error err = { 0 };
    alm_model *m = NULL;
    if (alm_model_new_random(preset, &p, NULL, &m, &err) < 0)
        tap_diag("%s: %s", preset, err.message);
    return m;
}

typedef struct pair {
    alm_model *target, *draft;
    int32_t prompt[N_PROMPT];
    int32_t *recorded;
    size_t n_recorded;
} pair;

static alm_generate_params params(int k)
{
    alm_generate_params gp = alm_generate_default_params();
    gp.max_tokens = gen_tokens;
    gp.ignore_eos = true;
    gp.speculative.mode = ALM_SPECULATIVE_DRAFT;
    gp.speculative.num_draft_tokens = k;
    return gp;
}

/* Runs speculative decoding with the rate; checks and reports. */
static void check_rate(pair *pr, double rate, int k, double tolerance)
{
    alm_error err = { 0 };
    alm_seq *ts = NULL, *ds = NULL;
    int cap = N_PROMPT + GEN_TOKENS_MAX + ALM_MAX_DRAFT_TOKENS + 2;
    alm_seq_new(pr->target, cap, &ts, &err);
    alm_seq_new(pr->draft, cap, &ds, &err);
    synthetic_acceptance sa;
    synthetic_acceptance_init(&sa, pr->recorded, pr->n_recorded, N_PROMPT, rate,
                              alm_model_vocab_size(pr->target), 42);
    alm_generate_params gp = params(k);
    int32_t *ids = NULL;
    size_t n = 0;
    alm_generate_stats st;
    int r = synthetic_generate(ts, ds, pool, pr->prompt, N_PROMPT, &gp, &sa, &ids, &n, &st, &err);
    if (!tap_ok(r == 0, "rate %.2f, k %d: ran (%s)", rate, k, r < 0 ? err.message : "ok"))
        goto out;
    tap_ok(n == pr->n_recorded && memcmp(ids, pr->recorded, n * sizeof *ids) == 0,
           "rate %.2f, k %d: output identical to the recorded plain greedy output", rate, k);
    double measured = sa.looked_at ? (double)sa.kept / (double)sa.looked_at : -1;
    const alm_speculative_stats *ss = &st.speculative;
    tap_diag("rate %.2f, k %d: %ld of %ld verified proposals kept (%.3f); %ld of %ld drafted "
             "(acceptance_rate %.3f), %.2f tokens per target pass", rate, k, sa.kept, sa.looked_at,
             measured, ss->accepted, ss->drafted, (double)ss->accepted / (double)ss->drafted,
             (double)(n - 1) / (double)ss->target_passes);
    tap_ok(fabs(measured - rate) <= tolerance, "rate %.2f, k %d: kept %.3f of the verified proposals",
           rate, k, measured);
    tap_ok(ss->accepted == sa.kept && ss->drafted == sa.proposed && sa.looked_at <= ss->drafted,
           "rate %.2f, k %d: the statistics agree with the hook (%ld kept, %ld proposed)", rate, k,
           sa.kept, sa.proposed);
out:
    free(ids);
    alm_seq_free(ts);
    alm_seq_free(ds);
}

int main(void)
{
    if (alm_pool_new(2, &pool) < 0)
        return 1;
    if (getenv("ALM_TEST_SANITIZED")) {
        gen_tokens = 400;
        slack = 0.07;
        tap_diag("sanitized build: %d tokens per run, rates checked within %.2f", gen_tokens, slack);
    }
    pair pr = { .target = build("tiny", 1), .draft = build("tiny-draft", 2) };
    if (!pr.target || !pr.draft)
        return tap_ok(0, "random pair built"), tap_done();
    for (int i = 0; i < N_PROMPT; i++)
        pr.prompt[i] = (int32_t)((i * 131 + 7) % 512);

    /* The record: plain greedy decoding. */
    alm_error err = { 0 };
    alm_seq *ts = NULL, *ds = NULL;
    alm_seq_new(pr.target, N_PROMPT + gen_tokens + 32, &ts, &err);
    alm_generate_params plain = params(4);
    plain.speculative.mode = ALM_SPECULATIVE_OFF;
    int r = alm_generate(ts, NULL, pool, pr.prompt, N_PROMPT, &plain, NULL, NULL, &pr.recorded,
                         &pr.n_recorded, NULL, &err);
    tap_ok(r == 0 && pr.n_recorded == (size_t)gen_tokens, "plain greedy run recorded %zu tokens", pr.n_recorded);

    alm_generate_params spec = params(4);
    check_rate(&pr, 0.8, 4, slack);
    check_rate(&pr, 0.5, 3, slack);
    check_rate(&pr, 0.8, 0, slack);   /* auto draft length */
    check_rate(&pr, 1.0, 4, 0.0);
    check_rate(&pr, 0.0, 2, 0.0);

    /* Sampling has no recorded output to stand in for. */
    synthetic_acceptance sa;
    synthetic_acceptance_init(&sa, pr.recorded, pr.n_recorded, N_PROMPT, 0.8, 512, 1);
    alm_seq_new(pr.draft, N_PROMPT + gen_tokens + 32, &ds, &err);
    spec.sampling.temperature = 0.7f;
    alm_seq_truncate(ts, 0);
    alm_seq_truncate(ds, 0);
    r = synthetic_generate(ts, ds, pool, pr.prompt, N_PROMPT, &spec, &sa, NULL, NULL, NULL, &err);
    tap_ok(r == -EINVAL && strstr(err.message, "greedy"), "temperature 0.7 refused: %s", err.message);
    spec.sampling.temperature = 0.0f;
    synthetic_acceptance_init(&sa, pr.recorded, pr.n_recorded, N_PROMPT, 1.5, 512, 1);
    r = synthetic_generate(ts, ds, pool, pr.prompt, N_PROMPT, &spec, &sa, NULL, NULL, NULL, &err);
    tap_ok(r == -EINVAL && strstr(err.message, "1.5"), "rate 1.5 refused: %s", err.message);

    free(pr.recorded);
    alm_seq_free(ts);
    alm_seq_free(ds);
    alm_model_free(pr.target);
    alm_model_free(pr.draft);
    alm_pool_free(pool);
    return tap_done();
}
