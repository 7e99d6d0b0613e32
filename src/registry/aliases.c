/*
 * aliases.c - alias history and rollback in quern-registry, and the one
 * alias move that every API goes through.
 *
 * Every move of an alias (PUT and DELETE of /v1/models/{name}/aliases/{alias},
 * a rollback, MLflow's alias calls) is a row of alias_history written in the
 * move's transaction (db.c), with who moved it: the name of the registry's
 * token when it has one (core auth admitted the request with it), else
 * "anonymous". The history is never deleted. A rollback moves the alias back
 * to the version it held before its current one (the from_version of its
 * latest move), recorded as a move with reason "rollback".
 */
#include <stdio.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "registry/registry.h"

const char *reg_who(const registry *r)
{
    return r->token_name ? r->token_name : "anonymous";
}

/* Counts, logs and announces a move that committed. */
static void moved(registry *r, qn_req *req, const char *name, const char *alias, int64_t version,
                  int64_t previous, const char *reason)
{
    qn_outbox_kick(r->outbox);
    if (previous == version)
        return;
    qn_counter_add(r->alias_moves, NULL, 1);
    qn_log_info(qn_req_trace_id(req), "alias moved", "{s:s, s:s, s:I, s:I, s:s, s:s}", "model", name, "alias",
                alias, "version", (json_int_t)version, "previous_version", (json_int_t)previous, "reason",
                reason ? reason : "", "who", reg_who(r));
}

int reg_alias_move(registry *r, qn_req *req, const char *name, const char *alias, int64_t version,
                   const char *reason, const char *evidence, int64_t *previous, qn_err *err)
{
    char tp[QN_TRACEPARENT_LEN + 1];
    qn_traceparent_format(qn_req_trace(req), tp);
    reg_db_move mv = {.reason = reason, .who = reg_who(r), .evidence = evidence};
    *previous = 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, err);
    int rc = c ? reg_db_alias_set(c, name, alias, version, tp, &mv, previous, err) : err->code;
    if ((rc = reg_db_end(r->db, c, rc, err)) < 0)
        return rc;
    moved(r, req, name, alias, version, *previous, reason);
    return 0;
}

/* GET /v1/models/{name}/aliases/{alias}/history?limit&page_token */
int reg_alias_history(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *name, *alias;
    int64_t before;
    qn_page pg;
    char after[QN_PAGE_KEY_MAX];
    if (reg_check_alias(req, res, &name, &alias) < 0 ||
        reg_page_begin(req, res, &pg, "alias_history", after, &before) < 0)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? reg_db_alias_history_page(c, name, alias, before, &pg, &err) : err.code;
    if (reg_db_end(r->db, c, rc, &err) < 0) {
        qn_page_free(&pg);
        return reg_fail(req, res, &err);
    }
    json_t *out = qn_page_finish(&pg, "history");
    json_object_set_new(out, "model", json_string(name));
    json_object_set_new(out, "alias", json_string(alias));
    return qn_res_json(res, 200, out);
}

/* POST /v1/models/{name}/aliases/{alias}/rollback: no body, or {"reason"}
 * to say more than "rollback" (recorded as "rollback: <reason>"). */
int reg_alias_rollback(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    static const char *const allowed[] = {"reason", NULL};
    qn_err err;
    const char *name, *alias, *why = NULL;
    int64_t from = 0, to = 0;
    if (reg_check_alias(req, res, &name, &alias) < 0)
        return 0;
    size_t blen = 0;
    qn_req_body(req, &blen);
    if (blen > 0) {
        json_t *body = qn_req_json(req, res);
        if (!body)
            return 0;
        if (qn_json_only(body, allowed, &err) < 0 ||
            qn_json_str(body, "reason", 0, REG_MAX_REASON - 16, &why, &err) < 0)
            return qn_res_error(res, err.code, "%s", err.msg);
    }
    char tp[QN_TRACEPARENT_LEN + 1];
    qn_traceparent_format(qn_req_trace(req), tp);
    reg_db_move mv = {.reason = why && *why ? qn_arena_printf(qn_req_arena(req), "rollback: %s", why) : NULL,
                      .who = reg_who(r)};
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? reg_db_alias_rollback(c, name, alias, tp, &mv, &from, &to, &err) : err.code;
    if (reg_db_end(r->db, c, rc, &err) < 0)
        return reg_fail(req, res, &err);
    moved(r, req, name, alias, to, from, "rollback");
    return qn_res_json(res, 200,
                       json_pack("{s:s, s:s, s:I, s:I, s:I, s:s}", "model", name, "alias", alias, "version",
                                 (json_int_t)to, "previous_version", (json_int_t)from, "from_version",
                                 (json_int_t)from, "reason", "rollback"));
}
