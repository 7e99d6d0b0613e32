/*
 * rules.c - the rules file of quern-alert: parsing, strict validation,
 * dotted paths, predicates and "{path}" templates.
 *
 * A rule (docs/alert.md has the full reference):
 *   {"name":"drift-retail",
 *    "on":{"event":"quern.drift.detected","where":{"data.dataset_drift":true,"data.model":"retail"},
 *          "when":{"value":"data.metrics.rmse.live","op":">","than":"data.metrics.rmse.reference",
 *                  "times":1.2,"plus":0,"windows":2}}   (when: optional, events in a row)
 *       | {"metric":{"url":"http://127.0.0.1:7707/metrics","name":"quern_drift_score",
 *                    "labels":{"model":"retail"},"op":">","value":0.2,"for":"1m"}},
 *    "severity":"warning|critical|info", "cooldown":"30m", "dedupe":"{data.model}",
 *    "resolve":{"event":"quern.train.finished","where":{...}} | {"after":"1h"},
 *    "actions":[{"type":"log"}, {"type":"webhook","url":...,"secret_env":"NAME"|"secret":...,"retries":5},
 *               {"type":"retrain","model":"{data.model}","job":{"kind":...,"dataset":...,...}}]}
 * Everything is checked up front and an error names the rule by name and
 * index and the field ("rule drift: rules[2].actions[0].url: ..."), so a bad
 * file is refused whole and the rules in force stay. Templates (dedupe, a
 * retrain's model) are checked for syntax (al_template_check), a retrain's
 * job for what quern-train would refuse at once (kind, dataset name and
 * version). Outbound targets are checked here as far as they can be
 * without resolving names (core/netallow.h): a webhook to a refused literal
 * address, a metric URL other than /metrics of a host in --scrape-allow.
 * Names are checked again, after resolution, at each send.
 *
 * Secrets are write-only: al_rules_public is the only form of the rules that
 * leaves the service (secrets "(set)", URLs redacted), and al_rules_inherit
 * turns that form, given back, into the values in force.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bus/bus.h"
#include "core/config.h"
#include "core/json.h"
#include "core/netallow.h"
#include "core/validate.h"
#include "ml/train.h"
#include "alert/alert.h"

#define MAX_RULES 1000
#define MAX_ACTIONS 16

const json_t *al_path(const json_t *root, const char *path)
{
    char key[AL_PATH_MAX];
    const json_t *cur = root;
    while (cur && *path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof key)
            return NULL;
        memcpy(key, path, n);
        key[n] = 0;
        cur = json_object_get(cur, key);
        path = dot ? dot + 1 : path + n;
    }
    return cur;
}

int al_where_match(const json_t *where, const json_t *root)
{
    const char *k;
    json_t *want;
    json_object_foreach((json_t *)where, k, want) {
        const json_t *got = al_path(root, k);
        if (!got)
            return 0;
        if (json_is_number(want) && json_is_number(got)) {
            if (json_number_value(want) != json_number_value(got))
                return 0;
        } else if (!json_equal(want, (json_t *)got)) {
            return 0;
        }
    }
    return 1;
}

char *al_template(const char *tmpl, const json_t *root)
{
    size_t cap = strlen(tmpl) + 256, len = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    for (const char *p = tmpl; *p;) {
        const char *piece = p;
        size_t n = 1;
        char *tmp = NULL;
        const char *close = *p == '{' ? strchr(p, '}') : NULL;
        if (close) {
            char path[AL_PATH_MAX];
            size_t pl = (size_t)(close - p - 1);
            if (pl < sizeof path) {
                memcpy(path, p + 1, pl);
                path[pl] = 0;
                const json_t *v = al_path(root, path);
                if (json_is_string(v)) {
                    piece = json_string_value(v);
                    n = strlen(piece);
                } else if (v) {
                    tmp = qn_json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
                    piece = tmp ? tmp : "";
                    n = strlen(piece);
                } else {
                    piece = "";
                    n = 0;
                }
            }
            p = close + 1;
        } else {
            p++;
        }
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            char *nb = realloc(out, cap);
            if (!nb) {
                free(out);
                free(tmp);
                return NULL;
            }
            out = nb;
        }
        memcpy(out + len, piece, n);
        len += n;
        free(tmp);
    }
    out[len] = 0;
    return out;
}

/* The shape of a placeholder, for messages. */
#define PLACEHOLDER "(a placeholder is {dotted.path})"

int al_template_check(const char *tmpl, const char *what, qn_err *err)
{
    for (const char *p = tmpl; *p; p++) {
        size_t at = (size_t)(p - tmpl);
        if (*p == '}')
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: the \"}\" at byte %zu closes no \"{\" " PLACEHOLDER,
                              what, at);
        if (*p != '{')
            continue;
        const char *close = strpbrk(p + 1, "{}");
        if (!close || *close == '{')
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: the \"{\" at byte %zu is not closed " PLACEHOLDER,
                              what, at);
        size_t n = (size_t)(close - p - 1);
        if (n == 0 || n >= AL_PATH_MAX)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "%s: the placeholder at byte %zu must hold a dotted path of 1..%d bytes", what, at,
                              AL_PATH_MAX - 1);
        /* every segment non-empty: no leading, trailing or doubled dot */
        for (const char *q = p + 1; q < close; q++)
            if (*q == '.' && (q == p + 1 || q + 1 == close || q[1] == '.'))
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "%s: the placeholder at byte %zu has an empty path segment", what, at);
        p = close;
    }
    return 0;
}

int64_t al_duration_ms(const json_t *v, int *ok)
{
    long long ms = 0;
    *ok = 1;
    if (!v)
        return 0;
    if (json_is_integer(v) && json_integer_value(v) >= 0)
        return json_integer_value(v) * 1000;  /* a bare number is seconds */
    if (!json_is_string(v) || qn_parse_duration_ms(json_string_value(v), &ms) < 0 || ms < 0)
        *ok = 0;
    return ms;
}

static void rule_clear(al_rule *r)
{
    free(r->name);
    free(r->event);
    json_decref(r->where);
    free(r->metric_url);
    free(r->metric_name);
    json_decref(r->metric_labels);
    free(r->when_value);
    free(r->when_than);
    free(r->severity);
    free(r->dedupe);
    free(r->resolve_event);
    json_decref(r->resolve_where);
    for (size_t i = 0; i < r->nactions; i++) {
        free(r->actions[i].url);
        free(r->actions[i].secret);
        free(r->actions[i].model);
        json_decref(r->actions[i].job);
    }
    free(r->actions);
}

void al_rules_free(al_rules *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        rule_clear(&r->rules[i]);
    free(r->rules);
    json_decref(r->doc);
    free(r);
}

#define BAD(...) (qn_err_set(err, QN_INVALID_ARGUMENT, __VA_ARGS__))

static int only(const json_t *o, const char *const *keys, const char *ctx, qn_err *err)
{
    if (!json_is_object(o))
        return BAD("%s must be an object", ctx);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v) {
        size_t i = 0;
        while (keys[i] && strcmp(keys[i], k) != 0)
            i++;
        if (!keys[i])
            return BAD("%s.%s: unknown field", ctx, k);
    }
    return 0;
}

static int str_field(const json_t *o, const char *key, int required, size_t max, const char *ctx,
                     char **out, qn_err *err)
{
    const json_t *v = json_object_get(o, key);
    if (!v) {
        if (required)
            return BAD("%s.%s is required", ctx, key);
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max)
        return BAD("%s.%s must be a string of 1..%zu bytes", ctx, key, max);
    if (!(*out = strdup(json_string_value(v))))
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    return 0;
}

static int where_field(const json_t *o, const char *ctx, json_t **out, qn_err *err)
{
    const json_t *w = json_object_get(o, "where");
    if (!w)
        return 0;
    if (!json_is_object(w) || json_object_size(w) > 32)
        return BAD("%s.where must be an object of at most 32 {\"path\": value} entries", ctx);
    *out = json_incref((json_t *)w);
    return 0;
}

static int op_check(const char *op, char out[3])
{
    static const char *const ops[] = {">", ">=", "<", "<=", "==", "!=", NULL};
    for (size_t i = 0; ops[i]; i++)
        if (strcmp(ops[i], op) == 0) {
            snprintf(out, 3, "%s", ops[i]);
            return 0;
        }
    return -1;
}

static int op_holds(const char *op, double a, double b)
{
    if (!strcmp(op, ">"))
        return a > b;
    if (!strcmp(op, ">="))
        return a >= b;
    if (!strcmp(op, "<"))
        return a < b;
    if (!strcmp(op, "<="))
        return a <= b;
    if (!strcmp(op, "=="))
        return a == b;
    return a != b;
}

int al_when_holds(const al_rule *r, const json_t *root)
{
    if (!r->when_value)
        return 1;
    const json_t *v = al_path(root, r->when_value);
    if (!json_is_number(v))
        return 0;
    double than = r->when_than_num;
    if (r->when_than) {
        const json_t *t = al_path(root, r->when_than);
        if (!json_is_number(t))
            return 0;
        than = json_number_value(t);
    }
    return op_holds(r->when_op, json_number_value(v), than * r->when_times + r->when_plus);
}

/* on.when: {"value":"data.metrics.rmse.live","op":">","than":"data.metrics.rmse.reference"|1.5,
 *           "times":1.2,"plus":-0.03,"windows":2} */
static int when_field(const json_t *on, const char *ctx, al_rule *r, qn_err *err)
{
    const json_t *w = json_object_get(on, "when");
    if (!w)
        return 0;
    char wctx[160];
    snprintf(wctx, sizeof wctx, "%s.when", ctx);
    static const char *const keys[] = {"value", "op", "than", "times", "plus", "windows", NULL};
    int rc;
    char *op = NULL;
    if (!json_is_object(w))
        return BAD("%s must be an object {\"value\":path,\"op\":...,\"than\":path or number}", wctx);
    if ((rc = only(w, keys, wctx, err)) < 0 || (rc = str_field(w, "value", 1, AL_PATH_MAX - 1, wctx, &r->when_value, err)) < 0 ||
        (rc = str_field(w, "op", 1, 2, wctx, &op, err)) < 0)
        return rc;
    rc = op_check(op, r->when_op);
    free(op);
    if (rc < 0)
        return BAD("%s.op must be one of > >= < <= == !=", wctx);
    const json_t *than = json_object_get(w, "than");
    if (json_is_string(than)) {
        if ((rc = str_field(w, "than", 1, AL_PATH_MAX - 1, wctx, &r->when_than, err)) < 0)
            return rc;
    } else if (json_is_number(than) && isfinite(json_number_value(than))) {
        r->when_than_num = json_number_value(than);
    } else {
        return BAD("%s.than must be a dotted path (\"data.metrics.rmse.reference\") or a number", wctx);
    }
    const json_t *times = json_object_get(w, "times"), *plus = json_object_get(w, "plus");
    if (times && (!json_is_number(times) || !isfinite(json_number_value(times))))
        return BAD("%s.times must be a number", wctx);
    if (plus && (!json_is_number(plus) || !isfinite(json_number_value(plus))))
        return BAD("%s.plus must be a number", wctx);
    r->when_times = times ? json_number_value(times) : 1.0;
    r->when_plus = plus ? json_number_value(plus) : 0.0;
    const json_t *n = json_object_get(w, "windows");
    if (n && (!json_is_integer(n) || json_integer_value(n) < 1 || json_integer_value(n) > 1000))
        return BAD("%s.windows must be an integer in 1..1000 (events in a row)", wctx);
    r->when_windows = n ? json_integer_value(n) : 1;
    return 0;
}

static int event_pattern(const json_t *o, const char *ctx, char **out, qn_err *err)
{
    int rc = str_field(o, "event", 1, 255, ctx, out, err);
    if (rc < 0)
        return rc;
    if (qn_topic_pattern_valid(*out) != 0)
        return BAD("%s.event: %s is not an event type or pattern", ctx, *out);
    return 0;
}

/* Checks the template in value, the field key of ctx. */
static int template_field(const char *value, const char *ctx, const char *key, qn_err *err)
{
    char what[160];
    snprintf(what, sizeof what, "%s.%s", ctx, key);
    return al_template_check(value, what, err);
}

static int parse_action(const json_t *o, const char *ctx, const al_allow *allow, al_action *a, qn_err *err)
{
    static const char *const keys[] = {"type", "url", "secret", "secret_env", "retries", "model", "job", NULL};
    int rc;
    char *type = NULL;
    if ((rc = only(o, keys, ctx, err)) < 0 || (rc = str_field(o, "type", 1, 16, ctx, &type, err)) < 0)
        return rc;
    if (strcmp(type, "log") == 0) {
        a->type = ACT_LOG;
    } else if (strcmp(type, "webhook") == 0) {
        a->type = ACT_WEBHOOK;
        if ((rc = str_field(o, "url", 1, 2048, ctx, &a->url, err)) < 0)
            goto out;
        if (strncmp(a->url, "http://", 7) != 0 && strncmp(a->url, "https://", 8) != 0) {
            rc = BAD("%s.url must start with http:// or https://", ctx);
            goto out;
        }
        qn_err e;
        if (allow && allow->webhook && qn_netallow_check_url(allow->webhook, a->url, &e) < 0) {
            rc = BAD("%s.url: %s", ctx, e.msg);
            goto out;
        }
        if ((rc = str_field(o, "secret", 0, 1024, ctx, &a->secret, err)) < 0)
            goto out;
        const json_t *env = json_object_get(o, "secret_env");
        if (env) {
            if (a->secret) {
                rc = BAD("%s: give secret or secret_env, not both", ctx);
                goto out;
            }
            const char *val = json_is_string(env) ? getenv(json_string_value(env)) : NULL;
            if (!val || !*val) {
                rc = BAD("%s.secret_env: environment variable %s is not set", ctx,
                         json_is_string(env) ? json_string_value(env) : "(not a string)");
                goto out;
            }
            a->secret_from_env = 1;
            if (!(a->secret = strdup(val))) {
                rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
                goto out;
            }
        }
        const json_t *r = json_object_get(o, "retries");
        a->retries = 5;
        if (r) {
            if (!json_is_integer(r) || json_integer_value(r) < 0 || json_integer_value(r) > 20) {
                rc = BAD("%s.retries must be an integer in 0..20", ctx);
                goto out;
            }
            a->retries = (int)json_integer_value(r);
        }
    } else if (strcmp(type, "retrain") == 0) {
        a->type = ACT_RETRAIN;
        if ((rc = str_field(o, "model", 1, 256, ctx, &a->model, err)) < 0 ||
            (rc = template_field(a->model, ctx, "model", err)) < 0)
            goto out;
        qn_err e;
        if (!strchr(a->model, '{') && qn_name_check("model", a->model, &e) < 0) {
            rc = BAD("%s.model: %s", ctx, e.msg);
            goto out;
        }
        const json_t *job = json_object_get(o, "job");
        static const char *const jkeys[] = {"kind", "dataset", "dataset_version", "spec", "promote_policy", NULL};
        char jctx[160];
        snprintf(jctx, sizeof jctx, "%s.job", ctx);
        if (!job) {
            rc = BAD("%s.job is required (kind, dataset, spec, promote_policy)", ctx);
            goto out;
        }
        if ((rc = only(job, jkeys, jctx, err)) < 0)
            goto out;
        if (!json_is_string(json_object_get(job, "kind")) || !json_is_string(json_object_get(job, "dataset"))) {
            rc = BAD("%s.kind and %s.dataset are required strings", jctx, jctx);
            goto out;
        }
        const char *kind = json_string_value(json_object_get(job, "kind"));
        const char *dataset = json_string_value(json_object_get(job, "dataset"));
        if (!qml_train_kind_known(kind)) {
            rc = BAD("%s.kind: \"%.64s\" is not a kind quern-train trains (als, logistic, linear, xgboost)",
                     jctx, kind);
            goto out;
        }
        if (qn_name_check("dataset", dataset, &e) < 0) {
            rc = BAD("%s.dataset: %s", jctx, e.msg);
            goto out;
        }
        const json_t *dv = json_object_get(job, "dataset_version");
        if (dv && (!json_is_integer(dv) || json_integer_value(dv) < 1 ||
                   json_integer_value(dv) > AL_DATASET_VERSION_MAX)) {
            rc = BAD("%s.dataset_version must be an integer in 1..%lld (leave it out for the latest version)",
                     jctx, (long long)AL_DATASET_VERSION_MAX);
            goto out;
        }
        const json_t *spec = json_object_get(job, "spec");
        if (spec && !json_is_object(spec)) {
            rc = BAD("%s.spec must be an object", jctx);
            goto out;
        }
        const json_t *policy = json_object_get(job, "promote_policy");
        if (policy && !json_is_object(policy) && !json_is_null(policy)) {
            rc = BAD("%s.promote_policy must be an object", jctx);
            goto out;
        }
        a->job = json_deep_copy(job);
    } else {
        rc = BAD("%s.type: unknown action %s (log, webhook, retrain)", ctx, type);
        goto out;
    }
    for (const char *const *k = (const char *const[]){"url", "secret", "secret_env", "retries", NULL}; *k; k++)
        if (a->type != ACT_WEBHOOK && json_object_get(o, *k)) {
            rc = BAD("%s.%s: only webhook actions take it", ctx, *k);
            goto out;
        }
    for (const char *const *k = (const char *const[]){"model", "job", NULL}; *k; k++)
        if (a->type != ACT_RETRAIN && json_object_get(o, *k)) {
            rc = BAD("%s.%s: only retrain actions take it", ctx, *k);
            goto out;
        }
    rc = 0;
out:
    free(type);
    return rc;
}

/* A metric URL reads /metrics (no query) of a host in --scrape-allow. */
static int metric_url_check(const char *url, const char *mctx, const al_allow *allow, qn_err *err)
{
    char host[256], path[256];
    int has_query = 0;
    qn_err e;
    if (qn_url_parts(url, host, sizeof host, NULL, path, sizeof path, &has_query, &e) < 0)
        return BAD("%s.url: %s", mctx, e.msg);
    if (strcmp(path, "/metrics") != 0 || has_query)
        return BAD("%s.url: a metric rule reads only the /metrics path (no query) of a host in --scrape-allow, "
                   "not %.100s%s", mctx, path, has_query ? "?..." : "");
    if (allow && allow->scrape && qn_netallow_check_url(allow->scrape, url, &e) < 0)
        return BAD("%s.url: %s", mctx, e.msg);
    return 0;
}

static int parse_rule(const json_t *o, size_t idx, const al_allow *allow, al_rule *r, qn_err *err)
{
    static const char *const keys[] = {"name", "on", "severity", "cooldown", "dedupe", "resolve", "actions", NULL};
    char ctx[96], sub[128];
    int rc, ok;
    snprintf(ctx, sizeof ctx, "rules[%zu]", idx);
    if ((rc = only(o, keys, ctx, err)) < 0 || (rc = str_field(o, "name", 1, 128, ctx, &r->name, err)) < 0)
        return rc;
    qn_err e;
    if (qn_name_check("rule", r->name, &e) < 0)
        return BAD("%s.name: %s", ctx, e.msg);
    const json_t *on = json_object_get(o, "on");
    snprintf(sub, sizeof sub, "%s.on", ctx);
    if (!on)
        return BAD("%s.on is required ({\"event\":...} or {\"metric\":{...}})", ctx);
    static const char *const onkeys[] = {"event", "where", "when", "metric", NULL};
    if ((rc = only(on, onkeys, sub, err)) < 0)
        return rc;
    const json_t *metric = json_object_get(on, "metric");
    if (metric && json_object_get(on, "event"))
        return BAD("%s: give event or metric, not both", sub);
    if (metric) {
        static const char *const mkeys[] = {"url", "name", "labels", "op", "value", "for", NULL};
        char mctx[160];
        snprintf(mctx, sizeof mctx, "%s.metric", sub);
        char *op = NULL;
        if ((rc = only(metric, mkeys, mctx, err)) < 0 || (rc = str_field(metric, "url", 1, 2048, mctx, &r->metric_url, err)) < 0 ||
            (rc = str_field(metric, "name", 1, 200, mctx, &r->metric_name, err)) < 0 ||
            (rc = str_field(metric, "op", 1, 2, mctx, &op, err)) < 0)
            return rc;
        if (strncmp(r->metric_url, "http://", 7) != 0 && strncmp(r->metric_url, "https://", 8) != 0)
            return free(op), BAD("%s.url must start with http:// or https://", mctx);
        static const char *const ops[] = {">", ">=", "<", "<=", "==", "!=", NULL};
        size_t i = 0;
        while (ops[i] && strcmp(ops[i], op) != 0)
            i++;
        free(op);
        if (!ops[i])
            return BAD("%s.op must be one of > >= < <= == !=", mctx);
        snprintf(r->op, sizeof r->op, "%s", ops[i]);
        const json_t *v = json_object_get(metric, "value");
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            return BAD("%s.value must be a number", mctx);
        r->value = json_number_value(v);
        const json_t *labels = json_object_get(metric, "labels");
        if (labels) {
            const char *k;
            json_t *lv;
            if (!json_is_object(labels))
                return BAD("%s.labels must be an object of strings", mctx);
            json_object_foreach((json_t *)labels, k, lv)
                if (!json_is_string(lv))
                    return BAD("%s.labels.%s must be a string", mctx, k);
            r->metric_labels = json_incref((json_t *)labels);
        }
        r->for_ms = al_duration_ms(json_object_get(metric, "for"), &ok);
        if (!ok)
            return BAD("%s.for must be a duration such as \"1m\"", mctx);
        if (json_object_get(on, "where") || json_object_get(on, "when"))
            return BAD("%s.%s: only event conditions take it", sub, json_object_get(on, "where") ? "where" : "when");
        if ((rc = metric_url_check(r->metric_url, mctx, allow, err)) < 0)
            return rc;
    } else {
        if ((rc = event_pattern(on, sub, &r->event, err)) < 0 || (rc = where_field(on, sub, &r->where, err)) < 0 ||
            (rc = when_field(on, sub, r, err)) < 0)
            return rc;
    }
    if ((rc = str_field(o, "severity", 0, 16, ctx, &r->severity, err)) < 0)
        return rc;
    if (!r->severity && !(r->severity = strdup("warning")))
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    if (strcmp(r->severity, "info") != 0 && strcmp(r->severity, "warning") != 0 && strcmp(r->severity, "critical") != 0)
        return BAD("%s.severity must be info, warning or critical", ctx);
    r->cooldown_ms = al_duration_ms(json_object_get(o, "cooldown"), &ok);
    if (!ok)
        return BAD("%s.cooldown must be a duration such as \"30m\"", ctx);
    if ((rc = str_field(o, "dedupe", 0, 512, ctx, &r->dedupe, err)) < 0 ||
        (r->dedupe && (rc = template_field(r->dedupe, ctx, "dedupe", err)) < 0))
        return rc;
    const json_t *res = json_object_get(o, "resolve");
    if (res) {
        static const char *const rkeys[] = {"event", "where", "after", NULL};
        snprintf(sub, sizeof sub, "%s.resolve", ctx);
        if ((rc = only(res, rkeys, sub, err)) < 0)
            return rc;
        if (json_object_get(res, "event") && ((rc = event_pattern(res, sub, &r->resolve_event, err)) < 0 ||
                                              (rc = where_field(res, sub, &r->resolve_where, err)) < 0))
            return rc;
        r->resolve_after_ms = al_duration_ms(json_object_get(res, "after"), &ok);
        if (!ok)
            return BAD("%s.after must be a duration such as \"1h\"", sub);
        if (!r->resolve_event && !r->resolve_after_ms)
            return BAD("%s needs event or after", sub);
    }
    const json_t *acts = json_object_get(o, "actions");
    if (!acts)
        acts = json_array();
    else
        json_incref((json_t *)acts);
    if (!json_is_array(acts) || json_array_size(acts) > MAX_ACTIONS) {
        json_decref((json_t *)acts);
        return BAD("%s.actions must be an array of at most %d actions", ctx, MAX_ACTIONS);
    }
    r->actions = calloc(json_array_size(acts) + 1, sizeof *r->actions);
    if (!r->actions) {
        json_decref((json_t *)acts);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    size_t i;
    json_t *a;
    rc = 0;
    json_array_foreach(acts, i, a) {
        snprintf(sub, sizeof sub, "%s.actions[%zu]", ctx, i);
        r->nactions++;
        if ((rc = parse_action(a, sub, allow, &r->actions[i], err)) < 0)
            break;
    }
    json_decref((json_t *)acts);
    return rc;
}

int al_rules_parse(const json_t *doc, const al_allow *allow, al_rules **out, qn_err *err)
{
    const json_t *list = json_is_array(doc) ? doc : json_object_get(doc, "rules");
    if (json_is_object(doc) && json_object_size(doc) != 1)
        return BAD("the rules document is {\"rules\":[...]} with no other field");
    if (!json_is_array(list))
        return BAD("rules must be an array (or {\"rules\":[...]})");
    if (json_array_size(list) > MAX_RULES)
        return BAD("rules: at most %d rules", MAX_RULES);
    al_rules *rs = calloc(1, sizeof *rs);
    if (!rs || !(rs->rules = calloc(json_array_size(list) + 1, sizeof *rs->rules))) {
        free(rs);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    size_t i;
    json_t *o;
    json_array_foreach(list, i, o) {
        rs->n++;
        int rc = parse_rule(o, i, allow, &rs->rules[i], err);
        qn_err e;
        if (rc < 0 && rc != QN_RESOURCE_EXHAUSTED && rs->rules[i].name &&
            qn_name_check("rule", rs->rules[i].name, &e) == 0)
            qn_err_wrap(err, "rule %s", rs->rules[i].name);
        if (rc < 0) {
            al_rules_free(rs);
            return rc;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(rs->rules[j].name, rs->rules[i].name) == 0) {
                int rc2 = BAD("rules[%zu].name: %s is also the name of rules[%zu]", i, rs->rules[i].name, j);
                al_rules_free(rs);
                return rc2;
            }
    }
    /* a copy: al_rules_inherit may write the values in force into it */
    if (!(rs->doc = json_pack("{s:o}", "rules", json_deep_copy(list)))) {
        al_rules_free(rs);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    *out = rs;
    return 0;
}

static const al_rule *rule_named(const al_rules *rs, const char *name)
{
    for (size_t i = 0; rs && i < rs->n; i++)
        if (strcmp(rs->rules[i].name, name) == 0)
            return &rs->rules[i];
    return NULL;
}

/* 1 when shown (a redacted URL) is what old is shown as. */
static int shows_as(const char *old, const char *shown)
{
    char *r = old ? qn_url_redact(old) : NULL;
    int same = r && strcmp(r, shown) == 0;
    free(r);
    return same;
}

/* Replaces *field (and the doc's value at key of obj) with the value in force. */
static int take(char **field, json_t *obj, const char *key, const char *value, qn_err *err)
{
    char *v = strdup(value);
    if (!v || json_object_set_new(obj, key, json_string(value)) != 0) {
        free(v);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    free(*field);
    *field = v;
    return 0;
}

int al_rules_inherit(al_rules *rs, const al_rules *old, qn_err *err)
{
    json_t *list = json_object_get(rs->doc, "rules");
    int rc;
    for (size_t i = 0; i < rs->n; i++) {
        al_rule *r = &rs->rules[i];
        const al_rule *was = rule_named(old, r->name);
        json_t *rdoc = json_array_get(list, i);
        if (r->metric_url && strstr(r->metric_url, "***")) {
            if (!was || !shows_as(was->metric_url, r->metric_url))
                return BAD("rules[%zu].on.metric.url: a redacted URL (with ***) stands for the URL in force, and "
                           "rule %s has no metric URL shown so; give the whole URL", i, r->name);
            json_t *m = json_object_get(json_object_get(rdoc, "on"), "metric");
            if ((rc = take(&r->metric_url, m, "url", was->metric_url, err)) < 0)
                return rc;
        }
        json_t *adocs = json_object_get(rdoc, "actions");
        for (size_t j = 0; j < r->nactions; j++) {
            al_action *act = &r->actions[j];
            const al_action *wa = was && j < was->nactions && was->actions[j].type == ACT_WEBHOOK ? &was->actions[j] : NULL;
            json_t *adoc = json_array_get(adocs, j);
            if (act->type != ACT_WEBHOOK)
                continue;
            if (strstr(act->url, "***")) {
                if (!wa || !shows_as(wa->url, act->url))
                    return BAD("rules[%zu].actions[%zu].url: a redacted URL (with ***) stands for the URL in force, and "
                               "rule %s has no webhook shown so at actions[%zu]; give the whole URL", i, j, r->name, j);
                if ((rc = take(&act->url, adoc, "url", wa->url, err)) < 0)
                    return rc;
            }
            if (act->secret && strcmp(act->secret, AL_SECRET_SET) == 0) {
                if (!wa || !wa->secret || wa->secret_from_env)
                    return BAD("rules[%zu].actions[%zu].secret: \"" AL_SECRET_SET "\" stands for the secret in force, "
                               "and rule %s has no webhook with a secret at actions[%zu]; give the secret", i, j,
                               r->name, j);
                if ((rc = take(&act->secret, adoc, "secret", wa->secret, err)) < 0)
                    return rc;
            }
        }
    }
    return 0;
}

void al_redact_url(json_t *obj, const char *key)
{
    const char *v = json_string_value(json_object_get(obj, key));
    char *r = v ? qn_url_redact(v) : NULL;
    if (r)
        json_object_set_new(obj, key, json_string(r));
    free(r);
}

json_t *al_rules_public(const al_rules *rs)
{
    json_t *list = json_deep_copy(json_object_get(rs->doc, "rules"));
    size_t i, j;
    json_t *rule, *act;
    json_array_foreach(list, i, rule) {
        al_redact_url(json_object_get(json_object_get(rule, "on"), "metric"), "url");
        json_array_foreach(json_object_get(rule, "actions"), j, act) {
            al_redact_url(act, "url");
            if (json_object_get(act, "secret"))
                json_object_set_new(act, "secret", json_string(AL_SECRET_SET));
        }
    }
    return list;
}
