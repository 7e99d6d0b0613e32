/*
 * buf.h - a growable byte buffer with a maximum (as curl's dynbuf).
 *
 *     qn_buf b;
 *     qn_buf_init(&b, 1 << 20);                 // never grows past 1 MiB
 *     if (qn_buf_append(&b, data, n) < 0) ...   // QN_RESOURCE_EXHAUSTED past the max
 *     qn_buf_printf(&b, "%d\n", x);
 *     use(b.data, b.len);                       // data is NUL-terminated
 *     qn_buf_free(&b);
 *
 * Plain data; one thread at a time.
 */
#ifndef QN_BUF_H
#define QN_BUF_H

#include <stddef.h>

typedef struct qn_buf {
    char *data;  /* NUL-terminated when len > 0 (or after any append) */
    size_t len;
    size_t cap;
    size_t max;  /* the most len may reach */
} qn_buf;

void qn_buf_init(qn_buf *b, size_t max);
/* 0, or QN_RESOURCE_EXHAUSTED when the result would exceed max or memory ran out
 * (the buffer is then unchanged). */
int qn_buf_append(qn_buf *b, const void *data, size_t len);
int qn_buf_puts(qn_buf *b, const char *s);
int qn_buf_printf(qn_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Empties the buffer, keeping its memory. */
void qn_buf_reset(qn_buf *b);
/* Hands the memory to the caller (who frees it) and empties the buffer. */
char *qn_buf_detach(qn_buf *b, size_t *len);
void qn_buf_free(qn_buf *b);

#endif
