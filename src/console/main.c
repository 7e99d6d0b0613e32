/*
 * main.c - quern-console: configuration, routes, start and stop.
 *
 * The console serves its pages (assets.c) and proxies /api/<service>/<path>
 * to the seven services (proxy.c) whose URLs come from the same flags and
 * environment `quern up` and the CLI use (QUERN_REGISTRY, QUERN_INGEST, ...).
 * It keeps no state of its own: --data is created but stays empty.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "console/console.h"
#include "core/config.h"
#include "core/log.h"
#include "core/service.h"

typedef struct console_cfg {
    qn_common_cfg common;
    char *ingest, *prep, *train, *serve, *monitor, *alert;
    long long max_body;
    long long max_response;
    long long upstream_timeout_ms;
} console_cfg;

static const qn_cfg_opt opts[] = {
    QN_CFG_COMMON(console_cfg, "127.0.0.1:7709", "console"),
    {"ingest", "QUERN_INGEST", QN_CFG_STRING, "http://127.0.0.1:7702", 0, 0, "Base URL of quern-ingest",
     offsetof(console_cfg, ingest)},
    {"prep", "QUERN_PREP", QN_CFG_STRING, "http://127.0.0.1:7703", 0, 0, "Base URL of quern-prep",
     offsetof(console_cfg, prep)},
    {"train", "QUERN_TRAIN", QN_CFG_STRING, "http://127.0.0.1:7704", 0, 0, "Base URL of quern-train",
     offsetof(console_cfg, train)},
    {"serve", "QUERN_SERVE", QN_CFG_STRING, "http://127.0.0.1:7705", 0, 0, "Base URL of quern-serve (HTTP)",
     offsetof(console_cfg, serve)},
    {"monitor", "QUERN_MONITOR", QN_CFG_STRING, "http://127.0.0.1:7707", 0, 0, "Base URL of quern-monitor",
     offsetof(console_cfg, monitor)},
    {"alert", "QUERN_ALERT", QN_CFG_STRING, "http://127.0.0.1:7708", 0, 0, "Base URL of quern-alert",
     offsetof(console_cfg, alert)},
    {"max-body", "QUERN_CONSOLE_MAX_BODY", QN_CFG_SIZE, "1M", 1, 64LL << 20,
     "Largest request body the proxy forwards (larger: 413)", offsetof(console_cfg, max_body)},
    {"max-response", "QUERN_CONSOLE_MAX_RESPONSE", QN_CFG_SIZE, "32M", 1024, 1LL << 30,
     "Largest upstream answer the proxy hands back (larger: 503)", offsetof(console_cfg, max_response)},
    {"upstream-timeout", "QUERN_CONSOLE_UPSTREAM_TIMEOUT", QN_CFG_DURATION, "15s", 100, 600000,
     "Deadline of one proxied call, retries included", offsetof(console_cfg, upstream_timeout_ms)},
};

/* /api/{service}/{p1}/.../{pN}: one template per depth, since a {param}
 * matches one segment. The proxy reads p1..pN to refuse "." and "..". */
#define DEPTH 14
static const char *const templates[DEPTH] = {
    "/api/{service}/{p1}",
    "/api/{service}/{p1}/{p2}",
    "/api/{service}/{p1}/{p2}/{p3}",
    "/api/{service}/{p1}/{p2}/{p3}/{p4}",
    "/api/{service}/{p1}/{p2}/{p3}/{p4}/{p5}",
    "/api/{service}/{p1}/{p2}/{p3}/{p4}/{p5}/{p6}",
    "/api/{service}/{p1}/{p2}/{p3}/{p4}/{p5}/{p6}/{p7}",
    "/api/{service}/{p1}/{p2}/{p3}/{p4}/{p5}/{p6}/{p7}/{p8}",
    "/api/{service}/{p1}/{p2}/{p3}/{p4}/{p5}/{p6}/{p7}/{p8}/{p9}",
    "/api/{service}/{p1}/{p2}/{p3}/{p4}/{p5}/{p6}/{p7}/{p8}/{p9}/{p10}",
    "/api/{service}/{p1}/{p2}/{p3}/{p4}/{p5}/{p6}/{p7}/{p8}/{p9}/{p10}/{p11}",
    "/api/{service}/{p1}/{p2}/{p3}/{p4}/{p5}/{p6}/{p7}/{p8}/{p9}/{p10}/{p11}/{p12}",
    "/api/{service}/{p1}/{p2}/{p3}/{p4}/{p5}/{p6}/{p7}/{p8}/{p9}/{p10}/{p11}/{p12}/{p13}",
    "/api/{service}/{p1}/{p2}/{p3}/{p4}/{p5}/{p6}/{p7}/{p8}/{p9}/{p10}/{p11}/{p12}/{p13}/{p14}",
};
static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
#define NMETHODS (sizeof methods / sizeof methods[0])

static qn_route routes[3 + DEPTH * NMETHODS];

static void build_routes(uint64_t max_body)
{
    size_t n = 0;
    routes[n++] = (qn_route){"GET", "/", con_index, 0, 0, NULL};
    routes[n++] = (qn_route){"GET", "/assets/{file}", con_asset_get, 0, 0, NULL};
    /* A search by POST is a read (DESIGN.md section 4): open like a GET. */
    routes[n++] = (qn_route){"POST", "/api/{service}/v1/runs/search", con_proxy_search, 64 * 1024,
                             QN_ROUTE_PUBLIC, NULL};
    for (size_t d = 0; d < DEPTH; d++)
        for (size_t m = 0; m < NMETHODS; m++)
            routes[n++] = (qn_route){methods[m], templates[d], con_proxy,
                                     strcmp(methods[m], "GET") == 0 ? 0 : max_body, 0, NULL};
}

static int console_start(qn_service_ctx *ctx, qn_err *err)
{
    console_cfg *cfg = ctx->cfg;
    console *con = calloc(1, sizeof *con);
    if (!con)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    const char *names[CON_NUPSTREAMS] = {"registry", "ingest", "prep", "train", "serve", "monitor", "alert"};
    const char *urls[CON_NUPSTREAMS] = {cfg->common.registry, cfg->ingest, cfg->prep, cfg->train,
                                        cfg->serve, cfg->monitor, cfg->alert};
    con->max_response = (size_t)cfg->max_response;
    for (size_t i = 0; i < CON_NUPSTREAMS; i++) {
        if (!urls[i] || strncmp(urls[i], "http://", 7) != 0) {
            qn_err_set(err, QN_INVALID_ARGUMENT, "--%s: \"%s\" is not an http:// URL", names[i],
                       urls[i] ? urls[i] : "");
            goto fail;
        }
        qn_client_opts o = {.base_url = urls[i], .timeout_ms = (long)cfg->upstream_timeout_ms,
                            .max_retries = 1, .user_agent = "quern-console/" QUERN_VERSION,
                            .max_response = (size_t)cfg->max_response};
        qn_service_client_opts(ctx, names[i], &o);
        con->up[i].name = names[i];
        con->up[i].url = urls[i];
        if (!(con->up[i].client = qn_client_new(&o, err)))
            goto fail;
    }
    build_routes((uint64_t)cfg->max_body);
    ctx->routes = routes;
    ctx->nroutes = QN_NELEM(routes);
    ctx->ud = con;
    qn_log_info(NULL, "console ready", "{s:s, s:i}", "registry", cfg->common.registry, "assets",
                (int)con_nassets);
    return 0;
fail:
    for (size_t i = 0; i < CON_NUPSTREAMS; i++)
        qn_client_free(con->up[i].client);
    free(con);
    return err->code ? err->code : QN_INTERNAL;
}

static void console_stop(qn_service_ctx *ctx)
{
    console *con = ctx->ud;
    if (!con)
        return;
    for (size_t i = 0; i < CON_NUPSTREAMS; i++)
        qn_client_free(con->up[i].client);
    free(con);
}

static const qn_service_def def = {
    .name = "console",
    .summary = "quern-console: the web console (pages, and a same-origin proxy to every service's API).",
    .opts = opts,
    .nopts = QN_NELEM(opts),
    .cfg_size = sizeof(console_cfg),
    .start = console_start,
    .stop = console_stop,
};

int main(int argc, char **argv)
{
    return qn_service_main(&def, argc, argv);
}
