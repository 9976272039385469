#include "core/dtype.h"

#include <errno.h>

static const struct {
    const char *name;
    size_t size;
} dtype_table[] = {
    [ALM_DTYPE_F32] = { "F32", 4 },
    [ALM_DTYPE_F16] = { "F16", 2 },
    [ALM_DTYPE_BF16] = { "BF16", 2 },
    [ALM_DTYPE_U32] = { "U32", 4 },
};

size_t alm_dtype_size(alm_dtype t) { return dtype_table[t].size; }
const char *alm_dtype_name(alm_dtype t) { return dtype_table[t].name; }

int alm_dtype_parse(const char *name, alm_dtype *out)
{
    for (size_t i = 0; i < sizeof dtype_table / sizeof dtype_table[0]; i++) {
        if (strcmp(name, dtype_table[i].name) == 0) {
            *out = (alm_dtype)i;
            return 0;
        }
    }
    return -EINVAL;
}
