/*
 * eval.h - holdout splits and evaluation metrics for libquern-ml.
 *
 * Splits: random rows (seeded), by time (a cut-off), and per-user
 * leave-k-out over a CSR or an interactions list. Metrics: accuracy, log
 * loss and ROC AUC for classifiers; RMSE, MAE and R2 for regressors;
 * precision@k, recall@k, MAP@k, NDCG@k, AUC and catalog coverage for
 * recommenders, always reported beside a popularity baseline.
 *
 *     qml_split s;
 *     qml_split_random(nrows, 0.2, 42, &s, &err);   // s.train / s.test row indices
 *     ...
 *     double auc;
 *     qml_metric_roc_auc(y_test, p_test, s.n_test, &auc, &err);
 *     qml_split_free(&s);
 *
 *     qml_csr *tr, *te;
 *     qml_split_csr_leave_k_out(interactions, 1, 42, &tr, &te, &err);
 *     qml_rec_report model, base;
 *     qml_eval_recommender(tr, te, my_recommend, my_model, 10, 0, &model, &err);
 *     qml_eval_popularity(tr, te, 10, 0, &base, &err);
 *
 * Definitions (binary relevance; for one user, R = held-out items, L = the
 * recommended list, hits(i) = 1 when L[i] is in R, positions from 1):
 *   precision@k = |L[1..k] & R| / k           (k, not |L|: a short list is not rewarded)
 *   recall@k    = |L[1..k] & R| / |R|
 *   AP@k        = sum_{i<=k} P@i * hits(i) / min(k, |R|)     MAP@k = mean over users
 *   NDCG@k      = DCG / IDCG, DCG = sum_{i<=k} hits(i) / log2(i + 1),
 *                 IDCG = the DCG of min(k, |R|) hits at the top
 *   AUC         = the share of (relevant, non-relevant) candidate pairs ranked
 *                 in the right order; candidates are the items the user did not
 *                 see in training (plus R); items beyond the list are tied below
 *                 it (a tie counts 1/2). Exact when the list covers every candidate.
 *   coverage    = |union of every user's L[1..k]| / n_items
 * Users without held-out items are skipped; the averages are over the others
 * (users whose AUC is undefined, with no non-relevant candidate, are left out of
 * the AUC average only).
 *
 * Everything here is reentrant and only reads its inputs.
 */
#ifndef QML_EVAL_H
#define QML_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "ml/csr.h"

/* ---- splits ---------------------------------------------------------------- */

/* Row indices of a train/test split, each ascending. Owns both arrays. */
typedef struct qml_split {
    size_t *train, *test;
    size_t n_train, n_test;
} qml_split;

void qml_split_free(qml_split *s);

/* round(n * test_ratio) rows drawn uniformly without replacement (seeded
 * Fisher-Yates, the same on every platform) go to test, the rest to train.
 * test_ratio in [0, 1]. Returns 0, or QN_INVALID_ARGUMENT / QN_RESOURCE_EXHAUSTED. */
int qml_split_random(size_t n, double test_ratio, uint64_t seed, qml_split *out, qn_err *err);

/* Rows with time[i] < cutoff to train, >= cutoff to test. A NaN time is
 * QN_INVALID_ARGUMENT naming the row. */
int qml_split_by_time(const double *time, size_t n, double cutoff, qml_split *out, qn_err *err);

/* An events list: n (user, item, value[, time]) events, users in
 * [0, n_users), items in [0, n_items). value may be NULL (each event counts
 * 1); time may be NULL. */
typedef struct qml_events {
    size_t n;
    const int32_t *user, *item;
    const float *value;
    const double *time;
    int32_t n_users, n_items;
} qml_events;

/* Per-user leave-k-out on a CSR (users x items): for every user with more
 * than k items, k of them chosen at random (seeded) move to test; users with
 * k or fewer stay whole in train. Both outputs have m's shape; caller frees. */
int qml_split_csr_leave_k_out(const qml_csr *m, int k, uint64_t seed, qml_csr **train,
                              qml_csr **test, qn_err *err);

/* The same over an interactions list, by distinct (user, item) pairs (every
 * event of a held-out pair goes to test, so an item is never on both sides).
 * With times, each user's k most recently seen items are held out (ties by
 * item id); without, k at random. Values of repeated events are summed. */
int qml_split_events_leave_k_out(const qml_events *in, int k, uint64_t seed, qml_csr **train,
                                 qml_csr **test, qn_err *err);
/* The same choice as row indices of the events (for callers that keep the
 * holdout as rows of a frame, as train does). */
int qml_split_events_leave_k_out_rows(const qml_events *in, int k, uint64_t seed,
                                      qml_split *out, qn_err *err);

/* Events before cutoff to train, the others to test (needs in->time). */
int qml_split_events_by_time(const qml_events *in, double cutoff, qml_csr **train,
                             qml_csr **test, qn_err *err);

/* ---- classifier and regressor metrics ---------------------------------------
 * Each takes n >= 1 pairs and returns 0 with *out set, or QN_INVALID_ARGUMENT. */

/* Share of y_pred[i] == y_true[i]. */
int qml_metric_accuracy(const double *y_true, const double *y_pred, size_t n, double *out,
                        qn_err *err);
/* Binary log loss, y in {0, 1}, p = P(y = 1) clipped to [eps, 1 - eps]
 * (eps <= 0 means 1e-15); natural log, mean over rows. */
int qml_metric_log_loss(const double *y, const double *p, size_t n, double eps, double *out,
                        qn_err *err);
/* Binary ROC AUC, y in {0, 1}, by the rank-sum (Mann-Whitney) formula with
 * tied scores given their average rank, as sklearn's roc_auc_score. Needs
 * both classes present. */
int qml_metric_roc_auc(const double *y, const double *score, size_t n, double *out,
                       qn_err *err);
int qml_metric_rmse(const double *y, const double *yhat, size_t n, double *out, qn_err *err);
int qml_metric_mae(const double *y, const double *yhat, size_t n, double *out, qn_err *err);
/* 1 - SS_res / SS_tot; when y is constant (SS_tot = 0): 1 if the predictions
 * are perfect, else 0 (sklearn's force_finite). */
int qml_metric_r2(const double *y, const double *yhat, size_t n, double *out, qn_err *err);

/* Mean of yhat - y: the bias of a regressor (positive: it over-predicts). */
int qml_metric_mean_error(const double *y, const double *yhat, size_t n, double *out, qn_err *err);
/* Brier score, y in {0, 1}, p = P(y = 1) in [0, 1]: mean (p - y)^2. */
int qml_metric_brier(const double *y, const double *p, size_t n, double *out, qn_err *err);

/* ---- calibration and confidence-based performance estimation (CBPE) -------- */

#define QML_CAL_BINS 10

/* A calibration table of a binary classifier: QML_CAL_BINS equal-width bins
 * of p = P(y = 1) over [0, 1] (bin b holds b/10 <= p < (b+1)/10, p = 1 in the
 * last); per bin the rows, the mean p and the observed rate of y = 1 (both
 * NaN when the bin is empty). */
typedef struct qml_calibration {
    double n[QML_CAL_BINS];
    double mean_p[QML_CAL_BINS];
    double rate[QML_CAL_BINS];
} qml_calibration;

/* The table of n (y, p) pairs (y in {0, 1}, p in [0, 1]). */
int qml_calibration_table(const double *y, const double *p, size_t n, qml_calibration *out,
                          qn_err *err);
/* Histogram-binned calibration: p mapped to the observed rate of its bin in
 * cal; p itself when that bin was empty. */
double qml_calibrate(const qml_calibration *cal, double p);

/* CBPE of a binary classifier (no labels), as NannyML's CBPE: score[i] is
 * the model's own output (its decision is score >= 0.5, its ranking the
 * order of score), p[i] the calibrated probability that row i is positive.
 * The expected accuracy is the mean of p where the decision is positive and
 * 1 - p where it is negative (the mean of max(p, 1 - p) when score = p); the
 * expected ROC AUC is the area under the curve of expected
 * TPR = sum_{score_i >= t} p_i / sum p against expected
 * FPR = sum_{score_i >= t} (1 - p_i) / sum (1 - p) over every threshold t
 * (tied scores one step, trapezoids). score may be NULL (= p). *auc is NaN
 * when sum p or sum (1 - p) is 0 (every row surely one class). Returns 0, or
 * QN_INVALID_ARGUMENT for n == 0 or a p outside [0, 1], QN_RESOURCE_EXHAUSTED. */
int qml_cbpe_binary(const double *score, const double *p, size_t n, double *accuracy,
                    double *auc, qn_err *err);

/* ---- recommender metrics ---------------------------------------------------- */

typedef struct qml_rec_user {
    double precision, recall, ap, ndcg;
    double auc;      /* NaN when undefined (no relevant or no non-relevant candidate) */
} qml_rec_user;

/* Metrics of one user (definitions above). recs: the ranked list (n_recs,
 * may exceed k: the tail is used by AUC only; duplicates are the caller's
 * fault); relevant: n_rel >= 1 distinct item ids; n_candidates: how many
 * items could have been ranked (>= n_rel and >= n_recs). Returns 0, or
 * QN_INVALID_ARGUMENT for k == 0, n_rel == 0, or too few candidates. */
int qml_rec_user_metrics(const int32_t *recs, size_t n_recs, const int32_t *relevant,
                         size_t n_rel, size_t k, size_t n_candidates, qml_rec_user *out,
                         qn_err *err);

typedef struct qml_rec_report {
    size_t k;
    size_t n_users;        /* users evaluated (with held-out items) */
    size_t n_auc_users;    /* of which with a defined AUC */
    double precision, recall, map, ndcg, auc, coverage;
} qml_rec_report;

/* A recommender under evaluation: writes up to n ranked item ids for user
 * (best first, items seen in training excluded) into items and their count
 * into *n_out. Returns 0 or a negative code with err filled (that aborts the
 * evaluation). */
typedef int (*qml_recommend_fn)(void *ctx, int32_t user, size_t n, int32_t *items,
                                size_t *n_out, qn_err *err);

/* Evaluates fn over every user with items in test (train and test have the
 * same shape): asks for max(k, rank_depth) items (rank_depth 0 = k), scores
 * the first k for precision..NDCG and coverage and the whole list for AUC.
 * Returns 0 with *report, or the callback's error, or QN_INVALID_ARGUMENT. */
int qml_eval_recommender(const qml_csr *train, const qml_csr *test, qml_recommend_fn fn,
                         void *ctx, size_t k, size_t rank_depth, qml_rec_report *report,
                         qn_err *err);

/* The popularity baseline: items ranked by the number of training users who
 * have them (ties by lower item id), each user's training items excluded. */
typedef struct qml_popularity qml_popularity;

qml_popularity *qml_popularity_new(const qml_csr *train, qn_err *err);
void qml_popularity_free(qml_popularity *p);
/* A qml_recommend_fn; ctx is a qml_popularity. Users outside train get the
 * plain ranking. Thread-safe. */
int qml_popularity_recommend(void *ctx, int32_t user, size_t n, int32_t *items, size_t *n_out,
                             qn_err *err);

/* qml_eval_recommender of the popularity baseline fitted on train. */
int qml_eval_popularity(const qml_csr *train, const qml_csr *test, size_t k, size_t rank_depth,
                        qml_rec_report *report, qn_err *err);

#endif
