/* Greedy decoding's choice made on the GPU: per row of logits, the argmax
 * and its softmax probability, so that 8 bytes per token cross the bus
 * instead of the whole vocabulary's logits. */
#include <math.h>
#include <stdint.h>

#include "cuda_kernels.h"
#include "launch_overlap.cuh"

/* A row is cut into chunks of ARGMAX_THREADS x ARGMAX_PER_THREAD values, a
 * block a chunk: each thread loads its values at once (one trip to L2 for
 * all of them; a single block a row, looping, waited a trip per few
 * values), the block reduces them, and the last block of the row to
 * finish (a counter, as the attention's merge) reduces the blocks'
 * results in their order. 128256 logits: 32 blocks. */
#define ARGMAX_THREADS 256
#define ARGMAX_PER_THREAD 16
#define ARGMAX_CHUNK (ARGMAX_THREADS * ARGMAX_PER_THREAD)

/* (value, index) pairs: the larger value wins, the lower index on ties. */
static __device__ inline void better(float &v, int &i, float v2, int i2)
{
    if (v2 > v || (v2 == v && i2 < i)) {
        v = v2;
        i = i2;
    }
}

/* What a block leaves for the row's last block. */
struct __align__(16) argmax_part {
    float max;   /* of the chunk's values (-infinity: none above it) */
    int index;   /* the first where it is (INT32_MAX: none) */
    float sum;   /* of exp(l - max) over the chunk (top wanted) */
    int bad;     /* a NaN or +infinity in the chunk */
};

/* A part another block wrote (past L1): one 16-byte load. */
static __device__ inline argmax_part load_part(const argmax_part *p)
{
    const int4 v = __ldcg(reinterpret_cast<const int4 *>(p));
    return argmax_part{ __int_as_float(v.x), v.y, __int_as_float(v.z), v.w };
}

/* The block's (value, index) and bad flag, every thread gets them. */
static __device__ inline void block_best(float &v, int &i, int &bad, float *vals, int *idxs)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
    if (lane == 0) {
        vals[warp] = v;
        idxs[warp] = i;
    }
    bad = __syncthreads_or(bad);
    v = vals[0];
    i = idxs[0];
    for (int w = 1; w < ARGMAX_THREADS / 32; w++)
        better(v, i, vals[w], idxs[w]);
}

/* The block's sum of x, every thread gets it (the warps' sums in order). */
static __device__ inline float block_sum(float x, float *sums)
{
    for (int o = 16; o > 0; o >>= 1)
        x += __shfl_xor_sync(0xffffffffu, x, o);
    __syncthreads();   /* sums may be read still (an earlier call) */
    if ((threadIdx.x & 31) == 0)
        sums[threadIdx.x >> 5] = x;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < ARGMAX_THREADS / 32; w++)
        total += sums[w];
    return total;
}

static __global__ void __launch_bounds__(ARGMAX_THREADS)
argmax_rows(const float *logits, int stride, int n_valid, argmax_part *parts, unsigned *counters,
            int32_t *ids, float *top)
{
    __shared__ float vals[ARGMAX_THREADS / 32];
    __shared__ int idxs[ARGMAX_THREADS / 32];
    __shared__ float sums[ARGMAX_THREADS / 32];
    __shared__ bool last;
    let_next_kernel_start();
    wait_for_previous_kernels();
    const int row = blockIdx.y, chunk = blockIdx.x, chunks = gridDim.x, tid = threadIdx.x;
    const float *l = logits + (size_t)row * (size_t)stride;
    const int base = chunk * ARGMAX_CHUNK + tid;
    float x[ARGMAX_PER_THREAD];
#pragma unroll
    for (int j = 0; j < ARGMAX_PER_THREAD; j++)
        x[j] = base + j * ARGMAX_THREADS < n_valid ? l[base + j * ARGMAX_THREADS] : -INFINITY;
    float best = -INFINITY;
    int idx = INT32_MAX, bad = 0;
#pragma unroll
    for (int j = 0; j < ARGMAX_PER_THREAD; j++) {   /* the index grows: the first of equal values stays */
        if (isnan(x[j]) || x[j] == INFINITY)
            bad = 1;
        else if (x[j] > best) {
            best = x[j];
            idx = base + j * ARGMAX_THREADS;
        }
    }
    block_best(best, idx, bad, vals, idxs);
    float sum = 0.0f;
    if (top && !bad && best != -INFINITY) {
#pragma unroll
        for (int j = 0; j < ARGMAX_PER_THREAD; j++)
            sum += expf(x[j] - best);   /* -infinity past the row: 0 */
        sum = block_sum(sum, sums);
    }
    argmax_part *mine = parts + (size_t)row * (size_t)chunks;
    if (tid == 0)
        mine[chunk] = argmax_part{ best, idx, sum, bad };
    if (chunks > 1) {
        __threadfence();
        __syncthreads();
        if (tid == 0) {
            last = atomicAdd(counters + row, 1u) == (unsigned)chunks - 1u;
            if (last)
                counters[row] = 0u;   /* for the next launch */
        }
        __syncthreads();
        if (!last)
            return;
        __threadfence();
    } else {
        __syncthreads();   /* vals and idxs are read still; mine[0] is written */
    }
    /* the row's last block: the chunks' results, chunk by chunk in a
     * thread's share and then the block's order */
    best = -INFINITY;
    idx = INT32_MAX;
    bad = 0;
    for (int c = tid; c < chunks; c += ARGMAX_THREADS) {
        const argmax_part p = load_part(mine + c);
        bad |= p.bad;
        better(best, idx, p.max, p.index);
    }
    block_best(best, idx, bad, vals, idxs);
    const bool none = bad || idx == INT32_MAX;   /* all -infinity */
    float total = 0.0f;
    if (top && !none) {
        float s = 0.0f;
        for (int c = tid; c < chunks; c += ARGMAX_THREADS) {
            const argmax_part p = load_part(mine + c);
            if (p.max != -INFINITY)
                s += p.sum * expf(p.max - best);
        }
        total = block_sum(s, sums);
    }
    if (tid == 0) {
        ids[row] = none ? -1 : idx;
        if (top)
            top[row] = none ? 0.0f : 1.0f / total;
    }
}

static int chunks_of(int n_valid) { return n_valid > 0 ? (n_valid + ARGMAX_CHUNK - 1) / ARGMAX_CHUNK : 1; }

/* The rows' counters, rounded up so that the parts after them are aligned
 * for their 16-byte loads. */
static size_t counter_bytes(int max_n) { return ((size_t)max_n * sizeof(unsigned) + 15u) & ~(size_t)15u; }

size_t cuda_argmax_scratch_bytes(int max_n, int max_valid)
{
    return counter_bytes(max_n) + (size_t)max_n * (size_t)chunks_of(max_valid) * sizeof(argmax_part);
}

cudaError_t cuda_argmax(const float *logits, int n, int stride, int n_valid, int32_t *ids, float *top,
                        void *scratch, int max_n, cudaStream_t s)
{
    if (n <= 0)
        return cudaGetLastError();
    if (n > max_n)
        return cudaErrorInvalidValue;
    /* the rows' counters, then the chunks' results (a launch's n rows of
     * its chunks fit in what max_n rows of the most chunks take) */
    unsigned *counters = (unsigned *)scratch;
    argmax_part *parts = (argmax_part *)((uint8_t *)scratch + counter_bytes(max_n));
    return launch_overlapped(argmax_rows, dim3((unsigned)chunks_of(n_valid), (unsigned)n), dim3(ARGMAX_THREADS), 0, s,
                             logits, stride, n_valid, parts, counters, ids, top);
}

/* One thread: a handful of integers, after the argmax. */
static __global__ void keep_argmax(const int32_t *ids, const float *top, int n_out, int32_t *kept_ids,
                                   float *kept_top, int *count, int32_t *tokens, const int *pos_dev,
                                   int pos0, int n_tok)
{
    let_next_kernel_start();
    wait_for_previous_kernels();
    const int at = *count;
    for (int j = 0; j < n_out; j++) {
        kept_ids[at + j] = ids[j];
        if (top)
            kept_top[at + j] = top[j];
    }
    *count = at + n_out;
    const int last = ids[n_out - 1];
    tokens[0] = (pos_dev ? *pos_dev : pos0) + n_tok;
    tokens[1] = last < 0 ? 0 : last;
}

cudaError_t cuda_keep_argmax(const int32_t *ids, const float *top, int n_out, int32_t *kept_ids,
                             float *kept_top, int *count, int32_t *tokens, const int *pos_dev,
                             int pos0, int n_tok, cudaStream_t s)
{
    if (n_out < 1)
        return cudaErrorInvalidValue;
    return launch_overlapped(keep_argmax, dim3(1), dim3(1), 0, s, ids, top, n_out, kept_ids, kept_top,
                             count, tokens, pos_dev, pos0, n_tok);
}
