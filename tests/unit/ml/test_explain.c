/* test_explain.c - explain.h: ALS past-item contributions against a simple
 * reference (the user's normal equations solved by plain Gaussian
 * elimination: the contributions must add up to the exact least-squares
 * score, and each must equal c * y_j' A^-1 y_i), linear contributions per
 * feature and per raw column (sum = margin, one-hot buckets added back),
 * XGBoost contributions adding up to the margin that predict's probability
 * comes from, and the refusals. Python's pred_contribs is compared in
 * tests/service/test_serve_explain.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ml/explain.h"

/* ---- ALS ---------------------------------------------------------------------- */

enum { NU = 12, NI = 20, NF = 5 };

static qml_als *tiny_als(void)
{
    int32_t rows[NU * 6], cols[NU * 6];
    float vals[NU * 6];
    size_t n = 0;
    uint64_t s = 12345;
    for (int32_t u = 0; u < NU - 1; u++) /* the last user has no items */
        for (int k = 0; k < 1 + u % 6; k++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            int32_t i = (int32_t)((s >> 33) % NI);
            int dup = 0;
            for (size_t q = 0; q < n; q++)
                dup |= rows[q] == u && cols[q] == i;
            if (dup)
                continue;
            rows[n] = u, cols[n] = i, vals[n] = 1, n++;
        }
    qn_err err;
    qml_csr *ui;
    assert_int_equal(qml_csr_from_coo(NU, NI, rows, cols, vals, n, &ui, &err), 0);
    qml_als_params p;
    qml_als_params_init(&p);
    p.factors = NF;
    p.iterations = 5;
    p.regularization = 0.05f;
    qml_als *m;
    assert_int_equal(qml_als_fit(ui, &p, &m, &err), 0);
    qml_csr_free(ui);
    return m;
}

/* Solves A x = b (n x n, row-major, copied) by Gaussian elimination with
 * partial pivoting: the reference, independent of LAPACK's Cholesky. */
static void gauss_solve(const double *A_in, const double *b_in, int n, double *x)
{
    double *A = malloc((size_t)n * n * sizeof *A), *b = malloc((size_t)n * sizeof *b);
    memcpy(A, A_in, (size_t)n * n * sizeof *A);
    memcpy(b, b_in, (size_t)n * sizeof *b);
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(A[r * n + c]) > fabs(A[p * n + c]))
                p = r;
        for (int k = 0; k < n; k++) {
            double t = A[c * n + k];
            A[c * n + k] = A[p * n + k];
            A[p * n + k] = t;
        }
        double t = b[c];
        b[c] = b[p];
        b[p] = t;
        for (int r = c + 1; r < n; r++) {
            double f = A[r * n + c] / A[c * n + c];
            for (int k = c; k < n; k++)
                A[r * n + k] -= f * A[c * n + k];
            b[r] -= f * b[c];
        }
    }
    for (int r = n - 1; r >= 0; r--) {
        double s = b[r];
        for (int k = r + 1; k < n; k++)
            s -= A[r * n + k] * x[k];
        x[r] = s / A[r * n + r];
    }
    free(A);
    free(b);
}

static void test_als_against_reference(void **state)
{
    (void)state;
    qml_als *m = tiny_als();
    const float *Y = qml_als_item_factors(m);
    const double lambda = 0.05, conf = 3.0;
    qn_err err;
    double *gram = qml_als_gram(m);
    assert_non_null(gram);
    for (int32_t u = 0; u < NU - 1; u++) {
        const int32_t *seen;
        int64_t ns = qml_als_seen(m, u, &seen);
        assert_true(ns >= 1);
        /* A = Y'Y + lambda I + (c - 1) sum y_i y_i' in full, by the definition */
        double A[NF * NF] = {0}, rhs[NF] = {0}, xu[NF];
        for (int32_t i = 0; i < NI; i++) {
            double ci = 1;
            for (int64_t k = 0; k < ns; k++)
                if (seen[k] == i)
                    ci = conf;
            for (int a = 0; a < NF; a++)
                for (int b = 0; b < NF; b++)
                    A[a * NF + b] += ci * Y[i * NF + a] * Y[i * NF + b];
            if (ci > 1)
                for (int a = 0; a < NF; a++)
                    rhs[a] += ci * Y[i * NF + a];
        }
        for (int a = 0; a < NF; a++)
            A[a * NF + a] += lambda;
        gauss_solve(A, rhs, NF, xu); /* the user's exact least-squares factors */
        for (int32_t j = 0; j < NI; j += 3) {
            qml_als_rec out[32];
            double total = NAN;
            int got = qml_als_explain(m, gram, u, j, lambda, conf, 32, out, &total, &err);
            assert_int_equal(got, (int)ns);
            double want_total = 0, yj[NF], w[NF];
            for (int a = 0; a < NF; a++) {
                want_total += xu[a] * Y[j * NF + a];
                yj[a] = Y[j * NF + a];
            }
            /* the contributions add up to the exact score x_u* . y_j */
            assert_true(fabs(total - want_total) <= 1e-7 * (1 + fabs(want_total)));
            gauss_solve(A, yj, NF, w);
            for (int q = 0; q < got; q++) {
                double want = 0;
                for (int a = 0; a < NF; a++)
                    want += conf * w[a] * Y[out[q].item * NF + a];
                assert_true(fabs(out[q].score - want) <= 1e-5 * (1 + fabs(want)));
                if (q)
                    assert_true(out[q - 1].score >= out[q].score);
                int past = 0;
                for (int64_t k = 0; k < ns; k++)
                    past |= seen[k] == out[q].item;
                assert_true(past);
            }
            /* the top 1 is the first of the full list */
            qml_als_rec one;
            double t1;
            assert_int_equal(qml_als_explain(m, gram, u, j, lambda, conf, 1, &one, &t1, &err), 1);
            assert_int_equal(one.item, out[0].item);
            assert_true(t1 == total);
        }
    }
    qml_als_rec r[4];
    double t;
    assert_int_equal(qml_als_explain(m, gram, NU - 1, 0, lambda, conf, 4, r, &t, &err),
                     QN_FAILED_PRECONDITION);
    assert_non_null(strstr(err.msg, "no past items"));
    /* out of range, no room, negative lambda, confidence below 1 */
    const int32_t bad[][2] = {{NU, 0}, {0, NI}, {0, 0}, {0, 0}, {0, 0}};
    const double bl[] = {lambda, lambda, lambda, -1, lambda}, bc[] = {conf, conf, conf, conf, 0.5};
    const int bn[] = {4, 4, 0, 4, 4};
    for (int q = 0; q < 5; q++)
        assert_int_equal(qml_als_explain(m, gram, bad[q][0], bad[q][1], bl[q], bc[q], bn[q], r,
                                         &t, &err),
                         QN_INVALID_ARGUMENT);
    /* without a gram it is computed on the spot: the same answer */
    qml_als_rec a[32], b[32];
    double ta, tb;
    int na = qml_als_explain(m, gram, 3, 7, lambda, conf, 32, a, &ta, &err);
    assert_true(na >= 1);
    assert_int_equal(qml_als_explain(m, NULL, 3, 7, lambda, conf, 32, b, &tb, &err), na);
    assert_memory_equal(a, b, (size_t)na * sizeof *a);
    assert_true(ta == tb);
    free(gram);
    qml_als_free(m);
}

/* ---- tabular ------------------------------------------------------------------- */

static const char *features_json =
    "{\"format\":\"quern.features/1\",\"n_features\":6,\"columns\":["
    "{\"name\":\"x\",\"type\":\"numeric\",\"steps\":[{\"op\":\"standardize\",\"mean\":2,"
    "\"std\":4}]},"
    "{\"name\":\"y\",\"type\":\"numeric\",\"steps\":[]},"
    "{\"name\":\"c\",\"type\":\"categorical\",\"steps\":[{\"op\":\"onehot\",\"categories\":"
    "[\"a\",\"b\",\"d\"],\"max_categories\":0,\"min_frequency\":0}]}]}";

static qml_model *linear_model(void)
{
    qn_err err;
    qml_features *fs;
    assert_int_equal(qml_features_from_json(features_json, strlen(features_json), &fs, &err), 0);
    const char *lj = "{\"format\":\"quern.linear/1\",\"kind\":\"logistic\",\"n_features\":6,"
                     "\"coef\":[[0.5,-2,1,2,3,4]],\"intercept\":[-0.25],\"classes\":[0,1]}";
    qml_linear *lin;
    assert_int_equal(qml_linear_from_json(lj, strlen(lj), &lin, &err), 0);
    qml_type types[] = {QML_NUMERIC, QML_NUMERIC, QML_CATEGORICAL};
    double classes[] = {0, 1};
    qml_model *m;
    assert_int_equal(qml__model_new_tabular("logistic", QML_TASK_BINARY, fs, types, lin, NULL,
                                            classes, 2, &m, &err),
                     0);
    return m;
}

static void test_linear_by_column_and_feature(void **state)
{
    (void)state;
    qml_model *m = linear_model();
    double x[] = {6, -2, 2}, y[] = {1, 0.5, 3};
    qml_str c[] = {{"b", 1}, {"zz", 2}, {"a", 1}};
    qml_input_col cols[] = {{"c", QML_INPUT_STR, NULL, c}, /* any order, by name */
                            {"x", QML_INPUT_NUM, x, NULL},
                            {"y", QML_INPUT_NUM, y, NULL}};
    qml_input_batch b = {.n_rows = 3, .n_cols = 3, .cols = cols};
    qn_err err;
    qml_explanation e;
    assert_int_equal(qml_model_explain(m, &b, QML_EXPLAIN_BY_COLUMN, &e, &err), 0);
    assert_int_equal(e.n_rows, 3);
    assert_int_equal(e.n_outputs, 1);
    assert_int_equal(e.n_terms, 3);
    assert_string_equal(e.names[0], "x");
    assert_string_equal(e.names[2], "c");
    assert_string_equal(e.method, "linear");
    assert_string_equal(e.link, "logistic");
    /* hand-computed: x standardised (x - 2) / 4 times 0.5; y times -2; c the
     * coefficient of its bucket (b: 2, unknown: 4, a: 1) */
    double want[3][3] = {{0.5 * 1.0, -2 * 1, 2}, {0.5 * -1.0, -2 * 0.5, 4}, {0, -2 * 3, 1}};
    float probs[3];
    assert_int_equal(qml_model_predict(m, &b, probs, &err), 0);
    for (int r = 0; r < 3; r++) {
        double sum = e.bias[r];
        assert_true(e.bias[r] == -0.25);
        for (int j = 0; j < 3; j++) {
            assert_true(fabs(e.contrib[r * 3 + j] - want[r][j]) < 1e-12);
            sum += e.contrib[r * 3 + j];
        }
        assert_true(fabs(sum - e.margin[r]) < 1e-12);
        assert_true(fabs(1 / (1 + exp(-e.margin[r])) - probs[r]) < 1e-6);
    }
    qml_explanation f;
    assert_int_equal(qml_model_explain(m, &b, QML_EXPLAIN_BY_FEATURE, &f, &err), 0);
    assert_int_equal(f.n_terms, 6);
    assert_string_equal(f.names[3], "c=b");
    assert_string_equal(f.names[5], "c=__unknown__");
    for (int r = 0; r < 3; r++) {
        double onehot = 0;
        for (int j = 2; j < 6; j++)
            onehot += f.contrib[r * 6 + j];
        assert_true(fabs(onehot - e.contrib[r * 3 + 2]) < 1e-12);
        assert_true(f.margin[r] == e.margin[r]);
    }
    qml_explanation_free(&e);
    qml_explanation_free(&f);

    /* the inputs are checked as prediction checks them */
    qml_input_batch missing = {.n_rows = 3, .n_cols = 2, .cols = cols};
    assert_int_equal(qml_model_explain(m, &missing, QML_EXPLAIN_BY_COLUMN, &e, &err),
                     QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "y"));
    qml_model_free(m);
}

/* Multiclass logistic (one margin per class, normalised sigmoids) and a
 * linear regressor (the margin is the prediction). */
static void test_linear_multiclass_and_regression(void **state)
{
    (void)state;
    qn_err err;
    const char *kinds[] = {"logistic", "linear"};
    const char *json[] = {
        "{\"format\":\"quern.linear/1\",\"kind\":\"logistic\",\"n_features\":6,"
        "\"coef\":[[0.5,-2,1,2,3,4],[1,1,-1,0,0,1],[-0.5,0.25,0,0,2,-3]],"
        "\"intercept\":[-0.25,0.5,1],\"classes\":[1,2,3]}",
        "{\"format\":\"quern.linear/1\",\"kind\":\"linear\",\"n_features\":6,"
        "\"coef\":[[0.5,-2,1,2,3,4]],\"intercept\":[7]}"};
    double classes[] = {1, 2, 3};
    for (int t = 0; t < 2; t++) {
        qml_features *fs;
        assert_int_equal(qml_features_from_json(features_json, strlen(features_json), &fs, &err),
                         0);
        qml_linear *lin;
        assert_int_equal(qml_linear_from_json(json[t], strlen(json[t]), &lin, &err), 0);
        qml_type types[] = {QML_NUMERIC, QML_NUMERIC, QML_CATEGORICAL};
        qml_model *m;
        assert_int_equal(qml__model_new_tabular(kinds[t], t ? QML_TASK_REGRESSION
                                                            : QML_TASK_MULTICLASS,
                                                fs, types, lin, NULL, t ? NULL : classes,
                                                t ? 0 : 3, &m, &err),
                         0);
        double x[] = {6, -2}, y[] = {1, 0.5};
        qml_str c[] = {{"d", 1}, {"a", 1}};
        qml_input_col cols[] = {{"x", QML_INPUT_NUM, x, NULL},
                                {"y", QML_INPUT_NUM, y, NULL},
                                {"c", QML_INPUT_STR, NULL, c}};
        qml_input_batch b = {.n_rows = 2, .n_cols = 3, .cols = cols};
        qml_explanation e;
        assert_int_equal(qml_model_explain(m, &b, QML_EXPLAIN_BY_COLUMN, &e, &err), 0);
        size_t no = t ? 1 : 3;
        assert_int_equal(e.n_outputs, no);
        assert_string_equal(e.link, t ? "identity" : "normalised_logistic");
        float pred[6];
        assert_int_equal(qml_model_predict(m, &b, pred, &err), 0);
        for (size_t r = 0; r < 2; r++) {
            double norm = 0, sig[3];
            for (size_t k = 0; k < no; k++) {
                const double *ck = e.contrib + (r * no + k) * 3;
                double sum = e.bias[r * no + k] + ck[0] + ck[1] + ck[2];
                assert_true(fabs(sum - e.margin[r * no + k]) < 1e-12);
                sig[k] = 1 / (1 + exp(-e.margin[r * no + k]));
                norm += sig[k];
            }
            for (size_t k = 0; k < no; k++)
                assert_true(fabs((t ? e.margin[r] : sig[k] / norm) - pred[r * no + k]) < 1e-5);
        }
        /* class 2 (k = 1), row 0: x (6 - 2) / 4 = 1 times 1; y 1 times 1; c=d
         * (bucket 2) times 0 */
        if (!t) {
            assert_true(fabs(e.contrib[(0 * 3 + 1) * 3 + 0] - 1) < 1e-12);
            assert_true(fabs(e.contrib[(0 * 3 + 1) * 3 + 1] - 1) < 1e-12);
            assert_true(e.contrib[(0 * 3 + 1) * 3 + 2] == 0);
            assert_true(e.bias[1] == 0.5);
        }
        qml_explanation_free(&e);
        qml_model_free(m);
    }
}

typedef struct hammer_arg {
    const qml_xgb *m;
    const float *x;
    size_t n, d;
    const float *want;
    int bad;
} hammer_arg;

static void *hammer(void *p)
{
    hammer_arg *a = p;
    float *c = malloc(a->n * (a->d + 1) * sizeof *c), *prob = malloc(a->n * sizeof *prob);
    qn_err err;
    for (int it = 0; it < 30; it++) {
        size_t off = (size_t)it % 7, n = a->n - off; /* different batches each time */
        if (qml_xgb_predict(a->m, a->x + off * a->d, n, a->d, prob, &err) < 0 ||
            qml_xgb_contribs(a->m, a->x + off * a->d, n, a->d, c, NULL, &err) < 0 ||
            memcmp(c, a->want + off * (a->d + 1), n * (a->d + 1) * sizeof *c) != 0)
            a->bad++;
    }
    free(c);
    free(prob);
    return NULL;
}

static void test_xgboost_sums_to_the_margin(void **state)
{
    (void)state;
    enum { N = 300, D = 4 };
    float *x = malloc(N * D * sizeof *x), y[N];
    uint64_t s = 99;
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < D; j++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            x[i * D + j] = (float)((s >> 40) % 1000) / 100.0f;
        }
        y[i] = x[i * D] + 0.5f * x[i * D + 2] > 7 ? 1 : 0;
    }
    qml_xgb_param p[] = {{"objective", "binary:logistic"}, {"num_round", "20"},
                         {"max_depth", "3"}, {"nthread", "1"}, {"base_score", "0.3"}};
    qml_xgb_data d = {.x = x, .n_rows = N, .n_cols = D, .y = y};
    qml_xgb_train_opts o = {.params = p, .n_params = 5};
    qml_xgb *m;
    qn_err err;
    assert_int_equal(qml_xgb_train(&d, &o, &m, &err), 0);
    assert_int_equal(qml_xgb_n_groups(m), 1);
    float *c = malloc(N * (D + 1) * sizeof *c), margin[N], prob[N];
    assert_int_equal(qml_xgb_contribs(m, x, N, D, c, margin, &err), 0);
    assert_int_equal(qml_xgb_predict(m, x, N, D, prob, &err), 0);
    for (int i = 0; i < N; i++) {
        double sum = 0;
        for (int j = 0; j <= D; j++)
            sum += c[i * (D + 1) + j];
        assert_true(fabs(sum - margin[i]) < 1e-5);
        assert_true(fabs(1 / (1 + exp(-(double)margin[i])) - prob[i]) < 1e-6);
    }
    /* the bias carries the base score: logit(0.3) plus the trees' mean */
    assert_true(c[D] == c[(N - 1) * (D + 1) + D]);
    /* from 4 threads at once, interleaved with predictions: the serial answers */
    hammer_arg ha[4];
    pthread_t th[4];
    for (int t = 0; t < 4; t++) {
        ha[t] = (hammer_arg){.m = m, .x = x, .n = N, .d = D, .want = c, .bad = 0};
        assert_int_equal(pthread_create(&th[t], NULL, hammer, &ha[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(ha[t].bad, 0);
    }
    assert_int_equal(qml_xgb_contribs(m, x, N, D + 1, c, NULL, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "5 features"));
    assert_int_equal(qml_xgb_contribs(m, x, 0, D, c, NULL, &err), 0);
    qml_xgb_free(m);
    free(c);
    free(x);
}

static void test_kinds_refused(void **state)
{
    (void)state;
    qml_model *m = linear_model();
    qml_model_rec r[2];
    qml_rec_explanation info;
    qn_err err;
    assert_int_equal(qml_model_explain_rec(m, "u", NULL, 0, 2, r, &info, &err),
                     QN_FAILED_PRECONDITION);
    assert_non_null(strstr(err.msg, "logistic"));
    qml_model_free(m);

    qml_als *als = tiny_als();
    const char *uids[NU], *iids[NI];
    char ub[NU][8], ib[NI][8];
    for (int i = 0; i < NU; i++)
        snprintf(ub[i], sizeof ub[i], "u%d", i), uids[i] = ub[i];
    for (int i = 0; i < NI; i++)
        snprintf(ib[i], sizeof ib[i], "i%d", i), iids[i] = ib[i];
    assert_int_equal(qml_als_set_ids(als, uids, iids, &err), 0);
    assert_int_equal(qml__model_new_als(als, 5, &m, &err), 0);
    qml_explanation e;
    qml_input_batch b = {.n_rows = 0};
    assert_int_equal(qml_model_explain(m, &b, QML_EXPLAIN_BY_COLUMN, &e, &err),
                     QN_FAILED_PRECONDITION);
    assert_int_equal(qml_model_explain_rec(m, "nobody", NULL, 0, 2, r, &info, &err), QN_NOT_FOUND);
    assert_non_null(strstr(err.msg, "nobody"));
    assert_int_equal(qml_model_explain_rec(m, "u1", "i99", 0, 2, r, &info, &err), QN_NOT_FOUND);
    assert_int_equal(qml_model_explain_rec(m, "u11", NULL, 0, 2, r, &info, &err),
                     QN_FAILED_PRECONDITION);
    /* the top recommendation, with the training defaults (no manifest) */
    int got = qml_model_explain_rec(m, "u5", NULL, 1, 2, r, &info, &err);
    assert_true(got >= 1 && got <= 2);
    assert_int_equal(info.recommended, 1);
    qml_model_rec top;
    int fb;
    assert_int_equal(qml_model_recommend(m, "u5", 1, 1, &top, &fb, &err), 1);
    assert_string_equal(info.item_id, top.item_id);
    assert_true(fabsf(info.score - top.score) < 1e-6f);
    qml_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_als_against_reference),
        cmocka_unit_test(test_linear_by_column_and_feature),
        cmocka_unit_test(test_linear_multiclass_and_regression),
        cmocka_unit_test(test_xgboost_sums_to_the_margin),
        cmocka_unit_test(test_kinds_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
