/* The plain C attention block: one query row at a time, a dot product per
 * key, expf per score, the online softmax over tiles of keys. It is the
 * reference the SIMD kernels are measured against and the fallback for
 * head dimensions they do not take. */
#include <math.h>
#include <string.h>

#include "cpu/attention_internal.h"

static float dot(const float *a, const float *b, int n)
{
    float acc[8] = { 0 };
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

void cpu_attention_block_scalar(const attention_args *a, const attention_block *b,
                                float *scratch)
{
    const int d = a->head_dim, group = a->n_heads / a->n_kv_heads;
    const size_t kv_row = (size_t)a->n_kv_heads * (size_t)d;
    const float *k = a->k + (size_t)b->kv_head * (size_t)d;
    const float *v = a->v + (size_t)b->kv_head * (size_t)d;
    const float scale = attention_scale(a);
    attention_scratch s = attention_scratch_carve(scratch, 1, d);
    float *qs = s.q, *o = s.o, *scores = s.s;

    for (int t = b->t0; t < b->t0 + b->n_tok; t++) {
        const int pos = a->pos0 + t, first = attention_first(a, pos);
        for (int g = 0; g < b->n_heads; g++) {
            const size_t row = (size_t)t * (size_t)a->n_heads +
                               (size_t)(b->kv_head * group + b->head0 + g);
            const float *q = a->q + row * (size_t)d;
            for (int i = 0; i < d; i++)
                qs[i] = q[i] * scale;
            memset(o, 0, sizeof(float) * (size_t)d);
            float max = -INFINITY, sum = 0.0f;
            for (int kt0 = first; kt0 <= pos; kt0 += ATTN_KEY_TILE) {
                int nk = pos + 1 - kt0 < ATTN_KEY_TILE ? pos + 1 - kt0 : ATTN_KEY_TILE;
                float tile_max = -INFINITY;
                for (int n = 0; n < nk; n++) {
                    scores[n] = dot(qs, k + (size_t)(kt0 + n) * kv_row, d);
                    if (scores[n] > tile_max)
                        tile_max = scores[n];
                }
                /* Rescale what the earlier tiles summed to the new max. */
                float new_max = tile_max > max ? tile_max : max;
                float corr = expf(max - new_max);
                float tile_sum = 0.0f;
                for (int n = 0; n < nk; n++) {
                    scores[n] = expf(scores[n] - new_max);
                    tile_sum += scores[n];
                }
                sum = sum * corr + tile_sum;
                max = new_max;
                for (int i = 0; i < d; i++)
                    o[i] *= corr;
                for (int n = 0; n < nk; n++) {
                    const float p = scores[n], *vr = v + (size_t)(kt0 + n) * kv_row;
                    for (int i = 0; i < d; i++)
                        o[i] += p * vr[i];
                }
            }
            float inv = 1.0f / sum, *out = a->out + row * (size_t)d;
            for (int i = 0; i < d; i++)
                out[i] = o[i] * inv;
        }
    }
}
