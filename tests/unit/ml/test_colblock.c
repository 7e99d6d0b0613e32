/* test_colblock.c - canonical rows into column blocks and back: byte-exact
 * round trips (records.h's own canonical texts, varied keys, escapes,
 * nesting), cell widths, slices, limits, refused rows leaving the block as
 * it was, and a view that refuses every cut or damaged block. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ml/colblock.h"
#include "ml/records.h"

/* The canonical rows records.h makes of an NDJSON body. */
static void canonical(const char *ndjson, qml_rec_batch *b)
{
    qml_rec_opts o;
    qml_rec_opts_init(&o);
    qml_rec_batch_init(b);
    qn_err err;
    if (qml_rec_parse(ndjson, strlen(ndjson), QML_REC_NDJSON, NULL, &o, b, &err) < 0)
        fail_msg("records: %s", err.msg);
    assert_int_equal(b->nbad, 0);
}

static void add_all(qml_colblock_builder *cb, const qml_rec_batch *b, size_t from, size_t to)
{
    qn_err err;
    for (size_t i = from; i < to; i++)
        if (qml_colblock_add(cb, b->text + b->off[i], b->off[i + 1] - b->off[i], &err) < 0)
            fail_msg("add row %zu: %s", i, err.msg);
}

/* Every row of the view renders as row first + r of b. */
static void assert_rows(const qml_colblock *v, const qml_rec_batch *b, size_t first)
{
    qn_buf t;
    qn_buf_init(&t, 1u << 20);
    for (uint32_t r = 0; r < v->nrows; r++) {
        qn_buf_reset(&t);
        assert_int_equal(qml_colblock_render(v, r, &t), 0);
        size_t n = b->off[first + r + 1] - b->off[first + r];
        if (t.len != n || memcmp(t.data, b->text + b->off[first + r], n) != 0)
            fail_msg("row %u: rendered %.*s, stored %.*s", r, (int)t.len, t.data, (int)n, b->text + b->off[first + r]);
    }
    qn_buf_free(&t);
}

static const char *varied =
    "{\"b\":1,\"a\":\"x\"}\n"
    "{\"a\":\"x\",\"c\":null,\"d\":true,\"e\":false}\n"
    "{}\n"
    "{\"Customer ID\":\"17850\",\"CO(GT)\":-200,\"caf\\u00e9\":\"cr\\u00e8me \\\"br\\u00fbl\\u00e9e\\\"\"}\n"
    "{\"a\":\"tab\\there\\nline\\u0001\\\\\",\"b\":1.5e300,\"n\":{\"z\":[1,{\"y\":\"}\"}],\"a\":\"]\"}}\n"
    "{\"a\":\"x\",\"b\":-0.0001,\"arr\":[[],{},\"[\",\"\\\"\"]}\n"
    "{\"b\":1,\"a\":\"x\"}\n"
    "{\"b\":12345678901234567,\"a\":\"\"}\n";

static void test_round_trip(void **state)
{
    (void)state;
    qml_rec_batch b;
    canonical(varied, &b);
    qml_colblock_builder *cb = qml_colblock_builder_new();
    assert_non_null(cb);
    add_all(cb, &b, 0, b.nrows);
    assert_int_equal(qml_colblock_rows(cb), b.nrows);
    qn_buf out;
    qn_buf_init(&out, 1u << 20);
    qn_err err;
    assert_int_equal(qml_colblock_finish(cb, &out, &err), 0);
    assert_int_equal(qml_colblock_rows(cb), 0);
    /* Empty builder: nothing appended. */
    size_t len = out.len;
    assert_int_equal(qml_colblock_finish(cb, &out, &err), 0);
    assert_int_equal(out.len, len);

    qml_colblock v;
    size_t used;
    assert_int_equal(qml_colblock_view(out.data, out.len, &v, &used, &err), 0);
    assert_int_equal(used, out.len);
    assert_int_equal(v.nrows, b.nrows);
    /* Columns in name order; a repeated value is kept once. */
    for (uint32_t i = 1; i < v.ncols; i++)
        assert_true(strncmp(v.cols[i - 1].key, v.cols[i].key, 1) <= 0);
    assert_memory_equal(v.cols[0].key, "\"CO(GT)\"", 8);
    for (uint32_t i = 0; i < v.ncols; i++)
        if (v.cols[i].keylen == 3 && !memcmp(v.cols[i].key, "\"a\"", 3))
            assert_int_equal(v.cols[i].nvalues, 3); /* "x", the tab one, "" */
    assert_rows(&v, &b, 0);
    qml_colblock_view_free(&v);
    qn_buf_free(&out);
    qml_colblock_builder_free(cb);
    qml_rec_batch_free(&b);
}

/* Blocks concatenate; a slice is a block of those rows; widths follow the
 * dictionary's size. */
static void test_pages_slices_widths(void **state)
{
    (void)state;
    const uint32_t n = 70000; /* more than one block, more than 65535 values */
    qn_buf body;
    qn_buf_init(&body, 64u << 20);
    for (uint32_t i = 0; i < n; i++)
        qn_buf_printf(&body, "{\"id\":%u,\"k\":\"v%u\",\"s\":\"%s\"}\n", i, i % 300, i % 7 ? "same" : "other");
    assert_int_equal(qn_buf_error(&body), 0);
    qml_rec_batch b;
    qml_rec_opts o;
    qml_rec_opts_init(&o);
    o.max_rows = n;
    qml_rec_batch_init(&b);
    qn_err err;
    assert_int_equal(qml_rec_parse(body.data, body.len, QML_REC_NDJSON, NULL, &o, &b, &err), 0);
    qn_buf_free(&body);

    qml_colblock_builder *cb = qml_colblock_builder_new();
    qn_buf page;
    qn_buf_init(&page, 64u << 20);
    add_all(cb, &b, 0, QML_COLBLOCK_MAX_ROWS);
    /* Full: the next row is refused, the block unchanged. */
    assert_int_equal(qml_colblock_add(cb, b.text + b.off[0], b.off[1] - b.off[0], &err), QN_OUT_OF_RANGE);
    assert_int_equal(qml_colblock_finish(cb, &page, &err), 0);
    size_t first_len = page.len;
    add_all(cb, &b, QML_COLBLOCK_MAX_ROWS, n);
    assert_int_equal(qml_colblock_finish(cb, &page, &err), 0);

    qml_colblock v1, v2;
    size_t u1, u2;
    assert_int_equal(qml_colblock_view(page.data, page.len, &v1, &u1, &err), 0);
    assert_int_equal(u1, first_len);
    assert_int_equal(qml_colblock_view(page.data + u1, page.len - u1, &v2, &u2, &err), 0);
    assert_int_equal(u1 + u2, page.len);
    assert_int_equal(v1.nrows, QML_COLBLOCK_MAX_ROWS);
    assert_int_equal(v2.nrows, n - QML_COLBLOCK_MAX_ROWS);
    /* id: 65536 distinct values -> 4 bytes; k: 300 -> 2; s: 2 -> 1. */
    assert_int_equal(v1.cols[0].width, 4);
    assert_int_equal(v1.cols[1].width, 2);
    assert_int_equal(v1.cols[2].width, 1);
    assert_int_equal(v2.cols[0].width, 2); /* 4464 ids */
    assert_rows(&v1, &b, 0);
    assert_rows(&v2, &b, QML_COLBLOCK_MAX_ROWS);

    qn_buf s;
    qn_buf_init(&s, 64u << 20);
    assert_int_equal(qml_colblock_slice(&v1, 100, 65000, &s), 0);
    qml_colblock vs;
    size_t us;
    assert_int_equal(qml_colblock_view(s.data, s.len, &vs, &us, &err), 0);
    assert_int_equal(us, s.len);
    assert_int_equal(vs.nrows, 64900);
    assert_rows(&vs, &b, 100);
    qml_colblock_view_free(&vs);
    qn_buf_reset(&s);
    assert_int_equal(qml_colblock_slice(&v2, 4463, 4464, &s), 0);
    assert_int_equal(qml_colblock_view(s.data, s.len, &vs, &us, &err), 0);
    assert_int_equal(vs.nrows, 1);
    assert_rows(&vs, &b, n - 1);
    qml_colblock_view_free(&vs);

    qn_buf_free(&s);
    qml_colblock_view_free(&v1);
    qml_colblock_view_free(&v2);
    qn_buf_free(&page);
    qml_colblock_builder_free(cb);
    qml_rec_batch_free(&b);
}

/* A row that is not canonical is refused and leaves the block as it was:
 * no column it brought, no value, no cell. */
static void test_refused_rows_leave_block(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "[1]",
        "{\"a\":1",
        "{\"a\"1}",
        "{\"a\":}",
        "{\"a\":\"open}",
        "{\"a\":1}x",
        "{\"new\":1,\"b\":2}",          /* keys out of order */
        "{\"a\":1,\"a\":2}",            /* a key twice */
        "{\"zz\":{\"x\":[1,2}",         /* nesting never closed */
        "{a:1}",
    };
    qml_colblock_builder *cb = qml_colblock_builder_new();
    qn_err err;
    const char *good = "{\"a\":1,\"b\":\"x\"}";
    assert_int_equal(qml_colblock_add(cb, good, strlen(good), &err), 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = qml_colblock_add(cb, bad[i], strlen(bad[i]), &err);
        if (rc != QN_INTERNAL)
            fail_msg("%s: %d (%s)", bad[i], rc, err.msg);
    }
    assert_int_equal(qml_colblock_rows(cb), 1);
    assert_int_equal(qml_colblock_add(cb, good, strlen(good), &err), 0);
    qn_buf out;
    qn_buf_init(&out, 1u << 20);
    assert_int_equal(qml_colblock_finish(cb, &out, &err), 0);
    qml_colblock v;
    size_t used;
    assert_int_equal(qml_colblock_view(out.data, out.len, &v, &used, &err), 0);
    assert_int_equal(v.nrows, 2);
    assert_int_equal(v.ncols, 2); /* neither "new" nor "zz" */
    assert_int_equal(v.cols[0].nvalues, 1);
    qn_buf t;
    qn_buf_init(&t, 1024);
    assert_int_equal(qml_colblock_render(&v, 1, &t), 0);
    assert_string_equal(t.data, good);
    qn_buf_free(&t);
    qml_colblock_view_free(&v);
    qn_buf_free(&out);
    qml_colblock_builder_free(cb);
}

/* Every cut of a good page is refused, and so is every damaged header
 * field; a flipped byte anywhere is refused or views within bounds. */
static void test_view_refuses_damage(void **state)
{
    (void)state;
    qml_rec_batch b;
    canonical(varied, &b);
    qml_colblock_builder *cb = qml_colblock_builder_new();
    add_all(cb, &b, 0, b.nrows);
    qn_buf out;
    qn_buf_init(&out, 1u << 20);
    qn_err err;
    assert_int_equal(qml_colblock_finish(cb, &out, &err), 0);
    qml_colblock v;
    size_t used;
    for (size_t n = 0; n < out.len; n++) {
        int rc = qml_colblock_view(out.data, n, &v, &used, &err);
        if (rc != QN_INVALID_ARGUMENT)
            fail_msg("a block cut to %zu of %zu bytes: %d", n, out.len, rc);
        assert_null(v.cols);
    }
    char *copy = malloc(out.len);
    static const struct {
        size_t at;
        unsigned char byte;
    } hits[] = {{0, 'X'}, {3, '2'}, {4, 0}, {7, 0x80}, {11, 0x10}};
    for (size_t i = 0; i < sizeof hits / sizeof hits[0]; i++) {
        memcpy(copy, out.data, out.len);
        copy[hits[i].at] = (char)hits[i].byte;
        assert_int_equal(qml_colblock_view(copy, out.len, &v, &used, &err), QN_INVALID_ARGUMENT);
    }
    qn_buf t;
    qn_buf_init(&t, 1u << 20);
    for (size_t at = 0; at < out.len; at++)
        for (int bit = 0; bit < 8; bit++) {
            memcpy(copy, out.data, out.len);
            copy[at] ^= (char)(1 << bit);
            if (qml_colblock_view(copy, out.len, &v, &used, &err) < 0)
                continue;
            assert_true(used <= out.len);
            for (uint32_t r = 0; r < v.nrows; r++) {
                qn_buf_reset(&t);
                assert_int_equal(qml_colblock_render(&v, r, &t), 0);
            }
            qml_colblock_view_free(&v);
        }
    qn_buf_free(&t);
    free(copy);
    qn_buf_free(&out);
    qml_colblock_builder_free(cb);
    qml_rec_batch_free(&b);
}

/* Sparse rows (each a key of its own) end a block at the cell bound, not at
 * gigabytes of empty cells; every block still renders its rows. */
static void test_sparse_rows_bounded(void **state)
{
    (void)state;
    qml_colblock_builder *cb = qml_colblock_builder_new();
    qn_buf page;
    qn_buf_init(&page, 1u << 28);
    qn_err err;
    char row[64];
    uint32_t blocks = 0, rows_in_block = 0;
    for (uint32_t i = 0; i < 10000; i++) {
        int n = snprintf(row, sizeof row, "{\"k%u\":%u}", i % 4000, i);
        int rc = qml_colblock_add(cb, row, (size_t)n, &err);
        if (rc == QN_OUT_OF_RANGE) {
            assert_true((uint64_t)(rows_in_block + 1) * (rows_in_block < 4000 ? rows_in_block + 1 : 4000) >
                        QML_COLBLOCK_MAX_CELLS);
            assert_int_equal(qml_colblock_finish(cb, &page, &err), 0);
            blocks++;
            rows_in_block = 0;
            rc = qml_colblock_add(cb, row, (size_t)n, &err);
        }
        assert_int_equal(rc, 0);
        rows_in_block++;
    }
    assert_int_equal(qml_colblock_finish(cb, &page, &err), 0);
    assert_true(blocks >= 3);
    assert_true(page.len < 64u << 20);
    uint32_t seen = 0;
    qn_buf t;
    qn_buf_init(&t, 1024);
    for (size_t at = 0; at < page.len;) {
        qml_colblock v;
        size_t used;
        assert_int_equal(qml_colblock_view(page.data + at, page.len - at, &v, &used, &err), 0);
        assert_true((uint64_t)v.nrows * v.ncols <= QML_COLBLOCK_MAX_CELLS);
        for (uint32_t r = 0; r < v.nrows; r++, seen++) {
            qn_buf_reset(&t);
            assert_int_equal(qml_colblock_render(&v, r, &t), 0);
            int n = snprintf(row, sizeof row, "{\"k%u\":%u}", seen % 4000, seen);
            assert_int_equal(t.len, (size_t)n);
            assert_memory_equal(t.data, row, t.len);
        }
        qml_colblock_view_free(&v);
        at += used;
    }
    assert_int_equal(seen, 10000);
    qn_buf_free(&t);
    qn_buf_free(&page);
    qml_colblock_builder_free(cb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_pages_slices_widths),
        cmocka_unit_test(test_refused_rows_leave_block),
        cmocka_unit_test(test_view_refuses_damage),
        cmocka_unit_test(test_sparse_rows_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
