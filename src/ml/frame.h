/*
 * frame.h - the columnar data frame of libquern-ml.
 *
 * A frame is a set of named, typed columns of equal length. Every cell may be
 * missing (missing values are first-class: a per-column mask, never a magic
 * value). Numeric, boolean and timestamp cells are stored as double (booleans
 * 0/1, timestamps as seconds since the Unix epoch, UTC); categorical cells as
 * int32 codes into a per-column dictionary of strings.
 *
 *     qn_err err;
 *     qml_frame *f = qml_frame_new();
 *     int age = qml_frame_add_column(f, "age", QML_NUMERIC, &err);
 *     int job = qml_frame_add_column(f, "job", QML_CATEGORICAL, &err);
 *     qml_col_push_num(qml_frame_col(f, age), 39);
 *     qml_col_push_str(qml_frame_col(f, job), "clerk", 5);
 *     qml_frame_end_row(f);            // checks every column has one more cell
 *     ...
 *     qml_frame_free(f);
 *
 * Ownership: a frame owns its columns, their names, data and dictionaries.
 * Thread safety: a frame may be read from many threads at once; writes need
 * the caller to serialize them.
 */
#ifndef QML_FRAME_H
#define QML_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef enum qml_type {
    QML_NUMERIC = 0,
    QML_CATEGORICAL,
    QML_BOOLEAN,
    QML_TIMESTAMP,
} qml_type;

/* "numeric", "categorical", "boolean", "timestamp". */
const char *qml_type_name(qml_type t);
/* Parses a type name; returns 0 and sets *t, or QN_INVALID_ARGUMENT. */
int qml_type_parse(const char *s, qml_type *t);

/* A string dictionary: code <-> string, codes dense from 0 in insertion order. */
typedef struct qml_dict qml_dict;

qml_dict *qml_dict_new(void);
void qml_dict_free(qml_dict *d);
/* Returns the code of s (adding it if new), or -1 when out of memory. */
int32_t qml_dict_intern(qml_dict *d, const char *s, size_t len);
/* Returns the code of s, or -1 if absent. Thread-safe for concurrent readers. */
int32_t qml_dict_find(const qml_dict *d, const char *s, size_t len);
/* The string of a code (NUL-terminated, owned by the dictionary). */
const char *qml_dict_str(const qml_dict *d, int32_t code);
size_t qml_dict_size(const qml_dict *d);

typedef struct qml_column {
    char *name;
    qml_type type;
    size_t len;          /* number of cells */
    size_t cap;
    double *num;         /* NUMERIC, BOOLEAN, TIMESTAMP: len values (0 where missing) */
    int32_t *cat;        /* CATEGORICAL: len codes (-1 where missing) */
    qml_dict *dict;      /* CATEGORICAL only */
    uint8_t *missing;    /* len flags, 1 = missing */
    size_t n_missing;
} qml_column;

typedef struct qml_frame qml_frame;

qml_frame *qml_frame_new(void);
void qml_frame_free(qml_frame *f);

/* Adds an empty column (it must be added before any row). Returns its index
 * (>= 0), or QN_ALREADY_EXISTS / QN_INVALID_ARGUMENT / QN_RESOURCE_EXHAUSTED. */
int qml_frame_add_column(qml_frame *f, const char *name, qml_type type, qn_err *err);

/* Makes room in every column for rows more rows, so that pushing them does
 * not grow (and copy) the arrays as it goes. 0 or QN_RESOURCE_EXHAUSTED. */
int qml_frame_reserve(qml_frame *f, size_t rows);

size_t qml_frame_ncols(const qml_frame *f);
size_t qml_frame_nrows(const qml_frame *f);
qml_column *qml_frame_col(const qml_frame *f, size_t i);
/* Index of the column called name, or -1. */
int qml_frame_find(const qml_frame *f, const char *name);

/* Appending cells: each returns 0, or QN_RESOURCE_EXHAUSTED when out of memory.
 * push_num is for NUMERIC/BOOLEAN/TIMESTAMP columns, push_str for CATEGORICAL. */
int qml_col_push_num(qml_column *c, double v);
int qml_col_push_str(qml_column *c, const char *s, size_t len);
int qml_col_push_code(qml_column *c, int32_t code);
int qml_col_push_missing(qml_column *c);
/* Drops the last cell of a column (used to roll back a half-appended bad row). */
void qml_col_pop(qml_column *c);

/* Closes a row: every column must have exactly nrows+1 cells. Returns 0 or
 * QN_INTERNAL (a programmer error in the caller). */
int qml_frame_end_row(qml_frame *f);
/* Closes n rows at once, for a caller that filled columns directly (after
 * qml_frame_reserve: values in num/cat, flags in missing, then len and
 * n_missing): every column must have exactly nrows+n cells. 0 or
 * QN_INTERNAL. */
int qml_frame_end_rows(qml_frame *f, size_t n);
/* Rolls back a partially appended row so that all columns have nrows cells. */
void qml_frame_abort_row(qml_frame *f);

static inline int qml_col_is_missing(const qml_column *c, size_t i) { return c->missing[i]; }
/* The string of a categorical cell, or NULL if missing. */
const char *qml_col_str(const qml_column *c, size_t i);

/* A new frame with the given rows of f, in that order (rows may repeat).
 * Categorical columns keep the same dictionaries' contents and codes.
 * Returns NULL and fills err on failure. */
qml_frame *qml_frame_take(const qml_frame *f, const size_t *rows, size_t n, qn_err *err);

/* A new frame with only the named columns, in the given order. */
qml_frame *qml_frame_select(const qml_frame *f, const char *const *names, size_t n, qn_err *err);

#endif
