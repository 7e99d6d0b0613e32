/*
 * sources.h - pull sources of quern-ingest: what sources.c (API, store,
 * scheduler, commits) shares with the kinds (source_pg.c, source_sqlite.c,
 * source_http.c, source_files.c).
 *
 * A kind checks its fields when a source is declared and, for a run, reads
 * from where the committed cursor and state say, in chunks of bounded size;
 * each chunk goes through src_commit, which stores the good rows exactly as
 * a push would (ing_append) together with the new cursor/state (or the digest
 * of the file taken) in ONE write transaction. A crash between chunks loses
 * nothing committed and a restarted run starts after the last commit, so
 * every source row lands exactly once.
 *
 *     // inside a kind's pull, per chunk of rows read:
 *     qml_rec_batch b; qml_rec_batch_init(&b);
 *     for each row: src_add_object(r, &b, obj, &err);       // schema-checked
 *     json_t *cur = json_string(last_cursor_value);
 *     rc = src_commit(r, &b, cur, NULL, NULL, &err);       // steals cur
 *     qml_rec_batch_free(&b);
 *
 * A run belongs to one thread; nothing here is shared between runs except
 * through the store and the writer mutex.
 */
#ifndef QUERN_INGEST_SOURCES_H
#define QUERN_INGEST_SOURCES_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/client.h"
#include "core/netallow.h"
#include "ingest/ingest.h"
#include "ml/records.h"

#define SRC_MAX_ERRORS 100       /* row errors kept on a run */
#define SRC_BATCH_DEFAULT 5000   /* rows per committed chunk */
#define SRC_BATCH_MAX 100000

/* What the operator allows sources to reach: --source-allow (http) and
 * --source-paths (the directories sqlite paths, files dirs, password and
 * header files must lie under). */
typedef struct src_limits {
    const qn_netallow *allow;
    char **paths;                /* absolute, without a trailing '/' */
    size_t npaths;
} src_limits;

/* 0 when path (the value of field) is absolute, has no "." or ".." part and
 * lies under one of lim's directories -- and, when it exists, so does its
 * real path (symbolic links resolved) under the real path of that directory.
 * Else QN_INVALID_ARGUMENT naming field and --source-paths. */
int src_path_ok(const src_limits *lim, const char *field, const char *path, qn_err *err);

typedef struct src_run {
    ingest *g;
    const char *name, *dataset;
    const json_t *spec;          /* the declaration (borrowed) */
    json_t *cursor;              /* committed cursor value, NULL before the first commit (owned) */
    json_t *state;               /* committed kind state, an object (owned; http: page, etag...) */
    int skip;                    /* on_error skip: bad rows are counted, not fatal */
    int64_t batch;               /* rows per chunk */
    qml_rec_schema *schema;      /* the dataset's, NULL when none (owned) */
    int64_t schema_version;
    qml_rec_opts opts;
    const qn_netallow *allow;    /* --source-allow */
    const src_limits *lim;
    qn_client *http;             /* the source's client (http kind; breaker kept across runs) */
    atomic_int *stop;            /* set when the service stops: end between chunks */
    int64_t run_id;
    int64_t spec_at;             /* updated_at of the declaration read: a commit checks it is still the same */
    int file_refused;            /* files: the digest committed is of a file refused whole */
    /* results */
    int64_t rows, rejected, chunks, next_row;
    json_t *errors;              /* [{"row","line"?,"file"?,"page"?,"reason"}], at most SRC_MAX_ERRORS */
} src_run;

typedef struct src_kind {
    const char *name;
    /* Checks and completes the kind's fields of spec (an object holding
     * every field given). 0, or QN_INVALID_ARGUMENT naming the field. */
    int (*check)(json_t *spec, const src_limits *lim, qn_err *err);
    /* Pulls everything new, committing chunk by chunk with src_commit.
     * 0, or a negative code with err saying what failed (the run's error). */
    int (*pull)(src_run *r, qn_err *err);
} src_kind;

extern const src_kind src_postgres, src_sqlite, src_http, src_files;

/* Commits b's good rows with the new cursor and/or state (stolen, either may
 * be NULL: unchanged) and, for files, the digest and path of the file taken,
 * in one write transaction. Before that, when b has bad rows and the source
 * says on_error reject, nothing is committed and the run fails:
 * QN_INVALID_ARGUMENT naming the first bad row. QN_ABORTED when the dataset's
 * schema changed since the rows were checked (the next run checks again), or
 * the source was changed or deleted since the run read it. */
int src_commit(src_run *r, qml_rec_batch *b, json_t *cursor, json_t *state, const char *digest,
               const char *file, qn_err *err);

/* Checks one row object against the dataset's schema and appends it to b, or
 * counts it bad (b->nbad) with its run-wide row number in r->errors.
 * 0, or QN_RESOURCE_EXHAUSTED. */
int src_add_object(src_run *r, qml_rec_batch *b, const json_t *obj, qn_err *err);

/* Notes the errors qml_rec_parse listed in b (row/line relative to where,
 * e.g. {"file": "a.csv"} or {"page": 3}; where is borrowed). */
void src_note_errors(src_run *r, const qml_rec_batch *b, const char *key, json_t *where);

/* Field helpers for the kinds' checks: the string at key (NULL when absent);
 * QN_INVALID_ARGUMENT naming key when present but not a non-empty string of
 * at most max bytes. */
int src_str(const json_t *spec, const char *key, size_t max, int required, const char **out, qn_err *err);
/* Refuses keys of spec outside common fields and the kind's allowed list. */
int src_known_keys(const json_t *spec, const char *const *allowed, qn_err *err);

/* Rows of the SQL kinds, cut into chunks only where the cursor value changes
 * (rows sharing a cursor value are committed together, so "cursor > last"
 * never skips the rest of a tie). */
typedef struct src_chunk {
    qml_rec_batch b;
    json_t *last;                /* cursor value of the last row added */
} src_chunk;
void src_chunk_init(src_chunk *k);
void src_chunk_free(src_chunk *k);
/* Adds a row (obj, with cursor value cur; both stolen), committing the chunk
 * before it when it is full and cur differs from the last value. */
int src_chunk_row(src_run *r, src_chunk *k, json_t *obj, json_t *cur, qn_err *err);
/* Commits what is left. */
int src_chunk_flush(src_run *r, src_chunk *k, qn_err *err);

/* The SQL kinds (postgres, sqlite): checks query and cursor. */
int src_sql_check(json_t *spec, qn_err *err);
/* Double-quotes an identifier ("a""b"); malloc'ed, NULL on OOM. */
char *src_sql_ident(const char *name);

#endif
