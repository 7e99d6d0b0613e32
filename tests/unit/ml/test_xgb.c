/*
 * test_xgb.c - XGBoost models: interop with Python's xgboost both ways, Adult
 * test-set AUC, concurrent prediction on one booster, and refused inputs.
 *
 * xgb_reference.py (run once by the group setup with /usr/bin/python3) trains
 * models on Adult and bike-sharing data and writes them with its predictions
 * into QUERN_TEST_WORK/xgb/. Tolerance between C and Python predictions: 1e-6
 * absolute on float32 outputs (both run the same trees, so they agree to the
 * last bit in practice).
 */
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
#include <sys/stat.h>

#include "ml/xgb.h"

#define TOL 1e-6

static char work[1024];
static char script[1024];

static char *path_in(const char *name)
{
    static char p[2048];
    snprintf(p, sizeof p, "%s/%s", work, name);
    return p;
}

static float *read_f32(const char *name, size_t n)
{
    FILE *f = fopen(path_in(name), "rb");
    assert_non_null(f);
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    assert_int_equal(fread(v, sizeof *v, n, f), n);
    assert_int_equal(fgetc(f), EOF);
    fclose(f);
    return v;
}

static void write_f32(const char *name, const float *v, size_t n)
{
    FILE *f = fopen(path_in(name), "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(v, sizeof *v, n, f), n);
    fclose(f);
}

static void read_meta(const char *name, size_t *a, size_t *b, size_t *c)
{
    char file[256];
    snprintf(file, sizeof file, "%s.meta", name);
    FILE *f = fopen(path_in(file), "r");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%zu %zu %zu", a, b, c), 3);
    fclose(f);
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(d))
            return INFINITY;
        if (d > m)
            m = d;
    }
    return m;
}

static int setup(void **state)
{
    const char *tw = getenv("QUERN_TEST_WORK"), *ds = getenv("QUERN_DATASETS");
    const char *src = getenv("QUERN_SOURCE_DIR");
    if (!tw || !ds || !src)
        return -1;
    snprintf(work, sizeof work, "%s/xgb", tw);
    mkdir(work, 0755);
    snprintf(script, sizeof script, "%s/tests/unit/ml/xgb_reference.py", src);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' make '%s' '%s'", script, work, ds);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- Python -> C ------------------------------------------------------------ */

static void check_python_case(const char *name, size_t outputs, int classes, const char *objective)
{
    size_t rows, cols, outs;
    read_meta(name, &rows, &cols, &outs);
    assert_int_equal(outs, outputs);
    char file[256];
    snprintf(file, sizeof file, "%s.x.f32", name);
    float *x = read_f32(file, rows * cols);
    snprintf(file, sizeof file, "%s.pred.f32", name);
    float *want = read_f32(file, rows * outs);
    char model[1400];
    snprintf(model, sizeof model, "%s/%s.json", work, name);

    qn_err err;
    qml_xgb *m = NULL;
    assert_int_equal(qml_xgb_load_file(model, 1, &m, &err), 0);
    assert_int_equal(qml_xgb_n_features(m), cols);
    assert_int_equal(qml_xgb_n_outputs(m), outputs);
    assert_int_equal(qml_xgb_n_classes(m), classes);
    assert_string_equal(qml_xgb_objective(m), objective);
    /* These objectives are walked by libquern-ml's own evaluator (checked at
     * load on probe rows); the comparison below holds it to Python's answers. */
    assert_int_equal(qml_xgb_native(m), 1);

    float *got = malloc(rows * outs * sizeof *got);
    assert_int_equal(qml_xgb_predict(m, x, rows, cols, got, &err), 0);
    double d = max_abs_diff(got, want, rows * outs);
    printf("%s: %zu rows x %zu outputs, max |C - Python| = %.3g\n", name, rows, outs, d);
    assert_true(d <= TOL);
    if (classes) {  /* softprob rows are distributions */
        for (size_t i = 0; i < rows; i++) {
            double s = 0;
            for (size_t k = 0; k < outs; k++)
                s += got[i * outs + k];
            assert_true(fabs(s - 1) < 1e-5);
        }
    }

    /* A row of the wrong width is refused, naming both widths. */
    assert_int_equal(qml_xgb_predict(m, x, 1, cols + 1, got, &err), QN_INVALID_ARGUMENT);
    char want_msg[64];
    snprintf(want_msg, sizeof want_msg, "model expects %zu", cols);
    assert_non_null(strstr(err.msg, want_msg));

    /* The same model through a buffer round trip predicts the same. */
    char *buf;
    size_t len;
    assert_int_equal(qml_xgb_save_buffer(m, &buf, &len, &err), 0);
    qml_xgb *m2 = NULL;
    assert_int_equal(qml_xgb_load_buffer(buf, len, 1, &m2, &err), 0);
    float *got2 = malloc(rows * outs * sizeof *got2);
    assert_int_equal(qml_xgb_predict(m2, x, rows, cols, got2, &err), 0);
    assert_true(max_abs_diff(got, got2, rows * outs) == 0);

    free(got2);
    free(buf);
    qml_xgb_free(m2);
    free(got);
    qml_xgb_free(m);
    free(want);
    free(x);
}

static void test_python_binary(void **state)
{
    check_python_case("py_binary", 1, 0, "binary:logistic");
}

static void test_python_multiclass(void **state)
{
    check_python_case("py_multi", 3, 3, "multi:softprob");
}

static void test_python_regression(void **state)
{
    check_python_case("py_reg", 1, 0, "reg:squarederror");
}

/* ---- Adult: C trains, test-set AUC, Python reads C's model ------------------- */

/* Test-only ROC AUC: the Mann-Whitney statistic with average ranks for ties. */
typedef struct scored {
    float s, y;
} scored;

static int by_score(const void *a, const void *b)
{
    float x = ((const scored *)a)->s, y = ((const scored *)b)->s;
    return (x > y) - (x < y);
}

static double roc_auc(const float *score, const float *y, size_t n)
{
    scored *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = (scored){score[i], y[i]};
    qsort(v, n, sizeof *v, by_score);
    double rank_sum = 0, pos = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && v[j].s == v[i].s)
            j++;
        double avg = (double)(i + j + 1) / 2;  /* ranks i+1..j */
        for (size_t k = i; k < j; k++)
            if (v[k].y > 0.5) {
                rank_sum += avg;
                pos++;
            }
        i = j;
    }
    free(v);
    double neg = (double)n - pos;
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg);
}

typedef struct progress_log {
    int calls;
    double first_train, last_train, last_eval;
    char metric[64];
    int cancel_after;
} progress_log;

static int on_progress(const qml_xgb_progress *p, void *ctx)
{
    progress_log *l = ctx;
    if (l->calls == 0)
        l->first_train = p->train;
    assert_int_equal(p->round, l->calls);
    l->calls++;
    l->last_train = p->train;
    l->last_eval = p->eval;
    snprintf(l->metric, sizeof l->metric, "%s", p->metric);
    return l->cancel_after && l->calls >= l->cancel_after;
}

static void test_adult_auc_and_python_reads_ours(void **state)
{
    size_t ntr, nte, cols;
    read_meta("adult", &ntr, &nte, &cols);
    float *xtr = read_f32("adult_train.x.f32", ntr * cols);
    float *ytr = read_f32("adult_train.y.f32", ntr);
    float *xte = read_f32("adult_test.x.f32", nte * cols);
    float *yte = read_f32("adult_test.y.f32", nte);

    qml_xgb_param p[] = {{"objective", "binary:logistic"}, {"num_round", "200"},
                         {"max_depth", "6"},               {"eta", "0.1"},
                         {"subsample", "0.9"},             {"tree_method", "hist"},
                         {"seed", "3"},                    {"nthread", "2"}};
    qml_xgb_data tr = {.x = xtr, .n_rows = ntr, .n_cols = cols, .y = ytr};
    qml_xgb_data te = {.x = xte, .n_rows = nte, .n_cols = cols, .y = yte};
    progress_log log = {0};
    qml_xgb_train_opts o = {.params = p, .n_params = sizeof p / sizeof p[0], .eval = &te,
                            .progress = on_progress, .progress_ctx = &log};
    qn_err err;
    qml_xgb *m = NULL;
    assert_int_equal(qml_xgb_train(&tr, &o, &m, &err), 0);
    assert_int_equal(log.calls, 200);
    assert_string_equal(log.metric, "logloss");
    assert_true(log.last_train < log.first_train);
    assert_true(isfinite(log.last_eval) && log.last_eval < 0.35);
    assert_int_equal(qml_xgb_n_rounds(m), 200);
    assert_int_equal(qml_xgb_n_outputs(m), 1);

    float *pred = malloc(nte * sizeof *pred);
    assert_int_equal(qml_xgb_predict(m, xte, nte, cols, pred, &err), 0);
    double auc = roc_auc(pred, yte, nte);
    printf("adult: trained on %zu rows, %zu features; test ROC AUC = %.4f over %zu rows "
           "(eval logloss %.4f)\n", ntr, cols, auc, nte, log.last_eval);
    assert_true(auc >= 0.90);

    /* C's model, read by Python, predicts the same on the first 2000 test rows. */
    size_t n = 2000;
    char file[1200];
    snprintf(file, sizeof file, "%s/c_adult.json", work);
    assert_int_equal(qml_xgb_save(m, file, &err), 0);
    write_f32("c_adult.x.f32", xte, n * cols);
    FILE *f = fopen(path_in("c_adult.meta"), "w");
    fprintf(f, "%zu %zu 1\n", n, cols);
    fclose(f);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' predict '%s' c_adult", script, work);
    assert_int_equal(system(cmd), 0);
    float *py = read_f32("c_adult.pypred.f32", n);
    double d = max_abs_diff(pred, py, n);
    printf("adult: max |C - Python| on C's saved model = %.3g\n", d);
    assert_true(d <= TOL);

    free(py);
    free(pred);
    qml_xgb_free(m);
    free(xtr);
    free(ytr);
    free(xte);
    free(yte);
}

/* ---- many threads, one booster ------------------------------------------------ */

typedef struct hammer {
    const qml_xgb *m;
    const float *x, *want;
    size_t rows, cols, outs;
    int seed, failures;
} hammer;

static void *hammer_run(void *arg)
{
    hammer *h = arg;
    unsigned s = (unsigned)h->seed;
    float *out = malloc(64 * h->outs * sizeof *out);
    qn_err err;
    for (int it = 0; it < 400; it++) {
        s = s * 1103515245u + 12345u;
        size_t len = 1 + (s >> 8) % 64;
        size_t start = (s >> 16) % (h->rows - len);
        if (qml_xgb_predict(h->m, h->x + start * h->cols, len, h->cols, out, &err) < 0 ||
            max_abs_diff(out, h->want + start * h->outs, len * h->outs) != 0)
            h->failures++;
    }
    free(out);
    return NULL;
}

static void test_predict_from_four_threads(void **state)
{
    size_t rows, cols, outs;
    read_meta("py_multi", &rows, &cols, &outs);
    float *x = read_f32("py_multi.x.f32", rows * cols);
    char file[1200];
    snprintf(file, sizeof file, "%s/py_multi.json", work);
    qn_err err;
    qml_xgb *m = NULL;
    assert_int_equal(qml_xgb_load_file(file, 1, &m, &err), 0);
    float *serial = malloc(rows * outs * sizeof *serial);
    for (size_t i = 0; i < rows; i++)  /* row by row, one thread: the reference */
        assert_int_equal(qml_xgb_predict(m, x + i * cols, 1, cols, serial + i * outs, &err), 0);

    pthread_t t[4];
    hammer h[4];
    for (int i = 0; i < 4; i++) {
        h[i] = (hammer){m, x, serial, rows, cols, outs, i + 1, 0};
        assert_int_equal(pthread_create(&t[i], NULL, hammer_run, &h[i]), 0);
    }
    int failures = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        failures += h[i].failures;
    }
    assert_int_equal(failures, 0);
    free(serial);
    qml_xgb_free(m);
    free(x);
}

/* ---- small models of each kind trained here --------------------------------- */

static void test_train_multiclass_and_regression(void **state)
{
    /* Three well separated classes along x0; y = 3 x1 for regression. */
    enum { N = 600 };
    float *x = malloc(N * 2 * sizeof *x), y[N], yr[N], w[N];
    for (int i = 0; i < N; i++) {
        int c = i % 3;
        x[2 * i] = (float)c * 10 + (float)(i % 7) * 0.1f;
        x[2 * i + 1] = (float)(i % 50);
        y[i] = (float)c;
        yr[i] = 3 * x[2 * i + 1];
        w[i] = 1 + (float)(i % 2);
    }
    x[5] = NAN;  /* missing values are fine */
    qn_err err;
    qml_xgb *m = NULL;
    qml_xgb_param pm[] = {{"objective", "multi:softprob"}, {"num_class", "3"},
                          {"num_round", "20"}, {"nthread", "1"}};
    qml_xgb_data d = {.x = x, .n_rows = N, .n_cols = 2, .y = y, .w = w};
    qml_xgb_train_opts o = {.params = pm, .n_params = 4};
    assert_int_equal(qml_xgb_train(&d, &o, &m, &err), 0);
    assert_int_equal(qml_xgb_n_outputs(m), 3);
    float out[9];
    float probe[6] = {0.3f, 1, 10.3f, 1, 20.3f, 1};
    assert_int_equal(qml_xgb_predict(m, probe, 3, 2, out, &err), 0);
    for (int r = 0; r < 3; r++)
        assert_true(out[r * 3 + r] > 0.9f);
    qml_xgb_free(m);

    qml_xgb_param pr[] = {{"objective", "reg:squarederror"}, {"num_round", "60"},
                          {"eta", "0.3"}, {"nthread", "1"}};
    d.y = yr;
    o = (qml_xgb_train_opts){.params = pr, .n_params = 4};
    assert_int_equal(qml_xgb_train(&d, &o, &m, &err), 0);
    assert_int_equal(qml_xgb_n_outputs(m), 1);
    assert_int_equal(qml_xgb_predict(m, probe, 3, 2, out, &err), 0);
    for (int r = 0; r < 3; r++)
        assert_true(fabsf(out[r] - 3.0f) < 0.5f);
    qml_xgb_free(m);
    free(x);
}

/* ---- refusals ------------------------------------------------------------------ */

static void test_refusals(void **state)
{
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[4] = {0, 1, 0, 1};
    qml_xgb_data d = {.x = x, .n_rows = 4, .n_cols = 2, .y = y};
    qn_err err;
    qml_xgb *m = NULL;
    struct {
        qml_xgb_param p[2];
        size_t n;
        const char *needle;
    } bad[] = {
        {{{"max_dpeth", "3"}}, 1, "max_dpeth: unknown key"},
        {{{"eta", "fast"}}, 1, "eta: \"fast\" is not a number"},
        {{{"eta", "2"}}, 1, "eta: 2 is outside"},
        {{{"max_depth", "2.5"}}, 1, "not an integer"},
        {{{"objective", "rank:pairwise"}}, 1, "is not one of"},
        {{{"objective", "multi:softprob"}}, 1, "needs num_class"},
        {{{"objective", "binary:logistic"}, {"num_class", "3"}}, 2, "only multi:"},
        {{{"objective", "multi:softprob"}, {"num_class", "2"}}, 2, NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qml_xgb_train_opts o = {.params = bad[i].p, .n_params = bad[i].n};
        int rc = qml_xgb_train(&d, &o, &m, &err);
        if (!bad[i].needle) {  /* a valid multiclass setup: labels 0/1 fit 2 classes */
            assert_int_equal(rc, 0);
            qml_xgb_free(m);
            continue;
        }
        assert_int_equal(rc, QN_INVALID_ARGUMENT);
        assert_non_null(strstr(err.msg, bad[i].needle));
    }

    y[2] = 2;  /* not a probability */
    qml_xgb_param bin[] = {{"objective", "binary:logistic"}};
    qml_xgb_train_opts o = {.params = bin, .n_params = 1};
    assert_int_equal(qml_xgb_train(&d, &o, &m, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "row 2"));
    y[2] = NAN;
    assert_int_equal(qml_xgb_train(&d, &o, &m, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "not finite"));
    y[2] = 0;

    /* Cancelling from progress stops training with QN_CANCELLED. */
    progress_log log = {.cancel_after = 3};
    qml_xgb_param many[] = {{"num_round", "50"}, {"nthread", "1"}};
    o = (qml_xgb_train_opts){.params = many, .n_params = 2, .progress = on_progress,
                             .progress_ctx = &log};
    m = NULL;
    assert_int_equal(qml_xgb_train(&d, &o, &m, &err), QN_CANCELLED);
    assert_null(m);
    assert_int_equal(log.calls, 3);
    assert_non_null(strstr(err.msg, "after round 3"));
    assert_string_equal(log.metric, "rmse");

    /* Models that are not XGBoost JSON. */
    assert_int_equal(qml_xgb_load_buffer("binf\0\0\0", 7, 1, &m, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "not a JSON document"));
    const char *junk = "{\"learner\": 3}";
    assert_int_equal(qml_xgb_load_buffer(junk, strlen(junk), 1, &m, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "xgboost model"));
    assert_null(strstr(err.msg, "Stack trace"));
    const char *trunc = "{\"learner\": {\"attributes\"";
    assert_int_equal(qml_xgb_load_buffer(trunc, strlen(trunc), 1, &m, &err), QN_INVALID_ARGUMENT);
    char file[1200];
    snprintf(file, sizeof file, "%s/no-such-model.json", work);
    assert_int_equal(qml_xgb_load_file(file, 1, &m, &err), QN_NOT_FOUND);
    assert_non_null(strstr(err.msg, "no-such-model.json"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_python_binary),
        cmocka_unit_test(test_python_multiclass),
        cmocka_unit_test(test_python_regression),
        cmocka_unit_test(test_adult_auc_and_python_reads_ours),
        cmocka_unit_test(test_predict_from_four_threads),
        cmocka_unit_test(test_train_multiclass_and_regression),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
