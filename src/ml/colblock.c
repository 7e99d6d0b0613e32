/*
 * colblock.c - canonical JSON rows in columnar form (see colblock.h).
 *
 * The builder tokenises each canonical row (it never parses values: a value
 * is the span of its JSON text), finds the key's column and the value's
 * index in that column's dictionary through open-addressed hash tables, and
 * records one cell. Everything a row needs (a new column, room for its
 * values, the cells) is reserved before anything is changed, so a row that
 * fails leaves the block as it was.
 */
#include "ml/colblock.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* ---- a table of distinct byte strings ----------------------------------- */

/* Strings s[0..n) concatenated in bytes, s[i] = bytes[off[i] .. off[i+1]),
 * found by hash through slots (index + 1, 0 empty; a power of two, at most
 * half full). */
typedef struct strtab {
    char *bytes;
    size_t len, cap;
    uint32_t *off;       /* n + 1 */
    uint32_t *hash;      /* n */
    uint32_t n, capn;
    uint32_t *slots;
    uint32_t nslots;
} strtab;

static uint32_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 32;
    return (uint32_t)h;
}

static void strtab_free(strtab *t)
{
    free(t->bytes);
    free(t->off);
    free(t->hash);
    free(t->slots);
    memset(t, 0, sizeof *t);
}

static void strtab_clear(strtab *t)
{
    t->len = 0;
    t->n = 0;
    if (t->slots)
        memset(t->slots, 0, (size_t)t->nslots * sizeof *t->slots);
}

static uint32_t strtab_find(const strtab *t, const char *s, size_t n, uint32_t h)
{
    if (!t->nslots)
        return UINT32_MAX;
    for (uint32_t i = h & (t->nslots - 1);; i = (i + 1) & (t->nslots - 1)) {
        uint32_t k = t->slots[i];
        if (!k)
            return UINT32_MAX;
        k--;
        if (t->hash[k] == h && t->off[k + 1] - t->off[k] == n && memcmp(t->bytes + t->off[k], s, n) == 0)
            return k;
    }
}

static int grow_slots(strtab *t)
{
    uint32_t ns = t->nslots ? t->nslots * 2 : 64;
    uint32_t *sl = calloc(ns, sizeof *sl);
    if (!sl)
        return QN_RESOURCE_EXHAUSTED;
    for (uint32_t k = 0; k < t->n; k++) {
        uint32_t i = t->hash[k] & (ns - 1);
        while (sl[i])
            i = (i + 1) & (ns - 1);
        sl[i] = k + 1;
    }
    free(t->slots);
    t->slots = sl;
    t->nslots = ns;
    return 0;
}

/* Room for `count` more strings of `bytes` bytes in all: after it, that many
 * strtab_add calls cannot fail. */
static int strtab_reserve(strtab *t, uint32_t count, size_t bytes)
{
    if (t->len + bytes > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + bytes)
            cap *= 2;
        char *b = realloc(t->bytes, cap);
        if (!b)
            return QN_RESOURCE_EXHAUSTED;
        t->bytes = b;
        t->cap = cap;
    }
    if (t->n + count + 1 > t->capn) {
        uint32_t cap = t->capn ? t->capn : 16;
        while (cap < t->n + count + 1)
            cap *= 2;
        uint32_t *o = realloc(t->off, (size_t)cap * sizeof *o);
        if (!o)
            return QN_RESOURCE_EXHAUSTED;
        t->off = o;
        uint32_t *h = realloc(t->hash, (size_t)cap * sizeof *h);
        if (!h)
            return QN_RESOURCE_EXHAUSTED;
        t->hash = h;
        t->capn = cap;
    }
    while ((uint64_t)(t->n + count) * 2 > t->nslots)
        if (grow_slots(t) < 0)
            return QN_RESOURCE_EXHAUSTED;
    return 0;
}

/* Adds s (not present; room reserved) and returns its index. */
static uint32_t strtab_add(strtab *t, const char *s, size_t n, uint32_t h)
{
    uint32_t k = t->n++;
    if (k == 0)
        t->off[0] = 0;
    memcpy(t->bytes + t->len, s, n);
    t->len += n;
    t->off[k + 1] = (uint32_t)t->len;
    t->hash[k] = h;
    uint32_t i = h & (t->nslots - 1);
    while (t->slots[i])
        i = (i + 1) & (t->nslots - 1);
    t->slots[i] = k + 1;
    return k;
}

/* ---- the builder --------------------------------------------------------- */

/* A column's dictionary may hold at most this many bytes (offsets are u32). */
#define VALUES_MAX (1u << 30)

typedef struct bcol {
    char *name;          /* the decoded key, for the order of columns */
    strtab values;
    uint32_t *cells;     /* caprows; 0 = no key, else 1 + value index */
} bcol;

/* One member of the row being added. */
typedef struct field {
    const char *key, *val;
    size_t keylen, vallen;
    uint32_t kh, vh;
    uint32_t col;        /* its column, once known */
} field;

struct qml_colblock_builder {
    strtab keys;         /* column i's key token is keys' string i */
    bcol *cols;
    uint32_t ncols, capcols;
    uint32_t nrows, caprows;
    uint32_t *order;     /* the last row's columns in its key order, a hint */
    uint32_t norder;
    field *fields;       /* scratch for one row */
    uint32_t capfields;
};

qml_colblock_builder *qml_colblock_builder_new(void) { return calloc(1, sizeof(qml_colblock_builder)); }

static void drop_columns(qml_colblock_builder *b)
{
    for (uint32_t i = 0; i < b->ncols; i++) {
        free(b->cols[i].name);
        strtab_free(&b->cols[i].values);
        free(b->cols[i].cells);
    }
    b->ncols = 0;
    b->nrows = 0;
    b->norder = 0;
    strtab_clear(&b->keys);
}

void qml_colblock_builder_free(qml_colblock_builder *b)
{
    if (!b)
        return;
    drop_columns(b);
    strtab_free(&b->keys);
    free(b->cols);
    free(b->order);
    free(b->fields);
    free(b);
}

size_t qml_colblock_rows(const qml_colblock_builder *b) { return b->nrows; }

/* The end of the JSON string token at p (p at its opening quote), or NULL. */
static const char *string_end(const char *p, const char *e)
{
    for (p++; p < e; p++) {
        if (*p == '"')
            return p + 1;
        if (*p == '\\')
            p++;
    }
    return NULL;
}

/* The end of the JSON value at p in compact text, or NULL. Containers are
 * matched bracket for bracket (strings skipped); scalars run to the next
 * ',' '}' or ']'. Values are not checked further: ingest made them. */
static const char *value_end(const char *p, const char *e)
{
    if (p >= e)
        return NULL;
    if (*p == '"')
        return string_end(p, e);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < e) {
            char c = *p;
            if (c == '"') {
                if (!(p = string_end(p, e)))
                    return NULL;
                continue;
            }
            if (c == '{' || c == '[')
                depth++;
            else if ((c == '}' || c == ']') && --depth == 0)
                return p + 1;
            p++;
        }
        return NULL;
    }
    const char *s = p;
    while (p < e && *p != ',' && *p != '}' && *p != ']')
        p++;
    return p > s ? p : NULL;
}

static int not_canonical(const char *row, const char *at, qn_err *err)
{
    return qn_err_set(err, QN_INTERNAL, "colblock: a row is not canonical JSON at byte %zu", (size_t)(at - row));
}

/* Splits the row into b->fields. The number of fields, or < 0. */
static long split_row(qml_colblock_builder *b, const char *row, size_t len, qn_err *err)
{
    const char *p = row, *e = row + len;
    uint32_t n = 0;
    if (p == e || *p++ != '{')
        return not_canonical(row, row, err);
    if (p < e && *p == '}')
        return p + 1 == e ? 0 : not_canonical(row, p + 1, err);
    for (;;) {
        if (n == b->capfields) {
            uint32_t cap = b->capfields ? b->capfields * 2 : 32;
            field *f = realloc(b->fields, (size_t)cap * sizeof *f);
            if (!f)
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            b->fields = f;
            b->capfields = cap;
        }
        field *f = &b->fields[n++];
        const char *k = p, *ke;
        if (p >= e || *p != '"' || !(ke = string_end(p, e)) || ke >= e || *ke != ':')
            return not_canonical(row, p, err);
        const char *v = ke + 1, *ve = value_end(v, e);
        if (!ve || ve >= e)
            return not_canonical(row, v, err);
        f->key = k;
        f->keylen = (size_t)(ke - k);
        f->val = v;
        f->vallen = (size_t)(ve - v);
        p = ve + 1;
        if (*ve == '}')
            return p == e ? (long)n : not_canonical(row, p, err);
        if (*ve != ',')
            return not_canonical(row, ve, err);
    }
}

/* The key token's text into *name: 0, QN_INTERNAL (not a JSON string) or
 * QN_RESOURCE_EXHAUSTED. */
static int decode_key(const char *tok, size_t len, char **name)
{
    json_error_t je;
    json_t *s = json_loadb(tok, len, JSON_DECODE_ANY, &je);
    *name = json_is_string(s) ? strdup(json_string_value(s)) : NULL;
    int rc = *name ? 0 : (s && !json_is_string(s)) || (!s && json_error_code(&je) != json_error_out_of_memory)
                             ? QN_INTERNAL : QN_RESOURCE_EXHAUSTED;
    json_decref(s);
    return rc;
}

/* Adds a column for key token f (not present). Nothing changes on failure. */
static int add_column(qml_colblock_builder *b, field *f, qn_err *err)
{
    if (b->ncols == QML_COLBLOCK_MAX_COLS)
        return qn_err_set(err, QN_OUT_OF_RANGE, "colblock: a block has at most %u columns", QML_COLBLOCK_MAX_COLS);
    if (b->ncols == b->capcols) {
        uint32_t cap = b->capcols ? b->capcols * 2 : 16;
        bcol *c = realloc(b->cols, (size_t)cap * sizeof *c);
        uint32_t *o = c ? realloc(b->order, (size_t)cap * sizeof *o) : NULL;
        if (c)
            b->cols = c;
        if (!o)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        b->order = o;
        b->capcols = cap;
    }
    bcol *c = &b->cols[b->ncols];
    memset(c, 0, sizeof *c);
    int rc = decode_key(f->key, f->keylen, &c->name);
    if (rc == QN_RESOURCE_EXHAUSTED)
        return qn_err_set(err, rc, "out of memory");
    if (rc < 0)
        return qn_err_set(err, rc, "colblock: key %.*s is not a JSON string", (int)(f->keylen < 64 ? f->keylen : 64),
                          f->key);
    if (b->caprows && !(c->cells = calloc(b->caprows, sizeof *c->cells))) {
        free(c->name);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    if (strtab_reserve(&b->keys, 1, f->keylen) < 0) {
        free(c->name);
        free(c->cells);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    f->col = b->ncols++;
    strtab_add(&b->keys, f->key, f->keylen, f->kh);
    return 0;
}

static int grow_rows(qml_colblock_builder *b)
{
    uint32_t cap = b->caprows ? b->caprows * 2 : 1024;
    if (cap > QML_COLBLOCK_MAX_ROWS)
        cap = QML_COLBLOCK_MAX_ROWS;
    for (uint32_t i = 0; i < b->ncols; i++) {
        uint32_t *c = realloc(b->cols[i].cells, (size_t)cap * sizeof *c);
        if (!c)
            return QN_RESOURCE_EXHAUSTED;
        memset(c + b->caprows, 0, (size_t)(cap - b->caprows) * sizeof *c);
        b->cols[i].cells = c;
    }
    b->caprows = cap;
    return 0;
}

int qml_colblock_add(qml_colblock_builder *b, const char *row, size_t len, qn_err *err)
{
    if (b->nrows == QML_COLBLOCK_MAX_ROWS)
        return qn_err_set(err, QN_OUT_OF_RANGE, "colblock: a block has at most %u rows", QML_COLBLOCK_MAX_ROWS);
    long n = split_row(b, row, len, err);
    if (n < 0)
        return (int)n;
    if (b->nrows == b->caprows && grow_rows(b) < 0)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    /* Columns first, then room for the values; then the cells, which cannot
     * fail. A failure drops the columns this row added. */
    uint32_t first_new = b->ncols;
    int rc = 0;
    for (long i = 0; i < n; i++) {
        field *f = &b->fields[i];
        uint32_t hint = (size_t)i < b->norder ? b->order[i] : UINT32_MAX;
        if (hint != UINT32_MAX && b->keys.off[hint + 1] - b->keys.off[hint] == f->keylen &&
            memcmp(b->keys.bytes + b->keys.off[hint], f->key, f->keylen) == 0) {
            f->col = hint;
        } else {
            f->kh = hash_bytes(f->key, f->keylen);
            uint32_t k = strtab_find(&b->keys, f->key, f->keylen, f->kh);
            if (k != UINT32_MAX)
                f->col = k;
            else if ((rc = add_column(b, f, err)) < 0)
                goto undo;
        }
        if (i > 0 && strcmp(b->cols[b->fields[i - 1].col].name, b->cols[f->col].name) >= 0) {
            rc = qn_err_set(err, QN_INTERNAL, "colblock: a row's keys are not in canonical order (%.64s)",
                            b->cols[f->col].name);
            goto undo;
        }
    }
    if (b->nrows && (uint64_t)(b->nrows + 1) * b->ncols > QML_COLBLOCK_MAX_CELLS) {
        rc = qn_err_set(err, QN_OUT_OF_RANGE, "colblock: a block holds %u cells (rows x columns) at most",
                        QML_COLBLOCK_MAX_CELLS);
        goto undo;
    }
    for (long i = 0; i < n; i++) {
        field *f = &b->fields[i];
        strtab *t = &b->cols[f->col].values;
        f->vh = hash_bytes(f->val, f->vallen);
        if (strtab_find(t, f->val, f->vallen, f->vh) != UINT32_MAX)
            continue;
        if (t->len + f->vallen > VALUES_MAX) {
            rc = qn_err_set(err, QN_OUT_OF_RANGE, "colblock: column %.64s holds %u bytes of values at most",
                            b->cols[f->col].name, VALUES_MAX);
            goto undo;
        }
        if (strtab_reserve(t, 1, f->vallen) < 0) {
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            goto undo;
        }
    }
    for (long i = 0; i < n; i++) {
        field *f = &b->fields[i];
        strtab *t = &b->cols[f->col].values;
        uint32_t k = strtab_find(t, f->val, f->vallen, f->vh);
        if (k == UINT32_MAX)
            k = strtab_add(t, f->val, f->vallen, f->vh);
        b->cols[f->col].cells[b->nrows] = k + 1;
        b->order[i] = f->col;
    }
    b->norder = (uint32_t)n;
    b->nrows++;
    return 0;
undo:
    while (b->ncols > first_new) {
        bcol *c = &b->cols[--b->ncols];
        free(c->name);
        strtab_free(&c->values);
        free(c->cells);
        b->keys.n--;
        b->keys.len = b->keys.off[b->keys.n];
    }
    /* Rebuild the key slots: removed keys must not be found again. */
    if (b->keys.nslots) {
        memset(b->keys.slots, 0, (size_t)b->keys.nslots * sizeof *b->keys.slots);
        for (uint32_t k = 0; k < b->keys.n; k++) {
            uint32_t i = b->keys.hash[k] & (b->keys.nslots - 1);
            while (b->keys.slots[i])
                i = (i + 1) & (b->keys.nslots - 1);
            b->keys.slots[i] = k + 1;
        }
    }
    b->norder = 0;
    return rc;
}

/* ---- writing a block ----------------------------------------------------- */

static void put32(char *p, uint32_t v)
{
    p[0] = (char)(v & 0xff);
    p[1] = (char)(v >> 8 & 0xff);
    p[2] = (char)(v >> 16 & 0xff);
    p[3] = (char)(v >> 24);
}

static unsigned width_for(uint32_t nvalues)
{
    return nvalues < 0xffu ? 1 : nvalues < 0xffffu ? 2 : 4;
}

typedef struct named {
    const char *name;
    uint32_t col;
} named;

static int by_name(const void *a, const void *b)
{
    return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

static void put_cells(char *o, const uint32_t *cells, uint32_t n, unsigned width)
{
    if (width == 1)
        for (uint32_t r = 0; r < n; r++)
            o[r] = (char)cells[r];
    else if (width == 2)
        for (uint32_t r = 0; r < n; r++) {
            o[2 * r] = (char)(cells[r] & 0xff);
            o[2 * r + 1] = (char)(cells[r] >> 8);
        }
    else
        for (uint32_t r = 0; r < n; r++)
            put32(o + 4 * (size_t)r, cells[r]);
}

int qml_colblock_finish(qml_colblock_builder *b, qn_buf *out, qn_err *err)
{
    if (!b->nrows)
        return 0;
    named *idx = malloc((size_t)b->ncols * sizeof *idx);
    if (!idx)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    size_t size = 12;
    for (uint32_t i = 0; i < b->ncols; i++) {
        const bcol *c = &b->cols[i];
        idx[i] = (named){c->name, i};
        size += 4 + (b->keys.off[i + 1] - b->keys.off[i]) + 4 + 4 * ((size_t)c->values.n + 1) + c->values.len + 1 +
                (size_t)b->nrows * width_for(c->values.n);
    }
    qsort(idx, b->ncols, sizeof *idx, by_name); /* names are distinct: a total order */
    size_t at = out->len;
    if (qn_buf_reserve(out, size) < 0) {
        free(idx);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory for a block of %zu bytes", size);
    }
    char *o = out->data + at;
    memcpy(o, QML_COLBLOCK_MAGIC, 4);
    put32(o + 4, b->nrows);
    put32(o + 8, b->ncols);
    o += 12;
    for (uint32_t j = 0; j < b->ncols; j++) {
        uint32_t i = idx[j].col;
        const bcol *c = &b->cols[i];
        uint32_t klen = b->keys.off[i + 1] - b->keys.off[i];
        put32(o, klen);
        memcpy(o + 4, b->keys.bytes + b->keys.off[i], klen);
        o += 4 + klen;
        put32(o, c->values.n);
        o += 4;
        put32(o, 0);
        for (uint32_t v = 0; v < c->values.n; v++)
            put32(o + 4 + 4 * (size_t)v, c->values.off[v + 1]);
        o += 4 * ((size_t)c->values.n + 1);
        memcpy(o, c->values.bytes, c->values.len);
        o += c->values.len;
        unsigned w = width_for(c->values.n);
        *o++ = (char)w;
        put_cells(o, c->cells, b->nrows, w);
        o += (size_t)b->nrows * w;
    }
    free(idx);
    out->len = at + size;
    out->data[out->len] = '\0';
    drop_columns(b);
    return 0;
}

/* ---- reading a block ----------------------------------------------------- */

static int bad_block(qn_err *err, const char *what, size_t at)
{
    return qn_err_set(err, QN_INVALID_ARGUMENT, "column block: %s (byte %zu)", what, at);
}

int qml_colblock_view(const void *data, size_t len, qml_colblock *out, size_t *used, qn_err *err)
{
    const unsigned char *base = data, *p = base, *e = base + len;
    memset(out, 0, sizeof *out);
    if (len < 12 || memcmp(p, QML_COLBLOCK_MAGIC, 4) != 0)
        return bad_block(err, len < 12 ? "shorter than its header" : "no QCB1 magic", 0);
    uint32_t nrows = qml_colblock_u32(p + 4), ncols = qml_colblock_u32(p + 8);
    if (nrows == 0 || nrows > QML_COLBLOCK_MAX_ROWS || ncols > QML_COLBLOCK_MAX_COLS)
        return bad_block(err, "row or column count out of range", 4);
    p += 12;
    const char *what;
    size_t at;
    qml_colblock_col *cols = ncols ? calloc(ncols, sizeof *cols) : NULL;
    if (ncols && !cols)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    for (uint32_t i = 0; i < ncols; i++) {
        qml_colblock_col *c = &cols[i];
        if (e - p < 4)
            goto truncated;
        uint32_t klen = qml_colblock_u32(p);
        p += 4;
        if (klen < 2 || (size_t)(e - p) < klen || p[0] != '"' || p[klen - 1] != '"') {
            what = "a key that is not a JSON string token";
            at = (size_t)(p - base);
            goto bad;
        }
        c->key = (const char *)p;
        c->keylen = klen;
        p += klen;
        if (e - p < 4)
            goto truncated;
        c->nvalues = qml_colblock_u32(p);
        p += 4;
        if ((size_t)(e - p) / 4 < (size_t)c->nvalues + 1)
            goto truncated;
        c->off = p;
        p += 4 * ((size_t)c->nvalues + 1);
        uint32_t prev = qml_colblock_u32(c->off);
        if (prev != 0) {
            what = "values do not start at offset 0";
            at = (size_t)(c->off - base);
            goto bad;
        }
        for (uint32_t v = 1; v <= c->nvalues; v++) {
            uint32_t o = qml_colblock_u32(c->off + 4 * (size_t)v);
            if (o <= prev) {
            what = "an empty value or offsets out of order";
            at = (size_t)(c->off + 4 * (size_t)v - base);
            goto bad;
        }
            prev = o;
        }
        if ((size_t)(e - p) < (size_t)prev + 1)
            goto truncated;
        c->values = (const char *)p;
        p += prev;
        c->width = *p++;
        if (c->width != 1 && c->width != 2 && c->width != 4) {
            what = "a cell width other than 1, 2 or 4";
            at = (size_t)(p - 1 - base);
            goto bad;
        }
        if ((size_t)(e - p) / c->width < nrows)
            goto truncated;
        c->cells = p;
        p += (size_t)nrows * c->width;
        for (uint32_t r = 0; r < nrows; r++)
            if (qml_colblock_cell(c, r) > c->nvalues) {
            what = "a cell past its column's values";
            at = (size_t)(c->cells + (size_t)r * c->width - base);
            goto bad;
        }
    }
    out->nrows = nrows;
    out->ncols = ncols;
    out->cols = cols;
    *used = (size_t)(p - base);
    return 0;
truncated:
    what = "cut short";
    at = len;
bad:
    free(cols);
    return bad_block(err, what, at);
}

void qml_colblock_view_free(qml_colblock *v)
{
    free(v->cols);
    memset(v, 0, sizeof *v);
}

int qml_colblock_render(const qml_colblock *v, uint32_t r, qn_buf *out)
{
    int first = 1;
    qn_buf_append(out, "{", 1);
    for (uint32_t i = 0; i < v->ncols; i++) {
        const qml_colblock_col *c = &v->cols[i];
        uint32_t k = qml_colblock_cell(c, r);
        if (!k)
            continue;
        size_t n;
        const char *val = qml_colblock_value(c, k - 1, &n);
        if (!first)
            qn_buf_append(out, ",", 1);
        first = 0;
        qn_buf_append(out, c->key, c->keylen);
        qn_buf_append(out, ":", 1);
        qn_buf_append(out, val, n);
    }
    return qn_buf_append(out, "}", 1);
}

int qml_colblock_slice(const qml_colblock *v, uint32_t from, uint32_t to, qn_buf *out)
{
    char h[12];
    memcpy(h, QML_COLBLOCK_MAGIC, 4);
    put32(h + 4, to - from);
    put32(h + 8, v->ncols);
    qn_buf_append(out, h, 12);
    for (uint32_t i = 0; i < v->ncols; i++) {
        const qml_colblock_col *c = &v->cols[i];
        put32(h, (uint32_t)c->keylen);
        qn_buf_append(out, h, 4);
        qn_buf_append(out, c->key, c->keylen);
        put32(h, c->nvalues);
        qn_buf_append(out, h, 4);
        size_t vbytes = qml_colblock_u32(c->off + 4 * (size_t)c->nvalues);
        qn_buf_append(out, c->off, 4 * ((size_t)c->nvalues + 1));
        qn_buf_append(out, c->values, vbytes);
        h[0] = (char)c->width;
        qn_buf_append(out, h, 1);
        qn_buf_append(out, c->cells + (size_t)from * c->width, (size_t)(to - from) * c->width);
    }
    return qn_buf_error(out);
}
