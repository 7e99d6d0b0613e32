/*
 * csr.c - CSR construction from triplets and transposition (see csr.h).
 *
 * Both are counting sorts: one pass to count per row, a prefix sum, one pass
 * to scatter. from_coo then sorts each row's columns and merges duplicates in
 * place, so the whole build is O(n + rows) plus the per-row sorts.
 */
#include "ml/csr.h"

#include <stdlib.h>
#include <string.h>

void qml_csr_free(qml_csr *m)
{
    if (!m)
        return;
    free(m->indptr);
    free(m->indices);
    free(m->data);
    free(m);
}

static qml_csr *csr_alloc(int32_t nrows, int32_t ncols, int64_t nnz)
{
    qml_csr *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->nrows = nrows;
    m->ncols = ncols;
    m->nnz = nnz;
    m->indptr = calloc((size_t)nrows + 1, sizeof *m->indptr);
    m->indices = malloc((size_t)(nnz ? nnz : 1) * sizeof *m->indices);
    m->data = malloc((size_t)(nnz ? nnz : 1) * sizeof *m->data);
    if (!m->indptr || !m->indices || !m->data) {
        qml_csr_free(m);
        return NULL;
    }
    return m;
}

typedef struct { int32_t col; float val; } entry;

static int entry_cmp(const void *a, const void *b)
{
    int32_t x = ((const entry *)a)->col, y = ((const entry *)b)->col;
    return (x > y) - (x < y);
}

int qml_csr_from_coo(int32_t nrows, int32_t ncols, const int32_t *rows, const int32_t *cols,
                     const float *vals, size_t n, qml_csr **out, qn_err *err)
{
    *out = NULL;
    if (nrows < 0 || ncols < 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "negative shape %d x %d", nrows, ncols);
    for (size_t i = 0; i < n; i++) {
        if (rows[i] < 0 || rows[i] >= nrows || cols[i] < 0 || cols[i] >= ncols)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "triplet %zu: (%d, %d) is outside a %d x %d matrix",
                              i, rows[i], cols[i], nrows, ncols);
    }
    qml_csr *m = csr_alloc(nrows, ncols, (int64_t)n);
    entry *tmp = malloc((n ? n : 1) * sizeof *tmp);
    if (!m || !tmp) {
        qml_csr_free(m);
        free(tmp);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory building a %zu-entry matrix", n);
    }
    for (size_t i = 0; i < n; i++)
        m->indptr[rows[i] + 1]++;
    for (int32_t r = 0; r < nrows; r++)
        m->indptr[r + 1] += m->indptr[r];
    int64_t *next = malloc(((size_t)nrows + 1) * sizeof *next);
    if (!next) {
        qml_csr_free(m);
        free(tmp);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    memcpy(next, m->indptr, ((size_t)nrows + 1) * sizeof *next);
    for (size_t i = 0; i < n; i++) {
        int64_t k = next[rows[i]]++;
        tmp[k].col = cols[i];
        tmp[k].val = vals[i];
    }
    free(next);

    /* Sort each row, sum duplicates, compact. */
    int64_t w = 0;
    for (int32_t r = 0; r < nrows; r++) {
        int64_t lo = m->indptr[r], hi = m->indptr[r + 1];
        qsort(tmp + lo, (size_t)(hi - lo), sizeof *tmp, entry_cmp);
        m->indptr[r] = w;
        for (int64_t k = lo; k < hi; k++) {
            if (w > m->indptr[r] && m->indices[w - 1] == tmp[k].col) {
                m->data[w - 1] += tmp[k].val;
            } else {
                m->indices[w] = tmp[k].col;
                m->data[w] = tmp[k].val;
                w++;
            }
        }
    }
    m->indptr[nrows] = w;
    m->nnz = w;
    free(tmp);
    *out = m;
    return 0;
}

qml_csr *qml_csr_transpose(const qml_csr *m, qn_err *err)
{
    qml_csr *t = csr_alloc(m->ncols, m->nrows, m->nnz);
    if (!t) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory transposing a %d x %d matrix",
                   m->nrows, m->ncols);
        return NULL;
    }
    for (int64_t k = 0; k < m->nnz; k++)
        t->indptr[m->indices[k] + 1]++;
    for (int32_t c = 0; c < m->ncols; c++)
        t->indptr[c + 1] += t->indptr[c];
    int64_t *next = malloc(((size_t)m->ncols + 1) * sizeof *next);
    if (!next) {
        qml_csr_free(t);
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    memcpy(next, t->indptr, ((size_t)m->ncols + 1) * sizeof *next);
    /* Rows are visited in order, so each column of t comes out sorted. */
    for (int32_t r = 0; r < m->nrows; r++) {
        for (int64_t k = m->indptr[r]; k < m->indptr[r + 1]; k++) {
            int64_t d = next[m->indices[k]]++;
            t->indices[d] = r;
            t->data[d] = m->data[k];
        }
    }
    free(next);
    return t;
}
