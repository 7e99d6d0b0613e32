/*
 * test_client.c - the inter-service client (core/client.h) against an
 * in-process qn_http server on a loopback port: the circuit breaker (opens
 * after N failed attempts, fails fast without reaching the server, lets one
 * probe through when half-open, re-opens with a longer cool-down, closes on
 * success, ignores 4xx), retries only when safe, the bound on concurrent
 * calls (measured at the server) and deadlines (slot waiting included), and
 * the metrics that show all this.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/client.h"
#include "core/config.h"
#include "core/http.h"
#include "core/log.h"
#include "core/metrics.h"

/* ---- the upstream ------------------------------------------------------- */

static atomic_int g_fail;      /* 1: /v1/flaky answers 503 */
static atomic_int g_delay_ms;  /* /v1/flaky sleeps this long first */
static atomic_int g_hits;      /* requests that reached /v1/flaky or /v1/missing */
static atomic_int g_now, g_max; /* concurrent requests in /v1/flaky, and the most seen */
static atomic_int g_not_ready; /* 1: /readyz answers 503 not_ready */

static int ready_fn(void *ud, const char **reason)
{
    (void)ud;
    if (!atomic_load(&g_not_ready))
        return 1;
    *reason = "waiting for its model";
    return 0;
}

static int h_flaky(qn_req *req, qn_res *res, void *ud)
{
    atomic_fetch_add(&g_hits, 1);
    int n = atomic_fetch_add(&g_now, 1) + 1;
    int m = atomic_load(&g_max);
    while (n > m && !atomic_compare_exchange_weak(&g_max, &m, n))
        ;
    int d = atomic_load(&g_delay_ms);
    if (d > 0)
        usleep((useconds_t)d * 1000);
    atomic_fetch_sub(&g_now, 1);
    if (atomic_load(&g_fail))
        return qn_res_error(res, QN_UNAVAILABLE, "flaky on purpose");
    return qn_res_json(res, 200, json_pack("{s:b}", "ok", 1));
}

static int h_missing(qn_req *req, qn_res *res, void *ud)
{
    atomic_fetch_add(&g_hits, 1);
    return qn_res_error(res, QN_NOT_FOUND, "no such thing");
}

/* Answers in the form the (first) Accept header names, as ingest's export
 * does: text/x-test when asked for it, else JSON naming what it saw. */
static int h_accept(qn_req *req, qn_res *res, void *ud)
{
    const char *a = qn_req_header(req, "Accept");
    if (a && strcmp(a, "text/x-test") == 0)
        return qn_res_text(res, 200, "text/x-test", "test form", 9);
    return qn_res_json(res, 200, json_pack("{s:s?}", "accept", a));
}

static const qn_route routes[] = {
    {"GET", "/v1/accept", h_accept, 0, 0, NULL},
    {"GET", "/v1/flaky", h_flaky, 0, 0, NULL},
    {"POST", "/v1/flaky", h_flaky, 1024, 0, NULL},
    {"GET", "/v1/missing", h_missing, 0, 0, NULL},
};

typedef struct fixture {
    qn_http *h;
    qn_metrics *server_metrics, *m;
    char base[64];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    qn_err err;
    f->server_metrics = qn_metrics_new();
    f->m = qn_metrics_new();
    qn_http_opts o = {.service = "up", .listen = "127.0.0.1:0", .threads = 12, .routes = routes,
                      .nroutes = QN_NELEM(routes), .metrics = f->server_metrics, .ready = ready_fn};
    f->h = qn_http_start(&o, &err);
    if (!f->h)
        fail_msg("qn_http_start: %s", err.msg);
    snprintf(f->base, sizeof f->base, "http://127.0.0.1:%d", qn_http_port(f->h));
    atomic_store(&g_fail, 0);
    atomic_store(&g_delay_ms, 0);
    atomic_store(&g_hits, 0);
    atomic_store(&g_now, 0);
    atomic_store(&g_max, 0);
    atomic_store(&g_not_ready, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    qn_http_stop(f->h);
    qn_metrics_free(f->server_metrics);
    qn_metrics_free(f->m);
    free(f);
    return 0;
}

static long long ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The rendered metrics hold this exact line. */
static int has_line(qn_metrics *m, const char *line)
{
    qn_buf b;
    qn_buf_init(&b, 1 << 20);
    assert_int_equal(qn_metrics_render(m, &b), 0);
    qn_buf_append(&b, "", 1);
    char want[512];
    snprintf(want, sizeof want, "\n%s\n", line);
    int ok = strstr(b.data, want) != NULL;
    if (!ok)
        print_message("metrics lack \"%s\":\n%s\n", line, b.data);
    qn_buf_free(&b);
    return ok;
}

static qn_client *client(fixture *f, int failures, long cooldown_ms, int retries, int conc, long timeout_ms)
{
    qn_err err;
    qn_client_opts o = {.base_url = f->base, .name = "up", .timeout_ms = timeout_ms, .max_retries = retries,
                        .breaker_failures = failures, .breaker_cooldown_ms = cooldown_ms,
                        .max_concurrency = conc, .metrics = f->m};
    qn_client *c = qn_client_new(&o, &err);
    if (!c)
        fail_msg("qn_client_new: %s", err.msg);
    return c;
}

/* ---- the breaker -------------------------------------------------------- */

static void test_breaker_cycle(void **state)
{
    fixture *f = *state;
    qn_client *c = client(f, 3, 300, -1, 0, 2000);
    qn_err err;
    assert_int_equal(qn_client_json(c, "GET", "/v1/flaky", NULL, NULL, NULL, &err), 200);
    assert_true(has_line(f->m, "quern_circuit_state{upstream=\"up\"} 0"));

    atomic_store(&g_fail, 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(qn_client_json(c, "GET", "/v1/flaky", NULL, NULL, NULL, &err), QN_UNAVAILABLE);
        assert_non_null(strstr(err.msg, "flaky on purpose"));
    }
    assert_int_equal(atomic_load(&g_hits), 4);
    assert_int_equal(qn_client_circuit(c), QN_CIRCUIT_OPEN);
    assert_true(has_line(f->m, "quern_circuit_state{upstream=\"up\"} 1"));

    /* Open: fails fast, the server sees nothing. */
    long long t0 = ms_now();
    for (int i = 0; i < 20; i++) {
        assert_int_equal(qn_client_json(c, "GET", "/v1/flaky", NULL, NULL, NULL, &err), QN_UNAVAILABLE);
        assert_non_null(strstr(err.msg, "circuit open for up; retrying after"));
    }
    assert_true(ms_now() - t0 < 300);
    assert_int_equal(atomic_load(&g_hits), 4);
    assert_true(has_line(f->m, "quern_client_requests_total{upstream=\"up\",outcome=\"circuit_open\"} 20"));
    assert_true(has_line(f->m, "quern_client_requests_total{upstream=\"up\",outcome=\"server_error\"} 3"));

    /* After the cool-down one probe goes out; it fails: open again, for 600 ms now. */
    usleep(350 * 1000);
    assert_int_equal(qn_client_json(c, "GET", "/v1/flaky", NULL, NULL, NULL, &err), QN_UNAVAILABLE);
    assert_int_equal(atomic_load(&g_hits), 5);
    assert_int_equal(qn_client_circuit(c), QN_CIRCUIT_OPEN);
    usleep(350 * 1000); /* past the first cool-down, not the doubled one */
    assert_int_equal(qn_client_json(c, "GET", "/v1/flaky", NULL, NULL, NULL, &err), QN_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "circuit open"));
    assert_int_equal(atomic_load(&g_hits), 5);

    /* The upstream recovers: the next probe closes the circuit. */
    atomic_store(&g_fail, 0);
    usleep(300 * 1000);
    assert_int_equal(qn_client_json(c, "GET", "/v1/flaky", NULL, NULL, NULL, &err), 200);
    assert_int_equal(qn_client_circuit(c), QN_CIRCUIT_CLOSED);
    assert_true(has_line(f->m, "quern_circuit_state{upstream=\"up\"} 0"));
    /* Closed again: the count starts over (two failures do not re-open it). */
    atomic_store(&g_fail, 1);
    for (int i = 0; i < 2; i++)
        assert_int_equal(qn_client_json(c, "GET", "/v1/flaky", NULL, NULL, NULL, &err), QN_UNAVAILABLE);
    assert_int_equal(qn_client_circuit(c), QN_CIRCUIT_CLOSED);
    qn_client_free(c);
}

static void test_breaker_ignores_4xx(void **state)
{
    fixture *f = *state;
    qn_client *c = client(f, 2, 1000, 3, 0, 2000);
    qn_err err;
    for (int i = 0; i < 6; i++)
        assert_int_equal(qn_client_json(c, "GET", "/v1/missing", NULL, NULL, NULL, &err), QN_NOT_FOUND);
    assert_int_equal(atomic_load(&g_hits), 6); /* reached every time, never retried */
    assert_int_equal(qn_client_circuit(c), QN_CIRCUIT_CLOSED);
    assert_true(has_line(f->m, "quern_client_requests_total{upstream=\"up\",outcome=\"client_error\"} 6"));
    qn_client_free(c);
}

/* A 503 from /readyz is an answer ("not ready, because..."): the console
 * polls it on every overview, and counting it would open the circuit of a
 * live service and fail its other reads fast as if it were down. */
static void test_breaker_not_ready_is_an_answer(void **state)
{
    fixture *f = *state;
    qn_client *c = client(f, 2, 1000, 3, 0, 2000);
    qn_err err;
    atomic_store(&g_not_ready, 1);
    for (int i = 0; i < 6; i++) {
        qn_buf out;
        qn_buf_init(&out, 1 << 16);
        char ct[64];
        assert_int_equal(qn_client_forward(c, "GET", i % 2 ? "/readyz?verbose=1" : "/readyz", NULL, NULL, 0, NULL, &out,
                                           ct, sizeof ct, &err), 503);
        qn_buf_append(&out, "", 1);
        assert_non_null(strstr(out.data, "waiting for its model"));
        qn_buf_free(&out);
    }
    assert_int_equal(qn_client_circuit(c), QN_CIRCUIT_CLOSED);
    /* never retried: the server saw each call once (it counts a request
     * once it is sent: give the last one a moment) */
    usleep(200000);
    assert_true(has_line(f->server_metrics,
                         "quern_http_requests_total{route=\"/readyz\",method=\"GET\",code=\"503\"} 6"));
    /* the other reads still reach it */
    assert_int_equal(qn_client_json(c, "GET", "/v1/flaky", NULL, NULL, NULL, &err), 200);
    /* while any other 503 still counts (2 failures open this circuit) */
    atomic_store(&g_fail, 1);
    assert_int_equal(qn_client_json(c, "GET", "/v1/flaky", NULL, NULL, NULL, &err), QN_UNAVAILABLE);
    assert_int_equal(qn_client_circuit(c), QN_CIRCUIT_OPEN);
    qn_client_free(c);
}

/* A connection refused counts as a failure too (the upstream is down). */
static void test_breaker_transport(void **state)
{
    fixture *f = *state;
    qn_err err;
    char dead[64];
    snprintf(dead, sizeof dead, "%s", f->base);
    qn_http_stop(f->h);
    f->h = NULL;
    qn_client_opts o = {.base_url = dead, .name = "gone", .timeout_ms = 2000, .max_retries = -1,
                        .breaker_failures = 2, .breaker_cooldown_ms = 5000, .metrics = f->m};
    qn_client *c = qn_client_new(&o, &err);
    assert_non_null(c);
    for (int i = 0; i < 2; i++)
        assert_int_equal(qn_client_json(c, "GET", "/v1/flaky", NULL, NULL, NULL, &err), QN_UNAVAILABLE);
    assert_int_equal(qn_client_circuit(c), QN_CIRCUIT_OPEN);
    assert_int_equal(qn_client_json(c, "GET", "/v1/flaky", NULL, NULL, NULL, &err), QN_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "circuit open for gone"));
    assert_true(has_line(f->m, "quern_client_requests_total{upstream=\"gone\",outcome=\"unavailable\"} 2"));
    qn_client_free(c);
    /* teardown expects a server */
    qn_http_opts ho = {.service = "up", .listen = "127.0.0.1:0", .threads = 2, .routes = routes,
                       .nroutes = QN_NELEM(routes), .metrics = f->server_metrics};
    f->h = qn_http_start(&ho, &err);
    assert_non_null(f->h);
}

typedef struct caller {
    qn_client *c;
    const char *path;
    int rc;
    long long ms;
    char msg[512];
} caller;

static void *call_thread(void *arg)
{
    caller *k = arg;
    qn_err err;
    long long t0 = ms_now();
    k->rc = qn_client_json(k->c, "GET", k->path, NULL, NULL, NULL, &err);
    k->ms = ms_now() - t0;
    snprintf(k->msg, sizeof k->msg, "%s", k->rc < 0 ? err.msg : "");
    return NULL;
}

/* Half-open lets exactly one call through; the others fail fast meanwhile. */
static void test_half_open_single_probe(void **state)
{
    fixture *f = *state;
    qn_client *c = client(f, 1, 100, -1, 0, 5000);
    qn_err err;
    atomic_store(&g_fail, 1);
    assert_int_equal(qn_client_json(c, "GET", "/v1/flaky", NULL, NULL, NULL, &err), QN_UNAVAILABLE);
    assert_int_equal(qn_client_circuit(c), QN_CIRCUIT_OPEN);
    usleep(150 * 1000);
    atomic_store(&g_fail, 0);
    atomic_store(&g_delay_ms, 400);
    caller probe = {.c = c, .path = "/v1/flaky"};
    pthread_t th;
    pthread_create(&th, NULL, call_thread, &probe);
    usleep(150 * 1000); /* the probe is at the server now */
    assert_int_equal(qn_client_circuit(c), QN_CIRCUIT_HALF_OPEN);
    assert_true(has_line(f->m, "quern_circuit_state{upstream=\"up\"} 2"));
    for (int i = 0; i < 5; i++) {
        assert_int_equal(qn_client_json(c, "GET", "/v1/flaky", NULL, NULL, NULL, &err), QN_UNAVAILABLE);
        assert_non_null(strstr(err.msg, "half-open"));
    }
    pthread_join(th, NULL);
    assert_int_equal(probe.rc, 200);
    assert_int_equal(atomic_load(&g_hits), 2);
    assert_int_equal(qn_client_circuit(c), QN_CIRCUIT_CLOSED);
    atomic_store(&g_delay_ms, 0);
    assert_int_equal(qn_client_json(c, "GET", "/v1/flaky", NULL, NULL, NULL, &err), 200);
    qn_client_free(c);
}

/* ---- retries -------------------------------------------------------------- */

static void test_retries_only_when_safe(void **state)
{
    fixture *f = *state;
    qn_client *c = client(f, -1, 0, 3, 0, 10000);
    qn_err err;
    json_t *body = json_pack("{s:i}", "x", 1);
    atomic_store(&g_fail, 1);

    assert_int_equal(qn_client_json(c, "POST", "/v1/flaky", body, NULL, NULL, &err), QN_UNAVAILABLE);
    assert_int_equal(atomic_load(&g_hits), 1); /* a POST without a key: once */
    assert_true(has_line(f->m, "quern_client_retries_total{upstream=\"up\"} 0"));

    atomic_store(&g_hits, 0);
    assert_int_equal(qn_client_json_idem(c, "POST", "/v1/flaky", body, "key-1", NULL, NULL, &err), QN_UNAVAILABLE);
    assert_int_equal(atomic_load(&g_hits), 4); /* with a key: 1 + 3 retries */

    atomic_store(&g_hits, 0);
    assert_int_equal(qn_client_json(c, "GET", "/v1/flaky", NULL, NULL, NULL, &err), QN_UNAVAILABLE);
    assert_int_equal(atomic_load(&g_hits), 4);
    assert_true(has_line(f->m, "quern_client_retries_total{upstream=\"up\"} 6"));
    /* breaker_failures -1: no circuit, however many failures */
    assert_int_equal(qn_client_circuit(c), QN_CIRCUIT_CLOSED);
    json_decref(body);
    qn_client_free(c);
}

/* ---- concurrency and deadlines ------------------------------------------- */

static void test_concurrency_bound(void **state)
{
    fixture *f = *state;
    qn_client *c = client(f, 0, 0, 0, 2, 10000);
    atomic_store(&g_delay_ms, 150);
    enum { N = 6 };
    caller k[N];
    pthread_t th[N];
    long long t0 = ms_now();
    for (int i = 0; i < N; i++) {
        k[i] = (caller){.c = c, .path = "/v1/flaky"};
        pthread_create(&th[i], NULL, call_thread, &k[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(k[i].rc, 200);
    }
    long long took = ms_now() - t0;
    assert_int_equal(atomic_load(&g_hits), N);
    assert_true(atomic_load(&g_max) <= 2);      /* never more than the bound at the server */
    assert_true(took >= 3 * 150 - 20);           /* six calls, two at a time at most */
    assert_true(has_line(f->m, "quern_client_in_flight{upstream=\"up\"} 0"));
    qn_client_free(c);
}

static void test_deadline(void **state)
{
    fixture *f = *state;
    qn_err err;
    /* A slow answer: the call gives up at its deadline. */
    qn_client *c = client(f, 0, 0, 3, 1, 300);
    atomic_store(&g_delay_ms, 1000);
    long long t0 = ms_now();
    int rc = qn_client_json(c, "GET", "/v1/flaky", NULL, NULL, NULL, &err);
    long long took = ms_now() - t0;
    assert_int_equal(rc, QN_DEADLINE_EXCEEDED);
    assert_true(took >= 250 && took < 800);
    assert_true(has_line(f->m, "quern_client_requests_total{upstream=\"up\",outcome=\"deadline_exceeded\"} 1"));

    /* Waiting for a slot counts against the deadline: one slot, a 250 ms call
     * holds it, a second call (250 ms alone, under its 300 ms deadline) starts
     * behind it and runs out of time. */
    usleep(800 * 1000); /* the server finishes the abandoned request */
    atomic_store(&g_delay_ms, 250);
    caller first = {.c = c, .path = "/v1/flaky"};
    pthread_t th;
    pthread_create(&th, NULL, call_thread, &first);
    usleep(30 * 1000);
    t0 = ms_now();
    rc = qn_client_json(c, "GET", "/v1/flaky", NULL, NULL, NULL, &err);
    took = ms_now() - t0;
    pthread_join(th, NULL);
    assert_int_equal(first.rc, 200);
    assert_int_equal(rc, QN_DEADLINE_EXCEEDED);
    assert_true(took < 600); /* gave up at its deadline, not after the second call's own 250 ms */
    qn_client_free(c);
}

/* qn_client_get_as sends its Accept (the only one) and says which form came;
 * the other calls ask for JSON. */
static void test_get_as(void **state)
{
    fixture *f = *state;
    qn_client *c = client(f, 5, 1000, 0, 4, 5000);
    qn_err err;
    qn_buf b;
    qn_buf_init(&b, 1 << 20);
    char ct[64];
    assert_int_equal(qn_client_get_as(c, "/v1/accept", "text/x-test", NULL, &b, ct, sizeof ct, &err), 200);
    assert_string_equal(ct, "text/x-test");
    assert_int_equal(b.len, 9);
    assert_memory_equal(b.data, "test form", 9);
    qn_buf_reset(&b);
    assert_int_equal(qn_client_get_as(c, "/v1/accept", "text/other", NULL, &b, ct, sizeof ct, &err), 200);
    assert_non_null(strstr(ct, "application/json"));
    assert_non_null(strstr(b.data, "\"text/other\""));
    qn_buf_reset(&b);
    assert_int_equal(qn_client_raw(c, "GET", "/v1/accept", NULL, NULL, 0, NULL, &b, &err), 200);
    assert_non_null(strstr(b.data, "\"application/json\""));
    qn_buf_free(&b);
    qn_client_free(c);
}

int main(void)
{
    qn_log_init("test", QN_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_as, setup, teardown),
        cmocka_unit_test_setup_teardown(test_breaker_cycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_breaker_ignores_4xx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_breaker_not_ready_is_an_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_breaker_transport, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_open_single_probe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retries_only_when_safe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrency_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
