/* Kernels that start before the previous one has finished (programmatic
 * dependent launch, compute capability 9.0+).
 *
 * Why: a decode step is about eight kernels a layer, and between two of
 * them the GPU drains the first (its last blocks run on a few SMs) and then
 * ramps up the second: microseconds a kernel in which the memory is idle.
 * Launched with launch_overlapped, a kernel's blocks may start once every
 * block of the one before has called let_next_kernel_start (at their
 * beginning); they do what needs nothing from it (the matmul starts
 * copying its weights) and then wait in wait_for_previous_kernels until it
 * has finished and its writes are visible.
 *
 * The rule for a kernel launched this way: no access to memory that an
 * earlier kernel writes or reads before wait_for_previous_kernels, and
 * every thread waits (a kernel that finishes implies that all before it
 * have, which the one after relies on). Kernels launched the plain way
 * wait for the whole previous kernel as always. On older GPUs both calls
 * are no-ops and the launch is a plain one. */
#ifndef ALM_CUDA_LAUNCH_OVERLAP_CUH
#define ALM_CUDA_LAUNCH_OVERLAP_CUH

#include <cuda_runtime.h>

/* 0 at build time (meson -Dnvcc_flags=-DALM_CUDA_OVERLAP=0) launches
 * every kernel the plain way, to measure what the overlap gains. */
#ifndef ALM_CUDA_OVERLAP
#define ALM_CUDA_OVERLAP 1
#endif

static __device__ __forceinline__ void wait_for_previous_kernels()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

static __device__ __forceinline__ void let_next_kernel_start()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

static inline bool overlap_supported()
{
    int device = 0, major = 0;
    return ALM_CUDA_OVERLAP && cudaGetDevice(&device) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
           major >= 9;
}

/* The launch attribute that groups blocks in clusters of `blocks` along x
 * (compute capability 9.0+). */
static inline cudaLaunchAttribute cluster_attribute(unsigned blocks)
{
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = blocks;
    attr.val.clusterDim.y = 1;
    attr.val.clusterDim.z = 1;
    return attr;
}

/* cluster > 1: blocks in clusters of that many along x (the caller checks
 * that the GPU can place them). */
template <typename... Params, typename... Args>
static cudaError_t launch_overlapped_clusters(void (*kernel)(Params...), dim3 grid, dim3 block,
                                              size_t smem, cudaStream_t s, unsigned cluster,
                                              Args... args)
{
    cudaLaunchAttribute attrs[2];
    unsigned n = 0;
    if (cluster > 1)
        attrs[n++] = cluster_attribute(cluster);
    if (overlap_supported()) {
        attrs[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attrs[n].val.programmaticStreamSerializationAllowed = 1;
        n++;
    }
    cudaLaunchConfig_t config = {};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = smem;
    config.stream = s;
    config.attrs = attrs;
    config.numAttrs = n;
    return cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...);
}

template <typename... Params, typename... Args>
static cudaError_t launch_overlapped(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                                     cudaStream_t s, Args... args)
{
    return launch_overlapped_clusters(kernel, grid, block, smem, s, 1u, args...);
}

#endif
