/* What a decode step reads: the number a memory-bandwidth roofline divides
 * by. */
#include "model/model_internal.h"

/* Bytes of a weight's data, with its scales and biases when quantized. */
static size_t weight_bytes(const alm_weight *w)
{
    size_t bytes = (size_t)w->rows * alm_weight_row_bytes(w);
    if (w->bits)
        bytes += 2 * (size_t)w->rows * (size_t)(w->cols / w->group_size) * alm_dtype_size(w->scale_dtype);
    return bytes;
}

size_t alm_model_decode_bytes(const alm_model *m)
{
    const model_config *c = &m->cfg;
    const model_weights *w = &m->weights;
    /* One row of the embedding table, all of the output projection (the
     * same table when tied: it is then read in full for the logits). */
    size_t rows = (size_t)(w->embed.rows > 0 ? w->embed.rows : 1);
    size_t bytes = weight_bytes(&w->embed) / rows + weight_bytes(&w->lm_head);
    for (int l = 0; l < c->n_layers; l++) {
        const layer_weights *L = &w->layers[l];
        bytes += weight_bytes(&L->q) + weight_bytes(&L->k) + weight_bytes(&L->v) + weight_bytes(&L->o);
        if (c->n_experts > 0) {
            /* the router, then the experts it picks for the token */
            bytes += weight_bytes(&L->router);
            const expert_weights *e = &L->experts[0];
            bytes += (size_t)c->n_experts_per_tok
                     * (weight_bytes(&e->gate) + weight_bytes(&e->up) + weight_bytes(&e->down));
        } else {
            bytes += weight_bytes(&L->gate) + weight_bytes(&L->up) + weight_bytes(&L->down);
        }
    }
    return bytes;
}
