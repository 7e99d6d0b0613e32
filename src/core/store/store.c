/*
 * store.c - the backend-neutral front of the storage layer (see store.h).
 *
 * What lives here rather than in a backend: choosing the backend from the URL
 * scheme, the connection pool (a stack of idle connections, a mutex and a
 * condition variable; connections are opened lazily up to the pool size), the
 * per-connection statement cache keyed by SQL text, knowing whether a
 * connection has a transaction open, and schema migrations.
 *
 * Migrations: each pending migration runs in its own write transaction
 * (BEGIN IMMEDIATE on SQLite, the schema's advisory lock on PostgreSQL) that
 * first re-reads the recorded version. Two
 * processes opening the same database at once therefore serialise on the
 * write lock and the second finds the work done: no migration runs twice.
 * A failing migration rolls back completely (DDL is transactional on both
 * SQLite and PostgreSQL), leaving the version where it was.
 *
 * Adding a backend: write store_<name>.c filling a qn__store_ops
 * (backend.h) and add it to the `backends` table below. Services do not
 * change: they only ever see store.h.
 */
#include "core/store/store.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/store/backend.h"

static const qn__store_ops *const backends[] = {
    &qn__store_sqlite,
    &qn__store_pg,
};

/* Statements kept per connection. Services use a few dozen distinct SQL
 * texts; the bound only matters if some caller builds SQL dynamically, and
 * then the least recently prepared statement is finalised. */
#define STMT_CACHE_MAX 256
#define STMT_HASH_SIZE 512 /* power of two, >= STMT_CACHE_MAX */

struct qn_stmt {
    qn_conn *conn;
    void *impl;
    char *sql;
    uint64_t hash;
    int active;                     /* stepped since the last reset */
    int bind_rc;                    /* the first failed bind since prepare (sticky) */
    int bind_idx;                   /* and its parameter index */
    struct qn_stmt *hnext;          /* hash chain */
    struct qn_stmt *prev, *next;    /* LRU list, most recent first */
};

struct qn_conn {
    qn_store *store;
    void *impl;
    int in_tx;
    qn_stmt *hash[STMT_HASH_SIZE];
    qn_stmt *lru_head, *lru_tail;
    size_t nstmts;
    qn_conn *next_idle;
};

struct qn_store {
    const qn__store_ops *ops;
    void *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    qn_conn *idle;                  /* stack of idle connections */
    unsigned size, nopen;
    int version;
};

/* ---- statement cache ---- */

static uint64_t hash_sql(const char *s)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void lru_unlink(qn_conn *c, qn_stmt *st)
{
    if (st->prev)
        st->prev->next = st->next;
    else
        c->lru_head = st->next;
    if (st->next)
        st->next->prev = st->prev;
    else
        c->lru_tail = st->prev;
    st->prev = st->next = NULL;
}

static void lru_push(qn_conn *c, qn_stmt *st)
{
    st->prev = NULL;
    st->next = c->lru_head;
    if (c->lru_head)
        c->lru_head->prev = st;
    else
        c->lru_tail = st;
    c->lru_head = st;
}

static void stmt_drop(qn_conn *c, qn_stmt *st)
{
    qn_stmt **pp = &c->hash[st->hash & (STMT_HASH_SIZE - 1)];
    while (*pp != st)
        pp = &(*pp)->hnext;
    *pp = st->hnext;
    lru_unlink(c, st);
    c->nstmts--;
    c->store->ops->finalize(st->impl);
    free(st->sql);
    free(st);
}

qn_stmt *qn_prepare(qn_conn *c, const char *sql, qn_err *err)
{
    const qn__store_ops *ops = c->store->ops;
    uint64_t h = hash_sql(sql);
    qn_stmt *st;
    for (st = c->hash[h & (STMT_HASH_SIZE - 1)]; st; st = st->hnext) {
        if (st->hash == h && strcmp(st->sql, sql) == 0) {
            ops->reset(st->impl);
            st->active = 0;
            st->bind_rc = 0;
            st->bind_idx = 0;
            lru_unlink(c, st);
            lru_push(c, st);
            return st;
        }
    }
    if (c->nstmts >= STMT_CACHE_MAX)
        stmt_drop(c, c->lru_tail);
    st = calloc(1, sizeof *st);
    if (!st || !(st->sql = strdup(sql))) {
        free(st);
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory preparing a statement");
        return NULL;
    }
    if (ops->prepare(c->impl, sql, &st->impl, err) < 0) {
        free(st->sql);
        free(st);
        return NULL;
    }
    st->conn = c;
    st->hash = h;
    st->hnext = c->hash[h & (STMT_HASH_SIZE - 1)];
    c->hash[h & (STMT_HASH_SIZE - 1)] = st;
    lru_push(c, st);
    c->nstmts++;
    return st;
}

/* ---- connections and the pool ---- */

static void conn_close(qn_conn *c)
{
    while (c->lru_head)
        stmt_drop(c, c->lru_head);
    c->store->ops->conn_close(c->impl);
    free(c);
}

static qn_conn *conn_open(qn_store *s, qn_err *err)
{
    qn_conn *c = calloc(1, sizeof *c);
    if (!c) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory opening a connection");
        return NULL;
    }
    c->store = s;
    if (s->ops->conn_open(s->ctx, &c->impl, err) < 0) {
        free(c);
        return NULL;
    }
    return c;
}

qn_conn *qn_store_acquire(qn_store *s, qn_err *err)
{
    pthread_mutex_lock(&s->mu);
    while (!s->idle && s->nopen >= s->size)
        pthread_cond_wait(&s->cv, &s->mu);
    qn_conn *c = s->idle;
    if (c) {
        s->idle = c->next_idle;
        c->next_idle = NULL;
        pthread_mutex_unlock(&s->mu);
        return c;
    }
    s->nopen++; /* reserve the slot, open outside the lock */
    pthread_mutex_unlock(&s->mu);
    c = conn_open(s, err);
    if (!c) {
        pthread_mutex_lock(&s->mu);
        s->nopen--;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    return c;
}

void qn_store_release(qn_store *s, qn_conn *c)
{
    if (!c)
        return;
    /* A statement left mid-iteration would pin an old snapshot (and in WAL
     * mode stop checkpoints); a transaction left open would hold the lock. */
    for (qn_stmt *st = c->lru_head; st; st = st->next) {
        if (st->active) {
            s->ops->reset(st->impl);
            st->active = 0;
        }
    }
    s->ops->tx_rollback(c->impl);
    c->in_tx = 0;
    pthread_mutex_lock(&s->mu);
    c->next_idle = s->idle;
    s->idle = c;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- transactions and plain execution ---- */

int qn_tx_begin(qn_conn *c, int mode, qn_err *err)
{
    int rc = c->store->ops->tx_begin(c->impl, mode, err);
    if (rc == 0)
        c->in_tx = 1;
    return rc;
}

int qn_tx_commit(qn_conn *c, qn_err *err)
{
    int rc = c->store->ops->tx_commit(c->impl, err);
    if (rc < 0)
        c->store->ops->tx_rollback(c->impl); /* never leave a half-open tx */
    c->in_tx = 0;
    return rc;
}

void qn_tx_rollback(qn_conn *c)
{
    c->store->ops->tx_rollback(c->impl);
    c->in_tx = 0;
}

int qn_exec(qn_conn *c, const char *sql, qn_err *err)
{
    return c->store->ops->exec(c->impl, sql, err);
}

int64_t qn_changes(qn_conn *c)
{
    return c->store->ops->changes(c->impl);
}

/* ---- statements ---- */

/* Binds are sticky, as qn_buf appends are: the first failure is kept on
 * the statement, later binds do nothing, and qn_step reports it. So callers
 * need not check each bind; their existing step check catches it. */
static int bind_done(qn_stmt *st, int idx, int rc)
{
    if (rc < 0 && !st->bind_rc) {
        st->bind_rc = rc;
        st->bind_idx = idx;
    }
    return rc;
}

int qn_bind_int64(qn_stmt *st, int idx, int64_t v)
{
    if (st->bind_rc)
        return st->bind_rc;
    return bind_done(st, idx, st->conn->store->ops->bind_int64(st->impl, idx, v));
}

int qn_bind_double(qn_stmt *st, int idx, double v)
{
    if (st->bind_rc)
        return st->bind_rc;
    return bind_done(st, idx, st->conn->store->ops->bind_double(st->impl, idx, v));
}

int qn_bind_text(qn_stmt *st, int idx, const char *s, ssize_t len)
{
    if (st->bind_rc)
        return st->bind_rc;
    if (!s)
        return bind_done(st, idx, st->conn->store->ops->bind_null(st->impl, idx));
    return bind_done(st, idx, st->conn->store->ops->bind_text(st->impl, idx, s, len));
}

int qn_bind_blob(qn_stmt *st, int idx, const void *p, size_t len)
{
    if (st->bind_rc)
        return st->bind_rc;
    return bind_done(st, idx, st->conn->store->ops->bind_blob(st->impl, idx, p, len));
}

int qn_bind_null(qn_stmt *st, int idx)
{
    if (st->bind_rc)
        return st->bind_rc;
    return bind_done(st, idx, st->conn->store->ops->bind_null(st->impl, idx));
}

int qn_step(qn_stmt *st, qn_err *err)
{
    if (st->bind_rc) {
        /* Out of memory stays what it is; anything else (an index past the
         * statement's parameters, a value too big for the backend) is a
         * programmer error, never the client's. */
        int code = st->bind_rc == QN_RESOURCE_EXHAUSTED ? QN_RESOURCE_EXHAUSTED : QN_INTERNAL;
        return qn_err_set(err, code, "binding parameter %d of \"%.80s\" failed (%s); the statement was not run",
                          st->bind_idx, st->sql, qn_code_name(st->bind_rc));
    }
    st->active = 1;
    return st->conn->store->ops->step(st->impl, err);
}

int qn_col_is_null(qn_stmt *st, int col)
{
    return st->conn->store->ops->col_is_null(st->impl, col);
}

int64_t qn_col_int64(qn_stmt *st, int col)
{
    return st->conn->store->ops->col_int64(st->impl, col);
}

double qn_col_double(qn_stmt *st, int col)
{
    return st->conn->store->ops->col_double(st->impl, col);
}

const char *qn_col_text(qn_stmt *st, int col)
{
    return st->conn->store->ops->col_text(st->impl, col);
}

const void *qn_col_blob(qn_stmt *st, int col, size_t *len)
{
    return st->conn->store->ops->col_blob(st->impl, col, len);
}

/* ---- migrations ---- */

static const char create_versions[] =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY,"
    " applied_at INTEGER NOT NULL)";

/* Applies the first migration above the recorded version, in one write
 * transaction. *cur gets the version after; *done is set when none was left. */
static int migrate_one(qn_conn *c, const qn_migration *migs, size_t nmigs, int *cur, int *done,
                       qn_err *err)
{
    int rc = qn_tx_begin(c, QN_TX_WRITE, err);
    if (rc < 0)
        return qn_err_wrap(err, "migrations");
    if ((rc = qn_exec(c, create_versions, err)) < 0)
        goto fail;
    qn_stmt *st = qn_prepare(c, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", err);
    if (!st) {
        rc = err ? err->code : QN_INTERNAL;
        goto fail;
    }
    if ((rc = qn_step(st, err)) != 1) {
        rc = rc < 0 ? rc : qn_err_set(err, QN_INTERNAL, "schema_migrations: no row");
        goto fail;
    }
    int have = (int)qn_col_int64(st, 0);
    /* Done with the read: an active statement would block some DDL below. */
    c->store->ops->reset(st->impl);
    st->active = 0;
    const qn_migration *next = NULL;
    for (size_t i = 0; i < nmigs && !next; i++)
        if (migs[i].version > have)
            next = &migs[i];
    int newest = nmigs ? migs[nmigs - 1].version : 0;
    if (have > newest) {
        rc = qn_err_set(err, QN_FAILED_PRECONDITION,
                        "database schema version %d is newer than this build knows (%d)",
                        have, newest);
        goto fail;
    }
    if (!next) {
        *cur = have;
        *done = 1;
        qn_tx_rollback(c); /* nothing written but the table, which exists now or later */
        return 0;
    }
    if ((rc = qn_exec(c, next->sql, err)) < 0) {
        qn_err_wrap(err, "migration %d", next->version);
        goto fail;
    }
    st = qn_prepare(c, "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", err);
    if (!st) {
        rc = err ? err->code : QN_INTERNAL;
        goto fail;
    }
    qn_bind_int64(st, 1, next->version);
    qn_bind_int64(st, 2, (int64_t)time(NULL));
    if ((rc = qn_step(st, err)) < 0)
        goto fail;
    if ((rc = qn_tx_commit(c, err)) < 0)
        return qn_err_wrap(err, "migration %d: commit", next->version);
    *cur = next->version;
    return 0;
fail:
    qn_tx_rollback(c);
    return rc;
}

static int migrate(qn_store *s, const qn_migration *migs, size_t nmigs, qn_err *err)
{
    for (size_t i = 0; i < nmigs; i++) {
        if (migs[i].version <= 0 || (i > 0 && migs[i].version <= migs[i - 1].version))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "migration %d: versions must be positive and ascending",
                              migs[i].version);
    }
    qn_conn *c = qn_store_acquire(s, err);
    if (!c)
        return err ? err->code : QN_INTERNAL;
    int rc = 0, done = 0, cur = 0;
    while (rc == 0 && !done)
        rc = migrate_one(c, migs, nmigs, &cur, &done, err);
    qn_store_release(s, c);
    if (rc == 0)
        s->version = cur;
    return rc;
}

/* ---- open and close ---- */

qn_store *qn_store_open_pool(const char *url, const qn_migration *migs, size_t nmigs,
                             unsigned pool, qn_err *err)
{
    const qn__store_ops *ops = NULL;
    const char *target = url;
    const char *sep = url ? strstr(url, "://") : NULL;
    if (!url || !*url) {
        qn_err_set(err, QN_INVALID_ARGUMENT, "store URL is empty");
        return NULL;
    }
    if (sep) {
        size_t n = (size_t)(sep - url);
        for (size_t i = 0; i < sizeof backends / sizeof backends[0] && !ops; i++)
            for (const char *const *sc = backends[i]->schemes; *sc && !ops; sc++)
                if (strlen(*sc) == n && strncmp(*sc, url, n) == 0)
                    ops = backends[i];
        if (!ops) {
            qn_err_set(err, QN_INVALID_ARGUMENT, "store URL %s: unknown scheme '%.*s'", url,
                       (int)n, url);
            return NULL;
        }
        target = sep + 3;
    } else {
        ops = &qn__store_sqlite; /* a plain path */
    }

    qn_store *s = calloc(1, sizeof *s);
    if (!s) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory opening store %s", url);
        return NULL;
    }
    s->ops = ops;
    s->size = pool ? pool : 8;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (ops->open(target, &s->ctx, err) < 0) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    if (migrate(s, migs, nmigs, err) < 0) {
        qn_store_close(s);
        return NULL;
    }
    return s;
}

qn_store *qn_store_open(const char *url, const qn_migration *migs, size_t nmigs, qn_err *err)
{
    return qn_store_open_pool(url, migs, nmigs, 0, err);
}

void qn_store_close(qn_store *s)
{
    if (!s)
        return;
    /* Every connection must have been released: closing one that a thread
     * still uses is a programmer error. */
    while (s->idle) {
        qn_conn *c = s->idle;
        s->idle = c->next_idle;
        conn_close(c);
    }
    s->ops->close(s->ctx);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int qn_store_version(qn_store *s)
{
    return s->version;
}

const char *qn_store_backend(const qn_store *s)
{
    return s->ops->name;
}
