/*
 * bus.h - the message bus of Quern (DESIGN.md section 3): one interface, two
 * backends chosen by the URL scheme.
 *
 *   sqlite://PATH   the embedded default: a durable queue in one SQLite file
 *                   (WAL), shared by the processes of one host.
 *   amqp://USER:PASS@HOST:PORT/VHOST   RabbitMQ through rabbitmq-c.
 *
 * Semantics, the same on both (docs/bus.md says how each backend does it):
 * topics are CloudEvent types ("quern.model.promoted"); a subscription names
 * a durable consumer group and topic patterns in AMQP topic syntax ('*' one
 * word, '#' zero or more words). Every group gets every message published
 * after the group was first subscribed; consumers within a group compete.
 * Delivery is at least once: a message is acked explicitly; a nack, or a lost
 * consumer (killed process, lease expired, connection gone), redelivers it
 * with attempt + 1 after a growing delay; after max_attempts it goes to the
 * topic "<topic>.dead" and is counted. Dead topics are only matched by
 * patterns whose last word is "dead" ("quern.#.dead"), so "quern.#" never
 * receives dead letters by accident. Publishing returns only once the message
 * is durable (SQLite commit with synchronous=FULL / RabbitMQ publisher
 * confirm). Handlers dedupe by the event id.
 *
 *     qn_metrics *m = qn_metrics_new();
 *     qn_bus_opts o = {.metrics = m};
 *     qn_bus *bus = qn_bus_open("sqlite:///var/lib/quern/bus.db", &o, &err);
 *
 *     json_t *ev = qn_event_new("quern.model.promoted", "quern-registry",
 *                               json_pack("{s:s}", "model", "churn"), traceparent);
 *     int rc = qn_bus_publish(bus, ev, &err);     // durable when 0
 *     json_decref(ev);
 *
 *     // on a consumer thread
 *     static const char *const pats[] = {"quern.model.*", NULL};
 *     qn_consumer *c = qn_bus_subscribe(bus, "monitor", pats, &err);
 *     for (;;) {
 *         qn_msg *msg;
 *         rc = qn_consumer_receive(c, 1000, &msg, &err);   // 1: got one, 0: timeout
 *         if (rc <= 0) continue;
 *         if (handle(msg->id, msg->event) == 0) qn_consumer_ack(c, msg, &err);
 *         else                                  qn_consumer_nack(c, msg, &err);
 *         qn_msg_free(msg);
 *     }
 *     qn_consumer_close(c);
 *     qn_bus_close(bus);
 *
 * Threads: a qn_bus is shared; publishing is thread-safe. A qn_consumer
 * belongs to one thread at a time (typically a dedicated one); several
 * consumers of one bus may run on several threads. Do not use a bus across
 * fork(): open one in the child.
 */
#ifndef QN_BUS_H
#define QN_BUS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/metrics.h"

typedef struct qn_bus qn_bus;
typedef struct qn_consumer qn_consumer;

/* Tuning; zero fields take the defaults in brackets. Plain data. */
typedef struct qn_bus_opts {
    qn_metrics *metrics;        /* registry for the quern_bus_* families; NULL: none */
    int max_attempts;           /* deliveries before dead-lettering [5] */
    int64_t retry_base_ms;      /* delay before redelivery n: base * 2^(n-1) [1000] */
    int64_t retry_max_ms;       /* cap of that delay [60000] */
    int64_t visibility_ms;      /* sqlite: lease of a received message [30000] */
    int64_t retention_ms;       /* sqlite: acked messages kept this long [86400000] */
    int64_t publish_timeout_ms; /* amqp: how long a publish retries an outage [30000] */
    int prefetch;               /* amqp: unacked messages per consumer [64] */
    size_t max_message_bytes;   /* larger envelopes are refused [1 MiB] */
} qn_bus_opts;

/* A received message. The public fields are read-only; the rest belongs to
 * the backend. Owned by the caller of qn_consumer_receive: qn_msg_free. */
typedef struct qn_msg {
    const char *id;    /* the CloudEvent id */
    const char *topic; /* the bus topic: the event type, or "<type>.dead" */
    json_t *event;     /* the whole envelope, validated (owned by the message) */
    int attempt;       /* 1 on the first delivery */
    /* backend-private */
    int64_t qn__seq;
    uint64_t qn__tag;
    uint64_t qn__gen;
    char *qn__topic;
    char *qn__body;
    size_t qn__len;
} qn_msg;

/* Opens the bus named by url (see the top). opts may be NULL (defaults).
 * sqlite: creates the file and schema if needed. amqp: connects, declares the
 * exchanges; fails with QN_UNAVAILABLE if the broker cannot be reached. An
 * unknown scheme or bad option is QN_INVALID_ARGUMENT. NULL with err on
 * failure. The bus keeps a pointer to opts->metrics (which must outlive it). */
QN_MUST_CHECK qn_bus *qn_bus_open(const char *url, const qn_bus_opts *opts, qn_err *err);
/* Closes the bus. Every consumer must be closed first. NULL is a no-op. */
void qn_bus_close(qn_bus *bus);
/* "sqlite" or "amqp". */
const char *qn_bus_backend(const qn_bus *bus);

/* Publishes one CloudEvent (borrowed) on the topic named by its "type".
 * Returns 0 once it is durable; QN_INVALID_ARGUMENT for an envelope that
 * qn_event_validate refuses; QN_UNAVAILABLE when the store or broker could
 * not take it before the deadline (nothing is silently dropped: a non-zero
 * return means "not known to be durable"). Thread-safe. */
QN_MUST_CHECK int qn_bus_publish(qn_bus *bus, const json_t *event, qn_err *err);
/* Publishes n events in one transaction (sqlite) or one confirm round
 * (amqp): all durable on 0. On failure none or some may have been stored (at
 * least once: retrying may duplicate, ids dedupe). Every envelope is
 * validated before any is sent. Thread-safe. */
QN_MUST_CHECK int qn_bus_publish_batch(qn_bus *bus, json_t *const *events, size_t n, qn_err *err);

/* Subscribes consumer group `group` ([A-Za-z0-9_-], 1..64 chars) to the
 * NULL-terminated topic patterns (at least one). The group is durable: it is
 * created on first use and then receives every matching message published
 * afterwards, whether or not a consumer is running. Subscribing again adds
 * patterns to the group (the union is what the group receives). Returns a
 * consumer owned by the caller (qn_consumer_close), or NULL with err. */
QN_MUST_CHECK qn_consumer *qn_bus_subscribe(qn_bus *bus, const char *group, const char *const *patterns,
                              qn_err *err);
/* Waits up to timeout_ms for a message. 1 and *out (caller frees with
 * qn_msg_free) when one arrived; 0 and *out = NULL on timeout (also while the
 * broker is unreachable: the consumer keeps reconnecting); negative with err
 * on a failure that will not heal by waiting. An envelope that fails
 * validation is dead-lettered at once and never returned. */
QN_MUST_CHECK int qn_consumer_receive(qn_consumer *c, int timeout_ms, qn_msg **out, qn_err *err);
/* Acknowledges msg: it will not be delivered to this group again. If the
 * delivery was lost meanwhile (lease expired, connection dropped) it returns
 * QN_ABORTED: the message will be (or was) redelivered. */
QN_MUST_CHECK int qn_consumer_ack(qn_consumer *c, qn_msg *msg, qn_err *err);
/* Gives msg back: redelivered after retry_base_ms * 2^(attempt-1) (capped),
 * or dead-lettered if attempt >= max_attempts. QN_ABORTED as for ack. */
QN_MUST_CHECK int qn_consumer_nack(qn_consumer *c, qn_msg *msg, qn_err *err);
/* Closes the consumer; messages received but neither acked nor nacked are
 * redelivered (sqlite: when their lease expires; amqp: at once). */
void qn_consumer_close(qn_consumer *c);
void qn_msg_free(qn_msg *msg);

/* --- CloudEvents 1.0, structured JSON mode -------------------------------- */

/* A new envelope: specversion "1.0", a fresh UUID v4 id, time now (RFC 3339),
 * datacontenttype "application/json", type, source, data (stolen; NULL gives
 * {}), and traceparent when not NULL. With tracing on (core/otel.h) and a
 * valid traceparent, a PRODUCER span "publish <type>" is recorded as the
 * traceparent's child and the envelope carries that span's context instead,
 * so consumers hang below the send. NULL only when out of memory. The
 * caller owns the result. Thread-safe. */
json_t *qn_event_new(const char *type, const char *source, json_t *data, const char *traceparent);
/* Checks an envelope: an object; specversion "1.0"; id, source and type
 * non-empty strings (id and source at most 256 bytes); type a valid topic
 * (words of [A-Za-z0-9_-] separated by dots, at most 255 bytes, last word not
 * "dead"); time, datacontenttype, subject strings when present; traceparent a
 * valid W3C traceparent when present; data, when present, an object.
 * 0 or QN_INVALID_ARGUMENT naming the field. */
int qn_event_validate(const json_t *event, qn_err *err);
/* Parses and validates an incoming envelope of len bytes (at most max_bytes;
 * 0 means 1 MiB). *out owned by the caller. QN_INVALID_ARGUMENT on anything
 * malformed; QN_RESOURCE_EXHAUSTED when out of memory. */
QN_MUST_CHECK int qn_event_parse(const char *buf, size_t len, size_t max_bytes, json_t **out, qn_err *err);

/* AMQP topic matching: does topic match pattern ('*' exactly one word, '#'
 * zero or more)? Also applies the dead-topic rule above. */
int qn_topic_match(const char *pattern, const char *topic);
/* 0 if s is a valid pattern (words, '*' or '#' separated by dots). */
int qn_topic_pattern_valid(const char *s);

#endif
