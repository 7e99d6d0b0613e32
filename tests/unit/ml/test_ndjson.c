/* test_ndjson.c - the NDJSON reader: schema inference, cell conversion, bad
 * lines with their numbers, memory and file input, chunking, and its scanner
 * of flat objects against its jansson path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
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

/* The scanner (flat objects read without jansson) against the jansson path
 * on the same lines: with fields_only every line meets the scanner first;
 * with an inference sample longer than the input every line is parsed by
 * jansson. Same rows, same cells, same bad rows; and the cells are right. */
static const char flat[] =
    "{\"a\":\"x\",\"b\":1.5,\"c\":\"2011-01-01 10:00:00\",\"d\":true}\n"        /* 1 */
    "{\"a\":12,\"b\":-0,\"d\":0}\n"                                              /* 2 */
    "{\"a\":\"q\\\"\\\\\\/\\n\\t\\u00e9\\ud83d\\ude00\",\"b\":\"3.25\"}\n"       /* 3 escapes */
    "  { \"b\" : 2E-3 , \"a\" : \"sp\" }  \n"                                  /* 4 spaces, order */
    "{\"a\":\"x\",\"a\":\"y\"}\n"                                                /* 5 duplicate: bad */
    "{\"a\":\"x\",\"z\":1}\n"                                                    /* 6 unknown key */
    "{\"b\":{\"n\":1}}\n"                                                        /* 7 nested: bad */
    "{\"b\":1e400}\n"                                                            /* 8 overflow: bad */
    "{\"b\":123456789012345678901}\n"                                            /* 9 past 64 bits: bad */
    "{\"d\":2}\n"                                                                /* 10 not 0/1: bad */
    "{\"a\":\"\\u0000\"}\n"                                                      /* 11 NUL: bad */
    "{\"a\":\"\xc3\x28\"}\n"                                                     /* 12 bad UTF-8: bad */
    "{\"a\":null,\"b\":9007199254740993,\"c\":\"\"}\n"                           /* 13 */
    "{}\n";                                                                      /* 14 */

static qml_frame *read_flat(int scanner, qml_read_report *rep)
{
    static const qml_field_spec fs[] = {{"a", QML_CATEGORICAL}, {"b", QML_NUMERIC}, {"c", QML_TIMESTAMP},
                                        {"d", QML_BOOLEAN}};
    qml_ndjson_opts o;
    qml_ndjson_opts_init(&o);
    o.fields = fs;
    o.n_fields = 4;
    o.fields_only = scanner;
    o.infer_rows = 100;
    qml_frame *f;
    qn_err err;
    assert_int_equal(qml_ndjson_read_all_mem(flat, strlen(flat), &o, &f, rep, &err), 0);
    return f;
}

static void test_scanner_matches_jansson(void **state)
{
    qml_read_report ra, rb;
    qml_frame *a = read_flat(1, &ra), *b = read_flat(0, &rb);
    assert_int_equal(qml_frame_nrows(a), qml_frame_nrows(b));
    for (size_t j = 0; j < 4; j++) {
        const qml_column *x = qml_frame_col(a, j), *y = qml_frame_col(b, j);
        for (size_t r = 0; r < qml_frame_nrows(a); r++) {
            assert_int_equal(x->missing[r], y->missing[r]);
            if (x->missing[r])
                continue;
            if (x->type == QML_CATEGORICAL)
                assert_string_equal(qml_col_str(x, r), qml_col_str(y, r));
            else
                assert_memory_equal(&x->num[r], &y->num[r], sizeof(double));
        }
    }
    assert_int_equal(ra.rows_read, rb.rows_read);
    assert_int_equal(ra.rows_bad, rb.rows_bad);
    assert_memory_equal(ra.by_reason, rb.by_reason, sizeof ra.by_reason);
    for (size_t i = 0; i < ra.n_first_bad; i++) {
        assert_int_equal(ra.first_bad[i].line, rb.first_bad[i].line);
        assert_string_equal(ra.first_bad[i].msg, rb.first_bad[i].msg);
    }

    /* The values themselves. */
    assert_int_equal(ra.rows_read, 14);
    assert_int_equal(ra.rows_bad, 7);
    const uint64_t bad_lines[] = {5, 7, 8, 9, 10, 11, 12};
    for (size_t i = 0; i < 7; i++)
        assert_int_equal(ra.first_bad[i].line, bad_lines[i]);
    assert_int_equal(ra.by_reason[QML_BAD_TYPE], 2); /* nested, d = 2 */
    assert_int_equal(ra.unknown_keys, 1);
    const qml_column *ca = qml_frame_col(a, 0), *cb = qml_frame_col(a, 1), *cc = qml_frame_col(a, 2),
                     *cd = qml_frame_col(a, 3);
    assert_int_equal(qml_frame_nrows(a), 7);
    assert_string_equal(qml_col_str(ca, 0), "x");
    assert_true(cb->num[0] == 1.5 && cc->num[0] == 1293876000 && cd->num[0] == 1);
    assert_string_equal(qml_col_str(ca, 1), "12");
    assert_false(signbit(cb->num[1])); /* the integer -0 is 0, as jansson reads it */
    assert_true(cd->num[1] == 0 && cc->missing[1]);
    assert_string_equal(qml_col_str(ca, 2), "q\"\\/\n\t\xc3\xa9\xf0\x9f\x98\x80");
    assert_true(cb->num[2] == 3.25);
    assert_string_equal(qml_col_str(ca, 3), "sp");
    assert_true(cb->num[3] == 2e-3);
    assert_string_equal(qml_col_str(ca, 4), "x"); /* line 6: z counted, not kept */
    assert_true(ca->missing[5] && cc->missing[5]);
    assert_true(cb->num[5] == 9007199254740992.0); /* rounded to even, as strtoll + (double) */
    assert_true(ca->missing[6] && cb->missing[6] && cc->missing[6] && cd->missing[6]);
    qml_frame_free(a);
    qml_frame_free(b);
}

/* Chunks of a few bytes each: lines cross them everywhere. */
typedef struct pieces {
    const char *s;
    size_t len, at, step;
    int fail_at_end;
} pieces;

static int next_piece(void *ud, const char **data, size_t *len)
{
    pieces *p = ud;
    if (p->at >= p->len)
        return p->fail_at_end ? QN_UNAVAILABLE : 0;
    *data = p->s + p->at;
    *len = p->len - p->at < p->step ? p->len - p->at : p->step;
    p->at += *len;
    return 1;
}

static void test_chunks_from_a_callback(void **state)
{
    qml_frame *a, *b;
    qml_read_report ra, rb;
    qn_err err;
    assert_int_equal(qml_ndjson_read_all_mem(events, strlen(events), NULL, &a, &ra, &err), 0);
    for (size_t step = 1; step < 40; step += 6) {
        pieces p = {.s = events, .len = strlen(events), .step = step};
        assert_int_equal(qml_ndjson_read_all_fn(next_piece, &p, NULL, &b, &rb, &err), 0);
        assert_int_equal(qml_frame_nrows(a), qml_frame_nrows(b));
        assert_int_equal(qml_frame_ncols(a), qml_frame_ncols(b));
        assert_int_equal(ra.rows_bad, rb.rows_bad);
        for (size_t j = 0; j < qml_frame_ncols(a); j++) {
            const qml_column *x = qml_frame_col(a, j), *y = qml_frame_col(b, j);
            assert_string_equal(x->name, y->name);
            for (size_t r = 0; r < qml_frame_nrows(a); r++) {
                assert_int_equal(x->missing[r], y->missing[r]);
                if (!x->missing[r] && x->type == QML_CATEGORICAL)
                    assert_string_equal(qml_col_str(x, r), qml_col_str(y, r));
                else if (!x->missing[r])
                    assert_true(x->num[r] == y->num[r]);
            }
        }
        qml_frame_free(b);
    }
    qml_frame_free(a);
    /* A source that fails fails the read with its code. */
    pieces p = {.s = events, .len = strlen(events), .step = 5, .fail_at_end = 1};
    assert_int_equal(qml_ndjson_read_all_fn(next_piece, &p, NULL, &b, &rb, &err), QN_UNAVAILABLE);
    assert_null(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_infer_and_convert),
        cmocka_unit_test(test_given_schema_and_bad_types),
        cmocka_unit_test(test_long_lines_and_chunks_from_file),
        cmocka_unit_test(test_scanner_matches_jansson),
        cmocka_unit_test(test_chunks_from_a_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
