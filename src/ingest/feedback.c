/*
 * feedback.c - ground truth and outcomes about earlier predictions.
 *
 * A feedback record says what really happened after a model answered: the
 * label of a request (request_id), or what a user did with a recommended
 * item (user + item). Records are checked through the same row rules as
 * events (ml/records.h) with a fixed schema, stored in the feedback table,
 * and each becomes one quern.feedback.received event (data = the record) in
 * the same transaction; quern-monitor joins them to predictions.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "core/validate.h"
#include "ingest/ingest.h"

/* label is left out on purpose: it may be a class name, a number or a
 * boolean, so it is checked by hand below (a scalar). */
static const char feedback_schema[] =
    "{\"columns\":["
    "{\"name\":\"model\",\"type\":\"categorical\",\"required\":true},"
    "{\"name\":\"request_id\",\"type\":\"categorical\"},"
    "{\"name\":\"user\",\"type\":\"categorical\"},"
    "{\"name\":\"item\",\"type\":\"categorical\"},"
    "{\"name\":\"outcome\",\"type\":\"categorical\"},"
    "{\"name\":\"value\",\"type\":\"numeric\"},"
    "{\"name\":\"time\",\"type\":\"timestamp\"}],"
    "\"additional_columns\":true}";

static const char *const fields[] = {"model", "request_id", "user", "item", "label", "outcome",
                                     "value", "time", NULL};

static int present(const json_t *rec, const char *k)
{
    const json_t *v = json_object_get(rec, k);
    return v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0);
}

/* snprintf for row messages that quote the record: cut on a character
 * boundary, so the message stays valid UTF-8 (it goes into a JSON answer). */
__attribute__((format(printf, 3, 4)))
static void say(char *msg, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    qn_err_format_v(msg, cap, fmt, ap);
    va_end(ap);
}

/* What the schema cannot say. 0, or 1 with msg filled. */
static int check_record(const json_t *rec, char *msg, size_t cap)
{
    qn_err e;
    if (qn_json_only(rec, fields, &e) < 0) {
        say(msg, cap, "%s (model, request_id, user, item, label, outcome, value, time)", e.msg);
        return 1;
    }
    /* model names what monitor and the registry know by name: the same rules. */
    const char *model = json_string_value(json_object_get(rec, "model"));
    if (model && qn_name_check("model", model, &e) < 0) {
        say(msg, cap, "%s", e.msg);
        return 1;
    }
    if (!present(rec, "request_id") && !(present(rec, "user") && present(rec, "item"))) {
        snprintf(msg, cap, "give request_id, or both user and item");
        return 1;
    }
    const json_t *l = json_object_get(rec, "label");
    if (l && (json_is_object(l) || json_is_array(l))) {
        snprintf(msg, cap, "label must be a string, a number or a boolean");
        return 1;
    }
    return 0;
}

static const char *str_or_null(const json_t *rec, const char *k)
{
    return json_string_value(json_object_get(rec, k));
}

int ing_feedback_post(qn_req *req, qn_res *res, void *ud)
{
    ingest *g = ud;
    qn_err err;
    int skip, rc, locked = 0;
    qml_rec_format fmt;
    qml_rec_schema *schema = NULL;
    qml_rec_batch b, good;
    json_t **recs = NULL;
    qn_conn *c = NULL;
    char *answer = NULL;
    ing_idem idem;
    size_t n = 0;
    qml_rec_batch_init(&b);
    qml_rec_batch_init(&good);
    if (qml_rec_format_parse(qn_req_header(req, "Content-Type"), &fmt, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    if (fmt == QML_REC_CSV)
        return qn_res_error(res, QN_INVALID_ARGUMENT,
                            "feedback is JSON: send application/json or application/x-ndjson");
    if (ing_on_error(req, res, &skip) < 0 || ing_admit(g, req, res) < 0 ||
        ing_idem_init(req, res, "feedback", &idem) < 0)
        return 0;

    json_t *sdoc = json_loads(feedback_schema, 0, NULL);
    rc = sdoc ? qml_rec_schema_parse(sdoc, &schema, &err) : qn_err_set(&err, QN_RESOURCE_EXHAUSTED, "out of memory");
    json_decref(sdoc);
    if (rc < 0)
        goto fail;
    size_t len;
    const char *body = qn_req_body(req, &len);
    qml_rec_opts o;
    qml_rec_opts_init(&o);
    o.max_rows = 10000;
    if ((rc = qml_rec_parse(body, len, fmt, schema, &o, &b, &err)) < 0) {
        if (rc == QN_INVALID_ARGUMENT) {
            qn_res_error(res, err.code, "%s", err.msg);
            goto done;
        }
        goto fail;
    }
    /* Second pass over the canonical rows: the checks the schema cannot
     * express. Bad ones join the batch's error list. */
    if (b.nrows && !(recs = calloc(b.nrows, sizeof *recs))) {
        qn_err_set(&err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < b.nrows; i++) {
        char msg[QML_REPORT_MSG];
        json_t *rec = json_loadb(b.text + b.off[i], b.off[i + 1] - b.off[i], 0, NULL);
        if (!rec) {
            qn_err_set(&err, QN_RESOURCE_EXHAUSTED, "out of memory");
            goto fail;
        }
        if (check_record(rec, msg, sizeof msg)) {
            json_decref(rec);
            good.nbad++;
            if (good.nerrors < o.max_errors) {
                if (!good.errors && !(good.errors = calloc(o.max_errors, sizeof *good.errors))) {
                    qn_err_set(&err, QN_RESOURCE_EXHAUSTED, "out of memory");
                    goto fail;
                }
                qml_rec_error *e = &good.errors[good.nerrors++];
                e->row = b.row[i];
                snprintf(e->msg, sizeof e->msg, "%s", msg);
            }
            continue;
        }
        recs[n++] = rec;
    }
    /* Merge both error lists in row order for the answer. */
    for (size_t i = 0; i < b.nerrors && good.nerrors < o.max_errors; i++) {
        if (!good.errors && !(good.errors = calloc(o.max_errors, sizeof *good.errors))) {
            qn_err_set(&err, QN_RESOURCE_EXHAUSTED, "out of memory");
            goto fail;
        }
        good.errors[good.nerrors++] = b.errors[i];
    }
    good.nbad += b.nbad;
    for (size_t i = 1; i < good.nerrors; i++) {
        qml_rec_error x = good.errors[i];
        size_t j = i;
        while (j > 0 && good.errors[j - 1].row > x.row) {
            good.errors[j] = good.errors[j - 1];
            j--;
        }
        good.errors[j] = x;
    }
    json_t *errs = ing_errors_json(&good);
    if (good.nbad && !skip) {
        json_t *d = json_pack("{s:o, s:I}", "errors", errs, "rejected", (json_int_t)good.nbad);
        if (d && good.nbad > good.nerrors)
            json_object_set_new(d, "errors_truncated", json_true());
        qn_res_error_details(res, QN_INVALID_ARGUMENT, d,
                             "%llu feedback records are invalid and nothing was stored (first: row %llu: "
                             "%s); fix them, or send with on_error=skip",
                             (unsigned long long)good.nbad, (unsigned long long)good.errors[0].row,
                             good.errors[0].msg);
        goto done;
    }
    json_t *a = json_pack("{s:I, s:I, s:o}", "accepted", (json_int_t)n, "rejected", (json_int_t)good.nbad,
                          "errors", errs);
    if (a && good.nbad > good.nerrors)
        json_object_set_new(a, "errors_truncated", json_true());
    answer = a ? qn_json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    if (!answer) {
        qn_err_set(&err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }

    if ((rc = ing_write_lock(g, &err)) < 0)
        goto fail;
    locked = 1;
    if (!(c = qn_store_acquire(g->db, &err)) || (rc = qn_tx_begin(c, QN_TX_WRITE, &err)) < 0)
        goto fail;
    if ((rc = ing_idem_check(c, &idem, res, &err)) != 0) {
        if (rc < 0)
            goto fail;
        goto done;
    }
    /* The request's own span: consumers continue the caller's trace below it. */
    char tp[QN_TRACEPARENT_LEN + 1];
    qn_traceparent_format(qn_req_trace(req), tp);
    int64_t now = qn_now_ms();
    for (size_t i = 0; i < n; i++) {
        json_t *ev = qn_event_new("quern.feedback.received", "quern-ingest", json_incref(recs[i]), tp);
        char *data = qn_json_canonical(recs[i]);
        qn_stmt *st = NULL;
        if (ev && data)
            st = qn_prepare(c, "INSERT INTO feedback (model, request_id, user_id, item, data, event_id, created_at) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?)", &err);
        if (st) {
            const char *rid = str_or_null(recs[i], "request_id"), *user = str_or_null(recs[i], "user"),
                       *item = str_or_null(recs[i], "item");
            qn_bind_text(st, 1, str_or_null(recs[i], "model"), -1);
            rid ? qn_bind_text(st, 2, rid, -1) : qn_bind_null(st, 2);
            user ? qn_bind_text(st, 3, user, -1) : qn_bind_null(st, 3);
            item ? qn_bind_text(st, 4, item, -1) : qn_bind_null(st, 4);
            qn_bind_text(st, 5, data, -1);
            qn_bind_text(st, 6, json_string_value(json_object_get(ev, "id")), -1);
            qn_bind_int64(st, 7, now);
            rc = qn_step(st, &err);
            if (rc >= 0)
                rc = qn_outbox_append(c, ev, &err);
        } else {
            rc = ev && data ? err.code : qn_err_set(&err, QN_RESOURCE_EXHAUSTED, "out of memory");
        }
        json_decref(ev);
        free(data);
        if (rc < 0)
            goto fail;
    }
    if ((rc = ing_idem_store(c, &idem, 201, answer, &err)) < 0 || (rc = qn_tx_commit(c, &err)) < 0)
        goto fail;
    qn_store_release(g->db, c);
    c = NULL;
    ing_write_unlock(g);
    locked = 0;
    if (n)
        qn_outbox_kick(g->outbox);
    qn_counter_add(g->feedback, NULL, (double)n);
    qn_res_text(res, 201, "application/json", answer, strlen(answer));
    goto done;
fail:
    if (c)
        qn_tx_rollback(c);
    ing_fail(req, res, &err);
done:
    if (c)
        qn_store_release(g->db, c);
    if (locked)
        ing_write_unlock(g);
    for (size_t i = 0; i < n; i++)
        json_decref(recs[i]);
    free(recs);
    free(answer);
    qml_rec_schema_free(schema);
    qml_rec_batch_free(&b);
    qml_rec_batch_free(&good);
    return 0;
}
