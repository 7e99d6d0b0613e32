/*
 * linear.h - linear models: logistic regression (liblinear, L2-regularized
 * primal solver L2R_LR) and ridge linear regression (closed form, LAPACKE).
 *
 * Models take the dense row-major float matrix that a fitted feature pipeline
 * (transform.h) produces, and save to a small JSON document that serve loads
 * without liblinear: prediction is a dot product computed here.
 *
 *     qml_logistic_params lp = QML_LOGISTIC_DEFAULTS;  // C = 1, eps = 0.01, bias on
 *     qml_linear *m;
 *     if (qml_linear_fit_logistic(X, n, d, y, &lp, &m, &err) < 0) ...
 *     double *p = malloc(n * qml_linear_n_outputs(m) * sizeof *p);
 *     qml_linear_predict(m, X, n, d, p, &err);     // p[i*2+1] = P(y = classes[1])
 *     char *json = qml_linear_to_json(m, &err);    // a manifest file
 *     qml_linear_free(m);
 *
 *     qml_ridge_params rp = {.lambda = 1.0};
 *     qml_linear_fit_ridge(X, n, d, y, &rp, &m, &err);  // predict gives y-hat
 *
 * Ownership: a qml_linear owns its coefficients. Thread safety: fitting is
 * reentrant; a fitted or loaded model is immutable, so predict may run on one
 * model from many threads at once.
 */
#ifndef QML_LINEAR_H
#define QML_LINEAR_H

#include <stddef.h>

#include "core/err.h"

typedef enum qml_linear_kind { QML_LINEAR_REGRESSION = 0, QML_LOGISTIC } qml_linear_kind;

typedef struct qml_ridge_params {
    /* Penalty on the coefficients, >= 0; the intercept is never penalized
     * (the problem is solved on centred data). 0 is ordinary least squares
     * and fails on a singular design. */
    double lambda;
    int fit_intercept;  /* 0 = no intercept (then nothing is centred) */
} qml_ridge_params;

typedef struct qml_logistic_params {
    double C;            /* inverse regularization strength, > 0 */
    double eps;          /* liblinear stopping tolerance, > 0 */
    int bias;            /* 1 = learn an intercept (liblinear's bias feature of value 1;
                            note liblinear also regularizes it) */
    size_t n_weights;    /* optional class weights: C is multiplied by weight[i] for the */
    const int *weight_label; /* class weight_label[i] */
    const double *weight;
} qml_logistic_params;

#define QML_LOGISTIC_DEFAULTS ((qml_logistic_params){.C = 1.0, .eps = 0.01, .bias = 1})

#define QML_LINEAR_MAX_FEATURES (1 << 22)
#define QML_LINEAR_MAX_CLASSES 1024

typedef struct qml_linear qml_linear;

/* Ridge regression: solves (Xc'Xc + lambda I) w = Xc'yc by Cholesky (dposv),
 * Xc, yc centred when fit_intercept, then intercept = mean(y) - mean(X) w.
 * X is n x d row major, y has n values. Returns 0 and *out, or
 * QN_INVALID_ARGUMENT for n == 0, d == 0, non-finite data or lambda < 0, and
 * QN_FAILED_PRECONDITION when the system is singular or too ill-conditioned
 * (reciprocal condition number < 1e-13) to solve: raise lambda. */
int qml_linear_fit_ridge(const float *X, size_t n, size_t d, const double *y,
                         const qml_ridge_params *p, qml_linear **out, qn_err *err);

/* Logistic regression with liblinear's L2R_LR solver. y holds integer class
 * labels (at least two distinct); more than two classes are fitted one
 * versus rest, as liblinear does. Returns 0 and *out, or QN_INVALID_ARGUMENT
 * naming the fault (non-integer label, one class, bad C/eps, a class weight
 * for an unknown label). liblinear's own progress output is silenced. */
int qml_linear_fit_logistic(const float *X, size_t n, size_t d, const double *y,
                            const qml_logistic_params *p, qml_linear **out, qn_err *err);

void qml_linear_free(qml_linear *m);

qml_linear_kind qml_linear_get_kind(const qml_linear *m);
size_t qml_linear_n_features(const qml_linear *m);
/* 1 for regression; the number of classes for logistic. */
size_t qml_linear_n_outputs(const qml_linear *m);
/* Logistic: the class labels, ascending (n_outputs of them); NULL for regression. */
const int *qml_linear_classes(const qml_linear *m);
/* Coefficients of output k (d values; logistic binary has one row, for
 * classes[1]) and its intercept. */
const double *qml_linear_coef(const qml_linear *m, size_t k);
double qml_linear_intercept(const qml_linear *m, size_t k);

/* Predicts n rows of X (n x d, d must equal n_features: QN_INVALID_ARGUMENT
 * otherwise) into out: regression y-hat (n values); logistic class
 * probabilities (n x n_classes, row major, in classes order; binary is
 * sigmoid, multiclass normalizes the one-vs-rest sigmoids as liblinear does).
 * Thread-safe. */
int qml_linear_predict(const qml_linear *m, const float *X, size_t n, size_t d, double *out,
                       qn_err *err);

/* The model as JSON text (malloc'd; caller frees), or NULL when out of memory:
 * {"format":"quern.linear/1","kind":"linear"|"logistic","n_features":d,
 *  "coef":[[...]],"intercept":[...],"classes":[...]} (classes for logistic only;
 * coef has one row per output row, see qml_linear_coef). Training parameters
 * belong to the manifest's "params", not here. Doubles keep 17 digits, so a
 * reload predicts bit for bit the same. */
char *qml_linear_to_json(const qml_linear *m, qn_err *err);

/* Loads what qml_linear_to_json wrote (len bytes). Refuses malformed JSON
 * with QN_INVALID_ARGUMENT and the path at fault (syntax, unknown format or
 * kind, shapes that disagree with n_features or classes, non-finite numbers,
 * unsorted or duplicate classes). */
int qml_linear_from_json(const char *json, size_t len, qml_linear **out, qn_err *err);

#endif
