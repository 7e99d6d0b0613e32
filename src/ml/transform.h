/*
 * transform.h - fitted feature pipelines: the bridge from a frame (training)
 * or raw named inputs (serving) to a dense float matrix a model consumes.
 *
 * A pipeline spec lists input columns, each with a short chain of steps:
 * an optional impute step, then at most one encoder (standardize, min-max,
 * one-hot with an unknown bucket, or signed/unsigned feature hashing). Fitting
 * learns each step's state from a frame (means, medians, categories, ...);
 * the fitted pipeline serializes to JSON, is stored in the model manifest
 * ("transforms"), and is applied byte-for-byte the same way at serve time, so
 * training and serving cannot skew.
 *
 *     qml_tf_step temp_steps[] = {{.op = QML_TF_IMPUTE, .impute = QML_IMPUTE_MEDIAN},
 *                                 {.op = QML_TF_STANDARDIZE}};
 *     qml_tf_step season_steps[] = {{.op = QML_TF_ONEHOT}};
 *     qml_feature_spec spec[] = {{"temp", temp_steps, 2}, {"season", season_steps, 1}};
 *     qml_features *fp;
 *     if (qml_features_fit(spec, 2, frame, &fp, &err) < 0) ...
 *     size_t d = qml_features_n_features(fp);   // 1 + (#seasons + 1 unknown)
 *     float *X = malloc(qml_frame_nrows(frame) * d * sizeof *X);
 *     qml_features_transform(fp, frame, X, &err);
 *     char *json = qml_features_to_json(fp, &err);    // into the manifest
 *     ...
 *     // at serve time, one request, inputs by name:
 *     qml_raw_value t = {QML_RAW_NUM, .num = 0.3}, s = {QML_RAW_STR, .str = "2"};
 *     qml_raw_input in[] = {{"temp", &t}, {"season", &s}};
 *     qml_features_transform_raw(fp, in, 2, 1, X, &err);
 *     qml_features_free(fp);
 *
 * Column kinds. A frame column that is NUMERIC, BOOLEAN or TIMESTAMP is a
 * numeric input; a CATEGORICAL one is a categorical input. One-hot and hashing
 * also accept numeric inputs: the value's key is its "%.15g" text ("1", "0.25"),
 * so integer-coded categories (season 1..4) work without a cast. A categorical
 * input must end in one-hot or hashing.
 *
 * Missing values. A missing cell (or NaN, or an empty string at serve time) is
 * replaced by the fitted impute value when the chain has an impute step, and
 * is an error naming the column otherwise. Fitting refuses a column with
 * missing values and no impute step, so the error cannot first appear in
 * production. +-Inf is always an error.
 *
 * Feature names: "temp" for a numeric column, "season=2" for each one-hot
 * category followed by "season=__unknown__", "city#0".."city#<n-1>" for hash
 * buckets.
 *
 * Ownership and threads: a fitted qml_features is immutable; any number of
 * threads may transform with it at once. The spec passed to fit is copied.
 */
#ifndef QML_TRANSFORM_H
#define QML_TRANSFORM_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "ml/frame.h"

typedef enum qml_tf_op {
    QML_TF_IMPUTE = 0,
    QML_TF_STANDARDIZE,   /* (x - mean) / std, population std; std 0 -> 1 */
    QML_TF_MINMAX,        /* (x - min) / (max - min); range 0 -> 1 */
    QML_TF_ONEHOT,        /* one column per kept category + one "unknown" */
    QML_TF_HASH,          /* n_buckets columns, FNV-1a 64 of the key */
} qml_tf_op;

typedef enum qml_impute_strategy {
    QML_IMPUTE_MEAN = 0,      /* numeric only */
    QML_IMPUTE_MEDIAN,        /* numeric only; mean of the two middles when even */
    QML_IMPUTE_MOST_FREQUENT, /* ties: smallest value / lexicographically first string */
    QML_IMPUTE_CONSTANT,      /* .fill_num for numeric, .fill_str for categorical */
} qml_impute_strategy;

/* One step of a chain, as asked for (unfitted). Fields not used by op are ignored. */
typedef struct qml_tf_step {
    qml_tf_op op;
    qml_impute_strategy impute;   /* IMPUTE */
    double fill_num;              /* IMPUTE CONSTANT, numeric input */
    const char *fill_str;         /* IMPUTE CONSTANT, categorical input */
    int max_categories;           /* ONEHOT: keep at most this many (by count); 0 = all */
    int min_frequency;            /* ONEHOT: drop categories seen fewer times; 0 = keep all */
    int n_buckets;                /* HASH: 1 .. QML_TF_MAX_BUCKETS */
    int hash_signed;              /* HASH: add +-1 (sign from the hash's top bit) instead of +1 */
} qml_tf_step;

typedef struct qml_feature_spec {
    const char *column;
    const qml_tf_step *steps;
    size_t n_steps;
} qml_feature_spec;

#define QML_TF_MAX_BUCKETS (1 << 20)
#define QML_TF_MAX_FEATURES (1 << 22)
#define QML_TF_UNKNOWN "__unknown__"

typedef struct qml_features qml_features;

/* Fits a pipeline on frame. spec lists n input columns (unique names) with
 * their chains. Returns 0 and *out (caller frees with qml_features_free), or
 * a negative code with err naming the column at fault: QN_NOT_FOUND for a
 * column absent from the frame, QN_INVALID_ARGUMENT for a bad chain, a
 * strategy that does not fit the column's kind, missing values without an
 * impute step, or an empty frame. Thread-safe (frame is only read). */
int qml_features_fit(const qml_feature_spec *spec, size_t n, const qml_frame *frame,
                     qml_features **out, qn_err *err);

void qml_features_free(qml_features *f);

/* Width of the output rows. */
size_t qml_features_n_features(const qml_features *f);
/* Name of output feature i (owned by f), NULL when i is out of range. */
const char *qml_features_name(const qml_features *f, size_t i);
/* Number of input columns and the name of input i (owned by f). */
size_t qml_features_n_inputs(const qml_features *f);
const char *qml_features_input(const qml_features *f, size_t i);
/* The output features input i becomes: [*offset, *offset + *width) (one
 * feature for a numeric column, its one-hot or hash buckets otherwise).
 * 0, or -1 when i is out of range. */
int qml_features_slice(const qml_features *f, size_t i, size_t *offset, size_t *width);

/* Transforms every row of frame into out (nrows x n_features floats, row
 * major, caller-allocated). Columns are found by name; extra columns are
 * ignored. Returns 0, or a negative code with err naming the column (and row)
 * at fault; out is then partly written. Thread-safe. */
int qml_features_transform(const qml_features *f, const qml_frame *frame, float *out,
                           qn_err *err);

/* A raw input value as a request carries it. */
typedef enum qml_raw_kind { QML_RAW_MISSING = 0, QML_RAW_NUM, QML_RAW_STR } qml_raw_kind;
typedef struct qml_raw_value {
    qml_raw_kind kind;
    double num;         /* QML_RAW_NUM; NaN counts as missing */
    const char *str;    /* QML_RAW_STR, NUL-terminated; "" counts as missing */
} qml_raw_value;

/* One named input: n_rows values (a column of the request batch). */
typedef struct qml_raw_input {
    const char *name;
    const qml_raw_value *values;
} qml_raw_input;

/* Transforms a small batch given as named columns of raw values (serve's
 * view). Each of the pipeline's inputs must appear exactly once among the
 * n_inputs (others are ignored), each with n_rows values. Numeric inputs take
 * numbers or strings that parse entirely as numbers; categorical inputs take
 * strings or numbers (keyed by "%.15g"). Writes n_rows x n_features floats to
 * out. Fails with QN_INVALID_ARGUMENT naming the input and row: missing input,
 * duplicate input, wrong type, missing value without an imputer, infinity.
 * Thread-safe. */
int qml_features_transform_raw(const qml_features *f, const qml_raw_input *inputs,
                               size_t n_inputs, size_t n_rows, float *out, qn_err *err);

/* The fitted pipeline as compact JSON text (malloc'd, caller frees):
 * {"format":"quern.features/1","n_features":N,"columns":[{"name","type",
 *  "steps":[{"op":"impute","value":...},{"op":"standardize","mean","std"},
 *  {"op":"minmax","min","max"},{"op":"onehot","categories":[...]},
 *  {"op":"hash","buckets","signed"}]}]}.
 * Doubles are written with 17 significant digits, so a reload is exact.
 * Returns NULL with err filled when out of memory. Thread-safe. */
char *qml_features_to_json(const qml_features *f, qn_err *err);

/* Parses what qml_features_to_json wrote (len bytes, need not be
 * NUL-terminated). Refuses, with QN_INVALID_ARGUMENT and the JSON path at
 * fault, anything malformed: bad syntax, unknown format/op/type, a chain in
 * the wrong order, non-finite or zero scales, duplicate names or categories,
 * bucket or feature counts out of bounds, n_features inconsistent. */
int qml_features_from_json(const char *json, size_t len, qml_features **out, qn_err *err);

#endif
