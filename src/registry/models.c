/*
 * models.c - the HTTP handlers of models, versions and aliases in
 * quern-registry.
 *
 * Each handler checks its request (names, bodies, manifests: 4xx that say
 * what to fix), runs the data layer (db.c) in one transaction, and answers.
 * Gapless version numbers and the atomic alias move with its
 * quern.model.promoted event are the data layer's.
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

#define MAX_VERSION REG_MAX_VERSION

static const char *const version_statuses[] = {"ready", "deprecated", "archived", NULL};

/* ---- helpers ------------------------------------------------------------- */

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

/* ---- models -------------------------------------------------------------- */

int reg_models_create(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    static const char *const allowed[] = {"name", "description", "tags", NULL};
    qn_err err;
    const char *name = NULL, *desc = "";
    json_t *tags = NULL, *out = NULL;
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    if (qn_json_only(body, allowed, &err) < 0 || qn_json_str(body, "name", 1, 1024, &name, &err) < 0 ||
        qn_name_check("model", name, &err) < 0 ||
        qn_json_str(body, "description", 0, 4096, &desc, &err) < 0 ||
        qn_json_tags(body, "tags", &tags, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? reg_db_model_create(c, name, desc, tags, qn_now_ms(), &out, &err) : err.code;
    if (reg_db_end(r->db, c, rc, &err) < 0) {
        json_decref(out);
        return reg_fail(req, res, &err);
    }
    qn_res_header(res, "Location", qn_arena_printf(qn_req_arena(req), "/v1/models/%s", name));
    return qn_res_json(res, 201, out);
}

int reg_models_list(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    qn_page pg;
    char after[QN_PAGE_KEY_MAX];
    char *tkey, *tval;
    if (reg_page_begin(req, res, &pg, "models", after, NULL) < 0)
        return 0;
    if (parse_tag_filter(req, res, &tkey, &tval) < 0) {
        qn_page_free(&pg);
        return 0;
    }
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? reg_db_models_page(c, after, tkey, tval, &pg, &err) : err.code;
    return reg_answer_page(r->db, req, res, c, rc, &err, &pg, "models");
}

int reg_models_get(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name;
    json_t *out = NULL;
    if (check_model_name(req, res, &name) < 0)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? reg_db_model_get(c, name, &out, &err) : err.code;
    return reg_answer(r->db, req, res, c, rc, &err, 200, out);
}

int reg_models_delete(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name;
    if (check_model_name(req, res, &name) < 0)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? reg_db_model_delete(c, name, &err) : err.code;
    return reg_answer(r->db, req, res, c, rc, &err, 204, NULL);
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
                                          "description", "run_id", NULL};
    qn_err err;
    const char *name, *desc = "", *run_id = NULL;
    json_t *manifest = NULL, *tags = NULL, *out = NULL;
    char digest[QML_DIGEST_STR];

    if (check_model_name(req, res, &name) < 0)
        return 0;
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    if (qn_json_only(body, allowed, &err) < 0 || qn_json_obj(body, "manifest", 1, &manifest, &err) < 0 ||
        qn_json_str(body, "description", 0, 4096, &desc, &err) < 0 ||
        qn_json_str(body, "run_id", 0, 64, &run_id, &err) < 0 ||
        qn_json_tags(body, "tags", &tags, &err) < 0 || check_metrics_params(body, &err) < 0 ||
        check_model_manifest(r, manifest, digest, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);

    json_t *metrics = json_object_get(body, "metrics"), *params = json_object_get(body, "params"),
           *dataset = json_object_get(body, "dataset");
    char *manifest_text = qn_json_canonical(manifest);
    char *metrics_text = metrics && !json_is_null(metrics) ? qn_json_canonical(metrics) : NULL;
    char *params_text = params && !json_is_null(params) ? qn_json_canonical(params) : NULL;
    char *dataset_text = dataset && !json_is_null(dataset) ? qn_json_canonical(dataset) : NULL;
    reg_db_version_in in = {.manifest = {manifest_text, digest}, .metrics = metrics_text,
                            .params = params_text, .dataset = dataset_text, .description = desc,
                            .tags = tags, .run_id = run_id};
    int64_t version = 0;
    qn_conn *c = NULL;
    int rc;
    if (!manifest_text || (metrics && !json_is_null(metrics) && !metrics_text) ||
        (params && !json_is_null(params) && !params_text) || (dataset && !json_is_null(dataset) && !dataset_text))
        rc = qn_err_set(&err, QN_RESOURCE_EXHAUSTED, "out of memory");
    else if (!(c = reg_db_begin(r->db, QN_TX_WRITE, &err)))
        rc = err.code;
    else
        rc = reg_db_model_version_create(c, name, &in, qn_now_ms(), &version, &out, &err);
    free(manifest_text);
    free(metrics_text);
    free(params_text);
    free(dataset_text);
    if ((rc = reg_db_end(r->db, c, rc, &err)) < 0) {
        json_decref(out);
        return reg_fail(req, res, &err);
    }
    qn_counter_add(r->versions_created, NULL, 1);
    qn_log_info(qn_req_trace_id(req), "version registered", "{s:s, s:I, s:s}", "model", name,
                "version", (json_int_t)version, "manifest_digest", digest);
    qn_res_header(res, "Location",
                  qn_arena_printf(qn_req_arena(req), "/v1/models/%s/versions/%lld", name,
                                  (long long)version));
    return qn_res_json(res, 201, out);
}

/* A version status: one of version_statuses (PATCH sets it, ?status= filters by it). */
static int check_version_status(const char *status, qn_err *err)
{
    for (const char *const *s = version_statuses; *s; s++)
        if (strcmp(*s, status) == 0)
            return 0;
    return qn_err_set(err, QN_INVALID_ARGUMENT,
                      "status \"%.32s\" is unknown; use ready, deprecated or archived", status);
}

int reg_versions_list(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name;
    int64_t before = 0;
    qn_page pg;
    char after[QN_PAGE_KEY_MAX];
    char *tkey, *tval;
    if (check_model_name(req, res, &name) < 0)
        return 0;
    if (reg_page_begin(req, res, &pg, "versions", after, &before) < 0)
        return 0;
    const char *status = qn_req_query(req, "status");
    if (status && check_version_status(status, &err) < 0) {
        qn_page_free(&pg);
        return qn_res_error(res, err.code, "%s", err.msg);
    }
    if (parse_tag_filter(req, res, &tkey, &tval) < 0) {
        qn_page_free(&pg);
        return 0;
    }
    const char *const filters[3] = {status, tkey, tval};
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? reg_db_versions_page(c, &reg_db_models, name, before, filters, &pg, &err) : err.code;
    return reg_answer_page(r->db, req, res, c, rc, &err, &pg, "versions");
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
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? reg_db_version_get(c, &reg_db_models, name, n, &out, &err) : err.code;
    return reg_answer(r->db, req, res, c, rc, &err, 200, out);
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
    int64_t n;

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
    if (status && check_version_status(status, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);

    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? reg_db_model_version_patch(c, name, n, desc, status, tags, &out, &err) : err.code;
    return reg_answer(r->db, req, res, c, rc, &err, 200, out);
}

/* ---- aliases ------------------------------------------------------------- */

int reg_check_alias(qn_req *req, qn_res *res, const char **name, const char **alias)
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
    json_t *out = NULL;
    if (check_model_name(req, res, &name) < 0)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? reg_db_aliases_list(c, name, &out, &err) : err.code;
    return reg_answer(r->db, req, res, c, rc, &err, 200, out);
}

int reg_aliases_get(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name, *alias;
    json_t *out = NULL;
    if (reg_check_alias(req, res, &name, &alias) < 0)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? reg_db_alias_get(c, name, alias, &out, &err) : err.code;
    return reg_answer(r->db, req, res, c, rc, &err, 200, out);
}

int reg_aliases_put(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    static const char *const allowed[] = {"version", "reason", "evidence", NULL};
    qn_err err;
    const char *name, *alias, *reason = NULL;
    char *evidence = NULL;
    int64_t version, previous = 0;
    if (reg_check_alias(req, res, &name, &alias) < 0)
        return 0;
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    if (qn_json_only(body, allowed, &err) < 0 ||
        qn_json_int(body, "version", 1, 1, MAX_VERSION, &version, &err) < 0 ||
        qn_json_str(body, "reason", 0, REG_MAX_REASON, &reason, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    /* evidence: an automatic move's figures (the monitor's promotion policy) */
    const json_t *ev = json_object_get(body, "evidence");
    if (ev && !json_is_null(ev)) {
        if (!json_is_object(ev))
            return qn_res_error(res, QN_INVALID_ARGUMENT, "evidence: must be a JSON object (or null)");
        char *text = qn_json_canonical(ev);
        if (!text)
            return qn_res_error(res, QN_RESOURCE_EXHAUSTED, "out of memory");
        size_t n = strlen(text);
        if (n > REG_MAX_EVIDENCE) {
            free(text);
            return qn_res_error(res, QN_INVALID_ARGUMENT, "evidence: %zu bytes; keep it under %d", n,
                                REG_MAX_EVIDENCE);
        }
        evidence = qn_arena_strdup(qn_req_arena(req), text);
        free(text);
    }
    if (reg_alias_move(r, req, name, alias, version, reason, evidence, &previous, &err) < 0)
        return reg_fail(req, res, &err);
    return qn_res_json(res, 200, json_pack("{s:s, s:s, s:I, s:o}", "model", name, "alias", alias, "version",
                                           (json_int_t)version, "previous_version",
                                           previous ? json_integer(previous) : json_null()));
}

int reg_aliases_delete(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name, *alias;
    if (reg_check_alias(req, res, &name, &alias) < 0)
        return 0;
    reg_db_move mv = {.who = reg_who(r)};
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? reg_db_alias_delete(c, name, alias, &mv, &err) : err.code;
    return reg_answer(r->db, req, res, c, rc, &err, 204, NULL);
}
