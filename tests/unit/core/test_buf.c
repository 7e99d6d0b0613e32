/* test_buf.c - the bounded buffer: its maximum, growth, detach, and sticky
 * errors (the first failed append is remembered; later appends do nothing
 * and return it; reset and free clear it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"

static void test_buf_bounds(void **state)
{
    (void)state;
    qn_buf b;
    qn_buf_init(&b, 10);
    assert_int_equal(qn_buf_append(&b, "", 0), 0);
    assert_non_null(b.data);
    assert_string_equal(b.data, "");
    assert_int_equal(qn_buf_puts(&b, "12345"), 0);
    assert_int_equal(qn_buf_printf(&b, "%d", 678), 0);
    assert_string_equal(b.data, "12345678");
    assert_int_equal(qn_buf_puts(&b, "9A"), 0); /* exactly max */
    assert_int_equal(b.len, 10);
    assert_true(b.cap <= 11);
    assert_int_equal(qn_buf_error(&b), 0);
    assert_int_equal(qn_buf_append(&b, "x", 1), QN_RESOURCE_EXHAUSTED);
    assert_string_equal(b.data, "123456789A");
    qn_buf_free(&b);
}

/* A printf that fits the spare capacity but not the maximum is refused too,
 * and leaves no trace of its first (truncated) attempt. */
static void test_buf_printf_past_max(void **state)
{
    (void)state;
    qn_buf b;
    qn_buf_init(&b, 100);
    assert_int_equal(qn_buf_puts(&b, "abc"), 0); /* cap is now 64 */
    assert_int_equal(qn_buf_printf(&b, "%0120d", 7), QN_RESOURCE_EXHAUSTED);
    assert_int_equal(b.len, 3);
    assert_string_equal(b.data, "abc");
    qn_buf_free(&b);
}

/* The case sticky errors exist for: a document built from many appends where
 * only the last one is checked. The append that fails is in the middle; the
 * last ones would fit, and must still fail. */
static void test_buf_error_is_sticky(void **state)
{
    (void)state;
    qn_buf b;
    qn_buf_init(&b, 16);
    assert_int_equal(qn_buf_puts(&b, "{\"a\":"), 0);
    assert_int_equal(qn_buf_puts(&b, "\"0123456789abcdef\""), QN_RESOURCE_EXHAUSTED);
    assert_int_equal(qn_buf_error(&b), QN_RESOURCE_EXHAUSTED);
    assert_int_equal(b.len, 5); /* what was there before the failure */
    assert_string_equal(b.data, "{\"a\":");
    /* Small enough to fit, yet refused: the document is already broken. */
    assert_int_equal(qn_buf_append(&b, "1", 1), QN_RESOURCE_EXHAUSTED);
    assert_int_equal(qn_buf_printf(&b, "%d", 1), QN_RESOURCE_EXHAUSTED);
    assert_int_equal(qn_buf_puts(&b, "}"), QN_RESOURCE_EXHAUSTED);
    assert_int_equal(qn_buf_append(&b, "", 0), QN_RESOURCE_EXHAUSTED);
    assert_int_equal(b.len, 5);
    assert_int_equal(qn_buf_error(&b), QN_RESOURCE_EXHAUSTED);

    /* Detach never hands out a cut-short document. */
    size_t len = 99;
    char *d = qn_buf_detach(&b, &len);
    assert_null(d);
    assert_int_equal(len, 0);
    assert_null(b.data);
    assert_int_equal(qn_buf_error(&b), 0);

    /* Reset clears the error; the buffer is usable again. */
    qn_buf_init(&b, 8);
    assert_int_equal(qn_buf_printf(&b, "%s", "123456789"), QN_RESOURCE_EXHAUSTED);
    assert_int_equal(qn_buf_error(&b), QN_RESOURCE_EXHAUSTED);
    qn_buf_reset(&b);
    assert_int_equal(qn_buf_error(&b), 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(qn_buf_puts(&b, "12345678"), 0);
    assert_string_equal(b.data, "12345678");
    assert_int_equal(qn_buf_error(&b), 0);
    /* Free clears it as well. */
    assert_int_equal(qn_buf_puts(&b, "9"), QN_RESOURCE_EXHAUSTED);
    qn_buf_free(&b);
    assert_int_equal(qn_buf_error(&b), 0);
    assert_int_equal(qn_buf_puts(&b, "ok"), 0);
    assert_string_equal(b.data, "ok");
    qn_buf_free(&b);
}

static void test_buf_growth_and_detach(void **state)
{
    (void)state;
    qn_buf b;
    qn_buf_init(&b, 1 << 20);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(qn_buf_printf(&b, "%04d,", i % 10000), 0);
    assert_int_equal(b.len, 50000);
    assert_memory_equal(b.data + 49995, "9999,", 5);
    assert_int_equal(qn_buf_error(&b), 0);
    size_t len;
    char *d = qn_buf_detach(&b, &len);
    assert_non_null(d);
    assert_int_equal(len, 50000);
    assert_int_equal(d[50000], '\0');
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    free(d);
    /* Detaching an untouched buffer gives an empty string, not NULL. */
    d = qn_buf_detach(&b, &len);
    assert_non_null(d);
    assert_string_equal(d, "");
    free(d);
    qn_buf_free(&b);
}

/* Filling to the maximum over many appends: the first that overflows sets
 * the error, and the content is exactly the appends before it. */
static void test_buf_fill_past_max(void **state)
{
    (void)state;
    qn_buf b;
    qn_buf_init(&b, 1000);
    int ok = 0, failed_at = -1;
    for (int i = 0; i < 200; i++) {
        int rc = qn_buf_printf(&b, "%06d,", i); /* 7 bytes each */
        if (rc == 0) {
            assert_int_equal(failed_at, -1); /* never succeeds after a failure */
            ok++;
        } else {
            assert_int_equal(rc, QN_RESOURCE_EXHAUSTED);
            if (failed_at < 0)
                failed_at = i;
        }
    }
    assert_int_equal(ok, 1000 / 7);
    assert_int_equal(failed_at, 1000 / 7);
    assert_int_equal(b.len, (size_t)ok * 7);
    assert_int_equal(qn_buf_error(&b), QN_RESOURCE_EXHAUSTED);
    qn_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_bounds),
        cmocka_unit_test(test_buf_printf_past_max),
        cmocka_unit_test(test_buf_error_is_sticky),
        cmocka_unit_test(test_buf_growth_and_detach),
        cmocka_unit_test(test_buf_fill_past_max),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
