/*
 * pipelines.c - the pipeline resource of quern-prep.
 *
 * A pipeline is a JSON document put whole at /v1/pipelines/{name}:
 *   {"source":"online-retail-raw","output":"online-retail-purchases",
 *    "steps":[...libquern-ml cleaning steps...],
 *    "schema"?:{"columns":[{"name":"Quantity","type":"numeric"}]},
 *    "trigger"?:{"kind":"manual"} | {"kind":"rows","every":N} | {"kind":"schedule","interval":"1h"},
 *    "output_format"?:"csv", "description"?:"..."}
 * Everything is checked before it is stored (the steps by qml_clean, whose
 * errors name the step index), and stored normalized, defaults filled in.
 * The spec digest covers what changes a snapshot (source, steps, schema,
 * output, format) but not the trigger or description: a run skips when the
 * source has nothing new and the digest is the one of the last snapshot.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/digest.h"
#include "core/json.h"
#include "core/log.h"
#include "core/validate.h"
#include "ml/clean.h"
#include "prep/prep.h"

#define MAX_SCHEMA_COLUMNS 4096
#define MAX_INTERVAL_MS (30LL * 24 * 3600 * 1000)

static json_t *time_json(int64_t ms)
{
    char t[32];
    qn_time_rfc3339(ms, t);
    return json_string(t);
}

static int parse_schema(const json_t *schema, json_t **out, qn_err *err)
{
    static const char *const allowed[] = {"columns", NULL};
    static const char *const col_allowed[] = {"name", "type", "required", NULL};
    json_t *cols = json_object_get(schema, "columns");
    if (qn_json_only(schema, allowed, err) < 0)
        return qn_err_wrap(err, "schema");
    if (!json_is_array(cols) || json_array_size(cols) == 0 || json_array_size(cols) > MAX_SCHEMA_COLUMNS)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "schema: field \"columns\" must be an array of 1 to %d {\"name\",\"type\"} objects",
                          MAX_SCHEMA_COLUMNS);
    json_t *norm = json_array();
    for (size_t i = 0; i < json_array_size(cols); i++) {
        json_t *c = json_array_get(cols, i);
        const char *name = NULL, *type = NULL;
        qml_type t;
        if (qn_json_only(c, col_allowed, err) < 0 || qn_json_str(c, "name", 1, 256, &name, err) < 0 ||
            qn_json_str(c, "type", 1, 32, &type, err) < 0) {
            json_decref(norm);
            return qn_err_wrap(err, "schema.columns[%zu]", i);
        }
        if (!*name || qml_type_parse(type, &t) < 0) {
            json_decref(norm);
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "schema.columns[%zu]: %s", i, *name ? "\"type\" must be numeric, categorical, boolean or timestamp"
                                                                  : "\"name\" must not be empty");
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(json_string_value(json_object_get(json_array_get(norm, j), "name")), name) == 0) {
                json_decref(norm);
                return qn_err_set(err, QN_INVALID_ARGUMENT, "schema.columns[%zu]: column \"%s\" is listed twice",
                                  i, name);
            }
        json_array_append_new(norm, json_pack("{s:s, s:s}", "name", name, "type", qml_type_name(t)));
    }
    *out = json_pack("{s:o}", "columns", norm);
    return 0;
}

static int parse_trigger(const json_t *tr, json_t **out, qn_err *err)
{
    const char *kind = NULL;
    if (!tr) {
        *out = json_pack("{s:s}", "kind", "manual");
        return 0;
    }
    if (!json_is_object(tr) || qn_json_str(tr, "kind", 1, 16, &kind, err) < 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "trigger must be {\"kind\":\"manual\"}, {\"kind\":\"rows\",\"every\":N} or "
                          "{\"kind\":\"schedule\",\"interval\":\"1h\"}");
    if (strcmp(kind, "manual") == 0) {
        static const char *const allowed[] = {"kind", NULL};
        if (qn_json_only(tr, allowed, err) < 0)
            return qn_err_wrap(err, "trigger");
        *out = json_pack("{s:s}", "kind", "manual");
        return 0;
    }
    if (strcmp(kind, "rows") == 0) {
        static const char *const allowed[] = {"kind", "every", NULL};
        int64_t every;
        if (qn_json_only(tr, allowed, err) < 0 || qn_json_int(tr, "every", 1, 1, 1000000000, &every, err) < 0)
            return qn_err_wrap(err, "trigger");
        *out = json_pack("{s:s, s:I}", "kind", "rows", "every", (json_int_t)every);
        return 0;
    }
    if (strcmp(kind, "schedule") == 0) {
        static const char *const allowed[] = {"kind", "interval", NULL};
        const char *iv = NULL;
        long long ms;
        if (qn_json_only(tr, allowed, err) < 0 || qn_json_str(tr, "interval", 1, 32, &iv, err) < 0)
            return qn_err_wrap(err, "trigger");
        if (qn_parse_duration_ms(iv, &ms) < 0 || ms < 1000 || ms > MAX_INTERVAL_MS)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "trigger: \"interval\" must be a duration from 1s to 720h (\"90s\", \"15m\", \"1h\"), got \"%.32s\"",
                              iv);
        *out = json_pack("{s:s, s:s, s:I}", "kind", "schedule", "interval", iv, "interval_ms", (json_int_t)ms);
        return 0;
    }
    return qn_err_set(err, QN_INVALID_ARGUMENT,
                      "trigger: \"kind\" must be manual, rows or schedule, got \"%.16s\"", kind);
}

int prep_spec_parse(const json_t *body, json_t **spec, qn_err *err)
{
    static const char *const allowed[] = {"source", "steps", "output", "schema", "trigger",
                                          "output_format", "description", NULL};
    const char *source = NULL, *output = NULL, *format = "csv", *desc = "";
    json_t *schema = NULL, *trigger = NULL, *nschema = NULL, *ntrigger = NULL;
    json_t *steps = json_object_get(body, "steps");
    qml_clean_steps *parsed = NULL;
    *spec = NULL;
    if (qn_json_only(body, allowed, err) < 0 || qn_json_str(body, "source", 1, QN_NAME_MAX, &source, err) < 0 ||
        qn_json_str(body, "output", 1, QN_NAME_MAX, &output, err) < 0 ||
        qn_json_str(body, "output_format", 0, 16, &format, err) < 0 ||
        qn_json_str(body, "description", 0, 4096, &desc, err) < 0 ||
        qn_json_obj(body, "schema", 0, &schema, err) < 0)
        return err->code;
    if (qn_name_check("source dataset", source, err) < 0 || qn_name_check("output dataset", output, err) < 0)
        return err->code;
    if (strcmp(format, "csv") != 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "output_format \"%.16s\" is not supported; use \"csv\"",
                          format);
    if (!steps)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "field \"steps\" is required (an array; [] keeps every row)");
    if (qml_clean_from_json(steps, &parsed, err) < 0)
        return err->code;
    qml_clean_free(parsed);
    if (schema && parse_schema(schema, &nschema, err) < 0)
        return err->code;
    trigger = json_object_get(body, "trigger");
    if (parse_trigger(trigger, &ntrigger, err) < 0) {
        json_decref(nschema);
        return err->code;
    }
    json_t *s = json_pack("{s:s, s:O, s:s, s:o, s:s, s:s}", "source", source, "steps", steps, "output",
                          output, "trigger", ntrigger, "output_format", format, "description", desc);
    if (!s) {
        json_decref(nschema);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    if (nschema)
        json_object_set_new(s, "schema", nschema);
    *spec = s;
    return 0;
}

/* The digest of what makes a snapshot: the spec without trigger and description. */
static int spec_digest(const json_t *spec, char out[80])
{
    json_t *core = json_deep_copy(spec);
    if (!core)
        return QN_RESOURCE_EXHAUSTED;
    json_object_del(core, "trigger");
    json_object_del(core, "description");
    char *text = qn_json_canonical(core);
    json_decref(core);
    if (!text)
        return QN_RESOURCE_EXHAUSTED;
    char hex[QN_SHA256_HEX + 1];
    qn_sha256_buf(text, strlen(text), hex);
    free(text);
    snprintf(out, 80, "sha256:%s", hex);
    return 0;
}

#define PIPE_COLS "name, spec, revision, pending_rows, next_run_at, created_at, updated_at"

static json_t *pipeline_json(qn_stmt *st)
{
    json_t *spec = json_loads(qn_col_text(st, 1), 0, NULL);
    json_t *o = json_pack("{s:s, s:I, s:o, s:o}", "name", qn_col_text(st, 0), "revision",
                          (json_int_t)qn_col_int64(st, 2), "created_at", time_json(qn_col_int64(st, 5)),
                          "updated_at", time_json(qn_col_int64(st, 6)));
    if (spec) {
        json_object_update(o, spec);
        json_t *tr = json_object_get(o, "trigger");
        if (json_is_object(tr) && strcmp(json_string_value(json_object_get(tr, "kind")), "rows") == 0)
            json_object_set_new(o, "pending_rows", json_integer(qn_col_int64(st, 3)));
        if (!qn_col_is_null(st, 4))
            json_object_set_new(o, "next_run_at", time_json(qn_col_int64(st, 4)));
        json_decref(spec);
    }
    return o;
}

static int check_name(qn_req *req, qn_res *res, const char **name)
{
    qn_err err;
    *name = qn_req_param(req, "name");
    if (qn_name_check("pipeline", *name, &err) < 0) {
        qn_res_error(res, err.code, "%s", err.msg);
        return -1;
    }
    return 0;
}

int prep_pipelines_put(qn_req *req, qn_res *res, void *ud)
{
    prep *p = ud;
    qn_err err;
    const char *name;
    json_t *spec = NULL, *out = NULL;
    char *text = NULL;
    char digest[80];
    qn_conn *c = NULL;
    if (check_name(req, res, &name) < 0)
        return 0;
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    if (prep_spec_parse(body, &spec, &err) < 0)
        return qn_res_error(res, err.code, "pipeline %s: %s", name, err.msg);
    if (!(text = qn_json_canonical(spec)) || spec_digest(spec, digest) < 0) {
        qn_err_set(&err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    json_t *tr = json_object_get(spec, "trigger");
    const char *kind = json_string_value(json_object_get(tr, "kind"));
    int64_t every = json_integer_value(json_object_get(tr, "every"));
    int64_t interval = json_integer_value(json_object_get(tr, "interval_ms"));
    int64_t now = qn_now_ms();

    if (!(c = qn_store_acquire(p->db, &err)) || qn_tx_begin(c, QN_TX_WRITE, &err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c, "SELECT revision FROM pipelines WHERE name = ?", &err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, name, -1);
    int rc = qn_step(st, &err);
    if (rc < 0)
        goto fail;
    int created = rc == 0;
    if (rc == 1 && qn_step(st, &err) < 0)
        goto fail;
    /* A new trigger starts afresh: no rows counted yet, the first scheduled
     * run one interval from now. */
    st = qn_prepare(c,
                    created ? "INSERT INTO pipelines (spec, spec_digest, source, output, trigger_kind, trigger_every, "
                              "interval_ms, next_run_at, updated_at, name, created_at) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                            : "UPDATE pipelines SET spec = ?, spec_digest = ?, source = ?, output = ?, trigger_kind = ?, "
                              "trigger_every = ?, interval_ms = ?, next_run_at = ?, updated_at = ?, pending_rows = 0, "
                              "revision = revision + 1 WHERE name = ?",
                    &err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, text, -1);
    qn_bind_text(st, 2, digest, -1);
    qn_bind_text(st, 3, json_string_value(json_object_get(spec, "source")), -1);
    qn_bind_text(st, 4, json_string_value(json_object_get(spec, "output")), -1);
    qn_bind_text(st, 5, kind, -1);
    qn_bind_int64(st, 6, every);
    qn_bind_int64(st, 7, interval);
    if (interval > 0)
        qn_bind_int64(st, 8, now + interval);
    else
        qn_bind_null(st, 8);
    qn_bind_int64(st, 9, now);
    qn_bind_text(st, 10, name, -1);
    if (created)
        qn_bind_int64(st, 11, now);
    if (qn_step(st, &err) < 0)
        goto fail;
    st = qn_prepare(c, "SELECT " PIPE_COLS " FROM pipelines WHERE name = ?", &err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, name, -1);
    if ((rc = qn_step(st, &err)) != 1) {
        if (rc == 0)
            qn_err_set(&err, QN_INTERNAL, "pipeline vanished inside its transaction");
        goto fail;
    }
    out = pipeline_json(st);
    if (qn_step(st, &err) < 0 || qn_tx_commit(c, &err) < 0)
        goto fail;
    qn_store_release(p->db, c);
    qn_log_info(qn_req_trace_id(req), created ? "pipeline created" : "pipeline replaced", "{s:s, s:s}",
                "pipeline", name, "spec_digest", digest);
    free(text);
    json_decref(spec);
    return qn_res_json(res, created ? 201 : 200, out);
fail:
    json_decref(out);
    if (c)
        qn_store_release(p->db, c);
    free(text);
    json_decref(spec);
    return prep_fail(req, res, &err);
}

int prep_pipelines_list(qn_req *req, qn_res *res, void *ud)
{
    prep *p = ud;
    qn_err err;
    int64_t limit;
    char after[QN_NAME_MAX + 1];
    if (qn_limit_parse(qn_req_query(req, "limit"), 50, 1000, &limit, &err) < 0 ||
        qn_page_token_decode(qn_req_query(req, "page_token"), "pipelines", after, sizeof after, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    json_t *list = json_array(), *out = NULL;
    qn_conn *c = qn_store_acquire(p->db, &err);
    if (!c)
        goto fail;
    qn_stmt *st = qn_prepare(c, "SELECT " PIPE_COLS " FROM pipelines WHERE name > ? ORDER BY name LIMIT ?", &err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, after, -1);
    qn_bind_int64(st, 2, limit + 1);
    int rc;
    char *last = NULL;
    while ((rc = qn_step(st, &err)) == 1) {
        if ((int64_t)json_array_size(list) == limit) {
            char *tok = qn_page_token_encode("pipelines", last);
            out = json_pack("{s:o, s:s}", "pipelines", list, "next_page_token", tok ? tok : "");
            free(tok);
            list = NULL;
            break; /* the statement is reset when c is released */
        }
        last = qn_arena_strdup(qn_req_arena(req), qn_col_text(st, 0));
        json_array_append_new(list, pipeline_json(st));
    }
    if (rc < 0)
        goto fail;
    if (!out)
        out = json_pack("{s:o}", "pipelines", list);
    qn_store_release(p->db, c);
    return qn_res_json(res, 200, out);
fail:
    json_decref(list);
    if (c)
        qn_store_release(p->db, c);
    return prep_fail(req, res, &err);
}

int prep_pipelines_get(qn_req *req, qn_res *res, void *ud)
{
    prep *p = ud;
    qn_err err;
    const char *name;
    if (check_name(req, res, &name) < 0)
        return 0;
    qn_conn *c = qn_store_acquire(p->db, &err);
    if (!c)
        return prep_fail(req, res, &err);
    qn_stmt *st = qn_prepare(c, "SELECT " PIPE_COLS " FROM pipelines WHERE name = ?", &err);
    int rc = st ? (qn_bind_text(st, 1, name, -1), qn_step(st, &err)) : err.code;
    json_t *out = rc == 1 ? pipeline_json(st) : NULL;
    if (rc == 1 && qn_step(st, &err) < 0) {
        json_decref(out);
        out = NULL;
        rc = err.code;
    }
    qn_store_release(p->db, c);
    if (rc < 0)
        return prep_fail(req, res, &err);
    if (rc == 0)
        return qn_res_error(res, QN_NOT_FOUND, "pipeline \"%s\" does not exist", name);
    return qn_res_json(res, 200, out);
}

int prep_pipelines_delete(qn_req *req, qn_res *res, void *ud)
{
    prep *p = ud;
    qn_err err;
    const char *name;
    if (check_name(req, res, &name) < 0)
        return 0;
    qn_conn *c = qn_store_acquire(p->db, &err);
    if (!c || qn_tx_begin(c, QN_TX_WRITE, &err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c, "DELETE FROM pipelines WHERE name = ?", &err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, name, -1);
    if (qn_step(st, &err) < 0)
        goto fail;
    if (qn_changes(c) == 0) {
        qn_store_release(p->db, c);
        return qn_res_error(res, QN_NOT_FOUND, "pipeline \"%s\" does not exist", name);
    }
    /* Its history goes with it; a run in progress finishes, and its snapshot
     * (already in the registry) is still announced. */
    st = qn_prepare(c, "DELETE FROM runs WHERE pipeline = ? AND state <> 'running'", &err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, name, -1);
    if (qn_step(st, &err) < 0 || qn_tx_commit(c, &err) < 0)
        goto fail;
    qn_store_release(p->db, c);
    qn_log_info(qn_req_trace_id(req), "pipeline deleted", "{s:s}", "pipeline", name);
    return qn_res_empty(res, 204);
fail:
    if (c)
        qn_store_release(p->db, c);
    return prep_fail(req, res, &err);
}
