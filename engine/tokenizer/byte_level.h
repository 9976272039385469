/* The byte-level alphabet of GPT-2 style tokenizers: every byte is shown as
 * a printable character (printable Latin-1 bytes as themselves, the others
 * as U+0100 upwards), so that BPE works on text and never sees raw bytes. */
#ifndef ALM_TOKENIZER_BYTE_LEVEL_H
#define ALM_TOKENIZER_BYTE_LEVEL_H

#include <stdint.h>

#define BYTE_LEVEL_MAX_CP 0x144 /* one past the largest code point used */

typedef struct byte_level_alphabet {
    char utf8[256][2];   /* each byte's character, UTF-8 encoded */
    uint8_t utf8_len[256];
    int16_t byte_of[BYTE_LEVEL_MAX_CP]; /* code point -> byte, -1 if none */
} byte_level_alphabet;

void byte_level_alphabet_init(byte_level_alphabet *a);

#endif
