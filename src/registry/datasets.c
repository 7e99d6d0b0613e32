/*
 * datasets.c - dataset snapshots in quern-registry.
 *
 * A dataset version is an immutable snapshot described by a manifest like a
 * model's: {"format":"quern.dataset/1","files":{"data.csv":"sha256:..."},
 * "schema":...,"rows":N,"report":...}. The dataset itself is created by its
 * first version; numbers are gapless per dataset, as for models.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/digest.h"
#include "core/json.h"
#include "core/log.h"
#include "core/validate.h"
#include "registry/registry.h"

#define MAX_VERSION 1000000000LL

#define DSV_COLS "d.name, v.version, v.manifest, v.manifest_digest, v.description, v.tags, v.created_at"

static json_t *dsv_json(qn_stmt *st)
{
    return json_pack("{s:s, s:I, s:o, s:s, s:s, s:o, s:o}", "dataset", qn_col_text(st, 0), "version",
                     (json_int_t)qn_col_int64(st, 1), "manifest", qn_json_from_text(qn_col_text(st, 2)), "manifest_digest",
                     qn_col_text(st, 3), "description", qn_col_text(st, 4), "tags", qn_json_from_text(qn_col_text(st, 5)),
                     "created_at", qn_json_time(qn_col_int64(st, 6)));
}

static int check_dataset_name(qn_req *req, qn_res *res, const char **name)
{
    qn_err err;
    *name = qn_req_param(req, "name");
    if (qn_name_check("dataset", *name, &err) < 0) {
        qn_res_error(res, err.code, "%s", err.msg);
        return -1;
    }
    return 0;
}

int reg_datasets_list(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    qn_page pg;
    char after[QN_PAGE_KEY_MAX];
    if (qn_page_begin(&pg, "datasets", qn_req_query(req, "limit"), 50, 1000,
                      qn_req_query(req, "page_token"), after, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    qn_conn *c = qn_store_acquire(r->db, &err);
    if (!c)
        goto fail;
    qn_stmt *st = qn_prepare(c,
                             "SELECT name, latest_version, created_at, updated_at FROM datasets "
                             "WHERE name > ? ORDER BY name LIMIT ?",
                             &err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, after, -1);
    qn_bind_int64(st, 2, pg.limit + 1);
    int rc;
    while ((rc = qn_step(st, &err)) == 1 && !qn_page_full(&pg))
        qn_page_add(&pg,
                    json_pack("{s:s, s:I, s:o, s:o}", "name", qn_col_text(st, 0), "latest_version",
                              (json_int_t)qn_col_int64(st, 1), "created_at",
                              qn_json_time(qn_col_int64(st, 2)), "updated_at",
                              qn_json_time(qn_col_int64(st, 3))),
                    qn_col_text(st, 0));
    if (rc < 0)
        goto fail;
    qn_store_release(r->db, c);
    return qn_res_json(res, 200, qn_page_finish(&pg, "datasets"));
fail:
    qn_page_free(&pg);
    if (c)
        qn_store_release(r->db, c);
    return reg_fail(req, res, &err);
}

static int check_dataset_manifest(const registry *r, const json_t *m, qn_err *err)
{
    const char *format = NULL;
    json_t *files = NULL;
    if (qn_json_str(m, "format", 1, 64, &format, err) < 0)
        return qn_err_wrap(err, "manifest");
    if (strcmp(format, "quern.dataset/1") != 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "manifest format \"%.64s\" is not supported; use \"quern.dataset/1\"", format);
    if (qn_json_obj(m, "files", 1, &files, err) < 0)
        return qn_err_wrap(err, "manifest");
    if (json_object_size(files) == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest \"files\" is empty; a dataset needs its files");
    return reg_manifest_check_blobs(r, m, err);
}

int reg_dataset_versions_create(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    static const char *const allowed[] = {"manifest", "description", "tags", NULL};
    qn_err err;
    const char *name, *desc = "";
    json_t *manifest = NULL, *tags = NULL, *out = NULL;
    if (check_dataset_name(req, res, &name) < 0)
        return 0;
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    if (qn_json_only(body, allowed, &err) < 0 || qn_json_obj(body, "manifest", 1, &manifest, &err) < 0 ||
        qn_json_str(body, "description", 0, 4096, &desc, &err) < 0 ||
        qn_json_tags(body, "tags", &tags, &err) < 0 || check_dataset_manifest(r, manifest, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);

    char *manifest_text = qn_json_canonical(manifest);
    char *tags_text = tags ? qn_json_canonical(tags) : strdup("{}");
    char hex[QN_SHA256_HEX + 1], digest[80];
    qn_sha256_buf(manifest_text, strlen(manifest_text), hex);
    snprintf(digest, sizeof digest, "sha256:%s", hex);
    int64_t now = qn_now_ms();

    qn_conn *c = qn_store_acquire(r->db, &err);
    if (!c || qn_tx_begin(c, QN_TX_WRITE, &err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c,
                             "INSERT INTO datasets (name, created_at, updated_at) VALUES (?, ?, ?) "
                             "ON CONFLICT (name) DO UPDATE SET latest_version = datasets.latest_version + 1, "
                             "updated_at = excluded.updated_at RETURNING id, latest_version",
                             &err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, name, -1);
    qn_bind_int64(st, 2, now);
    qn_bind_int64(st, 3, now);
    if (qn_step(st, &err) != 1)
        goto fail;
    /* A new dataset starts at latest_version 1 (this, its first version); an
     * existing one was bumped, so latest_version is the number this takes. */
    int64_t id = qn_col_int64(st, 0), version = qn_col_int64(st, 1);
    if (qn_step(st, &err) < 0)
        goto fail;
    st = qn_prepare(c,
                    "INSERT INTO dataset_versions (dataset_id, version, manifest, manifest_digest, "
                    "description, tags, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    &err);
    if (!st)
        goto fail;
    qn_bind_int64(st, 1, id);
    qn_bind_int64(st, 2, version);
    qn_bind_text(st, 3, manifest_text, -1);
    qn_bind_text(st, 4, digest, -1);
    qn_bind_text(st, 5, desc, -1);
    qn_bind_text(st, 6, tags_text, -1);
    qn_bind_int64(st, 7, now);
    if (qn_step(st, &err) < 0)
        goto fail;
    st = qn_prepare(c, "SELECT " DSV_COLS " FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id "
                       "WHERE v.dataset_id = ? AND v.version = ?", &err);
    if (!st)
        goto fail;
    qn_bind_int64(st, 1, id);
    qn_bind_int64(st, 2, version);
    if (qn_step(st, &err) != 1)
        goto fail;
    out = dsv_json(st);
    if (qn_step(st, &err) < 0 || qn_tx_commit(c, &err) < 0)
        goto fail;
    qn_store_release(r->db, c);
    free(manifest_text);
    free(tags_text);
    qn_log_info(qn_req_trace_id(req), "dataset version registered", "{s:s, s:I}", "dataset", name,
                "version", (json_int_t)version);
    qn_res_header(res, "Location", qn_arena_printf(qn_req_arena(req), "/v1/datasets/%s/versions/%lld",
                                                   name, (long long)version));
    return qn_res_json(res, 201, out);
fail:
    json_decref(out);
    if (c)
        qn_store_release(r->db, c);
    free(manifest_text);
    free(tags_text);
    return reg_fail(req, res, &err);
}

static int dataset_id(qn_conn *c, const char *name, int64_t *id, qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "SELECT id FROM datasets WHERE name = ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, name, -1);
    int rc = qn_step(st, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return qn_err_set(err, QN_NOT_FOUND, "dataset \"%s\" does not exist", name);
    *id = qn_col_int64(st, 0);
    return (rc = qn_step(st, err)) < 0 ? rc : 0;
}

int reg_dataset_versions_list(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name;
    int64_t before = 0, id = 0;
    qn_page pg;
    char after[QN_PAGE_KEY_MAX];
    if (check_dataset_name(req, res, &name) < 0)
        return 0;
    if (qn_page_begin(&pg, "dataset_versions", qn_req_query(req, "limit"), 50, 1000,
                      qn_req_query(req, "page_token"), after, &err) < 0 ||
        (after[0] && qn_uint_parse("page_token", after, MAX_VERSION, &before, &err) < 0)) {
        qn_page_free(&pg);
        return qn_res_error(res, err.code, "%s", err.msg);
    }
    qn_conn *c = qn_store_acquire(r->db, &err);
    if (!c || qn_tx_begin(c, QN_TX_READ, &err) < 0 || dataset_id(c, name, &id, &err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c, "SELECT " DSV_COLS " FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id "
                                "WHERE v.dataset_id = ? AND (? = 0 OR v.version < ?) ORDER BY v.version DESC LIMIT ?",
                             &err);
    if (!st)
        goto fail;
    qn_bind_int64(st, 1, id);
    qn_bind_int64(st, 2, before);
    qn_bind_int64(st, 3, before);
    qn_bind_int64(st, 4, pg.limit + 1);
    int rc;
    while ((rc = qn_step(st, &err)) == 1 && !qn_page_full(&pg))
        qn_page_add_int(&pg, dsv_json(st), qn_col_int64(st, 1));
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

int reg_dataset_versions_get(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name, *n = qn_req_param(req, "n");
    int64_t version = 0, id = 0;
    if (check_dataset_name(req, res, &name) < 0)
        return 0;
    if (strcmp(n, "latest") != 0 && qn_uint_parse("version", n, MAX_VERSION, &version, &err) < 0)
        return qn_res_error(res, err.code, "%s (or \"latest\")", err.msg);
    qn_conn *c = qn_store_acquire(r->db, &err);
    if (!c || qn_tx_begin(c, QN_TX_READ, &err) < 0 || dataset_id(c, name, &id, &err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c, "SELECT " DSV_COLS " FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id "
                                "WHERE v.dataset_id = ? AND (? = 0 OR v.version = ?) ORDER BY v.version DESC LIMIT 1",
                             &err);
    if (!st)
        goto fail;
    qn_bind_int64(st, 1, id);
    qn_bind_int64(st, 2, version);
    qn_bind_int64(st, 3, version);
    int rc = qn_step(st, &err);
    if (rc == 0)
        qn_err_set(&err, QN_NOT_FOUND, "dataset \"%s\" has no version %s", name, n);
    if (rc <= 0)
        goto fail;
    json_t *out = dsv_json(st);
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
