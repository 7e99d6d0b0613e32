/*
 * jobs.c - the HTTP API of quern-train and its jobs table.
 *
 * POST /v1/jobs validates the request strictly, stores the job as "queued"
 * with this trainer as its origin, and appends quern.train.requested to the
 * outbox in the same transaction: the request reaches the bus even if the
 * process dies right after answering. Whichever trainer accepts it from the
 * bus runs it (queue.c); this one keeps its copy current from the status
 * events, so GET here shows live progress wherever the job runs.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "core/trace.h"
#include "ml/train.h"
#include "train/train.h"

#define MAX_DATASET_VERSION 1000000000LL

static const char *const modes[] = {"challenger", "always", "never", NULL};
static const char *const states[] = {"queued",    "running", "evaluating", "registering",
                                     "succeeded", "failed",  "cancelled",  NULL};

static int one_of(const char *s, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (strcmp(s, list[i]) == 0)
            return 1;
    return 0;
}

static int terminal(const char *state)
{
    return strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0 ||
           strcmp(state, "cancelled") == 0;
}

/* promote_policy: {alias, metric, margin, mode}; absent fields take defaults. */
static int parse_policy(const json_t *in, json_t **out, qn_err *err)
{
    static const char *const allowed[] = {"alias", "metric", "margin", "mode", NULL};
    const char *alias = "production", *metric = NULL, *mode = "challenger";
    double margin = 0;
    if (in) {
        if (!json_is_object(in))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "promote_policy must be an object");
        if (qn_json_only(in, allowed, err) < 0)
            return qn_err_wrap(err, "promote_policy");
        if (qn_json_str(in, "alias", 0, QN_NAME_MAX, &alias, err) < 0 ||
            qn_json_str(in, "metric", 0, 128, &metric, err) < 0 ||
            qn_json_str(in, "mode", 0, 32, &mode, err) < 0)
            return qn_err_wrap(err, "promote_policy");
        if (qn_name_check("alias", alias, err) < 0)
            return qn_err_wrap(err, "promote_policy");
        if (strcmp(alias, "latest") == 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "promote_policy.alias: \"latest\" is reserved by the registry");
        if (!one_of(mode, modes))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "promote_policy.mode \"%s\" is not one of challenger, always, never", mode);
        if (metric && !metric[0])
            return qn_err_set(err, QN_INVALID_ARGUMENT, "promote_policy.metric must not be empty");
        json_t *m = json_object_get(in, "margin");
        if (m) {
            if (!json_is_number(m) || !isfinite(json_number_value(m)) || json_number_value(m) < 0 ||
                json_number_value(m) > 1e9)
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "promote_policy.margin must be a number >= 0");
            margin = json_number_value(m);
        }
    }
    *out = json_pack("{s:s, s:o, s:f, s:s}", "alias", alias, "metric",
                     metric ? json_string(metric) : json_null(), "margin", margin, "mode", mode);
    return *out ? 0 : qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
}

/* Moves a top-level field (params, split) into the spec, refusing a clash. */
static int merge_into_spec(json_t *spec, const json_t *body, const char *key, qn_err *err)
{
    json_t *v = json_object_get(body, key);
    if (!v)
        return 0;
    if (json_object_get(spec, key))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "%s is given both at the top level and in spec; give it once", key);
    json_object_set(spec, key, v);
    return 0;
}

int train_request_parse(const json_t *body, int from_bus, json_t **out, qn_err *err)
{
    static const char *const allowed[] = {"model",  "kind",           "dataset", "dataset_version",
                                          "spec",   "params",         "split",   "promote_policy",
                                          "reason", NULL};
    static const char *const allowed_bus[] = {"model",  "kind",           "dataset", "dataset_version",
                                              "spec",   "params",         "split",   "promote_policy",
                                              "reason", "job_id",         "origin",  NULL};
    const char *model = NULL, *kind = NULL, *dataset = NULL, *reason = NULL;
    int64_t dsv = 0;
    json_t *spec_in = NULL, *policy_in = NULL, *spec = NULL, *policy = NULL;
    *out = NULL;
    if (qn_json_only(body, from_bus ? allowed_bus : allowed, err) < 0 ||
        qn_json_str(body, "model", 1, QN_NAME_MAX, &model, err) < 0 ||
        qn_name_check("model", model, err) < 0 || qn_json_str(body, "kind", 1, 32, &kind, err) < 0 ||
        qn_json_str(body, "dataset", 1, QN_NAME_MAX, &dataset, err) < 0 ||
        qn_name_check("dataset", dataset, err) < 0 ||
        qn_json_int(body, "dataset_version", 0, 1, MAX_DATASET_VERSION, &dsv, err) < 0 ||
        qn_json_obj(body, "spec", 0, &spec_in, err) < 0 ||
        qn_json_str(body, "reason", 0, 1024, &reason, err) < 0)
        return err->code;
    if (!qml_train_kind_known(kind))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "kind \"%s\" is not one of als, logistic, linear, xgboost", kind);
    json_t *p = json_object_get(body, "params");
    if (p && !json_is_object(p))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "params must be an object");
    policy_in = json_object_get(body, "promote_policy");
    if (policy_in && json_is_null(policy_in))
        policy_in = NULL;
    if (parse_policy(policy_in, &policy, err) < 0)
        return err->code;
    spec = spec_in ? json_deep_copy(spec_in) : json_object();
    if (!spec) {
        json_decref(policy);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    /* The spec carries the kind and the primary metric too (ml/train.h):
     * take them from the job, refusing a contradiction. */
    const char *sk = json_string_value(json_object_get(spec, "kind"));
    const char *pm = json_string_value(json_object_get(policy, "metric"));
    const char *sm = json_string_value(json_object_get(spec, "metric"));
    if (sk && strcmp(sk, kind) != 0)
        qn_err_set(err, QN_INVALID_ARGUMENT, "spec.kind \"%s\" contradicts kind \"%s\"", sk, kind);
    else if (pm && sm && strcmp(pm, sm) != 0)
        qn_err_set(err, QN_INVALID_ARGUMENT,
                   "spec.metric \"%s\" contradicts promote_policy.metric \"%s\"", sm, pm);
    else
        qn_err_clear(err);
    json_object_set_new(spec, "kind", json_string(kind));
    if (pm)
        json_object_set_new(spec, "metric", json_string(pm));
    else if (sm)
        json_object_set_new(policy, "metric", json_string(sm));
    if (err->code < 0 || merge_into_spec(spec, body, "params", err) < 0 ||
        merge_into_spec(spec, body, "split", err) < 0 || train_spec_check(kind, spec, err) < 0) {
        json_decref(spec);
        json_decref(policy);
        return err->code;
    }
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:o}", "model", model, "kind", kind, "dataset", dataset,
                          "spec", spec, "promote_policy", policy);
    if (!o)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    if (dsv)
        json_object_set_new(o, "dataset_version", json_integer(dsv));
    if (reason)
        json_object_set_new(o, "reason", json_string(reason));
    *out = o;
    return 0;
}

/* ---- rows ---------------------------------------------------------------- */

#define JOB_COLS                                                                             \
    "id, model, kind, dataset, request, state, attempts, progress, result, error, origin, " \
    "runner, created_at, updated_at, started_at, finished_at, n"

static json_t *time_or_null(qn_stmt *st, int col)
{
    return qn_col_is_null(st, col) ? json_null() : qn_json_time(qn_col_int64(st, col));
}

static json_t *text_or_null(qn_stmt *st, int col)
{
    return qn_col_is_null(st, col) ? json_null() : json_string(qn_col_text(st, col));
}

static json_t *job_json(qn_stmt *st)
{
    json_t *request = qn_json_from_text(qn_col_text(st, 4));
    json_t *dsv = json_object_get(request, "dataset_version");
    json_t *j = json_pack(
        "{s:s, s:s, s:s, s:s, s:O, s:s, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id",
        qn_col_text(st, 0), "model", qn_col_text(st, 1), "kind", qn_col_text(st, 2), "dataset",
        qn_col_text(st, 3), "dataset_version", dsv ? dsv : json_null(), "state", qn_col_text(st, 5),
        "attempts", (json_int_t)qn_col_int64(st, 6), "progress", qn_json_from_text(qn_col_text(st, 7)),
        "result", qn_json_from_text(qn_col_text(st, 8)), "error", qn_json_from_text(qn_col_text(st, 9)),
        "origin", text_or_null(st, 10), "runner", text_or_null(st, 11), "created_at",
        qn_json_time(qn_col_int64(st, 12)), "updated_at", qn_json_time(qn_col_int64(st, 13)),
        "started_at", time_or_null(st, 14), "finished_at", time_or_null(st, 15), "request", request);
    return j;
}

json_t *train_job_load(trainer *t, const char *id, qn_err *err)
{
    json_t *out = NULL;
    qn_conn *c = qn_store_acquire(t->db, err);
    if (!c)
        return NULL;
    qn_stmt *st = qn_prepare(c, "SELECT " JOB_COLS " FROM jobs WHERE id = ?", err);
    if (st) {
        qn_bind_text(st, 1, id, -1);
        int rc = qn_step(st, err);
        if (rc == 1) {
            out = job_json(st);
            if (qn_step(st, err) < 0) {
                json_decref(out);
                out = NULL;
            }
        } else if (rc == 0) {
            qn_err_set(err, QN_NOT_FOUND, "job \"%s\" does not exist on this trainer", id);
        }
    }
    qn_store_release(t->db, c);
    return out;
}

static char *canon_or_null(const json_t *v)
{
    return v ? qn_json_canonical(v) : NULL;
}

int train_job_update(trainer *t, const char *id, const char *state, const json_t *progress,
                     const json_t *result, const json_t *error, const json_t *event, qn_err *err)
{
    char *pt = canon_or_null(progress), *rt = canon_or_null(result), *et = canon_or_null(error);
    int64_t now = qn_now_ms();
    int rc;
    qn_conn *c = qn_store_acquire(t->db, err);
    if (!c) {
        rc = err->code;
        goto out;
    }
    if ((rc = qn_tx_begin(c, QN_TX_WRITE, err)) < 0)
        goto out;
    qn_stmt *st = qn_prepare(c,
                             "UPDATE jobs SET state = COALESCE(?, state), progress = COALESCE(?, progress), "
                             "result = COALESCE(?, result), error = COALESCE(?, error), updated_at = ?, "
                             "seq = seq + 1, finished_at = CASE WHEN ? THEN ? ELSE finished_at END "
                             "WHERE id = ?",
                             err);
    if (!st) {
        rc = err->code;
        goto out;
    }
    state ? qn_bind_text(st, 1, state, -1) : qn_bind_null(st, 1);
    pt ? qn_bind_text(st, 2, pt, -1) : qn_bind_null(st, 2);
    rt ? qn_bind_text(st, 3, rt, -1) : qn_bind_null(st, 3);
    et ? qn_bind_text(st, 4, et, -1) : qn_bind_null(st, 4);
    qn_bind_int64(st, 5, now);
    qn_bind_int64(st, 6, state && terminal(state));
    qn_bind_int64(st, 7, now);
    qn_bind_text(st, 8, id, -1);
    if ((rc = qn_step(st, err)) < 0 || (event && (rc = qn_outbox_append(c, event, err)) < 0) ||
        (rc = qn_tx_commit(c, err)) < 0)
        goto out;
    if (event)
        qn_outbox_kick(t->outbox);
out:
    if (c)
        qn_store_release(t->db, c);
    free(pt);
    free(rt);
    free(et);
    return rc;
}

/* ---- handlers -------------------------------------------------------------- */

static int check_job_id(qn_req *req, qn_res *res, const char **id)
{
    qn_err err;
    *id = qn_req_param(req, "id");
    if (qn_name_check("job id", *id, &err) < 0) {
        qn_res_error(res, err.code, "%s", err.msg);
        return -1;
    }
    return 0;
}

int train_jobs_create(qn_req *req, qn_res *res, void *ud)
{
    trainer *t = ud;
    qn_err err;
    json_t *request = NULL, *event = NULL, *data = NULL;
    char *text = NULL;
    qn_conn *c = NULL;
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    if (train_request_parse(body, 0, &request, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);

    char id[QN_UUID_LEN + 1], tp[QN_TRACEPARENT_LEN + 1];
    qn_uuid4(id);
    qn_traceparent_format(qn_req_trace(req), tp);
    data = json_deep_copy(request);
    text = qn_json_canonical(request);
    if (!data || !text)
        goto oom;
    json_object_set_new(data, "job_id", json_string(id));
    json_object_set_new(data, "origin", json_string(t->instance));
    event = qn_event_new("quern.train.requested", TRAIN_SOURCE, data, tp);
    data = NULL;
    if (!event)
        goto oom;

    int64_t now = qn_now_ms();
    if (!(c = qn_store_acquire(t->db, &err)) || qn_tx_begin(c, QN_TX_WRITE, &err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c,
                             "INSERT INTO jobs (id, model, kind, dataset, request, state, origin, "
                             "created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
                             &err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, id, -1);
    qn_bind_text(st, 2, json_string_value(json_object_get(request, "model")), -1);
    qn_bind_text(st, 3, json_string_value(json_object_get(request, "kind")), -1);
    qn_bind_text(st, 4, json_string_value(json_object_get(request, "dataset")), -1);
    qn_bind_text(st, 5, text, -1);
    qn_bind_text(st, 6, t->instance, -1);
    qn_bind_int64(st, 7, now);
    qn_bind_int64(st, 8, now);
    if (qn_step(st, &err) < 0 || qn_outbox_append(c, event, &err) < 0 || qn_tx_commit(c, &err) < 0)
        goto fail;
    qn_store_release(t->db, c);
    c = NULL;
    qn_outbox_kick(t->outbox);
    qn_log_info(qn_req_trace_id(req), "job queued", "{s:s, s:s, s:s, s:s}", "job", id, "model",
                json_string_value(json_object_get(request, "model")), "kind",
                json_string_value(json_object_get(request, "kind")), "dataset",
                json_string_value(json_object_get(request, "dataset")));
    json_decref(event);
    json_decref(request);
    free(text);
    json_t *job = train_job_load(t, id, &err);
    if (!job)
        return train_fail(req, res, &err);
    qn_res_header(res, "Location", qn_arena_printf(qn_req_arena(req), "/v1/jobs/%s", id));
    return qn_res_json(res, 202, job);
oom:
    qn_err_set(&err, QN_RESOURCE_EXHAUSTED, "out of memory");
fail:
    if (c)
        qn_store_release(t->db, c);
    json_decref(data);
    json_decref(event);
    json_decref(request);
    free(text);
    return train_fail(req, res, &err);
}

int train_jobs_get(qn_req *req, qn_res *res, void *ud)
{
    trainer *t = ud;
    const char *id;
    qn_err err;
    if (check_job_id(req, res, &id) < 0)
        return 0;
    json_t *job = train_job_load(t, id, &err);
    return job ? qn_res_json(res, 200, job) : train_fail(req, res, &err);
}

int train_jobs_list(qn_req *req, qn_res *res, void *ud)
{
    trainer *t = ud;
    qn_err err;
    qn_page pg;
    char after[QN_PAGE_KEY_MAX];
    int64_t before = 0;
    const char *state = qn_req_query(req, "state"), *model = qn_req_query(req, "model");
    if (qn_page_begin(&pg, "jobs", qn_req_query(req, "limit"), 50, 1000, qn_req_query(req, "page_token"),
                      after, &err) < 0 ||
        (after[0] && qn_uint_parse("page_token", after, INT64_MAX / 2, &before, &err) < 0)) {
        qn_page_free(&pg);
        return qn_res_error(res, err.code, "%s", err.msg);
    }
    if (state && !one_of(state, states)) {
        qn_page_free(&pg);
        return qn_res_error(res, QN_INVALID_ARGUMENT,
                            "state \"%s\" is not one of queued, running, evaluating, registering, "
                            "succeeded, failed, cancelled",
                            state);
    }
    if (model && qn_name_check("model", model, &err) < 0) {
        qn_page_free(&pg);
        return qn_res_error(res, err.code, "%s", err.msg);
    }
    qn_conn *c = qn_store_acquire(t->db, &err);
    if (!c)
        goto fail;
    qn_stmt *st = qn_prepare(c,
                             "SELECT " JOB_COLS " FROM jobs WHERE (? = 0 OR n < ?) "
                             "AND (CAST(? AS TEXT) IS NULL OR state = ?) "
                             "AND (CAST(? AS TEXT) IS NULL OR model = ?) ORDER BY n DESC LIMIT ?",
                             &err);
    if (!st)
        goto fail;
    qn_bind_int64(st, 1, before);
    qn_bind_int64(st, 2, before);
    state ? qn_bind_text(st, 3, state, -1) : qn_bind_null(st, 3);
    state ? qn_bind_text(st, 4, state, -1) : qn_bind_null(st, 4);
    model ? qn_bind_text(st, 5, model, -1) : qn_bind_null(st, 5);
    model ? qn_bind_text(st, 6, model, -1) : qn_bind_null(st, 6);
    qn_bind_int64(st, 7, pg.limit + 1);
    int rc;
    while ((rc = qn_step(st, &err)) == 1 && !qn_page_full(&pg))
        qn_page_add_int(&pg, job_json(st), qn_col_int64(st, 16));
    if (rc < 0)
        goto fail;
    qn_store_release(t->db, c);
    return qn_res_json(res, 200, qn_page_finish(&pg, "jobs"));
fail:
    qn_page_free(&pg);
    if (c)
        qn_store_release(t->db, c);
    return train_fail(req, res, &err);
}

/* Cancels a job queued here and not yet started: state and the finished
 * event in one transaction. 1 when it was cancelled, 0 when it was no longer
 * queued (a worker took it meanwhile). */
int train_job_cancel_queued(trainer *t, const char *id, qn_err *err)
{
    json_t *job = train_job_load(t, id, err);
    if (!job)
        return err->code;
    int rc = 0;
    if (strcmp(json_string_value(json_object_get(job, "state")), "queued") != 0)
        goto out;
    json_t *error = json_pack("{s:s, s:s}", "code", "cancelled", "message", "cancelled before it started");
    json_t *data = json_pack("{s:s, s:O, s:s, s:s, s:O, s:O, s:s}", "job_id", id, "model",
                             json_object_get(job, "model"), "outcome", "cancelled", "state", "cancelled",
                             "error", error, "origin", json_object_get(job, "origin"), "runner",
                             t->instance);
    json_t *ev = qn_event_new("quern.train.finished", TRAIN_SOURCE, data, NULL);
    qn_conn *c = qn_store_acquire(t->db, err);
    if (!c || !ev) {
        rc = c ? qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory") : err->code;
        goto done;
    }
    int64_t now = qn_now_ms();
    qn_stmt *st;
    if ((rc = qn_tx_begin(c, QN_TX_WRITE, err)) < 0 ||
        !(st = qn_prepare(c,
                          "UPDATE jobs SET state = 'cancelled', error = ?, updated_at = ?, finished_at = ?, "
                          "seq = seq + 1 WHERE id = ? AND state = 'queued'",
                          err))) {
        rc = err->code;
        goto done;
    }
    char *et = qn_json_canonical(error);
    qn_bind_text(st, 1, et, -1);
    qn_bind_int64(st, 2, now);
    qn_bind_int64(st, 3, now);
    qn_bind_text(st, 4, id, -1);
    rc = qn_step(st, err);
    free(et);
    if (rc < 0)
        goto done;
    if (qn_changes(c) == 0) {
        qn_tx_rollback(c);
        rc = 0;
        goto done;
    }
    if ((rc = qn_outbox_append(c, ev, err)) < 0 || (rc = qn_tx_commit(c, err)) < 0)
        goto done;
    qn_outbox_kick(t->outbox);
    rc = 1;
done:
    if (c)
        qn_store_release(t->db, c);
    json_decref(ev);
    json_decref(error);
out:
    json_decref(job);
    return rc;
}

int train_jobs_cancel(qn_req *req, qn_res *res, void *ud)
{
    trainer *t = ud;
    const char *id;
    qn_err err;
    if (check_job_id(req, res, &id) < 0)
        return 0;
    json_t *job = train_job_load(t, id, &err);
    if (!job)
        return train_fail(req, res, &err);
    const char *state = json_string_value(json_object_get(job, "state"));
    const char *runner = json_string_value(json_object_get(job, "runner"));
    if (terminal(state)) {
        int rc = qn_res_error(res, QN_FAILED_PRECONDITION, "job \"%s\" already %s; nothing to cancel",
                              id, state);
        json_decref(job);
        return rc;
    }
    int rc = 0;
    if (runner && strcmp(runner, t->instance) == 0) {
        /* Ours: stop it where it runs, or cancel it before a worker takes it. */
        for (int i = 0; i < 2 && rc == 0; i++) {
            if (train_queue_cancel_local(t, id))
                rc = 1;
            else if ((rc = train_job_cancel_queued(t, id, &err)) < 0)
                goto fail;
        }
    } else {
        /* Someone else runs it (or nobody has taken it yet): tell every
         * trainer; ours is cancelled now if it is still waiting for one. */
        json_t *data = json_pack("{s:s, s:s, s:O}", "job_id", id, "by", t->instance, "request",
                                 json_object_get(job, "request"));
        json_t *ev = qn_event_new("quern.train.cancel_requested", TRAIN_SOURCE, data, NULL);
        json_t *error = json_pack("{s:s, s:s}", "code", "cancelled", "message",
                                  "cancelled before a trainer took it");
        rc = train_job_update(t, id, runner ? NULL : "cancelled", NULL, NULL, runner ? NULL : error, ev,
                              &err);
        json_decref(ev);
        json_decref(error);
        if (rc < 0)
            goto fail;
    }
    json_decref(job);
    job = train_job_load(t, id, &err);
    if (!job)
        return train_fail(req, res, &err);
    json_object_set_new(job, "cancel_requested", json_true());
    return qn_res_json(res, 202, job);
fail:
    json_decref(job);
    return train_fail(req, res, &err);
}
