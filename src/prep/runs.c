/*
 * runs.c - pipeline runs: the resource, the durable queue and the workers.
 *
 * A run is a row of the runs table: queued -> running -> succeeded | skipped
 * | failed. Whatever queues it (POST, a trigger) inserts the row in its own
 * write transaction and kicks the workers. A worker claims the oldest queued
 * run whose pipeline has no run in progress (so runs of one pipeline never
 * overlap and keep their order), executes it (execute.c) outside any
 * transaction, and records the outcome together with its quern.dataset.ready
 * event in one transaction. A crash leaves the row "running": start queues
 * it again (up to PREP_MAX_ATTEMPTS starts), and execute.c recognises a
 * dataset version that the interrupted attempt already registered.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"
#include "core/log.h"
#include "core/otel.h"
#include "core/trace.h"
#include "core/validate.h"
#include "prep/prep.h"

static json_t *time_json(int64_t ms)
{
    char t[32];
    qn_time_rfc3339(ms, t);
    return json_string(t);
}

#define RUN_COLS                                                                                   \
    "id, pipeline, state, trigger, attempts, spec_digest, source_last_seq, dataset_version, "      \
    "manifest_digest, rows_in, rows_out, report, error, created_at, started_at, finished_at, seq"

static json_t *run_json(qn_stmt *st)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:o}", "run_id", qn_col_text(st, 0), "pipeline",
                          qn_col_text(st, 1), "state", qn_col_text(st, 2), "trigger", qn_col_text(st, 3),
                          "attempts", (json_int_t)qn_col_int64(st, 4), "created_at",
                          time_json(qn_col_int64(st, 13)));
    if (!qn_col_is_null(st, 5))
        json_object_set_new(o, "spec_digest", json_string(qn_col_text(st, 5)));
    if (!qn_col_is_null(st, 6))
        json_object_set_new(o, "source_last_seq", json_integer(qn_col_int64(st, 6)));
    if (!qn_col_is_null(st, 7))
        json_object_set_new(o, "dataset_version", json_integer(qn_col_int64(st, 7)));
    if (!qn_col_is_null(st, 8))
        json_object_set_new(o, "manifest_digest", json_string(qn_col_text(st, 8)));
    if (!qn_col_is_null(st, 9))
        json_object_set_new(o, "rows_in", json_integer(qn_col_int64(st, 9)));
    if (!qn_col_is_null(st, 10))
        json_object_set_new(o, "rows_out", json_integer(qn_col_int64(st, 10)));
    if (!qn_col_is_null(st, 11)) {
        json_t *rep = json_loads(qn_col_text(st, 11), 0, NULL);
        json_object_set_new(o, "report", rep ? rep : json_null());
    }
    if (!qn_col_is_null(st, 12))
        json_object_set_new(o, "error", json_string(qn_col_text(st, 12)));
    if (!qn_col_is_null(st, 14))
        json_object_set_new(o, "started_at", time_json(qn_col_int64(st, 14)));
    if (!qn_col_is_null(st, 15))
        json_object_set_new(o, "finished_at", time_json(qn_col_int64(st, 15)));
    return o;
}

/* ---- the queue ----------------------------------------------------------- */

int prep_enqueue(qn_conn *c, const char *pipeline, const char *trigger, int coalesce,
                 const qn_trace_ctx *trace, char *id_out, qn_err *err)
{
    id_out[0] = '\0';
    qn_stmt *st;
    int rc;
    if (coalesce) {
        if (!(st = qn_prepare(c, "SELECT 1 FROM runs WHERE pipeline = ? AND state = 'queued' LIMIT 1", err)))
            return err->code;
        qn_bind_text(st, 1, pipeline, -1);
        if ((rc = qn_step(st, err)) < 0)
            return rc;
        if (rc == 1)
            return (rc = qn_step(st, err)) < 0 ? rc : 0;
    }
    unsigned char raw[PREP_RUN_ID_HEX / 2];
    qn_random_bytes(raw, sizeof raw);
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(id_out + 2 * i, 3, "%02x", raw[i]);
    if (!(st = qn_prepare(c, "INSERT INTO runs (id, pipeline, state, trigger, created_at, traceparent) "
                             "VALUES (?, ?, 'queued', ?, ?, ?)",
                          err)))
        return err->code;
    qn_bind_text(st, 1, id_out, -1);
    qn_bind_text(st, 2, pipeline, -1);
    qn_bind_text(st, 3, trigger, -1);
    qn_bind_int64(st, 4, qn_now_ms());
    char tp[QN_TRACEPARENT_LEN + 1];
    if (trace) {
        qn_traceparent_format(trace, tp);
        qn_bind_text(st, 5, tp, -1);
    } else {
        qn_bind_null(st, 5);
    }
    return qn_step(st, err) < 0 ? err->code : 0;
}

void prep_kick(prep *p)
{
    pthread_mutex_lock(&p->mu);
    p->kicks++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
}

/* ---- handlers -------------------------------------------------------------- */

static int pipeline_exists(qn_conn *c, const char *name, qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "SELECT 1 FROM pipelines WHERE name = ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, name, -1);
    int rc = qn_step(st, err);
    if (rc == 1 && qn_step(st, err) < 0)
        return err->code;
    return rc;
}

int prep_runs_create(qn_req *req, qn_res *res, void *ud)
{
    prep *p = ud;
    qn_err err;
    const char *name = qn_req_param(req, "name");
    size_t blen = 0;
    char id[PREP_RUN_ID_HEX + 1];
    if (qn_name_check("pipeline", name, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    /* No options yet: an empty body or {} are both fine. */
    qn_req_body(req, &blen);
    if (blen > 0) {
        static const char *const none[] = {NULL};
        json_t *body = qn_req_json(req, res);
        if (!body)
            return 0;
        if (qn_json_only(body, none, &err) < 0)
            return qn_res_error(res, err.code, "%s", err.msg);
    }
    qn_conn *c = qn_store_acquire(p->db, &err);
    int rc;
    if (!c || qn_tx_begin(c, QN_TX_WRITE, &err) < 0 || (rc = pipeline_exists(c, name, &err)) < 0)
        goto fail;
    if (rc == 0) {
        qn_store_release(p->db, c);
        return qn_res_error(res, QN_NOT_FOUND, "pipeline \"%s\" does not exist", name);
    }
    if (prep_enqueue(c, name, "manual", 0, qn_req_trace(req), id, &err) < 0 || qn_tx_commit(c, &err) < 0)
        goto fail;
    qn_store_release(p->db, c);
    prep_kick(p);
    qn_log_info(qn_req_trace_id(req), "run queued", "{s:s, s:s, s:s}", "pipeline", name, "run_id", id,
                "trigger", "manual");
    char loc[256];
    snprintf(loc, sizeof loc, "/v1/pipelines/%s/runs/%s", name, id);
    qn_res_header(res, "Location", loc);
    return qn_res_json(res, 202, json_pack("{s:s, s:s, s:s, s:s}", "run_id", id, "pipeline", name, "state",
                                           "queued", "trigger", "manual"));
fail:
    if (c)
        qn_store_release(p->db, c);
    return prep_fail(req, res, &err);
}

int prep_runs_list(qn_req *req, qn_res *res, void *ud)
{
    prep *p = ud;
    qn_err err;
    int64_t limit, before = INT64_MAX;
    char tok[32];
    const char *name = qn_req_param(req, "name");
    if (qn_name_check("pipeline", name, &err) < 0 ||
        qn_limit_parse(qn_req_query(req, "limit"), 50, 1000, &limit, &err) < 0 ||
        qn_page_token_decode(qn_req_query(req, "page_token"), "runs", tok, sizeof tok, &err) < 0 ||
        (tok[0] && qn_uint_parse("page_token", tok, INT64_MAX, &before, &err) < 0))
        return qn_res_error(res, err.code, "%s", err.msg);
    json_t *list = json_array(), *out = NULL;
    int rc;
    qn_conn *c = qn_store_acquire(p->db, &err);
    if (!c || (rc = pipeline_exists(c, name, &err)) < 0)
        goto fail;
    if (rc == 0) {
        json_decref(list);
        qn_store_release(p->db, c);
        return qn_res_error(res, QN_NOT_FOUND, "pipeline \"%s\" does not exist", name);
    }
    qn_stmt *st = qn_prepare(c, "SELECT " RUN_COLS " FROM runs WHERE pipeline = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                             &err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, name, -1);
    qn_bind_int64(st, 2, before);
    qn_bind_int64(st, 3, limit + 1);
    int64_t last = 0;
    while ((rc = qn_step(st, &err)) == 1) {
        if ((int64_t)json_array_size(list) == limit) {
            char key[32];
            snprintf(key, sizeof key, "%lld", (long long)last);
            char *t = qn_page_token_encode("runs", key);
            out = json_pack("{s:o, s:s}", "runs", list, "next_page_token", t ? t : "");
            free(t);
            list = NULL;
            break; /* the statement is reset when c is released */
        }
        last = qn_col_int64(st, 16);
        json_array_append_new(list, run_json(st));
    }
    if (rc < 0)
        goto fail;
    if (!out)
        out = json_pack("{s:o}", "runs", list);
    qn_store_release(p->db, c);
    return qn_res_json(res, 200, out);
fail:
    json_decref(list);
    if (c)
        qn_store_release(p->db, c);
    return prep_fail(req, res, &err);
}

static int run_id_valid(const char *s)
{
    if (strlen(s) != PREP_RUN_ID_HEX)
        return 0;
    for (const char *q = s; *q; q++)
        if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f')))
            return 0;
    return 1;
}

int prep_runs_get(qn_req *req, qn_res *res, void *ud)
{
    prep *p = ud;
    qn_err err;
    const char *name = qn_req_param(req, "name"), *id = qn_req_param(req, "id");
    if (qn_name_check("pipeline", name, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    if (!run_id_valid(id))
        return qn_res_error(res, QN_INVALID_ARGUMENT, "run id must be %d lower-case hex characters",
                            PREP_RUN_ID_HEX);
    qn_conn *c = qn_store_acquire(p->db, &err);
    if (!c)
        return prep_fail(req, res, &err);
    qn_stmt *st = qn_prepare(c, "SELECT " RUN_COLS " FROM runs WHERE id = ? AND pipeline = ?", &err);
    int rc = st ? (qn_bind_text(st, 1, id, -1), qn_bind_text(st, 2, name, -1), qn_step(st, &err)) : err.code;
    json_t *out = rc == 1 ? run_json(st) : NULL;
    if (rc == 1 && qn_step(st, &err) < 0) {
        json_decref(out);
        out = NULL;
        rc = err.code;
    }
    qn_store_release(p->db, c);
    if (rc < 0)
        return prep_fail(req, res, &err);
    if (rc == 0)
        return qn_res_error(res, QN_NOT_FOUND, "pipeline \"%s\" has no run %s", name, id);
    return qn_res_json(res, 200, out);
}

/* ---- workers ----------------------------------------------------------------- */

typedef struct job {
    int64_t seq;
    char id[PREP_RUN_ID_HEX + 1];
    char pipeline[QN_NAME_MAX + 1];
    char digest[80];
    json_t *spec;
    int64_t prev_last_seq;
    int64_t prev_version;
    int attempts;
    char traceparent[QN_TRACEPARENT_LEN + 1]; /* "" when the run has no parent trace */
} job;

/* Claims the oldest runnable queued run: 1 and *j, 0 when there is none. */
static int claim(prep *p, job *j, qn_err *err)
{
    int rc;
    qn_conn *c = qn_store_acquire(p->db, err);
    if (!c)
        return err->code;
    if ((rc = qn_tx_begin(c, QN_TX_WRITE, err)) < 0)
        goto out;
    qn_stmt *st = qn_prepare(c,
                             "SELECT r.seq, r.id, r.pipeline, r.attempts, p.spec, p.spec_digest, r.traceparent FROM runs r "
                             "JOIN pipelines p ON p.name = r.pipeline WHERE r.state = 'queued' AND NOT EXISTS "
                             "(SELECT 1 FROM runs x WHERE x.pipeline = r.pipeline AND x.state = 'running') "
                             "ORDER BY r.seq LIMIT 1",
                             err);
    if (!st) {
        rc = err->code;
        goto out;
    }
    if ((rc = qn_step(st, err)) != 1)
        goto out;
    j->seq = qn_col_int64(st, 0);
    snprintf(j->id, sizeof j->id, "%s", qn_col_text(st, 1));
    snprintf(j->pipeline, sizeof j->pipeline, "%s", qn_col_text(st, 2));
    j->attempts = (int)qn_col_int64(st, 3) + 1;
    j->spec = json_loads(qn_col_text(st, 4), 0, NULL);
    snprintf(j->digest, sizeof j->digest, "%s", qn_col_text(st, 5));
    snprintf(j->traceparent, sizeof j->traceparent, "%s", qn_col_is_null(st, 6) ? "" : qn_col_text(st, 6));
    if ((rc = qn_step(st, err)) < 0)
        goto out;
    if (!j->spec) {
        rc = qn_err_set(err, QN_INTERNAL, "stored spec of pipeline %s does not parse", j->pipeline);
        goto out;
    }
    /* The snapshot this run would repeat if the source has nothing new. */
    j->prev_last_seq = -1;
    j->prev_version = 0;
    if (!(st = qn_prepare(c,
                          "SELECT source_last_seq, dataset_version FROM runs WHERE pipeline = ? AND "
                          "state = 'succeeded' AND spec_digest = ? ORDER BY seq DESC LIMIT 1",
                          err))) {
        rc = err->code;
        goto out;
    }
    qn_bind_text(st, 1, j->pipeline, -1);
    qn_bind_text(st, 2, j->digest, -1);
    if ((rc = qn_step(st, err)) < 0)
        goto out;
    if (rc == 1) {
        j->prev_last_seq = qn_col_int64(st, 0);
        j->prev_version = qn_col_int64(st, 1);
        if ((rc = qn_step(st, err)) < 0)
            goto out;
    }
    if (!(st = qn_prepare(c, "UPDATE runs SET state = 'running', attempts = ?, started_at = ?, spec_digest = ? "
                             "WHERE seq = ?",
                          err))) {
        rc = err->code;
        goto out;
    }
    qn_bind_int64(st, 1, j->attempts);
    qn_bind_int64(st, 2, qn_now_ms());
    qn_bind_text(st, 3, j->digest, -1);
    qn_bind_int64(st, 4, j->seq);
    if ((rc = qn_step(st, err)) < 0 || (rc = qn_tx_commit(c, err)) < 0)
        goto out;
    rc = 1;
out:
    if (rc != 1) {
        json_decref(j->spec);
        j->spec = NULL;
    }
    qn_store_release(p->db, c);
    return rc;
}

/* Records the outcome (and, for a snapshot, its event) in one transaction. */
static int finish(prep *p, const job *j, int rc, const prep_run_result *r, const qn_err *rerr,
                  const char *traceparent, qn_err *err)
{
    int64_t now = qn_now_ms();
    int requeue = rc == QN_CANCELLED;
    qn_conn *c = qn_store_acquire(p->db, err);
    int out;
    if (!c)
        return err->code;
    if ((out = qn_tx_begin(c, QN_TX_WRITE, err)) < 0)
        goto done;
    qn_stmt *st;
    if (requeue) {
        st = qn_prepare(c, "UPDATE runs SET state = 'queued', attempts = attempts - 1, started_at = NULL "
                           "WHERE seq = ?",
                        err);
        if (!st) {
            out = err->code;
            goto done;
        }
        qn_bind_int64(st, 1, j->seq);
    } else if (rc < 0) {
        st = qn_prepare(c, "UPDATE runs SET state = 'failed', error = ?, finished_at = ? WHERE seq = ?", err);
        if (!st) {
            out = err->code;
            goto done;
        }
        qn_bind_text(st, 1, rerr->msg, -1);
        qn_bind_int64(st, 2, now);
        qn_bind_int64(st, 3, j->seq);
    } else {
        char *report = r->report ? qn_json_canonical(r->report) : NULL;
        st = qn_prepare(c,
                        "UPDATE runs SET state = ?, source_last_seq = ?, dataset_version = ?, manifest_digest = ?, "
                        "rows_in = ?, rows_out = ?, report = ?, error = NULL, finished_at = ? WHERE seq = ?",
                        err);
        if (!st) {
            free(report);
            out = err->code;
            goto done;
        }
        qn_bind_text(st, 1, r->skipped ? "skipped" : "succeeded", -1);
        qn_bind_int64(st, 2, r->last_seq);
        if (r->version > 0)
            qn_bind_int64(st, 3, r->version);
        else
            qn_bind_null(st, 3);
        if (r->skipped) {
            qn_bind_null(st, 4);
            qn_bind_null(st, 5);
            qn_bind_null(st, 6);
        } else {
            qn_bind_text(st, 4, r->manifest_digest, -1);
            qn_bind_int64(st, 5, r->rows_in);
            qn_bind_int64(st, 6, r->rows_out);
        }
        if (report)
            qn_bind_text(st, 7, report, -1);
        else
            qn_bind_null(st, 7);
        qn_bind_int64(st, 8, now);
        qn_bind_int64(st, 9, j->seq);
        free(report);
    }
    if ((out = qn_step(st, err)) < 0)
        goto done;
    if (rc == 0 && !r->skipped) {
        json_t *data = json_pack("{s:s, s:I, s:s, s:I, s:s}", "dataset",
                                 json_string_value(json_object_get(j->spec, "output")), "version",
                                 (json_int_t)r->version, "manifest_digest", r->manifest_digest, "rows",
                                 (json_int_t)r->rows_out, "pipeline", j->pipeline);
        json_t *ev = qn_event_new("quern.dataset.ready", "quern-prep", data, traceparent);
        if (!ev) {
            out = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            goto done;
        }
        out = qn_outbox_append(c, ev, err);
        json_decref(ev);
        if (out < 0)
            goto done;
    }
    out = qn_tx_commit(c, err);
done:
    qn_store_release(p->db, c);
    if (out == 0 && rc == 0 && !r->skipped)
        qn_outbox_kick(p->outbox);
    return out;
}

static void run_one(prep *p, job *j)
{
    /* The run is a span of the trace that queued it (or a new trace). */
    qn_trace_ctx parent;
    int have = j->traceparent[0] && qn_traceparent_parse(j->traceparent, &parent) == 0;
    char name[QN_NAME_MAX + 16];
    snprintf(name, sizeof name, "prep run %s", j->pipeline);
    qn_span span;
    qn_span_start(&span, name, QN_SPAN_INTERNAL, have ? &parent : NULL);
    qn_span_attr_str(&span, "quern.pipeline", j->pipeline);
    qn_span_attr_str(&span, "quern.run_id", j->id);
    qn_span_attr_int(&span, "quern.attempt", j->attempts);
    const qn_trace_ctx trace = span.ctx;
    char tp[QN_TRACEPARENT_LEN + 1], tid[QN_TRACE_ID_HEX + 1];
    qn_traceparent_format(&trace, tp);
    qn_trace_id_hex(&trace, tid);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    qn_log_info(tid, "run started", "{s:s, s:s, s:i}", "pipeline", j->pipeline, "run_id", j->id, "attempt",
                j->attempts);

    prep_run_input in = {.run_id = j->id, .pipeline = j->pipeline, .spec = j->spec,
                         .spec_digest = j->digest, .prev_last_seq = j->prev_last_seq, .trace = &trace};
    prep_run_result r = {0};
    qn_err rerr = {0}, err;
    int rc = prep_execute(p, &in, &r, &rerr);
    if (rc == 0 && r.skipped)
        r.version = j->prev_version;
    int frc;
    /* The outcome must be recorded; a busy store gets a few more tries. */
    for (int tries = 0; (frc = finish(p, j, rc, &r, &rerr, tp, &err)) < 0 && tries < 5; tries++) {
        struct timespec nap = {0, 200 * 1000000};
        nanosleep(&nap, NULL);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (frc < 0)
        qn_log_error(tid, "cannot record the outcome of a run", "{s:s, s:s, s:s}", "pipeline", j->pipeline,
                     "run_id", j->id, "detail", err.msg);
    if (rc == QN_CANCELLED) {
        qn_log_info(tid, "run interrupted; queued again for the next start", "{s:s, s:s}", "pipeline",
                    j->pipeline, "run_id", j->id);
    } else {
        const char *outcome = rc < 0 ? "failed" : r.skipped ? "skipped" : "succeeded";
        const char *lv[] = {j->pipeline, outcome};
        qn_counter_add(p->runs_total, lv, 1);
        const char *pv[] = {j->pipeline};
        qn_histogram_observe(p->run_seconds, pv, secs);
        if (rc == 0 && !r.skipped) {
            const char *in_v[] = {j->pipeline, "in"}, *out_v[] = {j->pipeline, "out"},
                       *drop_v[] = {j->pipeline, "dropped"};
            qn_counter_add(p->rows_total, in_v, (double)r.rows_in);
            qn_counter_add(p->rows_total, out_v, (double)r.rows_out);
            qn_counter_add(p->rows_total, drop_v, (double)(r.rows_in - r.rows_out));
        }
        if (rc < 0)
            qn_log_warn(tid, "run failed", "{s:s, s:s, s:s, s:s, s:f}", "pipeline", j->pipeline, "run_id", j->id,
                        "code", qn_code_name(rc), "error", rerr.msg, "seconds", secs);
        else
            qn_log_info(tid, r.skipped ? "run skipped: nothing new since the last snapshot" : "run succeeded",
                        "{s:s, s:s, s:I, s:I, s:I, s:I, s:f}", "pipeline", j->pipeline, "run_id", j->id,
                        "dataset_version", (json_int_t)r.version, "source_last_seq", (json_int_t)r.last_seq,
                        "rows_in", (json_int_t)r.rows_in, "rows_out", (json_int_t)r.rows_out, "seconds", secs);
    }
    if (rc == 0) {
        qn_span_attr_int(&span, "quern.rows_in", r.rows_in);
        qn_span_attr_int(&span, "quern.rows_out", r.rows_out);
        qn_span_attr_int(&span, "quern.dataset_version", r.version);
        qn_span_attr_bool(&span, "quern.skipped", r.skipped);
    } else if (rc != QN_CANCELLED) {
        qn_span_error(&span, rerr.msg);
    }
    qn_span_end(&span);
    json_decref(r.report);
}

static void *worker(void *arg)
{
    prep *p = arg;
    while (!atomic_load(&p->stopping)) {
        pthread_mutex_lock(&p->mu);
        uint64_t seen = p->kicks;
        pthread_mutex_unlock(&p->mu);
        job j = {0};
        qn_err err;
        int rc = claim(p, &j, &err);
        if (rc == 1) {
            run_one(p, &j);
            json_decref(j.spec);
            continue;
        }
        if (rc < 0)
            qn_log_warn(NULL, "cannot claim a run", "{s:s}", "detail", err.msg);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_mutex_lock(&p->mu);
        while (p->kicks == seen && !atomic_load(&p->stopping))
            if (pthread_cond_timedwait(&p->wake, &p->mu, &until) == ETIMEDOUT)
                break;
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

/* Runs queued, for the gauge (read at each scrape). */
static void count_queued(qn_metrics *m, void *ud)
{
    (void)m;
    prep *p = ud;
    qn_err err;
    qn_conn *c = qn_store_acquire(p->db, &err);
    if (!c)
        return;
    qn_stmt *st = qn_prepare(c, "SELECT COUNT(*) FROM runs WHERE state = 'queued'", &err);
    if (st && qn_step(st, &err) == 1) {
        qn_gauge_set(p->queued, NULL, (double)qn_col_int64(st, 0));
        if (qn_step(st, &err) < 0) /* the gauge is set; the next refresh tries again */
            qn_log_debug(NULL, "queued-runs count did not finish", "{s:s}", "detail", err.msg);
    }
    qn_store_release(p->db, c);
}

/* Runs a crash left "running" go back to the queue, or fail after too many starts. */
static int recover(prep *p, qn_err *err)
{
    qn_conn *c = qn_store_acquire(p->db, err);
    int rc;
    if (!c)
        return err->code;
    if ((rc = qn_tx_begin(c, QN_TX_WRITE, err)) < 0)
        goto out;
    qn_stmt *st = qn_prepare(c, "UPDATE runs SET state = 'failed', finished_at = ?, error = ? "
                                "WHERE state = 'running' AND attempts >= ?",
                             err);
    if (!st) {
        rc = err->code;
        goto out;
    }
    qn_bind_int64(st, 1, qn_now_ms());
    qn_bind_text(st, 2, "the run was interrupted by a stop or crash on each of its attempts", -1);
    qn_bind_int64(st, 3, PREP_MAX_ATTEMPTS);
    if ((rc = qn_step(st, err)) < 0)
        goto out;
    int64_t failed = qn_changes(c);
    if (!(st = qn_prepare(c, "UPDATE runs SET state = 'queued', started_at = NULL WHERE state = 'running'", err))) {
        rc = err->code;
        goto out;
    }
    if ((rc = qn_step(st, err)) < 0)
        goto out;
    int64_t requeued = qn_changes(c);
    rc = qn_tx_commit(c, err);
    if (rc == 0 && (failed || requeued))
        qn_log_warn(NULL, "runs interrupted by the last stop", "{s:I, s:I}", "requeued", (json_int_t)requeued,
                    "failed", (json_int_t)failed);
out:
    qn_store_release(p->db, c);
    return rc;
}

int prep_workers_start(prep *p, qn_err *err)
{
    if (recover(p, err) < 0)
        return err->code;
    qn_metrics_on_render(p->metrics, count_queued, p);
    p->workers = calloc((size_t)p->nworkers, sizeof *p->workers);
    if (!p->workers)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    for (int i = 0; i < p->nworkers; i++) {
        if (pthread_create(&p->workers[i], NULL, worker, p) != 0)
            return qn_err_set(err, QN_INTERNAL, "cannot start worker thread %d", i);
        p->nstarted++;
    }
    return 0;
}

void prep_workers_stop(prep *p)
{
    atomic_store(&p->stopping, 1);
    prep_kick(p);
    for (int i = 0; i < p->nstarted; i++)
        pthread_join(p->workers[i], NULL);
    p->nstarted = 0;
    free(p->workers);
    p->workers = NULL;
}
