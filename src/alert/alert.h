/*
 * alert.h - state shared by the modules of quern-alert.
 *
 * quern-alert (DESIGN.md section 7) evaluates rules from one JSON file over
 * the events of the bus and over Prometheus metrics of other services. A rule
 * that matches fires an alert (one per rule and dedupe key while it is
 * firing; a cooldown after it resolves), which runs the rule's actions: log,
 * webhook (a bounded queue and worker threads: retried with exponential
 * backoff and jitter, signed with HMAC-SHA256 when a secret is set), retrain
 * (quern.train.requested through the outbox, at most one pending per model).
 * Alerts resolve on a resolving event, after a time, or, for metric rules,
 * when the condition clears. quern.alert.fired / quern.alert.resolved leave
 * through the outbox in the transaction that changes the alert.
 *
 * Outbound targets are checked (core/netallow.h): webhooks against
 * --webhook-allow (public addresses, plus what is listed), metric rules read
 * only /metrics of hosts in --scrape-allow; literal addresses at rule load,
 * names after resolution at each connection, which is pinned to the checked
 * addresses. Secrets are write-only: rules leave only through
 * al_rules_public ("(set)", URLs redacted), and URLs are stored and logged
 * redacted.
 *
 * Modules: main.c (config, schema, routes, start/stop, reload), rules.c
 * (parsing and strict validation, templates, predicates), engine.c (events,
 * firing, resolving, retrains, the metric poller), webhook.c (delivery
 * worker), api.c (HTTP handlers).
 */
#ifndef QUERN_ALERT_H
#define QUERN_ALERT_H

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>

#include "core/bus/bus.h"
#include "core/http.h"
#include "core/metrics.h"
#include "core/netallow.h"
#include "core/ticker.h"
#include "core/outbox.h"
#include "core/store/store.h"
#include "core/subscriber.h"

typedef enum { ACT_LOG, ACT_WEBHOOK, ACT_RETRAIN } al_action_type;

typedef struct al_action {
    al_action_type type;
    char *url;          /* webhook */
    char *secret;       /* webhook, NULL: unsigned; never shown nor logged */
    int secret_from_env;  /* the secret came from secret_env */
    int retries;        /* webhook: attempts after the first */
    char *model;        /* retrain: template */
    json_t *job;        /* retrain: the job template */
} al_action;

typedef struct al_rule {
    char *name;
    /* condition: an event, or a metric */
    char *event;        /* topic pattern; NULL for metric rules */
    json_t *where;      /* {path: expected} (may be NULL) */
    char *metric_url, *metric_name;
    json_t *metric_labels;  /* {name: value} to match, may be NULL */
    char op[3];
    double value;
    int64_t for_ms;
    /* an event rule's optional numeric condition ("when"): value at when_value
     * op (value at when_than, or the number when_than_num) * when_times +
     * when_plus, true for when_windows events in a row (per rule and key) */
    char *when_value, *when_than;
    double when_than_num, when_times, when_plus;
    char when_op[3];
    int64_t when_windows;
    char *severity;
    int64_t cooldown_ms;
    char *dedupe;       /* template; NULL: one alert per rule */
    char *resolve_event;
    json_t *resolve_where;
    int64_t resolve_after_ms;  /* 0: never by time */
    al_action *actions;
    size_t nactions;
} al_rule;

/* An immutable, validated set of rules; swapped whole on reload. */
typedef struct al_rules {
    al_rule *rules;
    size_t n;
    json_t *doc;        /* the document as given */
    int refs;           /* under alerter.rules_mu */
} al_rules;

typedef struct alerter alerter;

/* Where rules may send and read: --webhook-allow (QN_NETALLOW_PUBLIC) and
 * --scrape-allow (QN_NETALLOW_LISTED), owned by the alerter. */
typedef struct al_allow {
    const qn_netallow *webhook;
    const qn_netallow *scrape;
} al_allow;

/* What GET /v1/rules shows for a secret that is set. */
#define AL_SECRET_SET "(set)"

/* rules.c */
/* Parses and validates a rules document ({"rules":[...]} or [...]) against
 * the allow-lists (a webhook to a refused literal address, a metric URL whose
 * path is not /metrics or whose host is not in --scrape-allow: refused). 0 and
 * *out, or QN_INVALID_ARGUMENT naming "rules[i].field". */
int al_rules_parse(const json_t *doc, const al_allow *allow, al_rules **out, qn_err *err);
/* Lets a document read back from GET /v1/rules be given again: a webhook
 * "secret":"(set)" takes the secret in force of the same rule and action, a
 * redacted URL ("https://u:***@h/...") the URL in force it stands for; in rs
 * and in rs->doc. old may be NULL (nothing in force). 0, or
 * QN_INVALID_ARGUMENT naming the field when there is nothing to take. */
int al_rules_inherit(al_rules *rs, const al_rules *old, qn_err *err);
/* The rules as they may be shown: the document with every secret "(set)" and
 * every URL redacted (qn_url_redact). New reference; NULL when out of memory. */
json_t *al_rules_public(const al_rules *rs);
/* Replaces the URL string at key of obj with its redacted form
 * (qn_url_redact); a no-op when obj is NULL or has no string there. */
void al_redact_url(json_t *obj, const char *key);
void al_rules_free(al_rules *r);
/* Value at a dotted path ("data.model") of root, borrowed, or NULL. */
const json_t *al_path(const json_t *root, const char *path);
/* 1 when rule r's "when" condition holds for the event root (or r has none). */
int al_when_holds(const al_rule *r, const json_t *root);
/* 1 when every where entry equals the value at its path. */
int al_where_match(const json_t *where, const json_t *root);
/* The longest dotted path a template placeholder or al_path takes, plus 1. */
#define AL_PATH_MAX 256
/* quern-train's largest dataset_version (src/train/jobs.c). */
#define AL_DATASET_VERSION_MAX 1000000000LL
/* Expands "{path}" placeholders against root; malloc'ed. A path that names
 * nothing expands to "". */
char *al_template(const char *tmpl, const json_t *root);
/* Checks the syntax of a template: every "{" closed by a "}" around a dotted
 * path of 1..AL_PATH_MAX-1 bytes with no empty segment, no "{" inside, no
 * stray "}". 0, or QN_INVALID_ARGUMENT with a message that starts with what
 * ("rules[0].dedupe") and gives the byte offset. */
int al_template_check(const char *tmpl, const char *what, qn_err *err);
int64_t al_duration_ms(const json_t *v, int *ok);

/* webhook.c */
typedef struct al_webhooks al_webhooks;
al_webhooks *al_webhooks_start(alerter *a, int workers, size_t queue_max, qn_err *err);
/* Queues a delivery of action_id; 0, or QN_RESOURCE_EXHAUSTED when full. */
int al_webhook_enqueue(al_webhooks *w, const char *action_id, const char *url, const char *secret,
                       const char *body, int retries);
size_t al_webhooks_queued(al_webhooks *w);
void al_webhooks_stop(al_webhooks *w);
/* hex HMAC-SHA256 of body under secret into out[65]. */
void al_hmac_hex(const char *secret, const char *body, size_t len, char out[65]);

struct alerter {
    qn_store *db;
    qn_bus *bus;
    qn_outbox *outbox;
    qn_subscriber *sub;
    al_webhooks *hooks;
    char *rules_path;
    qn_netallow *webhook_allow;   /* --webhook-allow */
    qn_netallow *scrape_allow;    /* --scrape-allow */
    al_allow allow;               /* the two above, for al_rules_parse */
    pthread_mutex_t rules_mu;
    al_rules *rules;
    pthread_mutex_t mu;           /* alert state changes */
    int64_t retrain_timeout_ms, backoff_ms, backoff_max_ms, hook_timeout_ms, metric_interval_ms;
    qn_ticker *poller;            /* metric rules, resolve-after, stale retrains */
    json_t *since;                /* metric rules: "rule\x1fseries" -> ms the condition began */
    qn_metric *m_rules, *m_fired, *m_resolved, *m_suppressed, *m_hooks, *m_queue, *m_retrains,
        *m_reloads, *m_firing;
};

/* engine.c */
al_rules *al_rules_get(alerter *a);   /* a reference: al_rules_put when done */
void al_rules_put(alerter *a, al_rules *r);
/* Installs r (stolen) as the current rules. */
void al_rules_install(alerter *a, al_rules *r);
/* Loads the rules file (al_rules_parse, then al_rules_inherit from the rules
 * in force, if any); 0 or an error naming the file and field. */
int al_rules_load_file(alerter *a, const char *path, al_rules **out, qn_err *err);
int al_on_event(const qn_msg *msg, void *ud, qn_err *err);
int al_poller_start(alerter *a, qn_err *err);
void al_poller_stop(alerter *a);
/* Records a webhook outcome on its action row. */
void al_action_done(alerter *a, const char *action_id, const char *status, int attempts, const char *error);
int al_requeue_pending(alerter *a, qn_err *err);

/* api.c */
int al_fail(qn_req *req, qn_res *res, const qn_err *err);
int al_alerts_list(qn_req *req, qn_res *res, void *ud);
int al_alerts_get(qn_req *req, qn_res *res, void *ud);
int al_rules_show(qn_req *req, qn_res *res, void *ud);
int al_rules_put_http(qn_req *req, qn_res *res, void *ud);

#endif
