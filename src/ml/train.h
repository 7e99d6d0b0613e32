/*
 * train.h - one training run, independent of HTTP: what quern-train runs for a
 * job, and what it uses to evaluate the current production model on the same
 * holdout (champion/challenger).
 *
 *     qml_train_spec *spec;
 *     if (qml_train_spec_from_json(body, len, &spec, &err) < 0) -> 400, err names the field
 *     qml_train_opts o = {.progress = on_progress, .progress_ctx = job, .cancel = &job->cancel};
 *     qml_train_result res;
 *     if (qml_train_run(spec, frame, "jobs/42/bundle", &o, &res, &err) < 0) -> job failed
 *     // res.metrics {"roc_auc":0.92,...}, res.primary / res.primary_value,
 *     // res.holdout: the test rows; the bundle is in jobs/42/bundle
 *     json_t *champion;
 *     qml_model_evaluate(production_model, spec, res.holdout, &champion, &err);
 *     double old = json_number_value(json_object_get(champion, res.primary));
 *     if (res.higher_is_better ? res.primary_value > old + margin
 *                              : res.primary_value < old - margin) -> promote
 *     qml_train_result_free(&res);
 *     qml_train_spec_free(spec);
 *
 * The spec (JSON; unknown fields are refused, errors name the field):
 *   kind      "als" | "logistic" | "linear" | "xgboost"                      (required)
 *   params    the kind's parameters (all optional):
 *               als: factors 64, regularization 0.01, alpha 1, iterations 15,
 *                    cg_steps 3, threads 1, seed 42
 *               xgboost: num_round 100, max_depth 6, eta 0.3, subsample,
 *                    colsample_bytree, min_child_weight, gamma, lambda, alpha,
 *                    max_bin, seed, nthread, tree_method "hist", objective
 *                    (default binary:logistic for 2 classes, multi:softprob for
 *                    more; reg:squarederror, reg:logistic, count:poisson make a
 *                    regressor)
 *               logistic: C 1, eps 0.01
 *               linear: lambda 1, fit_intercept true
 *   label     the label column (tabular, required): numeric; classifiers need
 *             integer labels (map strings with a prep step, e.g. map_weights)
 *   features  [{column, impute?, fill?, encode?, buckets?, signed?, max_categories?,
 *             min_frequency?}] (tabular, optional). impute: mean | median |
 *             most_frequent | constant (with fill) | none; encode: standardize |
 *             minmax | onehot | hash (buckets, default 32) | none. Defaults per
 *             column type: numeric/boolean/timestamp -> impute mean (most_frequent when encoded
 *             by onehot or hash), then
 *             standardize for logistic/linear and nothing for xgboost;
 *             categorical -> impute most_frequent + onehot. Without "features",
 *             every column but the label and the excluded ones.
 *   exclude   [columns] left out of the default features
 *   user, item (als, required), weight (als, optional: summed per pair, else
 *             1 per row), time (als: the time column for a time split or a
 *             most-recent leave-k-out)
 *   split     {"kind":"random","ratio":0.2,"seed":42} |
 *             {"kind":"time","column":..,"cutoff":"2011-11-01"} (column defaults
 *             to "time") | {"kind":"leave_k_out","k":1,"seed":42} (als only).
 *             Default: random 0.2, seed 42.
 *   k         ranking cutoff for als metrics and the declared output shape (10)
 *   metric    the primary metric (default roc_auc for binary classifiers,
 *             accuracy for multiclass, rmse for regressors, map@k for als)
 *
 * Metrics (names in result.metrics and in the manifest):
 *   classifier: accuracy, log_loss, roc_auc (roc_auc and log_loss binary; log_loss
 *     multiclass is the mean -ln p(true class), clipped at 1e-15); binary also
 *     brier and the holdout calibration table as calibration.n.B and
 *     calibration.rate.B (B = 0..9, non-empty bins only; eval.h), which
 *     quern-monitor uses to estimate live accuracy and AUC before labels
 *   regressor: rmse, mae, r2, mean_error (mean of prediction - label)
 *   als: precision@k, recall@k, map@k, ndcg@k, auc, coverage, and the same for
 *     the popularity baseline as baseline.<name> (eval.h gives definitions)
 *   rows: n_train, n_test. Lower is better for log_loss, rmse and mae.
 */
#ifndef QML_TRAIN_H
#define QML_TRAIN_H

#include <jansson.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "ml/bundle.h"
#include "ml/frame.h"
#include "ml/model.h"

typedef enum qml_split_kind {
    QML_SPLIT_RANDOM = 0,
    QML_SPLIT_TIME,
    QML_SPLIT_LEAVE_K_OUT,
} qml_split_kind;

/* One requested feature; enums hold -1 for "the default". */
typedef struct qml_train_feature {
    char *column;
    int impute;          /* qml_impute_strategy, -1 default, -2 none */
    double fill_num;
    char *fill_str;
    int has_fill;
    int encode;          /* qml_tf_op (STANDARDIZE..HASH), -1 default, -2 none */
    int buckets, hash_signed, max_categories, min_frequency;
} qml_train_feature;

/* Plain data, made by qml_train_spec_from_json and freed by qml_train_spec_free. */
typedef struct qml_train_spec {
    char kind[16];
    json_t *params;                 /* the "params" object as given ({} when absent) */
    char *label;
    qml_train_feature *features;    /* NULL: the defaults */
    size_t n_features;
    char **exclude;
    size_t n_exclude;
    char *user, *item, *weight, *time;
    struct {
        qml_split_kind kind;
        double ratio;
        uint64_t seed;
        char *column;
        double cutoff;              /* seconds since the epoch */
        int k;
    } split;
    int k;
    char *metric;                   /* NULL: the default for the task */
    json_t *source;                 /* the spec as parsed, stored in the manifest */
} qml_train_spec;

/* Parses a spec of len bytes (see the top of this file). Returns 0 and *out,
 * or QN_INVALID_ARGUMENT naming the field at fault ("params.factors must be an
 * integer >= 1", "unknown field \"lable\""), QN_RESOURCE_EXHAUSTED. */
int qml_train_spec_from_json(const char *json, size_t len, qml_train_spec **out, qn_err *err);
void qml_train_spec_free(qml_train_spec *s);

/* 1 when kind is one this library trains ("als", "logistic", "linear",
 * "xgboost"), 0 otherwise (NULL included). For checking a job's kind
 * before the job runs (quern-alert's retrain actions, quern-train). */
int qml_train_kind_known(const char *kind);

/* The iterations a run of kind will make with params (the spec's "params"
 * object, or NULL): ALS "iterations", XGBoost "num_round", each kind's own
 * default when absent; 0 for kinds that do not iterate. For progress and ETA
 * shown before the run starts. */
long qml_train_iterations(const char *kind, const json_t *params);

/* Stages a run reports, in order. */
typedef enum qml_train_stage {
    QML_STAGE_SPLIT = 0,
    QML_STAGE_TRANSFORMS,
    QML_STAGE_FIT,
    QML_STAGE_EVALUATE,
    QML_STAGE_PROFILE,
    QML_STAGE_BUNDLE,
    QML_STAGE_DONE,
} qml_train_stage;

/* "split", "transforms", "fit", "evaluate", "profile", "bundle", "done". */
const char *qml_train_stage_name(qml_train_stage s);

/* Called on the training thread at each stage and after each iteration of a
 * model that iterates (ALS iterations, XGBoost rounds): iteration is 1-based
 * (0 between stages), loss NAN when unknown, fraction the share of the run
 * done in [0, 1]. */
typedef void (*qml_train_progress_fn)(void *ctx, qml_train_stage stage, int iteration,
                                      double loss, double fraction);

typedef struct qml_train_opts {
    qml_train_progress_fn progress;  /* may be NULL */
    void *progress_ctx;
    const atomic_int *cancel;        /* may be NULL; nonzero stops the run (QN_CANCELLED) at
                                        the next stage or iteration */
    const qml_frame *holdout;        /* may be NULL; when set, the whole frame trains, the
                                        split is skipped and this frame is the holdout */
    const char *dataset_name;        /* optional, into the manifest's "dataset" */
    int64_t dataset_version;
} qml_train_opts;

typedef struct qml_train_result {
    json_t *metrics;                 /* {"roc_auc":..., "n_train":..., ...} */
    char primary[32];                /* the primary metric's name */
    double primary_value;
    int higher_is_better;
    size_t n_rows, n_train, n_test;
    qml_frame *holdout;              /* the test rows (the given holdout's copy) */
    qml_model *model;                /* the trained model, as qml_model_load would give it */
    char manifest_digest[QML_DIGEST_STR];
} qml_train_result;

void qml_train_result_free(qml_train_result *r);

/* Runs spec on frame: splits (or takes opts->holdout), fits the transforms
 * and the model on the train part, evaluates on the holdout, profiles the
 * training features (tabular: the raw input columns; als: one row per
 * training event with "item_id" (categorical: item popularity) and
 * "user_activity" (numeric: that user's training events)), and writes the
 * bundle into out_dir (which must not hold a manifest yet). opts may be
 * NULL. Returns 0 and *result (free with qml_train_result_free), or a negative
 * code with err naming the column, field or stage at fault; QN_CANCELLED when
 * cancelled (out_dir may then hold partial files, but no manifest). The frame
 * is only read. One run per thread; runs on distinct frames may overlap. */
int qml_train_run(const qml_train_spec *spec, const qml_frame *frame, const char *out_dir,
                  const qml_train_opts *opts, qml_train_result *result, qn_err *err);

/* The metrics of the training run, for an already loaded model (the current
 * production version, say) on holdout, computed exactly as qml_train_run
 * computes them: a JSON object in *metrics (caller decrefs). The spec gives
 * the label (tabular), user/item/weight columns and k (als). Returns 0, or
 * a negative code (a column missing from the holdout, a kind that differs
 * from the spec's). Thread-safe. */
int qml_model_evaluate(const qml_model *m, const qml_train_spec *spec, const qml_frame *holdout,
                       json_t **metrics, qn_err *err);

/* The primary metric of spec for model kind/task ("roc_auc", "map@10", ...)
 * into name (cap >= 32) and whether higher is better; QN_INVALID_ARGUMENT
 * when spec->metric is not produced for that task. */
int qml_train_primary_metric(const qml_train_spec *spec, qml_task task, char *name, size_t cap,
                             int *higher_is_better, qn_err *err);

#endif
