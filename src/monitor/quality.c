/*
 * quality.c - live model quality from labels, and its estimate before them.
 *
 * The join. Every logged prediction of a classifier or a regressor that
 * carries a request id waits in memory (a "pending" entry) for feedback with
 * the same model and request id, at most --label-horizon after it arrived.
 * Pending entries sit in one hash table (model, request id) and one list in
 * arrival order: the ticker expires the oldest past the horizon, and when
 * --max-pending entries are held the oldest is evicted to make room. That is
 * the memory bound: about 100 bytes plus the id per entry (the default,
 * 500000 entries, is ~70 MB at most). A request that logged several rows
 * has several entries under one id; feedback joins them in row order.
 * A shadowed request (or one replayed to several versions) logged one
 * prediction per version under the same id: the label joins the oldest
 * entry of each version (at most JOIN_VERSIONS of them), so every version
 * is credited, and the labelled request goes to the promotion policy
 * (promote.c) with each version's score.
 * Feedback with a label or value for an id that is not pending is held for
 * --label-grace (at most MAX_HELD labels, the oldest make way): serve
 * publishes its log every second, so a fast label may come first; if the
 * prediction arrives meanwhile they join, else the label counts as
 * "unjoined" (never logged, not sampled, expired, or another model's);
 * a label that is not a number (or a boolean) counts as "bad_label". Both
 * are tallied, neither stops the consumer.
 *
 * Quality windows. A joined (prediction, label) pair goes into the open
 * quality window of its model version; the window closes at
 * --quality-window labelled pairs, or --quality-window-seconds after it
 * opened with at least --quality-min-rows. A closed window is measured with
 * libquern-ml's metrics (ml/eval.h): binary classifiers accuracy, ROC AUC
 * (undefined, with the reason, when the window holds one class only), log
 * loss, Brier score and a 10-bin calibration table; multiclass accuracy;
 * regressors RMSE, MAE, R2 and mean error. Each metric sits beside the
 * version's holdout figure from training (the registry's version metrics);
 * a metric worse than it by more than --quality-margin (relative) marks the
 * report degraded. The report is stored (bounded history), set as
 * quern_quality{model,version,metric} gauges and published as
 * quern.quality.reported.
 *
 * Estimates (CBPE). For a binary classifier whose version carries the
 * holdout calibration table (calibration.rate.B, written at training), every
 * --quality-window logged predictions (or --quality-window-seconds with at
 * least --quality-min-rows) form an estimation window: the expected accuracy
 * and ROC AUC from the calibrated probabilities (qml_cbpe_binary) are
 * reported at once, before any label. When every prediction of that window
 * is resolved (labelled, expired or evicted), the realised accuracy and AUC
 * of its labelled rows and the estimate's error are added to the same
 * report.
 *
 * What is in memory: pending entries, held labels, open quality windows and
 * estimation windows; checkpoint.c saves them (mon_quality_save) at stop and
 * every --checkpoint-interval and loads them at start (mon_quality_load), so
 * a graceful restart keeps them and a crash goes back to the last
 * checkpoint. The counters and the reports are in the store. Everything
 * here runs under m->mu.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "ml/eval.h"
#include "monitor/monitor.h"

#define JOIN_VERSIONS 4  /* versions one label credits (shadowed requests) */
#define MAX_ESTIMATES 32 /* estimation windows kept per version, awaiting labels */

typedef struct qpend {
    struct qpend *hnext;       /* hash chain */
    struct qpend *older, *newer; /* arrival order */
    struct qmodel *qm;
    struct qver *qv;
    int64_t arrived;
    double score;              /* binary: P(y = 1); regressor: the value; multiclass: the argmax */
    int64_t est;               /* the estimation window's sequence number, 0 for none */
    uint64_t hash;
    char id[];
} qpend;

/* An estimation window (CBPE) of one version. */
typedef struct qest {
    int64_t seq, report_id;
    int64_t started, closed_at;
    size_t n_pred, n_resolved, cap;
    double *score, *p;         /* every prediction: raw score, calibrated p */
    size_t n_lab, cap_lab;
    double *lab_score, *lab_y; /* labelled ones */
    double est_acc, est_auc;
    int closed, realised;
    char undefined[160];       /* why the estimated AUC is undefined */
    struct qest *next;
} qest;

typedef struct qver {
    int64_t version;
    char task[16];             /* binary, multiclass, regression, ranking; "" unknown */
    json_t *ref;               /* the version's holdout metrics (registry), may be NULL */
    json_t *classes;           /* training classes, may be NULL */
    int have_cal;
    qml_calibration cal;
    int64_t resolved_at;       /* when the registry answered (0: not yet) */
    /* the open quality window */
    int64_t started;
    size_t n, cap;
    double *score, *y;
    /* estimation windows: the open one first */
    qest *ests;
    size_t n_ests;
    int64_t next_seq;
    int64_t ck_ord;            /* its ordinal in the checkpoint being written */
    struct qver *next;
} qver;

typedef struct qmodel {
    char name[129];
    int rec;                   /* a recommender: no quality join */
    size_t pending;
    int64_t expired, evicted;  /* since start (also quern_monitor_labels_total) */
    qver *versions;
    struct qmodel *next;
} qmodel;

/* A label that came before its prediction's log (held for --label-grace). */
typedef struct qheld {
    struct qheld *hnext, *newer;
    int64_t arrived;
    double y;
    uint64_t hash;
    char model[129];
    char id[];
} qheld;

#define HELD_BUCKETS 4096
#define MAX_HELD 100000

struct mon_quality {
    qmodel *models;
    qpend **buckets;
    size_t nbuckets, count;
    qpend *oldest, *newest;
    qheld *held[HELD_BUCKETS];
    qheld *held_oldest, *held_newest;
    size_t n_held;
};

/* ---- the pending table -------------------------------------------------- */

static uint64_t fnv(const char *s, uint64_t h)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static uint64_t key_hash(const char *model, const char *id)
{
    return fnv(id, fnv(model, 1469598103934665603ULL) ^ 0xff);
}

static int table_grow(mon_quality *q)
{
    size_t nb = q->nbuckets ? q->nbuckets * 2 : 1024;
    qpend **b = calloc(nb, sizeof *b);
    if (!b)
        return -1;
    for (size_t i = 0; i < q->nbuckets; i++) {
        qpend *e = q->buckets[i];
        while (e) {
            qpend *nx = e->hnext;
            /* keep chain order (oldest first): append */
            qpend **pp = &b[e->hash & (nb - 1)];
            while (*pp)
                pp = &(*pp)->hnext;
            e->hnext = NULL;
            *pp = e;
            e = nx;
        }
    }
    free(q->buckets);
    q->buckets = b;
    q->nbuckets = nb;
    return 0;
}

static void unlink_pending(mon_quality *q, qpend *e)
{
    qpend **pp = &q->buckets[e->hash & (q->nbuckets - 1)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    if (e->older)
        e->older->newer = e->newer;
    else
        q->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        q->newest = e->older;
    q->count--;
    e->qm->pending--;
}

/* The oldest pending entry of (model, id), or NULL. */
static qpend *find_pending(mon_quality *q, const char *model, const char *id)
{
    if (!q->nbuckets)
        return NULL;
    uint64_t h = key_hash(model, id);
    for (qpend *e = q->buckets[h & (q->nbuckets - 1)]; e; e = e->hnext)
        if (e->hash == h && strcmp(e->id, id) == 0 && strcmp(e->qm->name, model) == 0)
            return e;
    return NULL;
}

/* ---- models and versions ------------------------------------------------ */

static qmodel *model_get(mon_quality *q, const char *name, int create)
{
    for (qmodel *qm = q->models; qm; qm = qm->next)
        if (strcmp(qm->name, name) == 0)
            return qm;
    if (!create)
        return NULL;
    qmodel *qm = calloc(1, sizeof *qm);
    if (!qm)
        return NULL;
    snprintf(qm->name, sizeof qm->name, "%s", name);
    qm->next = q->models;
    q->models = qm;
    return qm;
}

static void est_free(qest *e)
{
    free(e->score);
    free(e->p);
    free(e->lab_score);
    free(e->lab_y);
    free(e);
}

/* Task, reference metrics, classes and calibration from the registry, once
 * (retried at most every 10 s while it cannot be had). */
static void version_resolve(monitor *m, qmodel *qm, qver *qv)
{
    int64_t now = qn_now_ms();
    if (qv->task[0] || (qv->resolved_at && now - qv->resolved_at < 10000))
        return;
    qv->resolved_at = now;
    qn_err e = {0};
    const mon_profile *pe = mon_version_get(m, qm->name, qv->version, &e);
    if (!pe)
        return;
    snprintf(qv->task, sizeof qv->task, "%s", pe->task);
    if (!qv->task[0] && strcmp(pe->kind, "als") == 0)
        snprintf(qv->task, sizeof qv->task, "ranking");
    json_decref(qv->ref);
    json_decref(qv->classes);
    qv->ref = json_incref(pe->metrics);
    qv->classes = json_incref(pe->classes);
    /* The holdout calibration table: flat "calibration.n.B" / "calibration.rate.B". */
    int any = 0;
    for (int b = 0; b < QML_CAL_BINS; b++) {
        char k[40];
        snprintf(k, sizeof k, "calibration.n.%d", b);
        const json_t *nv = json_object_get(pe->metrics, k);
        snprintf(k, sizeof k, "calibration.rate.%d", b);
        const json_t *rv = json_object_get(pe->metrics, k);
        qv->cal.n[b] = json_is_number(nv) ? json_number_value(nv) : 0;
        qv->cal.rate[b] = json_is_number(rv) ? json_number_value(rv) : NAN;
        qv->cal.mean_p[b] = NAN;
        any |= qv->cal.n[b] > 0 && json_is_number(rv);
    }
    qv->have_cal = any && strcmp(qv->task, "binary") == 0;
}

static qver *version_get(monitor *m, qmodel *qm, int64_t version)
{
    for (qver *qv = qm->versions; qv; qv = qv->next)
        if (qv->version == version) {
            version_resolve(m, qm, qv);
            return qv;
        }
    qver *qv = calloc(1, sizeof *qv);
    if (!qv)
        return NULL;
    qv->version = version;
    qv->next_seq = 1;
    qv->next = qm->versions;
    qm->versions = qv;
    version_resolve(m, qm, qv);
    return qv;
}

static qest *est_find(qver *qv, int64_t seq)
{
    for (qest *e = qv->ests; e; e = e->next)
        if (e->seq == seq)
            return e;
    return NULL;
}

static int push2(double **a, double **b, size_t *n, size_t *cap, double x, double y)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        double *na = realloc(*a, nc * sizeof *na);
        if (!na)
            return -1;
        *a = na;
        double *nb = realloc(*b, nc * sizeof *nb);
        if (!nb)
            return -1;
        *b = nb;
        *cap = nc;
    }
    (*a)[*n] = x;
    (*b)[*n] = y;
    (*n)++;
    return 0;
}

/* ---- reports ------------------------------------------------------------ */

static const char *const lower_better[] = {"log_loss", "brier", "rmse", "mae", NULL};

static int is_lower_better(const char *metric)
{
    for (size_t i = 0; lower_better[i]; i++)
        if (strcmp(lower_better[i], metric) == 0)
            return 1;
    return 0;
}

static void set_gauge(qn_metric *g, const char *model, int64_t version, const char *metric, double v)
{
    char vs[24];
    snprintf(vs, sizeof vs, "%lld", (long long)version);
    const char *l[] = {model, vs, metric};
    if (isfinite(v))
        qn_gauge_set(g, l, v);
    else
        qn_metric_remove(g, l);
}

/* {"live":v,"reference":r,"degraded":b} of one metric into metrics; the
 * gauge set; *degraded and the degraded list updated. */
static void add_metric(monitor *m, json_t *metrics, json_t *worse, const qver *qv, const char *model,
                       const char *name, double v, const char *undefined)
{
    json_t *o = json_object();
    const json_t *rj = json_object_get(qv->ref, name);
    double ref = json_is_number(rj) ? json_number_value(rj) : NAN;
    json_object_set_new(o, "live", isfinite(v) ? json_real(v) : json_null());
    if (undefined)
        json_object_set_new(o, "undefined", json_string(undefined));
    json_object_set_new(o, "reference", isfinite(ref) ? json_real(ref) : json_null());
    int bad = 0;
    if (isfinite(v) && isfinite(ref) && strcmp(name, "mean_error") != 0) {
        double slack = m->quality_margin * fabs(ref);
        bad = is_lower_better(name) ? v > ref + slack : v < ref - slack;
        json_object_set_new(o, "degraded", json_boolean(bad));
    }
    if (bad)
        json_array_append_new(worse, json_string(name));
    json_object_set_new(metrics, name, o);
    set_gauge(m->m_quality, model, qv->version, name, v);
}

/* Stores report (kind "live" or "estimate") in its own transaction, trims the
 * history, and appends quern.quality.reported when event. *id out. Or, with
 * update_id > 0, rewrites that stored report. */
static int store_report(monitor *m, const char *model, int64_t version, const char *kind, json_t *report,
                        int event, int64_t update_id, int64_t *id_out, qn_err *err)
{
    int rc;
    int64_t now = qn_now_ms(), id = update_id;
    qn_conn *c = qn_store_acquire(m->db, err);
    if (!c)
        return err->code;
    if ((rc = qn_tx_begin(c, QN_TX_WRITE, err)) < 0)
        goto out;
    qn_stmt *st;
    if (!id) {
        if (!(st = qn_prepare(c, "SELECT COALESCE(MAX(id), 0) + 1 FROM quality_reports", err)) ||
            (rc = qn_step(st, err)) != 1) {
            rc = rc < 0 ? rc : qn_err_set(err, QN_INTERNAL, "no next report id");
            goto fail;
        }
        id = qn_col_int64(st, 0);
        if ((rc = qn_step(st, err)) < 0)
            goto fail;
    }
    json_object_set_new(report, "id", json_integer(id));
    char *text = qn_json_canonical(report);
    if (!text) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    st = update_id ? qn_prepare(c, "UPDATE quality_reports SET report = ? WHERE id = ?", err)
                   : qn_prepare(c, "INSERT INTO quality_reports (report, id, model, version, kind, created_at) "
                                   "VALUES (?, ?, ?, ?, ?, ?)", err);
    if (st) {
        qn_bind_text(st, 1, text, -1);
        qn_bind_int64(st, 2, id);
        if (!update_id) {
            qn_bind_text(st, 3, model, -1);
            qn_bind_int64(st, 4, version);
            qn_bind_text(st, 5, kind, -1);
            qn_bind_int64(st, 6, now);
        }
    }
    free(text);
    if (!st || (rc = qn_step(st, err)) < 0) {
        rc = err->code ? err->code : QN_INTERNAL;
        goto fail;
    }
    if (!update_id) {
        if (!(st = qn_prepare(c, "DELETE FROM quality_reports WHERE model = ? AND kind = ? AND id <= (SELECT id FROM "
                                 "quality_reports WHERE model = ? AND kind = ? ORDER BY id DESC LIMIT 1 OFFSET ?)", err))) {
            rc = err->code;
            goto fail;
        }
        qn_bind_text(st, 1, model, -1);
        qn_bind_text(st, 2, kind, -1);
        qn_bind_text(st, 3, model, -1);
        qn_bind_text(st, 4, kind, -1);
        qn_bind_int64(st, 5, m->history);
        if ((rc = qn_step(st, err)) < 0)
            goto fail;
    }
    if (event) {
        json_t *ev = qn_event_new("quern.quality.reported", "quern-monitor", json_incref(report), NULL);
        if (!ev || (rc = qn_outbox_append(c, ev, err)) < 0) {
            json_decref(ev);
            rc = ev ? rc : qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            goto fail;
        }
        json_decref(ev);
    }
    if ((rc = qn_tx_commit(c, err)) < 0)
        goto fail;
    if (id_out)
        *id_out = id;
    if (event)
        qn_outbox_kick(m->outbox);
    rc = 0;
    goto out;
fail:
    qn_tx_rollback(c);
out:
    qn_store_release(m->db, c);
    return rc;
}

/* The class index of label y among the version's classes; for binary
 * without classes, y itself when 0 or 1. -1 when it is no class. */
static int class_of(const qver *qv, double y)
{
    size_t n = json_array_size(qv->classes);
    if (n == 0)
        return y == 0 || y == 1 ? (int)y : -1;
    for (size_t i = 0; i < n; i++)
        if (json_number_value(json_array_get(qv->classes, i)) == y)
            return (int)i;
    return -1;
}

/* Closes the open quality window of qv: measures, stores, publishes. */
static int close_quality(monitor *m, qmodel *qm, qver *qv, qn_err *err)
{
    version_resolve(m, qm, qv);
    int64_t now = qn_now_ms();
    size_t n = qv->n;
    json_t *metrics = json_object(), *worse = json_array();
    json_t *report = json_pack("{s:s, s:I, s:s, s:{s:o, s:o, s:I}, s:o}", "model", qm->name, "version",
                               (json_int_t)qv->version, "task", qv->task[0] ? qv->task : "unknown", "window",
                               "start", qn_json_time(qv->started), "end", qn_json_time(now), "labelled",
                               (json_int_t)n, "created_at", qn_json_time(now));
    double *a = malloc((n ? n : 1) * sizeof *a), *b = malloc((n ? n : 1) * sizeof *b);
    int rc = 0;
    size_t bad = 0, k = 0;
    if (!report || !metrics || !worse || !a || !b) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    qn_err e = {0};
    double v;
    if (strcmp(qv->task, "binary") == 0) {
        for (size_t i = 0; i < n; i++) {
            int c = class_of(qv, qv->y[i]);
            if (c < 0 || !(qv->score[i] >= 0 && qv->score[i] <= 1)) {
                bad++;
                continue;
            }
            a[k] = c;
            b[k++] = qv->score[i];
        }
        if (k) {
            size_t right = 0;
            for (size_t i = 0; i < k; i++)
                right += (b[i] >= 0.5) == (a[i] == 1);
            add_metric(m, metrics, worse, qv, qm->name, "accuracy", (double)right / (double)k, NULL);
            if (qml_metric_roc_auc(a, b, k, &v, &e) < 0)
                add_metric(m, metrics, worse, qv, qm->name, "roc_auc", NAN, e.msg);
            else
                add_metric(m, metrics, worse, qv, qm->name, "roc_auc", v, NULL);
            if (qml_metric_log_loss(a, b, k, 0, &v, &e) == 0)
                add_metric(m, metrics, worse, qv, qm->name, "log_loss", v, NULL);
            if (qml_metric_brier(a, b, k, &v, &e) == 0)
                add_metric(m, metrics, worse, qv, qm->name, "brier", v, NULL);
            qml_calibration cal;
            if (qml_calibration_table(a, b, k, &cal, &e) == 0) {
                json_t *t = json_array();
                for (int i = 0; i < QML_CAL_BINS; i++)
                    json_array_append_new(t, json_pack("{s:f, s:f, s:I, s:o, s:o}", "lo", i / 10.0, "hi",
                                                       (i + 1) / 10.0, "n", (json_int_t)cal.n[i], "mean_p",
                                                       cal.n[i] > 0 ? json_real(cal.mean_p[i]) : json_null(),
                                                       "rate", cal.n[i] > 0 ? json_real(cal.rate[i]) : json_null()));
                json_object_set_new(report, "calibration", t);
            }
        }
    } else if (strcmp(qv->task, "multiclass") == 0) {
        for (size_t i = 0; i < n; i++) {
            int c = class_of(qv, qv->y[i]);
            if (c < 0) {
                bad++;
                continue;
            }
            a[k] = c;
            b[k++] = qv->score[i];
        }
        if (k && qml_metric_accuracy(a, b, k, &v, &e) == 0)
            add_metric(m, metrics, worse, qv, qm->name, "accuracy", v, NULL);
    } else if (strcmp(qv->task, "regression") == 0) {
        for (size_t i = 0; i < n; i++) {
            a[k] = qv->y[i];
            b[k++] = qv->score[i];
        }
        if (k) {
            if (qml_metric_rmse(a, b, k, &v, &e) == 0)
                add_metric(m, metrics, worse, qv, qm->name, "rmse", v, NULL);
            if (qml_metric_mae(a, b, k, &v, &e) == 0)
                add_metric(m, metrics, worse, qv, qm->name, "mae", v, NULL);
            if (qml_metric_r2(a, b, k, &v, &e) == 0)
                add_metric(m, metrics, worse, qv, qm->name, "r2", v, NULL);
            if (qml_metric_mean_error(a, b, k, &v, &e) == 0)
                add_metric(m, metrics, worse, qv, qm->name, "mean_error", v, NULL);
        }
    } else {
        json_object_set_new(report, "error", json_sprintf("the task of version %lld is unknown (no registry "
                                                          "answer yet): no metrics", (long long)qv->version));
    }
    json_object_set_new(report, "bad_labels", json_integer((json_int_t)bad));
    json_object_set_new(report, "measured", json_integer((json_int_t)k));
    json_object_set_new(report, "margin", json_real(m->quality_margin));
    int degraded = json_array_size(worse) > 0;
    json_object_set_new(report, "degraded", json_boolean(degraded));
    json_object_set(report, "degraded_metrics", worse);
    json_object_set(report, "metrics", metrics);
    if (bad) {
        const char *l[] = {qm->name, "bad_label"};
        qn_counter_add(m->m_labels, l, (double)bad);
    }
    rc = store_report(m, qm->name, qv->version, "live", report, 1, 0, NULL, err);
    if (rc == 0)
        qn_log_info(NULL, "quality window closed", "{s:s, s:I, s:I, s:b}", "model", qm->name, "version",
                    (json_int_t)qv->version, "labelled", (json_int_t)n, "degraded", degraded);
out:
    /* the window restarts whether or not the report could be stored */
    qv->n = 0;
    qv->started = 0;
    free(a);
    free(b);
    json_decref(metrics);
    json_decref(worse);
    json_decref(report);
    return rc;
}

/* ---- estimates (CBPE) ---------------------------------------------------- */

static json_t *est_json(const qmodel *qm, const qver *qv, const qest *es)
{
    json_t *r = json_pack("{s:s, s:I, s:s, s:I, s:{s:o, s:o, s:I}, s:I, s:b}", "model", qm->name, "version",
                          (json_int_t)qv->version, "kind", "estimate", "window_seq", (json_int_t)es->seq, "window",
                          "start", qn_json_time(es->started), "end", qn_json_time(es->closed_at), "predictions",
                          (json_int_t)es->n_pred, "labelled", (json_int_t)es->n_lab, "realised_ready", es->realised);
    if (!r)
        return NULL;
    json_t *est = json_pack("{s:f, s:o}", "accuracy", es->est_acc, "roc_auc",
                            isfinite(es->est_auc) ? json_real(es->est_auc) : json_null());
    if (es->undefined[0])
        json_object_set_new(est, "roc_auc_undefined", json_string(es->undefined));
    json_object_set_new(r, "estimated", est);
    const json_t *ra = json_object_get(qv->ref, "roc_auc"), *rc = json_object_get(qv->ref, "accuracy");
    json_object_set_new(r, "reference", json_pack("{s:o, s:o}", "accuracy", rc ? json_incref((json_t *)rc) : json_null(),
                                                  "roc_auc", ra ? json_incref((json_t *)ra) : json_null()));
    return r;
}

static int close_estimate(monitor *m, qmodel *qm, qver *qv, qest *es, qn_err *err)
{
    qn_err e = {0};
    es->closed = 1;
    es->closed_at = qn_now_ms();
    if (qml_cbpe_binary(es->score, es->p, es->n_pred, &es->est_acc, &es->est_auc, &e) < 0)
        return qn_err_set(err, e.code, "%s", e.msg);
    if (!isfinite(es->est_auc))
        snprintf(es->undefined, sizeof es->undefined,
                 "the calibrated probabilities are all 0 or all 1: one class only is expected");
    free(es->score);
    free(es->p);
    es->score = es->p = NULL;
    set_gauge(m->m_estimated, qm->name, qv->version, "accuracy", es->est_acc);
    set_gauge(m->m_estimated, qm->name, qv->version, "roc_auc", es->est_auc);
    json_t *r = est_json(qm, qv, es);
    if (!r)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    int rc = store_report(m, qm->name, qv->version, "estimate", r, 0, 0, &es->report_id, err);
    json_decref(r);
    return rc;
}

/* When every prediction of a closed estimation window is resolved: the
 * realised accuracy and AUC of its labelled rows and the estimate's error. */
static int realise_estimate(monitor *m, qmodel *qm, qver *qv, qest *es, qn_err *err)
{
    if (!es->closed || es->realised || es->n_resolved < es->n_pred)
        return 0;
    es->realised = 1;
    json_t *r = est_json(qm, qv, es);
    if (!r)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    json_t *real = json_object();
    size_t k = 0, right = 0;
    double *a = malloc((es->n_lab ? es->n_lab : 1) * sizeof *a);
    double *b = malloc((es->n_lab ? es->n_lab : 1) * sizeof *b);
    if (!real || !a || !b) {
        free(a);
        free(b);
        json_decref(real);
        json_decref(r);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t i = 0; i < es->n_lab; i++) {
        int c = class_of(qv, es->lab_y[i]);
        if (c < 0)
            continue;
        a[k] = c;
        b[k] = es->lab_score[i];
        right += (b[k] >= 0.5) == (c == 1);
        k++;
    }
    json_object_set_new(real, "labelled", json_integer((json_int_t)k));
    json_t *errj = json_object();
    if (k) {
        double acc = (double)right / (double)k, auc;
        json_object_set_new(real, "accuracy", json_real(acc));
        json_object_set_new(errj, "accuracy", json_real(es->est_acc - acc));
        qn_err e = {0};
        if (qml_metric_roc_auc(a, b, k, &auc, &e) == 0) {
            json_object_set_new(real, "roc_auc", json_real(auc));
            if (isfinite(es->est_auc))
                json_object_set_new(errj, "roc_auc", json_real(es->est_auc - auc));
            set_gauge(m->m_estimate_error, qm->name, qv->version, "roc_auc",
                      isfinite(es->est_auc) ? es->est_auc - auc : NAN);
        } else {
            json_object_set_new(real, "roc_auc", json_null());
            json_object_set_new(real, "roc_auc_undefined", json_string(e.msg));
        }
        set_gauge(m->m_estimate_error, qm->name, qv->version, "accuracy", es->est_acc - acc);
    } else {
        json_object_set_new(real, "undefined", json_string("no prediction of the window was labelled"));
    }
    json_object_set_new(r, "realised", real);
    json_object_set_new(r, "error", errj);
    free(a);
    free(b);
    int rc = es->report_id ? store_report(m, qm->name, qv->version, "estimate", r, 0, es->report_id, NULL, err) : 0;
    json_decref(r);
    free(es->lab_score);
    free(es->lab_y);
    es->lab_score = es->lab_y = NULL;
    es->n_lab = es->cap_lab = 0;
    return rc;
}

/* Drops realised estimation windows past MAX_ESTIMATES (the oldest). */
static void trim_estimates(qver *qv)
{
    size_t n = 0;
    for (qest **pp = &qv->ests; *pp;) {
        qest *e = *pp;
        if (++n > MAX_ESTIMATES) {
            *pp = e->next;
            est_free(e);
            qv->n_ests--;
        } else {
            pp = &e->next;
        }
    }
}

/* A pending entry leaves without a label (expired or evicted). */
static void resolve_unlabelled(monitor *m, qpend *e)
{
    if (!e->est)
        return;
    qest *es = est_find(e->qv, e->est);
    if (!es)
        return;
    es->n_resolved++;
    qn_err err;
    if (realise_estimate(m, e->qm, e->qv, es, &err) < 0)
        qn_log_warn(NULL, "estimate not stored", "{s:s, s:s}", "model", e->qm->name, "detail", err.msg);
}

/* ---- the public entry points --------------------------------------------- */

int mon_quality_new(monitor *m, qn_err *err)
{
    if (!(m->quality = calloc(1, sizeof *m->quality)) || table_grow(m->quality) < 0)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    return 0;
}

void mon_quality_free(monitor *m)
{
    mon_quality *q = m->quality;
    if (!q)
        return;
    for (qpend *e = q->oldest; e;) {
        qpend *nx = e->newer;
        free(e);
        e = nx;
    }
    while (q->models) {
        qmodel *qm = q->models;
        q->models = qm->next;
        while (qm->versions) {
            qver *qv = qm->versions;
            qm->versions = qv->next;
            while (qv->ests) {
                qest *es = qv->ests;
                qv->ests = es->next;
                est_free(es);
            }
            json_decref(qv->ref);
            json_decref(qv->classes);
            free(qv->score);
            free(qv->y);
            free(qv);
        }
        free(qm);
    }
    for (qheld *h = q->held_oldest; h;) {
        qheld *nx = h->newer;
        free(h);
        h = nx;
    }
    free(q->buckets);
    free(q);
    m->quality = NULL;
}

static void count(monitor *m, const char *model, const char *result, double n)
{
    const char *l[] = {model, result};
    qn_counter_add(m->m_labels, l, n);
}

static void persist_count(monitor *m, const char *model, const char *name, int64_t n);
static void join_pending(monitor *m, qpend *e, double y);
static void join_all(monitor *m, qpend *e, double y);
static int held_take(mon_quality *q, const char *model, const char *id, uint64_t hash, double *y);
static void held_drop_oldest(monitor *m);

/* The prediction as a score: a number; the argmax of an array (multiclass);
 * NAN for anything else (a recommender's object). */
static double score_of(const json_t *pred, const char *task)
{
    if (json_is_number(pred))
        return json_number_value(pred);
    if (json_is_array(pred) && json_array_size(pred) > 0) {
        if (strcmp(task, "binary") == 0 && json_array_size(pred) == 2)
            return json_number_value(json_array_get(pred, 1));
        size_t best = 0;
        for (size_t i = 1; i < json_array_size(pred); i++)
            if (json_number_value(json_array_get(pred, i)) > json_number_value(json_array_get(pred, best)))
                best = i;
        return (double)best;
    }
    return NAN;
}
/* Links e (its hash set) as the newest pending prediction of q and of its model. */
static void pending_link(mon_quality *q, qmodel *qm, qpend *e)
{
    qpend **pp = &q->buckets[e->hash & (q->nbuckets - 1)];
    while (*pp)
        pp = &(*pp)->hnext;
    *pp = e;
    e->older = q->newest;
    if (q->newest)
        q->newest->newer = e;
    else
        q->oldest = e;
    q->newest = e;
    q->count++;
    qm->pending++;
}


void mon_quality_predictions(monitor *m, const char *model, int64_t version, const json_t *preds)
{
    mon_quality *q = m->quality;
    qmodel *qm = model_get(q, model, 1);
    if (!qm || qm->rec)
        return;
    qver *qv = NULL;
    int64_t now = qn_now_ms();
    size_t i, added = 0, evicted = 0;
    json_t *p;
    json_array_foreach(preds, i, p) {
        const char *id = json_string_value(json_object_get(p, "request_id"));
        const json_t *pred = json_object_get(p, "prediction");
        if (json_is_object(pred)) { /* a recommendation: hit-rate's business */
            qm->rec = 1;
            return;
        }
        if (!id || !*id || strlen(id) > 256)
            continue;
        if (!qv && !(qv = version_get(m, qm, version)))
            return;
        if (strcmp(qv->task, "ranking") == 0) {
            qm->rec = 1;
            return;
        }
        double s = score_of(pred, qv->task);
        if (!isfinite(s))
            continue;
        /* room: the oldest entry of any model makes way */
        while (q->count >= (size_t)m->max_pending && q->oldest) {
            qpend *old = q->oldest;
            unlink_pending(q, old);
            resolve_unlabelled(m, old);
            count(m, old->qm->name, "evicted", 1);
            old->qm->evicted++;
            evicted++;
            free(old);
        }
        if (q->count >= q->nbuckets && table_grow(q) < 0)
            return;
        size_t idn = strlen(id);
        qpend *e = calloc(1, sizeof *e + idn + 1);
        if (!e)
            return;
        memcpy(e->id, id, idn + 1);
        e->qm = qm;
        e->qv = qv;
        e->arrived = now;
        e->score = s;
        e->hash = key_hash(model, id);
        /* CBPE: the open estimation window of a calibrated binary classifier */
        if (qv->have_cal && s >= 0 && s <= 1) {
            qest *es = qv->ests;
            if (!es || es->closed) {
                if (!(es = calloc(1, sizeof *es))) {
                    free(e);
                    return;
                }
                es->seq = qv->next_seq++;
                es->started = now;
                es->next = qv->ests;
                qv->ests = es;
                qv->n_ests++;
            }
            if (push2(&es->score, &es->p, &es->n_pred, &es->cap, s, qml_calibrate(&qv->cal, s)) == 0) {
                e->est = es->seq;
                qn_err err;
                if (es->n_pred >= (size_t)m->quality_window) {
                    if (close_estimate(m, qm, qv, es, &err) < 0)
                        qn_log_warn(NULL, "estimate not stored", "{s:s, s:s}", "model", model, "detail", err.msg);
                    trim_estimates(qv);
                }
            }
        }
        pending_link(q, qm, e);
        added++;
        double y;
        if (q->n_held && held_take(q, model, id, e->hash, &y)) {
            count(m, model, "joined", 1);
            persist_count(m, model, "joined", 1);
            join_all(m, e, y);
        }
    }
    if (added || evicted)
        qn_gauge_set(m->m_pending, NULL, (double)q->count);
}

int mon_quality_peek(monitor *m, const json_t *data, mon_label *out)
{
    memset(out, 0, sizeof *out);
    const char *model = json_string_value(json_object_get(data, "model"));
    const char *id = json_string_value(json_object_get(data, "request_id"));
    const json_t *value = json_object_get(data, "value");
    const json_t *label = json_object_get(data, "label");
    if (json_is_null(value))
        value = NULL;
    if (json_is_null(label))
        label = NULL;
    /* purchases of recommended items (item named) are hit-rate's, not labels */
    if (!model || !id || (!value && !label) || json_object_get(data, "item"))
        return out->result = MON_LABEL_NONE;
    qmodel *qm = model_get(m->quality, model, 0);
    if (qm && qm->rec)
        return out->result = MON_LABEL_NONE;
    /* the label as a number: value first (numeric by ingest's schema), then label */
    const json_t *l = value ? value : label;
    double y = NAN;
    if (json_is_number(l))
        y = json_number_value(l);
    else if (json_is_boolean(l))
        y = json_is_true(l) ? 1 : 0;
    else if (json_is_string(l) && json_string_length(l)) {
        char *end;
        y = strtod(json_string_value(l), &end);
        if (*end)
            y = NAN;
    }
    if (!isfinite(y))
        return out->result = MON_LABEL_BAD;
    out->y = y;
    out->pending = find_pending(m->quality, model, id);
    return out->result = out->pending ? MON_LABEL_JOINED : m->label_grace_ms > 0 ? MON_LABEL_HELD : MON_LABEL_UNJOINED;
}

const char *mon_label_name(int result)
{
    switch (result) {
    case MON_LABEL_JOINED: return "joined";
    case MON_LABEL_UNJOINED: return "unjoined";
    case MON_LABEL_BAD: return "bad_label";
    default: return NULL;
    }
}

/* Adds the label count to the store's counters (labels_<name>), in its own
 * transaction: for results decided after the feedback's own transaction. */
static void persist_count(monitor *m, const char *model, const char *name, int64_t n)
{
    qn_err err;
    char key[40];
    snprintf(key, sizeof key, "labels_%s", name);
    qn_conn *c = qn_store_acquire(m->db, &err);
    if (!c)
        goto fail;
    qn_stmt *st = NULL;
    if (qn_tx_begin(c, QN_TX_WRITE, &err) == 0 &&
        (st = qn_prepare(c, "INSERT INTO counters (model, name, value) VALUES (?, ?, ?) ON CONFLICT (model, name) "
                            "DO UPDATE SET value = counters.value + excluded.value", &err))) {
        qn_bind_text(st, 1, model, -1);
        qn_bind_text(st, 2, key, -1);
        qn_bind_int64(st, 3, n);
        if (qn_step(st, &err) >= 0 && qn_tx_commit(c, &err) == 0) {
            qn_store_release(m->db, c);
            return;
        }
    }
    qn_tx_rollback(c);
    qn_store_release(m->db, c);
fail:
    qn_log_warn(NULL, "label count not stored", "{s:s, s:s, s:s}", "model", model, "result", name, "detail", err.msg);
}

/* The pending prediction e meets its label y: out of the table, into the
 * estimation window's labelled rows and the open quality window. */
static void join_pending(monitor *m, qpend *e, double y)
{
    mon_quality *q = m->quality;
    unlink_pending(q, e);
    qn_gauge_set(m->m_pending, NULL, (double)q->count);
    qmodel *qm = e->qm;
    qver *qv = e->qv;
    qn_err err;
    if (e->est) {
        qest *es = est_find(qv, e->est);
        if (es) {
            es->n_resolved++;
            push2(&es->lab_score, &es->lab_y, &es->n_lab, &es->cap_lab, e->score, y);
            if (realise_estimate(m, qm, qv, es, &err) < 0)
                qn_log_warn(NULL, "estimate not stored", "{s:s, s:s}", "model", qm->name, "detail", err.msg);
        }
    }
    if (qv->n == 0)
        qv->started = qn_now_ms();
    if (push2(&qv->score, &qv->y, &qv->n, &qv->cap, e->score, y) == 0 && qv->n >= (size_t)m->quality_window &&
        close_quality(m, qm, qv, &err) < 0)
        qn_log_warn(NULL, "quality report not stored", "{s:s, s:s}", "model", qm->name, "detail", err.msg);
    free(e);
}

/* The label y joins e and the oldest pending entry of each other version
 * with e's (model, id), at most JOIN_VERSIONS in all; the labelled request
 * goes to the promotion policy. */
static void join_all(monitor *m, qpend *e, double y)
{
    mon_quality *q = m->quality;
    qpend *with[JOIN_VERSIONS] = {e};
    int64_t vers[JOIN_VERSIONS] = {e->qv->version};
    double scores[JOIN_VERSIONS] = {e->score};
    size_t n = 1;
    for (qpend *o = q->buckets[e->hash & (q->nbuckets - 1)]; o && n < JOIN_VERSIONS; o = o->hnext) {
        if (o == e || o->hash != e->hash || o->qm != e->qm || strcmp(o->id, e->id) != 0)
            continue;
        int seen = 0;
        for (size_t i = 0; i < n; i++)
            seen |= with[i]->qv == o->qv;
        if (seen)
            continue;
        with[n] = o;
        vers[n] = o->qv->version;
        scores[n++] = o->score;
    }
    const char *model = e->qm->name;
    mon_promote_label(m, model, y, n, vers, scores);
    for (size_t i = 0; i < n; i++)
        join_pending(m, with[i], y);
}

/* The oldest held label leaves unjoined. */
static void held_drop_oldest(monitor *m)
{
    mon_quality *q = m->quality;
    qheld *h = q->held_oldest;
    qheld **pp = &q->held[h->hash & (HELD_BUCKETS - 1)];
    while (*pp && *pp != h)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = h->hnext;
    q->held_oldest = h->newer;
    if (!q->held_oldest)
        q->held_newest = NULL;
    q->n_held--;
    count(m, h->model, "unjoined", 1);
    persist_count(m, h->model, "unjoined", 1);
    free(h);
}

/* Takes the held label of (model, id) out of the table (the list keeps it,
 * marked with y = NAN, until it reaches the head). 1 with *y, or 0. */
static int held_take(mon_quality *q, const char *model, const char *id, uint64_t hash, double *y)
{
    for (qheld **pp = &q->held[hash & (HELD_BUCKETS - 1)]; *pp; pp = &(*pp)->hnext) {
        qheld *h = *pp;
        if (h->hash == hash && !isnan(h->y) && strcmp(h->id, id) == 0 && strcmp(h->model, model) == 0) {
            *y = h->y;
            h->y = NAN;
            return 1;
        }
    }
    return 0;
}

void mon_quality_apply(monitor *m, const json_t *data, const mon_label *l)
{
    const char *model = json_string_value(json_object_get(data, "model"));
    const char *name = mon_label_name(l->result);
    if (name)
        count(m, model, name, 1);
    if (l->result == MON_LABEL_JOINED) {
        join_all(m, l->pending, l->y);
        return;
    }
    if (l->result != MON_LABEL_HELD)
        return;
    /* Not logged yet, perhaps: serve publishes its log every second. Held
     * for --label-grace, joined if its prediction comes, else unjoined. */
    mon_quality *q = m->quality;
    const char *id = json_string_value(json_object_get(data, "request_id"));
    size_t idn = strlen(id);
    qheld *h = calloc(1, sizeof *h + idn + 1);
    if (!h) {
        count(m, model, "unjoined", 1);
        persist_count(m, model, "unjoined", 1);
        return;
    }
    while (q->n_held >= MAX_HELD && q->held_oldest)
        held_drop_oldest(m);
    snprintf(h->model, sizeof h->model, "%s", model);
    memcpy(h->id, id, idn + 1);
    h->y = l->y;
    h->arrived = qn_now_ms();
    h->hash = key_hash(model, id);
    qheld **pp = &q->held[h->hash & (HELD_BUCKETS - 1)];
    h->hnext = *pp;
    *pp = h;
    if (q->held_newest)
        q->held_newest->newer = h;
    else
        q->held_oldest = h;
    q->held_newest = h;
    q->n_held++;
}

void mon_quality_tick(monitor *m, int force_model_only, const char *model)
{
    mon_quality *q = m->quality;
    int64_t now = qn_now_ms();
    qn_err err;
    if (!force_model_only) {
        size_t expired = 0;
        while (q->oldest && now - q->oldest->arrived > m->label_horizon_ms) {
            qpend *e = q->oldest;
            unlink_pending(q, e);
            resolve_unlabelled(m, e);
            count(m, e->qm->name, "expired", 1);
            e->qm->expired++;
            expired++;
            free(e);
        }
        if (expired)
            qn_gauge_set(m->m_pending, NULL, (double)q->count);
        while (q->held_oldest && (isnan(q->held_oldest->y) || now - q->held_oldest->arrived > m->label_grace_ms)) {
            if (isnan(q->held_oldest->y)) { /* joined already: just leaves */
                qheld *h = q->held_oldest;
                qheld **pp = &q->held[h->hash & (HELD_BUCKETS - 1)];
                while (*pp && *pp != h)
                    pp = &(*pp)->hnext;
                if (*pp)
                    *pp = h->hnext;
                q->held_oldest = h->newer;
                if (!q->held_oldest)
                    q->held_newest = NULL;
                q->n_held--;
                free(h);
            } else {
                held_drop_oldest(m);
            }
        }
    }
    for (qmodel *qm = q->models; qm; qm = qm->next) {
        if (model && strcmp(model, qm->name) != 0)
            continue;
        for (qver *qv = qm->versions; qv; qv = qv->next) {
            int due = qv->n > 0 && (force_model_only || (now - qv->started >= m->quality_window_seconds * 1000 &&
                                                          qv->n >= (size_t)m->quality_min_rows));
            if (due && close_quality(m, qm, qv, &err) < 0)
                qn_log_warn(NULL, "quality report not stored", "{s:s, s:s}", "model", qm->name, "detail", err.msg);
            qest *es = qv->ests;
            if (es && !es->closed && es->n_pred > 0 &&
                (force_model_only || (now - es->started >= m->quality_window_seconds * 1000 &&
                                      es->n_pred >= (size_t)m->quality_min_rows))) {
                if (close_estimate(m, qm, qv, es, &err) < 0 ||
                    realise_estimate(m, qm, qv, es, &err) < 0)
                    qn_log_warn(NULL, "estimate not stored", "{s:s, s:s}", "model", qm->name, "detail", err.msg);
                trim_estimates(qv);
            }
        }
    }
}

size_t mon_quality_pending(monitor *m)
{
    return m->quality ? m->quality->count : 0;
}

json_t *mon_quality_state(monitor *m, const char *model)
{
    json_t *open = json_array();
    qmodel *qm = model_get(m->quality, model, 0);
    size_t pending = 0;
    if (qm) {
        pending = qm->pending;
        for (qver *qv = qm->versions; qv; qv = qv->next) {
            size_t awaiting = 0;
            for (qest *es = qv->ests; es; es = es->next)
                awaiting += es->closed && !es->realised;
            json_array_append_new(open, json_pack("{s:I, s:s, s:I, s:o, s:b, s:I}", "version", (json_int_t)qv->version,
                                                  "task", qv->task[0] ? qv->task : "unknown", "labelled",
                                                  (json_int_t)qv->n, "started",
                                                  qv->n ? qn_json_time(qv->started) : json_null(), "calibrated",
                                                  qv->have_cal, "estimates_awaiting_labels", (json_int_t)awaiting));
        }
    }
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "held_labels", (json_int_t)m->quality->n_held,
                     "pending", (json_int_t)pending, "pending_all_models",
                     (json_int_t)m->quality->count, "max_pending", (json_int_t)m->max_pending, "expired",
                     (json_int_t)(qm ? qm->expired : 0), "evicted", (json_int_t)(qm ? qm->evicted : 0), "windows",
                     open);
}

/* ---- checkpoint (checkpoint.c) --------------------------------------------- */

static void put_doubles(qn_buf *b, const double *v, size_t n)
{
    if (n)
        qn_buf_append(b, v, n * sizeof *v);
}

/* n doubles from r into a fresh array (NULL for none); -1 when out of memory. */
static int get_doubles(mon_rd *r, size_t n, double **out)
{
    *out = NULL;
    if (!n || r->bad)
        return 0;
    if (n > (r->n - r->off) / sizeof(double)) {
        r->bad = 1;
        return 0;
    }
    if (!(*out = malloc(n * sizeof(double))))
        return -1;
    return mon_rd_get(r, *out, n * sizeof(double)), 0;
}

/* Models (their versions: open quality window, estimation windows), then
 * the pending entries oldest first (each naming its version by ordinal),
 * then the held labels oldest first. Task, reference metrics and
 * calibration are not saved: they are asked of the registry again. */
void mon_quality_save(monitor *m, qn_buf *b)
{
    mon_quality *q = m->quality;
    size_t nm = 0;
    int64_t ord = 0;
    for (qmodel *qm = q->models; qm; qm = qm->next)
        nm++;
    mon_buf_i64(b, (int64_t)nm);
    for (qmodel *qm = q->models; qm; qm = qm->next) {
        size_t nv = 0;
        for (qver *qv = qm->versions; qv; qv = qv->next)
            nv++;
        mon_buf_str(b, qm->name);
        mon_buf_i64(b, qm->rec);
        mon_buf_i64(b, qm->expired);
        mon_buf_i64(b, qm->evicted);
        mon_buf_i64(b, (int64_t)nv);
        for (qver *qv = qm->versions; qv; qv = qv->next) {
            qv->ck_ord = ord++; /* the pending entries name it by this */
            mon_buf_i64(b, qv->version);
            mon_buf_i64(b, qv->started);
            mon_buf_i64(b, (int64_t)qv->n);
            put_doubles(b, qv->score, qv->n);
            put_doubles(b, qv->y, qv->n);
            mon_buf_i64(b, qv->next_seq);
            mon_buf_i64(b, (int64_t)qv->n_ests);
            for (qest *es = qv->ests; es; es = es->next) {
                mon_buf_i64(b, es->seq);
                mon_buf_i64(b, es->report_id);
                mon_buf_i64(b, es->started);
                mon_buf_i64(b, es->closed_at);
                mon_buf_i64(b, (int64_t)es->n_resolved);
                mon_buf_i64(b, es->closed | es->realised << 1 | (es->score != NULL) << 2);
                mon_buf_i64(b, (int64_t)es->n_pred);
                if (es->score) {
                    put_doubles(b, es->score, es->n_pred);
                    put_doubles(b, es->p, es->n_pred);
                }
                mon_buf_i64(b, (int64_t)es->n_lab);
                put_doubles(b, es->lab_score, es->n_lab);
                put_doubles(b, es->lab_y, es->n_lab);
                mon_buf_f64(b, es->est_acc);
                mon_buf_f64(b, es->est_auc);
                mon_buf_str(b, es->undefined);
            }
        }
    }
    mon_buf_i64(b, (int64_t)q->count);
    (void)qn_buf_reserve(b, q->count * 56); /* 34 bytes and the id (most are short) */
    for (qpend *e = q->oldest; e; e = e->newer) {
        mon_buf_i64(b, e->qv->ck_ord);
        mon_buf_i64(b, e->arrived);
        mon_buf_f64(b, e->score);
        mon_buf_i64(b, e->est);
        mon_buf_str(b, e->id);
    }
    size_t nh = 0;
    for (qheld *h = q->held_oldest; h; h = h->newer)
        nh += !isnan(h->y);
    mon_buf_i64(b, (int64_t)nh);
    for (qheld *h = q->held_oldest; h; h = h->newer) {
        if (isnan(h->y))
            continue; /* joined already */
        mon_buf_str(b, h->model);
        mon_buf_str(b, h->id);
        mon_buf_f64(b, h->y);
        mon_buf_i64(b, h->arrived);
    }
}

#define OOM(err) qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory loading the checkpoint")
#define BAD(err) qn_err_set(err, QN_DATA_LOSS, "the quality checkpoint does not read (truncated or corrupt)")

int mon_quality_load(monitor *m, mon_rd *r, qn_err *err)
{
    mon_quality *q = m->quality;
    qver **vers = NULL;     /* by ordinal */
    qmodel **vmodels = NULL; /* the model of each */
    size_t nvers = 0, capv = 0;
    int rc = 0;
    size_t nm = mon_rd_count(r, 34);
    qmodel **mtail = &q->models;
    for (size_t i = 0; i < nm && !r->bad; i++) {
        qmodel *qm = calloc(1, sizeof *qm);
        if (!qm) {
            rc = OOM(err);
            goto out;
        }
        *mtail = qm; /* linked at once: freed with the state on failure */
        mtail = &qm->next;
        mon_rd_str(r, qm->name, sizeof qm->name);
        qm->rec = mon_rd_i64(r) != 0;
        qm->expired = mon_rd_i64(r);
        qm->evicted = mon_rd_i64(r);
        size_t nv = mon_rd_count(r, 40);
        qver **vtail = &qm->versions;
        for (size_t j = 0; j < nv && !r->bad; j++) {
            qver *qv = calloc(1, sizeof *qv);
            if (!qv) {
                rc = OOM(err);
                goto out;
            }
            *vtail = qv;
            vtail = &qv->next;
            if (nvers == capv) {
                size_t nc = capv ? capv * 2 : 16;
                qver **nvv = realloc(vers, nc * sizeof *nvv);
                if (nvv)
                    vers = nvv;
                qmodel **nmm = realloc(vmodels, nc * sizeof *nmm);
                if (nmm)
                    vmodels = nmm;
                if (!nvv || !nmm) {
                    rc = OOM(err);
                    goto out;
                }
                capv = nc;
            }
            vmodels[nvers] = qm;
            vers[nvers++] = qv;
            qv->version = mon_rd_i64(r);
            qv->started = mon_rd_i64(r);
            qv->n = qv->cap = mon_rd_count(r, 16);
            if (get_doubles(r, qv->n, &qv->score) < 0 || get_doubles(r, qv->n, &qv->y) < 0) {
                rc = OOM(err);
                goto out;
            }
            qv->next_seq = mon_rd_i64(r);
            size_t ne = mon_rd_count(r, 82);
            qest **etail = &qv->ests;
            for (size_t k = 0; k < ne && !r->bad; k++) {
                qest *es = calloc(1, sizeof *es);
                if (!es) {
                    rc = OOM(err);
                    goto out;
                }
                *etail = es;
                etail = &es->next;
                qv->n_ests++;
                es->seq = mon_rd_i64(r);
                es->report_id = mon_rd_i64(r);
                es->started = mon_rd_i64(r);
                es->closed_at = mon_rd_i64(r);
                es->n_resolved = (size_t)mon_rd_i64(r);
                int64_t flags = mon_rd_i64(r);
                es->closed = flags & 1;
                es->realised = (flags >> 1) & 1;
                es->n_pred = mon_rd_count(r, 0);
                if (flags & 4) {
                    es->cap = es->n_pred;
                    if (get_doubles(r, es->n_pred, &es->score) < 0 || get_doubles(r, es->n_pred, &es->p) < 0) {
                        rc = OOM(err);
                        goto out;
                    }
                }
                es->n_lab = es->cap_lab = mon_rd_count(r, 16);
                if (get_doubles(r, es->n_lab, &es->lab_score) < 0 || get_doubles(r, es->n_lab, &es->lab_y) < 0) {
                    rc = OOM(err);
                    goto out;
                }
                es->est_acc = mon_rd_f64(r);
                es->est_auc = mon_rd_f64(r);
                mon_rd_str(r, es->undefined, sizeof es->undefined);
                if (!(flags & 4) && !es->closed)
                    r->bad = 1; /* an open window keeps its scores */
            }
        }
    }
    /* pending, oldest first: the oldest make way past --max-pending, as at run time */
    size_t np = mon_rd_count(r, 34);
    for (size_t i = 0; i < np && !r->bad; i++) {
        int64_t ord = mon_rd_i64(r), arrived = mon_rd_i64(r);
        double score = mon_rd_f64(r);
        int64_t est = mon_rd_i64(r);
        char id[257];
        mon_rd_str(r, id, sizeof id);
        if (r->bad || ord < 0 || (size_t)ord >= nvers || !id[0]) {
            r->bad = 1;
            break;
        }
        qver *qv = vers[ord];
        qmodel *qm = vmodels[ord];
        while (q->count >= (size_t)m->max_pending && q->oldest) {
            qpend *old = q->oldest;
            unlink_pending(q, old);
            resolve_unlabelled(m, old);
            count(m, old->qm->name, "evicted", 1);
            old->qm->evicted++;
            free(old);
        }
        if (q->count >= q->nbuckets && table_grow(q) < 0) {
            rc = OOM(err);
            goto out;
        }
        size_t idn = strlen(id);
        qpend *e = calloc(1, sizeof *e + idn + 1);
        if (!e) {
            rc = OOM(err);
            goto out;
        }
        memcpy(e->id, id, idn + 1);
        e->qm = qm;
        e->qv = qv;
        e->arrived = arrived;
        e->score = score;
        e->est = est;
        e->hash = key_hash(qm->name, id);
        pending_link(q, qm, e);
    }
    size_t nh = mon_rd_count(r, 20);
    for (size_t i = 0; i < nh && !r->bad; i++) {
        char model[129], id[257];
        mon_rd_str(r, model, sizeof model);
        mon_rd_str(r, id, sizeof id);
        double y = mon_rd_f64(r);
        int64_t arrived = mon_rd_i64(r);
        if (r->bad || !model[0] || !id[0] || !isfinite(y)) {
            r->bad = 1;
            break;
        }
        while (q->n_held >= MAX_HELD && q->held_oldest)
            held_drop_oldest(m);
        size_t idn = strlen(id);
        qheld *h = calloc(1, sizeof *h + idn + 1);
        if (!h) {
            rc = OOM(err);
            goto out;
        }
        memcpy(h->model, model, sizeof h->model);
        memcpy(h->id, id, idn + 1);
        h->y = y;
        h->arrived = arrived;
        h->hash = key_hash(model, id);
        qheld **pp = &q->held[h->hash & (HELD_BUCKETS - 1)];
        h->hnext = *pp;
        *pp = h;
        if (q->held_newest)
            q->held_newest->newer = h;
        else
            q->held_oldest = h;
        q->held_newest = h;
        q->n_held++;
    }
    if (r->bad)
        rc = BAD(err);
    else
        qn_gauge_set(m->m_pending, NULL, (double)q->count);
out:
    free(vers);
    free(vmodels);
    return rc;
}
