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
 *
 * The first call also checks, before any handler could see the request,
 * what libmicrohttpd 0.9.75 lets through: the body's framing (check_framing)
 * and the UTF-8 of path and query parameters (check_utf8); and while
 * draining it answers 503 instead of running the handler, so that nothing
 * reaches the service's state once the service has begun to stop.
 * Connection limits and the request-head deadline live in http_conn.c.
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
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/http_conn.h"
#include "core/http_route.h"
#include "core/json.h"
#include "core/log.h"
#include "core/otel.h"
#include "core/utf8.h"

#define DEFAULT_JSON_DEPTH 32
#define DEFAULT_MAX_CONNECTIONS 1024
#define DEFAULT_IDLE_TIMEOUT_MS 60000
#define DEFAULT_HEADER_TIMEOUT_MS 10000
/* File descriptors kept for everything but connections (store, bus, logs). */
#define FD_RESERVE 128
/* libmicrohttpd's per-connection pool (request line, headers, read and
 * write buffers). It zeroes the pool between keep-alive requests, so its size
 * is paid on every request: 64 KiB cost ~100k instructions of memset per
 * request (callgrind, bench/callgrind_serve.sh). 16 KiB still takes ~8 KiB of
 * headers; bodies stream through it in chunks whatever their size. */
#define CONNECTION_MEMORY 16384
/* After refusing a body mid-stream we read and drop the rest (so the
 * connection can be kept), but not forever: past this the answer is written
 * straight to the socket and the connection closed (send_direct). */
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
    int close;               /* send Connection: close (the framing cannot be trusted) */
};

struct qn_req {
    qn_http *h;
    struct MHD_Connection *conn;
    qn__conn *cx;             /* the connection's tracker entry (may be NULL) */
    qn_arena *arena;
    const char *raw_path;     /* still escaped, query stripped */
    const char *raw_query;    /* after '?', still escaped; "" when none */
    const char *method;
    const qn_route *route;    /* NULL when nothing matched */
    const char *route_label;  /* template, or "unmatched" */
    qn__param params[QN__MAX_PARAMS];
    size_t nparams;
    int phase;
    int started;              /* the access handler saw it */
    qn_req *hnext, *hprev;    /* in its thread's heads list ("a malformed Content-Length") */
    qn_req **hlist;           /* that list; NULL when not in it */
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
    qn__conns *conns;         /* limits and the request-head deadline */
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

int qn_res_take(qn_res *res, int status, const char *content_type, char *body, size_t len)
{
    if (!res_claim(res)) {
        free(body);
        return 0;
    }
    res_set_buf(res, status, qn_arena_strdup(res->req->arena, content_type), body, len);
    return 0;
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
    char *s = qn_json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
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
    /* Valid UTF-8 whatever the arguments hold, or jansson would refuse the
     * message and the client's bad byte would become a 500. */
    qn_err_format_v(msg, sizeof msg, fmt, ap);
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
        if (!res->body && res->status >= 500) {
            /* the error's body could not be allocated: a static one */
            static const char msg[] = "{\"error\":{\"code\":\"internal\",\"message\":\"internal error\"}}";
            static const char oip[] = "{\"error\":\"internal error\"}";
            int is_oip = req->route && (req->route->flags & QN_ROUTE_OIP);
            r = MHD_create_response_from_buffer(is_oip ? sizeof oip - 1 : sizeof msg - 1,
                                                (void *)(is_oip ? oip : msg),
                                                MHD_RESPMEM_PERSISTENT);
        } else if (!res->body) {
            r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        } else {
            /* free by our own reference (not MHD's), so an allocator wrapped under
             * the code (tests/alloc) sees the body go */
            r = MHD_create_response_from_buffer_with_free_callback(res->len, res->body, free);
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
    if (atomic_load(&req->h->draining) || res->close)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(req->conn, (unsigned)res->status, r);
    MHD_destroy_response(r);
    return ok;
}

/* ---- requests -------------------------------------------------------------- */

const char *qn_req_method(const qn_req *req) { return req->method; }
const char *qn_req_path(const qn_req *req) { return req->raw_path; }
const char *qn_req_query_string(const qn_req *req) { return req->raw_query; }
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
        qn_res_error_details(res, qn_json_load_code(&je),
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

/* Each worker thread keeps the arena of its last request (reset: its first
 * block, the rest freed) for the next one: making and freeing an arena was
 * two mallocs and two frees of every request. Freed when the thread ends. */
static pthread_key_t spare_key;
static int spare_ok;
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;

static void spare_free(void *a)
{
    qn_arena_free(a);
}

static void spare_init(void)
{
    spare_ok = pthread_key_create(&spare_key, spare_free) == 0;
}

static qn_arena *arena_take(void)
{
    pthread_once(&spare_once, spare_init);
    qn_arena *a = spare_ok ? pthread_getspecific(spare_key) : NULL;
    if (a) {
        pthread_setspecific(spare_key, NULL);
        return a;
    }
    return qn_arena_new(0);
}

static void arena_give(qn_arena *a)
{
    if (a && spare_ok && !pthread_getspecific(spare_key)) {
        qn_arena_reset(a);
        if (pthread_setspecific(spare_key, a) == 0)
            return;
    }
    qn_arena_free(a);
}

/* ---- a malformed Content-Length --------------------------------------------
 * libmicrohttpd 0.9.75 reads Content-Length itself when a request head is in
 * (parse_connection_headers in connection.c, state HEADERS_RECEIVED) and
 * answers a value that is not all digits ("12abc", "-1", "8 ") with its own
 * HTML 400, one past 2^64 with an HTML 413 (transmit_error_response), before
 * the access handler is ever called; no option of 0.9.75 replaces that page
 * (MHD_OPTION_CLIENT_DISCIPLINE_LVL came later and only changes what is
 * accepted). What it does call in between, synchronously and on the worker
 * thread that owns the connection, is the error logger ("Failed to parse
 * `Content-Length' header", "Too large value of 'Content-Length' header").
 * So each worker thread keeps the requests whose request line is in
 * (on_uri) and whose access handler has not run (begin): when the logger
 * reports a bad Content-Length and exactly one of them carries a
 * Content-Length that is not a number this server takes, that is the one,
 * and it gets our answer: written to its socket at once (send_direct), then
 * the socket's sending side shut down, so that libmicrohttpd's page, sent
 * after, goes nowhere (its send fails and it closes the connection). Two
 * such heads half-read on one thread at once cannot be told apart; then
 * libmicrohttpd's page stands. A wrong pick would still be safe: a head
 * with a bad Content-Length gets a 400 whatever happens. A connection's
 * callbacks all run on the worker thread that accepted it (its thread
 * closes it too), so the list needs no lock. */
static _Thread_local qn_req *heads;

static void heads_add(qn_req *req)
{
    req->hprev = NULL;
    req->hnext = heads;
    if (heads)
        heads->hprev = req;
    heads = req;
    req->hlist = &heads;
}

static void heads_del(qn_req *req)
{
    if (!req->hlist)
        return;
    if (req->hprev)
        req->hprev->hnext = req->hnext;
    else
        *req->hlist = req->hnext;
    if (req->hnext)
        req->hnext->hprev = req->hprev;
    req->hnext = req->hprev = NULL;
    req->hlist = NULL;
}

/* 0: v is a length this server takes (decimal digits, at most 2^64 - 1);
 * 400 or 413 (digits only, but too large): what libmicrohttpd refuses. */
static int length_fault(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || strspn(v, "0123456789") != n)
        return 400;
    errno = 0;
    (void)strtoull(v, NULL, 10);
    return errno == ERANGE ? 413 : 0;
}

/* The one request head of this thread with a bad Content-Length, or NULL. */
static qn_req *bad_length_head(const char **value, int *status)
{
    qn_req *found = NULL;
    for (qn_req *r = heads; r; r = r->hnext) {
        const char *v = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_CONTENT_LENGTH);
        int st = v ? length_fault(v) : 0;
        if (!st)
            continue;
        if (found)
            return NULL; /* two: which one libmicrohttpd is refusing is unknown */
        found = r;
        *value = v;
        *status = st;
    }
    return found;
}

/* The route of req's path whatever the method (the method is not known yet):
 * only to give the answer its route's shape (the OIP routes' {"error":"..."}). */
static void route_by_path(qn_req *req)
{
    qn_http *h = req->h;
    size_t plen = strlen(req->raw_path);
    char *buf = qn_arena_alloc(req->arena, plen + 1);
    const char *segs[QN__MAX_SEGMENTS];
    size_t nsegs = 0, np;
    qn__param ps[QN__MAX_PARAMS];
    if (!buf || qn__path_split(req->raw_path, buf, plen + 1, segs, QN__MAX_SEGMENTS, &nsegs) < 0)
        return;
    for (size_t i = 0; i < h->nroutes; i++) {
        if (qn__template_match(h->routes[i].path, segs, nsegs, ps, QN__MAX_PARAMS, &np)) {
            req->route = &h->routes[i];
            req->route_label = h->routes[i].path;
            return;
        }
    }
}

static void send_direct(qn_req *req);
static void set_ids(qn_req *req);

/* From the logger: libmicrohttpd is refusing a request's Content-Length. */
static void answer_bad_length(void)
{
    const char *v = NULL;
    int status = 0;
    qn_req *req = bad_length_head(&v, &status);
    if (!req)
        return;
    heads_del(req);
    set_ids(req);
    route_by_path(req);
    char shown[64];
    qn_utf8_escape(shown, sizeof shown, v, strlen(v));
    if (status == 413)
        res_error_status(&req->res, 413, QN_RESOURCE_EXHAUSTED, NULL,
                         "Content-Length %s is larger than any request body this server takes",
                         shown);
    else
        res_error_status(&req->res, 400, QN_INVALID_ARGUMENT, NULL,
                         "Content-Length '%s' is not a length; send the body's size in bytes "
                         "as decimal digits only",
                         shown);
    send_direct(req);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci)
        shutdown(ci->connect_fd, SHUT_WR); /* libmicrohttpd's own page goes nowhere */
    qn_span_discard(&req->span); /* no method, never started: not a request the metrics know */
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    qn_http *h = cls;
    qn_req *req = calloc(1, sizeof *req);
    if (!req)
        return NULL;
    req->arena = arena_take();
    if (!req->arena) {
        free(req);
        return NULL;
    }
    req->h = h;
    req->conn = conn;
    req->cx = qn__conn_of(conn);
    req->res.req = req;
    req->res.fd = -1;
    req->route_label = "unmatched";
    clock_gettime(CLOCK_MONOTONIC, &req->t0);
    req->raw_path = qn_arena_strndup(req->arena, uri, strcspn(uri, "?#"));
    if (!req->raw_path)
        req->raw_path = "";
    const char *q = strchr(uri, '?');
    req->raw_query = q ? qn_arena_strndup(req->arena, q + 1, strcspn(q + 1, "#")) : NULL;
    if (!req->raw_query)
        req->raw_query = "";
    pthread_mutex_lock(&h->mu);
    h->inflight++;
    pthread_mutex_unlock(&h->mu);
    if (h->m_inflight)
        qn_gauge_add(h->m_inflight, NULL, 1);
    heads_add(req);
    return req;
}

static void req_free(qn_req *req)
{
    if (req->cleanup)
        req->cleanup(req->state);
    json_decref(req->json);
    qn_buf_free(&req->body);
    res_reset(&req->res);
    arena_give(req->arena);
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
    heads_del(req);
    if (req->started) {
        double dt = elapsed_s(&req->t0);
        char code[16];
        int status = req->res.kind != RES_NONE ? req->res.status : 499;
        if (status >= 100 && status <= 999) /* every real status: no printf per request */
            code[0] = (char)('0' + status / 100), code[1] = (char)('0' + status / 10 % 10),
            code[2] = (char)('0' + status % 10), code[3] = '\0';
        else
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
    /* The connection now waits for its next request head (if it stays). */
    qn__conn_idle(req->cx);
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

    /* The usual case first: the first route of this method whose template
     * matches is the one the full pass below would pick; only the routes of
     * the request's method are matched against the path. */
    size_t n_fast;
    for (size_t i = 0; i < h->nroutes; i++) {
        const qn_route *r = &h->routes[i];
        if (strcmp(r->method, req->method) != 0 ||
            !qn__template_match(r->path, segs, nsegs, req->params, QN__MAX_PARAMS, &n_fast))
            continue;
        req->route = r;
        req->route_label = r->path;
        req->nparams = n_fast;
        return 0;
    }

    /* None: HEAD served by GET, or a 405 or 404 with the Allow list. */
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

/* The headers that frame the body, counted: libmicrohttpd 0.9.75 takes the
 * first Content-Length of several and reads a body of unknown length until
 * the connection closes when Transfer-Encoding is anything but "chunked". */
typedef struct framing {
    int ncl, nte;
    const char *cl, *te;
} framing;

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    framing *f = cls;
    (void)kind;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (f->ncl++ == 0)
            f->cl = value;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        if (f->nte++ == 0)
            f->te = value;
    }
    return MHD_YES;
}

static int te_is_chunked(const char *te)
{
    size_t b = strspn(te, " \t"), e = strlen(te);
    while (e > b && (te[e - 1] == ' ' || te[e - 1] == '\t'))
        e--;
    return e - b == 7 && strncasecmp(te + b, "chunked", 7) == 0;
}

/* Forgets a response set earlier (e.g. the 404 of a request that arrives
 * while draining gets the 503 instead). */
static void res_clear(qn_res *res)
{
    res_reset(res);
    res->hdrs = NULL; /* arena memory: freed with the request */
    res->status = 0;
}

/* Request smuggling and hung connections start here (issue 10, item 4):
 * more than one Content-Length (even identical ones, as nginx does), both
 * Content-Length and Transfer-Encoding (RFC 9112 6.1), or a transfer coding
 * other than chunked. The answer closes the connection: once the framing is
 * in doubt, so is where the next request starts. 0, or -1 with a response. */
static int check_framing(qn_req *req, const framing *f)
{
    qn_res *res = &req->res;
    if (f->ncl <= 1 && f->nte <= 1 && !(f->ncl && f->nte) && !(f->nte == 1 && !te_is_chunked(f->te)))
        return 0;
    res_clear(res); /* the route lookup's 404 or 405 gives way to this */
    if (f->ncl > 1)
        qn_res_error(res, QN_INVALID_ARGUMENT,
                     "the request has %d Content-Length headers; send exactly one", f->ncl);
    else if (f->ncl > 0 && f->nte > 0)
        qn_res_error(res, QN_INVALID_ARGUMENT,
                     "the request has both Content-Length and Transfer-Encoding; send one of them");
    else if (f->nte > 1)
        qn_res_error(res, QN_UNIMPLEMENTED,
                     "the request has %d Transfer-Encoding headers; only a single "
                     "Transfer-Encoding: chunked is supported", f->nte);
    else
        qn_res_error(res, QN_UNIMPLEMENTED,
                     "Transfer-Encoding %.100s is not supported; send the body with a "
                     "Content-Length or as Transfer-Encoding: chunked", f->te);
    res->close = 1;
    return -1;
}

typedef struct bad_arg {
    const char *name;
    const char *why;
} bad_arg;

static enum MHD_Result find_bad_query(void *cls, enum MHD_ValueKind kind, const char *key,
                                      size_t key_size, const char *value, size_t value_size)
{
    bad_arg *b = cls;
    (void)kind;
    /* The sizes are of the decoded text: a %00 shows as a NUL before the end. */
    if (memchr(key, 0, key_size) || (value && memchr(value, 0, value_size)))
        b->why = "holds a NUL byte (%00)";
    else if (!qn_utf8_valid(key, key_size) || (value && !qn_utf8_valid(value, value_size)))
        b->why = "is not valid UTF-8";
    else
        return MHD_YES;
    b->name = key;
    return MHD_NO;
}

/* Path parameters and query parameters are text: invalid UTF-8 (or, in a
 * query, a NUL byte, which would silently cut the value short) in one is
 * the client's fault, answered here before any handler could put it in a
 * JSON document (which jansson would refuse). 0, or -1 with a 400. */
static int check_utf8(qn_req *req)
{
    char name[96];
    const char *where = NULL;

    for (size_t i = 0; i < req->nparams; i++) {
        const char *v = req->params[i].value;
        if (!qn_utf8_valid(v, strlen(v))) {
            size_t n = req->params[i].name_len < sizeof name - 1 ? req->params[i].name_len
                                                                : sizeof name - 1;
            memcpy(name, req->params[i].name, n);
            name[n] = '\0';
            where = "path";
            break;
        }
    }
    const char *why = "is not valid UTF-8";
    if (!where) {
        bad_arg b = {NULL, NULL};
        MHD_get_connection_values_n(req->conn, MHD_GET_ARGUMENT_KIND, find_bad_query, &b);
        if (!b.name)
            return 0;
        qn_utf8_escape(name, sizeof name, b.name, strlen(b.name));
        where = "query";
        why = b.why;
    }
    res_error_status(&req->res, 400, QN_INVALID_ARGUMENT,
                     json_pack("{s:s, s:s}", "parameter", name, "in", where),
                     "%s parameter '%s' %s", where, name, why);
    return -1;
}

/* First call: everything that can be decided from the headers alone. */
static enum MHD_Result begin(qn_req *req, const char *method)
{
    req->started = 1;
    heads_del(req);
    qn__conn_head_done(req->cx);
    req->method = qn_arena_strdup(req->arena, method);
    if (!req->method)
        return MHD_NO;
    set_ids(req);

    /* The route first, so that even a framing error has its route's shape
     * (the OIP routes answer {"error":"..."}); a 404 or 405 gives way to it. */
    int refused = route_request(req) < 0;
    framing f = {0};
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, count_framing, &f);
    if (check_framing(req, &f) < 0) {
        req->phase = PH_REFUSED;
        return res_send(req); /* now: libmicrohttpd then closes the connection */
    }
    int chunked = f.nte == 1;
    uint64_t clen = f.cl ? strtoull(f.cl, NULL, 10) : 0;
    int has_body = chunked || clen > 0;

    if (atomic_load(&req->h->draining) && !is_builtin(req->route)) {
        /* Stopping: no handler runs any more for a request that arrives now
         * (the service's state is about to go away); the client is told to
         * go elsewhere, and res_send adds Connection: close. The built-in
         * routes still answer (/readyz says "draining"). */
        res_clear(&req->res);
        qn_res_error(&req->res, QN_UNAVAILABLE, "the service is stopping");
        refused = 1;
    }
    if (!refused)
        refused = check_auth(req) < 0 || check_utf8(req) < 0;
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

/* Writes the response straight to the socket, then the caller closes the
 * connection (MHD_NO). For a body refused mid-stream that goes on past
 * DISCARD_MAX: libmicrohttpd would take the response only once the body is
 * over, and closing without it leaves the client nothing to read (a chunked
 * upload far over its route's limit used to end that way). Safe here:
 * libmicrohttpd is reading this request and has nothing queued to send on
 * the socket, and it is this worker thread's connection. Best effort: the
 * socket is non-blocking and its send buffer empty, so a short answer goes
 * out whole. */
static void send_direct(qn_req *req)
{
    qn_res *res = &req->res;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(req->conn,
                                                                 MHD_CONNECTION_INFO_CONNECTION_FD);
    char head[512];
    if (!ci || res->kind != RES_BUF)
        return;
    const char *reason = MHD_get_reason_phrase_for((unsigned)res->status);
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\nX-Request-Id: %s\r\n\r\n",
                     res->status, reason ? reason : "", res->ctype ? res->ctype : "application/json",
                     res->body ? res->len : 0, req->request_id);
    if (n <= 0 || (size_t)n >= sizeof head)
        return;
    struct iovec iov[2] = {{head, (size_t)n}, {res->body, res->body ? res->len : 0}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    (void)!sendmsg(ci->connect_fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* A body must keep coming: the head's deadline to start, then one more
 * second per BODY_MIN_RATE bytes (Apache's mod_reqtimeout rule). The idle
 * timeout restarts on every byte, so without this a client trickling a byte
 * now and then would hold a worker and a connection for as long as it liked.
 * Checked as each piece arrives; a client that stops sending altogether is
 * the idle timeout's. */
#define BODY_MIN_RATE 500

static int body_too_slow(qn_req *req, size_t n)
{
    double allowed = (double)req->h->opts.header_timeout_ms / 1000.0 +
                     (double)(req->received + n) / BODY_MIN_RATE;
    double took = elapsed_s(&req->t0);
    if (took <= allowed)
        return 0;
    res_error_status(&req->res, 408, QN_DEADLINE_EXCEEDED, NULL,
                     "the request body came too slowly: %llu bytes in %.1f s; send at least %d "
                     "bytes a second after the first %lld ms",
                     (unsigned long long)(req->received + n), took, BODY_MIN_RATE,
                     req->h->opts.header_timeout_ms);
    qn_log_warn(req->trace_id, "request body too slow", "{s:s, s:I, s:f}", "route", req->route->path,
                "bytes", (json_int_t)(req->received + n), "seconds", took);
    return 1;
}

static enum MHD_Result receive(qn_req *req, const char *data, size_t n)
{
    qn_http *h = req->h;
    if (req->phase == PH_DISCARD || req->phase == PH_REFUSED) {
        req->discarded += n;
        if (req->discarded <= DISCARD_MAX)
            return MHD_YES;
        send_direct(req);
        return MHD_NO;
    }
    const qn_route *r = req->route;
    if (body_too_slow(req, n)) {
        send_direct(req);
        return MHD_NO;
    }
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

/* The answer when there is no memory for a request at all: a static body,
 * nothing allocated on our side. The connection closes after it. */
static enum MHD_Result answer_oom(struct MHD_Connection *conn)
{
    static const char body[] =
        "{\"error\":{\"code\":\"resource_exhausted\",\"message\":\"the server is out of memory\"}}";
    struct MHD_Response *r =
        MHD_create_response_from_buffer(sizeof body - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok =
        MHD_queue_response(conn, (unsigned)qn_code_http_status(QN_RESOURCE_EXHAUSTED), r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    qn_req *req = *con_cls;
    if (!req)
        return answer_oom(conn); /* out of memory when the request line arrived */
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
    /* "Failed to parse `Content-Length' header", "Too large value of
     * 'Content-Length' header": see "a malformed Content-Length". */
    if (strstr(line, "Content-Length' header"))
        answer_bad_length();
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

/* Lowers *max_total when the open-file limit could not hold that many
 * connections (accept(2) failing with EMFILE starves the store and the bus
 * of descriptors too). Returns the slack given to libmicrohttpd's limit. */
static unsigned fit_fd_limit(unsigned *max_total)
{
    unsigned want = *max_total, slack = want / 8 + 16;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
        return slack;
    rlim_t room = rl.rlim_cur > 2 * FD_RESERVE ? rl.rlim_cur - FD_RESERVE : rl.rlim_cur / 2;
    if ((rlim_t)want + slack <= room)
        return slack;
    unsigned fit = room > 32 ? (unsigned)((room - 16) * 8 / 9) : 1;
    slack = room > fit ? (unsigned)(room - fit) : 1;
    qn_log_warn(NULL, "max-connections lowered to fit the open-file limit", "{s:I, s:I, s:I}",
                "asked", (json_int_t)want, "using", (json_int_t)fit, "nofile",
                (json_int_t)rl.rlim_cur);
    *max_total = fit;
    return slack;
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
    if (h->opts.header_timeout_ms <= 0)
        h->opts.header_timeout_ms = DEFAULT_HEADER_TIMEOUT_MS;
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

    qn__conn_limits lim = {
        .max_total = opts->max_connections ? opts->max_connections : DEFAULT_MAX_CONNECTIONS,
        .max_per_client = opts->max_connections_per_client,
        .head_ms = opts->header_timeout_ms > 0 ? opts->header_timeout_ms
                                               : DEFAULT_HEADER_TIMEOUT_MS,
    };
    unsigned slack = fit_fd_limit(&lim.max_total);
    long long idle_ms = opts->idle_timeout_ms > 0 ? opts->idle_timeout_ms : DEFAULT_IDLE_TIMEOUT_MS;
    h->conns = qn__conns_new(&lim, opts->metrics);
    if (!h->conns)
        goto oom;

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
                            /* A hard ceiling above ours: http_conn.c refuses
                             * (and counts) from max_total on, and the slack
                             * bounds descriptors while refused ones close. */
                            MHD_OPTION_CONNECTION_LIMIT, lim.max_total + slack,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)((idle_ms + 999) / 1000),
                            MHD_OPTION_NOTIFY_CONNECTION, qn__conns_notify, h->conns,
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
    if (qn__conns_start(h->conns, err) < 0) {
        MHD_stop_daemon(h->d);
        goto fail;
    }
    return h;
oom:
    qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory starting the HTTP server");
fail:
    if (h) {
        qn__conns_free(h->conns);
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
    /* The reaper first: it must not shut sockets down under the daemon's
     * own teardown. MHD_stop_daemon joins the worker threads, so once it
     * returns no handler of this server runs any more. */
    qn__conns_stop(h->conns);
    MHD_stop_daemon(h->d);
    qn__conns_free(h->conns);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h->routes);
    free(h->token);
    free(h->service);
    free(h);
}
