/*
 * monitor.h - state shared by the modules of quern-monitor.
 *
 * quern-monitor (DESIGN.md section 7) consumes quern.predictions.logged,
 * quern.feedback.received and quern.model.promoted; keeps one open window per
 * (model, version) in its store; closes a window when it holds window_rows
 * rows, or when window_seconds passed with at least min_rows; compares the
 * closed window with the version's reference profile (fetched from the
 * registry: manifest "profile" -> blob) through libquern-ml; records the
 * report (bounded history) and publishes quern.drift.detected through the
 * outbox when the dataset drifted. For recommenders it also joins purchase
 * feedback to recent recommendations: live hit-rate@k.
 *
 * Exactly-once state: every event is applied in one write transaction that
 * also marks its id in the inbox, so a crash or a redelivery neither loses a
 * counted prediction nor counts one twice.
 *
 * Modules: main.c (config, schema, routes, start/stop), window.c (event
 * handlers, windows, closing, drift, hit-rate), quality.c (feedback joined
 * to logged predictions: live quality, CBPE estimates), api.c (HTTP handlers,
 * per-model settings, gauges), profiles.c (reference profiles from the
 * registry, cached), checkpoint.c (the in-memory state of quality.c and
 * promote.c saved to the store at stop and periodically, loaded at start).
 */
#ifndef QUERN_MONITOR_H
#define QUERN_MONITOR_H

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/bus/bus.h"
#include "core/client.h"
#include "core/http.h"
#include "core/metrics.h"
#include "core/ticker.h"
#include "core/outbox.h"
#include "core/store/store.h"
#include "core/subscriber.h"
#include "ml/drift.h"
#include "ml/profile.h"

#define MON_MAX_OVERRIDES 64

/* Effective settings of one model: service defaults, then its overrides. */
typedef struct mon_settings {
    int64_t window_rows;
    int64_t window_seconds;
    int64_t min_rows;
    double share;
    size_t n_methods;
    char columns[MON_MAX_OVERRIDES][129];
    qml_drift_column_opts methods[MON_MAX_OVERRIDES];  /* .column points into columns */
} mon_settings;

/* A cached reference profile of one (model, version); NULL profile with an
 * error when it could not be had (retried after a while). */
typedef struct mon_profile {
    char model[129];
    int64_t version;
    char kind[32];        /* the manifest's "kind" ("als", "xgboost", ...) */
    char task[16];        /* the manifest's params.task ("binary", "regression", ...) or "" */
    json_t *metrics;      /* the version's holdout metrics (flat), NULL when unknown */
    json_t *classes;      /* params.classes, NULL when none */
    int have_version;     /* the registry answered for this version */
    qml_profile *profile;
    char error[512];
    int64_t fetched_at;
    struct mon_profile *next;
} mon_profile;

typedef struct mon_quality mon_quality;
typedef struct mon_promote mon_promote;

typedef struct monitor {
    qn_store *db;
    qn_bus *bus;
    qn_outbox *outbox;
    qn_subscriber *sub;
    qn_client *registry;
    qn_metrics *metrics;
    /* defaults (config) */
    int64_t window_rows, window_seconds, min_rows, history, hit_k, hit_horizon_ms, max_recs;
    int publish_all;
    char *hit_outcomes;   /* comma-separated outcome/label values that count as purchases */
    char *alias;          /* the alias whose moves reset windows ("production") */
    /* every window change, close and profile lookup happens under mu */
    pthread_mutex_t mu;
    mon_profile *profiles;
    size_t n_profiles;
    /* the ticker thread closes windows by time and sweeps old rows */
    qn_ticker *ticker;
    int64_t tick_ms;
    int64_t last_sweep_ms;  /* touched by the ticker thread only */
    /* metrics */
    qn_metric *m_score;       /* quern_drift_score{model,feature,method} */
    qn_metric *m_detected;    /* quern_drift_detected{model} */
    qn_metric *m_share;       /* quern_drift_share{model} */
    qn_metric *m_hit_rate;    /* quern_live_hit_rate{model,k} */
    qn_metric *m_predictions; /* quern_monitor_predictions_total{model} */
    qn_metric *m_feedback;    /* quern_monitor_feedback_total{model,joined} */
    qn_metric *m_windows;     /* quern_monitor_windows_closed_total{model,dataset_drift} */
    qn_metric *m_window_rows; /* quern_monitor_window_rows{model,version} */
    qn_metric *m_skipped;     /* quern_monitor_predictions_skipped_total{reason} */
    /* quality (quality.c): the label join, quality windows, estimates */
    mon_quality *quality;
    int64_t label_horizon_ms, label_grace_ms, max_pending, quality_window, quality_window_seconds, quality_min_rows;
    double quality_margin;
    qn_metric *m_quality;        /* quern_quality{model,version,metric} */
    qn_metric *m_estimated;      /* quern_quality_estimated{model,version,metric} */
    qn_metric *m_estimate_error; /* quern_quality_estimate_error{model,version,metric} */
    qn_metric *m_labels;         /* quern_monitor_labels_total{model,result} */
    qn_metric *m_pending;        /* quern_monitor_pending_predictions */
    /* the promotion policy (promote.c): labelled requests per version */
    mon_promote *promote;
    /* checkpoint.c: the in-memory state saved every checkpoint_ms (0: only
     * at stop); last_checkpoint_ms touched by the ticker thread only */
    int64_t checkpoint_ms, last_checkpoint_ms;
} monitor;

/* window.c */
int mon_on_event(const qn_msg *msg, void *ud, qn_err *err);
int mon_ticker_start(monitor *m, qn_err *err);
void mon_ticker_stop(monitor *m);
/* Closes every open window of model that is due (forced: any with >= 1 row). */
int mon_close_due(monitor *m, const char *model, int force, qn_err *err);

/* quality.c (under m->mu) */
/* HELD: not pending yet; held for --label-grace, then joined or unjoined
 * (counted then, not in the feedback's own transaction). */
enum { MON_LABEL_NONE, MON_LABEL_JOINED, MON_LABEL_UNJOINED, MON_LABEL_BAD, MON_LABEL_HELD };
typedef struct mon_label {
    int result;       /* MON_LABEL_* */
    double y;         /* the label as a number */
    void *pending;    /* the prediction it joins (JOINED) */
} mon_label;
int mon_quality_new(monitor *m, qn_err *err);
void mon_quality_free(monitor *m);
/* Logged predictions of (model, version) start waiting for their labels. */
void mon_quality_predictions(monitor *m, const char *model, int64_t version, const json_t *preds);
/* What a feedback event is to the join (no change made); returns out->result. */
int mon_quality_peek(monitor *m, const json_t *data, mon_label *out);
/* The counter name of a MON_LABEL_* result, NULL for NONE. */
const char *mon_label_name(int result);
/* Applies a peeked result after its feedback was committed. */
void mon_quality_apply(monitor *m, const json_t *data, const mon_label *l);
/* Expires pending predictions past the horizon and closes windows due by
 * time; with force, closes every open window of model now. */
void mon_quality_tick(monitor *m, int force, const char *model);
/* Logged predictions waiting for their label, all models. Under m->mu. */
size_t mon_quality_pending(monitor *m);
/* In-memory state of model: pending count, open windows. */
json_t *mon_quality_state(monitor *m, const char *model);

/* promote.c: the automatic promotion / rollback policy (traffic "auto"). */
int mon_promote_new(monitor *m, qn_err *err);
void mon_promote_free(monitor *m);
/* One labelled request of model: label y, each version's score. Under m->mu. */
void mon_promote_label(monitor *m, const char *model, double y, size_t n, const int64_t *versions,
                       const double *scores);
/* The serving latencies (their "latency_us") of logged predictions preds of
 * (model, version), one per request, for latency rollback. Under m->mu. */
void mon_promote_latencies(monitor *m, const char *model, int64_t version, const json_t *preds);
/* {"<version>":{"p50","p95","requests"}} of model's kept serving latencies
 * (microseconds); an empty object when none. Takes m->mu. */
json_t *mon_promote_latency_json(monitor *m, const char *model);
/* Evaluates the policies (registry calls); the ticker, NOT under m->mu. */
void mon_promote_tick(monitor *m);

/* checkpoint.c: the in-memory state (pending predictions, held labels,
 * open quality and estimation windows, promotion evidence, latencies) as
 * one row per part of the store's checkpoint table. */
/* Appends to a checkpoint part (core/buf.h: a failure is sticky, seen by
 * qn_buf_error at the end). */
void mon_buf_i64(qn_buf *b, int64_t v);
void mon_buf_f64(qn_buf *b, double v);
void mon_buf_str(qn_buf *b, const char *s); /* at most 65535 bytes */
/* A bounds-checked reader; bad is sticky and every read after it gives 0. */
typedef struct mon_rd {
    const uint8_t *p;
    size_t n, off;
    int bad;
} mon_rd;
int mon_rd_get(mon_rd *r, void *out, size_t n);
int64_t mon_rd_i64(mon_rd *r);
double mon_rd_f64(mon_rd *r);
/* A string into out (size cap, NUL-terminated); a longer one marks r bad. */
void mon_rd_str(mon_rd *r, char *out, size_t cap);
/* A count of items of at least min_size bytes each: bad when the rest of
 * the buffer cannot hold them. */
size_t mon_rd_count(mon_rd *r, size_t min_size);
/* Writes the checkpoint (both parts) in one write transaction. Takes m->mu
 * while the state is copied out, not while it is written. */
int mon_checkpoint_write(monitor *m, qn_err *err);
/* Rebuilds the in-memory state from the checkpoint, if any. A part that
 * does not read is logged and ignored (that part starts empty); never
 * fails. Before the subscriber and the ticker start. */
void mon_checkpoint_load(monitor *m);
/* quality.c and promote.c: their state into b / back from r (into an empty
 * state; on failure the caller resets it). Under m->mu. */
void mon_quality_save(monitor *m, qn_buf *b);
int mon_quality_load(monitor *m, mon_rd *r, qn_err *err);
void mon_promote_save(monitor *m, qn_buf *b);
int mon_promote_load(monitor *m, mon_rd *r, qn_err *err);

/* api.c */
int mon_settings_load(monitor *m, qn_conn *c, const char *model, mon_settings *s, qn_err *err);
void mon_gauges_from_report(monitor *m, const char *model, const json_t *report);
int mon_gauges_restore(monitor *m, qn_err *err);
int mon_fail(qn_req *req, qn_res *res, const qn_err *err);
int mon_list(qn_req *req, qn_res *res, void *ud);
int mon_get(qn_req *req, qn_res *res, void *ud);
int mon_put(qn_req *req, qn_res *res, void *ud);
int mon_delete(qn_req *req, qn_res *res, void *ud);
int mon_report(qn_req *req, qn_res *res, void *ud);
int mon_report_get(qn_req *req, qn_res *res, void *ud);
int mon_close_now(qn_req *req, qn_res *res, void *ud);
int mon_quality_get(qn_req *req, qn_res *res, void *ud);
/* agreement.c: GET /v1/monitors/{model}/agreement, versions compared on the
 * same requests (shadow and canary traffic). */
int mon_agreement(qn_req *req, qn_res *res, void *ud);

/* profiles.c: the profile of (model, version), fetched once and cached; the
 * result stays valid while m->mu is held. NULL with err when there is none. */
const mon_profile *mon_profile_get(monitor *m, const char *model, int64_t version, qn_err *err);
/* The same entry when the registry answered for the version, even without a
 * profile (task, metrics, classes for quality). */
const mon_profile *mon_version_get(monitor *m, const char *model, int64_t version, qn_err *err);
/* Forgets the cached profiles of model (after a promotion). Under m->mu. */
void mon_profiles_forget(monitor *m, const char *model);
void mon_profiles_free(monitor *m);

/* Times: RFC 3339 string or epoch seconds (number) -> ms; def when absent or bad. */
int64_t mon_time_ms(const json_t *v, int64_t def);

#endif
