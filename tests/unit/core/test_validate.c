/* test_validate.c - names, integers, limits, page tokens and listing pages;
 * strict JSON field access (core/json.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/validate.h"

static void test_names(void **state)
{
    qn_err err;
    const char *good[] = {"a", "churn", "Model-1.v2_x", "9lives"};
    const char *bad[] = {"", "..", "../etc", "a/b", ".hidden", "-x", "sp ace", "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        assert_int_equal(qn_name_check("model", good[i], &err), 0);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(qn_name_check("model", bad[i], &err), QN_INVALID_ARGUMENT);
        assert_non_null(strstr(err.msg, "model name"));
    }
    char longname[200];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(qn_name_check("alias", longname, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "limit"));
}

/* Column names as people write them; resource names keep their rule. */
static void test_column_names(void **state)
{
    (void)state;
    qn_err err;
    static const char *const good[] = {"Customer ID", "CO(GT)", "Temp\xc3\xa9rature", "T (\xc2\xb0" "C)",
                                       "-200", "a,b;c\"d'", "\xe2\x82\xac", " lead", "x"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (qn_colname_check("column", good[i], &err) != 0)
            fail_msg("%s: %s", good[i], err.msg);
    assert_int_equal(qn_name_check("dataset", "Customer ID", &err), QN_INVALID_ARGUMENT);

    char longest[QN_COLNAME_MAX + 2];
    memset(longest, 'a', sizeof longest);
    longest[QN_COLNAME_MAX] = '\0';
    assert_int_equal(qn_colname_check("column", longest, &err), 0);
    longest[QN_COLNAME_MAX] = 'a';
    longest[QN_COLNAME_MAX + 1] = '\0';
    assert_int_equal(qn_colname_check("column", longest, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "257 bytes long; the limit is 256"));

    static const char *const bad[][2] = {
        {"", "column name is empty"},
        {"a\tb", "control character (byte 2)"},
        {"a\nb", "control character"},
        {"a\x7f", "control character"},
        {"a\xc2\x85", "control character"}, /* U+0085, a C1 control */
        {"Temp\xe9rature", "not valid UTF-8 (byte 5)"},
        {"\xc0\xaf", "not valid UTF-8"},
        {"\xed\xa0\x80", "not valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(qn_colname_check("column", bad[i][0], &err), QN_INVALID_ARGUMENT);
        if (!strstr(err.msg, bad[i][1]))
            fail_msg("case %zu: %s", i, err.msg);
    }
    assert_int_equal(qn_colname_check("column", NULL, &err), QN_INVALID_ARGUMENT);
}

static void test_integers_and_limits(void **state)
{
    qn_err err;
    int64_t v;
    assert_int_equal(qn_uint_parse("version", "42", 100, &v, &err), 0);
    assert_int_equal(v, 42);
    const char *bad[] = {"0", "-1", "1x", "", "101", "99999999999999999999", " 1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(qn_uint_parse("version", bad[i], 100, &v, &err), QN_INVALID_ARGUMENT);
        assert_non_null(strstr(err.msg, "version"));
    }
    assert_int_equal(qn_limit_parse(NULL, 50, 1000, &v, &err), 0);
    assert_int_equal(v, 50);
    assert_int_equal(qn_limit_parse("1001", 50, 1000, &v, &err), QN_INVALID_ARGUMENT);
}

static void test_page_tokens(void **state)
{
    qn_err err;
    char key[QN_PAGE_KEY_MAX];
    const char *keys[] = {"", "a", "ab", "abc", "model-with.odd_chars", "12345"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        char *tok = qn_page_token_encode("models", keys[i]);
        assert_non_null(tok);
        assert_int_equal(qn_page_token_decode(tok, "models", key, sizeof key, &err), 0);
        assert_string_equal(key, keys[i]);
        /* a token of another listing is refused */
        assert_int_equal(qn_page_token_decode(tok, "datasets", key, sizeof key, &err), QN_INVALID_ARGUMENT);
        free(tok);
    }
    assert_int_equal(qn_page_token_decode(NULL, "models", key, sizeof key, &err), 0);
    assert_string_equal(key, "");
    const char *bad[] = {"!!!", "a", "bW9kZWxz", "====", "bW9kZWxzOgBh"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(qn_page_token_decode(bad[i], "models", key, sizeof key, &err), QN_INVALID_ARGUMENT);
}

static void test_page(void **state)
{
    qn_err err;
    qn_page pg;
    char after[QN_PAGE_KEY_MAX];
    assert_int_equal(qn_page_begin(&pg, "things", "2", 50, 1000, NULL, after, &err), 0);
    assert_int_equal(pg.limit, 2);
    /* rows a, b, c: the third only says there is more */
    const char *rows[] = {"a", "b", "c"};
    size_t i = 0;
    while (i < 3 && !qn_page_full(&pg))
        qn_page_add(&pg, json_string(rows[i]), rows[i]), i++;
    json_t *out = qn_page_finish(&pg, "things");
    assert_int_equal(json_array_size(json_object_get(out, "things")), 2);
    const char *tok = json_string_value(json_object_get(out, "next_page_token"));
    assert_non_null(tok);
    assert_int_equal(qn_page_begin(&pg, "things", NULL, 50, 1000, tok, after, &err), 0);
    assert_string_equal(after, "b");
    json_t *last = qn_page_finish(&pg, "things");
    assert_null(json_object_get(last, "next_page_token"));
    json_decref(last);
    json_decref(out);
    assert_int_equal(qn_page_begin(&pg, "things", "0", 50, 1000, NULL, after, &err), QN_INVALID_ARGUMENT);
    qn_page_free(&pg);
}

static void test_json_fields(void **state)
{
    qn_err err;
    json_t *body = json_pack("{s:s, s:i, s:{s:s}, s:s}", "name", "m", "n", 7, "tags", "k", "v", "extra", "x");
    static const char *const allowed[] = {"name", "n", "tags", NULL};
    assert_int_equal(qn_json_only(body, allowed, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "extra"));
    json_object_del(body, "extra");
    assert_int_equal(qn_json_only(body, allowed, &err), 0);
    const char *name = NULL;
    int64_t n = 0;
    json_t *tags = NULL;
    assert_int_equal(qn_json_str(body, "name", 1, 10, &name, &err), 0);
    assert_string_equal(name, "m");
    assert_int_equal(qn_json_str(body, "n", 1, 10, &name, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "must be a string, not an integer"));
    assert_int_equal(qn_json_int(body, "n", 1, 1, 5, &n, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "between 1 and 5"));
    assert_int_equal(qn_json_int(body, "absent", 0, 1, 5, &n, &err), 0);
    assert_int_equal(qn_json_int(body, "absent", 1, 1, 5, &n, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "required"));
    assert_int_equal(qn_json_tags(body, "tags", &tags, &err), 0);
    json_object_set_new(json_object_get(body, "tags"), "bad", json_integer(1));
    assert_int_equal(qn_json_tags(body, "tags", &tags, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "bad"));
    /* canonical JSON: sorted keys, compact - the bytes digests are taken of */
    json_t *a = json_pack("{s:i, s:i}", "b", 1, "a", 2);
    char *c = qn_json_canonical(a);
    assert_string_equal(c, "{\"a\":2,\"b\":1}");
    free(c);
    json_decref(a);
    char t[32];
    qn_time_rfc3339(1764336600123LL, t);
    assert_string_equal(t, "2025-11-28T13:30:00.123Z");
    json_decref(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_column_names),
        cmocka_unit_test(test_integers_and_limits),
        cmocka_unit_test(test_page_tokens),
        cmocka_unit_test(test_page),
        cmocka_unit_test(test_json_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
