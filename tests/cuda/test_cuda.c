/* The CUDA backend against the float32 transformers references and the
 * CPU's guarantees, on the GPU (skipped, visibly, where there is none):
 * - tiny models (every architecture): logits within 1e-2 x max|logit| at
 *   the listed positions, the argmax at every position (where the
 *   reference's top two are further apart than that), one token at a time
 *   equal to the batched pass, truncate-and-continue;
 * - greedy ids of the 4-bit pair (and the BF16 pair when the shared folder
 *   is there) as in refs/greedy.json, up to the first step whose reference
 *   top-1/top-2 margin is below 1e-2;
 * - speculative greedy decoding (draft model, k = 1, 4, 8) identical to
 *   plain greedy decoding on the GPU;
 * - an unknown device is refused with the list of those built in. */
#include <errno.h>
#include <math.h>

#include "alm.h"
#include "tap.h"
#include "test_util.h"

#define LOGIT_TOLERANCE 1e-2
#define NEAR_TIE 1e-2

static alm_pool *pool;

static alm_model *load_cuda(const char *dir, alm_error *err)
{
    alm_model_params p = alm_model_default_params();
    p.device = "cuda";
    alm_model *m = NULL;
    if (alm_model_load(dir, &p, &m, err) < 0)
        return NULL;
    return m;
}

/* Top-1 minus top-2 of a reference row. */
static double ref_margin(JsonArray *row)
{
    double a = -INFINITY, b = -INFINITY;
    for (guint v = 0; v < json_array_get_length(row); v++) {
        double x = json_array_get_double_element(row, v);
        if (x > a) {
            b = a;
            a = x;
        } else if (x > b) {
            b = x;
        }
    }
    return a - b;
}

static void check_tiny(const char *name, JsonObject *ref)
{
    char *base = test_path("ALM_TEST_DATA", "models/tiny"), *dir;
    if (asprintf(&dir, "%s/%s", base, name) < 0)
        abort();
    free(base);
    alm_error err = { 0 };
    alm_model *model = load_cuda(dir, &err);
    free(dir);
    if (!tap_ok(model != NULL, "%s loads on the GPU (%s)", name, err.message))
        return;
    size_t n;
    int32_t *ids = test_int_array(json_object_get_array_member(ref, "input_ids"), &n);
    int vocab = alm_model_vocab_size(model);
    float *logits = malloc(sizeof(float) * (size_t)vocab * n);
    float *step = malloc(sizeof(float) * (size_t)vocab);
    alm_seq *seq = NULL;
    int r = alm_seq_new(model, 64, &seq, &err);
    if (r == 0)
        r = alm_seq_forward(seq, pool, ids, (int)n, (int)n, logits, &err);
    if (!tap_ok(r == 0, "%s: forward on the GPU (%s)", name, err.message))
        goto out;

    JsonArray *positions = json_object_get_array_member(ref, "positions");
    JsonObject *ref_logits = json_object_get_object_member(ref, "logits");
    double worst = 0.0;
    int wrong = 0, checked = 0;
    for (guint i = 0; i < json_array_get_length(positions); i++) {
        size_t t = (size_t)json_array_get_int_element(positions, i);
        char key[16];
        snprintf(key, sizeof key, "%zu", t);
        JsonArray *row = json_object_get_array_member(ref_logits, key);
        double max_abs = 0.0, max_err = 0.0;
        int ref_best = 0, best = 0;
        for (int v = 0; v < vocab; v++) {
            double x = json_array_get_double_element(row, (guint)v);
            max_abs = fmax(max_abs, fabs(x));
            max_err = fmax(max_err, fabs(x - logits[t * vocab + v]));
            if (x > json_array_get_double_element(row, (guint)ref_best))
                ref_best = v;
            if (logits[t * vocab + v] > logits[t * vocab + best])
                best = v;
        }
        worst = fmax(worst, max_err / max_abs);
        if (ref_margin(row) > NEAR_TIE * max_abs) {
            checked++;
            wrong += best != ref_best;
        }
    }
    tap_ok(worst <= LOGIT_TOLERANCE, "%s: logits within %g x max|logit| (worst %.2e)", name,
           LOGIT_TOLERANCE, worst);
    tap_ok(wrong == 0, "%s: argmax equal at the %d listed positions without a near tie", name, checked);

    /* One token at a time from an emptied cache: the batched logits. */
    alm_seq_truncate(seq, 0);
    double step_err = 0.0, scale = 0.0;
    for (size_t t = 0; t < n && r == 0; t++) {
        r = alm_seq_forward(seq, pool, &ids[t], 1, 1, step, &err);
        for (int v = 0; v < vocab; v++) {
            step_err = fmax(step_err, fabs(step[v] - logits[t * vocab + v]));
            scale = fmax(scale, fabs(logits[t * vocab + v]));
        }
    }
    tap_ok(r == 0 && step_err <= 1e-3 * scale,
           "%s: one token at a time equals the batched pass (max diff %.2e of %.2e)", name, step_err, scale);

    int half = (int)n / 2;
    alm_seq_truncate(seq, half);
    r = alm_seq_forward(seq, pool, ids + half, (int)n - half, 1, step, &err);
    double cut_err = 0.0;
    for (int v = 0; v < vocab; v++)
        cut_err = fmax(cut_err, fabs(step[v] - logits[(n - 1) * vocab + v]));
    tap_ok(r == 0 && cut_err <= 1e-3 * scale, "%s: truncate then continue matches (max diff %.2e)",
           name, cut_err);
out:
    alm_seq_free(seq);
    free(step);
    free(logits);
    free(ids);
    alm_model_free(model);
}

static int32_t *generate(alm_model *target, alm_model *draft, const int32_t *prompt, size_t n_prompt,
                         int max_tokens, int k, size_t *n_out)
{
    alm_error err = { 0 };
    alm_seq *ts = NULL, *ds = NULL;
    int cap = (int)n_prompt + max_tokens + ALM_MAX_DRAFT_TOKENS + 2;
    int32_t *ids = NULL;
    alm_generate_params gp = alm_generate_default_params();
    gp.max_tokens = max_tokens;
    gp.ignore_eos = true;
    if (draft) {
        gp.speculative.mode = ALM_SPECULATIVE_DRAFT;
        gp.speculative.num_draft_tokens = k;
    }
    if (alm_seq_new(target, cap, &ts, &err) < 0 || (draft && alm_seq_new(draft, cap, &ds, &err) < 0) ||
        alm_generate(ts, ds, pool, prompt, n_prompt, &gp, NULL, NULL, &ids, n_out, NULL, &err) < 0) {
        tap_diag("generate: %s", err.message);
        ids = NULL;
    }
    alm_seq_free(ts);
    alm_seq_free(ds);
    return ids;
}

/* Greedy ids against the reference; returns the models' plain outputs. */
static void check_greedy(const char *label, alm_model *model, JsonArray *prompts)
{
    guint n_prompts = json_array_get_length(prompts);
    int passed = 0;
    for (guint i = 0; i < n_prompts; i++) {
        JsonObject *o = json_array_get_object_element(prompts, i);
        size_t n_prompt, n_expected;
        int32_t *prompt = test_int_array(json_object_get_array_member(o, "prompt_ids"), &n_prompt);
        int32_t *expected = test_int_array(json_object_get_array_member(o, "greedy_ids"), &n_expected);
        JsonArray *margin = json_object_get_array_member(o, "top1_margin");
        size_t n_got = 0;
        int32_t *got = generate(model, NULL, prompt, n_prompt, (int)n_expected, 0, &n_got);
        int ok = got != NULL && n_got == n_expected;
        size_t i_diff = n_expected;
        for (size_t k = 0; ok && k < n_expected; k++) {
            if (json_array_get_double_element(margin, (guint)k) < NEAR_TIE)
                break;
            if (got[k] != expected[k]) {
                ok = 0;
                i_diff = k;
            }
        }
        if (!ok)
            tap_diag("%s prompt %u: first difference at step %zu", label, i, i_diff);
        passed += ok;
        free(got);
        free(prompt);
        free(expected);
    }
    tap_ok(passed == (int)n_prompts, "%s on the GPU: greedy ids equal the reference for %d of %u prompts",
           label, passed, n_prompts);
}

static void check_speculative(const char *label, alm_model *target, alm_model *draft, JsonArray *prompts)
{
    static const int ks[] = { 1, 4, 8 };
    int runs = 0, differ = 0;
    guint n_prompts = json_array_get_length(prompts);
    if (n_prompts > 6)
        n_prompts = 6;
    for (guint i = 0; i < n_prompts; i++) {
        JsonObject *o = json_array_get_object_element(prompts, i);
        size_t n_prompt, n_plain = 0;
        int32_t *prompt = test_int_array(json_object_get_array_member(o, "prompt_ids"), &n_prompt);
        int32_t *plain = generate(target, NULL, prompt, n_prompt, 48, 0, &n_plain);
        for (size_t j = 0; j < sizeof ks / sizeof ks[0]; j++) {
            size_t n_spec = 0;
            int32_t *spec = generate(target, draft, prompt, n_prompt, 48, ks[j], &n_spec);
            runs++;
            if (!plain || !spec || n_spec != n_plain || memcmp(spec, plain, n_plain * sizeof *plain)) {
                differ++;
                tap_diag("%s prompt %u, k=%d: differs from plain greedy", label, i, ks[j]);
            }
            free(spec);
        }
        free(plain);
        free(prompt);
    }
    tap_ok(differ == 0, "%s on the GPU: %d speculative greedy runs identical to plain greedy (%d differ)",
           label, runs, differ);
}

static void check_pair(const char *label, const char *target_dir, const char *draft_dir,
                       JsonObject *models, const char *target_ref, const char *draft_ref)
{
    alm_error err = { 0 };
    alm_model *target = load_cuda(target_dir, &err);
    tap_ok(target != NULL, "%s target loads on the GPU (%s)", label, err.message);
    alm_model *draft = load_cuda(draft_dir, &err);
    tap_ok(draft != NULL, "%s draft loads on the GPU (%s)", label, err.message);
    if (target && draft) {
        check_greedy(target_ref, target, json_object_get_array_member(models, target_ref));
        check_greedy(draft_ref, draft, json_object_get_array_member(models, draft_ref));
        check_speculative(label, target, draft, json_object_get_array_member(models, target_ref));
    }
    alm_model_free(draft);
    alm_model_free(target);
}

int main(void)
{
    char *tiny_dir = test_path("ALM_TEST_DATA", "models/tiny/qwen2-bias");
    alm_error err = { 0 };
    alm_model *probe = load_cuda(tiny_dir, &err);
    free(tiny_dir);
    if (!probe) {
        char why[600];
        snprintf(why, sizeof why, "no usable CUDA device: %s", err.message);
        return tap_skip_all(why);
    }
    alm_pool_new(1, &pool);

    alm_model_free(probe);
    alm_model_params bad = alm_model_default_params();
    bad.device = "tpu";
    alm_model *none = NULL;
    tiny_dir = test_path("ALM_TEST_DATA", "models/tiny/qwen2-bias");
    int r = alm_model_load(tiny_dir, &bad, &none, &err);
    free(tiny_dir);
    tap_ok(r == -ENOTSUP && strstr(err.message, "cpu, cuda") != NULL,
           "an unknown device is refused, naming the ones there are (%s)", err.message);

    char *refs = test_path("ALM_TEST_DATA", "refs/tiny-logits.json");
    JsonParser *parser = test_load_json(refs);
    free(refs);
    if (tap_ok(parser != NULL, "refs/tiny-logits.json readable")) {
        JsonObject *root = json_node_get_object(json_parser_get_root(parser));
        GList *names = json_object_get_members(root);
        for (GList *l = names; l; l = l->next)
            check_tiny(l->data, json_object_get_object_member(root, l->data));
        g_list_free(names);
        g_object_unref(parser);
    }

    refs = test_path("ALM_TEST_DATA", "refs/greedy.json");
    JsonParser *greedy = test_load_json(refs);
    free(refs);
    if (tap_ok(greedy != NULL, "refs/greedy.json readable")) {
        JsonObject *models = json_object_get_object_member(
            json_node_get_object(json_parser_get_root(greedy)), "models");
        char *t = test_path("ALM_DEFAULT_MODELS", "coder-target-4bit");
        char *d = test_path("ALM_DEFAULT_MODELS", "coder-draft-4bit");
        check_pair("4-bit pair", t, d, models, "coder-target-4bit", "coder-draft-4bit");
        free(t);
        free(d);
        char *shared = test_path("ALM_SHARED_DIR", "models");
        if (!test_exists(shared)) {
            tap_diag("SKIP: the shared folder (ALM_SHARED_DIR) is absent: the BF16 pair is not checked");
        } else {
            t = test_path("ALM_SHARED_DIR", "models/coder-target");
            d = test_path("ALM_SHARED_DIR", "models/coder-draft");
            check_pair("BF16 pair", t, d, models, "coder-target", "coder-draft");
            free(t);
            free(d);
        }
        free(shared);
        g_object_unref(greedy);
    }
    alm_pool_free(pool);
    return tap_done();
}
