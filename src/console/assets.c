/*
 * assets.c - the console's pages, scripts and styles, served from memory.
 *
 * The files are compiled in (assets_gen.c), each both gzip-compressed and as
 * is: a browser that accepts gzip gets the compressed bytes with
 * Content-Encoding: gzip, anything else the plain file. Each carries an ETag
 * (its content hash) and Cache-Control: no-cache, so a browser revalidates
 * with If-None-Match and gets a bodiless 304 until the binary changes.
 */
#include <string.h>
#include <strings.h>

#include "console/console.h"

static const struct {
    const char *ext;
    const char *type;
} types[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".svg", "image/svg+xml"},
    {".json", "application/json"},
    {".png", "image/png"},
    {".ico", "image/x-icon"},
};

static const char *content_type(const char *name)
{
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return "application/octet-stream";
}

const con_asset *con_asset_find(const char *name)
{
    for (size_t i = 0; i < con_nassets; i++)
        if (strcmp(con_assets[i].name, name) == 0)
            return &con_assets[i];
    return NULL;
}

/* True when Accept-Encoding names gzip without refusing it (q=0). */
static int accepts_gzip(const char *ae)
{
    for (const char *p = ae; p && (p = strcasestr(p, "gzip")) != NULL; p += 4) {
        const char *q = p + 4;
        while (*q == ' ')
            q++;
        if (*q != ';')
            return 1;
        q++;
        while (*q == ' ')
            q++;
        if (strncasecmp(q, "q=0", 3) != 0 || (q[3] == '.' && strspn(q + 4, "0") < strcspn(q + 4, ",")))
            return 1;
    }
    return 0;
}

/* If-None-Match: a list of ETags, or "*". */
static int etag_matches(const char *inm, const char *etag)
{
    if (!inm)
        return 0;
    if (strcmp(inm, "*") == 0)
        return 1;
    return strstr(inm, etag) != NULL;
}

static int send_asset(qn_req *req, qn_res *res, const con_asset *a)
{
    qn_res_header(res, "ETag", a->etag);
    qn_res_header(res, "Cache-Control", "no-cache");
    qn_res_header(res, "Vary", "Accept-Encoding");
    qn_res_header(res, "X-Content-Type-Options", "nosniff");
    if (strcmp(a->name, "index.html") == 0) {
        /* The page talks only to its own origin (DESIGN.md section 11). */
        qn_res_header(res, "Content-Security-Policy",
                      "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                      "frame-ancestors 'none'");
        qn_res_header(res, "Referrer-Policy", "no-referrer");
    }
    if (etag_matches(qn_req_header(req, "If-None-Match"), a->etag))
        return qn_res_empty(res, 304);
    if (accepts_gzip(qn_req_header(req, "Accept-Encoding"))) {
        qn_res_header(res, "Content-Encoding", "gzip");
        return qn_res_text(res, 200, content_type(a->name), (const char *)a->gz, a->gz_len);
    }
    return qn_res_text(res, 200, content_type(a->name), (const char *)a->raw, a->raw_len);
}

int con_index(qn_req *req, qn_res *res, void *ud)
{
    const con_asset *a = con_asset_find("index.html");
    if (!a)
        return qn_res_error(res, QN_INTERNAL, "index.html is not built in");
    return send_asset(req, res, a);
}

int con_asset_get(qn_req *req, qn_res *res, void *ud)
{
    const char *name = qn_req_param(req, "file");
    const con_asset *a = con_asset_find(name);
    if (!a)
        return qn_res_error(res, QN_NOT_FOUND, "no asset named %.100s", name);
    return send_asset(req, res, a);
}
