/* test_ndjson_blocks.c - the NDJSON reader over column blocks against the
 * same reader over the same rows as lines: random rows of every JSON shape
 * (and values that do not fit their column), schemas given and inferred,
 * small samples, frames cut in the middle of blocks. Frames (cells,
 * dictionaries in order) and reports must be identical; damaged pages are
 * refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ml/colblock.h"
#include "ml/ndjson.h"
#include "ml/records.h"

static uint64_t rng = 42;

static uint32_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static const char *const keys[] = {"user", "n", "t", "b", "Customer ID", "x", "caf\\u00e9"};
static const char *const values[] = {
    "\"u1\"", "\"u2\"", "\"\"", "\"12346\"", "12346", "1.5", "-0", "0.1", "1e300", "123456789012345678901",
    "12345678901234567", "true", "false", "null", "\"yes\"", "\"2011-01-02 10:00:00\"", "\"2011-01-03\"",
    "1293926400", "\"x\\ty\\u0001\\\"\"", "\"cr\\u00e8me\"", "{\"b\":1,\"a\":[2,\"]\"]}", "[]", "[1,{\"z\":null}]",
    "\"17850\"", "\"  \"", "-200", "\"-200\"", "\"NaN\"", "3.25",
};
#define NKEYS (sizeof keys / sizeof keys[0])
#define NVALUES (sizeof values / sizeof values[0])

/* n random rows as NDJSON. */
static char *random_rows(size_t n)
{
    qn_buf b;
    qn_buf_init(&b, 1u << 26);
    for (size_t r = 0; r < n; r++) {
        qn_buf_append(&b, "{", 1);
        int first = 1;
        for (size_t k = 0; k < NKEYS; k++) {
            if (next_rand() % 4 == 0)
                continue;
            /* Most columns keep to a few values, as real data does. */
            size_t v = next_rand() % 8 == 0 ? next_rand() % NVALUES : (k * 3 + next_rand() % 3) % NVALUES;
            qn_buf_printf(&b, "%s\"%s\":%s", first ? "" : ",", keys[k], values[v]);
            first = 0;
        }
        qn_buf_append(&b, "}\n", 2);
    }
    assert_int_equal(qn_buf_error(&b), 0);
    size_t len;
    return qn_buf_detach(&b, &len);
}

/* The canonical rows of body, as NDJSON and as pages of blocks of at most
 * per_block rows, blocks_per_page blocks a page. */
typedef struct source {
    char *lines;
    size_t len;
    qn_buf pages[512];
    size_t npages, next;
} source;

static void make_source(const char *body, uint32_t per_block, size_t blocks_per_page, source *s)
{
    qml_rec_opts o;
    qml_rec_opts_init(&o);
    qml_rec_batch b;
    qml_rec_batch_init(&b);
    qn_err err;
    assert_int_equal(qml_rec_parse(body, strlen(body), QML_REC_NDJSON, NULL, &o, &b, &err), 0);
    memset(s, 0, sizeof *s);
    qn_buf l;
    qn_buf_init(&l, 1u << 26);
    qml_colblock_builder *cb = qml_colblock_builder_new();
    size_t blocks = 0;
    for (size_t i = 0; i < b.nrows; i++) {
        const char *t = b.text + b.off[i];
        size_t n = b.off[i + 1] - b.off[i];
        qn_buf_append(&l, t, n);
        qn_buf_append(&l, "\n", 1);
        assert_int_equal(qml_colblock_add(cb, t, n, &err), 0);
        if (qml_colblock_rows(cb) == per_block || i + 1 == b.nrows) {
            if (blocks % blocks_per_page == 0) {
                assert_true(s->npages < 512);
                qn_buf_init(&s->pages[s->npages++], 1u << 26);
            }
            assert_int_equal(qml_colblock_finish(cb, &s->pages[s->npages - 1], &err), 0);
            blocks++;
        }
    }
    qml_colblock_builder_free(cb);
    qml_rec_batch_free(&b);
    s->lines = qn_buf_detach(&l, &s->len);
}

static void free_source(source *s)
{
    free(s->lines);
    for (size_t i = 0; i < s->npages; i++)
        qn_buf_free(&s->pages[i]);
}

static int next_page(void *ud, const char **data, size_t *len)
{
    source *s = ud;
    if (s->next == s->npages)
        return 0;
    *data = s->pages[s->next].data;
    *len = s->pages[s->next].len;
    s->next++;
    return 1;
}

/* A frame and the report so far as text: columns, every cell, every
 * dictionary in code order. */
static void describe(qn_buf *o, const qml_frame *f)
{
    for (size_t i = 0; i < qml_frame_ncols(f); i++) {
        const qml_column *c = qml_frame_col(f, i);
        qn_buf_printf(o, "[%s:%d]", c->name, (int)c->type);
        for (size_t r = 0; r < c->len; r++) {
            if (c->missing[r])
                qn_buf_puts(o, " -");
            else if (c->type == QML_CATEGORICAL)
                qn_buf_printf(o, " %d", c->cat[r]);
            else
                qn_buf_printf(o, " %.17g", c->num[r]);
        }
        if (c->dict)
            for (size_t k = 0; k < qml_dict_size(c->dict); k++)
                qn_buf_printf(o, " <%s>", qml_dict_str(c->dict, (int32_t)k));
        qn_buf_puts(o, "\n");
    }
}

static void describe_report(qn_buf *o, const qml_read_report *r)
{
    qn_buf_printf(o, "read %llu ok %llu bad %llu unknown %llu\n", (unsigned long long)r->rows_read,
                  (unsigned long long)r->rows_ok, (unsigned long long)r->rows_bad,
                  (unsigned long long)r->unknown_keys);
    for (int k = 0; k < QML_BAD__COUNT; k++)
        qn_buf_printf(o, "reason %d: %llu\n", k, (unsigned long long)r->by_reason[k]);
    for (size_t i = 0; i < r->n_first_bad; i++)
        qn_buf_printf(o, "line %llu (%d) %s\n", (unsigned long long)r->first_bad[i].line, r->first_bad[i].reason,
                      r->first_bad[i].msg);
}

/* Everything a reader gives, in chunks of max_rows rows. */
static void read_everything(qml_ndjson_reader *r, size_t max_rows, qn_buf *o)
{
    assert_non_null(r);
    qml_frame *f;
    qn_err err;
    int k;
    while ((k = qml_ndjson_next(r, max_rows, &f, &err)) > 0) {
        describe(o, f);
        qn_buf_puts(o, "--\n");
        qml_frame_free(f);
    }
    if (k < 0)
        fail_msg("read: %s", err.msg);
    describe_report(o, qml_ndjson_report(r));
    qml_ndjson_close(r);
}

static void test_blocks_read_as_lines(void **state)
{
    (void)state;
    static const qml_field_spec typed[] = {{"user", QML_CATEGORICAL}, {"n", QML_NUMERIC},
                                           {"t", QML_TIMESTAMP}, {"b", QML_BOOLEAN}};
    char *body = random_rows(3000);
    static const struct {
        uint32_t per_block;
        size_t per_page, infer_rows, max_rows;
        int fields, fields_only;
    } cases[] = {
        {1000, 2, 1000, SIZE_MAX, 0, 0}, /* inferred; the sample spans a block */
        {7, 5, 3, SIZE_MAX, 0, 0},       /* a tiny sample, tiny blocks */
        {64, 3, 10, 25, 1, 0},           /* typed: values that do not fit; frames cut blocks */
        {64, 3, 10, 25, 1, 1},           /* other keys counted, not read */
        {3000, 1, 1, 1000, 1, 1},        /* one block, frames of 1000 */
        {500, 1, 0, 17, 0, 0},           /* infer_rows 0 means 1 */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        source s;
        make_source(body, cases[c].per_block, cases[c].per_page, &s);
        qml_ndjson_opts o;
        qml_ndjson_opts_init(&o);
        o.infer_rows = cases[c].infer_rows;
        if (cases[c].fields) {
            o.fields = typed;
            o.n_fields = 4;
            o.fields_only = cases[c].fields_only;
        }
        qn_buf want, got;
        qn_buf_init(&want, 1u << 26);
        qn_buf_init(&got, 1u << 26);
        qn_err err;
        read_everything(qml_ndjson_open_mem(s.lines, s.len, &o, &err), cases[c].max_rows, &want);
        read_everything(qml_ndjson_open_blocks(next_page, &s, &o, &err), cases[c].max_rows, &got);
        assert_int_equal(qn_buf_error(&want), 0);
        assert_int_equal(qn_buf_error(&got), 0);
        if (want.len != got.len || memcmp(want.data, got.data, want.len) != 0) {
            size_t at = 0;
            while (at < want.len && at < got.len && want.data[at] == got.data[at])
                at++;
            fail_msg("case %zu differs at byte %zu: lines give ...%.120s..., blocks ...%.120s...", c, at,
                     want.data + (at > 40 ? at - 40 : 0), got.data + (at > 40 ? at - 40 : 0));
        }
        /* The typed cases do meet bad rows and unknown keys. */
        if (cases[c].fields)
            assert_non_null(strstr(want.data, "does not fit"));
        qn_buf_free(&want);
        qn_buf_free(&got);
        free_source(&s);
    }
    free(body);
}

/* A page cut inside a block, or damaged, fails the read with a clear
 * error; an empty source is an empty read. */
static void test_bad_pages(void **state)
{
    (void)state;
    char *body = random_rows(50);
    source s;
    make_source(body, 20, 3, &s);
    qml_ndjson_opts o;
    qml_ndjson_opts_init(&o);
    qn_err err;
    qml_frame *f;
    qml_read_report rep;
    s.pages[0].len -= 5;
    assert_int_equal(qml_ndjson_read_all_blocks(next_page, &s, &o, &f, &rep, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "column block"));
    s.pages[0].len += 5;
    s.next = 0;
    s.pages[0].data[0] = 'X';
    assert_int_equal(qml_ndjson_read_all_blocks(next_page, &s, &o, &f, &rep, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "magic"));
    free_source(&s);
    free(body);

    memset(&s, 0, sizeof s);
    assert_int_equal(qml_ndjson_read_all_blocks(next_page, &s, &o, &f, &rep, &err), 0);
    assert_int_equal(qml_frame_nrows(f), 0);
    assert_int_equal(rep.rows_read, 0);
    qml_frame_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks_read_as_lines),
        cmocka_unit_test(test_bad_pages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
