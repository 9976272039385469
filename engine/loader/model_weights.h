/* Binds the tensors of a model folder to the decoder's weights, by the
 * Hugging Face tensor names, checking every shape against config.json.
 *
 * Names (prefix "model."):
 *   embed_tokens, norm, lm_head (top level, absent when tied),
 *   layers.N.input_layernorm, layers.N.post_attention_layernorm,
 *   layers.N.self_attn.{q,k,v,o}_proj (+ .bias for q/k/v when
 *   attention_bias), layers.N.self_attn.{q,k}_norm (qwen3),
 *   layers.N.mlp.{gate,up,down}_proj (dense) or
 *   layers.N.block_sparse_moe.gate and
 *   layers.N.block_sparse_moe.experts.E.{w1,w3,w2} (mixtral: w1 = gate,
 *   w3 = up, w2 = down), or MLX's stacked
 *   layers.N.block_sparse_moe.switch_mlp.{gate,up,down}_proj of shape
 *   [n_experts][rows][cols] (each expert's descriptor points at its slice).
 * Linear biases: layers.N.self_attn.{q,k,v,o}_proj.bias as the config says
 * (attention_bias / o_proj_bias), layers.N.mlp.{gate,up,down}_proj.bias when
 * mlp_bias.
 * A quantized module NAME has NAME.weight (U32), NAME.scales, NAME.biases.
 * Vectors (norm weights, linear biases) may be F32, F16 or BF16; they are
 * converted to F32 at load (small) so kernels read one type. */
#ifndef ALM_LOADER_MODEL_WEIGHTS_H
#define ALM_LOADER_MODEL_WEIGHTS_H

#include "alm.h"
#include "core/weight.h"
#include "loader/model_config.h"
#include "loader/safetensors.h"

typedef struct expert_weights {
    alm_weight gate;   /* [intermediate][hidden] */
    alm_weight up;     /* [intermediate][hidden] */
    alm_weight down;   /* [hidden][intermediate] */
} expert_weights;

typedef struct layer_weights {
    float *attn_norm;      /* [hidden] input_layernorm */
    float *ffn_norm;       /* [hidden] post_attention_layernorm */
    alm_weight q, k, v, o; /* q: [n_heads*head_dim][hidden], k/v: [n_kv*head_dim][hidden], o: [hidden][n_heads*head_dim] */
    float *q_bias, *k_bias, *v_bias; /* NULL unless attention_bias */
    float *o_bias;                   /* NULL unless o_proj_bias (llama/qwen3 attention_bias) */
    float *q_norm, *k_norm;          /* [head_dim], NULL unless qk_norm */
    /* Dense MLP (n_experts == 0): */
    alm_weight gate, up, down;
    float *gate_bias, *up_bias;      /* [intermediate], NULL unless mlp_bias (llama) */
    float *down_bias;                /* [hidden], NULL unless mlp_bias */
    /* Mixture of experts: */
    alm_weight router;               /* [n_experts][hidden] */
    expert_weights *experts;         /* n_experts entries */
} layer_weights;

typedef struct model_weights {
    alm_weight embed;        /* [vocab][hidden] */
    alm_weight lm_head;      /* [vocab][hidden]; a copy of embed's descriptor when tied */
    float *final_norm;       /* [hidden] */
    int n_layers;
    layer_weights *layers;
} model_weights;

/* Every tensor must exist with the shape config.json implies; errors name
 * the file, the tensor and what is wrong. Tensors the model does not use are
 * ignored (e.g. rotary_emb.inv_freq). */
int model_weights_bind(const model_config *cfg, const tensor_store *store,
                       model_weights *out, alm_error *err);
void model_weights_clear(model_weights *w);

#endif
