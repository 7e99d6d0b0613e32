/* subscriber.c - the consume/dedupe/handle/ack loop (see subscriber.h). */
#include "core/subscriber.h"

#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"
#include "core/log.h"
#include "core/otel.h"

#define RECEIVE_MS 200

struct qn_subscriber {
    qn_consumer *consumer;
    qn_store *db;
    qn_event_handler fn;
    void *ud;
    char *group;
    pthread_t thread;
    atomic_int stopping;
};

int qn_inbox_seen(qn_conn *c, const char *id, qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "SELECT 1 FROM inbox WHERE id = ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, id, -1);
    int rc = qn_step(st, err);
    if (rc == 1 && qn_step(st, err) < 0)
        return err->code;
    return rc;
}

int qn_inbox_mark(qn_conn *c, const char *id, qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "INSERT INTO inbox (id, received_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, id, -1);
    qn_bind_int64(st, 2, qn_now_ms());
    int rc = qn_step(st, err);
    return rc < 0 ? rc : 0;
}

/* The message being handled on this thread and its CONSUMER span's context. */
static _Thread_local const qn_msg *current_msg;
static _Thread_local qn_trace_ctx current_ctx;
/* 1 once qn_subscriber_tx committed (or found) current_msg's id in the
 * inbox: the loop's own mark after the handler would be a second write
 * transaction for nothing, so it is skipped. */
static _Thread_local int current_marked;

int qn_subscriber_tx(qn_store *db, const qn_msg *msg, qn_tx_body fn, void *arg, qn_err *err)
{
    qn_conn *c = qn_store_acquire(db, err);
    if (!c)
        return err->code;
    int rc = qn_tx_begin(c, QN_TX_WRITE, err);
    if (rc < 0)
        goto out;
    if ((rc = qn_inbox_seen(c, msg->id, err)) != 0) {
        if (rc == 1 && msg == current_msg)
            current_marked = 1;
        goto rollback; /* 1: handled already; negative: cannot tell */
    }
    if ((rc = fn(c, arg, err)) < 0 || (rc = qn_inbox_mark(c, msg->id, err)) < 0 ||
        (rc = qn_tx_commit(c, err)) < 0)
        goto rollback;
    if (msg == current_msg)
        current_marked = 1;
    goto out;
rollback:
    qn_tx_rollback(c);
out:
    qn_store_release(db, c);
    return rc;
}

/* Runs f(conn, id) on a pooled connection; returns its result. */
static int with_conn(qn_store *db, int (*f)(qn_conn *, const char *, qn_err *), const char *id,
                     qn_err *err)
{
    qn_conn *c = qn_store_acquire(db, err);
    if (!c)
        return err->code;
    int rc = f(c, id, err);
    qn_store_release(db, c);
    return rc;
}

const qn_trace_ctx *qn_subscriber_trace(const qn_msg *msg)
{
    return msg && msg == current_msg ? &current_ctx : NULL;
}

/* Runs the handler inside a CONSUMER span whose parent is the event's
 * traceparent (a new trace when it has none). */
static int handle(qn_subscriber *s, qn_msg *msg, const char *tp, qn_err *err)
{
    qn_trace_ctx parent;
    int have = tp && qn_traceparent_parse(tp, &parent) == 0;
    char name[300];
    snprintf(name, sizeof name, "process %s", msg->topic);
    qn_span span;
    qn_span_start(&span, name, QN_SPAN_CONSUMER, have ? &parent : NULL);
    qn_span_attr_str(&span, "messaging.system", "quern");
    qn_span_attr_str(&span, "messaging.destination.name", msg->topic);
    qn_span_attr_str(&span, "messaging.message.id", msg->id);
    qn_span_attr_str(&span, "messaging.consumer.group.name", s->group);
    qn_span_attr_int(&span, "messaging.delivery.attempt", msg->attempt);
    current_msg = msg;
    current_ctx = span.ctx;
    current_marked = 0;
    int rc = s->fn(msg, s->ud, err);
    current_msg = NULL;
    if (rc < 0)
        qn_span_error(&span, err->msg);
    qn_span_end(&span);
    return rc;
}

/* A failed ack is redelivered, and the inbox makes that harmless: say so. */
static void ack(qn_subscriber *s, qn_msg *msg)
{
    qn_err err;
    if (qn_consumer_ack(s->consumer, msg, &err) < 0)
        qn_log_warn(NULL, "cannot acknowledge an event; it will be redelivered and skipped as a duplicate",
                    "{s:s, s:s, s:s}", "group", s->group, "id", msg->id, "detail", err.msg);
}

static void *run(void *arg)
{
    qn_subscriber *s = arg;
    while (!atomic_load(&s->stopping)) {
        qn_msg *msg = NULL;
        qn_err err;
        int rc = qn_consumer_receive(s->consumer, RECEIVE_MS, &msg, &err);
        if (rc < 0) {
            qn_log_warn(NULL, "bus receive failed", "{s:s, s:s}", "group", s->group, "detail", err.msg);
            struct timespec nap = {0, 200 * 1000000};
            nanosleep(&nap, NULL);
            continue;
        }
        if (rc == 0)
            continue;
        const char *tp = json_string_value(json_object_get(msg->event, "traceparent"));
        char tid[33] = "";
        if (tp && strlen(tp) >= 35)
            memcpy(tid, tp + 3, 32);
        if (s->db && with_conn(s->db, qn_inbox_seen, msg->id, &err) == 1) {
            qn_log_debug(tid[0] ? tid : NULL, "duplicate event skipped", "{s:s, s:s}", "id", msg->id,
                         "type", msg->topic);
            ack(s, msg);
            qn_msg_free(msg);
            continue;
        }
        rc = handle(s, msg, tp, &err);
        if (rc < 0) {
            qn_log_warn(tid[0] ? tid : NULL, "event handler failed; it will be redelivered",
                        "{s:s, s:s, s:i, s:s}", "id", msg->id, "type", msg->topic, "attempt",
                        msg->attempt, "detail", err.msg);
            if (qn_consumer_nack(s->consumer, msg, &err) < 0)
                qn_log_warn(NULL, "cannot give an event back; it is redelivered when its lease ends",
                            "{s:s, s:s}", "id", msg->id, "detail", err.msg);
        } else {
            /* already marked when the handler committed through qn_subscriber_tx */
            if (!current_marked && s->db && with_conn(s->db, qn_inbox_mark, msg->id, &err) < 0)
                qn_log_warn(NULL, "cannot record handled event", "{s:s, s:s}", "id", msg->id, "detail",
                            err.msg);
            ack(s, msg);
        }
        qn_msg_free(msg);
    }
    return NULL;
}

qn_subscriber *qn_subscriber_start(qn_bus *bus, const char *group, const char *const *patterns,
                                   qn_store *db, qn_event_handler fn, void *ud, qn_err *err)
{
    qn_subscriber *s = calloc(1, sizeof *s);
    if (!s || !(s->group = strdup(group))) {
        free(s);
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    s->db = db;
    s->fn = fn;
    s->ud = ud;
    s->consumer = qn_bus_subscribe(bus, group, patterns, err);
    if (!s->consumer) {
        free(s->group);
        free(s);
        return NULL;
    }
    if (pthread_create(&s->thread, NULL, run, s) != 0) {
        qn_consumer_close(s->consumer);
        free(s->group);
        free(s);
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "cannot start a consumer thread");
        return NULL;
    }
    return s;
}

void qn_subscriber_stop(qn_subscriber *s)
{
    if (!s)
        return;
    atomic_store(&s->stopping, 1);
    pthread_join(s->thread, NULL);
    qn_consumer_close(s->consumer);
    free(s->group);
    free(s);
}
