/* What a load produces: a target model (and draft), the thread pool that
 * runs them, and one sequence each whose KV cache carries over from one
 * request to the next. Freed as one. */
#ifndef ALM_DAEMON_MODEL_SET_H
#define ALM_DAEMON_MODEL_SET_H

#include <stddef.h>
#include <stdlib.h>

#include "alm.h"

typedef struct model_set {
    alm_model *target, *draft;
    alm_pool *pool;
    alm_seq *seq, *draft_seq;
    char model_name[256], draft_name[256], device[16];
    int threads, context_length;   /* context_length: after the models' own limits */
    double loaded_at;              /* Unix time */
    size_t memory_bytes;           /* weights + KV caches */
} model_set;

static inline void model_set_free(model_set *set)
{
    if (!set)
        return;
    alm_seq_free(set->seq);
    alm_seq_free(set->draft_seq);
    alm_pool_free(set->pool);
    alm_model_free(set->target);
    alm_model_free(set->draft);
    free(set);
}

#endif
