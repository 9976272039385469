/* Greedy decoding's choice made on the GPU: per row of logits, the argmax
 * and its softmax probability, so that 8 bytes per token cross the bus
 * instead of the whole vocabulary's logits. */
#include <math.h>
#include <stdint.h>

#include "cuda_kernels.h"
#include "launch_overlap.cuh"

#define ARGMAX_THREADS 1024

/* (value, index) pairs: the larger value wins, the lower index on ties. */
static __device__ inline void better(float &v, int &i, float v2, int i2)
{
    if (v2 > v || (v2 == v && i2 < i)) {
        v = v2;
        i = i2;
    }
}

static __global__ void argmax_rows(const float *logits, int stride, int n_valid, int32_t *ids,
                                   float *top)
{
    __shared__ float vals[ARGMAX_THREADS / 32];
    __shared__ int idxs[ARGMAX_THREADS / 32];
    __shared__ float sums[ARGMAX_THREADS / 32];
    let_next_kernel_start();
    wait_for_previous_kernels();
    const float *l = logits + (size_t)blockIdx.x * (size_t)stride;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    float best = -INFINITY;
    int idx = INT32_MAX;
    int bad = 0;
    for (int v = tid; v < n_valid; v += ARGMAX_THREADS) {
        float x = l[v];
        if (isnan(x) || x == INFINITY)
            bad = 1;
        else if (x > best) {   /* v grows: the first of equal values stays */
            best = x;
            idx = v;
        }
    }
    for (int o = 16; o > 0; o >>= 1)
        better(best, idx, __shfl_xor_sync(0xffffffffu, best, o), __shfl_xor_sync(0xffffffffu, idx, o));
    if (lane == 0) {
        vals[warp] = best;
        idxs[warp] = idx;
    }
    bad = __syncthreads_or(bad);
    best = vals[0];
    idx = idxs[0];
    for (int w = 1; w < ARGMAX_THREADS / 32; w++)
        better(best, idx, vals[w], idxs[w]);
    const bool none = bad || idx == INT32_MAX;   /* all -infinity */
    if (top && !none) {
        float sum = 0.0f;
        for (int v = tid; v < n_valid; v += ARGMAX_THREADS)
            sum += expf(l[v] - best);
        for (int o = 16; o > 0; o >>= 1)
            sum += __shfl_xor_sync(0xffffffffu, sum, o);
        if (lane == 0)
            sums[warp] = sum;
        __syncthreads();
        if (tid == 0) {
            float total = 0.0f;
            for (int w = 0; w < ARGMAX_THREADS / 32; w++)
                total += sums[w];
            top[blockIdx.x] = 1.0f / total;
        }
    }
    if (tid == 0) {
        ids[blockIdx.x] = none ? -1 : idx;
        if (top && none)
            top[blockIdx.x] = 0.0f;
    }
}

cudaError_t cuda_argmax(const float *logits, int n, int stride, int n_valid, int32_t *ids,
                        float *top, cudaStream_t s)
{
    if (n > 0)
        return launch_overlapped(argmax_rows, dim3((unsigned)n), dim3(ARGMAX_THREADS), 0, s, logits,
                                 stride, n_valid, ids, top);
    return cudaGetLastError();
}
