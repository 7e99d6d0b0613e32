/*
 * rest.c - quern-serve's REST front: the Open Inference Protocol (KServe V2)
 * over HTTP/JSON, plus the recommendation routes of DESIGN.md section 5.
 *
 * JSON tensors are translated into the protocol-neutral oip structs (data
 * converted to flat little-endian bytes of the declared datatype, checked
 * element by element against it; oip_json.c) and answered by the same
 * backend as gRPC.
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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/json.h"
#include "core/log.h"
#include "core/utf8.h"
#include "core/validate.h"
#include "serve/oip_json.h"
#include "serve/serve.h"

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

/* ---- oip response -> JSON ------------------------------------------------------ */

static void put_num(qn_buf *b, double x, int fp32)
{
    char t[40];
    if (!isfinite(x)) {
        qn_buf_append(b, "null", 4);
        return;
    }
    int n = snprintf(t, sizeof t, fp32 ? "%.9g" : "%.17g", x);
    qn_buf_append(b, t, n > 0 && (size_t)n < sizeof t ? (size_t)n : 0);
}

/* An integer in decimal, as "%lld" writes it (the hot path avoids printf). */
static void put_int(qn_buf *b, long long x)
{
    char t[24], *e = t + sizeof t, *p = e;
    unsigned long long u = x < 0 ? 0ull - (unsigned long long)x : (unsigned long long)x;
    do
        *--p = (char)('0' + u % 10);
    while (u /= 10);
    if (x < 0)
        *--p = '-';
    qn_buf_append(b, p, (size_t)(e - p));
}

/* A double as jansson writes a real: %.17g, ".0" when it would read as an
 * integer, no '+' or leading zeros in the exponent. */
static void put_real(qn_buf *b, double x)
{
    if (!isfinite(x)) {
        qn_buf_puts(b, "null");
        return;
    }
    char t[40], o[48];
    snprintf(t, sizeof t, "%.17g", x);
    size_t n = 0;
    for (const char *p = t; *p; p++) {
        o[n++] = *p;
        if (*p == 'e') {
            if (p[1] == '+')
                p++;
            else if (p[1] == '-')
                o[n++] = *++p;
            while (p[1] == '0' && p[2])
                p++;
        }
    }
    if (!strpbrk(t, ".e"))
        o[n++] = '.', o[n++] = '0';
    qn_buf_append(b, o, n);
}

static int write_response(qn_buf *b, const oip_infer_response *rs)
{
    qn_buf_reserve(b, 480); /* one allocation for the usual answer, not four */
    qn_buf_puts(b, "{\"model_name\":");
    buf_json_str(b, rs->model, strlen(rs->model));
    qn_buf_puts(b, ",\"model_version\":");
    buf_json_str(b, rs->version, strlen(rs->version));
    if (rs->id) {
        qn_buf_puts(b, ",\"id\":");
        buf_json_str(b, rs->id, strlen(rs->id));
    }
    if (rs->parameters) {
        char *p = qn_json_dumps(rs->parameters, JSON_COMPACT);
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
        qn_buf_puts(b, ",\"datatype\":\"");
        qn_buf_puts(b, oip_datatype_name(o->datatype));
        qn_buf_puts(b, "\",\"shape\":[");
        int64_t n = 1;
        for (int d = 0; d < o->ndim; d++) {
            if (d)
                qn_buf_append(b, ",", 1);
            put_int(b, o->shape[d]);
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
                put_int(b, x);
                break;
            }
            case OIP_INT64: {
                int64_t x;
                memcpy(&x, p + k * 8, 8);
                put_int(b, x);
                break;
            }
            default: qn_buf_puts(b, "null"); break;
            }
        }
        if (qn_buf_puts(b, "]}") < 0)
            break; /* full: no use writing the other outputs */
    }
    qn_buf_puts(b, "]}");
    return qn_buf_error(b); /* appends are sticky: any one failing shows here */
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

int serve_read_infer(qn_req *req, oip_json_req *pr, qn_err *err)
{
    size_t len;
    const char *body = qn_req_body(req, &len);
    size_t jlen = len;
    const char *hcl = qn_req_header(req, "Inference-Header-Content-Length");
    if (hcl) {
        char *end;
        unsigned long long x = strtoull(hcl, &end, 10);
        if (*end || end == hcl || x > len)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "Inference-Header-Content-Length %s does not fit the %zu-byte body",
                              hcl, len);
        jlen = (size_t)x;
    }
    return oip_json_parse_infer(body, len, jlen, qn_req_arena(req), pr, err);
}

static const char *req_header(void *hctx, const char *name)
{
    return qn_req_header(hctx, name);
}

static int h_infer(qn_req *req, qn_res *res, void *ud)
{
    serve *s = ud;
    double t0 = now_s();
    oip_json_req pr;
    memset(&pr, 0, sizeof pr);
    oip_infer_response rs;
    memset(&rs, 0, sizeof rs);
    qn_err err;
    qn_err_clear(&err);
    char tp[QN_TRACEPARENT_LEN + 1];
    int rc = serve_read_infer(req, &pr, &err);
    if (rc == 0) {
        pr.rq.model = qn_req_param(req, "m");
        pr.rq.version = qn_req_param(req, "v");
        qn_traceparent_format(qn_req_trace(req), tp);
        pr.rq.traceparent = tp;
        pr.rq.header = req_header;
        pr.rq.hctx = req;
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
        size_t blen;
        char *body;
        if (write_response(&b, &rs) < 0 || !(body = qn_buf_detach(&b, &blen))) {
            rc = qn_res_error(res, QN_RESOURCE_EXHAUSTED, "the response is too large");
        } else {
            qn_res_take(res, 200, "application/json", body, blen); /* no copy */
            qn_res_header(res, "X-Quern-Model-Version", rs.version);
            if (rs.alias)
                qn_res_header(res, "X-Quern-Model-Alias", rs.alias);
        }
        qn_buf_free(&b);
    } else {
        /* Failed after the version was chosen: which one (and its alias). */
        if (rs.version)
            qn_res_header(res, "X-Quern-Model-Version", rs.version);
        if (rs.version && rs.alias)
            qn_res_header(res, "X-Quern-Model-Alias", rs.alias);
        qn_res_error(res, rc, "%s", err.msg);
    }
    oip_response_free(&rs);
    oip_json_req_free(&pr);
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
        return qn_res_error(res, QN_INVALID_ARGUMENT,
                          "query parameter %s is required (1 to 256 bytes)", key);
    if (!qn_utf8_valid(id, strlen(id)))
        return qn_res_error(res, QN_INVALID_ARGUMENT, "query parameter %s is not valid UTF-8", key);
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
    if (!params) /* never answer with the default k instead of the one asked for */
        return qn_res_error(res, QN_RESOURCE_EXHAUSTED, "out of memory");
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
        /* Written by hand, as jansson would (same keys, order and numbers):
         * building and dumping a tree was a sixth of the request. */
        qn_buf b;
        qn_buf_init(&b, (size_t)64 << 20);
        qn_buf_puts(&b, "{\"model\":");
        buf_json_str(&b, model, strlen(model));
        qn_buf_puts(&b, ",\"version\":");
        buf_json_str(&b, rs.version, strlen(rs.version));
        qn_buf_printf(&b, ",\"%s\":", key);
        buf_json_str(&b, id, strlen(id));
        qn_buf_puts(&b, ",\"items\":[");
        for (size_t j = 0; ids && scores && j < ids->nbytes; j++) {
            if (!ids->bytes[j].len)
                break; /* padding */
            float sc;
            memcpy(&sc, (const uint8_t *)scores->data + j * 4, 4);
            qn_buf_puts(&b, j ? ",{\"item\":" : "{\"item\":");
            buf_json_str(&b, (const char *)ids->bytes[j].p, ids->bytes[j].len);
            qn_buf_puts(&b, ",\"score\":");
            put_real(&b, sc);
            qn_buf_puts(&b, "}");
        }
        qn_buf_puts(&b, "]");
        if (!similar)
            qn_buf_puts(&b, fb && fb->data && ((uint8_t *)fb->data)[0] ? ",\"fallback\":true"
                                                                      : ",\"fallback\":false");
        if (qn_buf_puts(&b, "}") < 0)
            qn_res_error(res, QN_RESOURCE_EXHAUSTED, "the response is too large");
        else
            qn_res_text(res, 200, "application/json", b.data, b.len);
        qn_buf_free(&b);
        qn_res_header(res, "X-Quern-Model-Version", rs.version);
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
        json_object_set_new(st, "traffic", serve_traffic_status(s, &s->models[i]));
        json_array_append_new(list, st);
    }
    return qn_res_json(res, 200, json_pack("{s:o}", "models", list));
}

#define OIP QN_ROUTE_OIP
const qn_route serve_routes[] = {
    /* Probes stay open under --auth-reads, like /healthz and /readyz. */
    {"GET", "/v2/health/live", h_live, 0, OIP | QN_ROUTE_PUBLIC, NULL},
    {"GET", "/v2/health/ready", h_ready, 0, OIP | QN_ROUTE_PUBLIC, NULL},
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
    /* explain.c; POST, so a configured token is needed as for infer. */
    {"POST", "/v1/models/{m}/explain", serve_h_explain, SERVE_MAX_INFER_BODY, 0, NULL},
    {"POST", "/v1/models/{m}/versions/{v}/explain", serve_h_explain, SERVE_MAX_INFER_BODY, 0,
     NULL},
};
const size_t serve_nroutes = sizeof serve_routes / sizeof serve_routes[0];
