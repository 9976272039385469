/* Weight binding: every test model binds with the shapes its config
 * implies, values read through the descriptors match the file (and values
 * computed with Python from the same files), and every inconsistency between
 * config.json and the tensors is refused with the file, tensor and problem
 * named. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alm.h"
#include "core/error.h"
#include "loader/model_weights.h"
#include "loader_fixtures.h"
#include "tap.h"

static char *tmpdir;
static int variant_counter;

typedef struct loaded_model {
    model_config cfg;
    tensor_store *store;
    model_weights w;
} loaded_model;

static void unload(loaded_model *m)
{
    model_weights_clear(&m->w);
    tensor_store_free(m->store);
    model_config_clear(&m->cfg);
    memset(m, 0, sizeof *m);
}

/* config.json, tensors and binding of a folder; the message of the first
 * failure in err. */
static int load_dir(const char *dir, loaded_model *m, alm_error *err)
{
    memset(m, 0, sizeof *m);
    char *config = fixture_path(dir, "config.json");
    int r = model_config_load(config, &m->cfg, err);
    free(config);
    if (r == 0)
        r = tensor_store_open_dir(dir, &m->store, err);
    if (r == 0)
        r = model_weights_bind(&m->cfg, m->store, &m->w, err);
    if (r < 0)
        unload(m);
    return r;
}

/* ---------------------------------------------------------- reading values */

/* W[r][c] of a quantized weight, by the formula of core/weight.h. */
static float dequantize(const alm_weight *w, int r, int c)
{
    int per_word = 32 / w->bits;
    size_t row_words = (size_t)w->cols / (size_t)per_word;
    uint32_t word;
    memcpy(&word, (const uint8_t *)w->data + ((size_t)r * row_words + (size_t)(c / per_word)) * 4, 4);
    uint32_t q = (word >> ((c % per_word) * w->bits)) & ((1u << w->bits) - 1);
    size_t g = (size_t)r * (size_t)(w->cols / w->group_size) + (size_t)(c / w->group_size);
    return alm_load_as_f32(w->scale_dtype, w->scales, g) * (float)q + alm_load_as_f32(w->scale_dtype, w->biases, g);
}

static float dense_at(const alm_weight *w, int r, int c)
{
    return alm_load_as_f32(w->dtype, w->data, (size_t)r * (size_t)w->cols + (size_t)c);
}

/* Raw bytes of a tensor, found without the loader: the header is searched
 * as text for the name and its data_offsets. */
static const uint8_t *raw_tensor(const char *file_bytes, const char *name)
{
    uint64_t header_len;
    memcpy(&header_len, file_bytes, 8);
    char key[256];
    snprintf(key, sizeof key, "\"%s\"", name);
    const char *at = strstr(file_bytes + 8, key);
    if (!at || (uint64_t)(at - file_bytes) > 8 + header_len)
        return NULL;
    const char *offsets = strstr(at, "\"data_offsets\"");
    unsigned long long begin, end;
    if (!offsets || sscanf(offsets, "\"data_offsets\":[%llu,%llu]", &begin, &end) != 2)
        return NULL;
    return (const uint8_t *)file_bytes + 8 + header_len + begin;
}

static float raw_bf16(const uint8_t *p, size_t i)
{
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return alm_bf16_to_f32(h);
}

/* The same element as dequantize(), from the file's bytes. */
static float raw_dequantize(const char *file_bytes, const char *module, int cols, int bits, int group,
                            int r, int c)
{
    char name[256];
    snprintf(name, sizeof name, "%s.weight", module);
    const uint8_t *w = raw_tensor(file_bytes, name);
    snprintf(name, sizeof name, "%s.scales", module);
    const uint8_t *s = raw_tensor(file_bytes, name);
    snprintf(name, sizeof name, "%s.biases", module);
    const uint8_t *b = raw_tensor(file_bytes, name);
    if (!w || !s || !b)
        return NAN;
    size_t word_index = (size_t)r * (size_t)(cols * bits / 32) + (size_t)(c * bits / 32);
    uint32_t word = (uint32_t)w[word_index * 4] | (uint32_t)w[word_index * 4 + 1] << 8
                    | (uint32_t)w[word_index * 4 + 2] << 16 | (uint32_t)w[word_index * 4 + 3] << 24;
    uint32_t q = (word >> ((c % (32 / bits)) * bits)) & ((1u << bits) - 1);
    size_t g = (size_t)r * (size_t)(cols / group) + (size_t)(c / group);
    return raw_bf16(s, g) * (float)q + raw_bf16(b, g);
}

static bool close_to(float a, double b)
{
    return fabs((double)a - b) <= 1e-6 * fmax(1.0, fabs(b));
}

/* ------------------------------------------------------ the test models */

static bool is_dense_bf16(const alm_weight *w, int rows, int cols)
{
    return w->bits == 0 && w->dtype == ALM_DTYPE_BF16 && w->rows == rows && w->cols == cols && w->data;
}

static bool is_q4(const alm_weight *w, int rows, int cols)
{
    return w->bits == 4 && w->group_size == 64 && w->dtype == ALM_DTYPE_U32 && w->scale_dtype == ALM_DTYPE_BF16
           && w->rows == rows && w->cols == cols && w->data && w->scales && w->biases;
}

/* Every layer has its norms and projections; biases and norms exactly as
 * the config says. */
static bool layers_complete(const loaded_model *m)
{
    const model_config *c = &m->cfg;
    for (int i = 0; i < c->n_layers; i++) {
        const layer_weights *l = &m->w.layers[i];
        if (!l->attn_norm || !l->ffn_norm || !l->q.data || !l->k.data || !l->v.data || !l->o.data)
            return false;
        if (l->q.rows != c->n_heads * c->head_dim || l->k.rows != c->n_kv_heads * c->head_dim
            || l->o.cols != c->n_heads * c->head_dim || l->o.rows != c->hidden_size)
            return false;
        if ((l->q_bias != NULL) != c->attention_bias || (l->k_bias != NULL) != c->attention_bias
            || (l->v_bias != NULL) != c->attention_bias || (l->o_bias != NULL) != c->o_proj_bias
            || (l->q_norm != NULL) != c->qk_norm || (l->k_norm != NULL) != c->qk_norm)
            return false;
        if (c->n_experts == 0 && (!l->gate.data || !l->up.data || !l->down.data || l->experts))
            return false;
        if (c->n_experts > 0 && (!l->experts || l->gate.data || !l->router.data))
            return false;
    }
    return true;
}

static void check_model(const char *root, const char *name)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    loaded_model m;
    alm_error err = { 0 };
    int r = load_dir(dir, &m, &err);
    tap_ok(r == 0, "%s: loads and binds (%s)", name, r ? err.message : "ok");
    if (r < 0)
        return;
    const model_config *c = &m.cfg;
    tap_ok(m.w.n_layers == c->n_layers && m.w.final_norm && m.w.embed.rows == c->vocab_size
               && m.w.embed.cols == c->hidden_size && m.w.lm_head.rows == c->vocab_size
               && m.w.lm_head.cols == c->hidden_size && layers_complete(&m),
           "%s: every layer bound with the config's shapes", name);
    tap_ok(c->tie_word_embeddings ? memcmp(&m.w.lm_head, &m.w.embed, sizeof m.w.embed) == 0
                                  : m.w.lm_head.data != m.w.embed.data,
           "%s: lm_head %s", name, c->tie_word_embeddings ? "is the embedding (tied)" : "has its own data");

    const layer_weights *l0 = &m.w.layers[0];
    if (strcmp(name, "coder-target-4bit") == 0) {
        tap_ok(is_q4(&m.w.embed, 8192, 384) && is_q4(&m.w.lm_head, 8192, 384) && is_q4(&l0->k, 128, 384)
                   && is_q4(&l0->down, 384, 1024),
               "coder-target-4bit: embeddings, lm_head and projections 4-bit g64 with BF16 scales");
        /* Expected values computed with Python from the same file. */
        float v1 = dequantize(&l0->k, 5, 70), v2 = dequantize(&l0->k, 127, 383);
        float v3 = dequantize(&m.w.lm_head, 8000, 300);
        tap_ok(close_to(v1, 0.06280517578125) && close_to(v2, 0.006591796875) && close_to(v3, -0.005859375),
               "coder-target-4bit: dequantized k_proj[5][70] = %g, k_proj[127][383] = %g, lm_head[8000][300] = %g",
               v1, v2, v3);
        char path[1100];
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        char *bytes = fixture_read(path, NULL);
        bool same = bytes != NULL;
        for (int i = 0; same && i < 200; i++) {
            int row = (i * 37) % 128, col = (i * 101) % 384;
            same = dequantize(&m.w.layers[3].v, row, col)
                   == raw_dequantize(bytes, "model.layers.3.self_attn.v_proj", 384, 4, 64, row, col);
        }
        tap_ok(same, "coder-target-4bit: 200 elements of layer 3 v_proj equal the raw-byte computation");
        free(bytes);
    } else if (strcmp(name, "coder-draft-4bit") == 0) {
        tap_ok(is_q4(&m.w.embed, 8192, 192) && m.w.lm_head.data == m.w.embed.data && m.w.lm_head.bits == 4,
               "coder-draft-4bit: tied quantized embeddings serve as lm_head");
        tap_ok(l0->q_bias && l0->k_bias && l0->v_bias && !l0->o_bias && is_q4(&l0->q, 192, 192),
               "coder-draft-4bit: q/k/v biases next to quantized projections");
    } else if (strcmp(name, "tiny/qwen3-qknorm") == 0) {
        tap_ok(is_dense_bf16(&l0->q, 128, 64) && is_dense_bf16(&l0->k, 64, 64) && is_dense_bf16(&l0->o, 64, 128)
                   && l0->q_norm && l0->k_norm,
               "qwen3-qknorm: q [128][64], k [64][64], o [64][128], q/k norms [32]");
    } else if (strcmp(name, "tiny/mixtral-moe") == 0) {
        bool experts = true;
        for (int e = 0; e < 4; e++)
            experts &= is_dense_bf16(&l0->experts[e].gate, 128, 64) && is_dense_bf16(&l0->experts[e].up, 128, 64)
                       && is_dense_bf16(&l0->experts[e].down, 64, 128);
        tap_ok(experts && is_dense_bf16(&l0->router, 4, 64) && l0->experts[1].gate.data != l0->experts[0].gate.data
                   && l0->experts[0].gate.data != l0->experts[0].up.data,
               "mixtral-moe: router [4][64], 4 experts with w1/w3 [128][64] and w2 [64][128]");
    } else if (strcmp(name, "tiny/qwen2-bias") == 0) {
        tap_ok(l0->q_bias && l0->k_bias && l0->v_bias && !l0->o_bias
                   && close_to(m.w.layers[1].k_bias[7], -0.111328125),
               "qwen2-bias: biases converted to float (layer 1 k_bias[7] = %g)",
               m.w.layers[1].k_bias ? m.w.layers[1].k_bias[7] : NAN);
    } else if (strcmp(name, "tiny/llama3-rope") == 0) {
        tap_ok(close_to(m.w.final_norm[3], 0.7578125) && close_to(m.w.layers[1].attn_norm[10], 1.0)
                   && close_to(dense_at(&m.w.embed, 100, 5), -0.330078125),
               "llama3-rope: BF16 values (norm[3] = %g, embed[100][5] = %g)", m.w.final_norm[3],
               dense_at(&m.w.embed, 100, 5));
    } else if (strcmp(name, "tiny/llama2-spm") == 0) {
        tap_ok(is_dense_bf16(&l0->k, 16, 64) && is_dense_bf16(&m.w.lm_head, 4000, 64),
               "llama2-spm: one KV head (k [16][64]), own lm_head [4000][64]");
    } else if (strcmp(name, "tiny/mistral-swa") == 0) {
        tap_ok(is_dense_bf16(&l0->k, 32, 64) && is_dense_bf16(&m.w.lm_head, 8192, 64),
               "mistral-swa: k [32][64], own lm_head");
    }
    unload(&m);
}

/* ------------------------------------------------------------- variants */

/* A folder with src's config.json (plus extra members) and either the given
 * tensors or, when tensors is NULL, a link to src's model.safetensors. */
static char *make_variant(const char *src, const char *config_extra, const st_tensor *tensors, size_t n)
{
    char name[32];
    snprintf(name, sizeof name, "variant-%d", variant_counter++);
    char *dir = fixture_path(tmpdir, name);
    mkdir(dir, 0700);
    char *src_config = fixture_path(src, "config.json");
    fixture_config(dir, src_config, config_extra);
    free(src_config);
    char *dst = fixture_path(dir, "model.safetensors");
    if (tensors) {
        st_write(dst, tensors, n, "{\"format\":\"pt\"}");
    } else {
        char *orig = fixture_path(src, "model.safetensors");
        if (symlink(orig, dst) < 0)
            tap_diag("symlink %s: failed", dst);
        free(orig);
    }
    free(dst);
    return dir;
}

/* Loading must fail with needle (and needle2, when given) in the message. */
static void expect_variant_error2(const char *src, const char *config_extra, const st_tensor *tensors,
                                  size_t n, const char *needle, const char *needle2, const char *what)
{
    char *dir = make_variant(src, config_extra, tensors, n);
    loaded_model m;
    alm_error err = { 0 };
    int r = load_dir(dir, &m, &err);
    tap_ok(r < 0 && message_has(err.message, needle) && (!needle2 || message_has(err.message, needle2)),
           "%s: refused (%s)", what, err.message);
    if (r == 0)
        unload(&m);
    fixture_rmtree(dir);
    free(dir);
}

static void expect_variant_error(const char *src, const char *config_extra, const st_tensor *tensors,
                                 size_t n, const char *needle, const char *what)
{
    expect_variant_error2(src, config_extra, tensors, n, needle, NULL, what);
}

static st_tensor *tensors_of(const char *src, tensor_store **store, size_t *n)
{
    alm_error err = { 0 };
    if (tensor_store_open_dir(src, store, &err) < 0) {
        tap_diag("%s", err.message);
        *n = 0;
        return NULL;
    }
    return st_from_store(*store, n);
}

static void test_bad_bindings(const char *tiny, const char *defaults)
{
    char *qwen2 = fixture_path(tiny, "qwen2-bias"), *mistral = fixture_path(tiny, "mistral-swa");
    char *llama3 = fixture_path(tiny, "llama3-rope"), *target4 = fixture_path(defaults, "coder-target-4bit");
    char *draft4 = fixture_path(defaults, "coder-draft-4bit");
    tensor_store *src;
    size_t n;
    st_tensor *t;

    t = tensors_of(qwen2, &src, &n);
    st_remove(t, &n, "model.layers.1.self_attn.k_proj.bias");
    expect_variant_error(qwen2, NULL, t, n, "missing tensor model.layers.1.self_attn.k_proj.bias in",
                         "a missing bias");
    free(t);
    t = st_from_store(src, &n);
    st_tensor *k = st_find(t, n, "model.layers.0.self_attn.k_proj.weight");
    k->shape[1] = 32;
    k->n_bytes /= 2;
    expect_variant_error2(qwen2, NULL, t, n, "model.layers.0.self_attn.k_proj.weight in ",
                          "/model.safetensors: shape [32, 32], expected [32, 64]", "a wrong shape");
    free(t);
    t = st_from_store(src, &n);
    uint32_t norm_words[64] = { 0 };
    st_tensor *norm = st_find(t, n, "model.norm.weight");
    *norm = (st_tensor){ "model.norm.weight", "U32", 1, { 64 }, norm_words, sizeof norm_words };
    expect_variant_error2(qwen2, NULL, t, n, "model.norm.weight in", "dtype U32, expected F32, F16 or BF16",
                          "a U32 norm");
    free(t);
    expect_variant_error(qwen2, "\"intermediate_size\": 96", NULL, 0,
                         "model.layers.0.mlp.gate_proj.weight in", "config and tensors disagree on a size");
    expect_variant_error(qwen2, "\"vocab_size\": 8000", NULL, 0,
                         "model.embed_tokens.weight in", "config and tensors disagree on the vocabulary");
    tensor_store_free(src);

    t = tensors_of(mistral, &src, &n);
    st_remove(t, &n, "lm_head.weight");
    expect_variant_error(mistral, NULL, t, n, "missing tensor lm_head.weight", "untied model without lm_head");
    free(t);
    tensor_store_free(src);

    expect_variant_error2(llama3, "\"quantization\": {\"group_size\": 64, \"bits\": 4}", NULL, 0,
                          "model.embed_tokens.weight in",
                          "dense BF16 weight without model.embed_tokens.scales, but config.json quantizes",
                          "config quantizes a dense file");

    /* The task's example: a 4-bit module stored with its unpacked width. */
    t = tensors_of(target4, &src, &n);
    size_t big = 128 * 384 * 4;
    void *zeros = calloc(1, big);
    k = st_find(t, n, "model.layers.3.self_attn.k_proj.weight");
    k->shape[1] = 384;
    k->data = zeros;
    k->n_bytes = big;
    expect_variant_error2(target4, NULL, t, n, "model.layers.3.self_attn.k_proj.weight in ",
                          "/model.safetensors: shape [128, 384], expected [128, 384 * 4 / 32 = 48]",
                          "packed width wrong");
    free(zeros);
    free(t);
    t = st_from_store(src, &n);
    st_remove(t, &n, "model.layers.0.mlp.up_proj.biases");
    expect_variant_error(target4, NULL, t, n, "missing tensor model.layers.0.mlp.up_proj.biases",
                         "scales without biases");
    st_remove(t, &n, "model.layers.0.mlp.up_proj.scales");
    expect_variant_error(target4, NULL, t, n,
                         "missing tensor model.layers.0.mlp.up_proj.scales: model.layers.0.mlp.up_proj.weight in",
                         "U32 weight without scales and biases");
    free(t);
    t = st_from_store(src, &n);
    st_tensor *sc = st_find(t, n, "model.layers.1.self_attn.q_proj.scales");
    sc->shape[1] = 3;
    sc->n_bytes /= 2;
    expect_variant_error2(target4, NULL, t, n, "model.layers.1.self_attn.q_proj.scales in ",
                          "shape [384, 3], expected [384, 384 / 64 = 6]", "scales of the wrong shape");
    free(t);
    tensor_store_free(src);
    expect_variant_error(target4, "\"quantization\": {\"group_size\": 64, \"bits\": 4, "
                                  "\"lm_head\": {\"group_size\": 64, \"bits\": 8}}", NULL, 0,
                         "shape [8192, 48], expected [8192, 384 * 8 / 32 = 96]", "override with other bits");
    expect_variant_error2(target4, "\"quantization\": {\"group_size\": 64, \"bits\": 4, \"lm_head\": false}",
                          NULL, 0, "lm_head.scales in",
                          "lm_head is quantized in the file, but config.json excludes it",
                          "file quantizes what the config excludes");
    expect_variant_error(draft4, "\"quantization\": null, \"quantization_config\": null", NULL, 0,
                         "is quantized in the file, but config.json has no \"quantization\"",
                         "quantized file, unquantized config");
    free(qwen2);
    free(mistral);
    free(llama3);
    free(target4);
    free(draft4);
}

/* MLX stores Mixtral experts stacked: switch_mlp.{gate,up,down}_proj of
 * shape [experts][rows][cols]. Built here from the tiny model's per-expert
 * tensors, it must bind to the same bytes. */
static void test_stacked_experts(const char *tiny)
{
    char *src_dir = fixture_path(tiny, "mixtral-moe");
    tensor_store *src;
    size_t n;
    st_tensor *t = tensors_of(src_dir, &src, &n);
    if (!t) {
        tap_ok(0, "mixtral-moe opens");
        free(src_dir);
        return;
    }
    st_tensor *all = calloc(n + 8, sizeof *all);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!strstr(t[i].name, ".experts."))
            all[m++] = t[i];
    static const char *const hf[3] = { "w1", "w3", "w2" };
    static const char *const mlx[3] = { "gate_proj", "up_proj", "down_proj" };
    void *buffers[6];
    char names[6][128];
    for (int layer = 0; layer < 2; layer++) {
        for (int p = 0; p < 3; p++) {
            size_t one = 128 * 64 * 2;
            uint8_t *buf = malloc(4 * one);
            for (int e = 0; e < 4; e++) {
                char name[128];
                snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.experts.%d.%s.weight", layer, e, hf[p]);
                memcpy(buf + (size_t)e * one, tensor_store_find(src, name)->data, one);
            }
            int slot = layer * 3 + p;
            buffers[slot] = buf;
            snprintf(names[slot], sizeof names[slot], "model.layers.%d.block_sparse_moe.switch_mlp.%s.weight",
                     layer, mlx[p]);
            all[m++] = (st_tensor){ names[slot], "BF16", 3, { 4, p == 2 ? 64 : 128, p == 2 ? 128 : 64 },
                                    buf, 4 * one };
        }
    }
    char *dir = make_variant(src_dir, NULL, all, m);
    loaded_model lm;
    alm_error err = { 0 };
    int r = load_dir(dir, &lm, &err);
    bool same = r == 0;
    for (int layer = 0; same && layer < 2; layer++) {
        for (int e = 0; same && e < 4; e++) {
            const expert_weights *x = &lm.w.layers[layer].experts[e];
            const alm_weight *ws[3] = { &x->gate, &x->up, &x->down };
            for (int p = 0; same && p < 3; p++) {
                char name[128];
                snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.experts.%d.%s.weight", layer, e, hf[p]);
                same = ws[p]->rows == (p == 2 ? 64 : 128) && ws[p]->cols == (p == 2 ? 128 : 64)
                       && memcmp(ws[p]->data, tensor_store_find(src, name)->data, 128 * 64 * 2) == 0;
            }
        }
    }
    tap_ok(same, "MLX stacked switch_mlp experts bind to each expert's slice (%s)", r ? err.message : "ok");
    if (r == 0)
        unload(&lm);
    fixture_rmtree(dir);
    free(dir);

    /* A stack of the wrong depth is named with its shape. */
    all[m - 1].shape[0] = 2;
    all[m - 1].n_bytes /= 2;
    expect_variant_error2(src_dir, NULL, all, m,
                          "model.layers.1.block_sparse_moe.switch_mlp.down_proj.weight in ",
                          "shape [2, 64, 128], expected [4, 64, 128]", "stack of 2 experts");
    for (int i = 0; i < 6; i++)
        free(buffers[i]);
    free(all);
    free(t);
    tensor_store_free(src);
    free(src_dir);
}

/* llama with attention_bias and mlp_bias: seven biases per layer, stored
 * here in F32 and F16, converted to float; an unused tensor is ignored. */
static void test_llama_biases(const char *tiny)
{
    char *src_dir = fixture_path(tiny, "llama3-rope");
    tensor_store *src;
    size_t n;
    st_tensor *t = tensors_of(src_dir, &src, &n);
    if (!t) {
        tap_ok(0, "llama3-rope opens");
        free(src_dir);
        return;
    }
    st_tensor *all = calloc(n + 16, sizeof *all);
    memcpy(all, t, n * sizeof *t);
    size_t m = n;
    static const char *const mods[7] = { "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                         "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj" };
    static const int sizes[7] = { 64, 32, 32, 64, 128, 128, 64 };
    static char names[14][96];
    float f32[128];
    uint16_t f16[128];
    for (int i = 0; i < 128; i++) {
        f32[i] = (float)i * 0.25f;
        _Float16 h = (_Float16)(-(float)i);
        memcpy(&f16[i], &h, 2);
    }
    for (int layer = 0; layer < 2; layer++) {
        for (int j = 0; j < 7; j++) {
            int slot = layer * 7 + j;
            snprintf(names[slot], sizeof names[slot], "model.layers.%d.%s.bias", layer, mods[j]);
            bool half = j % 2 == 1;
            all[m++] = (st_tensor){ names[slot], half ? "F16" : "F32", 1, { sizes[j] },
                                    half ? (const void *)f16 : (const void *)f32,
                                    (size_t)sizes[j] * (half ? 2 : 4) };
        }
    }
    float inv_freq[8] = { 0 };
    all[m++] = (st_tensor){ "model.rotary_emb.inv_freq", "F32", 1, { 8 }, inv_freq, sizeof inv_freq };
    char *dir = make_variant(src_dir, "\"attention_bias\": true, \"mlp_bias\": true", all, m);
    loaded_model lm;
    alm_error err = { 0 };
    int r = load_dir(dir, &lm, &err);
    const layer_weights *l1 = r == 0 ? &lm.w.layers[1] : NULL;
    tap_ok(l1 && l1->q_bias && l1->o_bias && l1->gate_bias && l1->up_bias && l1->down_bias
               && l1->q_bias[63] == 63 * 0.25f && l1->k_bias[31] == -31.0f && l1->o_bias[5] == -5.0f
               && l1->gate_bias[127] == 127 * 0.25f && l1->up_bias[100] == -100.0f && l1->down_bias[1] == 0.25f,
           "llama attention_bias + mlp_bias: seven F32/F16 biases per layer as floats; unused tensor ignored (%s)",
           r ? err.message : "ok");
    if (r == 0)
        unload(&lm);
    fixture_rmtree(dir);
    free(dir);
    st_remove(all, &m, "model.layers.1.mlp.down_proj.bias");
    expect_variant_error(src_dir, "\"attention_bias\": true, \"mlp_bias\": true", all, m,
                         "missing tensor model.layers.1.mlp.down_proj.bias", "mlp_bias without the bias");
    free(all);
    free(t);
    tensor_store_free(src);
    free(src_dir);
}

/* No folder at all is refused with a message (it crashed in strdup). */
static void test_no_folder(void)
{
    const char *dirs[] = { NULL, "" };
    for (int i = 0; i < 2; i++) {
        alm_error err = { 0 };
        alm_model *m = NULL;
        int r = alm_model_load(dirs[i], NULL, &m, &err);
        tap_ok(r == -EINVAL && m == NULL && strstr(err.message, "no model folder given") != NULL,
               "alm_model_load with %s is refused (%s)", dirs[i] ? "an empty folder name" : "NULL", err.message);
    }
}

int main(void)
{
    test_no_folder();
    const char *data = getenv("ALM_TEST_DATA");
    const char *defaults = getenv("ALM_DEFAULT_MODELS");
    if (!data || !defaults)
        return tap_skip_all("ALM_TEST_DATA / ALM_DEFAULT_MODELS not set (run through meson test)");
    tmpdir = fixture_tmpdir();
    if (!tmpdir)
        return tap_skip_all("cannot create a temporary folder");
    char models[1024], tiny[1024];
    snprintf(models, sizeof models, "%s/models", data);
    snprintf(tiny, sizeof tiny, "%s/models/tiny", data);

    static const char *const tiny_models[] = { "tiny/llama3-rope", "tiny/mistral-swa", "tiny/qwen2-bias",
                                               "tiny/qwen3-qknorm", "tiny/mixtral-moe", "tiny/llama2-spm" };
    for (size_t i = 0; i < sizeof tiny_models / sizeof tiny_models[0]; i++)
        check_model(models, tiny_models[i]);
    check_model(defaults, "coder-target-4bit");
    check_model(defaults, "coder-draft-4bit");

    test_bad_bindings(tiny, defaults);
    test_stacked_experts(tiny);
    test_llama_biases(tiny);

    fixture_rmtree(tmpdir);
    free(tmpdir);
    return tap_done();
}
