/* test_arena.c - the arena allocator (the bounded buffer: test_buf.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_alignment_and_contents),
        cmocka_unit_test(test_arena_strings),
        cmocka_unit_test(test_arena_reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
