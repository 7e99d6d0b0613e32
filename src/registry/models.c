/*
 * models.c - models, versions and aliases of quern-registry.
 *
 * Version numbers come from models.next_version, read and bumped in the same
 * write transaction that inserts the version, so concurrent creators get
 * 1, 2, 3... with no gap and no reuse. An alias move is an upsert plus an
 * outbox event (quern.model.promoted) in one transaction: either both happen
 * or neither does.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/digest.h"
#include "core/json.h"
#include "core/log.h"
#include "core/validate.h"
#include "ml/bundle.h"
#include "registry/registry.h"

#define MAX_VERSION 1000000000LL

static const char *const version_statuses[] = {"ready", "deprecated", "archived", NULL};

/* ---- helpers ------------------------------------------------------------- */

/* Looks up a model's id; QN_NOT_FOUND naming the model when absent. */
static int model_id(qn_conn *c, const char *name, int64_t *id, qn_err *err)
{
    *id = 0;
    qn_stmt *st = qn_prepare(c, "SELECT id FROM models WHERE name = ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, name, -1);
    int rc = qn_step(st, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return qn_err_set(err, QN_NOT_FOUND, "model \"%s\" does not exist", name);
    *id = qn_col_int64(st, 0);
    return 0;
}

static int check_model_name(qn_req *req, qn_res *res, const char **name)
{
    qn_err err;
    *name = qn_req_param(req, "name");
    if (qn_name_check("model", *name, &err) < 0) {
        qn_res_error(res, err.code, "%s", err.msg);
        return -1;
    }
    return 0;
}

/* Parses {n}: a version number, or "latest". *n = 0 means latest. */
static int parse_version_param(qn_req *req, qn_res *res, int64_t *n)
{
    qn_err err;
    const char *s = qn_req_param(req, "n");
    if (s && strcmp(s, "latest") == 0) {
        *n = 0;
        return 0;
    }
    if (qn_uint_parse("version", s, MAX_VERSION, n, &err) < 0) {
        qn_res_error(res, err.code, "%s (or \"latest\")", err.msg);
        return -1;
    }
    return 0;
}

/* tag=KEY or tag=KEY:VALUE from the query string. */
static int parse_tag_filter(qn_req *req, qn_res *res, char **key, char **value)
{
    const char *t = qn_req_query(req, "tag");
    *key = *value = NULL;
    if (!t)
        return 0;
    const char *colon = strchr(t, ':');
    size_t klen = colon ? (size_t)(colon - t) : strlen(t);
    if (klen == 0 || klen > 128 || (colon && strlen(colon + 1) > 1024)) {
        qn_res_error(res, QN_INVALID_ARGUMENT,
                     "tag filter must be KEY or KEY:VALUE (key 1-128 bytes, value up to 1024)");
        return -1;
    }
    *key = qn_arena_strndup(qn_req_arena(req), t, klen);
    if (colon)
        *value = qn_arena_strdup(qn_req_arena(req), colon + 1);
    return 0;
}

static int store_tags(qn_conn *c, const char *sql, int64_t id, int64_t version, json_t *tags,
                      qn_err *err)
{
    const char *k;
    json_t *v;
    json_object_foreach(tags, k, v) {
        qn_stmt *st = qn_prepare(c, sql, err);
        if (!st)
            return err->code;
        int i = 1;
        qn_bind_int64(st, i++, id);
        if (version > 0)
            qn_bind_int64(st, i++, version);
        qn_bind_text(st, i++, k, -1);
        qn_bind_text(st, i, json_string_value(v), -1);
        int rc = qn_step(st, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* {"production": 3, ...} for a model, or the alias names of one version. */
static json_t *aliases_json(qn_conn *c, int64_t id, int64_t version, qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "SELECT alias, version FROM aliases WHERE model_id = ? ORDER BY alias",
                             err);
    if (!st)
        return NULL;
    qn_bind_int64(st, 1, id);
    json_t *out = version ? json_array() : json_object();
    int rc;
    while ((rc = qn_step(st, err)) == 1) {
        if (!version)
            json_object_set_new(out, qn_col_text(st, 0), json_integer(qn_col_int64(st, 1)));
        else if (qn_col_int64(st, 1) == version)
            json_array_append_new(out, json_string(qn_col_text(st, 0)));
    }
    if (rc < 0) {
        json_decref(out);
        return NULL;
    }
    return out;
}

#define MODEL_COLS "id, name, description, tags, created_at, updated_at"

static json_t *model_json(qn_conn *c, qn_stmt *st, qn_err *err)
{
    int64_t id = qn_col_int64(st, 0);
    json_t *m = json_pack("{s:s, s:s, s:o, s:o, s:o}", "name", qn_col_text(st, 1), "description",
                          qn_col_text(st, 2), "tags", qn_json_from_text(qn_col_text(st, 3)), "created_at",
                          qn_json_time(qn_col_int64(st, 4)), "updated_at",
                          qn_json_time(qn_col_int64(st, 5)));
    /* The caller's statement stays valid: these use other statements. */
    qn_stmt *lv = qn_prepare(c, "SELECT MAX(version) FROM versions WHERE model_id = ?", err);
    if (!lv)
        goto fail;
    qn_bind_int64(lv, 1, id);
    if (qn_step(lv, err) < 0)
        goto fail;
    json_object_set_new(m, "latest_version",
                        qn_col_is_null(lv, 0) ? json_null() : json_integer(qn_col_int64(lv, 0)));
    json_t *al = aliases_json(c, id, 0, err);
    if (!al)
        goto fail;
    json_object_set_new(m, "aliases", al);
    return m;
fail:
    json_decref(m);
    return NULL;
}

#define VERSION_COLS                                                                       \
    "v.model_id, m.name, v.version, v.manifest, v.manifest_digest, v.metrics, v.params, " \
    "v.tags, v.dataset, v.description, v.status, v.created_at, v.updated_at"

static json_t *version_json(qn_conn *c, qn_stmt *st, qn_err *err)
{
    int64_t id = qn_col_int64(st, 0), version = qn_col_int64(st, 2);
    json_t *v = json_pack("{s:s, s:I, s:o, s:s, s:o, s:o, s:o, s:o, s:s, s:s, s:o, s:o}", "model",
                          qn_col_text(st, 1), "version", (json_int_t)version, "manifest",
                          qn_json_from_text(qn_col_text(st, 3)), "manifest_digest", qn_col_text(st, 4), "metrics",
                          qn_json_from_text(qn_col_text(st, 5)), "params", qn_json_from_text(qn_col_text(st, 6)), "tags", qn_json_from_text(qn_col_text(st, 7)),
                          "dataset", qn_json_from_text(qn_col_text(st, 8)), "description", qn_col_text(st, 9), "status",
                          qn_col_text(st, 10), "created_at", qn_json_time(qn_col_int64(st, 11)),
                          "updated_at", qn_json_time(qn_col_int64(st, 12)));
    json_t *al = aliases_json(c, id, version, err);
    if (!al) {
        json_decref(v);
        return NULL;
    }
    json_object_set_new(v, "aliases", al);
    return v;
}

/* ---- models -------------------------------------------------------------- */

int reg_models_create(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    static const char *const allowed[] = {"name", "description", "tags", NULL};
    qn_err err;
    const char *name = NULL, *desc = "";
    json_t *tags = NULL;
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    if (qn_json_only(body, allowed, &err) < 0 || qn_json_str(body, "name", 1, 1024, &name, &err) < 0 ||
        qn_name_check("model", name, &err) < 0 ||
        qn_json_str(body, "description", 0, 4096, &desc, &err) < 0 ||
        qn_json_tags(body, "tags", &tags, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);

    char *tags_text = tags ? qn_json_canonical(tags) : strdup("{}");
    int64_t now = qn_now_ms(), id = 0;
    json_t *out = NULL;
    qn_conn *c = qn_store_acquire(r->db, &err);
    if (!c)
        goto fail;
    if (qn_tx_begin(c, QN_TX_WRITE, &err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c,
                             "INSERT INTO models (name, description, tags, created_at, updated_at) "
                             "VALUES (?, ?, ?, ?, ?) RETURNING " MODEL_COLS,
                             &err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, name, -1);
    qn_bind_text(st, 2, desc, -1);
    qn_bind_text(st, 3, tags_text, -1);
    qn_bind_int64(st, 4, now);
    qn_bind_int64(st, 5, now);
    int rc = qn_step(st, &err);
    if (rc == QN_ALREADY_EXISTS) {
        qn_err_set(&err, QN_ALREADY_EXISTS, "model \"%s\" already exists", name);
        goto fail;
    }
    if (rc < 0)
        goto fail;
    id = qn_col_int64(st, 0);
    out = model_json(c, st, &err);
    /* finish the RETURNING statement before committing */
    if (!out || qn_step(st, &err) < 0 || (tags && store_tags(c, "INSERT INTO model_tags (model_id, key, value) VALUES (?, ?, ?)",
                                    id, 0, tags, &err) < 0) ||
        qn_tx_commit(c, &err) < 0)
        goto fail;
    qn_store_release(r->db, c);
    free(tags_text);
    qn_res_header(res, "Location", qn_arena_printf(qn_req_arena(req), "/v1/models/%s", name));
    return qn_res_json(res, 201, out);
fail:
    json_decref(out);
    if (c)
        qn_store_release(r->db, c);
    free(tags_text);
    return reg_fail(req, res, &err);
}

int reg_models_list(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    qn_page pg;
    char after[QN_PAGE_KEY_MAX];
    char *tkey, *tval;
    if (qn_page_begin(&pg, "models", qn_req_query(req, "limit"), 50, 1000,
                      qn_req_query(req, "page_token"), after, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    if (parse_tag_filter(req, res, &tkey, &tval) < 0) {
        qn_page_free(&pg);
        return 0;
    }

    qn_conn *c = qn_store_acquire(r->db, &err);
    if (!c || qn_tx_begin(c, QN_TX_READ, &err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c,
                             "SELECT " MODEL_COLS " FROM models WHERE name > ? AND "
                             "(CAST(? AS TEXT) IS NULL OR id IN (SELECT model_id FROM model_tags "
                             "WHERE key = ? AND (CAST(? AS TEXT) IS NULL OR value = ?))) "
                             "ORDER BY name LIMIT ?",
                             &err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, after, -1);
    tkey ? qn_bind_text(st, 2, tkey, -1) : qn_bind_null(st, 2);
    tkey ? qn_bind_text(st, 3, tkey, -1) : qn_bind_null(st, 3);
    tval ? qn_bind_text(st, 4, tval, -1) : qn_bind_null(st, 4);
    tval ? qn_bind_text(st, 5, tval, -1) : qn_bind_null(st, 5);
    qn_bind_int64(st, 6, pg.limit + 1);
    int rc;
    while ((rc = qn_step(st, &err)) == 1 && !qn_page_full(&pg)) {
        json_t *m = model_json(c, st, &err);
        if (!m)
            goto fail;
        qn_page_add(&pg, m, qn_col_text(st, 1));
    }
    if (rc < 0)
        goto fail;
    qn_tx_rollback(c);
    qn_store_release(r->db, c);
    return qn_res_json(res, 200, qn_page_finish(&pg, "models"));
fail:
    qn_page_free(&pg);
    if (c)
        qn_store_release(r->db, c);
    return reg_fail(req, res, &err);
}

int reg_models_get(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name;
    json_t *out = NULL;
    if (check_model_name(req, res, &name) < 0)
        return 0;
    qn_conn *c = qn_store_acquire(r->db, &err);
    if (!c || qn_tx_begin(c, QN_TX_READ, &err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c, "SELECT " MODEL_COLS " FROM models WHERE name = ?", &err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, name, -1);
    int rc = qn_step(st, &err);
    if (rc == 0)
        qn_err_set(&err, QN_NOT_FOUND, "model \"%s\" does not exist", name);
    if (rc <= 0 || !(out = model_json(c, st, &err)))
        goto fail;
    qn_tx_rollback(c);
    qn_store_release(r->db, c);
    return qn_res_json(res, 200, out);
fail:
    if (c)
        qn_store_release(r->db, c);
    return reg_fail(req, res, &err);
}

int reg_models_delete(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name;
    if (check_model_name(req, res, &name) < 0)
        return 0;
    qn_conn *c = qn_store_acquire(r->db, &err);
    if (!c || qn_tx_begin(c, QN_TX_WRITE, &err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c, "DELETE FROM models WHERE name = ?", &err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, name, -1);
    if (qn_step(st, &err) < 0)
        goto fail;
    if (qn_changes(c) == 0) {
        qn_err_set(&err, QN_NOT_FOUND, "model \"%s\" does not exist", name);
        goto fail;
    }
    if (qn_tx_commit(c, &err) < 0)
        goto fail;
    qn_store_release(r->db, c);
    return qn_res_empty(res, 204);
fail:
    if (c)
        qn_store_release(r->db, c);
    return reg_fail(req, res, &err);
}

/* ---- versions ------------------------------------------------------------ */

/* The manifest of a model version (DESIGN.md section 4) is validated by
 * libquern-ml, the code that will load the bundle, so the registry never
 * stores a manifest that serve would refuse; the registry adds what only it
 * can check: every file is a stored blob. digest gets the manifest's digest. */
static int check_model_manifest(const registry *r, const json_t *m, char digest[QML_DIGEST_STR],
                                qn_err *err)
{
    qml_manifest *mf = NULL;
    char *text = qn_json_canonical(m);
    int rc = text ? qml_manifest_parse(text, strlen(text), &mf, err)
                  : qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    free(text);
    if (rc == 0)
        rc = qml_manifest_digest(mf, digest, err);
    qml_manifest_free(mf);
    if (rc < 0)
        return qn_err_wrap(err, "manifest");
    return reg_manifest_check_blobs(r, m, err);
}

static int check_metrics_params(const json_t *body, qn_err *err)
{
    json_t *metrics = NULL, *params = NULL, *dataset = NULL;
    const char *k;
    json_t *v;
    if (qn_json_obj(body, "metrics", 0, &metrics, err) < 0 ||
        qn_json_obj(body, "params", 0, &params, err) < 0 ||
        qn_json_obj(body, "dataset", 0, &dataset, err) < 0)
        return err->code;
    if (metrics) {
        if (json_object_size(metrics) > 256)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "at most 256 metrics per version");
        json_object_foreach(metrics, k, v) {
            if (!json_is_number(v) || !isfinite(json_number_value(v)))
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "metric \"%.128s\" must be a finite number", k);
        }
    }
    if (params) {
        if (json_object_size(params) > 256)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "at most 256 params per version");
        json_object_foreach(params, k, v) {
            if (json_is_object(v) || json_is_array(v))
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "param \"%.128s\" must be a string, number or boolean", k);
        }
    }
    if (dataset) {
        static const char *const ds_allowed[] = {"name", "version", "digest", NULL};
        const char *dname = NULL, *digest = NULL;
        int64_t dv = 0;
        if (qn_json_only(dataset, ds_allowed, err) < 0 ||
            qn_json_str(dataset, "name", 1, QN_NAME_MAX, &dname, err) < 0 ||
            qn_json_int(dataset, "version", 0, 1, MAX_VERSION, &dv, err) < 0 ||
            qn_json_str(dataset, "digest", 0, 80, &digest, err) < 0)
            return qn_err_wrap(err, "dataset");
        char hex[QN_SHA256_HEX + 1];
        if (digest && qn_digest_parse(digest, hex, err) < 0)
            return qn_err_wrap(err, "dataset.digest");
    }
    return 0;
}

int reg_versions_create(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    static const char *const allowed[] = {"manifest", "metrics", "params", "tags", "dataset",
                                          "description", NULL};
    qn_err err;
    const char *name, *desc = "";
    json_t *manifest = NULL, *tags = NULL, *out = NULL;
    char digest[QML_DIGEST_STR];
    char *manifest_text = NULL, *metrics_text = NULL, *params_text = NULL, *tags_text = NULL,
         *dataset_text = NULL;
    qn_conn *c = NULL;

    if (check_model_name(req, res, &name) < 0)
        return 0;
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    if (qn_json_only(body, allowed, &err) < 0 || qn_json_obj(body, "manifest", 1, &manifest, &err) < 0 ||
        qn_json_str(body, "description", 0, 4096, &desc, &err) < 0 ||
        qn_json_tags(body, "tags", &tags, &err) < 0 || check_metrics_params(body, &err) < 0 ||
        check_model_manifest(r, manifest, digest, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);

    manifest_text = qn_json_canonical(manifest);
    json_t *metrics = json_object_get(body, "metrics"), *params = json_object_get(body, "params"),
           *dataset = json_object_get(body, "dataset");
    metrics_text = metrics && !json_is_null(metrics) ? qn_json_canonical(metrics) : strdup("{}");
    params_text = params && !json_is_null(params) ? qn_json_canonical(params) : strdup("{}");
    tags_text = tags ? qn_json_canonical(tags) : strdup("{}");
    dataset_text = dataset && !json_is_null(dataset) ? qn_json_canonical(dataset) : NULL;
    int64_t now = qn_now_ms(), id, version;
    c = qn_store_acquire(r->db, &err);
    if (!c || qn_tx_begin(c, QN_TX_WRITE, &err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c,
                             "UPDATE models SET next_version = next_version + 1, updated_at = ? "
                             "WHERE name = ? RETURNING id, next_version - 1",
                             &err);
    if (!st)
        goto fail;
    qn_bind_int64(st, 1, now);
    qn_bind_text(st, 2, name, -1);
    int rc = qn_step(st, &err);
    if (rc == 0)
        qn_err_set(&err, QN_NOT_FOUND, "model \"%s\" does not exist; create it with POST /v1/models",
                   name);
    if (rc <= 0)
        goto fail;
    id = qn_col_int64(st, 0);
    version = qn_col_int64(st, 1);
    if (qn_step(st, &err) < 0)
        goto fail;

    st = qn_prepare(c,
                    "INSERT INTO versions (model_id, version, manifest, manifest_digest, metrics, "
                    "params, tags, dataset, description, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    &err);
    if (!st)
        goto fail;
    qn_bind_int64(st, 1, id);
    qn_bind_int64(st, 2, version);
    qn_bind_text(st, 3, manifest_text, -1);
    qn_bind_text(st, 4, digest, -1);
    qn_bind_text(st, 5, metrics_text, -1);
    qn_bind_text(st, 6, params_text, -1);
    qn_bind_text(st, 7, tags_text, -1);
    dataset_text ? qn_bind_text(st, 8, dataset_text, -1) : qn_bind_null(st, 8);
    qn_bind_text(st, 9, desc, -1);
    qn_bind_int64(st, 10, now);
    qn_bind_int64(st, 11, now);
    if (qn_step(st, &err) < 0)
        goto fail;
    if (tags && store_tags(c, "INSERT INTO version_tags (model_id, version, key, value) VALUES (?, ?, ?, ?)",
                           id, version, tags, &err) < 0)
        goto fail;
    st = qn_prepare(c, "SELECT " VERSION_COLS " FROM versions v JOIN models m ON m.id = v.model_id "
                       "WHERE v.model_id = ? AND v.version = ?", &err);
    if (!st)
        goto fail;
    qn_bind_int64(st, 1, id);
    qn_bind_int64(st, 2, version);
    if (qn_step(st, &err) != 1 || !(out = version_json(c, st, &err)))
        goto fail;
    if (qn_step(st, &err) < 0 || qn_tx_commit(c, &err) < 0)
        goto fail;
    qn_store_release(r->db, c);
    qn_counter_add(r->versions_created, NULL, 1);
    qn_log_info(qn_req_trace_id(req), "version registered", "{s:s, s:I, s:s}", "model", name,
                "version", (json_int_t)version, "manifest_digest", digest);
    qn_res_header(res, "Location",
                  qn_arena_printf(qn_req_arena(req), "/v1/models/%s/versions/%lld", name,
                                  (long long)version));
    free(manifest_text);
    free(metrics_text);
    free(params_text);
    free(tags_text);
    free(dataset_text);
    return qn_res_json(res, 201, out);
fail:
    json_decref(out);
    if (c)
        qn_store_release(r->db, c);
    free(manifest_text);
    free(metrics_text);
    free(params_text);
    free(tags_text);
    free(dataset_text);
    return reg_fail(req, res, &err);
}

int reg_versions_list(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name, *status = qn_req_query(req, "status");
    int64_t id, before = 0;
    qn_page pg;
    char after[QN_PAGE_KEY_MAX];
    char *tkey, *tval;
    if (check_model_name(req, res, &name) < 0)
        return 0;
    if (qn_page_begin(&pg, "versions", qn_req_query(req, "limit"), 50, 1000,
                      qn_req_query(req, "page_token"), after, &err) < 0 ||
        (after[0] && qn_uint_parse("page_token", after, MAX_VERSION, &before, &err) < 0)) {
        qn_page_free(&pg);
        return qn_res_error(res, err.code, "%s", err.msg);
    }
    if (parse_tag_filter(req, res, &tkey, &tval) < 0) {
        qn_page_free(&pg);
        return 0;
    }

    qn_conn *c = qn_store_acquire(r->db, &err);
    if (!c || qn_tx_begin(c, QN_TX_READ, &err) < 0 || model_id(c, name, &id, &err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c,
                             "SELECT " VERSION_COLS " FROM versions v JOIN models m ON m.id = v.model_id "
                             "WHERE v.model_id = ? AND (? = 0 OR v.version < ?) "
                             "AND (CAST(? AS TEXT) IS NULL OR v.status = ?) "
                             "AND (CAST(? AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM version_tags t "
                             "WHERE t.model_id = v.model_id AND t.version = v.version AND t.key = ? "
                             "AND (CAST(? AS TEXT) IS NULL OR t.value = ?))) "
                             "ORDER BY v.version DESC LIMIT ?",
                             &err);
    if (!st)
        goto fail;
    qn_bind_int64(st, 1, id);
    qn_bind_int64(st, 2, before);
    qn_bind_int64(st, 3, before);
    status ? qn_bind_text(st, 4, status, -1) : qn_bind_null(st, 4);
    status ? qn_bind_text(st, 5, status, -1) : qn_bind_null(st, 5);
    tkey ? qn_bind_text(st, 6, tkey, -1) : qn_bind_null(st, 6);
    tkey ? qn_bind_text(st, 7, tkey, -1) : qn_bind_null(st, 7);
    tval ? qn_bind_text(st, 8, tval, -1) : qn_bind_null(st, 8);
    tval ? qn_bind_text(st, 9, tval, -1) : qn_bind_null(st, 9);
    qn_bind_int64(st, 10, pg.limit + 1);
    int rc;
    while ((rc = qn_step(st, &err)) == 1 && !qn_page_full(&pg)) {
        json_t *v = version_json(c, st, &err);
        if (!v)
            goto fail;
        qn_page_add_int(&pg, v, qn_col_int64(st, 2));
    }
    if (rc < 0)
        goto fail;
    qn_tx_rollback(c);
    qn_store_release(r->db, c);
    return qn_res_json(res, 200, qn_page_finish(&pg, "versions"));
fail:
    qn_page_free(&pg);
    if (c)
        qn_store_release(r->db, c);
    return reg_fail(req, res, &err);
}

/* Loads one version as JSON into *out; QN_NOT_FOUND naming what is missing. */
static int load_version(qn_conn *c, const char *name, int64_t n, json_t **out, qn_err *err)
{
    int64_t id;
    if (model_id(c, name, &id, err) < 0)
        return err->code;
    qn_stmt *st = qn_prepare(c,
                             "SELECT " VERSION_COLS " FROM versions v JOIN models m ON m.id = v.model_id "
                             "WHERE v.model_id = ? AND (? = 0 OR v.version = ?) "
                             "ORDER BY v.version DESC LIMIT 1",
                             err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, id);
    qn_bind_int64(st, 2, n);
    qn_bind_int64(st, 3, n);
    int rc = qn_step(st, err);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        if (n)
            return qn_err_set(err, QN_NOT_FOUND, "model \"%s\" has no version %lld", name, (long long)n);
        return qn_err_set(err, QN_NOT_FOUND, "model \"%s\" has no versions yet", name);
    }
    if (!(*out = version_json(c, st, err)))
        return err->code;
    if ((rc = qn_step(st, err)) < 0) {
        json_decref(*out);
        *out = NULL;
        return rc;
    }
    return 0;
}

int reg_versions_get(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name;
    int64_t n;
    json_t *out = NULL;
    if (check_model_name(req, res, &name) < 0 || parse_version_param(req, res, &n) < 0)
        return 0;
    qn_conn *c = qn_store_acquire(r->db, &err);
    if (!c || qn_tx_begin(c, QN_TX_READ, &err) < 0 || load_version(c, name, n, &out, &err) < 0)
        goto fail;
    qn_tx_rollback(c);
    qn_store_release(r->db, c);
    return qn_res_json(res, 200, out);
fail:
    if (c)
        qn_store_release(r->db, c);
    return reg_fail(req, res, &err);
}

/* Tags in a PATCH follow JSON merge patch: a string sets a tag, null removes it. */
static int check_tag_patch(const json_t *tags, qn_err *err)
{
    const char *k;
    json_t *v;
    if (json_object_size(tags) > 64)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "at most 64 tags per request");
    json_object_foreach((json_t *)tags, k, v) {
        if (!*k || strlen(k) > 128)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "tag keys must be 1 to 128 bytes long");
        if (!json_is_null(v) && (!json_is_string(v) || json_string_length(v) > 1024))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "tag \"%.128s\" must be a string of at most 1024 bytes, or null to remove it", k);
    }
    return 0;
}

int reg_versions_patch(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    static const char *const allowed[] = {"description", "tags", "status", NULL};
    qn_err err;
    const char *name, *desc = NULL, *status = NULL;
    json_t *tags = NULL, *out = NULL;
    int64_t n, id;
    char *tags_text = NULL;
    qn_conn *c = NULL;

    if (check_model_name(req, res, &name) < 0 || parse_version_param(req, res, &n) < 0)
        return 0;
    if (n == 0)
        return qn_res_error(res, QN_INVALID_ARGUMENT, "PATCH needs an explicit version number, not \"latest\"");
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    if (qn_json_only(body, allowed, &err) < 0 || qn_json_str(body, "description", 0, 4096, &desc, &err) < 0 ||
        qn_json_str(body, "status", 0, 32, &status, &err) < 0 || qn_json_obj(body, "tags", 0, &tags, &err) < 0 ||
        (tags && check_tag_patch(tags, &err) < 0))
        return qn_res_error(res, err.code, "%s", err.msg);
    if (status) {
        int ok = 0;
        for (const char *const *s = version_statuses; *s; s++)
            ok |= strcmp(*s, status) == 0;
        if (!ok)
            return qn_res_error(res, QN_INVALID_ARGUMENT,
                                "status \"%s\" is unknown; use ready, deprecated or archived", status);
    }

    c = qn_store_acquire(r->db, &err);
    if (!c || qn_tx_begin(c, QN_TX_WRITE, &err) < 0 || load_version(c, name, n, &out, &err) < 0 ||
        model_id(c, name, &id, &err) < 0)
        goto fail;
    if (tags) {
        json_t *merged = json_deep_copy(json_object_get(out, "tags"));
        const char *k;
        json_t *v;
        json_object_foreach(tags, k, v) {
            qn_stmt *st;
            if (json_is_null(v)) {
                json_object_del(merged, k);
                st = qn_prepare(c, "DELETE FROM version_tags WHERE model_id = ? AND version = ? AND key = ?", &err);
            } else {
                json_object_set(merged, k, v);
                st = qn_prepare(c, "INSERT INTO version_tags (model_id, version, key, value) VALUES (?, ?, ?, ?) "
                                   "ON CONFLICT (model_id, version, key) DO UPDATE SET value = excluded.value", &err);
            }
            if (!st) {
                json_decref(merged);
                goto fail;
            }
            qn_bind_int64(st, 1, id);
            qn_bind_int64(st, 2, n);
            qn_bind_text(st, 3, k, -1);
            if (!json_is_null(v))
                qn_bind_text(st, 4, json_string_value(v), -1);
            if (qn_step(st, &err) < 0) {
                json_decref(merged);
                goto fail;
            }
        }
        if (json_object_size(merged) > 64) {
            json_decref(merged);
            qn_err_set(&err, QN_INVALID_ARGUMENT, "a version may have at most 64 tags");
            goto fail;
        }
        tags_text = qn_json_canonical(merged);
        json_decref(merged);
    }
    json_decref(out);
    out = NULL;
    qn_stmt *st = qn_prepare(c,
                             "UPDATE versions SET description = COALESCE(?, description), "
                             "status = COALESCE(?, status), tags = COALESCE(?, tags), updated_at = ? "
                             "WHERE model_id = ? AND version = ?",
                             &err);
    if (!st)
        goto fail;
    desc ? qn_bind_text(st, 1, desc, -1) : qn_bind_null(st, 1);
    status ? qn_bind_text(st, 2, status, -1) : qn_bind_null(st, 2);
    tags_text ? qn_bind_text(st, 3, tags_text, -1) : qn_bind_null(st, 3);
    qn_bind_int64(st, 4, qn_now_ms());
    qn_bind_int64(st, 5, id);
    qn_bind_int64(st, 6, n);
    if (qn_step(st, &err) < 0 || load_version(c, name, n, &out, &err) < 0 || qn_tx_commit(c, &err) < 0)
        goto fail;
    qn_store_release(r->db, c);
    free(tags_text);
    return qn_res_json(res, 200, out);
fail:
    json_decref(out);
    if (c)
        qn_store_release(r->db, c);
    free(tags_text);
    return reg_fail(req, res, &err);
}

/* ---- aliases ------------------------------------------------------------- */

static int check_alias(qn_req *req, qn_res *res, const char **name, const char **alias)
{
    qn_err err;
    if (check_model_name(req, res, name) < 0)
        return -1;
    *alias = qn_req_param(req, "alias");
    if (qn_name_check("alias", *alias, &err) < 0) {
        qn_res_error(res, err.code, "%s", err.msg);
        return -1;
    }
    if (strcmp(*alias, "latest") == 0) {
        qn_res_error(res, QN_INVALID_ARGUMENT, "\"latest\" is reserved: it always means the newest version");
        return -1;
    }
    return 0;
}

int reg_aliases_list(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name;
    int64_t id;
    json_t *list = json_array();
    if (check_model_name(req, res, &name) < 0) {
        json_decref(list);
        return 0;
    }
    qn_conn *c = qn_store_acquire(r->db, &err);
    if (!c || qn_tx_begin(c, QN_TX_READ, &err) < 0 || model_id(c, name, &id, &err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c, "SELECT alias, version, updated_at FROM aliases WHERE model_id = ? ORDER BY alias",
                             &err);
    if (!st)
        goto fail;
    qn_bind_int64(st, 1, id);
    int rc;
    while ((rc = qn_step(st, &err)) == 1)
        json_array_append_new(list, json_pack("{s:s, s:I, s:o}", "alias", qn_col_text(st, 0), "version",
                                              (json_int_t)qn_col_int64(st, 1), "updated_at",
                                              qn_json_time(qn_col_int64(st, 2))));
    if (rc < 0)
        goto fail;
    qn_tx_rollback(c);
    qn_store_release(r->db, c);
    return qn_res_json(res, 200, json_pack("{s:s, s:o}", "model", name, "aliases", list));
fail:
    json_decref(list);
    if (c)
        qn_store_release(r->db, c);
    return reg_fail(req, res, &err);
}

int reg_aliases_get(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name, *alias;
    int64_t id;
    if (check_alias(req, res, &name, &alias) < 0)
        return 0;
    qn_conn *c = qn_store_acquire(r->db, &err);
    if (!c || qn_tx_begin(c, QN_TX_READ, &err) < 0 || model_id(c, name, &id, &err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c, "SELECT version, updated_at FROM aliases WHERE model_id = ? AND alias = ?", &err);
    if (!st)
        goto fail;
    qn_bind_int64(st, 1, id);
    qn_bind_text(st, 2, alias, -1);
    int rc = qn_step(st, &err);
    if (rc == 0)
        qn_err_set(&err, QN_NOT_FOUND, "model \"%s\" has no alias \"%s\"", name, alias);
    if (rc <= 0)
        goto fail;
    json_t *out = json_pack("{s:s, s:s, s:I, s:o}", "model", name, "alias", alias, "version",
                            (json_int_t)qn_col_int64(st, 0), "updated_at", qn_json_time(qn_col_int64(st, 1)));
    if (qn_step(st, &err) < 0) {
        json_decref(out);
        goto fail;
    }
    qn_tx_rollback(c);
    qn_store_release(r->db, c);
    return qn_res_json(res, 200, out);
fail:
    if (c)
        qn_store_release(r->db, c);
    return reg_fail(req, res, &err);
}

int reg_aliases_put(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    static const char *const allowed[] = {"version", NULL};
    qn_err err;
    const char *name, *alias;
    int64_t version, id, previous = 0;
    if (check_alias(req, res, &name, &alias) < 0)
        return 0;
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    if (qn_json_only(body, allowed, &err) < 0 ||
        qn_json_int(body, "version", 1, 1, MAX_VERSION, &version, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);

    qn_conn *c = qn_store_acquire(r->db, &err);
    if (!c || qn_tx_begin(c, QN_TX_WRITE, &err) < 0 || model_id(c, name, &id, &err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c, "SELECT 1 FROM versions WHERE model_id = ? AND version = ?", &err);
    if (!st)
        goto fail;
    qn_bind_int64(st, 1, id);
    qn_bind_int64(st, 2, version);
    int rc = qn_step(st, &err);
    if (rc == 0)
        qn_err_set(&err, QN_NOT_FOUND, "model \"%s\" has no version %lld", name, (long long)version);
    if (rc <= 0 || qn_step(st, &err) < 0)
        goto fail;
    st = qn_prepare(c, "SELECT version FROM aliases WHERE model_id = ? AND alias = ?", &err);
    if (!st)
        goto fail;
    qn_bind_int64(st, 1, id);
    qn_bind_text(st, 2, alias, -1);
    if ((rc = qn_step(st, &err)) < 0)
        goto fail;
    if (rc == 1) {
        previous = qn_col_int64(st, 0);
        if (qn_step(st, &err) < 0)
            goto fail;
    }
    if (previous != version) {
        st = qn_prepare(c,
                        "INSERT INTO aliases (model_id, alias, version, updated_at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (model_id, alias) DO UPDATE SET version = excluded.version, "
                        "updated_at = excluded.updated_at",
                        &err);
        if (!st)
            goto fail;
        qn_bind_int64(st, 1, id);
        qn_bind_text(st, 2, alias, -1);
        qn_bind_int64(st, 3, version);
        qn_bind_int64(st, 4, qn_now_ms());
        if (qn_step(st, &err) < 0)
            goto fail;
        char tp[QN_TRACEPARENT_LEN + 1];
        qn_traceparent_format(qn_req_trace(req), tp);
        json_t *data = json_pack("{s:s, s:s, s:I, s:o}", "model", name, "alias", alias, "version",
                                 (json_int_t)version, "previous_version",
                                 previous ? json_integer(previous) : json_null());
        if (reg_event_append(c, "quern.model.promoted", data, tp, &err) < 0)
            goto fail;
    }
    if (qn_tx_commit(c, &err) < 0)
        goto fail;
    qn_store_release(r->db, c);
    qn_outbox_kick(r->outbox);
    if (previous != version) {
        qn_counter_add(r->alias_moves, NULL, 1);
        qn_log_info(qn_req_trace_id(req), "alias moved", "{s:s, s:s, s:I, s:I}", "model", name, "alias",
                    alias, "version", (json_int_t)version, "previous_version", (json_int_t)previous);
    }
    return qn_res_json(res, 200, json_pack("{s:s, s:s, s:I, s:o}", "model", name, "alias", alias, "version",
                                           (json_int_t)version, "previous_version",
                                           previous ? json_integer(previous) : json_null()));
fail:
    if (c)
        qn_store_release(r->db, c);
    return reg_fail(req, res, &err);
}

int reg_aliases_delete(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name, *alias;
    int64_t id;
    if (check_alias(req, res, &name, &alias) < 0)
        return 0;
    qn_conn *c = qn_store_acquire(r->db, &err);
    if (!c || qn_tx_begin(c, QN_TX_WRITE, &err) < 0 || model_id(c, name, &id, &err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c, "DELETE FROM aliases WHERE model_id = ? AND alias = ?", &err);
    if (!st)
        goto fail;
    qn_bind_int64(st, 1, id);
    qn_bind_text(st, 2, alias, -1);
    if (qn_step(st, &err) < 0)
        goto fail;
    if (qn_changes(c) == 0) {
        qn_err_set(&err, QN_NOT_FOUND, "model \"%s\" has no alias \"%s\"", name, alias);
        goto fail;
    }
    if (qn_tx_commit(c, &err) < 0)
        goto fail;
    qn_store_release(r->db, c);
    return qn_res_empty(res, 204);
fail:
    if (c)
        qn_store_release(r->db, c);
    return reg_fail(req, res, &err);
}
