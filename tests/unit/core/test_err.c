/* test_err.c - error codes, names, HTTP statuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "core/err.h"
#include "core/utf8.h"

static void test_codes_round_trip(void **state)
{
    assert_string_equal(qn_code_name(QN_INVALID_ARGUMENT), "invalid_argument");
    assert_int_equal(qn_code_http_status(QN_NOT_FOUND), 404);
    assert_int_equal(qn_code_http_status(QN_UNAUTHENTICATED), 401);
    assert_int_equal(qn_code_http_status(QN_OK), 200);
    assert_int_equal(qn_code_from_name("already_exists"), QN_ALREADY_EXISTS);
    assert_int_equal(qn_code_from_name("bogus"), QN_UNKNOWN);
    assert_true(qn_code_is_client(QN_FAILED_PRECONDITION));
    assert_false(qn_code_is_client(QN_INTERNAL));
    assert_int_equal(QN_INVALID_ARGUMENT, -3);
}

static void test_set_and_wrap(void **state)
{
    qn_err err;
    assert_int_equal(qn_err_set(&err, QN_NOT_FOUND, "model %s", "m1"), QN_NOT_FOUND);
    assert_string_equal(err.msg, "model m1");
    qn_err_wrap(&err, "version %d", 3);
    assert_string_equal(err.msg, "version 3: model m1");
    assert_int_equal(qn_err_set(NULL, QN_INTERNAL, "x"), QN_INTERNAL);
    qn_err_clear(&err);
    assert_int_equal(err.code, 0);
}

/* Messages quote their input: whatever it holds, the message is valid
 * UTF-8 and never ends in half a character. */
static void test_messages_are_utf8(void **state)
{
    qn_err err;
    qn_err_set(&err, QN_NOT_FOUND, "model %s does not exist", "a\xff" "b");
    assert_string_equal(err.msg, "model a\\xFFb does not exist");
    char big[2000];
    for (size_t pad = 0; pad < 4; pad++) {
        memset(big, 'x', pad);
        size_t n = pad;
        while (n + 2 < sizeof big - 1) {
            big[n++] = (char)0xc3;
            big[n++] = (char)0xa9;
        }
        big[n] = '\0';
        qn_err_set(&err, QN_INVALID_ARGUMENT, "%s", big);
        size_t len = strlen(err.msg);
        assert_true(len > QN_ERR_MSG_MAX - 8 && len < QN_ERR_MSG_MAX);
        assert_true(qn_utf8_valid(err.msg, len));
        qn_err_wrap(&err, "dataset %s", "\xe2\x82\xac\xe2");
        len = strlen(err.msg);
        assert_true(qn_utf8_valid(err.msg, len));
        assert_memory_equal(err.msg, "dataset \xe2\x82\xac\\xE2: ", 17);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_round_trip),
        cmocka_unit_test(test_set_and_wrap),
        cmocka_unit_test(test_messages_are_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
