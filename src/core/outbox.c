/*
 * outbox.c - drains a service's outbox table to the bus (see outbox.h).
 *
 * One thread per outbox: it wakes on a kick or every poll interval, reads up
 * to BATCH unpublished rows in seq order, publishes them as one batch (durable
 * on return), then marks them published. A crash between the publish and the
 * mark republishes the batch at the next start: delivery is at least once,
 * and consumers dedupe by event id, as DESIGN.md section 3 requires.
 */
#include "core/outbox.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"
#include "core/log.h"
#include "core/validate.h"

#define BATCH 512
#define POLL_MS 500
#define RETENTION_MS (24LL * 3600 * 1000)
#define BACKOFF_MAX_MS 5000

struct qn_outbox {
    qn_store *db;
    qn_bus *bus;
    char *service;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int kicked, stopping, running;
    int64_t published; /* rows marked by this process, for flush progress */
    qn_metric *m_published, *m_pending, *m_failures;
};

int qn_outbox_append(qn_conn *c, const json_t *event, qn_err *err)
{
    if (qn_event_validate(event, err) < 0)
        return err->code;
    char *body = qn_json_canonical(event);
    if (!body)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    int rc = QN_INTERNAL;
    qn_stmt *st = qn_prepare(c, "INSERT INTO outbox (id, type, body, created_at) VALUES (?, ?, ?, ?)", err);
    if (st) {
        qn_bind_text(st, 1, json_string_value(json_object_get(event, "id")), -1);
        qn_bind_text(st, 2, json_string_value(json_object_get(event, "type")), -1);
        qn_bind_text(st, 3, body, -1);
        qn_bind_int64(st, 4, qn_now_ms());
        rc = qn_step(st, err);
    }
    free(body);
    return rc < 0 ? rc : 0;
}

int64_t qn_outbox_pending(qn_outbox *ob)
{
    qn_err err;
    int64_t n = -1;
    qn_conn *c = qn_store_acquire(ob->db, &err);
    if (!c)
        return -1;
    qn_stmt *st = qn_prepare(c, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL", &err);
    if (st && qn_step(st, &err) == 1) {
        n = qn_col_int64(st, 0);
        if (qn_step(st, &err) < 0) /* finishing the read failed: no trustworthy count */
            n = -1;
    }
    qn_store_release(ob->db, c);
    return n;
}

/* Publishes one batch. Returns the rows published (0: nothing pending), or
 * a negative code. */
static int drain_once(qn_outbox *ob, qn_err *err)
{
    json_t *events[BATCH];
    int64_t seqs[BATCH];
    size_t n = 0;
    int rc = 0;
    qn_conn *c = qn_store_acquire(ob->db, err);
    if (!c)
        return err->code;
    qn_stmt *st = qn_prepare(c, "SELECT seq, body FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT ?", err);
    if (!st) {
        rc = err->code;
        goto out;
    }
    qn_bind_int64(st, 1, BATCH);
    while (n < BATCH && (rc = qn_step(st, err)) == 1) {
        json_t *ev = json_loads(qn_col_text(st, 1), 0, NULL);
        if (!ev) { /* cannot happen for rows we wrote; skip it rather than wedge */
            qn_log_error(NULL, "outbox row is not JSON; skipped", "{s:I}", "seq", (json_int_t)qn_col_int64(st, 0));
            ev = qn_event_new("quern.outbox.corrupt", ob->service, NULL, NULL);
        }
        seqs[n] = qn_col_int64(st, 0);
        events[n++] = ev;
    }
    if (rc < 0 || n == 0)
        goto out;
    if ((rc = qn_bus_publish_batch(ob->bus, events, n, err)) < 0)
        goto out;
    if ((rc = qn_tx_begin(c, QN_TX_WRITE, err)) < 0)
        goto out;
    int64_t now = qn_now_ms();
    for (size_t i = 0; i < n; i++) {
        st = qn_prepare(c, "UPDATE outbox SET published_at = ? WHERE seq = ?", err);
        if (!st) {
            rc = err->code;
            break;
        }
        qn_bind_int64(st, 1, now);
        qn_bind_int64(st, 2, seqs[i]);
        if ((rc = qn_step(st, err)) < 0)
            break;
    }
    if (rc < 0 || (rc = qn_tx_commit(c, err)) < 0) {
        qn_tx_rollback(c);
        goto out;
    }
    rc = (int)n;
out:
    for (size_t i = 0; i < n; i++)
        json_decref(events[i]);
    qn_store_release(ob->db, c);
    return rc;
}

static void sweep(qn_outbox *ob)
{
    qn_err err;
    qn_conn *c = qn_store_acquire(ob->db, &err);
    if (!c)
        return;
    qn_stmt *st = qn_prepare(c, "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < ?", &err);
    if (st) {
        qn_bind_int64(st, 1, qn_now_ms() - RETENTION_MS);
        st = qn_step(st, &err) < 0 ? NULL : st;
    }
    if (!st) /* harmless: the next sweep retries, published rows only take room */
        qn_log_warn(NULL, "outbox sweep failed", "{s:s}", "detail", err.msg);
    qn_store_release(ob->db, c);
}

static void wait_ms(qn_outbox *ob, long long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&ob->mu);
    while (!ob->kicked && !ob->stopping)
        if (pthread_cond_timedwait(&ob->cv, &ob->mu, &ts) != 0)
            break;
    ob->kicked = 0;
    pthread_mutex_unlock(&ob->mu);
}

static void *run(void *arg)
{
    qn_outbox *ob = arg;
    long long backoff = 0;
    int64_t last_sweep = 0;
    for (;;) {
        pthread_mutex_lock(&ob->mu);
        int stop = ob->stopping;
        pthread_mutex_unlock(&ob->mu);
        if (stop)
            break;
        qn_err err;
        int n = ob->bus ? drain_once(ob, &err) : 0;
        if (n < 0) {
            if (ob->m_failures)
                qn_counter_add(ob->m_failures, NULL, 1);
            backoff = backoff ? backoff * 2 : 100;
            if (backoff > BACKOFF_MAX_MS)
                backoff = BACKOFF_MAX_MS;
            qn_log_warn(NULL, "outbox publish failed; will retry", "{s:s, s:s, s:I}", "code",
                        qn_code_name(err.code), "detail", err.msg, "retry_ms", (json_int_t)backoff);
            wait_ms(ob, backoff);
            continue;
        }
        backoff = 0;
        if (n > 0) {
            if (ob->m_published)
                qn_counter_add(ob->m_published, NULL, n);
            pthread_mutex_lock(&ob->mu);
            ob->published += n;
            pthread_cond_broadcast(&ob->cv);
            pthread_mutex_unlock(&ob->mu);
            continue; /* more may be pending */
        }
        if (qn_now_ms() - last_sweep > 3600 * 1000) {
            sweep(ob);
            last_sweep = qn_now_ms();
        }
        wait_ms(ob, POLL_MS);
    }
    return NULL;
}

static void render_pending(qn_metrics *m, void *ud)
{
    qn_outbox *ob = ud;
    int64_t n = qn_outbox_pending(ob);
    if (n >= 0)
        qn_gauge_set(ob->m_pending, NULL, (double)n);
}

qn_outbox *qn_outbox_start(qn_store *db, qn_bus *bus, const char *service, qn_metrics *metrics,
                           qn_err *err)
{
    qn_outbox *ob = calloc(1, sizeof *ob);
    if (!ob || !(ob->service = strdup(service))) {
        free(ob);
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    ob->db = db;
    ob->bus = bus;
    pthread_mutex_init(&ob->mu, NULL);
    pthread_cond_init(&ob->cv, NULL);
    /* No service label here: a service's registry carries it as a constant. */
    static const char *const *labels = NULL;
    qn_metrics *m = metrics;
    if (m) {
        ob->m_published = qn_metrics_counter(m, "quern_outbox_published_total",
                                             "Events moved from the outbox to the bus.", labels);
        ob->m_failures = qn_metrics_counter(m, "quern_outbox_publish_failures_total",
                                            "Failed attempts to publish outbox events.", labels);
        ob->m_pending = qn_metrics_gauge(m, "quern_outbox_pending",
                                         "Events committed but not yet published to the bus.", labels);
        qn_metrics_on_render(m, render_pending, ob);
    }
    if (pthread_create(&ob->thread, NULL, run, ob) != 0) {
        free(ob->service);
        free(ob);
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "cannot start the outbox thread");
        return NULL;
    }
    ob->running = 1;
    return ob;
}

void qn_outbox_kick(qn_outbox *ob)
{
    if (!ob)
        return;
    pthread_mutex_lock(&ob->mu);
    ob->kicked = 1;
    pthread_cond_broadcast(&ob->cv);
    pthread_mutex_unlock(&ob->mu);
}

int qn_outbox_flush(qn_outbox *ob, long long timeout_ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int64_t pending = qn_outbox_pending(ob);
        if (pending == 0)
            return 0;
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long long spent = (t.tv_sec - t0.tv_sec) * 1000LL + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (spent >= timeout_ms || !ob->bus)
            return QN_DEADLINE_EXCEEDED;
        qn_outbox_kick(ob);
        struct timespec nap = {0, 10 * 1000000};
        nanosleep(&nap, NULL);
    }
}

void qn_outbox_stop(qn_outbox *ob)
{
    if (!ob)
        return;
    pthread_mutex_lock(&ob->mu);
    ob->stopping = 1;
    pthread_cond_broadcast(&ob->cv);
    pthread_mutex_unlock(&ob->mu);
    if (ob->running)
        pthread_join(ob->thread, NULL);
    pthread_mutex_destroy(&ob->mu);
    pthread_cond_destroy(&ob->cv);
    free(ob->service);
    free(ob);
}

int qn_outbox_list(qn_store *db, qn_req *req, qn_res *res)
{
    qn_err err;
    int64_t limit, after = 0;
    const char *a = qn_req_query(req, "after");
    if (qn_limit_parse(qn_req_query(req, "limit"), 100, 1000, &limit, &err) < 0 ||
        (a && strcmp(a, "0") != 0 && qn_uint_parse("after", a, INT64_MAX / 2, &after, &err) < 0))
        return qn_res_error(res, err.code, "%s", err.msg);
    json_t *list = json_array();
    qn_conn *c = qn_store_acquire(db, &err);
    qn_stmt *st = c ? qn_prepare(c, "SELECT seq, body, published_at FROM outbox WHERE seq > ? "
                                    "ORDER BY seq LIMIT ?", &err)
                    : NULL;
    int rc = st ? 0 : err.code;
    int64_t last = after;
    if (st) {
        qn_bind_int64(st, 1, after);
        qn_bind_int64(st, 2, limit);
        while ((rc = qn_step(st, &err)) == 1) {
            last = qn_col_int64(st, 0);
            json_array_append_new(list, json_pack("{s:I, s:o, s:b}", "seq", (json_int_t)last, "event",
                                                  qn_json_from_text(qn_col_text(st, 1)), "published",
                                                  !qn_col_is_null(st, 2)));
        }
    }
    if (c)
        qn_store_release(db, c);
    if (rc < 0) {
        json_decref(list);
        qn_log_error(qn_req_trace_id(req), "cannot read the outbox", "{s:s}", "detail", err.msg);
        return err.code == QN_UNAVAILABLE ? qn_res_error(res, QN_UNAVAILABLE, "busy; retry shortly")
                                          : qn_res_error(res, QN_INTERNAL, "internal error");
    }
    return qn_res_json(res, 200, json_pack("{s:o, s:I}", "events", list, "next_after", (json_int_t)last));
}
