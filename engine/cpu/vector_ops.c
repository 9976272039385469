/* Run-time choice of the element-wise / attention kernel table. */
#include "cpu/vector_ops.h"

#include <stdbool.h>

/* Defined in the ISA files; only handed out where the CPU runs them. */
extern const cpu_vector_ops cpu_vector_ops_scalar;
extern const cpu_vector_ops cpu_vector_ops_avx2;
extern const cpu_vector_ops cpu_vector_ops_avx512;

static bool cpu_runs(cpu_isa isa)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    switch (isa) {
    case CPU_ISA_SCALAR:
        return true;
    case CPU_ISA_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CPU_ISA_AVX512:
        return cpu_runs(CPU_ISA_AVX2) && __builtin_cpu_supports("avx512f");
    }
    return false;
#else
    return isa == CPU_ISA_SCALAR;
#endif
}

const cpu_vector_ops *cpu_vector_ops_for(cpu_isa isa)
{
    if (!cpu_runs(isa))
        return NULL;
    switch (isa) {
    case CPU_ISA_SCALAR: return &cpu_vector_ops_scalar;
#if defined(__x86_64__)
    case CPU_ISA_AVX2: return &cpu_vector_ops_avx2;
    case CPU_ISA_AVX512: return &cpu_vector_ops_avx512;
#else
    default: break;
#endif
    }
    return NULL;
}
