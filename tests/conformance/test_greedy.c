/* Greedy generation against the transformers references: every prompt of
 * refs/greedy.json for the 4-bit pair (embedded) and, when the shared folder
 * is there, the BF16 pair and coder-large-4bit. The ids must be identical,
 * except that after a step whose reference top-1/top-2 margin is below 1e-3
 * float rounding may legitimately pick the other token. Also runs several
 * sequences of one model from several threads at once. */
#include <pthread.h>

#include "alm.h"
#include "tap.h"
#include "test_util.h"

#define NEAR_TIE 1e-3

typedef struct greedy_case {
    int32_t *prompt;
    size_t n_prompt;
    int32_t *expected;
    size_t n_expected;
    double *margin;
} greedy_case;

static int32_t *generate(alm_model *model, alm_pool *pool, const greedy_case *c, size_t *n_out)
{
    alm_error err = { 0 };
    alm_seq *seq;
    if (alm_seq_new(model, (int)(c->n_prompt + c->n_expected + 1), &seq, &err) < 0)
        return NULL;
    alm_generate_params gp = alm_generate_default_params();
    gp.max_tokens = (int)c->n_expected;
    gp.ignore_eos = true;
    int32_t *ids = NULL;
    if (alm_generate(seq, NULL, pool, c->prompt, c->n_prompt, &gp, NULL, NULL, &ids, n_out, NULL, &err) < 0) {
        tap_diag("generate: %s", err.message);
        ids = NULL;
    }
    alm_seq_free(seq);
    return ids;
}

/* 1 when got matches expected up to the first near tie. */
static int matches(const greedy_case *c, const int32_t *got, size_t n_got, size_t *first_diff)
{
    *first_diff = n_got;
    for (size_t i = 0; i < c->n_expected; i++) {
        if (c->margin[i] < NEAR_TIE)
            return 1;
        if (i >= n_got || got[i] != c->expected[i]) {
            *first_diff = i;
            return 0;
        }
    }
    return n_got == c->n_expected;
}

typedef struct thread_job {
    alm_model *model;
    const greedy_case *c;
    int32_t *ids;
    size_t n;
} thread_job;

static void *thread_main(void *p)
{
    thread_job *j = p;
    alm_pool *pool;
    alm_pool_new(1, &pool);
    j->ids = generate(j->model, pool, j->c, &j->n);
    alm_pool_free(pool);
    return NULL;
}

static void check_model(const char *label, const char *model_dir, JsonArray *prompts, alm_pool *pool)
{
    alm_error err = { 0 };
    alm_model *model;
    if (!tap_ok(alm_model_load(model_dir, NULL, &model, &err) == 0, "%s loads (%s)", label, err.message))
        return;
    guint n_prompts = json_array_get_length(prompts);
    greedy_case *cases = calloc(n_prompts, sizeof *cases);
    int32_t **got = calloc(n_prompts, sizeof *got);
    size_t *n_got = calloc(n_prompts, sizeof *n_got);
    int passed = 0;
    for (guint i = 0; i < n_prompts; i++) {
        JsonObject *o = json_array_get_object_element(prompts, i);
        greedy_case *c = &cases[i];
        c->prompt = test_int_array(json_object_get_array_member(o, "prompt_ids"), &c->n_prompt);
        c->expected = test_int_array(json_object_get_array_member(o, "greedy_ids"), &c->n_expected);
        JsonArray *m = json_object_get_array_member(o, "top1_margin");
        c->margin = calloc(c->n_expected, sizeof(double));
        for (size_t k = 0; k < c->n_expected; k++)
            c->margin[k] = json_array_get_double_element(m, (guint)k);
        got[i] = generate(model, pool, c, &n_got[i]);
        size_t diff = 0;
        int ok = got[i] && matches(c, got[i], n_got[i], &diff);
        if (!ok)
            tap_diag("%s prompt %u: first difference at step %zu (margin there %.4g)", label, i,
                     diff, diff < c->n_expected ? c->margin[diff] : 0.0);
        passed += ok;
    }
    tap_ok(passed == (int)n_prompts, "%s: greedy ids equal the reference for %d of %u prompts",
           label, passed, n_prompts);

    /* Four sequences of this one model, each on its own thread. */
    enum { N_THREADS = 4 };
    thread_job jobs[N_THREADS];
    pthread_t threads[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        jobs[t] = (thread_job){ model, &cases[t % n_prompts], NULL, 0 };
        pthread_create(&threads[t], NULL, thread_main, &jobs[t]);
    }
    int same = 0;
    for (int t = 0; t < N_THREADS; t++) {
        pthread_join(threads[t], NULL);
        int i = t % (int)n_prompts;
        same += jobs[t].ids && jobs[t].n == n_got[i] &&
                memcmp(jobs[t].ids, got[i], n_got[i] * sizeof(int32_t)) == 0;
        free(jobs[t].ids);
    }
    tap_ok(same == N_THREADS, "%s: %d sequences on %d threads at once give the same ids", label, same, N_THREADS);

    for (guint i = 0; i < n_prompts; i++) {
        free(cases[i].prompt);
        free(cases[i].expected);
        free(cases[i].margin);
        free(got[i]);
    }
    free(cases);
    free(got);
    free(n_got);
    alm_model_free(model);
}

static void check_ref_file(JsonParser *parser, const char *model_name, const char *model_dir,
                           alm_pool *pool)
{
    JsonObject *models = json_object_get_object_member(
        json_node_get_object(json_parser_get_root(parser)), "models");
    if (!json_object_has_member(models, model_name)) {
        tap_ok(0, "reference has %s", model_name);
        return;
    }
    check_model(model_name, model_dir, json_object_get_array_member(models, model_name), pool);
}

int main(void)
{
    alm_pool *pool;
    alm_pool_new(2, &pool);

    char *refs = test_path("ALM_TEST_DATA", "refs/greedy.json");
    JsonParser *greedy = refs ? test_load_json(refs) : NULL;
    free(refs);
    if (!greedy)
        return tap_skip_all("refs/greedy.json not readable");
    static const char *embedded[] = { "coder-target-4bit", "coder-draft-4bit" };
    for (size_t i = 0; i < 2; i++) {
        char *dir = test_path("ALM_DEFAULT_MODELS", embedded[i]);
        check_ref_file(greedy, embedded[i], dir, pool);
        free(dir);
    }

    static const char *shared_only[] = { "coder-target", "coder-draft" };
    char *shared_models = test_path("ALM_SHARED_DIR", "models");
    if (!test_exists(shared_models)) {
        tap_diag("SKIP: the shared folder (ALM_SHARED_DIR) is absent: BF16 pair and coder-large-4bit not checked");
    } else {
        for (size_t i = 0; i < 2; i++) {
            char *dir;
            if (asprintf(&dir, "%s/%s", shared_models, shared_only[i]) < 0)
                abort();
            check_ref_file(greedy, shared_only[i], dir, pool);
            free(dir);
        }
        char *large_refs = test_path("ALM_SHARED_DIR", "refs/greedy-large.json");
        JsonParser *large = test_load_json(large_refs);
        free(large_refs);
        if (tap_ok(large != NULL, "refs/greedy-large.json readable")) {
            char *dir;
            if (asprintf(&dir, "%s/coder-large-4bit", shared_models) < 0)
                abort();
            check_ref_file(large, "coder-large-4bit", dir, pool);
            free(dir);
            g_object_unref(large);
        }
    }
    free(shared_models);

    /* The sentencepiece-tokenizer model: BOS-prefixed prompts. */
    char *spm_refs = test_path("ALM_TEST_DATA", "refs/tiny-llama2-spm-greedy.json");
    JsonParser *spm = test_load_json(spm_refs);
    free(spm_refs);
    if (tap_ok(spm != NULL, "refs/tiny-llama2-spm-greedy.json readable")) {
        char *dir = test_path("ALM_TEST_DATA", "models/tiny/llama2-spm");
        JsonArray *arr = json_node_get_array(json_parser_get_root(spm));
        /* Same layout as greedy.json, with the BOS-prefixed prompt ids. */
        JsonArray *renamed = json_array_new();
        for (guint i = 0; i < json_array_get_length(arr); i++) {
            JsonObject *o = json_array_get_object_element(arr, i);
            JsonObject *c = json_object_new();
            json_object_set_array_member(c, "prompt_ids", json_array_ref(json_object_get_array_member(o, "prompt_ids_with_bos")));
            json_object_set_array_member(c, "greedy_ids", json_array_ref(json_object_get_array_member(o, "greedy_ids")));
            json_object_set_array_member(c, "top1_margin", json_array_ref(json_object_get_array_member(o, "top1_margin")));
            json_array_add_object_element(renamed, c);
        }
        check_model("tiny/llama2-spm", dir, renamed, pool);
        json_array_unref(renamed);
        free(dir);
        g_object_unref(spm);
    }

    g_object_unref(greedy);
    alm_pool_free(pool);
    return tap_done();
}
