/*
 * buf.h - a growable byte buffer with a maximum (as curl's dynbuf), whose
 * errors are sticky (as SQLite's sqlite3_str).
 *
 *     qn_buf b;
 *     qn_buf_init(&b, 1 << 20);                 // never grows past 1 MiB
 *     qn_buf_puts(&b, "{\"n\":");
 *     qn_buf_printf(&b, "%d}", x);
 *     if (qn_buf_error(&b) < 0) ...             // QN_RESOURCE_EXHAUSTED: some append failed
 *     use(b.data, b.len);                       // data is NUL-terminated
 *     qn_buf_free(&b);
 *
 * Sticky errors: the first append that fails (past max, or out of memory) is
 * remembered in b->err; every later append is then a no-op that returns the
 * same error, and the buffer holds exactly what it held before that first
 * failure. A caller building a document from many appends may therefore
 * ignore the individual results and check once, at the end, with
 * qn_buf_error() or qn_buf_detach() (both must be checked: QN_MUST_CHECK).
 * What it must never do is use b.data without that check, since the
 * document may be cut short. Appends are not QN_MUST_CHECK for this reason.
 * qn_buf_reset() and qn_buf_free() clear the error.
 *
 * Plain data; one thread at a time.
 */
#ifndef QN_BUF_H
#define QN_BUF_H

#include <stddef.h>

#include "core/err.h"

typedef struct qn_buf {
    char *data;  /* NUL-terminated when len > 0 (or after any append) */
    size_t len;
    size_t cap;
    size_t max;  /* the most len may reach */
    int err;     /* 0, or the first failure (a qn_code) until reset/free */
} qn_buf;

void qn_buf_init(qn_buf *b, size_t max);
/* 0, or QN_RESOURCE_EXHAUSTED when the result would exceed max or memory ran
 * out: the buffer is then unchanged and the error sticks (see above). Once an
 * append has failed, every later one returns that error and does nothing. */
/* Makes room for extra more bytes at once (a buffer about to take a known
 * amount grows once instead of doubling its way there, copying each time).
 * 0, or the sticky error when that would pass max or memory runs out. */
int qn_buf_reserve(qn_buf *b, size_t extra);
int qn_buf_append(qn_buf *b, const void *data, size_t len);
int qn_buf_puts(qn_buf *b, const char *s);
int qn_buf_printf(qn_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* 0 when every append since init/reset succeeded, else the first failure. */
QN_MUST_CHECK int qn_buf_error(const qn_buf *b);
/* Empties the buffer and clears its error, keeping its memory. */
void qn_buf_reset(qn_buf *b);
/* Hands the memory to the caller (who frees it) and empties the buffer.
 * NULL when an append failed (the memory is freed and the error cleared:
 * a cut-short document is never handed out) or out of memory. */
QN_MUST_CHECK char *qn_buf_detach(qn_buf *b, size_t *len);
void qn_buf_free(qn_buf *b);

#endif
