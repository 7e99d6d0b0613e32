/*
 * subscriber.h - a bus consumer on its own thread, with deduplication.
 *
 * Every service that reacts to events runs the same loop: receive, skip what
 * was already handled (the bus delivers at least once), call the handler,
 * ack on success, nack on failure (the bus redelivers later, then
 * dead-letters). Deduplication is by CloudEvent id in an `inbox` table of
 * the service's own store.
 *
 *     static const qn_migration migrations[] = {{1, "..." QN_INBOX_SCHEMA}};
 *
 *     static int on_promoted(const qn_msg *msg, void *ud, qn_err *err)
 *     {
 *         const qn_trace_ctx *tc = qn_subscriber_trace(msg);  // this delivery's span
 *         ... return 0 to ack, a negative code to have it redelivered
 *     }
 *     static const char *const topics[] = {"quern.model.promoted", NULL};
 *     qn_subscriber *s = qn_subscriber_start(bus, "serve", topics, db, on_promoted, st, &err);
 *     ...
 *     qn_subscriber_stop(s);     // finishes the message in hand, then stops
 *
 * A handler that must change the store exactly once per event runs its
 * writes through qn_subscriber_tx: one write transaction that skips an id
 * already in the inbox and marks it in the same commit as the change (the
 * loop then skips its own mark, one write transaction less per event):
 *
 *     static int count_tx(qn_conn *c, void *arg, qn_err *err) { ... writes on c ... }
 *
 *     static int on_event(const qn_msg *msg, void *ud, qn_err *err)
 *     {
 *         ... validate msg->event (return 0 to drop it), take locks ...
 *         int rc = qn_subscriber_tx(st->db, msg, count_tx, &args, err);
 *         if (rc == 0)
 *             ... what follows a commit: gauges, kicks ...
 *         return rc < 0 ? rc : 0;     // 1: a duplicate, acknowledged
 *     }
 */
#ifndef QN_SUBSCRIBER_H
#define QN_SUBSCRIBER_H

#include "core/bus/bus.h"
#include "core/err.h"
#include "core/store/store.h"
#include "core/trace.h"

#define QN_INBOX_SCHEMA "CREATE TABLE inbox (id TEXT PRIMARY KEY, received_at INTEGER NOT NULL);"

typedef int (*qn_event_handler)(const qn_msg *msg, void *ud, qn_err *err);

typedef struct qn_subscriber qn_subscriber;

/* Subscribes group to patterns (NULL-terminated) and starts the thread.
 * db may be NULL (no deduplication). NULL with err on failure. */
qn_subscriber *qn_subscriber_start(qn_bus *bus, const char *group, const char *const *patterns,
                                   qn_store *db, qn_event_handler fn, void *ud, qn_err *err);
/* Stops the thread (after the message in hand) and closes the consumer. */
void qn_subscriber_stop(qn_subscriber *s);

/* The trace context of the message being handled: the CONSUMER span the
 * loop runs the handler in (a child of the event's traceparent, or a new
 * trace). Pass it to the calls and events the handler makes, so the trace
 * goes on. NULL when msg is not the message in hand on this thread. */
const qn_trace_ctx *qn_subscriber_trace(const qn_msg *msg);

/* The body of an event's write transaction: changes the store through c
 * (open, in a write transaction) and returns 0, or a negative code with err
 * filled to have the whole transaction rolled back. */
typedef int (*qn_tx_body)(qn_conn *c, void *arg, qn_err *err);

/* The transactional mode of an event handler: acquires a connection of db,
 * begins a write transaction, and when msg's id is already in the inbox
 * rolls back and returns 1 (a duplicate: acknowledge it). Otherwise calls
 * fn(c, arg, err), marks the id and commits: 0. When fn, the mark or the
 * commit fails, rolls back and returns that negative code, which the
 * handler returns so the bus redelivers (then dead-letters) the event.
 * The connection is released before returning. */
int qn_subscriber_tx(qn_store *db, const qn_msg *msg, qn_tx_body fn, void *arg, qn_err *err);

/* 1 when event id was handled already, 0 if not, negative on error. */
QN_MUST_CHECK int qn_inbox_seen(qn_conn *c, const char *id, qn_err *err);
/* Records id as handled (idempotent). */
QN_MUST_CHECK int qn_inbox_mark(qn_conn *c, const char *id, qn_err *err);

#endif
