/* The attention block kernel for AVX-512 F (attention_simd.h). */
#include "cpu/attention_simd.h"

void cpu_attention_block_avx512(const attention_args *a, const attention_block *b,
                                float *scratch)
{
    attention_block_simd(a, b, scratch);
}
