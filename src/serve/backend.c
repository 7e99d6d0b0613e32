/*
 * backend.c - the oip_backend of quern-serve: what both protocol fronts
 * (rest.c and grpc_server.c) call, so REST and gRPC answer the same way.
 *
 * An infer request is checked against the served version's declared inputs
 * (every input present once, nothing unexpected, datatype and shape fitting,
 * the data length matching the shape, one batch size across inputs, text
 * valid UTF-8), converted to libquern-ml's raw named columns (numbers as
 * doubles, BYTES as strings), and predicted with the version's fitted
 * transforms, so clients send features as they are. A tabular model whose
 * inputs are all numbers also takes one 2-D tensor [N, F] (FP32 or FP64,
 * features in the model's input order) as Triton's FIL backend and MLServer
 * do: named SERVE_TENSOR_INPUT, or any name that is no column's when it is
 * the request's only input and has two or more dimensions. Both forms give
 * the same doubles to the model, so the same predictions. ALS models take
 * "user_id" (or "item_id" for similar items) and answer "item_id", "score"
 * and "fallback". Every error names the input at fault.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/trace.h"
#include "core/utf8.h"
#include "serve/serve.h"

static const char *const extensions[] = {"model_repository_metadata_none", "binary_tensor_data",
                                          "parameters", "quern_recommend"};

/* ---- helpers ---------------------------------------------------------------- */

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3FF) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Element i of a fixed-size tensor as a double. */
static double elem_double(oip_datatype dt, const uint8_t *p, size_t i)
{
    switch (dt) {
#define RD(T)                                  \
    {                                          \
        T x;                                   \
        memcpy(&x, p + i * sizeof x, sizeof x); \
        return (double)x;                      \
    }
    case OIP_BOOL: return p[i] ? 1.0 : 0.0;
    case OIP_UINT8: RD(uint8_t)
    case OIP_UINT16: RD(uint16_t)
    case OIP_UINT32: RD(uint32_t)
    case OIP_UINT64: RD(uint64_t)
    case OIP_INT8: RD(int8_t)
    case OIP_INT16: RD(int16_t)
    case OIP_INT32: RD(int32_t)
    case OIP_INT64: RD(int64_t)
    case OIP_FP32: RD(float)
    case OIP_FP64: RD(double)
#undef RD
    case OIP_FP16: {
        uint16_t h;
        memcpy(&h, p + i * 2, 2);
        return half_to_float(h);
    }
    default: return NAN;
    }
}

static void shape_text(int ndim, const int64_t *shape, char *out, size_t cap)
{
    size_t o = 0;
    o += (size_t)snprintf(out + o, cap - o, "[");
    for (int d = 0; d < ndim && o < cap; d++)
        o += (size_t)snprintf(out + o, cap - o, "%s%lld", d ? "," : "", (long long)shape[d]);
    if (o < cap)
        snprintf(out + o, cap - o, "]");
}

static const oip_tensor *find_input(const oip_infer_request *rq, const char *name)
{
    for (size_t i = 0; i < rq->ninputs; i++)
        if (rq->inputs[i].name && strcmp(rq->inputs[i].name, name) == 0)
            return &rq->inputs[i];
    return NULL;
}

static void names_list(const oip_tensor_meta *ms, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && o + 1 < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? ", " : "", ms[i].name);
}

/* Checks that every request input is a model input, once. */
static int check_input_names(const serve_version *v, const oip_infer_request *rq, qn_err *err)
{
    char list[256];
    for (size_t i = 0; i < rq->ninputs; i++) {
        const char *name = rq->inputs[i].name ? rq->inputs[i].name : "";
        size_t j;
        for (j = 0; j < v->ninputs; j++)
            if (strcmp(v->inputs[j].name, name) == 0)
                break;
        if (j == v->ninputs) {
            names_list(v->inputs, v->ninputs, list, sizeof list);
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "unexpected input '%s': the model's inputs are %s", name, list);
        }
        for (size_t k = 0; k < i; k++)
            if (rq->inputs[k].name && strcmp(rq->inputs[k].name, name) == 0)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "input '%s' is given twice", name);
    }
    return 0;
}

/* Checks the tensor's shape against the declared one and its data length
 * against the shape; *rows gets the batch size. */
static int check_tensor(const oip_tensor_meta *want, const oip_tensor *t, int64_t *rows,
                        qn_err *err)
{
    /* The shapes are formatted only for an error: snprintf per request
     * was a twentieth of a one-row prediction's instructions. */
    char got[96], decl[96];
#define SHAPES()                                          \
    (shape_text(t->ndim, t->shape, got, sizeof got),      \
     shape_text(want->ndim, want->shape, decl, sizeof decl))
    if (t->datatype == OIP_INVALID)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "input '%s': unknown datatype", t->name);
    int want_bytes = want->datatype == OIP_BYTES, got_bytes = t->datatype == OIP_BYTES;
    if (want_bytes != got_bytes)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input '%s': datatype %s does not fit the model's %s input (%s)",
                          t->name, oip_datatype_name(t->datatype),
                          oip_datatype_name(want->datatype),
                          want_bytes ? "send BYTES strings" : "send numbers");
    /* [n] and [n,1] both fit a declared [-1]. */
    int ok = t->ndim >= 1 && t->shape[0] >= 0;
    if (ok && want->ndim == 1 && t->ndim == 2)
        ok = t->shape[1] == 1;
    else if (ok)
        ok = t->ndim == want->ndim;
    for (int d = 0; ok && d < want->ndim && d < t->ndim; d++)
        if (t->shape[d] < 0 || (want->shape[d] >= 0 && want->shape[d] != t->shape[d]))
            ok = 0;
    if (!ok)
        return SHAPES(), qn_err_set(err, QN_INVALID_ARGUMENT,
                                    "input '%s': shape %s does not fit the model's shape %s",
                                    t->name, got, decl);
    int64_t nelem = oip_tensor_nelem(t);
    if (nelem < 0)
        return SHAPES(), qn_err_set(err, QN_INVALID_ARGUMENT, "input '%s': shape %s is too large",
                                    t->name, got);
    if (nelem != t->shape[0])
        return SHAPES(), qn_err_set(err, QN_INVALID_ARGUMENT,
                                    "input '%s': shape %s: the model takes one value per row",
                                    t->name, got);
    if (got_bytes) {
        if ((int64_t)t->nbytes != nelem)
            return SHAPES(), qn_err_set(err, QN_INVALID_ARGUMENT,
                                        "input '%s': shape %s holds %lld elements but the data "
                                        "has %zu",
                                        t->name, got, (long long)nelem, t->nbytes);
        for (size_t i = 0; i < t->nbytes; i++)
            if (!qn_utf8_valid((const char *)t->bytes[i].p, t->bytes[i].len))
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "input '%s', element %zu: not valid UTF-8 text", t->name, i);
    } else {
        size_t sz = oip_datatype_size(t->datatype);
        if (t->data_len != (size_t)nelem * sz)
            return SHAPES(), qn_err_set(err, QN_INVALID_ARGUMENT,
                                        "input '%s': shape %s holds %lld elements but the data "
                                        "has %zu",
                                        t->name, got, (long long)nelem,
                                        t->data_len / (sz ? sz : 1));
    }
#undef SHAPES
    *rows = t->shape[0];
    return 0;
}

static int want_output(const oip_infer_request *rq, const char *name)
{
    if (!rq->noutputs)
        return 1;
    for (size_t i = 0; i < rq->noutputs; i++)
        if (strcmp(rq->outputs[i], name) == 0)
            return 1;
    return 0;
}

static int check_outputs(const oip_tensor_meta *outs, size_t nouts, const char *extra,
                         const oip_infer_request *rq, qn_err *err)
{
    for (size_t i = 0; i < rq->noutputs; i++) {
        size_t j;
        for (j = 0; j < nouts; j++)
            if (strcmp(outs[j].name, rq->outputs[i]) == 0)
                break;
        if (j == nouts && !(extra && strcmp(extra, rq->outputs[i]) == 0)) {
            char list[256];
            names_list(outs, nouts, list, sizeof list);
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "unknown output '%s': the model's outputs are %s", rq->outputs[i],
                              list);
        }
    }
    return 0;
}

static oip_output *add_output(oip_infer_response *rs, const char *name, oip_datatype dt)
{
    oip_output *o = &rs->outputs[rs->noutputs];
    memset(o, 0, sizeof *o);
    o->name = strdup(name);
    o->datatype = dt;
    if (!o->name)
        return NULL;
    rs->noutputs++;
    return o;
}

static int oom(qn_err *err)
{
    return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
}

/* ---- prediction logging ---------------------------------------------------- */

/* The id a logged prediction goes under: lc's, the request's, or rid (made). */
static const char *log_id(const serve_logctx *lc, const oip_infer_request *rq, char rid[QN_UUID_LEN + 1])
{
    if (lc && lc->rid && *lc->rid)
        return lc->rid;
    if (rq->id && *rq->id)
        return rq->id;
    qn_uuid4(rid);
    return rid;
}

/* Monotonic microseconds, for a request's serving latency. */
static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The latency_us to log for an answer whose work began at t0: the caller's,
 * measured now; for a shadowed request (off) it is only stored, for the
 * shadow worker to log with the primary side; a shadow worker's rerun
 * (force) logs the one it was handed (none for the shadow side). Measured at
 * the same point with or without a shadow: after the outputs are built,
 * before any logging work. */
static int64_t log_latency(const serve_logctx *lc, int64_t t0)
{
    if (lc && lc->force)
        return lc->latency_us && *lc->latency_us >= 0 ? *lc->latency_us : -1;
    int64_t took = mono_us() - t0;
    if (lc && lc->off && lc->latency_us)
        *lc->latency_us = took;
    return took;
}

static void log_tabular(serve *s, serve_model *m, serve_version *v, const oip_infer_request *rq,
                        const qml_input_batch *b, const float *out, size_t w, const serve_logctx *lc,
                        int64_t t0)
{
    int64_t latency_us = log_latency(lc, t0);
    if (!s->predlog || (lc && lc->off) || (!(lc && lc->force) && !serve_predlog_sample(m->sample_rate)))
        return;
    char rid[QN_UUID_LEN + 1];
    const char *id = log_id(lc, rq, rid);
    size_t n = b->n_rows < 16 ? b->n_rows : 16; /* a sampled request logs at most 16 rows */
    for (size_t r = 0; r < n; r++) {
        json_t *f = json_object();
        for (size_t c = 0; c < b->n_cols && f; c++) {
            const qml_input_col *col = &b->cols[c];
            json_t *val;
            if (col->type == QML_INPUT_NUM)
                val = isfinite(col->num[r]) ? json_real(col->num[r]) : json_null();
            else
                val = col->str[r].ptr ? json_stringn(col->str[r].ptr, col->str[r].len)
                                      : json_null();
            json_object_set_new(f, col->name, val ? val : json_null());
        }
        json_t *p;
        if (w == 1) {
            p = json_real(out[r]);
        } else {
            p = json_array();
            for (size_t k = 0; k < w && p; k++)
                json_array_append_new(p, json_real(out[r * w + k]));
        }
        serve_predlog_add_role(s->predlog, m->name, v->vstr, lc ? lc->alias : NULL, lc ? lc->role : NULL, id,
                               latency_us, f, p);
    }
}

/* ---- tabular models ------------------------------------------------------------ */

int serve_predict(serve_model *m, serve_version *v, const qml_input_batch *b, float *out,
                  qn_err *err)
{
    if (m->batcher)
        return serve_batcher_predict(m->batcher, v, b, out, err);
    return qml_model_predict(v->model, b, out, err);
}

/* 1 when the request names exactly the model's inputs in the model's order
 * (what clients built from the metadata send): then every input is present
 * once and nothing is unexpected without the pairwise name checks. */
static int inputs_in_order(const serve_version *v, const oip_infer_request *rq)
{
    if (rq->ninputs != v->ninputs)
        return 0;
    for (size_t i = 0; i < v->ninputs; i++)
        if (!rq->inputs[i].name || strcmp(rq->inputs[i].name, v->inputs[i].name) != 0)
            return 0;
    return 1;
}

/* The request's 2-D feature tensor, or NULL for the per-column form: an
 * input named SERVE_TENSOR_INPUT (when no column has that name), or, for a
 * model of numeric inputs only, a sole input of two or more dimensions named
 * after no column ([n,1] with more than one feature is left to the column
 * checks: most likely a misspelt column, which they name). */
static const oip_tensor *tensor_input(const serve_version *v, const oip_infer_request *rq)
{
    if (!v->tensor_col) {
        const oip_tensor *t = find_input(rq, SERVE_TENSOR_INPUT);
        if (t)
            return t;
    }
    if (!v->numeric || rq->ninputs != 1)
        return NULL;
    const oip_tensor *t = &rq->inputs[0];
    if (t->ndim < 2 || !t->name || (t->ndim == 2 && t->shape[1] == 1 && v->ninputs != 1))
        return NULL;
    for (size_t j = 0; j < v->ninputs; j++)
        if (strcmp(v->inputs[j].name, t->name) == 0)
            return NULL;
    return t;
}

/* Checks the 2-D form against the model: alone, numbers only, FP32/FP64,
 * shape [N, F], data length; *rows gets N. */
static int check_tensor2d(const serve_version *v, const oip_infer_request *rq,
                          const oip_tensor *t, int64_t *rows, qn_err *err)
{
    char got[96], list[256];
    size_t f = v->ninputs;
    if (rq->ninputs != 1) {
        const char *other = rq->inputs[0].name && &rq->inputs[0] != t ? rq->inputs[0].name
                                                                       : rq->inputs[1].name;
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input '%s' is the whole feature matrix [N, %zu]; send it alone, not "
                          "with input '%s'",
                          t->name, f, other ? other : "");
    }
    if (!v->numeric) {
        for (size_t j = 0; j < f; j++)
            if (v->inputs[j].datatype == OIP_BYTES)
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "input '%s': this model cannot take one 2-D tensor because its "
                                  "input '%s' is BYTES (text); send one input per column",
                                  t->name, v->inputs[j].name);
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input '%s': this model cannot take one 2-D tensor; send one input "
                          "per column",
                          t->name);
    }
    if (t->datatype != OIP_FP32 && t->datatype != OIP_FP64)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input '%s': datatype %s; the 2-D feature tensor is FP32 or FP64",
                          t->name, t->datatype == OIP_INVALID ? "unknown"
                                                              : oip_datatype_name(t->datatype));
    if (t->ndim != 2 || t->shape[0] < 0 || t->shape[1] != (int64_t)f) {
        shape_text(t->ndim, t->shape, got, sizeof got);
        names_list(v->inputs, f, list, sizeof list);
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input '%s': shape %s does not fit the model's 2-D shape [N, %zu] "
                          "(N rows of the %zu features %s, in that order)",
                          t->name, got, f, f, list);
    }
    int64_t nelem = oip_tensor_nelem(t);
    if (nelem < 0) {
        shape_text(t->ndim, t->shape, got, sizeof got);
        return qn_err_set(err, QN_INVALID_ARGUMENT, "input '%s': shape %s is too large", t->name,
                          got);
    }
    size_t sz = oip_datatype_size(t->datatype);
    if (t->data_len != (size_t)nelem * sz) {
        shape_text(t->ndim, t->shape, got, sizeof got);
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input '%s': shape %s holds %lld elements but the data has %zu", t->name,
                          got, (long long)nelem, t->data_len / sz);
    }
    *rows = t->shape[0];
    return 0;
}

void serve_rows_free(serve_rows *r)
{
    free(r->data);
    free(r->cols);
    memset(r, 0, sizeof *r);
}

int serve_rows_read(serve *s, serve_version *v, const oip_infer_request *rq, size_t out_width,
                    serve_rows *sr, qn_err *err)
{
    int rc;
    int64_t rows = -1;
    const char *rows_from = NULL;
    size_t ni = v->ninputs ? v->ninputs : 1;
    /* Two allocations per request: the columns with the tensors they come
     * from, then (once the row count is known) every converted column and
     * the model's output. */
    qml_input_col *cols = calloc(ni, sizeof *cols + sizeof(const oip_tensor *));
    const oip_tensor **ts = (const oip_tensor **)(void *)(cols + ni);
    unsigned char *data = NULL;
    if (!cols)
        return oom(err);
    memset(sr, 0, sizeof *sr);
    const oip_tensor *t2 = tensor_input(v, rq);
    int in_order = !t2 && inputs_in_order(v, rq);
    if (!t2 && !in_order && (rc = check_input_names(v, rq, err)) < 0)
        goto out;
    if (t2) {
        if ((rc = check_tensor2d(v, rq, t2, &rows, err)) < 0)
            goto out;
        if (rows > s->cfg->max_rows) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                            "input '%s': %lld rows; a request holds at most %lld", t2->name,
                            (long long)rows, s->cfg->max_rows);
            goto out;
        }
    }
    for (size_t i = 0; !t2 && i < v->ninputs; i++) {
        const oip_tensor_meta *want = &v->inputs[i];
        const oip_tensor *t = in_order ? &rq->inputs[i] : find_input(rq, want->name);
        if (!t) {
            char decl[96];
            shape_text(want->ndim, want->shape, decl, sizeof decl);
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "missing input '%s' (%s, shape %s)",
                            want->name, oip_datatype_name(want->datatype), decl);
            goto out;
        }
        int64_t n;
        if ((rc = check_tensor(want, t, &n, err)) < 0)
            goto out;
        if (rows >= 0 && n != rows) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                            "input '%s' has %lld rows but input '%s' has %lld", t->name,
                            (long long)n, rows_from, (long long)rows);
            goto out;
        }
        rows = n;
        rows_from = t->name;
        if (rows > s->cfg->max_rows) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                            "input '%s': %lld rows; a request holds at most %lld", t->name,
                            (long long)rows, s->cfg->max_rows);
            goto out;
        }
        ts[i] = t;
    }
    if (rows < 0)
        rows = 0;
    size_t w = out_width, nr = (size_t)(rows ? rows : 1);
    size_t col_bytes = nr * (sizeof(qml_str) > sizeof(double) ? sizeof(qml_str) : sizeof(double));
    if (!(data = malloc(v->ninputs * col_bytes + nr * (w ? w : 1) * sizeof(float)))) {
        rc = oom(err);
        goto out;
    }
    sr->out = (float *)(void *)(data + v->ninputs * col_bytes);
    for (size_t i = 0; i < v->ninputs; i++) {
        const oip_tensor *t = ts[i];
        void *buf = data + i * col_bytes;
        cols[i].name = v->inputs[i].name;
        if (t2) { /* column i of the row-major [rows, ninputs] matrix */
            double *num = buf;
            size_t f = v->ninputs;
            if (t2->datatype == OIP_FP64) {
                for (int64_t r = 0; r < rows; r++)
                    memcpy(&num[r], (const uint8_t *)t2->data + ((size_t)r * f + i) * 8, 8);
            } else {
                for (int64_t r = 0; r < rows; r++) {
                    float x;
                    memcpy(&x, (const uint8_t *)t2->data + ((size_t)r * f + i) * 4, 4);
                    num[r] = x;
                }
            }
            cols[i].type = QML_INPUT_NUM;
            cols[i].num = num;
        } else if (t->datatype == OIP_BYTES) {
            qml_str *str = buf;
            for (int64_t r = 0; r < rows; r++)
                str[r] = (qml_str){(const char *)t->bytes[r].p, t->bytes[r].len};
            cols[i].type = QML_INPUT_STR;
            cols[i].str = str;
        } else if (t->datatype == OIP_FP64 && ((uintptr_t)t->data & (sizeof(double) - 1)) == 0) {
            cols[i].type = QML_INPUT_NUM; /* already doubles: no copy */
            cols[i].num = t->data;
        } else {
            double *num = buf;
            for (int64_t r = 0; r < rows; r++)
                num[r] = elem_double(t->datatype, t->data, (size_t)r);
            cols[i].type = QML_INPUT_NUM;
            cols[i].num = num;
        }
    }
    sr->b = (qml_input_batch){.n_rows = (size_t)rows, .n_cols = v->ninputs, .cols = cols};
    sr->cols = cols;
    sr->data = data;
    return 0;
out:
    free(data);
    free(cols);
    return rc;
}

static int infer_tabular(serve *s, serve_model *m, serve_version *v, const oip_infer_request *rq,
                         oip_infer_response *rs, const serve_logctx *lc, qn_err *err)
{
    int64_t t0 = mono_us();
    serve_rows rr;
    size_t w = qml_model_output_width(v->model);
    int rc = check_outputs(v->outputs, v->noutputs, NULL, rq, err);
    if (rc < 0 || (rc = serve_rows_read(s, v, rq, w, &rr, err)) < 0)
        return rc;
    const qml_input_batch b = rr.b;
    int64_t rows = (int64_t)b.n_rows;
    float *out = rr.out;
    if ((rc = serve_predict(m, v, &b, out, err)) < 0)
        goto out;

    rs->outputs = calloc(v->noutputs ? v->noutputs : 1, sizeof *rs->outputs);
    if (!rs->outputs) {
        rc = oom(err);
        goto out;
    }
    for (size_t j = 0; j < v->noutputs; j++) {
        const oip_tensor_meta *om = &v->outputs[j];
        size_t ow = om->ndim >= 2 && om->shape[1] > 0 ? (size_t)om->shape[1] : 1;
        if (!want_output(rq, om->name) || ow != w)
            continue;
        int fp64 = om->datatype == OIP_FP64;
        oip_output *o = add_output(rs, om->name, fp64 ? OIP_FP64 : OIP_FP32);
        if (!o) {
            rc = oom(err);
            goto out;
        }
        o->ndim = om->ndim >= 2 ? 2 : 1;
        o->shape[0] = rows;
        o->shape[1] = (int64_t)w;
        o->data_len = (size_t)rows * w * (fp64 ? sizeof(double) : sizeof(float));
        if (!(o->data = malloc(o->data_len ? o->data_len : 1))) {
            rc = oom(err);
            goto out;
        }
        if (fp64) {
            for (size_t k = 0; k < (size_t)rows * w; k++)
                ((double *)o->data)[k] = out[k];
        } else {
            memcpy(o->data, out, o->data_len);
        }
    }
    log_tabular(s, m, v, rq, &b, out, w, lc, t0);
out:
    serve_rows_free(&rr);
    return rc;
}

/* ---- ALS ------------------------------------------------------------------------- */

static int param_int(const json_t *params, const char *name, int def, int lo, int hi, int *out,
                     qn_err *err)
{
    const json_t *p = params ? json_object_get(params, name) : NULL;
    *out = def;
    if (!p)
        return 0;
    if (json_is_string(p)) { /* some clients send every parameter as text */
        char *end;
        long long x = strtoll(json_string_value(p), &end, 10);
        if (*end || end == json_string_value(p) || x < lo || x > hi)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "parameter %s must be an integer in [%d, %d]", name, lo, hi);
        *out = (int)x;
        return 0;
    }
    if (!json_is_integer(p) || json_integer_value(p) < lo || json_integer_value(p) > hi)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "parameter %s must be an integer in [%d, %d]",
                          name, lo, hi);
    *out = (int)json_integer_value(p);
    return 0;
}

static int param_bool(const json_t *params, const char *name, int def, int *out, qn_err *err)
{
    const json_t *p = params ? json_object_get(params, name) : NULL;
    *out = def;
    if (!p)
        return 0;
    if (json_is_boolean(p)) {
        *out = json_is_true(p);
        return 0;
    }
    if (json_is_string(p) && (!strcmp(json_string_value(p), "true") ||
                              !strcmp(json_string_value(p), "false"))) {
        *out = !strcmp(json_string_value(p), "true");
        return 0;
    }
    return qn_err_set(err, QN_INVALID_ARGUMENT, "parameter %s must be true or false", name);
}

#define SERVE_MAX_K 1000
#define SERVE_MAX_REC_ROWS 1000

static int infer_als(serve *s, serve_model *m, serve_version *v, const oip_infer_request *rq,
                     oip_infer_response *rs, const serve_logctx *lc, qn_err *err)
{
    int64_t t0 = mono_us();
    const oip_tensor *t = find_input(rq, "user_id");
    int similar = 0, rc, k, exclude;
    if (!t && (t = find_input(rq, "item_id")))
        similar = 1;
    if (!t)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "missing input 'user_id' (BYTES, shape [-1]); or 'item_id' for "
                          "similar items");
    if (rq->ninputs != 1)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "a recommender takes one input, 'user_id' or 'item_id'; got %zu",
                          rq->ninputs);
    static const oip_tensor_meta ids = {"user_id", OIP_BYTES, 1, {-1}};
    oip_tensor_meta want = ids;
    want.name = t->name;
    int64_t n;
    if ((rc = check_tensor(&want, t, &n, err)) < 0)
        return rc;
    if (n > SERVE_MAX_REC_ROWS)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "input '%s': %lld rows; at most %d", t->name,
                          (long long)n, SERVE_MAX_REC_ROWS);
    if ((rc = param_int(rq->parameters, "k", v->k, 1, SERVE_MAX_K, &k, err)) < 0 ||
        (rc = param_bool(rq->parameters, "exclude_seen", 0, &exclude, err)) < 0 ||
        (rc = check_outputs(v->outputs, v->noutputs, "fallback", rq, err)) < 0)
        return rc;
    if (similar && exclude) /* refused, as GET .../similar does, rather than ignored */
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "parameter exclude_seen applies to 'user_id' (recommendations), not "
                          "to 'item_id' (similar items)");

    qml_model_rec *recs = calloc((size_t)(n ? n : 1) * (size_t)k, sizeof *recs);
    int *counts = calloc((size_t)(n ? n : 1), sizeof *counts);
    int *fb = calloc((size_t)(n ? n : 1), sizeof *fb);
    char *id = NULL;
    if (!recs || !counts || !fb) {
        rc = oom(err);
        goto out;
    }
    int kmax = 0;
    for (int64_t r = 0; r < n; r++) {
        free(id);
        if (!(id = strndup((const char *)t->bytes[r].p, t->bytes[r].len))) {
            rc = oom(err);
            goto out;
        }
        if (strlen(id) != t->bytes[r].len) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "input '%s', element %lld holds a NUL byte",
                            t->name, (long long)r);
            goto out;
        }
        int got = similar ? qml_model_similar(v->model, id, k, recs + r * k, err)
                          : qml_model_recommend(v->model, id, k, exclude, recs + r * k, &fb[r],
                                                err);
        if (got < 0) {
            rc = got;
            if (got == QN_NOT_FOUND)
                qn_err_wrap(err, "input '%s', element %lld", t->name, (long long)r);
            goto out;
        }
        counts[r] = got;
        if (got > kmax)
            kmax = got;
    }
    /* Rows with fewer than kmax results (a small catalogue, seen items
     * excluded) are padded with "" and score 0 to keep the tensor rectangular. */
    rs->outputs = calloc(3, sizeof *rs->outputs);
    if (!rs->outputs) {
        rc = oom(err);
        goto out;
    }
    size_t total = (size_t)n * (size_t)kmax;
    if (want_output(rq, "item_id")) {
        oip_output *o = add_output(rs, "item_id", OIP_BYTES);
        if (!o || !(o->bytes = calloc(total ? total : 1, sizeof *o->bytes))) {
            rc = oom(err);
            goto out;
        }
        o->ndim = 2;
        o->shape[0] = n;
        o->shape[1] = kmax;
        for (int64_t r = 0; r < n; r++)
            for (int j = 0; j < kmax; j++) {
                const char *it = j < counts[r] ? recs[r * k + j].item_id : "";
                size_t len = strlen(it);
                uint8_t *c = malloc(len ? len : 1);
                if (!c) {
                    rc = oom(err);
                    goto out;
                }
                memcpy(c, it, len);
                o->bytes[o->nbytes++] = (oip_bytes){c, len};
            }
    }
    if (want_output(rq, "score")) {
        oip_output *o = add_output(rs, "score", OIP_FP32);
        if (!o || !(o->data = calloc(total ? total : 1, sizeof(float)))) {
            rc = oom(err);
            goto out;
        }
        o->ndim = 2;
        o->shape[0] = n;
        o->shape[1] = kmax;
        o->data_len = total * sizeof(float);
        for (int64_t r = 0; r < n; r++)
            for (int j = 0; j < counts[r]; j++)
                ((float *)o->data)[r * kmax + j] = recs[r * k + j].score;
    }
    if (want_output(rq, "fallback")) {
        oip_output *o = add_output(rs, "fallback", OIP_BOOL);
        if (!o || !(o->data = calloc((size_t)(n ? n : 1), 1))) {
            rc = oom(err);
            goto out;
        }
        o->ndim = 1;
        o->shape[0] = n;
        o->data_len = (size_t)n;
        for (int64_t r = 0; r < n; r++)
            ((uint8_t *)o->data)[r] = (uint8_t)(fb[r] != 0);
    }
    int64_t latency_us = log_latency(lc, t0);
    if (s->predlog && n > 0 && !(lc && lc->off) && ((lc && lc->force) || serve_predlog_sample(m->sample_rate))) {
        char rid[QN_UUID_LEN + 1];
        const char *lid = log_id(lc, rq, rid);
        json_t *items = json_array();
        for (int j = 0; j < counts[0] && items; j++)
            json_array_append_new(items, json_string(recs[j].item_id));
        json_t *features = json_pack("{s:s%}", t->name, (const char *)t->bytes[0].p,
                                     t->bytes[0].len);
        /* What the monitor compares with the version's profile: the user's
         * training activity and the popularity of what was served. */
        double act, pop;
        char *uid = strndup((const char *)t->bytes[0].p, t->bytes[0].len);
        if (!similar && uid &&
            qml_model_rec_context(v->model, uid, recs, counts[0], &act, &pop) == 0) {
            json_object_set_new(features, "user_activity", json_real(act));
            json_object_set_new(features, "item_popularity", json_real(pop));
        }
        free(uid);
        serve_predlog_add_role(s->predlog, m->name, v->vstr, lc ? lc->alias : NULL, lc ? lc->role : NULL, lid,
                               latency_us, features,
                               json_pack("{s:o, s:b}", "items", items ? items : json_array(), "fallback", fb[0]));
    }
    rc = 0;
out:
    free(id);
    free(recs);
    free(counts);
    free(fb);
    return rc;
}

/* ---- the backend --------------------------------------------------------------- */

int serve_lookup(serve *s, const char *model, const char *version, serve_model **mo,
                 serve_version **vo, qn_err *err)
{
    serve_model *m = model ? serve_model_find(s, model) : NULL;
    *vo = NULL;
    *mo = NULL;
    if (!m)
        return qn_err_set(err, QN_NOT_FOUND, "model '%s' is not served here", model ? model : "");
    *mo = m;
    serve_version *v = serve_acquire(m);
    if (version && *version && (!v || strcmp(version, v->vstr) != 0)) {
        int rc = qn_err_set(err, QN_NOT_FOUND, "model '%s' version '%s' is not served here%s%s%s",
                            model, version, v ? " (serving version " : "", v ? v->vstr : "",
                            v ? ")" : "");
        serve_release(v);
        return rc;
    }
    if (!v)
        return qn_err_set(err, QN_UNAVAILABLE, "model '%s' has no version loaded yet", model);
    *vo = v;
    return 0;
}

static int be_live(void *ud)
{
    return 1;
}

static int be_ready(void *ud)
{
    return serve_all_ready(ud);
}

static int be_model_ready(void *ud, const char *model, const char *version, qn_err *err)
{
    serve *s = ud;
    serve_model *m = model ? serve_model_find(s, model) : NULL;
    if (!m)
        return qn_err_set(err, QN_NOT_FOUND, "model '%s' is not served here", model ? model : "");
    serve_version *v = serve_acquire(m);
    int rc = v ? 1 : 0;
    if (version && *version && (!v || strcmp(version, v->vstr) != 0))
        rc = qn_err_set(err, QN_NOT_FOUND, "model '%s' version '%s' is not served here", model,
                        version);
    serve_release(v);
    return rc;
}

static int be_metadata(void *ud, const char *model, const char *version, oip_model_meta *meta,
                       void **hold, qn_err *err)
{
    serve_model *m;
    serve_version *v;
    int rc = serve_lookup(ud, model, version, &m, &v, err);
    *hold = NULL;
    if (rc < 0)
        return rc;
    meta->name = m->name;
    meta->versions = v->vlist;
    meta->nversions = 1;
    meta->platform = v->platform;
    /* A model imported without column names advertises only its 2-D input
     * (as Triton's FIL backend does): a client that builds its request from
     * the metadata sends one [N, F] tensor. It still takes f0..f{F-1}. */
    meta->inputs = v->unnamed ? &v->tensor_in : v->inputs;
    meta->ninputs = v->unnamed ? 1 : v->ninputs;
    meta->outputs = v->outputs;
    meta->noutputs = v->noutputs;
    *hold = v;
    return 0;
}

static void be_release_meta(void *ud, void *hold)
{
    serve_release(hold);
}

int serve_infer_on(serve *s, serve_model *m, serve_version *v, const oip_infer_request *rq,
                   oip_infer_response *rs, const serve_logctx *lc, qn_err *err)
{
    memset(rs, 0, sizeof *rs);
    rs->model = strdup(m->name);
    rs->version = strdup(v->vstr);
    rs->alias = m->alias;
    rs->id = rq->id ? strdup(rq->id) : NULL;
    if (!rs->model || !rs->version || (rq->id && !rs->id))
        return oom(err);
    return v->is_als ? infer_als(s, m, v, rq, rs, lc, err) : infer_tabular(s, m, v, rq, rs, lc, err);
}

static int be_infer(void *ud, const oip_infer_request *rq, oip_infer_response *rs, qn_err *err)
{
    serve *s = ud;
    serve_model *m = rq->model ? serve_model_find(s, rq->model) : NULL;
    serve_version *v;
    serve_route rt = {0};
    int rc;
    memset(rs, 0, sizeof *rs);
    if (m)
        serve_traffic_route(s, m, rq, &rt);
    if (m && rt.slot) {
        v = rt.v;
    } else {
        if ((rc = serve_lookup(s, rq->model, rq->version, &m, &v, err)) < 0)
            return rc;
        rt = (serve_route){.slot = m, .v = v};
    }
    /* Every answer carries the id its prediction is logged under: the
     * request's, or one made here, so a client can send feedback for it
     * (quern-monitor joins feedback to logged predictions by this id), and a
     * shadowed request is logged on both sides under it. */
    char made[QN_UUID_LEN + 1];
    oip_infer_request with_id = *rq;
    if (!rq->id || !*rq->id) {
        qn_uuid4(made);
        with_id.id = made;
    }
    rq = &with_id;
    /* A shadowed request's primary side is logged by the shadow worker (it
     * runs the primary version again, off the request path), with the
     * latency measured here, on the request path. */
    int64_t primary_us = -1; /* its latency, measured here as for any request */
    serve_logctx lc = {.alias = rt.slot->alias, .role = "primary", .rid = rq->id, .off = rt.shadow != NULL,
                       .latency_us = &primary_us};
    rc = serve_infer_on(s, rt.slot, v, rq, rs, rt.policy ? &lc : NULL, err);
    if (rc == 0)
        serve_traffic_done(s, m, &rt, rq, rq->id, primary_us);
    serve_release(v);
    if (rc < 0) {
        char *mn = rs->model, *vn = rs->version;
        const char *an = rs->alias;
        rs->model = rs->version = NULL;
        oip_response_free(rs);
        rs->model = mn; /* kept so the caller can label its metrics and say */
        rs->version = vn; /* which version (and alias) failed, as on success */
        rs->alias = an;
    }
    return rc;
}

void serve_backend_init(serve *s)
{
    s->backend = (oip_backend){
        .ud = s,
        .server_live = be_live,
        .server_ready = be_ready,
        .model_ready = be_model_ready,
        .server_name = "quern",
        .server_version = QUERN_VERSION,
        .extensions = extensions,
        .nextensions = sizeof extensions / sizeof *extensions,
        .model_metadata = be_metadata,
        .release_meta = be_release_meta,
        .infer = be_infer,
    };
}
