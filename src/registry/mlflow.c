/*
 * mlflow.c - MLflow's tracking REST API (mlflow/protos/service.proto) over
 * the registry's tracking store: experiments, runs, params, tags, metrics,
 * search, dataset inputs and model outputs, with MLflow's error shape.
 *
 * Field names, defaults and limits are the proto's: search max_results
 * defaults to 1000 and is at most 50000, run_view_type ACTIVE_ONLY, a
 * metric's step 0 and timestamp now. Integers are accepted as numbers or
 * as their decimal text (protobuf's JSON mapping allows both). Page tokens
 * are opaque (qn_page_token_encode of an offset or the last id).
 */
#include "registry/mlflow.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/json.h"
#include "core/log.h"
#include "core/validate.h"
#include "registry/registry.h"
#include "registry/tracking.h"

/* ---- the error shape and parameters --------------------------------------------------- */

const char *mlf_error_code(int code)
{
    switch (code) {
    case QN_NOT_FOUND:
        return "RESOURCE_DOES_NOT_EXIST";
    case QN_ALREADY_EXISTS:
        return "RESOURCE_ALREADY_EXISTS";
    case QN_INVALID_ARGUMENT:
    case QN_FAILED_PRECONDITION:
    case QN_OUT_OF_RANGE:
        return "INVALID_PARAMETER_VALUE";
    case QN_PERMISSION_DENIED:
        return "PERMISSION_DENIED";
    case QN_UNAUTHENTICATED:
        return "UNAUTHENTICATED";
    case QN_UNAVAILABLE:
        return "TEMPORARILY_UNAVAILABLE";
    case QN_RESOURCE_EXHAUSTED:
        return "RESOURCE_EXHAUSTED";
    case QN_UNIMPLEMENTED:
        return "ENDPOINT_NOT_FOUND";
    default:
        return "INTERNAL_ERROR";
    }
}

int mlf_status(int code)
{
    switch (code) {
    case QN_NOT_FOUND:
        return 404;
    case QN_ALREADY_EXISTS:
    case QN_INVALID_ARGUMENT:
    case QN_FAILED_PRECONDITION:
    case QN_OUT_OF_RANGE:
        return 400;
    case QN_PERMISSION_DENIED:
        return 403;
    case QN_UNAUTHENTICATED:
        return 401;
    case QN_UNAVAILABLE:
        return 503;
    case QN_RESOURCE_EXHAUSTED:
        return 429;
    case QN_UNIMPLEMENTED:
        return 404;
    default:
        return 500;
    }
}

int mlf_error(qn_res *res, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *body = json_pack("{s:s, s:s}", "error_code", mlf_error_code(code), "message", msg);
    char *text = body ? qn_json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text)
        return qn_res_text(res, 500, "application/json", "{\"error_code\":\"INTERNAL_ERROR\",\"message\":\"out of memory\"}", 58);
    qn_res_text(res, mlf_status(code), "application/json", text, strlen(text));
    free(text);
    return 0;
}

int mlf_fail(qn_req *req, qn_res *res, const qn_err *err)
{
    if (qn_code_is_client(err->code))
        return mlf_error(res, err->code, "%s", err->msg);
    qn_log_error(qn_req_trace_id(req), "storage failure", "{s:s, s:s, s:s}", "route", qn_req_route(req), "code",
                 qn_code_name(err->code), "detail", err->msg);
    if (err->code == QN_UNAVAILABLE)
        return mlf_error(res, QN_UNAVAILABLE, "the registry is busy; retry shortly");
    return mlf_error(res, QN_INTERNAL, "internal error");
}

int mlf_answer(qn_store *db, qn_req *req, qn_res *res, qn_conn *c, int rc, qn_err *err, json_t *out)
{
    if (reg_db_end(db, c, rc, err) < 0) {
        json_decref(out);
        return mlf_fail(req, res, err);
    }
    return qn_res_json(res, 200, out ? out : json_object());
}

static void body_free(void *p)
{
    json_decref(p);
}

int mlf_begin(qn_req *req, qn_res *res, json_t **body)
{
    size_t len = 0;
    const char *text = qn_req_body(req, &len);
    *body = NULL;
    if (!text || len == 0)
        return 0;
    json_error_t je;
    json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!v) {
        mlf_error(res, qn_json_load_code(&je), "the request body is not valid JSON: %s (line %d, column %d)", je.text,
                  je.line, je.column);
        return -1;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        mlf_error(res, QN_INVALID_ARGUMENT, "the request body must be a JSON object");
        return -1;
    }
    qn_req_set_state(req, v, body_free);
    *body = v;
    return 0;
}

const char *mlf_param(qn_req *req, const json_t *body, const char *key)
{
    if (body)
        return json_string_value(json_object_get(body, key));
    return qn_req_query(req, key);
}

int mlf_required(qn_req *req, qn_res *res, const json_t *body, const char *key, const char **out)
{
    *out = mlf_param(req, body, key);
    if (body && json_object_get(body, key) && !json_is_string(json_object_get(body, key))) {
        mlf_error(res, QN_INVALID_ARGUMENT, "parameter '%s' must be a string", key);
        return -1;
    }
    if (!*out || !**out) {
        mlf_error(res, QN_INVALID_ARGUMENT,
                  "Missing value for required parameter '%s'. See the API docs for more information about request "
                  "parameters.",
                  key);
        return -1;
    }
    return 0;
}

/* run_id, or the deprecated run_uuid that older clients still send. */
static int run_id_param(qn_req *req, qn_res *res, const json_t *body, const char **out)
{
    const char *id = mlf_param(req, body, "run_id");
    if (id && *id) {
        *out = id;
        return 0;
    }
    const char *uuid = mlf_param(req, body, "run_uuid");
    if (uuid && *uuid) {
        *out = uuid;
        return 0;
    }
    return mlf_required(req, res, body, "run_id", out);
}

/* An optional integer field of the body (number or decimal text) or of the
 * query string. 0 when absent (def kept), -1 when answered. */
static int int_param(qn_req *req, qn_res *res, const json_t *body, const char *key, int64_t min, int64_t max,
                     int64_t *out)
{
    const json_t *v = body ? json_object_get(body, key) : NULL;
    const char *s = body ? NULL : qn_req_query(req, key);
    long long x;
    if (v && json_is_integer(v))
        x = json_integer_value(v);
    else if ((v && json_is_string(v)) || s) {
        const char *t = s ? s : json_string_value(v);
        char *end;
        errno = 0;
        x = strtoll(t, &end, 10);
        if (errno || end == t || *end) {
            mlf_error(res, QN_INVALID_ARGUMENT, "parameter '%s' must be an integer, not '%.40s'", key, t);
            return -1;
        }
    } else if (v && !json_is_null(v)) {
        mlf_error(res, QN_INVALID_ARGUMENT, "parameter '%s' must be an integer", key);
        return -1;
    } else {
        return 0;
    }
    if (x < min || x > max) {
        mlf_error(res, QN_INVALID_ARGUMENT, "parameter '%s' must be between %lld and %lld; got %lld", key,
                  (long long)min, (long long)max, x);
        return -1;
    }
    *out = x;
    return 0;
}

/* ViewType: ACTIVE_ONLY (1, the default), DELETED_ONLY (2), ALL (3). */
static int view_param(qn_req *req, qn_res *res, const json_t *body, const char *key, int *view)
{
    const json_t *v = body ? json_object_get(body, key) : NULL;
    const char *s = body ? json_string_value(v) : qn_req_query(req, key);
    *view = 1;
    if (v && json_is_integer(v) && json_integer_value(v) >= 1 && json_integer_value(v) <= 3) {
        *view = (int)json_integer_value(v);
        return 0;
    }
    if (!s && (!v || json_is_null(v)))
        return 0;
    if (s && (strcmp(s, "ACTIVE_ONLY") == 0 || strcmp(s, "1") == 0))
        *view = 1;
    else if (s && (strcmp(s, "DELETED_ONLY") == 0 || strcmp(s, "2") == 0))
        *view = 2;
    else if (s && (strcmp(s, "ALL") == 0 || strcmp(s, "3") == 0))
        *view = 3;
    else {
        mlf_error(res, QN_INVALID_ARGUMENT, "parameter '%s' must be ACTIVE_ONLY, DELETED_ONLY or ALL", key);
        return -1;
    }
    return 0;
}

/* An opaque page token of scope holding a number (an offset or an id). */
static int token_param(qn_req *req, qn_res *res, const json_t *body, const char *scope, int64_t *out)
{
    const char *tok = mlf_param(req, body, "page_token");
    char key[QN_PAGE_KEY_MAX];
    qn_err err;
    *out = 0;
    if (!tok || !*tok)
        return 0;
    if (qn_page_token_decode(tok, scope, key, sizeof key, &err) < 0) {
        mlf_error(res, QN_INVALID_ARGUMENT, "invalid page_token: %s", err.msg);
        return -1;
    }
    char *end;
    long long v = strtoll(key, &end, 10);
    if (end == key || *end || v < 0) {
        mlf_error(res, QN_INVALID_ARGUMENT, "invalid page_token");
        return -1;
    }
    *out = v;
    return 0;
}

/* ---- experiments ------------------------------------------------------------------------ */

int mlf_experiments_create(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    json_t *body;
    const char *name;
    int64_t id = 0;
    if (mlf_begin(req, res, &body) < 0 || mlf_required(req, res, body, "name", &name) < 0)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? trk_experiment_create(c, name, mlf_param(req, body, "artifact_location"),
                                       json_object_get(body, "tags"), qn_now_ms(), &id, &err)
               : err.code;
    char ids[24];
    snprintf(ids, sizeof ids, "%lld", (long long)id);
    return mlf_answer(r->db, req, res, c, rc, &err, json_pack("{s:s}", "experiment_id", ids));
}

static int experiment_answer(qn_req *req, qn_res *res, registry *r, const char *id, const char *name)
{
    qn_err err;
    json_t *e = NULL;
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = !c ? err.code : id ? trk_experiment_get(c, id, &e, &err) : trk_experiment_by_name(c, name, &e, &err);
    return mlf_answer(r->db, req, res, c, rc, &err, rc < 0 ? NULL : json_pack("{s:o}", "experiment", e));
}

int mlf_experiments_get(qn_req *req, qn_res *res, void *ud)
{
    json_t *body;
    const char *id;
    if (mlf_begin(req, res, &body) < 0 || mlf_required(req, res, body, "experiment_id", &id) < 0)
        return 0;
    return experiment_answer(req, res, ud, id, NULL);
}

int mlf_experiments_get_by_name(qn_req *req, qn_res *res, void *ud)
{
    json_t *body;
    const char *name;
    if (mlf_begin(req, res, &body) < 0 || mlf_required(req, res, body, "experiment_name", &name) < 0)
        return 0;
    return experiment_answer(req, res, ud, NULL, name);
}

/* order_by of search_experiments: a JSON array of strings, or one query
 * parameter on GET. 0 with *sql NULL when absent; -1 after a 400. */
static int experiments_order(qn_req *req, qn_res *res, const json_t *body, char *buf, size_t size, const char **sql)
{
    const json_t *order = body ? json_object_get(body, "order_by") : NULL;
    const char *clauses[16];
    size_t n = 0;
    qn_err err;
    *sql = NULL;
    if (order && !json_is_null(order)) {
        if (!json_is_array(order))
            return mlf_error(res, QN_INVALID_ARGUMENT, "order_by must be an array of strings"), -1;
        if (json_array_size(order) > sizeof clauses / sizeof clauses[0])
            return mlf_error(res, QN_INVALID_ARGUMENT, "order_by has at most %zu clauses",
                             sizeof clauses / sizeof clauses[0]), -1;
        for (size_t i = 0; i < json_array_size(order); i++)
            if (!(clauses[n++] = json_string_value(json_array_get(order, i))))
                return mlf_error(res, QN_INVALID_ARGUMENT, "order_by[%zu] must be a string", i), -1;
    } else if (!body && qn_req_query(req, "order_by")) {
        clauses[n++] = qn_req_query(req, "order_by");
    }
    if (n == 0)
        return 0;
    if (trk_experiments_order(clauses, n, buf, size, &err) < 0)
        return mlf_error(res, err.code, "%s", err.msg), -1;
    *sql = buf;
    return 0;
}

int mlf_experiments_search(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    json_t *body;
    int64_t max = TRK_SEARCH_DEFAULT_RESULTS, after = -1;
    int view;
    char order_buf[512];
    const char *order;
    if (mlf_begin(req, res, &body) < 0 || int_param(req, res, body, "max_results", 1, TRK_SEARCH_MAX_RESULTS, &max) < 0 ||
        view_param(req, res, body, "view_type", &view) < 0 ||
        experiments_order(req, res, body, order_buf, sizeof order_buf, &order) < 0)
        return 0;
    /* Ordered pages go by offset (their own token scope), the default by id. */
    const char *scope = order ? "mlflow_experiments_ordered" : "mlflow_experiments";
    if (token_param(req, res, body, scope, &after) < 0)
        return 0;
    trk_filter *f = NULL;
    if (trk_filter_parse_experiments(mlf_param(req, body, "filter"), &f, &err) < 0)
        return mlf_error(res, err.code, "%s", err.msg);
    if (!mlf_param(req, body, "page_token") || !*mlf_param(req, body, "page_token"))
        after = order ? 0 : -1;
    json_t *list = json_array();
    int more = 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? trk_experiments_list(c, strcmp(qn_store_backend(r->db), "postgres") == 0, view, f, order, after,
                                      max, list, &more, &err)
               : err.code;
    trk_filter_free(f);
    json_t *out = json_pack("{s:o}", "experiments", list);
    if (rc >= 0 && more) {
        const char *last = json_string_value(json_object_get(json_array_get(list, json_array_size(list) - 1), "experiment_id"));
        reg_page_next(out, scope,
                      order ? after + (int64_t)json_array_size(list) : strtoll(last ? last : "0", NULL, 10));
    }
    return mlf_answer(r->db, req, res, c, rc, &err, out);
}

int mlf_experiments_update(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    json_t *body;
    const char *id, *name;
    if (mlf_begin(req, res, &body) < 0 || mlf_required(req, res, body, "experiment_id", &id) < 0 ||
        mlf_required(req, res, body, "new_name", &name) < 0)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? trk_experiment_rename(c, id, name, &err) : err.code;
    return mlf_answer(r->db, req, res, c, rc, &err, NULL);
}

static int experiment_stage(qn_req *req, qn_res *res, registry *r, int deleted)
{
    qn_err err;
    json_t *body;
    const char *id;
    if (mlf_begin(req, res, &body) < 0 || mlf_required(req, res, body, "experiment_id", &id) < 0)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? trk_experiment_set_stage(c, id, deleted, &err) : err.code;
    return mlf_answer(r->db, req, res, c, rc, &err, NULL);
}

int mlf_experiments_delete(qn_req *req, qn_res *res, void *ud)
{
    return experiment_stage(req, res, ud, 1);
}

int mlf_experiments_restore(qn_req *req, qn_res *res, void *ud)
{
    return experiment_stage(req, res, ud, 0);
}

int mlf_experiments_set_tag(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    json_t *body;
    const char *id, *key, *value;
    if (mlf_begin(req, res, &body) < 0 || mlf_required(req, res, body, "experiment_id", &id) < 0 ||
        mlf_required(req, res, body, "key", &key) < 0)
        return 0;
    if (!(value = mlf_param(req, body, "value")))
        return mlf_required(req, res, body, "value", &value), 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? trk_experiment_set_tag(c, id, key, value, &err) : err.code;
    return mlf_answer(r->db, req, res, c, rc, &err, NULL);
}

/* ---- runs ------------------------------------------------------------------------------- */

int mlf_runs_create(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    json_t *body, *run = NULL;
    int64_t start = 0;
    if (mlf_begin(req, res, &body) < 0 || int_param(req, res, body, "start_time", 0, INT64_MAX, &start) < 0)
        return 0;
    trk_run_in in = {.experiment_id = mlf_param(req, body, "experiment_id"),
                     .name = mlf_param(req, body, "run_name"),
                     .user_id = mlf_param(req, body, "user_id"),
                     .start_time = start,
                     .tags = json_object_get(body, "tags")};
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? trk_run_create(c, &in, &run, &err) : err.code;
    return mlf_answer(r->db, req, res, c, rc, &err, rc < 0 ? NULL : json_pack("{s:o}", "run", run));
}

int mlf_runs_get(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    json_t *body, *run = NULL;
    const char *id;
    if (mlf_begin(req, res, &body) < 0 || run_id_param(req, res, body, &id) < 0)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? trk_run_get(c, id, &run, &err) : err.code;
    return mlf_answer(r->db, req, res, c, rc, &err, rc < 0 ? NULL : json_pack("{s:o}", "run", run));
}

int mlf_runs_update(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    json_t *body, *info = NULL;
    const char *id;
    int64_t end = -1;
    if (mlf_begin(req, res, &body) < 0 || run_id_param(req, res, body, &id) < 0 ||
        int_param(req, res, body, "end_time", 0, INT64_MAX, &end) < 0)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? trk_run_update(c, id, mlf_param(req, body, "status"), end, mlf_param(req, body, "run_name"), &info,
                                &err)
               : err.code;
    return mlf_answer(r->db, req, res, c, rc, &err, rc < 0 ? NULL : json_pack("{s:o}", "run_info", info));
}

static int run_stage(qn_req *req, qn_res *res, registry *r, int deleted)
{
    qn_err err;
    json_t *body;
    const char *id;
    if (mlf_begin(req, res, &body) < 0 || run_id_param(req, res, body, &id) < 0)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? trk_run_set_stage(c, id, deleted, &err) : err.code;
    return mlf_answer(r->db, req, res, c, rc, &err, NULL);
}

int mlf_runs_delete(qn_req *req, qn_res *res, void *ud)
{
    return run_stage(req, res, ud, 1);
}

int mlf_runs_restore(qn_req *req, qn_res *res, void *ud)
{
    return run_stage(req, res, ud, 0);
}

/* Logs b into the run in one write transaction and answers {}. */
static int log_batch(qn_req *req, qn_res *res, registry *r, const char *id, trk_batch *b)
{
    qn_err err;
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? trk_log_batch(c, id, b, &err) : err.code;
    trk_batch_free(b);
    return mlf_answer(r->db, req, res, c, rc, &err, NULL);
}

int mlf_runs_log_metric(qn_req *req, qn_res *res, void *ud)
{
    qn_err err;
    json_t *body;
    const char *id, *key;
    if (mlf_begin(req, res, &body) < 0 || run_id_param(req, res, body, &id) < 0 ||
        mlf_required(req, res, body, "key", &key) < 0)
        return 0;
    json_t *value = json_object_get(body, "value");
    if (!value)
        return mlf_error(res, QN_INVALID_ARGUMENT, "Missing value for required parameter 'value'.");
    json_t *m = json_pack("[{s:s, s:O}]", "key", key, "value", value);
    json_t *ts = json_object_get(body, "timestamp"), *step = json_object_get(body, "step");
    if (!m)
        return mlf_error(res, QN_RESOURCE_EXHAUSTED, "out of memory");
    if (ts)
        json_object_set(json_array_get(m, 0), "timestamp", ts);
    if (step)
        json_object_set(json_array_get(m, 0), "step", step);
    trk_batch b;
    int rc = trk_batch_parse(m, NULL, NULL, qn_now_ms(), &b, &err);
    json_decref(m); /* b borrows only key, which the body holds */
    if (rc < 0) {
        trk_batch_free(&b);
        return mlf_error(res, err.code, "%s", err.msg);
    }
    b.metrics[0].key = key;
    return log_batch(req, res, ud, id, &b);
}

/* log-parameter and set-tag: one key and value. */
static int log_kv(qn_req *req, qn_res *res, registry *r, int tag)
{
    qn_err err;
    json_t *body;
    const char *id, *key, *value;
    if (mlf_begin(req, res, &body) < 0 || run_id_param(req, res, body, &id) < 0 ||
        mlf_required(req, res, body, "key", &key) < 0)
        return 0;
    if (!(value = mlf_param(req, body, "value")))
        return mlf_required(req, res, body, "value", &value), 0;
    json_t *kv = json_pack("[{s:s, s:s}]", "key", key, "value", value);
    trk_batch b;
    int rc = trk_batch_parse(NULL, tag ? NULL : kv, tag ? kv : NULL, qn_now_ms(), &b, &err);
    if (rc >= 0) { /* point at the body's strings, which outlive kv */
        trk_kv *e = tag ? b.tags : b.params;
        e[0].key = key;
        e[0].value = value;
    }
    json_decref(kv);
    if (rc < 0) {
        trk_batch_free(&b);
        return mlf_error(res, err.code, "%s", err.msg);
    }
    return log_batch(req, res, r, id, &b);
}

int mlf_runs_log_parameter(qn_req *req, qn_res *res, void *ud)
{
    return log_kv(req, res, ud, 0);
}

int mlf_runs_set_tag(qn_req *req, qn_res *res, void *ud)
{
    return log_kv(req, res, ud, 1);
}

int mlf_runs_log_batch(qn_req *req, qn_res *res, void *ud)
{
    qn_err err;
    json_t *body;
    const char *id;
    if (mlf_begin(req, res, &body) < 0 || run_id_param(req, res, body, &id) < 0)
        return 0;
    trk_batch b;
    if (trk_batch_parse(json_object_get(body, "metrics"), json_object_get(body, "params"),
                        json_object_get(body, "tags"), qn_now_ms(), &b, &err) < 0) {
        trk_batch_free(&b);
        return mlf_error(res, err.code, "%s", err.msg);
    }
    return log_batch(req, res, ud, id, &b);
}

int mlf_runs_delete_tag(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    json_t *body;
    const char *id, *key;
    if (mlf_begin(req, res, &body) < 0 || run_id_param(req, res, body, &id) < 0 ||
        mlf_required(req, res, body, "key", &key) < 0)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? trk_tag_delete(c, id, key, &err) : err.code;
    return mlf_answer(r->db, req, res, c, rc, &err, NULL);
}

int mlf_runs_search(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    json_t *body;
    int64_t max = TRK_SEARCH_DEFAULT_RESULTS, offset = 0, exps[100];
    int view;
    trk_filter *f = NULL;
    trk_orders orders = {.n = 0};
    if (mlf_begin(req, res, &body) < 0 || int_param(req, res, body, "max_results", 1, TRK_SEARCH_MAX_RESULTS, &max) < 0 ||
        view_param(req, res, body, "run_view_type", &view) < 0 || token_param(req, res, body, "mlflow_runs", &offset) < 0)
        return 0;
    json_t *ids = json_object_get(body, "experiment_ids"), *order = json_object_get(body, "order_by");
    size_t n = json_array_size(ids), i;
    json_t *e;
    if (ids && !json_is_array(ids))
        return mlf_error(res, QN_INVALID_ARGUMENT, "experiment_ids must be an array of strings");
    if (n == 0)
        return mlf_error(res, QN_INVALID_ARGUMENT, "Missing value for required parameter 'experiment_ids'.");
    if (n > 100)
        return mlf_error(res, QN_INVALID_ARGUMENT, "at most 100 experiment_ids per search");
    json_array_foreach(ids, i, e) {
        const char *s = json_string_value(e);
        char *end = NULL;
        exps[i] = s && *s ? strtoll(s, &end, 10) : -1;
        if (!s || !*s || *end || exps[i] < 0)
            exps[i] = -1; /* an id that cannot exist matches nothing, as an unknown one */
    }
    if (order && !json_is_array(order) && !json_is_null(order))
        return mlf_error(res, QN_INVALID_ARGUMENT, "order_by must be an array of strings");
    json_array_foreach(order, i, e) {
        if (!json_is_string(e) || trk_order_parse(json_string_value(e), &orders, &err) < 0) {
            trk_orders_free(&orders);
            if (!json_is_string(e))
                return mlf_error(res, QN_INVALID_ARGUMENT, "order_by[%zu] must be a string", i);
            return mlf_error(res, err.code, "%s", err.msg);
        }
    }
    if (trk_filter_parse(mlf_param(req, body, "filter"), &f, &err) < 0) {
        trk_orders_free(&orders);
        return mlf_error(res, err.code, "%s", err.msg);
    }
    trk_search s = {.experiments = exps, .nexperiments = n, .view = view, .filter = f, .order = &orders,
                    .offset = offset, .limit = max};
    json_t *runs = json_array();
    int more = 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? trk_runs_search(c, strcmp(qn_store_backend(r->db), "postgres") == 0, &s, runs, &more, &err) : err.code;
    trk_filter_free(f);
    trk_orders_free(&orders);
    json_t *out = json_pack("{s:o}", "runs", runs);
    if (rc >= 0 && more)
        reg_page_next(out, "mlflow_runs", offset + max);
    return mlf_answer(r->db, req, res, c, rc, &err, out);
}

int mlf_runs_log_inputs(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    json_t *body;
    const char *id;
    if (mlf_begin(req, res, &body) < 0 || run_id_param(req, res, body, &id) < 0)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? trk_log_inputs(c, id, json_object_get(body, "datasets"), &err) : err.code;
    /* MLflow 3 also sends the run's logged-model inputs here; they are kept as outputs are */
    if (rc >= 0 && json_array_size(json_object_get(body, "models")))
        rc = trk_log_outputs(c, id, json_object_get(body, "models"), &err);
    return mlf_answer(r->db, req, res, c, rc, &err, NULL);
}

int mlf_runs_log_outputs(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    json_t *body;
    const char *id;
    if (mlf_begin(req, res, &body) < 0 || run_id_param(req, res, body, &id) < 0)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? trk_log_outputs(c, id, json_object_get(body, "models"), &err) : err.code;
    return mlf_answer(r->db, req, res, c, rc, &err, NULL);
}

int mlf_metrics_get_history(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    json_t *body;
    const char *id, *key;
    int64_t max = 25000, offset = 0;
    if (mlf_begin(req, res, &body) < 0 || run_id_param(req, res, body, &id) < 0 ||
        mlf_required(req, res, body, "metric_key", &key) < 0 ||
        int_param(req, res, body, "max_results", 1, 25000, &max) < 0 ||
        token_param(req, res, body, "mlflow_metric_history", &offset) < 0)
        return 0;
    json_t *list = json_array();
    int more = 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? trk_metric_history(c, id, key, offset, max, list, &more, &err) : err.code;
    json_t *out = json_pack("{s:o}", "metrics", list);
    if (rc >= 0 && more)
        reg_page_next(out, "mlflow_metric_history", offset + max);
    return mlf_answer(r->db, req, res, c, rc, &err, out);
}
