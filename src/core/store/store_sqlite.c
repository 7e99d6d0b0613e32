/*
 * store_sqlite.c - the embedded SQLite backend of the store (see store.h,
 * backend.h).
 *
 * Target forms: "/abs/path.db" (from sqlite:///abs/path.db), "rel/path.db",
 * optionally followed by a query: "?synchronous=full&busy_timeout=5000".
 *
 * Each pooled connection gets: extended result codes (to tell a UNIQUE clash
 * from other constraint failures), a busy timeout (default 5 s), foreign
 * keys on, and the synchronous level. The database is put in WAL mode once,
 * which lets readers run while one writer writes.
 *
 * Durability: WAL with synchronous=NORMAL (the default here) never corrupts
 * the database, and a committed transaction survives the process being
 * killed (kill -9, a crash): the WAL is written before COMMIT returns and the
 * OS keeps it. What NORMAL may lose is the last transactions before a power
 * cut or kernel crash, because the WAL is not fsynced on every commit. That
 * is the promise the registry makes (it survives its own death). Deployments
 * that must also survive power loss set ?synchronous=full, which fsyncs the
 * WAL on every commit at the price of commit latency.
 *
 * Statements are compiled with SQLITE_PREPARE_PERSISTENT since the store
 * caches them for the life of the connection.
 */
#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/store/backend.h"
#include "core/store/store.h"

typedef struct sq_ctx {
    char *path;
    int sync_full;
    int busy_ms;
} sq_ctx;

/* The qn_code for an SQLite (extended) result code, per store.h. */
static int map_rc(int rc)
{
    switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
        return QN_ALREADY_EXISTS;
    case SQLITE_NOMEM:
        return QN_RESOURCE_EXHAUSTED;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return QN_DATA_LOSS;
    }
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
        return QN_FAILED_PRECONDITION;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return QN_UNAVAILABLE;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return QN_DATA_LOSS;
    case SQLITE_NOMEM:
        return QN_RESOURCE_EXHAUSTED;
    }
    return QN_INTERNAL;
}

static int fail(sqlite3 *db, int rc, const char *sql, qn_err *err)
{
    return qn_err_set(err, map_rc(rc), "sqlite: %s (in \"%.80s\")",
                      db ? sqlite3_errmsg(db) : sqlite3_errstr(rc), sql);
}

/* ---- store-level ---- */

static int parse_query(sq_ctx *c, char *q, qn_err *err)
{
    char *save = NULL;
    for (char *kv = strtok_r(q, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        const char *val = eq ? eq + 1 : "";
        if (eq)
            *eq = '\0';
        if (strcmp(kv, "synchronous") == 0) {
            if (strcmp(val, "full") == 0)
                c->sync_full = 1;
            else if (strcmp(val, "normal") == 0)
                c->sync_full = 0;
            else
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "store URL: synchronous must be normal or full, got '%s'",
                                  val);
        } else if (strcmp(kv, "busy_timeout") == 0) {
            char *end;
            errno = 0;
            long ms = strtol(val, &end, 10);
            if (errno || end == val || *end || ms < 0 || ms > INT_MAX)
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "store URL: busy_timeout must be milliseconds, got '%s'", val);
            c->busy_ms = (int)ms;
        } else {
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "store URL: unknown option '%s' (synchronous, busy_timeout)", kv);
        }
    }
    return 0;
}

static int sq_open(const char *target, void **out, qn_err *err)
{
    sq_ctx *c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(target))) {
        free(c);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory opening %s", target);
    }
    c->busy_ms = 5000;
    char *q = strchr(c->path, '?');
    int rc = 0;
    if (q) {
        *q++ = '\0';
        rc = parse_query(c, q, err);
    }
    if (rc == 0 && !*c->path)
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "store URL %s: no database path", target);
    if (rc < 0) {
        free(c->path);
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

static void sq_close(void *ctx)
{
    sq_ctx *c = ctx;
    if (c)
        free(c->path);
    free(c);
}

/* Runs a PRAGMA and, when want is set, checks its one-row answer. */
static int pragma(sqlite3 *db, const char *sql, const char *want, qn_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return fail(db, rc, sql, err);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && want) {
        const char *got = (const char *)sqlite3_column_text(st, 0);
        if (!got || strcmp(got, want) != 0) {
            int r = qn_err_set(err, QN_INTERNAL, "sqlite: %s answered %s, wanted %s", sql,
                               got ? got : "NULL", want);
            sqlite3_finalize(st);
            return r;
        }
    } else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        int r = fail(db, rc, sql, err);
        sqlite3_finalize(st);
        return r;
    }
    sqlite3_finalize(st);
    return 0;
}

static int sq_conn_open(void *ctx, void **out, qn_err *err)
{
    sq_ctx *c = ctx;
    sqlite3 *db = NULL;
    /* NOMUTEX: a connection is used by one thread at a time (store.h), so
     * SQLite's per-connection mutex would only cost. */
    int rc = sqlite3_open_v2(c->path, &db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        rc = qn_err_set(err, QN_INTERNAL, "sqlite: cannot open %s: %s", c->path,
                        db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return rc;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, c->busy_ms);
    /* Two processes switching a new file to WAL at once: SQLite may answer
     * SQLITE_BUSY at once, without calling the busy handler (it refuses to
     * wait where waiting could deadlock), so retry here up to the timeout. */
    for (int waited = 0;; waited += 5) {
        rc = pragma(db, "PRAGMA journal_mode=WAL", "wal", err);
        if (rc != QN_UNAVAILABLE || waited >= c->busy_ms)
            break;
        usleep(5000);
    }
    if (rc < 0 ||
        (rc = pragma(db, c->sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                     NULL, err)) < 0 ||
        (rc = pragma(db, "PRAGMA foreign_keys=ON", NULL, err)) < 0) {
        qn_err_wrap(err, "%s", c->path);
        sqlite3_close(db);
        return rc;
    }
    *out = db;
    return 0;
}

static void sq_conn_close(void *conn)
{
    sqlite3_close(conn);
}

static int sq_exec(void *conn, const char *sql, qn_err *err)
{
    sqlite3 *db = conn;
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : fail(db, sqlite3_extended_errcode(db), sql, err);
}

static int sq_tx_begin(void *conn, int mode, qn_err *err)
{
    /* IMMEDIATE takes the write lock now, waiting up to the busy timeout:
     * a DEFERRED writer could hold a read snapshot, fail to upgrade, and
     * have to restart, which a busy handler cannot fix. */
    return sq_exec(conn, mode == QN_TX_WRITE ? "BEGIN IMMEDIATE" : "BEGIN", err);
}

static int sq_tx_commit(void *conn, qn_err *err)
{
    return sq_exec(conn, "COMMIT", err);
}

static void sq_tx_rollback(void *conn)
{
    sqlite3 *db = conn;
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

static int64_t sq_changes(void *conn)
{
    return sqlite3_changes64(conn);
}

/* ---- statements ---- */

static int sq_prepare(void *conn, const char *sql, void **out, qn_err *err)
{
    sqlite3 *db = conn;
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, &tail);
    if (rc != SQLITE_OK)
        return fail(db, sqlite3_extended_errcode(db), sql, err);
    if (!st)
        return qn_err_set(err, QN_INTERNAL, "sqlite: no statement in \"%.80s\"", sql);
    while (tail && (*tail == ' ' || *tail == '\n' || *tail == '\t' || *tail == ';'))
        tail++;
    if (tail && *tail) {
        sqlite3_finalize(st);
        return qn_err_set(err, QN_INTERNAL,
                          "sqlite: more than one statement in \"%.80s\" (use qn_exec)", sql);
    }
    *out = st;
    return 0;
}

static void sq_finalize(void *stmt)
{
    sqlite3_finalize(stmt);
}

static void sq_reset(void *stmt)
{
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
}

static int bind_rc(sqlite3_stmt *st, int rc)
{
    (void)st;
    return rc == SQLITE_OK ? 0 : map_rc(rc);
}

static int sq_bind_int64(void *stmt, int idx, int64_t v)
{
    return bind_rc(stmt, sqlite3_bind_int64(stmt, idx, v));
}

static int sq_bind_double(void *stmt, int idx, double v)
{
    return bind_rc(stmt, sqlite3_bind_double(stmt, idx, v));
}

static int sq_bind_text(void *stmt, int idx, const char *s, ssize_t len)
{
    sqlite3_uint64 n = len < 0 ? strlen(s) : (sqlite3_uint64)len;
    return bind_rc(stmt, sqlite3_bind_text64(stmt, idx, s, n, SQLITE_TRANSIENT, SQLITE_UTF8));
}

static int sq_bind_blob(void *stmt, int idx, const void *p, size_t len)
{
    /* A NULL pointer would bind SQL NULL; an empty blob is still a blob. */
    return bind_rc(stmt, sqlite3_bind_blob64(stmt, idx, p ? p : "", len, SQLITE_TRANSIENT));
}

static int sq_bind_null(void *stmt, int idx)
{
    return bind_rc(stmt, sqlite3_bind_null(stmt, idx));
}

static int sq_step(void *stmt, qn_err *err)
{
    sqlite3_stmt *st = stmt;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    int r = fail(sqlite3_db_handle(st), rc, sqlite3_sql(st), err);
    sqlite3_reset(st); /* ready to run again after the error */
    return r;
}

static int sq_col_is_null(void *stmt, int col)
{
    return sqlite3_column_type(stmt, col) == SQLITE_NULL;
}

static int64_t sq_col_int64(void *stmt, int col)
{
    return sqlite3_column_int64(stmt, col);
}

static double sq_col_double(void *stmt, int col)
{
    return sqlite3_column_double(stmt, col);
}

static const char *sq_col_text(void *stmt, int col)
{
    return (const char *)sqlite3_column_text(stmt, col);
}

static const void *sq_col_blob(void *stmt, int col, size_t *len)
{
    const void *p = sqlite3_column_blob(stmt, col);
    int n = sqlite3_column_bytes(stmt, col);
    if (len)
        *len = (size_t)n;
    if (!p && sqlite3_column_type(stmt, col) != SQLITE_NULL)
        return ""; /* an empty blob is not NULL */
    return p;
}

static const char *const sq_schemes[] = {"sqlite", NULL};

const qn__store_ops qn__store_sqlite = {
    .name = "sqlite",
    .schemes = sq_schemes,
    .open = sq_open,
    .close = sq_close,
    .conn_open = sq_conn_open,
    .conn_close = sq_conn_close,
    .exec = sq_exec,
    .tx_begin = sq_tx_begin,
    .tx_commit = sq_tx_commit,
    .tx_rollback = sq_tx_rollback,
    .changes = sq_changes,
    .prepare = sq_prepare,
    .finalize = sq_finalize,
    .reset = sq_reset,
    .bind_int64 = sq_bind_int64,
    .bind_double = sq_bind_double,
    .bind_text = sq_bind_text,
    .bind_blob = sq_bind_blob,
    .bind_null = sq_bind_null,
    .step = sq_step,
    .col_is_null = sq_col_is_null,
    .col_int64 = sq_col_int64,
    .col_double = sq_col_double,
    .col_text = sq_col_text,
    .col_blob = sq_col_blob,
};
