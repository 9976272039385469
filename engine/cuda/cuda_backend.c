/* The CUDA backend: memory, weights and the operations of backend.h, each
 * enqueued on the workspace's stream (one stream per sequence, so that
 * sequences on several threads run side by side). run() calls the body
 * once on the calling thread and waits for the stream at the end.
 *
 * Weights are copied to the GPU once, at load (prepare_weights), repacked
 * into the tile layout of cuda_kernels.h; alm_weight.backend_data points at
 * the resulting cuda_matrix. Norm weights and biases arrive as host arrays
 * (the loader converts them to float); each is copied to the GPU the first
 * time an operation sees it and found again by its host address.
 *
 * Operations return nothing (backend.h), so the first CUDA error of a pass
 * is kept in the workspace and handed to the caller by take_error.
 *
 * Small passes (decoding, verifying draft tokens) run as CUDA graphs
 * (cuda_graphs.h): run() first calls the body in "record" mode, where the
 * operations only stage their host inputs and add their arguments to the
 * pass's signature; a graph captured earlier for that signature is then
 * replayed, or the body runs again under stream capture to make one. Larger
 * passes, and those with host work in the middle (MoE routing), run
 * directly. The position, the one argument that changes every step, is
 * read by the kernels from device memory (slot 0 of the token buffer).
 *
 * queue() runs a pass like run() without waiting for it: greedy decoding
 * queues its steps back to back, each argmax kept on the GPU and written
 * into the token buffer as the next pass's token and position, and
 * collect() waits and copies the kept ids in one transfer. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "backend/moe_routing.h"
#include "core/error.h"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_error.h"
#ifdef ALM_HAVE_CUBLAS
#include "cuda/cuda_gemm.h"
#endif
#include "cuda/cuda_graphs.h"
#include "cuda/cuda_kernels.h"

#define MIN_MAJOR 8
#define MIB (1024.0 * 1024.0)
/* Passes of up to this many tokens become graphs: decoding and verifying. */
#define GRAPH_MAX_TOKENS (ALM_MAX_DRAFT_TOKENS + 1)
#define GRAPH_CACHE_SIZE 16
#ifdef ALM_HAVE_CUBLAS
/* cuBLAS calls are never captured into a graph */
_Static_assert(CUDA_GEMM_MIN_TOKENS > GRAPH_MAX_TOKENS, "GEMM passes must run directly");
#endif

typedef enum pass_mode { PASS_DIRECT, PASS_RECORD, PASS_CAPTURE } pass_mode;

typedef struct device_vector {
    const float *host;
    float *device;
} device_vector;

typedef struct cuda_backend {
    backend base;
    int device;
    pthread_mutex_t lock;        /* guards vectors */
    device_vector *vectors;      /* open addressing by host address */
    size_t n_vectors, cap_vectors;
    cuda_matrix **matrices;      /* owned; weights may share one (tied embeddings) */
    size_t n_matrices;
    alm_weight **weights;        /* whose backend_data we set */
    size_t n_weights;
} cuda_backend;

/* Fragments that a producing operation (attention, SwiGLU) also wrote, in
 * buf, for the values it wrote to `of`: the operation right after it (the
 * projection that reads them) skips its conversion. Valid for that one
 * operation only, whatever the model code does next. */
typedef struct fragment_note {
    const float *of;
    int n_tok, dim;
    void *buf;
} fragment_note;

typedef struct cuda_workspace {
    workspace_shape shape;
    cudaStream_t stream;
    int32_t *tokens_host;        /* pinned [1 + max_tokens]: the position, then the tokens */
    int32_t *tokens;             /* device copy of tokens_host */
    void *frag, *frag_hidden;    /* fragments of [max_tokens][max_width] */
    void *frag_out;              /* the SwiGLU output's fragments */
    fragment_note note;
    float *copy;                 /* [max_tokens][max_width]: MoE input */
    float *hidden;               /* [max_width]: one expert's hidden layer */
    float *router;               /* [max_tokens][MOE_MAX_EXPERTS] */
    float *logits;               /* [max_tokens][max_rows] */
    float *logits_host;          /* pinned copy of logits, handed over after the pass */
    float *logits_dst;           /* where run() copies them (the caller's buffer) */
    size_t logits_floats;
    int32_t *choice;             /* device [2][max_tokens]: argmax ids, then top probabilities */
    int32_t *choice_host;        /* pinned copy */
    void *argmax_scratch;        /* cuda_argmax's, for max_tokens rows */
    int32_t *ids_dst;            /* where run() copies the ids (NULL: none asked for) */
    float *top_dst;
    int n_choice;
    /* Queued passes (queue, collect): the argmax of each is kept on the
     * GPU, and a pass may take the last one kept as its token. */
    int32_t *kept;               /* device [2][BACKEND_MAX_KEPT]: ids, then top probabilities */
    int32_t *kept_host;          /* pinned copy, made by collect */
    int *kept_count;             /* device: how many kept since collect */
    int n_kept;                  /* the same, known on the host */
    bool queued;                 /* the pass being run is a queued one */
    bool in_flight;              /* queued passes may still run: the host must not touch tokens_host */
    bool can_feed;               /* the last pass kept an id (and readied the token buffer) */
    bool pass_fed;               /* this pass's token is the one kept last */
    int pass_kept;               /* ids this pass keeps */
    int pass_tokens;             /* tokens of this pass */
    int pass_pos0;               /* its position (the attention's) */
#ifdef ALM_HAVE_CUBLAS
    cuda_gemm *gemm;             /* prefill passes; NULL: the matmul kernel does them */
#endif
    float *partials;             /* attention splits */
    size_t max_parts;
    unsigned *counters;          /* attention: for merging in the last block (cuda_attention_scratch) */
    size_t max_counters;
    int max_rows;
    int max_splits;              /* attention splits of the whole context */
    int attention_cluster;       /* blocks a cluster merging the splits (cuda_attention_cluster_blocks;
                                  * ALM_CUDA_CLUSTERS=0: none), -1 until the first attention */
    alm_error error;             /* first failure since take_error */

    bool use_graphs;             /* ALM_CUDA_GRAPHS=0: never */
    bool use_flash;              /* prefill attention on the tensor cores; ALM_CUDA_FLASH=0: never */
    bool use_fused_rope;         /* cuda_rope_attention; ALM_CUDA_FUSED_ROPE=0: never */
    pass_mode mode;
    bool graph_ok;               /* recording: the pass can be a graph */
    int graph_pos0;              /* recording: the pass's position, -1 before one is seen */
    cuda_signature sig;
    cuda_graph_cache *graphs;
} cuda_workspace;

struct backend_exec {
    cuda_backend *be;
    cuda_workspace *ws;
};

/* ------------------------------------------------------------ errors */

/* Records the first failure of a pass; later operations still run (on
 * garbage) but the pass is reported as failed. */
static void check(backend_exec *ex, cudaError_t e, const char *what)
{
    if (e != cudaSuccess && ex->ws->error.code == 0)
        cuda_fail(&ex->ws->error, e, what);
}

/* ------------------------------------------------------------ memory */

static void *cuda_alloc(backend *base, size_t bytes)
{
    cuda_backend *be = (cuda_backend *)base;
    void *p = NULL;
    if (cudaSetDevice(be->device) != cudaSuccess || cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        (void)cudaGetLastError();   /* not a later launch's failure */
        return NULL;
    }
    if (cudaMemset(p, 0, bytes) != cudaSuccess) {
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void cuda_free(backend *base, void *p)
{
    if (p)
        cudaFree(p);
}

static void cuda_upload(backend *base, void *dst, const void *src, size_t bytes)
{
    cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
}

static void cuda_download(backend *base, void *dst, const void *src, size_t bytes)
{
    cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost);
}

/* The device copy of a host vector of n floats, made on first use. */
static const float *device_vector_for(backend_exec *ex, const float *host, size_t n)
{
    if (!host)
        return NULL;
    cuda_backend *be = ex->be;
    float *found = NULL;
    pthread_mutex_lock(&be->lock);
    if (be->n_vectors * 2 >= be->cap_vectors) {
        size_t cap = be->cap_vectors ? be->cap_vectors * 2 : 256;
        device_vector *grown = calloc(cap, sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&be->lock);
            check(ex, cudaErrorMemoryAllocation, "host memory for the vector table");
            return NULL;
        }
        for (size_t i = 0; i < be->cap_vectors; i++) {
            if (!be->vectors[i].host)
                continue;
            size_t j = ((uintptr_t)be->vectors[i].host >> 4) % cap;
            while (grown[j].host)
                j = (j + 1) % cap;
            grown[j] = be->vectors[i];
        }
        free(be->vectors);
        be->vectors = grown;
        be->cap_vectors = cap;
    }
    size_t j = ((uintptr_t)host >> 4) % be->cap_vectors;
    while (be->vectors[j].host && be->vectors[j].host != host)
        j = (j + 1) % be->cap_vectors;
    if (be->vectors[j].host) {
        found = be->vectors[j].device;
    } else {
        cudaError_t e = cudaMalloc((void **)&found, n * sizeof(float));
        if (e == cudaSuccess)
            e = cudaMemcpy(found, host, n * sizeof(float), cudaMemcpyHostToDevice);
        if (e != cudaSuccess) {
            cudaFree(found);
            found = NULL;
            check(ex, e, "copying a norm or bias vector to the GPU");
        } else {
            be->vectors[j] = (device_vector){ host, found };
            be->n_vectors++;
        }
    }
    pthread_mutex_unlock(&be->lock);
    return found;
}

/* ------------------------------------------------------------ weights */

static size_t raw_scale_bytes(const alm_weight *w)
{
    if (!w->bits)
        return 0;
    return (size_t)w->rows * (size_t)(w->cols / w->group_size) * alm_dtype_size(w->scale_dtype);
}

static int check_weight(const alm_weight *w, alm_error *err)
{
    if (w->bits) {
        if (w->bits != 2 && w->bits != 4 && w->bits != 8)
            return alm_error_set(err, -ENOTSUP, "CUDA: %d-bit weights are not supported (2, 4, 8)", w->bits);
        if (w->group_size < 32 || (w->group_size & (w->group_size - 1)) || w->cols % w->group_size)
            return alm_error_set(err, -ENOTSUP,
                                 "CUDA: quantization group size %d is not supported (a power of two, at least 32, dividing %d columns)",
                                 w->group_size, w->cols);
    } else if (w->dtype != ALM_DTYPE_F32 && w->dtype != ALM_DTYPE_F16 && w->dtype != ALM_DTYPE_BF16) {
        return alm_error_set(err, -ENOTSUP, "CUDA: dense weights of type %s are not supported",
                             alm_dtype_name(w->dtype));
    }
    return 0;
}

static size_t matrix_bytes(const alm_weight *w)
{
    int bits = w->bits ? w->bits : 16;
    size_t b = cuda_matrix_tile_bytes(w->rows, w->cols, bits);
    if (w->bits)
        b += cuda_matrix_scale_bytes(w->rows, w->cols, w->group_size);
    return b;
}

static void matrix_free(cuda_matrix *m)
{
    if (!m)
        return;
    cudaFree(m->tiles);
    cudaFree(m->scale_bias);
    free(m);
}

/* Copies the file's bytes to scratch, repacks them into a new matrix. */
static int upload_matrix(const alm_weight *w, void **scratch, size_t *scratch_bytes,
                         cuda_matrix **out, alm_error *err)
{
    size_t data_bytes = (size_t)w->rows * alm_weight_row_bytes(w);
    size_t scale_bytes = raw_scale_bytes(w);
    size_t need = data_bytes + 2 * scale_bytes + 512;
    cudaError_t e;
    if (need > *scratch_bytes) {
        cudaFree(*scratch);
        *scratch = NULL;
        *scratch_bytes = 0;
        if ((e = cudaMalloc(scratch, need)) != cudaSuccess)
            return cuda_fail(err, e, "scratch memory for uploading the weights");
        *scratch_bytes = need;
    }
    uint8_t *raw = *scratch;
    size_t scales_at = (data_bytes + 255) / 256 * 256, biases_at = scales_at + (scale_bytes + 255) / 256 * 256;
    cuda_matrix *m = calloc(1, sizeof *m);
    if (!m)
        return alm_error_set(err, -ENOMEM, "out of memory");
    int bits = w->bits ? w->bits : 16;
    e = cudaMalloc((void **)&m->tiles, cuda_matrix_tile_bytes(w->rows, w->cols, bits));
    if (e == cudaSuccess && w->bits)
        e = cudaMalloc(&m->scale_bias, cuda_matrix_scale_bytes(w->rows, w->cols, w->group_size));
    if (e == cudaSuccess)
        e = cudaMemcpy(raw, w->data, data_bytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess && w->bits)
        e = cudaMemcpy(raw + scales_at, w->scales, scale_bytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess && w->bits)
        e = cudaMemcpy(raw + biases_at, w->biases, scale_bytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess) {
        cuda_raw_weight r = {
            .rows = w->rows, .cols = w->cols, .bits = w->bits, .group_size = w->group_size,
            .dtype = (int)w->dtype, .scale_dtype = (int)w->scale_dtype,
            .data = raw, .scales = raw + scales_at, .biases = raw + biases_at,
        };
        e = cuda_repack_weight(&r, m, 0);
    }
    if (e == cudaSuccess)
        e = cudaDeviceSynchronize();  /* scratch is reused by the next weight */
    if (e != cudaSuccess) {
        matrix_free(m);
        return cuda_fail(err, e, "uploading a weight");
    }
    *out = m;
    return 0;
}

static int cuda_prepare_weights(backend *base, const alm_weight *const *weights, size_t n,
                                alm_error *err)
{
    cuda_backend *be = (cuda_backend *)base;
    /* Distinct data (tied embeddings share one), their bytes, the room. */
    size_t need = 0;
    for (size_t i = 0; i < n; i++) {
        int r = check_weight(weights[i], err);
        if (r < 0)
            return r;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = weights[j]->data == weights[i]->data;
        if (!seen)
            need += matrix_bytes(weights[i]);
    }
    size_t free_bytes = 0, total_bytes = 0;
    cudaError_t e = cudaSetDevice(be->device);
    if (e == cudaSuccess)
        e = cudaMemGetInfo(&free_bytes, &total_bytes);
    if (e != cudaSuccess)
        return cuda_fail(err, e, "reading the GPU's free memory");
    if (need + (64u << 20) > free_bytes)
        return alm_error_set(err, -ENOMEM,
                             "not enough GPU memory: the weights need %.0f MiB, %.0f MiB of %.0f MiB are free",
                             need / MIB, free_bytes / MIB, total_bytes / MIB);

    be->matrices = calloc(n ? n : 1, sizeof *be->matrices);
    be->weights = calloc(n ? n : 1, sizeof *be->weights);
    if (!be->matrices || !be->weights)
        return alm_error_set(err, -ENOMEM, "out of memory");
    void *scratch = NULL;
    size_t scratch_bytes = 0;
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        /* The weights belong to the model this backend serves; backend_data
         * is reserved for exactly this copy. */
        alm_weight *w = (alm_weight *)weights[i];
        cuda_matrix *m = NULL;
        for (size_t j = 0; j < i && !m; j++)
            if (weights[j]->data == w->data)
                m = weights[j]->backend_data;
        if (!m) {
            r = upload_matrix(w, &scratch, &scratch_bytes, &m, err);
            if (r < 0)
                break;
            be->matrices[be->n_matrices++] = m;
        }
        w->backend_data = m;
        be->weights[be->n_weights++] = w;
    }
    cudaFree(scratch);
    return r;
}

static const cuda_matrix *matrix_of(const alm_weight *w)
{
    return w->backend_data;
}

/* ------------------------------------------------------------ workspace */

static void cuda_workspace_free(backend *base, void *p)
{
    cuda_workspace *ws = p;
    if (!ws)
        return;
    if (ws->stream)
        cudaStreamSynchronize(ws->stream);
    cudaFreeHost(ws->tokens_host);
    cudaFree(ws->tokens);
    cudaFree(ws->frag);
    cudaFree(ws->frag_hidden);
    cudaFree(ws->frag_out);
    cudaFree(ws->copy);
    cudaFree(ws->hidden);
    cudaFree(ws->router);
    cudaFree(ws->logits);
    cudaFreeHost(ws->logits_host);
    cudaFree(ws->choice);
    cudaFreeHost(ws->choice_host);
    cudaFree(ws->argmax_scratch);
    cudaFree(ws->kept);
    cudaFreeHost(ws->kept_host);
    cudaFree(ws->kept_count);
    cudaFree(ws->partials);
    cudaFree(ws->counters);
#ifdef ALM_HAVE_CUBLAS
    cuda_gemm_free(ws->gemm);
#endif
    cuda_graph_cache_free(ws->graphs);
    cuda_signature_free(&ws->sig);
    if (ws->stream)
        cudaStreamDestroy(ws->stream);
    free(ws);
}

static int cuda_memory_info(backend *base, size_t *free_bytes, size_t *total_bytes)
{
    cuda_backend *be = (cuda_backend *)base;
    if (cudaSetDevice(be->device) != cudaSuccess ||
        cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess)
        return -EIO;
    return 0;
}

#ifdef ALM_HAVE_CUBLAS
static bool gemm_wanted(void)
{
    const char *v = getenv("ALM_CUDA_GEMM");
    return !(v && strcmp(v, "0") == 0);
}
#endif

static void *cuda_workspace_new(backend *base, const workspace_shape *shape,
                                const alm_weight *const *weights, size_t n_weights,
                                int n_threads, alm_error *err)
{
    cuda_backend *be = (cuda_backend *)base;
    /* the attention copies float16 rows of the cache 16 bytes at a time */
    if (shape->head_dim % 8 || shape->head_dim > CUDA_MAX_HEAD_DIM) {
        alm_error_set(err, -ENOTSUP,
                      "the GPU's attention takes heads of a multiple of 8 columns, up to %d; this model's have %d",
                      CUDA_MAX_HEAD_DIM, shape->head_dim);
        return NULL;
    }
    cuda_workspace *ws = calloc(1, sizeof *ws);
    if (!ws) {
        alm_error_set(err, -ENOMEM, "out of memory");
        return NULL;
    }
    ws->shape = *shape;
    int width = shape->max_width;
    for (size_t i = 0; i < n_weights; i++) {
        if (weights[i]->rows > ws->max_rows)
            ws->max_rows = weights[i]->rows;
        if (weights[i]->cols > width)
            width = weights[i]->cols;
    }
    ws->shape.max_width = width;
    size_t tokens = (size_t)shape->max_tokens;
    size_t frag = cuda_fragment_bytes(shape->max_tokens, width);
    /* Attention splits for a verification pass (up to ALM_MAX_DRAFT_TOKENS
     * + 1 tokens) over the whole context, so that its results equal those
     * of decoding token by token; longer passes take longer splits. */
    size_t splits = (size_t)(shape->max_context + CUDA_ATTENTION_SPLIT_KEYS - 1) / CUDA_ATTENTION_SPLIT_KEYS;
    ws->max_splits = splits ? (int)splits : 1;
    ws->attention_cluster = -1;
    ws->max_parts = (size_t)shape->n_heads * GRAPH_MAX_TOKENS * (size_t)ws->max_splits;
    size_t partial = ws->max_parts * cuda_attention_partial_floats(shape->head_dim);
    cudaError_t e = cudaSetDevice(be->device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&ws->stream, cudaStreamNonBlocking);
    if (e == cudaSuccess) e = cudaMallocHost((void **)&ws->tokens_host, (1 + tokens) * sizeof(int32_t));
    if (e == cudaSuccess) e = cudaMalloc((void **)&ws->tokens, (1 + tokens) * sizeof(int32_t));
    if (e == cudaSuccess) e = cudaMalloc(&ws->frag, frag);
    if (e == cudaSuccess) e = cudaMalloc(&ws->frag_hidden, cuda_fragment_bytes(1, width));
    if (e == cudaSuccess) e = cudaMalloc(&ws->frag_out, frag);
    if (e == cudaSuccess) e = cudaMalloc((void **)&ws->copy, tokens * (size_t)width * sizeof(float));
    if (e == cudaSuccess) e = cudaMalloc((void **)&ws->hidden, (size_t)width * sizeof(float));
    if (e == cudaSuccess) e = cudaMalloc((void **)&ws->router, tokens * MOE_MAX_EXPERTS * sizeof(float));
    /* Logits of a whole pass (a verification asks for every token's). */
    size_t logits_bytes = tokens * (size_t)ws->max_rows * sizeof(float);
    if (e == cudaSuccess) e = cudaMalloc((void **)&ws->logits, logits_bytes);
    if (e == cudaSuccess) e = cudaMallocHost((void **)&ws->logits_host, logits_bytes);
    if (e == cudaSuccess) e = cudaMalloc((void **)&ws->choice, 2 * tokens * sizeof(int32_t));
    if (e == cudaSuccess) e = cudaMallocHost((void **)&ws->choice_host, 2 * tokens * sizeof(int32_t));
    const size_t argmax_bytes = cuda_argmax_scratch_bytes(shape->max_tokens, ws->max_rows);
    if (e == cudaSuccess) e = cudaMalloc(&ws->argmax_scratch, argmax_bytes);
    if (e == cudaSuccess) e = cudaMemsetAsync(ws->argmax_scratch, 0, argmax_bytes, ws->stream);
    if (e == cudaSuccess) e = cudaMalloc((void **)&ws->kept, 2 * BACKEND_MAX_KEPT * sizeof(int32_t));
    if (e == cudaSuccess) e = cudaMallocHost((void **)&ws->kept_host, 2 * BACKEND_MAX_KEPT * sizeof(int32_t));
    if (e == cudaSuccess) e = cudaMalloc((void **)&ws->kept_count, sizeof(int));
    if (e == cudaSuccess) e = cudaMemsetAsync(ws->kept_count, 0, sizeof(int), ws->stream);
    if (e == cudaSuccess) e = cudaMalloc((void **)&ws->partials, partial * sizeof(float));
    ws->max_counters = CUDA_ATTENTION_COUNTERS(shape->n_heads, GRAPH_MAX_TOKENS);
    const size_t counter_bytes = ws->max_counters * sizeof(unsigned);
    if (e == cudaSuccess) e = cudaMalloc((void **)&ws->counters, counter_bytes);
    if (e == cudaSuccess) e = cudaMemsetAsync(ws->counters, 0, counter_bytes, ws->stream);
    const char *graphs = getenv("ALM_CUDA_GRAPHS");
    ws->use_graphs = !(graphs && strcmp(graphs, "0") == 0);
    const char *flash = getenv("ALM_CUDA_FLASH");
    ws->use_flash = !(flash && strcmp(flash, "0") == 0);
    const char *fused_rope = getenv("ALM_CUDA_FUSED_ROPE");
    ws->use_fused_rope = !(fused_rope && strcmp(fused_rope, "0") == 0);
    if (e == cudaSuccess && ws->use_graphs && !(ws->graphs = cuda_graph_cache_new(GRAPH_CACHE_SIZE)))
        e = cudaErrorMemoryAllocation;
#ifdef ALM_HAVE_CUBLAS
    /* Without cuBLAS (or with ALM_CUDA_GEMM=0) the matmul kernel does
     * prefill too, slower: cuda_prefill_gemm says why. */
    if (e == cudaSuccess && shape->max_tokens >= CUDA_GEMM_MIN_TOKENS && gemm_wanted() &&
        cuda_gemm_new(ws->stream, &ws->gemm, NULL) < 0)
        ws->gemm = NULL;
#endif
    if (e != cudaSuccess) {
        (void)cudaGetLastError();   /* not a later launch's failure */
        cuda_workspace_free(base, ws);
        size_t device_bytes = 3 * frag + tokens * (size_t)width * sizeof(float) +
                              (size_t)width * sizeof(float) +
                              tokens * MOE_MAX_EXPERTS * sizeof(float) + logits_bytes +
                              partial * sizeof(float) + counter_bytes + argmax_bytes +
                              (3 + 2 * tokens + 2 * BACKEND_MAX_KEPT) * sizeof(int32_t);
        size_t free_bytes = 0, total_bytes = 0;
        if (e == cudaErrorMemoryAllocation && cuda_memory_info(base, &free_bytes, &total_bytes) == 0)
            alm_error_set(err, -ENOMEM,
                          "not enough GPU memory for the work buffers of a pass of %d tokens: "
                          "they need %.0f MiB (and %.0f MiB of pinned host memory), %.0f MiB of "
                          "%.0f MiB are free",
                          shape->max_tokens, device_bytes / MIB, (logits_bytes + tokens * 4.0) / MIB,
                          free_bytes / MIB, total_bytes / MIB);
        else
            cuda_fail(err, e, "making the work buffers");
        return NULL;
    }
    return ws;
}

/* Records the pass as a graph (first time) and launches it; false when the
 * pass cannot be one, or capturing failed (the pass then runs directly). */
static bool run_as_graph(backend_exec *ex, void (*body)(void *ctx, backend_exec *ex), void *ctx)
{
    cuda_workspace *ws = ex->ws;
    ws->mode = PASS_RECORD;
    ws->graph_ok = true;
    ws->graph_pos0 = -1;
    cuda_signature_clear(&ws->sig);
    body(ctx, ex);
    ws->mode = PASS_DIRECT;
    if (!ws->graph_ok || ws->sig.out_of_memory || ws->error.code)
        return false;
    cudaGraphExec_t exec = cuda_graph_cache_find(ws->graphs, &ws->sig);
    if (!exec) {
        cudaGraph_t graph = NULL;
        ws->mode = PASS_CAPTURE;
        cudaError_t e = cudaStreamBeginCapture(ws->stream, cudaStreamCaptureModeRelaxed);
        if (e == cudaSuccess) {
            body(ctx, ex);
            e = cudaStreamEndCapture(ws->stream, &graph);
        }
        ws->mode = PASS_DIRECT;
        if (e == cudaSuccess && ws->error.code == 0)
            e = cudaGraphInstantiate(&exec, graph, 0);
        if (graph)
            cudaGraphDestroy(graph);
        if (e != cudaSuccess || ws->error.code) {
            /* Not for this workspace, then: run it the plain way, which
             * reports any real failure. */
            (void)cudaGetLastError();
            memset(&ws->error, 0, sizeof ws->error);
            ws->use_graphs = false;
            return false;
        }
        if (!cuda_graph_cache_add(ws->graphs, &ws->sig, exec))
            return false;
    }
    /* A pass fed on the GPU finds its position there too (cuda_keep_argmax),
     * and an earlier queued pass may not have copied tokens_host yet. */
    if (!ws->pass_fed)
        ws->tokens_host[0] = ws->graph_pos0 < 0 ? 0 : ws->graph_pos0;
    check(ex, cudaGraphLaunch(exec, ws->stream), "launching a pass's graph");
    return true;
}

/* Enqueues the pass: as a graph where it can be one, else directly. */
static void enqueue_pass(backend_exec *ex, void (*body)(void *ctx, backend_exec *ex), void *ctx,
                         bool queued)
{
    cuda_workspace *ws = ex->ws;
    check(ex, cudaSetDevice(ex->be->device), "selecting the GPU");
    ws->queued = queued;
    ws->pass_fed = false;
    ws->pass_kept = 0;
    ws->logits_dst = NULL;
    ws->ids_dst = NULL;
    if (!ws->use_graphs || !run_as_graph(ex, body, ctx)) {
        ws->mode = PASS_DIRECT;
        ws->logits_dst = NULL;
        ws->ids_dst = NULL;
        body(ctx, ex);
    }
    ws->queued = false;
    /* what the next pass may be fed (its embed checks) */
    ws->can_feed = queued && ws->pass_kept > 0 && ws->error.code == 0;
    ws->n_kept += queued ? ws->pass_kept : 0;
}

/* A queued pass: no wait, and its ids stay on the GPU until collect. */
static void cuda_queue(backend *base, alm_pool *pool, void *workspace,
                       void (*body)(void *ctx, backend_exec *ex), void *ctx)
{
    (void)pool;
    backend_exec ex = { (cuda_backend *)base, workspace };
    enqueue_pass(&ex, body, ctx, true);
    ex.ws->in_flight = true;
}

static int cuda_collect(backend *base, void *workspace, int32_t *ids, float *top_prob, int n)
{
    backend_exec ex = { (cuda_backend *)base, workspace };
    cuda_workspace *ws = ex.ws;
    const bool wanted = n == ws->n_kept && n >= 0 && n <= BACKEND_MAX_KEPT;
    if (wanted && n > 0) {
        check(&ex, cudaMemcpyAsync(ws->kept_host, ws->kept, sizeof(int32_t) * (size_t)n,
                                   cudaMemcpyDeviceToHost, ws->stream), "copying the kept ids");
        if (top_prob)
            check(&ex, cudaMemcpyAsync(ws->kept_host + BACKEND_MAX_KEPT, ws->kept + BACKEND_MAX_KEPT,
                                       sizeof(float) * (size_t)n, cudaMemcpyDeviceToHost, ws->stream),
                  "copying the kept probabilities");
    }
    check(&ex, cudaMemsetAsync(ws->kept_count, 0, sizeof(int), ws->stream), "clearing the kept ids");
    check(&ex, cudaStreamSynchronize(ws->stream), "running the queued passes");
    ws->in_flight = false;
    ws->n_kept = 0;
    if (!wanted)
        return -EINVAL;
    memcpy(ids, ws->kept_host, sizeof(int32_t) * (size_t)n);
    if (top_prob)
        memcpy(top_prob, ws->kept_host + BACKEND_MAX_KEPT, sizeof(float) * (size_t)n);
    return 0;
}

static void cuda_run(backend *base, alm_pool *pool, void *workspace,
                     void (*body)(void *ctx, backend_exec *ex), void *ctx)
{
    (void)pool;
    cuda_backend *be = (cuda_backend *)base;
    backend_exec ex = { be, workspace };
    enqueue_pass(&ex, body, ctx, false);
    check(&ex, cudaStreamSynchronize(ex.ws->stream), "running a pass");
    ex.ws->in_flight = false;
    /* The logits came to pinned memory (fast, asynchronous); now they are
     * final, hand them over. */
    if (ex.ws->logits_dst)
        memcpy(ex.ws->logits_dst, ex.ws->logits_host, sizeof(float) * ex.ws->logits_floats);
    if (ex.ws->ids_dst) {
        size_t n = (size_t)ex.ws->n_choice;
        memcpy(ex.ws->ids_dst, ex.ws->choice_host, sizeof(int32_t) * n);
        if (ex.ws->top_dst)
            memcpy(ex.ws->top_dst, ex.ws->choice_host + ex.ws->shape.max_tokens, sizeof(float) * n);
    }
}

static int cuda_take_error(backend *base, void *workspace, alm_error *err)
{
    cuda_workspace *ws = workspace;
    if (!ws || ws->error.code == 0)
        return 0;
    int code = ws->error.code;
    if (err)
        *err = ws->error;
    memset(&ws->error, 0, sizeof ws->error);
    return code;
}

/* ------------------------------------------------------------ operations */

enum { OP_EMBED = 1, OP_NORM_MATMUL, OP_MATMUL_ADD, OP_ROPE_STORE, OP_ATTENTION, OP_LOGITS,
       OP_ARGMAX, OP_ROPE_ATTENTION, OP_KEEP };

/* Recording a pass: adds the operation and its arguments (a struct zeroed
 * before it was filled, so no padding byte differs) to the signature and
 * returns true, and the operation enqueues nothing. */
static bool recording(backend_exec *ex, int op, const void *args, size_t n)
{
    cuda_workspace *ws = ex->ws;
    if (ws->mode != PASS_RECORD)
        return false;
    cuda_signature_add(&ws->sig, &op, sizeof op);
    cuda_signature_add(&ws->sig, args, n);
    return true;
}

/* The note the operation before left (see fragment_note), cleared. */
static fragment_note take_note(backend_exec *ex)
{
    fragment_note n = ex->ws->note;
    memset(&ex->ws->note, 0, sizeof ex->ws->note);
    return n;
}

/* Where the kernels read the position from: NULL (the argument itself) in
 * a direct pass, slot 0 of the device token buffer in a graph. */
static const int *position_source(backend_exec *ex, int pos0)
{
    cuda_workspace *ws = ex->ws;
    ws->pass_pos0 = pos0;
    if (ws->mode == PASS_RECORD) {
        if (ws->graph_pos0 < 0)
            ws->graph_pos0 = pos0;
        else if (ws->graph_pos0 != pos0)
            ws->graph_ok = false;
    }
    return ws->mode == PASS_CAPTURE ? ws->tokens : NULL;
}

/* Keys a graph's attention launch covers: the context rounded up to a
 * power of two of splits (a new graph each time the context doubles). */
static int graph_span(const cuda_workspace *ws, int pos0, int n_tok)
{
    int need = (pos0 + n_tok + CUDA_ATTENTION_SPLIT_KEYS - 1) / CUDA_ATTENTION_SPLIT_KEYS, splits = 1;
    while (splits < need)
        splits *= 2;
    if (splits > ws->max_splits)
        splits = ws->max_splits > need ? ws->max_splits : need;
    return splits * CUDA_ATTENTION_SPLIT_KEYS;
}

static void cuda_op_embed(backend_exec *ex, const alm_weight *table, const int32_t *tokens,
                          int n_tok, float *x)
{
    take_note(ex);
    cuda_workspace *ws = ex->ws;
    const bool fed = tokens == NULL;
    ws->pass_tokens = n_tok;
    ws->pass_fed = fed;
    if (fed) {
        /* the token (and position) the pass before left in the token
         * buffer (cuda_keep_argmax) */
        if (!ws->queued || n_tok != 1 || !ws->can_feed) {
            check(ex, cudaErrorInvalidValue, "a pass fed by the argmax of the one before, after none");
            ws->graph_ok = false;
            return;
        }
    } else {
        /* queued passes may still read tokens_host */
        if (ws->in_flight) {
            check(ex, cudaStreamSynchronize(ws->stream), "running the queued passes");
            ws->in_flight = false;
        }
        /* staged in every mode: a replayed graph copies them from here */
        memcpy(ws->tokens_host + 1, tokens, sizeof(int32_t) * (size_t)n_tok);
    }
    struct { const void *table; int n_tok, fed; float *x; } args;
    memset(&args, 0, sizeof args);
    args.table = matrix_of(table);
    args.n_tok = n_tok;
    args.fed = fed;
    args.x = x;
    if (n_tok > GRAPH_MAX_TOKENS)
        ws->graph_ok = false;
    if (recording(ex, OP_EMBED, &args, sizeof args))
        return;
    /* the position (slot 0) travels with the tokens */
    if (!fed)
        check(ex, cudaMemcpyAsync(ws->tokens, ws->tokens_host, sizeof(int32_t) * (size_t)(1 + n_tok),
                                  cudaMemcpyHostToDevice, ws->stream), "copying the tokens");
    check(ex, cuda_embed(matrix_of(table), ws->tokens + 1, n_tok, x, ws->stream), "embedding");
}

/* cuda_matmul (frag_out NULL) or cuda_swiglu_fragments, through the
 * prefill GEMM when the pass is long enough and cuBLAS is there. */
static void matmul(backend_exec *ex, const cuda_matrix *w, const cuda_matrix *up, const void *frag,
                   int n_tok, const float *bias, const float *up_bias, float *y, int y_stride,
                   int accumulate, void *frag_out, const char *what)
{
    cuda_workspace *ws = ex->ws;
#ifdef ALM_HAVE_CUBLAS
    if (ws->gemm && n_tok >= CUDA_GEMM_MIN_TOKENS) {
        alm_error spare;
        cuda_gemm_matmul(ws->gemm, w, up, frag, n_tok, bias, up_bias, y, y_stride, accumulate, 1.0f,
                         frag_out, ws->error.code ? &spare : &ws->error);
        return;
    }
#endif
    if (frag_out)
        check(ex, cuda_swiglu_fragments(w, up, frag, n_tok, bias, up_bias, y, frag_out, ws->stream),
              what);
    else
        check(ex, cuda_matmul(w, up, frag, n_tok, bias, up_bias, y, y_stride, accumulate, 1.0f,
                              ws->stream), what);
}

/* cuda_matmul_many, likewise. */
static void matmul_many(backend_exec *ex, const cuda_matrix *const *w, int n_w, const void *frag,
                        int n_tok, const float *const *bias, float *const *y)
{
    cuda_workspace *ws = ex->ws;
#ifdef ALM_HAVE_CUBLAS
    if (ws->gemm && n_tok >= CUDA_GEMM_MIN_TOKENS) {
        alm_error spare;
        cuda_gemm_matmul_many(ws->gemm, w, n_w, frag, n_tok, bias, y,
                              ws->error.code ? &spare : &ws->error);
        return;
    }
#endif
    check(ex, cuda_matmul_many(w, n_w, frag, n_tok, bias, y, ws->stream), "matmul");
}

static void cuda_op_norm_matmul(backend_exec *ex, const float *x, int n_tok, const float *norm,
                                float eps, int n_w, const alm_weight *const *w,
                                const float *const *bias, float *const *y, bool swiglu)
{
    take_note(ex);
    cuda_workspace *ws = ex->ws;
    int dim = w[0]->cols;
    const float *dnorm = device_vector_for(ex, norm, (size_t)dim);
    struct {
        const float *x, *norm;
        int n_tok, n_w, swiglu;
        float eps;
        const void *w[4];
        const float *bias[4];
        float *y[4];
    } args;
    memset(&args, 0, sizeof args);
    args.x = x;
    args.norm = dnorm;
    args.n_tok = n_tok;
    args.n_w = n_w;
    args.swiglu = swiglu;
    args.eps = eps;
    for (int i = 0; i < n_w && i < 4; i++) {
        args.w[i] = matrix_of(w[i]);
        args.bias[i] = bias ? device_vector_for(ex, bias[i], (size_t)w[i]->rows) : NULL;
        args.y[i] = y[i];
    }
    if (n_w > 4)
        ws->graph_ok = false;
    if (recording(ex, OP_NORM_MATMUL, &args, sizeof args))
        return;
    check(ex, cuda_to_fragments(x, n_tok, dim, dnorm, eps, ws->frag, ws->stream), "rmsnorm");
    if (swiglu) {
        const float *gb = bias ? device_vector_for(ex, bias[0], (size_t)w[0]->rows) : NULL;
        const float *ub = bias ? device_vector_for(ex, bias[1], (size_t)w[1]->rows) : NULL;
        if (w[0]->rows % 64 == 0) {
            /* the down projection's input, ready */
            matmul(ex, matrix_of(w[0]), matrix_of(w[1]), ws->frag, n_tok, gb, ub, y[0], w[0]->rows, 0,
                   ws->frag_out, "gate/up matmul");
            ws->note = (fragment_note){ y[0], n_tok, w[0]->rows, ws->frag_out };
        } else {
            matmul(ex, matrix_of(w[0]), matrix_of(w[1]), ws->frag, n_tok, gb, ub, y[0], w[0]->rows, 0,
                   NULL, "gate/up matmul");
        }
        return;
    }
    /* q, k and v (or any weights of one format) in one launch */
    const cuda_matrix *mats[3];
    const float *biases[3];
    float *outs[3];
    for (int i0 = 0; i0 < n_w;) {
        int n = 0;
        while (i0 + n < n_w && n < 3 &&
               (n == 0 || (matrix_of(w[i0 + n])->bits == mats[0]->bits &&
                           matrix_of(w[i0 + n])->n_kb == mats[0]->n_kb &&
                           matrix_of(w[i0 + n])->group_shift == mats[0]->group_shift))) {
            mats[n] = matrix_of(w[i0 + n]);
            biases[n] = bias ? device_vector_for(ex, bias[i0 + n], (size_t)w[i0 + n]->rows) : NULL;
            outs[n] = y[i0 + n];
            n++;
        }
        matmul_many(ex, mats, n, ws->frag, n_tok, biases, outs);
        i0 += n;
    }
}

static void cuda_op_matmul_add(backend_exec *ex, const alm_weight *w, const float *bias,
                               const float *h, int n_tok, float *x)
{
    fragment_note note = take_note(ex);
    cuda_workspace *ws = ex->ws;
    const float *b = device_vector_for(ex, bias, (size_t)w->rows);
    struct { const void *w; const float *bias, *h; int n_tok; float *x; } args;
    memset(&args, 0, sizeof args);
    args.w = matrix_of(w);
    args.bias = b;
    args.h = h;
    args.n_tok = n_tok;
    args.x = x;
    if (recording(ex, OP_MATMUL_ADD, &args, sizeof args))
        return;
    const void *frag = ws->frag;
    if (note.of == h && note.n_tok == n_tok && note.dim == w->cols)
        frag = note.buf;   /* made by the operation that made h */
    else
        check(ex, cuda_to_fragments(h, n_tok, w->cols, NULL, 0.0f, ws->frag, ws->stream), "fragments");
    matmul(ex, matrix_of(w), NULL, frag, n_tok, b, NULL, x, w->rows, 1, NULL, "matmul");
}

static void cuda_op_rope_store(backend_exec *ex, const attention_shape *s, const rope_table *rope,
                               const float *q_norm, const float *k_norm, float eps, float *q,
                               const float *k, const float *v, int n_tok, int pos0,
                               kv_layer cache)
{
    take_note(ex);
    cuda_attention_shape a = { s->n_heads, s->n_kv_heads, s->head_dim, s->window };
    const float *qn = device_vector_for(ex, q_norm, (size_t)s->head_dim);
    const float *kn = device_vector_for(ex, k_norm, (size_t)s->head_dim);
    const int *pos_dev = position_source(ex, pos0);
    struct {
        cuda_attention_shape a;
        const float *cos, *sin, *qn, *kn;
        float eps;
        float *q;
        const float *k, *v;
        int n_tok;
        float *kc, *vc;
    } args;
    memset(&args, 0, sizeof args);
    args.a = a;
    args.cos = rope->cos;
    args.sin = rope->sin;
    args.qn = qn;
    args.kn = kn;
    args.eps = eps;
    args.q = q;
    args.k = k;
    args.v = v;
    args.n_tok = n_tok;
    args.kc = cache.k;
    args.vc = cache.v;
    if (recording(ex, OP_ROPE_STORE, &args, sizeof args))
        return;
    check(ex, cuda_rope_store(&a, rope->cos, rope->sin, qn, kn, eps, q, k, v, n_tok, pos0, pos_dev,
                              cache.k, cache.v, ex->ws->stream), "rope");
}

/* Blocks a cluster for the attention of a pass of n_tok tokens over `keys`
 * keys (the launch's span), 0: the merge through global memory. Clusters
 * for a decode step whose context fits one tile a block: then their
 * results are the merge through memory's bit for bit (test-cuda), so a
 * verification, which keeps that path (its blocks are many and mostly
 * idle in clusters: 5 tokens at 540 keys 14.6 -> 25.6 us), still gives
 * decoding's logits. The smallest cluster that holds the context. */
static int attention_cluster_for(cuda_workspace *ws, const cuda_attention_shape *a, int n_tok, int keys)
{
    if (ws->attention_cluster < 0) {
        const char *clusters = getenv("ALM_CUDA_CLUSTERS");
        ws->attention_cluster = clusters && strcmp(clusters, "0") == 0 ? 0 : cuda_attention_cluster_blocks(a);
    }
    for (int c = 8; c <= ws->attention_cluster; c *= 2)
        if (n_tok == 1 && keys <= c * CUDA_ATTENTION_SPLIT_KEYS)
            return c;
    return 0;
}

static void cuda_op_attention(backend_exec *ex, const attention_shape *s, const float *q,
                              int n_tok, int pos0, kv_layer cache, float *out)
{
    take_note(ex);
    cuda_workspace *ws = ex->ws;
    cuda_attention_shape a = { s->n_heads, s->n_kv_heads, s->head_dim, s->window };
    const int *pos_dev = position_source(ex, pos0);
    struct {
        cuda_attention_shape a;
        const float *q;
        int n_tok, span;
        const float *kc, *vc;
        float *out;
    } args;
    memset(&args, 0, sizeof args);
    args.a = a;
    args.q = q;
    args.n_tok = n_tok;
    args.span = graph_span(ws, pos0, n_tok);
    args.kc = cache.k;
    args.vc = cache.v;
    args.out = out;
    if (recording(ex, OP_ATTENTION, &args, sizeof args))
        return;
    /* the o projection's input, ready */
    int dim = s->n_heads * s->head_dim;
    void *frag = dim % 64 == 0 ? ws->frag : NULL;
    if (!pos_dev && n_tok >= CUDA_FLASH_MIN_TOKENS && ws->use_flash && cuda_flash_attention_fits(&a))
        check(ex, cuda_flash_attention(&a, q, n_tok, pos0, cache.k, cache.v, out, frag, ws->stream),
              "attention");
    else {
        const int cluster = attention_cluster_for(ws, &a, n_tok, pos_dev ? args.span : pos0 + n_tok);
        const cuda_attention_scratch scratch = { ws->partials, ws->max_parts, ws->counters, ws->max_counters,
                                                 cluster };
        check(ex, cuda_attention(&a, q, n_tok, pos0, pos_dev, args.span, cache.k, cache.v, out, &scratch,
                                 frag, ws->stream),
              "attention");
    }
    if (frag)
        ws->note = (fragment_note){ out, n_tok, dim, frag };
}

/* The q/k/v projection, then rope_store and the attention: for a decode
 * step or a verification the last two as one kernel (cuda_rope_attention:
 * the same bits, one kernel boundary less a layer). ALM_CUDA_FUSED_ROPE=0:
 * never, to measure what it gains. */
static void cuda_attention_block(backend_exec *ex, const attention_block_args *a)
{
    const alm_weight *qkv[3] = { a->q, a->k, a->v };
    const float *qkv_bias[3] = { a->q_bias, a->k_bias, a->v_bias };
    float *qkv_out[3] = { a->q_out, a->k_out, a->v_out };
    cuda_op_norm_matmul(ex, a->x, a->n_tok, a->norm, a->eps, 3, qkv, qkv_bias, qkv_out, false);

    cuda_workspace *ws = ex->ws;
    const attention_shape *s = a->shape;
    cuda_attention_shape shape = { s->n_heads, s->n_kv_heads, s->head_dim, s->window };
    const int *pos_dev = position_source(ex, a->pos0);
    const int span = graph_span(ws, a->pos0, a->n_tok);
    const int cluster = attention_cluster_for(ws, &shape, a->n_tok, pos_dev ? span : a->pos0 + a->n_tok);
    const cuda_attention_scratch scratch = { ws->partials, ws->max_parts, ws->counters, ws->max_counters, cluster };
    /* prefill takes the flash attention (cuda_op_attention) */
    if (!ws->use_fused_rope || (!pos_dev && a->n_tok >= CUDA_FLASH_MIN_TOKENS) ||
        !cuda_rope_attention_fits(&shape, a->n_tok, a->pos0, pos_dev, span, &scratch)) {
        cuda_op_rope_store(ex, s, a->rope, a->q_norm, a->k_norm, a->eps, a->q_out, a->k_out, a->v_out, a->n_tok,
                           a->pos0, a->cache);
        cuda_op_attention(ex, s, a->q_out, a->n_tok, a->pos0, a->cache, a->out);
        return;
    }
    take_note(ex);
    const cuda_rope rope = { a->rope->cos, a->rope->sin, device_vector_for(ex, a->q_norm, (size_t)s->head_dim),
                             device_vector_for(ex, a->k_norm, (size_t)s->head_dim), a->eps };
    struct {
        cuda_attention_shape a;
        cuda_rope rope;
        const float *q, *k, *v;
        int n_tok, cluster, span;
        float *kc, *vc, *out;
    } args;
    memset(&args, 0, sizeof args);
    args.a = shape;
    args.rope = rope;
    args.q = a->q_out;
    args.k = a->k_out;
    args.v = a->v_out;
    args.n_tok = a->n_tok;
    args.cluster = cluster;
    args.span = span;
    args.kc = a->cache.k;
    args.vc = a->cache.v;
    args.out = a->out;
    if (recording(ex, OP_ROPE_ATTENTION, &args, sizeof args))
        return;
    const int dim = s->n_heads * s->head_dim;
    void *frag = dim % 64 == 0 ? ws->frag : NULL;
    check(ex, cuda_rope_attention(&shape, &rope, a->q_out, a->k_out, a->v_out, a->n_tok, a->pos0, pos_dev, span,
                                  a->cache.k, a->cache.v, a->out, &scratch, frag, ws->stream),
          "attention");
    if (frag)
        ws->note = (fragment_note){ a->out, a->n_tok, dim, frag };
}

/* Routing on the host (as the CPU backend does it: softmax, top k with the
 * lowest index first on ties, renormalized), the experts on the GPU. */
static void cuda_op_moe_add(backend_exec *ex, const float *norm, float eps,
                            const alm_weight *router, int n_experts, int top_k,
                            const moe_expert *experts, int n_tok, float *x)
{
    take_note(ex);
    cuda_workspace *ws = ex->ws;
    int dim = router->cols;
    const float *dnorm = device_vector_for(ex, norm, (size_t)dim);
    /* routing needs the router's logits on the host mid-pass */
    ws->graph_ok = false;
    if (ws->mode == PASS_RECORD)
        return;
    size_t row_bytes = sizeof(float) * (size_t)dim;
    check(ex, cudaMemcpyAsync(ws->copy, x, row_bytes * (size_t)n_tok, cudaMemcpyDeviceToDevice,
                              ws->stream), "copying the MoE input");
    check(ex, cuda_to_fragments(ws->copy, n_tok, dim, dnorm, eps, ws->frag, ws->stream), "rmsnorm");
    check(ex, cuda_matmul(matrix_of(router), NULL, ws->frag, n_tok, NULL, NULL, ws->router,
                          n_experts, 0, 1.0f, ws->stream), "router");
    float *logits = malloc(sizeof(float) * (size_t)n_tok * (size_t)n_experts);
    if (!logits) {
        check(ex, cudaErrorMemoryAllocation, "host memory for the router");
        return;
    }
    check(ex, cudaMemcpyAsync(logits, ws->router, sizeof(float) * (size_t)n_tok * (size_t)n_experts,
                              cudaMemcpyDeviceToHost, ws->stream), "router logits");
    check(ex, cudaStreamSynchronize(ws->stream), "router");
    if (ex->ws->error.code) {
        free(logits);
        return;
    }
    for (int t = 0; t < n_tok; t++) {
        const float *lg = logits + (size_t)t * n_experts;
        float weights[MOE_MAX_EXPERTS];
        int chosen[MOE_MAX_EXPERTS];
        moe_route(lg, n_experts, top_k, chosen, weights);
        check(ex, cuda_to_fragments(ws->copy + (size_t)t * dim, 1, dim, dnorm, eps, ws->frag,
                                    ws->stream), "rmsnorm");
        for (int j = 0; j < top_k; j++) {
            const moe_expert *E = &experts[chosen[j]];
            int inter = E->gate->rows;
            check(ex, cuda_matmul(matrix_of(E->gate), matrix_of(E->up), ws->frag, 1, NULL, NULL,
                                  ws->hidden, inter, 0, 1.0f, ws->stream), "expert gate/up");
            check(ex, cuda_to_fragments(ws->hidden, 1, inter, NULL, 0.0f, ws->frag_hidden, ws->stream),
                  "fragments");
            check(ex, cuda_matmul(matrix_of(E->down), NULL, ws->frag_hidden, 1, NULL, NULL,
                                  x + (size_t)t * dim, dim, 1, weights[j], ws->stream),
                  "expert down");
        }
    }
    free(logits);
}

/* The output layer of both logits operations: records the operation, or
 * enqueues W rmsnorm(x[first + j]) for j < n_out into ws->logits (on the
 * GPU). Returns true when recording (the caller enqueues nothing more). */
static bool output_layer(backend_exec *ex, int op, const float *x, int first, int n_out,
                         const float *norm, float eps, const alm_weight *w, int n_valid, bool top)
{
    cuda_workspace *ws = ex->ws;
    int dim = w->cols, rows = w->rows;
    const float *dnorm = device_vector_for(ex, norm, (size_t)dim);
    struct {
        const float *x, *norm;
        int first, n_out, rows, n_valid, top;
        float eps;
        const void *w;
    } args;
    memset(&args, 0, sizeof args);
    args.x = x;
    args.norm = dnorm;
    args.first = first;
    args.n_out = n_out;
    args.rows = rows;
    args.n_valid = n_valid;
    args.top = top;
    args.eps = eps;
    args.w = matrix_of(w);
    if (recording(ex, op, &args, sizeof args))
        return true;
    check(ex, cuda_to_fragments(x + (size_t)first * dim, n_out, dim, dnorm, eps, ws->frag,
                                ws->stream), "final norm");
    /* w may ask for the first rows only (a limited vocabulary): a prefix
     * of whole tiles of the resident matrix. */
    cuda_matrix head = *matrix_of(w);
    if (rows < head.rows)
        head.rows = rows;
    check(ex, cuda_matmul(&head, NULL, ws->frag, n_out, NULL, NULL, ws->logits, rows, 0, 1.0f,
                          ws->stream), "lm_head");
    return false;
}

static void cuda_op_logits(backend_exec *ex, const float *x, int first, int n_out,
                           const float *norm, float eps, const alm_weight *w, float *logits)
{
    take_note(ex);
    cuda_workspace *ws = ex->ws;
    ws->logits_floats = (size_t)n_out * (size_t)w->rows;
    ws->logits_dst = logits;
    if (output_layer(ex, OP_LOGITS, x, first, n_out, norm, eps, w, w->rows, false))
        return;
    check(ex, cudaMemcpyAsync(ws->logits_host, ws->logits, sizeof(float) * ws->logits_floats,
                              cudaMemcpyDeviceToHost, ws->stream), "copying the logits");
}

/* The logits stay on the GPU; only each row's argmax (and probability)
 * comes back. */
static void cuda_op_logits_argmax(backend_exec *ex, const float *x, int first, int n_out,
                                  const float *norm, float eps, const alm_weight *w, int n_valid,
                                  int32_t *ids, float *top_prob)
{
    take_note(ex);
    cuda_workspace *ws = ex->ws;
    int rows = w->rows;
    const int *pos_dev = NULL;
    if (ws->queued) {
        /* kept on the GPU for collect (and the next pass's token) */
        if (ws->n_kept + n_out > BACKEND_MAX_KEPT) {
            check(ex, cudaErrorInvalidValue, "more queued passes than ids kept at once");
            ws->graph_ok = false;
            return;
        }
        ws->pass_kept = n_out;
        pos_dev = position_source(ex, ws->pass_pos0);
    } else {
        ws->ids_dst = ids;
        ws->top_dst = top_prob;
        ws->n_choice = n_out;
    }
    if (output_layer(ex, OP_ARGMAX, x, first, n_out, norm, eps, w, n_valid, top_prob != NULL)) {
        /* a queued pass's graph keeps the ids as well */
        struct { int queued, n_tok; } keep;
        memset(&keep, 0, sizeof keep);
        keep.queued = ws->queued;
        keep.n_tok = ws->pass_tokens;
        recording(ex, OP_KEEP, &keep, sizeof keep);
        return;
    }
    int max_tokens = ws->shape.max_tokens;
    float *top = top_prob ? (float *)(ws->choice + max_tokens) : NULL;
    check(ex, cuda_argmax(ws->logits, n_out, rows, n_valid < rows ? n_valid : rows, ws->choice, top,
                          ws->argmax_scratch, max_tokens, ws->stream), "argmax");
    if (ws->queued) {
        check(ex, cuda_keep_argmax(ws->choice, top, n_out, ws->kept, (float *)(ws->kept + BACKEND_MAX_KEPT),
                                   ws->kept_count, ws->tokens, pos_dev, ws->pass_pos0, ws->pass_tokens,
                                   ws->stream), "keeping the argmax");
        return;
    }
    check(ex, cudaMemcpyAsync(ws->choice_host, ws->choice, sizeof(int32_t) * (size_t)n_out,
                              cudaMemcpyDeviceToHost, ws->stream), "copying the argmax");
    if (top)
        check(ex, cudaMemcpyAsync(ws->choice_host + max_tokens, top, sizeof(float) * (size_t)n_out,
                                  cudaMemcpyDeviceToHost, ws->stream), "copying the probabilities");
}

/* ------------------------------------------------------------ lifetime */

static void cuda_destroy(backend *base)
{
    cuda_backend *be = (cuda_backend *)base;
    for (size_t i = 0; i < be->n_weights; i++)
        be->weights[i]->backend_data = NULL;
    for (size_t i = 0; i < be->n_matrices; i++)
        matrix_free(be->matrices[i]);
    for (size_t i = 0; i < be->cap_vectors; i++)
        if (be->vectors[i].host)
            cudaFree(be->vectors[i].device);
    free(be->vectors);
    free(be->matrices);
    free(be->weights);
    pthread_mutex_destroy(&be->lock);
    free(be);
}

static const backend_ops cuda_ops = {
    .name = "cuda",
    .destroy = cuda_destroy,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .memory_info = cuda_memory_info,
    .upload = cuda_upload,
    .download = cuda_download,
    .workspace_new = cuda_workspace_new,
    .workspace_free = cuda_workspace_free,
    .run = cuda_run,
    .queue = cuda_queue,
    .collect = cuda_collect,
    .embed = cuda_op_embed,
    .norm_matmul = cuda_op_norm_matmul,
    .matmul_add = cuda_op_matmul_add,
    .rope_store = cuda_op_rope_store,
    .attention = cuda_op_attention,
    .attention_block = cuda_attention_block,
    .moe_add = cuda_op_moe_add,
    .logits = cuda_op_logits,
    .logits_argmax = cuda_op_logits_argmax,
    .prepare_weights = cuda_prepare_weights,
    .take_error = cuda_take_error,
};

static int open_device(int device, alm_error *err)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice || (e == cudaSuccess && count == 0))
        return alm_error_set(err, -ENODEV, "no CUDA device: %s",
                             e == cudaErrorInsufficientDriver
                                 ? "no NVIDIA driver, or one older than this build's CUDA runtime"
                                 : "the driver reports none");
    if (e != cudaSuccess)
        return alm_error_set(err, -ENODEV, "no CUDA device: %s", cudaGetErrorString(e));
    struct cudaDeviceProp prop;
    if ((e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess)
        return cuda_fail(err, e, "reading the device's properties");
    if (prop.major < MIN_MAJOR)
        return alm_error_set(err, -ENOTSUP,
                             "CUDA device %d (%s) has compute capability %d.%d; alm needs %d.0 or later",
                             device, prop.name, prop.major, prop.minor, MIN_MAJOR);
    if ((e = cudaSetDevice(device)) != cudaSuccess)
        return cuda_fail(err, e, "selecting the GPU");
    if ((e = cuda_matmul_setup()) != cudaSuccess)
        return cuda_fail(err, e, "setting up the matmul kernels");
    if ((e = cuda_attention_setup()) != cudaSuccess)
        return cuda_fail(err, e, "setting up the attention kernel");
    return 0;
}

int cuda_backend_new(backend **out, alm_error *err)
{
    int r = open_device(0, err);
    if (r < 0)
        return r;
    cuda_backend *be = calloc(1, sizeof *be);
    if (!be)
        return alm_error_set(err, -ENOMEM, "out of memory");
    be->base.ops = &cuda_ops;
    be->base.kv_value_bytes = sizeof(cuda_kv);
    be->device = 0;
    pthread_mutex_init(&be->lock, NULL);
    *out = &be->base;
    return 0;
}

bool cuda_prefill_gemm(alm_error *err)
{
#ifdef ALM_HAVE_CUBLAS
    if (!gemm_wanted()) {
        alm_error_set(err, -ECANCELED, "ALM_CUDA_GEMM=0");
        return false;
    }
    return cuda_gemm_probe(err) == 0;
#else
    alm_error_set(err, -ENOTSUP, "built without cublas_v2.h");
    return false;
#endif
}

int cuda_copy_bandwidth(size_t bytes, int reps, double *gb_per_s, alm_error *err)
{
    int r = open_device(0, err);
    if (r < 0)
        return r;
    void *a = NULL, *b = NULL;
    cudaEvent_t start = NULL, stop = NULL;
    cudaError_t e = cudaMalloc(&a, bytes);
    if (e == cudaSuccess) e = cudaMalloc(&b, bytes);
    if (e == cudaSuccess) e = cudaMemset(a, 1, bytes);
    if (e == cudaSuccess) e = cudaEventCreate(&start);
    if (e == cudaSuccess) e = cudaEventCreate(&stop);
    if (e == cudaSuccess) e = cuda_copy_repeat(b, a, bytes, 3, 0);
    double best = 0.0;
    for (int i = 0; i < reps && e == cudaSuccess; i++) {
        float ms = 0.0f;
        e = cudaEventRecord(start, 0);
        if (e == cudaSuccess) e = cuda_copy_repeat(b, a, bytes, 10, 0);
        if (e == cudaSuccess) e = cudaEventRecord(stop, 0);
        if (e == cudaSuccess) e = cudaEventSynchronize(stop);
        if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, start, stop);
        double gbs = 2.0 * 10.0 * (double)bytes / (ms * 1e-3) / 1e9;
        if (e == cudaSuccess && gbs > best)
            best = gbs;
    }
    if (start) cudaEventDestroy(start);
    if (stop) cudaEventDestroy(stop);
    cudaFree(a);
    cudaFree(b);
    if (e != cudaSuccess)
        return cuda_fail(err, e, "copy bandwidth probe");
    *gb_per_s = best;
    return 0;
}
