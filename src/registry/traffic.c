/*
 * traffic.c - the HTTP handlers of a model's traffic policy in
 * quern-registry: PUT, GET and DELETE /v1/models/{name}/traffic
 * (DESIGN.md section 4; the checks and storage are traffic_db.c).
 *
 * The registry owns the policy so that every serve replica routes alike:
 * each reads it at start, again on quern.traffic.changed (published through
 * the outbox in the transaction that changed it), and on its slow poll.
 */
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "core/validate.h"
#include "registry/registry.h"
#include "registry/traffic_db.h"

static int check_name(qn_req *req, qn_res *res, const char **name)
{
    qn_err err;
    *name = qn_req_param(req, "name");
    if (qn_name_check("model", *name, &err) < 0) {
        qn_res_error(res, err.code, "%s", err.msg);
        return -1;
    }
    return 0;
}

/* PUT /v1/models/{name}/traffic {"routes":[...],"shadow"?,"sticky"?} */
int reg_traffic_put(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name;
    json_t *policy = NULL, *out = NULL;
    if (check_name(req, res, &name) < 0)
        return 0;
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    if (reg_traffic_parse(body, &policy, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    char tp[QN_TRACEPARENT_LEN + 1];
    qn_traceparent_format(qn_req_trace(req), tp);
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? reg_db_traffic_set(c, name, policy, tp, &out, &err) : err.code;
    json_decref(policy);
    if ((rc = reg_db_end(r->db, c, rc, &err)) < 0) {
        json_decref(out);
        return reg_fail(req, res, &err);
    }
    qn_outbox_kick(r->outbox);
    qn_log_info(qn_req_trace_id(req), "traffic policy set", "{s:s, s:O, s:O, s:O, s:s}", "model", name, "routes",
                json_object_get(out, "routes"), "shadow", json_object_get(out, "shadow"), "sticky",
                json_object_get(out, "sticky"), "who", reg_who(r));
    return qn_res_json(res, 200, out);
}

/* GET /v1/models/{name}/traffic: the policy, or the default one. */
int reg_traffic_get(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name;
    json_t *out = NULL;
    if (check_name(req, res, &name) < 0)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? reg_db_traffic_get(c, name, &out, &err) : err.code;
    return reg_answer(r->db, req, res, c, rc, &err, 200, out);
}

/* DELETE /v1/models/{name}/traffic: back to the default (204 either way). */
int reg_traffic_delete(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name;
    int removed = 0;
    if (check_name(req, res, &name) < 0)
        return 0;
    char tp[QN_TRACEPARENT_LEN + 1];
    qn_traceparent_format(qn_req_trace(req), tp);
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? reg_db_traffic_delete(c, name, tp, &removed, &err) : err.code;
    if ((rc = reg_db_end(r->db, c, rc, &err)) < 0)
        return reg_fail(req, res, &err);
    if (removed) {
        qn_outbox_kick(r->outbox);
        qn_log_info(qn_req_trace_id(req), "traffic policy cleared", "{s:s, s:s}", "model", name, "who",
                    reg_who(r));
    }
    return qn_res_empty(res, 204);
}
