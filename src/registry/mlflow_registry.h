/*
 * mlflow_registry.h - MLflow's model registry REST API
 * (/api/2.0/mlflow/registered-models/..., model-versions/...) and its
 * artifacts proxy (/api/2.0/mlflow-artifacts/artifacts/...) over the
 * registry's own store: an MLflow registered model is a Quern model, an
 * MLflow alias a Quern alias (moved through reg_alias_move, so it is in the
 * alias history and publishes quern.model.promoted), an artifact a blob.
 *
 * Handlers answer errors in MLflow's shape, {"error_code","message"}, with
 * its statuses, through mlflow.h's mlf_error and mlf_fail, shared with the
 * tracking side of the MLflow API (mlflow.c).
 *
 *     if (!name)
 *         return mlf_error(res, QN_INVALID_ARGUMENT, "missing value for required parameter 'name'");
 */
#ifndef QUERN_REGISTRY_MLFLOW_REGISTRY_H
#define QUERN_REGISTRY_MLFLOW_REGISTRY_H

#include <jansson.h>

#include "core/http.h"
#include "core/store/store.h"
#include "registry/mlflow.h"

/* Deepest artifact path the routes match (segments after .../artifacts/). */
#define REG_ARTIFACT_DEPTH 16

/* artifacts.c */
/* 0 when path is a relative artifact path without empty, "." or ".."
 * segments, control characters or backslashes; else QN_INVALID_ARGUMENT. */
int reg_artifact_path_check(const char *path, qn_err *err);
/* Points path at a stored blob (digest "sha256:<hex>") of size bytes, in
 * the caller's write transaction. */
int reg_artifact_index(qn_conn *c, const char *path, const char *digest, int64_t size, qn_err *err);
/* The digest (and size, when not NULL) path points at; QN_NOT_FOUND. */
int reg_artifact_lookup(qn_conn *c, const char *path, char digest[80], int64_t *size, qn_err *err);
int reg_artifact_put_chunk(qn_req *req, qn_res *res, const char *data, size_t len, void *ud);
int reg_artifact_put(qn_req *req, qn_res *res, void *ud);
int reg_artifact_get(qn_req *req, qn_res *res, void *ud);
int reg_artifact_list(qn_req *req, qn_res *res, void *ud);

/* mlflow_registry.c: one handler per MLflow RPC. */
int mlf_rm_create(qn_req *req, qn_res *res, void *ud);
int mlf_rm_get(qn_req *req, qn_res *res, void *ud);
int mlf_rm_update(qn_req *req, qn_res *res, void *ud);
int mlf_rm_rename(qn_req *req, qn_res *res, void *ud);
int mlf_rm_delete(qn_req *req, qn_res *res, void *ud);
int mlf_rm_search(qn_req *req, qn_res *res, void *ud);
int mlf_rm_set_tag(qn_req *req, qn_res *res, void *ud);
int mlf_rm_delete_tag(qn_req *req, qn_res *res, void *ud);
int mlf_rm_latest_versions(qn_req *req, qn_res *res, void *ud);
int mlf_alias_set(qn_req *req, qn_res *res, void *ud);
int mlf_alias_delete(qn_req *req, qn_res *res, void *ud);
int mlf_alias_get(qn_req *req, qn_res *res, void *ud);
int mlf_mv_create(qn_req *req, qn_res *res, void *ud);
int mlf_mv_get(qn_req *req, qn_res *res, void *ud);
int mlf_mv_update(qn_req *req, qn_res *res, void *ud);
int mlf_mv_delete(qn_req *req, qn_res *res, void *ud);
int mlf_mv_search(qn_req *req, qn_res *res, void *ud);
int mlf_mv_set_tag(qn_req *req, qn_res *res, void *ud);
int mlf_mv_delete_tag(qn_req *req, qn_res *res, void *ud);
int mlf_mv_download_uri(qn_req *req, qn_res *res, void *ud);

/* mlflow_model.c: a Quern manifest for an MLflow model directory. */
/* Builds the manifest of the MLflow model whose artifacts are under dir
 * (its MLmodel file and, for the xgboost flavour, the XGBoost JSON model),
 * reading blobs under blob_dir. *out the manifest (caller owns) when the
 * directory holds a model Quern can serve; NULL with 0 when it holds an
 * MLflow model of another flavour (or no MLmodel); QN_INVALID_ARGUMENT
 * naming the file when an xgboost model cannot be served. Read
 * transaction. */
int mlf_model_manifest(qn_conn *c, const char *blob_dir, const char *dir, json_t **out, qn_err *err);

/* ---- MLflow 3 logged models (mlflow_logged.c) ------------------------------------ */

int mlf_lm_create(qn_req *req, qn_res *res, void *ud);
int mlf_lm_get(qn_req *req, qn_res *res, void *ud);
int mlf_lm_finalize(qn_req *req, qn_res *res, void *ud);
int mlf_lm_delete(qn_req *req, qn_res *res, void *ud);
int mlf_lm_search(qn_req *req, qn_res *res, void *ud);
int mlf_lm_set_tags(qn_req *req, qn_res *res, void *ud);
int mlf_lm_delete_tag(qn_req *req, qn_res *res, void *ud);
int mlf_lm_log_params(qn_req *req, qn_res *res, void *ud);
/* The artifact URI a source models:/m-<id>[/PATH] names (the logged model's
 * artifact_uri, then PATH), allocated in a; QN_NOT_FOUND for no such model. */
int mlf_logged_model_dir(qn_conn *c, qn_arena *a, const char *source, const char **uri, qn_err *err);

#endif
