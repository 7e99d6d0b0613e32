/*
 * libs.c - XGBoost, OpenBLAS/LAPACKE and liblinear, opened on first use
 * (libs.h).
 *
 * Each library is described by its soname and the names of the symbols that
 * fill its table, in the table's order; one pthread_once per library opens it
 * and resolves them all, so a table is either whole or not used.
 */
#include "ml/libs.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

qml__xgb_api qml__xgb;
qml__blas_api qml__blas;
qml__liblinear_api qml__liblinear;

typedef struct {
    const char *what;            /* for messages: "XGBoost" */
    const char *const *sonames;  /* opened in order, NULL-terminated */
    const char *const *symbols;  /* one per table slot, NULL-terminated */
    void *table;                 /* the qml__*_api struct: one pointer per symbol */
    pthread_once_t once;
    char error[256];             /* why it could not be opened, "" once open */
} lib;

static const char *const xgb_sonames[] = {"libxgboost.so.0", NULL};
static const char *const xgb_symbols[] = {
    "XGBGetLastError", "XGDMatrixCreateFromMat_omp", "XGDMatrixSetFloatInfo", "XGDMatrixFree",
    "XGBoosterCreate", "XGBoosterFree", "XGBoosterSetParam", "XGBoosterUpdateOneIter",
    "XGBoosterEvalOneIter", "XGBoosterPredictFromDense", "XGBoosterPredictFromDMatrix",
    "XGBoosterLoadModelFromBuffer",
    "XGBoosterSaveModelToBuffer", "XGBoosterSaveJsonConfig", "XGBoosterGetNumFeature",
    "XGBoosterBoostedRounds", NULL};

/* LAPACKE's library needs OpenBLAS (through liblapack), so opening it brings
 * cblas_* in too; both are looked up in the LAPACKE handle's scope. */
static const char *const blas_sonames[] = {"liblapacke.so.3", "libopenblas.so.0", NULL};
static const char *const blas_symbols[] = {"cblas_ssyrk",    "cblas_dsyrk",    "cblas_ddot",
                                           "LAPACKE_dlansy", "LAPACKE_dpotrf", "LAPACKE_dpocon",
                                           "LAPACKE_dpotrs", NULL};

static const char *const liblinear_sonames[] = {"liblinear.so.4", NULL};
static const char *const liblinear_symbols[] = {"train", "check_parameter", "free_and_destroy_model",
                                                "set_print_string_function", NULL};

_Static_assert(sizeof qml__xgb == 16 * sizeof(void *), "xgb_symbols matches qml__xgb_api");
_Static_assert(sizeof qml__blas == 7 * sizeof(void *), "blas_symbols matches qml__blas_api");
_Static_assert(sizeof qml__liblinear == 4 * sizeof(void *),
               "liblinear_symbols matches qml__liblinear_api");

static lib xgb_lib = {"XGBoost", xgb_sonames, xgb_symbols, &qml__xgb,
                      PTHREAD_ONCE_INIT, ""};
static lib blas_lib = {"OpenBLAS/LAPACKE", blas_sonames, blas_symbols, &qml__blas,
                       PTHREAD_ONCE_INIT, ""};
static lib liblinear_lib = {"liblinear", liblinear_sonames, liblinear_symbols,
                            &qml__liblinear, PTHREAD_ONCE_INIT, ""};

/* Opens every soname (each stays open for the life of the process) and
 * resolves each symbol in the first handle that has it. */
static void open_lib(lib *l)
{
    void *handles[4] = {NULL};
    size_t nh = 0;
    for (size_t i = 0; l->sonames[i] && nh < sizeof handles / sizeof handles[0]; i++) {
        handles[nh] = dlopen(l->sonames[i], RTLD_NOW | RTLD_LOCAL);
        if (!handles[nh]) {
            const char *why = dlerror();
            snprintf(l->error, sizeof l->error, "%s (%s) cannot be loaded: %s", l->what,
                     l->sonames[i], why ? why : "unknown error");
            return;
        }
        nh++;
    }
    for (size_t s = 0; l->symbols[s]; s++) {
        void *fn = NULL;
        for (size_t h = 0; h < nh && !fn; h++)
            fn = dlsym(handles[h], l->symbols[s]);
        if (!fn) {
            snprintf(l->error, sizeof l->error, "%s (%s) has no %s", l->what, l->sonames[0],
                     l->symbols[s]);
            memset(l->table, 0, s * sizeof fn);
            return;
        }
        /* POSIX: a function's address as dlsym returns it converts to the
         * function pointer stored here; memcpy keeps the store well typed. */
        memcpy((char *)l->table + s * sizeof fn, &fn, sizeof fn);
    }
}

static void open_xgb(void) { open_lib(&xgb_lib); }
static void open_blas(void) { open_lib(&blas_lib); }
static void open_liblinear(void) { open_lib(&liblinear_lib); }

static int need(lib *l, void (*open_once)(void), qn_err *err)
{
    pthread_once(&l->once, open_once);
    if (l->error[0])
        return qn_err_set(err, QN_UNAVAILABLE, "%s", l->error);
    return 0;
}

int qml__need_xgb(qn_err *err) { return need(&xgb_lib, open_xgb, err); }
int qml__need_blas(qn_err *err) { return need(&blas_lib, open_blas, err); }
int qml__need_liblinear(qn_err *err) { return need(&liblinear_lib, open_liblinear, err); }
