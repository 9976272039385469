/* The boundary between model code and the hardware that runs it.
 *
 * Model code (engine/model/decoder.c) describes a forward pass as a
 * sequence of operations on activation buffers; a backend (engine/cpu/, later
 * engine/cuda/) implements them. Model code never dereferences an activation
 * or cache pointer: they live in backend memory (host memory for the CPU,
 * device memory for a GPU) and are only passed back into operations.
 *
 * Execution model. backend_ops.run(body) executes the pass: the CPU backend
 * calls body on every thread of its pool at once (SPMD), and each operation
 * is collective: every thread calls it with the same arguments, does its
 * share, and the operation returns once its results are visible to all. A
 * GPU backend calls body once and each operation enqueues kernels on a
 * stream. Either way model code reads as a straight list of steps. */
#ifndef ALM_BACKEND_BACKEND_H
#define ALM_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alm.h"
#include "core/threadpool.h"
#include "core/weight.h"

typedef struct backend backend;            /* one instance per loaded model */
typedef struct backend_exec backend_exec;  /* one participant of a run */

/* Rotary position embedding (Hugging Face rotate-half convention): for head
 * dimension d and pair i < d/2, angle = position * inv_freq[i]. */
typedef struct rope_table {
    int head_dim;
    int max_positions;
    const float *cos;   /* [max_positions][head_dim / 2], backend memory */
    const float *sin;
} rope_table;

/* One layer's key/value cache: [max_len][n_kv_heads][head_dim] each, in
 * backend memory, backend.kv_value_bytes a value (the CPU's float32, a
 * GPU's float16): only the backend reads it. */
typedef struct kv_layer {
    void *k;
    void *v;
} kv_layer;

typedef struct attention_shape {
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int window;        /* sliding window length, 0 = full causal attention */
} attention_shape;

typedef struct workspace_shape {
    int max_tokens;     /* tokens in one pass */
    int max_context;    /* cache positions attention may cover */
    int max_width;      /* widest activation row (floats) */
    int n_heads;
    int n_kv_heads;
    int head_dim;
} workspace_shape;

/* One expert of a sparse MLP. */
typedef struct moe_expert {
    const alm_weight *gate;  /* [intermediate][hidden] */
    const alm_weight *up;    /* [intermediate][hidden] */
    const alm_weight *down;  /* [hidden][intermediate] */
} moe_expert;

#define MOE_MAX_EXPERTS 256

/* The attention half of a layer, for attention_block below. */
typedef struct attention_block_args {
    const attention_shape *shape;
    const float *x;            /* [n_tok][hidden]: the residual stream */
    int n_tok;
    int pos0;
    const float *norm;         /* input_layernorm */
    float eps;
    const alm_weight *q, *k, *v;
    const float *q_bias, *k_bias, *v_bias;  /* NULL: none */
    const float *q_norm, *k_norm;           /* per-head RMSNorm, NULL: none */
    const rope_table *rope;
    float *q_out, *k_out, *v_out;  /* [n_tok][rows of q, k, v]: scratch */
    kv_layer cache;
    float *out;                /* [n_tok][n_heads * head_dim] */
} attention_block_args;

typedef struct backend_ops {
    const char *name;

    void (*destroy)(backend *be);
    /* Zeroed memory for activations and caches; NULL when out of memory. */
    void *(*alloc)(backend *be, size_t bytes);
    void (*free)(backend *be, void *p);
    /* Optional (NULL: host memory, nothing to say): the backend memory free
     * now and in all, for messages when an allocation fails. */
    int (*memory_info)(backend *be, size_t *free_bytes, size_t *total_bytes);
    /* Copies host data into backend memory. */
    void (*upload)(backend *be, void *dst, const void *src, size_t bytes);
    /* Copies backend memory to the host. */
    void (*download)(backend *be, void *dst, const void *src, size_t bytes);
    /* Scratch space for one sequence's passes: sized for batches of up to
     * shape->max_tokens tokens through the given weights, attention over up
     * to shape->max_context positions, and n_threads CPU threads. NULL with
     * err set (what was needed, what was free) when it cannot be made. */
    void *(*workspace_new)(backend *be, const workspace_shape *shape,
                           const alm_weight *const *weights, size_t n_weights,
                           int n_threads, alm_error *err);
    void (*workspace_free)(backend *be, void *workspace);
    /* Executes body (see above) with the workspace; the CPU backend uses
     * the pool's threads (at most the n_threads the workspace was made for).
     * ctx is passed through. */
    void (*run)(backend *be, alm_pool *pool, void *workspace,
                void (*body)(void *ctx, backend_exec *ex), void *ctx);

    /* x[t] = table[tokens[t]] for t < n_tok (tokens are host memory).
     * tokens NULL (only in a pass of `queue`, with n_tok 1): the token is
     * the last id the queued passes kept (see queue). */
    void (*embed)(backend_exec *ex, const alm_weight *table, const int32_t *tokens,
                  int n_tok, float *x);

    /* For each weight i < n_w: y_i[t] = W_i rmsnorm(x[t]) (+ bias_i), with
     * rmsnorm(x) = x / sqrt(mean(x^2) + eps) * norm (norm NULL: no norm).
     * swiglu (requires n_w == 2, W_0 = gate, W_1 = up): instead
     * y_0[t] = silu(W_0 n) * (W_1 n) and y_1 is unused. Row strides are the
     * weights' row counts; x has dim = W_i.cols floats per token. */
    void (*norm_matmul)(backend_exec *ex, const float *x, int n_tok,
                        const float *norm, float eps, int n_w,
                        const alm_weight *const *w, const float *const *bias,
                        float *const *y, bool swiglu);

    /* x[t] += W h[t] (+ bias): the residual connection after a projection. */
    void (*matmul_add)(backend_exec *ex, const alm_weight *w, const float *bias,
                       const float *h, int n_tok, float *x);

    /* For tokens at positions pos0 .. pos0 + n_tok - 1: optional per-head
     * RMSNorm of q and k (q_norm / k_norm NULL: none), rotary embedding of q
     * and k, then k and v stored into the cache at those positions. */
    void (*rope_store)(backend_exec *ex, const attention_shape *shape,
                       const rope_table *rope, const float *q_norm,
                       const float *k_norm, float eps, float *q, const float *k,
                       const float *v, int n_tok, int pos0, kv_layer cache);

    /* out[t] = softmax(q[t] K^T / sqrt(d) + causal/window mask) V over the
     * cache, for query positions pos0 + t. */
    void (*attention)(backend_exec *ex, const attention_shape *shape,
                      const float *q, int n_tok, int pos0, kv_layer cache,
                      float *out);

    /* Optional (NULL: model code calls norm_matmul, rope_store and
     * attention in turn): the three at once, with the same results. A
     * backend fuses them to save synchronization: the CPU backend gives
     * each thread whole groups of heads, so that the heads' q, k and v,
     * their rotation and their attention need no barrier in between. */
    void (*attention_block)(backend_exec *ex, const attention_block_args *a);

    /* Mixtral-style sparse MLP on rmsnorm(x), added into x:
     * x[t] += sum over the top k experts e of w_e * down_e(silu(gate_e n) * up_e n),
     * w = softmax(router n) restricted to the top k and renormalized. */
    void (*moe_add)(backend_exec *ex, const float *norm, float eps,
                    const alm_weight *router, int n_experts, int top_k,
                    const moe_expert *experts, int n_tok, float *x);

    /* logits[j] = W rmsnorm(x[first + j]) for j < n_out, written to host
     * memory (logits: [n_out][W.rows]). */
    void (*logits)(backend_exec *ex, const float *x, int first, int n_out,
                   const float *norm, float eps, const alm_weight *w,
                   float *logits);

    /* Optional (NULL: model code takes logits and finds the argmax on the
     * host). For j < n_out: ids[j] = argmax over the first n_valid rows of
     * W rmsnorm(x[first + j]) (the lowest index on ties; -1 when one is NaN
     * or +infinity, or all are -infinity) and, top_prob not NULL,
     * top_prob[j] = 1 / sum_v exp(l_v - l_max) over those rows. ids and
     * top_prob are host memory. */
    void (*logits_argmax)(backend_exec *ex, const float *x, int first, int n_out,
                          const float *norm, float eps, const alm_weight *w, int n_valid,
                          int32_t *ids, float *top_prob);

    /* Optional, both or neither (NULL: every pass waits for its results in
     * run). Greedy decoding without a trip to the host between steps:
     * queue runs a pass like run but may return before it is done, and its
     * logits_argmax writes nothing to ids and top_prob; the backend keeps
     * the ids (and, top_prob not NULL, the probabilities) in its own memory,
     * in order, and the next queued pass may take the last one kept as its
     * token (embed with tokens NULL). collect waits for every pass queued
     * and copies the n values kept since the last collect (n at most
     * BACKEND_MAX_KEPT) to ids and, not NULL, top_prob; 0, or a negative
     * errno when n is not what was kept (the failures of the passes
     * themselves come from take_error as usual). */
    void (*queue)(backend *be, alm_pool *pool, void *workspace,
                  void (*body)(void *ctx, backend_exec *ex), void *ctx);
    int (*collect)(backend *be, void *workspace, int32_t *ids, float *top_prob, int n);

    /* Optional (NULL: nothing to do). Called once after loading with every
     * weight of the model, so that a backend can keep its own copy in
     * alm_weight.backend_data (a GPU uploads them here). */
    int (*prepare_weights)(backend *be, const alm_weight *const *weights, size_t n,
                           alm_error *err);
    /* Optional (NULL: operations cannot fail). Operations return nothing,
     * so a backend whose work can fail (a GPU's) keeps the first failure of
     * the passes run with this workspace; this hands it over once: 0 when
     * there was none, else its negative errno with the message in err. */
    int (*take_error)(backend *be, void *workspace, alm_error *err);
} backend_ops;

/* Ids a backend keeps for collect, at most (queue). */
#define BACKEND_MAX_KEPT 64

struct backend {
    const backend_ops *ops;
    /* Bytes of one value of the KV cache (kv_layer). */
    size_t kv_value_bytes;
    /* Host memory the backend's own copies of the weights take
     * (prepare_weights; 0 when it reads the files' mapping). */
    size_t host_copy_bytes;
};

/* The CPU backend (its threads come from the pool given to run). */
int cpu_backend_new(backend **out, alm_error *err);

#endif
