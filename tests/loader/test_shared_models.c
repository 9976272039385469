/* The larger models of the shared folder: the sharded BF16 coder-target,
 * the BF16 coder-draft and coder-large-4bit. Skipped with a message when
 * the shared folder is not there. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "loader/model_weights.h"
#include "tap.h"

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
}

static bool load(const char *shared, const char *name, loaded_model *m)
{
    memset(m, 0, sizeof *m);
    char dir[1024], config[1100];
    snprintf(dir, sizeof dir, "%s/models/%s", shared, name);
    snprintf(config, sizeof config, "%s/config.json", dir);
    alm_error err = { 0 };
    int r = model_config_load(config, &m->cfg, &err);
    if (r == 0)
        r = tensor_store_open_dir(dir, &m->store, &err);
    if (r == 0)
        r = model_weights_bind(&m->cfg, m->store, &m->w, &err);
    tap_ok(r == 0, "%s: loads and binds (%s)", name, r ? err.message : "ok");
    if (r < 0)
        unload(m);
    return r == 0;
}

static bool close_to(float a, double b)
{
    return fabs((double)a - b) <= 1e-6 * fmax(1.0, fabs(b));
}

static float dense_at(const alm_weight *w, int r, int c)
{
    return alm_load_as_f32(w->dtype, w->data, (size_t)r * (size_t)w->cols + (size_t)c);
}

static float dequantize(const alm_weight *w, int r, int c)
{
    int per_word = 32 / w->bits;
    uint32_t word;
    memcpy(&word, (const uint8_t *)w->data + ((size_t)r * (size_t)(w->cols / per_word) + (size_t)(c / per_word)) * 4, 4);
    uint32_t q = (word >> ((c % per_word) * w->bits)) & ((1u << w->bits) - 1);
    size_t g = (size_t)r * (size_t)(w->cols / w->group_size) + (size_t)(c / w->group_size);
    return alm_load_as_f32(w->scale_dtype, w->scales, g) * (float)q + alm_load_as_f32(w->scale_dtype, w->biases, g);
}

static float scale_at(const alm_weight *w, int r, int c)
{
    return alm_load_as_f32(w->scale_dtype, w->scales,
                           (size_t)r * (size_t)(w->cols / w->group_size) + (size_t)(c / w->group_size));
}

int main(void)
{
    const char *shared = getenv("ALM_SHARED_DIR");
    char probe[1024];
    struct stat st;
    snprintf(probe, sizeof probe, "%s/models/coder-target", shared ? shared : "");
    if (!shared || stat(probe, &st) < 0)
        return tap_skip_all("shared model folder absent (ALM_SHARED_DIR/models/coder-target): "
                            "sharded and large models not tested");

    loaded_model target, draft, large;
    if (load(shared, "coder-target", &target)) {
        const model_config *c = &target.cfg;
        tap_ok(c->arch == MODEL_ARCH_MISTRAL && c->n_layers == 6 && c->hidden_size == 384 && c->quant.bits == 0
                   && tensor_store_count(target.store) == 57 && !c->tie_word_embeddings,
               "coder-target: 3 shards, 57 tensors, mistral, unquantized, untied");
        const stored_tensor *down = tensor_store_find(target.store, "model.layers.2.mlp.down_proj.weight");
        const stored_tensor *head = tensor_store_find(target.store, "lm_head.weight");
        tap_ok(down && strstr(down->file, "model-00002-of-00003.safetensors") && head
                   && strstr(head->file, "model-00003-of-00003.safetensors"),
               "coder-target: tensors come from the shards the index names");
        const alm_weight *d = &target.w.layers[2].down;
        tap_ok(d->dtype == ALM_DTYPE_BF16 && d->rows == 384 && d->cols == 1024
                   && close_to(dense_at(d, 100, 900), 0.039306640625)
                   && close_to(dense_at(&target.w.lm_head, 4000, 17), 0.03759765625),
               "coder-target: BF16 values down[100][900] = %g, lm_head[4000][17] = %g", dense_at(d, 100, 900),
               dense_at(&target.w.lm_head, 4000, 17));

        /* The embedded 4-bit target was quantized from these weights:
         * round-to-nearest keeps every element within half a step. */
        const char *defaults = getenv("ALM_DEFAULT_MODELS");
        char dir[1024], config[1100];
        snprintf(dir, sizeof dir, "%s/coder-target-4bit", defaults ? defaults : "");
        snprintf(config, sizeof config, "%s/config.json", dir);
        model_config qc;
        tensor_store *qs = NULL;
        model_weights qw;
        alm_error err = { 0 };
        if (defaults && model_config_load(config, &qc, &err) == 0) {
            if (tensor_store_open_dir(dir, &qs, &err) == 0 && model_weights_bind(&qc, qs, &qw, &err) == 0) {
                int outside = 0;
                for (int l = 0; l < 6; l++) {
                    const alm_weight *a = &qw.layers[l].q, *b = &target.w.layers[l].q;
                    for (int r = 0; r < 384; r += 7)
                        for (int col = 0; col < 384; col++)
                            outside += fabsf(dequantize(a, r, col) - dense_at(b, r, col))
                                       > 0.5f * fabsf(scale_at(a, r, col)) + 1e-6f;
                }
                tap_ok(outside == 0, "coder-target-4bit q_proj dequantizes to within half a step of the BF16 "
                                     "coder-target (%d elements outside)", outside);
                model_weights_clear(&qw);
            } else {
                tap_ok(0, "coder-target-4bit binds (%s)", err.message);
            }
            tensor_store_free(qs);
            model_config_clear(&qc);
        }
        unload(&target);
    }

    if (load(shared, "coder-draft", &draft)) {
        const layer_weights *l0 = &draft.w.layers[0];
        tap_ok(draft.cfg.arch == MODEL_ARCH_QWEN2 && draft.w.lm_head.data == draft.w.embed.data
                   && draft.w.embed.dtype == ALM_DTYPE_BF16 && l0->q_bias && l0->k_bias && l0->v_bias && !l0->o_bias
                   && l0->k.rows == 64 && l0->k.cols == 192,
               "coder-draft: qwen2, BF16, tied, q/k/v biases, k [64][192]");
        unload(&draft);
    }

    if (load(shared, "coder-large-4bit", &large)) {
        const model_config *c = &large.cfg;
        const alm_weight *d = &large.w.layers[11].down;
        tap_ok(c->arch == MODEL_ARCH_LLAMA && c->n_layers == 12 && c->hidden_size == 768 && c->n_heads == 12
                   && c->n_kv_heads == 4 && c->head_dim == 64 && c->intermediate_size == 2048
                   && !c->tie_word_embeddings && large.w.lm_head.bits == 4 && large.w.embed.bits == 4,
               "coder-large-4bit: llama, 12 layers, hidden 768, heads 12/4, intermediate 2048, 4-bit, untied");
        tap_ok(d->bits == 4 && d->rows == 768 && d->cols == 2048 && close_to(dequantize(d, 700, 2000), 0.0191650390625),
               "coder-large-4bit: layer 11 down[700][2000] dequantizes to %g", dequantize(d, 700, 2000));
        unload(&large);
    }
    return tap_done();
}
