#include "tokenizer/utf8.h"

#include <errno.h>

enum utf8_scan_result utf8_scan(const unsigned char *s, size_t n, size_t *adv)
{
    unsigned char b = s[0];
    if (b < 0x80) {
        *adv = 1;
        return UTF8_CHAR;
    }
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (b >= 0xC2 && b <= 0xDF) {
        need = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        if (b == 0xE0)
            lo = 0xA0; /* no overlong forms */
        else if (b == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        if (b == 0xF0)
            lo = 0x90;
        else if (b == 0xF4)
            hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        *adv = 1;
        return UTF8_INVALID;
    }
    for (size_t k = 1; k < need; k++) {
        if (k >= n) {
            *adv = n;
            return UTF8_INCOMPLETE;
        }
        unsigned char c = s[k];
        unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (c < l || c > h) {
            *adv = k;
            return UTF8_INVALID;
        }
    }
    *adv = need;
    return UTF8_CHAR;
}

bool utf8_validate(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        /* ASCII runs are the common case: skip them eight at a time. */
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ULL)
                break;
            i += 8;
        }
        if (i >= len)
            break;
        size_t adv;
        if (utf8_scan(p + i, len - i, &adv) != UTF8_CHAR)
            return false;
        i += adv;
    }
    return true;
}

int utf8_lossy_append(strbuf *out, const char *s, size_t len, bool final, size_t *consumed)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0; /* run: start of the valid bytes not yet copied */
    int r;
    while (i < len) {
        size_t adv;
        enum utf8_scan_result k = utf8_scan(p + i, len - i, &adv);
        if (k == UTF8_CHAR) {
            i += adv;
            continue;
        }
        if (k == UTF8_INCOMPLETE && !final)
            break;
        if ((r = strbuf_append(out, s + run, i - run)) < 0 ||
            (r = strbuf_append(out, UTF8_REPLACEMENT, 3)) < 0)
            return r;
        i += adv;
        run = i;
    }
    if ((r = strbuf_append(out, s + run, i - run)) < 0)
        return r;
    if (consumed)
        *consumed = i;
    return 0;
}

size_t utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

bool unicode_is_white_space(uint32_t cp)
{
    if (cp <= 0x20)
        return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
    switch (cp) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029:
    case 0x202F: case 0x205F: case 0x3000:
        return true;
    default:
        return cp >= 0x2000 && cp <= 0x200A;
    }
}

size_t utf8_count_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}
