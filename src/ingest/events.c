/*
 * events.c - batches of events in, pages of events out, and the outbox view.
 *
 * POST parses and checks the whole body before taking the writer (parsing
 * runs on every worker thread at once; only the inserts are serialised),
 * then stores the rows, the dataset's new last_seq, the
 * quern.events.ingested outbox event and the Idempotency-Key answer in one
 * transaction, and answers only after it committed: a 2xx means the rows are
 * in the WAL and survive kill -9 of the process.
 *
 * GET returns rows in seq order as stored: the canonical JSON texts are
 * spliced into the answer, never parsed again. The export route is the bulk
 * reader's form of the same rows (quern-prep reads a whole source through
 * it): NDJSON, one stored text per line, in pages ten times larger, with no
 * per-row envelope to parse on either side.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/json.h"
#include "core/log.h"
#include "core/trace.h"
#include "core/validate.h"
#include "ingest/ingest.h"
#include "ml/csv.h"

#define PAGE_DEFAULT 1000
#define PAGE_MAX 10000
#define PAGE_BYTES (16u << 20)
#define SCHEMA_RETRIES 3
#define EXPORT_DEFAULT 10000
#define EXPORT_MAX 100000
#define EXPORT_BYTES (32u << 20)

static void count_rows(ingest *g, const char *dataset, const char *outcome, double n)
{
    const char *v[] = {dataset, outcome};
    if (n > 0)
        qn_counter_add(g->rows, v, n);
}

static void count_batch(ingest *g, const char *outcome)
{
    const char *v[] = {outcome};
    qn_counter_add(g->batches, v, 1);
}

/* The dataset's id, schema version and last seq inside the write
 * transaction, creating the dataset when it does not exist yet. */
static int dataset_for_write(qn_conn *c, const char *name, int64_t *id, int64_t *version,
                             int64_t *last, qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "SELECT id, schema_version, last_seq FROM datasets WHERE name = ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, name, -1);
    int rc = qn_step(st, err);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        *id = qn_col_int64(st, 0);
        *version = qn_col_int64(st, 1);
        *last = qn_col_int64(st, 2);
        return 0;
    }
    int64_t now = qn_now_ms();
    st = qn_prepare(c, "INSERT INTO datasets (name, created_at, updated_at) VALUES (?, ?, ?) RETURNING id", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, name, -1);
    qn_bind_int64(st, 2, now);
    qn_bind_int64(st, 3, now);
    if ((rc = qn_step(st, err)) != 1)
        return rc < 0 ? rc : qn_err_set(err, QN_INTERNAL, "dataset %s: insert returned no id", name);
    *id = qn_col_int64(st, 0);
    *version = *last = 0;
    /* Run RETURNING to completion: an unfinished statement blocks COMMIT. */
    return (rc = qn_step(st, err)) < 0 ? rc : 0;
}

static int insert_rows(qn_conn *c, int64_t id, int64_t first, const qml_rec_batch *b, qn_err *err)
{
    for (size_t i = 0; i < b->nrows; i++) {
        qn_stmt *st = qn_prepare(c, "INSERT INTO events (dataset_id, seq, data) VALUES (?, ?, ?)", err);
        if (!st)
            return err->code;
        qn_bind_int64(st, 1, id);
        qn_bind_int64(st, 2, first + (int64_t)i);
        qn_bind_text(st, 3, b->text + b->off[i], (ssize_t)(b->off[i + 1] - b->off[i]));
        int rc = qn_step(st, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int bump_seq(qn_conn *c, int64_t id, int64_t last, qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "UPDATE datasets SET last_seq = ?, updated_at = ? WHERE id = ?", err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, last);
    qn_bind_int64(st, 2, qn_now_ms());
    qn_bind_int64(st, 3, id);
    int rc = qn_step(st, err);
    return rc < 0 ? rc : 0;
}

static int append_event(qn_conn *c, const char *tp, const char *dataset, const char *batch_id,
                        int64_t rows, int64_t first, int64_t last, qn_err *err)
{
    json_t *data = json_pack("{s:s, s:s, s:I, s:I, s:I}", "dataset", dataset, "batch_id", batch_id,
                             "rows", (json_int_t)rows, "first_seq", (json_int_t)first, "last_seq",
                             (json_int_t)last);
    json_t *ev = data ? qn_event_new("quern.events.ingested", "quern-ingest", data, tp) : NULL;
    if (!ev)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    int rc = qn_outbox_append(c, ev, err);
    json_decref(ev);
    return rc;
}

int ing_append(qn_conn *c, const char *name, const qml_rec_batch *b, int64_t checked_version, const char *tp,
               const char *batch_id, int64_t *first, int64_t *last, qn_err *err)
{
    int64_t id = 0, version = 0, prev = 0;
    int rc = dataset_for_write(c, name, &id, &version, &prev, err);
    if (rc < 0)
        return rc;
    if (version != checked_version)
        return qn_err_set(err, QN_ABORTED, "dataset %s: the schema changed (version %lld, rows checked "
                          "against %lld)", name, (long long)version, (long long)checked_version);
    *first = prev + 1;
    *last = prev + (int64_t)b->nrows;
    if (!b->nrows)
        return 0;
    if ((rc = insert_rows(c, id, *first, b, err)) < 0 || (rc = bump_seq(c, id, *last, err)) < 0)
        return rc;
    return append_event(c, tp, name, batch_id, (int64_t)b->nrows, *first, *last, err);
}

/* The 201 answer. first/last are 0 when nothing was accepted. */
static char *answer_text(const char *dataset, const char *batch_id, const qml_rec_batch *b,
                         int64_t first, int64_t last)
{
    json_t *a = json_pack("{s:s, s:s, s:I, s:I, s:o, s:o, s:o}", "dataset", dataset, "batch_id", batch_id,
                          "accepted", (json_int_t)b->nrows, "rejected", (json_int_t)b->nbad, "first_seq",
                          b->nrows ? json_integer(first) : json_null(), "last_seq",
                          b->nrows ? json_integer(last) : json_null(), "errors", ing_errors_json(b));
    if (a && b->nbad > b->nerrors)
        json_object_set_new(a, "errors_truncated", json_true());
    char *s = a ? qn_json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return s;
}

/* Refuses a body with invalid rows under on_error=reject. */
static int refuse_rows(ingest *g, qn_res *res, const char *name, const qml_rec_batch *b)
{
    json_t *d = json_pack("{s:o, s:I, s:I}", "errors", ing_errors_json(b), "rejected", (json_int_t)b->nbad,
                          "valid", (json_int_t)b->nrows);
    if (d && b->nbad > b->nerrors)
        json_object_set_new(d, "errors_truncated", json_true());
    count_rows(g, name, "rejected", (double)(b->nbad + b->nrows));
    count_batch(g, "refused");
    const qml_rec_error *e = &b->errors[0];
    return qn_res_error_details(res, QN_INVALID_ARGUMENT, d,
                                "%llu of %llu rows are invalid and nothing was stored (first: row %llu: %s); "
                                "fix them, or send with on_error=skip to store the valid rows",
                                (unsigned long long)b->nbad, (unsigned long long)(b->nbad + b->nrows),
                                (unsigned long long)e->row, e->msg);
}

#define CSV_NA_MAX 16

/* The CSV dialect of a text/csv body from the query: delimiter (, ; tab |
 * or auto), quote (one character or none), decimal_comma, encoding and na
 * (comma-separated missing-value markers). Strings live in the request's
 * arena. 0, or QN_INVALID_ARGUMENT naming the parameter. */
static int csv_query(qn_req *req, qml_rec_format fmt, qml_rec_opts *o, const char **na, qn_err *err)
{
    static const char *const params[] = {"delimiter", "quote", "decimal_comma", "encoding", "na"};
    const char *v;
    if (fmt != QML_REC_CSV) {
        for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
            if (qn_req_query(req, params[i]))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "%s applies to text/csv bodies only", params[i]);
        return 0;
    }
    if ((v = qn_req_query(req, "delimiter")) != NULL) {
        if (!strcmp(v, "tab") || !strcmp(v, "\t"))
            o->csv_sep = "\t";
        else if (!strcmp(v, ",") || !strcmp(v, ";") || !strcmp(v, "|") || !strcmp(v, "auto"))
            o->csv_sep = v;
        else
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "delimiter must be one of , ; tab | auto (URL-encoded), not \"%.16s\"", v);
    }
    if ((v = qn_req_query(req, "quote")) != NULL) {
        if (!strcmp(v, "none"))
            o->csv_quote = QML_CSV_NO_QUOTE;
        else if (strlen(v) == 1 && (unsigned char)v[0] > ' ' && (unsigned char)v[0] < 127)
            o->csv_quote = v[0];
        else
            return qn_err_set(err, QN_INVALID_ARGUMENT, "quote must be one printable ASCII character or none");
    }
    if ((v = qn_req_query(req, "decimal_comma")) != NULL) {
        if (strcmp(v, "true") && strcmp(v, "false"))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "decimal_comma must be true or false");
        o->csv_decimal_comma = strcmp(v, "true") == 0;
    }
    if ((v = qn_req_query(req, "encoding")) != NULL) {
        if (strcasecmp(v, "utf-8") && strcasecmp(v, "latin-1") && strcasecmp(v, "windows-1252"))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "encoding must be utf-8, latin-1 or windows-1252, not \"%.32s\"", v);
        o->csv_encoding = v;
    }
    if ((v = qn_req_query(req, "na")) != NULL) {
        char *all = qn_arena_strdup(qn_req_arena(req), v);
        if (!all)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        size_t n = 0;
        for (char *p = all;; ) {
            char *c = strchr(p, ',');
            if (c)
                *c = '\0';
            if (n == CSV_NA_MAX || strlen(p) > 64)
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "na: at most %d markers of at most 64 bytes each", CSV_NA_MAX);
            na[n++] = p; /* "" is harmless: an empty cell is missing anyway */
            if (!c)
                break;
            p = c + 1;
        }
        o->csv_na = na;
        o->csv_n_na = n;
    }
    return 0;
}

int ing_events_post(qn_req *req, qn_res *res, void *ud)
{
    ingest *g = ud;
    qn_err err;
    const char *name = qn_req_param(req, "name");
    int skip, rc = 0, locked = 0;
    qml_rec_format fmt;
    qml_rec_schema *schema = NULL;
    qml_rec_batch b;
    qn_conn *c = NULL;
    char *answer = NULL;
    ing_idem idem;
    qml_rec_opts o;
    const char *na[CSV_NA_MAX];
    qml_rec_batch_init(&b);
    qml_rec_opts_init(&o);
    if (qn_name_check("dataset", name, &err) < 0 ||
        qml_rec_format_parse(qn_req_header(req, "Content-Type"), &fmt, &err) < 0 ||
        csv_query(req, fmt, &o, na, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    if (ing_on_error(req, res, &skip) < 0 || ing_admit(g, req, res) < 0)
        return 0;
    char *scope = qn_arena_printf(qn_req_arena(req), "dataset:%s", name);
    if (!scope || ing_idem_init(req, res, scope, &idem) < 0)
        return qn_res_done(res) ? 0 : qn_res_error(res, QN_RESOURCE_EXHAUSTED, "out of memory");
    ing_idem_sweep(g);

    size_t len;
    const char *body = qn_req_body(req, &len);
    for (int attempt = 0;; attempt++) {
        int64_t id = 0, seen_version = 0;
        if (!(c = qn_store_acquire(g->db, &err)))
            goto fail;
        /* A replay needs neither parsing nor the writer. */
        if ((rc = ing_idem_check(c, &idem, res, &err)) != 0) {
            if (rc < 0)
                goto fail;
            count_batch(g, "replayed");
            goto done;
        }
        if ((rc = ing_dataset_lookup(c, name, &id, &seen_version, &schema, &err)) < 0)
            goto fail;
        qn_store_release(g->db, c);
        c = NULL;

        if ((rc = qml_rec_parse(body, len, fmt, schema, &o, &b, &err)) < 0) {
            if (rc == QN_INVALID_ARGUMENT) {
                count_batch(g, "refused");
                qn_res_error(res, err.code, "%s", err.msg);
                goto done;
            }
            goto fail;
        }
        if (b.nbad && !skip) {
            refuse_rows(g, res, name, &b);
            goto done;
        }

        if ((rc = ing_write_lock(g, &err)) < 0)
            goto fail;
        locked = 1;
        if (!(c = qn_store_acquire(g->db, &err)) || (rc = qn_tx_begin(c, QN_TX_WRITE, &err)) < 0)
            goto fail;
        if ((rc = ing_idem_check(c, &idem, res, &err)) != 0) {
            if (rc < 0)
                goto fail;
            count_batch(g, "replayed");
            goto done;
        }
        char batch_id[QN_UUID_LEN + 1];
        qn_uuid4(batch_id);
        /* The request's own span: consumers continue the caller's trace below it. */
        char tp[QN_TRACEPARENT_LEN + 1];
        qn_traceparent_format(qn_req_trace(req), tp);
        int64_t first = 0, new_last = 0;
        if ((rc = ing_append(c, name, &b, seen_version, tp, batch_id, &first, &new_last, &err)) == QN_ABORTED) {
            /* The schema changed since the rows were checked: check again. */
            qn_tx_rollback(c);
            qn_store_release(g->db, c);
            c = NULL;
            ing_write_unlock(g);
            locked = 0;
            qml_rec_schema_free(schema);
            schema = NULL;
            qml_rec_batch_free(&b);
            if (attempt + 1 >= SCHEMA_RETRIES) {
                qn_err_set(&err, QN_UNAVAILABLE, "dataset %s: schema changing too fast", name);
                goto fail;
            }
            continue;
        }
        if (rc < 0)
            goto fail;
        if (!(answer = answer_text(name, batch_id, &b, first, new_last))) {
            qn_err_set(&err, QN_RESOURCE_EXHAUSTED, "out of memory");
            goto fail;
        }
        if ((rc = ing_idem_store(c, &idem, 201, answer, &err)) < 0 || (rc = qn_tx_commit(c, &err)) < 0)
            goto fail;
        qn_store_release(g->db, c);
        c = NULL;
        ing_write_unlock(g);
        locked = 0;
        if (b.nrows)
            qn_outbox_kick(g->outbox);
        count_rows(g, name, "accepted", (double)b.nrows);
        count_rows(g, name, "rejected", (double)b.nbad);
        count_batch(g, "stored");
        qn_histogram_observe(g->batch_rows, NULL, (double)b.nrows);
        qn_res_text(res, 201, "application/json", answer, strlen(answer));
        goto done;
    }
fail:
    if (c)
        qn_tx_rollback(c);
    ing_fail(req, res, &err);
done:
    if (c)
        qn_store_release(g->db, c);
    if (locked)
        ing_write_unlock(g);
    free(answer);
    qml_rec_schema_free(schema);
    qml_rec_batch_free(&b);
    return 0;
}

int ing_events_get(qn_req *req, qn_res *res, void *ud)
{
    ingest *g = ud;
    qn_err err;
    const char *name = qn_req_param(req, "name"), *a = qn_req_query(req, "after");
    int64_t limit, after = 0;
    if (qn_name_check("dataset", name, &err) < 0 ||
        qn_limit_parse(qn_req_query(req, "limit"), PAGE_DEFAULT, PAGE_MAX, &limit, &err) < 0 ||
        (a && strcmp(a, "0") != 0 && qn_uint_parse("after", a, INT64_MAX / 2, &after, &err) < 0))
        return qn_res_error(res, err.code, "%s", err.msg);
    qn_buf out;
    /* A page stops growing past PAGE_BYTES (the reader asks again from
     * next_after), so an answer never holds limit x 64 KiB. */
    qn_buf_init(&out, PAGE_BYTES + 128 * 1024);
    qn_conn *c = qn_store_acquire(g->db, &err);
    if (!c)
        goto fail;
    /* One read transaction: last_seq and the rows come from one snapshot. */
    if (qn_tx_begin(c, QN_TX_READ, &err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c, "SELECT id, last_seq FROM datasets WHERE name = ?", &err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, name, -1);
    int rc = qn_step(st, &err);
    if (rc < 0)
        goto fail;
    if (rc == 0) {
        qn_tx_rollback(c);
        qn_store_release(g->db, c);
        qn_buf_free(&out);
        return qn_res_error(res, QN_NOT_FOUND, "dataset %s does not exist", name);
    }
    int64_t id = qn_col_int64(st, 0), last_seq = qn_col_int64(st, 1), next = after;
    json_t *jname = json_string(name);
    char *qname = jname ? qn_json_dumps(jname, JSON_ENCODE_ANY) : NULL;
    json_decref(jname);
    int ok = qname && qn_buf_printf(&out, "{\"dataset\":%s,\"events\":[", qname) == 0;
    free(qname);
    st = qn_prepare(c, "SELECT seq, data FROM events WHERE dataset_id = ? AND seq > ? ORDER BY seq LIMIT ?", &err);
    if (!st)
        goto fail;
    qn_bind_int64(st, 1, id);
    qn_bind_int64(st, 2, after);
    qn_bind_int64(st, 3, limit);
    int first = 1;
    rc = 0;
    while (ok && out.len < PAGE_BYTES && (rc = qn_step(st, &err)) == 1) {
        next = qn_col_int64(st, 0);
        ok = qn_buf_printf(&out, "%s{\"seq\":%lld,\"data\":", first ? "" : ",", (long long)next) == 0 &&
             qn_buf_puts(&out, qn_col_text(st, 1)) == 0 && qn_buf_append(&out, "}", 1) == 0;
        first = 0;
    }
    if (ok && rc < 0)
        goto fail;
    qn_tx_rollback(c);
    qn_store_release(g->db, c);
    c = NULL;
    if (!ok || qn_buf_printf(&out, "],\"next_after\":%lld,\"last_seq\":%lld}", (long long)next,
                             (long long)last_seq) < 0) {
        qn_buf_free(&out);
        return qn_res_error(res, QN_RESOURCE_EXHAUSTED, "the page is too large; ask for fewer rows (limit)");
    }
    qn_res_text(res, 200, "application/json", out.data, out.len);
    qn_buf_free(&out);
    return 0;
fail:
    qn_buf_free(&out);
    if (c)
        qn_store_release(g->db, c);
    return ing_fail(req, res, &err);
}

/* A sequence number of the query: 0 or a positive integer. */
static int seq_param(const char *what, const char *s, int64_t *out, qn_err *err)
{
    if (strcmp(s, "0") == 0) {
        *out = 0;
        return 0;
    }
    return qn_uint_parse(what, s, INT64_MAX / 2, out, err);
}

int ing_export_get(qn_req *req, qn_res *res, void *ud)
{
    ingest *g = ud;
    qn_err err;
    const char *name = qn_req_param(req, "name"), *a = qn_req_query(req, "after"), *u = qn_req_query(req, "until");
    int64_t limit, after = 0, until = INT64_MAX;
    if (qn_name_check("dataset", name, &err) < 0 ||
        qn_limit_parse(qn_req_query(req, "limit"), EXPORT_DEFAULT, EXPORT_MAX, &limit, &err) < 0 ||
        (a && seq_param("after", a, &after, &err) < 0) || (u && seq_param("until", u, &until, &err) < 0))
        return qn_res_error(res, err.code, "%s", err.msg);
    if (until < after)
        return qn_res_error(res, QN_INVALID_ARGUMENT, "until (%lld) must not be below after (%lld)",
                            (long long)until, (long long)after);
    qn_buf out;
    /* Rows are whole lines: a page stops after the row that takes it past
     * EXPORT_BYTES, so the bound is EXPORT_BYTES plus one row. */
    qn_buf_init(&out, EXPORT_BYTES + (4u << 20));
    /* At once (rows of ~256 bytes): doubling there from 64 bytes copies the
     * page several times. Kept under glibc's largest mmap threshold (32 MiB),
     * so that freed pages are reused from the heap instead of mapped and
     * zeroed by the kernel afresh for every page. */
    size_t want = (size_t)limit * 256 < (24u << 20) ? (size_t)limit * 256 : (24u << 20);
    if (qn_buf_reserve(&out, want) < 0) {
        qn_buf_free(&out);
        return qn_res_error(res, QN_UNAVAILABLE, "out of memory for a page of %s; retry shortly", name);
    }
    int64_t id = 0, last_seq = 0, next = after, rows = 0;
    int rc;
    qn_conn *c = qn_store_acquire(g->db, &err);
    if (!c)
        goto fail;
    /* One read transaction: last_seq and the rows come from one snapshot. */
    if (qn_tx_begin(c, QN_TX_READ, &err) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c, "SELECT id, last_seq FROM datasets WHERE name = ?", &err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, name, -1);
    if ((rc = qn_step(st, &err)) < 0)
        goto fail;
    if (rc == 0) {
        qn_tx_rollback(c);
        qn_store_release(g->db, c);
        qn_buf_free(&out);
        return qn_res_error(res, QN_NOT_FOUND, "dataset %s does not exist", name);
    }
    id = qn_col_int64(st, 0);
    last_seq = qn_col_int64(st, 1);
    st = qn_prepare(c, "SELECT seq, data FROM events WHERE dataset_id = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                    &err);
    if (!st)
        goto fail;
    qn_bind_int64(st, 1, id);
    qn_bind_int64(st, 2, after);
    qn_bind_int64(st, 3, until);
    qn_bind_int64(st, 4, limit);
    int ok = 1;
    rc = 0;
    while (ok && out.len < EXPORT_BYTES && (rc = qn_step(st, &err)) == 1) {
        next = qn_col_int64(st, 0);
        rows++;
        ok = qn_buf_puts(&out, qn_col_text(st, 1)) == 0 && qn_buf_append(&out, "\n", 1) == 0;
    }
    if (ok && rc < 0)
        goto fail;
    qn_tx_rollback(c);
    qn_store_release(g->db, c);
    c = NULL;
    if (!ok) {
        qn_buf_free(&out);
        return qn_res_error(res, QN_RESOURCE_EXHAUSTED, "the page is too large; ask for fewer rows (limit)");
    }
    char h[32];
    snprintf(h, sizeof h, "%lld", (long long)last_seq);
    qn_res_header(res, "Quern-Last-Seq", h);
    snprintf(h, sizeof h, "%lld", (long long)next);
    qn_res_header(res, "Quern-Next-After", h);
    snprintf(h, sizeof h, "%lld", (long long)rows);
    qn_res_header(res, "Quern-Rows", h);
    /* The page is handed over, not copied (it may be 32 MiB). */
    size_t len = 0;
    char *body = qn_buf_detach(&out, &len);
    if (!body)
        return qn_res_error(res, QN_RESOURCE_EXHAUSTED, "the page is too large; ask for fewer rows (limit)");
    qn_res_take(res, 200, "application/x-ndjson", body, len);
    return 0;
fail:
    qn_buf_free(&out);
    if (c)
        qn_store_release(g->db, c);
    return ing_fail(req, res, &err);
}

int ing_outbox_list(qn_req *req, qn_res *res, void *ud)
{
    ingest *g = ud;
    return qn_outbox_list(g->db, req, res);
}
