/*
 * clean.h - stateless cleaning steps (used by prep) and the user x item
 * interaction matrix.
 *
 * Steps are data: a JSON array, parsed and checked once, then applied to a
 * frame. Each step makes a new frame; the input is never changed. The report
 * says how many rows each step took in and let out, and why rows went.
 *
 *     const char *js =
 *         "[{\"op\":\"drop_missing\",\"columns\":[\"CustomerID\"]},"
 *         " {\"op\":\"filter\",\"column\":\"InvoiceNo\",\"cmp\":\"not_starts_with\",\"value\":\"C\"},"
 *         " {\"op\":\"filter\",\"column\":\"Quantity\",\"cmp\":\">\",\"value\":0}]";
 *     qml_clean_steps *steps;
 *     if (qml_clean_parse(js, strlen(js), &steps, &err) < 0) ...  // names the step and field
 *     qml_frame *clean;
 *     qml_clean_report rep;
 *     if (qml_clean_apply(frame, steps, &clean, &rep, &err) < 0) ...
 *     qml_interactions ia;
 *     if (qml_interactions_build(clean, "CustomerID", "StockCode", NULL, &ia, &err) < 0) ...
 *     // ia.matrix: users x items, summed confidences; ia.users / ia.items: ids
 *     qml_interactions_free(&ia);
 *     qml_frame_free(clean);
 *     qml_clean_free(steps);
 *
 * The steps ("op" and its fields; any other field is an error):
 *   drop_missing  columns?: [names] (default: all)       drop rows with a missing cell there
 *   filter        column, cmp, value, keep_missing?: bool keep rows where `cell cmp value`;
 *                 cmp: == != < <= > >= starts_with not_starts_with in not_in (in/not_in take
 *                 an array). Numeric columns compare numbers, timestamp columns timestamps
 *                 (a timestamp string or epoch seconds), boolean columns true/false,
 *                 categorical columns strings (bytewise for < >; a JSON number is written as
 *                 text, so 17850 matches "17850"). Missing cells fail the predicate and are
 *                 dropped unless keep_missing is true.
 *   impute        column, strategy: mean|median|mode|constant, value (constant only)
 *                 fills missing cells; mean/median need a numeric or timestamp column;
 *                 mode takes the most frequent value (ties: the first met).
 *   dedupe        keys?: [names] (default: all)          keep the first row of each key
 *   clip          column, min?, max? (at least one)      numeric or timestamp
 *   cast          column, type, on_error?: drop|missing (default drop)
 *   map_weights   column, map: {"view":1,...}, output? (default "weight"), default?: number
 *                 adds (or replaces) a numeric column; rows whose value is missing or not
 *                 in the map (when there is no default) are dropped and counted
 *   time_window   column, from?, to? (timestamps; from inclusive, to exclusive)
 *   derive        output, and value (a number) or column (exactly one)
 *                 adds (or replaces) column `output`: the constant, or a copy of `column`
 *                 with its type (e.g. an implicit-feedback weight of 1 per purchase line)
 *   rename        columns: {"Customer ID": "CustomerID", ...}  new names (validate.h's
 *                 column-name rule), each column keeping its place, type and cells; the
 *                 renamed set must leave every name distinct
 *   select        columns: [names]                       keep only these, in this order
 *
 * Thread safety: parsed steps are read-only and may be shared between threads.
 */
#ifndef QML_CLEAN_H
#define QML_CLEAN_H

#include <jansson.h>
#include <stddef.h>

#include "core/err.h"
#include "ml/csr.h"
#include "ml/frame.h"

#define QML_CLEAN_MAX_STEPS 64

typedef struct qml_clean_steps qml_clean_steps;

/* Parses a JSON array of steps. Returns 0 and *out (owned by the caller), or
 * QN_INVALID_ARGUMENT with a message like "steps[2] (filter): field \"cmp\"
 * must be one of ..." / QN_RESOURCE_EXHAUSTED. At most QML_CLEAN_MAX_STEPS. */
int qml_clean_parse(const char *json, size_t len, qml_clean_steps **out, qn_err *err);
/* The same from an already parsed JSON array (not taken over). */
int qml_clean_from_json(const json_t *steps, qml_clean_steps **out, qn_err *err);
void qml_clean_free(qml_clean_steps *s);
size_t qml_clean_count(const qml_clean_steps *s);

typedef struct qml_clean_step_report {
    char op[16];
    size_t rows_in, rows_out;
    size_t cells_changed;        /* imputed, clipped, cast to missing */
    char note[160];              /* why rows went or cells changed */
} qml_clean_step_report;

/* Plain data. */
typedef struct qml_clean_report {
    size_t rows_in, rows_out, nsteps;
    qml_clean_step_report steps[QML_CLEAN_MAX_STEPS];
} qml_clean_report;

/* Applies the steps in order. Returns 0 with *out a new frame (owned by the
 * caller) and rep filled (rep may be NULL), or a negative code with err naming
 * the step and column at fault (an unknown column or a type that does not fit
 * the step is QN_INVALID_ARGUMENT). in is not changed. */
int qml_clean_apply(const qml_frame *in, const qml_clean_steps *s, qml_frame **out,
                    qml_clean_report *rep, qn_err *err);
/* The same, over a frame the caller gives up: in is consumed (freed, or its
 * arrays become *out's) whether the call succeeds or not. The result and the
 * report are those qml_clean_apply gives for the same frame, but the rows
 * that row steps keep are compacted in place and a derive adds its column
 * to the same arrays, so the kept cells are not copied into fresh memory
 * (what prep does with the frame it read). */
int qml_clean_apply_owned(qml_frame *in, const qml_clean_steps *s, qml_frame **out,
                          qml_clean_report *rep, qn_err *err);

/* The text of cell r of c as an id (what interactions use): the string of a
 * categorical cell, a number written shortest ("12346"), a timestamp as
 * qml_format_timestamp, a boolean as "true"/"false". Returns the string (the
 * dictionary's or buf, cap >= 40); the cell must not be missing. Thread-safe. */
const char *qml_cell_text(const qml_column *c, size_t r, char *buf, size_t cap);

/* ---- interactions -------------------------------------------------------- */

/* A user x item confidence matrix and the ids of its rows and columns.
 * Ids are the cells' strings (numbers written shortest: 12346, not
 * 12346.000000), coded in order of first appearance. Owns all three. */
typedef struct qml_interactions {
    qml_csr *matrix;
    qml_dict *users;             /* row r <-> qml_dict_str(users, r) */
    qml_dict *items;             /* column c <-> qml_dict_str(items, c) */
    size_t rows_used;
    size_t rows_skipped;         /* a missing user, item or weight */
} qml_interactions;

/* Sums one confidence per row into (user, item): the weight column's value,
 * or 1 when weight_col is NULL. Rows with a missing user, item or weight are
 * skipped and counted. Returns 0 or a negative code with err filled (unknown
 * column, a categorical weight column, out of memory). */
int qml_interactions_build(const qml_frame *f, const char *user_col, const char *item_col,
                           const char *weight_col, qml_interactions *out, qn_err *err);
void qml_interactions_free(qml_interactions *ia);

#endif
