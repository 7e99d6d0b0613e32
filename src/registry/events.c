/*
 * events.c - the registry's outbox of CloudEvents.
 *
 * Events are appended to the outbox in the same transaction as the change
 * they describe, so a promotion and its quern.model.promoted event commit
 * together or not at all; core/outbox publishes them to the bus in order.
 * GET /v1/events lets operators and tests read the outbox (published rows are
 * kept for a day).
 */
#include <stdlib.h>
#include <string.h>

#include "core/bus/bus.h"
#include "core/json.h"
#include "core/outbox.h"
#include "core/validate.h"
#include "registry/registry.h"

int reg_event_append(qn_conn *c, const char *type, json_t *data, const char *traceparent,
                     qn_err *err)
{
    json_t *ev = qn_event_new(type, "quern-registry", data, traceparent);
    if (!ev)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    int rc = qn_outbox_append(c, ev, err);
    json_decref(ev);
    return rc;
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
    qn_stmt *st = qn_prepare(c, "SELECT seq, body, published_at FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
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
