/* Post-processors (tokenizer.json "post_processor"): what encode adds
 * around a single sequence when asked for special tokens. For one sequence
 * every supported kind reduces to ids before and ids after it. */
#ifndef ALM_TOKENIZER_POST_PROCESSOR_H
#define ALM_TOKENIZER_POST_PROCESSOR_H

#include <json-glib/json-glib.h>
#include <stdbool.h>

#include "alm.h"
#include "tokenizer/buffers.h"

typedef struct post_processor {
    idvec prefix;
    idvec suffix;
} post_processor;

/* node may be NULL (nothing is added). Supports TemplateProcessing,
 * RobertaProcessing, BertProcessing, ByteLevel and Sequence. */
int post_processor_from_json(post_processor *pp, JsonNode *node, const char *where,
                             alm_error *err);
void post_processor_free(post_processor *pp);

#endif
