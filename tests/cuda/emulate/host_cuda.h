/* The part of CUDA that engine/cuda/matmul.cu and attention.cu use, on the
 * host, so that their kernels can be checked where there is no GPU
 * (tests/cuda/emulate/).
 *
 * Each CUDA thread of a block is a coroutine (ucontext) on one OS thread;
 * __syncthreads, cluster.sync() and the warp-collective operations yield
 * to a scheduler that releases a barrier once every live member waits at
 * it. The blocks of a thread block cluster run together (their barrier and
 * each other's shared memory); other blocks one after the other. The
 * emulation is exact about what the kernels compute (float16 rounding of
 * each fma, the mma.m16n8k16 fragment layouts of the PTX manual) and
 * simple about when: cp.async copies at once, so it checks indexing and
 * arithmetic, not the asynchrony of the pipeline. */
#ifndef ALM_TESTS_HOST_CUDA_H
#define ALM_TESTS_HOST_CUDA_H

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <ucontext.h>
#include <vector>

#include <cuda_runtime_api.h>

/* cuda_runtime_api.h defines these for nvcc's front end */
#undef __device__
#undef __host__
#undef __global__
#undef __forceinline__
#undef __shared__
#undef __align__
#undef __launch_bounds__
#define __device__
#define __host__
#define __global__
#define __forceinline__ inline
#define __shared__ static   /* blocks run one at a time, but for a cluster's (see host_launch) */
#define __align__(n) alignas(n)
#define __launch_bounds__(...)
#define __grid_constant__

using std::max;
using std::min;

/* ---------------------------------------------------------------- float16 */

struct __half { _Float16 v; };
struct __half2 { _Float16 x, y; };   /* x in the low 16 bits, as on the GPU */
struct __nv_bfloat16 { unsigned short bits; };

static inline __half __float2half_rn(float f) { return __half{ (_Float16)f }; }
static inline float __half2float(__half h) { return (float)h.v; }
static inline float __bfloat162float(__nv_bfloat16 b)
{
    uint32_t u = (uint32_t)b.bits << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline unsigned short __half_as_ushort(__half h)
{
    unsigned short u;
    memcpy(&u, &h, 2);
    return u;
}
static inline __half __ushort_as_half(unsigned short u)
{
    __half h;
    memcpy(&h, &u, 2);
    return h;
}
static inline __half2 __floats2half2_rn(float a, float b) { return __half2{ (_Float16)a, (_Float16)b }; }
static inline __half2 __low2half2(__half2 h) { return __half2{ h.x, h.x }; }
static inline __half2 __high2half2(__half2 h) { return __half2{ h.y, h.y }; }
static inline float __low2float(__half2 h) { return (float)h.x; }
static inline float __high2float(__half2 h) { return (float)h.y; }
static inline float2 __half22float2(__half2 h);   /* after make_float2 */
/* one rounding, as the GPU's fma: the product of two halves and the sum are
 * exact in double but for exponents far apart, which the kernels never have */
static inline _Float16 fma16(_Float16 a, _Float16 b, _Float16 c)
{
    return (_Float16)((double)a * (double)b + (double)c);
}
static inline __half2 __hfma2(__half2 a, __half2 b, __half2 c)
{
    return __half2{ fma16(a.x, b.x, c.x), fma16(a.y, b.y, c.y) };
}
static inline uint2 make_uint2(unsigned a, unsigned b)
{
    uint2 r;
    r.x = a;
    r.y = b;
    return r;
}
template <class T> static inline T __ldg(const T *p) { return *p; }
template <class T> static inline T __ldcg(const T *p) { return *p; }
static inline float2 make_float2(float x, float y)
{
    float2 r;
    r.x = x;
    r.y = y;
    return r;
}
static inline float2 __half22float2(__half2 h) { return make_float2((float)h.x, (float)h.y); }
static inline float4 make_float4(float x, float y, float z, float w)
{
    float4 r;
    r.x = x;
    r.y = y;
    r.z = z;
    r.w = w;
    return r;
}
/* one rounding each, as the GPU's (the host compiles without contraction) */
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
/* blocks that are not of one cluster run one after the other: every
 * earlier block's writes are seen, and an atomic is a plain update */
static inline unsigned atomicAdd(unsigned *p, unsigned v)
{
    const unsigned old = *p;
    *p = old + v;
    return old;
}
static inline void __threadfence() {}

/* ---------------------------------------------------------------- threads */

struct host_thread {
    ucontext_t ctx;
    int waiting;   /* 0 runnable, 1 at a warp barrier, 2 at __syncthreads */
    bool done;
    unsigned votes;   /* __syncthreads_or calls so far */
};

struct host_shuffle { float v[32]; };

struct host_block {
    uint8_t *smem;          /* dynamic shared memory */
    host_shuffle *shfl;     /* per warp: the values of a shuffle */
    int vote[2];            /* __syncthreads_or, alternate calls */
};

extern host_block *host_cur_block;
extern host_block *host_cluster;   /* the blocks of the running cluster, by rank */
extern host_thread *host_threads;
extern int host_cur;
extern ucontext_t host_scheduler;
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

static inline int host_lane() { return (int)(threadIdx.x & 31); }
static inline int host_warp() { return (int)(threadIdx.x >> 5); }

static inline void host_wait(int kind)
{
    host_threads[host_cur].waiting = kind;
    swapcontext(&host_threads[host_cur].ctx, &host_scheduler);
}

static inline void __syncthreads() { host_wait(2); }
static inline void __syncwarp(unsigned = 0xffffffffu) { host_wait(1); }

static inline float host_shuffle_from(float v, int from_lane)
{
    float *s = host_cur_block->shfl[host_warp()].v;
    s[host_lane()] = v;
    host_wait(1);
    float r = s[from_lane & 31];
    host_wait(1);
    return r;
}
static inline float __shfl_xor_sync(unsigned, float v, int lane_mask)
{
    return host_shuffle_from(v, host_lane() ^ lane_mask);
}
static inline float __shfl_sync(unsigned, float v, int src_lane) { return host_shuffle_from(v, src_lane); }
static inline int __shfl_xor_sync(unsigned, int v, int lane_mask)
{
    float f, r;
    memcpy(&f, &v, sizeof f);
    r = host_shuffle_from(f, host_lane() ^ lane_mask);
    int i;
    memcpy(&i, &r, sizeof i);
    return i;
}
static inline float __int_as_float(int i)
{
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}

/* The block's OR of pred. Alternate calls use alternate words: the one
 * this call does not use was last read before this call's first barrier,
 * and is next written after its second, so it is cleared in between. */
static inline int __syncthreads_or(int pred)
{
    const unsigned p = host_threads[host_cur].votes++ & 1u;
    host_cur_block->vote[p] |= pred != 0;
    __syncthreads();
    const int r = host_cur_block->vote[p];
    host_cur_block->vote[p ^ 1u] = 0;
    __syncthreads();
    return r;
}

/* cooperative_groups' thread block cluster: its barrier, and the address
 * of a variable of this block's shared memory in another block's */
namespace cooperative_groups {
struct cluster_group {
    void sync() const { host_wait(3); }
    template <class T> T *map_shared_rank(T *p, unsigned rank) const
    {
        return (T *)(host_cluster[rank].smem + ((const uint8_t *)p - host_cur_block->smem));
    }
};
static inline cluster_group this_cluster() { return cluster_group{}; }
}

/* ---------------------------------------------------------------- PTX */

static inline _Float16 low_half(uint32_t u) { __half2 h; memcpy(&h, &u, 4); return h.x; }
static inline _Float16 high_half(uint32_t u) { __half2 h; memcpy(&h, &u, 4); return h.y; }

/* mma.m16n8k16.row.col.f32.f16.f16.f32 over the warp: lane 4g + t holds
 * A[g][2t..2t+1], A[g+8][2t..], A[g][2t+8..], A[g+8][2t+8..]; B[2t..2t+1][g],
 * B[2t+8..2t+9][g]; D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]. One
 * barrier a call: the operands go to the buffer of the call's parity, the
 * first lane released computes the product for all, and no lane can reach
 * the call after next (the same buffer) before every lane has read. */
struct host_mma { uint32_t a[32][4]; uint2 b[32]; float c[32][4]; bool done; };
extern host_mma host_mma_bufs[32][2];
extern unsigned host_mma_calls[1024];

static inline void mma_16816(float c[4], const uint32_t a[4], uint2 b)
{
    const int L = host_lane();
    host_mma &s = host_mma_bufs[host_warp()][host_mma_calls[threadIdx.x]++ & 1];
    for (int i = 0; i < 4; i++) {
        s.a[L][i] = a[i];
        s.c[L][i] = c[i];
    }
    s.b[L] = b;
    s.done = false;
    host_wait(1);
    if (!s.done) {
        float A[16][16], B[16][8], C[16][8];
        for (int l = 0; l < 32; l++) {
            const int g = l >> 2, t = l & 3;
            A[g][2 * t] = low_half(s.a[l][0]);         A[g][2 * t + 1] = high_half(s.a[l][0]);
            A[g + 8][2 * t] = low_half(s.a[l][1]);     A[g + 8][2 * t + 1] = high_half(s.a[l][1]);
            A[g][2 * t + 8] = low_half(s.a[l][2]);     A[g][2 * t + 9] = high_half(s.a[l][2]);
            A[g + 8][2 * t + 8] = low_half(s.a[l][3]); A[g + 8][2 * t + 9] = high_half(s.a[l][3]);
            B[2 * t][g] = low_half(s.b[l].x);          B[2 * t + 1][g] = high_half(s.b[l].x);
            B[2 * t + 8][g] = low_half(s.b[l].y);      B[2 * t + 9][g] = high_half(s.b[l].y);
            C[g][2 * t] = s.c[l][0];                   C[g][2 * t + 1] = s.c[l][1];
            C[g + 8][2 * t] = s.c[l][2];               C[g + 8][2 * t + 1] = s.c[l][3];
        }
        for (int m = 0; m < 16; m++)
            for (int n = 0; n < 8; n++) {
                double acc = C[m][n];
                for (int k = 0; k < 16; k++)
                    acc += (double)A[m][k] * (double)B[k][n];
                C[m][n] = (float)acc;
            }
        for (int l = 0; l < 32; l++) {
            const int g = l >> 2, t = l & 3;
            s.c[l][0] = C[g][2 * t];
            s.c[l][1] = C[g][2 * t + 1];
            s.c[l][2] = C[g + 8][2 * t];
            s.c[l][3] = C[g + 8][2 * t + 1];
        }
        s.done = true;
    }
    for (int i = 0; i < 4; i++)
        c[i] = s.c[L][i];
}

template <uint32_t MASK, uint32_t BITS_SET>
static inline uint32_t mask_set(uint32_t w) { return (w & MASK) | BITS_SET; }

static inline uint32_t __cvta_generic_to_shared(const void *p)
{
    return (uint32_t)((const uint8_t *)p - host_cur_block->smem);
}
static inline void cp_async(uint32_t dst, const void *src, int bytes, bool)
{
    memcpy(host_cur_block->smem + dst, src, (size_t)bytes);
}
static inline void cp_async_commit() {}
template <int N> static inline void cp_async_wait() {}
/* attention.cu's */
static inline void copy16_async(void *dst, const void *src) { memcpy(dst, src, 16); }

template <class T> static cudaError_t cudaFuncSetAttribute(T *, cudaFuncAttribute, int)
{
    return cudaSuccess;
}
/* every cluster fits: the checks take the largest, 16 */
template <class T> static cudaError_t cudaOccupancyMaxActiveClusters(int *clusters, T *, const cudaLaunchConfig_t *)
{
    *clusters = 1;
    return cudaSuccess;
}

/* ---------------------------------------------------------------- launch */

struct host_start { void (*fn)(void *); void *arg; };
void host_thread_entry(unsigned lo, unsigned hi);
template <class F> static void host_call(void *f) { (*(F *)f)(); }

/* Runs body (a kernel call) as grid x block threads: the blocks of a
 * cluster of `cluster` (along x) together, the clusters one at a time.
 * The blocks of a cluster would share a static __shared__ variable and
 * mma_16816's buffers: kernels launched in clusters must use neither (the
 * attention's use dynamic shared memory and no tensor cores). */
template <class F>
static void host_launch(dim3 grid, dim3 block, size_t smem, F body, unsigned cluster = 1)
{
    const unsigned n = block.x, warps = (n + 31) / 32;
    if (n > 1024 || block.y != 1 || block.z != 1) {
        fprintf(stderr, "host_launch: blocks of up to 1024 threads in x only\n");
        abort();
    }
    if (cluster < 1 || grid.x % cluster) {
        fprintf(stderr, "host_launch: a grid of %u blocks along x in clusters of %u\n", grid.x, cluster);
        abort();
    }
    const unsigned all = n * cluster;
    std::vector<std::vector<uint8_t>> shared(cluster, std::vector<uint8_t>(smem + 16));
    std::vector<host_thread> th(all);
    /* not zeroed: the pages a coroutine never touches are never mapped */
    const size_t stack_bytes = 128 * 1024;
    std::unique_ptr<char[]> stacks(new char[all * stack_bytes]);
    std::vector<std::vector<host_shuffle>> shfl(cluster, std::vector<host_shuffle>(warps));
    std::vector<host_block> blocks(cluster);
    host_start start = { host_call<F>, &body };
    uintptr_t arg = (uintptr_t)&start;
    /* the coroutine of thread t of the cluster's block r is r * n + t */
    auto enter = [&](unsigned bx0, unsigned by, unsigned bz, unsigned c) {
        const unsigned r = c / n, t = c % n;
        host_cur_block = &blocks[r];
        host_threads = th.data() + (size_t)r * n;
        host_cur = (int)t;
        blockIdx = uint3{ bx0 + r, by, bz };
        threadIdx = uint3{ t, 0, 0 };
    };
    auto all_wait = [&](unsigned lo, unsigned hi, int kind) {   /* and release them */
        unsigned waiting = 0, live = 0;
        for (unsigned c = lo; c < hi; c++)
            if (!th[c].done) {
                live++;
                waiting += th[c].waiting == kind;
            }
        if (!live || waiting != live)
            return false;
        for (unsigned c = lo; c < hi; c++)
            th[c].waiting = 0;
        return true;
    };
    blockDim = block;
    gridDim = grid;
    host_cluster = blocks.data();
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx0 = 0; bx0 < grid.x; bx0 += cluster) {
                for (unsigned r = 0; r < cluster; r++) {
                    blocks[r] = host_block{ shared[r].data(), shfl[r].data() };
                    memset(shared[r].data(), 0xcd, shared[r].size());   /* stale, as on the GPU */
                }
                memset(host_mma_calls, 0, sizeof host_mma_calls);
                for (unsigned c = 0; c < all; c++) {
                    th[c] = host_thread{};
                    getcontext(&th[c].ctx);
                    th[c].ctx.uc_stack.ss_sp = stacks.get() + (size_t)c * stack_bytes;
                    th[c].ctx.uc_stack.ss_size = stack_bytes;
                    th[c].ctx.uc_link = &host_scheduler;
                    makecontext(&th[c].ctx, (void (*)())host_thread_entry, 2,
                                (unsigned)(arg & 0xffffffffu), (unsigned)(arg >> 32));
                }
                for (;;) {
                    bool progress = false, all_done = true;
                    for (unsigned c = 0; c < all; c++) {
                        if (th[c].done || th[c].waiting)
                            continue;
                        all_done = false;
                        enter(bx0, by, bz, c);
                        swapcontext(&host_scheduler, &th[c].ctx);
                        progress = true;
                    }
                    for (unsigned c = 0; c < all && all_done; c++)
                        all_done = th[c].done;
                    if (all_done)
                        break;
                    for (unsigned r = 0; r < cluster; r++) {
                        for (unsigned w = 0; w < warps; w++)   /* warp barriers */
                            progress |= all_wait(r * n + 32 * w, r * n + std::min(n, 32 * w + 32), 1);
                        progress |= all_wait(r * n, r * n + n, 2);   /* __syncthreads */
                    }
                    progress |= all_wait(0, all, 3);   /* cluster.sync() */
                    if (!progress) {
                        fprintf(stderr, "host_launch: every thread waits at a barrier the others never reach\n");
                        abort();
                    }
                }
            }
}

/* launch_overlap.cuh's, for kernels that run one after the other anyway */
static inline void wait_for_previous_kernels() {}
static inline void let_next_kernel_start() {}

template <typename... Params, typename... Args>
static cudaError_t launch_overlapped_clusters(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                                              cudaStream_t, unsigned cluster, Args... args)
{
    host_launch(grid, block, smem, [&] { kernel(static_cast<Params>(args)...); }, cluster);
    return cudaSuccess;
}

template <typename... Params, typename... Args>
static cudaError_t launch_overlapped(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                                     cudaStream_t s, Args... args)
{
    return launch_overlapped_clusters(kernel, grid, block, smem, s, 1u, args...);
}

static inline cudaLaunchAttribute cluster_attribute(unsigned blocks)
{
    cudaLaunchAttribute attr = {};
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = blocks;
    attr.val.clusterDim.y = 1;
    attr.val.clusterDim.z = 1;
    return attr;
}

#endif
