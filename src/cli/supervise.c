/*
 * supervise.c - quern up / down / status: every service as a local process.
 *
 * `quern up` runs a supervisor that starts the services (registry first,
 * then the rest), writes each one's log under $QUERN_HOME/logs, restarts a
 * service that exits unexpectedly with a growing delay (1 s doubling to 30 s,
 * reset after a minute of good health), and records what runs in
 * $QUERN_HOME/run/supervisor.json. In the foreground it prints the status
 * table once everything is ready and stops everything on Ctrl-C; with
 * --detach it becomes a daemon and the command returns once all services are
 * ready. `quern down` signals the supervisor, which stops the services with
 * SIGTERM (each drains and flushes what it owes), then SIGKILL after 20 s.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/json.h"
#include "core/service.h"

#define MAX_BACKOFF_MS 30000
#define HEALTHY_RESET_MS 60000
#define STOP_GRACE_MS 20000
#define READY_TIMEOUT_MS 60000

typedef struct child {
    const cli_service *svc;
    pid_t pid;
    int64_t started_ms;
    int64_t backoff_ms;
    int64_t restart_at_ms; /* when a crashed child is due to start again */
    int restarts;
} child;

static volatile sig_atomic_t g_stop;
static child g_children[16];
static size_t g_nchildren;

static void on_signal(int sig)
{
    g_stop = sig;
}

/* $QUERN_HOME/rel (g_cli.arena: no length limit but the system's). */
static const char *home_path(const char *rel)
{
    return cli_printf("%s/%s", g_cli.home, rel);
}

/* The directory of the running quern binary: the services sit beside it.
 * Computed once, before any fork (g_cli.arena). */
static const char *bin_dir(void)
{
    static const char *dir;
    if (dir)
        return dir;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0 || (size_t)n >= sizeof exe - 1)
        return dir = ".";
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    return dir = cli_printf("%s", exe);
}

static const char *service_exe(const cli_service *s)
{
    return cli_printf("%s/quern-%s", bin_dir(), s->name);
}

static int service_installed(const cli_service *s)
{
    return access(service_exe(s), X_OK) == 0;
}

static void write_state(void)
{
    json_t *svcs = json_array();
    for (size_t i = 0; i < g_nchildren; i++) {
        child *c = &g_children[i];
        json_array_append_new(svcs, json_pack("{s:s, s:i, s:i, s:I, s:i}", "name", c->svc->name, "pid",
                                              (int)c->pid, "port", g_cli.port_base + c->svc->offset,
                                              "started_ms", (json_int_t)c->started_ms, "restarts",
                                              c->restarts));
    }
    json_t *st = json_pack("{s:i, s:i, s:o}", "pid", (int)getpid(), "port_base", g_cli.port_base,
                           "services", svcs);
    const char *path = home_path("run/supervisor.json"), *tmp = home_path("run/supervisor.json.tmp");
    if (json_dump_file(st, tmp, JSON_INDENT(2)) == 0)
        rename(tmp, path);
    json_decref(st);
}

static pid_t spawn(const cli_service *s)
{
    /* "127.0.0.1:" and a port always fit. */
    char listen[32], grpc[32];
    const char *exe = service_exe(s), *log = cli_printf("%s/logs/%s.log", g_cli.home, s->name);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", g_cli.port_base + s->offset);
    snprintf(grpc, sizeof grpc, "127.0.0.1:%d", g_cli.port_base + 6);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* child: its own log, the service URLs of its peers in the environment */
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
    }
    int nul = open("/dev/null", O_RDONLY);
    if (nul >= 0)
        dup2(nul, STDIN_FILENO);
    setenv("QUERN_HOME", g_cli.home, 1);
    for (size_t i = 0; i < cli_nservices; i++)
        setenv(cli_services[i].env, cli_service_url(&cli_services[i]), 0);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (strcmp(s->name, "serve") == 0)
        execl(exe, exe, "--listen", listen, "--grpc-listen", grpc, (char *)NULL);
    else
        execl(exe, exe, "--listen", listen, (char *)NULL);
    cli_err("cannot run %s: %s", exe, strerror(errno));
    _exit(127);
}

/* The console's address, printed once everything is up (when it runs). The
 * status table goes to stdout as JSON with --json: then the line goes to stderr. */
static void console_url(void)
{
    const cli_service *s = cli_service_find("console");
    if (!s || !service_installed(s))
        return;
    fprintf(g_cli.json ? stderr : stdout, "Console: http://127.0.0.1:%d/\n", g_cli.port_base + s->offset);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* GET /readyz: 1 ready, 0 not (yet). */
static int service_ready(const cli_service *s, json_t **why)
{
    qn_err err;
    char url[32];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", g_cli.port_base + s->offset);
    qn_client_opts o = {.base_url = url, .timeout_ms = 1000, .max_retries = -1};
    qn_client *c = qn_client_new(&o, &err);
    json_t *out = NULL;
    int rc = c ? qn_client_json(c, "GET", "/readyz", NULL, NULL, &out, &err) : -1;
    qn_client_free(c);
    if (why)
        *why = out;
    else
        json_decref(out);
    return rc == 200;
}

static void start_child(child *c)
{
    c->pid = spawn(c->svc);
    c->started_ms = now_ms();
    c->restart_at_ms = 0;
}

/* Stops every child: SIGTERM, then SIGKILL after the grace period. */
static void stop_all(void)
{
    for (size_t i = 0; i < g_nchildren; i++)
        if (g_children[i].pid > 0)
            kill(g_children[i].pid, SIGTERM);
    int64_t deadline = now_ms() + STOP_GRACE_MS;
    for (;;) {
        int alive = 0;
        for (size_t i = 0; i < g_nchildren; i++) {
            child *c = &g_children[i];
            if (c->pid > 0 && waitpid(c->pid, NULL, WNOHANG) == 0)
                alive++;
            else
                c->pid = 0;
        }
        if (!alive)
            break;
        if (now_ms() > deadline) {
            for (size_t i = 0; i < g_nchildren; i++)
                if (g_children[i].pid > 0) {
                    cli_err("quern-%s did not stop in time; killing it", g_children[i].svc->name);
                    kill(g_children[i].pid, SIGKILL);
                    waitpid(g_children[i].pid, NULL, 0);
                    g_children[i].pid = 0;
                }
            break;
        }
        usleep(50000);
    }
    write_state();
}

/* The supervisor loop: reap, restart with backoff, until asked to stop. The
 * registry (children[0] when present) starts first; the others once it is
 * ready, or after 15 s whatever its state (they retry their calls anyway). */
static int supervise(void)
{
    int64_t others_at = now_ms() + 15000;
    size_t started = 1;
    while (!g_stop) {
        if (started < g_nchildren &&
            (now_ms() >= others_at || strcmp(g_children[0].svc->name, "registry") != 0 ||
             (g_children[0].pid > 0 && service_ready(g_children[0].svc, NULL)))) {
            for (; started < g_nchildren; started++)
                start_child(&g_children[started]);
            write_state();
        }
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            for (size_t i = 0; i < g_nchildren; i++) {
                child *c = &g_children[i];
                if (c->pid != pid)
                    continue;
                int64_t ran = now_ms() - c->started_ms;
                c->backoff_ms = ran > HEALTHY_RESET_MS ? 1000
                                : c->backoff_ms ? (c->backoff_ms * 2 > MAX_BACKOFF_MS ? MAX_BACKOFF_MS
                                                                                     : c->backoff_ms * 2)
                                                : 1000;
                c->pid = 0;
                c->restart_at_ms = now_ms() + c->backoff_ms;
                cli_err("quern-%s exited (%s %d) after %.1f s; restarting in %.1f s", c->svc->name,
                        WIFSIGNALED(status) ? "signal" : "status",
                        WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), ran / 1000.0,
                        c->backoff_ms / 1000.0);
            }
        }
        for (size_t i = 0; i < g_nchildren; i++) {
            child *c = &g_children[i];
            if (c->pid == 0 && c->restart_at_ms && now_ms() >= c->restart_at_ms) {
                start_child(c);
                c->restarts++;
                write_state();
            }
        }
        usleep(100000);
    }
    stop_all();
    unlink(home_path("run/supervisor.json"));
    return 0;
}

/* GET /healthz: 1 when the process answers. */
static int service_live(const cli_service *s)
{
    qn_err err;
    char url[32];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", g_cli.port_base + s->offset);
    qn_client_opts o = {.base_url = url, .timeout_ms = 1000, .max_retries = -1};
    qn_client *c = qn_client_new(&o, &err);
    int rc = c ? qn_client_json(c, "GET", "/healthz", NULL, NULL, NULL, &err) : -1;
    qn_client_free(c);
    return rc == 200;
}

/* Waits until every service is ready. Serve without QUERN_MODELS follows
 * every model's production alias and is ready once it has read the
 * registry's list, with zero models on a fresh machine. With QUERN_MODELS it
 * turns ready only once each model named there has a version, which none has
 * before the first training, so then it only has to be alive. */
static int wait_ready(int64_t timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    const char *models = getenv("QUERN_MODELS");
    int listed = models && *models;
    for (size_t i = 0; i < g_nchildren; i++) {
        const cli_service *s = g_children[i].svc;
        int serve = listed && strcmp(s->name, "serve") == 0;
        while (!(serve ? service_live(s) : service_ready(s, NULL))) {
            if (now_ms() > deadline || g_stop) {
                cli_err("quern-%s is not %s after %lld s; its log: %s/logs/%s.log", s->name,
                        serve ? "answering" : "ready", (long long)(timeout_ms / 1000), g_cli.home, s->name);
                return -1;
            }
            usleep(50000);
        }
    }
    return 0;
}

/* Reads the supervisor state; NULL when no supervisor runs. */
static json_t *read_state(void)
{
    const char *path = home_path("run/supervisor.json");
    json_t *st = json_load_file(path, 0, NULL);
    if (!st)
        return NULL;
    pid_t pid = (pid_t)json_integer_value(json_object_get(st, "pid"));
    if (pid <= 0 || kill(pid, 0) != 0) {
        json_decref(st);
        unlink(path); /* stale: the supervisor is gone */
        return NULL;
    }
    return st;
}

static int status_table(void);

typedef struct up_opts {
    int detach;
    const char *services;
} up_opts;

static const cli_opt up_table[] = {
    {"detach", 'd', CLI_FLAG, NULL, 0, 0, NULL, 0, "run in the background; return once every service is ready",
     offsetof(up_opts, detach)},
    {"services", 0, CLI_STR, NULL, 0, 0, NULL, 0, "only these, comma-separated (e.g. registry,ingest)",
     offsetof(up_opts, services)},
};

static int up(const void *opts)
{
    const up_opts *o = opts;
    int detach = o->detach;
    const char *only = o->services;
    json_t *running = read_state();
    if (running) {
        cli_err("services already run under %s (supervisor pid %lld); `quern status` shows them, "
                "`quern down` stops them",
                g_cli.home, (long long)json_integer_value(json_object_get(running, "pid")));
        json_decref(running);
        return CLI_CONFLICT;
    }
    qn_err err;
    if (qn_mkdir_p(home_path("logs"), &err) < 0)
        return cli_fail(NULL, &err);
    if (qn_mkdir_p(home_path("run"), &err) < 0)
        return cli_fail(NULL, &err);
    /* Services resolve ${QUERN_HOME} themselves: make it absolute so that a
     * daemon (which changes directory) and its children agree. */
    static char abs_home[PATH_MAX];
    if (realpath(g_cli.home, abs_home))
        g_cli.home = abs_home;

    for (size_t i = 0; i < cli_nservices; i++) {
        const cli_service *s = &cli_services[i];
        if (only && !strstr(only, s->name))
            continue;
        if (!service_installed(s))
            continue;
        g_children[g_nchildren++] = (child){.svc = s};
    }
    if (g_nchildren == 0) {
        cli_err("no service binaries found beside this quern; run `make build`");
        return CLI_FAILED;
    }

    if (detach) {
        pid_t pid = fork();
        if (pid < 0)
            return CLI_FAILED;
        if (pid > 0) {
            /* The parent waits for the daemon's state file, then for readiness. */
            int64_t deadline = now_ms() + 5000;
            while (!(running = read_state()) && now_ms() < deadline)
                usleep(20000);
            if (!running) {
                cli_err("the supervisor did not start; see %s/logs/supervisor.log", g_cli.home);
                return CLI_FAILED;
            }
            json_decref(running);
            if (wait_ready(READY_TIMEOUT_MS) < 0)
                return CLI_FAILED;
            status_table(); /* with QUERN_MODELS, serve may still wait for a first version */
            console_url();
            return CLI_OK;
        }
        setsid();
        int fd = open(home_path("logs/supervisor.log"), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* The registry first: the others fetch models and datasets from it. */
    start_child(&g_children[0]);
    write_state();
    if (!detach) {
        /* The foreground reports readiness from a child of its own, so the
         * supervisor loop below never waits on anything but its children. */
        pid_t reporter = fork();
        if (reporter == 0) {
            if (wait_ready(READY_TIMEOUT_MS) == 0) {
                status_table();
                console_url();
                printf("Quern is up (state in %s). Ctrl-C stops it.\n", g_cli.home);
            } else {
                kill(getppid(), SIGTERM);
            }
            fflush(stdout);
            _exit(0);
        }
    }
    return supervise();
}

const cli_cmd cli_cmd_up = CLI_CMD("up", "start every service on embedded defaults (--detach to return once ready)",
                                   "Starts every installed service under $QUERN_HOME, the registry first; restarts a\n"
                                   "service that exits, with a growing delay. In the foreground, Ctrl-C stops them.",
                                   up_table, up_opts, up);

static int down(const void *opts)
{
    (void)opts;
    json_t *st = read_state();
    if (!st) {
        cli_err("nothing runs under %s", g_cli.home);
        return CLI_OK;
    }
    pid_t pid = (pid_t)json_integer_value(json_object_get(st, "pid"));
    json_decref(st);
    if (kill(pid, SIGTERM) != 0) {
        cli_err("cannot signal the supervisor (pid %d): %s", (int)pid, strerror(errno));
        return CLI_FAILED;
    }
    int64_t deadline = now_ms() + STOP_GRACE_MS + 10000;
    while (kill(pid, 0) == 0 && now_ms() < deadline)
        usleep(50000);
    if (kill(pid, 0) == 0) {
        cli_err("the supervisor (pid %d) is still running", (int)pid);
        return CLI_FAILED;
    }
    if (!g_cli.json)
        printf("Quern is down.\n");
    return CLI_OK;
}

const cli_cmd cli_cmd_down = CLI_CMD_NOOPTS("down", "stop the services started by `quern up`",
                                           "SIGTERM to each (it drains and flushes), SIGKILL after 20 s.", down);

/* The version a service reports in quern_build_info ("-" when it does not). */
static const char *service_version(const cli_service *s)
{
    qn_err err;
    char url[32];
    const char *out = "-";
    snprintf(url, sizeof url, "http://127.0.0.1:%d", g_cli.port_base + s->offset);
    qn_client_opts o = {.base_url = url, .timeout_ms = 1000, .max_retries = -1};
    qn_client *c = qn_client_new(&o, &err);
    qn_buf b;
    qn_buf_init(&b, 1 << 22);
    if (c && qn_client_raw(c, "GET", "/metrics", NULL, NULL, 0, NULL, &b, &err) == 200 && b.data) {
        const char *p = strstr(b.data, "quern_build_info{");
        const char *v = p ? strstr(p, "version=\"") : NULL;
        if (v) {
            v += 9;
            size_t n = strcspn(v, "\"");
            out = cli_printf("%.*s", (int)n, v);
        }
    }
    qn_buf_free(&b);
    qn_client_free(c);
    return out;
}

static int status_table(void)
{
    json_t *st = read_state();
    json_t *rows = json_array();
    int all_ready = 1;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    for (size_t i = 0; i < cli_nservices; i++) {
        const cli_service *s = &cli_services[i];
        json_t *entry = NULL;
        size_t k;
        json_t *e;
        json_array_foreach(json_object_get(st, "services"), k, e)
            if (strcmp(json_string_value(json_object_get(e, "name")), s->name) == 0)
                entry = e;
        if (!entry && !service_installed(s))
            continue;
        char uptime[64] = "-";
        int ready = service_ready(s, NULL);
        const char *version = service_version(s);
        int pid = entry ? (int)json_integer_value(json_object_get(entry, "pid")) : 0;
        if (entry && pid > 0) {
            int64_t up = (now - json_integer_value(json_object_get(entry, "started_ms"))) / 1000;
            snprintf(uptime, sizeof uptime, "%lldh%02lldm%02llds", (long long)(up / 3600),
                     (long long)(up / 60 % 60), (long long)(up % 60));
        }
        /* Under a supervisor, the services it runs decide the exit code (a
         * service left out with --services is shown, not counted). */
        if (entry || !st)
            all_ready &= ready;
        json_array_append_new(rows, json_pack("{s:s, s:o, s:i, s:b, s:s, s:s, s:i}", "service", s->name,
                                              "pid", pid > 0 ? json_integer(pid) : json_null(), "port",
                                              g_cli.port_base + s->offset, "ready", ready, "uptime", uptime,
                                              "version", version, "restarts",
                                              entry ? (int)json_integer_value(json_object_get(entry, "restarts"))
                                                    : 0));
    }
    static const char *const headers[] = {"SERVICE", "PID", "PORT", "READY", "UPTIME", "VERSION", "RESTARTS", NULL};
    static const char *const paths[] = {"service", "pid", "port", "ready", "uptime", "version", "restarts"};
    cli_print_table(rows, headers, paths);
    json_decref(rows);
    json_decref(st);
    return all_ready ? CLI_OK : CLI_FAILED;
}

static int status(const void *opts)
{
    (void)opts;
    return status_table();
}

const cli_cmd cli_cmd_status = CLI_CMD_NOOPTS("status", "a table of the services: pid, port, ready, uptime, version",
                                              "Exits 1 when a service is not ready.", status);
