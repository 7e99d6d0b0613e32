/*
 * csv.h - a streaming CSV reader into columnar frames (RFC 4180 and its
 * common variants).
 *
 * The reader pulls a file (or a caller's memory buffer) through a bounded
 * window and hands out frames of at most max_rows rows, so a file of any size
 * is read in memory bounded by the chunk size and the limits in the options.
 *
 *     qml_csv_opts o;
 *     qml_csv_opts_init(&o);
 *     o.sep = ", ";                                 // Adult: comma and a space
 *     o.has_header = 0;
 *     static const char *na[] = {"?"};
 *     o.na_values = na; o.n_na_values = 1;
 *     qml_field_spec cols[] = {{"age", QML_NUMERIC}, {"workclass", QML_INFER}, ...};
 *     o.fields = cols; o.n_fields = 15;
 *     qn_err err;
 *     qml_csv_reader *r = qml_csv_open("adult.data", &o, &err);
 *     if (!r) ...
 *     qml_frame *chunk;
 *     int rc;
 *     while ((rc = qml_csv_next(r, 65536, &chunk, &err)) > 0) {
 *         ... use chunk ...
 *         qml_frame_free(chunk);
 *     }
 *     const qml_read_report *rep = qml_csv_report(r);   // rows_ok, rows_bad, first_bad
 *     qml_csv_close(r);
 *
 * Dialect:
 * - Records end at LF or CRLF; the last record may lack one. A lone CR is data.
 * - A field that starts with '"' is quoted: it may hold the separator, CR and
 *   LF, and "" stands for one quote. After the closing quote only the
 *   separator or the end of the record may follow (spaces too when trimming);
 *   anything else makes the row bad (reason "quote"). A quote inside an
 *   unquoted field is kept as data, as most writers expect.
 * - The separator is a string of 1 to 8 bytes (",", ";", "\t", ", "), or
 *   "auto": sniffed from the first 20 lines (64 KiB): of ',' ';' tab '|', the
 *   one that gives every line the same field count > 1, the most fields
 *   winning and ties going to the earlier candidate; ',' when none does.
 * - The quote character is '"' unless quote says otherwise (or none).
 * - Encoding: UTF-8, a leading byte order mark dropped; or Latin-1 or
 *   Windows-1252 (encoding option), converted to UTF-8 with iconv as read.
 *   Input that is not valid in its encoding is refused whole: open or next
 *   fails with QN_INVALID_ARGUMENT naming the line and the 0-based byte
 *   offset of the first bad byte (a memory buffer is checked at open).
 * - Trailing empty header fields ("a;b;;") are dropped, and so are the empty
 *   trailing fields of each record past the header's count.
 * - decimal_comma: a numeric cell may write its point as ',' ("3,5" is 3.5);
 *   the separator must then not be ','.
 * - Blank lines are skipped (they are not rows). skip_lines physical lines are
 *   dropped before anything else (Adult's test file starts with a comment).
 * - Bytes are kept exactly.
 * - A cell equal to "" or to one of na_values (after trimming) is missing.
 *
 * Schema: with a header, the header names the columns and `fields` may give
 * the type of any of them by name; without one, `fields` names every column
 * in order (or the columns are called column_1, column_2, ...). Types left as
 * QML_INFER are inferred from the first infer_rows rows (schema.h).
 *
 * Every chunk has the same columns and types; each chunk has its own
 * dictionaries, so a categorical code means something only within its chunk
 * (compare strings across chunks, or read everything with qml_csv_read_all).
 *
 * Bad rows (wrong field count, a cell not of its type, bad quoting, invalid
 * UTF-8, a field over max_field_bytes) are counted in the report with the
 * physical line where the record starts and never appended.
 *
 * Thread safety: a reader is used by one thread at a time.
 */
#ifndef QML_CSV_H
#define QML_CSV_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "ml/frame.h"
#include "ml/schema.h"

#define QML_CSV_NO_QUOTE (-1)

typedef struct qml_csv_opts {
    const char *sep;                /* default ","; "auto": sniffed (see above) */
    int quote;                      /* default '"'; QML_CSV_NO_QUOTE: none */
    int decimal_comma;              /* numeric cells may use ',' for the point; default 0 */
    const char *encoding;           /* NULL/"utf-8" (default), "latin-1", "windows-1252" */
    int has_header;                 /* default 1 */
    size_t skip_lines;              /* physical lines dropped first; default 0 */
    const char *const *na_values;   /* extra strings that mean missing ("" always does) */
    size_t n_na_values;
    int trim;                       /* strip spaces and tabs around fields; default 0 */
    const qml_field_spec *fields;   /* given schema (see above), may be NULL */
    size_t n_fields;
    size_t infer_rows;              /* rows sampled to infer types; default 1000 */
    size_t max_field_bytes;         /* default 1 MiB */
    size_t max_record_bytes;        /* default 16 MiB */
    size_t max_fields;              /* default 4096 */
} qml_csv_opts;

/* Fills o with the defaults above. */
void qml_csv_opts_init(qml_csv_opts *o);

typedef struct qml_csv_reader qml_csv_reader;

/* Opens a file and reads the header and the inference sample. The options
 * (and the strings they point to) are copied. Returns NULL with err filled:
 * QN_NOT_FOUND / QN_INTERNAL for I/O, QN_INVALID_ARGUMENT for bad options, a
 * bad header or a schema naming a column the header lacks. An empty file
 * yields a reader with no rows (and no columns unless fields names them). */
qml_csv_reader *qml_csv_open(const char *path, const qml_csv_opts *o, qn_err *err);

/* The same over a memory buffer, which is borrowed: it must outlive the reader. */
qml_csv_reader *qml_csv_open_mem(const void *data, size_t len, const qml_csv_opts *o, qn_err *err);

/* Reads up to max_rows good rows (max_rows > 0) into a new frame owned by the
 * caller. Returns 1 with *chunk set, 0 at the end (*chunk NULL), or a
 * negative code (I/O error, out of memory) with err filled. */
int qml_csv_next(qml_csv_reader *r, size_t max_rows, qml_frame **chunk, qn_err *err);

/* One record as text, for callers that build rows rather than frames
 * (quern-ingest types each cell itself through schema.h). The pointers are
 * owned by the reader and valid until the next call or qml_csv_close. */
typedef struct qml_csv_record {
    uint64_t line;               /* physical line where the record starts */
    size_t nfields;              /* == qml_csv_ncols when the record is good */
    const char *buf;             /* field i: buf + off[i], flen[i] bytes, NUL-terminated */
    const size_t *off, *flen;
    int bad;                     /* 1: refused (quote, too long, UTF-8, field count) */
    qml_bad_reason reason;       /* when bad */
    char msg[QML_REPORT_MSG];    /* when bad: names the column or field */
} qml_csv_record;

/* Reads the next non-blank record after the header, cells untyped (the
 * column types are not used). Bad records come back with bad = 1 and are
 * counted in the report like good ones. Returns 1 with *out filled, 0 at the
 * end, or a negative code (I/O, out of memory) with err filled. Do not mix
 * with qml_csv_next on one reader. Open with infer_rows = 1 to keep the
 * inference sample small when types do not matter. */
int qml_csv_next_record(qml_csv_reader *r, qml_csv_record *out, qn_err *err);

/* For callers of qml_csv_next_record: 1 when a cell is missing (empty or
 * one of na_values). */
int qml_csv_is_missing(const qml_csv_reader *r, const char *s, size_t len);

/* The text to parse as a number for a cell: s itself, or (decimal_comma,
 * a cell with ',' shorter than cap) a copy in buf with the comma made a
 * point; *len is unchanged either way. */
const char *qml_csv_number_text(const qml_csv_reader *r, const char *s, size_t *len, char *buf,
                                size_t cap);

/* The separator in use (the sniffed one with "auto"); owned by the reader. */
const char *qml_csv_sep(const qml_csv_reader *r);

/* The report so far (owned by the reader). */
const qml_read_report *qml_csv_report(const qml_csv_reader *r);

/* The resolved schema: column count, names and types (owned by the reader). */
size_t qml_csv_ncols(const qml_csv_reader *r);
const char *qml_csv_col_name(const qml_csv_reader *r, size_t i);
qml_type qml_csv_col_type(const qml_csv_reader *r, size_t i);

void qml_csv_close(qml_csv_reader *r);

/* Reads a whole file into one frame (one set of dictionaries). rep may be
 * NULL. Returns 0 and *out, or a negative code with err filled. */
int qml_csv_read_all(const char *path, const qml_csv_opts *o, qml_frame **out,
                     qml_read_report *rep, qn_err *err);
int qml_csv_read_all_mem(const void *data, size_t len, const qml_csv_opts *o, qml_frame **out,
                         qml_read_report *rep, qn_err *err);

#endif
