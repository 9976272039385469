/* The decoder forward pass, as the equations read: for each layer,
 * attention then the feed-forward block, each added back into the residual
 * stream. Architecture variations (biases, q/k norms, sliding windows,
 * mixture of experts) are data in the weights and shapes, not copies of this
 * function. Which hardware runs each step is the backend's business. */
#include "model/model_internal.h"

typedef struct forward_args {
    alm_seq *seq;
    const int32_t *tokens;
    int n;
    int n_logits;
    float *logits;
} forward_args;

static void forward_body(void *p, backend_exec *ex)
{
    const forward_args *a = p;
    alm_seq *s = a->seq;
    const alm_model *m = s->model;
    const model_config *c = &m->cfg;
    const model_weights *w = &m->weights;
    const backend_ops *op = m->be->ops;
    int n = a->n, pos0 = s->length;
    float eps = c->rms_norm_eps;

    /* token embeddings into the residual stream x */
    op->embed(ex, &w->embed, a->tokens, n, s->x);

    for (int l = 0; l < c->n_layers; l++) {
        const layer_weights *L = &w->layers[l];
        const attention_shape *shape = &m->layer_shapes[l];

        /* attention: q, k, v = W_{q,k,v} rmsnorm(x) (+ biases) */
        const alm_weight *qkv[3] = { &L->q, &L->k, &L->v };
        const float *qkv_bias[3] = { L->q_bias, L->k_bias, L->v_bias };
        float *qkv_out[3] = { s->q, s->k, s->v };
        op->norm_matmul(ex, s->x, n, L->attn_norm, eps, 3, qkv, qkv_bias, qkv_out, false);
        /* (q/k head norms), rotary positions, k and v into the cache */
        op->rope_store(ex, shape, &m->rope, L->q_norm, L->k_norm, eps, s->q, s->k, s->v,
                       n, pos0, s->cache[l]);
        /* softmax(q K^T / sqrt(d)) V over the cached positions */
        op->attention(ex, shape, s->q, n, pos0, s->cache[l], s->attn);
        /* x += W_o attn */
        op->matmul_add(ex, &L->o, L->o_bias, s->attn, n, s->x);

        /* feed-forward: x += W_down (silu(W_gate n) * W_up n), n = rmsnorm(x) */
        if (m->experts[l]) {
            op->moe_add(ex, L->ffn_norm, eps, &L->router, c->n_experts,
                        c->n_experts_per_tok, m->experts[l], n, s->x);
        } else {
            const alm_weight *gate_up[2] = { &L->gate, &L->up };
            const float *gate_up_bias[2] = { L->gate_bias, L->up_bias };
            float *h_out[2] = { s->h, NULL };
            op->norm_matmul(ex, s->x, n, L->ffn_norm, eps, 2, gate_up, gate_up_bias, h_out, true);
            op->matmul_add(ex, &L->down, L->down_bias, s->h, n, s->x);
        }
    }

    /* logits = W_lm rmsnorm(x) for the positions asked for */
    if (a->n_logits > 0)
        op->logits(ex, s->x, n - a->n_logits, a->n_logits, w->final_norm, eps,
                   &w->lm_head, a->logits);
}

void decoder_forward(alm_seq *seq, alm_pool *pool, const int32_t *tokens, int n,
                     int n_logits, float *logits)
{
    forward_args a = { seq, tokens, n, n_logits, logits };
    seq->model->be->ops->run(seq->model->be, pool, seq->workspace, forward_body, &a);
}
