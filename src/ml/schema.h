/*
 * schema.h - what the CSV and NDJSON readers share: column specs, the text
 * forms of typed cells, type inference and the read report.
 *
 * A reader turns text into a qml_frame (frame.h). The schema says each
 * column's name and type; a type is given or inferred from the first rows.
 * Rows that do not fit are never appended and never silently dropped: they go
 * into a qml_read_report with their line number and a reason naming the column.
 *
 *     double ts;
 *     if (qml_parse_timestamp("2011-12-09T12:50:00+01:00", 25, &ts) == 0)
 *         ... ts == 1323431400 (seconds since the epoch, UTC)
 *
 *     qml_read_report rep;
 *     qml_read_report_init(&rep);
 *     qml_read_report_bad(&rep, 17, QML_BAD_TYPE, "column age: \"x\" is not a number");
 *     // rep.rows_bad == 1, rep.by_reason[QML_BAD_TYPE] == 1, rep.first_bad[0].line == 17
 *
 * Everything here is plain data or pure functions: thread-safe.
 */
#ifndef QML_SCHEMA_H
#define QML_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#include "ml/frame.h"

/* A column spec type that asks the reader to infer the type. */
#define QML_INFER (-1)

/* One column of a given schema: its name and a qml_type or QML_INFER. */
typedef struct qml_field_spec {
    const char *name;
    int type;
} qml_field_spec;

/* XX(ENUM, "name") - why a row was refused. */
#define QML_BAD_REASON_MAP(XX)                    \
    XX(FIELD_COUNT, "field_count")                \
    XX(TYPE, "type")                              \
    XX(QUOTE, "quote")                            \
    XX(UTF8, "utf8")                              \
    XX(TOO_LONG, "too_long")                      \
    XX(JSON, "json")

typedef enum qml_bad_reason {
#define QML__XX(e, s) QML_BAD_##e,
    QML_BAD_REASON_MAP(QML__XX)
#undef QML__XX
    QML_BAD__COUNT
} qml_bad_reason;

/* "field_count", "type", ... */
const char *qml_bad_reason_name(qml_bad_reason r);

#define QML_REPORT_KEEP 20
#define QML_REPORT_MSG 192

typedef struct qml_bad_row {
    uint64_t line;            /* physical line (1-based) where the record starts */
    qml_bad_reason reason;
    char msg[QML_REPORT_MSG]; /* names the column at fault where there is one */
} qml_bad_row;

/* Plain data. rows_read == rows_ok + rows_bad; header, skipped and blank
 * lines are not rows. first_bad keeps the first QML_REPORT_KEEP bad rows. */
typedef struct qml_read_report {
    uint64_t rows_read, rows_ok, rows_bad;
    uint64_t by_reason[QML_BAD__COUNT];
    uint64_t unknown_keys;    /* NDJSON: keys seen that are not in the schema */
    size_t n_first_bad;
    qml_bad_row first_bad[QML_REPORT_KEEP];
} qml_read_report;

void qml_read_report_init(qml_read_report *r);
/* Counts one bad row (and keeps it if it is among the first). */
void qml_read_report_bad(qml_read_report *r, uint64_t line, qml_bad_reason why, const char *msg);

/* ---- cell text --------------------------------------------------------- */

/* Decimal numbers only: [+-]digits[.digits][(e|E)[+-]digits], or with the
 * digits before or after the point left out (".5", "5."). No hex, inf or nan,
 * no surrounding space. s need not be NUL-terminated. 0 or QN_INVALID_ARGUMENT. */
int qml_parse_number(const char *s, size_t len, double *out);

/* true/false/yes/no in any case -> 1/0; with allow_digits also "1"/"0". */
int qml_parse_bool(const char *s, size_t len, int allow_digits, double *out);

/* "YYYY-MM-DD", "YYYY-MM-DD HH:MM[:SS]", and ISO 8601 with 'T', an optional
 * fraction of a second and an optional "Z", "+hh:mm", "-hh:mm" or "+hhmm".
 * Times without an offset are taken as UTC. Out: seconds since the epoch. */
int qml_parse_timestamp(const char *s, size_t len, double *out);

/* Writes a number the shortest way that reads back exactly ("12346", "2.55",
 * "1e+300"); returns the length (< cap), as snprintf. cap >= 32. */
int qml_format_number(double v, char *buf, size_t cap);
/* "YYYY-MM-DD HH:MM:SS" (UTC), with a fraction only when there is one. */
int qml_format_timestamp(double ts, char *buf, size_t cap);

/* Appends one text cell to a column, parsing it as the column's type.
 * Returns 0, QN_INVALID_ARGUMENT when the text is not of the type (msg then
 * holds "column NAME: ..."), or QN_RESOURCE_EXHAUSTED. */
int qml_col_push_text(qml_column *c, const char *s, size_t len, char *msg, size_t msgcap);

/* True when s is valid UTF-8 (no overlong forms, surrogates or > U+10FFFF). */
int qml_utf8_valid(const char *s, size_t len);

/* Type inference over one column's sample: feed every non-missing value,
 * then ask for the type. Order of preference: numeric, boolean
 * (true/false/yes/no only: 0/1 columns stay numeric), timestamp, categorical.
 * A column with no values at all is categorical. */
typedef struct qml_infer {
    uint64_t seen;
    unsigned not_num : 1, not_bool : 1, not_ts : 1;
} qml_infer;

void qml_infer_text(qml_infer *in, const char *s, size_t len);
qml_type qml_infer_result(const qml_infer *in);

#endif
