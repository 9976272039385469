/* Random-weight models of real shapes, built in memory: benchmarks of
 * models that cannot be downloaded here (timing does not depend on the
 * values). A preset is a row of real config.json values; the weights are
 * laid out exactly as a model folder would hold them (MLX affine packing
 * when quantized) in one anonymous mapping and filled once, in parallel,
 * from a counter-based generator, so the same seed gives the same weights
 * whatever the number of threads. No tokenizer: such a model takes token
 * ids. */
#ifndef ALM_MODEL_RANDOM_MODEL_H
#define ALM_MODEL_RANDOM_MODEL_H

#include <stdbool.h>
#include <stddef.h>

#include "alm.h"

typedef struct random_preset {
    const char *name;
    const char *model_type;   /* llama, qwen2, qwen3, mixtral */
    const char *what;         /* the model whose config.json it copies */
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int max_position_embeddings;
    double rms_norm_eps;
    double rope_theta;
    /* llama3 rope scaling; factor 0 = none. */
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_pos;
    bool tie_word_embeddings;
    int n_experts, n_experts_per_tok;   /* mixtral */
} random_preset;

/* NULL when there is no such preset. */
const random_preset *random_preset_find(const char *name);
/* The presets, in table order; n gets their number. */
const random_preset *random_presets(size_t *n);

/* The config.json text a folder of this model would hold, with the
 * "quantization" entry when p->bits > 0. *json is malloc'ed. */
int random_preset_config_json(const random_preset *preset, const alm_random_params *p,
                              char **json, alm_error *err);

#endif
