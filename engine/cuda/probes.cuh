/* Timestamps inside the decode kernels, for a diagnostic build only
 * (meson -Dnvcc_flags=-DALM_CUDA_PROBES=1 -Dc_args=-DALM_CUDA_PROBES=1;
 * tests/cuda/device/stage.sh --variant probes=...): each block of a probed
 * kernel notes the GPU's global timer (the clock of the kernel trace) at
 * its phases, and the block's record goes into a ring in device memory that
 * cuda-bench writes out (ALM_PROBE_FILE). Why: the kernel trace shows when
 * kernels start and end, not where a latency-bound kernel spends its
 * microseconds (waiting for the kernel before, a trip to L2, a barrier).
 *
 * A record: word 0 the kind, blockIdx.x, blockIdx.y and the SM; words 1-8
 * the timer at marks 0-7 (0: not reached; 7: the end). Taking a ring slot is an atomic
 * at the block's start, before griddepcontrol.wait, so that the chain
 * after the wait is not lengthened by more than the timer reads and the
 * record's stores. Without ALM_CUDA_PROBES every macro is empty. */
#ifndef ALM_CUDA_PROBES_CUH
#define ALM_CUDA_PROBES_CUH

#ifndef ALM_CUDA_PROBES
#define ALM_CUDA_PROBES 0
#endif

#if ALM_CUDA_PROBES
#define PROBE_RING (1u << 20)
#define PROBE_MARKS 8

/* One ring a source file (without relocatable device code a __device__
 * variable is its file's): PROBES_DEFINE in the file, then its host-side
 * reader. */
#define PROBES_DEFINE(reader)                                                                          \
    static __device__ unsigned long long probe_ring[PROBE_RING][PROBE_MARKS + 1];                      \
    static __device__ unsigned probe_count;                                                            \
    static __shared__ unsigned long long probe_t[PROBE_MARKS];                                         \
    static __shared__ unsigned probe_slot;                                                             \
    size_t reader(unsigned long long *out, size_t max)                                                 \
    {                                                                                                  \
        unsigned count = 0;                                                                            \
        if (cudaDeviceSynchronize() != cudaSuccess ||                                                  \
            cudaMemcpyFromSymbol(&count, probe_count, sizeof count) != cudaSuccess)                    \
            return 0;                                                                                  \
        size_t n = count < PROBE_RING ? count : PROBE_RING;                                            \
        if (n > max)                                                                                   \
            n = max;                                                                                   \
        /* the newest n records, oldest first */                                                       \
        const size_t rec = (PROBE_MARKS + 1) * sizeof(unsigned long long);                             \
        for (size_t i = 0; i < n; i++) {                                                               \
            const size_t at = ((size_t)count - n + i) % PROBE_RING;                                    \
            if (cudaMemcpyFromSymbol(out + i * (PROBE_MARKS + 1), probe_ring, rec, at * rec) !=        \
                cudaSuccess)                                                                           \
                return i;                                                                              \
        }                                                                                              \
        return n;                                                                                      \
    }

static __device__ __forceinline__ unsigned long long probe_timer()
{
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

static __device__ __forceinline__ unsigned probe_sm()
{
    unsigned s;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(s));
    return s;
}

/* at the kernel's start: a slot, and mark 0 */
#define PROBE_BEGIN(on)                                                                                \
    do {                                                                                               \
        if ((on) && threadIdx.x == 0) {                                                                \
            probe_slot = atomicAdd(&probe_count, 1u) % PROBE_RING;                                     \
            for (int m_ = 0; m_ < PROBE_MARKS; m_++)                                                   \
                probe_t[m_] = 0;                                                                       \
            probe_t[0] = probe_timer();                                                                \
        }                                                                                              \
    } while (0)
#define PROBE_MARK(on, i)                                                                              \
    do {                                                                                               \
        if ((on) && threadIdx.x == 0)                                                                  \
            probe_t[i] = probe_timer();                                                                \
    } while (0)
/* at the kernel's end, thread 0 (mark 7 and the record) */
#define PROBE_END(on, kind)                                                                            \
    do {                                                                                               \
        if ((on) && threadIdx.x == 0) {                                                                \
            probe_t[PROBE_MARKS - 1] = probe_timer();                                                  \
            unsigned long long *r_ = probe_ring[probe_slot];                                           \
            r_[0] = (unsigned long long)(kind) << 48 | (unsigned long long)(blockIdx.x & 0xffffu) << 32 | \
                    (unsigned long long)(blockIdx.y & 0xffffu) << 16 | probe_sm();                     \
            for (int m_ = 0; m_ < PROBE_MARKS; m_++)                                                   \
                r_[m_ + 1] = probe_t[m_];                                                              \
        }                                                                                              \
    } while (0)
#else
#define PROBES_DEFINE(reader)
#define PROBE_BEGIN(on) do { } while (0)
#define PROBE_MARK(on, i) do { } while (0)
#define PROBE_END(on, kind) do { } while (0)
#endif

/* the kinds of record */
enum { PROBE_ATTENTION = 1, PROBE_O_PROJ = 2, PROBE_FRAGMENTS = 3, PROBE_SWIGLU = 4, PROBE_DOWN = 5 };

#endif
