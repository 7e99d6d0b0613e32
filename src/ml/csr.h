/*
 * csr.h - compressed sparse row matrices of float32 (user x item confidences).
 *
 *     int32_t r[] = {0, 0, 1}, c[] = {2, 0, 2};
 *     float v[] = {1, 3, 5};
 *     qml_csr *m;
 *     if (qml_csr_from_coo(2, 3, r, c, v, 3, &m, &err) < 0) ...
 *     // row 0: (0, 3.0), (2, 1.0) - columns sorted, duplicates summed
 *     qml_csr *mt = qml_csr_transpose(m, &err);
 *     qml_csr_free(mt); qml_csr_free(m);
 *
 * Plain data: the struct fields are public and read directly by models.
 * A qml_csr owns its three arrays. Read-only use is thread-safe.
 */
#ifndef QML_CSR_H
#define QML_CSR_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct qml_csr {
    int32_t nrows, ncols;
    int64_t nnz;
    int64_t *indptr;   /* nrows + 1 offsets into indices/data */
    int32_t *indices;  /* nnz column indices, ascending within each row */
    float *data;       /* nnz values */
} qml_csr;

/* Builds a CSR from n (row, col, value) triplets; duplicates are summed,
 * columns sorted within rows. Returns 0 and *out, or a negative code with err
 * filled (an index out of range is QN_INVALID_ARGUMENT naming the triplet). */
int qml_csr_from_coo(int32_t nrows, int32_t ncols, const int32_t *rows, const int32_t *cols,
                     const float *vals, size_t n, qml_csr **out, qn_err *err);

/* The transpose (items x users), or NULL with err filled. */
qml_csr *qml_csr_transpose(const qml_csr *m, qn_err *err);

void qml_csr_free(qml_csr *m);

#endif
