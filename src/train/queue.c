/*
 * queue.c - how jobs move between trainers: workers, bus consumers and
 * status events.
 *
 * Each worker thread owns one consumer of the group "train" (competing
 * consumers across every trainer on the bus) and takes a request only when
 * it is idle, so no trainer hoards jobs it cannot start. Accepting a request
 * means recording the job in this trainer's store with this trainer as its
 * runner, then acking: from then on the job is durable here. A worker runs
 * its own queued jobs first (those re-queued after a crash or a stop), then
 * asks the bus for more. A job id already known here in a final state is
 * acked without running again, so a redelivered request never runs twice.
 *
 * Status events (quern.train.progress, quern.train.finished,
 * quern.train.cancel_requested) are consumed by every trainer in its own
 * group "train-status-<instance>", to keep its copies of jobs that another
 * trainer runs up to date and to forward cancellations to the runner.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"
#include "core/log.h"
#include "core/otel.h"
#include "train/train.h"

#define RECEIVE_MS 300

static const char *const requested_topics[] = {"quern.train.requested", NULL};
static const char *const status_topics[] = {"quern.train.progress", "quern.train.finished",
                                            "quern.train.cancel_requested", NULL};

void train_publish_now(trainer *t, const char *type, json_t *data)
{
    qn_err err;
    json_t *ev = qn_event_new(type, TRAIN_SOURCE, data, NULL);
    if (!ev || qn_bus_publish(t->bus, ev, &err) < 0)
        qn_log_warn(NULL, "status event not published", "{s:s, s:s}", "type", type, "detail",
                    ev ? err.msg : "out of memory");
    json_decref(ev);
}

/* ---- accepting requests ------------------------------------------------------ */

/* Records a request that cannot run (bad data) as a failed job, with its
 * quern.train.finished event, so the requester learns why. */
static int record_bad_request(trainer *t, const char *id, const json_t *data, const qn_err *why,
                              qn_err *err)
{
    const char *model = json_string_value(json_object_get(data, "model"));
    const char *kind = json_string_value(json_object_get(data, "kind"));
    const char *dataset = json_string_value(json_object_get(data, "dataset"));
    const char *origin = json_string_value(json_object_get(data, "origin"));
    json_t *error = json_pack("{s:s, s:s}", "code", qn_code_name(why->code), "message", why->msg);
    json_t *ev = qn_event_new("quern.train.finished", TRAIN_SOURCE,
                              json_pack("{s:s, s:s, s:s, s:s, s:O, s:s*, s:s}", "job_id", id, "model",
                                        model ? model : "", "outcome", "failed", "state", "failed",
                                        "error", error, "origin", origin, "runner", t->instance),
                              NULL);
    char *et = qn_json_canonical(error), *rt = qn_json_canonical(data);
    int64_t now = qn_now_ms();
    int rc;
    qn_stmt *st = NULL;
    qn_conn *c = qn_store_acquire(t->db, err);
    if (!c || !ev || !et || !rt) {
        rc = c ? qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory") : err->code;
        goto out;
    }
    if ((rc = qn_tx_begin(c, QN_TX_WRITE, err)) < 0 ||
        !(st = qn_prepare(c,
                          "INSERT INTO jobs (id, model, kind, dataset, request, state, error, origin, runner, "
                          "created_at, updated_at, finished_at) VALUES (?, ?, ?, ?, ?, 'failed', ?, ?, ?, ?, "
                          "?, ?) ON CONFLICT (id) DO NOTHING",
                          err))) {
        rc = err->code;
        goto out;
    }
    qn_bind_text(st, 1, id, -1);
    qn_bind_text(st, 2, model ? model : "", -1);
    qn_bind_text(st, 3, kind ? kind : "", -1);
    qn_bind_text(st, 4, dataset ? dataset : "", -1);
    qn_bind_text(st, 5, rt, -1);
    qn_bind_text(st, 6, et, -1);
    origin ? qn_bind_text(st, 7, origin, -1) : qn_bind_null(st, 7);
    qn_bind_text(st, 8, t->instance, -1);
    qn_bind_int64(st, 9, now);
    qn_bind_int64(st, 10, now);
    qn_bind_int64(st, 11, now);
    if ((rc = qn_step(st, err)) < 0)
        goto out;
    if (qn_changes(c) > 0 && (rc = qn_outbox_append(c, ev, err)) < 0)
        goto out;
    if ((rc = qn_tx_commit(c, err)) < 0)
        goto out;
    qn_outbox_kick(t->outbox);
    qn_counter_add(t->jobs_total, (const char *[]){"failed"}, 1);
out:
    if (c)
        qn_store_release(t->db, c);
    json_decref(ev);
    json_decref(error);
    free(et);
    free(rt);
    return rc;
}

/* Takes a quern.train.requested message: the job becomes ours (queued, with
 * this trainer as runner) unless it is known here already. 0 to ack. */
static int accept_request(trainer *t, const qn_msg *msg, const char *tp, qn_err *err);

/* accept_request inside a CONSUMER span (parent: the event's traceparent),
 * whose context the job keeps: the run continues the requester's trace. */
static int accept_traced(trainer *t, const qn_msg *msg, qn_err *err)
{
    const char *etp = json_string_value(json_object_get(msg->event, "traceparent"));
    qn_trace_ctx parent;
    int have = etp && qn_traceparent_parse(etp, &parent) == 0;
    qn_span span;
    qn_span_start(&span, "process quern.train.requested", QN_SPAN_CONSUMER, have ? &parent : NULL);
    qn_span_attr_str(&span, "messaging.system", "quern");
    qn_span_attr_str(&span, "messaging.destination.name", msg->topic);
    qn_span_attr_str(&span, "messaging.message.id", msg->id);
    qn_span_attr_str(&span, "messaging.consumer.group.name", TRAIN_GROUP);
    char tp[QN_TRACEPARENT_LEN + 1];
    qn_traceparent_format(&span.ctx, tp);
    int rc = accept_request(t, msg, tp, err);
    if (rc < 0)
        qn_span_error(&span, err->msg);
    qn_span_end(&span);
    return rc;
}

static int accept_request(trainer *t, const qn_msg *msg, const char *tp, qn_err *err)
{
    const json_t *data = json_object_get(msg->event, "data");
    const char *id = json_string_value(json_object_get(data, "job_id"));
    if (!id)
        id = msg->id;
    qn_err why;
    if (qn_name_check("job_id", id, &why) < 0) {
        qn_log_warn(NULL, "request with a bad job id dropped", "{s:s, s:s}", "event", msg->id, "detail",
                    why.msg);
        return 0;
    }
    json_t *request = NULL;
    if (train_request_parse(data, 1, &request, &why) < 0) {
        qn_log_warn(NULL, "bad training request", "{s:s, s:s}", "job", id, "detail", why.msg);
        return record_bad_request(t, id, data, &why, err);
    }
    const char *origin = json_string_value(json_object_get(data, "origin"));
    char *text = qn_json_canonical(request);
    int64_t now = qn_now_ms();
    int rc;
    qn_stmt *st;
    qn_conn *c = qn_store_acquire(t->db, err);
    if (!c || !text) {
        rc = c ? qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory") : err->code;
        goto out;
    }
    if ((rc = qn_tx_begin(c, QN_TX_WRITE, err)) < 0 ||
        !(st = qn_prepare(c, "SELECT state, runner FROM jobs WHERE id = ?", err))) {
        rc = err->code;
        goto out;
    }
    qn_bind_text(st, 1, id, -1);
    if ((rc = qn_step(st, err)) < 0)
        goto out;
    if (rc == 1) {
        /* Known here: a request we posted ourselves is taken over; anything
         * else (finished, cancelled, ours already, another runner's) is a
         * duplicate delivery and is only acked. */
        int take = strcmp(qn_col_text(st, 0), "queued") == 0 && qn_col_is_null(st, 1);
        if ((rc = qn_step(st, err)) < 0)
            goto out;
        if (!take) {
            qn_log_info(NULL, "duplicate training request acked", "{s:s}", "job", id);
            rc = 0;
            goto out;
        }
        st = qn_prepare(c, "UPDATE jobs SET runner = ?, updated_at = ?, traceparent = ?, seq = seq + 1 WHERE id = ?",
                        err);
        if (!st) {
            rc = err->code;
            goto out;
        }
        qn_bind_text(st, 1, t->instance, -1);
        qn_bind_int64(st, 2, now);
        qn_bind_text(st, 3, tp, -1);
        qn_bind_text(st, 4, id, -1);
    } else {
        st = qn_prepare(c,
                        "INSERT INTO jobs (id, model, kind, dataset, request, state, origin, runner, "
                        "created_at, updated_at, traceparent) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                        err);
        if (!st) {
            rc = err->code;
            goto out;
        }
        qn_bind_text(st, 1, id, -1);
        qn_bind_text(st, 2, json_string_value(json_object_get(request, "model")), -1);
        qn_bind_text(st, 3, json_string_value(json_object_get(request, "kind")), -1);
        qn_bind_text(st, 4, json_string_value(json_object_get(request, "dataset")), -1);
        qn_bind_text(st, 5, text, -1);
        origin ? qn_bind_text(st, 6, origin, -1) : qn_bind_null(st, 6);
        qn_bind_text(st, 7, t->instance, -1);
        qn_bind_int64(st, 8, now);
        qn_bind_int64(st, 9, now);
        qn_bind_text(st, 10, tp, -1);
    }
    if ((rc = qn_step(st, err)) < 0 || (rc = qn_tx_commit(c, err)) < 0)
        goto out;
    qn_log_info(NULL, "job accepted", "{s:s, s:s*}", "job", id, "origin", origin);
out:
    if (c)
        qn_store_release(t->db, c);
    json_decref(request);
    free(text);
    return rc;
}

/* ---- running ----------------------------------------------------------------- */

static void job_clear(train_job *job)
{
    json_decref(job->request);
    free(job->origin);
    memset(job, 0, sizeof *job);
}

static json_t *finished_data(trainer *t, const train_job *job, const char *state, const char *outcome,
                             const json_t *result, const json_t *error)
{
    json_t *d = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s*, s:i}", "job_id", job->id, "model", job->model,
                          "outcome", outcome, "state", state, "runner", t->instance, "origin",
                          job->origin, "attempts", job->attempts);
    if (result) {
        json_object_set(d, "result", (json_t *)result);
        static const char *const copy[] = {"version", "metrics", "champion_version", "scores", "decision", NULL};
        for (size_t i = 0; copy[i]; i++) {
            json_t *v = json_object_get(result, copy[i]);
            if (v)
                json_object_set(d, copy[i], v);
        }
    }
    if (error)
        json_object_set(d, "error", (json_t *)error);
    return d;
}

/* Claims the oldest job queued here: state running, one more attempt. 1 and
 * *job when there was one, 0 when none, negative on a store failure. A job
 * past --max-attempts is failed instead (it may be what kills the process). */
static int claim_local(trainer *t, train_slot *slot, train_job *job, qn_err *err)
{
    int rc;
    qn_stmt *st;
    qn_conn *c = qn_store_acquire(t->db, err);
    if (!c)
        return err->code;
    if ((rc = qn_tx_begin(c, QN_TX_WRITE, err)) < 0 ||
        !(st = qn_prepare(c,
                          "SELECT id, request, origin, attempts, traceparent FROM jobs WHERE runner = ? AND state = "
                          "'queued' ORDER BY n LIMIT 1",
                          err))) {
        rc = err->code;
        goto out;
    }
    qn_bind_text(st, 1, t->instance, -1);
    if ((rc = qn_step(st, err)) <= 0)
        goto out;
    snprintf(job->id, sizeof job->id, "%s", qn_col_text(st, 0));
    job->request = qn_json_from_text(qn_col_text(st, 1));
    job->origin = qn_col_is_null(st, 2) ? NULL : strdup(qn_col_text(st, 2));
    job->attempts = (int)qn_col_int64(st, 3) + 1;
    snprintf(job->traceparent, sizeof job->traceparent, "%s", qn_col_is_null(st, 4) ? "" : qn_col_text(st, 4));
    if ((rc = qn_step(st, err)) < 0) {
        job_clear(job);
        goto out;
    }
    job->model = json_string_value(json_object_get(job->request, "model"));
    job->kind = json_string_value(json_object_get(job->request, "kind"));
    job->dataset = json_string_value(json_object_get(job->request, "dataset"));
    job->dataset_version = json_integer_value(json_object_get(job->request, "dataset_version"));
    job->spec = json_object_get(job->request, "spec");
    job->policy = json_object_get(job->request, "promote_policy");
    int64_t now = qn_now_ms();
    if (!job->model || !job->kind || !job->dataset || !json_is_object(job->spec) ||
        !json_is_object(job->policy)) {
        /* Only a damaged row can get here: fail it rather than loop on it. */
        job->attempts = t->max_attempts + 1;
    }
    if (job->attempts > t->max_attempts) {
        char msg[160];
        snprintf(msg, sizeof msg, "gave up after %d attempts (the trainer stopped during each)",
                 job->attempts - 1);
        json_t *error = json_pack("{s:s, s:s}", "code", "aborted", "message", msg);
        json_t *ev = qn_event_new("quern.train.finished", TRAIN_SOURCE,
                                  finished_data(t, job, "failed", "failed", NULL, error), NULL);
        char *et = qn_json_canonical(error);
        st = qn_prepare(c, "UPDATE jobs SET state = 'failed', error = ?, updated_at = ?, finished_at = ?, "
                           "seq = seq + 1 WHERE id = ?", err);
        if (st) {
            qn_bind_text(st, 1, et, -1);
            qn_bind_int64(st, 2, now);
            qn_bind_int64(st, 3, now);
            qn_bind_text(st, 4, job->id, -1);
        }
        rc = !st ? err->code : qn_step(st, err);
        if (rc >= 0 && ev)
            rc = qn_outbox_append(c, ev, err);
        if (rc >= 0)
            rc = qn_tx_commit(c, err);
        qn_log_warn(NULL, "job failed for good", "{s:s, s:s}", "job", job->id, "detail", msg);
        qn_counter_add(t->jobs_total, (const char *[]){"failed"}, 1);
        qn_outbox_kick(t->outbox);
        free(et);
        json_decref(ev);
        json_decref(error);
        job_clear(job);
        rc = rc < 0 ? rc : 2;  /* claimed nothing runnable, but look again */
        goto out;
    }
    st = qn_prepare(c, "UPDATE jobs SET state = 'running', attempts = ?, progress = '{}', started_at = ?, "
                       "updated_at = ?, seq = seq + 1 WHERE id = ?", err);
    if (!st) {
        rc = err->code;
        job_clear(job);
        goto out;
    }
    qn_bind_int64(st, 1, job->attempts);
    qn_bind_int64(st, 2, now);
    qn_bind_int64(st, 3, now);
    qn_bind_text(st, 4, job->id, -1);
    /* The slot is filled before the claim commits: a DELETE that finds the
     * job no longer queued then always finds it in a slot. A stop that began
     * before would not have seen it: it is flagged here. */
    pthread_mutex_lock(&t->mu);
    snprintf(slot->job_id, sizeof slot->job_id, "%s", job->id);
    atomic_store(&slot->cancel, atomic_load(&t->stopping) ? TRAIN_SHUTDOWN : TRAIN_GO);
    pthread_mutex_unlock(&t->mu);
    if ((rc = qn_step(st, err)) < 0 || (rc = qn_tx_commit(c, err)) < 0) {
        pthread_mutex_lock(&t->mu);
        slot->job_id[0] = 0;
        pthread_mutex_unlock(&t->mu);
        job_clear(job);
        goto out;
    }
    rc = 1;
out:
    qn_store_release(t->db, c);
    return rc;
}

/* Runs a job; while it fails because the registry is unavailable (down, or
 * its circuit open here) it waits with backoff (0.5 s doubling to 15 s) and
 * runs again, for up to --upstream-wait. A job is safe to run again: it
 * registers at most one version (train_run finds the one it registered). A
 * stop or a cancel ends the wait (QN_CANCELLED). */
static int run_waiting(trainer *t, train_slot *slot, train_job *job, json_t **result, qn_err *err)
{
    long long give_up = qn_now_ms() + t->upstream_wait_ms;
    for (int n = 0;; n++) {
        int rc = train_run(t, job, result, err);
        if ((rc != QN_UNAVAILABLE && rc != QN_DEADLINE_EXCEEDED) || atomic_load(&slot->cancel) != TRAIN_GO)
            return rc;
        long long pause = 500LL << (n < 5 ? n : 5);
        if (pause > 15000)
            pause = 15000;
        if (qn_now_ms() + pause > give_up)
            return rc;
        qn_counter_add(t->upstream_waits, NULL, 1);
        qn_log_warn(NULL, "the registry is unavailable; the job waits and runs again", "{s:s, s:I, s:s}", "job",
                    job->id, "retry_in_ms", (json_int_t)pause, "error", err->msg);
        for (long long end = qn_now_ms() + pause; qn_now_ms() < end;) {
            if (atomic_load(&slot->cancel) != TRAIN_GO)
                return qn_err_set(err, QN_CANCELLED, "cancelled while waiting for the registry");
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
}

/* Runs a claimed job and records how it ended. */
static void run_job(trainer *t, train_slot *slot, train_job *job)
{
    job->slot = slot; /* filled by claim_local */
    /* The job's span continues the trace of its request; each stage of the
     * run is a span below it (run.c), and so is its quern.train.finished. */
    qn_trace_ctx parent;
    int have = job->traceparent[0] && qn_traceparent_parse(job->traceparent, &parent) == 0;
    qn_span span;
    qn_span_start(&span, "train job", QN_SPAN_INTERNAL, have ? &parent : NULL);
    qn_span_attr_str(&span, "quern.job_id", job->id);
    qn_span_attr_str(&span, "quern.model", job->model);
    qn_span_attr_str(&span, "quern.kind", job->kind);
    qn_span_attr_str(&span, "quern.dataset", job->dataset);
    qn_span_attr_int(&span, "quern.attempt", job->attempts);
    job->trace = span.ctx;
    char tp[QN_TRACEPARENT_LEN + 1];
    qn_traceparent_format(&span.ctx, tp);
    qn_gauge_add(t->jobs_running, NULL, 1);
    if (job->origin && strcmp(job->origin, t->instance) != 0)
        train_publish_now(t, "quern.train.progress",
                          json_pack("{s:s, s:s, s:s, s:i, s:{}}", "job_id", job->id, "state", "running",
                                    "runner", t->instance, "attempts", job->attempts, "progress"));
    qn_log_info(NULL, "job started", "{s:s, s:s, s:s, s:s, s:i}", "job", job->id, "model", job->model,
                "kind", job->kind, "dataset", job->dataset, "attempt", job->attempts);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    qn_err err;
    qn_err_clear(&err);
    json_t *result = NULL;
    int rc = run_waiting(t, slot, job, &result, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    int why = atomic_load(&slot->cancel);

    pthread_mutex_lock(&t->mu);
    slot->job_id[0] = 0;
    pthread_mutex_unlock(&t->mu);
    qn_gauge_add(t->jobs_running, NULL, -1);

    qn_err uerr;
    if (rc == QN_CANCELLED && why == TRAIN_SHUTDOWN) {
        /* Interrupted by a stop: back to the queue, this run not counted. */
        qn_conn *c = qn_store_acquire(t->db, &uerr);
        qn_stmt *st = c ? qn_prepare(c, "UPDATE jobs SET state = 'queued', attempts = attempts - 1, "
                                        "updated_at = ?, seq = seq + 1 WHERE id = ?", &uerr)
                        : NULL;
        if (st) {
            qn_bind_int64(st, 1, qn_now_ms());
            qn_bind_text(st, 2, job->id, -1);
            st = qn_step(st, &uerr) < 0 ? NULL : st;
        }
        if (c)
            qn_store_release(t->db, c);
        if (!st) /* still 'running' here: the next start's recovery requeues it */
            qn_log_warn(NULL, "cannot requeue the interrupted job", "{s:s, s:s}", "job", job->id, "detail",
                        uerr.msg);
        qn_log_info(NULL, "job interrupted by the stop; it runs again at the next start", "{s:s}", "job",
                    job->id);
        qn_span_error(&span, "interrupted by the stop");
        qn_span_end(&span);
        job_clear(job);
        return;
    }
    const char *state, *outcome;
    json_t *error = NULL;
    if (rc == 0) {
        state = "succeeded";
        outcome = json_string_value(json_object_get(result, "outcome"));
        if (!outcome)
            outcome = "kept_champion";
    } else if (rc == QN_CANCELLED) {
        state = outcome = "cancelled";
        error = json_pack("{s:s, s:s}", "code", "cancelled", "message", "cancelled while it ran");
    } else {
        state = outcome = "failed";
        error = json_pack("{s:s, s:s}", "code", qn_code_name(err.code), "message", err.msg);
    }
    json_t *ev = qn_event_new("quern.train.finished", TRAIN_SOURCE,
                              finished_data(t, job, state, outcome, result, error), tp);
    if (train_job_update(t, job->id, state, NULL, result, error, ev, &uerr) < 0)
        qn_log_error(NULL, "cannot record the end of a job", "{s:s, s:s}", "job", job->id, "detail",
                     uerr.msg);
    qn_counter_add(t->jobs_total, (const char *[]){outcome}, 1);
    qn_histogram_observe(t->job_seconds, NULL, secs);
    if (rc == 0)
        qn_log_info(NULL, "job succeeded", "{s:s, s:s, s:O, s:f}", "job", job->id, "outcome", outcome,
                    "version", json_object_get(result, "version"), "seconds", secs);
    else
        qn_log_warn(NULL, "job ended", "{s:s, s:s, s:s, s:f}", "job", job->id, "state", state, "detail",
                    rc == QN_CANCELLED ? "cancelled" : err.msg, "seconds", secs);
    qn_span_attr_str(&span, "quern.outcome", outcome);
    if (rc < 0 && rc != QN_CANCELLED)
        qn_span_error(&span, err.msg);
    qn_span_end(&span);
    json_decref(ev);
    json_decref(error);
    json_decref(result);
    job_clear(job);
}

typedef struct worker_arg {
    trainer *t;
    train_slot *slot;
    qn_consumer *cons;
} worker_arg;

static void *worker(void *arg)
{
    worker_arg *wa = arg;
    trainer *t = wa->t;
    train_slot *slot = wa->slot;
    qn_consumer *cons = wa->cons;
    free(wa);
    qn_err err;
    while (!atomic_load(&t->stopping)) {
        train_job job;
        memset(&job, 0, sizeof job);
        int rc = claim_local(t, slot, &job, &err);
        if (rc == 1) {
            run_job(t, slot, &job);
            continue;
        }
        if (rc == 2)
            continue;
        if (rc < 0)
            qn_log_warn(NULL, "cannot read the local queue", "{s:s}", "detail", err.msg);
        qn_msg *msg = NULL;
        rc = qn_consumer_receive(cons, RECEIVE_MS, &msg, &err);
        if (rc < 0) {
            qn_log_warn(NULL, "bus receive failed", "{s:s}", "detail", err.msg);
            struct timespec nap = {0, 300 * 1000000};
            nanosleep(&nap, NULL);
            continue;
        }
        if (rc == 0)
            continue;
        if (accept_traced(t, msg, &err) < 0) {
            qn_log_warn(NULL, "cannot accept a training request; it will be redelivered",
                        "{s:s, s:s}", "event", msg->id, "detail", err.msg);
            if (qn_consumer_nack(cons, msg, &err) < 0)
                qn_log_warn(NULL, "nack failed; redelivered when the lease ends", "{s:s, s:s}", "event",
                            msg->id, "detail", err.msg);
        } else if (qn_consumer_ack(cons, msg, &err) < 0) {
            qn_log_warn(NULL, "ack failed", "{s:s, s:s}", "event", msg->id, "detail", err.msg);
        }
        qn_msg_free(msg);
    }
    qn_consumer_close(cons);
    return NULL;
}

int train_queue_cancel_local(trainer *t, const char *id)
{
    int found = 0;
    pthread_mutex_lock(&t->mu);
    for (int i = 0; i < t->workers; i++)
        if (strcmp(t->slots[i].job_id, id) == 0) {
            atomic_store(&t->slots[i].cancel, TRAIN_CANCEL);
            found = 1;
        }
    pthread_mutex_unlock(&t->mu);
    return found;
}

/* ---- status events ---------------------------------------------------------- */

static int on_status(const qn_msg *msg, void *ud, qn_err *err)
{
    trainer *t = ud;
    const json_t *data = json_object_get(msg->event, "data");
    const char *id = json_string_value(json_object_get(data, "job_id"));
    const char *runner = json_string_value(json_object_get(data, "runner"));
    if (!id)
        return 0;
    const char *type = json_string_value(json_object_get(msg->event, "type"));
    int64_t now = qn_now_ms();
    int rc = 0;
    qn_conn *c = NULL;
    qn_stmt *st = NULL;
    char *a = NULL, *b = NULL, *e = NULL;

    if (strcmp(type, "quern.train.cancel_requested") == 0) {
        const char *by = json_string_value(json_object_get(data, "by"));
        if (by && strcmp(by, t->instance) == 0)
            return 0;
        if (train_queue_cancel_local(t, id))
            return 0;
        json_t *job = train_job_load(t, id, err);
        if (job) {
            const char *r = json_string_value(json_object_get(job, "runner"));
            const char *s = json_string_value(json_object_get(job, "state"));
            int mine = r && strcmp(r, t->instance) == 0;
            json_decref(job);
            if (mine && strcmp(s, "queued") == 0)
                return train_job_cancel_queued(t, id, err) < 0 ? err->code : 0;
            return 0;
        }
        if (err->code != QN_NOT_FOUND)
            return err->code;
        /* Not seen yet: keep a tombstone so the request, if it comes later, is skipped. */
        json_t *request = json_object_get(data, "request");
        json_t *error = json_pack("{s:s, s:s}", "code", "cancelled", "message",
                                  "cancelled before a trainer took it");
        a = request ? qn_json_canonical(request) : strdup("{}");
        e = qn_json_canonical(error);
        json_decref(error);
        if (!(c = qn_store_acquire(t->db, err)) ||
            !(st = qn_prepare(c,
                              "INSERT INTO jobs (id, model, kind, dataset, request, state, error, created_at, "
                              "updated_at, finished_at) VALUES (?, ?, ?, ?, ?, 'cancelled', ?, ?, ?, ?) "
                              "ON CONFLICT (id) DO NOTHING",
                              err))) {
            rc = err->code;
            goto out;
        }
        const char *model = json_string_value(json_object_get(request, "model"));
        const char *kind = json_string_value(json_object_get(request, "kind"));
        const char *dataset = json_string_value(json_object_get(request, "dataset"));
        qn_bind_text(st, 1, id, -1);
        qn_bind_text(st, 2, model ? model : "", -1);
        qn_bind_text(st, 3, kind ? kind : "", -1);
        qn_bind_text(st, 4, dataset ? dataset : "", -1);
        qn_bind_text(st, 5, a, -1);
        qn_bind_text(st, 6, e, -1);
        qn_bind_int64(st, 7, now);
        qn_bind_int64(st, 8, now);
        qn_bind_int64(st, 9, now);
        rc = qn_step(st, err);
        goto out;
    }

    /* progress / finished: only copies of jobs another trainer runs change. */
    if (!runner || strcmp(runner, t->instance) == 0)
        return 0;
    if (!(c = qn_store_acquire(t->db, err))) {
        rc = err->code;
        goto out;
    }
    if (strcmp(type, "quern.train.progress") == 0) {
        const char *state = json_string_value(json_object_get(data, "state"));
        json_t *p = json_object_get(data, "progress");
        a = p ? qn_json_canonical(p) : strdup("{}");
        if (!state || !(st = qn_prepare(c,
                                        "UPDATE jobs SET state = ?, progress = ?, runner = ?, attempts = ?, "
                                        "started_at = COALESCE(started_at, ?), updated_at = ?, seq = seq + 1 "
                                        "WHERE id = ? AND state NOT IN ('succeeded', 'failed', 'cancelled')",
                                        err))) {
            rc = state ? err->code : 0;
            goto out;
        }
        qn_bind_text(st, 1, state, -1);
        qn_bind_text(st, 2, a, -1);
        qn_bind_text(st, 3, runner, -1);
        qn_bind_int64(st, 4, json_integer_value(json_object_get(data, "attempts")));
        qn_bind_int64(st, 5, now);
        qn_bind_int64(st, 6, now);
        qn_bind_text(st, 7, id, -1);
        rc = qn_step(st, err);
    } else if (strcmp(type, "quern.train.finished") == 0) {
        /* The runner's word is final, even over a cancel recorded here. */
        const char *state = json_string_value(json_object_get(data, "state"));
        json_t *r = json_object_get(data, "result"), *er = json_object_get(data, "error");
        b = r ? qn_json_canonical(r) : NULL;
        e = er ? qn_json_canonical(er) : NULL;
        if (!state || !(st = qn_prepare(c,
                                        "UPDATE jobs SET state = ?, result = COALESCE(?, result), "
                                        "error = COALESCE(?, error), runner = ?, attempts = MAX(attempts, ?), "
                                        "updated_at = ?, finished_at = ?, seq = seq + 1 WHERE id = ?",
                                        err))) {
            rc = state ? err->code : 0;
            goto out;
        }
        qn_bind_text(st, 1, state, -1);
        b ? qn_bind_text(st, 2, b, -1) : qn_bind_null(st, 2);
        e ? qn_bind_text(st, 3, e, -1) : qn_bind_null(st, 3);
        qn_bind_text(st, 4, runner, -1);
        qn_bind_int64(st, 5, json_integer_value(json_object_get(data, "attempts")));
        qn_bind_int64(st, 6, now);
        qn_bind_int64(st, 7, now);
        qn_bind_text(st, 8, id, -1);
        rc = qn_step(st, err);
    }
out:
    if (c)
        qn_store_release(t->db, c);
    free(a);
    free(b);
    free(e);
    return rc < 0 ? rc : 0;
}

/* ---- start / stop ------------------------------------------------------------ */

/* Jobs this trainer was running when it died go back to its queue. */
static int requeue_interrupted(trainer *t, qn_err *err)
{
    qn_conn *c = qn_store_acquire(t->db, err);
    if (!c)
        return err->code;
    qn_stmt *st = qn_prepare(c,
                             "UPDATE jobs SET state = 'queued', updated_at = ?, seq = seq + 1 WHERE runner = ? "
                             "AND state IN ('running', 'evaluating', 'registering')",
                             err);
    int rc = st ? 0 : err->code;
    if (st) {
        qn_bind_int64(st, 1, qn_now_ms());
        qn_bind_text(st, 2, t->instance, -1);
        rc = qn_step(st, err);
        if (rc == 0 && qn_changes(c) > 0)
            qn_log_warn(NULL, "jobs interrupted by the last stop are queued again", "{s:I}", "jobs",
                        (json_int_t)qn_changes(c));
    }
    qn_store_release(t->db, c);
    return rc;
}

int train_queue_start(trainer *t, qn_err *err)
{
    int rc;
    if ((rc = requeue_interrupted(t, err)) < 0)
        return rc;
    pthread_mutex_init(&t->mu, NULL);
    char group[64];
    snprintf(group, sizeof group, "train-status-%s", t->instance);
    if (!(t->status = qn_subscriber_start(t->bus, group, status_topics, NULL, on_status, t, err)))
        return err->code;
    t->slots = calloc((size_t)t->workers, sizeof *t->slots);
    t->threads = calloc((size_t)t->workers, sizeof *t->threads);
    if (!t->slots || !t->threads) {
        free(t->slots);
        free(t->threads);
        t->slots = NULL;
        t->threads = NULL;
        qn_subscriber_stop(t->status);
        t->status = NULL;
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (int i = 0; i < t->workers; i++) {
        /* Subscribed before the server listens: the group exists before the
         * first request is published, or that request would never reach it. */
        worker_arg *wa = malloc(sizeof *wa);
        qn_consumer *cons = wa ? qn_bus_subscribe(t->bus, TRAIN_GROUP, requested_topics, err) : NULL;
        if (wa) {
            wa->t = t;
            wa->slot = &t->slots[i];
            wa->cons = cons;
        }
        if (!cons || pthread_create(&t->threads[i], NULL, worker, wa) != 0) {
            if (!wa)
                qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            else if (cons)
                qn_err_set(err, QN_RESOURCE_EXHAUSTED, "cannot start worker %d", i);
            rc = err->code;
            qn_consumer_close(cons);
            free(wa);
            t->workers = i;
            train_queue_stop(t);
            return rc;
        }
    }
    return 0;
}

void train_queue_stop(trainer *t)
{
    if (!t->slots)
        return;
    atomic_store(&t->stopping, 1);
    pthread_mutex_lock(&t->mu);
    for (int i = 0; i < t->workers; i++)
        if (t->slots[i].job_id[0])
            atomic_store(&t->slots[i].cancel, TRAIN_SHUTDOWN);
    pthread_mutex_unlock(&t->mu);
    for (int i = 0; i < t->workers; i++)
        pthread_join(t->threads[i], NULL);
    qn_subscriber_stop(t->status);
    t->status = NULL;
    free(t->slots);
    free(t->threads);
    t->slots = NULL;
    t->threads = NULL;
    pthread_mutex_destroy(&t->mu);
}
