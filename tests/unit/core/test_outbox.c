/* test_outbox.c - transactional outbox to the bus, and the deduplicating subscriber. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/outbox.h"
#include "core/subscriber.h"

static const qn_migration migs[] = {
    {1, "CREATE TABLE things (n INTEGER);" QN_OUTBOX_SCHEMA QN_INBOX_SCHEMA},
};

typedef struct seen {
    pthread_mutex_t mu;
    int n[64];       /* times each data.n was handled */
    int order[256];
    int norder;
    int fail_first;  /* fail the first delivery of n == fail_first */
} seen;

static int handler(const qn_msg *msg, void *ud, qn_err *err)
{
    seen *s = ud;
    int n = (int)json_integer_value(json_object_get(json_object_get(msg->event, "data"), "n"));
    pthread_mutex_lock(&s->mu);
    if (n == s->fail_first && msg->attempt == 1) {
        pthread_mutex_unlock(&s->mu);
        return qn_err_set(err, QN_UNAVAILABLE, "failing once on purpose");
    }
    s->n[n]++;
    s->order[s->norder++] = n;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int total(seen *s)
{
    pthread_mutex_lock(&s->mu);
    int t = s->norder;
    pthread_mutex_unlock(&s->mu);
    return t;
}

static void wait_for(seen *s, int want)
{
    for (int i = 0; i < 500 && total(s) < want; i++)
        usleep(10000);
}

static void append(qn_store *db, int n, int commit, const char *id)
{
    qn_err err;
    qn_conn *c = qn_store_acquire(db, &err);
    assert_non_null(c);
    assert_int_equal(qn_tx_begin(c, QN_TX_WRITE, &err), 0);
    json_t *ev = qn_event_new("quern.test.happened", "quern-test", json_pack("{s:i}", "n", n), NULL);
    if (id)
        json_object_set_new(ev, "id", json_string(id));
    assert_int_equal(qn_outbox_append(c, ev, &err), 0);
    json_decref(ev);
    if (commit)
        assert_int_equal(qn_tx_commit(c, &err), 0);
    else
        qn_tx_rollback(c);
    qn_store_release(db, c);
}

static void test_outbox_to_subscriber(void **state)
{
    char dir[] = "/tmp/quern-outbox-XXXXXX", dburl[256], busurl[256];
    assert_non_null(mkdtemp(dir));
    snprintf(dburl, sizeof dburl, "sqlite://%s/svc.db", dir);
    snprintf(busurl, sizeof busurl, "sqlite://%s/bus.db", dir);
    qn_err err;
    qn_store *db = qn_store_open(dburl, migs, 1, &err);
    assert_non_null(db);
    qn_bus_opts bo = {.retry_base_ms = 20, .retry_max_ms = 50};
    qn_bus *bus = qn_bus_open(busurl, &bo, &err);
    assert_non_null(bus);
    seen s = {.mu = PTHREAD_MUTEX_INITIALIZER, .fail_first = 3};
    static const char *const pats[] = {"quern.test.*", NULL};
    qn_subscriber *sub = qn_subscriber_start(bus, "tests", pats, db, handler, &s, &err);
    assert_non_null(sub);

    /* Events appended before the publisher starts wait in the table. */
    for (int i = 0; i < 5; i++)
        append(db, i, 1, NULL);
    append(db, 40, 0, NULL); /* rolled back: must never be published */
    qn_metrics *m = qn_metrics_new();
    qn_outbox *ob = qn_outbox_start(db, bus, "quern-test", m, &err);
    assert_non_null(ob);
    for (int i = 5; i < 10; i++) {
        append(db, i, 1, NULL);
        qn_outbox_kick(ob);
    }
    assert_int_equal(qn_outbox_flush(ob, 5000), 0);
    assert_int_equal(qn_outbox_pending(ob), 0);
    wait_for(&s, 10);
    assert_int_equal(total(&s), 10);
    for (int i = 0; i < 10; i++)
        assert_int_equal(s.n[i], 1);
    assert_int_equal(s.n[40], 0);
    /* In order, except 3 which failed once and came back later. */
    int prev = -1;
    for (int k = 0; k < s.norder; k++) {
        if (s.order[k] == 3)
            continue;
        assert_true(s.order[k] > prev);
        prev = s.order[k];
    }

    /* The same event id twice (a publisher that crashed after publishing
     * and before marking): handled once. */
    append(db, 20, 1, "0b6d3ad0-93a4-4e5e-9e32-5d1c3c1b9e01");
    append(db, 20, 1, "0b6d3ad0-93a4-4e5e-9e32-5d1c3c1b9e01-dup");
    qn_outbox_kick(ob);
    wait_for(&s, 12);
    assert_int_equal(s.n[20], 2); /* different ids: both */
    qn_conn *c = qn_store_acquire(db, &err);
    assert_int_equal(qn_inbox_seen(c, "0b6d3ad0-93a4-4e5e-9e32-5d1c3c1b9e01", &err), 1);
    assert_int_equal(qn_inbox_seen(c, "never", &err), 0);
    qn_store_release(db, c);
    json_t *again = qn_event_new("quern.test.happened", "quern-test", json_pack("{s:i}", "n", 21), NULL);
    json_object_set_new(again, "id", json_string("0b6d3ad0-93a4-4e5e-9e32-5d1c3c1b9e01"));
    assert_int_equal(qn_bus_publish(bus, again, &err), 0);
    json_decref(again);
    usleep(300000);
    assert_int_equal(s.n[21], 0);

    qn_buf out;
    qn_buf_init(&out, 1 << 20);
    assert_int_equal(qn_metrics_render(m, &out), 0);
    assert_non_null(strstr(out.data, "quern_outbox_published_total 12"));
    assert_non_null(strstr(out.data, "quern_outbox_pending 0"));
    qn_buf_free(&out);

    qn_subscriber_stop(sub);
    qn_outbox_stop(ob);
    qn_metrics_free(m);
    qn_bus_close(bus);
    qn_store_close(db);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_invalid_event_refused(void **state)
{
    char dir[] = "/tmp/quern-outbox-XXXXXX", dburl[256];
    assert_non_null(mkdtemp(dir));
    snprintf(dburl, sizeof dburl, "sqlite://%s/svc.db", dir);
    qn_err err;
    qn_store *db = qn_store_open(dburl, migs, 1, &err);
    qn_conn *c = qn_store_acquire(db, &err);
    json_t *bad = json_pack("{s:s}", "type", "quern.test.x");
    assert_int_equal(qn_outbox_append(c, bad, &err), QN_INVALID_ARGUMENT);
    json_decref(bad);
    qn_store_release(db, c);
    qn_store_close(db);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outbox_to_subscriber),
        cmocka_unit_test(test_invalid_event_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
