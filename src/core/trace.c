/*
 * trace.c - W3C trace context and random identifiers (see trace.h).
 *
 * The traceparent grammar (W3C Trace Context, level 1):
 *   version "-" trace-id "-" parent-id "-" trace-flags
 *   2 hex    32 hex         16 hex          2 hex       (lower-case only)
 * Version ff is invalid; all-zero trace-id or parent-id is invalid. Version 00
 * must be exactly 55 characters. A higher version must be at least 55 chars
 * and, if longer, have '-' right after the flags; its first 55 characters are
 * read as version 00 (forward compatibility), and of its flags only the
 * sampled bit, the one we understand, is kept.
 *
 * Random bytes come from getrandom(2), which never blocks once the kernel
 * pool is initialised (always true by the time a service runs). Identifiers
 * (uuid4, trace and span ids: three or four per HTTP request) take theirs
 * from a per-thread buffer filled by one getrandom(2) every few dozen ids
 * rather than one system call each; every byte is handed out once, and a
 * fork empties the child's buffer so that it cannot repeat the parent's ids.
 */
#include "core/trace.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "core/err.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* upper case is invalid per the spec */
}

/* Decodes 2n lower-case hex chars into n bytes; -1 on a bad char. */
static int unhex(const char *s, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static void tohex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

int qn_traceparent_parse(const char *s, qn_trace_ctx *out)
{
    if (!s)
        return QN_INVALID_ARGUMENT;
    size_t len = strnlen(s, QN_TRACEPARENT_LEN + 1);
    if (len < QN_TRACEPARENT_LEN)
        return QN_INVALID_ARGUMENT;

    uint8_t version;
    if (unhex(s, &version, 1) < 0 || version == 0xff)
        return QN_INVALID_ARGUMENT;
    if (version == 0 && len != QN_TRACEPARENT_LEN)
        return QN_INVALID_ARGUMENT;
    if (version > 0 && len > QN_TRACEPARENT_LEN && s[QN_TRACEPARENT_LEN] != '-')
        return QN_INVALID_ARGUMENT;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return QN_INVALID_ARGUMENT;

    qn_trace_ctx c;
    memset(&c, 0, sizeof c);
    if (unhex(s + 3, c.trace_id, 16) < 0 || unhex(s + 36, c.span_id, 8) < 0 ||
        unhex(s + 53, &c.flags, 1) < 0)
        return QN_INVALID_ARGUMENT;
    if (all_zero(c.trace_id, 16) || all_zero(c.span_id, 8))
        return QN_INVALID_ARGUMENT;
    if (version > 0)
        c.flags &= 0x01;
    *out = c;
    return 0;
}

void qn_traceparent_format(const qn_trace_ctx *c, char out[QN_TRACEPARENT_LEN + 1])
{
    out[0] = '0';
    out[1] = '0';
    out[2] = '-';
    tohex(c->trace_id, 16, out + 3);
    out[35] = '-';
    tohex(c->span_id, 8, out + 36);
    out[52] = '-';
    tohex(&c->flags, 1, out + 53);
    out[55] = '\0';
}

#define ID_POOL 512

static _Thread_local struct {
    unsigned char b[ID_POOL];
    size_t left;   /* the last left bytes of b are unused */
    unsigned gen;  /* fork_gen when b was filled */
} idp;
static atomic_uint fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void)
{
    atomic_fetch_add(&fork_gen, 1);
}

static void atfork_init(void)
{
    pthread_atfork(NULL, NULL, on_fork_child);
}

/* n random bytes for an identifier, from this thread's buffer. */
static void id_bytes(void *out, size_t n)
{
    if (n > ID_POOL) {
        qn_random_bytes(out, n);
        return;
    }
    pthread_once(&atfork_once, atfork_init);
    unsigned g = atomic_load(&fork_gen);
    if (idp.gen != g) {
        idp.left = 0;
        idp.gen = g;
    }
    if (idp.left < n) {
        qn_random_bytes(idp.b, ID_POOL);
        idp.left = ID_POOL;
    }
    unsigned char *src = idp.b + (ID_POOL - idp.left);
    memcpy(out, src, n);
    memset(src, 0, n); /* handed out once */
    idp.left -= n;
}

/* Random bytes that are not all zero (an all-zero id is invalid on the wire). */
static void random_id(uint8_t *p, size_t n)
{
    do
        id_bytes(p, n);
    while (all_zero(p, n));
}

void qn_trace_new(qn_trace_ctx *out)
{
    memset(out, 0, sizeof *out);
    random_id(out->trace_id, sizeof out->trace_id);
    random_id(out->span_id, sizeof out->span_id);
    out->flags = 0x01;
}

void qn_trace_child(const qn_trace_ctx *parent, qn_trace_ctx *out)
{
    qn_trace_ctx c;
    memcpy(c.trace_id, parent->trace_id, sizeof c.trace_id);
    memcpy(c.parent_span_id, parent->span_id, sizeof c.parent_span_id);
    c.flags = parent->flags;
    random_id(c.span_id, sizeof c.span_id);
    *out = c; /* parent and out may be the same object */
}

void qn_trace_id_hex(const qn_trace_ctx *c, char out[QN_TRACE_ID_HEX + 1])
{
    tohex(c->trace_id, 16, out);
    out[QN_TRACE_ID_HEX] = '\0';
}

void qn_random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        p += r;
        n -= (size_t)r;
    }
    if (n == 0)
        return;
    /* Only a kernel without getrandom (older than 3.17) gets here. */
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    while (fd >= 0 && n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        p += r;
        n -= (size_t)r;
    }
    if (fd >= 0)
        close(fd);
    /* No source of randomness at all: ids would collide silently, which is
     * worse than stopping. This is the environment failing, not bad input. */
    if (n > 0)
        abort();
}

void qn_uuid4(char out[QN_UUID_LEN + 1])
{
    uint8_t b[16];
    id_bytes(b, sizeof b);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* variant 10 (RFC 4122) */
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        tohex(b + i, 1, o);
        o += 2;
    }
    *o = '\0';
}
