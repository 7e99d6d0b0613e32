/* test_bus.c - the bus contract: one suite run against sqlite://<tmp> always,
 * and against amqp://... when QUERN_TEST_AMQP holds a broker URL (as
 * tests/unit/core/run_bus_amqp.sh does with a private rabbitmq-server).
 *
 * Each test uses topics and groups of its own (the broker keeps queues from
 * one test to the next), and asserts what would be false if the bus lost,
 * duplicated or misrouted a message: every group gets every message,
 * competing consumers never both get one, a nack or a killed consumer
 * redelivers with attempt + 1 no sooner than the delay, a poison message ends
 * in <topic>.dead after max_attempts, a batch arrives whole, envelopes and
 * traceparent survive the trip, and a message published by another process
 * arrives. With QUERN_TEST_AMQP_RESTART (a command that kills and restarts
 * the broker) the broker-restart test runs too: no confirmed message lost. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/bus/bus.h"
#include "core/json.h"
#include "core/trace.h"

static const char *amqp_url; /* NULL: sqlite only */
static char url[600];        /* the backend of the current run */
static char dbfile[512];
static char ns[64];          /* unique prefix for topics and groups */
static int is_amqp;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int setup(void **state)
{
    static int n;
    char id[QN_UUID_LEN + 1];
    qn_uuid4(id);
    snprintf(ns, sizeof ns, "t%.8s%d", id, n++);
    if (is_amqp) {
        snprintf(url, sizeof url, "%s", amqp_url);
    } else {
        const char *work = getenv("QUERN_TEST_WORK");
        snprintf(dbfile, sizeof dbfile, "%s/bus_%d_%s.db", work ? work : "/tmp", (int)getpid(), ns);
        snprintf(url, sizeof url, "sqlite://%s", dbfile);
    }
    return 0;
}

static int teardown(void **state)
{
    if (!is_amqp) {
        char side[600];
        unlink(dbfile);
        snprintf(side, sizeof side, "%s-wal", dbfile);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", dbfile);
        unlink(side);
    }
    return 0;
}

/* "quern.<ns>.<suffix>" */
static const char *topic(const char *suffix)
{
    static char buf[8][128];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 128, "quern.%s.%s", ns, suffix);
    return b;
}

static const char *group(const char *suffix)
{
    static char buf[8][80];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 80, "%s_%s", ns, suffix);
    return b;
}

static qn_bus *open_bus(const qn_bus_opts *o)
{
    qn_err err;
    qn_bus *bus = qn_bus_open(url, o, &err);
    if (!bus)
        fail_msg("open %s: %s", url, err.msg);
    return bus;
}

static qn_consumer *sub1(qn_bus *bus, const char *g, const char *pattern)
{
    qn_err err;
    const char *pats[] = {pattern, NULL};
    qn_consumer *c = qn_bus_subscribe(bus, g, pats, &err);
    if (!c)
        fail_msg("subscribe %s: %s", g, err.msg);
    return c;
}

/* Publishes an event of topic t with data {"n": n}; returns its id (static). */
static const char *pub(qn_bus *bus, const char *t, int n)
{
    static char id[8][64];
    static int k;
    qn_err err;
    json_t *ev = qn_event_new(t, "quern-test", json_pack("{s:i}", "n", n), NULL);
    assert_non_null(ev);
    char *out = id[k++ % 8];
    snprintf(out, 64, "%s", json_string_value(json_object_get(ev, "id")));
    int rc = qn_bus_publish(bus, ev, &err);
    json_decref(ev);
    if (rc != 0)
        fail_msg("publish: %s", err.msg);
    return out;
}

static qn_msg *recv_ok(qn_consumer *c, int timeout_ms)
{
    qn_err err;
    qn_msg *m = NULL;
    int rc = qn_consumer_receive(c, timeout_ms, &m, &err);
    if (rc < 0)
        fail_msg("receive: %s", err.msg);
    if (rc == 0)
        fail_msg("receive: nothing within %d ms", timeout_ms);
    return m;
}

static void expect_nothing(qn_consumer *c, int timeout_ms)
{
    qn_err err;
    qn_msg *m = NULL;
    int rc = qn_consumer_receive(c, timeout_ms, &m, &err);
    if (rc == 1)
        fail_msg("unexpected message %s (%s, attempt %d)", m->id, m->topic, m->attempt);
    assert_int_equal(rc, 0);
}

static int msg_n(const qn_msg *m)
{
    return (int)json_integer_value(json_object_get(json_object_get(m->event, "data"), "n"));
}

static void ack(qn_consumer *c, qn_msg *m)
{
    qn_err err;
    if (qn_consumer_ack(c, m, &err) != 0)
        fail_msg("ack: %s", err.msg);
    qn_msg_free(m);
}

/* --- the contract ------------------------------------------------------- */

static void test_publish_consume_ack(void **state)
{
    qn_bus_opts o = {.visibility_ms = 300};
    qn_bus *bus = open_bus(&o);
    qn_consumer *c = sub1(bus, group("a"), topic("thing.made"));
    const char *id0 = pub(bus, topic("thing.made"), 0);
    char first[64];
    snprintf(first, sizeof first, "%s", id0);
    pub(bus, topic("thing.made"), 1);
    pub(bus, topic("other.made"), 2); /* not subscribed */
    int seen = 0;
    for (int i = 0; i < 2; i++) {
        qn_msg *m = recv_ok(c, 5000);
        assert_string_equal(m->topic, topic("thing.made"));
        assert_int_equal(m->attempt, 1);
        if (msg_n(m) == 0)
            assert_string_equal(m->id, first);
        seen |= 1 << msg_n(m);
        ack(c, m);
    }
    assert_int_equal(seen, 3);
    /* acked: nothing comes back, even after the lease would have run out */
    expect_nothing(c, 800);
    qn_consumer_close(c);
    qn_bus_close(bus);
}

static void test_two_groups_each_get_all(void **state)
{
    qn_bus *bus = open_bus(NULL);
    qn_consumer *a = sub1(bus, group("a"), topic("x"));
    qn_consumer *b = sub1(bus, group("b"), topic("#"));
    enum { N = 20 };
    for (int i = 0; i < N; i++)
        pub(bus, topic("x"), i);
    qn_consumer *cs[] = {a, b};
    for (int k = 0; k < 2; k++) {
        int got[N] = {0};
        for (int i = 0; i < N; i++) {
            qn_msg *m = recv_ok(cs[k], 5000);
            got[msg_n(m)]++;
            ack(cs[k], m);
        }
        for (int i = 0; i < N; i++)
            assert_int_equal(got[i], 1);
        expect_nothing(cs[k], 200);
    }
    qn_consumer_close(a);
    qn_consumer_close(b);
    qn_bus_close(bus);
}

typedef struct {
    qn_consumer *c;
    int *got;     /* shared; counts per n */
    int count;    /* this consumer */
    int total;
    pthread_mutex_t *mu;
    int *done;
} comp_arg;

static int compete_ack_failures; /* under comp_arg.mu */

static void *compete(void *p)
{
    comp_arg *a = p;
    for (;;) {
        pthread_mutex_lock(a->mu);
        int d = *a->done >= a->total;
        pthread_mutex_unlock(a->mu);
        if (d)
            break;
        qn_err err;
        qn_msg *m = NULL;
        int rc = qn_consumer_receive(a->c, 200, &m, &err);
        if (rc <= 0)
            continue;
        int n = msg_n(m);
        /* slow handler, so that the other consumer gets its share */
        usleep(500);
        int arc = qn_consumer_ack(a->c, m, &err);
        qn_msg_free(m);
        pthread_mutex_lock(a->mu);
        if (arc < 0) /* asserted on the main thread: cmocka cannot fail from here */
            compete_ack_failures++;
        a->got[n]++;
        (*a->done)++;
        pthread_mutex_unlock(a->mu);
        a->count++;
    }
    return NULL;
}

static void test_competing_consumers_split(void **state)
{
    qn_bus_opts o = {.prefetch = 4};
    qn_bus *bus = open_bus(&o);
    enum { N = 300 };
    qn_consumer *c1 = sub1(bus, group("w"), topic("job"));
    qn_consumer *c2 = sub1(bus, group("w"), topic("job"));
    json_t *evs[N];
    for (int i = 0; i < N; i++)
        evs[i] = qn_event_new(topic("job"), "quern-test", json_pack("{s:i}", "n", i), NULL);
    qn_err err;
    assert_int_equal(qn_bus_publish_batch(bus, evs, N, &err), 0);
    for (int i = 0; i < N; i++)
        json_decref(evs[i]);
    int got[N] = {0}, done = 0;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    comp_arg a1 = {c1, got, 0, N, &mu, &done}, a2 = {c2, got, 0, N, &mu, &done};
    pthread_t t1, t2;
    int64_t t0 = mono_ms();
    pthread_create(&t1, NULL, compete, &a1);
    pthread_create(&t2, NULL, compete, &a2);
    while (mono_ms() - t0 < 20000) {
        pthread_mutex_lock(&mu);
        int d = done;
        pthread_mutex_unlock(&mu);
        if (d >= N)
            break;
        usleep(10000);
    }
    pthread_mutex_lock(&mu);
    done = N; /* stop both */
    pthread_mutex_unlock(&mu);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    for (int i = 0; i < N; i++)
        if (got[i] != 1)
            fail_msg("message %d delivered %d times", i, got[i]);
    assert_int_equal(compete_ack_failures, 0);
    assert_int_equal(a1.count + a2.count, N);
    assert_true(a1.count > 0);
    assert_true(a2.count > 0);
    qn_consumer_close(c1);
    qn_consumer_close(c2);
    qn_bus_close(bus);
}

static void test_nack_redelivers_with_growing_delay(void **state)
{
    qn_bus_opts o = {.retry_base_ms = 300, .max_attempts = 5};
    qn_bus *bus = open_bus(&o);
    qn_consumer *c = sub1(bus, group("r"), topic("retry"));
    const char *id = pub(bus, topic("retry"), 7);
    char want[64];
    snprintf(want, sizeof want, "%s", id);
    qn_err err;
    int64_t delays[3];
    for (int attempt = 1; attempt <= 3; attempt++) {
        qn_msg *m = recv_ok(c, 10000);
        assert_string_equal(m->id, want);
        assert_int_equal(m->attempt, attempt);
        if (attempt == 3) {
            ack(c, m);
            break;
        }
        int64_t t0 = mono_ms();
        assert_int_equal(qn_consumer_nack(c, m, &err), 0);
        qn_msg_free(m);
        /* nothing before the delay (300 ms, then 600 ms), less 50 ms slack */
        expect_nothing(c, (int)(300 * (1 << (attempt - 1))) - 50);
        delays[attempt] = mono_ms() - t0;
    }
    (void)delays;
    expect_nothing(c, 300);
    qn_consumer_close(c);
    qn_bus_close(bus);
}

/* A consumer process receives a message and dies without acking: the group
 * gets it again, as attempt 2. */
static void test_killed_consumer_redelivers(void **state)
{
    qn_bus_opts o = {.visibility_ms = 500};
    qn_bus *bus = open_bus(&o);
    const char *g = group("k");
    qn_consumer_close(sub1(bus, g, topic("kill"))); /* the group exists from here on */
    char want[64];
    snprintf(want, sizeof want, "%s", pub(bus, topic("kill"), 1));
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        qn_err err;
        qn_bus *cb = qn_bus_open(url, &o, &err);
        if (!cb)
            _exit(2);
        const char *pats[] = {topic("kill"), NULL};
        qn_consumer *cc = qn_bus_subscribe(cb, g, pats, &err);
        qn_msg *m = NULL;
        if (!cc || qn_consumer_receive(cc, 10000, &m, &err) != 1)
            _exit(3);
        _exit(strcmp(m->id, want) == 0 && m->attempt == 1 ? 0 : 4); /* no ack, no close */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    qn_consumer *c = sub1(bus, g, topic("kill"));
    qn_msg *m = recv_ok(c, 10000);
    assert_string_equal(m->id, want);
    assert_int_equal(m->attempt, 2);
    ack(c, m);
    expect_nothing(c, 800);
    qn_consumer_close(c);
    qn_bus_close(bus);
}

static int render_has(qn_metrics *m, const char *needle)
{
    qn_buf out;
    qn_buf_init(&out, 1 << 20);
    assert_int_equal(qn_metrics_render(m, &out), 0);
    int has = strstr(out.data, needle) != NULL;
    if (!has)
        fprintf(stderr, "metrics lack %s:\n%s\n", needle, out.data);
    qn_buf_free(&out);
    return has;
}

static void test_poison_dead_lettered(void **state)
{
    qn_metrics *mx = qn_metrics_new();
    qn_bus_opts o = {.metrics = mx, .max_attempts = 3, .retry_base_ms = 50};
    qn_bus *bus = open_bus(&o);
    qn_consumer *c = sub1(bus, group("p"), topic("poison"));
    qn_consumer *all = sub1(bus, group("all"), "quern.#"); /* never sees dead letters */
    char dead_pat[160];
    snprintf(dead_pat, sizeof dead_pat, "%s.dead", topic("#"));
    qn_consumer *d = sub1(bus, group("d"), dead_pat);
    char want[64];
    snprintf(want, sizeof want, "%s", pub(bus, topic("poison"), 9));
    qn_err err;
    for (int attempt = 1; attempt <= 3; attempt++) {
        qn_msg *m = recv_ok(c, 5000);
        assert_int_equal(m->attempt, attempt);
        assert_int_equal(qn_consumer_nack(c, m, &err), 0);
        qn_msg_free(m);
    }
    expect_nothing(c, 500);
    qn_msg *m = recv_ok(d, 5000);
    char dt[160];
    snprintf(dt, sizeof dt, "%s.dead", topic("poison"));
    assert_string_equal(m->topic, dt);
    assert_string_equal(m->id, want);
    assert_string_equal(json_string_value(json_object_get(m->event, "type")), topic("poison"));
    assert_int_equal(msg_n(m), 9);
    ack(d, m);
    m = recv_ok(all, 5000); /* the original only */
    assert_string_equal(m->topic, topic("poison"));
    ack(all, m);
    expect_nothing(all, 300);
    char needle[256];
    snprintf(needle, sizeof needle, "quern_bus_dead_lettered_total{topic=\"%s\",group=\"%s\"} 1",
             topic("poison"), group("p"));
    assert_true(render_has(mx, needle));
    snprintf(needle, sizeof needle, "quern_bus_redelivered_total{topic=\"%s\",group=\"%s\"} 2",
             topic("poison"), group("p"));
    assert_true(render_has(mx, needle));
    qn_consumer_close(c);
    qn_consumer_close(all);
    qn_consumer_close(d);
    qn_bus_close(bus);
    qn_metrics_free(mx);
}

static void test_batch_publish(void **state)
{
    qn_metrics *mx = qn_metrics_new();
    qn_bus_opts o = {.metrics = mx};
    qn_bus *bus = open_bus(&o);
    qn_consumer *c = sub1(bus, group("b"), topic("batch"));
    enum { N = 1000 };
    json_t *evs[N];
    for (int i = 0; i < N; i++)
        evs[i] = qn_event_new(topic("batch"), "quern-test", json_pack("{s:i}", "n", i), NULL);
    qn_err err;
    /* one bad envelope: nothing of the batch goes out */
    json_t *bad = evs[500];
    evs[500] = json_pack("{s:s}", "specversion", "1.0");
    assert_int_equal(qn_bus_publish_batch(bus, evs, N, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "event 500"));
    json_decref(evs[500]);
    evs[500] = bad;
    expect_nothing(c, 300);
    assert_int_equal(qn_bus_publish_batch(bus, evs, N, &err), 0);
    static int got[N];
    memset(got, 0, sizeof got);
    for (int i = 0; i < N; i++) {
        qn_msg *m = recv_ok(c, 5000);
        int n = msg_n(m);
        assert_true(n >= 0 && n < N);
        assert_string_equal(m->id, json_string_value(json_object_get(evs[n], "id")));
        got[n]++;
        ack(c, m);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(got[i], 1);
    for (int i = 0; i < N; i++)
        json_decref(evs[i]);
    char needle[256];
    snprintf(needle, sizeof needle, "quern_bus_published_total{topic=\"%s\"} 1000",
             topic("batch"));
    assert_true(render_has(mx, needle));
    snprintf(needle, sizeof needle, "quern_bus_consumed_total{topic=\"%s\",group=\"%s\"} 1000",
             topic("batch"), group("b"));
    assert_true(render_has(mx, needle));
    qn_consumer_close(c);
    qn_bus_close(bus);
    qn_metrics_free(mx);
}

static void test_envelope_and_traceparent(void **state)
{
    qn_bus *bus = open_bus(NULL);
    qn_consumer *c = sub1(bus, group("e"), topic("env"));
    qn_trace_ctx tc;
    qn_trace_new(&tc);
    char tp[QN_TRACEPARENT_LEN + 1];
    qn_traceparent_format(&tc, tp);
    json_t *ev = qn_event_new(topic("env"), "quern-registry",
                              json_pack("{s:s, s:[i,i], s:{s:f}}", "model", "churn", "v", 1, 2,
                                        "m", "auc", 0.5),
                              tp);
    assert_non_null(ev);
    assert_string_equal(json_string_value(json_object_get(ev, "specversion")), "1.0");
    const char *id = json_string_value(json_object_get(ev, "id"));
    assert_int_equal(strlen(id), 36);
    assert_int_equal(id[14], '4'); /* UUID version 4 */
    assert_true(strchr("89ab", id[19]) != NULL);
    const char *t = json_string_value(json_object_get(ev, "time"));
    assert_int_equal(strlen(t), 24); /* 2026-11-28T13:30:00.123Z */
    assert_int_equal(t[10], 'T');
    assert_int_equal(t[23], 'Z');
    assert_string_equal(json_string_value(json_object_get(ev, "datacontenttype")),
                        "application/json");
    qn_err err;
    assert_int_equal(qn_bus_publish(bus, ev, &err), 0);
    qn_msg *m = recv_ok(c, 5000);
    assert_true(json_equal(m->event, ev));
    assert_string_equal(json_string_value(json_object_get(m->event, "traceparent")), tp);
    ack(c, m);
    json_decref(ev);

    /* the publisher refuses what a consumer would refuse */
    static const char *const bad[] = {
        "{\"specversion\":\"0.3\",\"id\":\"1\",\"source\":\"s\",\"type\":\"a.b\"}",
        "{\"specversion\":\"1.0\",\"source\":\"s\",\"type\":\"a.b\"}",
        "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"a..b\"}",
        "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"a.b.dead\"}",
        "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"a.*\"}",
        "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"a\",\"data\":[1]}",
        "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"a\",\"traceparent\":\"x\"}",
        "{\"specversion\":\"1.0\",\"id\":7,\"source\":\"s\",\"type\":\"a\"}",
        "[1]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *v = json_loads(bad[i], 0, NULL);
        assert_non_null(v);
        if (qn_bus_publish(bus, v, &err) != QN_INVALID_ARGUMENT)
            fail_msg("accepted %s", bad[i]);
        json_t *out = NULL;
        assert_int_equal(qn_event_parse(bad[i], strlen(bad[i]), 0, &out, &err),
                         QN_INVALID_ARGUMENT);
        assert_null(out);
        json_decref(v);
    }
    expect_nothing(c, 200);
    qn_consumer_close(c);
    qn_bus_close(bus);
}

static void test_patterns_route(void **state)
{
    qn_bus *bus = open_bus(NULL);
    char star[160], hash[160];
    snprintf(star, sizeof star, "quern.%s.model.*", ns);
    snprintf(hash, sizeof hash, "quern.%s.#", ns);
    qn_consumer *s = sub1(bus, group("star"), star);
    qn_consumer *h = sub1(bus, group("hash"), hash);
    pub(bus, topic("model.promoted"), 1);
    pub(bus, topic("model.promoted.late"), 2);
    pub(bus, topic("drift.detected"), 3);
    qn_msg *m = recv_ok(s, 5000);
    assert_int_equal(msg_n(m), 1);
    ack(s, m);
    expect_nothing(s, 300);
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        m = recv_ok(h, 5000);
        seen |= 1 << msg_n(m);
        ack(h, m);
    }
    assert_int_equal(seen, 0xe);
    qn_consumer_close(s);
    qn_consumer_close(h);
    qn_bus_close(bus);
}

/* Another process publishes while this one consumes. */
static void test_multi_process(void **state)
{
    qn_bus *bus = open_bus(NULL);
    qn_consumer *c = sub1(bus, group("mp"), topic("mp"));
    enum { N = 500, B = 50 };
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        qn_err err;
        qn_bus *pb = qn_bus_open(url, NULL, &err);
        if (!pb)
            _exit(2);
        for (int b = 0; b < N / B; b++) {
            json_t *evs[B];
            for (int i = 0; i < B; i++)
                evs[i] = qn_event_new(topic("mp"), "quern-child",
                                      json_pack("{s:i}", "n", b * B + i), NULL);
            if (qn_bus_publish_batch(pb, evs, B, &err) != 0)
                _exit(3);
            for (int i = 0; i < B; i++)
                json_decref(evs[i]);
            usleep(2000);
        }
        qn_bus_close(pb);
        _exit(0);
    }
    static int got[N];
    memset(got, 0, sizeof got);
    for (int i = 0; i < N; i++) {
        qn_msg *m = recv_ok(c, 10000);
        assert_string_equal(json_string_value(json_object_get(m->event, "source")), "quern-child");
        got[msg_n(m)]++;
        ack(c, m);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(got[i], 1);
    qn_consumer_close(c);
    qn_bus_close(bus);
}

/* --- sqlite only -------------------------------------------------------- */

/* The lease: a message received and not acked comes back after the
 * visibility timeout; the late ack is refused (QN_ABORTED). */
static void test_sqlite_lease_expiry(void **state)
{
    qn_bus_opts o = {.visibility_ms = 300};
    qn_bus *bus = open_bus(&o);
    qn_consumer *c = sub1(bus, group("l"), topic("lease"));
    pub(bus, topic("lease"), 1);
    qn_msg *m1 = recv_ok(c, 5000);
    int64_t t0 = mono_ms();
    qn_msg *m2 = recv_ok(c, 5000);
    assert_true(mono_ms() - t0 >= 250);
    assert_string_equal(m1->id, m2->id);
    assert_int_equal(m2->attempt, 2);
    qn_err err;
    assert_int_equal(qn_consumer_ack(c, m1, &err), QN_ABORTED);
    ack(c, m2);
    qn_msg_free(m1);
    qn_consumer_close(c);
    qn_bus_close(bus);
}

/* Garbage in the table (a writer that bypassed the API) never reaches a
 * handler: it goes to <topic>.dead at once. */
static void test_sqlite_invalid_envelope_dead(void **state)
{
    qn_bus *bus = open_bus(NULL);
    qn_consumer *c = sub1(bus, group("g"), topic("junk"));
    char dead_pat[160];
    snprintf(dead_pat, sizeof dead_pat, "%s.dead", topic("junk"));
    qn_consumer *d = sub1(bus, group("d"), dead_pat);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(dbfile, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO bus_messages (id, topic, body, published_at)"
             " VALUES ('x', '%s', '{\"not\":\"an event\"}', 0)",
             topic("junk"));
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    pub(bus, topic("junk"), 5);
    qn_msg *m = recv_ok(c, 5000);
    assert_int_equal(msg_n(m), 5);
    ack(c, m);
    qn_err err;
    m = NULL;
    int64_t t0 = mono_ms();
    int rc = 0;
    while (rc == 0 && mono_ms() - t0 < 5000)
        rc = qn_consumer_receive(d, 200, &m, &err);
    /* the junk is not a valid envelope, so the dead-letter group cannot
     * return it either: it moves on to <topic>.dead.dead */
    assert_int_equal(rc, 0);
    assert_int_equal(sqlite3_open(dbfile, &db), SQLITE_OK);
    sqlite3_stmt *st;
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM bus_messages WHERE topic = '%s.dead'",
             topic("junk"));
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
    qn_consumer_close(c);
    qn_consumer_close(d);
    qn_bus_close(bus);
}

static void test_sqlite_retention_sweep(void **state)
{
    qn_bus_opts o = {.retention_ms = 1};
    qn_bus *bus = open_bus(&o);
    qn_consumer *c = sub1(bus, group("s"), topic("old"));
    for (int i = 0; i < 5; i++)
        pub(bus, topic("old"), i);
    for (int i = 0; i < 4; i++)
        ack(c, recv_ok(c, 5000));
    qn_msg *held = recv_ok(c, 5000); /* n = 4, not acked */
    usleep(1100 * 1000);             /* the sweep runs at most once a second */
    expect_nothing(c, 50);           /* ticks: the sweep */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(dbfile, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM bus_messages", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    /* the 4 acked are gone; the unacked one (also the newest) stays */
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
    ack(c, held);
    qn_consumer_close(c);
    qn_bus_close(bus);
}

static void test_topic_match_table(void **state)
{
    static const struct {
        const char *pat, *topic;
        int want;
    } cases[] = {
        {"quern.model.promoted", "quern.model.promoted", 1},
        {"quern.model.*", "quern.model.promoted", 1},
        {"quern.model.*", "quern.model", 0},
        {"quern.model.*", "quern.model.promoted.x", 0},
        {"quern.#", "quern", 1},
        {"quern.#", "quern.a.b.c", 1},
        {"#", "quern.a", 1},
        {"#.promoted", "quern.model.promoted", 1},
        {"#.promoted", "promoted", 1},
        {"quern.#.promoted", "quern.promoted", 1},
        {"quern.#.promoted", "quern.a.b.promoted", 1},
        {"quern.#.promoted", "quern.a.b.promotedx", 0},
        {"*.*", "a.b", 1},
        {"*.*", "a", 0},
        {"a.#.#.b", "a.b", 1},
        {"quern.#", "quern.model.promoted.dead", 0},
        {"#", "x.dead", 0},
        {"quern.#.dead", "quern.model.promoted.dead", 1},
        {"quern.model.promoted.dead", "quern.model.promoted.dead", 1},
        {"quern.model.promoted", "quern.model.promoted.dead", 0},
        {"quern.model", "quern.modelx", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (qn_topic_match(cases[i].pat, cases[i].topic) != cases[i].want)
            fail_msg("%s ~ %s should be %d", cases[i].pat, cases[i].topic, cases[i].want);
    assert_int_equal(qn_topic_pattern_valid("a.*.#"), 0);
    assert_int_equal(qn_topic_pattern_valid("a..b"), QN_INVALID_ARGUMENT);
    assert_int_equal(qn_topic_pattern_valid("a.b*"), QN_INVALID_ARGUMENT);
    assert_int_equal(qn_topic_pattern_valid(""), QN_INVALID_ARGUMENT);
    qn_err err;
    assert_null(qn_bus_open("redis://x", NULL, &err));
    assert_int_equal(err.code, QN_INVALID_ARGUMENT);
}

/* --- broker restart (amqp, driven by run_bus_amqp.sh) ------------------- */

enum { RN = 3000, RB = 20 };
typedef struct {
    qn_bus *bus;
    char ids[RN][QN_UUID_LEN + 1];
    int confirmed;   /* messages whose publish returned 0 */
    int failures;    /* publish calls that returned QN_UNAVAILABLE */
    pthread_mutex_t mu;
} restart_pub;

static void *restart_publisher(void *p)
{
    restart_pub *r = p;
    for (int b = 0; b < RN / RB; b++) {
        json_t *evs[RB];
        for (int i = 0; i < RB; i++) {
            evs[i] = qn_event_new(topic("restart"), "quern-test",
                                  json_pack("{s:i}", "n", b * RB + i), NULL);
            snprintf(r->ids[b * RB + i], QN_UUID_LEN + 1, "%s",
                     json_string_value(json_object_get(evs[i], "id")));
        }
        qn_err err;
        int rc;
        while ((rc = qn_bus_publish_batch(r->bus, evs, RB, &err)) != 0) {
            /* not known durable: retry the same batch (ids dedupe) */
            pthread_mutex_lock(&r->mu);
            r->failures++;
            pthread_mutex_unlock(&r->mu);
            usleep(100000);
        }
        for (int i = 0; i < RB; i++)
            json_decref(evs[i]);
        pthread_mutex_lock(&r->mu);
        r->confirmed += RB;
        pthread_mutex_unlock(&r->mu);
        usleep(3000);
    }
    return NULL;
}

static void test_amqp_broker_restart(void **state)
{
    const char *cmd = getenv("QUERN_TEST_AMQP_RESTART");
    if (!is_amqp || !cmd || !*cmd)
        skip();
    qn_bus_opts o = {.publish_timeout_ms = 2000};
    qn_bus *bus = open_bus(&o);
    qn_consumer *c = sub1(bus, group("rs"), topic("restart"));
    static restart_pub r;
    memset(&r, 0, sizeof r);
    r.bus = bus;
    pthread_mutex_init(&r.mu, NULL);
    pthread_t t;
    pthread_create(&t, NULL, restart_publisher, &r);
    static unsigned char got[RN];
    memset(got, 0, sizeof got);
    int distinct = 0, restarted = 0, after_restart = 0;
    int64_t t0 = mono_ms();
    for (;;) {
        pthread_mutex_lock(&r.mu);
        int conf = r.confirmed;
        pthread_mutex_unlock(&r.mu);
        if (!restarted && conf >= RN / 3) {
            fprintf(stderr, "restarting the broker after %d confirmed: %s\n", conf, cmd);
            assert_int_equal(system(cmd), 0);
            restarted = 1;
        }
        if (distinct == RN)
            break;
        if (mono_ms() - t0 > 120000)
            fail_msg("after 120 s only %d of %d messages arrived (%d confirmed)", distinct, RN,
                     conf);
        qn_err err;
        qn_msg *m = NULL;
        int rc = qn_consumer_receive(c, 500, &m, &err);
        if (rc < 0)
            fail_msg("receive: %s", err.msg);
        if (rc == 0)
            continue;
        int n = msg_n(m);
        assert_true(n >= 0 && n < RN);
        assert_string_equal(m->id, r.ids[n]);
        if (!got[n]) {
            got[n] = 1;
            distinct++;
            if (restarted)
                after_restart++;
        }
        int arc = qn_consumer_ack(c, m, &err); /* may be QN_ABORTED across the restart */
        if (arc < 0 && arc != QN_ABORTED)
            fail_msg("ack: %s", err.msg);
        qn_msg_free(m);
    }
    pthread_join(t, NULL);
    fprintf(stderr, "restart: %d confirmed, %d publish retries, %d received after restart\n",
            r.confirmed, r.failures, after_restart);
    assert_int_equal(r.confirmed, RN);
    assert_true(after_restart > 0); /* the consumer came back */
    pthread_mutex_destroy(&r.mu);
    qn_consumer_close(c);
    qn_bus_close(bus);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest contract[] = {
        T(test_publish_consume_ack),       T(test_two_groups_each_get_all),
        T(test_competing_consumers_split), T(test_nack_redelivers_with_growing_delay),
        T(test_killed_consumer_redelivers), T(test_poison_dead_lettered),
        T(test_batch_publish),             T(test_envelope_and_traceparent),
        T(test_patterns_route),            T(test_multi_process),
    };
    const struct CMUnitTest sqlite_only[] = {
        T(test_sqlite_lease_expiry),
        T(test_sqlite_invalid_envelope_dead),
        T(test_sqlite_retention_sweep),
        T(test_topic_match_table),
    };
    const struct CMUnitTest amqp_only[] = {
        T(test_amqp_broker_restart),
    };
    int fails = 0;
    amqp_url = getenv("QUERN_TEST_AMQP");
    if (amqp_url && *amqp_url) {
        /* the amqp run (run_bus_amqp.sh): the contract, then the restart */
        is_amqp = 1;
        fails += cmocka_run_group_tests_name("bus contract (amqp)", contract, NULL, NULL);
        fails += cmocka_run_group_tests_name("bus amqp", amqp_only, NULL, NULL);
        return fails;
    }
    fails += cmocka_run_group_tests_name("bus contract (sqlite)", contract, NULL, NULL);
    fails += cmocka_run_group_tests_name("bus sqlite", sqlite_only, NULL, NULL);
    return fails;
}
