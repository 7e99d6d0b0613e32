/*
 * http.c - the HTTP server of every service (see http.h), on libmicrohttpd.
 *
 * libmicrohttpd calls the access handler several times per request: once
 * when the headers are in, once per body chunk, and once more when the body
 * is complete. We use the first call only to set the request up (route,
 * auth, body limits) and answer on the last one, which is what keeps
 * keep-alive connections alive: answering early while a body is still on the
 * wire forces libmicrohttpd to close the connection, so we only do that to
 * refuse a body (401/404/405/413 with a body announced), where closing is the
 * point.
 *
 * The request object is created by the URI-log callback (the earliest hook,
 * which also hands us the raw, still-escaped path so that "%2F" inside a
 * parameter is not mistaken for a separator) and freed by the completion
 * callback, which also records metrics and the access log and decrements
 * the in-flight count that qn_http_drain waits on.
 */
#include "core/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/http_route.h"
#include "core/log.h"
#include "core/otel.h"

#define DEFAULT_JSON_DEPTH 32
#define CONNECTION_LIMIT 1024
#define CONNECTION_TIMEOUT_S 60
/* libmicrohttpd's per-connection pool (request line, headers, read and
 * write buffers). It zeroes the pool between keep-alive requests, so its size
 * is paid on every request: 64 KiB cost ~100k instructions of memset per
 * request (callgrind, bench/callgrind_serve.sh). 16 KiB still takes ~8 KiB of
 * headers; bodies stream through it in chunks whatever their size. */
#define CONNECTION_MEMORY 16384
/* After refusing a body mid-stream we read and drop the rest (so the
 * connection can be kept), but not forever. */
#define DISCARD_MAX (8ull << 20)
#define METRICS_MAX (64u << 20)
#define QN_NELEM_HTTP(a) (sizeof(a) / sizeof((a)[0]))

enum { RES_NONE, RES_BUF, RES_FILE, RES_EMPTY };
enum { PH_NEW, PH_BODY, PH_REFUSED, PH_DISCARD };

typedef struct hdr {
    const char *name, *value;
    struct hdr *next;
} hdr;

struct qn_res {
    qn_req *req;
    int kind, status;
    char *body;              /* malloc'd; handed to libmicrohttpd */
    size_t len;
    const char *ctype;       /* arena or static */
    int fd;
    uint64_t off, flen;
    hdr *hdrs;
};

struct qn_req {
    qn_http *h;
    struct MHD_Connection *conn;
    qn_arena *arena;
    const char *raw_path;     /* still escaped, query stripped */
    const char *method;
    const qn_route *route;    /* NULL when nothing matched */
    const char *route_label;  /* template, or "unmatched" */
    qn__param params[QN__MAX_PARAMS];
    size_t nparams;
    int phase;
    int started;              /* the access handler saw it */
    uint64_t received, discarded;
    qn_buf body;
    json_t *json;
    qn_span span;             /* SERVER span; span.ctx is the request's trace context */
    char trace_id[QN_TRACE_ID_HEX + 1];
    char request_id[QN_UUID_LEN + 29];
    void *state;
    void (*cleanup)(void *state);
    struct timespec t0;
    qn_res res;
};

struct qn_http {
    struct MHD_Daemon *d;
    qn_http_opts opts;
    char *service, *token;
    size_t token_len;
    qn_route *routes;         /* the service's routes then the built-in ones */
    size_t nroutes;
    int port;
    atomic_int draining;
    int quiesced;             /* the listening socket is closed */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long inflight;
    qn_metric *m_reqs, *m_dur, *m_inflight;
};

/* ---- small helpers ------------------------------------------------------- */

static double elapsed_s(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static const char *method_label(const char *m)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    for (size_t i = 0; i < QN_NELEM_HTTP(known); i++)
        if (strcmp(m, known[i]) == 0)
            return known[i];
    return "OTHER";
}

static int is_read(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
}

/* Constant time in the content of both strings: every byte of the expected
 * token is visited whatever the given one holds, and a length mismatch only
 * flips a bit of the accumulator. */
static int token_equal(const char *given, size_t glen, const char *want, size_t wlen)
{
    unsigned diff = (unsigned)(glen != wlen);
    for (size_t i = 0; i < wlen; i++) {
        unsigned char g = i < glen ? (unsigned char)given[i] : 0;
        diff |= (unsigned)(g ^ (unsigned char)want[i]);
    }
    return diff == 0;
}

/* ---- responses ------------------------------------------------------------- */

static void res_reset(qn_res *res)
{
    free(res->body);
    res->body = NULL;
    if (res->kind == RES_FILE && res->fd >= 0)
        close(res->fd);
    res->fd = -1;
    res->kind = RES_NONE;
}

/* Returns 1 when the response may be set (it was not set yet). */
static int res_claim(qn_res *res)
{
    if (res->kind == RES_NONE)
        return 1;
    qn_log_warn(res->req->trace_id, "handler answered twice; keeping the first response",
                "{s:s, s:i}", "route", res->req->route_label, "status", res->status);
    return 0;
}

static void res_set_buf(qn_res *res, int status, const char *ctype, char *body, size_t len)
{
    res->kind = RES_BUF;
    res->status = status;
    res->ctype = ctype;
    res->body = body;
    res->len = len;
}

int qn_res_text(qn_res *res, int status, const char *content_type, const char *body, size_t len)
{
    if (!res_claim(res))
        return 0;
    char *copy = malloc(len ? len : 1);
    if (!copy) {
        qn_log_error(res->req->trace_id, "out of memory copying a response", NULL);
        res_set_buf(res, 500, "application/json", NULL, 0);
        return 0;
    }
    memcpy(copy, body, len);
    res_set_buf(res, status, qn_arena_strdup(res->req->arena, content_type), copy, len);
    return 0;
}

static void res_internal(qn_res *res)
{
    static const char msg[] = "{\"error\":{\"code\":\"internal\",\"message\":\"internal error\"}}";
    static const char oip[] = "{\"error\":\"internal error\"}";
    int is_oip = res->req->route && (res->req->route->flags & QN_ROUTE_OIP);
    res_reset(res);
    char *b = strdup(is_oip ? oip : msg);
    res_set_buf(res, 500, "application/json", b, b ? strlen(b) : 0);
}

int qn_res_json(qn_res *res, int status, json_t *body)
{
    if (!res_claim(res)) {
        json_decref(body);
        return 0;
    }
    if (!body) {
        qn_log_error(res->req->trace_id, "handler built no JSON body (json_pack failed?)",
                     "{s:s}", "route", res->req->route_label);
        res_internal(res);
        return 0;
    }
    char *s = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(body);
    if (!s) {
        qn_log_error(res->req->trace_id, "cannot encode the JSON response", NULL);
        res_internal(res);
        return 0;
    }
    res_set_buf(res, status, "application/json", s, strlen(s));
    return 0;
}

__attribute__((format(printf, 5, 0)))
static int res_error_v(qn_res *res, int status, int code, json_t *details, const char *fmt,
                       va_list ap)
{
    char msg[QN_ERR_MSG_MAX];
    qn_req *req = res->req;

    if (!res_claim(res)) {
        json_decref(details);
        return 0;
    }
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (status == 0)
        status = qn_code_http_status(code);
    /* Server faults never reach the client: the details go to the log. */
    if (code == QN_INTERNAL || code == QN_UNKNOWN || code == QN_DATA_LOSS ||
        (status == 500 && code == QN_OK)) {
        qn_log_error(req->trace_id, "internal error", "{s:s, s:s, s:s}", "route",
                     req->route_label, "error", msg, "code", qn_code_name(code));
        json_decref(details);
        details = NULL;
        snprintf(msg, sizeof msg, "internal error");
    }
    json_t *body;
    if (req->route && (req->route->flags & QN_ROUTE_OIP)) {
        body = json_pack("{s:s}", "error", msg);
        json_decref(details);
    } else {
        json_t *e = json_pack("{s:s, s:s}", "code", qn_code_name(code), "message", msg);
        if (e && details)
            json_object_set_new(e, "details", details);
        else
            json_decref(details);
        body = e ? json_pack("{s:o}", "error", e) : NULL;
    }
    return qn_res_json(res, status, body);
}

/* An error with an explicit HTTP status (413, 405) and a canonical code. */
static int res_error_status(qn_res *res, int status, int code, json_t *details, const char *fmt,
                            ...) __attribute__((format(printf, 5, 6)));
static int res_error_status(qn_res *res, int status, int code, json_t *details, const char *fmt,
                            ...)
{
    va_list ap;
    va_start(ap, fmt);
    res_error_v(res, status, code, details, fmt, ap);
    va_end(ap);
    return 0;
}

int qn_res_error(qn_res *res, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    res_error_v(res, 0, code, NULL, fmt, ap);
    va_end(ap);
    return 0;
}

int qn_res_error_details(qn_res *res, int code, json_t *details, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    res_error_v(res, 0, code, details, fmt, ap);
    va_end(ap);
    return 0;
}

int qn_res_file(qn_res *res, int status, const char *content_type, int fd, uint64_t offset,
                uint64_t len)
{
    if (!res_claim(res)) {
        close(fd);
        return 0;
    }
    res->kind = RES_FILE;
    res->status = status;
    res->ctype = qn_arena_strdup(res->req->arena, content_type);
    res->fd = fd;
    res->off = offset;
    res->flen = len;
    return 0;
}

int qn_res_empty(qn_res *res, int status)
{
    if (!res_claim(res))
        return 0;
    res->kind = RES_EMPTY;
    res->status = status;
    res->ctype = NULL;
    return 0;
}

void qn_res_header(qn_res *res, const char *name, const char *value)
{
    qn_arena *a = res->req->arena;
    hdr *n = qn_arena_alloc(a, sizeof *n);
    if (!n)
        return;
    n->name = qn_arena_strdup(a, name);
    n->value = qn_arena_strdup(a, value);
    if (!n->name || !n->value)
        return;
    n->next = res->hdrs;
    res->hdrs = n;
}

int qn_res_done(const qn_res *res)
{
    return res->kind != RES_NONE;
}

/* Hands the response to libmicrohttpd. MHD_NO closes the connection. */
static enum MHD_Result res_send(qn_req *req)
{
    qn_res *res = &req->res;
    struct MHD_Response *r = NULL;

    if (res->kind == RES_NONE)
        res_internal(res);
    switch (res->kind) {
    case RES_BUF:
        if (!res->body) {
            r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        } else {
            r = MHD_create_response_from_buffer(res->len, res->body, MHD_RESPMEM_MUST_FREE);
            if (r)
                res->body = NULL;
        }
        break;
    case RES_FILE:
        r = MHD_create_response_from_fd_at_offset64(res->flen, res->fd, res->off);
        if (r)
            res->fd = -1;
        break;
    default:
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        break;
    }
    if (!r) {
        qn_log_error(req->trace_id, "cannot create the response", "{s:s}", "route",
                     req->route_label);
        return MHD_NO;
    }
    if (res->ctype)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, res->ctype);
    for (hdr *x = res->hdrs; x; x = x->next)
        MHD_add_response_header(r, x->name, x->value);
    MHD_add_response_header(r, "X-Request-Id", req->request_id);
    /* While draining, send clients elsewhere rather than keep them here. */
    if (atomic_load(&req->h->draining))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(req->conn, (unsigned)res->status, r);
    MHD_destroy_response(r);
    return ok;
}

/* ---- requests -------------------------------------------------------------- */

const char *qn_req_method(const qn_req *req) { return req->method; }
const char *qn_req_path(const qn_req *req) { return req->raw_path; }
const char *qn_req_route(const qn_req *req) { return req->route_label; }
qn_arena *qn_req_arena(qn_req *req) { return req->arena; }
const qn_trace_ctx *qn_req_trace(const qn_req *req) { return &req->span.ctx; }
const char *qn_req_trace_id(const qn_req *req) { return req->trace_id; }
void *qn_req_state(const qn_req *req) { return req->state; }

const char *qn_req_param(const qn_req *req, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < req->nparams; i++)
        if (req->params[i].name_len == n && memcmp(req->params[i].name, name, n) == 0)
            return req->params[i].value;
    return NULL;
}

const char *qn_req_query(const qn_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *qn_req_header(const qn_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *qn_req_body(const qn_req *req, size_t *len)
{
    if (len)
        *len = req->body.len;
    return req->body.len ? req->body.data : "";
}

void qn_req_set_state(qn_req *req, void *state, void (*cleanup)(void *state))
{
    req->state = state;
    req->cleanup = cleanup;
}

/* Depth of nested arrays/objects, counting stops once past limit. jansson
 * already caps nesting (2048) while parsing, so the recursion is bounded. */
static size_t json_depth(const json_t *v, size_t limit)
{
    size_t best = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            size_t d = json_depth(x, limit);
            if (d > best)
                best = d;
            if (best > limit)
                break;
        }
        return best + 1;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            size_t d = json_depth(x, limit);
            if (d > best)
                best = d;
            if (best > limit)
                break;
        }
        return best + 1;
    }
    return 0;
}

json_t *qn_req_json(qn_req *req, qn_res *res)
{
    json_error_t je;
    size_t limit = req->h->opts.max_json_depth ? req->h->opts.max_json_depth : DEFAULT_JSON_DEPTH;

    if (req->json)
        return req->json;
    if (req->body.len == 0) {
        qn_res_error(res, QN_INVALID_ARGUMENT, "request body is empty; expected a JSON object");
        return NULL;
    }
    json_t *v = json_loadb(req->body.data, req->body.len, JSON_REJECT_DUPLICATES, &je);
    if (!v) {
        qn_res_error_details(res, QN_INVALID_ARGUMENT,
                             json_pack("{s:i, s:i}", "line", je.line, "column", je.column),
                             "request body is not valid JSON at line %d, column %d: %s", je.line,
                             je.column, je.text);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        qn_res_error(res, QN_INVALID_ARGUMENT, "request body must be a JSON object");
        return NULL;
    }
    if (json_depth(v, limit) > limit) {
        json_decref(v);
        qn_res_error_details(res, QN_INVALID_ARGUMENT, json_pack("{s:I}", "max_depth", (json_int_t)limit),
                             "request body nests deeper than %zu levels", limit);
        return NULL;
    }
    req->json = v;
    return v;
}

/* ---- built-in routes ------------------------------------------------------- */

static int builtin_healthz(qn_req *req, qn_res *res, void *ud)
{
    return qn_res_json(res, 200, json_pack("{s:s}", "status", "ok"));
}

static int builtin_readyz(qn_req *req, qn_res *res, void *ud)
{
    qn_http *h = req->h;
    const char *reason = NULL;
    if (atomic_load(&h->draining))
        reason = "draining";
    else if (h->opts.ready && !h->opts.ready(h->opts.ud, &reason) && !reason)
        reason = "not ready";
    if (reason)
        return qn_res_json(res, 503, json_pack("{s:s, s:s}", "status", "not_ready", "reason", reason));
    return qn_res_json(res, 200, json_pack("{s:s}", "status", "ready"));
}

static int builtin_metrics(qn_req *req, qn_res *res, void *ud)
{
    qn_buf b;
    qn_buf_init(&b, METRICS_MAX);
    if (req->h->opts.metrics && qn_metrics_render(req->h->opts.metrics, &b) < 0) {
        qn_buf_free(&b);
        return qn_res_error(res, QN_INTERNAL, "metrics do not fit in %u bytes", METRICS_MAX);
    }
    size_t len;
    char *s = qn_buf_detach(&b, &len);
    if (!s)
        return qn_res_error(res, QN_RESOURCE_EXHAUSTED, "out of memory rendering the metrics");
    res_set_buf(res, 200, "text/plain; version=0.0.4; charset=utf-8", s, len);
    return 0;
}

static const qn_route builtins[] = {
    {"GET", "/healthz", builtin_healthz, 0, QN_ROUTE_PUBLIC, NULL},
    {"GET", "/readyz", builtin_readyz, 0, QN_ROUTE_PUBLIC, NULL},
    {"GET", "/metrics", builtin_metrics, 0, QN_ROUTE_PUBLIC, NULL},
};

/* ---- the request life cycle ------------------------------------------------ */

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    qn_http *h = cls;
    qn_req *req = calloc(1, sizeof *req);
    if (!req)
        return NULL;
    req->arena = qn_arena_new(0);
    if (!req->arena) {
        free(req);
        return NULL;
    }
    req->h = h;
    req->conn = conn;
    req->res.req = req;
    req->res.fd = -1;
    req->route_label = "unmatched";
    clock_gettime(CLOCK_MONOTONIC, &req->t0);
    req->raw_path = qn_arena_strndup(req->arena, uri, strcspn(uri, "?#"));
    if (!req->raw_path)
        req->raw_path = "";
    pthread_mutex_lock(&h->mu);
    h->inflight++;
    pthread_mutex_unlock(&h->mu);
    if (h->m_inflight)
        qn_gauge_add(h->m_inflight, NULL, 1);
    return req;
}

static void req_free(qn_req *req)
{
    if (req->cleanup)
        req->cleanup(req->state);
    json_decref(req->json);
    qn_buf_free(&req->body);
    res_reset(&req->res);
    qn_arena_free(req->arena);
    free(req);
}

static int is_builtin(const qn_route *r)
{
    return r && (r->handler == builtin_healthz || r->handler == builtin_readyz ||
                 r->handler == builtin_metrics);
}

/* Probes and scrapes would drown the traces that matter: they get none. */
static void end_span(qn_req *req, int status)
{
    qn_span *s = &req->span;
    if (!s->rec)
        return;
    if (is_builtin(req->route)) {
        qn_span_discard(s);
        return;
    }
    char name[160];
    snprintf(name, sizeof name, "%s %s", req->method, req->route_label);
    qn_span_set_name(s, name);
    qn_span_attr_str(s, "http.method", req->method);
    qn_span_attr_str(s, "http.route", req->route_label);
    qn_span_attr_int(s, "http.status_code", status);
    qn_span_attr_str(s, "http.request_id", req->request_id);
    if (status >= 500)
        qn_span_error(s, "server error");
    qn_span_end(s);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    qn_http *h = cls;
    qn_req *req = *con_cls;
    if (!req)
        return;
    *con_cls = NULL;
    if (req->started) {
        double dt = elapsed_s(&req->t0);
        char code[16];
        int status = req->res.kind != RES_NONE ? req->res.status : 499;
        snprintf(code, sizeof code, "%d", status);
        const char *m = method_label(req->method);
        const char *v3[] = {req->route_label, m, code};
        if (h->m_reqs)
            qn_counter_add(h->m_reqs, v3, 1);
        if (h->m_dur)
            qn_histogram_observe(h->m_dur, v3, dt); /* route, method: the first two */
        qn_log_debug(req->trace_id, "request",
                     "{s:s, s:s, s:s, s:i, s:f, s:I, s:s, s:b}", "method", req->method, "path",
                     req->raw_path, "route", req->route_label, "status", status, "duration_ms",
                     dt * 1e3, "bytes_in", (json_int_t)req->received, "request_id",
                     req->request_id, "completed", toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
        end_span(req, status);
    }
    req_free(req);
    if (h->m_inflight)
        qn_gauge_add(h->m_inflight, NULL, -1);
    pthread_mutex_lock(&h->mu);
    h->inflight--;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static void set_ids(qn_req *req)
{
    const char *tp = qn_req_header(req, "traceparent");
    qn_trace_ctx in;
    int have = tp && qn_traceparent_parse(tp, &in) == 0;
    /* Named once the route is known (at the end). */
    qn_span_start(&req->span, "HTTP", QN_SPAN_SERVER, have ? &in : NULL);
    qn_trace_id_hex(&req->span.ctx, req->trace_id);

    /* A caller's request id is echoed when it is short and plain. */
    const char *rid = qn_req_header(req, "X-Request-Id");
    size_t n = rid ? strlen(rid) : 0;
    if (n > 0 && n < sizeof req->request_id &&
        strspn(rid, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n)
        memcpy(req->request_id, rid, n + 1);
    else
        qn_uuid4(req->request_id);
}

/* Finds the route; 0 when found, else a response is set (404/405/400). */
static int route_request(qn_req *req)
{
    qn_http *h = req->h;
    size_t plen = strlen(req->raw_path);
    char *buf = qn_arena_alloc(req->arena, plen + 1);
    const char *segs[QN__MAX_SEGMENTS];
    size_t nsegs = 0;

    if (!buf)
        return qn_res_error(&req->res, QN_RESOURCE_EXHAUSTED, "out of memory"), -1;
    int rc = qn__path_split(req->raw_path, buf, plen + 1, segs, QN__MAX_SEGMENTS, &nsegs);
    if (rc == QN_OUT_OF_RANGE) {
        qn_res_error(&req->res, QN_NOT_FOUND, "no route for %s (too many path segments)",
                     req->method);
        return -1;
    }
    if (rc < 0) {
        qn_res_error(&req->res, QN_INVALID_ARGUMENT,
                     "the request path has a malformed percent escape");
        return -1;
    }

    const qn_route *exact = NULL, *head_get = NULL, *path_hit = NULL;
    qn__param ex_p[QN__MAX_PARAMS], hg_p[QN__MAX_PARAMS], tmp[QN__MAX_PARAMS];
    size_t ex_n = 0, hg_n = 0, tmp_n;
    char allow[128] = "";
    const char *allowed[12];
    size_t nallow = 0;
    int is_head = strcmp(req->method, "HEAD") == 0;

    for (size_t i = 0; i < h->nroutes; i++) {
        const qn_route *r = &h->routes[i];
        if (!qn__template_match(r->path, segs, nsegs, tmp, QN__MAX_PARAMS, &tmp_n))
            continue;
        if (!path_hit)
            path_hit = r;
        if (!exact && strcmp(r->method, req->method) == 0) {
            exact = r;
            memcpy(ex_p, tmp, tmp_n * sizeof *tmp);
            ex_n = tmp_n;
        } else if (!head_get && is_head && strcmp(r->method, "GET") == 0) {
            head_get = r;
            memcpy(hg_p, tmp, tmp_n * sizeof *tmp);
            hg_n = tmp_n;
        }
        /* Allow lists each method once; GET brings HEAD. */
        const char *ms[2] = {r->method, strcmp(r->method, "GET") == 0 ? "HEAD" : NULL};
        for (int k = 0; k < 2 && ms[k]; k++) {
            size_t j = 0;
            while (j < nallow && strcmp(allowed[j], ms[k]) != 0)
                j++;
            if (j == nallow && nallow < QN_NELEM_HTTP(allowed))
                allowed[nallow++] = ms[k];
        }
    }
    for (size_t j = 0; j < nallow; j++) {
        size_t used = strlen(allow);
        snprintf(allow + used, sizeof allow - used, "%s%s", j ? ", " : "", allowed[j]);
    }
    const qn_route *r = exact ? exact : head_get;
    if (r) {
        req->route = r;
        req->route_label = r->path;
        if (r == exact) {
            memcpy(req->params, ex_p, ex_n * sizeof *ex_p);
            req->nparams = ex_n;
        } else {
            memcpy(req->params, hg_p, hg_n * sizeof *hg_p);
            req->nparams = hg_n;
        }
        return 0;
    }
    if (path_hit) {
        req->route_label = path_hit->path;
        qn_res_header(&req->res, "Allow", allow);
        res_error_status(&req->res, 405, QN_UNIMPLEMENTED,
                         json_pack("{s:s}", "allow", allow),
                         "method %s is not allowed on %s; allowed: %s", req->method,
                         path_hit->path, allow);
        return -1;
    }
    qn_res_error(&req->res, QN_NOT_FOUND, "no route for %s %.200s", req->method, req->raw_path);
    return -1;
}

static int check_auth(qn_req *req)
{
    qn_http *h = req->h;
    if (!h->token || (req->route->flags & QN_ROUTE_PUBLIC))
        return 0;
    if (is_read(req->method) && !h->opts.auth_reads)
        return 0;
    const char *a = qn_req_header(req, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!a || strncasecmp(a, "Bearer ", 7) != 0) {
        qn_res_header(&req->res, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
        qn_res_error(&req->res, QN_UNAUTHENTICATED,
                     "this request needs an Authorization: Bearer <token> header");
        return -1;
    }
    const char *t = a + 7;
    while (*t == ' ')
        t++;
    if (!token_equal(t, strlen(t), h->token, h->token_len)) {
        qn_res_header(&req->res, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                      "Bearer error=\"invalid_token\"");
        qn_res_error(&req->res, QN_UNAUTHENTICATED, "the bearer token is not valid");
        return -1;
    }
    return 0;
}

static void body_too_large(qn_req *req, uint64_t size, int known)
{
    uint64_t max = req->route->max_body;
    json_t *d = json_pack("{s:I}", "limit", (json_int_t)max);
    if (known) {
        if (d)
            json_object_set_new(d, "size", json_integer((json_int_t)size));
        res_error_status(&req->res, 413, QN_RESOURCE_EXHAUSTED, d,
                         "request body is %llu bytes; this route accepts at most %llu",
                         (unsigned long long)size, (unsigned long long)max);
    } else if (max == 0) {
        res_error_status(&req->res, 413, QN_RESOURCE_EXHAUSTED, d,
                         "this route takes no request body");
    } else {
        res_error_status(&req->res, 413, QN_RESOURCE_EXHAUSTED, d,
                         "request body is more than %llu bytes; this route accepts at most %llu",
                         (unsigned long long)max, (unsigned long long)max);
    }
}

/* First call: everything that can be decided from the headers alone. */
static enum MHD_Result begin(qn_req *req, const char *method)
{
    req->started = 1;
    req->method = qn_arena_strdup(req->arena, method);
    if (!req->method)
        return MHD_NO;
    set_ids(req);

    const char *cl = qn_req_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = qn_req_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    int chunked = te && strcasestr(te, "chunked") != NULL;
    uint64_t clen = cl ? strtoull(cl, NULL, 10) : 0;
    int has_body = chunked || clen > 0;

    int refused = route_request(req) < 0 || check_auth(req) < 0;
    if (!refused && has_body && !chunked && clen > req->route->max_body) {
        body_too_large(req, clen, 1);
        refused = 1;
    } else if (!refused && chunked && req->route->max_body == 0) {
        body_too_large(req, 0, 0);
        refused = 1;
    }
    if (refused) {
        req->phase = PH_REFUSED;
        /* No body on the wire: answer on the next call and keep the
         * connection. A body announced: answer now, which makes
         * libmicrohttpd skip it and close the connection. */
        return has_body ? res_send(req) : MHD_YES;
    }
    if (has_body && !(req->route->flags & QN_ROUTE_STREAM))
        qn_buf_init(&req->body, (size_t)req->route->max_body);
    req->phase = PH_BODY;
    return MHD_YES;
}

/* A body refused mid-stream: libmicrohttpd 0.9.75 will not take a response
 * while the body is being received (MHD_queue_response returns MHD_NO
 * there; checked), so the rest is read and dropped, up to DISCARD_MAX past
 * which the connection is closed, and the answer goes out on the last call,
 * which also keeps the connection. */
static void refuse_midway(qn_req *req)
{
    req->phase = PH_DISCARD;
}

static enum MHD_Result receive(qn_req *req, const char *data, size_t n)
{
    qn_http *h = req->h;
    if (req->phase == PH_DISCARD || req->phase == PH_REFUSED) {
        req->discarded += n;
        return req->discarded > DISCARD_MAX ? MHD_NO : MHD_YES;
    }
    const qn_route *r = req->route;
    if (req->received + n > r->max_body) {
        body_too_large(req, req->received + n, 0);
        req->received += n;
        refuse_midway(req);
        return MHD_YES;
    }
    req->received += n;
    if (r->flags & QN_ROUTE_STREAM) {
        int rc = r->stream ? r->stream(req, &req->res, data, n, h->opts.ud) : 0;
        if (rc != 0 || qn_res_done(&req->res)) {
            if (!qn_res_done(&req->res)) {
                qn_log_error(req->trace_id, "stream callback failed without a response",
                             "{s:s}", "route", r->path);
                res_internal(&req->res);
            }
            refuse_midway(req);
        }
        return MHD_YES;
    }
    if (qn_buf_append(&req->body, data, n) < 0) {
        qn_log_error(req->trace_id, "out of memory buffering a request body", "{s:s}", "route",
                     r->path);
        qn_res_error(&req->res, QN_RESOURCE_EXHAUSTED, "the server is out of memory");
        refuse_midway(req);
    }
    return MHD_YES;
}

static enum MHD_Result run_handler(qn_req *req)
{
    const qn_route *r = req->route;
    int rc = r->handler ? r->handler(req, &req->res, req->h->opts.ud) : -1;
    if (!qn_res_done(&req->res)) {
        qn_log_error(req->trace_id, "handler returned without a response", "{s:s, s:i}",
                     "route", r->path, "rc", rc);
        res_internal(&req->res);
    }
    return res_send(req);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    qn_req *req = *con_cls;
    if (!req)
        return MHD_NO; /* out of memory when the request line arrived */
    req->conn = conn;
    if (!req->started)
        return begin(req, method);
    if (*upload_size > 0) {
        size_t n = *upload_size;
        *upload_size = 0;
        return receive(req, upload_data, n);
    }
    if (req->phase != PH_BODY)
        return res_send(req);
    return run_handler(req);
}

/* ---- the server ------------------------------------------------------------ */

__attribute__((format(printf, 2, 0)))
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    qn_log_warn(NULL, "libmicrohttpd", "{s:s}", "detail", line);
}

/* "HOST:PORT", "[V6]:PORT", ":PORT" -> a socket address. */
static int parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *sslen,
                        qn_err *err)
{
    char host[256];
    const char *colon, *hs = listen;
    size_t hl;

    if (!listen || !*listen)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "listen address is empty; want HOST:PORT");
    if (listen[0] == '[') {
        const char *rb = strchr(listen, ']');
        if (!rb || rb[1] != ':')
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "listen address %s: want [IPV6]:PORT", listen);
        hs = listen + 1;
        hl = (size_t)(rb - hs);
        colon = rb + 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "listen address %s has no port; want HOST:PORT", listen);
        hl = (size_t)(colon - listen);
    }
    const char *port = colon + 1;
    char *end;
    errno = 0;
    long p = strtol(port, &end, 10);
    if (!*port || *end || errno || p < 0 || p > 65535)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "listen address %s: port must be a number 0..65535", listen);
    if (hl >= sizeof host)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "listen address %s: host too long", listen);
    memcpy(host, hs, hl);
    host[hl] = '\0';

    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int g = getaddrinfo(hl ? host : NULL, port, &hints, &ai);
    if (g != 0 || !ai)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "listen address %s: %s", listen,
                          gai_strerror(g));
    struct addrinfo *pick = ai;
    for (struct addrinfo *x = ai; x; x = x->ai_next)
        if (x->ai_family == AF_INET) {
            pick = x;
            break;
        }
    memcpy(ss, pick->ai_addr, pick->ai_addrlen);
    *sslen = pick->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

qn_http *qn_http_start(const qn_http_opts *opts, qn_err *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    qn_http *h = NULL;

    for (size_t i = 0; i < opts->nroutes; i++) {
        const qn_route *r = &opts->routes[i];
        if (!r->method || !qn__template_valid(r->path) ||
            ((r->flags & QN_ROUTE_STREAM) && !r->stream)) {
            qn_err_set(err, QN_INVALID_ARGUMENT, "route %zu (%s %s) is malformed", i,
                       r->method ? r->method : "?", r->path ? r->path : "?");
            return NULL;
        }
    }
    if (parse_listen(opts->listen, &ss, &sslen, err) < 0)
        return NULL;

    h = calloc(1, sizeof *h);
    if (!h)
        goto oom;
    h->opts = *opts;
    h->service = strdup(opts->service ? opts->service : "quern");
    if (!h->service)
        goto oom;
    if (opts->token && *opts->token) {
        h->token = strdup(opts->token);
        if (!h->token)
            goto oom;
        h->token_len = strlen(h->token);
    }
    h->nroutes = opts->nroutes + QN_NELEM_HTTP(builtins);
    h->routes = calloc(h->nroutes, sizeof *h->routes);
    if (!h->routes)
        goto oom;
    if (opts->nroutes)
        memcpy(h->routes, opts->routes, opts->nroutes * sizeof *h->routes);
    memcpy(h->routes + opts->nroutes, builtins, sizeof builtins);
    pthread_mutex_init(&h->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cv, &ca);
    pthread_condattr_destroy(&ca);

    if (opts->metrics) {
        static const char *const l3[] = {"route", "method", "code", NULL};
        static const char *const l2[] = {"route", "method", NULL};
        h->m_reqs = qn_metrics_counter(opts->metrics, "quern_http_requests_total",
                                       "HTTP requests answered, by route template, method and status.", l3);
        h->m_dur = qn_metrics_histogram(opts->metrics, "quern_http_request_duration_seconds",
                                        "Time from request line to response completion.", l2,
                                        NULL, 0);
        h->m_inflight = qn_metrics_gauge(opts->metrics, "quern_http_requests_in_flight",
                                         "HTTP requests being processed.", NULL);
    }

    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    unsigned threads = opts->threads ? opts->threads : 4;
    /* The logger first, so that MHD's own complaints about the options that
     * follow also come out as our JSON lines. */
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_THREAD_POOL_SIZE, threads,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONNECTION_LIMIT,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY,
                            MHD_OPTION_URI_LOG_CALLBACK, on_uri, h,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                            MHD_OPTION_END);
    (void)sslen;
    if (!h->d) {
        qn_err_set(err, QN_UNAVAILABLE, "cannot listen on %s (address busy or not local?)",
                   opts->listen);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : 0;
    return h;
oom:
    qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory starting the HTTP server");
fail:
    if (h) {
        if (h->routes) {
            pthread_mutex_destroy(&h->mu);
            pthread_cond_destroy(&h->cv);
        }
        free(h->routes);
        free(h->token);
        free(h->service);
        free(h);
    }
    return NULL;
}

int qn_http_port(const qn_http *h)
{
    return h->port;
}

void qn_http_set_draining(qn_http *h)
{
    atomic_store(&h->draining, 1);
}

int qn_http_drain(qn_http *h, long long timeout_ms)
{
    struct timespec dl;

    qn_http_set_draining(h);
    pthread_mutex_lock(&h->mu);
    /* Close the listening socket at once: new clients get "connection
     * refused" and go to another replica instead of waiting in the backlog. */
    if (!h->quiesced) {
        MHD_socket fd = MHD_quiesce_daemon(h->d);
        if (fd != MHD_INVALID_SOCKET)
            close(fd);
        h->quiesced = 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &dl);
    if (timeout_ms < 0)
        timeout_ms = 0;
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    while (h->inflight > 0)
        if (pthread_cond_timedwait(&h->cv, &h->mu, &dl) == ETIMEDOUT)
            break;
    long left = h->inflight;
    pthread_mutex_unlock(&h->mu);
    return left == 0 ? 0 : QN_DEADLINE_EXCEEDED;
}

void qn_http_stop(qn_http *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->d);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h->routes);
    free(h->token);
    free(h->service);
    free(h);
}
