/* test_utf8.c - UTF-8 validation, truncation on boundaries, escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "core/utf8.h"

static size_t check(const char *s)
{
    return qn_utf8_check(s, strlen(s));
}

static void test_check(void **state)
{
    static const char *const good[] = {
        "", "plain ascii", "caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
        "\xed\x9f\xbf",     /* U+D7FF, just below the surrogates */
        "\xee\x80\x80",     /* U+E000, just above */
        "\xf4\x8f\xbf\xbf", /* U+10FFFF */
        "\xef\xbf\xbd",     /* U+FFFD */
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        assert_int_equal(check(good[i]), strlen(good[i]));
        assert_true(qn_utf8_valid(good[i], strlen(good[i])));
    }
    /* bad input -> offset of the first bad byte */
    static const struct { const char *s; size_t at; } bad[] = {
        {"\xff", 0}, {"ab\xfe", 2}, {"\x80", 0}, {"a\xc3", 1},  /* cut short */
        {"\xc0\xaf", 0}, {"\xc1\xbf", 0},                    /* overlong 2-byte */
        {"\xe0\x80\xaf", 0}, {"\xf0\x80\x80\xaf", 0},        /* overlong 3/4-byte */
        {"x\xed\xa0\x80", 1}, {"\xed\xbf\xbf", 0},           /* surrogates */
        {"\xf4\x90\x80\x80", 0}, {"\xf5\x80\x80\x80", 0},    /* above U+10FFFF */
        {"\xe2\x82", 0}, {"\xe2\x28\xa1", 0}, {"caf\xc3\xa9\xa9", 5},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(check(bad[i].s), bad[i].at);
        assert_false(qn_utf8_valid(bad[i].s, strlen(bad[i].s)));
    }
    /* NUL is a character */
    assert_true(qn_utf8_valid("a\0b", 3));
}

static void test_trunc(void **state)
{
    const char *s = "ab\xe2\x82\xac" "cd\xf0\x9f\x98\x80"; /* ab EURO cd GRIN */
    size_t n = strlen(s);
    assert_int_equal(qn_utf8_trunc(s, n, 100), n);
    assert_int_equal(qn_utf8_trunc(s, n, 2), 2);
    assert_int_equal(qn_utf8_trunc(s, n, 3), 2); /* inside the euro sign */
    assert_int_equal(qn_utf8_trunc(s, n, 4), 2);
    assert_int_equal(qn_utf8_trunc(s, n, 5), 5);
    assert_int_equal(qn_utf8_trunc(s, n, 8), 7);
    assert_int_equal(qn_utf8_trunc(s, n, 10), 7);
    assert_int_equal(qn_utf8_trunc(s, n, 11), 11);
    /* every prefix it returns of valid text is valid */
    for (size_t m = 0; m <= n; m++)
        assert_true(qn_utf8_valid(s, qn_utf8_trunc(s, n, m)));
    /* bad bytes: nothing to protect, cut where asked */
    assert_int_equal(qn_utf8_trunc("\x80\x80\x80\x80", 4, 2), 2);
}

static void test_escape(void **state)
{
    char out[64];
    assert_int_equal(qn_utf8_escape(out, sizeof out, "ab\xff" "c", 4), 7);
    assert_string_equal(out, "ab\\xFFc");
    qn_utf8_escape(out, sizeof out, "caf\xc3\xa9 \xc3", 7);
    assert_string_equal(out, "caf\xc3\xa9 \\xC3");
    qn_utf8_escape(out, sizeof out, "a\0b", 3);
    assert_string_equal(out, "a\\x00b");
    /* cut on a boundary: never half a character or half an escape */
    assert_int_equal(qn_utf8_escape(out, 4, "ab\xe2\x82\xac", 5), 2);
    assert_string_equal(out, "ab");
    assert_int_equal(qn_utf8_escape(out, 6, "a\xff\xff", 3), 5);
    assert_string_equal(out, "a\\xFF");
    assert_int_equal(qn_utf8_escape(out, 1, "abc", 3), 0);
    assert_string_equal(out, "");
    /* whatever goes in, valid UTF-8 comes out */
    unsigned char junk[256];
    char big[1100];
    for (int i = 0; i < 256; i++)
        junk[i] = (unsigned char)(i * 37 + 11);
    for (size_t cap = 1; cap < sizeof big; cap += 7) {
        size_t n = qn_utf8_escape(big, cap, (const char *)junk, sizeof junk);
        assert_true(n < cap);
        assert_true(qn_utf8_valid(big, n));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_trunc),
        cmocka_unit_test(test_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
