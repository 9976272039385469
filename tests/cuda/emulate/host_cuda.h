/* The part of CUDA that engine/cuda/matmul.cu uses, on the host, so that
 * its kernels can be checked where there is no GPU (tests/cuda/emulate/).
 *
 * Each CUDA thread of a block is a coroutine (ucontext) on one OS thread;
 * __syncthreads and the warp-collective operations yield to a scheduler
 * that releases a barrier once every live member waits at it. The
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
#define __shared__ static   /* blocks run one at a time */
#define __align__(n) alignas(n)
#define __launch_bounds__(...)

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

/* ---------------------------------------------------------------- threads */

struct host_thread {
    ucontext_t ctx;
    int waiting;   /* 0 runnable, 1 at a warp barrier, 2 at __syncthreads */
    bool done;
};

struct host_shuffle { float v[32]; };

struct host_block {
    uint8_t *smem;          /* dynamic shared memory */
    host_shuffle *shfl;     /* per warp: the values of a shuffle */
};

extern host_block *host_cur_block;
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

static inline float __shfl_xor_sync(unsigned, float v, int lane_mask)
{
    float *s = host_cur_block->shfl[host_warp()].v;
    s[host_lane()] = v;
    host_wait(1);
    float r = s[host_lane() ^ lane_mask];
    host_wait(1);
    return r;
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

template <class T> static cudaError_t cudaFuncSetAttribute(T *, cudaFuncAttribute, int)
{
    return cudaSuccess;
}

/* ---------------------------------------------------------------- launch */

struct host_start { void (*fn)(void *); void *arg; };
void host_thread_entry(unsigned lo, unsigned hi);
template <class F> static void host_call(void *f) { (*(F *)f)(); }

/* Runs body (a kernel call) as grid x block threads, one block at a time. */
template <class F>
static void host_launch(dim3 grid, dim3 block, size_t smem, F body)
{
    const unsigned n = block.x, warps = (n + 31) / 32;
    if (n > 1024 || block.y != 1 || block.z != 1) {
        fprintf(stderr, "host_launch: blocks of up to 1024 threads in x only\n");
        abort();
    }
    std::vector<uint8_t> shared(smem + 16);
    std::vector<host_thread> th(n);
    std::vector<std::vector<char>> stacks(n, std::vector<char>(128 * 1024));
    std::vector<host_shuffle> shfl(warps);
    host_start start = { host_call<F>, &body };
    uintptr_t arg = (uintptr_t)&start;
    for (unsigned by = 0; by < grid.y; by++)
        for (unsigned bx = 0; bx < grid.x; bx++) {
            host_block b = { shared.data(), shfl.data() };
            memset(shared.data(), 0xcd, shared.size());   /* stale, as on the GPU */
            memset(host_mma_calls, 0, sizeof host_mma_calls);
            host_cur_block = &b;
            host_threads = th.data();
            blockIdx = uint3{ bx, by, 0 };
            blockDim = block;
            gridDim = grid;
            for (unsigned t = 0; t < n; t++) {
                th[t] = host_thread{};
                getcontext(&th[t].ctx);
                th[t].ctx.uc_stack.ss_sp = stacks[t].data();
                th[t].ctx.uc_stack.ss_size = stacks[t].size();
                th[t].ctx.uc_link = &host_scheduler;
                makecontext(&th[t].ctx, (void (*)())host_thread_entry, 2,
                            (unsigned)(arg & 0xffffffffu), (unsigned)(arg >> 32));
            }
            for (;;) {
                bool progress = false, all_done = true;
                for (unsigned t = 0; t < n; t++) {
                    if (th[t].done || th[t].waiting)
                        continue;
                    all_done = false;
                    host_cur = (int)t;
                    threadIdx = uint3{ t, 0, 0 };
                    swapcontext(&host_scheduler, &th[t].ctx);
                    progress = true;
                }
                for (unsigned t = 0; t < n && all_done; t++)
                    all_done = th[t].done;
                if (all_done)
                    break;
                for (unsigned w = 0; w < warps; w++) {   /* warp barriers */
                    unsigned lo = 32 * w, hi = std::min(n, lo + 32), waiting = 0, live = 0;
                    for (unsigned t = lo; t < hi; t++)
                        if (!th[t].done) {
                            live++;
                            waiting += th[t].waiting == 1;
                        }
                    if (live && waiting == live) {
                        for (unsigned t = lo; t < hi; t++)
                            th[t].waiting = 0;
                        progress = true;
                    }
                }
                unsigned waiting = 0, live = 0;   /* __syncthreads */
                for (unsigned t = 0; t < n; t++)
                    if (!th[t].done) {
                        live++;
                        waiting += th[t].waiting == 2;
                    }
                if (live && waiting == live) {
                    for (unsigned t = 0; t < n; t++)
                        th[t].waiting = 0;
                    progress = true;
                }
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
static cudaError_t launch_overlapped(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                                     cudaStream_t, Args... args)
{
    host_launch(grid, block, smem, [&] { kernel(static_cast<Params>(args)...); });
    return cudaSuccess;
}

#endif
