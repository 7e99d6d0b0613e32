/* test_model.c - the model handle on small synthetic data: every kind and
 * task through train -> bundle -> load, inputs and outputs as declared,
 * input errors that name the input, concurrent prediction equal to serial,
 * cancellation, leave-k-out ALS. The real-data checks are in test_train.c. */
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
#include <unistd.h>

#include "ml/model.h"
#include "ml/train.h"

#define N 600

static uint64_t rng = 12345;
static double unif(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* x numeric (some missing), c categorical in {a, b, c}, y: 3 classes when
 * classes == 3, else 2 classes, or a real target when classes == 0. */
static qml_frame *synth(int classes)
{
    static const char *cats[] = {"a", "b", "c"};
    qn_err err;
    qml_frame *f = qml_frame_new();
    assert_int_equal(qml_frame_add_column(f, "x", QML_NUMERIC, &err), 0);
    assert_int_equal(qml_frame_add_column(f, "c", QML_CATEGORICAL, &err), 1);
    assert_int_equal(qml_frame_add_column(f, "y", QML_NUMERIC, &err), 2);
    for (int i = 0; i < N; i++) {
        double x = unif() * 4 - 2;
        int c = (int)(unif() * 3);
        double s = x + (c == 1 ? 1.5 : c == 2 ? -1.5 : 0) + (unif() - 0.5);
        if (i % 17 == 0)
            qml_col_push_missing(qml_frame_col(f, 0));
        else
            qml_col_push_num(qml_frame_col(f, 0), x);
        qml_col_push_str(qml_frame_col(f, 1), cats[c], 1);
        double y = classes == 0 ? 3 * s + 1 : classes == 2 ? (s > 0) : (s < -1 ? 0 : s < 1 ? 1 : 2);
        qml_col_push_num(qml_frame_col(f, 2), y);
        assert_int_equal(qml_frame_end_row(f), 0);
    }
    return f;
}

static char *fresh_dir(const char *name)
{
    const char *w = getenv("QUERN_TEST_WORK");
    assert_non_null(w);
    char *p = malloc(strlen(w) + strlen(name) + 2);
    sprintf(p, "%s/%s", w, name);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
    assert_int_equal(system(cmd), 0);
    return p;
}

static qml_model *train_load(const char *spec_json, qml_frame *f, const char *name,
                             qml_train_result *res, qml_train_spec **spec)
{
    qn_err err;
    if (qml_train_spec_from_json(spec_json, strlen(spec_json), spec, &err) < 0)
        fail_msg("%s", err.msg);
    char *dir = fresh_dir(name);
    if (qml_train_run(*spec, f, dir, NULL, res, &err) < 0)
        fail_msg("%s: %s", name, err.msg);
    qml_model *m;
    if (qml_model_load(dir, NULL, &m, &err) < 0)
        fail_msg("%s: %s", name, err.msg);
    assert_int_equal(qml_model_smoke(m, &err), 0);
    free(dir);
    return m;
}

static const double xs[4] = {0.5, NAN, -1.0, 2.0};
static const qml_str cs[4] = {{"a", 1}, {"b", 1}, {NULL, 0}, {"zzz", 3}};

static void test_tasks_and_outputs(void **state)
{
    (void)state;
    static const struct {
        const char *spec;
        int classes;
        const char *out;
        size_t width;
        qml_task task;
    } cases[] = {
        {"{\"kind\":\"logistic\",\"label\":\"y\"}", 2, "probability", 1, QML_TASK_BINARY},
        {"{\"kind\":\"logistic\",\"label\":\"y\"}", 3, "probabilities", 3, QML_TASK_MULTICLASS},
        {"{\"kind\":\"xgboost\",\"label\":\"y\",\"params\":{\"num_round\":20,\"nthread\":1}}", 2,
         "probability", 1, QML_TASK_BINARY},
        {"{\"kind\":\"xgboost\",\"label\":\"y\",\"params\":{\"num_round\":20,\"nthread\":1}}", 3,
         "probabilities", 3, QML_TASK_MULTICLASS},
        {"{\"kind\":\"xgboost\",\"label\":\"y\",\"params\":{\"num_round\":20,\"nthread\":1,"
         "\"objective\":\"reg:squarederror\"}}", 0, "prediction", 1, QML_TASK_REGRESSION},
        {"{\"kind\":\"linear\",\"label\":\"y\",\"features\":[{\"column\":\"x\",\"encode\":\"minmax\"},"
         "{\"column\":\"c\",\"encode\":\"hash\",\"buckets\":8}]}", 0, "prediction", 1,
         QML_TASK_REGRESSION},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        qml_frame *f = synth(cases[k].classes);
        qml_train_result res;
        qml_train_spec *spec;
        char name[32];
        snprintf(name, sizeof name, "model_case%zu", k);
        qml_model *m = train_load(cases[k].spec, f, name, &res, &spec);
        assert_int_equal(qml_model_task(m), cases[k].task);
        assert_int_equal(qml_model_output_width(m), cases[k].width);
        assert_string_equal(qml_model_output(m, 0)->name, cases[k].out);
        assert_int_equal(qml_model_n_inputs(m), 2);
        assert_string_equal(qml_model_input(m, 0)->datatype, "FP64");
        assert_string_equal(qml_model_input(m, 1)->datatype, "BYTES");
        /* A missing x (NaN) and a missing c are imputed; "zzz" is an unknown category. */
        qml_input_col cols[] = {{"c", QML_INPUT_STR, NULL, cs}, {"x", QML_INPUT_NUM, xs, NULL}};
        qml_input_batch b = {4, 2, cols};
        float out[4 * 3], mem[4 * 3];
        qn_err err;
        if (qml_model_predict(m, &b, out, &err) < 0)
            fail_msg("case %zu: %s", k, err.msg);
        assert_int_equal(qml_model_predict(res.model, &b, mem, &err), 0);
        for (size_t i = 0; i < 4 * cases[k].width; i++) {
            assert_true(isfinite(out[i]));
            assert_true(out[i] == mem[i]);
        }
        if (cases[k].task == QML_TASK_MULTICLASS)
            for (size_t i = 0; i < 4; i++)
                assert_float_equal(out[i * 3] + out[i * 3 + 1] + out[i * 3 + 2], 1.0, 1e-5);
        /* The model learned something: better than chance on its holdout. */
        const char *pm = cases[k].task == QML_TASK_REGRESSION ? "r2" : "accuracy";
        double v = json_number_value(json_object_get(res.metrics, pm));
        printf("case %zu (%s, %s): %s = %.3f\n", k, spec->kind, qml_task_name(cases[k].task), pm, v);
        assert_true(v > (cases[k].task == QML_TASK_REGRESSION ? 0.8 : 0.7));
        qml_model_free(m);
        qml_train_result_free(&res);
        qml_train_spec_free(spec);
        qml_frame_free(f);
    }
}

static void test_input_errors_name_the_input(void **state)
{
    (void)state;
    qml_frame *f = synth(2);
    qml_train_result res;
    qml_train_spec *spec;
    qml_model *m = train_load("{\"kind\":\"logistic\",\"label\":\"y\",\"features\":["
                              "{\"column\":\"x\",\"impute\":\"median\"},{\"column\":\"c\"}]}",
                              f, "model_errors", &res, &spec);
    qn_err err;
    float out[4];
    static const qml_str bad_num[4] = {{"1.5", 3}, {"abc", 3}, {"2", 1}, {"3", 1}};
    static const qml_str nul[4] = {{"a", 1}, {"a\0b", 3}, {"a", 1}, {"a", 1}};
    static const double inf[4] = {0, 1, INFINITY, 0};
    static const struct {
        qml_input_col cols[2];
        size_t ncols;
        const char *want;
    } cases[] = {
        {{{"x", QML_INPUT_NUM, xs, NULL}}, 1, "c"},
        {{{"x", QML_INPUT_STR, NULL, bad_num}, {"c", QML_INPUT_STR, NULL, cs}}, 2, "x"},
        {{{"x", QML_INPUT_NUM, xs, NULL}, {"c", QML_INPUT_STR, NULL, nul}}, 2, "input c, row 1"},
        {{{"x", QML_INPUT_NUM, inf, NULL}, {"c", QML_INPUT_STR, NULL, cs}}, 2, "x"},
        {{{"x", QML_INPUT_NUM, xs, NULL}, {"x", QML_INPUT_NUM, xs, NULL}}, 2, "x"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        qml_input_batch b = {4, cases[k].ncols, cases[k].cols};
        int rc = qml_model_predict(m, &b, out, &err);
        if (rc != QN_INVALID_ARGUMENT || !strstr(err.msg, cases[k].want))
            fail_msg("case %zu: rc %d \"%s\" lacks \"%s\"", k, rc, err.msg, cases[k].want);
    }
    /* Numbers as strings parse; extra inputs are ignored. */
    static const qml_str nums[4] = {{"1.5", 3}, {"-1", 2}, {"2", 1}, {"0", 1}};
    qml_input_col ok[] = {{"x", QML_INPUT_STR, NULL, nums}, {"c", QML_INPUT_STR, NULL, cs},
                          {"extra", QML_INPUT_NUM, xs, NULL}};
    assert_int_equal(qml_model_predict(m, &(qml_input_batch){4, 3, ok}, out, &err), 0);
    qml_model_rec r[1];
    int fb;
    assert_int_equal(qml_model_recommend(m, "u", 1, 1, r, &fb, &err), QN_FAILED_PRECONDITION);
    qml_model_free(m);
    qml_train_result_free(&res);
    qml_train_spec_free(spec);
    qml_frame_free(f);

    assert_int_equal(qml_model_load("/nonexistent/quern/bundle", NULL, &m, &err), QN_NOT_FOUND);
}

typedef struct hammer {
    const qml_model *m;
    const qml_input_batch *b;
    const float *want;
    size_t n;
    int ok;
} hammer;

static void *hammer_run(void *arg)
{
    hammer *h = arg;
    float *out = malloc(h->n * sizeof *out);
    qn_err err;
    h->ok = 1;
    for (int it = 0; it < 50 && h->ok; it++) {
        if (qml_model_predict(h->m, h->b, out, &err) < 0)
            h->ok = 0;
        for (size_t i = 0; h->ok && i < h->n; i++)
            h->ok = out[i] == h->want[i];
    }
    free(out);
    return NULL;
}

static void test_concurrent_predict(void **state)
{
    (void)state;
    qml_frame *f = synth(2);
    qml_train_result res;
    qml_train_spec *spec;
    qml_model *m = train_load("{\"kind\":\"xgboost\",\"label\":\"y\",\"params\":{\"num_round\":30}}",
                              f, "model_threads", &res, &spec);
    enum { R = 256 };
    double x[R];
    qml_str c[R];
    static const char *cats[] = {"a", "b", "c", "d"};
    for (int i = 0; i < R; i++) {
        x[i] = unif() * 4 - 2;
        c[i] = (qml_str){cats[i % 4], 1};
    }
    qml_input_col cols[] = {{"x", QML_INPUT_NUM, x, NULL}, {"c", QML_INPUT_STR, NULL, c}};
    qml_input_batch b = {R, 2, cols};
    float want[R];
    qn_err err;
    assert_int_equal(qml_model_predict(m, &b, want, &err), 0);
    pthread_t t[4];
    hammer h[4];
    for (int i = 0; i < 4; i++) {
        h[i] = (hammer){m, &b, want, R, 0};
        pthread_create(&t[i], NULL, hammer_run, &h[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_true(h[i].ok);
    }
    qml_model_free(m);
    qml_train_result_free(&res);
    qml_train_spec_free(spec);
    qml_frame_free(f);
}

/* Users in 4 groups, each buying mostly its group's items. */
static qml_frame *synth_events(void)
{
    qn_err err;
    qml_frame *f = qml_frame_new();
    assert_int_equal(qml_frame_add_column(f, "user", QML_CATEGORICAL, &err), 0);
    assert_int_equal(qml_frame_add_column(f, "item", QML_CATEGORICAL, &err), 1);
    assert_int_equal(qml_frame_add_column(f, "ts", QML_TIMESTAMP, &err), 2);
    char u[16], it[16];
    for (int e = 0; e < 4000; e++) {
        int user = (int)(unif() * 200), g = user % 4;
        int item = unif() < 0.85 ? g + 4 * (int)(unif() * 10) : (int)(unif() * 40);
        snprintf(u, sizeof u, "u%d", user);
        snprintf(it, sizeof it, "i%d", item);
        qml_col_push_str(qml_frame_col(f, 0), u, strlen(u));
        qml_col_push_str(qml_frame_col(f, 1), it, strlen(it));
        qml_col_push_num(qml_frame_col(f, 2), 1.3e9 + e);
        assert_int_equal(qml_frame_end_row(f), 0);
    }
    return f;
}

static void test_als_leave_k_out(void **state)
{
    (void)state;
    qml_frame *f = synth_events();
    qml_train_result res;
    qml_train_spec *spec;
    qml_model *m = train_load("{\"kind\":\"als\",\"user\":\"user\",\"item\":\"item\",\"time\":\"ts\","
                              "\"split\":{\"kind\":\"leave_k_out\",\"k\":2},\"k\":5,"
                              "\"params\":{\"factors\":8,\"iterations\":10,\"threads\":2}}",
                              f, "model_als", &res, &spec);
    const json_t *mt = res.metrics;
    double map = json_number_value(json_object_get(mt, "map@5")),
           base = json_number_value(json_object_get(mt, "baseline.map@5"));
    printf("synthetic ALS leave-2-out: map@5 %.3f, popularity %.3f\n", map, base);
    assert_true(map > base);
    /* Every user with more than 2 distinct items lost exactly its 2 latest pairs. */
    assert_int_equal(json_integer_value(json_object_get(mt, "n_eval_users")), 200);
    assert_int_equal(qml_model_output(m, 1)->shape[1], 5);
    qml_model_rec r[5];
    int fb;
    qn_err err;
    /* Seen items included: u4 (group 0) has seen most of its 10 group items, so
     * they are the top of its list. */
    assert_int_equal(qml_model_recommend(m, "u4", 5, 0, r, &fb, &err), 5);
    assert_int_equal(fb, 0);
    int own = 0;
    for (int i = 0; i < 5; i++)
        own += atoi(r[i].item_id + 1) % 4 == 0;
    assert_true(own >= 4); /* 15 % of events are off-group: allow one */
    json_t *again;
    assert_int_equal(qml_model_evaluate(m, spec, res.holdout, &again, &err), 0);
    assert_true(json_number_value(json_object_get(again, "map@5")) == map);
    assert_true(json_number_value(json_object_get(again, "ndcg@5")) ==
                json_number_value(json_object_get(mt, "ndcg@5")));
    json_decref(again);
    qml_model_free(m);
    qml_train_result_free(&res);
    qml_train_spec_free(spec);
    qml_frame_free(f);
}

static atomic_int cancel_flag;
static void cancel_in_fit(void *ctx, qml_train_stage st, int it, double loss, double frac)
{
    (void)ctx;
    (void)loss;
    (void)frac;
    if (st == QML_STAGE_FIT && it == 2)
        atomic_store(&cancel_flag, 1);
}

static void test_cancel(void **state)
{
    (void)state;
    qml_frame *f = synth_events();
    const char *js = "{\"kind\":\"als\",\"user\":\"user\",\"item\":\"item\","
                     "\"params\":{\"factors\":8,\"iterations\":10}}";
    qml_train_spec *spec;
    qn_err err;
    assert_int_equal(qml_train_spec_from_json(js, strlen(js), &spec, &err), 0);
    char *dir = fresh_dir("model_cancel");
    qml_train_opts o = {.progress = cancel_in_fit, .cancel = &cancel_flag};
    qml_train_result res;
    atomic_store(&cancel_flag, 0);
    assert_int_equal(qml_train_run(spec, f, dir, &o, &res, &err), QN_CANCELLED);
    assert_null(res.model);
    char mp[4096];
    snprintf(mp, sizeof mp, "%s/manifest.json", dir);
    assert_int_not_equal(access(mp, F_OK), 0);
    qml_train_spec_free(spec);
    qml_frame_free(f);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tasks_and_outputs),
        cmocka_unit_test(test_input_errors_name_the_input),
        cmocka_unit_test(test_concurrent_predict),
        cmocka_unit_test(test_als_leave_k_out),
        cmocka_unit_test(test_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
