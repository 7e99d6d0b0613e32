/*
 * npy.h - NumPy .npy files (format version 1.0), the on-disk form of factor
 * matrices and vectors in model bundles (DESIGN.md section 4: "factors and
 * matrices as NumPy .npy"), so that `numpy.load` reads what Quern writes and
 * Quern reads what numpy writes.
 *
 * Supported: little-endian '<f4', '<f8', '<i4', '<i8'; C order; 1-D and 2-D.
 * Everything else (big-endian, Fortran order, other dtypes or ranks, format
 * 2.0/3.0, a header that does not parse, a payload whose size disagrees with
 * the shape) is refused with QN_INVALID_ARGUMENT naming the file and the fault.
 *
 *     qn_err err;
 *     float m[6] = {1, 2, 3, 4, 5, 6};
 *     int64_t shape[2] = {2, 3};
 *     if (qml_npy_write("m.npy", QML_NPY_F4, 2, shape, m, &err) < 0) ...
 *
 *     qml_npy a;
 *     if (qml_npy_read("m.npy", &a, &err) < 0) ...
 *     // a.dtype == QML_NPY_F4, a.ndim == 2, a.shape = {2, 3}, ((float *)a.data)[5] == 6
 *     qml_npy_release(&a);
 *
 * Thread safety: the functions keep no state; distinct arrays may be used
 * from distinct threads.
 */
#ifndef QML_NPY_H
#define QML_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef enum qml_npy_dtype {
    QML_NPY_F4 = 0, /* '<f4' float   */
    QML_NPY_F8,     /* '<f8' double  */
    QML_NPY_I4,     /* '<i4' int32_t */
    QML_NPY_I8,     /* '<i8' int64_t */
} qml_npy_dtype;

/* Plain data: an array read from a file. Owns data (free with qml_npy_release).
 * For ndim == 1, shape[1] is 1, so shape[0] * shape[1] is always the count. */
typedef struct qml_npy {
    qml_npy_dtype dtype;
    int ndim;          /* 1 or 2 */
    int64_t shape[2];
    void *data;        /* shape[0] * shape[1] elements, C order */
} qml_npy;

/* The descr string ("<f4", ...) and the element size of a dtype. */
const char *qml_npy_descr(qml_npy_dtype dtype);
size_t qml_npy_itemsize(qml_npy_dtype dtype);

/* Writes an ndim-D (1 or 2) array of dtype in C order to path, replacing it.
 * data holds the product of shape[0..ndim) elements (may be NULL when that is
 * 0). Returns 0, or QN_INVALID_ARGUMENT (bad rank or shape) / QN_INTERNAL
 * (I/O) with err naming path. A failed write may leave a partial file. */
int qml_npy_write(const char *path, qml_npy_dtype dtype, int ndim, const int64_t *shape,
                  const void *data, qn_err *err);

/* Parses a whole .npy image held in memory (buf, len). On success fills *out
 * (which then owns a copy of the payload) and returns 0; otherwise returns
 * QN_INVALID_ARGUMENT (or QN_RESOURCE_EXHAUSTED) with err saying what is wrong,
 * and *out holds nothing to release. `what` names the input in messages. */
int qml_npy_parse(const void *buf, size_t len, const char *what, qml_npy *out, qn_err *err);

/* Reads and validates path, as qml_npy_parse. A file that cannot be opened is
 * QN_NOT_FOUND; a read error QN_INTERNAL. */
int qml_npy_read(const char *path, qml_npy *out, qn_err *err);

/* Frees a->data and zeroes a. NULL and already-released arrays are fine. */
void qml_npy_release(qml_npy *a);

#endif
