/*
 * bench_ingest.c - durable ingest throughput, and the limits it runs against.
 *
 *   bench_ingest http URL [threads] [seconds] [batch]
 *       N keep-alive clients (libcurl, one thread each) POST NDJSON batches
 *       of `batch` small events to URL (.../v1/datasets/NAME/events) for the
 *       given time; prints events/s acknowledged with 201.
 *   bench_ingest raw PATH [seconds] [batch]
 *       The same rows inserted straight into a SQLite WAL file
 *       (synchronous=NORMAL, the service's table and one prepared statement,
 *       `batch` rows per transaction): the storage's own write rate.
 *   bench_ingest parse [seconds] [batch]
 *       Only ml/records parsing one NDJSON batch into canonical rows, on
 *       one thread: the CPU cost per event before storage.
 *
 * bench/bench_ingest.sh runs all three and the service side by side.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ml/records.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A batch of n small events, as a client would send them; client k and
 * batch b make the ids unique. */
static size_t make_batch(char *buf, size_t cap, int n, int k, long b)
{
    size_t len = 0;
    for (int i = 0; i < n && len + 200 < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len,
                                "{\"id\":\"c%d-b%ld-%d\",\"user\":\"u%d\",\"item\":\"i%d\",\"event\":\"view\","
                                "\"ts\":%ld,\"value\":%d.5}\n",
                                k, b, i, (i * 7919) % 100000, (i * 104729) % 50000, 1700000000L + b, i % 100);
    return len;
}

/* ---- http --------------------------------------------------------------- */

typedef struct client {
    const char *url;
    int k, batch;
    double until;
    long events, requests, failures;
} client;

static size_t sink(char *p, size_t s, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return s * n;
}

static void *client_run(void *arg)
{
    client *c = arg;
    CURL *h = curl_easy_init();
    size_t cap = (size_t)c->batch * 200 + 1024;
    char *buf = malloc(cap);
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/x-ndjson");
    hd = curl_slist_append(hd, "Expect:");
    curl_easy_setopt(h, CURLOPT_URL, c->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    for (long b = 0; now_s() < c->until; b++) {
        size_t len = make_batch(buf, cap, c->batch, c->k, b);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, buf);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)len);
        long code = 0;
        if (curl_easy_perform(h) == CURLE_OK)
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        c->requests++;
        if (code == 201)
            c->events += c->batch;
        else
            c->failures++;
    }
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    free(buf);
    return NULL;
}

static int run_http(const char *url, int threads, double secs, int batch)
{
    curl_global_init(CURL_GLOBAL_ALL);
    client *cs = calloc((size_t)threads, sizeof *cs);
    pthread_t *ts = calloc((size_t)threads, sizeof *ts);
    double t0 = now_s();
    for (int i = 0; i < threads; i++) {
        cs[i] = (client){.url = url, .k = i, .batch = batch, .until = t0 + secs};
        pthread_create(&ts[i], NULL, client_run, &cs[i]);
    }
    long ev = 0, req = 0, fail = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ts[i], NULL);
        ev += cs[i].events;
        req += cs[i].requests;
        fail += cs[i].failures;
    }
    double dt = now_s() - t0;
    printf("http: %d clients, batches of %d: %.0f events/s (%ld requests, %ld not 201, %.1f s)\n", threads, batch,
           (double)ev / dt, req, fail, dt);
    free(cs);
    free(ts);
    curl_global_cleanup();
    return fail ? 1 : 0;
}

/* ---- raw sqlite ------------------------------------------------------------ */

static int run_raw(const char *path, double secs, int batch)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    remove(path);
    if (sqlite3_open(path, &db) != SQLITE_OK)
        return 1;
    sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                     "CREATE TABLE events (dataset_id INTEGER NOT NULL, seq INTEGER NOT NULL,"
                     " data TEXT NOT NULL, PRIMARY KEY (dataset_id, seq));", NULL, NULL, NULL);
    sqlite3_prepare_v2(db, "INSERT INTO events (dataset_id, seq, data) VALUES (?, ?, ?)", -1, &st, NULL);
    size_t cap = (size_t)batch * 200 + 1024;
    char *buf = malloc(cap);
    qml_rec_batch rb;
    qml_rec_batch_init(&rb);
    qn_err err;
    size_t len = make_batch(buf, cap, batch, 0, 0);
    qml_rec_parse(buf, len, QML_REC_NDJSON, NULL, NULL, &rb, &err);
    long seq = 0;
    double t0 = now_s(), t;
    while ((t = now_s()) < t0 + secs) {
        sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        for (size_t i = 0; i < rb.nrows; i++) {
            sqlite3_bind_int64(st, 1, 1);
            sqlite3_bind_int64(st, 2, ++seq);
            sqlite3_bind_text(st, 3, rb.text + rb.off[i], (int)(rb.off[i + 1] - rb.off[i]), SQLITE_TRANSIENT);
            sqlite3_step(st);
            sqlite3_reset(st);
        }
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    }
    printf("raw sqlite (WAL, synchronous=NORMAL, %d rows/tx): %.0f rows/s\n", batch, (double)seq / (t - t0));
    qml_rec_batch_free(&rb);
    free(buf);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return 0;
}

static int run_parse(double secs, int batch)
{
    size_t cap = (size_t)batch * 200 + 1024;
    char *buf = malloc(cap);
    size_t len = make_batch(buf, cap, batch, 0, 0);
    long rows = 0;
    double t0 = now_s(), t;
    while ((t = now_s()) < t0 + secs) {
        qml_rec_batch rb;
        qn_err err;
        qml_rec_batch_init(&rb);
        qml_rec_parse(buf, len, QML_REC_NDJSON, NULL, NULL, &rb, &err);
        rows += (long)rb.nrows;
        qml_rec_batch_free(&rb);
    }
    printf("parse (ml/records, NDJSON, one thread): %.0f rows/s\n", (double)rows / (t - t0));
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "http") == 0)
        return run_http(argv[2], argc > 3 ? atoi(argv[3]) : 4, argc > 4 ? atof(argv[4]) : 10,
                        argc > 5 ? atoi(argv[5]) : 1000);
    if (argc >= 3 && strcmp(argv[1], "raw") == 0)
        return run_raw(argv[2], argc > 3 ? atof(argv[3]) : 5, argc > 4 ? atoi(argv[4]) : 1000);
    if (argc >= 2 && strcmp(argv[1], "parse") == 0)
        return run_parse(argc > 2 ? atof(argv[2]) : 3, argc > 3 ? atoi(argv[3]) : 1000);
    fprintf(stderr, "usage: bench_ingest http URL [threads] [seconds] [batch]\n"
                    "       bench_ingest raw PATH [seconds] [batch]\n"
                    "       bench_ingest parse [seconds] [batch]\n");
    return 2;
}
