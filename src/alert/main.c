/*
 * main.c - quern-alert: configuration, schema, routes, start, stop, reload.
 *
 * See alert.h for how the pieces fit; docs/alert.md for the rules reference,
 * the API, the flags and the guarantees.
 */
#include <curl/curl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/config.h"
#include "core/deps.h"
#include "core/log.h"
#include "core/netallow.h"
#include "core/outbox.h"
#include "core/service.h"
#include "alert/alert.h"

typedef struct alert_cfg {
    qn_common_cfg common;
    char *db_url, *rules, *webhook_allow, *scrape_allow;
    long long workers, queue, hook_timeout_ms, backoff_ms, backoff_max_ms, retrain_timeout_ms, poll_ms, lease_ms;
} alert_cfg;

static const qn_cfg_opt opts[] = {
    QN_CFG_COMMON(alert_cfg, "127.0.0.1:7708", "alert"),
    {"db", "QUERN_ALERT_DB", QN_CFG_STRING, NULL, 0, 0,
     "State store URL (default: sqlite://<data>/alert.db)", offsetof(alert_cfg, db_url)},
    {"rules", "QUERN_ALERT_RULES", QN_CFG_STRING, NULL, 0, 0,
     "Rules file (JSON); reloaded on SIGHUP, rewritten by PUT /v1/rules", offsetof(alert_cfg, rules)},
    {"webhook-allow", "QUERN_WEBHOOK_ALLOW", QN_CFG_STRING, NULL, 0, 0,
     "Hosts and CIDRs webhooks may reach besides public addresses (comma-separated); loopback, link-local, "
     "private, multicast and other special addresses are refused unless listed",
     offsetof(alert_cfg, webhook_allow)},
    {"scrape-allow", "QUERN_SCRAPE_ALLOW", QN_CFG_STRING, "platform", 0, 0,
     "Hosts and CIDRs whose /metrics metric rules may read (comma-separated); \"platform\": loopback and the "
     "hosts of --registry and of QUERN_INGEST, QUERN_PREP, QUERN_TRAIN, QUERN_SERVE, QUERN_MONITOR, QUERN_ALERT",
     offsetof(alert_cfg, scrape_allow)},
    {"webhook-workers", "QUERN_ALERT_WEBHOOK_WORKERS", QN_CFG_INT, "2", 1, 64,
     "Threads delivering webhooks", offsetof(alert_cfg, workers)},
    {"webhook-queue", "QUERN_ALERT_WEBHOOK_QUEUE", QN_CFG_INT, "1000", 1, 1000000,
     "Webhook deliveries waiting at most (past it: recorded as failed)", offsetof(alert_cfg, queue)},
    {"webhook-timeout", "QUERN_ALERT_WEBHOOK_TIMEOUT", QN_CFG_DURATION, "5s", 100, 300000,
     "Deadline of one webhook POST", offsetof(alert_cfg, hook_timeout_ms)},
    {"webhook-backoff", "QUERN_ALERT_WEBHOOK_BACKOFF", QN_CFG_DURATION, "1s", 10, 3600000,
     "Delay before the first webhook retry (doubles each time, with jitter)", offsetof(alert_cfg, backoff_ms)},
    {"webhook-backoff-max", "QUERN_ALERT_WEBHOOK_BACKOFF_MAX", QN_CFG_DURATION, "5m", 10, 86400000,
     "Longest delay between webhook retries", offsetof(alert_cfg, backoff_max_ms)},
    {"retrain-timeout", "QUERN_ALERT_RETRAIN_TIMEOUT", QN_CFG_DURATION, "6h", 1000, 30LL * 86400000,
     "A requested retrain counts as pending at most this long without quern.train.finished",
     offsetof(alert_cfg, retrain_timeout_ms)},
    {"poll-interval", "QUERN_ALERT_POLL_INTERVAL", QN_CFG_DURATION, "15s", 50, 3600000,
     "How often metric rules are scraped and time-based resolutions checked", offsetof(alert_cfg, poll_ms)},
    {"bus-lease", "QUERN_ALERT_BUS_LEASE", QN_CFG_DURATION, "30s", 500, 3600000,
     "How long a received event is leased before the bus redelivers it", offsetof(alert_cfg, lease_ms)},
};

static const qn_migration migrations[] = {
    {1,
     "CREATE TABLE alerts ("
     "  id TEXT PRIMARY KEY, rule TEXT NOT NULL, dedupe_key TEXT NOT NULL, state TEXT NOT NULL,"
     "  severity TEXT NOT NULL, summary TEXT NOT NULL, evidence TEXT NOT NULL, count INTEGER NOT NULL,"
     "  fired_at INTEGER NOT NULL, last_seen INTEGER NOT NULL, resolved_at INTEGER, resolved_by TEXT);"
     "CREATE INDEX alerts_rule_key ON alerts (rule, dedupe_key, state);"
     "CREATE INDEX alerts_fired ON alerts (fired_at);"
     "CREATE TABLE actions ("
     "  id TEXT PRIMARY KEY, alert_id TEXT NOT NULL, idx INTEGER NOT NULL, type TEXT NOT NULL,"
     "  status TEXT NOT NULL, attempts INTEGER NOT NULL, last_error TEXT, detail TEXT NOT NULL,"
     "  body TEXT, updated_at INTEGER NOT NULL);"
     "CREATE INDEX actions_alert ON actions (alert_id, idx);"
     "CREATE TABLE retrains (model TEXT PRIMARY KEY, job_id TEXT NOT NULL, alert_id TEXT NOT NULL,"
     "  requested_at INTEGER NOT NULL);"
     QN_INBOX_SCHEMA QN_OUTBOX_SCHEMA},
    /* events in a row for which a rule's "when" condition held, per rule and key */
    {2, "CREATE TABLE streaks (rule TEXT NOT NULL, dedupe_key TEXT NOT NULL, n INTEGER NOT NULL,"
        "  PRIMARY KEY (rule, dedupe_key));"},
};

static const qn_route routes[] = {
    {"GET", "/v1/alerts", al_alerts_list, 0, 0, NULL},
    {"GET", "/v1/alerts/{id}", al_alerts_get, 0, 0, NULL},
    {"GET", "/v1/rules", al_rules_show, 0, 0, NULL},
    {"PUT", "/v1/rules", al_rules_put_http, 1024 * 1024, 0, NULL},
};

static void alerter_free(alerter *a)
{
    if (!a)
        return;
    al_webhooks_stop(a->hooks);
    qn_deps_close(a->db, a->bus, a->outbox);
    if (a->rules)
        al_rules_put(a, a->rules);
    json_decref(a->since);
    free(a->rules_path);
    qn_netallow_free(a->webhook_allow);
    qn_netallow_free(a->scrape_allow);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->rules_mu);
    free(a);
}

static void metrics_init(alerter *a, qn_metrics *m)
{
    static const char *const rs[] = {"rule", "severity", NULL};
    static const char *const r[] = {"rule", NULL};
    static const char *const rr[] = {"rule", "reason", NULL};
    static const char *const o[] = {"outcome", NULL};
    a->m_rules = qn_metrics_gauge(m, "quern_alert_rules", "Rules in force.", NULL);
    a->m_fired = qn_metrics_counter(m, "quern_alerts_fired_total", "Alerts fired.", rs);
    a->m_resolved = qn_metrics_counter(m, "quern_alerts_resolved_total", "Alerts resolved.", r);
    a->m_firing = qn_metrics_gauge(m, "quern_alerts_firing", "Alerts firing now (since this process started).", r);
    a->m_suppressed = qn_metrics_counter(m, "quern_alerts_suppressed_total",
                                         "Matches that fired nothing: deduplicated into a firing alert or in cooldown.", rr);
    a->m_hooks = qn_metrics_counter(m, "quern_alert_webhooks_total", "Webhook deliveries by final outcome.", o);
    a->m_queue = qn_metrics_gauge(m, "quern_alert_webhook_queue", "Webhook deliveries waiting.", NULL);
    a->m_retrains = qn_metrics_counter(m, "quern_alert_retrains_total",
                                       "Retrain actions: requested, pending (skipped), no_model.", o);
    a->m_reloads = qn_metrics_counter(m, "quern_alert_rule_reloads_total", "Rule reloads by outcome.", o);
}

/* The platform's own services, whose /metrics metric rules may read by
 * default: loopback (where every service listens in the one-machine layout)
 * and the hosts of the service URLs this process is given, the way the CLI
 * is (--registry; QUERN_INGEST ... QUERN_ALERT when set). */
static int add_platform(qn_netallow *al, const char *registry, qn_err *err)
{
    static const char *const envs[] = {"QUERN_INGEST", "QUERN_PREP", "QUERN_TRAIN", "QUERN_SERVE",
                                       "QUERN_MONITOR", "QUERN_ALERT"};
    int rc = qn_netallow_add(al, "127.0.0.1,::1,localhost", err);
    for (size_t i = 0; rc == 0 && i <= QN_NELEM(envs); i++) {
        const char *url = i == 0 ? registry : getenv(envs[i - 1]);
        char host[256];
        qn_err e;
        if (!url || !*url)
            continue;
        if (qn_url_parts(url, host, sizeof host, NULL, NULL, 0, NULL, &e) < 0) {
            qn_log_warn(NULL, "a service URL is not usable for --scrape-allow platform", "{s:s, s:s}", "setting",
                        i == 0 ? "--registry" : envs[i - 1], "detail", e.msg);
            continue;
        }
        rc = qn_netallow_add(al, host, err);
    }
    return rc;
}

/* Fills --scrape-allow: its entries, with "platform" standing for add_platform's. */
static int scrape_allow_fill(qn_netallow *al, const char *spec, const char *registry, qn_err *err)
{
    char *copy = strdup(spec ? spec : ""), *save = NULL;
    int rc = copy ? 0 : qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    for (char *tok = copy ? strtok_r(copy, ",", &save) : NULL; tok && rc == 0; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        size_t n = strlen(tok);
        while (n && tok[n - 1] == ' ')
            tok[--n] = 0;
        rc = strcasecmp(tok, "platform") == 0 ? add_platform(al, registry, err) : qn_netallow_add(al, tok, err);
    }
    free(copy);
    return rc;
}

static int alert_start(qn_service_ctx *ctx, qn_err *err)
{
    alert_cfg *cfg = ctx->cfg;
    alerter *a = calloc(1, sizeof *a);
    if (!a)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->rules_mu, NULL);
    a->retrain_timeout_ms = cfg->retrain_timeout_ms;
    a->backoff_ms = cfg->backoff_ms;
    a->backoff_max_ms = cfg->backoff_max_ms;
    a->hook_timeout_ms = cfg->hook_timeout_ms;
    a->metric_interval_ms = cfg->poll_ms;
    a->since = json_object();
    metrics_init(a, ctx->metrics);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    a->webhook_allow = qn_netallow_new(QN_NETALLOW_PUBLIC, "--webhook-allow");
    a->scrape_allow = qn_netallow_new(QN_NETALLOW_LISTED, "--scrape-allow");
    if (!a->webhook_allow || !a->scrape_allow) {
        alerter_free(a);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    if (qn_netallow_add(a->webhook_allow, cfg->webhook_allow, err) < 0 ||
        scrape_allow_fill(a->scrape_allow, cfg->scrape_allow, cfg->common.registry, err) < 0) {
        alerter_free(a);
        return err->code;
    }
    a->allow.webhook = a->webhook_allow;
    a->allow.scrape = a->scrape_allow;
    al_rules *rs = NULL;
    if (cfg->rules) {
        if (!(a->rules_path = strdup(cfg->rules)) || al_rules_load_file(a, cfg->rules, &rs, err) < 0) {
            alerter_free(a);
            return err->code ? err->code : QN_RESOURCE_EXHAUSTED;
        }
    } else {
        json_t *empty = json_pack("{s:[]}", "rules");
        int rc = al_rules_parse(empty, &a->allow, &rs, err);
        json_decref(empty);
        if (rc < 0) {
            alerter_free(a);
            return rc;
        }
    }
    al_rules_install(a, rs);
    qn_deps_opts o = {.db_url = cfg->db_url, .data = cfg->common.data, .db_file = "alert.db",
                      .migrations = migrations, .nmigrations = QN_NELEM(migrations),
                      .bus_url = cfg->common.bus, .visibility_ms = cfg->lease_ms,
                      .source = "quern-alert", .metrics = ctx->metrics};
    if (qn_deps_open(&o, &a->db, &a->bus, &a->outbox, err) < 0 ||
        !(a->hooks = al_webhooks_start(a, (int)cfg->workers, (size_t)cfg->queue, err)) || al_requeue_pending(a, err) < 0) {
        alerter_free(a);
        return err->code ? err->code : QN_INTERNAL;
    }
    /* every event but the alert service's own and dead letters */
    static const char *const topics[] = {"quern.#", NULL};
    if (!(a->sub = qn_subscriber_start(a->bus, "alert", topics, a->db, al_on_event, a, err))) {
        alerter_free(a);
        return err->code;
    }
    if (al_poller_start(a, err) < 0) {
        qn_subscriber_stop(a->sub);
        alerter_free(a);
        return err->code;
    }
    ctx->routes = routes;
    ctx->nroutes = QN_NELEM(routes);
    ctx->ud = a;
    qn_log_info(NULL, "alert open", "{s:s, s:s?, s:i, s:i, s:i}", "data", cfg->common.data, "rules", cfg->rules,
                "count", (int)rs->n, "webhook_allow", (int)qn_netallow_count(a->webhook_allow), "scrape_allow",
                (int)qn_netallow_count(a->scrape_allow));
    return 0;
}

static void alert_reload(qn_service_ctx *ctx)
{
    alerter *a = ctx->ud;
    if (!a || !a->rules_path)
        return;
    qn_err err;
    al_rules *rs;
    const char *outcome = "ok";
    if (al_rules_load_file(a, a->rules_path, &rs, &err) < 0) {
        outcome = "refused";
        qn_log_error(NULL, "rules not reloaded; the previous rules stay", "{s:s}", "detail", err.msg);
    } else {
        al_rules_install(a, rs);
        qn_log_info(NULL, "rules reloaded", "{s:s, s:i}", "file", a->rules_path, "count", (int)rs->n);
    }
    const char *l[] = {outcome};
    qn_counter_add(a->m_reloads, l, 1);
}

static void alert_stop(qn_service_ctx *ctx)
{
    alerter *a = ctx->ud;
    if (!a)
        return;
    qn_subscriber_stop(a->sub);
    al_poller_stop(a);
    al_webhooks_stop(a->hooks);
    a->hooks = NULL;
    qn_deps_flush(a->outbox, 5000);
    alerter_free(a);
    curl_global_cleanup();
}

static const qn_service_def def = {
    .name = "alert",
    .summary = "quern-alert: rules over events and metrics; alerts that fire and resolve; webhooks and retrains.",
    .opts = opts,
    .nopts = QN_NELEM(opts),
    .cfg_size = sizeof(alert_cfg),
    .start = alert_start,
    .stop = alert_stop,
    .reload = alert_reload,
};

int main(int argc, char **argv)
{
    return qn_service_main(&def, argc, argv);
}
