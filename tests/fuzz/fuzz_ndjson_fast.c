/*
 * fuzz_ndjson_fast.c - the NDJSON reader's scanner (flat objects read
 * without building JSON values, src/ml/ndjson.c) against its jansson path,
 * on arbitrary bytes. The same input is read twice with the same typed
 * columns: once with fields_only (no inference sample, so every line meets
 * the scanner first, which may decline it to jansson) and once with an
 * inference sample longer than the input (so every line is parsed by
 * jansson). Both must keep the same rows with the same cells in the typed
 * columns (doubles bit for bit, strings byte for byte, missing flags) and
 * count the same bad rows with the same lines, reasons and messages.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ml/ndjson.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const qml_field_spec fs[] = {{"a", QML_CATEGORICAL}, {"b", QML_NUMERIC}, {"c", QML_TIMESTAMP},
                                    {"d", QML_BOOLEAN}, {"\xc3\xa9 e", QML_CATEGORICAL}};
#define NF (sizeof fs / sizeof fs[0])

static qml_frame *read_as(const uint8_t *data, size_t size, int scanner, qml_read_report *rep)
{
    qml_ndjson_opts o;
    qml_ndjson_opts_init(&o);
    o.fields = fs;
    o.n_fields = NF;
    o.max_line_bytes = 256;
    if (scanner) {
        o.fields_only = 1;
    } else {
        size_t lines = 1;
        for (size_t i = 0; i < size; i++)
            lines += data[i] == '\n';
        o.infer_rows = lines + 1;
    }
    qml_frame *f = NULL;
    qn_err err;
    if (qml_ndjson_read_all_mem(data, size, &o, &f, rep, &err) < 0)
        return NULL;
    return f;
}

static void same_frames(const qml_frame *a, const qml_frame *b)
{
    if (qml_frame_nrows(a) != qml_frame_nrows(b) || qml_frame_ncols(a) != NF || qml_frame_ncols(b) < NF)
        abort();
    for (size_t j = 0; j < NF; j++) {
        const qml_column *x = qml_frame_col(a, j), *y = qml_frame_col(b, j);
        if (x->type != y->type || strcmp(x->name, y->name) != 0)
            abort();
        for (size_t r = 0; r < qml_frame_nrows(a); r++) {
            if (x->missing[r] != y->missing[r])
                abort();
            if (x->missing[r])
                continue;
            if (x->type == QML_CATEGORICAL ? strcmp(qml_col_str(x, r), qml_col_str(y, r)) != 0
                                           : memcmp(&x->num[r], &y->num[r], sizeof(double)) != 0)
                abort();
        }
    }
}

static void same_reports(const qml_read_report *a, const qml_read_report *b)
{
    if (a->rows_read != b->rows_read || a->rows_ok != b->rows_ok || a->rows_bad != b->rows_bad ||
        memcmp(a->by_reason, b->by_reason, sizeof a->by_reason) != 0 || a->n_first_bad != b->n_first_bad)
        abort();
    for (size_t i = 0; i < a->n_first_bad; i++)
        if (a->first_bad[i].line != b->first_bad[i].line || a->first_bad[i].reason != b->first_bad[i].reason ||
            strcmp(a->first_bad[i].msg, b->first_bad[i].msg) != 0)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024)
        return 0;
    qml_read_report ra, rb;
    qml_frame *a = read_as(data, size, 1, &ra), *b = read_as(data, size, 0, &rb);
    /* Only out of memory fails the scanner's read of memory; the jansson
     * read also adds the keys it meets as columns, and a key no column can
     * be named (the empty key) fails it whole: nothing to compare then. */
    if (!a && b)
        abort();
    if (a && b) {
        same_frames(a, b);
        same_reports(&ra, &rb);
    }
    qml_frame_free(a);
    qml_frame_free(b);
    return 0;
}
