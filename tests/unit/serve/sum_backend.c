/*
 * sum_backend.c - the test backend described in sum_backend.h. It checks its
 * inputs the way a real model backend must (datatype, shape, presence) so
 * that the tests see the protocol layer carry those errors out intact.
 */
#include "sum_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const versions[] = {"1"};
static const char *const extensions[] = {"model_repository"};

static const oip_tensor_meta sum_inputs[] = {
    {.name = "x", .datatype = OIP_FP32, .ndim = 2, .shape = {-1, 3}},
    {.name = "name", .datatype = OIP_BYTES, .ndim = 1, .shape = {-1}},
};
static const oip_tensor_meta sum_outputs[] = {
    {.name = "y", .datatype = OIP_FP32, .ndim = 1, .shape = {-1}},
    {.name = "greeting", .datatype = OIP_BYTES, .ndim = 1, .shape = {-1}},
};

static int known_model(const char *model, const char *version, qn_err *err)
{
    if (strcmp(model, "sum") != 0 && strcmp(model, "echo") != 0 && strcmp(model, "sleepy") != 0)
        return qn_err_set(err, QN_NOT_FOUND, "model %s: not found", model);
    if (version && strcmp(version, "1") != 0)
        return qn_err_set(err, QN_NOT_FOUND, "model %s: no version %s", model, version);
    return 0;
}

static int sb_live(void *ud)
{
    return 1;
}

static int sb_ready(void *ud)
{
    sum_backend *s = ud;
    return atomic_load(&s->ready);
}

static int sb_model_ready(void *ud, const char *model, const char *version, qn_err *err)
{
    int rc = known_model(model, version, err);
    if (rc < 0)
        return rc;
    return strcmp(model, "sleepy") != 0;
}

static int sb_meta(void *ud, const char *model, const char *version, oip_model_meta *meta,
                   void **hold, qn_err *err)
{
    int rc = known_model(model, version, err);
    if (rc < 0)
        return rc;
    memset(meta, 0, sizeof *meta);
    meta->name = model;
    meta->versions = versions;
    meta->nversions = 1;
    meta->platform = "quern-test";
    if (strcmp(model, "sum") == 0) {
        meta->inputs = sum_inputs;
        meta->ninputs = 2;
        meta->outputs = sum_outputs;
        meta->noutputs = 2;
    }
    /* A real backend pins the model here; hold proves release_meta is called. */
    *hold = malloc(1);
    return 0;
}

static void sb_release(void *ud, void *hold)
{
    free(hold);
}

static const oip_tensor *find_input(const oip_infer_request *rq, const char *name)
{
    for (size_t i = 0; i < rq->ninputs; i++)
        if (strcmp(rq->inputs[i].name, name) == 0)
            return &rq->inputs[i];
    return NULL;
}

static int wanted(const oip_infer_request *rq, const char *name)
{
    if (rq->noutputs == 0)
        return 1;
    for (size_t i = 0; i < rq->noutputs; i++)
        if (strcmp(rq->outputs[i], name) == 0)
            return 1;
    return 0;
}

static int infer_sum(const oip_infer_request *rq, oip_infer_response *rs, qn_err *err)
{
    for (size_t i = 0; i < rq->ninputs; i++)
        if (strcmp(rq->inputs[i].name, "x") != 0 && strcmp(rq->inputs[i].name, "name") != 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "input %s: model sum has no such input",
                              rq->inputs[i].name);
    for (size_t i = 0; i < rq->noutputs; i++)
        if (strcmp(rq->outputs[i], "y") != 0 && strcmp(rq->outputs[i], "greeting") != 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "output %s: model sum has no such output",
                              rq->outputs[i]);
    const oip_tensor *x = find_input(rq, "x");
    if (!x)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "input x: missing (model sum requires it)");
    if (x->datatype != OIP_FP32)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "input x: datatype %s, expected FP32",
                          oip_datatype_name(x->datatype));
    if (x->ndim != 2 || x->shape[1] != 3)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "input x: shape must be [n,3]");
    const oip_tensor *nm = find_input(rq, "name");
    if (nm && nm->datatype != OIP_BYTES)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "input name: datatype %s, expected BYTES",
                          oip_datatype_name(nm->datatype));
    if (nm && nm->ndim != 1)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "input name: shape must be [n]");

    rs->outputs = calloc(2, sizeof *rs->outputs);
    if (!rs->outputs)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    int64_t n = x->shape[0];
    if (wanted(rq, "y")) {
        oip_output *y = &rs->outputs[rs->noutputs++];
        y->name = strdup("y");
        y->datatype = OIP_FP32;
        y->ndim = 1;
        y->shape[0] = n;
        y->data_len = (size_t)n * sizeof(float);
        y->data = malloc(y->data_len ? y->data_len : 1);
        if (!y->name || !y->data)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        const uint8_t *src = x->data;
        for (int64_t r = 0; r < n; r++) {
            float row[3], sum = 0;
            memcpy(row, src + (size_t)r * sizeof row, sizeof row);
            for (int c = 0; c < 3; c++)
                sum += row[c];
            memcpy((uint8_t *)y->data + (size_t)r * sizeof sum, &sum, sizeof sum);
        }
    }
    if (nm && wanted(rq, "greeting")) {
        oip_output *g = &rs->outputs[rs->noutputs++];
        g->name = strdup("greeting");
        g->datatype = OIP_BYTES;
        g->ndim = 1;
        g->shape[0] = (int64_t)nm->nbytes;
        g->bytes = calloc(nm->nbytes ? nm->nbytes : 1, sizeof *g->bytes);
        if (!g->name || !g->bytes)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        g->nbytes = nm->nbytes;
        for (size_t i = 0; i < nm->nbytes; i++) {
            size_t len = 7 + nm->bytes[i].len;
            uint8_t *p = malloc(len);
            if (!p)
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            memcpy(p, "hello, ", 7);
            if (nm->bytes[i].len)
                memcpy(p + 7, nm->bytes[i].p, nm->bytes[i].len);
            g->bytes[i].p = p;
            g->bytes[i].len = len;
        }
    }
    return 0;
}

static int infer_echo(const oip_infer_request *rq, oip_infer_response *rs, qn_err *err)
{
    rs->outputs = calloc(rq->ninputs ? rq->ninputs : 1, sizeof *rs->outputs);
    if (!rs->outputs)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < rq->ninputs; i++) {
        const oip_tensor *t = &rq->inputs[i];
        oip_output *o = &rs->outputs[rs->noutputs++];
        o->name = strdup(t->name);
        if (!o->name)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        o->datatype = t->datatype;
        o->ndim = t->ndim;
        memcpy(o->shape, t->shape, sizeof o->shape);
        if (t->datatype == OIP_BYTES) {
            o->bytes = calloc(t->nbytes ? t->nbytes : 1, sizeof *o->bytes);
            if (!o->bytes)
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            o->nbytes = t->nbytes;
            for (size_t j = 0; j < t->nbytes; j++) {
                uint8_t *p = malloc(t->bytes[j].len ? t->bytes[j].len : 1);
                if (!p)
                    return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
                if (t->bytes[j].len)
                    memcpy(p, t->bytes[j].p, t->bytes[j].len);
                o->bytes[j].p = p;
                o->bytes[j].len = t->bytes[j].len;
            }
        } else {
            o->data = malloc(t->data_len ? t->data_len : 1);
            if (!o->data)
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            if (t->data_len)
                memcpy(o->data, t->data, t->data_len);
            o->data_len = t->data_len;
        }
    }
    return 0;
}

static int sb_infer(void *ud, const oip_infer_request *rq, oip_infer_response *rs, qn_err *err)
{
    sum_backend *s = ud;
    atomic_fetch_add(&s->infers, 1);
    memset(rs, 0, sizeof *rs);
    int rc = known_model(rq->model, rq->version, err);
    if (rc == 0 && strcmp(rq->model, "sleepy") == 0)
        rc = qn_err_set(err, QN_UNAVAILABLE, "model sleepy: not ready");
    json_t *sleep = rq->parameters ? json_object_get(rq->parameters, "sleep_ms") : NULL;
    if (rc == 0 && s->allow_sleep && json_is_integer(sleep) && json_integer_value(sleep) > 0 &&
        json_integer_value(sleep) <= 5000) {
        long long ms = json_integer_value(sleep);
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
    if (rc == 0)
        rc = strcmp(rq->model, "sum") == 0 ? infer_sum(rq, rs, err) : infer_echo(rq, rs, err);
    if (rc == 0) {
        rs->model = strdup(rq->model);
        rs->version = strdup("1");
        rs->id = rq->id ? strdup(rq->id) : NULL;
        rs->parameters = rq->parameters ? json_deep_copy(rq->parameters) : json_object();
        if (!rs->model || !rs->version || (rq->id && !rs->id) || !rs->parameters)
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        if (rc == 0 && rq->traceparent &&
            json_object_set_new(rs->parameters, "traceparent", json_string(rq->traceparent)))
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        /* Tensor parameters reach the backend too: report what came in. */
        for (size_t i = 0; rc == 0 && i < rq->ninputs; i++)
            if (rq->inputs[i].parameters) {
                char key[128];
                snprintf(key, sizeof key, "input_params_%s", rq->inputs[i].name);
                if (json_object_set(rs->parameters, key, rq->inputs[i].parameters))
                    rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            }
    }
    if (rc < 0)
        oip_response_free(rs);
    atomic_fetch_add(&s->done, 1);
    return rc;
}

void sum_backend_init(sum_backend *s)
{
    memset(s, 0, sizeof *s);
    atomic_store(&s->ready, 1);
    s->be = (oip_backend){
        .ud = s,
        .server_live = sb_live,
        .server_ready = sb_ready,
        .model_ready = sb_model_ready,
        .server_name = "quern-serve-test",
        .server_version = "0.1.0",
        .extensions = extensions,
        .nextensions = 1,
        .model_metadata = sb_meta,
        .release_meta = sb_release,
        .infer = sb_infer,
    };
}
