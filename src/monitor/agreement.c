/*
 * agreement.c - how two versions of a model compare on the same requests:
 * GET /v1/monitors/{model}/agreement (issue 15, shadow and canary traffic).
 *
 * When serve shadows a request (docs/serve.md, traffic), both predictions
 * reach the monitor in quern.predictions.logged under one request id, each
 * under its own version, and land in window_rows like any other. This joins
 * the rows of one model by request id across versions, the newest first
 * (at most MAX_ROWS per version pair), and answers per pair of versions:
 * how many requests both answered, how often they agree (the same side of
 * 0.5 for a probability, the same argmax for a vector of scores, the same
 * top item for a recommendation; null when predictions are other numbers),
 * the mean absolute difference of scalar predictions, and each side's mean
 * (the prediction distributions, summarised). Beside the pairs, each
 * version's serving latency (p50, p95 and how many requests, from the
 * latency_us serve logs; promote.c keeps them). Rows of closed windows are
 * swept with them, so the report covers the open windows and what is kept.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/validate.h"
#include "monitor/monitor.h"

#define MAX_ROWS 20000
#define MAX_PAIRS 16

typedef struct pair_stats {
    int64_t a, b;              /* versions, a < b */
    int64_t n, comparable, agree, scalar;
    double abs_diff, sum_a, sum_b;
} pair_stats;

/* The prediction's class-like answer into *out (a string of at most cap);
 * 0 when it has none (a number outside 0..1, say). */
static int decision(const json_t *p, char *out, size_t cap)
{
    if (json_is_number(p)) {
        double x = json_number_value(p);
        if (!(x >= 0 && x <= 1))
            return 0;
        snprintf(out, cap, "%d", x >= 0.5);
        return 1;
    }
    if (json_is_array(p) && json_array_size(p) > 0) {
        size_t i, best = 0;
        json_t *v;
        json_array_foreach(p, i, v) {
            if (!json_is_number(v))
                return 0;
            if (json_number_value(v) > json_number_value(json_array_get(p, best)))
                best = i;
        }
        snprintf(out, cap, "%zu", best);
        return 1;
    }
    const json_t *items = json_object_get(p, "items");
    if (json_is_array(items) && json_is_string(json_array_get(items, 0))) {
        snprintf(out, cap, "%s", json_string_value(json_array_get(items, 0)));
        return 1;
    }
    return 0;
}

static void add(pair_stats *ps, const json_t *pa, const json_t *pb)
{
    char da[256], db[256];
    ps->n++;
    if (decision(pa, da, sizeof da) && decision(pb, db, sizeof db)) {
        ps->comparable++;
        ps->agree += strcmp(da, db) == 0;
    }
    if (json_is_number(pa) && json_is_number(pb)) {
        double a = json_number_value(pa), b = json_number_value(pb);
        ps->scalar++;
        ps->abs_diff += fabs(a - b);
        ps->sum_a += a;
        ps->sum_b += b;
    }
}

static json_t *pair_json(const pair_stats *ps)
{
    json_t *o = json_pack("{s:[I,I], s:I}", "versions", (json_int_t)ps->a, (json_int_t)ps->b, "requests",
                          (json_int_t)ps->n);
    json_object_set_new(o, "agreement",
                        ps->comparable ? json_real((double)ps->agree / (double)ps->comparable) : json_null());
    json_object_set_new(o, "compared", json_integer(ps->comparable));
    json_object_set_new(o, "mean_abs_diff", ps->scalar ? json_real(ps->abs_diff / (double)ps->scalar) : json_null());
    json_object_set_new(o, "mean_prediction",
                        ps->scalar ? json_pack("{s:f, s:f}", "a", ps->sum_a / (double)ps->scalar, "b",
                                               ps->sum_b / (double)ps->scalar)
                                   : json_null());
    return o;
}

int mon_agreement(qn_req *req, qn_res *res, void *ud)
{
    monitor *m = ud;
    qn_err err;
    const char *model = qn_req_param(req, "model");
    if (qn_name_check("model", model, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    qn_conn *c = qn_store_acquire(m->db, &err);
    if (!c)
        return mon_fail(req, res, &err);
    pair_stats pairs[MAX_PAIRS];
    size_t np = 0;
    qn_stmt *st = qn_prepare(c,
                             "SELECT a.version, b.version, a.prediction, b.prediction FROM window_rows a "
                             "JOIN window_rows b ON b.model = a.model AND b.request_id = a.request_id "
                             "AND b.version > a.version "
                             "WHERE a.model = ? AND a.request_id IS NOT NULL "
                             "ORDER BY a.id DESC LIMIT ?",
                             &err);
    int rc = -1;
    if (st) {
        qn_bind_text(st, 1, model, -1);
        qn_bind_int64(st, 2, MAX_ROWS * MAX_PAIRS);
        while ((rc = qn_step(st, &err)) == 1) {
            int64_t a = qn_col_int64(st, 0), b = qn_col_int64(st, 1);
            size_t i = 0;
            while (i < np && !(pairs[i].a == a && pairs[i].b == b))
                i++;
            if (i == np) {
                if (np == MAX_PAIRS)
                    continue;
                memset(&pairs[np], 0, sizeof pairs[np]);
                pairs[np].a = a;
                pairs[np++].b = b;
            }
            if (pairs[i].n >= MAX_ROWS)
                continue;
            json_t *pa = qn_json_from_text(qn_col_text(st, 2)), *pb = qn_json_from_text(qn_col_text(st, 3));
            add(&pairs[i], pa, pb);
            json_decref(pa);
            json_decref(pb);
        }
    }
    qn_store_release(m->db, c);
    if (rc < 0)
        return mon_fail(req, res, &err);
    json_t *list = json_array();
    for (size_t i = 0; i < np; i++)
        json_array_append_new(list, pair_json(&pairs[i]));
    return qn_res_json(res, 200, json_pack("{s:s, s:o, s:o}", "model", model, "pairs", list, "latency_us",
                                           mon_promote_latency_json(m, model)));
}
