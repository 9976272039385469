/* The globals of host_cuda.h and the CUDA runtime calls the kernels' sources
 * and their checks make, on host memory. */
#include "host_cuda.h"

host_block *host_cur_block;
host_block *host_cluster;
host_thread *host_threads;
int host_cur;
ucontext_t host_scheduler;
uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
host_mma host_mma_bufs[32][2];
unsigned host_mma_calls[1024];

/* makecontext passes ints: the start record's address in two halves */
void host_thread_entry(unsigned lo, unsigned hi)
{
    const host_start *start = (const host_start *)(((uintptr_t)hi << 32) | lo);
    start->fn(start->arg);
    host_threads[host_cur].done = true;
}

extern "C" {
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
cudaError_t cudaGetDevice(int *device) { *device = 0; return cudaSuccess; }
/* an H100 or H200: the split of a matrix over warps depends on the SM count */
cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr, int) { *value = 132; return cudaSuccess; }
/* exact sizes, so that AddressSanitizer sees a read past the end */
cudaError_t cudaMalloc(void **p, size_t bytes)
{
    *p = malloc(bytes ? bytes : 1);
    if (!*p)
        return cudaErrorMemoryAllocation;
    memset(*p, 0xab, bytes);   /* not zero: the GPU's memory is not either */
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) { free(p); return cudaSuccess; }
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind) { memcpy(dst, src, n); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind, cudaStream_t)
{
    memcpy(dst, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemset(void *dst, int v, size_t n) { memset(dst, v, n); return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "error"; }
}
