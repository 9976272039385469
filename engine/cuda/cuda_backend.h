/* The CUDA backend: backend.h's operations on an NVIDIA GPU (compute
 * capability 8.0 or later). Built when the toolkit is found (meson option
 * `cuda`); ALM_HAVE_CUDA is then defined. */
#ifndef ALM_CUDA_BACKEND_H
#define ALM_CUDA_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#include "backend/backend.h"

/* Opens GPU 0. Errors say why there is none: no device or driver, or a
 * compute capability below 8.0. */
int cuda_backend_new(backend **out, alm_error *err);

/* Device-to-device copy bandwidth of GPU 0 in GB/s, counting the bytes read
 * and written (a copy of bytes moves 2 * bytes), the best of reps timed
 * copies after a warm-up. */
int cuda_copy_bandwidth(size_t bytes, int reps, double *gb_per_s, alm_error *err);

/* Whether passes of many tokens (prefill) go through cuBLAS (cuda_gemm.h);
 * when not, err says why: built without its header, the library cannot be
 * opened, or ALM_CUDA_GEMM=0. The matmul kernel then does them, slower. */
bool cuda_prefill_gemm(alm_error *err);

#endif
