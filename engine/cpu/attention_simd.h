/* The attention block kernel, written once in the vocabulary of
 * vector_ops_simd.h and compiled by attention_avx2.c and attention_avx512.c
 * (include it only from there).
 *
 * A block's rows (queries) walk the keys in tiles; per tile: scores, mask,
 * online softmax update, then o = o * corr + P V. Scores are computed one
 * of two ways, whichever does less work for the block:
 *
 *  - by rows (prefill, verification: many rows): the queries are stored
 *    transposed, qt[i][m], and a key element k[n][i], broadcast, meets a
 *    vector of rows: s[n][m..m+VLEN) += k[n][i] * qt[i][m..m+VLEN). No
 *    horizontal sums, each K element loaded once per block of rows, and
 *    the softmax runs down the key axis with plain vector max and add.
 *  - by keys (decode: a few rows): rows in pairs, VLEN keys at once, dot
 *    products over head_dim folded into vectors of scores by a
 *    transpose-and-add tree (v_reduce_many).
 *
 * Then P V accumulates into o[m][i], vectors along head_dim, a few rows and
 * head_dim chunks held in registers per pass over the tile's keys. */
#ifndef ALM_CPU_ATTENTION_SIMD_H
#define ALM_CPU_ATTENTION_SIMD_H

#include <stdbool.h>

#include "cpu/attention_internal.h"
#include "cpu/vector_ops_simd.h"

/* Register blocking. QK by rows: KB keys x RV row vectors of
 * accumulators; P V: MB rows x DV head_dim vectors. AVX-512 has 32
 * vector registers, AVX2 16. */
#if VLEN == 16
#define QK_RV_MAX 4
#define QK_KB(rv) ((rv) == 1 ? 12 : (rv) == 4 ? 6 : 8)
#define PV_MB 6
#define PV_DV_MAX 4
#else
#define QK_RV_MAX 3
#define QK_KB(rv) ((rv) == 1 ? 8 : (rv) == 2 ? 5 : 3)
#define PV_MB 5
#define PV_DV_MAX 2
#endif
#define QK_KB_MAX 12

/* Row stride of the scores of the by-keys path: s[m][n]. */
#define SCORE_STRIDE (ATTN_KEY_TILE + ATTN_KEY_PAD)

typedef struct block_ctx {
    int d, rows, mp;          /* head_dim, rows, rows padded */
    int n_rvec;               /* vectors of VLEN rows covering the rows */
    size_t kv_row;            /* floats between positions in the cache */
    const float *k, *v;       /* this KV head's columns of the cache */
    attention_scratch s;
    int lo, hi;               /* the union of the rows' key ranges */
    int min_last, max_first;  /* tiles inside [max_first, min_last] need no mask */
} block_ctx;

/* ------------------------------------------------------------ scores by rows */

/* s[n][m] = sum_i k[n][i] qt[i][m] for n < nk (rounded up to KB: the
 * extra keys repeat the last one, so nothing outside the tile is read) and
 * the RV row vectors from rv0. */
SIMD_INLINE void qk_by_rows_tile(const block_ctx *c, const float *k, int nk, int rv0,
                                 const int RV, const int KB)
{
    const size_t mp = (size_t)c->mp;
    for (int n0 = 0; n0 < nk; n0 += KB) {
        const float *kr[QK_KB_MAX];
#pragma GCC unroll 12
        for (int j = 0; j < KB; j++)
            kr[j] = k + (size_t)(n0 + j < nk ? n0 + j : nk - 1) * c->kv_row;
        vec acc[QK_KB_MAX][QK_RV_MAX];
#pragma GCC unroll 12
        for (int j = 0; j < KB; j++)
#pragma GCC unroll 4
            for (int r = 0; r < RV; r++)
                acc[j][r] = v_zero();
        const float *qp = c->s.q + (size_t)rv0 * VLEN;
        for (int i = 0; i < c->d; i++, qp += mp) {
            vec qv[QK_RV_MAX];
#pragma GCC unroll 4
            for (int r = 0; r < RV; r++)
                qv[r] = v_load(qp + r * VLEN);
#pragma GCC unroll 12
            for (int j = 0; j < KB; j++) {
                vec kk = v_set1(kr[j][i]);
#pragma GCC unroll 4
                for (int r = 0; r < RV; r++)
                    acc[j][r] = v_fma(kk, qv[r], acc[j][r]);
            }
        }
        float *sp = c->s.s + (size_t)n0 * mp + (size_t)rv0 * VLEN;
#pragma GCC unroll 12
        for (int j = 0; j < KB; j++)
#pragma GCC unroll 4
            for (int r = 0; r < RV; r++)
                v_store(sp + (size_t)j * mp + (size_t)r * VLEN, acc[j][r]);
    }
}

static void qk_by_rows(const block_ctx *c, int kt0, int nk)
{
    const float *k = c->k + (size_t)kt0 * c->kv_row;
    for (int r0 = 0; r0 < c->n_rvec;) {
        int rv = c->n_rvec - r0 < QK_RV_MAX ? c->n_rvec - r0 : QK_RV_MAX;
        switch (rv) {
        case 1: qk_by_rows_tile(c, k, nk, r0, 1, QK_KB(1)); break;
        case 2: qk_by_rows_tile(c, k, nk, r0, 2, QK_KB(2)); break;
        case 3: qk_by_rows_tile(c, k, nk, r0, 3, QK_KB(3)); break;
#if QK_RV_MAX >= 4
        case 4: qk_by_rows_tile(c, k, nk, r0, 4, QK_KB(4)); break;
#endif
        default: break;
        }
        r0 += rv;
    }
}

/* -inf where a row must not see the key; the padding rows see nothing. */
static void mask_by_rows(const block_ctx *c, int kt0, int nk)
{
    if (kt0 + nk - 1 <= c->min_last && kt0 >= c->max_first)
        return;
    for (int r = 0; r < c->n_rvec; r++) {
        vec lo = v_load(c->s.first + r * VLEN), hi = v_load(c->s.last + r * VLEN);
        float *sp = c->s.s + (size_t)r * VLEN;
        for (int n = 0; n < nk; n++, sp += c->mp)
            v_store(sp, v_keep_between(v_load(sp), v_set1((float)(kt0 + n)), lo, hi));
    }
}

/* Online softmax down the key axis, VLEN rows at a time: the scores become
 * exp(s - max) and corr the factor that rescales the earlier tiles. */
static void softmax_by_rows(const block_ctx *c, int nk)
{
    const size_t mp = (size_t)c->mp;
    for (int r = 0; r < c->n_rvec; r++) {
        float *col = c->s.s + (size_t)r * VLEN;
        vec tile_max = v_set1(-INFINITY);
        for (int n = 0; n < nk; n++)
            tile_max = v_max(tile_max, v_load(col + (size_t)n * mp));
        vec old_max = v_load(c->s.max + r * VLEN);
        vec new_max = v_max(old_max, tile_max);
        /* A row that has seen only masked keys keeps max -inf; subtracting
         * 0 then gives it weights 0 instead of NaN. */
        vec shift = v_finite_or_zero(new_max);
        vec corr = v_exp(v_sub(old_max, shift));
        vec sum0 = v_zero(), sum1 = v_zero();
        int n = 0;
        for (; n + 2 <= nk; n += 2) {
            vec e0 = v_exp(v_sub(v_load(col + (size_t)n * mp), shift));
            vec e1 = v_exp(v_sub(v_load(col + (size_t)(n + 1) * mp), shift));
            v_store(col + (size_t)n * mp, e0);
            v_store(col + (size_t)(n + 1) * mp, e1);
            sum0 = v_add(sum0, e0);
            sum1 = v_add(sum1, e1);
        }
        if (n < nk) {
            vec e0 = v_exp(v_sub(v_load(col + (size_t)n * mp), shift));
            v_store(col + (size_t)n * mp, e0);
            sum0 = v_add(sum0, e0);
        }
        vec sum = v_load(c->s.sum + r * VLEN);
        v_store(c->s.sum + r * VLEN, v_fma(sum, corr, v_add(sum0, sum1)));
        v_store(c->s.max + r * VLEN, new_max);
        v_store(c->s.corr + r * VLEN, corr);
    }
}

/* ------------------------------------------------------------ scores by keys */

/* Scores of the tile's keys, VLEN at a time, for the rows in pairs: each K
 * element loaded feeds both rows of a pair. The accumulators of one
 * pass hold half the keys for each row, so that one reduction tree gives
 * both rows' scores (row m in the low half, row m + 1 in the high half). */
#define HALF (VLEN / 2)

SIMD_INLINE vec qk_pair_half(const float *qa, const float *qb, const float *const *kr, int d)
{
    vec acc[VLEN];
#pragma GCC unroll 16
    for (int j = 0; j < VLEN; j++)
        acc[j] = v_zero();
    for (int i = 0; i < d; i += VLEN) {
        vec a = v_load(qa + i), b = v_load(qb + i);
#pragma GCC unroll 8
        for (int j = 0; j < HALF; j++) {
            vec kv = v_pin(v_load(kr[j] + i));
            acc[j] = v_fma(a, kv, acc[j]);
            acc[HALF + j] = v_fma(b, kv, acc[HALF + j]);
        }
    }
    return v_reduce_many(acc);
}

SIMD_INLINE vec qk_row(const float *q, const float *const *kr, int d)
{
    vec acc[VLEN];
#pragma GCC unroll 16
    for (int j = 0; j < VLEN; j++)
        acc[j] = v_zero();
    for (int i = 0; i < d; i += VLEN) {
        vec qv = v_load(q + i);
#pragma GCC unroll 16
        for (int j = 0; j < VLEN; j++)
            acc[j] = v_fma(qv, v_load(kr[j] + i), acc[j]);
    }
    return v_reduce_many(acc);
}

static void qk_by_keys(const block_ctx *c, int kt0, int nk)
{
    const float *k = c->k + (size_t)kt0 * c->kv_row;
    const int d = c->d;
    for (int n0 = 0; n0 < nk; n0 += VLEN) {
        /* Keys past the tile repeat its last one: their lanes lie past
         * every row's last position and are masked. */
        const float *kr[VLEN];
#pragma GCC unroll 16
        for (int j = 0; j < VLEN; j++) {
            int n = n0 + V_REDUCE_LANE(j);
            kr[j] = k + (size_t)(n < nk ? n : nk - 1) * c->kv_row;
        }
        vec pos = v_add(v_iota(), v_set1((float)(kt0 + n0)));
        int m = 0;
        for (; m + 2 <= c->rows; m += 2) {
            const float *qa = c->s.q + (size_t)m * (size_t)d, *qb = qa + d;
            vec first = qk_pair_half(qa, qb, kr, d), second = qk_pair_half(qa, qb, kr + HALF, d);
            for (int r = 0; r < 2; r++) {
                vec sc = r ? v_high_halves(first, second) : v_low_halves(first, second);
                vec lo = v_set1(c->s.first[m + r]), hi = v_set1(c->s.last[m + r]);
                v_store(c->s.s + (size_t)(m + r) * SCORE_STRIDE + n0,
                        v_keep_between(sc, pos, lo, hi));
            }
        }
        if (m < c->rows) {
            vec lo = v_set1(c->s.first[m]), hi = v_set1(c->s.last[m]);
            v_store(c->s.s + (size_t)m * SCORE_STRIDE + n0,
                    v_keep_between(qk_row(c->s.q + (size_t)m * (size_t)d, kr, d), pos, lo, hi));
        }
    }
}

static void softmax_by_keys(const block_ctx *c, int nk)
{
    /* Tile maxima into corr, then the state update for all rows at once. */
    for (int m = 0; m < c->rows; m++) {
        const float *srow = c->s.s + (size_t)m * SCORE_STRIDE;
        vec mx = v_set1(-INFINITY);
        for (int n0 = 0; n0 < nk; n0 += VLEN)
            mx = v_max(mx, v_load(srow + n0));
        c->s.corr[m] = v_hmax(mx);
    }
    for (int r = 0; r < c->n_rvec; r++) {
        vec old_max = v_load(c->s.max + r * VLEN);
        vec new_max = v_max(old_max, v_load(c->s.corr + r * VLEN));
        v_store(c->s.corr + r * VLEN, v_exp(v_sub(old_max, v_finite_or_zero(new_max))));
        v_store(c->s.max + r * VLEN, new_max);
    }
    for (int m = 0; m < c->rows; m++) {
        float *srow = c->s.s + (size_t)m * SCORE_STRIDE;
        float mx = c->s.max[m];
        vec shift = v_set1(mx == -INFINITY ? 0.0f : mx);
        vec sum = v_zero();
        for (int n0 = 0; n0 < nk; n0 += VLEN) {
            vec e = v_exp(v_sub(v_load(srow + n0), shift));
            v_store(srow + n0, e);
            sum = v_add(sum, e);
        }
        c->s.sum[m] = c->s.sum[m] * c->s.corr[m] + v_hsum(sum);
    }
}

/* ------------------------------------------------------------ P V */

/* o[m][i0 .. i0 + DV * VLEN) = o * corr[m] + sum_{n < nk} p(m, n) v[n][...]
 * for the MB rows from m0; p(m, n) = p[m * p_row + n * p_key]. */
SIMD_INLINE void pv_tile(const block_ctx *c, const float *p, size_t p_row, size_t p_key,
                         const float *v, int nk, int m0, int i0, const int MB, const int DV)
{
    const size_t d = (size_t)c->d;
    vec acc[PV_MB][PV_DV_MAX];
#pragma GCC unroll 6
    for (int mb = 0; mb < MB; mb++) {
        vec corr = v_set1(c->s.corr[m0 + mb]);
#pragma GCC unroll 4
        for (int dv = 0; dv < DV; dv++)
            acc[mb][dv] = v_mul(v_load(c->s.o + (size_t)(m0 + mb) * d + (size_t)(i0 + dv * VLEN)),
                                corr);
    }
    const float *vr = v + i0, *pp = p + (size_t)m0 * p_row;
    for (int n = 0; n < nk; n++, vr += c->kv_row, pp += p_key) {
        vec vv[PV_DV_MAX];
#pragma GCC unroll 4
        for (int dv = 0; dv < DV; dv++)
            vv[dv] = v_pin(v_load(vr + dv * VLEN));   /* one load for MB rows */
#pragma GCC unroll 6
        for (int mb = 0; mb < MB; mb++) {
            vec pb = v_set1(pp[(size_t)mb * p_row]);
#pragma GCC unroll 4
            for (int dv = 0; dv < DV; dv++)
                acc[mb][dv] = v_fma(pb, vv[dv], acc[mb][dv]);
        }
    }
#pragma GCC unroll 6
    for (int mb = 0; mb < MB; mb++)
#pragma GCC unroll 4
        for (int dv = 0; dv < DV; dv++)
            v_store(c->s.o + (size_t)(m0 + mb) * d + (size_t)(i0 + dv * VLEN), acc[mb][dv]);
}

#define PV_CASE(MB, DV) \
    case (MB) * 8 + (DV): pv_tile(c, p, p_row, p_key, v, nk, m0, i0, MB, DV); break

static void pv_accumulate(const block_ctx *c, const float *p, size_t p_row, size_t p_key,
                          int kt0, int nk)
{
    const float *v = c->v + (size_t)kt0 * c->kv_row;
    for (int i0 = 0; i0 < c->d;) {
        int left = (c->d - i0) / VLEN;
        int dv = left >= PV_DV_MAX ? PV_DV_MAX : left >= 2 ? 2 : 1;
        for (int m0 = 0; m0 < c->rows; m0 += PV_MB) {
            int mb = c->rows - m0 < PV_MB ? c->rows - m0 : PV_MB;
            switch (mb * 8 + dv) {
            PV_CASE(1, 1); PV_CASE(2, 1); PV_CASE(3, 1); PV_CASE(4, 1); PV_CASE(5, 1);
            PV_CASE(1, 2); PV_CASE(2, 2); PV_CASE(3, 2); PV_CASE(4, 2); PV_CASE(5, 2);
#if PV_MB >= 6
            PV_CASE(6, 1); PV_CASE(6, 2);
#endif
#if PV_DV_MAX >= 4
            PV_CASE(1, 4); PV_CASE(2, 4); PV_CASE(3, 4); PV_CASE(4, 4); PV_CASE(5, 4);
            PV_CASE(6, 4);
#endif
            default: break;
            }
        }
        i0 += dv * VLEN;
    }
}

/* ------------------------------------------------------------ the block */

static void block_setup(block_ctx *c, const attention_args *a, const attention_block *b,
                        float *scratch, bool transposed)
{
    const int group = a->n_heads / a->n_kv_heads;
    c->d = a->head_dim;
    c->rows = b->n_tok * b->n_heads;
    c->mp = attention_rows_pad(c->rows);
    c->n_rvec = (c->rows + VLEN - 1) / VLEN;
    c->kv_row = (size_t)a->n_kv_heads * (size_t)c->d;
    c->k = a->k + (size_t)b->kv_head * (size_t)c->d;
    c->v = a->v + (size_t)b->kv_head * (size_t)c->d;
    c->s = attention_scratch_carve(scratch, c->rows, c->d);

    const float scale = attention_scale(a);
    const size_t d = (size_t)c->d, mp = (size_t)c->mp;
    for (int m = 0; m < c->mp; m++) {
        c->s.max[m] = -INFINITY;
        c->s.sum[m] = 0.0f;
        c->s.corr[m] = 0.0f;
        c->s.first[m] = 0.0f;
        c->s.last[m] = -1.0f;   /* padding: sees no key */
        if (m >= c->rows) {
            if (transposed)
                for (size_t i = 0; i < d; i++)
                    c->s.q[i * mp + (size_t)m] = 0.0f;
            continue;
        }
        int t = b->t0 + m / b->n_heads, h = b->kv_head * group + b->head0 + m % b->n_heads;
        int pos = a->pos0 + t;
        c->s.first[m] = (float)attention_first(a, pos);
        c->s.last[m] = (float)pos;
        const float *q = a->q + ((size_t)t * (size_t)a->n_heads + (size_t)h) * d;
        if (transposed)
            for (size_t i = 0; i < d; i++)
                c->s.q[i * mp + (size_t)m] = q[i] * scale;
        else
            for (size_t i = 0; i < d; i++)
                c->s.q[(size_t)m * d + i] = q[i] * scale;
    }
    memset(c->s.o, 0, sizeof(float) * (size_t)c->rows * d);
    /* Rows are token-major: the first row has the smallest position. */
    c->lo = attention_first(a, a->pos0 + b->t0);
    c->hi = a->pos0 + b->t0 + b->n_tok - 1;
    c->min_last = a->pos0 + b->t0;
    c->max_first = attention_first(a, c->hi);
}

static void block_output(const block_ctx *c, const attention_args *a, const attention_block *b)
{
    const int group = a->n_heads / a->n_kv_heads;
    for (int m = 0; m < c->rows; m++) {
        int t = b->t0 + m / b->n_heads, h = b->kv_head * group + b->head0 + m % b->n_heads;
        float *out = a->out + ((size_t)t * (size_t)a->n_heads + (size_t)h) * (size_t)c->d;
        const float *o = c->s.o + (size_t)m * (size_t)c->d;
        vec inv = v_set1(1.0f / c->s.sum[m]);
        for (int i = 0; i < c->d; i += VLEN)
            v_store(out + i, v_mul(v_load(o + i), inv));
    }
}

/* Per key, scores by rows cost head_dim FMAs per vector of rows; by keys,
 * head_dim / VLEN FMAs plus about 3 reduction steps per row. */
static bool scores_by_rows(int rows, int d)
{
    long by_rows = (long)d * ((rows + VLEN - 1) / VLEN);
    long by_keys = (long)rows * (d / VLEN + 3);
    return by_rows <= by_keys;
}

static void attention_block_simd(const attention_args *a, const attention_block *b,
                                 float *scratch)
{
    if (a->head_dim % VLEN) {
        cpu_attention_block_scalar(a, b, scratch);
        return;
    }
    block_ctx c;
    /* A row's result must not depend on the pass it is in (up to
     * ATTN_EXACT_TOKENS tokens): the two score kernels round differently,
     * so those passes all take the one a one-token pass takes, and every
     * block walks the keys on the same grid of tiles (multiples of the
     * tile from position 0): keys before a row's first are masked, and a
     * tile a row sees nothing of leaves its state unchanged exactly. */
    const bool by_rows = a->n_tok > ATTN_EXACT_TOKENS &&
                         scores_by_rows(b->n_tok * b->n_heads, a->head_dim);
    block_setup(&c, a, b, scratch, by_rows);
    for (int kt0 = c.lo / ATTN_KEY_TILE * ATTN_KEY_TILE; kt0 <= c.hi; kt0 += ATTN_KEY_TILE) {
        int nk = c.hi + 1 - kt0 < ATTN_KEY_TILE ? c.hi + 1 - kt0 : ATTN_KEY_TILE;
        if (by_rows) {
            qk_by_rows(&c, kt0, nk);
            mask_by_rows(&c, kt0, nk);
            softmax_by_rows(&c, nk);
            pv_accumulate(&c, c.s.s, 1, (size_t)c.mp, kt0, nk);
        } else {
            qk_by_keys(&c, kt0, nk);
            softmax_by_keys(&c, nk);
            pv_accumulate(&c, c.s.s, SCORE_STRIDE, 1, kt0, nk);
        }
    }
    block_output(&c, a, b);
}

#endif
