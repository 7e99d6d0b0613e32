/* test_ndjson.c - the NDJSON reader: schema inference, cell conversion, bad
 * lines with their numbers, memory and file input, chunking. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ml/ndjson.h"

static const char events[] =
    "{\"user\":12346,\"item\":\"A1\",\"event\":\"view\",\"ts\":\"2011-01-01T10:00:00Z\",\"ok\":true,\"n\":1.5}\n"
    "{\"user\":\"u2\",\"item\":\"B2\",\"event\":\"cart\",\"ts\":\"2011-01-02 10:00:00\",\"ok\":false,\"n\":null}\r\n"
    "\n"
    "not json\n"
    "[1,2]\n"
    "{\"user\":\"u3\",\"item\":\"C3\",\"event\":\"purchase\",\"ts\":\"2011-01-03\",\"extra\":{\"b\":1,\"a\":[2]}}\n"
    "{\"user\":\"u4\",\"item\":\"D4\",\"event\":\"view\",\"ts\":\"2011-01-04\",\"n\":{\"x\":1}}\n"
    "{\"user\":\"u5\",\"item\":\"E5\",\"event\":\"view\",\"ts\":\"2011-01-05\",\"late\":1}";

static void test_infer_and_convert(void **state)
{
    qml_frame *f;
    qml_read_report rep;
    qn_err err;
    assert_int_equal(qml_ndjson_read_all_mem(events, strlen(events), NULL, &f, &rep, &err), 0);
    /* Columns in order of first appearance in the sample. */
    const char *names[] = {"user", "item", "event", "ts", "ok", "n", "extra", "late"};
    const qml_type types[] = {QML_CATEGORICAL, QML_CATEGORICAL, QML_CATEGORICAL, QML_TIMESTAMP,
                              QML_BOOLEAN, QML_CATEGORICAL, QML_CATEGORICAL, QML_NUMERIC};
    assert_int_equal(qml_frame_ncols(f), 8);
    for (size_t i = 0; i < 8; i++) {
        assert_string_equal(qml_frame_col(f, i)->name, names[i]);
        assert_int_equal(qml_frame_col(f, i)->type, types[i]);
    }
    /* "n" mixes a number and an object, so it is categorical and both fit. */
    assert_int_equal(qml_frame_nrows(f), 5);
    assert_int_equal(rep.rows_read, 7);
    assert_int_equal(rep.rows_bad, 2);
    assert_int_equal(rep.by_reason[QML_BAD_JSON], 2);
    assert_int_equal(rep.first_bad[0].line, 4);
    assert_int_equal(rep.first_bad[1].line, 5);
    assert_non_null(strstr(rep.first_bad[1].msg, "not a JSON object"));

    const qml_column *user = qml_frame_col(f, 0), *ts = qml_frame_col(f, 3), *ok = qml_frame_col(f, 4),
                     *n = qml_frame_col(f, 5), *extra = qml_frame_col(f, 6), *late = qml_frame_col(f, 7);
    assert_string_equal(qml_col_str(user, 0), "12346");  /* a number id written shortest */
    assert_true(ts->num[0] == 1293876000);
    assert_true(ts->num[2] == 1294012800);
    assert_true(ok->num[0] == 1 && ok->num[1] == 0);
    assert_true(ok->missing[2]);
    assert_string_equal(qml_col_str(n, 0), "1.5");
    assert_true(n->missing[1]);                          /* null */
    assert_string_equal(qml_col_str(n, 3), "{\"x\":1}");
    assert_string_equal(qml_col_str(extra, 2), "{\"a\":[2],\"b\":1}"); /* sorted keys */
    assert_int_equal(extra->n_missing, 4);
    assert_true(late->num[4] == 1);
    assert_int_equal(rep.unknown_keys, 0);
    qml_frame_free(f);
}

static void test_given_schema_and_bad_types(void **state)
{
    qml_ndjson_opts o;
    qml_ndjson_opts_init(&o);
    qml_field_spec fs[] = {{"user", QML_CATEGORICAL}, {"n", QML_NUMERIC}, {"ts", QML_TIMESTAMP}};
    o.fields = fs;
    o.n_fields = 3;
    o.fields_only = 1;
    qml_frame *f;
    qml_read_report rep;
    qn_err err;
    assert_int_equal(qml_ndjson_read_all_mem(events, strlen(events), &o, &f, &rep, &err), 0);
    assert_int_equal(qml_frame_ncols(f), 3);
    /* Line 7 has "n": {"x":1}, which does not fit a numeric column. */
    assert_int_equal(qml_frame_nrows(f), 4);
    assert_int_equal(rep.rows_bad, 3);
    assert_int_equal(rep.by_reason[QML_BAD_TYPE], 1);
    assert_int_equal(rep.first_bad[2].line, 7);
    assert_non_null(strstr(rep.first_bad[2].msg, "column n"));
    assert_true(rep.unknown_keys > 0);
    assert_true(qml_frame_col(f, 1)->num[0] == 1.5);
    qml_frame_free(f);

    /* A numeric string in a numeric column is a number; a word is a bad row. */
    const char *s = "{\"n\":\"2.5\"}\n{\"n\":\"abc\"}\n{\"n\":3}\n";
    qml_field_spec one[] = {{"n", QML_NUMERIC}};
    o.fields = one;
    o.n_fields = 1;
    assert_int_equal(qml_ndjson_read_all_mem(s, strlen(s), &o, &f, &rep, &err), 0);
    assert_int_equal(qml_frame_nrows(f), 2);
    assert_true(qml_frame_col(f, 0)->num[0] == 2.5);
    assert_int_equal(rep.first_bad[0].line, 2);
    assert_non_null(strstr(rep.first_bad[0].msg, "column n: \"abc\" is not a number"));
    qml_frame_free(f);
}

static void test_long_lines_and_chunks_from_file(void **state)
{
    const char *dir = getenv("QUERN_TEST_WORK");
    assert_non_null(dir);
    char path[1024];
    snprintf(path, sizeof path, "%s/ndjson_test.ndjson", dir);
    FILE *out = fopen(path, "w");
    assert_non_null(out);
    /* 3000 rows; line 1500 is over 2 MB (past the window and the limit). */
    for (int i = 1; i <= 3000; i++) {
        if (i == 1500) {
            fputs("{\"k\":\"", out);
            for (int j = 0; j < (2 << 20); j++)
                fputc('x', out);
            fputs("\"}\n", out);
            continue;
        }
        fprintf(out, "{\"k\":\"v%d\",\"i\":%d}\n", i % 10, i);
    }
    fclose(out);
    qn_err err;
    qml_ndjson_reader *r = qml_ndjson_open(path, NULL, &err);
    assert_non_null(r);
    qml_frame *f;
    size_t rows = 0;
    double sum = 0;
    int rc;
    while ((rc = qml_ndjson_next(r, 700, &f, &err)) > 0) {
        assert_true(qml_frame_nrows(f) <= 700);
        int ci = qml_frame_find(f, "i");
        for (size_t k = 0; k < qml_frame_nrows(f); k++)
            sum += qml_frame_col(f, (size_t)ci)->num[k];
        rows += qml_frame_nrows(f);
        qml_frame_free(f);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(rows, 2999);
    assert_true(sum == 3000.0 * 3001 / 2 - 1500);
    const qml_read_report *rep = qml_ndjson_report(r);
    assert_int_equal(rep->rows_bad, 1);
    assert_int_equal(rep->first_bad[0].line, 1500);
    assert_int_equal(rep->first_bad[0].reason, QML_BAD_TOO_LONG);
    qml_ndjson_close(r);
    remove(path);

    assert_null(qml_ndjson_open("/nonexistent.ndjson", NULL, &err));
    assert_int_equal(err.code, QN_NOT_FOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_infer_and_convert),
        cmocka_unit_test(test_given_schema_and_bad_types),
        cmocka_unit_test(test_long_lines_and_chunks_from_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
