/* validate.c - names, integers, limits, page tokens (see validate.h). */
#include "core/validate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/utf8.h"

int qn_name_check(const char *what, const char *name, qn_err *err)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s name is empty", what);
    if (n > QN_NAME_MAX)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s name is %zu bytes long; the limit is %d",
                          what, n, QN_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (i == 0 && !alnum)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "%s name \"%.128s\" must start with a letter or digit", what, name);
        if (!alnum && c != '.' && c != '_' && c != '-')
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "%s name \"%.128s\" may only contain letters, digits, '.', '_' and '-'",
                              what, name);
    }
    return 0;
}

int qn_colname_check(const char *what, const char *name, qn_err *err)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s name is empty", what);
    if (n > QN_COLNAME_MAX)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s name is %zu bytes long; the limit is %d",
                          what, n, QN_COLNAME_MAX);
    size_t ok = qn_utf8_check(name, n);
    if (ok != n) {
        char shown[96];
        qn_utf8_escape(shown, sizeof shown, name, n);
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "%s name \"%s\" is not valid UTF-8 (byte %zu)", what, shown, ok + 1);
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        /* C0, DEL, and C1 (U+0080..U+009F is encoded C2 80..C2 9F). */
        if (c < 0x20 || c == 0x7f || (c == 0xc2 && i + 1 < n && (unsigned char)name[i + 1] < 0xa0)) {
            char shown[96];
            qn_utf8_escape(shown, sizeof shown, name, n);
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "%s name \"%s\" holds a control character (byte %zu)", what, shown, i + 1);
        }
    }
    return 0;
}

int qn_uint_parse(const char *what, const char *s, int64_t max, int64_t *out, qn_err *err)
{
    int64_t v = 0;
    if (!s || !*s || strlen(s) > 18)
        goto bad;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            goto bad;
        v = v * 10 + (*p - '0');
    }
    if (v < 1 || v > max)
        goto bad;
    *out = v;
    return 0;
bad:
    return qn_err_set(err, QN_INVALID_ARGUMENT, "%s must be an integer from 1 to %lld, got \"%.32s\"",
                      what, (long long)max, s ? s : "");
}

int qn_limit_parse(const char *s, int64_t def, int64_t max, int64_t *out, qn_err *err)
{
    if (!s) {
        *out = def;
        return 0;
    }
    return qn_uint_parse("limit", s, max, out, err);
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *qn_page_token_encode(const char *scope, const char *key)
{
    size_t sl = strlen(scope), kl = strlen(key), n = sl + 1 + kl;
    char *raw = malloc(n + 1);
    char *out = malloc((n + 2) / 3 * 4 + 1);
    if (!raw || !out) {
        free(raw);
        free(out);
        return NULL;
    }
    memcpy(raw, scope, sl);
    raw[sl] = ':';
    memcpy(raw + sl + 1, key, kl);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)raw[i] << 16;
        if (i + 1 < n) v |= (unsigned char)raw[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned char)raw[i + 2];
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
        if (i + 1 < n) out[o++] = b64[(v >> 6) & 63];
        if (i + 2 < n) out[o++] = b64[v & 63];
    }
    out[o] = '\0';
    free(raw);
    return out;
}

static int b64val(char c)
{
    const char *p = c ? strchr(b64, c) : NULL;
    return p ? (int)(p - b64) : -1;
}

int qn_page_token_decode(const char *token, const char *scope, char *key, size_t keycap,
                         qn_err *err)
{
    key[0] = '\0';
    if (!token || !*token)
        return 0;
    size_t n = strlen(token);
    if (n > 1024 || n % 4 == 1)
        goto bad;
    char raw[800];
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int a = b64val(token[i]), b = i + 1 < n ? b64val(token[i + 1]) : -1;
        int c = i + 2 < n ? b64val(token[i + 2]) : 0, d = i + 3 < n ? b64val(token[i + 3]) : 0;
        if (a < 0 || b < 0 || c < 0 || d < 0)
            goto bad;
        unsigned v = (unsigned)a << 18 | (unsigned)b << 12 | (unsigned)c << 6 | (unsigned)d;
        raw[o++] = (char)(v >> 16);
        if (i + 2 < n) raw[o++] = (char)(v >> 8);
        if (i + 3 < n) raw[o++] = (char)v;
    }
    raw[o] = '\0';
    size_t sl = strlen(scope);
    if (o < sl + 1 || memcmp(raw, scope, sl) != 0 || raw[sl] != ':' || memchr(raw, 0, o))
        goto bad;
    if (o - sl - 1 >= keycap)
        goto bad;
    memcpy(key, raw + sl + 1, o - sl - 1);
    key[o - sl - 1] = '\0';
    return 0;
bad:
    return qn_err_set(err, QN_INVALID_ARGUMENT,
                      "page_token is not one this listing issued; pass next_page_token as returned");
}

int qn_page_begin(qn_page *pg, const char *scope, const char *limit, int64_t def, int64_t max,
                  const char *token, char after[QN_PAGE_KEY_MAX], qn_err *err)
{
    memset(pg, 0, sizeof *pg);
    pg->scope = scope;
    if (qn_limit_parse(limit, def, max, &pg->limit, err) < 0 ||
        qn_page_token_decode(token, scope, after, QN_PAGE_KEY_MAX, err) < 0)
        return err->code;
    pg->items = json_array();
    return pg->items ? 0 : qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
}

int qn_page_full(qn_page *pg)
{
    if ((int64_t)json_array_size(pg->items) < pg->limit)
        return 0;
    pg->more = 1;
    return 1;
}

void qn_page_add(qn_page *pg, json_t *item, const char *key)
{
    json_array_append_new(pg->items, item);
    snprintf(pg->last, sizeof pg->last, "%s", key ? key : "");
}

void qn_page_add_int(qn_page *pg, json_t *item, int64_t key)
{
    char k[24];
    snprintf(k, sizeof k, "%lld", (long long)key);
    qn_page_add(pg, item, k);
}

json_t *qn_page_finish(qn_page *pg, const char *field)
{
    json_t *out = json_object();
    json_object_set_new(out, field, pg->items);
    pg->items = NULL;
    if (pg->more) {
        char *tok = qn_page_token_encode(pg->scope, pg->last);
        json_object_set_new(out, "next_page_token", json_string(tok ? tok : ""));
        free(tok);
    }
    return out;
}

void qn_page_free(qn_page *pg)
{
    json_decref(pg->items);
    pg->items = NULL;
}
