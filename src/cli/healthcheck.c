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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

/* Reads a NUL-separated /proc file whole (bounded). Returns its length, or -1. */
static ssize_t read_proc(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    return (ssize_t)n;
}

/* The listen address PID 1 was given, when PID 1 is a quern-<service>: its
 * --listen flag, else its QUERN_LISTEN. -1 when PID 1 is anything else. */
static int pid1_listen(char *out, size_t cap)
{
    static char buf[65536];
    ssize_t n = read_proc("/proc/1/cmdline", buf, sizeof buf);
    const char *slash = n > 0 ? strrchr(buf, '/') : NULL;
    if (n <= 0 || strncmp(slash ? slash + 1 : buf, "quern-", 6) != 0)
        return -1;
    for (ssize_t i = 0; n > 0 && i < n; i += (ssize_t)strlen(buf + i) + 1) {
        const char *arg = buf + i;
        if (strncmp(arg, "--listen=", 9) == 0) {
            snprintf(out, cap, "%s", arg + 9);
            return 0;
        }
        if (strcmp(arg, "--listen") == 0 && i + (ssize_t)strlen(arg) + 1 < n) {
            snprintf(out, cap, "%s", arg + strlen(arg) + 1);
            return 0;
        }
    }
    n = read_proc("/proc/1/environ", buf, sizeof buf);
    for (ssize_t i = 0; n > 0 && i < n; i += (ssize_t)strlen(buf + i) + 1) {
        if (strncmp(buf + i, "QUERN_LISTEN=", 13) == 0 && buf[i + 13]) {
            snprintf(out, cap, "%s", buf + i + 13);
            return 0;
        }
    }
    return -1;
}

/* "HOST:PORT" -> "http://HOST:PORT", a wildcard or empty host becoming loopback. */
static int listen_to_url(const char *listen, char *url, size_t cap)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || !colon[1])
        return -1;
    size_t hlen = (size_t)(colon - listen);
    const char *host = listen;
    if (hlen == 0 || (hlen == 7 && strncmp(listen, "0.0.0.0", 7) == 0) ||
        (hlen == 2 && strncmp(listen, "::", 2) == 0) || (hlen == 4 && strncmp(listen, "[::]", 4) == 0)) {
        host = "127.0.0.1";
        hlen = strlen(host);
    }
    int w = snprintf(url, cap, "http://%.*s:%s", (int)hlen, host, colon + 1);
    return w > 0 && (size_t)w < cap ? 0 : -1;
}

int cmd_healthcheck(int argc, char **argv)
{
    static const char usage[] = "quern healthcheck [--ready] [URL]";
    const char *path = "/healthz", *url = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--ready") == 0)
            path = "/readyz";
        else if (strcmp(argv[i], "--help") == 0)
            return printf("usage: %s\n", usage), CLI_OK;
        else if (argv[i][0] != '-' && !url)
            url = argv[i];
        else
            return cli_usage(usage);
    }

    char base[512], listen[256];
    if (url) {
        /* A full URL is asked as is; a bare base gets the path appended. */
        const char *p = strstr(url, "://");
        if (p && strchr(p + 3, '/')) {
            const char *slash = strchr(p + 3, '/');
            snprintf(base, sizeof base, "%.*s", (int)(slash - url), url);
            path = slash;
        } else {
            snprintf(base, sizeof base, "%s", url);
        }
    } else {
        const char *env = getenv("QUERN_LISTEN");
        if (pid1_listen(listen, sizeof listen) < 0) {
            if (!env || !*env) {
                fprintf(stderr, "quern: healthcheck: no URL given, and neither PID 1's --listen "
                                "nor QUERN_LISTEN says where the service listens\n");
                return CLI_USAGE;
            }
            snprintf(listen, sizeof listen, "%s", env);
        }
        if (listen_to_url(listen, base, sizeof base) < 0) {
            fprintf(stderr, "quern: healthcheck: listen address \"%s\" is not HOST:PORT\n", listen);
            return CLI_USAGE;
        }
    }

    qn_err err;
    qn_client_opts o = {.base_url = base, .timeout_ms = 3000, .connect_timeout_ms = 1000,
                        .max_retries = -1, .user_agent = "quern-healthcheck/" QUERN_VERSION};
    qn_client *c = qn_client_new(&o, &err);
    if (!c) {
        fprintf(stderr, "quern: healthcheck: %s\n", err.msg);
        return CLI_USAGE;
    }
    int rc = qn_client_raw(c, "GET", path, NULL, NULL, 0, NULL, NULL, &err);
    qn_client_free(c);
    if (rc < 200 || rc > 299) {
        fprintf(stderr, "quern: healthcheck %s%s: %s\n", base, path, rc < 0 ? err.msg : "not 2xx");
        return CLI_FAILED;
    }
    return CLI_OK;
}
