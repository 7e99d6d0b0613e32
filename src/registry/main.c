/*
 * main.c - quern-registry: configuration, schema, routes, start and stop.
 *
 * The route table below is the registry's whole HTTP API (DESIGN.md
 * section 4); each handler lives in the module named in registry.h.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/deps.h"
#include "core/log.h"
#include "core/outbox.h"
#include "core/service.h"
#include "registry/mlflow.h"
#include "registry/mlflow_registry.h"
#include "registry/registry.h"

typedef struct registry_cfg {
    qn_common_cfg common;
    long long max_blob;
    char *db_url;
    char *token_name;
} registry_cfg;

static const qn_cfg_opt opts[] = {
    QN_CFG_COMMON(registry_cfg, "127.0.0.1:7701", "registry"),
    {"max-blob-size", "QUERN_MAX_BLOB_SIZE", QN_CFG_SIZE, "8G", 1, 1LL << 42,
     "Largest blob accepted by PUT and POST /v1/blobs", offsetof(registry_cfg, max_blob)},
    {"db", "QUERN_REGISTRY_DB", QN_CFG_STRING, NULL, 0, 0,
     "Metadata store URL (default: sqlite://<data>/registry.db)", offsetof(registry_cfg, db_url)},
    {"token-name", "QUERN_TOKEN_NAME", QN_CFG_STRING, "token", 0, 0,
     "Who the alias history names for moves made with the token (without a token: anonymous)",
     offsetof(registry_cfg, token_name)},
};

#define MB (1024ull * 1024ull)

/* MLflow's artifact routes take a path of any depth; the route table
 * matches whole segments, so the templates go to REG_ARTIFACT_DEPTH. */
#define ART "/api/2.0/mlflow-artifacts/artifacts"
#define A1 ART "/{p1}"
#define A2 A1 "/{p2}"
#define A3 A2 "/{p3}"
#define A4 A3 "/{p4}"
#define A5 A4 "/{p5}"
#define A6 A5 "/{p6}"
#define A7 A6 "/{p7}"
#define A8 A7 "/{p8}"
#define A9 A8 "/{p9}"
#define A10 A9 "/{p10}"
#define A11 A10 "/{p11}"
#define A12 A11 "/{p12}"
#define A13 A12 "/{p13}"
#define A14 A13 "/{p14}"
#define A15 A14 "/{p15}"
#define A16 A15 "/{p16}"
#define ART_ROUTES(t)                                                                       \
    {"PUT", t, reg_artifact_put, 0 /* set from config */, QN_ROUTE_STREAM, reg_artifact_put_chunk}, \
    {"GET", t, reg_artifact_get, 0, 0, NULL}
#define MLF "/api/2.0/mlflow"

/* The registry's API. Bodies are bounded per route: JSON documents are small,
 * only blobs are large (and streamed to disk, never held in memory). */
static qn_route routes[] = {
    {"POST", "/v1/models", reg_models_create, 64 * 1024, 0, NULL},
    {"GET", "/v1/models", reg_models_list, 0, 0, NULL},
    {"GET", "/v1/models/{name}", reg_models_get, 0, 0, NULL},
    {"DELETE", "/v1/models/{name}", reg_models_delete, 0, 0, NULL},
    {"POST", "/v1/models/{name}/versions", reg_versions_create, 4 * MB, 0, NULL},
    {"GET", "/v1/models/{name}/versions", reg_versions_list, 0, 0, NULL},
    {"GET", "/v1/models/{name}/versions/{n}", reg_versions_get, 0, 0, NULL},
    {"PATCH", "/v1/models/{name}/versions/{n}", reg_versions_patch, 64 * 1024, 0, NULL},
    {"GET", "/v1/models/{name}/aliases", reg_aliases_list, 0, 0, NULL},
    {"GET", "/v1/models/{name}/aliases/{alias}", reg_aliases_get, 0, 0, NULL},
    {"PUT", "/v1/models/{name}/aliases/{alias}", reg_aliases_put, 4 * 1024, 0, NULL},
    {"DELETE", "/v1/models/{name}/aliases/{alias}", reg_aliases_delete, 0, 0, NULL},
    {"GET", "/v1/models/{name}/aliases/{alias}/history", reg_alias_history, 0, 0, NULL},
    {"POST", "/v1/models/{name}/aliases/{alias}/rollback", reg_alias_rollback, 4 * 1024, 0, NULL},
    {"PUT", "/v1/models/{name}/traffic", reg_traffic_put, 16 * 1024, 0, NULL},
    {"GET", "/v1/models/{name}/traffic", reg_traffic_get, 0, 0, NULL},
    {"DELETE", "/v1/models/{name}/traffic", reg_traffic_delete, 0, 0, NULL},
    {"GET", "/v1/datasets", reg_datasets_list, 0, 0, NULL},
    {"POST", "/v1/datasets/{name}/versions", reg_dataset_versions_create, 4 * MB, 0, NULL},
    {"GET", "/v1/datasets/{name}/versions", reg_dataset_versions_list, 0, 0, NULL},
    {"GET", "/v1/datasets/{name}/versions/{n}", reg_dataset_versions_get, 0, 0, NULL},
    {"PUT", "/v1/blobs/{digest}", reg_blob_put, 0 /* set from config */, QN_ROUTE_STREAM,
     reg_blob_put_chunk},
    {"POST", "/v1/blobs", reg_blob_post, 0 /* set from config */, QN_ROUTE_STREAM, reg_blob_post_chunk},
    {"GET", "/v1/blobs/{digest}", reg_blob_get, 0, 0, NULL},
    {"GET", "/v1/events", reg_events_list, 0, 0, NULL},
    /* MLflow's model registry (model_registry.proto) and artifacts proxy
     * (mlflow_artifacts.proto); mlflow_registry.h. */
    {"POST", MLF "/logged-models", mlf_lm_create, 1 * MB, 0, NULL},
    {"POST", MLF "/logged-models/search", mlf_lm_search, 64 * 1024, 0, NULL},
    {"GET", MLF "/logged-models/{model_id}", mlf_lm_get, 0, 0, NULL},
    {"PATCH", MLF "/logged-models/{model_id}", mlf_lm_finalize, 64 * 1024, 0, NULL},
    {"DELETE", MLF "/logged-models/{model_id}", mlf_lm_delete, 0, 0, NULL},
    {"PATCH", MLF "/logged-models/{model_id}/tags", mlf_lm_set_tags, 1 * MB, 0, NULL},
    {"DELETE", MLF "/logged-models/{model_id}/tags/{tag_key}", mlf_lm_delete_tag, 0, 0, NULL},
    {"POST", MLF "/logged-models/{model_id}/params", mlf_lm_log_params, 1 * MB, 0, NULL},
    {"POST", MLF "/registered-models/create", mlf_rm_create, 1 * MB, 0, NULL},
    {"POST", MLF "/registered-models/rename", mlf_rm_rename, 64 * 1024, 0, NULL},
    {"PATCH", MLF "/registered-models/update", mlf_rm_update, 64 * 1024, 0, NULL},
    {"DELETE", MLF "/registered-models/delete", mlf_rm_delete, 64 * 1024, 0, NULL},
    {"GET", MLF "/registered-models/get", mlf_rm_get, 0, 0, NULL},
    {"GET", MLF "/registered-models/search", mlf_rm_search, 0, 0, NULL},
    {"POST", MLF "/registered-models/get-latest-versions", mlf_rm_latest_versions, 64 * 1024, 0, NULL},
    {"GET", MLF "/registered-models/get-latest-versions", mlf_rm_latest_versions, 0, 0, NULL},
    {"POST", MLF "/registered-models/set-tag", mlf_rm_set_tag, 64 * 1024, 0, NULL},
    {"DELETE", MLF "/registered-models/delete-tag", mlf_rm_delete_tag, 64 * 1024, 0, NULL},
    {"POST", MLF "/registered-models/alias", mlf_alias_set, 64 * 1024, 0, NULL},
    {"DELETE", MLF "/registered-models/alias", mlf_alias_delete, 64 * 1024, 0, NULL},
    {"GET", MLF "/registered-models/alias", mlf_alias_get, 0, 0, NULL},
    {"POST", MLF "/model-versions/create", mlf_mv_create, 1 * MB, 0, NULL},
    {"PATCH", MLF "/model-versions/update", mlf_mv_update, 64 * 1024, 0, NULL},
    {"DELETE", MLF "/model-versions/delete", mlf_mv_delete, 64 * 1024, 0, NULL},
    {"GET", MLF "/model-versions/get", mlf_mv_get, 0, 0, NULL},
    {"GET", MLF "/model-versions/search", mlf_mv_search, 0, 0, NULL},
    {"GET", MLF "/model-versions/get-download-uri", mlf_mv_download_uri, 0, 0, NULL},
    {"POST", MLF "/model-versions/set-tag", mlf_mv_set_tag, 64 * 1024, 0, NULL},
    {"DELETE", MLF "/model-versions/delete-tag", mlf_mv_delete_tag, 64 * 1024, 0, NULL},
    {"GET", ART, reg_artifact_list, 0, 0, NULL},
    ART_ROUTES(A1), ART_ROUTES(A2), ART_ROUTES(A3), ART_ROUTES(A4), ART_ROUTES(A5), ART_ROUTES(A6),
    ART_ROUTES(A7), ART_ROUTES(A8), ART_ROUTES(A9), ART_ROUTES(A10), ART_ROUTES(A11), ART_ROUTES(A12),
    ART_ROUTES(A13), ART_ROUTES(A14), ART_ROUTES(A15), ART_ROUTES(A16),
    /* tracking (runs_api.c) */
    {"POST", "/v1/experiments", reg_experiments_create, 256 * 1024, 0, NULL},
    {"GET", "/v1/experiments", reg_experiments_list, 0, 0, NULL},
    {"GET", "/v1/experiments/{id}", reg_experiments_get, 0, 0, NULL},
    {"POST", "/v1/runs", reg_runs_create, 1 * MB, 0, NULL},
    {"POST", "/v1/runs/search", reg_runs_search, 256 * 1024, 0, NULL},
    {"GET", "/v1/runs/{id}", reg_runs_get, 0, 0, NULL},
    {"PATCH", "/v1/runs/{id}", reg_runs_patch, 64 * 1024, 0, NULL},
    {"POST", "/v1/runs/{id}/log", reg_runs_log, 4 * MB, 0, NULL},
    {"GET", "/v1/runs/{id}/metrics/{key}", reg_runs_metric_history, 0, 0, NULL},
    {"GET", "/v1/runs/{id}/versions", reg_runs_versions, 0, 0, NULL},
    {"GET", "/v1/datasets/{name}/versions/{n}/runs", reg_dataset_version_runs, 0, 0, NULL},
    {"GET", "/v1/models/{name}/aliases/{alias}/lineage", reg_alias_lineage, 0, 0, NULL},
    /* MLflow's tracking API (mlflow.c) */
    MLFLOW_TRACKING_ROUTES,
};

int reg_fail(qn_req *req, qn_res *res, const qn_err *err)
{
    if (qn_code_is_client(err->code))
        return qn_res_error(res, err->code, "%s", err->msg);
    qn_log_error(qn_req_trace_id(req), "storage failure", "{s:s, s:s, s:s}", "route",
                 qn_req_route(req), "code", qn_code_name(err->code), "detail", err->msg);
    if (err->code == QN_UNAVAILABLE)
        return qn_res_error(res, QN_UNAVAILABLE, "the registry is busy; retry shortly");
    return qn_res_error(res, QN_INTERNAL, "internal error");
}

int reg_answer(qn_store *db, qn_req *req, qn_res *res, qn_conn *c, int rc, qn_err *err, int status,
               json_t *out)
{
    if (reg_db_end(db, c, rc, err) < 0) {
        json_decref(out);
        return reg_fail(req, res, err);
    }
    return status == 204 ? qn_res_empty(res, 204) : qn_res_json(res, status, out);
}

int reg_page_begin(qn_req *req, qn_res *res, qn_page *pg, const char *scope, char after[QN_PAGE_KEY_MAX],
                   int64_t *before)
{
    qn_err err;
    if (before)
        *before = 0;
    if (qn_page_begin(pg, scope, qn_req_query(req, "limit"), 50, 1000, qn_req_query(req, "page_token"), after,
                      &err) < 0 ||
        (before && after[0] && qn_uint_parse("page_token", after, REG_MAX_VERSION, before, &err) < 0)) {
        qn_page_free(pg);
        qn_res_error(res, err.code, "%s", err.msg);
        return -1;
    }
    return 0;
}

void reg_page_next(json_t *out, const char *scope, int64_t at)
{
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)at);
    char *t = qn_page_token_encode(scope, key);
    if (t)
        json_object_set_new(out, "next_page_token", json_string(t));
    free(t);
}

int reg_answer_page(qn_store *db, qn_req *req, qn_res *res, qn_conn *c, int rc, qn_err *err, qn_page *pg,
                    const char *field)
{
    if (reg_db_end(db, c, rc, err) < 0) {
        qn_page_free(pg);
        return reg_fail(req, res, err);
    }
    return qn_res_json(res, 200, qn_page_finish(pg, field));
}

static int registry_start(qn_service_ctx *ctx, qn_err *err)
{
    registry_cfg *cfg = ctx->cfg;
    registry *r = calloc(1, sizeof *r);
    if (!r)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    r->max_blob = cfg->max_blob;
    if (ctx->token && *ctx->token && !(r->token_name = strdup(cfg->token_name && *cfg->token_name
                                                                  ? cfg->token_name : "token"))) {
        free(r);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    qn_deps_opts o = {.db_url = cfg->db_url, .data = cfg->common.data, .db_file = "registry.db",
                      .migrations = reg_db_migrations, .nmigrations = reg_db_nmigrations,
                      .bus_url = cfg->common.bus, .source = "quern-registry", .metrics = ctx->metrics};
    if (qn_deps_open(&o, &r->db, &r->bus, &r->outbox, err) < 0) {
        free(r->token_name);
        free(r);
        return err->code;
    }
    if (asprintf(&r->blob_dir, "%s/blobs/sha256", cfg->common.data) < 0 ||
        asprintf(&r->tmp_dir, "%s/blobs/tmp", cfg->common.data) < 0 || reg_blobs_init(r, err) < 0) {
        qn_deps_close(r->db, r->bus, r->outbox);
        free(r->blob_dir);
        free(r->token_name);
        free(r);
        return err->code ? err->code : QN_RESOURCE_EXHAUSTED;
    }

    static const char *const outcome[] = {"outcome", NULL};
    r->blob_uploads = qn_metrics_counter(ctx->metrics, "quern_registry_blob_uploads_total",
                                         "Blob uploads by outcome.", outcome);
    r->blob_bytes = qn_metrics_counter(ctx->metrics, "quern_registry_blob_bytes_total",
                                       "Bytes of blobs stored.", NULL);
    r->versions_created = qn_metrics_counter(ctx->metrics, "quern_registry_versions_created_total",
                                             "Model versions registered.", NULL);
    r->alias_moves = qn_metrics_counter(ctx->metrics, "quern_registry_alias_moves_total",
                                        "Alias moves (promotions).", NULL);
    for (size_t i = 0; i < QN_NELEM(routes); i++)
        if (routes[i].stream == reg_blob_put_chunk || routes[i].stream == reg_blob_post_chunk ||
            routes[i].stream == reg_artifact_put_chunk)
            routes[i].max_body = (uint64_t)cfg->max_blob;
    ctx->routes = routes;
    ctx->nroutes = QN_NELEM(routes);
    ctx->ud = r;
    qn_log_info(NULL, "registry open", "{s:s, s:i}", "data", cfg->common.data, "schema",
                qn_store_version(r->db));
    return 0;
}

static void registry_stop(qn_service_ctx *ctx)
{
    registry *r = ctx->ud;
    if (!r)
        return;
    qn_deps_flush(r->outbox, 5000);
    qn_deps_close(r->db, r->bus, r->outbox);
    free(r->blob_dir);
    free(r->tmp_dir);
    free(r->token_name);
    free(r);
}

static const qn_service_def def = {
    .name = "registry",
    .summary = "quern-registry: models, versions, aliases, datasets and content-addressed blobs.",
    .opts = opts,
    .nopts = QN_NELEM(opts),
    .cfg_size = sizeof(registry_cfg),
    .start = registry_start,
    .stop = registry_stop,
};

int main(int argc, char **argv)
{
    return qn_service_main(&def, argc, argv);
}
