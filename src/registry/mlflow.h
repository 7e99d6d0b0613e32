/*
 * mlflow.h - MLflow's REST API in quern-registry: its error shape, its way
 * of taking parameters, and the tracking routes (experiments, runs,
 * metrics) over tracking.h.
 *
 * MLflow answers errors as {"error_code": "...", "message": "..."} with its
 * own statuses: RESOURCE_DOES_NOT_EXIST 404, RESOURCE_ALREADY_EXISTS and
 * INVALID_PARAMETER_VALUE 400, TEMPORARILY_UNAVAILABLE 503, INTERNAL_ERROR
 * 500. Its GET endpoints take query parameters (runs/get?run_id=...), its
 * POST endpoints a JSON body; unknown fields are ignored, as MLflow's server
 * ignores them, so newer clients keep working. Every MLflow handler in the
 * registry answers through these helpers:
 *
 *     int mlf_runs_get(qn_req *req, qn_res *res, void *ud)
 *     {
 *         json_t *body;
 *         const char *run_id;
 *         if (mlf_begin(req, res, &body) < 0 || mlf_required(req, res, body, "run_id", &run_id) < 0)
 *             return 0;                              // answered (400)
 *         ... qn_conn *c = reg_db_begin(...); rc = trk_run_get(c, run_id, &run, &err);
 *         return mlf_answer(r->db, req, res, c, rc, &err, json_pack("{s:o}", "run", run));
 *     }
 *
 * Routes are served under /api/2.0/mlflow/ and /ajax-api/2.0/mlflow/ (the
 * MLflow UI's prefix); MLFLOW_ROUTES below lists the tracking ones for
 * main.c's table.
 */
#ifndef QUERN_REGISTRY_MLFLOW_H
#define QUERN_REGISTRY_MLFLOW_H

#include <jansson.h>

#include "core/err.h"
#include "core/http.h"
#include "core/store/store.h"

/* MLflow's error_code for a qn_code, and the HTTP status MLflow uses. */
const char *mlf_error_code(int code);
int mlf_status(int code);
/* Answers {"error_code","message"} for code (a qn_code). Returns 0. */
int mlf_error(qn_res *res, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Answers a failure as reg_fail does (client codes with their message,
 * busy as 503, anything else logged and answered as a bare 500), in
 * MLflow's shape. Returns 0. */
int mlf_fail(qn_req *req, qn_res *res, const qn_err *err);
/* Ends the transaction (reg_db_end) and answers 200 with out (stolen; NULL:
 * {}) when it committed, else mlf_fail (out freed). Returns 0. */
int mlf_answer(qn_store *db, qn_req *req, qn_res *res, qn_conn *c, int rc, qn_err *err, json_t *out);

/* The request's JSON body as an object ({} when empty; a GET has none), owned
 * by the request. A body that is not a JSON object is answered (400) and
 * -1 returned. */
int mlf_begin(qn_req *req, qn_res *res, json_t **body);
/* A string parameter from the body, or for GET from the query string; NULL
 * when absent. A body field that is present but not a string is NULL too
 * (use mlf_required to have that answered). */
const char *mlf_param(qn_req *req, const json_t *body, const char *key);
/* The same, required: absent or empty is answered with MLflow's "Missing
 * value for required parameter" (400) and -1 returned. */
int mlf_required(qn_req *req, qn_res *res, const json_t *body, const char *key, const char **out);

/* ---- tracking handlers (mlflow.c) ------------------------------------------------- */

int mlf_experiments_create(qn_req *req, qn_res *res, void *ud);
int mlf_experiments_get(qn_req *req, qn_res *res, void *ud);
int mlf_experiments_get_by_name(qn_req *req, qn_res *res, void *ud);
int mlf_experiments_search(qn_req *req, qn_res *res, void *ud);
int mlf_experiments_update(qn_req *req, qn_res *res, void *ud);
int mlf_experiments_delete(qn_req *req, qn_res *res, void *ud);
int mlf_experiments_restore(qn_req *req, qn_res *res, void *ud);
int mlf_experiments_set_tag(qn_req *req, qn_res *res, void *ud);
int mlf_runs_create(qn_req *req, qn_res *res, void *ud);
int mlf_runs_get(qn_req *req, qn_res *res, void *ud);
int mlf_runs_update(qn_req *req, qn_res *res, void *ud);
int mlf_runs_delete(qn_req *req, qn_res *res, void *ud);
int mlf_runs_restore(qn_req *req, qn_res *res, void *ud);
int mlf_runs_log_metric(qn_req *req, qn_res *res, void *ud);
int mlf_runs_log_parameter(qn_req *req, qn_res *res, void *ud);
int mlf_runs_log_batch(qn_req *req, qn_res *res, void *ud);
int mlf_runs_set_tag(qn_req *req, qn_res *res, void *ud);
int mlf_runs_delete_tag(qn_req *req, qn_res *res, void *ud);
int mlf_runs_search(qn_req *req, qn_res *res, void *ud);
int mlf_runs_log_inputs(qn_req *req, qn_res *res, void *ud);
int mlf_runs_log_outputs(qn_req *req, qn_res *res, void *ud);
int mlf_metrics_get_history(qn_req *req, qn_res *res, void *ud);

#define MLF_KB 1024
/* One route under both of MLflow's prefixes. */
#define MLF_ROUTE(method, path, fn, max)                              \
    {method, "/api/2.0/mlflow/" path, fn, max, 0, NULL},             \
    {method, "/ajax-api/2.0/mlflow/" path, fn, max, 0, NULL}

/* The tracking routes, for the registry's route table (main.c). GET routes
 * take no body; MLflow's clients send none. */
#define MLFLOW_TRACKING_ROUTES                                                                  \
    MLF_ROUTE("POST", "experiments/create", mlf_experiments_create, 256 * MLF_KB),              \
    MLF_ROUTE("GET", "experiments/get", mlf_experiments_get, 0),                                \
    MLF_ROUTE("GET", "experiments/get-by-name", mlf_experiments_get_by_name, 0),                \
    MLF_ROUTE("POST", "experiments/search", mlf_experiments_search, 64 * MLF_KB),               \
    MLF_ROUTE("GET", "experiments/search", mlf_experiments_search, 0),                          \
    MLF_ROUTE("POST", "experiments/update", mlf_experiments_update, 64 * MLF_KB),               \
    MLF_ROUTE("POST", "experiments/delete", mlf_experiments_delete, 64 * MLF_KB),               \
    MLF_ROUTE("POST", "experiments/restore", mlf_experiments_restore, 64 * MLF_KB),             \
    MLF_ROUTE("POST", "experiments/set-experiment-tag", mlf_experiments_set_tag, 64 * MLF_KB),  \
    MLF_ROUTE("POST", "runs/create", mlf_runs_create, 1024 * MLF_KB),                           \
    MLF_ROUTE("GET", "runs/get", mlf_runs_get, 0),                                              \
    MLF_ROUTE("POST", "runs/update", mlf_runs_update, 64 * MLF_KB),                             \
    MLF_ROUTE("POST", "runs/delete", mlf_runs_delete, 64 * MLF_KB),                             \
    MLF_ROUTE("POST", "runs/restore", mlf_runs_restore, 64 * MLF_KB),                           \
    MLF_ROUTE("POST", "runs/log-metric", mlf_runs_log_metric, 64 * MLF_KB),                     \
    MLF_ROUTE("POST", "runs/log-parameter", mlf_runs_log_parameter, 64 * MLF_KB),               \
    MLF_ROUTE("POST", "runs/log-batch", mlf_runs_log_batch, 4096 * MLF_KB),                     \
    MLF_ROUTE("POST", "runs/set-tag", mlf_runs_set_tag, 64 * MLF_KB),                           \
    MLF_ROUTE("POST", "runs/delete-tag", mlf_runs_delete_tag, 64 * MLF_KB),                     \
    MLF_ROUTE("POST", "runs/search", mlf_runs_search, 256 * MLF_KB),                            \
    MLF_ROUTE("POST", "runs/log-inputs", mlf_runs_log_inputs, 16384 * MLF_KB),                  \
    MLF_ROUTE("POST", "runs/outputs", mlf_runs_log_outputs, 256 * MLF_KB),                      \
    MLF_ROUTE("GET", "metrics/get-history", mlf_metrics_get_history, 0)

#endif
