/*
 * service.h - the main() every Quern service shares.
 *
 * Parses the service's config table (flags > environment > defaults), sets up
 * JSON logging, creates the data directory, the metrics registry and the HTTP
 * server (routes plus /healthz, /readyz, /metrics), then waits for a signal.
 * On SIGTERM or SIGINT: readiness turns off, the server stops accepting,
 * answers requests arriving on open connections with 503 (Connection:
 * close, no handler runs), drains in-flight requests within
 * --drain-timeout, joins its threads, and only then the service's stop hook
 * flushes what it owes and frees its state; the process exits 0.
 *
 *     static const qn_service_def def = {
 *         .name = "registry", .summary = "Models, versions, aliases, datasets and blobs.",
 *         .opts = opts, .nopts = QN_NELEM(opts), .cfg_size = sizeof(registry_cfg),
 *         .start = registry_start, .stop = registry_stop, .ready = registry_ready,
 *     };
 *     int main(int argc, char **argv) { return qn_service_main(&def, argc, argv); }
 *
 * start() runs before the server listens: it opens storage and returns the
 * routes (static table) and the handler user data. Exit codes: 0 clean stop
 * (or --help), 2 bad configuration, 1 failure to start.
 */
#ifndef QN_SERVICE_H
#define QN_SERVICE_H

#include <stddef.h>

#include "core/client.h"
#include "core/err.h"
#include "core/config.h"
#include "core/http.h"
#include "core/metrics.h"

typedef struct qn_service qn_service;

/* What start() hands back and what handlers may use through qn_service_*. */
typedef struct qn_service_ctx {
    const char *name;            /* "registry" */
    void *cfg;                   /* the parsed config struct (qn_common_cfg first) */
    qn_common_cfg *common;       /* == cfg */
    qn_metrics *metrics;         /* the service's registry (const label service=NAME) */
    const char *token;           /* resolved from --token / --token-file, or NULL */
    /* Filled by start(): */
    const qn_route *routes;
    size_t nroutes;
    void *ud;                    /* handler user data, passed to stop/ready too */
} qn_service_ctx;

typedef struct qn_service_def {
    const char *name;
    const char *summary;
    const qn_cfg_opt *opts;
    size_t nopts;
    size_t cfg_size;             /* sizeof the config struct */
    int (*start)(qn_service_ctx *ctx, qn_err *err);
    void (*stop)(qn_service_ctx *ctx);           /* after the HTTP server stopped; may be NULL */
    int (*ready)(void *ud, const char **reason); /* may be NULL */
    /* Optional: runs on the main thread on SIGHUP (reload). */
    void (*reload)(qn_service_ctx *ctx);
} qn_service_def;

int qn_service_main(const qn_service_def *def, int argc, char **argv);

/* Fills the parts of o every service sets the same way for a client to
 * another service: upstream (the label in quern_circuit_state and errors,
 * e.g. "registry"), the bearer token, the service's metrics and the breaker
 * settings (--breaker-failures, --breaker-cooldown). The caller sets base_url,
 * timeouts and the rest. */
void qn_service_client_opts(const qn_service_ctx *ctx, const char *upstream, qn_client_opts *o);

/* Creates dir and its parents (0755). 0 or QN_INTERNAL with err filled. */
QN_MUST_CHECK int qn_mkdir_p(const char *dir, qn_err *err);

#endif
