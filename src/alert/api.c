/*
 * api.c - the HTTP API of quern-alert.
 *
 *   GET /v1/alerts?state=firing|resolved&rule=NAME&limit=N   newest first
 *   GET /v1/alerts/{id}        one alert: evidence and every action's status
 *   GET /v1/rules              the rules in force, as given but with every
 *                              secret "(set)" and URLs redacted
 *   PUT /v1/rules              replaces them (validated as the file is; on
 *                              success also written to --rules, atomically);
 *                              "(set)" and redacted URLs keep the values in force
 *
 * No answer carries a webhook secret or a URL's credentials: rules leave
 * through al_rules_public, and stored URLs are redacted again on the way out
 * (rows written before redaction existed included).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/json.h"
#include "core/log.h"
#include "core/netallow.h"
#include "core/validate.h"
#include "alert/alert.h"

int al_fail(qn_req *req, qn_res *res, const qn_err *err)
{
    if (qn_code_is_client(err->code))
        return qn_res_error(res, err->code, "%s", err->msg);
    qn_log_error(qn_req_trace_id(req), "storage failure", "{s:s, s:s, s:s}", "route", qn_req_route(req), "code",
                 qn_code_name(err->code), "detail", err->msg);
    if (err->code == QN_UNAVAILABLE)
        return qn_res_error(res, QN_UNAVAILABLE, "the alert service is busy; retry shortly");
    return qn_res_error(res, QN_INTERNAL, "internal error");
}

#define ALERT_COLS "id, rule, dedupe_key, state, severity, summary, evidence, count, fired_at, last_seen, resolved_at, resolved_by"

static json_t *alert_row(qn_conn *c, qn_stmt *st, qn_err *err)
{
    json_t *a = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:I, s:o, s:o, s:o, s:o}", "id", qn_col_text(st, 0), "rule",
                          qn_col_text(st, 1), "dedupe_key", qn_col_text(st, 2), "state", qn_col_text(st, 3), "severity",
                          qn_col_text(st, 4), "summary", qn_col_text(st, 5), "evidence",
                          qn_json_from_text(qn_col_text(st, 6)), "count", (json_int_t)qn_col_int64(st, 7), "fired_at",
                          qn_json_time(qn_col_int64(st, 8)), "last_seen", qn_json_time(qn_col_int64(st, 9)),
                          "resolved_at", qn_col_is_null(st, 10) ? json_null() : qn_json_time(qn_col_int64(st, 10)),
                          "resolved_by", qn_col_is_null(st, 11) ? json_null() : json_string(qn_col_text(st, 11)));
    al_redact_url(json_object_get(a, "evidence"), "url");  /* metric rules */
    json_t *acts = json_array();
    qn_stmt *as = qn_prepare(c, "SELECT id, type, status, attempts, last_error, detail, updated_at FROM actions "
                                "WHERE alert_id = ? ORDER BY idx", err);
    if (!a || !as) {
        json_decref(a);
        json_decref(acts);
        return NULL;
    }
    qn_bind_text(as, 1, json_string_value(json_object_get(a, "id")), -1);
    int rc;
    while ((rc = qn_step(as, err)) == 1) {
        json_t *one = json_pack("{s:s, s:s, s:s, s:I, s:o, s:o}", "id", qn_col_text(as, 0), "type", qn_col_text(as, 1),
                                "status", qn_col_text(as, 2), "attempts", (json_int_t)qn_col_int64(as, 3), "updated_at",
                                qn_json_time(qn_col_int64(as, 6)), "detail", qn_json_from_text(qn_col_text(as, 5)));
        if (!qn_col_is_null(as, 4))
            json_object_set_new(one, "last_error", json_string(qn_col_text(as, 4)));
        al_redact_url(json_object_get(one, "detail"), "url");
        json_array_append_new(acts, one);
    }
    json_object_set_new(a, "actions", acts);
    if (rc < 0) {
        json_decref(a);
        return NULL;
    }
    return a;
}

int al_alerts_list(qn_req *req, qn_res *res, void *ud)
{
    alerter *a = ud;
    qn_err err;
    const char *state = qn_req_query(req, "state"), *rule = qn_req_query(req, "rule");
    int64_t limit;
    if (state && strcmp(state, "firing") != 0 && strcmp(state, "resolved") != 0)
        return qn_res_error(res, QN_INVALID_ARGUMENT, "state must be firing or resolved");
    if ((rule && qn_name_check("rule", rule, &err) < 0) || qn_limit_parse(qn_req_query(req, "limit"), 100, 1000, &limit, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    qn_conn *c = qn_store_acquire(a->db, &err);
    if (!c)
        return al_fail(req, res, &err);
    json_t *list = json_array();
    /* CAST: PostgreSQL cannot infer the type of a parameter that is only tested
     * for NULL (42P18); SQLite keeps NULL NULL. */
    qn_stmt *st = qn_prepare(c, "SELECT " ALERT_COLS " FROM alerts WHERE (CAST(? AS TEXT) IS NULL OR state = ?) "
                                "AND (CAST(? AS TEXT) IS NULL OR rule = ?) "
                                "ORDER BY fired_at DESC, id LIMIT ?", &err);
    int rc = -1;
    if (st) {
        state ? qn_bind_text(st, 1, state, -1) : qn_bind_null(st, 1);
        state ? qn_bind_text(st, 2, state, -1) : qn_bind_null(st, 2);
        rule ? qn_bind_text(st, 3, rule, -1) : qn_bind_null(st, 3);
        rule ? qn_bind_text(st, 4, rule, -1) : qn_bind_null(st, 4);
        qn_bind_int64(st, 5, limit);
        /* gather rows first: alert_row runs another statement */
        json_t *rows = json_array();
        while ((rc = qn_step(st, &err)) == 1) {
            json_t *one = alert_row(c, st, &err);
            if (!one) {
                rc = -1;
                break;
            }
            json_array_append_new(rows, one);
        }
        json_array_extend(list, rows);
        json_decref(rows);
    }
    qn_store_release(a->db, c);
    if (rc < 0) {
        json_decref(list);
        return al_fail(req, res, &err);
    }
    return qn_res_json(res, 200, json_pack("{s:o}", "alerts", list));
}

int al_alerts_get(qn_req *req, qn_res *res, void *ud)
{
    alerter *a = ud;
    qn_err err;
    const char *id = qn_req_param(req, "id");
    if (strlen(id) > 64)
        return qn_res_error(res, QN_INVALID_ARGUMENT, "alert id: at most 64 bytes");
    qn_conn *c = qn_store_acquire(a->db, &err);
    if (!c)
        return al_fail(req, res, &err);
    qn_stmt *st = qn_prepare(c, "SELECT " ALERT_COLS " FROM alerts WHERE id = ?", &err);
    int rc = -1;
    json_t *one = NULL;
    if (st) {
        qn_bind_text(st, 1, id, -1);
        if ((rc = qn_step(st, &err)) == 1 && !(one = alert_row(c, st, &err)))
            rc = -1;
    }
    qn_store_release(a->db, c);
    if (rc < 0)
        return al_fail(req, res, &err);
    if (!one)
        return qn_res_error(res, QN_NOT_FOUND, "alert %s does not exist", id);
    return qn_res_json(res, 200, one);
}

int al_rules_show(qn_req *req, qn_res *res, void *ud)
{
    (void)req;
    alerter *a = ud;
    al_rules *rs = al_rules_get(a);
    json_t *out = json_pack("{s:o, s:I, s:s?}", "rules", al_rules_public(rs), "count", (json_int_t)rs->n, "file",
                            a->rules_path);
    al_rules_put(a, rs);
    return qn_res_json(res, 200, out);
}

/* Writes doc to path through a temporary file and rename (never half-written).
 * The file holds the secrets: it keeps the mode of the file it replaces, or
 * is 0600 when new. */
static int write_rules(const char *path, const json_t *doc, qn_err *err)
{
    char tmp[4200];
    struct stat st;
    mode_t mode = stat(path, &st) == 0 ? st.st_mode & 07777 : 0600;
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    if (json_dump_file(doc, tmp, JSON_INDENT(2) | JSON_SORT_KEYS) != 0 || chmod(tmp, mode) != 0 ||
        rename(tmp, path) != 0) {
        unlink(tmp);
        return qn_err_set(err, QN_INTERNAL, "cannot write the rules file %s", path);
    }
    return 0;
}

int al_rules_put_http(qn_req *req, qn_res *res, void *ud)
{
    alerter *a = ud;
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    qn_err err;
    al_rules *rs;
    if (al_rules_parse(body, &a->allow, &rs, &err) < 0) {
        const char *l[] = {"refused"};
        qn_counter_add(a->m_reloads, l, 1);
        return qn_res_error(res, err.code, "%s", err.msg);
    }
    al_rules *cur = al_rules_get(a);
    int rc = al_rules_inherit(rs, cur, &err);
    al_rules_put(a, cur);
    if (rc < 0) {
        al_rules_free(rs);
        const char *l[] = {"refused"};
        qn_counter_add(a->m_reloads, l, 1);
        return qn_res_error(res, err.code, "%s", err.msg);
    }
    if (a->rules_path && write_rules(a->rules_path, rs->doc, &err) < 0) {
        al_rules_free(rs);
        return al_fail(req, res, &err);
    }
    json_t *out = json_pack("{s:o, s:I}", "rules", al_rules_public(rs), "count", (json_int_t)rs->n);
    al_rules_install(a, rs);
    const char *l[] = {"ok"};
    qn_counter_add(a->m_reloads, l, 1);
    qn_log_info(qn_req_trace_id(req), "rules replaced through the API", "{s:I}", "count", json_integer_value(json_object_get(out, "count")));
    return qn_res_json(res, 200, out);
}
