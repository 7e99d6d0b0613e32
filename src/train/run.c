/*
 * run.c - one training job from its dataset snapshot to a registered (and
 * maybe promoted) model version.
 *
 *   1. If the registry already holds a version made by this job (tag
 *      quern.job_id; the trainer died after registering it), finish from it:
 *      a job registers at most one version however often it is retried.
 *   2. Fetch the dataset version's manifest, download its CSV blob into
 *      <data>/datasets (by digest, verified), read it with the manifest's schema.
 *   3. qml_train_run into <data>/work/<job>: split, transforms, model, holdout
 *      metrics, reference profile, bundle (libquern-ml's ml/train.h), with
 *      progress written to the job row a few times a second.
 *   4. Champion/challenger: the version behind the policy's alias (production)
 *      is downloaded into <data>/cache, loaded and scored by qml_model_evaluate
 *      on the same holdout rows, with the same primary metric.
 *   5. Upload the bundle's files as blobs (HEAD first: skip what is stored),
 *      register the version with metrics, params, lineage and the decision as
 *      tags, then move the alias if the decision says so.
 * Throughout, the job is logged as a run of the registry's tracking store
 * (track.c): params, the loss per iteration, the dataset input, the final
 * metrics, and the version names the run.
 */
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/digest.h"
#include "core/json.h"
#include "core/log.h"
#include "core/otel.h"
#include "core/service.h"
#include "ml/csv.h"
#include "ml/model.h"
#include "ml/train.h"
#include "train/train.h"

#define JOB_TAG "quern.job_id"

int train_spec_check(const char *kind, const json_t *spec, qn_err *err)
{
    (void)kind;
    char *text = qn_json_canonical(spec);
    if (!text)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    qml_train_spec *s = NULL;
    int rc = qml_train_spec_from_json(text, strlen(text), &s, err);
    free(text);
    qml_train_spec_free(s);
    return rc < 0 ? qn_err_wrap(err, "spec") : 0;
}

/* ---- small helpers ---------------------------------------------------------- */

typedef struct run_ctx {
    trainer *t;
    train_job *job;
    int64_t start_ms, last_ms;
    int last_stage;
    const char *state;       /* the job state last written */
    long iterations;         /* declared iterations / rounds, 0 when unknown */
    qn_span stage;           /* the stage being run, a child of the job's span */
    int stage_open;
    int train_stage;         /* the training loop's stage with a span open, -1: none */
    train_track *track;      /* the job's run in the tracking store, or NULL */
    int fit_iter;            /* the last point of the fit series: iteration (0: none yet) */
    double fit_loss;         /* and its loss / per-round metric (NAN: none) */
} run_ctx;

/* Stage spans: one at a time, each a child of the job's span. */
static void stage_end(run_ctx *r, int rc, const qn_err *err)
{
    if (!r->stage_open)
        return;
    if (rc < 0 && rc != QN_CANCELLED)
        qn_span_error(&r->stage, err ? err->msg : "failed");
    qn_span_end(&r->stage);
    r->stage_open = 0;
    r->train_stage = -1;
}

static void stage_begin(run_ctx *r, const char *name)
{
    stage_end(r, 0, NULL);
    qn_span_start(&r->stage, name, QN_SPAN_INTERNAL, &r->job->trace);
    qn_span_attr_str(&r->stage, "quern.job_id", r->job->id);
    r->stage_open = 1;
}

/* The context calls made now belong to: the open stage, else the job. */
static const qn_trace_ctx *cur_trace(const run_ctx *r)
{
    return r->stage_open ? &r->stage.ctx : &r->job->trace;
}

static int cancelled(const run_ctx *r, qn_err *err)
{
    if (atomic_load(&r->job->slot->cancel) != TRAIN_GO)
        return qn_err_set(err, QN_CANCELLED, "job %s was cancelled", r->job->id);
    return 0;
}

/* Writes the job's state/progress and tells its origin, when another trainer. */
static void set_progress(run_ctx *r, const char *state, json_t *progress)
{
    qn_err err;
    if (train_job_update(r->t, r->job->id, state, progress, NULL, NULL, NULL, &err) < 0)
        qn_log_warn(NULL, "cannot record progress", "{s:s, s:s}", "job", r->job->id, "detail", err.msg);
    if (state)
        r->state = state;
    if (r->job->origin && strcmp(r->job->origin, r->t->instance) != 0)
        train_publish_now(r->t, "quern.train.progress",
                          json_pack("{s:s, s:s, s:s, s:i, s:O}", "job_id", r->job->id, "state", r->state,
                                    "runner", r->t->instance, "attempts", r->job->attempts, "progress",
                                    progress));
    json_decref(progress);
}

/* The job's progress: the stage, the last point of the run's fit series
 * (iteration and loss stay at the last one logged through evaluate and done,
 * so a follower sees where training ended), elapsed and ETA from fraction. */
static json_t *progress_json(run_ctx *r, const char *stage, int iteration, double loss, double fraction)
{
    double elapsed = (double)(qn_now_ms() - r->start_ms) / 1000.0;
    if (iteration <= 0 && r->fit_iter > 0) {
        iteration = r->fit_iter;
        loss = r->fit_loss;
    }
    json_t *p = json_pack("{s:s, s:i, s:f, s:f}", "stage", stage, "iteration", iteration, "fraction",
                          fraction, "elapsed_s", elapsed);
    json_object_set_new(p, "loss", isfinite(loss) ? json_real(loss) : json_null());
    json_object_set_new(p, "eta_s", fraction > 0.01 && fraction < 1 ? json_real(elapsed * (1 - fraction) / fraction)
                                                                   : (fraction >= 1 ? json_real(0) : json_null()));
    if (r->iterations > 0)
        json_object_set_new(p, "iterations", json_integer(r->iterations));
    if (r->track && r->track->run_id[0])
        json_object_set_new(p, "run_id", json_string(r->track->run_id));
    return p;
}

/* The training loop's callback: at most one row update per --progress-interval
 * (stage changes always go through). */
static void on_progress(void *ctx, qml_train_stage stage, int iteration, double loss, double fraction)
{
    run_ctx *r = ctx;
    if (stage == QML_STAGE_FIT && iteration > 0) {
        r->fit_iter = iteration;
        r->fit_loss = loss;
        if (r->track) /* every iteration, unthrottled */
            train_track_loss(r->track, iteration, loss);
    }
    if ((int)stage != r->train_stage) {
        if (stage == QML_STAGE_DONE) {
            stage_end(r, 0, NULL);
        } else {
            stage_begin(r, qml_train_stage_name(stage));
            r->train_stage = (int)stage;
        }
    }
    int64_t now = qn_now_ms();
    if ((int)stage == r->last_stage && now - r->last_ms < r->t->progress_ms)
        return;
    r->last_ms = now;
    r->last_stage = (int)stage;
    const char *state = stage >= QML_STAGE_EVALUATE ? "evaluating" : "running";
    set_progress(r, strcmp(state, r->state) ? state : NULL,
                 progress_json(r, qml_train_stage_name(stage), iteration, loss, fraction));
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_tree(const char *dir)
{
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static int path_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* Flattens nested objects into dotted keys; keeps what fits (numbers for
 * metrics, scalars for params), since the registry takes flat maps. */
static void flatten(json_t *out, const char *prefix, const json_t *in, int numbers_only)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)in, k, v) {
        char key[256];
        snprintf(key, sizeof key, "%s%s%s", prefix, prefix[0] ? "." : "", k);
        if (json_is_object(v))
            flatten(out, key, v, numbers_only);
        else if (json_is_number(v) && isfinite(json_number_value(v)))
            json_object_set(out, key, v);
        else if (!numbers_only && (json_is_string(v) || json_is_boolean(v)))
            json_object_set(out, key, v);
    }
}

static char *fmt_num(double v, char buf[40])
{
    snprintf(buf, 40, "%.10g", v);
    return buf;
}

/* ---- the dataset --------------------------------------------------------------- */

/* Loading a dataset version: its manifest, the CSV file it names, the
 * schema, the file (downloaded once per digest, verified), the frame. */
typedef struct ds_load {
    run_ctx *r;
    json_t *dsv;             /* the dataset version, as the registry answers it */
    const char *name, *digest; /* the CSV file and its "sha256:..." (in dsv) */
    qml_field_spec *fields;  /* the manifest's schema (names in dsv) */
    size_t ncols;
    char *path, *part;       /* <datasets>/<hex>.csv, and its download in progress */
    qml_frame **frame;       /* out */
    json_t **lineage, **report; /* out */
} ds_load;

static int ds_fetch(ds_load *l, qn_err *err)
{
    train_job *job = l->r->job;
    char url[512];
    if (job->dataset_version > 0)
        snprintf(url, sizeof url, "/v1/datasets/%s/versions/%lld", job->dataset, (long long)job->dataset_version);
    else
        snprintf(url, sizeof url, "/v1/datasets/%s/versions/latest", job->dataset);
    int rc = qn_client_json(l->r->t->reg, "GET", url, NULL, cur_trace(l->r), &l->dsv, err);
    if (rc == QN_NOT_FOUND)
        return qn_err_set(err, QN_NOT_FOUND, "dataset \"%s\" version %s does not exist in the registry",
                          job->dataset, job->dataset_version > 0 ? strrchr(url, '/') + 1 : "latest");
    return rc < 0 ? qn_err_wrap(err, "fetching dataset %s", job->dataset) : 0;
}

/* The manifest's CSV file: "data.csv", else the first *.csv. */
static int ds_pick_file(ds_load *l, qn_err *err)
{
    json_t *files = json_object_get(json_object_get(l->dsv, "manifest"), "files");
    const char *k;
    json_t *v;
    json_object_foreach(files, k, v) {
        size_t n = strlen(k);
        if (json_is_string(v) && n > 4 && strcmp(k + n - 4, ".csv") == 0 &&
            (!l->name || strcmp(k, "data.csv") == 0)) {
            l->name = k;
            l->digest = json_string_value(v);
        }
    }
    const char *d = l->digest;
    if (!d || strncmp(d, "sha256:", 7) != 0 || !qn_sha256_hex_valid(d + 7, strlen(d + 7)))
        return qn_err_set(err, QN_FAILED_PRECONDITION,
                          "dataset %s: its manifest names no CSV file (files must hold e.g. \"data.csv\": "
                          "\"sha256:...\")",
                          l->r->job->dataset);
    return 0;
}

/* Schema: {"columns":[{"name","type"}]}; types left out are inferred. */
static int ds_schema(ds_load *l, qn_err *err)
{
    const char *dataset = l->r->job->dataset;
    json_t *cols = json_object_get(json_object_get(json_object_get(l->dsv, "manifest"), "schema"), "columns");
    l->ncols = json_is_array(cols) ? json_array_size(cols) : 0;
    if (l->ncols && !(l->fields = calloc(l->ncols, sizeof *l->fields)))
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < l->ncols; i++) {
        json_t *c = json_array_get(cols, i);
        const char *cn = json_string_value(json_object_get(c, "name"));
        const char *ct = json_string_value(json_object_get(c, "type"));
        qml_type ty;
        if (!cn)
            return qn_err_set(err, QN_FAILED_PRECONDITION, "dataset %s: schema column %zu has no name", dataset, i);
        l->fields[i].name = cn;
        l->fields[i].type = QML_INFER;
        if (ct) {
            if (qml_type_parse(ct, &ty) < 0)
                return qn_err_set(err, QN_FAILED_PRECONDITION,
                                  "dataset %s: column %s has type \"%s\" (numeric, categorical, boolean or "
                                  "timestamp expected)",
                                  dataset, cn, ct);
            l->fields[i].type = (int)ty;
        }
    }
    return 0;
}

/* The file, downloaded into <datasets> unless a former job left it there. */
static int ds_download(ds_load *l, qn_err *err)
{
    trainer *t = l->r->t;
    train_job *job = l->r->job;
    const char *hexd = l->digest + 7;
    int rc;
    if (asprintf(&l->path, "%s/%s.csv", t->dataset_dir, hexd) < 0 ||
        asprintf(&l->part, "%s/%s.%s.part", t->dataset_dir, hexd, job->id) < 0) {
        l->path = l->part = NULL;
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    if (!path_exists(l->path)) {
        char blob[128], hex[QN_SHA256_HEX + 1];
        snprintf(blob, sizeof blob, "/v1/blobs/%s", l->digest);
        if ((rc = qn_client_get_file(t->reg, blob, l->part, cur_trace(l->r), err)) < 0)
            return qn_err_wrap(err, "downloading %s of dataset %s", l->name, job->dataset);
        struct stat sb;
        if (stat(l->part, &sb) == 0 && sb.st_size > t->max_dataset) {
            remove(l->part);
            return qn_err_set(err, QN_FAILED_PRECONDITION,
                              "dataset %s: %s is %lld bytes, more than --max-dataset-size %lld", job->dataset,
                              l->name, (long long)sb.st_size, t->max_dataset);
        }
        if ((rc = qn_sha256_file(l->part, hex, err)) < 0 || strcmp(hex, hexd) != 0) {
            remove(l->part);
            return rc < 0 ? rc
                          : qn_err_set(err, QN_DATA_LOSS, "dataset %s: downloaded %s does not match its digest",
                                       job->dataset, l->name);
        }
        if (rename(l->part, l->path) < 0) {
            rc = qn_err_set(err, QN_INTERNAL, "cannot store dataset file %s: %s", l->path, strerror(errno));
            remove(l->part);
            return rc;
        }
    }
    return cancelled(l->r, err);
}

static int ds_read(ds_load *l, qn_err *err)
{
    train_job *job = l->r->job;
    qml_csv_opts o;
    qml_csv_opts_init(&o);
    o.fields = l->fields;
    o.n_fields = l->ncols;
    qml_read_report rep;
    if (qml_csv_read_all(l->path, &o, l->frame, &rep, err) < 0)
        return qn_err_wrap(err, "reading dataset %s", job->dataset);
    *l->report = json_pack("{s:I, s:I}", "rows", (json_int_t)rep.rows_ok, "rows_bad", (json_int_t)rep.rows_bad);
    *l->lineage = json_pack("{s:s, s:O, s:O}", "name", job->dataset, "version", json_object_get(l->dsv, "version"),
                            "digest", json_object_get(l->dsv, "manifest_digest"));
    if (rep.rows_bad)
        qn_log_warn(NULL, "dataset rows refused by the reader", "{s:s, s:s, s:I}", "job", job->id, "dataset",
                    job->dataset, "rows_bad", (json_int_t)rep.rows_bad);
    return 0;
}

/* The steps of the "dataset" stage, in order. */
static int (*const ds_steps[])(ds_load *l, qn_err *err) = {ds_fetch, ds_pick_file, ds_schema, ds_download,
                                                            ds_read};

/* Downloads the dataset version's CSV (once per digest) and reads it with the
 * manifest's schema. Fills lineage {name, version, digest} and report
 * {rows, rows_bad}. */
static int load_dataset(run_ctx *r, qml_frame **frame, json_t **lineage, json_t **report, qn_err *err)
{
    ds_load l = {.r = r, .frame = frame, .lineage = lineage, .report = report};
    int rc = 0;
    for (size_t i = 0; i < sizeof ds_steps / sizeof ds_steps[0] && rc >= 0; i++)
        rc = ds_steps[i](&l, err);
    json_decref(l.dsv);
    free(l.fields);
    free(l.path);
    free(l.part);
    return rc < 0 ? rc : 0;
}

/* ---- the champion ----------------------------------------------------------------- */

/* Downloads version n of the model into the cache (once per manifest digest)
 * and loads it. */
static int load_champion(trainer *t, const qn_trace_ctx *tc, const char *model, int64_t n, qml_model **out,
                         qn_err *err)
{
    json_t *ver = NULL;
    char *dir = NULL, *mpath = NULL, *text = NULL;
    char url[512];
    int rc;
    snprintf(url, sizeof url, "/v1/models/%s/versions/%lld", model, (long long)n);
    if ((rc = qn_client_json(t->reg, "GET", url, NULL, tc, &ver, err)) < 0)
        goto out;
    const char *md = json_string_value(json_object_get(ver, "manifest_digest"));
    json_t *man = json_object_get(ver, "manifest");
    if (!md || strlen(md) < 8 || !json_is_object(man)) {
        rc = qn_err_set(err, QN_INTERNAL, "the registry's answer for %s version %lld lacks a manifest", model,
                        (long long)n);
        goto out;
    }
    if (asprintf(&dir, "%s/%s", t->cache_dir, md + 7) < 0 || asprintf(&mpath, "%s/manifest.json", dir) < 0) {
        dir = mpath = NULL;
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if (!path_exists(mpath)) {
        /* The manifest goes last: a cache dir without one is incomplete. */
        if ((rc = qn_mkdir_p(dir, err)) < 0)
            goto out;
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(man, "files"), k, v) {
            char blob[128], dest[4096];
            snprintf(blob, sizeof blob, "/v1/blobs/%s", json_string_value(v));
            snprintf(dest, sizeof dest, "%s/%s", dir, k);
            if ((rc = qn_client_get_file(t->reg, blob, dest, tc, err)) < 0)
                goto out;
        }
        text = qn_json_canonical(man);
        FILE *f = text ? fopen(mpath, "wb") : NULL;
        if (!f || fwrite(text, 1, strlen(text), f) != strlen(text) || fclose(f) != 0) {
            rc = qn_err_set(err, QN_INTERNAL, "cannot write %s", mpath);
            goto out;
        }
    }
    if ((rc = qml_model_load(dir, NULL, out, err)) < 0)
        rm_tree(dir); /* a bad copy is fetched again next time */
out:
    json_decref(ver);
    free(dir);
    free(mpath);
    free(text);
    return rc;
}

/* ---- the registry ------------------------------------------------------------------- */

/* Uploads a file of the bundle unless the registry has that digest already. */
static int upload_blob(trainer *t, const qn_trace_ctx *tc, const char *dir, const char *name, const char *digest, qn_err *err)
{
    char url[128], path[4096];
    snprintf(url, sizeof url, "/v1/blobs/%s", digest);
    int rc = qn_client_raw(t->reg, "HEAD", url, NULL, NULL, 0, tc, NULL, err);
    if (rc >= 200 && rc < 300)
        return 0;
    if (rc != QN_NOT_FOUND)
        return qn_err_wrap(err, "checking blob %s", name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    rc = qn_client_put_file(t->reg, url, path, tc, err);
    return rc < 0 ? qn_err_wrap(err, "uploading %s", name) : 0;
}

/* The version this job registered earlier (a retried job), or 0 when none. */
static int find_registered(trainer *t, const train_job *job, json_t **version, qn_err *err)
{
    char url[512];
    json_t *page = NULL;
    *version = NULL;
    snprintf(url, sizeof url, "/v1/models/%s/versions?limit=1&tag=%s:%s", job->model, JOB_TAG, job->id);
    int rc = qn_client_json(t->reg, "GET", url, NULL, &job->trace, &page, err);
    if (rc == QN_NOT_FOUND)
        return 0; /* no such model yet */
    if (rc < 0)
        return qn_err_wrap(err, "looking for a version of job %s", job->id);
    json_t *v = json_array_get(json_object_get(page, "versions"), 0);
    if (v)
        *version = json_incref(v);
    json_decref(page);
    return 0;
}

static int ensure_model(trainer *t, const qn_trace_ctx *tc, const char *model, qn_err *err)
{
    json_t *body = json_pack("{s:s, s:s}", "name", model, "description", "created by quern-train");
    int rc = qn_client_json(t->reg, "POST", "/v1/models", body, tc, NULL, err);
    json_decref(body);
    if (rc == QN_ALREADY_EXISTS || rc >= 0)
        return 0;
    return qn_err_wrap(err, "creating model %s", model);
}

/* The alias' version, 0 when the alias is not set. */
static int alias_version(trainer *t, const qn_trace_ctx *tc, const char *model, const char *alias, int64_t *version, qn_err *err)
{
    char url[512];
    json_t *a = NULL;
    snprintf(url, sizeof url, "/v1/models/%s/aliases/%s", model, alias);
    int rc = qn_client_json(t->reg, "GET", url, NULL, tc, &a, err);
    *version = 0;
    if (rc == QN_NOT_FOUND)
        return 0;
    if (rc < 0)
        return qn_err_wrap(err, "reading alias %s of %s", alias, model);
    *version = json_integer_value(json_object_get(a, "version"));
    json_decref(a);
    return 0;
}

static int move_alias(trainer *t, const qn_trace_ctx *tc, const char *model, const char *alias, int64_t version, qn_err *err)
{
    char url[512];
    snprintf(url, sizeof url, "/v1/models/%s/aliases/%s", model, alias);
    json_t *body = json_pack("{s:I}", "version", (json_int_t)version);
    int rc = qn_client_json(t->reg, "PUT", url, body, tc, NULL, err);
    json_decref(body);
    return rc < 0 ? qn_err_wrap(err, "moving alias %s of %s to version %lld", alias, model, (long long)version)
                  : 0;
}

/* ---- the decision -------------------------------------------------------------------- */

typedef struct verdict {
    const char *decision;     /* promoted, kept_champion, not_promoted */
    char reason[1200];
    int64_t champion_version; /* 0: none */
    double champion_score;    /* NAN when not scored */
    json_t *champion_metrics;
} verdict;

static int same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The spec to score the champion with. Same kind: the challenger's spec (so
 * both are measured alike). Another kind (logistic champion, XGBoost
 * challenger): the champion's own spec from its manifest, which must predict
 * the same thing (label, or user and item). *out NULL means "use spec". */
static int champion_spec(const qml_model *champ, const qml_train_spec *spec, qml_train_spec **out, qn_err *err)
{
    *out = NULL;
    if (strcmp(qml_model_kind(champ), spec->kind) == 0)
        return 0;
    const json_t *cs = json_object_get(json_object_get(qml_model_manifest(champ), "params"), "spec");
    if (!json_is_object(cs))
        return qn_err_set(err, QN_FAILED_PRECONDITION, "the champion (%s) records no training spec",
                          qml_model_kind(champ));
    char *text = qn_json_canonical(cs);
    if (!text)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    int rc = qml_train_spec_from_json(text, strlen(text), out, err);
    free(text);
    if (rc < 0)
        return qn_err_wrap(err, "the champion's spec");
    if (!same_str((*out)->label, spec->label) || !same_str((*out)->user, spec->user) ||
        !same_str((*out)->item, spec->item)) {
        qml_train_spec_free(*out);
        *out = NULL;
        return qn_err_set(err, QN_FAILED_PRECONDITION,
                          "the champion (%s) predicts another target than the challenger (%s)",
                          qml_model_kind(champ), spec->kind);
    }
    /* Same cutoff and primary metric as the challenger. */
    (*out)->k = spec->k;
    return 0;
}

static void decide(run_ctx *r, const qml_train_spec *spec, const qml_train_result *res, verdict *d)
{
    trainer *t = r->t;
    train_job *job = r->job;
    const char *mode = json_string_value(json_object_get(job->policy, "mode"));
    const char *alias = json_string_value(json_object_get(job->policy, "alias"));
    double margin = json_number_value(json_object_get(job->policy, "margin"));
    qn_err err;
    d->champion_score = NAN;
    if (alias_version(t, cur_trace(r), job->model, alias, &d->champion_version, &err) < 0) {
        d->decision = "kept_champion";
        snprintf(d->reason, sizeof d->reason, "the current %s version could not be read: %s", alias, err.msg);
        return;
    }
    if (strcmp(mode, "never") == 0) {
        d->decision = "not_promoted";
        snprintf(d->reason, sizeof d->reason, "promote_policy.mode is never");
        return;
    }
    if (!d->champion_version) {
        d->decision = "promoted";
        snprintf(d->reason, sizeof d->reason, "no %s version yet", alias);
        return;
    }
    qml_model *champ = NULL;
    qml_train_spec *cspec = NULL;
    int rc = load_champion(t, cur_trace(r), job->model, d->champion_version, &champ, &err);
    if (rc == 0 && (rc = champion_spec(champ, spec, &cspec, &err)) == 0)
        rc = qml_model_evaluate(champ, cspec ? cspec : spec, res->holdout, &d->champion_metrics, &err);
    qml_train_spec_free(cspec);
    qml_model_free(champ);
    json_t *s = rc == 0 ? json_object_get(d->champion_metrics, res->primary) : NULL;
    if (s && json_is_number(s))
        d->champion_score = json_number_value(s);
    if (strcmp(mode, "always") == 0) {
        d->decision = "promoted";
        snprintf(d->reason, sizeof d->reason, "promote_policy.mode is always");
        return;
    }
    if (!isfinite(d->champion_score)) {
        /* Safe side: a champion we cannot score is not replaced blindly. */
        d->decision = "kept_champion";
        snprintf(d->reason, sizeof d->reason,
                 "the %s version %lld could not be scored on the new holdout (%s); use "
                 "promote_policy.mode \"always\" to replace it anyway",
                 alias, (long long)d->champion_version, rc < 0 ? err.msg : "metric missing");
        return;
    }
    double ch = res->primary_value, cp = d->champion_score;
    int better = res->higher_is_better ? ch > cp + margin : ch < cp - margin;
    d->decision = better ? "promoted" : "kept_champion";
    snprintf(d->reason, sizeof d->reason, "%s %.6g vs %s version %lld %.6g (%s is better, margin %g)",
             res->primary, ch, alias, (long long)d->champion_version, cp,
             res->higher_is_better ? "higher" : "lower", margin);
}

/* ---- the job ---------------------------------------------------------------------------- */

static const char *outcome_of(const char *decision)
{
    return strcmp(decision, "not_promoted") == 0 ? "registered" : decision;
}

/* Finishes a job whose version the registry already holds (a retry after a
 * crash between registering and recording the end). */
static int finish_registered(run_ctx *r, json_t *ver, json_t **result, qn_err *err)
{
    train_job *job = r->job;
    json_t *tags = json_object_get(ver, "tags");
    const char *dec = json_string_value(json_object_get(tags, "decision"));
    const char *alias = json_string_value(json_object_get(job->policy, "alias"));
    int64_t version = json_integer_value(json_object_get(ver, "version"));
    if (!dec)
        dec = "kept_champion";
    qn_log_info(NULL, "version already registered by this job; finishing from it", "{s:s, s:I}", "job",
                job->id, "version", (json_int_t)version);
    if (strcmp(dec, "promoted") == 0 && move_alias(r->t, &job->trace, job->model, alias, version, err) < 0)
        return err->code;
    *result = json_pack("{s:s, s:s, s:s, s:I, s:O, s:O, s:b}", "outcome", outcome_of(dec), "decision", dec,
                        "model", job->model, "version", (json_int_t)version, "metrics",
                        json_object_get(ver, "metrics"), "tags", tags, "resumed", 1);
    return 0;
}

/* What a job's stages hand on to each other (freed by train_run). */
typedef struct job_run {
    run_ctx r;
    qml_train_spec *spec;
    qml_frame *frame;          /* the dataset, until training is done with it */
    qml_train_result res;
    json_t *lineage, *report;  /* the dataset version's {name, version, digest}; rows read */
    json_t *manifest;          /* the bundle's manifest */
    json_t *body, *created;    /* the version registered: request and answer */
    verdict d;
    char *bundle;              /* <work>/<job>-<attempt>: the bundle's directory */
    json_t *result;            /* the job's result, once registered */
} job_run;

static int stage_spec(job_run *j, qn_err *err)
{
    char *text = qn_json_canonical(j->r.job->spec);
    if (!text)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    int rc = qml_train_spec_from_json(text, strlen(text), &j->spec, err);
    free(text);
    return rc;
}

static int stage_dataset(job_run *j, qn_err *err)
{
    int rc;
    if ((rc = load_dataset(&j->r, &j->frame, &j->lineage, &j->report, err)) < 0 || (rc = cancelled(&j->r, err)) < 0)
        return rc;
    qn_span_attr_int(&j->r.stage, "quern.dataset_version", json_integer_value(json_object_get(j->lineage, "version")));
    if (j->r.track)
        train_track_input(j->r.track, j->r.job->dataset, json_integer_value(json_object_get(j->lineage, "version")));
    return 0;
}

/* The training loop (libquern-ml): its own stages open their spans through
 * on_progress (split, transforms, fit, evaluate, profile, bundle). */
static int stage_train(job_run *j, qn_err *err)
{
    train_job *job = j->r.job;
    if (asprintf(&j->bundle, "%s/%s-%d", j->r.t->work_dir, job->id, job->attempts) < 0) {
        j->bundle = NULL;
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    rm_tree(j->bundle); /* left over by a crash of this very attempt number */
    qml_train_opts o = {.progress = on_progress,
                        .progress_ctx = &j->r,
                        .cancel = &job->slot->cancel,
                        .dataset_name = job->dataset,
                        .dataset_version = json_integer_value(json_object_get(j->lineage, "version"))};
    int rc = qml_train_run(j->spec, j->frame, j->bundle, &o, &j->res, err);
    if (rc < 0)
        return rc == QN_CANCELLED ? rc : qn_err_wrap(err, "training");
    qml_frame_free(j->frame);
    j->frame = NULL;
    return 0;
}

/* Champion/challenger on the same holdout rows. */
static int stage_champion(job_run *j, qn_err *err)
{
    decide(&j->r, j->spec, &j->res, &j->d);
    qn_span_attr_str(&j->r.stage, "quern.decision", j->d.decision);
    return cancelled(&j->r, err);
}

/* The bundle's files as blobs, and the model they will be a version of. */
static int stage_upload(job_run *j, qn_err *err)
{
    trainer *t = j->r.t;
    char mpath[4096];
    snprintf(mpath, sizeof mpath, "%s/manifest.json", j->bundle);
    json_error_t je;
    if (!(j->manifest = json_load_file(mpath, 0, &je)))
        return qn_err_set(err, QN_INTERNAL, "cannot read the bundle's manifest: %s", je.text);
    const char *k;
    json_t *v;
    int rc;
    json_object_foreach(json_object_get(j->manifest, "files"), k, v) {
        if ((rc = upload_blob(t, cur_trace(&j->r), j->bundle, k, json_string_value(v), err)) < 0 ||
            (rc = cancelled(&j->r, err)) < 0)
            return rc;
    }
    return ensure_model(t, cur_trace(&j->r), j->r.job->model, err);
}

/* The version with its metrics, params, lineage and decision; the alias
 * when the decision says so; the job's result. */
static int stage_register(job_run *j, qn_err *err)
{
    trainer *t = j->r.t;
    train_job *job = j->r.job;
    const qml_train_result *res = &j->res;
    const verdict *d = &j->d;
    char num[40];
    json_t *metrics = json_object(), *params = json_object(), *tags = json_object();
    flatten(metrics, "", res->metrics, 1);
    flatten(params, "", json_object_get(job->spec, "params"), 0);
    json_object_set_new(params, "kind", json_string(job->kind));
    json_object_set_new(tags, JOB_TAG, json_string(job->id));
    json_object_set_new(tags, "decision", json_string(d->decision));
    json_object_set_new(tags, "decision_reason", json_string(d->reason));
    json_object_set_new(tags, "metric", json_string(res->primary));
    json_object_set_new(tags, "challenger_score", json_string(fmt_num(res->primary_value, num)));
    if (d->champion_version) {
        json_object_set_new(tags, "champion_version", json_string(fmt_num((double)d->champion_version, num)));
        if (isfinite(d->champion_score))
            json_object_set_new(tags, "champion_score", json_string(fmt_num(d->champion_score, num)));
    }
    const char *reason = json_string_value(json_object_get(job->request, "reason"));
    char desc[1200];
    snprintf(desc, sizeof desc, "trained by quern-train job %s%s%s", job->id, reason ? ": " : "",
             reason ? reason : "");
    j->body = json_pack("{s:O, s:o, s:o, s:o, s:O, s:s}", "manifest", j->manifest, "metrics", metrics, "params",
                        params, "tags", tags, "dataset", j->lineage, "description", desc);
    if (j->r.track) { /* the run's final metrics (baseline.* with them); the version names the run */
        train_track_metrics(j->r.track, res->metrics);
        if (j->r.track->on)
            json_object_set_new(j->body, "run_id", json_string(j->r.track->run_id));
    }
    char url[512];
    snprintf(url, sizeof url, "/v1/models/%s/versions", job->model);
    int rc = qn_client_json(t->reg, "POST", url, j->body, cur_trace(&j->r), &j->created, err);
    if (rc < 0)
        return qn_err_wrap(err, "registering the version");
    int64_t version = json_integer_value(json_object_get(j->created, "version"));
    const char *alias = json_string_value(json_object_get(job->policy, "alias"));
    int promoted = strcmp(d->decision, "promoted") == 0;
    if (promoted) {
        if ((rc = move_alias(t, cur_trace(&j->r), job->model, alias, version, err)) < 0)
            return rc;
        qn_counter_add(t->promotions, NULL, 1);
    }
    json_t *out = json_pack("{s:s, s:s, s:s, s:s, s:I, s:O, s:s, s:b, s:f, s:s, s:b, s:O, s:O, s:O, s:s}",
                            "outcome", outcome_of(d->decision), "decision", d->decision, "reason", d->reason,
                            "model", job->model, "version", (json_int_t)version, "metrics", res->metrics, "metric",
                            res->primary, "higher_is_better", res->higher_is_better, "challenger_score",
                            res->primary_value, "alias", alias, "promoted", promoted, "dataset", j->lineage,
                            "rows", j->report, "manifest_digest", json_object_get(j->created, "manifest_digest"),
                            "bundle_digest", res->manifest_digest);
    json_t *scores = json_pack("{s:f}", "challenger", res->primary_value);
    if (d->champion_version) {
        json_object_set_new(out, "champion_version", json_integer(d->champion_version));
        json_object_set_new(out, "champion_score", isfinite(d->champion_score) ? json_real(d->champion_score) : json_null());
        json_object_set_new(scores, "champion", isfinite(d->champion_score) ? json_real(d->champion_score) : json_null());
        if (d->champion_metrics)
            json_object_set(out, "champion_metrics", d->champion_metrics);
    }
    json_object_set_new(out, "scores", scores);
    j->result = out;
    qn_span_attr_int(&j->r.stage, "quern.version", version);
    qn_span_attr_bool(&j->r.stage, "quern.promoted", promoted);
    return 0;
}

/* A job's stages, in order. span: the trace span the stage runs in (NULL:
 * none of its own; training opens one per libquern-ml stage). Before the
 * stage runs, progress (when set) is written with state (NULL: unchanged)
 * and fraction. */
typedef struct run_stage {
    const char *span;
    const char *state, *progress;
    double fraction;
    int (*run)(job_run *j, qn_err *err);
} run_stage;

static const run_stage run_stages[] = {
    {NULL, NULL, "dataset", 0, stage_spec},
    {"dataset", NULL, NULL, 0, stage_dataset},
    {NULL, NULL, NULL, 0, stage_train},
    {"champion", "evaluating", "champion", 1, stage_champion},
    {"upload", "registering", "upload", 1, stage_upload},
    {"register", NULL, NULL, 0, stage_register},
};

int train_run(trainer *t, train_job *job, json_t **result, qn_err *err)
{
    job_run j = {.r = {.t = t, .job = job, .start_ms = qn_now_ms(), .last_stage = -1, .state = "running",
                       .train_stage = -1, .fit_loss = NAN}};
    json_t *existing = NULL;
    train_track track = {0};
    int rc;
    *result = NULL;
    j.r.iterations = qml_train_iterations(job->kind, json_object_get(job->spec, "params"));

    if ((rc = find_registered(t, job, &existing, err)) < 0)
        goto out;
    if (existing) {
        rc = finish_registered(&j.r, existing, result, err);
        goto out;
    }
    train_track_start(&track, t->reg, &job->trace, job);
    j.r.track = &track;
    for (size_t i = 0; i < QN_NELEM(run_stages); i++) {
        const run_stage *s = &run_stages[i];
        if (s->progress)
            set_progress(&j.r, s->state, progress_json(&j.r, s->progress, 0, NAN, s->fraction));
        if (s->span)
            stage_begin(&j.r, s->span);
        if ((rc = s->run(&j, err)) < 0)
            goto out;
        stage_end(&j.r, 0, NULL);
    }
    *result = j.result;
    j.result = NULL;
    rc = 0;
out:
    if (j.r.track)
        train_track_end(j.r.track, rc == 0);
    stage_end(&j.r, rc, err);
    if (rc == 0 && *result)
        set_progress(&j.r, NULL, progress_json(&j.r, "done", 0, NAN, 1));
    if (j.bundle)
        rm_tree(j.bundle);
    free(j.bundle);
    qml_train_spec_free(j.spec);
    qml_frame_free(j.frame);
    qml_train_result_free(&j.res);
    json_decref(j.lineage);
    json_decref(j.report);
    json_decref(existing);
    json_decref(j.manifest);
    json_decref(j.body);
    json_decref(j.created);
    json_decref(j.result);
    json_decref(j.d.champion_metrics);
    return rc;
}
