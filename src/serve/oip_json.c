/*
 * oip_json.c - reading the JSON body of an infer request (see oip_json.h).
 *
 * The general reader parses a jansson tree and walks it: every check, every
 * error message, Triton's binary tensor extension, nested data flattened
 * row-major, null in FP32/FP64 data as a missing value. The fast reader is a
 * single pass over the bytes for the body almost every client sends, and it
 * was written to decline rather than decide: any construct it does not take
 * (escapes, non-ASCII bytes, parameters, duplicate keys, data before the
 * datatype and shape, a value of the wrong type or out of range, more or
 * fewer elements than the shape) sends the body to the general reader, which
 * then gives the answer, error or not. On a one-row Adult request it saves
 * about a third of the request's instructions (bench/callgrind_serve.sh).
 */
#include "serve/oip_json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"

/* "1,2,3" for messages. */
static void shape_list(const oip_tensor *t, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (int k = 0; k < t->ndim && o < cap; k++)
        o += (size_t)snprintf(out + o, cap - o, "%s%lld", k ? "," : "", (long long)t->shape[k]);
}

/* ---- the general reader (jansson) -------------------------------------------------- */

typedef struct parse_ctx {
    qn_arena *a;
    const char *name;
    oip_datatype dt;
    uint8_t *data;       /* fixed-size types */
    oip_bytes *bytes;    /* BYTES */
    size_t n, cap;
} parse_ctx;

static int put_elem(parse_ctx *p, const json_t *v, qn_err *err)
{
    if (p->n == p->cap)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input '%s': the data has more elements than the shape holds (%zu)",
                          p->name, p->cap);
    size_t i = p->n;
    switch (p->dt) {
    case OIP_BOOL:
        if (!json_is_boolean(v))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input '%s', element %zu: BOOL data must be true or false", p->name,
                              i);
        p->data[i] = json_is_true(v);
        break;
#define INT_CASE(E, T, LO, HI)                                                                  \
    case OIP_##E: {                                                                             \
        if (!json_is_integer(v) || json_integer_value(v) < (LO) ||                              \
            (HI != 0 && (unsigned long long)json_integer_value(v) > (unsigned long long)(HI)))  \
            return qn_err_set(err, QN_INVALID_ARGUMENT,                                          \
                              "input '%s', element %zu: expected an integer within the range "  \
                              "of " #E,                                                          \
                              p->name, i);                                                        \
        T x = (T)json_integer_value(v);                                                         \
        memcpy(p->data + i * sizeof x, &x, sizeof x);                                           \
        break;                                                                                  \
    }
        INT_CASE(UINT8, uint8_t, 0, UINT8_MAX)
        INT_CASE(UINT16, uint16_t, 0, UINT16_MAX)
        INT_CASE(UINT32, uint32_t, 0, UINT32_MAX)
        INT_CASE(UINT64, uint64_t, 0, 0)
        INT_CASE(INT8, int8_t, INT8_MIN, INT8_MAX)
        INT_CASE(INT16, int16_t, INT16_MIN, INT16_MAX)
        INT_CASE(INT32, int32_t, INT32_MIN, INT32_MAX)
        INT_CASE(INT64, int64_t, INT64_MIN, 0)
#undef INT_CASE
    case OIP_FP32:
    case OIP_FP64: {
        double d;
        if (json_is_null(v))
            d = NAN; /* missing: the transforms impute it or refuse it by name */
        else if (json_is_number(v))
            d = json_number_value(v);
        else
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input '%s', element %zu: expected a number (or null for missing)",
                              p->name, i);
        if (p->dt == OIP_FP32) {
            float f = (float)d;
            memcpy(p->data + i * 4, &f, 4);
        } else {
            memcpy(p->data + i * 8, &d, 8);
        }
        break;
    }
    case OIP_BYTES:
        if (!json_is_string(v))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input '%s', element %zu: BYTES data must be strings", p->name, i);
        p->bytes[i] = (oip_bytes){(const uint8_t *)json_string_value(v), json_string_length(v)};
        break;
    default:
        return qn_err_set(err, QN_INVALID_ARGUMENT, "input '%s': datatype %s", p->name,
                          oip_datatype_name(p->dt));
    }
    p->n++;
    return 0;
}

static int flatten(parse_ctx *p, const json_t *v, int depth, qn_err *err)
{
    if (!json_is_array(v))
        return put_elem(p, v, err);
    if (depth >= OIP_MAX_DIMS)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "input '%s': data nested deeper than %d",
                          p->name, OIP_MAX_DIMS);
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
        int rc = flatten(p, x, depth + 1, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* The elements of data as flatten would take them, counting stops once past
 * cap (enough to say "more than the shape holds"). Checked before anything
 * is allocated for the input, so a small body cannot make a large
 * allocation by declaring a large shape. */
static int count_elems(const json_t *v, int depth, size_t cap, size_t *n, const char *name,
                       qn_err *err)
{
    if (!json_is_array(v)) {
        (*n)++;
        return 0;
    }
    if (depth >= OIP_MAX_DIMS)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "input '%s': data nested deeper than %d",
                          name, OIP_MAX_DIMS);
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
        int rc = count_elems(x, depth + 1, cap, n, name, err);
        if (rc < 0)
            return rc;
        if (*n > cap)
            break;
    }
    return 0;
}

static int parse_shape(const json_t *js, const char *name, oip_tensor *t, qn_err *err)
{
    if (!json_is_array(js) || json_array_size(js) < 1 || json_array_size(js) > OIP_MAX_DIMS)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input '%s': shape must be an array of 1 to %d integers", name,
                          OIP_MAX_DIMS);
    t->ndim = (int)json_array_size(js);
    for (int d = 0; d < t->ndim; d++) {
        const json_t *x = json_array_get(js, (size_t)d);
        if (!json_is_integer(x) || json_integer_value(x) < 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input '%s': shape[%d] must be an integer >= 0", name, d);
        t->shape[d] = json_integer_value(x);
    }
    return 0;
}

/* Raw bytes of one input from the binary section. */
static int take_binary(const char **bin, size_t *left, oip_tensor *t, int64_t nelem, size_t size,
                       qn_arena *a, qn_err *err)
{
    const json_t *bds = t->parameters ? json_object_get(t->parameters, "binary_data_size") : NULL;
    if (!json_is_integer(bds) || json_integer_value(bds) < 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input '%s': no data, and no parameters.binary_data_size", t->name);
    size_t sz = (size_t)json_integer_value(bds);
    if (sz > *left)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input '%s': binary_data_size %zu exceeds the %zu bytes left in the "
                          "body",
                          t->name, sz, *left);
    const char *p = *bin;
    *bin += sz;
    *left -= sz;
    if (t->datatype != OIP_BYTES) {
        if (sz != (size_t)nelem * size)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input '%s': shape holds %lld elements (%zu bytes) but "
                              "binary_data_size is %zu",
                              t->name, (long long)nelem, (size_t)nelem * size, sz);
        t->data = p;
        t->data_len = sz;
        return 0;
    }
    /* Each element takes at least its 4-byte length: bound the count by the
     * bytes before allocating for it. */
    if ((uint64_t)nelem > sz / 4)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input '%s': shape holds %lld BYTES elements but binary_data_size %zu "
                          "is too small for them (each takes a 4-byte length)",
                          t->name, (long long)nelem, sz);
    oip_bytes *el = qn_arena_alloc(a, (size_t)(nelem ? nelem : 1) * sizeof *el);
    if (!el)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    size_t off = 0, n = 0;
    while (off < sz) {
        uint32_t len;
        if (sz - off < 4)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input '%s': element %zu: truncated length prefix", t->name, n);
        memcpy(&len, p + off, 4);
        off += 4;
        if (len > sz - off)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input '%s': element %zu: length %u runs past the data", t->name, n,
                              len);
        if ((int64_t)n == nelem)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input '%s': the data has more elements than the shape holds "
                              "(%lld)",
                              t->name, (long long)nelem);
        el[n++] = (oip_bytes){(const uint8_t *)p + off, len};
        off += len;
    }
    if ((int64_t)n != nelem)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input '%s': shape holds %lld elements but the binary data has %zu",
                          t->name, (long long)nelem, n);
    t->bytes = el;
    t->nbytes = n;
    return 0;
}

/* The jansson error position of an undecodable byte, mapped to the input
 * whose "name" comes last before it, so the message names the input. The
 * body is not NUL-terminated: every search stops at len. */
static void name_near(const char *body, size_t len, size_t pos, char *out, size_t cap)
{
    out[0] = '\0';
    if (pos > len)
        pos = len;
    for (size_t i = pos; i-- > 0;) {
        if (i + 6 <= pos && memcmp(body + i, "\"name\"", 6) == 0) {
            const char *q = memchr(body + i + 6, '"', pos - (i + 6));
            if (!q)
                return;
            const char *e = memchr(q + 1, '"', len - (size_t)(q + 1 - body));
            if (!e)
                return;
            size_t n = (size_t)(e - q - 1) < cap - 1 ? (size_t)(e - q - 1) : cap - 1;
            memcpy(out, q + 1, n);
            out[n] = '\0';
            return;
        }
    }
}

static int parse_tree(const char *body, size_t len, size_t jlen, qn_arena *a, oip_json_req *pr,
                      qn_err *err)
{
    if (!body || jlen == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "the request body must be a JSON object");
    json_error_t je;
    pr->doc = json_loadb(body, jlen, JSON_REJECT_DUPLICATES, &je);
    if (!pr->doc) {
        char near[128];
        if (strstr(je.text, "decode byte") || strstr(je.text, "UTF-8")) {
            name_near(body, jlen, je.position > 0 ? (size_t)je.position : 0, near,
                      sizeof near);
            if (near[0])
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "input '%s': the data is not valid UTF-8 (byte %d of the body)",
                                  near, je.position);
        }
        return qn_err_set(err, qn_json_load_code(&je), "the body is not valid JSON: %s (line %d, "
                          "column %d)", je.text, je.line, je.column);
    }
    json_t *d = pr->doc;
    static const char *const top[] = {"id", "parameters", "inputs", "outputs", NULL};
    static const char *const in_keys[] = {"name", "shape", "datatype", "data", "parameters", NULL};
    static const char *const out_keys[] = {"name", "parameters", NULL};
    int rc;
    if ((rc = qn_json_only(d, top, err)) < 0)
        return rc;
    const json_t *id = json_object_get(d, "id");
    if (id && (!json_is_string(id) || json_string_length(id) > OIP_JSON_MAX_ID))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "id must be a string of at most %d bytes",
                          OIP_JSON_MAX_ID);
    pr->rq.id = id ? json_string_value(id) : NULL;
    const json_t *params = json_object_get(d, "parameters");
    if (params && !json_is_object(params))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "parameters must be an object");
    pr->rq.parameters = (json_t *)params;
    const json_t *ins = json_object_get(d, "inputs");
    if (!json_is_array(ins) || json_array_size(ins) == 0 || json_array_size(ins) > OIP_JSON_MAX_INPUTS)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "inputs must be an array of 1 to %d tensors", OIP_JSON_MAX_INPUTS);
    size_t nin = json_array_size(ins);
    oip_tensor *inputs = qn_arena_calloc(a, nin, sizeof *inputs);
    if (!inputs)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    const char *bin = body + jlen;
    size_t left = len - jlen;
    for (size_t i = 0; i < nin; i++) {
        const json_t *ji = json_array_get(ins, i);
        oip_tensor *t = &inputs[i];
        const json_t *jn = json_object_get(ji, "name");
        if (!json_is_object(ji) || !json_is_string(jn))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "inputs[%zu] must be an object with a "
                              "\"name\"", i);
        t->name = json_string_value(jn);
        if ((rc = qn_json_only(ji, in_keys, err)) < 0)
            return qn_err_wrap(err, "input '%s'", t->name);
        const json_t *jd = json_object_get(ji, "datatype");
        if (!json_is_string(jd))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "input '%s': datatype is missing",
                              t->name);
        t->datatype = oip_datatype_parse(json_string_value(jd));
        if (t->datatype == OIP_INVALID)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input '%s': unknown datatype '%s' (BOOL, UINT8..UINT64, "
                              "INT8..INT64, FP16, FP32, FP64 or BYTES)",
                              t->name, json_string_value(jd));
        if ((rc = parse_shape(json_object_get(ji, "shape"), t->name, t, err)) < 0)
            return rc;
        const json_t *tp = json_object_get(ji, "parameters");
        if (tp && !json_is_object(tp))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "input '%s': parameters must be an "
                              "object", t->name);
        t->parameters = (json_t *)tp;
        int64_t nelem = oip_tensor_nelem(t);
        char shp[96];
        shape_list(t, shp, sizeof shp);
        if (nelem < 0 || nelem > (int64_t)OIP_JSON_MAX_ELEMS)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "input '%s': shape [%s] is too large",
                              t->name, shp);
        size_t size = oip_datatype_size(t->datatype);
        const json_t *data = json_object_get(ji, "data");
        if (!data)
            rc = take_binary(&bin, &left, t, nelem, size, a, err);
        else if (t->datatype == OIP_FP16)
            rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                            "input '%s': FP16 cannot be sent as JSON data; send it raw with the "
                            "binary tensor extension (parameters.binary_data_size)",
                            t->name);
        else {
            size_t have = 0;
            if ((rc = count_elems(data, 0, (size_t)nelem, &have, t->name, err)) < 0)
                return rc;
            if (have > (size_t)nelem)
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "input '%s': the data has more elements than the shape holds "
                                  "(%lld)",
                                  t->name, (long long)nelem);
            if (have < (size_t)nelem)
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "input '%s': shape [%s] holds %lld elements but the data has "
                                  "%zu",
                                  t->name, shp, (long long)nelem, have);
            parse_ctx p = {.a = a, .name = t->name, .dt = t->datatype, .cap = (size_t)nelem};
            if (t->datatype == OIP_BYTES)
                p.bytes = qn_arena_alloc(a, (size_t)(nelem ? nelem : 1) * sizeof *p.bytes);
            else
                p.data = qn_arena_alloc(a, (size_t)(nelem ? nelem : 1) * size);
            if (!p.bytes && !p.data)
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            if ((rc = flatten(&p, data, 0, err)) == 0 && p.n != (size_t)nelem)
                rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                                "input '%s': shape [%s] holds %lld elements but the data has %zu",
                                t->name, shp, (long long)nelem, p.n);
            if (t->datatype == OIP_BYTES) {
                t->bytes = p.bytes;
                t->nbytes = p.n;
            } else {
                t->data = p.data;
                t->data_len = p.n * size;
            }
        }
        if (rc < 0)
            return rc;
    }
    if (left > 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "the body has %zu bytes after the last binary tensor (the inputs' "
                          "binary_data_size add up to %zu)",
                          left, (size_t)(len - jlen - left));
    pr->rq.inputs = inputs;
    pr->rq.ninputs = nin;
    const json_t *outs = json_object_get(d, "outputs");
    if (outs) {
        if (!json_is_array(outs) || json_array_size(outs) > OIP_JSON_MAX_OUTPUTS)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "outputs must be an array of at most %d",
                              OIP_JSON_MAX_OUTPUTS);
        size_t no = json_array_size(outs);
        const char **outputs = qn_arena_calloc(a, no ? no : 1, sizeof *outputs);
        if (!outputs)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        for (size_t i = 0; i < no; i++) {
            const json_t *jo = json_array_get(outs, i);
            const json_t *jn = json_object_get(jo, "name");
            if (!json_is_object(jo) || !json_is_string(jn))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "outputs[%zu] must be an object "
                                  "with a \"name\"", i);
            if ((rc = qn_json_only(jo, out_keys, err)) < 0)
                return qn_err_wrap(err, "output '%s'", json_string_value(jn));
            outputs[i] = json_string_value(jn);
        }
        pr->rq.outputs = outputs;
        pr->rq.noutputs = no;
    }
    return 0;
}


int oip_json_parse_tree(const char *body, size_t len, size_t jlen, qn_arena *a, oip_json_req *pr,
                        qn_err *err)
{
    return parse_tree(body, len, jlen, a, pr, err);
}

/* ---- the fast reader ---------------------------------------------------------------- */

/* Every function below returns 1 when it took what it expected and 0 when
 * the body is to be declined (never an error of its own). */
typedef struct scan {
    const char *p, *end;
    qn_arena *a;
} scan;

static void skip_ws(scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

static int take(scan *s, char c)
{
    skip_ws(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return 1;
    }
    return 0;
}

static int peek(scan *s, char c)
{
    skip_ws(s);
    return s->p < s->end && *s->p == c;
}

static int take_word(scan *s, const char *w, size_t n)
{
    skip_ws(s);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n) != 0)
        return 0;
    s->p += n;
    return 1;
}

/* A string of printable ASCII without escapes (what names, datatypes and
 * most text are): its bytes in the body. */
static int take_str(scan *s, const char **out, size_t *len)
{
    skip_ws(s);
    if (s->p >= s->end || *s->p != '"')
        return 0;
    const char *b = ++s->p;
    while (s->p < s->end) {
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            *out = b;
            *len = (size_t)(s->p - b);
            s->p++;
            return 1;
        }
        if (c < 0x20 || c >= 0x80 || c == '\\')
            return 0;
        s->p++;
    }
    return 0;
}

static int take_key(scan *s, const char **k, size_t *n)
{
    return take_str(s, k, n) && take(s, ':');
}

static int key_is(const char *k, size_t n, const char *want)
{
    return strlen(want) == n && memcmp(k, want, n) == 0;
}

static int digit(const scan *s, const char *q)
{
    return q < s->end && *q >= '0' && *q <= '9';
}

/* A JSON number the way jansson reads it: no '.', 'e' or 'E' makes an
 * integer (a long long; out of range is jansson's error, so declined),
 * anything else a double (overflow declined likewise). *d is the value
 * jansson's json_number_value would give. */
static int take_num(scan *s, int *is_int, long long *i, double *d)
{
    skip_ws(s);
    const char *b = s->p, *q = s->p;
    int neg = q < s->end && *q == '-';
    q += neg;
    if (!digit(s, q))
        return 0;
    if (*q == '0')
        q++;
    else
        while (digit(s, q))
            q++;
    *is_int = 1;
    if (q < s->end && *q == '.') {
        q++;
        if (!digit(s, q))
            return 0;
        while (digit(s, q))
            q++;
        *is_int = 0;
    }
    if (q < s->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < s->end && (*q == '+' || *q == '-'))
            q++;
        if (!digit(s, q))
            return 0;
        while (digit(s, q))
            q++;
        *is_int = 0;
    }
    if (*is_int) {
        unsigned long long u = 0, lim = neg ? 9223372036854775808ull : 9223372036854775807ull;
        for (const char *c = b + neg; c < q; c++) {
            unsigned dg = (unsigned)(*c - '0');
            if (u > (lim - dg) / 10)
                return 0;
            u = u * 10 + dg;
        }
        *i = neg ? (u == 9223372036854775808ull ? INT64_MIN : -(long long)u) : (long long)u;
        *d = (double)*i;
    } else {
        char buf[64];
        size_t n = (size_t)(q - b);
        if (n >= sizeof buf)
            return 0;
        memcpy(buf, b, n);
        buf[n] = '\0';
        *d = strtod(buf, NULL);
        if (isinf(*d))
            return 0;
    }
    s->p = q;
    return 1;
}

typedef struct fill {
    oip_datatype dt;
    uint8_t *data;
    oip_bytes *bytes;
    size_t n, cap;
} fill;

/* One element, checked as put_elem checks it. */
static int take_elem(scan *s, fill *f)
{
    if (f->n == f->cap)
        return 0;
    size_t i = f->n;
    int is_int;
    long long x;
    double d;
    switch (f->dt) {
    case OIP_BOOL:
        if (take_word(s, "true", 4))
            f->data[i] = 1;
        else if (take_word(s, "false", 5))
            f->data[i] = 0;
        else
            return 0;
        break;
#define INT_CASE(E, T, LO, HI)                                                                  \
    case OIP_##E: {                                                                             \
        if (!take_num(s, &is_int, &x, &d) || !is_int || x < (LO) ||                             \
            (HI != 0 && (unsigned long long)x > (unsigned long long)(HI)))                       \
            return 0;                                                                           \
        T v = (T)x;                                                                             \
        memcpy(f->data + i * sizeof v, &v, sizeof v);                                           \
        break;                                                                                  \
    }
        INT_CASE(UINT8, uint8_t, 0, UINT8_MAX)
        INT_CASE(UINT16, uint16_t, 0, UINT16_MAX)
        INT_CASE(UINT32, uint32_t, 0, UINT32_MAX)
        INT_CASE(UINT64, uint64_t, 0, 0)
        INT_CASE(INT8, int8_t, INT8_MIN, INT8_MAX)
        INT_CASE(INT16, int16_t, INT16_MIN, INT16_MAX)
        INT_CASE(INT32, int32_t, INT32_MIN, INT32_MAX)
        INT_CASE(INT64, int64_t, INT64_MIN, 0)
#undef INT_CASE
    case OIP_FP32:
    case OIP_FP64:
        if (take_word(s, "null", 4))
            d = NAN;
        else if (!take_num(s, &is_int, &x, &d))
            return 0;
        if (f->dt == OIP_FP32) {
            float fl = (float)d;
            memcpy(f->data + i * 4, &fl, 4);
        } else {
            memcpy(f->data + i * 8, &d, 8);
        }
        break;
    case OIP_BYTES: {
        const char *p;
        size_t n;
        if (!take_str(s, &p, &n))
            return 0;
        f->bytes[i] = (oip_bytes){(const uint8_t *)p, n};
        break;
    }
    default: return 0;
    }
    f->n++;
    return 1;
}

/* An array of elements or of arrays, flattened row-major; an array at
 * depth OIP_MAX_DIMS is declined (the general reader refuses it). */
static int take_data(scan *s, fill *f, int depth)
{
    if (!peek(s, '['))
        return take_elem(s, f);
    if (depth >= OIP_MAX_DIMS)
        return 0;
    s->p++;
    if (take(s, ']'))
        return 1;
    do {
        if (!take_data(s, f, depth + 1))
            return 0;
    } while (take(s, ','));
    return take(s, ']');
}

static int take_shape(scan *s, oip_tensor *t)
{
    if (!take(s, '['))
        return 0;
    t->ndim = 0;
    do {
        int is_int;
        long long x;
        double d;
        if (t->ndim == OIP_MAX_DIMS || !take_num(s, &is_int, &x, &d) || !is_int || x < 0)
            return 0;
        t->shape[t->ndim++] = x;
    } while (take(s, ','));
    return take(s, ']');
}

/* oip_datatype_parse of the n bytes at v, without copying them out: the
 * names compared by length first (one or two memcmp for a real name). */
static oip_datatype datatype_of(const char *v, size_t n)
{
#define OIP__XX(e, nm, sz)                                                                      \
    if (n == sizeof nm - 1 && memcmp(v, nm, n) == 0)                                            \
        return OIP_##e;
    OIP_DATATYPE_MAP(OIP__XX)
#undef OIP__XX
    return OIP_INVALID;
}

/* {"name":..,"datatype":..,"shape":[..],"data":[..]} with data last. */
static int take_input(scan *s, oip_tensor *t)
{
    int seen_name = 0, seen_dt = 0, seen_shape = 0, seen_data = 0;
    if (!take(s, '{'))
        return 0;
    do {
        const char *k, *v;
        size_t kn, vn;
        if (!take_key(s, &k, &kn))
            return 0;
        if (key_is(k, kn, "name") && !seen_name++) {
            if (!take_str(s, &v, &vn) || !(t->name = qn_arena_strndup(s->a, v, vn)))
                return 0;
        } else if (key_is(k, kn, "datatype") && !seen_dt++) {
            if (!take_str(s, &v, &vn))
                return 0;
            t->datatype = datatype_of(v, vn);
            if (t->datatype == OIP_INVALID || t->datatype == OIP_FP16)
                return 0;
        } else if (key_is(k, kn, "shape") && !seen_shape++) {
            if (!take_shape(s, t))
                return 0;
        } else if (key_is(k, kn, "data") && !seen_data++) {
            if (!seen_dt || !seen_shape)
                return 0;
            int64_t nelem = oip_tensor_nelem(t);
            if (nelem < 0 || nelem > (int64_t)OIP_JSON_MAX_ELEMS)
                return 0;
            /* Each element takes at least two bytes of what is left ("1,"):
             * a larger shape is declined before anything is allocated. */
            if ((uint64_t)nelem > (uint64_t)(s->end - s->p) / 2 + 1)
                return 0;
            size_t size = oip_datatype_size(t->datatype), cnt = (size_t)(nelem ? nelem : 1);
            fill f = {.dt = t->datatype, .cap = (size_t)nelem};
            if (t->datatype == OIP_BYTES)
                f.bytes = qn_arena_alloc(s->a, cnt * sizeof *f.bytes);
            else
                f.data = qn_arena_alloc(s->a, cnt * size);
            if ((!f.bytes && !f.data) || !take_data(s, &f, 0) || f.n != (size_t)nelem)
                return 0;
            if (t->datatype == OIP_BYTES) {
                t->bytes = f.bytes;
                t->nbytes = f.n;
            } else {
                t->data = f.data;
                t->data_len = f.n * size;
            }
        } else {
            return 0; /* parameters, an unknown or a repeated key */
        }
    } while (take(s, ','));
    return take(s, '}') && seen_name && seen_data;
}

static int take_inputs(scan *s, oip_infer_request *rq)
{
    size_t cap = 8, n = 0;
    oip_tensor *ts = qn_arena_calloc(s->a, cap, sizeof *ts);
    if (!ts || !take(s, '['))
        return 0;
    do {
        if (n == OIP_JSON_MAX_INPUTS)
            return 0;
        if (n == cap) {
            oip_tensor *more = qn_arena_calloc(s->a, cap * 2, sizeof *more);
            if (!more)
                return 0;
            memcpy(more, ts, n * sizeof *ts);
            ts = more;
            cap *= 2;
        }
        if (!take_input(s, &ts[n++]))
            return 0;
    } while (take(s, ','));
    if (!take(s, ']'))
        return 0;
    rq->inputs = ts;
    rq->ninputs = n;
    return 1;
}

static int take_outputs(scan *s, oip_infer_request *rq)
{
    const char **names = qn_arena_calloc(s->a, OIP_JSON_MAX_OUTPUTS, sizeof *names);
    size_t n = 0;
    if (!names || !take(s, '['))
        return 0;
    if (!take(s, ']')) {
        do {
            const char *k, *v;
            size_t kn, vn;
            if (n == OIP_JSON_MAX_OUTPUTS || !take(s, '{') || !take_key(s, &k, &kn) ||
                !key_is(k, kn, "name") || !take_str(s, &v, &vn) || !take(s, '}') ||
                !(names[n++] = qn_arena_strndup(s->a, v, vn)))
                return 0;
        } while (take(s, ','));
        if (!take(s, ']'))
            return 0;
    }
    rq->outputs = names;
    rq->noutputs = n;
    return 1;
}

int oip_json_parse_fast(const char *body, size_t len, qn_arena *a, oip_json_req *pr)
{
    scan sc = {.p = body, .end = body + len, .a = a}, *s = &sc;
    oip_infer_request rq = {0};
    int seen_id = 0, seen_in = 0, seen_out = 0;
    if (!body || !take(s, '{'))
        return 1;
    do {
        const char *k, *v;
        size_t kn, vn;
        if (!take_key(s, &k, &kn))
            return 1;
        if (key_is(k, kn, "inputs") && !seen_in++) {
            if (!take_inputs(s, &rq))
                return 1;
        } else if (key_is(k, kn, "id") && !seen_id++) {
            if (!take_str(s, &v, &vn) || vn > OIP_JSON_MAX_ID || !(rq.id = qn_arena_strndup(a, v, vn)))
                return 1;
        } else if (key_is(k, kn, "outputs") && !seen_out++) {
            if (!take_outputs(s, &rq))
                return 1;
        } else {
            return 1;
        }
    } while (take(s, ','));
    if (!take(s, '}') || !seen_in)
        return 1;
    skip_ws(s);
    if (s->p != s->end)
        return 1;
    pr->doc = NULL;
    pr->rq = rq;
    return 0;
}

int oip_json_parse_infer(const char *body, size_t len, size_t jlen, qn_arena *a,
                         oip_json_req *pr, qn_err *err)
{
    memset(pr, 0, sizeof *pr);
    if (jlen == len && oip_json_parse_fast(body, len, a, pr) == 0)
        return 0;
    return oip_json_parse_tree(body, len, jlen, a, pr, err);
}

void oip_json_req_free(oip_json_req *pr)
{
    json_decref(pr->doc);
    pr->doc = NULL;
}
