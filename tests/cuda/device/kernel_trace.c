/* A timeline of every kernel a CUDA program runs, from the driver itself:
 * a library the CUDA driver loads into the program when the environment
 * names it (CUDA_INJECTION64_PATH, the way the NVIDIA profilers attach),
 * which asks CUPTI for an activity record per kernel (start and end on the
 * GPU's clock, grid, the graph node it came from) and writes them as CSV
 * when the program exits:
 *
 *   CUDA_INJECTION64_PATH=libalm-kernel-trace.so ALM_TRACE_FILE=trace.csv \
 *       cuda-bench llama3-8b 4
 *
 * Why: a decode step is a graph of ~260 kernels that overlap (programmatic
 * dependent launch), so the time of each piece inside the step, and the
 * idle time between pieces, is not what a kernel costs alone in a bench.
 * There is no Nsight Systems on the GPU machine; CUPTI is part of the
 * toolkit. tests/cuda/device/trace_summary.py reads the file.
 *
 * No engine code changes: the program runs as built, and the records are
 * taken off the GPU's timeline, not by instrumenting kernels. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cupti.h>

#define TRACE_BUFFER_BYTES (8u << 20)

static FILE *trace_out;

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records)
{
    *buffer = aligned_alloc(ACTIVITY_RECORD_ALIGNMENT, TRACE_BUFFER_BYTES);
    *size = *buffer ? TRACE_BUFFER_BYTES : 0;
    *max_records = 0;   /* as many as fit */
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size,
                                      size_t valid)
{
    (void)ctx;
    (void)stream;
    (void)size;
    CUpti_Activity *record = NULL;
    while (trace_out && cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
        if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL &&
            record->kind != CUPTI_ACTIVITY_KIND_KERNEL)
            continue;
        const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)record;
        fprintf(trace_out, "%u,%u,%llu,%llu,%llu,%d,%d,%d,%d,%d,%s\n", k->correlationId, k->graphId,
                (unsigned long long)k->graphNodeId, (unsigned long long)k->start,
                (unsigned long long)k->end, k->gridX, k->gridY, k->gridZ, k->blockX,
                k->dynamicSharedMemory, k->name ? k->name : "?");
    }
    size_t dropped = 0;
    if (cuptiActivityGetNumDroppedRecords(NULL, 0, &dropped) == CUPTI_SUCCESS && dropped)
        fprintf(stderr, "kernel-trace: %zu records dropped\n", dropped);
    free(buffer);
}

static void finish(void)
{
    cuptiActivityFlushAll(1);
    if (trace_out) {
        fclose(trace_out);
        trace_out = NULL;
    }
}

/* Called by the CUDA driver when it initializes (CUDA_INJECTION64_PATH). */
int InitializeInjection(void);
int InitializeInjection(void)
{
    const char *path = getenv("ALM_TRACE_FILE");
    trace_out = fopen(path && *path ? path : "kernel-trace.csv", "w");
    if (!trace_out) {
        perror("kernel-trace: opening the output");
        return 0;
    }
    fputs("correlation,graph,node,start_ns,end_ns,grid_x,grid_y,grid_z,block_x,dyn_smem,name\n",
          trace_out);
    CUptiResult r = cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed);
    if (r == CUPTI_SUCCESS)
        r = cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    if (r != CUPTI_SUCCESS) {
        const char *why = NULL;
        cuptiGetResultString(r, &why);
        fprintf(stderr, "kernel-trace: CUPTI: %s\n", why ? why : "error");
        fclose(trace_out);
        trace_out = NULL;
        return 0;
    }
    atexit(finish);
    return 1;
}
