/*
 * main.c - quern-train: configuration, schema, routes, start and stop.
 *
 * The route table below is the trainer's whole HTTP API (docs/train.md);
 * jobs.c answers it, queue.c moves jobs between trainers through the bus and
 * run.c runs them.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/deps.h"
#include "core/json.h"
#include "core/log.h"
#include "core/service.h"
#include "core/trace.h"
#include "train/train.h"

typedef struct train_cfg {
    qn_common_cfg common;
    long long workers;
    long long progress_ms;
    long long max_attempts;
    long long max_dataset;
    long long registry_timeout_ms;
    long long upstream_wait_ms;
    char *db_url;
} train_cfg;

static const qn_cfg_opt opts[] = {
    QN_CFG_COMMON(train_cfg, "127.0.0.1:7704", "train"),
    {"workers", "QUERN_TRAIN_WORKERS", QN_CFG_INT, "1", 1, 64,
     "Jobs this trainer runs at once (each worker takes one job from the bus at a time)",
     offsetof(train_cfg, workers)},
    {"progress-interval", "QUERN_TRAIN_PROGRESS_INTERVAL", QN_CFG_DURATION, "250ms", 10, 60000,
     "Least time between two progress updates of a running job", offsetof(train_cfg, progress_ms)},
    {"max-attempts", "QUERN_TRAIN_MAX_ATTEMPTS", QN_CFG_INT, "3", 1, 100,
     "Runs of one job (restarts after a crash included) before it fails for good",
     offsetof(train_cfg, max_attempts)},
    {"max-dataset-size", "QUERN_TRAIN_MAX_DATASET_SIZE", QN_CFG_SIZE, "4G", 1, 1LL << 42,
     "Largest dataset file a job downloads", offsetof(train_cfg, max_dataset)},
    {"registry-timeout", "QUERN_TRAIN_REGISTRY_TIMEOUT", QN_CFG_DURATION, "10m", 1000, 86400000,
     "Deadline of one call to the registry (blob transfers included)",
     offsetof(train_cfg, registry_timeout_ms)},
    {"upstream-wait", "QUERN_TRAIN_UPSTREAM_WAIT", QN_CFG_DURATION, "10m", 0, 86400000,
     "How long a job waits, trying again with backoff, while the registry is unavailable (0: fail at once)",
     offsetof(train_cfg, upstream_wait_ms)},
    {"db", "QUERN_TRAIN_DB", QN_CFG_STRING, NULL, 0, 0,
     "Jobs store URL (default: sqlite://<data>/train.db)", offsetof(train_cfg, db_url)},
};

/* Schema. Jobs are numbered locally by n (listing order, newest first); id is
 * the job's name across trainers. request is the normalized job body; origin
 * is the trainer that took the POST (it shows the job to its caller), runner
 * the trainer that accepted it from the bus. seq orders status updates. Times
 * are ms since the epoch. meta keeps this trainer's instance id. */
static const qn_migration migrations[] = {
    {1,
     "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
     "CREATE TABLE jobs ("
     "  n INTEGER PRIMARY KEY,"
     "  id TEXT NOT NULL UNIQUE,"
     "  model TEXT NOT NULL,"
     "  kind TEXT NOT NULL,"
     "  dataset TEXT NOT NULL,"
     "  request TEXT NOT NULL,"
     "  state TEXT NOT NULL,"
     "  attempts INTEGER NOT NULL DEFAULT 0,"
     "  progress TEXT NOT NULL DEFAULT '{}',"
     "  result TEXT,"
     "  error TEXT,"
     "  origin TEXT,"
     "  runner TEXT,"
     "  seq INTEGER NOT NULL DEFAULT 0,"
     "  created_at INTEGER NOT NULL,"
     "  updated_at INTEGER NOT NULL,"
     "  started_at INTEGER,"
     "  finished_at INTEGER);"
     "CREATE INDEX jobs_runner ON jobs (runner, state, n);"
     "CREATE INDEX jobs_model ON jobs (model, n);"
     QN_OUTBOX_SCHEMA},
    /* The trace a job continues: the span that accepted its request. */
    {2, "ALTER TABLE jobs ADD COLUMN traceparent TEXT"},
};

/* The trainer's API. Job bodies are small JSON documents. */
static const qn_route routes[] = {
    {"POST", "/v1/jobs", train_jobs_create, 256 * 1024, 0, NULL},
    {"GET", "/v1/jobs", train_jobs_list, 0, 0, NULL},
    {"GET", "/v1/jobs/{id}", train_jobs_get, 0, 0, NULL},
    {"DELETE", "/v1/jobs/{id}", train_jobs_cancel, 0, 0, NULL},
};

int train_fail(qn_req *req, qn_res *res, const qn_err *err)
{
    if (qn_code_is_client(err->code))
        return qn_res_error(res, err->code, "%s", err->msg);
    qn_log_error(qn_req_trace_id(req), "storage failure", "{s:s, s:s, s:s}", "route",
                 qn_req_route(req), "code", qn_code_name(err->code), "detail", err->msg);
    if (err->code == QN_UNAVAILABLE)
        return qn_res_error(res, QN_UNAVAILABLE, "the trainer is busy; retry shortly");
    return qn_res_error(res, QN_INTERNAL, "internal error");
}

/* This trainer's instance id: made once, kept in the store, so its status
 * group on the bus survives restarts. */
static int load_instance(trainer *t, qn_err *err)
{
    qn_conn *c = qn_store_acquire(t->db, err);
    if (!c)
        return err->code;
    int rc = qn_tx_begin(c, QN_TX_WRITE, err);
    qn_stmt *st = rc < 0 ? NULL : qn_prepare(c, "SELECT value FROM meta WHERE key = 'instance'", err);
    if (!st) {
        rc = err->code;
        goto out;
    }
    rc = qn_step(st, err);
    if (rc == 1) {
        snprintf(t->instance, sizeof t->instance, "%s", qn_col_text(st, 0));
        rc = qn_step(st, err) < 0 ? err->code : 0;
    } else if (rc == 0) {
        unsigned char b[TRAIN_INSTANCE_LEN / 2];
        qn_random_bytes(b, sizeof b);
        for (size_t i = 0; i < sizeof b; i++)
            snprintf(t->instance + 2 * i, 3, "%02x", b[i]);
        st = qn_prepare(c, "INSERT INTO meta (key, value) VALUES ('instance', ?)", err);
        if (!st) {
            rc = err->code;
            goto out;
        }
        qn_bind_text(st, 1, t->instance, -1);
        rc = qn_step(st, err);
    }
    if (rc == 0)
        rc = qn_tx_commit(c, err);
out:
    qn_store_release(t->db, c);
    return rc;
}

static void trainer_free(trainer *t)
{
    if (!t)
        return;
    qn_client_free(t->reg);
    qn_deps_close(t->db, t->bus, t->outbox);
    free(t->data_dir);
    free(t->work_dir);
    free(t->dataset_dir);
    free(t->cache_dir);
    free(t);
}

static int train_ready(void *ud, const char **reason)
{
    trainer *t = ud;
    if (!atomic_load(&t->bus_ok)) {
        *reason = "the bus is not open";
        return 0;
    }
    return 1;
}

static int train_start(qn_service_ctx *ctx, qn_err *err)
{
    train_cfg *cfg = ctx->cfg;
    trainer *t = calloc(1, sizeof *t);
    int rc;
    if (!t)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    t->workers = (int)cfg->workers;
    t->progress_ms = cfg->progress_ms;
    t->max_attempts = (int)cfg->max_attempts;
    t->upstream_wait_ms = cfg->upstream_wait_ms;
    t->max_dataset = cfg->max_dataset;
    if (!(t->data_dir = strdup(cfg->common.data)) ||
        asprintf(&t->work_dir, "%s/work", cfg->common.data) < 0 ||
        asprintf(&t->dataset_dir, "%s/datasets", cfg->common.data) < 0 ||
        asprintf(&t->cache_dir, "%s/cache", cfg->common.data) < 0) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    if ((rc = qn_mkdir_p(t->work_dir, err)) < 0 || (rc = qn_mkdir_p(t->dataset_dir, err)) < 0 ||
        (rc = qn_mkdir_p(t->cache_dir, err)) < 0)
        goto fail;
    qn_deps_opts o = {.db_url = cfg->db_url, .data = cfg->common.data, .db_file = "train.db",
                      .migrations = migrations, .nmigrations = QN_NELEM(migrations),
                      .bus_url = cfg->common.bus, .source = TRAIN_SOURCE, .metrics = ctx->metrics};
    if ((rc = qn_deps_open(&o, &t->db, &t->bus, &t->outbox, err)) < 0 || (rc = load_instance(t, err)) < 0)
        goto fail;
    qn_client_opts co = {.base_url = cfg->common.registry,
                         .timeout_ms = (long)cfg->registry_timeout_ms,
                         .token = ctx->token,
                         .user_agent = "quern-train/0.1.0"};
    qn_service_client_opts(ctx, "registry", &co);
    if (!(t->reg = qn_client_new(&co, err))) {
        rc = err->code;
        goto fail;
    }

    static const char *const outcome[] = {"outcome", NULL};
    t->jobs_total = qn_metrics_counter(ctx->metrics, "quern_train_jobs_total",
                                       "Jobs run by this trainer, by outcome.", outcome);
    static const double buckets[] = {1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200};
    t->job_seconds = qn_metrics_histogram(ctx->metrics, "quern_train_job_duration_seconds",
                                          "Wall time of one job run, from start to outcome.", NULL,
                                          buckets, QN_NELEM(buckets));
    t->jobs_running = qn_metrics_gauge(ctx->metrics, "quern_train_jobs_running",
                                       "Jobs this trainer is running now.", NULL);
    t->promotions = qn_metrics_counter(ctx->metrics, "quern_train_promotions_total",
                                       "New versions that moved the alias.", NULL);
    t->upstream_waits = qn_metrics_counter(ctx->metrics, "quern_train_upstream_waits_total",
                                           "Job runs repeated because the registry was unavailable.", NULL);
    qn_gauge_set(t->jobs_running, NULL, 0);
    qn_counter_add(t->upstream_waits, NULL, 0);

    if ((rc = train_queue_start(t, err)) < 0)
        goto fail;
    atomic_store(&t->bus_ok, 1);
    ctx->routes = routes;
    ctx->nroutes = QN_NELEM(routes);
    ctx->ud = t;
    qn_log_info(NULL, "trainer open", "{s:s, s:s, s:i, s:s}", "data", cfg->common.data, "instance",
                t->instance, "workers", t->workers, "registry", cfg->common.registry);
    return 0;
fail:
    trainer_free(t);
    return rc < 0 ? rc : QN_INTERNAL;
}

static void train_stop(qn_service_ctx *ctx)
{
    trainer *t = ctx->ud;
    if (!t)
        return;
    /* Running jobs go back to "queued" (not cancelled): the next start runs them. */
    train_queue_stop(t);
    qn_deps_flush(t->outbox, 5000);
    trainer_free(t);
}

static const qn_service_def def = {
    .name = "train",
    .summary = "quern-train: training jobs, evaluation and champion/challenger promotion.",
    .opts = opts,
    .nopts = QN_NELEM(opts),
    .cfg_size = sizeof(train_cfg),
    .start = train_start,
    .stop = train_stop,
    .ready = train_ready,
};

int main(int argc, char **argv)
{
    return qn_service_main(&def, argc, argv);
}
