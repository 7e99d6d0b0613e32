/*
 * npy.c - NumPy .npy reading and writing (see npy.h).
 *
 * The format (numpy/lib/format.py, NEP 1): the magic "\x93NUMPY", a version
 * byte pair (1, 0), a little-endian uint16 header length, then that many bytes
 * of a Python dict literal such as
 *     {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
 * padded with spaces and ending in '\n', then the raw payload. The header is
 * parsed by a small strict recognizer (not a Python evaluator): exactly the
 * three keys, each once, values of the right kind, nothing else. The payload
 * size must equal the product of the shape times the item size, so a
 * truncated or padded file is refused rather than half-read. Only
 * little-endian hosts are supported (asserted at compile time below), so the
 * payload is copied as is.
 */
#include "ml/npy.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "npy.c assumes a little-endian host");

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_PREFIX_LEN 10 /* magic, 2 version bytes, uint16 header length */

static const struct {
    const char *descr;
    size_t size;
} dtypes[] = {
    [QML_NPY_F4] = {"<f4", 4},
    [QML_NPY_F8] = {"<f8", 8},
    [QML_NPY_I4] = {"<i4", 4},
    [QML_NPY_I8] = {"<i8", 8},
};
#define N_DTYPES (sizeof dtypes / sizeof dtypes[0])

const char *qml_npy_descr(qml_npy_dtype dtype)
{
    return (size_t)dtype < N_DTYPES ? dtypes[dtype].descr : "?";
}

size_t qml_npy_itemsize(qml_npy_dtype dtype)
{
    return (size_t)dtype < N_DTYPES ? dtypes[dtype].size : 0;
}

void qml_npy_release(qml_npy *a)
{
    if (!a)
        return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* ---- writing ---- */

int qml_npy_write(const char *path, qml_npy_dtype dtype, int ndim, const int64_t *shape,
                  const void *data, qn_err *err)
{
    if ((size_t)dtype >= N_DTYPES)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: unknown dtype %d", path, (int)dtype);
    if (ndim != 1 && ndim != 2)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: only 1-D and 2-D arrays, got %d-D",
                          path, ndim);
    size_t count = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || __builtin_mul_overflow(count, (size_t)shape[d], &count))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: bad dimension %d of size %lld",
                              path, d, (long long)shape[d]);
    }
    size_t bytes;
    if (__builtin_mul_overflow(count, dtypes[dtype].size, &bytes))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: array too large", path);

    char dict[160];
    int n;
    if (ndim == 1)
        n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%lld,), }",
                     dtypes[dtype].descr, (long long)shape[0]);
    else
        n = snprintf(dict, sizeof dict,
                     "{'descr': '%s', 'fortran_order': False, 'shape': (%lld, %lld), }",
                     dtypes[dtype].descr, (long long)shape[0], (long long)shape[1]);
    assert(n > 0 && (size_t)n < sizeof dict);
    /* Pad with spaces and a final '\n' so the payload starts 64-byte aligned,
     * as numpy itself does. */
    size_t total = NPY_PREFIX_LEN + (size_t)n + 1;
    total = (total + 63) / 64 * 64;
    unsigned char head[256];
    assert(total <= sizeof head);
    size_t hlen = total - NPY_PREFIX_LEN;
    memcpy(head, NPY_MAGIC, NPY_MAGIC_LEN);
    head[6] = 1;
    head[7] = 0;
    head[8] = (unsigned char)(hlen & 0xff);
    head[9] = (unsigned char)(hlen >> 8);
    memcpy(head + NPY_PREFIX_LEN, dict, (size_t)n);
    memset(head + NPY_PREFIX_LEN + n, ' ', total - NPY_PREFIX_LEN - (size_t)n);
    head[total - 1] = '\n';

    int rc = 0;
    FILE *f = fopen(path, "wb");
    if (!f)
        return qn_err_set(err, QN_INTERNAL, "%s: cannot create: %s", path, strerror(errno));
    if (fwrite(head, 1, total, f) != total || (bytes && fwrite(data, 1, bytes, f) != bytes)) {
        rc = qn_err_set(err, QN_INTERNAL, "%s: write failed: %s", path, strerror(errno));
        fclose(f);
        goto out;
    }
    if (fclose(f) != 0)
        rc = qn_err_set(err, QN_INTERNAL, "%s: write failed: %s", path, strerror(errno));
out:
    return rc;
}

/* ---- header parsing ---- */

typedef struct {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

static int eat(cursor *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* A quoted Python string literal without escapes ('x' or "x") into buf. */
static int read_str(cursor *c, char *buf, size_t cap)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return -1;
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || n + 1 >= cap)
            return -1;
        buf[n++] = *c->p++;
    }
    if (c->p >= c->end)
        return -1;
    c->p++;
    buf[n] = '\0';
    return 0;
}

static int read_word(cursor *c, const char *w)
{
    skip_ws(c);
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0)
        return 0;
    c->p += n;
    return 1;
}

/* A non-negative decimal integer fitting in int64. */
static int read_dim(cursor *c, int64_t *v)
{
    skip_ws(c);
    if (c->p >= c->end || *c->p < '0' || *c->p > '9')
        return -1;
    int64_t x = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (__builtin_mul_overflow(x, 10, &x) || __builtin_add_overflow(x, *c->p - '0', &x))
            return -1;
        c->p++;
    }
    *v = x;
    return 0;
}

/* hdr/hlen: the dict text after the 10-byte prefix. Fills dtype, ndim, shape. */
static int parse_header(const char *hdr, size_t hlen, const char *what, qml_npy *a, qn_err *err)
{
    if (hlen == 0 || hdr[hlen - 1] != '\n')
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: npy header does not end in a newline", what);
    cursor c = {hdr, hdr + hlen - 1};
    int seen_descr = 0, seen_order = 0, seen_shape = 0;
    if (!eat(&c, '{'))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: npy header is not a dict", what);
    for (;;) {
        if (eat(&c, '}'))
            break;
        char key[32], val[32];
        if (read_str(&c, key, sizeof key) < 0 || !eat(&c, ':'))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: npy header: expected a quoted key",
                              what);
        if (strcmp(key, "descr") == 0) {
            if (seen_descr++)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: npy header repeats 'descr'", what);
            if (read_str(&c, val, sizeof val) < 0)
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "%s: npy header: 'descr' must be a simple dtype string", what);
            size_t t;
            for (t = 0; t < N_DTYPES; t++)
                if (strcmp(val, dtypes[t].descr) == 0)
                    break;
            if (t == N_DTYPES)
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "%s: unsupported dtype '%s' (want <f4, <f8, <i4 or <i8)", what, val);
            a->dtype = (qml_npy_dtype)t;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (seen_order++)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: npy header repeats 'fortran_order'",
                                  what);
            if (read_word(&c, "True"))
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "%s: Fortran-order arrays are not supported (save in C order)", what);
            if (!read_word(&c, "False"))
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "%s: npy header: 'fortran_order' must be True or False", what);
        } else if (strcmp(key, "shape") == 0) {
            if (seen_shape++)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: npy header repeats 'shape'", what);
            if (!eat(&c, '('))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: npy header: 'shape' is not a tuple",
                                  what);
            int nd = 0, trailing_comma = 0;
            while (!eat(&c, ')')) {
                int64_t v;
                if (nd >= 2)
                    return qn_err_set(err, QN_INVALID_ARGUMENT,
                                      "%s: only 1-D and 2-D arrays are supported", what);
                if (read_dim(&c, &v) < 0)
                    return qn_err_set(err, QN_INVALID_ARGUMENT,
                                      "%s: npy header: bad dimension in 'shape'", what);
                a->shape[nd++] = v;
                trailing_comma = eat(&c, ',');
                if (!trailing_comma) {
                    if (!eat(&c, ')'))
                        return qn_err_set(err, QN_INVALID_ARGUMENT,
                                          "%s: npy header: 'shape' tuple is malformed", what);
                    break;
                }
            }
            /* "(5)" is not a tuple in Python; numpy writes "(5,)". */
            if (nd == 1 && !trailing_comma)
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "%s: npy header: 'shape' (n) is not a tuple", what);
            if (nd == 0)
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "%s: 0-D arrays are not supported (want 1-D or 2-D)", what);
            a->ndim = nd;
            if (nd == 1)
                a->shape[1] = 1;
        } else {
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: npy header has unknown key '%s'", what,
                              key);
        }
        if (!eat(&c, ',')) {
            if (!eat(&c, '}'))
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "%s: npy header: expected ',' or '}' after '%s'", what, key);
            break;
        }
    }
    skip_ws(&c);
    if (c.p != c.end)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: npy header has trailing characters", what);
    if (!seen_descr || !seen_order || !seen_shape)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: npy header lacks '%s'", what,
                          !seen_descr ? "descr" : !seen_order ? "fortran_order" : "shape");
    return 0;
}

/* Checks the 10-byte prefix; returns the header length or a negative code. */
static int parse_prefix(const unsigned char *p, size_t len, const char *what, size_t *hlen,
                        qn_err *err)
{
    if (len < NPY_PREFIX_LEN || memcmp(p, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: not a .npy file (bad magic)", what);
    if (p[6] != 1 || p[7] != 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "%s: unsupported .npy format version %u.%u (want 1.0)", what, p[6], p[7]);
    *hlen = (size_t)p[8] | (size_t)p[9] << 8;
    return 0;
}

/* The payload size the header promises, or a negative code on overflow. */
static int payload_size(const qml_npy *a, const char *what, size_t *bytes, qn_err *err)
{
    size_t count;
    if (__builtin_mul_overflow((size_t)a->shape[0], (size_t)a->shape[1], &count) ||
        __builtin_mul_overflow(count, dtypes[a->dtype].size, bytes))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: shape (%lld, %lld) is too large", what,
                          (long long)a->shape[0], (long long)a->shape[1]);
    return 0;
}

static int check_size(const qml_npy *a, const char *what, size_t want, size_t have, qn_err *err)
{
    if (want != have)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "%s: shape (%lld, %lld) of %s needs %zu payload bytes, the file has %zu",
                          what, (long long)a->shape[0], (long long)a->shape[1],
                          dtypes[a->dtype].descr, want, have);
    return 0;
}

int qml_npy_parse(const void *buf, size_t len, const char *what, qml_npy *out, qn_err *err)
{
    const unsigned char *p = buf;
    qml_npy a = {0};
    size_t hlen = 0, bytes = 0;
    int rc;
    memset(out, 0, sizeof *out);
    if ((rc = parse_prefix(p, len, what, &hlen, err)) < 0)
        return rc;
    if (len - NPY_PREFIX_LEN < hlen)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: truncated npy header", what);
    if ((rc = parse_header((const char *)p + NPY_PREFIX_LEN, hlen, what, &a, err)) < 0 ||
        (rc = payload_size(&a, what, &bytes, err)) < 0 ||
        (rc = check_size(&a, what, bytes, len - NPY_PREFIX_LEN - hlen, err)) < 0)
        return rc;
    a.data = malloc(bytes ? bytes : 1);
    if (!a.data)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "%s: out of memory for %zu bytes", what, bytes);
    memcpy(a.data, p + NPY_PREFIX_LEN + hlen, bytes);
    *out = a;
    return 0;
}

int qml_npy_read(const char *path, qml_npy *out, qn_err *err)
{
    qml_npy a = {0};
    unsigned char prefix[NPY_PREFIX_LEN];
    char *hdr = NULL;
    size_t hlen = 0, bytes = 0;
    struct stat st;
    int rc = 0;
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f)
        return qn_err_set(err, errno == ENOENT ? QN_NOT_FOUND : QN_INTERNAL, "%s: cannot open: %s",
                          path, strerror(errno));
    if (fstat(fileno(f), &st) != 0) {
        rc = qn_err_set(err, QN_INTERNAL, "%s: cannot stat: %s", path, strerror(errno));
        goto out;
    }
    size_t fsize = (size_t)st.st_size;
    size_t got = fread(prefix, 1, sizeof prefix, f);
    if ((rc = parse_prefix(prefix, got, path, &hlen, err)) < 0)
        goto out;
    if (fsize - NPY_PREFIX_LEN < hlen) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "%s: truncated npy header", path);
        goto out;
    }
    hdr = malloc(hlen ? hlen : 1);
    if (!hdr) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "%s: out of memory", path);
        goto out;
    }
    if (fread(hdr, 1, hlen, f) != hlen) {
        rc = qn_err_set(err, QN_INTERNAL, "%s: read failed", path);
        goto out;
    }
    if ((rc = parse_header(hdr, hlen, path, &a, err)) < 0 ||
        (rc = payload_size(&a, path, &bytes, err)) < 0 ||
        (rc = check_size(&a, path, bytes, fsize - NPY_PREFIX_LEN - hlen, err)) < 0)
        goto out;
    a.data = malloc(bytes ? bytes : 1);
    if (!a.data) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "%s: out of memory for %zu bytes", path, bytes);
        goto out;
    }
    if (fread(a.data, 1, bytes, f) != bytes) {
        rc = qn_err_set(err, QN_INTERNAL, "%s: read failed: %s", path, strerror(errno));
        goto out;
    }
    *out = a;
    a.data = NULL;
out:
    free(a.data);
    free(hdr);
    fclose(f);
    return rc;
}
