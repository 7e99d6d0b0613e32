/*
 * model.h - a loaded model of any kind, as quern-serve and quern-train use it.
 *
 * The glue between a bundle directory (bundle.h) and the model modules
 * (transform.h, linear.h, xgb.h, als.h): one handle that knows its kind, its
 * Open Inference Protocol inputs and outputs, and how to turn raw named inputs
 * into predictions through the fitted transforms. Serve and train both go
 * through it, so neither re-implements the glue and both predict the same way.
 *
 *     qml_model_opts o = {.threads = 1};        // XGBoost OpenMP threads per call
 *     qml_model *m;
 *     if (qml_model_load("cache/adult/7", &o, &m, &err) < 0 ||
 *         qml_model_smoke(m, &err) < 0)
 *         -> refuse this version, keep serving the old one
 *
 *     // tabular: the raw feature columns, by name, as a client sends them
 *     double age[] = {39, 50};
 *     qml_str work[] = {{"State-gov", 9}, {NULL, 0}};     // NULL ptr: missing
 *     qml_input_col cols[] = {{"age", QML_INPUT_NUM, age, NULL},
 *                             {"workclass", QML_INPUT_STR, NULL, work}, ...};
 *     qml_input_batch b = {.n_rows = 2, .n_cols = 14, .cols = cols};
 *     float *p = malloc(2 * qml_model_output_width(m) * sizeof *p);
 *     if (qml_model_predict(m, &b, p, &err) < 0) -> 400 with err.msg (names the input)
 *
 *     // ALS
 *     qml_model_rec top[10];
 *     int fallback;
 *     int n = qml_model_recommend(m, "17850", 10, 1, top, &fallback, &err);
 *     qml_model_free(m);
 *
 * Inputs and outputs (what GET /v2/models/{m} reports):
 *   tabular (logistic, linear, xgboost): one input per raw feature column, shape
 *     [-1]: "FP64" for numeric, boolean and timestamp columns, "BYTES" for
 *     categorical ones. Outputs: "probability" FP32 [-1] (P(y = classes[1]))
 *     for a binary classifier, "probabilities" FP32 [-1, C] (in classes order)
 *     for more classes, "prediction" FP32 [-1] for a regressor.
 *   als: input "user_id" BYTES [-1]; outputs "item_id" BYTES [-1, k] and
 *     "score" FP32 [-1, k] (k: the training spec's ranking cutoff; a request may
 *     ask for another k).
 *
 * Bundle layout per kind (file names in the manifest's "files"):
 *   xgboost:  model.json (XGBoost's JSON), profile.json; "transforms" in the manifest
 *   logistic, linear: model.json (quern.linear/1, linear.h), profile.json; "transforms"
 *   als: the files of qml_als_save at the top of the bundle (user_factors.npy,
 *     item_factors.npy, popularity.npy, user_items_indptr.npy,
 *     user_items_indices.npy, user_ids.json, item_ids.json), profile.json. The
 *     bundle directory is the ALS directory, so qml_als_load reads it as is
 *     once qml_bundle_open has checked every file's digest.
 * The manifest's "params" carry what prediction needs besides the files:
 * {"task":"binary|multiclass|regression|ranking", "classes":[0,1] (classifiers),
 *  "label":..., "k":10 (als), "spec":{the training spec}, plus the kind's params}.
 *
 * Ownership and threads: a model owns everything it loaded. It is immutable
 * once made: any number of threads may predict, recommend and read it at once.
 */
#ifndef QML_MODEL_H
#define QML_MODEL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "ml/als.h"
#include "ml/bundle.h"
#include "ml/frame.h"
#include "ml/linear.h"
#include "ml/transform.h"
#include "ml/xgb.h"

typedef enum qml_task {
    QML_TASK_BINARY = 0,
    QML_TASK_MULTICLASS,
    QML_TASK_REGRESSION,
    QML_TASK_RANKING,
} qml_task;

/* "binary", "multiclass", "regression", "ranking". */
const char *qml_task_name(qml_task t);

typedef struct qml_model_opts {
    int threads;   /* OpenMP threads per XGBoost prediction; 0 means 1 (a server runs
                      many requests at once) */
} qml_model_opts;

typedef struct qml_model qml_model;

/* Opens the bundle in dir (manifest and every file's digest are checked, see
 * qml_bundle_open), then loads the model by its kind and checks that its parts
 * agree: the transforms' width equals the model's feature count, every
 * transform input is a declared input, the params' task and classes fit the
 * model, an ALS bundle lists all its files. opts may be NULL. Returns 0 and
 * *out (free with qml_model_free), or a negative code with err naming the
 * file or field at fault (QN_NOT_FOUND: no manifest; QN_INVALID_ARGUMENT:
 * tampered, inconsistent or malformed). */
int qml_model_load(const char *dir, const qml_model_opts *opts, qml_model **out, qn_err *err);

void qml_model_free(qml_model *m);

/* "als", "logistic", "linear", "xgboost". */
const char *qml_model_kind(const qml_model *m);
qml_task qml_model_task(const qml_model *m);
/* The manifest document (borrowed), or NULL for a model made in memory by a
 * training run before its bundle was written. */
const json_t *qml_model_manifest(const qml_model *m);

size_t qml_model_n_inputs(const qml_model *m);
const qml_tensor_spec *qml_model_input(const qml_model *m, size_t i);
size_t qml_model_n_outputs(const qml_model *m);
const qml_tensor_spec *qml_model_output(const qml_model *m, size_t i);

/* Floats per row written by qml_model_predict: 1 (binary, regression) or the
 * number of classes; 0 for ALS. */
size_t qml_model_output_width(const qml_model *m);
/* Classifiers: the class labels (ascending) and their count; NULL/0 otherwise. */
const double *qml_model_classes(const qml_model *m, size_t *n);

/* The parts, borrowed (NULL when the kind has none). */
const qml_features *qml_model_features(const qml_model *m);
const qml_als *qml_model_als(const qml_model *m);
const qml_linear *qml_model_linear(const qml_model *m);
const qml_xgb *qml_model_xgb(const qml_model *m);

/* ---- tabular prediction --------------------------------------------------- */

/* A string cell: len bytes at ptr (no NUL needed; none allowed inside).
 * ptr NULL means missing. */
typedef struct qml_str {
    const char *ptr;
    size_t len;
} qml_str;

typedef enum qml_input_type { QML_INPUT_NUM = 0, QML_INPUT_STR } qml_input_type;

/* One named input column of a batch: n_rows numbers (NaN = missing) or n_rows strings. */
typedef struct qml_input_col {
    const char *name;
    qml_input_type type;
    const double *num;    /* QML_INPUT_NUM */
    const qml_str *str;   /* QML_INPUT_STR */
} qml_input_col;

/* A batch of raw inputs, column-wise; borrowed for the duration of a call. */
typedef struct qml_input_batch {
    size_t n_rows;
    size_t n_cols;
    const qml_input_col *cols;
} qml_input_batch;

#define QML_MODEL_MAX_ROWS ((size_t)1 << 20)

/* Applies the fitted transforms and then the model to every row of b,
 * writing n_rows * qml_model_output_width floats to out (row-major). Every
 * model input must be among b's columns exactly once; extra columns are
 * ignored. Numeric inputs take numbers or strings that parse as numbers;
 * categorical inputs take strings or numbers. Returns 0, or
 * QN_INVALID_ARGUMENT naming the input (and row) at fault: a missing input, a
 * duplicate, a wrong type, a missing value or NaN where the transforms have no
 * imputer, infinity, a NUL inside a string, more than QML_MODEL_MAX_ROWS rows;
 * QN_FAILED_PRECONDITION for an ALS model (use qml_model_recommend);
 * QN_RESOURCE_EXHAUSTED; QN_INTERNAL (XGBoost). Thread-safe. */
int qml_model_predict(const qml_model *m, const qml_input_batch *b, float *out, qn_err *err);

/* The first half of qml_model_predict: the fitted transforms alone, writing
 * n_rows * qml_features_n_features floats to X (what the model proper takes;
 * see explain.h). Same checks and errors. Thread-safe. */
int qml_model_transform(const qml_model *m, const qml_input_batch *b, float *X, qn_err *err);

/* The same over the rows of a frame (columns found by name): what training
 * and evaluation use. Thread-safe. */
int qml_model_predict_frame(const qml_model *m, const qml_frame *f, float *out, qn_err *err);

/* ---- recommendations (ALS) ---------------------------------------------- */

typedef struct qml_model_rec {
    const char *item_id;   /* borrowed from the model */
    float score;
} qml_model_rec;

/* Top-k items for user_id, best first (qml_als_recommend_id): a user unknown
 * to the model or without training interactions gets the most popular items
 * and *fallback = 1. out has room for k. Returns the number written, or
 * QN_INVALID_ARGUMENT (k < 1), QN_FAILED_PRECONDITION (not an ALS model).
 * Thread-safe. */
int qml_model_recommend(const qml_model *m, const char *user_id, int k, int exclude_seen,
                        qml_model_rec *out, int *fallback, qn_err *err);

/* What the monitor watches in a recommender's traffic (DESIGN.md section 7),
 * for one request whose answer was recs[0..n): the requested user's activity
 * (distinct training items; 0 for a user the model does not know) and the
 * mean popularity of the recommended items (training users per item). The
 * training run profiles the same two quantities, so live windows compare
 * like with like. 0, or QN_FAILED_PRECONDITION for a non-ALS model.
 * Thread-safe. */
int qml_model_rec_context(const qml_model *m, const char *user_id, const qml_model_rec *recs, int n,
                          double *user_activity, double *item_popularity);

/* The k items most similar to item_id (cosine of item factors), best first.
 * Returns the number written, QN_NOT_FOUND for an unknown item, or as above. */
int qml_model_similar(const qml_model *m, const char *item_id, int k, qml_model_rec *out,
                      qn_err *err);

/* ---- checks ---------------------------------------------------------------- */

/* The check serve runs before it swaps a new version in. Tabular: predicts one
 * synthetic row (0 for every numeric input, an unseen category for every
 * categorical one, so one-hot takes its unknown bucket) and requires finite
 * outputs, probabilities within [0, 1] summing to 1 across classes. ALS:
 * recommends for the first known user and finds similar items for the first
 * item, requiring results with finite scores and known ids. Returns 0, or
 * QN_FAILED_PRECONDITION (or the prediction's error) with err saying what
 * failed. Thread-safe. */
int qml_model_smoke(const qml_model *m, qn_err *err);

/* ---- for train.c: models made in memory ------------------------------------
 * Each takes ownership of the parts it is given (also on failure). */

/* A tabular model: features plus exactly one of lin/xgb. input_types[i] is
 * the qml_type of features' input i (its datatype). classes: n_classes labels
 * (classifiers; copied). */
int qml__model_new_tabular(const char *kind, qml_task task, qml_features *features,
                           const qml_type *input_types, qml_linear *lin, qml_xgb *xgb,
                           const double *classes, size_t n_classes, qml_model **out,
                           qn_err *err);
/* An ALS model with ids; k is the declared ranking cutoff. */
int qml__model_new_als(qml_als *als, int k, qml_model **out, qn_err *err);
/* The model file of a tabular model: XGBoost JSON or quern.linear/1 JSON
 * (malloc'd in *buf; caller frees). */
int qml__model_save_file(const qml_model *m, char **buf, size_t *len, qn_err *err);
/* The files of an ALS bundle, as qml_als_save names them. */
#define QML__ALS_NFILES 7
extern const char *const qml__als_files[QML__ALS_NFILES];
/* ALS: Y'Y of the item factors (qml_als_gram), made once at load for
 * explanations (explain.h); NULL for other kinds. */
const double *qml__model_als_gram(const qml_model *m);
/* Attaches the manifest written for m (taken over). */
void qml__model_set_manifest(qml_model *m, qml_manifest *manifest);

#endif
