/* Causal (optionally sliding-window) grouped-query attention over a KV
 * cache, on the CPU:
 *
 *   out[t][h] = softmax_j(scale * q[t][h] . k[j][h / g]) v[j][h / g]
 *
 * for query t at position pos = pos0 + t, over the cached positions
 * first <= j <= pos, first = max(0, pos - window + 1) when window > 0, else
 * 0; g = n_heads / n_kv_heads query heads share one KV head. The softmax is
 * float32 with the row maximum subtracted, computed online over tiles of
 * keys (flash-attention style), so the memory it needs does not grow with
 * the context.
 *
 * Threads share the work through items: cpu_attention_items says how many
 * there are, and any split of [0, items) into disjoint ranges, each run by
 * cpu_attention_run with its own scratch, computes every output once.
 * Items are ordered so that contiguous equal-count ranges cost about the
 * same even in a causal prefill, where later tokens see more keys. */
#ifndef ALM_CPU_ATTENTION_H
#define ALM_CPU_ATTENTION_H

#include <stddef.h>

#include "alm.h"
#include "cpu/vector_ops.h"

typedef struct attention_args {
    const float *q;   /* [n_tok][n_heads][head_dim] */
    const float *k;   /* [positions][n_kv_heads][head_dim]: the cache; only */
    const float *v;   /*   positions up to pos0 + n_tok - 1 are read */
    float *out;       /* [n_tok][n_heads][head_dim]; may be q itself */
    int n_tok;        /* query tokens, >= 1 */
    int pos0;         /* position of the first query token, >= 0 */
    int n_heads;
    int n_kv_heads;   /* divides n_heads */
    int head_dim;
    int window;       /* sliding window length, 0 = full causal attention */
    float scale;      /* score scale; 0 = 1 / sqrt(head_dim) */
    /* Split groups of query heads (which otherwise share each K/V row
     * load) into separate items until there are at least this many items,
     * where the tokens alone give fewer: set it to the thread count, so
     * that a decode step with few KV heads still keeps every thread busy.
     * 0 or 1: never split. */
    int min_items;
} attention_args;

/* 0 when a describes attention these kernels compute; otherwise -EINVAL
 * with the reason in err (which may be NULL). */
int cpu_attention_check(const attention_args *a, alm_error *err);

/* Number of work items; 0 when cpu_attention_check refuses a. */
size_t cpu_attention_items(const attention_args *a);

/* Floats of scratch each thread needs (64-byte alignment is best). It reads
 * only n_tok, n_heads, n_kv_heads and head_dim (not the context length or
 * the positions) and never decreases as n_tok grows, so a buffer sized for
 * the largest batch serves every call. 0 when a is refused. */
size_t cpu_attention_scratch_floats(const attention_args *a);

/* Computes the outputs of items [item0, item1) with the kernels of ops.
 * Items beyond cpu_attention_items are ignored. */
void cpu_attention_run(const cpu_vector_ops *ops, const attention_args *a,
                       size_t item0, size_t item1, float *scratch);

/* Computes every output of the query heads that share KV heads
 * [kv0, kv1), for all tokens (min_items is ignored: groups are not cut).
 * Threads that own disjoint KV head ranges together compute everything;
 * a thread that also produced those heads' q, k and v needs no barrier
 * between that and this. */
void cpu_attention_run_kv_heads(const cpu_vector_ops *ops, const attention_args *a,
                                int kv0, int kv1, float *scratch);

#endif
