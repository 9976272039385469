/* config.json -> model_config. The architectures differ in a few rules
 * (which projections carry biases, where sliding windows apply, defaults of
 * absent keys); those are rows of arch_table, the parser has no per-model
 * branches beyond reading them. Defaults of absent keys follow the
 * transformers configuration classes. */
#include "loader/model_config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "loader/json_document.h"

#define CONFIG_MAX_BYTES ((size_t)16 << 20)
#define CONFIG_MAX_DEPTH 32

typedef enum sliding_rule {
    SLIDING_NEVER,        /* llama: no sliding-window attention */
    SLIDING_ALL_LAYERS,   /* mistral, mixtral: `sliding_window` (null = none) */
    SLIDING_QWEN,         /* only with use_sliding_window; layer_types or max_window_layers */
} sliding_rule;

typedef enum bias_rule {
    BIAS_NONE,            /* mistral, mixtral: no projection biases */
    BIAS_QKV,             /* qwen2: q, k and v always, o never */
    BIAS_FROM_KEY,        /* llama, qwen3: `attention_bias` gives q, k, v and o */
} bias_rule;

typedef struct arch_info {
    model_arch arch;
    const char *model_type;
    const char *hf_class;          /* architectures[0] */
    double default_rope_theta;
    double default_rms_norm_eps;
    int default_max_position;
    int default_sliding_window;    /* when the key is absent (null: none) */
    sliding_rule sliding;
    bias_rule bias;
    bool reads_mlp_bias;           /* llama's `mlp_bias` */
    bool qk_norm;
    bool moe;
} arch_info;

static const arch_info arch_table[] = {
    { MODEL_ARCH_LLAMA, "llama", "LlamaForCausalLM", 10000.0, 1e-6, 2048, 0,
      SLIDING_NEVER, BIAS_FROM_KEY, true, false, false },
    { MODEL_ARCH_MISTRAL, "mistral", "MistralForCausalLM", 10000.0, 1e-6, 4096 * 32, 4096,
      SLIDING_ALL_LAYERS, BIAS_NONE, false, false, false },
    { MODEL_ARCH_QWEN2, "qwen2", "Qwen2ForCausalLM", 10000.0, 1e-6, 32768, 4096,
      SLIDING_QWEN, BIAS_QKV, false, false, false },
    { MODEL_ARCH_QWEN3, "qwen3", "Qwen3ForCausalLM", 10000.0, 1e-6, 32768, 4096,
      SLIDING_QWEN, BIAS_FROM_KEY, false, true, false },
    { MODEL_ARCH_MIXTRAL, "mixtral", "MixtralForCausalLM", 1000000.0, 1e-5, 4096 * 32, 0,
      SLIDING_ALL_LAYERS, BIAS_NONE, false, false, true },
};

#define SUPPORTED_ARCHS "llama, mistral, qwen2, qwen3, mixtral"

const char *model_arch_name(model_arch arch)
{
    for (size_t i = 0; i < sizeof arch_table / sizeof arch_table[0]; i++)
        if (arch_table[i].arch == arch)
            return arch_table[i].model_type;
    return "unknown";
}

static const arch_info *arch_by_model_type(const char *name)
{
    for (size_t i = 0; i < sizeof arch_table / sizeof arch_table[0]; i++)
        if (strcmp(arch_table[i].model_type, name) == 0)
            return &arch_table[i];
    return NULL;
}

static const arch_info *arch_by_class(const char *name)
{
    for (size_t i = 0; i < sizeof arch_table / sizeof arch_table[0]; i++)
        if (strcmp(arch_table[i].hf_class, name) == 0)
            return &arch_table[i];
    return NULL;
}

/* ------------------------------------------------------------ typed keys */

/* Readers of one key of an object. Absent and null keys give the default;
 * a present key of the wrong type is an error naming the file and key
 * (`scope` is the enclosing object's name for nested keys, or NULL). */
typedef struct key_reader {
    const char *path;
    alm_error *err;
} key_reader;

static JsonNode *member_or_null(JsonObject *o, const char *key)
{
    JsonNode *n = o ? json_object_get_member(o, key) : NULL;
    return n && !JSON_NODE_HOLDS_NULL(n) ? n : NULL;
}

static int key_error(const key_reader *kr, const char *scope, const char *key, const char *what)
{
    if (scope)
        return alm_error_set(kr->err, -EINVAL, "%s: \"%s.%s\" %s", kr->path, scope, key, what);
    return alm_error_set(kr->err, -EINVAL, "%s: \"%s\" %s", kr->path, key, what);
}

/* An integer (JSON writers sometimes emit 4096.0: integral floats pass). */
static bool node_to_int64(JsonNode *n, int64_t *out)
{
    if (!JSON_NODE_HOLDS_VALUE(n))
        return false;
    GType t = json_node_get_value_type(n);
    if (t == G_TYPE_INT64) {
        *out = json_node_get_int(n);
        return true;
    }
    if (t == G_TYPE_DOUBLE) {
        double d = json_node_get_double(n);
        if (!isfinite(d) || d != floor(d) || fabs(d) > 9.0e15)
            return false;
        *out = (int64_t)d;
        return true;
    }
    return false;
}

static int read_int(const key_reader *kr, JsonObject *o, const char *scope, const char *key,
                    bool required, int def, int min, int max, int *out)
{
    JsonNode *n = member_or_null(o, key);
    if (!n) {
        if (required)
            return key_error(kr, scope, key, "is missing");
        *out = def;
        return 0;
    }
    int64_t v;
    if (!node_to_int64(n, &v))
        return key_error(kr, scope, key, "is not an integer");
    if (v < min || v > max) {
        char what[96];
        snprintf(what, sizeof what, "is %lld, outside [%d, %d]", (long long)v, min, max);
        return key_error(kr, scope, key, what);
    }
    *out = (int)v;
    return 0;
}

static int read_double(const key_reader *kr, JsonObject *o, const char *scope, const char *key,
                       bool required, double def, double *out)
{
    JsonNode *n = member_or_null(o, key);
    if (!n) {
        if (required)
            return key_error(kr, scope, key, "is missing");
        *out = def;
        return 0;
    }
    GType t = JSON_NODE_HOLDS_VALUE(n) ? json_node_get_value_type(n) : G_TYPE_INVALID;
    if (t == G_TYPE_INT64)
        *out = (double)json_node_get_int(n);
    else if (t == G_TYPE_DOUBLE)
        *out = json_node_get_double(n);
    else
        return key_error(kr, scope, key, "is not a number");
    if (!isfinite(*out))
        return key_error(kr, scope, key, "is not finite");
    return 0;
}

static int read_positive_double(const key_reader *kr, JsonObject *o, const char *scope,
                                const char *key, bool required, double def, double *out)
{
    int r = read_double(kr, o, scope, key, required, def, out);
    if (r == 0 && !(*out > 0))
        return key_error(kr, scope, key, "must be positive");
    return r;
}

static int read_bool(const key_reader *kr, JsonObject *o, const char *key, bool def, bool *out)
{
    JsonNode *n = member_or_null(o, key);
    if (!n) {
        *out = def;
        return 0;
    }
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_BOOLEAN)
        return key_error(kr, NULL, key, "is not true or false");
    *out = json_node_get_boolean(n);
    return 0;
}

/* NULL when absent or null; an error when present and not a string. */
static int read_string(const key_reader *kr, JsonObject *o, const char *scope, const char *key,
                       const char **out)
{
    *out = NULL;
    JsonNode *n = member_or_null(o, key);
    if (!n)
        return 0;
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING)
        return key_error(kr, scope, key, "is not a string");
    *out = json_node_get_string(n);
    return 0;
}

static int read_object(const key_reader *kr, JsonObject *o, const char *key, JsonObject **out)
{
    *out = NULL;
    JsonNode *n = member_or_null(o, key);
    if (!n)
        return 0;
    if (!JSON_NODE_HOLDS_OBJECT(n))
        return key_error(kr, NULL, key, "is not an object");
    *out = json_node_get_object(n);
    return 0;
}

/* ----------------------------------------------------------- the parts */

static int parse_architecture(const key_reader *kr, JsonObject *root, model_config *cfg,
                              const arch_info **out)
{
    const char *model_type;
    int r = read_string(kr, root, NULL, "model_type", &model_type);
    if (r < 0)
        return r;
    const arch_info *info = NULL;
    if (model_type) {
        info = arch_by_model_type(model_type);
        if (!info)
            return alm_error_set(kr->err, -ENOTSUP,
                                 "%s: unsupported architecture \"%s\" (supported: " SUPPORTED_ARCHS ")",
                                 kr->path, model_type);
    } else {
        /* Older or hand-written configs: the class name decides. */
        JsonNode *n = member_or_null(root, "architectures");
        if (!n)
            return alm_error_set(kr->err, -EINVAL, "%s: neither \"model_type\" nor \"architectures\" given",
                                 kr->path);
        JsonArray *a = JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;
        JsonNode *first = a && json_array_get_length(a) ? json_array_get_element(a, 0) : NULL;
        if (!first || !JSON_NODE_HOLDS_VALUE(first) || json_node_get_value_type(first) != G_TYPE_STRING)
            return key_error(kr, NULL, "architectures", "is not a list of class names");
        const char *cls = json_node_get_string(first);
        info = arch_by_class(cls);
        if (!info)
            return alm_error_set(kr->err, -ENOTSUP,
                                 "%s: unsupported architecture \"%s\" (supported: " SUPPORTED_ARCHS ")",
                                 kr->path, cls);
    }
    cfg->arch = info->arch;
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", info->model_type);
    *out = info;
    return 0;
}

/* Sizes: bounded so that every product the decoder forms (heads x head_dim,
 * vocab x hidden) fits its int fields. */
static int parse_sizes(const key_reader *kr, JsonObject *root, const arch_info *info,
                       model_config *cfg)
{
    const int big = 1 << 24;
    int r;
    if ((r = read_int(kr, root, NULL, "vocab_size", true, 0, 1, big, &cfg->vocab_size)) < 0
        || (r = read_int(kr, root, NULL, "hidden_size", true, 0, 1, 1 << 20, &cfg->hidden_size)) < 0
        || (r = read_int(kr, root, NULL, "intermediate_size", true, 0, 1, big, &cfg->intermediate_size)) < 0
        || (r = read_int(kr, root, NULL, "num_hidden_layers", true, 0, 1, 4096, &cfg->n_layers)) < 0
        || (r = read_int(kr, root, NULL, "num_attention_heads", true, 0, 1, 4096, &cfg->n_heads)) < 0
        || (r = read_int(kr, root, NULL, "num_key_value_heads", false, cfg->n_heads, 1, 4096,
                         &cfg->n_kv_heads)) < 0
        || (r = read_int(kr, root, NULL, "head_dim", false, 0, 1, 1 << 16, &cfg->head_dim)) < 0
        || (r = read_int(kr, root, NULL, "max_position_embeddings", false, info->default_max_position,
                         1, INT_MAX, &cfg->max_position_embeddings)) < 0)
        return r;

    if (cfg->head_dim == 0) {
        if (cfg->hidden_size % cfg->n_heads != 0)
            return alm_error_set(kr->err, -EINVAL,
                                 "%s: hidden_size %d is not divisible by num_attention_heads %d (and no head_dim given)",
                                 kr->path, cfg->hidden_size, cfg->n_heads);
        cfg->head_dim = cfg->hidden_size / cfg->n_heads;
    }
    if (cfg->head_dim % 2 != 0)
        return alm_error_set(kr->err, -EINVAL, "%s: head_dim %d is odd (rotary embeddings rotate pairs)",
                             kr->path, cfg->head_dim);
    if (cfg->n_kv_heads > cfg->n_heads || cfg->n_heads % cfg->n_kv_heads != 0)
        return alm_error_set(kr->err, -EINVAL,
                             "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                             kr->path, cfg->n_heads, cfg->n_kv_heads);
    if ((int64_t)cfg->n_heads * cfg->head_dim > big)
        return alm_error_set(kr->err, -EINVAL, "%s: num_attention_heads x head_dim = %lld is too large",
                             kr->path, (long long)cfg->n_heads * cfg->head_dim);

    double eps;
    if ((r = read_positive_double(kr, root, NULL, "rms_norm_eps", false, info->default_rms_norm_eps,
                                  &eps)) < 0)
        return r;
    cfg->rms_norm_eps = (float)eps;
    return 0;
}

/* rope_parameters (newer layout) or rope_theta + rope_scaling (older). The
 * scaling type and its factors come from whichever object names a type. */
static int parse_rope(const key_reader *kr, JsonObject *root, const arch_info *info,
                      model_config *cfg)
{
    JsonObject *params, *scaling;
    int r;
    if ((r = read_object(kr, root, "rope_parameters", &params)) < 0
        || (r = read_object(kr, root, "rope_scaling", &scaling)) < 0)
        return r;

    double theta;
    if (member_or_null(params, "rope_theta"))
        r = read_positive_double(kr, params, "rope_parameters", "rope_theta", true, 0, &theta);
    else
        r = read_positive_double(kr, root, NULL, "rope_theta", false, info->default_rope_theta, &theta);
    if (r < 0)
        return r;
    cfg->rope_theta = theta;

    JsonObject *typed = NULL;
    const char *scope = NULL;
    if (member_or_null(params, "rope_type") || member_or_null(params, "type")) {
        typed = params;
        scope = "rope_parameters";
    } else if (member_or_null(scaling, "rope_type") || member_or_null(scaling, "type")) {
        typed = scaling;
        scope = "rope_scaling";
    }
    const char *type = "default";
    if (typed) {
        const char *name;
        if ((r = read_string(kr, typed, scope, "rope_type", &name)) < 0)
            return r;
        if (!name && (r = read_string(kr, typed, scope, "type", &name)) < 0)
            return r;
        type = name;
    }

    cfg->rope_scaling = ROPE_SCALING_NONE;
    cfg->rope_factor = 1.0;
    if (strcmp(type, "default") == 0)
        return 0;
    if (strcmp(type, "linear") == 0) {
        cfg->rope_scaling = ROPE_SCALING_LINEAR;
        return read_positive_double(kr, typed, scope, "factor", true, 0, &cfg->rope_factor);
    }
    if (strcmp(type, "llama3") == 0) {
        cfg->rope_scaling = ROPE_SCALING_LLAMA3;
        if ((r = read_positive_double(kr, typed, scope, "factor", true, 0, &cfg->rope_factor)) < 0
            || (r = read_positive_double(kr, typed, scope, "low_freq_factor", true, 0,
                                         &cfg->rope_low_freq_factor)) < 0
            || (r = read_positive_double(kr, typed, scope, "high_freq_factor", true, 0,
                                         &cfg->rope_high_freq_factor)) < 0
            || (r = read_int(kr, typed, scope, "original_max_position_embeddings", true, 0, 1, INT_MAX,
                             &cfg->rope_original_max_pos)) < 0)
            return r;
        /* The smoothing between the two bands divides by their difference. */
        if (!(cfg->rope_high_freq_factor > cfg->rope_low_freq_factor))
            return alm_error_set(kr->err, -EINVAL,
                                 "%s: %s.high_freq_factor %g must exceed low_freq_factor %g",
                                 kr->path, scope, cfg->rope_high_freq_factor, cfg->rope_low_freq_factor);
        return 0;
    }
    return alm_error_set(kr->err, -ENOTSUP,
                         "%s: rope type \"%s\" is not supported (supported: default, linear, llama3)",
                         kr->path, type);
}

/* Which layers use a sliding window (see sliding_rule). */
static int parse_sliding_window(const key_reader *kr, JsonObject *root, const arch_info *info,
                                model_config *cfg)
{
    cfg->layer_sliding = calloc((size_t)cfg->n_layers, sizeof *cfg->layer_sliding);
    if (!cfg->layer_sliding)
        return alm_error_set(kr->err, -ENOMEM, "%s: out of memory", kr->path);
    cfg->sliding_window = 0;
    if (info->sliding == SLIDING_NEVER)
        return 0;

    /* Absent: the class default; null: no window. */
    int window, r;
    int def = json_object_has_member(root, "sliding_window") ? 0 : info->default_sliding_window;
    if ((r = read_int(kr, root, NULL, "sliding_window", false, def, 0, INT_MAX, &window)) < 0)
        return r;
    if (info->sliding == SLIDING_ALL_LAYERS) {
        for (int i = 0; i < cfg->n_layers; i++)
            cfg->layer_sliding[i] = window > 0;
        cfg->sliding_window = window;
        return 0;
    }

    bool use_sliding;
    int max_window_layers;
    if ((r = read_bool(kr, root, "use_sliding_window", false, &use_sliding)) < 0
        || (r = read_int(kr, root, NULL, "max_window_layers", false, 28, 0, INT_MAX,
                         &max_window_layers)) < 0)
        return r;
    if (!use_sliding)
        window = 0;

    JsonNode *types_node = member_or_null(root, "layer_types");
    JsonArray *types = types_node && JSON_NODE_HOLDS_ARRAY(types_node) ? json_node_get_array(types_node) : NULL;
    if (types_node && !types)
        return key_error(kr, NULL, "layer_types", "is not a list");
    if (types && json_array_get_length(types) != (guint)cfg->n_layers)
        return alm_error_set(kr->err, -EINVAL, "%s: \"layer_types\" has %u entries for %d layers",
                             kr->path, json_array_get_length(types), cfg->n_layers);
    bool any = false;
    for (int i = 0; i < cfg->n_layers; i++) {
        bool sliding = i >= max_window_layers;
        if (types) {
            JsonNode *e = json_array_get_element(types, (guint)i);
            const char *t = JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_STRING
                                ? json_node_get_string(e) : "";
            if (strcmp(t, "sliding_attention") == 0)
                sliding = true;
            else if (strcmp(t, "full_attention") == 0)
                sliding = false;
            else
                return alm_error_set(kr->err, -ENOTSUP,
                                     "%s: layer_types[%d] is not \"full_attention\" or \"sliding_attention\"",
                                     kr->path, i);
        }
        /* transformers drops the window when use_sliding_window is false,
         * whatever layer_types says. */
        cfg->layer_sliding[i] = sliding && window > 0;
        any |= cfg->layer_sliding[i];
    }
    cfg->sliding_window = any ? window : 0;
    return 0;
}

static int parse_biases_and_norms(const key_reader *kr, JsonObject *root, const arch_info *info,
                                  model_config *cfg)
{
    int r;
    bool attention_bias = false;
    switch (info->bias) {
    case BIAS_NONE:
        break;
    case BIAS_QKV:
        cfg->attention_bias = true;
        break;
    case BIAS_FROM_KEY:
        /* LlamaAttention and Qwen3Attention give all four projections
         * bias=config.attention_bias. */
        if ((r = read_bool(kr, root, "attention_bias", false, &attention_bias)) < 0)
            return r;
        cfg->attention_bias = attention_bias;
        cfg->o_proj_bias = attention_bias;
        break;
    }
    if (info->reads_mlp_bias && (r = read_bool(kr, root, "mlp_bias", false, &cfg->mlp_bias)) < 0)
        return r;
    cfg->qk_norm = info->qk_norm;
    /* Every transformers class defaults to untied; files that tie say so. */
    return read_bool(kr, root, "tie_word_embeddings", false, &cfg->tie_word_embeddings);
}

static int parse_experts(const key_reader *kr, JsonObject *root, const arch_info *info,
                         model_config *cfg)
{
    if (!info->moe)
        return 0;
    int r;
    if ((r = read_int(kr, root, NULL, "num_local_experts", false, 8, 1, 4096, &cfg->n_experts)) < 0
        || (r = read_int(kr, root, NULL, "num_experts_per_tok", false, 2, 1, 4096,
                         &cfg->n_experts_per_tok)) < 0)
        return r;
    if (cfg->n_experts_per_tok > cfg->n_experts)
        return alm_error_set(kr->err, -EINVAL,
                             "%s: num_experts_per_tok %d exceeds num_local_experts %d",
                             kr->path, cfg->n_experts_per_tok, cfg->n_experts);
    return 0;
}

static int parse_special_tokens(const key_reader *kr, JsonObject *root, model_config *cfg)
{
    int r = read_int(kr, root, NULL, "bos_token_id", false, -1, 0, INT_MAX, &cfg->bos_token_id);
    if (r < 0)
        return r;
    cfg->n_eos = 0;
    JsonNode *n = member_or_null(root, "eos_token_id");
    if (!n)
        return 0;
    if (!JSON_NODE_HOLDS_ARRAY(n))
        return read_int(kr, root, NULL, "eos_token_id", true, 0, 0, INT_MAX, &cfg->eos_token_ids[cfg->n_eos++]);
    JsonArray *a = json_node_get_array(n);
    guint len = json_array_get_length(a);
    if (len > MODEL_MAX_EOS)
        return alm_error_set(kr->err, -EINVAL, "%s: \"eos_token_id\" lists %u ids, at most %d supported",
                             kr->path, len, MODEL_MAX_EOS);
    for (guint i = 0; i < len; i++) {
        int64_t v;
        if (!node_to_int64(json_array_get_element(a, i), &v) || v < 0 || v > INT_MAX)
            return alm_error_set(kr->err, -EINVAL, "%s: \"eos_token_id\"[%u] is not a token id",
                                 kr->path, i);
        cfg->eos_token_ids[cfg->n_eos++] = (int)v;
    }
    return 0;
}

/* ------------------------------------------------------------ quantization */

static int check_quant_mode(const key_reader *kr, JsonObject *q, const char *scope)
{
    const char *mode;
    int r = read_string(kr, q, scope, "mode", &mode);
    if (r < 0)
        return r;
    if (mode && strcmp(mode, "affine") != 0)
        return alm_error_set(kr->err, -ENOTSUP,
                             "%s: quantization mode \"%s\" is not supported (only affine)", kr->path, mode);
    return 0;
}

static int check_quant_spec(const key_reader *kr, const char *scope, quant_spec spec)
{
    if (spec.bits != 2 && spec.bits != 4 && spec.bits != 8)
        return alm_error_set(kr->err, -ENOTSUP,
                             "%s: \"%s\": quantization with %d bits is not supported (2, 4 or 8)",
                             kr->path, scope, spec.bits);
    if (spec.group_size != 32 && spec.group_size != 64 && spec.group_size != 128)
        return alm_error_set(kr->err, -ENOTSUP,
                             "%s: \"%s\": quantization group size %d is not supported (32, 64 or 128)",
                             kr->path, scope, spec.group_size);
    return 0;
}

static int add_override(const key_reader *kr, model_config *cfg, const char *module, quant_spec spec)
{
    quant_override *o = realloc(cfg->quant_overrides, (cfg->n_quant_overrides + 1) * sizeof *o);
    if (!o)
        return alm_error_set(kr->err, -ENOMEM, "%s: out of memory", kr->path);
    cfg->quant_overrides = o;
    o[cfg->n_quant_overrides].module = strdup(module);
    if (!o[cfg->n_quant_overrides].module)
        return alm_error_set(kr->err, -ENOMEM, "%s: out of memory", kr->path);
    o[cfg->n_quant_overrides].spec = spec;
    cfg->n_quant_overrides++;
    return 0;
}

/* MLX: {"group_size", "bits", "mode"?, "<module path>": {...} | false}.
 * `quantization` is MLX's own key; `quantization_config` the copy that
 * transformers reads, used when the first is absent. */
static int parse_quantization(const key_reader *kr, JsonObject *root, model_config *cfg)
{
    const char *scope = "quantization";
    JsonObject *q;
    int r = read_object(kr, root, scope, &q);
    if (r == 0 && !q) {
        scope = "quantization_config";
        r = read_object(kr, root, scope, &q);
    }
    if (r < 0 || !q)
        return r;

    const char *method;
    if ((r = read_string(kr, q, scope, "quant_method", &method)) < 0)
        return r;
    if (method && strcmp(method, "mlx") != 0)
        return alm_error_set(kr->err, -ENOTSUP,
                             "%s: quantization method \"%s\" is not supported (only MLX affine)",
                             kr->path, method);
    if ((r = check_quant_mode(kr, q, scope)) < 0
        || (r = read_int(kr, q, scope, "bits", true, 0, INT_MIN, INT_MAX, &cfg->quant.bits)) < 0
        || (r = read_int(kr, q, scope, "group_size", true, 0, INT_MIN, INT_MAX, &cfg->quant.group_size)) < 0
        || (r = check_quant_spec(kr, scope, cfg->quant)) < 0)
        return r;

    JsonObjectIter it;
    const char *key;
    JsonNode *value;
    json_object_iter_init(&it, q);
    while (json_object_iter_next(&it, &key, &value)) {
        if (strcmp(key, "bits") == 0 || strcmp(key, "group_size") == 0 || strcmp(key, "mode") == 0
            || strcmp(key, "quant_method") == 0)
            continue;
        if (JSON_NODE_HOLDS_VALUE(value) && json_node_get_value_type(value) == G_TYPE_BOOLEAN) {
            /* false: this module stays in full precision; true: the default. */
            if (!json_node_get_boolean(value)
                && (r = add_override(kr, cfg, key, (quant_spec){ 0, 0 })) < 0)
                return r;
            continue;
        }
        if (!JSON_NODE_HOLDS_OBJECT(value))
            continue; /* other settings of the writer: not ours */
        JsonObject *o = json_node_get_object(value);
        char where[256];
        snprintf(where, sizeof where, "%s.%s", scope, key);
        quant_spec spec;
        if ((r = check_quant_mode(kr, o, where)) < 0
            || (r = read_int(kr, o, where, "bits", false, cfg->quant.bits, INT_MIN, INT_MAX, &spec.bits)) < 0
            || (r = read_int(kr, o, where, "group_size", false, cfg->quant.group_size, INT_MIN, INT_MAX,
                             &spec.group_size)) < 0
            || (r = check_quant_spec(kr, where, spec)) < 0
            || (r = add_override(kr, cfg, key, spec)) < 0)
            return r;
    }
    return 0;
}

quant_spec model_config_quant_for(const model_config *cfg, const char *module)
{
    for (size_t i = 0; i < cfg->n_quant_overrides; i++)
        if (strcmp(cfg->quant_overrides[i].module, module) == 0)
            return cfg->quant_overrides[i].spec;
    return cfg->quant;
}

/* -------------------------------------------------------------- entry */

int model_config_parse(const char *json, size_t len, const char *path,
                       model_config *out, alm_error *err)
{
    memset(out, 0, sizeof *out);
    json_document doc;
    int r = json_document_parse(json, len, path, CONFIG_MAX_DEPTH, false, &doc, err);
    if (r < 0)
        return r;
    key_reader kr = { .path = path, .err = err };
    const arch_info *info = NULL;
    const char *dtype = NULL;
    if ((r = parse_architecture(&kr, doc.root, out, &info)) < 0
        || (r = parse_sizes(&kr, doc.root, info, out)) < 0
        || (r = parse_rope(&kr, doc.root, info, out)) < 0
        || (r = parse_sliding_window(&kr, doc.root, info, out)) < 0
        || (r = parse_biases_and_norms(&kr, doc.root, info, out)) < 0
        || (r = parse_experts(&kr, doc.root, info, out)) < 0
        || (r = parse_special_tokens(&kr, doc.root, out)) < 0
        || (r = parse_quantization(&kr, doc.root, out)) < 0
        || (r = read_string(&kr, doc.root, NULL, "dtype", &dtype)) < 0
        || (!dtype && (r = read_string(&kr, doc.root, NULL, "torch_dtype", &dtype)) < 0)) {
        json_document_clear(&doc);
        model_config_clear(out);
        return r;
    }
    snprintf(out->torch_dtype, sizeof out->torch_dtype, "%s", dtype ? dtype : "");
    json_document_clear(&doc);
    return 0;
}

int model_config_load(const char *path, model_config *out, alm_error *err)
{
    memset(out, 0, sizeof *out);
    _cleanup_free_ char *text = NULL;
    size_t len;
    int r = read_small_file(path, CONFIG_MAX_BYTES, &text, &len, err);
    if (r < 0)
        return r;
    return model_config_parse(text, len, path, out, err);
}

void model_config_clear(model_config *cfg)
{
    free(cfg->layer_sliding);
    for (size_t i = 0; i < cfg->n_quant_overrides; i++)
        free(cfg->quant_overrides[i].module);
    free(cfg->quant_overrides);
    memset(cfg, 0, sizeof *cfg);
}
