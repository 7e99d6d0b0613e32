/*
 * xgb.h - gradient-boosted trees through the XGBoost C API.
 *
 * Trains from a dense row-major float32 matrix (NaN is missing), saves and
 * loads XGBoost's own JSON model format (so a model trained by Python's
 * xgboost loads here unchanged, and ours loads there), and predicts batches
 * with XGBoost's in-place prediction.
 *
 *     qml_xgb_param p[] = {{"objective", "binary:logistic"}, {"num_round", "200"},
 *                          {"max_depth", "6"}, {"eta", "0.1"}, {"tree_method", "hist"}};
 *     qml_xgb_data d = {.x = x, .n_rows = n, .n_cols = 6, .y = y};
 *     qml_xgb_train_opts o = {.params = p, .n_params = 5};
 *     qml_xgb *m;
 *     if (qml_xgb_train(&d, &o, &m, &err) < 0) ...
 *     qml_xgb_save(m, "bundle/model.json", &err);
 *     qml_xgb_free(m);
 *
 *     qml_xgb_load_file("bundle/model.json", 1, &m, &err);   // 1 OpenMP thread per call
 *     float *prob = malloc(n * qml_xgb_n_outputs(m) * sizeof *prob);
 *     qml_xgb_predict(m, x, n, qml_xgb_n_features(m), prob, &err);  // from any thread
 *
 * Outputs per row: 1 for binary:logistic (the probability of class 1) and
 * regression, num_class for multi:softprob (class probabilities).
 *
 * Thread safety: XGBoost documents (doc/prediction.rst, "Thread Safety", since
 * 1.4) that prediction on one tree booster is thread-safe as long as nothing
 * trains or sets parameters on it concurrently. Its in-place prediction keeps
 * its result in a per-thread, per-booster buffer, configures the learner lazily
 * under a lock, and reads the trees. We configure the booster during load (one
 * warm-up prediction) so concurrent callers never race on that lazy step, copy
 * the result out before returning, and never change a loaded booster, so
 * qml_xgb_predict may be called from many threads on one qml_xgb.
 * tests/unit/ml/test_xgb.c hammers it from 4 threads against serial results.
 */
#ifndef QML_XGB_H
#define QML_XGB_H

#include <stddef.h>

#include "core/err.h"

typedef struct qml_xgb qml_xgb;

/* One training parameter as text, as XGBoost takes them. Known keys (others
 * are refused, so a typo does not silently train a different model):
 * objective (binary:logistic, multi:softprob, multi:softmax, reg:squarederror,
 * reg:logistic, count:poisson), num_class, num_round (ours: boosting rounds,
 * default 100), max_depth, eta, subsample, colsample_bytree, min_child_weight,
 * gamma, lambda, alpha, max_bin, seed, nthread, tree_method (hist, approx,
 * exact, auto), eval_metric, base_score. */
typedef struct qml_xgb_param {
    const char *key;
    const char *value;
} qml_xgb_param;

/* A dense training or evaluation set; borrowed, read-only. */
typedef struct qml_xgb_data {
    const float *x;     /* n_rows * n_cols, row-major, NaN = missing */
    size_t n_rows, n_cols;
    const float *y;     /* n_rows labels */
    const float *w;     /* n_rows weights >= 0, or NULL for all 1 */
} qml_xgb_data;

/* What a progress callback sees after each round. */
typedef struct qml_xgb_progress {
    int round;          /* 0-based round just finished */
    int num_round;
    const char *metric; /* XGBoost's first eval metric name, e.g. "logloss" */
    double train;       /* that metric on the training set */
    double eval;        /* on the eval set, NAN when there is none */
} qml_xgb_progress;

/* Called on the training thread after every round; return nonzero to cancel. */
typedef int (*qml_xgb_progress_fn)(const qml_xgb_progress *p, void *ctx);

typedef struct qml_xgb_train_opts {
    const qml_xgb_param *params;
    size_t n_params;
    const qml_xgb_data *eval;      /* optional; reported to progress */
    qml_xgb_progress_fn progress;  /* optional */
    void *progress_ctx;
} qml_xgb_train_opts;

/* Trains a booster. Returns 0 and *out (owned by the caller, free with
 * qml_xgb_free), or a negative code: QN_INVALID_ARGUMENT for bad data or
 * params (naming the key or row), QN_CANCELLED when progress asked to stop,
 * QN_INTERNAL for XGBoost failures (its message included). The metrics in
 * progress are only computed when a callback is given. Thread-safe on
 * distinct data. */
int qml_xgb_train(const qml_xgb_data *train, const qml_xgb_train_opts *opts, qml_xgb **out,
                  qn_err *err);

/* Loads an XGBoost JSON model from a file (at most 1 GiB) or a buffer.
 * nthread is the OpenMP threads each prediction may use (0: XGBoost's default,
 * all cores; a server running many requests at once wants 1). Returns 0 and
 * *out, or QN_NOT_FOUND / QN_INVALID_ARGUMENT (not a model XGBoost accepts,
 * or a model without trees) / QN_INTERNAL, with err filled. */
int qml_xgb_load_file(const char *path, int nthread, qml_xgb **out, qn_err *err);
int qml_xgb_load_buffer(const void *buf, size_t len, int nthread, qml_xgb **out, qn_err *err);

/* Saves the model as XGBoost JSON to path (written to a temporary file and
 * renamed into place). Not to be called while another thread predicts. */
int qml_xgb_save(const qml_xgb *m, const char *path, qn_err *err);
/* The JSON model in a malloc'd buffer (*out, *len; caller frees). */
int qml_xgb_save_buffer(const qml_xgb *m, char **out, size_t *len, qn_err *err);

/* What the model expects and returns (fixed at load or train time). */
size_t qml_xgb_n_features(const qml_xgb *m);
size_t qml_xgb_n_outputs(const qml_xgb *m);   /* floats per row from predict */
int qml_xgb_n_classes(const qml_xgb *m);      /* num_class, 0 when not multiclass */
const char *qml_xgb_objective(const qml_xgb *m);
int qml_xgb_n_rounds(const qml_xgb *m);

/* Predicts n_rows rows of x (row-major, n_cols must equal qml_xgb_n_features,
 * NaN = missing) into out, which holds n_rows * qml_xgb_n_outputs floats
 * (row-major: for multiclass, row i's class probabilities are contiguous).
 * Returns 0, or QN_INVALID_ARGUMENT for a wrong width (saying both widths),
 * QN_INTERNAL with XGBoost's message. Thread-safe: many threads may predict
 * on one qml_xgb at once. */
int qml_xgb_predict(const qml_xgb *m, const float *x, size_t n_rows, size_t n_cols, float *out,
                    qn_err *err);

/* Trees per round: 1, or num_class for a multiclass model. */
size_t qml_xgb_n_groups(const qml_xgb *m);

/* Exact TreeSHAP contributions, computed by XGBoost itself (the numbers of
 * Python's predict(..., pred_contribs=True)), for n_rows rows of x as in
 * qml_xgb_predict. contribs gets n_rows * n_groups * (n_features + 1) floats,
 * row-major [row][group][feature], the last of each group being the bias
 * (the base score and the trees' expected value); margin (NULL to skip) gets
 * n_rows * n_groups raw margins (before the sigmoid or softmax). Each group's
 * contributions sum to its margin up to float rounding. Returns 0,
 * QN_INVALID_ARGUMENT for a wrong width or too large a batch, QN_INTERNAL
 * with XGBoost's message. Thread-safe, as qml_xgb_predict. */
int qml_xgb_contribs(const qml_xgb *m, const float *x, size_t n_rows, size_t n_cols,
                     float *contribs, float *margin, qn_err *err);

/* 1 when predictions walk the trees in libquern-ml (a loaded gbtree model
 * with numeric splits and a binary:logistic, reg:squarederror or
 * multi:softprob objective, checked against XGBoost on probe rows at load),
 * 0 when they go through XGBoost's C API. Either way the answers are
 * XGBoost's (within 1e-6). */
int qml_xgb_native(const qml_xgb *m);
void qml_xgb_free(qml_xgb *m);

#endif
