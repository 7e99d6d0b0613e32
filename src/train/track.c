/*
 * track.c - a training job logged as a run in the registry's tracking store
 * (/v1/experiments, /v1/runs: DESIGN.md section 4).
 *
 * One experiment per model (named after it), one run per job (named and
 * tagged with the job id, so a retried job logs into the run it started):
 * the spec's params, the per-iteration loss as the series "loss" (step =
 * iteration), the dataset version as the run's input, the final evaluation
 * metrics with the baseline's (baseline.*), and the version it registered
 * (the version names the run). Tracking is best effort: a registry that
 * refuses or lacks it is logged once and the job goes on untracked; it
 * never fails a job.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "train/train.h"

#define FLUSH_POINTS 500
#define FLUSH_MS 1000

/* Gives up on tracking for this job after a failed call, saying why once. */
static void track_off(train_track *tr, const char *what, const qn_err *err)
{
    if (tr->on)
        qn_log_warn(NULL, "run tracking off for this job", "{s:s, s:s, s:s}", "job", tr->job_id, "step", what,
                    "detail", err->msg);
    tr->on = 0;
}

static int call(train_track *tr, const char *what, const char *method, const char *path, const json_t *body,
                json_t **out)
{
    qn_err err;
    if (!tr->on)
        return -1;
    if (qn_client_json(tr->reg, method, path, body, tr->trace, out, &err) < 0) {
        track_off(tr, what, &err);
        return -1;
    }
    return 0;
}

/* The id of the experiment named after the model, created on first use. */
static int experiment_id(train_track *tr, const char *model, char id[32])
{
    json_t *out = NULL, *body = json_pack("{s:s}", "name", model);
    qn_err err;
    int rc = qn_client_json(tr->reg, "POST", "/v1/experiments", body, tr->trace, &out, &err);
    json_decref(body);
    if (rc == QN_ALREADY_EXISTS) {
        char path[512];
        snprintf(path, sizeof path, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=%s", model);
        json_t *e = NULL;
        if (call(tr, "experiment", "GET", path, NULL, &e) < 0)
            return -1;
        out = json_incref(json_object_get(e, "experiment"));
        json_decref(e);
    } else if (rc < 0) {
        track_off(tr, "experiment", &err);
        return -1;
    }
    snprintf(id, 32, "%s", json_string_value(json_object_get(out, "experiment_id")) ? json_string_value(json_object_get(out, "experiment_id")) : "0");
    json_decref(out);
    return 0;
}

void train_track_start(train_track *tr, qn_client *reg, const qn_trace_ctx *trace, const train_job *job)
{
    memset(tr, 0, sizeof *tr);
    tr->reg = reg;
    tr->trace = trace;
    tr->on = 1;
    snprintf(tr->job_id, sizeof tr->job_id, "%s", job->id);
    tr->pending = json_array();
    tr->last_step = -1;
    char exp[32];
    if (experiment_id(tr, job->model, exp) < 0)
        return;
    /* a retried job finds the run it started */
    char filter[200];
    snprintf(filter, sizeof filter, "tags.`quern.job_id` = '%s'", job->id);
    json_t *q = json_pack("{s:[s], s:s, s:i}", "experiment_ids", exp, "filter", filter, "max_results", 1), *found = NULL;
    int rc = call(tr, "search", "POST", "/v1/runs/search", q, &found);
    json_decref(q);
    if (rc < 0)
        return;
    const char *rid = json_string_value(json_object_get(json_array_get(json_object_get(found, "runs"), 0), "run_id"));
    if (rid) {
        snprintf(tr->run_id, sizeof tr->run_id, "%s", rid);
    } else {
        json_t *body = json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:s}}", "experiment_id", exp, "name", job->id, "tags",
                                 "quern.job_id", job->id, "quern.model", job->model, "quern.kind", job->kind,
                                 "mlflow.source.name", "quern-train"),
               *run = NULL;
        rc = call(tr, "run", "POST", "/v1/runs", body, &run);
        json_decref(body);
        if (rc == 0)
            snprintf(tr->run_id, sizeof tr->run_id, "%s", json_string_value(json_object_get(run, "run_id")) ? json_string_value(json_object_get(run, "run_id")) : "");
        json_decref(run);
        if (!tr->run_id[0])
            tr->on = 0;
    }
    json_decref(found);
    if (!tr->on)
        return;
    /* params: the spec's, as strings (MLflow keeps params as text) */
    json_t *params = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(job->spec, "params"), k, v) {
        char *text = json_is_string(v) ? strdup(json_string_value(v)) : qn_json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (text && strlen(k) <= 250)
            json_object_set_new(params, k, json_string(text));
        free(text);
    }
    json_object_set_new(params, "kind", json_string(job->kind));
    json_object_set_new(params, "dataset", json_string(job->dataset));
    json_t *body = json_pack("{s:o}", "params", params);
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s/log", tr->run_id);
    call(tr, "params", "POST", path, body, NULL);
    json_decref(body);
}

void train_track_flush(train_track *tr)
{
    if (!tr->on || json_array_size(tr->pending) == 0)
        return;
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s/log", tr->run_id);
    json_t *body = json_pack("{s:O}", "metrics", tr->pending);
    call(tr, "metrics", "POST", path, body, NULL);
    json_decref(body);
    json_array_clear(tr->pending);
    tr->last_flush = qn_now_ms();
}

void train_track_loss(train_track *tr, int iteration, double loss)
{
    if (!tr->on || iteration <= tr->last_step || !isfinite(loss))
        return;
    tr->last_step = iteration;
    json_array_append_new(tr->pending, json_pack("{s:s, s:f, s:i, s:I}", "key", "loss", "value", loss, "step",
                                                 iteration, "timestamp", (json_int_t)qn_now_ms()));
    if (json_array_size(tr->pending) >= FLUSH_POINTS || qn_now_ms() - tr->last_flush >= FLUSH_MS)
        train_track_flush(tr);
}

void train_track_input(train_track *tr, const char *dataset, int64_t version)
{
    if (!tr->on || !dataset || version <= 0)
        return;
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s/log", tr->run_id);
    json_t *body = json_pack("{s:[{s:s, s:I}]}", "inputs", "dataset", dataset, "version", (json_int_t)version);
    call(tr, "input", "POST", path, body, NULL);
    json_decref(body);
}

void train_track_metrics(train_track *tr, const json_t *metrics)
{
    train_track_flush(tr);
    if (!tr->on)
        return;
    json_t *list = json_array();
    const char *k;
    json_t *v;
    int64_t now = qn_now_ms();
    json_object_foreach((json_t *)metrics, k, v) {
        if (json_is_number(v) && isfinite(json_number_value(v)) && json_array_size(list) < 1000)
            json_array_append_new(list, json_pack("{s:s, s:f, s:i, s:I}", "key", k, "value", json_number_value(v),
                                                  "step", 0, "timestamp", (json_int_t)now));
    }
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s/log", tr->run_id);
    json_t *body = json_pack("{s:o}", "metrics", list);
    call(tr, "final metrics", "POST", path, body, NULL);
    json_decref(body);
}

void train_track_end(train_track *tr, int ok)
{
    train_track_flush(tr);
    if (tr->on) {
        char path[128];
        snprintf(path, sizeof path, "/v1/runs/%s", tr->run_id);
        json_t *body = json_pack("{s:s}", "status", ok ? "FINISHED" : "FAILED");
        call(tr, "end", "PATCH", path, body, NULL);
        json_decref(body);
    }
    json_decref(tr->pending);
    tr->pending = NULL;
    tr->on = 0;
}
