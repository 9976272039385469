/* CPU matrix kernels: run-time choice of the instruction set, validation of
 * weights, and the portable entry points that forward to the chosen ISA's
 * table (matmul_scalar.c, matmul_avx2.c, matmul_avx512.c). */
#include "cpu/matmul.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/matmul_internal.h"

static const char *const isa_names[] = {
    [CPU_ISA_SCALAR] = "scalar",
    [CPU_ISA_AVX2] = "avx2",
    [CPU_ISA_AVX512] = "avx512",
};

const char *cpu_isa_name(cpu_isa isa)
{
    if ((unsigned)isa < sizeof isa_names / sizeof isa_names[0])
        return isa_names[isa];
    return "unknown";
}

static bool cpu_has_isa(cpu_isa isa)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    switch (isa) {
    case CPU_ISA_SCALAR:
        return true;
    case CPU_ISA_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    case CPU_ISA_AVX512:
        /* The quantized kernels are built on VNNI byte dot products; a CPU
         * with AVX-512 but without VNNI (Skylake-SP) uses the AVX2 ones. */
        return cpu_has_isa(CPU_ISA_AVX2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
    }
    return false;
#else
    return isa == CPU_ISA_SCALAR;
#endif
}

const cpu_kernels *cpu_kernels_for(cpu_isa isa)
{
    if (!cpu_has_isa(isa))
        return NULL;
    switch (isa) {
    case CPU_ISA_SCALAR: return &cpu_kernels_scalar;
#if defined(__x86_64__)
    case CPU_ISA_AVX2: return &cpu_kernels_avx2;
    case CPU_ISA_AVX512: return &cpu_kernels_avx512;
#else
    default: break;
#endif
    }
    return NULL;
}

const cpu_kernels *cpu_kernels_for_activation(cpu_isa isa, int bits)
{
    const cpu_kernels *k = cpu_kernels_for(isa);
    if (!k || k->activation_bits == bits)
        return k;
#if defined(__x86_64__)
    if (isa == CPU_ISA_AVX512 && bits == 8)
        return &cpu_kernels_avx512_act8;
#endif
    return NULL;
}

int cpu_kernels_activation_bits(const cpu_kernels *k) { return k->activation_bits; }

/* The variant of k for ALM_ACTIVATION_BITS, when set and k has it. */
static const cpu_kernels *with_activation_bits(const cpu_kernels *k)
{
    const char *want = getenv("ALM_ACTIVATION_BITS");
    if (!want || !*want)
        return k;
    char *end;
    long bits = strtol(want, &end, 10);
    if (*end || bits <= 0 || bits > 32)
        return k;
    const cpu_kernels *v = cpu_kernels_for_activation(k->isa, (int)bits);
    return v ? v : k;
}

static const cpu_kernels *select_isa(void)
{
    const char *want = getenv("ALM_CPU_ISA");
    if (want && *want) {
        for (unsigned i = 0; i < sizeof isa_names / sizeof isa_names[0]; i++) {
            if (strcmp(want, isa_names[i]) == 0) {
                const cpu_kernels *k = cpu_kernels_for((cpu_isa)i);
                if (k)
                    return k;
                /* Named but not supported here: fall through to the best
                 * one rather than run code the CPU lacks. */
                break;
            }
        }
    }
    static const cpu_isa best_first[] = { CPU_ISA_AVX512, CPU_ISA_AVX2, CPU_ISA_SCALAR };
    for (unsigned i = 0; i < sizeof best_first / sizeof best_first[0]; i++) {
        const cpu_kernels *k = cpu_kernels_for(best_first[i]);
        if (k)
            return k;
    }
    return &cpu_kernels_scalar;
}

const cpu_kernels *cpu_kernels_select(void) { return with_activation_bits(select_isa()); }

cpu_isa cpu_kernels_isa(const cpu_kernels *k) { return k->isa; }

__attribute__((format(printf, 3, 4)))
static int refuse(char *why, size_t why_len, const char *fmt, ...)
{
    if (why && why_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_len, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

static bool is_float_dtype(alm_dtype t)
{
    return t == ALM_DTYPE_F32 || t == ALM_DTYPE_F16 || t == ALM_DTYPE_BF16;
}

int cpu_matmul_check(const alm_weight *w, char *why, size_t why_len)
{
    if (!w)
        return refuse(why, why_len, "no weight");
    if (w->rows <= 0 || w->cols <= 0)
        return refuse(why, why_len, "shape %dx%d is empty", w->rows, w->cols);
    if (!w->data)
        return refuse(why, why_len, "no data");
    if (w->bits == 0) {
        if (!is_float_dtype(w->dtype))
            return refuse(why, why_len, "dense weights must be F32, F16 or BF16, not %s",
                          alm_dtype_name(w->dtype));
        return 0;
    }
    if (w->bits != 2 && w->bits != 4 && w->bits != 8)
        return refuse(why, why_len, "%d-bit quantization is not supported (2, 4 or 8)",
                      w->bits);
    if (w->dtype != ALM_DTYPE_U32)
        return refuse(why, why_len, "quantized data must be U32, not %s",
                      alm_dtype_name(w->dtype));
    if (w->group_size != 32 && w->group_size != 64 && w->group_size != 128)
        return refuse(why, why_len, "group size %d is not supported (32, 64 or 128)",
                      w->group_size);
    if (w->cols % w->group_size)
        return refuse(why, why_len, "%d columns are not a multiple of the group size %d",
                      w->cols, w->group_size);
    if (!is_float_dtype(w->scale_dtype))
        return refuse(why, why_len, "scales and biases must be F32, F16 or BF16, not %s",
                      alm_dtype_name(w->scale_dtype));
    if (!w->scales || !w->biases)
        return refuse(why, why_len, "no scales or biases");
    return 0;
}

size_t cpu_matmul_scratch_size(const cpu_kernels *k, const alm_weight *w, int n_tok)
{
    if (n_tok < 1 || cpu_matmul_check(w, NULL, 0) < 0)
        return 0;
    return k->scratch_size(w, n_tok);
}

void cpu_matmul_prepare(const cpu_kernels *k, const alm_weight *w,
                        const float *x, int n_tok, size_t x_stride, void *scratch)
{
    if (n_tok < 1 || cpu_matmul_check(w, NULL, 0) < 0)
        return;
    k->prepare(w, x, n_tok, x_stride, scratch);
}

void cpu_matmul_rows(const cpu_kernels *k, const alm_weight *w,
                     const void *scratch, const float *x, int n_tok,
                     size_t x_stride, float *y, size_t y_stride, int r0, int r1)
{
    if (n_tok < 1 || !w)
        return;
    if (r0 < 0)
        r0 = 0;
    if (r1 > w->rows)
        r1 = w->rows;
    if (r0 >= r1)
        return;
    if (cpu_matmul_check(w, NULL, 0) < 0) {
        /* An unusable weight gives zeros, never a read out of bounds; the
         * loader reports the reason through cpu_matmul_check. */
        for (int t = 0; t < n_tok; t++)
            memset(y + (size_t)t * y_stride + r0, 0, sizeof(float) * (size_t)(r1 - r0));
        return;
    }
    k->rows(w, scratch, x, n_tok, x_stride, y, y_stride, r0, r1);
}

size_t cpu_matmul_pack_size(const cpu_kernels *k, const alm_weight *w)
{
    if (!k->pack_size || cpu_matmul_check(w, NULL, 0) < 0)
        return 0;
    return k->pack_size(w);
}

int cpu_matmul_pack(const cpu_kernels *k, const alm_weight *w, void *dst, size_t bytes)
{
    size_t need = cpu_matmul_pack_size(k, w);
    if (!need || !dst || bytes < need || ((uintptr_t)dst & 63))
        return -EINVAL;
    return k->pack(w, dst, bytes) < 0 ? -EINVAL : 0;
}

void cpu_weight_row(const alm_weight *w, int r, float *out)
{
    if (cpu_matmul_check(w, NULL, 0) < 0 || r < 0 || r >= w->rows) {
        if (w && w->cols > 0)
            memset(out, 0, sizeof(float) * (size_t)w->cols);
        return;
    }
    size_t cols = (size_t)w->cols;
    if (w->bits == 0) {
        for (size_t c = 0; c < cols; c++)
            out[c] = alm_load_as_f32(w->dtype, w->data, (size_t)r * cols + c);
        return;
    }
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * alm_weight_row_bytes(w);
    size_t groups = (size_t)quant_groups(w);
    for (size_t g = 0; g < groups; g++) {
        float s = quant_param(w, w->scales, (size_t)r * groups + g);
        float b = quant_param(w, w->biases, (size_t)r * groups + g);
        for (int i = 0; i < w->group_size; i++) {
            int c = (int)g * w->group_size + i;
            /* Two roundings, as the reference computes scales * q + biases. */
            float sq = s * (float)quant_value(row, w->bits, c);
            out[c] = sq + b;
        }
    }
}
