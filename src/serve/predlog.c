/*
 * predlog.c - sampled prediction logging to the bus (quern.predictions.logged).
 *
 * Request threads only ever append to a bounded in-memory ring under a mutex
 * (never waiting for the bus); when the ring is full the sample is dropped
 * and counted in quern_prediction_log_dropped_total. One background thread
 * drains the ring every second (sooner when a batch is full), groups samples
 * by model and version into events of at most `batch` predictions
 *   {"model","version","predictions":[{"request_id","time","features":{...},
 *                                      "prediction":...,"latency_us"?,
 *                                      "alias"?,"role"?}]}
 * where latency_us is the request's serving latency in microseconds (the
 * model's work: reading the inputs, predicting, building the outputs; not
 * the transport), what quern-monitor compares canaries on.
 * and publishes them with one qn_bus_publish_batch. The outbox is not used on
 * purpose: losing samples under pressure is acceptable, blocking or slowing
 * requests is not. Events that the bus refuses are counted as dropped.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"
#include "core/log.h"
#include "core/trace.h"
#include "core/validate.h"
#include "serve/serve.h"

typedef struct sample {
    char model[QN_NAME_MAX + 1];
    char version[24];
    char request_id[257];
    char alias[QN_NAME_MAX + 1]; /* "": not recorded */
    char role[16];
    int64_t time_ms;
    int64_t latency_us; /* < 0: not recorded */
    json_t *features;
    json_t *prediction;
} sample;

struct serve_predlog {
    qn_bus *bus;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sample *ring;
    sample *taken;      /* cap slots: what the thread drained (thread only) */
    size_t cap, head, count, batch;
    int stopping;
    pthread_t thread;
    qn_metric *dropped, *sent;
};

static _Thread_local uint64_t rng_state;

int serve_predlog_sample(double rate)
{
    if (rate <= 0)
        return 0;
    if (rate >= 1)
        return 1;
    if (!rng_state)
        qn_random_bytes(&rng_state, sizeof rng_state);
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) * (1.0 / 9007199254740992.0) < rate;
}

void serve_predlog_add(serve_predlog *p, const char *model, const char *version,
                       const char *request_id, json_t *features, json_t *prediction)
{
    serve_predlog_add_role(p, model, version, NULL, NULL, request_id, -1, features, prediction);
}

void serve_predlog_add_role(serve_predlog *p, const char *model, const char *version, const char *alias,
                            const char *role, const char *request_id, int64_t latency_us, json_t *features,
                            json_t *prediction)
{
    if (!p || !features || !prediction) {
        json_decref(features);
        json_decref(prediction);
        return;
    }
    pthread_mutex_lock(&p->mu);
    if (p->count == p->cap || p->stopping) {
        pthread_mutex_unlock(&p->mu);
        qn_counter_add(p->dropped, NULL, 1);
        json_decref(features);
        json_decref(prediction);
        return;
    }
    sample *s = &p->ring[(p->head + p->count) % p->cap];
    snprintf(s->model, sizeof s->model, "%s", model);
    snprintf(s->version, sizeof s->version, "%s", version);
    snprintf(s->request_id, sizeof s->request_id, "%s", request_id);
    snprintf(s->alias, sizeof s->alias, "%s", alias ? alias : "");
    snprintf(s->role, sizeof s->role, "%s", role ? role : "");
    s->time_ms = qn_now_ms();
    s->latency_us = latency_us;
    s->features = features;
    s->prediction = prediction;
    p->count++;
    if (p->count >= p->batch)
        pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* Publishes taken samples, grouped by model and version. */
static void publish(serve_predlog *p, sample *taken, size_t n)
{
    json_t **events = calloc(n ? n : 1, sizeof *events);
    size_t *counts = calloc(n ? n : 1, sizeof *counts);
    size_t nev = 0;
    int *done = calloc(n ? n : 1, sizeof *done);
    if (!events || !counts || !done) {
        qn_counter_add(p->dropped, NULL, (double)n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (done[i])
            continue;
        json_t *preds = json_array();
        size_t c = 0, lost = 0;
        for (size_t j = i; j < n && c + lost < p->batch; j++) {
            if (done[j] || strcmp(taken[j].model, taken[i].model) ||
                strcmp(taken[j].version, taken[i].version))
                continue;
            done[j] = 1;
            /* Out of memory (or text jansson refuses): that sample is dropped
             * and counted, never sent as a hole or counted as sent. */
            json_t *one = json_pack("{s:s, s:o, s:O, s:O}", "request_id", taken[j].request_id,
                                    "time", qn_json_time(taken[j].time_ms), "features",
                                    taken[j].features, "prediction", taken[j].prediction);
            if (one && taken[j].latency_us >= 0 &&
                json_object_set_new(one, "latency_us", json_integer(taken[j].latency_us)) < 0) {
                json_decref(one);
                one = NULL;
            }
            if (one && taken[j].alias[0] &&
                (json_object_set_new(one, "alias", json_string(taken[j].alias)) < 0 ||
                 json_object_set_new(one, "role", json_string(taken[j].role)) < 0)) {
                json_decref(one);
                one = NULL;
            }
            if (!one || !preds || json_array_append_new(preds, one) < 0) {
                if (one && !preds)
                    json_decref(one);
                lost++;
                continue;
            }
            c++;
        }
        if (lost)
            qn_counter_add(p->dropped, NULL, (double)lost);
        if (!c) {
            json_decref(preds);
            continue;
        }
        json_t *data = json_pack("{s:s, s:s, s:o}", "model", taken[i].model, "version",
                                 taken[i].version, "predictions", preds);
        events[nev] = data ? qn_event_new("quern.predictions.logged", "quern-serve", data, NULL)
                           : NULL;
        counts[nev] = c;
        if (events[nev])
            nev++;
        else
            qn_counter_add(p->dropped, NULL, (double)c);
    }
    qn_err err;
    size_t total = 0;
    for (size_t e = 0; e < nev; e++)
        total += counts[e];
    if (nev && qn_bus_publish_batch(p->bus, events, nev, &err) < 0) {
        qn_counter_add(p->dropped, NULL, (double)total);
        qn_log_warn(NULL, "prediction log dropped", "{s:I, s:s}", "samples", (json_int_t)total,
                    "error", err.msg);
    } else if (nev) {
        qn_counter_add(p->sent, NULL, (double)total);
    }
out:
    for (size_t e = 0; e < nev; e++)
        json_decref(events[e]);
    free(events);
    free(counts);
    free(done);
}

static void *predlog_main(void *arg)
{
    serve_predlog *p = arg;
    sample *taken = p->taken;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (!p->stopping && p->count < p->batch) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        }
        size_t n = 0;
        while (p->count && n < p->cap) {
            taken[n++] = p->ring[p->head];
            p->head = (p->head + 1) % p->cap;
            p->count--;
        }
        int stop = p->stopping;
        pthread_mutex_unlock(&p->mu);
        if (n)
            publish(p, taken, n);
        for (size_t i = 0; i < n; i++) {
            json_decref(taken[i].features);
            json_decref(taken[i].prediction);
        }
        pthread_mutex_lock(&p->mu);
        if (stop && p->count == 0)
            break;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

serve_predlog *serve_predlog_start(qn_bus *bus, qn_metrics *metrics, size_t queue, size_t batch,
                                   qn_err *err)
{
    /* The thread's buffer too is allocated here: a thread that could not
     * get it would never drain the ring (and never let shutdown finish). */
    serve_predlog *p = calloc(1, sizeof *p);
    if (!p || !(p->ring = calloc(queue, sizeof *p->ring)) ||
        !(p->taken = calloc(queue, sizeof *p->taken))) {
        if (p)
            free(p->ring);
        free(p);
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory for the prediction log queue");
        return NULL;
    }
    p->bus = bus;
    p->cap = queue;
    p->batch = batch;
    p->dropped = qn_metrics_counter(metrics, "quern_prediction_log_dropped_total",
                                    "Prediction samples dropped (queue full or bus failure).",
                                    NULL);
    p->sent = qn_metrics_counter(metrics, "quern_prediction_log_sent_total",
                                 "Prediction samples published to the bus.", NULL);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pthread_create(&p->thread, NULL, predlog_main, p) != 0) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        free(p->taken);
        free(p->ring);
        free(p);
        qn_err_set(err, QN_INTERNAL, "cannot start the prediction log thread");
        return NULL;
    }
    return p;
}

void serve_predlog_stop(serve_predlog *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->taken);
    free(p->ring);
    free(p);
}
