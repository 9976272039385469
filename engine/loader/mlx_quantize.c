/* MLX affine quantization of matrix rows; see mlx_quantize.h for the
 * rule. Every step is float32 as in MLX, so that the packed values match
 * bit for bit. */
#include "loader/mlx_quantize.h"

#include <math.h>
#include <string.h>

/* A float32 as the storage dtype would hold it (round to nearest even),
 * written at out[i], and the value read back. */
static float store_as(alm_dtype dtype, void *out, size_t i, float x)
{
    switch (dtype) {
    case ALM_DTYPE_BF16: {
        uint16_t h = alm_f32_to_bf16(x);
        memcpy((uint16_t *)out + i, &h, sizeof h);
        return alm_bf16_to_f32(h);
    }
    case ALM_DTYPE_F16: {
        _Float16 h = (_Float16)x;
        memcpy((uint16_t *)out + i, &h, sizeof h);
        return (float)h;
    }
    default:
        memcpy((float *)out + i, &x, sizeof x);
        return x;
    }
}

/* The rounded value without storing it. */
static float rounded_as(alm_dtype dtype, float x)
{
    uint16_t scratch[2];
    return store_as(dtype, scratch, 0, x);
}

bool mlx_quantize_rows(const void *w, alm_dtype dtype, int cols, int bits, int group_size,
                       size_t row0, size_t row1, uint32_t *q, void *scales, void *biases)
{
    const float n_bins = (float)((1 << bits) - 1);
    const int per_word = 32 / bits, groups = cols / group_size;
    const size_t words = (size_t)cols / (size_t)per_word;
    float x[128];   /* one group; group sizes are at most 128 */
    bool finite = true;
    for (size_t r = row0; r < row1; r++) {
        for (int g = 0; g < groups; g++) {
            size_t first = r * (size_t)cols + (size_t)g * (size_t)group_size;
            float lo = INFINITY, hi = -INFINITY;
            for (int j = 0; j < group_size; j++) {
                x[j] = alm_load_as_f32(dtype, w, first + (size_t)j);
                finite = finite && isfinite(x[j]);
                lo = fminf(lo, x[j]);
                hi = fmaxf(hi, x[j]);
            }
            float scale = fmaxf((hi - lo) / n_bins, 1e-7f);
            size_t gi = r * (size_t)groups + (size_t)g;
            /* q is computed with the scale and bias as stored */
            float s = scales ? store_as(dtype, scales, gi, scale) : rounded_as(dtype, scale);
            float b = biases ? store_as(dtype, biases, gi, lo) : rounded_as(dtype, lo);
            if (!q)
                continue;
            uint32_t *out = q + r * words + (size_t)g * (size_t)(group_size / per_word);
            for (int j = 0; j < group_size; j += per_word) {
                uint32_t word = 0;
                for (int k = 0; k < per_word; k++) {
                    float v = rintf((x[j + k] - b) / s);
                    v = fminf(fmaxf(v, 0.0f), n_bins);
                    word |= (uint32_t)v << (k * bits);
                }
                out[j / per_word] = word;
            }
        }
    }
    return finite;
}
