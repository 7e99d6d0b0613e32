/*
 * libs.h - the numeric libraries libquern-ml calls, opened on first use
 * (internal to libquern-ml).
 *
 * XGBoost, OpenBLAS with LAPACKE, and liblinear cost a service several
 * megabytes of memory and, for OpenBLAS, a pool of threads the moment they
 * are mapped, yet most services never train and serve only needs XGBoost once
 * an XGBoost model arrives. So they are not linked: each is dlopen()ed by its
 * soname the first time a caller needs it, and called through a table of
 * function pointers typed from the libraries' own headers.
 *
 *     if (qml__need_xgb(err) < 0)       // once per entry point that may be first
 *         return err->code;
 *     qml__xgb.BoosterCreate(NULL, 0, &h);
 *
 * qml__need_* are thread-safe and cheap after the first call; a library that
 * cannot be opened gives QN_UNAVAILABLE naming it, every time it is asked for.
 * Code that holds an object made through a library (a booster) may use the
 * table without asking again.
 */
#ifndef QML_LIBS_H
#define QML_LIBS_H

#include <cblas.h>
#include <lapacke.h>
#include <linear.h>
#include <xgboost/c_api.h>

#include "core/err.h"

#define QML__FN(name) __typeof__(name) *

typedef struct {
    QML__FN(XGBGetLastError) GetLastError;
    QML__FN(XGDMatrixCreateFromMat_omp) DMatrixCreateFromMat_omp;
    QML__FN(XGDMatrixSetFloatInfo) DMatrixSetFloatInfo;
    QML__FN(XGDMatrixFree) DMatrixFree;
    QML__FN(XGBoosterCreate) BoosterCreate;
    QML__FN(XGBoosterFree) BoosterFree;
    QML__FN(XGBoosterSetParam) BoosterSetParam;
    QML__FN(XGBoosterUpdateOneIter) BoosterUpdateOneIter;
    QML__FN(XGBoosterEvalOneIter) BoosterEvalOneIter;
    QML__FN(XGBoosterPredictFromDense) BoosterPredictFromDense;
    QML__FN(XGBoosterPredictFromDMatrix) BoosterPredictFromDMatrix;
    QML__FN(XGBoosterLoadModelFromBuffer) BoosterLoadModelFromBuffer;
    QML__FN(XGBoosterSaveModelToBuffer) BoosterSaveModelToBuffer;
    QML__FN(XGBoosterSaveJsonConfig) BoosterSaveJsonConfig;
    QML__FN(XGBoosterGetNumFeature) BoosterGetNumFeature;
    QML__FN(XGBoosterBoostedRounds) BoosterBoostedRounds;
} qml__xgb_api;

typedef struct {
    QML__FN(cblas_ssyrk) ssyrk;
    QML__FN(cblas_dsyrk) dsyrk;
    QML__FN(cblas_ddot) ddot;
    QML__FN(LAPACKE_dlansy) dlansy;
    QML__FN(LAPACKE_dpotrf) dpotrf;
    QML__FN(LAPACKE_dpocon) dpocon;
    QML__FN(LAPACKE_dpotrs) dpotrs;
} qml__blas_api;

typedef struct {
    QML__FN(train) train;
    QML__FN(check_parameter) check_parameter;
    QML__FN(free_and_destroy_model) free_and_destroy_model;
    QML__FN(set_print_string_function) set_print_string_function;
} qml__liblinear_api;

#undef QML__FN

extern qml__xgb_api qml__xgb;
extern qml__blas_api qml__blas;
extern qml__liblinear_api qml__liblinear;

/* 0 once the library's table is filled, or QN_UNAVAILABLE ("XGBoost
 * (libxgboost.so.0) cannot be loaded: ..."). */
int qml__need_xgb(qn_err *err);
int qml__need_blas(qn_err *err);
int qml__need_liblinear(qn_err *err);

#endif
