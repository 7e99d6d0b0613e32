/*
 * main.c - quern-monitor: configuration, schema, routes, start and stop.
 *
 * See monitor.h for how the pieces fit; docs/monitor.md for the API, the
 * flags and the guarantees.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/deps.h"
#include "core/json.h"
#include "core/log.h"
#include "core/outbox.h"
#include "core/service.h"
#include "monitor/monitor.h"

typedef struct monitor_cfg {
    qn_common_cfg common;
    char *db_url;
    long long window_rows, window_seconds, min_rows, history, hit_k, hit_horizon_ms, max_recs;
    long long tick_ms, lease_ms, checkpoint_ms;
    int publish_all;
    char *hit_outcomes;
    char *alias;
    long long label_horizon_ms, label_grace_ms, max_pending, quality_window, quality_window_seconds, quality_min_rows;
    char *quality_margin;
} monitor_cfg;

static const qn_cfg_opt opts[] = {
    QN_CFG_COMMON(monitor_cfg, "127.0.0.1:7707", "monitor"),
    {"db", "QUERN_MONITOR_DB", QN_CFG_STRING, NULL, 0, 0,
     "State store URL (default: sqlite://<data>/monitor.db)", offsetof(monitor_cfg, db_url)},
    {"window-rows", "QUERN_MONITOR_WINDOW_ROWS", QN_CFG_INT, "1000", 1, 100000,
     "A window closes when it holds this many predictions", offsetof(monitor_cfg, window_rows)},
    {"window-seconds", "QUERN_MONITOR_WINDOW_SECONDS", QN_CFG_INT, "300", 1, 7 * 86400,
     "...or when this many seconds passed since it opened (with at least --min-rows)",
     offsetof(monitor_cfg, window_seconds)},
    {"min-rows", "QUERN_MONITOR_MIN_ROWS", QN_CFG_INT, "50", 1, 100000,
     "Fewest rows a window needs to close by time", offsetof(monitor_cfg, min_rows)},
    {"history", "QUERN_MONITOR_HISTORY", QN_CFG_INT, "100", 1, 100000,
     "Drift reports kept per model", offsetof(monitor_cfg, history)},
    {"publish-all", "QUERN_MONITOR_PUBLISH_ALL", QN_CFG_BOOL, "false", 0, 1,
     "Publish quern.drift.detected for every closed window, not only drifted ones",
     offsetof(monitor_cfg, publish_all)},
    {"hit-k", "QUERN_MONITOR_HIT_K", QN_CFG_INT, "10", 1, 1000,
     "k of the live hit-rate@k of recommenders", offsetof(monitor_cfg, hit_k)},
    {"hit-horizon", "QUERN_MONITOR_HIT_HORIZON", QN_CFG_DURATION, "1h", 1000, 30LL * 86400000,
     "How long after a recommendation a purchase still counts for it", offsetof(monitor_cfg, hit_horizon_ms)},
    {"hit-outcomes", "QUERN_MONITOR_HIT_OUTCOMES", QN_CFG_STRING, "purchase", 0, 0,
     "Feedback outcomes/labels that count as purchases (comma-separated)", offsetof(monitor_cfg, hit_outcomes)},
    {"max-recs", "QUERN_MONITOR_MAX_RECS", QN_CFG_INT, "200000", 1, 100000000,
     "Recommendations kept for the hit-rate join", offsetof(monitor_cfg, max_recs)},
    {"alias", "QUERN_MONITOR_ALIAS", QN_CFG_STRING, "production", 0, 0,
     "Alias whose moves reset a model's windows", offsetof(monitor_cfg, alias)},
    {"label-horizon", "QUERN_MONITOR_LABEL_HORIZON", QN_CFG_DURATION, "24h", 1000, 90LL * 86400000,
     "How long a logged prediction waits for its label (feedback with its request id)",
     offsetof(monitor_cfg, label_horizon_ms)},
    {"label-grace", "QUERN_MONITOR_LABEL_GRACE", QN_CFG_DURATION, "30s", 0, 3600000,
     "How long a label whose prediction is not logged yet waits for it (0: counted unjoined at once)",
     offsetof(monitor_cfg, label_grace_ms)},
    {"max-pending", "QUERN_MONITOR_MAX_PENDING", QN_CFG_INT, "500000", 1, 100000000,
     "Logged predictions held for the label join, all models (the oldest make way)",
     offsetof(monitor_cfg, max_pending)},
    {"quality-window", "QUERN_MONITOR_QUALITY_WINDOW", QN_CFG_INT, "500", 1, 1000000,
     "A quality window closes at this many labelled predictions (an estimate window at this many predictions)",
     offsetof(monitor_cfg, quality_window)},
    {"quality-window-seconds", "QUERN_MONITOR_QUALITY_WINDOW_SECONDS", QN_CFG_INT, "3600", 1, 30 * 86400,
     "...or this many seconds after it opened, with at least --quality-min-rows",
     offsetof(monitor_cfg, quality_window_seconds)},
    {"quality-min-rows", "QUERN_MONITOR_QUALITY_MIN_ROWS", QN_CFG_INT, "30", 1, 1000000,
     "Fewest labelled rows a quality window needs to close by time", offsetof(monitor_cfg, quality_min_rows)},
    {"quality-margin", "QUERN_MONITOR_QUALITY_MARGIN", QN_CFG_STRING, "0.05", 0, 0,
     "A live metric worse than its holdout figure by more than this share of it marks the report degraded",
     offsetof(monitor_cfg, quality_margin)},
    {"tick", "QUERN_MONITOR_TICK", QN_CFG_DURATION, "1s", 50, 60000,
     "How often windows are checked for closing by time", offsetof(monitor_cfg, tick_ms)},
    {"checkpoint-interval", "QUERN_MONITOR_CHECKPOINT_INTERVAL", QN_CFG_DURATION, "30s", 0, 3600000,
     "How often the in-memory state (pending predictions, open quality windows, promotion evidence) is "
     "checkpointed to the store; 0: only at a graceful stop", offsetof(monitor_cfg, checkpoint_ms)},
    {"bus-lease", "QUERN_MONITOR_BUS_LEASE", QN_CFG_DURATION, "30s", 500, 3600000,
     "How long a received event is leased before the bus redelivers it", offsetof(monitor_cfg, lease_ms)},
};

/* Schema. window_rows hold the open windows' samples (bounded by
 * window_rows per window); reports keep --history per model; recs hold recent
 * recommendations for the hit-rate join (swept past the horizon); counters
 * are the persisted tallies (predictions, feedback, hits...). */
static const qn_migration migrations[] = {
    {1,
     "CREATE TABLE windows ("
     "  model TEXT NOT NULL, version INTEGER NOT NULL,"
     "  started_at INTEGER NOT NULL, rows INTEGER NOT NULL DEFAULT 0,"
     "  PRIMARY KEY (model, version));"
     "CREATE TABLE window_rows ("
     "  id INTEGER PRIMARY KEY, model TEXT NOT NULL, version INTEGER NOT NULL,"
     "  request_id TEXT, t INTEGER NOT NULL, features TEXT NOT NULL, prediction TEXT);"
     "CREATE INDEX window_rows_mv ON window_rows (model, version, id);"
     "CREATE TABLE reports ("
     "  id INTEGER PRIMARY KEY, model TEXT NOT NULL, version INTEGER NOT NULL,"
     "  window_start INTEGER NOT NULL, window_end INTEGER NOT NULL, rows INTEGER NOT NULL,"
     "  dataset_drift INTEGER NOT NULL, report TEXT NOT NULL, created_at INTEGER NOT NULL);"
     "CREATE INDEX reports_model ON reports (model, id);"
     "CREATE TABLE configs (model TEXT PRIMARY KEY, config TEXT NOT NULL, updated_at INTEGER NOT NULL);"
     "CREATE TABLE counters (model TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,"
     "  PRIMARY KEY (model, name));"
     "CREATE TABLE recs ("
     "  id INTEGER PRIMARY KEY, model TEXT NOT NULL, user_id TEXT NOT NULL, request_id TEXT,"
     "  t INTEGER NOT NULL, items TEXT NOT NULL);"
     "CREATE INDEX recs_user ON recs (model, user_id, t);"
     "CREATE INDEX recs_request ON recs (model, request_id);"
     "CREATE INDEX recs_t ON recs (t);"
     QN_INBOX_SCHEMA
     "CREATE INDEX inbox_received ON inbox (received_at);"
     QN_OUTBOX_SCHEMA},
    /* quality reports: "live" (from labels) and "estimate" (CBPE), --history each per model */
    {2,
     "CREATE TABLE quality_reports ("
     "  id INTEGER PRIMARY KEY, model TEXT NOT NULL, version INTEGER NOT NULL, kind TEXT NOT NULL,"
     "  report TEXT NOT NULL, created_at INTEGER NOT NULL);"
     "CREATE INDEX quality_reports_model ON quality_reports (model, kind, id);"},
    /* per report, each feature's reference and current distribution
     * (distribution.h); NULL for reports made before it */
    {3, "ALTER TABLE reports ADD COLUMN distributions TEXT;"},
    /* the in-memory state (checkpoint.c), one row per part: "quality", "promote" */
    {4, "CREATE TABLE checkpoint (part TEXT PRIMARY KEY, data BLOB NOT NULL, written_at INTEGER NOT NULL);"},
};

static const qn_route routes[] = {
    {"GET", "/v1/monitors", mon_list, 0, 0, NULL},
    {"GET", "/v1/monitors/{model}", mon_get, 0, 0, NULL},
    {"PUT", "/v1/monitors/{model}", mon_put, 64 * 1024, 0, NULL},
    {"DELETE", "/v1/monitors/{model}", mon_delete, 0, 0, NULL},
    {"GET", "/v1/monitors/{model}/report", mon_report, 0, 0, NULL},
    {"GET", "/v1/monitors/{model}/reports/{id}", mon_report_get, 0, 0, NULL},
    {"POST", "/v1/monitors/{model}/close", mon_close_now, 0, 0, NULL},
    {"GET", "/v1/monitors/{model}/quality", mon_quality_get, 0, 0, NULL},
    {"GET", "/v1/monitors/{model}/agreement", mon_agreement, 0, 0, NULL},
};

static void monitor_free(monitor *m)
{
    if (!m)
        return;
    qn_client_free(m->registry);
    qn_deps_close(m->db, m->bus, m->outbox);
    mon_quality_free(m);
    mon_promote_free(m);
    mon_profiles_free(m);
    free(m->hit_outcomes);
    free(m->alias);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static void metrics_init(monitor *m, qn_metrics *reg)
{
    static const char *const mfm[] = {"model", "feature", "method", NULL};
    static const char *const mo[] = {"model", NULL};
    static const char *const mk[] = {"model", "k", NULL};
    static const char *const mv[] = {"model", "version", NULL};
    static const char *const mr[] = {"model", "result", NULL};
    static const char *const md[] = {"model", "dataset_drift", NULL};
    static const char *const re[] = {"reason", NULL};
    m->metrics = reg;
    m->m_score = qn_metrics_gauge(reg, "quern_drift_score",
                                  "Drift score of the last closed window: p-value for tests, distance otherwise.", mfm);
    m->m_detected = qn_metrics_gauge(reg, "quern_drift_detected", "1 when the last closed window drifted.", mo);
    m->m_share = qn_metrics_gauge(reg, "quern_drift_share", "Share of drifted columns in the last closed window.", mo);
    m->m_hit_rate = qn_metrics_gauge(reg, "quern_live_hit_rate",
                                     "Purchases that were in a recent top-k recommendation, over joined purchases.", mk);
    m->m_predictions = qn_metrics_counter(reg, "quern_monitor_predictions_total", "Predictions counted into windows.", mo);
    m->m_feedback = qn_metrics_counter(reg, "quern_monitor_feedback_total",
                                       "Feedback events by join result (hit, miss, unjoined, no_purchase).", mr);
    m->m_windows = qn_metrics_counter(reg, "quern_monitor_windows_closed_total", "Windows closed into reports.", md);
    m->m_window_rows = qn_metrics_gauge(reg, "quern_monitor_window_rows", "Rows in the open window.", mv);
    m->m_skipped = qn_metrics_counter(reg, "quern_monitor_events_ignored_total", "Malformed events ignored.", re);
    static const char *const mvm[] = {"model", "version", "metric", NULL};
    m->m_quality = qn_metrics_gauge(reg, "quern_quality", "Live quality of the last closed quality window (from labels).", mvm);
    m->m_estimated = qn_metrics_gauge(reg, "quern_quality_estimated",
                                      "Quality estimated before labels (CBPE) of the last estimation window.", mvm);
    m->m_estimate_error = qn_metrics_gauge(reg, "quern_quality_estimate_error",
                                           "Estimate minus realised value, once a window's labels landed.", mvm);
    m->m_labels = qn_metrics_counter(reg, "quern_monitor_labels_total",
                                     "Labels by join result (joined, unjoined, bad_label) and predictions that "
                                     "got none (expired, evicted).", mr);
    m->m_pending = qn_metrics_gauge(reg, "quern_monitor_pending_predictions",
                                    "Logged predictions waiting for their label.", NULL);
}

static int monitor_start(qn_service_ctx *ctx, qn_err *err)
{
    monitor_cfg *cfg = ctx->cfg;
    monitor *m = calloc(1, sizeof *m);
    if (!m)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    pthread_mutex_init(&m->mu, NULL);
    m->window_rows = cfg->window_rows;
    m->window_seconds = cfg->window_seconds;
    m->min_rows = cfg->min_rows;
    m->history = cfg->history;
    m->hit_k = cfg->hit_k;
    m->hit_horizon_ms = cfg->hit_horizon_ms;
    m->max_recs = cfg->max_recs;
    m->publish_all = cfg->publish_all;
    m->tick_ms = cfg->tick_ms;
    m->checkpoint_ms = cfg->checkpoint_ms;
    m->last_checkpoint_ms = qn_now_ms();
    m->hit_outcomes = strdup(cfg->hit_outcomes ? cfg->hit_outcomes : "");
    m->alias = strdup(cfg->alias ? cfg->alias : "production");
    m->label_horizon_ms = cfg->label_horizon_ms;
    m->label_grace_ms = cfg->label_grace_ms;
    m->max_pending = cfg->max_pending;
    m->quality_window = cfg->quality_window;
    m->quality_window_seconds = cfg->quality_window_seconds;
    m->quality_min_rows = cfg->quality_min_rows;
    char *end = NULL;
    m->quality_margin = cfg->quality_margin ? strtod(cfg->quality_margin, &end) : 0.05;
    if (cfg->quality_margin && (!end || *end || !(m->quality_margin >= 0 && m->quality_margin <= 10))) {
        monitor_free(m);
        return qn_err_set(err, QN_INVALID_ARGUMENT, "--quality-margin \"%s\": give a share in [0, 10] (0.05 = 5%%)",
                          cfg->quality_margin);
    }
    metrics_init(m, ctx->metrics);
    if (mon_quality_new(m, err) < 0 || mon_promote_new(m, err) < 0) {
        monitor_free(m);
        return err->code;
    }
    if (!m->hit_outcomes || !m->alias) {
        monitor_free(m);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    qn_deps_opts o = {.db_url = cfg->db_url, .data = cfg->common.data, .db_file = "monitor.db",
                      .migrations = migrations, .nmigrations = QN_NELEM(migrations),
                      .bus_url = cfg->common.bus, .visibility_ms = cfg->lease_ms,
                      .source = "quern-monitor", .metrics = ctx->metrics};
    qn_client_opts co = {.base_url = cfg->common.registry, .timeout_ms = 5000, .token = ctx->token,
                         .user_agent = "quern-monitor", .max_response = 256u << 20};
    qn_service_client_opts(ctx, "registry", &co);
    static const char *const topics[] = {"quern.predictions.logged", "quern.feedback.received",
                                         "quern.model.promoted", NULL};
    if (qn_deps_open(&o, &m->db, &m->bus, &m->outbox, err) < 0 || !(m->registry = qn_client_new(&co, err)) ||
        mon_gauges_restore(m, err) < 0) {
        monitor_free(m);
        return err->code ? err->code : QN_INTERNAL;
    }
    /* the state of the last run, before any event of this one */
    mon_checkpoint_load(m);
    if (!(m->sub = qn_subscriber_start(m->bus, "monitor", topics, m->db, mon_on_event, m, err))) {
        monitor_free(m);
        return err->code;
    }
    if (mon_ticker_start(m, err) < 0) {
        qn_subscriber_stop(m->sub);
        monitor_free(m);
        return err->code;
    }
    ctx->routes = routes;
    ctx->nroutes = QN_NELEM(routes);
    ctx->ud = m;
    qn_log_info(NULL, "monitor open", "{s:s, s:I, s:I, s:I}", "data", cfg->common.data, "window_rows",
                (json_int_t)m->window_rows, "window_seconds", (json_int_t)m->window_seconds, "min_rows",
                (json_int_t)m->min_rows);
    return 0;
}

static void monitor_stop(qn_service_ctx *ctx)
{
    monitor *m = ctx->ud;
    if (!m)
        return;
    qn_subscriber_stop(m->sub);
    mon_ticker_stop(m);
    /* no event and no tick runs now: the state is final */
    qn_err err;
    int64_t t0 = qn_now_ms();
    if (mon_checkpoint_write(m, &err) < 0)
        qn_log_warn(NULL, "checkpoint not written at stop", "{s:s}", "detail", err.msg);
    else
        qn_log_info(NULL, "checkpoint written at stop", "{s:I, s:I}", "pending",
                    (json_int_t)mon_quality_pending(m), "ms", (json_int_t)(qn_now_ms() - t0));
    qn_deps_flush(m->outbox, 5000);
    monitor_free(m);
}

static const qn_service_def def = {
    .name = "monitor",
    .summary = "quern-monitor: drift windows against reference profiles, live quality from labels, CBPE "
               "estimates, live hit-rate, drift and quality events.",
    .opts = opts,
    .nopts = QN_NELEM(opts),
    .cfg_size = sizeof(monitor_cfg),
    .start = monitor_start,
    .stop = monitor_stop,
};

int main(int argc, char **argv)
{
    return qn_service_main(&def, argc, argv);
}
