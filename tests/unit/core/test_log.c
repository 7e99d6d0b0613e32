/* test_log.c - JSON-lines logging: each event is one parseable line with the
 * fixed keys in order, levels filter, and concurrent lines never interleave. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

static int fds[2];

static int setup(void **state)
{
    assert_int_equal(pipe(fds), 0);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    qn_log_set_fd(fds[1]);
    return 0;
}

static int teardown(void **state)
{
    qn_log_set_fd(2);
    close(fds[0]);
    close(fds[1]);
    return 0;
}

/* Everything written so far (the pipe is big enough for these tests). */
static char *drain(void)
{
    static char buf[1 << 16];
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static void test_line_shape(void **state)
{
    qn_log_init("registry", QN_LOG_INFO);
    qn_log_info("0af7651916cd43dd8448eb211c80319c", "blob stored", "{s:s, s:i, s:b}",
                "digest", "sha256:ab", "size", 42, "new", 1);
    char *out = drain();
    size_t len = strlen(out);
    assert_true(len > 0);
    assert_int_equal(out[len - 1], '\n');
    assert_ptr_equal(strchr(out, '\n'), out + len - 1); /* exactly one line */

    json_error_t jerr;
    json_t *j = json_loads(out, 0, &jerr);
    if (!j)
        fail_msg("not JSON: %s (%s)", out, jerr.text);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "service")), "registry");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "blob stored");
    assert_string_equal(json_string_value(json_object_get(j, "digest")), "sha256:ab");
    assert_int_equal(json_integer_value(json_object_get(j, "size")), 42);
    assert_true(json_is_true(json_object_get(j, "new")));
    assert_string_equal(json_string_value(json_object_get(j, "trace_id")),
                        "0af7651916cd43dd8448eb211c80319c");

    /* ts: RFC 3339 UTC with milliseconds, and close to now. */
    const char *ts = json_string_value(json_object_get(j, "ts"));
    regex_t re;
    assert_int_equal(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$",
                             REG_EXTENDED | REG_NOSUB), 0);
    assert_int_equal(regexec(&re, ts, 0, NULL, 0), 0);
    regfree(&re);
    struct tm tm = {0};
    assert_non_null(strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm));
    assert_true(llabs((long long)(timegm(&tm) - time(NULL))) <= 2);

    /* Key order: ts, level, service, msg first, trace_id last. */
    assert_true(strncmp(out, "{\"ts\":", 6) == 0);
    assert_true(strstr(out, "\"level\"") < strstr(out, "\"service\""));
    assert_true(strstr(out, "\"service\"") < strstr(out, "\"msg\""));
    assert_true(strstr(out, "\"msg\"") < strstr(out, "\"digest\""));
    assert_true(strstr(out, "\"new\"") < strstr(out, "\"trace_id\""));
    json_decref(j);
}

static void test_levels_and_degraded(void **state)
{
    qn_log_init("svc", QN_LOG_WARN);
    qn_log_info(NULL, "hidden", NULL);
    qn_log_debug(NULL, "hidden too", NULL);
    assert_string_equal(drain(), "");
    qn_log_error(NULL, "shown", NULL);
    char *out = drain();
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "error");
    assert_null(json_object_get(j, "trace_id"));
    json_decref(j);

    /* A bad pack format still logs the message; callers cannot override the
     * fixed keys; invalid UTF-8 becomes '?' rather than losing the line. */
    qn_log_warn(NULL, "bad fields", "{s:s", "a", "b");
    qn_log_warn(NULL, "override", "{s:s, s:s}", "level", "debug", "x", "y");
    qn_log_warn(NULL, "bytes \xff\xfe here", NULL);
    out = drain();
    char *line2 = strchr(out, '\n') + 1;
    char *line3 = strchr(line2, '\n') + 1;
    j = json_loadb(out, (size_t)(line2 - out), 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "bad fields");
    assert_null(json_object_get(j, "a"));
    json_decref(j);
    j = json_loadb(line2, (size_t)(line3 - line2), 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
    assert_string_equal(json_string_value(json_object_get(j, "x")), "y");
    json_decref(j);
    j = json_loads(line3, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "bytes ?? here");
    json_decref(j);
}

static void test_level_parse(void **state)
{
    static const struct { const char *s; int rc; qn_log_level want; } cases[] = {
        {"debug", 0, QN_LOG_DEBUG}, {"info", 0, QN_LOG_INFO}, {"warn", 0, QN_LOG_WARN},
        {"warning", 0, QN_LOG_WARN}, {"error", 0, QN_LOG_ERROR}, {"INFO", 0, QN_LOG_INFO},
        {"verbose", -3, 0}, {"", -3, 0}, {NULL, -3, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        qn_log_level l = QN_LOG_ERROR;
        assert_int_equal(qn_log_level_parse(cases[i].s, &l), cases[i].rc);
        if (cases[i].rc == 0)
            assert_int_equal(l, cases[i].want);
    }
}

#define NTHREADS 8
#define NLINES 2000

static void *spam(void *p)
{
    int id = (int)(intptr_t)p;
    char pad[300];
    memset(pad, 'a' + id, sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < NLINES; i++)
        qn_log_info(NULL, "spam", "{s:i, s:i, s:s}", "t", id, "i", i, "pad", pad);
    return NULL;
}

static void test_threads_do_not_interleave(void **state)
{
    const char *work = getenv("QUERN_TEST_WORK");
    char path[512];
    snprintf(path, sizeof path, "%s/log_threads.jsonl", work ? work : "/tmp");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    assert_true(fd >= 0);
    qn_log_init("svc", QN_LOG_INFO);
    qn_log_set_fd(fd);
    pthread_t th[NTHREADS];
    for (intptr_t i = 0; i < NTHREADS; i++)
        pthread_create(&th[i], NULL, spam, (void *)i);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    qn_log_set_fd(fds[1]);
    close(fd);

    FILE *f = fopen(path, "r");
    char line[4096];
    int count[NTHREADS] = {0}, lines = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        if (!j)
            fail_msg("line %d is not JSON: %.100s", lines, line);
        int t = (int)json_integer_value(json_object_get(j, "t"));
        int i = (int)json_integer_value(json_object_get(j, "i"));
        assert_int_equal(i, count[t]); /* each thread's lines in order */
        count[t]++;
        json_decref(j);
        lines++;
    }
    fclose(f);
    assert_int_equal(lines, NTHREADS * NLINES);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_line_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_levels_and_degraded, setup, teardown),
        cmocka_unit_test(test_level_parse),
        cmocka_unit_test_setup_teardown(test_threads_do_not_interleave, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
