/*
 * test_http.c - the HTTP server in-process, spoken to over a real socket with
 * libcurl: routing, parameters, limits, JSON errors, auth, keep-alive,
 * streaming uploads, files, the built-in routes, metrics and draining.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/http.h"
#include "core/http_route.h"
#include "core/log.h"
#include "core/metrics.h"

/* ---- the service under test -------------------------------------------- */

static atomic_int item_calls;

static int h_get_item(qn_req *req, qn_res *res, void *ud)
{
    atomic_fetch_add(&item_calls, 1);
    const char *x = qn_req_query(req, "x");
    return qn_res_json(res, 200, json_pack("{s:s, s:s, s:s?, s:s}", "name",
                                           qn_req_param(req, "name"), "route", qn_req_route(req),
                                           "x", x, "method", qn_req_method(req)));
}

static int h_get_part(qn_req *req, qn_res *res, void *ud)
{
    return qn_res_json(res, 200, json_pack("{s:s, s:s}", "name", qn_req_param(req, "name"), "n",
                                           qn_req_param(req, "n")));
}

static int h_post_item(qn_req *req, qn_res *res, void *ud)
{
    json_t *b = qn_req_json(req, res);
    if (!b)
        return 0;
    return qn_res_json(res, 201, json_pack("{s:O}", "got", b));
}

static int h_delete_item(qn_req *req, qn_res *res, void *ud)
{
    return qn_res_empty(res, 204);
}

typedef struct upload {
    uint64_t bytes, chunks, sum;
} upload;

static int s_blob(qn_req *req, qn_res *res, const char *data, size_t len, void *ud)
{
    upload *u = qn_req_state(req);
    if (!u) {
        u = calloc(1, sizeof *u);
        qn_req_set_state(req, u, free);
    }
    if (len > 0 && data[0] == '!')
        return qn_res_error(res, QN_INVALID_ARGUMENT, "chunk starts with !"), 1;
    u->bytes += len;
    u->chunks++;
    for (size_t i = 0; i < len; i++)
        u->sum = u->sum * 31 + (unsigned char)data[i];
    return 0;
}

static int h_blob(qn_req *req, qn_res *res, void *ud)
{
    upload *u = qn_req_state(req);
    upload zero = {0};
    if (!u)
        u = &zero;
    return qn_res_json(res, 200, json_pack("{s:I, s:I, s:I, s:s}", "bytes", (json_int_t)u->bytes,
                                           "chunks", (json_int_t)u->chunks, "sum",
                                           (json_int_t)(u->sum & 0x7fffffffffffLL), "digest",
                                           qn_req_param(req, "digest")));
}

static char file_path[512];

static int h_file(qn_req *req, qn_res *res, void *ud)
{
    int fd = open(file_path, O_RDONLY);
    if (fd < 0)
        return qn_res_error(res, QN_INTERNAL, "cannot open %s", file_path);
    return qn_res_file(res, 200, "application/octet-stream", fd, 5, 10);
}

static int h_slow(qn_req *req, qn_res *res, void *ud)
{
    const char *ms = qn_req_query(req, "ms");
    usleep((useconds_t)(ms ? atoi(ms) : 400) * 1000);
    return qn_res_json(res, 200, json_pack("{s:b}", "slow", 1));
}

static int h_fail(qn_req *req, qn_res *res, void *ud)
{
    return -1;
}

static int h_internal(qn_req *req, qn_res *res, void *ud)
{
    return qn_res_error(res, QN_INTERNAL, "secret detail /var/lib/x");
}

static int h_oip(qn_req *req, qn_res *res, void *ud)
{
    return qn_res_error(res, QN_NOT_FOUND, "model %s not found", qn_req_param(req, "m"));
}

/* Quotes a header in its error, as handlers quote their input. */
static int h_thing(qn_req *req, qn_res *res, void *ud)
{
    const char *t = qn_req_header(req, "X-Thing");
    return qn_res_error(res, QN_NOT_FOUND, "thing %s does not exist", t ? t : "");
}

static int h_null_json(qn_req *req, qn_res *res, void *ud)
{
    return qn_res_json(res, 200, NULL);
}

static int h_trace(qn_req *req, qn_res *res, void *ud)
{
    return qn_res_text(res, 200, "text/plain", qn_req_trace_id(req), QN_TRACE_ID_HEX);
}

static const qn_route routes[] = {
    {"GET", "/v1/items/{name}", h_get_item, 0, 0, NULL},
    {"DELETE", "/v1/items/{name}", h_delete_item, 0, 0, NULL},
    {"GET", "/v1/items/{name}/parts/{n}", h_get_part, 0, 0, NULL},
    {"POST", "/v1/items", h_post_item, 1024, 0, NULL},
    {"PUT", "/v1/blobs/{digest}", h_blob, 64 << 20, QN_ROUTE_STREAM, s_blob},
    {"PUT", "/v1/small/{digest}", h_blob, 1000, QN_ROUTE_STREAM, s_blob},
    {"GET", "/v1/file", h_file, 0, 0, NULL},
    {"GET", "/v1/slow", h_slow, 0, 0, NULL},
    {"GET", "/v1/fail", h_fail, 0, 0, NULL},
    {"GET", "/v1/internal", h_internal, 0, 0, NULL},
    {"GET", "/v1/trace", h_trace, 0, 0, NULL},
    {"GET", "/v1/thing", h_thing, 0, 0, NULL},
    {"GET", "/v1/nulljson", h_null_json, 0, 0, NULL},
    {"GET", "/v2/models/{m}", h_oip, 0, QN_ROUTE_OIP, NULL},
    {"POST", "/v2/models/{m}/infer", h_post_item, 16, QN_ROUTE_OIP, NULL},
};

typedef struct fixture {
    qn_http *h;
    qn_metrics *m;
    int port;
} fixture;

/* lim: connection limits (max, per client, header timeout ms), or NULL. */
static fixture *start_lim(const char *token, int auth_reads, const long long *lim)
{
    fixture *f = calloc(1, sizeof *f);
    qn_err err;
    f->m = qn_metrics_new();
    qn_http_opts o = {
        .service = "test", .listen = "127.0.0.1:0", .threads = 4, .routes = routes,
        .nroutes = QN_NELEM(routes), .metrics = f->m, .token = token, .auth_reads = auth_reads,
        .max_json_depth = 4,
    };
    if (lim) {
        o.max_connections = (unsigned)lim[0];
        o.max_connections_per_client = (unsigned)lim[1];
        o.header_timeout_ms = lim[2];
    }
    f->h = qn_http_start(&o, &err);
    if (!f->h)
        fail_msg("qn_http_start: %s", err.msg);
    f->port = qn_http_port(f->h);
    assert_true(f->port > 0);
    return f;
}

static fixture *start(const char *token, int auth_reads)
{
    return start_lim(token, auth_reads, NULL);
}

static void stop(fixture *f)
{
    qn_http_stop(f->h);
    qn_metrics_free(f->m);
    free(f);
}

static int setup_open(void **state)
{
    *state = start(NULL, 0);
    return 0;
}

static int teardown(void **state)
{
    stop(*state);
    return 0;
}

/* ---- a small client ---------------------------------------------------- */

typedef struct reply {
    long status;
    qn_buf body;
    qn_buf headers;
    json_t *json;
    long connects;
} reply;

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    qn_buf_append(ud, p, sz * n);
    return sz * n;
}

typedef struct src {
    const char *data;
    size_t len, off, piece;
} src;

static size_t on_read(char *p, size_t sz, size_t n, void *ud)
{
    src *s = ud;
    size_t want = sz * n;
    if (s->piece && want > s->piece)
        want = s->piece;
    if (want > s->len - s->off)
        want = s->len - s->off;
    memcpy(p, s->data + s->off, want);
    s->off += want;
    return want;
}

/* body NULL: no body. chunked: send with Transfer-Encoding: chunked. */
static void call_on(CURL *c, fixture *f, const char *method, const char *path, const char *body,
                    size_t len, int chunked, const char *hdr1, reply *r)
{
    char url[1024];
    struct curl_slist *hs = NULL;
    src s = {body, len, 0, 65536};

    memset(r, 0, sizeof *r);
    qn_buf_init(&r->body, 1 << 26);
    qn_buf_init(&r->headers, 1 << 20);
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", f->port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
    curl_easy_setopt(c, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (body) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, &s);
        if (chunked)
            hs = curl_slist_append(hs, "Transfer-Encoding: chunked");
        else
            curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }
    if (hdr1)
        hs = curl_slist_append(hs, hdr1);
    if (!hdr1 || strncmp(hdr1, "Expect", 6) != 0)
        hs = curl_slist_append(hs, "Expect:");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r->headers);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(hs);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 0L);
    if (rc != CURLE_OK)
        fail_msg("%s %s: %s", method, path, curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &r->connects);
    if (r->body.len)
        r->json = json_loadb(r->body.data, r->body.len, 0, NULL);
}

static void call(fixture *f, const char *method, const char *path, const char *body,
                 size_t len, int chunked, const char *hdr1, reply *r)
{
    CURL *c = curl_easy_init();
    call_on(c, f, method, path, body, len, chunked, hdr1, r);
    curl_easy_cleanup(c);
}

static void reply_free(reply *r)
{
    qn_buf_free(&r->body);
    qn_buf_free(&r->headers);
    json_decref(r->json);
}

static const char *jstr(json_t *j, const char *path1, const char *path2)
{
    json_t *v = json_object_get(j, path1);
    if (path2)
        v = json_object_get(v, path2);
    return json_string_value(v);
}

static int has_header(const reply *r, const char *line)
{
    return r->headers.len && strcasestr(r->headers.data, line) != NULL;
}

/* ---- tests ----------------------------------------------------------------- */

static void test_route_match_unit(void **state)
{
    char buf[128];
    const char *segs[QN__MAX_SEGMENTS];
    size_t n, np;
    qn__param ps[QN__MAX_PARAMS];

    assert_int_equal(qn__path_split("/v1/models/a%20b%2Fc/versions/3?x=1", buf, sizeof buf, segs,
                                    QN__MAX_SEGMENTS, &n), 0);
    assert_int_equal(n, 5);
    assert_string_equal(segs[2], "a b/c");
    assert_true(qn__template_match("/v1/models/{name}/versions/{n}", segs, n, ps, QN__MAX_PARAMS,
                                   &np));
    assert_int_equal(np, 2);
    assert_int_equal(ps[0].name_len, 4);
    assert_memory_equal(ps[0].name, "name", 4);
    assert_string_equal(ps[1].value, "3");
    assert_false(qn__template_match("/v1/models/{name}", segs, n, ps, QN__MAX_PARAMS, &np));
    assert_int_equal(qn__path_split("/a/%zz", buf, sizeof buf, segs, QN__MAX_SEGMENTS, &n),
                     QN_INVALID_ARGUMENT);
    assert_int_equal(qn__path_split("/a/%4", buf, sizeof buf, segs, QN__MAX_SEGMENTS, &n),
                     QN_INVALID_ARGUMENT);
    assert_int_equal(qn__path_split("/a/%00", buf, sizeof buf, segs, QN__MAX_SEGMENTS, &n),
                     QN_INVALID_ARGUMENT);
    assert_int_equal(qn__path_split("a", buf, sizeof buf, segs, QN__MAX_SEGMENTS, &n),
                     QN_INVALID_ARGUMENT);
    /* Trailing slash and empty segments never match a {param}. */
    assert_int_equal(qn__path_split("/v1/models/", buf, sizeof buf, segs, QN__MAX_SEGMENTS, &n), 0);
    assert_false(qn__template_match("/v1/models/{name}", segs, n, ps, QN__MAX_PARAMS, &np));
    assert_false(qn__template_match("/v1/models", segs, n, ps, QN__MAX_PARAMS, &np));
    assert_int_equal(qn__path_split("/", buf, sizeof buf, segs, QN__MAX_SEGMENTS, &n), 0);
    assert_true(qn__template_match("/", segs, n, ps, QN__MAX_PARAMS, &np));
    assert_true(qn__template_valid("/v1/{a}/b/{c_d}"));
    assert_false(qn__template_valid("/v1/x{a}"));
    assert_false(qn__template_valid("/v1/{}"));
    assert_false(qn__template_valid("v1"));
}

static void test_routing_params_and_query(void **state)
{
    fixture *f = *state;
    reply r;
    call(f, "GET", "/v1/items/a%20b%2Fc?x=hello%20there", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(r.json);
    assert_string_equal(jstr(r.json, "name", NULL), "a b/c");
    assert_string_equal(jstr(r.json, "x", NULL), "hello there");
    assert_string_equal(jstr(r.json, "route", NULL), "/v1/items/{name}");
    assert_true(has_header(&r, "Content-Type: application/json"));
    assert_true(has_header(&r, "X-Request-Id: "));
    reply_free(&r);

    call(f, "GET", "/v1/items/it/parts/7", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "name", NULL), "it");
    assert_string_equal(jstr(r.json, "n", NULL), "7");
    reply_free(&r);

    call(f, "DELETE", "/v1/items/it", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.body.len, 0);
    reply_free(&r);

    call(f, "GET", "/v1/items/%zz", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(jstr(r.json, "error", "code"), "invalid_argument");
    reply_free(&r);
}

static void test_404_405(void **state)
{
    fixture *f = *state;
    reply r;
    call(f, "GET", "/nope/x", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(jstr(r.json, "error", "code"), "not_found");
    assert_non_null(strstr(jstr(r.json, "error", "message"), "/nope/x"));
    reply_free(&r);

    call(f, "GET", "/v1/items/", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 404);
    reply_free(&r);

    call(f, "PATCH", "/v1/items/x", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 405);
    assert_true(has_header(&r, "Allow: GET, HEAD, DELETE"));
    reply_free(&r);

    /* A body sent to an unknown path is refused before it is read. */
    call(f, "POST", "/v1/items/x", "{\"a\":1}", 7, 0, NULL, &r);
    assert_int_equal(r.status, 405);
    reply_free(&r);
}

static void test_head(void **state)
{
    fixture *f = *state;
    reply g, h;
    call(f, "GET", "/v1/items/abc/parts/1", NULL, 0, 0, NULL, &g);
    call(f, "HEAD", "/v1/items/abc/parts/1", NULL, 0, 0, NULL, &h);
    assert_int_equal(h.status, 200);
    assert_int_equal(h.body.len, 0);
    char cl[64];
    snprintf(cl, sizeof cl, "Content-Length: %zu", g.body.len);
    assert_true(has_header(&h, cl));
    reply_free(&g);
    reply_free(&h);
}

static void test_json_body(void **state)
{
    fixture *f = *state;
    reply r;
    const char *ok = "{\"a\":{\"b\":{\"c\":[1]}}}"; /* depth 4: at the bound */
    call(f, "POST", "/v1/items", ok, strlen(ok), 0, NULL, &r);
    assert_int_equal(r.status, 201);
    assert_int_equal(json_integer_value(json_array_get(
                         json_object_get(json_object_get(json_object_get(
                                             json_object_get(r.json, "got"), "a"), "b"), "c"), 0)),
                     1);
    reply_free(&r);

    const char *deep = "{\"a\":{\"b\":{\"c\":[[1]]}}}"; /* depth 5 */
    call(f, "POST", "/v1/items", deep, strlen(deep), 0, NULL, &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(jstr(r.json, "error", "message"), "deeper than 4"));
    reply_free(&r);

    const char *bad = "{\"a\": 1,\n  \"b\": }";
    call(f, "POST", "/v1/items", bad, strlen(bad), 0, NULL, &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(jstr(r.json, "error", "code"), "invalid_argument");
    assert_non_null(strstr(jstr(r.json, "error", "message"), "line 2"));
    json_t *d = json_object_get(json_object_get(r.json, "error"), "details");
    assert_int_equal(json_integer_value(json_object_get(d, "line")), 2);
    assert_true(json_integer_value(json_object_get(d, "column")) >= 7);
    reply_free(&r);

    const char *dup = "{\"a\":1,\"a\":2}";
    call(f, "POST", "/v1/items", dup, strlen(dup), 0, NULL, &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(jstr(r.json, "error", "message"), "duplicate"));
    reply_free(&r);

    call(f, "POST", "/v1/items", "[1]", 3, 0, NULL, &r);
    assert_int_equal(r.status, 400);
    reply_free(&r);

    /* Chunked bodies are collected the same way. */
    call(f, "POST", "/v1/items", ok, strlen(ok), 1, NULL, &r);
    assert_int_equal(r.status, 201);
    reply_free(&r);
}

static void test_body_limit(void **state)
{
    fixture *f = *state;
    reply r;
    char *big = malloc(5000);
    memset(big, ' ', 5000);
    big[0] = '{';
    big[4999] = '}';

    call(f, "POST", "/v1/items", big, 2000, 0, NULL, &r);
    assert_int_equal(r.status, 413);
    assert_string_equal(jstr(r.json, "error", "message"),
                        "request body is 2000 bytes; this route accepts at most 1024");
    assert_string_equal(jstr(r.json, "error", "code"), "resource_exhausted");
    reply_free(&r);

    /* Chunked: no length up front, refused while receiving. */
    call(f, "POST", "/v1/items", big, 5000, 1, NULL, &r);
    assert_int_equal(r.status, 413);
    assert_non_null(strstr(jstr(r.json, "error", "message"), "at most 1024"));
    reply_free(&r);

    /* A client that waits for 100-continue gets the 413 instead. */
    char *huge = calloc(1, 3u << 20);
    call(f, "POST", "/v1/items", huge, 3u << 20, 0, "Expect: 100-continue", &r);
    assert_int_equal(r.status, 413);
    assert_non_null(strstr(jstr(r.json, "error", "message"), "3145728 bytes"));
    reply_free(&r);
    free(huge);

    /* Routes without a body refuse one. */
    call(f, "DELETE", "/v1/items/x", big, 10, 0, NULL, &r);
    assert_int_equal(r.status, 413);
    reply_free(&r);

    /* Stream route with a small limit, chunked. */
    call(f, "PUT", "/v1/small/d", big + 1, 4000, 1, NULL, &r);
    assert_int_equal(r.status, 413);
    reply_free(&r);

    /* OIP routes answer in their own shape. */
    call(f, "POST", "/v2/models/m/infer", big, 100, 0, NULL, &r);
    assert_int_equal(r.status, 413);
    assert_true(json_is_string(json_object_get(r.json, "error")));
    reply_free(&r);
    free(big);
}

static void test_stream_upload(void **state)
{
    fixture *f = *state;
    size_t n = 6u << 20;
    char *data = malloc(n);
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        data[i] = (char)('a' + (i * 7 + i / 13) % 26);
        sum = sum * 31 + (unsigned char)data[i];
    }
    for (int chunked = 0; chunked < 2; chunked++) {
        reply r;
        call(f, "PUT", "/v1/blobs/sha256:abc", data, n, chunked, NULL, &r);
        assert_int_equal(r.status, 200);
        assert_int_equal(json_integer_value(json_object_get(r.json, "bytes")), (json_int_t)n);
        assert_true(json_integer_value(json_object_get(r.json, "chunks")) > 10);
        assert_int_equal(json_integer_value(json_object_get(r.json, "sum")),
                         (json_int_t)(sum & 0x7fffffffffffLL));
        assert_string_equal(jstr(r.json, "digest", NULL), "sha256:abc");
        reply_free(&r);
    }
    /* The stream callback refusing: its error reaches the client. */
    reply r;
    data[0] = '!';
    call(f, "PUT", "/v1/blobs/x", data, 100000, 0, NULL, &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(jstr(r.json, "error", "message"), "chunk starts with !");
    reply_free(&r);
    free(data);
}

static void test_keep_alive(void **state)
{
    fixture *f = *state;
    CURL *c = curl_easy_init();
    reply r;
    call_on(c, f, "GET", "/v1/items/a", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.connects, 1);
    reply_free(&r);
    call_on(c, f, "GET", "/v1/items/b", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.connects, 0);
    reply_free(&r);
    call_on(c, f, "POST", "/v1/items", "{\"k\":1}", 7, 0, NULL, &r);
    assert_int_equal(r.status, 201);
    assert_int_equal(r.connects, 0);
    reply_free(&r);
    call_on(c, f, "GET", "/nowhere", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 404);
    assert_int_equal(r.connects, 0);
    reply_free(&r);
    call_on(c, f, "GET", "/v1/items/c", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.connects, 0);
    reply_free(&r);
    curl_easy_cleanup(c);
}

static void test_file_and_errors(void **state)
{
    fixture *f = *state;
    reply r;
    snprintf(file_path, sizeof file_path, "%s/test_http_file.bin",
             getenv("QUERN_TEST_WORK") ? getenv("QUERN_TEST_WORK") : "/tmp");
    FILE *fp = fopen(file_path, "wb");
    assert_non_null(fp);
    fputs("0123456789abcdefghijklmnopqrstuvwxyz", fp);
    fclose(fp);
    call(f, "GET", "/v1/file", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 10);
    assert_memory_equal(r.body.data, "56789abcde", 10);
    reply_free(&r);
    unlink(file_path);

    call(f, "GET", "/v1/fail", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 500);
    assert_string_equal(jstr(r.json, "error", "message"), "internal error");
    reply_free(&r);

    call(f, "GET", "/v1/internal", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 500);
    assert_null(strstr(r.body.data, "secret"));
    assert_string_equal(jstr(r.json, "error", "code"), "internal");
    reply_free(&r);

    call(f, "GET", "/v2/models/mm", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(json_string_value(json_object_get(r.json, "error")), "model mm not found");
    reply_free(&r);
}

static void test_trace(void **state)
{
    fixture *f = *state;
    reply r;
    call(f, "GET", "/v1/trace", NULL, 0, 0,
         "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &r);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body.data, "4bf92f3577b34da6a3ce929d0e0e4736", 32);
    reply_free(&r);
    call(f, "GET", "/v1/trace", NULL, 0, 0, "traceparent: garbage", &r);
    assert_int_equal(r.body.len, 32);
    assert_memory_not_equal(r.body.data, "4bf92f3577b34da6a3ce929d0e0e4736", 32);
    reply_free(&r);
}

static void test_builtins_and_metrics(void **state)
{
    fixture *f = *state;
    reply r;
    call(f, "GET", "/healthz", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "status", NULL), "ok");
    reply_free(&r);
    call(f, "GET", "/readyz", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "status", NULL), "ready");
    reply_free(&r);
    call(f, "GET", "/v1/items/zz", NULL, 0, 0, NULL, &r);
    reply_free(&r);
    call(f, "GET", "/not/here", NULL, 0, 0, NULL, &r);
    reply_free(&r);
    /* A request is counted when libmicrohttpd reports it complete, which may
     * come a moment after its client read the answer: scrape until it shows. */
    for (int i = 0;; i++) {
        call(f, "GET", "/metrics", NULL, 0, 0, NULL, &r);
        if (strstr(r.body.data, "route=\"unmatched\",method=\"GET\",code=\"404\"") || i == 100)
            break;
        reply_free(&r);
        usleep(20000);
    }
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    assert_non_null(strstr(r.body.data, "quern_http_requests_total{route=\"/v1/items/{name}\","
                                        "method=\"GET\",code=\"200\"}"));
    assert_non_null(strstr(r.body.data, "route=\"unmatched\",method=\"GET\",code=\"404\""));
    assert_null(strstr(r.body.data, "/v1/items/zz"));
    assert_non_null(strstr(r.body.data, "quern_http_request_duration_seconds_bucket"));
    assert_non_null(strstr(r.body.data, "quern_http_requests_in_flight"));
    reply_free(&r);
}

static void test_auth_mutations(void **state)
{
    fixture *f = start("s3cret-token", 0);
    reply r;
    call(f, "POST", "/v1/items", "{}", 2, 0, NULL, &r);
    assert_int_equal(r.status, 401);
    assert_string_equal(jstr(r.json, "error", "code"), "unauthenticated");
    assert_true(has_header(&r, "WWW-Authenticate: Bearer"));
    reply_free(&r);
    call(f, "POST", "/v1/items", "{}", 2, 0, "Authorization: Bearer s3cret-tokem", &r);
    assert_int_equal(r.status, 401);
    reply_free(&r);
    call(f, "POST", "/v1/items", "{}", 2, 0, "Authorization: Bearer s3cret-token-longer", &r);
    assert_int_equal(r.status, 401);
    reply_free(&r);
    call(f, "POST", "/v1/items", "{}", 2, 0, "Authorization: Bearer s3cret", &r);
    assert_int_equal(r.status, 401);
    reply_free(&r);
    call(f, "POST", "/v1/items", "{}", 2, 0, "Authorization: Bearer s3cret-token", &r);
    assert_int_equal(r.status, 201);
    reply_free(&r);
    call(f, "DELETE", "/v1/items/x", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 401);
    reply_free(&r);
    call(f, "GET", "/v1/items/x", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    stop(f);
}

static void test_auth_reads(void **state)
{
    fixture *f = start("tok", 1);
    reply r;
    call(f, "GET", "/v1/items/x", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 401);
    reply_free(&r);
    call(f, "HEAD", "/v1/items/x", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 401);
    reply_free(&r);
    call(f, "GET", "/v1/items/x", NULL, 0, 0, "Authorization: Bearer tok", &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    /* Probes and scrapes stay open. */
    call(f, "GET", "/healthz", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    stop(f);
}

typedef struct slow_call {
    fixture *f;
    const char *path;
    long status;
} slow_call;

static void *slow_thread(void *p)
{
    slow_call *s = p;
    reply r;
    call(s->f, "GET", s->path, NULL, 0, 0, NULL, &r);
    s->status = r.status;
    reply_free(&r);
    return NULL;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void test_drain_waits(void **state)
{
    fixture *f = start(NULL, 0);
    slow_call s = {f, "/v1/slow?ms=600", 0};
    pthread_t t;
    pthread_create(&t, NULL, slow_thread, &s);
    usleep(150 * 1000);
    qn_http_set_draining(f->h);
    reply r;
    call(f, "GET", "/readyz", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(jstr(r.json, "status", NULL), "not_ready");
    assert_string_equal(jstr(r.json, "reason", NULL), "draining");
    reply_free(&r);
    double t0 = now_s();
    assert_int_equal(qn_http_drain(f->h, 5000), 0);
    double waited = now_s() - t0;
    /* Not listening any more: a new client is refused outright. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_not_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    close(fd);
    assert_true(waited > 0.2);  /* the slow handler had ~450 ms left */
    assert_true(waited < 3.0);
    pthread_join(t, NULL);
    assert_int_equal(s.status, 200);
    stop(f);
}

static void test_drain_deadline(void **state)
{
    fixture *f = start(NULL, 0);
    slow_call s = {f, "/v1/slow?ms=1200", 0};
    pthread_t t;
    pthread_create(&t, NULL, slow_thread, &s);
    usleep(150 * 1000);
    double t0 = now_s();
    assert_int_equal(qn_http_drain(f->h, 200), QN_DEADLINE_EXCEEDED);
    double waited = now_s() - t0;
    assert_true(waited >= 0.18 && waited < 1.0);
    pthread_join(t, NULL);
    assert_int_equal(s.status, 200);
    stop(f);
}

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* Clients that vanish half-way: nothing leaks (ASan), the stream state's
 * cleanup runs, and drain is not held up by requests that will never end. */
static void test_client_vanishes(void **state)
{
    fixture *f = start(NULL, 0);
    static const char *const partial[] = {
        "GET /v1/items/x HTTP/1.1\r\nHost: a\r\n",
        "PUT /v1/blobs/d HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nabcdef",
        "POST /v1/items HTTP/1.1\r\nHost: a\r\nContent-Length: 500\r\n\r\n{\"a\":",
        "GARBAGE\r\n\r\n",
    };
    for (size_t i = 0; i < QN_NELEM(partial); i++) {
        int fd = raw_connect(f->port);
        assert_true(write(fd, partial[i], strlen(partial[i])) > 0);
        usleep(50 * 1000);
        close(fd);
    }
    usleep(100 * 1000);
    assert_int_equal(qn_http_drain(f->h, 2000), 0);
    stop(f);
}


/* ---- raw sockets: framing, limits, deadlines ------------------------------- */

/* A connection to the fixture from source address from ("127.0.0.2"; NULL:
 * any). Returns the fd. */
static int raw_connect_from(fixture *f, const char *from)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    if (from) {
        struct sockaddr_in b = {.sin_family = AF_INET};
        inet_pton(AF_INET, from, &b.sin_addr);
        assert_int_equal(bind(fd, (struct sockaddr *)&b, sizeof b), 0);
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void raw_send(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n <= 0)
            return; /* the server may close early: what it said is read next */
        data += n;
        len -= (size_t)n;
    }
}

/* Reads into out (NUL-terminated) until the peer closes (*eof = 1), a whole
 * response is in (Content-Length worth of body), or timeout_ms passes. */
static size_t raw_read(int fd, char *out, size_t cap, int timeout_ms, int *eof)
{
    size_t len = 0;
    *eof = 0;
    double end = now_s() + timeout_ms / 1000.0;
    for (;;) {
        out[len] = '\0';
        const char *hend = strstr(out, "\r\n\r\n");
        if (hend && !*eof) {
            const char *cl = strcasestr(out, "\r\nContent-Length:");
            if (cl && cl < hend && len >= (size_t)(hend + 4 - out) + strtoul(cl + 17, NULL, 10))
                return len;
        }
        int left = (int)((end - now_s()) * 1000);
        if (left <= 0)
            return len;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, left) <= 0)
            return len;
        ssize_t n = recv(fd, out + len, cap - 1 - len, 0);
        if (n <= 0) {
            *eof = 1;
            out[len] = '\0';
            return len;
        }
        len += (size_t)n;
        if (len == cap - 1)
            return len;
    }
}

static int raw_status(const char *buf)
{
    return strncmp(buf, "HTTP/1.1 ", 9) == 0 ? atoi(buf + 9) : 0;
}

/* One request on a fresh connection; the status, the answer in out. */
static int raw_exchange(fixture *f, const char *req, char *out, size_t cap, int *eof)
{
    int fd = raw_connect_from(f, NULL);
    raw_send(fd, req, strlen(req));
    raw_read(fd, out, cap, 5000, eof);
    if (!*eof) { /* the answer is in; did the server close after it? */
        char more[64];
        int e2;
        raw_read(fd, more, sizeof more, 1000, &e2);
        *eof = e2;
    }
    close(fd);
    return raw_status(out);
}

static void test_framing(void **state)
{
    fixture *f = *state;
    char out[8192];
    int eof;
    /* Two Content-Lengths, different or identical: 400, connection closed. */
    assert_int_equal(raw_exchange(f, "POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n"
                                     "Content-Length: 2\r\n\r\n{\"a\":11}", out, sizeof out, &eof), 400);
    assert_non_null(strstr(out, "2 Content-Length headers"));
    assert_true(eof);
    assert_int_equal(raw_exchange(f, "POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n"
                                     "Content-Length: 8\r\n\r\n{\"a\":11}", out, sizeof out, &eof), 400);
    assert_true(eof);
    /* Content-Length and Transfer-Encoding together: 400. */
    assert_int_equal(raw_exchange(f, "POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                     "Transfer-Encoding: chunked\r\n\r\n8\r\n{\"a\":11}\r\n0\r\n\r\n",
                                  out, sizeof out, &eof), 400);
    assert_non_null(strstr(out, "both Content-Length and Transfer-Encoding"));
    /* A transfer coding we do not speak: 501 at once, not a hang. */
    double t0 = now_s();
    assert_int_equal(raw_exchange(f, "POST /v1/items HTTP/1.1\r\nHost: x\r\n"
                                     "Transfer-Encoding: gzip\r\n\r\nabc", out, sizeof out, &eof), 501);
    assert_true(now_s() - t0 < 3.0);
    assert_non_null(strstr(out, "Transfer-Encoding gzip is not supported"));
    assert_true(eof);
    assert_int_equal(raw_exchange(f, "POST /v1/items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                                     "gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", out, sizeof out, &eof), 501);
    /* "chunked" itself still works, any case. */
    assert_int_equal(raw_exchange(f, "POST /v1/items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                                     "Chunked\r\n\r\n8\r\n{\"a\":11}\r\n0\r\n\r\n", out, sizeof out, &eof), 201);

    /* A chunked body a little over the limit (1024): 413 after the body,
     * and the connection stays usable. */
    int fd = raw_connect_from(f, NULL);
    char chunk[2100];
    int n = snprintf(chunk, sizeof chunk, "POST /v1/items HTTP/1.1\r\nHost: x\r\n"
                                          "Transfer-Encoding: chunked\r\n\r\n7d0\r\n");
    memset(chunk + n, 'a', 2000);
    memcpy(chunk + n + 2000, "\r\n0\r\n\r\n", 7);
    raw_send(fd, chunk, (size_t)n + 2007);
    raw_read(fd, out, sizeof out, 5000, &eof);
    assert_int_equal(raw_status(out), 413);
    assert_false(eof);
    raw_send(fd, "GET /v1/items/k HTTP/1.1\r\nHost: x\r\n\r\n", 37);
    raw_read(fd, out, sizeof out, 5000, &eof);
    assert_int_equal(raw_status(out), 200);
    close(fd);

    /* Far over it (24 MiB, past what is read and dropped): the client that
     * sends it all before reading still reads a 413. */
    fd = raw_connect_from(f, NULL);
    const char *h = "POST /v1/items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    raw_send(fd, h, strlen(h));
    static char big[65536 + 16];
    n = snprintf(big, sizeof big, "10000\r\n");
    memset(big + n, 'b', 65536);
    memcpy(big + n + 65536, "\r\n", 2);
    int sent_all = 1;
    for (int i = 0; i < 384; i++) {
        if (send(fd, big, (size_t)n + 65538, MSG_NOSIGNAL) < 0) {
            sent_all = 0;
            break;
        }
    }
    if (sent_all)
        raw_send(fd, "0\r\n\r\n", 5);
    raw_read(fd, out, sizeof out, 10000, &eof);
    assert_int_equal(raw_status(out), 413);
    assert_non_null(strstr(out, "this route accepts at most 1024"));
    assert_non_null(strcasestr(out, "Connection: close"));
    close(fd);
}

static void test_utf8(void **state)
{
    fixture *f = *state;
    reply r;
    atomic_store(&item_calls, 0);
    /* Bad UTF-8 in a path or query parameter: 400 naming it, no handler. */
    call(f, "GET", "/v1/items/%ff", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(jstr(r.json, "error", "message"), "path parameter 'name' is not valid UTF-8");
    reply_free(&r);
    call(f, "GET", "/v1/items/%e2%82", NULL, 0, 0, NULL, &r); /* a character cut short */
    assert_int_equal(r.status, 400);
    reply_free(&r);
    call(f, "GET", "/v1/items/%ed%a0%80", NULL, 0, 0, NULL, &r); /* a surrogate */
    assert_int_equal(r.status, 400);
    reply_free(&r);
    call(f, "GET", "/v1/items/ok?x=%C3%28", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(jstr(r.json, "error", "message"), "query parameter 'x' is not valid UTF-8");
    reply_free(&r);
    call(f, "GET", "/v1/items/ok?%ff=1", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(jstr(r.json, "error", "message"), "query parameter '\\xFF' is not valid UTF-8");
    reply_free(&r);
    call(f, "GET", "/v2/models/%ff", NULL, 0, 0, NULL, &r); /* OIP shape */
    assert_int_equal(r.status, 400);
    assert_string_equal(json_string_value(json_object_get(r.json, "error")),
                        "path parameter 'm' is not valid UTF-8");
    reply_free(&r);
    assert_int_equal(atomic_load(&item_calls), 0);
    /* Valid multi-byte text passes. */
    call(f, "GET", "/v1/items/caf%C3%A9?x=%F0%9F%98%80", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "name", NULL), "caf\xc3\xa9");
    assert_string_equal(jstr(r.json, "x", NULL), "\xf0\x9f\x98\x80");
    reply_free(&r);

    /* A handler quoting bad bytes: a 404 whose message is valid JSON text. */
    call(f, "GET", "/v1/thing", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 404);
    reply_free(&r);
    call(f, "GET", "/v1/thing", NULL, 0, 0, "X-Thing: a\xff" "b", &r);
    assert_int_equal(r.status, 404);
    assert_non_null(r.json);
    assert_string_equal(jstr(r.json, "error", "message"), "thing a\\xFFb does not exist");
    reply_free(&r);
    /* ... and one cut to fit: never inside a character. */
    char hdr[1400] = "X-Thing: ";
    for (int i = 0; i < 600; i++)
        strcat(hdr, "\xc3\xa9");
    call(f, "GET", "/v1/thing", NULL, 0, 0, hdr, &r);
    assert_int_equal(r.status, 404);
    assert_non_null(r.json); /* the client's parser accepted it: valid UTF-8 */
    const char *m = jstr(r.json, "error", "message");
    assert_non_null(m);
    assert_true(strlen(m) > 400 && strlen(m) < QN_ERR_MSG_MAX);
    reply_free(&r);

    /* A handler whose JSON could not be built: a logged 500, no crash. */
    call(f, "GET", "/v1/nulljson", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 500);
    assert_string_equal(jstr(r.json, "error", "message"), "internal error");
    reply_free(&r);
}

static void test_draining_answers_503(void **state)
{
    fixture *f = start(NULL, 0);
    char out[4096];
    int eof;
    int fds[3];
    for (int i = 0; i < 3; i++) {
        fds[i] = raw_connect_from(f, NULL);
        raw_send(fds[i], "GET /v1/items/a HTTP/1.1\r\nHost: x\r\n\r\n", 37);
        raw_read(fds[i], out, sizeof out, 5000, &eof);
        assert_int_equal(raw_status(out), 200);
    }
    atomic_store(&item_calls, 0);
    qn_http_set_draining(f->h);
    /* A request on a kept-alive connection: 503, Connection: close, no handler. */
    raw_send(fds[0], "GET /v1/items/b HTTP/1.1\r\nHost: x\r\n\r\n", 37);
    raw_read(fds[0], out, sizeof out, 5000, &eof);
    assert_int_equal(raw_status(out), 503);
    assert_non_null(strstr(out, "\"code\":\"unavailable\""));
    assert_non_null(strstr(out, "the service is stopping"));
    assert_non_null(strcasestr(out, "Connection: close"));
    raw_read(fds[0], out, sizeof out, 3000, &eof);
    assert_true(eof);
    /* One with a body too. */
    raw_send(fds[1], "POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n{\"a\":11}", 64);
    raw_read(fds[1], out, sizeof out, 5000, &eof);
    assert_int_equal(raw_status(out), 503);
    assert_int_equal(atomic_load(&item_calls), 0);
    /* The probes still answer, saying why. */
    raw_send(fds[2], "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", 33);
    raw_read(fds[2], out, sizeof out, 5000, &eof);
    assert_int_equal(raw_status(out), 503);
    assert_non_null(strstr(out, "draining"));
    assert_int_equal(qn_http_drain(f->h, 2000), 0);
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    stop(f);
}

static double metric_value(fixture *f, const char *series)
{
    qn_buf b;
    qn_buf_init(&b, 1 << 20);
    assert_int_equal(qn_metrics_render(f->m, &b), 0);
    qn_buf_append(&b, "", 1);
    char key[256];
    snprintf(key, sizeof key, "\n%s ", series);
    const char *p = strstr(b.data, key);
    double v = p ? strtod(p + strlen(key), NULL) : -1;
    qn_buf_free(&b);
    return v;
}

static void wait_metric(fixture *f, const char *series, double want)
{
    double end = now_s() + 5;
    while (metric_value(f, series) != want && now_s() < end)
        usleep(10 * 1000);
    assert_true(metric_value(f, series) == want);
}

static void test_connection_limits(void **state)
{
    const long long lim[3] = {4, 2, 5000};
    fixture *f = start_lim(NULL, 0, lim);
    char out[4096];
    int eof;
    /* Two from 127.0.0.2 are taken; the third is answered 429 and closed. */
    int a1 = raw_connect_from(f, "127.0.0.2"), a2 = raw_connect_from(f, "127.0.0.2");
    wait_metric(f, "quern_http_connections_open", 2);
    int a3 = raw_connect_from(f, "127.0.0.2");
    raw_read(a3, out, sizeof out, 5000, &eof);
    assert_int_equal(raw_status(out), 429);
    assert_non_null(strstr(out, "too many connections from your address (at most 2 at once)"));
    close(a3);
    wait_metric(f, "quern_http_connections_refused_total{reason=\"client_limit\"}", 1);
    /* Another address still gets in... */
    reply r;
    call(f, "GET", "/healthz", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    wait_metric(f, "quern_http_connections_open", 2);
    /* ... until the total (4) is reached: then 503 for anyone. */
    int b1 = raw_connect_from(f, "127.0.0.3"), b2 = raw_connect_from(f, "127.0.0.4");
    wait_metric(f, "quern_http_connections_open", 4);
    int b3 = raw_connect_from(f, "127.0.0.5");
    raw_read(b3, out, sizeof out, 5000, &eof);
    assert_int_equal(raw_status(out), 503);
    assert_non_null(strstr(out, "too many open connections"));
    close(b3);
    wait_metric(f, "quern_http_connections_refused_total{reason=\"total_limit\"}", 1);
    /* A slot that frees is usable again, and the taken ones work. */
    close(b1);
    wait_metric(f, "quern_http_connections_open", 3);
    raw_send(a1, "GET /v1/items/a HTTP/1.1\r\nHost: x\r\n\r\n", 37);
    raw_read(a1, out, sizeof out, 5000, &eof);
    assert_int_equal(raw_status(out), 200);
    call(f, "GET", "/healthz", NULL, 0, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    close(a1);
    close(a2);
    close(b2);
    wait_metric(f, "quern_http_connections_open", 0);
    stop(f);
}

/* Sends head a byte per 100 ms, each byte resetting the idle timeout;
 * returns the seconds until the server cut the connection (0: it did not
 * within 5 s). */
static double dribble(int fd, const char *head)
{
    char out[256];
    double t0 = now_s();
    for (size_t i = 0; now_s() - t0 < 5; i = head[i + 1] ? i + 1 : i) {
        if (send(fd, head + i, 1, MSG_NOSIGNAL) < 0)
            return now_s() - t0;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) > 0 && recv(fd, out, sizeof out, 0) <= 0)
            return now_s() - t0;
    }
    return 0;
}

static void test_header_deadline(void **state)
{
    const long long lim[3] = {64, 0, 400};
    fixture *f = start_lim(NULL, 0, lim);
    char out[4096];
    int eof;
    /* A request head sent a byte at a time: cut once the deadline passes. */
    int fd = raw_connect_from(f, NULL);
    double cut = dribble(fd, "GET /v1/items/a HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa");
    close(fd);
    assert_true(cut > 0.3);
    assert_true(cut < 3.0);
    wait_metric(f, "quern_http_connections_refused_total{reason=\"head_timeout\"}", 1);

    /* An idle kept-alive connection is not slow: it outlives the deadline
     * and serves its next request. */
    fd = raw_connect_from(f, NULL);
    raw_send(fd, "GET /v1/items/a HTTP/1.1\r\nHost: x\r\n\r\n", 37);
    raw_read(fd, out, sizeof out, 5000, &eof);
    assert_int_equal(raw_status(out), 200);
    usleep(1200 * 1000);
    raw_send(fd, "GET /v1/items/b HTTP/1.1\r\nHost: x\r\n\r\n", 37);
    raw_read(fd, out, sizeof out, 5000, &eof);
    assert_int_equal(raw_status(out), 200);
    /* But a next request dribbled on it has the deadline too. */
    usleep(300 * 1000);
    cut = dribble(fd, "GET /v1/items/c HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_true(cut > 0.3);
    assert_true(cut < 3.0);
    close(fd);
    wait_metric(f, "quern_http_connections_refused_total{reason=\"head_timeout\"}", 2);
    stop(f);
}

static void test_bad_listen(void **state)
{
    qn_err err;
    qn_http_opts o = {.service = "t", .listen = "127.0.0.1", .routes = routes, .nroutes = 1};
    assert_null(qn_http_start(&o, &err));
    assert_int_equal(err.code, QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "127.0.0.1"));
    o.listen = "127.0.0.1:99999";
    assert_null(qn_http_start(&o, &err));
    fixture *f = start(NULL, 0);
    char busy[64];
    snprintf(busy, sizeof busy, "127.0.0.1:%d", f->port);
    o.listen = busy;
    assert_null(qn_http_start(&o, &err));
    assert_int_equal(err.code, QN_UNAVAILABLE);
    stop(f);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    qn_log_init("test", QN_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_match_unit),
        cmocka_unit_test_setup_teardown(test_routing_params_and_query, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_404_405, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_head, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_json_body, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_body_limit, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_stream_upload, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_file_and_errors, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_trace, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_builtins_and_metrics, setup_open, teardown),
        cmocka_unit_test(test_auth_mutations),
        cmocka_unit_test(test_auth_reads),
        cmocka_unit_test(test_drain_waits),
        cmocka_unit_test(test_drain_deadline),
        cmocka_unit_test(test_client_vanishes),
        cmocka_unit_test(test_bad_listen),
        cmocka_unit_test_setup_teardown(test_framing, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_utf8, setup_open, teardown),
        cmocka_unit_test(test_draining_answers_503),
        cmocka_unit_test(test_connection_limits),
        cmocka_unit_test(test_header_deadline),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
