/* MLflow 3's logged models (service.proto: CreateLoggedModel, GetLoggedModel,
 * FinalizeLoggedModel, DeleteLoggedModel, SearchLoggedModels,
 * SetLoggedModelTags, DeleteLoggedModelTag, LogLoggedModelParamsRequest)
 * over the registry's logged_models table (db.c, migration 5).
 *
 * A logged model is what `mlflow.<flavor>.log_model` creates in MLflow 3:
 * an id m-<32 hex>, in an experiment, PENDING until the client has uploaded
 * its files through the artifacts proxy under artifact_uri
 * (<experiment's artifact_location>/models/<id>/artifacts) and finalizes it
 * READY. register_model("models:/m-<id>") resolves to that directory
 * (mlf_logged_model_dir), so an xgboost flavour is servable as for an
 * mlflow-artifacts source. Tags and params are kept as JSON objects in the
 * row; search filters by experiment only (a filter string is a 400).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/trace.h"
#include "registry/mlflow.h"
#include "registry/mlflow_registry.h"
#include "registry/registry.h"
#include "registry/tracking.h"

#define LM_COLS                                                                                               \
    "id, experiment_id, name, model_type, source_run_id, status, status_message, artifact_location, "        \
    "created_at, updated_at, tags, params"
#define LM_MAX_RESULTS 1000

/* {key: value} of a text column as MLflow's [{key, value}] list. */
static json_t *kv_list(const char *text)
{
    json_t *obj = qn_json_from_text(text), *list = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
        json_array_append_new(list, json_pack("{s:s, s:s?}", "key", k, "value", json_string_value(v)));
    json_decref(obj);
    return list;
}

static json_t *model_json(qn_stmt *st)
{
    char exp[24];
    snprintf(exp, sizeof exp, "%lld", (long long)qn_col_int64(st, 1));
    json_t *info = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:s, s:o}", "model_id",
                             qn_col_text(st, 0), "experiment_id", exp, "name", qn_col_text(st, 2),
                             "creation_timestamp_ms", (json_int_t)qn_col_int64(st, 8), "last_updated_timestamp_ms",
                             (json_int_t)qn_col_int64(st, 9), "artifact_uri", qn_col_text(st, 7), "status",
                             qn_col_text(st, 5), "model_type", qn_col_text(st, 3), "source_run_id",
                             qn_col_text(st, 4), "status_message", qn_col_text(st, 6), "tags",
                             kv_list(qn_col_text(st, 10)));
    return json_pack("{s:o, s:{s:o, s:[]}}", "info", info, "data", "params", kv_list(qn_col_text(st, 11)),
                     "metrics");
}

static int missing(const char *id, qn_err *err)
{
    return qn_err_set(err, QN_NOT_FOUND, "Logged model with ID '%.200s' not found", id);
}

/* The logged model id as {"model": ...} into *out. */
static int lm_get(qn_conn *c, const char *id, json_t **out, qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "SELECT " LM_COLS " FROM logged_models WHERE id = ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, id, -1);
    int rc = qn_step(st, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return missing(id, err);
    *out = json_pack("{s:o}", "model", model_json(st));
    while ((rc = qn_step(st, err)) == 1)
        ;
    return rc;
}

/* A [{key, value}] list of the body merged into the JSON object text cur;
 * *merged is malloc'd canonical text. A bad list is a 400 naming field. */
static int kv_merge(const char *cur, const json_t *list, const char *field, char **merged, qn_err *err)
{
    *merged = NULL;
    if (list && !json_is_array(list))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s must be a list of {key, value}", field);
    json_t *obj = qn_json_from_text(cur ? cur : "{}");
    if (!obj)
        obj = json_object();
    size_t i;
    json_t *kv;
    json_array_foreach(list, i, kv) {
        const char *k = json_string_value(json_object_get(kv, "key"));
        const char *v = json_string_value(json_object_get(kv, "value"));
        if (!k || !*k || strlen(k) > 250 || (json_object_get(kv, "value") && !v) || (v && strlen(v) > 8000)) {
            json_decref(obj);
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "%s[%zu] needs a key (1-250 characters) and a string value (at most 8000)", field, i);
        }
        json_object_set_new(obj, k, json_string(v ? v : ""));
    }
    *merged = qn_json_canonical(obj);
    json_decref(obj);
    return *merged ? 0 : qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
}

/* Steps a one-row statement to its end (its row already read). */
static void drain(qn_stmt *st)
{
    qn_err ignored;
    while (qn_step(st, &ignored) == 1)
        ;
}

static int exec(qn_conn *c, qn_err *err, int64_t *changes, const char *sql, const char *a, const char *b,
                const char *d)
{
    qn_stmt *st = qn_prepare(c, sql, err);
    if (!st)
        return err->code;
    const char *v[3] = {a, b, d};
    for (int i = 0; i < 3 && v[i]; i++)
        qn_bind_text(st, i + 1, v[i], -1);
    int rc;
    while ((rc = qn_step(st, err)) == 1)
        ;
    if (changes)
        *changes = qn_changes(c);
    return rc;
}

int mlf_lm_create(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    json_t *body, *exp = NULL, *out = NULL;
    const char *exp_id;
    char *tags = NULL, *params = NULL;
    if (mlf_begin(req, res, &body) < 0 || mlf_required(req, res, body, "experiment_id", &exp_id) < 0)
        return 0;
    const char *name = mlf_param(req, body, "name"), *type = mlf_param(req, body, "model_type");
    const char *run = mlf_param(req, body, "source_run_id");
    if ((name && strlen(name) > 500) || (type && strlen(type) > 500) || (run && strlen(run) > 64))
        return mlf_error(res, QN_INVALID_ARGUMENT, "name (500), model_type (500) or source_run_id (64) is too long");
    unsigned char rnd[16];
    char id[64] = "m-";
    qn_random_bytes(rnd, sizeof rnd);
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(id + 2 + 2 * i, 3, "%02x", rnd[i]);
    qn_conn *c = NULL;
    int rc;
    if ((rc = kv_merge(NULL, json_object_get(body, "tags"), "tags", &tags, &err)) < 0 ||
        (rc = kv_merge(NULL, json_object_get(body, "params"), "params", &params, &err)) < 0)
        goto out;
    if (!(c = reg_db_begin(r->db, QN_TX_WRITE, &err))) {
        rc = err.code;
        goto out;
    }
    if ((rc = trk_experiment_get(c, exp_id, &exp, &err)) < 0)
        goto out;
    const json_t *e = json_object_get(exp, "experiment") ? json_object_get(exp, "experiment") : exp;
    const char *loc = json_string_value(json_object_get(e, "artifact_location"));
    char *uri = qn_arena_printf(qn_req_arena(req), "%s/models/%s/artifacts", loc ? loc : "", id);
    int64_t now = qn_now_ms();
    qn_stmt *st = qn_prepare(c,
                             "INSERT INTO logged_models (id, experiment_id, name, model_type, source_run_id, status, "
                             "status_message, artifact_location, created_at, updated_at, tags, params) "
                             "VALUES (?, ?, ?, ?, ?, 'LOGGED_MODEL_PENDING', '', ?, ?, ?, ?, ?)",
                             &err);
    if (!st) {
        rc = err.code;
        goto out;
    }
    qn_bind_text(st, 1, id, -1);
    qn_bind_int64(st, 2, strtoll(exp_id, NULL, 10));
    qn_bind_text(st, 3, name && *name ? name : id, -1);
    qn_bind_text(st, 4, type ? type : "", -1);
    qn_bind_text(st, 5, run ? run : "", -1);
    qn_bind_text(st, 6, uri, -1);
    qn_bind_int64(st, 7, now);
    qn_bind_int64(st, 8, now);
    qn_bind_text(st, 9, tags, -1);
    qn_bind_text(st, 10, params, -1);
    while ((rc = qn_step(st, &err)) == 1)
        ;
    if (rc >= 0)
        rc = lm_get(c, id, &out, &err);
out:
    json_decref(exp);
    free(tags);
    free(params);
    if (!c)
        return rc < 0 ? mlf_fail(req, res, &err) : 0;
    return mlf_answer(r->db, req, res, c, rc, &err, out);
}

/* GET / DELETE / PATCH (finalize) of one logged model. */
int mlf_lm_get(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    json_t *out = NULL;
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? lm_get(c, qn_req_param(req, "model_id"), &out, &err) : err.code;
    return mlf_answer(r->db, req, res, c, rc, &err, out);
}

int mlf_lm_finalize(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    json_t *body, *out = NULL;
    const char *status, *id = qn_req_param(req, "model_id");
    if (mlf_begin(req, res, &body) < 0 || mlf_required(req, res, body, "status", &status) < 0)
        return 0;
    if (strcmp(status, "LOGGED_MODEL_READY") && strcmp(status, "LOGGED_MODEL_UPLOAD_FAILED") &&
        strcmp(status, "LOGGED_MODEL_PENDING"))
        return mlf_error(res, QN_INVALID_ARGUMENT,
                         "status '%.100s' must be LOGGED_MODEL_READY, LOGGED_MODEL_UPLOAD_FAILED or "
                         "LOGGED_MODEL_PENDING", status);
    char now[24];
    snprintf(now, sizeof now, "%lld", (long long)qn_now_ms());
    int64_t n = 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? exec(c, &err, &n, "UPDATE logged_models SET status = ?, updated_at = CAST(? AS BIGINT) WHERE id = ?",
                      status, now, id)
               : err.code;
    if (rc >= 0)
        rc = n ? lm_get(c, id, &out, &err) : missing(id, &err);
    return mlf_answer(r->db, req, res, c, rc, &err, out);
}

int mlf_lm_delete(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *id = qn_req_param(req, "model_id");
    int64_t n = 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? exec(c, &err, &n, "DELETE FROM logged_models WHERE id = ?", id, NULL, NULL) : err.code;
    if (rc >= 0 && !n)
        rc = missing(id, &err);
    return mlf_answer(r->db, req, res, c, rc, &err, NULL);
}

/* Merges body[field] into the model's column col (tags or params). */
static int kv_update(qn_req *req, qn_res *res, registry *r, const char *col, const char *field, int answer_model)
{
    qn_err err;
    json_t *body, *out = NULL;
    const char *id = qn_req_param(req, "model_id");
    char *merged = NULL;
    if (mlf_begin(req, res, &body) < 0)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? 0 : err.code;
    qn_stmt *st = NULL;
    if (rc == 0 && !(st = qn_prepare(c, strcmp(col, "tags") == 0 ? "SELECT tags FROM logged_models WHERE id = ?"
                                                                   : "SELECT params FROM logged_models WHERE id = ?",
                                     &err)))
        rc = err.code;
    if (rc == 0) {
        qn_bind_text(st, 1, id, -1);
        rc = qn_step(st, &err);
        if (rc == 0)
            rc = missing(id, &err);
        else if (rc == 1) {
            rc = kv_merge(qn_col_text(st, 0), json_object_get(body, field), field, &merged, &err);
            drain(st);
        }
    }
    if (rc >= 0) {
        char now[24];
        snprintf(now, sizeof now, "%lld", (long long)qn_now_ms());
        rc = exec(c, &err, NULL,
                  strcmp(col, "tags") == 0
                      ? "UPDATE logged_models SET tags = ?, updated_at = CAST(? AS BIGINT) WHERE id = ?"
                      : "UPDATE logged_models SET params = ?, updated_at = CAST(? AS BIGINT) WHERE id = ?",
                  merged, now, id);
    }
    if (rc >= 0 && answer_model)
        rc = lm_get(c, id, &out, &err);
    free(merged);
    return c ? mlf_answer(r->db, req, res, c, rc, &err, out) : mlf_fail(req, res, &err);
}

int mlf_lm_set_tags(qn_req *req, qn_res *res, void *ud)
{
    return kv_update(req, res, ud, "tags", "tags", 1);
}

int mlf_lm_log_params(qn_req *req, qn_res *res, void *ud)
{
    return kv_update(req, res, ud, "params", "params", 0);
}

int mlf_lm_delete_tag(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *id = qn_req_param(req, "model_id"), *key = qn_req_param(req, "tag_key");
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? 0 : err.code;
    qn_stmt *st = NULL;
    char *text = NULL;
    if (rc == 0 && !(st = qn_prepare(c, "SELECT tags FROM logged_models WHERE id = ?", &err)))
        rc = err.code;
    if (rc == 0) {
        qn_bind_text(st, 1, id, -1);
        rc = qn_step(st, &err);
        if (rc == 0)
            rc = missing(id, &err);
    }
    if (rc == 1) {
        json_t *obj = qn_json_from_text(qn_col_text(st, 0));
        drain(st);
        if (!json_object_get(obj, key))
            rc = qn_err_set(&err, QN_NOT_FOUND, "No tag with key '%.250s' on logged model '%.100s'", key, id);
        else {
            json_object_del(obj, key);
            text = qn_json_canonical(obj);
            rc = exec(c, &err, NULL, "UPDATE logged_models SET tags = ? WHERE id = ?", text, id, NULL);
        }
        json_decref(obj);
    }
    free(text);
    return c ? mlf_answer(r->db, req, res, c, rc, &err, NULL) : mlf_fail(req, res, &err);
}

int mlf_lm_search(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    json_t *body;
    if (mlf_begin(req, res, &body) < 0)
        return 0;
    const json_t *ids = json_object_get(body, "experiment_ids");
    const char *filter = json_string_value(json_object_get(body, "filter"));
    if (filter && *filter)
        return mlf_error(res, QN_INVALID_ARGUMENT,
                         "filter is not supported in logged-models/search by Quern (only experiment_ids)");
    if (!json_is_array(ids) || json_array_size(ids) == 0 || json_array_size(ids) > 100)
        return mlf_error(res, QN_INVALID_ARGUMENT, "experiment_ids must list 1 to 100 experiment ids");
    json_int_t max = json_is_integer(json_object_get(body, "max_results"))
                         ? json_integer_value(json_object_get(body, "max_results"))
                         : 100;
    const char *tok = json_string_value(json_object_get(body, "page_token"));
    long long off = tok && *tok ? strtoll(tok, NULL, 10) : 0;
    if (max < 1 || max > LM_MAX_RESULTS || off < 0)
        return mlf_error(res, QN_INVALID_ARGUMENT, "max_results must be 1 to %d and page_token one this API gave",
                         LM_MAX_RESULTS);
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    json_t *models = json_array(), *out = json_pack("{s:o}", "models", models);
    int rc = c ? 0 : err.code;
    qn_stmt *st = NULL;
    if (rc == 0 &&
        !(st = qn_prepare(c,
                          "SELECT " LM_COLS " FROM logged_models ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
                          &err)))
        rc = err.code;
    if (rc == 0) {
        /* Few per experiment: filter the ids here, keeping SQL one shape for both stores. */
        qn_bind_int64(st, 1, 1000000);
        qn_bind_int64(st, 2, 0);
        long long seen = 0;
        while ((rc = qn_step(st, &err)) == 1) {
            char exp[24];
            snprintf(exp, sizeof exp, "%lld", (long long)qn_col_int64(st, 1));
            int want = 0;
            size_t i;
            json_t *v;
            json_array_foreach(ids, i, v)
                want |= json_is_string(v) && strcmp(json_string_value(v), exp) == 0;
            if (!want || seen++ < off)
                continue;
            if ((json_int_t)json_array_size(models) == max) {
                char next[24];
                snprintf(next, sizeof next, "%lld", off + (long long)max);
                json_object_set_new(out, "next_page_token", json_string(next));
                continue;
            }
            json_array_append_new(models, model_json(st));
        }
    }
    return c ? mlf_answer(r->db, req, res, c, rc, &err, out) : (json_decref(out), mlf_fail(req, res, &err));
}

int mlf_logged_model_dir(qn_conn *c, qn_arena *a, const char *source, const char **uri, qn_err *err)
{
    *uri = NULL;
    const char *id = source + strlen("models:/");
    size_t n = strcspn(id, "/");
    char *only = qn_arena_strndup(a, id, n);
    qn_stmt *st = qn_prepare(c, "SELECT artifact_location FROM logged_models WHERE id = ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, only, -1);
    int rc = qn_step(st, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return qn_err_set(err, QN_NOT_FOUND, "source %.300s: no logged model %.100s", source, only);
    *uri = qn_arena_printf(a, "%s%s", qn_col_text(st, 0), id + n);
    while ((rc = qn_step(st, err)) == 1)
        ;
    return rc < 0 ? rc : 0;
}
