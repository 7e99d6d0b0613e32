/*
 * mlflow_parse.h - parsers of the text MLflow clients send: the filter of
 * registered-model and model-version searches, and an MLmodel file (YAML)
 * as far as serving an xgboost flavour needs.
 *
 *     mlf_cond conds[MLF_MAX_CONDS];
 *     int n;
 *     static const char *const keys[] = {"name", NULL};
 *     if (mlf_filter(arena, "name LIKE 'ads%' AND tags.team = 'ml'", keys, conds, &n, &err) < 0)
 *         ... 400 with err.msg (it names the character where parsing stopped)
 *     if (mlf_matches(registered_model_json, conds, n)) ...
 *
 * Thread-safe; nothing is kept between calls.
 */
#ifndef QUERN_REGISTRY_MLFLOW_PARSE_H
#define QUERN_REGISTRY_MLFLOW_PARSE_H

#include <jansson.h>

#include "core/arena.h"
#include "core/err.h"

#define MLF_MAX_CONDS 16

/* One condition of a search filter: key op value(s). */
typedef struct mlf_cond {
    char key[260];  /* "name", "run_id", "source_path", "version_number", "tags.<k>" */
    char op[8];     /* "=", "!=", "LIKE", "ILIKE", "IN" */
    char *vals[32]; /* in the arena; one unless IN */
    int nvals;
} mlf_cond;

/* Parses filter f (NUL-terminated) into at most MLF_MAX_CONDS conditions
 * (*n of them; 0 for an empty filter). allowed: the NULL-terminated keys
 * besides tags.<key> this search takes. Values live in arena a. 0, or
 * QN_INVALID_ARGUMENT with a message naming the character at fault. */
int mlf_filter(qn_arena *a, const char *f, const char *const *allowed, mlf_cond *conds, int *n, qn_err *err);
/* 1 when item (a RegisteredModel or ModelVersion as MLflow's JSON has it:
 * "name", "run_id", "source", "version", "tags":[{"key","value"}]) meets
 * every condition. */
int mlf_matches(const json_t *item, const mlf_cond *conds, int n);

/* What an MLmodel file says that Quern uses (each NULL when absent; owned,
 * freed by mlf_mlmodel_free). */
typedef struct mlf_mlmodel {
    char *xgb_data, *xgb_format, *sig_inputs;
    int has_xgboost;
} mlf_mlmodel;

/* Reads flavors.xgboost.{data,model_format} and signature.inputs (a JSON
 * string, possibly folded over lines by PyYAML) from MLmodel text. Never
 * fails on bad input: what it cannot read stays NULL (an allocation that
 * fails does too). */
void mlf_mlmodel_parse(const char *text, mlf_mlmodel *m);
void mlf_mlmodel_free(mlf_mlmodel *m);

#endif
