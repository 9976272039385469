/* The element-wise kernels for AVX-512 F (vector_ops_simd.h), and the table. */
#include "cpu/attention_internal.h"
#include "cpu/vector_ops.h"
#include "cpu/vector_ops_simd.h"

const cpu_vector_ops cpu_vector_ops_avx512 = {
    .isa = CPU_ISA_AVX512,
    .exp = simd_exp_row,
    .silu_mul = simd_silu_mul_row,
    .rmsnorm = simd_rmsnorm_row,
    .add = simd_add_row,
    .attention_block = cpu_attention_block_avx512,
};
