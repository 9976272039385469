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
 * - an unknown device is refused with the list of those built in;
 * - the matmul kernel on every weight format (2/4/8-bit in groups of 32,
 *   64 and 128, dense), several shapes (so every split of a tile's columns
 *   among warps) and token counts, against a host computation;
 * - the argmax on the GPU (alm_seq_forward_argmax) against the argmax of
 *   the logits, with and without a vocabulary limit; the argmax kernel
 *   against the host on rows with ties, NaN and infinities;
 * - greedy steps queued on the GPU (alm_seq_decode_greedy) against the
 *   same steps one at a time, bit for bit, on every tiny model and the
 *   pair;
 * - with the GPU's memory taken, a sequence and its work buffers are
 *   refused with what they need and what is free;
 * - the prefill attention (tensor cores) against the decode kernel's; the
 *   attention that merges its splits in its last block against the merge
 *   launch, bit for bit; the attention that rotates q and the new key
 *   itself against rope_store and then the attention, bit for bit;
 * - the prefill GEMM (cuBLAS, where the library is found) against the
 *   matmul kernel: every operation it replaces, in several formats, and a
 *   model's logits after a long prompt. */
#include <errno.h>
#include <math.h>

#include <cuda_runtime_api.h>

#include "alm.h"
#include "cuda/cuda_backend.h"
#ifdef ALM_HAVE_CUBLAS
#include "cuda/cuda_gemm.h"
#endif
#include "cuda/cuda_kernels.h"
#include "tap.h"
#include "test_util.h"

#define LOGIT_TOLERANCE 1e-2
#define NEAR_TIE 1e-2

static alm_pool *pool;

static void check_queued(const char *label, alm_model *model);
#ifdef ALM_HAVE_CUBLAS
static void check_gemm_logits(const char *label, alm_model *model, int n);
#endif

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
    check_queued(name, model);

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

/* Passes replayed as CUDA graphs (the default) against passes launched one
 * kernel at a time (ALM_CUDA_GRAPHS=0, read when a sequence makes its work
 * buffers): the same logits bit for bit, over a context that crosses
 * several attention sizes (a graph per power of two of 128 keys), then for
 * passes over 5 tokens (verification). */
static void check_graphs(const char *label, alm_model *model)
{
    enum { STEPS = 600, WIDE = 5 };
    alm_error err = { 0 };
    int vocab = alm_model_vocab_size(model);
    alm_seq *direct = NULL, *graph = NULL;
    float *a = malloc(sizeof(float) * (size_t)vocab * WIDE), *b = malloc(sizeof(float) * (size_t)vocab * WIDE);
    int32_t ids[STEPS + 4 * WIDE];
    for (int i = 0; i < STEPS + 4 * WIDE; i++)
        ids[i] = (int32_t)((i * 7919u + 13u) % (unsigned)vocab);
    setenv("ALM_CUDA_GRAPHS", "0", 1);
    int r = alm_seq_new(model, STEPS + 4 * WIDE, &direct, &err);
    if (r == 0)
        r = alm_seq_forward(direct, pool, ids, 1, 1, a, &err);
    unsetenv("ALM_CUDA_GRAPHS");
    if (r == 0)
        r = alm_seq_new(model, STEPS + 4 * WIDE, &graph, &err);
    if (r == 0)
        r = alm_seq_forward(graph, pool, ids, 1, 1, b, &err);
    int first_diff = -1;
    for (int i = 1; r == 0 && i < STEPS; i++) {
        if (first_diff < 0 && memcmp(a, b, sizeof(float) * (size_t)vocab))
            first_diff = i - 1;
        r = alm_seq_forward(direct, pool, &ids[i], 1, 1, a, &err);
        if (r == 0)
            r = alm_seq_forward(graph, pool, &ids[i], 1, 1, b, &err);
    }
    for (int i = 0; r == 0 && i < 4; i++) {
        if (first_diff < 0 && memcmp(a, b, sizeof(float) * (size_t)vocab))
            first_diff = STEPS - 1 + i;
        const int32_t *t = &ids[STEPS + i * WIDE];
        r = alm_seq_forward(direct, pool, t, WIDE, WIDE, a, &err);
        if (r == 0)
            r = alm_seq_forward(graph, pool, t, WIDE, WIDE, b, &err);
        if (r == 0 && first_diff < 0 && memcmp(a, b, sizeof(float) * (size_t)vocab * WIDE))
            first_diff = STEPS + i * WIDE;
    }
    if (first_diff >= 0)
        tap_diag("%s: first differing logits at position %d", label, first_diff);
    tap_ok(r == 0 && first_diff < 0,
           "%s: %d one-token passes and 4 five-token passes as CUDA graphs give the logits of direct launches, bit for bit (%s)",
           label, STEPS, r == 0 ? "ok" : err.message);
    alm_seq_free(direct);
    alm_seq_free(graph);
    free(a);
    free(b);
}

/* alm_seq_forward_argmax (the argmax made on the GPU) against the argmax of
 * alm_seq_forward's logits, one token at a time and over 5-token passes;
 * then under a vocabulary limit. */
static void check_argmax(const char *label, alm_model *model)
{
    enum { STEPS = 40, WIDE = 5 };
    alm_error err = { 0 };
    int vocab = alm_model_vocab_size(model);
    alm_seq *a = NULL, *b = NULL;
    float *logits = malloc(sizeof(float) * (size_t)vocab * WIDE);
    int32_t ids[STEPS + 2 * WIDE];
    for (int i = 0; i < STEPS + 2 * WIDE; i++)
        ids[i] = (int32_t)((i * 7919u + 13u) % (unsigned)vocab);
    int r = alm_seq_new(model, 256, &a, &err);
    if (r == 0)
        r = alm_seq_new(model, 256, &b, &err);
    int differ = 0, checked = 0;
    double worst_top = 0.0;
    for (int round = 0; round < 2 && r == 0; round++) {
        if (round == 1) {
            /* half the vocabulary, not a multiple of 128 */
            alm_seq_set_vocab_limit(a, vocab / 2 + 3);
            alm_seq_set_vocab_limit(b, vocab / 2 + 3);
            alm_seq_truncate(a, 0);
            alm_seq_truncate(b, 0);
        }
        for (int i = 0; r == 0 && i < STEPS + 2 * WIDE;) {
            int n = i < STEPS ? 1 : WIDE;
            int32_t got[WIDE];
            float top[WIDE];
            r = alm_seq_forward(a, pool, &ids[i], n, n, logits, &err);
            if (r == 0)
                r = alm_seq_forward_argmax(b, pool, &ids[i], n, n, got, top, &err);
            for (int j = 0; r == 0 && j < n; j++) {
                const float *l = logits + (size_t)j * vocab;
                int32_t want = 0;
                for (int v = 1; v < vocab; v++)
                    if (l[v] > l[want])
                        want = v;
                double sum = 0.0;
                for (int v = 0; v < vocab; v++)
                    sum += exp((double)(l[v] - l[want]));
                worst_top = fmax(worst_top, fabs(top[j] - 1.0 / sum) * sum);
                differ += got[j] != want;
                checked++;
            }
            i += n;
        }
    }
    tap_ok(r == 0 && differ == 0 && worst_top < 1e-4,
           "%s: the argmax made on the GPU equals the logits' at %d positions (%d differ), its probability within %.1e (%s)",
           label, checked, differ, worst_top, r == 0 ? "ok" : err.message);
    alm_seq_free(a);
    alm_seq_free(b);
    free(logits);
}

/* Greedy steps queued on the GPU (alm_seq_decode_greedy: each pass takes
 * the argmax of the one before from device memory, the ids come back at
 * the end) against the same steps one alm_seq_forward_argmax at a time:
 * the same ids and probabilities bit for bit, the same tokens in the
 * cache, and the same logits for a pass after them. With graphs and
 * without (ALM_CUDA_GRAPHS=0), over more steps than one collect holds
 * (BACKEND_MAX_KEPT: 64), from a prompt of several tokens, then again
 * after a plain pass, and under a vocabulary limit. */
static void check_queued(const char *label, alm_model *model)
{
    enum { PROMPT = 7, STEPS = 70, LATER = 9 };
    int vocab = alm_model_vocab_size(model);
    int32_t prompt[PROMPT];
    for (int i = 0; i < PROMPT; i++)
        prompt[i] = (int32_t)((i * 7919u + 13u) % (unsigned)vocab);
    float *la = malloc(sizeof(float) * (size_t)vocab), *lb = malloc(sizeof(float) * (size_t)vocab);
    for (int way = 0; way < 4; way++) {
        const bool graphs = way % 2 == 0, limited = way >= 2;
        alm_error err = { 0 };
        alm_seq *a = NULL, *b = NULL;
        if (!graphs)
            setenv("ALM_CUDA_GRAPHS", "0", 1);
        int r = alm_seq_new(model, 256, &a, &err);
        if (r == 0)
            r = alm_seq_new(model, 256, &b, &err);
        if (r == 0 && limited) {
            alm_seq_set_vocab_limit(a, vocab / 2 + 3);
            alm_seq_set_vocab_limit(b, vocab / 2 + 3);
        }
        int32_t got[STEPS], want[STEPS];
        float got_top[STEPS], want_top[STEPS];
        int differ = 0;
        /* a prompt, the steps; a plain pass; more steps, from it */
        for (int round = 0; round < 2 && r == 0; round++) {
            const int32_t *first = round == 0 ? prompt : &got[STEPS - 1];
            const int n_first = round == 0 ? PROMPT : 1, steps = round == 0 ? STEPS : LATER;
            if (round == 1) {
                r = alm_seq_forward(a, pool, first, 1, 1, la, &err);
                if (r == 0)
                    r = alm_seq_forward(b, pool, first, 1, 1, lb, &err);
                differ += r == 0 && memcmp(la, lb, sizeof(float) * (size_t)vocab) != 0;
                first = &prompt[3];
            }
            if (r == 0)
                r = alm_seq_decode_greedy(a, pool, first, n_first, steps, got, got_top, &err);
            if (r == 0)
                r = alm_seq_forward_argmax(b, pool, first, n_first, 1, &want[0], &want_top[0], &err);
            for (int j = 1; r == 0 && j < steps; j++)
                r = alm_seq_forward_argmax(b, pool, &want[j - 1], 1, 1, &want[j], &want_top[j], &err);
            if (r == 0)
                differ += memcmp(got, want, sizeof(int32_t) * (size_t)steps) != 0 ||
                          memcmp(got_top, want_top, sizeof(float) * (size_t)steps) != 0;
        }
        if (r == 0)
            differ += alm_seq_length(a) != alm_seq_length(b) ||
                      memcmp(alm_seq_tokens(a), alm_seq_tokens(b), sizeof(int32_t) * (size_t)alm_seq_length(a)) != 0;
        /* the caches: the logits of one more pass */
        if (r == 0)
            r = alm_seq_forward(a, pool, &got[LATER - 1], 1, 1, la, &err);
        if (r == 0)
            r = alm_seq_forward(b, pool, &got[LATER - 1], 1, 1, lb, &err);
        differ += r == 0 && memcmp(la, lb, sizeof(float) * (size_t)vocab) != 0;
        unsetenv("ALM_CUDA_GRAPHS");
        tap_ok(r == 0 && differ == 0,
               "%s: greedy steps queued on the GPU (%s%s) give the ids, probabilities, cache and logits of "
               "one step at a time, bit for bit (%s)",
               label, graphs ? "graphs" : "direct launches", limited ? ", vocabulary limit" : "",
               r == 0 ? "ok" : err.message);
        alm_seq_free(a);
        alm_seq_free(b);
    }
    free(la);
    free(lb);
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
        check_graphs(target_ref, target);
        check_argmax(target_ref, target);
        check_queued(target_ref, target);
        check_queued(draft_ref, draft);
#ifdef ALM_HAVE_CUBLAS
        alm_error why = { 0 };
        if (cuda_prefill_gemm(&why)) {
            check_gemm_logits(target_ref, target, 300);
            check_gemm_logits(draft_ref, draft, 300);
        }
#endif
    }
    alm_model_free(draft);
    alm_model_free(target);
}

static uint32_t next_random(uint64_t *state)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*state >> 33);
}

static float uniform(uint64_t *state, float lo, float hi)
{
    return lo + (hi - lo) * (float)(next_random(state) & 0xffffff) / (float)0xffffff;
}

static void *to_device(const void *host, size_t bytes)
{
    void *p = NULL;
    if (cudaMalloc(&p, bytes) != cudaSuccess)
        return NULL;
    cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice);
    return p;
}

/* One weight format and shape: y = W x on the GPU against the host, with
 * the GPU's roundings (weights dequantized to float16, activations in
 * float16) so that only the order of the sums differs. swiglu: y =
 * silu(W x) * (W x), W serving as gate and up. Returns the worst error
 * relative to the largest |y|. */
static double matmul_error(int rows, int cols, int bits, int group, int n_tok, bool swiglu)
{
    uint64_t rng = (uint64_t)rows * 31u + (uint64_t)cols * 7u + (uint64_t)bits * 3u + (uint64_t)group + (uint64_t)n_tok;
    size_t n_w = (size_t)rows * (size_t)cols;
    size_t words = bits ? n_w * (size_t)bits / 32u : 0;
    size_t n_groups = bits ? n_w / (size_t)group : 0;
    uint32_t *data = malloc(sizeof(uint32_t) * (words ? words : 1));
    _Float16 *dense = malloc(sizeof(_Float16) * (bits ? 1 : n_w));
    _Float16 *scales = malloc(sizeof(_Float16) * (n_groups ? n_groups : 1));
    _Float16 *biases = malloc(sizeof(_Float16) * (n_groups ? n_groups : 1));
    float *w = malloc(sizeof(float) * n_w), *x = malloc(sizeof(float) * (size_t)n_tok * cols);
    for (size_t i = 0; i < words; i++)
        data[i] = next_random(&rng) ^ next_random(&rng) << 16;
    for (size_t i = 0; i < n_groups; i++) {
        scales[i] = (_Float16)uniform(&rng, 0.001f, 0.02f);
        biases[i] = (_Float16)uniform(&rng, -0.05f, 0.05f);
    }
    for (size_t r = 0; r < (size_t)rows; r++)
        for (size_t c = 0; c < (size_t)cols; c++) {
            size_t i = r * (size_t)cols + c;
            if (bits) {
                size_t bit = i * (size_t)bits;   /* rows are whole words */
                uint32_t q = (data[bit / 32u] >> (bit % 32u)) & ((1u << bits) - 1u);
                size_t gi = r * (size_t)(cols / group) + c / (size_t)group;
                w[i] = (float)(_Float16)((float)q * (float)scales[gi] + (float)biases[gi]);
            } else {
                dense[i] = (_Float16)uniform(&rng, -0.05f, 0.05f);
                w[i] = (float)dense[i];
            }
        }
    for (size_t i = 0; i < (size_t)n_tok * cols; i++)
        x[i] = uniform(&rng, -1.0f, 1.0f);

    cuda_raw_weight raw = { .rows = rows, .cols = cols, .bits = bits, .group_size = group,
                            .dtype = CUDA_F16, .scale_dtype = CUDA_F16 };
    raw.data = bits ? to_device(data, sizeof(uint32_t) * words) : to_device(dense, sizeof(_Float16) * n_w);
    raw.scales = bits ? to_device(scales, sizeof(_Float16) * n_groups) : NULL;
    raw.biases = bits ? to_device(biases, sizeof(_Float16) * n_groups) : NULL;
    cuda_matrix m = { 0 };
    int b = bits ? bits : 16;
    cudaMalloc((void **)&m.tiles, cuda_matrix_tile_bytes(rows, cols, b));
    if (bits)
        cudaMalloc(&m.scale_bias, cuda_matrix_scale_bytes(rows, cols, group));
    float *xd = to_device(x, sizeof(float) * (size_t)n_tok * cols), *yd = NULL;
    void *frag = NULL;
    cudaMalloc(&frag, cuda_fragment_bytes(n_tok, cols));
    cudaMalloc((void **)&yd, sizeof(float) * (size_t)n_tok * rows);
    cudaError_t e = cuda_repack_weight(&raw, &m, 0);
    if (e == cudaSuccess)
        e = cuda_to_fragments(xd, n_tok, cols, NULL, 0.0f, frag, 0);
    if (e == cudaSuccess)
        e = cuda_matmul(&m, swiglu ? &m : NULL, frag, n_tok, NULL, NULL, yd, rows, 0, 1.0f, 0);
    float *y = malloc(sizeof(float) * (size_t)n_tok * rows);
    if (e == cudaSuccess)
        e = cudaMemcpy(y, yd, sizeof(float) * (size_t)n_tok * rows, cudaMemcpyDeviceToHost);
    double worst = e == cudaSuccess ? 0.0 : INFINITY, scale = 0.0;
    for (int t = 0; t < n_tok && e == cudaSuccess; t++)
        for (int r = 0; r < rows; r++) {
            double dot = 0.0;
            for (int c = 0; c < cols; c++)
                dot += (double)w[(size_t)r * cols + c] * (double)(float)(_Float16)x[(size_t)t * cols + c];
            if (swiglu)
                dot = dot / (1.0 + exp(-dot)) * dot;
            scale = fmax(scale, fabs(dot));
            worst = fmax(worst, fabs(dot - (double)y[(size_t)t * rows + r]));
        }
    cudaFree((void *)raw.data);
    cudaFree((void *)raw.scales);
    cudaFree((void *)raw.biases);
    cudaFree(m.tiles);
    cudaFree(m.scale_bias);
    cudaFree(xd);
    cudaFree(yd);
    cudaFree(frag);
    free(data);
    free(dense);
    free(scales);
    free(biases);
    free(w);
    free(x);
    free(y);
    return scale > 0.0 ? worst / scale : worst;
}

static void check_matmul_formats(void)
{
    static const struct { int rows, cols; } shapes[] = {
        { 200, 384 },     /* a partial tile; 6 column blocks: 4 warps per tile */
        { 20000, 256 },   /* 1250 tiles: 2 warps per tile */
        { 40000, 128 },   /* 2500 tiles: one warp per tile */
        { 12000, 1664 },  /* 26 column blocks over 8 warps: ranges of 3 and 4
                           * blocks, whose last chunk is cut short (13 groups
                           * of 128) */
    };
    static const int formats[][2] = { { 2, 32 }, { 2, 64 }, { 4, 32 }, { 4, 64 }, { 4, 128 },
                                      { 8, 32 }, { 8, 64 }, { 8, 128 }, { 0, 0 } };
    static const int toks[] = { 1, 5, 8, 20, 40 };
    int runs = 0, bad = 0;
    double worst = 0.0;
    if (!tap_ok(cuda_matmul_setup() == cudaSuccess, "matmul kernels set up"))
        return;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t f = 0; f < sizeof formats / sizeof formats[0]; f++)
            for (size_t t = 0; t < sizeof toks / sizeof toks[0]; t++)
                for (int sw = 0; sw < 2; sw++) {
                    if (s > 0 && (toks[t] > 5 || formats[f][0] != 4))
                        continue;   /* the long shapes: the split paths, in the common format */
                    double err = matmul_error(shapes[s].rows, shapes[s].cols, formats[f][0],
                                              formats[f][1] ? formats[f][1] : 32, toks[t], sw);
                    runs++;
                    worst = fmax(worst, err);
                    if (!(err <= 1e-3)) {
                        bad++;
                        tap_diag("matmul %dx%d, %d-bit groups of %d, %d tokens%s: error %.2e",
                                 shapes[s].rows, shapes[s].cols, formats[f][0], formats[f][1], toks[t],
                                 sw ? ", swiglu" : "", err);
                    }
                }
    tap_ok(bad == 0, "matmul on the GPU equals the host's within 1e-3 of max|y| in %d formats, shapes and token counts (worst %.2e)",
           runs, worst);
}

/* A token's result must not depend on the tokens beside it, nor on how
 * many rows are asked for (verification then gives the logits of decoding
 * token by token, and a limited vocabulary the full one's first logits):
 * the same matrix times 1, 5 and 20 tokens and a prefix of its rows, bit
 * for bit. */
static void check_matmul_bits(void)
{
    const int rows = 12000, cols = 1600, prefix = 4096, toks[] = { 1, 5, 20 };
    uint64_t rng = 99;
    size_t words = (size_t)rows * cols / 8u, groups = (size_t)rows * cols / 64u;
    uint32_t *data = malloc(words * sizeof *data);
    _Float16 *sb = malloc(groups * sizeof *sb);
    float *x = malloc(20u * cols * sizeof *x), *y = malloc(20u * rows * sizeof *y);
    float *first = malloc((size_t)rows * sizeof *first);
    for (size_t i = 0; i < words; i++)
        data[i] = next_random(&rng) ^ next_random(&rng) << 16;
    for (size_t i = 0; i < groups; i++)
        sb[i] = (_Float16)uniform(&rng, 0.001f, 0.02f);
    for (size_t i = 0; i < 20u * cols; i++)
        x[i] = uniform(&rng, -1.0f, 1.0f);
    cuda_raw_weight raw = { .rows = rows, .cols = cols, .bits = 4, .group_size = 64,
                            .dtype = CUDA_F16, .scale_dtype = CUDA_F16 };
    raw.data = to_device(data, words * sizeof *data);
    raw.scales = raw.biases = to_device(sb, groups * sizeof *sb);
    cuda_matrix m = { 0 };
    cudaMalloc((void **)&m.tiles, cuda_matrix_tile_bytes(rows, cols, 4));
    cudaMalloc(&m.scale_bias, cuda_matrix_scale_bytes(rows, cols, 64));
    float *yd = NULL;
    cudaMalloc((void **)&yd, 20u * rows * sizeof *yd);
    cudaError_t e = cuda_repack_weight(&raw, &m, 0);
    int same = 1, runs = 0;
    for (int sw = 0; sw < 2; sw++)
        for (int k = 0; k < 3 && e == cudaSuccess; k++) {
            float *xd = to_device(x, (size_t)toks[k] * cols * sizeof *x);
            void *frag = NULL;
            cudaMalloc(&frag, cuda_fragment_bytes(toks[k], cols));
            e = cuda_to_fragments(xd, toks[k], cols, NULL, 0.0f, frag, 0);
            for (int pre = 0; pre < (sw ? 1 : 2) && e == cudaSuccess; pre++) {
                int n = pre ? prefix : rows;
                e = cuda_matmul(&m, sw ? &m : NULL, frag, toks[k], NULL, NULL, yd, n, 0, 1.0f, 0);
                if (e == cudaSuccess)
                    e = cudaMemcpy(y, yd, (size_t)n * sizeof *y, cudaMemcpyDeviceToHost);
                if (e != cudaSuccess)
                    break;
                if (k == 0 && pre == 0)
                    memcpy(first, y, (size_t)rows * sizeof *y);
                else if (memcmp(first, y, (size_t)n * sizeof *y) != 0) {
                    same = 0;
                    tap_diag("token 0 of %d%s, %d rows: differs", toks[k], sw ? " (swiglu)" : "", n);
                }
                runs++;
            }
            cudaFree(frag);
            cudaFree(xd);
        }
    tap_ok(e == cudaSuccess && same, "matmul: token 0 the same bit for bit in %d launches of 1, 5 and 20 tokens, all rows or a prefix (%s)",
           runs, cudaGetErrorString(e));
    cudaFree((void *)raw.data);
    cudaFree((void *)raw.scales);
    cudaFree(m.tiles);
    cudaFree(m.scale_bias);
    cudaFree(yd);
    free(data);
    free(sb);
    free(x);
    free(y);
    free(first);
}

static float *device_randoms(uint64_t *rng, size_t n, float lo, float hi)
{
    float *h = malloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++)
        h[i] = uniform(rng, lo, hi);
    float *d = to_device(h, n * sizeof *h);
    free(h);
    return d;
}

/* n float16 values of a KV cache, uniform in [lo, hi), in device memory. */
static cuda_kv *device_kv_randoms(uint64_t *rng, size_t n, float lo, float hi)
{
    _Float16 *h = malloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++)
        h[i] = (_Float16)uniform(rng, lo, hi);
    cuda_kv *d = to_device(h, n * sizeof *h);
    free(h);
    return d;
}

/* Equal bit for bit, bytes of device memory. */
static bool device_same(const void *a, const void *b, size_t bytes)
{
    void *ha = malloc(bytes), *hb = malloc(bytes);
    cudaMemcpy(ha, a, bytes, cudaMemcpyDeviceToHost);
    cudaMemcpy(hb, b, bytes, cudaMemcpyDeviceToHost);
    bool same = memcmp(ha, hb, bytes) == 0;
    free(ha);
    free(hb);
    return same;
}

#ifdef ALM_HAVE_CUBLAS
/* Largest |a - b| over the largest |a|, of n floats (or float16 values) in
 * device memory. */
static double device_difference(const void *a, const void *b, size_t n, bool halves)
{
    size_t bytes = n * (halves ? 2 : 4);
    void *ha = malloc(bytes), *hb = malloc(bytes);
    cudaMemcpy(ha, a, bytes, cudaMemcpyDeviceToHost);
    cudaMemcpy(hb, b, bytes, cudaMemcpyDeviceToHost);
    double worst = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        double x = halves ? (double)((_Float16 *)ha)[i] : (double)((float *)ha)[i];
        double y = halves ? (double)((_Float16 *)hb)[i] : (double)((float *)hb)[i];
        scale = fmax(scale, fabs(x));
        worst = fmax(worst, fabs(x - y));
        if (isnan(x) != isnan(y))
            worst = INFINITY;
    }
    free(ha);
    free(hb);
    return scale > 0.0 ? worst / scale : worst;
}

/* A random weight of the format, repacked on the GPU. */
static cuda_matrix random_matrix(uint64_t *rng, int rows, int cols, int bits, int group)
{
    size_t n_w = (size_t)rows * (size_t)cols, words = bits ? n_w * (size_t)bits / 32u : n_w / 2u;
    size_t groups = bits ? n_w / (size_t)group : 1;
    uint32_t *data = malloc(words * sizeof *data);
    _Float16 *sb = malloc(2 * groups * sizeof *sb);
    for (size_t i = 0; i < words; i++) {
        if (bits) {
            data[i] = next_random(rng) ^ next_random(rng) << 16;
        } else {
            _Float16 pair[2] = { (_Float16)uniform(rng, -0.05f, 0.05f), (_Float16)uniform(rng, -0.05f, 0.05f) };
            memcpy(&data[i], pair, sizeof pair);
        }
    }
    for (size_t i = 0; i < 2 * groups; i++)
        sb[i] = (_Float16)(i < groups ? uniform(rng, 0.001f, 0.02f) : uniform(rng, -0.05f, 0.05f));
    cuda_raw_weight raw = { .rows = rows, .cols = cols, .bits = bits, .group_size = group,
                            .dtype = CUDA_F16, .scale_dtype = CUDA_F16 };
    raw.data = to_device(data, words * sizeof *data);
    _Float16 *sbd = to_device(sb, 2 * groups * sizeof *sb);
    raw.scales = bits ? sbd : NULL;
    raw.biases = bits ? sbd + groups : NULL;
    cuda_matrix m = { 0 };
    cudaMalloc((void **)&m.tiles, cuda_matrix_tile_bytes(rows, cols, bits ? bits : 16));
    if (bits)
        cudaMalloc(&m.scale_bias, cuda_matrix_scale_bytes(rows, cols, group));
    cuda_repack_weight(&raw, &m, 0);
    cudaDeviceSynchronize();
    cudaFree((void *)raw.data);
    cudaFree(sbd);
    free(data);
    free(sb);
    return m;
}

/* The GEMM against the matmul kernel for one format, shape and token
 * count: the o/down projection (+= with a bias), SwiGLU with its
 * fragments, and q/k/v of one input (two matrices, with biases). The
 * results differ only in the order of float32 sums. Returns the worst
 * difference relative to max|y| (fragments: float16, up to one rounding). */
static double gemm_difference(cuda_gemm *g, int rows, int cols, int bits, int group, int n_tok,
                              double *worst_frag)
{
    uint64_t rng = (uint64_t)rows * 13u + (uint64_t)cols + (uint64_t)bits * 5u + (uint64_t)n_tok;
    cuda_matrix w = random_matrix(&rng, rows, cols, bits, group);
    cuda_matrix up = random_matrix(&rng, rows, cols, bits, group);
    cuda_matrix k = random_matrix(&rng, rows / 2 / 16 * 16 + 16, cols, bits, group);
    float *x = device_randoms(&rng, (size_t)n_tok * cols, -1.0f, 1.0f);
    float *bias = device_randoms(&rng, (size_t)rows, -0.5f, 0.5f);
    float *up_bias = device_randoms(&rng, (size_t)rows, -0.5f, 0.5f);
    float *y0 = device_randoms(&rng, (size_t)n_tok * rows, -1.0f, 1.0f);
    size_t y_bytes = (size_t)n_tok * rows * sizeof(float);
    float *ya = NULL, *yb = NULL, *ka = NULL, *kb = NULL;
    void *frag = NULL, *fa = NULL, *fb = NULL;
    cudaMalloc((void **)&ya, y_bytes);
    cudaMalloc((void **)&yb, y_bytes);
    cudaMalloc((void **)&ka, (size_t)n_tok * k.rows * sizeof(float));
    cudaMalloc((void **)&kb, (size_t)n_tok * k.rows * sizeof(float));
    cudaMalloc(&frag, cuda_fragment_bytes(n_tok, cols));
    cudaMalloc(&fa, cuda_fragment_bytes(n_tok, rows));
    cudaMalloc(&fb, cuda_fragment_bytes(n_tok, rows));
    alm_error err = { 0 };
    double worst = 0.0;
    *worst_frag = 0.0;
    cudaError_t e = cuda_to_fragments(x, n_tok, cols, NULL, 0.0f, frag, 0);
    /* x += 0.5 (W h + b) */
    cudaMemcpy(ya, y0, y_bytes, cudaMemcpyDeviceToDevice);
    cudaMemcpy(yb, y0, y_bytes, cudaMemcpyDeviceToDevice);
    if (e == cudaSuccess)
        e = cuda_matmul(&w, NULL, frag, n_tok, bias, NULL, ya, rows, 1, 0.5f, 0);
    int r = cuda_gemm_matmul(g, &w, NULL, frag, n_tok, bias, NULL, yb, rows, 1, 0.5f, NULL, &err);
    cudaDeviceSynchronize();
    if (e == cudaSuccess && r == 0)
        worst = fmax(worst, device_difference(ya, yb, (size_t)n_tok * rows, false));
    /* SwiGLU and its fragments (rows a multiple of 64) */
    if (rows % 64 == 0) {
        cudaMemset(fa, 0, cuda_fragment_bytes(n_tok, rows));
        cudaMemset(fb, 0, cuda_fragment_bytes(n_tok, rows));
        if (e == cudaSuccess)
            e = cuda_swiglu_fragments(&w, &up, frag, n_tok, bias, up_bias, ya, fa, 0);
        if (r == 0)
            r = cuda_gemm_matmul(g, &w, &up, frag, n_tok, bias, up_bias, yb, rows, 0, 1.0f, fb, &err);
        cudaDeviceSynchronize();
        if (e == cudaSuccess && r == 0) {
            worst = fmax(worst, device_difference(ya, yb, (size_t)n_tok * rows, false));
            *worst_frag = device_difference(fa, fb, cuda_fragment_bytes(n_tok, rows) / 2, true);
        }
    }
    /* two matrices of one input, with biases */
    const cuda_matrix *ws[2] = { &w, &k };
    const float *bs[2] = { bias, up_bias };
    float *outs_a[2] = { ya, ka }, *outs_b[2] = { yb, kb };
    if (e == cudaSuccess)
        e = cuda_matmul_many(ws, 2, frag, n_tok, bs, outs_a, 0);
    if (r == 0)
        r = cuda_gemm_matmul_many(g, ws, 2, frag, n_tok, bs, outs_b, &err);
    cudaDeviceSynchronize();
    if (e == cudaSuccess && r == 0) {
        worst = fmax(worst, device_difference(ya, yb, (size_t)n_tok * rows, false));
        worst = fmax(worst, device_difference(ka, kb, (size_t)n_tok * k.rows, false));
    }
    if (e != cudaSuccess || r < 0) {
        tap_diag("gemm %dx%d: %s", rows, cols, r < 0 ? err.message : cudaGetErrorString(e));
        worst = INFINITY;
    }
    cuda_matrix *all[3] = { &w, &up, &k };
    for (int i = 0; i < 3; i++) {
        cudaFree(all[i]->tiles);
        cudaFree(all[i]->scale_bias);
    }
    void *bufs[] = { x, bias, up_bias, y0, ya, yb, ka, kb, frag, fa, fb };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        cudaFree(bufs[i]);
    return worst;
}

/* The last token's logits after a prompt of n tokens, in a sequence whose
 * work buffers (and so its prefill path) are made under the given
 * ALM_CUDA_GEMM and ALM_CUDA_FLASH: they are made at the first pass. */
static int prefill_logits(alm_model *model, const int32_t *ids, int n, bool gemm, bool flash,
                          float *logits, alm_error *err)
{
    alm_seq *seq = NULL;
    if (!gemm)
        setenv("ALM_CUDA_GEMM", "0", 1);
    if (!flash)
        setenv("ALM_CUDA_FLASH", "0", 1);
    int r = alm_seq_new(model, n + 8, &seq, err);
    if (r == 0)
        r = alm_seq_forward(seq, pool, ids, n, 1, logits, err);
    unsetenv("ALM_CUDA_GEMM");
    unsetenv("ALM_CUDA_FLASH");
    alm_seq_free(seq);
    return r;
}

/* Worst |a - b| and max|a| over a row of logits; whether the argmax agrees. */
static bool logits_agree(const float *a, const float *b, int vocab, double rel, double *worst,
                         double *scale)
{
    int arg_a = 0, arg_b = 0;
    *worst = *scale = 0.0;
    for (int i = 0; i < vocab; i++) {
        *scale = fmax(*scale, fabs(a[i]));
        *worst = fmax(*worst, fabs(a[i] - b[i]));
        if (a[i] > a[arg_a])
            arg_a = i;
        if (b[i] > b[arg_b])
            arg_b = i;
    }
    return *worst <= rel * *scale && arg_a == arg_b;
}

/* Three prefill paths of one prompt: the matmul kernel and the decode
 * attention kernel; the GEMM (same results within 1e-3); the GEMM and the
 * tensor-core attention, which rounds q, k, v to float16 (within the 1e-2
 * the engine promises on the GPU). */
static void check_gemm_logits(const char *label, alm_model *model, int n)
{
    alm_error err = { 0 };
    int vocab = alm_model_vocab_size(model);
    float *kernel = malloc(sizeof(float) * (size_t)vocab), *gemm = malloc(sizeof(float) * (size_t)vocab);
    float *flash = malloc(sizeof(float) * (size_t)vocab);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)((i * 7919u + 13u) % (unsigned)vocab);
    int r = prefill_logits(model, ids, n, false, false, kernel, &err);
    if (r == 0)
        r = prefill_logits(model, ids, n, true, false, gemm, &err);
    double worst = 0.0, scale = 0.0;
    bool ok = r == 0 && logits_agree(kernel, gemm, vocab, 1e-3, &worst, &scale);
    tap_ok(ok, "%s: the logits after a %d-token prompt through the prefill GEMM equal the matmul kernel's within 1e-3 x max|logit| (%.2e of %.2f), same argmax (%s)",
           label, n, worst, scale, r == 0 ? "ok" : err.message);
    if (r == 0)
        r = prefill_logits(model, ids, n, true, true, flash, &err);
    ok = r == 0 && logits_agree(kernel, flash, vocab, LOGIT_TOLERANCE, &worst, &scale);
    tap_ok(ok, "%s: with the tensor-core prefill attention too, within 1e-2 x max|logit| (%.2e of %.2f), same argmax (%s)",
           label, worst, scale, r == 0 ? "ok" : err.message);
    free(kernel);
    free(gemm);
    free(flash);
    free(ids);
}

static void check_gemm(void)
{
    alm_error err = { 0 };
    if (!cuda_prefill_gemm(&err)) {
        tap_diag("SKIP: prefill GEMM not checked: %s", err.message);
        return;
    }
    cuda_gemm *g = NULL;
    if (!tap_ok(cuda_gemm_new(0, &g, &err) == 0, "prefill GEMM set up (%s)", err.message))
        return;
    static const struct { int rows, cols, bits, group; } cases[] = {
        { 200, 384, 4, 64 }, { 256, 384, 4, 32 }, { 512, 640, 8, 64 }, { 384, 512, 2, 32 },
        { 320, 448, 0, 0 }, { 4096, 1664, 4, 128 },
    };
    static const int toks[] = { 64, 100, 512 };
    double worst = 0.0, worst_frag = 0.0;
    int runs = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (size_t t = 0; t < sizeof toks / sizeof toks[0]; t++) {
            double wf = 0.0;
            double d = gemm_difference(g, cases[c].rows, cases[c].cols, cases[c].bits,
                                       cases[c].group ? cases[c].group : 64, toks[t], &wf);
            if (!(d <= 1e-5) || !(wf <= 1e-3))
                tap_diag("gemm %dx%d, %d bits, %d tokens: %.2e (fragments %.2e)", cases[c].rows,
                         cases[c].cols, cases[c].bits, toks[t], d, wf);
            worst = fmax(worst, d);
            worst_frag = fmax(worst_frag, wf);
            runs++;
        }
    tap_ok(worst <= 1e-5 && worst_frag <= 1e-3,
           "prefill GEMM equals the matmul kernel in %d formats, shapes and token counts within 1e-5 of max|y| (worst %.2e; float16 fragments %.2e)",
           runs, worst, worst_frag);
    cuda_gemm_free(g);
}
#endif

/* The prefill attention on the tensor cores against the attention kernel
 * of decoding, over random queries and caches (the cache rows past the
 * pass hold NaN, which must not leak in): worst difference over max|v|,
 * and whether its float16 fragments are its own output rounded. */
static double flash_difference(int n_heads, int n_kv, int d, int n_tok, int pos0, int window,
                               bool *frag_ok)
{
    uint64_t rng = (uint64_t)(n_heads * 131 + d * 7 + n_tok + pos0 * 3 + window);
    cuda_attention_shape a = { n_heads, n_kv, d, window };
    int ctx = pos0 + n_tok, rows_alloc = ctx + 64, dim = n_heads * d;
    size_t nq = (size_t)n_tok * dim, nkv = (size_t)rows_alloc * n_kv * d;
    float *q = malloc(nq * sizeof *q), *k = malloc(nkv * sizeof *k), *v = malloc(nkv * sizeof *v);
    float *ref = malloc(nq * sizeof *ref), *got = malloc(nq * sizeof *got);
    _Float16 *rows = malloc(nq * sizeof *rows);
    for (size_t i = 0; i < nq; i++)
        q[i] = uniform(&rng, -4.0f, 4.0f);
    for (size_t i = 0; i < nkv; i++) {
        bool past = i >= (size_t)ctx * n_kv * d;
        k[i] = past ? NAN : uniform(&rng, -1.0f, 1.0f);
        v[i] = past ? NAN : uniform(&rng, -1.0f, 1.0f);
    }
    /* the cache as the GPU holds it: float16 */
    _Float16 *k16 = malloc(nkv * sizeof *k16), *v16 = malloc(nkv * sizeof *v16);
    for (size_t i = 0; i < nkv; i++) {
        k16[i] = (_Float16)k[i];
        v16[i] = (_Float16)v[i];
    }
    float *qd = to_device(q, nq * sizeof *q);
    cuda_kv *kd = to_device(k16, nkv * sizeof *k16), *vd = to_device(v16, nkv * sizeof *v16);
    free(k16);
    free(v16);
    float *out_ref = NULL, *out = NULL, *partials = NULL;
    void *frag = NULL, *frag_rows = NULL;
    size_t parts = (size_t)n_heads * n_tok * (size_t)((ctx + CUDA_ATTENTION_SPLIT_KEYS - 1) / CUDA_ATTENTION_SPLIT_KEYS);
    cudaError_t e = cudaMalloc((void **)&out_ref, nq * sizeof(float));
    if (e == cudaSuccess) e = cudaMalloc((void **)&out, nq * sizeof(float));
    if (e == cudaSuccess) e = cudaMalloc((void **)&partials, parts * cuda_attention_partial_floats(d) * sizeof(float));
    if (e == cudaSuccess) e = cudaMalloc(&frag, cuda_fragment_bytes(n_tok, dim));
    if (e == cudaSuccess) e = cudaMalloc(&frag_rows, nq * sizeof(_Float16));
    const cuda_attention_scratch scratch = { partials, parts, NULL, 0, 0 };
    if (e == cudaSuccess)
        e = cuda_attention(&a, qd, n_tok, pos0, NULL, ctx, kd, vd, out_ref, &scratch, NULL, 0);
    if (e == cudaSuccess)
        e = cuda_flash_attention(&a, qd, n_tok, pos0, kd, vd, out, frag, 0);
    if (e == cudaSuccess)
        e = cuda_fragments_to_rows(frag, n_tok, dim, frag_rows, 0);
    if (e == cudaSuccess) e = cudaMemcpy(ref, out_ref, nq * sizeof(float), cudaMemcpyDeviceToHost);
    if (e == cudaSuccess) e = cudaMemcpy(got, out, nq * sizeof(float), cudaMemcpyDeviceToHost);
    if (e == cudaSuccess) e = cudaMemcpy(rows, frag_rows, nq * sizeof(_Float16), cudaMemcpyDeviceToHost);
    double worst = e == cudaSuccess ? 0.0 : INFINITY;
    *frag_ok = e == cudaSuccess;
    for (size_t i = 0; e == cudaSuccess && i < nq; i++) {
        double diff = fabs((double)got[i] - (double)ref[i]);
        worst = diff > worst || isnan(diff) ? diff : worst;
        if (rows[i] != (_Float16)got[i])
            *frag_ok = false;
    }
    if (e != cudaSuccess)
        tap_diag("flash attention: %s", cudaGetErrorString(e));
    cudaFree(qd);
    cudaFree(kd);
    cudaFree(vd);
    cudaFree(out_ref);
    cudaFree(out);
    cudaFree(partials);
    cudaFree(frag);
    cudaFree(frag_rows);
    free(q);
    free(k);
    free(v);
    free(ref);
    free(got);
    free(rows);
    return worst;
}

static void check_flash_attention(void)
{
    static const struct { int heads, kv, d, n_tok, pos0, window; } cases[] = {
        { 4, 2, 16, 70, 0, 0 },       /* a partial second block of queries */
        { 4, 2, 32, 100, 30, 16 },    /* a sliding window, after a cached prefix */
        { 14, 2, 64, 130, 0, 0 },     /* seven query heads per key head */
        { 32, 8, 128, 512, 0, 0 },    /* llama3-8b's prompt */
        { 8, 8, 128, 65, 300, 0 },    /* a long cached prefix */
        { 4, 1, 64, 200, 10, 100 },   /* a window that spans key tiles */
    };
    if (!tap_ok(cuda_attention_setup() == cudaSuccess, "attention kernel set up"))
        return;
    double worst = 0.0;
    int frags_ok = 1, n = (int)(sizeof cases / sizeof cases[0]);
    for (int c = 0; c < n; c++) {
        bool frag_ok = false;
        double d = flash_difference(cases[c].heads, cases[c].kv, cases[c].d, cases[c].n_tok,
                                    cases[c].pos0, cases[c].window, &frag_ok);
        if (!(d <= 5e-3) || !frag_ok)
            tap_diag("flash attention, %d heads (%d kv) of %d, %d tokens at %d, window %d: %.2e%s",
                     cases[c].heads, cases[c].kv, cases[c].d, cases[c].n_tok, cases[c].pos0,
                     cases[c].window, d, frag_ok ? "" : ", fragments differ");
        worst = d > worst || isnan(d) ? d : worst;
        frags_ok &= frag_ok;
    }
    tap_ok(worst <= 5e-3 && frags_ok,
           "prefill attention on the tensor cores equals the decode kernel's within 5e-3 of max|v| in %d shapes (worst %.2e), its fragments its output rounded",
           n, worst);
}

/* Random inputs of one attention shape, and two outputs (with their
 * fragments) for two ways of computing it; pos_dev: the position read on
 * the GPU, with a grid for a context of ctx keys (as graphs run it). */
typedef struct attention_case {
    cuda_attention_shape a;
    int n_tok, pos0, span;
    size_t q_n, parts, frag_bytes;
    bool with_frag;
    float *q, *partials, *out[2];
    cuda_kv *kc, *vc;
    void *frag[2];
    int *pos_d;
    const int *pd;   /* pos_d or NULL */
} attention_case;

static void attention_case_new(attention_case *c, uint64_t seed, int heads, int kv, int d, int n_tok,
                               int pos0, int window, bool pos_dev, int ctx)
{
    memset(c, 0, sizeof *c);
    c->a = (cuda_attention_shape){ heads, kv, d, window };
    c->n_tok = n_tok;
    c->pos0 = pos0;
    c->q_n = (size_t)n_tok * heads * d;
    const size_t c_n = (size_t)ctx * kv * d;
    c->q = device_randoms(&seed, c->q_n, -1.0f, 1.0f);
    c->kc = device_kv_randoms(&seed, c_n, -1.0f, 1.0f);
    c->vc = device_kv_randoms(&seed, c_n, -1.0f, 1.0f);
    c->parts = (size_t)heads * (size_t)n_tok * (size_t)(ctx / CUDA_ATTENTION_SPLIT_KEYS);
    c->frag_bytes = cuda_fragment_bytes(n_tok, heads * d);
    c->with_frag = (heads * d) % 64 == 0;
    cudaMalloc((void **)&c->partials, c->parts * cuda_attention_partial_floats(d) * sizeof(float));
    for (int i = 0; i < 2; i++) {
        cudaMalloc((void **)&c->out[i], c->q_n * sizeof(float));
        cudaMalloc(&c->frag[i], c->frag_bytes);
        cudaMemset(c->frag[i], 0, c->frag_bytes);
    }
    cudaMalloc((void **)&c->pos_d, sizeof(int));
    cudaMemcpy(c->pos_d, &pos0, sizeof(int), cudaMemcpyHostToDevice);
    c->pd = pos_dev ? c->pos_d : NULL;
    c->span = pos_dev ? ctx : 0;
}

/* Output i of the case computed with scratch. */
static cudaError_t attention_case_run(const attention_case *c, int i, const cuda_attention_scratch *scratch)
{
    return cuda_attention(&c->a, c->q, c->n_tok, c->pos0, c->pd, c->span, c->kc, c->vc, c->out[i], scratch,
                          c->with_frag ? c->frag[i] : NULL, 0);
}

/* Whether the two outputs (and fragments) are the same bits. */
static bool attention_case_same(const attention_case *c)
{
    return device_same(c->out[0], c->out[1], c->q_n * sizeof(float)) &&
           (!c->with_frag || device_same(c->frag[0], c->frag[1], c->frag_bytes));
}

static void attention_case_free(attention_case *c)
{
    void *bufs[] = { c->q, c->kc, c->vc, c->partials, c->pos_d, c->out[0], c->out[1], c->frag[0], c->frag[1] };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        cudaFree(bufs[i]);
}

/* The argmax kernel (cuda_argmax: a block a chunk of a row, the row's last
 * block merges) against the host: the first index of the largest value,
 * -1 for a row with a NaN or +infinity or only -infinity, 1 / sum of
 * exp(l - max) within 1e-5, and nothing from past n_valid; rows of one
 * chunk and of many, a tie across chunks, the maximum at the last index;
 * twice, since the launch must leave its counters as it found them. */
static void check_argmax_kernel(void)
{
    enum { ROWS = 6, STRIDE = 128256 };
    static const int valid[] = { STRIDE, 50000, 8192, 1000 };
    uint64_t rng = 77;
    float *h = malloc(sizeof(float) * ROWS * STRIDE);
    const int max_n = 7;   /* counters of 28 bytes: the parts after them aligned all the same */
    const size_t scratch_bytes = cuda_argmax_scratch_bytes(max_n, STRIDE);
    void *scratch = NULL;
    int32_t *ids = NULL;
    float *top = NULL, *d = NULL;
    bool ok = cudaMalloc(&scratch, scratch_bytes) == cudaSuccess &&
              cudaMemset(scratch, 0, scratch_bytes) == cudaSuccess &&
              cudaMalloc((void **)&ids, sizeof(int32_t) * max_n) == cudaSuccess &&
              cudaMalloc((void **)&top, sizeof(float) * max_n) == cudaSuccess &&
              cudaMalloc((void **)&d, sizeof(float) * ROWS * STRIDE) == cudaSuccess;
    int wrong = 0, cases = 0;
    double worst_top = 0.0;
    for (size_t v = 0; ok && v < sizeof valid / sizeof valid[0]; v++) {
        const int n_valid = valid[v];
        for (size_t i = 0; i < (size_t)ROWS * STRIDE; i++)
            h[i] = uniform(&rng, -20.0f, 20.0f);
        float *r = h;
        r[n_valid / 3] = r[n_valid - 1] = 30.0f;          /* row 0: a tie, the first wins */
        r = h + STRIDE;
        r[n_valid - 1] = 31.0f;                           /* row 1: the last index */
        if (n_valid < STRIDE)
            r[n_valid] = 99.0f;                           /* past the limit: not seen */
        h[2 * STRIDE + n_valid / 2] = NAN;                /* row 2: -1 */
        h[3 * STRIDE + 7] = INFINITY;                     /* row 3: -1 */
        for (int i = 0; i < STRIDE; i++)                  /* row 4: all -infinity, -1 */
            h[4 * STRIDE + i] = -INFINITY;
        for (int i = 0; i < STRIDE; i++)                  /* row 5: -infinity but one */
            h[5 * STRIDE + i] = i == n_valid / 2 + 1 ? -3.0f : -INFINITY;
        cudaMemcpy(d, h, sizeof(float) * ROWS * STRIDE, cudaMemcpyHostToDevice);
        for (int rep = 0; rep < 2; rep++) {
            int32_t got[ROWS];
            float got_top[ROWS];
            ok = cuda_argmax(d, ROWS, STRIDE, n_valid, ids, top, scratch, max_n, 0) == cudaSuccess &&
                 cudaMemcpy(got, ids, sizeof got, cudaMemcpyDeviceToHost) == cudaSuccess &&
                 cudaMemcpy(got_top, top, sizeof got_top, cudaMemcpyDeviceToHost) == cudaSuccess;
            for (int row = 0; ok && row < ROWS; row++) {
                const float *l = h + (size_t)row * STRIDE;
                int32_t want = -1;
                bool bad = false;
                for (int i = 0; i < n_valid; i++) {
                    if (isnan(l[i]) || l[i] == INFINITY)
                        bad = true;
                    else if (l[i] != -INFINITY && (want < 0 || l[i] > l[want]))
                        want = i;
                }
                if (bad)
                    want = -1;
                cases++;
                wrong += got[row] != want;
                if (want >= 0) {
                    double sum = 0.0;
                    for (int i = 0; i < n_valid; i++)
                        sum += exp((double)l[i] - (double)l[want]);
                    worst_top = fmax(worst_top, fabs(got_top[row] * sum - 1.0));
                } else {
                    wrong += got_top[row] != 0.0f;
                }
            }
        }
    }
    tap_ok(ok && wrong == 0 && worst_top < 1e-5,
           "argmax kernel: %d rows as the host finds them (%d wrong), the top probability within %.1e",
           cases, wrong, worst_top);
    cudaFree(scratch);
    cudaFree(ids);
    cudaFree(top);
    cudaFree(d);
    free(h);
}

/* The attention whose last block merges the splits (counters given)
 * against the merge launch, for one shape: the output and its fragments
 * bit for bit, and the counters left at zero. */
static bool merge_in_last_block_same(int heads, int kv, int d, int n_tok, int pos0, int window,
                                     bool pos_dev)
{
    attention_case c;
    attention_case_new(&c, (uint64_t)(heads * 7 + kv * 3 + d + n_tok * 11 + pos0 + window + 2 * pos_dev), heads,
                       kv, d, n_tok, pos0, window, pos_dev, 1024);
    unsigned *counters = NULL;
    const size_t n_counters = CUDA_ATTENTION_COUNTERS(heads, n_tok);
    cudaMalloc((void **)&counters, n_counters * sizeof(unsigned));
    cudaMemset(counters, 0, n_counters * sizeof(unsigned));
    const cuda_attention_scratch plain = { c.partials, c.parts, NULL, 0, 0 };
    const cuda_attention_scratch counted = { c.partials, c.parts, counters, n_counters, 0 };
    cudaError_t e = attention_case_run(&c, 0, &plain);
    /* twice: the first launch must leave the counters as it found them */
    for (int twice = 0; twice < 2 && e == cudaSuccess; twice++)
        e = attention_case_run(&c, 1, &counted);
    cudaDeviceSynchronize();
    unsigned *left = calloc(n_counters, sizeof *left);
    cudaMemcpy(left, counters, n_counters * sizeof *left, cudaMemcpyDeviceToHost);
    size_t nonzero = 0;
    for (size_t i = 0; i < n_counters; i++)
        nonzero += left[i] != 0;
    free(left);
    bool same = e == cudaSuccess && nonzero == 0 && attention_case_same(&c);
    if (!same)
        tap_diag("merge in the last block, %d heads (%d kv) of %d, %d tokens at %d, window %d%s: %s", heads,
                 kv, d, n_tok, pos0, window, pos_dev ? ", position on the GPU" : "",
                 e != cudaSuccess ? cudaGetErrorString(e) : nonzero ? "counters left set" : "differs");
    cudaFree(counters);
    attention_case_free(&c);
    return same;
}

static void check_merge_in_last_block(void)
{
    static const struct { int heads, kv, d, n_tok, pos0, window, pos_dev; } cases[] = {
        { 32, 8, 128, 1, 540, 0, 1 },    /* a llama3-8b decode step, as a graph runs it */
        { 32, 8, 128, 5, 61, 0, 0 },     /* verifying 4 draft tokens across a split */
        { 16, 8, 128, 17, 900, 0, 1 },   /* 17 tokens, 15 splits */
        { 14, 2, 64, 3, 0, 0, 0 },       /* the first tokens of a sequence: one split */
        { 4, 2, 96, 6, 100, 32, 0 },     /* a sliding window; 96 columns */
        { 4, 1, 16, 2, 300, 0, 1 },      /* a tiny model's heads (no fragments) */
    };
    int n = (int)(sizeof cases / sizeof cases[0]), same = 0;
    for (int c = 0; c < n; c++)
        same += merge_in_last_block_same(cases[c].heads, cases[c].kv, cases[c].d, cases[c].n_tok,
                                         cases[c].pos0, cases[c].window, cases[c].pos_dev);
    tap_ok(same == n,
           "attention merging its splits in its last block equals the merge launch bit for bit and leaves its counters at zero (%d of %d shapes)",
           same, n);
}

/* The decode attention against the host, in double precision from the
 * same float16 cache: the other checks compare the kernel's ways with each
 * other, this one its arithmetic with the definition (softmax(q k / sqrt
 * d) v over the window up to each token's position). Worst difference
 * over max|out|. */
static double attention_reference_difference(int cluster, int heads, int kv, int d, int n_tok, int pos0,
                                             int window, int ctx)
{
    attention_case c;
    attention_case_new(&c, (uint64_t)(heads * 17 + kv * 5 + d * 3 + n_tok + pos0 * 11 + window + cluster), heads,
                       kv, d, n_tok, pos0, window, false, ctx);
    unsigned *counters = NULL;
    const size_t n_counters = CUDA_ATTENTION_COUNTERS(heads, n_tok);
    cudaMalloc((void **)&counters, n_counters * sizeof(unsigned));
    cudaMemset(counters, 0, n_counters * sizeof(unsigned));
    const cuda_attention_scratch scratch = { c.partials, c.parts, counters, n_counters, cluster };
    cudaError_t e = attention_case_run(&c, 0, &scratch);
    if (e == cudaSuccess)
        e = cudaDeviceSynchronize();
    const size_t cache_n = (size_t)ctx * kv * d;
    float *q = malloc(c.q_n * sizeof *q), *out = malloc(c.q_n * sizeof *out);
    _Float16 *k = malloc(cache_n * sizeof *k), *v = malloc(cache_n * sizeof *v);
    double *p = malloc((size_t)ctx * sizeof *p);
    if (e == cudaSuccess) e = cudaMemcpy(q, c.q, c.q_n * sizeof *q, cudaMemcpyDeviceToHost);
    if (e == cudaSuccess) e = cudaMemcpy(out, c.out[0], c.q_n * sizeof *out, cudaMemcpyDeviceToHost);
    if (e == cudaSuccess) e = cudaMemcpy(k, c.kc, cache_n * sizeof *k, cudaMemcpyDeviceToHost);
    if (e == cudaSuccess) e = cudaMemcpy(v, c.vc, cache_n * sizeof *v, cudaMemcpyDeviceToHost);
    double worst = e == cudaSuccess ? 0.0 : -1.0, scale = 0.0;
    const int group = heads / kv;
    for (int t = 0; e == cudaSuccess && t < n_tok; t++) {
        const int pos = pos0 + t, first = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
        for (int h = 0; h < heads; h++) {
            const float *qh = q + ((size_t)t * heads + h) * d;
            const int kh = h / group;
            double most = -INFINITY, sum = 0.0;
            for (int j = first; j <= pos; j++) {
                const _Float16 *kr = k + ((size_t)j * kv + kh) * d;
                double dot = 0.0;
                for (int i = 0; i < d; i++)
                    dot += (double)qh[i] * (double)kr[i];
                p[j] = dot / sqrt((double)d);
                most = fmax(most, p[j]);
            }
            for (int j = first; j <= pos; j++) {
                p[j] = exp(p[j] - most);
                sum += p[j];
            }
            for (int i = 0; i < d; i++) {
                double o = 0.0;
                for (int j = first; j <= pos; j++)
                    o += p[j] * (double)v[((size_t)j * kv + kh) * d + i];
                o /= sum;
                const double got = out[((size_t)t * heads + h) * d + i];
                worst = fmax(worst, fabs(got - o));
                if (isnan(got))
                    worst = INFINITY;
                scale = fmax(scale, fabs(o));
            }
        }
    }
    free(q);
    free(out);
    free(k);
    free(v);
    free(p);
    cudaFree(counters);
    attention_case_free(&c);
    return worst > 0.0 && scale > 0.0 ? worst / scale : worst;
}

static void check_attention_reference(void)
{
    static const struct { int cluster, heads, kv, d, n_tok, pos0, window, ctx; } cases[] = {
        { 16, 32, 8, 128, 1, 540, 0, 1024 },   /* a llama3-8b decode step in clusters */
        { 0, 32, 8, 128, 1, 540, 0, 1024 },    /* the same, merged through memory */
        { 0, 16, 4, 128, 5, 61, 0, 128 },      /* a verification across a split */
        { 0, 8, 8, 256, 2, 70, 0, 128 },       /* 256 columns */
        { 0, 8, 4, 64, 4, 300, 128, 384 },     /* a sliding window */
        { 0, 4, 1, 16, 3, 20, 0, 64 },         /* a tiny model's heads */
    };
    const int n = (int)(sizeof cases / sizeof cases[0]);
    int good = 0;
    double worst = 0.0;
    for (int i = 0; i < n; i++) {
        const double diff = attention_reference_difference(cases[i].cluster, cases[i].heads, cases[i].kv, cases[i].d,
                                                           cases[i].n_tok, cases[i].pos0, cases[i].window,
                                                           cases[i].ctx);
        const bool ok = diff >= 0.0 && diff <= 1e-5;
        if (!ok)
            tap_diag("attention against the host: %d heads (%d kv) of %d, %d tokens at %d, window %d%s: %.2e",
                     cases[i].heads, cases[i].kv, cases[i].d, cases[i].n_tok, cases[i].pos0, cases[i].window,
                     cases[i].cluster ? ", clusters" : "", diff);
        good += ok;
        worst = fmax(worst, diff);
    }
    tap_ok(good == n, "the decode attention equals the host's from the same float16 cache within 1e-5 of max|out| "
                      "(%d of %d shapes, worst %.1e)", good, n, worst);
}

/* The attention that merges its splits inside thread block clusters
 * against the merge through global memory, for one shape: up to `cluster`
 * tiles of keys the splits are the same and so must the bits be (output
 * and fragments); past that a block takes several tiles, and the results
 * agree within 1e-5 of max|out|. Returns the difference (0: same bits),
 * or a negative number when a launch failed. */
static double cluster_merge_difference(int cluster, int heads, int kv, int d, int n_tok, int pos0,
                                       int window, bool pos_dev, int ctx)
{
    attention_case c;
    attention_case_new(&c, (uint64_t)(heads * 5 + kv * 7 + d + n_tok * 13 + pos0 + window + 3 * pos_dev), heads,
                       kv, d, n_tok, pos0, window, pos_dev, ctx);
    const cuda_attention_scratch plain = { c.partials, c.parts, NULL, 0, 0 };
    const cuda_attention_scratch clustered = { NULL, 0, NULL, 0, cluster };
    cudaError_t e = attention_case_run(&c, 0, &plain);
    if (e == cudaSuccess)
        e = attention_case_run(&c, 1, &clustered);
    if (e == cudaSuccess)
        e = cudaDeviceSynchronize();
    double diff = -1.0;
    if (e == cudaSuccess) {
        if (attention_case_same(&c))
            diff = 0.0;
        else {
            float *h[2] = { malloc(c.q_n * sizeof(float)), malloc(c.q_n * sizeof(float)) };
            cudaMemcpy(h[0], c.out[0], c.q_n * sizeof(float), cudaMemcpyDeviceToHost);
            cudaMemcpy(h[1], c.out[1], c.q_n * sizeof(float), cudaMemcpyDeviceToHost);
            double most = 0.0, worst = 0.0;
            for (size_t i = 0; i < c.q_n; i++) {
                most = fmax(most, fabs(h[0][i]));
                worst = fmax(worst, fabs((double)h[0][i] - h[1][i]));
            }
            diff = most > 0.0 ? worst / most : worst;
            if (isnan(diff))
                diff = INFINITY;
            free(h[0]);
            free(h[1]);
        }
    } else
        tap_diag("attention in clusters of %d, %d heads (%d kv) of %d, %d tokens at %d: %s", cluster, heads,
                 kv, d, n_tok, pos0, cudaGetErrorString(e));
    attention_case_free(&c);
    return diff;
}

static void check_cluster_merge(void)
{
    static const struct { int heads, kv, d, n_tok, pos0, window, pos_dev, ctx; } cases[] = {
        { 32, 8, 128, 1, 540, 0, 1, 1024 },    /* a llama3-8b decode step, as a graph runs it */
        { 32, 8, 128, 5, 61, 0, 0, 1024 },     /* verifying 4 draft tokens across a split */
        { 16, 8, 128, 17, 900, 0, 1, 1024 },   /* 17 tokens, 15 splits */
        { 14, 2, 64, 3, 0, 0, 0, 1024 },       /* the first tokens of a sequence: one split */
        { 4, 2, 96, 6, 100, 32, 0, 1024 },     /* a sliding window; 96 columns */
        { 4, 1, 16, 2, 300, 0, 1, 1024 },      /* a tiny model's heads (no fragments) */
        { 8, 1, 256, 2, 700, 0, 0, 1024 },     /* head dimension 256, 8 heads a KV head */
        { 32, 8, 128, 5, 3000, 0, 1, 4096 },   /* several tiles a block */
        { 28, 4, 128, 1, 2500, 600, 0, 4096 }, /* several tiles and a window */
    };
    cuda_attention_shape probe = { 32, 8, 128, 0 };
    const int cluster = cuda_attention_cluster_blocks(&probe);
    if (!cluster) {
        tap_ok(1, "attention in thread block clusters # SKIP this GPU has none (compute capability below 9.0)");
        return;
    }
    int n = (int)(sizeof cases / sizeof cases[0]), good = 0;
    for (int c = 0; c < n; c++) {
        cuda_attention_shape a = { cases[c].heads, cases[c].kv, cases[c].d, cases[c].window };
        int blocks = cuda_attention_cluster_blocks(&a);
        if (!blocks) {
            tap_diag("attention in clusters: no cluster fits %d heads of %d", cases[c].heads, cases[c].d);
            continue;
        }
        for (int size = 8; size <= blocks; size *= 2) {
            double diff = cluster_merge_difference(size, cases[c].heads, cases[c].kv, cases[c].d,
                                                   cases[c].n_tok, cases[c].pos0, cases[c].window,
                                                   cases[c].pos_dev, cases[c].ctx);
            const int tiles = (cases[c].pos0 + cases[c].n_tok + CUDA_ATTENTION_SPLIT_KEYS - 1) /
                              CUDA_ATTENTION_SPLIT_KEYS;
            const bool ok = tiles <= size ? diff == 0.0 : diff >= 0.0 && diff <= 1e-5;
            if (!ok)
                tap_diag("attention in clusters of %d, %d heads (%d kv) of %d, %d tokens at %d, window %d: %s %.2e",
                         size, cases[c].heads, cases[c].kv, cases[c].d, cases[c].n_tok, cases[c].pos0,
                         cases[c].window, tiles <= size ? "not the same bits," : "differs by", diff);
            good += ok && size == blocks;
        }
    }
    tap_ok(good == n,
           "attention merging in thread block clusters (of %d) equals the merge through memory: the same bits up to a tile a block, within 1e-5 past (%d of %d shapes)",
           cluster, good, n);
}

/* The rotation and the attention in one launch (cuda_rope_attention)
 * against cuda_rope_store and then cuda_attention, for one shape: the
 * output, its fragments and the whole cache bit for bit. cluster 0: the
 * merge through memory (with its counters), as a verification runs; where
 * a KV head has 3 or 4 query heads, two tokens a block, a warp doing the
 * work of the other's two, against a block a token. */
static bool rope_attention_same(int cluster, int heads, int kv, int d, int n_tok, int pos0, int window,
                                bool pos_dev, bool norms, int ctx)
{
    attention_case c;
    uint64_t seed = (uint64_t)(heads * 3 + kv * 11 + d + n_tok * 13 + pos0 * 7 + window + 5 * pos_dev + norms);
    attention_case_new(&c, seed, heads, kv, d, n_tok, pos0, window, pos_dev, ctx);
    const size_t kv_n = (size_t)n_tok * kv * d, cache_n = (size_t)ctx * kv * d, half_n = (size_t)ctx * (d / 2);
    float *k = device_randoms(&seed, kv_n, -1.0f, 1.0f), *v = device_randoms(&seed, kv_n, -1.0f, 1.0f);
    float *cos_t = device_randoms(&seed, half_n, -1.0f, 1.0f), *sin_t = device_randoms(&seed, half_n, -1.0f, 1.0f);
    float *q_norm = norms ? device_randoms(&seed, (size_t)d, 0.5f, 1.5f) : NULL;
    float *k_norm = norms ? device_randoms(&seed, (size_t)d, 0.5f, 1.5f) : NULL;
    float *q_rot = NULL;
    cuda_kv *kc2 = NULL, *vc2 = NULL;
    cudaMalloc((void **)&q_rot, c.q_n * sizeof(float));
    cudaMalloc((void **)&kc2, cache_n * sizeof(cuda_kv));
    cudaMalloc((void **)&vc2, cache_n * sizeof(cuda_kv));
    cudaMemcpy(q_rot, c.q, c.q_n * sizeof(float), cudaMemcpyDeviceToDevice);
    cudaMemcpy(kc2, c.kc, cache_n * sizeof(cuda_kv), cudaMemcpyDeviceToDevice);
    cudaMemcpy(vc2, c.vc, cache_n * sizeof(cuda_kv), cudaMemcpyDeviceToDevice);
    unsigned *counters = NULL;
    const size_t n_counters = CUDA_ATTENTION_COUNTERS(heads, n_tok);
    cudaMalloc((void **)&counters, n_counters * sizeof(unsigned));
    cudaMemset(counters, 0, n_counters * sizeof(unsigned));
    const float eps = 1e-6f;
    const cuda_attention_scratch scratch = { c.partials, c.parts, counters, n_counters, cluster };
    const cuda_rope rope = { cos_t, sin_t, q_norm, k_norm, eps };
    const char *why = NULL;
    if (!cuda_rope_attention_fits(&c.a, n_tok, pos0, c.pd, c.span, &scratch))
        why = "refused as not fitting";
    cudaError_t e = cuda_rope_store(&c.a, cos_t, sin_t, q_norm, k_norm, eps, q_rot, k, v, n_tok, pos0, c.pd,
                                    c.kc, c.vc, 0);
    if (e == cudaSuccess)
        e = cuda_attention(&c.a, q_rot, n_tok, pos0, c.pd, c.span, c.kc, c.vc, c.out[0], &scratch,
                           c.with_frag ? c.frag[0] : NULL, 0);
    if (e == cudaSuccess)
        e = cuda_rope_attention(&c.a, &rope, c.q, k, v, n_tok, pos0, c.pd, c.span, kc2, vc2, c.out[1], &scratch,
                                c.with_frag ? c.frag[1] : NULL, 0);
    if (e == cudaSuccess)
        e = cudaDeviceSynchronize();
    if (!why)
        why = e != cudaSuccess ? cudaGetErrorString(e)
              : !attention_case_same(&c) ? "the output differs"
              : !device_same(c.kc, kc2, cache_n * sizeof(cuda_kv)) ? "the keys' cache differs"
              : !device_same(c.vc, vc2, cache_n * sizeof(cuda_kv)) ? "the values' cache differs"
                                                                : NULL;
    if (why)
        tap_diag("rope and attention in one launch, %s%d, %d heads (%d kv) of %d, %d tokens at %d, window %d%s%s: %s",
                 cluster ? "clusters of " : "merge through memory", cluster, heads, kv, d, n_tok, pos0, window,
                 norms ? ", q/k norms" : "", pos_dev ? ", position on the GPU" : "", why);
    void *bufs[] = { k, v, cos_t, sin_t, q_norm, k_norm, q_rot, kc2, vc2, counters };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        cudaFree(bufs[i]);
    attention_case_free(&c);
    return !why;
}

static void check_rope_attention(void)
{
    static const struct { int heads, kv, d, n_tok, pos0, window, pos_dev, norms, ctx; } cases[] = {
        { 32, 8, 128, 1, 540, 0, 1, 0, 1024 },   /* a llama3-8b decode step, as a graph runs it */
        { 32, 8, 128, 5, 540, 0, 1, 0, 1024 },   /* verifying 4 draft tokens */
        { 32, 8, 128, 5, 61, 0, 0, 0, 1024 },    /* ... across a split */
        { 64, 8, 128, 1, 700, 0, 0, 0, 1024 },   /* llama3-70b: 8 heads a block */
        { 64, 8, 128, 7, 700, 0, 1, 0, 1024 },
        { 16, 8, 128, 1, 63, 0, 1, 1, 1024 },    /* qwen3's q/k norms; the new key last of a tile */
        { 16, 8, 128, 17, 900, 0, 1, 1, 1024 },  /* 17 tokens across splits */
        { 14, 2, 64, 1, 0, 0, 0, 1, 1024 },      /* the first token of a sequence */
        { 14, 2, 64, 3, 0, 0, 0, 1, 1024 },
        { 4, 2, 96, 1, 130, 32, 0, 0, 1024 },    /* a sliding window; 96 columns */
        { 4, 2, 96, 6, 100, 32, 0, 0, 1024 },
        { 4, 2, 96, 6, 100, 4, 1, 1, 1024 },     /* a window shorter than the pass */
        { 4, 1, 16, 2, 300, 0, 1, 1, 1024 },     /* a tiny model's heads (no fragments) */
        { 8, 1, 256, 1, 700, 0, 0, 1, 1024 },    /* head dimension 256 */
        { 8, 1, 256, 2, 700, 0, 0, 1, 1024 },
        /* two tokens a block (4 or 3 heads a KV head, no window) */
        { 16, 4, 128, 4, 62, 0, 1, 1, 1024 },    /* q/k norms; the pass across a tile's end */
        { 12, 4, 64, 7, 125, 0, 0, 1, 1024 },    /* 3 heads a KV head, an odd count, 64 columns */
        { 16, 4, 256, 3, 190, 0, 0, 1, 1024 },   /* head dimension 256 */
        { 8, 2, 64, 5, 0, 0, 0, 0, 1024 },       /* the first tokens: one split, no merge */
    };
    cuda_attention_shape probe = { 32, 8, 128, 0 };
    const int most = cuda_attention_cluster_blocks(&probe);
    int n = (int)(sizeof cases / sizeof cases[0]), good = 0, runs = 0;
    for (int c = 0; c < n; c++) {
        cuda_attention_shape a = { cases[c].heads, cases[c].kv, cases[c].d, cases[c].window };
        const int blocks = cases[c].n_tok == 1 ? cuda_attention_cluster_blocks(&a) : 0;
        const int keys = cases[c].pos_dev ? cases[c].ctx : cases[c].pos0 + 1;
        bool all = rope_attention_same(0, cases[c].heads, cases[c].kv, cases[c].d, cases[c].n_tok, cases[c].pos0,
                                       cases[c].window, cases[c].pos_dev, cases[c].norms, cases[c].ctx);
        runs++;
        for (int size = 8; size <= blocks; size *= 2)
            if (keys <= size * CUDA_ATTENTION_SPLIT_KEYS) {
                all &= rope_attention_same(size, cases[c].heads, cases[c].kv, cases[c].d, 1, cases[c].pos0,
                                           cases[c].window, cases[c].pos_dev, cases[c].norms, cases[c].ctx);
                runs++;
            }
        good += all;
    }
    tap_ok(good == n,
           "rope and attention in one launch equal rope_store and then the attention, bit for bit: output, fragments and cache (%d of %d shapes, %d launches; clusters %s)",
           good, n, runs, most ? "too" : "not on this GPU");
}

/* Takes all but `leave` bytes of the GPU's free memory; NULL if it cannot. */
static void *hog_gpu(size_t leave)
{
    size_t free_bytes = 0, total = 0;
    void *p = NULL;
    if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess || free_bytes <= leave ||
        cudaMalloc(&p, free_bytes - leave) != cudaSuccess)
        return NULL;
    return p;
}

static void check_out_of_memory(void)
{
    alm_error err = { 0 };
    alm_random_params rp = alm_random_default_params();
    alm_model_params mp = alm_model_default_params();
    mp.device = "cuda";
    alm_model *model = NULL;
    if (!tap_ok(alm_model_new_random("qwen2.5-0.5b", &rp, &mp, &model, &err) == 0,
                "random qwen2.5-0.5b on the GPU (%s)", err.message))
        return;
    /* 32768 positions of KV cache take 805 MB: more than the 256 MiB left */
    void *hog = hog_gpu((size_t)256 << 20);
    alm_seq *seq = NULL;
    int r = alm_seq_new(model, 32768, &seq, &err);
    tap_ok(hog && r == -ENOMEM && strstr(err.message, "need") && strstr(err.message, "MiB are free"),
           "a sequence too long for the GPU's free memory is refused with what it needs and what is free (%s)",
           r == 0 ? "accepted" : err.message);
    alm_seq_free(r == 0 ? seq : NULL);
    cudaFree(hog);

    /* a short sequence fits; its work buffers (logits of 256 tokens: 155 MB)
     * do not fit in the 32 MiB then left */
    seq = NULL;
    r = alm_seq_new(model, 256, &seq, &err);
    hog = r == 0 ? hog_gpu((size_t)32 << 20) : NULL;
    int32_t token = 1;
    float *logits = malloc(sizeof(float) * (size_t)alm_model_vocab_size(model));
    if (r == 0)
        r = alm_seq_forward(seq, pool, &token, 1, 1, logits, &err);
    tap_ok(hog && r == -ENOMEM && strstr(err.message, "work buffers") && strstr(err.message, "MiB are free"),
           "work buffers that do not fit are refused with what they need and what is free (%s)",
           r == 0 ? "accepted" : err.message);
    cudaFree(hog);
    free(logits);
    alm_seq_free(seq);
    alm_model_free(model);
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
    check_matmul_formats();
    check_matmul_bits();
    check_out_of_memory();
    check_flash_attention();
    check_attention_reference();
    check_merge_in_last_block();
    check_cluster_merge();
    check_rope_attention();
    check_argmax_kernel();
#ifdef ALM_HAVE_CUBLAS
    check_gemm();
#else
    tap_diag("SKIP: built without cublas_v2.h: the prefill GEMM is not checked");
#endif

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
