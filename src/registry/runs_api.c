/*
 * runs_api.c - the registry's own tracking API under /v1 (DESIGN.md
 * section 4): experiments, runs, one-call logging, metric histories, search,
 * and lineage between datasets, runs and model versions.
 *
 * The store is tracking.c's (the MLflow API in mlflow.c shares it); this
 * file speaks Quern's dialect: strict bodies (unknown fields are a 400),
 * params and tags as flat objects, errors in the {"error":{...}} model, and
 * a run as
 *   {"run_id","experiment_id","name","status","start_time","end_time",
 *    "lifecycle_stage","artifact_uri","user_id","params":{},"tags":{},
 *    "metrics":{"auc":{"value","step","timestamp"}},"inputs":[...],"outputs":[...]}
 * (times in ms since the epoch, as MLflow keeps them).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/validate.h"
#include "registry/registry.h"
#include "registry/tracking.h"

/* ---- shapes ---------------------------------------------------------------------- */

/* [{key, value}] -> {key: value} */
static json_t *kv_object(const json_t *list)
{
    json_t *o = json_object();
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) json_object_set(o, json_string_value(json_object_get(e, "key")),
                                                   json_object_get(e, "value"));
    return o;
}

/* {key: value} (strings) -> [{key, value}]; NULL when obj is NULL. */
static json_t *kv_list(const json_t *obj)
{
    if (!obj)
        return NULL;
    json_t *l = json_array();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v) json_array_append_new(l, json_pack("{s:s, s:O}", "key", k, "value", v));
    return l;
}

/* MLflow's Run (tracking.h) in the /v1 shape; steals run. */
static json_t *v1_run(json_t *run)
{
    json_t *info = json_object_get(run, "info"), *data = json_object_get(run, "data");
    json_t *out = json_deep_copy(info);
    if (!out) {
        json_decref(run);
        return NULL;
    }
    json_object_del(out, "run_uuid");
    json_object_set(out, "name", json_object_get(info, "run_name"));
    json_object_del(out, "run_name");
    if (!json_object_get(out, "end_time"))
        json_object_set_new(out, "end_time", json_null());
    json_object_set_new(out, "params", kv_object(json_object_get(data, "params")));
    json_object_set_new(out, "tags", kv_object(json_object_get(data, "tags")));
    json_t *metrics = json_object();
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(data, "metrics"), i, m)
        json_object_set_new(metrics, json_string_value(json_object_get(m, "key")),
                            json_pack("{s:O, s:O, s:O}", "value", json_object_get(m, "value"), "step",
                                      json_object_get(m, "step"), "timestamp", json_object_get(m, "timestamp")));
    json_object_set_new(out, "metrics", metrics);
    json_t *inputs = json_array();
    json_array_foreach(json_object_get(json_object_get(run, "inputs"), "dataset_inputs"), i, m)
        json_array_append(inputs, json_object_get(m, "dataset"));
    json_object_set_new(out, "inputs", inputs);
    json_object_set(out, "outputs", json_object_get(json_object_get(run, "outputs"), "model_outputs"));
    json_decref(run);
    return out;
}

static const char *param_or_400(qn_req *req, qn_res *res, const char *name)
{
    const char *v = qn_req_param(req, name);
    if (!v || strlen(v) > 64) {
        qn_res_error(res, QN_INVALID_ARGUMENT, "%s must have 1 to 64 characters", name);
        return NULL;
    }
    return v;
}

/* Answers GET .../{id}: get(id) in a read transaction, the object it finds
 * passed through shape (NULL: as it is). Returns 0. */
static int answer_by_id(qn_req *req, qn_res *res, registry *r,
                        int (*get)(qn_conn *c, const char *id, json_t **out, qn_err *err), json_t *(*shape)(json_t *))
{
    qn_err err;
    json_t *out = NULL;
    const char *id = param_or_400(req, res, "id");
    if (!id)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? get(c, id, &out, &err) : err.code;
    return reg_answer(r->db, req, res, c, rc, &err, 200, rc < 0 || !shape ? out : shape(out));
}

/* The "view" of a listing: active (the default) 1, deleted 2, all 3; 0 for
 * anything else. */
static int view_of(const char *s)
{
    if (!s || strcmp(s, "active") == 0)
        return 1;
    return strcmp(s, "deleted") == 0 ? 2 : strcmp(s, "all") == 0 ? 3 : 0;
}

/* Where a page resumes: the number a page token of scope holds (an offset,
 * or the last id), *at left as it is when there is no token. A token that is
 * not one of scope's is answered (400) and -1 returned. */
static int page_resume(qn_res *res, const char *tok, const char *scope, int64_t *at)
{
    char key[QN_PAGE_KEY_MAX];
    qn_err err;
    if (!tok || !*tok)
        return 0;
    if (qn_page_token_decode(tok, scope, key, sizeof key, &err) < 0) {
        qn_res_error(res, err.code, "%s", err.msg);
        return -1;
    }
    *at = strtoll(key, NULL, 10);
    return 0;
}

/* ---- experiments -------------------------------------------------------------------- */

/* The /v1 experiment: tags as an object. */
static json_t *v1_experiment(json_t *e)
{
    json_object_set_new(e, "tags", kv_object(json_object_get(e, "tags")));
    return e;
}

int reg_experiments_create(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    static const char *const allowed[] = {"name", "artifact_location", "tags", NULL};
    qn_err err;
    const char *name = NULL, *loc = NULL;
    json_t *tags = NULL, *out = NULL;
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    if (qn_json_only(body, allowed, &err) < 0 || qn_json_str(body, "name", 1, TRK_MAX_NAME, &name, &err) < 0 ||
        qn_json_str(body, "artifact_location", 0, 2048, &loc, &err) < 0 || qn_json_tags(body, "tags", &tags, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    json_t *tl = kv_list(tags);
    int64_t id = 0;
    char ids[24];
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? trk_experiment_create(c, name, loc, tl, qn_now_ms(), &id, &err) : err.code;
    snprintf(ids, sizeof ids, "%lld", (long long)id);
    if (rc >= 0 && (rc = trk_experiment_get(c, ids, &out, &err)) >= 0)
        v1_experiment(out);
    json_decref(tl);
    if (rc >= 0)
        qn_res_header(res, "Location", qn_arena_printf(qn_req_arena(req), "/v1/experiments/%s", ids));
    return reg_answer(r->db, req, res, c, rc, &err, 201, out);
}

int reg_experiments_list(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    int64_t limit = 50, after = -1;
    int view = view_of(qn_req_query(req, "view"));
    if (!view)
        return qn_res_error(res, QN_INVALID_ARGUMENT, "view must be active, deleted or all");
    if (qn_limit_parse(qn_req_query(req, "limit"), 50, 1000, &limit, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    if (page_resume(res, qn_req_query(req, "page_token"), "experiments", &after) < 0)
        return 0;
    json_t *list = json_array();
    int more = 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? trk_experiments_list(c, 0, view, NULL, NULL, after, limit, list, &more, &err) : err.code;
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) v1_experiment(e);
    json_t *out = json_pack("{s:o}", "experiments", list);
    if (rc >= 0 && more) /* experiment ids are numbers: the last one shown */
        reg_page_next(out, "experiments",
                  strtoll(json_string_value(json_object_get(json_array_get(list, json_array_size(list) - 1),
                                                            "experiment_id")), NULL, 10));
    return reg_answer(r->db, req, res, c, rc, &err, 200, out);
}

int reg_experiments_get(qn_req *req, qn_res *res, void *ud)
{
    return answer_by_id(req, res, ud, trk_experiment_get, v1_experiment);
}

/* ---- runs ---------------------------------------------------------------------------- */

int reg_runs_create(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    static const char *const allowed[] = {"experiment_id", "name", "tags", "start_time", NULL};
    qn_err err;
    const char *exp = NULL, *name = NULL;
    json_t *tags = NULL, *run = NULL;
    int64_t start = 0;
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    if (qn_json_only(body, allowed, &err) < 0 || qn_json_str(body, "experiment_id", 0, 64, &exp, &err) < 0 ||
        qn_json_str(body, "name", 0, TRK_MAX_NAME, &name, &err) < 0 || qn_json_tags(body, "tags", &tags, &err) < 0 ||
        qn_json_int(body, "start_time", 0, 0, INT64_MAX, &start, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    json_t *tl = kv_list(tags);
    trk_run_in in = {.experiment_id = exp, .name = name, .start_time = start, .tags = tl};
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? trk_run_create(c, &in, &run, &err) : err.code;
    json_decref(tl);
    json_t *out = rc < 0 ? NULL : v1_run(run);
    if (out)
        qn_res_header(res, "Location", qn_arena_printf(qn_req_arena(req), "/v1/runs/%s",
                                                       json_string_value(json_object_get(out, "run_id"))));
    return reg_answer(r->db, req, res, c, rc, &err, 201, out);
}

int reg_runs_get(qn_req *req, qn_res *res, void *ud)
{
    return answer_by_id(req, res, ud, trk_run_get, v1_run);
}

int reg_runs_patch(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    static const char *const allowed[] = {"status", "end_time", "name", NULL};
    qn_err err;
    const char *status = NULL, *name = NULL;
    int64_t end = -1;
    json_t *run = NULL;
    const char *id = param_or_400(req, res, "id");
    if (!id)
        return 0;
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    if (qn_json_only(body, allowed, &err) < 0 || qn_json_str(body, "status", 0, 16, &status, &err) < 0 ||
        qn_json_str(body, "name", 0, TRK_MAX_NAME, &name, &err) < 0 ||
        qn_json_int(body, "end_time", 0, 0, INT64_MAX, &end, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    /* a run that ends gets its end time now unless one is given */
    if (end < 0 && status && strcmp(status, "RUNNING") != 0 && strcmp(status, "SCHEDULED") != 0)
        end = qn_now_ms();
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? trk_run_update(c, id, status, end, name, NULL, &err) : err.code;
    if (rc >= 0)
        rc = trk_run_get(c, id, &run, &err);
    return reg_answer(r->db, req, res, c, rc, &err, 200, rc < 0 ? NULL : v1_run(run));
}

/* POST /v1/runs/{id}/log {"params":{}, "tags":{}, "metrics":[{key,value,step?,timestamp?}],
 * "inputs":[{"dataset","version"}]}: all in one transaction. */
int reg_runs_log(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    static const char *const allowed[] = {"params", "tags", "metrics", "inputs", NULL};
    qn_err err;
    json_t *params = NULL, *tags = NULL;
    const char *id = param_or_400(req, res, "id");
    if (!id)
        return 0;
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    json_t *metrics = json_object_get(body, "metrics"), *inputs = json_object_get(body, "inputs");
    if (qn_json_only(body, allowed, &err) < 0 || qn_json_obj(body, "params", 0, &params, &err) < 0 ||
        qn_json_obj(body, "tags", 0, &tags, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    if ((metrics && !json_is_array(metrics)) || (inputs && !json_is_array(inputs)))
        return qn_res_error(res, QN_INVALID_ARGUMENT, "metrics and inputs must be arrays");
    if (json_array_size(inputs) > 100)
        return qn_res_error(res, QN_INVALID_ARGUMENT, "at most 100 inputs per call");
    const char *k;
    json_t *v;
    json_object_foreach(params, k, v) if (!json_is_string(v)) return qn_res_error(
        res, QN_INVALID_ARGUMENT, "params.%.250s must be a string (params are text, as MLflow keeps them)", k);
    json_object_foreach(tags, k, v) if (!json_is_string(v)) return qn_res_error(res, QN_INVALID_ARGUMENT,
                                                                                "tags.%.250s must be a string", k);
    size_t i;
    json_t *in;
    json_array_foreach(inputs, i, in) {
        if (!json_is_string(json_object_get(in, "dataset")) || !json_is_integer(json_object_get(in, "version")))
            return qn_res_error(res, QN_INVALID_ARGUMENT, "inputs[%zu] must be {\"dataset\": name, \"version\": n}", i);
        if (qn_name_check("dataset", json_string_value(json_object_get(in, "dataset")), &err) < 0)
            return qn_res_error(res, err.code, "inputs[%zu]: %s", i, err.msg);
    }
    json_t *pl = params ? kv_list(params) : NULL, *tl = tags ? kv_list(tags) : NULL;
    trk_batch b;
    int rc = trk_batch_parse(metrics, pl, tl, qn_now_ms(), &b, &err);
    qn_conn *c = NULL;
    if (rc >= 0 && !(c = reg_db_begin(r->db, QN_TX_WRITE, &err)))
        rc = err.code;
    if (rc >= 0)
        rc = trk_log_batch(c, id, &b, &err);
    json_array_foreach(inputs, i, in) {
        if (rc < 0)
            break;
        rc = trk_log_dataset_version(c, id, json_string_value(json_object_get(in, "dataset")),
                                     json_integer_value(json_object_get(in, "version")), &err);
    }
    trk_batch_free(&b);
    rc = reg_answer(r->db, req, res, c, rc, &err, 204, NULL);
    json_decref(pl);
    json_decref(tl);
    return rc;
}

int reg_runs_metric_history(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *id = param_or_400(req, res, "id"), *key = qn_req_param(req, "key");
    int64_t limit = 10000, offset = 0;
    if (!id)
        return 0;
    if (!key || strlen(key) > TRK_MAX_KEY)
        return qn_res_error(res, QN_INVALID_ARGUMENT, "metric key must have 1 to %d characters", TRK_MAX_KEY);
    if (qn_limit_parse(qn_req_query(req, "limit"), 10000, 100000, &limit, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    if (page_resume(res, qn_req_query(req, "page_token"), "metric_history", &offset) < 0)
        return 0;
    json_t *list = json_array();
    int more = 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? trk_metric_history(c, id, key, offset, limit, list, &more, &err) : err.code;
    size_t i;
    json_t *m;
    json_array_foreach(list, i, m) json_object_del(m, "key");
    json_t *out = json_pack("{s:s, s:s, s:o}", "run_id", id, "key", key, "history", list);
    if (rc >= 0 && more)
        reg_page_next(out, "metric_history", offset + limit);
    return reg_answer(r->db, req, res, c, rc, &err, 200, out);
}

/* POST /v1/runs/search {"experiment_ids"?, "filter"?, "order_by"?: [...], "max_results"?,
 * "page_token"?, "view"?}: MLflow's grammar; all experiments when none are named. */
int reg_runs_search(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    static const char *const allowed[] = {"experiment_ids", "filter", "order_by", "max_results", "page_token", "view",
                                          NULL};
    qn_err err;
    const char *filter = NULL, *tok = NULL, *view_s = NULL;
    int64_t max = 100, offset = 0, exps[100];
    trk_filter *f = NULL;
    trk_orders orders = {.n = 0};
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    if (qn_json_only(body, allowed, &err) < 0 || qn_json_str(body, "filter", 0, TRK_FILTER_MAX_TEXT, &filter, &err) < 0 ||
        qn_json_str(body, "page_token", 0, 1024, &tok, &err) < 0 || qn_json_str(body, "view", 0, 16, &view_s, &err) < 0 ||
        qn_json_int(body, "max_results", 0, 1, TRK_SEARCH_MAX_RESULTS, &max, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    int view = view_of(view_s);
    if (!view)
        return qn_res_error(res, QN_INVALID_ARGUMENT, "view must be active, deleted or all");
    json_t *ids = json_object_get(body, "experiment_ids"), *order = json_object_get(body, "order_by"), *e;
    size_t n = json_array_size(ids), i;
    if ((ids && !json_is_array(ids)) || n > 100)
        return qn_res_error(res, QN_INVALID_ARGUMENT, "experiment_ids must be an array of at most 100 ids");
    json_array_foreach(ids, i, e) {
        const char *s = json_string_value(e);
        char *end = NULL;
        exps[i] = s && *s ? strtoll(s, &end, 10) : -1;
        if (!s || !*s || *end || exps[i] < 0)
            return qn_res_error(res, QN_INVALID_ARGUMENT, "experiment_ids[%zu] must be an experiment id such as \"0\"", i);
    }
    if (page_resume(res, tok, "runs_search", &offset) < 0)
        return 0;
    if (order && !json_is_array(order))
        return qn_res_error(res, QN_INVALID_ARGUMENT, "order_by must be an array of strings such as \"metrics.auc DESC\"");
    json_array_foreach(order, i, e) {
        if (!json_is_string(e) || trk_order_parse(json_string_value(e), &orders, &err) < 0) {
            trk_orders_free(&orders);
            if (!json_is_string(e))
                return qn_res_error(res, QN_INVALID_ARGUMENT, "order_by[%zu] must be a string", i);
            return qn_res_error(res, err.code, "%s", err.msg);
        }
    }
    if (trk_filter_parse(filter, &f, &err) < 0) {
        trk_orders_free(&orders);
        return qn_res_error(res, err.code, "%s", err.msg);
    }
    trk_search s = {.experiments = exps, .nexperiments = n, .view = view, .filter = f, .order = &orders,
                    .offset = offset, .limit = max};
    json_t *runs = json_array();
    int more = 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? trk_runs_search(c, strcmp(qn_store_backend(r->db), "postgres") == 0, &s, runs, &more, &err) : err.code;
    trk_filter_free(f);
    trk_orders_free(&orders);
    json_t *v1 = json_array();
    json_array_foreach(runs, i, e) json_array_append_new(v1, v1_run(json_incref(e)));
    json_decref(runs);
    json_t *out = json_pack("{s:o}", "runs", v1);
    if (rc >= 0 && more)
        reg_page_next(out, "runs_search", offset + max);
    return reg_answer(r->db, req, res, c, rc, &err, 200, out);
}

/* ---- lineage ------------------------------------------------------------------------- */

int reg_runs_versions(qn_req *req, qn_res *res, void *ud)
{
    return answer_by_id(req, res, ud, trk_versions_of_run, NULL);
}

int reg_dataset_version_runs(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    json_t *runs = NULL, *v = NULL;
    const char *name = qn_req_param(req, "name");
    int64_t n;
    if (qn_name_check("dataset", name, &err) < 0 ||
        qn_uint_parse("version", qn_req_param(req, "n"), REG_MAX_VERSION, &n, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? reg_db_version_get(c, &reg_db_datasets, name, n, &v, &err) : err.code; /* 404 when absent */
    json_decref(v);
    if (rc >= 0)
        rc = trk_runs_of_dataset(c, name, n, &runs, &err);
    size_t i;
    json_t *e;
    json_array_foreach(runs, i, e) {
        json_object_set(e, "name", json_object_get(e, "run_name"));
        json_object_del(e, "run_name");
        json_object_del(e, "run_uuid");
    }
    return reg_answer(r->db, req, res, c, rc, &err, 200,
                      rc < 0 ? NULL : json_pack("{s:s, s:I, s:o}", "dataset", name, "version", (json_int_t)n, "runs", runs));
}

/* GET /v1/models/{name}/aliases/{alias}/lineage: the version an alias points
 * at, the run that produced it and the dataset it was trained on. */
int reg_alias_lineage(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    json_t *al = NULL, *v = NULL;
    const char *name = qn_req_param(req, "name"), *alias = qn_req_param(req, "alias");
    if (qn_name_check("model", name, &err) < 0 || qn_name_check("alias", alias, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? reg_db_alias_get(c, name, alias, &al, &err) : err.code;
    if (rc >= 0)
        rc = reg_db_version_get(c, &reg_db_models, name, json_integer_value(json_object_get(al, "version")), &v, &err);
    json_t *out = NULL;
    if (rc >= 0) {
        json_t *run = json_null(), *info = NULL;
        const char *run_id = json_string_value(json_object_get(v, "run_id"));
        if (run_id && trk_run_get(c, run_id, &info, &err) >= 0)
            run = v1_run(info);
        out = json_pack("{s:s, s:s, s:O, s:O, s:O, s:o}", "model", name, "alias", alias, "version",
                        json_object_get(v, "version"), "run_id", json_object_get(v, "run_id"), "dataset",
                        json_object_get(v, "dataset"), "run", run);
    }
    json_decref(al);
    json_decref(v);
    return reg_answer(r->db, req, res, c, rc, &err, 200, out);
}
