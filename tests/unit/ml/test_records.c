/* test_records.c - request bodies into canonical rows: the three formats,
 * canonical text, typing by schema (cases as data), row numbers, header
 * faults, limits, and a round-trip check of the canonical writer against
 * jansson's own parse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ml/records.h"

static qml_rec_schema *schema_of(const char *text)
{
    json_t *doc = json_loads(text, 0, NULL);
    assert_non_null(doc);
    qml_rec_schema *s;
    qn_err err;
    int rc = qml_rec_schema_parse(doc, &s, &err);
    json_decref(doc);
    if (rc < 0)
        fail_msg("schema: %s", err.msg);
    return s;
}

static char *row_text(const qml_rec_batch *b, size_t i)
{
    static char buf[4096];
    size_t n = b->off[i + 1] - b->off[i];
    assert_true(n < sizeof buf);
    memcpy(buf, b->text + b->off[i], n);
    buf[n] = '\0';
    return buf;
}

static void parse_ok(const char *body, qml_rec_format fmt, const qml_rec_schema *s, qml_rec_batch *b)
{
    qn_err err;
    qml_rec_batch_init(b);
    if (qml_rec_parse(body, strlen(body), fmt, s, NULL, b, &err) < 0)
        fail_msg("parse: %s", err.msg);
}

static void test_json_forms_and_canonical_text(void **state)
{
    (void)state;
    qml_rec_batch b;
    parse_ok("{\"b\":1,\"a\":\"x\\n\\u0001\\u00e9\\\"\",\"c\":{\"z\":[1.50,null,true],\"y\":-0.0}}", QML_REC_JSON,
             NULL, &b);
    assert_int_equal(b.nrows, 1);
    assert_string_equal(row_text(&b, 0),
                        "{\"a\":\"x\\n\\u0001\xc3\xa9\\\"\",\"b\":1,\"c\":{\"y\":0,\"z\":[1.5,null,true]}}");
    qml_rec_batch_free(&b);

    parse_ok(" [ {\"n\":1e2} , {\"n\":0.1}\n,{\"n\":123456789012} ] ", QML_REC_JSON, NULL, &b);
    assert_int_equal(b.nrows, 3);
    assert_string_equal(row_text(&b, 0), "{\"n\":100}");
    assert_string_equal(row_text(&b, 1), "{\"n\":0.1}");
    assert_string_equal(row_text(&b, 2), "{\"n\":123456789012}");
    assert_int_equal(b.row[2], 3);
    qml_rec_batch_free(&b);

    parse_ok("{ \"events\" : [{\"a\":1},{\"a\":2}] }", QML_REC_JSON, NULL, &b);
    assert_int_equal(b.nrows, 2);
    qml_rec_batch_free(&b);
    /* An object with an "events" key that is not an array is one event. */
    parse_ok("{\"events\":3}", QML_REC_JSON, NULL, &b);
    assert_int_equal(b.nrows, 1);
    assert_string_equal(row_text(&b, 0), "{\"events\":3}");
    qml_rec_batch_free(&b);
}

static void test_bodies_refused_whole(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        qml_rec_format fmt;
        const char *needle;
    } cases[] = {
        {"", QML_REC_JSON, "empty"},
        {"[]", QML_REC_JSON, "no rows"},
        {"{\"a\":1", QML_REC_JSON, "not valid JSON"},
        {"[{\"a\":1},]", QML_REC_JSON, "row 2"},
        {"[{\"a\":1} {\"a\":2}]", QML_REC_JSON, "after row 1"},
        {"[{\"a\":1}] x", QML_REC_JSON, "after the end"},
        {"{\"events\":[{\"a\":1}], \"x\":1}", QML_REC_JSON, "no other fields"},
        {"\n\n", QML_REC_NDJSON, "no rows"},
        {"a,a\n1,2\n", QML_REC_CSV, "twice"},
        {"a\x01b\n1\n", QML_REC_CSV, "field 1"},
        {"a,b\n1,\xff\n", QML_REC_CSV, "invalid UTF-8 at line 2, byte offset 6"},
        {"a\n", QML_REC_CSV, "no rows"},
        {"", QML_REC_CSV, "empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        qml_rec_batch b;
        qn_err err;
        qml_rec_batch_init(&b);
        int rc = qml_rec_parse(cases[i].body, strlen(cases[i].body), cases[i].fmt, NULL, NULL, &b, &err);
        if (rc != QN_INVALID_ARGUMENT || !strstr(err.msg, cases[i].needle))
            fail_msg("case %zu (%s): rc %d, %s", i, cases[i].body, rc, rc ? err.msg : "");
        qml_rec_batch_free(&b);
    }
}

/* Typing: one column of each type, the value as JSON text (NDJSON) or as a
 * CSV cell; what is stored, or NULL and a piece of the reason. */
static void test_typing_cases(void **state)
{
    (void)state;
    qml_rec_schema *s = schema_of("{\"columns\":[{\"name\":\"v\",\"type\":\"numeric\"}]}");
    static const struct {
        qml_type type;
        const char *json;   /* NDJSON value */
        const char *want;   /* stored value, or NULL: bad */
        const char *why;
    } cases[] = {
        {QML_NUMERIC, "2", "2", NULL},
        {QML_NUMERIC, "2.50", "2.5", NULL},
        {QML_NUMERIC, "\"-1e3\"", "-1000", NULL},
        {QML_NUMERIC, "\".5\"", "0.5", NULL},
        {QML_NUMERIC, "\"\"", "null", NULL},
        {QML_NUMERIC, "null", "null", NULL},
        {QML_NUMERIC, "\"0x10\"", NULL, "is not a number"},
        {QML_NUMERIC, "\"nan\"", NULL, "is not a number"},
        {QML_NUMERIC, "true", NULL, "expected a number, got a boolean"},
        {QML_NUMERIC, "[1]", NULL, "got an array"},
        {QML_BOOLEAN, "true", "true", NULL},
        {QML_BOOLEAN, "\"No\"", "false", NULL},
        {QML_BOOLEAN, "\"1\"", "true", NULL},
        {QML_BOOLEAN, "0", "false", NULL},
        {QML_BOOLEAN, "2", NULL, "expected a boolean"},
        {QML_BOOLEAN, "\"maybe\"", NULL, "is not a boolean"},
        {QML_TIMESTAMP, "\"2011-12-09T12:50:00+01:00\"", "\"2011-12-09T12:50:00+01:00\"", NULL},
        {QML_TIMESTAMP, "\"2011-12-09\"", "\"2011-12-09\"", NULL},
        {QML_TIMESTAMP, "1700000000", "1700000000", NULL},
        {QML_TIMESTAMP, "\"2011-13-09\"", NULL, "is not a timestamp"},
        {QML_TIMESTAMP, "{}", NULL, "got an object"},
        {QML_CATEGORICAL, "\"x\"", "\"x\"", NULL},
        {QML_CATEGORICAL, "12346", "\"12346\"", NULL},
        {QML_CATEGORICAL, "2.5", "\"2.5\"", NULL},
        {QML_CATEGORICAL, "false", "\"false\"", NULL},
        {QML_CATEGORICAL, "\"\"", "\"\"", NULL},
        {QML_CATEGORICAL, "[\"a\"]", NULL, "expected a string"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s->cols[0].type = cases[i].type;
        char body[256], want[256];
        snprintf(body, sizeof body, "{\"v\":%s}\n", cases[i].json);
        qml_rec_batch b;
        parse_ok(body, QML_REC_NDJSON, s, &b);
        if (cases[i].want) {
            snprintf(want, sizeof want, "{\"v\":%s}", cases[i].want);
            if (b.nrows != 1 || strcmp(row_text(&b, 0), want) != 0)
                fail_msg("case %zu %s: got %s", i, body, b.nrows ? row_text(&b, 0) : b.errors[0].msg);
        } else {
            if (b.nbad != 1 || !strstr(b.errors[0].msg, cases[i].why) || !strstr(b.errors[0].msg, "column v"))
                fail_msg("case %zu %s: %s", i, body, b.nbad ? b.errors[0].msg : row_text(&b, 0));
            assert_int_equal(b.len, 0); /* rolled back */
        }
        qml_rec_batch_free(&b);
    }
    qml_rec_schema_free(s);
}

static void test_schema_required_and_additional(void **state)
{
    (void)state;
    qml_rec_schema *s = schema_of("{\"columns\":[{\"name\":\"b\",\"type\":\"numeric\",\"required\":true},"
                                  "{\"name\":\"d\",\"type\":\"categorical\",\"required\":true}],"
                                  "\"additional_columns\":false}");
    qml_rec_batch b;
    parse_ok("{\"b\":1,\"d\":\"x\"}\n{\"d\":\"x\"}\n{\"b\":1}\n{\"b\":1,\"d\":\"\"}\n"
             "{\"b\":null,\"d\":\"x\"}\n{\"a\":1,\"b\":1,\"d\":\"x\"}\n{\"b\":1,\"d\":\"x\",\"e\":1}\n",
             QML_REC_NDJSON, s, &b);
    assert_int_equal(b.nrows, 1);
    assert_int_equal(b.nbad, 6);
    const char *why[] = {"column b is required", "column d is required", "column d is required",
                         "column b is required", "column a is not in the schema", "column e is not in the schema"};
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(b.errors[i].row, i + 2);
        assert_int_equal(b.errors[i].line, i + 2);
        if (!strstr(b.errors[i].msg, why[i]))
            fail_msg("row %zu: %s", i + 2, b.errors[i].msg);
    }
    qml_rec_batch_free(&b);
    s->additional = 1;
    parse_ok("{\"a\":[1],\"b\":\"7\",\"d\":\"x\",\"e\":1}", QML_REC_JSON, s, &b);
    assert_string_equal(row_text(&b, 0), "{\"a\":[1],\"b\":7,\"d\":\"x\",\"e\":1}");
    qml_rec_batch_free(&b);
    /* Keys must be column names: text without control characters. */
    parse_ok("{\"b\":1,\"d\":\"x\",\"bad\\u0007key\":1}", QML_REC_JSON, s, &b);
    assert_int_equal(b.nbad, 1);
    qml_rec_batch_free(&b);
    qml_rec_schema_free(s);
}

static void test_csv(void **state)
{
    (void)state;
    qml_rec_schema *s = schema_of("{\"columns\":[{\"name\":\"n\",\"type\":\"numeric\"},"
                                  "{\"name\":\"who\",\"type\":\"categorical\",\"required\":true}]}");
    qml_rec_batch b;
    parse_ok("who,n,note\r\n\"Smith, \"\"J\"\"\",1.50,\"two\nlines\"\n\nx,abc,\n,3,\ny,4\n\"open,5,z\n", QML_REC_CSV,
             s, &b);
    assert_int_equal(b.nrows, 1);
    assert_string_equal(row_text(&b, 0), "{\"n\":1.5,\"note\":\"two\\nlines\",\"who\":\"Smith, \\\"J\\\"\"}");
    assert_int_equal(b.nbad, 4);
    /* Records after the header; lines as in an editor (the quoted newline
     * and the blank line count as lines, not records). */
    const uint64_t rows[] = {2, 3, 4, 5}, lines[] = {5, 6, 7, 8};
    const char *why[] = {"column n", "column who is required", "expected 3 fields", "quote"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(b.errors[i].row, rows[i]);
        assert_int_equal(b.errors[i].line, lines[i]);
        if (!strstr(b.errors[i].msg, why[i]))
            fail_msg("row %zu: %s", i, b.errors[i].msg);
    }
    qml_rec_batch_free(&b);
    /* Header faults against the schema refuse the body. */
    qn_err err;
    qml_rec_batch_init(&b);
    assert_int_equal(qml_rec_parse("n\n1\n", 4, QML_REC_CSV, s, NULL, &b, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "required column who"));
    s->additional = 0;
    assert_int_equal(qml_rec_parse("who,x\n1,2\n", 10, QML_REC_CSV, s, NULL, &b, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "column x is not in the schema"));
    qml_rec_batch_free(&b);
    /* Without a schema every cell is a string. */
    parse_ok("a,b\n1,\n", QML_REC_CSV, NULL, &b);
    assert_string_equal(row_text(&b, 0), "{\"a\":\"1\",\"b\":\"\"}");
    qml_rec_batch_free(&b);
    qml_rec_schema_free(s);
}

static void test_limits(void **state)
{
    (void)state;
    qml_rec_opts o;
    qml_rec_opts_init(&o);
    o.max_rows = 3;
    o.max_row_bytes = 40;
    o.max_cols = 2;
    o.max_errors = 2;
    qml_rec_batch b;
    qn_err err;
    qml_rec_batch_init(&b);
    const char *four = "{\"a\":1}\n{\"a\":1}\n{\"a\":1}\n{\"a\":1}\n";
    assert_int_equal(qml_rec_parse(four, strlen(four), QML_REC_NDJSON, NULL, &o, &b, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "more than 3 rows"));
    qml_rec_batch_free(&b);
    qml_rec_batch_init(&b);
    assert_int_equal(qml_rec_parse("[{\"a\":1},{\"a\":1},{\"a\":1},{\"a\":1}]", 37, QML_REC_JSON, NULL, &o, &b, &err),
                     QN_INVALID_ARGUMENT);
    qml_rec_batch_free(&b);
    const char *body = "{\"a\":\"0123456789012345678901234567890123456789\"}\n{\"a\":1,\"b\":2,\"c\":3}\n"
                       "{\"a\":\"\\u0041\\u0041\"}\n";
    qml_rec_batch_init(&b);
    assert_int_equal(qml_rec_parse(body, strlen(body), QML_REC_NDJSON, NULL, &o, &b, &err), 0);
    assert_int_equal(b.nrows, 1);
    assert_string_equal(row_text(&b, 0), "{\"a\":\"AA\"}");
    assert_int_equal(b.nbad, 2);
    assert_non_null(strstr(b.errors[0].msg, "bytes"));
    assert_non_null(strstr(b.errors[1].msg, "3 columns"));
    qml_rec_batch_free(&b);
    /* Errors past max_errors are counted, not kept. */
    qml_rec_batch_init(&b);
    assert_int_equal(qml_rec_parse("x\ny\nz\n", 6, QML_REC_NDJSON, NULL, &o, &b, &err), 0);
    assert_int_equal(b.nbad, 3);
    assert_int_equal(b.nerrors, 2);
    qml_rec_batch_free(&b);
}

/* Appends levels nested arrays around 1 to text (the caller's buffer). */
static void nest(char *out, int levels)
{
    char *o = out;
    for (int i = 0; i < levels; i++)
        *o++ = '[';
    *o++ = '1';
    for (int i = 0; i < levels; i++)
        *o++ = ']';
    *o = '\0';
}

/* A row nesting deeper than QML_REC_MAX_DEPTH is a row error naming the
 * column and the limit, in every JSON form; it is never stored with the deep
 * part replaced (it once became null). At the limit the row is kept whole. */
static void test_depth_limit(void **state)
{
    (void)state;
    static char body[1024], v1[300], v2[300];
    nest(v1, QML_REC_MAX_DEPTH - 1); /* with the row: exactly the limit */
    nest(v2, QML_REC_MAX_DEPTH);     /* one level more */
    snprintf(body, sizeof body, "{\"a\":%s}\n\n{\"b\":{\"c\":%s}}\n{\"a\":%s}\n", v1, v1, v2);
    qml_rec_batch b;
    parse_ok(body, QML_REC_NDJSON, NULL, &b);
    assert_int_equal(b.nrows, 1);
    char want[400];
    snprintf(want, sizeof want, "{\"a\":%s}", v1);
    assert_string_equal(row_text(&b, 0), want);
    assert_int_equal(b.nbad, 2);
    assert_int_equal(b.errors[0].row, 2);
    assert_int_equal(b.errors[0].line, 3);
    assert_non_null(strstr(b.errors[0].msg, "column b"));
    assert_non_null(strstr(b.errors[0].msg, "deeper than 64 levels"));
    assert_int_equal(b.errors[1].row, 3);
    assert_int_equal(b.errors[1].line, 4);
    assert_non_null(strstr(b.errors[1].msg, "column a"));
    assert_null(memmem(b.text, b.len, "null", 4)); /* b.text is not NUL-terminated */
    qml_rec_batch_free(&b);

    /* Objects nest the same way, in the array form: n objects one inside
     * the other, the outermost being the row. 64 are kept whole, 65 are not. */
    for (int n = QML_REC_MAX_DEPTH; n <= QML_REC_MAX_DEPTH + 1; n++) {
        char obj[700];
        char *o = obj;
        for (int i = 0; i < n; i++)
            o += sprintf(o, "{\"k\":");
        *o++ = '1';
        for (int i = 0; i < n; i++)
            *o++ = '}';
        *o = '\0';
        snprintf(body, sizeof body, "[{\"x\":1},%s]", obj);
        parse_ok(body, QML_REC_JSON, NULL, &b);
        if (n == QML_REC_MAX_DEPTH) {
            assert_int_equal(b.nrows, 2);
            assert_int_equal(b.nbad, 0);
            assert_string_equal(row_text(&b, 1), obj);
        } else {
            assert_int_equal(b.nrows, 1);
            assert_int_equal(b.nbad, 1);
            assert_int_equal(b.errors[0].row, 2);
            assert_non_null(strstr(b.errors[0].msg, "column k"));
            assert_non_null(strstr(b.errors[0].msg, "64"));
        }
        qml_rec_batch_free(&b);
    }
}

/* A dataset's CSV dialect in its schema, and the request's options over it. */
static void test_csv_dialect(void **state)
{
    (void)state;
    qml_rec_schema *s = schema_of("{\"columns\":[{\"name\":\"Customer ID\",\"type\":\"categorical\"},"
                                  "{\"name\":\"CO(GT)\",\"type\":\"numeric\"}],"
                                  "\"csv\":{\"delimiter\":\"tab\",\"decimal_comma\":true,"
                                  "\"encoding\":\"latin-1\",\"na\":[\"-200\",\"?\"],\"quote\":\"'\"}}");
    json_t *back = qml_rec_schema_json(s);
    char *text = json_dumps(back, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(text, "{\"additional_columns\":true,\"columns\":[{\"name\":\"Customer ID\",\"required\":false,"
                              "\"type\":\"categorical\"},{\"name\":\"CO(GT)\",\"required\":false,\"type\":\"numeric\"}],"
                              "\"csv\":{\"decimal_comma\":true,\"delimiter\":\"tab\",\"encoding\":\"latin-1\","
                              "\"na\":[\"-200\",\"?\"],\"quote\":\"'\"}}");
    free(text);
    json_decref(back);
    const char *body = "Customer ID\tCO(GT)\t\t\n'Z\xfcrich\t1'\t2,5\t\t\n?\t-200\t\t\n";
    qml_rec_batch b;
    parse_ok(body, QML_REC_CSV, s, &b);
    assert_int_equal(b.nrows, 2);
    assert_string_equal(row_text(&b, 0), "{\"CO(GT)\":2.5,\"Customer ID\":\"Z\xc3\xbcrich\\t1\"}");
    assert_string_equal(row_text(&b, 1), "{\"CO(GT)\":null,\"Customer ID\":null}");
    qml_rec_batch_free(&b);
    /* The request's options win: here UTF-8, so the Latin-1 byte is refused. */
    qml_rec_opts o;
    qml_rec_opts_init(&o);
    o.csv_encoding = "utf-8";
    qn_err err;
    qml_rec_batch_init(&b);
    assert_int_equal(qml_rec_parse(body, strlen(body), QML_REC_CSV, s, &o, &b, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "invalid UTF-8 at line 2, byte offset 23"));
    qml_rec_batch_free(&b);
    qml_rec_schema_free(s);

    static const char *const bad[][2] = {
        {"{\"columns\":[],\"csv\":[]}", "csv must be an object"},
        {"{\"columns\":[],\"csv\":{\"delimiter\":\":\"}}", "csv.delimiter"},
        {"{\"columns\":[],\"csv\":{\"quote\":\"ab\"}}", "csv.quote"},
        {"{\"columns\":[],\"csv\":{\"decimal_comma\":1}}", "csv.decimal_comma"},
        {"{\"columns\":[],\"csv\":{\"encoding\":\"ebcdic\"}}", "csv.encoding"},
        {"{\"columns\":[],\"csv\":{\"na\":\"NA\"}}", "csv.na"},
        {"{\"columns\":[],\"csv\":{\"sep\":\";\"}}", "unknown field \"sep\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *doc = json_loads(bad[i][0], 0, NULL);
        qml_rec_schema *t;
        assert_int_equal(qml_rec_schema_parse(doc, &t, &err), QN_INVALID_ARGUMENT);
        if (!strstr(err.msg, bad[i][1]))
            fail_msg("case %zu: %s", i, err.msg);
        json_decref(doc);
    }
}

static void test_schema_parse_and_json(void **state)
{
    (void)state;
    static const struct {
        const char *doc, *needle;
    } bad[] = {
        {"[]", "object"},
        {"{}", "columns must be an array"},
        {"{\"columns\":[{\"name\":\"a\",\"type\":\"text\"}]}", "column a: type"},
        {"{\"columns\":[{\"name\":\"a\"}]}", "type"},
        {"{\"columns\":[{\"name\":\"a\\nb\",\"type\":\"numeric\"}]}", "columns[0]"},
        {"{\"columns\":[{\"name\":\"\",\"type\":\"numeric\"}]}", "columns[0]"},
        {"{\"columns\":[{\"name\":\"a\",\"type\":\"numeric\",\"x\":1}]}", "unknown field \"x\""},
        {"{\"columns\":[{\"name\":\"a\",\"type\":\"numeric\",\"required\":1}]}", "required"},
        {"{\"columns\":[],\"additional_columns\":\"no\"}", "additional_columns"},
        {"{\"columns\":[],\"extra\":1}", "unknown field \"extra\""},
        {"{\"columns\":[{\"name\":\"a\",\"type\":\"numeric\"},{\"name\":\"a\",\"type\":\"boolean\"}]}", "twice"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *doc = json_loads(bad[i].doc, 0, NULL);
        qml_rec_schema *s;
        qn_err err;
        assert_int_equal(qml_rec_schema_parse(doc, &s, &err), QN_INVALID_ARGUMENT);
        if (!strstr(err.msg, bad[i].needle))
            fail_msg("case %zu: %s", i, err.msg);
        json_decref(doc);
    }
    qml_rec_schema *s = schema_of("{\"columns\":[{\"name\":\"z\",\"type\":\"timestamp\",\"required\":true},"
                                  "{\"name\":\"a\",\"type\":\"boolean\"}]}");
    json_t *j = qml_rec_schema_json(s);
    char *text = json_dumps(j, JSON_COMPACT);
    assert_string_equal(text, "{\"columns\":[{\"name\":\"z\",\"type\":\"timestamp\",\"required\":true},"
                              "{\"name\":\"a\",\"type\":\"boolean\",\"required\":false}],"
                              "\"additional_columns\":true}");
    free(text);
    json_decref(j);
    qml_rec_schema_free(s);
}

/* json_equal, except that numbers compare by value (1e5 is written 100000
 * and read back as an integer). */
static int same(const json_t *a, const json_t *b)
{
    if (json_is_number(a) || json_is_number(b))
        return json_is_number(a) && json_is_number(b) && json_number_value(a) == json_number_value(b);
    if (json_typeof(a) != json_typeof(b))
        return 0;
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b))
            return 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!same(json_array_get(a, i), json_array_get(b, i)))
                return 0;
        return 1;
    }
    if (json_is_object(a)) {
        const char *k;
        json_t *v;
        if (json_object_size(a) != json_object_size(b))
            return 0;
        json_object_foreach((json_t *)a, k, v) {
            const json_t *w = json_object_get(b, k);
            if (!w || !same(v, w))
                return 0;
        }
        return 1;
    }
    return json_equal(a, b);
}

/* The canonical writer against jansson: every row read back equals what was
 * sent, over generated objects of every value kind, and keys come out in
 * byte order. */
static void test_round_trip_against_jansson(void **state)
{
    (void)state;
    unsigned seed = 12345;
    char body[1 << 16];
    size_t len = 0;
    json_t *sent = json_array();
    for (int r = 0; r < 300; r++) {
        json_t *o = json_object();
        int nk = 1 + (int)(seed % 9);
        for (int k = 0; k < nk; k++) {
            seed = seed * 1103515245u + 12345u;
            char key[16];
            snprintf(key, sizeof key, "k%u", seed % 40);
            json_t *v;
            switch ((seed >> 8) % 7) {
            case 0: v = json_integer((json_int_t)(seed % 2000000) - 1000000); break;
            case 1: v = json_real((double)(int)(seed % 100000) / 7.0 - 5000.0); break;
            case 2: {
                char s[8] = {'a', (char)(1 + seed % 120), '"', '\\', (char)('0' + seed % 10), 'z', 0, 0};
                v = json_string(s);
                break;
            }
            case 3: v = json_boolean(seed & 1); break;
            case 4: v = json_null(); break;
            case 5: v = json_pack("[i, s, {s:f}]", (int)(seed % 10), "\xc3\xa9", "q", 1e-7 * (seed % 13)); break;
            default: v = json_real(1e300 / (1 + seed % 5)); break;
            }
            json_object_set_new(o, key, v);
        }
        char *line = json_dumps(o, JSON_COMPACT);
        len += (size_t)snprintf(body + len, sizeof body - len, "%s\n", line);
        free(line);
        json_array_append_new(sent, o);
    }
    assert_true(len < sizeof body - 1);
    qml_rec_batch b;
    parse_ok(body, QML_REC_NDJSON, NULL, &b);
    assert_int_equal(b.nrows, 300);
    for (size_t i = 0; i < b.nrows; i++) {
        json_t *back = json_loadb(b.text + b.off[i], b.off[i + 1] - b.off[i], 0, NULL);
        assert_non_null(back);
        if (!same(back, json_array_get(sent, i)))
            fail_msg("row %zu differs: %.200s", i, row_text(&b, i));
        const char *k, *prev = "";
        json_t *v;
        json_object_foreach(back, k, v) {
            assert_true(strcmp(prev, k) < 0);
            prev = k;
        }
        json_decref(back);
    }
    qml_rec_batch_free(&b);
    json_decref(sent);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_forms_and_canonical_text),
        cmocka_unit_test(test_bodies_refused_whole),
        cmocka_unit_test(test_typing_cases),
        cmocka_unit_test(test_schema_required_and_additional),
        cmocka_unit_test(test_csv),
        cmocka_unit_test(test_csv_dialect),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_schema_parse_and_json),
        cmocka_unit_test(test_round_trip_against_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
