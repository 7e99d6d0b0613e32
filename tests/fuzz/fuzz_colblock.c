/* fuzz_colblock.c - libFuzzer target for column blocks (ml/colblock.h).
 * First byte even: the rest is NDJSON; its canonical rows (records.h) are
 * built into blocks of at most 3 rows, which must view, render back byte for
 * byte and slice to the same rows. Odd: the rest is a page of blocks as the
 * network delivers it; every block that views is rendered and sliced, and
 * the slice must view and render the same. Either way the page is then
 * read into a frame by the NDJSON reader's block input; from built blocks
 * it must give the counts it gives the same rows as lines. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ml/colblock.h"
#include "ml/ndjson.h"
#include "ml/records.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Renders row r of a and row r2 of b and aborts when they differ. */
static void same_row(const qml_colblock *a, uint32_t r, const qml_colblock *b, uint32_t r2, qn_buf *x, qn_buf *y)
{
    qn_buf_reset(x);
    qn_buf_reset(y);
    if (qml_colblock_render(a, r, x) < 0 || qml_colblock_render(b, r2, y) < 0)
        return; /* out of memory: nothing to compare */
    if (x->len != y->len || memcmp(x->data, y->data, x->len) != 0)
        abort();
}

/* Views every block of page; each must slice to the same rows. The rows seen. */
static size_t walk(const char *page, size_t len, qn_buf *x, qn_buf *y)
{
    size_t at = 0, rows = 0;
    qn_err err;
    while (at < len) {
        qml_colblock v, s;
        size_t used, u2;
        if (qml_colblock_view(page + at, len - at, &v, &used, &err) < 0)
            break;
        rows += v.nrows;
        uint32_t from = v.nrows / 3, to = v.nrows - v.nrows / 4;
        qn_buf sl;
        qn_buf_init(&sl, 1u << 24);
        if (qml_colblock_slice(&v, from, to, &sl) == 0) {
            if (qml_colblock_view(sl.data, sl.len, &s, &u2, &err) < 0 || u2 != sl.len || s.nrows != to - from)
                abort();
            for (uint32_t r = from; r < to; r++)
                same_row(&v, r, &s, r - from, x, y);
            qml_colblock_view_free(&s);
        }
        qn_buf_free(&sl);
        qml_colblock_view_free(&v);
        at += used;
    }
    return rows;
}

typedef struct one_page {
    const char *data;
    size_t len;
    int given;
} one_page;

static int give_page(void *ud, const char **data, size_t *len)
{
    one_page *p = ud;
    if (p->given++)
        return 0;
    *data = p->data;
    *len = p->len;
    return 1;
}

/* Reads a page of blocks into a frame: < 0 when refused, else the report. */
static int read_blocks(const char *data, size_t len, qml_read_report *rep, size_t *nrows)
{
    static const qml_field_spec fs[] = {{"a", QML_NUMERIC}, {"b", QML_CATEGORICAL}, {"t", QML_TIMESTAMP}};
    qml_ndjson_opts o;
    qml_ndjson_opts_init(&o);
    o.infer_rows = 2;
    if (len && (data[0] & 1)) {
        o.fields = fs;
        o.n_fields = 3;
    }
    one_page p = {data, len, 0};
    qml_frame *f;
    qn_err err;
    int rc = qml_ndjson_read_all_blocks(give_page, &p, &o, &f, rep, &err);
    if (rc == 0) {
        if (rep->rows_read != rep->rows_ok + rep->rows_bad || qml_frame_nrows(f) != rep->rows_ok)
            abort();
        *nrows = qml_frame_nrows(f);
        qml_frame_free(f);
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qml_read_report rep;
    size_t nrows;
    if (!size)
        return 0;
    qn_buf x, y, page;
    qn_buf_init(&x, 1u << 24);
    qn_buf_init(&y, 1u << 24);
    qn_buf_init(&page, 1u << 26);
    if (data[0] & 1) {
        walk((const char *)data + 1, size - 1, &x, &y);
        read_blocks((const char *)data + 1, size - 1, &rep, &nrows);
        goto out;
    }
    qml_rec_opts o;
    qml_rec_opts_init(&o);
    qml_rec_batch b;
    qml_rec_batch_init(&b);
    qn_err err;
    qml_colblock_builder *cb = qml_colblock_builder_new();
    if (cb && qml_rec_parse((const char *)data + 1, size - 1, QML_REC_NDJSON, NULL, &o, &b, &err) == 0) {
        for (size_t i = 0; i < b.nrows; i++) {
            int rc = qml_colblock_add(cb, b.text + b.off[i], b.off[i + 1] - b.off[i], &err);
            if (rc == QN_INTERNAL)
                abort(); /* a canonical row refused */
            if (rc < 0 || (qml_colblock_rows(cb) == 3 && qml_colblock_finish(cb, &page, &err) < 0))
                goto done;
        }
        if (qml_colblock_finish(cb, &page, &err) < 0)
            goto done;
        if (walk(page.data, page.len, &x, &y) != b.nrows)
            abort();
        /* Byte for byte: the rows rendered in order are the canonical texts. */
        size_t at = 0, row = 0;
        qml_colblock v;
        size_t used;
        while (at < page.len && qml_colblock_view(page.data + at, page.len - at, &v, &used, &err) == 0) {
            for (uint32_t r = 0; r < v.nrows; r++, row++) {
                qn_buf_reset(&x);
                if (qml_colblock_render(&v, r, &x) == 0 &&
                    (x.len != b.off[row + 1] - b.off[row] || memcmp(x.data, b.text + b.off[row], x.len) != 0))
                    abort();
            }
            qml_colblock_view_free(&v);
            at += used;
        }
        if (read_blocks(page.data, page.len, &rep, &nrows) == 0 && rep.rows_read != b.nrows)
            abort();
    }
done:
    qml_colblock_builder_free(cb);
    qml_rec_batch_free(&b);
out:
    qn_buf_free(&x);
    qn_buf_free(&y);
    qn_buf_free(&page);
    return 0;
}
