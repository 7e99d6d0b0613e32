/*
 * webhook.c - webhook deliveries of quern-alert, off the event path.
 *
 * A bounded queue (--webhook-queue) served by --webhook-workers threads. A
 * delivery is a POST of the alert as JSON with Content-Type
 * application/json, X-Quern-Delivery (the action id, stable across retries,
 * for the receiver to dedupe) and, when the action has a secret,
 * X-Quern-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>
 * (OpenSSL HMAC). A 2xx is delivered; anything else (connection refused,
 * timeout, 4xx, 5xx) is retried after base * 2^(attempt-1) (capped), times a
 * random factor in [0.5, 1) (jitter), up to `retries` more times; then the
 * action is recorded as failed with its last error. Each worker takes the
 * earliest due delivery, so one target in backoff never holds up others;
 * the request timeout (--webhook-timeout) bounds how long a dead target can
 * occupy a worker. Every outcome is written to the action's row.
 *
 * Before each attempt the target's name is resolved and every address is
 * checked against --webhook-allow, and the POST goes only to those addresses
 * (qn_netallow_pin: no redirects, no proxy). A refused address fails the
 * delivery at once with the reason; it is not retried. The URL (which may
 * hold credentials) and the secret are never logged.
 */
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"
#include "core/log.h"
#include "core/netallow.h"
#include "core/trace.h"
#include "alert/alert.h"

typedef struct delivery {
    char id[80];
    char *url, *secret, *body;
    int retries, attempt;
    int64_t next_at;
} delivery;

struct al_webhooks {
    alerter *a;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    delivery *q;
    size_t n, max;
    int stopping;
    int nworkers;
    pthread_t *workers;
};

void al_hmac_hex(const char *secret, const char *body, size_t len, char out[65])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)body, len, mac, &ml);
    for (unsigned int i = 0; i < ml && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", mac[i]);
    out[64] = 0;
}

static void delivery_free(delivery *d)
{
    free(d->url);
    free(d->secret);
    free(d->body);
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* One POST; 0 on 2xx, -1 with a reason in errbuf (worth retrying), or -2
 * when --webhook-allow refuses an address the target resolves to (final). */
static int post(const alerter *a, const delivery *d, char *errbuf, size_t errcap)
{
    char curlerr[CURL_ERROR_SIZE] = "";
    qn_err e;
    qn_netpin *pin = NULL;
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(errbuf, errcap, "cannot create an HTTP handle");
        return -1;
    }
    int prc = qn_netallow_pin(a->webhook_allow, h, d->url, &pin, &e);
    if (prc < 0) {
        snprintf(errbuf, errcap, "%s", e.msg);
        curl_easy_cleanup(h);
        return prc == QN_PERMISSION_DENIED || prc == QN_INVALID_ARGUMENT ? -2 : -1;
    }
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    char line[160];
    snprintf(line, sizeof line, "X-Quern-Delivery: %s", d->id);
    hdrs = curl_slist_append(hdrs, line);
    hdrs = curl_slist_append(hdrs, "User-Agent: quern-alert");
    if (d->secret) {
        char hex[65];
        al_hmac_hex(d->secret, d->body, strlen(d->body), hex);
        snprintf(line, sizeof line, "X-Quern-Signature: sha256=%s", hex);
        hdrs = curl_slist_append(hdrs, line);
    }
    curl_easy_setopt(h, CURLOPT_URL, d->url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, d->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(d->body));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)a->hook_timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(a->hook_timeout_ms < 2000 ? a->hook_timeout_ms : 2000));
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curlerr);
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    qn_netpin_free(pin);
    if (cc != CURLE_OK) {
        snprintf(errbuf, errcap, "%s", curlerr[0] ? curlerr : curl_easy_strerror(cc));
        return -1;
    }
    if (status < 200 || status > 299) {
        snprintf(errbuf, errcap, "HTTP %ld", status);
        return -1;
    }
    return 0;
}

static int64_t backoff(const alerter *a, int attempt)
{
    double d = (double)a->backoff_ms;
    for (int i = 1; i < attempt && d < (double)a->backoff_max_ms; i++)
        d *= 2;
    if (d > (double)a->backoff_max_ms)
        d = (double)a->backoff_max_ms;
    uint32_t r;
    qn_random_bytes(&r, sizeof r);
    return (int64_t)(d * (0.5 + 0.5 * ((double)r / 4294967296.0)));
}

static void *worker(void *arg)
{
    al_webhooks *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stopping) {
        int64_t now = qn_now_ms(), next = now + 1000;
        size_t pick = w->n;
        for (size_t i = 0; i < w->n; i++) {
            if (w->q[i].next_at <= now && (pick == w->n || w->q[i].next_at < w->q[pick].next_at))
                pick = i;
            if (w->q[i].next_at < next)
                next = w->q[i].next_at;
        }
        if (pick == w->n) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t wait = next - now;
            if (wait < 1)
                wait = 1;
            int64_t ns = ts.tv_nsec + (wait % 1000) * 1000000;
            ts.tv_sec += wait / 1000 + ns / 1000000000;
            ts.tv_nsec = ns % 1000000000;
            pthread_cond_timedwait(&w->cv, &w->mu, &ts);
            continue;
        }
        delivery d = w->q[pick];
        w->q[pick] = w->q[--w->n];
        qn_gauge_set(w->a->m_queue, NULL, (double)w->n);
        pthread_mutex_unlock(&w->mu);

        char errbuf[QN_ERR_MSG_MAX] = "";
        d.attempt++;
        int prc = post(w->a, &d, errbuf, sizeof errbuf), ok = prc == 0;
        if (prc == -2)
            d.retries = 0;  /* refused by the allow-list: another try would be refused too */
        if (ok) {
            al_action_done(w->a, d.id, "delivered", d.attempt, NULL);
            qn_log_info(NULL, "webhook delivered", "{s:s, s:i}", "action", d.id, "attempts", d.attempt);
        } else if (d.attempt > d.retries) {
            al_action_done(w->a, d.id, "failed", d.attempt, errbuf);
            qn_log_warn(NULL, "webhook failed for good", "{s:s, s:i, s:s}", "action", d.id, "attempts", d.attempt,
                        "error", errbuf);
        } else {
            al_action_done(w->a, d.id, "retrying", d.attempt, errbuf);
            d.next_at = qn_now_ms() + backoff(w->a, d.attempt);
        }
        pthread_mutex_lock(&w->mu);
        if (ok || d.attempt > d.retries) {
            delivery_free(&d);
        } else if (w->n < w->max) {
            w->q[w->n++] = d;
            qn_gauge_set(w->a->m_queue, NULL, (double)w->n);
        } else {
            pthread_mutex_unlock(&w->mu);
            al_action_done(w->a, d.id, "failed", d.attempt, "the webhook queue is full");
            delivery_free(&d);
            pthread_mutex_lock(&w->mu);
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

al_webhooks *al_webhooks_start(alerter *a, int workers, size_t queue_max, qn_err *err)
{
    al_webhooks *w = calloc(1, sizeof *w);
    if (!w || !(w->q = calloc(queue_max, sizeof *w->q)) || !(w->workers = calloc((size_t)workers, sizeof *w->workers))) {
        if (w)
            free(w->q);
        free(w);
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    w->a = a;
    w->max = queue_max;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&w->workers[i], NULL, worker, w) != 0) {
            al_webhooks_stop(w);
            qn_err_set(err, QN_RESOURCE_EXHAUSTED, "cannot start webhook workers");
            return NULL;
        }
        w->nworkers++;
    }
    return w;
}

int al_webhook_enqueue(al_webhooks *w, const char *action_id, const char *url, const char *secret,
                       const char *body, int retries)
{
    delivery d = {0};
    snprintf(d.id, sizeof d.id, "%s", action_id);
    d.url = strdup(url);
    d.secret = secret ? strdup(secret) : NULL;
    d.body = strdup(body ? body : "{}");
    d.retries = retries < 0 ? 0 : retries;
    d.next_at = qn_now_ms();
    if (!d.url || !d.body || (secret && !d.secret)) {
        delivery_free(&d);
        return QN_RESOURCE_EXHAUSTED;
    }
    pthread_mutex_lock(&w->mu);
    if (w->n >= w->max) {
        pthread_mutex_unlock(&w->mu);
        delivery_free(&d);
        return QN_RESOURCE_EXHAUSTED;
    }
    w->q[w->n++] = d;
    qn_gauge_set(w->a->m_queue, NULL, (double)w->n);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

size_t al_webhooks_queued(al_webhooks *w)
{
    pthread_mutex_lock(&w->mu);
    size_t n = w->n;
    pthread_mutex_unlock(&w->mu);
    return n;
}

void al_webhooks_stop(al_webhooks *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->nworkers; i++)
        pthread_join(w->workers[i], NULL);
    /* what is left stays pending in the store and is resumed at the next start */
    for (size_t i = 0; i < w->n; i++)
        delivery_free(&w->q[i]);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->q);
    free(w->workers);
    free(w);
}
