/* test_train.c - training runs on the shipped real data, end to end:
 * spec -> qml_train_run -> bundle -> qml_model_load -> the same predictions
 * and metrics. The specs and cleaning steps are the files under examples/,
 * so the examples are checked too.
 *
 * Figures asserted (and printed, for docs/ml.md):
 *   Online Retail, time split at 2011-11-01, ALS 64 factors: MAP@10 and
 *     NDCG@10 above the popularity baseline's.
 *   Adult, trained on adult.data, evaluated on adult.test: XGBoost ROC AUC
 *     >= 0.90, logistic >= 0.88.
 *   Bike Sharing hour.csv, ridge: R2 > 0.6.
 * Re-evaluating the loaded bundle on the holdout must give the training
 * run's metrics: exactly for ALS and linear models (same code, same
 * numbers), within 1e-9 for XGBoost. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ml/als.h"
#include "ml/clean.h"
#include "ml/csv.h"
#include "ml/model.h"
#include "ml/profile.h"
#include "ml/train.h"

static char *path_of(const char *env, const char *name)
{
    const char *d = getenv(env);
    assert_non_null(d);
    char *p = malloc(strlen(d) + strlen(name) + 2);
    sprintf(p, "%s/%s", d, name);
    return p;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = 0;
    fclose(f);
    if (len)
        *len = (size_t)n;
    return b;
}

static qml_train_spec *example_spec(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "examples/train/%s", name);
    char *p = path_of("QUERN_SOURCE_DIR", rel);
    size_t len;
    char *js = slurp(p, &len);
    qml_train_spec *s;
    qn_err err;
    if (qml_train_spec_from_json(js, len, &s, &err) < 0)
        fail_msg("%s: %s", name, err.msg);
    free(js);
    free(p);
    return s;
}

static qml_frame *apply_pipeline(qml_frame *raw, const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "examples/pipelines/%s", name);
    char *p = path_of("QUERN_SOURCE_DIR", rel);
    size_t len;
    char *js = slurp(p, &len);
    /* The example pipelines are prep's documents; their "steps" are what
     * libquern-ml applies, so training here sees what prep would produce. */
    qml_clean_steps *s;
    qml_frame *out = NULL; /* clang cannot see that fail_msg does not return */
    qn_err err;
    json_t *doc = json_loadb(js, len, 0, NULL);
    if (!doc)
        fail_msg("%s is not JSON", name);
    if (qml_clean_from_json(json_object_get(doc, "steps"), &s, &err) < 0 ||
        qml_clean_apply(raw, s, &out, NULL, &err) < 0)
        fail_msg("%s: %s", name, err.msg);
    json_decref(doc);
    qml_clean_free(s);
    free(js);
    free(p);
    qml_frame_free(raw);
    return out;
}

/* A fresh, empty bundle directory under QUERN_TEST_WORK. */
static char *work_dir(const char *name)
{
    char *p = path_of("QUERN_TEST_WORK", name);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
    assert_int_equal(system(cmd), 0);
    return p;
}

static double metric(const json_t *m, const char *name)
{
    const json_t *v = json_object_get(m, name);
    if (!json_is_number(v))
        fail_msg("metric %s missing", name);
    return json_number_value(v);
}

/* Every number in a equals b's within tol (relative to max(1, |a|)). */
static void same_metrics(const json_t *a, const json_t *b, double tol)
{
    const char *k;
    const json_t *v;
    size_t n = 0;
    json_object_foreach((json_t *)a, k, v) {
        if (!strcmp(k, "n_train"))
            continue;
        const json_t *w = json_object_get(b, k);
        if (json_is_null(v)) {
            assert_true(json_is_null(w));
            continue;
        }
        if (!json_is_number(w))
            fail_msg("metric %s missing on re-evaluation", k);
        double x = json_number_value(v), y = json_number_value(w);
        if (fabs(x - y) > tol * fmax(1, fabs(x)))
            fail_msg("metric %s: %.17g at training, %.17g on re-evaluation", k, x, y);
        n++;
    }
    assert_true(n >= 3);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- spec parsing ----------------------------------------------------------- */

static void test_spec_errors_name_the_field(void **state)
{
    (void)state;
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"[]", "must be a JSON object"},
        {"{\"kind\":\"svm\"}", "field \"kind\" must be one of"},
        {"{\"kind\":\"logistic\",\"label\":\"y\",\"lable\":1}", "unknown field \"lable\""},
        {"{\"kind\":\"logistic\"}", "needs the field \"label\""},
        {"{\"kind\":\"als\",\"user\":\"u\"}", "needs the fields \"user\" and \"item\""},
        {"{\"kind\":\"als\",\"user\":\"u\",\"item\":\"i\",\"params\":{\"factors\":0}}",
         "params.factors must be an integer in [1, 1024]"},
        {"{\"kind\":\"als\",\"user\":\"u\",\"item\":\"i\",\"params\":{\"eta\":0.1}}",
         "params.eta: unknown parameter for als"},
        {"{\"kind\":\"xgboost\",\"label\":\"y\",\"params\":{\"objective\":\"rank:pairwise\"}}",
         "params.objective must be one of"},
        {"{\"kind\":\"logistic\",\"label\":\"y\",\"params\":{\"C\":-1}}", "params.C must be"},
        {"{\"kind\":\"linear\",\"label\":\"y\",\"features\":[{\"column\":\"a\",\"encode\":\"log\"}]}",
         "features[0].encode must be one of"},
        {"{\"kind\":\"linear\",\"label\":\"y\",\"features\":[{\"column\":\"a\",\"impute\":\"constant\"}]}",
         "features[0]: impute constant needs \"fill\""},
        {"{\"kind\":\"linear\",\"label\":\"y\",\"features\":[{\"column\":\"y\"}]}",
         "the label \"y\" cannot be a feature"},
        {"{\"kind\":\"linear\",\"label\":\"y\",\"split\":{\"kind\":\"time\",\"column\":\"t\"}}",
         "split.cutoff is required"},
        {"{\"kind\":\"linear\",\"label\":\"y\",\"split\":{\"kind\":\"time\",\"column\":\"t\",\"cutoff\":\"soon\"}}",
         "split.cutoff must be a timestamp"},
        {"{\"kind\":\"linear\",\"label\":\"y\",\"split\":{\"ratio\":1.5}}", "split.ratio must be"},
        {"{\"kind\":\"linear\",\"label\":\"y\",\"split\":{\"kind\":\"leave_k_out\"}}",
         "leave_k_out is for als only"},
        {"{\"kind\":\"als\",\"user\":\"u\",\"item\":\"i\",\"metric\":\"map@5\"}",
         "\"map@5\" is not a metric"},
        {"{\"kind\":\"linear\",\"label\":\"y\",\"metric\":\"r3\"}", "\"r3\" is not a metric"},
        {"{\"kind\":\"linear\"", "not JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        qml_train_spec *s = NULL;
        qn_err err;
        int rc = qml_train_spec_from_json(cases[i].json, strlen(cases[i].json), &s, &err);
        if (rc != QN_INVALID_ARGUMENT || !strstr(err.msg, cases[i].want))
            fail_msg("case %zu: rc %d, \"%s\" lacks \"%s\"", i, rc, err.msg, cases[i].want);
        assert_null(s);
    }
    /* A metric that does not fit the task is refused once the task is known. */
    const char *js = "{\"kind\":\"linear\",\"label\":\"y\",\"metric\":\"roc_auc\"}";
    qml_train_spec *s;
    qn_err err;
    assert_int_equal(qml_train_spec_from_json(js, strlen(js), &s, &err), 0);
    char name[32];
    int hib;
    assert_int_equal(qml_train_primary_metric(s, QML_TASK_REGRESSION, name, sizeof name, &hib, &err),
                     QN_INVALID_ARGUMENT);
    qml_train_spec_free(s);
}

/* ---- Online Retail: ALS against the popularity baseline ---------------------- */

static int progress_calls, last_iteration;
static void count_progress(void *ctx, qml_train_stage st, int it, double loss, double frac)
{
    (void)ctx;
    (void)loss;
    assert_true(frac >= 0 && frac <= 1);
    progress_calls++;
    if (st == QML_STAGE_FIT && it > 0)
        last_iteration = it;
}

static void test_online_retail_als(void **state)
{
    (void)state;
    char *path = path_of("QUERN_DATASETS", "online_retail.csv");
    qml_csv_opts o;
    qml_csv_opts_init(&o);
    qml_field_spec fs[] = {{"InvoiceNo", QML_CATEGORICAL}, {"StockCode", QML_CATEGORICAL},
                           {"CustomerID", QML_NUMERIC}};
    o.fields = fs;
    o.n_fields = 3;
    qml_frame *raw;
    qn_err err;
    if (qml_csv_read_all(path, &o, &raw, NULL, &err) < 0)
        fail_msg("%s", err.msg);
    qml_frame *f = apply_pipeline(raw, "online-retail.json");
    assert_int_equal(qml_frame_nrows(f), 396337); /* test_clean.c's figure */

    qml_train_spec *spec = example_spec("online-retail-als.json");
    char *dir = work_dir("train_retail_als");
    qml_train_opts to = {.progress = count_progress};
    qml_train_result res;
    double t0 = now();
    if (qml_train_run(spec, f, dir, &to, &res, &err) < 0)
        fail_msg("%s", err.msg);
    double secs = now() - t0;
    const json_t *m = res.metrics;
    printf("online retail ALS (64 factors, 15 iterations, 2 threads, %.1f s; %zu train / %zu "
           "test rows, %lld users evaluated):\n", secs, res.n_train, res.n_test,
           (long long)json_integer_value(json_object_get(m, "n_eval_users")));
    static const char *names[] = {"precision@10", "recall@10", "map@10", "ndcg@10", "auc",
                                  "coverage"};
    for (size_t i = 0; i < 6; i++) {
        char b[64];
        snprintf(b, sizeof b, "baseline.%s", names[i]);
        printf("  %-13s ALS %.4f   popularity %.4f\n", names[i], metric(m, names[i]), metric(m, b));
    }
    assert_true(metric(m, "map@10") > metric(m, "baseline.map@10"));
    assert_true(metric(m, "ndcg@10") > metric(m, "baseline.ndcg@10"));
    assert_string_equal(res.primary, "map@10");
    assert_true(res.primary_value == metric(m, "map@10"));
    assert_int_equal(res.n_train + res.n_test, 396337);
    assert_int_equal(last_iteration, 15);
    assert_true(progress_calls >= 15 + 6);

    /* The bundle loads, passes the smoke check and re-evaluates the same. */
    qml_model *lm;
    qml_model_opts mo = {.threads = 1};
    if (qml_model_load(dir, &mo, &lm, &err) < 0)
        fail_msg("%s", err.msg);
    assert_string_equal(qml_model_kind(lm), "als");
    assert_int_equal(qml_model_smoke(lm, &err), 0);
    assert_string_equal(qml_model_input(lm, 0)->name, "user_id");
    assert_string_equal(qml_model_output(lm, 0)->name, "item_id");
    assert_int_equal(qml_model_output(lm, 1)->shape[1], 10);
    json_t *again;
    assert_int_equal(qml_model_evaluate(lm, spec, res.holdout, &again, &err), 0);
    same_metrics(m, again, 0);
    json_decref(again);
    /* Recommendations: the in-memory and the loaded model agree; a known user
     * gets no items seen in training; an unknown user gets the fallback. */
    qml_model_rec a[10], b[10];
    int fa, fb;
    int na = qml_model_recommend(res.model, "17850", 10, 1, a, &fa, &err);
    int nb = qml_model_recommend(lm, "17850", 10, 1, b, &fb, &err);
    assert_int_equal(na, 10);
    assert_int_equal(nb, 10);
    assert_int_equal(fa, 0);
    for (int i = 0; i < 10; i++) {
        assert_string_equal(a[i].item_id, b[i].item_id);
        assert_true(a[i].score == b[i].score);
    }
    assert_int_equal(qml_model_recommend(lm, "no-such-user", 5, 1, b, &fb, &err), 5);
    assert_int_equal(fb, 1);
    assert_int_equal(qml_model_similar(lm, "85123A", 5, b, &err), 5);
    assert_int_equal(qml_model_similar(lm, "no-such-item", 5, b, &err), QN_NOT_FOUND);
    float out[1];
    assert_int_equal(qml_model_predict(lm, &(qml_input_batch){0}, out, &err), QN_FAILED_PRECONDITION);

    /* The profile holds what the monitor will see in traffic: user activity
     * and served-item popularity over 5,000 sampled requests; an unknown user
     * has activity 0 and gets the popular fallback (mean popularity above the
     * profile's median). */
    char *pp = malloc(strlen(dir) + 32);
    sprintf(pp, "%s/profile.json", dir);
    size_t plen;
    char *pjs = slurp(pp, &plen);
    qml_profile *prof;
    assert_int_equal(qml_profile_from_json(pjs, plen, &prof, &err), 0);
    assert_int_equal(prof->nrows, 5000);
    assert_int_equal(prof->ncols, 2);
    assert_string_equal(prof->cols[0].name, "user_activity");
    assert_string_equal(prof->cols[1].name, "item_popularity");
    assert_true(prof->cols[0].min >= 1);
    double act, pop;
    int nf = qml_model_recommend(lm, "no-such-user", 10, 0, b, &fb, &err);
    assert_int_equal(nf, 10);
    assert_int_equal(qml_model_rec_context(lm, "no-such-user", b, nf, &act, &pop), 0);
    assert_true(act == 0);
    assert_true(pop > prof->cols[1].quantiles[QML_PROFILE_NQ / 2]);
    qml_profile_free(prof);
    free(pjs);
    free(pp);
    qml_model_free(lm);

    /* A second run into the same directory is refused (bundles are written once). */
    qml_train_result r2;
    assert_int_equal(qml_train_run(spec, f, dir, NULL, &r2, &err), QN_ALREADY_EXISTS);

    qml_train_result_free(&res);
    qml_train_spec_free(spec);
    qml_frame_free(f);
    free(dir);
    free(path);
}

/* ---- Adult: XGBoost and logistic regression ------------------------------------ */

static const char *adult_names[] = {"age", "workclass", "fnlwgt", "education", "education-num",
                                    "marital-status", "occupation", "relationship", "race", "sex",
                                    "capital-gain", "capital-loss", "hours-per-week",
                                    "native-country", "income"};

static qml_frame *read_adult(const char *file, size_t skip)
{
    char *path = path_of("QUERN_DATASETS", file);
    static const char *na[] = {"?"};
    qml_field_spec fs[15];
    for (int i = 0; i < 15; i++)
        fs[i] = (qml_field_spec){adult_names[i], QML_INFER};
    qml_csv_opts o;
    qml_csv_opts_init(&o);
    o.sep = ", ";
    o.has_header = 0;
    o.skip_lines = skip;
    o.na_values = na;
    o.n_na_values = 1;
    o.fields = fs;
    o.n_fields = 15;
    qml_frame *f;
    qn_err err;
    if (qml_csv_read_all(path, &o, &f, NULL, &err) < 0)
        fail_msg("%s", err.msg);
    free(path);
    return apply_pipeline(f, "adult.json");
}

/* The first n rows of f as a raw batch, the way a client sends them. Owns
 * its arrays; free with free_batch. */
typedef struct batch {
    qml_input_batch b;
    qml_input_col *cols;
    double **num;
    qml_str **str;
} batch;

static batch make_batch(const qml_model *m, const qml_frame *f, size_t n)
{
    batch x = {0};
    size_t k = qml_model_n_inputs(m);
    x.cols = calloc(k, sizeof *x.cols);
    x.num = calloc(k, sizeof *x.num);
    x.str = calloc(k, sizeof *x.str);
    for (size_t i = 0; i < k; i++) {
        const qml_tensor_spec *t = qml_model_input(m, i);
        const qml_column *c = qml_frame_col(f, (size_t)qml_frame_find(f, t->name));
        if (!strcmp(t->datatype, "BYTES")) {
            assert_int_equal(c->type, QML_CATEGORICAL);
            x.str[i] = calloc(n, sizeof **x.str);
            for (size_t r = 0; r < n; r++) {
                const char *s = qml_col_str(c, r);
                x.str[i][r] = (qml_str){s, s ? strlen(s) : 0};
            }
            x.cols[i] = (qml_input_col){t->name, QML_INPUT_STR, NULL, x.str[i]};
        } else {
            assert_string_equal(t->datatype, "FP64");
            x.num[i] = calloc(n, sizeof **x.num);
            for (size_t r = 0; r < n; r++)
                x.num[i][r] = c->missing[r] ? NAN : c->num[r];
            x.cols[i] = (qml_input_col){t->name, QML_INPUT_NUM, x.num[i], NULL};
        }
    }
    x.b = (qml_input_batch){n, k, x.cols};
    return x;
}

static void free_batch(batch *x)
{
    for (size_t i = 0; i < x->b.n_cols; i++) {
        free(x->num[i]);
        free(x->str[i]);
    }
    free(x->num);
    free(x->str);
    free(x->cols);
}

/* Trains spec on adult.data, evaluates on adult.test; checks the bundle
 * round trip. Returns the test ROC AUC. */
static double adult_run(const char *spec_file, const char *dir_name, double tol)
{
    qml_frame *tr = read_adult("adult.data", 0), *te = read_adult("adult.test", 1);
    /* The example pipeline keeps complete rows (as prep does): the classic
     * 30,162 training and 15,060 test rows of Adult. */
    assert_int_equal(qml_frame_nrows(tr), 30162);
    assert_int_equal(qml_frame_nrows(te), 15060);
    qml_train_spec *spec = example_spec(spec_file);
    char *dir = work_dir(dir_name);
    qml_train_opts to = {.holdout = te, .dataset_name = "adult", .dataset_version = 1};
    qml_train_result res;
    qn_err err;
    double t0 = now();
    if (qml_train_run(spec, tr, dir, &to, &res, &err) < 0)
        fail_msg("%s", err.msg);
    double auc = metric(res.metrics, "roc_auc");
    printf("adult %s (%.1f s): test ROC AUC %.4f, accuracy %.4f, log loss %.4f (%zu train, %zu "
           "test rows)\n", spec->kind, now() - t0, auc, metric(res.metrics, "accuracy"),
           metric(res.metrics, "log_loss"), res.n_train, res.n_test);
    assert_int_equal(res.n_test, 15060);
    /* Brier and the holdout calibration table (for the monitor's CBPE): the
     * bins hold every holdout row, each rate a share. */
    double brier = metric(res.metrics, "brier"), cal_n = 0;
    assert_true(brier > 0 && brier < 0.25);
    for (int b = 0; b < 10; b++) {
        char k[40];
        snprintf(k, sizeof k, "calibration.n.%d", b);
        const json_t *nv = json_object_get(res.metrics, k);
        if (!nv)
            continue;
        cal_n += json_number_value(nv);
        snprintf(k, sizeof k, "calibration.rate.%d", b);
        double rate = metric(res.metrics, k);
        assert_true(rate >= 0 && rate <= 1);
    }
    assert_true(cal_n == 15060);

    qml_model *lm;
    if (qml_model_load(dir, NULL, &lm, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(qml_model_smoke(lm, &err), 0);
    assert_int_equal(qml_model_task(lm), QML_TASK_BINARY);
    assert_int_equal(qml_model_n_inputs(lm), 14);
    assert_string_equal(qml_model_output(lm, 0)->name, "probability");
    const qml_tensor_spec *age = NULL, *work = NULL;
    for (size_t i = 0; i < 14; i++) {
        const qml_tensor_spec *t = qml_model_input(lm, i);
        if (!strcmp(t->name, "age"))
            age = t;
        if (!strcmp(t->name, "workclass"))
            work = t;
    }
    assert_non_null(age);
    assert_non_null(work);
    assert_string_equal(age->datatype, "FP64");
    assert_string_equal(work->datatype, "BYTES");

    /* (d) raw rows through the loaded bundle == the in-memory model ==
     * the frame path. */
    size_t n = 2000;
    batch x = make_batch(lm, te, n);
    float *p_loaded = malloc(n * sizeof(float)), *p_mem = malloc(n * sizeof(float)),
          *p_frame = malloc(15060 * sizeof(float));
    assert_int_equal(qml_model_predict(lm, &x.b, p_loaded, &err), 0);
    assert_int_equal(qml_model_predict(res.model, &x.b, p_mem, &err), 0);
    assert_int_equal(qml_model_predict_frame(res.model, te, p_frame, &err), 0);
    for (size_t i = 0; i < n; i++) {
        assert_true(p_loaded[i] == p_mem[i]);
        assert_true(p_loaded[i] == p_frame[i]);
    }
    /* Errors name the input. */
    x.cols[0].name = "agee";
    assert_int_equal(qml_model_predict(lm, &x.b, p_loaded, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, qml_model_input(lm, 0)->name));
    free_batch(&x);

    /* (e) re-evaluation of the loaded bundle on the same holdout. */
    json_t *again;
    assert_int_equal(qml_model_evaluate(lm, spec, res.holdout, &again, &err), 0);
    same_metrics(res.metrics, again, tol);
    json_decref(again);
    const json_t *man = qml_model_manifest(lm);
    assert_true(json_real_value(json_object_get(json_object_get(man, "metrics"), "roc_auc")) == auc);
    assert_string_equal(json_string_value(json_object_get(json_object_get(man, "dataset"), "name")),
                        "adult");
    qml_model_free(lm);

    /* A tampered file is refused at load. */
    char mp[4096];
    snprintf(mp, sizeof mp, "%s/model.json", dir);
    FILE *fp = fopen(mp, "r+b");
    assert_non_null(fp);
    fseek(fp, 3, SEEK_SET);
    int ch = fgetc(fp);
    fseek(fp, 3, SEEK_SET);
    fputc(ch ^ 1, fp);
    fclose(fp);
    assert_int_equal(qml_model_load(dir, NULL, &lm, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "model.json"));

    free(p_loaded);
    free(p_mem);
    free(p_frame);
    qml_train_result_free(&res);
    qml_train_spec_free(spec);
    qml_frame_free(tr);
    qml_frame_free(te);
    free(dir);
    return auc;
}

static void test_adult_xgboost(void **state)
{
    (void)state;
    assert_true(adult_run("adult-xgboost.json", "train_adult_xgb", 1e-9) >= 0.90);
}

static void test_adult_logistic(void **state)
{
    (void)state;
    assert_true(adult_run("adult-logistic.json", "train_adult_logistic", 0) >= 0.88);
}

/* ---- Bike Sharing: ridge, and bundles that must be refused -------------------- */

/* A copy of the bundle in src with model.json replaced by text, written
 * through the bundle writer so every digest is right. */
static char *rebundle(const char *src, const char *name, const char *model_text)
{
    qml_bundle *b;
    qn_err err;
    assert_int_equal(qml_bundle_open(src, &b, &err), 0);
    const qml_manifest *m = qml_bundle_manifest(b);
    char *dir = work_dir(name);
    qml_bundle_writer *w;
    assert_int_equal(qml_bundle_writer_open(dir, &w, &err), 0);
    assert_int_equal(qml_bundle_writer_set_kind(w, qml_manifest_kind(m), &err), 0);
    for (size_t i = 0; i < qml_manifest_n_inputs(m); i++) {
        const qml_tensor_spec *t = qml_manifest_input(m, i);
        assert_int_equal(qml_bundle_writer_add_input(w, t->name, t->datatype, t->shape, t->ndim, &err), 0);
    }
    for (size_t i = 0; i < qml_manifest_n_outputs(m); i++) {
        const qml_tensor_spec *t = qml_manifest_output(m, i);
        assert_int_equal(qml_bundle_writer_add_output(w, t->name, t->datatype, t->shape, t->ndim, &err), 0);
    }
    assert_int_equal(qml_bundle_writer_set_json(w, "transforms", qml_manifest_get(m, "transforms"), &err), 0);
    assert_int_equal(qml_bundle_writer_set_json(w, "params", qml_manifest_get(m, "params"), &err), 0);
    assert_int_equal(qml_bundle_writer_write_file(w, "model.json", model_text, strlen(model_text), &err), 0);
    assert_int_equal(qml_bundle_writer_finish(w, NULL, &err), 0);
    qml_bundle_writer_free(w);
    qml_bundle_close(b);
    return dir;
}

static void test_bike_linear_and_refusals(void **state)
{
    (void)state;
    char *path = path_of("QUERN_DATASETS", "hour.csv");
    qml_frame *f;
    qn_err err;
    if (qml_csv_read_all(path, NULL, &f, NULL, &err) < 0)
        fail_msg("%s", err.msg);
    qml_train_spec *spec = example_spec("bike-hour-linear.json");
    char *dir = work_dir("train_bike_linear");
    qml_train_result res;
    if (qml_train_run(spec, f, dir, NULL, &res, &err) < 0)
        fail_msg("%s", err.msg);
    double r2 = metric(res.metrics, "r2");
    printf("bike sharing hour.csv ridge (lambda 1, one-hot season/mnth/hr/weekday/weathersit): "
           "R2 %.4f, RMSE %.1f, MAE %.1f (%zu train / %zu test rows)\n", r2,
           metric(res.metrics, "rmse"), metric(res.metrics, "mae"), res.n_train, res.n_test);
    assert_true(r2 > 0.6);
    assert_true(fabs(metric(res.metrics, "mean_error")) < metric(res.metrics, "rmse"));
    assert_string_equal(res.primary, "r2");
    assert_int_equal(res.higher_is_better, 1);

    qml_model *lm;
    assert_int_equal(qml_model_load(dir, NULL, &lm, &err), 0);
    assert_int_equal(qml_model_smoke(lm, &err), 0);
    json_t *again;
    assert_int_equal(qml_model_evaluate(lm, spec, res.holdout, &again, &err), 0);
    same_metrics(res.metrics, again, 0);
    json_decref(again);

    /* Valid JSON, wrong model: a coefficient short of the transforms' width. */
    size_t len;
    char mp[4096];
    snprintf(mp, sizeof mp, "%s/model.json", dir);
    char *good = slurp(mp, &len);
    json_t *doc = json_loads(good, 0, NULL);
    json_t *row = json_array_get(json_object_get(doc, "coef"), 0);
    size_t d = json_array_size(row);
    json_array_remove(row, d - 1);
    json_object_set_new(doc, "n_features", json_integer((json_int_t)d - 1));
    char *text = json_dumps(doc, JSON_COMPACT);
    char *bad = rebundle(dir, "train_bike_short", text);
    qml_model *badm = NULL;
    assert_int_equal(qml_model_load(bad, NULL, &badm, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "features but the transforms produce"));
    assert_null(badm);
    free(text);
    free(bad);
    json_decref(doc);

    /* Valid JSON, loads, but predicts infinity: the smoke check refuses it. */
    doc = json_loads(good, 0, NULL);
    row = json_array_get(json_object_get(doc, "coef"), 0);
    for (size_t i = 0; i < d; i++)
        json_array_set_new(row, i, json_real(1e308));
    text = json_dumps(doc, JSON_COMPACT);
    bad = rebundle(dir, "train_bike_huge", text);
    assert_int_equal(qml_model_load(bad, NULL, &badm, &err), 0);
    assert_int_equal(qml_model_smoke(badm, &err), QN_FAILED_PRECONDITION);
    assert_non_null(strstr(err.msg, "not finite"));
    qml_model_free(badm);
    free(text);
    free(bad);
    json_decref(doc);
    free(good);

    qml_model_free(lm);
    qml_train_result_free(&res);
    qml_train_spec_free(spec);
    qml_frame_free(f);
    free(dir);
    free(path);
}

/* The iterations shown in a job's progress before it runs: the params', or
 * each kind's default (the same the training loop uses). */
static void test_iterations_defaults(void **state)
{
    (void)state;
    json_t *p = json_pack("{s:i, s:i}", "iterations", 7, "num_round", 42);
    assert_int_equal(qml_train_iterations("als", p), 7);
    assert_int_equal(qml_train_iterations("xgboost", p), 42);
    assert_int_equal(qml_train_iterations("linear", p), 0);
    json_decref(p);
    qml_als_params ap;
    qml_als_params_init(&ap);
    assert_int_equal(qml_train_iterations("als", NULL), ap.iterations);
    assert_int_equal(qml_train_iterations("als", NULL), 15);
    assert_int_equal(qml_train_iterations("xgboost", NULL), 100);
    assert_int_equal(qml_train_iterations("logistic", NULL), 0);
    assert_int_equal(qml_train_iterations(NULL, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_errors_name_the_field),
        cmocka_unit_test(test_iterations_defaults),
        cmocka_unit_test(test_online_retail_als),
        cmocka_unit_test(test_adult_xgboost),
        cmocka_unit_test(test_adult_logistic),
        cmocka_unit_test(test_bike_linear_and_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
