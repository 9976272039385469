/* The decoder forward pass, as the equations read: for each layer,
 * attention then the feed-forward block, each added back into the residual
 * stream. Architecture variations (biases, q/k norms, sliding windows,
 * mixture of experts) are data in the weights and shapes, not copies of this
 * function. Which hardware runs each step is the backend's business. */
#include "model/model_internal.h"

typedef struct forward_args {
    alm_seq *seq;
    const int32_t *tokens;   /* NULL: a queued pass's token is the id kept last */
    int n;
    int n_logits;
    float *logits;
    int32_t *ids;       /* not NULL: the argmax of the logits instead */
    float *top_prob;
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

        /* attention: q, k, v = W_{q,k,v} rmsnorm(x) (+ biases), (q/k head
         * norms), rotary positions, k and v into the cache, then
         * softmax(q K^T / sqrt(d)) V over the cached positions */
        attention_block_args att = {
            .shape = shape, .x = s->x, .n_tok = n, .pos0 = pos0,
            .norm = L->attn_norm, .eps = eps,
            .q = &L->q, .k = &L->k, .v = &L->v,
            .q_bias = L->q_bias, .k_bias = L->k_bias, .v_bias = L->v_bias,
            .q_norm = L->q_norm, .k_norm = L->k_norm, .rope = &m->rope,
            .q_out = s->q, .k_out = s->k, .v_out = s->v,
            .cache = s->cache[l], .out = s->attn,
        };
        if (op->attention_block) {
            op->attention_block(ex, &att);
        } else {
            const alm_weight *qkv[3] = { att.q, att.k, att.v };
            const float *qkv_bias[3] = { att.q_bias, att.k_bias, att.v_bias };
            float *qkv_out[3] = { att.q_out, att.k_out, att.v_out };
            op->norm_matmul(ex, att.x, n, att.norm, eps, 3, qkv, qkv_bias, qkv_out, false);
            op->rope_store(ex, shape, att.rope, att.q_norm, att.k_norm, eps, att.q_out,
                           att.k_out, att.v_out, n, pos0, att.cache);
            op->attention(ex, shape, att.q_out, n, pos0, att.cache, att.out);
        }
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
    if (a->n_logits > 0) {
        /* A vocabulary limit scores the first rows only: a prefix of a
         * row-major matrix (packed or not) is the same matrix with fewer
         * rows. The logits then come out [n_logits][vocab_rows]. */
        alm_weight head = w->lm_head;
        if (s->vocab_rows > 0 && s->vocab_rows < head.rows)
            head.rows = s->vocab_rows;
        if (a->ids)
            op->logits_argmax(ex, s->x, n - a->n_logits, a->n_logits, w->final_norm, eps, &head,
                              s->vocab_limit ? s->vocab_limit : c->vocab_size, a->ids,
                              a->top_prob);
        else
            op->logits(ex, s->x, n - a->n_logits, a->n_logits, w->final_norm, eps, &head,
                       a->logits);
    }
}

void decoder_forward(alm_seq *seq, alm_pool *pool, const int32_t *tokens, int n,
                     int n_logits, float *logits)
{
    forward_args a = { seq, tokens, n, n_logits, logits, NULL, NULL };
    seq->model->be->ops->run(seq->model->be, pool, seq->workspace, forward_body, &a);
}

void decoder_forward_argmax(alm_seq *seq, alm_pool *pool, const int32_t *tokens, int n,
                            int n_out, int32_t *ids, float *top_prob)
{
    forward_args a = { seq, tokens, n, n_out, NULL, ids, top_prob };
    seq->model->be->ops->run(seq->model->be, pool, seq->workspace, forward_body, &a);
}

void decoder_queue_argmax(alm_seq *seq, alm_pool *pool, const int32_t *tokens, int n,
                          bool want_top)
{
    /* the backend writes nothing here in a queued pass; top_prob says
     * whether the probability is wanted */
    int32_t unused_id;
    float unused_top;
    forward_args a = { seq, tokens, n, 1, NULL, &unused_id, want_top ? &unused_top : NULL };
    seq->model->be->ops->queue(seq->model->be, pool, seq->workspace, forward_body, &a);
}
