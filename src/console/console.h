/*
 * console.h - quern-console: the web console's modules.
 *
 * main.c reads the configuration and builds the route table; assets.c serves
 * the pages, scripts and styles built into the binary (assets_gen.c, made
 * at build time from src/console/web/ and uPlot by embed.cmake); proxy.c
 * forwards /api/<service>/<path> to the services with the server-side token.
 */
#ifndef QUERN_CONSOLE_H
#define QUERN_CONSOLE_H

#include <stddef.h>

#include "core/client.h"
#include "core/http.h"

/* One file built into the binary (assets_gen.c). */
typedef struct con_asset {
    const char *name;                 /* "app.js": served at /assets/app.js */
    const unsigned char *gz;          /* gzip -9 -n of the file */
    size_t gz_len;
    const unsigned char *raw;         /* the file itself, for clients without gzip */
    size_t raw_len;
    const char *etag;                 /* "\"<16 hex of its SHA-256>\"" */
} con_asset;

extern const con_asset con_assets[];
extern const size_t con_nassets;

/* An upstream the proxy knows: "registry" and its client. */
typedef struct con_upstream {
    const char *name;
    const char *url;
    qn_client *client;
} con_upstream;

#define CON_NUPSTREAMS 7

typedef struct console {
    con_upstream up[CON_NUPSTREAMS];
    size_t max_response;  /* bytes of an upstream answer kept (larger: 502) */
} console;

/* GET / and GET /assets/{file}: the embedded files, gzip when the client
 * accepts it, ETag and 304 on If-None-Match. */
int con_index(qn_req *req, qn_res *res, void *ud);
int con_asset_get(qn_req *req, qn_res *res, void *ud);
/* Finds an embedded file by name; NULL when there is none. */
const con_asset *con_asset_find(const char *name);

/* Every method on /api/{service}/...: see proxy.c. */
int con_proxy(qn_req *req, qn_res *res, void *ud);
/* POST /api/{service}/v1/runs/search: the registry's run search, a read
 * sent as a POST, so it passes without the token (other services: 404). */
int con_proxy_search(qn_req *req, qn_res *res, void *ud);

#endif
