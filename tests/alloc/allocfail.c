/*
 * allocfail.c - allocation-failure mode: every parser of outside input and
 * every model loader, with its Nth allocation failed, for every N.
 *
 *     allocfail TARGET [FILE|DIR]...
 *
 * For each input (a file, or each file of a folder: the fuzz corpora), the
 * driver runs the target once unarmed (lazy statics settle), once counting
 * (K allocations, the baseline result and its hash, nothing may stay live),
 * then twice for each n = 1..K: with allocation n failed, and with n and
 * every later one failed (failalloc.h; SQLite's transient and persistent
 * faultsim, curl's CURL_MEMLIMIT). Every such run must:
 *   - not crash (ASan/UBSan make a wild read or write a crash);
 *   - give back every block it took (live set empty after the run; LSan
 *     checks the shared libraries' side at exit in the sanitizer build);
 *   - end in a clean error (negative code, err.code equal to it, a message),
 *     or, when the failure was absorbed by a fallback, in exactly the
 *     baseline's result (same hash): nothing may be altered silently;
 *   - when the input succeeded in the baseline and now fails, say so as a
 *     server fault (QN_RESOURCE_EXHAUSTED; for HTTP a 5xx or 429), not as a
 *     client's (other 4xx); see af_target.strict for the two exceptions.
 * n runs over 1..K while K <= QUERN_ALLOCFAIL_EVERY (default 2000), then
 * over QUERN_ALLOCFAIL_TAIL (default 400) evenly spaced points of the rest.
 * QUERN_ALLOCFAIL_ONLY=n runs only allocation n (with QUERN_ALLOCFAIL_TRACE,
 * see failalloc.h, to find the failing call; tests/alloc/symbolize.sh turns
 * the addresses into lines). The model-loader target makes its inputs: it trains small bundles of each
 * kind under $QUERN_TEST_WORK/allocfail first (unarmed).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "failalloc.h"

#include "core/arena.h"
#include "core/bus/bus.h"
#include "core/err.h"
#include "core/http.h"
#include "core/json.h"
#include "core/log.h"
#include "ml/bundle.h"
#include "ml/clean.h"
#include "ml/colblock.h"
#include "ml/csv.h"
#include "ml/linear.h"
#include "ml/model.h"
#include "ml/ndjson.h"
#include "ml/npy.h"
#include "ml/profile.h"
#include "ml/records.h"
#include "ml/train.h"
#include "ml/transform.h"
#include "ml/xgb_forest.h"
#include "serve/grpc_server.h"
#include "serve/oip_json.h"
#include "../unit/serve/sum_backend.h"

/* ---- the result of one run, as a hash ------------------------------------ */

typedef struct af_out {
    uint64_t h;
} af_out;

static void hash(af_out *o, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        o->h ^= b[i];
        o->h *= 0x100000001b3ULL;
    }
}

static void hash_u64(af_out *o, uint64_t v) { hash(o, &v, sizeof v); }
static void hash_str(af_out *o, const char *s)
{
    if (s)
        hash(o, s, strlen(s) + 1);
    else
        hash_u64(o, 0x5eed);
}

static void hash_frame(af_out *o, const qml_frame *f)
{
    hash_u64(o, qml_frame_ncols(f));
    hash_u64(o, qml_frame_nrows(f));
    for (size_t j = 0; j < qml_frame_ncols(f); j++) {
        const qml_column *c = qml_frame_col(f, j);
        hash_str(o, c->name);
        hash_u64(o, c->type);
        for (size_t i = 0; i < c->len; i++) {
            hash_u64(o, c->missing[i]);
            if (c->missing[i])
                continue;
            if (c->type == QML_CATEGORICAL)
                hash_str(o, qml_col_str(c, i));
            else
                hash(o, &c->num[i], sizeof c->num[i]);
        }
    }
}

static void hash_report(af_out *o, const qml_read_report *r)
{
    hash_u64(o, r->rows_read);
    hash_u64(o, r->rows_ok);
    hash_u64(o, r->rows_bad);
}

/* ---- targets ---------------------------------------------------------------
 * Each runs one input through a parser and what its caller does next, frees
 * everything, and returns 0 or the first negative code (err filled). */

typedef int (*af_run_fn)(const uint8_t *d, size_t n, af_out *o, qn_err *err);

/* A request body as services read it (qn_req_json: jansson, duplicates
 * refused), then core/json.c's checked accessors and canonical form. */
static int run_json_body(const uint8_t *d, size_t n, af_out *o, qn_err *err)
{
    json_error_t je;
    json_t *v = json_loadb((const char *)d, n, JSON_REJECT_DUPLICATES, &je);
    if (!v)
        return qn_err_set(err, json_error_code(&je) == json_error_out_of_memory
                                   ? QN_RESOURCE_EXHAUSTED : QN_INVALID_ARGUMENT,
                          "body is not valid JSON: %s", je.text);
    int rc = 0;
    char *canon = NULL;
    json_t *tags = NULL, *obj = NULL;
    if (json_is_object(v)) {
        static const char *const allowed[] = {"id", "source", "type", "data", "tags",
                                              "specversion", "time", "name", NULL};
        const char *s = NULL;
        int64_t i = 0;
        if ((rc = qn_json_only(v, allowed, err)) == QN_RESOURCE_EXHAUSTED)
            goto out;
        if ((rc = qn_json_str(v, "name", 0, 128, &s, err)) == 0 && s)
            hash_str(o, s);
        if (rc == QN_RESOURCE_EXHAUSTED)
            goto out;
        if (qn_json_int(v, "time", 0, 0, INT64_MAX, &i, err) == 0)
            hash_u64(o, (uint64_t)i);
        if ((rc = qn_json_obj(v, "data", 0, &obj, err)) == QN_RESOURCE_EXHAUSTED)
            goto out;
        if ((rc = qn_json_tags(v, "tags", &tags, err)) == QN_RESOURCE_EXHAUSTED)
            goto out;
        rc = 0;
    }
    canon = qn_json_canonical(v);
    if (!canon) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory writing canonical JSON");
        goto out;
    }
    hash_str(o, canon);
out:
    free(canon);
    json_decref(v);
    return rc;
}

static int run_cloudevent(const uint8_t *d, size_t n, af_out *o, qn_err *err)
{
    json_t *ev = NULL;
    int rc = qn_event_parse((const char *)d, n, 64 * 1024, &ev, err);
    if (rc < 0)
        return rc;
    char *s = qn_json_dumps(ev, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(ev);
    if (!s)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory writing the event");
    hash_str(o, s);
    free(s);
    return 0;
}

static void hash_tensor(af_out *o, const oip_tensor *t)
{
    hash_str(o, t->name);
    hash_u64(o, t->datatype);
    hash_u64(o, (uint64_t)t->ndim);
    hash(o, t->shape, sizeof t->shape);
    if (t->data_len)
        hash(o, t->data, t->data_len);
    for (size_t k = 0; k < t->nbytes; k++) {
        hash_u64(o, t->bytes[k].len);
        hash(o, t->bytes[k].p, t->bytes[k].len);
    }
}

/* OIP REST infer body: JSON, and binary tensors after jlen bytes when the
 * first line is "BIN <jlen>\n" (the Inference-Header-Content-Length form). */
static int run_oip_json(const uint8_t *d, size_t n, af_out *o, qn_err *err)
{
    size_t jlen = n;
    const char *body = (const char *)d;
    if (n > 4 && memcmp(d, "BIN ", 4) == 0) {
        const uint8_t *nl = memchr(d, '\n', n);
        if (nl) {
            jlen = (size_t)strtoul((const char *)d + 4, NULL, 10);
            body = (const char *)nl + 1;
            n -= (size_t)(nl + 1 - d);
            if (jlen > n)
                jlen = n;
        }
    }
    qn_arena *a = qn_arena_new(0);
    if (!a)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory for the request arena");
    oip_json_req pr;
    memset(&pr, 0, sizeof pr);
    int rc = oip_json_parse_infer(body, n, jlen, a, &pr, err);
    if (rc == 0) {
        hash_str(o, pr.rq.id);
        for (size_t i = 0; i < pr.rq.ninputs; i++)
            hash_tensor(o, &pr.rq.inputs[i]);
        for (size_t i = 0; i < pr.rq.noutputs; i++)
            hash_str(o, pr.rq.outputs[i]);
    }
    oip_json_req_free(&pr);
    qn_arena_free(a);
    return rc;
}

/* OIP gRPC ModelInfer bytes through decode, the test backend and encode. */
static int run_grpc_infer(const uint8_t *d, size_t n, af_out *o, qn_err *err)
{
    static sum_backend sb;
    static int ready;
    if (!ready) {
        sum_backend_init(&sb);
        ready = 1;
    }
    serve__grpc_infer_out out;
    int rc = serve__grpc_infer(&sb.be, d, n, NULL, &out, err);
    if (rc == 0)
        hash(o, out.reply, out.reply_len);
    serve__grpc_infer_out_free(&out);
    return rc;
}

static int run_csv(const uint8_t *d, size_t n, af_out *o, qn_err *err)
{
    /* The dialect byte as fuzz_csv.c reads it. */
    static const char *seps[] = {",", ", ", ";", "\t", "||", "auto", ";", "auto"};
    static const char *na[] = {"?", "NA"};
    static const qml_field_spec fs[] = {{"a", QML_NUMERIC}, {"b", QML_INFER}, {"c", QML_TIMESTAMP}};
    uint8_t sel = n ? d[0] : 0;
    if (n) {
        d++;
        n--;
    }
    qml_csv_opts co;
    qml_csv_opts_init(&co);
    co.sep = seps[sel & 7];
    if ((sel & 7) == 5)
        co.quote = (sel & 16) ? QML_CSV_NO_QUOTE : '"';
    if ((sel & 7) >= 6) {
        co.decimal_comma = 1;
        co.encoding = (sel & 7) == 6 ? "latin-1" : "windows-1252";
        co.quote = (sel & 7) == 7 ? '\'' : '"';
    }
    co.has_header = !(sel & 8);
    co.trim = (sel & 16) != 0;
    co.skip_lines = (sel & 32) ? 1 : 0;
    co.na_values = na;
    co.n_na_values = 2;
    if (sel & 64) {
        co.max_field_bytes = 7;
        co.max_fields = 5;
        co.infer_rows = 2;
    }
    if ((sel & 128) && (sel & 8)) {
        co.fields = fs;
        co.n_fields = 3;
    }
    qml_csv_reader *r = qml_csv_open_mem(d, n, &co, err);
    if (!r)
        return err->code;
    qml_frame *f;
    int rc;
    while ((rc = qml_csv_next(r, 3, &f, err)) > 0) {
        hash_frame(o, f);
        qml_frame_free(f);
    }
    if (rc == 0)
        hash_report(o, qml_csv_report(r));
    qml_csv_close(r);
    return rc;
}

static int run_ndjson(const uint8_t *d, size_t n, af_out *o, qn_err *err)
{
    static const qml_field_spec fs[] = {{"user", QML_CATEGORICAL}, {"n", QML_NUMERIC},
                                        {"t", QML_TIMESTAMP}, {"b", QML_BOOLEAN}};
    uint8_t sel = n ? d[0] : 0;
    if (n) {
        d++;
        n--;
    }
    qml_ndjson_opts no;
    qml_ndjson_opts_init(&no);
    if (sel & 1) {
        no.fields = fs;
        no.n_fields = 4;
        no.fields_only = (sel & 2) != 0;
    }
    if (sel & 4) {
        no.max_line_bytes = 16;
        no.infer_rows = 2;
    }
    qml_ndjson_reader *r = qml_ndjson_open_mem(d, n, &no, err);
    if (!r)
        return err->code;
    qml_frame *f;
    int rc;
    while ((rc = qml_ndjson_next(r, 2, &f, err)) > 0) {
        hash_frame(o, f);
        qml_frame_free(f);
    }
    if (rc == 0)
        hash_report(o, qml_ndjson_report(r));
    qml_ndjson_close(r);
    return rc;
}

static int give_page(void *ud, const char **data, size_t *len)
{
    qn_buf *page = ud;
    if (!page->data)
        return 0;
    *data = page->data;
    *len = page->len;
    page->data = NULL; /* given once; the caller keeps the pointer */
    return 1;
}

/* Column blocks (ml/colblock.h): the input's canonical rows built into
 * blocks of three rows, then the page viewed and every row rendered, then
 * read into a frame by the NDJSON reader's block input. */
static int run_colblock(const uint8_t *d, size_t n, af_out *o, qn_err *err)
{
    qml_rec_opts ro;
    qml_rec_opts_init(&ro);
    qml_rec_batch b;
    qml_rec_batch_init(&b);
    qml_colblock_builder *cb = qml_colblock_builder_new();
    qn_buf page, row;
    qn_buf_init(&page, 1u << 26);
    qn_buf_init(&row, 1u << 24);
    int rc = cb ? 0 : qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    if (rc < 0 || (rc = qml_rec_parse((const char *)d, n, QML_REC_NDJSON, NULL, &ro, &b, err)) < 0)
        goto out;
    for (size_t i = 0; i < b.nrows; i++)
        if ((rc = qml_colblock_add(cb, b.text + b.off[i], b.off[i + 1] - b.off[i], err)) < 0 ||
            (qml_colblock_rows(cb) == 3 && (rc = qml_colblock_finish(cb, &page, err)) < 0))
            goto out;
    if ((rc = qml_colblock_finish(cb, &page, err)) < 0)
        goto out;
    for (size_t at = 0; at < page.len;) {
        qml_colblock v;
        size_t used;
        if ((rc = qml_colblock_view(page.data + at, page.len - at, &v, &used, err)) < 0)
            goto out;
        for (uint32_t r = 0; r < v.nrows && rc == 0; r++) {
            qn_buf_reset(&row);
            if ((rc = qml_colblock_render(&v, r, &row)) < 0)
                qn_err_set(err, rc, "out of memory rendering a row");
            else
                hash(o, row.data, row.len);
        }
        qml_colblock_view_free(&v);
        if (rc < 0)
            goto out;
        at += used;
    }
    qml_ndjson_opts no;
    qml_ndjson_opts_init(&no);
    no.infer_rows = 2;
    qn_buf given = page;
    qml_frame *f;
    qml_read_report rep;
    if ((rc = qml_ndjson_read_all_blocks(give_page, &given, &no, &f, &rep, err)) < 0)
        goto out;
    hash_frame(o, f);
    hash_report(o, &rep);
    qml_frame_free(f);
out:
    qn_buf_free(&row);
    qn_buf_free(&page);
    qml_colblock_builder_free(cb);
    qml_rec_batch_free(&b);
    return rc;
}

/* Ingest's record reader; the schema is parsed inside the run too (it comes
 * from a client's dataset definition). */
static int run_records(const uint8_t *d, size_t n, af_out *o, qn_err *err)
{
    static const char *const docs[2] = {
        "{\"columns\":[{\"name\":\"user\",\"type\":\"categorical\",\"required\":true},"
        "{\"name\":\"n\",\"type\":\"numeric\"},{\"name\":\"t\",\"type\":\"timestamp\"},"
        "{\"name\":\"b\",\"type\":\"boolean\"}],\"additional_columns\":false}",
        "{\"columns\":[{\"name\":\"n\",\"type\":\"numeric\"}]}"};
    uint8_t sel = n ? d[0] : 0;
    if (n) {
        d++;
        n--;
    }
    qml_rec_opts ro;
    qml_rec_opts_init(&ro);
    if (sel & 16) {
        ro.max_rows = 4;
        ro.max_row_bytes = 24;
        ro.max_cols = 3;
        ro.max_errors = 2;
    }
    qml_rec_format fmt = (qml_rec_format)((sel & 3) % 3);
    qml_rec_schema *s = NULL;
    qml_rec_batch b;
    qml_rec_batch_init(&b);
    int rc = 0;
    if (sel & 4) {
        json_t *doc = json_loads(docs[(sel >> 3) & 1], 0, NULL);
        if (!doc) {
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory reading the schema");
            goto out;
        }
        rc = qml_rec_schema_parse(doc, &s, err);
        json_decref(doc);
        if (rc < 0)
            goto out;
    }
    if ((rc = qml_rec_parse((const char *)d, n, fmt, s, &ro, &b, err)) < 0)
        goto out;
    hash_u64(o, b.nrows);
    hash_u64(o, b.nbad);
    if (b.nrows)
        hash(o, b.text, b.off[b.nrows]);
    for (size_t i = 0; i < b.nrows; i++) {
        hash_u64(o, b.off[i + 1]);
        hash_u64(o, b.row[i]);
    }
    for (size_t i = 0; i < b.nerrors; i++) {
        hash_u64(o, b.errors[i].row);
        hash_str(o, b.errors[i].msg);
    }
out:
    qml_rec_batch_free(&b);
    qml_rec_schema_free(s);
    return rc;
}

static int run_manifest(const uint8_t *d, size_t n, af_out *o, qn_err *err)
{
    qml_manifest *m = NULL;
    char *c = NULL;
    size_t cl = 0;
    char digest[QML_DIGEST_STR];
    int rc = qml_manifest_parse(d, n, &m, err);
    if (rc < 0)
        return rc;
    if ((rc = qml_manifest_canonical(m, &c, &cl, err)) < 0)
        goto out;
    hash(o, c, cl);
    if ((rc = qml_manifest_digest(m, digest, err)) < 0)
        goto out;
    hash_str(o, digest);
out:
    free(c);
    qml_manifest_free(m);
    return rc;
}

static int run_npy(const uint8_t *d, size_t n, af_out *o, qn_err *err)
{
    qml_npy a;
    int rc = qml_npy_parse(d, n, "input", &a, err);
    if (rc < 0)
        return rc;
    hash_u64(o, a.dtype);
    hash(o, a.shape, sizeof a.shape);
    hash(o, a.data, (size_t)(a.shape[0] * a.shape[1]) * qml_npy_itemsize(a.dtype));
    qml_npy_release(&a);
    return 0;
}

/* The tree walker's reader of XGBoost's JSON model (it has no qn_err: a
 * refusal only means "use XGBoost's own predictor"). */
static int run_xgb_forest(const uint8_t *d, size_t n, af_out *o, qn_err *err)
{
    qml__forest *f;
    if (qml__forest_parse((const char *)d, n, &f) < 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "forest refused");
    size_t nf = qml__forest_n_features(f), no = qml__forest_n_outputs(f);
    hash_u64(o, nf);
    hash_u64(o, no);
    int rc = 0;
    if (nf <= 4096) {
        float *x = calloc(2 * nf, sizeof *x), *y = calloc(2 * no, sizeof *y);
        if (x && y) {
            for (size_t j = 0; j < nf; j++)
                x[nf + j] = NAN;
            qml__forest_predict(f, x, 2, nf, y);
            hash(o, y, 2 * no * sizeof *y);
        } else {
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory for test rows");
        }
        free(x);
        free(y);
    }
    qml__forest_free(f);
    return rc;
}

static int run_linear_json(const uint8_t *d, size_t n, af_out *o, qn_err *err)
{
    qml_linear *m;
    int rc = qml_linear_from_json((const char *)d, n, &m, err);
    if (rc < 0)
        return rc;
    char *j = qml_linear_to_json(m, err);
    if (!j)
        rc = err->code;
    else
        hash_str(o, j);
    free(j);
    qml_linear_free(m);
    return rc;
}

static int run_transform_json(const uint8_t *d, size_t n, af_out *o, qn_err *err)
{
    qml_features *f;
    int rc = qml_features_from_json((const char *)d, n, &f, err);
    if (rc < 0)
        return rc;
    char *j = qml_features_to_json(f, err);
    if (!j)
        rc = err->code;
    else
        hash_str(o, j);
    free(j);
    qml_features_free(f);
    return rc;
}

static int run_profile_json(const uint8_t *d, size_t n, af_out *o, qn_err *err)
{
    qml_profile *p;
    int rc = qml_profile_from_json((const char *)d, n, &p, err);
    if (rc < 0)
        return rc;
    char *j = qml_profile_to_json(p, err);
    if (!j)
        rc = err->code;
    else
        hash_str(o, j);
    free(j);
    qml_profile_free(p);
    return rc;
}

static int run_clean_json(const uint8_t *d, size_t n, af_out *o, qn_err *err)
{
    qml_clean_steps *s;
    int rc = qml_clean_parse((const char *)d, n, &s, err);
    if (rc < 0)
        return rc;
    hash_u64(o, 1);
    qml_clean_free(s);
    return 0;
}

/* A model bundle directory (d is its path): load, check, predict once. */
static int run_model_load(const uint8_t *d, size_t n, af_out *o, qn_err *err)
{
    char dir[4096];
    if (n >= sizeof dir)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "path too long");
    memcpy(dir, d, n);
    dir[n] = '\0';
    qml_model *m;
    int rc = qml_model_load(dir, NULL, &m, err);
    if (rc < 0)
        return rc;
    hash_str(o, qml_model_kind(m));
    hash_u64(o, qml_model_n_inputs(m));
    hash_u64(o, qml_model_output_width(m));
    rc = qml_model_smoke(m, err);
    qml_model_free(m);
    return rc;
}

/* HTTP request handling in process: a qn_http server on an ephemeral
 * loopback port with two routes that read what services read (path
 * parameter, query, headers, a JSON body through qn_req_json and the
 * json.h accessors) and answer JSON. Each input is a raw request (with
 * Connection: close); the run sends it, reads the whole answer, and waits
 * until the server has freed the request (the worker thread's allocations
 * count as the run's). The result is the status and the body; a status of
 * 400 or more is the run's error, a connection closed without an answer is
 * a failure. */
static int h_item(qn_req *req, qn_res *res, void *ud)
{
    json_t *body = qn_req_json(req, res);
    if (!body)
        return 0;
    static const char *const allowed[] = {"name", "n", "tags", NULL};
    qn_err err;
    const char *name = NULL;
    int64_t n = 0;
    json_t *tags = NULL;
    if (qn_json_only(body, allowed, &err) < 0 || qn_json_str(body, "name", 0, 128, &name, &err) < 0 ||
        qn_json_int(body, "n", 0, 0, 1000, &n, &err) < 0 ||
        qn_json_tags(body, "tags", &tags, &err) < 0)
        return qn_res_error(res, err.code, "%s", err.msg);
    return qn_res_json(res, 201,
                       json_pack("{s:s, s:s?, s:s?, s:I, s:O?}", "item", qn_req_param(req, "name"),
                                 "q", qn_req_query(req, "q"), "name", name, "n", (json_int_t)n,
                                 "tags", tags));
}

static int h_get(qn_req *req, qn_res *res, void *ud)
{
    return qn_res_json(res, 200,
                       json_pack("{s:s, s:s?, s:s?, s:s?}", "item", qn_req_param(req, "name"), "q",
                                 qn_req_query(req, "q"), "x", qn_req_query(req, "x"), "test",
                                 qn_req_header(req, "x-test")));
}

static qn_http *http;

static void http_start(void)
{
    static const qn_route routes[] = {
        {"GET", "/v1/items/{name}", h_get, 0, 0, NULL},
        {"POST", "/v1/items/{name}", h_item, 64 * 1024, 0, NULL},
    };
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0)
        qn_log_set_fd(null);  /* allocation failures are logged; not here */
    qn_http_opts o = {.service = "allocfail", .listen = "127.0.0.1:0", .threads = 1,
                      .routes = routes, .nroutes = 2};
    qn_err err;
    if (!(http = qn_http_start(&o, &err))) {
        fprintf(stderr, "allocfail: qn_http_start: %s\n", err.msg);
        exit(2);
    }
}

static void sleep_ms(int ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

static int run_http(const uint8_t *d, size_t n, af_out *o, qn_err *err)
{
    if (n == 0) /* nothing to send: the server would wait for a request line */
        return qn_err_set(err, QN_INVALID_ARGUMENT, "empty request");
    if (!http)
        http_start();
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return qn_err_set(err, QN_INTERNAL, "socket: %s", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)qn_http_port(http))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    static char ans[256 * 1024];
    size_t len = 0;
    ssize_t k;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return qn_err_set(err, QN_INTERNAL, "connect: %s", strerror(errno));
    }
    for (size_t off = 0; off < n; off += (size_t)k)
        if ((k = send(fd, d + off, n - off, MSG_NOSIGNAL)) <= 0)
            break;
    while (len < sizeof ans - 1 && (k = recv(fd, ans + len, sizeof ans - 1 - len, 0)) > 0)
        len += (size_t)k;
    close(fd);
    ans[len] = '\0';
    /* The worker frees the request after the client has seen the end: wait
     * for it (nothing live, no allocation for a while), 5 s at most. */
    long last = -1;
    for (int i = 0, calm = 0; i < 5000 && calm < 3; i++) {
        long c = failalloc_count();
        calm = failalloc_live() == 0 && c == last ? calm + 1 : 0;
        last = c;
        sleep_ms(1);
    }
    int status = 0;
    const char *body = strstr(ans, "\r\n\r\n");
    if (len < 12 || sscanf(ans, "HTTP/1.%*d %d", &status) != 1 || !body) {
        err->code = QN_UNAVAILABLE;  /* no message: the driver reports it */
        err->msg[0] = '\0';
        return QN_UNAVAILABLE;
    }
    body += 4;
    hash_u64(o, (uint64_t)status);
    hash_str(o, body);
    if (status < 400)
        return 0;
    /* A server fault (5xx, or 429 which this code base gives out-of-memory)
     * or the client's (other 4xx); the error model's shape, checked without
     * allocating (the run's allocations are the server's alone). */
    int rc = status == 429 || status >= 500 ? QN_RESOURCE_EXHAUSTED : QN_INVALID_ARGUMENT;
    qn_err_set(err, rc, "HTTP %d: %.400s", status, body);
    if (strncmp(body, "{\"error\":", 9) != 0)
        err->msg[0] = '\0';  /* not the JSON error model: the driver reports it */
    return rc;
}

/* ---- bundles for the model loader (made unarmed) ---------------------------- */

static uint64_t rng = 12345;
static double unif(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static void must(int rc, const qn_err *err, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "allocfail: setup: %s: %s\n", what, err->msg);
        exit(2);
    }
}

static qml_frame *synth_tabular(int classes)
{
    static const char *cats[] = {"a", "b", "c"};
    qn_err err;
    qml_frame *f = qml_frame_new();
    must(qml_frame_add_column(f, "x", QML_NUMERIC, &err), &err, "column");
    must(qml_frame_add_column(f, "c", QML_CATEGORICAL, &err), &err, "column");
    must(qml_frame_add_column(f, "y", QML_NUMERIC, &err), &err, "column");
    for (int i = 0; i < 200; i++) {
        double x = unif() * 4 - 2;
        int c = (int)(unif() * 3);
        double s = x + (c == 1 ? 1.5 : c == 2 ? -1.5 : 0) + (unif() - 0.5);
        if (i % 17 == 0)
            qml_col_push_missing(qml_frame_col(f, 0));
        else
            qml_col_push_num(qml_frame_col(f, 0), x);
        qml_col_push_str(qml_frame_col(f, 1), cats[c], 1);
        double y = classes == 0 ? 3 * s + 1 : classes == 2 ? (s > 0) : (s < -1 ? 0 : s < 1 ? 1 : 2);
        qml_col_push_num(qml_frame_col(f, 2), y);
        qml_frame_end_row(f);
    }
    return f;
}

static qml_frame *synth_events(void)
{
    qn_err err;
    qml_frame *f = qml_frame_new();
    must(qml_frame_add_column(f, "user", QML_CATEGORICAL, &err), &err, "column");
    must(qml_frame_add_column(f, "item", QML_CATEGORICAL, &err), &err, "column");
    must(qml_frame_add_column(f, "ts", QML_TIMESTAMP, &err), &err, "column");
    char u[16], it[16];
    for (int e = 0; e < 300; e++) {
        int user = (int)(unif() * 20), g = user % 4;
        int item = unif() < 0.85 ? g + 4 * (int)(unif() * 3) : (int)(unif() * 12);
        snprintf(u, sizeof u, "u%d", user);
        snprintf(it, sizeof it, "i%d", item);
        qml_col_push_str(qml_frame_col(f, 0), u, strlen(u));
        qml_col_push_str(qml_frame_col(f, 1), it, strlen(it));
        qml_col_push_num(qml_frame_col(f, 2), 1.3e9 + e);
        qml_frame_end_row(f);
    }
    return f;
}

typedef struct af_input {
    char *name;
    uint8_t *data;
    size_t len;
} af_input;

typedef struct af_inputs {
    af_input *v;
    size_t n, cap;
} af_inputs;

static void add_input(af_inputs *in, const char *name, uint8_t *data, size_t len)
{
    if (in->n == in->cap) {
        in->cap = in->cap ? in->cap * 2 : 64;
        in->v = realloc(in->v, in->cap * sizeof *in->v);
        if (!in->v)
            abort();
    }
    in->v[in->n++] = (af_input){strdup(name), data, len};
}

static void make_bundles(af_inputs *in)
{
    static const struct {
        const char *name, *spec;
        int classes;  /* -1: events (ALS) */
    } kinds[] = {
        {"logistic_binary", "{\"kind\":\"logistic\",\"label\":\"y\"}", 2},
        {"logistic_multi", "{\"kind\":\"logistic\",\"label\":\"y\"}", 3},
        {"xgboost_binary", "{\"kind\":\"xgboost\",\"label\":\"y\",\"params\":{\"num_round\":4,"
                           "\"nthread\":1}}", 2},
        {"xgboost_multi", "{\"kind\":\"xgboost\",\"label\":\"y\",\"params\":{\"num_round\":3,"
                          "\"nthread\":1}}", 3},
        {"linear", "{\"kind\":\"linear\",\"label\":\"y\",\"features\":[{\"column\":\"x\","
                   "\"encode\":\"minmax\"},{\"column\":\"c\",\"encode\":\"hash\",\"buckets\":8}]}", 0},
        {"als", "{\"kind\":\"als\",\"user\":\"user\",\"item\":\"item\",\"time\":\"ts\","
                "\"split\":{\"kind\":\"leave_k_out\",\"k\":1},\"k\":3,"
                "\"params\":{\"factors\":4,\"iterations\":3,\"threads\":1}}", -1},
    };
    const char *work = getenv("QUERN_TEST_WORK");
    if (!work) {
        fputs("allocfail: QUERN_TEST_WORK is not set\n", stderr);
        exit(2);
    }
    char base[4096];
    snprintf(base, sizeof base, "%s/allocfail", work);
    mkdir(base, 0755);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        qn_err err;
        qml_train_spec *spec;
        must(qml_train_spec_from_json(kinds[k].spec, strlen(kinds[k].spec), &spec, &err), &err,
             kinds[k].name);
        qml_frame *f = kinds[k].classes < 0 ? synth_events() : synth_tabular(kinds[k].classes);
        char dir[4200], cmd[4300];
        snprintf(dir, sizeof dir, "%s/%s", base, kinds[k].name);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            exit(2);
        qml_train_result res;
        must(qml_train_run(spec, f, dir, NULL, &res, &err), &err, kinds[k].name);
        qml_train_result_free(&res);
        qml_train_spec_free(spec);
        qml_frame_free(f);
        char *p = strdup(dir);
        add_input(in, kinds[k].name, (uint8_t *)p, strlen(p));
    }
}

/* ---- the table ----------------------------------------------------------- */

typedef struct af_target {
    const char *name;
    af_run_fn run;
    void (*make_inputs)(af_inputs *in);  /* NULL: inputs come from the command line */
    /* 1: a good input failing for memory must say RESOURCE_EXHAUSTED (a
     * client fault code fails the run); 0: only noted. xgb_forest: a
     * refusal has no code, it only means "use XGBoost's predictor". */
    int strict;
} af_target;

static const af_target targets[] = {
    {"json_body", run_json_body, NULL, 1},
    {"cloudevent", run_cloudevent, NULL, 1},
    {"oip_json", run_oip_json, NULL, 1},
    {"grpc_infer", run_grpc_infer, NULL, 1},
    {"csv", run_csv, NULL, 1},
    {"ndjson", run_ndjson, NULL, 1},
    {"records", run_records, NULL, 1},
    {"colblock", run_colblock, NULL, 1},
    {"manifest", run_manifest, NULL, 1},
    {"npy", run_npy, NULL, 1},
    {"xgb_forest", run_xgb_forest, NULL, 0},
    {"linear_json", run_linear_json, NULL, 1},
    {"transform_json", run_transform_json, NULL, 1},
    {"profile_json", run_profile_json, NULL, 1},
    {"clean_json", run_clean_json, NULL, 1},
    {"model_load", run_model_load, make_bundles, 1},
    {"http", run_http, NULL, 1},
};

/* ---- the driver ------------------------------------------------------------ */

static int read_file(af_inputs *in, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t cap = 1 << 16, len = 0, n;
    uint8_t *buf = malloc(cap);
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap && !(buf = realloc(buf, cap *= 2)))
            abort();
    }
    fclose(f);
    /* Exact size, so ASan sees a read one past the end. */
    uint8_t *exact = malloc(len ? len : 1);
    if (!buf || !exact)
        abort();
    memcpy(exact, buf, len);
    free(buf);
    add_input(in, path, exact, len);
    return 0;
}

static int cmp_input(const void *a, const void *b)
{
    return strcmp(((const af_input *)a)->name, ((const af_input *)b)->name);
}

static int read_inputs(af_inputs *in, const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return read_file(in, path);
    struct dirent *e;
    size_t first = in->n;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        if (read_file(in, p) < 0) {
            closedir(d);
            return -1;
        }
    }
    closedir(d);
    qsort(in->v + first, in->n - first, sizeof *in->v, cmp_input);
    return 0;
}

static long env_long(const char *name, long def)
{
    const char *s = getenv(name);
    return s && *s ? strtol(s, NULL, 10) : def;
}

typedef struct af_totals {
    long runs, injected, errors, absorbed, failures, misfiled;
} af_totals;

static int verbose;

static int cur_persist;

static void fail_run(af_totals *t, const af_target *tg, const af_input *in, long n,
                     const char *what)
{
    t->failures++;
    fprintf(stderr, "FAIL %s %s: allocation %ld%s failed: %s\n", tg->name, in->name, n,
            cur_persist ? " and all later" : "", what);
}

/* One run with allocation n failed (0: none). */
static int one(const af_target *tg, const af_input *in, long n, int persist, af_out *o,
               qn_err *err, failalloc_stats *st)
{
    o->h = 0xcbf29ce484222325ULL;
    qn_err_clear(err);
    failalloc_arm_mode(n, persist);
    int rc = tg->run(in->data, in->len, o, err);
    *st = failalloc_disarm();
    return rc;
}

static void run_input(const af_target *tg, const af_input *in, af_totals *t)
{
    af_out base, o;
    qn_err err;
    failalloc_stats st;
    o.h = 0;
    qn_err_clear(&err);
    (void)tg->run(in->data, in->len, &o, &err);  /* unarmed: lazy statics settle */
    int brc = one(tg, in, 0, 0, &base, &err, &st);
    if (st.live) {
        fail_run(t, tg, in, 0, "the successful run leaked");
        return;
    }
    cur_persist = 0;
    long k = st.count, every = env_long("QUERN_ALLOCFAIL_EVERY", 2000),
         tail = env_long("QUERN_ALLOCFAIL_TAIL", 400);
    long stride = k > every && tail > 0 ? (k - every + tail - 1) / tail : 1;
    if (verbose)
        printf("%s %s: K=%ld rc=%d\n", tg->name, in->name, k, brc);
    long only = env_long("QUERN_ALLOCFAIL_ONLY", 0);  /* debugging: this n alone */
    for (long i = 0; i < 2 * k; i++) {
        /* each n twice: that allocation alone fails, then it and all later */
        long n = 1 + i / 2;
        int persist = (int)(i & 1);
        if (n > every && (n - every) % stride != 0)
            continue;
        if (only && n != only)
            continue;
        cur_persist = persist;
        int rc = one(tg, in, n, persist, &o, &err, &st);
        t->runs++;
        char why[700];
        if (st.live) {
            snprintf(why, sizeof why, "%ld blocks still live after the run (rc %d)", st.live, rc);
            fail_run(t, tg, in, n, why);
            continue;
        }
        if (!st.injected)
            continue;  /* this run took another path with fewer allocations */
        t->injected++;
        if (rc < 0) {
            t->errors++;
            if (err.code != rc || !err.msg[0]) {
                snprintf(why, sizeof why, "returned %d with err {%d, \"%s\"}", rc, err.code,
                         err.msg);
                fail_run(t, tg, in, n, why);
            } else if (brc == 0 && rc != QN_RESOURCE_EXHAUSTED) {
                /* an input that is fine, refused as if the client were at fault */
                t->misfiled++;
                if (tg->strict) {
                    snprintf(why, sizeof why, "a good input refused as %s, not as "
                             "resource_exhausted: %s", qn_code_name(rc), err.msg);
                    fail_run(t, tg, in, n, why);
                } else if (verbose || t->misfiled <= 5)
                    fprintf(stderr, "note %s %s: allocation %ld%s failed: reported as %s: %s\n",
                            tg->name, in->name, n, persist ? " and all later" : "",
                            qn_code_name(rc), err.msg);
            }
        } else if (rc > 0) {
            snprintf(why, sizeof why, "returned %d", rc);
            fail_run(t, tg, in, n, why);
        } else if (brc != 0 || o.h != base.h) {
            t->absorbed++;
            snprintf(why, sizeof why, "succeeded with a result other than the baseline's "
                                      "(baseline rc %d)", brc);
            fail_run(t, tg, in, n, why);
        } else {
            t->absorbed++;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs("usage: allocfail TARGET [FILE|DIR]...\n", stderr);
        return 2;
    }
    verbose = getenv("QUERN_ALLOCFAIL_VERBOSE") != NULL;
    const af_target *tg = NULL;
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++)
        if (strcmp(targets[i].name, argv[1]) == 0)
            tg = &targets[i];
    if (!tg) {
        fprintf(stderr, "allocfail: unknown target %s\n", argv[1]);
        return 2;
    }
    failalloc_init();
    af_inputs in = {0};
    if (tg->make_inputs)
        tg->make_inputs(&in);
    for (int i = 2; i < argc; i++)
        if (read_inputs(&in, argv[i]) < 0)
            return 2;
    /* An empty input always runs. */
    add_input(&in, "(empty)", (uint8_t *)strdup(""), 0);
    af_totals t = {0};
    for (size_t i = 0; i < in.n; i++)
        run_input(tg, &in.v[i], &t);
    printf("allocfail %s: %zu inputs, %ld runs, %ld allocation failures injected: %ld clean "
           "errors (%ld reported as the client's fault), %ld absorbed; %ld FAILED\n",
           tg->name, in.n, t.runs, t.injected, t.errors, t.misfiled, t.absorbed, t.failures);
    for (size_t i = 0; i < in.n; i++) {
        free(in.v[i].name);
        free(in.v[i].data);
    }
    free(in.v);
    if (http)
        qn_http_stop(http);
    if (t.injected == 0) { /* a test that injected nothing proved nothing */
        fprintf(stderr, "allocfail %s: no allocation was failed (is the allocator wrapped?)\n",
                tg->name);
        return 1;
    }
    return t.failures ? 1 : 0;
}
