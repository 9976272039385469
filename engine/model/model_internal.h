/* What a loaded model holds; shared by model.c (loading), seq.c (state)
 * and decoder.c (the forward pass). */
#ifndef ALM_MODEL_INTERNAL_H
#define ALM_MODEL_INTERNAL_H

#include "alm.h"
#include "backend/backend.h"
#include "loader/model_config.h"
#include "loader/model_weights.h"
#include "loader/safetensors.h"

/* Tokens processed in one pass; longer inputs are split into passes. */
#define SEQ_MAX_BATCH 512
/* Positions the rotary table covers (bounds a sequence's length). */
#define MODEL_MAX_POSITIONS 32768

struct alm_model {
    char *dir;
    model_config cfg;
    tensor_store *store;
    model_weights weights;
    alm_tokenizer *tokenizer;
    backend *be;
    rope_table rope;
    float *rope_cos, *rope_sin;    /* backend memory behind rope */
    attention_shape *layer_shapes; /* per layer (windows differ) */
    moe_expert **experts;          /* per layer, NULL for dense layers */
    /* Every weight, for sizing workspaces. */
    const alm_weight **all_weights;
    size_t n_all_weights;
    /* Bytes of the files' mapping let go because the backend keeps its own
     * copy of those weights (alm_model_memory_bytes). */
    size_t released_bytes;
};

struct alm_seq {
    alm_model *model;
    int length;
    int capacity;
    int batch;           /* tokens per pass */
    int32_t *tokens;     /* the ids in the cache, [capacity] */
    kv_layer *cache;     /* per layer */
    /* Activations of one pass, [batch][width]. */
    float *x, *q, *k, *v, *attn, *h;
    void *workspace;
    int workspace_threads;
    size_t memory_bytes;
    int vocab_limit;     /* logits for ids below this only; 0: all */
    int vocab_rows;      /* lm_head rows computed for it (whole tiles); 0: all */
};

/* Fills a new model's cfg and store (and tokenizer, which may stay NULL). */
typedef int (*model_source_fn)(alm_model *m, void *ctx, alm_error *err);

/* Builds a model named `name` (its folder, or what stands for one): the
 * source fills cfg and store, then the weights are bound, the backend for
 * params->device is created and the tables are built. On error nothing is
 * left allocated. */
int model_create(const char *name, const alm_model_params *params, model_source_fn read_source,
                 void *ctx, alm_model **out, alm_error *err);

/* Runs the decoder over tokens[0..n) at positions seq->length.. (n <= batch),
 * writing logits for the last n_logits of them. */
void decoder_forward(alm_seq *seq, alm_pool *pool, const int32_t *tokens, int n,
                     int n_logits, float *logits);

/* The same pass, with the backend's logits_argmax for the last n_out tokens
 * (the backend must have one). */
void decoder_forward_argmax(alm_seq *seq, alm_pool *pool, const int32_t *tokens, int n,
                            int n_out, int32_t *ids, float *top_prob);

/* The argmax of the last of tokens[0..n) as a queued pass (the backend's
 * queue): the id (and, want_top, its probability) stays with the backend
 * until collect. tokens NULL (n 1): the last id kept is the token. */
void decoder_queue_argmax(alm_seq *seq, alm_pool *pool, const int32_t *tokens, int n,
                          bool want_top);

#endif
