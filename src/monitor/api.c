/*
 * api.c - the HTTP API of quern-monitor and its Prometheus gauges.
 *
 *   GET    /v1/monitors                     every model seen, with its state
 *   GET    /v1/monitors/{model}             one model: settings, open windows,
 *                                           counts, live hit-rate, latest verdict
 *   PUT    /v1/monitors/{model}             per-model overrides (replaces them)
 *   DELETE /v1/monitors/{model}             back to the service defaults
 *   GET    /v1/monitors/{model}/report      the latest report with its feature
 *                                           distributions; ?history=N the N newest
 *                                           (without them)
 *   GET    /v1/monitors/{model}/reports/{id} one kept report, with distributions
 *   POST   /v1/monitors/{model}/close       closes the open windows now (drift,
 *                                           quality and estimation windows)
 *   GET    /v1/monitors/{model}/quality     label counts, open quality windows,
 *                                           live quality reports and CBPE estimates
 *
 * Overrides are validated strictly (unknown fields, out-of-range numbers and
 * unknown method names are 400 naming the field) and stored as canonical
 * JSON; mon_settings_load merges them over the defaults for every window
 * decision, so a PUT takes effect with the next event.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "core/validate.h"
#include "monitor/monitor.h"

#define MAX_WINDOW_ROWS 100000
#define MAX_WINDOW_SECONDS (7 * 86400)

int mon_fail(qn_req *req, qn_res *res, const qn_err *err)
{
    if (qn_code_is_client(err->code))
        return qn_res_error(res, err->code, "%s", err->msg);
    qn_log_error(qn_req_trace_id(req), "storage failure", "{s:s, s:s, s:s}", "route", qn_req_route(req),
                 "code", qn_code_name(err->code), "detail", err->msg);
    if (err->code == QN_UNAVAILABLE)
        return qn_res_error(res, QN_UNAVAILABLE, "the monitor is busy; retry shortly");
    return qn_res_error(res, QN_INTERNAL, "internal error");
}

/* Checks an overrides document; 0 or QN_INVALID_ARGUMENT naming the field.
 * When s is given, applies it over s. */
static int settings_apply(const json_t *o, mon_settings *s, qn_err *err)
{
    static const char *const allowed[] = {"window_rows", "window_seconds", "min_rows", "share", "methods", NULL};
    int64_t v;
    if (qn_json_only(o, allowed, err) < 0)
        return err->code;
    if (json_object_get(o, "window_rows")) {
        if (qn_json_int(o, "window_rows", 1, 1, MAX_WINDOW_ROWS, &v, err) < 0)
            return err->code;
        s->window_rows = v;
    }
    if (json_object_get(o, "window_seconds")) {
        if (qn_json_int(o, "window_seconds", 1, 1, MAX_WINDOW_SECONDS, &v, err) < 0)
            return err->code;
        s->window_seconds = v;
    }
    if (json_object_get(o, "min_rows")) {
        if (qn_json_int(o, "min_rows", 1, 1, MAX_WINDOW_ROWS, &v, err) < 0)
            return err->code;
        s->min_rows = v;
    }
    const json_t *share = json_object_get(o, "share");
    if (share) {
        double d = json_number_value(share);
        if (!json_is_number(share) || !(d > 0 && d <= 1))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "share must be a number in (0, 1]");
        s->share = d;
    }
    const json_t *methods = json_object_get(o, "methods");
    if (methods) {
        if (!json_is_object(methods))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "methods must be an object {column: {method, threshold}}");
        if (json_object_size(methods) > MON_MAX_OVERRIDES)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "methods: at most %d columns", MON_MAX_OVERRIDES);
        const char *col;
        json_t *spec;
        s->n_methods = 0;
        json_object_foreach((json_t *)methods, col, spec) {
            static const char *const keys[] = {"method", "threshold", NULL};
            const char *mname = "auto";
            if (qn_colname_check("methods: column", col, err) < 0)
                return err->code;
            if (!json_is_object(spec))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "methods.%s must be an object {method, threshold}", col);
            if (qn_json_only(spec, keys, err) < 0 || qn_json_str(spec, "method", 0, 32, &mname, err) < 0)
                return qn_err_wrap(err, "methods.%s", col);
            qml_drift_method meth;
            if (qml_drift_method_parse(mname, &meth) < 0)
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "methods.%s.method: unknown method %s (auto, ks, chisquare, ztest, "
                                  "wasserstein, jensenshannon, psi)", col, mname);
            double th = NAN;
            const json_t *t = json_object_get(spec, "threshold");
            if (t) {
                th = json_number_value(t);
                if (!json_is_number(t) || !(th > 0) || !isfinite(th))
                    return qn_err_set(err, QN_INVALID_ARGUMENT, "methods.%s.threshold must be a number > 0", col);
            }
            size_t k = s->n_methods++;
            snprintf(s->columns[k], sizeof s->columns[k], "%s", col);
            s->methods[k].column = s->columns[k];
            s->methods[k].method = meth;
            s->methods[k].threshold = th;
        }
    }
    return 0;
}

int mon_settings_load(monitor *m, qn_conn *c, const char *model, mon_settings *s, qn_err *err)
{
    s->window_rows = m->window_rows;
    s->window_seconds = m->window_seconds;
    s->min_rows = m->min_rows;
    s->share = 0.5;
    s->n_methods = 0;
    qn_stmt *st = qn_prepare(c, "SELECT config FROM configs WHERE model = ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, model, -1);
    int rc = qn_step(st, err);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        json_t *o = qn_json_from_text(qn_col_text(st, 0));
        if ((rc = qn_step(st, err)) < 0) {
            json_decref(o);
            return rc;
        }
        qn_err e;
        if (json_is_object(o) && settings_apply(o, s, &e) < 0)
            qn_log_warn(NULL, "stored settings no longer valid; defaults used", "{s:s, s:s}", "model", model,
                        "detail", e.msg);
        json_decref(o);
    }
    return 0;
}

static json_t *settings_json(const mon_settings *s)
{
    json_t *methods = json_object();
    for (size_t k = 0; k < s->n_methods; k++) {
        json_t *one = json_pack("{s:s}", "method", qml_drift_method_name(s->methods[k].method));
        if (!isnan(s->methods[k].threshold))
            json_object_set_new(one, "threshold", json_real(s->methods[k].threshold));
        json_object_set_new(methods, s->methods[k].column, one);
    }
    return json_pack("{s:I, s:I, s:I, s:f, s:o}", "window_rows", (json_int_t)s->window_rows, "window_seconds",
                     (json_int_t)s->window_seconds, "min_rows", (json_int_t)s->min_rows, "share", s->share,
                     "methods", methods);
}

/* ---- gauges ------------------------------------------------------------- */

void mon_gauges_from_report(monitor *m, const char *model, const json_t *report)
{
    const json_t *feats = json_object_get(report, "features");
    size_t i;
    json_t *f;
    json_array_foreach(feats, i, f) {
        const char *col = json_string_value(json_object_get(f, "column"));
        const char *meth = json_string_value(json_object_get(f, "method"));
        qml_drift_method mm;
        if (!col || !meth || qml_drift_method_parse(meth, &mm) < 0)
            continue;
        /* Evidently's drift score: the p-value of a test, the distance otherwise */
        const json_t *v = json_object_get(f, qml_drift_method_is_test(mm) ? "p_value" : "statistic");
        if (!json_is_number(v))
            continue;
        const char *l[] = {model, col, meth};
        qn_gauge_set(m->m_score, l, json_number_value(v));
    }
    const char *ml[] = {model};
    qn_gauge_set(m->m_detected, ml, json_is_true(json_object_get(report, "dataset_drift")) ? 1 : 0);
    const json_t *share = json_object_get(report, "share_drifted");
    if (json_is_number(share))
        qn_gauge_set(m->m_share, ml, json_number_value(share));
}

int mon_gauges_restore(monitor *m, qn_err *err)
{
    qn_conn *c = qn_store_acquire(m->db, err);
    if (!c)
        return err->code;
    int rc;
    qn_stmt *st = qn_prepare(c, "SELECT model, report FROM reports WHERE id IN (SELECT MAX(id) FROM reports GROUP BY model)", err);
    if (!st) {
        rc = err->code;
        goto out;
    }
    while ((rc = qn_step(st, err)) == 1) {
        json_t *r = qn_json_from_text(qn_col_text(st, 1));
        mon_gauges_from_report(m, qn_col_text(st, 0), r);
        json_decref(r);
    }
    if (rc < 0 || !(st = qn_prepare(c, "SELECT model, version, rows FROM windows", err)))
        goto out;
    while ((rc = qn_step(st, err)) == 1) {
        char v[24];
        snprintf(v, sizeof v, "%lld", (long long)qn_col_int64(st, 1));
        const char *l[] = {qn_col_text(st, 0), v};
        qn_gauge_set(m->m_window_rows, l, (double)qn_col_int64(st, 2));
    }
    if (rc < 0 || !(st = qn_prepare(c, "SELECT a.model, a.value, b.value FROM counters a JOIN counters b "
                                        "ON a.model = b.model AND a.name = 'hits' AND b.name = 'hit_joined' "
                                        "WHERE b.value > 0", err)))
        goto out;
    char k[24];
    snprintf(k, sizeof k, "%lld", (long long)m->hit_k);
    while ((rc = qn_step(st, err)) == 1) {
        const char *l[] = {qn_col_text(st, 0), k};
        qn_gauge_set(m->m_hit_rate, l, (double)qn_col_int64(st, 1) / (double)qn_col_int64(st, 2));
    }
out:
    qn_store_release(m->db, c);
    return rc < 0 ? rc : 0;
}

/* ---- handlers ----------------------------------------------------------- */

static int model_param(qn_req *req, qn_res *res, const char **model)
{
    qn_err err;
    *model = qn_req_param(req, "model");
    if (qn_name_check("model", *model, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg), -1;
    return 0;
}

/* One model's state; NULL with err on a storage failure. *known: any trace. */
static json_t *model_json(monitor *m, qn_conn *c, const char *model, int *known, qn_err *err)
{
    mon_settings s;
    json_t *out = NULL, *windows = json_array(), *counts = json_object(), *overrides = json_null();
    json_t *latest = json_null();
    int rc;
    *known = 0;
    if (mon_settings_load(m, c, model, &s, err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c, "SELECT config FROM configs WHERE model = ?", err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, model, -1);
    if ((rc = qn_step(st, err)) == 1) {
        json_decref(overrides);
        overrides = qn_json_from_text(qn_col_text(st, 0));
        *known = 1;
        if ((rc = qn_step(st, err)) < 0)
            goto fail;
    } else if (rc < 0)
        goto fail;
    if (!(st = qn_prepare(c, "SELECT version, rows, started_at FROM windows WHERE model = ? ORDER BY version", err)))
        goto fail;
    qn_bind_text(st, 1, model, -1);
    while ((rc = qn_step(st, err)) == 1) {
        *known = 1;
        json_array_append_new(windows, json_pack("{s:I, s:I, s:o}", "version", (json_int_t)qn_col_int64(st, 0), "rows",
                                                 (json_int_t)qn_col_int64(st, 1), "started_at",
                                                 qn_json_time(qn_col_int64(st, 2))));
    }
    if (rc < 0 || !(st = qn_prepare(c, "SELECT name, value FROM counters WHERE model = ?", err)))
        goto fail;
    qn_bind_text(st, 1, model, -1);
    while ((rc = qn_step(st, err)) == 1) {
        *known = 1;
        json_object_set_new(counts, qn_col_text(st, 0), json_integer(qn_col_int64(st, 1)));
    }
    if (rc < 0 || !(st = qn_prepare(c, "SELECT id, version, dataset_drift, created_at FROM reports WHERE model = ? "
                                       "ORDER BY id DESC LIMIT 1", err)))
        goto fail;
    qn_bind_text(st, 1, model, -1);
    if ((rc = qn_step(st, err)) == 1) {
        *known = 1;
        json_decref(latest);
        latest = json_pack("{s:I, s:I, s:b, s:o}", "id", (json_int_t)qn_col_int64(st, 0), "version",
                           (json_int_t)qn_col_int64(st, 1), "dataset_drift", (int)qn_col_int64(st, 2), "created_at",
                           qn_json_time(qn_col_int64(st, 3)));
        if ((rc = qn_step(st, err)) < 0)
            goto fail;
    } else if (rc < 0)
        goto fail;
    for (const char *const *n = (const char *const[]){"predictions", "feedback", "hits", "hit_joined",
                                                     "windows_drifted", "windows_clean", NULL}; *n; n++)
        if (!json_object_get(counts, *n))
            json_object_set_new(counts, *n, json_integer(0));
    json_int_t joined = json_integer_value(json_object_get(counts, "hit_joined"));
    json_int_t hits = json_integer_value(json_object_get(counts, "hits"));
    out = json_pack("{s:s, s:o, s:o, s:o, s:o, s:{s:I, s:I, s:I, s:o}, s:o}", "model", model, "settings",
                    settings_json(&s), "overrides", overrides, "windows", windows, "counts", counts,
                    "hit_rate", "k", (json_int_t)m->hit_k, "joined", joined, "hits", hits, "rate",
                    joined ? json_real((double)hits / (double)joined) : json_null(), "latest_report", latest);
    return out;
fail:
    json_decref(windows);
    json_decref(counts);
    json_decref(overrides);
    json_decref(latest);
    return NULL;
}

int mon_list(qn_req *req, qn_res *res, void *ud)
{
    monitor *m = ud;
    qn_err err;
    json_t *list = json_array();
    qn_conn *c = qn_store_acquire(m->db, &err);
    if (!c)
        goto fail;
    qn_stmt *st = qn_prepare(c, "SELECT model FROM (SELECT model FROM counters UNION SELECT model FROM configs "
                                "UNION SELECT model FROM windows UNION SELECT model FROM reports) AS x "
                                "ORDER BY model LIMIT 1000", &err);
    if (!st)
        goto fail;
    json_t *names = json_array();
    int rc;
    while ((rc = qn_step(st, &err)) == 1)
        json_array_append_new(names, json_string(qn_col_text(st, 0)));
    size_t i;
    json_t *n;
    json_array_foreach(names, i, n) {
        int known;
        json_t *one = rc < 0 ? NULL : model_json(m, c, json_string_value(n), &known, &err);
        if (!one) {
            rc = -1;
            break;
        }
        json_array_append_new(list, one);
    }
    json_decref(names);
    if (rc < 0)
        goto fail;
    qn_store_release(m->db, c);
    return qn_res_json(res, 200, json_pack("{s:o}", "monitors", list));
fail:
    json_decref(list);
    if (c)
        qn_store_release(m->db, c);
    return mon_fail(req, res, &err);
}

int mon_get(qn_req *req, qn_res *res, void *ud)
{
    monitor *m = ud;
    const char *model;
    if (model_param(req, res, &model) < 0)
        return 0;
    qn_err err;
    qn_conn *c = qn_store_acquire(m->db, &err);
    if (!c)
        return mon_fail(req, res, &err);
    int known;
    json_t *one = model_json(m, c, model, &known, &err);
    qn_store_release(m->db, c);
    if (!one)
        return mon_fail(req, res, &err);
    if (!known) {
        json_decref(one);
        return qn_res_error(res, QN_NOT_FOUND, "model %s: no predictions, settings or reports yet", model);
    }
    return qn_res_json(res, 200, one);
}

int mon_put(qn_req *req, qn_res *res, void *ud)
{
    monitor *m = ud;
    const char *model;
    if (model_param(req, res, &model) < 0)
        return 0;
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    qn_err err;
    mon_settings s = {0};
    if (settings_apply(body, &s, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    char *text = qn_json_canonical(body);
    if (!text)
        return qn_res_error(res, QN_RESOURCE_EXHAUSTED, "out of memory");
    qn_conn *c = qn_store_acquire(m->db, &err);
    int rc = c ? qn_tx_begin(c, QN_TX_WRITE, &err) : -1;
    qn_stmt *st = rc == 0 ? qn_prepare(c, "INSERT INTO configs (model, config, updated_at) VALUES (?, ?, ?) "
                                          "ON CONFLICT (model) DO UPDATE SET config = excluded.config, "
                                          "updated_at = excluded.updated_at", &err)
                          : NULL;
    if (st) {
        qn_bind_text(st, 1, model, -1);
        qn_bind_text(st, 2, text, -1);
        qn_bind_int64(st, 3, qn_now_ms());
        rc = qn_step(st, &err);
        if (rc >= 0)
            rc = qn_tx_commit(c, &err);
    } else {
        rc = -1;
    }
    free(text);
    if (rc < 0) {
        if (c) {
            qn_tx_rollback(c);
            qn_store_release(m->db, c);
        }
        return mon_fail(req, res, &err);
    }
    int known;
    json_t *one = model_json(m, c, model, &known, &err);
    qn_store_release(m->db, c);
    if (!one)
        return mon_fail(req, res, &err);
    qn_log_info(qn_req_trace_id(req), "monitor settings changed", "{s:s}", "model", model);
    return qn_res_json(res, 200, one);
}

int mon_delete(qn_req *req, qn_res *res, void *ud)
{
    monitor *m = ud;
    const char *model;
    if (model_param(req, res, &model) < 0)
        return 0;
    qn_err err;
    qn_conn *c = qn_store_acquire(m->db, &err);
    if (!c)
        return mon_fail(req, res, &err);
    qn_stmt *st = qn_prepare(c, "DELETE FROM configs WHERE model = ?", &err);
    int rc = st ? (qn_bind_text(st, 1, model, -1), qn_step(st, &err)) : -1;
    int64_t n = rc >= 0 ? qn_changes(c) : 0;
    qn_store_release(m->db, c);
    if (rc < 0)
        return mon_fail(req, res, &err);
    if (n == 0)
        return qn_res_error(res, QN_NOT_FOUND, "model %s has no settings of its own", model);
    return qn_res_empty(res, 204);
}

static int latest_quality(monitor *m, const char *model, json_t **out, qn_err *err);

/* The report of row st (columns: report, distributions) with its
 * distributions merged in when it has them. */
static json_t *report_row(qn_stmt *st, int with_dists)
{
    json_t *r = qn_json_from_text(qn_col_text(st, 0));
    const char *d = with_dists ? qn_col_text(st, 1) : NULL;
    if (r && d)
        json_object_set_new(r, "distributions", qn_json_from_text(d));
    return r;
}

/* ?history=N lists the N newest reports without their distributions (a
 * chart of 1000 reports needs none); the latest report, alone, has them. */
int mon_report(qn_req *req, qn_res *res, void *ud)
{
    monitor *m = ud;
    const char *model;
    if (model_param(req, res, &model) < 0)
        return 0;
    qn_err err;
    int64_t n = 1;
    const char *h = qn_req_query(req, "history");
    if (h && qn_uint_parse("history", h, 1000, &n, &err) < 0)
        return qn_res_error(res, err.code, "%s (1..1000)", err.msg);
    qn_conn *c = qn_store_acquire(m->db, &err);
    if (!c)
        return mon_fail(req, res, &err);
    json_t *list = json_array();
    qn_stmt *st = qn_prepare(c, h ? "SELECT report FROM reports WHERE model = ? ORDER BY id DESC LIMIT ?"
                                  : "SELECT report, distributions FROM reports WHERE model = ? ORDER BY id DESC LIMIT ?",
                             &err);
    int rc = -1;
    if (st) {
        qn_bind_text(st, 1, model, -1);
        qn_bind_int64(st, 2, n);
        while ((rc = qn_step(st, &err)) == 1)
            json_array_append_new(list, report_row(st, !h));
    }
    qn_store_release(m->db, c);
    if (rc < 0) {
        json_decref(list);
        return mon_fail(req, res, &err);
    }
    if (h)
        return qn_res_json(res, 200, json_pack("{s:s, s:o}", "model", model, "reports", list));
    if (json_array_size(list) == 0) {
        json_decref(list);
        return qn_res_error(res, QN_NOT_FOUND, "model %s has no drift report yet (no window closed)", model);
    }
    json_t *r = json_incref(json_array_get(list, 0));
    json_decref(list);
    json_t *q = NULL;
    if (latest_quality(m, model, &q, &err) < 0) {
        json_decref(r);
        return mon_fail(req, res, &err);
    }
    if (q)
        json_object_set_new(r, "quality", q);
    return qn_res_json(res, 200, r);
}

/* GET /v1/monitors/{model}/reports/{id}: one kept report, with its distributions. */
int mon_report_get(qn_req *req, qn_res *res, void *ud)
{
    monitor *m = ud;
    const char *model;
    if (model_param(req, res, &model) < 0)
        return 0;
    qn_err err;
    int64_t id;
    if (qn_uint_parse("report id", qn_req_param(req, "id"), INT64_MAX / 2, &id, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    qn_conn *c = qn_store_acquire(m->db, &err);
    if (!c)
        return mon_fail(req, res, &err);
    json_t *r = NULL;
    qn_stmt *st = qn_prepare(c, "SELECT report, distributions FROM reports WHERE model = ? AND id = ?", &err);
    int rc = -1;
    if (st) {
        qn_bind_text(st, 1, model, -1);
        qn_bind_int64(st, 2, id);
        if ((rc = qn_step(st, &err)) == 1) {
            r = report_row(st, 1);
            rc = qn_step(st, &err);
        }
    }
    qn_store_release(m->db, c);
    if (rc < 0) {
        json_decref(r);
        return mon_fail(req, res, &err);
    }
    if (!r)
        return qn_res_error(res, QN_NOT_FOUND, "model %s has no report %lld (only the newest --history are kept)",
                            model, (long long)id);
    return qn_res_json(res, 200, r);
}

/* The newest live quality report of model into *out (NULL when none). */
static int latest_quality(monitor *m, const char *model, json_t **out, qn_err *err)
{
    *out = NULL;
    qn_conn *c = qn_store_acquire(m->db, err);
    if (!c)
        return err->code;
    qn_stmt *st = qn_prepare(c, "SELECT report FROM quality_reports WHERE model = ? AND kind = 'live' "
                                "ORDER BY id DESC LIMIT 1", err);
    int rc = st ? 0 : err->code;
    if (st) {
        qn_bind_text(st, 1, model, -1);
        if ((rc = qn_step(st, err)) == 1) {
            *out = qn_json_from_text(qn_col_text(st, 0));
            rc = qn_step(st, err);
        }
    }
    qn_store_release(m->db, c);
    return rc < 0 ? rc : 0;
}

/* Reports of one kind, newest first, at most n, into list. */
static int quality_list(qn_conn *c, const char *model, const char *kind, int64_t n, json_t *list, qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "SELECT report FROM quality_reports WHERE model = ? AND kind = ? "
                                "ORDER BY id DESC LIMIT ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, model, -1);
    qn_bind_text(st, 2, kind, -1);
    qn_bind_int64(st, 3, n);
    int rc;
    while ((rc = qn_step(st, err)) == 1)
        json_array_append_new(list, qn_json_from_text(qn_col_text(st, 0)));
    return rc < 0 ? rc : 0;
}

int mon_quality_get(qn_req *req, qn_res *res, void *ud)
{
    monitor *m = ud;
    const char *model;
    if (model_param(req, res, &model) < 0)
        return 0;
    qn_err err;
    int64_t n = 10;
    const char *h = qn_req_query(req, "history");
    if (h && qn_uint_parse("history", h, 1000, &n, &err) < 0)
        return qn_res_error(res, err.code, "%s (1..1000)", err.msg);
    if (n < 1)
        return qn_res_error(res, QN_INVALID_ARGUMENT, "history must be 1..1000");
    json_t *live = json_array(), *est = json_array(), *labels = json_object();
    qn_conn *c = qn_store_acquire(m->db, &err);
    int rc = c ? 0 : err.code;
    if (c) {
        qn_stmt *st = qn_prepare(c, "SELECT name, value FROM counters WHERE model = ? AND name LIKE 'labels\\_%' ESCAPE '\\'", &err);
        rc = st ? 0 : err.code;
        if (st) {
            qn_bind_text(st, 1, model, -1);
            while ((rc = qn_step(st, &err)) == 1)
                json_object_set_new(labels, qn_col_text(st, 0) + 7, json_integer(qn_col_int64(st, 1)));
        }
        if (rc >= 0)
            rc = quality_list(c, model, "live", n, live, &err);
        if (rc >= 0)
            rc = quality_list(c, model, "estimate", n, est, &err);
        qn_store_release(m->db, c);
    }
    if (rc < 0) {
        json_decref(live);
        json_decref(est);
        json_decref(labels);
        return mon_fail(req, res, &err);
    }
    static const char *const names[] = {"joined", "unjoined", "bad_label", NULL};
    for (size_t i = 0; names[i]; i++)
        if (!json_object_get(labels, names[i]))
            json_object_set_new(labels, names[i], json_integer(0));
    pthread_mutex_lock(&m->mu);
    json_t *state = mon_quality_state(m, model);
    pthread_mutex_unlock(&m->mu);
    return qn_res_json(res, 200, json_pack("{s:s, s:o, s:o, s:o, s:o, s:I, s:f}", "model", model, "labels", labels,
                                           "state", state, "reports", live, "estimates", est,
                                           "label_horizon_ms", (json_int_t)m->label_horizon_ms, "margin",
                                           m->quality_margin));
}

int mon_close_now(qn_req *req, qn_res *res, void *ud)
{
    monitor *m = ud;
    const char *model;
    if (model_param(req, res, &model) < 0)
        return 0;
    qn_err err;
    int n = mon_close_due(m, model, 1, &err);
    if (n < 0)
        return mon_fail(req, res, &err);
    pthread_mutex_lock(&m->mu);
    mon_quality_tick(m, 1, model);
    pthread_mutex_unlock(&m->mu);
    return qn_res_json(res, 200, json_pack("{s:s, s:i}", "model", model, "closed", n));
}
