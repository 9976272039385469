/* Rotary embedding tables, computed the way Hugging Face transformers does
 * (inv_freq in float32, angle = float(position) * inv_freq in float32), so
 * that positions match the reference to the last bit of the angle. */
#include "model/rope.h"

#include <math.h>

/* inv_freq[i] = 1 / theta^(2i / d), then the config's scaling. */
static void inverse_frequencies(const model_config *c, int d, float *inv)
{
    for (int i = 0; i < d / 2; i++) {
        float exponent = (float)(2 * i) / (float)d;
        inv[i] = (float)(1.0 / pow(c->rope_theta, (double)exponent));
    }
    if (c->rope_scaling == ROPE_SCALING_LINEAR) {
        for (int i = 0; i < d / 2; i++)
            inv[i] = (float)(inv[i] / c->rope_factor);
    } else if (c->rope_scaling == ROPE_SCALING_LLAMA3) {
        /* Llama 3.1: long wavelengths are slowed down by `factor`, short
         * ones kept, and the band between interpolated smoothly. */
        double factor = c->rope_factor, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
        double old_len = c->rope_original_max_pos;
        double low_wavelen = old_len / lo, high_wavelen = old_len / hi;
        for (int i = 0; i < d / 2; i++) {
            double f = inv[i];
            double wavelen = 2.0 * M_PI / f;
            double scaled = wavelen > low_wavelen ? f / factor : f;
            if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
                double smooth = (old_len / wavelen - lo) / (hi - lo);
                scaled = (1.0 - smooth) * scaled / factor + smooth * scaled;
            }
            inv[i] = (float)scaled;
        }
    }
}

void rope_fill(const model_config *c, int head_dim, int n_positions, float *cos_out,
               float *sin_out)
{
    int half = head_dim / 2;
    float inv[512];
    inverse_frequencies(c, head_dim, inv);
    for (int p = 0; p < n_positions; p++) {
        for (int i = 0; i < half; i++) {
            float angle = (float)p * inv[i];
            cos_out[(size_t)p * half + i] = (float)cos((double)angle);
            sin_out[(size_t)p * half + i] = (float)sin((double)angle);
        }
    }
}
