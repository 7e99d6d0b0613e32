/*
 * bus_amqp.c - the scale-out bus: RabbitMQ through rabbitmq-c (DESIGN.md
 * sections 2 and 3), with the same semantics as the SQLite backend.
 *
 * Topology (declared idempotently on every connect; docs/bus.md):
 *   exchange "quern"       topic, durable: every publish, routing key = topic.
 *   exchange "quern.dead"  topic, durable: dead letters, routing key
 *                          "<topic>.dead". Patterns whose last word is "dead"
 *                          are bound here, all others on "quern".
 *   queue "quern.<group>"  durable, one per consumer group, bound with the
 *                          group's patterns; consumers of the group compete.
 *   queue "quern.<group>.retry.<ms>"  durable, x-message-ttl = ms, dead-
 *                          lettering into the default exchange with routing
 *                          key "quern.<group>": the delay before a redelivery.
 *                          One per delay step, so the queue's FIFO order is
 *                          also expiry order (per-message TTLs would let a
 *                          long delay hold up a short one behind it).
 *
 * Messages are persistent (delivery_mode 2), content type
 * application/cloudevents+json, message_id = event id, type = bus topic, and
 * carry the attempt number in the header "x-quern-attempt" (absent = 1). Our
 * choice for counting attempts: the client republishes. A nack publishes a
 * copy with attempt + 1 into the retry queue of the next delay (or, past
 * max_attempts, into "quern.dead") and then acks the original. A delivery
 * that the broker flags "redelivered" was lost by an earlier consumer (killed,
 * disconnected): the consumer republishes it to its group queue with
 * attempt + 1 and acks the original before handing anything over, so a
 * message that crashes its consumers is also dead-lettered after N tries.
 * Republishing goes through the publisher connection and waits for the
 * confirm before the ack: a crash in between duplicates, never loses.
 *
 * Connections: one for publishing (channel 1 in confirm mode, guarded by a
 * mutex), one per consumer (manual ack, basic.qos prefetch). Any socket or
 * channel error drops the connection; the next call reconnects with
 * exponential backoff and full jitter. A publish retries until
 * publish_timeout_ms and then returns QN_UNAVAILABLE; a receive keeps trying
 * and reports a timeout. Heartbeats are off (rabbitmq-c only sends them from
 * inside its own calls); TCP keepalive detects a dead peer instead.
 */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/bus/backend.h"

#define EXCHANGE "quern"
#define DEAD_EXCHANGE "quern.dead"
#define ATTEMPT_HEADER "x-quern-attempt"
#define CONTENT_TYPE "application/cloudevents+json"
#define BACKOFF_BASE_MS 100
#define BACKOFF_CAP_MS 2000

typedef struct am_bus {
    qn_bus base;
    char *urlbuf; /* amqp_parse_url points into it */
    struct amqp_connection_info ci;
    pthread_mutex_t mu; /* the publisher connection */
    amqp_connection_state_t conn;
    uint64_t next_tag; /* delivery tag of the next publish on channel 1 */
    int fails;
} am_bus;

typedef struct am_consumer {
    qn_consumer base;
    amqp_connection_state_t conn;
    char queue[80];
    char **patterns;
    size_t npatterns;
    uint64_t gen; /* bumped on every connect: acks of older deliveries are moot */
    int fails;
    int64_t next_try;
    int64_t last_lag;
} am_consumer;

/* What one publish sends: the same exchange for the whole batch. */
typedef struct am_out {
    const char *exchange, *retry_queue; /* retry_queue: declare first (TTL = retry_ms) */
    int64_t retry_ms;
    const char *group_queue;            /* the retry queue dead-letters into it */
    const char *const *keys, *const *topics, *const *ids, *const *bodies;
    const size_t *lens;
    const int *attempts; /* NULL: all 1 (no header) */
    size_t n;
} am_out;

static amqp_bytes_t bstr(const char *s)
{
    return amqp_cstring_bytes(s);
}

/* A sentence for a failed rabbitmq-c call; 0 when the reply is normal. */
static int reply_err(amqp_rpc_reply_t r, qn_err *err, const char *what)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return 0;
    case AMQP_RESPONSE_NONE:
        return qn_err_set(err, QN_UNAVAILABLE, "bus amqp: %s: no reply", what);
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        return qn_err_set(err, QN_UNAVAILABLE, "bus amqp: %s: %s", what,
                          amqp_error_string2(r.library_error));
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            int code = m->reply_code == 403 ? QN_PERMISSION_DENIED : QN_UNAVAILABLE;
            return qn_err_set(err, code, "bus amqp: %s: connection closed: %d %.*s", what,
                              m->reply_code, (int)m->reply_text.len,
                              (const char *)m->reply_text.bytes);
        }
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            int code = m->reply_code == 406 ? QN_FAILED_PRECONDITION
                       : m->reply_code == 403 ? QN_PERMISSION_DENIED
                       : m->reply_code == 404 ? QN_NOT_FOUND
                                              : QN_UNAVAILABLE;
            return qn_err_set(err, code, "bus amqp: %s: channel closed: %d %.*s", what,
                              m->reply_code, (int)m->reply_text.len,
                              (const char *)m->reply_text.bytes);
        }
        return qn_err_set(err, QN_UNAVAILABLE, "bus amqp: %s: server method 0x%08x", what,
                          r.reply.id);
    }
    return qn_err_set(err, QN_UNKNOWN, "bus amqp: %s: unknown reply", what);
}

static void drop(amqp_connection_state_t *conn)
{
    if (!*conn)
        return;
    /* a short close handshake when the socket still works; errors ignored */
    amqp_destroy_connection(*conn);
    *conn = NULL;
}

static void polite_close(amqp_connection_state_t *conn)
{
    if (!*conn)
        return;
    amqp_channel_close(*conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(*conn, AMQP_REPLY_SUCCESS);
    drop(conn);
}

static void keepalive(amqp_connection_state_t conn)
{
    int fd = amqp_get_sockfd(conn), on = 1, idle = 30, intvl = 10, cnt = 3;
    if (fd < 0)
        return;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

/* Connects, logs in, opens channel 1 and declares the two exchanges. */
static int am_connect(am_bus *b, amqp_connection_state_t *out, qn_err *err)
{
    *out = NULL;
    amqp_connection_state_t conn = amqp_new_connection();
    if (!conn)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "bus amqp: out of memory");
    int rc;
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    struct timeval tv = {5, 0};
    if (!sock) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "bus amqp: out of memory");
        goto fail;
    }
    amqp_set_handshake_timeout(conn, &tv);
    amqp_set_rpc_timeout(conn, &tv);
    int st = amqp_socket_open_noblock(sock, b->ci.host, b->ci.port, &tv);
    if (st != AMQP_STATUS_OK) {
        rc = qn_err_set(err, QN_UNAVAILABLE, "bus amqp: cannot connect to %s:%d: %s", b->ci.host,
                        b->ci.port, amqp_error_string2(st));
        goto fail;
    }
    keepalive(conn);
    if ((rc = reply_err(amqp_login(conn, b->ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                                   b->ci.user, b->ci.password),
                        err, "login")) < 0)
        goto fail;
    amqp_channel_open(conn, 1);
    if ((rc = reply_err(amqp_get_rpc_reply(conn), err, "channel.open")) < 0)
        goto fail;
    amqp_exchange_declare(conn, 1, bstr(EXCHANGE), bstr("topic"), 0, 1, 0, 0, amqp_empty_table);
    if ((rc = reply_err(amqp_get_rpc_reply(conn), err, "exchange.declare " EXCHANGE)) < 0)
        goto fail;
    amqp_exchange_declare(conn, 1, bstr(DEAD_EXCHANGE), bstr("topic"), 0, 1, 0, 0,
                          amqp_empty_table);
    if ((rc = reply_err(amqp_get_rpc_reply(conn), err, "exchange.declare " DEAD_EXCHANGE)) < 0)
        goto fail;
    *out = conn;
    return 0;
fail:
    amqp_destroy_connection(conn);
    return rc;
}

static void sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* --- publishing --------------------------------------------------------- */

static int pub_connect(am_bus *b, qn_err *err)
{
    int rc = am_connect(b, &b->conn, err);
    if (rc < 0)
        return rc;
    amqp_confirm_select(b->conn, 1);
    if ((rc = reply_err(amqp_get_rpc_reply(b->conn), err, "confirm.select")) < 0) {
        drop(&b->conn);
        return rc;
    }
    b->next_tag = 1;
    return 0;
}

static int declare_retry_queue(am_bus *b, const am_out *o, qn_err *err)
{
    amqp_table_entry_t e[3];
    e[0].key = bstr("x-message-ttl");
    e[0].value.kind = AMQP_FIELD_KIND_I64;
    e[0].value.value.i64 = o->retry_ms;
    e[1].key = bstr("x-dead-letter-exchange");
    e[1].value.kind = AMQP_FIELD_KIND_UTF8;
    e[1].value.value.bytes = bstr("");
    e[2].key = bstr("x-dead-letter-routing-key");
    e[2].value.kind = AMQP_FIELD_KIND_UTF8;
    e[2].value.value.bytes = bstr(o->group_queue);
    amqp_table_t args = {3, e};
    amqp_queue_declare(b->conn, 1, bstr(o->retry_queue), 0, 1, 0, 0, args);
    return reply_err(amqp_get_rpc_reply(b->conn), err, "queue.declare (retry)");
}

/* Sends the batch and waits for every confirm. Called with mu held and a
 * connection up; any failure leaves the caller to drop the connection. */
static int send_confirmed(am_bus *b, const am_out *o, int64_t deadline, qn_err *err)
{
    int rc;
    if (o->retry_queue && (rc = declare_retry_queue(b, o, err)) < 0)
        return rc;
    uint64_t first = b->next_tag;
    for (size_t i = 0; i < o->n; i++) {
        amqp_basic_properties_t p;
        memset(&p, 0, sizeof p);
        p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                   AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG;
        p.content_type = bstr(CONTENT_TYPE);
        p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
        p.message_id = bstr(o->ids[i]);
        p.type = bstr(o->topics[i]);
        amqp_table_entry_t h;
        if (o->attempts && o->attempts[i] > 1) {
            h.key = bstr(ATTEMPT_HEADER);
            h.value.kind = AMQP_FIELD_KIND_I32;
            h.value.value.i32 = o->attempts[i];
            p._flags |= AMQP_BASIC_HEADERS_FLAG;
            p.headers.num_entries = 1;
            p.headers.entries = &h;
        }
        amqp_bytes_t body = {o->lens[i], (void *)o->bodies[i]};
        int st = amqp_basic_publish(b->conn, 1, bstr(o->exchange), bstr(o->keys[i]), 0, 0, &p,
                                    body);
        if (st != AMQP_STATUS_OK)
            return qn_err_set(err, QN_UNAVAILABLE, "bus amqp: basic.publish: %s",
                              amqp_error_string2(st));
        b->next_tag++;
    }
    /* confirms: tags first .. next_tag-1; the broker may ack several at once */
    size_t left = o->n;
    unsigned char *done = calloc(o->n, 1);
    if (!done)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "bus amqp: out of memory");
    rc = 0;
    while (left > 0) {
        int64_t ms = deadline - qn__mono_ms();
        if (ms <= 0) {
            rc = qn_err_set(err, QN_UNAVAILABLE,
                            "bus amqp: %zu of %zu publishes unconfirmed at the deadline", left,
                            o->n);
            break;
        }
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        amqp_frame_t f;
        int st = amqp_simple_wait_frame_noblock(b->conn, &f, &tv);
        if (st != AMQP_STATUS_OK) {
            rc = qn_err_set(err, QN_UNAVAILABLE, "bus amqp: waiting for confirms: %s",
                            amqp_error_string2(st));
            break;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *a = f.payload.method.decoded;
            for (size_t i = 0; i < o->n; i++) {
                uint64_t tag = first + i;
                if (!done[i] && (tag == a->delivery_tag || (a->multiple && tag <= a->delivery_tag))) {
                    done[i] = 1;
                    left--;
                }
            }
        } else if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            rc = qn_err_set(err, QN_UNAVAILABLE, "bus amqp: the broker refused a publish (nack)");
            break;
        } else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                   f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
            rc = qn_err_set(err, QN_UNAVAILABLE, "bus amqp: the broker closed the channel");
            break;
        }
    }
    free(done);
    amqp_maybe_release_buffers(b->conn);
    return rc;
}

/* Publishes with reconnects until publish_timeout_ms. */
static int am_send(am_bus *b, const am_out *o, qn_err *err)
{
    int64_t deadline = qn__mono_ms() + b->base.o.publish_timeout_ms;
    int rc = 0;
    pthread_mutex_lock(&b->mu);
    for (int tries = 0;; tries++) {
        if (!b->conn)
            rc = pub_connect(b, err);
        if (b->conn && (rc = send_confirmed(b, o, deadline, err)) == 0) {
            b->fails = 0;
            break;
        }
        drop(&b->conn);
        if (rc == QN_PERMISSION_DENIED || rc == QN_RESOURCE_EXHAUSTED ||
            rc == QN_FAILED_PRECONDITION)
            break;
        int64_t left = deadline - qn__mono_ms();
        if (left <= 0) {
            rc = QN_UNAVAILABLE;
            if (err) {
                err->code = rc;
                qn_err_wrap(err, "publish gave up after %lld ms",
                            (long long)b->base.o.publish_timeout_ms);
            }
            break;
        }
        int64_t wait = qn__backoff_jitter(BACKOFF_BASE_MS, BACKOFF_CAP_MS, tries);
        sleep_ms(wait < left ? wait : left);
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

static int am_publish(qn_bus *bus, const char *const *topics, const char *const *ids,
                      const char *const *bodies, const size_t *lens, size_t n, qn_err *err)
{
    am_out o = {.exchange = EXCHANGE, .keys = topics, .topics = topics, .ids = ids,
                .bodies = bodies, .lens = lens, .n = n};
    return am_send((am_bus *)bus, &o, err);
}

/* --- consuming ---------------------------------------------------------- */

static int consumer_connect(am_consumer *c, qn_err *err)
{
    am_bus *b = (am_bus *)c->base.bus;
    amqp_connection_state_t conn;
    int rc = am_connect(b, &conn, err);
    if (rc < 0)
        return rc;
    amqp_queue_declare(conn, 1, bstr(c->queue), 0, 1, 0, 0, amqp_empty_table);
    if ((rc = reply_err(amqp_get_rpc_reply(conn), err, "queue.declare")) < 0)
        goto fail;
    for (size_t i = 0; i < c->npatterns; i++) {
        const char *p = c->patterns[i];
        size_t l = strlen(p);
        int dead = (l == 4 && strcmp(p, "dead") == 0) || (l > 4 && strcmp(p + l - 5, ".dead") == 0);
        amqp_queue_bind(conn, 1, bstr(c->queue), bstr(dead ? DEAD_EXCHANGE : EXCHANGE), bstr(p),
                        amqp_empty_table);
        if ((rc = reply_err(amqp_get_rpc_reply(conn), err, "queue.bind")) < 0)
            goto fail;
    }
    amqp_basic_qos(conn, 1, 0, (uint16_t)b->base.o.prefetch, 0);
    if ((rc = reply_err(amqp_get_rpc_reply(conn), err, "basic.qos")) < 0)
        goto fail;
    amqp_basic_consume(conn, 1, bstr(c->queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    if ((rc = reply_err(amqp_get_rpc_reply(conn), err, "basic.consume")) < 0)
        goto fail;
    c->conn = conn;
    c->gen++;
    c->fails = 0;
    return 0;
fail:
    amqp_destroy_connection(conn);
    return rc;
}

static void am_consumer_close(qn_consumer *qc)
{
    am_consumer *c = (am_consumer *)qc;
    polite_close(&c->conn);
    for (size_t i = 0; i < c->npatterns; i++)
        free(c->patterns[i]);
    free(c->patterns);
    free(c);
}

static qn_consumer *am_subscribe(qn_bus *bus, const char *group, const char *const *patterns,
                                 qn_err *err)
{
    am_consumer *c = calloc(1, sizeof *c);
    if (!c)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "bus: out of memory"), NULL;
    if (qn__consumer_init(&c->base, bus, group, patterns, err) < 0)
        goto fail;
    snprintf(c->queue, sizeof c->queue, "quern.%s", group);
    while (patterns[c->npatterns])
        c->npatterns++;
    c->patterns = calloc(c->npatterns, sizeof *c->patterns);
    if (!c->patterns)
        goto oom;
    for (size_t i = 0; i < c->npatterns; i++)
        if (!(c->patterns[i] = strdup(patterns[i])))
            goto oom;
    if (consumer_connect(c, err) < 0)
        goto fail;
    return &c->base;
oom:
    qn_err_set(err, QN_RESOURCE_EXHAUSTED, "bus: out of memory");
fail:
    qn_err_wrap(err, "subscribe %s", group);
    am_consumer_close(&c->base);
    return NULL;
}

static int header_attempt(const amqp_basic_properties_t *p)
{
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return 1;
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &p->headers.entries[i];
        if (e->key.len != strlen(ATTEMPT_HEADER) ||
            memcmp(e->key.bytes, ATTEMPT_HEADER, e->key.len) != 0)
            continue;
        switch (e->value.kind) {
        case AMQP_FIELD_KIND_I8: return e->value.value.i8;
        case AMQP_FIELD_KIND_U8: return e->value.value.u8;
        case AMQP_FIELD_KIND_I16: return e->value.value.i16;
        case AMQP_FIELD_KIND_U16: return e->value.value.u16;
        case AMQP_FIELD_KIND_I32: return e->value.value.i32;
        case AMQP_FIELD_KIND_U32: return (int)(e->value.value.u32 & 0x7fffffff);
        case AMQP_FIELD_KIND_I64: return (int)e->value.value.i64;
        default: return 1;
        }
    }
    return 1;
}

static char *bytes_dup(amqp_bytes_t b)
{
    char *s = malloc(b.len + 1);
    if (s) {
        memcpy(s, b.bytes, b.len);
        s[b.len] = '\0';
    }
    return s;
}

/* Publishes a copy of m (its body, id and topic) through the bus's publisher
 * connection: into the group queue, a retry queue or the dead exchange. */
static int republish(am_consumer *c, const qn_msg *m, const char *exchange, const char *key,
                     const char *topic, int attempt, const char *retry_queue, int64_t retry_ms,
                     qn_err *err)
{
    const char *id = m->id ? m->id : "";
    const char *body = m->qn__body;
    size_t len = m->qn__len;
    am_out o = {.exchange = exchange, .retry_queue = retry_queue, .retry_ms = retry_ms,
                .group_queue = c->queue, .keys = &key, .topics = &topic, .ids = &id,
                .bodies = &body, .lens = &len, .attempts = &attempt, .n = 1};
    return am_send((am_bus *)c->base.bus, &o, err);
}

static void update_lag(am_consumer *c)
{
    qn_bus *bus = c->base.bus;
    int64_t now = qn__mono_ms();
    if (!bus->lag || now - c->last_lag < 1000)
        return;
    c->last_lag = now;
    am_bus *b = (am_bus *)bus;
    if (pthread_mutex_trylock(&b->mu) != 0)
        return;
    if (b->conn) {
        amqp_queue_declare_ok_t *ok =
            amqp_queue_declare(b->conn, 1, bstr(c->queue), 1, 1, 0, 0, amqp_empty_table);
        if (ok) {
            const char *vals[] = {c->base.patterns, c->base.group};
            qn_gauge_set(bus->lag, vals, (double)ok->message_count);
        } else {
            drop(&b->conn); /* the channel is closed; the next publish reconnects */
        }
    }
    pthread_mutex_unlock(&b->mu);
}

static int ack_tag(am_consumer *c, const qn_msg *m, qn_err *err)
{
    if (!c->conn || m->qn__gen != c->gen)
        return qn_err_set(err, QN_ABORTED,
                          "bus amqp: the connection that delivered message %s is gone; it will "
                          "be redelivered",
                          m->id ? m->id : "?");
    if (amqp_basic_ack(c->conn, 1, m->qn__tag, 0) != AMQP_STATUS_OK) {
        drop(&c->conn);
        return qn_err_set(err, QN_ABORTED, "bus amqp: ack of message %s failed; it will be "
                                           "redelivered",
                          m->id ? m->id : "?");
    }
    return 0;
}

static int am_receive(qn_consumer *qc, int timeout_ms, qn_msg **out, qn_err *err)
{
    am_consumer *c = (am_consumer *)qc;
    const qn_bus_opts *o = &qc->bus->o;
    int64_t deadline = qn__mono_ms() + timeout_ms;
    for (;;) {
        int64_t now = qn__mono_ms();
        if (!c->conn) {
            if (now >= c->next_try) {
                qn_err cerr;
                if (consumer_connect(c, &cerr) < 0) {
                    if (cerr.code == QN_PERMISSION_DENIED)
                        return qn_err_set(err, cerr.code, "%s", cerr.msg);
                    c->next_try = now + qn__backoff_jitter(BACKOFF_BASE_MS, BACKOFF_CAP_MS,
                                                           c->fails++);
                }
                continue;
            }
            int64_t wait = (c->next_try < deadline ? c->next_try : deadline) - now;
            if (wait <= 0 && now >= deadline)
                return 0;
            sleep_ms(wait);
            continue;
        }
        update_lag(c);
        amqp_maybe_release_buffers(c->conn);
        /* wait for bytes ourselves: a timeout inside amqp_consume_message
         * could split a message */
        if (!amqp_frames_enqueued(c->conn) && !amqp_data_in_buffer(c->conn)) {
            int64_t left = deadline - now;
            struct pollfd pfd = {amqp_get_sockfd(c->conn), POLLIN, 0};
            int pr = poll(&pfd, 1, left > 0 ? (int)(left > 1000 ? 1000 : left) : 0);
            if (pr == 0) {
                if (qn__mono_ms() >= deadline)
                    return 0;
                continue;
            }
            if (pr < 0)
                continue; /* EINTR */
        }
        amqp_envelope_t env;
        struct timeval tv = {10, 0};
        amqp_rpc_reply_t r = amqp_consume_message(c->conn, &env, &tv, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
                /* a method other than a delivery: a close means reconnect */
                amqp_frame_t f;
                struct timeval z = {1, 0};
                if (amqp_simple_wait_frame_noblock(c->conn, &f, &z) != AMQP_STATUS_OK ||
                    (f.frame_type == AMQP_FRAME_METHOD &&
                     (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                      f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD ||
                      f.payload.method.id == AMQP_BASIC_CANCEL_METHOD)))
                    drop(&c->conn);
                continue;
            }
            drop(&c->conn);
            c->next_try = 0;
            continue;
        }
        qn_msg *m = calloc(1, sizeof *m);
        if (m) {
            m->qn__body = bytes_dup(env.message.body);
            m->qn__len = env.message.body.len;
            m->qn__tag = env.delivery_tag;
            m->qn__gen = c->gen;
            m->attempt = header_attempt(&env.message.properties);
            if (env.message.properties._flags & AMQP_BASIC_TYPE_FLAG)
                m->qn__topic = bytes_dup(env.message.properties.type);
            else
                m->qn__topic = bytes_dup(env.routing_key);
        }
        int redelivered = env.redelivered;
        char *mid = (env.message.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
                        ? bytes_dup(env.message.properties.message_id)
                        : NULL;
        amqp_destroy_envelope(&env);
        if (!m || !m->qn__body || !m->qn__topic) {
            free(mid);
            qn_msg_free(m);
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "bus: out of memory");
        }
        if (redelivered) {
            /* an earlier consumer lost it: count that attempt durably */
            m->id = mid;
            int rc = republish(c, m, "", c->queue, m->qn__topic, m->attempt + 1, NULL, 0, err);
            m->id = NULL;
            free(mid);
            if (rc == 0)
                ack_tag(c, m, NULL);
            qn_msg_free(m);
            if (rc < 0 && rc != QN_UNAVAILABLE)
                return rc;
            continue;
        }
        free(mid);
        (void)o;
        *out = m;
        return 1;
    }
}

static int am_ack(qn_consumer *qc, qn_msg *m, qn_err *err)
{
    return ack_tag((am_consumer *)qc, m, err);
}

static int am_nack(qn_consumer *qc, qn_msg *m, int dead, qn_err *err)
{
    am_consumer *c = (am_consumer *)qc;
    if (!c->conn || m->qn__gen != c->gen)
        return ack_tag(c, m, err); /* QN_ABORTED: redelivered anyway */
    int rc;
    if (dead) {
        char key[300];
        snprintf(key, sizeof key, "%s.dead", m->qn__topic);
        rc = republish(c, m, DEAD_EXCHANGE, key, key, 1, NULL, 0, err);
    } else {
        int64_t delay = qn__bus_retry_delay(&qc->bus->o, m->attempt);
        char rq[128];
        snprintf(rq, sizeof rq, "%s.retry.%lld", c->queue, (long long)delay);
        rc = republish(c, m, "", rq, m->qn__topic, m->attempt + 1, rq, delay, err);
    }
    if (rc < 0)
        return rc; /* not acked: the broker keeps the original */
    return ack_tag(c, m, err);
}

static void am_close(qn_bus *bus)
{
    am_bus *b = (am_bus *)bus;
    polite_close(&b->conn);
    pthread_mutex_destroy(&b->mu);
    free(b->urlbuf);
    free(b);
}

static const qn__bus_ops amqp_ops = {
    .name = "amqp",
    .close = am_close,
    .publish = am_publish,
    .subscribe = am_subscribe,
    .receive = am_receive,
    .ack = am_ack,
    .nack = am_nack,
    .consumer_close = am_consumer_close,
};

qn_bus *qn__bus_amqp_open(const char *url, const qn_bus_opts *o, qn_err *err)
{
    am_bus *b = calloc(1, sizeof *b);
    if (!b || !(b->urlbuf = strdup(url))) {
        free(b);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "bus: out of memory"), NULL;
    }
    b->base.ops = &amqp_ops;
    b->base.o = *o;
    pthread_mutex_init(&b->mu, NULL);
    amqp_default_connection_info(&b->ci);
    if (amqp_parse_url(b->urlbuf, &b->ci) != AMQP_STATUS_OK || b->ci.ssl) {
        am_close(&b->base);
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "bus: url is not amqp://USER:PASS@HOST:PORT/VHOST (amqps is not "
                          "supported)"),
               NULL;
    }
    if (!b->ci.vhost[0])
        b->ci.vhost = "/";
    /* connect now, so that a wrong address or password shows at start */
    qn_err cerr;
    if (pub_connect(b, &cerr) < 0) {
        qn_err_set(err, cerr.code, "%s", cerr.msg);
        am_close(&b->base);
        return NULL;
    }
    return &b->base;
}
