/*
 * model.c - one handle over every model kind: load from a bundle, describe
 * inputs and outputs, predict from raw named inputs, recommend, smoke-check.
 *
 * The per-kind knowledge lives in the model modules; this file only wires a
 * bundle's files and manifest to them and checks that the parts agree, so a
 * bundle that would predict nonsense is refused at load rather than at the
 * first request. See model.h for the bundle layout per kind.
 */
#include "ml/model.h"
#include "core/json.h"
#include "ml/explain.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct qml_model {
    char kind[16];
    qml_task task;
    qml_features *features;
    qml_linear *lin;
    qml_xgb *xgb;
    qml_als *als;
    double *als_gram;            /* ALS: Y'Y of the item factors, for explanations */
    double *classes;
    size_t n_classes;
    int k;
    size_t width;
    qml_tensor_spec *in, *out;
    size_t n_in, n_out;
    qml_bundle *bundle;          /* loaded models: the open bundle (owns the manifest) */
    qml_manifest *manifest;      /* in-memory models once their bundle is written */
};

static const char *const task_names[] = {"binary", "multiclass", "regression", "ranking"};

const char *qml_task_name(qml_task t)
{
    return (unsigned)t < 4 ? task_names[t] : "unknown";
}

static int oom(qn_err *err)
{
    return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
}

static void free_specs(qml_tensor_spec *s, size_t n)
{
    if (!s)
        return;
    for (size_t i = 0; i < n; i++) {
        free((char *)s[i].name);
        free((char *)s[i].datatype);
    }
    free(s);
}

void qml_model_free(qml_model *m)
{
    if (!m)
        return;
    qml_features_free(m->features);
    qml_linear_free(m->lin);
    qml_xgb_free(m->xgb);
    qml_als_free(m->als);
    free(m->als_gram);
    free(m->classes);
    free_specs(m->in, m->n_in);
    free_specs(m->out, m->n_out);
    qml_bundle_close(m->bundle);
    qml_manifest_free(m->manifest);
    free(m);
}

/* Appends a spec with copied strings to *arr (capacity grows by one). */
static int add_spec(qml_tensor_spec **arr, size_t *n, const char *name, const char *datatype,
                    const int64_t *shape, int ndim, qn_err *err)
{
    qml_tensor_spec *a = realloc(*arr, (*n + 1) * sizeof *a);
    if (!a)
        return oom(err);
    *arr = a;
    qml_tensor_spec *s = &a[*n];
    memset(s, 0, sizeof *s);
    s->name = strdup(name);
    s->datatype = strdup(datatype);
    if (!s->name || !s->datatype) {
        free((char *)s->name);
        free((char *)s->datatype);
        return oom(err);
    }
    s->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        s->shape[d] = shape[d];
    (*n)++;
    return 0;
}

/* The outputs a task declares (model.h). */
static int default_outputs(qml_model *m, qn_err *err)
{
    int64_t vec[] = {-1}, mat[] = {-1, (int64_t)m->n_classes}, rk[] = {-1, m->k};
    switch (m->task) {
    case QML_TASK_BINARY:
        return add_spec(&m->out, &m->n_out, "probability", "FP32", vec, 1, err);
    case QML_TASK_MULTICLASS:
        return add_spec(&m->out, &m->n_out, "probabilities", "FP32", mat, 2, err);
    case QML_TASK_REGRESSION:
        return add_spec(&m->out, &m->n_out, "prediction", "FP32", vec, 1, err);
    case QML_TASK_RANKING: {
        int rc = add_spec(&m->out, &m->n_out, "item_id", "BYTES", rk, 2, err);
        return rc < 0 ? rc : add_spec(&m->out, &m->n_out, "score", "FP32", rk, 2, err);
    }
    }
    return qn_err_set(err, QN_INTERNAL, "unknown task");
}

/* Model width, task and classes must agree; sets m->width. */
static int check_tabular(qml_model *m, qn_err *err)
{
    size_t d = qml_features_n_features(m->features);
    if (m->lin) {
        if (qml_linear_n_features(m->lin) != d)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "model.json has %zu features but the "
                              "transforms produce %zu", qml_linear_n_features(m->lin), d);
        int logistic = qml_linear_get_kind(m->lin) == QML_LOGISTIC;
        if (logistic != !strcmp(m->kind, "logistic"))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "model.json is a %s model but the "
                              "manifest says %s", logistic ? "logistic" : "linear", m->kind);
        if (!logistic) {
            if (m->task != QML_TASK_REGRESSION)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "params.task: a linear model is a "
                                  "regressor, not %s", qml_task_name(m->task));
            m->width = 1;
            return 0;
        }
        size_t nc = qml_linear_n_outputs(m->lin);
        const int *cl = qml_linear_classes(m->lin);
        if (nc != m->n_classes)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "params.classes lists %zu classes, "
                              "model.json has %zu", m->n_classes, nc);
        for (size_t i = 0; i < nc; i++)
            if ((double)cl[i] != m->classes[i])
                return qn_err_set(err, QN_INVALID_ARGUMENT, "params.classes[%zu] is %g, "
                                  "model.json says %d", i, m->classes[i], cl[i]);
        if (m->task != (nc == 2 ? QML_TASK_BINARY : QML_TASK_MULTICLASS))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "params.task %s does not fit %zu "
                              "classes", qml_task_name(m->task), nc);
        m->width = nc == 2 ? 1 : nc;
        return 0;
    }
    if (qml_xgb_n_features(m->xgb) != d)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "model.json has %zu features but the "
                          "transforms produce %zu", qml_xgb_n_features(m->xgb), d);
    const char *obj = qml_xgb_objective(m->xgb);
    size_t w = qml_xgb_n_outputs(m->xgb);
    qml_task t;
    if (!strncmp(obj, "binary:", 7))
        t = QML_TASK_BINARY;
    else if (!strcmp(obj, "multi:softprob"))
        t = QML_TASK_MULTICLASS;
    else if (!strncmp(obj, "reg:", 4) || !strncmp(obj, "count:", 6))
        t = QML_TASK_REGRESSION;
    else
        return qn_err_set(err, QN_INVALID_ARGUMENT, "model.json: objective %s cannot be served "
                          "(use binary:logistic, multi:softprob or a regression)", obj);
    if (t != m->task)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "params.task %s does not fit the objective "
                          "%s", qml_task_name(m->task), obj);
    if (t == QML_TASK_BINARY && m->n_classes != 2)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "params.classes must list 2 classes for %s",
                          obj);
    if (t == QML_TASK_MULTICLASS && w != m->n_classes)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "params.classes lists %zu classes, the "
                          "model has %zu", m->n_classes, w);
    if (w != (t == QML_TASK_MULTICLASS ? m->n_classes : 1))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "model.json gives %zu outputs per row", w);
    m->width = w;
    return 0;
}

int qml__model_new_tabular(const char *kind, qml_task task, qml_features *features,
                           const qml_type *input_types, qml_linear *lin, qml_xgb *xgb,
                           const double *classes, size_t n_classes, qml_model **out,
                           qn_err *err)
{
    *out = NULL;
    int rc = 0;
    qml_model *m = calloc(1, sizeof *m);
    if (!m) {
        qml_features_free(features);
        qml_linear_free(lin);
        qml_xgb_free(xgb);
        return oom(err);
    }
    snprintf(m->kind, sizeof m->kind, "%s", kind);
    m->task = task;
    m->features = features;
    m->lin = lin;
    m->xgb = xgb;
    if (n_classes) {
        if (!(m->classes = malloc(n_classes * sizeof *m->classes))) {
            rc = oom(err);
            goto out;
        }
        memcpy(m->classes, classes, n_classes * sizeof *classes);
        m->n_classes = n_classes;
    }
    if ((rc = check_tabular(m, err)) < 0)
        goto out;
    int64_t vec[] = {-1};
    for (size_t i = 0; i < qml_features_n_inputs(features); i++) {
        const char *dt = input_types[i] == QML_CATEGORICAL ? "BYTES" : "FP64";
        if ((rc = add_spec(&m->in, &m->n_in, qml_features_input(features, i), dt, vec, 1, err)) < 0)
            goto out;
    }
    rc = default_outputs(m, err);
out:
    if (rc < 0)
        qml_model_free(m);
    else
        *out = m;
    return rc;
}

int qml__model_new_als(qml_als *als, int k, qml_model **out, qn_err *err)
{
    *out = NULL;
    qml_model *m = calloc(1, sizeof *m);
    if (!m) {
        qml_als_free(als);
        return oom(err);
    }
    snprintf(m->kind, sizeof m->kind, "als");
    m->task = QML_TASK_RANKING;
    m->als = als;
    m->k = k;
    int64_t vec[] = {-1};
    int rc = add_spec(&m->in, &m->n_in, "user_id", "BYTES", vec, 1, err);
    if (rc == 0)
        rc = default_outputs(m, err);
    if (rc == 0 && !(m->als_gram = qml_als_gram(als)))
        rc = oom(err);
    if (rc < 0)
        qml_model_free(m);
    else
        *out = m;
    return rc;
}

int qml__model_save_file(const qml_model *m, char **buf, size_t *len, qn_err *err)
{
    *buf = NULL;
    if (m->xgb)
        return qml_xgb_save_buffer(m->xgb, buf, len, err);
    if (!m->lin)
        return qn_err_set(err, QN_FAILED_PRECONDITION, "model kind %s has no model.json", m->kind);
    if (!(*buf = qml_linear_to_json(m->lin, err)))
        return err->code;
    *len = strlen(*buf);
    return 0;
}

void qml__model_set_manifest(qml_model *m, qml_manifest *manifest)
{
    qml_manifest_free(m->manifest);
    m->manifest = manifest;
}

/* ---- loading ---------------------------------------------------------------- */

const char *const qml__als_files[QML__ALS_NFILES] = {"user_factors.npy",      "item_factors.npy",
                                        "popularity.npy",        "user_items_indptr.npy",
                                        "user_items_indices.npy", "user_ids.json",
                                        "item_ids.json"};

static int read_small_file(const char *path, char **buf, size_t *len, qn_err *err)
{
    *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return qn_err_set(err, QN_INTERNAL, "cannot open %s", path);
    int rc = 0;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap)
            break;
        if (cap >= ((size_t)1 << 30)) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "%s is larger than 1 GiB", path);
            goto out;
        }
        char *nb = realloc(b, cap * 2);
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    if (!b) {
        rc = oom(err);
        goto out;
    }
    if (ferror(f)) {
        rc = qn_err_set(err, QN_INTERNAL, "cannot read %s", path);
        goto out;
    }
    *buf = b;
    *len = n;
    b = NULL;
out:
    free(b);
    fclose(f);
    return rc;
}

/* task and classes from params. */
static int load_params(qml_model *m, const json_t *params, qn_err *err)
{
    const json_t *t = json_object_get(params, "task");
    if (!json_is_string(t))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest params.task must be a string");
    size_t i;
    for (i = 0; i < 4; i++)
        if (!strcmp(json_string_value(t), task_names[i]))
            break;
    if (i == 4)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest params.task \"%s\" is not one of "
                          "binary, multiclass, regression, ranking", json_string_value(t));
    m->task = (qml_task)i;
    if ((m->task == QML_TASK_RANKING) != !strcmp(m->kind, "als"))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest params.task %s does not fit kind %s",
                          task_names[i], m->kind);
    const json_t *cl = json_object_get(params, "classes");
    if (m->task == QML_TASK_BINARY || m->task == QML_TASK_MULTICLASS) {
        size_t n = json_array_size(cl);
        if (!json_is_array(cl) || n < 2 || n > QML_LINEAR_MAX_CLASSES)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest params.classes must be an array "
                              "of 2 to %d numbers", QML_LINEAR_MAX_CLASSES);
        if (!(m->classes = malloc(n * sizeof *m->classes)))
            return oom(err);
        m->n_classes = n;
        for (size_t c = 0; c < n; c++) {
            const json_t *v = json_array_get(cl, c);
            if (!json_is_number(v))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest params.classes[%zu] must "
                                  "be a number", c);
            m->classes[c] = json_number_value(v);
            if (!isfinite(m->classes[c]) || (c && m->classes[c] <= m->classes[c - 1]))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest params.classes must be "
                                  "finite and ascending (at [%zu])", c);
        }
    }
    const json_t *k = json_object_get(params, "k");
    m->k = 10;
    if (k) {
        if (!json_is_integer(k) || json_integer_value(k) < 1 || json_integer_value(k) > 100000)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest params.k must be an integer "
                              "in [1, 100000]");
        m->k = (int)json_integer_value(k);
    }
    return 0;
}

/* A model imported from elsewhere (quern models import: e.g. Python's
 * xgboost JSON) comes with declared inputs but no fitted transforms: the
 * declared numeric inputs then go to the model as they are, in order. */
static int passthrough_features(qml_model *m, qn_err *err)
{
    json_t *cols = json_array();
    for (size_t i = 0; i < m->n_in; i++) {
        const char *dt = m->in[i].datatype;
        if (!strcmp(dt, "BYTES") || !strcmp(dt, "BOOL")) {
            json_decref(cols);
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input \"%s\" is %s, but a model without fitted transforms takes "
                              "numeric inputs only (train it with quern, or declare numbers)",
                              m->in[i].name, dt);
        }
        json_array_append_new(cols, json_pack("{s:s, s:s, s:[]}", "name", m->in[i].name, "type",
                                              "numeric", "steps"));
    }
    json_t *doc = json_pack("{s:s, s:I, s:o}", "format", "quern.features/1", "n_features",
                            (json_int_t)m->n_in, "columns", cols);
    char *s = qn_json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!s)
        return oom(err);
    int rc = qml_features_from_json(s, strlen(s), &m->features, err);
    free(s);
    return rc;
}

/* The task of an imported XGBoost model, from its objective. */
static int task_from_xgb(qml_model *m, qn_err *err)
{
    const char *obj = qml_xgb_objective(m->xgb);
    size_t nc = 0;
    if (!strncmp(obj, "binary:", 7)) {
        m->task = QML_TASK_BINARY;
        nc = 2;
    } else if (!strncmp(obj, "multi:", 6)) {
        m->task = QML_TASK_MULTICLASS;
        nc = (size_t)qml_xgb_n_classes(m->xgb);
    } else if (!strncmp(obj, "reg:", 4)) {
        m->task = QML_TASK_REGRESSION;
    } else {
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "model.json: objective \"%s\" is not binary:*, multi:* or reg:*; "
                          "declare params.task in the manifest", obj);
    }
    if (nc) {
        if (!(m->classes = malloc(nc * sizeof *m->classes)))
            return oom(err);
        for (size_t c = 0; c < nc; c++)
            m->classes[c] = (double)c;
        m->n_classes = nc;
    }
    return 0;
}

int qml_model_load(const char *dir, const qml_model_opts *opts, qml_model **out, qn_err *err)
{
    *out = NULL;
    qml_model *m = calloc(1, sizeof *m);
    if (!m)
        return oom(err);
    int rc = qml_bundle_open(dir, &m->bundle, err);
    if (rc < 0)
        goto out;
    const qml_manifest *man = qml_bundle_manifest(m->bundle);
    snprintf(m->kind, sizeof m->kind, "%s", qml_manifest_kind(man));
    /* An imported XGBoost model may leave params.task out: it is then read
     * from the model's objective once model.json is loaded. */
    const json_t *params = qml_manifest_get(man, "params");
    int task_from_model = !strcmp(m->kind, "xgboost") && !json_object_get(params, "task");
    if (!task_from_model && (rc = load_params(m, params, err)) < 0)
        goto out;
    for (size_t i = 0; i < qml_manifest_n_inputs(man); i++) {
        const qml_tensor_spec *s = qml_manifest_input(man, i);
        if ((rc = add_spec(&m->in, &m->n_in, s->name, s->datatype, s->shape, s->ndim, err)) < 0)
            goto out;
    }
    for (size_t i = 0; i < qml_manifest_n_outputs(man); i++) {
        const qml_tensor_spec *s = qml_manifest_output(man, i);
        if ((rc = add_spec(&m->out, &m->n_out, s->name, s->datatype, s->shape, s->ndim, err)) < 0)
            goto out;
    }
    if (!strcmp(m->kind, "als")) {
        for (size_t i = 0; i < QML__ALS_NFILES; i++)
            if (!qml_bundle_file_path(m->bundle, qml__als_files[i])) {
                rc = qn_err_set(err, QN_INVALID_ARGUMENT, "als bundle %s: the manifest does not "
                                "list %s", dir, qml__als_files[i]);
                goto out;
            }
        if ((rc = qml_als_load(qml_bundle_dir(m->bundle), &m->als, err)) < 0)
            goto out;
        if (!(m->als_gram = qml_als_gram(m->als))) {
            rc = oom(err);
            goto out;
        }
        if (m->n_in != 1 || strcmp(m->in[0].name, "user_id")) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "als bundle %s: inputs must be "
                            "[\"user_id\"]", dir);
            goto out;
        }
        goto out;
    }
    if (strcmp(m->kind, "xgboost") && strcmp(m->kind, "logistic") && strcmp(m->kind, "linear")) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "manifest kind \"%s\" is not als, logistic, "
                        "linear or xgboost", m->kind);
        goto out;
    }
    const json_t *tf = qml_manifest_get(man, "transforms");
    if (!tf) {
        if ((rc = passthrough_features(m, err)) < 0)
            goto out;
    } else {
        char *tfs = qn_json_dumps(tf, JSON_COMPACT);
        rc = tfs ? qml_features_from_json(tfs, strlen(tfs), &m->features, err) : oom(err);
        free(tfs);
        if (rc < 0) {
            qn_err_wrap(err, "manifest transforms");
            goto out;
        }
    }
    const char *path = qml_bundle_file_path(m->bundle, "model.json");
    if (!path) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "bundle %s: the manifest does not list "
                        "model.json", dir);
        goto out;
    }
    if (!strcmp(m->kind, "xgboost")) {
        int threads = opts && opts->threads > 0 ? opts->threads : 1;
        rc = qml_xgb_load_file(path, threads, &m->xgb, err);
    } else {
        char *buf;
        size_t len = 0;
        if ((rc = read_small_file(path, &buf, &len, err)) == 0) {
            rc = qml_linear_from_json(buf, len, &m->lin, err);
            free(buf);
        }
    }
    if (rc < 0) {
        qn_err_wrap(err, "model.json");
        goto out;
    }
    if (task_from_model && (rc = task_from_xgb(m, err)) < 0)
        goto out;
    if ((rc = check_tabular(m, err)) < 0)
        goto out;
    for (size_t i = 0; i < qml_features_n_inputs(m->features); i++) {
        const char *name = qml_features_input(m->features, i);
        size_t j;
        for (j = 0; j < m->n_in; j++)
            if (!strcmp(m->in[j].name, name))
                break;
        if (j == m->n_in) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "the transforms read column \"%s\", which "
                            "is not among the manifest's inputs", name);
            goto out;
        }
    }
out:
    if (rc < 0)
        qml_model_free(m);
    else
        *out = m;
    return rc;
}

/* ---- accessors ---------------------------------------------------------------- */

const char *qml_model_kind(const qml_model *m) { return m->kind; }
qml_task qml_model_task(const qml_model *m) { return m->task; }

const json_t *qml_model_manifest(const qml_model *m)
{
    if (m->bundle)
        return qml_manifest_json(qml_bundle_manifest(m->bundle));
    return m->manifest ? qml_manifest_json(m->manifest) : NULL;
}

size_t qml_model_n_inputs(const qml_model *m) { return m->n_in; }
const qml_tensor_spec *qml_model_input(const qml_model *m, size_t i)
{
    return i < m->n_in ? &m->in[i] : NULL;
}
size_t qml_model_n_outputs(const qml_model *m) { return m->n_out; }
const qml_tensor_spec *qml_model_output(const qml_model *m, size_t i)
{
    return i < m->n_out ? &m->out[i] : NULL;
}
size_t qml_model_output_width(const qml_model *m) { return m->width; }

const double *qml_model_classes(const qml_model *m, size_t *n)
{
    *n = m->n_classes;
    return m->classes;
}

const qml_features *qml_model_features(const qml_model *m) { return m->features; }
const qml_als *qml_model_als(const qml_model *m) { return m->als; }
const qml_linear *qml_model_linear(const qml_model *m) { return m->lin; }
const qml_xgb *qml_model_xgb(const qml_model *m) { return m->xgb; }
const double *qml__model_als_gram(const qml_model *m) { return m->als_gram; }

/* ---- prediction ------------------------------------------------------------------ */

/* The model proper on transformed rows X (n x d) into out (n x width). */
static int predict_x(const qml_model *m, const float *X, size_t n, float *out, qn_err *err)
{
    size_t d = qml_features_n_features(m->features);
    if (m->xgb)
        return qml_xgb_predict(m->xgb, X, n, d, out, err);
    size_t no = qml_linear_n_outputs(m->lin);
    double *p = malloc((n ? n : 1) * no * sizeof *p);
    if (!p)
        return oom(err);
    int rc = qml_linear_predict(m->lin, X, n, d, p, err);
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) {
            if (m->task == QML_TASK_BINARY)
                out[i] = (float)p[i * 2 + 1];
            else
                for (size_t c = 0; c < m->width; c++)
                    out[i * m->width + c] = (float)p[i * no + c];
        }
    }
    free(p);
    return rc;
}

static int need_tabular(const qml_model *m, qn_err *err)
{
    if (!m->features)
        return qn_err_set(err, QN_FAILED_PRECONDITION, "model kind %s takes no feature rows: "
                          "use recommend", m->kind);
    return 0;
}

int qml_model_transform(const qml_model *m, const qml_input_batch *b, float *X, qn_err *err)
{
    int rc = need_tabular(m, err);
    if (rc < 0)
        return rc;
    size_t n = b->n_rows;
    if (n > QML_MODEL_MAX_ROWS)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "a batch holds at most %zu rows, got %zu",
                          QML_MODEL_MAX_ROWS, n);
    if (n == 0)
        return 0;
    size_t strbytes = 0;
    for (size_t c = 0; c < b->n_cols; c++) {
        const qml_input_col *col = &b->cols[c];
        if (!col->name)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "input %zu has no name", c);
        if (col->type == QML_INPUT_STR ? !col->str : !col->num)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "input %s has no data", col->name);
        if (col->type == QML_INPUT_STR)
            for (size_t r = 0; r < n; r++) {
                if (col->str[r].ptr && memchr(col->str[r].ptr, '\0', col->str[r].len))
                    return qn_err_set(err, QN_INVALID_ARGUMENT, "input %s, row %zu: the string "
                                      "holds a NUL byte", col->name, r);
                strbytes += col->str[r].len + 1;
            }
    }
    qml_raw_input *in = malloc((b->n_cols ? b->n_cols : 1) * sizeof *in);
    qml_raw_value *vals = malloc((b->n_cols ? b->n_cols : 1) * n * sizeof *vals);
    char *text = malloc(strbytes ? strbytes : 1), *t = text;
    if (!in || !vals || !text) {
        rc = oom(err);
        goto out;
    }
    for (size_t c = 0; c < b->n_cols; c++) {
        const qml_input_col *col = &b->cols[c];
        qml_raw_value *v = vals + c * n;
        for (size_t r = 0; r < n; r++) {
            if (col->type == QML_INPUT_NUM) {
                v[r] = (qml_raw_value){.kind = QML_RAW_NUM, .num = col->num[r]};
            } else if (!col->str[r].ptr) {
                v[r] = (qml_raw_value){.kind = QML_RAW_MISSING};
            } else {
                memcpy(t, col->str[r].ptr, col->str[r].len);
                t[col->str[r].len] = '\0';
                v[r] = (qml_raw_value){.kind = QML_RAW_STR, .str = t};
                t += col->str[r].len + 1;
            }
        }
        in[c] = (qml_raw_input){col->name, v};
    }
    rc = qml_features_transform_raw(m->features, in, b->n_cols, n, X, err);
out:
    free(in);
    free(vals);
    free(text);
    return rc;
}

int qml_model_predict(const qml_model *m, const qml_input_batch *b, float *out, qn_err *err)
{
    int rc = need_tabular(m, err);
    if (rc < 0)
        return rc;
    size_t n = b->n_rows, d = qml_features_n_features(m->features);
    if (n == 0 || n > QML_MODEL_MAX_ROWS)
        return qml_model_transform(m, b, NULL, err); /* 0, or the row limit's error */
    float *X = malloc(n * (d ? d : 1) * sizeof *X);
    if (!X)
        return oom(err);
    if ((rc = qml_model_transform(m, b, X, err)) == 0)
        rc = predict_x(m, X, n, out, err);
    free(X);
    return rc;
}

int qml_model_predict_frame(const qml_model *m, const qml_frame *f, float *out, qn_err *err)
{
    int rc = need_tabular(m, err);
    if (rc < 0)
        return rc;
    size_t n = qml_frame_nrows(f), d = qml_features_n_features(m->features);
    if (n == 0)
        return 0;
    float *X = malloc(n * d * sizeof *X);
    if (!X)
        return oom(err);
    if ((rc = qml_features_transform(m->features, f, X, err)) == 0)
        rc = predict_x(m, X, n, out, err);
    free(X);
    return rc;
}

/* ---- recommendations ------------------------------------------------------------- */

static int need_als(const qml_model *m, int k, qn_err *err)
{
    if (!m->als)
        return qn_err_set(err, QN_FAILED_PRECONDITION, "model kind %s does not recommend",
                          m->kind);
    if (k < 1)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "k must be >= 1, got %d", k);
    return 0;
}

static int to_recs(const qml_model *m, qml_als_rec *r, int n, qml_model_rec *out)
{
    for (int i = 0; i < n; i++)
        out[i] = (qml_model_rec){qml_als_item_id(m->als, r[i].item), r[i].score};
    return n;
}

int qml_model_recommend(const qml_model *m, const char *user_id, int k, int exclude_seen,
                        qml_model_rec *out, int *fallback, qn_err *err)
{
    *fallback = 0;
    int rc = need_als(m, k, err);
    if (rc < 0)
        return rc;
    int32_t ni = qml_als_n_items(m->als);
    int kk = k < ni ? k : ni;
    if (kk < 1)
        return 0;
    qml_als_rec *r = malloc((size_t)kk * sizeof *r);
    if (!r)
        return oom(err);
    rc = qml_als_recommend_id(m->als, user_id, kk, exclude_seen, r, fallback, err);
    if (rc > 0)
        rc = to_recs(m, r, rc, out);
    free(r);
    return rc;
}

int qml_model_rec_context(const qml_model *m, const char *user_id, const qml_model_rec *recs, int n,
                          double *user_activity, double *item_popularity)
{
    if (!m->als)
        return QN_FAILED_PRECONDITION;
    int32_t u = qml_als_user_index(m->als, user_id);
    const int32_t *seen;
    *user_activity = u >= 0 ? (double)qml_als_seen(m->als, u, &seen) : 0.0;
    const float *pop = qml_als_popularity(m->als);
    double sum = 0;
    int cnt = 0;
    for (int i = 0; i < n; i++) {
        int32_t it = qml_als_item_index(m->als, recs[i].item_id);
        if (it >= 0) {
            sum += pop[it];
            cnt++;
        }
    }
    *item_popularity = cnt ? sum / cnt : 0.0;
    return 0;
}

int qml_model_similar(const qml_model *m, const char *item_id, int k, qml_model_rec *out,
                      qn_err *err)
{
    int rc = need_als(m, k, err);
    if (rc < 0)
        return rc;
    int32_t item = qml_als_item_index(m->als, item_id);
    if (item < 0)
        return qn_err_set(err, QN_NOT_FOUND, "item \"%s\" is not in the model", item_id);
    int32_t ni = qml_als_n_items(m->als);
    int kk = k < ni ? k : ni;
    qml_als_rec *r = malloc((size_t)(kk > 0 ? kk : 1) * sizeof *r);
    if (!r)
        return oom(err);
    rc = qml_als_similar_items(m->als, item, kk, r, err);
    if (rc > 0)
        rc = to_recs(m, r, rc, out);
    free(r);
    return rc;
}

/* ---- smoke check ------------------------------------------------------------------ */

static int smoke_recs(const qml_model_rec *r, int n, const char *what, qn_err *err)
{
    if (n < 1)
        return qn_err_set(err, QN_FAILED_PRECONDITION, "smoke: %s returned no items", what);
    for (int i = 0; i < n; i++) {
        if (!r[i].item_id)
            return qn_err_set(err, QN_FAILED_PRECONDITION, "smoke: %s returned an item without "
                              "an id", what);
        if (!isfinite(r[i].score))
            return qn_err_set(err, QN_FAILED_PRECONDITION, "smoke: %s gave item %s a non-finite "
                              "score", what, r[i].item_id);
    }
    return 0;
}

static int smoke_als(const qml_model *m, qn_err *err)
{
    qml_model_rec r[10];
    int fb, rc;
    const char *user = qml_als_user_id(m->als, 0), *item = qml_als_item_id(m->als, 0);
    if (!user || !item)
        return qn_err_set(err, QN_FAILED_PRECONDITION, "smoke: the model has no users or items");
    if ((rc = qml_model_recommend(m, user, 10, 1, r, &fb, err)) < 0)
        return rc;
    if ((rc = smoke_recs(r, rc, "recommend", err)) < 0)
        return rc;
    if ((rc = qml_model_recommend(m, "\x01quern-smoke-unknown-user", 10, 1, r, &fb, err)) < 0)
        return rc;
    if ((rc = smoke_recs(r, rc, "recommend for an unknown user", err)) < 0)
        return rc;
    if (qml_als_n_items(m->als) < 2)
        return 0;
    if ((rc = qml_model_similar(m, item, 10, r, err)) < 0)
        return rc;
    return smoke_recs(r, rc, "similar", err);
}

int qml_model_smoke(const qml_model *m, qn_err *err)
{
    if (m->als)
        return smoke_als(m, err);
    static const double zero = 0;
    static const qml_str unseen = {"\x01quern-smoke", 12};
    qml_input_col *cols = calloc(m->n_in ? m->n_in : 1, sizeof *cols);
    float *out = malloc((m->width ? m->width : 1) * sizeof *out);
    int rc = 0;
    if (!cols || !out) {
        rc = oom(err);
        goto out;
    }
    for (size_t i = 0; i < m->n_in; i++) {
        int bytes = !strcmp(m->in[i].datatype, "BYTES");
        cols[i] = (qml_input_col){m->in[i].name, bytes ? QML_INPUT_STR : QML_INPUT_NUM,
                                  bytes ? NULL : &zero, bytes ? &unseen : NULL};
    }
    qml_input_batch b = {1, m->n_in, cols};
    if ((rc = qml_model_predict(m, &b, out, err)) < 0) {
        qn_err_wrap(err, "smoke");
        goto out;
    }
    double sum = 0;
    for (size_t c = 0; c < m->width; c++) {
        if (!isfinite(out[c])) {
            rc = qn_err_set(err, QN_FAILED_PRECONDITION, "smoke: output %s[%zu] is not finite "
                            "(%g)", m->out[0].name, c, (double)out[c]);
            goto out;
        }
        if (m->task != QML_TASK_REGRESSION && (out[c] < 0 || out[c] > 1)) {
            rc = qn_err_set(err, QN_FAILED_PRECONDITION, "smoke: probability %s[%zu] = %g is "
                            "outside [0, 1]", m->out[0].name, c, (double)out[c]);
            goto out;
        }
        sum += out[c];
    }
    if (m->task == QML_TASK_MULTICLASS && fabs(sum - 1) > 1e-3)
        rc = qn_err_set(err, QN_FAILED_PRECONDITION, "smoke: class probabilities sum to %g",
                        sum);
out:
    free(cols);
    free(out);
    return rc;
}
