/*
 * client.h - the HTTP client services use to call each other (libcurl).
 *
 * One client per upstream (base URL). Calls carry a deadline, the caller's
 * trace context (traceparent), the bearer token, and are retried with
 * exponential backoff and full jitter when that is safe: idempotent methods
 * (GET, HEAD, PUT, DELETE), or any method when an idempotency key is given,
 * and only on failures that may pass (connection errors, 429, 502, 503, 504).
 * Errors from a Quern service are mapped back from its JSON error model, so
 * a 404 from the registry is QN_NOT_FOUND here with the registry's message.
 *
 * Each client is one circuit breaker for its upstream. Closed, it counts
 * consecutive failed attempts (transport errors, timeouts, 5xx; a 4xx is an
 * answer, so it counts as success, and so does a 503 from GET .../readyz,
 * which says "not ready" and is not retried); at breaker_failures it opens, and calls
 * fail fast with QN_UNAVAILABLE ("circuit open for registry; retrying after
 * 0.8s") without touching the network. After the cool-down it is half-open:
 * one call goes through as a probe (the others still fail fast); success
 * closes it, failure opens it again with twice the cool-down (capped at
 * max(30 s, the first cool-down)). At most max_concurrency calls are in flight
 * at once; a call waits for a slot, and that wait counts against its
 * deadline. With opts.metrics the client keeps quern_circuit_state{upstream}
 * (0 closed, 1 open, 2 half-open), quern_client_requests_total{upstream,
 * outcome} (ok, client_error, server_error, unavailable, deadline_exceeded,
 * circuit_open), quern_client_retries_total{upstream} and
 * quern_client_in_flight{upstream}.
 *
 *     qn_client_opts o = {.base_url = "http://127.0.0.1:7701", .timeout_ms = 5000};
 *     qn_client *reg = qn_client_new(&o, &err);
 *     json_t *model;
 *     if (qn_client_json(reg, "GET", "/v1/models/adult", NULL, NULL, &model, &err) < 0)
 *         ... err.code is QN_NOT_FOUND, QN_UNAVAILABLE, ...
 *     qn_client_put_file(reg, "/v1/blobs/sha256:...", "/tmp/model.json", NULL, &err);
 *     qn_client_free(reg);
 *
 * Thread-safe: one client may be used by many threads at once (connections
 * are pooled and reused across calls).
 */
#ifndef QN_CLIENT_H
#define QN_CLIENT_H

#include <jansson.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/metrics.h"
#include "core/netallow.h"
#include "core/trace.h"

typedef struct qn_client qn_client;

typedef struct qn_client_opts {
    const char *base_url;     /* "http://host:port" (no trailing slash needed) */
    long timeout_ms;          /* deadline of one call, retries included (0: 10 s) */
    long connect_timeout_ms;  /* 0: 2 s */
    int max_retries;          /* 0: 3; -1: none */
    const char *token;        /* bearer token sent on every call, or NULL */
    const char *user_agent;   /* "quern-train/0.1.0" */
    size_t max_response;      /* bytes kept in memory (0: 64 MiB) */
    const char *name;         /* upstream label in metrics and errors ("registry");
                                 NULL: the base URL */
    int breaker_failures;     /* consecutive failures that open the circuit (0: 5; -1: never) */
    long breaker_cooldown_ms; /* first open period (0: 1 s); doubles per failed probe */
    int max_concurrency;      /* calls in flight at once (0: 32; -1: unbounded) */
    qn_metrics *metrics;      /* where the client's metrics go (not owned), or NULL */
} qn_client_opts;

/* The breaker's state, as quern_circuit_state shows it. */
typedef enum qn_circuit {
    QN_CIRCUIT_CLOSED = 0,
    QN_CIRCUIT_OPEN = 1,
    QN_CIRCUIT_HALF_OPEN = 2,
} qn_circuit;

QN_MUST_CHECK qn_client *qn_client_new(const qn_client_opts *opts, qn_err *err);
void qn_client_free(qn_client *c);
const char *qn_client_base(const qn_client *c);
/* The circuit's state now (an open circuit whose cool-down has passed still
 * reads open until a call probes it). Thread-safe. */
qn_circuit qn_client_circuit(qn_client *c);

/* Sends body (may be NULL) as JSON; on 2xx stores the parsed answer in *out
 * (NULL for an empty body; caller decrefs) and returns the HTTP status. On
 * an error status returns the negative code from the answer's error model
 * (or from the status) with its message; on transport failure QN_UNAVAILABLE
 * or QN_DEADLINE_EXCEEDED. trace may be NULL. out may be NULL. */
QN_MUST_CHECK int qn_client_json(qn_client *c, const char *method, const char *path, const json_t *body,
                   const qn_trace_ctx *trace, json_t **out, qn_err *err);

/* As qn_client_json with an Idempotency-Key header, which makes a POST safe to retry. */
QN_MUST_CHECK int qn_client_json_idem(qn_client *c, const char *method, const char *path, const json_t *body,
                        const char *idempotency_key, const qn_trace_ctx *trace, json_t **out,
                        qn_err *err);

/* Sends raw bytes with a content type; the answer body goes to out (may be NULL). */
QN_MUST_CHECK int qn_client_raw(qn_client *c, const char *method, const char *path, const char *content_type,
                  const void *body, size_t len, const qn_trace_ctx *trace, qn_buf *out,
                  qn_err *err);

/* As qn_client_raw with an Idempotency-Key header, which makes a POST safe to retry. */
QN_MUST_CHECK int qn_client_raw_idem(qn_client *c, const char *method, const char *path, const char *content_type,
                                     const void *body, size_t len, const char *idempotency_key,
                                     const qn_trace_ctx *trace, qn_buf *out, qn_err *err);

/* A GET asking for the answer as the media type accept (an Accept header).
 * The answer's Content-Type is copied into ctype ("" when none), so that the
 * caller can tell whether the server gave that form or its default. Returns
 * as qn_client_raw. */
QN_MUST_CHECK int qn_client_get_as(qn_client *c, const char *path, const char *accept, const qn_trace_ctx *trace,
                                   qn_buf *out, char *ctype, size_t ctype_size, qn_err *err);

/* As qn_client_raw for a proxy: returns the upstream's HTTP status whatever
 * it is (2xx to 5xx, the answer's body in out, its Content-Type copied into
 * ctype, "" when it sent none), and a negative code only when no answer came
 * (transport failure, deadline, open circuit, or an answer larger than out's
 * bound: QN_RESOURCE_EXHAUSTED). Retries as qn_client_raw does. */
QN_MUST_CHECK int qn_client_forward(qn_client *c, const char *method, const char *path,
                                    const char *content_type, const void *body, size_t len,
                                    const qn_trace_ctx *trace, qn_buf *out, char *ctype,
                                    size_t ctype_size, qn_err *err);

/* Streams a file as the body of a PUT (never whole in memory). Returns the status. */
QN_MUST_CHECK int qn_client_put_file(qn_client *c, const char *path, const char *file,
                       const qn_trace_ctx *trace, qn_err *err);

/* Streams body (read to its end, e.g. a pipe another thread writes: its
 * length need not be known) as the chunked body of a POST, never retried;
 * the answer body goes to out (may be NULL). Returns the status. */
QN_MUST_CHECK int qn_client_post_stream(qn_client *c, const char *path, const char *content_type, FILE *body,
                                        const qn_trace_ctx *trace, qn_buf *out, qn_err *err);

/* Streams a GET into dest via dest.tmp + rename, so dest is never partial. */
QN_MUST_CHECK int qn_client_get_file(qn_client *c, const char *path, const char *dest,
                       const qn_trace_ctx *trace, qn_err *err);

/* A GET of an outside URL (ingest's http sources), with the same deadline,
 * retries and breaker as any call of c: url is absolute (the page of a paged
 * API may be anywhere, c's base only names the upstream); headers are extra
 * "Name: value" lines (API keys, If-None-Match); allow, when not NULL, is
 * checked and pinned on every attempt (qn_netallow_pin: a refused address is
 * QN_PERMISSION_DENIED, never retried). Messages show shown (a redacted
 * form of url) when given. Returns the status: 2xx, or 304 when a
 * conditional request found nothing new; the answer's caching and paging
 * headers are filled in. */
typedef struct qn_fetch {
    const char *url;
    const char *shown;
    const char *const *headers;
    size_t nheaders;
    const qn_netallow *allow;
    /* from the answer ("" when absent) */
    char etag[256];
    char last_modified[64];
    char content_type[128];
    char link_next[2048];   /* the target of the Link header's rel="next" */
} qn_fetch;

QN_MUST_CHECK int qn_client_fetch(qn_client *c, qn_fetch *f, qn_buf *out, qn_err *err);

/* The target of rel="next" in a Link header value (RFC 8288:
 * `<https://x/?p=2>; rel="next", <...>; rel="last"`), copied into out.
 * 0, or -1 when there is none or it does not fit. Thread-safe, no allocation. */
int qn_link_next(const char *value, size_t len, char *out, size_t cap);

#endif
