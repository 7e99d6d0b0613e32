/*
 * bench_bus.c - durable publish throughput of the bus in batches of 1,000
 * small CloudEvents (~200 bytes), the shape of the ingest path (DESIGN.md
 * section 3; bench/README.md "Bus").
 *
 * Rows: the SQLite bus (qn_bus_publish_batch: validate, serialize, one
 * transaction with synchronous=FULL per batch), its baseline (plain INSERTs
 * of the same pre-serialized rows into the same table layout, one transaction
 * per 1,000, synchronous=FULL: the limit of that storage), and RabbitMQ
 * (persistent messages, one publisher-confirm round per batch) when
 * QUERN_TEST_AMQP names a broker. Events are built before the clock starts.
 *
 *     build/bench/bench_bus [total_events]     (default 200000)
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/bus/bus.h"

#define BATCH 1000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void rm_db(const char *path)
{
    char side[600];
    unlink(path);
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
}

static json_t **make_events(size_t n)
{
    json_t **evs = malloc(n * sizeof *evs);
    for (size_t i = 0; i < n; i++)
        evs[i] = qn_event_new("quern.events.ingested", "quern-ingest",
                              json_pack("{s:s, s:I, s:i}", "dataset", "retail", "row", (json_int_t)i,
                                        "qty", (int)(i % 17)),
                              NULL);
    return evs;
}

static double bench_bus(const char *url, json_t **evs, size_t n, const char *label)
{
    qn_err err;
    qn_bus *bus = qn_bus_open(url, NULL, &err);
    if (!bus) {
        fprintf(stderr, "%s: %s\n", label, err.msg);
        return -1;
    }
    /* a group, so that the broker keeps the messages (as in production) */
    static const char *const pats[] = {"quern.events.*", NULL};
    qn_consumer *c = qn_bus_subscribe(bus, "bench", pats, &err);
    if (!c) {
        fprintf(stderr, "%s: %s\n", label, err.msg);
        qn_bus_close(bus);
        return -1;
    }
    double t0 = now_s();
    for (size_t i = 0; i < n; i += BATCH) {
        size_t k = n - i < BATCH ? n - i : BATCH;
        if (qn_bus_publish_batch(bus, evs + i, k, &err) != 0) {
            fprintf(stderr, "%s: %s\n", label, err.msg);
            break;
        }
    }
    double dt = now_s() - t0;
    qn_consumer_close(c);
    qn_bus_close(bus);
    return n / dt;
}

/* The same rows the bus writes, pre-serialized, plain INSERTs. */
static double bench_raw(const char *path, json_t **evs, size_t n)
{
    char **bodies = malloc(n * sizeof *bodies);
    for (size_t i = 0; i < n; i++)
        bodies[i] = json_dumps(evs[i], JSON_COMPACT);
    sqlite3 *db;
    sqlite3_open(path, &db);
    sqlite3_exec(db,
                 "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                 "CREATE TABLE m (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, topic TEXT NOT NULL,"
                 " body TEXT NOT NULL, published_at INTEGER NOT NULL)",
                 NULL, NULL, NULL);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "INSERT INTO m (id, topic, body, published_at) VALUES (?,?,?,?)", -1,
                       &st, NULL);
    double t0 = now_s();
    for (size_t i = 0; i < n; i += BATCH) {
        size_t k = n - i < BATCH ? n - i : BATCH;
        sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        for (size_t j = i; j < i + k; j++) {
            sqlite3_bind_text(st, 1, json_string_value(json_object_get(evs[j], "id")), -1,
                              SQLITE_STATIC);
            sqlite3_bind_text(st, 2, "quern.events.ingested", -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 3, bodies[j], -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 4, 1);
            sqlite3_step(st);
            sqlite3_reset(st);
        }
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    }
    double dt = now_s() - t0;
    sqlite3_finalize(st);
    sqlite3_close(db);
    for (size_t i = 0; i < n; i++)
        free(bodies[i]);
    free(bodies);
    return n / dt;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
    if (n == 0)
        n = BATCH;
    json_t **evs = make_events(n);
    char *one = json_dumps(evs[0], JSON_COMPACT);
    size_t bytes = strlen(one);
    free(one);

    const char *work = getenv("QUERN_BENCH_WORK");
    char path[512], raw[512], url[600];
    snprintf(path, sizeof path, "%s/bench_bus_%d.db", work ? work : "/tmp", (int)getpid());
    snprintf(raw, sizeof raw, "%s/bench_bus_raw_%d.db", work ? work : "/tmp", (int)getpid());
    snprintf(url, sizeof url, "sqlite://%s", path);
    rm_db(path);
    rm_db(raw);

    double raw_rate = bench_raw(raw, evs, n);
    double sq_rate = bench_bus(url, evs, n, "sqlite");
    const char *amqp = getenv("QUERN_TEST_AMQP");
    double am_rate = amqp && *amqp ? bench_bus(amqp, evs, n, "amqp") : -1;
    rm_db(path);
    rm_db(raw);

    printf("bus: durable publish, %zu events of %zu bytes in batches of %d\n", n, bytes, BATCH);
    printf("%-46s %14s %10s\n", "path", "events/s", "vs limit");
    printf("%-46s %14.0f %9.2fx\n", "sqlite raw INSERTs, 1 tx/batch (the limit)", raw_rate, 1.0);
    printf("%-46s %14.0f %9.2fx\n", "sqlite:// qn_bus_publish_batch", sq_rate, sq_rate / raw_rate);
    if (am_rate > 0)
        printf("%-46s %14.0f %9.2fx\n", "amqp:// qn_bus_publish_batch (confirms)", am_rate,
               am_rate / raw_rate);
    else
        printf("%-46s %14s\n", "amqp:// (set QUERN_TEST_AMQP)", "-");
    for (size_t i = 0; i < n; i++)
        json_decref(evs[i]);
    free(evs);
    return 0;
}
