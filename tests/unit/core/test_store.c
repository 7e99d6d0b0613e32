/* test_store.c - the store contract, run on every backend: SQLite always,
 * then PostgreSQL when QUERN_TEST_PG holds a server URL (run_store_pg.sh
 * starts a private server): migrations (once, idempotent, atomic on failure,
 * safe when two processes open at once), binds and columns of every type,
 * placeholders beside quotes and comments, error mapping, gapless sequence
 * numbers under 8 writer threads, busy handling, the statement cache, and
 * release rolling back. PostgreSQL also gets: schemas kept apart, the default
 * schema, URL checks, and a server restarted (and stopped) under a pooled
 * connection (QUERN_TEST_PG_CTL). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/store/store.h"

static const char *pg_base; /* QUERN_TEST_PG */
static int on_pg;           /* the group running: 0 SQLite, 1 PostgreSQL */
static char dbpath[512];    /* SQLite: this test's file */
static char schema[64];     /* PostgreSQL: this test's schema */
static char url[1024];      /* this test's store URL */

static void remove_db(void)
{
    unlink(dbpath);
    char side[600];
    snprintf(side, sizeof side, "%s-wal", dbpath);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", dbpath);
    unlink(side);
}

/* A fresh database per test: a file under QUERN_TEST_WORK, or a new schema. */
static int setup(void **state)
{
    (void)state;
    static int n;
    if (on_pg) {
        snprintf(schema, sizeof schema, "t_%d_%d", (int)getpid(), n++);
        snprintf(url, sizeof url, "%s%cschema=%s", pg_base, strchr(pg_base, '?') ? '&' : '?',
                 schema);
        return 0;
    }
    const char *work = getenv("QUERN_TEST_WORK");
    snprintf(dbpath, sizeof dbpath, "%s/store_%d_%d.db", work ? work : "/tmp", (int)getpid(),
             n++);
    remove_db();
    snprintf(url, sizeof url, "%s", dbpath);
    return 0;
}

/* url with one more option (busy_timeout=200...). */
static void url_with(char *out, size_t cap, const char *opt)
{
    if (on_pg)
        snprintf(out, cap, "%s&%s", url, opt);
    else
        snprintf(out, cap, "sqlite://%s?%s", dbpath, opt);
}

static int group_sqlite(void **state)
{
    (void)state;
    on_pg = 0;
    return 0;
}

static int group_pg(void **state)
{
    (void)state;
    on_pg = 1;
    return 0;
}

static const qn_migration migs[] = {
    {1, "CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL)"},
    {2, "CREATE TABLE seq (n INTEGER PRIMARY KEY, who INTEGER NOT NULL);"
        "CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
        "INSERT INTO counter (id, n) VALUES (1, 0)"},
    {3, "CREATE TABLE vals (id INTEGER PRIMARY KEY, i INTEGER, d REAL, t TEXT, b BLOB, z TEXT,"
        " parent TEXT REFERENCES kv(k))"},
};
#define NMIGS (sizeof migs / sizeof migs[0])

static int64_t query_int(qn_store *db, const char *sql)
{
    qn_err err;
    qn_conn *c = qn_store_acquire(db, &err);
    assert_non_null(c);
    qn_stmt *st = qn_prepare(c, sql, &err);
    assert_non_null(st);
    assert_int_equal(qn_step(st, &err), 1);
    int64_t v = qn_col_int64(st, 0);
    qn_store_release(db, c);
    return v;
}

/* Whether this test's database has a table called name. */
static int table_exists(qn_store *db, const char *name)
{
    qn_err err;
    qn_conn *c = qn_store_acquire(db, &err);
    assert_non_null(c);
    qn_stmt *st = qn_prepare(c,
                             on_pg ? "SELECT COUNT(*) FROM information_schema.tables "
                                     "WHERE table_schema = current_schema() AND table_name = ?"
                                   : "SELECT COUNT(*) FROM sqlite_master WHERE name = ?",
                             &err);
    assert_non_null(st);
    qn_bind_text(st, 1, name, -1);
    assert_int_equal(qn_step(st, &err), 1);
    int64_t v = qn_col_int64(st, 0);
    qn_store_release(db, c);
    return v > 0;
}

static void test_migrations_once(void **state)
{
    (void)state;
    qn_err err;
    qn_store *db = qn_store_open(url, migs, 2, &err);
    if (!db)
        fail_msg("%s", err.msg);
    assert_string_equal(qn_store_backend(db), on_pg ? "postgres" : "sqlite");
    assert_int_equal(qn_store_version(db), 2);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM schema_migrations"), 2);
    qn_store_close(db);

    /* Reopen with one more: only 3 runs. Reopen again: nothing runs (if 2 ran
     * twice, its INSERT would leave two counter rows or fail). SQLite is
     * reopened through its sqlite:// form as well as the plain path. */
    char again[1100];
    if (on_pg)
        snprintf(again, sizeof again, "%s", url);
    else
        snprintf(again, sizeof again, "sqlite://%s", dbpath);
    for (int i = 0; i < 2; i++) {
        db = qn_store_open(again, migs, NMIGS, &err);
        if (!db)
            fail_msg("%s", err.msg);
        assert_int_equal(qn_store_version(db), 3);
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM schema_migrations"), 3);
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM counter"), 1);
        assert_true(query_int(db, "SELECT MIN(applied_at) FROM schema_migrations") > 1700000000);
        qn_store_close(db);
    }

    /* Foreign keys are enforced. */
    db = qn_store_open(again, migs, NMIGS, &err);
    qn_conn *c = qn_store_acquire(db, &err);
    qn_stmt *st = qn_prepare(c, "INSERT INTO vals (parent) VALUES ('no such key')", &err);
    assert_int_equal(qn_step(st, &err), QN_FAILED_PRECONDITION);
    assert_non_null(strcasestr(err.msg, "FOREIGN KEY"));
    if (on_pg) {
        /* The tables live in this store's schema, which is the search path. */
        st = qn_prepare(c, "SELECT current_schema()", &err);
        assert_int_equal(qn_step(st, &err), 1);
        assert_string_equal(qn_col_text(st, 0), schema);
        assert_true(table_exists(db, "schema_migrations"));
        assert_true(table_exists(db, "counter"));
        /* INTEGER became 64-bit: a time in ms since the epoch fits. */
        st = qn_prepare(c, "INSERT INTO kv (k, v) VALUES ('big', ?)", &err);
        qn_bind_int64(st, 1, INT64_C(1) << 40);
        assert_int_equal(qn_step(st, &err), 0);
        qn_store_release(db, c);
        assert_true(query_int(db, "SELECT v FROM kv WHERE k = 'big'") == INT64_C(1) << 40);
        qn_store_close(db);
        return;
    }
    /* WAL is on, foreign keys are enforced, synchronous is NORMAL (1). */
    st = qn_prepare(c, "PRAGMA journal_mode", &err);
    assert_int_equal(qn_step(st, &err), 1);
    assert_string_equal(qn_col_text(st, 0), "wal");
    st = qn_prepare(c, "PRAGMA synchronous", &err);
    assert_int_equal(qn_step(st, &err), 1);
    assert_int_equal(qn_col_int64(st, 0), 1);
    st = qn_prepare(c, "PRAGMA foreign_keys", &err);
    assert_int_equal(qn_step(st, &err), 1);
    assert_int_equal(qn_col_int64(st, 0), 1);
    qn_store_release(db, c);
    qn_store_close(db);

    /* ?synchronous=full is honoured (FULL is 2). */
    url_with(again, sizeof again, "synchronous=full");
    db = qn_store_open(again, migs, NMIGS, &err);
    assert_non_null(db);
    assert_int_equal(query_int(db, "PRAGMA synchronous"), 2);
    qn_store_close(db);
}

static void test_migration_failure(void **state)
{
    (void)state;
    qn_err err;
    static const qn_migration bad[] = {
        {1, "CREATE TABLE a (x INTEGER)"},
        {2, "CREATE TABLE b (y INTEGER); INSERT INTO b VALUES (1); INSERT INTO nosuch VALUES (1)"},
    };
    qn_store *db = qn_store_open(url, bad, 2, &err);
    assert_null(db);
    assert_int_equal(err.code, QN_INTERNAL);
    assert_non_null(strstr(err.msg, "migration 2"));
    assert_non_null(strstr(err.msg, "nosuch"));

    /* Version 1 stayed, and migration 2 left nothing behind (no table b). */
    db = qn_store_open(url, bad, 1, &err);
    assert_non_null(db);
    assert_int_equal(qn_store_version(db), 1);
    assert_true(table_exists(db, "a"));
    assert_false(table_exists(db, "b"));
    assert_int_equal(query_int(db, "SELECT MAX(version) FROM schema_migrations"), 1);
    qn_store_close(db);

    /* A database newer than the build refuses to open rather than guess. */
    static const qn_migration two[] = {{1, "CREATE TABLE a (x INTEGER)"},
                                       {2, "CREATE TABLE c (z INTEGER)"}};
    db = qn_store_open(url, two, 2, &err);
    assert_non_null(db);
    qn_store_close(db);
    assert_null(qn_store_open(url, two, 1, &err));
    assert_int_equal(err.code, QN_FAILED_PRECONDITION);

    /* Versions out of order are refused. */
    static const qn_migration unordered[] = {{2, "SELECT 1"}, {1, "SELECT 1"}};
    assert_null(qn_store_open(url, unordered, 2, &err));
    assert_int_equal(err.code, QN_INVALID_ARGUMENT);
}

/* Bad URLs of both backends are refused before anything is touched (the
 * PostgreSQL ones need no server). */
static void test_bad_urls(void **state)
{
    (void)state;
    qn_err err;
    assert_null(qn_store_open("mysql://localhost/db", migs, NMIGS, &err));
    assert_int_equal(err.code, QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "mysql"));
    char bad[1100];
    static const char *const sqlite_opts[] = {"synchronous=sometimes", "color=blue",
                                              "busy_timeout=soon"};
    for (size_t i = 0; i < 3 && !on_pg; i++) {
        url_with(bad, sizeof bad, sqlite_opts[i]);
        assert_null(qn_store_open(bad, migs, NMIGS, &err));
        assert_int_equal(err.code, QN_INVALID_ARGUMENT);
    }
    if (!on_pg) {
        assert_null(qn_store_open("sqlite:///nonexistent-dir/x/y.db", migs, NMIGS, &err));
        assert_int_equal(err.code, QN_INTERNAL);
    }
    static const char *const pg_bad[] = {
        "postgres://u@127.0.0.1:1/db?schema=Bad-Name",
        "postgres://u@127.0.0.1:1/db?schema=",
        "postgres://u@127.0.0.1:1/db?schema=9lives",
        "postgresql://u@127.0.0.1:1/db?color=blue",
        "postgres://u@127.0.0.1:1/db?busy_timeout=soon",
        "postgres://u@127.0.0.1:1/db?options=-csearch_path%3Dpublic",
        "postgres://u@[::1/db",
    };
    for (size_t i = 0; i < sizeof pg_bad / sizeof pg_bad[0]; i++) {
        assert_null(qn_store_open(pg_bad[i], migs, NMIGS, &err));
        if (err.code != QN_INVALID_ARGUMENT)
            fail_msg("%s: %s", pg_bad[i], err.msg);
    }
    /* A server that is not there: unavailable (a retry may work), and the
     * message says where it tried. */
    assert_null(qn_store_open("postgres://u@127.0.0.1:1/db?schema=s&connect_timeout=2", migs,
                              NMIGS, &err));
    assert_int_equal(err.code, QN_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "127.0.0.1"));
}

static void test_types_and_errors(void **state)
{
    qn_err err;
    qn_store *db = qn_store_open(url, migs, NMIGS, &err);
    assert_non_null(db);
    qn_conn *c = qn_store_acquire(db, &err);
    qn_stmt *st = qn_prepare(c, "INSERT INTO vals (i, d, t, b, z) VALUES (?, ?, ?, ?, ?)", &err);
    assert_non_null(st);
    static const unsigned char blob[] = {0, 1, 2, 0xff, 0};
    char text[] = "h\xc3\xa9llo, world";
    assert_int_equal(qn_bind_int64(st, 1, INT64_MIN), 0);
    assert_int_equal(qn_bind_double(st, 2, -1.5e-300), 0);
    assert_int_equal(qn_bind_text(st, 3, text, 6), 0); /* first 6 bytes: "héllo" */
    assert_int_equal(qn_bind_blob(st, 4, blob, sizeof blob), 0);
    assert_int_equal(qn_bind_null(st, 5), 0);
    text[0] = 'X'; /* text is copied at bind time */
    assert_int_equal(qn_step(st, &err), 0);
    assert_int_equal(qn_changes(c), 1);
    assert_true(qn_bind_int64(st, 9, 1) < 0); /* out of range index */

    st = qn_prepare(c, "INSERT INTO vals (i, d, t, b, z) VALUES (?, ?, ?, ?, ?)", &err);
    qn_bind_int64(st, 1, INT64_MAX);
    qn_bind_double(st, 2, INFINITY);
    qn_bind_text(st, 3, "", -1);
    qn_bind_blob(st, 4, NULL, 0);
    qn_bind_text(st, 5, "full string", -1);
    assert_int_equal(qn_step(st, &err), 0);

    st = qn_prepare(c, "SELECT i, d, t, b, z FROM vals ORDER BY id", &err);
    assert_int_equal(qn_step(st, &err), 1);
    assert_true(qn_col_int64(st, 0) == INT64_MIN);
    assert_true(qn_col_double(st, 1) == -1.5e-300);
    assert_string_equal(qn_col_text(st, 2), "h\xc3\xa9llo");
    size_t len = 0;
    const unsigned char *b = qn_col_blob(st, 3, &len);
    assert_int_equal(len, sizeof blob);
    assert_memory_equal(b, blob, sizeof blob);
    assert_true(qn_col_is_null(st, 4));
    assert_null(qn_col_text(st, 4));
    assert_int_equal(qn_step(st, &err), 1);
    assert_true(qn_col_int64(st, 0) == INT64_MAX);
    assert_true(isinf(qn_col_double(st, 1)));
    assert_string_equal(qn_col_text(st, 2), "");
    assert_false(qn_col_is_null(st, 2));
    assert_false(qn_col_is_null(st, 3)); /* an empty blob is not NULL */
    assert_non_null(qn_col_blob(st, 3, &len));
    assert_int_equal(len, 0);
    assert_string_equal(qn_col_text(st, 4), "full string");
    assert_int_equal(qn_step(st, &err), 0);

    /* Unique clash -> ALREADY_EXISTS; NOT NULL -> FAILED_PRECONDITION. */
    st = qn_prepare(c, "INSERT INTO kv (k, v) VALUES (?, ?)", &err);
    qn_bind_text(st, 1, "a", -1);
    qn_bind_int64(st, 2, 1);
    assert_int_equal(qn_step(st, &err), 0);
    st = qn_prepare(c, "INSERT INTO kv (k, v) VALUES (?, ?)", &err);
    qn_bind_text(st, 1, "a", -1);
    qn_bind_int64(st, 2, 2);
    assert_int_equal(qn_step(st, &err), QN_ALREADY_EXISTS);
    assert_int_equal(err.code, QN_ALREADY_EXISTS);
    assert_non_null(strcasestr(err.msg, "UNIQUE"));
    /* The statement is usable again after the error. */
    qn_bind_text(st, 1, "b", -1);
    qn_bind_int64(st, 2, 2);
    assert_int_equal(qn_step(st, &err), 0);
    st = qn_prepare(c, "INSERT INTO kv (k, v) VALUES (?, NULL)", &err);
    qn_bind_text(st, 1, "c", -1);
    assert_int_equal(qn_step(st, &err), QN_FAILED_PRECONDITION);
    st = qn_prepare(c, "INSERT INTO seq (n, who) VALUES (1, 1)", &err);
    assert_int_equal(qn_step(st, &err), 0);
    st = qn_prepare(c, "INSERT INTO seq (n, who) VALUES (1, 2)", &err);
    assert_int_equal(qn_step(st, &err), QN_ALREADY_EXISTS); /* INTEGER PRIMARY KEY */

    /* Syntax errors and multiple statements are programmer errors. */
    assert_null(qn_prepare(c, "SELEKT 1", &err));
    assert_int_equal(err.code, QN_INTERNAL);
    assert_null(qn_prepare(c, "SELECT 1; SELECT 2", &err));
    assert_int_equal(err.code, QN_INTERNAL);
    assert_non_null(qn_prepare(c, "SELECT 1;  ", &err));
    assert_int_equal(qn_exec(c, "CREATE TABLE e (x INTEGER); DROP TABLE e", &err), 0);
    assert_int_equal(qn_exec(c, "INSERT INTO kv (k, v) VALUES ('a', 9)", &err),
                     QN_ALREADY_EXISTS);

    /* '?' inside literals, quoted identifiers and comments is not a
     * placeholder; booleans read as 1/0 on both backends. */
    st = qn_prepare(c,
                    "SELECT '?', \"k\", k = 'a' AND v > 0, ? || 'x' FROM kv /* ? */ "
                    "WHERE k = ? -- ?\n",
                    &err);
    if (!st)
        fail_msg("%s", err.msg);
    assert_int_equal(qn_bind_text(st, 1, "it's", -1), 0);
    assert_int_equal(qn_bind_text(st, 2, "a", -1), 0);
    assert_int_equal(qn_step(st, &err), 1);
    assert_string_equal(qn_col_text(st, 0), "?");
    assert_string_equal(qn_col_text(st, 1), "a");
    assert_int_equal(qn_col_int64(st, 2), 1);
    assert_string_equal(qn_col_text(st, 2), "1");
    assert_string_equal(qn_col_text(st, 3), "it'sx");
    assert_int_equal(qn_step(st, &err), 0);
    /* Stepping past the end runs the statement again, as on SQLite. */
    assert_int_equal(qn_step(st, &err), 1);
    assert_string_equal(qn_col_text(st, 1), "a");

    /* A bind that fails sticks to the statement: later binds do nothing and
     * the step reports the first failure, naming its index, without running
     * the statement (callers check only the step). */
    const char *ins = "INSERT INTO kv (k, v) VALUES (?, ?)";
    st = qn_prepare(c, ins, &err);
    assert_int_equal(qn_bind_text(st, 1, "sticky", -1), 0);
    int brc = qn_bind_int64(st, 3, 7); /* there is no third parameter */
    assert_true(brc < 0);
    assert_int_equal(qn_bind_int64(st, 2, 7), brc); /* valid, but after a failure */
    qn_err_clear(&err);
    assert_int_equal(qn_step(st, &err), QN_INTERNAL);
    assert_int_equal(err.code, QN_INTERNAL);
    assert_non_null(strstr(err.msg, "parameter 3"));
    assert_non_null(strstr(err.msg, "INSERT INTO kv"));
    assert_int_equal(qn_step(st, &err), QN_INTERNAL); /* still there */
    st = qn_prepare(c, "SELECT COUNT(*) FROM kv WHERE k = 'sticky'", &err);
    assert_int_equal(qn_step(st, &err), 1);
    assert_int_equal(qn_col_int64(st, 0), 0); /* nothing was inserted */
    /* Index 0 (parameters are 1-based), then a fresh prepare clears it. */
    st = qn_prepare(c, ins, &err);
    assert_true(qn_bind_null(st, 0) < 0);
    assert_true(qn_bind_text(st, 1, "sticky", -1) < 0);
    assert_int_equal(qn_step(st, &err), QN_INTERNAL);
    assert_non_null(strstr(err.msg, "parameter 0"));
    st = qn_prepare(c, ins, &err);
    assert_int_equal(qn_bind_text(st, 1, "sticky", -1), 0);
    assert_int_equal(qn_bind_int64(st, 2, 7), 0);
    assert_int_equal(qn_step(st, &err), 0);
    st = qn_prepare(c, "DELETE FROM kv WHERE k = 'sticky'", &err);
    assert_int_equal(qn_step(st, &err), 0);

    /* Changes count INSERT/UPDATE/DELETE only, RETURNING rows included. */
    st = qn_prepare(c, "UPDATE kv SET v = v + 1 RETURNING k", &err);
    int rows = 0;
    while (qn_step(st, &err) == 1)
        rows++;
    assert_int_equal(rows, 2);
    assert_int_equal(qn_changes(c), 2);
    st = qn_prepare(c, "SELECT k FROM kv", &err);
    assert_int_equal(qn_step(st, &err), 1);
    assert_int_equal(qn_changes(c), 2);
    qn_store_release(db, c);
    qn_store_close(db);
}

static void test_statement_cache(void **state)
{
    qn_err err;
    qn_store *db = qn_store_open_pool(url, migs, NMIGS, 1, &err);
    qn_conn *c = qn_store_acquire(db, &err);
    qn_stmt *a = qn_prepare(c, "SELECT ? + 1", &err);
    qn_bind_int64(a, 1, 41);
    assert_int_equal(qn_step(a, &err), 1);
    assert_int_equal(qn_col_int64(a, 0), 42);
    /* Same SQL: the same compiled statement, reset, bindings cleared. */
    qn_stmt *b = qn_prepare(c, "SELECT ? + 1", &err);
    assert_ptr_equal(a, b);
    assert_int_equal(qn_step(b, &err), 1);
    assert_true(qn_col_is_null(b, 0));
    assert_ptr_not_equal(qn_prepare(c, "SELECT ? + 2", &err), a);
    qn_store_release(db, c);
    /* Pool of one: the same connection comes back, its cache intact. */
    qn_conn *c2 = qn_store_acquire(db, &err);
    assert_ptr_equal(c2, c);
    assert_ptr_equal(qn_prepare(c2, "SELECT ? + 1", &err), a);
    /* Past the cache bound, statements are still correct. */
    for (int i = 0; i < 600; i++) {
        char sql[64];
        snprintf(sql, sizeof sql, "SELECT %d", i);
        qn_stmt *st = qn_prepare(c2, sql, &err);
        assert_non_null(st);
        assert_int_equal(qn_step(st, &err), 1);
        assert_int_equal(qn_col_int64(st, 0), i);
    }
    if (on_pg) {
        /* Evicted statements were deallocated on the server too. */
        qn_stmt *st = qn_prepare(c2, "SELECT COUNT(*) FROM pg_prepared_statements", &err);
        assert_int_equal(qn_step(st, &err), 1);
        int64_t n = qn_col_int64(st, 0);
        assert_true(n > 100 && n <= 258);
    }
    qn_store_release(db, c2);
    qn_store_close(db);
}

static void test_release_rolls_back(void **state)
{
    qn_err err;
    qn_store *db = qn_store_open_pool(url, migs, NMIGS, 2, &err);
    qn_conn *c = qn_store_acquire(db, &err);
    assert_int_equal(qn_tx_begin(c, QN_TX_WRITE, &err), 0);
    qn_stmt *st = qn_prepare(c, "INSERT INTO kv (k, v) VALUES ('lost', 1)", &err);
    assert_int_equal(qn_step(st, &err), 0);
    qn_store_release(db, c); /* no commit */
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM kv WHERE k = 'lost'"), 0);

    /* Explicit rollback and commit do what they say. */
    c = qn_store_acquire(db, &err);
    assert_int_equal(qn_tx_begin(c, QN_TX_WRITE, &err), 0);
    assert_int_equal(qn_exec(c, "INSERT INTO kv (k, v) VALUES ('rb', 1)", &err), 0);
    qn_tx_rollback(c);
    assert_int_equal(qn_tx_begin(c, QN_TX_READ, &err), 0);
    assert_int_equal(qn_tx_commit(c, &err), 0);
    assert_int_equal(qn_tx_begin(c, QN_TX_WRITE, &err), 0);
    assert_int_equal(qn_exec(c, "INSERT INTO kv (k, v) VALUES ('kept', 1)", &err), 0);
    assert_int_equal(qn_tx_commit(c, &err), 0);
    /* A statement left mid-iteration is reset on release (else its read
     * snapshot would stay open). */
    st = qn_prepare(c, "SELECT k FROM kv", &err);
    assert_int_equal(qn_step(st, &err), 1);
    qn_store_release(db, c);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM kv WHERE k = 'rb'"), 0);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM kv WHERE k = 'kept'"), 1);
    qn_store_close(db);
}

static void test_busy(void **state)
{
    (void)state;
    qn_err err;
    char burl[1100];
    url_with(burl, sizeof burl, "busy_timeout=200");
    qn_store *db = qn_store_open(burl, migs, NMIGS, &err);
    if (!db)
        fail_msg("%s", err.msg);
    /* Another writer (another store on the same database, as another
     * process would be) holds the write lock. */
    qn_store *other = qn_store_open(url, migs, NMIGS, &err);
    assert_non_null(other);
    qn_conn *oc = qn_store_acquire(other, &err);
    assert_int_equal(qn_tx_begin(oc, QN_TX_WRITE, &err), 0);
    assert_int_equal(qn_exec(oc, "INSERT INTO kv (k, v) VALUES ('other', 1)", &err), 0);
    qn_conn *c = qn_store_acquire(db, &err);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(qn_tx_begin(c, QN_TX_WRITE, &err), QN_UNAVAILABLE);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double waited = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(waited >= 0.15 && waited < 3.0); /* waited for the timeout, then gave up */
    /* Readers are not blocked by a writer, and do not see its work. */
    assert_int_equal(qn_tx_begin(c, QN_TX_READ, &err), 0);
    qn_stmt *st = qn_prepare(c, "SELECT COUNT(*) FROM kv", &err);
    assert_int_equal(qn_step(st, &err), 1);
    assert_int_equal(qn_col_int64(st, 0), 0);
    assert_int_equal(qn_step(st, &err), 0); /* a pending SELECT would pin its snapshot */
    qn_tx_rollback(c);
    /* Once the other writer finishes, writing works. */
    assert_int_equal(qn_tx_commit(oc, &err), 0);
    assert_int_equal(qn_tx_begin(c, QN_TX_WRITE, &err), 0);
    st = qn_prepare(c, "SELECT COUNT(*) FROM kv", &err);
    assert_int_equal(qn_step(st, &err), 1);
    assert_int_equal(qn_col_int64(st, 0), 1);
    assert_int_equal(qn_tx_commit(c, &err), 0);
    qn_store_release(db, c);
    qn_store_release(other, oc);
    qn_store_close(other);
    qn_store_close(db);
}

#define WRITERS 8
#define TX_EACH 200

typedef struct { qn_store *db; int who; int failures; } warg;

static void *writer(void *p)
{
    warg *a = p;
    qn_err err;
    for (int i = 0; i < TX_EACH; i++) {
        qn_conn *c = qn_store_acquire(a->db, &err);
        if (!c) {
            a->failures++;
            continue;
        }
        int rc = qn_tx_begin(c, QN_TX_WRITE, &err);
        qn_stmt *st = NULL;
        int64_t next = 0;
        if (rc == 0 && (st = qn_prepare(c, "SELECT COALESCE(MAX(n), 0) + 1 FROM seq", &err)) &&
            qn_step(st, &err) == 1) {
            next = qn_col_int64(st, 0);
        } else {
            rc = -1;
        }
        if (rc == 0) {
            st = qn_prepare(c, "INSERT INTO seq (n, who) VALUES (?, ?)", &err);
            qn_bind_int64(st, 1, next);
            qn_bind_int64(st, 2, a->who);
            rc = qn_step(st, &err);
        }
        if (rc == 0) {
            st = qn_prepare(c, "UPDATE counter SET n = n + 1 WHERE id = 1", &err);
            rc = qn_step(st, &err);
        }
        if (rc == 0)
            rc = qn_tx_commit(c, &err);
        if (rc != 0) {
            a->failures++;
            fprintf(stderr, "writer %d: %s\n", a->who, err.msg);
        }
        qn_store_release(a->db, c);
    }
    return NULL;
}

static void test_concurrent_writers(void **state)
{
    qn_err err;
    qn_store *db = qn_store_open(url, migs, NMIGS, &err);
    assert_non_null(db);
    pthread_t th[WRITERS];
    warg args[WRITERS];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < WRITERS; i++) {
        args[i] = (warg){db, i, 0};
        pthread_create(&th[i], NULL, writer, &args[i]);
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    print_message("%d write transactions in %.3f s (%.0f tx/s)\n", WRITERS * TX_EACH, secs,
                  WRITERS * TX_EACH / secs);
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(args[i].failures, 0);
    const int64_t total = WRITERS * TX_EACH;
    assert_int_equal(query_int(db, "SELECT n FROM counter WHERE id = 1"), total);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM seq"), total);
    assert_int_equal(query_int(db, "SELECT COUNT(DISTINCT n) FROM seq"), total);
    assert_int_equal(query_int(db, "SELECT MIN(n) FROM seq"), 1);
    assert_int_equal(query_int(db, "SELECT MAX(n) FROM seq"), total); /* no gaps */
    for (int w = 0; w < WRITERS; w++) {
        char sql[80];
        snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM seq WHERE who = %d", w);
        assert_int_equal(query_int(db, sql), TX_EACH);
    }
    qn_store_close(db);
}

/* Two processes open (and migrate) the same new database at the same time:
 * both succeed, and each migration is recorded, and ran, exactly once. */
static void test_two_processes_migrate(void **state)
{
    for (int round = 0; round < 5; round++) {
        setup(state);
        pid_t kids[2];
        for (int k = 0; k < 2; k++) {
            kids[k] = fork();
            assert_true(kids[k] >= 0);
            if (kids[k] == 0) {
                qn_err err;
                qn_store *db = qn_store_open(url, migs, NMIGS, &err);
                if (!db) {
                    fprintf(stderr, "child: %s\n", err.msg);
                    _exit(1);
                }
                int ok = qn_store_version(db) == 3;
                qn_store_close(db);
                _exit(ok ? 0 : 2);
            }
        }
        for (int k = 0; k < 2; k++) {
            int st;
            assert_int_equal(waitpid(kids[k], &st, 0), kids[k]);
            assert_true(WIFEXITED(st));
            assert_int_equal(WEXITSTATUS(st), 0);
        }
        qn_err err;
        qn_store *db = qn_store_open(url, migs, NMIGS, &err);
        assert_non_null(db);
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM schema_migrations"), 3);
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM counter"), 1);
        qn_store_close(db);
    }
}

/* acquire blocks while the pool is exhausted and wakes on release. */
typedef struct { qn_store *db; volatile int got; } parg;

static void *late_acquirer(void *p)
{
    parg *a = p;
    qn_err err;
    qn_conn *c = qn_store_acquire(a->db, &err);
    a->got = 1;
    qn_store_release(a->db, c);
    return NULL;
}

static void test_pool_blocks(void **state)
{
    qn_err err;
    qn_store *db = qn_store_open_pool(url, migs, NMIGS, 2, &err);
    qn_conn *c1 = qn_store_acquire(db, &err);
    qn_conn *c2 = qn_store_acquire(db, &err);
    assert_non_null(c1);
    assert_non_null(c2);
    assert_ptr_not_equal(c1, c2);
    parg a = {db, 0};
    pthread_t th;
    pthread_create(&th, NULL, late_acquirer, &a);
    usleep(100 * 1000);
    assert_int_equal(a.got, 0);
    qn_store_release(db, c1);
    pthread_join(th, NULL);
    assert_int_equal(a.got, 1);
    qn_store_release(db, c2);
    qn_store_close(db);
}

/* ---- PostgreSQL only ---- */

/* Two stores with different schemas in one database: same table names, no
 * clash, no shared rows. A URL without schema= uses the program's name. */
static void test_pg_schemas(void **state)
{
    (void)state;
    qn_err err;
    char url2[1100];
    snprintf(url2, sizeof url2, "%s_other", url);
    qn_store *a = qn_store_open(url, migs, NMIGS, &err);
    qn_store *b = qn_store_open(url2, migs, NMIGS, &err);
    assert_non_null(a);
    assert_non_null(b);
    qn_conn *c = qn_store_acquire(a, &err);
    assert_int_equal(qn_exec(c, "INSERT INTO kv (k, v) VALUES ('only-in-a', 1)", &err), 0);
    qn_store_release(a, c);
    assert_int_equal(query_int(a, "SELECT COUNT(*) FROM kv"), 1);
    assert_int_equal(query_int(b, "SELECT COUNT(*) FROM kv"), 0);
    assert_int_equal(query_int(b, "SELECT COUNT(*) FROM schema_migrations"), 3);
    qn_store_close(a);
    qn_store_close(b);

    /* The default: this program, core_test_store. */
    static const qn_migration none[] = {{1, "CREATE TABLE IF NOT EXISTS d (x INTEGER)"}};
    qn_store *d = qn_store_open(pg_base, none, 1, &err);
    if (!d)
        fail_msg("%s", err.msg);
    c = qn_store_acquire(d, &err);
    qn_stmt *st = qn_prepare(c, "SELECT current_schema()", &err);
    assert_int_equal(qn_step(st, &err), 1);
    assert_string_equal(qn_col_text(st, 0), "core_test_store");
    qn_store_release(d, c);
    qn_store_close(d);
}

/* A statement failing inside a PostgreSQL transaction aborts it: the commit
 * says so (QN_ABORTED) instead of pretending, and nothing is kept. */
static void test_pg_aborted_tx(void **state)
{
    (void)state;
    qn_err err;
    qn_store *db = qn_store_open(url, migs, NMIGS, &err);
    qn_conn *c = qn_store_acquire(db, &err);
    assert_int_equal(qn_tx_begin(c, QN_TX_WRITE, &err), 0);
    assert_int_equal(qn_exec(c, "INSERT INTO kv (k, v) VALUES ('x', 1)", &err), 0);
    assert_int_equal(qn_exec(c, "INSERT INTO kv (k, v) VALUES ('x', 2)", &err), QN_ALREADY_EXISTS);
    /* Every later statement fails, at prepare or at step. */
    qn_stmt *st = qn_prepare(c, "SELECT COUNT(*) FROM kv", &err);
    assert_int_equal(st ? qn_step(st, &err) : err.code, QN_ABORTED);
    assert_int_equal(qn_tx_commit(c, &err), QN_ABORTED);
    qn_store_release(db, c);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM kv"), 0);
    qn_store_close(db);
}

static void server(const char *action)
{
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "%s %s", getenv("QUERN_TEST_PG_CTL"), action);
    assert_int_equal(system(cmd), 0);
}

/* One query on c, counting the QN_UNAVAILABLE answers before it works. */
static int query_after_outage(qn_conn *c, const char *sql, int64_t *v)
{
    qn_err err;
    int unavailable = 0;
    for (int attempt = 0; attempt < 3; attempt++) {
        qn_stmt *st = qn_prepare(c, sql, &err);
        int rc = st ? qn_step(st, &err) : err.code;
        if (rc == 1) {
            *v = qn_col_int64(st, 0);
            return unavailable;
        }
        if (rc != QN_UNAVAILABLE)
            fail_msg("%s: %d %s", sql, rc, err.msg);
        print_message("after the outage: %s\n", err.msg);
        unavailable++;
    }
    fail_msg("%s: still unavailable after %d tries", sql, unavailable);
    return -1;
}

/* The server restarts under a pooled connection: the next call reconnects
 * (at worst after answering QN_UNAVAILABLE once), its prepared statements
 * come back, committed data is kept. A transaction cut by the restart keeps
 * failing until rolled back, then the connection works again. While the
 * server is down, calls answer QN_UNAVAILABLE, and work once it is back. */
static void test_pg_reconnect(void **state)
{
    (void)state;
    qn_err err;
    qn_store *db = qn_store_open_pool(url, migs, NMIGS, 1, &err);
    assert_non_null(db);
    qn_conn *c = qn_store_acquire(db, &err);
    assert_int_equal(qn_exec(c, "INSERT INTO kv (k, v) VALUES ('before', 7)", &err), 0);
    qn_stmt *st = qn_prepare(c, "SELECT v FROM kv WHERE k = 'before'", &err);
    assert_int_equal(qn_step(st, &err), 1);
    qn_store_release(db, c);

    server("restart");
    c = qn_store_acquire(db, &err);
    int64_t v = 0;
    assert_true(query_after_outage(c, "SELECT v FROM kv WHERE k = 'before'", &v) <= 1);
    assert_int_equal(v, 7);
    st = qn_prepare(c, "INSERT INTO kv (k, v) VALUES (?, ?)", &err);
    qn_bind_text(st, 1, "after", -1);
    qn_bind_int64(st, 2, 8);
    assert_int_equal(qn_step(st, &err), 0);

    /* Cut inside a transaction. */
    assert_int_equal(qn_tx_begin(c, QN_TX_WRITE, &err), 0);
    st = qn_prepare(c, "INSERT INTO kv (k, v) VALUES (?, ?)", &err);
    qn_bind_text(st, 1, "cut", -1);
    qn_bind_int64(st, 2, 9);
    assert_int_equal(qn_step(st, &err), 0);
    server("restart");
    for (int i = 0; i < 2; i++) { /* the second time too: not on a new session */
        st = qn_prepare(c, "UPDATE kv SET v = v + 1 WHERE k = 'before'", &err);
        assert_int_equal(st ? qn_step(st, &err) : err.code, QN_UNAVAILABLE);
    }
    assert_true(qn_tx_commit(c, &err) < 0);
    qn_store_release(db, c);
    c = qn_store_acquire(db, &err);
    assert_true(query_after_outage(c, "SELECT COUNT(*) FROM kv WHERE k = 'cut'", &v) <= 1);
    assert_int_equal(v, 0);
    qn_store_release(db, c);
    assert_int_equal(query_int(db, "SELECT v FROM kv WHERE k = 'before'"), 7);
    assert_int_equal(query_int(db, "SELECT v FROM kv WHERE k = 'after'"), 8);

    /* Down for a while. */
    server("stop");
    c = qn_store_acquire(db, &err);
    for (int i = 0; i < 2; i++) {
        st = qn_prepare(c, "SELECT COUNT(*) FROM kv", &err);
        assert_int_equal(st ? qn_step(st, &err) : err.code, QN_UNAVAILABLE);
    }
    assert_non_null(strstr(err.msg, "reconnect failed"));
    assert_int_equal(qn_tx_begin(c, QN_TX_WRITE, &err), QN_UNAVAILABLE);
    qn_store_release(db, c);
    server("start");
    c = qn_store_acquire(db, &err);
    assert_true(query_after_outage(c, "SELECT COUNT(*) FROM kv", &v) <= 1);
    assert_int_equal(v, 2);
    qn_store_release(db, c);
    qn_store_close(db);
}

#define CASE(f) cmocka_unit_test_setup(f, setup)

int main(void)
{
    const struct CMUnitTest contract[] = {
        CASE(test_migrations_once),  CASE(test_migration_failure), CASE(test_bad_urls),
        CASE(test_types_and_errors), CASE(test_statement_cache),   CASE(test_release_rolls_back),
        CASE(test_busy),             CASE(test_concurrent_writers), CASE(test_two_processes_migrate),
        CASE(test_pool_blocks),
    };
    const struct CMUnitTest pg_only[] = {
        CASE(test_pg_schemas),
        CASE(test_pg_aborted_tx),
    };
    const struct CMUnitTest pg_restart[] = {
        CASE(test_pg_reconnect),
    };
    int failed = cmocka_run_group_tests_name("store on sqlite", contract, group_sqlite, NULL);
    pg_base = getenv("QUERN_TEST_PG");
    if (pg_base && *pg_base) {
        failed += cmocka_run_group_tests_name("store on postgres", contract, group_pg, NULL);
        failed += cmocka_run_group_tests_name("postgres only", pg_only, group_pg, NULL);
        if (getenv("QUERN_TEST_PG_CTL"))
            failed += cmocka_run_group_tests_name("postgres restarts", pg_restart, group_pg, NULL);
    }
    return failed;
}
