/*
 * http_conn.c - connection limits and the request-head deadline of the HTTP
 * server (see http_conn.h).
 *
 * Refusing happens in the STARTED notification rather than in an accept
 * policy callback: libmicrohttpd calls STARTED only for connections it
 * really created and CLOSED for each of them, so the counts can never leak.
 * A refused connection gets a short canned answer and shutdown(2); its
 * worker thread then reads end-of-file and closes it as usual.
 * libmicrohttpd's own connection limit stays as a hard ceiling a little
 * above ours (http.c), so that file descriptors stay bounded even while
 * refused connections are being closed.
 *
 * When a kept-alive connection's next request starts is read from the
 * kernel (TCP_INFO tcpi_bytes_received, Linux >= 4.1) by the reaper: a
 * connection waiting for a request whose received-byte count has not moved
 * is idle, not slow.
 */
#include "core/http_conn.h"

#include <errno.h>
#include <jansson.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "core/log.h"

#define NBUCKETS 1024
/* How often refusals are logged (the metric counts every one). */
#define LOG_EVERY_MS 10000

enum { R_TOTAL, R_CLIENT, R_HEAD, R_MEMORY, R_N };
static const char *const reason_names[R_N] = {"total_limit", "client_limit", "head_timeout",
                                              "out_of_memory"};

typedef struct client {
    unsigned char key[16];
    unsigned n;
    struct client *next;
} client;

struct qn__conn {
    qn__conn *prev, *next;  /* list, under mu */
    int fd;
    int refused;            /* answered and shut down at once; not counted */
    int tracked_client;     /* counted in the client table */
    unsigned char key[16];
    /* Written by the connection's worker thread, read by the reaper. */
    atomic_int waiting;     /* 1: no complete request head since since_ms */
    atomic_llong since_ms;  /* accept, or the end of the previous request */
    atomic_uint gen;        /* requests finished on this connection */
    /* The reaper's own view (reaper thread only). */
    unsigned gen_seen;
    int base_ok, cut;
    uint64_t base;          /* bytes received when the wait began */
    long long start_ms;     /* when the next request's first byte was seen; 0: not yet */
};

struct qn__conns {
    qn__conn_limits lim;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    qn__conn *head;
    unsigned open;          /* connections counted (not refused) */
    client *buckets[NBUCKETS];
    int running, stopping;
    pthread_t reaper;
    qn_metric *m_refused, *m_open;
    uint64_t pending_log[R_N];
    long long last_log_ms[R_N];
};

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- the per-client table (under mu) -------------------------------------- */

/* IPv4 as ::ffff:a.b.c.d, so both families share one table. 0 when the
 * address is not IP (then no per-client cap applies). */
static int client_key(const struct sockaddr *sa, unsigned char key[16])
{
    if (!sa)
        return 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        memset(key, 0, 10);
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &s4->sin_addr, 4);
        return 1;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return 1;
    }
    return 0;
}

static client **client_slot(qn__conns *cs, const unsigned char key[16])
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    client **p = &cs->buckets[h % NBUCKETS];
    while (*p && memcmp((*p)->key, key, 16) != 0)
        p = &(*p)->next;
    return p;
}

static unsigned client_count(qn__conns *cs, const unsigned char key[16])
{
    client **p = client_slot(cs, key);
    return *p ? (*p)->n : 0;
}

static int client_inc(qn__conns *cs, const unsigned char key[16])
{
    client **p = client_slot(cs, key);
    if (!*p) {
        client *c = calloc(1, sizeof *c);
        if (!c)
            return -1;
        memcpy(c->key, key, 16);
        *p = c;
    }
    (*p)->n++;
    return 0;
}

static void client_dec(qn__conns *cs, const unsigned char key[16])
{
    client **p = client_slot(cs, key);
    if (*p && --(*p)->n == 0) {
        client *c = *p;
        *p = c->next;
        free(c);
    }
}

/* ---- refusals --------------------------------------------------------------- */

/* Counts a refusal; fills *log_n with how many to log now (0: not yet). */
static void count_refusal(qn__conns *cs, int reason, uint64_t *log_n)
{
    long long now = now_ms();
    cs->pending_log[reason]++;
    *log_n = 0;
    if (now - cs->last_log_ms[reason] >= LOG_EVERY_MS || cs->last_log_ms[reason] == 0) {
        *log_n = cs->pending_log[reason];
        cs->pending_log[reason] = 0;
        cs->last_log_ms[reason] = now;
    }
}

static void report_refusals(qn__conns *cs, int reason, uint64_t n_metric, uint64_t log_n)
{
    if (cs->m_refused && n_metric) {
        const char *v[] = {reason_names[reason]};
        qn_counter_add(cs->m_refused, v, (double)n_metric);
    }
    if (log_n)
        qn_log_warn(NULL, "connections refused", "{s:s, s:I, s:I, s:I, s:I}", "reason",
                    reason_names[reason], "count", (json_int_t)log_n, "max_connections",
                    (json_int_t)cs->lim.max_total, "max_connections_per_client",
                    (json_int_t)cs->lim.max_per_client, "header_timeout_ms",
                    (json_int_t)cs->lim.head_ms);
}

/* The canned answer of a refused connection; best effort (non-blocking). */
static void refuse(int fd, int reason, unsigned limit)
{
    char body[256], msg[512];
    int blen;
    if (reason == R_CLIENT)
        blen = snprintf(body, sizeof body,
                        "{\"error\":{\"code\":\"resource_exhausted\",\"message\":\"too many "
                        "connections from your address (at most %u at once)\"}}",
                        limit);
    else if (reason == R_MEMORY)
        blen = snprintf(body, sizeof body,
                        "{\"error\":{\"code\":\"unavailable\",\"message\":\"the server is out "
                        "of memory; try again later\"}}");
    else
        blen = snprintf(body, sizeof body,
                        "{\"error\":{\"code\":\"unavailable\",\"message\":\"the server has too "
                        "many open connections (at most %u); try again later\"}}",
                        limit);
    int n = snprintf(msg, sizeof msg,
                     "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     "Connection: close\r\nRetry-After: 1\r\n\r\n%s",
                     reason == R_CLIENT ? "429 Too Many Requests" : "503 Service Unavailable",
                     blen, body);
    if (n > 0 && (size_t)n < sizeof msg)
        (void)!send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    shutdown(fd, SHUT_RDWR);
}

/* ---- libmicrohttpd's notifications ----------------------------------------- */

static void conn_started(qn__conns *cs, struct MHD_Connection *mc, void **socket_context)
{
    const union MHD_ConnectionInfo *fi = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *ai = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    int fd = fi ? fi->connect_fd : -1;
    qn__conn *c = calloc(1, sizeof *c);
    int reason = -1;
    uint64_t log_n = 0;
    unsigned limit = 0;

    if (!c) {
        /* Cannot track it, so it cannot be bounded: refuse it, with an
         * answer that needs no memory. */
        pthread_mutex_lock(&cs->mu);
        count_refusal(cs, R_MEMORY, &log_n);
        pthread_mutex_unlock(&cs->mu);
        if (fd >= 0)
            refuse(fd, R_MEMORY, 0);
        report_refusals(cs, R_MEMORY, 1, log_n);
        return;
    }
    c->fd = fd;
    atomic_init(&c->waiting, 1);
    atomic_init(&c->since_ms, now_ms());
    atomic_init(&c->gen, 0);
    int have_key = client_key(ai ? ai->client_addr : NULL, c->key);

    pthread_mutex_lock(&cs->mu);
    if (cs->open >= cs->lim.max_total) {
        reason = R_TOTAL;
        limit = cs->lim.max_total;
    } else if (have_key && cs->lim.max_per_client &&
               client_count(cs, c->key) >= cs->lim.max_per_client) {
        reason = R_CLIENT;
        limit = cs->lim.max_per_client;
    } else if (have_key && client_inc(cs, c->key) < 0) {
        reason = R_TOTAL; /* out of memory: shed it */
        limit = cs->lim.max_total;
    }
    if (reason >= 0) {
        c->refused = 1;
        count_refusal(cs, reason, &log_n);
    } else {
        c->tracked_client = have_key;
        cs->open++;
    }
    c->next = cs->head;
    if (cs->head)
        cs->head->prev = c;
    cs->head = c;
    pthread_mutex_unlock(&cs->mu);
    *socket_context = c;

    if (reason >= 0) {
        if (fd >= 0)
            refuse(fd, reason, limit);
        report_refusals(cs, reason, 1, log_n);
    } else if (cs->m_open) {
        qn_gauge_add(cs->m_open, NULL, 1);
    }
}

static void conn_closed(qn__conns *cs, void **socket_context)
{
    qn__conn *c = *socket_context;
    if (!c)
        return;
    *socket_context = NULL;
    pthread_mutex_lock(&cs->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        cs->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (!c->refused) {
        cs->open--;
        if (c->tracked_client)
            client_dec(cs, c->key);
    }
    pthread_mutex_unlock(&cs->mu);
    if (!c->refused && cs->m_open)
        qn_gauge_add(cs->m_open, NULL, -1);
    free(c);
}

void qn__conns_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                      enum MHD_ConnectionNotificationCode code)
{
    qn__conns *cs = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED)
        conn_started(cs, conn, socket_context);
    else if (code == MHD_CONNECTION_NOTIFY_CLOSED)
        conn_closed(cs, socket_context);
}

qn__conn *qn__conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *i = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return i ? i->socket_context : NULL;
}

void qn__conn_head_done(qn__conn *c)
{
    if (c)
        atomic_store_explicit(&c->waiting, 0, memory_order_release);
}

void qn__conn_idle(qn__conn *c)
{
    if (!c)
        return;
    atomic_store_explicit(&c->since_ms, now_ms(), memory_order_relaxed);
    atomic_fetch_add_explicit(&c->gen, 1, memory_order_relaxed);
    atomic_store_explicit(&c->waiting, 1, memory_order_release);
}

/* ---- the reaper ----------------------------------------------------------------- */

/* Bytes received on the socket so far; 0 when the kernel cannot say. */
static int bytes_received(int fd, uint64_t *out)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof ti.tcpi_bytes_received)
        return 0;
    *out = ti.tcpi_bytes_received;
    return 1;
}

/* One pass over the connections; returns how many were cut. Under mu. */
static unsigned reap(qn__conns *cs, long long now)
{
    unsigned cut = 0;
    for (qn__conn *c = cs->head; c; c = c->next) {
        if (c->refused || c->cut || c->fd < 0)
            continue;
        if (!atomic_load_explicit(&c->waiting, memory_order_acquire))
            continue;
        unsigned g = atomic_load_explicit(&c->gen, memory_order_relaxed);
        long long since = atomic_load_explicit(&c->since_ms, memory_order_relaxed);
        if (g != c->gen_seen) { /* a new wait began since the last pass */
            c->gen_seen = g;
            c->base_ok = 0;
            c->start_ms = 0;
        }
        long long start;
        if (g == 0) {
            start = since; /* the first request: from the accept */
        } else if (c->start_ms) {
            start = c->start_ms;
        } else {
            uint64_t b;
            if (!bytes_received(c->fd, &b)) {
                start = since; /* cannot tell idle from slow: be strict */
            } else if (!c->base_ok) {
                c->base = b;
                c->base_ok = 1;
                continue;
            } else if (b == c->base) {
                continue; /* idle keep-alive: the idle timeout's business */
            } else {
                start = c->start_ms = now;
            }
        }
        if (now - start >= cs->lim.head_ms) {
            shutdown(c->fd, SHUT_RDWR);
            c->cut = 1;
            cut++;
        }
    }
    return cut;
}

static void *reaper_main(void *arg)
{
    qn__conns *cs = arg;
    long long period = cs->lim.head_ms / 5;
    if (period < 20)
        period = 20;
    if (period > 500)
        period = 500;

    pthread_mutex_lock(&cs->mu);
    while (!cs->stopping) {
        struct timespec dl;
        clock_gettime(CLOCK_MONOTONIC, &dl);
        dl.tv_nsec += (long)(period % 1000) * 1000000L;
        dl.tv_sec += period / 1000 + dl.tv_nsec / 1000000000L;
        dl.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&cs->cv, &cs->mu, &dl);
        if (cs->stopping)
            break;
        unsigned cut = reap(cs, now_ms());
        uint64_t log_n = 0;
        for (unsigned i = 0; i < cut; i++) {
            uint64_t l;
            count_refusal(cs, R_HEAD, &l);
            log_n += l;
        }
        if (cut) {
            pthread_mutex_unlock(&cs->mu);
            report_refusals(cs, R_HEAD, cut, log_n);
            pthread_mutex_lock(&cs->mu);
        }
    }
    pthread_mutex_unlock(&cs->mu);
    return NULL;
}

/* ---- life cycle -------------------------------------------------------------- */

qn__conns *qn__conns_new(const qn__conn_limits *lim, qn_metrics *metrics)
{
    qn__conns *cs = calloc(1, sizeof *cs);
    if (!cs)
        return NULL;
    cs->lim = *lim;
    pthread_mutex_init(&cs->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cs->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (metrics) {
        static const char *const lr[] = {"reason", NULL};
        cs->m_refused = qn_metrics_counter(
            metrics, "quern_http_connections_refused_total",
            "Connections the server closed to protect itself: over --max-connections "
            "(total_limit) or --max-connections-per-client (client_limit), or too slow to "
            "send a request head (head_timeout).",
            lr);
        cs->m_open = qn_metrics_gauge(metrics, "quern_http_connections_open",
                                      "HTTP connections open (refused ones not counted).", NULL);
        /* Every reason shows from the start, at 0. */
        for (int i = 0; cs->m_refused && i < R_N; i++) {
            const char *v[] = {reason_names[i]};
            qn_counter_add(cs->m_refused, v, 0);
        }
    }
    return cs;
}

int qn__conns_start(qn__conns *cs, qn_err *err)
{
    int rc = pthread_create(&cs->reaper, NULL, reaper_main, cs);
    if (rc != 0)
        return qn_err_set(err, QN_INTERNAL, "cannot start the connection reaper: %s",
                          strerror(rc));
    cs->running = 1;
    return 0;
}

void qn__conns_stop(qn__conns *cs)
{
    if (!cs || !cs->running)
        return;
    pthread_mutex_lock(&cs->mu);
    cs->stopping = 1;
    pthread_cond_broadcast(&cs->cv);
    pthread_mutex_unlock(&cs->mu);
    pthread_join(cs->reaper, NULL);
    cs->running = 0;
}

void qn__conns_free(qn__conns *cs)
{
    if (!cs)
        return;
    qn__conns_stop(cs);
    /* The daemon is gone: nothing is left but in case it was not started. */
    for (qn__conn *c = cs->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    for (size_t i = 0; i < NBUCKETS; i++)
        for (client *c = cs->buckets[i], *n; c; c = n) {
            n = c->next;
            free(c);
        }
    pthread_mutex_destroy(&cs->mu);
    pthread_cond_destroy(&cs->cv);
    free(cs);
}
