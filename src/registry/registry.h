/*
 * registry.h - state shared by the handlers of quern-registry.
 *
 * The registry owns models, their versions, aliases, datasets and
 * content-addressed blobs (DESIGN.md section 4). Metadata lives in one SQLite
 * database (through core/store), blobs are files named by their SHA-256 under
 * <data>/blobs/sha256/<2 hex>/<64 hex>, and every alias move appends a
 * CloudEvent to the outbox table, which core/outbox drains to the bus.
 *
 * Modules: main.c (config, routes, start/stop), models.c (models, versions,
 * aliases) and datasets.c (their HTTP handlers), aliases.c (alias history,
 * rollback, the one alias move), db.c (the data layer under them: plain
 * functions over a store connection), blobs.c, events.c (the outbox
 * listing), traffic.c and traffic_db.c (a model's traffic policy);
 * MLflow's model registry and artifacts proxy in
 * mlflow_registry.c, mlflow_model.c, mlflow_parse.c and artifacts.c
 * (mlflow_registry.h, docs/mlflow.md); tracking: runs_api.c (/v1
 * experiments, runs, search, lineage) and mlflow.c (MLflow's tracking REST
 * API) over tracking.c, with filter.c (MLflow's search grammar).
 */
#ifndef QUERN_REGISTRY_H
#define QUERN_REGISTRY_H

#include <jansson.h>

#include "core/bus/bus.h"
#include "core/http.h"
#include "core/metrics.h"
#include "core/outbox.h"
#include "core/store/store.h"
#include "registry/db.h"

typedef struct registry {
    qn_store *db;
    qn_bus *bus;
    qn_outbox *outbox;       /* quern.model.promoted leaves through here */
    char *blob_dir;          /* <data>/blobs/sha256 */
    char *tmp_dir;           /* <data>/blobs/tmp: uploads in progress */
    long long max_blob;      /* bytes */
    qn_metric *blob_uploads; /* {outcome} */
    qn_metric *blob_bytes;
    qn_metric *versions_created;
    qn_metric *alias_moves;
    char *token_name;        /* who alias moves are by when a token is set; NULL: "anonymous" */
} registry;

/* Answers a storage failure: client codes pass their message through, busy
 * becomes 503, anything else is logged and answered as a bare 500. */
int reg_fail(qn_req *req, qn_res *res, const qn_err *err);
/* Ends a handler's transaction (reg_db_end) and answers: status (204: no
 * body) with out when it committed; otherwise reg_fail, and out is freed. */
int reg_answer(qn_store *db, qn_req *req, qn_res *res, qn_conn *c, int rc, qn_err *err, int status,
               json_t *out);
/* Opens a listing's page from the query's limit (default 50, at most 1000)
 * and page_token (after: the key it resumes after). With before set, the
 * key is a version number, put in *before (0: from the newest). A bad
 * parameter is answered (400) and -1 returned. */
int reg_page_begin(qn_req *req, qn_res *res, qn_page *pg, const char *scope, char after[QN_PAGE_KEY_MAX],
                   int64_t *before);
/* Sets out's "next_page_token": an opaque token of scope holding at (the
 * offset, or the last id, the next page starts from); nothing when out of
 * memory (the client then sees the last page). */
void reg_page_next(json_t *out, const char *scope, int64_t at);
/* Ends a listing's transaction and answers pg's items under field, or the
 * failure (pg is then freed). */
int reg_answer_page(qn_store *db, qn_req *req, qn_res *res, qn_conn *c, int rc, qn_err *err, qn_page *pg,
                    const char *field);

/* models.c */
int reg_models_create(qn_req *req, qn_res *res, void *ud);
int reg_models_list(qn_req *req, qn_res *res, void *ud);
int reg_models_get(qn_req *req, qn_res *res, void *ud);
int reg_models_delete(qn_req *req, qn_res *res, void *ud);
int reg_versions_create(qn_req *req, qn_res *res, void *ud);
int reg_versions_list(qn_req *req, qn_res *res, void *ud);
int reg_versions_get(qn_req *req, qn_res *res, void *ud);
int reg_versions_patch(qn_req *req, qn_res *res, void *ud);
/* The {name} and {alias} path parameters, checked (answers 400: -1). */
int reg_check_alias(qn_req *req, qn_res *res, const char **name, const char **alias);
int reg_aliases_list(qn_req *req, qn_res *res, void *ud);
int reg_aliases_get(qn_req *req, qn_res *res, void *ud);
int reg_aliases_put(qn_req *req, qn_res *res, void *ud);
int reg_aliases_delete(qn_req *req, qn_res *res, void *ud);

/* aliases.c: alias history and rollback, and the one alias move every API
 * (PUT /v1, rollback, MLflow) goes through. */
#define REG_MAX_REASON 1024
#define REG_MAX_EVIDENCE 8192 /* bytes of an alias move's evidence (canonical JSON) */
/* Who a mutating request is by, for the alias history: the token's name
 * when the registry has a token (core auth let the request in with it),
 * else "anonymous". */
const char *reg_who(const registry *r);
/* Points alias of model name at version in one write transaction with its
 * history row (reason and evidence, canonical JSON, may be NULL) and
 * quern.model.promoted, kicks the
 * outbox, counts and logs the move. *previous the version it pointed at
 * (0: none). On failure returns the negative code with err (the caller
 * answers in its API's shape). */
int reg_alias_move(registry *r, qn_req *req, const char *name, const char *alias, int64_t version,
                   const char *reason, const char *evidence, int64_t *previous, qn_err *err);
int reg_alias_history(qn_req *req, qn_res *res, void *ud);
int reg_alias_rollback(qn_req *req, qn_res *res, void *ud);

/* datasets.c */
int reg_datasets_list(qn_req *req, qn_res *res, void *ud);
int reg_dataset_versions_create(qn_req *req, qn_res *res, void *ud);
int reg_dataset_versions_list(qn_req *req, qn_res *res, void *ud);
int reg_dataset_versions_get(qn_req *req, qn_res *res, void *ud);

/* runs_api.c: /v1 tracking and lineage */
int reg_experiments_create(qn_req *req, qn_res *res, void *ud);
int reg_experiments_list(qn_req *req, qn_res *res, void *ud);
int reg_experiments_get(qn_req *req, qn_res *res, void *ud);
int reg_runs_create(qn_req *req, qn_res *res, void *ud);
int reg_runs_get(qn_req *req, qn_res *res, void *ud);
int reg_runs_patch(qn_req *req, qn_res *res, void *ud);
int reg_runs_log(qn_req *req, qn_res *res, void *ud);
int reg_runs_metric_history(qn_req *req, qn_res *res, void *ud);
int reg_runs_search(qn_req *req, qn_res *res, void *ud);
int reg_runs_versions(qn_req *req, qn_res *res, void *ud);
int reg_dataset_version_runs(qn_req *req, qn_res *res, void *ud);
int reg_alias_lineage(qn_req *req, qn_res *res, void *ud);

/* blobs.c */
int reg_blobs_init(registry *r, qn_err *err);
int reg_blob_put_chunk(qn_req *req, qn_res *res, const char *data, size_t len, void *ud);
int reg_blob_put(qn_req *req, qn_res *res, void *ud);
/* POST /v1/blobs: the digest is the registry's, answered (blobs.c). */
int reg_blob_post_chunk(qn_req *req, qn_res *res, const char *data, size_t len, void *ud);
int reg_blob_post(qn_req *req, qn_res *res, void *ud);
int reg_blob_get(qn_req *req, qn_res *res, void *ud);
/* 1 when the blob with this 64-hex digest is stored, else 0. */
int reg_blob_exists(const registry *r, const char *hex);

/* An upload into the blob store, as /v1/blobs and MLflow's artifacts take
 * theirs: the body streams into a fresh file under tmp_dir while it is
 * hashed, and only a commit moves it into place under its digest. */
typedef struct reg_upload reg_upload;
/* The request's upload, begun on first use: it is the request's state and is
 * freed, its file removed unless committed, when the request ends. NULL
 * when it cannot begin, with *code QN_RESOURCE_EXHAUSTED (out of memory) or
 * QN_UNAVAILABLE (the file cannot be created; logged) for the caller to answer. */
reg_upload *reg_upload_of(qn_req *req, registry *r, int *code);
/* Appends data to u, hashing it. 0, or -1 with errno (write failed). */
int reg_upload_write(reg_upload *u, const char *data, size_t len);
/* The bytes written so far. */
uint64_t reg_upload_bytes(const reg_upload *u);
/* The SHA-256 of what was written (call once, when the body has ended). */
void reg_upload_digest(reg_upload *u, char hex[65]);
/* Moves u's file into the blob store as blob hex (fsync, rename, fsync of
 * the directory) or, when that blob is stored already, removes it: 1 stored,
 * 0 already there. -1 with errno when it cannot be stored (the file is then
 * removed when the request ends). */
int reg_upload_commit(registry *r, reg_upload *u, const char *hex);
/* Removes u's file now (a refused upload: it must never be seen). */
void reg_upload_discard(reg_upload *u);
/* Checks a manifest's "files" (and "profile") digests name stored blobs.
 * QN_INVALID_ARGUMENT for malformed digests, QN_FAILED_PRECONDITION for
 * missing blobs, naming the file. */
int reg_manifest_check_blobs(const registry *r, const json_t *manifest, qn_err *err);

/* traffic.c: a model's traffic policy (checks and storage: traffic_db.c). */
int reg_traffic_put(qn_req *req, qn_res *res, void *ud);
int reg_traffic_get(qn_req *req, qn_res *res, void *ud);
int reg_traffic_delete(qn_req *req, qn_res *res, void *ud);

/* events.c: GET /v1/events, the outbox (db.c appends to it). */
int reg_events_list(qn_req *req, qn_res *res, void *ud);

#endif
