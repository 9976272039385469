#include "tokenizer/byte_level.h"

#include <stdbool.h>

#include "tokenizer/utf8.h"

/* Bytes that stand for themselves: '!'..'~', '¡'..'¬', '®'..'ÿ'. */
static bool is_self_byte(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

void byte_level_alphabet_init(byte_level_alphabet *a)
{
    for (unsigned i = 0; i < BYTE_LEVEL_MAX_CP; i++)
        a->byte_of[i] = -1;
    unsigned next = 0x100; /* the others get U+0100.. in byte order */
    for (unsigned b = 0; b < 256; b++) {
        uint32_t cp = is_self_byte(b) ? b : next++;
        char buf[4];
        size_t n = utf8_encode(cp, buf);
        a->utf8[b][0] = buf[0];
        a->utf8[b][1] = n > 1 ? buf[1] : 0;
        a->utf8_len[b] = (uint8_t)n;
        a->byte_of[cp] = (int16_t)b;
    }
}
