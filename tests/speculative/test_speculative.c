/* Speculative decoding end to end:
 * - greedy: draft-model and n-gram speculation, k = 1..8 and auto, every
 *   reference prompt: ids identical to plain greedy decoding (the 4-bit pair;
 *   the BF16 pair too when the shared folder is there);
 * - a deliberately poor draft (a random tiny model with the same tokenizer)
 *   over a long generation: still identical, only fewer tokens accepted;
 * - an incompatible draft (another vocabulary) is refused with a message;
 * - sampling (temperature 0.8, top-k 4): the joint distribution of the first
 *   two tokens over many seeded runs matches the target's exactly computed
 *   distribution (total variation bound), for draft and n-gram speculation;
 * - the statistics add up. */
#include <errno.h>
#include <math.h>

#include "alm.h"
#include "sample/sampler.h"
#include "tap.h"
#include "test_util.h"

static alm_pool *pool;

static alm_model *load(const char *var, const char *rel)
{
    char *dir = test_path(var, rel);
    alm_error err = { 0 };
    alm_model *m = NULL;
    if (alm_model_load(dir, NULL, &m, &err) < 0)
        tap_diag("%s: %s", dir, err.message);
    free(dir);
    return m;
}

/* Generates from a fresh cache; returns the ids (malloc'ed). */
static int32_t *run(alm_model *target, alm_model *draft, const int32_t *prompt, size_t n_prompt,
                    const alm_generate_params *gp, size_t *n, alm_generate_stats *st)
{
    alm_error err = { 0 };
    alm_seq *ts = NULL, *ds = NULL;
    int cap = (int)n_prompt + gp->max_tokens + ALM_MAX_DRAFT_TOKENS + 2;
    alm_seq_new(target, cap, &ts, &err);
    if (draft)
        alm_seq_new(draft, cap, &ds, &err);
    int32_t *ids = NULL;
    if (alm_generate(ts, ds, pool, prompt, n_prompt, gp, NULL, NULL, &ids, n, st, &err) < 0) {
        tap_diag("generate: %s", err.message);
        ids = NULL;
    }
    alm_seq_free(ts);
    alm_seq_free(ds);
    return ids;
}

static int stats_add_up(const alm_speculative_stats *s, int generated)
{
    long d = 0, a = 0;
    for (int i = 0; i < ALM_MAX_DRAFT_TOKENS; i++) {
        d += s->drafted_by_position[i];
        a += s->accepted_by_position[i];
        if (s->accepted_by_position[i] > s->drafted_by_position[i])
            return 0;
    }
    /* every pass yields its accepted proposals plus one token (the last
     * pass may be cut short by max_tokens) */
    return d == s->drafted && a == s->accepted && a <= d &&
           generated - 1 <= s->accepted + s->target_passes;
}

static void greedy_equal(const char *label, alm_model *target, alm_model *draft,
                         JsonArray *prompts, const int *ks, int n_ks, int draft_vocab)
{
    guint n_prompts = json_array_get_length(prompts);
    if (getenv("ALM_TEST_SANITIZED") && n_prompts > 3) {
        tap_diag("sanitized build: %s checked on 3 of %u prompts", label, n_prompts);
        n_prompts = 3;
    }
    int mismatches = 0, runs = 0, stats_ok = 0;
    long drafted = 0, accepted = 0;
    for (guint i = 0; i < n_prompts; i++) {
        JsonObject *o = json_array_get_object_element(prompts, i);
        size_t n_prompt;
        int32_t *prompt = test_int_array(json_object_get_array_member(o, "prompt_ids"), &n_prompt);
        alm_generate_params gp = alm_generate_default_params();
        gp.max_tokens = 48;
        gp.ignore_eos = true;
        size_t n_plain;
        int32_t *plain = run(target, NULL, prompt, n_prompt, &gp, &n_plain, NULL);
        /* n-gram, and with a draft: draft, hybrid (lookup where it finds a match, else the draft) */
        static const alm_speculative_mode modes[] = { ALM_SPECULATIVE_NGRAM, ALM_SPECULATIVE_DRAFT,
                                                      ALM_SPECULATIVE_HYBRID };
        for (int mode = 0; mode < (draft ? 3 : 1); mode++) {
            for (int j = 0; j < n_ks; j++) {
                gp.speculative.mode = modes[mode];
                gp.speculative.num_draft_tokens = ks[j];
                gp.speculative.draft_vocab = draft_vocab;
                size_t n;
                alm_generate_stats st;
                int32_t *ids = run(target, alm_speculative_uses_draft(gp.speculative.mode) ? draft : NULL,
                                   prompt, n_prompt, &gp, &n, &st);
                runs++;
                if (!ids || !plain || n != n_plain || memcmp(ids, plain, n * sizeof *ids) != 0) {
                    mismatches++;
                    tap_diag("%s prompt %u, %s, k=%d: differs from plain greedy", label, i,
                             alm_speculative_mode_name(modes[mode]), ks[j]);
                }
                stats_ok += ids && stats_add_up(&st.speculative, st.generated_tokens);
                drafted += st.speculative.drafted;
                accepted += st.speculative.accepted;
                free(ids);
            }
        }
        free(plain);
        free(prompt);
    }
    tap_ok(mismatches == 0, "%s: %d speculative greedy runs, all identical to plain greedy (%d differ)",
           label, runs, mismatches);
    tap_ok(stats_ok == runs, "%s: statistics add up in %d of %d runs", label, stats_ok, runs);
    tap_diag("%s: %ld drafted, %ld accepted (%.0f%%)", label, drafted, accepted,
             drafted ? 100.0 * accepted / drafted : 0.0);
}

/* Exact joint distribution of the first two sampled tokens, and the
 * empirical one from seeded speculative runs: their total variation. */
/* ngram: the n-gram length lookup needs (0: the default 3..1); a length
 * longer than the prompt never matches, so hybrid always drafts. */
static double joint_tv(alm_model *target, alm_model *draft, alm_speculative_mode mode,
                       int draft_vocab, int ngram, const int32_t *prompt, size_t n_prompt,
                       int runs)
{
    int vocab = alm_model_vocab_size(target);
    sampling_params sp = { .temperature = 0.8f, .top_k = 4, .top_p = 1.0f, .min_p = 0.0f };
    sampler *s;
    sampler_new(&sp, vocab, &s, NULL);
    float *logits = malloc(sizeof(float) * (size_t)vocab);
    float *p1 = malloc(sizeof(float) * (size_t)vocab);
    float *p2 = malloc(sizeof(float) * (size_t)vocab * 4);
    int32_t first[4];
    int n_first = 0;
    alm_error err = { 0 };
    alm_seq *seq;
    alm_seq_new(target, (int)n_prompt + 4, &seq, &err);
    alm_seq_forward(seq, pool, prompt, (int)n_prompt, 1, logits, &err);
    sampler_probs(s, logits, vocab, p1);
    for (int v = 0; v < vocab && n_first < 4; v++) {
        if (p1[v] > 0) {
            first[n_first] = v;
            alm_seq_truncate(seq, (int)n_prompt);
            alm_seq_forward(seq, pool, &first[n_first], 1, 1, logits, &err);
            sampler_probs(s, logits, vocab, p2 + (size_t)n_first * vocab);
            n_first++;
        }
    }
    alm_seq_free(seq);

    /* counts[i][v]: first token first[i], second v */
    double *counts = calloc((size_t)4 * vocab, sizeof(double));
    alm_generate_params gp = alm_generate_default_params();
    gp.max_tokens = 2;
    gp.ignore_eos = true;
    gp.sampling = (alm_sampling){ 0.8f, 4, 1.0f, 0.0f, 0 };
    gp.speculative.mode = mode;
    gp.speculative.num_draft_tokens = 3;
    gp.speculative.draft_vocab = draft_vocab;
    if (ngram)
        gp.speculative.ngram_min = gp.speculative.ngram_max = ngram;
    int used = 0;
    /* The caches keep the prompt but its last token between runs, so that
     * each run is one prefill token and one speculative step. */
    alm_seq *ts = NULL, *ds = NULL;
    int cap = (int)n_prompt + ALM_MAX_DRAFT_TOKENS + 4;
    alm_seq_new(target, cap, &ts, &err);
    if (draft)
        alm_seq_new(draft, cap, &ds, &err);
    alm_seq_forward(ts, pool, prompt, (int)n_prompt - 1, 0, NULL, &err);
    if (ds)
        alm_seq_forward(ds, pool, prompt, (int)n_prompt - 1, 0, NULL, &err);
    for (int r = 0; r < runs; r++) {
        gp.sampling.seed = (uint64_t)r + 1;
        size_t n = 0;
        int32_t *ids = NULL;
        alm_seq_truncate(ts, (int)n_prompt - 1);
        if (ds && alm_seq_length(ds) > (int)n_prompt - 1)
            alm_seq_truncate(ds, (int)n_prompt - 1);
        if (alm_generate(ts, ds, pool, prompt + n_prompt - 1, 1, &gp, NULL, NULL, &ids, &n,
                         NULL, &err) < 0)
            tap_diag("generate: %s", err.message);
        if (ids && n == 2)
            for (int i = 0; i < n_first; i++)
                if (ids[0] == first[i]) {
                    counts[(size_t)i * vocab + ids[1]] += 1;
                    used++;
                }
        free(ids);
    }
    double tv = 0;
    for (int i = 0; i < n_first; i++)
        for (int v = 0; v < vocab; v++) {
            double exact = (double)p1[first[i]] * p2[(size_t)i * vocab + v];
            tv += fabs(counts[(size_t)i * vocab + v] / runs - exact);
        }
    tv /= 2;
    alm_seq_free(ts);
    alm_seq_free(ds);
    if (used != runs)
        tv = 1.0; /* a first token outside the exact support */
    free(counts);
    free(logits);
    free(p1);
    free(p2);
    sampler_free(s);
    return tv;
}

/* alm_seq_set_vocab_limit: the first n logits exactly as without it, the
 * rest -infinity; out-of-range limits refused. */
static void vocab_limit_checks(alm_model *m)
{
    int vocab = alm_model_vocab_size(m);
    const int32_t prompt[] = { 5, 17, 300, 41, 42 };
    float *full = malloc(sizeof(float) * (size_t)vocab * 2);
    float *part = malloc(sizeof(float) * (size_t)vocab * 2);
    alm_seq *seq = NULL;
    alm_error err = { 0 };
    alm_seq_new(m, 16, &seq, &err);
    alm_seq_forward(seq, pool, prompt, 5, 2, full, &err);
    alm_seq_truncate(seq, 0);
    int r = alm_seq_set_vocab_limit(seq, 100);
    alm_seq_forward(seq, pool, prompt, 5, 2, part, &err);
    bool same = r == 0, masked = true;
    for (int t = 0; t < 2; t++)
        for (int v = 0; v < vocab; v++) {
            float a = full[(size_t)t * vocab + v], b = part[(size_t)t * vocab + v];
            if (v < 100)
                same &= a == b;
            else
                masked &= b == -INFINITY;
        }
    tap_ok(same && masked, "vocabulary limit 100: the first 100 logits unchanged, the rest -inf");
    tap_ok(alm_seq_set_vocab_limit(seq, -1) == -EINVAL &&
           alm_seq_set_vocab_limit(seq, vocab + 1) == -EINVAL &&
           alm_seq_set_vocab_limit(seq, vocab) == 0 && alm_seq_set_vocab_limit(seq, 0) == 0,
           "vocabulary limits outside 0..%d refused", vocab);
    alm_seq_free(seq);
    free(full);
    free(part);
}

int main(void)
{
    alm_pool_new(2, &pool);
    alm_model *target = load("ALM_DEFAULT_MODELS", "coder-target-4bit");
    alm_model *draft = load("ALM_DEFAULT_MODELS", "coder-draft-4bit");
    if (!target || !draft)
        return tap_skip_all("the embedded models do not load");
    char *refs = test_path("ALM_TEST_DATA", "refs/greedy.json");
    JsonParser *parser = test_load_json(refs);
    free(refs);
    JsonObject *models = json_object_get_object_member(
        json_node_get_object(json_parser_get_root(parser)), "models");
    JsonArray *prompts = json_object_get_array_member(models, "coder-target-4bit");

    alm_error err = { 0 };
    tap_ok(alm_check_draft(target, draft, &err) == 0, "the coder pair is compatible (%s)", err.message);

    static const int ks[] = { 1, 2, 3, 4, 5, 6, 7, 8, 0 };
    greedy_equal("4-bit pair", target, draft, prompts, ks, 9, 0);
    static const int k3[] = { 3 };
    greedy_equal("4-bit pair, draft vocabulary 1024", target, draft, prompts, k3, 1, 1024);
    vocab_limit_checks(draft);

    char *shared = test_path("ALM_SHARED_DIR", "models/coder-target");
    if (test_exists(shared)) {
        alm_model *bt = load("ALM_SHARED_DIR", "models/coder-target");
        alm_model *bd = load("ALM_SHARED_DIR", "models/coder-draft");
        static const int few[] = { 1, 3, 5, 8, 0 };
        if (tap_ok(bt && bd, "BF16 pair loads"))
            greedy_equal("BF16 pair", bt, bd, json_object_get_array_member(models, "coder-target"), few, 5, 0);
        alm_model_free(bt);
        alm_model_free(bd);
    } else {
        tap_diag("SKIP: the shared folder is absent: the BF16 pair is not checked");
    }
    free(shared);

    /* A poor draft: random weights, same tokenizer. Long generation, many
     * rejections in the middle, caches cut back every time. */
    alm_model *poor = load("ALM_TEST_DATA", "models/tiny/qwen2-bias");
    if (tap_ok(poor && alm_check_draft(target, poor, &err) == 0, "a random tiny model is a compatible draft")) {
        JsonObject *o = json_array_get_object_element(prompts, 3);
        size_t n_prompt;
        int32_t *prompt = test_int_array(json_object_get_array_member(o, "prompt_ids"), &n_prompt);
        alm_generate_params gp = alm_generate_default_params();
        gp.max_tokens = 200;
        gp.ignore_eos = true;
        size_t n_plain, n_spec;
        int32_t *plain = run(target, NULL, prompt, n_prompt, &gp, &n_plain, NULL);
        gp.speculative.mode = ALM_SPECULATIVE_DRAFT;
        gp.speculative.num_draft_tokens = 4;
        alm_generate_stats st;
        int32_t *spec = run(target, poor, prompt, n_prompt, &gp, &n_spec, &st);
        tap_ok(plain && spec && n_plain == 200 && n_spec == 200 &&
               memcmp(plain, spec, sizeof *spec * 200) == 0,
               "poor draft, 200 tokens: identical to plain greedy");
        tap_ok(st.speculative.accepted * 4 < st.speculative.drafted,
               "poor draft: few proposals kept (%ld of %ld)", st.speculative.accepted, st.speculative.drafted);
        free(plain);
        free(spec);
        free(prompt);
    }
    alm_model_free(poor);

    /* An incompatible draft: another tokenizer and vocabulary. */
    alm_model *other = load("ALM_TEST_DATA", "models/tiny/llama2-spm");
    err = (alm_error){ 0 };
    tap_ok(other && alm_check_draft(target, other, &err) < 0 && strstr(err.message, "vocabulary"),
           "an incompatible draft is refused: %s", err.message);
    if (other) {
        alm_seq *ts, *ds;
        alm_seq_new(target, 64, &ts, NULL);
        alm_seq_new(other, 64, &ds, NULL);
        alm_generate_params gp = alm_generate_default_params();
        gp.speculative.mode = ALM_SPECULATIVE_DRAFT;
        int32_t prompt[] = { 5, 6, 7 };
        err = (alm_error){ 0 };
        tap_ok(alm_generate(ts, ds, pool, prompt, 3, &gp, NULL, NULL, NULL, NULL, NULL, &err) < 0 &&
               strstr(err.message, "draft"), "alm_generate refuses it too: %s", err.message);
        alm_seq_free(ts);
        alm_seq_free(ds);
    }
    alm_model_free(other);

    /* Sampling: the output distribution is the target's. 16 cells at most;
     * with 3000 runs the empirical TV of an exact sampler stays well below
     * 0.05. */
    JsonObject *o = json_array_get_object_element(prompts, 0);
    size_t n_prompt;
    int32_t *prompt = test_int_array(json_object_get_array_member(o, "prompt_ids"), &n_prompt);
    double tv = joint_tv(target, draft, ALM_SPECULATIVE_DRAFT, 0, 0, prompt, n_prompt, 3000);
    tap_ok(tv < 0.05, "draft speculation, T=0.8 top-k 4: first two tokens distributed as the target's (TV %.4f)", tv);
    /* Proposals from the first 40 ids only: mostly rejected, so the
     * residual carries the distribution. */
    tv = joint_tv(target, draft, ALM_SPECULATIVE_DRAFT, 40, 0, prompt, n_prompt, 3000);
    tap_ok(tv < 0.05, "draft vocabulary 40, T=0.8 top-k 4: first two tokens distributed as the target's (TV %.4f)", tv);
    /* n-gram: a prompt that repeats itself, so that proposals are made */
    int32_t repeating[64];
    for (int i = 0; i < 64; i++)
        repeating[i] = prompt[i % n_prompt];
    tv = joint_tv(target, NULL, ALM_SPECULATIVE_NGRAM, 0, 0, repeating, 64, 3000);
    tap_ok(tv < 0.05, "n-gram speculation, T=0.8 top-k 4: first two tokens distributed as the target's (TV %.4f)", tv);
    /* hybrid: where lookup finds the continuation (the repeating prompt)
     * its point masses are verified, else the draft's proposals (an n-gram
     * longer than the prompt never matches) */
    tv = joint_tv(target, draft, ALM_SPECULATIVE_HYBRID, 0, 0, repeating, 64, 3000);
    tap_ok(tv < 0.05, "hybrid speculation, lookup proposes, T=0.8 top-k 4: first two tokens distributed as the target's (TV %.4f)", tv);
    tv = joint_tv(target, draft, ALM_SPECULATIVE_HYBRID, 0, 64, prompt, n_prompt, 3000);
    tap_ok(tv < 0.05, "hybrid speculation, the draft proposes, T=0.8 top-k 4: first two tokens distributed as the target's (TV %.4f)", tv);
    free(prompt);

    g_object_unref(parser);
    alm_model_free(target);
    alm_model_free(draft);
    alm_pool_free(pool);
    return tap_done();
}
