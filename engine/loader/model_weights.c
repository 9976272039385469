/* Binds a model's tensors to the decoder's weights by their Hugging Face
 * names. Matrices stay in the mapping (descriptors only); vectors (norms,
 * biases) are small and become float arrays. Every shape is checked against
 * what config.json implies before anything points into the file. */
#include "loader/model_weights.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define NAME_MAX_LEN 256

typedef struct binder {
    const model_config *cfg;
    const tensor_store *store;
    alm_error *err;
} binder;

/* Tensor and module names; they are short, and a name cut off here could
 * only fail to be found, which is reported. */
__attribute__((format(printf, 2, 3)))
static void format_name(char *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, NAME_MAX_LEN, fmt, ap);
    va_end(ap);
}

static int missing_tensor(const binder *b, const char *name)
{
    return alm_error_set(b->err, -ENOENT, "missing tensor %s in %s", name,
                         tensor_store_source(b->store));
}

static void format_shape(const stored_tensor *t, char *buf, size_t size)
{
    int n = snprintf(buf, size, "[");
    for (int i = 0; i < t->n_dims && n > 0 && (size_t)n < size; i++)
        n += snprintf(buf + n, size - (size_t)n, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (n > 0 && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, "]");
}

/* dims: n_dims sizes; expected: how they were derived, for the message. */
static int expect_shape(const binder *b, const stored_tensor *t, int n_dims,
                        const int64_t *dims, const char *expected)
{
    bool ok = t->n_dims == n_dims;
    for (int i = 0; ok && i < n_dims; i++)
        ok = t->shape[i] == dims[i];
    if (ok)
        return 0;
    char got[128];
    format_shape(t, got, sizeof got);
    return alm_error_set(b->err, -EINVAL, "%s in %s: shape %s, expected %s",
                         t->name, t->file, got, expected);
}

static bool is_float_dtype(alm_dtype t)
{
    return t == ALM_DTYPE_F32 || t == ALM_DTYPE_F16 || t == ALM_DTYPE_BF16;
}

static int expect_float(const binder *b, const stored_tensor *t)
{
    if (is_float_dtype(t->dtype))
        return 0;
    return alm_error_set(b->err, -EINVAL, "%s in %s: dtype %s, expected F32, F16 or BF16",
                         t->name, t->file, alm_dtype_name(t->dtype));
}

static const stored_tensor *find(const binder *b, char *buf, const char *module, const char *suffix)
{
    format_name(buf, "%s.%s", module, suffix);
    return tensor_store_find(b->store, buf);
}

/* "[8, " for stacked expert tensors, "[" otherwise. */
static void shape_prefix(char *buf, size_t size, int n_stack)
{
    if (n_stack)
        snprintf(buf, size, "[%d, ", n_stack);
    else
        snprintf(buf, size, "[");
}

static int bind_dense(const binder *b, const stored_tensor *w, int n_stack, int rows, int cols,
                      alm_weight *out)
{
    int r = expect_float(b, w);
    if (r < 0)
        return r;
    char prefix[32], expected[128];
    shape_prefix(prefix, sizeof prefix, n_stack);
    snprintf(expected, sizeof expected, "%s%d, %d]", prefix, rows, cols);
    int64_t dims[3] = { n_stack, rows, cols };
    if ((r = expect_shape(b, w, n_stack ? 3 : 2, n_stack ? dims : dims + 1, expected)) < 0)
        return r;
    size_t matrix_bytes = (size_t)rows * (size_t)cols * alm_dtype_size(w->dtype);
    for (int e = 0; e < (n_stack ? n_stack : 1); e++) {
        out[e] = (alm_weight){
            .rows = rows, .cols = cols, .dtype = w->dtype,
            .data = (const uint8_t *)w->data + (size_t)e * matrix_bytes,
        };
    }
    return 0;
}

static int bind_quantized(const binder *b, const char *module, const stored_tensor *w,
                          const stored_tensor *scales, const stored_tensor *biases,
                          quant_spec spec, int n_stack, int rows, int cols, alm_weight *out)
{
    int r;
    if (w->dtype != ALM_DTYPE_U32)
        return alm_error_set(b->err, -EINVAL,
                             "%s in %s: dtype %s, expected U32 (the module is quantized: it has %s.scales)",
                             w->name, w->file, alm_dtype_name(w->dtype), module);
    if ((int64_t)cols * spec.bits % 32 != 0 || cols % spec.group_size != 0)
        return alm_error_set(b->err, -EINVAL,
                             "%s in %s: %d columns cannot be quantized with %d bits in groups of %d",
                             w->name, w->file, cols, spec.bits, spec.group_size);
    int packed = (int)((int64_t)cols * spec.bits / 32);
    int groups = cols / spec.group_size;

    char prefix[32], expected[160];
    shape_prefix(prefix, sizeof prefix, n_stack);
    snprintf(expected, sizeof expected, "%s%d, %d * %d / 32 = %d]", prefix, rows, cols, spec.bits, packed);
    int64_t dims[3] = { n_stack, rows, packed };
    if ((r = expect_shape(b, w, n_stack ? 3 : 2, n_stack ? dims : dims + 1, expected)) < 0)
        return r;

    snprintf(expected, sizeof expected, "%s%d, %d / %d = %d]", prefix, rows, cols, spec.group_size, groups);
    dims[2] = groups;
    if ((r = expect_float(b, scales)) < 0 || (r = expect_float(b, biases)) < 0
        || (r = expect_shape(b, scales, n_stack ? 3 : 2, n_stack ? dims : dims + 1, expected)) < 0
        || (r = expect_shape(b, biases, n_stack ? 3 : 2, n_stack ? dims : dims + 1, expected)) < 0)
        return r;
    if (scales->dtype != biases->dtype)
        return alm_error_set(b->err, -EINVAL, "%s in %s: dtype %s, but %s is %s (they must match)",
                             biases->name, biases->file, alm_dtype_name(biases->dtype),
                             scales->name, alm_dtype_name(scales->dtype));

    size_t data_bytes = (size_t)rows * (size_t)packed * 4;
    size_t scale_bytes = (size_t)rows * (size_t)groups * alm_dtype_size(scales->dtype);
    for (int e = 0; e < (n_stack ? n_stack : 1); e++) {
        out[e] = (alm_weight){
            .rows = rows, .cols = cols, .bits = spec.bits, .group_size = spec.group_size,
            .dtype = ALM_DTYPE_U32,
            .data = (const uint8_t *)w->data + (size_t)e * data_bytes,
            .scale_dtype = scales->dtype,
            .scales = (const uint8_t *)scales->data + (size_t)e * scale_bytes,
            .biases = (const uint8_t *)biases->data + (size_t)e * scale_bytes,
        };
    }
    return 0;
}

/* Binds MODULE.weight (and MODULE.scales / MODULE.biases when quantized) as
 * a [rows][cols] matrix, or, when n_stack > 0, as n_stack such matrices
 * stacked in one [n_stack][rows][cols] tensor (out then has n_stack
 * entries). The file says whether the module is quantized (scales present);
 * config.json must agree. */
static int bind_matrices(const binder *b, const char *module, int n_stack, int rows, int cols,
                         alm_weight *out)
{
    char weight_name[NAME_MAX_LEN], scales_name[NAME_MAX_LEN], biases_name[NAME_MAX_LEN];
    const stored_tensor *w = find(b, weight_name, module, "weight");
    const stored_tensor *scales = find(b, scales_name, module, "scales");
    const stored_tensor *biases = find(b, biases_name, module, "biases");
    if (!w)
        return missing_tensor(b, weight_name);
    quant_spec spec = model_config_quant_for(b->cfg, module);

    if (!scales && !biases) {
        if (w->dtype == ALM_DTYPE_U32)
            return alm_error_set(b->err, -ENOENT,
                                 "missing tensor %s: %s in %s is U32 (quantized) but has no scales",
                                 scales_name, weight_name, w->file);
        /* MLX leaves modules whose width is not a multiple of the group
         * size unquantized without writing an override: only a module that
         * could have been quantized contradicts the config. */
        if (spec.bits && cols % spec.group_size == 0)
            return alm_error_set(b->err, -EINVAL,
                                 "%s in %s: dense %s weight without %s, but config.json quantizes %s (%d bits, group %d)",
                                 weight_name, w->file, alm_dtype_name(w->dtype), scales_name, module,
                                 spec.bits, spec.group_size);
        return bind_dense(b, w, n_stack, rows, cols, out);
    }
    if (!scales)
        return missing_tensor(b, scales_name);
    if (!biases)
        return missing_tensor(b, biases_name);
    if (!spec.bits)
        return alm_error_set(b->err, -EINVAL,
                             "%s in %s: %s is quantized in the file, but config.json %s",
                             scales_name, scales->file, module,
                             b->cfg->quant.bits ? "excludes it from quantization"
                                                : "has no \"quantization\"");
    return bind_quantized(b, module, w, scales, biases, spec, n_stack, rows, cols, out);
}

static int bind_matrix(const binder *b, const char *module, int rows, int cols, alm_weight *out)
{
    return bind_matrices(b, module, 0, rows, cols, out);
}

/* A 1-D tensor of n floats, converted to a fresh F32 array. */
static int bind_vector(const binder *b, const char *name, int n, float **out)
{
    const stored_tensor *t = tensor_store_find(b->store, name);
    if (!t)
        return missing_tensor(b, name);
    char expected[32];
    snprintf(expected, sizeof expected, "[%d]", n);
    int64_t dims[1] = { n };
    int r;
    if ((r = expect_float(b, t)) < 0 || (r = expect_shape(b, t, 1, dims, expected)) < 0)
        return r;
    float *v = malloc((size_t)n * sizeof *v);
    if (!v)
        return alm_error_set(b->err, -ENOMEM, "%s: out of memory", name);
    for (int i = 0; i < n; i++)
        v[i] = alm_load_as_f32(t->dtype, t->data, (size_t)i);
    *out = v;
    return 0;
}

static int bind_module_vector(const binder *b, const char *module, const char *suffix, int n,
                              float **out)
{
    char name[NAME_MAX_LEN];
    format_name(name, "%s.%s", module, suffix);
    return bind_vector(b, name, n, out);
}

/* 0: gate, 1: up, 2: down. */
static alm_weight *expert_projection(expert_weights *x, int p)
{
    return p == 0 ? &x->gate : p == 1 ? &x->up : &x->down;
}

static int bind_experts(const binder *b, const char *moe, layer_weights *l)
{
    const model_config *c = b->cfg;
    int n = c->n_experts;
    l->experts = calloc((size_t)n, sizeof *l->experts);
    if (!l->experts)
        return alm_error_set(b->err, -ENOMEM, "%s: out of memory", moe);

    char name[NAME_MAX_LEN];
    format_name(name, "%s.switch_mlp.gate_proj.weight", moe);
    bool stacked = tensor_store_find(b->store, name) != NULL;
    format_name(name, "%s.experts.0.w1.weight", moe);
    if (stacked && !tensor_store_find(b->store, name)) {
        /* MLX: one [n_experts][rows][cols] tensor per projection. */
        alm_weight *tmp = calloc((size_t)n, sizeof *tmp);
        if (!tmp)
            return alm_error_set(b->err, -ENOMEM, "%s: out of memory", moe);
        static const char *const projections[3] = { "gate_proj", "up_proj", "down_proj" };
        int r = 0;
        for (int p = 0; r == 0 && p < 3; p++) {
            char module[NAME_MAX_LEN];
            format_name(module, "%s.switch_mlp.%s", moe, projections[p]);
            bool down = p == 2;
            int rows = down ? c->hidden_size : c->intermediate_size;
            int cols = down ? c->intermediate_size : c->hidden_size;
            r = bind_matrices(b, module, n, rows, cols, tmp);
            for (int e = 0; r == 0 && e < n; e++)
                *expert_projection(&l->experts[e], p) = tmp[e];
        }
        free(tmp);
        return r;
    }

    for (int e = 0; e < n; e++) {
        char module[NAME_MAX_LEN];
        expert_weights *x = &l->experts[e];
        int r;
        format_name(module, "%s.experts.%d.w1", moe, e);
        if ((r = bind_matrix(b, module, c->intermediate_size, c->hidden_size, &x->gate)) < 0)
            return r;
        format_name(module, "%s.experts.%d.w3", moe, e);
        if ((r = bind_matrix(b, module, c->intermediate_size, c->hidden_size, &x->up)) < 0)
            return r;
        format_name(module, "%s.experts.%d.w2", moe, e);
        if ((r = bind_matrix(b, module, c->hidden_size, c->intermediate_size, &x->down)) < 0)
            return r;
    }
    return 0;
}

static int bind_layer(const binder *b, int index, layer_weights *l)
{
    const model_config *c = b->cfg;
    const int hidden = c->hidden_size;
    const int q_dim = c->n_heads * c->head_dim;
    const int kv_dim = c->n_kv_heads * c->head_dim;
    char layer[NAME_MAX_LEN], module[NAME_MAX_LEN];
    format_name(layer, "model.layers.%d", index);
    int r;

    if ((r = bind_module_vector(b, layer, "input_layernorm.weight", hidden, &l->attn_norm)) < 0
        || (r = bind_module_vector(b, layer, "post_attention_layernorm.weight", hidden, &l->ffn_norm)) < 0)
        return r;

    static const char *const attn_names[4] = { "q_proj", "k_proj", "v_proj", "o_proj" };
    alm_weight *attn[4] = { &l->q, &l->k, &l->v, &l->o };
    float **attn_bias[4] = { &l->q_bias, &l->k_bias, &l->v_bias, &l->o_bias };
    const int attn_rows[4] = { q_dim, kv_dim, kv_dim, hidden };
    const int attn_cols[4] = { hidden, hidden, hidden, q_dim };
    const bool attn_has_bias[4] = { c->attention_bias, c->attention_bias, c->attention_bias,
                                    c->o_proj_bias };
    for (int i = 0; i < 4; i++) {
        format_name(module, "%s.self_attn.%s", layer, attn_names[i]);
        if ((r = bind_matrix(b, module, attn_rows[i], attn_cols[i], attn[i])) < 0)
            return r;
        if (attn_has_bias[i] && (r = bind_module_vector(b, module, "bias", attn_rows[i], attn_bias[i])) < 0)
            return r;
    }
    if (c->qk_norm) {
        format_name(module, "%s.self_attn", layer);
        if ((r = bind_module_vector(b, module, "q_norm.weight", c->head_dim, &l->q_norm)) < 0
            || (r = bind_module_vector(b, module, "k_norm.weight", c->head_dim, &l->k_norm)) < 0)
            return r;
    }

    if (c->n_experts > 0) {
        char moe[NAME_MAX_LEN];
        format_name(moe, "%s.block_sparse_moe", layer);
        format_name(module, "%s.gate", moe);
        if ((r = bind_matrix(b, module, c->n_experts, hidden, &l->router)) < 0)
            return r;
        return bind_experts(b, moe, l);
    }

    static const char *const mlp_names[3] = { "gate_proj", "up_proj", "down_proj" };
    alm_weight *mlp[3] = { &l->gate, &l->up, &l->down };
    float **mlp_bias[3] = { &l->gate_bias, &l->up_bias, &l->down_bias };
    const int mlp_rows[3] = { c->intermediate_size, c->intermediate_size, hidden };
    const int mlp_cols[3] = { hidden, hidden, c->intermediate_size };
    for (int i = 0; i < 3; i++) {
        format_name(module, "%s.mlp.%s", layer, mlp_names[i]);
        if ((r = bind_matrix(b, module, mlp_rows[i], mlp_cols[i], mlp[i])) < 0)
            return r;
        if (c->mlp_bias && (r = bind_module_vector(b, module, "bias", mlp_rows[i], mlp_bias[i])) < 0)
            return r;
    }
    return 0;
}

static int bind_all(const binder *b, model_weights *out)
{
    const model_config *cfg = b->cfg;
    out->layers = calloc((size_t)cfg->n_layers, sizeof *out->layers);
    if (!out->layers)
        return alm_error_set(b->err, -ENOMEM, "out of memory");
    out->n_layers = cfg->n_layers;

    int r;
    if ((r = bind_matrix(b, "model.embed_tokens", cfg->vocab_size, cfg->hidden_size, &out->embed)) < 0
        || (r = bind_vector(b, "model.norm.weight", cfg->hidden_size, &out->final_norm)) < 0)
        return r;
    /* Tied: the output projection is the embedding table, whatever else the
     * file holds (transformers ties the parameters the same way). */
    if (cfg->tie_word_embeddings)
        out->lm_head = out->embed;
    else if ((r = bind_matrix(b, "lm_head", cfg->vocab_size, cfg->hidden_size, &out->lm_head)) < 0)
        return r;
    for (int i = 0; i < cfg->n_layers; i++)
        if ((r = bind_layer(b, i, &out->layers[i])) < 0)
            return r;
    return 0;
}

int model_weights_bind(const model_config *cfg, const tensor_store *store,
                       model_weights *out, alm_error *err)
{
    memset(out, 0, sizeof *out);
    binder b = { .cfg = cfg, .store = store, .err = err };
    int r = bind_all(&b, out);
    if (r < 0)
        model_weights_clear(out);
    return r;
}

void model_weights_clear(model_weights *w)
{
    for (int i = 0; w->layers && i < w->n_layers; i++) {
        layer_weights *l = &w->layers[i];
        free(l->attn_norm);
        free(l->ffn_norm);
        free(l->q_bias);
        free(l->k_bias);
        free(l->v_bias);
        free(l->o_bias);
        free(l->q_norm);
        free(l->k_norm);
        free(l->gate_bias);
        free(l->up_bias);
        free(l->down_bias);
        free(l->experts);
    }
    free(w->layers);
    free(w->final_norm);
    memset(w, 0, sizeof *w);
}
