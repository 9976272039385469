/* Every tiny architecture (llama3 rope scaling, mistral sliding window,
 * qwen2 biases, qwen3 q/k norms, mixtral experts) against the float32
 * transformers reference: logits within 1e-3 x max|logit| at the listed
 * positions and the argmax equal at every position. Also checks that a
 * batched pass equals token-by-token passes, that cutting the cache back
 * and running again gives the same logits, and that alm_seq_forward_argmax
 * gives their argmax and its probability. */
#include <math.h>

#include "alm.h"
#include "cpu/matmul.h"
#include "tap.h"
#include "test_util.h"

static void check_model(const char *name, JsonObject *ref, alm_pool *pool)
{
    char *dir = test_path("ALM_TEST_DATA", "models/tiny");
    char *model_dir;
    if (asprintf(&model_dir, "%s/%s", dir, name) < 0)
        abort();
    free(dir);
    alm_error err = { 0 };
    alm_model *model = NULL;
    alm_seq *seq = NULL;
    if (!tap_ok(alm_model_load(model_dir, NULL, &model, &err) == 0, "%s loads (%s)", name, err.message)) {
        free(model_dir);
        return;
    }
    size_t n;
    int32_t *ids = test_int_array(json_object_get_array_member(ref, "input_ids"), &n);
    int vocab = alm_model_vocab_size(model);
    float *logits = malloc(sizeof(float) * (size_t)vocab * n);
    tap_ok(alm_seq_new(model, 64, &seq, &err) == 0, "%s: sequence", name);
    tap_ok(alm_seq_forward(seq, pool, ids, (int)n, (int)n, logits, &err) == 0, "%s: forward (%s)", name, err.message);

    /* argmax at every position */
    size_t n_arg;
    int32_t *argmax = test_int_array(json_object_get_array_member(ref, "argmax"), &n_arg);
    int wrong = 0;
    for (size_t t = 0; t < n_arg && t < n; t++) {
        int best = 0;
        for (int v = 1; v < vocab; v++)
            if (logits[t * vocab + v] > logits[t * vocab + best])
                best = v;
        wrong += best != argmax[t];
    }
    tap_ok(wrong == 0 && n_arg == n, "%s: argmax equal at all %zu positions (%d differ)", name, n, wrong);

    /* logits at the listed positions */
    JsonArray *positions = json_object_get_array_member(ref, "positions");
    JsonObject *ref_logits = json_object_get_object_member(ref, "logits"); /* position -> row */
    double worst = 0.0;
    for (guint i = 0; i < json_array_get_length(positions); i++) {
        size_t t = (size_t)json_array_get_int_element(positions, i);
        char key[16];
        snprintf(key, sizeof key, "%zu", t);
        JsonArray *row = json_object_get_array_member(ref_logits, key);
        double max_abs = 0.0, max_err = 0.0;
        for (int v = 0; v < vocab; v++) {
            double r = json_array_get_double_element(row, (guint)v);
            max_abs = fmax(max_abs, fabs(r));
            max_err = fmax(max_err, fabs(r - logits[t * vocab + v]));
        }
        worst = fmax(worst, max_err / max_abs);
    }
    tap_ok(worst <= 1e-3, "%s: logits within 1e-3 x max|logit| (worst %.2e)", name, worst);

    /* Token by token, on a cache cut back to 0, gives the same logits. */
    alm_seq_truncate(seq, 0);
    float *step = malloc(sizeof(float) * (size_t)vocab);
    double step_err = 0.0;
    for (size_t t = 0; t < n; t++) {
        alm_seq_forward(seq, pool, &ids[t], 1, 1, step, &err);
        for (int v = 0; v < vocab; v++)
            step_err = fmax(step_err, fabs(step[v] - logits[t * vocab + v]));
    }
    tap_ok(step_err < 1e-3, "%s: one token at a time equals the batched pass (max diff %.2e)", name, step_err);

    /* Cut back to the middle and run the second half again. */
    int half = (int)n / 2;
    alm_seq_truncate(seq, half);
    alm_seq_forward(seq, pool, ids + half, (int)n - half, 1, step, &err);
    double cut_err = 0.0;
    for (int v = 0; v < vocab; v++)
        cut_err = fmax(cut_err, fabs(step[v] - logits[(n - 1) * vocab + v]));
    tap_ok(alm_seq_length(seq) == (int)n && cut_err < 1e-3,
           "%s: truncate then continue matches (max diff %.2e)", name, cut_err);

    /* The argmax alone (greedy decoding's pass): the logits' argmax, lowest
     * id on ties, and its softmax probability; then under a vocabulary
     * limit, the argmax of the ids below it. */
    int32_t *got = malloc(sizeof *got * n);
    float *top = malloc(sizeof *top * n);
    int diff = 0;
    double top_err = 0.0;
    for (int round = 0; round < 2; round++) {
        int limit = round ? vocab / 2 + 3 : vocab;
        alm_seq_set_vocab_limit(seq, round ? limit : 0);
        alm_seq_truncate(seq, 0);
        if (alm_seq_forward_argmax(seq, pool, ids, (int)n, (int)n, got, top, &err) < 0) {
            diff += (int)n;
            continue;
        }
        for (size_t t = 0; t < n; t++) {
            const float *l = logits + t * vocab;
            int32_t want = 0;
            for (int v = 1; v < limit; v++)
                if (l[v] > l[want])
                    want = v;
            double sum = 0.0;
            for (int v = 0; v < limit; v++)
                sum += exp((double)(l[v] - l[want]));
            diff += got[t] != want;
            top_err = fmax(top_err, fabs(top[t] - 1.0 / sum) * sum);
        }
    }
    alm_seq_set_vocab_limit(seq, 0);
    tap_ok(diff == 0 && top_err < 1e-5,
           "%s: alm_seq_forward_argmax gives the logits' argmax at all %zu positions, whole and limited vocabulary (%d differ; probability within %.1e)",
           name, n, diff, top_err);
    free(got);
    free(top);

    free(step);
    free(argmax);
    free(logits);
    free(ids);
    alm_seq_free(seq);
    alm_model_free(model);
    free(model_dir);
}

int main(void)
{
    /* Run for one instruction set: skip (visibly) where the CPU lacks it. */
    const char *isa = getenv("ALM_REQUIRE_ISA");
    if (isa) {
        static const cpu_isa all[] = { CPU_ISA_SCALAR, CPU_ISA_AVX2, CPU_ISA_AVX512 };
        bool supported = false;
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            if (strcmp(cpu_isa_name(all[i]), isa) == 0)
                supported = cpu_kernels_for(all[i]) != NULL;
        if (!supported) {
            char why[128];
            snprintf(why, sizeof why, "this CPU does not run the %s kernels", isa);
            return tap_skip_all(why);
        }
        tap_diag("kernels: %s", cpu_isa_name(cpu_kernels_isa(cpu_kernels_select())));
    }
    char *refs = test_path("ALM_TEST_DATA", "refs/tiny-logits.json");
    JsonParser *parser = refs ? test_load_json(refs) : NULL;
    free(refs);
    if (!parser)
        return tap_skip_all("ALM_TEST_DATA/refs/tiny-logits.json not readable");
    JsonObject *root = json_node_get_object(json_parser_get_root(parser));
    alm_pool *pool;
    alm_pool_new(2, &pool);
    GList *names = json_object_get_members(root);
    for (GList *l = names; l; l = l->next)
        check_model(l->data, json_object_get_object_member(root, l->data), pool);
    g_list_free(names);
    alm_pool_free(pool);
    g_object_unref(parser);
    return tap_done();
}
