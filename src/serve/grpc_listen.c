/*
 * grpc_listen.c - the gRPC port, bound and accepted by serve itself until
 * (and after) gRPC core starts (see grpc_listen.h for why).
 *
 * One thread polls the listening sockets and a pipe; closing writes to the
 * pipe and joins the thread, so no callback runs after close returns. The
 * sockets are set up the way gRPC's own TCP server sets them up (address
 * reuse, no port sharing, dual-stack wildcard; accepted sockets
 * non-blocking, close-on-exec and without Nagle's delay), so a client
 * cannot tell the two apart.
 */
#include "serve/grpc_listen.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"

struct serve_listener {
    int fds[SERVE_LISTEN_MAX_FDS];
    int nfds;
    int port;
    int wake[2]; /* [0] polled by the thread; a byte on [1] stops it */
    pthread_t thread;
    int running;
    serve_listen_fn fn;
    void *ud;
};

/* Splits "HOST:PORT" / "[V6]:PORT" / ":PORT" into host (empty: wildcard)
 * and port text. */
static int split_listen(const char *listen, char *host, size_t hostsz, const char **port,
                        qn_err *err)
{
    const char *hs = listen, *colon;
    size_t hl;
    if (!*listen)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "grpc listen address is empty; want HOST:PORT");
    if (listen[0] == '[') {
        const char *rb = strchr(listen, ']');
        if (!rb || rb[1] != ':')
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "grpc listen address %s: want [IPV6]:PORT", listen);
        hs = listen + 1;
        hl = (size_t)(rb - hs);
        colon = rb + 1;
    } else {
        if (!(colon = strrchr(listen, ':')))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "grpc listen address %s has no port; want HOST:PORT", listen);
        hl = (size_t)(colon - listen);
    }
    *port = colon + 1;
    char *end;
    errno = 0;
    long p = strtol(*port, &end, 10);
    if (!**port || *end || errno || p < 0 || p > 65535)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "grpc listen address %s: port must be a number 0..65535", listen);
    if (hl >= hostsz)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "grpc listen address %s: host too long",
                          listen);
    memcpy(host, hs, hl);
    host[hl] = '\0';
    return 0;
}

static int is_wildcard(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return 0;
}

static void set_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

static int get_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t n = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &n) < 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

/* One listening socket on sa (its port already set); -1 with errno. */
static int bind_one(const struct sockaddr *sa, socklen_t len, int dual_stack)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1, v6only = !dual_stack;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        (sa->sa_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) < 0) ||
        bind(fd, sa, len) < 0 || listen(fd, SOMAXCONN) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

serve_listener *serve_listener_open(const char *listen, qn_err *err)
{
    char host[256];
    const char *port = NULL;
    struct addrinfo hints = {0}, *ai = NULL;
    serve_listener *l = NULL;
    int e = 0;

    if (split_listen(listen ? listen : "", host, sizeof host, &port, err) < 0)
        return NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int g = getaddrinfo(*host ? host : NULL, port, &hints, &ai);
    if (g != 0 || !ai) {
        qn_err_set(err, QN_INVALID_ARGUMENT, "grpc listen address %s: %s", listen,
                   gai_strerror(g));
        return NULL;
    }
    if (!(l = calloc(1, sizeof *l))) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "grpc listen: out of memory");
        goto out;
    }
    l->wake[0] = l->wake[1] = -1;
    if (pipe2(l->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "grpc listen: cannot make a pipe: %s",
                   strerror(errno));
        goto fail;
    }

    if (is_wildcard(ai->ai_addr)) {
        /* Any address: one dual-stack socket, as gRPC binds it. */
        uint16_t p = htons((uint16_t)atoi(port));
        struct sockaddr_in6 any6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT,
                                    .sin6_port = p};
        struct sockaddr_in any4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY),
                                   .sin_port = p};
        int fd = bind_one((struct sockaddr *)&any6, sizeof any6, 1);
        if (fd < 0 && (errno == EAFNOSUPPORT || errno == EADDRNOTAVAIL))
            fd = bind_one((struct sockaddr *)&any4, sizeof any4, 0);
        if (fd < 0)
            e = errno;
        else
            l->fds[l->nfds++] = fd;
    } else {
        /* Every address the name gives, on the first one's port. */
        for (struct addrinfo *x = ai; x && l->nfds < SERVE_LISTEN_MAX_FDS; x = x->ai_next) {
            struct sockaddr_storage ss;
            memcpy(&ss, x->ai_addr, x->ai_addrlen);
            if (l->nfds)
                set_port(&ss, l->port);
            int fd = bind_one((struct sockaddr *)&ss, x->ai_addrlen, 0);
            if (fd < 0) {
                e = errno;
                continue;
            }
            if (!l->nfds && (l->port = get_port(fd)) <= 0) {
                e = errno;
                close(fd);
                continue;
            }
            l->fds[l->nfds++] = fd;
        }
    }
    if (!l->nfds) {
        qn_err_set(err, QN_INVALID_ARGUMENT,
                   "grpc listen address %s: cannot bind (malformed, or in use): %s", listen,
                   strerror(e ? e : EINVAL));
        goto fail;
    }
    if (!l->port)
        l->port = get_port(l->fds[0]);
    goto out;
fail:
    serve_listener_close(l);
    l = NULL;
out:
    freeaddrinfo(ai);
    return l;
}

int serve_listener_port(const serve_listener *l)
{
    return l ? l->port : 0;
}

/* Waits up to ms for the stop byte; 1 when it came. */
static int stop_requested(serve_listener *l, int ms)
{
    struct pollfd p = {.fd = l->wake[0], .events = POLLIN};
    return poll(&p, 1, ms) > 0;
}

static void *accept_loop(void *arg)
{
    serve_listener *l = arg;
    struct pollfd p[SERVE_LISTEN_MAX_FDS + 1];
    for (int i = 0; i < l->nfds; i++)
        p[i] = (struct pollfd){.fd = l->fds[i], .events = POLLIN};
    p[l->nfds] = (struct pollfd){.fd = l->wake[0], .events = POLLIN};
    for (;;) {
        if (poll(p, (nfds_t)l->nfds + 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            qn_log_error(NULL, "grpc listen: poll failed", "{s:s}", "error", strerror(errno));
            if (stop_requested(l, 100))
                break;
            continue;
        }
        if (p[l->nfds].revents)
            break;
        for (int i = 0; i < l->nfds; i++) {
            if (!p[i].revents)
                continue;
            int fd = accept4(l->fds[i], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
                    errno == ECONNABORTED)
                    continue;
                qn_log_warn(NULL, "grpc listen: cannot accept a connection", "{s:s}", "error",
                            strerror(errno));
                /* Out of descriptors or memory: the connection stays in
                 * the backlog, so wait rather than spin on it. */
                if (stop_requested(l, 100))
                    return NULL;
                continue;
            }
            int one = 1;
            (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            l->fn(l->ud, fd);
        }
    }
    return NULL;
}

int serve_listener_start(serve_listener *l, serve_listen_fn fn, void *ud, qn_err *err)
{
    l->fn = fn;
    l->ud = ud;
    int e = pthread_create(&l->thread, NULL, accept_loop, l);
    if (e != 0)
        return qn_err_set(err, QN_INTERNAL, "grpc listen: cannot start the accept thread: %s",
                          strerror(e));
    pthread_setname_np(l->thread, "grpc-accept");
    l->running = 1;
    return 0;
}

void serve_listener_close(serve_listener *l)
{
    if (!l)
        return;
    if (l->running) {
        char b = 1;
        while (write(l->wake[1], &b, 1) < 0 && errno == EINTR)
            ;
        pthread_join(l->thread, NULL);
    }
    for (int i = 0; i < l->nfds; i++)
        close(l->fds[i]);
    for (int i = 0; i < 2; i++)
        if (l->wake[i] >= 0)
            close(l->wake[i]);
    free(l);
}
