/*
 * csvout.c - a frame written as RFC 4180 CSV, hashed on the way out.
 *
 * The output is what the registry stores as a dataset's data.csv: a header
 * row, CRLF line ends, fields quoted only when they must be (a comma, a
 * quote, CR or LF inside; quotes doubled), missing cells empty. That is also
 * what Python's csv module writes by default, so a reader anywhere gets the
 * cells back exactly. The SHA-256 is computed over the same bytes as they
 * are written, so the blob's digest is known without reading the file again.
 * Rows are written by a fast path when the buffer has room for the longest
 * row the columns can make: cells copied without a check each. (The output
 * goes to a file, not to a buffer in memory sent from there: 36 MB of fresh
 * anonymous memory cost prep 0.3-0.8 s more in page faults on this virtual
 * machine than the file's page cache.)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

static inline int want_flush(const out *o)
{
    return o->b.len >= FLUSH_AT;
}

/* Most puts are a few bytes into room the buffer has: copied in place
 * (keeping qn_buf's NUL), without qn_buf_append's checks per call. */
static inline void put(out *o, const char *s, size_t n)
{
    if (!o->b.err && o->b.cap - o->b.len > n) {
        memcpy(o->b.data + o->b.len, s, n);
        o->b.len += n;
        o->b.data[o->b.len] = '\0';
    } else if (qn_buf_append(&o->b, s, n) < 0) {
        o->failed = 1;
    }
    if (want_flush(o))
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

/* Texts already written, per column. A categorical cell is written as its
 * dictionary string, so whether it needs quotes and its length are found
 * once per code, not once per cell. A number or a time is formatted once
 * per distinct value met recently: a direct-mapped cache on its bits
 * (prices, quantities and invoice times repeat a lot). */
#define CACHE_SLOTS 1024

typedef struct num_slot {
    uint64_t bits;
    uint8_t len;        /* 0: empty */
    char text[31];
} num_slot;

typedef struct col_cache {
    size_t ncodes;
    int8_t *quote;      /* per code: -1 not yet known, 0 plain, 1 needs quotes */
    uint32_t *len;
    const char **str;   /* per code: its string (set with len by cell_max) */
    num_slot *slots;
} col_cache;

static int needs_quotes(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n')
            return 1;
    return 0;
}

static void put_cat(out *o, col_cache *cc, const qml_column *c, int32_t code)
{
    const char *s = qml_dict_str(c->dict, code);
    if (!s) /* a code the dictionary lacks: no text, written as a missing cell */
        return;
    if (!cc->quote || (size_t)code >= cc->ncodes) { /* no cache (out of memory): the plain way */
        field(o, s, strlen(s));
        return;
    }
    if (cc->quote[code] < 0) {
        size_t n = strlen(s);
        cc->len[code] = (uint32_t)(n > UINT32_MAX ? UINT32_MAX : n);
        cc->quote[code] = (int8_t)(n > UINT32_MAX || needs_quotes(s, n));
    }
    if (cc->quote[code])
        field(o, s, strlen(s));
    else
        put(o, s, cc->len[code]);
}

static void put_num(out *o, col_cache *cc, const qml_column *c, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    num_slot *sl = cc->slots ? &cc->slots[(bits ^ (bits >> 29) ^ (bits >> 47)) % CACHE_SLOTS] : NULL;
    if (sl && sl->len && sl->bits == bits) {
        put(o, sl->text, sl->len);
        return;
    }
    char tb[64];
    int n = c->type == QML_TIMESTAMP ? qml_format_timestamp(v, tb, sizeof tb) : qml_format_number(v, tb, sizeof tb);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof tb)
        n = (int)sizeof tb - 1;
    put(o, tb, (size_t)n);
    if (sl && n > 0 && (size_t)n < sizeof sl->text) {
        sl->bits = bits;
        sl->len = (uint8_t)n;
        memcpy(sl->text, tb, (size_t)n);
    }
}

static void caches_free(col_cache *cc, size_t nc)
{
    for (size_t j = 0; cc && j < nc; j++) {
        free(cc[j].quote);
        free(cc[j].len);
        free(cc[j].str);
        free(cc[j].slots);
    }
    free(cc);
}

/* The caches of f's columns; a column whose cache cannot be had is written
 * without one. NULL only when the array itself cannot be had. */
static col_cache *caches_new(const qml_frame *f)
{
    size_t nc = qml_frame_ncols(f);
    col_cache *cc = calloc(nc ? nc : 1, sizeof *cc);
    for (size_t j = 0; cc && j < nc; j++) {
        const qml_column *c = qml_frame_col(f, j);
        if (c->type == QML_CATEGORICAL) {
            size_t n = qml_dict_size(c->dict);
            cc[j].quote = malloc(n ? n : 1);
            cc[j].len = malloc((n ? n : 1) * sizeof *cc[j].len);
            cc[j].str = malloc((n ? n : 1) * sizeof *cc[j].str);
            if (!cc[j].quote || !cc[j].len || !cc[j].str) {
                free(cc[j].quote);
                free(cc[j].len);
                free(cc[j].str);
                cc[j].quote = NULL;
                cc[j].len = NULL;
                cc[j].str = NULL;
                continue;
            }
            memset(cc[j].quote, -1, n ? n : 1);
            cc[j].ncodes = n;
        } else if (c->type != QML_BOOLEAN) {
            cc[j].slots = calloc(CACHE_SLOTS, sizeof *cc[j].slots);
        }
    }
    return cc;
}

/* The most bytes one cell of column c can take (quoted: every byte a
 * doubled quote, plus the two quotes), and the per-code texts of a
 * categorical column filled in at once. 0 when no bound is known (a column
 * without its cache): rows are then written by the checked path. */
static size_t cell_max(col_cache *cc, const qml_column *c)
{
    switch (c->type) {
    case QML_BOOLEAN:
        return 5;
    case QML_NUMERIC:
    case QML_TIMESTAMP:
        return cc->slots ? 64 : 0;
    case QML_CATEGORICAL:
        break;
    }
    if (!cc->quote)
        return 0;
    size_t most = 0;
    for (size_t k = 0; k < cc->ncodes; k++) {
        const char *s = qml_dict_str(c->dict, (int32_t)k);
        size_t n = strlen(s);
        if (n > UINT32_MAX / 2 - 2)
            return 0;
        cc->len[k] = (uint32_t)n;
        cc->str[k] = s;
        cc->quote[k] = (int8_t)needs_quotes(s, n);
        size_t w = cc->quote[k] ? 2 * n + 2 : n;
        most = w > most ? w : most;
    }
    return most;
}

/* One row into p, which has room for the longest row: no check per cell.
 * Returns the end. */
static char *fast_row(char *p, const qml_column *const *cols, col_cache *cc, size_t nc, size_t r)
{
    for (size_t j = 0; j < nc; j++) {
        const qml_column *c = cols[j];
        if (j)
            *p++ = ',';
        if (c->missing[r])
            continue;
        switch (c->type) {
        case QML_CATEGORICAL: {
            uint32_t code = (uint32_t)c->cat[r];
            if (code >= cc[j].ncodes) /* a code the dictionary lacks: empty */
                break;
            const char *s = cc[j].str[code];
            size_t n = cc[j].len[code];
            if (!cc[j].quote[code]) {
                memcpy(p, s, n);
                p += n;
                break;
            }
            *p++ = '"';
            for (size_t i = 0; i < n; i++) {
                if (s[i] == '"')
                    *p++ = '"';
                *p++ = s[i];
            }
            *p++ = '"';
            break;
        }
        case QML_NUMERIC:
        case QML_TIMESTAMP: {
            double v = c->num[r];
            uint64_t bits;
            memcpy(&bits, &v, sizeof bits);
            num_slot *sl = &cc[j].slots[(bits ^ (bits >> 29) ^ (bits >> 47)) % CACHE_SLOTS];
            if (sl->len && sl->bits == bits) {
                memcpy(p, sl->text, sizeof sl->text); /* fixed size: one move; the tail is overwritten */
                p += sl->len;
                break;
            }
            char tb[64];
            int n = c->type == QML_TIMESTAMP ? qml_format_timestamp(v, tb, sizeof tb)
                                             : qml_format_number(v, tb, sizeof tb);
            if (n < 0)
                n = 0;
            if ((size_t)n >= sizeof tb)
                n = (int)sizeof tb - 1;
            memcpy(p, tb, (size_t)n);
            p += n;
            if (n > 0 && (size_t)n < sizeof sl->text) {
                sl->bits = bits;
                sl->len = (uint8_t)n;
                memcpy(sl->text, tb, (size_t)n);
            }
            break;
        }
        case QML_BOOLEAN:
            if (c->num[r] != 0) {
                memcpy(p, "true", 4);
                p += 4;
            } else {
                memcpy(p, "false", 5);
                p += 5;
            }
            break;
        }
    }
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/* The same row through put (any size; a buffer that cannot grow fails). */
static void slow_row(out *o, const qml_column *const *cols, col_cache *cc, size_t nc, size_t r)
{
    for (size_t j = 0; j < nc; j++) {
        const qml_column *c = cols[j];
        if (j)
            put(o, ",", 1);
        if (c->missing[r])
            continue;
        switch (c->type) {
        case QML_CATEGORICAL:
            put_cat(o, &cc[j], c, c->cat[r]);
            break;
        case QML_NUMERIC:
        case QML_TIMESTAMP:
            put_num(o, &cc[j], c, c->num[r]);
            break;
        case QML_BOOLEAN:
            put(o, c->num[r] != 0 ? "true" : "false", c->num[r] != 0 ? 4 : 5);
            break;
        }
    }
    put(o, "\r\n", 2);
}

/* The CSV of f through o, hashed; the digest into hex. */
static int write_csv(const qml_frame *f, out *o, char hex[QN_SHA256_HEX + 1], uint64_t *bytes, qn_err *err)
{
    size_t nc = qml_frame_ncols(f), nr = qml_frame_nrows(f);
    const qml_column **cols = malloc((nc ? nc : 1) * sizeof *cols);
    col_cache *cc = caches_new(f);
    int rc = 0;
    if (!o->h || !cols || !cc) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t j = 0; j < nc; j++) {
        cols[j] = qml_frame_col(f, j);
        if (j)
            put(o, ",", 1);
        field(o, cols[j]->name, strlen(cols[j]->name));
    }
    put(o, "\r\n", 2);
    /* The longest row the columns can make (a field's bound, the commas,
     * CRLF and the NUL); 0 when some column has no bound. */
    size_t rowmax = nc + 3;
    for (size_t j = 0; j < nc && rowmax; j++) {
        size_t m = cell_max(&cc[j], cols[j]);
        rowmax = m && m < FLUSH_AT ? rowmax + m : 0;
    }
    if (rowmax > FLUSH_AT)
        rowmax = 0;
    for (size_t r = 0; r < nr && !o->failed; r++) {
        /* Room for the longest row (there is, but for a buffer that could
         * not be reserved at once); else the checked path. */
        if (rowmax && o->b.cap - o->b.len <= rowmax && !o->b.err && o->b.len + rowmax <= o->b.max)
            (void)qn_buf_reserve(&o->b, rowmax);
        if (rowmax && !o->b.err && o->b.cap - o->b.len > rowmax) {
            char *end = fast_row(o->b.data + o->b.len, cols, cc, nc, r);
            o->b.len = (size_t)(end - o->b.data);
            o->b.data[o->b.len] = '\0';
            if (want_flush(o))
                flush(o);
        } else {
            slow_row(o, cols, cc, nc, r);
        }
    }
    flush(o);
    qn_sha256_final(o->h, hex);
    *bytes = o->bytes;
    if (qn_buf_error(&o->b) < 0) /* a cell larger than the buffer, not the disk */
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "a CSV cell does not fit in the %zu-byte output buffer",
                        o->b.max);
    else if (o->failed)
        rc = qn_err_set(err, QN_INTERNAL, "cannot write the CSV output (disk full?)");
out:
    caches_free(cc, nc);
    free(cols);
    return rc;
}

int prep_csv_write(const qml_frame *f, FILE *file, char hex[QN_SHA256_HEX + 1], uint64_t *bytes, qn_err *err)
{
    out o = {.f = file, .h = qn_sha256_new()};
    qn_buf_init(&o.b, 2 * FLUSH_AT + (1u << 20) * 17);
    (void)qn_buf_reserve(&o.b, 2 * FLUSH_AT); /* else put grows it as it goes */
    int rc = write_csv(f, &o, hex, bytes, err);
    qn_sha256_free(o.h);
    qn_buf_free(&o.b);
    return rc;
}
