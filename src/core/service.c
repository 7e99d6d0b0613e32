/*
 * service.c - the main() every Quern service shares (see service.h).
 *
 * Signals are blocked before any thread exists, so every thread inherits the
 * mask and the only place SIGTERM/SIGINT/SIGHUP are ever delivered is the
 * sigwait() on the main thread: the shutdown sequence then runs as plain
 * code, not inside a signal handler.
 *
 * The stop runs in nginx's order: stop accepting (readiness off, listening
 * socket closed), answer what arrives on open connections with 503 and
 * Connection: close without running a handler, drain the requests under
 * way, join the HTTP server's threads, and only then let the service free
 * the state its handlers use (def->stop). Freeing first was a
 * use-after-free: an idle kept-alive connection could still send a request
 * into freed state.
 */
#include "core/service.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "core/log.h"
#include "core/otel.h"

#ifndef QUERN_VERSION
#define QUERN_VERSION "unknown"
#endif

#define TOKEN_MAX 4096
/* How long a stopping service spends sending its last spans. */
#define OTEL_FLUSH_MS 3000

int qn_mkdir_p(const char *dir, qn_err *err)
{
    char path[4096];
    size_t n = strlen(dir);
    struct stat st;

    if (n == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "directory name is empty");
    if (n >= sizeof path)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "directory name %.64s... is too long", dir);
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        char c = path[i];
        path[i] = '\0';
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            return qn_err_set(err, QN_INTERNAL, "cannot create directory %s: %s", path,
                              strerror(errno));
        path[i] = c;
    }
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
        return qn_err_set(err, QN_INTERNAL, "%s exists and is not a directory", dir);
    return 0;
}

/* The token from --token-file (trailing whitespace trimmed) or --token.
 * *out is NULL when auth is off. */
static int resolve_token(const qn_common_cfg *c, char **out, qn_err *err)
{
    *out = NULL;
    if (c->token_file && *c->token_file) {
        FILE *f = fopen(c->token_file, "r");
        if (!f)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "--token-file %s: %s", c->token_file,
                              strerror(errno));
        char *buf = malloc(TOKEN_MAX + 1);
        if (!buf) {
            fclose(f);
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory reading the token");
        }
        size_t n = fread(buf, 1, TOKEN_MAX + 1, f);
        int bad = ferror(f);
        fclose(f);
        if (bad || n > TOKEN_MAX) {
            free(buf);
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              bad ? "--token-file %s: cannot read it"
                                  : "--token-file %s: longer than 4096 bytes",
                              c->token_file);
        }
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
                         buf[n - 1] == '\t'))
            n--;
        buf[n] = '\0';
        /* An empty file silently turning auth off would be a nasty surprise. */
        if (n == 0 || memchr(buf, '\0', n)) {
            free(buf);
            return qn_err_set(err, QN_INVALID_ARGUMENT, "--token-file %s: %s", c->token_file,
                              n == 0 ? "the file is empty" : "the token holds a NUL byte");
        }
        *out = buf;
        return 0;
    }
    if (c->token && *c->token) {
        *out = strdup(c->token);
        if (!*out)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory copying the token");
    }
    return 0;
}

/* Raises the soft open-file limit to the hard one (as nginx's
 * worker_rlimit_nofile and Go's runtime do): every connection is a file
 * descriptor, and the default soft limit (often 1024) is below what
 * --max-connections allows. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            qn_log_warn(NULL, "cannot raise the open-file limit", "{s:I, s:s}", "nofile",
                        (json_int_t)was, "error", strerror(errno));
    }
}

/* The host part of HOST:PORT / [V6]:PORT, for the "listening" line. */
static void listen_host(const char *listen, char *out, size_t cap)
{
    const char *s = listen, *e = strrchr(listen, ':');
    if (*s == '[') {
        s++;
        e = strchr(s, ']');
    }
    size_t n = e ? (size_t)(e - s) : strlen(s);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

int qn_service_main(const qn_service_def *def, int argc, char **argv)
{
    char prog[128], host[256];
    qn_err err;
    qn_common_cfg *common;
    qn_metrics *metrics = NULL;
    qn_http *http = NULL;
    char *token = NULL;
    int started = 0, exit_code = 1, rc;
    sigset_t set;
    qn_service_ctx ctx = {0};

    snprintf(prog, sizeof prog, "quern-%s", def->name);
    void *cfg = calloc(1, def->cfg_size);
    if (!cfg) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return 1;
    }
    common = cfg;
    rc = qn_config_parse(def->opts, def->nopts, cfg, prog, def->summary, argc, argv, &err);
    if (rc == QN_CONFIG_EXIT) {
        free(cfg);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        free(cfg);
        return 2;
    }

    qn_log_level level;
    if (!common->log_level || qn_log_level_parse(common->log_level, &level) < 0) {
        fprintf(stderr, "%s: --log-level: \"%s\" is not one of debug, info, warn, error\n", prog,
                common->log_level ? common->log_level : "");
        exit_code = 2;
        goto out;
    }
    if (!common->listen || !common->data) {
        fprintf(stderr, "%s: --listen and --data need values\n", prog);
        exit_code = 2;
        goto out;
    }
    if (resolve_token(common, &token, &err) < 0) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        exit_code = 2;
        goto out;
    }
    qn_log_init(def->name, level);
    raise_nofile();

    /* Before any thread: every thread inherits the mask. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (qn_mkdir_p(common->data, &err) < 0) {
        qn_log_error(NULL, "cannot create the data directory", "{s:s, s:s}", "dir", common->data,
                     "error", err.msg);
        goto out;
    }
    metrics = qn_metrics_new();
    if (!metrics) {
        qn_log_error(NULL, "out of memory", NULL);
        goto out;
    }
    const char *const lnames[] = {"service", NULL};
    const char *const lvals[] = {def->name, NULL};
    qn_metrics_const_labels(metrics, lnames, lvals);
    static const char *const vlabel[] = {"version", NULL};
    const char *const vval[] = {QUERN_VERSION};
    qn_gauge_set(qn_metrics_gauge(metrics, "quern_build_info", "Always 1; the version in a label.",
                                  vlabel),
                 vval, 1);
    /* When the process started (Unix seconds), as Prometheus' client libraries
     * export it: uptime for `quern status` and the console. */
    qn_gauge_set(qn_metrics_gauge(metrics, "process_start_time_seconds",
                                  "Start time of the process since the Unix epoch in seconds.", NULL),
                 NULL, (double)time(NULL));

    if (common->otlp_endpoint && *common->otlp_endpoint) {
        qn_otel_opts oo = {.endpoint = common->otlp_endpoint, .service = prog, .metrics = metrics};
        if (qn_otel_start(&oo, &err) < 0) {
            fprintf(stderr, "%s: --otlp-endpoint: %s\n", prog, err.msg);
            exit_code = 2;
            goto out;
        }
        qn_log_info(NULL, "tracing on", "{s:s}", "otlp_endpoint", common->otlp_endpoint);
    }

    ctx.name = def->name;
    ctx.cfg = cfg;
    ctx.common = common;
    ctx.metrics = metrics;
    ctx.token = token;
    qn_err_clear(&err);
    if (def->start(&ctx, &err) < 0) {
        qn_log_error(NULL, "cannot start", "{s:s, s:s}", "error", err.msg, "code",
                     qn_code_name(err.code));
        goto out;
    }
    started = 1;

    qn_http_opts ho = {
        .service = def->name, .listen = common->listen, .threads = (unsigned)common->threads,
        .routes = ctx.routes, .nroutes = ctx.nroutes, .ud = ctx.ud, .metrics = metrics,
        .token = token, .auth_reads = common->auth_reads, .ready = def->ready,
        .max_connections = (unsigned)common->max_connections,
        .max_connections_per_client = (unsigned)common->max_client_conns,
        .header_timeout_ms = common->header_timeout_ms,
        .idle_timeout_ms = common->idle_timeout_ms,
    };
    http = qn_http_start(&ho, &err);
    if (!http) {
        qn_log_error(NULL, "cannot listen", "{s:s, s:s}", "listen", common->listen, "error",
                     err.msg);
        goto out;
    }
    listen_host(common->listen, host, sizeof host);
    qn_log_info(NULL, "listening", "{s:s, s:i, s:s, s:b}", "addr", host, "port",
                qn_http_port(http), "version", QUERN_VERSION, "auth", token != NULL);

    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            qn_log_info(NULL, "reload requested", NULL);
            if (def->reload)
                def->reload(&ctx);
            continue;
        }
        qn_log_info(NULL, "stopping", "{s:s, s:I}", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                    "drain_ms", (json_int_t)common->drain_ms);
        break;
    }
    qn_http_set_draining(http);
    if (qn_http_drain(http, common->drain_ms) < 0)
        qn_log_warn(NULL, "drain deadline passed with requests in flight; waiting for their handlers",
                    "{s:I}", "drain_ms", (json_int_t)common->drain_ms);
    /* Joins the server's threads: no handler runs after this, so the
     * service's state can go. */
    qn_http_stop(http);
    http = NULL;
    if (def->stop)
        def->stop(&ctx);
    started = 0;
    if (qn_otel_enabled()) {
        qn_otel_shutdown(OTEL_FLUSH_MS);
        qn_otel_stats st;
        qn_otel_stats_get(&st);
        qn_log_info(NULL, "spans flushed", "{s:I, s:I, s:I}", "exported", (json_int_t)st.exported,
                    "dropped_queue", (json_int_t)st.dropped_queue, "dropped_export",
                    (json_int_t)st.dropped_export);
    }
    qn_log_info(NULL, "stopped", NULL);
    exit_code = 0;
out:
    if (http)
        qn_http_stop(http);
    if (started && def->stop)
        def->stop(&ctx);
    qn_otel_shutdown(0); /* before the metrics it counts into */
    qn_metrics_free(metrics);
    free(token);
    qn_config_free(def->opts, def->nopts, cfg);
    free(cfg);
    return exit_code;
}

void qn_service_client_opts(const qn_service_ctx *ctx, const char *upstream, qn_client_opts *o)
{
    o->name = upstream;
    o->token = ctx->token;
    o->metrics = ctx->metrics;
    o->breaker_failures = ctx->common->breaker_failures > 0 ? (int)ctx->common->breaker_failures : -1;
    o->breaker_cooldown_ms = (long)ctx->common->breaker_cooldown_ms;
}
