/*
 * buf.c - growable byte buffer with a hard maximum (see buf.h).
 *
 * Capacity doubles (at least 64 bytes) and is clamped to max + 1 so the
 * terminating NUL always fits; nothing past max is ever allocated. Every
 * failing call leaves the buffer exactly as it was and records its code in
 * b->err; while b->err is set every append returns it at once (sticky).
 */
#include "core/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

void qn_buf_init(qn_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
    b->err = 0;
}

/* Makes room for extra more bytes plus the NUL. */
static int reserve(qn_buf *b, size_t extra)
{
    size_t limit = b->max < SIZE_MAX ? b->max + 1 : SIZE_MAX;
    if (extra > b->max || b->len > b->max - extra || b->len + extra >= limit)
        return QN_RESOURCE_EXHAUSTED;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > limit / 2 ? limit : cap * 2;
    if (cap > limit)
        cap = limit;
    char *d = realloc(b->data, cap);
    if (!d)
        return QN_RESOURCE_EXHAUSTED;
    b->data = d;
    b->cap = cap;
    return 0;
}

/* Records the first failure; returns rc. */
static int stick(qn_buf *b, int rc)
{
    if (rc < 0 && !b->err)
        b->err = rc;
    return rc;
}

int qn_buf_reserve(qn_buf *b, size_t extra)
{
    if (b->err)
        return b->err;
    return stick(b, reserve(b, extra));
}

int qn_buf_append(qn_buf *b, const void *data, size_t len)
{
    if (b->err)
        return b->err;
    int rc = reserve(b, len);
    if (rc < 0)
        return stick(b, rc);
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int qn_buf_puts(qn_buf *b, const char *s)
{
    return qn_buf_append(b, s, strlen(s));
}

int qn_buf_printf(qn_buf *b, const char *fmt, ...)
{
    if (b->err)
        return b->err;
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    size_t room = b->cap > b->len ? b->cap - b->len : 0;
    int n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, ap);
    va_end(ap);
    int rc = 0;
    if (n < 0) {
        rc = QN_RESOURCE_EXHAUSTED;
        if (b->data)
            b->data[b->len] = '\0';
    } else if ((size_t)n < room && (size_t)n <= b->max - b->len) {
        b->len += (size_t)n; /* it fitted the first time */
    } else if ((rc = reserve(b, (size_t)n)) == 0) {
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    } else if (b->data) {
        b->data[b->len] = '\0'; /* undo the truncated first attempt */
    }
    va_end(ap2);
    return stick(b, rc);
}

int qn_buf_error(const qn_buf *b)
{
    return b->err;
}

void qn_buf_reset(qn_buf *b)
{
    b->len = 0;
    b->err = 0;
    if (b->data)
        b->data[0] = '\0';
}

char *qn_buf_detach(qn_buf *b, size_t *len)
{
    if (b->err) {
        qn_buf_free(b);
        if (len)
            *len = 0;
        return NULL;
    }
    char *d = b->data;
    if (!d)
        d = calloc(1, 1);
    if (len)
        *len = d ? b->len : 0;
    b->data = NULL;
    b->len = b->cap = 0;
    return d;
}

void qn_buf_free(qn_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->err = 0;
}
