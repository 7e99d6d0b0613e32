/* test_otel.c - spans and the OTLP/HTTP JSON exporter (core/otel.h), against a
 * small HTTP receiver on loopback in this process: the payload's shape
 * (ExportTraceServiceRequest in protobuf-JSON), parent/child ids, batching,
 * the bounded queue and its drop count, export failures that are dropped and
 * counted without blocking, the flush at shutdown, unsampled traces, and
 * that with no endpoint nothing is recorded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/metrics.h"
#include "core/otel.h"

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#define MAX_BODIES 64

/* ---- the receiver --------------------------------------------------------------- */

typedef struct receiver {
    int fd, port;
    pthread_t thread;
    pthread_mutex_t mu;
    int status;         /* answer to every POST */
    int delay_ms;       /* before answering */
    int stop;
    char *bodies[MAX_BODIES];
    int nbodies;
    int nposts;
} receiver;

static int read_request(int c, char **body_out)
{
    char hdr[8192];
    size_t n = 0;
    char *end = NULL;
    while (!end) {
        if (n + 1 >= sizeof hdr)
            return -1;
        ssize_t r = recv(c, hdr + n, sizeof hdr - 1 - n, 0);
        if (r <= 0)
            return -1;
        n += (size_t)r;
        hdr[n] = 0;
        end = strstr(hdr, "\r\n\r\n");
    }
    size_t hlen = (size_t)(end - hdr) + 4, clen = 0;
    for (char *p = hdr; p < end; p = strstr(p, "\r\n") + 2)
        if (strncasecmp(p, "Content-Length:", 15) == 0)
            clen = strtoul(p + 15, NULL, 10);
    char *body = malloc(clen + 1);
    size_t have = n - hlen;
    memcpy(body, hdr + hlen, have);
    while (have < clen) {
        ssize_t r = recv(c, body + have, clen - have, 0);
        if (r <= 0) {
            free(body);
            return -1;
        }
        have += (size_t)r;
    }
    body[clen] = 0;
    *body_out = body;
    return 0;
}

static void *serve(void *arg)
{
    receiver *rv = arg;
    for (;;) {
        int c = accept(rv->fd, NULL, NULL);
        if (c < 0)
            break;
        pthread_mutex_lock(&rv->mu);
        int stop = rv->stop;
        pthread_mutex_unlock(&rv->mu);
        if (stop) {
            close(c);
            break;
        }
        char *body;
        while (read_request(c, &body) == 0) {
            pthread_mutex_lock(&rv->mu);
            int status = rv->status, delay = rv->delay_ms;
            rv->nposts++;
            if (status == 200 && rv->nbodies < MAX_BODIES)
                rv->bodies[rv->nbodies++] = body;
            else
                free(body);
            pthread_mutex_unlock(&rv->mu);
            if (delay)
                usleep((useconds_t)delay * 1000);
            char ans[128];
            int k = snprintf(ans, sizeof ans, "HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n", status);
            if (send(c, ans, (size_t)k, MSG_NOSIGNAL) != k)
                break;
        }
        close(c);
    }
    return NULL;
}

static receiver *receiver_start(int status)
{
    receiver *rv = calloc(1, sizeof *rv);
    pthread_mutex_init(&rv->mu, NULL);
    rv->status = status;
    rv->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(rv->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(rv->fd, 16), 0);
    socklen_t al = sizeof a;
    getsockname(rv->fd, (struct sockaddr *)&a, &al);
    rv->port = ntohs(a.sin_port);
    pthread_create(&rv->thread, NULL, serve, rv);
    return rv;
}

static void receiver_stop(receiver *rv)
{
    pthread_mutex_lock(&rv->mu);
    rv->stop = 1;
    pthread_mutex_unlock(&rv->mu);
    /* Wake accept() with a connection of our own. */
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)rv->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    connect(c, (struct sockaddr *)&a, sizeof a);
    close(c);
    pthread_join(rv->thread, NULL);
    close(rv->fd);
    for (int i = 0; i < rv->nbodies; i++)
        free(rv->bodies[i]);
    pthread_mutex_destroy(&rv->mu);
    free(rv);
}

static void endpoint(const receiver *rv, char *out, size_t n)
{
    snprintf(out, n, "http://127.0.0.1:%d/", rv->port); /* the trailing slash is trimmed */
}

/* All spans of every body received, in order. */
static json_t *all_spans(receiver *rv)
{
    json_t *out = json_array();
    pthread_mutex_lock(&rv->mu);
    for (int i = 0; i < rv->nbodies; i++) {
        json_t *b = json_loads(rv->bodies[i], 0, NULL);
        assert_non_null(b);
        json_t *ss = json_object_get(json_array_get(json_object_get(b, "resourceSpans"), 0), "scopeSpans");
        json_array_extend(out, json_object_get(json_array_get(ss, 0), "spans"));
        json_decref(b);
    }
    pthread_mutex_unlock(&rv->mu);
    return out;
}

static int is_hex(const char *s, size_t n)
{
    if (!s || strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
            return 0;
    return 1;
}

static int is_digits(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return 0;
    return 1;
}

static json_t *attr_value(json_t *span, const char *key)
{
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(span, "attributes"), i, a)
        if (strcmp(json_string_value(json_object_get(a, "key")), key) == 0)
            return json_object_get(a, "value");
    return NULL;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_off_records_nothing(void **state)
{
    (void)state;
    assert_false(qn_otel_enabled());
    qn_trace_ctx parent;
    assert_int_equal(qn_traceparent_parse(TP, &parent), 0);
    qn_span s;
    qn_span_start(&s, "x", QN_SPAN_SERVER, &parent);
    assert_null(s.rec);
    /* Context still flows: same trace, a new span whose parent is the caller. */
    assert_memory_equal(s.ctx.trace_id, parent.trace_id, 16);
    assert_memory_equal(s.ctx.parent_span_id, parent.span_id, 8);
    assert_memory_not_equal(s.ctx.span_id, parent.span_id, 8);
    qn_span_attr_str(&s, "k", "v");
    qn_span_error(&s, "bad");
    qn_span_end(&s);
    qn_otel_stats st;
    qn_otel_stats_get(&st);
    assert_int_equal(st.recorded, 0);
    /* An empty endpoint leaves it off. */
    qn_err err;
    qn_otel_opts o = {.endpoint = "", .service = "t"};
    assert_int_equal(qn_otel_start(&o, &err), 0);
    assert_false(qn_otel_enabled());
    qn_otel_opts bad = {.endpoint = "ftp://127.0.0.1:1", .service = "t"};
    assert_int_equal(qn_otel_start(&bad, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "ftp://"));
    assert_false(qn_otel_enabled());
}

static void test_payload_shape(void **state)
{
    (void)state;
    receiver *rv = receiver_start(200);
    char ep[64];
    endpoint(rv, ep, sizeof ep);
    qn_err err;
    qn_otel_opts o = {.endpoint = ep, .service = "quern-test", .flush_ms = 50};
    assert_int_equal(qn_otel_start(&o, &err), 0);
    assert_true(qn_otel_enabled());

    qn_trace_ctx caller;
    assert_int_equal(qn_traceparent_parse(TP, &caller), 0);
    qn_span srv, cli, root;
    qn_span_start(&srv, "GET /v1/models/{name}", QN_SPAN_SERVER, &caller);
    qn_span_attr_str(&srv, "http.method", "GET");
    qn_span_attr_int(&srv, "http.status_code", 200);
    qn_span_attr_double(&srv, "ratio", 0.25);
    qn_span_attr_bool(&srv, "cached", 1);
    qn_span_start(&cli, "GET", QN_SPAN_CLIENT, &srv.ctx);
    qn_span_error(&cli, "upstream said no");
    qn_span_end(&cli);
    qn_span_ok(&srv);
    qn_span_end(&srv);
    qn_span_end(&srv); /* twice: harmless */
    qn_span_start(&root, "job", QN_SPAN_INTERNAL, NULL);
    qn_span_end(&root);
    assert_int_equal(qn_otel_flush(5000), 0);

    pthread_mutex_lock(&rv->mu);
    assert_true(rv->nbodies >= 1);
    json_t *body = json_loads(rv->bodies[0], 0, NULL);
    pthread_mutex_unlock(&rv->mu);
    assert_non_null(body);
    json_t *rs = json_array_get(json_object_get(body, "resourceSpans"), 0);
    json_t *rattr = json_array_get(json_object_get(json_object_get(rs, "resource"), "attributes"), 0);
    assert_string_equal(json_string_value(json_object_get(rattr, "key")), "service.name");
    assert_string_equal(json_string_value(json_object_get(json_object_get(rattr, "value"), "stringValue")),
                        "quern-test");
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(ss, "scope"), "name")), "quern");
    json_decref(body);

    json_t *spans = all_spans(rv);
    assert_int_equal(json_array_size(spans), 3);
    json_t *c = json_array_get(spans, 0), *s = json_array_get(spans, 1), *r = json_array_get(spans, 2);
    size_t i;
    json_t *sp;
    json_array_foreach(spans, i, sp) {
        assert_true(is_hex(json_string_value(json_object_get(sp, "traceId")), 32));
        assert_true(is_hex(json_string_value(json_object_get(sp, "spanId")), 16));
        const char *st = json_string_value(json_object_get(sp, "startTimeUnixNano"));
        const char *en = json_string_value(json_object_get(sp, "endTimeUnixNano"));
        assert_true(is_digits(st) && is_digits(en));
        assert_true(strtoull(en, NULL, 10) >= strtoull(st, NULL, 10));
        /* Nanoseconds since 1970: after 2020, before 2100. */
        assert_true(strtoull(st, NULL, 10) > 1577836800ull * 1000000000ull);
        assert_true(strtoull(st, NULL, 10) < 4102444800ull * 1000000000ull);
        assert_true(json_is_array(json_object_get(sp, "attributes")));
        assert_true(json_is_object(json_object_get(sp, "status")));
    }
    assert_string_equal(json_string_value(json_object_get(s, "name")), "GET /v1/models/{name}");
    assert_int_equal(json_integer_value(json_object_get(s, "kind")), 2);
    assert_int_equal(json_integer_value(json_object_get(c, "kind")), 3);
    assert_int_equal(json_integer_value(json_object_get(r, "kind")), 1);
    /* The server span continues the caller's trace; the client is its child. */
    assert_string_equal(json_string_value(json_object_get(s, "traceId")), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(json_string_value(json_object_get(s, "parentSpanId")), "00f067aa0ba902b7");
    assert_string_equal(json_string_value(json_object_get(c, "parentSpanId")),
                        json_string_value(json_object_get(s, "spanId")));
    assert_string_equal(json_string_value(json_object_get(c, "traceId")),
                        json_string_value(json_object_get(s, "traceId")));
    assert_null(json_object_get(r, "parentSpanId"));
    assert_string_not_equal(json_string_value(json_object_get(r, "traceId")),
                            json_string_value(json_object_get(s, "traceId")));
    /* Attribute values in their protobuf-JSON forms: int64 as a string. */
    assert_string_equal(json_string_value(json_object_get(attr_value(s, "http.method"), "stringValue")), "GET");
    assert_string_equal(json_string_value(json_object_get(attr_value(s, "http.status_code"), "intValue")), "200");
    assert_true(json_real_value(json_object_get(attr_value(s, "ratio"), "doubleValue")) == 0.25);
    assert_true(json_is_true(json_object_get(attr_value(s, "cached"), "boolValue")));
    /* Status: ok = 1, error = 2 with the message; unset leaves code out. */
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "status"), "code")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(c, "status"), "code")), 2);
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "status"), "message")),
                        "upstream said no");
    assert_null(json_object_get(json_object_get(r, "status"), "code"));
    json_decref(spans);
    qn_otel_shutdown(2000);
    assert_false(qn_otel_enabled());
    receiver_stop(rv);
}

static void test_batching(void **state)
{
    (void)state;
    receiver *rv = receiver_start(200);
    char ep[64];
    endpoint(rv, ep, sizeof ep);
    qn_err err;
    /* A long interval: only full batches go on their own. */
    qn_otel_opts o = {.endpoint = ep, .service = "t", .batch_max = 4, .flush_ms = 60000};
    assert_int_equal(qn_otel_start(&o, &err), 0);
    for (int i = 0; i < 10; i++) {
        qn_span s;
        qn_span_start(&s, "s", QN_SPAN_INTERNAL, NULL);
        qn_span_end(&s);
    }
    /* Two full batches of 4 arrive without a flush; the 2 left wait. */
    for (int k = 0; k < 200; k++) {
        pthread_mutex_lock(&rv->mu);
        int n = rv->nbodies;
        pthread_mutex_unlock(&rv->mu);
        if (n >= 2)
            break;
        usleep(10000);
    }
    usleep(100000);
    json_t *spans = all_spans(rv);
    assert_int_equal(json_array_size(spans), 8);
    json_decref(spans);
    pthread_mutex_lock(&rv->mu);
    assert_int_equal(rv->nbodies, 2);
    pthread_mutex_unlock(&rv->mu);
    /* The shutdown flushes the rest. */
    qn_otel_shutdown(2000);
    spans = all_spans(rv);
    assert_int_equal(json_array_size(spans), 10);
    json_decref(spans);
    qn_otel_stats st;
    qn_otel_stats_get(&st);
    assert_int_equal(st.recorded, 10);
    assert_int_equal(st.exported, 10);
    assert_int_equal(st.dropped_queue + st.dropped_export, 0);
    receiver_stop(rv);
}

static void test_queue_bound(void **state)
{
    (void)state;
    receiver *rv = receiver_start(200);
    rv->delay_ms = 300; /* a slow collector: at most one batch in flight */
    char ep[64];
    endpoint(rv, ep, sizeof ep);
    qn_err err;
    qn_metrics *m = qn_metrics_new();
    qn_otel_opts o = {.endpoint = ep, .service = "t", .metrics = m, .queue_max = 8, .batch_max = 8,
                      .flush_ms = 60000};
    assert_int_equal(qn_otel_start(&o, &err), 0);
    double t0 = now_ms();
    for (int i = 0; i < 40; i++) {
        qn_span s;
        qn_span_start(&s, "s", QN_SPAN_INTERNAL, NULL);
        qn_span_end(&s);
    }
    /* Ending spans never waits on the collector. */
    assert_true(now_ms() - t0 < 250);
    qn_otel_stats st;
    qn_otel_stats_get(&st);
    /* At most 8 queued plus 8 taken by the exporter; the rest dropped. */
    assert_int_equal(st.recorded + st.dropped_queue, 40);
    assert_true(st.dropped_queue >= 40 - 16);
    qn_buf b;
    qn_buf_init(&b, 1 << 20);
    assert_int_equal(qn_metrics_render(m, &b), 0);
    char line[128];
    snprintf(line, sizeof line, "quern_otel_spans_dropped_total{reason=\"queue_full\"} %llu",
             (unsigned long long)st.dropped_queue);
    assert_non_null(strstr(b.data, line));
    qn_buf_free(&b);
    qn_otel_shutdown(5000);
    qn_otel_stats_get(&st);
    assert_int_equal(st.exported, st.recorded);
    json_t *spans = all_spans(rv);
    assert_int_equal(json_array_size(spans), st.recorded);
    json_decref(spans);
    qn_metrics_free(m);
    receiver_stop(rv);
}

static void test_export_failure(void **state)
{
    (void)state;
    /* A collector that always answers 503: retried, then dropped and counted. */
    receiver *rv = receiver_start(503);
    char ep[64];
    endpoint(rv, ep, sizeof ep);
    qn_err err;
    qn_otel_opts o = {.endpoint = ep, .service = "t", .batch_max = 5, .flush_ms = 60000, .max_retries = 2};
    assert_int_equal(qn_otel_start(&o, &err), 0);
    for (int i = 0; i < 5; i++) {
        qn_span s;
        qn_span_start(&s, "s", QN_SPAN_INTERNAL, NULL);
        qn_span_end(&s);
    }
    assert_int_equal(qn_otel_flush(5000), 0);
    qn_otel_stats st;
    qn_otel_stats_get(&st);
    assert_int_equal(st.exported, 0);
    assert_int_equal(st.dropped_export, 5);
    pthread_mutex_lock(&rv->mu);
    assert_int_equal(rv->nposts, 3); /* one batch: the first try and two retries */
    pthread_mutex_unlock(&rv->mu);
    qn_otel_shutdown(1000);
    receiver_stop(rv);

    /* Nobody listening at all: the shutdown still ends within its deadline. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", ntohs(a.sin_port));
    close(fd);
    qn_otel_opts o2 = {.endpoint = ep, .service = "t", .flush_ms = 60000};
    assert_int_equal(qn_otel_start(&o2, &err), 0);
    qn_span s;
    qn_span_start(&s, "s", QN_SPAN_INTERNAL, NULL);
    qn_span_end(&s);
    double t0 = now_ms();
    qn_otel_shutdown(500);
    assert_true(now_ms() - t0 < 1500);
    qn_otel_stats_get(&st);
    assert_int_equal(st.dropped_export, 1);
}

static void test_unsampled_not_recorded(void **state)
{
    (void)state;
    receiver *rv = receiver_start(200);
    char ep[64];
    endpoint(rv, ep, sizeof ep);
    qn_err err;
    qn_otel_opts o = {.endpoint = ep, .service = "t", .flush_ms = 20};
    assert_int_equal(qn_otel_start(&o, &err), 0);
    qn_trace_ctx parent;
    assert_int_equal(qn_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &parent), 0);
    qn_span s;
    qn_span_start(&s, "s", QN_SPAN_SERVER, &parent);
    assert_null(s.rec);
    assert_int_equal(s.ctx.flags & 1, 0); /* passed on unsampled too */
    qn_span_end(&s);
    /* A discarded span is not exported either. */
    qn_span d;
    qn_span_start(&d, "probe", QN_SPAN_SERVER, NULL);
    assert_non_null(d.rec);
    qn_span_discard(&d);
    qn_span_end(&d);
    assert_int_equal(qn_otel_flush(2000), 0);
    qn_otel_shutdown(1000);
    qn_otel_stats st;
    qn_otel_stats_get(&st);
    assert_int_equal(st.recorded, 0);
    pthread_mutex_lock(&rv->mu);
    assert_int_equal(rv->nposts, 0);
    pthread_mutex_unlock(&rv->mu);
    receiver_stop(rv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off_records_nothing),
        cmocka_unit_test(test_payload_shape),
        cmocka_unit_test(test_batching),
        cmocka_unit_test(test_queue_bound),
        cmocka_unit_test(test_export_failure),
        cmocka_unit_test(test_unsampled_not_recorded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
