/*
 * explain.c - contributions behind a prediction (see explain.h).
 *
 * Tabular models go through the same transforms as prediction
 * (qml_model_transform), then XGBoost's own TreeSHAP (qml_xgb_contribs: the
 * library is exact by construction, so nothing here re-implements the trees)
 * or coefficient times value for linear models, then, when asked, the
 * features of one raw column are added back into it. ALS solves the user's
 * normal equations by Cholesky and splits the score over the user's past
 * items, as implicit's explain does. The system is factors x factors (tens
 * to a few hundred), so the Cholesky is written out here rather than taken
 * from LAPACK.
 */
#include "ml/explain.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int oom(qn_err *err)
{
    return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
}

void qml_explanation_free(qml_explanation *e)
{
    if (!e)
        return;
    free(e->names);
    free(e->contrib);
    free(e->bias);
    free(e->margin);
    memset(e, 0, sizeof *e);
}

static const char *xgb_link(const char *objective)
{
    if (!strcmp(objective, "binary:logistic") || !strcmp(objective, "reg:logistic"))
        return "logistic";
    if (!strncmp(objective, "multi:", 6))
        return "softmax";
    if (!strcmp(objective, "count:poisson"))
        return "exp";
    return "identity";
}

/* Per-feature contributions (n x no x (d + 1), the bias last) and margins. */
static int explain_features(const qml_model *m, const float *X, size_t n, size_t d, size_t no,
                            double *feat, double *margin, qn_err *err)
{
    const qml_xgb *xgb = qml_model_xgb(m);
    if (xgb) {
        float *c = malloc(n * no * (d + 1) * sizeof *c), *mg = malloc(n * no * sizeof *mg);
        int rc = c && mg ? qml_xgb_contribs(xgb, X, n, d, c, mg, err) : oom(err);
        if (rc == 0) {
            for (size_t i = 0; i < n * no * (d + 1); i++)
                feat[i] = c[i];
            for (size_t i = 0; i < n * no; i++)
                margin[i] = mg[i];
        }
        free(c);
        free(mg);
        return rc;
    }
    const qml_linear *lin = qml_model_linear(m);
    for (size_t r = 0; r < n; r++) {
        const float *x = X + r * d;
        for (size_t k = 0; k < no; k++) {
            const double *coef = qml_linear_coef(lin, k);
            double *o = feat + (r * no + k) * (d + 1);
            double z = qml_linear_intercept(lin, k);
            /* The margin in the order qml_linear_predict adds it up. */
            for (size_t j = 0; j < d; j++) {
                o[j] = coef[j] * x[j];
                z += coef[j] * x[j];
            }
            o[d] = qml_linear_intercept(lin, k);
            margin[r * no + k] = z;
        }
    }
    return 0;
}

int qml_model_explain(const qml_model *m, const qml_input_batch *b, qml_explain_by by,
                      qml_explanation *out, qn_err *err)
{
    memset(out, 0, sizeof *out);
    const qml_features *fs = qml_model_features(m);
    if (!fs)
        return qn_err_set(err, QN_FAILED_PRECONDITION,
                          "model kind %s takes no feature rows: explain a recommendation with "
                          "user_id", qml_model_kind(m));
    size_t n = b->n_rows, d = qml_features_n_features(fs);
    size_t no = qml_model_xgb(m) ? qml_xgb_n_groups(qml_model_xgb(m))
                                 : qml_model_output_width(m);
    size_t nt = by == QML_EXPLAIN_BY_FEATURE ? d : qml_features_n_inputs(fs);
    if (n > QML_MODEL_MAX_ROWS)
        return qml_model_transform(m, b, NULL, err); /* the row limit's error */
    size_t nr = n ? n : 1;
    float *X = malloc(nr * d * sizeof *X);
    double *feat = malloc(nr * no * (d + 1) * sizeof *feat);
    int rc = 0;
    out->names = malloc(nt * sizeof *out->names);
    out->contrib = calloc(nr * no * nt, sizeof *out->contrib);
    out->bias = malloc(nr * no * sizeof *out->bias);
    out->margin = malloc(nr * no * sizeof *out->margin);
    if (!X || !feat || !out->names || !out->contrib || !out->bias || !out->margin) {
        rc = oom(err);
        goto out;
    }
    out->n_rows = n;
    out->n_outputs = no;
    out->n_terms = nt;
    if (qml_model_xgb(m)) {
        out->method = "treeshap";
        out->link = xgb_link(qml_xgb_objective(qml_model_xgb(m)));
    } else {
        out->method = "linear";
        out->link = qml_model_task(m) == QML_TASK_REGRESSION ? "identity"
                    : no == 1                               ? "logistic"
                                                            : "normalised_logistic";
    }
    for (size_t j = 0; j < nt; j++)
        out->names[j] = by == QML_EXPLAIN_BY_FEATURE ? qml_features_name(fs, j)
                                                     : qml_features_input(fs, j);
    if (n == 0)
        goto out;
    if ((rc = qml_model_transform(m, b, X, err)) < 0 ||
        (rc = explain_features(m, X, n, d, no, feat, out->margin, err)) < 0)
        goto out;
    for (size_t rk = 0; rk < n * no; rk++) {
        const double *f = feat + rk * (d + 1);
        double *c = out->contrib + rk * nt;
        out->bias[rk] = f[d];
        if (by == QML_EXPLAIN_BY_FEATURE) {
            memcpy(c, f, d * sizeof *c);
            continue;
        }
        for (size_t j = 0; j < nt; j++) {
            size_t off = 0, w = 0;
            qml_features_slice(fs, j, &off, &w);
            for (size_t q = off; q < off + w; q++)
                c[j] += f[q];
        }
    }
out:
    free(X);
    free(feat);
    if (rc < 0)
        qml_explanation_free(out);
    return rc;
}

/* ---- ALS ------------------------------------------------------------------------ */

/* Solves A x = b for symmetric positive definite A (n x n, row-major, upper
 * triangle read; overwritten by the factor R with A = R'R) in place of b.
 * 0, or -1 when A is not positive definite. */
static int cholesky_solve(double *A, int n, double *b)
{
    for (int j = 0; j < n; j++) {
        for (int i = 0; i <= j; i++) {
            double s = A[i * n + j];
            for (int k = 0; k < i; k++)
                s -= A[k * n + i] * A[k * n + j];
            if (i < j) {
                A[i * n + j] = s / A[i * n + i];
            } else {
                if (!(s > 0) || !isfinite(s))
                    return -1;
                A[j * n + j] = sqrt(s);
            }
        }
    }
    for (int i = 0; i < n; i++) { /* R'y = b */
        double s = b[i];
        for (int k = 0; k < i; k++)
            s -= A[k * n + i] * b[k];
        b[i] = s / A[i * n + i];
    }
    for (int i = n - 1; i >= 0; i--) { /* R x = y */
        double s = b[i];
        for (int k = i + 1; k < n; k++)
            s -= A[i * n + k] * b[k];
        b[i] = s / A[i * n + i];
    }
    return 0;
}

double *qml_als_gram(const qml_als *m)
{
    int f = qml_als_factors(m);
    int32_t ni = qml_als_n_items(m);
    /* Only read: the accessor is not const because training writes through it. */
    const float *Y = qml_als_item_factors((qml_als *)m);
    double *G = calloc((size_t)f * (size_t)f, sizeof *G);
    if (!G)
        return NULL;
    for (int32_t i = 0; i < ni; i++) {
        const float *y = Y + (size_t)i * f;
        for (int a = 0; a < f; a++)
            for (int c = a; c < f; c++)
                G[a * f + c] += (double)y[a] * y[c];
    }
    return G;
}

int qml_als_explain(const qml_als *m, const double *gram, int32_t user, int32_t item,
                    double lambda, double confidence, int n, qml_als_rec *out, double *total,
                    qn_err *err)
{
    if (n < 1)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "the number of past items to show must be "
                          ">= 1, got %d", n);
    if (user < 0 || user >= qml_als_n_users(m) || item < 0 || item >= qml_als_n_items(m))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "user %d or item %d is out of range", user,
                          item);
    if (!(lambda >= 0) || !isfinite(lambda) || !(confidence >= 1) || !isfinite(confidence))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "regularization %g must be >= 0 and confidence %g >= 1", lambda,
                          confidence);
    const int32_t *seen = NULL;
    int64_t ns = qml_als_seen(m, user, &seen);
    if (ns <= 0)
        return qn_err_set(err, QN_FAILED_PRECONDITION,
                          "the user has no past items: there is nothing to explain");
    int f = qml_als_factors(m);
    const float *Y = qml_als_item_factors((qml_als *)m); /* only read */
    double *A = gram ? malloc((size_t)f * (size_t)f * sizeof *A) : qml_als_gram(m);
    double *w = malloc((size_t)f * sizeof *w), *s = malloc((size_t)ns * sizeof *s);
    int rc = 0;
    if (!A || !w || !s) {
        rc = oom(err);
        goto out;
    }
    /* A = Y'Y + lambda I + (c - 1) sum over past items of y_i y_i' (upper
     * triangle, row-major): Y'C_uY + lambda I with C_u = I + (c - 1) P_u. */
    if (gram)
        memcpy(A, gram, (size_t)f * (size_t)f * sizeof *A);
    for (int64_t k = 0; k < ns; k++) {
        const float *y = Y + (size_t)seen[k] * f;
        for (int a = 0; a < f; a++)
            for (int c = a; c < f; c++)
                A[a * f + c] += (confidence - 1) * y[a] * y[c];
    }
    for (int a = 0; a < f; a++) {
        A[a * f + a] += lambda;
        w[a] = Y[(size_t)item * f + a];
    }
    /* w = A^-1 y_item: the item weighted by the user's W_u. */
    if (cholesky_solve(A, f, w) < 0) {
        rc = qn_err_set(err, QN_FAILED_PRECONDITION,
                        "the user's system Y'CY + lambda I is not positive definite (raise "
                        "the regularization)");
        goto out;
    }
    double sum = 0;
    for (int64_t k = 0; k < ns; k++) {
        const float *y = Y + (size_t)seen[k] * f;
        double d = 0;
        for (int a = 0; a < f; a++)
            d += w[a] * y[a];
        s[k] = confidence * d;
        sum += s[k];
    }
    /* The top n by contribution: selection over ascending item indices,
     * strictly greater wins, so ties keep the lower index first. */
    int got = 0;
    for (; got < n && got < ns; got++) {
        int64_t best = -1;
        for (int64_t k = 0; k < ns; k++)
            if (!isnan(s[k]) && (best < 0 || s[k] > s[best]))
                best = k;
        if (best < 0)
            break;
        out[got] = (qml_als_rec){seen[best], (float)s[best]};
        s[best] = NAN;
    }
    *total = sum;
    rc = got;
out:
    free(A);
    free(w);
    free(s);
    return rc;
}

/* params.spec.params.<key> of the manifest, or dflt. */
static double spec_param(const qml_model *m, const char *key, double dflt)
{
    const json_t *man = qml_model_manifest(m);
    const json_t *p = json_object_get(
        json_object_get(json_object_get(json_object_get(man, "params"), "spec"), "params"), key);
    return json_is_number(p) ? json_number_value(p) : dflt;
}

int qml_model_explain_rec(const qml_model *m, const char *user_id, const char *item_id,
                          int exclude_seen, int n, qml_model_rec *out, qml_rec_explanation *info,
                          qn_err *err)
{
    const qml_als *als = qml_model_als(m);
    memset(info, 0, sizeof *info);
    if (!als)
        return qn_err_set(err, QN_FAILED_PRECONDITION,
                          "model kind %s does not recommend: explain feature rows instead",
                          qml_model_kind(m));
    if (n < 1)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "k must be >= 1, got %d", n);
    int32_t u = qml_als_user_index(als, user_id);
    if (u < 0)
        return qn_err_set(err, QN_NOT_FOUND,
                          "user '%s' is not known to the model (it has no past items to "
                          "explain)", user_id);
    const int32_t *seen;
    info->n_past = qml_als_seen(als, u, &seen);
    if (info->n_past <= 0)
        return qn_err_set(err, QN_FAILED_PRECONDITION,
                          "user '%s' has no past items in the training data (it is served the "
                          "popularity fallback): there is nothing to explain", user_id);
    int32_t it;
    if (item_id) {
        if ((it = qml_als_item_index(als, item_id)) < 0)
            return qn_err_set(err, QN_NOT_FOUND, "item '%s' is not known to the model", item_id);
    } else {
        qml_als_rec top;
        int got = qml_als_recommend(als, u, 1, exclude_seen, &top, err);
        if (got < 0)
            return got;
        if (got == 0)
            return qn_err_set(err, QN_FAILED_PRECONDITION,
                              "user '%s' has seen every item: there is no recommendation to "
                              "explain (name an item)", user_id);
        it = top.item;
        info->recommended = 1;
    }
    info->item_id = qml_als_item_id(als, it);
    int f = qml_als_factors(als);
    const float *X = qml_als_user_factors((qml_als *)als) + (size_t)u * f;
    const float *y = qml_als_item_factors((qml_als *)als) + (size_t)it * f;
    float score = 0;
    for (int a = 0; a < f; a++)
        score += X[a] * y[a];
    info->score = score;
    double lambda = spec_param(m, "regularization", 0.01);
    double alpha = spec_param(m, "alpha", 1.0);
    qml_als_rec *recs = malloc((size_t)n * sizeof *recs);
    if (!recs)
        return oom(err);
    int got = qml_als_explain(als, qml__model_als_gram(m), u, it, lambda, 1 + alpha, n, recs,
                              &info->total, err);
    for (int i = 0; i < got; i++)
        out[i] = (qml_model_rec){qml_als_item_id(als, recs[i].item), recs[i].score};
    free(recs);
    return got;
}
