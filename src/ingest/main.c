/*
 * main.c - quern-ingest: configuration, schema, routes, start and stop, and
 * the admission checks every write goes through.
 *
 * The route table below is the whole HTTP API (docs/ingest.md). Bodies are
 * bounded per route; a request is admitted only while the outbox backlog is
 * under its bound, and waits a bounded time for the writer, so memory stays
 * bounded by threads x body size whatever the load.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "core/deps.h"
#include "core/json.h"
#include "core/log.h"
#include "core/outbox.h"
#include "core/service.h"
#include "ingest/ingest.h"

typedef struct ingest_cfg {
    qn_common_cfg common;
    char *db_url;
    long long max_body;
    long long max_backlog;
    long long write_wait_ms;
    long long idem_ttl_ms;
    char *source_allow;
    char *source_paths;
} ingest_cfg;

static const qn_cfg_opt opts[] = {
    QN_CFG_COMMON(ingest_cfg, "127.0.0.1:7702", "ingest"),
    {"db", "QUERN_INGEST_DB", QN_CFG_STRING, NULL, 0, 0,
     "Event store URL (default: sqlite://<data>/ingest.db)", offsetof(ingest_cfg, db_url)},
    {"max-body", "QUERN_INGEST_MAX_BODY", QN_CFG_SIZE, "64M", 1024, 1LL << 30,
     "Largest request body accepted by POST /v1/datasets/{name}/events", offsetof(ingest_cfg, max_body)},
    {"max-backlog", "QUERN_INGEST_MAX_BACKLOG", QN_CFG_INT, "100000", 1, 1000000000,
     "Outbox events not yet on the bus above which writes get 429", offsetof(ingest_cfg, max_backlog)},
    {"write-wait", "QUERN_INGEST_WRITE_WAIT", QN_CFG_DURATION, "2s", 1, 600000,
     "How long a write waits for the store before 503", offsetof(ingest_cfg, write_wait_ms)},
    {"idempotency-ttl", "QUERN_INGEST_IDEMPOTENCY_TTL", QN_CFG_DURATION, "24h", 60000, 30LL * 86400000,
     "How long an Idempotency-Key is remembered", offsetof(ingest_cfg, idem_ttl_ms)},
    {"source-allow", "QUERN_SOURCE_ALLOW", QN_CFG_STRING, NULL, 0, 0,
     "Comma-separated hosts and CIDRs http sources may reach besides public addresses "
     "(loopback, private and link-local ones are refused unless listed)", offsetof(ingest_cfg, source_allow)},
    {"source-paths", "QUERN_SOURCE_PATHS", QN_CFG_STRING, NULL, 0, 0,
     "Comma-separated directories under which sources may read files (sqlite path, files dir, "
     "password_file, headers_file); none by default", offsetof(ingest_cfg, source_paths)},
};

/* Schema. A dataset's rows live in event_blocks (migration 3): column blocks
 * (ml/colblock.h) of consecutive rows, seqs first_seq..last_seq, each row's
 * canonical JSON recoverable byte for byte. seq comes from
 * datasets.last_seq, read and bumped in the write transaction that inserts
 * the blocks, so it is gapless per dataset. events held one canonical text
 * per (dataset, seq) before that; it stays, empty: a data directory from
 * then has its rows moved into blocks at start (ing_convert_rows), which
 * needs the table in place, and a migration that dropped it would have to
 * run after that conversion, which migrations cannot express. Times are ms
 * since the epoch. */
static const qn_migration migrations[] = {
    {1,
     "CREATE TABLE datasets ("
     "  id INTEGER PRIMARY KEY,"
     "  name TEXT NOT NULL UNIQUE,"
     "  schema TEXT,"
     "  schema_version INTEGER NOT NULL DEFAULT 0,"
     "  last_seq INTEGER NOT NULL DEFAULT 0,"
     "  created_at INTEGER NOT NULL,"
     "  updated_at INTEGER NOT NULL);"
     "CREATE TABLE events ("
     "  dataset_id INTEGER NOT NULL,"
     "  seq INTEGER NOT NULL,"
     "  data TEXT NOT NULL,"
     "  PRIMARY KEY (dataset_id, seq));"
     "CREATE TABLE feedback ("
     "  id INTEGER PRIMARY KEY,"
     "  model TEXT NOT NULL,"
     "  request_id TEXT,"
     "  user_id TEXT,"
     "  item TEXT,"
     "  data TEXT NOT NULL,"
     "  event_id TEXT NOT NULL,"
     "  created_at INTEGER NOT NULL);"
     "CREATE INDEX feedback_model ON feedback (model, id);"
     "CREATE TABLE idempotency ("
     "  scope TEXT NOT NULL,"
     "  key TEXT NOT NULL,"
     "  digest TEXT NOT NULL,"
     "  status INTEGER NOT NULL,"
     "  answer TEXT NOT NULL,"
     "  created_at INTEGER NOT NULL,"
     "  PRIMARY KEY (scope, key));"
     "CREATE INDEX idempotency_age ON idempotency (created_at);"
     QN_OUTBOX_SCHEMA},
    /* Pull sources (sources.c): the declaration as canonical JSON with its
     * committed cursor and state, the files taken by digest, the runs. */
    {2,
     "CREATE TABLE sources ("
     "  name TEXT PRIMARY KEY,"
     "  kind TEXT NOT NULL,"
     "  dataset TEXT NOT NULL,"
     "  spec TEXT NOT NULL,"
     "  cursor_value TEXT,"
     "  state TEXT,"
     "  created_at INTEGER NOT NULL,"
     "  updated_at INTEGER NOT NULL);"
     "CREATE TABLE source_files ("
     "  source TEXT NOT NULL,"
     "  digest TEXT NOT NULL,"
     "  path TEXT NOT NULL,"
     "  nrows INTEGER NOT NULL,"
     "  taken_at INTEGER NOT NULL,"
     "  PRIMARY KEY (source, digest));"
     "CREATE TABLE source_runs ("
     "  id INTEGER PRIMARY KEY,"
     "  source TEXT NOT NULL,"
     "  cause TEXT NOT NULL,"
     "  status TEXT NOT NULL,"
     "  nrows INTEGER NOT NULL DEFAULT 0,"
     "  rejected INTEGER NOT NULL DEFAULT 0,"
     "  chunks INTEGER NOT NULL DEFAULT 0,"
     "  error TEXT,"
     "  errors TEXT,"
     "  started_at INTEGER NOT NULL,"
     "  finished_at INTEGER);"
     "CREATE INDEX source_runs_by ON source_runs (source, id);"},
    /* Rows as column blocks (events.c); blocks of a dataset never overlap
     * and leave no gap. */
    {3,
     "CREATE TABLE event_blocks ("
     "  dataset_id INTEGER NOT NULL,"
     "  first_seq INTEGER NOT NULL,"
     "  last_seq INTEGER NOT NULL,"
     "  data BLOB NOT NULL,"
     "  PRIMARY KEY (dataset_id, first_seq));"},
};

#define KB 1024ull
#define MB (1024ull * 1024ull)

static qn_route routes[] = {
    {"GET", "/v1/datasets", ing_datasets_list, 0, 0, NULL},
    {"GET", "/v1/datasets/{name}", ing_dataset_get, 0, 0, NULL},
    {"PUT", "/v1/datasets/{name}/schema", ing_schema_put, 256 * KB, 0, NULL},
    {"GET", "/v1/datasets/{name}/schema", ing_schema_get, 0, 0, NULL},
    {"POST", "/v1/datasets/{name}/events", ing_events_post, 0 /* from config */, 0, NULL},
    {"GET", "/v1/datasets/{name}/events", ing_events_get, 0, 0, NULL},
    {"GET", "/v1/datasets/{name}/export", ing_export_get, 0, 0, NULL},
    {"POST", "/v1/feedback", ing_feedback_post, 8 * MB, 0, NULL},
    {"GET", "/v1/outbox", ing_outbox_list, 0, 0, NULL},
    {"GET", "/v1/sources", ing_sources_list, 0, 0, NULL},
    {"PUT", "/v1/sources/{name}", ing_source_put, 256 * KB, 0, NULL},
    {"GET", "/v1/sources/{name}", ing_source_get, 0, 0, NULL},
    {"DELETE", "/v1/sources/{name}", ing_source_delete, 0, 0, NULL},
    {"POST", "/v1/sources/{name}/runs", ing_source_run, 0, 0, NULL},
    {"GET", "/v1/sources/{name}/runs", ing_source_runs, 0, 0, NULL},
};

int ing_fail(qn_req *req, qn_res *res, const qn_err *err)
{
    if (qn_code_is_client(err->code))
        return qn_res_error(res, err->code, "%s", err->msg);
    if (err->code == QN_UNAVAILABLE) {
        qn_log_warn(qn_req_trace_id(req), "store busy", "{s:s, s:s}", "route", qn_req_route(req),
                    "detail", err->msg);
        qn_res_header(res, "Retry-After", "1");
        return qn_res_error(res, QN_UNAVAILABLE, "the event store is busy; retry shortly");
    }
    qn_log_error(qn_req_trace_id(req), "storage failure", "{s:s, s:s, s:s}", "route",
                 qn_req_route(req), "code", qn_code_name(err->code), "detail", err->msg);
    return qn_res_error(res, QN_INTERNAL, "internal error");
}

int ing_admit(ingest *g, qn_req *req, qn_res *res)
{
    /* Counting the backlog is a query: do it at most every 50 ms. */
    int64_t now = qn_now_ms(), n = atomic_load(&g->backlog);
    if (now - atomic_load(&g->backlog_at) >= 50) {
        atomic_store(&g->backlog_at, now);
        n = qn_outbox_pending(g->outbox);
        atomic_store(&g->backlog, n);
    }
    if (n <= g->max_backlog)
        return 0;
    static const char *const why[] = {"backlog"};
    qn_counter_add(g->backpressure, why, 1);
    qn_res_header(res, "Retry-After", "1");
    qn_res_error_details(res, QN_RESOURCE_EXHAUSTED,
                         json_pack("{s:I, s:I}", "backlog", (json_int_t)n, "max_backlog",
                                   (json_int_t)g->max_backlog),
                         "%lld events wait to be published to the bus (bound %lld); retry shortly",
                         (long long)n, g->max_backlog);
    (void)req;
    return -1;
}

int ing_write_lock(ingest *g, qn_err *err)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += g->write_wait_ms / 1000;
    ts.tv_nsec += (g->write_wait_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    int rc = pthread_mutex_timedlock(&g->write_mu, &ts);
    if (rc == 0)
        return 0;
    static const char *const why[] = {"store"};
    qn_counter_add(g->backpressure, why, 1);
    return qn_err_set(err, QN_UNAVAILABLE, "waited %lld ms for the event store", g->write_wait_ms);
}

void ing_write_unlock(ingest *g)
{
    pthread_mutex_unlock(&g->write_mu);
}

int ing_on_error(qn_req *req, qn_res *res, int *skip)
{
    const char *s = qn_req_query(req, "on_error");
    *skip = 0;
    if (!s || strcmp(s, "reject") == 0)
        return 0;
    if (strcmp(s, "skip") == 0) {
        *skip = 1;
        return 0;
    }
    qn_res_error(res, QN_INVALID_ARGUMENT, "on_error must be reject or skip, got \"%.32s\"", s);
    return -1;
}

json_t *ing_errors_json(const qml_rec_batch *b)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < b->nerrors; i++) {
        const qml_rec_error *e = &b->errors[i];
        json_t *o = json_pack("{s:I, s:s}", "row", (json_int_t)e->row, "reason", e->msg);
        if (o && e->line)
            json_object_set_new(o, "line", json_integer((json_int_t)e->line));
        json_array_append_new(a, o);
    }
    return a;
}

static int ingest_start(qn_service_ctx *ctx, qn_err *err)
{
    ingest_cfg *cfg = ctx->cfg;
    ingest *g = calloc(1, sizeof *g);
    if (!g)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    pthread_mutex_init(&g->write_mu, NULL);
    g->write_wait_ms = cfg->write_wait_ms;
    g->max_backlog = cfg->max_backlog;
    g->idem_ttl_ms = cfg->idem_ttl_ms;
    qn_deps_opts o = {.db_url = cfg->db_url, .data = cfg->common.data, .db_file = "ingest.db",
                      .migrations = migrations, .nmigrations = QN_NELEM(migrations),
                      .bus_url = cfg->common.bus, .source = "quern-ingest", .metrics = ctx->metrics};
    if (qn_deps_open(&o, &g->db, &g->bus, &g->outbox, err) < 0) {
        pthread_mutex_destroy(&g->write_mu);
        free(g);
        return err->code;
    }

    /* Rows of a data directory from before column blocks, before anything
     * reads or writes rows. */
    if (ing_convert_rows(g->db, err) < 0) {
        qn_deps_close(g->db, g->bus, g->outbox);
        pthread_mutex_destroy(&g->write_mu);
        free(g);
        return err->code;
    }

    static const char *const rows_l[] = {"dataset", "outcome", NULL};
    static const char *const outcome[] = {"outcome", NULL};
    static const char *const reason[] = {"reason", NULL};
    static const double sizes[] = {1, 10, 100, 1000, 10000, 100000};
    g->rows = qn_metrics_counter(ctx->metrics, "quern_ingest_rows_total",
                                 "Rows received, by dataset and outcome (accepted or rejected).", rows_l);
    g->batches = qn_metrics_counter(ctx->metrics, "quern_ingest_batches_total",
                                    "Event batches, by outcome (stored, refused, replayed).", outcome);
    g->batch_rows = qn_metrics_histogram(ctx->metrics, "quern_ingest_batch_rows",
                                         "Rows per stored batch.", NULL, sizes, QN_NELEM(sizes));
    g->feedback = qn_metrics_counter(ctx->metrics, "quern_ingest_feedback_total",
                                     "Feedback records stored.", NULL);
    g->backpressure = qn_metrics_counter(ctx->metrics, "quern_ingest_backpressure_total",
                                         "Writes turned away to keep up (backlog: 429, store: 503).",
                                         reason);
    if (ing_sources_start(g, ctx->metrics, cfg->source_allow, cfg->source_paths, err) < 0) {
        ing_sources_stop(g);
        qn_deps_close(g->db, g->bus, g->outbox);
        pthread_mutex_destroy(&g->write_mu);
        free(g);
        return err->code;
    }
    for (size_t i = 0; i < QN_NELEM(routes); i++)
        if (routes[i].handler == ing_events_post)
            routes[i].max_body = (uint64_t)cfg->max_body;
    ctx->routes = routes;
    ctx->nroutes = QN_NELEM(routes);
    ctx->ud = g;
    qn_log_info(NULL, "ingest open", "{s:s, s:i, s:i}", "data", cfg->common.data, "schema",
                qn_store_version(g->db), "source_allow", (int)ing_sources_allow_count(g));
    return 0;
}

static void ingest_stop(qn_service_ctx *ctx)
{
    ingest *g = ctx->ud;
    if (!g)
        return;
    ing_sources_stop(g);
    qn_deps_flush(g->outbox, 5000);
    qn_deps_close(g->db, g->bus, g->outbox);
    pthread_mutex_destroy(&g->write_mu);
    free(g);
}

static const qn_service_def def = {
    .name = "ingest",
    .summary = "quern-ingest: raw events in (JSON, NDJSON, CSV), durably, with schemas and feedback.",
    .opts = opts,
    .nopts = QN_NELEM(opts),
    .cfg_size = sizeof(ingest_cfg),
    .start = ingest_start,
    .stop = ingest_stop,
};

int main(int argc, char **argv)
{
    return qn_service_main(&def, argc, argv);
}
