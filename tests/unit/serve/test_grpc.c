/*
 * test_grpc.c - quern-serve's gRPC front in-process, spoken to over a real
 * socket by a stock client: grpcio with stubs that grpc_tools.protoc
 * generates from the proto/ files at test time (grpc_client.py, run with
 * /usr/bin/python3). The server answers with the test backend of
 * sum_backend.c. Also: bind failures, the metrics it records, graceful
 * and forced shutdown with a call in flight, and the bearer token on calls
 * (with and without auth on reads).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/json.h"
#include "core/metrics.h"
#include "serve/grpc_server.h"
#include "sum_backend.h"

static char client_cmd[4096];

/* Deadlines of the calls that move tens of MiB, scaled for sanitizer
 * builds: the client's --deadline-scale (grpc_client.py, BIG_DEADLINE, 30 s
 * unscaled). CI runs the suite under ASan+UBSan on a loaded machine, where
 * the 40 MiB decode-budget call took more than its old 10 s; measured under
 * ASan with its core shared by 12 busy processes (about load 26 on this
 * 2-core machine), the call took 78 s. */
#if defined(__SANITIZE_ADDRESS__) /* QUERN_SANITIZE: ASan and UBSan together */
#define DEADLINE_SCALE 6
#else
#define DEADLINE_SCALE 1
#endif

/* The command line of grpc_client.py for a port and mode. */
static const char *client(int port, const char *mode, const char *expect)
{
    const char *src = getenv("QUERN_SOURCE_DIR");
    const char *work = getenv("QUERN_TEST_WORK");
    assert_non_null(src);
    assert_non_null(work);
    snprintf(client_cmd, sizeof client_cmd,
             "/usr/bin/python3 %s/tests/unit/serve/grpc_client.py --port %d --proto %s/proto "
             "--work %s --mode %s --expect %s --deadline-scale %d",
             src, port, src, work, mode, expect, DEADLINE_SCALE);
    return client_cmd;
}

static serve_grpc *start(const char *listen, const oip_backend *be, qn_metrics *m)
{
    qn_err err;
    serve_grpc_opts o = {.listen = listen, .backend = be, .metrics = m};
    serve_grpc *g = serve_grpc_start(&o, &err);
    if (!g)
        printf("# serve_grpc_start(%s): %s\n", listen, err.msg);
    return g;
}

static int run_client(int port, const char *mode)
{
    int st = system(client(port, mode, "ok"));
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_bind_failures(void **state)
{
    sum_backend sb;
    sum_backend_init(&sb);
    qn_err err;
    serve_grpc_opts o = {.listen = "not-an-address:99999", .backend = &sb.be};
    serve_grpc *g = serve_grpc_start(&o, &err);
    assert_null(g);
    assert_int_equal(err.code, QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "not-an-address:99999"));

    /* The same port twice: the second bind must fail, not share it. */
    serve_grpc *a = start("127.0.0.1:0", &sb.be, NULL);
    assert_non_null(a);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", serve_grpc_port(a));
    o.listen = addr;
    serve_grpc *b = serve_grpc_start(&o, &err);
    assert_null(b);
    assert_int_equal(err.code, QN_INVALID_ARGUMENT);
    serve_grpc_shutdown(a, qn_now_ms() + 1000);

    oip_backend empty = {0};
    o.listen = "127.0.0.1:0";
    o.backend = &empty;
    assert_null(serve_grpc_start(&o, &err));
    assert_int_equal(err.code, QN_INVALID_ARGUMENT);
}

static int has_series(const char *text, const char *series)
{
    const char *p = strstr(text, series);
    return p && (p == text || p[-1] == '\n');
}

static double series_value(const char *text, const char *series)
{
    const char *p = strstr(text, series);
    if (!p)
        return -1;
    return strtod(p + strlen(series), NULL);
}

static void test_protocol(void **state)
{
    sum_backend sb;
    sum_backend_init(&sb);
    qn_metrics *m = qn_metrics_new();
    serve_grpc *g = start("127.0.0.1:0", &sb.be, m);
    assert_non_null(g);
    assert_true(serve_grpc_port(g) > 0);

    assert_int_equal(run_client(serve_grpc_port(g), "all"), 0);

    /* Metrics: successful infers of "sum" counted with their labels, the
     * unknown model's name never became a series, errors by code. */
    qn_buf out;
    qn_buf_init(&out, 1 << 22);
    assert_int_equal(qn_metrics_render(m, &out), 0);
    const char *text = out.data;
    const char *sum_series =
        "quern_inference_requests_total{model=\"sum\",version=\"1\",protocol=\"grpc\"} ";
    assert_true(has_series(text, sum_series));
    /* test_concurrent alone sends 8 x 40 successful calls. */
    assert_true(series_value(text, sum_series) >= 320);
    assert_true(has_series(
        text, "quern_inference_request_duration_seconds_count{model=\"sum\",version=\"1\","
              "protocol=\"grpc\"} "));
    assert_null(strstr(text, "model=\"nope\""));
    assert_true(has_series(
        text, "quern_grpc_server_handled_total{method=\"ModelInfer\",code=\"invalid_argument\"} "));
    assert_true(has_series(
        text, "quern_grpc_server_handled_total{method=\"ModelReady\",code=\"not_found\"} "));
    assert_true(has_series(
        text, "quern_grpc_server_handled_total{method=\"unimplemented\",code=\"unimplemented\"} "));
    assert_true(has_series(text,
                           "quern_grpc_server_handled_total{method=\"Check\",code=\"ok\"} "));
    qn_buf_free(&out);

    atomic_store(&sb.ready, 0);
    assert_int_equal(run_client(serve_grpc_port(g), "notready"), 0);

    serve_grpc_shutdown(g, qn_now_ms() + 5000);
    assert_int_equal(atomic_load(&sb.infers), atomic_load(&sb.done));
    qn_metrics_free(m);
}

/* With a token: the client checks infer, reads and probes (grpc_client.py
 * auth_checks); the metrics show the refusals were counted by code. */
static void run_auth(int auth_reads)
{
    sum_backend sb;
    sum_backend_init(&sb);
    qn_metrics *m = qn_metrics_new();
    qn_err err;
    const char *token = "t0ken-for-grpc-tests";
    serve_grpc_opts o = {.listen = "127.0.0.1:0", .backend = &sb.be, .metrics = m,
                         .token = token, .auth_reads = auth_reads};
    serve_grpc *g = serve_grpc_start(&o, &err);
    assert_non_null(g);
    char extra[128];
    snprintf(extra, sizeof extra, "ok --token %s --auth-reads %d", token, auth_reads);
    int st = system(client(serve_grpc_port(g), "auth", extra));
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);

    qn_buf out;
    qn_buf_init(&out, 1 << 22);
    assert_int_equal(qn_metrics_render(m, &out), 0);
    const char *unauth =
        "quern_grpc_server_handled_total{method=\"ModelInfer\",code=\"unauthenticated\"} ";
    assert_true(has_series(out.data, unauth));
    assert_true(series_value(out.data, unauth) >= 5);
    const char *meta_unauth =
        "quern_grpc_server_handled_total{method=\"ModelMetadata\",code=\"unauthenticated\"} ";
    assert_int_equal(has_series(out.data, meta_unauth), auth_reads);
    qn_buf_free(&out);
    serve_grpc_shutdown(g, qn_now_ms() + 5000);
    /* Refused calls never reached the backend: only the allowed infers did. */
    assert_int_equal(atomic_load(&sb.infers), 2);
    qn_metrics_free(m);
}

static void test_auth_infer_only(void **state)
{
    run_auth(0);
}

static void test_auth_reads(void **state)
{
    run_auth(1);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Starts the slow client, waits until its call is inside the backend, then
 * shuts down with the given grace; returns the client's exit status. */
static int shutdown_with_call_in_flight(int grace_ms, const char *expect, long long *took_ms)
{
    sum_backend sb;
    sum_backend_init(&sb);
    sb.allow_sleep = 1;
    serve_grpc *g = start("127.0.0.1:0", &sb.be, NULL);
    assert_non_null(g);
    FILE *p = popen(client(serve_grpc_port(g), "slow", expect), "r");
    assert_non_null(p);
    /* stub generation and interpreter start take a few seconds */
    for (int i = 0; i < 600 && atomic_load(&sb.infers) == 0; i++)
        sleep_ms(50);
    assert_int_equal(atomic_load(&sb.infers), 1);
    long long t0 = qn_now_ms();
    serve_grpc_shutdown(g, t0 + grace_ms);
    *took_ms = qn_now_ms() - t0;
    /* Shutdown returns only after the backend call has returned. */
    assert_int_equal(atomic_load(&sb.done), 1);
    char line[256] = "";
    if (!fgets(line, sizeof line, p))
        line[0] = 0;
    int st = pclose(p);
    printf("# grace %d ms: client said \"%.*s\", shutdown took %lld ms\n", grace_ms,
           (int)strcspn(line, "\n"), line, *took_ms);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_graceful_shutdown(void **state)
{
    long long took;
    /* Generous grace: the 600 ms call completes and the client sees OK. */
    assert_int_equal(shutdown_with_call_in_flight(10000, "ok", &took), 0);
    assert_true(took < 10000);
}

static void test_forced_shutdown(void **state)
{
    long long took;
    /* 50 ms grace: the call is cancelled and the client sees an error;
     * shutdown still waits for the backend (about 600 ms), no longer. */
    assert_int_equal(shutdown_with_call_in_flight(50, "error", &took), 0);
    assert_true(took < 5000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bind_failures),
        cmocka_unit_test(test_protocol),
        cmocka_unit_test(test_auth_infer_only),
        cmocka_unit_test(test_auth_reads),
        cmocka_unit_test(test_graceful_shutdown),
        cmocka_unit_test(test_forced_shutdown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
