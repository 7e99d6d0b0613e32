/*
 * utf8.c - UTF-8 validation, truncation on character boundaries and
 * escaping of bad bytes (see utf8.h). The decoder follows the table of
 * well-formed byte sequences in Unicode 15, section 3.9 (table 3-7), which
 * is what rules out overlong forms and surrogates byte by byte.
 */
#include "core/utf8.h"

#include <string.h>

/* The length of the valid character starting at s[0] (at most len bytes
 * available), or 0 when the bytes there are not one. */
static size_t char_len(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return len >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (len < 3)
            return 0;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c == 0xE0)
            lo = 0xA0; /* overlong below U+0800 */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates U+D800..DFFF */
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (len < 4)
            return 0;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c == 0xF0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80 ? 4
                                                                                          : 0;
    }
    return 0;
}

size_t qn_utf8_check(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = char_len(p + i, len - i);
        if (n == 0)
            return i;
        i += n;
    }
    return len;
}

int qn_utf8_valid(const char *s, size_t len)
{
    return qn_utf8_check(s, len) == len;
}

size_t qn_utf8_trunc(const char *s, size_t len, size_t max)
{
    const unsigned char *p = (const unsigned char *)s;
    if (max >= len)
        return len;
    /* Back up to the lead byte of the character that straddles max, if any:
     * at most three continuation bytes. */
    size_t i = max, back = 0;
    while (i > 0 && back < 3 && (p[i] & 0xC0) == 0x80) {
        i--;
        back++;
    }
    if (i == max)
        return max; /* max is already on a lead byte or ASCII */
    size_t n = char_len(p + i, len - i);
    if (n > 0 && i + n > max)
        return i; /* a valid character would be cut: drop all of it */
    return max;   /* bad bytes: cutting between them splits no character */
}

size_t qn_utf8_escape(char *out, size_t cap, const char *in, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)in;
    size_t o = 0, i = 0;

    if (cap == 0)
        return 0;
    while (i < len) {
        size_t n = p[i] == 0 ? 0 : p[i] < 0x80 ? 1 : char_len(p + i, len - i);
        if (n > 0) {
            if (o + n > cap - 1)
                break;
            memcpy(out + o, p + i, n);
            o += n;
            i += n;
        } else {
            if (o + 4 > cap - 1)
                break;
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[p[i] >> 4];
            out[o++] = hex[p[i] & 15];
            i++;
        }
    }
    out[o] = '\0';
    return o;
}
