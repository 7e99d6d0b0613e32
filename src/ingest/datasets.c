/*
 * datasets.c - datasets and their schemas.
 *
 * A dataset comes into being with its first schema or its first batch. Its
 * schema is stored as canonical JSON with a version that every PUT bumps; a
 * batch is parsed against the schema it read and committed only if the
 * version is still the same inside the write transaction, so no row is ever
 * stored under a schema it was not checked against. A new schema applies to
 * rows sent after it; rows already stored are not checked again.
 */
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/validate.h"
#include "ingest/ingest.h"

static json_t *time_json(int64_t ms)
{
    char t[32];
    qn_time_rfc3339(ms, t);
    return json_string(t);
}

static int check_name(qn_req *req, qn_res *res, const char **name)
{
    qn_err err;
    *name = qn_req_param(req, "name");
    if (qn_name_check("dataset", *name, &err) < 0) {
        qn_res_error(res, err.code, "%s", err.msg);
        return -1;
    }
    return 0;
}

int ing_dataset_lookup(qn_conn *c, const char *name, int64_t *id, int64_t *version,
                       qml_rec_schema **schema, qn_err *err)
{
    *id = *version = 0;
    if (schema)
        *schema = NULL;
    qn_stmt *st = qn_prepare(c, "SELECT id, schema_version, schema FROM datasets WHERE name = ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, name, -1);
    int rc = qn_step(st, err);
    if (rc <= 0)
        return rc;
    *id = qn_col_int64(st, 0);
    *version = qn_col_int64(st, 1);
    const char *text = qn_col_text(st, 2);
    if (!schema || !text)
        return 0;
    json_t *doc = json_loads(text, 0, NULL);
    rc = doc ? qml_rec_schema_parse(doc, schema, err)
             : qn_err_set(err, QN_DATA_LOSS, "dataset %s: stored schema is not JSON", name);
    json_decref(doc);
    return rc;
}

int ing_schema_put(qn_req *req, qn_res *res, void *ud)
{
    ingest *g = ud;
    const char *name;
    qn_err err;
    qml_rec_schema *s = NULL;
    char *text = NULL;
    json_t *canon = NULL;
    qn_conn *c = NULL;
    int locked = 0, rc;
    if (check_name(req, res, &name) < 0)
        return 0;
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    if (qml_rec_schema_parse(body, &s, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    if (!(canon = qml_rec_schema_json(s)) || !(text = qn_json_canonical(canon))) {
        rc = qn_err_set(&err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    if ((rc = ing_write_lock(g, &err)) < 0)
        goto fail;
    locked = 1;
    if (!(c = qn_store_acquire(g->db, &err)) || (rc = qn_tx_begin(c, QN_TX_WRITE, &err)) < 0)
        goto fail;
    int64_t now = qn_now_ms();
    qn_stmt *st = qn_prepare(c, "INSERT INTO datasets (name, schema, schema_version, created_at, updated_at) "
                                "VALUES (?, ?, 1, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                                "schema = excluded.schema, schema_version = datasets.schema_version + 1, "
                                "updated_at = excluded.updated_at", &err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, name, -1);
    qn_bind_text(st, 2, text, -1);
    qn_bind_int64(st, 3, now);
    qn_bind_int64(st, 4, now);
    if ((rc = qn_step(st, &err)) < 0 || (rc = qn_tx_commit(c, &err)) < 0)
        goto fail;
    qn_store_release(g->db, c);
    ing_write_unlock(g);
    free(text);
    qml_rec_schema_free(s);
    return qn_res_json(res, 200, json_pack("{s:s, s:o}", "dataset", name, "schema", canon));
fail:
    if (c)
        qn_store_release(g->db, c);
    if (locked)
        ing_write_unlock(g);
    free(text);
    json_decref(canon);
    qml_rec_schema_free(s);
    return ing_fail(req, res, &err);
}

int ing_schema_get(qn_req *req, qn_res *res, void *ud)
{
    ingest *g = ud;
    const char *name;
    qn_err err;
    if (check_name(req, res, &name) < 0)
        return 0;
    qn_conn *c = qn_store_acquire(g->db, &err);
    if (!c)
        return ing_fail(req, res, &err);
    int64_t id, version;
    qml_rec_schema *s;
    int rc = ing_dataset_lookup(c, name, &id, &version, &s, &err);
    qn_store_release(g->db, c);
    if (rc < 0)
        return ing_fail(req, res, &err);
    if (!id)
        return qn_res_error(res, QN_NOT_FOUND, "dataset %s does not exist", name);
    if (!s)
        return qn_res_error(res, QN_NOT_FOUND, "dataset %s has no schema (PUT one to /v1/datasets/%s/schema)",
                            name, name);
    json_t *doc = qml_rec_schema_json(s);
    qml_rec_schema_free(s);
    return qn_res_json(res, 200, json_pack("{s:s, s:o, s:I}", "dataset", name, "schema", doc,
                                           "schema_version", (json_int_t)version));
}

static json_t *schema_col(qn_stmt *st, int col)
{
    const char *t = qn_col_text(st, col);
    json_t *v = t ? json_loads(t, 0, NULL) : NULL;
    return v ? v : json_null();
}

#define LIST_MAX 10000

int ing_datasets_list(qn_req *req, qn_res *res, void *ud)
{
    ingest *g = ud;
    qn_err err;
    json_t *list = json_array();
    qn_conn *c = qn_store_acquire(g->db, &err);
    if (!c)
        goto fail;
    qn_stmt *st = qn_prepare(c, "SELECT name, last_seq, schema IS NOT NULL FROM datasets ORDER BY name LIMIT ?",
                             &err);
    if (!st)
        goto fail;
    qn_bind_int64(st, 1, LIST_MAX);
    int rc;
    while ((rc = qn_step(st, &err)) == 1)
        json_array_append_new(list, json_pack("{s:s, s:I, s:I, s:b}", "name", qn_col_text(st, 0), "rows",
                                              (json_int_t)qn_col_int64(st, 1), "last_seq",
                                              (json_int_t)qn_col_int64(st, 1), "has_schema",
                                              (int)qn_col_int64(st, 2)));
    if (rc < 0)
        goto fail;
    qn_store_release(g->db, c);
    return qn_res_json(res, 200, json_pack("{s:o}", "datasets", list));
fail:
    json_decref(list);
    if (c)
        qn_store_release(g->db, c);
    return ing_fail(req, res, &err);
}

int ing_dataset_get(qn_req *req, qn_res *res, void *ud)
{
    ingest *g = ud;
    const char *name;
    qn_err err;
    if (check_name(req, res, &name) < 0)
        return 0;
    qn_conn *c = qn_store_acquire(g->db, &err);
    if (!c)
        return ing_fail(req, res, &err);
    qn_stmt *st = qn_prepare(c, "SELECT last_seq, schema, created_at, updated_at FROM datasets WHERE name = ?",
                             &err);
    int rc = st ? (qn_bind_text(st, 1, name, -1), qn_step(st, &err)) : err.code;
    json_t *out = NULL;
    if (rc == 1)
        out = json_pack("{s:s, s:I, s:I, s:o, s:o, s:o}", "name", name, "rows",
                        (json_int_t)qn_col_int64(st, 0), "last_seq", (json_int_t)qn_col_int64(st, 0),
                        "schema", schema_col(st, 1), "created_at", time_json(qn_col_int64(st, 2)),
                        "updated_at", time_json(qn_col_int64(st, 3)));
    qn_store_release(g->db, c);
    if (rc < 0)
        return ing_fail(req, res, &err);
    if (rc == 0)
        return qn_res_error(res, QN_NOT_FOUND, "dataset %s does not exist", name);
    return qn_res_json(res, 200, out);
}
