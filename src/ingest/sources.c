/*
 * sources.c - pull sources: the HTTP API (/v1/sources...), their rows in the
 * store, the scheduler, and the commit that makes a pull exactly-once.
 *
 * A source is a declaration (kind, dataset, interval, kind fields) kept as
 * canonical JSON in `sources`, with its committed cursor (SQL kinds) and
 * state (http: page in progress, ETag...). Files taken by a files source are
 * kept by content digest in `source_files`. Every run leaves a row in
 * `source_runs`: started as "running", updated with each committed chunk,
 * finished "succeeded" or "failed" with the error. A run found "running" at
 * start was cut short by a crash: it is marked failed ("interrupted"); what
 * it committed stays, and the next run goes on from there.
 *
 * Runs: a scheduler thread starts due runs, each on its own thread, at most
 * one at a time per source (POST .../runs while one runs is a 409). After n
 * consecutive failures the next scheduled run waits interval x 2^n (capped
 * at max(interval, 1 h)); a success goes back to the interval.
 *
 * Exactly once: src_commit stores a chunk's rows (ing_append: same seqs,
 * same outbox event as a push), the new cursor/state or file digest and the
 * run's counters in one write transaction under the writer mutex.
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "core/json.h"
#include "core/log.h"
#include "core/trace.h"
#include "core/validate.h"
#include "ingest/sources.h"

#define RUNS_DEFAULT 20
#define RUNS_MAX 1000
#define BACKOFF_CAP_MS 3600000LL
#define WAIT_MAX_MS 300000LL
#define LIST_MAX 10000

typedef struct src_slot {
    char *name;
    int64_t interval_ms;       /* 0: on demand only */
    int64_t next_due;          /* ms; 0: not scheduled */
    int running;
    int64_t run_id;            /* the run in progress, or the last one */
    int failures;              /* consecutive */
    int64_t last_ok;           /* ms when the last successful run finished */
    int deleted;
    qn_client *http;           /* http kind: one breaker per source, across runs */
    char *http_base;
    struct src_slot *next;
} src_slot;

struct ing_sources {
    ingest *g;
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* a run finished, or stop */
    src_slot *list;
    pthread_t sched;
    int sched_started;
    int active;                /* run threads alive */
    atomic_int stop;
    qn_netallow *allow;
    src_limits lim;
    qn_metrics *metrics;
    qn_metric *m_rows, *m_runs, *m_lag;
};

static const src_kind *const kinds[] = {&src_postgres, &src_sqlite, &src_http, &src_files};

static const src_kind *kind_named(const char *k)
{
    for (size_t i = 0; k && i < QN_NELEM(kinds); i++)
        if (strcmp(kinds[i]->name, k) == 0)
            return kinds[i];
    return NULL;
}

/* ---- field helpers ---------------------------------------------------------- */

int src_str(const json_t *spec, const char *key, size_t max, int required, const char **out, qn_err *err)
{
    json_t *v = json_object_get(spec, key);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s is required", key);
        return 0;
    }
    const char *s = json_string_value(v);
    if (!s || !*s || strlen(s) > max)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s must be a non-empty string of at most %zu bytes", key, max);
    *out = s;
    return 0;
}

static const char *const common_keys[] = {"kind", "dataset", "interval", "on_error", "batch", NULL};

int src_known_keys(const json_t *spec, const char *const *allowed, qn_err *err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)spec, k, v) {
        int ok = 0;
        for (size_t i = 0; !ok && common_keys[i]; i++)
            ok = strcmp(k, common_keys[i]) == 0;
        for (size_t i = 0; !ok && allowed[i]; i++)
            ok = strcmp(k, allowed[i]) == 0;
        if (!ok)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "unknown field \"%.64s\" for a %s source", k,
                              json_string_value(json_object_get(spec, "kind")));
    }
    return 0;
}

char *src_sql_ident(const char *name)
{
    size_t n = strlen(name), q = 0;
    for (size_t i = 0; i < n; i++)
        q += name[i] == '"';
    char *s = malloc(n + q + 3), *p = s;
    if (!s)
        return NULL;
    *p++ = '"';
    for (size_t i = 0; i < n; i++) {
        if (name[i] == '"')
            *p++ = '"';
        *p++ = name[i];
    }
    *p++ = '"';
    *p = '\0';
    return s;
}

int src_sql_check(json_t *spec, qn_err *err)
{
    const char *q, *cur;
    int rc;
    if ((rc = src_str(spec, "query", 65536, 1, &q, err)) < 0 || (rc = src_str(spec, "cursor", 256, 1, &cur, err)) < 0)
        return rc;
    if (qn_colname_check("cursor", cur, err) < 0)
        return QN_INVALID_ARGUMENT;
    /* The query becomes a subquery: one statement, no trailing ';'. */
    size_t n = strlen(q);
    while (n && (q[n - 1] == ';' || q[n - 1] == ' ' || q[n - 1] == '\n' || q[n - 1] == '\t' || q[n - 1] == '\r'))
        n--;
    if (!n)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "query is empty");
    if (memchr(q, ';', n))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "query must be one SELECT statement (no ';' inside)");
    if (n != strlen(q))
        json_object_set_new(spec, "query", json_stringn(q, n));
    return 0;
}

/* ---- row errors --------------------------------------------------------------- */

static void note_error(src_run *r, json_t *e)
{
    if (json_array_size(r->errors) < SRC_MAX_ERRORS)
        json_array_append_new(r->errors, e);
    else
        json_decref(e);
}

int src_add_object(src_run *r, qml_rec_batch *b, const json_t *obj, qn_err *err)
{
    char msg[QML_REPORT_MSG];
    int64_t row = ++r->next_row;
    int rc = qml_rec_object(obj, r->schema, &r->opts, b, msg, sizeof msg);
    if (rc < 0)
        return qn_err_set(err, rc, "out of memory checking row %lld", (long long)row);
    if (rc == 1) {
        b->nbad++;
        note_error(r, json_pack("{s:I, s:s}", "row", (json_int_t)row, "reason", msg));
    }
    return 0;
}

void src_note_errors(src_run *r, const qml_rec_batch *b, const char *key, json_t *where)
{
    for (size_t i = 0; i < b->nerrors; i++) {
        const qml_rec_error *e = &b->errors[i];
        json_t *o = json_pack("{s:I, s:s}", "row", (json_int_t)e->row, "reason", e->msg);
        if (o && e->line)
            json_object_set_new(o, "line", json_integer((json_int_t)e->line));
        if (o && key)
            json_object_set(o, key, where);
        note_error(r, o);
    }
}

/* ---- chunks of the SQL kinds --------------------------------------------------- */

void src_chunk_init(src_chunk *k)
{
    qml_rec_batch_init(&k->b);
    k->last = NULL;
}

void src_chunk_free(src_chunk *k)
{
    qml_rec_batch_free(&k->b);
    json_decref(k->last);
    k->last = NULL;
}

int src_chunk_flush(src_run *r, src_chunk *k, qn_err *err)
{
    if (!k->last)
        return 0;
    json_t *cur = k->last;
    k->last = NULL;
    int rc = src_commit(r, &k->b, cur, NULL, NULL, NULL, err);
    qml_rec_batch_free(&k->b);
    qml_rec_batch_init(&k->b);
    return rc;
}

int src_chunk_row(src_run *r, src_chunk *k, json_t *obj, json_t *cur, qn_err *err)
{
    int rc = 0;
    /* Cut only where the cursor changes: rows sharing a cursor value commit together. */
    if (k->last && (int64_t)(k->b.nrows + k->b.nbad) >= r->batch && !json_equal(k->last, cur)) {
        if ((rc = src_chunk_flush(r, k, err)) < 0)
            goto out;
        if (atomic_load(r->stop)) {
            rc = qn_err_set(err, QN_CANCELLED, "the service is stopping; the next run goes on from the cursor");
            goto out;
        }
    }
    if ((rc = src_add_object(r, &k->b, obj, err)) < 0)
        goto out;
    json_decref(k->last);
    k->last = json_incref(cur);
out:
    json_decref(obj);
    json_decref(cur);
    return rc;
}

/* ---- the commit ------------------------------------------------------------------ */

static int set_text(qn_stmt *st, int idx, const json_t *v, char **keep)
{
    *keep = NULL;
    if (!v)
        return qn_bind_null(st, idx);
    *keep = qn_json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    return *keep ? qn_bind_text(st, idx, *keep, -1) : QN_RESOURCE_EXHAUSTED;
}

int src_commit(src_run *r, qml_rec_batch *b, json_t *cursor, json_t *state, const char *digest,
               const char *file, qn_err *err)
{
    ingest *g = r->g;
    qn_conn *c = NULL;
    int rc, locked = 0;
    char *ctext = NULL, *stext = NULL;
    ing_blocks k;
    ing_blocks_init(&k);
    if (b->nbad && !r->skip) {
        json_t *e = json_array_get(r->errors, 0);
        rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                        "%llu row(s) fail the dataset's schema and on_error is reject, so nothing of this "
                        "chunk was stored (first: row %lld: %s); fix the source or declare on_error skip",
                        (unsigned long long)b->nbad, (long long)json_integer_value(json_object_get(e, "row")),
                        json_string_value(json_object_get(e, "reason")));
        goto out;
    }
    /* Built before the writer is taken, as for pushed batches. */
    if ((rc = ing_blocks_build(b, &k, err)) < 0)
        goto out;
    if ((rc = ing_write_lock(g, err)) < 0)
        goto out;
    locked = 1;
    if (!(c = qn_store_acquire(g->db, err))) {
        rc = err->code;
        goto out;
    }
    if ((rc = qn_tx_begin(c, QN_TX_WRITE, err)) < 0)
        goto out;
    /* The cursor first: a source deleted meanwhile stops here. */
    qn_stmt *st = qn_prepare(c, cursor || state
                                    ? "UPDATE sources SET cursor_value = COALESCE(?, cursor_value), "
                                      "state = COALESCE(?, state) WHERE name = ? AND updated_at = ?"
                                    : "UPDATE sources SET cursor_value = cursor_value WHERE name = ? AND updated_at = ?",
                             err);
    if (!st) {
        rc = err->code;
        goto out;
    }
    int i = 1;
    if (cursor || state) {
        char *k1, *k2;
        set_text(st, i++, cursor, &k1);
        set_text(st, i++, state, &k2);
        ctext = k1;
        stext = k2;
    }
    qn_bind_text(st, i, r->name, -1);
    qn_bind_int64(st, i + 1, r->spec_at);
    if ((rc = qn_step(st, err)) < 0)
        goto out;
    if (qn_changes(c) == 0) {
        rc = qn_err_set(err, QN_ABORTED, "source %s was changed or deleted during the run; nothing more of this "
                        "run was stored (the next run reads the new declaration)", r->name);
        goto out;
    }
    if (digest) {
        if (!(st = qn_prepare(c, "INSERT INTO source_files (source, digest, path, nrows, taken_at) "
                                 "VALUES (?, ?, ?, ?, ?)", err))) {
            rc = err->code;
            goto out;
        }
        qn_bind_text(st, 1, r->name, -1);
        qn_bind_text(st, 2, digest, -1);
        qn_bind_text(st, 3, file ? file : "", -1);
        qn_bind_int64(st, 4, r->file_refused ? -1 : (int64_t)b->nrows);
        qn_bind_int64(st, 5, qn_now_ms());
        if ((rc = qn_step(st, err)) < 0)
            goto out;
    }
    char batch_id[QN_UUID_LEN + 1];
    qn_uuid4(batch_id);
    int64_t first = 0, last = 0;
    if ((rc = ing_append(c, r->dataset, b, &k, r->schema_version, NULL, batch_id, &first, &last, err)) < 0)
        goto out;
    if (!(st = qn_prepare(c, "UPDATE source_runs SET nrows = nrows + ?, rejected = rejected + ?, "
                             "chunks = chunks + 1 WHERE id = ?", err))) {
        rc = err->code;
        goto out;
    }
    qn_bind_int64(st, 1, (int64_t)b->nrows);
    qn_bind_int64(st, 2, (int64_t)b->nbad);
    qn_bind_int64(st, 3, r->run_id);
    if ((rc = qn_step(st, err)) < 0 || (rc = qn_tx_commit(c, err)) < 0)
        goto out;
    qn_store_release(g->db, c);
    c = NULL;
    ing_write_unlock(g);
    locked = 0;
    if (b->nrows)
        qn_outbox_kick(g->outbox);
    r->rows += (int64_t)b->nrows;
    r->rejected += (int64_t)b->nbad;
    r->chunks++;
    if (cursor) {
        json_decref(r->cursor);
        r->cursor = json_incref(cursor);
    }
    if (state) {
        json_decref(r->state);
        r->state = json_incref(state);
    }
    if (b->nrows) {
        const char *v[] = {r->name};
        qn_counter_add(g->sources->m_rows, v, (double)b->nrows);
    }
    rc = 0;
out:
    if (c) {
        qn_tx_rollback(c);
        qn_store_release(g->db, c);
    }
    if (locked)
        ing_write_unlock(g);
    free(ctext);
    free(stext);
    ing_blocks_free(&k);
    json_decref(cursor);
    json_decref(state);
    return rc;
}

/* ---- runs ------------------------------------------------------------------------- */

static src_slot *slot_find(ing_sources *S, const char *name)
{
    for (src_slot *s = S->list; s; s = s->next)
        if (!s->deleted && strcmp(s->name, name) == 0)
            return s;
    return NULL;
}

static void slot_free(src_slot *s)
{
    qn_client_free(s->http);
    free(s->http_base);
    free(s->name);
    free(s);
}

/* Unlinks and frees a slot marked deleted (S->mu held, no run on it). */
static void slot_drop(ing_sources *S, src_slot *slot)
{
    for (src_slot **pp = &S->list; *pp; pp = &(*pp)->next)
        if (*pp == slot) {
            *pp = slot->next;
            break;
        }
    slot_free(slot);
}

static int64_t interval_of(const json_t *spec)
{
    return (int64_t)json_integer_value(json_object_get(spec, "interval_ms"));
}

/* Records a new run as running; *id. */
static int run_begin(ingest *g, const char *name, const char *cause, int64_t *id, qn_err *err)
{
    int rc;
    if ((rc = ing_write_lock(g, err)) < 0)
        return rc;
    qn_conn *c = qn_store_acquire(g->db, err);
    if (!c) {
        ing_write_unlock(g);
        return err->code;
    }
    qn_stmt *st = NULL;
    if ((rc = qn_tx_begin(c, QN_TX_WRITE, err)) < 0 ||
        !(st = qn_prepare(c, "INSERT INTO source_runs (source, cause, status, started_at) "
                             "VALUES (?, ?, 'running', ?) RETURNING id", err))) {
        rc = rc < 0 ? rc : err->code;
        goto out;
    }
    qn_bind_text(st, 1, name, -1);
    qn_bind_text(st, 2, cause, -1);
    qn_bind_int64(st, 3, qn_now_ms());
    if ((rc = qn_step(st, err)) != 1) {
        rc = rc < 0 ? rc : qn_err_set(err, QN_INTERNAL, "source %s: run insert returned no id", name);
        goto out;
    }
    *id = qn_col_int64(st, 0);
    if ((rc = qn_step(st, err)) < 0 || (rc = qn_tx_commit(c, err)) < 0)
        goto out;
    rc = 0;
out:
    if (rc < 0)
        qn_tx_rollback(c);
    qn_store_release(g->db, c);
    ing_write_unlock(g);
    return rc;
}

static void run_finish(ingest *g, int64_t id, const char *status, const char *error, const json_t *errors,
                       const char *name)
{
    qn_err err;
    char *etext = json_array_size(errors) ? qn_json_dumps(errors, JSON_COMPACT) : NULL;
    /* Writing the outcome must not be lost to a busy writer: wait longer. */
    for (int attempt = 0; attempt < 30; attempt++) {
        if (ing_write_lock(g, &err) < 0)
            continue;
        qn_conn *c = qn_store_acquire(g->db, &err);
        int rc = -1;
        qn_stmt *st;
        if (c && qn_tx_begin(c, QN_TX_WRITE, &err) == 0 &&
            (st = qn_prepare(c, "UPDATE source_runs SET status = ?, error = ?, errors = ?, finished_at = ? "
                                "WHERE id = ?", &err)) != NULL) {
            qn_bind_text(st, 1, status, -1);
            error ? qn_bind_text(st, 2, error, -1) : qn_bind_null(st, 2);
            etext ? qn_bind_text(st, 3, etext, -1) : qn_bind_null(st, 3);
            qn_bind_int64(st, 4, qn_now_ms());
            qn_bind_int64(st, 5, id);
            rc = qn_step(st, &err);
            if (rc >= 0)
                rc = qn_tx_commit(c, &err);
        }
        if (c) {
            if (rc < 0)
                qn_tx_rollback(c);
            qn_store_release(g->db, c);
        }
        ing_write_unlock(g);
        if (rc >= 0)
            break;
        qn_log_warn(NULL, "cannot record the end of a source run", "{s:s, s:I, s:s}", "source", name, "run",
                    (json_int_t)id, "detail", err.msg);
    }
    free(etext);
}

/* Reads the declaration, cursor, state and the dataset's schema. */
static int run_load(src_run *r, json_t **spec, qn_err *err)
{
    ingest *g = r->g;
    qn_conn *c = qn_store_acquire(g->db, err);
    if (!c)
        return err->code;
    int rc;
    qn_stmt *st = qn_prepare(c, "SELECT spec, cursor_value, state, updated_at FROM sources WHERE name = ?", err);
    if (!st) {
        rc = err->code;
        goto out;
    }
    qn_bind_text(st, 1, r->name, -1);
    if ((rc = qn_step(st, err)) <= 0) {
        rc = rc < 0 ? rc : qn_err_set(err, QN_NOT_FOUND, "source %s does not exist", r->name);
        goto out;
    }
    *spec = json_loads(qn_col_text(st, 0), 0, NULL);
    r->spec_at = qn_col_int64(st, 3);
    const char *t = qn_col_text(st, 1);
    r->cursor = t ? json_loads(t, JSON_DECODE_ANY, NULL) : NULL;
    t = qn_col_text(st, 2);
    r->state = t ? json_loads(t, 0, NULL) : NULL;
    if (!r->state)
        r->state = json_object();
    if (!*spec) {
        rc = qn_err_set(err, QN_DATA_LOSS, "source %s: stored declaration is not JSON", r->name);
        goto out;
    }
    r->dataset = json_string_value(json_object_get(*spec, "dataset"));
    int64_t id;
    rc = ing_dataset_lookup(c, r->dataset, &id, &r->schema_version, &r->schema, err);
out:
    qn_store_release(g->db, c);
    return rc < 0 ? rc : 0;
}

typedef struct run_arg {
    ing_sources *S;
    src_slot *slot;
    int64_t id;
} run_arg;

static void *run_thread(void *p)
{
    run_arg *a = p;
    ing_sources *S = a->S;
    ingest *g = S->g;
    src_slot *slot = a->slot;
    qn_err err = {0};
    json_t *spec = NULL;
    int64_t t0 = qn_now_ms();
    src_run r = {.g = g, .name = slot->name, .allow = S->allow, .lim = &S->lim, .stop = &S->stop, .batch = SRC_BATCH_DEFAULT, .run_id = a->id};
    r.errors = json_array();
    qml_rec_opts_init(&r.opts);
    int rc = run_load(&r, &spec, &err);
    const src_kind *k = rc == 0 ? kind_named(json_string_value(json_object_get(spec, "kind"))) : NULL;
    if (rc == 0 && !k)
        rc = qn_err_set(&err, QN_DATA_LOSS, "source %s: unknown kind stored", slot->name);
    if (rc == 0) {
        r.spec = spec;
        r.skip = json_is_string(json_object_get(spec, "on_error")) &&
                 strcmp(json_string_value(json_object_get(spec, "on_error")), "skip") == 0;
        if (json_integer_value(json_object_get(spec, "batch")) > 0)
            r.batch = json_integer_value(json_object_get(spec, "batch"));
        r.opts.max_errors = SRC_MAX_ERRORS;
        if (k == &src_http) {
            const char *url = json_string_value(json_object_get(spec, "url"));
            pthread_mutex_lock(&S->mu);
            if (!slot->http || !slot->http_base || strcmp(slot->http_base, url) != 0) {
                qn_client_free(slot->http);
                free(slot->http_base);
                slot->http_base = strdup(url);
                char label[160];
                snprintf(label, sizeof label, "source:%.140s", slot->name);
                json_t *to = json_object_get(spec, "timeout_ms");
                qn_client_opts o = {.base_url = url, .name = label, .metrics = S->metrics,
                                    .timeout_ms = to ? (long)json_integer_value(to) : 30000,
                                    .user_agent = "quern-ingest/" QUERN_VERSION};
                slot->http = qn_client_new(&o, &err);
            }
            r.http = slot->http;
            pthread_mutex_unlock(&S->mu);
            if (!r.http)
                rc = err.code;
        }
        if (rc == 0)
            rc = k->pull(&r, &err);
    }
    const char *status = rc == 0 ? "succeeded" : "failed";
    if (rc < 0 && !qn_code_is_client(rc) && rc != QN_UNAVAILABLE && rc != QN_ABORTED && rc != QN_NOT_FOUND &&
        rc != QN_DEADLINE_EXCEEDED)
        qn_log_error(NULL, "source run failed", "{s:s, s:s, s:s}", "source", slot->name, "code",
                     qn_code_name(rc), "detail", err.msg);
    else if (rc < 0)
        qn_log_warn(NULL, "source run failed", "{s:s, s:s}", "source", slot->name, "detail", err.msg);
    run_finish(g, a->id, status, rc < 0 ? err.msg : NULL, r.errors, slot->name);
    const char *v[] = {slot->name, rc == 0 ? "succeeded" : "failed"};
    qn_counter_add(S->m_runs, v, 1);
    qn_log_info(NULL, "source run", "{s:s, s:I, s:s, s:I, s:I, s:I}", "source", slot->name, "run",
                (json_int_t)a->id, "status", status, "rows", (json_int_t)r.rows, "rejected",
                (json_int_t)r.rejected, "ms", (json_int_t)(qn_now_ms() - t0));

    pthread_mutex_lock(&S->mu);
    int64_t now = qn_now_ms();
    slot->running = 0;
    if (rc == 0) {
        slot->failures = 0;
        slot->last_ok = now;
        const char *lv[] = {slot->name};
        qn_gauge_set(S->m_lag, lv, 0);
    } else {
        slot->failures++;
    }
    if (slot->interval_ms > 0) {
        int64_t wait = slot->interval_ms;
        for (int i = 0; i < slot->failures && wait < BACKOFF_CAP_MS; i++)
            wait *= 2;
        int64_t cap = slot->interval_ms > BACKOFF_CAP_MS ? slot->interval_ms : BACKOFF_CAP_MS;
        slot->next_due = now + (wait > cap ? cap : wait);
    }
    if (slot->deleted)
        slot_drop(S, slot);
    S->active--;
    pthread_cond_broadcast(&S->cv);
    pthread_mutex_unlock(&S->mu);

    json_decref(spec);
    json_decref(r.cursor);
    json_decref(r.state);
    json_decref(r.errors);
    qml_rec_schema_free(r.schema);
    free(a);
    return NULL;
}

/* Starts a run of slot (S->mu held, slot not running) whose row is id. */
static int run_spawn(ing_sources *S, src_slot *slot, int64_t id, qn_err *err)
{
    run_arg *a = malloc(sizeof *a);
    if (!a)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    *a = (run_arg){S, slot, id};
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int e = pthread_create(&t, &at, run_thread, a);
    pthread_attr_destroy(&at);
    if (e) {
        free(a);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "cannot start a run thread");
    }
    slot->running = 1;
    slot->run_id = id;
    S->active++;
    return 0;
}

static void *sched_thread(void *p)
{
    ing_sources *S = p;
    pthread_mutex_lock(&S->mu);
    while (!atomic_load(&S->stop)) {
        int64_t now = qn_now_ms();
        int started = 0;
        for (src_slot *s = S->list; s; s = s->next) {
            if (s->last_ok) {
                const char *lv[] = {s->name};
                qn_gauge_set(S->m_lag, lv, (double)(now - s->last_ok) / 1000.0);
            }
            if (s->deleted || s->running || !s->next_due || s->next_due > now)
                continue;
            /* Recording the run takes the writer: not under mu. */
            s->running = 1;
            char *name = strdup(s->name);
            pthread_mutex_unlock(&S->mu);
            int64_t id = 0;
            qn_err err;
            int rc = name ? run_begin(S->g, name, "schedule", &id, &err)
                          : qn_err_set(&err, QN_RESOURCE_EXHAUSTED, "out of memory");
            free(name);
            pthread_mutex_lock(&S->mu);
            s->running = 0;
            if (s->deleted) {
                slot_drop(S, s);
                break;
            }
            if (rc == 0)
                rc = run_spawn(S, s, id, &err);
            if (rc < 0) {
                s->next_due = qn_now_ms() + 1000;
                qn_log_warn(NULL, "cannot start a source run", "{s:s, s:s}", "source", s->name, "detail", err.msg);
            } else {
                s->next_due = 0; /* set again when the run ends */
                started = 1;
            }
            break; /* the list may have changed while unlocked */
        }
        if (started)
            continue; /* look for the next due source at once */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&S->cv, &S->mu, &ts);
    }
    pthread_mutex_unlock(&S->mu);
    return NULL;
}

/* Adds or updates the slot of a declared source (S->mu not held). */
static int slot_put(ing_sources *S, const char *name, int64_t interval_ms, int fresh)
{
    pthread_mutex_lock(&S->mu);
    src_slot *s = slot_find(S, name);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s || !(s->name = strdup(name))) {
            free(s);
            pthread_mutex_unlock(&S->mu);
            return QN_RESOURCE_EXHAUSTED;
        }
        s->next = S->list;
        S->list = s;
    }
    s->interval_ms = interval_ms;
    if (interval_ms > 0 && (fresh || !s->next_due) && !s->running)
        s->next_due = qn_now_ms() + (fresh ? 0 : interval_ms);
    if (interval_ms <= 0)
        s->next_due = 0;
    pthread_cond_broadcast(&S->cv);
    pthread_mutex_unlock(&S->mu);
    return 0;
}

/* ---- the API ------------------------------------------------------------------------- */

static json_t *time_or_null(int64_t ms)
{
    return ms ? qn_json_time(ms) : json_null();
}

static json_t *run_json(qn_stmt *st)
{
    /* id, source, cause, status, nrows, rejected, chunks, error, errors, started_at, finished_at */
    int64_t started = qn_col_int64(st, 9), finished = qn_col_is_null(st, 10) ? 0 : qn_col_int64(st, 10);
    const char *errs = qn_col_text(st, 8);
    json_t *e = errs ? json_loads(errs, 0, NULL) : NULL;
    const char *error = qn_col_text(st, 7);
    return json_pack("{s:I, s:s, s:s, s:s, s:I, s:I, s:I, s:o, s:o, s:o, s:o, s:o}", "id",
                     (json_int_t)qn_col_int64(st, 0), "source", qn_col_text(st, 1), "cause", qn_col_text(st, 2),
                     "status", qn_col_text(st, 3), "rows", (json_int_t)qn_col_int64(st, 4), "rejected",
                     (json_int_t)qn_col_int64(st, 5), "chunks", (json_int_t)qn_col_int64(st, 6), "error",
                     error ? json_string(error) : json_null(), "errors", e ? e : json_array(), "started_at",
                     qn_json_time(started), "finished_at", time_or_null(finished), "duration_ms",
                     finished ? json_integer(finished - started) : json_null());
}

#define RUN_COLS "id, source, cause, status, nrows, rejected, chunks, error, errors, started_at, finished_at"

/* The public view of a declaration: the url of an http source redacted. */
static json_t *spec_view(const char *text)
{
    json_t *s = json_loads(text, 0, NULL);
    if (!s)
        return json_null();
    const char *url = json_string_value(json_object_get(s, "url"));
    if (url) {
        char *r = qn_url_redact(url);
        if (r)
            json_object_set_new(s, "url", json_string(r));
        free(r);
    }
    json_object_del(s, "interval_ms");
    return s;
}

static json_t *source_json(ing_sources *S, qn_stmt *st, qn_conn *c, int with_last, qn_err *err)
{
    /* name, spec, cursor_value, state, created_at, updated_at */
    const char *name = qn_col_text(st, 0);
    json_t *o = spec_view(qn_col_text(st, 1));
    if (!json_is_object(o))
        return o;
    json_object_set_new(o, "name", json_string(name));
    const char *cur = qn_col_text(st, 2);
    json_t *cv = cur ? json_loads(cur, JSON_DECODE_ANY, NULL) : NULL;
    json_object_set_new(o, "cursor", cv ? cv : json_null());
    const char *state = qn_col_text(st, 3);
    json_t *sv = state ? json_loads(state, 0, NULL) : NULL;
    json_object_set_new(o, "state", sv ? sv : json_null());
    json_object_set_new(o, "created_at", qn_json_time(qn_col_int64(st, 4)));
    json_object_set_new(o, "updated_at", qn_json_time(qn_col_int64(st, 5)));
    pthread_mutex_lock(&S->mu);
    src_slot *s = slot_find(S, name);
    json_object_set_new(o, "running", json_boolean(s && s->running));
    json_object_set_new(o, "failures", json_integer(s ? s->failures : 0));
    json_object_set_new(o, "next_run_at", s && s->next_due && !s->running ? qn_json_time(s->next_due) : json_null());
    pthread_mutex_unlock(&S->mu);
    if (with_last) {
        char *n = strdup(name);
        qn_stmt *rs = n ? qn_prepare(c, "SELECT " RUN_COLS " FROM source_runs WHERE source = ? ORDER BY id DESC LIMIT 1",
                                     err) : NULL;
        int rc = rs ? (qn_bind_text(rs, 1, n, -1), qn_step(rs, err)) : -1;
        json_object_set_new(o, "last_run", rc == 1 ? run_json(rs) : json_null());
        free(n);
    }
    return o;
}

static int check_name(qn_req *req, qn_res *res, const char **name)
{
    qn_err err;
    *name = qn_req_param(req, "name");
    if (qn_name_check("source", *name, &err) < 0) {
        qn_res_error(res, err.code, "%s", err.msg);
        return -1;
    }
    return 0;
}

/* Checks a declaration and fills defaults; the canonical form goes to *out. */
static int spec_check(json_t *body, const src_limits *lim, qn_err *err)
{
    if (!json_is_object(body))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "a source is a JSON object");
    const char *kind, *dataset, *on_error;
    int rc;
    if ((rc = src_str(body, "kind", 32, 1, &kind, err)) < 0)
        return rc;
    const src_kind *k = kind_named(kind);
    if (!k)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "kind must be postgres, sqlite, http or files, not \"%.32s\"", kind);
    if ((rc = src_str(body, "dataset", 256, 1, &dataset, err)) < 0)
        return rc;
    if (qn_name_check("dataset", dataset, err) < 0)
        return QN_INVALID_ARGUMENT;
    if ((rc = src_str(body, "on_error", 16, 0, &on_error, err)) < 0)
        return rc;
    if (!on_error)
        json_object_set_new(body, "on_error", json_string("reject"));
    else if (strcmp(on_error, "reject") && strcmp(on_error, "skip"))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "on_error must be reject or skip");
    json_t *b = json_object_get(body, "batch");
    if (!b)
        json_object_set_new(body, "batch", json_integer(SRC_BATCH_DEFAULT));
    else if (!json_is_integer(b) || json_integer_value(b) < 1 || json_integer_value(b) > SRC_BATCH_MAX)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "batch must be an integer from 1 to %d", SRC_BATCH_MAX);
    json_t *iv = json_object_get(body, "interval");
    long long ms = 0;
    if (json_is_string(iv)) {
        if (qn_parse_duration_ms(json_string_value(iv), &ms) < 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "interval must be a duration such as \"30s\", \"5m\" or \"1h\"");
    } else if (json_is_integer(iv)) {
        ms = (long long)json_integer_value(iv) * 1000;
    } else if (iv && !json_is_null(iv)) {
        return qn_err_set(err, QN_INVALID_ARGUMENT, "interval must be a duration (\"30s\") or seconds, or null");
    }
    if (iv && !json_is_null(iv) && (ms < 1000 || ms > 30LL * 86400000))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "interval must be between 1s and 30 days");
    if ((rc = k->check(body, lim, err)) < 0)
        return rc;
    json_object_set_new(body, "interval_ms", json_integer(ms));
    return 0;
}

int ing_source_put(qn_req *req, qn_res *res, void *ud)
{
    ingest *g = ud;
    ing_sources *S = g->sources;
    const char *name;
    qn_err err;
    qn_conn *c = NULL;
    char *text = NULL;
    int locked = 0, rc;
    if (check_name(req, res, &name) < 0)
        return 0;
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    if (spec_check(body, &S->lim, &err) < 0)
        return qn_res_error(res, err.code, "source %s: %s", name, err.msg);
    if (!(text = qn_json_canonical(body))) {
        qn_err_set(&err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    if ((rc = ing_write_lock(g, &err)) < 0)
        goto fail;
    locked = 1;
    if (!(c = qn_store_acquire(g->db, &err)) || qn_tx_begin(c, QN_TX_WRITE, &err) < 0)
        goto fail;
    int64_t now = qn_now_ms();
    qn_stmt *st = qn_prepare(c, "SELECT kind, dataset, updated_at, spec FROM sources WHERE name = ?", &err);
    if (!st)
        goto fail;
    qn_bind_text(st, 1, name, -1);
    if ((rc = qn_step(st, &err)) < 0)
        goto fail;
    int existed = rc == 1;
    /* updated_at tells a run its declaration changed: it must move on every PUT. */
    if (existed && now <= qn_col_int64(st, 2))
        now = qn_col_int64(st, 2) + 1;
    /* Another kind or dataset starts over: its cursor means nothing here. */
    int reset = existed && (strcmp(qn_col_text(st, 0), json_string_value(json_object_get(body, "kind"))) ||
                            strcmp(qn_col_text(st, 1), json_string_value(json_object_get(body, "dataset"))));
    /* The same kind and dataset keep what was taken, except that another
     * cursor column makes the cursor value meaningless, and another url
     * the http page in progress. */
    int forget_cursor = reset, forget_state = reset;
    if (existed && !reset) {
        json_t *old = json_loads(qn_col_text(st, 3), 0, NULL);
        json_t *oc = json_object_get(old, "cursor"), *ou = json_object_get(old, "url");
        forget_cursor = !json_equal(oc, json_object_get(body, "cursor")) && (oc || json_object_get(body, "cursor"));
        forget_state = !json_equal(ou, json_object_get(body, "url")) && (ou || json_object_get(body, "url"));
        json_decref(old);
    }
    static const char *const upd[4] = {
        "UPDATE sources SET kind = ?, dataset = ?, spec = ?, updated_at = ? WHERE name = ?",
        "UPDATE sources SET kind = ?, dataset = ?, spec = ?, updated_at = ?, cursor_value = NULL WHERE name = ?",
        "UPDATE sources SET kind = ?, dataset = ?, spec = ?, updated_at = ?, state = NULL WHERE name = ?",
        "UPDATE sources SET kind = ?, dataset = ?, spec = ?, updated_at = ?, cursor_value = NULL, state = NULL "
        "WHERE name = ?"};
    if (existed && !(st = qn_prepare(c, upd[forget_cursor + 2 * forget_state], &err)))
        goto fail;
    if (!existed && !(st = qn_prepare(c, "INSERT INTO sources (kind, dataset, spec, updated_at, name, created_at) "
                                         "VALUES (?, ?, ?, ?, ?, ?)", &err)))
        goto fail;
    qn_bind_text(st, 1, json_string_value(json_object_get(body, "kind")), -1);
    qn_bind_text(st, 2, json_string_value(json_object_get(body, "dataset")), -1);
    qn_bind_text(st, 3, text, -1);
    qn_bind_int64(st, 4, now);
    qn_bind_text(st, 5, name, -1);
    if (!existed)
        qn_bind_int64(st, 6, now);
    if (qn_step(st, &err) < 0)
        goto fail;
    if (reset) {
        if (!(st = qn_prepare(c, "DELETE FROM source_files WHERE source = ?", &err)))
            goto fail;
        qn_bind_text(st, 1, name, -1);
        if (qn_step(st, &err) < 0)
            goto fail;
    }
    if (qn_tx_commit(c, &err) < 0)
        goto fail;
    ing_write_unlock(g);
    locked = 0;
    if (slot_put(S, name, interval_of(body), !existed || reset) < 0) {
        qn_err_set(&err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    if (!(st = qn_prepare(c, "SELECT name, spec, cursor_value, state, created_at, updated_at FROM sources "
                             "WHERE name = ?", &err)))
        goto fail;
    qn_bind_text(st, 1, name, -1);
    if ((rc = qn_step(st, &err)) != 1) {
        if (rc == 0)
            qn_err_set(&err, QN_INTERNAL, "source %s vanished after its PUT", name);
        goto fail;
    }
    json_t *out = source_json(S, st, c, 0, &err);
    qn_store_release(g->db, c);
    free(text);
    return qn_res_json(res, existed ? 200 : 201, out);
fail:
    if (c) {
        qn_tx_rollback(c);
        qn_store_release(g->db, c);
    }
    if (locked)
        ing_write_unlock(g);
    free(text);
    return ing_fail(req, res, &err);
}

int ing_source_get(qn_req *req, qn_res *res, void *ud)
{
    ingest *g = ud;
    const char *name;
    qn_err err;
    if (check_name(req, res, &name) < 0)
        return 0;
    qn_conn *c = qn_store_acquire(g->db, &err);
    if (!c)
        return ing_fail(req, res, &err);
    qn_stmt *st = qn_prepare(c, "SELECT name, spec, cursor_value, state, created_at, updated_at FROM sources "
                                "WHERE name = ?", &err);
    int rc = st ? (qn_bind_text(st, 1, name, -1), qn_step(st, &err)) : err.code;
    json_t *out = rc == 1 ? source_json(g->sources, st, c, 1, &err) : NULL;
    qn_store_release(g->db, c);
    if (rc < 0)
        return ing_fail(req, res, &err);
    if (rc == 0)
        return qn_res_error(res, QN_NOT_FOUND, "source %s does not exist", name);
    return qn_res_json(res, 200, out);
}

int ing_sources_list(qn_req *req, qn_res *res, void *ud)
{
    ingest *g = ud;
    qn_err err;
    json_t *list = json_array();
    qn_conn *c = qn_store_acquire(g->db, &err);
    if (!c) {
        json_decref(list);
        return ing_fail(req, res, &err);
    }
    qn_stmt *st = qn_prepare(c, "SELECT name, spec, cursor_value, state, created_at, updated_at FROM sources "
                                "ORDER BY name LIMIT ?", &err);
    int rc = st ? 0 : err.code;
    if (st) {
        qn_bind_int64(st, 1, LIST_MAX);
        while ((rc = qn_step(st, &err)) == 1)
            json_array_append_new(list, source_json(g->sources, st, c, 0, &err));
    }
    qn_store_release(g->db, c);
    if (rc < 0) {
        json_decref(list);
        return ing_fail(req, res, &err);
    }
    return qn_res_json(res, 200, json_pack("{s:o}", "sources", list));
}

int ing_source_delete(qn_req *req, qn_res *res, void *ud)
{
    ingest *g = ud;
    ing_sources *S = g->sources;
    const char *name;
    qn_err err;
    int rc, locked = 0;
    qn_conn *c = NULL;
    if (check_name(req, res, &name) < 0)
        return 0;
    if ((rc = ing_write_lock(g, &err)) < 0)
        goto fail;
    locked = 1;
    if (!(c = qn_store_acquire(g->db, &err)) || qn_tx_begin(c, QN_TX_WRITE, &err) < 0)
        goto fail;
    static const char *const sql[] = {"DELETE FROM sources WHERE name = ?", "DELETE FROM source_files WHERE source = ?",
                                      "DELETE FROM source_runs WHERE source = ?"};
    int64_t gone = 0;
    for (size_t i = 0; i < QN_NELEM(sql); i++) {
        qn_stmt *st = qn_prepare(c, sql[i], &err);
        if (!st)
            goto fail;
        qn_bind_text(st, 1, name, -1);
        if (qn_step(st, &err) < 0)
            goto fail;
        if (i == 0)
            gone = qn_changes(c);
    }
    if (!gone) {
        qn_tx_rollback(c);
        qn_store_release(g->db, c);
        ing_write_unlock(g);
        return qn_res_error(res, QN_NOT_FOUND, "source %s does not exist", name);
    }
    if (qn_tx_commit(c, &err) < 0)
        goto fail;
    qn_store_release(g->db, c);
    ing_write_unlock(g);
    pthread_mutex_lock(&S->mu);
    for (src_slot **pp = &S->list; *pp; pp = &(*pp)->next) {
        src_slot *s = *pp;
        if (s->deleted || strcmp(s->name, name) != 0)
            continue;
        if (s->running) {
            s->deleted = 1; /* its run frees it */
        } else {
            *pp = s->next;
            slot_free(s);
        }
        break;
    }
    pthread_mutex_unlock(&S->mu);
    return qn_res_json(res, 200, json_pack("{s:s, s:b}", "name", name, "deleted", 1));
fail:
    if (c) {
        qn_tx_rollback(c);
        qn_store_release(g->db, c);
    }
    if (locked)
        ing_write_unlock(g);
    return ing_fail(req, res, &err);
}

static json_t *run_get(ingest *g, int64_t id, qn_err *err)
{
    qn_conn *c = qn_store_acquire(g->db, err);
    if (!c)
        return NULL;
    qn_stmt *st = qn_prepare(c, "SELECT " RUN_COLS " FROM source_runs WHERE id = ?", err);
    int rc = st ? (qn_bind_int64(st, 1, id), qn_step(st, err)) : err->code;
    json_t *out = rc == 1 ? run_json(st) : NULL;
    if (rc == 0)
        qn_err_set(err, QN_NOT_FOUND, "run %lld does not exist", (long long)id);
    qn_store_release(g->db, c);
    return out;
}

int ing_source_run(qn_req *req, qn_res *res, void *ud)
{
    ingest *g = ud;
    ing_sources *S = g->sources;
    const char *name, *w = qn_req_query(req, "wait");
    qn_err err;
    if (check_name(req, res, &name) < 0)
        return 0;
    int wait = w && strcmp(w, "true") == 0;
    if (w && !wait && strcmp(w, "false") != 0)
        return qn_res_error(res, QN_INVALID_ARGUMENT, "wait must be true or false");
    pthread_mutex_lock(&S->mu);
    src_slot *s = slot_find(S, name);
    if (!s) {
        pthread_mutex_unlock(&S->mu);
        return qn_res_error(res, QN_NOT_FOUND, "source %s does not exist", name);
    }
    if (s->running) {
        int64_t id = s->run_id;
        pthread_mutex_unlock(&S->mu);
        return qn_res_error_details(res, QN_ABORTED, json_pack("{s:I}", "run", (json_int_t)id),
                                    "source %s is running already (run %lld); one run at a time", name,
                                    (long long)id);
    }
    s->running = 1; /* claimed while the run is recorded */
    pthread_mutex_unlock(&S->mu);
    int64_t id = 0;
    int rc = run_begin(g, name, "request", &id, &err);
    pthread_mutex_lock(&S->mu);
    s->running = 0;
    if (s->deleted) {
        slot_drop(S, s);
        pthread_mutex_unlock(&S->mu);
        return qn_res_error(res, QN_NOT_FOUND, "source %s was deleted", name);
    }
    if (rc == 0)
        rc = run_spawn(S, s, id, &err);
    if (rc < 0) {
        pthread_mutex_unlock(&S->mu);
        return ing_fail(req, res, &err);
    }
    if (wait) {
        int64_t until = qn_now_ms() + WAIT_MAX_MS;
        /* The slot may go (DELETE) while waiting: look it up each time. */
        for (src_slot *cur = s; cur && cur->running && cur->run_id == id && qn_now_ms() < until;
             cur = slot_find(S, name)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&S->cv, &S->mu, &ts);
        }
    }
    pthread_mutex_unlock(&S->mu);
    json_t *run = run_get(g, id, &err);
    if (!run)
        return ing_fail(req, res, &err);
    int done = strcmp(json_string_value(json_object_get(run, "status")), "running") != 0;
    return qn_res_json(res, done ? 200 : 202, run);
}

int ing_source_runs(qn_req *req, qn_res *res, void *ud)
{
    ingest *g = ud;
    const char *name;
    qn_err err;
    int64_t limit;
    if (check_name(req, res, &name) < 0)
        return 0;
    if (qn_limit_parse(qn_req_query(req, "limit"), RUNS_DEFAULT, RUNS_MAX, &limit, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    qn_conn *c = qn_store_acquire(g->db, &err);
    if (!c)
        return ing_fail(req, res, &err);
    json_t *list = json_array();
    qn_stmt *st = qn_prepare(c, "SELECT name FROM sources WHERE name = ?", &err);
    int rc = st ? (qn_bind_text(st, 1, name, -1), qn_step(st, &err)) : err.code;
    if (rc == 1) {
        st = qn_prepare(c, "SELECT " RUN_COLS " FROM source_runs WHERE source = ? ORDER BY id DESC LIMIT ?", &err);
        rc = st ? 0 : err.code;
        if (st) {
            qn_bind_text(st, 1, name, -1);
            qn_bind_int64(st, 2, limit);
            while ((rc = qn_step(st, &err)) == 1)
                json_array_append_new(list, run_json(st));
            if (rc == 0)
                rc = 1;
        }
    }
    qn_store_release(g->db, c);
    if (rc <= 0) {
        json_decref(list);
        return rc < 0 ? ing_fail(req, res, &err) : qn_res_error(res, QN_NOT_FOUND, "source %s does not exist", name);
    }
    return qn_res_json(res, 200, json_pack("{s:s, s:o}", "source", name, "runs", list));
}

/* ---- start and stop ----------------------------------------------------------------------- */

/* --source-paths: absolute directories, comma-separated. */
static int paths_parse(src_limits *lim, const char *list, qn_err *err)
{
    const char *p = list;
    while (p && *p) {
        size_t n = strcspn(p, ",");
        const char *e = p + n;
        while (n && *p == ' ')
            p++, n--;
        while (n && (p[n - 1] == ' ' || (p[n - 1] == '/' && n > 1)))
            n--;
        if (n) {
            if (p[0] != '/' || n > 4000)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "--source-paths: \"%.*s\" is not an absolute path",
                                  (int)(n > 200 ? 200 : n), p);
            char **np = realloc(lim->paths, (lim->npaths + 1) * sizeof *np);
            if (!np || !(np[lim->npaths] = strndup(p, n))) {
                if (np)
                    lim->paths = np;
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            }
            lim->paths = np;
            lim->npaths++;
        }
        p = *e ? e + 1 : e;
    }
    return 0;
}

static int under(const char *dir, const char *path)
{
    size_t n = strlen(dir);
    if (strcmp(dir, "/") == 0)
        return 1;
    return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

int src_path_ok(const src_limits *lim, const char *field, const char *path, qn_err *err)
{
    if (path[0] != '/')
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s must be an absolute path", field);
    for (const char *p = path; (p = strstr(p, "/.")) != NULL; p++)
        if (p[2] == '/' || p[2] == '\0' || (p[2] == '.' && (p[3] == '/' || p[3] == '\0')))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s must not have . or .. parts", field);
    char real[PATH_MAX], dreal[PATH_MAX];
    int exists = realpath(path, real) != NULL;
    for (size_t i = 0; i < lim->npaths; i++) {
        if (!under(lim->paths[i], path))
            continue;
        if (!exists)
            return 0;
        if (realpath(lim->paths[i], dreal) && under(dreal, real))
            return 0;
    }
    return qn_err_set(err, QN_INVALID_ARGUMENT,
                      "%s %s is outside the directories quern-ingest may read (--source-paths%s%s)", field, path,
                      lim->npaths ? "" : ", empty: set it to allow", exists ? "; symbolic links resolved" : "");
}

int ing_sources_start(ingest *g, qn_metrics *m, const char *allow, const char *paths, qn_err *err)
{
    ing_sources *S = calloc(1, sizeof *S);
    if (!S)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    S->g = g;
    S->metrics = m;
    pthread_mutex_init(&S->mu, NULL);
    pthread_cond_init(&S->cv, NULL);
    g->sources = S;
    int rc;
    if (!(S->allow = qn_netallow_new(QN_NETALLOW_PUBLIC, "--source-allow")))
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    if ((rc = qn_netallow_add(S->allow, allow, err)) < 0 || (rc = paths_parse(&S->lim, paths, err)) < 0)
        return rc;
    S->lim.allow = S->allow;
    static const char *const src_l[] = {"source", NULL};
    static const char *const res_l[] = {"source", "result", NULL};
    S->m_rows = qn_metrics_counter(m, "quern_source_rows_total", "Rows a pull source stored, by source.", src_l);
    S->m_runs = qn_metrics_counter(m, "quern_source_runs_total",
                                   "Runs of a pull source, by result (succeeded, failed).", res_l);
    S->m_lag = qn_metrics_gauge(m, "quern_source_lag_seconds",
                                "Seconds since a pull source's last successful run ended.", src_l);

    /* Runs cut short by a crash: what they committed stays. */
    qn_conn *c = NULL;
    if ((rc = ing_write_lock(g, err)) < 0)
        return rc;
    if (!(c = qn_store_acquire(g->db, err))) {
        ing_write_unlock(g);
        return err->code;
    }
    qn_stmt *st = NULL;
    if ((rc = qn_tx_begin(c, QN_TX_WRITE, err)) == 0 &&
        (st = qn_prepare(c, "UPDATE source_runs SET status = 'failed', finished_at = ?, error = 'interrupted: "
                            "the service stopped during the run; what it committed is kept and the next run "
                            "goes on from there' WHERE status = 'running'", err)) != NULL) {
        qn_bind_int64(st, 1, qn_now_ms());
        if ((rc = qn_step(st, err)) >= 0)
            rc = qn_tx_commit(c, err);
    } else if (rc == 0) {
        rc = err->code;
    }
    if (rc < 0)
        qn_tx_rollback(c);
    ing_write_unlock(g);
    if (rc >= 0 && (st = qn_prepare(c, "SELECT name, spec FROM sources ORDER BY name", err)) != NULL) {
        while ((rc = qn_step(st, err)) == 1) {
            json_t *spec = json_loads(qn_col_text(st, 1), 0, NULL);
            int64_t iv = interval_of(spec);
            json_decref(spec);
            if (slot_put(S, qn_col_text(st, 0), iv, 1) < 0) {
                rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
                break;
            }
        }
    } else if (rc >= 0) {
        rc = err->code;
    }
    /* The lag survives a restart: the last success of each source. */
    if (rc >= 0 && (st = qn_prepare(c, "SELECT source, MAX(finished_at) FROM source_runs WHERE status = 'succeeded' "
                                       "GROUP BY source", err)) != NULL) {
        while ((rc = qn_step(st, err)) == 1) {
            pthread_mutex_lock(&S->mu);
            src_slot *s = slot_find(S, qn_col_text(st, 0));
            if (s)
                s->last_ok = qn_col_int64(st, 1);
            pthread_mutex_unlock(&S->mu);
        }
    } else if (rc >= 0) {
        rc = err->code;
    }
    qn_store_release(g->db, c);
    if (rc < 0)
        return rc;
    if (pthread_create(&S->sched, NULL, sched_thread, S) != 0)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "cannot start the source scheduler");
    S->sched_started = 1;
    return 0;
}

size_t ing_sources_allow_count(const ingest *g)
{
    return g->sources && g->sources->allow ? qn_netallow_count(g->sources->allow) : 0;
}

void ing_sources_stop(ingest *g)
{
    ing_sources *S = g->sources;
    if (!S)
        return;
    atomic_store(&S->stop, 1);
    pthread_mutex_lock(&S->mu);
    pthread_cond_broadcast(&S->cv);
    pthread_mutex_unlock(&S->mu);
    if (S->sched_started)
        pthread_join(S->sched, NULL);
    /* Runs end between chunks once stop is set; wait for them (bounded). */
    pthread_mutex_lock(&S->mu);
    int64_t until = qn_now_ms() + 30000;
    while (S->active > 0 && qn_now_ms() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&S->cv, &S->mu, &ts);
    }
    int left = S->active;
    pthread_mutex_unlock(&S->mu);
    if (left) {
        /* A run stuck in a read: leave its memory (the process is ending). */
        qn_log_warn(NULL, "source runs still going at stop", "{s:i}", "runs", left);
        return;
    }
    while (S->list) {
        src_slot *s = S->list;
        S->list = s->next;
        slot_free(s);
    }
    qn_netallow_free(S->allow);
    for (size_t i = 0; i < S->lim.npaths; i++)
        free(S->lim.paths[i]);
    free(S->lim.paths);
    pthread_cond_destroy(&S->cv);
    pthread_mutex_destroy(&S->mu);
    free(S);
    g->sources = NULL;
}
