/* test_metrics.c - Prometheus registry: exact text output, escaping, float
 * spelling, histogram buckets, the series bound, hooks, threads, and that
 * promtool accepts what we render. */
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
#include <unistd.h>

#include "core/metrics.h"

static char *render(qn_metrics *m)
{
    qn_buf b;
    qn_buf_init(&b, 1 << 26);
    assert_int_equal(qn_metrics_render(m, &b), 0);
    return qn_buf_detach(&b, NULL);
}

/* The dropped-series family is always first; these tests look past it. */
static const char *after_dropped(const char *text)
{
    const char *p = strstr(text, "# TYPE quern_metrics_series_dropped_total counter\n");
    assert_non_null(p);
    return strchr(p, '\n') + 1;
}

static void test_exact_output(void **state)
{
    qn_metrics *m = qn_metrics_new();
    static const char *const cn[] = {"service", NULL};
    static const char *const cv[] = {"registry", NULL};
    qn_metrics_const_labels(m, cn, cv);
    static const char *const labels[] = {"route", "code", NULL};
    qn_metric *c = qn_metrics_counter(m, "quern_http_requests_total", "HTTP requests.", labels);
    const char *v1[] = {"/v1/models", "200"};
    const char *v2[] = {"/v1/models/{name}", "404"};
    qn_counter_add(c, v1, 1);
    qn_counter_add(c, v1, 2);
    qn_counter_add(c, v2, 1);
    qn_counter_add(c, v2, -5); /* ignored: counters never go down */
    qn_metric *g = qn_metrics_gauge(m, "quern_up", "Up.", NULL);
    qn_gauge_set(g, NULL, 1);
    qn_gauge_add(g, NULL, 0.5);
    qn_metric *idle = qn_metrics_gauge(m, "quern_idle", "Never touched.", NULL);
    (void)idle;

    char *text = render(m);
    const char *want =
        "# HELP quern_http_requests_total HTTP requests.\n"
        "# TYPE quern_http_requests_total counter\n"
        "quern_http_requests_total{service=\"registry\",route=\"/v1/models\",code=\"200\"} 3\n"
        "quern_http_requests_total{service=\"registry\",route=\"/v1/models/{name}\",code=\"404\"} 1\n"
        "# HELP quern_up Up.\n"
        "# TYPE quern_up gauge\n"
        "quern_up{service=\"registry\"} 1.5\n"
        "# HELP quern_idle Never touched.\n"
        "# TYPE quern_idle gauge\n"
        "quern_idle{service=\"registry\"} 0\n";
    assert_string_equal(after_dropped(text), want);
    free(text);
    /* Asking again for a family returns the same one. */
    assert_ptr_equal(qn_metrics_counter(m, "quern_http_requests_total", "x", labels), c);
    qn_metrics_free(m);
}

static void test_escaping(void **state)
{
    qn_metrics *m = qn_metrics_new();
    static const char *const labels[] = {"v", NULL};
    qn_metric *g = qn_metrics_gauge(m, "esc", "Back\\slash \"quoted\"\nsecond line.", labels);
    const char *v[] = {"a\"b\\c\nd\xff" "e\xc3\xa9"};
    qn_gauge_set(g, v, 2);
    char *text = render(m);
    const char *want =
        "# HELP esc Back\\\\slash \"quoted\"\\nsecond line.\n"
        "# TYPE esc gauge\n"
        "esc{v=\"a\\\"b\\\\c\\nd\xef\xbf\xbd" "e\xc3\xa9\"} 2\n";
    assert_string_equal(after_dropped(text), want);
    free(text);
    qn_metrics_free(m);
}

static void test_float_spelling(void **state)
{
    qn_metrics *m = qn_metrics_new();
    static const char *const labels[] = {"k", NULL};
    qn_metric *g = qn_metrics_gauge(m, "f", "Floats.", labels);
    static const struct { const char *k; double v; const char *want; } cases[] = {
        {"tenth", 0.1, "0.1"},
        {"third", 1.0 / 3.0, "0.3333333333333333"},
        {"big", 1e300, "1e+300"},
        {"int", 123456789012.0, "123456789012"},
        {"neg", -2.5, "-2.5"},
        {"pinf", INFINITY, "+Inf"},
        {"ninf", -INFINITY, "-Inf"},
        {"nan", NAN, "NaN"},
        {"tiny", 5e-324, "4.94065645841247e-324"},
    };
    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n; i++) {
        const char *v[] = {cases[i].k};
        qn_gauge_set(g, v, cases[i].v);
    }
    char *text = render(m);
    for (size_t i = 0; i < n; i++) {
        char line[128];
        snprintf(line, sizeof line, "f{k=\"%s\"} %s\n", cases[i].k, cases[i].want);
        if (!strstr(text, line))
            fail_msg("missing line %s in\n%s", line, text);
        /* and it reads back as the same double */
        if (!isnan(cases[i].v) && !isinf(cases[i].v))
            assert_true(strtod(cases[i].want, NULL) == cases[i].v);
    }
    free(text);
    qn_metrics_free(m);
}

static void test_histogram(void **state)
{
    qn_metrics *m = qn_metrics_new();
    static const char *const labels[] = {"op", NULL};
    static const double buckets[] = {0.1, 1, INFINITY};
    qn_metric *h = qn_metrics_histogram(m, "op_seconds", "Op time.", labels, buckets, 3);
    const char *v[] = {"get"};
    qn_histogram_observe(h, v, 0.05);
    qn_histogram_observe(h, v, 0.1); /* le is inclusive */
    qn_histogram_observe(h, v, 0.5);
    qn_histogram_observe(h, v, 5);
    char *text = render(m);
    const char *want =
        "# HELP op_seconds Op time.\n"
        "# TYPE op_seconds histogram\n"
        "op_seconds_bucket{op=\"get\",le=\"0.1\"} 2\n"
        "op_seconds_bucket{op=\"get\",le=\"1\"} 3\n"
        "op_seconds_bucket{op=\"get\",le=\"+Inf\"} 4\n"
        "op_seconds_sum{op=\"get\"} 5.65\n"
        "op_seconds_count{op=\"get\"} 4\n";
    assert_string_equal(after_dropped(text), want);
    free(text);

    /* The default ladder: 16 bounds from 100 us to 10 s, then +Inf. */
    qn_metric *d = qn_metrics_histogram(m, "d_seconds", "D.", NULL, NULL, 0);
    qn_histogram_observe(d, NULL, 20);
    text = render(m);
    assert_non_null(strstr(text, "d_seconds_bucket{le=\"0.0001\"} 0\n"));
    assert_non_null(strstr(text, "d_seconds_bucket{le=\"10\"} 0\n"));
    assert_non_null(strstr(text, "d_seconds_bucket{le=\"+Inf\"} 1\n"));
    int nb = 0;
    for (const char *p = text; (p = strstr(p, "d_seconds_bucket{")); p++)
        nb++;
    assert_int_equal(nb, 17);
    free(text);
    qn_metrics_free(m);
}

static void test_series_bound_and_remove(void **state)
{
    qn_metrics *m = qn_metrics_new();
    static const char *const labels[] = {"id", NULL};
    qn_metric *c = qn_metrics_counter(m, "ids_total", "Per id.", labels);
    char id[32];
    for (int i = 0; i < QN_METRICS_MAX_SERIES; i++) {
        snprintf(id, sizeof id, "%d", i);
        const char *v[] = {id};
        qn_counter_add(c, v, 1);
    }
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "new%d", i);
        const char *v[] = {id};
        qn_counter_add(c, v, 1);
    }
    const char *old[] = {"7"};
    qn_counter_add(c, old, 1); /* existing series still update */
    char *text = render(m);
    assert_non_null(strstr(text, "quern_metrics_series_dropped_total{metric=\"ids_total\"} 5\n"));
    assert_null(strstr(text, "id=\"new0\""));
    assert_non_null(strstr(text, "ids_total{id=\"7\"} 2\n"));
    free(text);

    /* Removing frees a slot: a new combination fits again. */
    qn_metric_remove(c, old);
    const char *fresh[] = {"fresh"};
    qn_counter_add(c, fresh, 1);
    text = render(m);
    assert_null(strstr(text, "ids_total{id=\"7\"}"));
    assert_non_null(strstr(text, "ids_total{id=\"fresh\"} 1\n"));
    assert_non_null(strstr(text, "quern_metrics_series_dropped_total{metric=\"ids_total\"} 5\n"));
    free(text);
    qn_metrics_free(m);
}

static void hook(qn_metrics *m, void *ud)
{
    int *calls = ud;
    (*calls)++;
    qn_metric *g = qn_metrics_gauge(m, "hooked", "Set by a hook.", NULL);
    qn_gauge_set(g, NULL, *calls * 10);
}

static void test_on_render(void **state)
{
    qn_metrics *m = qn_metrics_new();
    int calls = 0;
    qn_metrics_on_render(m, hook, &calls);
    char *text = render(m);
    assert_non_null(strstr(text, "hooked 10\n"));
    free(text);
    text = render(m);
    assert_non_null(strstr(text, "hooked 20\n"));
    free(text);
    assert_int_equal(calls, 2);
    qn_metrics_free(m);
}

static void test_render_bounded(void **state)
{
    qn_metrics *m = qn_metrics_new();
    qn_metrics_gauge(m, "a_gauge_with_a_long_name", "Help text.", NULL);
    qn_buf b;
    qn_buf_init(&b, 40);
    assert_int_equal(qn_metrics_render(m, &b), -8 /* QN_RESOURCE_EXHAUSTED */);
    assert_true(b.len <= 40);
    qn_buf_free(&b);
    qn_metrics_free(m);
}

#define THREADS 8
#define PER_THREAD 50000

typedef struct { qn_metric *c, *h; qn_metrics *m; int id; } targ;

static void *worker(void *p)
{
    targ *a = p;
    char lbl[8];
    snprintf(lbl, sizeof lbl, "w%d", a->id % 3);
    const char *v[] = {lbl};
    for (int i = 0; i < PER_THREAD; i++) {
        qn_counter_add(a->c, v, 1);
        qn_histogram_observe(a->h, v, 0.001 * (i % 100));
        if (i % 10000 == 0) {
            qn_buf b;
            qn_buf_init(&b, 1 << 20);
            assert_int_equal(qn_metrics_render(a->m, &b), 0);
            qn_buf_free(&b);
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    qn_metrics *m = qn_metrics_new();
    static const char *const labels[] = {"w", NULL};
    targ args[THREADS];
    pthread_t th[THREADS];
    qn_metric *c = qn_metrics_counter(m, "work_total", "Work.", labels);
    qn_metric *h = qn_metrics_histogram(m, "work_seconds", "Work time.", labels, NULL, 0);
    for (int i = 0; i < THREADS; i++) {
        args[i] = (targ){c, h, m, i};
        pthread_create(&th[i], NULL, worker, &args[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    char *text = render(m);
    /* threads 0,3,6 -> w0; 1,4,7 -> w1; 2,5 -> w2 */
    char want[128];
    snprintf(want, sizeof want, "work_total{w=\"w0\"} %d\n", 3 * PER_THREAD);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof want, "work_total{w=\"w2\"} %d\n", 2 * PER_THREAD);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof want, "work_seconds_count{w=\"w1\"} %d\n", 3 * PER_THREAD);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof want, "work_seconds_bucket{w=\"w1\",le=\"+Inf\"} %d\n", 3 * PER_THREAD);
    assert_non_null(strstr(text, want));
    free(text);
    qn_metrics_free(m);
}

/* Runs promtool on text; its exit status (-1 when it could not run). */
static int promtool(const char *text, const char *name)
{
    const char *work = getenv("QUERN_TEST_WORK");
    char path[512], cmd[1200];
    snprintf(path, sizeof path, "%s/%s.prom", work ? work : "/tmp", name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "promtool check metrics < '%s' > '%s.out' 2>&1", path, path);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_promtool(void **state)
{
    if (access("/usr/bin/promtool", X_OK) != 0) {
        print_message("SKIP: /usr/bin/promtool absent (Debian package prometheus)\n");
        skip();
    }
    qn_metrics *m = qn_metrics_new();
    static const char *const cn[] = {"service", "instance", NULL};
    static const char *const cv[] = {"registry", "host:7701", NULL};
    qn_metrics_const_labels(m, cn, cv);
    static const char *const labels[] = {"route", "method", "code", NULL};
    qn_metric *c = qn_metrics_counter(m, "quern_http_requests_total",
                                      "HTTP requests served, by \"route\"\\method.\nSecond line.",
                                      labels);
    qn_metric *h = qn_metrics_histogram(m, "quern_http_request_duration_seconds",
                                        "Time to answer.", labels, NULL, 0);
    const char *weird[] = {"/v1/models/{name}", "GET", "a\"b\\c\nd\xff\xfe"};
    const char *plain[] = {"/healthz", "GET", "200"};
    qn_counter_add(c, weird, 3);
    qn_counter_add(c, plain, 1e20);
    qn_histogram_observe(h, weird, 0.003);
    qn_histogram_observe(h, plain, 42);
    static const char *const gl[] = {"model", NULL};
    qn_metric *g = qn_metrics_gauge(m, "quern_drift_score", "Drift.", gl);
    const char *g1[] = {"a"}, *g2[] = {"b"}, *g3[] = {"c"}, *g4[] = {"d"};
    qn_gauge_set(g, g1, NAN);
    qn_gauge_set(g, g2, INFINITY);
    qn_gauge_set(g, g3, -INFINITY);
    qn_gauge_set(g, g4, 1.0 / 3.0);
    /* Force a drop so the dropped counter has a sample too. */
    static const char *const il[] = {"id", NULL};
    qn_metric *ids = qn_metrics_counter(m, "quern_ids_total", "Ids.", il);
    char id[16];
    for (int i = 0; i <= QN_METRICS_MAX_SERIES; i++) {
        snprintf(id, sizeof id, "%d", i);
        const char *v[] = {id};
        qn_counter_add(ids, v, 1);
    }
    char *text = render(m);
    int rc = promtool(text, "metrics_ok");
    if (rc != 0) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "head -c 2000 '%s/metrics_ok.prom.out'",
                 getenv("QUERN_TEST_WORK") ? getenv("QUERN_TEST_WORK") : "/tmp");
        if (system(cmd) != 0)
            print_message("(could not show promtool output)\n");
    }
    assert_int_equal(rc, 0);
    free(text);

    /* The check is meaningful: promtool does reject a broken exposition. */
    assert_int_not_equal(promtool("# TYPE x counter\nx{a=\"unterminated} 1\n", "metrics_bad"), 0);
    qn_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_output),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_float_spelling),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_series_bound_and_remove),
        cmocka_unit_test(test_on_render),
        cmocka_unit_test(test_render_bounded),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_promtool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
