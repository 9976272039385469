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
    int n_blocks;       /* token blocks, sizes within one of each other */
    int splits;         /* parts each group of heads is cut into */
    int n_pairs;        /* n_blocks / 2: pairs (b, n_blocks - 1 - b) */
    int pair_step;      /* visiting order of the pairs: j * pair_step mod n_pairs */
} attention_plan;

static int gcd(int a, int b)
{
    while (b) {
        int t = a % b;
        a = b;
        b = t;
    }
    return a;
}

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
    /* Too few (block, KV head) units for the threads (a decode step):
     * cut the groups of heads, into a number of parts that makes the item
     * count a multiple of the threads where the group allows it (6 heads
     * over 2 KV heads on 3 threads: 6 items of one head, not 4 of 1 or 2). */
    long units = (long)p.n_blocks * a->n_kv_heads;
    p.splits = 1;
    if (a->min_items > units) {
        long s = (a->min_items + units - 1) / units;
        long even = s;
        while (even <= p.group && (units * even) % a->min_items)
            even++;
        s = even <= p.group ? even : s;
        p.splits = s < p.group ? (int)s : p.group;
    }
    /* A step near n / golden ratio, coprime to n: j * step mod n visits
     * the pairs evenly spread, so that every run of them has about the
     * mean cost even where costs are not linear in the block index
     * (sliding windows: the first blocks see fewer keys). */
    p.n_pairs = p.n_blocks / 2;
    p.pair_step = 1;
    if (p.n_pairs > 2) {
        p.pair_step = (int)(0.618034 * p.n_pairs + 0.5);
        while (gcd(p.pair_step, p.n_pairs) != 1)
            p.pair_step++;
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

/* Item i's block. A causal block's cost grows with its index, about
 * linearly, so blocks go by pairs (b, n - 1 - b) of equal cost, the pairs
 * in a well-spread order (the middle block of an odd count last): any
 * contiguous run of items, as threads take them, costs about its share. */
static attention_block plan_block(const attention_args *a, const attention_plan *p,
                                  size_t item)
{
    attention_block b;
    int split = (int)(item % (size_t)p->splits);
    size_t rest = item / (size_t)p->splits;
    b.kv_head = (int)(rest % (size_t)a->n_kv_heads);
    int order = (int)(rest / (size_t)a->n_kv_heads);
    int block = p->n_blocks / 2;   /* the middle one, when order == 2 * n_pairs */
    if (order < 2 * p->n_pairs) {
        int pair = (int)((long)(order / 2) * p->pair_step % p->n_pairs);
        block = order % 2 == 0 ? pair : p->n_blocks - 1 - pair;
    }
    /* Equal blocks: 17 tokens in two are 8 + 9, not 16 + 1. */
    b.t0 = (int)((long)block * a->n_tok / p->n_blocks);
    b.n_tok = (int)((long)(block + 1) * a->n_tok / p->n_blocks) - b.t0;
    b.head0 = split * p->group / p->splits;
    b.n_heads = (split + 1) * p->group / p->splits - b.head0;
    return b;
}

attention_block cpu_attention_item_block(const attention_args *a, size_t item)
{
    attention_plan p = make_plan(a);
    return plan_block(a, &p, item);
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
        attention_block b = plan_block(a, &p, i);
        ops->attention_block(a, &b, scratch);
    }
}

void cpu_attention_run_kv_heads(const cpu_vector_ops *ops, const attention_args *a,
                                int kv0, int kv1, float *scratch)
{
    attention_args whole = *a;
    whole.min_items = 0;
    size_t n = cpu_attention_items(&whole);
    attention_plan p = make_plan(&whole);
    for (size_t i = 0; i < n; i++) {
        attention_block b = plan_block(&whole, &p, i);
        if (b.kv_head >= kv0 && b.kv_head < kv1)
            ops->attention_block(&whole, &b, scratch);
    }
}
