/*
 * client.c - inter-service HTTP client on libcurl (see client.h).
 *
 * Each call uses its own easy handle; a share handle pools connections and
 * DNS across calls and threads, so keep-alive survives. Retries sleep
 * min(cap, base * 2^attempt) * U[0,1) ("full jitter"), never past the call's
 * deadline.
 *
 * The circuit breaker and the bound on concurrent calls (see client.h) wrap
 * each call: do_call takes a slot (waiting at most until the deadline), asks
 * the breaker before every attempt and tells it how the attempt went. A
 * breaker counts attempts, not calls, so one call that retries against a dead
 * upstream already moves it toward open; and a retry never goes out through a
 * circuit that opened meanwhile.
 */
#include "core/client.h"
#include "core/json.h"

#include "core/log.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/otel.h"

#define RETRY_BASE_MS 50
#define RETRY_CAP_MS 2000
#define BREAKER_CAP_MS 30000

struct qn_client {
    char *base;
    char *name;                 /* upstream label */
    qn_client_opts o;
    char *token_header;
    char *user_agent;
    CURLSH *share;
    pthread_mutex_t locks[CURL_LOCK_DATA_LAST];

    /* Breaker and slots, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t slot_cv;     /* CLOCK_MONOTONIC */
    int in_flight;
    qn_circuit state;
    int fails;                  /* consecutive failed attempts while closed */
    int probing;                /* half-open: the probe is out */
    long long open_until;       /* monotonic ms */
    long long cooldown_ms;      /* the current open period */
    char last_error[256];       /* what opened the circuit */

    qn_metric *m_state, *m_requests, *m_retries, *m_in_flight;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *ud)
{
    qn_client *c = ud;
    pthread_mutex_lock(&c->locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *ud)
{
    qn_client *c = ud;
    pthread_mutex_unlock(&c->locks[data]);
}

qn_client *qn_client_new(const qn_client_opts *opts, qn_err *err)
{
    pthread_once(&global_once, global_init);
    if (!opts->base_url || strncmp(opts->base_url, "http", 4) != 0) {
        qn_err_set(err, QN_INVALID_ARGUMENT, "upstream URL \"%s\" must start with http:// or https://",
                   opts->base_url ? opts->base_url : "");
        return NULL;
    }
    qn_client *c = calloc(1, sizeof *c);
    if (!c)
        goto oom;
    c->o = *opts;
    if (!c->o.timeout_ms)
        c->o.timeout_ms = 10000;
    if (!c->o.connect_timeout_ms)
        c->o.connect_timeout_ms = 2000;
    if (!c->o.max_retries)
        c->o.max_retries = 3;
    if (c->o.max_retries < 0)
        c->o.max_retries = 0;
    if (!c->o.max_response)
        c->o.max_response = 64u << 20;
    if (!c->o.breaker_failures)
        c->o.breaker_failures = 5;
    if (!c->o.breaker_cooldown_ms)
        c->o.breaker_cooldown_ms = 1000;
    if (!c->o.max_concurrency)
        c->o.max_concurrency = 32;
    c->cooldown_ms = c->o.breaker_cooldown_ms;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->slot_cv, &ca);
    pthread_condattr_destroy(&ca);
    c->base = strdup(opts->base_url);
    c->name = strdup(opts->name && *opts->name ? opts->name : opts->base_url);
    c->user_agent = strdup(opts->user_agent ? opts->user_agent : "quern/" QUERN_VERSION);
    if (!c->base || !c->user_agent || !c->name)
        goto oom;
    size_t n = strlen(c->base);
    while (n > 0 && c->base[n - 1] == '/')
        c->base[--n] = '\0';
    if (opts->token && *opts->token && asprintf(&c->token_header, "Authorization: Bearer %s", opts->token) < 0)
        goto oom;
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&c->locks[i], NULL);
    c->share = curl_share_init();
    if (!c->share)
        goto oom;
    curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    if (opts->metrics) {
        static const char *const up[] = {"upstream", NULL};
        static const char *const upo[] = {"upstream", "outcome", NULL};
        c->m_state = qn_metrics_gauge(opts->metrics, "quern_circuit_state",
                                      "Circuit breaker per upstream: 0 closed, 1 open, 2 half-open.", up);
        c->m_requests = qn_metrics_counter(opts->metrics, "quern_client_requests_total",
                                           "Calls to other services, by how they ended.", upo);
        c->m_retries = qn_metrics_counter(opts->metrics, "quern_client_retries_total",
                                          "Attempts repeated after a failure that may pass.", up);
        c->m_in_flight = qn_metrics_gauge(opts->metrics, "quern_client_in_flight",
                                          "Calls to the upstream in flight now.", up);
        const char *v[] = {c->name};
        qn_gauge_set(c->m_state, v, QN_CIRCUIT_CLOSED);
        qn_counter_add(c->m_retries, v, 0);
        qn_gauge_set(c->m_in_flight, v, 0);
    }
    return c;
oom:
    qn_client_free(c);
    qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory creating an HTTP client");
    return NULL;
}

void qn_client_free(qn_client *c)
{
    if (!c)
        return;
    if (c->share) {
        curl_share_cleanup(c->share);
        for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
            pthread_mutex_destroy(&c->locks[i]);
    }
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->slot_cv);
    free(c->base);
    free(c->name);
    free(c->user_agent);
    free(c->token_header);
    free(c);
}

const char *qn_client_base(const qn_client *c)
{
    return c->base;
}

/* ---- one request ---------------------------------------------------------- */

typedef struct call {
    const char *method;
    const char *path;
    const char *content_type;
    const void *body;
    size_t len;
    FILE *upload;           /* streamed request body */
    long long upload_size;
    FILE *download;         /* streamed response body */
    const char *idem_key;
    const char *accept;     /* an Accept header's value, or NULL */
    const qn_trace_ctx *trace;
    qn_buf *out;            /* response body (in memory) */
    qn_fetch *fetch;        /* qn_client_fetch: absolute URL, headers, allow-list */
    long status;            /* the last attempt's HTTP status (0: no answer) */
    char *ctype;            /* when set: the answer's Content-Type goes here */
    size_t ctype_size;
} call;

static size_t write_buf(char *p, size_t size, size_t n, void *ud)
{
    qn_buf *b = ud;
    return qn_buf_append(b, p, size * n) < 0 ? 0 : size * n;
}

int qn_link_next(const char *v, size_t len, char *out, size_t cap)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        if (i >= len || v[i] != '<')
            return -1;
        size_t start = ++i;
        while (i < len && v[i] != '>')
            i++;
        if (i >= len)
            return -1;
        size_t end = i++;
        /* parameters up to the next link (a ',' outside quotes) */
        int next = 0, quoted = 0;
        size_t p = i;
        while (i < len && (quoted || v[i] != ',')) {
            if (v[i] == '"')
                quoted = !quoted;
            i++;
        }
        for (size_t j = p; j + 3 <= i; j++) {
            if (strncasecmp(v + j, "rel", 3) != 0)
                continue;
            size_t q = j + 3;
            while (q < i && v[q] == ' ')
                q++;
            if (q >= i || v[q] != '=')
                continue;
            q++;
            while (q < i && v[q] == ' ')
                q++;
            if (q < i && v[q] == '"')
                q++;
            /* rel may list several types: "next last" */
            while (q < i && v[q] != '"' && v[q] != ';') {
                while (q < i && v[q] == ' ')
                    q++;
                size_t w = q;
                while (q < i && v[q] != ' ' && v[q] != '"' && v[q] != ';')
                    q++;
                if (q - w == 4 && strncasecmp(v + w, "next", 4) == 0)
                    next = 1;
            }
        }
        if (next) {
            if (end - start + 1 > cap)
                return -1;
            memcpy(out, v + start, end - start);
            out[end - start] = '\0';
            return 0;
        }
    }
    return -1;
}

static void copy_value(char *dst, size_t cap, const char *v, size_t n)
{
    while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
        n--;
    while (n && *v == ' ')
        v++, n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static size_t header_cb(char *p, size_t size, size_t n, void *ud)
{
    qn_fetch *f = ud;
    size_t len = size * n;
    const char *colon = memchr(p, ':', len);
    if (!colon)
        return len;
    size_t kl = (size_t)(colon - p), vl = len - kl - 1;
    const char *v = colon + 1;
    if (kl == 4 && strncasecmp(p, "etag", 4) == 0)
        copy_value(f->etag, sizeof f->etag, v, vl);
    else if (kl == 13 && strncasecmp(p, "last-modified", 13) == 0)
        copy_value(f->last_modified, sizeof f->last_modified, v, vl);
    else if (kl == 12 && strncasecmp(p, "content-type", 12) == 0)
        copy_value(f->content_type, sizeof f->content_type, v, vl);
    else if (kl == 4 && strncasecmp(p, "link", 4) == 0 && !f->link_next[0])
        qn_link_next(v, vl, f->link_next, sizeof f->link_next);
    return len;
}

static size_t write_file(char *p, size_t size, size_t n, void *ud)
{
    return fwrite(p, size, n, ud) * size;
}

static size_t read_file(char *p, size_t size, size_t n, void *ud)
{
    return fread(p, size, n, ud) * size;
}

static int status_code(long status)
{
    switch (status) {
    case 400: return QN_INVALID_ARGUMENT;
    case 401: return QN_UNAUTHENTICATED;
    case 403: return QN_PERMISSION_DENIED;
    case 404: return QN_NOT_FOUND;
    case 409: return QN_ALREADY_EXISTS;
    case 413: case 429: return QN_RESOURCE_EXHAUSTED;
    case 501: return QN_UNIMPLEMENTED;
    case 502: case 503: return QN_UNAVAILABLE;
    case 504: return QN_DEADLINE_EXCEEDED;
    }
    return status >= 500 ? QN_INTERNAL : QN_INVALID_ARGUMENT;
}

/* Turns an error answer into err: the service's own code and message when it
 * used the error model, else the status. */
static int error_from_answer(qn_client *c, const call *k, long status, const char *body, size_t len,
                             qn_err *err)
{
    json_t *j = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    json_t *e = json_object_get(j, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (!msg && json_is_string(e)) /* the Open Inference Protocol's shape */
        msg = json_string_value(e);
    int rc = code ? qn_code_from_name(code) : status_code(status);
    if (rc == QN_OK || rc == QN_UNKNOWN)
        rc = status_code(status);
    qn_err_set(err, rc, "%s %s%s: %s", k->method, c->base, k->path,
               msg ? msg : (status >= 500 ? "upstream failure" : "request refused"));
    json_decref(j);
    return rc;
}

static int retryable_status(long s)
{
    return s == 429 || s == 502 || s == 503 || s == 504;
}

/* A 503 from GET /readyz is the upstream answering the question asked ("not
 * ready yet, here is why"), not failing it: counted as a failure, a console
 * polling the readiness of a service that waits for its model would open
 * that service's circuit and then fail its other reads fast as if it were
 * down. So it neither moves the breaker nor is retried. */
static int is_not_ready_answer(const call *k, long status)
{
    if (status != 503 || k->fetch || !k->path)
        return 0;
    size_t n = strcspn(k->path, "?");
    return n >= 7 && strncmp(k->path + n - 7, "/readyz", 7) == 0;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- circuit breaker and call slots ------------------------------------------ */

static const char *circuit_name(qn_circuit s)
{
    return s == QN_CIRCUIT_OPEN ? "open" : s == QN_CIRCUIT_HALF_OPEN ? "half-open" : "closed";
}

/* Under c->mu. */
static void set_state(qn_client *c, qn_circuit s)
{
    if (c->state == s)
        return;
    qn_circuit was = c->state;
    c->state = s;
    if (c->m_state) {
        const char *v[] = {c->name};
        qn_gauge_set(c->m_state, v, s);
    }
    if (s == QN_CIRCUIT_OPEN)
        qn_log_warn(NULL, "circuit open", "{s:s, s:s, s:I, s:s}", "upstream", c->name, "was",
                    circuit_name(was), "cooldown_ms", (json_int_t)c->cooldown_ms, "last_error",
                    c->last_error);
    else if (s == QN_CIRCUIT_CLOSED)
        qn_log_info(NULL, "circuit closed", "{s:s}", "upstream", c->name);
}

/* Under c->mu: opens for the current cool-down, remembering why. */
static void trip(qn_client *c, const qn_err *why)
{
    snprintf(c->last_error, sizeof c->last_error, "%.200s", why->msg);
    c->open_until = now_ms() + c->cooldown_ms;
    c->probing = 0;
    set_state(c, QN_CIRCUIT_OPEN);
}

qn_circuit qn_client_circuit(qn_client *c)
{
    pthread_mutex_lock(&c->mu);
    qn_circuit s = c->state;
    pthread_mutex_unlock(&c->mu);
    return s;
}

/* Before an attempt: 0 to go (*probe = 1 when it is the half-open probe), or
 * QN_UNAVAILABLE while the circuit refuses calls. peek only looks (no probe
 * is taken): a call fails fast before it waits for a slot. */
static int breaker_admit(qn_client *c, int peek, int *probe, qn_err *err)
{
    *probe = 0;
    if (c->o.breaker_failures < 0)
        return 0;
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    long long now = now_ms();
    if (c->state == QN_CIRCUIT_OPEN && now >= c->open_until && !peek)
        set_state(c, QN_CIRCUIT_HALF_OPEN);
    if (c->state == QN_CIRCUIT_OPEN && now < c->open_until)
        rc = qn_err_set(err, QN_UNAVAILABLE, "circuit open for %s; retrying after %.1fs (last failure: %s)",
                        c->name, (double)(c->open_until - now) / 1000.0, c->last_error);
    else if (c->state == QN_CIRCUIT_HALF_OPEN && c->probing)
        rc = qn_err_set(err, QN_UNAVAILABLE, "circuit half-open for %s; a probe call is testing it (last failure: %s)",
                        c->name, c->last_error);
    else if (c->state == QN_CIRCUIT_HALF_OPEN && !peek)
        c->probing = *probe = 1;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* After an admitted attempt: failed says whether the upstream failed it
 * (transport error, timeout, 5xx); why is the error when it did. Only the
 * probe moves a circuit that is not closed. */
static void breaker_record(qn_client *c, int probe, int failed, const qn_err *why)
{
    if (c->o.breaker_failures < 0)
        return;
    pthread_mutex_lock(&c->mu);
    if (c->state == QN_CIRCUIT_CLOSED) {
        if (!failed) {
            c->fails = 0;
        } else if (++c->fails >= c->o.breaker_failures) {
            c->cooldown_ms = c->o.breaker_cooldown_ms;
            trip(c, why);
        }
    } else if (probe) {
        c->probing = 0;
        if (failed) {
            long long cap = c->o.breaker_cooldown_ms > BREAKER_CAP_MS ? c->o.breaker_cooldown_ms : BREAKER_CAP_MS;
            c->cooldown_ms = c->cooldown_ms * 2 > cap ? cap : c->cooldown_ms * 2;
            trip(c, why);
        } else {
            c->fails = 0;
            c->cooldown_ms = c->o.breaker_cooldown_ms;
            set_state(c, QN_CIRCUIT_CLOSED);
        }
    }
    pthread_mutex_unlock(&c->mu);
}

/* Takes one of max_concurrency call slots, waiting at most until deadline. */
static int slot_take(qn_client *c, long long deadline, const char *method, const char *url, qn_err *err)
{
    pthread_mutex_lock(&c->mu);
    while (c->o.max_concurrency > 0 && c->in_flight >= c->o.max_concurrency) {
        struct timespec ts = {.tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000};
        if (now_ms() >= deadline ||
            (pthread_cond_timedwait(&c->slot_cv, &c->mu, &ts) == ETIMEDOUT &&
             c->in_flight >= c->o.max_concurrency)) {
            pthread_mutex_unlock(&c->mu);
            return qn_err_set(err, QN_DEADLINE_EXCEEDED,
                              "%s %s: no free call slot within %ld ms (%d calls to %s in flight)", method, url,
                              c->o.timeout_ms, c->o.max_concurrency, c->name);
        }
    }
    c->in_flight++;
    if (c->m_in_flight) {
        const char *v[] = {c->name};
        qn_gauge_set(c->m_in_flight, v, c->in_flight);
    }
    pthread_mutex_unlock(&c->mu);
    return 0;
}

static void slot_give(qn_client *c)
{
    pthread_mutex_lock(&c->mu);
    c->in_flight--;
    if (c->m_in_flight) {
        const char *v[] = {c->name};
        qn_gauge_set(c->m_in_flight, v, c->in_flight);
    }
    pthread_cond_signal(&c->slot_cv);
    pthread_mutex_unlock(&c->mu);
}

/* The attempts of one call, retried while safe and within the deadline.
 * *outcome names how it ended (the label of quern_client_requests_total). */
static int attempts(qn_client *c, call *k, long long deadline, const char **outcome, qn_err *err)
{
    int safe = k->idem_key || strcmp(k->method, "GET") == 0 || strcmp(k->method, "HEAD") == 0 ||
               strcmp(k->method, "PUT") == 0 || strcmp(k->method, "DELETE") == 0;
    char url[4096], tp[QN_TRACEPARENT_LEN + 1 + 16], ct[160], acc[160], idem[300];
    if (k->fetch)
        snprintf(url, sizeof url, "%s", k->fetch->url);
    else
        snprintf(url, sizeof url, "%s%s", c->base, k->path);
    const char *shown = k->fetch && k->fetch->shown ? k->fetch->shown : url;
    int rc = QN_UNAVAILABLE;

    for (int attempt = 0;; attempt++) {
        long long left = deadline - now_ms();
        *outcome = "deadline_exceeded";
        if (left <= 0)
            return qn_err_set(err, QN_DEADLINE_EXCEEDED, "%s %s: no answer within %ld ms", k->method,
                              url, c->o.timeout_ms);
        int probe;
        *outcome = "circuit_open";
        if ((rc = breaker_admit(c, 0, &probe, err)) < 0)
            return rc;
        *outcome = "other";
        CURL *h = curl_easy_init();
        struct curl_slist *hdrs = NULL;
        if (!h) {
            breaker_record(c, probe, 0, NULL);
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        }
        if (k->out)
            qn_buf_reset(k->out);
        if (k->upload)
            rewind(k->upload);
        if (k->download) {
            rewind(k->download);
            if (ftruncate(fileno(k->download), 0) < 0) {
                curl_easy_cleanup(h);
                breaker_record(c, probe, 0, NULL);
                return qn_err_set(err, QN_INTERNAL, "cannot truncate download file");
            }
        }
        qn_netpin *pin = NULL;
        if (k->fetch) {
            qn_fetch *f = k->fetch;
            f->etag[0] = f->last_modified[0] = f->content_type[0] = f->link_next[0] = '\0';
            if (f->allow && (rc = qn_netallow_pin(f->allow, h, url, &pin, err)) < 0) {
                curl_easy_cleanup(h);
                qn_netpin_free(pin);
                breaker_record(c, probe, 0, NULL);
                *outcome = "client_error";
                return rc;
            }
            curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb);
            curl_easy_setopt(h, CURLOPT_HEADERDATA, f);
        }
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_SHARE, c->share);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, left);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->o.connect_timeout_ms);
        curl_easy_setopt(h, CURLOPT_USERAGENT, c->user_agent);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, k->method);
        if (strcmp(k->method, "HEAD") == 0)
            curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        hdrs = curl_slist_append(hdrs, "Expect:");
        if (k->accept)
            snprintf(acc, sizeof acc, "Accept: %.140s", k->accept);
        hdrs = curl_slist_append(hdrs, k->accept  ? acc
                                       : k->fetch ? "Accept: application/json, application/x-ndjson, text/csv;q=0.9, */*;q=0.5"
                                                  : "Accept: application/json");
        for (size_t i = 0; k->fetch && i < k->fetch->nheaders; i++)
            hdrs = curl_slist_append(hdrs, k->fetch->headers[i]);
        if (c->token_header)
            hdrs = curl_slist_append(hdrs, c->token_header);
        if (k->trace) {
            char t[QN_TRACEPARENT_LEN + 1];
            qn_traceparent_format(k->trace, t);
            snprintf(tp, sizeof tp, "traceparent: %s", t);
            hdrs = curl_slist_append(hdrs, tp);
        }
        if (k->idem_key) {
            snprintf(idem, sizeof idem, "Idempotency-Key: %.255s", k->idem_key);
            hdrs = curl_slist_append(hdrs, idem);
        }
        if (k->content_type) {
            snprintf(ct, sizeof ct, "Content-Type: %.140s", k->content_type);
            hdrs = curl_slist_append(hdrs, ct);
        }
        if (k->upload) {
            curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(h, CURLOPT_READFUNCTION, read_file);
            curl_easy_setopt(h, CURLOPT_READDATA, k->upload);
            curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)k->upload_size);
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, k->method);
        } else if (k->body) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, k->body);
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)k->len);
        }
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        qn_buf errbody;
        qn_buf_init(&errbody, 1 << 20);
        if (k->download) {
            curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_file);
            curl_easy_setopt(h, CURLOPT_WRITEDATA, k->download);
        } else {
            curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_buf);
            curl_easy_setopt(h, CURLOPT_WRITEDATA, k->out ? k->out : &errbody);
        }
        CURLcode cc = curl_easy_perform(h);
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        k->status = cc == CURLE_OK ? status : 0;
        if (k->ctype) {
            char *got = NULL;
            curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &got);
            snprintf(k->ctype, k->ctype_size, "%s", cc == CURLE_OK && got ? got : "");
        }
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(h);
        qn_netpin_free(pin);

        int retry = 0, failed = 0;
        if (cc != CURLE_OK) {
            if (cc == CURLE_WRITE_ERROR && !k->download) {
                qn_buf_free(&errbody);
                breaker_record(c, probe, 0, NULL);
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "%s %s: answer larger than %zu bytes",
                                  k->method, shown, c->o.max_response);
            }
            rc = qn_err_set(err, cc == CURLE_OPERATION_TIMEDOUT ? QN_DEADLINE_EXCEEDED : QN_UNAVAILABLE,
                            "%s %s: %s", k->method, shown, curl_easy_strerror(cc));
            retry = cc == CURLE_COULDNT_CONNECT || cc == CURLE_GOT_NOTHING || cc == CURLE_SEND_ERROR ||
                    cc == CURLE_RECV_ERROR || cc == CURLE_COULDNT_RESOLVE_HOST;
            failed = 1;
            *outcome = cc == CURLE_OPERATION_TIMEDOUT ? "deadline_exceeded" : "unavailable";
        } else if ((status >= 200 && status < 300) || (k->fetch && status == 304)) {
            qn_buf_free(&errbody);
            breaker_record(c, probe, 0, NULL);
            *outcome = "ok";
            return (int)status;
        } else {
            const qn_buf *b = k->out ? k->out : &errbody;
            if (k->download) {
                /* The error answer went to the file: read it back (it is small). */
                fflush(k->download);
                rewind(k->download);
                char tmp[65536];
                size_t n = fread(tmp, 1, sizeof tmp, k->download);
                qn_buf_append(&errbody, tmp, n);
                b = &errbody;
            }
            rc = k->fetch ? qn_err_set(err, status_code(status), "GET %s: HTTP %ld", shown, status)
                          : error_from_answer(c, k, status, b->data, b->len, err);
            int not_ready = is_not_ready_answer(k, status);
            retry = retryable_status(status) && !not_ready;
            failed = status >= 500 && !not_ready;
            *outcome = status >= 500 ? "server_error" : "client_error";
        }
        qn_buf_free(&errbody);
        breaker_record(c, probe, failed, err);
        if (!retry || !safe || attempt >= c->o.max_retries)
            return rc;
        long long cap = RETRY_BASE_MS << (attempt < 10 ? attempt : 10);
        if (cap > RETRY_CAP_MS)
            cap = RETRY_CAP_MS;
        uint32_t r;
        qn_random_bytes(&r, sizeof r);
        long long sleep_ms = (long long)((double)cap * (r / 4294967296.0));
        if (now_ms() + sleep_ms >= deadline)
            return rc;
        usleep((useconds_t)(sleep_ms * 1000));
        if (c->m_retries) {
            const char *v[] = {c->name};
            qn_counter_add(c->m_retries, v, 1);
        }
    }
}

/* One call: fail fast on an open circuit, take a slot, run the attempts. */
static int do_call_untraced(qn_client *c, call *k, qn_err *err)
{
    long long deadline = now_ms() + c->o.timeout_ms;
    const char *outcome = "circuit_open";
    int probe, rc = breaker_admit(c, 1, &probe, err);
    if (rc == 0) {
        char url[4096];
        snprintf(url, sizeof url, "%s%s", k->fetch ? (k->fetch->shown ? k->fetch->shown : k->fetch->url) : c->base, k->path);
        outcome = "deadline_exceeded";
        if ((rc = slot_take(c, deadline, k->method, url, err)) == 0) {
            rc = attempts(c, k, deadline, &outcome, err);
            slot_give(c);
        }
    }
    if (c->m_requests) {
        const char *v[] = {c->name, outcome};
        qn_counter_add(c->m_requests, v, 1);
    }
    return rc;
}


/* The call as a CLIENT span, child of the caller's context: the span's
 * traceparent is what the upstream sees, so its SERVER span hangs below it. */
static int do_call(qn_client *c, call *k, qn_err *err)
{
    if (!k->trace || !qn_otel_enabled())
        return do_call_untraced(c, k, err);
    qn_span s;
    char url[512];
    qn_span_start(&s, k->method, QN_SPAN_CLIENT, k->trace);
    snprintf(url, sizeof url, "%s%s", k->fetch ? (k->fetch->shown ? k->fetch->shown : k->fetch->url) : c->base, k->path);
    qn_span_attr_str(&s, "http.method", k->method);
    qn_span_attr_str(&s, "http.url", url);
    const qn_trace_ctx *caller = k->trace;
    k->trace = &s.ctx;
    int rc = do_call_untraced(c, k, err);
    k->trace = caller;
    if (rc >= 0) {
        qn_span_attr_int(&s, "http.status_code", rc);
    } else {
        qn_span_attr_str(&s, "error.type", qn_code_name(rc));
        qn_span_error(&s, err->msg);
    }
    qn_span_end(&s);
    return rc;
}

static int json_call(qn_client *c, const char *method, const char *path, const json_t *body,
                     const char *idem, const qn_trace_ctx *trace, json_t **out, qn_err *err)
{
    char *text = body ? qn_json_dumps(body, JSON_COMPACT) : NULL;
    qn_buf resp;
    qn_buf_init(&resp, c->o.max_response);
    call k = {.method = method, .path = path, .content_type = body ? "application/json" : NULL,
              .body = text, .len = text ? strlen(text) : 0, .idem_key = idem, .trace = trace,
              .out = &resp};
    if (out)
        *out = NULL;
    int rc = do_call(c, &k, err);
    if (rc >= 200 && out && resp.len) {
        json_error_t je;
        *out = json_loadb(resp.data, resp.len, 0, &je);
        if (!*out)
            rc = qn_err_set(err, QN_INTERNAL, "%s %s%s: answer is not JSON (%s)", method, c->base, path,
                            je.text);
    }
    qn_buf_free(&resp);
    free(text);
    return rc;
}

int qn_client_json(qn_client *c, const char *method, const char *path, const json_t *body,
                   const qn_trace_ctx *trace, json_t **out, qn_err *err)
{
    return json_call(c, method, path, body, NULL, trace, out, err);
}

int qn_client_json_idem(qn_client *c, const char *method, const char *path, const json_t *body,
                        const char *idempotency_key, const qn_trace_ctx *trace, json_t **out,
                        qn_err *err)
{
    return json_call(c, method, path, body, idempotency_key, trace, out, err);
}

int qn_client_raw(qn_client *c, const char *method, const char *path, const char *content_type,
                  const void *body, size_t len, const qn_trace_ctx *trace, qn_buf *out, qn_err *err)
{
    call k = {.method = method, .path = path, .content_type = content_type, .body = body, .len = len,
              .trace = trace, .out = out};
    return do_call(c, &k, err);
}

int qn_client_raw_idem(qn_client *c, const char *method, const char *path, const char *content_type,
                       const void *body, size_t len, const char *idempotency_key, const qn_trace_ctx *trace,
                       qn_buf *out, qn_err *err)
{
    call k = {.method = method, .path = path, .content_type = content_type, .body = body, .len = len,
              .idem_key = idempotency_key, .trace = trace, .out = out};
    return do_call(c, &k, err);
}

int qn_client_get_as(qn_client *c, const char *path, const char *accept, const qn_trace_ctx *trace, qn_buf *out,
                     char *ctype, size_t ctype_size, qn_err *err)
{
    call k = {.method = "GET", .path = path, .accept = accept, .trace = trace, .out = out, .ctype = ctype,
              .ctype_size = ctype_size};
    return do_call(c, &k, err);
}

int qn_client_fetch(qn_client *c, qn_fetch *f, qn_buf *out, qn_err *err)
{
    call k = {.method = "GET", .path = "", .out = out, .fetch = f};
    return do_call(c, &k, err);
}

int qn_client_forward(qn_client *c, const char *method, const char *path, const char *content_type,
                      const void *body, size_t len, const qn_trace_ctx *trace, qn_buf *out, char *ctype,
                      size_t ctype_size, qn_err *err)
{
    call k = {.method = method, .path = path, .content_type = content_type, .body = body, .len = len,
              .trace = trace, .out = out, .ctype = ctype, .ctype_size = ctype_size};
    int rc = do_call(c, &k, err);
    return k.status >= 100 ? (int)k.status : rc;
}

int qn_client_put_file(qn_client *c, const char *path, const char *file, const qn_trace_ctx *trace,
                       qn_err *err)
{
    FILE *f = fopen(file, "rb");
    if (!f)
        return qn_err_set(err, QN_NOT_FOUND, "cannot open %s: %s", file, strerror(errno));
    fseeko(f, 0, SEEK_END);
    long long size = ftello(f);
    rewind(f);
    call k = {.method = "PUT", .path = path, .content_type = "application/octet-stream", .upload = f,
              .upload_size = size, .trace = trace};
    int rc = do_call(c, &k, err);
    fclose(f);
    return rc;
}

int qn_client_post_stream(qn_client *c, const char *path, const char *content_type, FILE *body,
                          const qn_trace_ctx *trace, qn_buf *out, qn_err *err)
{
    /* Length unknown: curl sends it chunked. A POST is never retried (the
     * stream could not be sent again anyway). */
    call k = {.method = "POST", .path = path, .content_type = content_type, .upload = body,
              .upload_size = -1, .out = out, .trace = trace};
    return do_call(c, &k, err);
}

int qn_client_get_file(qn_client *c, const char *path, const char *dest, const qn_trace_ctx *trace,
                       qn_err *err)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", dest);
    FILE *f = fopen(tmp, "w+b");
    if (!f)
        return qn_err_set(err, QN_INTERNAL, "cannot create %s: %s", tmp, strerror(errno));
    call k = {.method = "GET", .path = path, .download = f, .trace = trace};
    int rc = do_call(c, &k, err);
    if (rc >= 200 && (fflush(f) != 0 || fsync(fileno(f)) != 0))
        rc = qn_err_set(err, QN_INTERNAL, "cannot write %s: %s", tmp, strerror(errno));
    fclose(f);
    if (rc >= 200 && rename(tmp, dest) != 0)
        rc = qn_err_set(err, QN_INTERNAL, "cannot rename %s: %s", tmp, strerror(errno));
    if (rc < 0)
        unlink(tmp);
    return rc;
}
