/*
 * ndjson.h - a streaming NDJSON reader (one JSON object per line) into the
 * same frames, schemas and read reports as the CSV reader (csv.h, schema.h).
 *
 *     qml_ndjson_opts o;
 *     qml_ndjson_opts_init(&o);
 *     qml_field_spec f[] = {{"user", QML_CATEGORICAL}, {"ts", QML_TIMESTAMP}};
 *     o.fields = f; o.n_fields = 2;          // other keys are inferred too
 *     qml_frame *fr;
 *     qml_read_report rep;
 *     qn_err err;
 *     if (qml_ndjson_read_all_mem(body, body_len, &o, &fr, &rep, &err) < 0) ...
 *
 * Schema: the given fields in their order, then (unless fields_only) every
 * other key met in the first infer_rows lines, in the order first met. Types
 * left as QML_INFER are inferred from the JSON values: only numbers ->
 * numeric; only true/false -> boolean; only strings that are all timestamps
 * -> timestamp; anything else -> categorical.
 *
 * Cells: a missing key, null or "" is a missing cell. A numeric column takes
 * numbers and numeric strings; boolean takes true/false (and "true", "no",
 * 0/1...); timestamp takes timestamp strings or numbers (seconds since the
 * epoch); categorical takes strings, numbers (written shortest, 12346 ->
 * "12346"), booleans ("true"/"false") and nested objects or arrays, kept as
 * their compact JSON text with sorted keys. A value that does not fit its
 * column (a nested value in a numeric column, say) makes the row bad.
 * Keys outside the schema are ignored and counted in report.unknown_keys.
 * Integers beyond 64 bits are refused by jansson: the row is bad ("json").
 *
 * Bad rows (not JSON, not an object, a line over max_line_bytes, a value of
 * the wrong type) are counted with their line number; blank lines are skipped.
 * As with CSV, each chunk has its own dictionaries.
 * Thread safety: a reader is used by one thread at a time.
 */
#ifndef QML_NDJSON_H
#define QML_NDJSON_H

#include <stddef.h>

#include "core/err.h"
#include "ml/frame.h"
#include "ml/schema.h"

typedef struct qml_ndjson_opts {
    const qml_field_spec *fields;   /* may be NULL */
    size_t n_fields;
    int fields_only;                /* 1: the schema is exactly fields */
    size_t infer_rows;              /* default 1000 */
    size_t max_line_bytes;          /* default 1 MiB */
} qml_ndjson_opts;

void qml_ndjson_opts_init(qml_ndjson_opts *o);

typedef struct qml_ndjson_reader qml_ndjson_reader;

/* Open a file / a borrowed memory buffer and read the inference sample.
 * NULL with err filled on I/O errors, bad options or out of memory. */
qml_ndjson_reader *qml_ndjson_open(const char *path, const qml_ndjson_opts *o, qn_err *err);
qml_ndjson_reader *qml_ndjson_open_mem(const void *data, size_t len, const qml_ndjson_opts *o,
                                       qn_err *err);

/* A source of bytes in chunks: sets *data and *len to the next chunk and
 * returns 1 (the chunk stays valid until the next call), 0 at the end, or a
 * negative qn code when the source failed (the read then fails with that
 * code; the source keeps its own account of why). Lines may cross chunks. */
typedef int (*qml_ndjson_chunk_fn)(void *ud, const char **data, size_t *len);

/* Reads from fn's chunks without copying them (beyond lines that cross two). */
qml_ndjson_reader *qml_ndjson_open_fn(qml_ndjson_chunk_fn fn, void *ud, const qml_ndjson_opts *o, qn_err *err);

/* Reads ingest's column blocks (colblock.h) instead of lines: each chunk
 * fn gives is a page of whole blocks. The rows are read exactly as their
 * canonical texts would be as lines: the same schema and inference (the
 * sample is the first infer_rows rows, rendered), the same cells, bad rows
 * and report, row numbers counted as line numbers; max_line_bytes applies
 * to the sample only. After the sample, each distinct value of a block
 * column is worked out once per frame and every cell is a lookup. A page
 * that does not hold whole, well-formed blocks fails the read
 * (QN_INVALID_ARGUMENT naming the row it follows). */
qml_ndjson_reader *qml_ndjson_open_blocks(qml_ndjson_chunk_fn fn, void *ud, const qml_ndjson_opts *o,
                                          qn_err *err);

/* As qml_csv_next: 1 with a chunk of at most max_rows rows, 0 at the end, < 0 on error. */
int qml_ndjson_next(qml_ndjson_reader *r, size_t max_rows, qml_frame **chunk, qn_err *err);
const qml_read_report *qml_ndjson_report(const qml_ndjson_reader *r);
void qml_ndjson_close(qml_ndjson_reader *r);

int qml_ndjson_read_all(const char *path, const qml_ndjson_opts *o, qml_frame **out,
                        qml_read_report *rep, qn_err *err);
int qml_ndjson_read_all_fn(qml_ndjson_chunk_fn fn, void *ud, const qml_ndjson_opts *o, qml_frame **out,
                           qml_read_report *rep, qn_err *err);
int qml_ndjson_read_all_blocks(qml_ndjson_chunk_fn fn, void *ud, const qml_ndjson_opts *o, qml_frame **out,
                               qml_read_report *rep, qn_err *err);
int qml_ndjson_read_all_mem(const void *data, size_t len, const qml_ndjson_opts *o,
                            qml_frame **out, qml_read_report *rep, qn_err *err);

#endif
