/*
 * http_conn.h - internal to http.c: the connections of one HTTP server,
 * tracked so that no client can hold the server's connections hostage.
 *
 * libmicrohttpd's own idle timeout restarts on every byte, so a client that
 * sends one byte of its request head every few seconds (slowloris) keeps a
 * connection forever, and a thousand such clients fill the server. This
 * module adds, on top of libmicrohttpd:
 *   - a total limit and a per-client-address limit: a connection over either
 *     is answered at once (503 / 429, Connection: close) and closed;
 *   - a deadline for the request head: from accepting a connection, or from
 *     the first byte of a later request on a kept-alive connection, the
 *     request line and headers must be in within head_ms, else a reaper
 *     thread shuts the socket down (idle kept-alive connections are left to
 *     the idle timeout: they cost nothing and clients reuse them);
 *   - quern_http_connections_refused_total{reason} (total_limit,
 *     client_limit, head_timeout, out_of_memory) and quern_http_connections_open.
 *
 *     qn__conn_limits lim = {.max_total = 1024, .max_per_client = 128, .head_ms = 10000};
 *     qn__conns *cs = qn__conns_new(&lim, metrics);
 *     MHD_start_daemon(..., MHD_OPTION_NOTIFY_CONNECTION, qn__conns_notify, cs, ...);
 *     qn__conns_start(cs, &err);          // the reaper
 *     ... qn__conn_head_done(c) when a request head is complete (first access call),
 *     ... qn__conn_idle(c) when a request is done and the connection waits for the next
 *     qn__conns_stop(cs); MHD_stop_daemon(d); qn__conns_free(cs);
 *
 * Thread model: the notify callback and head_done/idle run on
 * libmicrohttpd's worker threads; the reaper is one more thread. The list
 * of connections is under one mutex, which the CLOSED notification takes
 * before libmicrohttpd closes the socket: the reaper, holding the mutex,
 * never shuts down a descriptor that was closed and reused. The per-request
 * calls only store atomics (no lock on the request path).
 */
#ifndef QN_HTTP_CONN_H
#define QN_HTTP_CONN_H

#include <microhttpd.h>

#include "core/err.h"
#include "core/metrics.h"

typedef struct qn__conns qn__conns;
typedef struct qn__conn qn__conn;

typedef struct qn__conn_limits {
    unsigned max_total;      /* connections open at once; > 0 */
    unsigned max_per_client; /* per client IP address; 0: no cap */
    long long head_ms;       /* request head deadline; > 0 */
} qn__conn_limits;

/* A tracker; NULL when out of memory. metrics may be NULL. */
qn__conns *qn__conns_new(const qn__conn_limits *lim, qn_metrics *metrics);
/* Starts the reaper thread. 0, or QN_INTERNAL with err filled. */
int qn__conns_start(qn__conns *cs, qn_err *err);
/* Stops and joins the reaper (idempotent). */
void qn__conns_stop(qn__conns *cs);
/* Frees the tracker: after the daemon stopped (every connection closed). */
void qn__conns_free(qn__conns *cs);

/* MHD_OPTION_NOTIFY_CONNECTION callback (cls: the tracker). */
void qn__conns_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                      enum MHD_ConnectionNotificationCode code);

/* The tracked connection of conn, or NULL. */
qn__conn *qn__conn_of(struct MHD_Connection *conn);
/* The request head of the current request is complete. c may be NULL. */
void qn__conn_head_done(qn__conn *c);
/* The current request is over; the connection waits for another. c may be NULL. */
void qn__conn_idle(qn__conn *c);

#endif
