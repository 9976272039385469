/* Attention work split into items, and the portable driver that hands each
 * item's block to the kernel of the chosen instruction set. */
#include "cpu/attention.h"

#include <errno.h>

#include "core/error.h"
#include "cpu/attention_internal.h"

/* Rows (tokens x heads of a group) a block aims at: enough query rows to
 * fill a few vector registers per key, few enough that a block's queries,
 * accumulators and score tile stay in L1/L2. */
#define BLOCK_ROWS_TARGET 48
#define BLOCK_TOKENS_MAX 16
/* Positions travel as floats inside the kernels (exact below 2^24). */
#define MAX_POSITIONS (1 << 24)
#define MAX_HEAD_DIM 4096

static int check_shape(const attention_args *a, alm_error *err)
{
    if (!a)
        return alm_error_set(err, -EINVAL, "attention: no arguments");
    if (a->n_heads < 1 || a->n_kv_heads < 1 || a->n_heads % a->n_kv_heads)
        return alm_error_set(err, -EINVAL,
                             "attention: %d query heads cannot share %d KV heads",
                             a->n_heads, a->n_kv_heads);
    if (a->head_dim < 1 || a->head_dim > MAX_HEAD_DIM)
        return alm_error_set(err, -EINVAL, "attention: head dimension %d is not in 1..%d",
                             a->head_dim, MAX_HEAD_DIM);
    if (a->n_tok < 1)
        return alm_error_set(err, -EINVAL, "attention: %d query tokens", a->n_tok);
    return 0;
}

int cpu_attention_check(const attention_args *a, alm_error *err)
{
    int r = check_shape(a, err);
    if (r < 0)
        return r;
    if (!a->q || !a->k || !a->v || !a->out)
        return alm_error_set(err, -EINVAL, "attention: missing q, k, v or output buffer");
    if (a->pos0 < 0 || a->pos0 > MAX_POSITIONS - a->n_tok)
        return alm_error_set(err, -EINVAL,
                             "attention: positions %d..%d are not in 0..%d", a->pos0,
                             a->pos0 + a->n_tok - 1, MAX_POSITIONS - 1);
    if (a->window < 0)
        return alm_error_set(err, -EINVAL, "attention: negative window %d", a->window);
    if (!isfinite(a->scale))
        return alm_error_set(err, -EINVAL, "attention: score scale is not finite");
    if (a->min_items < 0)
        return alm_error_set(err, -EINVAL, "attention: negative min_items %d", a->min_items);
    return 0;
}

/* How a call is cut into blocks. */
typedef struct attention_plan {
    int group;          /* query heads per KV head */
    int block_tokens;   /* tokens per block (the last one may have fewer) */
    int n_blocks;
    int splits;         /* parts each group of heads is cut into */
} attention_plan;

static int block_tokens_max(const attention_args *a, int group)
{
    int bt = BLOCK_ROWS_TARGET / group;
    if (bt < 1)
        bt = 1;
    if (bt > BLOCK_TOKENS_MAX)
        bt = BLOCK_TOKENS_MAX;
    return bt < a->n_tok ? bt : a->n_tok;
}

static attention_plan make_plan(const attention_args *a)
{
    attention_plan p;
    p.group = a->n_heads / a->n_kv_heads;
    int bt = block_tokens_max(a, p.group);
    p.n_blocks = (a->n_tok + bt - 1) / bt;
    /* Equal blocks: 17 tokens are 9 + 8, not 16 + 1. */
    p.block_tokens = (a->n_tok + p.n_blocks - 1) / p.n_blocks;
    p.n_blocks = (a->n_tok + p.block_tokens - 1) / p.block_tokens;
    long units = (long)p.n_blocks * a->n_kv_heads;
    p.splits = 1;
    if (a->min_items > units) {
        long s = (a->min_items + units - 1) / units;
        p.splits = s < p.group ? (int)s : p.group;
    }
    return p;
}

size_t cpu_attention_items(const attention_args *a)
{
    if (cpu_attention_check(a, NULL) < 0)
        return 0;
    attention_plan p = make_plan(a);
    return (size_t)p.n_blocks * (size_t)a->n_kv_heads * (size_t)p.splits;
}

size_t cpu_attention_scratch_floats(const attention_args *a)
{
    if (check_shape(a, NULL) < 0)
        return 0;
    int group = a->n_heads / a->n_kv_heads;
    /* The largest block any n_tok' <= n_tok can make. */
    return attention_block_floats(block_tokens_max(a, group) * group, a->head_dim);
}

/* Item i's block. Blocks are visited in the order 0, n-1, 1, n-2, ...: a
 * causal block's cost grows with its index, so any contiguous run of items
 * pairs cheap blocks with dear ones and equal-count ranges cost about the
 * same. */
static attention_block item_block(const attention_args *a, const attention_plan *p,
                                  size_t item)
{
    attention_block b;
    int split = (int)(item % (size_t)p->splits);
    size_t rest = item / (size_t)p->splits;
    b.kv_head = (int)(rest % (size_t)a->n_kv_heads);
    int order = (int)(rest / (size_t)a->n_kv_heads);
    int block = order % 2 == 0 ? order / 2 : p->n_blocks - 1 - order / 2;
    b.t0 = block * p->block_tokens;
    b.n_tok = a->n_tok - b.t0 < p->block_tokens ? a->n_tok - b.t0 : p->block_tokens;
    b.head0 = split * p->group / p->splits;
    b.n_heads = (split + 1) * p->group / p->splits - b.head0;
    return b;
}

void cpu_attention_run(const cpu_vector_ops *ops, const attention_args *a,
                       size_t item0, size_t item1, float *scratch)
{
    size_t n = cpu_attention_items(a);
    if (item1 > n)
        item1 = n;
    if (item0 >= item1)
        return;
    attention_plan p = make_plan(a);
    for (size_t i = item0; i < item1; i++) {
        attention_block b = item_block(a, &p, i);
        ops->attention_block(a, &b, scratch);
    }
}
