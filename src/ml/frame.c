/*
 * frame.c - columnar frame and string dictionary (see frame.h).
 *
 * The dictionary is an open-addressing hash table (FNV-1a, linear probing)
 * over an array of owned strings; codes are indices into that array, so they
 * are dense and stable.
 */
#include "ml/frame.h"

#include <stdlib.h>
#include <string.h>

/* ---- dictionary ---------------------------------------------------------- */

struct qml_dict {
    char **strs;       /* code -> string */
    size_t *lens;      /* code -> its length (a probe compares lengths first, no strlen) */
    size_t n, cap;
    int32_t *slots;    /* hash table of codes, -1 = empty */
    size_t nslots;     /* power of two */
};

static uint64_t fnv1a(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

qml_dict *qml_dict_new(void)
{
    qml_dict *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->nslots = 16;
    d->slots = malloc(d->nslots * sizeof *d->slots);
    if (!d->slots) {
        free(d);
        return NULL;
    }
    memset(d->slots, 0xff, d->nslots * sizeof *d->slots);
    return d;
}

void qml_dict_free(qml_dict *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++)
        free(d->strs[i]);
    free(d->strs);
    free(d->lens);
    free(d->slots);
    free(d);
}

static size_t dict_probe(const qml_dict *d, const char *s, size_t len)
{
    size_t mask = d->nslots - 1, i = fnv1a(s, len) & mask;
    for (;;) {
        int32_t c = d->slots[i];
        if (c < 0)
            return i;
        if (d->lens[c] == len && memcmp(d->strs[c], s, len) == 0)
            return i;
        i = (i + 1) & mask;
    }
}

static int dict_grow(qml_dict *d)
{
    size_t nslots = d->nslots * 2;
    int32_t *slots = malloc(nslots * sizeof *slots);
    if (!slots)
        return -1;
    memset(slots, 0xff, nslots * sizeof *slots);
    for (size_t c = 0; c < d->n; c++) {
        size_t i = fnv1a(d->strs[c], d->lens[c]) & (nslots - 1);
        while (slots[i] >= 0)
            i = (i + 1) & (nslots - 1);
        slots[i] = (int32_t)c;
    }
    free(d->slots);
    d->slots = slots;
    d->nslots = nslots;
    return 0;
}

int32_t qml_dict_find(const qml_dict *d, const char *s, size_t len)
{
    return d->slots[dict_probe(d, s, len)];
}

int32_t qml_dict_intern(qml_dict *d, const char *s, size_t len)
{
    size_t i = dict_probe(d, s, len);
    if (d->slots[i] >= 0)
        return d->slots[i];
    if (d->n >= INT32_MAX)
        return -1;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        char **strs = realloc(d->strs, cap * sizeof *strs);
        if (!strs)
            return -1;
        d->strs = strs;
        size_t *lens = realloc(d->lens, cap * sizeof *lens);
        if (!lens) /* strs has room to spare; cap stays what both have */
            return -1;
        d->lens = lens;
        d->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, s, len);
    copy[len] = '\0';
    int32_t code = (int32_t)d->n;
    d->lens[d->n] = len;
    d->strs[d->n++] = copy;
    d->slots[i] = code;
    if (d->n * 2 > d->nslots && dict_grow(d) < 0) {
        /* The string is stored and findable only after a successful grow;
         * undo so the table stays consistent. */
        d->slots[i] = -1;
        free(copy);
        d->n--;
        return -1;
    }
    return code;
}

const char *qml_dict_str(const qml_dict *d, int32_t code)
{
    return (code >= 0 && (size_t)code < d->n) ? d->strs[code] : NULL;
}

size_t qml_dict_size(const qml_dict *d)
{
    return d->n;
}

/* ---- types --------------------------------------------------------------- */

static const char *const type_names[] = {"numeric", "categorical", "boolean", "timestamp"};

const char *qml_type_name(qml_type t)
{
    return (unsigned)t < 4 ? type_names[t] : "unknown";
}

int qml_type_parse(const char *s, qml_type *t)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, type_names[i]) == 0) {
            *t = (qml_type)i;
            return 0;
        }
    }
    return QN_INVALID_ARGUMENT;
}

/* ---- columns ------------------------------------------------------------- */

struct qml_frame {
    qml_column *cols;
    size_t ncols, capcols;
    size_t nrows;
};

static int col_reserve(qml_column *c, size_t need)
{
    if (need <= c->cap)
        return 0;
    size_t cap = c->cap ? c->cap : 64;
    while (cap < need)
        cap *= 2;
    uint8_t *m = realloc(c->missing, cap);
    if (!m)
        return QN_RESOURCE_EXHAUSTED;
    c->missing = m;
    if (c->type == QML_CATEGORICAL) {
        int32_t *v = realloc(c->cat, cap * sizeof *v);
        if (!v)
            return QN_RESOURCE_EXHAUSTED;
        c->cat = v;
    } else {
        double *v = realloc(c->num, cap * sizeof *v);
        if (!v)
            return QN_RESOURCE_EXHAUSTED;
        c->num = v;
    }
    c->cap = cap;
    return 0;
}

int qml_col_push_num(qml_column *c, double v)
{
    if (c->type == QML_CATEGORICAL)
        return QN_INVALID_ARGUMENT;
    if (col_reserve(c, c->len + 1) < 0)
        return QN_RESOURCE_EXHAUSTED;
    c->num[c->len] = v;
    c->missing[c->len++] = 0;
    return 0;
}

int qml_col_push_code(qml_column *c, int32_t code)
{
    if (c->type != QML_CATEGORICAL)
        return QN_INVALID_ARGUMENT;
    if (col_reserve(c, c->len + 1) < 0)
        return QN_RESOURCE_EXHAUSTED;
    c->cat[c->len] = code;
    c->missing[c->len++] = code < 0;
    c->n_missing += code < 0;
    return 0;
}

int qml_col_push_str(qml_column *c, const char *s, size_t len)
{
    if (c->type != QML_CATEGORICAL)
        return QN_INVALID_ARGUMENT;
    int32_t code = qml_dict_intern(c->dict, s, len);
    if (code < 0)
        return QN_RESOURCE_EXHAUSTED;
    return qml_col_push_code(c, code);
}

int qml_col_push_missing(qml_column *c)
{
    if (col_reserve(c, c->len + 1) < 0)
        return QN_RESOURCE_EXHAUSTED;
    if (c->type == QML_CATEGORICAL)
        c->cat[c->len] = -1;
    else
        c->num[c->len] = 0;
    c->missing[c->len++] = 1;
    c->n_missing++;
    return 0;
}

void qml_col_pop(qml_column *c)
{
    if (c->len == 0)
        return;
    c->len--;
    c->n_missing -= c->missing[c->len];
}

const char *qml_col_str(const qml_column *c, size_t i)
{
    if (c->type != QML_CATEGORICAL || i >= c->len || c->missing[i])
        return NULL;
    return qml_dict_str(c->dict, c->cat[i]);
}

/* ---- frames -------------------------------------------------------------- */

qml_frame *qml_frame_new(void)
{
    return calloc(1, sizeof(qml_frame));
}

static void col_free(qml_column *c)
{
    free(c->name);
    free(c->num);
    free(c->cat);
    free(c->missing);
    qml_dict_free(c->dict);
}

void qml_frame_free(qml_frame *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->ncols; i++)
        col_free(&f->cols[i]);
    free(f->cols);
    free(f);
}

int qml_frame_add_column(qml_frame *f, const char *name, qml_type type, qn_err *err)
{
    if (!name || !*name)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "column name is empty");
    if ((unsigned)type > QML_TIMESTAMP)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "column %s: unknown type %d", name, type);
    if (f->nrows > 0)
        return qn_err_set(err, QN_FAILED_PRECONDITION,
                          "column %s: columns must be added before any row", name);
    if (qml_frame_find(f, name) >= 0)
        return qn_err_set(err, QN_ALREADY_EXISTS, "column %s appears twice", name);
    if (f->ncols == f->capcols) {
        size_t cap = f->capcols ? f->capcols * 2 : 8;
        qml_column *cols = realloc(f->cols, cap * sizeof *cols);
        if (!cols)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory adding column %s", name);
        f->cols = cols;
        f->capcols = cap;
    }
    qml_column *c = &f->cols[f->ncols];
    memset(c, 0, sizeof *c);
    c->type = type;
    c->name = strdup(name);
    if (type == QML_CATEGORICAL)
        c->dict = qml_dict_new();
    if (!c->name || (type == QML_CATEGORICAL && !c->dict)) {
        col_free(c);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory adding column %s", name);
    }
    return (int)f->ncols++;
}

int qml_frame_reserve(qml_frame *f, size_t rows)
{
    for (size_t i = 0; i < f->ncols; i++)
        if (col_reserve(&f->cols[i], f->nrows + rows) < 0)
            return QN_RESOURCE_EXHAUSTED;
    return 0;
}

size_t qml_frame_ncols(const qml_frame *f) { return f->ncols; }
size_t qml_frame_nrows(const qml_frame *f) { return f->nrows; }

qml_column *qml_frame_col(const qml_frame *f, size_t i)
{
    return i < f->ncols ? &f->cols[i] : NULL;
}

int qml_frame_find(const qml_frame *f, const char *name)
{
    for (size_t i = 0; i < f->ncols; i++)
        if (strcmp(f->cols[i].name, name) == 0)
            return (int)i;
    return -1;
}

int qml_frame_end_row(qml_frame *f)
{
    for (size_t i = 0; i < f->ncols; i++)
        if (f->cols[i].len != f->nrows + 1)
            return QN_INTERNAL;
    f->nrows++;
    return 0;
}

int qml_frame_end_rows(qml_frame *f, size_t n)
{
    for (size_t i = 0; i < f->ncols; i++)
        if (f->cols[i].len != f->nrows + n)
            return QN_INTERNAL;
    f->nrows += n;
    return 0;
}

void qml_frame_abort_row(qml_frame *f)
{
    for (size_t i = 0; i < f->ncols; i++)
        while (f->cols[i].len > f->nrows)
            qml_col_pop(&f->cols[i]);
}

static qml_frame *frame_like(const qml_frame *f, const size_t *cols, size_t ncols,
                             size_t nrows, qn_err *err)
{
    qml_frame *out = qml_frame_new();
    if (!out) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    for (size_t j = 0; j < ncols; j++) {
        const qml_column *src = &f->cols[cols[j]];
        if (qml_frame_add_column(out, src->name, src->type, err) < 0)
            goto fail;
        qml_column *dst = &out->cols[j];
        if (col_reserve(dst, nrows ? nrows : 1) < 0)
            goto oom;
        if (src->type == QML_CATEGORICAL) {
            /* Same strings, same codes: intern in code order. */
            for (size_t k = 0; k < qml_dict_size(src->dict); k++) {
                const char *s = qml_dict_str(src->dict, (int32_t)k);
                if (qml_dict_intern(dst->dict, s, strlen(s)) < 0)
                    goto oom;
            }
        }
    }
    return out;
oom:
    qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory copying a frame");
fail:
    qml_frame_free(out);
    return NULL;
}

static void copy_cell(qml_column *dst, const qml_column *src, size_t r)
{
    size_t k = dst->len++;
    dst->missing[k] = src->missing[r];
    dst->n_missing += src->missing[r];
    if (src->type == QML_CATEGORICAL)
        dst->cat[k] = src->cat[r];
    else
        dst->num[k] = src->num[r];
}

qml_frame *qml_frame_take(const qml_frame *f, const size_t *rows, size_t n, qn_err *err)
{
    size_t *all = malloc((f->ncols ? f->ncols : 1) * sizeof *all);
    if (!all) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    for (size_t j = 0; j < f->ncols; j++)
        all[j] = j;
    qml_frame *out = frame_like(f, all, f->ncols, n, err);
    free(all);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (rows[i] >= f->nrows) {
            qn_err_set(err, QN_OUT_OF_RANGE, "row %zu is past the end (%zu rows)", rows[i], f->nrows);
            qml_frame_free(out);
            return NULL;
        }
    }
    /* Column by column: each loop reads one source array and writes one. */
    for (size_t j = 0; j < f->ncols; j++) {
        const qml_column *src = &f->cols[j];
        qml_column *dst = &out->cols[j];
        size_t nm = 0;
        for (size_t i = 0; i < n; i++)
            nm += dst->missing[i] = src->missing[rows[i]];
        if (src->type == QML_CATEGORICAL)
            for (size_t i = 0; i < n; i++)
                dst->cat[i] = src->cat[rows[i]];
        else
            for (size_t i = 0; i < n; i++)
                dst->num[i] = src->num[rows[i]];
        dst->len = n;
        dst->n_missing = nm;
    }
    out->nrows = n;
    return out;
}

qml_frame *qml_frame_select(const qml_frame *f, const char *const *names, size_t n, qn_err *err)
{
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    if (!idx) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    for (size_t j = 0; j < n; j++) {
        int k = qml_frame_find(f, names[j]);
        if (k < 0) {
            qn_err_set(err, QN_INVALID_ARGUMENT, "no column named %s", names[j]);
            free(idx);
            return NULL;
        }
        idx[j] = (size_t)k;
    }
    qml_frame *out = frame_like(f, idx, n, f->nrows, err);
    if (out) {
        for (size_t r = 0; r < f->nrows; r++)
            for (size_t j = 0; j < n; j++)
                copy_cell(&out->cols[j], &f->cols[idx[j]], r);
        out->nrows = f->nrows;
    }
    free(idx);
    return out;
}
