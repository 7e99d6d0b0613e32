/*
 * csvout.c - a frame written as RFC 4180 CSV, hashed on the way out.
 *
 * The output is what the registry stores as a dataset's data.csv: a header
 * row, CRLF line ends, fields quoted only when they must be (a comma, a
 * quote, CR or LF inside; quotes doubled), missing cells empty. That is also
 * what Python's csv module writes by default, so a reader anywhere gets the
 * cells back exactly. The SHA-256 is computed over the same bytes as they
 * are written, so the blob's digest is known without reading the file again.
 */
#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "ml/schema.h"
#include "prep/prep.h"

#define FLUSH_AT (256 * 1024)

typedef struct out {
    FILE *f;
    qn_sha256 *h;
    qn_buf b;
    uint64_t bytes;
    int failed;
} out;

static void flush(out *o)
{
    if (o->b.len == 0 || o->failed)
        return;
    qn_sha256_update(o->h, o->b.data, o->b.len);
    if (fwrite(o->b.data, 1, o->b.len, o->f) != o->b.len)
        o->failed = 1;
    o->bytes += o->b.len;
    qn_buf_reset(&o->b);
}

static void put(out *o, const char *s, size_t n)
{
    if (qn_buf_append(&o->b, s, n) < 0)
        o->failed = 1;
    if (o->b.len >= FLUSH_AT)
        flush(o);
}

static void field(out *o, const char *s, size_t n)
{
    int quote = 0;
    for (size_t i = 0; i < n && !quote; i++)
        quote = s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n';
    if (!quote) {
        put(o, s, n);
        return;
    }
    put(o, "\"", 1);
    const char *start = s;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '"') {
            put(o, start, (size_t)(s + i + 1 - start));
            put(o, "\"", 1);
            start = s + i + 1;
        }
    put(o, start, (size_t)(s + n - start));
    put(o, "\"", 1);
}

int prep_csv_write(const qml_frame *f, FILE *file, char hex[QN_SHA256_HEX + 1], uint64_t *bytes, qn_err *err)
{
    out o = {.f = file, .h = qn_sha256_new()};
    if (!o.h)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    qn_buf_init(&o.b, 2 * FLUSH_AT + (1u << 20) * 17);
    size_t nc = qml_frame_ncols(f), nr = qml_frame_nrows(f);
    for (size_t j = 0; j < nc; j++) {
        if (j)
            put(&o, ",", 1);
        const char *name = qml_frame_col(f, j)->name;
        field(&o, name, strlen(name));
    }
    put(&o, "\r\n", 2);
    char tb[64];
    for (size_t r = 0; r < nr && !o.failed; r++) {
        for (size_t j = 0; j < nc; j++) {
            const qml_column *c = qml_frame_col(f, j);
            if (j)
                put(&o, ",", 1);
            if (c->missing[r])
                continue;
            switch (c->type) {
            case QML_CATEGORICAL: {
                const char *s = qml_dict_str(c->dict, c->cat[r]);
                field(&o, s, strlen(s));
                break;
            }
            case QML_NUMERIC:
                put(&o, tb, (size_t)qml_format_number(c->num[r], tb, sizeof tb));
                break;
            case QML_TIMESTAMP:
                put(&o, tb, (size_t)qml_format_timestamp(c->num[r], tb, sizeof tb));
                break;
            case QML_BOOLEAN:
                put(&o, c->num[r] != 0 ? "true" : "false", c->num[r] != 0 ? 4 : 5);
                break;
            }
        }
        put(&o, "\r\n", 2);
    }
    flush(&o);
    qn_sha256_final(o.h, hex);
    qn_sha256_free(o.h);
    int toobig = qn_buf_error(&o.b) < 0; /* a cell larger than the buffer, not the disk */
    qn_buf_free(&o.b);
    *bytes = o.bytes;
    if (toobig)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "a CSV cell does not fit in the %u-byte output buffer",
                          2 * FLUSH_AT + (1u << 20) * 17);
    if (o.failed)
        return qn_err_set(err, QN_INTERNAL, "cannot write the CSV output (disk full?)");
    return 0;
}
