/*
 * deps.h - a service's store, bus and outbox, opened and closed as one.
 *
 * Every service that keeps state opens the same three things in the same
 * order: its store (a URL, or by default SQLite under --data) with its
 * migrations, the bus, and the outbox publisher that drains the store's
 * outbox table onto the bus. They are closed in reverse order. This module
 * holds that sequence and its error handling once.
 *
 *     qn_deps_opts o = {.db_url = cfg->db_url, .data = cfg->common.data, .db_file = "ingest.db",
 *                       .migrations = migrations, .nmigrations = QN_NELEM(migrations),
 *                       .bus_url = cfg->common.bus, .source = "quern-ingest",
 *                       .metrics = ctx->metrics};
 *     if (qn_deps_open(&o, &g->db, &g->bus, &g->outbox, err) < 0)
 *         return err->code;            // nothing is left open
 *     ...
 *     // on SIGTERM, after the HTTP server and the consumers stopped
 *     qn_deps_flush(g->outbox, 5000);
 *     qn_deps_close(g->db, g->bus, g->outbox);
 */
#ifndef QN_DEPS_H
#define QN_DEPS_H

#include <stddef.h>
#include <stdint.h>

#include "core/bus/bus.h"
#include "core/err.h"
#include "core/metrics.h"
#include "core/outbox.h"
#include "core/store/store.h"

typedef struct qn_deps_opts {
    const char *db_url;              /* the store's URL; NULL: sqlite://<data>/<db_file> */
    const char *data;                /* the service's --data directory */
    const char *db_file;             /* file name of the default SQLite store; NULL: no store */
    const qn_migration *migrations;  /* the store's schema */
    size_t nmigrations;
    const char *bus_url;             /* --bus */
    int64_t visibility_ms;           /* bus lease of a received message; 0: the bus default */
    const char *source;              /* CloudEvent source of the outbox; NULL: no outbox */
    qn_metrics *metrics;             /* for the bus and outbox families; may be NULL */
} qn_deps_opts;

/* Opens the store (when o->db_file or o->db_url is set), the bus, and the
 * outbox (when o->source is set and there is a store), in that order, into
 * *db, *bus and *outbox (db and outbox may be NULL when not wanted). On
 * failure closes what it opened, sets the three to NULL and returns err's
 * negative code: the store's and bus's own errors (QN_INVALID_ARGUMENT for a
 * bad URL, QN_UNAVAILABLE for a server that cannot be reached). */
int qn_deps_open(const qn_deps_opts *o, qn_store **db, qn_bus **bus, qn_outbox **outbox,
                 qn_err *err);

/* Publishes what the outbox still holds, waiting up to timeout_ms, and logs
 * a warning with the count left for the next start. NULL is a no-op. */
void qn_deps_flush(qn_outbox *outbox, long long timeout_ms);

/* Stops the outbox, closes the bus, then the store (each may be NULL). The
 * consumers of the bus must be closed first. Does not flush. */
void qn_deps_close(qn_store *db, qn_bus *bus, qn_outbox *outbox);

#endif
