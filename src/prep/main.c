/*
 * main.c - quern-prep: configuration, schema, routes, start and stop.
 *
 * The route table below is prep's whole HTTP API (docs/prep.md). Start opens
 * the store, the bus and its outbox, the clients of ingest and the registry,
 * then the workers and triggers; stop undoes it in reverse after the HTTP
 * server has drained, flushing the outbox last.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/deps.h"
#include "core/json.h"
#include "core/log.h"
#include "core/outbox.h"
#include "core/service.h"
#include "core/subscriber.h"
#include "core/validate.h"
#include "prep/prep.h"

typedef struct prep_cfg {
    qn_common_cfg common;
    char *ingest;
    char *db_url;
    long long workers;
    long long max_rows;
    long long page_rows;
} prep_cfg;

static const qn_cfg_opt opts[] = {
    QN_CFG_COMMON(prep_cfg, "127.0.0.1:7703", "prep"),
    {"ingest", "QUERN_INGEST", QN_CFG_STRING, "http://127.0.0.1:7702", 0, 0,
     "Base URL of quern-ingest (where source rows are read)", offsetof(prep_cfg, ingest)},
    {"db", "QUERN_PREP_DB", QN_CFG_STRING, NULL, 0, 0,
     "Metadata store URL (default: sqlite://<data>/prep.db)", offsetof(prep_cfg, db_url)},
    {"workers", "QUERN_PREP_WORKERS", QN_CFG_INT, "2", 1, 16,
     "Runs executed at once (never two of one pipeline)", offsetof(prep_cfg, workers)},
    {"max-rows", "QUERN_PREP_MAX_ROWS", QN_CFG_INT, "10000000", 1, 1000000000,
     "Source rows one run may read (a larger source fails the run)", offsetof(prep_cfg, max_rows)},
    {"page-rows", "QUERN_PREP_PAGE_ROWS", QN_CFG_INT, "50000", 1, 100000,
     "Rows asked of ingest per page", offsetof(prep_cfg, page_rows)},
};

/* Schema. A pipeline row keeps its normalized spec (canonical JSON) and the
 * trigger state the triggers need (rows counted since the last queued run,
 * the next scheduled time). Runs are the durable work queue; seq orders them.
 * Times are ms since the epoch. */
static const qn_migration migrations[] = {
    {1,
     "CREATE TABLE pipelines ("
     "  name TEXT PRIMARY KEY,"
     "  spec TEXT NOT NULL,"
     "  spec_digest TEXT NOT NULL,"
     "  source TEXT NOT NULL,"
     "  output TEXT NOT NULL,"
     "  trigger_kind TEXT NOT NULL,"
     "  trigger_every INTEGER NOT NULL DEFAULT 0,"
     "  interval_ms INTEGER NOT NULL DEFAULT 0,"
     "  pending_rows INTEGER NOT NULL DEFAULT 0,"
     "  next_run_at INTEGER,"
     "  revision INTEGER NOT NULL DEFAULT 1,"
     "  created_at INTEGER NOT NULL,"
     "  updated_at INTEGER NOT NULL);"
     "CREATE INDEX pipelines_source ON pipelines (source);"
     "CREATE TABLE runs ("
     "  seq INTEGER PRIMARY KEY,"
     "  id TEXT NOT NULL UNIQUE,"
     "  pipeline TEXT NOT NULL,"
     "  state TEXT NOT NULL,"
     "  trigger TEXT NOT NULL,"
     "  attempts INTEGER NOT NULL DEFAULT 0,"
     "  spec_digest TEXT,"
     "  source_last_seq INTEGER,"
     "  dataset_version INTEGER,"
     "  manifest_digest TEXT,"
     "  rows_in INTEGER,"
     "  rows_out INTEGER,"
     "  report TEXT,"
     "  error TEXT,"
     "  created_at INTEGER NOT NULL,"
     "  started_at INTEGER,"
     "  finished_at INTEGER);"
     "CREATE INDEX runs_pipeline ON runs (pipeline, seq);"
     "CREATE INDEX runs_state ON runs (state, seq);"
     QN_OUTBOX_SCHEMA QN_INBOX_SCHEMA},
    /* The trace a run continues (the request or event that queued it). */
    {2, "ALTER TABLE runs ADD COLUMN traceparent TEXT"},
};

#define KB 1024u

static int events_list(qn_req *req, qn_res *res, void *ud);

static const qn_route routes[] = {
    {"GET", "/v1/pipelines", prep_pipelines_list, 0, 0, NULL},
    {"PUT", "/v1/pipelines/{name}", prep_pipelines_put, 256 * KB, 0, NULL},
    {"GET", "/v1/pipelines/{name}", prep_pipelines_get, 0, 0, NULL},
    {"DELETE", "/v1/pipelines/{name}", prep_pipelines_delete, 0, 0, NULL},
    {"POST", "/v1/pipelines/{name}/runs", prep_runs_create, 4 * KB, 0, NULL},
    {"GET", "/v1/pipelines/{name}/runs", prep_runs_list, 0, 0, NULL},
    {"GET", "/v1/pipelines/{name}/runs/{id}", prep_runs_get, 0, 0, NULL},
    {"GET", "/v1/events", events_list, 0, 0, NULL},
};

int prep_fail(qn_req *req, qn_res *res, const qn_err *err)
{
    if (qn_code_is_client(err->code))
        return qn_res_error(res, err->code, "%s", err->msg);
    qn_log_error(qn_req_trace_id(req), "storage failure", "{s:s, s:s, s:s}", "route",
                 qn_req_route(req), "code", qn_code_name(err->code), "detail", err->msg);
    if (err->code == QN_UNAVAILABLE)
        return qn_res_error(res, QN_UNAVAILABLE, "prep is busy; retry shortly");
    return qn_res_error(res, QN_INTERNAL, "internal error");
}

/* GET /v1/events?after=&limit=: the outbox (quern.dataset.ready events and
 * whether each was published), as the registry shows its own. */
static int events_list(qn_req *req, qn_res *res, void *ud)
{
    prep *p = ud;
    return qn_outbox_list(p->db, req, res);
}

static void prep_free(prep *p)
{
    if (!p)
        return;
    qn_client_free(p->ingest);
    qn_client_free(p->registry);
    qn_deps_close(p->db, p->bus, p->outbox);
    free(p->tmp_dir);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    free(p);
}

static int prep_start(qn_service_ctx *ctx, qn_err *err)
{
    prep_cfg *cfg = ctx->cfg;
    prep *p = calloc(1, sizeof *p);
    if (!p)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->max_rows = cfg->max_rows;
    p->page_rows = cfg->page_rows;
    p->nworkers = (int)cfg->workers;
    p->metrics = ctx->metrics;
    if (asprintf(&p->tmp_dir, "%s/tmp", cfg->common.data) < 0) {
        p->tmp_dir = NULL;
        prep_free(p);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    qn_deps_opts o = {.db_url = cfg->db_url, .data = cfg->common.data, .db_file = "prep.db",
                      .migrations = migrations, .nmigrations = QN_NELEM(migrations),
                      .bus_url = cfg->common.bus, .source = "quern-prep", .metrics = ctx->metrics};
    if (qn_deps_open(&o, &p->db, &p->bus, &p->outbox, err) < 0 || qn_mkdir_p(p->tmp_dir, err) < 0) {
        prep_free(p);
        return err->code;
    }

    qn_client_opts io = {.base_url = cfg->ingest, .timeout_ms = 60000, .token = ctx->token,
                         .user_agent = "quern-prep/0.1.0"};
    qn_client_opts ro = {.base_url = cfg->common.registry, .timeout_ms = 300000, .token = ctx->token,
                         .user_agent = "quern-prep/0.1.0"};
    qn_service_client_opts(ctx, "ingest", &io);
    qn_service_client_opts(ctx, "registry", &ro);
    if (!(p->ingest = qn_client_new(&io, err)) || !(p->registry = qn_client_new(&ro, err))) {
        prep_free(p);
        return err->code;
    }

    static const char *const pipe_outcome[] = {"pipeline", "outcome", NULL};
    static const char *const pipe_stage[] = {"pipeline", "stage", NULL};
    static const char *const pipe[] = {"pipeline", NULL};
    static const double secs[] = {0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600};
    p->runs_total = qn_metrics_counter(ctx->metrics, "quern_prep_runs_total",
                                       "Pipeline runs finished, by outcome (succeeded, skipped, failed).",
                                       pipe_outcome);
    p->rows_total = qn_metrics_counter(ctx->metrics, "quern_prep_rows_total",
                                       "Rows through pipeline runs: read in, written out, dropped.",
                                       pipe_stage);
    p->run_seconds = qn_metrics_histogram(ctx->metrics, "quern_prep_run_duration_seconds",
                                          "Time a pipeline run took, start to finish.", pipe, secs,
                                          QN_NELEM(secs));
    p->queued = qn_metrics_gauge(ctx->metrics, "quern_prep_runs_queued", "Runs waiting for a worker.",
                                 NULL);

    if (prep_workers_start(p, err) < 0 || prep_triggers_start(p, err) < 0) {
        prep_triggers_stop(p);
        prep_workers_stop(p);
        prep_free(p);
        return err->code;
    }
    ctx->routes = routes;
    ctx->nroutes = QN_NELEM(routes);
    ctx->ud = p;
    qn_log_info(NULL, "prep open", "{s:s, s:s, s:s, s:i}", "data", cfg->common.data, "ingest",
                cfg->ingest, "registry", cfg->common.registry, "workers", p->nworkers);
    return 0;
}

static void prep_stop(qn_service_ctx *ctx)
{
    prep *p = ctx->ud;
    if (!p)
        return;
    prep_triggers_stop(p);
    prep_workers_stop(p);
    qn_deps_flush(p->outbox, 5000);
    prep_free(p);
}

static int prep_ready(void *ud, const char **reason)
{
    prep *p = ud;
    if (atomic_load(&p->stopping)) {
        *reason = "stopping";
        return 0;
    }
    return 1;
}

static const qn_service_def def = {
    .name = "prep",
    .summary = "quern-prep: cleaning pipelines that turn ingested rows into dataset snapshots.",
    .opts = opts,
    .nopts = QN_NELEM(opts),
    .cfg_size = sizeof(prep_cfg),
    .start = prep_start,
    .stop = prep_stop,
    .ready = prep_ready,
};

int main(int argc, char **argv)
{
    return qn_service_main(&def, argc, argv);
}
