/* Decoders (tokenizer.json "decoder"): turn token strings back into text,
 * step by step over a list of strings exactly as HF's decode_chain does,
 * then join the result. A Sequence is flattened into its steps. */
#ifndef ALM_TOKENIZER_DECODER_H
#define ALM_TOKENIZER_DECODER_H

#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "alm.h"
#include "tokenizer/buffers.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pattern.h"

typedef enum dec_kind {
    DEC_BYTE_LEVEL,    /* alphabet characters -> bytes, all tokens joined, lossy UTF-8 */
    DEC_METASPACE,     /* replacement -> ' ' (dropped in the first token unless "never") */
    DEC_REPLACE,       /* pattern -> content in each token */
    DEC_BYTE_FALLBACK, /* runs of <0xNN> tokens -> their bytes as UTF-8 */
    DEC_FUSE,          /* all tokens joined into one */
    DEC_STRIP,         /* up to start/stop `content` characters off each token */
} dec_kind;

typedef struct dec_step {
    dec_kind kind;
    tok_pattern pattern; /* Replace */
    char *text;          /* Replace content */
    size_t text_len;
    uint32_t ch;         /* Strip content / Metaspace replacement */
    size_t start, stop;  /* Strip */
    bool strip_first;    /* Metaspace: prepend_scheme != never */
} dec_step;

typedef struct decoder {
    dec_step *steps;
    size_t n;
    bool present; /* without a decoder HF joins tokens with spaces */
    byte_level_alphabet alphabet;
} decoder;

/* A list of strings in one buffer. */
typedef struct strlist {
    strbuf buf;
    size_t *start;
    size_t *len;
    size_t n, cap;
} strlist;

int strlist_push(strlist *l, const char *s, size_t len);
void strlist_clear(strlist *l);
void strlist_free(strlist *l);
static inline const char *strlist_at(const strlist *l, size_t i, size_t *len)
{
    *len = l->len[i];
    return l->buf.data + l->start[i];
}

int decoder_from_json(decoder *d, JsonNode *node, const char *where, alm_error *err);
void decoder_free(decoder *d);

/* Runs steps [from, to) over *tokens (using *scratch, swapping the two as
 * it goes). `first`: the list's first element starts the whole text. */
int decoder_run(const decoder *d, size_t from, size_t to, strlist **tokens, strlist **scratch,
                bool first, match_ctx *m, alm_error *err);

/* Decodes a whole list into out (replacing its content). */
int decoder_decode(const decoder *d, strlist *tokens, strbuf *out, alm_error *err);

/* ByteLevel's per-token half: appends the bytes a token stands for. */
int decoder_byte_level_bytes(const decoder *d, const char *s, size_t len, strbuf *out);

/* The Strip step on one string, appended to out. */
int decoder_strip(const dec_step *st, const char *s, size_t len, strbuf *out);

/* Recognises <0xNN>, HF's ByteFallback token spelling. */
bool decoder_byte_token(const char *s, size_t len, unsigned char *byte);

#endif
