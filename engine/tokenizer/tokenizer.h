/* The loaded tokenizer: HF's pipeline (added tokens, normalizer,
 * pre-tokenizer, BPE model, post-processor, decoder) plus what the model
 * folder's config files say about BOS/EOS. Immutable after loading, so any
 * number of threads may encode and decode with it at once. */
#ifndef ALM_TOKENIZER_TOKENIZER_H
#define ALM_TOKENIZER_TOKENIZER_H

#include <stdbool.h>
#include <stdint.h>

#include "alm.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/decoder.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/pretokenizer.h"

struct alm_tokenizer {
    normalizer norm;
    pretokenizer pretok;
    bpe_model bpe;
    added_vocab added;
    post_processor post; /* what encode(add_special) adds */
    decoder dec;

    /* id -> token string (added tokens override the model's); NULL: unused id */
    const char **token_str;
    uint32_t *token_len;
    bool *special;
    /* What decoding starts from: as token_str, except that an added token
     * with normalized=true decodes from its normalized form (as HF does, so
     * that the decoder inverts the normalizer). */
    const char **decode_str;
    uint32_t *decode_len;
    bool *skip; /* dropped by skip_special: the decode string is a special token's */
    int32_t n_ids;

    int32_t *eos_ids;
    size_t n_eos;
    int32_t bos_id;
};

/* The id of a token string (added tokens first, then the model), or -1. */
int32_t tokenizer_token_id(const alm_tokenizer *tok, const char *s, size_t len);

#endif
