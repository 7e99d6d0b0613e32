/*
 * datasets.c - dataset snapshots in quern-registry.
 *
 * A dataset version is an immutable snapshot described by a manifest like a
 * model's: {"format":"quern.dataset/1","files":{"data.csv":"sha256:..."},
 * "schema":...,"rows":N,"report":...}. The dataset itself is created by its
 * first version; numbers are gapless per dataset, as for models (the data
 * layer, db.c, numbers, stores and pages both kinds of versions).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "core/validate.h"
#include "registry/registry.h"

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
    if (reg_page_begin(req, res, &pg, "datasets", after, NULL) < 0)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? reg_db_datasets_page(c, after, &pg, &err) : err.code;
    return reg_answer_page(r->db, req, res, c, rc, &err, &pg, "datasets");
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
    char *tags_text = tags ? qn_json_canonical(tags) : NULL;
    reg_db_manifest mf = {.text = manifest_text, .digest = NULL /* the text's own */};
    int64_t version = 0;
    qn_conn *c = NULL;
    int rc;
    if (!manifest_text || (tags && !tags_text))
        rc = qn_err_set(&err, QN_RESOURCE_EXHAUSTED, "out of memory");
    else if (!(c = reg_db_begin(r->db, QN_TX_WRITE, &err)))
        rc = err.code;
    else
        rc = reg_db_dataset_version_create(c, name, &mf, desc, tags_text, qn_now_ms(), &version, &out, &err);
    free(manifest_text);
    free(tags_text);
    if (reg_db_end(r->db, c, rc, &err) < 0) {
        json_decref(out);
        return reg_fail(req, res, &err);
    }
    qn_log_info(qn_req_trace_id(req), "dataset version registered", "{s:s, s:I}", "dataset", name,
                "version", (json_int_t)version);
    qn_res_header(res, "Location", qn_arena_printf(qn_req_arena(req), "/v1/datasets/%s/versions/%lld",
                                                   name, (long long)version));
    return qn_res_json(res, 201, out);
}

int reg_dataset_versions_list(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name;
    int64_t before = 0;
    qn_page pg;
    char after[QN_PAGE_KEY_MAX];
    if (check_dataset_name(req, res, &name) < 0)
        return 0;
    if (reg_page_begin(req, res, &pg, "dataset_versions", after, &before) < 0)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? reg_db_versions_page(c, &reg_db_datasets, name, before, NULL, &pg, &err) : err.code;
    return reg_answer_page(r->db, req, res, c, rc, &err, &pg, "versions");
}

int reg_dataset_versions_get(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name, *n = qn_req_param(req, "n");
    int64_t version = 0;
    json_t *out = NULL;
    if (check_dataset_name(req, res, &name) < 0)
        return 0;
    if (strcmp(n, "latest") != 0 && qn_uint_parse("version", n, REG_MAX_VERSION, &version, &err) < 0)
        return qn_res_error(res, err.code, "%s (or \"latest\")", err.msg);
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? reg_db_version_get(c, &reg_db_datasets, name, version, &out, &err) : err.code;
    return reg_answer(r->db, req, res, c, rc, &err, 200, out);
}
