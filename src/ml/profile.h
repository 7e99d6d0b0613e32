/*
 * profile.h - the reference profile of a training set, and drift against it.
 *
 * Built once at training time from the training frame and serialized into the
 * model bundle, a profile is what quern-monitor compares each current window
 * with, without the training data: per numeric column summary statistics,
 * exact quantiles, a histogram (bin edges from the reference) and a bounded,
 * seeded reservoir sample that stands in for the data in KS and Wasserstein
 * (kept sorted beside it, so that each window compared sorts only itself);
 * per categorical column the category counts (top N, the rest as "other").
 *
 *     qml_profile_opts po;
 *     qml_profile_opts_default(&po);            // reservoir 5000, seed 42
 *     qml_profile *p;
 *     if (qml_profile_build(train, &po, &p, &err) < 0) ...
 *     char *json = qml_profile_to_json(p, &err);   // into the bundle
 *     ...
 *     qml_profile *q;
 *     qml_profile_from_json(json, strlen(json), &q, &err);
 *     qml_drift_opts o;
 *     qml_drift_opts_default(&o);
 *     qml_drift_report *r;
 *     if (qml_profile_drift(q, window, &o, &r, &err) < 0) ...
 *     json_t *event = qml_drift_report_to_json(r);  // quern.drift.detected
 *     qml_drift_report_free(r); qml_profile_free(q); qml_profile_free(p); free(json);
 *
 * Numeric, timestamp: numeric profile. Categorical and boolean (categories
 * "0" and "1"): categorical profile. The default drift method depends on the
 * full reference row count (nrows), not on the reservoir size.
 * Ownership: a profile owns every array and string in it. Plain data; a built
 * profile is read-only and may be shared by threads.
 */
#ifndef QML_PROFILE_H
#define QML_PROFILE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "ml/drift.h"
#include "ml/frame.h"

#define QML_PROFILE_NQ 7
/* The quantile levels of qml_profile_column.quantiles: 1,5,25,50,75,95,99 %. */
extern const double qml_profile_quantile_levels[QML_PROFILE_NQ];

typedef struct qml_profile_opts {
    size_t reservoir_size;  /* 5000; values kept per numeric column (1..10^7) */
    uint64_t seed;          /* 42; the reservoir draws depend only on it */
    size_t max_categories;  /* 256; categories kept per column, the rest -> other */
    size_t nbins;           /* 0: Sturges, ceil(log2(count)) + 1 */
} qml_profile_opts;

void qml_profile_opts_default(qml_profile_opts *o);

typedef struct qml_profile_column {
    char *name;
    qml_type type;
    uint64_t count;    /* non-missing cells */
    uint64_t missing;
    int categorical;   /* 1 for CATEGORICAL and BOOLEAN */
    /* numeric; NAN when count == 0 */
    double mean, std;  /* std is the population std (ddof 0) */
    double min, max;
    double quantiles[QML_PROFILE_NQ];  /* exact, numpy's linear interpolation */
    size_t nbins;
    double *edges;     /* nbins + 1, ascending; uniform over [min, max] */
    uint64_t *hist;    /* nbins counts (last bin closed) */
    size_t sample_len;
    double *sample;    /* reservoir (Algorithm R), in reservoir order */
    double *sample_sorted;  /* the same values sorted ascending; derived when the
                               profile is built or loaded, never serialized, so a
                               monitor that keeps a version's profile sorts it once */
    /* categorical */
    size_t ncat;
    char **cats;       /* by count descending, then name */
    uint64_t *cat_counts;
    uint64_t other;    /* cells in categories beyond max_categories */
} qml_profile_column;

typedef struct qml_profile {
    uint64_t nrows;
    size_t ncols;
    qml_profile_column *cols;
    size_t reservoir_size;
    uint64_t seed;
    size_t max_categories;
} qml_profile;

/* Profiles every column of f. Returns 0 and *out (caller frees with
 * qml_profile_free), or QN_INVALID_ARGUMENT (bad options) /
 * QN_RESOURCE_EXHAUSTED with err filled. An all-missing column is profiled
 * (count 0) but cannot be compared later. Thread-safe on distinct outputs. */
int qml_profile_build(const qml_frame *f, const qml_profile_opts *o, qml_profile **out,
                      qn_err *err);

void qml_profile_free(qml_profile *p);

/* The profile as compact JSON (a new malloc'ed string, the caller frees), or
 * NULL with err filled. Doubles print with 17 digits so that loading and
 * dumping again gives the same bytes. */
char *qml_profile_to_json(const qml_profile *p, qn_err *err);

/* Parses and validates a profile (len bytes, not necessarily NUL-terminated).
 * Everything is checked (counts add up, edges ascending, sizes consistent), so
 * outside input cannot make later drift code misbehave. Returns 0 and *out, or
 * QN_INVALID_ARGUMENT naming the field at fault. */
int qml_profile_from_json(const char *json, size_t len, qml_profile **out, qn_err *err);

/* Compares every profiled column with the same-named column of cur (missing
 * cells are ignored) using o's per-column method and threshold or the default
 * choice, and gives the dataset verdict. Returns 0 and *out (free with
 * qml_drift_report_free), or QN_INVALID_ARGUMENT when a column is absent, of
 * another kind, has no values on either side, or a method does not fit its
 * kind (KS/Wasserstein need numeric, chi-square/z-test categorical), or an
 * override names no profiled column. */
int qml_profile_drift(const qml_profile *p, const qml_frame *cur, const qml_drift_opts *o,
                      qml_drift_report **out, qn_err *err);

/* One numeric column given as plain values (NaN = missing), for callers that
 * keep windows as arrays: the same checks, choice and statistic as
 * qml_profile_drift. Fills *out (out->column is malloc'ed: free it). Returns
 * 0, QN_NOT_FOUND for an unknown column, QN_INVALID_ARGUMENT as above. */
int qml_profile_drift_values(const qml_profile *p, const char *column, const double *values,
                             size_t n, const qml_drift_opts *o, qml_drift_feature *out,
                             qn_err *err);

#endif
