/*
 * healthcheck.c - `quern healthcheck [--ready] [URL]`: the container health
 * check (deploy/container/Containerfile, deploy/compose.yaml).
 *
 * The image holds every service but has one HEALTHCHECK, and the runtime image
 * has no curl. So with no URL this finds the service it runs beside: the
 * container's PID 1 is the service (the entrypoint execs it), and when PID 1
 * is a quern-<service>, its --listen flag or QUERN_LISTEN (read from /proc/1)
 * says where it listens; our own QUERN_LISTEN is the last resort. A wildcard host (0.0.0.0, ::) is
 * asked on loopback. GET /healthz (or /readyz with --ready), one try, 3 s:
 * exit 0 on 2xx, 1 otherwise, 2 when there is nothing to ask. Hidden from
 * `quern --help`: people use `quern status`.
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/buf.h"

/* Reads a NUL-separated /proc file whole into b (at most b->max bytes, far
 * more than the kernel's argument and environment limits). Returns its
 * length, or -1. */
static ssize_t read_proc(const char *path, qn_buf *b)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char chunk[65536];
    ssize_t r;
    while ((r = read(fd, chunk, sizeof chunk)) > 0)
        if (qn_buf_append(b, chunk, (size_t)r) < 0)
            break;
    close(fd);
    if (qn_buf_append(b, "", 1) < 0) /* the terminating NUL of the last string */
        return -1;
    return (ssize_t)b->len - 1;
}

/* The listen address PID 1 was given, when PID 1 is a quern-<service>: its
 * --listen flag, else its QUERN_LISTEN. NULL when PID 1 is anything else. */
static const char *pid1_listen(void)
{
    const char *found = NULL;
    qn_buf b;
    qn_buf_init(&b, 64u << 20);
    ssize_t n = read_proc("/proc/1/cmdline", &b);
    const char *buf = b.data;
    const char *slash = n > 0 ? strrchr(buf, '/') : NULL;
    if (n <= 0 || strncmp(slash ? slash + 1 : buf, "quern-", 6) != 0)
        goto out;
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1) {
        const char *arg = buf + i;
        if (strncmp(arg, "--listen=", 9) == 0) {
            found = cli_printf("%s", arg + 9);
            goto out;
        }
        if (strcmp(arg, "--listen") == 0 && i + (ssize_t)strlen(arg) + 1 < n) {
            found = cli_printf("%s", arg + strlen(arg) + 1);
            goto out;
        }
    }
    qn_buf_reset(&b);
    n = read_proc("/proc/1/environ", &b);
    buf = b.data;
    for (ssize_t i = 0; n > 0 && i < n; i += (ssize_t)strlen(buf + i) + 1) {
        if (strncmp(buf + i, "QUERN_LISTEN=", 13) == 0 && buf[i + 13]) {
            found = cli_printf("%s", buf + i + 13);
            goto out;
        }
    }
out:
    qn_buf_free(&b);
    return found;
}

/* "HOST:PORT" -> "http://HOST:PORT", a wildcard or empty host becoming
 * loopback; NULL when listen is not HOST:PORT. */
static const char *listen_to_url(const char *listen)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || !colon[1])
        return NULL;
    size_t hlen = (size_t)(colon - listen);
    const char *host = listen;
    if (hlen == 0 || (hlen == 7 && strncmp(listen, "0.0.0.0", 7) == 0) ||
        (hlen == 2 && strncmp(listen, "::", 2) == 0) || (hlen == 4 && strncmp(listen, "[::]", 4) == 0)) {
        host = "127.0.0.1";
        hlen = strlen(host);
    }
    return cli_printf("http://%.*s:%s", (int)hlen, host, colon + 1);
}

typedef struct healthcheck_opts {
    const char *url;
    int ready;
} healthcheck_opts;

static const cli_opt healthcheck_table[] = {
    {"URL", 0, CLI_STR, NULL, 0, 0, NULL, 0, "a service's base URL, or a full URL to GET (default: the service beside)",
     offsetof(healthcheck_opts, url)},
    {"ready", 0, CLI_FLAG, NULL, 0, 0, NULL, 0, "ask /readyz instead of /healthz", offsetof(healthcheck_opts, ready)},
};

static int healthcheck(const void *opts)
{
    const healthcheck_opts *ho = opts;
    const char *path = ho->ready ? "/readyz" : "/healthz", *url = ho->url, *base;
    if (url) {
        /* A full URL is asked as is; a bare base gets the path appended. */
        const char *p = strstr(url, "://");
        const char *slash = p ? strchr(p + 3, '/') : NULL;
        if (slash) {
            base = cli_printf("%.*s", (int)(slash - url), url);
            path = slash;
        } else {
            base = url;
        }
    } else {
        const char *listen = pid1_listen();
        if (!listen) {
            const char *env = getenv("QUERN_LISTEN");
            if (!env || !*env) {
                cli_err("healthcheck: no URL given, and neither PID 1's --listen nor QUERN_LISTEN says "
                        "where the service listens");
                return CLI_USAGE;
            }
            listen = env;
        }
        if (!(base = listen_to_url(listen))) {
            cli_err("healthcheck: listen address \"%s\" is not HOST:PORT", listen);
            return CLI_USAGE;
        }
    }

    qn_err err;
    qn_client_opts o = {.base_url = base, .timeout_ms = 3000, .connect_timeout_ms = 1000,
                        .max_retries = -1, .user_agent = "quern-healthcheck/" QUERN_VERSION};
    qn_client *c = qn_client_new(&o, &err);
    if (!c) {
        cli_err("healthcheck: %s", err.msg);
        return CLI_USAGE;
    }
    int rc = qn_client_raw(c, "GET", path, NULL, NULL, 0, NULL, NULL, &err);
    qn_client_free(c);
    if (rc < 200 || rc > 299) {
        cli_err("healthcheck %s%s: %s", base, path, rc < 0 ? err.msg : "not 2xx");
        return CLI_FAILED;
    }
    return CLI_OK;
}

/* Hidden from `quern help` (no summary): people use `quern status`. */
const cli_cmd cli_cmd_healthcheck = CLI_CMD(
    "healthcheck", NULL,
    "GET /healthz (or /readyz with --ready) of URL, or of the service this container runs;\n"
    "exit 0 on 2xx, 1 otherwise, 2 when there is nothing to ask.",
    healthcheck_table, healthcheck_opts, healthcheck);
