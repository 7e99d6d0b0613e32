/* test_csvout.c - prep's CSV writer (src/prep/csvout.c) against a plain one
 * written here from its contract (RFC 4180: a header, CRLF, a field quoted
 * only when it holds a comma, quote, CR or LF, quotes doubled, a missing cell
 * empty; numbers shortest, timestamps "YYYY-MM-DD HH:MM:SS", booleans
 * true/false): the same bytes, and the SHA-256 it reports is the one of those
 * bytes. Random frames exercise the row fast path (room for the longest row,
 * no check per cell), the checked path (a dictionary string larger than the
 * flush size makes every row take it), flushes across rows, the number cache
 * (many distinct values), quoted strings, missing cells and codes the
 * dictionary lacks (written empty). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/digest.h"
#include "ml/schema.h"
#include "prep/prep.h"

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return n ? (uint32_t)((rng_state >> 33) % n) : 0;
}

static void ref_field(qn_buf *b, const char *s, size_t n)
{
    int quote = 0;
    for (size_t i = 0; i < n; i++)
        quote |= s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n';
    if (!quote) {
        qn_buf_append(b, s, n);
        return;
    }
    qn_buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"')
            qn_buf_append(b, "\"", 1);
        qn_buf_append(b, &s[i], 1);
    }
    qn_buf_append(b, "\"", 1);
}

/* The plain writer: cell by cell. */
static void ref_csv(const qml_frame *f, qn_buf *b)
{
    size_t nc = qml_frame_ncols(f);
    for (size_t j = 0; j < nc; j++) {
        if (j)
            qn_buf_append(b, ",", 1);
        ref_field(b, qml_frame_col(f, j)->name, strlen(qml_frame_col(f, j)->name));
    }
    qn_buf_append(b, "\r\n", 2);
    for (size_t r = 0; r < qml_frame_nrows(f); r++) {
        for (size_t j = 0; j < nc; j++) {
            const qml_column *c = qml_frame_col(f, j);
            char tb[64];
            if (j)
                qn_buf_append(b, ",", 1);
            if (c->missing[r])
                continue;
            if (c->type == QML_CATEGORICAL) {
                const char *s = qml_dict_str(c->dict, c->cat[r]);
                if (s)
                    ref_field(b, s, strlen(s));
            } else if (c->type == QML_BOOLEAN) {
                qn_buf_puts(b, c->num[r] != 0 ? "true" : "false");
            } else {
                int n = c->type == QML_TIMESTAMP ? qml_format_timestamp(c->num[r], tb, sizeof tb)
                                                 : qml_format_number(c->num[r], tb, sizeof tb);
                qn_buf_append(b, tb, (size_t)n);
            }
        }
        qn_buf_append(b, "\r\n", 2);
    }
}

static qml_frame *random_frame(size_t n, int huge)
{
    qn_err err;
    qml_frame *f = qml_frame_new();
    assert_true(qml_frame_add_column(f, "id", QML_CATEGORICAL, &err) >= 0);
    assert_true(qml_frame_add_column(f, "text, quoted \"name\"", QML_CATEGORICAL, &err) >= 0);
    assert_true(qml_frame_add_column(f, "qty", QML_NUMERIC, &err) >= 0);
    assert_true(qml_frame_add_column(f, "at", QML_TIMESTAMP, &err) >= 0);
    assert_true(qml_frame_add_column(f, "ok", QML_BOOLEAN, &err) >= 0);
    assert_true(qml_frame_add_column(f, "empty", QML_CATEGORICAL, &err) >= 0);
    static const char *const texts[] = {"plain", "a,b", "say \"hi\"", "line\r\nbreak", "", "\"", "lf\n",
                                        "é ü", ",,,"};
    qml_column *t = qml_frame_col(f, 1);
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++)
        assert_true(qml_dict_intern(t->dict, texts[k], strlen(texts[k])) >= 0);
    if (huge) { /* longer than the writer's flush size: no row bound */
        size_t len = 300 * 1024;
        char *s = malloc(len + 1);
        for (size_t i = 0; i < len; i++)
            s[i] = i % 97 == 0 ? '"' : (char)('a' + i % 26);
        s[len] = '\0';
        assert_true(qml_dict_intern(t->dict, s, len) >= 0);
        free(s);
    }
    size_t nt = qml_dict_size(t->dict);
    for (size_t r = 0; r < n; r++) {
        char id[32];
        snprintf(id, sizeof id, "%u", 10000 + rnd(500));
        qml_col_push_str(qml_frame_col(f, 0), id, strlen(id));
        if (rnd(10) == 0)
            qml_col_push_missing(t);
        else
            qml_col_push_code(t, (int32_t)rnd((uint32_t)(huge && rnd(50) ? nt - 1 : nt)));
        if (rnd(8) == 0)
            qml_col_push_missing(qml_frame_col(f, 2));
        else /* many distinct values: the number cache misses and collides */
            qml_col_push_num(qml_frame_col(f, 2), rnd(3) ? (double)rnd(2000) / 100 : (double)rnd(1u << 30) * 1e-3);
        if (rnd(8) == 0)
            qml_col_push_missing(qml_frame_col(f, 3));
        else
            qml_col_push_num(qml_frame_col(f, 3), 1291191960.0 + 60.0 * rnd(100000));
        if (rnd(8) == 0)
            qml_col_push_missing(qml_frame_col(f, 4));
        else
            qml_col_push_num(qml_frame_col(f, 4), rnd(2));
        qml_col_push_missing(qml_frame_col(f, 5));
        assert_int_equal(qml_frame_end_row(f), 0);
    }
    /* Codes the dictionary lacks, on cells not flagged missing. */
    for (size_t r = 0; r < n; r++)
        if (rnd(40) == 0 && !t->missing[r])
            t->cat[r] = rnd(2) ? -1 : (int32_t)(nt + rnd(3));
    return f;
}

static void check_frame(qml_frame *f, const char *what)
{
    qn_buf want;
    qn_buf_init(&want, (size_t)1 << 30);
    ref_csv(f, &want);
    assert_int_equal(qn_buf_error(&want), 0);

    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    char hex[QN_SHA256_HEX + 1], want_hex[QN_SHA256_HEX + 1];
    uint64_t bytes = 0;
    qn_err err;
    if (prep_csv_write(f, tmp, hex, &bytes, &err) < 0)
        fail_msg("%s: %s", what, err.msg);
    assert_int_equal(bytes, want.len);
    fflush(tmp);
    rewind(tmp);
    char *got = malloc(want.len + 1);
    assert_int_equal(fread(got, 1, want.len + 1, tmp), want.len);
    for (size_t i = 0; i < want.len; i++)
        if (got[i] != want.data[i])
            fail_msg("%s: byte %zu differs: %.40s against %.40s", what, i, got + i, want.data + i);
    qn_sha256 *h = qn_sha256_new();
    qn_sha256_update(h, want.data, want.len);
    qn_sha256_final(h, want_hex);
    qn_sha256_free(h);
    assert_string_equal(hex, want_hex);
    free(got);
    fclose(tmp);
    qn_buf_free(&want);
}

static void test_fast_path_against_plain(void **state)
{
    (void)state;
    rng_state = 3;
    static const size_t sizes[] = {0, 1, 3, 100, 20000};
    for (int i = 0; i < 12; i++) {
        char what[64];
        size_t n = sizes[i % 5];
        snprintf(what, sizeof what, "%zu rows (round %d)", n, i);
        qml_frame *f = random_frame(n, 0);
        check_frame(f, what);
        qml_frame_free(f);
    }
}

static void test_checked_path_against_plain(void **state)
{
    (void)state;
    rng_state = 11;
    qml_frame *f = random_frame(3000, 1);
    check_frame(f, "a 300 KiB string in the dictionary");
    qml_frame_free(f);
}

static void test_no_columns(void **state)
{
    (void)state;
    qml_frame *f = qml_frame_new();
    check_frame(f, "no columns");
    qml_frame_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_path_against_plain),
        cmocka_unit_test(test_checked_path_against_plain),
        cmocka_unit_test(test_no_columns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
