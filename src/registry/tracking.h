/*
 * tracking.h - experiments and runs (MLflow's tracking model) in the
 * registry's store: params, tags, metric series, dataset inputs, model
 * outputs, and search.
 *
 * Like db.h, nothing here knows HTTP: both APIs (runs_api.c for /v1,
 * mlflow.c for /api/2.0/mlflow) parse their requests into these calls, made
 * on a connection inside a transaction from reg_db_begin (read or write as
 * each contract says). Errors: QN_NOT_FOUND naming the missing run or
 * experiment, QN_ALREADY_EXISTS for a name clash, QN_INVALID_ARGUMENT naming
 * the field at fault (a param logged again with another value, a deleted
 * run, a batch over its limits).
 *
 * Runs are stored as MLflow has them: run ids of 32 hex characters, params
 * immutable, metrics append-only rows (key, value, step, timestamp) beside a
 * latest_metrics row per key (the one search and order read), NaN stored as
 * 0 with is_nan set and infinities as +-DBL_MAX (MLflow's SQL store does the
 * same). A run reads back as MLflow's Run message:
 *   {"info":{run_id, run_uuid, run_name, experiment_id, user_id, status,
 *            start_time, end_time, artifact_uri, lifecycle_stage},
 *    "data":{"metrics":[{key,value,timestamp,step}],"params":[{key,value}],
 *            "tags":[{key,value}]},
 *    "inputs":{"dataset_inputs":[{"tags":[...],"dataset":{name,digest,...}}]},
 *    "outputs":{"model_outputs":[{model_id, step}]}}
 *
 *     trk_batch b;
 *     if (trk_batch_parse(metrics, params, tags, qn_now_ms(), &b, &err) < 0) -> 400
 *     qn_conn *c = reg_db_begin(db, QN_TX_WRITE, &err);
 *     int rc = c ? trk_log_batch(c, run_id, &b, &err) : err.code;
 *     rc = reg_db_end(db, c, rc, &err);     // all of the batch or none of it
 *     trk_batch_free(&b);
 */
#ifndef QUERN_REGISTRY_TRACKING_H
#define QUERN_REGISTRY_TRACKING_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/store/store.h"
#include "registry/filter.h"

/* MLflow's limits (mlflow/utils/validation.py, service.proto). */
#define TRK_MAX_BATCH_METRICS 1000
#define TRK_MAX_BATCH_PARAMS 100
#define TRK_MAX_BATCH_TAGS 100
#define TRK_MAX_BATCH_ENTITIES 1000
#define TRK_MAX_KEY 250
#define TRK_MAX_PARAM_VALUE 6000
#define TRK_MAX_TAG_VALUE 8000
#define TRK_MAX_NAME 500
#define TRK_SEARCH_MAX_RESULTS 50000
#define TRK_SEARCH_DEFAULT_RESULTS 1000

/* The tracking schema, applied as one migration after db.c's (see
 * reg_db_migrations). Creates the Default experiment, id 0. */
#define REG_TRACKING_SCHEMA                                                                       \
    "CREATE TABLE experiments ("                                                                  \
    "  id INTEGER PRIMARY KEY,"                                                                   \
    "  name TEXT NOT NULL UNIQUE,"                                                                \
    "  artifact_location TEXT NOT NULL DEFAULT '',"                                               \
    "  lifecycle_stage TEXT NOT NULL DEFAULT 'active',"                                           \
    "  created_at INTEGER NOT NULL,"                                                              \
    "  updated_at INTEGER NOT NULL);"                                                             \
    "INSERT INTO experiments (id, name, artifact_location, created_at, updated_at) "              \
    "  VALUES (0, 'Default', 'mlflow-artifacts:/0', 0, 0);"                                       \
    "CREATE TABLE experiment_tags ("                                                              \
    "  experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,"              \
    "  key TEXT NOT NULL, value TEXT NOT NULL,"                                                   \
    "  PRIMARY KEY (experiment_id, key));"                                                        \
    "CREATE TABLE runs ("                                                                         \
    "  id INTEGER PRIMARY KEY,"                                                                   \
    "  run_uuid TEXT NOT NULL UNIQUE,"                                                            \
    "  experiment_id INTEGER NOT NULL REFERENCES experiments(id),"                                \
    "  name TEXT NOT NULL DEFAULT '',"                                                            \
    "  user_id TEXT NOT NULL DEFAULT '',"                                                         \
    "  status TEXT NOT NULL DEFAULT 'RUNNING',"                                                   \
    "  start_time INTEGER NOT NULL,"                                                              \
    "  end_time INTEGER,"                                                                         \
    "  lifecycle_stage TEXT NOT NULL DEFAULT 'active',"                                           \
    "  artifact_uri TEXT NOT NULL DEFAULT '');"                                                   \
    "CREATE INDEX runs_by_experiment ON runs (experiment_id, start_time);"                        \
    "CREATE TABLE params ("                                                                       \
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"                            \
    "  key TEXT NOT NULL, value TEXT NOT NULL,"                                                   \
    "  PRIMARY KEY (run_id, key));"                                                               \
    "CREATE TABLE run_tags ("                                                                     \
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"                            \
    "  key TEXT NOT NULL, value TEXT NOT NULL,"                                                   \
    "  PRIMARY KEY (run_id, key));"                                                               \
    "CREATE TABLE metrics ("                                                                      \
    "  id INTEGER PRIMARY KEY,"                                                                   \
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"                            \
    "  key TEXT NOT NULL,"                                                                        \
    "  value REAL NOT NULL,"                                                                      \
    "  is_nan INTEGER NOT NULL DEFAULT 0,"                                                        \
    "  step INTEGER NOT NULL DEFAULT 0,"                                                          \
    "  timestamp INTEGER NOT NULL);"                                                              \
    "CREATE INDEX metrics_by_run ON metrics (run_id, key, step);"                                 \
    "CREATE TABLE latest_metrics ("                                                               \
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"                            \
    "  key TEXT NOT NULL,"                                                                        \
    "  value REAL NOT NULL,"                                                                      \
    "  is_nan INTEGER NOT NULL DEFAULT 0,"                                                        \
    "  step INTEGER NOT NULL DEFAULT 0,"                                                          \
    "  timestamp INTEGER NOT NULL,"                                                               \
    "  PRIMARY KEY (run_id, key));"                                                               \
    "CREATE INDEX latest_metrics_by_key ON latest_metrics (key, value);"                          \
    "CREATE TABLE run_inputs ("                                                                   \
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"                            \
    "  name TEXT NOT NULL, digest TEXT NOT NULL,"                                                 \
    "  source_type TEXT NOT NULL DEFAULT '', source TEXT NOT NULL DEFAULT '',"                    \
    "  schema TEXT, profile TEXT,"                                                                \
    "  tags TEXT NOT NULL DEFAULT '[]',"                                                          \
    "  dataset_version INTEGER,"                                                                  \
    "  PRIMARY KEY (run_id, name, digest));"                                                      \
    "CREATE INDEX run_inputs_by_dataset ON run_inputs (name, dataset_version);"                   \
    "CREATE TABLE run_outputs ("                                                                  \
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"                            \
    "  model_id TEXT NOT NULL,"                                                                   \
    "  step INTEGER NOT NULL DEFAULT 0,"                                                          \
    "  model_name TEXT, version INTEGER,"                                                         \
    "  PRIMARY KEY (run_id, model_id));"                                                          \
    "CREATE INDEX run_outputs_by_version ON run_outputs (model_name, version);"

/* ---- experiments ------------------------------------------------------------- */

/* Creates an experiment; artifact_location NULL or "": mlflow-artifacts:/<id>.
 * tags: an array of {key, value} or NULL. *id its id. Write transaction. */
int trk_experiment_create(qn_conn *c, const char *name, const char *artifact_location, const json_t *tags,
                          int64_t now, int64_t *id, qn_err *err);
/* One experiment as MLflow's Experiment message: {experiment_id (a string),
 * name, artifact_location, lifecycle_stage, creation_time,
 * last_update_time, tags:[{key,value}]}. id_text: the id as the client gave
 * it (a non-number is QN_NOT_FOUND too). */
int trk_experiment_get(qn_conn *c, const char *id_text, json_t **out, qn_err *err);
int trk_experiment_by_name(qn_conn *c, const char *name, json_t **out, qn_err *err);
/* Adds to *list (an array) the experiments with id > after matching f
 * (trk_filter_parse_experiments; NULL: all), by id, at most limit; *more
 * when there were more. view: 1 active, 2 deleted, 3 all. pg: the store is
 * PostgreSQL. order: NULL (by id, after: the last id seen) or an ORDER BY
 * list from trk_experiments_order (after: the rows already seen). */
int trk_experiments_list(qn_conn *c, int pg, int view, const trk_filter *f, const char *order, int64_t after,
                         int64_t limit, json_t *list, int *more, qn_err *err);
/* MLflow's search_experiments order_by (n clauses, "name [ASC|DESC]"; fields
 * experiment_id, name, creation_time, last_update_time) as an SQL ORDER BY
 * list into buf, ending with the id as tie-break. */
int trk_experiments_order(const char *const *clauses, size_t n, char *buf, size_t size, qn_err *err);
/* Renames (new_name) an experiment. Write transaction. */
int trk_experiment_rename(qn_conn *c, const char *id_text, const char *new_name, qn_err *err);
/* Marks an experiment and its runs deleted (deleted 1) or active again.
 * Write transaction. */
int trk_experiment_set_stage(qn_conn *c, const char *id_text, int deleted, qn_err *err);
int trk_experiment_set_tag(qn_conn *c, const char *id_text, const char *key, const char *value, qn_err *err);

/* ---- runs -------------------------------------------------------------------- */

typedef struct trk_run_in {
    const char *experiment_id; /* NULL or "": the Default experiment "0" */
    const char *name;          /* NULL or "": tags' mlflow.runName, else a generated name */
    const char *user_id;       /* NULL: "" */
    int64_t start_time;        /* ms; 0: now */
    const json_t *tags;        /* [{key, value}] or NULL */
} trk_run_in;

/* Creates a run (RUNNING) with a new 32-hex id; *out the run. Write tx. */
int trk_run_create(qn_conn *c, const trk_run_in *in, json_t **out, qn_err *err);
/* The run as described above. */
int trk_run_get(qn_conn *c, const char *run_id, json_t **out, qn_err *err);
/* Sets status (NULL: keep; RUNNING, SCHEDULED, FINISHED, FAILED, KILLED),
 * end_time (< 0: keep) and name (NULL: keep); *info the run's info after.
 * Write transaction. */
int trk_run_update(qn_conn *c, const char *run_id, const char *status, int64_t end_time, const char *name,
                   json_t **info, qn_err *err);
/* Marks a run deleted (1) or active (0). Write transaction. */
int trk_run_set_stage(qn_conn *c, const char *run_id, int deleted, qn_err *err);

typedef struct trk_metric {
    const char *key;
    double value;   /* as stored: 0 for NaN, +-DBL_MAX for infinities */
    int is_nan;
    int64_t timestamp, step;
} trk_metric;

typedef struct trk_kv {
    const char *key, *value;
} trk_kv;

/* One batch to log. Strings borrow from the JSON it was parsed from. */
typedef struct trk_batch {
    trk_metric *metrics;
    size_t nmetrics;
    trk_kv *params, *tags;
    size_t nparams, ntags;
} trk_batch;

/* Checks and converts MLflow's LogBatch fields (each an array or NULL):
 * metrics [{key, value, timestamp, step}] (value a number or "NaN",
 * "Infinity", "-Infinity"; timestamp default now, step default 0), params
 * and tags [{key, value}]. The limits (1000 metrics, 100 params, 100 tags,
 * 1000 in all) and key rules are MLflow's; QN_INVALID_ARGUMENT naming the
 * limit or the field at fault. *b freed with trk_batch_free (also after a
 * failure). */
int trk_batch_parse(const json_t *metrics, const json_t *params, const json_t *tags, int64_t now, trk_batch *b,
                    qn_err *err);
void trk_batch_free(trk_batch *b);
/* Parses one metric value: a JSON number, or a string "NaN", "Infinity",
 * "-Infinity" or a number's text. */
int trk_metric_value(const json_t *v, const char *what, double *value, int *is_nan, qn_err *err);

/* Logs a batch into an active run, all in the caller's write transaction:
 * a param already logged with another value is QN_INVALID_ARGUMENT (the
 * same value is accepted), tags are upserted, metrics appended. */
int trk_log_batch(qn_conn *c, const char *run_id, const trk_batch *b, qn_err *err);
/* Deletes a run's tag; QN_NOT_FOUND when the run has no such tag. */
int trk_tag_delete(qn_conn *c, const char *run_id, const char *key, qn_err *err);
/* Appends to *list the history of metric key: [{key, value, timestamp,
 * step}] by step, timestamp, insertion; rows from offset, at most limit;
 * *more when there were more. */
int trk_metric_history(qn_conn *c, const char *run_id, const char *key, int64_t offset, int64_t limit,
                       json_t *list, int *more, qn_err *err);
/* Logs dataset inputs: MLflow's [{tags:[{key,value}], dataset:{name, digest,
 * source_type, source, schema?, profile?}}]. A dataset already logged (same
 * name and digest) is kept. Write transaction. */
int trk_log_inputs(qn_conn *c, const char *run_id, const json_t *datasets, qn_err *err);
/* Logs a Quern dataset version as an input of the run (its digest is the
 * version's manifest digest): lineage from the dataset. Write transaction. */
int trk_log_dataset_version(qn_conn *c, const char *run_id, const char *dataset, int64_t version, qn_err *err);
/* Logs model outputs: MLflow's [{model_id, step}]. Write transaction. */
int trk_log_outputs(qn_conn *c, const char *run_id, const json_t *models, qn_err *err);
/* Records that run_id produced version of model (lineage both ways; the
 * model version's run_id). Write transaction. */
int trk_link_version(qn_conn *c, const char *run_id, const char *model, int64_t version, qn_err *err);

/* ---- search and lineage -------------------------------------------------------- */

typedef struct trk_search {
    const int64_t *experiments; /* ids; none: every experiment */
    size_t nexperiments;
    int view;                   /* 1 active, 2 deleted, 3 all */
    const trk_filter *filter;   /* NULL: all */
    const trk_orders *order;    /* then start_time DESC, newest row first */
    int64_t offset, limit;
} trk_search;

/* Appends to *runs the runs matching s (as trk_run_get shows them); *more
 * when a row past limit exists. pg: the store is PostgreSQL. */
int trk_runs_search(qn_conn *c, int pg, const trk_search *s, json_t *runs, int *more, qn_err *err);
/* The runs that read version of dataset (their info), newest first. */
int trk_runs_of_dataset(qn_conn *c, const char *dataset, int64_t version, json_t **out, qn_err *err);
/* The model versions a run produced: [{"model", "version"}] and MLflow
 * logged-model outputs [{"model_id", "step"}]. */
int trk_versions_of_run(qn_conn *c, const char *run_id, json_t **out, qn_err *err);
/* The run id that produced version of model (NULL when none is linked);
 * malloc'd. */
int trk_run_of_version(qn_conn *c, const char *model, int64_t version, char **run_id, qn_err *err);

#endif
