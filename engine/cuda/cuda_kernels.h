/* The CUDA kernels' launchers: plain C entry points, compiled by nvcc, that
 * enqueue work on a stream and return the launch's status. The backend
 * (cuda_backend.c) is C and sees only this header.
 *
 * Weights live on the GPU in a "tile" layout made for the tensor cores'
 * mma.m16n8k16 instruction: for each tile of 16 rows and each block of 64
 * columns, lane L of a warp reads its words with one or a few 128-bit loads,
 * and those words hold exactly the eight values per 16-column step that L's
 * A fragment needs (see matmul.cu). Quantized weights keep their bits (2, 4
 * or 8 per value) with one (scale, bias) pair of halves per row and group;
 * dense weights become float16 in the same layout. Activations enter a
 * matmul as float16 "fragments" of 8 tokens by 16 columns (cuda_to_fragments). */
#ifndef ALM_CUDA_KERNELS_H
#define ALM_CUDA_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CUDA_TILE_ROWS 16
#define CUDA_TILE_COLS 64
/* Tokens of one matmul launch (four 8-token fragments). */
#define CUDA_MATMUL_TOKENS 32

/* Element types of the weights as stored (core/dtype.h's order). */
enum { CUDA_F32 = 0, CUDA_F16 = 1, CUDA_BF16 = 2 };

/* A weight as the file holds it, already copied to the GPU. */
typedef struct cuda_raw_weight {
    int rows, cols;
    int bits;             /* 0: dense */
    int group_size;
    int dtype;            /* dense element type */
    int scale_dtype;      /* quantized: type of scales and biases */
    const void *data, *scales, *biases;
} cuda_raw_weight;

/* A weight in the tile layout. */
typedef struct cuda_matrix {
    int rows, cols;
    int bits;             /* 2, 4, 8, or 16 for dense float16 */
    int group_shift;      /* log2(group size); quantized only */
    int n_kb;             /* 64-column blocks */
    int n_groups;         /* groups per row, padded columns (quantized only) */
    uint32_t *tiles;      /* [rows/16][n_kb][32 lanes][bits or 16 words] */
    void *scale_bias;     /* half2 (scale, bias) [rows/16][n_groups][8][2]:
                           * rows r and r + 8 of a tile side by side */
} cuda_matrix;

/* Bytes of m->tiles and m->scale_bias for a weight of this shape and bits. */
size_t cuda_matrix_tile_bytes(int rows, int cols, int bits);
size_t cuda_matrix_scale_bytes(int rows, int cols, int group_size);
/* Bytes of the float16 fragments of n_tok tokens of dim values. */
size_t cuda_fragment_bytes(int n_tok, int dim);

/* Fills m->tiles (and m->scale_bias) from raw; m's shape fields are set. */
cudaError_t cuda_repack_weight(const cuda_raw_weight *raw, cuda_matrix *m, cudaStream_t s);

/* frag = float16 fragments of rmsnorm(x[t]) * norm (norm NULL: x as is) for
 * t < n_tok, rows dim floats apart; padding tokens and columns are zero. */
cudaError_t cuda_to_fragments(const float *x, int n_tok, int dim, const float *norm,
                              float eps, void *frag, cudaStream_t s);

/* Once per process, before the first matmul: lets the matmul kernels use
 * the shared memory their pipelines need (more than the default 48 KB). */
cudaError_t cuda_matmul_setup(void);

/* y[t][r] (=|+=) alpha * (W x[t])[r] + bias[r] for the tokens in frag and
 * r < y_stride <= W.rows (fewer: a prefix of whole tiles of rows).
 * up != NULL: SwiGLU, y = silu(W x + bias) * (up x + up_bias). */
cudaError_t cuda_matmul(const cuda_matrix *w, const cuda_matrix *up, const void *frag,
                        int n_tok, const float *bias, const float *up_bias, float *y,
                        int y_stride, int accumulate, float alpha, cudaStream_t s);

/* SwiGLU (cuda_matmul with up, all rows, y = and not +=), y also written
 * as the float16 fragments of its rows (as cuda_to_fragments(y, n_tok,
 * rows, NULL, ...) makes them, but for the padding tokens): the input of
 * the down projection without a conversion launch. rows a multiple of 64. */
cudaError_t cuda_swiglu_fragments(const cuda_matrix *gate, const cuda_matrix *up, const void *frag,
                                  int n_tok, const float *gate_bias, const float *up_bias, float *y,
                                  void *frag_out, cudaStream_t s);

/* y_i[t] = W_i x[t] + bias_i for n_w <= 3 matrices of the same input
 * (columns and bits), in one launch; y_i rows are W_i.rows floats apart. */
cudaError_t cuda_matmul_many(const cuda_matrix *const *w, int n_w, const void *frag, int n_tok,
                             const float *const *bias, float *const *y, cudaStream_t s);

/* x[t] = table row tokens[t] (tokens in device memory). */
cudaError_t cuda_embed(const cuda_matrix *table, const int32_t *tokens, int n_tok, float *x,
                       cudaStream_t s);

typedef struct cuda_attention_shape {
    int n_heads, n_kv_heads, head_dim, window;
} cuda_attention_shape;

/* A value of the KV cache: float16, as its bits (C has no __half). Half
 * the bytes of float32 to hold, and for the attention to read: llama.cpp's
 * default too. Layout [position][n_kv_heads][head_dim], for keys and
 * values alike. */
typedef uint16_t cuda_kv;
/* The widest head the attention kernels take (their shared memory). */
#define CUDA_MAX_HEAD_DIM 256

/* Per-head norms (optional), rotary embedding of q and k, k and v into
 * the cache at positions pos0.. (see backend.h rope_store), rounded to
 * float16 there. Head dimensions a multiple of 8. pos_dev: NULL,
 * or device memory the kernels read pos0 from when they run (a CUDA graph
 * replays one launch at every position). */
cudaError_t cuda_rope_store(const cuda_attention_shape *a, const float *cos_table,
                            const float *sin_table, const float *q_norm, const float *k_norm,
                            float eps, float *q, const float *k, const float *v, int n_tok,
                            int pos0, const int *pos_dev, cuda_kv *k_cache, cuda_kv *v_cache,
                            cudaStream_t s);

/* The rotary embedding's tables ([position][head_dim / 2] each) and the
 * optional per-head norms, as cuda_rope_store takes them. */
typedef struct cuda_rope {
    const float *cos_table, *sin_table, *q_norm, *k_norm;
    float eps;
} cuda_rope;

/* Floats of one split's partial result (max, sum, head_dim values, padding). */
size_t cuda_attention_partial_floats(int head_dim);
/* What cuda_attention needs when it splits the keys: room for max_parts
 * partials (of a query head and token each), and max_counters counters,
 * zeroed before the first launch and left zeroed by each, with which the
 * last block of a (KV head, token) merges the splits itself (one launch
 * less; NULL or too few for a pass: a launch of its own merges). */
typedef struct cuda_attention_scratch {
    float *partials;
    size_t max_parts;
    unsigned *counters;
    size_t max_counters;
    /* 8 or 16: the splits merge inside thread block clusters of that many
     * blocks instead (cuda_attention_cluster_blocks; partials and counters
     * unused); 0: through global memory */
    int cluster;
} cuda_attention_scratch;
/* Counters a pass of n_tok tokens uses. */
#define CUDA_ATTENTION_COUNTERS(n_heads, n_tok) ((size_t)(n_heads) * (size_t)(n_tok))
/* Keys per split. */
#define CUDA_ATTENTION_SPLIT_KEYS 64
/* Allows the attention kernel the shared memory of the largest head
 * dimension (over 48 KB); once per process, before cuda_attention. */
cudaError_t cuda_attention_setup(void);
/* Blocks a cluster for merging this shape's splits on this GPU (16 or 8),
 * or 0 where clusters are not to be had (before compute capability 9.0,
 * or no GPC can hold one). After cuda_attention_setup. */
int cuda_attention_cluster_blocks(const cuda_attention_shape *a);

/* out = softmax(q K^T / sqrt(d) + mask) V, split along the keys when the
 * context is long (scratch: cuda_attention_scratch). With pos_dev the
 * position is read on the GPU and the launch covers contexts up to
 * max_span keys (splits past the real context do nothing); the results
 * are those of the launch sized for the real context, bit for bit.
 * frag not NULL: out also as the float16 fragments a matmul reads (as
 * cuda_to_fragments(out, n_tok, n_heads * head_dim, NULL, ...) makes them,
 * but for the padding tokens; n_heads * head_dim a multiple of 64). */
cudaError_t cuda_attention(const cuda_attention_shape *a, const float *q, int n_tok, int pos0,
                           const int *pos_dev, int max_span, const cuda_kv *k_cache,
                           const cuda_kv *v_cache, float *out, const cuda_attention_scratch *scratch,
                           void *frag, cudaStream_t s);

/* cuda_rope_store and then cuda_attention in one launch, for a decode
 * step or a verification (where cuda_rope_attention_fits): the
 * attention's blocks normalize and rotate their query heads and the
 * pass's keys themselves (k and v as the q/k/v projection left them), one
 * kernel boundary less. The same results bit for bit (out, frag and the
 * cache), but q is left as it was. */
#define CUDA_ROPE_ATTENTION_MAX_TOKENS 32
bool cuda_rope_attention_fits(const cuda_attention_shape *a, int n_tok, int pos0, const int *pos_dev,
                              int max_span, const cuda_attention_scratch *scratch);
cudaError_t cuda_rope_attention(const cuda_attention_shape *a, const cuda_rope *rope, const float *q,
                                const float *k, const float *v, int n_tok, int pos0, const int *pos_dev,
                                int max_span, cuda_kv *k_cache, cuda_kv *v_cache, float *out,
                                const cuda_attention_scratch *scratch, void *frag, cudaStream_t s);

/* Attention of a prefill pass on the tensor cores (flash_attention.cu):
 * what cuda_attention computes for a direct pass (no pos_dev, no splits),
 * with q, k, v and the probabilities rounded to float16, so about 1e-3 of
 * max|v| apart. Passes this size are never graphs or verifications.
 * Takes head dimensions 16, 32, 64 and 128 (cuda_flash_attention_fits). */
#define CUDA_FLASH_MIN_TOKENS 64
bool cuda_flash_attention_fits(const cuda_attention_shape *a);
cudaError_t cuda_flash_attention(const cuda_attention_shape *a, const float *q, int n_tok,
                                 int pos0, const cuda_kv *k_cache, const cuda_kv *v_cache, float *out,
                                 void *frag, cudaStream_t s);

/* For each of n rows of logits (stride floats apart): ids[r] = the argmax
 * over the first n_valid (the lowest index on ties; -1 when one is NaN or
 * +infinity, or all are -infinity) and, top not NULL, top[r] = 1 / sum of
 * exp(l - max). ids and top are device memory. scratch: device memory of
 * cuda_argmax_scratch_bytes(max_n, the most n_valid) bytes, zeroed before
 * its first use (each launch leaves it so); n <= max_n. */
size_t cuda_argmax_scratch_bytes(int max_n, int max_valid);
cudaError_t cuda_argmax(const float *logits, int n, int stride, int n_valid, int32_t *ids,
                        float *top, void *scratch, int max_n, cudaStream_t s);

/* After the argmax of a queued pass (ids and, not NULL, top: n_out of
 * each, device memory): appends them to kept_ids (and kept_top) at
 * *count, advancing it, and readies the token buffer (tokens[0] the
 * position, tokens[1] the first token) for a next pass fed on the GPU:
 * the last id, at the position after this pass's n_tok tokens (its
 * position from *pos_dev, or pos0 where pos_dev is NULL). A -1 (logits
 * not finite) feeds token 0, a valid row; the host undoes what follows. */
cudaError_t cuda_keep_argmax(const int32_t *ids, const float *top, int n_out, int32_t *kept_ids,
                             float *kept_top, int *count, int32_t *tokens, const int *pos_dev,
                             int pos0, int n_tok, cudaStream_t s);

/* ---- around a library GEMM, for prefill (gemm_kernels.cu, cuda_gemm.h) */

/* Rows row0 .. row0 + n_rows - 1 of m (row0 and the end within whole
 * tiles) as row-major float16 [n_rows][n_kb * 64], each value the float16
 * the matmul kernel multiplies (padding columns included). */
cudaError_t cuda_dequantize_rows(const cuda_matrix *m, int row0, int n_rows, void *out,
                                 cudaStream_t s);

/* x = the fragments of n_tok tokens as row-major float16 [n_tok][cols],
 * cols a multiple of 64 (the padded width of the fragments). */
cudaError_t cuda_fragments_to_rows(const void *frag, int n_tok, int cols, void *x, cudaStream_t s);

/* The matmul's epilogue over results computed elsewhere, for rows row0 ..
 * row0 + n_rows - 1 of the output: v = gate[t][r] + bias; with up, v =
 * silu(v) * (up[t][r] + up_bias); y[t][row] = (accumulate ? y + : ) alpha *
 * v, and frag_out (not NULL) the float16 fragments of y's rows, as
 * cuda_swiglu_fragments writes them. gate and up are [n_tok][ld]. */
typedef struct cuda_epilogue {
    const float *gate, *up;
    int ld, n_tok, row0, n_rows;
    const float *bias, *up_bias;
    float *y;
    int y_stride;         /* floats per token in y, and the rows of frag_out */
    int accumulate;
    float alpha;
    void *frag_out;
} cuda_epilogue;
cudaError_t cuda_matmul_epilogue(const cuda_epilogue *e, cudaStream_t s);

/* Copies bytes device to device reps times; for the bandwidth probe. */
cudaError_t cuda_copy_repeat(void *dst, const void *src, size_t bytes, int reps, cudaStream_t s);

#if defined(ALM_CUDA_PROBES) && ALM_CUDA_PROBES
/* A diagnostic build's records of the probed kernels (probes.cuh): the
 * newest up to max, oldest first, 9 words each; returns how many. */
size_t cuda_attention_probes(unsigned long long *out, size_t max);
size_t cuda_matmul_probes(unsigned long long *out, size_t max);
#endif

#ifdef __cplusplus
}
#endif
#endif
