/* test_csv.c - the CSV reader: RFC 4180 cases as data (tests/data/ml/csv_cases.json),
 * the three real data sets with their quirks, cell parsing, and streaming in
 * bounded memory. */
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
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "ml/csv.h"

static char *env_path(const char *var, const char *file)
{
    const char *d = getenv(var);
    assert_non_null(d);
    char *p = malloc(strlen(d) + strlen(file) + 2);
    sprintf(p, "%s/%s", d, file);
    return p;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- cases as data ------------------------------------------------------- */

static qml_type type_of(const char *s)
{
    qml_type t;
    assert_int_equal(qml_type_parse(s, &t), 0);
    return t;
}

/* Checks one frame row against an expected JSON row. */
static void check_row(const char *name, const qml_frame *f, size_t r, json_t *exp)
{
    for (size_t j = 0; j < json_array_size(exp); j++) {
        const qml_column *c = qml_frame_col(f, j);
        json_t *e = json_array_get(exp, j);
        if (json_is_null(e)) {
            if (!c->missing[r])
                fail_msg("%s: row %zu column %s should be missing", name, r, c->name);
            continue;
        }
        if (c->missing[r])
            fail_msg("%s: row %zu column %s is missing", name, r, c->name);
        if (c->type == QML_CATEGORICAL) {
            if (strcmp(qml_col_str(c, r), json_string_value(e)) != 0)
                fail_msg("%s: row %zu column %s: got \"%s\", want \"%s\"", name, r, c->name,
                         qml_col_str(c, r), json_string_value(e));
        } else if (fabs(c->num[r] - json_number_value(e)) > 1e-9) {
            fail_msg("%s: row %zu column %s: got %.17g, want %.17g", name, r, c->name, c->num[r],
                     json_number_value(e));
        }
    }
}

static void set_opts(qml_csv_opts *o, json_t *jo, const char **na, qml_field_spec *fs)
{
    qml_csv_opts_init(o);
    if (!jo)
        return;
    json_t *v;
    if ((v = json_object_get(jo, "sep")))
        o->sep = json_string_value(v);
    if ((v = json_object_get(jo, "header")))
        o->has_header = json_is_true(v);
    if ((v = json_object_get(jo, "trim")))
        o->trim = json_is_true(v);
    if ((v = json_object_get(jo, "skip")))
        o->skip_lines = (size_t)json_integer_value(v);
    if ((v = json_object_get(jo, "quote")))
        o->quote = json_is_null(v) ? QML_CSV_NO_QUOTE : json_string_value(v)[0];
    if ((v = json_object_get(jo, "decimal_comma")))
        o->decimal_comma = json_is_true(v);
    if ((v = json_object_get(jo, "encoding")))
        o->encoding = json_string_value(v);
    if ((v = json_object_get(jo, "max_field")))
        o->max_field_bytes = (size_t)json_integer_value(v);
    if ((v = json_object_get(jo, "na"))) {
        for (size_t i = 0; i < json_array_size(v); i++)
            na[i] = json_string_value(json_array_get(v, i));
        o->na_values = na;
        o->n_na_values = json_array_size(v);
    }
    if ((v = json_object_get(jo, "fields"))) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            fs[i].name = json_string_value(json_array_get(json_array_get(v, i), 0));
            fs[i].type = (int)type_of(json_string_value(json_array_get(json_array_get(v, i), 1)));
        }
        o->fields = fs;
        o->n_fields = json_array_size(v);
    }
}

static char *unhex(const char *hex, size_t *len)
{
    size_t n = strlen(hex) / 2;
    char *b = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        b[i] = (char)v;
    }
    *len = n;
    return b;
}

static void run_case(json_t *cs, size_t chunk_rows)
{
    const char *name = json_string_value(json_object_get(cs, "name"));
    size_t len;
    char *input;
    if (json_object_get(cs, "input_hex")) {
        input = unhex(json_string_value(json_object_get(cs, "input_hex")), &len);
    } else {
        len = json_string_length(json_object_get(cs, "input"));
        input = malloc(len + 1);
        memcpy(input, json_string_value(json_object_get(cs, "input")), len);
    }
    const char *na[8];
    qml_field_spec fs[16];
    qml_csv_opts o;
    set_opts(&o, json_object_get(cs, "opts"), na, fs);
    qn_err err;
    qml_csv_reader *r = qml_csv_open_mem(input, len, &o, &err);
    json_t *oe = json_object_get(cs, "open_error");
    if (oe) {
        if (r)
            fail_msg("%s: opened, want the error \"%s\"", name, json_string_value(oe));
        if (err.code != QN_INVALID_ARGUMENT || !strstr(err.msg, json_string_value(oe)))
            fail_msg("%s: error %d \"%s\", want \"%s\"", name, err.code, err.msg,
                     json_string_value(oe));
        free(input);
        return;
    }
    if (!r)
        fail_msg("%s: open: %s", name, err.msg);

    json_t *cols = json_object_get(cs, "columns"), *rows = json_object_get(cs, "rows"),
           *bad = json_object_get(cs, "bad");
    if (qml_csv_ncols(r) != json_array_size(cols))
        fail_msg("%s: %zu columns, want %zu", name, qml_csv_ncols(r), json_array_size(cols));
    for (size_t j = 0; j < json_array_size(cols); j++) {
        json_t *c = json_array_get(cols, j);
        if (strcmp(qml_csv_col_name(r, j), json_string_value(json_array_get(c, 0))) != 0 ||
            qml_csv_col_type(r, j) != type_of(json_string_value(json_array_get(c, 1))))
            fail_msg("%s: column %zu is %s %s, want %s %s", name, j, qml_csv_col_name(r, j),
                     qml_type_name(qml_csv_col_type(r, j)), json_string_value(json_array_get(c, 0)),
                     json_string_value(json_array_get(c, 1)));
    }
    size_t got = 0;
    qml_frame *f;
    int k;
    while ((k = qml_csv_next(r, chunk_rows, &f, &err)) > 0) {
        assert_true(qml_frame_nrows(f) <= chunk_rows);
        for (size_t i = 0; i < qml_frame_nrows(f); i++, got++) {
            if (got >= json_array_size(rows))
                fail_msg("%s: more rows than expected", name);
            check_row(name, f, i, json_array_get(rows, got));
        }
        qml_frame_free(f);
    }
    assert_int_equal(k, 0);
    if (got != json_array_size(rows))
        fail_msg("%s: %zu rows, want %zu", name, got, json_array_size(rows));
    const qml_read_report *rep = qml_csv_report(r);
    assert_int_equal(rep->rows_ok, got);
    assert_int_equal(rep->rows_read, rep->rows_ok + rep->rows_bad);
    if (rep->rows_bad != json_array_size(bad))
        fail_msg("%s: %llu bad rows, want %zu (first: %s)", name, (unsigned long long)rep->rows_bad,
                 json_array_size(bad), rep->n_first_bad ? rep->first_bad[0].msg : "");
    for (size_t i = 0; i < json_array_size(bad); i++) {
        json_t *b = json_array_get(bad, i);
        const qml_bad_row *br = &rep->first_bad[i];
        if (br->line != (uint64_t)json_integer_value(json_array_get(b, 0)) ||
            strcmp(qml_bad_reason_name(br->reason), json_string_value(json_array_get(b, 1))) != 0 ||
            !strstr(br->msg, json_string_value(json_array_get(b, 2))))
            fail_msg("%s: bad row %zu is line %llu %s \"%s\", want line %lld %s \"%s\"", name, i,
                     (unsigned long long)br->line, qml_bad_reason_name(br->reason), br->msg,
                     json_integer_value(json_array_get(b, 0)), json_string_value(json_array_get(b, 1)),
                     json_string_value(json_array_get(b, 2)));
    }
    qml_csv_close(r);
    free(input);
}

static void test_cases_as_data(void **state)
{
    char *path = env_path("QUERN_TEST_DATA", "ml/csv_cases.json");
    json_error_t je;
    json_t *cases = json_load_file(path, 0, &je);
    if (!cases)
        fail_msg("%s: %s", path, je.text);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        run_case(json_array_get(cases, i), 1);     /* a chunk per row */
        run_case(json_array_get(cases, i), 1000);  /* one chunk */
    }
    json_decref(cases);
    free(path);
}

/* ---- cells ---------------------------------------------------------------- */

static void test_cell_parsing(void **state)
{
    double v;
    assert_int_equal(qml_parse_number("2.55", 4, &v), 0);
    assert_true(v == 2.55);
    assert_int_equal(qml_parse_number("0.1", 3, &v), 0);
    assert_true(v == 0.1);
    /* Beyond the fast path: still the correctly rounded double. */
    assert_int_equal(qml_parse_number("1.2345678901234567890123", 24, &v), 0);
    assert_true(v == strtod("1.2345678901234567890123", NULL));
    assert_int_equal(qml_parse_number("-11062.06", 9, &v), 0);
    assert_true(v == -11062.06);
    assert_int_equal(qml_parse_number("1e400", 5, &v), QN_INVALID_ARGUMENT);
    assert_int_equal(qml_parse_number("", 0, &v), QN_INVALID_ARGUMENT);
    assert_int_equal(qml_parse_number("1 ", 2, &v), QN_INVALID_ARGUMENT);
    assert_int_equal(qml_parse_number("-", 1, &v), QN_INVALID_ARGUMENT);
    assert_int_equal(qml_parse_number("1e", 2, &v), QN_INVALID_ARGUMENT);

    char buf[64];
    qml_format_number(12346, buf, sizeof buf);
    assert_string_equal(buf, "12346");
    qml_format_number(2.55, buf, sizeof buf);
    assert_string_equal(buf, "2.55");
    qml_format_number(0.1 + 0.2, buf, sizeof buf);
    assert_true(strtod(buf, NULL) == 0.1 + 0.2);

    assert_int_equal(qml_parse_timestamp("2000-02-29", 10, &v), 0);
    assert_true(v == 951782400);
    assert_int_equal(qml_parse_timestamp("1900-02-29", 10, &v), QN_INVALID_ARGUMENT);
    assert_int_equal(qml_parse_timestamp("2011-13-01", 10, &v), QN_INVALID_ARGUMENT);
    assert_int_equal(qml_parse_timestamp("2011-12-01 24:00:00", 19, &v), QN_INVALID_ARGUMENT);
    assert_int_equal(qml_parse_timestamp("2011-12-01 10:00:00Z", 20, &v), QN_INVALID_ARGUMENT);
    assert_int_equal(qml_parse_timestamp("1969-12-31T23:59:59Z", 20, &v), 0);
    assert_true(v == -1);
    qml_format_timestamp(1291191960, buf, sizeof buf);
    assert_string_equal(buf, "2010-12-01 08:26:00");
    qml_format_timestamp(-1, buf, sizeof buf);
    assert_string_equal(buf, "1969-12-31 23:59:59");

    assert_int_equal(qml_parse_bool("YES", 3, 0, &v), 0);
    assert_true(v == 1);
    assert_int_equal(qml_parse_bool("1", 1, 0, &v), QN_INVALID_ARGUMENT);
    assert_int_equal(qml_parse_bool("1", 1, 1, &v), 0);

    assert_true(qml_utf8_valid("\xc2\xa3", 2));
    assert_false(qml_utf8_valid("\xc0\xaf", 2));         /* overlong '/' */
    assert_false(qml_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(qml_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(qml_utf8_valid("\xe2\x82", 2));         /* truncated */
}

static void test_bad_options_and_headers(void **state)
{
    qml_csv_opts o;
    qn_err err;
    qml_csv_opts_init(&o);
    assert_null(qml_csv_open("/nonexistent/x.csv", &o, &err));
    assert_int_equal(err.code, QN_NOT_FOUND);
    assert_non_null(strstr(err.msg, "/nonexistent/x.csv"));

    o.sep = "\"";
    assert_null(qml_csv_open_mem("a\n", 2, &o, &err));
    assert_int_equal(err.code, QN_INVALID_ARGUMENT);

    qml_csv_opts_init(&o);
    qml_field_spec fs[] = {{"nope", QML_NUMERIC}};
    o.fields = fs;
    o.n_fields = 1;
    assert_null(qml_csv_open_mem("a,b\n1,2\n", 8, &o, &err));
    assert_int_equal(err.code, QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "nope"));

    qml_csv_opts_init(&o);
    assert_null(qml_csv_open_mem("a,a\n1,2\n", 8, &o, &err));
    assert_non_null(strstr(err.msg, "column a appears twice"));
    assert_null(qml_csv_open_mem("\"a\"x,b\n", 7, &o, &err));
    assert_non_null(strstr(err.msg, "header"));
}

/* ---- the real data sets --------------------------------------------------- */

static size_t distinct(const qml_column *c)
{
    /* Every dictionary entry of a freshly read column is used at least once. */
    return qml_dict_size(c->dict);
}

static void test_online_retail(void **state)
{
    char *path = env_path("QUERN_DATASETS", "online_retail.csv");
    qml_csv_opts o;
    qml_csv_opts_init(&o);
    qml_field_spec fs[] = {{"InvoiceNo", QML_CATEGORICAL}, {"StockCode", QML_CATEGORICAL},
                           {"CustomerID", QML_CATEGORICAL}};
    o.fields = fs;
    o.n_fields = 3;
    qml_frame *f;
    qml_read_report rep;
    qn_err err;
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    double t0 = now();
    int rc = qml_csv_read_all(path, &o, &f, &rep, &err);
    double dt = now() - t0;
    if (rc < 0)
        fail_msg("%s", err.msg);
    print_message("online_retail.csv: %.1f MB in %.3f s = %.0f MB/s\n", (double)st.st_size / 1e6, dt,
                  (double)st.st_size / 1e6 / dt);
    assert_int_equal(qml_frame_nrows(f), 541909);
    assert_int_equal(rep.rows_read, 541909);
    assert_int_equal(rep.rows_bad, 0);
    assert_int_equal(qml_frame_ncols(f), 8);
    const qml_column *inv = qml_frame_col(f, 0), *stock = qml_frame_col(f, 1),
                     *desc = qml_frame_col(f, 2), *qty = qml_frame_col(f, 3),
                     *date = qml_frame_col(f, 4), *price = qml_frame_col(f, 5),
                     *cust = qml_frame_col(f, 6), *country = qml_frame_col(f, 7);
    assert_string_equal(cust->name, "CustomerID");
    assert_int_equal(qty->type, QML_NUMERIC);
    assert_int_equal(date->type, QML_TIMESTAMP);
    assert_int_equal(price->type, QML_NUMERIC);
    assert_int_equal(desc->type, QML_CATEGORICAL);
    /* The figures of data/online-retail/SOURCE.txt. */
    assert_int_equal(cust->n_missing, 135080);
    assert_int_equal(desc->n_missing, 1454);
    assert_int_equal(distinct(inv), 25900);
    assert_int_equal(distinct(stock), 4070);
    assert_int_equal(distinct(cust), 4372);
    assert_int_equal(distinct(country), 38);
    double sum = 0, qmin = INFINITY, qmax = -INFINITY, pmin = INFINITY, pmax = -INFINITY;
    double dmin = INFINITY, dmax = -INFINITY;
    size_t c_rows = 0, pound = 0, pound_intact = 0;
    for (size_t r = 0; r < qml_frame_nrows(f); r++) {
        sum += qty->num[r];
        qmin = fmin(qmin, qty->num[r]);
        qmax = fmax(qmax, qty->num[r]);
        pmin = fmin(pmin, price->num[r]);
        pmax = fmax(pmax, price->num[r]);
        dmin = fmin(dmin, date->num[r]);
        dmax = fmax(dmax, date->num[r]);
        c_rows += qml_col_str(inv, r)[0] == 'C';
        const char *d = qml_col_str(desc, r);
        if (d && strstr(d, "\xc2\xa3")) {
            pound++;
            /* e.g. "Dotcomgiftshop Gift Voucher £40.00": the pound sign intact. */
            pound_intact += strncmp(d, "Dotcomgiftshop Gift Voucher \xc2\xa3", 30) == 0 &&
                            strstr(d, ".00") != NULL;
        }
    }
    assert_true(sum == 5176450);
    assert_true(qmin == -80995 && qmax == 80995);
    assert_true(pmin == -11062.06 && pmax == 38970);
    char b[40];
    qml_format_timestamp(dmin, b, sizeof b);
    assert_string_equal(b, "2010-12-01 08:26:00");
    qml_format_timestamp(dmax, b, sizeof b);
    assert_string_equal(b, "2011-12-09 12:50:00");
    assert_int_equal(c_rows, 9288);
    assert_int_equal(pound, 32);
    assert_int_equal(pound_intact, 32);
    /* Quoting: a doubled quote and a trailing space survive. */
    assert_int_not_equal(qml_dict_find(desc->dict, "RECORD FRAME 7\" SINGLE SIZE ", 28), -1);
    assert_int_not_equal(qml_dict_find(desc->dict, "FANCY FONT BIRTHDAY CARD, ", 26), -1);
    /* The numeric ids: 12346 stays "12346". */
    assert_int_not_equal(qml_dict_find(cust->dict, "12346", 5), -1);
    qml_frame_free(f);

    /* Inferred instead of given: CustomerID comes out numeric, same counts. */
    qml_csv_opts_init(&o);
    assert_int_equal(qml_csv_read_all(path, &o, &f, &rep, &err), 0);
    assert_int_equal(rep.rows_bad, 0);
    assert_int_equal(qml_frame_col(f, 6)->type, QML_NUMERIC);
    assert_int_equal(qml_frame_col(f, 6)->n_missing, 135080);
    assert_int_equal(qml_frame_col(f, 0)->type, QML_CATEGORICAL); /* "C536379" in the sample */
    qml_frame_free(f);

    /* The same file in chunks of 65536 rows: same total, each chunk bounded. */
    qml_csv_reader *r = qml_csv_open(path, &o, &err);
    assert_non_null(r);
    size_t rows = 0, chunks = 0, miss = 0;
    while ((rc = qml_csv_next(r, 65536, &f, &err)) > 0) {
        assert_true(qml_frame_nrows(f) <= 65536);
        rows += qml_frame_nrows(f);
        miss += qml_frame_col(f, 6)->n_missing;
        chunks++;
        qml_frame_free(f);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(rows, 541909);
    assert_int_equal(miss, 135080);
    assert_int_equal(chunks, (541909 + 65535) / 65536);
    qml_csv_close(r);
    free(path);
}

static const char *adult_names[] = {"age", "workclass", "fnlwgt", "education", "education-num",
                                    "marital-status", "occupation", "relationship", "race", "sex",
                                    "capital-gain", "capital-loss", "hours-per-week",
                                    "native-country", "income"};

static void read_adult(const char *file, size_t skip, size_t want_rows, size_t miss_work,
                       size_t miss_occ, size_t miss_country, const char *label0)
{
    char *path = env_path("QUERN_DATASETS", file);
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
    qml_read_report rep;
    qn_err err;
    if (qml_csv_read_all(path, &o, &f, &rep, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(qml_frame_nrows(f), want_rows);
    assert_int_equal(rep.rows_bad, 0);
    for (int i = 0; i < 15; i++)
        assert_string_equal(qml_frame_col(f, (size_t)i)->name, adult_names[i]);
    const qml_type numeric[] = {0, 2, 4, 10, 11, 12};
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(qml_frame_col(f, numeric[i])->type, QML_NUMERIC);
    assert_int_equal(qml_frame_col(f, 1)->type, QML_CATEGORICAL);
    /* The "?" counts (computed with awk -F', ' over the files). */
    assert_int_equal(qml_frame_col(f, 1)->n_missing, miss_work);
    assert_int_equal(qml_frame_col(f, 6)->n_missing, miss_occ);
    assert_int_equal(qml_frame_col(f, 13)->n_missing, miss_country);
    for (int i = 0; i < 15; i++)
        if (i != 1 && i != 6 && i != 13)
            assert_int_equal(qml_frame_col(f, (size_t)i)->n_missing, 0);
    /* No leading space left on any value: the separator took it. */
    const qml_column *inc = qml_frame_col(f, 14);
    assert_int_equal(qml_dict_size(inc->dict), 2);
    assert_string_equal(qml_col_str(inc, 0), label0);
    assert_int_equal(qml_dict_find(qml_frame_col(f, 3)->dict, "Bachelors", 9) >= 0, 1);
    qml_frame_free(f);
    free(path);
}

static void test_adult(void **state)
{
    read_adult("adult.data", 0, 32561, 1836, 1843, 583, "<=50K");
    read_adult("adult.test", 1, 16281, 963, 966, 274, "<=50K.");
}

static void test_bike_sharing_crlf(void **state)
{
    char *path = env_path("QUERN_DATASETS", "hour.csv");
    qml_frame *f;
    qml_read_report rep;
    qn_err err;
    assert_int_equal(qml_csv_read_all(path, NULL, &f, &rep, &err), 0);
    assert_int_equal(qml_frame_nrows(f), 17379);
    assert_int_equal(rep.rows_bad, 0);
    assert_int_equal(qml_frame_ncols(f), 17);
    /* The last column's name and values carry no CR. */
    const qml_column *cnt = qml_frame_col(f, 16), *cas = qml_frame_col(f, 14),
                     *reg = qml_frame_col(f, 15), *day = qml_frame_col(f, 1);
    assert_string_equal(cnt->name, "cnt");
    assert_int_equal(cnt->type, QML_NUMERIC);
    assert_int_equal(day->type, QML_TIMESTAMP);
    for (size_t r = 0; r < qml_frame_nrows(f); r++)
        assert_true(cnt->num[r] == cas->num[r] + reg->num[r]);
    char b[40];
    qml_format_timestamp(day->num[qml_frame_nrows(f) - 1], b, sizeof b);
    assert_string_equal(b, "2012-12-31 00:00:00");
    qml_frame_free(f);
    free(path);
}

/* ---- streaming ------------------------------------------------------------ */

static long max_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void test_streaming_bounded_memory(void **state)
{
    const char *slow = getenv("QUERN_SLOW_TESTS");
    size_t target = (slow && strcmp(slow, "1") == 0) ? 500u << 20 : 50u << 20;
    char *path = env_path("QUERN_TEST_WORK", "stream.csv");
    FILE *out = fopen(path, "w");
    assert_non_null(out);
    fputs("id,user,item,event,ts,value,note\n", out);
    static const char *ev[] = {"view", "cart", "purchase"};
    size_t bytes = 0, rows = 0;
    while (bytes < target) {
        int n = fprintf(out, "%zu,u%zu,i%zu,%s,2011-%02zu-%02zu %02zu:%02zu:00,%zu.%02zu,\"a, \"\"quoted\"\" note\"\n",
                        rows, rows % 100000, rows % 7919, ev[rows % 3], rows % 12 + 1, rows % 28 + 1,
                        rows % 24, rows % 60, rows % 1000, rows % 100);
        bytes += (size_t)n;
        rows++;
    }
    fclose(out);

    long rss0 = max_rss_kb();
    qn_err err;
    qml_csv_reader *r = qml_csv_open(path, NULL, &err);
    assert_non_null(r);
    double t0 = now();
    size_t got = 0;
    qml_frame *f;
    int rc;
    while ((rc = qml_csv_next(r, 65536, &f, &err)) > 0) {
        got += qml_frame_nrows(f);
        qml_frame_free(f);
    }
    double dt = now() - t0;
    assert_int_equal(rc, 0);
    assert_int_equal(got, rows);
    assert_int_equal(qml_csv_report(r)->rows_bad, 0);
    qml_csv_close(r);
    long grow_kb = max_rss_kb() - rss0;
    print_message("streamed %.0f MB, %zu rows in %.2f s = %.0f MB/s; peak RSS grew %ld KB\n",
                  (double)bytes / 1e6, rows, dt, (double)bytes / 1e6 / dt, grow_kb);
    /* A 65536-row chunk of 7 columns is ~4 MB of cells plus dictionaries;
     * 64 MB is far below the file (50 or 500 MB) and holds either way.
     * AddressSanitizer keeps freed memory in a quarantine of up to 256 MB,
     * which RSS then shows, so the bound allows for that there. */
    long bound_kb = 64 * 1024;
#if defined(__SANITIZE_ADDRESS__)
    bound_kb += 256 * 1024;
#endif
    assert_true(grow_kb < bound_kb);
    remove(path);
    free(path);
}

/* Files over several windows: multi-byte characters cut by a read, Latin-1
 * converted chunk by chunk, a bad byte far in refused with its line, sniffing
 * and trailing ';;' on a file. */
static void test_encodings_across_windows(void **state)
{
    char *path = env_path("QUERN_TEST_WORK", "enc.csv");
    const size_t rows = 200000; /* ~3 MB: several 1 MiB windows */
    static const char *const encs[] = {NULL, "latin-1"};
    for (int e = 0; e < 2; e++) {
        FILE *out = fopen(path, "wb");
        assert_non_null(out);
        fputs(e ? "Nom;Temp\xe9rature;;\r\n" : "Nom;Temp\xc3\xa9rature;;\r\n", out);
        for (size_t i = 0; i < rows; i++)
            fprintf(out, e ? "Z\xfcrich \xe9\xe9 %zu;%zu,5;;\r\n" : "\xe2\x82\xac\xe2\x82\xac %zu;%zu,5;;\r\n",
                    i, i % 1000);
        fclose(out);
        qml_csv_opts o;
        qml_csv_opts_init(&o);
        o.sep = "auto";
        o.decimal_comma = 1;
        o.encoding = encs[e];
        qn_err err;
        qml_frame *f;
        qml_read_report rep;
        if (qml_csv_read_all(path, &o, &f, &rep, &err) < 0)
            fail_msg("encoding %s: %s", encs[e] ? encs[e] : "utf-8", err.msg);
        assert_int_equal(qml_frame_ncols(f), 2);
        assert_string_equal(qml_frame_col(f, 1)->name, "Temp\xc3\xa9rature");
        assert_int_equal(qml_frame_nrows(f), rows);
        assert_int_equal(rep.rows_bad, 0);
        char want[64];
        for (size_t i = 0; i < rows; i += 997) {
            snprintf(want, sizeof want, e ? "Z\xc3\xbcrich \xc3\xa9\xc3\xa9 %zu" : "\xe2\x82\xac\xe2\x82\xac %zu", i);
            assert_string_equal(qml_col_str(qml_frame_col(f, 0), i), want);
            assert_true(qml_frame_col(f, 1)->num[i] == (double)(i % 1000) + 0.5);
        }
        qml_frame_free(f);
    }

    /* A bad byte near the end: the stream fails there, naming line and offset. */
    FILE *out = fopen(path, "wb");
    assert_non_null(out);
    fputs("a,b\n", out);
    long off = 4;
    for (size_t i = 0; i < rows; i++)
        off += fprintf(out, "%zu,\xc3\xa9\n", i);
    fputs("x,\xe9t\xe9\n", out);
    fclose(out);
    qn_err err;
    qml_csv_reader *r = qml_csv_open(path, NULL, &err);
    assert_non_null(r);
    qml_frame *f;
    int rc;
    size_t got = 0;
    while ((rc = qml_csv_next(r, 65536, &f, &err)) > 0) {
        got += qml_frame_nrows(f);
        qml_frame_free(f);
    }
    assert_int_equal(rc, QN_INVALID_ARGUMENT);
    char want[96];
    snprintf(want, sizeof want, "invalid UTF-8 at line %zu, byte offset %ld", rows + 2, off + 2);
    if (!strstr(err.msg, want))
        fail_msg("got \"%s\", want \"%s\"", err.msg, want);
    assert_true(got < rows + 1);
    qml_csv_close(r);
    remove(path);
    free(path);
}

int main(void)
{
    /* Streaming first: ru_maxrss is a peak, so it must be measured before
     * the tests that load whole files. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_streaming_bounded_memory),
        cmocka_unit_test(test_cases_as_data),
        cmocka_unit_test(test_cell_parsing),
        cmocka_unit_test(test_bad_options_and_headers),
        cmocka_unit_test(test_online_retail),
        cmocka_unit_test(test_adult),
        cmocka_unit_test(test_bike_sharing_crlf),
        cmocka_unit_test(test_encodings_across_windows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
