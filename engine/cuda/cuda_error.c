/* CUDA runtime errors as the engine's errors (cuda_error.h). */
#include <errno.h>

#include "cuda/cuda_error.h"

int cuda_fail(alm_error *err, cudaError_t e, const char *what)
{
    (void)cudaGetLastError();
    int code = e == cudaErrorMemoryAllocation ? -ENOMEM : -EIO;
    return alm_error_set(err, code, "CUDA: %s: %s (%s)", what, cudaGetErrorString(e),
                         cudaGetErrorName(e));
}
