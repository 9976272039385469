/* alm-engine convert (loader/model_convert.h):
 * - every tiny model (BF16) at 8 and 4 bits: every matrix dequantizes to
 *   within half a step of the source (MLX's rounding), norms and biases are
 *   copied byte for byte, the model loads, and its logits stay within the
 *   quantization error of the source's;
 * - sharding: small shards give several files and an index, and the same
 *   logits as one file;
 * - the coder pair from the shared folder (skipped without it): the 4-bit
 *   conversion is byte for byte the shipped coder-*-4bit (weights, config),
 *   and greedy generation matches refs/greedy.json;
 * - refusals with a message: an already quantized source, an unknown dtype,
 *   widths the group size does not divide, non-finite weights, a
 *   destination that is not empty or not a folder, unsupported bits. */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

#include "alm.h"
#include "loader/model_config.h"
#include "loader/model_convert.h"
#include "loader/safetensors.h"
#include "tap.h"
#include "test_util.h"

static alm_pool *pool;
static char *scratch;   /* a temporary folder for the outputs */

static char *out_dir(const char *name)
{
    return g_build_filename(scratch, name, NULL);
}

static int convert(const char *src, const char *dst, int bits, int group, size_t shard,
                   convert_report *rep, alm_error *err)
{
    convert_params p = { .bits = bits, .group_size = group, .max_shard_bytes = shard, .n_threads = 2 };
    return model_convert(src, dst, &p, rep, err);
}

/* Every matrix of dst dequantizes to within half a quantization step (and
 * the rounding of the stored scale) of src; everything else is equal. */
static void check_tensors(const char *label, const char *src, const char *dst, int bits)
{
    alm_error err = { 0 };
    tensor_store *a = NULL, *b = NULL;
    if (tensor_store_open_dir(src, &a, &err) < 0 || tensor_store_open_dir(dst, &b, &err) < 0) {
        tap_ok(0, "%s: stores open: %s", label, err.message);
        tensor_store_free(a);
        return;
    }
    int matrices = 0, copies = 0, bad = 0;
    double worst = 0;
    for (size_t i = 0; i < tensor_store_count(a); i++) {
        const stored_tensor *t = tensor_store_at(a, i);
        const stored_tensor *u = tensor_store_find(b, t->name);
        if (!u) {
            bad++;
            continue;
        }
        if (u->dtype != ALM_DTYPE_U32) {
            copies++;
            bad += u->n_bytes != t->n_bytes || memcmp(u->data, t->data, t->n_bytes) != 0;
            continue;
        }
        matrices++;
        char name[300];
        size_t stem = strlen(t->name) - strlen("weight");
        snprintf(name, sizeof name, "%.*sscales", (int)stem, t->name);
        const stored_tensor *sc = tensor_store_find(b, name);
        snprintf(name, sizeof name, "%.*sbiases", (int)stem, t->name);
        const stored_tensor *bi = tensor_store_find(b, name);
        if (!sc || !bi || sc->dtype != t->dtype) {
            bad++;
            continue;
        }
        size_t cols = (size_t)t->shape[t->n_dims - 1];
        size_t n = t->n_bytes / alm_dtype_size(t->dtype), group = cols / (size_t)sc->shape[sc->n_dims - 1];
        const uint32_t *q = u->data;
        int per_word = 32 / bits;
        /* Half a step, plus what storing the scale in the source's dtype
         * costs at the far end of the range: q * |s - s_stored| <=
         * (2^bits - 1) * 2^-9 steps in BF16 (8 mantissa bits), 2^-11 in F16. */
        double bound = 0.5 + ((1 << bits) - 1) * (sc->dtype == ALM_DTYPE_BF16 ? 0x1p-9 : sc->dtype == ALM_DTYPE_F16 ? 0x1p-11 : 0) + 1e-4;
        for (size_t e = 0; e < n; e++) {
            size_t g = e / group;
            float s = alm_load_as_f32(sc->dtype, sc->data, g), o = alm_load_as_f32(bi->dtype, bi->data, g);
            uint32_t v = (q[e / (size_t)per_word] >> ((e % (size_t)per_word) * (size_t)bits)) & ((1u << bits) - 1);
            double w = alm_load_as_f32(t->dtype, t->data, e);
            double d = fabs(s * v + o - w) / fabs(s);
            worst = fmax(worst, d);
            bad += d > bound;
        }
    }
    tap_ok(bad == 0 && matrices > 0 && copies > 0,
           "%s: %d matrices within half a step of the source (worst %.3f steps), %d tensors copied exactly",
           label, matrices, worst, copies);
    tensor_store_free(a);
    tensor_store_free(b);
}

static float *logits_of(const char *dir, const int32_t *ids, int n, int *vocab)
{
    alm_error err = { 0 };
    alm_model *m = NULL;
    alm_seq *s = NULL;
    float *out = NULL;
    if (alm_model_load(dir, NULL, &m, &err) == 0 && alm_seq_new(m, 64, &s, &err) == 0) {
        *vocab = alm_model_vocab_size(m);
        out = malloc(sizeof *out * (size_t)*vocab * (size_t)n);
        if (alm_seq_forward(s, pool, ids, n, n, out, &err) < 0) {
            free(out);
            out = NULL;
        }
    }
    if (!out)
        tap_diag("%s: %s", dir, err.message);
    alm_seq_free(s);
    alm_model_free(m);
    return out;
}

static const int32_t probe[12] = { 1, 100, 2000, 37, 3999, 12, 500, 501, 502, 9, 77, 3000 };

/* max |a - b| / max |a| over n x vocab logits */
static double relative_gap(const float *a, const float *b, size_t n)
{
    double gap = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        gap = fmax(gap, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)a[i]));
    }
    return scale > 0 ? gap / scale : INFINITY;
}

/* Pearson correlation of a and b. */
static double correlation(const float *a, const float *b, size_t n)
{
    double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
    for (size_t i = 0; i < n; i++) {
        sa += a[i];
        sb += b[i];
        saa += (double)a[i] * a[i];
        sbb += (double)b[i] * b[i];
        sab += (double)a[i] * b[i];
    }
    double va = saa - sa * sa / (double)n, vb = sbb - sb * sb / (double)n;
    return va > 0 && vb > 0 ? (sab - sa * sb / (double)n) / sqrt(va * vb) : 0;
}

static void check_tiny(const char *name)
{
    char *src = test_path("ALM_TEST_DATA", name);
    int vocab = 0;
    float *ref = logits_of(src, probe, 12, &vocab);
    /* These models have random weights: no structure makes their logits
     * robust, and 4-bit rounding (a step of about 0.4 standard deviations
     * of a weight) moves them a lot, 8-bit (255 steps) little. The bounds
     * are loose enough for that and far from what a wrong packing, scale
     * or order gives (no correlation at all). */
    static const struct { int bits; double gap, corr; } cases[] = { { 8, 0.08, 0.999 }, { 4, 2.0, 0.8 } };
    for (size_t k = 0; k < 2; k++) {
        char label[128], leaf[64];
        snprintf(label, sizeof label, "%s %d-bit", name, cases[k].bits);
        snprintf(leaf, sizeof leaf, "%s-%d", strrchr(name, '/') + 1, cases[k].bits);
        char *dst = out_dir(leaf);
        convert_report rep;
        alm_error err = { 0 };
        int r = convert(src, dst, cases[k].bits, 64, 0, &rep, &err);
        if (!tap_ok(r == 0 && rep.shards == 1 && rep.tensors_quantized > 0, "%s: converted (%s)", label,
                    r < 0 ? err.message : "ok")) {
            g_free(dst);
            continue;
        }
        check_tensors(label, src, dst, cases[k].bits);
        int v2 = 0;
        float *got = logits_of(dst, probe, 12, &v2);
        double gap = got && ref && v2 == vocab ? relative_gap(ref, got, (size_t)vocab * 12) : INFINITY;
        double corr = got && ref && v2 == vocab ? correlation(ref, got, (size_t)vocab * 12) : 0;
        tap_ok(gap < cases[k].gap && corr > cases[k].corr,
               "%s: logits within %.3f of the source's range (bound %.2f), correlation %.4f (bound %.3f)",
               label, gap, cases[k].gap, corr, cases[k].corr);
        free(got);
        g_free(dst);
    }
    free(ref);
    free(src);
}

static void check_shards(void)
{
    char *src = test_path("ALM_TEST_DATA", "models/tiny/qwen2-bias");
    char *one = out_dir("qwen2-bias-4"), *many = out_dir("qwen2-bias-shards");
    convert_report rep;
    alm_error err = { 0 };
    int r = convert(src, many, 4, 64, 100 << 10, &rep, &err);
    char *index = g_build_filename(many, "model.safetensors.index.json", NULL);
    char *shard = g_build_filename(many, "model-00001-of-00003.safetensors", NULL);
    tap_ok(r == 0 && rep.shards == 3 && test_exists(index) && test_exists(shard),
           "100 KiB shards: %d files and an index (%s)", rep.shards, r < 0 ? err.message : "ok");
    int va = 0, vb = 0;
    float *a = logits_of(one, probe, 12, &va), *b = logits_of(many, probe, 12, &vb);
    tap_ok(a && b && va == vb && memcmp(a, b, sizeof *a * (size_t)va * 12) == 0,
           "sharded and single-file conversions give identical logits");
    free(a);
    free(b);
    g_free(index);
    g_free(shard);
    g_free(one);
    g_free(many);
    free(src);
}

static bool same_file(const char *a, const char *b)
{
    gchar *x = NULL, *y = NULL;
    gsize nx = 0, ny = 0;
    bool same = g_file_get_contents(a, &x, &nx, NULL) && g_file_get_contents(b, &y, &ny, NULL)
                && nx == ny && memcmp(x, y, nx) == 0;
    g_free(x);
    g_free(y);
    return same;
}

/* Greedy ids of the converted model against the references, up to the
 * first near tie (as the conformance test). */
static void check_greedy(const char *dir, JsonArray *cases)
{
    alm_error err = { 0 };
    alm_model *m = NULL;
    if (alm_model_load(dir, NULL, &m, &err) < 0) {
        tap_ok(0, "%s loads: %s", dir, err.message);
        return;
    }
    guint n_cases = json_array_get_length(cases);
    if (n_cases > 4)
        n_cases = 4;
    int ok = 0;
    for (guint i = 0; i < n_cases; i++) {
        JsonObject *o = json_array_get_object_element(cases, i);
        size_t n_prompt, n_want;
        int32_t *prompt = test_int_array(json_object_get_array_member(o, "prompt_ids"), &n_prompt);
        int32_t *want = test_int_array(json_object_get_array_member(o, "greedy_ids"), &n_want);
        JsonArray *margin = json_object_get_array_member(o, "top1_margin");
        alm_seq *s = NULL;
        alm_seq_new(m, (int)(n_prompt + n_want + 1), &s, &err);
        alm_generate_params gp = alm_generate_default_params();
        gp.max_tokens = (int)n_want;
        gp.ignore_eos = true;
        int32_t *got = NULL;
        size_t n_got = 0;
        bool match = alm_generate(s, NULL, pool, prompt, n_prompt, &gp, NULL, NULL, &got, &n_got, NULL, &err) == 0;
        for (size_t t = 0; match && t < n_want; t++) {
            if (json_array_get_double_element(margin, (guint)t) < 1e-3)
                break;
            match = t < n_got && got[t] == want[t];
        }
        ok += match;
        free(got);
        free(prompt);
        free(want);
        alm_seq_free(s);
    }
    tap_ok(ok == (int)n_cases, "%s: greedy ids as refs/greedy.json on %d of %u prompts", dir, ok, n_cases);
    alm_model_free(m);
}

static void check_coder_pair(void)
{
    const char *shared = getenv("ALM_SHARED_DIR");
    char *target = shared ? g_build_filename(shared, "models", "coder-target", NULL) : NULL;
    if (!target || !test_exists(target)) {
        tap_diag("SKIP: the shared folder (ALM_SHARED_DIR) is absent: the coder pair's conversion is not checked");
        g_free(target);
        return;
    }
    char *refs_path = test_path("ALM_TEST_DATA", "refs/greedy.json");
    JsonParser *refs = test_load_json(refs_path);
    JsonObject *models = refs ? json_object_get_object_member(json_node_get_object(json_parser_get_root(refs)), "models")
                              : NULL;
    static const char *const pair[2] = { "coder-target", "coder-draft" };
    for (int i = 0; i < 2; i++) {
        char *src = g_build_filename(shared, "models", pair[i], NULL);
        char *shipped_name = g_strdup_printf("%s-4bit", pair[i]);
        char *shipped = g_build_filename(shared, "models", shipped_name, NULL);
        char *dst = out_dir(shipped_name);
        convert_report rep;
        alm_error err = { 0 };
        int r = convert(src, dst, 4, 64, 0, &rep, &err);
        tap_ok(r == 0, "%s converted at 4 bits, groups of 64 (%s)", pair[i], r < 0 ? err.message : "ok");
        static const char *const files[] = { "model.safetensors", "config.json", "tokenizer.json",
                                             "tokenizer_config.json", "generation_config.json" };
        int same = 0;
        for (size_t f = 0; f < 5; f++) {
            char *a = g_build_filename(dst, files[f], NULL), *b = g_build_filename(shipped, files[f], NULL);
            same += same_file(a, b);
            g_free(a);
            g_free(b);
        }
        tap_ok(same == 5, "%s: %d of 5 files byte for byte those of the shipped %s (weights, config, tokenizer)",
               pair[i], same, shipped_name);
        JsonArray *cases = models && json_object_has_member(models, shipped_name)
                               ? json_object_get_array_member(models, shipped_name) : NULL;
        if (cases)
            check_greedy(dst, cases);
        else
            tap_ok(0, "refs/greedy.json has %s", shipped_name);
        g_free(src);
        g_free(shipped);
        g_free(shipped_name);
        g_free(dst);
    }
    if (refs)
        g_object_unref(refs);
    free(refs_path);
    g_free(target);
}

/* A folder with tiny/llama3-rope's config.json and a hand-written
 * safetensors file holding one tensor. */
static char *craft(const char *leaf, const char *dtype, const char *shape, const void *data, size_t n)
{
    char *dir = out_dir(leaf);
    mkdir(dir, 0755);
    char *cfg_src = test_path("ALM_TEST_DATA", "models/tiny/llama3-rope/config.json");
    gchar *cfg = NULL;
    gsize cfg_len = 0;
    g_file_get_contents(cfg_src, &cfg, &cfg_len, NULL);
    char *cfg_dst = g_build_filename(dir, "config.json", NULL);
    g_file_set_contents(cfg_dst, cfg, (gssize)cfg_len, NULL);
    char *header = g_strdup_printf("{\"model.embed_tokens.weight\":{\"dtype\":\"%s\",\"shape\":%s,"
                                   "\"data_offsets\":[0,%zu]}}", dtype, shape, n);
    size_t len = strlen(header);
    GString *file = g_string_new(NULL);
    uint64_t le = len;
    g_string_append_len(file, (const char *)&le, 8);
    g_string_append_len(file, header, (gssize)len);
    g_string_append_len(file, data, (gssize)n);
    char *path = g_build_filename(dir, "model.safetensors", NULL);
    g_file_set_contents(path, file->str, (gssize)file->len, NULL);
    g_string_free(file, TRUE);
    g_free(path);
    g_free(header);
    g_free(cfg);
    g_free(cfg_dst);
    free(cfg_src);
    return dir;
}

static void check_refusals(void)
{
    convert_report rep;
    alm_error err = { 0 };
    char *quantized = test_path("ALM_DEFAULT_MODELS", "coder-draft-4bit");
    char *dst = out_dir("refused");
    int r = convert(quantized, dst, 4, 64, 0, &rep, &err);
    tap_ok(r == -EINVAL && strstr(err.message, "already quantized") && !test_exists(dst),
           "an MLX 4-bit source is refused: %s", err.message);

    char *tiny = test_path("ALM_TEST_DATA", "models/tiny/llama3-rope");
    r = convert(tiny, dst, 4, 128, 0, &rep, &err);
    tap_ok(r == -EINVAL && strstr(err.message, "not a multiple of the group size 128") && !test_exists(dst),
           "64 columns in groups of 128 refused: %s", err.message);
    r = convert(tiny, dst, 3, 64, 0, &rep, &err);
    tap_ok(r == -EINVAL && strstr(err.message, "3 bits"), "3 bits refused: %s", err.message);

    int64_t i64[64 * 2] = { 0 };
    char *odd = craft("i64-source", "I64", "[2, 64]", i64, sizeof i64);
    r = convert(odd, dst, 4, 64, 0, &rep, &err);
    tap_ok(r < 0 && strstr(err.message, "I64") && !test_exists(dst), "an I64 tensor is refused: %s", err.message);
    float nan_row[2 * 64];
    for (int i = 0; i < 128; i++)
        nan_row[i] = i == 70 ? NAN : 0.01f * (float)i;
    char *bad = craft("nan-source", "F32", "[2, 64]", nan_row, sizeof nan_row);
    r = convert(bad, dst, 4, 64, 0, &rep, &err);
    tap_ok(r == -EINVAL && strstr(err.message, "not finite") && !test_exists(dst),
           "a NaN weight is refused, nothing left behind: %s", err.message);

    /* Destinations: a non-empty folder and a file are refused; an empty
     * folder is filled. */
    char *full = out_dir("full");
    mkdir(full, 0755);
    char *marker = g_build_filename(full, "keep", NULL);
    g_file_set_contents(marker, "x", 1, NULL);
    r = convert(tiny, full, 4, 64, 0, &rep, &err);
    tap_ok(r == -EEXIST && strstr(err.message, "not empty") && test_exists(marker),
           "a non-empty destination is refused and untouched: %s", err.message);
    r = convert(tiny, marker, 4, 64, 0, &rep, &err);
    tap_ok(r == -EEXIST && strstr(err.message, "not a folder"), "a file as destination is refused: %s",
           err.message);
    char *empty = out_dir("empty");
    mkdir(empty, 0755);
    r = convert(tiny, empty, 4, 64, 0, &rep, &err);
    char *config = g_build_filename(empty, "config.json", NULL);
    tap_ok(r == 0 && test_exists(config), "an empty destination folder is filled (%s)", r < 0 ? err.message : "ok");

    g_free(config);
    g_free(empty);
    g_free(marker);
    g_free(full);
    g_free(bad);
    g_free(odd);
    free(tiny);
    g_free(dst);
    free(quantized);
}

static void remove_tree(const char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    const char *name;
    while (d && (name = g_dir_read_name(d)) != NULL) {
        char *path = g_build_filename(dir, name, NULL);
        if (g_file_test(path, G_FILE_TEST_IS_DIR))
            remove_tree(path);
        else
            unlink(path);
        g_free(path);
    }
    if (d)
        g_dir_close(d);
    rmdir(dir);
}

int main(void)
{
    if (alm_pool_new(2, &pool) < 0)
        return 1;
    scratch = g_dir_make_tmp("alm-convert-XXXXXX", NULL);
    if (!scratch)
        return tap_skip_all("cannot create a temporary folder");
    static const char *const tiny[] = { "models/tiny/llama3-rope", "models/tiny/mistral-swa",
                                        "models/tiny/qwen2-bias", "models/tiny/qwen3-qknorm",
                                        "models/tiny/mixtral-moe", "models/tiny/llama2-spm" };
    for (size_t i = 0; i < sizeof tiny / sizeof tiny[0]; i++)
        check_tiny(tiny[i]);
    check_shards();
    check_coder_pair();
    check_refusals();
    remove_tree(scratch);
    g_free(scratch);
    alm_pool_free(pool);
    return tap_done();
}
