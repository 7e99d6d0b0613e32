/*
 * http_route.c - path splitting, percent-decoding and template matching for
 * the HTTP server (http.c). Kept apart so the fuzz target reaches it without
 * a socket. Paths arrive raw from the network: every byte is checked before
 * use and nothing is written past the caller's buffers.
 */
#include "core/http_route.h"

#include <string.h>

#include "core/err.h"

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long qn__pct_decode(const char *in, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '%') {
            if (len - i < 3)
                return -1;
            int hi = hexval((unsigned char)in[i + 1]), lo = hexval((unsigned char)in[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            if (c == '\0')
                return -1;
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    return (long)o;
}

int qn__path_split(const char *path, char *buf, size_t bufsize, const char **segs,
                   size_t maxsegs, size_t *nsegs)
{
    size_t end = strcspn(path, "?#");
    size_t used = 0, n = 0;

    *nsegs = 0;
    if (end == 0 || path[0] != '/')
        return QN_INVALID_ARGUMENT;
    /* Decoding never grows a segment, so end + 1 bytes always suffice. */
    if (bufsize < end + 1)
        return QN_OUT_OF_RANGE;
    size_t i = 1;
    for (;;) {
        size_t j = i;
        while (j < end && path[j] != '/')
            j++;
        if (n == maxsegs)
            return QN_OUT_OF_RANGE;
        long d = qn__pct_decode(path + i, j - i, buf + used);
        if (d < 0)
            return QN_INVALID_ARGUMENT;
        segs[n++] = buf + used;
        used += (size_t)d + 1;
        if (j >= end)
            break;
        i = j + 1;
    }
    *nsegs = n;
    return 0;
}

int qn__template_match(const char *tmpl, const char *const *segs, size_t nsegs,
                       qn__param *params, size_t maxparams, size_t *nparams)
{
    size_t s = 0, np = 0;
    const char *p = tmpl;

    *nparams = 0;
    if (*p != '/')
        return 0;
    p++;
    for (;;) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (s == nsegs)
            return 0;
        const char *seg = segs[s++];
        if (len >= 2 && p[0] == '{' && p[len - 1] == '}') {
            if (seg[0] == '\0' || np == maxparams)
                return 0;
            params[np].name = p + 1;
            params[np].name_len = len - 2;
            params[np].value = seg;
            np++;
        } else if (strlen(seg) != len || memcmp(seg, p, len) != 0) {
            return 0;
        }
        if (!e)
            break;
        p = e + 1;
    }
    if (s != nsegs)
        return 0;
    *nparams = np;
    return 1;
}

int qn__template_valid(const char *tmpl)
{
    if (!tmpl || tmpl[0] != '/')
        return 0;
    for (const char *p = tmpl + 1;;) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (memchr(p, '{', len) || memchr(p, '}', len)) {
            if (len < 3 || p[0] != '{' || p[len - 1] != '}')
                return 0;
            for (size_t i = 1; i < len - 1; i++) {
                char c = p[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_'))
                    return 0;
            }
        }
        if (!e)
            break;
        p = e + 1;
    }
    return 1;
}
