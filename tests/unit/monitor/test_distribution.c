/* test_distribution.c - the reference vs current distribution kept with each
 * drift report (src/monitor/distribution.c).
 *
 * Checks the binning a person reads off the console's chart: numeric edges
 * are the reference profile's (merged, never moved, when there are too many),
 * reference counts are the profile's, current counts add up with the missing
 * ones to the window's cells, values outside the reference range land in the
 * end bins (and are counted as such), NaN and missing cells are counted
 * apart; categorical top-k ranks by the larger share on either side, so a
 * category new in the window shows, and the rest adds up in "other". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ml/frame.h"
#include "ml/profile.h"
#include "monitor/distribution.h"

/* A one-column frame of type t. */
static qml_frame *frame1(const char *name, qml_type t)
{
    qn_err err;
    qml_frame *f = qml_frame_new();
    assert_non_null(f);
    assert_int_equal(qml_frame_add_column(f, name, t, &err), 0);
    return f;
}

static void push_num(qml_frame *f, double v)
{
    assert_int_equal(qml_col_push_num(qml_frame_col(f, 0), v), 0);
    assert_int_equal(qml_frame_end_row(f), 0);
}

static void push_str(qml_frame *f, const char *s)
{
    assert_int_equal(qml_col_push_str(qml_frame_col(f, 0), s, strlen(s)), 0);
    assert_int_equal(qml_frame_end_row(f), 0);
}

static void push_missing(qml_frame *f)
{
    assert_int_equal(qml_col_push_missing(qml_frame_col(f, 0)), 0);
    assert_int_equal(qml_frame_end_row(f), 0);
}

static qml_profile *profile_of(const qml_frame *f, size_t nbins)
{
    qml_profile_opts o;
    qml_profile_opts_default(&o);
    o.nbins = nbins;
    qml_profile *p = NULL;
    qn_err err;
    assert_int_equal(qml_profile_build(f, &o, &p, &err), 0);
    return p;
}

static int64_t sum(const json_t *a)
{
    int64_t s = 0;
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) s += json_integer_value(v);
    return s;
}

static int64_t at(const json_t *d, const char *key, size_t i)
{
    return json_integer_value(json_array_get(json_object_get(d, key), i));
}

static int64_t num(const json_t *d, const char *key)
{
    const json_t *v = json_object_get(d, key);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static void numeric_bins_from_the_reference(void **state)
{
    (void)state;
    /* reference: 0..99 once each, and 3 missing cells; 10 equal-width bins */
    qml_frame *rf = frame1("x", QML_NUMERIC);
    for (int i = 0; i < 100; i++)
        push_num(rf, i);
    for (int i = 0; i < 3; i++)
        push_missing(rf);
    qml_profile *p = profile_of(rf, 10);
    const qml_profile_column *pc = &p->cols[0];
    assert_int_equal(pc->nbins, 10);

    /* current: 20 values in [0, 99], 4 below the reference's min, 6 above
     * its max, 2 missing cells and 1 NaN */
    qml_frame *cf = frame1("x", QML_NUMERIC);
    for (int i = 0; i < 20; i++)
        push_num(cf, 50 + i * 0.45);  /* 50 .. 58.55: bin 5, [49.5, 59.4) */
    for (int i = 0; i < 4; i++)
        push_num(cf, -1000 - i);
    for (int i = 0; i < 6; i++)
        push_num(cf, 1e9);
    push_missing(cf);
    push_missing(cf);
    push_num(cf, NAN);
    json_t *d = mon_distribution(pc, qml_frame_col(cf, 0));
    assert_non_null(d);
    assert_string_equal(json_string_value(json_object_get(d, "type")), "numeric");
    assert_string_equal(json_string_value(json_object_get(d, "binning")), "reference_equal_width");

    const json_t *edges = json_object_get(d, "edges");
    assert_int_equal(json_array_size(edges), 11);
    for (size_t b = 0; b <= 10; b++)
        assert_true(json_real_value(json_array_get(edges, b)) == pc->edges[b]);
    for (size_t b = 0; b < 10; b++)
        assert_int_equal(at(d, "reference", b), (int64_t)pc->hist[b]);
    assert_int_equal(sum(json_object_get(d, "reference")), 100);
    assert_int_equal(num(d, "reference_missing"), 3);
    assert_int_equal(num(d, "reference_total"), 103);

    /* counts + missing = the window's cells */
    assert_int_equal(num(d, "current_total"), 33);
    assert_int_equal(num(d, "current_missing"), 3);
    assert_int_equal(sum(json_object_get(d, "current")) + num(d, "current_missing"), 33);
    /* outside the edges: in the end bins, and counted as outside */
    assert_int_equal(num(d, "current_below"), 4);
    assert_int_equal(num(d, "current_above"), 6);
    assert_int_equal(at(d, "current", 0), 4);
    assert_int_equal(at(d, "current", 9), 6);
    assert_int_equal(at(d, "current", 5), 20);
    json_decref(d);

    /* a categorical window for a numeric column is refused, not binned */
    qml_frame *wrong = frame1("x", QML_CATEGORICAL);
    push_str(wrong, "a");
    assert_null(mon_distribution(pc, qml_frame_col(wrong, 0)));
    qml_frame_free(wrong);
    qml_frame_free(cf);
    qml_frame_free(rf);
    qml_profile_free(p);
}

static void many_reference_bins_are_merged_not_moved(void **state)
{
    (void)state;
    qml_frame *rf = frame1("x", QML_NUMERIC);
    for (int i = 0; i < 1000; i++)
        push_num(rf, i * 0.1);
    qml_profile *p = profile_of(rf, 100);
    const qml_profile_column *pc = &p->cols[0];
    qml_frame *cf = frame1("x", QML_NUMERIC);
    for (int i = 0; i < 57; i++)
        push_num(cf, i * 1.7);
    json_t *d = mon_distribution(pc, qml_frame_col(cf, 0));
    assert_non_null(d);
    const json_t *edges = json_object_get(d, "edges");
    size_t nb = json_array_size(edges) - 1;
    assert_true(nb <= MON_DIST_MAX_BINS);
    assert_int_equal(nb, 34);  /* 100 bins, 3 at a time */
    for (size_t b = 0; b < nb; b++)
        assert_true(json_real_value(json_array_get(edges, b)) == pc->edges[b * 3]);
    assert_true(json_real_value(json_array_get(edges, nb)) == pc->edges[100]);
    assert_int_equal(json_array_size(json_object_get(d, "reference")), nb);
    assert_int_equal(sum(json_object_get(d, "reference")), 1000);
    assert_int_equal(at(d, "reference", 0), (int64_t)(pc->hist[0] + pc->hist[1] + pc->hist[2]));
    assert_int_equal(at(d, "reference", nb - 1), (int64_t)pc->hist[99]);
    assert_int_equal(sum(json_object_get(d, "current")), 57);
    assert_int_equal(num(d, "current_missing"), 0);
    json_decref(d);
    qml_frame_free(cf);
    qml_frame_free(rf);
    qml_profile_free(p);
}

static void categorical_top_k_and_other(void **state)
{
    (void)state;
    /* reference: c0 x 200, c1 x 190, ..., c14 x 60 (15 categories), 5 missing */
    qml_frame *rf = frame1("job", QML_CATEGORICAL);
    int ref_n = 0;
    for (int k = 0; k < 15; k++)
        for (int i = 0; i < 200 - 10 * k; i++, ref_n++) {
            char s[16];
            snprintf(s, sizeof s, "c%d", k);
            push_str(rf, s);
        }
    for (int i = 0; i < 5; i++)
        push_missing(rf);
    qml_profile *p = profile_of(rf, 0);
    const qml_profile_column *pc = &p->cols[0];
    assert_true(pc->categorical);

    /* current: "new" (never seen) is 40 % of the window, c0 10 %, c14 10 %,
     * c7 40 %; 7 missing cells */
    qml_frame *cf = frame1("job", QML_CATEGORICAL);
    for (int i = 0; i < 40; i++)
        push_str(cf, "new");
    for (int i = 0; i < 10; i++)
        push_str(cf, "c0");
    for (int i = 0; i < 10; i++)
        push_str(cf, "c14");
    for (int i = 0; i < 40; i++)
        push_str(cf, "c7");
    for (int i = 0; i < 7; i++)
        push_missing(cf);
    json_t *d = mon_distribution(pc, qml_frame_col(cf, 0));
    assert_non_null(d);
    assert_string_equal(json_string_value(json_object_get(d, "type")), "categorical");
    const json_t *cats = json_object_get(d, "categories");
    assert_int_equal(json_array_size(cats), MON_DIST_TOP_K);
    /* ranked by the larger share on either side: c7 and new (0.4 now; a
     * tie keeps the reference's order first), c0 (200/1950 before), c14
     * (0.1 now), then c1... by reference */
    assert_string_equal(json_string_value(json_array_get(cats, 0)), "c7");
    assert_string_equal(json_string_value(json_array_get(cats, 1)), "new");
    assert_string_equal(json_string_value(json_array_get(cats, 2)), "c0");
    assert_string_equal(json_string_value(json_array_get(cats, 3)), "c14");
    assert_string_equal(json_string_value(json_array_get(cats, 4)), "c1");
    assert_int_equal(at(d, "reference", 1), 0);
    assert_int_equal(at(d, "current", 1), 40);
    assert_int_equal(at(d, "reference", 0), 130);
    assert_int_equal(at(d, "current", 2), 10);
    assert_int_equal(at(d, "reference", 2), 200);
    /* the sums: shown + other + missing = total, on both sides */
    assert_int_equal(num(d, "reference_total"), ref_n + 5);
    assert_int_equal(num(d, "reference_missing"), 5);
    assert_int_equal(sum(json_object_get(d, "reference")) + num(d, "reference_other") + 5, ref_n + 5);
    assert_true(num(d, "reference_other") > 0);
    assert_int_equal(num(d, "current_total"), 107);
    assert_int_equal(num(d, "current_missing"), 7);
    assert_int_equal(num(d, "current_other"), 0);  /* every current category is in the top k */
    assert_int_equal(sum(json_object_get(d, "current")) + num(d, "current_other") + 7, 107);
    json_decref(d);
    qml_frame_free(cf);
    qml_frame_free(rf);
    qml_profile_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(numeric_bins_from_the_reference),
        cmocka_unit_test(many_reference_bins_are_merged_not_moved),
        cmocka_unit_test(categorical_top_k_and_other),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
