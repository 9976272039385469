/* A sequence: its KV cache, the activation buffers of one pass, and the
 * bookkeeping that lets speculative decoding cut the cache back. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/argmax.h"
#include "core/error.h"
#include "model/model_internal.h"

static void *seq_alloc(alm_seq *s, size_t bytes)
{
    backend *be = s->model->be;
    s->memory_bytes += bytes;
    return be->ops->alloc(be, bytes);
}

int alm_seq_new(alm_model *m, int max_len, alm_seq **out, alm_error *err)
{
    const model_config *c = &m->cfg;
    if (max_len <= 0 || max_len > m->rope.max_positions)
        max_len = max_len <= 0 ? m->rope.max_positions : max_len;
    if (max_len > m->rope.max_positions)
        return alm_error_set(err, -EINVAL, "context of %d tokens is longer than this model's %d",
                             max_len, m->rope.max_positions);
    alm_seq *s = calloc(1, sizeof *s);
    if (!s)
        return alm_error_set(err, -ENOMEM, "out of memory");
    s->model = m;
    s->capacity = max_len;
    s->batch = max_len < SEQ_MAX_BATCH ? max_len : SEQ_MAX_BATCH;

    size_t b = (size_t)s->batch;
    size_t q_width = (size_t)c->n_heads * c->head_dim;
    size_t kv_width = (size_t)c->n_kv_heads * c->head_dim;
    size_t kv_bytes = m->be->kv_value_bytes * (size_t)max_len * kv_width;
    s->cache = calloc((size_t)c->n_layers, sizeof *s->cache);
    s->tokens = calloc((size_t)max_len, sizeof *s->tokens);
    bool ok = s->cache != NULL && s->tokens != NULL;
    for (int l = 0; ok && l < c->n_layers; l++) {
        s->cache[l].k = seq_alloc(s, kv_bytes);
        s->cache[l].v = seq_alloc(s, kv_bytes);
        ok = s->cache[l].k && s->cache[l].v;
    }
    if (ok) {
        s->x = seq_alloc(s, sizeof(float) * b * (size_t)c->hidden_size);
        s->q = seq_alloc(s, sizeof(float) * b * q_width);
        s->k = seq_alloc(s, sizeof(float) * b * kv_width);
        s->v = seq_alloc(s, sizeof(float) * b * kv_width);
        s->attn = seq_alloc(s, sizeof(float) * b * q_width);
        s->h = seq_alloc(s, sizeof(float) * b * (size_t)c->intermediate_size);
        ok = s->x && s->q && s->k && s->v && s->attn && s->h;
    }
    if (!ok) {
        size_t all = 2 * (size_t)c->n_layers * kv_bytes +
                     sizeof(float) * b * (2 * q_width + 2 * kv_width + (size_t)c->hidden_size +
                                          (size_t)c->intermediate_size);
        alm_seq_free(s);
        backend *be = m->be;
        size_t free_bytes = 0, total_bytes = 0;
        if (be->ops->memory_info && be->ops->memory_info(be, &free_bytes, &total_bytes) == 0)
            return alm_error_set(err, -ENOMEM,
                                 "not enough %s memory for a sequence of %d tokens: its KV cache and "
                                 "buffers need %.0f MiB, %.0f MiB of %.0f MiB are free",
                                 be->ops->name, max_len, (double)all / 1048576.0,
                                 (double)free_bytes / 1048576.0, (double)total_bytes / 1048576.0);
        return alm_error_set(err, -ENOMEM, "out of memory for a sequence of %d tokens (%.0f MiB)",
                             max_len, (double)all / 1048576.0);
    }
    *out = s;
    return 0;
}

void alm_seq_free(alm_seq *s)
{
    if (!s)
        return;
    backend *be = s->model->be;
    if (s->cache)
        for (int l = 0; l < s->model->cfg.n_layers; l++) {
            be->ops->free(be, s->cache[l].k);
            be->ops->free(be, s->cache[l].v);
        }
    free(s->cache);
    free(s->tokens);
    be->ops->free(be, s->x);
    be->ops->free(be, s->q);
    be->ops->free(be, s->k);
    be->ops->free(be, s->v);
    be->ops->free(be, s->attn);
    be->ops->free(be, s->h);
    if (s->workspace)
        be->ops->workspace_free(be, s->workspace);
    free(s);
}

alm_model *alm_seq_model(const alm_seq *s) { return s->model; }
int alm_seq_length(const alm_seq *s) { return s->length; }
const int32_t *alm_seq_tokens(const alm_seq *s) { return s->tokens; }
int alm_seq_capacity(const alm_seq *s) { return s->capacity; }
size_t alm_seq_memory_bytes(const alm_seq *s) { return s->memory_bytes; }

int alm_seq_set_vocab_limit(alm_seq *s, int n)
{
    if (n < 0 || n > s->model->cfg.vocab_size)
        return -EINVAL;
    s->vocab_limit = n == s->model->cfg.vocab_size ? 0 : n;
    /* Whole blocks of rows: backends keep weights in tiles of up to 128
     * rows (the AVX-512 and CUDA layouts), and a prefix of whole tiles is
     * what they compute fastest. The ids past n are masked anyway. */
    int rows = (n + 127) / 128 * 128;
    s->vocab_rows = n == 0 || rows > s->model->cfg.vocab_size ? 0 : rows;
    return 0;
}

/* The pass wrote n_out rows of vocab_rows logits end to end (or whole
 * rows); spread them to rows of the whole vocabulary, the ids past
 * vocab_limit at -infinity. */
static void spread_limited_logits(const alm_seq *s, float *logits, int n_out)
{
    size_t vocab = (size_t)s->model->cfg.vocab_size, limit = (size_t)s->vocab_limit;
    size_t stride = s->vocab_rows ? (size_t)s->vocab_rows : vocab;
    for (int j = n_out - 1; j >= 0; j--) {
        float *row = logits + (size_t)j * vocab;
        memmove(row, logits + (size_t)j * stride, sizeof(float) * limit);
        for (size_t i = limit; i < vocab; i++)
            row[i] = -INFINITY;
    }
}

int alm_seq_truncate(alm_seq *s, int len)
{
    if (len < 0 || len > s->length)
        return -EINVAL;
    /* Positions past len are overwritten before they are read again:
     * attention only reads positions below the query's. */
    s->length = len;
    return 0;
}

static int ensure_workspace(alm_seq *s, int n_threads, alm_error *err)
{
    if (s->workspace && s->workspace_threads == n_threads)
        return 0;
    backend *be = s->model->be;
    const model_config *c = &s->model->cfg;
    if (s->workspace)
        be->ops->workspace_free(be, s->workspace);
    int width = c->hidden_size;
    if (c->intermediate_size > width)
        width = c->intermediate_size;
    if (c->n_heads * c->head_dim > width)
        width = c->n_heads * c->head_dim;
    workspace_shape shape = {
        .max_tokens = s->batch,
        .max_context = s->capacity,
        .max_width = width,
        .n_heads = c->n_heads,
        .n_kv_heads = c->n_kv_heads,
        .head_dim = c->head_dim,
    };
    s->workspace = be->ops->workspace_new(be, &shape, s->model->all_weights,
                                          s->model->n_all_weights, n_threads, err);
    s->workspace_threads = n_threads;
    return s->workspace ? 0 : err && err->code ? err->code : -ENOMEM;
}

/* Tokens a pass may append: ids of the vocabulary; and the workspace for
 * its passes. */
static int prepare_tokens(alm_seq *s, alm_pool *pool, const int32_t *tokens, int n, alm_error *err)
{
    int32_t vocab = s->model->cfg.vocab_size;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= vocab)
            return alm_error_set(err, -EINVAL, "token id %d is outside the vocabulary (0..%d)",
                                 tokens[i], vocab - 1);
    return ensure_workspace(s, alm_pool_size(pool), err);
}

/* The passes of alm_seq_forward and alm_seq_forward_argmax: the outputs of
 * the last n_out tokens overall, which may span passes, go to logits
 * ([n_out][vocab]) or, ids not NULL, to ids and top_prob. */
static int forward(alm_seq *s, alm_pool *pool, const int32_t *tokens, int n, int n_out,
                   float *logits, int32_t *ids, float *top_prob, alm_error *err)
{
    int32_t vocab = s->model->cfg.vocab_size;
    if (n > s->capacity - s->length)
        return alm_error_set(err, -ENOSPC,
                             "context full: %d of %d tokens cached, %d more asked for",
                             s->length, s->capacity, n);
    int r = prepare_tokens(s, pool, tokens, n, err);
    if (r < 0)
        return r;

    int first_out = n - n_out;
    for (int done = 0; done < n;) {
        int chunk = n - done < s->batch ? n - done : s->batch;
        int end = done + chunk;
        int from = first_out > done ? first_out : done;
        int chunk_out = end > from ? end - from : 0;
        size_t j0 = (size_t)(from - first_out);
        memcpy(s->tokens + s->length, tokens + done, sizeof(int32_t) * (size_t)chunk);
        if (ids && chunk_out) {
            decoder_forward_argmax(s, pool, tokens + done, chunk, chunk_out, ids + j0,
                                   top_prob ? top_prob + j0 : NULL);
        } else {
            float *out = chunk_out ? logits + j0 * (size_t)vocab : NULL;
            decoder_forward(s, pool, tokens + done, chunk, chunk_out, out);
            if (out && s->vocab_limit)
                spread_limited_logits(s, out, chunk_out);
        }
        backend *be = s->model->be;
        if (be->ops->take_error && (r = be->ops->take_error(be, s->workspace, err)) < 0)
            return r;
        s->length += chunk;
        done = end;
    }
    return 0;
}

int alm_seq_forward(alm_seq *s, alm_pool *pool, const int32_t *tokens, int n,
                    int n_logits, float *logits, alm_error *err)
{
    if (n < 0 || n_logits < 0 || n_logits > n || (n_logits > 0 && !logits))
        return alm_error_set(err, -EINVAL, "invalid arguments to alm_seq_forward");
    return forward(s, pool, tokens, n, n_logits, logits, NULL, NULL, err);
}

/* The argmax of one row of logits, with logits_argmax's meaning (backend.h). */
static int32_t host_argmax(const float *l, int n, float *top_prob)
{
    int32_t best = -1;
    float max = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (isnan(l[i]) || l[i] == INFINITY)
            return -1;
        if (l[i] > max) {
            max = l[i];
            best = i;
        }
    }
    if (best >= 0 && top_prob)
        *top_prob = alm_top_probability(l, n, max);
    return best;
}

int alm_seq_forward_argmax(alm_seq *s, alm_pool *pool, const int32_t *tokens, int n, int n_out,
                           int32_t *ids, float *top_prob, alm_error *err)
{
    if (n < 1 || n_out < 1 || n_out > n || !ids)
        return alm_error_set(err, -EINVAL, "invalid arguments to alm_seq_forward_argmax");
    if (s->model->be->ops->logits_argmax)
        return forward(s, pool, tokens, n, n_out, NULL, ids, top_prob, err);
    /* a backend whose logits are in host memory anyway */
    int vocab = s->model->cfg.vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)n_out * (size_t)vocab);
    if (!logits)
        return alm_error_set(err, -ENOMEM, "out of memory");
    int r = forward(s, pool, tokens, n, n_out, logits, NULL, NULL, err);
    for (int j = 0; r == 0 && j < n_out; j++)
        ids[j] = host_argmax(logits + (size_t)j * vocab, s->vocab_limit ? s->vocab_limit : vocab,
                             top_prob ? &top_prob[j] : NULL);
    free(logits);
    return r;
}

/* After the passes of alm_seq_decode_greedy: where ids[j] is -1 before the
 * last step, the steps after it are undone (the cache ends after pass j,
 * at length_after_pass0 + j) and their ids are -1 as well. */
static void undo_after_failure(alm_seq *s, int length_after_pass0, int32_t *ids, float *top_prob,
                               int n_steps)
{
    for (int j = 0; j < n_steps - 1; j++) {
        if (ids[j] >= 0)
            continue;
        s->length = length_after_pass0 + j;
        for (int i = j + 1; i < n_steps; i++) {
            ids[i] = -1;
            if (top_prob)
                top_prob[i] = 0.0f;
        }
        return;
    }
}

int alm_seq_decode_greedy(alm_seq *s, alm_pool *pool, const int32_t *tokens, int n, int n_steps,
                          int32_t *ids, float *top_prob, alm_error *err)
{
    if (n < 1 || n_steps < 1 || !tokens || !ids)
        return alm_error_set(err, -EINVAL, "invalid arguments to alm_seq_decode_greedy");
    if (n > s->capacity - s->length || n_steps - 1 > s->capacity - s->length - n)
        return alm_error_set(err, -ENOSPC,
                             "context full: %d of %d tokens cached, %d more asked for",
                             s->length, s->capacity, n + n_steps - 1);
    const backend_ops *op = s->model->be->ops;
    if (!op->queue || !op->logits_argmax) {
        /* a pass at a time, each token back from the host */
        int r = alm_seq_forward_argmax(s, pool, tokens, n, 1, &ids[0], top_prob, err);
        int length_after_pass0 = s->length;
        for (int j = 1; r == 0 && j < n_steps && ids[j - 1] >= 0; j++)
            r = alm_seq_forward_argmax(s, pool, &ids[j - 1], 1, 1, &ids[j],
                                       top_prob ? &top_prob[j] : NULL, err);
        if (r == 0)
            undo_after_failure(s, length_after_pass0, ids, top_prob, n_steps);
        return r;
    }

    int r = prepare_tokens(s, pool, tokens, n, err);
    if (r < 0)
        return r;
    if (n > s->batch) {
        /* more than one pass's worth: all but the last token plainly */
        r = forward(s, pool, tokens, n - 1, 0, NULL, NULL, NULL, err);
        if (r < 0)
            return r;
        tokens += n - 1;
        n = 1;
    }

    backend *be = s->model->be;
    const int start = s->length, length_after_pass0 = start + n;
    for (int j = 0; j < n_steps;) {
        const int first = j;
        const int chunk = n_steps - j < BACKEND_MAX_KEPT ? n_steps - j : BACKEND_MAX_KEPT;
        for (; j < first + chunk; j++) {
            if (j == 0) {
                memcpy(s->tokens + s->length, tokens, sizeof(int32_t) * (size_t)n);
                decoder_queue_argmax(s, pool, tokens, n, top_prob != NULL);
                s->length += n;
            } else {
                decoder_queue_argmax(s, pool, NULL, 1, top_prob != NULL);
                s->length += 1;
            }
        }
        r = op->collect(be, s->workspace, ids + first, top_prob ? top_prob + first : NULL, chunk);
        if (r < 0)
            alm_error_set(err, r, "the %s backend kept other ids than its queued passes chose",
                          op->name);
        int failed = op->take_error ? op->take_error(be, s->workspace, err) : 0;
        if (r < 0 || failed < 0) {
            s->length = start;   /* nothing of this call is in the cache for sure */
            return failed < 0 ? failed : r;
        }
        /* the tokens of the passes fed on the GPU, now known */
        for (int i = first > 0 ? first : 1; i < j; i++)
            s->tokens[length_after_pass0 + i - 1] = ids[i - 1];
        /* a -1 before the last step: no more chunks (undo_after_failure
         * fills in the ids of the steps not taken) */
        bool stopped = false;
        for (int i = first; i < j && i < n_steps - 1; i++)
            stopped = stopped || ids[i] < 0;
        if (stopped)
            break;
    }
    undo_after_failure(s, length_after_pass0, ids, top_prob, n_steps);
    return 0;
}
