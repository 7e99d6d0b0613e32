/*
 * outbox.h - the transactional outbox: events that leave a service through
 * the bus are first written to the service's own store, in the same
 * transaction as the change they describe, and a publisher thread drains
 * them to the bus in order. An event is then never lost between a commit and
 * a publish (the process may die in between: the row waits), and never
 * published for a change that rolled back.
 *
 *     static const qn_migration migrations[] = {
 *         {1, "CREATE TABLE things (...);" QN_OUTBOX_SCHEMA},
 *     };
 *     ...
 *     qn_outbox *ob = qn_outbox_start(db, bus, "quern-ingest", metrics, &err);
 *
 *     // inside a write transaction on connection c
 *     json_t *ev = qn_event_new("quern.events.ingested", "quern-ingest", data, traceparent);
 *     qn_outbox_append(c, ev, &err);   // borrowed
 *     json_decref(ev);
 *     qn_tx_commit(c, &err);
 *     qn_outbox_kick(ob);              // publish now rather than at the next poll
 *
 *     // on SIGTERM, after the HTTP server drained
 *     qn_outbox_flush(ob, 5000);
 *     qn_outbox_stop(ob);
 *
 * Published rows are kept for a day (GET endpoints may show them), then
 * swept. When the bus is down, rows accumulate and are published in order
 * once it is back; quern_outbox_pending shows the backlog.
 * Thread-safe. The metrics registry keeps a render hook that reads the
 * outbox: stop the HTTP server (the scraper) before qn_outbox_stop.
 */
#ifndef QN_OUTBOX_H
#define QN_OUTBOX_H

#include <jansson.h>
#include <stdint.h>

#include "core/bus/bus.h"
#include "core/err.h"
#include "core/http.h"
#include "core/metrics.h"
#include "core/store/store.h"

/* Append to the service's first migration. */
#define QN_OUTBOX_SCHEMA                                                   \
    "CREATE TABLE outbox ("                                                \
    "  seq INTEGER PRIMARY KEY,"                                           \
    "  id TEXT NOT NULL UNIQUE,"                                           \
    "  type TEXT NOT NULL,"                                                \
    "  body TEXT NOT NULL,"                                                \
    "  created_at INTEGER NOT NULL,"                                       \
    "  published_at INTEGER);"                                             \
    "CREATE INDEX outbox_unpublished ON outbox (published_at, seq);"

typedef struct qn_outbox qn_outbox;

/* Appends a validated CloudEvent (borrowed) inside the caller's transaction
 * on c. QN_INVALID_ARGUMENT when qn_event_validate refuses it. */
QN_MUST_CHECK int qn_outbox_append(qn_conn *c, const json_t *event, qn_err *err);

/* Starts the publisher thread. bus may be NULL (events then wait in the
 * table; used by tests and tools). metrics may be NULL. */
QN_MUST_CHECK qn_outbox *qn_outbox_start(qn_store *db, qn_bus *bus, const char *service, qn_metrics *metrics,
                           qn_err *err);
/* Wakes the publisher (cheap; call after committing appended events). */
void qn_outbox_kick(qn_outbox *ob);
/* Events not yet published (from the store). */
int64_t qn_outbox_pending(qn_outbox *ob);
/* Publishes everything pending, waiting up to timeout_ms. 0 when nothing is
 * left, QN_DEADLINE_EXCEEDED otherwise (the rest stays for the next start). */
QN_MUST_CHECK int qn_outbox_flush(qn_outbox *ob, long long timeout_ms);
/* Answers a listing of db's outbox table (the handler of a service's GET
 * /v1/events or /v1/outbox): query after=SEQ and limit=N (1..1000, default
 * 100) -> {"events":[{"seq","event","published"}],"next_after":SEQ}. Bad
 * parameters are a 400; storage failures a 503 (busy) or a bare 500. */
int qn_outbox_list(qn_store *db, qn_req *req, qn_res *res);

/* Stops the thread and frees the outbox (does not flush). NULL is a no-op. */
void qn_outbox_stop(qn_outbox *ob);

#endif
