/*
 * backend.h - what a storage backend provides to the store front (internal).
 *
 * store.c owns everything backend-neutral: URL scheme dispatch, the
 * connection pool, the per-connection statement cache, transaction tracking
 * and migrations. A backend (store_sqlite.c, store_pg.c) fills one
 * qn__store_ops table with thin wrappers over its client library and is
 * listed once in store.c's backend table. Handles are opaque void pointers:
 * ctx (per store), conn (per pooled connection), stmt (per prepared statement).
 * Every function that can fail follows err.h: 0 or a negative qn_code with err
 * filled. A conn and its stmts are used by one thread at a time.
 */
#ifndef QN_STORE_BACKEND_H
#define QN_STORE_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/err.h"

typedef struct qn__store_ops {
    const char *name;            /* what qn_store_backend() reports */
    const char *const *schemes;  /* URL schemes served, NULL-terminated */

    /* target: the URL after "scheme://" (or a plain path). */
    int (*open)(const char *target, void **ctx, qn_err *err);
    void (*close)(void *ctx);
    int (*conn_open)(void *ctx, void **conn, qn_err *err);
    void (*conn_close)(void *conn);

    /* One or more ';'-separated statements, no parameters, rows discarded. */
    int (*exec)(void *conn, const char *sql, qn_err *err);
    int (*tx_begin)(void *conn, int mode, qn_err *err);
    int (*tx_commit)(void *conn, qn_err *err);
    /* Rolls back whatever transaction is open; a no-op when none is. */
    void (*tx_rollback)(void *conn);
    int64_t (*changes)(void *conn);

    int (*prepare)(void *conn, const char *sql, void **stmt, qn_err *err);
    void (*finalize)(void *stmt);
    /* Back to the start, bindings cleared. */
    void (*reset)(void *stmt);
    int (*bind_int64)(void *stmt, int idx, int64_t v);
    int (*bind_double)(void *stmt, int idx, double v);
    int (*bind_text)(void *stmt, int idx, const char *s, ssize_t len);
    int (*bind_blob)(void *stmt, int idx, const void *p, size_t len);
    int (*bind_null)(void *stmt, int idx);
    /* 1 row, 0 done, negative qn_code (mapped per store.h). */
    int (*step)(void *stmt, qn_err *err);
    int (*col_is_null)(void *stmt, int col);
    int64_t (*col_int64)(void *stmt, int col);
    double (*col_double)(void *stmt, int col);
    const char *(*col_text)(void *stmt, int col);
    const void *(*col_blob)(void *stmt, int col, size_t *len);
} qn__store_ops;

extern const qn__store_ops qn__store_sqlite;
extern const qn__store_ops qn__store_pg;

#endif
