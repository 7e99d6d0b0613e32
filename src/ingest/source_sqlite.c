/*
 * source_sqlite.c - the sqlite kind: rows of a query over a SQLite file,
 * read-only, after the committed cursor.
 *
 * The query runs as "SELECT * FROM (query) WHERE cursor IS NOT NULL AND
 * cursor > ? ORDER BY cursor" in one read transaction (one snapshot), rows
 * stepping one at a time, so memory holds one chunk whatever the table's
 * size. Values keep their SQLite type (integer, real, text; a blob is
 * refused as a row error); the cursor is stored with its type and bound back
 * with it.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "ingest/sources.h"

static const char *const keys[] = {"path", "query", "cursor", NULL};

static int check(json_t *spec, const src_limits *lim, qn_err *err)
{
    const char *path;
    int rc;
    if ((rc = src_known_keys(spec, keys, err)) < 0 || (rc = src_str(spec, "path", 4096, 1, &path, err)) < 0)
        return rc;
    if ((rc = src_path_ok(lim, "path", path, err)) < 0)
        return rc;
    return src_sql_check(spec, err);
}

static json_t *col_json(sqlite3_stmt *st, int i)
{
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER: return json_integer((json_int_t)sqlite3_column_int64(st, i));
    case SQLITE_FLOAT: return json_real(sqlite3_column_double(st, i));
    case SQLITE_TEXT:
        return json_stringn((const char *)sqlite3_column_text(st, i), (size_t)sqlite3_column_bytes(st, i));
    case SQLITE_NULL: return json_null();
    }
    return NULL; /* blob */
}

static int pull(src_run *r, qn_err *err)
{
    const char *path = json_string_value(json_object_get(r->spec, "path"));
    const char *query = json_string_value(json_object_get(r->spec, "query"));
    const char *curname = json_string_value(json_object_get(r->spec, "cursor"));
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char *ident = src_sql_ident(curname), *sql = NULL;
    src_chunk k;
    src_chunk_init(&k);
    int rc = 0;
    if (!ident || asprintf(&sql, "SELECT * FROM (%s) WHERE %s IS NOT NULL%s%s%s ORDER BY %s", query, ident,
                           r->cursor ? " AND " : "", r->cursor ? ident : "", r->cursor ? " > ?" : "", ident) < 0) {
        sql = NULL;
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if ((rc = src_path_ok(r->lim, "path", path, err)) < 0)
        goto out;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        rc = qn_err_set(err, QN_UNAVAILABLE, "cannot open %s read-only: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
        goto out;
    }
    sqlite3_busy_timeout(db, 5000);
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "the query fails on %s: %s", path, sqlite3_errmsg(db));
        goto out;
    }
    int ncols = sqlite3_column_count(st), ci = -1;
    for (int i = 0; i < ncols; i++)
        if (strcmp(sqlite3_column_name(st, i), curname) == 0)
            ci = i;
    if (ci < 0) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "the query's result has no column %s (the cursor)", curname);
        goto out;
    }
    if (r->cursor) {
        if (json_is_integer(r->cursor))
            sqlite3_bind_int64(st, 1, json_integer_value(r->cursor));
        else if (json_is_real(r->cursor))
            sqlite3_bind_double(st, 1, json_real_value(r->cursor));
        else
            sqlite3_bind_text(st, 1, json_string_value(r->cursor), -1, SQLITE_TRANSIENT);
    }
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *obj = json_object();
        if (!obj) {
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        int blob = 0;
        for (int i = 0; i < ncols; i++) {
            json_t *v = col_json(st, i);
            if (!v) {
                blob = 1;
                v = json_string("(blob)");
            }
            json_object_set_new(obj, sqlite3_column_name(st, i), v);
        }
        json_t *cur = col_json(st, ci);
        if (blob)
            json_object_set_new(obj, "\x01", json_null()); /* an invalid name: the row is refused */
        if (!cur || json_is_null(cur)) {
            json_decref(obj);
            json_decref(cur);
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "cursor column %s holds a blob; use a number or text", curname);
            goto out;
        }
        if ((rc = src_chunk_row(r, &k, obj, cur, err)) < 0)
            goto out;
    }
    if (s != SQLITE_DONE) {
        rc = qn_err_set(err, QN_UNAVAILABLE, "reading %s: %s", path, sqlite3_errmsg(db));
        goto out;
    }
    rc = src_chunk_flush(r, &k, err);
out:
    src_chunk_free(&k);
    sqlite3_finalize(st);
    if (db) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(db);
    }
    free(sql);
    free(ident);
    return rc;
}

const src_kind src_sqlite = {"sqlite", check, pull};
