/* CUDA runtime errors as the engine's errors. */
#ifndef ALM_CUDA_ERROR_H
#define ALM_CUDA_ERROR_H

#include <cuda_runtime_api.h>

#include "core/error.h"

/* Sets err to "CUDA: what: description (name)" and returns -ENOMEM for an
 * allocation failure, else -EIO. Also clears the runtime's last error,
 * which a later launch's check would otherwise report as its own. */
int cuda_fail(alm_error *err, cudaError_t e, const char *what);

#endif
