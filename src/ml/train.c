/*
 * train.c - one training run: spec -> split -> transforms -> model ->
 * evaluation -> reference profile -> bundle (train.h), and the evaluation of
 * any loaded model on a holdout, shared by the run itself so that a champion
 * and a challenger are measured by the same code on the same rows.
 */
#include "ml/train.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/digest.h"
#include "ml/als.h"
#include "ml/clean.h"
#include "ml/eval.h"
#include "ml/linear.h"
#include "ml/profile.h"
#include "ml/schema.h"
#include "ml/transform.h"
#include "ml/xgb.h"

static int oom(qn_err *err)
{
    return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
}

/* XGBoost's rounds when the spec names none (its own default is 10). */
#define XGB_NUM_ROUND 100
#define XGB_NUM_ROUND_TEXT "100"

int qml_train_kind_known(const char *kind)
{
    static const char *const kinds[] = {"als", "logistic", "linear", "xgboost"};
    for (size_t i = 0; kind && i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(kinds[i], kind) == 0)
            return 1;
    return 0;
}

long qml_train_iterations(const char *kind, const json_t *params)
{
    if (!kind)
        return 0;
    if (strcmp(kind, "als") == 0) {
        const json_t *it = json_object_get(params, "iterations");
        if (json_is_integer(it))
            return (long)json_integer_value(it);
        qml_als_params p;
        qml_als_params_init(&p);
        return p.iterations;
    }
    if (strcmp(kind, "xgboost") == 0) {
        const json_t *n = json_object_get(params, "num_round");
        return json_is_integer(n) ? (long)json_integer_value(n) : XGB_NUM_ROUND;
    }
    return 0;
}

/* ---- the spec ------------------------------------------------------------------ */

typedef enum ptype { P_INT, P_NUM, P_BOOL, P_STR } ptype;

typedef struct param_def {
    const char *kind, *key;
    ptype type;
    double lo, hi;
} param_def;

/* Each kind's parameters with their bounds: the one place they are checked. */
static const param_def param_defs[] = {
    {"als", "factors", P_INT, 1, 1024},
    {"als", "regularization", P_NUM, 0, 1e6},
    {"als", "alpha", P_NUM, 0, 1e6},
    {"als", "iterations", P_INT, 0, 1000},
    {"als", "cg_steps", P_INT, 1, 100},
    {"als", "threads", P_INT, 1, 64},
    {"als", "seed", P_INT, 0, 9007199254740992.0},
    {"xgboost", "num_round", P_INT, 1, 100000},
    {"xgboost", "max_depth", P_INT, 0, 64},
    {"xgboost", "eta", P_NUM, 1e-9, 1},
    {"xgboost", "subsample", P_NUM, 1e-9, 1},
    {"xgboost", "colsample_bytree", P_NUM, 1e-9, 1},
    {"xgboost", "min_child_weight", P_NUM, 0, 1e9},
    {"xgboost", "gamma", P_NUM, 0, 1e9},
    {"xgboost", "lambda", P_NUM, 0, 1e9},
    {"xgboost", "alpha", P_NUM, 0, 1e9},
    {"xgboost", "max_bin", P_INT, 2, 65536},
    {"xgboost", "seed", P_INT, 0, 2147483647},
    {"xgboost", "nthread", P_INT, 0, 256},
    {"xgboost", "tree_method", P_STR, 0, 0},
    {"xgboost", "objective", P_STR, 0, 0},
    {"logistic", "C", P_NUM, 1e-12, 1e12},
    {"logistic", "eps", P_NUM, 1e-12, 1},
    {"linear", "lambda", P_NUM, 0, 1e12},
    {"linear", "fit_intercept", P_BOOL, 0, 0},
};

static const char *const xgb_objectives[] = {"binary:logistic", "multi:softprob",
                                             "reg:squarederror", "reg:logistic", "count:poisson"};
static const char *const tree_methods[] = {"hist", "approx", "exact", "auto"};

static int one_of(const char *s, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(s, list[i]))
            return 1;
    return 0;
}

static int check_params(const char *kind, const json_t *params, qn_err *err)
{
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)params, key, v) {
        const param_def *d = NULL;
        for (size_t i = 0; i < sizeof param_defs / sizeof *param_defs; i++)
            if (!strcmp(param_defs[i].kind, kind) && !strcmp(param_defs[i].key, key))
                d = &param_defs[i];
        if (!d)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "params.%s: unknown parameter for %s",
                              key, kind);
        switch (d->type) {
        case P_INT:
            if (!json_is_integer(v) || json_integer_value(v) < d->lo ||
                json_integer_value(v) > d->hi)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "params.%s must be an integer in "
                                  "[%.0f, %.0f]", key, d->lo, d->hi);
            break;
        case P_NUM:
            if (!json_is_number(v) || !(json_number_value(v) >= d->lo) ||
                !(json_number_value(v) <= d->hi))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "params.%s must be a number in "
                                  "[%g, %g]", key, d->lo, d->hi);
            break;
        case P_BOOL:
            if (!json_is_boolean(v))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "params.%s must be true or false", key);
            break;
        case P_STR:
            if (!json_is_string(v))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "params.%s must be a string", key);
            if (!strcmp(key, "objective") && !one_of(json_string_value(v), xgb_objectives, 5))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "params.objective must be one of "
                                  "binary:logistic, multi:softprob, reg:squarederror, "
                                  "reg:logistic, count:poisson");
            if (!strcmp(key, "tree_method") && !one_of(json_string_value(v), tree_methods, 4))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "params.tree_method must be one of "
                                  "hist, approx, exact, auto");
            break;
        }
    }
    return 0;
}

static double pnum(const qml_train_spec *s, const char *key, double dflt)
{
    const json_t *v = json_object_get(s->params, key);
    return v ? json_number_value(v) : dflt;
}

static int dup_str(const json_t *v, const char *field, char **out, qn_err *err)
{
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 4096)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "field \"%s\" must be a non-empty string",
                          field);
    if (!(*out = strdup(json_string_value(v))))
        return oom(err);
    return 0;
}

static const char *const impute_names[] = {"mean", "median", "most_frequent", "constant"};
static const char *const encode_names[] = {"standardize", "minmax", "onehot", "hash"};

static int parse_feature(const json_t *f, size_t i, qml_train_feature *out, qn_err *err)
{
    char field[64];
    out->impute = out->encode = -1;
    out->buckets = 32;
    if (!json_is_object(f))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "features[%zu] must be an object", i);
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)f, key, v) {
        snprintf(field, sizeof field, "features[%zu].%s", i, key);
        int rc = 0;
        if (!strcmp(key, "column")) {
            rc = dup_str(v, field, &out->column, err);
        } else if (!strcmp(key, "impute") || !strcmp(key, "encode")) {
            int imp = !strcmp(key, "impute");
            const char *const *names = imp ? impute_names : encode_names;
            const char *s = json_string_value(v);
            int val = -3;
            if (s && !strcmp(s, "none"))
                val = -2;
            for (int k = 0; s && k < 4; k++)
                if (!strcmp(s, names[k]))
                    val = imp ? k : k + QML_TF_STANDARDIZE;
            if (val == -3)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "%s must be one of %s, none", field,
                                  imp ? "mean, median, most_frequent, constant"
                                      : "standardize, minmax, onehot, hash");
            *(imp ? &out->impute : &out->encode) = val;
        } else if (!strcmp(key, "fill")) {
            out->has_fill = 1;
            if (json_is_number(v))
                out->fill_num = json_number_value(v);
            else if (json_is_string(v))
                rc = dup_str(v, field, &out->fill_str, err);
            else
                return qn_err_set(err, QN_INVALID_ARGUMENT, "%s must be a number or a string",
                                  field);
        } else if (!strcmp(key, "buckets") || !strcmp(key, "max_categories") ||
                   !strcmp(key, "min_frequency")) {
            json_int_t hi = !strcmp(key, "buckets") ? QML_TF_MAX_BUCKETS : 1 << 30;
            json_int_t lo = !strcmp(key, "buckets") ? 1 : 0;
            if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "%s must be an integer in [%lld, "
                                  "%lld]", field, (long long)lo, (long long)hi);
            int n = (int)json_integer_value(v);
            *(!strcmp(key, "buckets") ? &out->buckets
              : !strcmp(key, "max_categories") ? &out->max_categories : &out->min_frequency) = n;
        } else if (!strcmp(key, "signed")) {
            if (!json_is_boolean(v))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "%s must be true or false", field);
            out->hash_signed = json_is_true(v);
        } else {
            return qn_err_set(err, QN_INVALID_ARGUMENT, "features[%zu]: unknown field \"%s\"", i,
                              key);
        }
        if (rc < 0)
            return rc;
    }
    if (!out->column)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "features[%zu]: field \"column\" is required",
                          i);
    if (out->impute == QML_IMPUTE_CONSTANT && !out->has_fill)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "features[%zu]: impute constant needs "
                          "\"fill\"", i);
    return 0;
}

static int parse_split(const json_t *sp, qml_train_spec *s, qn_err *err)
{
    if (!json_is_object(sp))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "field \"split\" must be an object");
    const char *key;
    const json_t *v;
    int has_cutoff = 0;
    json_object_foreach((json_t *)sp, key, v) {
        int rc = 0;
        if (!strcmp(key, "kind")) {
            const char *k = json_string_value(v);
            if (k && !strcmp(k, "random"))
                s->split.kind = QML_SPLIT_RANDOM;
            else if (k && !strcmp(k, "time"))
                s->split.kind = QML_SPLIT_TIME;
            else if (k && !strcmp(k, "leave_k_out"))
                s->split.kind = QML_SPLIT_LEAVE_K_OUT;
            else
                return qn_err_set(err, QN_INVALID_ARGUMENT, "split.kind must be one of random, "
                                  "time, leave_k_out");
        } else if (!strcmp(key, "ratio")) {
            if (!json_is_number(v) || !(json_number_value(v) > 0 && json_number_value(v) < 1))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "split.ratio must be a number in "
                                  "(0, 1)");
            s->split.ratio = json_number_value(v);
        } else if (!strcmp(key, "seed")) {
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "split.seed must be an integer >= 0");
            s->split.seed = (uint64_t)json_integer_value(v);
        } else if (!strcmp(key, "column")) {
            rc = dup_str(v, "split.column", &s->split.column, err);
        } else if (!strcmp(key, "cutoff")) {
            has_cutoff = 1;
            if (json_is_number(v))
                s->split.cutoff = json_number_value(v);
            else if (!json_is_string(v) ||
                     qml_parse_timestamp(json_string_value(v), json_string_length(v),
                                         &s->split.cutoff) < 0)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "split.cutoff must be a timestamp "
                                  "(\"2011-11-01\") or seconds since the epoch");
        } else if (!strcmp(key, "k")) {
            if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1000)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "split.k must be an integer in "
                                  "[1, 1000]");
            s->split.k = (int)json_integer_value(v);
        } else {
            return qn_err_set(err, QN_INVALID_ARGUMENT, "split: unknown field \"%s\"", key);
        }
        if (rc < 0)
            return rc;
    }
    if (s->split.kind == QML_SPLIT_TIME && !has_cutoff)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "split.cutoff is required for a time split");
    return 0;
}

static int parse_str_array(const json_t *a, const char *field, char ***out, size_t *n,
                           qn_err *err)
{
    if (!json_is_array(a) || json_array_size(a) > 4096)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "field \"%s\" must be an array of at most "
                          "4096 strings", field);
    *n = json_array_size(a);
    if (!(*out = calloc(*n ? *n : 1, sizeof **out)))
        return oom(err);
    for (size_t i = 0; i < *n; i++) {
        char f[64];
        snprintf(f, sizeof f, "%s[%zu]", field, i);
        int rc = dup_str(json_array_get(a, i), f, &(*out)[i], err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void qml_train_spec_free(qml_train_spec *s)
{
    if (!s)
        return;
    json_decref(s->params);
    json_decref(s->source);
    free(s->label);
    for (size_t i = 0; s->features && i < s->n_features; i++) {
        free(s->features[i].column);
        free(s->features[i].fill_str);
    }
    free(s->features);
    for (size_t i = 0; s->exclude && i < s->n_exclude; i++)
        free(s->exclude[i]);
    free(s->exclude);
    free(s->user);
    free(s->item);
    free(s->weight);
    free(s->time);
    free(s->split.column);
    free(s->metric);
    free(s);
}

static int parse_spec(const json_t *root, qml_train_spec *s, qn_err *err)
{
    if (!json_is_object(root))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "the spec must be a JSON object");
    const json_t *kind = json_object_get(root, "kind");
    const char *ks = json_string_value(kind);
    if (!qml_train_kind_known(ks))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "field \"kind\" must be one of als, "
                          "logistic, linear, xgboost");
    snprintf(s->kind, sizeof s->kind, "%s", ks);
    int als = !strcmp(ks, "als");
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)root, key, v) {
        int rc = 0;
        if (!strcmp(key, "kind")) {
            continue;
        } else if (!strcmp(key, "params")) {
            if (!json_is_object(v))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "field \"params\" must be an object");
            if ((rc = check_params(ks, v, err)) < 0)
                return rc;
            json_decref(s->params);
            s->params = json_deep_copy(v);
            if (!s->params)
                return oom(err);
        } else if (!strcmp(key, "label")) {
            rc = dup_str(v, key, &s->label, err);
        } else if (!strcmp(key, "user")) {
            rc = dup_str(v, key, &s->user, err);
        } else if (!strcmp(key, "item")) {
            rc = dup_str(v, key, &s->item, err);
        } else if (!strcmp(key, "weight")) {
            rc = dup_str(v, key, &s->weight, err);
        } else if (!strcmp(key, "time")) {
            rc = dup_str(v, key, &s->time, err);
        } else if (!strcmp(key, "metric")) {
            rc = dup_str(v, key, &s->metric, err);
        } else if (!strcmp(key, "exclude")) {
            rc = parse_str_array(v, key, &s->exclude, &s->n_exclude, err);
        } else if (!strcmp(key, "features")) {
            if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 4096)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "field \"features\" must be an array "
                                  "of 1 to 4096 objects");
            s->n_features = json_array_size(v);
            if (!(s->features = calloc(s->n_features, sizeof *s->features)))
                return oom(err);
            for (size_t i = 0; i < s->n_features && rc == 0; i++)
                rc = parse_feature(json_array_get(v, i), i, &s->features[i], err);
            for (size_t i = 0; i < s->n_features && rc == 0; i++)
                for (size_t j = 0; j < i; j++)
                    if (!strcmp(s->features[i].column, s->features[j].column))
                        return qn_err_set(err, QN_INVALID_ARGUMENT, "features[%zu]: column "
                                          "\"%s\" is listed twice", i, s->features[i].column);
        } else if (!strcmp(key, "split")) {
            rc = parse_split(v, s, err);
        } else if (!strcmp(key, "k")) {
            if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1000)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "field \"k\" must be an integer in "
                                  "[1, 1000]");
            s->k = (int)json_integer_value(v);
        } else {
            return qn_err_set(err, QN_INVALID_ARGUMENT, "unknown field \"%s\"", key);
        }
        if (rc < 0)
            return rc;
    }
    if (als) {
        if (!s->user || !s->item)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "kind als needs the fields \"user\" and "
                              "\"item\"");
        if (s->label || s->features || s->exclude)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "kind als takes no \"label\", "
                              "\"features\" or \"exclude\"");
    } else {
        if (!s->label)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "kind %s needs the field \"label\"", ks);
        if (s->user || s->item || s->weight)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "kind %s takes no \"user\", \"item\" or "
                              "\"weight\"", ks);
        if (s->split.kind == QML_SPLIT_LEAVE_K_OUT)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "split.kind leave_k_out is for als only");
        for (size_t i = 0; i < s->n_features; i++)
            if (!strcmp(s->features[i].column, s->label))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "features[%zu]: the label \"%s\" "
                                  "cannot be a feature", i, s->label);
    }
    if (s->split.kind == QML_SPLIT_TIME && !s->split.column && !s->time)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "split.column (or \"time\") is required for "
                          "a time split");
    if (s->metric) {
        /* Every task's names; the task itself is known only with the data. */
        static const char *const known[] = {"accuracy", "log_loss", "roc_auc", "rmse", "mae",
                                            "r2", "auc", "coverage"};
        int ok = one_of(s->metric, known, sizeof known / sizeof *known);
        static const char *const at_k[] = {"precision@", "recall@", "map@", "ndcg@"};
        for (size_t i = 0; i < 4 && !ok; i++) {
            size_t l = strlen(at_k[i]);
            char want[32];
            snprintf(want, sizeof want, "%s%d", at_k[i], s->k);
            ok = !strncmp(s->metric, at_k[i], l) && !strcmp(s->metric, want);
        }
        if (!ok)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "field \"metric\": \"%s\" is not a "
                              "metric this run computes", s->metric);
    }
    return 0;
}

int qml_train_spec_from_json(const char *json, size_t len, qml_train_spec **out, qn_err *err)
{
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "the spec is not JSON: %s (line %d)", je.text,
                          je.line);
    qml_train_spec *s = calloc(1, sizeof *s);
    int rc;
    if (!s || !(s->params = json_object())) {
        rc = oom(err);
        goto out;
    }
    s->split.kind = QML_SPLIT_RANDOM;
    s->split.ratio = 0.2;
    s->split.seed = 42;
    s->split.k = 1;
    s->k = 10;
    /* k must be known before the metric is checked. */
    const json_t *k = json_object_get(root, "k");
    if (json_is_integer(k) && json_integer_value(k) >= 1 && json_integer_value(k) <= 1000)
        s->k = (int)json_integer_value(k);
    if ((rc = parse_spec(root, s, err)) < 0)
        goto out;
    s->source = json_incref(root);
out:
    json_decref(root);
    if (rc < 0)
        qml_train_spec_free(s);
    else
        *out = s;
    return rc;
}

/* ---- metrics ------------------------------------------------------------------- */

static int lower_is_better(const char *name)
{
    return !strcmp(name, "log_loss") || !strcmp(name, "rmse") || !strcmp(name, "mae");
}

int qml_train_primary_metric(const qml_train_spec *spec, qml_task task, char *name, size_t cap,
                             int *higher_is_better, qn_err *err)
{
    static const char *const cls[] = {"accuracy", "log_loss", "roc_auc"};
    static const char *const reg[] = {"rmse", "mae", "r2"};
    const char *m = spec->metric;
    char buf[32];
    switch (task) {
    case QML_TASK_BINARY:
        if (!m)
            m = "roc_auc";
        if (!one_of(m, cls, 3))
            goto bad;
        break;
    case QML_TASK_MULTICLASS:
        if (!m)
            m = "accuracy";
        if (!one_of(m, cls, 2))
            goto bad;
        break;
    case QML_TASK_REGRESSION:
        if (!m)
            m = "rmse";
        if (!one_of(m, reg, 3))
            goto bad;
        break;
    case QML_TASK_RANKING:
        snprintf(buf, sizeof buf, "map@%d", spec->k);
        if (!m)
            m = buf;
        if (one_of(m, cls, 3) || one_of(m, reg, 3))
            goto bad;
        break;
    }
    snprintf(name, cap, "%s", m);
    *higher_is_better = !lower_is_better(m);
    return 0;
bad:
    return qn_err_set(err, QN_INVALID_ARGUMENT, "field \"metric\": %s is not computed for a %s "
                      "model", m, qml_task_name(task));
}

/* Non-finite values become null: JSON has no NaN. */
static int set_num(json_t *o, const char *key, double v, qn_err *err)
{
    if (json_object_set_new(o, key, isfinite(v) ? json_real(v) : json_null()) < 0)
        return oom(err);
    return 0;
}

/* The label column of f as doubles (borrowed), every cell present and finite. */
static int label_values(const qml_frame *f, const char *label, const double **y, qn_err *err)
{
    int li = qml_frame_find(f, label);
    if (li < 0)
        return qn_err_set(err, QN_NOT_FOUND, "label column \"%s\" is not in the data", label);
    const qml_column *c = qml_frame_col(f, (size_t)li);
    if (c->type == QML_CATEGORICAL)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "label column \"%s\" is categorical: map it "
                          "to numbers first (prep step map_weights or cast)", label);
    for (size_t r = 0; r < c->len; r++)
        if (c->missing[r] || !isfinite(c->num[r]))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "label column \"%s\": row %zu has no "
                              "value", label, r);
    *y = c->num;
    return 0;
}

static int class_index(const double *classes, size_t n, double v)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (classes[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && classes[lo] == v ? (int)lo : -1;
}

static int eval_tabular(const qml_model *m, const qml_train_spec *spec, const qml_frame *h,
                        json_t *out, qn_err *err)
{
    const double *y;
    int rc = label_values(h, spec->label, &y, err);
    if (rc < 0)
        return rc;
    size_t n = qml_frame_nrows(h), w = qml_model_output_width(m), nc;
    if (n == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "the holdout has no rows");
    const double *classes = qml_model_classes(m, &nc);
    float *p = malloc(n * w * sizeof *p);
    double *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    if (!p || !a || !b) {
        rc = oom(err);
        goto out;
    }
    if ((rc = qml_model_predict_frame(m, h, p, err)) < 0)
        goto out;
    qml_task task = qml_model_task(m);
    double v;
    if (task == QML_TASK_REGRESSION) {
        for (size_t i = 0; i < n; i++)
            a[i] = p[i];
        if ((rc = qml_metric_rmse(y, a, n, &v, err)) < 0 || (rc = set_num(out, "rmse", v, err)) < 0 ||
            (rc = qml_metric_mae(y, a, n, &v, err)) < 0 || (rc = set_num(out, "mae", v, err)) < 0 ||
            (rc = qml_metric_r2(y, a, n, &v, err)) < 0 || (rc = set_num(out, "r2", v, err)) < 0 ||
            (rc = qml_metric_mean_error(y, a, n, &v, err)) < 0 || (rc = set_num(out, "mean_error", v, err)) < 0)
            goto out;
        goto out;
    }
    double ll = 0;
    size_t right = 0;
    for (size_t i = 0; i < n; i++) {
        int c = class_index(classes, nc, y[i]);
        if (c < 0) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "label column \"%s\": row %zu has %g, not "
                            "a class of the model", spec->label, i, y[i]);
            goto out;
        }
        if (task == QML_TASK_BINARY) {
            a[i] = c;
            b[i] = p[i];
            right += (p[i] >= 0.5f) == (c == 1);
        } else {
            const float *row = p + i * w;
            size_t best = 0;
            for (size_t k = 1; k < w; k++)
                if (row[k] > row[best])
                    best = k;
            right += best == (size_t)c;
            double pc = row[c] < 1e-15 ? 1e-15 : row[c] > 1 - 1e-15 ? 1 - 1e-15 : row[c];
            ll -= log(pc);
        }
    }
    if ((rc = set_num(out, "accuracy", (double)right / (double)n, err)) < 0)
        goto out;
    if (task == QML_TASK_MULTICLASS) {
        rc = set_num(out, "log_loss", ll / (double)n, err);
        goto out;
    }
    if ((rc = qml_metric_log_loss(a, b, n, 0, &v, err)) < 0 ||
        (rc = set_num(out, "log_loss", v, err)) < 0 ||
        (rc = qml_metric_roc_auc(a, b, n, &v, err)) < 0 || (rc = set_num(out, "roc_auc", v, err)) < 0 ||
        (rc = qml_metric_brier(a, b, n, &v, err)) < 0 || (rc = set_num(out, "brier", v, err)) < 0)
        goto out;
    /* The holdout's calibration table, flat (manifest metrics are numbers):
     * quern-monitor calibrates live probabilities with it before estimating
     * accuracy and AUC without labels (CBPE). Empty bins are left out. */
    qml_calibration cal;
    if ((rc = qml_calibration_table(a, b, n, &cal, err)) < 0)
        goto out;
    for (size_t k = 0; k < QML_CAL_BINS; k++) {
        if (cal.n[k] <= 0)
            continue;
        char key[40];
        snprintf(key, sizeof key, "calibration.n.%zu", k);
        if ((rc = set_num(out, key, cal.n[k], err)) < 0)
            goto out;
        snprintf(key, sizeof key, "calibration.rate.%zu", k);
        if ((rc = set_num(out, key, cal.rate[k], err)) < 0)
            goto out;
    }
out:
    free(p);
    free(a);
    free(b);
    return rc;
}

/* ALS evaluation: the holdout's (user, item) pairs mapped through the model's
 * ids; users and items the model has never seen get indices past its own, so
 * they count (cold users get the popularity fallback, as serve gives them;
 * new items are relevant but unreachable). A pair the user already had in
 * training is dropped: with exclude_seen neither the model nor the baseline
 * may recommend it, so it measures nothing. */
typedef struct als_ctx {
    const qml_als *als;
    int32_t n_users, n_items;
    qml_als_rec *buf;
} als_ctx;

static int als_eval_recommend(void *ctx, int32_t user, size_t n, int32_t *items, size_t *n_out,
                              qn_err *err)
{
    als_ctx *c = ctx;
    const int32_t *seen;
    int k = (int)(n < (size_t)c->n_items ? n : (size_t)c->n_items), got;
    *n_out = 0;
    if (k < 1)
        return 0;
    if (user < c->n_users && qml_als_seen(c->als, user, &seen) > 0)
        got = qml_als_recommend(c->als, user, k, 1, c->buf, err);
    else
        got = qml_als_recommend_popular(c->als, k, c->buf, err);
    if (got < 0)
        return got;
    for (int i = 0; i < got; i++)
        items[i] = c->buf[i].item;
    *n_out = (size_t)got;
    return 0;
}

static int seen_has(const qml_als *als, int32_t u, int32_t item)
{
    const int32_t *s;
    int64_t n = qml_als_seen(als, u, &s), lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (s[mid] < item)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && s[lo] == item;
}

/* The AUC ranks at most this many items per user; beyond, items tie below. */
#define QML_ALS_EVAL_DEPTH 5000
/* Requests sampled from the training pairs to profile a recommender. */
#define PROFILE_REQUESTS 5000

static int add_rec_report(json_t *out, const char *prefix, const qml_rec_report *r, qn_err *err)
{
    char key[48];
    const struct {
        const char *name;
        double v;
        int at_k;
    } f[] = {{"precision", r->precision, 1}, {"recall", r->recall, 1}, {"map", r->map, 1},
             {"ndcg", r->ndcg, 1},           {"auc", r->auc, 0},       {"coverage", r->coverage, 0}};
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) {
        if (f[i].at_k)
            snprintf(key, sizeof key, "%s%s@%zu", prefix, f[i].name, r->k);
        else
            snprintf(key, sizeof key, "%s%s", prefix, f[i].name);
        int rc = set_num(out, key, f[i].v, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int eval_als(const qml_model *m, const qml_train_spec *spec, const qml_frame *h,
                    json_t *out, qn_err *err)
{
    const qml_als *als = qml_model_als(m);
    int ui = qml_frame_find(h, spec->user), ii = qml_frame_find(h, spec->item);
    if (ui < 0 || ii < 0)
        return qn_err_set(err, QN_NOT_FOUND, "column \"%s\" is not in the holdout",
                          ui < 0 ? spec->user : spec->item);
    const qml_column *uc = qml_frame_col(h, (size_t)ui), *ic = qml_frame_col(h, (size_t)ii);
    int32_t nu = qml_als_n_users(als), ni = qml_als_n_items(als);
    size_t n = qml_frame_nrows(h), np = 0;
    qml_dict *new_u = qml_dict_new(), *new_i = qml_dict_new();
    int32_t *rows = malloc((n ? n : 1) * sizeof *rows), *cols = malloc((n ? n : 1) * sizeof *cols);
    float *ones = NULL, *seen_v = NULL;
    int32_t *seen_r = NULL, *seen_c = NULL;
    qml_csr *train = NULL, *test = NULL;
    als_ctx ctx = {als, nu, ni, NULL};
    int rc = 0;
    if (!new_u || !new_i || !rows || !cols) {
        rc = oom(err);
        goto out;
    }
    for (size_t r = 0; r < n; r++) {
        if (uc->missing[r] || ic->missing[r])
            continue;
        char ub[64], ib[64];
        const char *us = qml_cell_text(uc, r, ub, sizeof ub), *is = qml_cell_text(ic, r, ib, sizeof ib);
        int32_t u = qml_als_user_index(als, us), i = qml_als_item_index(als, is);
        if (u >= 0 && i >= 0 && seen_has(als, u, i))
            continue;
        if (u < 0 && (u = qml_dict_intern(new_u, us, strlen(us))) >= 0)
            u += nu;
        if (i < 0 && (i = qml_dict_intern(new_i, is, strlen(is))) >= 0)
            i += ni;
        if (u < 0 || i < 0) {
            rc = oom(err);
            goto out;
        }
        rows[np] = u;
        cols[np++] = i;
    }
    int32_t nrows = nu + (int32_t)qml_dict_size(new_u), ncols = ni + (int32_t)qml_dict_size(new_i);
    int64_t nseen = 0;
    for (int32_t u = 0; u < nu; u++) {
        const int32_t *s;
        nseen += qml_als_seen(als, u, &s);
    }
    ones = malloc((np ? np : 1) * sizeof *ones);
    seen_v = malloc((size_t)(nseen ? nseen : 1) * sizeof *seen_v);
    seen_r = malloc((size_t)(nseen ? nseen : 1) * sizeof *seen_r);
    seen_c = malloc((size_t)(nseen ? nseen : 1) * sizeof *seen_c);
    size_t depth = (size_t)ncols < QML_ALS_EVAL_DEPTH ? (size_t)ncols : QML_ALS_EVAL_DEPTH;
    ctx.buf = malloc((depth ? depth : 1) * sizeof *ctx.buf);
    if (!ones || !seen_v || !seen_r || !seen_c || !ctx.buf) {
        rc = oom(err);
        goto out;
    }
    for (size_t p = 0; p < np; p++)
        ones[p] = 1;
    int64_t e = 0;
    for (int32_t u = 0; u < nu; u++) {
        const int32_t *s;
        int64_t c = qml_als_seen(als, u, &s);
        for (int64_t j = 0; j < c; j++, e++) {
            seen_r[e] = u;
            seen_c[e] = s[j];
            seen_v[e] = 1;
        }
    }
    if ((rc = qml_csr_from_coo(nrows, ncols, rows, cols, ones, np, &test, err)) < 0 ||
        (rc = qml_csr_from_coo(nrows, ncols, seen_r, seen_c, seen_v, (size_t)nseen, &train, err)) < 0)
        goto out;
    qml_rec_report model, base;
    size_t k = (size_t)spec->k;
    if ((rc = qml_eval_recommender(train, test, als_eval_recommend, &ctx, k, depth, &model, err)) < 0 ||
        (rc = qml_eval_popularity(train, test, k, depth, &base, err)) < 0)
        goto out;
    if ((rc = add_rec_report(out, "", &model, err)) < 0 ||
        (rc = add_rec_report(out, "baseline.", &base, err)) < 0)
        goto out;
    if (json_object_set_new(out, "n_eval_users", json_integer((json_int_t)model.n_users)) < 0)
        rc = oom(err);
out:
    qml_dict_free(new_u);
    qml_dict_free(new_i);
    free(rows);
    free(cols);
    free(ones);
    free(seen_v);
    free(seen_r);
    free(seen_c);
    free(ctx.buf);
    qml_csr_free(train);
    qml_csr_free(test);
    return rc;
}

int qml_model_evaluate(const qml_model *m, const qml_train_spec *spec, const qml_frame *holdout,
                       json_t **metrics, qn_err *err)
{
    *metrics = NULL;
    if (strcmp(qml_model_kind(m), spec->kind))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "the model is %s but the spec trains %s",
                          qml_model_kind(m), spec->kind);
    json_t *out = json_object();
    if (!out)
        return oom(err);
    int rc = qml_model_task(m) == QML_TASK_RANKING ? eval_als(m, spec, holdout, out, err)
                                                   : eval_tabular(m, spec, holdout, out, err);
    if (rc == 0 && json_object_set_new(out, "n_test", json_integer((json_int_t)qml_frame_nrows(holdout))) < 0)
        rc = oom(err);
    if (rc < 0)
        json_decref(out);
    else
        *metrics = out;
    return rc;
}

/* ---- the run -------------------------------------------------------------------- */

static const char *const stage_names[] = {"split", "transforms", "fit", "evaluate",
                                          "profile", "bundle", "done"};

const char *qml_train_stage_name(qml_train_stage s)
{
    return (unsigned)s <= QML_STAGE_DONE ? stage_names[s] : "unknown";
}

/* Where each stage starts in the run's fraction: fitting takes most of it. */
static const double stage_start[] = {0.0, 0.03, 0.08, 0.85, 0.92, 0.96, 1.0};

typedef struct run {
    const qml_train_spec *spec;
    const qml_train_opts *o;
    qn_err *err;
} run;

static int cancelled(const run *r)
{
    return r->o->cancel && atomic_load(r->o->cancel);
}

static int stage(const run *r, qml_train_stage s)
{
    if (cancelled(r))
        return qn_err_set(r->err, QN_CANCELLED, "training cancelled before the %s stage",
                          stage_names[s]);
    if (r->o->progress)
        r->o->progress(r->o->progress_ctx, s, 0, NAN, stage_start[s]);
    return 0;
}

/* During fit: iteration i of n. Returns nonzero to cancel. */
static int fit_progress(const run *r, int i, int n, double loss)
{
    if (r->o->progress) {
        double f = stage_start[QML_STAGE_FIT] +
                   (stage_start[QML_STAGE_EVALUATE] - stage_start[QML_STAGE_FIT]) * i / (n ? n : 1);
        r->o->progress(r->o->progress_ctx, QML_STAGE_FIT, i, loss, f);
    }
    return cancelled(r);
}

static int als_progress(const qml_als_progress *p, void *ctx)
{
    return fit_progress(ctx, p->iteration, p->iterations, p->loss);
}

static int xgb_progress(const qml_xgb_progress *p, void *ctx)
{
    return fit_progress(ctx, p->round + 1, p->num_round, p->train);
}

/* Splits frame rows into *train_rows / *test_rows (or takes opts->holdout). */
static int split_rows(const run *r, const qml_frame *f, qml_split *sp, qn_err *err)
{
    const qml_train_spec *s = r->spec;
    size_t n = qml_frame_nrows(f);
    memset(sp, 0, sizeof *sp);
    if (r->o->holdout) {
        if (!(sp->train = malloc((n ? n : 1) * sizeof *sp->train)))
            return oom(err);
        for (size_t i = 0; i < n; i++)
            sp->train[i] = i;
        sp->n_train = n;
        return 0;
    }
    if (s->split.kind == QML_SPLIT_RANDOM)
        return qml_split_random(n, s->split.ratio, s->split.seed, sp, err);
    const char *tname = s->split.column ? s->split.column : s->time;
    const qml_column *tc = NULL;
    if (tname) {
        int ti = qml_frame_find(f, tname);
        if (ti < 0)
            return qn_err_set(err, QN_NOT_FOUND, "time column \"%s\" is not in the data", tname);
        tc = qml_frame_col(f, (size_t)ti);
        if (tc->type == QML_CATEGORICAL)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "time column \"%s\" is categorical, not "
                              "a timestamp", tname);
        for (size_t i = 0; i < n; i++)
            if (tc->missing[i])
                return qn_err_set(err, QN_INVALID_ARGUMENT, "time column \"%s\": row %zu has "
                                  "no time", tname, i);
    }
    if (s->split.kind == QML_SPLIT_TIME) {
        int rc = qml_split_by_time(tc->num, n, s->split.cutoff, sp, err);
        if (rc == 0 && (sp->n_train == 0 || sp->n_test == 0)) {
            const char *empty = sp->n_train == 0 ? "train (before the cutoff)"
                                                 : "holdout (from the cutoff on)";
            qml_split_free(sp);
            return qn_err_set(err, QN_INVALID_ARGUMENT, "split.cutoff leaves the %s part empty",
                              empty);
        }
        return rc;
    }
    /* leave_k_out (als): events over the whole frame; rows without a user or
     * an item stay in train (interactions skip them anyway). */
    int ui = qml_frame_find(f, s->user), ii = qml_frame_find(f, s->item);
    if (ui < 0 || ii < 0)
        return qn_err_set(err, QN_NOT_FOUND, "column \"%s\" is not in the data",
                          ui < 0 ? s->user : s->item);
    const qml_column *uc = qml_frame_col(f, (size_t)ui), *ic = qml_frame_col(f, (size_t)ii);
    qml_dict *du = qml_dict_new(), *di = qml_dict_new();
    int32_t *eu = malloc((n ? n : 1) * sizeof *eu), *ei = malloc((n ? n : 1) * sizeof *ei);
    double *et = tc ? malloc((n ? n : 1) * sizeof *et) : NULL;
    size_t *row = malloc((n ? n : 1) * sizeof *row), ne = 0;
    qml_split es = {0};
    int rc = 0;
    if (!du || !di || !eu || !ei || !row || (tc && !et)) {
        rc = oom(err);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (uc->missing[i] || ic->missing[i])
            continue;
        char ub[64], ib[64];
        const char *us = qml_cell_text(uc, i, ub, sizeof ub), *is = qml_cell_text(ic, i, ib, sizeof ib);
        eu[ne] = qml_dict_intern(du, us, strlen(us));
        ei[ne] = qml_dict_intern(di, is, strlen(is));
        if (eu[ne] < 0 || ei[ne] < 0) {
            rc = oom(err);
            goto out;
        }
        if (et)
            et[ne] = tc->num[i];
        row[ne++] = i;
    }
    qml_events ev = {ne, eu, ei, NULL, et, (int32_t)qml_dict_size(du), (int32_t)qml_dict_size(di)};
    if ((rc = qml_split_events_leave_k_out_rows(&ev, s->split.k, s->split.seed, &es, err)) < 0)
        goto out;
    uint8_t *test = calloc(n ? n : 1, 1);
    if (!test) {
        rc = oom(err);
        goto out;
    }
    for (size_t j = 0; j < es.n_test; j++)
        test[row[es.test[j]]] = 1;
    sp->train = malloc((n ? n : 1) * sizeof *sp->train);
    sp->test = malloc((es.n_test ? es.n_test : 1) * sizeof *sp->test);
    if (!sp->train || !sp->test) {
        free(test);
        qml_split_free(sp);
        rc = oom(err);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (test[i])
            sp->test[sp->n_test++] = i;
        else
            sp->train[sp->n_train++] = i;
    }
    free(test);
out:
    qml_split_free(&es);
    qml_dict_free(du);
    qml_dict_free(di);
    free(eu);
    free(ei);
    free(et);
    free(row);
    return rc;
}

static int is_excluded(const qml_train_spec *s, const char *name)
{
    if (s->label && !strcmp(name, s->label))
        return 1;
    for (size_t i = 0; i < s->n_exclude; i++)
        if (!strcmp(s->exclude[i], name))
            return 1;
    return 0;
}

/* The transform chains: the spec's features or the defaults (train.h). */
static int feature_specs(const qml_train_spec *s, const qml_frame *f, qml_feature_spec **specs,
                         qml_tf_step **steps, qml_type **types, size_t *n, qn_err *err)
{
    size_t cap = s->features ? s->n_features : qml_frame_ncols(f);
    *specs = calloc(cap ? cap : 1, sizeof **specs);
    *steps = calloc(2 * (cap ? cap : 1), sizeof **steps);
    *types = calloc(cap ? cap : 1, sizeof **types);
    if (!*specs || !*steps || !*types)
        return oom(err);
    int tree = !strcmp(s->kind, "xgboost");
    *n = 0;
    for (size_t i = 0; i < cap; i++) {
        const qml_train_feature *tf = s->features ? &s->features[i] : NULL;
        const char *name = tf ? tf->column : qml_frame_col(f, i)->name;
        if (!tf && is_excluded(s, name))
            continue;
        int ci = qml_frame_find(f, name);
        if (ci < 0)
            return qn_err_set(err, QN_NOT_FOUND, "features[%zu]: column \"%s\" is not in the data",
                              i, name);
        qml_type t = qml_frame_col(f, (size_t)ci)->type;
        int cat = t == QML_CATEGORICAL;
        int encode = tf && tf->encode != -1 ? tf->encode
                     : cat ? (int)QML_TF_ONEHOT : tree ? -2 : (int)QML_TF_STANDARDIZE;
        /* Codes (one-hot, hashing) impute their most frequent value, not a mean
         * that names no category. */
        int coded = cat || encode == QML_TF_ONEHOT || encode == QML_TF_HASH;
        int impute = tf && tf->impute != -1 ? tf->impute
                     : coded ? (int)QML_IMPUTE_MOST_FREQUENT : (int)QML_IMPUTE_MEAN;
        qml_tf_step *st = *steps + 2 * *n;
        size_t ns = 0;
        if (impute >= 0) {
            st[ns] = (qml_tf_step){.op = QML_TF_IMPUTE, .impute = (qml_impute_strategy)impute};
            if (tf && tf->has_fill) {
                st[ns].fill_num = tf->fill_num;
                st[ns].fill_str = tf->fill_str;
            }
            ns++;
        }
        if (encode >= 0) {
            st[ns] = (qml_tf_step){.op = (qml_tf_op)encode};
            if (tf) {
                st[ns].n_buckets = tf->buckets;
                st[ns].hash_signed = tf->hash_signed;
                st[ns].max_categories = tf->max_categories;
                st[ns].min_frequency = tf->min_frequency;
            } else {
                st[ns].n_buckets = 32;
            }
            ns++;
        }
        (*specs)[*n] = (qml_feature_spec){name, st, ns};
        (*types)[*n] = t;
        (*n)++;
    }
    if (*n == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "no feature columns are left besides the "
                          "label and the excluded ones");
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Distinct label values (ascending) of a classifier's training rows. */
static int find_classes(const qml_train_spec *s, const double *y, size_t n, double **classes,
                        size_t *nc, qn_err *err)
{
    double *v = malloc((n ? n : 1) * sizeof *v);
    if (!v)
        return oom(err);
    for (size_t i = 0; i < n; i++) {
        if (y[i] != floor(y[i]) || fabs(y[i]) > 1e9) {
            free(v);
            return qn_err_set(err, QN_INVALID_ARGUMENT, "label column \"%s\": row %zu has %g; a "
                              "classifier needs integer labels", s->label, i, y[i]);
        }
        v[i] = y[i];
    }
    qsort(v, n, sizeof *v, cmp_double);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || v[i] != v[k - 1])
            v[k++] = v[i];
    if (k < 2 || k > QML_LINEAR_MAX_CLASSES) {
        free(v);
        return qn_err_set(err, QN_INVALID_ARGUMENT, "label column \"%s\" has %zu classes in the "
                          "training rows; a classifier needs 2 to %d", s->label, k,
                          QML_LINEAR_MAX_CLASSES);
    }
    *classes = v;
    *nc = k;
    return 0;
}

static qml_task tabular_task(const qml_train_spec *s)
{
    if (!strcmp(s->kind, "linear"))
        return QML_TASK_REGRESSION;
    if (!strcmp(s->kind, "xgboost")) {
        const char *obj = json_string_value(json_object_get(s->params, "objective"));
        if (obj && (!strncmp(obj, "reg:", 4) || !strncmp(obj, "count:", 6)))
            return QML_TASK_REGRESSION;
    }
    return QML_TASK_BINARY; /* or multiclass, once the classes are known */
}

static int fit_xgb(const run *r, const float *X, size_t n, size_t d, const double *y,
                   qml_task task, const double *classes, size_t nc, qml_xgb **out, qn_err *err)
{
    const qml_train_spec *s = r->spec;
    float *yf = malloc((n ? n : 1) * sizeof *yf);
    if (!yf)
        return oom(err);
    for (size_t i = 0; i < n; i++)
        yf[i] = task == QML_TASK_REGRESSION ? (float)y[i] : (float)class_index(classes, nc, y[i]);
    /* Params as text; room for every key plus objective, num_class, defaults. */
    enum { MAXP = 32 };
    qml_xgb_param p[MAXP];
    char vals[MAXP][64];
    size_t np = 0;
    const char *key;
    const json_t *v;
    int has_round = 0, has_method = 0, has_obj = 0;
    json_object_foreach(s->params, key, v) {
        if (json_is_string(v))
            snprintf(vals[np], sizeof vals[np], "%s", json_string_value(v));
        else if (json_is_integer(v))
            snprintf(vals[np], sizeof vals[np], "%lld", (long long)json_integer_value(v));
        else
            snprintf(vals[np], sizeof vals[np], "%.17g", json_number_value(v));
        has_round |= !strcmp(key, "num_round");
        has_method |= !strcmp(key, "tree_method");
        has_obj |= !strcmp(key, "objective");
        p[np] = (qml_xgb_param){key, vals[np]};
        np++;
    }
    if (!has_round)
        p[np++] = (qml_xgb_param){"num_round", XGB_NUM_ROUND_TEXT};
    if (!has_method)
        p[np++] = (qml_xgb_param){"tree_method", "hist"};
    if (!has_obj)
        p[np++] = (qml_xgb_param){"objective", task == QML_TASK_BINARY ? "binary:logistic"
                                               : task == QML_TASK_MULTICLASS ? "multi:softprob"
                                                                             : "reg:squarederror"};
    if (task == QML_TASK_MULTICLASS) {
        snprintf(vals[np], sizeof vals[np], "%zu", nc);
        p[np] = (qml_xgb_param){"num_class", vals[np]};
        np++;
    }
    const char *obj = NULL;
    for (size_t i = 0; i < np; i++)
        if (!strcmp(p[i].key, "objective"))
            obj = p[i].value;
    int rc = 0;
    if ((task == QML_TASK_BINARY && strcmp(obj, "binary:logistic")) ||
        (task == QML_TASK_MULTICLASS && strcmp(obj, "multi:softprob")))
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "params.objective %s does not fit a label with "
                        "%zu classes", obj, nc);
    if (rc == 0) {
        qml_xgb_data data = {.x = X, .n_rows = n, .n_cols = d, .y = yf};
        qml_xgb_train_opts o = {.params = p, .n_params = np, .progress = xgb_progress,
                                .progress_ctx = (void *)r};
        rc = qml_xgb_train(&data, &o, out, err);
    }
    free(yf);
    return rc;
}

/* Common to both paths: profile the frame into the writer, then the manifest. */
static int write_profile(qml_bundle_writer *w, const qml_frame *f, qn_err *err)
{
    qml_profile_opts po;
    qml_profile_opts_default(&po);
    qml_profile *p;
    int rc = qml_profile_build(f, &po, &p, err);
    if (rc < 0)
        return rc;
    char *js = qml_profile_to_json(p, err);
    qml_profile_free(p);
    if (!js)
        return err->code;
    char hex[QN_SHA256_HEX + 1], digest[QML_DIGEST_STR];
    qn_sha256_buf(js, strlen(js), hex);
    snprintf(digest, sizeof digest, "sha256:%s", hex);
    if ((rc = qml_bundle_writer_write_file(w, "profile.json", js, strlen(js), err)) == 0)
        rc = qml_bundle_writer_set_profile(w, digest, err);
    free(js);
    return rc;
}

/* Sets kind, inputs, outputs, params, metrics and dataset from the model. */
static int write_common(const run *r, qml_bundle_writer *w, const qml_model *m,
                        const json_t *metrics, qn_err *err)
{
    const qml_train_spec *s = r->spec;
    int rc = qml_bundle_writer_set_kind(w, s->kind, err);
    for (size_t i = 0; rc == 0 && i < qml_model_n_inputs(m); i++) {
        const qml_tensor_spec *t = qml_model_input(m, i);
        rc = qml_bundle_writer_add_input(w, t->name, t->datatype, t->shape, t->ndim, err);
    }
    for (size_t i = 0; rc == 0 && i < qml_model_n_outputs(m); i++) {
        const qml_tensor_spec *t = qml_model_output(m, i);
        rc = qml_bundle_writer_add_output(w, t->name, t->datatype, t->shape, t->ndim, err);
    }
    if (rc < 0)
        return rc;
    json_t *params = json_deep_copy(s->params);
    size_t nc;
    const double *classes = qml_model_classes(m, &nc);
    json_t *cl = json_array();
    if (!params || !cl) {
        json_decref(params);
        json_decref(cl);
        return oom(err);
    }
    for (size_t i = 0; i < nc; i++)
        json_array_append_new(cl, json_real(classes[i]));
    json_object_set_new(params, "task", json_string(qml_task_name(qml_model_task(m))));
    if (nc)
        json_object_set_new(params, "classes", cl);
    else
        json_decref(cl);
    if (s->label)
        json_object_set_new(params, "label", json_string(s->label));
    if (qml_model_task(m) == QML_TASK_RANKING)
        json_object_set_new(params, "k", json_integer(s->k));
    json_object_set(params, "spec", s->source);
    rc = qml_bundle_writer_set_json(w, "params", params, err);
    json_decref(params);
    if (rc == 0)
        rc = qml_bundle_writer_set_json(w, "metrics", metrics, err);
    if (rc == 0 && r->o->dataset_name)
        rc = qml_bundle_writer_set_dataset(w, r->o->dataset_name, r->o->dataset_version, err);
    return rc;
}

/* Writes manifest.json and attaches the parsed manifest to the model. */
static int finish_bundle(qml_bundle_writer *w, const char *dir, qml_model *m,
                         qml_train_result *res, qn_err *err)
{
    int rc = qml_bundle_writer_finish(w, res->manifest_digest, err);
    if (rc < 0)
        return rc;
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return qn_err_set(err, QN_INTERNAL, "cannot reopen %s", path);
    char *buf = malloc(QML_MANIFEST_MAX);
    size_t len = buf ? fread(buf, 1, QML_MANIFEST_MAX, f) : 0;
    fclose(f);
    if (!buf)
        return oom(err);
    qml_manifest *man;
    rc = qml_manifest_parse(buf, len, &man, err);
    free(buf);
    if (rc == 0)
        qml__model_set_manifest(m, man);
    return rc;
}

/* The metrics JSON: the evaluation plus n_train; primary metric into res. */
static int finish_metrics(const run *r, const qml_model *m, const qml_frame *holdout,
                          qml_train_result *res, qn_err *err)
{
    int rc = qml_train_primary_metric(r->spec, qml_model_task(m), res->primary,
                                      sizeof res->primary, &res->higher_is_better, err);
    if (rc < 0 || (rc = qml_model_evaluate(m, r->spec, holdout, &res->metrics, err)) < 0)
        return rc;
    if (json_object_set_new(res->metrics, "n_train", json_integer((json_int_t)res->n_train)) < 0)
        return oom(err);
    const json_t *v = json_object_get(res->metrics, res->primary);
    if (!v)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "metric %s was not computed", res->primary);
    res->primary_value = json_is_number(v) ? json_number_value(v) : NAN;
    return 0;
}

static int run_tabular(const run *r, const qml_frame *train, const qml_frame *holdout,
                       qml_bundle_writer *w, const char *dir, qml_train_result *res, qn_err *err)
{
    const qml_train_spec *s = r->spec;
    qml_feature_spec *fs = NULL;
    qml_tf_step *steps = NULL;
    qml_type *types = NULL;
    qml_features *features = NULL;
    qml_linear *lin = NULL;
    qml_xgb *xgb = NULL;
    qml_model *m = NULL;
    double *classes = NULL;
    float *X = NULL;
    char *buf = NULL;
    size_t nf = 0, nc = 0, n = qml_frame_nrows(train);
    const double *y;
    int rc;
    if ((rc = stage(r, QML_STAGE_TRANSFORMS)) < 0 || (rc = label_values(train, s->label, &y, err)) < 0)
        goto out;
    qml_task task = tabular_task(s);
    if (task != QML_TASK_REGRESSION) {
        if ((rc = find_classes(s, y, n, &classes, &nc, err)) < 0)
            goto out;
        task = nc == 2 ? QML_TASK_BINARY : QML_TASK_MULTICLASS;
    }
    if ((rc = feature_specs(s, train, &fs, &steps, &types, &nf, err)) < 0 ||
        (rc = qml_features_fit(fs, nf, train, &features, err)) < 0)
        goto out;
    size_t d = qml_features_n_features(features);
    if (!(X = malloc(n * d * sizeof *X))) {
        rc = oom(err);
        goto out;
    }
    if ((rc = qml_features_transform(features, train, X, err)) < 0 || (rc = stage(r, QML_STAGE_FIT)) < 0)
        goto out;
    if (!strcmp(s->kind, "xgboost")) {
        rc = fit_xgb(r, X, n, d, y, task, classes, nc, &xgb, err);
    } else if (!strcmp(s->kind, "logistic")) {
        qml_logistic_params lp = QML_LOGISTIC_DEFAULTS;
        lp.C = pnum(s, "C", lp.C);
        lp.eps = pnum(s, "eps", lp.eps);
        rc = qml_linear_fit_logistic(X, n, d, y, &lp, &lin, err);
    } else {
        const json_t *fi = json_object_get(s->params, "fit_intercept");
        qml_ridge_params rp = {.lambda = pnum(s, "lambda", 1.0), .fit_intercept = !fi || json_is_true(fi)};
        rc = qml_linear_fit_ridge(X, n, d, y, &rp, &lin, err);
    }
    if (rc < 0) {
        if (rc == QN_CANCELLED)
            qn_err_set(err, QN_CANCELLED, "training cancelled during fit");
        goto out;
    }
    rc = qml__model_new_tabular(s->kind, task, features, types, lin, xgb, classes, nc, &m, err);
    features = NULL;
    lin = NULL;
    xgb = NULL;
    if (rc < 0 || (rc = stage(r, QML_STAGE_EVALUATE)) < 0 ||
        (rc = finish_metrics(r, m, holdout, res, err)) < 0)
        goto out;
    /* The profile: the raw input columns of the training rows. */
    if ((rc = stage(r, QML_STAGE_PROFILE)) < 0)
        goto out;
    const qml_features *ff = qml_model_features(m);
    const char **names = malloc(qml_features_n_inputs(ff) * sizeof *names);
    if (!names) {
        rc = oom(err);
        goto out;
    }
    for (size_t i = 0; i < qml_features_n_inputs(ff); i++)
        names[i] = qml_features_input(ff, i);
    qml_frame *raw = qml_frame_select(train, names, qml_features_n_inputs(ff), err);
    free(names);
    if (!raw) {
        rc = err->code;
        goto out;
    }
    rc = write_profile(w, raw, err);
    qml_frame_free(raw);
    if (rc < 0 || (rc = stage(r, QML_STAGE_BUNDLE)) < 0)
        goto out;
    size_t len;
    char *tj = qml_features_to_json(ff, err);
    if (!tj) {
        rc = err->code;
        goto out;
    }
    json_t *tjson = json_loads(tj, 0, NULL);
    free(tj);
    if (!tjson) {
        rc = oom(err);
        goto out;
    }
    rc = qml_bundle_writer_set_json(w, "transforms", tjson, err);
    json_decref(tjson);
    if (rc < 0)
        goto out;
    rc = qml__model_save_file(m, &buf, &len, err);
    if (rc < 0 || (rc = qml_bundle_writer_write_file(w, "model.json", buf, len, err)) < 0 ||
        (rc = write_common(r, w, m, res->metrics, err)) < 0 ||
        (rc = finish_bundle(w, dir, m, res, err)) < 0)
        goto out;
    res->model = m;
    m = NULL;
out:
    free(fs);
    free(steps);
    free(types);
    free(classes);
    free(X);
    free(buf);
    qml_features_free(features);
    qml_linear_free(lin);
    qml_xgb_free(xgb);
    qml_model_free(m);
    return rc;
}

static int run_als(const run *r, const qml_frame *train, const qml_frame *holdout,
                   qml_bundle_writer *w, const char *dir, qml_train_result *res, qn_err *err)
{
    const qml_train_spec *s = r->spec;
    qml_interactions ia = {0};
    qml_als *als = NULL;
    qml_model *m = NULL;
    qml_frame *pf = NULL;
    const char **uids = NULL, **iids = NULL;
    char tmp[4096] = "";
    int rc;
    if ((rc = stage(r, QML_STAGE_TRANSFORMS)) < 0 ||
        (rc = qml_interactions_build(train, s->user, s->item, s->weight, &ia, err)) < 0)
        goto out;
    if (ia.matrix->nnz == 0) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "the training rows hold no (user, item) pair");
        goto out;
    }
    qml_als_params p;
    qml_als_params_init(&p);
    p.factors = (int)pnum(s, "factors", p.factors);
    p.regularization = (float)pnum(s, "regularization", p.regularization);
    p.alpha = (float)pnum(s, "alpha", p.alpha);
    p.iterations = (int)pnum(s, "iterations", p.iterations);
    p.cg_steps = (int)pnum(s, "cg_steps", p.cg_steps);
    p.threads = (int)pnum(s, "threads", 1);
    p.seed = (uint64_t)pnum(s, "seed", (double)p.seed);
    p.progress = als_progress;
    p.progress_userdata = (void *)r;
    p.compute_loss = r->o->progress != NULL;
    if ((rc = stage(r, QML_STAGE_FIT)) < 0)
        goto out;
    if ((rc = qml_als_fit(ia.matrix, &p, &als, err)) < 0) {
        if (rc == QN_CANCELLED)
            qn_err_set(err, QN_CANCELLED, "training cancelled during fit");
        goto out;
    }
    int32_t nu = ia.matrix->nrows, ni = ia.matrix->ncols;
    uids = malloc((size_t)nu * sizeof *uids);
    iids = malloc((size_t)ni * sizeof *iids);
    if (!uids || !iids) {
        rc = oom(err);
        goto out;
    }
    for (int32_t i = 0; i < nu; i++)
        uids[i] = qml_dict_str(ia.users, i);
    for (int32_t i = 0; i < ni; i++)
        iids[i] = qml_dict_str(ia.items, i);
    if ((rc = qml_als_set_ids(als, uids, iids, err)) < 0)
        goto out;
    rc = qml__model_new_als(als, s->k, &m, err);
    als = NULL;
    if (rc < 0 || (rc = stage(r, QML_STAGE_EVALUATE)) < 0 ||
        (rc = finish_metrics(r, m, holdout, res, err)) < 0 || (rc = stage(r, QML_STAGE_PROFILE)) < 0)
        goto out;
    /* The profile: what quern-monitor watches in live traffic, measured on a
     * sample of requests shaped like the training data (one per sampled
     * (user, item) pair, so active users weigh as they buy): the requested
     * user's activity and the mean popularity of the top-k items served to
     * them (qml_model_rec_context, the same function serve logs with). */
    pf = qml_frame_new();
    qml_model_rec *top = malloc((size_t)s->k * sizeof *top);
    if (!pf || !top || qml_frame_add_column(pf, "user_activity", QML_NUMERIC, err) < 0 ||
        qml_frame_add_column(pf, "item_popularity", QML_NUMERIC, err) < 0) {
        free(top);
        rc = pf && top ? err->code : oom(err);
        goto out;
    }
    const qml_csr *ui = ia.matrix;
    int64_t nsample = ui->nnz < PROFILE_REQUESTS ? ui->nnz : PROFILE_REQUESTS;
    uint64_t rng = (uint64_t)pnum(s, "seed", 42) * 0x9E3779B97F4A7C15ULL + 1;
    for (int64_t j = 0; j < nsample; j++) {
        /* entry e: every entry when they are few, else a seeded uniform draw */
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        int64_t e = nsample == ui->nnz ? j : (int64_t)(rng % (uint64_t)ui->nnz);
        int32_t u = 0, lo = 0, hi = ui->nrows - 1;
        while (lo <= hi) { /* the row holding entry e */
            int32_t mid = lo + (hi - lo) / 2;
            if (ui->indptr[mid] <= e) {
                u = mid;
                lo = mid + 1;
            } else {
                hi = mid - 1;
            }
        }
        int fb;
        double act, pop;
        int n = qml_model_recommend(m, uids[u], s->k, 0, top, &fb, err);
        if (n < 0 || qml_model_rec_context(m, uids[u], top, n, &act, &pop) < 0 ||
            qml_col_push_num(qml_frame_col(pf, 0), act) < 0 ||
            qml_col_push_num(qml_frame_col(pf, 1), pop) < 0 || qml_frame_end_row(pf) < 0) {
            free(top);
            rc = n < 0 ? n : oom(err);
            goto out;
        }
    }
    free(top);
    if ((rc = write_profile(w, pf, err)) < 0 || (rc = stage(r, QML_STAGE_BUNDLE)) < 0)
        goto out;
    /* qml_als_save writes into a scratch directory inside the bundle; each
     * file is then copied in through the writer (which hashes it). */
    snprintf(tmp, sizeof tmp, "%s/.als-tmp", dir);
    if ((rc = qml_als_save(qml_model_als(m), tmp, err)) < 0)
        goto out;
    for (size_t i = 0; i < QML__ALS_NFILES; i++) {
        char src[4200];
        snprintf(src, sizeof src, "%s/%s", tmp, qml__als_files[i]);
        if ((rc = qml_bundle_writer_copy_file(w, qml__als_files[i], src, err)) < 0)
            goto out;
    }
    if ((rc = write_common(r, w, m, res->metrics, err)) < 0 ||
        (rc = finish_bundle(w, dir, m, res, err)) < 0)
        goto out;
    res->model = m;
    m = NULL;
out:
    if (tmp[0]) {
        for (size_t i = 0; i < QML__ALS_NFILES; i++) {
            char src[4200];
            snprintf(src, sizeof src, "%s/%s", tmp, qml__als_files[i]);
            unlink(src);
        }
        rmdir(tmp);
    }
    free(uids);
    free(iids);
    qml_frame_free(pf);
    qml_interactions_free(&ia);
    qml_als_free(als);
    qml_model_free(m);
    return rc;
}

void qml_train_result_free(qml_train_result *r)
{
    if (!r)
        return;
    json_decref(r->metrics);
    qml_frame_free(r->holdout);
    qml_model_free(r->model);
    memset(r, 0, sizeof *r);
}

int qml_train_run(const qml_train_spec *spec, const qml_frame *frame, const char *out_dir,
                  const qml_train_opts *opts, qml_train_result *result, qn_err *err)
{
    memset(result, 0, sizeof *result);
    static const qml_train_opts none;
    run r = {spec, opts ? opts : &none, err};
    qml_split sp = {0};
    qml_frame *train = NULL;
    qml_bundle_writer *w = NULL;
    int rc;
    if ((rc = stage(&r, QML_STAGE_SPLIT)) < 0 || (rc = split_rows(&r, frame, &sp, err)) < 0)
        goto out;
    if (!(train = qml_frame_take(frame, sp.train, sp.n_train, err))) {
        rc = err->code;
        goto out;
    }
    if (r.o->holdout) {
        size_t nh = qml_frame_nrows(r.o->holdout);
        size_t *all = malloc((nh ? nh : 1) * sizeof *all);
        if (!all) {
            rc = oom(err);
            goto out;
        }
        for (size_t i = 0; i < nh; i++)
            all[i] = i;
        result->holdout = qml_frame_take(r.o->holdout, all, nh, err);
        free(all);
    } else {
        result->holdout = qml_frame_take(frame, sp.test, sp.n_test, err);
    }
    if (!result->holdout) {
        rc = err->code;
        goto out;
    }
    result->n_rows = qml_frame_nrows(frame);
    result->n_train = qml_frame_nrows(train);
    result->n_test = qml_frame_nrows(result->holdout);
    if (result->n_train == 0 || result->n_test == 0) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "the %s part of the data is empty (%zu rows "
                        "in all)", result->n_train == 0 ? "train" : "test", result->n_rows);
        goto out;
    }
    if ((rc = qml_bundle_writer_open(out_dir, &w, err)) < 0)
        goto out;
    rc = !strcmp(spec->kind, "als") ? run_als(&r, train, result->holdout, w, out_dir, result, err)
                                    : run_tabular(&r, train, result->holdout, w, out_dir, result, err);
    if (rc == 0 && r.o->progress)
        r.o->progress(r.o->progress_ctx, QML_STAGE_DONE, 0, NAN, 1.0);
out:
    qml_bundle_writer_free(w);
    qml_split_free(&sp);
    qml_frame_free(train);
    if (rc < 0)
        qml_train_result_free(result);
    return rc;
}
