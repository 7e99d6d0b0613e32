/*
 * tracking.c - experiments and runs over the registry's store (see
 * tracking.h).
 *
 * Runs have an integer key (runs.id) that params, tags and metrics join on,
 * and the 32-hex run_uuid clients see. latest_metrics holds one row per run
 * and key, the newest by (step, timestamp) as MLflow picks it, updated in the
 * same statement batch as the append to metrics; search filters and orders
 * read only it. Everything a call writes happens in the caller's one
 * transaction, so a batch is logged whole or not at all.
 */
#include "registry/tracking.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/json.h"
#include "core/trace.h"
#include "registry/db.h"

/* ---- small helpers --------------------------------------------------------------- */

static int step_done(qn_stmt *st, qn_err *err)
{
    int rc;
    while ((rc = qn_step(st, err)) == 1)
        ;
    return rc;
}

static int oom(qn_err *err)
{
    return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
}

/* sql prepared, with the arguments in ap bound to its parameters 1, 2, ...
 * as fmt spells their types: 's' a const char * (NULL binds NULL), 'i' an
 * int64_t, 'd' a double. NULL with err. A failed bind is reported by the
 * next qn_step (store.h). */
static qn_stmt *prepare_va(qn_conn *c, const char *sql, qn_err *err, const char *fmt, va_list ap)
{
    qn_stmt *st = qn_prepare(c, sql, err);
    for (int i = 0; st && fmt[i]; i++) {
        if (fmt[i] == 's') {
            const char *s = va_arg(ap, const char *);
            s ? qn_bind_text(st, i + 1, s, -1) : qn_bind_null(st, i + 1);
        } else if (fmt[i] == 'd') {
            qn_bind_double(st, i + 1, va_arg(ap, double));
        } else {
            assert(fmt[i] == 'i');
            qn_bind_int64(st, i + 1, va_arg(ap, int64_t));
        }
    }
    return st;
}

/* sql prepared with the arguments after fmt bound (see prepare_va); NULL
 * with err. Read its rows with qn_step. */
static qn_stmt *sql_prepare(qn_conn *c, const char *sql, qn_err *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    qn_stmt *st = prepare_va(c, sql, err, fmt, ap);
    va_end(ap);
    return st;
}

/* Runs sql (a write, or a query whose rows are not wanted) with the
 * arguments after fmt bound (see prepare_va): 0, or a negative code with err
 * (QN_ALREADY_EXISTS on a unique clash). */
static int sql_exec(qn_conn *c, const char *sql, qn_err *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    qn_stmt *st = prepare_va(c, sql, err, fmt, ap);
    va_end(ap);
    return st ? step_done(st, err) : err->code;
}

/* Runs sql with the arguments after fmt bound (see prepare_va) to its first
 * row: 1 with *st on that row (read it, then step_done), 0 when there is no
 * row (the caller says what is missing), or a negative code with err. */
static int sql_first(qn_conn *c, const char *sql, qn_stmt **st, qn_err *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    *st = prepare_va(c, sql, err, fmt, ap);
    va_end(ap);
    return *st ? qn_step(*st, err) : err->code;
}

/* An experiment id as clients write it ("0", "12"); -1 when it is none. */
static int64_t parse_id(const char *s)
{
    if (!s || !*s || strlen(s) > 18)
        return -1;
    int64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}

static int run_missing(const char *run_id, qn_err *err)
{
    return qn_err_set(err, QN_NOT_FOUND, "run '%.64s' does not exist", run_id);
}

static int experiment_missing(const char *id, qn_err *err)
{
    return qn_err_set(err, QN_NOT_FOUND, "no experiment with id '%.64s' exists", id ? id : "");
}

static int experiment_exists(const char *name, qn_err *err)
{
    return qn_err_set(err, QN_ALREADY_EXISTS, "experiment '%.500s' already exists", name);
}

/* The run's integer key and lifecycle stage (deleted 1); QN_NOT_FOUND. */
static int run_key(qn_conn *c, const char *run_id, int64_t *id, int *deleted, int64_t *exp, qn_err *err)
{
    qn_stmt *st;
    *id = 0; /* GCC at -O3 cannot tell that every failure below is negative */
    int rc = sql_first(c, "SELECT id, lifecycle_stage, experiment_id FROM runs WHERE run_uuid = ?", &st, err, "s",
                       run_id);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return run_missing(run_id, err);
    *id = qn_col_int64(st, 0);
    if (deleted)
        *deleted = strcmp(qn_col_text(st, 1), "active") != 0;
    if (exp)
        *exp = qn_col_int64(st, 2);
    return step_done(st, err) < 0 ? err->code : 0;
}

/* An active run's key: a deleted run takes no more logging (MLflow). */
static int active_run(qn_conn *c, const char *run_id, int64_t *id, qn_err *err)
{
    int deleted = 0;
    int rc = run_key(c, run_id, id, &deleted, NULL, err);
    if (rc < 0)
        return rc;
    if (deleted)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "the run %.64s must be in the 'active' state; it is deleted (restore it first)", run_id);
    return 0;
}

/* A stored metric value as MLflow answers it: NaN as the string "NaN". */
static json_t *metric_value_json(double v, int is_nan)
{
    return is_nan ? json_string("NaN") : json_real(v);
}

/* The JSON of one row of a run's children, from the row's columns at col
 * onwards (the queries that read many runs put run_id before them); NULL
 * when out of memory. kv_json: {key, value} from the columns key, value, a
 * param or a tag. */
static json_t *kv_json(qn_stmt *st, int col)
{
    return json_pack("{s:s, s:s}", "key", qn_col_text(st, col), "value", qn_col_text(st, col + 1));
}

/* {key, value, timestamp, step} from the columns key, value, is_nan,
 * timestamp, step. */
static json_t *metric_json(qn_stmt *st, int col)
{
    return json_pack("{s:s, s:o, s:I, s:I}", "key", qn_col_text(st, col), "value",
                     metric_value_json(qn_col_double(st, col + 1), (int)qn_col_int64(st, col + 2)), "timestamp",
                     (json_int_t)qn_col_int64(st, col + 3), "step", (json_int_t)qn_col_int64(st, col + 4));
}

/* {tags, dataset: {name, digest, source_type, source, schema?, profile?}}
 * from the columns name, digest, source_type, source, schema, profile, tags. */
static json_t *input_json(qn_stmt *st, int col)
{
    json_t *ds = json_pack("{s:s, s:s, s:s, s:s}", "name", qn_col_text(st, col), "digest", qn_col_text(st, col + 1),
                           "source_type", qn_col_text(st, col + 2), "source", qn_col_text(st, col + 3));
    if (ds && !qn_col_is_null(st, col + 4))
        json_object_set_new(ds, "schema", json_string(qn_col_text(st, col + 4)));
    if (ds && !qn_col_is_null(st, col + 5))
        json_object_set_new(ds, "profile", json_string(qn_col_text(st, col + 5)));
    return json_pack("{s:o, s:o}", "tags", qn_json_from_text(qn_col_text(st, col + 6)), "dataset", ds);
}

/* {model_id, step} from the columns model_id, step: a logged model. */
static json_t *output_json(qn_stmt *st, int col)
{
    return json_pack("{s:s, s:I}", "model_id", qn_col_text(st, col), "step", (json_int_t)qn_col_int64(st, col + 1));
}

/* The rows sql finds for one owner (its one parameter, id) as an array of
 * row_json(st, 0); NULL with err, or with err unset when out of memory. */
static json_t *rows_list(qn_conn *c, const char *sql, int64_t id, json_t *(*row_json)(qn_stmt *st, int col),
                         qn_err *err)
{
    qn_stmt *st = sql_prepare(c, sql, err, "i", id);
    if (!st)
        return NULL;
    json_t *out = json_array();
    int rc;
    while (out && (rc = qn_step(st, err)) == 1)
        json_array_append_new(out, row_json(st, 0));
    if (!out || rc < 0) {
        json_decref(out);
        return NULL;
    }
    return out;
}

/* ---- keys and values ----------------------------------------------------------------- */

/* MLflow's rule for metric, param and tag names: 1-250 characters of
 * letters, digits, _ - . space / and :, and never a path up (".."); plus
 * '@', which Quern's own metric names use (map@10, precision@10). */
static int key_check(const char *what, const char *key, qn_err *err)
{
    size_t n = key ? strlen(key) : 0;
    if (n == 0 || n > TRK_MAX_KEY)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s key must have 1 to %d characters", what, TRK_MAX_KEY);
    for (const char *p = key; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("_-. /:@", *p))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "invalid %s key '%.250s': names may only contain alphanumerics, underscores (_), "
                              "dashes (-), periods (.), spaces ( ), colons (:), slashes (/) and @",
                              what, key);
    if (strcmp(key, "..") == 0 || strncmp(key, "../", 3) == 0 || strstr(key, "/../") ||
        (n >= 3 && strcmp(key + n - 3, "/..") == 0) || key[0] == '/')
        return qn_err_set(err, QN_INVALID_ARGUMENT, "invalid %s key '%.250s': it may not be an absolute or parent path",
                          what, key);
    return 0;
}

static int value_check(const char *what, const char *key, const char *value, size_t max, qn_err *err)
{
    if (!value)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s '%.250s' needs a string value", what, key);
    if (strlen(value) > max)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s '%.250s' has a value of %zu characters; the limit is %zu",
                          what, key, strlen(value), max);
    return 0;
}

/* An integer given as a JSON number or its decimal text (protobuf JSON). */
static int json_i64(const json_t *v, const char *what, int64_t *out, qn_err *err)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 9e18) {
        *out = (int64_t)json_real_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        char *end;
        errno = 0;
        long long x = strtoll(json_string_value(v), &end, 10);
        if (!errno && end != json_string_value(v) && !*end) {
            *out = x;
            return 0;
        }
    }
    return qn_err_set(err, QN_INVALID_ARGUMENT, "%s must be an integer", what);
}

int trk_metric_value(const json_t *v, const char *what, double *value, int *is_nan, qn_err *err)
{
    double d;
    *is_nan = 0;
    if (json_is_number(v)) {
        d = json_number_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        if (strcasecmp(s, "NaN") == 0)
            d = NAN;
        else if (strcasecmp(s, "Infinity") == 0 || strcasecmp(s, "inf") == 0)
            d = INFINITY;
        else if (strcasecmp(s, "-Infinity") == 0 || strcasecmp(s, "-inf") == 0)
            d = -INFINITY;
        else if (*s && (d = strtod(s, &end), !*end) && isfinite(d))
            ;
        else
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s must be a number (or \"NaN\", \"Infinity\", \"-Infinity\"), not \"%.40s\"",
                              what, s);
    } else {
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s must be a number", what);
    }
    if (isnan(d)) {
        *is_nan = 1;
        d = 0;
    } else if (isinf(d)) {
        d = d > 0 ? DBL_MAX : -DBL_MAX;
    }
    *value = d;
    return 0;
}

void trk_batch_free(trk_batch *b)
{
    free(b->metrics);
    free(b->params);
    free(b->tags);
    memset(b, 0, sizeof *b);
}

static int kv_parse(const json_t *arr, const char *what, size_t max_value, trk_kv **out, size_t *n, qn_err *err)
{
    size_t i;
    json_t *e;
    *n = json_array_size(arr);
    if (!*n)
        return 0;
    if (!(*out = calloc(*n, sizeof **out)))
        return oom(err);
    json_array_foreach(arr, i, e) {
        const char *k = json_string_value(json_object_get(e, "key"));
        const char *v = json_string_value(json_object_get(e, "value"));
        if (!json_is_object(e))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%ss[%zu] must be an object {key, value}", what, i);
        if (key_check(what, k, err) < 0 || value_check(what, k, v, max_value, err) < 0)
            return err->code;
        (*out)[i].key = k;
        (*out)[i].value = v;
    }
    return 0;
}

int trk_batch_parse(const json_t *metrics, const json_t *params, const json_t *tags, int64_t now, trk_batch *b,
                    qn_err *err)
{
    memset(b, 0, sizeof *b);
    static const char *names[] = {"metrics", "params", "tags"};
    const json_t *arrs[] = {metrics, params, tags};
    for (int i = 0; i < 3; i++)
        if (arrs[i] && !json_is_array(arrs[i]) && !json_is_null(arrs[i]))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s must be an array", names[i]);
    size_t nm = json_array_size(metrics), np = json_array_size(params), nt = json_array_size(tags);
    if (nm > TRK_MAX_BATCH_METRICS)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "a batch logged %zu metrics, which exceeds the limit of %d metrics per batch", nm,
                          TRK_MAX_BATCH_METRICS);
    if (np > TRK_MAX_BATCH_PARAMS)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "a batch logged %zu params, which exceeds the limit of %d params per batch", np,
                          TRK_MAX_BATCH_PARAMS);
    if (nt > TRK_MAX_BATCH_TAGS)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "a batch logged %zu tags, which exceeds the limit of %d tags per batch",
                          nt, TRK_MAX_BATCH_TAGS);
    if (nm + np + nt > TRK_MAX_BATCH_ENTITIES)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "a batch logged %zu metrics, params and tags in all, which exceeds the limit of %d per batch",
                          nm + np + nt, TRK_MAX_BATCH_ENTITIES);
    if (nm) {
        if (!(b->metrics = calloc(nm, sizeof *b->metrics)))
            return oom(err);
        b->nmetrics = nm;
        size_t i;
        json_t *e;
        json_array_foreach(metrics, i, e) {
            trk_metric *m = &b->metrics[i];
            char what[48];
            if (!json_is_object(e))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "metrics[%zu] must be an object {key, value, timestamp, step}", i);
            m->key = json_string_value(json_object_get(e, "key"));
            if (key_check("metric", m->key, err) < 0)
                return err->code;
            const json_t *v = json_object_get(e, "value");
            snprintf(what, sizeof what, "the value of metric '%.20s'", m->key);
            if (!v)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "metric '%.250s' needs a value", m->key);
            if (trk_metric_value(v, what, &m->value, &m->is_nan, err) < 0)
                return err->code;
            m->timestamp = now;
            m->step = 0;
            const json_t *ts = json_object_get(e, "timestamp"), *step = json_object_get(e, "step");
            snprintf(what, sizeof what, "metrics[%zu].timestamp", i);
            if (ts && !json_is_null(ts) && json_i64(ts, what, &m->timestamp, err) < 0)
                return err->code;
            snprintf(what, sizeof what, "metrics[%zu].step", i);
            if (step && !json_is_null(step) && json_i64(step, what, &m->step, err) < 0)
                return err->code;
        }
    }
    if (kv_parse(params, "param", TRK_MAX_PARAM_VALUE, &b->params, &b->nparams, err) < 0 ||
        kv_parse(tags, "tag", TRK_MAX_TAG_VALUE, &b->tags, &b->ntags, err) < 0)
        return err->code;
    /* MLflow refuses one batch that gives a key two different values */
    for (size_t i = 0; i < b->nparams; i++)
        for (size_t j = i + 1; j < b->nparams; j++)
            if (strcmp(b->params[i].key, b->params[j].key) == 0 && strcmp(b->params[i].value, b->params[j].value) != 0)
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "param '%.250s' is given two different values in one batch", b->params[i].key);
    return 0;
}

/* ---- experiments ------------------------------------------------------------------ */

static int name_check(const char *what, const char *name, qn_err *err)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > TRK_MAX_NAME)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s must have 1 to %d characters", what, TRK_MAX_NAME);
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s may not contain control characters", what);
    return 0;
}

static int set_experiment_tag(qn_conn *c, int64_t id, const char *key, const char *value, qn_err *err)
{
    if (key_check("experiment tag", key, err) < 0 || value_check("experiment tag", key, value, TRK_MAX_TAG_VALUE, err) < 0)
        return err->code;
    return sql_exec(c,
                    "INSERT INTO experiment_tags (experiment_id, key, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
                    err, "iss", id, key, value);
}

int trk_experiment_create(qn_conn *c, const char *name, const char *artifact_location, const json_t *tags,
                          int64_t now, int64_t *id, qn_err *err)
{
    int rc;
    if (name_check("experiment name", name, err) < 0)
        return err->code;
    if (artifact_location && strlen(artifact_location) > 2048)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "artifact_location has at most 2048 characters");
    if (tags && !json_is_array(tags) && !json_is_null(tags))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "tags must be an array of {key, value}");
    qn_stmt *st;
    rc = sql_first(c, "INSERT INTO experiments (name, artifact_location, created_at, updated_at) "
                   "VALUES (?, ?, ?, ?) RETURNING id",
                   &st, err, "ssii", name, artifact_location ? artifact_location : "", now, now);
    if (rc == QN_ALREADY_EXISTS)
        return experiment_exists(name, err);
    if (rc < 0)
        return rc;
    *id = qn_col_int64(st, 0);
    if (step_done(st, err) < 0)
        return err->code;
    if (!artifact_location || !*artifact_location) {
        char loc[64];
        snprintf(loc, sizeof loc, "mlflow-artifacts:/%lld", (long long)*id);
        if ((rc = sql_exec(c, "UPDATE experiments SET artifact_location = ? WHERE id = ?", err, "si", loc, *id)) < 0)
            return rc;
    }
    size_t i;
    json_t *t;
    json_array_foreach(tags, i, t) {
        if ((rc = set_experiment_tag(c, *id, json_string_value(json_object_get(t, "key")),
                                     json_string_value(json_object_get(t, "value")), err)) < 0)
            return rc;
    }
    return 0;
}

#define EXP_COLS "id, name, artifact_location, lifecycle_stage, created_at, updated_at"

static json_t *experiment_json(qn_conn *c, qn_stmt *st, qn_err *err)
{
    char id[24];
    int64_t eid = qn_col_int64(st, 0);
    snprintf(id, sizeof id, "%lld", (long long)eid);
    json_t *e = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "experiment_id", id, "name", qn_col_text(st, 1),
                          "artifact_location", qn_col_text(st, 2), "lifecycle_stage", qn_col_text(st, 3),
                          "creation_time", (json_int_t)qn_col_int64(st, 4), "last_update_time",
                          (json_int_t)qn_col_int64(st, 5));
    json_t *tags =
        rows_list(c, "SELECT key, value FROM experiment_tags WHERE experiment_id = ? ORDER BY key", eid, kv_json, err);
    if (!e || !tags) {
        json_decref(e);
        json_decref(tags);
        if (!err->code)
            oom(err);
        return NULL;
    }
    json_object_set_new(e, "tags", tags);
    return e;
}

static int experiment_one(qn_conn *c, const char *sql, int64_t id, const char *name, const char *shown,
                          json_t **out, qn_err *err)
{
    qn_stmt *st = name ? sql_prepare(c, sql, err, "s", name) : sql_prepare(c, sql, err, "i", id);
    if (!st)
        return err->code;
    int rc = reg_db_one(c, st, experiment_json, out, err);
    if (rc == 0)
        return name ? qn_err_set(err, QN_NOT_FOUND, "could not find experiment with name '%.500s'", name)
                    : experiment_missing(shown, err);
    return rc < 0 ? rc : 0;
}

int trk_experiment_get(qn_conn *c, const char *id_text, json_t **out, qn_err *err)
{
    int64_t id = parse_id(id_text);
    if (id < 0)
        return experiment_missing(id_text, err);
    return experiment_one(c, "SELECT " EXP_COLS " FROM experiments WHERE id = ?", id, NULL, id_text, out, err);
}

int trk_experiment_by_name(qn_conn *c, const char *name, json_t **out, qn_err *err)
{
    if (name_check("experiment_name", name, err) < 0)
        return err->code;
    return experiment_one(c, "SELECT " EXP_COLS " FROM experiments WHERE name = ?", 0, name, NULL, out, err);
}

int trk_experiments_order(const char *const *clauses, size_t n, char *buf, size_t size, qn_err *err)
{
    static const struct {
        const char *field, *col;
    } fields[] = {{"experiment_id", "e.id"},
                  {"name", "e.name"},
                  {"creation_time", "e.created_at"},
                  {"last_update_time", "e.updated_at"}};
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        const char *s = clauses[i];
        while (*s == ' ')
            s++;
        size_t fl = strcspn(s, " ");
        const char *col = NULL;
        for (size_t k = 0; k < sizeof fields / sizeof fields[0]; k++)
            if (strlen(fields[k].field) == fl && strncmp(s, fields[k].field, fl) == 0)
                col = fields[k].col;
        if (!col)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "order_by[%zu] \"%.200s\": the field must be experiment_id, name, creation_time or "
                              "last_update_time", i, clauses[i]);
        const char *dir = s + fl;
        while (*dir == ' ')
            dir++;
        size_t dl = strcspn(dir, " ");
        const char *rest = dir + dl;
        while (*rest == ' ')
            rest++;
        int desc = dl == 4 && strncasecmp(dir, "DESC", 4) == 0;
        if ((dl && !desc && !(dl == 3 && strncasecmp(dir, "ASC", 3) == 0)) || *rest)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "order_by[%zu] \"%.200s\": after the field only ASC or DESC may follow", i, clauses[i]);
        int w = snprintf(buf + len, size - len, "%s%s%s", len ? ", " : "", col, desc ? " DESC" : "");
        if (w < 0 || (size_t)w >= size - len)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "order_by has too many clauses");
        len += (size_t)w;
    }
    int w = snprintf(buf + len, size - len, "%se.id", len ? ", " : "");
    if (w < 0 || (size_t)w >= size - len)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "order_by has too many clauses");
    return 0;
}

/* q prepared with its values bound, into *st, once its limits are checked:
 * 0, or the query's error (trk_query_bind) or the store's. */
static int query_prepare(qn_conn *c, const trk_query *q, qn_stmt **st, qn_err *err)
{
    int rc = trk_query_bind(q, NULL, err);
    if (rc < 0)
        return rc;
    if (!(*st = qn_prepare(c, q->sql.data, err)) || trk_query_bind(q, *st, err) < 0)
        return err->code;
    return 0;
}

int trk_experiments_list(qn_conn *c, int pg, int view, const trk_filter *f, const char *order, int64_t after,
                         int64_t limit, json_t *list, int *more, qn_err *err)
{
    trk_query q;
    int rc;
    *more = 0;
    trk_query_init(&q, pg);
    trk_query_text(&q, "SELECT " EXP_COLS " FROM experiments e WHERE e.id > ");
    trk_query_int(&q, order ? -1 : after);
    if (view == 1)
        trk_query_text(&q, " AND e.lifecycle_stage = 'active'");
    else if (view == 2)
        trk_query_text(&q, " AND e.lifecycle_stage = 'deleted'");
    trk_query_where(&q, f);
    trk_query_text(&q, " ORDER BY ");
    trk_query_text(&q, order ? order : "e.id");
    trk_query_text(&q, " LIMIT ");
    trk_query_int(&q, limit + 1);
    if (order) {
        trk_query_text(&q, " OFFSET ");
        trk_query_int(&q, after);
    }
    qn_stmt *st;
    if ((rc = query_prepare(c, &q, &st, err)) < 0)
        goto out;
    int64_t n = 0;
    while ((rc = qn_step(st, err)) == 1) {
        if (n++ == limit) {
            *more = 1;
            continue;
        }
        json_t *e = experiment_json(c, st, err);
        if (!e) {
            rc = err->code;
            goto out;
        }
        json_array_append_new(list, e);
    }
out:
    trk_query_free(&q);
    return rc < 0 ? rc : 0;
}

/* The id of an existing experiment, from the client's text. */
static int experiment_key(qn_conn *c, const char *id_text, int64_t *id, int *deleted, qn_err *err)
{
    *id = parse_id(id_text);
    if (*id < 0)
        return experiment_missing(id_text, err);
    qn_stmt *st;
    int rc = sql_first(c, "SELECT lifecycle_stage FROM experiments WHERE id = ?", &st, err, "i", *id);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return experiment_missing(id_text, err);
    if (deleted)
        *deleted = strcmp(qn_col_text(st, 0), "active") != 0;
    return step_done(st, err) < 0 ? err->code : 0;
}

int trk_experiment_rename(qn_conn *c, const char *id_text, const char *new_name, qn_err *err)
{
    int64_t id;
    int rc;
    if (name_check("new_name", new_name, err) < 0 || (rc = experiment_key(c, id_text, &id, NULL, err)) < 0)
        return err->code;
    rc = sql_exec(c, "UPDATE experiments SET name = ?, updated_at = ? WHERE id = ?", err, "sii", new_name, qn_now_ms(),
                  id);
    return rc == QN_ALREADY_EXISTS ? experiment_exists(new_name, err) : rc;
}

int trk_experiment_set_stage(qn_conn *c, const char *id_text, int deleted, qn_err *err)
{
    int64_t id;
    int rc;
    if ((rc = experiment_key(c, id_text, &id, NULL, err)) < 0)
        return rc;
    const char *stage = deleted ? "deleted" : "active";
    if ((rc = sql_exec(c, "UPDATE experiments SET lifecycle_stage = ?, updated_at = ? WHERE id = ?", err, "sii", stage,
                       qn_now_ms(), id)) < 0)
        return rc;
    return sql_exec(c, "UPDATE runs SET lifecycle_stage = ? WHERE experiment_id = ?", err, "si", stage, id);
}

int trk_experiment_set_tag(qn_conn *c, const char *id_text, const char *key, const char *value, qn_err *err)
{
    int64_t id;
    int deleted = 0, rc;
    if ((rc = experiment_key(c, id_text, &id, &deleted, err)) < 0)
        return rc;
    if (deleted)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "experiment %.64s must be in the 'active' state", id_text);
    return set_experiment_tag(c, id, key, value, err);
}

/* ---- runs -------------------------------------------------------------------------- */

static const char *const statuses[] = {"RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED", NULL};

/* A readable name for a run nobody named, as MLflow makes ("bold-fox-123"). */
static void random_name(char out[64])
{
    static const char *const adj[] = {"amber", "bold", "brisk", "calm", "clever", "deft", "eager", "fleet",
                                      "gentle", "keen", "lucid", "merry", "nimble", "quiet", "rapid", "sunny"};
    static const char *const noun[] = {"badger", "crane", "falcon", "fox", "heron", "lynx", "marten", "otter",
                                       "owl", "panda", "raven", "seal", "shrew", "stoat", "swift", "wren"};
    unsigned char r[4];
    qn_random_bytes(r, sizeof r);
    snprintf(out, 64, "%s-%s-%u", adj[r[0] % 16], noun[r[1] % 16], (unsigned)(r[2] | (r[3] << 8)) % 1000);
}

static int upsert_tag(qn_conn *c, int64_t id, const char *key, const char *value, qn_err *err)
{
    return sql_exec(c,
                    "INSERT INTO run_tags (run_id, key, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
                    err, "iss", id, key, value);
}

int trk_run_create(qn_conn *c, const trk_run_in *in, json_t **out, qn_err *err)
{
    int64_t exp;
    int deleted = 0, rc;
    const char *eid = in->experiment_id && *in->experiment_id ? in->experiment_id : "0";
    trk_kv *tags = NULL;
    size_t ntags = 0;
    char name[TRK_MAX_NAME + 1], run_id[33], loc[2200];
    if ((rc = experiment_key(c, eid, &exp, &deleted, err)) < 0)
        return rc;
    if (deleted)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "experiment %.64s must be in the 'active' state to create runs",
                          eid);
    if (in->tags && !json_is_array(in->tags) && !json_is_null(in->tags))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "tags must be an array of {key, value}");
    if ((rc = kv_parse(in->tags, "tag", TRK_MAX_TAG_VALUE, &tags, &ntags, err)) < 0)
        goto out;
    if (in->name && *in->name) {
        snprintf(name, sizeof name, "%s", in->name);
    } else {
        name[0] = '\0';
        for (size_t i = 0; i < ntags; i++)
            if (strcmp(tags[i].key, "mlflow.runName") == 0)
                snprintf(name, sizeof name, "%s", tags[i].value);
        if (!name[0])
            random_name(name);
    }
    if ((rc = name_check("run_name", name, err)) < 0)
        goto out;
    unsigned char raw[16];
    qn_random_bytes(raw, sizeof raw);
    for (int i = 0; i < 16; i++)
        snprintf(run_id + 2 * i, 3, "%02x", raw[i]);
    qn_stmt *st;
    if ((rc = sql_first(c, "SELECT artifact_location FROM experiments WHERE id = ?", &st, err, "i", exp)) < 0)
        goto out;
    snprintf(loc, sizeof loc, "%s/%s/artifacts", rc == 1 ? qn_col_text(st, 0) : "", run_id);
    if ((rc = step_done(st, err)) < 0)
        goto out;
    if ((rc = sql_first(c,
                        "INSERT INTO runs (run_uuid, experiment_id, name, user_id, status, start_time, artifact_uri) "
                        "VALUES (?, ?, ?, ?, 'RUNNING', ?, ?) RETURNING id",
                        &st, err, "sissis", run_id, exp, name, in->user_id ? in->user_id : "",
                        in->start_time > 0 ? in->start_time : qn_now_ms(), loc)) < 0)
        goto out;
    int64_t id = qn_col_int64(st, 0);
    if ((rc = step_done(st, err)) < 0)
        goto out;
    for (size_t i = 0; i < ntags; i++)
        if ((rc = upsert_tag(c, id, tags[i].key, tags[i].value, err)) < 0)
            goto out;
    if ((rc = upsert_tag(c, id, "mlflow.runName", name, err)) < 0)
        goto out;
    if (in->user_id && *in->user_id && (rc = upsert_tag(c, id, "mlflow.user", in->user_id, err)) < 0)
        goto out;
    rc = trk_run_get(c, run_id, out, err);
out:
    free(tags);
    return rc;
}

#define RUN_COLS "r.id, r.run_uuid, r.name, r.experiment_id, r.user_id, r.status, r.start_time, r.end_time, " \
                 "r.artifact_uri, r.lifecycle_stage"

static json_t *run_info_json(qn_stmt *st)
{
    char exp[24];
    snprintf(exp, sizeof exp, "%lld", (long long)qn_col_int64(st, 3));
    json_t *info = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s}", "run_id", qn_col_text(st, 1),
                             "run_uuid", qn_col_text(st, 1), "run_name", qn_col_text(st, 2), "experiment_id", exp,
                             "user_id", qn_col_text(st, 4), "status", qn_col_text(st, 5), "start_time",
                             (json_int_t)qn_col_int64(st, 6), "artifact_uri", qn_col_text(st, 8), "lifecycle_stage",
                             qn_col_text(st, 9));
    if (info && !qn_col_is_null(st, 7))
        json_object_set_new(info, "end_time", json_integer(qn_col_int64(st, 7)));
    return info;
}

/* The data, inputs and outputs of run id, added to run. */
static int run_children(qn_conn *c, int64_t id, json_t *run, qn_err *err)
{
    json_t *params = NULL, *tags = NULL, *metrics = NULL, *inputs = NULL, *outputs = NULL;
    if (!(params = rows_list(c, "SELECT key, value FROM params WHERE run_id = ? ORDER BY key", id, kv_json, err)) ||
        !(tags = rows_list(c, "SELECT key, value FROM run_tags WHERE run_id = ? ORDER BY key", id, kv_json, err)) ||
        !(metrics = rows_list(c,
                              "SELECT key, value, is_nan, timestamp, step FROM latest_metrics WHERE run_id = ? "
                              "ORDER BY key",
                              id, metric_json, err)) ||
        !(inputs = rows_list(c,
                             "SELECT name, digest, source_type, source, schema, profile, tags FROM run_inputs "
                             "WHERE run_id = ? ORDER BY name, digest",
                             id, input_json, err)) ||
        !(outputs = rows_list(c, "SELECT model_id, step FROM run_outputs WHERE run_id = ? ORDER BY model_id", id,
                              output_json, err))) {
        json_decref(params);
        json_decref(tags);
        json_decref(metrics);
        json_decref(inputs);
        return err->code ? err->code : oom(err);
    }
    json_object_set_new(run, "data", json_pack("{s:o, s:o, s:o}", "metrics", metrics, "params", params, "tags", tags));
    json_object_set_new(run, "inputs", json_pack("{s:o}", "dataset_inputs", inputs));
    json_object_set_new(run, "outputs", json_pack("{s:o}", "model_outputs", outputs));
    return 0;
}

/* A whole run from a RUN_COLS row. */
static json_t *run_json(qn_conn *c, qn_stmt *st, qn_err *err)
{
    int64_t id = qn_col_int64(st, 0);
    json_t *run = json_pack("{s:o}", "info", run_info_json(st));
    if (!run) {
        oom(err);
        return NULL;
    }
    if (run_children(c, id, run, err) < 0) {
        json_decref(run);
        return NULL;
    }
    return run;
}

/* A run's info alone from a RUN_COLS row, as reg_db_one takes it. */
static json_t *run_info_row(qn_conn *c, qn_stmt *st, qn_err *err)
{
    (void)c;
    json_t *info = run_info_json(st);
    if (!info)
        oom(err);
    return info;
}

static int run_row(qn_conn *c, const char *run_id, json_t **out, int info_only, qn_err *err)
{
    qn_stmt *st = sql_prepare(c, "SELECT " RUN_COLS " FROM runs r WHERE r.run_uuid = ?", err, "s", run_id);
    if (!st)
        return err->code;
    int rc = reg_db_one(c, st, info_only ? run_info_row : run_json, out, err);
    if (rc == 0)
        return run_missing(run_id, err);
    return rc < 0 ? rc : 0;
}

int trk_run_get(qn_conn *c, const char *run_id, json_t **out, qn_err *err)
{
    return run_row(c, run_id, out, 0, err);
}

int trk_run_update(qn_conn *c, const char *run_id, const char *status, int64_t end_time, const char *name,
                   json_t **info, qn_err *err)
{
    int64_t id;
    int rc;
    if (status) {
        int ok = 0;
        for (int i = 0; statuses[i]; i++)
            ok |= strcmp(status, statuses[i]) == 0;
        if (!ok)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "status '%.40s' is not one of RUNNING, SCHEDULED, FINISHED, FAILED, KILLED", status);
    }
    if (name && *name && name_check("run_name", name, err) < 0)
        return err->code;
    if ((rc = active_run(c, run_id, &id, err)) < 0)
        return rc;
    if ((rc = sql_exec(c,
                       "UPDATE runs SET status = COALESCE(?, status), end_time = CASE WHEN CAST(? AS BIGINT) >= 0 "
                       "THEN CAST(? AS BIGINT) ELSE end_time END, name = COALESCE(?, name) WHERE id = ?",
                       err, "siisi", status, end_time, end_time, name && *name ? name : NULL, id)) < 0)
        return rc;
    if (name && *name && (rc = upsert_tag(c, id, "mlflow.runName", name, err)) < 0)
        return rc;
    return info ? run_row(c, run_id, info, 1, err) : 0;
}

int trk_run_set_stage(qn_conn *c, const char *run_id, int deleted, qn_err *err)
{
    int64_t id;
    int rc;
    if ((rc = run_key(c, run_id, &id, NULL, NULL, err)) < 0)
        return rc;
    return sql_exec(c, "UPDATE runs SET lifecycle_stage = ? WHERE id = ?", err, "si", deleted ? "deleted" : "active",
                    id);
}

/* ---- logging ------------------------------------------------------------------------ */

static int log_param(qn_conn *c, int64_t id, const char *run_id, const trk_kv *p, qn_err *err)
{
    int rc = sql_exec(c,
                      "INSERT INTO params (run_id, key, value) VALUES (?, ?, ?) "
                      "ON CONFLICT (run_id, key) DO NOTHING",
                      err, "iss", id, p->key, p->value);
    if (rc < 0 || qn_changes(c) == 1)
        return rc;
    qn_stmt *st;
    if ((rc = sql_first(c, "SELECT value FROM params WHERE run_id = ? AND key = ?", &st, err, "is", id, p->key)) < 0)
        return rc;
    if (rc == 1 && strcmp(qn_col_text(st, 0), p->value) != 0)
        rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                        "changing param values is not allowed: param '%.250s' was already logged with value '%.200s' "
                        "for run %s; attempted logging new value '%.200s'",
                        p->key, qn_col_text(st, 0), run_id, p->value);
    else
        rc = 0;
    if (step_done(st, err) < 0)
        return err->code;
    return rc;
}

/* Appends metrics as multi-row INSERTs of 100, 10 and 1 rows (three
 * statement texts in the connection's cache, not one per batch size). */
static int insert_metrics(qn_conn *c, int64_t id, const trk_metric *m, size_t n, qn_err *err)
{
    char sql[4096];
    for (size_t i = 0; i < n;) {
        size_t rows = n - i >= 100 ? 100 : n - i >= 10 ? 10 : 1;
        int len = snprintf(sql, sizeof sql, "INSERT INTO metrics (run_id, key, value, is_nan, step, timestamp) VALUES ");
        for (size_t r = 0; r < rows; r++)
            len += snprintf(sql + len, sizeof sql - (size_t)len, "%s(?, ?, ?, ?, ?, ?)", r ? ", " : "");
        qn_stmt *st = qn_prepare(c, sql, err);
        if (!st)
            return err->code;
        for (size_t r = 0; r < rows; r++) {
            const trk_metric *x = &m[i + r];
            int b = (int)r * 6;
            qn_bind_int64(st, b + 1, id);
            qn_bind_text(st, b + 2, x->key, -1);
            qn_bind_double(st, b + 3, x->value);
            qn_bind_int64(st, b + 4, x->is_nan);
            qn_bind_int64(st, b + 5, x->step);
            qn_bind_int64(st, b + 6, x->timestamp);
        }
        int rc = qn_step(st, err);
        if (rc < 0)
            return rc;
        i += rows;
    }
    return 0;
}

/* 1 when a is later than b as MLflow picks the latest: by step, then
 * timestamp, then the larger value. */
static int metric_later(const trk_metric *a, const trk_metric *b)
{
    if (a->step != b->step)
        return a->step > b->step;
    if (a->timestamp != b->timestamp)
        return a->timestamp > b->timestamp;
    return a->value > b->value;
}

/* Moves latest_metrics forward to m where m is later than what it holds. */
static int upsert_latest(qn_conn *c, int64_t id, const trk_metric *m, qn_err *err)
{
    return sql_exec(c,
                    "INSERT INTO latest_metrics (run_id, key, value, is_nan, step, timestamp) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, is_nan = excluded.is_nan, "
                    "step = excluded.step, timestamp = excluded.timestamp "
                    "WHERE excluded.step > latest_metrics.step OR (excluded.step = latest_metrics.step AND "
                    "(excluded.timestamp > latest_metrics.timestamp OR (excluded.timestamp = latest_metrics.timestamp "
                    "AND excluded.value > latest_metrics.value)))",
                    err, "isdiii", id, m->key, m->value, (int64_t)m->is_nan, m->step, m->timestamp);
}

/* The batch's metrics: all appended, then one latest_metrics upsert per
 * distinct key with the batch's own latest for it. */
static int log_metrics(qn_conn *c, int64_t id, const trk_metric *m, size_t n, qn_err *err)
{
    int rc = insert_metrics(c, id, m, n, err);
    if (rc < 0 || n == 0)
        return rc;
    size_t *best = malloc(n * sizeof *best), nbest = 0;
    if (!best)
        return oom(err);
    for (size_t i = 0; i < n; i++) {
        size_t k = nbest;
        for (size_t j = nbest; j-- > 0;) /* batches repeat few keys: a short scan */
            if (strcmp(m[best[j]].key, m[i].key) == 0) {
                k = j;
                break;
            }
        if (k == nbest)
            best[nbest++] = i;
        else if (metric_later(&m[i], &m[best[k]]))
            best[k] = i;
    }
    for (size_t j = 0; j < nbest && rc >= 0; j++)
        rc = upsert_latest(c, id, &m[best[j]], err);
    free(best);
    return rc < 0 ? rc : 0;
}

int trk_log_batch(qn_conn *c, const char *run_id, const trk_batch *b, qn_err *err)
{
    int64_t id;
    int rc;
    if ((rc = active_run(c, run_id, &id, err)) < 0)
        return rc;
    for (size_t i = 0; i < b->nparams; i++)
        if ((rc = log_param(c, id, run_id, &b->params[i], err)) < 0)
            return rc;
    for (size_t i = 0; i < b->ntags; i++) {
        if ((rc = upsert_tag(c, id, b->tags[i].key, b->tags[i].value, err)) < 0)
            return rc;
        if (strcmp(b->tags[i].key, "mlflow.runName") == 0 &&
            (rc = sql_exec(c, "UPDATE runs SET name = ? WHERE id = ?", err, "si", b->tags[i].value, id)) < 0)
            return rc;
    }
    return log_metrics(c, id, b->metrics, b->nmetrics, err);
}

int trk_tag_delete(qn_conn *c, const char *run_id, const char *key, qn_err *err)
{
    int64_t id;
    int rc;
    if ((rc = active_run(c, run_id, &id, err)) < 0)
        return rc;
    if ((rc = sql_exec(c, "DELETE FROM run_tags WHERE run_id = ? AND key = ?", err, "is", id, key)) < 0)
        return rc;
    if (qn_changes(c) == 0)
        return qn_err_set(err, QN_NOT_FOUND, "no tag with name '%.250s' in run %s", key, run_id);
    return 0;
}

int trk_metric_history(qn_conn *c, const char *run_id, const char *key, int64_t offset, int64_t limit,
                       json_t *list, int *more, qn_err *err)
{
    int64_t id;
    int rc;
    *more = 0;
    if ((rc = run_key(c, run_id, &id, NULL, NULL, err)) < 0)
        return rc;
    qn_stmt *st = sql_prepare(c,
                              "SELECT key, value, is_nan, timestamp, step FROM metrics WHERE run_id = ? AND key = ? "
                              "ORDER BY step, timestamp, id LIMIT ? OFFSET ?",
                              err, "isii", id, key, limit + 1, offset);
    if (!st)
        return err->code;
    int64_t n = 0;
    while ((rc = qn_step(st, err)) == 1) {
        if (n++ == limit) {
            *more = 1;
            continue;
        }
        json_array_append_new(list, metric_json(st, 0));
    }
    return rc < 0 ? rc : 0;
}

static int insert_input(qn_conn *c, int64_t id, const char *name, const char *digest, const char *source_type,
                        const char *source, const char *schema, const char *profile, const char *tags,
                        int64_t dataset_version, qn_err *err)
{
    qn_stmt *st = qn_prepare(c,
                             "INSERT INTO run_inputs (run_id, name, digest, source_type, source, schema, profile, tags, "
                             "dataset_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                             "ON CONFLICT (run_id, name, digest) DO NOTHING",
                             err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, id);
    qn_bind_text(st, 2, name, -1);
    qn_bind_text(st, 3, digest, -1);
    qn_bind_text(st, 4, source_type ? source_type : "", -1);
    qn_bind_text(st, 5, source ? source : "", -1);
    schema ? qn_bind_text(st, 6, schema, -1) : qn_bind_null(st, 6);
    profile ? qn_bind_text(st, 7, profile, -1) : qn_bind_null(st, 7);
    qn_bind_text(st, 8, tags ? tags : "[]", -1);
    dataset_version > 0 ? qn_bind_int64(st, 9, dataset_version) : qn_bind_null(st, 9);
    return qn_step(st, err);
}

int trk_log_inputs(qn_conn *c, const char *run_id, const json_t *datasets, qn_err *err)
{
    int64_t id;
    int rc;
    if (datasets && !json_is_array(datasets) && !json_is_null(datasets))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "datasets must be an array of {tags, dataset}");
    if (json_array_size(datasets) > 1000)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "at most 1000 datasets per call");
    if ((rc = active_run(c, run_id, &id, err)) < 0)
        return rc;
    size_t i;
    json_t *in;
    json_array_foreach(datasets, i, in) {
        json_t *ds = json_object_get(in, "dataset"), *tags = json_object_get(in, "tags");
        const char *f[6];
        static const char *const names[] = {"name", "digest", "source_type", "source", "schema", "profile"};
        static const size_t max[] = {500, 36, 36, 65535, 1048575, 16777215};
        if (!json_is_object(ds))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "datasets[%zu].dataset must be an object", i);
        for (int k = 0; k < 6; k++) {
            json_t *v = json_object_get(ds, names[k]);
            f[k] = json_string_value(v);
            if ((v && !json_is_string(v)) || (k < 4 && (!f[k] || (k < 2 && !*f[k]))))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "datasets[%zu].dataset.%s must be a%s string", i, names[k],
                                  k < 2 ? " non-empty" : "");
            if (f[k] && strlen(f[k]) > max[k])
                return qn_err_set(err, QN_INVALID_ARGUMENT, "datasets[%zu].dataset.%s has more than %zu characters", i,
                                  names[k], max[k]);
        }
        if (tags && !json_is_array(tags) && !json_is_null(tags))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "datasets[%zu].tags must be an array of {key, value}", i);
        char *tags_text = qn_json_canonical(tags && json_is_array(tags) ? tags : json_array());
        if (!tags_text)
            return oom(err);
        rc = insert_input(c, id, f[0], f[1], f[2], f[3], f[4], f[5], tags_text, 0, err);
        free(tags_text);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int trk_log_dataset_version(qn_conn *c, const char *run_id, const char *dataset, int64_t version, qn_err *err)
{
    int64_t id;
    int rc;
    if ((rc = active_run(c, run_id, &id, err)) < 0)
        return rc;
    qn_stmt *st;
    rc = sql_first(c,
                   "SELECT v.manifest_digest FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id "
                   "WHERE d.name = ? AND v.version = ?",
                   &st, err, "si", dataset, version);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return qn_err_set(err, QN_NOT_FOUND, "dataset \"%.128s\" has no version %lld", dataset, (long long)version);
    char digest[80], source[200];
    snprintf(digest, sizeof digest, "%s", qn_col_text(st, 0));
    if (step_done(st, err) < 0)
        return err->code;
    snprintf(source, sizeof source, "quern:datasets/%s/versions/%lld", dataset, (long long)version);
    return insert_input(c, id, dataset, digest, "quern", source, NULL, NULL, "[]", version, err);
}

static int insert_output(qn_conn *c, int64_t id, const char *model_id, int64_t step, const char *model,
                         int64_t version, qn_err *err)
{
    qn_stmt *st = qn_prepare(c,
                             "INSERT INTO run_outputs (run_id, model_id, step, model_name, version) VALUES (?, ?, ?, ?, ?) "
                             "ON CONFLICT (run_id, model_id) DO UPDATE SET step = excluded.step",
                             err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, id);
    qn_bind_text(st, 2, model_id, -1);
    qn_bind_int64(st, 3, step);
    model ? qn_bind_text(st, 4, model, -1) : qn_bind_null(st, 4);
    model ? qn_bind_int64(st, 5, version) : qn_bind_null(st, 5);
    return qn_step(st, err);
}

int trk_log_outputs(qn_conn *c, const char *run_id, const json_t *models, qn_err *err)
{
    int64_t id;
    int rc;
    if (models && !json_is_array(models) && !json_is_null(models))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "models must be an array of {model_id, step}");
    if ((rc = active_run(c, run_id, &id, err)) < 0)
        return rc;
    size_t i;
    json_t *m;
    json_array_foreach(models, i, m) {
        const char *mid = json_string_value(json_object_get(m, "model_id"));
        int64_t step = 0;
        json_t *s = json_object_get(m, "step");
        char what[40];
        snprintf(what, sizeof what, "models[%zu].step", i);
        if (!mid || !*mid || strlen(mid) > 256)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "models[%zu].model_id must be a string of 1 to 256 characters", i);
        if (s && !json_is_null(s) && json_i64(s, what, &step, err) < 0)
            return err->code;
        if ((rc = insert_output(c, id, mid, step, NULL, 0, err)) < 0)
            return rc;
    }
    return 0;
}

int trk_link_version(qn_conn *c, const char *run_id, const char *model, int64_t version, qn_err *err)
{
    int64_t id;
    int rc;
    if ((rc = run_key(c, run_id, &id, NULL, NULL, err)) < 0)
        return rc;
    char mid[200];
    snprintf(mid, sizeof mid, "models:/%s/%lld", model, (long long)version);
    return insert_output(c, id, mid, 0, model, version, err);
}

/* ---- search and lineage ---------------------------------------------------------------- */

/* The data, inputs and outputs of a page of runs (runs[i] has "info" and
 * belongs to ids[i]) in five queries per 100 runs instead of five per run.
 * The IN list always has 100 slots (unused ones bound to -1) so one
 * statement text serves every page. */
#define FILL_CHUNK 100
static int fill_children(qn_conn *c, const int64_t *ids, json_t *const *runs, size_t n, qn_err *err)
{
    static const char *const sql[][2] = {
        {"SELECT run_id, key, value FROM params WHERE run_id IN (", ") ORDER BY run_id, key"},
        {"SELECT run_id, key, value FROM run_tags WHERE run_id IN (", ") ORDER BY run_id, key"},
        {"SELECT run_id, key, value, is_nan, timestamp, step FROM latest_metrics WHERE run_id IN (",
         ") ORDER BY run_id, key"},
        {"SELECT run_id, name, digest, source_type, source, schema, profile, tags FROM run_inputs WHERE run_id IN (",
         ") ORDER BY run_id, name, digest"},
        {"SELECT run_id, model_id, step FROM run_outputs WHERE run_id IN (", ") ORDER BY run_id, model_id"},
    };
    char marks[FILL_CHUNK * 3], text[1024];
    size_t len = 0;
    for (int i = 0; i < FILL_CHUNK; i++)
        len += (size_t)snprintf(marks + len, sizeof marks - len, i ? ",?" : "?");
    for (size_t i = 0; i < n; i++) {
        json_t *data = json_pack("{s:[], s:[], s:[]}", "metrics", "params", "tags");
        json_t *inputs = json_pack("{s:[]}", "dataset_inputs"), *outputs = json_pack("{s:[]}", "model_outputs");
        if (!data || !inputs || !outputs) {
            json_decref(data);
            json_decref(inputs);
            json_decref(outputs);
            return oom(err);
        }
        json_object_set_new(runs[i], "data", data);
        json_object_set_new(runs[i], "inputs", inputs);
        json_object_set_new(runs[i], "outputs", outputs);
    }
    for (size_t base = 0; base < n; base += FILL_CHUNK) {
        size_t cnt = n - base < FILL_CHUNK ? n - base : FILL_CHUNK;
        for (int q = 0; q < 5; q++) {
            snprintf(text, sizeof text, "%s%s%s", sql[q][0], marks, sql[q][1]);
            qn_stmt *st = qn_prepare(c, text, err);
            if (!st)
                return err->code;
            for (size_t i = 0; i < FILL_CHUNK; i++)
                qn_bind_int64(st, (int)i + 1, i < cnt ? ids[base + i] : -1);
            int rc;
            size_t at = 0; /* rows come by run_id; find each run's slot once */
            while ((rc = qn_step(st, err)) == 1) {
                int64_t rid = qn_col_int64(st, 0);
                size_t k;
                for (k = 0; k < cnt && ids[base + (at + k) % cnt] != rid; k++)
                    ;
                if (k == cnt)
                    continue;
                at = (at + k) % cnt;
                json_t *run = runs[base + at], *item = NULL, *into = NULL;
                if (q < 2) {
                    item = kv_json(st, 1);
                    into = json_object_get(json_object_get(run, "data"), q ? "tags" : "params");
                } else if (q == 2) {
                    item = metric_json(st, 1);
                    into = json_object_get(json_object_get(run, "data"), "metrics");
                } else if (q == 3) {
                    item = input_json(st, 1);
                    into = json_object_get(json_object_get(run, "inputs"), "dataset_inputs");
                } else {
                    item = output_json(st, 1);
                    into = json_object_get(json_object_get(run, "outputs"), "model_outputs");
                }
                if (!item || json_array_append_new(into, item) < 0)
                    return oom(err);
            }
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

int trk_runs_search(qn_conn *c, int pg, const trk_search *s, json_t *runs, int *more, qn_err *err)
{
    trk_query q;
    int rc;
    int64_t *ids = NULL, cap = 0;
    *more = 0;
    trk_query_init(&q, pg);
    trk_query_text(&q, "SELECT " RUN_COLS " FROM runs r");
    trk_query_order_joins(&q, s->order);
    trk_query_text(&q, " WHERE 1 = 1");
    if (s->nexperiments) {
        trk_query_text(&q, " AND r.experiment_id IN (");
        for (size_t i = 0; i < s->nexperiments; i++) {
            if (i)
                trk_query_text(&q, ", ");
            trk_query_int(&q, s->experiments[i]);
        }
        trk_query_text(&q, ")");
    }
    if (s->view == 1)
        trk_query_text(&q, " AND r.lifecycle_stage = 'active'");
    else if (s->view == 2)
        trk_query_text(&q, " AND r.lifecycle_stage = 'deleted'");
    trk_query_where(&q, s->filter);
    trk_query_order_by(&q, s->order);
    trk_query_text(&q, " LIMIT ");
    trk_query_int(&q, s->limit + 1);
    trk_query_text(&q, " OFFSET ");
    trk_query_int(&q, s->offset);
    qn_stmt *st;
    if ((rc = query_prepare(c, &q, &st, err)) < 0)
        goto out;
    int64_t n = 0;
    size_t first = json_array_size(runs);
    while ((rc = qn_step(st, err)) == 1) {
        if (n++ == s->limit) {
            *more = 1;
            continue;
        }
        if (n > cap) {
            size_t ncap = cap ? (size_t)cap * 2 : 128;
            int64_t *nids = realloc(ids, ncap * sizeof *ids);
            if (!nids) {
                rc = oom(err);
                goto out;
            }
            ids = nids;
            cap = (int64_t)ncap;
        }
        ids[n - 1] = qn_col_int64(st, 0);
        json_t *run = json_pack("{s:o}", "info", run_info_json(st));
        if (!run || json_array_append_new(runs, run) < 0) {
            rc = oom(err);
            goto out;
        }
    }
    if (rc >= 0) {
        size_t got = json_array_size(runs) - first;
        json_t **page = malloc((got ? got : 1) * sizeof *page);
        if (!page) {
            rc = oom(err);
            goto out;
        }
        for (size_t i = 0; i < got; i++)
            page[i] = json_array_get(runs, first + i);
        rc = fill_children(c, ids, page, got, err);
        free(page);
    }
out:
    free(ids);
    trk_query_free(&q);
    return rc < 0 ? rc : 0;
}

int trk_runs_of_dataset(qn_conn *c, const char *dataset, int64_t version, json_t **out, qn_err *err)
{
    qn_stmt *st = sql_prepare(c,
                              "SELECT " RUN_COLS " FROM runs r WHERE r.id IN (SELECT i.run_id FROM run_inputs i "
                              "WHERE i.name = ? AND (i.dataset_version = ? OR i.digest = (SELECT v.manifest_digest "
                              "FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id WHERE d.name = ? AND "
                              "v.version = ?))) ORDER BY r.start_time DESC, r.id DESC LIMIT 1000",
                              err, "sisi", dataset, version, dataset, version);
    if (!st)
        return err->code;
    json_t *list = json_array();
    int rc;
    while ((rc = qn_step(st, err)) == 1)
        json_array_append_new(list, run_info_json(st));
    if (rc < 0) {
        json_decref(list);
        return rc;
    }
    *out = list;
    return 0;
}

int trk_versions_of_run(qn_conn *c, const char *run_id, json_t **out, qn_err *err)
{
    int64_t id;
    int rc;
    if ((rc = run_key(c, run_id, &id, NULL, NULL, err)) < 0)
        return rc;
    qn_stmt *st = sql_prepare(c,
                              "SELECT model_id, step, model_name, version FROM run_outputs WHERE run_id = ? "
                              "ORDER BY model_name, version, model_id",
                              err, "i", id);
    if (!st)
        return err->code;
    json_t *versions = json_array(), *logged = json_array();
    while ((rc = qn_step(st, err)) == 1) {
        if (qn_col_is_null(st, 2))
            json_array_append_new(logged, output_json(st, 0));
        else
            json_array_append_new(versions, json_pack("{s:s, s:I}", "model", qn_col_text(st, 2), "version",
                                                      (json_int_t)qn_col_int64(st, 3)));
    }
    if (rc < 0) {
        json_decref(versions);
        json_decref(logged);
        return rc;
    }
    *out = json_pack("{s:s, s:o, s:o}", "run_id", run_id, "versions", versions, "logged_models", logged);
    return 0;
}

int trk_run_of_version(qn_conn *c, const char *model, int64_t version, char **run_id, qn_err *err)
{
    *run_id = NULL;
    qn_stmt *st;
    int rc = sql_first(c,
                       "SELECT r.run_uuid FROM run_outputs o JOIN runs r ON r.id = o.run_id "
                       "WHERE o.model_name = ? AND o.version = ? ORDER BY r.start_time DESC, r.id DESC LIMIT 1",
                       &st, err, "si", model, version);
    if (rc == 1) {
        if (!(*run_id = strdup(qn_col_text(st, 0))))
            return oom(err);
        rc = step_done(st, err);
    }
    return rc < 0 ? rc : 0;
}
