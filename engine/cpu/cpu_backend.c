/* The CPU backend: every operation of backend.h on host memory, run by all
 * threads of a pool at once (SPMD). Each thread takes a share of the rows
 * (or tokens, or heads) and the operation ends with a barrier.
 *
 * Small inputs (normalization, activation preparation for the kernels) are
 * computed redundantly by every thread into its own workspace: that costs no
 * wall time over one thread doing it and saves a barrier per matmul. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/moe_routing.h"
#include "core/error.h"
#include "cpu/attention.h"
#include "cpu/matmul.h"
#include "cpu/vector_ops.h"

#define ROW_ALIGN 16   /* rows per share: keeps shares on cache-line boundaries */

typedef struct cpu_backend {
    backend base;
    const cpu_kernels *kernels;
    const cpu_vector_ops *vector;   /* same instruction set as kernels */
    /* Weights repacked for the kernels (cpu_matmul_pack), and the
     * descriptors whose backend_data points at them. */
    void **packed;
    size_t n_packed;
    alm_weight **packed_for;
    size_t n_packed_for;
} cpu_backend;

typedef struct thread_space {
    float *normed;   /* [max_tokens][max_width] */
    float *tmp;      /* [max_tokens][max_width] */
    float *scores;   /* attention scratch */
    void *prep;      /* kernel activation scratch */
} thread_space;

typedef struct cpu_workspace {
    workspace_shape shape;
    int n_threads;
    size_t prep_bytes;
    thread_space *threads;
    float *shared;   /* [max_width]: hand-over buffer between phases */
} cpu_workspace;

struct backend_exec {
    cpu_backend *be;
    alm_pool *pool;
    cpu_workspace *ws;
    thread_space *space;
    int index;
    int n_threads;
};

static void *aligned_zalloc(size_t bytes)
{
    size_t n = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, n ? n : 64);
    if (p)
        memset(p, 0, n ? n : 64);
    return p;
}

static void exec_barrier(backend_exec *ex)
{
    alm_pool_barrier(ex->pool);
}

/* ------------------------------------------------------------ memory */

static void cpu_destroy(backend *base)
{
    cpu_backend *be = (cpu_backend *)base;
    for (size_t i = 0; i < be->n_packed_for; i++)
        be->packed_for[i]->backend_data = NULL;
    for (size_t i = 0; i < be->n_packed; i++)
        free(be->packed[i]);
    free(be->packed);
    free(be->packed_for);
    free(be);
}

/* Repacks every weight the kernels have a faster layout for, once per
 * distinct matrix (tied embeddings share one copy). All or none: the
 * packed kernel rounds differently in the last bits, and every pass of a
 * model must round alike (speculative decoding compares them). */
static int cpu_prepare_weights(backend *base, const alm_weight *const *weights, size_t n,
                               alm_error *err)
{
    cpu_backend *be = (cpu_backend *)base;
    be->packed = calloc(n ? n : 1, sizeof *be->packed);
    be->packed_for = calloc(n ? n : 1, sizeof *be->packed_for);
    if (!be->packed || !be->packed_for)
        return alm_error_set(err, -ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        /* The weights belong to the model this backend serves;
         * backend_data is reserved for the backend's copy. */
        alm_weight *w = (alm_weight *)weights[i];
        size_t bytes = cpu_matmul_pack_size(be->kernels, w);
        if (!bytes)
            continue;
        void *copy = NULL;
        for (size_t j = 0; j < i && !copy; j++)
            if (weights[j]->data == w->data && weights[j]->rows == w->rows &&
                weights[j]->cols == w->cols)
                copy = weights[j]->backend_data;
        if (!copy) {
            copy = aligned_alloc(64, (bytes + 63) / 64 * 64);
            if (!copy)
                return alm_error_set(err, -ENOMEM, "out of memory for the repacked weights (%zu bytes)",
                                     bytes);
            be->packed[be->n_packed++] = copy;
            be->base.host_copy_bytes += bytes;
            int r = cpu_matmul_pack(be->kernels, w, copy, bytes);
            if (r < 0)
                return alm_error_set(err, r, "repacking a %dx%d weight failed", w->rows, w->cols);
        }
        w->backend_data = copy;
        be->packed_for[be->n_packed_for++] = w;
    }
    return 0;
}
static void *cpu_alloc(backend *be, size_t bytes) { return aligned_zalloc(bytes); }
static void cpu_free(backend *be, void *p) { free(p); }
static void cpu_copy(backend *be, void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }

static void cpu_workspace_free(backend *be, void *p)
{
    cpu_workspace *ws = p;
    if (!ws)
        return;
    for (int i = 0; i < ws->n_threads; i++) {
        free(ws->threads[i].normed);
        free(ws->threads[i].tmp);
        free(ws->threads[i].scores);
        free(ws->threads[i].prep);
    }
    free(ws->threads);
    free(ws->shared);
    free(ws);
}

static void *cpu_workspace_new(backend *base, const workspace_shape *shape,
                               const alm_weight *const *weights, size_t n_weights,
                               int n_threads, alm_error *err)
{
    cpu_backend *be = (cpu_backend *)base;
    cpu_workspace *ws = calloc(1, sizeof *ws);
    if (!ws) {
        alm_error_set(err, -ENOMEM, "out of memory for the work buffers");
        return NULL;
    }
    ws->shape = *shape;
    ws->n_threads = n_threads > 0 ? n_threads : 1;
    for (size_t i = 0; i < n_weights; i++) {
        size_t b = cpu_matmul_scratch_size(be->kernels, weights[i], shape->max_tokens);
        if (b > ws->prep_bytes)
            ws->prep_bytes = b;
    }
    ws->threads = calloc((size_t)ws->n_threads, sizeof *ws->threads);
    ws->shared = aligned_zalloc(sizeof(float) * (size_t)shape->max_width);
    if (!ws->threads || !ws->shared) {
        cpu_workspace_free(base, ws);
        alm_error_set(err, -ENOMEM, "out of memory for the work buffers");
        return NULL;
    }
    size_t act = sizeof(float) * (size_t)shape->max_tokens * (size_t)shape->max_width;
    attention_args worst = {
        .n_tok = shape->max_tokens, .pos0 = 0, .n_heads = shape->n_heads,
        .n_kv_heads = shape->n_kv_heads, .head_dim = shape->head_dim,
        .min_items = ws->n_threads,
    };
    size_t attention_floats = cpu_attention_scratch_floats(&worst);
    for (int i = 0; i < ws->n_threads; i++) {
        thread_space *t = &ws->threads[i];
        t->normed = aligned_zalloc(act);
        t->tmp = aligned_zalloc(act);
        t->scores = aligned_zalloc(sizeof(float) * attention_floats);
        t->prep = aligned_zalloc(ws->prep_bytes);
        if (!t->normed || !t->tmp || !t->scores || !t->prep) {
            alm_error_set(err, -ENOMEM, "out of memory for the work buffers of %d threads",
                          ws->n_threads);
            cpu_workspace_free(base, ws);
            return NULL;
        }
    }
    return ws;
}

struct run_ctx {
    cpu_backend *be;
    alm_pool *pool;
    cpu_workspace *ws;
    void (*body)(void *ctx, backend_exec *ex);
    void *ctx;
};

static void run_thread(void *p, int index, int n_threads)
{
    struct run_ctx *rc = p;
    backend_exec ex = {
        .be = rc->be, .pool = rc->pool, .ws = rc->ws,
        .space = &rc->ws->threads[index], .index = index, .n_threads = n_threads,
    };
    rc->body(rc->ctx, &ex);
}

static void cpu_run(backend *be, alm_pool *pool, void *workspace,
                    void (*body)(void *ctx, backend_exec *ex), void *ctx)
{
    /* The caller made the workspace for this pool's size (seq.c). */
    struct run_ctx rc = { (cpu_backend *)be, pool, workspace, body, ctx };
    alm_pool_run(pool, run_thread, &rc);
}

/* ------------------------------------------------------------ helpers */

static void rmsnorm_rows(const cpu_vector_ops *v, float *out, const float *x, int n_tok,
                         int dim, const float *w, float eps)
{
    for (int t = 0; t < n_tok; t++)
        v->rmsnorm(out + (size_t)t * dim, x + (size_t)t * dim, w, (size_t)dim, eps);
}

static bool same_activation_format(const alm_weight *a, const alm_weight *b)
{
    return a->cols == b->cols && a->bits == b->bits && a->group_size == b->group_size &&
           a->dtype == b->dtype;
}

/* The range of rows [r0, r1) of a matrix with `rows` rows this thread owns. */
static void share(const backend_exec *ex, int rows, int *r0, int *r1)
{
    alm_pool_split(rows, ROW_ALIGN, ex->index, ex->n_threads, r0, r1);
}

/* ------------------------------------------------------------ operations */

static void cpu_embed(backend_exec *ex, const alm_weight *table, const int32_t *tokens,
                      int n_tok, float *x)
{
    int t0, t1;
    alm_pool_split(n_tok, 1, ex->index, ex->n_threads, &t0, &t1);
    for (int t = t0; t < t1; t++)
        cpu_weight_row(table, tokens[t], x + (size_t)t * table->cols);
    exec_barrier(ex);
}

static void cpu_norm_matmul(backend_exec *ex, const float *x, int n_tok,
                            const float *norm, float eps, int n_w,
                            const alm_weight *const *w, const float *const *bias,
                            float *const *y, bool swiglu)
{
    const cpu_kernels *k = ex->be->kernels;
    int dim = w[0]->cols;
    const float *in = x;
    if (norm) {
        rmsnorm_rows(ex->be->vector, ex->space->normed, x, n_tok, dim, norm, eps);
        in = ex->space->normed;
    }

    if (swiglu) {
        /* gate and up rows [r0, r1) by the same thread, so the product
         * needs no barrier. */
        const alm_weight *gate = w[0], *up = w[1];
        int r0, r1;
        share(ex, gate->rows, &r0, &r1);
        if (r0 < r1) {
            size_t rows = (size_t)gate->rows;
            cpu_matmul_prepare(k, gate, in, n_tok, (size_t)dim, ex->space->prep);
            cpu_matmul_rows(k, gate, ex->space->prep, in, n_tok, (size_t)dim, y[0], rows, r0, r1);
            if (!same_activation_format(gate, up))
                cpu_matmul_prepare(k, up, in, n_tok, (size_t)dim, ex->space->prep);
            cpu_matmul_rows(k, up, ex->space->prep, in, n_tok, (size_t)dim, ex->space->tmp, rows, r0, r1);
            const float *gb = bias ? bias[0] : NULL, *ub = bias ? bias[1] : NULL;
            for (int t = 0; t < n_tok; t++) {
                float *g = y[0] + (size_t)t * rows + r0;
                float *u = ex->space->tmp + (size_t)t * rows + r0;
                if (gb)
                    ex->be->vector->add(g, gb + r0, (size_t)(r1 - r0));
                if (ub)
                    ex->be->vector->add(u, ub + r0, (size_t)(r1 - r0));
                ex->be->vector->silu_mul(g, g, u, (size_t)(r1 - r0));
            }
        }
        exec_barrier(ex);
        return;
    }

    /* The rows of all weights, end to end, split among the threads. */
    int total = 0;
    for (int i = 0; i < n_w; i++)
        total += w[i]->rows;
    int s0, s1;
    share(ex, total, &s0, &s1);
    const alm_weight *prepared = NULL;
    int base = 0;
    for (int i = 0; i < n_w; i++) {
        int rows = w[i]->rows;
        int r0 = s0 - base, r1 = s1 - base;
        if (r0 < 0) r0 = 0;
        if (r1 > rows) r1 = rows;
        if (r0 < r1) {
            if (!prepared || !same_activation_format(prepared, w[i]))
                cpu_matmul_prepare(k, w[i], in, n_tok, (size_t)dim, ex->space->prep);
            prepared = w[i];
            cpu_matmul_rows(k, w[i], ex->space->prep, in, n_tok, (size_t)dim, y[i],
                            (size_t)rows, r0, r1);
            if (bias && bias[i]) {
                for (int t = 0; t < n_tok; t++) {
                    float *yr = y[i] + (size_t)t * rows;
                    for (int r = r0; r < r1; r++)
                        yr[r] += bias[i][r];
                }
            }
        }
        base += rows;
    }
    exec_barrier(ex);
}

static void cpu_matmul_add(backend_exec *ex, const alm_weight *w, const float *bias,
                           const float *h, int n_tok, float *x)
{
    const cpu_kernels *k = ex->be->kernels;
    int r0, r1;
    share(ex, w->rows, &r0, &r1);
    if (r0 < r1) {
        size_t rows = (size_t)w->rows;
        cpu_matmul_prepare(k, w, h, n_tok, (size_t)w->cols, ex->space->prep);
        cpu_matmul_rows(k, w, ex->space->prep, h, n_tok, (size_t)w->cols, ex->space->tmp, rows, r0, r1);
        for (int t = 0; t < n_tok; t++) {
            float *xr = x + (size_t)t * rows;
            const float *yr = ex->space->tmp + (size_t)t * rows;
            for (int r = r0; r < r1; r++)
                xr[r] += yr[r] + (bias ? bias[r] : 0.0f);
        }
    }
    exec_barrier(ex);
}

static void rotate_half(float *v, int d, const float *cos_row, const float *sin_row)
{
    int half = d / 2;
    for (int i = 0; i < half; i++) {
        float a = v[i], b = v[i + half];
        v[i] = a * cos_row[i] - b * sin_row[i];
        v[i + half] = b * cos_row[i] + a * sin_row[i];
    }
}

/* Token t's head h (query heads first, then KV heads) of one pass: the
 * optional head norm and the rotation; KV heads go into the cache. */
static void rope_store_head(const cpu_vector_ops *vec, const attention_shape *s,
                            const rope_table *rope, const float *q_norm,
                            const float *k_norm, float eps, float *q, const float *k,
                            const float *v, int t, int h, int pos0, kv_layer cache)
{
    int d = s->head_dim, half = d / 2;
    size_t kv_row = (size_t)s->n_kv_heads * d;
    int pos = pos0 + t;
    const float *c = rope->cos + (size_t)pos * half;
    const float *sn = rope->sin + (size_t)pos * half;
    if (h < s->n_heads) {
        float *qh = q + ((size_t)t * s->n_heads + h) * d;
        if (q_norm)
            vec->rmsnorm(qh, qh, q_norm, (size_t)d, eps);
        rotate_half(qh, d, c, sn);
    } else {
        int kh = h - s->n_heads;
        float *kd = (float *)cache.k + (size_t)pos * kv_row + (size_t)kh * d;
        float *vd = (float *)cache.v + (size_t)pos * kv_row + (size_t)kh * d;
        memcpy(kd, k + (size_t)t * kv_row + (size_t)kh * d, sizeof(float) * (size_t)d);
        memcpy(vd, v + (size_t)t * kv_row + (size_t)kh * d, sizeof(float) * (size_t)d);
        if (k_norm)
            vec->rmsnorm(kd, kd, k_norm, (size_t)d, eps);
        rotate_half(kd, d, c, sn);
    }
}

static void cpu_rope_store(backend_exec *ex, const attention_shape *s,
                           const rope_table *rope, const float *q_norm,
                           const float *k_norm, float eps, float *q, const float *k,
                           const float *v, int n_tok, int pos0, kv_layer cache)
{
    int heads = s->n_heads + s->n_kv_heads; /* work items per token */
    int i0, i1;
    alm_pool_split(n_tok * heads, 1, ex->index, ex->n_threads, &i0, &i1);
    for (int item = i0; item < i1; item++)
        rope_store_head(ex->be->vector, s, rope, q_norm, k_norm, eps, q, k, v,
                        item / heads, item % heads, pos0, cache);
    exec_barrier(ex);
}

static void cpu_attention(backend_exec *ex, const attention_shape *s, const float *q,
                          int n_tok, int pos0, kv_layer cache, float *out)
{
    attention_args a = {
        .q = q, .k = cache.k, .v = cache.v, .out = out,
        .n_tok = n_tok, .pos0 = pos0,
        .n_heads = s->n_heads, .n_kv_heads = s->n_kv_heads, .head_dim = s->head_dim,
        .window = s->window, .min_items = ex->n_threads,
    };
    size_t items = cpu_attention_items(&a);
    int i0, i1;
    alm_pool_split((int)items, 1, ex->index, ex->n_threads, &i0, &i1);
    if (i0 < i1)
        cpu_attention_run(ex->be->vector, &a, (size_t)i0, (size_t)i1, ex->space->scores);
    exec_barrier(ex);
}

/* The attention half of a layer with one barrier instead of three: when
 * the KV heads divide evenly among the threads, each thread computes the q,
 * k and v rows of its own groups of heads (a group: one KV head and the
 * query heads that share it), rotates and stores them, and runs their
 * attention; nothing it reads was written by another thread in this pass.
 * Otherwise (say one KV head and two threads) the three steps run in turn. */
static void cpu_attention_block(backend_exec *ex, const attention_block_args *a)
{
    const attention_shape *s = a->shape;
    int n = a->n_tok;
    if (s->n_kv_heads % ex->n_threads != 0) {
        const alm_weight *qkv[3] = { a->q, a->k, a->v };
        const float *qkv_bias[3] = { a->q_bias, a->k_bias, a->v_bias };
        float *qkv_out[3] = { a->q_out, a->k_out, a->v_out };
        cpu_norm_matmul(ex, a->x, n, a->norm, a->eps, 3, qkv, qkv_bias, qkv_out, false);
        cpu_rope_store(ex, s, a->rope, a->q_norm, a->k_norm, a->eps, a->q_out, a->k_out,
                       a->v_out, n, a->pos0, a->cache);
        cpu_attention(ex, s, a->q_out, n, a->pos0, a->cache, a->out);
        return;
    }
    const cpu_kernels *k = ex->be->kernels;
    const cpu_vector_ops *vec = ex->be->vector;
    int per_thread = s->n_kv_heads / ex->n_threads;
    int g0 = ex->index * per_thread, g1 = g0 + per_thread;
    int group = s->n_heads / s->n_kv_heads, d = s->head_dim;
    int dim = a->q->cols;

    const float *in = a->x;
    if (a->norm) {
        rmsnorm_rows(vec, ex->space->normed, a->x, n, dim, a->norm, a->eps);
        in = ex->space->normed;
    }
    const struct {
        const alm_weight *w;
        const float *bias;
        float *y;
        int r0, r1;
    } parts[3] = {
        { a->q, a->q_bias, a->q_out, g0 * group * d, g1 * group * d },
        { a->k, a->k_bias, a->k_out, g0 * d, g1 * d },
        { a->v, a->v_bias, a->v_out, g0 * d, g1 * d },
    };
    const alm_weight *prepared = NULL;
    for (int i = 0; i < 3; i++) {
        const alm_weight *w = parts[i].w;
        if (!prepared || !same_activation_format(prepared, w))
            cpu_matmul_prepare(k, w, in, n, (size_t)dim, ex->space->prep);
        prepared = w;
        cpu_matmul_rows(k, w, ex->space->prep, in, n, (size_t)dim, parts[i].y,
                        (size_t)w->rows, parts[i].r0, parts[i].r1);
        if (parts[i].bias)
            for (int t = 0; t < n; t++)
                vec->add(parts[i].y + (size_t)t * w->rows + parts[i].r0,
                         parts[i].bias + parts[i].r0, (size_t)(parts[i].r1 - parts[i].r0));
    }
    for (int t = 0; t < n; t++) {
        for (int h = g0 * group; h < g1 * group; h++)
            rope_store_head(vec, s, a->rope, a->q_norm, a->k_norm, a->eps, a->q_out,
                            a->k_out, a->v_out, t, h, a->pos0, a->cache);
        for (int kh = g0; kh < g1; kh++)
            rope_store_head(vec, s, a->rope, a->q_norm, a->k_norm, a->eps, a->q_out,
                            a->k_out, a->v_out, t, s->n_heads + kh, a->pos0, a->cache);
    }
    attention_args att = {
        .q = a->q_out, .k = a->cache.k, .v = a->cache.v, .out = a->out,
        .n_tok = n, .pos0 = a->pos0,
        .n_heads = s->n_heads, .n_kv_heads = s->n_kv_heads, .head_dim = d,
        .window = s->window,
    };
    cpu_attention_run_kv_heads(vec, &att, g0, g1, ex->space->scores);
    exec_barrier(ex);
}

static void cpu_moe_add(backend_exec *ex, const float *norm, float eps,
                        const alm_weight *router, int n_experts, int top_k,
                        const moe_expert *experts, int n_tok, float *x)
{
    const cpu_kernels *k = ex->be->kernels;
    int dim = router->cols;
    int inter = experts[0].gate->rows;
    float *normed = ex->space->normed;
    rmsnorm_rows(ex->be->vector, normed, x, n_tok, dim, norm, eps);
    exec_barrier(ex); /* everyone has read x before anyone adds to it */

    float logits[MOE_MAX_EXPERTS], weights[MOE_MAX_EXPERTS];
    int chosen[MOE_MAX_EXPERTS];
    float *h = ex->ws->shared;
    for (int t = 0; t < n_tok; t++) {
        const float *nt = normed + (size_t)t * dim;
        /* Router: tiny, computed by every thread. */
        cpu_matmul_prepare(k, router, nt, 1, (size_t)dim, ex->space->prep);
        cpu_matmul_rows(k, router, ex->space->prep, nt, 1, (size_t)dim, logits, (size_t)n_experts, 0, n_experts);
        moe_route(logits, n_experts, top_k, chosen, weights);
        for (int j = 0; j < top_k; j++) {
            int e = chosen[j];
            float wgt = weights[j];
            const alm_weight *gate = experts[e].gate, *up = experts[e].up, *down = experts[e].down;
            int r0, r1;
            share(ex, inter, &r0, &r1);
            if (r0 < r1) {
                float *tmp = ex->space->tmp;
                cpu_matmul_prepare(k, gate, nt, 1, (size_t)dim, ex->space->prep);
                cpu_matmul_rows(k, gate, ex->space->prep, nt, 1, (size_t)dim, h, (size_t)inter, r0, r1);
                if (!same_activation_format(gate, up))
                    cpu_matmul_prepare(k, up, nt, 1, (size_t)dim, ex->space->prep);
                cpu_matmul_rows(k, up, ex->space->prep, nt, 1, (size_t)dim, tmp, (size_t)inter, r0, r1);
                ex->be->vector->silu_mul(h + r0, h + r0, tmp + r0, (size_t)(r1 - r0));
            }
            exec_barrier(ex);
            share(ex, dim, &r0, &r1);
            if (r0 < r1) {
                float *tmp = ex->space->tmp;
                cpu_matmul_prepare(k, down, h, 1, (size_t)inter, ex->space->prep);
                cpu_matmul_rows(k, down, ex->space->prep, h, 1, (size_t)inter, tmp, (size_t)dim, r0, r1);
                float *xr = x + (size_t)t * dim;
                for (int r = r0; r < r1; r++)
                    xr[r] += wgt * tmp[r];
            }
            exec_barrier(ex);
        }
    }
}

static void cpu_logits(backend_exec *ex, const float *x, int first, int n_out,
                       const float *norm, float eps, const alm_weight *w, float *logits)
{
    const cpu_kernels *k = ex->be->kernels;
    int dim = w->cols;
    const float *rows = x + (size_t)first * dim;
    rmsnorm_rows(ex->be->vector, ex->space->normed, rows, n_out, dim, norm, eps);
    int r0, r1;
    share(ex, w->rows, &r0, &r1);
    if (r0 < r1) {
        cpu_matmul_prepare(k, w, ex->space->normed, n_out, (size_t)dim, ex->space->prep);
        cpu_matmul_rows(k, w, ex->space->prep, ex->space->normed, n_out, (size_t)dim,
                        logits, (size_t)w->rows, r0, r1);
    }
    exec_barrier(ex);
}

static const backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .workspace_new = cpu_workspace_new,
    .workspace_free = cpu_workspace_free,
    .run = cpu_run,
    .embed = cpu_embed,
    .norm_matmul = cpu_norm_matmul,
    .matmul_add = cpu_matmul_add,
    .rope_store = cpu_rope_store,
    .attention = cpu_attention,
    .attention_block = cpu_attention_block,
    .moe_add = cpu_moe_add,
    .logits = cpu_logits,
    .prepare_weights = cpu_prepare_weights,
};

int cpu_backend_new(backend **out, alm_error *err)
{
    cpu_backend *be = calloc(1, sizeof *be);
    if (!be)
        return alm_error_set(err, -ENOMEM, "out of memory");
    be->base.ops = &cpu_ops;
    be->base.kv_value_bytes = sizeof(float);
    be->kernels = cpu_kernels_select();
    cpu_isa isa = cpu_kernels_isa(be->kernels);
    be->vector = cpu_vector_ops_for(isa);
    if (!be->vector) {
        free(be);
        return alm_error_set(err, -ENOTSUP, "no vector kernels for the %s instruction set",
                             cpu_isa_name(isa));
    }
    *out = &be->base;
    return 0;
}
