/*
 * records.c - request bodies into canonical JSON rows (see records.h).
 *
 * One output buffer per batch: every row is written straight into it as
 * canonical text (no per-row JSON document is built on output), and a bad
 * row is rolled back by resetting the length, so a batch of a million cells
 * costs a handful of allocations beyond jansson's parse of each JSON row.
 * JSON arrays are read element by element (jansson stops after each value),
 * so a large array never becomes one large tree in memory.
 */
#include "ml/records.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/validate.h"
#include "ml/csv.h"

/* ---- schema ---------------------------------------------------------------- */

void qml_rec_schema_free(qml_rec_schema *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->ncols; i++)
        free(s->cols[i].name);
    free(s->cols);
    free(s->by_name);
    json_decref(s->csv);
    free(s);
}

#define CSV_NA_MAX 16

/* Checks a dataset's CSV dialect and returns its normal form (new reference). */
static json_t *csv_dialect(const json_t *d, qn_err *err)
{
    const char *k;
    json_t *v;
    if (!json_is_object(d)) {
        qn_err_set(err, QN_INVALID_ARGUMENT, "schema: csv must be an object");
        return NULL;
    }
    json_object_foreach((json_t *)d, k, v) {
        const char *sv = json_string_value(v);
        if (!strcmp(k, "delimiter")) {
            if (!sv || (strcmp(sv, ",") && strcmp(sv, ";") && strcmp(sv, "tab") && strcmp(sv, "|") &&
                        strcmp(sv, "auto"))) {
                qn_err_set(err, QN_INVALID_ARGUMENT, "schema: csv.delimiter must be one of , ; tab | auto");
                return NULL;
            }
        } else if (!strcmp(k, "quote")) {
            if (!sv || (strcmp(sv, "none") && (strlen(sv) != 1 || sv[0] <= ' ' || sv[0] >= 127))) {
                qn_err_set(err, QN_INVALID_ARGUMENT, "schema: csv.quote must be one printable ASCII character or none");
                return NULL;
            }
        } else if (!strcmp(k, "decimal_comma")) {
            if (!json_is_boolean(v)) {
                qn_err_set(err, QN_INVALID_ARGUMENT, "schema: csv.decimal_comma must be true or false");
                return NULL;
            }
        } else if (!strcmp(k, "encoding")) {
            if (!sv || (strcmp(sv, "utf-8") && strcmp(sv, "latin-1") && strcmp(sv, "windows-1252"))) {
                qn_err_set(err, QN_INVALID_ARGUMENT, "schema: csv.encoding must be utf-8, latin-1 or windows-1252");
                return NULL;
            }
        } else if (!strcmp(k, "na")) {
            size_t n = json_array_size(v);
            int ok = json_is_array(v) && n <= CSV_NA_MAX;
            for (size_t i = 0; ok && i < n; i++)
                ok = json_is_string(json_array_get(v, i)) && json_string_length(json_array_get(v, i)) <= 64 &&
                     strlen(json_string_value(json_array_get(v, i))) == json_string_length(json_array_get(v, i));
            if (!ok) {
                qn_err_set(err, QN_INVALID_ARGUMENT,
                           "schema: csv.na must be an array of at most %d strings of at most 64 bytes", CSV_NA_MAX);
                return NULL;
            }
        } else {
            qn_err_set(err, QN_INVALID_ARGUMENT,
                       "schema: csv: unknown field \"%.64s\" (delimiter, quote, decimal_comma, encoding, na)", k);
            return NULL;
        }
    }
    json_t *out = json_deep_copy(d);
    if (!out)
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    if (out && json_is_string(json_object_get(out, "delimiter")) &&
        !strcmp(json_string_value(json_object_get(out, "delimiter")), "tab") &&
        json_object_set_new(out, "delimiter", json_string("\t")) != 0) {
        json_decref(out);
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    return out;
}

int qml_rec_schema_parse(const json_t *doc, qml_rec_schema **out, qn_err *err)
{
    static const char *const top_keys[] = {"columns", "additional_columns", "csv"};
    static const char *const col_keys[] = {"name", "type", "required"};
    qml_rec_schema *s = NULL;
    const char *k;
    json_t *v;
    *out = NULL;
    if (!json_is_object(doc))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "schema: expected a JSON object");
    json_object_foreach((json_t *)doc, k, v) {
        if (strcmp(k, top_keys[0]) != 0 && strcmp(k, top_keys[1]) != 0 && strcmp(k, top_keys[2]) != 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "schema: unknown field \"%.64s\" (columns, additional_columns, csv)", k);
    }
    const json_t *cols = json_object_get(doc, "columns");
    const json_t *add = json_object_get(doc, "additional_columns");
    if (!json_is_array(cols))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "schema: columns must be an array");
    if (json_array_size(cols) > QML_REC_MAX_COLS)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "schema: %zu columns, at most %d allowed",
                          json_array_size(cols), QML_REC_MAX_COLS);
    if (add && !json_is_boolean(add))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "schema: additional_columns must be true or false");
    s = calloc(1, sizeof *s);
    size_t n = json_array_size(cols);
    if (!s || !(s->cols = calloc(n ? n : 1, sizeof *s->cols)) ||
        !(s->by_name = calloc(n ? n : 1, sizeof *s->by_name)))
        goto oom;
    s->additional = add ? json_is_true(add) : 1;
    if (json_object_get(doc, "csv") && !(s->csv = csv_dialect(json_object_get(doc, "csv"), err)))
        goto fail;
    for (size_t i = 0; i < n; i++) {
        const json_t *c = json_array_get(cols, i);
        if (!json_is_object(c)) {
            qn_err_set(err, QN_INVALID_ARGUMENT, "schema: columns[%zu] must be an object", i);
            goto fail;
        }
        json_object_foreach((json_t *)c, k, v) {
            if (strcmp(k, col_keys[0]) != 0 && strcmp(k, col_keys[1]) != 0 && strcmp(k, col_keys[2]) != 0) {
                qn_err_set(err, QN_INVALID_ARGUMENT,
                           "schema: columns[%zu]: unknown field \"%.64s\" (name, type, required)", i, k);
                goto fail;
            }
        }
        const json_t *name = json_object_get(c, "name"), *type = json_object_get(c, "type");
        const json_t *req = json_object_get(c, "required");
        qn_err e2;
        if (!json_is_string(name)) {
            qn_err_set(err, QN_INVALID_ARGUMENT, "schema: columns[%zu].name must be a string", i);
            goto fail;
        }
        if (qn_colname_check("column", json_string_value(name), &e2) < 0) {
            qn_err_set(err, QN_INVALID_ARGUMENT, "schema: columns[%zu]: %s", i, e2.msg);
            goto fail;
        }
        if (!json_is_string(type) || qml_type_parse(json_string_value(type), &s->cols[i].type) < 0) {
            qn_err_set(err, QN_INVALID_ARGUMENT,
                       "schema: column %s: type must be numeric, categorical, boolean or timestamp",
                       json_string_value(name));
            goto fail;
        }
        if (req && !json_is_boolean(req)) {
            qn_err_set(err, QN_INVALID_ARGUMENT, "schema: column %s: required must be true or false",
                       json_string_value(name));
            goto fail;
        }
        s->cols[i].required = json_is_true(req);
        if (!(s->cols[i].name = strdup(json_string_value(name))))
            goto oom;
        s->ncols++;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(s->cols[j].name, s->cols[i].name) == 0) {
                qn_err_set(err, QN_INVALID_ARGUMENT, "schema: column %s appears twice", s->cols[i].name);
                goto fail;
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        s->by_name[i] = i;
    /* Insertion sort: qsort has no context argument in C17 (n <= 256). */
    for (size_t i = 1; i < n; i++) {
        size_t x = s->by_name[i], j = i;
        while (j > 0 && strcmp(s->cols[s->by_name[j - 1]].name, s->cols[x].name) > 0) {
            s->by_name[j] = s->by_name[j - 1];
            j--;
        }
        s->by_name[j] = x;
    }
    *out = s;
    return 0;
oom:
    qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
fail:
    qml_rec_schema_free(s);
    return err ? err->code : QN_INVALID_ARGUMENT;
}

json_t *qml_rec_schema_json(const qml_rec_schema *s)
{
    json_t *cols = json_array();
    for (size_t i = 0; cols && i < s->ncols; i++)
        json_array_append_new(cols, json_pack("{s:s, s:s, s:b}", "name", s->cols[i].name, "type",
                                              qml_type_name(s->cols[i].type), "required",
                                              s->cols[i].required));
    json_t *doc = cols ? json_pack("{s:o, s:b}", "columns", cols, "additional_columns", s->additional) : NULL;
    if (doc && s->csv) {
        json_t *d = json_deep_copy(s->csv);
        const char *sep = json_string_value(json_object_get(s->csv, "delimiter"));
        if (d && sep && !strcmp(sep, "\t"))
            json_object_set_new(d, "delimiter", json_string("tab"));
        if (!d || json_object_set_new(doc, "csv", d) != 0) {
            json_decref(doc);
            return NULL;
        }
    }
    return doc;
}

/* The column called name (len bytes), or NULL. */
static const qml_rec_column *schema_find(const qml_rec_schema *s, const char *name, size_t len)
{
    size_t lo = 0, hi = s->ncols;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const char *c = s->cols[s->by_name[mid]].name;
        int d = strncmp(c, name, len);
        if (d == 0 && c[len] != '\0')
            d = 1;
        if (d == 0)
            return &s->cols[s->by_name[mid]];
        if (d < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- formats and options ------------------------------------------------- */

static int ctype_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    if (strncasecmp(ct, want, n) != 0)
        return 0;
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

int qml_rec_format_parse(const char *ct, qml_rec_format *out, qn_err *err)
{
    if (ct) {
        while (*ct == ' ')
            ct++;
        if (ctype_is(ct, "application/json")) {
            *out = QML_REC_JSON;
            return 0;
        }
        if (ctype_is(ct, "application/x-ndjson") || ctype_is(ct, "application/ndjson") ||
            ctype_is(ct, "application/jsonl") || ctype_is(ct, "application/x-jsonlines")) {
            *out = QML_REC_NDJSON;
            return 0;
        }
        if (ctype_is(ct, "text/csv")) {
            *out = QML_REC_CSV;
            return 0;
        }
    }
    return qn_err_set(err, QN_INVALID_ARGUMENT,
                      "Content-Type must be application/json, application/x-ndjson or text/csv%s%.64s",
                      ct ? ", got " : " (none given)", ct ? ct : "");
}

void qml_rec_opts_init(qml_rec_opts *o)
{
    o->max_rows = 100000;
    o->max_row_bytes = 64 * 1024;
    o->max_cols = QML_REC_MAX_COLS;
    o->max_errors = 100;
    o->csv_sep = NULL;
    o->csv_quote = 0;
    o->csv_decimal_comma = -1;
    o->csv_encoding = NULL;
    o->csv_na = NULL;
    o->csv_n_na = 0;
}

/* ---- the batch buffer ---------------------------------------------------- */

void qml_rec_batch_init(qml_rec_batch *b)
{
    memset(b, 0, sizeof *b);
}

void qml_rec_batch_free(qml_rec_batch *b)
{
    free(b->text);
    free(b->off);
    free(b->row);
    free(b->errors);
    memset(b, 0, sizeof *b);
}

static int reserve(qml_rec_batch *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra)
        cap *= 2;
    char *t = realloc(b->text, cap);
    if (!t)
        return QN_RESOURCE_EXHAUSTED;
    b->text = t;
    b->cap = cap;
    return 0;
}

static int put(qml_rec_batch *b, const char *s, size_t n)
{
    if (reserve(b, n) < 0)
        return QN_RESOURCE_EXHAUSTED;
    memcpy(b->text + b->len, s, n);
    b->len += n;
    return 0;
}

static int putc_(qml_rec_batch *b, char c)
{
    if (b->len == b->cap && reserve(b, 1) < 0)
        return QN_RESOURCE_EXHAUSTED;
    b->text[b->len++] = c;
    return 0;
}

static int put_jstring(qml_rec_batch *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    /* Worst case every byte becomes \u00XX. */
    if (reserve(b, n * 6 + 2) < 0)
        return QN_RESOURCE_EXHAUSTED;
    char *o = b->text + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->text);
    return 0;
}

static int put_double(qml_rec_batch *b, double v)
{
    char num[40];
    int n = qml_format_number(v, num, sizeof num);
    return put(b, num, (size_t)n);
}

static int put_int(qml_rec_batch *b, long long v)
{
    char num[32];
    int n = snprintf(num, sizeof num, "%lld", v);
    return put(b, num, (size_t)n);
}

/* Any JSON value, canonically (objects with sorted keys). depth is the
 * value's nesting below its row (0 for a column's value). A container that
 * would make the row nest deeper than QML_REC_MAX_DEPTH levels returns
 * TOO_DEEP (nothing is ever written in its place: the row is refused). */
#define TOO_DEEP 2
static int put_value(qml_rec_batch *b, const json_t *v, int depth);

typedef struct kv {
    const char *k;
    size_t klen;
    json_t *v;
} kv;

static void sort_kv(kv *a, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        kv x = a[i];
        size_t j = i;
        while (j > 0 && strcmp(a[j - 1].k, x.k) > 0) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

static int cmp_kv(const void *a, const void *b)
{
    return strcmp(((const kv *)a)->k, ((const kv *)b)->k);
}

static void sort_keys(kv *a, size_t n)
{
    if (n <= 16)
        sort_kv(a, n);
    else
        qsort(a, n, sizeof *a, cmp_kv);
}

static int put_object(qml_rec_batch *b, const json_t *obj, int depth)
{
    size_t n = json_object_size(obj), i = 0;
    kv stackbuf[32];
    kv *a = n <= 32 ? stackbuf : malloc(n * sizeof *a);
    if (!a)
        return QN_RESOURCE_EXHAUSTED;
    const char *k;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach((json_t *)obj, k, klen, v) {
        a[i].k = k;
        a[i].klen = klen;
        a[i++].v = v;
    }
    sort_keys(a, n);
    int rc = putc_(b, '{');
    for (i = 0; rc == 0 && i < n; i++) {
        if (i)
            rc = putc_(b, ',');
        if (rc == 0)
            rc = put_jstring(b, a[i].k, a[i].klen);
        if (rc == 0)
            rc = putc_(b, ':');
        if (rc == 0)
            rc = put_value(b, a[i].v, depth + 1);
    }
    if (rc == 0)
        rc = putc_(b, '}');
    if (a != stackbuf)
        free(a);
    return rc;
}

static int put_value(qml_rec_batch *b, const json_t *v, int depth)
{
    /* The row object is level 1, a column's container value level 2. */
    if ((json_is_object(v) || json_is_array(v)) && depth + 2 > QML_REC_MAX_DEPTH)
        return TOO_DEEP;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return put_object(b, v, depth);
    case JSON_ARRAY: {
        int rc = putc_(b, '[');
        for (size_t i = 0; rc == 0 && i < json_array_size(v); i++) {
            if (i)
                rc = putc_(b, ',');
            if (rc == 0)
                rc = put_value(b, json_array_get(v, i), depth + 1);
        }
        return rc ? rc : putc_(b, ']');
    }
    case JSON_STRING:
        return put_jstring(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return put_int(b, (long long)json_integer_value(v));
    case JSON_REAL:
        return put_double(b, json_real_value(v));
    case JSON_TRUE:
        return put(b, "true", 4);
    case JSON_FALSE:
        return put(b, "false", 5);
    case JSON_NULL:
    default:
        return put(b, "null", 4);
    }
}

/* ---- typed cells ----------------------------------------------------------- */

/* Writes text s (len bytes) of column c, typed. Returns 0, 1 when the text is
 * not of the type (msg filled), or QN_RESOURCE_EXHAUSTED. */
static int put_text_cell(qml_rec_batch *b, const qml_rec_column *c, const char *s, size_t len,
                         char *msg, size_t cap)
{
    double d;
    if (len == 0) {
        if (c->required) {
            snprintf(msg, cap, "column %s is required", c->name);
            return 1;
        }
        return c->type == QML_CATEGORICAL ? put(b, "\"\"", 2) : put(b, "null", 4);
    }
    switch (c->type) {
    case QML_NUMERIC:
        if (qml_parse_number(s, len, &d) < 0)
            break;
        return put_double(b, d);
    case QML_BOOLEAN:
        if (qml_parse_bool(s, len, 1, &d) < 0)
            break;
        return d != 0 ? put(b, "true", 4) : put(b, "false", 5);
    case QML_TIMESTAMP:
        if (qml_parse_timestamp(s, len, &d) < 0)
            break;
        return put_jstring(b, s, len);
    case QML_CATEGORICAL:
    default:
        return put_jstring(b, s, len);
    }
    static const char *const what[] = {"a number", "", "a boolean", "a timestamp"};
    snprintf(msg, cap, "column %s: \"%.*s\"%s is not %s", c->name, len > 40 ? 40 : (int)len, s,
             len > 40 ? "..." : "", what[c->type]);
    return 1;
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* Writes JSON value v of column c, typed. Returns as put_text_cell. */
static int put_json_cell(qml_rec_batch *b, const qml_rec_column *c, const json_t *v, char *msg,
                         size_t cap)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        return put_text_cell(b, c, json_string_value(v), json_string_length(v), msg, cap);
    case JSON_NULL:
        if (c->required) {
            snprintf(msg, cap, "column %s is required (got null)", c->name);
            return 1;
        }
        return put(b, "null", 4);
    case JSON_INTEGER:
    case JSON_REAL:
        if (c->type == QML_NUMERIC || c->type == QML_TIMESTAMP)
            return put_value(b, v, 0);
        if (c->type == QML_CATEGORICAL) {
            char num[40];
            int n = json_is_integer(v) ? snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v))
                                       : qml_format_number(json_real_value(v), num, sizeof num);
            return put_jstring(b, num, (size_t)n);
        }
        if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1))
            return json_integer_value(v) ? put(b, "true", 4) : put(b, "false", 5);
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        if (c->type == QML_BOOLEAN)
            return put_value(b, v, 0);
        if (c->type == QML_CATEGORICAL)
            return json_is_true(v) ? put(b, "\"true\"", 6) : put(b, "\"false\"", 7);
        break;
    default:
        break;
    }
    snprintf(msg, cap, "column %s: expected %s, got %s", c->name,
             c->type == QML_NUMERIC ? "a number" : c->type == QML_BOOLEAN ? "a boolean"
             : c->type == QML_TIMESTAMP ? "a timestamp" : "a string", json_kind(v));
    return 1;
}

/* ---- rows ------------------------------------------------------------------ */

/* Records the row (record number rowno) that now ends at b->len. */
static int end_row(qml_rec_batch *b, uint64_t rowno)
{
    if (b->nrows + 2 > b->caprows) {
        size_t cap = b->caprows ? b->caprows * 2 : 1024;
        size_t *off = realloc(b->off, cap * sizeof *off);
        if (!off)
            return QN_RESOURCE_EXHAUSTED;
        b->off = off;
        uint64_t *row = realloc(b->row, cap * sizeof *row);
        if (!row)
            return QN_RESOURCE_EXHAUSTED;
        b->row = row;
        b->caprows = cap;
    }
    if (b->nrows == 0)
        b->off[0] = 0;
    b->row[b->nrows] = rowno;
    b->off[++b->nrows] = b->len;
    return 0;
}

static int add_error(qml_rec_batch *b, const qml_rec_opts *o, uint64_t row, uint64_t line,
                     const char *msg)
{
    b->nbad++;
    if (b->nerrors >= o->max_errors)
        return 0;
    if (!b->errors && !(b->errors = calloc(o->max_errors, sizeof *b->errors)))
        return QN_RESOURCE_EXHAUSTED;
    qml_rec_error *e = &b->errors[b->nerrors++];
    e->row = row;
    e->line = line;
    snprintf(e->msg, sizeof e->msg, "%s", msg);
    return 0;
}

static int check_key(const char *k, char *msg, size_t cap)
{
    qn_err e;
    if (qn_colname_check("column", k, &e) == 0)
        return 0;
    snprintf(msg, cap, "%s", e.msg);
    return 1;
}

/* One JSON object as a canonical row; a bad row is rolled back (b->len
 * reset) and returns 1 with msg filled. */
static int object_row(const json_t *obj, const qml_rec_schema *s, const qml_rec_opts *o,
                      qml_rec_batch *b, uint64_t rowno, char *msg, size_t cap)
{
    size_t start = b->len, n = json_object_size(obj), i = 0;
    int rc = 0;
    kv stackbuf[32];
    kv *a = NULL;
    if (!json_is_object(obj)) {
        snprintf(msg, cap, "expected a JSON object, got %s", json_kind(obj));
        return 1;
    }
    if (n > o->max_cols) {
        snprintf(msg, cap, "%zu columns, at most %zu allowed", n, o->max_cols);
        return 1;
    }
    a = n <= 32 ? stackbuf : malloc(n * sizeof *a);
    if (!a)
        return QN_RESOURCE_EXHAUSTED;
    const char *k;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach((json_t *)obj, k, klen, v) {
        a[i].k = k;
        a[i].klen = klen;
        a[i++].v = v;
    }
    sort_keys(a, n);
    /* Walk the row's keys and the schema's columns, both sorted, together:
     * a column the row lacks is found between two keys. */
    size_t j = 0, ns = s ? s->ncols : 0;
    rc = putc_(b, '{');
    for (i = 0; rc == 0 && i <= n; i++) {
        const qml_rec_column *c = NULL;
        while (j < ns) {
            const qml_rec_column *sc = &s->cols[s->by_name[j]];
            int d = i < n ? strcmp(sc->name, a[i].k) : -1;
            if (d > 0)
                break;
            j++;
            if (d == 0) {
                c = sc;
                break;
            }
            if (sc->required) {
                snprintf(msg, cap, "column %s is required", sc->name);
                rc = 1;
                break;
            }
        }
        if (rc || i == n)
            break;
        if ((rc = check_key(a[i].k, msg, cap)) != 0)
            break;
        if (!c && s && !s->additional) {
            snprintf(msg, cap, "column %s is not in the schema (additional_columns is false)", a[i].k);
            rc = 1;
            break;
        }
        if (i && (rc = putc_(b, ',')) != 0)
            break;
        if ((rc = put_jstring(b, a[i].k, a[i].klen)) != 0 || (rc = putc_(b, ':')) != 0)
            break;
        rc = c ? put_json_cell(b, c, a[i].v, msg, cap) : put_value(b, a[i].v, 0);
        if (rc == TOO_DEEP) {
            snprintf(msg, cap, "column %s: value nests deeper than %d levels (the row counts as one); "
                     "flatten it or send it as a string", a[i].k, QML_REC_MAX_DEPTH);
            rc = 1;
        }
    }
    if (rc == 0)
        rc = putc_(b, '}');
    if (rc == 0 && b->len - start > o->max_row_bytes) {
        snprintf(msg, cap, "row is %zu bytes, at most %zu allowed", b->len - start, o->max_row_bytes);
        rc = 1;
    }
    if (a != stackbuf)
        free(a);
    if (rc == 0)
        return end_row(b, rowno);
    b->len = start;
    return rc;
}

int qml_rec_object(const json_t *obj, const qml_rec_schema *schema, const qml_rec_opts *o,
                   qml_rec_batch *b, char *msg, size_t msgcap)
{
    return object_row(obj, schema, o, b, b->nrows + 1, msg, msgcap);
}

static int too_many(const qml_rec_opts *o, qn_err *err)
{
    return qn_err_set(err, QN_INVALID_ARGUMENT, "the body holds more than %zu rows; split it into smaller batches",
                      o->max_rows);
}

static int oom(qn_err *err)
{
    return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
}

/* One parsed JSON row: good, bad (listed) or out of memory. */
static int take_object(const json_t *obj, const qml_rec_schema *s, const qml_rec_opts *o,
                       qml_rec_batch *b, uint64_t row, uint64_t line, qn_err *err)
{
    char msg[QML_REPORT_MSG];
    int rc = object_row(obj, s, o, b, row, msg, sizeof msg);
    if (rc == 1)
        rc = add_error(b, o, row, line, msg);
    return rc < 0 ? oom(err) : 0;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int parse_ndjson(const char *p, const char *end, const qml_rec_schema *s,
                        const qml_rec_opts *o, qml_rec_batch *b, qn_err *err)
{
    uint64_t line = 0, row = 0;
    char msg[QML_REPORT_MSG];
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        const char *q = p;
        line++;
        while (q < e && is_ws(*q))
            q++;
        if (q == e) {
            p = nl ? nl + 1 : end;
            continue;
        }
        if (++row > o->max_rows)
            return too_many(o, err);
        if ((size_t)(e - p) > o->max_row_bytes) {
            snprintf(msg, sizeof msg, "row is %zu bytes, at most %zu allowed", (size_t)(e - p), o->max_row_bytes);
            if (add_error(b, o, row, line, msg) < 0)
                return oom(err);
        } else {
            json_error_t je;
            json_t *obj = json_loadb(p, (size_t)(e - p), JSON_REJECT_DUPLICATES, &je);
            int rc = 0;
            if (!obj && json_error_code(&je) == json_error_out_of_memory)
                return oom(err); /* not the row's fault: never a bad row */
            if (!obj) {
                snprintf(msg, sizeof msg, "invalid JSON at column %d: %s", je.column, je.text);
                rc = add_error(b, o, row, line, msg) < 0 ? oom(err) : 0;
            } else {
                rc = take_object(obj, s, o, b, row, line, err);
                json_decref(obj);
            }
            if (rc < 0)
                return rc;
        }
        p = nl ? nl + 1 : end;
    }
    return 0;
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && is_ws(*p))
        p++;
    return p;
}

/* After '{', is this the {"events": [ wrapper? Returns the position after
 * '[' or NULL. */
static const char *events_wrapper(const char *p, const char *end)
{
    p = skip_ws(p + 1, end);
    if ((size_t)(end - p) < 8 || memcmp(p, "\"events\"", 8) != 0)
        return NULL;
    p = skip_ws(p + 8, end);
    if (p == end || *p != ':')
        return NULL;
    p = skip_ws(p + 1, end);
    return p < end && *p == '[' ? p + 1 : NULL;
}

static int parse_json(const char *body, const char *end, const qml_rec_schema *s,
                      const qml_rec_opts *o, qml_rec_batch *b, qn_err *err)
{
    const char *p = skip_ws(body, end);
    json_error_t je;
    if (p == end)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "the body is empty; send an object or an array of objects");
    const char *arr = *p == '[' ? p + 1 : *p == '{' ? events_wrapper(p, end) : NULL;
    if (!arr) {
        json_t *obj = json_loadb(p, (size_t)(end - p), JSON_REJECT_DUPLICATES, &je);
        if (!obj && json_error_code(&je) == json_error_out_of_memory)
            return oom(err);
        if (!obj)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "the body is not valid JSON: line %d, column %d: %s",
                              je.line, je.column, je.text);
        int rc = take_object(obj, s, o, b, 1, 0, err);
        json_decref(obj);
        return rc;
    }
    int wrapped = *p == '{';
    uint64_t row = 0;
    p = skip_ws(arr, end);
    if (p < end && *p == ']') {
        p++;
    } else {
        for (;;) {
            p = skip_ws(p, end);
            if (++row > o->max_rows)
                return too_many(o, err);
            json_t *obj = json_loadb(p, (size_t)(end - p), JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES, &je);
            if (!obj && json_error_code(&je) == json_error_out_of_memory)
                return oom(err);
            if (!obj)
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "the body is not valid JSON: row %llu (an object or array expected): %s",
                                  (unsigned long long)row, je.text);
            size_t used = (size_t)je.position;
            int rc;
            if (used > o->max_row_bytes) {
                char msg[QML_REPORT_MSG];
                snprintf(msg, sizeof msg, "row is %zu bytes, at most %zu allowed", used, o->max_row_bytes);
                rc = add_error(b, o, row, 0, msg) < 0 ? oom(err) : 0;
            } else {
                rc = take_object(obj, s, o, b, row, 0, err);
            }
            json_decref(obj);
            if (rc < 0)
                return rc;
            p = skip_ws(p + used, end);
            if (p < end && *p == ',') {
                p++;
                continue;
            }
            if (p < end && *p == ']') {
                p++;
                break;
            }
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "the body is not valid JSON: ',' or ']' expected after row %llu",
                              (unsigned long long)row);
        }
    }
    p = skip_ws(p, end);
    if (wrapped) {
        if (p == end || *p != '}')
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "the body is not valid JSON: {\"events\": [...]} must end after the array "
                              "(no other fields)");
        p = skip_ws(p + 1, end);
    }
    if (p != end)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "the body is not valid JSON: data after the end of the %s",
                          wrapped ? "object" : "array");
    return 0;
}

static int parse_csv(const char *body, size_t len, const qml_rec_schema *s, const qml_rec_opts *o,
                     qml_rec_batch *b, qn_err *err)
{
    qml_csv_opts co;
    qml_csv_opts_init(&co);
    co.infer_rows = 1;
    co.max_field_bytes = o->max_row_bytes;
    co.max_record_bytes = o->max_row_bytes;
    co.max_fields = o->max_cols + 1;
    /* The dialect: the request's, else the dataset's, else the defaults. */
    const json_t *d = s ? s->csv : NULL;
    const char *dna[CSV_NA_MAX];
    const char *dq = json_string_value(json_object_get(d, "quote"));
    co.sep = o->csv_sep ? o->csv_sep
                        : json_object_get(d, "delimiter") ? json_string_value(json_object_get(d, "delimiter")) : "auto";
    co.quote = o->csv_quote ? o->csv_quote : !dq ? '"' : !strcmp(dq, "none") ? QML_CSV_NO_QUOTE : dq[0];
    co.decimal_comma = o->csv_decimal_comma >= 0 ? o->csv_decimal_comma
                                                 : json_is_true(json_object_get(d, "decimal_comma"));
    co.encoding = o->csv_encoding ? o->csv_encoding : json_string_value(json_object_get(d, "encoding"));
    if (o->csv_na) {
        co.na_values = o->csv_na;
        co.n_na_values = o->csv_n_na;
    } else if (json_object_get(d, "na")) {
        const json_t *na = json_object_get(d, "na");
        for (size_t i = 0; i < json_array_size(na) && i < CSV_NA_MAX; i++)
            dna[i] = json_string_value(json_array_get(na, i));
        co.na_values = dna;
        co.n_na_values = json_array_size(na) < CSV_NA_MAX ? json_array_size(na) : CSV_NA_MAX;
    }
    int rc = 0;
    const qml_rec_column **cols = NULL;
    size_t *order = NULL;
    qml_csv_reader *r = qml_csv_open_mem(body, len, &co, err);
    if (!r)
        return err->code;
    size_t nc = qml_csv_ncols(r);
    if (nc == 0) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "the body is empty; send a header row and rows");
        goto out;
    }
    if (nc > o->max_cols) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "CSV header: %zu columns, at most %zu allowed", nc, o->max_cols);
        goto out;
    }
    cols = calloc(nc, sizeof *cols);
    order = calloc(nc, sizeof *order);
    if (!cols || !order) {
        rc = oom(err);
        goto out;
    }
    for (size_t i = 0; i < nc; i++) {
        const char *name = qml_csv_col_name(r, i);
        qn_err e;
        if (qn_colname_check("column", name, &e) < 0) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "CSV header, field %zu: %s", i + 1, e.msg);
            goto out;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(qml_csv_col_name(r, j), name) == 0) {
                rc = qn_err_set(err, QN_INVALID_ARGUMENT, "CSV header: column %s appears twice", name);
                goto out;
            }
        cols[i] = s ? schema_find(s, name, strlen(name)) : NULL;
        if (s && !cols[i] && !s->additional) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                            "CSV header: column %s is not in the schema (additional_columns is false)", name);
            goto out;
        }
        /* Insertion by name: the output keys are sorted. */
        size_t k = i;
        while (k > 0 && strcmp(qml_csv_col_name(r, order[k - 1]), name) > 0) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = i;
    }
    for (size_t j = 0; s && j < s->ncols; j++) {
        if (!s->cols[j].required)
            continue;
        size_t i = 0;
        while (i < nc && strcmp(qml_csv_col_name(r, i), s->cols[j].name) != 0)
            i++;
        if (i == nc) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "CSV header: required column %s is missing",
                            s->cols[j].name);
            goto out;
        }
    }
    qml_csv_record rec;
    uint64_t row = 0;
    char msg[QML_REPORT_MSG];
    int k;
    while ((k = qml_csv_next_record(r, &rec, err)) > 0) {
        if (++row > o->max_rows) {
            rc = too_many(o, err);
            goto out;
        }
        int bad = 0;
        size_t start = b->len;
        if (rec.bad) {
            snprintf(msg, sizeof msg, "%s", rec.msg);
            bad = 1;
        }
        if (!bad && putc_(b, '{') < 0)
            goto nomem;
        for (size_t x = 0; !bad && x < nc; x++) {
            size_t i = order[x];
            const char *name = qml_csv_col_name(r, i);
            const char *cell = rec.buf + rec.off[i];
            size_t clen = rec.flen[i];
            char num[64];
            if ((x && putc_(b, ',') < 0) || put_jstring(b, name, strlen(name)) < 0 || putc_(b, ':') < 0)
                goto nomem;
            int c;
            if (clen > 0 && qml_csv_is_missing(r, cell, clen)) { /* a missing-value marker */
                if (cols[i] && cols[i]->required) {
                    snprintf(msg, sizeof msg, "column %s is required", cols[i]->name);
                    c = 1;
                } else {
                    c = put(b, "null", 4);
                }
            } else {
                if (cols[i] && cols[i]->type == QML_NUMERIC)
                    cell = qml_csv_number_text(r, cell, &clen, num, sizeof num);
                c = cols[i] ? put_text_cell(b, cols[i], cell, clen, msg, sizeof msg)
                            : put_jstring(b, cell, clen);
            }
            if (c < 0)
                goto nomem;
            bad = c;
        }
        if (!bad && putc_(b, '}') < 0)
            goto nomem;
        if (!bad && b->len - start > o->max_row_bytes) {
            snprintf(msg, sizeof msg, "row is %zu bytes, at most %zu allowed", b->len - start, o->max_row_bytes);
            bad = 1;
        }
        if (bad) {
            b->len = start;
            if (add_error(b, o, row, rec.line, msg) < 0)
                goto nomem;
        } else if (end_row(b, row) < 0) {
            goto nomem;
        }
    }
    rc = k;
    goto out;
nomem:
    rc = oom(err);
out:
    free(cols);
    free(order);
    qml_csv_close(r);
    return rc;
}

int qml_rec_parse(const char *body, size_t len, qml_rec_format fmt, const qml_rec_schema *schema,
                  const qml_rec_opts *o, qml_rec_batch *b, qn_err *err)
{
    qml_rec_opts def;
    if (!o) {
        qml_rec_opts_init(&def);
        o = &def;
    }
    int rc;
    size_t rows0 = b->nrows;
    uint64_t bad0 = b->nbad;
    switch (fmt) {
    case QML_REC_NDJSON:
        rc = parse_ndjson(body, body + len, schema, o, b, err);
        break;
    case QML_REC_CSV:
        rc = parse_csv(body, len, schema, o, b, err);
        break;
    case QML_REC_JSON:
    default:
        rc = parse_json(body, body + len, schema, o, b, err);
        break;
    }
    if (rc == 0 && b->nrows == rows0 && b->nbad == bad0)
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "the body holds no rows");
    return rc;
}
