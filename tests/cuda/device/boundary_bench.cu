/* What a kernel boundary costs in a decode step, and what a hand-off by
 * flags would save (a measurement for the GPU machine, built there:
 * nvcc -O3 -gencode arch=compute_90a,code=sm_90a boundary_bench.cu).
 *
 * A graph of KERNELS kernels, each of `blocks` blocks that read what the
 * kernel before wrote (so that each depends on the one before), replayed;
 * the time per kernel for three ways of chaining them:
 *   plain  the stream's order: a kernel starts once the one before is done
 *   pdl    programmatic dependent launch (what the engine does): blocks start
 *          early and wait in griddepcontrol.wait for the kernel before
 *   flags  programmatic launch, but blocks wait for a counter that each
 *          block of the kernel before raises (release) once its output is
 *          written, and call griddepcontrol.wait only before they exit
 * Prints one JSON line per (mode, blocks); "errors" counts values a block
 * read that the kernel before had not written (must be 0). */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define KERNELS 256
#define THREADS 256

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));    \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

enum { PLAIN, PDL, FLAGS };

/* Kernel i: block b reads slot (b + 1) % blocks of kernel i - 1's output
 * (value i - 1 + replay) and writes its own slot. */
__global__ void link(int mode, int i, const int *replay, const int *in, int *out, unsigned *counters,
                     unsigned *errors)
{
    if (mode != PLAIN)
        asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
    const int blocks = (int)gridDim.x, b = (int)blockIdx.x;
    if (mode == PDL)
        asm volatile("griddepcontrol.wait;\n" ::: "memory");
    if (mode == FLAGS && i > 0) {
        if (threadIdx.x == 0) {
            unsigned seen;
            do
                asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(seen) : "l"(counters + i - 1) : "memory");
            while (seen < (unsigned)blocks);
        }
        __syncthreads();
    }
    const int r = *(volatile const int *)replay;
    if (threadIdx.x == 0) {
        if (i > 0) {
            const int v = *(volatile const int *)(in + (b + 1) % blocks);
            if (v != i - 1 + r)
                atomicAdd(errors, 1u);
        }
        out[b] = i + r;
    }
    if (mode == FLAGS) {
        __syncthreads();
        if (threadIdx.x == 0)
            asm volatile("red.release.gpu.global.add.u32 [%0], 1;\n" ::"l"(counters + i) : "memory");
        asm volatile("griddepcontrol.wait;\n" ::: "memory");
    }
}

__global__ void next_replay(int *replay) { ++*replay; }

static int measure(int mode, int blocks, cudaStream_t s)
{
    int *buf, *replay;
    unsigned *counters, *errors;
    CHECK(cudaMalloc(&buf, sizeof(int) * 2 * 1024));
    CHECK(cudaMalloc(&replay, sizeof(int)));
    CHECK(cudaMalloc(&counters, sizeof(unsigned) * KERNELS));
    CHECK(cudaMalloc(&errors, sizeof(unsigned)));
    CHECK(cudaMemset(replay, 0, sizeof(int)));
    CHECK(cudaMemset(errors, 0, sizeof(unsigned)));
    CHECK(cudaMemset(buf, 0, sizeof(int) * 2 * 1024));

    cudaGraph_t graph;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    next_replay<<<1, 1, 0, s>>>(replay);
    CHECK(cudaMemsetAsync(counters, 0, sizeof(unsigned) * KERNELS, s));
    for (int i = 0; i < KERNELS; i++) {
        cudaLaunchAttribute attr;
        attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr.val.programmaticStreamSerializationAllowed = 1;
        cudaLaunchConfig_t config = {};
        config.gridDim = dim3((unsigned)blocks);
        config.blockDim = dim3(THREADS);
        config.stream = s;
        config.attrs = &attr;
        config.numAttrs = mode == PLAIN || i == 0 ? 0 : 1;
        /* the previous replay's last value is i - 1 + r at i = 0: read nothing */
        CHECK(cudaLaunchKernelEx(&config, link, mode, i, (const int *)replay,
                                 (const int *)(buf + ((i + 1) % 2) * 1024), buf + (i % 2) * 1024,
                                 counters, errors));
    }
    CHECK(cudaStreamEndCapture(s, &graph));
    cudaGraphExec_t exec;
    CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int w = 0; w < 5; w++)
        CHECK(cudaGraphLaunch(exec, s));
    CHECK(cudaStreamSynchronize(s));
    const int reps = 31;
    float ms[31];
    cudaEvent_t a, b;
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    for (int r = 0; r < reps; r++) {
        CHECK(cudaEventRecord(a, s));
        CHECK(cudaGraphLaunch(exec, s));
        CHECK(cudaEventRecord(b, s));
        CHECK(cudaEventSynchronize(b));
        CHECK(cudaEventElapsedTime(&ms[r], a, b));
    }
    for (int i = 1; i < reps; i++)   /* insertion sort for the median */
        for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) {
            float t = ms[j];
            ms[j] = ms[j - 1];
            ms[j - 1] = t;
        }
    unsigned host_errors = 0;
    CHECK(cudaMemcpy(&host_errors, errors, sizeof host_errors, cudaMemcpyDeviceToHost));
    static const char *names[] = { "plain", "pdl", "flags" };
    printf("{\"mode\": \"%s\", \"blocks\": %d, \"kernels\": %d, \"us_per_kernel_median\": %.3f, "
           "\"us_per_kernel_min\": %.3f, \"errors\": %u}\n",
           names[mode], blocks, KERNELS, ms[reps / 2] * 1000.0f / KERNELS, ms[0] * 1000.0f / KERNELS,
           host_errors);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaFree(buf);
    cudaFree(replay);
    cudaFree(counters);
    cudaFree(errors);
    return 0;
}

int main(void)
{
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    const int sizes[] = { 8, 132, 264, 512 };
    for (int k = 0; k < 4; k++)
        for (int mode = PLAIN; mode <= FLAGS; mode++)
            if (measure(mode, sizes[k], s))
                return 1;
    return 0;
}
