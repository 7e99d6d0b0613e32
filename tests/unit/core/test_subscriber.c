/* test_subscriber.c - the transactional mode of event handlers
 * (qn_subscriber_tx): exactly-once changes per event id, rollback on failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/subscriber.h"

static const qn_migration migs[] = {
    {1, "CREATE TABLE things (n INTEGER NOT NULL);" QN_INBOX_SCHEMA},
};

typedef struct body_args {
    int n;      /* the row to insert */
    int fail;   /* fail after inserting */
    int calls;
} body_args;

static int body(qn_conn *c, void *arg, qn_err *err)
{
    body_args *a = arg;
    a->calls++;
    qn_stmt *st = qn_prepare(c, "INSERT INTO things (n) VALUES (?)", err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, a->n);
    int rc = qn_step(st, err);
    if (rc < 0)
        return rc;
    if (a->fail)
        return qn_err_set(err, QN_UNAVAILABLE, "failing on purpose after the insert");
    return 0;
}

static int64_t count_where(qn_store *db, const char *sql, const char *arg)
{
    qn_err err;
    qn_conn *c = qn_store_acquire(db, &err);
    assert_non_null(c);
    qn_stmt *st = qn_prepare(c, sql, &err);
    assert_non_null(st);
    if (arg)
        qn_bind_text(st, 1, arg, -1);
    assert_int_equal(qn_step(st, &err), 1);
    int64_t n = qn_col_int64(st, 0);
    assert_int_equal(qn_step(st, &err), 0);
    qn_store_release(db, c);
    return n;
}

static void test_tx_once_per_id(void **state)
{
    (void)state;
    char dir[] = "/tmp/quern-subscriber-XXXXXX", url[256];
    assert_non_null(mkdtemp(dir));
    snprintf(url, sizeof url, "sqlite://%s/s.db", dir);
    qn_err err;
    qn_store *db = qn_store_open(url, migs, 1, &err);
    assert_non_null(db);

    qn_msg a = {.id = "ev-a", .topic = "quern.test"};
    qn_msg b = {.id = "ev-b", .topic = "quern.test"};
    body_args ok = {.n = 1};
    assert_int_equal(qn_subscriber_tx(db, &a, body, &ok, &err), 0);
    assert_int_equal(ok.calls, 1);
    assert_int_equal(count_where(db, "SELECT COUNT(*) FROM things", NULL), 1);
    assert_int_equal(count_where(db, "SELECT COUNT(*) FROM inbox WHERE id = ?", "ev-a"), 1);

    /* the same id again: acknowledged as a duplicate, the body never runs */
    assert_int_equal(qn_subscriber_tx(db, &a, body, &ok, &err), 1);
    assert_int_equal(ok.calls, 1);
    assert_int_equal(count_where(db, "SELECT COUNT(*) FROM things", NULL), 1);

    /* a failing body: its insert and the inbox mark are rolled back */
    body_args bad = {.n = 2, .fail = 1};
    assert_int_equal(qn_subscriber_tx(db, &b, body, &bad, &err), QN_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "on purpose"));
    assert_int_equal(count_where(db, "SELECT COUNT(*) FROM things WHERE n = 2", NULL), 0);
    assert_int_equal(count_where(db, "SELECT COUNT(*) FROM inbox WHERE id = ?", "ev-b"), 0);

    /* its redelivery runs the body again and commits */
    bad.fail = 0;
    assert_int_equal(qn_subscriber_tx(db, &b, body, &bad, &err), 0);
    assert_int_equal(bad.calls, 2);
    assert_int_equal(count_where(db, "SELECT COUNT(*) FROM things WHERE n = 2", NULL), 1);
    assert_int_equal(count_where(db, "SELECT COUNT(*) FROM inbox WHERE id = ?", "ev-b"), 1);

    qn_store_close(db);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tx_once_per_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
