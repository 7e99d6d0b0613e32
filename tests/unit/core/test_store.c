/* test_store.c - the SQLite store: migrations (once, idempotent, atomic on
 * failure, safe when two processes open at once), binds and columns of every
 * type, error mapping, gapless sequence numbers under 8 writer threads, busy
 * handling, the statement cache, and release rolling back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/store/store.h"

static char dbpath[512];

/* A fresh database path per test under QUERN_TEST_WORK. */
static int setup(void **state)
{
    static int n;
    const char *work = getenv("QUERN_TEST_WORK");
    snprintf(dbpath, sizeof dbpath, "%s/store_%d_%d.db", work ? work : "/tmp", (int)getpid(),
             n++);
    unlink(dbpath);
    char side[600];
    snprintf(side, sizeof side, "%s-wal", dbpath);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", dbpath);
    unlink(side);
    return 0;
}

static const qn_migration migs[] = {
    {1, "CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL)"},
    {2, "CREATE TABLE seq (n INTEGER PRIMARY KEY, who INTEGER NOT NULL);"
        "CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
        "INSERT INTO counter (id, n) VALUES (1, 0)"},
    {3, "CREATE TABLE vals (i INTEGER, d REAL, t TEXT, b BLOB, z TEXT,"
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

static void test_migrations_once(void **state)
{
    qn_err err;
    qn_store *db = qn_store_open(dbpath, migs, 2, &err);
    assert_non_null(db);
    assert_string_equal(qn_store_backend(db), "sqlite");
    assert_int_equal(qn_store_version(db), 2);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM schema_migrations"), 2);
    qn_store_close(db);

    /* Reopen with one more: only 3 runs. Reopen again: nothing runs (if 2 ran
     * twice, its INSERT would leave two counter rows or fail). */
    char url[600];
    snprintf(url, sizeof url, "sqlite://%s", dbpath);
    for (int i = 0; i < 2; i++) {
        db = qn_store_open(url, migs, NMIGS, &err);
        if (!db)
            fail_msg("%s", err.msg);
        assert_int_equal(qn_store_version(db), 3);
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM schema_migrations"), 3);
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM counter"), 1);
        assert_true(query_int(db, "SELECT MIN(applied_at) FROM schema_migrations") > 1700000000);
        qn_store_close(db);
    }

    /* WAL is on, foreign keys are enforced, synchronous is NORMAL (1). */
    db = qn_store_open(url, migs, NMIGS, &err);
    qn_conn *c = qn_store_acquire(db, &err);
    qn_stmt *st = qn_prepare(c, "PRAGMA journal_mode", &err);
    assert_int_equal(qn_step(st, &err), 1);
    assert_string_equal(qn_col_text(st, 0), "wal");
    st = qn_prepare(c, "PRAGMA synchronous", &err);
    assert_int_equal(qn_step(st, &err), 1);
    assert_int_equal(qn_col_int64(st, 0), 1);
    st = qn_prepare(c, "PRAGMA foreign_keys", &err);
    assert_int_equal(qn_step(st, &err), 1);
    assert_int_equal(qn_col_int64(st, 0), 1);
    st = qn_prepare(c, "INSERT INTO vals (parent) VALUES ('no such key')", &err);
    assert_int_equal(qn_step(st, &err), QN_FAILED_PRECONDITION);
    assert_non_null(strstr(err.msg, "FOREIGN KEY"));
    qn_store_release(db, c);
    qn_store_close(db);

    /* ?synchronous=full is honoured (FULL is 2). */
    snprintf(url, sizeof url, "sqlite://%s?synchronous=full", dbpath);
    db = qn_store_open(url, migs, NMIGS, &err);
    assert_non_null(db);
    assert_int_equal(query_int(db, "PRAGMA synchronous"), 2);
    qn_store_close(db);
}

static void test_migration_failure(void **state)
{
    qn_err err;
    static const qn_migration bad[] = {
        {1, "CREATE TABLE a (x INTEGER)"},
        {2, "CREATE TABLE b (y INTEGER); INSERT INTO b VALUES (1); INSERT INTO nosuch VALUES (1)"},
    };
    qn_store *db = qn_store_open(dbpath, bad, 2, &err);
    assert_null(db);
    assert_int_equal(err.code, QN_INTERNAL);
    assert_non_null(strstr(err.msg, "migration 2"));
    assert_non_null(strstr(err.msg, "nosuch"));

    /* Version 1 stayed, and migration 2 left nothing behind (no table b). */
    db = qn_store_open(dbpath, bad, 1, &err);
    assert_non_null(db);
    assert_int_equal(qn_store_version(db), 1);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'b'"), 0);
    assert_int_equal(query_int(db, "SELECT MAX(version) FROM schema_migrations"), 1);
    qn_store_close(db);

    /* A database newer than the build refuses to open rather than guess. */
    static const qn_migration two[] = {{1, "CREATE TABLE a (x INTEGER)"},
                                       {2, "CREATE TABLE c (z INTEGER)"}};
    db = qn_store_open(dbpath, two, 2, &err);
    assert_non_null(db);
    qn_store_close(db);
    assert_null(qn_store_open(dbpath, two, 1, &err));
    assert_int_equal(err.code, QN_FAILED_PRECONDITION);

    /* Versions out of order are refused. */
    static const qn_migration unordered[] = {{2, "SELECT 1"}, {1, "SELECT 1"}};
    assert_null(qn_store_open(dbpath, unordered, 2, &err));
    assert_int_equal(err.code, QN_INVALID_ARGUMENT);
}

static void test_bad_urls(void **state)
{
    qn_err err;
    assert_null(qn_store_open("mysql://localhost/db", migs, NMIGS, &err));
    assert_int_equal(err.code, QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "mysql"));
    char url[600];
    snprintf(url, sizeof url, "sqlite://%s?synchronous=sometimes", dbpath);
    assert_null(qn_store_open(url, migs, NMIGS, &err));
    assert_int_equal(err.code, QN_INVALID_ARGUMENT);
    snprintf(url, sizeof url, "sqlite://%s?color=blue", dbpath);
    assert_null(qn_store_open(url, migs, NMIGS, &err));
    assert_int_equal(err.code, QN_INVALID_ARGUMENT);
    assert_null(qn_store_open("sqlite:///nonexistent-dir/x/y.db", migs, NMIGS, &err));
    assert_int_equal(err.code, QN_INTERNAL);
}

static void test_types_and_errors(void **state)
{
    qn_err err;
    qn_store *db = qn_store_open(dbpath, migs, NMIGS, &err);
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

    st = qn_prepare(c, "SELECT i, d, t, b, z FROM vals ORDER BY rowid", &err);
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
    assert_non_null(strstr(err.msg, "UNIQUE"));
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
    assert_int_equal(qn_exec(c, "CREATE TABLE e (x); DROP TABLE e", &err), 0);
    assert_int_equal(qn_exec(c, "INSERT INTO kv (k, v) VALUES ('a', 9)", &err),
                     QN_ALREADY_EXISTS);
    qn_store_release(db, c);
    qn_store_close(db);
}

static void test_statement_cache(void **state)
{
    qn_err err;
    qn_store *db = qn_store_open_pool(dbpath, migs, NMIGS, 1, &err);
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
    qn_store_release(db, c2);
    qn_store_close(db);
}

static void test_release_rolls_back(void **state)
{
    qn_err err;
    qn_store *db = qn_store_open_pool(dbpath, migs, NMIGS, 2, &err);
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
    qn_err err;
    char url[600];
    snprintf(url, sizeof url, "sqlite://%s?busy_timeout=200", dbpath);
    qn_store *db = qn_store_open(url, migs, NMIGS, &err);
    assert_non_null(db);
    /* Another writer (a raw connection, as another process would be) holds
     * the write lock. */
    sqlite3 *other;
    assert_int_equal(sqlite3_open(dbpath, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    qn_conn *c = qn_store_acquire(db, &err);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(qn_tx_begin(c, QN_TX_WRITE, &err), QN_UNAVAILABLE);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double waited = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(waited >= 0.15 && waited < 3.0); /* waited for the timeout, then gave up */
    /* Readers are not blocked by a writer in WAL mode. */
    assert_int_equal(qn_tx_begin(c, QN_TX_READ, &err), 0);
    qn_stmt *st = qn_prepare(c, "SELECT COUNT(*) FROM kv", &err);
    assert_int_equal(qn_step(st, &err), 1);
    qn_tx_rollback(c);
    /* Once the other writer finishes, writing works. */
    assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(qn_tx_begin(c, QN_TX_WRITE, &err), 0);
    assert_int_equal(qn_tx_commit(c, &err), 0);
    qn_store_release(db, c);
    sqlite3_close(other);
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
    qn_store *db = qn_store_open(dbpath, migs, NMIGS, &err);
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
                qn_store *db = qn_store_open(dbpath, migs, NMIGS, &err);
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
        qn_store *db = qn_store_open(dbpath, migs, NMIGS, &err);
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
    qn_store *db = qn_store_open_pool(dbpath, migs, NMIGS, 2, &err);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_migrations_once, setup),
        cmocka_unit_test_setup(test_migration_failure, setup),
        cmocka_unit_test_setup(test_bad_urls, setup),
        cmocka_unit_test_setup(test_types_and_errors, setup),
        cmocka_unit_test_setup(test_statement_cache, setup),
        cmocka_unit_test_setup(test_release_rolls_back, setup),
        cmocka_unit_test_setup(test_busy, setup),
        cmocka_unit_test_setup(test_concurrent_writers, setup),
        cmocka_unit_test_setup(test_two_processes_migrate, setup),
        cmocka_unit_test_setup(test_pool_blocks, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
