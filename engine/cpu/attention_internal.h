/* Shared between the attention driver (attention.c) and the per-ISA block
 * kernels: what one block of work is, the tile sizes, and how a block's
 * scratch is laid out.
 *
 * A block is some query tokens x some query heads of one KV head. Its
 * queries are "rows", token-major: row m is token t0 + m / n_heads, head
 * (kv_head * group + head0 + m % n_heads). Each row attends to its own
 * range [first, last] of positions; the kernel walks the union of the
 * ranges in tiles of ATTN_KEY_TILE keys, masking what a row must not see. */
#ifndef ALM_CPU_ATTENTION_INTERNAL_H
#define ALM_CPU_ATTENTION_INTERNAL_H

#include <math.h>
#include <stddef.h>

#include "cpu/attention.h"

struct attention_block {
    int t0, n_tok;        /* query tokens [t0, t0 + n_tok) */
    int kv_head;
    int head0, n_heads;   /* query heads of the group, relative to its first */
};
typedef struct attention_block attention_block;

#define ATTN_KEY_TILE 64   /* keys per step of the online softmax (multiple of 16) */
/* Passes of up to this many query tokens compute every row exactly as a
 * one-token pass would (the same score kernel, tiles on the same grid), so
 * that speculative verification reproduces plain decoding bit for bit. */
#define ATTN_EXACT_TOKENS 16
#define ATTN_ROW_PAD 16    /* rows padded to a multiple of this (any VLEN divides it) */
#define ATTN_KEY_PAD 16    /* score rows a kernel may write past a tile */

/* A block's scratch, each part 64-byte aligned when the base is:
 *   q      [rows_pad * head_dim]   the scaled queries, in the kernel's layout
 *   o      [rows_pad * head_dim]   output accumulators, o[m][i]
 *   s      [(ATTN_KEY_TILE + ATTN_KEY_PAD) * rows_pad]   one tile of scores
 *   max, sum, corr [rows_pad]      online softmax state and rescale factors
 *   first, last    [rows_pad]      each row's key range, as floats (exact:
 *                                  positions are below 2^24) */
typedef struct attention_scratch {
    float *q, *o, *s, *max, *sum, *corr, *first, *last;
} attention_scratch;

static inline int attention_rows_pad(int rows)
{
    return (rows + ATTN_ROW_PAD - 1) / ATTN_ROW_PAD * ATTN_ROW_PAD;
}

static inline size_t attention_block_floats(int rows, int head_dim)
{
    size_t mp = (size_t)attention_rows_pad(rows);
    size_t d = ((size_t)head_dim + 15) / 16 * 16;
    return 2 * mp * d + (ATTN_KEY_TILE + ATTN_KEY_PAD) * mp + 5 * mp;
}

static inline attention_scratch attention_scratch_carve(float *base, int rows, int head_dim)
{
    size_t mp = (size_t)attention_rows_pad(rows);
    size_t d = ((size_t)head_dim + 15) / 16 * 16;
    attention_scratch s;
    s.q = base;
    s.o = s.q + mp * d;
    s.s = s.o + mp * d;
    s.max = s.s + (ATTN_KEY_TILE + ATTN_KEY_PAD) * mp;
    s.sum = s.max + mp;
    s.corr = s.sum + mp;
    s.first = s.corr + mp;
    s.last = s.first + mp;
    return s;
}

/* The block of item i < cpu_attention_items(a) (a must pass the check). */
attention_block cpu_attention_item_block(const attention_args *a, size_t item);

/* First position query position pos may see. */
static inline int attention_first(const attention_args *a, int pos)
{
    return a->window > 0 && pos - a->window + 1 > 0 ? pos - a->window + 1 : 0;
}

static inline float attention_scale(const attention_args *a)
{
    return a->scale != 0.0f ? a->scale : 1.0f / sqrtf((float)a->head_dim);
}

/* The block kernels. Each ISA's handles any block: AVX-512 passes head
 * dimensions of 8 * odd to AVX2, and both pass those no multiple of 8 to
 * the scalar one. */
void cpu_attention_block_scalar(const attention_args *a, const attention_block *b,
                                float *scratch);
void cpu_attention_block_avx2(const attention_args *a, const attention_block *b,
                              float *scratch);
void cpu_attention_block_avx512(const attention_args *a, const attention_block *b,
                                float *scratch);

#endif
