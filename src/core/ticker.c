/* ticker.c - a periodic background thread (see ticker.h). */
#include "core/ticker.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct qn_ticker {
    void (*fn)(void *ud);
    void *ud;
    long long interval_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
};

static void *run(void *arg)
{
    qn_ticker *t = arg;
    pthread_mutex_lock(&t->mu);
    while (!t->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long ns = ts.tv_nsec + (t->interval_ms % 1000) * 1000000;
        ts.tv_sec += (time_t)(t->interval_ms / 1000 + ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&t->cv, &t->mu, &ts);
        if (t->stopping)
            break;
        pthread_mutex_unlock(&t->mu);
        t->fn(t->ud);
        pthread_mutex_lock(&t->mu);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

qn_ticker *qn_ticker_start(void (*fn)(void *ud), void *ud, long long interval_ms, qn_err *err)
{
    qn_ticker *t = calloc(1, sizeof *t);
    if (!t) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    t->fn = fn;
    t->ud = ud;
    t->interval_ms = interval_ms > 0 ? interval_ms : 1;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    if (pthread_create(&t->thread, NULL, run, t) != 0) {
        pthread_mutex_destroy(&t->mu);
        pthread_cond_destroy(&t->cv);
        free(t);
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "cannot start a ticker thread");
        return NULL;
    }
    return t;
}

void qn_ticker_stop(qn_ticker *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    t->stopping = 1;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}
