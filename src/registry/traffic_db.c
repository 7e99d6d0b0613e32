/*
 * traffic_db.c - a model's traffic policy, checked and stored (see
 * traffic_db.h).
 *
 * One row per model in table traffic (model_id, policy as canonical JSON,
 * updated_at), deleted with its model. Setting or clearing a policy appends
 * quern.traffic.changed to the outbox in the same transaction, as an alias
 * move appends quern.model.promoted, so serve replicas hear of every change
 * that committed and of none that did not.
 */
#include "registry/traffic_db.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/validate.h"
#include "registry/db.h"

static int bad(qn_err *err, const char *field, const char *msg)
{
    return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: %s", field, msg);
}

/* A route's or the shadow's alias: a valid alias name, not "latest". */
static int check_alias(const json_t *o, const char *field, const char **alias, qn_err *err)
{
    int rc;
    char f[64];
    snprintf(f, sizeof f, "%s.alias", field);
    const json_t *a = json_object_get(o, "alias");
    if (!a)
        return bad(err, f, "is required (the alias to send traffic to, e.g. \"production\")");
    if (!json_is_string(a))
        return bad(err, f, "must be a string");
    *alias = json_string_value(a);
    if ((rc = qn_name_check("alias", *alias, err)) < 0) {
        qn_err_wrap(err, "%s", f);
        return rc;
    }
    if (strcmp(*alias, "latest") == 0)
        return bad(err, f, "\"latest\" is not an alias; name one the model has (e.g. \"candidate\")");
    return 0;
}

static int parse_routes(const json_t *routes, json_t *out, qn_err *err)
{
    static const char *const allowed[] = {"alias", "weight", NULL};
    if (!routes)
        return bad(err, "routes", "is required: [{\"alias\":\"production\",\"weight\":100}, ...]");
    if (!json_is_array(routes))
        return bad(err, "routes", "must be an array of {\"alias\", \"weight\"}");
    size_t n = json_array_size(routes);
    if (n == 0 || n > REG_TRAFFIC_MAX_ROUTES)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "routes: %zu routes; give 1 to %d", n,
                          REG_TRAFFIC_MAX_ROUTES);
    json_int_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *r = json_array_get(routes, i);
        char field[48];
        const char *alias;
        int rc;
        snprintf(field, sizeof field, "routes[%zu]", i);
        if (!json_is_object(r))
            return bad(err, field, "must be an object {\"alias\", \"weight\"}");
        if ((rc = qn_json_only(r, allowed, err)) < 0) {
            qn_err_wrap(err, "%s", field);
            return rc;
        }
        if ((rc = check_alias(r, field, &alias, err)) < 0)
            return rc;
        const json_t *w = json_object_get(r, "weight");
        if (!w || !json_is_integer(w) || json_integer_value(w) < 0 || json_integer_value(w) > 100)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s.weight: must be an integer from 0 to 100", field);
        for (size_t j = 0; j < i; j++)
            if (strcmp(alias, json_string_value(json_object_get(json_array_get(out, j), "alias"))) == 0)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "%s.alias: \"%s\" is routed twice (routes[%zu])",
                                  field, alias, j);
        sum += json_integer_value(w);
        json_array_append_new(out, json_pack("{s:s, s:I}", "alias", alias, "weight", json_integer_value(w)));
    }
    if (sum != 100)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "routes: the weights sum to %lld; they must sum to 100",
                          (long long)sum);
    return 0;
}

static int parse_shadow(const json_t *sh, json_t **out, qn_err *err)
{
    static const char *const allowed[] = {"alias", "fraction", NULL};
    const char *alias;
    int rc;
    *out = json_null();
    if (!sh || json_is_null(sh))
        return 0;
    if (!json_is_object(sh))
        return bad(err, "shadow", "must be null or {\"alias\", \"fraction\"}");
    if ((rc = qn_json_only(sh, allowed, err)) < 0) {
        qn_err_wrap(err, "shadow");
        return rc;
    }
    if ((rc = check_alias(sh, "shadow", &alias, err)) < 0)
        return rc;
    const json_t *f = json_object_get(sh, "fraction");
    double x = json_is_number(f) ? json_number_value(f) : NAN;
    if (!f)
        return bad(err, "shadow.fraction", "is required: the share of requests also sent to the shadow, 0 to 1");
    if (!(x >= 0 && x <= 1))
        return bad(err, "shadow.fraction", "must be a number from 0 to 1");
    *out = json_pack("{s:s, s:f}", "alias", alias, "fraction", x);
    return 0;
}

static int parse_sticky(const json_t *st, json_t **out, qn_err *err)
{
    *out = json_null();
    if (!st || json_is_null(st))
        return 0;
    const char *s = json_string_value(st);
    if (!s)
        return bad(err, "sticky", "must be null, \"user\" or \"header:<Name>\"");
    if (strcmp(s, "user") == 0) {
        *out = json_string(s);
        return 0;
    }
    if (strncmp(s, "header:", 7) != 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "sticky: \"%.64s\" is not null, \"user\" or \"header:<Name>\"", s);
    const char *h = s + 7;
    size_t n = strlen(h);
    if (n == 0 || n > REG_TRAFFIC_MAX_HEADER)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "sticky: the header name must be 1 to %d characters",
                          REG_TRAFFIC_MAX_HEADER);
    for (size_t i = 0; i < n; i++)
        if (!((h[i] >= 'a' && h[i] <= 'z') || (h[i] >= 'A' && h[i] <= 'Z') || (h[i] >= '0' && h[i] <= '9') ||
              h[i] == '-' || h[i] == '_'))
            return bad(err, "sticky", "a header name holds only letters, digits, '-' and '_'");
    *out = json_string(s);
    return 0;
}

/* A number field of o within [lo, hi], or def when absent. */
static int num_field(const json_t *o, const char *field, const char *key, double lo, double hi, double def,
                     double *x, qn_err *err)
{
    const json_t *v = json_object_get(o, key);
    *x = def;
    if (!v || json_is_null(v))
        return 0;
    *x = json_is_number(v) ? json_number_value(v) : NAN;
    if (!(*x >= lo && *x <= hi))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s.%s: must be a number from %g to %g", field, key, lo, hi);
    return 0;
}

/* The promotion policy (the monitor's promote.c follows it):
 * {"challenger","metric","min_labelled","margin","promote","rollback"}. */
static int parse_auto(const json_t *a, json_t **out, qn_err *err)
{
    static const char *const allowed[] = {"challenger", "metric", "min_labelled", "margin", "promote", "rollback",
                                          NULL};
    static const char *const rb_allowed[] = {"error_rate", "latency_p50_ratio", "latency_p95_ratio",
                                             "latency_margin_ms", "quality_margin", NULL};
    static const char *const metrics[] = {"rmse", "mae", "r2", "accuracy", "roc_auc", "log_loss", "brier", NULL};
    const char *alias;
    int rc;
    *out = json_null();
    if (!a || json_is_null(a))
        return 0;
    if (!json_is_object(a))
        return bad(err, "auto", "must be null or {\"challenger\", \"metric\", \"min_labelled\", ...}");
    if ((rc = qn_json_only(a, allowed, err)) < 0) {
        qn_err_wrap(err, "auto");
        return rc;
    }
    json_t *ch = json_object_get(a, "challenger");
    json_t *tmp = ch ? json_pack("{s:O}", "alias", ch) : json_object();
    rc = check_alias(tmp, "auto", &alias, err);
    if (rc < 0) {
        json_decref(tmp);
        if (!ch)
            return bad(err, "auto.challenger", "is required (the alias that may take production, e.g. \"candidate\")");
        qn_err_set(err, QN_INVALID_ARGUMENT, "auto.challenger: must be an alias name other than \"latest\"");
        return err->code;
    }
    if (strcmp(alias, "production") == 0) {
        json_decref(tmp);
        return bad(err, "auto.challenger", "is the champion's alias; name the challenger (e.g. \"candidate\")");
    }
    const json_t *mv = json_object_get(a, "metric");
    const char *metric = json_string_value(mv);
    int known = 0;
    for (int i = 0; metric && metrics[i]; i++)
        known |= strcmp(metric, metrics[i]) == 0;
    if (!known) {
        json_decref(tmp);
        return bad(err, "auto.metric",
                   "is required: one of \"rmse\", \"mae\", \"r2\" (regressors), \"accuracy\", \"roc_auc\", "
                   "\"log_loss\", \"brier\" (classifiers)");
    }
    const json_t *ml = json_object_get(a, "min_labelled");
    json_int_t min_lab = 500;
    if (ml && !json_is_null(ml)) {
        if (!json_is_integer(ml) || json_integer_value(ml) < 1 || json_integer_value(ml) > 10000000) {
            json_decref(tmp);
            return bad(err, "auto.min_labelled", "must be an integer from 1 to 10000000");
        }
        min_lab = json_integer_value(ml);
    }
    double margin, er, lat, lat95, latm, qm;
    const json_t *pr = json_object_get(a, "promote");
    if (pr && !json_is_boolean(pr)) {
        json_decref(tmp);
        return bad(err, "auto.promote", "must be true or false");
    }
    const json_t *rb = json_object_get(a, "rollback");
    json_t *rbo = json_null();
    if ((rc = num_field(a, "auto", "margin", 0, 1e9, 0, &margin, err)) < 0)
        goto fail;
    if (rb && !json_is_null(rb)) {
        if (!json_is_object(rb)) {
            rc = bad(err, "auto.rollback",
                     "must be null or {\"error_rate\", \"latency_p50_ratio\", \"latency_p95_ratio\", "
                     "\"latency_margin_ms\", \"quality_margin\"}");
            goto fail;
        }
        if ((rc = qn_json_only(rb, rb_allowed, err)) < 0) {
            qn_err_wrap(err, "auto.rollback");
            goto fail;
        }
        if ((rc = num_field(rb, "auto.rollback", "error_rate", 0, 1, -1, &er, err)) < 0 ||
            (rc = num_field(rb, "auto.rollback", "latency_p50_ratio", 1, 1000, -1, &lat, err)) < 0 ||
            (rc = num_field(rb, "auto.rollback", "latency_p95_ratio", 1, 1000, -1, &lat95, err)) < 0 ||
            (rc = num_field(rb, "auto.rollback", "latency_margin_ms", 0, 3600000, -1, &latm, err)) < 0 ||
            (rc = num_field(rb, "auto.rollback", "quality_margin", 0, 1e9, -1, &qm, err)) < 0)
            goto fail;
        rbo = json_object();
        if (er >= 0)
            json_object_set_new(rbo, "error_rate", json_real(er));
        if (lat >= 0)
            json_object_set_new(rbo, "latency_p50_ratio", json_real(lat));
        if (lat95 >= 0)
            json_object_set_new(rbo, "latency_p95_ratio", json_real(lat95));
        if (latm >= 0)
            json_object_set_new(rbo, "latency_margin_ms", json_real(latm));
        if (qm >= 0)
            json_object_set_new(rbo, "quality_margin", json_real(qm));
    }
    *out = json_pack("{s:s, s:s, s:I, s:f, s:b, s:o}", "challenger", alias, "metric", metric, "min_labelled",
                     min_lab, "margin", margin, "promote", pr ? json_is_true(pr) : 1, "rollback", rbo);
    json_decref(tmp);
    return *out ? 0 : qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
fail:
    json_decref(tmp);
    return rc;
}

int reg_traffic_parse(const json_t *body, json_t **policy, qn_err *err)
{
    static const char *const allowed[] = {"routes", "shadow", "sticky", "auto", NULL};
    json_t *routes = json_array(), *shadow = NULL, *sticky = NULL, *autop = NULL;
    int rc;
    *policy = NULL;
    if (!routes)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    if ((rc = qn_json_only(body, allowed, err)) < 0 ||
        (rc = parse_routes(json_object_get(body, "routes"), routes, err)) < 0 ||
        (rc = parse_shadow(json_object_get(body, "shadow"), &shadow, err)) < 0 ||
        (rc = parse_sticky(json_object_get(body, "sticky"), &sticky, err)) < 0 ||
        (rc = parse_auto(json_object_get(body, "auto"), &autop, err)) < 0) {
        json_decref(routes);
        json_decref(shadow);
        json_decref(sticky);
        return rc;
    }
    *policy = json_pack("{s:o, s:o, s:o}", "routes", routes, "shadow", shadow, "sticky", sticky);
    if (*policy && json_is_object(autop))
        json_object_set_new(*policy, "auto", autop);
    else
        json_decref(autop);
    return *policy ? 0 : qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
}

/* ---- storage ------------------------------------------------------------------ */

static int step_all(qn_stmt *st, qn_err *err)
{
    int rc;
    while ((rc = qn_step(st, err)) == 1)
        ;
    return rc;
}

/* 1 when model id has alias, 0 when not. */
static int has_alias(qn_conn *c, int64_t id, const char *alias, qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "SELECT 1 FROM aliases WHERE model_id = ? AND alias = ?", err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, id);
    qn_bind_text(st, 2, alias, -1);
    int rc = qn_step(st, err);
    if (rc == 1 && step_all(st, err) < 0)
        return err->code;
    return rc;
}

static int check_exists(qn_conn *c, const char *name, int64_t id, const char *field, const char *alias,
                        qn_err *err)
{
    int rc = has_alias(c, id, alias, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "%s: model \"%s\" has no alias \"%s\"; set it first (PUT /v1/models/%s/aliases/%s)",
                          field, name, alias, name, alias);
    return 0;
}

static json_t *answer(const char *name, const json_t *policy, int64_t updated)
{
    json_t *out = json_deep_copy(policy);
    if (!out)
        return NULL;
    json_object_set_new(out, "model", json_string(name));
    json_object_set_new(out, "default", json_boolean(updated == 0));
    json_object_set_new(out, "updated_at", updated ? qn_json_time(updated) : json_null());
    return out;
}

int reg_db_traffic_set(qn_conn *c, const char *name, const json_t *policy, const char *traceparent, json_t **out,
                       qn_err *err)
{
    int64_t id;
    int rc;
    char *text = NULL;
    *out = NULL;
    if ((rc = reg_db_id(c, &reg_db_models, name, &id, err)) < 0)
        return rc;
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(policy, "routes"), i, r) {
        char field[48];
        snprintf(field, sizeof field, "routes[%zu].alias", i);
        if ((rc = check_exists(c, name, id, field, json_string_value(json_object_get(r, "alias")), err)) < 0)
            return rc;
    }
    const json_t *sh = json_object_get(policy, "shadow");
    if (json_is_object(sh) &&
        (rc = check_exists(c, name, id, "shadow.alias", json_string_value(json_object_get(sh, "alias")), err)) < 0)
        return rc;
    const json_t *au = json_object_get(policy, "auto");
    if (json_is_object(au) &&
        (rc = check_exists(c, name, id, "auto.challenger", json_string_value(json_object_get(au, "challenger")),
                           err)) < 0)
        return rc;
    if (!(text = qn_json_canonical(policy)))
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    int64_t now = qn_now_ms();
    qn_stmt *st = qn_prepare(c,
                             "INSERT INTO traffic (model_id, policy, updated_at) VALUES (?, ?, ?) "
                             "ON CONFLICT (model_id) DO UPDATE SET policy = excluded.policy, "
                             "updated_at = excluded.updated_at",
                             err);
    if (!st) {
        rc = err->code;
        goto out;
    }
    qn_bind_int64(st, 1, id);
    qn_bind_text(st, 2, text, -1);
    qn_bind_int64(st, 3, now);
    if ((rc = step_all(st, err)) < 0)
        goto out;
    json_t *data = json_deep_copy(policy);
    if (!data) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    json_object_set_new(data, "model", json_string(name));
    json_object_set_new(data, "default", json_false());
    if ((rc = reg_event_append(c, "quern.traffic.changed", data, traceparent, err)) < 0)
        goto out;
    if (!(*out = answer(name, policy, now)))
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
out:
    free(text);
    return rc;
}

int reg_db_traffic_get(qn_conn *c, const char *name, json_t **out, qn_err *err)
{
    int64_t id;
    int rc;
    *out = NULL;
    if ((rc = reg_db_id(c, &reg_db_models, name, &id, err)) < 0)
        return rc;
    qn_stmt *st = qn_prepare(c, "SELECT policy, updated_at FROM traffic WHERE model_id = ?", err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, id);
    if ((rc = qn_step(st, err)) < 0)
        return rc;
    json_t *policy;
    int64_t updated = 0;
    if (rc == 1) {
        policy = qn_json_from_text(qn_col_text(st, 0));
        updated = qn_col_int64(st, 1);
        if (step_all(st, err) < 0) {
            json_decref(policy);
            return err->code;
        }
        if (!json_is_object(policy)) {
            json_decref(policy);
            return qn_err_set(err, QN_INTERNAL, "the stored traffic policy of model \"%s\" is not JSON", name);
        }
    } else {
        policy = json_pack("{s:[{s:s, s:i}], s:n, s:n}", "routes", "alias", "production", "weight", 100, "shadow",
                           "sticky");
    }
    *out = policy ? answer(name, policy, updated) : NULL;
    json_decref(policy);
    return *out ? 0 : qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
}

int reg_db_traffic_delete(qn_conn *c, const char *name, const char *traceparent, int *removed, qn_err *err)
{
    int64_t id;
    int rc;
    *removed = 0;
    if ((rc = reg_db_id(c, &reg_db_models, name, &id, err)) < 0)
        return rc;
    qn_stmt *st = qn_prepare(c, "DELETE FROM traffic WHERE model_id = ?", err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, id);
    if ((rc = step_all(st, err)) < 0)
        return rc;
    if (qn_changes(c) == 0)
        return 0;
    *removed = 1;
    return reg_event_append(c, "quern.traffic.changed",
                            json_pack("{s:s, s:[{s:s, s:i}], s:n, s:n, s:b}", "model", name, "routes", "alias",
                                      "production", "weight", 100, "shadow", "sticky", "default", 1),
                            traceparent, err);
}
