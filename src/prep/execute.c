/*
 * execute.c - one pipeline run: ingest -> frame -> clean -> CSV -> registry.
 *
 * 1. Reads the source's schema from ingest (none is fine), then its last_seq
 *    (the snapshot's end, so rows arriving meanwhile wait for the next run).
 *    When that last_seq is the one of the last snapshot made with the same
 *    spec, the run stops there: skipped, no duplicate snapshot.
 * 2. Reads the rows up to there, as ingest's export route pages them
 *    (NDJSON, the stored texts; the next pages are fetched while the reader
 *    parses these), into a frame with libquern-ml's NDJSON reader. Columns come in the order
 *    of the ingest schema, then of the pipeline's schema, then of the first
 *    row's keys (ingest stores rows with sorted keys); types from the
 *    pipeline's schema, else the ingest schema, else inferred. Rows that do
 *    not fit are counted, never silently lost: they appear as a "read" step
 *    of the report.
 * 3. Applies the cleaning steps, writes the result as CSV (hashing it on the
 *    way) and uploads it as a blob, then registers the dataset version. The
 *    manifest names the run, so a retry after a crash between registering and
 *    recording finds the version it made instead of making another.
 * The output CSV is not stored in prep: a thread writes it into a pipe that
 * the upload (POST /v1/blobs, chunked) reads as it is written.
 * The report carries the seconds each phase took ("timing": read, parse,
 * clean, write, upload, register, total), so a slow run says where.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/json.h"
#include "core/log.h"
#include "ml/clean.h"
#include "ml/colblock.h"
#include "ml/ndjson.h"
#include "prep/prep.h"

#define MAX_FIELDS 4096
/* A page of ingest's export: its 32 MiB bound plus one row. */
#define PREP_PAGE_BYTES (64u << 20)
/* Ranges of the source in flight while one is parsed. Two: with four, the
 * four pages ingest built at once on the two cores made the first one late
 * and held twice the memory (a fresh run: 2.4 s against 1.1 s, prep and
 * ingest CPU 2.4 s against 1.4 s, load 5-6); one was no better than two. */
#define PREP_FETCHERS 2
/* The most a range of n rows may take (1 MiB a row on average: a bound
 * against a runaway answer, not an allocation). */
#define RANGE_BYTES(n) ((size_t)(n) * (1u << 20) + PREP_PAGE_BYTES)

static int stopping(prep *p, qn_err *err)
{
    if (atomic_load(&p->stopping))
        return qn_err_set(err, QN_CANCELLED, "prep is stopping; the run will be retried at the next start");
    return 0;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Seconds since *t0, rounded to the millisecond; moves *t0 to now. */
static double lap(double *t0)
{
    double t = now_s(), d = t - *t0;
    *t0 = t;
    return (double)(long long)(d * 1000 + 0.5) / 1000;
}

/* ---- reading the source -------------------------------------------------- */

typedef struct source_read {
    json_t *schema;      /* ingest's {"columns":[...]} or NULL */
    json_t *first;       /* the first row's data object (for column order) */
    int64_t rows;
    int64_t last_seq;
} source_read;

static int read_schema(prep *p, const char *source, const qn_trace_ctx *trace, source_read *sr, qn_err *err)
{
    char path[256];
    json_t *out = NULL;
    snprintf(path, sizeof path, "/v1/datasets/%s/schema", source);
    int rc = qn_client_json(p->ingest, "GET", path, NULL, trace, &out, err);
    if (rc == QN_NOT_FOUND) {
        qn_err_clear(err);
        return 0;
    }
    if (rc < 0)
        return qn_err_wrap(err, "ingest: reading the schema of source dataset %s", source);
    json_t *cols = json_object_get(json_object_get(out, "schema"), "columns");
    if (json_is_array(cols))
        sr->schema = json_incref(json_object_get(out, "schema"));
    json_decref(out);
    return 0;
}

/* The source's last seq now: where this run's snapshot ends. */
static int source_end(prep *p, const prep_run_input *in, const char *source, int64_t *end, qn_err *err)
{
    char path[256];
    json_t *d = NULL;
    snprintf(path, sizeof path, "/v1/datasets/%s", source);
    int rc = qn_client_json(p->ingest, "GET", path, NULL, in->trace, &d, err);
    if (rc == QN_NOT_FOUND)
        return qn_err_set(err, QN_NOT_FOUND, "source dataset %s does not exist in ingest (%s)", source, err->msg);
    if (rc < 0)
        return qn_err_wrap(err, "ingest: reading source dataset %s", source);
    json_t *last = json_object_get(d, "last_seq");
    rc = json_is_integer(last) && json_integer_value(last) >= 0
             ? (*end = json_integer_value(last), 0)
             : qn_err_set(err, QN_UNAVAILABLE, "ingest described dataset %s without its last_seq", source);
    json_decref(d);
    return rc;
}

/* One range of seqs (after, until] fetched by one thread: the export pages
 * that cover it, one after another, appended to buf. */
typedef struct range_fetch {
    prep *p;
    const prep_run_input *in;
    const char *source;
    int64_t after, until;
    qn_buf spare;        /* a buffer of an earlier range to receive into (may be empty) */
    qn_buf buf;
    int blocks;          /* the pages came as column blocks (else NDJSON), -1 before the first */
    int rc;
    qn_err err;
} range_fetch;

/* The rows in a page of column blocks, checking that it holds whole blocks:
 * >= 0, or -1 with why filled. */
static int64_t block_rows(const qn_buf *page, qn_err *why)
{
    int64_t n = 0;
    for (size_t at = 0; at < page->len;) {
        qml_colblock v;
        size_t used;
        if (qml_colblock_view(page->data + at, page->len - at, &v, &used, why) < 0)
            return -1;
        n += v.nrows;
        qml_colblock_view_free(&v);
        at += used;
    }
    return n;
}

/* The rows in a page of NDJSON; -1 when its last line is cut. */
static int64_t line_rows(const qn_buf *page)
{
    int64_t n = 0;
    for (const char *q = page->data, *e = page->data + page->len; q && q < e; n++) {
        q = memchr(q, '\n', (size_t)(e - q));
        q = q ? q + 1 : NULL;
    }
    return page->len && page->data[page->len - 1] != '\n' ? -1 : n;
}

static void *fetch_range(void *arg)
{
    range_fetch *rf = arg;
    char path[320];
    int64_t after = rf->after;
    /* Received into the buffer of a range already parsed when there is one:
     * fresh memory costs a page fault per 4 KiB on the way in. */
    qn_buf page = rf->spare;
    qn_buf_init(&rf->spare, 0);
    page.max = PREP_PAGE_BYTES;
    rf->rc = 0;
    while (after < rf->until) {
        if ((rf->rc = stopping(rf->p, &rf->err)) < 0)
            break;
        snprintf(path, sizeof path, "/v1/datasets/%s/export?after=%lld&until=%lld&limit=%lld", rf->source,
                 (long long)after, (long long)rf->until, rf->p->page_rows);
        qn_buf_reset(&page);
        /* Room for the page at once (rows of ~256 bytes), not by doubling
         * (a recycled buffer that has it already is kept as it is). */
        int64_t want = rf->until - after < rf->p->page_rows ? rf->until - after : rf->p->page_rows;
        if (qn_buf_reserve(&page, (size_t)want * 256 < (32u << 20) ? (size_t)want * 256 : (32u << 20)) < 0) {
            rf->rc = qn_err_set(&rf->err, QN_RESOURCE_EXHAUSTED, "out of memory reading %s", rf->source);
            break;
        }
        char ctype[128];
        int rc = qn_client_get_as(rf->p->ingest, path, QML_COLBLOCK_MEDIA_TYPE, rf->in->trace, &page, ctype,
                                  sizeof ctype, &rf->err);
        if (rc == QN_NOT_FOUND) {
            rf->rc = qn_err_set(&rf->err, QN_NOT_FOUND, "source dataset %s does not exist in ingest (%s)",
                                rf->source, rf->err.msg);
            break;
        }
        if (rc < 0) {
            rf->rc = qn_err_wrap(&rf->err, "ingest: reading source dataset %s after seq %lld", rf->source,
                                 (long long)after);
            break;
        }
        /* Column blocks from this ingest; NDJSON from one that predates them. */
        int blocks = strncmp(ctype, QML_COLBLOCK_MEDIA_TYPE, strlen(QML_COLBLOCK_MEDIA_TYPE)) == 0;
        if (rf->blocks >= 0 && blocks != rf->blocks) {
            rf->rc = qn_err_set(&rf->err, QN_UNAVAILABLE, "ingest changed the form of its export of %s during "
                                "the run (was it upgraded?); the run will be retried", rf->source);
            break;
        }
        rf->blocks = blocks;
        qn_err why = {0};
        int64_t n = blocks ? block_rows(&page, &why) : line_rows(&page);
        if (n <= 0 || n > rf->until - after) {
            rf->rc = qn_err_set(&rf->err, QN_UNAVAILABLE,
                                "ingest answered a page of %s after seq %lld with %lld rows%s%s", rf->source,
                                (long long)after, (long long)n,
                                n < 0 ? (blocks ? ": " : " or a cut line") : n == 0 ? "; it did not advance" : "",
                                n < 0 && blocks ? why.msg : "");
            break;
        }
        /* The first page of a range is taken whole (no copy); a range that
         * needed more pages (a page stops at ingest's byte bound) appends. */
        if (rf->buf.len == 0 && !rf->buf.data) {
            size_t max = rf->buf.max;
            rf->buf = page;
            rf->buf.max = max;
            qn_buf_init(&page, PREP_PAGE_BYTES);
        } else if (qn_buf_append(&rf->buf, page.data, page.len) < 0) {
            rf->rc = qn_err_set(&rf->err, QN_RESOURCE_EXHAUSTED, "out of memory reading %s", rf->source);
            break;
        }
        after += n;
    }
    qn_buf_free(&page);
    return NULL;
}

/* The rows of the source up to the snapshot's end, as the NDJSON reader's
 * chunks, straight from ingest's export pages (each the stored JSON texts,
 * one a line; never written to disk, never parsed here but for the first
 * row, whose keys give the column order). Seqs are gapless, so the rows
 * split into ranges known in advance; up to PREP_FETCHERS ranges are in
 * flight at once, each on its own thread, and a new one starts as soon as
 * the reader takes one, so ingest builds pages while prep parses the ones
 * it has (the two share the cores instead of taking turns). The first
 * ranges are small (FIRST_RANGE rows, doubling up to page_rows) so that
 * parsing starts early. Held at once: the ranges in flight and the one
 * being parsed. */
#define FIRST_RANGE 8192
typedef struct source_stream {
    prep *p;
    const prep_run_input *in;
    const char *source;
    int64_t next, end;                 /* the next range starts after next */
    int64_t range;                     /* rows of the next range */
    range_fetch ring[PREP_FETCHERS];   /* in flight, oldest at head */
    pthread_t th[PREP_FETCHERS];
    int started[PREP_FETCHERS];
    int head, count;
    qn_buf given;                      /* the range the reader is parsing */
    qn_buf pool[PREP_FETCHERS];        /* buffers of parsed ranges, for the next fetches */
    int npool;
    int unread;                        /* given was not handed to the reader yet */
    int blocks;                        /* the form of the pages, once the first came: 1 column blocks, 0 NDJSON */
    int rc;                            /* the first failure, with err */
    qn_err err;
    double wait_s;                     /* time spent waiting for ingest */
} source_stream;

/* Starts fetches until PREP_FETCHERS are in flight or no range is left. */
static void fetch_more(source_stream *ss)
{
    while (ss->count < PREP_FETCHERS && ss->next < ss->end) {
        int64_t n = ss->range < ss->p->page_rows ? ss->range : ss->p->page_rows;
        int64_t until = ss->end - ss->next > n ? ss->next + n : ss->end;
        int k = (ss->head + ss->count) % PREP_FETCHERS;
        range_fetch *rf = &ss->ring[k];
        *rf = (range_fetch){.p = ss->p, .in = ss->in, .source = ss->source, .after = ss->next, .until = until,
                            .blocks = ss->blocks};
        qn_buf_init(&rf->buf, RANGE_BYTES(until - ss->next));
        if (ss->npool > 0)
            rf->spare = ss->pool[--ss->npool];
        ss->next = until;
        ss->range *= 2;
        ss->started[k] = pthread_create(&ss->th[k], NULL, fetch_range, rf) == 0;
        ss->count++;
    }
}

/* Waits for the oldest range in flight; it becomes ss->given (the one given
 * before is freed). 1, 0 when none is left, or the range's failure. */
/* The range given to the reader is parsed: its buffer goes to the pool. */
static void given_done(source_stream *ss)
{
    if (ss->given.data && ss->npool < PREP_FETCHERS) {
        qn_buf_reset(&ss->given);
        ss->pool[ss->npool++] = ss->given;
        qn_buf_init(&ss->given, 0);
    }
    qn_buf_free(&ss->given);
}

static int fetch_take(source_stream *ss)
{
    given_done(ss);
    if (ss->rc < 0)
        return ss->rc;
    if (ss->count == 0)
        return 0;
    int k = ss->head;
    range_fetch *rf = &ss->ring[k];
    double t0 = now_s();
    if (ss->started[k])
        pthread_join(ss->th[k], NULL);
    else
        fetch_range(rf);
    ss->started[k] = 0;
    ss->wait_s += now_s() - t0;
    ss->head = (ss->head + 1) % PREP_FETCHERS;
    ss->count--;
    ss->given = rf->buf;
    qn_buf_init(&rf->buf, 0);
    if (rf->rc == 0 && ss->blocks >= 0 && rf->blocks != ss->blocks)
        rf->rc = qn_err_set(&rf->err, QN_UNAVAILABLE, "ingest changed the form of its export of %s during the "
                            "run (was it upgraded?); the run will be retried", ss->source);
    if (rf->rc == 0)
        ss->blocks = rf->blocks;
    if (rf->rc < 0) {
        ss->rc = rf->rc;
        ss->err = rf->err;
        qn_buf_free(&ss->given);
        return ss->rc;
    }
    fetch_more(ss);
    return 1;
}

static int stream_chunk(void *ud, const char **data, size_t *len)
{
    source_stream *ss = ud;
    if (ss->unread) {
        ss->unread = 0;
    } else {
        int k = fetch_take(ss);
        if (k <= 0)
            return k;
    }
    *data = ss->given.data;
    *len = ss->given.len;
    return 1;
}

/* Joins what is still being fetched and frees every buffer. */
static void stream_close(source_stream *ss)
{
    for (; ss->count > 0; ss->count--) {
        int k = ss->head;
        if (ss->started[k])
            pthread_join(ss->th[k], NULL);
        ss->started[k] = 0;
        qn_buf_free(&ss->ring[k].buf);
        qn_buf_free(&ss->ring[k].spare);
        ss->head = (ss->head + 1) % PREP_FETCHERS;
    }
    qn_buf_free(&ss->given);
    while (ss->npool > 0)
        qn_buf_free(&ss->pool[--ss->npool]);
}

/* The first row of a page (checked whole by its fetch) as JSON, or NULL. */
static json_t *first_row(const qn_buf *page, int blocks)
{
    if (!blocks)
        return json_loadb(page->data, (size_t)((const char *)memchr(page->data, '\n', page->len) - page->data), 0,
                          NULL);
    qml_colblock v;
    size_t used;
    qn_buf row;
    qn_buf_init(&row, SIZE_MAX - 1);
    json_t *j = NULL;
    if (qml_colblock_view(page->data, page->len, &v, &used, NULL) == 0) {
        if (qml_colblock_render(&v, 0, &row) == 0)
            j = json_loadb(row.data, row.len, 0, NULL);
        qml_colblock_view_free(&v);
    }
    qn_buf_free(&row);
    return j;
}

/* Starts the stream: the snapshot's end, then the first range (its first
 * row gives the column order) while the next ones are fetched. 1 when the
 * source has nothing new (its last_seq is prev_last_seq), 0 when started,
 * negative on error (stream_close in every case). */
static int stream_open(prep *p, const prep_run_input *in, const char *source, source_stream *ss,
                       source_read *sr, qn_err *err)
{
    int64_t end = 0;
    memset(ss, 0, sizeof *ss);
    int rc = source_end(p, in, source, &end, err);
    if (rc < 0)
        return rc;
    sr->last_seq = end;
    if (end == in->prev_last_seq)
        return 1;
    if (end > p->max_rows)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED,
                          "source dataset %s has more than %lld rows, the most one run reads (--max-rows)", source,
                          p->max_rows);
    if (end == 0)
        return qn_err_set(err, QN_FAILED_PRECONDITION,
                          "source dataset %s has no rows in ingest yet (is the name right?)", source);
    *ss = (source_stream){.p = p, .in = in, .source = source, .end = end, .range = FIRST_RANGE, .blocks = -1};
    fetch_more(ss);
    if ((rc = fetch_take(ss)) <= 0) {
        if (rc == 0) /* cannot be: end > 0 makes one range */
            return qn_err_set(err, QN_INTERNAL, "no range of %s to read", source);
        *err = ss->err;
        return rc;
    }
    ss->unread = 1;
    json_t *v = first_row(&ss->given, ss->blocks);
    if (json_is_object(v))
        sr->first = v;
    else
        json_decref(v);
    sr->rows = end;
    return 0;
}

/* ---- schema for the reader ------------------------------------------------- */

typedef struct fields {
    qml_field_spec f[MAX_FIELDS];
    size_t n;
} fields;

static int find_field(const fields *fs, const char *name)
{
    for (size_t i = 0; i < fs->n; i++)
        if (strcmp(fs->f[i].name, name) == 0)
            return (int)i;
    return -1;
}

static int add_field(fields *fs, const char *name, int type, int override, qn_err *err)
{
    int at = find_field(fs, name);
    if (at >= 0) {
        if (override || fs->f[at].type == QML_INFER)
            fs->f[at].type = type;
        return 0;
    }
    if (fs->n == MAX_FIELDS)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "more than %d columns", MAX_FIELDS);
    fs->f[fs->n].name = name;
    fs->f[fs->n].type = type;
    fs->n++;
    return 0;
}

static int schema_fields(fields *fs, const json_t *schema, int override, qn_err *err)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(schema, "columns"), i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        const char *type = json_string_value(json_object_get(c, "type"));
        qml_type t;
        if (!name || !*name)
            continue;
        if (!type || qml_type_parse(type, &t) < 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "column %s: type \"%s\" is unknown", name,
                              type ? type : "(none)");
        if (add_field(fs, name, (int)t, override, err) < 0)
            return err->code;
    }
    return 0;
}

static int build_fields(fields *fs, const source_read *sr, const json_t *override, qn_err *err)
{
    fs->n = 0;
    if (sr->schema && schema_fields(fs, sr->schema, 0, err) < 0)
        return qn_err_wrap(err, "ingest schema");
    if (override && schema_fields(fs, override, 1, err) < 0)
        return qn_err_wrap(err, "pipeline schema");
    const char *key;
    json_t *v;
    json_object_foreach(sr->first, key, v) {
        (void)v;
        if (add_field(fs, key, QML_INFER, 0, err) < 0)
            return err->code;
    }
    return 0;
}

/* ---- the report ------------------------------------------------------------- */

/* The report of a run: per step, rows in and out, why rows went, and the
 * step itself (so "rows failing Quantity >" comes with its value). */
static json_t *report_json(int64_t source_rows, const qml_read_report *rr, const qml_clean_report *cr,
                           const json_t *spec_steps)
{
    json_t *steps = json_array();
    if (rr->rows_bad > 0) {
        char why[256];
        snprintf(why, sizeof why, "rows that do not fit the schema (first: line %llu: %s)",
                 (unsigned long long)rr->first_bad[0].line, rr->first_bad[0].msg);
        json_array_append_new(steps, json_pack("{s:s, s:I, s:I, s:I, s:s}", "op", "read", "rows_in",
                                               (json_int_t)rr->rows_read, "rows_out", (json_int_t)rr->rows_ok,
                                               "dropped", (json_int_t)rr->rows_bad, "reason", why));
    }
    for (size_t i = 0; i < cr->nsteps; i++) {
        const qml_clean_step_report *s = &cr->steps[i];
        json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:s}", "op", s->op, "rows_in", (json_int_t)s->rows_in,
                              "rows_out", (json_int_t)s->rows_out, "dropped",
                              (json_int_t)(s->rows_in - s->rows_out), "reason", s->note);
        json_t *step = json_array_get(spec_steps, i);
        if (step)
            json_object_set_new(o, "step", json_deep_copy(step));
        if (s->cells_changed)
            json_object_set_new(o, "cells_changed", json_integer((json_int_t)s->cells_changed));
        json_array_append_new(steps, o);
    }
    json_t *bad = json_object();
    for (int r = 0; r < QML_BAD__COUNT; r++)
        if (rr->by_reason[r])
            json_object_set_new(bad, qml_bad_reason_name((qml_bad_reason)r), json_integer((json_int_t)rr->by_reason[r]));
    return json_pack("{s:I, s:I, s:o, s:{s:I, s:I, s:o}}", "rows_in", (json_int_t)source_rows, "rows_out",
                     (json_int_t)cr->rows_out, "steps", steps, "read", "rows_ok", (json_int_t)rr->rows_ok,
                     "rows_bad", (json_int_t)rr->rows_bad, "bad_by_reason", bad);
}

static json_t *frame_schema(const qml_frame *f)
{
    json_t *cols = json_array();
    for (size_t i = 0; i < qml_frame_ncols(f); i++) {
        const qml_column *c = qml_frame_col(f, i);
        json_array_append_new(cols, json_pack("{s:s, s:s}", "name", c->name, "type", qml_type_name(c->type)));
    }
    return json_pack("{s:o}", "columns", cols);
}

/* ---- registering ---------------------------------------------------------------- */

/* The version an earlier attempt of this run registered, if the latest is it. */
static int find_own_version(prep *p, const prep_run_input *in, const char *output, prep_run_result *res,
                            qn_err *err)
{
    char path[256];
    json_t *v = NULL;
    snprintf(path, sizeof path, "/v1/datasets/%s/versions/latest", output);
    int rc = qn_client_json(p->registry, "GET", path, NULL, in->trace, &v, err);
    if (rc == QN_NOT_FOUND) {
        qn_err_clear(err);
        return 0;
    }
    if (rc < 0)
        return qn_err_wrap(err, "registry: reading dataset %s", output);
    const char *run = json_string_value(json_object_get(json_object_get(v, "manifest"), "run_id"));
    const char *md = json_string_value(json_object_get(v, "manifest_digest"));
    int found = run && md && strcmp(run, in->run_id) == 0;
    if (found) {
        res->version = json_integer_value(json_object_get(v, "version"));
        snprintf(res->manifest_digest, sizeof res->manifest_digest, "%s", md);
    }
    json_decref(v);
    return found;
}

static int register_version(prep *p, const prep_run_input *in, const char *output, json_t *manifest,
                            prep_run_result *res, qn_err *err)
{
    int rc = find_own_version(p, in, output, res, err);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    char path[256], desc[256];
    json_t *ans = NULL;
    snprintf(path, sizeof path, "/v1/datasets/%s/versions", output);
    snprintf(desc, sizeof desc, "pipeline %s, run %s", in->pipeline, in->run_id);
    json_t *body = json_pack("{s:O, s:s}", "manifest", manifest, "description", desc);
    rc = qn_client_json(p->registry, "POST", path, body, in->trace, &ans, err);
    json_decref(body);
    if (rc < 0)
        return qn_err_wrap(err, "registry: registering a version of dataset %s", output);
    const char *md = json_string_value(json_object_get(ans, "manifest_digest"));
    res->version = json_integer_value(json_object_get(ans, "version"));
    snprintf(res->manifest_digest, sizeof res->manifest_digest, "%s", md ? md : "");
    json_decref(ans);
    if (res->version <= 0 || !md)
        return qn_err_set(err, QN_UNAVAILABLE, "registry answered without a version number and manifest digest");
    return 0;
}

/* ---- writing and uploading the output ------------------------------------------ */

typedef struct csv_writer {
    const qml_frame *f;
    FILE *w;                 /* the pipe's write end */
    char hex[QN_SHA256_HEX + 1];
    uint64_t bytes;
    int rc;
    qn_err err;
    double seconds;          /* how long the writing took */
} csv_writer;

static void *csv_writer_main(void *arg)
{
    csv_writer *cw = arg;
    double t0 = now_s();
    cw->rc = prep_csv_write(cw->f, cw->w, cw->hex, &cw->bytes, &cw->err);
    /* The end of the pipe is the end of the upload's body. */
    if (fclose(cw->w) != 0 && cw->rc == 0)
        cw->rc = qn_err_set(&cw->err, QN_UNAVAILABLE, "the upload stopped taking the CSV");
    cw->w = NULL;
    cw->seconds = now_s() - t0;
    return NULL;
}

/* Writes f as CSV and uploads it at once: a thread writes it (hashing it)
 * into a pipe that the upload reads, a chunked POST /v1/blobs, so the
 * registry receives, hashes and stores the first rows while the last are
 * being written (the digest, which PUT /v1/blobs/{digest} needs first, is
 * known only at the end). The registry answers the digest it stored the
 * bytes under: it must be the one computed here, else the run fails (a
 * blob of bytes that went wrong on the way is then stored, but named by
 * its own digest and referenced by nothing). digest gets "sha256:<hex>",
 * *write_s the seconds the writing took. */
static int write_and_upload(prep *p, const prep_run_input *in, const qml_frame *f, char digest[80],
                            uint64_t *bytes, double *write_s, qn_err *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return qn_err_set(err, QN_INTERNAL, "cannot make a pipe for the output CSV: %s", strerror(errno));
    (void)fcntl(fds[1], F_SETPIPE_SZ, 1 << 20); /* fewer, larger hand-overs; a hint */
    csv_writer cw = {.f = f};
    FILE *rd = fdopen(fds[0], "r");
    if (rd)
        cw.w = fdopen(fds[1], "w");
    if (!rd || !cw.w) {
        if (rd)
            fclose(rd);
        else
            close(fds[0]);
        close(fds[1]);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    pthread_t th;
    if (pthread_create(&th, NULL, csv_writer_main, &cw) != 0) {
        fclose(rd);
        fclose(cw.w);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "cannot start the CSV writer thread");
    }
    qn_buf ans;
    qn_buf_init(&ans, 64 * 1024);
    int rc = qn_client_post_stream(p->registry, "/v1/blobs", "application/octet-stream", rd, in->trace, &ans, err);
    /* A writer still writing (the upload failed) gets EPIPE and stops. */
    fclose(rd);
    pthread_join(th, NULL);
    *write_s = cw.seconds;
    *bytes = cw.bytes;
    snprintf(digest, 80, "sha256:%s", cw.hex);
    if (cw.rc < 0 && rc >= 0) {
        *err = cw.err;
        rc = qn_err_wrap(err, "writing the output CSV");
    } else if (rc < 0) {
        rc = qn_err_wrap(err, "registry: uploading the output CSV");
    } else {
        json_t *a = json_loadb(ans.data ? ans.data : "", ans.len, 0, NULL);
        const char *got = json_string_value(json_object_get(a, "digest"));
        json_int_t size = json_integer_value(json_object_get(a, "size"));
        rc = got && strcmp(got, digest) == 0 && size == (json_int_t)cw.bytes
                 ? 0
                 : qn_err_set(err, QN_UNAVAILABLE,
                              "registry: stored the output CSV as %s (%lld bytes), not the %s (%llu bytes) sent",
                              got ? got : "(no digest)", (long long)size, digest, (unsigned long long)cw.bytes);
        json_decref(a);
    }
    qn_buf_free(&ans);
    return rc;
}

/* ---- the run ------------------------------------------------------------------- */

int prep_execute(prep *p, const prep_run_input *in, prep_run_result *res, qn_err *err)
{
    const char *source = json_string_value(json_object_get(in->spec, "source"));
    const char *output = json_string_value(json_object_get(in->spec, "output"));
    source_read sr = {0};
    source_stream ss = {0};
    qml_frame *raw = NULL, *clean = NULL;
    qml_clean_steps *steps = NULL;
    qml_clean_report *crep = calloc(1, sizeof *crep);
    fields *fs = calloc(1, sizeof *fs);
    json_t *manifest = NULL, *schema = NULL, *timing = json_object();
    double t0 = now_s(), t_all = t0;
    int rc;
    memset(res, 0, sizeof *res);
    res->last_seq = -1;
    if (!crep || !fs || !timing) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }

    if ((rc = read_schema(p, source, in->trace, &sr, err)) < 0)
        goto out;
    rc = stream_open(p, in, source, &ss, &sr, err);
    res->last_seq = sr.last_seq;
    if (rc == 1) {
        res->skipped = 1;
        rc = 0;
        goto out;
    }
    if (rc < 0)
        goto out;

    qml_ndjson_opts o;
    qml_ndjson_opts_init(&o);
    if ((rc = build_fields(fs, &sr, json_object_get(in->spec, "schema"), err)) < 0)
        goto out;
    o.fields = fs->f;
    o.n_fields = fs->n;
    o.expect_rows = (size_t)sr.rows;
    qml_read_report rrep;
    rc = ss.blocks ? qml_ndjson_read_all_blocks(stream_chunk, &ss, &o, &raw, &rrep, err)
                   : qml_ndjson_read_all_fn(stream_chunk, &ss, &o, &raw, &rrep, err);
    if (rc < 0 && ss.rc < 0) { /* ingest's failure, not the reader's */
        rc = ss.rc;
        *err = ss.err;
        goto out;
    }
    if (rc < 0) {
        qn_err_wrap(err, "reading the rows of %s", source);
        goto out;
    }
    stream_close(&ss);
    double read_parse = lap(&t0), wait = (double)(long long)(ss.wait_s * 1000 + 0.5) / 1000;
    json_object_set_new(timing, "read", json_real(wait));
    json_object_set_new(timing, "parse", json_real(read_parse > wait ? read_parse - wait : 0));
    if ((rc = stopping(p, err)) < 0)
        goto out;
    if ((rc = qml_clean_from_json(json_object_get(in->spec, "steps"), &steps, err)) < 0) {
        qn_err_wrap(err, "pipeline %s", in->pipeline);
        goto out;
    }
    /* The frame read is given up to the cleaning: the kept rows stay in its
     * arrays instead of being copied into fresh memory. */
    rc = qml_clean_apply_owned(raw, steps, &clean, crep, err);
    raw = NULL;
    if (rc < 0) {
        qn_err_wrap(err, "pipeline %s", in->pipeline);
        goto out;
    }
    res->rows_in = sr.rows;
    res->rows_out = (int64_t)qml_frame_nrows(clean);
    json_object_set_new(timing, "clean", json_real(lap(&t0)));
    res->report = report_json(sr.rows, &rrep, crep, json_object_get(in->spec, "steps"));
    json_object_set(res->report, "timing", timing);

    /* The clean frame is not needed past its schema and the CSV: freed
     * before the upload's tail (the run's peak memory is then the read's). */
    char digest[80];
    uint64_t bytes = 0;
    double write_s = 0;
    schema = frame_schema(clean);
    if ((rc = stopping(p, err)) < 0)
        goto out;
    rc = write_and_upload(p, in, clean, digest, &bytes, &write_s, err);
    qml_frame_free(clean);
    clean = NULL;
    if (rc < 0)
        goto out;
    /* The two overlap: "write" is the writing, "upload" what the upload
     * took beyond it (sending the last part, the registry's fsync). */
    double both = lap(&t0);
    write_s = (double)(long long)(write_s * 1000 + 0.5) / 1000;
    json_object_set_new(timing, "write", json_real(write_s));
    json_object_set_new(timing, "upload", json_real(both > write_s ? both - write_s : 0));
    manifest = json_pack("{s:s, s:{s:s}, s:o, s:I, s:I, s:{s:s, s:I}, s:s, s:s, s:s, s:O}", "format",
                         "quern.dataset/1", "files", "data.csv", digest, "schema", schema, "rows",
                         (json_int_t)res->rows_out, "bytes", (json_int_t)bytes, "source", "dataset", source,
                         "last_seq", (json_int_t)sr.last_seq, "pipeline", in->pipeline, "spec_digest",
                         in->spec_digest, "run_id", in->run_id, "report", res->report);
    schema = NULL; /* taken by the manifest ("o"), even when the pack failed */
    if (!manifest) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    rc = register_version(p, in, output, manifest, res, err);
    /* After the manifest went: the run's own report also has these two. */
    json_object_set_new(timing, "register", json_real(lap(&t0)));
    json_object_set_new(timing, "total", json_real(lap(&t_all)));
out:
    stream_close(&ss);
    json_decref(manifest);
    json_decref(schema);
    json_decref(timing);
    json_decref(sr.schema);
    json_decref(sr.first);
    qml_frame_free(raw);
    qml_frame_free(clean);
    qml_clean_free(steps);
    free(crep);
    free(fs);
    if (rc < 0) {
        json_decref(res->report);
        res->report = NULL;
    }
    return rc;
}
