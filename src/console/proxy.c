/*
 * proxy.c - /api/<service>/<path>: the page's one way to the services.
 *
 * The page talks only to its own origin; the console forwards each call to
 * the named service through core's client (deadline, retries for idempotent
 * methods, circuit breaker), attaching the server-side token, and hands back
 * the service's status, Content-Type and body as they came.
 *
 * What it refuses:
 * - a service it does not know, or a path outside /api/<service>/: 404;
 * - a path segment "." or ".." (escaped or not) or a control character: 400,
 *   so a path can never climb out of the service's API;
 * - a mutating method (anything but GET and HEAD) without the console's
 *   token: core's server already answers 401 before this handler runs (the
 *   same constant-time check as every service), and a mutating request from
 *   another origin (an Origin header naming another host): 403;
 * - a body over --max-body: core answers 413 before the handler runs.
 * The upstream is always the configured base URL followed by the path, so
 * nothing a client sends picks the host (no open proxying).
 *
 * One POST is a read: the registry's run search (POST /v1/runs/search, a
 * filter in the body); it passes without the token, like a GET.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "console/console.h"
#include "core/buf.h"
#include "core/log.h"

static const con_upstream *find_upstream(const console *con, const char *name)
{
    for (size_t i = 0; i < CON_NUPSTREAMS; i++)
        if (strcmp(con->up[i].name, name) == 0)
            return &con->up[i];
    return NULL;
}

static int is_read(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
}

/* A mutating request must come from the console's own page: when the
 * browser names an Origin, its host must be the Host the request came to. */
static int same_origin(qn_req *req)
{
    const char *origin = qn_req_header(req, "Origin");
    const char *host = qn_req_header(req, "Host");
    if (!origin)
        return 1;
    const char *h = strstr(origin, "://");
    return h && host && strcasecmp(h + 3, host) == 0;
}

static int forward(qn_req *req, qn_res *res, console *con, int read_only);

int con_proxy(qn_req *req, qn_res *res, void *ud)
{
    return forward(req, res, ud, 0);
}

int con_proxy_search(qn_req *req, qn_res *res, void *ud)
{
    if (strcmp(qn_req_param(req, "service"), "registry") != 0)
        return qn_res_error(res, QN_NOT_FOUND, "runs are searched on the registry: /api/registry/v1/runs/search");
    return forward(req, res, ud, 1);
}

static int forward(qn_req *req, qn_res *res, console *con, int read_only)
{
    const char *svc = qn_req_param(req, "service");
    const char *method = qn_req_method(req);
    const con_upstream *up = find_upstream(con, svc);
    if (!up)
        return qn_res_error(res, QN_NOT_FOUND,
                            "no service named \"%.64s\" behind /api/; use registry, ingest, prep, "
                            "train, serve, monitor or alert",
                            svc);
    /* The decoded segments after the service: none may climb. */
    for (int i = 1; i <= 16; i++) {
        char pname[8];
        snprintf(pname, sizeof pname, "p%d", i);
        const char *seg = qn_req_param(req, pname);
        if (!seg)
            break;
        if (strcmp(seg, ".") == 0 || strcmp(seg, "..") == 0)
            return qn_res_error(res, QN_INVALID_ARGUMENT,
                                "the path segment \"%s\" is not allowed behind /api/%s/", seg, svc);
        for (const unsigned char *p = (const unsigned char *)seg; *p; p++)
            if (*p < 0x20 || *p == 0x7f || *p == '\\')
                return qn_res_error(res, QN_INVALID_ARGUMENT,
                                    "a path segment behind /api/%s/ holds a control character or a "
                                    "backslash", svc);
    }
    if (!read_only && !is_read(method) && !same_origin(req))
        return qn_res_error(res, QN_PERMISSION_DENIED,
                            "a %s through the console must come from the console's own page (Origin "
                            "does not match Host)", method);

    /* "/api/<raw service>/<rest>": the rest as it came, escapes kept. */
    const char *raw = qn_req_path(req);
    const char *rest = strchr(raw + 5, '/');
    const char *query = qn_req_query_string(req);
    if (!rest || strncmp(raw, "/api/", 5) != 0)
        return qn_res_error(res, QN_NOT_FOUND, "no route for %s %.200s", method, raw);
    qn_arena *a = qn_req_arena(req);
    size_t rlen = strlen(rest), qlen = strlen(query);
    char *path = qn_arena_alloc(a, rlen + qlen + 2);
    if (!path)
        return qn_res_error(res, QN_RESOURCE_EXHAUSTED, "out of memory");
    memcpy(path, rest, rlen);
    path[rlen] = '\0';
    if (qlen) {
        path[rlen] = '?';
        memcpy(path + rlen + 1, query, qlen + 1);
    }

    size_t blen = 0;
    const char *body = is_read(method) ? NULL : qn_req_body(req, &blen);
    const char *ctype_in = qn_req_header(req, "Content-Type");
    qn_buf out;
    qn_buf_init(&out, con->max_response);
    char ctype[128] = "";
    qn_err err;
    qn_err_clear(&err);
    int status = qn_client_forward(up->client, method, path, blen ? (ctype_in ? ctype_in : "application/json") : NULL,
                                   blen ? body : NULL, blen, qn_req_trace(req), &out, ctype,
                                   sizeof ctype, &err);
    int rc;
    if (status >= 100) {
        if (status == 204 || status == 304 || out.len == 0)
            rc = qn_res_empty(res, status);
        else
            rc = qn_res_text(res, status, ctype[0] ? ctype : "application/octet-stream",
                             out.data, out.len);
    } else if (status == QN_RESOURCE_EXHAUSTED) {
        rc = qn_res_error(res, QN_UNAVAILABLE, "quern-%s answered more than %zu bytes; ask for a smaller page",
                          up->name, con->max_response);
    } else {
        qn_log_warn(qn_req_trace_id(req), "upstream failed", "{s:s, s:s, s:s}", "upstream", up->name,
                    "code", qn_code_name(status), "detail", err.msg);
        rc = qn_res_error(res, status == QN_DEADLINE_EXCEEDED ? QN_DEADLINE_EXCEEDED : QN_UNAVAILABLE,
                          "quern-%s did not answer (%s)", up->name,
                          status == QN_DEADLINE_EXCEEDED ? "deadline exceeded" : "unreachable or failing");
    }
    qn_buf_free(&out);
    return rc;
}
