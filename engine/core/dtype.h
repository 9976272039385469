/* Element types of stored tensors and their conversions to float. */
#ifndef ALM_CORE_DTYPE_H
#define ALM_CORE_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum alm_dtype {
    ALM_DTYPE_F32,
    ALM_DTYPE_F16,
    ALM_DTYPE_BF16,
    ALM_DTYPE_U32,
} alm_dtype;

/* Size of one element in bytes. */
size_t alm_dtype_size(alm_dtype t);
/* safetensors spelling ("F32", "BF16", ...). */
const char *alm_dtype_name(alm_dtype t);
/* Parses the safetensors spelling; returns -EINVAL for an unknown one. */
int alm_dtype_parse(const char *name, alm_dtype *out);

static inline float alm_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float alm_f16_to_f32(uint16_t h)
{
    /* _Float16 is exact and fast where the compiler has it (F16C on x86). */
    _Float16 v;
    memcpy(&v, &h, sizeof v);
    return (float)v;
}

/* Round to nearest even, as PyTorch does. */
static inline uint16_t alm_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float alm_load_as_f32(alm_dtype t, const void *base, size_t i)
{
    switch (t) {
    case ALM_DTYPE_F32: return ((const float *)base)[i];
    case ALM_DTYPE_F16: return alm_f16_to_f32(((const uint16_t *)base)[i]);
    case ALM_DTYPE_BF16: return alm_bf16_to_f32(((const uint16_t *)base)[i]);
    default: return 0.0f;
    }
}

#endif
