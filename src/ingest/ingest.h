/*
 * ingest.h - state shared by the handlers of quern-ingest.
 *
 * quern-ingest takes raw events in (JSON, NDJSON, CSV), checks them against
 * an optional schema per dataset, and stores them durably with a gapless
 * sequence number per dataset; readers (quern-prep) page through them by
 * sequence. Every stored batch and every feedback record leaves through the
 * outbox as a CloudEvent (quern.events.ingested, quern.feedback.received),
 * committed in the same transaction as the rows.
 *
 * Writes are serialised in-process by one mutex (SQLite has one writer
 * anyway; waiting on a mutex is fairer and cheaper than SQLite's sleeping
 * busy handler), with a deadline: past it the request gets 503 and
 * Retry-After instead of queueing without bound.
 *
 * Modules: main.c (config, schema, routes, start/stop, backpressure),
 * datasets.c (schemas and dataset listings), events.c (POST/GET events, the
 * outbox view), feedback.c, idem.c (Idempotency-Key), sources.c (pull
 * sources: API, store, scheduler; one file per kind: source_*.c).
 */
#ifndef QUERN_INGEST_H
#define QUERN_INGEST_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/bus/bus.h"
#include "core/digest.h"
#include "core/http.h"
#include "core/metrics.h"
#include "core/outbox.h"
#include "core/store/store.h"
#include "ml/records.h"

typedef struct ingest {
    qn_store *db;
    qn_bus *bus;
    qn_outbox *outbox;
    pthread_mutex_t write_mu;     /* one writer at a time (see above) */
    long long write_wait_ms;      /* how long a request waits for it */
    long long max_backlog;        /* outbox events not yet on the bus */
    long long idem_ttl_ms;        /* how long Idempotency-Keys are remembered */
    _Atomic int64_t backlog;      /* last qn_outbox_pending seen */
    _Atomic int64_t backlog_at;   /* when (ms) */
    _Atomic int64_t swept_at;     /* last sweep of expired keys (ms) */
    qn_metric *rows;              /* {dataset, outcome} */
    qn_metric *batches;           /* {outcome} */
    qn_metric *batch_rows;        /* histogram of rows per stored batch */
    qn_metric *feedback;
    qn_metric *backpressure;      /* {reason} */
    struct ing_sources *sources;  /* pull sources (sources.c) */
} ingest;

/* Answers a failure: client codes pass their message through; busy becomes
 * 503 with Retry-After; anything else is logged and answered as a bare 500. */
int ing_fail(qn_req *req, qn_res *res, const qn_err *err);

/* 0 when a write may go ahead; otherwise answers 429 (outbox backlog over the
 * bound) with Retry-After and returns -1. */
int ing_admit(ingest *g, qn_req *req, qn_res *res);

/* Takes the writer mutex within the configured wait; QN_UNAVAILABLE else. */
int ing_write_lock(ingest *g, qn_err *err);
void ing_write_unlock(ingest *g);

/* Which rows of a body to keep: on_error=reject (default) or skip. 0, or
 * answers 400 and returns -1. */
int ing_on_error(qn_req *req, qn_res *res, int *skip);

/* The error list of a batch as JSON ([{"row","line"?,"reason"}]). */
json_t *ing_errors_json(const qml_rec_batch *b);

/* datasets.c */
int ing_schema_put(qn_req *req, qn_res *res, void *ud);
int ing_schema_get(qn_req *req, qn_res *res, void *ud);
int ing_datasets_list(qn_req *req, qn_res *res, void *ud);
int ing_dataset_get(qn_req *req, qn_res *res, void *ud);
/* Reads a dataset's id, schema version and (parsed) schema on c. A dataset
 * that does not exist has id 0, version 0 and no schema. *schema owned by
 * the caller (NULL when none). */
int ing_dataset_lookup(qn_conn *c, const char *name, int64_t *id, int64_t *version,
                       qml_rec_schema **schema, qn_err *err);

/* events.c */
int ing_events_post(qn_req *req, qn_res *res, void *ud);
int ing_events_get(qn_req *req, qn_res *res, void *ud);
/* GET /v1/datasets/{name}/export?after&until&limit: rows after..until as
 * NDJSON (each row's canonical JSON text, one per line, in seq order), or
 * with Accept: QML_COLBLOCK_MEDIA_TYPE as concatenated column blocks. */
int ing_export_get(qn_req *req, qn_res *res, void *ud);
int ing_outbox_list(qn_req *req, qn_res *res, void *ud);
/* A batch's rows as column blocks (ml/colblock.h), built before the writer
 * is taken: at most QML_COLBLOCK_MAX_ROWS rows and about 16 MiB of row text
 * each, concatenated in bytes; block i ends at end[i] and holds rows[i]
 * rows. Owned by the caller: init, build, free (free leaves it as init). */
typedef struct ing_blocks {
    qn_buf bytes;
    size_t n, cap;
    size_t *end;
    uint32_t *rows;
} ing_blocks;
void ing_blocks_init(ing_blocks *k);
/* Appends the blocks of b's good rows to k. 0; QN_INTERNAL when a row is not
 * canonical (a bug of the parser); QN_RESOURCE_EXHAUSTED. */
int ing_blocks_build(const qml_rec_batch *b, ing_blocks *k, qn_err *err);
void ing_blocks_free(ing_blocks *k);

/* Appends b's good rows (as k, ing_blocks_build of b) to dataset name inside
 * c's open write transaction (the caller holds the writer mutex): creates
 * the dataset when needed, gives the rows the next gapless seqs (one
 * event_blocks row per block), bumps last_seq and queues
 * quern.events.ingested (traceparent tp, may be NULL) in the outbox. The
 * rows must have been checked against schema version checked_version:
 * QN_ABORTED when the dataset's version differs now (roll back, check again).
 * *first and *last are the seqs given (*first > *last when b is empty). */
int ing_append(qn_conn *c, const char *name, const qml_rec_batch *b, const ing_blocks *k, int64_t checked_version,
               const char *tp, const char *batch_id, int64_t *first, int64_t *last, qn_err *err);
/* Moves rows of the table events (where ingest kept one canonical text per
 * row before column blocks) into event_blocks: per dataset in seq order, up
 * to QML_COLBLOCK_MAX_ROWS rows a block, each block inserted and its rows
 * deleted in one write transaction, so a process killed midway resumes at
 * the next start. Run at start, before serving. 0 or a storage error. */
int ing_convert_rows(qn_store *db, qn_err *err);

/* sources.c: pull sources (docs/ingest.md "Sources"). start loads the
 * declared sources, marks runs a crash cut short as failed and starts the
 * scheduler; allow is --source-allow, paths --source-paths. stop waits for
 * runs in progress. */
int ing_sources_start(ingest *g, qn_metrics *m, const char *allow, const char *paths, qn_err *err);
void ing_sources_stop(ingest *g);
size_t ing_sources_allow_count(const ingest *g);
int ing_source_put(qn_req *req, qn_res *res, void *ud);
int ing_source_get(qn_req *req, qn_res *res, void *ud);
int ing_source_delete(qn_req *req, qn_res *res, void *ud);
int ing_sources_list(qn_req *req, qn_res *res, void *ud);
int ing_source_run(qn_req *req, qn_res *res, void *ud);
int ing_source_runs(qn_req *req, qn_res *res, void *ud);
typedef struct ing_sources ing_sources;

/* feedback.c */
int ing_feedback_post(qn_req *req, qn_res *res, void *ud);

/* idem.c: Idempotency-Key. A key is remembered per scope ("dataset:NAME",
 * "feedback") with the digest of what it was sent with and the answer given. */
typedef struct ing_idem {
    const char *key;                    /* NULL: no Idempotency-Key */
    char digest[QN_SHA256_HEX + 1];     /* of the request it came with */
    char *scope;                        /* request arena */
} ing_idem;

/* Reads the header and digests the request (scope, content type, on_error,
 * body). 0, or answers 400 (a key over 256 bytes or not printable ASCII)
 * and returns -1. */
int ing_idem_init(qn_req *req, qn_res *res, const char *scope, ing_idem *id);
/* Looks the key up on c. Returns 0 when unknown; 1 when the request was
 * answered (a replay: the stored answer with 200 and Idempotent-Replayed, or
 * 409 for the same key with another body); negative on storage errors. */
int ing_idem_check(qn_conn *c, const ing_idem *id, qn_res *res, qn_err *err);
/* Stores the answer (a JSON text) under the key, in the caller's transaction. */
int ing_idem_store(qn_conn *c, const ing_idem *id, int status, const char *answer, qn_err *err);
/* Forgets keys older than the TTL (at most once a minute; cheap otherwise). */
void ing_idem_sweep(ingest *g);

#endif
