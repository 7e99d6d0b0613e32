/* test_arena.c - the arena allocator and the bounded buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/err.h"

static void test_arena_alignment_and_contents(void **state)
{
    qn_arena *a = qn_arena_new(256);
    assert_non_null(a);
    char *ptrs[1000];
    size_t sizes[1000];
    for (int i = 0; i < 1000; i++) {
        sizes[i] = (size_t)(i * 7 % 300) + 1; /* spans small, block-sized and large */
        ptrs[i] = qn_arena_alloc(a, sizes[i]);
        assert_non_null(ptrs[i]);
        assert_int_equal((uintptr_t)ptrs[i] % 16, 0);
        memset(ptrs[i], i & 0xff, sizes[i]);
    }
    /* Nothing overlapped: every allocation still holds its own byte. */
    for (int i = 0; i < 1000; i++)
        for (size_t j = 0; j < sizes[i]; j++)
            assert_int_equal((unsigned char)ptrs[i][j], i & 0xff);
    qn_arena_free(a);
}

static void test_arena_strings(void **state)
{
    qn_arena *a = qn_arena_new(0);
    char *s = qn_arena_printf(a, "model %s v%d", "churn", 3);
    assert_string_equal(s, "model churn v3");
    assert_string_equal(qn_arena_strdup(a, "abc"), "abc");
    assert_string_equal(qn_arena_strndup(a, "abcdef", 3), "abc");
    assert_string_equal(qn_arena_strndup(a, "ab", 10), "ab");
    char big[20000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char *p = qn_arena_printf(a, "%s!", big);
    assert_int_equal(strlen(p), sizeof big);
    assert_int_equal(p[sizeof big - 1], '!');
    int *z = qn_arena_calloc(a, 1000, sizeof *z);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(z[i], 0);
    assert_null(qn_arena_calloc(a, SIZE_MAX / 2, 4)); /* overflow, not a tiny block */
    assert_null(qn_arena_alloc(a, SIZE_MAX - 4));
    qn_arena_free(a);
    qn_arena_free(NULL);
}

static void test_arena_reset(void **state)
{
    /* Reset keeps the first block: after it, small allocations reuse the same
     * memory. Large ones are freed (ASan/leak checking sees any miss). */
    qn_arena *a = qn_arena_new(1024);
    void *first = qn_arena_alloc(a, 16);
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 100; i++)
            memset(qn_arena_alloc(a, 100), 1, 100);
        memset(qn_arena_alloc(a, 100000), 2, 100000);
        qn_arena_reset(a);
        assert_ptr_equal(qn_arena_alloc(a, 16), first);
    }
    /* A large block right after creation (chained behind the first block). */
    qn_arena_reset(a);
    memset(qn_arena_alloc(a, 5000), 3, 5000);
    qn_arena_reset(a);
    qn_arena_free(a);
}

static void test_buf_bounds(void **state)
{
    qn_buf b;
    qn_buf_init(&b, 10);
    assert_int_equal(qn_buf_append(&b, "", 0), 0);
    assert_non_null(b.data);
    assert_string_equal(b.data, "");
    assert_int_equal(qn_buf_puts(&b, "12345"), 0);
    assert_int_equal(qn_buf_printf(&b, "%d", 678), 0);
    assert_string_equal(b.data, "12345678");
    /* Too big: refused, buffer unchanged. */
    assert_int_equal(qn_buf_puts(&b, "abc"), QN_RESOURCE_EXHAUSTED);
    assert_int_equal(qn_buf_printf(&b, "%s", "abc"), QN_RESOURCE_EXHAUSTED);
    assert_string_equal(b.data, "12345678");
    assert_int_equal(b.len, 8);
    assert_int_equal(qn_buf_puts(&b, "9A"), 0); /* exactly max */
    assert_int_equal(b.len, 10);
    assert_true(b.cap <= 11);
    assert_int_equal(qn_buf_append(&b, "x", 1), QN_RESOURCE_EXHAUSTED);
    qn_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    qn_buf_free(&b);

    /* Growth over many appends, then detach. */
    qn_buf_init(&b, 1 << 20);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(qn_buf_printf(&b, "%04d,", i % 10000), 0);
    assert_int_equal(b.len, 50000);
    assert_memory_equal(b.data + 49995, "9999,", 5);
    size_t len;
    char *d = qn_buf_detach(&b, &len);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_alignment_and_contents),
        cmocka_unit_test(test_arena_strings),
        cmocka_unit_test(test_arena_reset),
        cmocka_unit_test(test_buf_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
