/*
 * test_oip.c - the protocol data model's text helpers (oip.h: UTF-8 checks,
 * escaping client bytes into messages, cutting on a character boundary) and
 * the JSON infer reader's framing rules (oip_json.h): the binary tensor
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
#include "serve/oip.h"
#include "serve/oip_json.h"

static void test_utf8_valid(void **state)
{
    static const struct {
        const char *s;
        int ok;
    } cases[] = {
        {"", 1},
        {"plain ascii", 1},
        {"\xc3\xa9t\xc3\xa9", 1},          /* été */
        {"\xe2\x82\xac", 1},               /* euro sign */
        {"\xf0\x9f\x98\x80", 1},           /* U+1F600 */
        {"\xff", 0},
        {"\xc3\x28", 0},                   /* bad continuation */
        {"\xc0\xaf", 0},                   /* overlong '/' */
        {"\xe0\x80\xaf", 0},               /* overlong, 3 bytes */
        {"\xed\xa0\x80", 0},               /* surrogate U+D800 */
        {"\xf4\x90\x80\x80", 0},           /* past U+10FFFF */
        {"\xe2\x82", 0},                   /* cut short */
        {"\x80", 0},                       /* lone continuation */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(oip_utf8_valid(cases[i].s, strlen(cases[i].s)), cases[i].ok);
}

static void test_utf8_escape(void **state)
{
    char out[64];
    assert_int_equal(oip_utf8_escape(out, sizeof out, "ag\xff" "e", 4), 7);
    assert_string_equal(out, "ag\\xFFe");
    oip_utf8_escape(out, sizeof out, "\xc3\xa9\xc3\x28", 4);
    assert_string_equal(out, "\xc3\xa9\\xC3(");
    oip_utf8_escape(out, sizeof out, "\xed\xa0\x80", 3);
    assert_string_equal(out, "\\xED\\xA0\\x80");
    /* Cut on a character boundary: the euro sign does not fit whole in 4 bytes. */
    assert_int_equal(oip_utf8_escape(out, 5, "ab\xe2\x82\xac", 5), 2);
    assert_string_equal(out, "ab");
    /* ... nor does an escape. */
    assert_int_equal(oip_utf8_escape(out, 6, "ab\xff", 3), 2);
    assert_string_equal(out, "ab");
    assert_int_equal(oip_utf8_escape(out, 1, "abc", 3), 0);
    assert_string_equal(out, "");
    for (unsigned c = 0; c < 256; c++) { /* every single byte comes out valid */
        char in[1] = {(char)c};
        oip_utf8_escape(out, sizeof out, in, c ? 1 : 0);
        assert_true(oip_utf8_valid(out, strlen(out)));
    }
}

static void test_err_utf8(void **state)
{
    qn_err err;
    qn_err_set(&err, QN_INVALID_ARGUMENT, "input '%s': bad", "n\xfe");
    oip_err_utf8(&err);
    assert_string_equal(err.msg, "input 'n\\xFE': bad");
    assert_int_equal(err.code, QN_INVALID_ARGUMENT);

    /* A message cut by the buffer's end inside a character: the half
     * character is dropped, not escaped. */
    char big[QN_ERR_MSG_MAX * 2];
    memset(big, 'a', sizeof big);
    strcpy(big + QN_ERR_MSG_MAX - 2, "\xe2\x82\xac tail");
    qn_err_set(&err, QN_INVALID_ARGUMENT, "%s", big);
    assert_int_equal(strlen(err.msg), QN_ERR_MSG_MAX - 1);
    oip_err_utf8(&err);
    assert_true(oip_utf8_valid(err.msg, strlen(err.msg)));
    assert_int_equal(strlen(err.msg), QN_ERR_MSG_MAX - 2);
    assert_null(strchr(err.msg, '\\'));

    /* Valid text is left alone. */
    qn_err_set(&err, QN_NOT_FOUND, "mod\xc3\xa8le");
    oip_err_utf8(&err);
    assert_string_equal(err.msg, "mod\xc3\xa8le");
    oip_err_utf8(NULL);
}

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
        assert_true(oip_utf8_valid(err->msg, strlen(err->msg)));
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
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_utf8_escape),
        cmocka_unit_test(test_err_utf8),
        cmocka_unit_test(test_binary_framing),
        cmocka_unit_test(test_shape_checked_before_allocation),
        cmocka_unit_test(test_utf8_in_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
