/* test_clean.c - cleaning steps (parse errors, each op on a small frame) and
 * Online Retail cleaned to purchases and aggregated into a user x item matrix,
 * checked against tests/unit/ml/online_retail_ref.py (the csv module). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ml/clean.h"
#include "ml/csv.h"

static const char small_csv[] =
    "user,event,qty,ts,code,flag\n"
    "u1,view,1,2011-01-01,C100,true\n"
    "u1,cart,,2011-01-02,A200,false\n"
    "u2,purchase,5,2011-01-03,A300,\n"
    "u2,purchase,5,2011-01-03,A300,\n"
    ",view,100,2011-01-05,B400,true\n"
    "u3,share,-3,2011-02-01,A500,false\n";

static qml_frame *small(void)
{
    qml_frame *f;
    qn_err err;
    if (qml_csv_read_all_mem(small_csv, strlen(small_csv), NULL, &f, NULL, &err) < 0)
        fail_msg("%s", err.msg);
    return f;
}

/* Applies steps (JSON) to the small frame; returns the result. */
static qml_frame *apply(const char *js, qml_clean_report *rep)
{
    qml_clean_steps *s;
    qn_err err;
    if (qml_clean_parse(js, strlen(js), &s, &err) < 0)
        fail_msg("parse %s: %s", js, err.msg);
    qml_frame *in = small(), *out;
    if (qml_clean_apply(in, s, &out, rep, &err) < 0)
        fail_msg("apply %s: %s", js, err.msg);
    assert_int_equal(qml_frame_nrows(in), 6); /* the input is untouched */
    qml_frame_free(in);
    qml_clean_free(s);
    return out;
}

static void test_parse_errors_name_step_and_field(void **state)
{
    static const struct {
        const char *js, *want;
    } cases[] = {
        {"{}", "must be a JSON array"},
        {"[1]", "steps[0]: must be a JSON object"},
        {"[{\"op\":\"frobnicate\"}]", "steps[0]: unknown op \"frobnicate\""},
        {"[{\"op\":\"drop_missing\"},{\"op\":\"filter\",\"column\":\"a\",\"cmp\":\"~\",\"value\":1}]",
         "steps[1] (filter): field \"cmp\""},
        {"[{\"op\":\"filter\",\"column\":\"a\",\"cmp\":\"in\",\"value\":1}]", "must be an array for in"},
        {"[{\"op\":\"filter\",\"column\":\"a\",\"cmp\":\">\"}]", "field \"value\" is required"},
        {"[{\"op\":\"impute\",\"column\":\"a\",\"strategy\":\"constant\"}]", "steps[0] (impute): field \"value\""},
        {"[{\"op\":\"impute\",\"column\":\"a\",\"strategy\":\"avg\"}]", "field \"strategy\""},
        {"[{\"op\":\"clip\",\"column\":\"a\"}]", "needs \"min\", \"max\" or both"},
        {"[{\"op\":\"clip\",\"column\":\"a\",\"min\":5,\"max\":1}]", "\"min\" is greater than \"max\""},
        {"[{\"op\":\"cast\",\"column\":\"a\",\"type\":\"float\"}]", "steps[0] (cast): field \"type\""},
        {"[{\"op\":\"map_weights\",\"column\":\"e\",\"map\":{\"view\":\"one\"}}]", "\"map\".\"view\" must be a number"},
        {"[{\"op\":\"time_window\",\"column\":\"t\",\"from\":\"yesterday\"}]", "field \"from\" must be a timestamp"},
        {"[{\"op\":\"dedupe\",\"keys\":[1]}]", "field \"keys\"[0] must be a string"},
        {"[{\"op\":\"dedupe\",\"kyes\":[\"a\"]}]", "steps[0] (dedupe): unknown field \"kyes\""},
        {"[{\"op\":\"filter\",\"column\":\"a\"", "not JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        qml_clean_steps *s = (qml_clean_steps *)1;
        qn_err err;
        int rc = qml_clean_parse(cases[i].js, strlen(cases[i].js), &s, &err);
        if (rc != QN_INVALID_ARGUMENT || !strstr(err.msg, cases[i].want))
            fail_msg("%s: got %d \"%s\", want \"%s\"", cases[i].js, rc, err.msg, cases[i].want);
        assert_null(s);
    }
    /* Errors at apply time name the step and the column. */
    qml_clean_steps *s;
    qn_err err;
    const char *js = "[{\"op\":\"drop_missing\"},{\"op\":\"filter\",\"column\":\"nope\",\"cmp\":\">\",\"value\":1}]";
    assert_int_equal(qml_clean_parse(js, strlen(js), &s, &err), 0);
    qml_frame *in = small(), *out;
    assert_int_equal(qml_clean_apply(in, s, &out, NULL, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "steps[1] (filter): no column named nope"));
    qml_clean_free(s);
    js = "[{\"op\":\"filter\",\"column\":\"qty\",\"cmp\":\"starts_with\",\"value\":\"1\"}]";
    assert_int_equal(qml_clean_parse(js, strlen(js), &s, &err), 0);
    assert_int_equal(qml_clean_apply(in, s, &out, NULL, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "column qty is numeric"));
    qml_clean_free(s);
    qml_frame_free(in);
}

static void test_row_steps(void **state)
{
    qml_clean_report rep;
    qml_frame *f = apply("[{\"op\":\"drop_missing\",\"columns\":[\"user\"]},"
                         " {\"op\":\"filter\",\"column\":\"code\",\"cmp\":\"not_starts_with\",\"value\":\"C\"},"
                         " {\"op\":\"filter\",\"column\":\"qty\",\"cmp\":\">\",\"value\":0},"
                         " {\"op\":\"dedupe\",\"keys\":[\"user\",\"code\"]}]", &rep);
    /* u1/C100 (starts with C), u1/cart (qty missing), row 5 (no user), u3 (qty -3),
     * and the repeated u2/A300 go: one row left. */
    assert_int_equal(qml_frame_nrows(f), 1);
    assert_int_equal(rep.rows_in, 6);
    assert_int_equal(rep.rows_out, 1);
    assert_int_equal(rep.nsteps, 4);
    size_t want[][2] = {{6, 5}, {5, 4}, {4, 2}, {2, 1}};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(rep.steps[i].rows_in, want[i][0]);
        assert_int_equal(rep.steps[i].rows_out, want[i][1]);
    }
    assert_string_equal(rep.steps[2].op, "filter");
    assert_non_null(strstr(rep.steps[2].note, "1 had it missing"));
    assert_string_equal(qml_col_str(qml_frame_col(f, 0), 0), "u2");
    qml_frame_free(f);

    f = apply("[{\"op\":\"filter\",\"column\":\"event\",\"cmp\":\"in\",\"value\":[\"view\",\"cart\"]},"
              " {\"op\":\"filter\",\"column\":\"qty\",\"cmp\":\"<=\",\"value\":50,\"keep_missing\":true}]", &rep);
    assert_int_equal(qml_frame_nrows(f), 2); /* u1 view (1), u1 cart (missing qty kept) */
    qml_frame_free(f);

    f = apply("[{\"op\":\"time_window\",\"column\":\"ts\",\"from\":\"2011-01-02\",\"to\":\"2011-01-05\"}]", &rep);
    assert_int_equal(qml_frame_nrows(f), 3); /* the 2nd, 3rd, 4th; the 5th is excluded */
    qml_frame_free(f);

    f = apply("[{\"op\":\"filter\",\"column\":\"flag\",\"cmp\":\"==\",\"value\":true}]", &rep);
    assert_int_equal(qml_frame_nrows(f), 2);
    qml_frame_free(f);

    f = apply("[{\"op\":\"dedupe\"}]", &rep);
    assert_int_equal(qml_frame_nrows(f), 5); /* only the exact repeat goes */
    qml_frame_free(f);

    /* Row steps in a row are evaluated together: a step's counts are of the
     * rows the earlier ones kept (the two u2 rows, whose flag is missing, went
     * at the first step), and the rows are the same as one step at a time. */
    f = apply("[{\"op\":\"filter\",\"column\":\"event\",\"cmp\":\"in\",\"value\":[\"view\",\"cart\"]},"
              " {\"op\":\"filter\",\"column\":\"flag\",\"cmp\":\"==\",\"value\":true},"
              " {\"op\":\"derive\",\"output\":\"w\",\"value\":1},"
              " {\"op\":\"time_window\",\"column\":\"ts\",\"from\":\"2011-01-02\"}]", &rep);
    size_t want2[][2] = {{6, 3}, {3, 2}, {2, 2}, {2, 1}};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(rep.steps[i].rows_in, want2[i][0]);
        assert_int_equal(rep.steps[i].rows_out, want2[i][1]);
    }
    assert_non_null(strstr(rep.steps[1].note, "(0 had it missing)"));
    assert_int_equal(qml_frame_nrows(f), 1); /* the user-less view of 2011-01-05 */
    assert_true(qml_frame_col(f, 0)->missing[0]);
    assert_true(qml_frame_col(f, 6)->num[0] == 1);
    qml_frame_free(f);

    /* A derive after row steps reads the kept rows itself (no take first):
     * the copied column has the kept rows' cells, missing ones included. */
    f = apply("[{\"op\":\"filter\",\"column\":\"event\",\"cmp\":\"in\",\"value\":[\"view\",\"cart\"]},"
              " {\"op\":\"derive\",\"output\":\"who\",\"column\":\"user\"}]", &rep);
    assert_int_equal(qml_frame_nrows(f), 3);
    assert_int_equal(rep.steps[1].rows_in, 3);
    assert_int_equal(rep.steps[1].rows_out, 3);
    const qml_column *user = qml_frame_col(f, 0), *who = qml_frame_col(f, (size_t)qml_frame_find(f, "who"));
    assert_int_equal(who->n_missing, user->n_missing);
    for (size_t r = 0; r < 3; r++) {
        assert_int_equal(who->missing[r], user->missing[r]);
        if (!user->missing[r])
            assert_string_equal(qml_col_str(who, r), qml_col_str(user, r));
    }
    qml_frame_free(f);

    f = apply("[]", &rep); /* no steps: a copy */
    assert_int_equal(qml_frame_nrows(f), 6);
    assert_int_equal(rep.rows_out, 6);
    qml_frame_free(f);
}

static void test_cell_steps(void **state)
{
    qml_clean_report rep;
    qml_frame *f = apply("[{\"op\":\"impute\",\"column\":\"qty\",\"strategy\":\"mean\"}]", &rep);
    const qml_column *q = qml_frame_col(f, 2);
    assert_int_equal(q->n_missing, 0);
    assert_true(fabs(q->num[1] - (1 + 5 + 5 + 100 - 3) / 5.0) < 1e-12);
    assert_int_equal(rep.steps[0].cells_changed, 1);
    qml_frame_free(f);

    f = apply("[{\"op\":\"impute\",\"column\":\"qty\",\"strategy\":\"median\"}]", &rep);
    assert_true(qml_frame_col(f, 2)->num[1] == 5);
    qml_frame_free(f);

    f = apply("[{\"op\":\"impute\",\"column\":\"user\",\"strategy\":\"mode\"}]", &rep);
    assert_string_equal(qml_col_str(qml_frame_col(f, 0), 4), "u1"); /* u1 and u2 tie: first met */
    qml_frame_free(f);

    f = apply("[{\"op\":\"impute\",\"column\":\"user\",\"strategy\":\"constant\",\"value\":\"anon\"},"
              " {\"op\":\"impute\",\"column\":\"flag\",\"strategy\":\"constant\",\"value\":false}]", &rep);
    assert_string_equal(qml_col_str(qml_frame_col(f, 0), 4), "anon");
    assert_int_equal(qml_frame_col(f, 5)->n_missing, 0);
    qml_frame_free(f);

    f = apply("[{\"op\":\"clip\",\"column\":\"qty\",\"min\":0,\"max\":10}]", &rep);
    q = qml_frame_col(f, 2);
    assert_true(q->num[4] == 10 && q->num[5] == 0 && q->num[0] == 1);
    assert_true(q->missing[1]);
    assert_int_equal(rep.steps[0].cells_changed, 2);
    qml_frame_free(f);

    f = apply("[{\"op\":\"cast\",\"column\":\"qty\",\"type\":\"categorical\"}]", &rep);
    assert_int_equal(qml_frame_col(f, 2)->type, QML_CATEGORICAL);
    assert_string_equal(qml_col_str(qml_frame_col(f, 2), 5), "-3");
    assert_string_equal(qml_frame_col(f, 2)->name, "qty");
    qml_frame_free(f);

    f = apply("[{\"op\":\"cast\",\"column\":\"code\",\"type\":\"numeric\"}]", &rep);
    assert_int_equal(qml_frame_nrows(f), 0); /* no code is a number: all dropped, counted */
    assert_non_null(strstr(rep.steps[0].note, "6 rows"));
    qml_frame_free(f);

    f = apply("[{\"op\":\"cast\",\"column\":\"code\",\"type\":\"numeric\",\"on_error\":\"missing\"}]", &rep);
    assert_int_equal(qml_frame_col(f, 4)->n_missing, 6);
    assert_int_equal(rep.steps[0].cells_changed, 6);
    qml_frame_free(f);

    f = apply("[{\"op\":\"map_weights\",\"column\":\"event\",\"map\":{\"view\":1,\"cart\":3,\"purchase\":5}}]", &rep);
    /* "share" has no weight and no default: dropped and counted. */
    assert_int_equal(qml_frame_nrows(f), 5);
    int w = qml_frame_find(f, "weight");
    assert_int_equal(w, 6);
    assert_true(qml_frame_col(f, 6)->num[0] == 1 && qml_frame_col(f, 6)->num[1] == 3 &&
                qml_frame_col(f, 6)->num[2] == 5);
    assert_non_null(strstr(rep.steps[0].note, "1 rows with a event not in the map"));
    qml_frame_free(f);

    f = apply("[{\"op\":\"map_weights\",\"column\":\"event\",\"map\":{\"view\":1},\"default\":0.5,\"output\":\"event\"}]", &rep);
    assert_int_equal(qml_frame_nrows(f), 6);
    assert_int_equal(qml_frame_col(f, 1)->type, QML_NUMERIC);
    assert_true(qml_frame_col(f, 1)->num[1] == 0.5);
    qml_frame_free(f);
}

/* derive: a constant weight column, and a typed copy of a column (categorical
 * codes and missing cells kept), added or replacing in place. */
static void test_derive(void **state)
{
    qml_clean_report rep;
    qml_frame *f = apply("[{\"op\":\"derive\",\"output\":\"weight\",\"value\":1}]", &rep);
    int w = qml_frame_find(f, "weight");
    assert_int_equal(w, 6);
    const qml_column *c = qml_frame_col(f, 6);
    assert_int_equal(c->type, QML_NUMERIC);
    assert_int_equal(c->n_missing, 0);
    for (size_t r = 0; r < 6; r++)
        assert_true(c->num[r] == 1);
    assert_int_equal(rep.steps[0].rows_out, 6);
    assert_non_null(strstr(rep.steps[0].note, "weight set to 1"));
    qml_frame_free(f);

    f = apply("[{\"op\":\"derive\",\"output\":\"who\",\"column\":\"user\"},"
              " {\"op\":\"derive\",\"output\":\"qty\",\"value\":2.5}]", &rep);
    assert_int_equal(qml_frame_ncols(f), 7);
    c = qml_frame_col(f, 6);
    assert_string_equal(c->name, "who");
    assert_int_equal(c->type, QML_CATEGORICAL);
    assert_string_equal(qml_col_str(c, 0), "u1");
    assert_string_equal(qml_col_str(c, 2), "u2");
    assert_true(c->missing[4]);
    assert_int_equal(qml_frame_col(f, 2)->num[1], 2.5); /* replaced in place, missing filled */
    assert_int_equal(qml_frame_col(f, 2)->n_missing, 0);
    qml_frame_free(f);

    static const char *const bad[][2] = {
        {"[{\"op\":\"derive\",\"value\":1}]", "steps[0] (derive): field \"output\" is required"},
        {"[{\"op\":\"derive\",\"output\":\"w\"}]", "exactly one of"},
        {"[{\"op\":\"derive\",\"output\":\"w\",\"value\":1,\"column\":\"qty\"}]", "exactly one of"},
        {"[{\"op\":\"derive\",\"output\":\"w\",\"value\":\"1\"}]", "\"value\" must be a number"},
        {"[{\"op\":\"derive\",\"output\":\"\",\"value\":1}]", "\"output\" must be a non-empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qml_clean_steps *s;
        qn_err err;
        assert_int_equal(qml_clean_parse(bad[i][0], strlen(bad[i][0]), &s, &err), QN_INVALID_ARGUMENT);
        if (!strstr(err.msg, bad[i][1]))
            fail_msg("%s: got \"%s\", want \"%s\"", bad[i][0], err.msg, bad[i][1]);
    }
    qml_clean_steps *s;
    qn_err err;
    const char *js = "[{\"op\":\"derive\",\"output\":\"w\",\"column\":\"nope\"}]";
    assert_int_equal(qml_clean_parse(js, strlen(js), &s, &err), 0);
    qml_frame *in = small(), *out;
    assert_int_equal(qml_clean_apply(in, s, &out, NULL, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "no column named nope"));
    qml_frame_free(in);
    qml_clean_free(s);
}

/* Applies steps to the small frame and expects the apply to fail with want. */
static void apply_fails(const char *js, const char *want)
{
    qml_clean_steps *s;
    qn_err err;
    assert_int_equal(qml_clean_parse(js, strlen(js), &s, &err), 0);
    qml_frame *in = small(), *out;
    assert_int_equal(qml_clean_apply(in, s, &out, NULL, &err), QN_INVALID_ARGUMENT);
    if (!strstr(err.msg, want))
        fail_msg("%s: got \"%s\", want \"%s\"", js, err.msg, want);
    qml_frame_free(in);
    qml_clean_free(s);
}

static void test_rename_and_select(void **state)
{
    qml_clean_report rep;
    /* Names as people write them, and back: each column keeps its place, type and cells;
     * a swap of two names is allowed. */
    qml_frame *f = apply("[{\"op\":\"rename\",\"columns\":{\"user\":\"Customer ID\",\"qty\":\"Quantit\u00e9 (u)\"}},"
                         " {\"op\":\"rename\",\"columns\":{\"Customer ID\":\"CustomerID\"}},"
                         " {\"op\":\"rename\",\"columns\":{\"event\":\"code\",\"code\":\"event\"}}]", &rep);
    assert_int_equal(qml_frame_ncols(f), 6);
    assert_string_equal(qml_frame_col(f, 0)->name, "CustomerID");
    assert_string_equal(qml_col_str(qml_frame_col(f, 0), 2), "u2");
    assert_string_equal(qml_frame_col(f, 2)->name, "Quantit\xc3\xa9 (u)");
    assert_int_equal(qml_frame_col(f, 2)->type, QML_NUMERIC);
    assert_true(qml_frame_col(f, 2)->num[2] == 5);
    assert_string_equal(qml_frame_col(f, 1)->name, "code");
    assert_string_equal(qml_col_str(qml_frame_col(f, 1), 0), "view");
    assert_string_equal(qml_frame_col(f, 4)->name, "event");
    assert_string_equal(qml_col_str(qml_frame_col(f, 4), 0), "C100");
    assert_int_equal(rep.steps[0].rows_out, 6);
    assert_non_null(strstr(rep.steps[0].note, "2 columns renamed"));
    qml_frame_free(f);

    f = apply("[{\"op\":\"select\",\"columns\":[\"qty\",\"user\"]}]", &rep);
    assert_int_equal(qml_frame_ncols(f), 2);
    assert_int_equal(qml_frame_nrows(f), 6);
    assert_string_equal(qml_frame_col(f, 0)->name, "qty");
    assert_string_equal(qml_frame_col(f, 1)->name, "user");
    assert_true(qml_frame_col(f, 0)->num[4] == 100);
    assert_true(qml_frame_col(f, 1)->missing[4]);
    assert_non_null(strstr(rep.steps[0].note, "2 of 6 columns kept"));
    qml_frame_free(f);

    static const char *const bad[][2] = {
        {"[{\"op\":\"rename\"}]", "field \"columns\" is required"},
        {"[{\"op\":\"rename\",\"columns\":[\"a\"]}]", "old name -> new name"},
        {"[{\"op\":\"rename\",\"columns\":{\"a\":1}}]", "must be a string"},
        {"[{\"op\":\"rename\",\"columns\":{\"a\":\"\"}}]", "new column name is empty"},
        {"[{\"op\":\"rename\",\"columns\":{\"a\":\"x\\ny\"}}]", "control character"},
        {"[{\"op\":\"rename\",\"columns\":{\"a\":\"x\",\"b\":\"x\"}}]", "would both be named x"},
        {"[{\"op\":\"select\",\"columns\":[]}]", "non-empty array"},
        {"[{\"op\":\"select\",\"columns\":[\"a\",\"a\"]}]", "selected twice"},
        {"[{\"op\":\"select\",\"columns\":[\"a\"],\"keys\":[]}]", "unknown field \"keys\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qml_clean_steps *s;
        qn_err err;
        assert_int_equal(qml_clean_parse(bad[i][0], strlen(bad[i][0]), &s, &err), QN_INVALID_ARGUMENT);
        if (!strstr(err.msg, bad[i][1]))
            fail_msg("%s: got \"%s\", want \"%s\"", bad[i][0], err.msg, bad[i][1]);
    }
    apply_fails("[{\"op\":\"rename\",\"columns\":{\"nope\":\"x\"}}]", "no column named nope");
    apply_fails("[{\"op\":\"rename\",\"columns\":{\"user\":\"qty\"}}]", "cannot rename user to qty");
    apply_fails("[{\"op\":\"select\",\"columns\":[\"user\",\"nope\"]}]", "no column named nope");
}

static void test_interactions_small(void **state)
{
    qml_clean_report rep;
    qml_frame *f = apply("[{\"op\":\"map_weights\",\"column\":\"event\",\"map\":{\"view\":1,\"cart\":3,\"purchase\":5}}]", &rep);
    qml_interactions ia;
    qn_err err;
    assert_int_equal(qml_interactions_build(f, "user", "code", "weight", &ia, &err), 0);
    /* u1: C100 1, A200 3; u2: A300 5+5; the row without a user skipped. */
    assert_int_equal(ia.rows_used, 4);
    assert_int_equal(ia.rows_skipped, 1);
    assert_int_equal(ia.matrix->nrows, 2);
    assert_int_equal(ia.matrix->ncols, 3);
    assert_int_equal(ia.matrix->nnz, 3);
    assert_string_equal(qml_dict_str(ia.users, 1), "u2");
    assert_string_equal(qml_dict_str(ia.items, 2), "A300");
    assert_true(ia.matrix->data[ia.matrix->indptr[1]] == 10.0f);
    qml_interactions_free(&ia);
    assert_int_equal(qml_interactions_build(f, "user", "code", "event", &ia, &err), QN_INVALID_ARGUMENT);
    assert_int_equal(qml_interactions_build(f, "nobody", "code", NULL, &ia, &err), QN_INVALID_ARGUMENT);
    qml_frame_free(f);
}

/* ---- Online Retail -------------------------------------------------------- */

static const char retail_steps[] =
    "[{\"op\":\"drop_missing\",\"columns\":[\"CustomerID\"]},"
    " {\"op\":\"filter\",\"column\":\"InvoiceNo\",\"cmp\":\"not_starts_with\",\"value\":\"C\"},"
    " {\"op\":\"filter\",\"column\":\"Quantity\",\"cmp\":\">\",\"value\":0},"
    " {\"op\":\"filter\",\"column\":\"UnitPrice\",\"cmp\":\">\",\"value\":0},"
    " {\"op\":\"filter\",\"column\":\"StockCode\",\"cmp\":\"not_in\",\"value\":"
    "   [\"POST\",\"DOT\",\"M\",\"m\",\"C2\",\"D\",\"S\",\"BANK CHARGES\",\"AMAZONFEE\",\"CRUK\",\"PADS\",\"B\"]},"
    " {\"op\":\"filter\",\"column\":\"StockCode\",\"cmp\":\"not_starts_with\",\"value\":\"gift_0001_\"}]";

static float entry(const qml_interactions *ia, const char *user, const char *item)
{
    int32_t u = qml_dict_find(ia->users, user, strlen(user)), i = qml_dict_find(ia->items, item, strlen(item));
    assert_true(u >= 0 && i >= 0);
    for (int64_t k = ia->matrix->indptr[u]; k < ia->matrix->indptr[u + 1]; k++)
        if (ia->matrix->indices[k] == i)
            return ia->matrix->data[k];
    return 0;
}

static void test_online_retail_purchases(void **state)
{
    const char *ds = getenv("QUERN_DATASETS"), *src = getenv("QUERN_SOURCE_DIR");
    assert_non_null(ds);
    assert_non_null(src);
    char path[1024], cmd[3072];
    snprintf(path, sizeof path, "%s/online_retail.csv", ds);

    /* CustomerID read as numeric on purpose: ids must still come out as "12346". */
    qml_csv_opts o;
    qml_csv_opts_init(&o);
    qml_field_spec fs[] = {{"InvoiceNo", QML_CATEGORICAL}, {"StockCode", QML_CATEGORICAL},
                           {"CustomerID", QML_NUMERIC}};
    o.fields = fs;
    o.n_fields = 3;
    qml_frame *raw, *clean;
    qn_err err;
    assert_int_equal(qml_csv_read_all(path, &o, &raw, NULL, &err), 0);
    qml_clean_steps *s;
    assert_int_equal(qml_clean_parse(retail_steps, strlen(retail_steps), &s, &err), 0);
    qml_clean_report rep;
    assert_int_equal(qml_clean_apply(raw, s, &clean, &rep, &err), 0);

    /* Figures from online_retail_ref.py (python csv module), fixed here and
     * recomputed below when the reference interpreter is present. */
    size_t want_steps[] = {541909, 406829, 397924, 397924, 397884, 396337, 396337};
    long users = 4334, items = 3659, nnz = 266221;
    double sum_count = 396337, sum_qty = 5157354;

    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/unit/ml/online_retail_ref.py %s", src, path);
    FILE *p = access("/usr/bin/python3", X_OK) == 0 ? popen(cmd, "r") : NULL;
    if (p) {
        char buf[4096];
        size_t n = fread(buf, 1, sizeof buf - 1, p);
        buf[n] = '\0';
        assert_int_equal(pclose(p), 0);
        json_t *ref = json_loads(buf, 0, NULL);
        assert_non_null(ref);
        for (size_t i = 0; i < 7; i++)
            assert_int_equal(json_integer_value(json_array_get(json_object_get(ref, "rows_after_step"), i)),
                             want_steps[i]);
        assert_int_equal(json_integer_value(json_object_get(ref, "users")), users);
        assert_int_equal(json_integer_value(json_object_get(ref, "items")), items);
        assert_int_equal(json_integer_value(json_object_get(ref, "nnz")), nnz);
        assert_true(json_real_value(json_object_get(ref, "sum_quantity")) == sum_qty);
        json_decref(ref);
    } else {
        print_message("no /usr/bin/python3: using the recorded reference figures\n");
    }

    assert_int_equal(rep.rows_in, want_steps[0]);
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(rep.steps[i].rows_in, want_steps[i]);
        assert_int_equal(rep.steps[i].rows_out, want_steps[i + 1]);
    }
    assert_int_equal(qml_frame_nrows(clean), want_steps[6]);

    qml_interactions ia;
    assert_int_equal(qml_interactions_build(clean, "CustomerID", "StockCode", NULL, &ia, &err), 0);
    assert_int_equal(ia.matrix->nrows, users);
    assert_int_equal(ia.matrix->ncols, items);
    assert_int_equal(ia.matrix->nnz, nnz);
    assert_int_equal(ia.rows_used, want_steps[6]);
    double total = 0;
    for (int64_t k = 0; k < ia.matrix->nnz; k++)
        total += ia.matrix->data[k];
    assert_true(total == sum_count);
    assert_true(entry(&ia, "17850", "85123A") == 17.0f);
    assert_true(entry(&ia, "12347", "22375") == 6.0f);
    assert_int_equal(qml_dict_find(ia.users, "12346.000000", 12), -1);
    qml_interactions_free(&ia);

    assert_int_equal(qml_interactions_build(clean, "CustomerID", "StockCode", "Quantity", &ia, &err), 0);
    total = 0;
    for (int64_t k = 0; k < ia.matrix->nnz; k++)
        total += ia.matrix->data[k];
    assert_true(total == sum_qty); /* every per-cell sum is an integer below 2^24: exact in float */
    assert_true(entry(&ia, "14646", "23084") == 4801.0f);
    qml_interactions_free(&ia);

    qml_frame_free(clean);
    qml_frame_free(raw);
    qml_clean_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_errors_name_step_and_field),
        cmocka_unit_test(test_row_steps),
        cmocka_unit_test(test_cell_steps),
        cmocka_unit_test(test_derive),
        cmocka_unit_test(test_rename_and_select),
        cmocka_unit_test(test_interactions_small),
        cmocka_unit_test(test_online_retail_purchases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
