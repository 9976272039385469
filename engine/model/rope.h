#ifndef ALM_MODEL_ROPE_H
#define ALM_MODEL_ROPE_H

#include "loader/model_config.h"

/* Largest head dimension the table code handles. */
#define ROPE_MAX_HEAD_DIM 1024

/* cos/sin of every position's angles: [n_positions][head_dim / 2]. */
void rope_fill(const model_config *c, int head_dim, int n_positions, float *cos_out,
               float *sin_out);

#endif
