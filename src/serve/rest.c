/*
 * rest.c - quern-serve's REST front: the Open Inference Protocol (KServe V2)
 * over HTTP/JSON, plus the recommendation routes of DESIGN.md section 5.
 *
 * JSON tensors are translated into the protocol-neutral oip structs (data
 * converted to flat little-endian bytes of the declared datatype, checked
 * element by element against it) and answered by the same backend as gRPC.
 * Nested "data" arrays are flattened row-major. Triton's binary tensor
 * extension is accepted on input: with an Inference-Header-Content-Length
 * header the body is that many bytes of JSON followed by the raw tensors, in
 * input order, each input naming its size in parameters.binary_data_size
 * (BYTES elements as a 4-byte little-endian length and the bytes). That is
 * the only way to send FP16 (JSON has no half floats) and the way to send NaN.
 * In JSON, null in FP32/FP64 data means a missing value.
 *
 * The /v2 routes answer errors as {"error":"message"}; the /v1 routes in the
 * error model of DESIGN.md section 1. The response is written by hand (not
 * through jansson) because this is the hot path.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/json.h"
#include "core/log.h"
#include "core/validate.h"
#include "serve/serve.h"

#define MAX_INPUTS 256
#define MAX_OUTPUTS 64
#define MAX_ID 256

/* ---- small helpers ---------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void buf_json_str(qn_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    qn_buf_append(b, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        qn_buf_append(b, s + start, i - start);
        char esc[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
            qn_buf_append(b, esc, 2);
        } else {
            qn_buf_append(b, esc, 6);
        }
        start = i + 1;
    }
    qn_buf_append(b, s + start, len - start);
    qn_buf_append(b, "\"", 1);
}

static serve *S(void *ud)
{
    return ud;
}

/* ---- JSON tensors -> oip ------------------------------------------------------- */

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
    t->bytes = el;
    t->nbytes = n;
    return 0;
}

/* The jansson error position of an undecodable byte, mapped to the input
 * whose "name" comes last before it, so the message names the input. */
static void name_near(const char *body, size_t pos, char *out, size_t cap)
{
    out[0] = '\0';
    for (size_t i = pos; i-- > 0;) {
        if (i + 6 <= pos && memcmp(body + i, "\"name\"", 6) == 0) {
            const char *q = strchr(body + i + 6, '"');
            if (!q || (size_t)(q - body) >= pos)
                return;
            const char *e = strchr(q + 1, '"');
            if (!e)
                return;
            size_t n = (size_t)(e - q - 1) < cap - 1 ? (size_t)(e - q - 1) : cap - 1;
            memcpy(out, q + 1, n);
            out[n] = '\0';
            return;
        }
    }
}

typedef struct parsed {
    json_t *doc;
    oip_infer_request rq;
    oip_tensor *inputs;
    const char **outputs;
} parsed;

static int parse_infer(qn_req *req, parsed *pr, qn_err *err)
{
    size_t len;
    const char *body = qn_req_body(req, &len);
    size_t jlen = len;
    const char *hcl = qn_req_header(req, "Inference-Header-Content-Length");
    qn_arena *a = qn_req_arena(req);
    if (hcl) {
        char *end;
        unsigned long long x = strtoull(hcl, &end, 10);
        if (*end || end == hcl || x > len)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "Inference-Header-Content-Length %s does not fit the %zu-byte body",
                              hcl, len);
        jlen = (size_t)x;
    }
    if (!body || jlen == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "the request body must be a JSON object");
    json_error_t je;
    pr->doc = json_loadb(body, jlen, JSON_REJECT_DUPLICATES, &je);
    if (!pr->doc) {
        char near[128];
        if (strstr(je.text, "decode byte") || strstr(je.text, "UTF-8")) {
            name_near(body, (size_t)je.position, near, sizeof near);
            if (near[0])
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "input '%s': the data is not valid UTF-8 (byte %d of the body)",
                                  near, je.position);
        }
        return qn_err_set(err, QN_INVALID_ARGUMENT, "the body is not valid JSON: %s (line %d, "
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
    if (id && (!json_is_string(id) || json_string_length(id) > MAX_ID))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "id must be a string of at most %d bytes",
                          MAX_ID);
    pr->rq.id = id ? json_string_value(id) : NULL;
    const json_t *params = json_object_get(d, "parameters");
    if (params && !json_is_object(params))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "parameters must be an object");
    pr->rq.parameters = (json_t *)params;
    const json_t *ins = json_object_get(d, "inputs");
    if (!json_is_array(ins) || json_array_size(ins) == 0 || json_array_size(ins) > MAX_INPUTS)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "inputs must be an array of 1 to %d tensors", MAX_INPUTS);
    size_t nin = json_array_size(ins);
    pr->inputs = qn_arena_calloc(a, nin, sizeof *pr->inputs);
    if (!pr->inputs)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    const char *bin = body + jlen;
    size_t left = len - jlen;
    for (size_t i = 0; i < nin; i++) {
        const json_t *ji = json_array_get(ins, i);
        oip_tensor *t = &pr->inputs[i];
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
        size_t o = 0;
        for (int k = 0; k < t->ndim; k++)
            o += (size_t)snprintf(shp + o, sizeof shp - o, "%s%lld", k ? "," : "",
                                  (long long)t->shape[k]);
        if (nelem < 0 || nelem > (int64_t)(SERVE_MAX_INFER_BODY))
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
    pr->rq.inputs = pr->inputs;
    pr->rq.ninputs = nin;
    const json_t *outs = json_object_get(d, "outputs");
    if (outs) {
        if (!json_is_array(outs) || json_array_size(outs) > MAX_OUTPUTS)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "outputs must be an array of at most %d",
                              MAX_OUTPUTS);
        size_t no = json_array_size(outs);
        pr->outputs = qn_arena_calloc(a, no ? no : 1, sizeof *pr->outputs);
        if (!pr->outputs)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        for (size_t i = 0; i < no; i++) {
            const json_t *jo = json_array_get(outs, i);
            const json_t *jn = json_object_get(jo, "name");
            if (!json_is_object(jo) || !json_is_string(jn))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "outputs[%zu] must be an object "
                                  "with a \"name\"", i);
            if ((rc = qn_json_only(jo, out_keys, err)) < 0)
                return qn_err_wrap(err, "output '%s'", json_string_value(jn));
            pr->outputs[i] = json_string_value(jn);
        }
        pr->rq.outputs = pr->outputs;
        pr->rq.noutputs = no;
    }
    return 0;
}

/* ---- oip response -> JSON ------------------------------------------------------ */

static void put_num(qn_buf *b, double x, int fp32)
{
    if (!isfinite(x))
        qn_buf_puts(b, "null");
    else
        qn_buf_printf(b, fp32 ? "%.9g" : "%.17g", x);
}

static int write_response(qn_buf *b, const oip_infer_response *rs)
{
    qn_buf_puts(b, "{\"model_name\":");
    buf_json_str(b, rs->model, strlen(rs->model));
    qn_buf_puts(b, ",\"model_version\":");
    buf_json_str(b, rs->version, strlen(rs->version));
    if (rs->id) {
        qn_buf_puts(b, ",\"id\":");
        buf_json_str(b, rs->id, strlen(rs->id));
    }
    if (rs->parameters) {
        char *p = json_dumps(rs->parameters, JSON_COMPACT);
        if (p) {
            qn_buf_puts(b, ",\"parameters\":");
            qn_buf_puts(b, p);
            free(p);
        }
    }
    qn_buf_puts(b, ",\"outputs\":[");
    for (size_t i = 0; i < rs->noutputs; i++) {
        const oip_output *o = &rs->outputs[i];
        qn_buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
        buf_json_str(b, o->name, strlen(o->name));
        qn_buf_printf(b, ",\"datatype\":\"%s\",\"shape\":[", oip_datatype_name(o->datatype));
        int64_t n = 1;
        for (int d = 0; d < o->ndim; d++) {
            qn_buf_printf(b, "%s%lld", d ? "," : "", (long long)o->shape[d]);
            n *= o->shape[d];
        }
        qn_buf_puts(b, "],\"data\":[");
        for (int64_t k = 0; k < n; k++) {
            if (k)
                qn_buf_append(b, ",", 1);
            const uint8_t *p = o->data;
            switch (o->datatype) {
            case OIP_BYTES:
                buf_json_str(b, (const char *)o->bytes[k].p, o->bytes[k].len);
                break;
            case OIP_BOOL: qn_buf_puts(b, p[k] ? "true" : "false"); break;
            case OIP_FP32: {
                float f;
                memcpy(&f, p + k * 4, 4);
                put_num(b, f, 1);
                break;
            }
            case OIP_FP64: {
                double x;
                memcpy(&x, p + k * 8, 8);
                put_num(b, x, 0);
                break;
            }
            case OIP_INT32: {
                int32_t x;
                memcpy(&x, p + k * 4, 4);
                qn_buf_printf(b, "%d", x);
                break;
            }
            case OIP_INT64: {
                int64_t x;
                memcpy(&x, p + k * 8, 8);
                qn_buf_printf(b, "%lld", (long long)x);
                break;
            }
            default: qn_buf_puts(b, "null"); break;
            }
        }
        if (qn_buf_puts(b, "]}") < 0)
            return QN_RESOURCE_EXHAUSTED;
    }
    return qn_buf_puts(b, "]}");
}

/* ---- /v2 handlers --------------------------------------------------------------- */

static int h_live(qn_req *req, qn_res *res, void *ud)
{
    return qn_res_json(res, 200, json_pack("{s:b}", "live", 1));
}

static json_t *served_versions(serve *s)
{
    json_t *o = json_object();
    for (size_t i = 0; i < s->nmodels && o; i++) {
        serve_version *v = serve_acquire(&s->models[i]);
        json_object_set_new(o, s->models[i].name, v ? json_string(v->vstr) : json_null());
        serve_release(v);
    }
    return o;
}

static int h_ready(qn_req *req, qn_res *res, void *ud)
{
    int ok = serve_all_ready(S(ud));
    return qn_res_json(res, ok ? 200 : 503,
                       json_pack("{s:b, s:o}", "ready", ok, "models", served_versions(S(ud))));
}

static int h_server_meta(qn_req *req, qn_res *res, void *ud)
{
    const oip_backend *be = &S(ud)->backend;
    json_t *ext = json_array();
    for (size_t i = 0; i < be->nextensions; i++)
        json_array_append_new(ext, json_string(be->extensions[i]));
    return qn_res_json(res, 200, json_pack("{s:s, s:s, s:o}", "name", be->server_name, "version",
                                           be->server_version, "extensions", ext));
}

static json_t *tensor_meta_json(const oip_tensor_meta *t, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n && a; i++) {
        json_t *shape = json_array();
        for (int d = 0; d < t[i].ndim; d++)
            json_array_append_new(shape, json_integer(t[i].shape[d]));
        json_array_append_new(a, json_pack("{s:s, s:s, s:o}", "name", t[i].name, "datatype",
                                           oip_datatype_name(t[i].datatype), "shape", shape));
    }
    return a;
}

static int h_model_meta(qn_req *req, qn_res *res, void *ud)
{
    serve *s = ud;
    const char *model = qn_req_param(req, "m"), *version = qn_req_param(req, "v");
    serve_model *m = serve_model_find(s, model);
    if (!m)
        return qn_res_error(res, QN_NOT_FOUND, "model '%s' is not served here", model);
    oip_model_meta meta;
    void *hold = NULL;
    qn_err err;
    int rc = s->backend.model_metadata(s, model, version, &meta, &hold, &err);
    if (rc == QN_UNAVAILABLE) {
        /* Not loaded yet: still say what we know (state, refusals). */
        return qn_res_json(res, 200, json_pack("{s:s, s:[], s:n, s:[], s:[], s:o}", "name", model,
                                               "versions", "platform", "inputs", "outputs",
                                               "quern", serve_model_status(m)));
    }
    if (rc < 0)
        return qn_res_error(res, rc, "%s", err.msg);
    json_t *versions = json_array();
    for (size_t i = 0; i < meta.nversions; i++)
        json_array_append_new(versions, json_string(meta.versions[i]));
    json_t *out = json_pack("{s:s, s:o, s:s, s:o, s:o, s:o}", "name", meta.name, "versions",
                            versions, "platform", meta.platform, "inputs",
                            tensor_meta_json(meta.inputs, meta.ninputs), "outputs",
                            tensor_meta_json(meta.outputs, meta.noutputs), "quern",
                            serve_model_status(m));
    s->backend.release_meta(s, hold);
    return qn_res_json(res, 200, out);
}

static int h_model_ready(qn_req *req, qn_res *res, void *ud)
{
    serve *s = ud;
    const char *model = qn_req_param(req, "m");
    qn_err err;
    int rc = s->backend.model_ready(s, model, qn_req_param(req, "v"), &err);
    if (rc < 0)
        return qn_res_error(res, rc, "%s", err.msg);
    return qn_res_json(res, rc ? 200 : 503, json_pack("{s:s, s:b}", "name", model, "ready", rc));
}

static int h_infer(qn_req *req, qn_res *res, void *ud)
{
    serve *s = ud;
    double t0 = now_s();
    parsed pr;
    memset(&pr, 0, sizeof pr);
    oip_infer_response rs;
    memset(&rs, 0, sizeof rs);
    qn_err err;
    qn_err_clear(&err);
    char tp[QN_TRACEPARENT_LEN + 1];
    int rc = parse_infer(req, &pr, &err);
    if (rc == 0) {
        pr.rq.model = qn_req_param(req, "m");
        pr.rq.version = qn_req_param(req, "v");
        qn_traceparent_format(qn_req_trace(req), tp);
        pr.rq.traceparent = tp;
        rc = s->backend.infer(s, &pr.rq, &rs, &err);
    }
    if (rc != QN_NOT_FOUND && serve_model_find(s, qn_req_param(req, "m"))) {
        const char *lv[] = {qn_req_param(req, "m"), rs.version ? rs.version : "", "rest"};
        qn_counter_add(s->m_requests, lv, 1);
        qn_histogram_observe(s->m_latency, lv, now_s() - t0);
    }
    if (rc == 0) {
        qn_buf b;
        qn_buf_init(&b, SERVE_MAX_INFER_BODY * 4);
        if (write_response(&b, &rs) < 0) {
            rc = qn_res_error(res, QN_RESOURCE_EXHAUSTED, "the response is too large");
        } else {
            qn_res_text(res, 200, "application/json", b.data, b.len);
            qn_res_header(res, "X-Quern-Model-Version", rs.version);
        }
        qn_buf_free(&b);
    } else {
        if (rs.version)
            qn_res_header(res, "X-Quern-Model-Version", rs.version);
        qn_res_error(res, rc, "%s", err.msg);
    }
    oip_response_free(&rs);
    json_decref(pr.doc);
    return 0;
}

/* ---- /v1 recommendation routes -------------------------------------------------- */

static int recommend_common(qn_req *req, qn_res *res, serve *s, int similar)
{
    const char *model = qn_req_param(req, "m");
    const char *key = similar ? "item" : "user";
    const char *id = qn_req_query(req, key);
    const char *ks = qn_req_query(req, "k"), *ex = qn_req_query(req, "exclude_seen");
    serve_model *m = serve_model_find(s, model);
    qn_err err;
    int64_t k = 10;
    if (!m)
        return qn_res_error(res, QN_NOT_FOUND, "model '%s' is not served here", model);
    if (!id || !*id || strlen(id) > 256)
        return qn_res_error(res, QN_INVALID_ARGUMENT, "query parameter %s is required (1 to 256 "
                            "bytes)", key);
    if (ks && qn_uint_parse("k", ks, 1000, &k, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    if (ex && strcmp(ex, "true") && strcmp(ex, "false"))
        return qn_res_error(res, QN_INVALID_ARGUMENT, "exclude_seen must be true or false");
    if (similar && ex)
        return qn_res_error(res, QN_INVALID_ARGUMENT, "exclude_seen applies to recommend only");
    serve_version *v = serve_acquire(m);
    if (!v)
        return qn_res_error(res, QN_UNAVAILABLE, "model '%s' has no version loaded yet", model);
    int als = v->is_als;
    char kind[16];
    snprintf(kind, sizeof kind, "%s", qml_model_kind(v->model));
    serve_release(v);
    if (!als)
        return qn_res_error(res, QN_FAILED_PRECONDITION,
                            "model '%s' is a %s model; recommendations need an ALS model", model,
                            kind);

    oip_bytes el = {(const uint8_t *)id, strlen(id)};
    oip_tensor t = {.name = similar ? "item_id" : "user_id", .datatype = OIP_BYTES, .ndim = 1,
                    .shape = {1}, .bytes = &el, .nbytes = 1};
    json_t *params = json_pack("{s:I, s:b}", "k", (json_int_t)k, "exclude_seen",
                               ex && !strcmp(ex, "true"));
    oip_infer_request rq = {.model = model, .inputs = &t, .ninputs = 1, .parameters = params};
    oip_infer_response rs;
    double t0 = now_s();
    int rc = s->backend.infer(s, &rq, &rs, &err);
    json_decref(params);
    if (rc == 0) {
        const char *lv[] = {model, rs.version, "rest"};
        qn_counter_add(s->m_requests, lv, 1);
        qn_histogram_observe(s->m_latency, lv, now_s() - t0);
        const oip_output *ids = NULL, *scores = NULL, *fb = NULL;
        for (size_t i = 0; i < rs.noutputs; i++) {
            if (!strcmp(rs.outputs[i].name, "item_id"))
                ids = &rs.outputs[i];
            else if (!strcmp(rs.outputs[i].name, "score"))
                scores = &rs.outputs[i];
            else if (!strcmp(rs.outputs[i].name, "fallback"))
                fb = &rs.outputs[i];
        }
        json_t *items = json_array();
        for (size_t j = 0; ids && scores && j < ids->nbytes; j++) {
            if (!ids->bytes[j].len)
                break; /* padding */
            float sc;
            memcpy(&sc, (const uint8_t *)scores->data + j * 4, 4);
            json_array_append_new(items, json_pack("{s:s%, s:f}", "item",
                                                   (const char *)ids->bytes[j].p,
                                                   ids->bytes[j].len, "score", (double)sc));
        }
        json_t *out = json_pack("{s:s, s:s, s:s, s:o}", "model", model, "version", rs.version,
                                key, id, "items", items);
        if (!similar)
            json_object_set_new(out, "fallback",
                                json_boolean(fb && fb->data && ((uint8_t *)fb->data)[0]));
        qn_res_header(res, "X-Quern-Model-Version", rs.version);
        qn_res_json(res, 200, out);
    } else {
        /* Name the query parameter, not the internal tensor. */
        const char *msg = err.msg;
        const char *p = strstr(msg, "element 0: ");
        qn_res_error(res, rc, "%s %s: %s", key, id, p ? p + 11 : msg);
    }
    oip_response_free(&rs);
    return 0;
}

static int h_recommend(qn_req *req, qn_res *res, void *ud)
{
    return recommend_common(req, res, ud, 0);
}

static int h_similar(qn_req *req, qn_res *res, void *ud)
{
    return recommend_common(req, res, ud, 1);
}

static int h_models(qn_req *req, qn_res *res, void *ud)
{
    serve *s = ud;
    json_t *list = json_array();
    for (size_t i = 0; i < s->nmodels; i++) {
        json_t *st = serve_model_status(&s->models[i]);
        json_object_set_new(st, "name", json_string(s->models[i].name));
        json_array_append_new(list, st);
    }
    return qn_res_json(res, 200, json_pack("{s:o}", "models", list));
}

#define OIP QN_ROUTE_OIP
const qn_route serve_routes[] = {
    {"GET", "/v2/health/live", h_live, 0, OIP, NULL},
    {"GET", "/v2/health/ready", h_ready, 0, OIP, NULL},
    {"GET", "/v2", h_server_meta, 0, OIP, NULL},
    {"GET", "/v2/models/{m}", h_model_meta, 0, OIP, NULL},
    {"GET", "/v2/models/{m}/versions/{v}", h_model_meta, 0, OIP, NULL},
    {"GET", "/v2/models/{m}/ready", h_model_ready, 0, OIP, NULL},
    {"GET", "/v2/models/{m}/versions/{v}/ready", h_model_ready, 0, OIP, NULL},
    /* POST: with a token configured, inference needs it like every POST. */
    {"POST", "/v2/models/{m}/infer", h_infer, SERVE_MAX_INFER_BODY, OIP, NULL},
    {"POST", "/v2/models/{m}/versions/{v}/infer", h_infer, SERVE_MAX_INFER_BODY, OIP, NULL},
    {"GET", "/v1/models", h_models, 0, 0, NULL},
    {"GET", "/v1/models/{m}/recommend", h_recommend, 0, 0, NULL},
    {"GET", "/v1/models/{m}/similar", h_similar, 0, 0, NULL},
};
const size_t serve_nroutes = sizeof serve_routes / sizeof serve_routes[0];
