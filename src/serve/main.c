/*
 * main.c - quern-serve: configuration, start and stop (DESIGN.md section 5).
 *
 * Serves the models named by --models (without it: the production alias of
 * every model in the registry, models.c) over REST (rest.c, on the shared HTTP
 * server of core/service.h) and gRPC (grpc_server.c on --grpc-listen), both
 * answered by one backend (backend.c) over the model manager (models.c).
 * The gRPC port follows REST's auth rules with the same token.
 * On SIGTERM the service turns not ready, drains HTTP, then drains gRPC,
 * stops following the registry, flushes the prediction log and exits 0.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/deps.h"
#include "core/json.h"
#include "core/log.h"
#include "core/service.h"
#include "core/validate.h"
#include "serve/grpc_server.h"
#include "serve/serve.h"

static const qn_cfg_opt opts[] = {
    QN_CFG_COMMON(serve_cfg, "127.0.0.1:7705", "serve"),
    {"grpc-listen", "QUERN_GRPC_LISTEN", QN_CFG_STRING, "127.0.0.1:7706", 0, 0,
     "gRPC address, HOST:PORT (port 0: any free port; \"off\": no gRPC)",
     offsetof(serve_cfg, grpc_listen)},
    {"models", "QUERN_MODELS", QN_CFG_STRING, NULL, 0, 0,
     "Models to serve and the alias each follows: NAME[@ALIAS][,NAME[@ALIAS]...] "
     "(alias default production; unset: every model's production alias)",
     offsetof(serve_cfg, models)},
    {"instance", "QUERN_INSTANCE", QN_CFG_STRING, NULL, 0, 0,
     "This replica's name; its bus group is serve-<instance> (default: an id kept in --data)",
     offsetof(serve_cfg, instance)},
    {"poll-interval", "QUERN_POLL_INTERVAL", QN_CFG_DURATION, "30s", 100, 86400000,
     "How often the aliases are re-read from the registry besides promotion events",
     offsetof(serve_cfg, poll_ms)},
    {"log-sample-rate", "QUERN_LOG_SAMPLE_RATE", QN_CFG_STRING, "0.1", 0, 0,
     "Share of requests whose predictions are logged to the bus (0 to 1)",
     offsetof(serve_cfg, log_sample_rate)},
    {"log-sample-rates", "QUERN_LOG_SAMPLE_RATES", QN_CFG_STRING, NULL, 0, 0,
     "Per-model sample rates, MODEL:RATE[,...] (beat --log-sample-rate)",
     offsetof(serve_cfg, sample_rates)},
    {"log-queue", "QUERN_LOG_QUEUE", QN_CFG_INT, "10000", 16, 10000000,
     "Prediction samples held in memory before new ones are dropped",
     offsetof(serve_cfg, log_queue)},
    {"log-batch", "QUERN_LOG_BATCH", QN_CFG_INT, "100", 1, 1000,
     "Predictions per quern.predictions.logged event", offsetof(serve_cfg, log_batch)},
    {"batching", "QUERN_BATCHING", QN_CFG_STRING, NULL, 0, 0,
     "Dynamic batching for tabular models, MODEL:MAX_BATCH:MAX_DELAY_US[,...] (default off)",
     offsetof(serve_cfg, batching)},
    {"max-rows", "QUERN_MAX_ROWS", QN_CFG_INT, "10000", 1, 1048576,
     "Rows per inference request", offsetof(serve_cfg, max_rows)},
    {"xgb-threads", "QUERN_XGB_THREADS", QN_CFG_INT, "1", 1, 256,
     "OpenMP threads per XGBoost prediction (requests already run in parallel)",
     offsetof(serve_cfg, xgb_threads)},
};

typedef struct serve_main {
    serve s;
    serve_grpc *grpc;
} serve_main;

static int parse_rate(const char *what, const char *text, double *out, qn_err *err)
{
    char *end;
    double r = strtod(text, &end);
    if (end == text || *end || !(r >= 0 && r <= 1))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: rate %s is not a number in [0, 1]",
                          what, text);
    *out = r;
    return 0;
}

static int sample_rates(serve *s, qn_err *err)
{
    double def = 0;
    int rc = parse_rate("--log-sample-rate", s->cfg->log_sample_rate, &def, err);
    if (rc < 0)
        return rc;
    s->default_rate = def;
    for (size_t i = 0; i < s->nmodels; i++)
        s->models[i].sample_rate = def;
    if (!s->cfg->sample_rates || !*s->cfg->sample_rates)
        return 0;
    char *copy = strdup(s->cfg->sample_rates), *save = NULL;
    if (!copy)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    for (char *tok = strtok_r(copy, ",", &save); tok && rc == 0;
         tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        serve_model *m;
        if (!colon) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "--log-sample-rates %s: expected MODEL:RATE",
                            tok);
            break;
        }
        *colon = '\0';
        if (s->follow_all) {
            /* A slot now, so the rate is there when the model is promoted. */
            if ((rc = qn_name_check("model", tok, err)) < 0) {
                qn_err_wrap(err, "--log-sample-rates");
                break;
            }
            if (!(m = serve_model_add(s, tok, "production")))
                rc = qn_err_set(err, QN_INVALID_ARGUMENT, "--log-sample-rates: too many models");
        } else if (!(m = serve_model_find(s, tok))) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                            "--log-sample-rates: model %s is not in --models", tok);
        }
        if (rc == 0)
            rc = parse_rate("--log-sample-rates", colon + 1, &m->sample_rate, err);
    }
    free(copy);
    return rc;
}

static void serve_free(serve_main *sm)
{
    serve *s = &sm->s;
    serve_grpc_shutdown(sm->grpc, 0);
    serve_models_stop(s);
    serve_predlog_stop(s->predlog);
    qn_deps_close(NULL, s->bus, NULL);
    qn_client_free(s->registry);
    free(s->cache_dir);
    free(sm);
}

static int serve_start(qn_service_ctx *ctx, qn_err *err)
{
    serve_cfg *cfg = ctx->cfg;
    serve_main *sm = calloc(1, sizeof *sm);
    if (!sm)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    serve *s = &sm->s;
    s->cfg = cfg;
    s->metrics = ctx->metrics;
    int rc;
    if ((rc = serve_models_parse(s, cfg->models, err)) < 0 || (rc = sample_rates(s, err)) < 0 ||
        (rc = serve_batching_setup(s, cfg->batching, err)) < 0)
        goto fail;
    if (asprintf(&s->cache_dir, "%s/cache", cfg->common.data) < 0) {
        s->cache_dir = NULL;
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }

    static const char *const inf[] = {"model", "version", "protocol", NULL};
    static const char *const info[] = {"model", "version", "alias", NULL};
    static const char *const mdl[] = {"model", NULL};
    static const char *const refl[] = {"model", "reason", NULL};
    s->m_requests = qn_metrics_counter(ctx->metrics, "quern_inference_requests_total",
                                       "Inference requests that reached a model.", inf);
    s->m_latency = qn_metrics_histogram(ctx->metrics, "quern_inference_request_duration_seconds",
                                        "Time to answer an inference request, in seconds.", inf,
                                        NULL, 0);
    s->m_info = qn_metrics_gauge(ctx->metrics, "quern_model_info",
                                 "1 for the version each model serves, with the alias it follows.",
                                 info);
    s->m_swaps = qn_metrics_counter(ctx->metrics, "quern_model_swaps_total",
                                    "Versions swapped in (the first load counts).", mdl);
    s->m_refusals = qn_metrics_counter(ctx->metrics, "quern_model_refusals_total",
                                       "New versions refused (download, load, smoke).", refl);
    for (size_t i = 0; i < s->nmodels; i++) {
        const char *mv[] = {s->models[i].name};
        qn_counter_add(s->m_swaps, mv, 0);
    }

    qn_client_opts co = {.base_url = cfg->common.registry, .timeout_ms = 120000,
                         .connect_timeout_ms = 2000, .token = ctx->token,
                         .user_agent = "quern-serve/" QUERN_VERSION};
    qn_service_client_opts(ctx, "registry", &co);
    if (!(s->registry = qn_client_new(&co, err))) {
        rc = err->code;
        goto fail;
    }
    qn_deps_opts o = {.bus_url = cfg->common.bus, .metrics = ctx->metrics};
    if ((rc = qn_deps_open(&o, NULL, &s->bus, NULL, err)) < 0)
        goto fail;
    if (!(s->predlog = serve_predlog_start(s->bus, ctx->metrics, (size_t)cfg->log_queue,
                                           (size_t)cfg->log_batch, err))) {
        rc = err->code;
        goto fail;
    }
    serve_backend_init(s);
    if ((rc = serve_traffic_start(s, err)) < 0 || (rc = serve_models_start(s, err)) < 0)
        goto fail;
    if (cfg->grpc_listen && strcmp(cfg->grpc_listen, "off") != 0) {
        /* The same token and rules as REST (core/service.c resolved it). */
        serve_grpc_opts go = {.listen = cfg->grpc_listen, .backend = &s->backend,
                              .metrics = ctx->metrics, .token = ctx->token,
                              .auth_reads = cfg->common.auth_reads};
        if (!(sm->grpc = serve_grpc_start(&go, err))) {
            rc = err->code;
            goto fail;
        }
        qn_log_info(NULL, "grpc listening", "{s:s, s:i}", "listen", cfg->grpc_listen, "port",
                    serve_grpc_port(sm->grpc));
    }
    ctx->routes = serve_routes;
    ctx->nroutes = serve_nroutes;
    ctx->ud = sm;
    return 0;
fail:
    serve_free(sm);
    return rc < 0 ? rc : QN_INTERNAL;
}

static void serve_stop(qn_service_ctx *ctx)
{
    serve_main *sm = ctx->ud;
    if (!sm)
        return;
    serve_grpc_shutdown(sm->grpc, qn_now_ms() + ctx->common->drain_ms);
    sm->grpc = NULL;
    serve_free(sm);
    ctx->ud = NULL;
}

static int serve_ready(void *ud, const char **reason)
{
    serve_main *sm = ud;
    if (serve_all_ready(&sm->s))
        return 1;
    *reason = sm->s.follow_all && !atomic_load(&sm->s.synced)
                  ? "the registry's model list has not been read yet"
                  : "not every model has a version loaded yet (GET /v2/health/ready lists them)";
    return 0;
}

static const qn_service_def def = {
    .name = "serve",
    .summary = "quern-serve: models over the Open Inference Protocol (REST and gRPC), "
               "recommendations, hot swaps from the registry.",
    .opts = opts,
    .nopts = QN_NELEM(opts),
    .cfg_size = sizeof(serve_cfg),
    .start = serve_start,
    .stop = serve_stop,
    .ready = serve_ready,
};

int main(int argc, char **argv)
{
    return qn_service_main(&def, argc, argv);
}
