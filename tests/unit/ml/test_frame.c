/* test_frame.c - the columnar frame and its dictionary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "ml/frame.h"

static void test_dict_codes_dense_and_stable(void **state)
{
    qml_dict *d = qml_dict_new();
    char buf[32];
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(buf, sizeof buf, "item-%d", i);
        assert_int_equal(qml_dict_intern(d, buf, (size_t)n), i);
    }
    assert_int_equal(qml_dict_intern(d, "item-7", 6), 7);
    assert_int_equal(qml_dict_find(d, "item-999", 8), 999);
    assert_int_equal(qml_dict_find(d, "nope", 4), -1);
    assert_string_equal(qml_dict_str(d, 42), "item-42");
    assert_null(qml_dict_str(d, 1000));
    assert_int_equal(qml_dict_size(d), 1000);
    qml_dict_free(d);
}

/* A probe compares stored lengths: a prefix, an extension and a string
 * with a NUL inside are other strings, and each finds itself again. */
static void test_dict_lengths(void **state)
{
    qml_dict *d = qml_dict_new();
    assert_int_equal(qml_dict_intern(d, "abc", 3), 0);
    assert_int_equal(qml_dict_intern(d, "ab", 2), 1);
    assert_int_equal(qml_dict_intern(d, "abcd", 4), 2);
    assert_int_equal(qml_dict_intern(d, "a\0c", 3), 3);
    assert_int_equal(qml_dict_intern(d, "a\0c", 3), 3);
    assert_int_equal(qml_dict_find(d, "ab", 2), 1);
    assert_int_equal(qml_dict_find(d, "abc", 3), 0);
    assert_int_equal(qml_dict_find(d, "abcde", 5), -1);
    char buf[32];
    for (int i = 0; i < 100; i++) { /* grows the table: codes stay */
        int n = snprintf(buf, sizeof buf, "k%d", i);
        assert_int_equal(qml_dict_intern(d, buf, (size_t)n), 4 + i);
    }
    assert_int_equal(qml_dict_find(d, "abcd", 4), 2);
    assert_int_equal(qml_dict_find(d, "a\0c", 3), 3);
    qml_dict_free(d);
}

/* Columns filled directly after qml_frame_reserve, closed at once. */
static void test_frame_reserve_end_rows(void **state)
{
    qn_err err;
    qml_frame *f = qml_frame_new();
    assert_int_equal(qml_frame_add_column(f, "x", QML_NUMERIC, &err), 0);
    assert_int_equal(qml_frame_add_column(f, "c", QML_CATEGORICAL, &err), 1);
    assert_int_equal(qml_col_push_num(qml_frame_col(f, 0), 1.5), 0);
    assert_int_equal(qml_col_push_str(qml_frame_col(f, 1), "a", 1), 0);
    assert_int_equal(qml_frame_end_row(f), 0);
    assert_int_equal(qml_frame_reserve(f, 1000), 0);
    qml_column *x = qml_frame_col(f, 0), *c = qml_frame_col(f, 1);
    assert_true(x->cap >= 1001 && c->cap >= 1001);
    for (size_t r = 1; r <= 1000; r++) {
        x->num[r] = (double)r;
        x->missing[r] = 0;
        c->cat[r] = r % 2 ? 0 : -1;
        c->missing[r] = c->cat[r] < 0;
    }
    x->len = 1001;
    assert_int_equal(qml_frame_end_rows(f, 1000), QN_INTERNAL); /* c is short */
    assert_int_equal(qml_frame_nrows(f), 1);
    c->len = 1001;
    c->n_missing = 500;
    assert_int_equal(qml_frame_end_rows(f, 1000), 0);
    assert_int_equal(qml_frame_nrows(f), 1001);
    assert_string_equal(qml_col_str(c, 999), "a");
    assert_null(qml_col_str(c, 1000));
    assert_true(x->num[1000] == 1000.0);
    qml_frame_free(f);
}

static void test_frame_rows_missing_take(void **state)
{
    qn_err err;
    qml_frame *f = qml_frame_new();
    int a = qml_frame_add_column(f, "age", QML_NUMERIC, &err);
    int j = qml_frame_add_column(f, "job", QML_CATEGORICAL, &err);
    assert_int_equal(a, 0);
    assert_int_equal(j, 1);
    assert_int_equal(qml_frame_add_column(f, "age", QML_NUMERIC, &err), QN_ALREADY_EXISTS);
    assert_non_null(strstr(err.msg, "age"));

    const char *jobs[] = {"clerk", "cook", "clerk"};
    for (int r = 0; r < 3; r++) {
        if (r == 1)
            assert_int_equal(qml_col_push_missing(qml_frame_col(f, a)), 0);
        else
            assert_int_equal(qml_col_push_num(qml_frame_col(f, a), 30 + r), 0);
        assert_int_equal(qml_col_push_str(qml_frame_col(f, j), jobs[r], strlen(jobs[r])), 0);
        assert_int_equal(qml_frame_end_row(f), 0);
    }
    /* A half row is refused by end_row and rolled back by abort_row. */
    qml_col_push_num(qml_frame_col(f, a), 99);
    assert_int_equal(qml_frame_end_row(f), QN_INTERNAL);
    qml_frame_abort_row(f);
    assert_int_equal(qml_frame_col(f, a)->len, 3);
    assert_int_equal(qml_frame_add_column(f, "late", QML_NUMERIC, &err), QN_FAILED_PRECONDITION);

    qml_column *age = qml_frame_col(f, a);
    assert_int_equal(age->n_missing, 1);
    assert_true(qml_col_is_missing(age, 1));
    assert_int_equal(qml_dict_size(qml_frame_col(f, j)->dict), 2);

    size_t rows[] = {2, 0, 2};
    qml_frame *t = qml_frame_take(f, rows, 3, &err);
    assert_non_null(t);
    assert_int_equal(qml_frame_nrows(t), 3);
    assert_true(qml_frame_col(t, 0)->num[0] == 32.0);
    assert_string_equal(qml_col_str(qml_frame_col(t, 1), 1), "clerk");
    size_t bad[] = {3};
    assert_null(qml_frame_take(f, bad, 1, &err));
    assert_int_equal(err.code, QN_OUT_OF_RANGE);

    const char *names[] = {"job"};
    qml_frame *s = qml_frame_select(f, names, 1, &err);
    assert_non_null(s);
    assert_int_equal(qml_frame_ncols(s), 1);
    assert_string_equal(qml_col_str(qml_frame_col(s, 0), 1), "cook");
    const char *missing[] = {"salary"};
    assert_null(qml_frame_select(f, missing, 1, &err));
    assert_non_null(strstr(err.msg, "salary"));

    qml_frame_free(s);
    qml_frame_free(t);
    qml_frame_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dict_codes_dense_and_stable),
        cmocka_unit_test(test_dict_lengths),
        cmocka_unit_test(test_frame_reserve_end_rows),
        cmocka_unit_test(test_frame_rows_missing_take),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
