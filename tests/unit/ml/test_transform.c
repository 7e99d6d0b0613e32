/* test_transform.c - fitted feature pipelines: fit values, frame vs raw
 * transforms, JSON round trips, errors naming the input, concurrent use. */
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

#include "ml/transform.h"

/* age: 10, missing, 30, 40 (mean of present = 80/3)
 * city: "a", "b", "a", missing
 * season (numeric codes): 1, 2, 2, 3
 * tag: "x", "y", "z", "x" */
static qml_frame *small_frame(void)
{
    qn_err err;
    qml_frame *f = qml_frame_new();
    qml_column *age = qml_frame_col(f, (size_t)qml_frame_add_column(f, "age", QML_NUMERIC, &err));
    qml_column *city = qml_frame_col(f, (size_t)qml_frame_add_column(f, "city", QML_CATEGORICAL, &err));
    qml_column *season = qml_frame_col(f, (size_t)qml_frame_add_column(f, "season", QML_NUMERIC, &err));
    qml_column *tag = qml_frame_col(f, (size_t)qml_frame_add_column(f, "tag", QML_CATEGORICAL, &err));
    double ages[] = {10, NAN, 30, 40}, seasons[] = {1, 2, 2, 3};
    const char *cities[] = {"a", "b", "a", NULL}, *tags[] = {"x", "y", "z", "x"};
    for (int r = 0; r < 4; r++) {
        if (isnan(ages[r])) qml_col_push_missing(age); else qml_col_push_num(age, ages[r]);
        if (cities[r]) qml_col_push_str(city, cities[r], strlen(cities[r]));
        else qml_col_push_missing(city);
        qml_col_push_num(season, seasons[r]);
        qml_col_push_str(tag, tags[r], strlen(tags[r]));
        assert_int_equal(qml_frame_end_row(f), 0);
    }
    return f;
}

static const qml_tf_step age_steps[] = {{.op = QML_TF_IMPUTE, .impute = QML_IMPUTE_MEAN},
                                        {.op = QML_TF_STANDARDIZE}};
static const qml_tf_step city_steps[] = {{.op = QML_TF_IMPUTE, .impute = QML_IMPUTE_CONSTANT,
                                          .fill_str = "zz"},
                                         {.op = QML_TF_ONEHOT}};
static const qml_tf_step season_steps[] = {{.op = QML_TF_ONEHOT}};
static const qml_tf_step tag_steps[] = {{.op = QML_TF_HASH, .n_buckets = 8, .hash_signed = 1}};
static const qml_feature_spec spec[] = {{"age", age_steps, 2}, {"city", city_steps, 2},
                                        {"season", season_steps, 1}, {"tag", tag_steps, 1}};

static qml_features *fit_small(qml_frame **frame)
{
    qn_err err;
    qml_features *fp;
    *frame = small_frame();
    int rc = qml_features_fit(spec, 4, *frame, &fp, &err);
    if (rc < 0)
        fail_msg("fit: %s", err.msg);
    return fp;
}

static void test_fit_values_and_names(void **state)
{
    qml_frame *fr;
    qml_features *fp = fit_small(&fr);
    /* 1 (age) + city {a, b, zz} + unknown + season {1,2,3} + unknown + 8 buckets */
    assert_int_equal(qml_features_n_features(fp), 1 + 4 + 4 + 8);
    assert_string_equal(qml_features_name(fp, 0), "age");
    assert_string_equal(qml_features_name(fp, 1), "city=a");
    assert_string_equal(qml_features_name(fp, 3), "city=zz");
    assert_string_equal(qml_features_name(fp, 4), "city=__unknown__");
    assert_string_equal(qml_features_name(fp, 5), "season=1");
    assert_string_equal(qml_features_name(fp, 8), "season=__unknown__");
    assert_string_equal(qml_features_name(fp, 9), "tag#0");
    assert_null(qml_features_name(fp, 17));

    size_t d = qml_features_n_features(fp);
    float X[4 * 17];
    qn_err err;
    assert_int_equal(qml_features_transform(fp, fr, X, &err), 0);
    /* age imputed with 80/3; mean stays 80/3, population std of
     * {10, 80/3, 30, 40}: sum of squares = 277.78+0+11.11+177.78 = 466.67 -> /4 -> sqrt */
    double mean = 80.0 / 3, sd = sqrt(((10 - mean) * (10 - mean) + (30 - mean) * (30 - mean) +
                                       (40 - mean) * (40 - mean)) / 4);
    assert_float_equal(X[0 * d], (10 - mean) / sd, 1e-6);
    assert_float_equal(X[1 * d], 0.0, 1e-6);
    assert_float_equal(X[3 * d], (40 - mean) / sd, 1e-6);
    /* city one-hot: rows a, b, a, zz(imputed) */
    float city_expect[4][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {1, 0, 0, 0}, {0, 0, 1, 0}};
    float season_expect[4][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}};
    for (int r = 0; r < 4; r++) {
        assert_memory_equal(&X[r * d + 1], city_expect[r], sizeof city_expect[r]);
        assert_memory_equal(&X[r * d + 5], season_expect[r], sizeof season_expect[r]);
        /* hashing: exactly one bucket set to +-1 per row; equal keys, equal rows */
        int nz = 0;
        for (int b = 0; b < 8; b++)
            if (X[r * d + 9 + b] != 0) {
                nz++;
                assert_true(fabsf(X[r * d + 9 + b]) == 1.0f);
            }
        assert_int_equal(nz, 1);
    }
    assert_memory_equal(&X[0 * d + 9], &X[3 * d + 9], 8 * sizeof(float));
    qml_features_free(fp);
    qml_frame_free(fr);
}

static void test_raw_matches_frame_and_unknowns(void **state)
{
    qml_frame *fr;
    qml_features *fp = fit_small(&fr);
    size_t d = qml_features_n_features(fp);
    float Xf[4 * 17], Xr[4 * 17];
    qn_err err;
    assert_int_equal(qml_features_transform(fp, fr, Xf, &err), 0);
    /* The same rows as serve sends them: numbers as strings, season as number
     * or string, missing as MISSING / NaN / "". Extra inputs are ignored. */
    qml_raw_value age[] = {{QML_RAW_STR, .str = "10"}, {QML_RAW_NUM, .num = NAN},
                           {QML_RAW_NUM, .num = 30}, {QML_RAW_STR, .str = "4e1"}};
    qml_raw_value city[] = {{QML_RAW_STR, .str = "a"}, {QML_RAW_STR, .str = "b"},
                            {QML_RAW_STR, .str = "a"}, {QML_RAW_STR, .str = ""}};
    qml_raw_value season[] = {{QML_RAW_NUM, .num = 1}, {QML_RAW_STR, .str = "2.0"},
                              {QML_RAW_NUM, .num = 2}, {QML_RAW_STR, .str = "3"}};
    qml_raw_value tag[] = {{QML_RAW_STR, .str = "x"}, {QML_RAW_STR, .str = "y"},
                           {QML_RAW_STR, .str = "z"}, {QML_RAW_STR, .str = "x"}};
    qml_raw_input in[] = {{"extra", tag}, {"tag", tag}, {"season", season}, {"city", city},
                          {"age", age}};
    assert_int_equal(qml_features_transform_raw(fp, in, 5, 4, Xr, &err), 0);
    assert_memory_equal(Xf, Xr, sizeof Xf);

    /* Unseen categories land in the unknown bucket. */
    qml_raw_value one_age = {QML_RAW_NUM, .num = 20}, one_city = {QML_RAW_STR, .str = "paris"},
                  one_season = {QML_RAW_NUM, .num = 7}, one_tag = {QML_RAW_STR, .str = "x"};
    qml_raw_input one[] = {{"age", &one_age}, {"city", &one_city}, {"season", &one_season},
                           {"tag", &one_tag}};
    assert_int_equal(qml_features_transform_raw(fp, one, 4, 1, Xr, &err), 0);
    assert_true(Xr[4] == 1.0f && Xr[1] == 0 && Xr[2] == 0 && Xr[3] == 0);
    assert_true(Xr[8] == 1.0f && Xr[5] == 0 && Xr[6] == 0 && Xr[7] == 0);
    (void)d;
    qml_features_free(fp);
    qml_frame_free(fr);
}

static void test_raw_errors_name_the_input(void **state)
{
    qml_frame *fr;
    qml_features *fp = fit_small(&fr);
    float X[17];
    qn_err err;
    qml_raw_value age = {QML_RAW_NUM, .num = 1}, city = {QML_RAW_STR, .str = "a"},
                  season = {QML_RAW_NUM, .num = 1}, tag = {QML_RAW_STR, .str = "x"};
    qml_raw_input in[] = {{"age", &age}, {"city", &city}, {"season", &season}, {"tag", &tag}};

    /* Missing input. */
    assert_int_equal(qml_features_transform_raw(fp, in, 3, 1, X, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "tag"));
    assert_non_null(strstr(err.msg, "missing"));
    /* Wrong type: a word for a numeric input. */
    age = (qml_raw_value){QML_RAW_STR, .str = "old"};
    assert_int_equal(qml_features_transform_raw(fp, in, 4, 1, X, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "age"));
    assert_non_null(strstr(err.msg, "expected a number"));
    /* Infinity is never imputed. */
    age = (qml_raw_value){QML_RAW_NUM, .num = INFINITY};
    assert_int_equal(qml_features_transform_raw(fp, in, 4, 1, X, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "infinite"));
    /* NaN where the chain has no imputer (season). */
    age = (qml_raw_value){QML_RAW_NUM, .num = 5};
    season = (qml_raw_value){QML_RAW_NUM, .num = NAN};
    assert_int_equal(qml_features_transform_raw(fp, in, 4, 1, X, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "season"));
    assert_non_null(strstr(err.msg, "no impute"));
    /* Duplicate input. */
    season = (qml_raw_value){QML_RAW_NUM, .num = 1};
    qml_raw_input dup[] = {{"age", &age}, {"city", &city}, {"season", &season}, {"tag", &tag},
                           {"age", &age}};
    assert_int_equal(qml_features_transform_raw(fp, dup, 5, 1, X, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "twice"));
    qml_features_free(fp);
    qml_frame_free(fr);
}

static void test_fit_errors(void **state)
{
    qml_frame *fr = small_frame();
    qml_features *fp = NULL;
    qn_err err;
    /* Missing values and no impute step: refused at fit, not in production. */
    qml_tf_step std[] = {{.op = QML_TF_STANDARDIZE}};
    qml_feature_spec s1[] = {{"age", std, 1}};
    assert_int_equal(qml_features_fit(s1, 1, fr, &fp, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "age"));
    /* A categorical column needs onehot or hash. */
    qml_tf_step imp[] = {{.op = QML_TF_IMPUTE, .impute = QML_IMPUTE_MOST_FREQUENT},
                         {.op = QML_TF_MINMAX}};
    qml_feature_spec s2[] = {{"city", imp, 2}};
    assert_int_equal(qml_features_fit(s2, 1, fr, &fp, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "city"));
    /* Mean of a categorical column. */
    qml_tf_step mean[] = {{.op = QML_TF_IMPUTE, .impute = QML_IMPUTE_MEAN}, {.op = QML_TF_ONEHOT}};
    qml_feature_spec s3[] = {{"city", mean, 2}};
    assert_int_equal(qml_features_fit(s3, 1, fr, &fp, &err), QN_INVALID_ARGUMENT);
    /* Unknown column. */
    qml_feature_spec s4[] = {{"salary", std, 1}};
    assert_int_equal(qml_features_fit(s4, 1, fr, &fp, &err), QN_NOT_FOUND);
    assert_non_null(strstr(err.msg, "salary"));
    /* Bad chain order: encoder then impute. */
    qml_tf_step bad[] = {{.op = QML_TF_ONEHOT}, {.op = QML_TF_IMPUTE}};
    qml_feature_spec s5[] = {{"tag", bad, 2}};
    assert_int_equal(qml_features_fit(s5, 1, fr, &fp, &err), QN_INVALID_ARGUMENT);
    /* Hash buckets out of range. */
    qml_tf_step h0[] = {{.op = QML_TF_HASH, .n_buckets = 0}};
    qml_feature_spec s6[] = {{"tag", h0, 1}};
    assert_int_equal(qml_features_fit(s6, 1, fr, &fp, &err), QN_INVALID_ARGUMENT);
    assert_null(fp);
    qml_frame_free(fr);
}

static void test_impute_strategies_and_onehot_limits(void **state)
{
    qn_err err;
    qml_frame *f = qml_frame_new();
    qml_column *x = qml_frame_col(f, (size_t)qml_frame_add_column(f, "x", QML_NUMERIC, &err));
    qml_column *c = qml_frame_col(f, (size_t)qml_frame_add_column(f, "c", QML_CATEGORICAL, &err));
    /* x: 5 1 1 9 missing 2 -> median of {1,1,2,5,9} = 2, most frequent 1
     * c: counts b:3 a:2 d:1 c:1, one missing */
    double xs[] = {5, 1, 1, 9, NAN, 2, 3};
    const char *cs[] = {"b", "a", "b", "a", "d", "b", NULL};
    /* the 7th x (3) makes the median of {1,1,2,3,5,9} = 2.5 */
    for (int r = 0; r < 7; r++) {
        if (isnan(xs[r])) qml_col_push_missing(x); else qml_col_push_num(x, xs[r]);
        if (cs[r]) qml_col_push_str(c, cs[r], 1); else qml_col_push_missing(c);
        qml_frame_end_row(f);
    }
    struct { qml_impute_strategy s; double want; } cases[] = {
        {QML_IMPUTE_MEAN, 21.0 / 6}, {QML_IMPUTE_MEDIAN, 2.5}, {QML_IMPUTE_MOST_FREQUENT, 1},
        {QML_IMPUTE_CONSTANT, -7}};
    for (size_t i = 0; i < 4; i++) {
        qml_tf_step st[] = {{.op = QML_TF_IMPUTE, .impute = cases[i].s, .fill_num = -7}};
        qml_feature_spec sp[] = {{"x", st, 1}};
        qml_features *fp;
        assert_int_equal(qml_features_fit(sp, 1, f, &fp, &err), 0);
        float out[7];
        assert_int_equal(qml_features_transform(fp, f, out, &err), 0);
        assert_float_equal(out[4], cases[i].want, 1e-6);
        assert_float_equal(out[0], 5, 0);
        qml_features_free(fp);
    }
    /* most_frequent on c fills "b"; min_frequency 2 drops d and keeps a, b;
     * max_categories 1 keeps only b. */
    qml_tf_step st[] = {{.op = QML_TF_IMPUTE, .impute = QML_IMPUTE_MOST_FREQUENT},
                        {.op = QML_TF_ONEHOT, .min_frequency = 2}};
    qml_feature_spec sp[] = {{"c", st, 2}};
    qml_features *fp;
    assert_int_equal(qml_features_fit(sp, 1, f, &fp, &err), 0);
    assert_int_equal(qml_features_n_features(fp), 3);
    assert_string_equal(qml_features_name(fp, 0), "c=a");
    assert_string_equal(qml_features_name(fp, 1), "c=b");
    float out[7 * 3];
    assert_int_equal(qml_features_transform(fp, f, out, &err), 0);
    assert_true(out[4 * 3 + 2] == 1.0f);  /* d -> unknown */
    assert_true(out[6 * 3 + 1] == 1.0f);  /* missing -> b */
    qml_features_free(fp);
    st[1].min_frequency = 0;
    st[1].max_categories = 1;
    assert_int_equal(qml_features_fit(sp, 1, f, &fp, &err), 0);
    assert_int_equal(qml_features_n_features(fp), 2);
    assert_string_equal(qml_features_name(fp, 0), "c=b");
    qml_features_free(fp);
    /* min-max */
    qml_tf_step mm[] = {{.op = QML_TF_IMPUTE, .impute = QML_IMPUTE_MEDIAN}, {.op = QML_TF_MINMAX}};
    qml_feature_spec sm[] = {{"x", mm, 2}};
    assert_int_equal(qml_features_fit(sm, 1, f, &fp, &err), 0);
    float o2[7];
    assert_int_equal(qml_features_transform(fp, f, o2, &err), 0);
    assert_float_equal(o2[3], 1.0, 1e-7);
    assert_float_equal(o2[1], 0.0, 1e-7);
    assert_float_equal(o2[0], 0.5, 1e-7);
    qml_features_free(fp);
    qml_frame_free(f);
}

static void test_json_round_trip(void **state)
{
    qml_frame *fr;
    qml_features *fp = fit_small(&fr);
    qn_err err;
    char *j1 = qml_features_to_json(fp, &err);
    assert_non_null(j1);
    qml_features *fp2;
    assert_int_equal(qml_features_from_json(j1, strlen(j1), &fp2, &err), 0);
    char *j2 = qml_features_to_json(fp2, &err);
    assert_string_equal(j1, j2);
    float a[4 * 17], b[4 * 17];
    assert_int_equal(qml_features_transform(fp, fr, a, &err), 0);
    assert_int_equal(qml_features_transform(fp2, fr, b, &err), 0);
    assert_memory_equal(a, b, sizeof a);
    for (size_t i = 0; i < qml_features_n_features(fp); i++)
        assert_string_equal(qml_features_name(fp, i), qml_features_name(fp2, i));
    /* Write the seed corpus of the fuzz target when asked to. */
    const char *seed_out = getenv("QUERN_WRITE_SEED");
    if (seed_out) {
        FILE *f = fopen(seed_out, "w");
        if (f) { fputs(j1, f); fclose(f); }
    }
    free(j1);
    free(j2);
    qml_features_free(fp);
    qml_features_free(fp2);
    qml_frame_free(fr);
}

static void test_json_malformed(void **state)
{
    static const struct { const char *json, *needle; } cases[] = {
        {"{", "line 1"},
        {"[]", "format"},
        {"{\"format\":\"quern.features/2\",\"n_features\":1,\"columns\":[]}", "format"},
        {"{\"format\":\"quern.features/1\",\"n_features\":1,\"columns\":[]}", "columns"},
        {"{\"format\":\"quern.features/1\",\"n_features\":2,\"columns\":[{\"name\":\"a\","
         "\"type\":\"numeric\",\"steps\":[]}]}", "n_features"},
        {"{\"format\":\"quern.features/1\",\"n_features\":1,\"columns\":[{\"name\":\"a\","
         "\"type\":\"numeric\",\"steps\":[{\"op\":\"standardize\",\"mean\":0,\"std\":0}]}]}",
         "std"},
        {"{\"format\":\"quern.features/1\",\"n_features\":1,\"columns\":[{\"name\":\"a\","
         "\"type\":\"numeric\",\"steps\":[{\"op\":\"sqrt\"}]}]}", "op"},
        {"{\"format\":\"quern.features/1\",\"n_features\":3,\"columns\":[{\"name\":\"a\","
         "\"type\":\"categorical\",\"steps\":[{\"op\":\"onehot\",\"categories\":[\"x\",\"x\"],"
         "\"max_categories\":0,\"min_frequency\":0}]}]}", "twice"},
        {"{\"format\":\"quern.features/1\",\"n_features\":1,\"columns\":[{\"name\":\"a\","
         "\"type\":\"categorical\",\"steps\":[]}]}", "onehot or hash"},
        {"{\"format\":\"quern.features/1\",\"n_features\":1,\"columns\":[{\"name\":\"a\","
         "\"type\":\"numeric\",\"steps\":[{\"op\":\"hash\",\"buckets\":99999999,"
         "\"signed\":true}]}]}", "buckets"},
        {"{\"format\":\"quern.features/1\",\"n_features\":2,\"columns\":[{\"name\":\"a\","
         "\"type\":\"numeric\",\"steps\":[]},{\"name\":\"a\",\"type\":\"numeric\","
         "\"steps\":[]}]}", "twice"},
        {"{\"format\":\"quern.features/1\",\"n_features\":1,\"columns\":[{\"name\":\"a\","
         "\"type\":\"numeric\",\"steps\":[{\"op\":\"minmax\",\"min\":0,\"max\":1},"
         "{\"op\":\"impute\",\"strategy\":\"mean\",\"value\":0}]}]}", "impute"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        qml_features *fp = (qml_features *)1;
        qn_err err;
        int rc = qml_features_from_json(cases[i].json, strlen(cases[i].json), &fp, &err);
        if (rc != QN_INVALID_ARGUMENT || !strstr(err.msg, cases[i].needle))
            fail_msg("case %zu: rc %d, msg \"%s\", wanted \"%s\"", i, rc, err.msg,
                     cases[i].needle);
        assert_null(fp);
    }
}

typedef struct thread_arg {
    const qml_features *fp;
    const float *want;
    int ok;
} thread_arg;

static void *transform_many(void *p)
{
    thread_arg *a = p;
    qml_raw_value age = {QML_RAW_NUM, .num = 33}, city = {QML_RAW_STR, .str = "b"},
                  season = {QML_RAW_STR, .str = "3"}, tag = {QML_RAW_STR, .str = "y"};
    qml_raw_input in[] = {{"age", &age}, {"city", &city}, {"season", &season}, {"tag", &tag}};
    float X[17];
    qn_err err;
    a->ok = 1;
    for (int i = 0; i < 20000; i++)
        if (qml_features_transform_raw(a->fp, in, 4, 1, X, &err) < 0 ||
            memcmp(X, a->want, sizeof X) != 0)
            a->ok = 0;
    return NULL;
}

static void test_concurrent_transform(void **state)
{
    qml_frame *fr;
    qml_features *fp = fit_small(&fr);
    float want[17];
    thread_arg one = {fp, NULL, 0};
    {
        qml_raw_value age = {QML_RAW_NUM, .num = 33}, city = {QML_RAW_STR, .str = "b"},
                      season = {QML_RAW_STR, .str = "3"}, tag = {QML_RAW_STR, .str = "y"};
        qml_raw_input in[] = {{"age", &age}, {"city", &city}, {"season", &season}, {"tag", &tag}};
        qn_err err;
        assert_int_equal(qml_features_transform_raw(fp, in, 4, 1, want, &err), 0);
    }
    one.want = want;
    pthread_t t[4];
    thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = one;
        assert_int_equal(pthread_create(&t[i], NULL, transform_many, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_true(args[i].ok);
    }
    qml_features_free(fp);
    qml_frame_free(fr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fit_values_and_names),
        cmocka_unit_test(test_raw_matches_frame_and_unknowns),
        cmocka_unit_test(test_raw_errors_name_the_input),
        cmocka_unit_test(test_fit_errors),
        cmocka_unit_test(test_impute_strategies_and_onehot_limits),
        cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_json_malformed),
        cmocka_unit_test(test_concurrent_transform),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
