/*
 * test_service.c - qn_service_main end to end in a forked child: config
 * errors exit 2, the "listening" line carries the real port, the token file
 * turns auth on, SIGHUP reloads, SIGTERM drains an in-flight request and
 * exits 0; the stop hook (which frees the handlers' state) runs only once
 * no handler can run any more, even past the drain deadline; qn_mkdir_p.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/service.h"

typedef struct svc_cfg {
    qn_common_cfg common;
    long long slow_ms;
} svc_cfg;

static const qn_cfg_opt opts[] = {
    QN_CFG_COMMON(svc_cfg, "127.0.0.1:0", "svc"),
    {"slow", "QUERN_SLOW", QN_CFG_DURATION, "500ms", 0, 60000, "How slow /v1/slow is",
     offsetof(svc_cfg, slow_ms)},
};

/* Stands for the service state the stop hook frees: a handler that runs
 * after it would be a use-after-free in a real service. */
static atomic_int state_freed, handlers_running;

static int h_slow(qn_req *req, qn_res *res, void *ud)
{
    svc_cfg *c = ud;
    atomic_fetch_add(&handlers_running, 1);
    usleep((useconds_t)c->slow_ms * 1000);
    if (atomic_load(&state_freed))
        qn_log_error(NULL, "handler ran on freed state", NULL);
    atomic_fetch_sub(&handlers_running, 1);
    return qn_res_json(res, 200, json_pack("{s:s}", "done", "yes"));
}

static int h_post(qn_req *req, qn_res *res, void *ud)
{
    return qn_res_json(res, 200, json_pack("{s:b}", "posted", 1));
}

static const qn_route routes[] = {
    {"GET", "/v1/slow", h_slow, 0, 0, NULL},
    {"POST", "/v1/post", h_post, 0, 0, NULL},
};

static int svc_start(qn_service_ctx *ctx, qn_err *err)
{
    ctx->routes = routes;
    ctx->nroutes = QN_NELEM(routes);
    ctx->ud = ctx->cfg;
    return 0;
}

static void svc_stop(qn_service_ctx *ctx)
{
    qn_log_info(NULL, "svc stop hook", "{s:i}", "handlers_running", atomic_load(&handlers_running));
    atomic_store(&state_freed, 1);
}

static void svc_reload(qn_service_ctx *ctx)
{
    qn_log_info(NULL, "svc reloaded", NULL);
}

static const qn_service_def def = {
    .name = "svc", .summary = "A test service.", .opts = opts, .nopts = QN_NELEM(opts),
    .cfg_size = sizeof(svc_cfg), .start = svc_start, .stop = svc_stop, .reload = svc_reload,
};

typedef struct child {
    pid_t pid;
    FILE *err;   /* the child's stderr */
    qn_buf log;  /* everything read so far */
    int port;
} child;

static void spawn(child *c, char **args)
{
    int fds[2];
    memset(c, 0, sizeof *c);
    qn_buf_init(&c->log, 1 << 20);
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    c->pid = fork();
    assert_true(c->pid >= 0);
    if (c->pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        int argc = 0;
        while (args[argc])
            argc++;
        _exit(qn_service_main(&def, argc, args));
    }
    close(fds[1]);
    c->err = fdopen(fds[0], "r");
}

/* Reads stderr lines until one contains needle; returns it (in a static). */
static const char *wait_line(child *c, const char *needle)
{
    static char line[4096];
    while (fgets(line, sizeof line, c->err)) {
        qn_buf_puts(&c->log, line);
        if (strstr(line, needle))
            return line;
    }
    return NULL;
}

static int finish(child *c)
{
    int st = 0;
    char line[4096];
    while (fgets(line, sizeof line, c->err))
        qn_buf_puts(&c->log, line);
    fclose(c->err);
    waitpid(c->pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void child_free(child *c)
{
    qn_buf_free(&c->log);
}

static void start_ok(child *c, char **args)
{
    spawn(c, args);
    const char *l = wait_line(c, "\"listening\"");
    assert_non_null(l);
    json_t *j = json_loads(l, 0, NULL);
    assert_non_null(j);
    c->port = (int)json_integer_value(json_object_get(j, "port"));
    assert_string_equal(json_string_value(json_object_get(j, "addr")), "127.0.0.1");
    assert_string_equal(json_string_value(json_object_get(j, "service")), "svc");
    json_decref(j);
    assert_true(c->port > 0);
}

static size_t sink(char *p, size_t sz, size_t n, void *ud)
{
    if (ud)
        qn_buf_append(ud, p, sz * n);
    return sz * n;
}

static long http(int port, const char *method, const char *path, const char *auth, qn_buf *out)
{
    char url[256];
    long code = 0;
    struct curl_slist *hs = NULL;
    CURL *c = curl_easy_init();
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    if (auth) {
        hs = curl_slist_append(hs, auth);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    }
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hs);
    curl_easy_cleanup(c);
    return code;
}

static char work[1024];

static int setup(void **state)
{
    const char *w = getenv("QUERN_TEST_WORK");
    snprintf(work, sizeof work, "%s/test_service", w ? w : "/tmp");
    unsetenv("QUERN_TOKEN");
    unsetenv("QUERN_TOKEN_FILE");
    unsetenv("QUERN_LISTEN");
    return 0;
}

static void test_bad_config_exits_2(void **state)
{
    child c;
    char *args[] = {"quern-svc", "--threads=0", NULL};
    spawn(&c, args);
    assert_int_equal(finish(&c), 2);
    assert_non_null(strstr(c.log.data, "--threads"));
    child_free(&c);

    char *args2[] = {"quern-svc", "--token-file", "/nonexistent/token", NULL};
    spawn(&c, args2);
    assert_int_equal(finish(&c), 2);
    assert_non_null(strstr(c.log.data, "/nonexistent/token"));
    child_free(&c);

    char *args3[] = {"quern-svc", "--log-level=loud", NULL};
    spawn(&c, args3);
    assert_int_equal(finish(&c), 2);
    child_free(&c);

    char *args4[] = {"quern-svc", "--listen=127.0.0.1:notaport", "--data", work, NULL};
    spawn(&c, args4);
    assert_int_equal(finish(&c), 1);
    child_free(&c);
}

typedef struct slow_arg {
    int port;
    long code;
} slow_arg;

static void *slow_thread(void *p)
{
    slow_arg *a = p;
    a->code = http(a->port, "GET", "/v1/slow", NULL, NULL);
    return NULL;
}

static void test_lifecycle(void **state)
{
    char tokfile[1100], data[1100];
    snprintf(data, sizeof data, "%s/data/nested", work);
    snprintf(tokfile, sizeof tokfile, "%s/token", work);
    qn_err err;
    assert_int_equal(qn_mkdir_p(work, &err), 0);
    FILE *f = fopen(tokfile, "w");
    assert_non_null(f);
    fputs("t0ken\n", f);
    fclose(f);

    child c;
    char *args[] = {"quern-svc", "--data", data, "--token-file", tokfile, "--slow=600ms", NULL};
    start_ok(&c, args);
    struct stat st;
    assert_int_equal(stat(data, &st), 0);
    assert_true(S_ISDIR(st.st_mode));

    qn_buf body;
    qn_buf_init(&body, 1 << 20);
    assert_int_equal(http(c.port, "GET", "/healthz", NULL, NULL), 200);
    assert_int_equal(http(c.port, "POST", "/v1/post", NULL, NULL), 401);
    assert_int_equal(http(c.port, "POST", "/v1/post", "Authorization: Bearer t0ken", NULL), 200);
    assert_int_equal(http(c.port, "GET", "/metrics", NULL, &body), 200);
    assert_non_null(strstr(body.data, "service=\"svc\""));
    assert_non_null(strstr(body.data, "route=\"/v1/post\""));
    qn_buf_free(&body);

    kill(c.pid, SIGHUP);
    assert_non_null(wait_line(&c, "svc reloaded"));

    slow_arg a = {c.port, 0};
    pthread_t t;
    pthread_create(&t, NULL, slow_thread, &a);
    usleep(200 * 1000);
    kill(c.pid, SIGTERM);
    pthread_join(t, NULL);
    assert_int_equal(a.code, 200); /* drained, not cut off */
    assert_int_equal(finish(&c), 0);
    const char *stop_hook = strstr(c.log.data, "svc stop hook");
    const char *stopped = strstr(c.log.data, "\"stopped\"");
    assert_non_null(stop_hook);
    assert_non_null(stopped);
    assert_true(stop_hook < stopped);
    child_free(&c);
}

/* A handler still running when the drain deadline passes: the stop hook
 * waits for it (the HTTP server's threads are joined first). It used to
 * run at once and free the state under the handler. */
static void test_stop_waits_for_handlers(void **state)
{
    char data[1100];
    snprintf(data, sizeof data, "%s/data/stop", work);
    child c;
    char *args[] = {"quern-svc", "--data", data, "--slow=1500ms", "--drain-timeout=200ms", NULL};
    start_ok(&c, args);
    slow_arg a = {c.port, 0};
    pthread_t t;
    pthread_create(&t, NULL, slow_thread, &a);
    usleep(300 * 1000);
    kill(c.pid, SIGTERM);
    assert_int_equal(finish(&c), 0);
    pthread_join(t, NULL);
    assert_non_null(strstr(c.log.data, "drain deadline passed"));
    assert_non_null(strstr(c.log.data, "\"handlers_running\":0"));
    assert_null(strstr(c.log.data, "handler ran on freed state"));
    child_free(&c);
}

static void test_version_and_help(void **state)
{
    child c;
    char *args[] = {"quern-svc", "--version", NULL};
    spawn(&c, args);
    assert_int_equal(finish(&c), 0);
    child_free(&c);
}

static void test_mkdir_p(void **state)
{
    char p[1200];
    qn_err err;
    snprintf(p, sizeof p, "%s/a/b/c/", work);
    assert_int_equal(qn_mkdir_p(p, &err), 0);
    assert_int_equal(qn_mkdir_p(p, &err), 0); /* idempotent */
    snprintf(p, sizeof p, "%s/file", work);
    FILE *f = fopen(p, "w");
    fclose(f);
    snprintf(p, sizeof p, "%s/file/sub", work);
    assert_int_equal(qn_mkdir_p(p, &err), QN_INTERNAL);
    assert_non_null(strstr(err.msg, "file"));
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_bad_config_exits_2, setup),
        cmocka_unit_test_setup(test_lifecycle, setup),
        cmocka_unit_test_setup(test_stop_waits_for_handlers, setup),
        cmocka_unit_test_setup(test_version_and_help, setup),
        cmocka_unit_test_setup(test_mkdir_p, setup),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
