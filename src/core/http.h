/*
 * http.h - the HTTP server every service runs (libmicrohttpd underneath).
 *
 * A service describes its API as a table of routes: method, path template,
 * handler, body limit, flags. The server matches requests against the table,
 * enforces body limits and bearer-token auth, parses JSON bodies with bounded
 * depth, gives each request its own arena, records
 * quern_http_requests_total{service,route,method,code} and
 * quern_http_request_duration_seconds by route template, and answers errors
 * in the JSON error model of DESIGN.md section 1:
 *   {"error":{"code":"invalid_argument","message":"...","details":{...}}}
 *
 *     static int get_model(qn_req *req, qn_res *res, void *ud)
 *     {
 *         const char *name = qn_req_param(req, "name");
 *         ...
 *         if (!found)
 *             return qn_res_error(res, QN_NOT_FOUND, "model %s does not exist", name);
 *         return qn_res_json(res, 200, json_pack("{s:s}", "name", name));
 *     }
 *     static const qn_route routes[] = {
 *         {"GET",  "/v1/models/{name}", get_model, 0, 0, NULL},
 *         {"POST", "/v1/models", create_model, 64 << 10, 0, NULL},
 *         {"PUT",  "/v1/blobs/{digest}", put_blob_done, 0, QN_ROUTE_STREAM, put_blob_chunk},
 *     };
 *
 * Handlers run on the server's worker threads, many at once. A handler must
 * produce exactly one response (qn_res_json / qn_res_error / qn_res_text /
 * qn_res_file / qn_res_empty) and return 0; a handler that returns non-zero
 * without a response gets a 500 (logged, never leaked to the client).
 *
 * Paths: templates are literal segments and {param} segments; a {param}
 * matches one non-empty segment, percent-decoded. Query strings are parsed by
 * libmicrohttpd. HEAD is answered for every GET route (body suppressed).
 * 404 for an unknown path, 405 (with Allow) for a known path and wrong method.
 *
 * Bodies: every route has a limit; 0 means no body is allowed. A request
 * whose Content-Length (or received bytes) exceeds it gets 413 before the
 * handler runs. QN_ROUTE_STREAM routes see the body chunk by chunk through
 * their stream callback (for uploads that never sit in memory); the handler
 * runs once the body is complete, or never when the stream callback already
 * answered with an error.
 */
#ifndef QN_HTTP_H
#define QN_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/err.h"
#include "core/metrics.h"
#include "core/trace.h"

typedef struct qn_http qn_http;
typedef struct qn_req qn_req;
typedef struct qn_res qn_res;

typedef int (*qn_handler)(qn_req *req, qn_res *res, void *ud);
/* Called for each body chunk of a QN_ROUTE_STREAM route (len > 0). Return 0
 * to go on; to refuse the body, answer with qn_res_error and return non-zero. */
typedef int (*qn_stream_fn)(qn_req *req, qn_res *res, const char *data, size_t len, void *ud);

enum {
    QN_ROUTE_STREAM = 1 << 0,  /* body goes to the stream callback, max_body still applies */
    QN_ROUTE_PUBLIC = 1 << 1,  /* no auth even when the method mutates */
    QN_ROUTE_OIP    = 1 << 2,  /* errors in the Open Inference Protocol shape {"error":"msg"} */
};

typedef struct qn_route {
    const char *method;     /* "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD" */
    const char *path;       /* template, e.g. "/v1/models/{name}/versions/{n}" */
    qn_handler handler;
    uint64_t max_body;      /* bytes; 0 = no body */
    unsigned flags;
    qn_stream_fn stream;    /* QN_ROUTE_STREAM routes only */
} qn_route;

typedef struct qn_http_opts {
    const char *service;        /* "registry": metrics label and logs */
    const char *listen;         /* "127.0.0.1:7701"; port 0 picks a free port */
    unsigned threads;           /* worker threads (MHD thread pool) */
    const qn_route *routes;
    size_t nroutes;
    void *ud;                   /* passed to every handler */
    qn_metrics *metrics;        /* where HTTP metrics go (not owned) */
    const char *token;          /* NULL or "": no auth */
    int auth_reads;             /* 1: GET/HEAD need the token too */
    size_t max_json_depth;      /* 0: 32 */
    /* Connection limits (http_conn.h): a connection over the total or over
     * its client address's share is answered 503 / 429 and closed; a
     * request line and headers must arrive within header_timeout_ms of
     * the accept (or of the first byte of a later request on a kept-alive
     * connection); a connection silent both ways for idle_timeout_ms is
     * closed. The server lowers max_connections to fit RLIMIT_NOFILE. */
    unsigned max_connections;            /* 0: 1024 */
    unsigned max_connections_per_client; /* 0: no per-client cap */
    long long header_timeout_ms;         /* 0: 10 s */
    long long idle_timeout_ms;           /* 0: 60 s (whole seconds) */
    /* Readiness for GET /readyz: return 1 when ready; otherwise 0 and set
     * *reason (static or owned by the service). NULL: always ready. */
    int (*ready)(void *ud, const char **reason);
} qn_http_opts;

/* Starts listening (epoll, a thread pool, keep-alive). The server also
 * serves GET /healthz, /readyz and /metrics. NULL with err filled when the
 * address is bad or busy. */
QN_MUST_CHECK qn_http *qn_http_start(const qn_http_opts *opts, qn_err *err);
/* The port actually bound (useful with port 0). */
int qn_http_port(const qn_http *h);
/* Turns readiness off for good (the first step of a graceful stop). From
 * then on a request that arrives, on a connection already open, gets 503
 * {"code":"unavailable","message":"the service is stopping"} with
 * Connection: close, and its handler does not run; requests already under
 * way finish normally. */
void qn_http_set_draining(qn_http *h);
/* Sets draining, stops accepting new connections (the listening socket is
 * closed, so clients are refused at once) and waits up to timeout_ms for
 * in-flight requests to finish. Returns 0 when all finished,
 * QN_DEADLINE_EXCEEDED else. */
QN_MUST_CHECK int qn_http_drain(qn_http *h, long long timeout_ms);
/* Stops the server and frees it, closing any remaining connections. Returns
 * only once every worker thread has been joined, so no handler is running
 * (it waits for one that is): only then may the handlers' state be freed. */
void qn_http_stop(qn_http *h);

/* ---- requests: valid for the duration of the handler ------------------- */

const char *qn_req_method(const qn_req *req);
const char *qn_req_path(const qn_req *req);
/* The matched route's template ("/v1/models/{name}"). */
const char *qn_req_route(const qn_req *req);
/* The raw query string after '?', still percent-escaped ("" when none):
 * for a handler that forwards the request as it came (the console's proxy). */
const char *qn_req_query_string(const qn_req *req);
/* A path parameter by name, percent-decoded; NULL if the route has none such. */
const char *qn_req_param(const qn_req *req, const char *name);
/* A query parameter; NULL when absent. */
const char *qn_req_query(const qn_req *req, const char *name);
/* A request header (case-insensitive); NULL when absent. */
const char *qn_req_header(const qn_req *req, const char *name);
/* The whole body (non-stream routes), NUL-terminated; len may be NULL. */
const char *qn_req_body(const qn_req *req, size_t *len);
/* Parses the body as a JSON object (bounded depth). On failure answers 400
 * (naming line and column) and returns NULL. The result is owned by the
 * request (do not decref). */
json_t *qn_req_json(qn_req *req, qn_res *res);
/* The request's arena: freed when the response is done. */
qn_arena *qn_req_arena(qn_req *req);
/* The request's trace context: from traceparent when valid, else new. */
const qn_trace_ctx *qn_req_trace(const qn_req *req);
/* 32-hex trace id, for logs. */
const char *qn_req_trace_id(const qn_req *req);
/* A per-request slot for stream routes (e.g. an open temp file); cleanup runs
 * when the request ends, whether it completed or the client vanished. */
void qn_req_set_state(qn_req *req, void *state, void (*cleanup)(void *state));
void *qn_req_state(const qn_req *req);

/* ---- responses: exactly one per request ---------------------------------- */

/* Steals body (a json_t reference). Always returns 0. */
int qn_res_json(qn_res *res, int status, json_t *body);
/* The JSON error model; status from the code. Returns 0. */
int qn_res_error(qn_res *res, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Same, with a details object (stolen). */
int qn_res_error_details(qn_res *res, int code, json_t *details, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A copy of body is sent with the given content type. Returns 0. */
int qn_res_text(qn_res *res, int status, const char *content_type, const char *body, size_t len);
/* As qn_res_text, but takes body (malloc'd) instead of copying it: for large
 * answers built in a buffer (qn_buf_detach). body is freed in any case. */
int qn_res_take(qn_res *res, int status, const char *content_type, char *body, size_t len);
/* Streams len bytes of fd from offset; takes ownership of fd. Returns 0. */
int qn_res_file(qn_res *res, int status, const char *content_type, int fd, uint64_t offset,
                uint64_t len);
/* No body. Returns 0. */
int qn_res_empty(qn_res *res, int status);
/* Adds a response header (copied). Call before or after setting the body. */
void qn_res_header(qn_res *res, const char *name, const char *value);
/* True once a response has been set. */
int qn_res_done(const qn_res *res);

#endif
