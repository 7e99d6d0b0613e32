/*
 * events.c - the registry's outbox of CloudEvents.
 *
 * Events are appended in the same transaction as the change they describe,
 * so a promotion and its quern.model.promoted event commit together or not at
 * all. The bus publisher drains this table in seq order (marking
 * published_at); GET /v1/events lets operators and tests read it.
 */
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/trace.h"
#include "core/validate.h"
#include "registry/registry.h"

int reg_event_append(qn_conn *c, const char *type, json_t *data, const char *traceparent,
                     qn_err *err)
{
    char id[QN_UUID_LEN + 1], t[32];
    qn_uuid4(id);
    qn_time_rfc3339(qn_now_ms(), t);
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "specversion", "1.0", "id", id,
                           "source", "quern-registry", "type", type, "time", t, "datacontenttype",
                           "application/json", "data", data);
    if (!ev)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    if (traceparent)
        json_object_set_new(ev, "traceparent", json_string(traceparent));
    char *body = qn_json_canonical(ev);
    json_decref(ev);
    if (!body)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    int rc = QN_INTERNAL;
    qn_stmt *st = qn_prepare(c, "INSERT INTO events (id, type, body) VALUES (?, ?, ?)", err);
    if (st) {
        qn_bind_text(st, 1, id, -1);
        qn_bind_text(st, 2, type, -1);
        qn_bind_text(st, 3, body, -1);
        rc = qn_step(st, err);
    }
    free(body);
    return rc < 0 ? rc : 0;
}

int reg_events_list(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    int64_t limit, after = 0;
    const char *a = qn_req_query(req, "after");
    if (qn_limit_parse(qn_req_query(req, "limit"), 100, 1000, &limit, &err) < 0 ||
        (a && strcmp(a, "0") != 0 && qn_uint_parse("after", a, INT64_MAX / 2, &after, &err) < 0))
        return qn_res_error(res, err.code, "%s", err.msg);
    json_t *list = json_array();
    qn_conn *c = qn_store_acquire(r->db, &err);
    if (!c)
        goto fail;
    qn_stmt *st = qn_prepare(c, "SELECT seq, body, published_at FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                             &err);
    if (!st)
        goto fail;
    qn_bind_int64(st, 1, after);
    qn_bind_int64(st, 2, limit);
    int rc;
    int64_t last = after;
    while ((rc = qn_step(st, &err)) == 1) {
        last = qn_col_int64(st, 0);
        json_t *ev = json_loads(qn_col_text(st, 1), 0, NULL);
        json_array_append_new(list, json_pack("{s:I, s:o, s:b}", "seq", (json_int_t)last, "event",
                                              ev ? ev : json_null(), "published", !qn_col_is_null(st, 2)));
    }
    if (rc < 0)
        goto fail;
    qn_store_release(r->db, c);
    return qn_res_json(res, 200, json_pack("{s:o, s:I}", "events", list, "next_after", (json_int_t)last));
fail:
    json_decref(list);
    if (c)
        qn_store_release(r->db, c);
    return reg_fail(req, res, &err);
}

int reg_events_pending(registry *r)
{
    qn_err err;
    int n = 0;
    qn_conn *c = qn_store_acquire(r->db, &err);
    if (!c)
        return 0;
    qn_stmt *st = qn_prepare(c, "SELECT COUNT(*) FROM events WHERE published_at IS NULL", &err);
    if (st && qn_step(st, &err) == 1) {
        n = (int)qn_col_int64(st, 0);
        qn_step(st, &err);
    }
    qn_store_release(r->db, c);
    return n;
}
