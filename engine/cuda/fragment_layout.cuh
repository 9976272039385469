/* Where x[tok][c] sits in the float16 activation fragments the matmul
 * reads (cuda_kernels.h): 8-token tiles, 16-column steps, 32 lanes, 4
 * halves each (columns 2t, 2t+1, 2t+8, 2t+9 of token g for lane 4g + t).
 * Shared by the kernels that write fragments: the conversion of a row
 * (matmul.cu), attention (its output feeds the o projection) and the
 * SwiGLU matmul (its output feeds the down projection). */
#ifndef ALM_CUDA_FRAGMENT_LAYOUT_CUH
#define ALM_CUDA_FRAGMENT_LAYOUT_CUH

#include <stddef.h>

static __device__ inline size_t fragment_index(int tok, int c, int n_steps)
{
    int j = tok >> 3, g = tok & 7, step = c >> 4, c16 = c & 15;
    int lane = g * 4 + ((c16 & 7) >> 1);
    int h = ((c16 >> 3) << 1) | (c16 & 1);
    return (((size_t)j * (size_t)n_steps + (size_t)step) * 32u + (size_t)lane) * 4u + (size_t)h;
}

#endif
