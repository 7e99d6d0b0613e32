/*
 * engine.c - how quern-alert turns events and metrics into alerts.
 *
 * Every bus event is applied in one write transaction that checks and marks
 * its id in the inbox: firing, deduplication, cooldown, resolution, retrain
 * bookkeeping and the outgoing events (quern.alert.fired/resolved,
 * quern.train.requested, through the outbox) commit together, so a crash or
 * a redelivery never fires twice or requests two retrains. Webhooks are only
 * queued here (after the commit) and delivered by webhook.c, so a slow or
 * dead target never holds up event handling.
 *
 * Retrains never loop: a model with a requested and unfinished retrain (the
 * retrains table; cleared by quern.train.finished for that model, or after
 * --retrain-timeout) gets no second one, and the rule's cooldown and dedupe
 * key hold back re-firing in the first place.
 *
 * The poller thread evaluates metric rules (scraping Prometheus text from
 * the rule's URL, pinned to addresses --scrape-allow allows), resolves alerts
 * whose "after" passed, and expires stale pending retrains. URLs are stored
 * and logged only redacted (qn_url_redact); secrets never.
 */
#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/json.h"
#include "core/log.h"
#include "core/netallow.h"
#include "core/ticker.h"
#include "core/trace.h"
#include "alert/alert.h"

/* ---- rules in force ------------------------------------------------------ */

al_rules *al_rules_get(alerter *a)
{
    pthread_mutex_lock(&a->rules_mu);
    al_rules *r = a->rules;
    r->refs++;
    pthread_mutex_unlock(&a->rules_mu);
    return r;
}

void al_rules_put(alerter *a, al_rules *r)
{
    pthread_mutex_lock(&a->rules_mu);
    int last = --r->refs == 0;
    pthread_mutex_unlock(&a->rules_mu);
    if (last)
        al_rules_free(r);
}

void al_rules_install(alerter *a, al_rules *r)
{
    r->refs = 1;
    pthread_mutex_lock(&a->rules_mu);
    al_rules *old = a->rules;
    a->rules = r;
    pthread_mutex_unlock(&a->rules_mu);
    if (old)
        al_rules_put(a, old);
    qn_gauge_set(a->m_rules, NULL, (double)r->n);
}

int al_rules_load_file(alerter *a, const char *path, al_rules **out, qn_err *err)
{
    json_error_t je;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        /* jansson quotes the text near the fault, which may be a secret: not in logs */
        char *near = strstr(je.text, " near '");
        if (near)
            *near = 0;
        return qn_err_set(err, QN_INVALID_ARGUMENT, "rules file %s: line %d column %d: %s", path, je.line,
                          je.column, je.text);
    }
    int rc = al_rules_parse(doc, &a->allow, out, err);
    json_decref(doc);
    if (rc == 0) {
        pthread_mutex_lock(&a->rules_mu);
        al_rules *cur = a->rules;
        if (cur)
            cur->refs++;
        pthread_mutex_unlock(&a->rules_mu);
        rc = al_rules_inherit(*out, cur, err);
        if (cur)
            al_rules_put(a, cur);
        if (rc < 0) {
            al_rules_free(*out);
            *out = NULL;
        }
    }
    if (rc < 0)
        qn_err_wrap(err, "rules file %s", path);
    return rc;
}

/* ---- firing and resolving ------------------------------------------------ */

typedef struct hook_job {
    char id[80];
    const al_action *act;
    char *body;
} hook_job;

static int outbox_event(qn_conn *c, const char *type, json_t *data, qn_err *err)
{
    json_t *ev = data ? qn_event_new(type, "quern-alert", data, NULL) : NULL;
    if (!ev)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    int rc = qn_outbox_append(c, ev, err);
    json_decref(ev);
    return rc;
}

static int action_insert(qn_conn *c, const char *id, const char *alert_id, size_t idx, const char *type,
                         const char *status, json_t *detail, const char *body, qn_err *err)
{
    char *dtext = qn_json_canonical(detail);
    qn_stmt *st = qn_prepare(c, "INSERT INTO actions (id, alert_id, idx, type, status, attempts, detail, body, updated_at) "
                                "VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?)", err);
    int rc = st ? 0 : err->code;
    if (st) {
        qn_bind_text(st, 1, id, -1);
        qn_bind_text(st, 2, alert_id, -1);
        qn_bind_int64(st, 3, (int64_t)idx);
        qn_bind_text(st, 4, type, -1);
        qn_bind_text(st, 5, status, -1);
        qn_bind_text(st, 6, dtext ? dtext : "{}", -1);
        body ? qn_bind_text(st, 7, body, -1) : qn_bind_null(st, 7);
        qn_bind_int64(st, 8, qn_now_ms());
        rc = qn_step(st, err);
    }
    free(dtext);
    json_decref(detail);
    return rc < 0 ? rc : 0;
}

static int retrain(alerter *a, qn_conn *c, const al_rule *r, const al_action *act, const json_t *root,
                   const char *alert_id, const char *summary, const char *action_id, size_t idx, qn_err *err)
{
    char *model = al_template(act->model, root);
    int rc = 0;
    int64_t now = qn_now_ms();
    if (!model)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    const char *outcome;
    json_t *detail;
    qn_stmt *st = qn_prepare(c, "SELECT job_id FROM retrains WHERE model = ? AND requested_at >= ?", err);
    if (!st) {
        rc = err->code;
        goto out;
    }
    qn_bind_text(st, 1, model, -1);
    qn_bind_int64(st, 2, now - a->retrain_timeout_ms);
    if ((rc = qn_step(st, err)) < 0)
        goto out;
    if (rc == 1 || !*model) {
        outcome = !*model ? "no_model" : "pending";
        detail = json_pack("{s:s, s:s}", "model", model, "reason",
                           !*model ? "the model template gave an empty name" : "a retrain of this model is pending");
        if (rc == 1)
            json_object_set_new(detail, "pending_job_id", json_string(qn_col_text(st, 0)));
        if (rc == 1 && (rc = qn_step(st, err)) < 0) {
            json_decref(detail);
            goto out;
        }
        rc = action_insert(c, action_id, alert_id, idx, "retrain", "skipped", detail, NULL, err);
    } else {
        char job_id[QN_UUID_LEN + 1];
        qn_uuid4(job_id);
        char reason[600];
        snprintf(reason, sizeof reason, "alert %s: %.500s", r->name, summary);
        json_t *data = json_pack("{s:s, s:s, s:O, s:O, s:s}", "job_id", job_id, "model", model, "kind",
                                 json_object_get(act->job, "kind"), "dataset", json_object_get(act->job, "dataset"),
                                 "reason", reason);
        static const char *const opt[] = {"dataset_version", "spec", "promote_policy"};
        for (size_t i = 0; data && i < 3; i++) {
            json_t *v = json_object_get(act->job, opt[i]);
            if (v)
                json_object_set(data, opt[i], v);
        }
        if (data && !json_object_get(data, "spec"))
            json_object_set_new(data, "spec", json_object());
        if ((rc = outbox_event(c, "quern.train.requested", data, err)) < 0)
            goto out;
        st = qn_prepare(c, "INSERT INTO retrains (model, job_id, alert_id, requested_at) VALUES (?, ?, ?, ?) "
                           "ON CONFLICT (model) DO UPDATE SET job_id = excluded.job_id, alert_id = excluded.alert_id, "
                           "requested_at = excluded.requested_at", err);
        if (!st) {
            rc = err->code;
            goto out;
        }
        qn_bind_text(st, 1, model, -1);
        qn_bind_text(st, 2, job_id, -1);
        qn_bind_text(st, 3, alert_id, -1);
        qn_bind_int64(st, 4, now);
        if ((rc = qn_step(st, err)) < 0)
            goto out;
        outcome = "requested";
        rc = action_insert(c, action_id, alert_id, idx, "retrain", "requested",
                           json_pack("{s:s, s:s}", "model", model, "job_id", job_id), NULL, err);
        qn_log_info(NULL, "retrain requested", "{s:s, s:s, s:s}", "model", model, "job_id", job_id, "rule", r->name);
    }
    const char *l[] = {outcome};
    qn_counter_add(a->m_retrains, l, 1);
out:
    free(model);
    return rc < 0 ? rc : 0;
}

/* Fires rule r for dedupe key `key` inside the caller's transaction. Webhook
 * deliveries to queue after the commit are appended to jobs. */
static int fire(alerter *a, qn_conn *c, const al_rule *r, const char *key, const json_t *root,
                const json_t *evidence, const char *summary, hook_job *jobs, size_t *njobs, qn_err *err)
{
    int64_t now = qn_now_ms();
    char *etext = qn_json_canonical(evidence);
    int rc;
    qn_stmt *st = qn_prepare(c, "SELECT id FROM alerts WHERE rule = ? AND dedupe_key = ? AND state = 'firing'", err);
    if (!st || !etext) {
        rc = st ? qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory") : err->code;
        goto out;
    }
    qn_bind_text(st, 1, r->name, -1);
    qn_bind_text(st, 2, key, -1);
    if ((rc = qn_step(st, err)) < 0)
        goto out;
    if (rc == 1) {
        /* already firing: the same alert, seen again */
        char id[64];
        snprintf(id, sizeof id, "%s", qn_col_text(st, 0));
        if ((rc = qn_step(st, err)) < 0)
            goto out;
        if (!(st = qn_prepare(c, "UPDATE alerts SET count = count + 1, last_seen = ?, evidence = ? WHERE id = ?", err))) {
            rc = err->code;
            goto out;
        }
        qn_bind_int64(st, 1, now);
        qn_bind_text(st, 2, etext, -1);
        qn_bind_text(st, 3, id, -1);
        rc = qn_step(st, err);
        const char *l[] = {r->name, "deduplicated"};
        qn_counter_add(a->m_suppressed, l, 1);
        goto out;
    }
    if (r->cooldown_ms > 0) {
        if (!(st = qn_prepare(c, "SELECT MAX(fired_at) FROM alerts WHERE rule = ? AND dedupe_key = ?", err))) {
            rc = err->code;
            goto out;
        }
        qn_bind_text(st, 1, r->name, -1);
        qn_bind_text(st, 2, key, -1);
        if ((rc = qn_step(st, err)) < 0)
            goto out;
        int cooling = rc == 1 && !qn_col_is_null(st, 0) && now - qn_col_int64(st, 0) < r->cooldown_ms;
        if (rc == 1 && (rc = qn_step(st, err)) < 0)
            goto out;
        if (cooling) {
            const char *l[] = {r->name, "cooldown"};
            qn_counter_add(a->m_suppressed, l, 1);
            qn_log_info(NULL, "alert held back by its cooldown", "{s:s, s:s}", "rule", r->name, "key", key);
            rc = 0;
            goto out;
        }
    }
    char id[QN_UUID_LEN + 1];
    qn_uuid4(id);
    if (!(st = qn_prepare(c, "INSERT INTO alerts (id, rule, dedupe_key, state, severity, summary, evidence, count, "
                             "fired_at, last_seen) VALUES (?, ?, ?, 'firing', ?, ?, ?, 1, ?, ?)", err))) {
        rc = err->code;
        goto out;
    }
    qn_bind_text(st, 1, id, -1);
    qn_bind_text(st, 2, r->name, -1);
    qn_bind_text(st, 3, key, -1);
    qn_bind_text(st, 4, r->severity, -1);
    qn_bind_text(st, 5, summary, -1);
    qn_bind_text(st, 6, etext, -1);
    qn_bind_int64(st, 7, now);
    qn_bind_int64(st, 8, now);
    if ((rc = qn_step(st, err)) < 0)
        goto out;
    json_t *alert = json_pack("{s:s, s:s, s:s, s:s, s:s, s:O, s:o}", "id", id, "rule", r->name, "severity",
                              r->severity, "subject", key, "summary", summary, "evidence", evidence, "fired_at",
                              qn_json_time(now));
    if ((rc = outbox_event(c, "quern.alert.fired", json_deep_copy(alert), err)) < 0) {
        json_decref(alert);
        goto out;
    }
    for (size_t i = 0; i < r->nactions && rc >= 0; i++) {
        const al_action *act = &r->actions[i];
        char aid[80];
        snprintf(aid, sizeof aid, "%s.%zu", id, i);
        if (act->type == ACT_LOG) {
            qn_log_warn(NULL, "alert fired", "{s:s, s:s, s:s, s:s, s:s}", "alert", id, "rule", r->name, "severity",
                        r->severity, "subject", key, "summary", summary);
            rc = action_insert(c, aid, id, i, "log", "done", json_object(), NULL, err);
        } else if (act->type == ACT_WEBHOOK) {
            json_t *body = json_pack("{s:s, s:O}", "type", "quern.alert.fired", "alert", alert);
            char *btext = body ? qn_json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
            json_decref(body);
            if (!btext) {
                rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
                break;
            }
            char *shown = qn_url_redact(act->url);
            rc = shown ? action_insert(c, aid, id, i, "webhook", "pending",
                                       json_pack("{s:s, s:b}", "url", shown, "signed", act->secret != NULL), btext, err)
                       : qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            free(shown);
            if (rc >= 0 && *njobs < 16) {
                snprintf(jobs[*njobs].id, sizeof jobs[*njobs].id, "%s", aid);
                jobs[*njobs].act = act;
                jobs[(*njobs)++].body = btext;
            } else {
                free(btext);
            }
        } else {
            rc = retrain(a, c, r, act, root, id, summary, aid, i, err);
        }
    }
    json_decref(alert);
    if (rc >= 0) {
        const char *l[] = {r->name, r->severity};
        qn_counter_add(a->m_fired, l, 1);
        const char *fl[] = {r->name};
        qn_gauge_add(a->m_firing, fl, 1);
        qn_log_info(NULL, "alert fired", "{s:s, s:s, s:s}", "id", id, "rule", r->name, "subject", key);
    }
out:
    free(etext);
    return rc < 0 ? rc : 0;
}

/* Resolves the firing alerts of rule (key NULL: every key). */
static int resolve(alerter *a, qn_conn *c, const al_rule *r, const char *key, const char *why, qn_err *err)
{
    int64_t now = qn_now_ms();
    json_t *ids = json_array();
    int rc;
    qn_stmt *st = key ? qn_prepare(c, "SELECT id, dedupe_key FROM alerts WHERE rule = ? AND state = 'firing' AND dedupe_key = ?", err)
                      : qn_prepare(c, "SELECT id, dedupe_key FROM alerts WHERE rule = ? AND state = 'firing'", err);
    if (!st) {
        rc = err->code;
        goto out;
    }
    qn_bind_text(st, 1, r->name, -1);
    if (key)
        qn_bind_text(st, 2, key, -1);
    while ((rc = qn_step(st, err)) == 1)
        json_array_append_new(ids, json_pack("[s, s]", qn_col_text(st, 0), qn_col_text(st, 1)));
    if (rc < 0)
        goto out;
    size_t i;
    json_t *p;
    json_array_foreach(ids, i, p) {
        const char *id = json_string_value(json_array_get(p, 0));
        if (!(st = qn_prepare(c, "UPDATE alerts SET state = 'resolved', resolved_at = ?, resolved_by = ? WHERE id = ?", err))) {
            rc = err->code;
            goto out;
        }
        qn_bind_int64(st, 1, now);
        qn_bind_text(st, 2, why, -1);
        qn_bind_text(st, 3, id, -1);
        if ((rc = qn_step(st, err)) < 0 ||
            (rc = outbox_event(c, "quern.alert.resolved",
                               json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "id", id, "rule", r->name, "severity",
                                         r->severity, "subject", json_string_value(json_array_get(p, 1)), "reason", why,
                                         "resolved_at", qn_json_time(now)),
                               err)) < 0)
            goto out;
        const char *l[] = {r->name};
        qn_counter_add(a->m_resolved, l, 1);
        qn_gauge_add(a->m_firing, l, -1);
        qn_log_info(NULL, "alert resolved", "{s:s, s:s, s:s}", "id", id, "rule", r->name, "reason", why);
    }
    rc = 0;
out:
    json_decref(ids);
    return rc;
}

static void queue_jobs(alerter *a, hook_job *jobs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (al_webhook_enqueue(a->hooks, jobs[i].id, jobs[i].act->url, jobs[i].act->secret, jobs[i].body,
                               jobs[i].act->retries) < 0)
            al_action_done(a, jobs[i].id, "failed", 0, "the webhook queue is full");
        free(jobs[i].body);
    }
    qn_outbox_kick(a->outbox);
}

static char *summary_of(const char *type, const char *key)
{
    char *s = NULL;
    if (asprintf(&s, "%s%s%s", type, *key ? " for " : "", key) < 0)
        return NULL;
    return s;
}

/* A rule with a "when" condition fires only after when_windows matching
 * events in a row for which it held (per rule and key); one for which it
 * does not resets the count. *go: fire now. */
static int when_streak(qn_conn *c, const al_rule *r, const char *key, int holds, int *go, qn_err *err)
{
    *go = 0;
    qn_stmt *st = holds ? qn_prepare(c, "INSERT INTO streaks (rule, dedupe_key, n) VALUES (?, ?, 1) "
                                        "ON CONFLICT (rule, dedupe_key) DO UPDATE SET n = streaks.n + 1 RETURNING n", err)
                        : qn_prepare(c, "DELETE FROM streaks WHERE rule = ? AND dedupe_key = ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, r->name, -1);
    qn_bind_text(st, 2, key, -1);
    int rc = qn_step(st, err);
    if (rc < 0)
        return rc;
    if (holds && rc == 1) {
        *go = qn_col_int64(st, 0) >= r->when_windows;
        if ((rc = qn_step(st, err)) < 0)
            return rc;
    }
    return 0;
}

/* One event matched against the rules, inside its write transaction. */
typedef struct event_tx {
    alerter *a;
    al_rules *rs;
    const char *type;
    const json_t *root, *data;
    hook_job jobs[16]; /* out: webhooks to queue once committed */
    size_t njobs;
} event_tx;

static int event_body(qn_conn *c, void *arg, qn_err *err)
{
    event_tx *x = arg;
    alerter *a = x->a;
    al_rules *rs = x->rs;
    const char *type = x->type;
    const json_t *root = x->root, *data = x->data;
    int rc;
    if (strcmp(type, "quern.train.finished") == 0 && json_is_string(json_object_get(data, "model"))) {
        const char *job = json_string_value(json_object_get(data, "job_id"));
        qn_stmt *st = job ? qn_prepare(c, "DELETE FROM retrains WHERE model = ? AND job_id = ?", err)
                          : qn_prepare(c, "DELETE FROM retrains WHERE model = ?", err);
        if (!st)
            return err->code;
        qn_bind_text(st, 1, json_string_value(json_object_get(data, "model")), -1);
        if (job)
            qn_bind_text(st, 2, job, -1);
        if ((rc = qn_step(st, err)) < 0)
            return rc;
    }
    for (size_t i = 0; i < rs->n; i++) {
        const al_rule *r = &rs->rules[i];
        if (r->event && qn_topic_match(r->event, type) && (!r->where || al_where_match(r->where, root))) {
            char *key = r->dedupe ? al_template(r->dedupe, root) : strdup("");
            int go = 1;
            if (key && r->when_value && (rc = when_streak(c, r, key, al_when_holds(r, root), &go, err)) < 0) {
                free(key);
                return rc;
            }
            if (!go) {
                free(key);
                goto resolve_part;
            }
            char *sum = key ? summary_of(type, key) : NULL;
            rc = sum ? fire(a, c, r, key, root, data ? data : root, sum, x->jobs, &x->njobs, err)
                     : qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            free(key);
            free(sum);
            if (rc < 0)
                return rc;
        }
    resolve_part:
        if (r->resolve_event && qn_topic_match(r->resolve_event, type) &&
            (!r->resolve_where || al_where_match(r->resolve_where, root))) {
            char *key = r->dedupe ? al_template(r->dedupe, root) : NULL;
            char why[300];
            snprintf(why, sizeof why, "event %s", type);
            rc = resolve(a, c, r, key, why, err);
            free(key);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

int al_on_event(const qn_msg *msg, void *ud, qn_err *err)
{
    alerter *a = ud;
    const char *type = json_string_value(json_object_get(msg->event, "type"));
    if (!type)
        return 0;
    event_tx x = {.a = a, .type = type, .root = msg->event, .data = json_object_get(msg->event, "data")};
    x.rs = al_rules_get(a);
    pthread_mutex_lock(&a->mu);
    int rc = qn_subscriber_tx(a->db, msg, event_body, &x, err);
    if (rc == 0) {
        queue_jobs(a, x.jobs, x.njobs);
        x.njobs = 0;
    }
    for (size_t i = 0; i < x.njobs; i++)
        free(x.jobs[i].body);
    pthread_mutex_unlock(&a->mu);
    al_rules_put(a, x.rs);
    return rc < 0 ? rc : 0; /* 1: a duplicate, handled already */
}

/* ---- the poller: metric rules, resolve-after, stale retrains ------------- */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    return qn_buf_append(ud, p, size * n) < 0 ? 0 : size * n;
}

/* GETs url into out, connecting only to addresses --scrape-allow allows (the
 * path was checked when the rule was loaded). 0, or -1 with errbuf set. */
static int scrape(const alerter *a, const char *url, qn_buf *out, char *errbuf)
{
    qn_err e;
    qn_netpin *pin = NULL;
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(errbuf, CURL_ERROR_SIZE, "cannot create an HTTP handle");
        return -1;
    }
    if (qn_netallow_pin(a->scrape_allow, h, url, &pin, &e) < 0) {
        snprintf(errbuf, CURL_ERROR_SIZE, "%.250s", e.msg);
        curl_easy_cleanup(h);
        return -1;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    qn_netpin_free(pin);
    if (cc == CURLE_OK && status != 200)
        snprintf(errbuf, CURL_ERROR_SIZE, "HTTP %ld", status);
    else if (cc != CURLE_OK && !errbuf[0])
        snprintf(errbuf, CURL_ERROR_SIZE, "%s", curl_easy_strerror(cc));
    return cc == CURLE_OK && status == 200 ? 0 : -1;
}

static int compare(const char *op, double v, double t)
{
    switch (op[0]) {
    case '>': return op[1] == '=' ? v >= t : v > t;
    case '<': return op[1] == '=' ? v <= t : v < t;
    case '=': return v == t;
    default: return v != t;
    }
}

/* Parses one sample line "name{a="x",b="y"} value [ts]" into its labels
 * object; NULL when it is not a sample of name. */
static json_t *sample_of(const char *line, size_t len, const char *name, double *value)
{
    size_t nl = strlen(name);
    if (len <= nl || strncmp(line, name, nl) != 0 || (line[nl] != '{' && line[nl] != ' '))
        return NULL;
    json_t *labels = json_object();
    const char *p = line + nl, *end = line + len;
    if (*p == '{') {
        p++;
        while (p < end && *p != '}') {
            const char *eq = memchr(p, '=', (size_t)(end - p));
            if (!eq || eq + 1 >= end || eq[1] != '"')
                goto bad;
            char key[128], val[512];
            size_t kl = (size_t)(eq - p), vl = 0;
            if (kl >= sizeof key)
                goto bad;
            memcpy(key, p, kl);
            key[kl] = 0;
            p = eq + 2;
            while (p < end && *p != '"') {
                if (*p == '\\' && p + 1 < end) {
                    p++;
                    if (vl < sizeof val - 1)
                        val[vl++] = *p == 'n' ? '\n' : *p;
                } else if (vl < sizeof val - 1) {
                    val[vl++] = *p;
                }
                p++;
            }
            if (p >= end)
                goto bad;
            val[vl] = 0;
            json_object_set_new(labels, key, json_string(val));
            p++;
            if (p < end && *p == ',')
                p++;
        }
        if (p >= end)
            goto bad;
        p++;
    }
    char num[64];
    while (p < end && *p == ' ')
        p++;
    size_t k = 0;
    while (p < end && *p != ' ' && k < sizeof num - 1)
        num[k++] = *p++;
    num[k] = 0;
    char *e;
    *value = strtod(num, &e);
    if (!k || *e)
        goto bad;
    return labels;
bad:
    json_decref(labels);
    return NULL;
}

static void eval_metric_rule(alerter *a, qn_conn *c, const al_rule *r, hook_job *jobs, size_t *njobs)
{
    qn_buf body;
    qn_buf_init(&body, 32u << 20);
    char errbuf[CURL_ERROR_SIZE] = "";
    qn_err err;
    char *shown = qn_url_redact(r->metric_url);  /* the URL as evidence and logs may show it */
    if (!shown || scrape(a, r->metric_url, &body, errbuf) < 0) {
        qn_log_warn(NULL, "metric rule: scrape failed", "{s:s, s:s?, s:s}", "rule", r->name, "url", shown,
                    "detail", shown ? errbuf : "out of memory");
        qn_buf_free(&body);
        free(shown);
        return;
    }
    int64_t now = qn_now_ms();
    const char *p = body.data ? body.data : "";
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        double v;
        json_t *labels = *p == '#' ? NULL : sample_of(p, len, r->metric_name, &v);
        p += len + (nl ? 1 : 0);
        if (!labels)
            continue;
        if (r->metric_labels && !al_where_match(r->metric_labels, labels)) {
            json_decref(labels);
            continue;
        }
        char *series = qn_json_dumps(labels, JSON_COMPACT | JSON_SORT_KEYS);
        char skey[1024];
        snprintf(skey, sizeof skey, "%s\x1f%s", r->name, series ? series : "");
        json_t *root = json_pack("{s:s, s:o, s:f, s:s}", "metric", r->metric_name, "labels", labels, "value", v,
                                 "url", shown);
        char *key = r->dedupe ? al_template(r->dedupe, root) : strdup(series ? series : "");
        free(series);
        if (!root || !key) {
            json_decref(root);
            free(key);
            continue;
        }
        int rc = 0;
        if (compare(r->op, v, r->value)) {
            json_t *since = json_object_get(a->since, skey);
            if (!since)
                json_object_set_new(a->since, skey, since = json_integer(now));
            if (now - json_integer_value(since) >= r->for_ms && qn_tx_begin(c, QN_TX_WRITE, &err) == 0) {
                char sum[700];
                snprintf(sum, sizeof sum, "%s %s %g (now %g)%s%.400s", r->metric_name, r->op, r->value, v,
                         *key ? " for " : "", key);
                size_t before = *njobs;
                rc = fire(a, c, r, key, root, root, sum, jobs, njobs, &err);
                if (rc < 0 || qn_tx_commit(c, &err) < 0) {
                    qn_tx_rollback(c);
                    for (size_t i = before; i < *njobs; i++)
                        free(jobs[i].body);
                    *njobs = before;
                }
            }
        } else {
            json_object_del(a->since, skey);
            if (!r->resolve_event && !r->resolve_after_ms && qn_tx_begin(c, QN_TX_WRITE, &err) == 0) {
                if (resolve(a, c, r, key, "metric condition cleared", &err) < 0 || qn_tx_commit(c, &err) < 0)
                    qn_tx_rollback(c);
            }
        }
        json_decref(root);
        free(key);
    }
    qn_buf_free(&body);
    free(shown);
}

static void poll_once(alerter *a)
{
    hook_job jobs[16];
    size_t njobs = 0;
    qn_err err;
    al_rules *rs = al_rules_get(a);
    pthread_mutex_lock(&a->mu);
    qn_conn *c = qn_store_acquire(a->db, &err);
    if (!c)
        goto out;
    int64_t now = qn_now_ms();
    for (size_t i = 0; i < rs->n; i++) {
        const al_rule *r = &rs->rules[i];
        if (r->metric_name && njobs < 12)
            eval_metric_rule(a, c, r, jobs, &njobs);
        if (r->resolve_after_ms > 0) {
            qn_stmt *st = qn_prepare(c, "SELECT DISTINCT dedupe_key FROM alerts WHERE rule = ? AND state = 'firing' AND last_seen <= ?", &err);
            json_t *keys = json_array();
            if (st) {
                qn_bind_text(st, 1, r->name, -1);
                qn_bind_int64(st, 2, now - r->resolve_after_ms);
                while (qn_step(st, &err) == 1)
                    json_array_append_new(keys, json_string(qn_col_text(st, 0)));
            }
            size_t k;
            json_t *key;
            json_array_foreach(keys, k, key) {
                if (qn_tx_begin(c, QN_TX_WRITE, &err) < 0)
                    break;
                if (resolve(a, c, r, json_string_value(key), "after", &err) < 0 || qn_tx_commit(c, &err) < 0)
                    qn_tx_rollback(c);
            }
            json_decref(keys);
        }
    }
    if (qn_tx_begin(c, QN_TX_WRITE, &err) == 0) {
        qn_stmt *st = qn_prepare(c, "DELETE FROM retrains WHERE requested_at < ?", &err);
        if (st) {
            qn_bind_int64(st, 1, now - a->retrain_timeout_ms);
            st = qn_step(st, &err) < 0 ? NULL : st;
        }
        if (!st || qn_tx_commit(c, &err) < 0) {
            /* harmless: a stale pending retrain only delays the next one until this sweep works */
            qn_log_warn(NULL, "retrain sweep failed", "{s:s}", "detail", err.msg);
            qn_tx_rollback(c);
        }
    }
out:
    if (c)
        qn_store_release(a->db, c);
    pthread_mutex_unlock(&a->mu);
    al_rules_put(a, rs);
    queue_jobs(a, jobs, njobs);
}

static void poll_tick(void *ud)
{
    poll_once(ud);
}

int al_poller_start(alerter *a, qn_err *err)
{
    a->poller = qn_ticker_start(poll_tick, a, a->metric_interval_ms, err);
    return a->poller ? 0 : err->code;
}

void al_poller_stop(alerter *a)
{
    qn_ticker_stop(a->poller);
    a->poller = NULL;
}

/* ---- webhook outcomes ---------------------------------------------------- */

void al_action_done(alerter *a, const char *action_id, const char *status, int attempts, const char *error)
{
    qn_err err;
    qn_conn *c = qn_store_acquire(a->db, &err);
    if (!c)
        return;
    qn_stmt *st = qn_prepare(c, "UPDATE actions SET status = ?, attempts = ?, last_error = ?, updated_at = ? WHERE id = ?", &err);
    if (st) {
        qn_bind_text(st, 1, status, -1);
        qn_bind_int64(st, 2, attempts);
        error ? qn_bind_text(st, 3, error, -1) : qn_bind_null(st, 3);
        qn_bind_int64(st, 4, qn_now_ms());
        qn_bind_text(st, 5, action_id, -1);
        if (qn_step(st, &err) < 0)
            qn_log_warn(NULL, "cannot record a webhook outcome", "{s:s, s:s}", "action", action_id, "detail", err.msg);
    }
    qn_store_release(a->db, c);
    if (strcmp(status, "retrying") != 0) {
        const char *l[] = {status};
        qn_counter_add(a->m_hooks, l, 1);
    }
}

int al_requeue_pending(alerter *a, qn_err *err)
{
    qn_conn *c = qn_store_acquire(a->db, err);
    if (!c)
        return err->code;
    al_rules *rs = al_rules_get(a);
    qn_stmt *st = qn_prepare(c, "SELECT x.id, x.idx, x.body, x.attempts, al.rule FROM actions x JOIN alerts al ON al.id = x.alert_id "
                                "WHERE x.type = 'webhook' AND x.status IN ('pending', 'retrying')", err);
    int rc = st ? 0 : err->code;
    while (st && (rc = qn_step(st, err)) == 1) {
        const char *rule = qn_col_text(st, 4);
        size_t idx = (size_t)qn_col_int64(st, 1);
        const al_action *act = NULL;
        for (size_t i = 0; i < rs->n; i++)
            if (strcmp(rs->rules[i].name, rule) == 0 && idx < rs->rules[i].nactions &&
                rs->rules[i].actions[idx].type == ACT_WEBHOOK)
                act = &rs->rules[i].actions[idx];
        char id[80];
        snprintf(id, sizeof id, "%s", qn_col_text(st, 0));
        if (!act || al_webhook_enqueue(a->hooks, id, act->url, act->secret, qn_col_text(st, 2),
                                       act->retries - (int)qn_col_int64(st, 3)) < 0)
            qn_log_warn(NULL, "pending webhook not resumed (rule gone or queue full)", "{s:s}", "action", id);
    }
    qn_store_release(a->db, c);
    al_rules_put(a, rs);
    return rc < 0 ? rc : 0;
}
