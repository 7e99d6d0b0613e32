/*
 * window.c - what quern-monitor does with events: windows per model version,
 * closing them into drift reports, and live hit-rate@k for recommenders.
 *
 * One rule makes restarts safe: each event is applied in ONE write
 * transaction that checks and marks its id in the inbox, inserts the window
 * rows and bumps the counters (and, when a window fills, closes it: report,
 * history trim, outbox event). A crash before the commit leaves nothing (the
 * bus redelivers the event); a crash after it leaves the inbox mark, so the
 * redelivery is skipped. Nothing counted is lost, nothing is counted twice.
 *
 * A closed window is compared column by column with the reference profile:
 * each profiled column gets a one-column profile view and a one-column frame
 * built from the window, so columns may have different lengths (a
 * recommender's window has one user per request but k items per request) and
 * a column absent from the traffic is reported as skipped instead of failing
 * the whole report. The verdict is qml_drift_report_finish over the columns
 * compared.
 *
 * Recommender windows (manifest kind "als", or rows whose prediction carries
 * "items") read most columns from the logged features like any model: serve
 * logs, per request, "user_activity" (the user's distinct training items, 0
 * when unknown) and "item_popularity" (mean training popularity of the items
 * served), the two quantities a recommender's training profile holds. Two
 * derived columns exist for profiles that name them:
 *   user_id          categorical, the requested user of each request
 *   item_id          categorical, every recommended item
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/config.h"
#include "core/json.h"
#include "core/log.h"
#include "core/trace.h"
#include "core/validate.h"
#include "ml/frame.h"
#include "monitor/distribution.h"
#include "monitor/monitor.h"

#define MAX_PREDICTIONS_PER_EVENT 100000

int64_t mon_time_ms(const json_t *v, int64_t def)
{
    if (json_is_number(v)) {
        double s = json_number_value(v);
        return isfinite(s) && s > 0 && s < 1e11 ? (int64_t)(s * 1000.0) : def;
    }
    const char *s = json_string_value(v);
    if (!s)
        return def;
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        return def;
    int64_t ms = (int64_t)timegm(&tm) * 1000;
    if (*p == '.') {
        p++;
        int64_t frac = 0, scale = 100;
        while (*p >= '0' && *p <= '9') {
            frac += (*p - '0') * scale;
            scale /= 10;
            p++;
        }
        ms += frac;
    }
    if (*p == 'Z' || *p == 'z')
        return ms;
    if ((*p == '+' || *p == '-') && strlen(p) == 6) {
        int sign = *p == '+' ? 1 : -1, hh = atoi(p + 1), mm = atoi(p + 4);
        return ms - sign * (int64_t)(hh * 60 + mm) * 60000;
    }
    return def;
}

static int counter_add(qn_conn *c, const char *model, const char *name, int64_t v, qn_err *err)
{
    qn_stmt *st = qn_prepare(c,
                             "INSERT INTO counters (model, name, value) VALUES (?, ?, ?) "
                             "ON CONFLICT (model, name) DO UPDATE SET value = counters.value + excluded.value",
                             err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, model, -1);
    qn_bind_text(st, 2, name, -1);
    qn_bind_int64(st, 3, v);
    int rc = qn_step(st, err);
    return rc < 0 ? rc : 0;
}

/* ---- values of a window column ------------------------------------------ */

/* A JSON cell as a category: strings as they are, booleans "1"/"0" (the
 * profile's boolean categories), integral numbers without a fraction. */
static int cell_str(const json_t *v, char *buf, size_t cap, const char **out)
{
    if (json_is_string(v)) {
        *out = json_string_value(v);
        return 1;
    }
    if (json_is_boolean(v)) {
        *out = json_is_true(v) ? "1" : "0";
        return 1;
    }
    if (json_is_number(v)) {
        double d = json_number_value(v);
        if (!isfinite(d))
            return 0;
        if (d == floor(d) && fabs(d) < 1e15)
            snprintf(buf, cap, "%.0f", d);
        else
            snprintf(buf, cap, "%.17g", d);
        *out = buf;
        return 1;
    }
    return 0;
}

static double cell_num(const json_t *v)
{
    if (json_is_number(v))
        return json_number_value(v);
    if (json_is_boolean(v))
        return json_is_true(v) ? 1.0 : 0.0;
    const char *s = json_string_value(v);
    if (s && *s) {
        char *end;
        double d = strtod(s, &end);
        if (*end == 0 && isfinite(d))
            return d;
    }
    return NAN;
}

static int is_rec_row(const json_t *row)
{
    const json_t *pred = json_object_get(row, "prediction");
    return json_is_object(pred) && json_is_array(json_object_get(pred, "items"));
}

/* The window's values of profile column pc as a one-column frame; *n_present
 * counts the non-missing cells. NULL when out of memory. */
static qml_frame *window_column(const qml_profile_column *pc, const json_t *rows, int rec,
                                size_t *n_present, qn_err *err)
{
    qml_frame *f = qml_frame_new();
    int ci = f ? qml_frame_add_column(f, pc->name, pc->categorical ? QML_CATEGORICAL : QML_NUMERIC, err)
               : -1;
    if (ci < 0) {
        qml_frame_free(f);
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    qml_column *col = qml_frame_col(f, (size_t)ci);
    *n_present = 0;
    size_t i;
    json_t *row;
    char buf[64];
    int ok = 1;
#define PUSH_STR(s) (ok = ok && qml_col_push_str(col, (s), strlen(s)) == 0 && qml_frame_end_row(f) == 0, (*n_present)++)
#define PUSH_NUM(d) (ok = ok && qml_col_push_num(col, (d)) == 0 && qml_frame_end_row(f) == 0, (*n_present)++)
    if (rec && pc->categorical && strcmp(pc->name, "item_id") == 0) {
        json_array_foreach(rows, i, row) {
            size_t j;
            json_t *it;
            json_array_foreach(json_object_get(json_object_get(row, "prediction"), "items"), j, it) {
                const char *s;
                if (cell_str(it, buf, sizeof buf, &s))
                    PUSH_STR(s);
            }
        }
    } else {
        json_array_foreach(rows, i, row) {
            const json_t *v = json_object_get(json_object_get(row, "features"), pc->name);
            if (!v && strcmp(pc->name, "prediction") == 0)
                v = json_object_get(row, "prediction");
            if (pc->categorical) {
                const char *s;
                if (cell_str(v, buf, sizeof buf, &s))
                    PUSH_STR(s);
                else
                    ok = ok && qml_col_push_missing(col) == 0 && qml_frame_end_row(f) == 0;
            } else {
                double d = cell_num(v);
                if (isnan(d))
                    ok = ok && qml_col_push_missing(col) == 0 && qml_frame_end_row(f) == 0;
                else
                    PUSH_NUM(d);
            }
        }
    }
#undef PUSH_STR
#undef PUSH_NUM
    if (!ok) {
        qml_frame_free(f);
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    return f;
}

/* Compares the window's rows with the profile column by column. Fills out
 * (the report fields) and dists (each column with values: its reference and
 * current distribution, distribution.h) and returns 0, or
 * QN_RESOURCE_EXHAUSTED. */
static int window_drift(const mon_profile *pe, const json_t *rows, const mon_settings *s,
                        json_t *out, json_t *dists, qn_err *err)
{
    const qml_profile *p = pe->profile;
    int rec = strcmp(pe->kind, "als") == 0;
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
        if (!rec && is_rec_row(row))
            rec = 1;
    qml_drift_report rep = {0};
    json_t *skipped = json_array();
    if (!(rep.features = calloc(p->ncols ? p->ncols : 1, sizeof *rep.features)) || !skipped) {
        free(rep.features);
        json_decref(skipped);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    qml_drift_opts o;
    qml_drift_opts_default(&o);
    o.share_threshold = s->share;
    for (size_t c = 0; c < p->ncols; c++) {
        const qml_profile_column *pc = &p->cols[c];
        qn_err e = {0};
        size_t present = 0;
        qml_frame *f = window_column(pc, rows, rec, &present, &e);
        if (!f) {
            json_decref(skipped);
            for (size_t k = 0; k < rep.n_features; k++)
                free(rep.features[k].column);
            free(rep.features);
            return qn_err_set(err, e.code, "%s", e.msg);
        }
        if (present == 0) {
            json_array_append_new(skipped, json_pack("{s:s, s:s}", "column", pc->name, "reason",
                                                     "no values in the window"));
            qml_frame_free(f);
            continue;
        }
        /* out of memory here only costs the picture, not the report */
        json_t *d = mon_distribution(pc, qml_frame_col(f, 0));
        if (d)
            json_object_set_new(dists, pc->name, d);
        /* a one-column view of the profile, with only this column's override */
        qml_profile sub = *p;
        sub.ncols = 1;
        sub.cols = (qml_profile_column *)pc;
        o.columns = NULL;
        o.n_columns = 0;
        for (size_t k = 0; k < s->n_methods; k++)
            if (strcmp(s->methods[k].column, pc->name) == 0) {
                o.columns = &s->methods[k];
                o.n_columns = 1;
            }
        qml_drift_report *r1 = NULL;
        if (qml_profile_drift(&sub, f, &o, &r1, &e) < 0) {
            if (e.code == QN_RESOURCE_EXHAUSTED) {
                qml_frame_free(f);
                json_decref(skipped);
                for (size_t k = 0; k < rep.n_features; k++)
                    free(rep.features[k].column);
                free(rep.features);
                return qn_err_set(err, e.code, "%s", e.msg);
            }
            json_array_append_new(skipped, json_pack("{s:s, s:s}", "column", pc->name, "reason", e.msg));
        } else {
            rep.features[rep.n_features++] = r1->features[0];
            r1->features[0].column = NULL;
            qml_drift_report_free(r1);
        }
        qml_frame_free(f);
    }
    qml_drift_report_finish(&rep, s->share);
    json_t *j = qml_drift_report_to_json(&rep);
    for (size_t k = 0; k < rep.n_features; k++)
        free(rep.features[k].column);
    free(rep.features);
    if (!j) {
        json_decref(skipped);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    json_object_set(out, "features", json_object_get(j, "features"));
    json_object_set(out, "dataset_drift", json_object_get(j, "dataset_drift"));
    json_object_set(out, "share_drifted", json_object_get(j, "share"));
    json_object_set(out, "share_threshold", json_object_get(j, "share_threshold"));
    json_object_set(out, "n_drifted", json_object_get(j, "n_drifted"));
    json_object_set_new(out, "recommender", json_boolean(rec));
    json_object_set_new(out, "skipped", skipped);
    json_decref(j);
    return 0;
}

/* ---- closing a window ---------------------------------------------------- */

/* Closes the open window of (model, version) inside the caller's write
 * transaction on c: report, history trim, rows dropped, event to the outbox.
 * The report (new reference) is appended to closed for the gauges. */
static int close_window(monitor *m, qn_conn *c, const char *model, int64_t version,
                        const mon_settings *s, json_t *closed, qn_err *err)
{
    int rc;
    int64_t started = 0, nrows = 0, now = qn_now_ms(), id = 1;
    json_t *rows = json_array(), *report = NULL, *dists = json_object();
    char *dtext = NULL;
    qn_stmt *st = qn_prepare(c, "SELECT started_at, rows FROM windows WHERE model = ? AND version = ?", err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, model, -1);
    qn_bind_int64(st, 2, version);
    if ((rc = qn_step(st, err)) < 0)
        goto fail;
    if (rc == 0) {
        json_decref(rows);
        json_decref(dists);
        return 0;
    }
    started = qn_col_int64(st, 0);
    nrows = qn_col_int64(st, 1);
    if (qn_step(st, err) < 0)
        goto fail;
    if (!(st = qn_prepare(c, "SELECT features, prediction FROM window_rows WHERE model = ? AND version = ? ORDER BY id", err)))
        goto fail;
    qn_bind_text(st, 1, model, -1);
    qn_bind_int64(st, 2, version);
    while ((rc = qn_step(st, err)) == 1)
        json_array_append_new(rows, json_pack("{s:o, s:o}", "features", qn_json_from_text(qn_col_text(st, 0)),
                                              "prediction", qn_json_from_text(qn_col_text(st, 1))));
    if (rc < 0)
        goto fail;
    if (!(st = qn_prepare(c, "SELECT COALESCE(MAX(id), 0) + 1 FROM reports", err)) || qn_step(st, err) != 1)
        goto fail;
    id = qn_col_int64(st, 0);
    if (qn_step(st, err) < 0)
        goto fail;

    report = json_pack("{s:I, s:s, s:I, s:{s:o, s:o, s:I}, s:o}", "id", (json_int_t)id, "model", model,
                       "version", (json_int_t)version, "window", "start", qn_json_time(started), "end",
                       qn_json_time(now), "rows", (json_int_t)nrows, "created_at", qn_json_time(now));
    if (!report || !dists) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    qn_err perr = {0};
    const mon_profile *pe = mon_profile_get(m, model, version, &perr);
    if (!pe) {
        json_object_set_new(report, "error", json_string(perr.msg));
        json_object_set_new(report, "dataset_drift", json_false());
        json_object_set_new(report, "features", json_array());
    } else if (window_drift(pe, rows, s, report, dists, err) < 0) {
        goto fail;
    }
    int drift = json_is_true(json_object_get(report, "dataset_drift"));
    int publish = pe && (drift || m->publish_all);
    json_object_set_new(report, "published", json_boolean(publish));
    char *text = qn_json_canonical(report);
    if (!text) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    /* the distributions beside the report, so that ?history lists stay small */
    dtext = json_object_size(dists) ? qn_json_canonical(dists) : NULL;
    st = qn_prepare(c, "INSERT INTO reports (id, model, version, window_start, window_end, rows, dataset_drift, report, created_at, "
                       "distributions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", err);
    if (st) {
        qn_bind_int64(st, 1, id);
        qn_bind_text(st, 2, model, -1);
        qn_bind_int64(st, 3, version);
        qn_bind_int64(st, 4, started);
        qn_bind_int64(st, 5, now);
        qn_bind_int64(st, 6, nrows);
        qn_bind_int64(st, 7, drift);
        qn_bind_text(st, 8, text, -1);
        qn_bind_int64(st, 9, now);
        dtext ? qn_bind_text(st, 10, dtext, -1) : qn_bind_null(st, 10);
    }
    free(text);
    if (!st || qn_step(st, err) < 0)
        goto fail;
    /* bounded history: keep the newest m->history reports of the model */
    if (!(st = qn_prepare(c, "DELETE FROM reports WHERE model = ? AND id <= (SELECT id FROM reports WHERE model = ? "
                             "ORDER BY id DESC LIMIT 1 OFFSET ?)", err)))
        goto fail;
    qn_bind_text(st, 1, model, -1);
    qn_bind_text(st, 2, model, -1);
    qn_bind_int64(st, 3, m->history);
    if (qn_step(st, err) < 0)
        goto fail;
    static const char *const drops[] = {"DELETE FROM window_rows WHERE model = ? AND version = ?",
                                        "DELETE FROM windows WHERE model = ? AND version = ?"};
    for (size_t k = 0; k < 2; k++) {
        if (!(st = qn_prepare(c, drops[k], err)))
            goto fail;
        qn_bind_text(st, 1, model, -1);
        qn_bind_int64(st, 2, version);
        if (qn_step(st, err) < 0)
            goto fail;
    }
    if (counter_add(c, model, drift ? "windows_drifted" : "windows_clean", 1, err) < 0)
        goto fail;
    if (publish) {
        json_t *data = json_pack("{s:s, s:I, s:O, s:O, s:O, s:O, s:O, s:I}", "model", model, "version",
                                 (json_int_t)version, "window", json_object_get(report, "window"),
                                 "features", json_object_get(report, "features"), "share_drifted",
                                 json_object_get(report, "share_drifted"), "share_threshold",
                                 json_object_get(report, "share_threshold"), "dataset_drift",
                                 json_object_get(report, "dataset_drift"), "report_id", (json_int_t)id);
        json_t *ev = data ? qn_event_new("quern.drift.detected", "quern-monitor", data, NULL) : NULL;
        rc = ev ? qn_outbox_append(c, ev, err) : qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        json_decref(ev);
        if (rc < 0)
            goto fail;
    }
    qn_log_info(NULL, "window closed", "{s:s, s:I, s:I, s:b, s:b, s:I}", "model", model, "version",
                (json_int_t)version, "rows", (json_int_t)nrows, "dataset_drift", drift, "published", publish,
                "report", (json_int_t)id);
    json_array_append_new(closed, report);
    json_decref(rows);
    json_decref(dists);
    free(dtext);
    return 0;
fail:
    json_decref(report);
    json_decref(rows);
    json_decref(dists);
    free(dtext);
    return err->code ? err->code : QN_INTERNAL;
}

/* After a commit: gauges of the closed reports and of the open windows. */
static void after_commit(monitor *m, json_t *closed)
{
    size_t i;
    json_t *r;
    json_array_foreach(closed, i, r) {
        const char *model = json_string_value(json_object_get(r, "model"));
        char v[24];
        snprintf(v, sizeof v, "%lld", (long long)json_integer_value(json_object_get(r, "version")));
        const char *wl[] = {model, json_is_true(json_object_get(r, "dataset_drift")) ? "true" : "false"};
        qn_counter_add(m->m_windows, wl, 1);
        const char *rl[] = {model, v};
        qn_gauge_set(m->m_window_rows, rl, 0);
        mon_gauges_from_report(m, model, r);
    }
    if (json_array_size(closed))
        qn_outbox_kick(m->outbox);
}

/* ---- event handlers ------------------------------------------------------ */

static int rows_of(qn_conn *c, const char *model, int64_t version, int64_t *rows, qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "SELECT rows FROM windows WHERE model = ? AND version = ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, model, -1);
    qn_bind_int64(st, 2, version);
    int rc = qn_step(st, err);
    *rows = rc == 1 ? qn_col_int64(st, 0) : 0;
    if (rc == 1)
        rc = qn_step(st, err);
    return rc < 0 ? rc : 0;
}

static int64_t json_version(const json_t *v)
{
    if (json_is_integer(v))
        return json_integer_value(v);
    const char *s = json_string_value(v);
    int64_t n;
    qn_err e;
    if (s && qn_uint_parse("version", s, INT64_MAX / 2, &n, &e) == 0)
        return n;
    return 0;
}

static void skip(monitor *m, const qn_msg *msg, const char *reason)
{
    const char *l[] = {reason};
    qn_counter_add(m->m_skipped, l, 1);
    qn_log_warn(NULL, "event ignored", "{s:s, s:s, s:s}", "id", msg->id, "type", msg->topic, "reason", reason);
}

/* One quern.predictions.logged event counted into its model version's window. */
typedef struct predictions_tx {
    monitor *m;
    const char *model;
    int64_t version;
    const json_t *preds;
    int64_t now;
    int64_t counted, rows; /* out: predictions counted, rows in the open window */
    json_t *closed;        /* out: reports of the windows closed */
} predictions_tx;

static int predictions_body(qn_conn *c, void *arg, qn_err *err)
{
    predictions_tx *x = arg;
    monitor *m = x->m;
    const char *model = x->model;
    int64_t version = x->version, now = x->now;
    mon_settings s;
    int rc;
    if ((rc = mon_settings_load(m, c, model, &s, err)) < 0 || (rc = rows_of(c, model, version, &x->rows, err)) < 0)
        return rc;
    size_t i;
    json_t *p;
    json_array_foreach(x->preds, i, p) {
        if (!json_is_object(p))
            continue;
        json_t *features = json_object_get(p, "features");
        json_t *pred = json_object_get(p, "prediction");
        const char *reqid = json_string_value(json_object_get(p, "request_id"));
        int64_t t = mon_time_ms(json_object_get(p, "time"), now);
        char *ftext = json_is_object(features) ? qn_json_canonical(features) : NULL;
        char *ptext = pred ? qn_json_canonical(pred) : NULL;
        qn_stmt *st = NULL;
        if (x->rows == 0 && (st = qn_prepare(c, "INSERT INTO windows (model, version, started_at, rows) VALUES (?, ?, ?, 0) "
                                             "ON CONFLICT (model, version) DO NOTHING", err))) {
            qn_bind_text(st, 1, model, -1);
            qn_bind_int64(st, 2, version);
            qn_bind_int64(st, 3, now);
            rc = qn_step(st, err);
        }
        if (rc >= 0 && (st = qn_prepare(c, "INSERT INTO window_rows (model, version, request_id, t, features, prediction) "
                                           "VALUES (?, ?, ?, ?, ?, ?)", err))) {
            qn_bind_text(st, 1, model, -1);
            qn_bind_int64(st, 2, version);
            reqid ? qn_bind_text(st, 3, reqid, -1) : qn_bind_null(st, 3);
            qn_bind_int64(st, 4, t);
            qn_bind_text(st, 5, ftext ? ftext : "{}", -1);
            ptext ? qn_bind_text(st, 6, ptext, -1) : qn_bind_null(st, 6);
            rc = qn_step(st, err);
        }
        if (rc >= 0 && (st = qn_prepare(c, "UPDATE windows SET rows = rows + 1 WHERE model = ? AND version = ?", err))) {
            qn_bind_text(st, 1, model, -1);
            qn_bind_int64(st, 2, version);
            rc = qn_step(st, err);
        }
        /* recommendations, for the live hit-rate join */
        const char *user = json_string_value(json_object_get(features, "user_id"));
        if (rc >= 0 && user && is_rec_row(p)) {
            json_t *items = json_array();
            size_t j;
            json_t *it;
            json_array_foreach(json_object_get(pred, "items"), j, it) {
                if (j >= (size_t)m->hit_k)
                    break;
                json_array_append(items, it);
            }
            char *itext = qn_json_canonical(items);
            json_decref(items);
            if ((st = qn_prepare(c, "INSERT INTO recs (model, user_id, request_id, t, items) VALUES (?, ?, ?, ?, ?)", err))) {
                qn_bind_text(st, 1, model, -1);
                qn_bind_text(st, 2, user, -1);
                reqid ? qn_bind_text(st, 3, reqid, -1) : qn_bind_null(st, 3);
                qn_bind_int64(st, 4, t);
                qn_bind_text(st, 5, itext ? itext : "[]", -1);
                rc = qn_step(st, err);
            }
            free(itext);
        }
        free(ftext);
        free(ptext);
        if (!st && rc >= 0)
            rc = err->code;
        if (rc < 0)
            return rc;
        x->counted++;
        x->rows++;
        if (x->rows >= s.window_rows) {
            if ((rc = close_window(m, c, model, version, &s, x->closed, err)) < 0)
                return rc;
            x->rows = 0;
        }
    }
    return counter_add(c, model, "predictions", x->counted, err);
}

static int on_predictions(monitor *m, const qn_msg *msg, const json_t *data, qn_err *err)
{
    const char *model = json_string_value(json_object_get(data, "model"));
    int64_t version = json_version(json_object_get(data, "version"));
    const json_t *preds = json_object_get(data, "predictions");
    qn_err e;
    if (!model || qn_name_check("model", model, &e) < 0)
        return skip(m, msg, "bad_model"), 0;
    if (version < 1)
        return skip(m, msg, "bad_version"), 0;
    if (!json_is_array(preds) || json_array_size(preds) > MAX_PREDICTIONS_PER_EVENT)
        return skip(m, msg, "bad_predictions"), 0;

    predictions_tx x = {.m = m, .model = model, .version = version, .preds = preds, .now = qn_now_ms(),
                        .closed = json_array()};
    pthread_mutex_lock(&m->mu);
    int rc = qn_subscriber_tx(m->db, msg, predictions_body, &x, err);
    if (rc == 0) {
        const char *ml[] = {model};
        qn_counter_add(m->m_predictions, ml, (double)x.counted);
        after_commit(m, x.closed);
        char v[24];
        snprintf(v, sizeof v, "%lld", (long long)version);
        const char *rl[] = {model, v};
        qn_gauge_set(m->m_window_rows, rl, (double)x.rows);
        mon_quality_predictions(m, model, version, preds);
        mon_promote_latencies(m, model, version, preds);
    }
    pthread_mutex_unlock(&m->mu);
    json_decref(x.closed);
    return rc < 0 ? rc : 0; /* 1: a duplicate, already counted */
}

/* 1 when the outcome/label names a purchase (m->hit_outcomes, comma-separated). */
static int is_purchase(const monitor *m, const json_t *data)
{
    const char *keys[] = {"outcome", "label"};
    for (size_t k = 0; k < 2; k++) {
        const char *v = json_string_value(json_object_get(data, keys[k]));
        if (!v)
            continue;
        size_t n = strlen(v);
        const char *p = m->hit_outcomes;
        while (p && *p) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            if (len == n && strncasecmp(p, v, n) == 0)
                return 1;
            p = e ? e + 1 : NULL;
        }
    }
    return 0;
}

static int hit_counts(qn_conn *c, const char *model, int64_t *joined, int64_t *hits, qn_err *err)
{
    *joined = *hits = 0;
    qn_stmt *st = qn_prepare(c, "SELECT name, value FROM counters WHERE model = ? AND name IN ('hit_joined', 'hits')", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, model, -1);
    int rc;
    while ((rc = qn_step(st, err)) == 1)
        *(strcmp(qn_col_text(st, 0), "hits") == 0 ? hits : joined) = qn_col_int64(st, 1);
    return rc;
}

/* One quern.feedback.received event joined to the recommendations it answers. */
typedef struct feedback_tx {
    monitor *m;
    const char *model, *reqid, *user, *item;
    int64_t t;
    int purchase;
    int joined, hit;  /* out: the join's result */
    int64_t tj, th;   /* out: joined purchases and hits so far */
    const char *label_result; /* the label join's result (quality.c), NULL for none */
} feedback_tx;

static int feedback_body(qn_conn *c, void *arg, qn_err *err)
{
    feedback_tx *x = arg;
    const char *model = x->model, *reqid = x->reqid;
    int rc;
    if (x->purchase && (reqid || x->user)) {
        qn_stmt *st = reqid ? qn_prepare(c, "SELECT items FROM recs WHERE model = ? AND request_id = ?", err)
                            : qn_prepare(c, "SELECT items FROM recs WHERE model = ? AND user_id = ? AND t >= ? AND t <= ?", err);
        if (!st)
            return err->code;
        qn_bind_text(st, 1, model, -1);
        qn_bind_text(st, 2, reqid ? reqid : x->user, -1);
        if (!reqid) {
            qn_bind_int64(st, 3, x->t - x->m->hit_horizon_ms);
            qn_bind_int64(st, 4, x->t + 5000);  /* clock skew between serve and ingest */
        }
        while ((rc = qn_step(st, err)) == 1) {
            x->joined = 1;
            json_t *items = qn_json_from_text(qn_col_text(st, 0));
            size_t j;
            json_t *it;
            json_array_foreach(items, j, it)
                if (json_is_string(it) && strcmp(json_string_value(it), x->item) == 0)
                    x->hit = 1;
            json_decref(items);
        }
        if (rc < 0)
            return rc;
    }
    if (x->label_result) {
        char name[40];
        snprintf(name, sizeof name, "labels_%s", x->label_result);
        if ((rc = counter_add(c, model, name, 1, err)) < 0)
            return rc;
    }
    if ((rc = counter_add(c, model, "feedback", 1, err)) < 0 ||
        (x->joined && (rc = counter_add(c, model, "hit_joined", 1, err)) < 0) ||
        (x->hit && (rc = counter_add(c, model, "hits", 1, err)) < 0))
        return rc;
    /* the hit-rate gauge moves only with purchases */
    return x->purchase ? hit_counts(c, model, &x->tj, &x->th, err) : 0;
}

static int on_feedback(monitor *m, const qn_msg *msg, const json_t *data, qn_err *err)
{
    const char *model = json_string_value(json_object_get(data, "model"));
    qn_err e;
    if (!model || qn_name_check("model", model, &e) < 0)
        return skip(m, msg, "bad_model"), 0;
    const char *item = json_string_value(json_object_get(data, "item"));
    feedback_tx x = {.m = m,
                     .model = model,
                     .reqid = json_string_value(json_object_get(data, "request_id")),
                     .user = json_string_value(json_object_get(data, "user")),
                     .item = item,
                     .t = mon_time_ms(json_object_get(data, "time"), qn_now_ms()),
                     .purchase = item && is_purchase(m, data)};
    /* The label join: looked up before the transaction (which counts it),
     * applied after its commit, all under m->mu. */
    mon_label lj;
    pthread_mutex_lock(&m->mu);
    x.label_result = mon_label_name(mon_quality_peek(m, data, &lj));
    int rc = qn_subscriber_tx(m->db, msg, feedback_body, &x, err);
    if (rc == 0)
        mon_quality_apply(m, data, &lj);
    pthread_mutex_unlock(&m->mu);
    if (rc != 0)
        return rc < 0 ? rc : 0; /* 1: a duplicate, already counted */
    const char *fl[] = {model, !x.purchase ? "no_purchase" : x.joined ? (x.hit ? "hit" : "miss") : "unjoined"};
    qn_counter_add(m->m_feedback, fl, 1);
    if (x.tj > 0) {
        char k[24];
        snprintf(k, sizeof k, "%lld", (long long)m->hit_k);
        const char *hl[] = {model, k};
        qn_gauge_set(m->m_hit_rate, hl, (double)x.th / (double)x.tj);
    }
    return 0;
}

/* A promotion's reset of one model's windows (see on_promoted). */
typedef struct promoted_tx {
    const char *model;
    int64_t version;
    json_t *dropped; /* out: the versions whose windows were dropped */
} promoted_tx;

static int promoted_body(qn_conn *c, void *arg, qn_err *err)
{
    promoted_tx *x = arg;
    int rc;
    qn_stmt *st = qn_prepare(c, "SELECT version FROM windows WHERE model = ? AND version <> ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, x->model, -1);
    qn_bind_int64(st, 2, x->version);
    while ((rc = qn_step(st, err)) == 1)
        json_array_append_new(x->dropped, json_integer(qn_col_int64(st, 0)));
    if (rc < 0)
        return rc;
    /* The last takes no version: PostgreSQL refuses a parameter it cannot
     * type (the former "AND ? IS NOT NULL" that only used it up). */
    static const char *const sql[] = {
        "DELETE FROM window_rows WHERE model = ? AND version <> ?",
        "DELETE FROM windows WHERE model = ? AND version <> ?",
        "DELETE FROM counters WHERE model = ? AND name IN ('hits', 'hit_joined')",
    };
    for (size_t k = 0; k < QN_NELEM(sql); k++) {
        if (!(st = qn_prepare(c, sql[k], err)))
            return err->code;
        qn_bind_text(st, 1, x->model, -1);
        if (k < 2)
            qn_bind_int64(st, 2, x->version);
        if ((rc = qn_step(st, err)) < 0)
            return rc;
    }
    return 0;
}

/* A new version behind the followed alias: its windows start afresh against
 * its own reference, the old versions' open windows are dropped, and the
 * live hit-rate restarts for the new model. */
static int on_promoted(monitor *m, const qn_msg *msg, const json_t *data, qn_err *err)
{
    const char *model = json_string_value(json_object_get(data, "model"));
    const char *alias = json_string_value(json_object_get(data, "alias"));
    int64_t version = json_version(json_object_get(data, "version"));
    if (!model || !alias || strcmp(alias, m->alias) != 0)
        return 0;
    promoted_tx x = {.model = model, .version = version, .dropped = json_array()};
    pthread_mutex_lock(&m->mu);
    int rc = qn_subscriber_tx(m->db, msg, promoted_body, &x, err);
    if (rc == 0) {
        mon_profiles_forget(m, model);
        size_t i;
        json_t *v;
        json_array_foreach(x.dropped, i, v) {
            char vs[24];
            snprintf(vs, sizeof vs, "%lld", (long long)json_integer_value(v));
            const char *rl[] = {model, vs};
            qn_metric_remove(m->m_window_rows, rl);
        }
        char k[24];
        snprintf(k, sizeof k, "%lld", (long long)m->hit_k);
        const char *hl[] = {model, k};
        qn_metric_remove(m->m_hit_rate, hl);
        qn_log_info(NULL, "windows reset by a promotion", "{s:s, s:s, s:I, s:i}", "model", model, "alias", alias,
                    "version", (json_int_t)version, "dropped_windows", (int)json_array_size(x.dropped));
    }
    pthread_mutex_unlock(&m->mu);
    json_decref(x.dropped);
    return rc < 0 ? rc : 0;
}

int mon_on_event(const qn_msg *msg, void *ud, qn_err *err)
{
    monitor *m = ud;
    const char *type = json_string_value(json_object_get(msg->event, "type"));
    const json_t *data = json_object_get(msg->event, "data");
    if (!type || !json_is_object(data))
        return 0;
    if (strcmp(type, "quern.predictions.logged") == 0)
        return on_predictions(m, msg, data, err);
    if (strcmp(type, "quern.feedback.received") == 0)
        return on_feedback(m, msg, data, err);
    if (strcmp(type, "quern.model.promoted") == 0)
        return on_promoted(m, msg, data, err);
    return 0;
}

/* ---- closing by time, sweeping ------------------------------------------ */

int mon_close_due(monitor *m, const char *model, int force, qn_err *err)
{
    int rc, closed_n = 0;
    json_t *due = json_array(), *closed = json_array();
    int64_t now = qn_now_ms();
    pthread_mutex_lock(&m->mu);
    qn_conn *c = qn_store_acquire(m->db, err);
    if (!c) {
        rc = err->code;
        goto out;
    }
    qn_stmt *st = model ? qn_prepare(c, "SELECT model, version, started_at, rows FROM windows WHERE model = ? AND rows > 0", err)
                        : qn_prepare(c, "SELECT model, version, started_at, rows FROM windows WHERE rows > 0", err);
    if (!st) {
        rc = err->code;
        goto out;
    }
    if (model)
        qn_bind_text(st, 1, model, -1);
    while ((rc = qn_step(st, err)) == 1)
        json_array_append_new(due, json_pack("{s:s, s:I, s:I, s:I}", "model", qn_col_text(st, 0), "version",
                                             (json_int_t)qn_col_int64(st, 1), "started", (json_int_t)qn_col_int64(st, 2),
                                             "rows", (json_int_t)qn_col_int64(st, 3)));
    if (rc < 0)
        goto out;
    size_t i;
    json_t *w;
    json_array_foreach(due, i, w) {
        const char *mod = json_string_value(json_object_get(w, "model"));
        mon_settings s;
        if ((rc = mon_settings_load(m, c, mod, &s, err)) < 0)
            goto out;
        int64_t rows = json_integer_value(json_object_get(w, "rows"));
        int64_t started = json_integer_value(json_object_get(w, "started"));
        if (!force && (now - started < s.window_seconds * 1000 || rows < s.min_rows))
            continue;
        if ((rc = qn_tx_begin(c, QN_TX_WRITE, err)) < 0)
            goto out;
        if ((rc = close_window(m, c, mod, json_integer_value(json_object_get(w, "version")), &s, closed, err)) < 0 ||
            (rc = qn_tx_commit(c, err)) < 0) {
            qn_tx_rollback(c);
            goto out;
        }
        closed_n++;
    }
    rc = 0;
out:
    if (c)
        qn_store_release(m->db, c);
    pthread_mutex_unlock(&m->mu);
    after_commit(m, closed);
    json_decref(due);
    json_decref(closed);
    return rc < 0 ? rc : closed_n;
}

static void sweep(monitor *m)
{
    qn_err err;
    qn_conn *c = qn_store_acquire(m->db, &err);
    if (!c)
        return;
    int64_t now = qn_now_ms();
    if (qn_tx_begin(c, QN_TX_WRITE, &err) == 0) {
        qn_stmt *st = qn_prepare(c, "DELETE FROM recs WHERE t < ?", &err);
        int ok = st != NULL;
        if (ok) {
            qn_bind_int64(st, 1, now - m->hit_horizon_ms - 60000);
            ok = qn_step(st, &err) >= 0;
        }
        /* bounded: the newest max_recs recommendations at most */
        if (ok && (ok = (st = qn_prepare(c, "DELETE FROM recs WHERE id <= (SELECT id FROM recs ORDER BY id DESC LIMIT 1 OFFSET ?)", &err)) != NULL)) {
            qn_bind_int64(st, 1, m->max_recs);
            ok = qn_step(st, &err) >= 0;
        }
        /* redeliveries come within minutes; a week of ids is plenty */
        if (ok && (ok = (st = qn_prepare(c, "DELETE FROM inbox WHERE received_at < ?", &err)) != NULL)) {
            qn_bind_int64(st, 1, now - 7LL * 86400000);
            ok = qn_step(st, &err) >= 0;
        }
        if (!ok || qn_tx_commit(c, &err) < 0) {
            /* harmless: old rows only take room until the next sweep */
            qn_log_warn(NULL, "sweep failed", "{s:s}", "detail", err.msg);
            qn_tx_rollback(c);
        }
    }
    qn_store_release(m->db, c);
}

static void tick(void *ud)
{
    monitor *m = ud;
    qn_err err;
    if (mon_close_due(m, NULL, 0, &err) < 0)
        qn_log_warn(NULL, "closing windows by time failed", "{s:s}", "detail", err.msg);
    pthread_mutex_lock(&m->mu);
    mon_quality_tick(m, 0, NULL);
    pthread_mutex_unlock(&m->mu);
    mon_promote_tick(m);
    if (m->checkpoint_ms > 0 && qn_now_ms() - m->last_checkpoint_ms >= m->checkpoint_ms) {
        if (mon_checkpoint_write(m, &err) < 0)
            qn_log_warn(NULL, "checkpoint not written", "{s:s}", "detail", err.msg);
        m->last_checkpoint_ms = qn_now_ms();
    }
    if (qn_now_ms() - m->last_sweep_ms > 60000) {
        sweep(m);
        m->last_sweep_ms = qn_now_ms();
    }
}

int mon_ticker_start(monitor *m, qn_err *err)
{
    m->ticker = qn_ticker_start(tick, m, m->tick_ms, err);
    return m->ticker ? 0 : err->code;
}

void mon_ticker_stop(monitor *m)
{
    qn_ticker_stop(m->ticker);
    m->ticker = NULL;
}
