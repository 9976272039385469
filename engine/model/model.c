/* Loading a model folder: config, mapped weights, tokenizer, and the tables
 * the forward pass needs. Random-weight models (random_model.c) share all
 * but the first step through model_create. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "model/model_internal.h"
#include "model/rope.h"
#ifdef ALM_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

alm_model_params alm_model_default_params(void)
{
    /* ALM_DEVICE lets a test suite or a benchmark run unchanged on a GPU. */
    const char *device = getenv("ALM_DEVICE");
    return (alm_model_params){ .device = device && *device ? device : "cpu" };
}

#ifdef ALM_HAVE_CUDA
#define DEVICES "cpu, cuda"
#else
#define DEVICES "cpu"
#endif

/* The backend that runs the model's passes on the device asked for. */
static int backend_for_device(const char *device, backend **out, alm_error *err)
{
    if (!device || strcmp(device, "cpu") == 0)
        return cpu_backend_new(out, err);
#ifdef ALM_HAVE_CUDA
    if (strcmp(device, "cuda") == 0)
        return cuda_backend_new(out, err);
#endif
    return alm_error_set(err, -ENOTSUP, "device \"%s\" is not available (this build has: " DEVICES ")",
                         device);
}

static int add_weight(alm_model *m, const alm_weight *w)
{
    const alm_weight **grown = realloc(m->all_weights, sizeof *grown * (m->n_all_weights + 1));
    if (!grown)
        return -ENOMEM;
    m->all_weights = grown;
    m->all_weights[m->n_all_weights++] = w;
    return 0;
}

/* Shapes, expert tables and the list of all weights, derived once. */
static int build_tables(alm_model *m, alm_error *err)
{
    const model_config *c = &m->cfg;
    m->layer_shapes = calloc((size_t)c->n_layers, sizeof *m->layer_shapes);
    m->experts = calloc((size_t)c->n_layers, sizeof *m->experts);
    if (!m->layer_shapes || !m->experts)
        return alm_error_set(err, -ENOMEM, "out of memory");
    if (c->n_experts > MOE_MAX_EXPERTS)
        return alm_error_set(err, -EINVAL, "%s: %d experts, at most %d are supported",
                             m->dir, c->n_experts, MOE_MAX_EXPERTS);
    int r = 0;
    r |= add_weight(m, &m->weights.embed);
    r |= add_weight(m, &m->weights.lm_head);
    for (int l = 0; l < c->n_layers; l++) {
        layer_weights *L = &m->weights.layers[l];
        m->layer_shapes[l] = (attention_shape){
            .n_heads = c->n_heads,
            .n_kv_heads = c->n_kv_heads,
            .head_dim = c->head_dim,
            .window = c->layer_sliding && c->layer_sliding[l] ? c->sliding_window : 0,
        };
        r |= add_weight(m, &L->q);
        r |= add_weight(m, &L->k);
        r |= add_weight(m, &L->v);
        r |= add_weight(m, &L->o);
        if (c->n_experts > 0) {
            m->experts[l] = calloc((size_t)c->n_experts, sizeof(moe_expert));
            if (!m->experts[l])
                return alm_error_set(err, -ENOMEM, "out of memory");
            r |= add_weight(m, &L->router);
            for (int e = 0; e < c->n_experts; e++) {
                expert_weights *E = &L->experts[e];
                m->experts[l][e] = (moe_expert){ &E->gate, &E->up, &E->down };
                r |= add_weight(m, &E->gate);
                r |= add_weight(m, &E->up);
                r |= add_weight(m, &E->down);
            }
        } else {
            r |= add_weight(m, &L->gate);
            r |= add_weight(m, &L->up);
            r |= add_weight(m, &L->down);
        }
    }
    if (r)
        return alm_error_set(err, -ENOMEM, "out of memory");
    return 0;
}

static int build_rope(alm_model *m, alm_error *err)
{
    const model_config *c = &m->cfg;
    if (c->head_dim % 2 || c->head_dim > ROPE_MAX_HEAD_DIM)
        return alm_error_set(err, -EINVAL, "%s/config.json: head_dim %d is not supported (even, at most %d)",
                             m->dir, c->head_dim, ROPE_MAX_HEAD_DIM);
    int n_pos = c->max_position_embeddings;
    if (n_pos <= 0 || n_pos > MODEL_MAX_POSITIONS)
        n_pos = MODEL_MAX_POSITIONS;
    size_t bytes = sizeof(float) * (size_t)n_pos * (size_t)(c->head_dim / 2);
    _cleanup_free_ float *cos_host = malloc(bytes);
    _cleanup_free_ float *sin_host = malloc(bytes);
    m->rope_cos = m->be->ops->alloc(m->be, bytes);
    m->rope_sin = m->be->ops->alloc(m->be, bytes);
    if (!cos_host || !sin_host || !m->rope_cos || !m->rope_sin)
        return alm_error_set(err, -ENOMEM, "out of memory for the rotary table");
    rope_fill(c, c->head_dim, n_pos, cos_host, sin_host);
    m->be->ops->upload(m->be, m->rope_cos, cos_host, bytes);
    m->be->ops->upload(m->be, m->rope_sin, sin_host, bytes);
    m->rope = (rope_table){ c->head_dim, n_pos, m->rope_cos, m->rope_sin };
    return 0;
}

/* The source of a folder: config.json, the safetensors files, the
 * tokenizer. */
static int read_folder(alm_model *m, void *ctx, alm_error *err)
{
    const char *dir = ctx;
    _cleanup_free_ char *config_path = NULL;
    if (asprintf(&config_path, "%s/config.json", dir) < 0)
        return alm_error_set(err, -ENOMEM, "out of memory");
    int r = model_config_load(config_path, &m->cfg, err);
    if (r == 0)
        r = tensor_store_open_dir(dir, &m->store, err);
    if (r == 0)
        r = alm_tokenizer_load(dir, &m->tokenizer, err);
    return r;
}

/* Once the backend holds its own copy of a weight (repacked for the CPU's
 * kernels, uploaded to a GPU), the file's pages of it need not stay
 * resident: a model would otherwise take its size twice. They come back
 * from the file if anything reads them again (an embedding row). */
static void release_copied_weights(alm_model *m)
{
    for (size_t i = 0; i < m->n_all_weights; i++) {
        const alm_weight *w = m->all_weights[i];
        bool seen = false;   /* tied matrices: one release */
        for (size_t j = 0; j < i && !seen; j++)
            seen = m->all_weights[j]->data == w->data;
        if (w->backend_data && !seen)
            m->released_bytes += tensor_store_release(m->store, w->data,
                                                      alm_weight_row_bytes(w) * (size_t)w->rows);
    }
}

int model_create(const char *name, const alm_model_params *params, model_source_fn read_source,
                 void *ctx, alm_model **out, alm_error *err)
{
    alm_model_params defaults = alm_model_default_params();
    if (!params)
        params = &defaults;
    if (params->device && strcmp(params->device, "cpu") != 0
#ifdef ALM_HAVE_CUDA
        && strcmp(params->device, "cuda") != 0
#endif
    )
        return alm_error_set(err, -ENOTSUP, "device \"%s\" is not available (this build has: " DEVICES ")",
                             params->device);

    alm_model *m = calloc(1, sizeof *m);
    if (!m || !(m->dir = strdup(name))) {
        free(m);
        return alm_error_set(err, -ENOMEM, "out of memory");
    }
    int r = read_source(m, ctx, err);
    if (r == 0)
        r = model_weights_bind(&m->cfg, m->store, &m->weights, err);
    if (r == 0)
        r = backend_for_device(params->device, &m->be, err);
    if (r == 0)
        r = build_tables(m, err);
    if (r == 0)
        r = build_rope(m, err);
    if (r == 0 && m->be->ops->prepare_weights)
        r = m->be->ops->prepare_weights(m->be, m->all_weights, m->n_all_weights, err);
    if (r == 0)
        release_copied_weights(m);
    if (r < 0) {
        alm_model_free(m);
        return r;
    }
    *out = m;
    return 0;
}

int alm_model_load(const char *dir, const alm_model_params *params, alm_model **out,
                   alm_error *err)
{
    if (!dir || !*dir)
        return alm_error_set(err, -EINVAL, "no model folder given");
    return model_create(dir, params, read_folder, (void *)dir, out, err);
}

void alm_model_free(alm_model *m)
{
    if (!m)
        return;
    if (m->be) {
        m->be->ops->free(m->be, m->rope_cos);
        m->be->ops->free(m->be, m->rope_sin);
        m->be->ops->destroy(m->be);
    }
    if (m->experts)
        for (int l = 0; l < m->cfg.n_layers; l++)
            free(m->experts[l]);
    free(m->experts);
    free(m->layer_shapes);
    free(m->all_weights);
    alm_tokenizer_free(m->tokenizer);
    model_weights_clear(&m->weights);
    tensor_store_free(m->store);
    model_config_clear(&m->cfg);
    free(m->dir);
    free(m);
}

const alm_tokenizer *alm_model_tokenizer(const alm_model *m) { return m->tokenizer; }
int32_t alm_model_vocab_size(const alm_model *m) { return m->cfg.vocab_size; }
int alm_model_max_context(const alm_model *m) { return m->rope.max_positions; }
const char *alm_model_architecture(const alm_model *m) { return model_arch_name(m->cfg.arch); }
size_t alm_model_weight_bytes(const alm_model *m) { return tensor_store_mapped_bytes(m->store); }

size_t alm_model_memory_bytes(const alm_model *m)
{
    return tensor_store_mapped_bytes(m->store) - m->released_bytes + m->be->host_copy_bytes;
}
const char *alm_model_dir(const alm_model *m) { return m->dir; }
