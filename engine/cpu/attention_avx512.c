/* The attention block kernel for AVX-512 F (attention_simd.h). */
#include "cpu/attention_simd.h"

void cpu_attention_block_avx512(const attention_args *a, const attention_block *b,
                                float *scratch)
{
    /* Head dimensions of 8 * odd (24, 40, ...) fit AVX2's vectors, not
     * ours; every AVX-512 CPU runs AVX2. */
    if (a->head_dim % VLEN && a->head_dim % 8 == 0) {
        cpu_attention_block_avx2(a, b, scratch);
        return;
    }
    attention_block_simd(a, b, scratch);
}
