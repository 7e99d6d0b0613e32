/*
 * test_oip.c - the JSON infer reader's framing rules (oip_json.h): the binary tensor
 * extension must use the body exactly, and a declared shape is checked
 * against the data before memory is taken for it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/utf8.h"
#include "serve/oip.h"
#include "serve/oip_json.h"

/* Bytes malloc holds in mmapped chunks (what large arena blocks are),
 * measured while the request's arena is still alive. */
static size_t mmapped_during;

/* One request through oip_json_parse_infer: JSON head, then blob. */
static int parse(const char *head, const void *blob, size_t blen, qn_err *err)
{
    size_t hl = strlen(head);
    char *body = malloc(hl + blen + 1);
    assert_non_null(body);
    memcpy(body, head, hl);
    if (blen)
        memcpy(body + hl, blob, blen);
    qn_arena *a = qn_arena_new(0);
    assert_non_null(a);
    oip_json_req pr;
    qn_err_clear(err);
    int rc = oip_json_parse_infer(body, hl + blen, hl, a, &pr, err);
    mmapped_during = mallinfo2().hblkhd;
    if (rc < 0)
        assert_true(qn_utf8_valid(err->msg, strlen(err->msg)));
    oip_json_req_free(&pr);
    qn_arena_free(a);
    free(body);
    return rc;
}

static void test_binary_framing(void **state)
{
    qn_err err;
    const char *two = "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP64\",\"shape\":[1],"
                      "\"parameters\":{\"binary_data_size\":8}}]}";
    double d[2] = {1.5, 2.5};
    assert_int_equal(parse(two, d, 8, &err), 0);
    /* one byte, then a tensor's worth, after the last tensor */
    assert_int_equal(parse(two, d, 9, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "1 bytes after the last binary tensor"));
    assert_int_equal(parse(two, d, 16, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "8 bytes after"));
    /* short */
    assert_int_equal(parse(two, d, 7, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "'x'"));
    /* JSON data, then binary bytes nobody claims */
    const char *json = "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP64\",\"shape\":[1],"
                       "\"data\":[1]}]}";
    assert_int_equal(parse(json, d, 8, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "after the last binary tensor"));

    /* BYTES: fewer elements than the shape; more; too few bytes for the shape */
    const char *b2 = "{\"inputs\":[{\"name\":\"s\",\"datatype\":\"BYTES\",\"shape\":[2],"
                     "\"parameters\":{\"binary_data_size\":9}}]}";
    assert_int_equal(parse(b2, "\5\0\0\0abcde", 9, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "'s'"));
    assert_non_null(strstr(err.msg, "has 1"));
    assert_int_equal(parse(b2, "\1\0\0\0a\0\0\0\0", 9, &err), 0);
    const char *b1 = "{\"inputs\":[{\"name\":\"s\",\"datatype\":\"BYTES\",\"shape\":[1],"
                     "\"parameters\":{\"binary_data_size\":10}}]}";
    assert_int_equal(parse(b1, "\1\0\0\0a\1\0\0\0b", 10, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "more elements"));
    const char *bhuge = "{\"inputs\":[{\"name\":\"s\",\"datatype\":\"BYTES\",\"shape\":[1000000],"
                        "\"parameters\":{\"binary_data_size\":5}}]}";
    assert_int_equal(parse(bhuge, "\1\0\0\0a", 5, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "too small"));
}

/* A small body declaring a huge shape is refused before memory is taken
 * for the shape: while its arena is alive, malloc holds no large block
 * (the 64M-element tensors below would take 512 MiB and 1 GiB). Under
 * AddressSanitizer mallinfo2 reports nothing, so there only the answers
 * are checked. */
static void test_shape_checked_before_allocation(void **state)
{
    qn_err err;
    /* 64M FP64 elements declared, one given: refused whichever reader runs,
     * with the element counts in the message. */
    const char *fp = "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP64\",\"shape\":[67108864],"
                     "\"data\":[1]}]}";
    assert_int_equal(parse(fp, NULL, 0, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "67108864 elements but the data has 1"));
    assert_true(mmapped_during < ((size_t)64 << 20));
    const char *by = "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"BYTES\",\"shape\":[67108864],"
                     "\"data\":[\"a\"]}]}";
    assert_int_equal(parse(by, NULL, 0, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "has 1"));
    assert_true(mmapped_during < ((size_t)64 << 20));
    const char *more = "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP64\",\"shape\":[2],"
                       "\"data\":[[1,2],[3]]}]}";
    assert_int_equal(parse(more, NULL, 0, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "more elements than the shape holds (2)"));
    const char *deep = "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP64\",\"shape\":[1],"
                       "\"data\":[[[[[[[[[1]]]]]]]]]}]}";
    assert_int_equal(parse(deep, NULL, 0, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "nested deeper"));

    /* The fast reader declines it (the general reader gives the answer). */
    qn_arena *a = qn_arena_new(0);
    assert_non_null(a);
    oip_json_req pr;
    assert_int_equal(oip_json_parse_fast(fp, strlen(fp), a, &pr), 1);
    assert_true(mallinfo2().hblkhd < ((size_t)64 << 20));
    qn_arena_free(a);
}

static void test_utf8_in_names(void **state)
{
    qn_err err;
    const char *bad = "{\"inputs\":[{\"name\":\"ag\xff" "e\",\"datatype\":\"FP64\",\"shape\":[1],"
                      "\"data\":[1]}]}";
    assert_int_equal(parse(bad, NULL, 0, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "\\xFF"));
    const char *cut = "{\"inputs\":[{\"name\":\"\xe2\x82";
    assert_int_equal(parse(cut, NULL, 0, &err), QN_INVALID_ARGUMENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_binary_framing),
        cmocka_unit_test(test_shape_checked_before_allocation),
        cmocka_unit_test(test_utf8_in_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
