/*
 * prep.h - state shared by the modules of quern-prep.
 *
 * quern-prep owns cleaning pipelines and turns the rows that quern-ingest
 * keeps into immutable dataset snapshots in quern-registry (DESIGN.md
 * sections 1-4). A pipeline is JSON (source dataset, libquern-ml cleaning
 * steps, output dataset, trigger); a run reads every source row from ingest,
 * cleans them, uploads the result as a CSV blob, registers a dataset version
 * whose manifest carries the schema, row counts and cleaning report, and
 * publishes quern.dataset.ready through the outbox.
 *
 * Runs are a durable queue in the service's own store: POST, a "rows"
 * trigger (quern.events.ingested) or a schedule adds a queued run; worker
 * threads claim queued runs (never two of one pipeline at once), execute them
 * and record the outcome with its event in one transaction. A run found
 * "running" at start was cut short by a crash and is queued again.
 *
 * Modules: main.c (config, schema, routes, start/stop), pipelines.c (the
 * pipeline resource and its validation), runs.c (the run resource, queue and
 * workers), execute.c (one run: ingest -> frame -> clean -> CSV -> registry),
 * csvout.c (frame to RFC 4180 CSV with its digest), triggers.c (the
 * quern.events.ingested subscriber and the scheduler).
 */
#ifndef QUERN_PREP_H
#define QUERN_PREP_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "core/bus/bus.h"
#include "core/client.h"
#include "core/digest.h"
#include "core/http.h"
#include "core/metrics.h"
#include "core/outbox.h"
#include "core/store/store.h"
#include "core/subscriber.h"
#include "ml/frame.h"

#define PREP_RUN_ID_HEX 32
#define PREP_MAX_ATTEMPTS 3

typedef struct prep {
    qn_store *db;
    qn_bus *bus;
    qn_outbox *outbox;          /* quern.dataset.ready leaves through here */
    qn_subscriber *sub;         /* quern.events.ingested -> "rows" triggers */
    qn_client *ingest;
    qn_client *registry;
    char *tmp_dir;              /* <data>/tmp: run scratch files */
    long long max_rows;         /* source rows one run may read */
    long long page_rows;        /* rows asked of ingest per page */
    int nworkers;

    /* workers and the scheduler */
    pthread_mutex_t mu;
    pthread_cond_t wake;        /* a run was queued, or stop */
    uint64_t kicks;             /* bumped under mu by prep_kick (no lost wake-ups) */
    atomic_int stopping;
    pthread_t *workers;
    int nstarted;
    pthread_t scheduler;
    int scheduler_started;

    qn_metrics *metrics;
    qn_metric *runs_total;      /* {pipeline, outcome} */
    qn_metric *rows_total;      /* {pipeline, stage} */
    qn_metric *run_seconds;     /* {pipeline} */
    qn_metric *queued;          /* gauge: runs waiting */
} prep;

/* Answers a storage failure: client codes pass their message through, busy
 * becomes 503, anything else is logged and answered as a bare 500. */
int prep_fail(qn_req *req, qn_res *res, const qn_err *err);

/* pipelines.c */
int prep_pipelines_put(qn_req *req, qn_res *res, void *ud);
int prep_pipelines_list(qn_req *req, qn_res *res, void *ud);
int prep_pipelines_get(qn_req *req, qn_res *res, void *ud);
int prep_pipelines_delete(qn_req *req, qn_res *res, void *ud);
/* Checks a pipeline body and returns its normalized spec (defaults filled,
 * owned by the caller), or QN_INVALID_ARGUMENT naming the field (and the
 * step index for cleaning steps). */
int prep_spec_parse(const json_t *body, json_t **spec, qn_err *err);

/* runs.c */
int prep_runs_create(qn_req *req, qn_res *res, void *ud);
int prep_runs_list(qn_req *req, qn_res *res, void *ud);
int prep_runs_get(qn_req *req, qn_res *res, void *ud);
/* Queues a run of pipeline inside the caller's write transaction on c.
 * coalesce: when a run of the pipeline is already queued, add none and
 * return 0 with id_out empty. id_out (PREP_RUN_ID_HEX + 1) receives the id.
 * trace (may be NULL) is what caused the run: its span is the run's parent. */
int prep_enqueue(qn_conn *c, const char *pipeline, const char *trigger, int coalesce,
                 const qn_trace_ctx *trace, char *id_out, qn_err *err);
/* Wakes the workers after a commit that queued runs. */
void prep_kick(prep *p);
/* Requeues runs left "running" by a crash; starts the workers. */
int prep_workers_start(prep *p, qn_err *err);
/* Stops the workers: a run in progress is interrupted at its next check and
 * queued again for the next start. */
void prep_workers_stop(prep *p);

/* execute.c */
typedef struct prep_run_input {
    const char *run_id;
    const char *pipeline;
    const json_t *spec;          /* the pipeline's normalized spec */
    const char *spec_digest;
    int64_t prev_last_seq;       /* of the last successful run of this spec; -1 none */
    const qn_trace_ctx *trace;
} prep_run_input;

typedef struct prep_run_result {
    int skipped;                 /* nothing new since the last snapshot */
    int64_t last_seq;            /* the source sequence the snapshot reaches */
    int64_t version;             /* the dataset version registered */
    char manifest_digest[80];
    json_t *report;              /* owned: the cleaning report */
    int64_t rows_in, rows_out;
} prep_run_result;

/* Runs one pipeline. Returns 0 with res filled (res->report owned by the
 * caller) or a negative code with err saying what failed (a client code when
 * the pipeline or its source is at fault, QN_UNAVAILABLE when an upstream is
 * down, QN_CANCELLED when the service is stopping). */
int prep_execute(prep *p, const prep_run_input *in, prep_run_result *res, qn_err *err);

/* csvout.c */
/* Writes f as RFC 4180 CSV (a header, CRLF line ends, fields quoted only when
 * they hold a comma, quote, CR or LF; a missing cell is empty) to out, and
 * its SHA-256 into hex. Numbers are written shortest ("2.55", "12346"),
 * timestamps "YYYY-MM-DD HH:MM:SS", booleans true/false. Returns 0, or
 * QN_INTERNAL on a write error. *bytes receives the size written. */
int prep_csv_write(const qml_frame *f, FILE *out, char hex[QN_SHA256_HEX + 1], uint64_t *bytes,
                   qn_err *err);

/* triggers.c */
int prep_triggers_start(prep *p, qn_err *err);
void prep_triggers_stop(prep *p);
/* The quern.events.ingested handler (exposed for the subscriber). */
int prep_on_ingested(const qn_msg *msg, void *ud, qn_err *err);

#endif
