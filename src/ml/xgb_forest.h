/*
 * xgb_forest.h - XGBoost tree ensembles evaluated by libquern-ml itself
 * (internal to xgb.c).
 *
 * XGBoost's C prediction call parses two JSON configuration strings on every
 * call, which costs more than walking a hundred small trees for one row. For
 * the common models (gbtree with numeric splits; binary:logistic,
 * reg:squarederror, multi:softprob) the trees are read from the model's JSON
 * into flat arrays once, at load, and walked here with XGBoost's own
 * arithmetic (float32 sums in tree order from the base margin, the same
 * sigmoid and softmax). xgb.c checks the result against XGBoost's on probe
 * rows before it relies on it, and keeps the C API for anything else.
 *
 *     qml__forest *f;
 *     if (qml__forest_parse(json, len, &f) == 0) {
 *         qml__forest_predict(f, x, n_rows, n_cols, out);   // n_outputs per row
 *         qml__forest_free(f);
 *     }
 *
 * A forest is read-only after parsing: any number of threads may predict.
 */
#ifndef QML_XGB_FOREST_H
#define QML_XGB_FOREST_H

#include <stddef.h>
#include <stdint.h>

typedef struct qml__forest qml__forest;

/* Reads the model's JSON. 0 and *out, or -1 when the model is of a form this
 * evaluator does not take (another booster, categorical splits, another
 * objective, anything malformed): the caller then uses XGBoost's C API. */
int qml__forest_parse(const char *json, size_t len, qml__forest **out);
/* Floats per row: 1, or num_class for multi:softprob. */
size_t qml__forest_n_outputs(const qml__forest *f);
size_t qml__forest_n_features(const qml__forest *f);
/* A split threshold the trees use on feature j (the k-th modulo their count),
 * or 0 when no split reads it: probe values for checking a forest. */
float qml__forest_split_value(const qml__forest *f, size_t j, uint64_t k);
/* Row-major x (NaN = missing) -> out, n_rows * n_outputs floats. */
void qml__forest_predict(const qml__forest *f, const float *x, size_t n_rows, size_t n_cols,
                         float *out);
void qml__forest_free(qml__forest *f);

#endif
