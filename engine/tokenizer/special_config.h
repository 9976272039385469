/* What a model folder's config files say about special tokens:
 * tokenizer_config.json (bos/eos token strings, add_bos_token and
 * add_eos_token), generation_config.json and config.json (eos_token_id, an
 * integer or a list). Every file is optional. */
#ifndef ALM_TOKENIZER_SPECIAL_CONFIG_H
#define ALM_TOKENIZER_SPECIAL_CONFIG_H

#include <stdbool.h>

#include "alm.h"
#include "tokenizer/buffers.h"

typedef struct special_config {
    char *bos_token; /* NULL when not set */
    char *eos_token;
    bool has_add_bos, add_bos; /* has_*: the key is present */
    bool has_add_eos, add_eos;
    idvec generation_eos; /* generation_config.json eos_token_id */
    idvec config_eos;     /* config.json eos_token_id */
} special_config;

int special_config_load(special_config *c, const char *dir, alm_error *err);
void special_config_free(special_config *c);

#endif
