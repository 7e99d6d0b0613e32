/*
 * records.h - bodies of events (JSON, NDJSON, CSV) into canonical JSON rows,
 * each checked against an optional row schema.
 *
 * quern-ingest stores what clients send as one JSON object per row; this
 * module is the one place that reads those bodies, so the rules for a good
 * row are the same whatever the format. A row schema names columns with a
 * type (frame.h's types) and whether they are required; cells are typed
 * through schema.h (qml_parse_number / _bool / _timestamp), the same code
 * the CSV and NDJSON readers use, so what ingest accepts, prep can read.
 *
 *     qml_rec_schema *s;
 *     json_t *doc = json_loads("{\"columns\":[{\"name\":\"price\",\"type\":\"numeric\","
 *                              "\"required\":true}],\"additional_columns\":false}", 0, NULL);
 *     if (qml_rec_schema_parse(doc, &s, &err) < 0) -> 400 naming the column
 *
 *     qml_rec_opts o;
 *     qml_rec_opts_init(&o);
 *     qml_rec_batch b;
 *     qml_rec_batch_init(&b);
 *     if (qml_rec_parse("price\n2.5\nx\n", 12, QML_REC_CSV, s, &o, &b, &err) < 0)
 *         -> 400: the body as a whole is unreadable (err says why)
 *     // b.nrows == 1, row 0 is {"price":2.5}; b.nbad == 1, b.errors[0].row == 2,
 *     // b.errors[0].msg == "column price: \"x\" is not a number"
 *     qml_rec_batch_free(&b);
 *
 * Canonical rows: compact JSON objects with keys in byte order, numbers
 * written the shortest way that reads back exactly, strings escaped
 * minimally. With a schema, a column's value is typed: numeric -> a number
 * (numeric strings are converted), boolean -> true/false (from "yes", "0"...
 * too), timestamp -> kept as given once it parses (a string of schema.h's
 * forms, or a number of seconds), categorical -> a string (numbers and
 * booleans are written as text). A missing value (null, "", or for CSV an
 * empty cell) is null, except that "" stays "" in a categorical column; a
 * required column must be present and not missing. Columns outside the
 * schema are kept as given unless the schema says additional_columns false.
 * Without a schema JSON values are kept as given and CSV cells as strings.
 * Every key must be a valid column name (core/validate.h qn_colname_check:
 * text as people write it, "Customer ID" included). CSV bodies are read in
 * the dialect of qml_rec_opts, else the schema's csv, else sniffed (csv.h).
 *
 * Row numbers are 1-based positions of the record in the body: the element
 * of a JSON array, the non-blank line of NDJSON, the record after the CSV
 * header. NDJSON and CSV errors carry the physical line too.
 *
 * Everything here is thread-safe on distinct batches; a schema is read-only
 * once parsed and may be shared between threads.
 */
#ifndef QML_RECORDS_H
#define QML_RECORDS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "ml/frame.h"
#include "ml/schema.h"

#define QML_REC_MAX_COLS 256
/* The deepest nesting of arrays/objects a row may have, the row object
 * counting as level 1. A deeper row is refused (row error), never cut. */
#define QML_REC_MAX_DEPTH 64

typedef struct qml_rec_column {
    char *name;
    qml_type type;
    int required;
} qml_rec_column;

/* Plain data owned by whoever parsed it; cols in the order given. */
typedef struct qml_rec_schema {
    size_t ncols;
    qml_rec_column *cols;
    int additional;      /* 1: columns outside the schema are kept */
    json_t *csv;         /* the dataset's CSV dialect ({"delimiter",...}), or NULL */
    size_t *by_name;     /* indexes of cols sorted by name (internal) */
} qml_rec_schema;

/* Parses {"columns":[{"name":N,"type":T,"required":B?}...],
 * "additional_columns":B?, "csv":D?} strictly (unknown keys refused;
 * additional_columns defaults to true). D is the dataset's CSV dialect, every
 * field optional: {"delimiter": "," ";" "tab" "|" "auto", "quote": one ASCII
 * character or "none", "decimal_comma": B, "encoding": "utf-8" "latin-1"
 * "windows-1252", "na": [up to 16 strings of up to 64 bytes]}; a CSV body
 * is read in it unless qml_rec_opts says otherwise. At most QML_REC_MAX_COLS columns with distinct valid
 * names. Returns 0 and *out (caller frees with qml_rec_schema_free), or
 * QN_INVALID_ARGUMENT naming the field at fault, or QN_RESOURCE_EXHAUSTED. */
int qml_rec_schema_parse(const json_t *doc, qml_rec_schema **out, qn_err *err);
/* The schema as the JSON document above (all fields explicit); NULL on OOM. */
json_t *qml_rec_schema_json(const qml_rec_schema *s);
void qml_rec_schema_free(qml_rec_schema *s);

typedef enum qml_rec_format { QML_REC_JSON, QML_REC_NDJSON, QML_REC_CSV } qml_rec_format;

/* From a Content-Type value ("application/json; charset=utf-8",
 * "application/x-ndjson", "application/jsonl", "text/csv"): 0 and *out, or
 * QN_INVALID_ARGUMENT for anything else (NULL included). */
int qml_rec_format_parse(const char *content_type, qml_rec_format *out, qn_err *err);

typedef struct qml_rec_opts {
    size_t max_rows;       /* rows (good and bad) in one body; default 100000 */
    size_t max_row_bytes;  /* one row's input and canonical text; default 64 KiB */
    size_t max_cols;       /* columns in one row; default QML_REC_MAX_COLS */
    size_t max_errors;     /* bad rows kept in errors; default 100 */
    /* CSV dialect (csv.h): */
    const char *csv_sep;           /* NULL: sniffed from the first lines */
    int csv_quote;                 /* 0: '"'; QML_CSV_NO_QUOTE: none */
    int csv_decimal_comma;         /* numeric schema columns read "3,5" as 3.5; -1: the schema's */
    const char *csv_encoding;      /* NULL: UTF-8; "latin-1", "windows-1252" */
    const char *const *csv_na;     /* cells that mean missing (stored as null); NULL: the schema's */
    size_t csv_n_na;
} qml_rec_opts;

void qml_rec_opts_init(qml_rec_opts *o);

typedef struct qml_rec_error {
    uint64_t row;          /* 1-based record number */
    uint64_t line;         /* physical line (NDJSON, CSV), 0 for JSON */
    char msg[QML_REPORT_MSG];
} qml_rec_error;

/* The good rows and the bad ones of a body. Plain data; free with
 * qml_rec_batch_free. Row i's text is text + off[i], off[i + 1] - off[i]
 * bytes (not NUL-terminated). */
typedef struct qml_rec_batch {
    char *text;
    size_t len, cap;
    size_t *off;           /* nrows + 1 entries once nrows > 0 */
    uint64_t *row;         /* row[i]: good row i's 1-based record number */
    size_t nrows, caprows;
    uint64_t nbad;
    qml_rec_error *errors; /* the first max_errors bad rows, in order */
    size_t nerrors;
} qml_rec_batch;

void qml_rec_batch_init(qml_rec_batch *b);
void qml_rec_batch_free(qml_rec_batch *b);

/* Reads body (len bytes, need not be NUL-terminated) as fmt, against schema
 * (NULL: none), appending good rows to b and listing bad ones. Returns 0 --
 * even when every row is bad -- or, when the body cannot be read as a whole,
 * QN_INVALID_ARGUMENT with err saying why and where (JSON that does not
 * parse, a CSV header with a bad, duplicate or unknown column, a required
 * column missing from the header, no rows at all, more than max_rows rows);
 * QN_RESOURCE_EXHAUSTED when out of memory. */
int qml_rec_parse(const char *body, size_t len, qml_rec_format fmt, const qml_rec_schema *schema,
                  const qml_rec_opts *o, qml_rec_batch *b, qn_err *err);

/* Canonical text of one JSON object checked against schema, appended to b
 * as a row (used for single records such as feedback). Returns 0, 1 when the
 * row is bad (msg filled, b unchanged), or QN_RESOURCE_EXHAUSTED. */
int qml_rec_object(const json_t *obj, const qml_rec_schema *schema, const qml_rec_opts *o,
                   qml_rec_batch *b, char *msg, size_t msgcap);

#endif
