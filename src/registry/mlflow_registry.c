/*
 * mlflow_registry.c - MLflow's model registry REST API over Quern's models
 * (mlflow/protos/model_registry.proto, the endpoints under /api/2.0/mlflow/).
 *
 * One store, two APIs: a registered model is a row of models, a model
 * version a row of versions (with what only MLflow has, its source, run id
 * and run link, in mlflow_versions), a tag a model or version tag, an alias
 * a Quern alias moved through reg_alias_move (history, quern.model.promoted,
 * serve follows). Versions are READY when created and their stage is always
 * "None" (stages are deprecated in MLflow; aliases replace them).
 *
 * A version created from an MLflow model directory stored through the
 * artifacts proxy (source mlflow-artifacts:/DIR or runs:/RUN_ID/PATH) gets
 * the manifest mlf_model_manifest builds, so an xgboost flavour is servable;
 * any other source gets a manifest of kind "mlflow" that records the source
 * and that serve refuses to load.
 *
 * Requests follow the MLflow client: GET takes its fields from the query
 * string, POST/PATCH/DELETE from a JSON body; unknown fields are ignored, as
 * MLflow's server does, so clients of other versions work. Versions travel
 * as strings, timestamps as milliseconds. Searches read the candidates,
 * filter them with mlf_filter (name/run_id/source_path/version_number/tags
 * with =, !=, LIKE, ILIKE, IN), sort and page by offset in C, which keeps
 * SQLite and PostgreSQL alike; registries hold thousands of models, not
 * millions.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>

#include "core/digest.h"
#include "core/json.h"
#include "core/log.h"
#include "core/validate.h"
#include "ml/bundle.h"
#include "registry/mlflow.h"
#include "registry/mlflow_parse.h"
#include "registry/mlflow_registry.h"
#include "registry/registry.h"
#include "registry/tracking.h"

#define MAX_TAG_KEY 250
#define MAX_TAG_VALUE 5000
#define MAX_SOURCE 4096

/* ---- requests --------------------------------------------------------------- */

/* The fields of a request: the JSON body, or for GET the query string. */
typedef struct mlf_in {
    qn_req *req;
    json_t *body;
} mlf_in;

static int in_open(qn_req *req, qn_res *res, mlf_in *in)
{
    in->req = req;
    in->body = NULL;
    if (strcmp(qn_req_method(req), "GET") == 0 || strcmp(qn_req_method(req), "HEAD") == 0)
        return 0;
    size_t len = 0;
    const char *text = qn_req_body(req, &len);
    json_error_t je;
    json_t *b = len ? json_loadb(text, len, JSON_REJECT_DUPLICATES, &je) : json_object();
    if (!b || !json_is_object(b)) {
        json_decref(b);
        mlf_error(res, QN_INVALID_ARGUMENT, "the request body must be a JSON object%s%s", b ? "" : ": ",
                  b ? "" : je.text);
        return -1;
    }
    in->body = b;
    return 0;
}

static void in_close(mlf_in *in)
{
    json_decref(in->body);
    in->body = NULL;
}

/* A string field (a number is taken as its decimal text: versions arrive
 * either way). NULL when absent. */
static const char *in_str(mlf_in *in, const char *key)
{
    if (!in->body)
        return qn_req_query(in->req, key);
    json_t *v = json_object_get(in->body, key);
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v))
        return qn_arena_printf(qn_req_arena(in->req), "%lld", (long long)json_integer_value(v));
    return NULL;
}

static int need(qn_res *res, const char *v, const char *key, size_t max)
{
    if (!v || !*v) {
        mlf_error(res, QN_INVALID_ARGUMENT, "Missing value for required parameter '%s'", key);
        return -1;
    }
    if (strlen(v) > max) {
        mlf_error(res, QN_INVALID_ARGUMENT, "parameter '%s' is longer than %zu bytes", key, max);
        return -1;
    }
    return 0;
}

/* The model name field, checked as Quern names are. */
static const char *in_name(mlf_in *in, qn_res *res, const char *key)
{
    qn_err err;
    const char *name = in_str(in, key);
    if (need(res, name, key, QN_NAME_MAX) < 0)
        return NULL;
    if (qn_name_check("registered model", name, &err) < 0) {
        mlf_error(res, err.code, "%s", err.msg);
        return NULL;
    }
    return name;
}

static int in_version(mlf_in *in, qn_res *res, int64_t *v)
{
    qn_err err;
    const char *s = in_str(in, "version");
    if (need(res, s, "version", 32) < 0)
        return -1;
    if (qn_uint_parse("version", s, REG_MAX_VERSION, v, &err) < 0 || *v < 1) {
        mlf_error(res, QN_INVALID_ARGUMENT, "Parameter 'version' must be a positive integer, got '%.32s'", s);
        return -1;
    }
    return 0;
}

/* MLflow's tags, [{"key","value"}...], as a flat object (new reference, or
 * NULL when absent); -1 answered when malformed. */
static int in_tags(mlf_in *in, qn_res *res, json_t **out)
{
    *out = NULL;
    json_t *tags = in->body ? json_object_get(in->body, "tags") : NULL;
    if (!tags || json_is_null(tags))
        return 0;
    if (!json_is_array(tags) || json_array_size(tags) > 64) {
        mlf_error(res, QN_INVALID_ARGUMENT, "'tags' must be a list of at most 64 {\"key\",\"value\"} objects");
        return -1;
    }
    json_t *o = json_object(), *t;
    size_t i;
    json_array_foreach(tags, i, t) {
        const char *k = json_string_value(json_object_get(t, "key"));
        const char *v = json_string_value(json_object_get(t, "value"));
        if (!k || !*k || strlen(k) > MAX_TAG_KEY || (v && strlen(v) > MAX_TAG_VALUE)) {
            json_decref(o);
            mlf_error(res, QN_INVALID_ARGUMENT,
                      "tags[%zu] needs a key of 1 to %d bytes and a value of at most %d bytes", i, MAX_TAG_KEY,
                      MAX_TAG_VALUE);
            return -1;
        }
        json_object_set_new(o, k, json_string(v ? v : ""));
    }
    *out = o;
    return 0;
}

/* MLflow's words for a model, or a version, that is not there. */
static int no_model(qn_err *err, const char *name)
{
    return qn_err_set(err, QN_NOT_FOUND, "Registered Model with name=%s not found", name);
}

static int no_version(qn_err *err, const char *name, int64_t v)
{
    return qn_err_set(err, QN_NOT_FOUND, "Model Version (name=%s, version=%lld) not found", name, (long long)v);
}

/* ---- the MLflow shapes of models and versions --------------------------------- */

/* {"a":"b"} as [{"key":"a","value":"b"}]. */
static json_t *tag_list(const char *text)
{
    json_t *o = qn_json_from_text(text), *out = json_array(), *v;
    const char *k;
    json_object_foreach(o, k, v) json_array_append_new(out, json_pack("{s:s, s:O}", "key", k, "value", v));
    json_decref(o);
    return out;
}

#define MV_COLS                                                                                             \
    "m.name, v.version, v.created_at, v.updated_at, v.description, v.status, v.tags, "                     \
    "COALESCE(x.source, ''), COALESCE(x.run_id, ''), COALESCE(x.run_link, ''), v.model_id"
#define MV_FROM                                                                                             \
    " FROM versions v JOIN models m ON m.id = v.model_id "                                                 \
    "LEFT JOIN mlflow_versions x ON x.model_id = v.model_id AND x.version = v.version "

/* A ModelVersion from a row of MV_COLS. */
static json_t *mv_json(qn_conn *c, qn_stmt *st, qn_err *err)
{
    char ver[24];
    int64_t version = qn_col_int64(st, 1);
    snprintf(ver, sizeof ver, "%lld", (long long)version);
    const char *status = qn_col_text(st, 5);
    json_t *mv = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:s, s:o}", "name", qn_col_text(st, 0),
                           "version", ver, "creation_timestamp", (json_int_t)qn_col_int64(st, 2),
                           "last_updated_timestamp", (json_int_t)qn_col_int64(st, 3), "user_id", "",
                           "current_stage", strcmp(status, "archived") == 0 ? "Archived" : "None",
                           "description", qn_col_text(st, 4), "source", qn_col_text(st, 7), "status", "READY",
                           "tags", tag_list(qn_col_text(st, 6)));
    if (*qn_col_text(st, 8))
        json_object_set_new(mv, "run_id", json_string(qn_col_text(st, 8)));
    if (*qn_col_text(st, 9))
        json_object_set_new(mv, "run_link", json_string(qn_col_text(st, 9)));
    qn_stmt *a = qn_prepare(c, "SELECT alias FROM aliases WHERE model_id = ? AND version = ? ORDER BY alias", err);
    if (!a) {
        json_decref(mv);
        return NULL;
    }
    qn_bind_int64(a, 1, qn_col_int64(st, 10));
    qn_bind_int64(a, 2, version);
    json_t *al = json_array();
    int rc;
    while ((rc = qn_step(a, err)) == 1)
        json_array_append_new(al, json_string(qn_col_text(a, 0)));
    json_object_set_new(mv, "aliases", al);
    if (rc < 0) {
        json_decref(mv);
        return NULL;
    }
    return mv;
}

/* Version n (0: the latest) of model name as a ModelVersion. */
static int mv_get(qn_conn *c, const char *name, int64_t n, json_t **out, qn_err *err)
{
    qn_stmt *st = qn_prepare(c,
                             "SELECT " MV_COLS MV_FROM "WHERE m.name = ? AND (? = 0 OR v.version = ?) "
                             "ORDER BY v.version DESC LIMIT 1",
                             err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, name, -1);
    qn_bind_int64(st, 2, n);
    qn_bind_int64(st, 3, n);
    int rc = reg_db_one(c, st, mv_json, out, err);
    if (rc == 0) {
        int64_t id;
        if (reg_db_id(c, &reg_db_models, name, &id, err) < 0)
            return no_model(err, name);
        return no_version(err, name, n);
    }
    return rc < 0 ? rc : 0;
}

#define RM_COLS "id, name, description, tags, created_at, updated_at"

/* A RegisteredModel from a row of RM_COLS: latest_versions (the newest,
 * stage "None") and aliases [{"alias","version"}]. */
static json_t *rm_json(qn_conn *c, qn_stmt *st, qn_err *err)
{
    int64_t id = qn_col_int64(st, 0);
    const char *name = qn_col_text(st, 1);
    json_t *rm = json_pack("{s:s, s:I, s:I, s:s, s:s, s:o}", "name", name, "creation_timestamp",
                           (json_int_t)qn_col_int64(st, 4), "last_updated_timestamp",
                           (json_int_t)qn_col_int64(st, 5), "user_id", "", "description", qn_col_text(st, 2),
                           "tags", tag_list(qn_col_text(st, 3)));
    json_t *latest = NULL;
    int rc = mv_get(c, name, 0, &latest, err);
    if (rc == 0)
        json_object_set_new(rm, "latest_versions", json_pack("[o]", latest));
    else if (rc != QN_NOT_FOUND)
        goto fail;
    qn_stmt *a = qn_prepare(c, "SELECT alias, version FROM aliases WHERE model_id = ? ORDER BY alias", err);
    if (!a)
        goto fail;
    qn_bind_int64(a, 1, id);
    json_t *al = json_array();
    while ((rc = qn_step(a, err)) == 1) {
        char ver[24];
        snprintf(ver, sizeof ver, "%lld", (long long)qn_col_int64(a, 1));
        json_array_append_new(al, json_pack("{s:s, s:s}", "alias", qn_col_text(a, 0), "version", ver));
    }
    json_object_set_new(rm, "aliases", al);
    if (rc < 0)
        goto fail;
    return rm;
fail:
    json_decref(rm);
    return NULL;
}

static int rm_get(qn_conn *c, const char *name, json_t **out, qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "SELECT " RM_COLS " FROM models WHERE name = ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, name, -1);
    int rc = reg_db_one(c, st, rm_json, out, err);
    if (rc == 0)
        return no_model(err, name);
    return rc < 0 ? rc : 0;
}

/* The "alias" field, checked as Quern names are; MLflow reserves "latest". */
static const char *in_alias(mlf_in *in, qn_res *res)
{
    qn_err err;
    const char *alias = in_str(in, "alias");
    if (need(res, alias, "alias", QN_NAME_MAX) < 0)
        return NULL;
    if (qn_name_check("alias", alias, &err) < 0) {
        mlf_error(res, err.code, "%s", err.msg);
        return NULL;
    }
    if (strcasecmp(alias, "latest") == 0) {
        mlf_error(res, QN_INVALID_ARGUMENT, "'%s' alias name (case insensitive) is reserved.", alias);
        return NULL;
    }
    return alias;
}

/* The optional "description" field; -1 answered when longer than 4096 bytes. */
static int in_description(mlf_in *in, qn_res *res, const char **desc)
{
    *desc = in_str(in, "description");
    if (*desc && strlen(*desc) > 4096) {
        mlf_error(res, QN_INVALID_ARGUMENT, "'description' is longer than 4096 bytes");
        return -1;
    }
    return 0;
}

/* ---- calls: one request to one endpoint --------------------------------------- */

/* What an endpoint reads before its own fields, in this order. */
enum { NAMES_MODEL = 1, NAMES_ALIAS = 2, NAMES_VERSION = 4 };

/* One MLflow request: its fields and, as its endpoint asks (NAMES_*), the
 * model name, alias and version it names, already checked. */
typedef struct mlf_call {
    registry *r;
    qn_req *req;
    qn_res *res;
    mlf_in in;
    const char *name;
    const char *alias;
    int64_t version;
} mlf_call;

/* An endpoint's own work; it answers call->res, whatever happens. */
typedef void mlf_endpoint(mlf_call *call);

/* Serves req with endpoint: opens the request's fields, reads what names
 * asks for and answers 400 for the first one missing or malformed, else runs
 * the endpoint; then closes the fields. Returns 0, as route handlers do. */
static int serve(qn_req *req, qn_res *res, void *ud, unsigned names, mlf_endpoint *endpoint)
{
    mlf_call call = {.r = ud, .req = req, .res = res};
    if (in_open(req, res, &call.in) < 0)
        return 0;
    if ((names & NAMES_MODEL) && !(call.name = in_name(&call.in, res, "name")))
        goto out;
    if ((names & NAMES_ALIAS) && !(call.alias = in_alias(&call.in, res)))
        goto out;
    if ((names & NAMES_VERSION) && in_version(&call.in, res, &call.version) < 0)
        goto out;
    endpoint(&call);
out:
    in_close(&call.in);
    return 0;
}

/* Ends the call's transaction and answers {field: out} (no field: out, or
 * {}) when it committed, else the failure. out is stolen. */
static void answer(mlf_call *call, qn_conn *c, int rc, qn_err *err, const char *field, json_t *out)
{
    if (field && rc == 0)
        out = json_pack("{s:o}", field, out);
    mlf_answer(call->r->db, call->req, call->res, c, rc, err, out);
}

/* The "key" field and, to set a tag, the "value" field, of at most key_max
 * and value_max bytes; -1 answered when either is wrong. */
static int in_tag(mlf_call *call, int set, size_t key_max, size_t value_max, const char **key, const char **value)
{
    *key = in_str(&call->in, "key");
    *value = in_str(&call->in, "value");
    if (need(call->res, *key, "key", key_max) < 0)
        return -1;
    if (set && (!*value || strlen(*value) > value_max)) {
        mlf_error(call->res, QN_INVALID_ARGUMENT, "'value' is required, of at most %zu bytes", value_max);
        return -1;
    }
    return 0;
}

/* Runs one statement binding (text, text|NULL, int64...) as given; 0 or rc. */
static int exec_changes(qn_conn *c, const char *sql, qn_err *err, int64_t *changes, const char *fmt, ...)
{
    qn_stmt *st = qn_prepare(c, sql, err);
    if (!st)
        return err->code;
    va_list ap;
    va_start(ap, fmt);
    for (int i = 0; fmt[i]; i++) {
        if (fmt[i] == 's') {
            const char *s = va_arg(ap, const char *);
            s ? qn_bind_text(st, i + 1, s, -1) : qn_bind_null(st, i + 1);
        } else {
            qn_bind_int64(st, i + 1, va_arg(ap, int64_t));
        }
    }
    va_end(ap);
    int rc;
    while ((rc = qn_step(st, err)) == 1)
        ;
    if (changes)
        *changes = qn_changes(c);
    return rc;
}

/* ---- registered models -------------------------------------------------------- */

static void registered_model_create(mlf_call *call)
{
    qn_err err;
    json_t *tags = NULL, *out = NULL, *q = NULL;
    const char *desc;
    if (in_tags(&call->in, call->res, &tags) < 0 || in_description(&call->in, call->res, &desc) < 0)
        goto out;
    qn_conn *c = reg_db_begin(call->r->db, QN_TX_WRITE, &err);
    int rc = c ? reg_db_model_create(c, call->name, desc ? desc : "", tags, qn_now_ms(), &q, &err) : err.code;
    if (rc == QN_ALREADY_EXISTS)
        qn_err_set(&err, QN_ALREADY_EXISTS, "Registered Model (name=%s) already exists.", call->name);
    json_decref(q);
    if (rc == 0)
        rc = rm_get(c, call->name, &out, &err);
    answer(call, c, rc, &err, "registered_model", out);
out:
    json_decref(tags);
}

int mlf_rm_create(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, NAMES_MODEL, registered_model_create);
}

static void registered_model_get(mlf_call *call)
{
    qn_err err;
    json_t *out = NULL;
    qn_conn *c = reg_db_begin(call->r->db, QN_TX_READ, &err);
    int rc = c ? rm_get(c, call->name, &out, &err) : err.code;
    answer(call, c, rc, &err, "registered_model", out);
}

int mlf_rm_get(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, NAMES_MODEL, registered_model_get);
}

static void registered_model_update(mlf_call *call)
{
    qn_err err;
    json_t *out = NULL;
    const char *desc;
    int64_t n = 0;
    if (in_description(&call->in, call->res, &desc) < 0)
        return;
    qn_conn *c = reg_db_begin(call->r->db, QN_TX_WRITE, &err);
    int rc = c ? exec_changes(c, "UPDATE models SET description = COALESCE(?, description), updated_at = ? "
                                 "WHERE name = ?", &err, &n, "sis", desc, qn_now_ms(), call->name)
               : err.code;
    if (rc == 0 && n == 0)
        rc = no_model(&err, call->name);
    if (rc == 0)
        rc = rm_get(c, call->name, &out, &err);
    answer(call, c, rc, &err, "registered_model", out);
}

int mlf_rm_update(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, NAMES_MODEL, registered_model_update);
}

static void registered_model_rename(mlf_call *call)
{
    qn_err err;
    json_t *out = NULL;
    int64_t n = 0;
    const char *to = in_name(&call->in, call->res, "new_name");
    if (!to)
        return;
    qn_conn *c = reg_db_begin(call->r->db, QN_TX_WRITE, &err);
    int rc = c ? exec_changes(c, "UPDATE models SET name = ?, updated_at = ? WHERE name = ?", &err, &n, "sis", to,
                              qn_now_ms(), call->name)
               : err.code;
    if (rc == QN_ALREADY_EXISTS)
        qn_err_set(&err, QN_ALREADY_EXISTS, "Registered Model (name=%s) already exists.", to);
    if (rc == 0 && n == 0)
        rc = no_model(&err, call->name);
    if (rc == 0)
        rc = rm_get(c, to, &out, &err);
    answer(call, c, rc, &err, "registered_model", out);
}

int mlf_rm_rename(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, NAMES_MODEL, registered_model_rename);
}

static void registered_model_delete(mlf_call *call)
{
    qn_err err;
    qn_conn *c = reg_db_begin(call->r->db, QN_TX_WRITE, &err);
    int rc = c ? reg_db_model_delete(c, call->name, &err) : err.code;
    if (rc == QN_NOT_FOUND)
        no_model(&err, call->name);
    answer(call, c, rc, &err, NULL, NULL);
}

int mlf_rm_delete(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, NAMES_MODEL, registered_model_delete);
}

/* Sets (value not NULL) or deletes a tag of a model: its rows and its JSON. */
static int rm_tag(qn_conn *c, const char *name, const char *key, const char *value, qn_err *err)
{
    int64_t id;
    int rc;
    if ((rc = reg_db_id(c, &reg_db_models, name, &id, err)) < 0)
        return no_model(err, name);
    qn_stmt *st = qn_prepare(c, "SELECT tags FROM models WHERE id = ?", err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, id);
    if ((rc = qn_step(st, err)) != 1)
        return rc < 0 ? rc : no_model(err, name);
    json_t *tags = qn_json_from_text(qn_col_text(st, 0));
    while ((rc = qn_step(st, err)) == 1)
        ;
    if (!value && !json_object_get(tags, key)) {
        json_decref(tags);
        return qn_err_set(err, QN_NOT_FOUND, "No tag with name: %s in registered model %s", key, name);
    }
    value ? json_object_set_new(tags, key, json_string(value)) : json_object_del(tags, key);
    char *text = qn_json_canonical(tags);
    json_decref(tags);
    if (!text)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    rc = exec_changes(c, "UPDATE models SET tags = ?, updated_at = ? WHERE id = ?", err, NULL, "sii", text,
                      qn_now_ms(), id);
    free(text);
    if (rc < 0)
        return rc;
    if (value)
        return exec_changes(c, "INSERT INTO model_tags (model_id, key, value) VALUES (?, ?, ?) "
                               "ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value",
                            err, NULL, "iss", id, key, value);
    return exec_changes(c, "DELETE FROM model_tags WHERE model_id = ? AND key = ?", err, NULL, "is", id, key);
}

/* Sets (set) or deletes the tag the call names on its model. */
static void registered_model_tag(mlf_call *call, int set)
{
    qn_err err;
    const char *key, *value;
    if (in_tag(call, set, MAX_TAG_KEY, MAX_TAG_VALUE, &key, &value) < 0)
        return;
    qn_conn *c = reg_db_begin(call->r->db, QN_TX_WRITE, &err);
    int rc = c ? rm_tag(c, call->name, key, set ? value : NULL, &err) : err.code;
    answer(call, c, rc, &err, NULL, NULL);
}

static void registered_model_set_tag(mlf_call *call)
{
    registered_model_tag(call, 1);
}

static void registered_model_delete_tag(mlf_call *call)
{
    registered_model_tag(call, 0);
}

int mlf_rm_set_tag(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, NAMES_MODEL, registered_model_set_tag);
}

int mlf_rm_delete_tag(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, NAMES_MODEL, registered_model_delete_tag);
}

static void registered_model_latest_versions(mlf_call *call)
{
    qn_err err;
    json_t *mv = NULL;
    /* Every version's stage is "None": the latest is the answer when no
     * stages are asked for, or "None" is among them. */
    int want = 1;
    json_t *stages = call->in.body ? json_object_get(call->in.body, "stages") : NULL;
    const char *qs = call->in.body ? NULL : qn_req_query(call->req, "stages");
    if (json_array_size(stages) || qs) {
        want = qs && strcasecmp(qs, "None") == 0;
        size_t i;
        json_t *s;
        json_array_foreach(stages, i, s) want |= json_is_string(s) && strcasecmp(json_string_value(s), "None") == 0;
    }
    qn_conn *c = reg_db_begin(call->r->db, QN_TX_READ, &err);
    int rc = c ? mv_get(c, call->name, 0, &mv, &err) : err.code;
    json_t *list = json_array();
    if (rc == 0 && want)
        json_array_append(list, mv);
    if (rc == QN_NOT_FOUND && strstr(err.msg, "Model Version"))
        rc = 0; /* a model without versions */
    json_decref(mv);
    answer(call, c, rc, &err, "model_versions", list);
}

int mlf_rm_latest_versions(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, NAMES_MODEL, registered_model_latest_versions);
}

/* ---- aliases --------------------------------------------------------------------- */

static void alias_set(mlf_call *call)
{
    qn_err err;
    int64_t previous;
    if (reg_alias_move(call->r, call->req, call->name, call->alias, call->version, NULL, NULL, &previous, &err) < 0) {
        if (err.code == QN_NOT_FOUND)
            no_version(&err, call->name, call->version);
        mlf_fail(call->req, call->res, &err);
        return;
    }
    qn_res_json(call->res, 200, json_object());
}

int mlf_alias_set(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, NAMES_MODEL | NAMES_ALIAS | NAMES_VERSION, alias_set);
}

static void alias_delete(mlf_call *call)
{
    qn_err err;
    reg_db_move mv = {.who = reg_who(call->r)};
    qn_conn *c = reg_db_begin(call->r->db, QN_TX_WRITE, &err);
    int rc = c ? reg_db_alias_delete(c, call->name, call->alias, &mv, &err) : err.code;
    answer(call, c, rc, &err, NULL, NULL);
}

int mlf_alias_delete(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, NAMES_MODEL | NAMES_ALIAS, alias_delete);
}

static void alias_get(mlf_call *call)
{
    qn_err err;
    json_t *out = NULL, *al = NULL;
    qn_conn *c = reg_db_begin(call->r->db, QN_TX_READ, &err);
    int rc = c ? reg_db_alias_get(c, call->name, call->alias, &al, &err) : err.code;
    if (rc == QN_NOT_FOUND)
        qn_err_set(&err, QN_NOT_FOUND, "Registered model alias %s not found.", call->alias);
    if (rc == 0)
        rc = mv_get(c, call->name, (int64_t)json_integer_value(json_object_get(al, "version")), &out, &err);
    json_decref(al);
    answer(call, c, rc, &err, "model_version", out);
}

int mlf_alias_get(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, NAMES_MODEL | NAMES_ALIAS, alias_get);
}

/* ---- model versions ------------------------------------------------------------ */

/* The artifact directory a source names: mlflow-artifacts:/DIR (or
 * mlflow-artifacts://HOST/DIR) as DIR; runs:/RUN_ID/PATH as the stored
 * directory <experiment>/<RUN_ID>/artifacts/PATH that holds an MLmodel;
 * models:/m-<id> (an MLflow 3 logged model) as its artifact_uri.
 * NULL with 0 for any other source (or when no such directory is stored). */
static int source_dir(qn_conn *c, qn_req *req, const char *source, const char **dir, qn_err *err)
{
    *dir = NULL;
    qn_arena *a = qn_req_arena(req);
    if (strncmp(source, "models:/m-", 10) == 0) { /* an MLflow 3 logged model: its artifact_uri */
        int rc = mlf_logged_model_dir(c, a, source, &source, err);
        if (rc == QN_NOT_FOUND) {
            char *msg = qn_arena_strdup(a, err->msg);
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s", msg);
        }
        if (rc < 0)
            return rc;
    }
    if (strncmp(source, "mlflow-artifacts:", 17) == 0) {
        const char *p = source + 17;
        if (strncmp(p, "//", 2) == 0) { /* an authority: skip it */
            p = strchr(p + 2, '/');
            if (!p)
                return 0;
        }
        while (*p == '/')
            p++;
        char *d = qn_arena_strdup(a, p);
        size_t n = strlen(d);
        while (n && d[n - 1] == '/')
            d[--n] = '\0';
        if (n && reg_artifact_path_check(d, err) < 0)
            return qn_err_wrap(err, "source");
        *dir = d;
        return 0;
    }
    if (strncmp(source, "runs:/", 6) != 0)
        return 0;
    const char *run = source + 6;
    const char *slash = strchr(run, '/');
    if (!slash || slash == run)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "source \"%.300s\" must be runs:/<run_id>/<path>", source);
    char *run_id = qn_arena_strndup(a, run, (size_t)(slash - run));
    const char *sub = slash + 1;
    while (*sub == '/')
        sub++;
    char *want = qn_arena_printf(a, "/%s/artifacts/%s%sMLmodel", run_id, sub, *sub ? "/" : "");
    size_t wl = strlen(want);
    /* The run's artifact root is <experiment id>/<run id>/artifacts. */
    qn_stmt *st = qn_prepare(c,
                             "SELECT path FROM artifacts WHERE length(path) > ? AND "
                             "substr(path, length(path) - ? + 1) = ? ORDER BY path LIMIT 1",
                             err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, (int64_t)wl);
    qn_bind_int64(st, 2, (int64_t)wl);
    qn_bind_text(st, 3, want, -1);
    int rc = qn_step(st, err);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        const char *p = qn_col_text(st, 0);
        *dir = qn_arena_strndup(a, p, strlen(p) - strlen("/MLmodel"));
        while ((rc = qn_step(st, err)) == 1)
            ;
    }
    return rc < 0 ? rc : 0;
}

static void model_version_create(mlf_call *call)
{
    registry *r = call->r;
    qn_req *req = call->req;
    qn_res *res = call->res;
    const char *name = call->name;
    qn_err err;
    json_t *tags = NULL, *manifest = NULL, *q = NULL, *out = NULL;
    char *text = NULL;
    qn_conn *c = NULL;
    int rc = 0;
    const char *source = in_str(&call->in, "source");
    const char *run_id = in_str(&call->in, "run_id"), *run_link = in_str(&call->in, "run_link");
    const char *desc = in_str(&call->in, "description");
    if (need(res, source, "source", MAX_SOURCE) < 0 || in_tags(&call->in, res, &tags) < 0)
        goto out;
    if ((run_id && strlen(run_id) > 256) || (run_link && strlen(run_link) > MAX_SOURCE) ||
        (desc && strlen(desc) > 4096)) {
        mlf_error(res, QN_INVALID_ARGUMENT, "run_id (256), run_link (%d) or description (4096) is too long",
                  MAX_SOURCE);
        goto out;
    }
    const char *dir = NULL;
    if (!(c = reg_db_begin(r->db, QN_TX_WRITE, &err)) || (rc = source_dir(c, req, source, &dir, &err)) < 0 ||
        (dir && (rc = mlf_model_manifest(c, r->blob_dir, dir, &manifest, &err)) < 0)) {
        rc = c ? rc : err.code;
        goto end;
    }
    if (manifest && (rc = reg_manifest_check_blobs(r, manifest, &err)) < 0)
        goto end;
    char digest[QML_DIGEST_STR];
    if (manifest) {
        qml_manifest *mf = NULL;
        text = qn_json_canonical(manifest);
        rc = text ? qml_manifest_parse(text, strlen(text), &mf, &err)
                  : qn_err_set(&err, QN_RESOURCE_EXHAUSTED, "out of memory");
        if (rc == 0)
            rc = qml_manifest_digest(mf, digest, &err);
        qml_manifest_free(mf);
        if (rc < 0) {
            qn_err_wrap(&err, "the manifest built from %s", source);
            goto end;
        }
    } else {
        /* Not servable by Quern: a manifest that says where the model is. */
        manifest = json_pack("{s:s, s:s, s:s}", "format", "quern.model/1", "kind", "mlflow", "source", source);
        text = qn_json_canonical(manifest);
        char hex[QN_SHA256_HEX + 1];
        if (!text) {
            rc = qn_err_set(&err, QN_RESOURCE_EXHAUSTED, "out of memory");
            goto end;
        }
        qn_sha256_buf(text, strlen(text), hex);
        snprintf(digest, sizeof digest, "sha256:%s", hex);
    }
    reg_db_version_in vin = {.manifest = {text, digest}, .description = desc ? desc : "", .tags = tags};
    int64_t version = 0, id = 0;
    if ((rc = reg_db_model_version_create(c, name, &vin, qn_now_ms(), &version, &q, &err)) < 0) {
        if (rc == QN_NOT_FOUND)
            no_model(&err, name);
        goto end;
    }
    if ((rc = reg_db_id(c, &reg_db_models, name, &id, &err)) < 0 ||
        (rc = exec_changes(c,
                           "INSERT INTO mlflow_versions (model_id, version, source, run_id, run_link, artifact_dir) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           &err, NULL, "iissss", id, version, source, run_id ? run_id : "",
                           run_link ? run_link : "", dir)) < 0)
        goto end;
    /* Lineage: a run this registry tracks links to the version (tracking.c),
     * as /v1's run_id does; a run_id from another tracking server stays a
     * string in mlflow_versions, as MLflow keeps it. */
    if (run_id && *run_id && (rc = trk_link_version(c, run_id, name, version, &err)) < 0) {
        if (rc != QN_NOT_FOUND)
            goto end;
        rc = 0;
    }
    if ((rc = mv_get(c, name, version, &out, &err)) < 0)
        goto end;
    qn_counter_add(r->versions_created, NULL, 1);
    qn_log_info(qn_req_trace_id(req), "version registered", "{s:s, s:I, s:s, s:s, s:s}", "model", name, "version",
                (json_int_t)version, "manifest_digest", digest, "source", source, "kind",
                json_string_value(json_object_get(manifest, "kind")));
end:
    answer(call, c, rc, &err, "model_version", out);
out:
    json_decref(q);
    json_decref(tags);
    json_decref(manifest);
    free(text);
}

int mlf_mv_create(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, NAMES_MODEL, model_version_create);
}

static void model_version_get(mlf_call *call)
{
    qn_err err;
    json_t *out = NULL;
    qn_conn *c = reg_db_begin(call->r->db, QN_TX_READ, &err);
    int rc = c ? mv_get(c, call->name, call->version, &out, &err) : err.code;
    answer(call, c, rc, &err, "model_version", out);
}

int mlf_mv_get(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, NAMES_MODEL | NAMES_VERSION, model_version_get);
}

/* Applies desc and a tag merge patch to the call's version; answers the
 * version as field, or {} when field is NULL. */
static void mv_patch(mlf_call *call, const char *desc, json_t *tags, const char *field)
{
    qn_err err;
    json_t *q = NULL, *out = NULL;
    qn_conn *c = reg_db_begin(call->r->db, QN_TX_WRITE, &err);
    int rc = c ? reg_db_model_version_patch(c, call->name, call->version, desc, NULL, tags, &q, &err) : err.code;
    json_decref(q);
    if (rc == QN_NOT_FOUND)
        no_version(&err, call->name, call->version);
    if (rc == 0 && field)
        rc = mv_get(c, call->name, call->version, &out, &err);
    answer(call, c, rc, &err, field, out);
}

static void model_version_update(mlf_call *call)
{
    const char *desc;
    if (in_description(&call->in, call->res, &desc) == 0)
        mv_patch(call, desc, NULL, "model_version");
}

int mlf_mv_update(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, NAMES_MODEL | NAMES_VERSION, model_version_update);
}

/* Sets (set) or deletes the tag the call names on its version. */
static void model_version_tag(mlf_call *call, int set)
{
    const char *key, *value;
    if (in_tag(call, set, 128, 1024, &key, &value) < 0)
        return;
    json_t *patch = json_pack("{s:o}", key, set ? json_string(value) : json_null());
    mv_patch(call, NULL, patch, NULL);
    json_decref(patch);
}

static void model_version_set_tag(mlf_call *call)
{
    model_version_tag(call, 1);
}

static void model_version_delete_tag(mlf_call *call)
{
    model_version_tag(call, 0);
}

int mlf_mv_set_tag(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, NAMES_MODEL | NAMES_VERSION, model_version_set_tag);
}

int mlf_mv_delete_tag(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, NAMES_MODEL | NAMES_VERSION, model_version_delete_tag);
}

static void model_version_delete(mlf_call *call)
{
    qn_err err;
    int64_t id = 0;
    json_t *mv = NULL;
    qn_conn *c = reg_db_begin(call->r->db, QN_TX_WRITE, &err);
    int rc = c ? mv_get(c, call->name, call->version, &mv, &err) : err.code;
    /* Its aliases go with it, each a move recorded in the history. */
    reg_db_move why = {.reason = "version deleted", .who = reg_who(call->r)};
    size_t i;
    json_t *a;
    json_array_foreach(rc == 0 ? json_object_get(mv, "aliases") : NULL, i, a) {
        if (rc == 0)
            rc = reg_db_alias_delete(c, call->name, json_string_value(a), &why, &err);
    }
    if (rc == 0)
        rc = reg_db_id(c, &reg_db_models, call->name, &id, &err);
    if (rc == 0)
        rc = exec_changes(c, "DELETE FROM versions WHERE model_id = ? AND version = ?", &err, NULL, "ii", id,
                          call->version);
    json_decref(mv);
    answer(call, c, rc, &err, NULL, NULL);
}

int mlf_mv_delete(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, NAMES_MODEL | NAMES_VERSION, model_version_delete);
}

static void model_version_download_uri(mlf_call *call)
{
    registry *r = call->r;
    qn_req *req = call->req;
    const char *name = call->name;
    int64_t v = call->version;
    qn_err err;
    json_t *mv = NULL;
    char *uri = NULL;
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? reg_db_version_get(c, &reg_db_models, name, v, &mv, &err) : err.code;
    if (rc == QN_NOT_FOUND)
        no_version(&err, name, v);
    qn_stmt *st = rc == 0 ? qn_prepare(c,
                                       "SELECT x.artifact_dir, x.source FROM mlflow_versions x JOIN models m "
                                       "ON m.id = x.model_id WHERE m.name = ? AND x.version = ?",
                                       &err)
                          : NULL;
    if (rc == 0 && !st)
        rc = err.code;
    if (st) {
        qn_bind_text(st, 1, name, -1);
        qn_bind_int64(st, 2, v);
        rc = qn_step(st, &err);
        if (rc == 1) {
            uri = qn_col_is_null(st, 0)
                      ? qn_arena_strdup(qn_req_arena(req), qn_col_text(st, 1))
                      : qn_arena_printf(qn_req_arena(req), "mlflow-artifacts:/%s", qn_col_text(st, 0));
            while ((rc = qn_step(st, &err)) == 1)
                ;
        }
    }
    if (rc >= 0 && !uri) {
        /* A version registered through /v1: its manifest's files are put
         * under an artifact directory of their own, so the MLflow client
         * can download them like any other. */
        const char *dir = qn_arena_printf(qn_req_arena(req), "quern-models/%s/%lld", name, (long long)v);
        json_t *files = json_object_get(json_object_get(mv, "manifest"), "files"), *d;
        const char *f;
        rc = 0;
        json_object_foreach(files, f, d) {
            const char *dg = json_string_value(d);
            struct stat sb;
            char file[PATH_MAX];
            if (rc || !dg || strlen(dg) != 7 + QN_SHA256_HEX)
                continue;
            snprintf(file, sizeof file, "%s/%.2s/%s", r->blob_dir, dg + 7, dg + 7);
            rc = reg_artifact_index(c, qn_arena_printf(qn_req_arena(req), "%s/%s", dir, f), dg,
                                    stat(file, &sb) == 0 ? (int64_t)sb.st_size : 0, &err);
        }
        uri = qn_arena_printf(qn_req_arena(req), "mlflow-artifacts:/%s", dir);
    }
    json_decref(mv);
    answer(call, c, rc < 0 ? rc : 0, &err, "artifact_uri", uri ? json_string(uri) : NULL);
}

int mlf_mv_download_uri(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, NAMES_MODEL | NAMES_VERSION, model_version_download_uri);
}

/* ---- search ------------------------------------------------------------------------ */

/* Sort keys of a search: up to 3 of (field, desc). */
typedef struct mlf_order {
    const char *field[4];
    int desc[4];
    int n;
} mlf_order;

static int cmp_items(const void *a, const void *b, void *ctx)
{
    const mlf_order *o = ctx;
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    for (int i = 0; i < o->n; i++) {
        const json_t *vx = json_object_get(x, o->field[i]), *vy = json_object_get(y, o->field[i]);
        int c;
        if (strcmp(o->field[i], "version") == 0) {
            long long lx = atoll(json_string_value(vx)), ly = atoll(json_string_value(vy));
            c = lx < ly ? -1 : lx > ly;
        } else if (json_is_integer(vx)) {
            c = json_integer_value(vx) < json_integer_value(vy) ? -1 : json_integer_value(vx) > json_integer_value(vy);
        } else {
            c = strcmp(json_string_value(vx) ? json_string_value(vx) : "", json_string_value(vy) ? json_string_value(vy) : "");
        }
        if (c)
            return o->desc[i] ? -c : c;
    }
    return 0;
}

/* order_by entries ("name DESC", "last_updated_timestamp", ...), then the
 * tiebreaks. */
static int parse_order(mlf_in *in, const char *const *fields, mlf_order *o, const char *tie1, int tie1desc,
                       const char *tie2, int tie2desc, qn_err *err)
{
    o->n = 0;
    json_t *list = in->body ? json_object_get(in->body, "order_by") : NULL;
    const char *one = in->body ? NULL : qn_req_query(in->req, "order_by");
    size_t cnt = one ? 1 : json_array_size(list);
    for (size_t i = 0; i < cnt && o->n < 2; i++) {
        const char *s = one ? one : json_string_value(json_array_get(list, i));
        if (!s)
            continue;
        char f[64] = "", dir[8] = "";
        if (sscanf(s, "%63s %7s", f, dir) < 1)
            continue;
        const char *field = NULL;
        for (const char *const *fl = fields; *fl; fl += 2)
            if (strcmp(f, fl[0]) == 0)
                field = fl[1];
        if (!field || (dir[0] && strcasecmp(dir, "ASC") && strcasecmp(dir, "DESC")))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "Invalid order_by clause '%.100s'", s);
        o->field[o->n] = field;
        o->desc[o->n++] = strcasecmp(dir, "DESC") == 0;
    }
    o->field[o->n] = tie1;
    o->desc[o->n++] = tie1desc;
    if (tie2) {
        o->field[o->n] = tie2;
        o->desc[o->n++] = tie2desc;
    }
    return 0;
}

/* Filters, sorts and pages items (stolen) into {field, next_page_token?}. */
static int search_answer(qn_req *req, qn_res *res, mlf_in *in, json_t *items, const mlf_cond *conds, int n,
                         const mlf_order *o, int64_t def, int64_t max, const char *scope, const char *field)
{
    qn_err err;
    int64_t limit = def, offset = 0;
    const char *mr = in_str(in, "max_results"), *tok = in_str(in, "page_token");
    if (mr && (qn_uint_parse("max_results", mr, max, &limit, &err) < 0 || limit < 1)) {
        json_decref(items);
        return mlf_error(res, QN_INVALID_ARGUMENT, "Invalid value for max_results: it must be 1 to %lld",
                         (long long)max);
    }
    if (tok && *tok) {
        char key[QN_PAGE_KEY_MAX];
        if (qn_page_token_decode(tok, scope, key, sizeof key, &err) < 0 ||
            qn_uint_parse("page_token", key, INT64_MAX / 2, &offset, &err) < 0) {
            json_decref(items);
            return mlf_error(res, QN_INVALID_ARGUMENT, "Invalid page token: %s", err.msg);
        }
    }
    size_t cnt = json_array_size(items), m = 0;
    json_t **v = malloc((cnt ? cnt : 1) * sizeof *v);
    if (!v) {
        json_decref(items);
        return mlf_error(res, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t i = 0; i < cnt; i++)
        if (mlf_matches(json_array_get(items, i), conds, n))
            v[m++] = json_array_get(items, i);
    qsort_r(v, m, sizeof *v, cmp_items, (void *)o);
    json_t *page = json_array();
    for (size_t i = (size_t)offset; i < m && (int64_t)(i - (size_t)offset) < limit; i++)
        json_array_append(page, v[i]);
    free(v);
    json_decref(items);
    json_t *out = json_object();
    if (json_array_size(page))
        json_object_set_new(out, field, page);
    else
        json_decref(page);
    if ((size_t)(offset + limit) < m)
        reg_page_next(out, scope, offset + limit);
    return qn_res_json(res, 200, out);
}

/* A search endpoint: what it filters on and orders by, its page sizes, and
 * how it reads its candidates. */
typedef struct mlf_search {
    const char *const *filter_keys;  /* NULL-terminated */
    const char *const *order_fields; /* pairs: order_by name, item field; NULL-terminated */
    const char *tie1, *tie2;         /* the item fields that break ties, tie2 NULL for none */
    int tie1_desc, tie2_desc;
    int64_t page_default, page_max;
    const char *scope; /* of its page tokens */
    const char *field; /* of its answer */
    /* The statement that reads the candidates, narrowed by conds where it can. */
    qn_stmt *(*prepare)(qn_conn *c, const mlf_cond *conds, int n, qn_err *err);
    /* The item of a row of that statement. */
    json_t *(*item)(qn_conn *c, qn_stmt *st, qn_err *err);
} mlf_search;

/* Answers the search s the call asks for: parses filter and order_by, reads
 * the candidates in one read transaction, filters, sorts and pages them. */
static void search(mlf_call *call, const mlf_search *s)
{
    qn_err err;
    mlf_cond conds[MLF_MAX_CONDS];
    mlf_order o;
    int n = 0;
    const char *f = in_str(&call->in, "filter");
    if ((f && mlf_filter(qn_req_arena(call->req), f, s->filter_keys, conds, &n, &err) < 0) ||
        parse_order(&call->in, s->order_fields, &o, s->tie1, s->tie1_desc, s->tie2, s->tie2_desc, &err) < 0) {
        mlf_error(call->res, err.code, "%s", err.msg);
        return;
    }
    json_t *items = json_array();
    qn_conn *c = reg_db_begin(call->r->db, QN_TX_READ, &err);
    qn_stmt *st = c ? s->prepare(c, conds, n, &err) : NULL;
    int rc = st ? 0 : err.code;
    while (st && (rc = qn_step(st, &err)) == 1) {
        json_t *item = s->item(c, st, &err);
        if (!item) {
            rc = err.code;
            break;
        }
        json_array_append_new(items, item);
    }
    if (reg_db_end(call->r->db, c, rc < 0 ? rc : 0, &err) < 0) {
        json_decref(items);
        mlf_fail(call->req, call->res, &err);
        return;
    }
    search_answer(call->req, call->res, &call->in, items, conds, n, &o, s->page_default, s->page_max, s->scope,
                  s->field);
}

static qn_stmt *registered_models_read(qn_conn *c, const mlf_cond *conds, int n, qn_err *err)
{
    (void)conds;
    (void)n;
    return qn_prepare(c, "SELECT " RM_COLS " FROM models ORDER BY name", err);
}

static void registered_model_search(mlf_call *call)
{
    static const char *const keys[] = {"name", NULL};
    static const char *const order_fields[] = {"name", "name", "last_updated_timestamp", "last_updated_timestamp",
                                               "timestamp", "last_updated_timestamp", NULL};
    static const mlf_search s = {.filter_keys = keys, .order_fields = order_fields, .tie1 = "name",
                                 .page_default = 100, .page_max = 1000, .scope = "mlflow_rm",
                                 .field = "registered_models", .prepare = registered_models_read, .item = rm_json};
    search(call, &s);
}

int mlf_rm_search(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, 0, registered_model_search);
}

/* A name = 'x' condition narrows the read to one model. */
static qn_stmt *model_versions_read(qn_conn *c, const mlf_cond *conds, int n, qn_err *err)
{
    const char *only = NULL;
    for (int i = 0; i < n; i++)
        if (strcmp(conds[i].key, "name") == 0 && strcmp(conds[i].op, "=") == 0)
            only = conds[i].vals[0];
    qn_stmt *st = qn_prepare(c, "SELECT " MV_COLS MV_FROM "WHERE (CAST(? AS TEXT) IS NULL OR m.name = ?) "
                                "ORDER BY m.name, v.version DESC", err);
    if (st) {
        only ? qn_bind_text(st, 1, only, -1) : qn_bind_null(st, 1);
        only ? qn_bind_text(st, 2, only, -1) : qn_bind_null(st, 2);
    }
    return st;
}

static void model_version_search(mlf_call *call)
{
    static const char *const keys[] = {"name", "run_id", "source_path", "version_number", NULL};
    static const char *const order_fields[] = {"name", "name", "version_number", "version", "creation_timestamp",
                                               "creation_timestamp", "last_updated_timestamp",
                                               "last_updated_timestamp", "timestamp", "creation_timestamp", NULL};
    static const mlf_search s = {.filter_keys = keys, .order_fields = order_fields, .tie1 = "name",
                                 .tie2 = "version", .tie2_desc = 1, .page_default = 10000, .page_max = 200000,
                                 .scope = "mlflow_mv", .field = "model_versions", .prepare = model_versions_read,
                                 .item = mv_json};
    search(call, &s);
}

int mlf_mv_search(qn_req *req, qn_res *res, void *ud)
{
    return serve(req, res, ud, 0, model_version_search);
}
