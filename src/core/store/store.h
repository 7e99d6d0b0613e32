/*
 * store.h - the storage layer: one interface, a backend per URL scheme.
 *
 * Services keep their metadata through this interface only: SQL with '?'
 * placeholders, prepared statements (cached per connection), explicit
 * transactions, and schema migrations recorded in a version table. The
 * embedded backend is SQLite (WAL, busy timeout); the scale-out one is
 * PostgreSQL (libpq, store_pg.c: one schema per service), chosen by the URL
 * alone, which is why SQL here sticks to the common subset (RETURNING,
 * ON CONFLICT with qualified column references, no AUTOINCREMENT) and
 * placeholders are '?' (rewritten to $n for PostgreSQL). Migration DDL may
 * use SQLite's INTEGER PRIMARY KEY, INTEGER, REAL and BLOB: the PostgreSQL
 * backend translates them (docs/operations.md).
 *
 *     static const qn_migration migrations[] = {
 *         {1, "CREATE TABLE models (name TEXT PRIMARY KEY, created_at INTEGER NOT NULL)"},
 *         {2, "ALTER TABLE models ADD COLUMN description TEXT"},
 *     };
 *     qn_store *db = qn_store_open("sqlite:///var/lib/quern/registry/registry.db",
 *                                  migrations, QN_NELEM(migrations), &err);
 *
 *     qn_conn *c = qn_store_acquire(db, &err);
 *     if (qn_tx_begin(c, QN_TX_WRITE, &err) < 0) goto out;
 *     qn_stmt *s = qn_prepare(c, "INSERT INTO models (name, created_at) VALUES (?, ?)", &err);
 *     qn_bind_text(s, 1, name, -1);           // a failed bind is reported by qn_step
 *     qn_bind_int64(s, 2, now);
 *     rc = qn_step(s, &err);                  // 0: done; QN_ALREADY_EXISTS on a unique clash
 *     rc == 0 ? qn_tx_commit(c, &err) : qn_tx_rollback(c);
 *   out:
 *     qn_store_release(db, c);
 *
 * Threads: a qn_store is shared; a qn_conn (and its statements) belongs to
 * the one thread that acquired it until it is released. acquire blocks while
 * every pooled connection is in use.
 */
#ifndef QN_STORE_H
#define QN_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/err.h"

typedef struct qn_store qn_store;
typedef struct qn_conn qn_conn;
typedef struct qn_stmt qn_stmt;

typedef struct qn_migration {
    int version;       /* 1, 2, 3... ascending, never reused */
    const char *sql;   /* one or more statements separated by ';' */
} qn_migration;

enum { QN_TX_READ = 0, QN_TX_WRITE = 1 };

/* url: "sqlite:///abs/path.db", "sqlite://rel/path.db", or a plain path
 * (SQLite: creates the file if needed, enables WAL and a busy timeout), or
 * "postgres://user:pass@host:port/db?schema=NAME" (PostgreSQL: creates the
 * schema if needed; NAME defaults to the program name less "quern-").
 * Applies the migrations above the recorded version, each in its own
 * transaction. pool: connections kept (0: 8). NULL with err on failure
 * (an unknown scheme or a bad option is QN_INVALID_ARGUMENT, a server that
 * cannot be reached QN_UNAVAILABLE). */
QN_MUST_CHECK qn_store *qn_store_open(const char *url, const qn_migration *migs, size_t nmigs,
                                      qn_err *err);
QN_MUST_CHECK qn_store *qn_store_open_pool(const char *url, const qn_migration *migs, size_t nmigs,
                             unsigned pool, qn_err *err);
void qn_store_close(qn_store *s);
/* The schema version after migrations. */
int qn_store_version(qn_store *s);
/* "sqlite" or "postgres". */
const char *qn_store_backend(const qn_store *s);

QN_MUST_CHECK qn_conn *qn_store_acquire(qn_store *s, qn_err *err);
/* Returns c to the pool; a transaction left open is rolled back. */
void qn_store_release(qn_store *s, qn_conn *c);

/* QN_TX_WRITE takes the store's write lock up front (SQLite BEGIN IMMEDIATE;
 * on PostgreSQL an advisory lock per schema), so write transactions run one
 * at a time and never deadlock upgrading; waits up to the busy timeout, then
 * QN_UNAVAILABLE. QN_TX_READ reads one snapshot and never waits for writers.
 * On PostgreSQL a failed statement aborts the transaction: roll back. */
QN_MUST_CHECK int qn_tx_begin(qn_conn *c, int mode, qn_err *err);
QN_MUST_CHECK int qn_tx_commit(qn_conn *c, qn_err *err);
void qn_tx_rollback(qn_conn *c);

/* A prepared statement for sql, cached on the connection (the same SQL text
 * is compiled once per connection). It comes back reset with no bindings.
 * NULL with err on a syntax error (QN_INTERNAL: a programmer error). */
QN_MUST_CHECK qn_stmt *qn_prepare(qn_conn *c, const char *sql, qn_err *err);
/* Runs a statement with no parameters and no rows (DDL, PRAGMA). */
QN_MUST_CHECK int qn_exec(qn_conn *c, const char *sql, qn_err *err);

/* Parameters are 1-based. len -1: NUL-terminated. text/blob are copied.
 * 0, or negative when the bind failed (an index outside the statement's
 * parameters, out of memory). Failures are sticky, as qn_buf's: the first
 * is kept on the statement until the next qn_prepare, later binds do
 * nothing and return it, and qn_step reports it instead of running the
 * statement. Callers may therefore leave binds unchecked and rely on the
 * step check. */
int qn_bind_int64(qn_stmt *st, int idx, int64_t v);
int qn_bind_double(qn_stmt *st, int idx, double v);
int qn_bind_text(qn_stmt *st, int idx, const char *s, ssize_t len);
int qn_bind_blob(qn_stmt *st, int idx, const void *p, size_t len);
int qn_bind_null(qn_stmt *st, int idx);

/* Advances: 1 when a row is ready, 0 when done, negative on error:
 * QN_ALREADY_EXISTS (unique/primary key clash), QN_FAILED_PRECONDITION
 * (other constraint), QN_UNAVAILABLE (busy past the timeout, a lost server
 * connection: the next call reconnects), QN_INTERNAL. When a bind failed
 * since the prepare, the statement is not run: QN_INTERNAL (or
 * QN_RESOURCE_EXHAUSTED for out of memory) naming the parameter index. */
QN_MUST_CHECK int qn_step(qn_stmt *st, qn_err *err);
/* Columns are 0-based; valid until the next step/reset. */
int qn_col_is_null(qn_stmt *st, int col);
int64_t qn_col_int64(qn_stmt *st, int col);
double qn_col_double(qn_stmt *st, int col);
const char *qn_col_text(qn_stmt *st, int col);   /* NULL when NULL */
const void *qn_col_blob(qn_stmt *st, int col, size_t *len);
/* Rows changed by the last INSERT/UPDATE/DELETE on this connection. */
int64_t qn_changes(qn_conn *c);

#endif
