/* test_trace.c - W3C traceparent parsing and formatting (cases as a table,
 * from the spec's rules), child spans, random ids and UUID v4. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "core/trace.h"

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define SID "00f067aa0ba902b7"

static const struct {
    const char *in;
    int ok;
    uint8_t flags;   /* when ok */
    const char *why;
} cases[] = {
    {"00-" TID "-" SID "-01", 1, 0x01, "the spec's example, sampled"},
    {"00-" TID "-" SID "-00", 1, 0x00, "not sampled"},
    {"00-" TID "-" SID "-ff", 1, 0xff, "version 00 keeps every flag bit"},
    {"01-" TID "-" SID "-01", 1, 0x01, "a higher version, exact length"},
    {"cc-" TID "-" SID "-01-what-the-future-will-be-like", 1, 0x01,
     "a higher version may append fields after a dash"},
    {"cc-" TID "-" SID "-03", 1, 0x01, "a higher version keeps only the sampled bit"},
    {"ff-" TID "-" SID "-01", 0, 0, "version ff is invalid"},
    {"00-" TID "-" SID "-01-extra", 0, 0, "version 00 must be exactly 55 chars"},
    {"00-" TID "-" SID "-01 ", 0, 0, "trailing space on version 00"},
    {"cc-" TID "-" SID "-01.extra", 0, 0, "a higher version needs '-' after the flags"},
    {"00-00000000000000000000000000000000-" SID "-01", 0, 0, "all-zero trace id"},
    {"00-" TID "-0000000000000000-01", 0, 0, "all-zero parent id"},
    {"00-4BF92F3577B34DA6A3CE929D0E0E4736-" SID "-01", 0, 0, "upper-case trace id"},
    {"00-" TID "-00F067AA0BA902B7-01", 0, 0, "upper-case parent id"},
    {"0A-" TID "-" SID "-01", 0, 0, "upper-case version"},
    {"00-" TID "-" SID "-0A", 0, 0, "upper-case flags"},
    {"00-" TID "-" SID "-0g", 0, 0, "non-hex flags"},
    {"00-4bf92f3577b34da6a3ce929d0e0e473-" SID "-01", 0, 0, "trace id one char short"},
    {"00-" TID "-00f067aa0ba902b-01", 0, 0, "parent id one char short"},
    {"00_" TID "-" SID "-01", 0, 0, "wrong separator after version"},
    {"00-" TID "_" SID "-01", 0, 0, "wrong separator after trace id"},
    {"00-" TID "-" SID "_01", 0, 0, "wrong separator before flags"},
    {"00-" TID "-" SID "-1", 0, 0, "flags one char"},
    {"0-" TID "-" SID "-01", 0, 0, "version one char"},
    {"00-" TID "-" SID, 0, 0, "no flags"},
    {"", 0, 0, "empty"},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n", 0, 0, "trailing newline"},
    {" 00-" TID "-" SID "-01", 0, 0, "leading space"},
    {"00-" TID "-" SID "-0\x00", 0, 0, "embedded NUL"},
    {"xy-" TID "-" SID "-01", 0, 0, "non-hex version"},
};

static void test_parse_table(void **state)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        qn_trace_ctx c;
        memset(&c, 0xaa, sizeof c);
        int rc = qn_traceparent_parse(cases[i].in, &c);
        if ((rc == 0) != cases[i].ok)
            fail_msg("case %zu (%s): \"%s\" gave %d", i, cases[i].why, cases[i].in, rc);
        if (!cases[i].ok) {
            assert_int_equal(rc, -3); /* QN_INVALID_ARGUMENT */
            continue;
        }
        assert_int_equal(c.flags, cases[i].flags);
        char hex[QN_TRACE_ID_HEX + 1];
        qn_trace_id_hex(&c, hex);
        assert_string_equal(hex, TID);
        static const uint8_t sid[8] = {0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7};
        assert_memory_equal(c.span_id, sid, 8);
        static const uint8_t zero[8] = {0};
        assert_memory_equal(c.parent_span_id, zero, 8);
    }
    assert_int_equal(qn_traceparent_parse(NULL, NULL), -3);
}

static void test_format_round_trip(void **state)
{
    qn_trace_ctx c;
    const char *in = "00-" TID "-" SID "-01";
    assert_int_equal(qn_traceparent_parse(in, &c), 0);
    char out[QN_TRACEPARENT_LEN + 1];
    qn_traceparent_format(&c, out);
    assert_string_equal(out, in);
    /* A higher version is re-emitted as version 00. */
    assert_int_equal(qn_traceparent_parse("cc-" TID "-" SID "-01-more", &c), 0);
    qn_traceparent_format(&c, out);
    assert_string_equal(out, in);
}

static void test_new_and_child(void **state)
{
    qn_trace_ctx a, b, child;
    qn_trace_new(&a);
    qn_trace_new(&b);
    assert_memory_not_equal(a.trace_id, b.trace_id, 16);
    assert_int_equal(a.flags, 1);
    char tp[QN_TRACEPARENT_LEN + 1];
    qn_traceparent_format(&a, tp);
    assert_int_equal(strlen(tp), QN_TRACEPARENT_LEN);
    qn_trace_ctx back;
    assert_int_equal(qn_traceparent_parse(tp, &back), 0); /* what we make, we accept */
    assert_memory_equal(back.trace_id, a.trace_id, 16);

    qn_trace_child(&a, &child);
    assert_memory_equal(child.trace_id, a.trace_id, 16);
    assert_memory_equal(child.parent_span_id, a.span_id, 8);
    assert_memory_not_equal(child.span_id, a.span_id, 8);
    assert_int_equal(child.flags, a.flags);
    /* In place: parent and out the same object. */
    uint8_t old_span[8];
    memcpy(old_span, a.span_id, 8);
    qn_trace_child(&a, &a);
    assert_memory_equal(a.parent_span_id, old_span, 8);
    assert_memory_not_equal(a.span_id, old_span, 8);
}

static void test_uuid4(void **state)
{
    char seen[64][QN_UUID_LEN + 1];
    for (int i = 0; i < 64; i++) {
        char *u = seen[i];
        qn_uuid4(u);
        assert_int_equal(strlen(u), 36);
        for (int k = 0; k < 36; k++) {
            if (k == 8 || k == 13 || k == 18 || k == 23)
                assert_int_equal(u[k], '-');
            else
                assert_non_null(strchr("0123456789abcdef", u[k]));
        }
        assert_int_equal(u[14], '4');                 /* version */
        assert_non_null(strchr("89ab", u[19]));       /* RFC 4122 variant */
        for (int j = 0; j < i; j++)
            assert_string_not_equal(u, seen[j]);
    }
}

static void test_random_bytes(void **state)
{
    /* 64 KiB of random bytes: every byte value appears, and the mean is near
     * 127.5 (std of the mean ~0.29; 3 is > 10 sigma). */
    static uint8_t buf[65536];
    qn_random_bytes(buf, sizeof buf);
    int hist[256] = {0};
    double sum = 0;
    for (size_t i = 0; i < sizeof buf; i++) {
        hist[buf[i]]++;
        sum += buf[i];
    }
    for (int v = 0; v < 256; v++)
        assert_true(hist[v] > 0);
    double mean = sum / sizeof buf;
    assert_true(mean > 124.5 && mean < 130.5);
    qn_random_bytes(buf, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_format_round_trip),
        cmocka_unit_test(test_new_and_child),
        cmocka_unit_test(test_uuid4),
        cmocka_unit_test(test_random_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
