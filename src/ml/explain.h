/*
 * explain.h - why a model predicted what it did (DESIGN.md section 5,
 * "Explanations"): additive per-feature contributions for tabular models and
 * the past items behind a recommendation for ALS.
 *
 *     // tabular: the same raw named columns as qml_model_predict
 *     qml_explanation e;
 *     if (qml_model_explain(m, &batch, QML_EXPLAIN_BY_COLUMN, &e, &err) < 0) -> 400
 *     for (size_t r = 0; r < e.n_rows; r++)
 *         for (size_t k = 0; k < e.n_outputs; k++) {
 *             double sum = e.bias[r * e.n_outputs + k];
 *             for (size_t j = 0; j < e.n_terms; j++)
 *                 sum += e.contrib[(r * e.n_outputs + k) * e.n_terms + j];   // term e.names[j]
 *             // sum == e.margin[r * e.n_outputs + k] (float rounding aside)
 *         }
 *     qml_explanation_free(&e);
 *
 *     // ALS: the user's past items that contributed most to item's score
 *     qml_model_rec top[10];
 *     qml_rec_explanation x;
 *     int n = qml_model_explain_rec(m, "u3", NULL, 0, 10, top, &x, &err);  // NULL: top pick
 *
 * Tabular contributions are in margin space (log-odds for binary classifiers,
 * the per-class score before softmax or normalisation, the prediction itself
 * for regressors): bias + the contributions = the margin, exactly as the
 * model adds it up.
 *   xgboost   exact TreeSHAP computed by XGBoost itself: the numbers of Python
 *             xgboost's predict(..., pred_contribs=True); the bias is the base
 *             score plus the trees' expected value.
 *   logistic, linear   coefficient times the transformed value; the bias is
 *             the intercept. A standardised column contributes
 *             coef * (x - mean) / std, so relative to the training mean.
 * QML_EXPLAIN_BY_COLUMN adds up the features a raw input column becomes (its
 * one-hot or hash buckets), which SHAP's additivity allows; the terms are then
 * the model's inputs. QML_EXPLAIN_BY_FEATURE keeps the transformed features
 * ("workclass=Private").
 *
 * ALS follows implicit's AlternatingLeastSquares.explain (Hu, Koren and
 * Volinsky 2008, section 5): with W_u = (Y'C_uY + lambda I)^-1 for the user,
 * the score of item j decomposes over the user's past items i as
 * c_ui * (y_j' W_u y_i). W_u is solved here by Cholesky from the item
 * factors, as implicit recomputes it, so the explained total is the exact
 * least-squares score, close to but not the same as the served score of a
 * model trained by conjugate gradient.
 *
 * Thread-safe: everything here only reads the model.
 */
#ifndef QML_EXPLAIN_H
#define QML_EXPLAIN_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "ml/als.h"
#include "ml/model.h"

typedef enum qml_explain_by {
    QML_EXPLAIN_BY_COLUMN = 0, /* per raw input column */
    QML_EXPLAIN_BY_FEATURE,    /* per transformed feature */
} qml_explain_by;

/* Additive contributions for a batch. Owns contrib, bias and margin; names
 * are borrowed from the model (valid while it is). */
typedef struct qml_explanation {
    size_t n_rows;
    size_t n_outputs;    /* 1, or the number of classes (one margin each) */
    size_t n_terms;      /* inputs or features, per qml_explain_by */
    const char **names;  /* n_terms names (owned array, borrowed strings) */
    double *contrib;     /* [row][output][term] */
    double *bias;        /* [row][output] */
    double *margin;      /* [row][output]: the model's own margin */
    const char *method;  /* "treeshap" or "linear" (static) */
    const char *link;    /* how the margin becomes the output: "logistic", "softmax",
                            "normalised_logistic" (one-vs-rest), "identity" (static) */
} qml_explanation;

/* Explains every row of b (as qml_model_predict takes it) into *out. Returns
 * 0, or qml_model_predict's errors for the inputs (QN_INVALID_ARGUMENT naming
 * the input and row), QN_FAILED_PRECONDITION for an ALS model (use
 * qml_model_explain_rec), QN_RESOURCE_EXHAUSTED, QN_INTERNAL (XGBoost). On
 * failure *out holds nothing to free. */
int qml_model_explain(const qml_model *m, const qml_input_batch *b, qml_explain_by by,
                      qml_explanation *out, qn_err *err);
void qml_explanation_free(qml_explanation *e);

/* What was explained for one user. */
typedef struct qml_rec_explanation {
    const char *item_id;    /* the item explained (borrowed from the model) */
    int recommended;        /* 1 when it was the user's top recommendation (no item given) */
    float score;            /* the model's score x_u . y_j */
    double total;           /* the sum of every past item's contribution */
    int64_t n_past;         /* the user's past items (all of them, not only the n shown) */
} qml_rec_explanation;

/* The n past items of user_id that contributed most to item_id's score
 * (item_id NULL: to the user's top recommendation, as qml_model_recommend
 * gives it with exclude_seen),
 * best first, into out (room for n). Confidence per past item is 1 + alpha
 * (the bundle keeps which items a user had, not their weights, so each
 * counts as one interaction); alpha and lambda come from the manifest's
 * params.spec.params (alpha, regularization), else the training defaults 1
 * and 0.01. Returns the number written, or QN_NOT_FOUND (user or item
 * unknown to the model), QN_FAILED_PRECONDITION (not an ALS model; a user
 * without past items, who is served the popularity fallback and has nothing
 * to explain), QN_INVALID_ARGUMENT (n < 1). Thread-safe. */
int qml_model_explain_rec(const qml_model *m, const char *user_id, const char *item_id,
                          int exclude_seen, int n, qml_model_rec *out, qml_rec_explanation *info,
                          qn_err *err);

/* Y'Y of m's item factors: factors x factors doubles, row-major, upper
 * triangle filled (the part of every user's system that does not depend on
 * the user; implicit caches it as YtY). malloc'd; NULL when out of memory.
 * qml_model makes it once at load. */
double *qml_als_gram(const qml_als *m);

/* The ALS computation on indices: the contributions c * (y_item' W_u y_i)
 * of user's past items, the top n best first into out (ties: lower item
 * index first), their total in *total. Returns the number written, or
 * gram is qml_als_gram(m), or NULL to compute it here (O(items x factors^2)).
 * QN_INVALID_ARGUMENT (indices out of range, n < 1, negative lambda or
 * confidence below 1), QN_FAILED_PRECONDITION (no past items; a system that
 * is not positive definite), QN_RESOURCE_EXHAUSTED. Thread-safe. */
int qml_als_explain(const qml_als *m, const double *gram, int32_t user, int32_t item,
                    double lambda, double confidence, int n, qml_als_rec *out, double *total,
                    qn_err *err);

#endif
