/* Matmuls of many tokens (prefill) as float16 GEMMs in cuBLAS.
 *
 * Why: the matmul kernel (matmul.cu) reads packed weights once per 32
 * tokens and dequantizes them on the CUDA cores, which is right for
 * decoding and verifying (bound by reading the weights) but leaves a
 * prefill of hundreds of tokens far below the tensor cores' rate (its cost
 * is FLOPs). Here a slice of a weight's rows is dequantized once into
 * row-major float16 (cuda_dequantize_rows: the very values the kernel
 * multiplies), multiplied with cublasGemmEx (float32 accumulation), and the
 * kernel's epilogue (bias, SwiGLU, alpha, accumulation, fragments) applied
 * to the float32 results. The two paths differ only in the order of the
 * float32 sums.
 *
 * cuBLAS is opened at run time (dlopen), so that a build links only the
 * CUDA runtime and still runs where the library is missing: the matmul
 * kernel then does prefill too (cuda_gemm_new says why). */
#ifndef ALM_CUDA_GEMM_H
#define ALM_CUDA_GEMM_H

#include <stddef.h>

#include <cuda_runtime_api.h>

#include "core/error.h"
#include "cuda/cuda_kernels.h"

/* Passes of at least this many tokens go through the GEMM. Below it the
 * matmul kernel, which reads the packed weights once per 32 tokens, is
 * cheaper than writing and reading a float16 copy of them. */
#define CUDA_GEMM_MIN_TOKENS 64

typedef struct cuda_gemm cuda_gemm;

/* A GEMM context on stream s; its buffers grow with the passes it serves.
 * -ENOENT: cuBLAS could not be opened (err says which library and why),
 * which leaves prefill to the matmul kernel; other errors are cuBLAS's. */
int cuda_gemm_new(cudaStream_t s, cuda_gemm **out, alm_error *err);
void cuda_gemm_free(cuda_gemm *g);

/* 0 when cuBLAS can be opened; else cuda_gemm_new's -ENOENT and message. */
int cuda_gemm_probe(alm_error *err);

/* cuda_matmul (up NULL) and cuda_swiglu_fragments (up and frag_out not
 * NULL) of cuda_kernels.h, with the same arguments and results. */
int cuda_gemm_matmul(cuda_gemm *g, const cuda_matrix *w, const cuda_matrix *up, const void *frag,
                     int n_tok, const float *bias, const float *up_bias, float *y, int y_stride,
                     int accumulate, float alpha, void *frag_out, alm_error *err);

/* cuda_matmul_many of cuda_kernels.h. */
int cuda_gemm_matmul_many(cuda_gemm *g, const cuda_matrix *const *w, int n_w, const void *frag,
                          int n_tok, const float *const *bias, float *const *y, alm_error *err);

#endif
