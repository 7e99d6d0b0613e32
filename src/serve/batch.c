/*
 * batch.c - optional dynamic batching for tabular models, as Triton does it.
 *
 * With --batching MODEL:MAX_BATCH:MAX_DELAY_US, request threads of that model
 * park their rows in a queue and sleep; one batcher thread per model runs a
 * single prediction over the concatenated rows when MAX_BATCH rows are
 * waiting or the oldest request has waited MAX_DELAY_US, then copies each
 * request's slice of the output back and wakes it. Only requests on the same
 * served version are batched together (a swap may happen between two). A
 * request at least MAX_BATCH rows long skips the queue. If the combined
 * prediction fails (one request's bad value), each request of the batch is
 * predicted alone, so every error reaches the request that caused it.
 * Off by default: it trades latency for throughput, which pays only when
 * many small requests arrive at once.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/validate.h"
#include "serve/serve.h"

typedef struct waiter {
    serve_version *v;
    const qml_input_batch *in;
    float *out;
    qn_err *err;
    int rc;
    int done;
    int64_t enq_us;
    struct waiter *next;
} waiter;

struct serve_batcher {
    char *model;
    size_t max_batch;
    int64_t delay_us;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* the batcher waits here */
    pthread_cond_t done_cv; /* request threads wait here */
    waiter *head, *tail;
    waiter **group;         /* max_batch slots: the batch being run (batcher thread only) */
    size_t rows;
    int stopping;
    pthread_t thread;
};

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void run_group(waiter **ws, size_t n)
{
    serve_version *v = ws[0]->v;
    size_t w = qml_model_output_width(v->model), total = 0, ncols = ws[0]->in->n_cols;
    for (size_t i = 0; i < n; i++)
        total += ws[i]->in->n_rows;
    int ok = n > 1;
    qml_input_col *cols = calloc(ncols ? ncols : 1, sizeof *cols);
    void **bufs = calloc(ncols ? ncols : 1, sizeof *bufs);
    float *out = malloc((total ? total : 1) * (w ? w : 1) * sizeof *out);
    if (!cols || !bufs || !out)
        ok = 0;
    for (size_t c = 0; ok && c < ncols; c++) {
        const qml_input_col *c0 = &ws[0]->in->cols[c];
        cols[c].name = c0->name;
        cols[c].type = c0->type;
        size_t at = 0;
        if (c0->type == QML_INPUT_NUM) {
            double *d = malloc((total ? total : 1) * sizeof *d);
            if (!(bufs[c] = d)) {
                ok = 0;
                break;
            }
            for (size_t i = 0; i < n; i++) {
                memcpy(d + at, ws[i]->in->cols[c].num, ws[i]->in->n_rows * sizeof *d);
                at += ws[i]->in->n_rows;
            }
            cols[c].num = d;
        } else {
            qml_str *sv = malloc((total ? total : 1) * sizeof *sv);
            if (!(bufs[c] = sv)) {
                ok = 0;
                break;
            }
            for (size_t i = 0; i < n; i++) {
                memcpy(sv + at, ws[i]->in->cols[c].str, ws[i]->in->n_rows * sizeof *sv);
                at += ws[i]->in->n_rows;
            }
            cols[c].str = sv;
        }
    }
    qn_err err;
    if (ok) {
        qml_input_batch b = {.n_rows = total, .n_cols = ncols, .cols = cols};
        ok = qml_model_predict(v->model, &b, out, &err) == 0;
    }
    if (ok) {
        size_t at = 0;
        for (size_t i = 0; i < n; i++) {
            memcpy(ws[i]->out, out + at * w, ws[i]->in->n_rows * w * sizeof *out);
            at += ws[i]->in->n_rows;
            ws[i]->rc = 0;
        }
    } else {
        for (size_t i = 0; i < n; i++)
            ws[i]->rc = qml_model_predict(v->model, ws[i]->in, ws[i]->out, ws[i]->err);
    }
    if (bufs)
        for (size_t c = 0; c < ncols; c++)
            free(bufs[c]);
    free(bufs);
    free(cols);
    free(out);
}

static void *batcher_main(void *arg)
{
    serve_batcher *b = arg;
    waiter **group = b->group;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->head && !b->stopping)
            pthread_cond_wait(&b->cv, &b->mu);
        if (!b->head && b->stopping)
            break;
        int64_t deadline = b->head->enq_us + b->delay_us;
        while (!b->stopping && b->rows < b->max_batch) {
            int64_t now = mono_us();
            if (now >= deadline)
                break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t ns = ts.tv_nsec + (deadline - now) * 1000;
            ts.tv_sec += ns / 1000000000;
            ts.tv_nsec = ns % 1000000000;
            pthread_cond_timedwait(&b->cv, &b->mu, &ts);
        }
        /* Take the oldest request and those after it on the same version. */
        size_t n = 0, rows = 0;
        serve_version *v = b->head->v;
        waiter **pp = &b->head, *prev = NULL;
        while (*pp && n < b->max_batch) {
            waiter *w = *pp;
            if (w->v == v && (n == 0 || rows + w->in->n_rows <= b->max_batch)) {
                *pp = w->next;
                if (b->tail == w)
                    b->tail = prev;
                group[n++] = w;
                rows += w->in->n_rows;
                b->rows -= w->in->n_rows;
            } else {
                prev = w;
                pp = &w->next;
            }
        }
        pthread_mutex_unlock(&b->mu);
        run_group(group, n);
        pthread_mutex_lock(&b->mu);
        for (size_t i = 0; i < n; i++)
            group[i]->done = 1;
        pthread_cond_broadcast(&b->done_cv);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

int serve_batcher_predict(serve_batcher *b, serve_version *v, const qml_input_batch *in,
                          float *out, qn_err *err)
{
    if (in->n_rows >= b->max_batch || in->n_rows == 0)
        return qml_model_predict(v->model, in, out, err);
    waiter w = {.v = v, .in = in, .out = out, .err = err, .enq_us = mono_us()};
    pthread_mutex_lock(&b->mu);
    if (b->stopping) {
        pthread_mutex_unlock(&b->mu);
        return qml_model_predict(v->model, in, out, err);
    }
    if (b->tail)
        b->tail->next = &w;
    else
        b->head = &w;
    b->tail = &w;
    b->rows += in->n_rows;
    pthread_cond_signal(&b->cv);
    while (!w.done)
        pthread_cond_wait(&b->done_cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
    return w.rc;
}

void serve_batcher_free(serve_batcher *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->stopping = 1;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    pthread_cond_destroy(&b->done_cv);
    free(b->group);
    free(b->model);
    free(b);
}

int serve_batching_setup(serve *s, const char *spec, qn_err *err)
{
    if (!spec || !*spec)
        return 0;
    char *copy = strdup(spec), *save = NULL;
    int rc = 0;
    if (!copy)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char name[160];
        long long maxb, delay;
        int used = 0;
        if (sscanf(tok, "%159[^:]:%lld:%lld%n", name, &maxb, &delay, &used) != 3 ||
            tok[used] != '\0' || maxb < 2 || maxb > 65536 || delay < 0 || delay > 10000000) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                            "--batching %s: expected MODEL:MAX_BATCH:MAX_DELAY_US with "
                            "MAX_BATCH in [2, 65536] and MAX_DELAY_US in [0, 10000000]",
                            tok);
            break;
        }
        /* Without --models the named model gets its slot now, batching
         * ready for when it is promoted. */
        serve_model *m;
        if (s->follow_all) {
            if ((rc = qn_name_check("model", name, err)) < 0) {
                qn_err_wrap(err, "--batching");
                break;
            }
            if (!(m = serve_model_add(s, name, "production"))) {
                rc = qn_err_set(err, QN_INVALID_ARGUMENT, "--batching: too many models");
                break;
            }
        } else if (!(m = serve_model_find(s, name))) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "--batching: model %s is not in --models",
                            name);
            break;
        }
        /* Everything the thread needs is allocated here, so that running
         * out of memory fails the start instead of the batcher. */
        serve_batcher *b = calloc(1, sizeof *b);
        if (!b || !(b->model = strdup(name)) ||
            !(b->group = calloc((size_t)maxb, sizeof *b->group))) {
            if (b)
                free(b->model);
            free(b);
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
        b->max_batch = (size_t)maxb;
        b->delay_us = delay;
        pthread_mutex_init(&b->mu, NULL);
        pthread_cond_init(&b->cv, NULL);
        pthread_cond_init(&b->done_cv, NULL);
        if (pthread_create(&b->thread, NULL, batcher_main, b) != 0) {
            pthread_mutex_destroy(&b->mu);
            pthread_cond_destroy(&b->cv);
            pthread_cond_destroy(&b->done_cv);
            free(b->group);
            free(b->model);
            free(b);
            rc = qn_err_set(err, QN_INTERNAL, "cannot start a batcher thread");
            break;
        }
        serve_batcher_free(m->batcher);
        m->batcher = b;
        qn_log_info(NULL, "dynamic batching", "{s:s, s:I, s:I}", "model", name, "max_batch",
                    (json_int_t)maxb, "max_delay_us", (json_int_t)delay);
    }
    free(copy);
    return rc;
}
