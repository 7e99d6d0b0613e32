/*
 * source_http.c - the http kind: rows from an HTTP endpoint answering JSON
 * (an array, or an object with the rows under rows_key), NDJSON or CSV,
 * page after page.
 *
 * An endpoint is read as an append-only log. The committed state is the
 * page in progress and how many of its rows were taken:
 *     {"url": PAGE, "taken": N, "etag": E?, "last_modified": L?}
 * A page that says there is a next one (next link, cursor, or a full page
 * in page-number mode) is finished: the state moves to the next page with
 * taken 0, in the same transaction as the page's rows. The last page stays
 * the page in progress with taken = its rows and its ETag/Last-Modified, so
 * the next run asks it again conditionally (304: nothing new) and takes only
 * the rows past N. kill -9 between two pages: the restarted run asks the page
 * the state names and skips the rows already taken, so no row is lost or
 * taken twice.
 *
 * Every request goes through core's client (deadline, retries with backoff
 * on connection errors, 429, 502-504, a circuit breaker per source) and the
 * --source-allow list, pinned per attempt (no redirects). Extra headers
 * (API keys) come from headers_file, read at each run and never stored.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/json.h"
#include "ingest/sources.h"

#define MAX_HEADERS 32
#define PAGES_DEFAULT 1000

static const char *const keys[] = {"url", "format", "rows_key", "paging", "next_key", "cursor_param",
                                   "cursor_key", "page_param", "page_start", "page_size", "page_size_param",
                                   "headers_file", "timeout_ms", "max_pages", NULL};

static int int_field(json_t *spec, const char *key, long long lo, long long hi, long long def, qn_err *err)
{
    json_t *v = json_object_get(spec, key);
    if (!v) {
        if (def >= lo)
            json_object_set_new(spec, key, json_integer(def));
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s must be an integer from %lld to %lld", key, lo, hi);
    return 0;
}

static int check(json_t *spec, const src_limits *lim, qn_err *err)
{
    const char *url, *fmt, *paging, *s;
    int rc;
    if ((rc = src_known_keys(spec, keys, err)) < 0 || (rc = src_str(spec, "url", 4096, 1, &url, err)) < 0 ||
        (rc = src_str(spec, "format", 16, 0, &fmt, err)) < 0 || (rc = src_str(spec, "paging", 16, 0, &paging, err)) < 0)
        return rc;
    if ((rc = qn_netallow_check_url(lim->allow, url, err)) < 0)
        return rc == QN_PERMISSION_DENIED ? qn_err_set(err, QN_INVALID_ARGUMENT, "url: %s", err->msg) : rc;
    char host[256], path[8];
    int port, hq;
    if (qn_url_parts(url, host, sizeof host, &port, path, sizeof path, &hq, err) < 0)
        return QN_INVALID_ARGUMENT;
    const char *auth = strstr(url, "://") + 3, *at = strchr(auth, '@'), *slash = strchr(auth, '/');
    if (at && (!slash || at < slash))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "url must not hold credentials; put them in headers_file");
    if (!fmt)
        json_object_set_new(spec, "format", json_string("json"));
    else if (strcmp(fmt, "json") && strcmp(fmt, "ndjson") && strcmp(fmt, "csv"))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "format must be json, ndjson or csv");
    if ((rc = src_str(spec, "rows_key", 256, 0, &s, err)) < 0)
        return rc;
    if (s && fmt && strcmp(fmt, "json"))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "rows_key applies to format json only");
    if (!paging)
        json_object_set_new(spec, "paging", json_string(paging = "none"));
    const char *pf[] = {"next_key", "cursor_param", "cursor_key", "page_param", "page_size_param", "headers_file"};
    for (size_t i = 0; i < QN_NELEM(pf); i++)
        if ((rc = src_str(spec, pf[i], i == 5 ? 4096 : 256, 0, &s, err)) < 0)
            return rc;
    if ((s = json_string_value(json_object_get(spec, "headers_file"))) && (rc = src_path_ok(lim, "headers_file", s, err)) < 0)
        return rc;
    if (strcmp(paging, "none") == 0) {
    } else if (strcmp(paging, "next_link") == 0) {
        /* next_key (JSON answers) or else the Link header */
    } else if (strcmp(paging, "cursor") == 0) {
        if (!json_object_get(spec, "cursor_param") || !json_object_get(spec, "cursor_key"))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "paging cursor needs cursor_param and cursor_key");
        if (strcmp(json_string_value(json_object_get(spec, "format")), "json"))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "paging cursor needs format json (cursor_key is read from the answer)");
    } else if (strcmp(paging, "page") == 0) {
        if (!json_object_get(spec, "page_param"))
            json_object_set_new(spec, "page_param", json_string("page"));
        if (!json_object_get(spec, "page_size"))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "paging page needs page_size (a shorter page is the last one so far)");
        if ((rc = int_field(spec, "page_start", 0, 1000000, 1, err)) < 0 ||
            (rc = int_field(spec, "page_size", 1, 100000, 0, err)) < 0)
            return rc;
    } else {
        return qn_err_set(err, QN_INVALID_ARGUMENT, "paging must be none, next_link, cursor or page");
    }
    if ((rc = int_field(spec, "timeout_ms", 100, 600000, 30000, err)) < 0 ||
        (rc = int_field(spec, "max_pages", 1, 1000000, PAGES_DEFAULT, err)) < 0)
        return rc;
    return 0;
}

/* url with param=value set (replaced when present). Malloc'ed; NULL on OOM. */
static char *url_with(const char *url, const char *param, const char *value)
{
    char *ev = curl_easy_escape(NULL, value, 0), *ep = curl_easy_escape(NULL, param, 0);
    qn_buf b;
    qn_buf_init(&b, 16384);
    const char *q = strchr(url, '?'), *frag = strchr(url, '#');
    size_t end = frag ? (size_t)(frag - url) : strlen(url);
    char *out = NULL;
    if (!ev || !ep)
        goto out;
    if (!q || (frag && q > frag)) {
        qn_buf_append(&b, url, end);
        qn_buf_printf(&b, "?%s=%s", ep, ev);
    } else {
        qn_buf_append(&b, url, (size_t)(q - url) + 1);
        int set = 0, first = 1;
        const char *p = q + 1;
        while (p < url + end) {
            const char *amp = memchr(p, '&', (size_t)(url + end - p));
            size_t n = amp ? (size_t)(amp - p) : (size_t)(url + end - p);
            size_t kl = strcspn(p, "=&");
            if (kl > n)
                kl = n;
            if (n) {
                if (!first)
                    qn_buf_append(&b, "&", 1);
                first = 0;
                if (kl == strlen(ep) && strncmp(p, ep, kl) == 0) {
                    qn_buf_printf(&b, "%s=%s", ep, ev);
                    set = 1;
                } else {
                    qn_buf_append(&b, p, n);
                }
            }
            p += n + (amp ? 1 : 0);
            if (!amp)
                break;
        }
        if (!set)
            qn_buf_printf(&b, "%s%s=%s", first ? "" : "&", ep, ev);
    }
    if (qn_buf_append(&b, "", 1) == 0)
        out = strdup(b.data);
out:
    qn_buf_free(&b);
    curl_free(ev);
    curl_free(ep);
    return out;
}

/* A next link as given (absolute, "/path?..." or "?query") against url. */
static char *resolve(const char *url, const char *link)
{
    char *out = NULL;
    if (strncmp(link, "http://", 7) == 0 || strncmp(link, "https://", 8) == 0)
        return strdup(link);
    const char *hs = strstr(url, "://");
    if (!hs)
        return NULL;
    if (link[0] == '/') {
        size_t origin = (size_t)(strchrnul(hs + 3, '/') - url);
        if (asprintf(&out, "%.*s%s", (int)origin, url, link) < 0)
            out = NULL;
    } else if (link[0] == '?') {
        size_t base = strcspn(url, "?#");
        if (asprintf(&out, "%.*s%s", (int)base, url, link) < 0)
            out = NULL;
    }
    return out;
}

/* A dotted path into a JSON object ("data.items"). */
static json_t *lookup(json_t *doc, const char *path)
{
    char key[257];
    while (doc && *path) {
        size_t n = strcspn(path, ".");
        if (n >= sizeof key)
            return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        doc = json_object_get(doc, key);
        path += n + (path[n] == '.');
    }
    return doc;
}

/* Extra request headers: "Name: value" lines; blank lines and # comments skipped. */
static int read_headers(const char *file, char **lines, size_t *n, qn_err *err)
{
    *n = 0;
    if (!file)
        return 0;
    FILE *f = fopen(file, "r");
    if (!f)
        return qn_err_set(err, QN_FAILED_PRECONDITION, "headers_file %s cannot be read: %s", file, strerror(errno));
    char line[8192];
    int rc = 0, ln = 0;
    while (fgets(line, sizeof line, f)) {
        ln++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        char *colon = strchr(line, ':');
        if (!colon || colon == line || *n == MAX_HEADERS) {
            rc = qn_err_set(err, QN_FAILED_PRECONDITION,
                            "headers_file %s line %d: want \"Name: value\" (at most %d headers)", file, ln, MAX_HEADERS);
            break;
        }
        if (!(lines[(*n)++] = strdup(line))) {
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
    }
    explicit_bzero(line, sizeof line);
    fclose(f);
    return rc;
}

typedef struct page {
    char *url;
    long long taken;
} page;

static json_t *state_json(const char *url, long long taken, const qn_fetch *f, long long pageno)
{
    json_t *s = json_pack("{s:s, s:I}", "url", url, "taken", (json_int_t)taken);
    if (s && f && f->etag[0])
        json_object_set_new(s, "etag", json_string(f->etag));
    if (s && f && f->last_modified[0])
        json_object_set_new(s, "last_modified", json_string(f->last_modified));
    if (s && pageno >= 0)
        json_object_set_new(s, "page", json_integer(pageno));
    return s;
}

/* Rows of a JSON page into b, skipping the first `skip`; *n = rows in the page. */
static int json_rows(src_run *r, const qn_buf *body, long long skip, qml_rec_batch *b, json_t **doc, size_t *n,
                     int pageno, qn_err *err)
{
    json_error_t je;
    *doc = json_loadb(body->data, body->len, 0, &je);
    if (!*doc)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "page %d is not JSON (line %d, column %d: %s)", pageno, je.line,
                          je.column, je.text);
    const char *key = json_string_value(json_object_get(r->spec, "rows_key"));
    json_t *rows = key ? lookup(*doc, key) : *doc;
    if (!json_is_array(rows))
        return qn_err_set(err, QN_INVALID_ARGUMENT, key ? "page %d has no array under \"%s\"" :
                          "page %d is not a JSON array (give rows_key when the rows are in an object)%s", pageno,
                          key ? key : "");
    *n = json_array_size(rows);
    for (size_t i = (size_t)skip; i < *n; i++) {
        json_t *row = json_array_get(rows, i);
        int64_t before = r->next_row;
        int rc = src_add_object(r, b, row, err);
        if (rc < 0)
            return rc;
        if (r->next_row != before && json_array_size(r->errors)) {
            json_t *last = json_array_get(r->errors, json_array_size(r->errors) - 1);
            if (json_integer_value(json_object_get(last, "row")) == r->next_row && !json_object_get(last, "page")) {
                json_object_set_new(last, "page", json_integer(pageno));
                json_object_set_new(last, "page_row", json_integer((json_int_t)i + 1));
            }
        }
    }
    return 0;
}

/* Rows of an NDJSON or CSV page past the first `skip` records. */
static int text_rows(src_run *r, const qn_buf *body, qml_rec_format fmt, long long skip, qml_rec_batch *out,
                     size_t *n, int pageno, qn_err *err)
{
    qml_rec_batch b;
    qml_rec_batch_init(&b);
    qml_rec_opts o = r->opts;
    o.max_rows = 10000000;
    int rc = body->len ? qml_rec_parse(body->data, body->len, fmt, r->schema, &o, &b, err) : 0;
    if (rc == QN_INVALID_ARGUMENT && strstr(err->msg, "no rows")) {
        rc = 0; /* an empty page */
    } else if (rc < 0) {
        char m[sizeof err->msg];
        snprintf(m, sizeof m, "%s", err->msg);
        qml_rec_batch_free(&b);
        return qn_err_set(err, rc, "page %d: %s", pageno, m);
    }
    *n = b.nrows + (size_t)b.nbad;
    json_t *where = json_integer(pageno);
    for (size_t i = 0; i < b.nerrors; i++) {
        if ((long long)b.errors[i].row <= skip)
            continue;
        json_t *e = json_pack("{s:I, s:I, s:O, s:s}", "row", (json_int_t)b.errors[i].row, "line",
                              (json_int_t)b.errors[i].line, "page", where, "reason", b.errors[i].msg);
        if (json_array_size(r->errors) < SRC_MAX_ERRORS)
            json_array_append_new(r->errors, e);
        else
            json_decref(e);
    }
    for (size_t i = 0; i < b.nerrors; i++)
        if ((long long)b.errors[i].row > skip)
            out->nbad++;
    if (b.nbad > b.nerrors)
        out->nbad += b.nbad - b.nerrors; /* past the error list: counted, not listed */
    json_decref(where);
    for (size_t i = 0; i < b.nrows && rc == 0; i++) {
        if ((long long)b.row[i] <= skip)
            continue;
        /* A canonical row: checked already; append as is. */
        json_t *obj = json_loadb(b.text + b.off[i], b.off[i + 1] - b.off[i], 0, NULL);
        char msg[QML_REPORT_MSG];
        if (!obj || qml_rec_object(obj, NULL, &o, out, msg, sizeof msg) != 0)
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        json_decref(obj);
    }
    qml_rec_batch_free(&b);
    return rc;
}

static int pull(src_run *r, qn_err *err)
{
    const json_t *spec = r->spec;
    const char *fmt = json_string_value(json_object_get(spec, "format"));
    const char *paging = json_string_value(json_object_get(spec, "paging"));
    long long max_pages = json_integer_value(json_object_get(spec, "max_pages"));
    long long page_size = json_integer_value(json_object_get(spec, "page_size"));
    const char *page_param = json_string_value(json_object_get(spec, "page_param"));
    char *hdr[MAX_HEADERS + 2] = {0};
    size_t nh = 0;
    char *url = NULL, *shown = NULL, *next = NULL, cond[2][320];
    qn_buf body;
    qn_buf_init(&body, 64u << 20);
    long long pageno = -1;
    const char *hf = json_string_value(json_object_get(spec, "headers_file"));
    int rc = hf ? src_path_ok(r->lim, "headers_file", hf, err) : 0;
    if (rc < 0 || (rc = read_headers(hf, hdr, &nh, err)) < 0)
        goto out;
    const char *su = json_string_value(json_object_get(r->state, "url"));
    long long taken = json_integer_value(json_object_get(r->state, "taken"));
    if (strcmp(paging, "page") == 0) {
        json_t *p = json_object_get(r->state, "page");
        pageno = p ? json_integer_value(p) : json_integer_value(json_object_get(spec, "page_start"));
    }
    if (su) {
        url = strdup(su);
    } else if (pageno >= 0) {
        char n[32];
        snprintf(n, sizeof n, "%lld", pageno);
        url = url_with(json_string_value(json_object_get(spec, "url")), page_param, n);
        const char *psp = json_string_value(json_object_get(spec, "page_size_param"));
        if (url && psp) {
            char *u2;
            snprintf(n, sizeof n, "%lld", page_size);
            u2 = url_with(url, psp, n);
            free(url);
            url = u2;
        }
    } else {
        url = strdup(json_string_value(json_object_get(spec, "url")));
    }
    if (!url) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (long long pages = 1;; pages++) {
        qn_fetch f = {.url = url, .allow = r->allow, .headers = (const char *const *)hdr};
        free(shown);
        shown = qn_url_redact(url);
        f.shown = shown;
        nh = nh > MAX_HEADERS ? MAX_HEADERS : nh;
        size_t extra = 0;
        /* Conditional only for the page the validators came with. */
        if (su && strcmp(su, url) == 0) {
            const char *et = json_string_value(json_object_get(r->state, "etag"));
            const char *lm = json_string_value(json_object_get(r->state, "last_modified"));
            if (et) {
                snprintf(cond[0], sizeof cond[0], "If-None-Match: %.300s", et);
                hdr[nh + extra++] = cond[0];
            }
            if (lm) {
                snprintf(cond[1], sizeof cond[1], "If-Modified-Since: %.300s", lm);
                hdr[nh + extra++] = cond[1];
            }
        }
        f.nheaders = nh + extra;
        int status = qn_client_fetch(r->http, &f, &body, err);
        for (size_t i = 0; i < extra; i++)
            hdr[nh + i] = NULL;
        if (status < 0) {
            rc = status;
            goto out;
        }
        if (status == 304)
            break;
        qml_rec_batch b;
        qml_rec_batch_init(&b);
        json_t *doc = NULL;
        size_t n = 0;
        if (strcmp(fmt, "json") == 0)
            rc = json_rows(r, &body, taken, &b, &doc, &n, (int)pages, err);
        else
            rc = text_rows(r, &body, strcmp(fmt, "csv") == 0 ? QML_REC_CSV : QML_REC_NDJSON, taken, &b, &n,
                           (int)pages, err);
        if (rc < 0) {
            qml_rec_batch_free(&b);
            json_decref(doc);
            goto out;
        }
        /* Where the next page is, if the answer says there is one. */
        free(next);
        next = NULL;
        if (strcmp(paging, "next_link") == 0) {
            const char *nk = json_string_value(json_object_get(spec, "next_key"));
            const char *link = nk ? json_string_value(lookup(doc, nk)) : (f.link_next[0] ? f.link_next : NULL);
            if (link && *link && !(next = resolve(url, link))) {
                qml_rec_batch_free(&b);
                json_decref(doc);
                rc = qn_err_set(err, QN_INVALID_ARGUMENT, "page %lld: next link \"%.200s\" is not a URL", pages, link);
                goto out;
            }
        } else if (strcmp(paging, "cursor") == 0) {
            json_t *cv = lookup(doc, json_string_value(json_object_get(spec, "cursor_key")));
            char num[32];
            const char *v = json_string_value(cv);
            if (json_is_integer(cv)) {
                snprintf(num, sizeof num, "%lld", (long long)json_integer_value(cv));
                v = num;
            }
            if (v && *v && n > 0)
                next = url_with(json_string_value(json_object_get(spec, "url")),
                                json_string_value(json_object_get(spec, "cursor_param")), v);
        } else if (strcmp(paging, "page") == 0 && (long long)n >= page_size) {
            char num[32];
            snprintf(num, sizeof num, "%lld", pageno + 1);
            next = url_with(url, page_param, num);
        }
        json_decref(doc);
        if (next && strcmp(next, url) == 0) {
            free(next); /* a page naming itself as next: the end */
            next = NULL;
        }
        json_t *st = next ? state_json(next, 0, NULL, pageno >= 0 ? pageno + 1 : -1)
                          : state_json(url, (long long)n > taken ? (long long)n : taken, &f, pageno);
        if (n > (size_t)taken || next || !su || strcmp(su, url) != 0 || f.etag[0] || f.last_modified[0]) {
            rc = src_commit(r, &b, NULL, st, NULL, NULL, err);
        } else {
            json_decref(st);
        }
        qml_rec_batch_free(&b);
        if (rc < 0)
            goto out;
        if (!next)
            break;
        free(url);
        url = next;
        next = NULL;
        su = NULL;
        taken = 0;
        if (pageno >= 0)
            pageno++;
        if (pages >= max_pages)
            break; /* the next run goes on from the state */
        if (atomic_load(r->stop)) {
            rc = qn_err_set(err, QN_CANCELLED, "the service is stopping; the next run goes on from the page in progress");
            goto out;
        }
    }
    rc = 0;
out:
    for (size_t i = 0; i < MAX_HEADERS; i++) {
        if (hdr[i]) {
            explicit_bzero(hdr[i], strlen(hdr[i]));
            free(hdr[i]);
        }
    }
    qn_buf_free(&body);
    free(url);
    free(next);
    free(shown);
    return rc;
}

const src_kind src_http = {"http", check, pull};
