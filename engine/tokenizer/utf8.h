/* UTF-8 helpers with the exact semantics Hugging Face tokenizers inherits from
 * Rust: strict validation, and lossy conversion that replaces each maximal
 * invalid subpart with one U+FFFD (String::from_utf8_lossy). */
#ifndef ALM_TOKENIZER_UTF8_H
#define ALM_TOKENIZER_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/buffers.h"

#define UTF8_REPLACEMENT "\xEF\xBF\xBD"

/* What utf8_scan found at the start of a byte sequence. */
enum utf8_scan_result {
    UTF8_CHAR,       /* a complete, valid character */
    UTF8_INVALID,    /* an invalid maximal subpart (one U+FFFD) */
    UTF8_INCOMPLETE, /* a valid prefix cut short by the end of the input */
};

/* Looks at s[0..n) (n >= 1): returns the kind and sets *adv to the number of
 * bytes it covers. */
enum utf8_scan_result utf8_scan(const unsigned char *s, size_t n, size_t *adv);

bool utf8_validate(const char *s, size_t len);

/* Appends the lossy conversion of s[0..len). When `final` is false, a valid
 * but incomplete sequence at the end is not converted: *consumed tells how
 * many bytes were. Returns 0 or -ENOMEM. */
int utf8_lossy_append(strbuf *out, const char *s, size_t len, bool final, size_t *consumed);

/* Byte length of the character starting with `lead`, for valid UTF-8. */
static inline size_t utf8_char_len(unsigned char lead)
{
    if (lead < 0x80)
        return 1;
    if (lead < 0xE0)
        return 2;
    if (lead < 0xF0)
        return 3;
    return 4;
}

/* Decodes the character at s[*i] of valid UTF-8 and advances *i. */
static inline uint32_t utf8_next(const char *s, size_t *i)
{
    const unsigned char *p = (const unsigned char *)s + *i;
    uint32_t c = p[0];
    if (c < 0x80) {
        *i += 1;
        return c;
    }
    if (c < 0xE0) {
        *i += 2;
        return ((c & 0x1F) << 6) | (p[1] & 0x3F);
    }
    if (c < 0xF0) {
        *i += 3;
        return ((c & 0x0F) << 12) | ((uint32_t)(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    }
    *i += 4;
    return ((c & 0x07) << 18) | ((uint32_t)(p[1] & 0x3F) << 12) |
           ((uint32_t)(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
}

/* Writes cp as UTF-8 into out and returns the byte count (1 to 4). */
size_t utf8_encode(uint32_t cp, char out[4]);

/* Rust's char::is_whitespace: the Unicode White_Space property. */
bool unicode_is_white_space(uint32_t cp);

/* Number of characters (code points) in valid UTF-8. */
size_t utf8_count_chars(const char *s, size_t len);

#endif
