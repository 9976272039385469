/* config.json of a Hugging Face / MLX model folder, for the decoder
 * architectures alm runs (llama, mistral, qwen2, qwen3, mixtral). Both
 * layouts seen in the wild are accepted: rope_theta / rope_scaling at top
 * level or rope_parameters {rope_theta, rope_type, ...}; torch_dtype or
 * dtype. */
#ifndef ALM_LOADER_MODEL_CONFIG_H
#define ALM_LOADER_MODEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "alm.h"

typedef enum model_arch {
    MODEL_ARCH_LLAMA,
    MODEL_ARCH_MISTRAL,
    MODEL_ARCH_QWEN2,
    MODEL_ARCH_QWEN3,
    MODEL_ARCH_MIXTRAL,
} model_arch;

typedef enum rope_scaling_type {
    ROPE_SCALING_NONE,
    ROPE_SCALING_LINEAR,
    ROPE_SCALING_LLAMA3,
} rope_scaling_type;

/* bits == 0: not quantized. */
typedef struct quant_spec {
    int bits;        /* 2, 4 or 8 */
    int group_size;  /* 32, 64 or 128 */
} quant_spec;

typedef struct quant_override {
    char *module;    /* module path, e.g. "lm_head" or "model.layers.0.mlp.down_proj" */
    quant_spec spec; /* bits == 0: this module is not quantized */
} quant_override;

#define MODEL_MAX_EOS 8

typedef struct model_config {
    model_arch arch;
    char model_type[32];

    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;                  /* explicit, or hidden_size / n_heads */
    int max_position_embeddings;
    float rms_norm_eps;
    char torch_dtype[16];          /* "bfloat16", ... (dtype or torch_dtype); "" when absent */

    double rope_theta;
    rope_scaling_type rope_scaling;
    double rope_factor;            /* linear and llama3 */
    double rope_low_freq_factor;   /* llama3 */
    double rope_high_freq_factor;  /* llama3 */
    int rope_original_max_pos;     /* llama3 original_max_position_embeddings */

    /* Sliding-window attention: window length, 0 = full attention. Per
     * layer, because qwen2's layer_types / max_window_layers can mix them. */
    int sliding_window;
    bool *layer_sliding;           /* n_layers entries */

    bool tie_word_embeddings;
    bool attention_bias;           /* q/k/v projections have biases */
    bool o_proj_bias;              /* llama/qwen3: the same attention_bias key */
    bool mlp_bias;                 /* llama: gate/up/down have biases */
    bool qk_norm;                  /* per-head RMSNorm on q and k (qwen3) */

    int n_experts;                 /* 0 = dense MLP */
    int n_experts_per_tok;

    int bos_token_id;              /* -1 when absent / null */
    int n_eos;
    int eos_token_ids[MODEL_MAX_EOS];

    /* MLX affine quantization: the default spec (bits 0 when the model is
     * not quantized) and per-module overrides. */
    quant_spec quant;
    size_t n_quant_overrides;
    quant_override *quant_overrides;
} model_config;

/* Parses path (a config.json). Unknown architectures, missing or
 * inconsistent keys and unsupported quantization (other "mode"s than affine,
 * bits or group sizes alm cannot run) are errors naming the file and key. */
int model_config_load(const char *path, model_config *out, alm_error *err);
/* The same from text in memory; path is used only in messages. */
int model_config_parse(const char *json, size_t len, const char *path,
                       model_config *out, alm_error *err);
void model_config_clear(model_config *cfg);

/* The quantization that applies to a module (e.g. "model.layers.3.self_attn.q_proj"):
 * its override if one names it, else the default. */
quant_spec model_config_quant_for(const model_config *cfg, const char *module);

const char *model_arch_name(model_arch arch);

#endif
