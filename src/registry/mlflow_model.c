/*
 * mlflow_model.c - a Quern manifest for an MLflow model directory stored
 * through the artifacts proxy, so that quern-serve runs an MLflow xgboost
 * model unchanged.
 *
 * The directory's MLmodel file (YAML, as mlflow writes it) names the
 * flavours; the xgboost flavour's `data` is the model file and its
 * `model_format` its format. Quern serves XGBoost's own JSON, so the model
 * file must be JSON (model_format json, or a file whose bytes are JSON). The
 * inputs come from the MLmodel signature when it is column-based (the
 * column names), else from the XGBoost JSON's learner.feature_names, else
 * from its num_feature as f0..f{N-1} (what `quern models import --inputs N`
 * does); the output is `probability`, as import gives xgboost models.
 *
 * Only the few lines of YAML mlflow writes are read: top-level keys, the
 * flavours' keys two levels down, and single-quoted signature strings that
 * PyYAML may fold over several lines. Everything else is ignored.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "registry/mlflow_parse.h"
#include "registry/mlflow_registry.h"
#include "registry/registry.h"

#define MAX_MLMODEL (1 << 20)
#define MAX_XGB_JSON (512LL << 20)

/* The bytes of the blob an artifact path points at (NUL-terminated; caller
 * frees). QN_NOT_FOUND when the path is not stored. */
static int read_artifact(qn_conn *c, const char *blob_dir, const char *path, long long max, char **out,
                         size_t *len, qn_err *err)
{
    char digest[80], file[PATH_MAX];
    int64_t size;
    int rc = reg_artifact_lookup(c, path, digest, &size, err);
    if (rc < 0)
        return rc;
    if (size > max)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s is %lld bytes; at most %lld are read", path,
                          (long long)size, max);
    snprintf(file, sizeof file, "%s/%.2s/%s", blob_dir, digest + 7, digest + 7);
    FILE *f = fopen(file, "rb");
    char *buf = malloc((size_t)size + 1);
    size_t n = f && buf ? fread(buf, 1, (size_t)size, f) : 0;
    if (f)
        fclose(f);
    if (!f || !buf || n != (size_t)size) {
        free(buf);
        return qn_err_set(err, QN_INTERNAL, "cannot read blob %s of %s", digest, path);
    }
    buf[n] = '\0';
    *out = buf;
    if (len)
        *len = n;
    return 0;
}

static json_t *tensor(const char *name)
{
    return json_pack("{s:s, s:s, s:[i]}", "name", name, "datatype", "FP32", "shape", -1);
}

/* Inputs from a column-based signature: [{"name":..,"type":"double"}...]. */
static json_t *signature_inputs(const char *sig)
{
    json_error_t je;
    json_t *cols = sig ? json_loads(sig, 0, &je) : NULL, *out = NULL, *col;
    size_t i;
    if (!json_is_array(cols) || !json_array_size(cols))
        goto done;
    out = json_array();
    json_array_foreach(cols, i, col) {
        const char *name = json_string_value(json_object_get(col, "name"));
        const char *type = json_string_value(json_object_get(col, "type"));
        if (!name || !type || !(strcmp(type, "double") == 0 || strcmp(type, "float") == 0 ||
                                strcmp(type, "long") == 0 || strcmp(type, "integer") == 0 ||
                                strcmp(type, "boolean") == 0)) {
            json_decref(out); /* tensor-based or non-numeric: fall back on the model */
            out = NULL;
            goto done;
        }
        json_array_append_new(out, tensor(name));
    }
done:
    json_decref(cols);
    return out;
}

/* Inputs from the XGBoost JSON: feature_names, else num_feature unnamed. */
static json_t *xgb_json_inputs(const json_t *doc)
{
    const json_t *learner = json_object_get(doc, "learner");
    const json_t *names = json_object_get(learner, "feature_names");
    json_t *out = json_array(), *nm;
    size_t i;
    if (json_is_array(names) && json_array_size(names)) {
        json_array_foreach(names, i, nm) {
            if (!json_string_value(nm) || !*json_string_value(nm)) {
                json_decref(out);
                return NULL;
            }
            json_array_append_new(out, tensor(json_string_value(nm)));
        }
        return out;
    }
    const char *nf = json_string_value(json_object_get(json_object_get(learner, "learner_model_param"), "num_feature"));
    char *end;
    errno = 0;
    long n = nf ? strtol(nf, &end, 10) : 0;
    if (!nf || errno || *end || n < 1 || n > 100000) {
        json_decref(out);
        return NULL;
    }
    for (long k = 0; k < n; k++) {
        char name[24];
        snprintf(name, sizeof name, "f%ld", k);
        json_array_append_new(out, tensor(name));
    }
    return out;
}

int mlf_model_manifest(qn_conn *c, const char *blob_dir, const char *dir, json_t **out, qn_err *err)
{
    char *text = NULL, *model = NULL;
    size_t mlen = 0;
    mlf_mlmodel m;
    json_t *doc = NULL, *inputs = NULL;
    *out = NULL;
    char path[2048];
    snprintf(path, sizeof path, "%s%sMLmodel", dir, *dir ? "/" : "");
    int rc = read_artifact(c, blob_dir, path, MAX_MLMODEL, &text, NULL, err);
    if (rc == QN_NOT_FOUND)
        return 0; /* not an MLflow model directory: nothing to serve */
    if (rc < 0)
        return rc;
    mlf_mlmodel_parse(text, &m);
    if (!m.has_xgboost) {
        rc = 0;
        goto out;
    }
    if (!m.xgb_data || !*m.xgb_data || strchr(m.xgb_data, '/') || strstr(m.xgb_data, "..")) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "%s: the xgboost flavour names no model file (data:)", path);
        goto out;
    }
    if (m.xgb_format && strcmp(m.xgb_format, "json") != 0 && strcmp(m.xgb_format, "null") != 0) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                        "%s: the xgboost model is in format '%s'; Quern serves XGBoost JSON models "
                        "(save with mlflow.xgboost.log_model(..., model_format=\"json\"))",
                        path, m.xgb_format);
        goto out;
    }
    snprintf(path, sizeof path, "%s%s%s", dir, *dir ? "/" : "", m.xgb_data);
    if ((rc = read_artifact(c, blob_dir, path, MAX_XGB_JSON, &model, &mlen, err)) < 0) {
        if (rc == QN_NOT_FOUND)
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "the MLmodel names %s, which was not uploaded", path);
        goto out;
    }
    json_error_t je;
    if (!(doc = json_loadb(model, mlen, 0, &je)) || !json_is_object(json_object_get(doc, "learner"))) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                        "%s is not an XGBoost JSON model (%s); Quern serves XGBoost JSON models", path,
                        doc ? "no \"learner\"" : je.text);
        goto out;
    }
    if (!(inputs = signature_inputs(m.sig_inputs)) && !(inputs = xgb_json_inputs(doc))) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                        "%s: neither the MLmodel signature nor the model names its features", path);
        goto out;
    }
    char digest[80];
    if ((rc = reg_artifact_lookup(c, path, digest, NULL, err)) < 0)
        goto out;
    *out = json_pack("{s:s, s:s, s:O, s:[{s:s, s:s, s:[i]}], s:{s:s}}", "format", "quern.model/1", "kind",
                     "xgboost", "inputs", inputs, "outputs", "name", "probability", "datatype", "FP32", "shape",
                     -1, "files", "model.json", digest);
    rc = *out ? 0 : qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
out:
    mlf_mlmodel_free(&m);
    json_decref(doc);
    json_decref(inputs);
    free(text);
    free(model);
    return rc;
}
