/* test_linear.c - ridge (against numpy.linalg.solve) and logistic regression
 * (liblinear), prediction, JSON round trips and refusals, and a real-data
 * check on Bike Sharing (hour.csv, day.csv) through a fitted feature pipeline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ml/eval.h"
#include "ml/linear.h"
#include "ml/transform.h"

/* A small deterministic generator so the data is the same everywhere. */
static uint64_t rng_state;
static double uniform(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return ((double)(rng_state >> 11) + 0.5) / 9007199254740992.0;
}
static double normal(void)
{
    return sqrt(-2 * log(uniform())) * cos(2 * M_PI * uniform());
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v ? v : dflt;
}

/* Runs ref_ridge.py on (X, y) and reads back intercept + d coefficients. */
static void numpy_ridge(const float *X, const double *y, size_t n, size_t d, double lambda,
                        int fit_intercept, double *ref)
{
    char data[512], cmd[1536];
    snprintf(data, sizeof data, "%s/ridge_%zu_%g.txt", env_or("QUERN_TEST_WORK", "/tmp"), d,
             lambda);
    FILE *f = fopen(data, "w");
    assert_non_null(f);
    fprintf(f, "%zu %zu %.17g %d\n", n, d, lambda, fit_intercept);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < d; j++)
            fprintf(f, "%.17g ", (double)X[i * d + j]);
        fprintf(f, "%.17g\n", y[i]);
    }
    fclose(f);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/unit/ml/ref_ridge.py %s",
             env_or("QUERN_SOURCE_DIR", "."), data);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    for (size_t j = 0; j <= d; j++)
        assert_int_equal(fscanf(p, "%lf", &ref[j]), 1);
    assert_int_equal(pclose(p), 0);
}

static void make_regression(size_t n, size_t d, float *X, double *y)
{
    for (size_t i = 0; i < n; i++) {
        double t = 3.0;
        for (size_t j = 0; j < d; j++) {
            X[i * d + j] = (float)(normal() + (double)j);
            t += (double)(j + 1) * 0.5 * (j % 2 ? -1 : 1) * X[i * d + j];
        }
        y[i] = t + 0.1 * normal();
    }
}

static void test_ridge_matches_numpy(void **state)
{
    enum { N = 400, D = 7 };
    static float X[N * D];
    static double y[N];
    rng_state = 11;
    make_regression(N, D, X, y);
    double lambdas[] = {0.0, 0.5, 50.0};
    for (int li = 0; li < 3; li++) {
        for (int icpt = 0; icpt <= 1; icpt++) {
            qml_ridge_params p = {.lambda = lambdas[li], .fit_intercept = icpt};
            qml_linear *m;
            qn_err err;
            assert_int_equal(qml_linear_fit_ridge(X, N, D, y, &p, &m, &err), 0);
            double ref[D + 1];
            numpy_ridge(X, y, N, D, p.lambda, icpt, ref);
            /* Tolerance: 1e-6 relative (plus 1e-9 absolute for values near 0). */
            assert_float_equal(qml_linear_intercept(m, 0), ref[0], 1e-6 * fabs(ref[0]) + 1e-9);
            const double *w = qml_linear_coef(m, 0);
            for (int j = 0; j < D; j++)
                assert_float_equal(w[j], ref[j + 1], 1e-6 * fabs(ref[j + 1]) + 1e-9);
            /* predict = intercept + X w */
            double yhat[3];
            assert_int_equal(qml_linear_predict(m, X, 3, D, yhat, &err), 0);
            for (int i = 0; i < 3; i++) {
                double z = ref[0];
                for (int j = 0; j < D; j++)
                    z += ref[j + 1] * X[i * D + j];
                assert_float_equal(yhat[i], z, 1e-6 * fabs(z));
            }
            qml_linear_free(m);
        }
    }
}

static void test_ridge_errors(void **state)
{
    enum { N = 50, D = 3 };
    float X[N * D];
    double y[N];
    rng_state = 5;
    make_regression(N, D, X, y);
    /* Column 2 duplicates column 0: X'X is singular without a penalty. */
    for (int i = 0; i < N; i++)
        X[i * D + 2] = X[i * D + 0];
    qml_ridge_params p = {.lambda = 0, .fit_intercept = 1};
    qml_linear *m = NULL;
    qn_err err;
    assert_int_equal(qml_linear_fit_ridge(X, N, D, y, &p, &m, &err), QN_FAILED_PRECONDITION);
    assert_non_null(strstr(err.msg, "singular"));
    assert_null(m);
    /* A constant column is singular once centred. */
    for (int i = 0; i < N; i++)
        X[i * D + 2] = 4.0f;
    assert_int_equal(qml_linear_fit_ridge(X, N, D, y, &p, &m, &err), QN_FAILED_PRECONDITION);
    /* ... and fine with a penalty. */
    p.lambda = 1e-3;
    assert_int_equal(qml_linear_fit_ridge(X, N, D, y, &p, &m, &err), 0);
    /* Wrong number of features at predict. */
    double out[N];
    assert_int_equal(qml_linear_predict(m, X, N, D - 1, out, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "3 features"));
    qml_linear_free(m);
    p.lambda = -1;
    assert_int_equal(qml_linear_fit_ridge(X, N, D, y, &p, &m, &err), QN_INVALID_ARGUMENT);
    p.lambda = 1;
    X[7] = NAN;
    assert_int_equal(qml_linear_fit_ridge(X, N, D, y, &p, &m, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "row 2"));
}

/* Separable-ish: y = [w.x + 0.5 noise > 0], labels lo/hi. */
static void make_classification(size_t n, size_t d, float *X, double *y, double lo, double hi)
{
    static const double w[] = {2, -1, 0.5, 0, 1, -1.5};
    for (size_t i = 0; i < n; i++) {
        double z = 0.3;
        for (size_t j = 0; j < d; j++) {
            X[i * d + j] = (float)normal();
            z += w[j % 6] * X[i * d + j];
        }
        y[i] = z + 0.5 * normal() > 0 ? hi : lo;
    }
}

static double auc_of(const qml_linear *m, const float *X, const double *y, size_t n, size_t d,
                     double pos)
{
    double *p = malloc(n * 2 * sizeof *p), *s = malloc(n * sizeof *s), *yb = malloc(n * sizeof *yb);
    qn_err err;
    assert_int_equal(qml_linear_predict(m, X, n, d, p, &err), 0);
    for (size_t i = 0; i < n; i++) {
        s[i] = p[i * 2 + 1];
        yb[i] = y[i] == pos;
        assert_float_equal(p[i * 2] + p[i * 2 + 1], 1.0, 1e-12);
    }
    double auc;
    assert_int_equal(qml_metric_roc_auc(yb, s, n, &auc, &err), 0);
    free(p);
    free(s);
    free(yb);
    return auc;
}

static void test_logistic_separable_and_sign(void **state)
{
    enum { N = 3000, D = 6 };
    static float X[N * D];
    static double y[N];
    rng_state = 99;
    make_classification(N, D, X, y, 3, 7);
    size_t ntr = 2000;
    /* Silence: liblinear must print nothing on stdout. */
    char path[512];
    snprintf(path, sizeof path, "%s/liblinear_stdout.txt", env_or("QUERN_TEST_WORK", "/tmp"));
    fflush(stdout);
    int saved = dup(1), fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    dup2(fd, 1);
    close(fd);
    qml_logistic_params lp = QML_LOGISTIC_DEFAULTS;
    qml_linear *m;
    qn_err err;
    int rc = qml_linear_fit_logistic(X, ntr, D, y, &lp, &m, &err);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    assert_int_equal(rc, 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 0);

    assert_int_equal(qml_linear_n_outputs(m), 2);
    assert_int_equal(qml_linear_classes(m)[0], 3);
    assert_int_equal(qml_linear_classes(m)[1], 7);
    double auc = auc_of(m, X + ntr * D, y + ntr, N - ntr, D, 7);
    print_message("logistic held-out AUC %.4f (C=1)\n", auc);
    assert_true(auc > 0.95);
    /* The coefficients point the way the data was generated (w0 = 2 > 0). */
    assert_true(qml_linear_coef(m, 0)[0] > 0 && qml_linear_coef(m, 0)[1] < 0);

    /* liblinear's sign follows the first label it sees; ours must not. Swap
     * the first row for one of the other class and refit. */
    size_t other = 0;
    while (y[other] == y[0])
        other++;
    float row[D];
    memcpy(row, X, sizeof row);
    memcpy(X, X + other * D, sizeof row);
    memcpy(X + other * D, row, sizeof row);
    double t = y[0]; y[0] = y[other]; y[other] = t;
    qml_linear *m2;
    assert_int_equal(qml_linear_fit_logistic(X, ntr, D, y, &lp, &m2, &err), 0);
    assert_true(auc_of(m2, X + ntr * D, y + ntr, N - ntr, D, 7) > 0.95);
    assert_float_equal(qml_linear_coef(m2, 0)[0], qml_linear_coef(m, 0)[0], 1e-3);

    /* Class weights: favouring class 7 raises its predicted share. */
    int wl[] = {7};
    double wv[] = {10};
    qml_logistic_params lw = lp;
    lw.n_weights = 1;
    lw.weight_label = wl;
    lw.weight = wv;
    qml_linear *m3;
    assert_int_equal(qml_linear_fit_logistic(X, ntr, D, y, &lw, &m3, &err), 0);
    double p2[2 * 100], p3[2 * 100], s2 = 0, s3 = 0;
    qml_linear_predict(m2, X, 100, D, p2, &err);
    qml_linear_predict(m3, X, 100, D, p3, &err);
    for (int i = 0; i < 100; i++) {
        s2 += p2[2 * i + 1];
        s3 += p3[2 * i + 1];
    }
    assert_true(s3 > s2 + 1.0);
    qml_linear_free(m);
    wl[0] = 5;
    assert_int_equal(qml_linear_fit_logistic(X, ntr, D, y, &lw, &m, &err), QN_INVALID_ARGUMENT);
    assert_null(m);
    assert_non_null(strstr(err.msg, "label 5"));
    qml_linear_free(m2);
    qml_linear_free(m3);
}

static void test_logistic_multiclass_and_errors(void **state)
{
    enum { N = 900, D = 2 };
    static float X[N * D];
    static double y[N];
    rng_state = 3;
    const double cx[] = {0, 4, 0}, cy[] = {0, 0, 4};
    for (int i = 0; i < N; i++) {
        int c = i % 3;
        X[i * D] = (float)(cx[c] + normal());
        X[i * D + 1] = (float)(cy[c] + normal());
        y[i] = c;
    }
    qml_logistic_params lp = QML_LOGISTIC_DEFAULTS;
    qml_linear *m;
    qn_err err;
    assert_int_equal(qml_linear_fit_logistic(X, N, D, y, &lp, &m, &err), 0);
    assert_int_equal(qml_linear_n_outputs(m), 3);
    double *p = malloc(N * 3 * sizeof *p);
    assert_int_equal(qml_linear_predict(m, X, N, D, p, &err), 0);
    int ok = 0;
    for (int i = 0; i < N; i++) {
        int best = 0;
        for (int k = 1; k < 3; k++)
            if (p[i * 3 + k] > p[i * 3 + best])
                best = k;
        ok += best == (int)y[i];
        assert_float_equal(p[i * 3] + p[i * 3 + 1] + p[i * 3 + 2], 1.0, 1e-12);
    }
    print_message("3-class accuracy %.3f\n", ok / (double)N);
    assert_true(ok > 0.9 * N);   /* clusters 4 sd apart: ~97% separable */
    free(p);
    /* JSON round trip, multiclass. */
    char *j = qml_linear_to_json(m, &err);
    qml_linear *m2;
    assert_int_equal(qml_linear_from_json(j, strlen(j), &m2, &err), 0);
    char *j2 = qml_linear_to_json(m2, &err);
    assert_string_equal(j, j2);
    free(j);
    free(j2);
    qml_linear_free(m2);
    qml_linear_free(m);

    /* One class only, non-integer labels, bad C. */
    for (int i = 0; i < N; i++)
        y[i] = 1;
    assert_int_equal(qml_linear_fit_logistic(X, N, D, y, &lp, &m, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "classes"));
    y[4] = 0.5;
    assert_int_equal(qml_linear_fit_logistic(X, N, D, y, &lp, &m, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "row 4"));
    y[4] = 0;
    lp.C = 0;
    assert_int_equal(qml_linear_fit_logistic(X, N, D, y, &lp, &m, &err), QN_INVALID_ARGUMENT);
}

static void test_json_round_trip_and_refusals(void **state)
{
    enum { N = 200, D = 4 };
    float X[N * D];
    double y[N];
    rng_state = 17;
    make_classification(N, D, X, y, 0, 1);
    qml_logistic_params lp = QML_LOGISTIC_DEFAULTS;
    qml_linear *m, *m2;
    qn_err err;
    assert_int_equal(qml_linear_fit_logistic(X, N, D, y, &lp, &m, &err), 0);
    char *j = qml_linear_to_json(m, &err);
    assert_non_null(j);
    assert_int_equal(qml_linear_from_json(j, strlen(j), &m2, &err), 0);
    char *j2 = qml_linear_to_json(m2, &err);
    assert_string_equal(j, j2);
    double a[N * 2], b[N * 2];
    qml_linear_predict(m, X, N, D, a, &err);
    qml_linear_predict(m2, X, N, D, b, &err);
    assert_memory_equal(a, b, sizeof a);
    const char *seed_out = getenv("QUERN_WRITE_SEED");
    if (seed_out) {
        FILE *f = fopen(seed_out, "w");
        if (f) { fputs(j, f); fclose(f); }
    }
    free(j);
    free(j2);
    qml_linear_free(m);
    qml_linear_free(m2);

    static const struct { const char *json, *needle; } cases[] = {
        {"", "line"},
        {"{\"format\":\"quern.linear/1\"", "line"},
        {"{\"format\":\"x\"}", "format"},
        {"{\"format\":\"quern.linear/1\",\"kind\":\"svm\"}", "kind"},
        {"{\"format\":\"quern.linear/1\",\"kind\":\"linear\",\"n_features\":0}", "n_features"},
        {"{\"format\":\"quern.linear/1\",\"kind\":\"linear\",\"n_features\":2,"
         "\"coef\":[[1]],\"intercept\":[0]}", "coef[0]"},
        {"{\"format\":\"quern.linear/1\",\"kind\":\"linear\",\"n_features\":1,"
         "\"coef\":[[1]],\"intercept\":[\"a\"]}", "intercept[0]"},
        {"{\"format\":\"quern.linear/1\",\"kind\":\"linear\",\"n_features\":1,"
         "\"coef\":[[1]],\"intercept\":[0],\"classes\":[0,1]}", "classes"},
        {"{\"format\":\"quern.linear/1\",\"kind\":\"logistic\",\"n_features\":1,"
         "\"coef\":[[1]],\"intercept\":[0],\"classes\":[1,1]}", "classes[1]"},
        {"{\"format\":\"quern.linear/1\",\"kind\":\"logistic\",\"n_features\":1,"
         "\"coef\":[[1]],\"intercept\":[0],\"classes\":[0,1,2]}", "coef"},
        {"{\"format\":\"quern.linear/1\",\"kind\":\"linear\",\"n_features\":1,"
         "\"coef\":[[1e999]],\"intercept\":[0]}", "overflow"},
        {"{\"format\":\"quern.linear/1\",\"format\":\"quern.linear/1\"}", "duplicate"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        qml_linear *bad = (qml_linear *)1;
        int rc = qml_linear_from_json(cases[i].json, strlen(cases[i].json), &bad, &err);
        if (rc != QN_INVALID_ARGUMENT || !strstr(err.msg, cases[i].needle))
            fail_msg("case %zu: rc %d msg \"%s\", wanted \"%s\"", i, rc, err.msg, cases[i].needle);
        assert_null(bad);
    }
}

typedef struct pred_arg {
    const qml_linear *m;
    const float *X;
    const double *want;
    size_t n, d;
    int ok;
} pred_arg;

static void *predict_many(void *p)
{
    pred_arg *a = p;
    double *out = malloc(a->n * 2 * sizeof *out);
    qn_err err;
    a->ok = 1;
    for (int it = 0; it < 200; it++)
        if (qml_linear_predict(a->m, a->X, a->n, a->d, out, &err) < 0 ||
            memcmp(out, a->want, a->n * 2 * sizeof *out) != 0)
            a->ok = 0;
    free(out);
    return NULL;
}

static void test_concurrent_predict(void **state)
{
    enum { N = 500, D = 6 };
    static float X[N * D];
    static double y[N], want[N * 2];
    rng_state = 23;
    make_classification(N, D, X, y, 0, 1);
    qml_logistic_params lp = QML_LOGISTIC_DEFAULTS;
    qml_linear *m;
    qn_err err;
    assert_int_equal(qml_linear_fit_logistic(X, N, D, y, &lp, &m, &err), 0);
    qml_linear_predict(m, X, N, D, want, &err);
    pthread_t t[4];
    pred_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (pred_arg){m, X, want, N, D, 0};
        pthread_create(&t[i], NULL, predict_many, &a[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_true(a[i].ok);
    }
    qml_linear_free(m);
}

/* ---- Bike Sharing --------------------------------------------------------
 * TEST-ONLY loader: reads the all-numeric columns of hour.csv / day.csv into
 * a frame (split on commas, no quoting: these files have none). The real CSV
 * reader lives elsewhere in libquern-ml; this exists so the test does not
 * depend on it. */
static qml_frame *load_bike_test_only(const char *path, const char *const *cols, size_t ncols)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char line[1024];
    int idx[32];
    qn_err err;
    qml_frame *fr = qml_frame_new();
    assert_non_null(fgets(line, sizeof line, f));
    line[strcspn(line, "\r\n")] = 0;
    for (size_t c = 0; c < ncols; c++) {
        idx[c] = -1;
        int k = 0;
        for (char *tok = line, *next; tok; tok = next, k++) {
            next = strchr(tok, ',');
            size_t len = next ? (size_t)(next - tok) : strlen(tok);
            if (next) next++;
            if (strlen(cols[c]) == len && strncmp(tok, cols[c], len) == 0)
                idx[c] = k;
        }
        assert_true(idx[c] >= 0);
        assert_true(qml_frame_add_column(fr, cols[c], QML_NUMERIC, &err) >= 0);
    }
    while (fgets(line, sizeof line, f)) {
        double v[32];
        int k = 0;
        for (char *tok = line; tok && k < 32; k++) {
            v[k] = strtod(tok, NULL);
            tok = strchr(tok, ',');
            if (tok) tok++;
        }
        for (size_t c = 0; c < ncols; c++)
            qml_col_push_num(qml_frame_col(fr, c), v[idx[c]]);
        assert_int_equal(qml_frame_end_row(fr), 0);
    }
    fclose(f);
    return fr;
}

static void bike(const char *file, int hourly, double min_r2)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", env_or("QUERN_DATASETS", "build/datasets"), file);
    /* Predictors only: never casual/registered (they sum to cnt). */
    const char *cols[] = {"season", "yr", "mnth", "hr", "holiday", "weekday", "workingday",
                          "weathersit", "temp", "atemp", "hum", "windspeed", "cnt"};
    const char *const *use = cols;
    size_t ncols = 13;
    const char *day_cols[] = {"season", "yr", "mnth", "holiday", "weekday", "workingday",
                              "weathersit", "temp", "atemp", "hum", "windspeed", "cnt"};
    if (!hourly) {
        use = day_cols;
        ncols = 12;
    }
    qml_frame *fr = load_bike_test_only(path, use, ncols);
    if (!fr) {
        print_message("skipping: %s not found\n", path);
        skip();
    }
    size_t n = qml_frame_nrows(fr);
    qn_err err;
    qml_split s;
    assert_int_equal(qml_split_random(n, 0.2, 42, &s, &err), 0);
    qml_frame *tr = qml_frame_take(fr, s.train, s.n_train, &err);
    qml_frame *te = qml_frame_take(fr, s.test, s.n_test, &err);

    qml_tf_step onehot[] = {{.op = QML_TF_ONEHOT}};
    qml_tf_step pass[] = {{.op = QML_TF_IMPUTE, .impute = QML_IMPUTE_MOST_FREQUENT}};
    qml_tf_step stdz[] = {{.op = QML_TF_IMPUTE, .impute = QML_IMPUTE_MEDIAN},
                          {.op = QML_TF_STANDARDIZE}};
    qml_feature_spec spec[12];
    size_t ns = 0;
    for (size_t c = 0; c + 1 < ncols; c++) {
        const char *name = use[c];
        if (!strcmp(name, "season") || !strcmp(name, "mnth") || !strcmp(name, "hr") ||
            !strcmp(name, "weekday") || !strcmp(name, "weathersit"))
            spec[ns++] = (qml_feature_spec){name, onehot, 1};
        else if (!strcmp(name, "yr") || !strcmp(name, "holiday") || !strcmp(name, "workingday"))
            spec[ns++] = (qml_feature_spec){name, pass, 1};
        else
            spec[ns++] = (qml_feature_spec){name, stdz, 2};
    }
    qml_features *fp;
    assert_int_equal(qml_features_fit(spec, ns, tr, &fp, &err), 0);
    size_t d = qml_features_n_features(fp);
    float *Xtr = malloc(s.n_train * d * sizeof *Xtr), *Xte = malloc(s.n_test * d * sizeof *Xte);
    assert_int_equal(qml_features_transform(fp, tr, Xtr, &err), 0);
    assert_int_equal(qml_features_transform(fp, te, Xte, &err), 0);
    const qml_column *cnt_tr = qml_frame_col(tr, ncols - 1), *cnt_te = qml_frame_col(te, ncols - 1);
    /* The unknown buckets are all-zero columns in training: a small penalty
     * keeps X'X positive definite (and is the model's regularization). */
    qml_ridge_params rp = {.lambda = 1.0, .fit_intercept = 1};
    qml_linear *m;
    assert_int_equal(qml_linear_fit_ridge(Xtr, s.n_train, d, cnt_tr->num, &rp, &m, &err), 0);
    double *yhat = malloc(s.n_test * sizeof *yhat), *base = malloc(s.n_test * sizeof *base);
    assert_int_equal(qml_linear_predict(m, Xte, s.n_test, d, yhat, &err), 0);
    double rmse, mae, r2, base_rmse, mean = 0;
    for (size_t i = 0; i < s.n_train; i++)
        mean += cnt_tr->num[i];
    mean /= (double)s.n_train;
    for (size_t i = 0; i < s.n_test; i++)
        base[i] = mean;
    qml_metric_rmse(cnt_te->num, yhat, s.n_test, &rmse, &err);
    qml_metric_mae(cnt_te->num, yhat, s.n_test, &mae, &err);
    qml_metric_r2(cnt_te->num, yhat, s.n_test, &r2, &err);
    qml_metric_rmse(cnt_te->num, base, s.n_test, &base_rmse, &err);
    print_message("%s: %zu train / %zu test rows, %zu features, ridge lambda 1: RMSE %.1f MAE "
                  "%.1f R2 %.4f (predict-the-mean RMSE %.1f)\n", file, s.n_train, s.n_test, d,
                  rmse, mae, r2, base_rmse);
    assert_true(r2 > min_r2);
    assert_true(rmse < 0.7 * base_rmse);
    free(Xtr);
    free(Xte);
    free(yhat);
    free(base);
    qml_linear_free(m);
    qml_features_free(fp);
    qml_frame_free(tr);
    qml_frame_free(te);
    qml_frame_free(fr);
    qml_split_free(&s);
}

static void test_bike_hour(void **state) { bike("hour.csv", 1, 0.6); }
static void test_bike_day(void **state) { bike("day.csv", 0, 0.75); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ridge_matches_numpy),
        cmocka_unit_test(test_ridge_errors),
        cmocka_unit_test(test_logistic_separable_and_sign),
        cmocka_unit_test(test_logistic_multiclass_and_errors),
        cmocka_unit_test(test_json_round_trip_and_refusals),
        cmocka_unit_test(test_concurrent_predict),
        cmocka_unit_test(test_bike_hour),
        cmocka_unit_test(test_bike_day),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
