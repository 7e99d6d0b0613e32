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
 * Rows are stored as column blocks (ml/colblock.h), one event_blocks row
 * per block with the seqs it covers; the blocks are built before the writer
 * is taken, since they hold no seqs. GET returns rows in seq order: each
 * block overlapping the range is viewed once and its rows rendered back to
 * their canonical texts, byte for byte what was stored, never parsed as
 * JSON. The export route is the bulk reader's form of the same rows
 * (quern-prep reads a whole source through it): NDJSON, one text per line,
 * in pages ten times larger with no per-row envelope, or, when asked, the
 * blocks themselves (whole ones as stored, cut ones sliced). One walk over
 * the blocks of a range (walk_range) serves all three answers.
 *
 * Rows a data directory kept in the old table events (one text per row)
 * are moved into blocks at start (ing_convert_rows).
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
#include "ml/colblock.h"
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

/* A block is finished at this many bytes of row text even when it has fewer
 * than QML_COLBLOCK_MAX_ROWS rows, so that one stored blob (and what a
 * reader must hold to view or slice it) stays moderate whatever the rows'
 * size. */
#define BLOCK_TEXT_BYTES (16u << 20)
/* The most the blocks of one batch may take: for rows as people send them
 * far less than their text, but rows that each use a few of thousands of
 * keys give blocks of mostly empty cells (rows x columns), so the bound
 * follows the text, with a hard ceiling. */
#define BLOCKS_MAX ((size_t)2 << 30)
#define BLOCKS_PER_TEXT 4
#define BLOCKS_SLACK ((size_t)64 << 20)

void ing_blocks_init(ing_blocks *k)
{
    memset(k, 0, sizeof *k);
    qn_buf_init(&k->bytes, BLOCKS_MAX);
}

void ing_blocks_free(ing_blocks *k)
{
    qn_buf_free(&k->bytes);
    free(k->end);
    free(k->rows);
    memset(k, 0, sizeof *k);
}

/* Finishes the builder's block (if it has rows) onto k. */
static int blocks_push(ing_blocks *k, qml_colblock_builder *bld, qn_err *err)
{
    size_t rows = qml_colblock_rows(bld);
    if (!rows)
        return 0;
    if (k->n == k->cap) {
        size_t cap = k->cap ? 2 * k->cap : 4;
        size_t *end = realloc(k->end, cap * sizeof *end);
        if (end)
            k->end = end;
        uint32_t *r = end ? realloc(k->rows, cap * sizeof *r) : NULL;
        if (!r)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory for the blocks of a batch");
        k->rows = r;
        k->cap = cap;
    }
    int rc = qml_colblock_finish(bld, &k->bytes, err);
    if (rc < 0)
        return rc;
    k->end[k->n] = k->bytes.len;
    k->rows[k->n] = (uint32_t)rows;
    k->n++;
    return 0;
}

/* One row into the builder, finishing the block first when the row would
 * take it past BLOCK_TEXT_BYTES or the builder says it is full. *text
 * counts the row text of the block being built. */
static int blocks_add(ing_blocks *k, qml_colblock_builder *bld, const char *row, size_t len, size_t *text,
                      qn_err *err)
{
    int rc;
    if (*text && *text + len > BLOCK_TEXT_BYTES) {
        if ((rc = blocks_push(k, bld, err)) < 0)
            return rc;
        *text = 0;
    }
    if ((rc = qml_colblock_add(bld, row, len, err)) == QN_OUT_OF_RANGE && qml_colblock_rows(bld)) {
        if ((rc = blocks_push(k, bld, err)) < 0)
            return rc;
        *text = 0;
        rc = qml_colblock_add(bld, row, len, err);
    }
    if (rc < 0)
        return rc;
    *text += len;
    return 0;
}

int ing_blocks_build(const qml_rec_batch *b, ing_blocks *k, qn_err *err)
{
    if (!b->nrows)
        return 0;
    size_t all = b->off[b->nrows] - b->off[0];
    size_t bound = all < (BLOCKS_MAX - BLOCKS_SLACK) / BLOCKS_PER_TEXT ? all * BLOCKS_PER_TEXT + BLOCKS_SLACK
                                                                       : BLOCKS_MAX;
    if (!k->bytes.cap && !k->n)
        qn_buf_init(&k->bytes, bound);
    qml_colblock_builder *bld = qml_colblock_builder_new();
    if (!bld)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory for the blocks of a batch");
    int rc = 0;
    size_t text = 0;
    for (size_t i = 0; i < b->nrows && rc == 0; i++)
        rc = blocks_add(k, bld, b->text + b->off[i], b->off[i + 1] - b->off[i], &text, err);
    if (rc == 0)
        rc = blocks_push(k, bld, err);
    if (rc == QN_RESOURCE_EXHAUSTED)
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED,
                        "the column blocks of this batch's %zu rows need more memory than there is or than "
                        "%zu bytes (rows with many distinct keys, each in few rows, make large blocks); "
                        "send fewer rows per batch", b->nrows, k->bytes.max);
    qml_colblock_builder_free(bld);
    return rc;
}

static int insert_block(qn_conn *c, int64_t id, int64_t first, int64_t last, const void *data, size_t len,
                        qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "INSERT INTO event_blocks (dataset_id, first_seq, last_seq, data) VALUES (?, ?, ?, ?)",
                             err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, id);
    qn_bind_int64(st, 2, first);
    qn_bind_int64(st, 3, last);
    qn_bind_blob(st, 4, data, len);
    int rc = qn_step(st, err);
    return rc < 0 ? rc : 0;
}

static int insert_blocks(qn_conn *c, int64_t id, int64_t first, const ing_blocks *k, qn_err *err)
{
    size_t start = 0;
    for (size_t i = 0; i < k->n; i++) {
        int rc = insert_block(c, id, first, first + k->rows[i] - 1, k->bytes.data + start, k->end[i] - start, err);
        if (rc < 0)
            return rc;
        first += k->rows[i];
        start = k->end[i];
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

int ing_append(qn_conn *c, const char *name, const qml_rec_batch *b, const ing_blocks *k, int64_t checked_version,
               const char *tp, const char *batch_id, int64_t *first, int64_t *last, qn_err *err)
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
    size_t krows = 0;
    for (size_t i = 0; i < k->n; i++)
        krows += k->rows[i];
    if (krows != b->nrows)
        return qn_err_set(err, QN_INTERNAL, "dataset %s: %zu rows in blocks for a batch of %zu", name, krows,
                          b->nrows);
    if ((rc = insert_blocks(c, id, *first, k, err)) < 0 || (rc = bump_seq(c, id, *last, err)) < 0)
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
    ing_blocks k;
    ing_blocks_init(&k);
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
        /* The blocks hold no seqs (first_seq/last_seq are columns), so
         * they are built here too: the writer waits for the inserts only. */
        if ((rc = ing_blocks_build(&b, &k, &err)) < 0)
            goto fail;

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
        if ((rc = ing_append(c, name, &b, &k, seen_version, tp, batch_id, &first, &new_last, &err)) == QN_ABORTED) {
            /* The schema changed since the rows were checked: check again. */
            qn_tx_rollback(c);
            qn_store_release(g->db, c);
            c = NULL;
            ing_write_unlock(g);
            locked = 0;
            qml_rec_schema_free(schema);
            schema = NULL;
            qml_rec_batch_free(&b);
            ing_blocks_free(&k);
            ing_blocks_init(&k);
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
    ing_blocks_free(&k);
    return 0;
}

/* ---- reading rows back ------------------------------------------------------------ */

/* Rows [from, to) of one stored block, offered to a page writer. */
typedef struct span {
    const qml_colblock *blk;
    const void *raw;      /* the block as stored */
    size_t rawlen;
    int64_t first_seq;    /* row 0's seq */
    uint32_t from, to;
} span;

/* Takes rows from the start of s into a page: how many (fewer than offered
 * ends the page), or a negative qn_code with err. */
typedef int64_t (*span_fn)(void *ud, const span *s, qn_err *err);

static int data_loss(qn_err *err, const char *name, int64_t first, int64_t last, const char *why)
{
    qn_err_set(err, QN_DATA_LOSS, "dataset %s: rows %lld..%lld: %s", name, (long long)first, (long long)last, why);
    qn_log_error(NULL, "stored rows unreadable", "{s:s, s:I, s:I, s:s}", "dataset", name, "first_seq",
                 (json_int_t)first, "last_seq", (json_int_t)last, "detail", err->msg);
    return QN_DATA_LOSS;
}

/* Offers fn the rows after < seq <= until of dataset id (name, last seq
 * last_seq), at most limit, in seq order, block by block, on c's open read
 * transaction; the one walk behind the events page and both export forms.
 * Blocks are fetched 16 per query: PostgreSQL answers a query whole, so a
 * walk over a large range asks again rather than holding every block.
 * Stops when fn takes fewer rows than offered. *next is the last seq taken
 * (after when none), *rows the rows taken. A block that does not view, or
 * a seq under last_seq that no block holds, is QN_DATA_LOSS (logged). */
static int walk_range(qn_conn *c, const char *name, int64_t id, int64_t last_seq, int64_t after, int64_t until,
                      int64_t limit, span_fn fn, void *ud, int64_t *next, int64_t *rows, qn_err *err)
{
    *next = after;
    *rows = 0;
    int64_t hi = until < last_seq ? until : last_seq;
    if (hi - after > limit)
        hi = after + limit;
    if (hi <= after)
        return 0;
    int64_t want = after + 1, lo = want;
    /* The block holding want starts at or below it: found through the
     * primary key, so a page late in a dataset of many blocks does not
     * scan those before it. */
    qn_stmt *st = qn_prepare(c, "SELECT first_seq FROM event_blocks WHERE dataset_id = ? AND first_seq <= ? "
                                "ORDER BY first_seq DESC LIMIT 1", err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, id);
    qn_bind_int64(st, 2, want);
    int rc;
    while ((rc = qn_step(st, err)) == 1)
        lo = qn_col_int64(st, 0);
    if (rc < 0)
        return rc;
    while (want <= hi) {
        st = qn_prepare(c, "SELECT first_seq, last_seq, data FROM event_blocks WHERE dataset_id = ? AND "
                           "first_seq >= ? AND first_seq <= ? AND last_seq > ? ORDER BY first_seq LIMIT 16", err);
        if (!st)
            return err->code;
        qn_bind_int64(st, 1, id);
        qn_bind_int64(st, 2, lo);
        qn_bind_int64(st, 3, hi);
        qn_bind_int64(st, 4, want - 1);
        int got = 0;
        while (want <= hi && (rc = qn_step(st, err)) == 1) {
            int64_t f = qn_col_int64(st, 0), l = qn_col_int64(st, 1);
            size_t len = 0, used = 0;
            const void *data = qn_col_blob(st, 2, &len);
            got++;
            if (f > want)
                return data_loss(err, name, want, f - 1, "no stored block holds them");
            qml_colblock blk;
            qn_err verr;
            if (qml_colblock_view(data, len, &blk, &used, &verr) < 0) {
                if (verr.code == QN_RESOURCE_EXHAUSTED)
                    return qn_err_set(err, verr.code, "%s", verr.msg);
                char why[QN_ERR_MSG_MAX];
                snprintf(why, sizeof why, "the stored block does not read: %.400s", verr.msg);
                return data_loss(err, name, f, l, why);
            }
            if (used != len || (int64_t)blk.nrows != l - f + 1) {
                qml_colblock_view_free(&blk);
                return data_loss(err, name, f, l, "the stored block's length or row count does not match its seqs");
            }
            int64_t to = (l < hi ? l : hi) - f + 1;
            span sp = {.blk = &blk, .raw = data, .rawlen = len, .first_seq = f, .from = (uint32_t)(want - f),
                       .to = (uint32_t)to};
            int64_t n = fn(ud, &sp, err);
            qml_colblock_view_free(&blk);
            if (n < 0)
                return (int)n;
            if (n) {
                *rows += n;
                want += n;
                *next = want - 1;
            }
            if (n < (int64_t)(sp.to - sp.from))
                return 0;
            lo = l + 1;
        }
        if (rc < 0)
            return rc;
        if (!got && want <= hi)
            return data_loss(err, name, want, hi, "no stored block holds them");
    }
    return 0;
}

/* The dataset's id and last seq in c's read transaction; 0 when found, 1
 * when it does not exist. */
static int dataset_for_read(qn_conn *c, const char *name, int64_t *id, int64_t *last_seq, qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "SELECT id, last_seq FROM datasets WHERE name = ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, name, -1);
    int rc = qn_step(st, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return 1;
    *id = qn_col_int64(st, 0);
    *last_seq = qn_col_int64(st, 1);
    while ((rc = qn_step(st, err)) == 1)
        ;
    return rc < 0 ? rc : 0;
}

/* Reads dataset name's rows after..until (at most limit) into a page with
 * fn, in one read transaction (last_seq and the rows from one snapshot).
 * 1 when the dataset does not exist, 0, or a negative code with err. */
static int read_range(ingest *g, const char *name, int64_t after, int64_t until, int64_t limit, span_fn fn,
                      void *ud, int64_t *last_seq, int64_t *next, int64_t *rows, qn_err *err)
{
    int64_t id = 0;
    *next = after;
    *rows = 0;
    qn_conn *c = qn_store_acquire(g->db, err);
    if (!c)
        return err->code;
    int rc = qn_tx_begin(c, QN_TX_READ, err);
    if (rc == 0 && (rc = dataset_for_read(c, name, &id, last_seq, err)) == 0)
        rc = walk_range(c, name, id, *last_seq, after, until, limit, fn, ud, next, rows, err);
    qn_tx_rollback(c);
    qn_store_release(g->db, c);
    return rc;
}

/* GET events: {"seq":N,"data":ROW} per row. */
typedef struct events_page {
    qn_buf *out;
    int first;
} events_page;

static int64_t events_rows(void *ud, const span *s, qn_err *err)
{
    events_page *p = ud;
    int64_t n = 0;
    /* A page stops growing past PAGE_BYTES (the reader asks again from
     * next_after), so an answer never holds limit x 64 KiB. */
    for (uint32_t r = s->from; r < s->to && p->out->len < PAGE_BYTES; r++, n++) {
        if (qn_buf_printf(p->out, "%s{\"seq\":%lld,\"data\":", p->first ? "" : ",",
                          (long long)(s->first_seq + r)) < 0 ||
            qml_colblock_render(s->blk, r, p->out) < 0 || qn_buf_append(p->out, "}", 1) < 0)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "the page is too large; ask for fewer rows (limit)");
        p->first = 0;
    }
    return n;
}

/* Export as NDJSON: each row's text and a newline. */
static int64_t ndjson_rows(void *ud, const span *s, qn_err *err)
{
    qn_buf *out = ud;
    int64_t n = 0;
    /* Rows are whole lines: a page stops after the row that takes it past
     * EXPORT_BYTES. */
    for (uint32_t r = s->from; r < s->to && out->len < EXPORT_BYTES; r++, n++)
        if (qml_colblock_render(s->blk, r, out) < 0 || qn_buf_append(out, "\n", 1) < 0)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "the page is too large; ask for fewer rows (limit)");
    return n;
}

/* Export as column blocks: a block wholly in range as stored, else its
 * rows in range as a slice; the page stops after the block that takes it
 * past EXPORT_BYTES. */
static int64_t block_rows(void *ud, const span *s, qn_err *err)
{
    qn_buf *out = ud;
    if (out->len >= EXPORT_BYTES)
        return 0;
    int rc = s->from == 0 && s->to == s->blk->nrows ? qn_buf_append(out, s->raw, s->rawlen)
                                                    : qml_colblock_slice(s->blk, s->from, s->to, out);
    if (rc < 0)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "the page is too large; ask for fewer rows (limit)");
    return s->to - s->from;
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
    qn_buf_init(&out, PAGE_BYTES + 128 * 1024);
    json_t *jname = json_string(name);
    char *qname = jname ? qn_json_dumps(jname, JSON_ENCODE_ANY) : NULL;
    json_decref(jname);
    int ok = qname && qn_buf_printf(&out, "{\"dataset\":%s,\"events\":[", qname) == 0;
    free(qname);
    if (!ok) {
        qn_buf_free(&out);
        return qn_res_error(res, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    events_page p = {.out = &out, .first = 1};
    int64_t last_seq = 0, next = after, rows = 0;
    int rc = read_range(g, name, after, INT64_MAX, limit, events_rows, &p, &last_seq, &next, &rows, &err);
    if (rc == 1) {
        qn_buf_free(&out);
        return qn_res_error(res, QN_NOT_FOUND, "dataset %s does not exist", name);
    }
    if (rc < 0) {
        qn_buf_free(&out);
        return ing_fail(req, res, &err);
    }
    if (qn_buf_printf(&out, "],\"next_after\":%lld,\"last_seq\":%lld}", (long long)next, (long long)last_seq) < 0) {
        qn_buf_free(&out);
        return qn_res_error(res, QN_RESOURCE_EXHAUSTED, "the page is too large; ask for fewer rows (limit)");
    }
    qn_res_text(res, 200, "application/json", out.data, out.len);
    qn_buf_free(&out);
    return 0;
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

/* Whether the Accept header names the column-block media type. */
static int wants_blocks(const char *accept)
{
    static const char mt[] = QML_COLBLOCK_MEDIA_TYPE;
    for (const char *p = accept; p && *p; ) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        size_t n = strcspn(p, ",;");
        size_t m = n;
        while (m && (p[m - 1] == ' ' || p[m - 1] == '\t'))
            m--;
        if (m == sizeof mt - 1 && strncasecmp(p, mt, m) == 0)
            return 1;
        p += n;
        p += strcspn(p, ",");
    }
    return 0;
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
    int blocks = wants_blocks(qn_req_header(req, "Accept"));
    qn_buf out;
    /* NDJSON: a page is EXPORT_BYTES plus one row. Blocks: plus one block,
     * as stored (at most 16 MiB of rows, but a stored blob is taken whole
     * whatever its size). */
    qn_buf_init(&out, blocks ? EXPORT_BYTES + ((size_t)1 << 30) : EXPORT_BYTES + (4u << 20));
    /* At once (rows of ~256 bytes as text, far less as blocks): doubling
     * there from 64 bytes copies the page several times. Kept under glibc's
     * largest mmap threshold (32 MiB), so that freed pages are reused from
     * the heap instead of mapped and zeroed by the kernel afresh for every
     * page. */
    size_t per = blocks ? 64 : 256;
    size_t want = (size_t)limit * per < (24u << 20) ? (size_t)limit * per : (24u << 20);
    if (qn_buf_reserve(&out, want) < 0) {
        qn_buf_free(&out);
        return qn_res_error(res, QN_UNAVAILABLE, "out of memory for a page of %s; retry shortly", name);
    }
    int64_t last_seq = 0, next = after, rows = 0;
    int rc = read_range(g, name, after, until, limit, blocks ? block_rows : ndjson_rows, &out, &last_seq, &next,
                        &rows, &err);
    if (rc == 1) {
        qn_buf_free(&out);
        return qn_res_error(res, QN_NOT_FOUND, "dataset %s does not exist", name);
    }
    if (rc < 0) {
        qn_buf_free(&out);
        return ing_fail(req, res, &err);
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
    qn_res_take(res, 200, blocks ? QML_COLBLOCK_MEDIA_TYPE : "application/x-ndjson", body, len);
    return 0;
}

/* ---- rows stored before column blocks ------------------------------------------------ */

/* One transaction of the conversion: the first rows left in events (one
 * dataset, consecutive seqs, one block) into event_blocks, deleted from
 * events. *moved is 0 when events is empty. */
static int convert_block(qn_conn *c, qml_colblock_builder *bld, qn_buf *blk, int64_t *id, int64_t *first,
                         int64_t *moved, qn_err *err)
{
    *moved = 0;
    int rc = qn_tx_begin(c, QN_TX_WRITE, err);
    if (rc < 0)
        return rc;
    qn_stmt *st = qn_prepare(c, "SELECT dataset_id, seq FROM events ORDER BY dataset_id, seq LIMIT 1", err);
    if (!st) {
        rc = err->code;
        goto out;
    }
    if ((rc = qn_step(st, err)) <= 0)
        goto out;
    *id = qn_col_int64(st, 0);
    *first = qn_col_int64(st, 1);
    while ((rc = qn_step(st, err)) == 1)
        ;
    if (rc < 0)
        goto out;
    if (!(st = qn_prepare(c, "SELECT seq, data FROM events WHERE dataset_id = ? AND seq >= ? ORDER BY seq LIMIT ?",
                          err))) {
        rc = err->code;
        goto out;
    }
    qn_bind_int64(st, 1, *id);
    qn_bind_int64(st, 2, *first);
    qn_bind_int64(st, 3, (int64_t)QML_COLBLOCK_MAX_ROWS);
    /* The block ends at a gap in seqs (a block's rows are consecutive), at
     * BLOCK_TEXT_BYTES or when the builder is full; the statement is still
     * run to its end before the DELETE below. */
    int64_t last = *first - 1;
    size_t text = 0;
    int full = 0;
    while ((rc = qn_step(st, err)) == 1) {
        if (full)
            continue;
        int64_t seq = qn_col_int64(st, 0);
        const char *row = qn_col_text(st, 1);
        size_t len = row ? strlen(row) : 0;
        if (seq != last + 1 || (text && text + len > BLOCK_TEXT_BYTES)) {
            full = 1;
            continue;
        }
        if ((rc = qml_colblock_add(bld, row ? row : "", len, err)) == QN_OUT_OF_RANGE && last >= *first) {
            full = 1;
            continue;
        }
        if (rc < 0) {
            char why[QN_ERR_MSG_MAX];
            snprintf(why, sizeof why, "%s", err->msg);
            qn_err_set(err, rc, "dataset id %lld seq %lld in table events: %s", (long long)*id, (long long)seq, why);
            goto out;
        }
        text += len;
        last = seq;
    }
    if (rc < 0)
        goto out;
    qn_buf_reset(blk);
    if ((rc = qml_colblock_finish(bld, blk, err)) < 0 ||
        (rc = insert_block(c, *id, *first, last, blk->data, blk->len, err)) < 0)
        goto out;
    if (!(st = qn_prepare(c, "DELETE FROM events WHERE dataset_id = ? AND seq >= ? AND seq <= ?", err))) {
        rc = err->code;
        goto out;
    }
    qn_bind_int64(st, 1, *id);
    qn_bind_int64(st, 2, *first);
    qn_bind_int64(st, 3, last);
    if ((rc = qn_step(st, err)) < 0)
        goto out;
    if ((rc = qn_tx_commit(c, err)) < 0)
        goto out;
    *moved = last - *first + 1;
    return 0;
out:
    qn_tx_rollback(c);
    /* A failed add or finish leaves rows in the builder: start afresh. */
    if (qml_colblock_rows(bld)) {
        qn_buf_reset(blk);
        if (qml_colblock_finish(bld, blk, err) < 0)
            qn_log_warn(NULL, "column block builder not emptied", "{s:s}", "detail", err->msg);
    }
    return rc < 0 ? rc : 0;
}

int ing_convert_rows(qn_store *db, qn_err *err)
{
    qml_colblock_builder *bld = qml_colblock_builder_new();
    qn_buf blk;
    qn_buf_init(&blk, BLOCKS_MAX);
    qn_conn *c = NULL;
    int64_t total = 0, blocks = 0, id = 0, first = 0, moved = 0;
    int64_t t0 = qn_now_ms();
    int rc = 0;
    if (!bld) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if (!(c = qn_store_acquire(db, err))) {
        rc = err->code;
        goto out;
    }
    for (;;) {
        if ((rc = convert_block(c, bld, &blk, &id, &first, &moved, err)) < 0)
            goto out;
        if (!moved)
            break;
        total += moved;
        blocks++;
        qn_log_info(NULL, "rows converted", "{s:I, s:I, s:I, s:I}", "dataset_id", (json_int_t)id, "first_seq",
                    (json_int_t)first, "last_seq", (json_int_t)(first + moved - 1), "rows", (json_int_t)moved);
    }
    if (total)
        qn_log_info(NULL, "rows converted to column blocks", "{s:I, s:I, s:I}", "rows", (json_int_t)total,
                    "blocks", (json_int_t)blocks, "ms", (json_int_t)(qn_now_ms() - t0));
out:
    if (c)
        qn_store_release(db, c);
    qn_buf_free(&blk);
    qml_colblock_builder_free(bld);
    return rc;
}

int ing_outbox_list(qn_req *req, qn_res *res, void *ud)
{
    ingest *g = ud;
    return qn_outbox_list(g->db, req, res);
}
