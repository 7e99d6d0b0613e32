/*
 * linear.c - logistic (liblinear) and ridge (LAPACKE) models (see linear.h).
 *
 * Whatever trained it, a model ends as plain coefficient rows plus
 * intercepts, so prediction and the JSON format do not depend on liblinear's
 * in-memory model (whose sign convention follows the order labels appear in
 * the training data): the conversion below maps it to "row k scores
 * classes[k]" (binary: one row for classes[1]).
 */
#include "ml/linear.h"
#include "core/json.h"
#include "ml/libs.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct qml_linear {
    qml_linear_kind kind;
    size_t d;           /* features */
    size_t rows;        /* coefficient rows: 1, or n_classes for multiclass */
    double *coef;       /* rows x d */
    double *intercept;  /* rows */
    size_t n_classes;   /* logistic only */
    int *classes;       /* ascending */
};

#define RCOND_MIN 1e-13

static qml_linear *model_new(qml_linear_kind kind, size_t d, size_t rows, size_t n_classes)
{
    qml_linear *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->kind = kind;
    m->d = d;
    m->rows = rows;
    m->n_classes = n_classes;
    m->coef = calloc(rows * d, sizeof *m->coef);
    m->intercept = calloc(rows, sizeof *m->intercept);
    m->classes = n_classes ? calloc(n_classes, sizeof *m->classes) : NULL;
    if (!m->coef || !m->intercept || (n_classes && !m->classes)) {
        qml_linear_free(m);
        return NULL;
    }
    return m;
}

void qml_linear_free(qml_linear *m)
{
    if (!m)
        return;
    free(m->coef);
    free(m->intercept);
    free(m->classes);
    free(m);
}

qml_linear_kind qml_linear_get_kind(const qml_linear *m) { return m->kind; }
size_t qml_linear_n_features(const qml_linear *m) { return m->d; }
const int *qml_linear_classes(const qml_linear *m) { return m->classes; }

size_t qml_linear_n_outputs(const qml_linear *m)
{
    return m->kind == QML_LOGISTIC ? m->n_classes : 1;
}

const double *qml_linear_coef(const qml_linear *m, size_t k)
{
    return k < m->rows ? m->coef + k * m->d : NULL;
}

double qml_linear_intercept(const qml_linear *m, size_t k)
{
    return k < m->rows ? m->intercept[k] : NAN;
}

static int check_data(const float *X, size_t n, size_t d, const double *y, qn_err *err)
{
    if (n == 0 || d == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "training data is empty (%zu rows x %zu "
                          "features)", n, d);
    if (d > QML_LINEAR_MAX_FEATURES || n > INT_MAX)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "training data too large: %zu x %zu", n, d);
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(y[i]))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "label of row %zu is not finite", i);
        for (size_t j = 0; j < d; j++)
            if (!isfinite(X[i * d + j]))
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "feature %zu of row %zu is not finite", j, i);
    }
    return 0;
}

/* ---- ridge ----------------------------------------------------------------- */

int qml_linear_fit_ridge(const float *X, size_t n, size_t d, const double *y,
                         const qml_ridge_params *p, qml_linear **out, qn_err *err)
{
    int rc;
    double *Xc = NULL, *A = NULL, *mx = NULL;
    qml_linear *m = NULL;
    *out = NULL;
    if ((rc = check_data(X, n, d, y, err)) < 0 || (rc = qml__need_blas(err)) < 0)
        return rc;
    if (!(p->lambda >= 0) || !isfinite(p->lambda))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "ridge lambda must be finite and >= 0, "
                          "got %g", p->lambda);
    Xc = malloc(n * d * sizeof *Xc);
    A = malloc(d * d * sizeof *A);
    mx = calloc(d, sizeof *mx);
    m = model_new(QML_LINEAR_REGRESSION, d, 1, 0);
    if (!Xc || !A || !mx || !m) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory fitting ridge on %zu x %zu",
                        n, d);
        goto out;
    }
    double my = 0;
    if (p->fit_intercept) {
        for (size_t i = 0; i < n; i++) {
            my += y[i];
            for (size_t j = 0; j < d; j++)
                mx[j] += X[i * d + j];
        }
        my /= (double)n;
        for (size_t j = 0; j < d; j++)
            mx[j] /= (double)n;
    }
    double *b = m->coef;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++)
            Xc[i * d + j] = X[i * d + j] - mx[j];
    for (size_t j = 0; j < d; j++)
        b[j] = 0;
    for (size_t i = 0; i < n; i++) {
        double yi = y[i] - my;
        for (size_t j = 0; j < d; j++)
            b[j] += Xc[i * d + j] * yi;
    }
    /* Row-major Xc (n x d) is column-major Xc' (d x n); A = Xc' Xc, upper half. */
    qml__blas.dsyrk(CblasColMajor, CblasUpper, CblasNoTrans, (int)d, (int)n, 1.0, Xc, (int)d, 0.0,
                A, (int)d);
    for (size_t j = 0; j < d; j++)
        A[j * d + j] += p->lambda;
    double anorm = qml__blas.dlansy(LAPACK_COL_MAJOR, '1', 'U', (lapack_int)d, A, (lapack_int)d);
    lapack_int info = qml__blas.dpotrf(LAPACK_COL_MAJOR, 'U', (lapack_int)d, A, (lapack_int)d);
    double rcond = 0;
    if (info == 0)
        info = qml__blas.dpocon(LAPACK_COL_MAJOR, 'U', (lapack_int)d, A, (lapack_int)d, anorm,
                              &rcond);
    if (info < 0) {
        rc = qn_err_set(err, QN_INTERNAL, "LAPACK failed (argument %d)", (int)-info);
        goto out;
    }
    if (info > 0 || rcond < RCOND_MIN) {
        rc = qn_err_set(err, QN_FAILED_PRECONDITION,
                        "ridge: X'X + lambda I is singular (reciprocal condition %.3g, lambda "
                        "%g): features are collinear or constant; raise lambda or drop them",
                        rcond, p->lambda);
        goto out;
    }
    info = qml__blas.dpotrs(LAPACK_COL_MAJOR, 'U', (lapack_int)d, 1, A, (lapack_int)d, b,
                          (lapack_int)d);
    if (info != 0) {
        rc = qn_err_set(err, QN_INTERNAL, "LAPACK dpotrs failed (%d)", (int)info);
        goto out;
    }
    m->intercept[0] = my - qml__blas.ddot((int)d, mx, 1, b, 1);
    *out = m;
    m = NULL;
out:
    free(Xc);
    free(A);
    free(mx);
    qml_linear_free(m);
    return rc;
}

/* ---- logistic -------------------------------------------------------------- */

static void silent_print(const char *s) { (void)s; }
static pthread_once_t silence_once = PTHREAD_ONCE_INIT;
static void silence_liblinear(void) { qml__liblinear.set_print_string_function(silent_print); }

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static size_t class_index(const qml_linear *m, int label)
{
    const int *p = bsearch(&label, m->classes, m->n_classes, sizeof *p, cmp_int);
    return p ? (size_t)(p - m->classes) : (size_t)-1;
}

int qml_linear_fit_logistic(const float *X, size_t n, size_t d, const double *y,
                            const qml_logistic_params *p, qml_linear **out, qn_err *err)
{
    int rc;
    struct feature_node *nodes = NULL, **rows = NULL;
    double *yy = NULL;
    int *labels = NULL;
    struct model *lm = NULL;
    qml_linear *m = NULL;
    *out = NULL;
    if ((rc = check_data(X, n, d, y, err)) < 0 || (rc = qml__need_liblinear(err)) < 0)
        return rc;
    pthread_once(&silence_once, silence_liblinear);
    if (!(p->C > 0) || !isfinite(p->C) || !(p->eps > 0) || !isfinite(p->eps))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "logistic: C and eps must be finite and > 0 "
                          "(C %g, eps %g)", p->C, p->eps);
    if (p->n_weights && (!p->weight_label || !p->weight))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "logistic: class weights without labels");

    /* Sorted distinct labels. */
    labels = malloc(n * sizeof *labels);
    yy = malloc(n * sizeof *yy);
    size_t nnz = 0;
    for (size_t i = 0; i < n * d; i++)
        nnz += X[i] != 0;
    size_t per_row_extra = p->bias ? 2 : 1;
    nodes = malloc((nnz + n * per_row_extra) * sizeof *nodes);
    rows = malloc(n * sizeof *rows);
    if (!labels || !yy || !nodes || !rows) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory fitting logistic on %zu x %zu",
                        n, d);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (y[i] != floor(y[i]) || fabs(y[i]) > INT_MAX) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "logistic: label of row %zu is %g, not an "
                            "integer class", i, y[i]);
            goto out;
        }
        labels[i] = (int)y[i];
        yy[i] = y[i];
    }
    qsort(labels, n, sizeof *labels, cmp_int);
    size_t nc = 0;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || labels[i] != labels[i - 1])
            labels[nc++] = labels[i];
    if (nc < 2 || nc > QML_LINEAR_MAX_CLASSES) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "logistic: needs 2..%d classes, the labels "
                        "have %zu", QML_LINEAR_MAX_CLASSES, nc);
        goto out;
    }
    for (size_t k = 0; k < p->n_weights; k++)
        if (!bsearch(&p->weight_label[k], labels, nc, sizeof *labels, cmp_int) ||
            !(p->weight[k] > 0) || !isfinite(p->weight[k])) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "logistic: class weight %zu (label %d, "
                            "weight %g) names no class or is not > 0", k, p->weight_label[k],
                            p->weight[k]);
            goto out;
        }

    struct feature_node *nd = nodes;
    for (size_t i = 0; i < n; i++) {
        rows[i] = nd;
        for (size_t j = 0; j < d; j++)
            if (X[i * d + j] != 0)
                *nd++ = (struct feature_node){(int)j + 1, X[i * d + j]};
        if (p->bias)
            *nd++ = (struct feature_node){(int)d + 1, 1.0};
        *nd++ = (struct feature_node){-1, 0};
    }
    struct problem prob = {.l = (int)n, .n = (int)d + (p->bias ? 1 : 0), .y = yy, .x = rows,
                           .bias = p->bias ? 1.0 : -1.0};
    struct parameter param = {.solver_type = L2R_LR, .eps = p->eps, .C = p->C,
                              .nr_weight = (int)p->n_weights,
                              .weight_label = (int *)p->weight_label,
                              .weight = (double *)p->weight};
    const char *msg = qml__liblinear.check_parameter(&prob, &param);
    if (msg) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "logistic: liblinear refused the parameters: "
                        "%s", msg);
        goto out;
    }
    lm = qml__liblinear.train(&prob, &param);
    if (!lm) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "logistic: liblinear training failed");
        goto out;
    }
    size_t out_rows = nc == 2 ? 1 : nc;
    m = model_new(QML_LOGISTIC, d, out_rows, nc);
    if (!m) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    memcpy(m->classes, labels, nc * sizeof *labels);
    /* liblinear's w: nr_w = 1 for two classes (positive = lm->label[0]),
     * else nr_class columns, w[j * nr_class + k] for lm->label[k]. */
    size_t nr_w = lm->nr_class == 2 ? 1 : (size_t)lm->nr_class;
    for (size_t k = 0; k < nr_w; k++) {
        size_t row;
        double sign = 1;
        if (nc == 2) {
            row = 0;
            sign = lm->label[0] == m->classes[1] ? 1 : -1;
        } else {
            row = class_index(m, lm->label[k]);
        }
        for (size_t j = 0; j < d; j++)
            m->coef[row * d + j] = sign * lm->w[j * nr_w + k];
        m->intercept[row] = p->bias ? sign * lm->w[d * nr_w + k] * lm->bias : 0;
    }
    *out = m;
    m = NULL;
out:
    if (lm)
        qml__liblinear.free_and_destroy_model(&lm);
    qml_linear_free(m);
    free(nodes);
    free(rows);
    free(yy);
    free(labels);
    return rc;
}

/* ---- prediction ------------------------------------------------------------ */

static double sigmoid(double z)
{
    return z >= 0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
}

int qml_linear_predict(const qml_linear *m, const float *X, size_t n, size_t d, double *out,
                       qn_err *err)
{
    if (d != m->d)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "the model takes %zu features, the input "
                          "has %zu", m->d, d);
    for (size_t i = 0; i < n; i++) {
        const float *x = X + i * d;
        if (m->kind == QML_LINEAR_REGRESSION) {
            double z = m->intercept[0];
            for (size_t j = 0; j < d; j++)
                z += m->coef[j] * x[j];
            out[i] = z;
            continue;
        }
        double *o = out + i * m->n_classes;
        if (m->n_classes == 2) {
            double z = m->intercept[0];
            for (size_t j = 0; j < d; j++)
                z += m->coef[j] * x[j];
            o[1] = sigmoid(z);
            o[0] = 1 - o[1];
            continue;
        }
        double sum = 0;
        for (size_t k = 0; k < m->rows; k++) {
            double z = m->intercept[k];
            for (size_t j = 0; j < d; j++)
                z += m->coef[k * d + j] * x[j];
            o[k] = sigmoid(z);
            sum += o[k];
        }
        for (size_t k = 0; k < m->rows; k++)
            o[k] /= sum;
    }
    return 0;
}

/* ---- JSON ------------------------------------------------------------------ */

char *qml_linear_to_json(const qml_linear *m, qn_err *err)
{
    char *text = NULL;
    json_t *coef = json_array(), *icpt = json_array();
    json_t *root = json_pack("{s:s, s:s, s:I, s:o, s:o}", "format", "quern.linear/1", "kind",
                             m->kind == QML_LOGISTIC ? "logistic" : "linear", "n_features",
                             (json_int_t)m->d, "coef", coef, "intercept", icpt);
    if (!root)
        goto out;
    for (size_t k = 0; k < m->rows; k++) {
        json_t *row = json_array();
        if (!row || json_array_append_new(coef, row) < 0 ||
            json_array_append_new(icpt, json_real(m->intercept[k])) < 0)
            goto out;
        for (size_t j = 0; j < m->d; j++)
            if (json_array_append_new(row, json_real(m->coef[k * m->d + j])) < 0)
                goto out;
    }
    if (m->kind == QML_LOGISTIC) {
        json_t *cl = json_array();
        if (json_object_set_new(root, "classes", cl) < 0)
            goto out;
        for (size_t k = 0; k < m->n_classes; k++)
            if (json_array_append_new(cl, json_integer(m->classes[k])) < 0)
                goto out;
    }
    text = qn_json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
out:
    json_decref(root);
    if (!text)
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory writing the model as JSON");
    return text;
}

static int read_numbers(json_t *arr, double *dst, size_t n, const char *where, qn_err *err)
{
    if (!json_is_array(arr) || json_array_size(arr) != n)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: expected an array of %zu numbers",
                          where, n);
    for (size_t j = 0; j < n; j++) {
        json_t *v = json_array_get(arr, j);
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s[%zu]: expected a finite number",
                              where, j);
        dst[j] = json_number_value(v);
    }
    return 0;
}

int qml_linear_from_json(const char *json, size_t len, qml_linear **out, qn_err *err)
{
    int rc = 0;
    json_error_t jerr;
    qml_linear *m = NULL;
    *out = NULL;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return qn_err_set(err, qn_json_load_code(&jerr), "linear model JSON, line %d column %d: %s",
                          jerr.line, jerr.column, jerr.text);
    const char *format = json_string_value(json_object_get(root, "format"));
    const char *kind = json_string_value(json_object_get(root, "kind"));
    json_t *jd = json_object_get(root, "n_features");
    json_t *coef = json_object_get(root, "coef"), *icpt = json_object_get(root, "intercept");
    json_t *cl = json_object_get(root, "classes");
    if (!format || strcmp(format, "quern.linear/1") != 0) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "format: expected \"quern.linear/1\"");
        goto out;
    }
    int logistic;
    if (kind && strcmp(kind, "linear") == 0)
        logistic = 0;
    else if (kind && strcmp(kind, "logistic") == 0)
        logistic = 1;
    else {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "kind: expected \"linear\" or \"logistic\"");
        goto out;
    }
    if (!json_is_integer(jd) || json_integer_value(jd) < 1 ||
        json_integer_value(jd) > QML_LINEAR_MAX_FEATURES) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "n_features: expected an integer in 1..%d",
                        QML_LINEAR_MAX_FEATURES);
        goto out;
    }
    size_t d = (size_t)json_integer_value(jd), nc = 0;
    if (logistic) {
        if (!json_is_array(cl) || json_array_size(cl) < 2 ||
            json_array_size(cl) > QML_LINEAR_MAX_CLASSES) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "classes: expected an array of 2..%d "
                            "integer labels", QML_LINEAR_MAX_CLASSES);
            goto out;
        }
        nc = json_array_size(cl);
    } else if (cl) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "classes: a linear model has none");
        goto out;
    }
    size_t rows = nc > 2 ? nc : 1;
    if (!json_is_array(coef) || json_array_size(coef) != rows) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "coef: expected %zu row(s) of %zu numbers",
                        rows, d);
        goto out;
    }
    /* Check one row's length before allocating rows x d from n_features. */
    json_t *row0 = json_array_get(coef, 0);
    if (!json_is_array(row0) || json_array_size(row0) != d) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "coef[0]: expected %zu numbers (n_features)",
                        d);
        goto out;
    }
    if (!(m = model_new(logistic ? QML_LOGISTIC : QML_LINEAR_REGRESSION, d, rows, nc))) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory loading a linear model");
        goto out;
    }
    for (size_t k = 0; k < nc; k++) {
        json_t *v = json_array_get(cl, k);
        if (!json_is_integer(v) || json_integer_value(v) < INT_MIN ||
            json_integer_value(v) > INT_MAX ||
            (k > 0 && json_integer_value(v) <= m->classes[k - 1])) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "classes[%zu]: expected an int label "
                            "greater than the one before", k);
            goto out;
        }
        m->classes[k] = (int)json_integer_value(v);
    }
    for (size_t k = 0; k < rows; k++) {
        char where[32];
        snprintf(where, sizeof where, "coef[%zu]", k);
        if ((rc = read_numbers(json_array_get(coef, k), m->coef + k * d, d, where, err)) < 0)
            goto out;
    }
    if ((rc = read_numbers(icpt, m->intercept, rows, "intercept", err)) < 0)
        goto out;
out:
    json_decref(root);
    if (rc < 0)
        qml_linear_free(m);
    else
        *out = m;
    return rc;
}
