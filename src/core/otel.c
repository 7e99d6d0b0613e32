/*
 * otel.c - span recording and the OTLP/HTTP JSON exporter (see otel.h).
 *
 * State is process-wide (spans are started from every layer: the HTTP
 * server, the client, the bus, job runners) and guarded by one mutex, which
 * a span takes once, at its end, to join the queue. The exporter thread is
 * the only one that talks to the collector; it takes a batch out of the
 * queue, lets go of the lock, encodes and POSTs it. A request thread
 * therefore never waits on the network for tracing, only on a short
 * critical section.
 *
 * Wire format: the protobuf-JSON mapping of
 * opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest, as the
 * OTLP specification asks for JSON: trace and span ids as lower-case hex
 * (not base64), 64-bit integers (times, intValue) as decimal strings, enums
 * (kind, status code) as their numbers, empty fields left out.
 */
#include "core/json.h"
#include "core/otel.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef QUERN_VERSION
#define QUERN_VERSION "unknown"
#endif

#define NAME_MAX_LEN 128
#define KEY_MAX_LEN 64
#define VALUE_MAX_LEN 256
#define MAX_ATTRS 16
#define RETRY_BASE_MS 100

enum { A_STR, A_INT, A_DOUBLE, A_BOOL };

typedef struct attr {
    char key[KEY_MAX_LEN];
    int type;
    char *s;
    long long i;
    double d;
} attr;

struct qn__span_rec {
    char name[NAME_MAX_LEN];
    int kind;
    uint8_t trace_id[16], span_id[8], parent_id[8];
    uint64_t start_ns, end_ns;
    int status;                 /* 0 unset, 1 ok, 2 error */
    char *status_msg;
    unsigned nattrs;
    attr attrs[MAX_ATTRS];
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake;        /* to the exporter: spans, flush or stop */
    pthread_cond_t done;        /* from the exporter: a batch finished */
    atomic_int on;
    int started, stopping, flush_req;
    qn_otel_opts o;
    char *url, *service;
    qn__span_rec **q;           /* ring of queue_max */
    unsigned head, count;
    uint64_t queued_total, finished_total;  /* finished: exported or dropped by the exporter */
    uint64_t stop_deadline_ns;  /* past it, a stopping exporter drops instead of retrying */
    qn_otel_stats st;
    pthread_t thread;
    qn_metric *m_exported, *m_dropped;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void rec_free(qn__span_rec *r)
{
    if (!r)
        return;
    for (unsigned i = 0; i < r->nattrs; i++)
        free(r->attrs[i].s);
    free(r->status_msg);
    free(r);
}

/* Counts dropped spans; caller holds g.mu. */
static void count_dropped(uint64_t n, int queue_full)
{
    if (queue_full)
        g.st.dropped_queue += n;
    else
        g.st.dropped_export += n;
    if (g.m_dropped)
        qn_counter_add(g.m_dropped, (const char *[]){queue_full ? "queue_full" : "export_failed"},
                       (double)n);
}

/* ---- spans ------------------------------------------------------------------ */

int qn_otel_enabled(void)
{
    return atomic_load_explicit(&g.on, memory_order_relaxed);
}

static void copy_cut(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strnlen(src, cap - 1) : 0;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

void qn_span_start(qn_span *s, const char *name, qn_span_kind kind, const qn_trace_ctx *parent)
{
    if (parent)
        qn_trace_child(parent, &s->ctx);
    else
        qn_trace_new(&s->ctx);
    s->rec = NULL;
    if (!qn_otel_enabled() || !(s->ctx.flags & 0x01))
        return;
    qn__span_rec *r = calloc(1, sizeof *r);
    if (!r)
        return;
    copy_cut(r->name, sizeof r->name, name ? name : "span");
    r->kind = (int)kind;
    memcpy(r->trace_id, s->ctx.trace_id, 16);
    memcpy(r->span_id, s->ctx.span_id, 8);
    memcpy(r->parent_id, s->ctx.parent_span_id, 8);
    r->start_ns = realtime_ns();
    s->rec = r;
}

void qn_span_set_name(qn_span *s, const char *name)
{
    if (s->rec && name)
        copy_cut(s->rec->name, sizeof s->rec->name, name);
}

/* The next attribute slot (key copied), or NULL when full or not recorded. */
static attr *attr_add(qn_span *s, const char *key, int type)
{
    if (!s->rec || !key || s->rec->nattrs >= MAX_ATTRS)
        return NULL;
    attr *a = &s->rec->attrs[s->rec->nattrs++];
    copy_cut(a->key, sizeof a->key, key);
    a->type = type;
    return a;
}

void qn_span_attr_str(qn_span *s, const char *key, const char *value)
{
    attr *a = attr_add(s, key, A_STR);
    if (!a)
        return;
    size_t n = value ? strnlen(value, VALUE_MAX_LEN) : 0;
    a->s = malloc(n + 1);
    if (!a->s) {
        s->rec->nattrs--;
        return;
    }
    if (n)
        memcpy(a->s, value, n);
    a->s[n] = '\0';
}

void qn_span_attr_int(qn_span *s, const char *key, long long value)
{
    attr *a = attr_add(s, key, A_INT);
    if (a)
        a->i = value;
}

void qn_span_attr_double(qn_span *s, const char *key, double value)
{
    attr *a = attr_add(s, key, A_DOUBLE);
    if (a)
        a->d = value;
}

void qn_span_attr_bool(qn_span *s, const char *key, int value)
{
    attr *a = attr_add(s, key, A_BOOL);
    if (a)
        a->i = value != 0;
}

void qn_span_error(qn_span *s, const char *message)
{
    if (!s->rec)
        return;
    s->rec->status = 2;
    free(s->rec->status_msg);
    s->rec->status_msg = message ? strndup(message, VALUE_MAX_LEN) : NULL;
}

void qn_span_ok(qn_span *s)
{
    if (s->rec)
        s->rec->status = 1;
}

void qn_span_discard(qn_span *s)
{
    rec_free(s->rec);
    s->rec = NULL;
}

void qn_span_end(qn_span *s)
{
    qn__span_rec *r = s->rec;
    if (!r)
        return;
    s->rec = NULL;
    r->end_ns = realtime_ns();
    if (r->end_ns < r->start_ns)
        r->end_ns = r->start_ns; /* the wall clock stepped back meanwhile */
    pthread_mutex_lock(&g.mu);
    if (!atomic_load(&g.on) || g.stopping) {
        pthread_mutex_unlock(&g.mu);
        rec_free(r);
        return;
    }
    if (g.count >= g.o.queue_max) {
        count_dropped(1, 1);
        pthread_mutex_unlock(&g.mu);
        rec_free(r);
        return;
    }
    g.q[(g.head + g.count) % g.o.queue_max] = r;
    g.count++;
    g.queued_total++;
    g.st.recorded++;
    if (g.count >= g.o.batch_max)
        pthread_cond_signal(&g.wake);
    pthread_mutex_unlock(&g.mu);
}

/* ---- encoding ----------------------------------------------------------------- */

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

static json_t *u64_string(uint64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    return json_string(b);
}

static json_t *attr_json(const attr *a)
{
    json_t *v;
    switch (a->type) {
    case A_STR:
        v = json_pack("{s:s}", "stringValue", a->s);
        break;
    case A_INT: {
        char b[24];
        snprintf(b, sizeof b, "%lld", a->i);
        v = json_pack("{s:s}", "intValue", b);
        break;
    }
    case A_DOUBLE:
        v = json_pack("{s:f}", "doubleValue", a->d);
        break;
    default:
        v = json_pack("{s:b}", "boolValue", (int)a->i);
        break;
    }
    return v ? json_pack("{s:s, s:o}", "key", a->key, "value", v) : NULL;
}

static json_t *span_json(const qn__span_rec *r)
{
    char tid[33], sid[17], pid[17];
    hex(r->trace_id, 16, tid);
    hex(r->span_id, 8, sid);
    json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:o, s:o}", "traceId", tid, "spanId", sid, "name", r->name,
                          "kind", r->kind, "startTimeUnixNano", u64_string(r->start_ns), "endTimeUnixNano",
                          u64_string(r->end_ns));
    if (!j)
        return NULL;
    if (!all_zero(r->parent_id, 8)) {
        hex(r->parent_id, 8, pid);
        json_object_set_new(j, "parentSpanId", json_string(pid));
    }
    json_t *attrs = json_array();
    for (unsigned i = 0; i < r->nattrs; i++)
        json_array_append_new(attrs, attr_json(&r->attrs[i]));
    json_object_set_new(j, "attributes", attrs);
    json_t *st = json_object();
    if (r->status)
        json_object_set_new(st, "code", json_integer(r->status));
    if (r->status_msg)
        json_object_set_new(st, "message", json_string(r->status_msg));
    json_object_set_new(j, "status", st);
    return j;
}

/* The request body for n spans, or NULL when out of memory. */
static char *encode(qn__span_rec *const *spans, unsigned n)
{
    json_t *arr = json_array();
    for (unsigned i = 0; i < n; i++)
        json_array_append_new(arr, span_json(spans[i]));
    json_t *req = json_pack(
        "{s:[{s:{s:[{s:s, s:{s:s}}]}, s:[{s:{s:s, s:s}, s:o}]}]}", "resourceSpans", "resource", "attributes",
        "key", "service.name", "value", "stringValue", g.service, "scopeSpans", "scope", "name", "quern",
        "version", QUERN_VERSION, "spans", arr);
    char *text = req ? qn_json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    return text;
}

/* ---- the exporter thread -------------------------------------------------------- */

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* POSTs body; 1 when accepted, 0 when worth retrying, -1 when refused for good. */
static int post(CURL *h, const char *body, long timeout_ms)
{
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Expect:");
    curl_easy_setopt(h, CURLOPT_URL, g.url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms > 0 && timeout_ms < 2000 ? timeout_ms : 2000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "quern-otel/" QUERN_VERSION);
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    if (cc != CURLE_OK)
        return 0;
    if (status >= 200 && status < 300)
        return 1;
    return status == 429 || status == 502 || status == 503 || status == 504 ? 0 : -1;
}

/* Sends one batch with retries; returns 1 when exported. */
static int export_batch(CURL *h, qn__span_rec *const *spans, unsigned n)
{
    char *body = encode(spans, n);
    if (!body)
        return 0;
    int ok = 0;
    for (int attempt = 0; attempt <= g.o.max_retries; attempt++) {
        long timeout = g.o.timeout_ms;
        pthread_mutex_lock(&g.mu);
        int stopping = g.stopping;
        uint64_t deadline = g.stop_deadline_ns;
        g.st.posts++;
        pthread_mutex_unlock(&g.mu);
        if (stopping) {
            uint64_t now = mono_ns();
            if (now >= deadline)
                break;
            long left = (long)((deadline - now) / 1000000);
            if (left < timeout)
                timeout = left;
        }
        int r = post(h, body, timeout);
        if (r != 0) {
            ok = r > 0;
            break;
        }
        if (attempt == g.o.max_retries)
            break;
        long nap_ms = RETRY_BASE_MS << attempt;
        if (stopping && mono_ns() + (uint64_t)nap_ms * 1000000 >= deadline)
            break;
        struct timespec nap = {nap_ms / 1000, (nap_ms % 1000) * 1000000};
        nanosleep(&nap, NULL);
    }
    free(body);
    return ok;
}

static void *exporter(void *arg)
{
    (void)arg;
    CURL *h = curl_easy_init();
    qn__span_rec **batch = calloc(g.o.batch_max, sizeof *batch);
    pthread_mutex_lock(&g.mu);
    for (;;) {
        if (g.count < g.o.batch_max && !g.stopping && !g.flush_req) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += g.o.flush_ms / 1000;
            until.tv_nsec += (g.o.flush_ms % 1000) * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&g.wake, &g.mu, &until);
        }
        if (g.count == 0) {
            g.flush_req = 0;
            pthread_cond_broadcast(&g.done);
            if (g.stopping)
                break;
            continue;
        }
        unsigned n = 0;
        while (g.count > 0 && n < g.o.batch_max) {
            batch[n++] = g.q[g.head];
            g.head = (g.head + 1) % g.o.queue_max;
            g.count--;
        }
        pthread_mutex_unlock(&g.mu);
        int ok = h && batch && export_batch(h, batch, n);
        for (unsigned i = 0; i < n; i++)
            rec_free(batch[i]);
        pthread_mutex_lock(&g.mu);
        if (ok) {
            g.st.exported += n;
            if (g.m_exported)
                qn_counter_add(g.m_exported, NULL, (double)n);
        } else {
            count_dropped(n, 0);
        }
        g.finished_total += n;
        pthread_cond_broadcast(&g.done);
    }
    pthread_mutex_unlock(&g.mu);
    free(batch);
    if (h)
        curl_easy_cleanup(h);
    return NULL;
}

/* ---- life cycle ---------------------------------------------------------------- */

int qn_otel_start(const qn_otel_opts *opts, qn_err *err)
{
    if (!opts->endpoint || !*opts->endpoint)
        return 0;
    if (strncmp(opts->endpoint, "http://", 7) != 0 && strncmp(opts->endpoint, "https://", 8) != 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "OTLP endpoint \"%s\" must start with http:// or https:// (e.g. "
                          "http://127.0.0.1:4318)",
                          opts->endpoint);
    pthread_mutex_lock(&g.mu);
    int busy = g.started;
    pthread_mutex_unlock(&g.mu);
    if (busy)
        return qn_err_set(err, QN_FAILED_PRECONDITION, "the OTLP exporter is already running");

    curl_global_init(CURL_GLOBAL_DEFAULT);
    g.o = *opts;
    if (!g.o.queue_max)
        g.o.queue_max = 4096;
    if (!g.o.batch_max)
        g.o.batch_max = 512;
    if (g.o.batch_max > g.o.queue_max)
        g.o.batch_max = g.o.queue_max;
    if (g.o.flush_ms <= 0)
        g.o.flush_ms = 1000;
    if (g.o.timeout_ms <= 0)
        g.o.timeout_ms = 5000;
    if (g.o.max_retries <= 0)
        g.o.max_retries = g.o.max_retries < 0 ? 0 : 2;
    const char *ep = opts->endpoint;
    size_t n = strlen(ep);
    while (n > 0 && ep[n - 1] == '/')
        n--;
    g.url = malloc(n + sizeof "/v1/traces");
    g.service = strdup(opts->service ? opts->service : "quern");
    g.q = calloc(g.o.queue_max, sizeof *g.q);
    if (!g.url || !g.service || !g.q)
        goto oom;
    memcpy(g.url, ep, n);
    memcpy(g.url + n, "/v1/traces", sizeof "/v1/traces");
    g.head = g.count = 0;
    g.queued_total = g.finished_total = 0;
    g.stopping = g.flush_req = 0;
    memset(&g.st, 0, sizeof g.st);
    g.m_exported = g.m_dropped = NULL;
    if (opts->metrics) {
        static const char *const reason[] = {"reason", NULL};
        g.m_exported = qn_metrics_counter(opts->metrics, "quern_otel_spans_exported_total",
                                          "Spans the OTLP collector accepted.", NULL);
        g.m_dropped = qn_metrics_counter(opts->metrics, "quern_otel_spans_dropped_total",
                                         "Spans dropped: queue_full (export behind) or export_failed "
                                         "(collector unreachable or refusing).",
                                         reason);
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g.wake, &ca);
    pthread_cond_init(&g.done, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&g.thread, NULL, exporter, NULL) != 0) {
        pthread_cond_destroy(&g.wake);
        pthread_cond_destroy(&g.done);
        free(g.url);
        free(g.service);
        free(g.q);
        g.url = g.service = NULL;
        g.q = NULL;
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "cannot start the OTLP exporter thread");
    }
    pthread_mutex_lock(&g.mu);
    g.started = 1;
    atomic_store(&g.on, 1);
    pthread_mutex_unlock(&g.mu);
    return 0;
oom:
    free(g.url);
    free(g.service);
    free(g.q);
    g.url = g.service = NULL;
    g.q = NULL;
    return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory starting the OTLP exporter");
}

/* Waits on g.done until cond holds or the absolute monotonic deadline; caller holds g.mu. */
static int wait_done(uint64_t target, uint64_t deadline_ns)
{
    while (g.finished_total < target) {
        struct timespec until = {(time_t)(deadline_ns / 1000000000ull), (long)(deadline_ns % 1000000000ull)};
        if (mono_ns() >= deadline_ns)
            return QN_DEADLINE_EXCEEDED;
        pthread_cond_timedwait(&g.done, &g.mu, &until);
    }
    return 0;
}

int qn_otel_flush(long long timeout_ms)
{
    pthread_mutex_lock(&g.mu);
    if (!g.started) {
        pthread_mutex_unlock(&g.mu);
        return 0;
    }
    uint64_t target = g.queued_total;
    g.flush_req = 1;
    pthread_cond_signal(&g.wake);
    int rc = wait_done(target, mono_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ull);
    pthread_mutex_unlock(&g.mu);
    return rc;
}

void qn_otel_shutdown(long long timeout_ms)
{
    pthread_mutex_lock(&g.mu);
    if (!g.started) {
        pthread_mutex_unlock(&g.mu);
        return;
    }
    g.stop_deadline_ns = mono_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ull;
    g.stopping = 1;
    pthread_cond_signal(&g.wake);
    pthread_mutex_unlock(&g.mu);
    pthread_join(g.thread, NULL);

    pthread_mutex_lock(&g.mu);
    atomic_store(&g.on, 0);
    g.started = 0;
    /* The exporter leaves the queue empty unless it could not start curl. */
    while (g.count > 0) {
        rec_free(g.q[g.head]);
        g.head = (g.head + 1) % g.o.queue_max;
        g.count--;
        count_dropped(1, 0);
    }
    free(g.q);
    free(g.url);
    free(g.service);
    g.q = NULL;
    g.url = g.service = NULL;
    g.m_exported = g.m_dropped = NULL;
    pthread_cond_destroy(&g.wake);
    pthread_cond_destroy(&g.done);
    pthread_mutex_unlock(&g.mu);
}

void qn_otel_stats_get(qn_otel_stats *out)
{
    pthread_mutex_lock(&g.mu);
    *out = g.st;
    pthread_mutex_unlock(&g.mu);
}
