/*
 * train.h - state shared by the modules of quern-train.
 *
 * quern-train runs training jobs (DESIGN.md section 6): a job is a request to
 * fit one model kind on one dataset snapshot of the registry, evaluate it on a
 * fresh holdout beside the current production version (champion/challenger),
 * register it and maybe promote it. docs/train.md describes the whole design;
 * in short:
 *
 *   POST /v1/jobs on any trainer stores the job locally ("queued") and
 *   publishes quern.train.requested through the outbox. Every trainer's
 *   workers consume the group "train" (competing consumers), so one trainer
 *   accepts each request: it records the job in its own store (the job is
 *   durable there), acks the message and runs it. Progress and the outcome
 *   travel back as quern.train.progress / quern.train.finished, which every
 *   trainer consumes in its own group "train-status-<instance>" to keep its
 *   copy of the jobs it was asked for up to date. DELETE publishes
 *   quern.train.cancel_requested the same way.
 *
 * Modules: main.c (config, schema, routes, start/stop), jobs.c (the HTTP API
 * and the jobs table), queue.c (workers, bus consumers, status events),
 * run.c (one job: dataset, training, upload, registration, promotion).
 */
#ifndef QUERN_TRAIN_H
#define QUERN_TRAIN_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/bus/bus.h"
#include "core/client.h"
#include "core/http.h"
#include "core/metrics.h"
#include "core/outbox.h"
#include "core/store/store.h"
#include "core/subscriber.h"
#include "core/trace.h"
#include "core/validate.h"

#define TRAIN_SOURCE "quern-train"
#define TRAIN_GROUP "train"
#define TRAIN_INSTANCE_LEN 16
#define TRAIN_ID_MAX (QN_NAME_MAX + 1) /* job ids are names (UUIDs by default) */

/* Values of a running job's cancel flag. */
enum { TRAIN_GO = 0, TRAIN_CANCEL = 1, TRAIN_SHUTDOWN = 2 };

/* One worker's slot: the job it runs (id "" when idle) and its cancel flag,
 * which DELETE and the stop hook set and the training loop polls. */
typedef struct train_slot {
    char job_id[TRAIN_ID_MAX];
    atomic_int cancel;
} train_slot;

typedef struct trainer {
    qn_store *db;
    qn_bus *bus;
    qn_outbox *outbox;            /* quern.train.requested / finished / cancel_requested */
    qn_client *reg;               /* quern-registry */
    qn_subscriber *status;        /* train-status-<instance> */
    char instance[TRAIN_INSTANCE_LEN + 1];
    char *data_dir;
    char *work_dir;               /* <data>/work: bundles being written */
    char *dataset_dir;            /* <data>/datasets: downloaded snapshots by digest */
    char *cache_dir;              /* <data>/cache: champion bundles */
    int workers;
    long long progress_ms;        /* least time between two progress updates */
    int max_attempts;             /* runs of one job before it is failed for good */
    long long upstream_wait_ms;   /* how long a job waits for an unavailable registry */
    long long max_dataset;        /* bytes of a dataset file */
    pthread_t *threads;
    train_slot *slots;            /* one per worker */
    pthread_mutex_t mu;           /* guards slots[].job_id */
    atomic_int stopping;
    atomic_int bus_ok;
    qn_metric *jobs_total;        /* {outcome} */
    qn_metric *job_seconds;
    qn_metric *jobs_running;
    qn_metric *promotions;
    qn_metric *upstream_waits;    /* runs of a job repeated after the registry was unavailable */
} trainer;

/* A job as a worker runs it: the normalized request plus bookkeeping. */
typedef struct train_job {
    char id[TRAIN_ID_MAX];
    json_t *request;              /* normalized body (owned) */
    const char *model, *kind, *dataset;   /* borrowed from request */
    int64_t dataset_version;      /* 0: latest */
    json_t *spec;                 /* borrowed from request */
    json_t *policy;               /* borrowed: {alias, metric|null, margin, mode} */
    char *origin;                 /* trainer that accepted the POST, or NULL */
    int attempts;                 /* including this run */
    train_slot *slot;
    char traceparent[QN_TRACEPARENT_LEN + 1]; /* the request's trace, "" when none */
    qn_trace_ctx trace;           /* the job's own span while it runs */
} train_job;

/* Answers a storage failure (client codes pass through, the rest is logged
 * and answered as a bare 500/503). */
int train_fail(qn_req *req, qn_res *res, const qn_err *err);

/* jobs.c */
int train_jobs_create(qn_req *req, qn_res *res, void *ud);
int train_jobs_list(qn_req *req, qn_res *res, void *ud);
int train_jobs_get(qn_req *req, qn_res *res, void *ud);
int train_jobs_cancel(qn_req *req, qn_res *res, void *ud);
/* Validates a job request (an HTTP body or a quern.train.requested event's
 * data; from_bus allows job_id and origin) and builds its normalized form
 * {model, kind, dataset, dataset_version?, spec, promote_policy, reason?}.
 * 0 and *out (caller decrefs), or QN_INVALID_ARGUMENT naming the field. */
int train_request_parse(const json_t *body, int from_bus, json_t **out, qn_err *err);
/* Sets a job's state and fields in one write transaction; when event is not
 * NULL (borrowed) it is appended to the outbox in the same transaction. Any
 * of progress/result/error may be NULL (left unchanged). */
int train_job_update(trainer *t, const char *id, const char *state, const json_t *progress,
                     const json_t *result, const json_t *error, const json_t *event, qn_err *err);
/* Cancels a job that waits here for a worker: 1 when cancelled, 0 when a
 * worker took it meanwhile, negative on a store failure. */
int train_job_cancel_queued(trainer *t, const char *id, qn_err *err);
/* A job row as JSON (NULL and QN_NOT_FOUND when absent). */
json_t *train_job_load(trainer *t, const char *id, qn_err *err);

/* queue.c */
int train_queue_start(trainer *t, qn_err *err);
void train_queue_stop(trainer *t);
/* Sets the cancel flag of a job this trainer is running. 1 when found. */
int train_queue_cancel_local(trainer *t, const char *id);
/* Publishes a status event now (progress: best effort, never through the
 * outbox). data stolen. */
void train_publish_now(trainer *t, const char *type, json_t *data);

/* run.c */
/* Checks kind and spec together (the training library's own validation). */
int train_spec_check(const char *kind, const json_t *spec, qn_err *err);
/* Runs one job to its end. Returns 0 when it succeeded (*result set: owned by
 * the caller), QN_CANCELLED when the slot's flag stopped it, or another code
 * with err saying why it failed. */
int train_run(trainer *t, train_job *job, json_t **result, qn_err *err);

/* track.c: a job logged as a run of the registry's tracking store (best
 * effort: a failed call turns tracking off for the job, never fails it).
 * Used by the job's one thread. */
typedef struct train_track {
    qn_client *reg;
    const qn_trace_ctx *trace;
    int on;                       /* tracking this job */
    char job_id[TRAIN_ID_MAX];
    char run_id[40];              /* the run (32 hex) */
    json_t *pending;              /* loss points not sent yet */
    int last_step;
    int64_t last_flush;           /* ms */
} train_track;

/* Finds or creates the job's run (experiment: the model's name) and logs
 * the spec's params. */
void train_track_start(train_track *tr, qn_client *reg, const qn_trace_ctx *trace, const train_job *job);
/* Queues one point of the "loss" series (sent at least once a second). */
void train_track_loss(train_track *tr, int iteration, double loss);
void train_track_flush(train_track *tr);
/* The dataset version the job read, as the run's input (lineage). */
void train_track_input(train_track *tr, const char *dataset, int64_t version);
/* The final evaluation metrics (numbers of metrics, baseline.* included). */
void train_track_metrics(train_track *tr, const json_t *metrics);
/* Ends the run FINISHED (ok) or FAILED and frees what tr holds. */
void train_track_end(train_track *tr, int ok);

#endif
