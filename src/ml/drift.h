/*
 * drift.h - drift statistics of libquern-ml (DESIGN.md section 6).
 *
 * Two layers. The statistics themselves, each checked against scipy 1.10 on
 * the same data (tests/unit/ml/drift_reference.py): two-sample
 * Kolmogorov-Smirnov with scipy's exact and asymptotic p-values, chi-square
 * goodness of fit, the pooled two-proportion z-test, Wasserstein-1 (and its
 * normed form), Jensen-Shannon distance and PSI over binned proportions. And
 * the per-column decision (which method, which threshold, drifted or not)
 * with the dataset verdict, which profile.h applies to a current window.
 *
 *     qml_ks_result ks;
 *     if (qml_ks_2samp(ref, nref, cur, ncur, QML_KS_AUTO, &ks, &err) < 0) ...
 *     // ks.statistic, ks.p_value, ks.mode (what 'auto' resolved to)
 *
 *     // a reference fixed over many windows: sort it once (fsort.h)
 *     qml_fsort(ref, nref);
 *     qml_ks_2samp_ref(ref, nref, cur, ncur, QML_KS_AUTO, &ks, &err);  // sorts cur only
 *
 *     double js;
 *     qml_jensenshannon(ref_pct, cur_pct, nbins, M_E, &js, &err);  // natural log
 *
 *     qml_drift_opts o;
 *     qml_drift_opts_default(&o);          // Evidently's defaults
 *     o.share_threshold = 0.3;             // everything is configurable
 *     // then qml_profile_drift(profile, current_frame, &o, &report, &err)
 *
 * Conventions, chosen to match Evidently (its stattests) where it has one:
 *  - tests (KS, chi-square, z) flag drift when p_value <= threshold (DESIGN.md
 *    says "p<=0.05"; Evidently uses '<', which differs only at equality);
 *    distances (Wasserstein-normed, Jensen-Shannon, PSI) when statistic >=
 *    threshold;
 *  - Wasserstein is normed by the population std (ddof 0) of the reference,
 *    floored at 0.001 so that a constant reference does not divide by zero;
 *  - Jensen-Shannon uses the natural log by default, as Evidently does
 *    (scipy.spatial.distance.jensenshannon with base=None), so its range is
 *    [0, sqrt(ln 2)]; the base is a parameter;
 *  - empty bins are filled before JS and PSI as Evidently's get_binned_data
 *    does (qml_drift_fill_empty).
 * All functions are pure and thread-safe unless stated.
 */
#ifndef QML_DRIFT_H
#define QML_DRIFT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* ---- Kolmogorov-Smirnov --------------------------------------------------- */

typedef enum qml_ks_mode {
    QML_KS_AUTO = 0, /* exact when max(n1, n2) <= 10000, else asymptotic (scipy's rule) */
    QML_KS_EXACT,    /* exact; falls back to asymptotic when lcm(n1,n2) is too big */
    QML_KS_ASYMP,    /* kstwo.sf(D, round(n1*n2/(n1+n2))) as scipy does */
} qml_ks_mode;

typedef struct qml_ks_result {
    double statistic;  /* D = sup |F1 - F2|, ties handled as ks_2samp */
    double p_value;    /* two-sided */
    qml_ks_mode mode;  /* EXACT or ASYMP: what was actually used */
} qml_ks_result;

/* Two-sample two-sided KS test of a (na values) against b (nb values), as
 * scipy.stats.ks_2samp(a, b, method=mode). The inputs are not modified (sorted
 * copies are made). Returns 0, or QN_INVALID_ARGUMENT for an empty sample or
 * a NaN, QN_RESOURCE_EXHAUSTED. */
int qml_ks_2samp(const double *a, size_t na, const double *b, size_t nb, qml_ks_mode mode,
                 qml_ks_result *out, qn_err *err);

/* The same on inputs already sorted ascending (not checked; a NaN met on the
 * walk is an error rather than a hang); allocates nothing. */
int qml_ks_2samp_sorted(const double *a, size_t na, const double *b, size_t nb,
                        qml_ks_mode mode, qml_ks_result *out, qn_err *err);

/* The same with the reference sorted once beforehand (ascending, NaN-free:
 * qml_fsort), for a reference fixed over many windows: only a copy of cur is
 * sorted (cur is not modified). Results are identical to qml_ks_2samp on the
 * unsorted reference. Returns 0, QN_INVALID_ARGUMENT for an empty sample or a
 * NaN in cur, QN_RESOURCE_EXHAUSTED. */
int qml_ks_2samp_ref(const double *ref_sorted, size_t nref, const double *cur, size_t ncur,
                     qml_ks_mode mode, qml_ks_result *out, qn_err *err);

/* P(D_n >= d) for the two-sided one-sample Kolmogorov statistic with n
 * observations (scipy.stats.kstwo.sf(d, n)), following Simard and L'Ecuyer's
 * choice of method as scipy does. n >= 1. */
double qml_kolmogorov_sf(int64_t n, double d);

/* P(D_n^+ >= d), the one-sided statistic (scipy.special.smirnov(n, d)), by the
 * Birnbaum-Tingey sum. */
double qml_smirnov_sf(int64_t n, double d);

/* ---- chi-square, z-test ---------------------------------------------------- */

/* Upper tail of the chi-square distribution, Q(dof/2, x/2) (scipy.stats.chi2.sf). */
double qml_chi2_sf(double x, double dof);

/* Regularized upper incomplete gamma Q(a, x), a > 0, x >= 0. */
double qml_gamma_q(double a, double x);

/* Pearson chi-square of observed against expected counts over k >= 1 cells
 * (scipy.stats.chisquare(obs, exp)): statistic sum (o-e)^2/e with k-1 degrees
 * of freedom. A cell with e == 0 and o > 0 gives an infinite statistic and p 0.
 * Fails with QN_INVALID_ARGUMENT on k == 0 or a negative count. */
int qml_chisquare(const double *obs, const double *exp, size_t k, double *stat, double *p,
                  qn_err *err);

/* Evidently's chi-square drift test: expected = reference counts scaled to the
 * current total, over the union of categories (cells the reference never saw
 * have ref_counts[i] == 0). Fails when either total is 0. */
int qml_chisquare_drift(const double *ref_counts, const double *cur_counts, size_t k,
                        double *stat, double *p, qn_err *err);

/* Pooled two-proportion z-test of x1/n1 against x2/n2; p two-sided, computed
 * with erfc (no cancellation in the tail). When both samples are all one value
 * (pooled proportion 0 or 1) z is 0 and p is 1. Fails on n1 or n2 == 0, x > n. */
int qml_ztest_proportions(double x1, double n1, double x2, double n2, double *z, double *p,
                          qn_err *err);

/* ---- distances ------------------------------------------------------------- */

/* Wasserstein-1 distance between the empirical distributions of a and b
 * (scipy.stats.wasserstein_distance). Copies and sorts. */
int qml_wasserstein(const double *a, size_t na, const double *b, size_t nb, double *out,
                    qn_err *err);
/* The same on sorted inputs, no allocation. */
int qml_wasserstein_sorted(const double *a, size_t na, const double *b, size_t nb, double *out,
                           qn_err *err);
/* The same with the reference sorted beforehand; sorts a copy of cur only. */
int qml_wasserstein_ref(const double *ref_sorted, size_t nref, const double *cur, size_t ncur,
                        double *out, qn_err *err);
/* distance / max(ref_std, 0.001): Evidently's wasserstein_distance_norm. */
double qml_wasserstein_normed(double distance, double ref_std);

/* Jensen-Shannon distance of two nonnegative vectors over k cells, each
 * normalized to sum 1 first (scipy.spatial.distance.jensenshannon(p, q, base)).
 * base <= 0 means natural log. Fails when k == 0, a value is negative or a
 * vector sums to 0. */
int qml_jensenshannon(const double *p, const double *q, size_t k, double base, double *out,
                      qn_err *err);

/* Population stability index sum (p_i - q_i) ln(p_i / q_i) over proportions
 * that must all be > 0 (fill empty bins first). */
int qml_psi(const double *p, const double *q, size_t k, double *out, qn_err *err);

/* Evidently's empty-bin rule, in place on proportions: zeros become 0.0001, or
 * min(nonzero)/1e6 when the smallest nonzero proportion is <= 0.0001. */
void qml_drift_fill_empty(double *pct, size_t k);

/* Counts of x (n values) in the bins of edges[0..nbins] (ascending). Bins are
 * half open [e_i, e_i+1) except the last, closed, as numpy.histogram; values
 * below edges[0] fall in the first bin and above edges[nbins] in the last, so
 * a current window outside the reference range still counts (NaN is skipped).
 * counts must hold nbins doubles; they are overwritten. */
void qml_histogram_clamped(const double *x, size_t n, const double *edges, size_t nbins,
                           double *counts);

/* ---- per-column decisions and the dataset verdict -------------------------- */

typedef enum qml_drift_method {
    QML_DRIFT_AUTO = 0,  /* the default choice of DESIGN.md section 6 */
    QML_DRIFT_KS,
    QML_DRIFT_CHISQUARE,
    QML_DRIFT_ZTEST,
    QML_DRIFT_WASSERSTEIN,     /* normed by the reference std */
    QML_DRIFT_JENSENSHANNON,
    QML_DRIFT_PSI,
} qml_drift_method;

/* "auto", "ks", "chisquare", "ztest", "wasserstein", "jensenshannon", "psi". */
const char *qml_drift_method_name(qml_drift_method m);
int qml_drift_method_parse(const char *s, qml_drift_method *m);
/* 1 for the hypothesis tests (drift when p <= threshold), 0 for distances. */
int qml_drift_method_is_test(qml_drift_method m);

/* A per-column override; threshold NAN keeps the method's default. */
typedef struct qml_drift_column_opts {
    const char *column;
    qml_drift_method method;
    double threshold;
} qml_drift_column_opts;

typedef struct qml_drift_opts {
    size_t small_reference_rows;   /* 1000: at most this many reference rows -> tests */
    double share_threshold;        /* 0.5: dataset drift when drifted share >= this */
    double ks_threshold;           /* 0.05 (p-value) */
    double chisquare_threshold;    /* 0.05 (p-value) */
    double ztest_threshold;        /* 0.05 (p-value) */
    double wasserstein_threshold;  /* 0.1 (normed distance) */
    double jensenshannon_threshold;/* 0.1 */
    double psi_threshold;          /* 0.1 */
    double js_base;                /* <= 0: natural log (Evidently) */
    qml_ks_mode ks_mode;           /* AUTO */
    const qml_drift_column_opts *columns;  /* overrides, not owned */
    size_t n_columns;
} qml_drift_opts;

/* Fills o with the defaults above. */
void qml_drift_opts_default(qml_drift_opts *o);

/* The method 'auto' resolves to for a column: numeric columns get KS when the
 * reference has <= small_reference_rows rows, else Wasserstein; categorical
 * ones z-test (exactly 2 categories) or chi-square when small, else
 * Jensen-Shannon. */
qml_drift_method qml_drift_default_method(const qml_drift_opts *o, int categorical,
                                          size_t n_categories, size_t reference_rows);
/* The default threshold of a method under o. */
double qml_drift_default_threshold(const qml_drift_opts *o, qml_drift_method m);

typedef struct qml_drift_feature {
    char *column;             /* owned */
    qml_drift_method method;  /* never AUTO */
    double statistic;         /* D, chi2, z, normed distance, JS, PSI (may be inf) */
    double p_value;           /* NAN for distances */
    double threshold;
    int drifted;
    size_t n_reference, n_current;  /* non-missing values compared */
} qml_drift_feature;

typedef struct qml_drift_report {
    qml_drift_feature *features;  /* owned */
    size_t n_features;
    size_t n_drifted;
    double share;            /* n_drifted / n_features */
    double share_threshold;
    int dataset_drift;       /* share >= share_threshold (and n_features > 0) */
} qml_drift_report;

/* Sets n_drifted, share and dataset_drift from the features. */
void qml_drift_report_finish(qml_drift_report *r, double share_threshold);
void qml_drift_report_free(qml_drift_report *r);

/* The report as JSON (the data of quern.drift.detected):
 * {"dataset_drift":b,"share":x,"share_threshold":x,"n_drifted":n,"n_features":n,
 *  "features":[{"column":s,"method":s,"statistic":x|null,"p_value":x|null,
 *  "threshold":x,"drifted":b,"n_reference":n,"n_current":n}]}. A non-finite
 * statistic is null. Returns a new reference, or NULL when out of memory. */
json_t *qml_drift_report_to_json(const qml_drift_report *r);

#endif
