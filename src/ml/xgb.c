/*
 * xgb.c - gradient-boosted trees over the XGBoost C API (see xgb.h).
 *
 * XGBoost owns the trees; this file validates what goes in (data, a table of
 * known parameters), turns XGBoost's errors into qn_err sentences, and pins a
 * loaded booster down (features, outputs, configuration) so that serving
 * threads only ever read it.
 */
#include "ml/xgb.h"
#include "ml/libs.h"
#include "ml/xgb_forest.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_MODEL_BYTES ((size_t)1 << 30)
#define MAX_ROUNDS 100000

struct qml_xgb {
    BoosterHandle h;
    qml__forest *forest; /* our own walk of the trees, when it agrees with XGBoost */
    size_t n_features;
    size_t n_outputs;
    int n_classes;
    int n_rounds;
    int nthread;        /* OpenMP threads per call (0: XGBoost's default) */
    char objective[64];
};

/* XGBoost's last error (thread-local on its side) as one line, without the
 * stack trace it appends. */
static int xgb_fail(qn_err *err, int code, const char *what)
{
    const char *m = qml__xgb.GetLastError();
    char line[QN_ERR_MSG_MAX];
    size_t n = 0;
    if (!m)
        m = "unknown XGBoost error";
    /* Skip a leading "[hh:mm:ss] " timestamp. */
    if (m[0] == '[') {
        const char *close = strchr(m, ']');
        if (close && close - m < 16)
            m = close + (close[1] == ' ' ? 2 : 1);
    }
    for (; m[n] && n + 1 < sizeof line; n++) {
        if (strncmp(m + n, "\nStack trace", 12) == 0)
            break;
        line[n] = (m[n] == '\n' || m[n] == '\t') ? ' ' : m[n];
    }
    while (n > 0 && line[n - 1] == ' ')
        n--;
    line[n] = '\0';
    return qn_err_set(err, code, "%s: %s", what, line);
}

/* ---- parameters ---------------------------------------------------------- */

typedef enum { P_INT, P_NUM, P_ENUM } ptype;

typedef struct pdef {
    const char *key;
    ptype type;
    double lo, hi;        /* inclusive bounds for P_INT / P_NUM */
    const char *choices;  /* space-separated for P_ENUM */
} pdef;

static const pdef param_table[] = {
    {"objective", P_ENUM, 0, 0,
     "binary:logistic multi:softprob multi:softmax reg:squarederror reg:logistic count:poisson"},
    {"num_class", P_INT, 2, 100000, NULL},
    {"num_round", P_INT, 1, MAX_ROUNDS, NULL},
    {"max_depth", P_INT, 0, 64, NULL},
    {"eta", P_NUM, 1e-9, 1, NULL},
    {"subsample", P_NUM, 1e-9, 1, NULL},
    {"colsample_bytree", P_NUM, 1e-9, 1, NULL},
    {"min_child_weight", P_NUM, 0, 1e30, NULL},
    {"gamma", P_NUM, 0, 1e30, NULL},
    {"lambda", P_NUM, 0, 1e30, NULL},
    {"alpha", P_NUM, 0, 1e30, NULL},
    {"max_bin", P_INT, 2, 65536, NULL},
    {"seed", P_INT, INT_MIN, INT_MAX, NULL},
    {"nthread", P_INT, 0, 1024, NULL},
    {"tree_method", P_ENUM, 0, 0, "hist approx exact auto"},
    {"eval_metric", P_ENUM, 0, 0,
     "logloss error auc rmse mae mlogloss merror poisson-nloglik"},
    {"base_score", P_NUM, -1e30, 1e30, NULL},
};

static int enum_has(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *e = strchr(p, ' ');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && n > 0 && strncmp(p, v, n) == 0)
            return 1;
        if (!e)
            break;
        p = e + 1;
    }
    return 0;
}

static int check_param(const qml_xgb_param *p, double *num, qn_err *err)
{
    if (!p->key || !p->value)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "xgboost parameter with a NULL key or value");
    const pdef *d = NULL;
    for (size_t i = 0; i < sizeof param_table / sizeof param_table[0]; i++)
        if (strcmp(param_table[i].key, p->key) == 0)
            d = &param_table[i];
    if (!d)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "xgboost parameter %s: unknown key", p->key);
    if (d->type == P_ENUM) {
        if (!enum_has(d->choices, p->value))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "xgboost parameter %s: \"%s\" is not one of: %s", p->key, p->value,
                              d->choices);
        return 0;
    }
    char *end;
    errno = 0;
    double v = strtod(p->value, &end);
    if (end == p->value || *end != '\0' || errno == ERANGE || !isfinite(v))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "xgboost parameter %s: \"%s\" is not a number",
                          p->key, p->value);
    if (d->type == P_INT && v != floor(v))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "xgboost parameter %s: \"%s\" is not an integer", p->key, p->value);
    if (v < d->lo || v > d->hi)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "xgboost parameter %s: %s is outside [%g, %g]", p->key, p->value, d->lo,
                          d->hi);
    *num = v;
    return 0;
}

/* ---- data ------------------------------------------------------------------ */

static int check_data(const qml_xgb_data *d, const char *which, size_t want_cols,
                      const char *objective, int num_class, qn_err *err)
{
    if (!d->x || !d->y || d->n_rows == 0 || d->n_cols == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s data: empty (need rows, columns, labels)",
                          which);
    if (d->n_rows > (size_t)INT64_MAX / d->n_cols)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s data: %zu x %zu is too large", which,
                          d->n_rows, d->n_cols);
    if (want_cols && d->n_cols != want_cols)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "%s data: %zu columns but the training data has %zu", which, d->n_cols,
                          want_cols);
    int binary = strcmp(objective, "binary:logistic") == 0 || strcmp(objective, "reg:logistic") == 0;
    int multi = strncmp(objective, "multi:", 6) == 0;
    for (size_t i = 0; i < d->n_rows; i++) {
        float y = d->y[i];
        if (!isfinite(y))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s data: label of row %zu is not finite",
                              which, i);
        if (binary && (y < 0 || y > 1))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "%s data: label %g of row %zu is outside [0, 1] for %s", which,
                              (double)y, i, objective);
        if (multi && (y < 0 || y >= (float)num_class || y != floorf(y)))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "%s data: label %g of row %zu is not a class in [0, %d)", which,
                              (double)y, i, num_class);
        if (strcmp(objective, "count:poisson") == 0 && y < 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "%s data: label %g of row %zu is negative for count:poisson", which,
                              (double)y, i);
        if (d->w && (!isfinite(d->w[i]) || d->w[i] < 0))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "%s data: weight of row %zu is negative or not finite", which, i);
    }
    return 0;
}

static int make_dmatrix(const qml_xgb_data *d, int nthread, DMatrixHandle *out, qn_err *err)
{
    DMatrixHandle m = NULL;
    if (qml__xgb.DMatrixCreateFromMat_omp(d->x, d->n_rows, d->n_cols, NAN, &m, nthread) != 0)
        return xgb_fail(err, QN_INTERNAL, "building the XGBoost matrix");
    if (qml__xgb.DMatrixSetFloatInfo(m, "label", d->y, d->n_rows) != 0 ||
        (d->w && qml__xgb.DMatrixSetFloatInfo(m, "weight", d->w, d->n_rows) != 0)) {
        int rc = xgb_fail(err, QN_INTERNAL, "setting labels");
        qml__xgb.DMatrixFree(m);
        return rc;
    }
    *out = m;
    return 0;
}

/* ---- a booster pinned for reading ------------------------------------------ */

static int predict_raw(const qml_xgb *m, const float *x, size_t n_rows, size_t n_cols,
                       const bst_ulong **shape, bst_ulong *dim, const float **res, qn_err *err)
{
    char arr[160];
    snprintf(arr, sizeof arr,
             "{\"data\":[%" PRIuPTR ",true],\"shape\":[%zu,%zu],\"typestr\":\"<f4\",\"version\":3}",
             (uintptr_t)x, n_rows, n_cols);
    /* Only the keys xgboost requires: it parses this text on every call, at
     * a few thousand instructions per string ("training" is not read by
     * in-place prediction). */
    static const char cfg[] = "{\"type\":0,\"iteration_begin\":0,\"iteration_end\":0,"
                              "\"strict_shape\":true,\"missing\":NaN,\"cache_id\":0}";
    if (qml__xgb.BoosterPredictFromDense(m->h, arr, cfg, NULL, shape, dim, res) != 0)
        return xgb_fail(err, QN_INTERNAL, "xgboost prediction");
    return 0;
}

/* Reads what the model is (features, classes, objective), sets the per-call
 * thread count, and runs one warm-up prediction so the learner's lazy
 * configuration happens here, on one thread, and never under concurrent
 * predictions. Takes ownership of h either way. */
static int pin(BoosterHandle h, int nthread, qml_xgb **out, qn_err *err)
{
    int rc = 0;
    json_t *cfg = NULL;
    float *row = NULL;
    qml_xgb *m = calloc(1, sizeof *m);
    if (!m) {
        qml__xgb.BoosterFree(h);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    m->h = h;
    m->nthread = nthread;
    if (nthread > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", nthread);
        if (qml__xgb.BoosterSetParam(h, "nthread", v) != 0) {
            rc = xgb_fail(err, QN_INTERNAL, "setting nthread");
            goto out;
        }
    }
    bst_ulong nf = 0;
    int rounds = 0;
    if (qml__xgb.BoosterGetNumFeature(h, &nf) != 0 || qml__xgb.BoosterBoostedRounds(h, &rounds) != 0) {
        rc = xgb_fail(err, QN_INVALID_ARGUMENT, "reading the model");
        goto out;
    }
    if (nf == 0 || rounds <= 0) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                        "the model has %llu features and %d rounds; it was never trained",
                        (unsigned long long)nf, rounds);
        goto out;
    }
    m->n_features = nf;
    m->n_rounds = rounds;

    bst_ulong clen = 0;
    const char *cstr = NULL;
    if (qml__xgb.BoosterSaveJsonConfig(h, &clen, &cstr) != 0) {
        rc = xgb_fail(err, QN_INTERNAL, "reading the model configuration");
        goto out;
    }
    cfg = json_loadb(cstr, clen, 0, NULL);
    if (!cfg) { /* XGBoost wrote it: only memory can make it unreadable */
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory reading the model configuration");
        goto out;
    }
    json_t *learner = json_object_get(cfg, "learner");
    const char *obj = json_string_value(
        json_object_get(json_object_get(learner, "objective"), "name"));
    const char *ncls = json_string_value(
        json_object_get(json_object_get(learner, "learner_model_param"), "num_class"));
    if (!obj || !ncls) {
        rc = qn_err_set(err, QN_INTERNAL, "the model configuration lacks objective or num_class");
        goto out;
    }
    snprintf(m->objective, sizeof m->objective, "%s", obj);
    m->n_classes = atoi(ncls);

    row = malloc(nf * sizeof *row);
    if (!row) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t j = 0; j < nf; j++)
        row[j] = NAN;
    const bst_ulong *shape;
    bst_ulong dim;
    const float *res;
    if ((rc = predict_raw(m, row, 1, nf, &shape, &dim, &res, err)) < 0)
        goto out;
    if (dim != 2 || shape[0] != 1 || shape[1] == 0) {
        rc = qn_err_set(err, QN_INTERNAL, "xgboost returned an unexpected prediction shape");
        goto out;
    }
    m->n_outputs = shape[1];
out:
    free(row);
    json_decref(cfg);
    if (rc < 0) {
        qml_xgb_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

/* ---- training ---------------------------------------------------------------- */

/* Parses "[3]\ttrain-logloss:0.41\teval-logloss:0.45" (the first metric of each set). */
static void parse_eval(const char *s, char *metric, size_t metric_cap, double *train, double *eval)
{
    *train = NAN;
    *eval = NAN;
    for (const char *p = strchr(s, '\t'); p; p = strchr(p, '\t')) {
        p++;
        const char *dash = strchr(p, '-');
        const char *colon = strchr(p, ':');
        if (!dash || !colon || colon < dash)
            continue;
        double v = strtod(colon + 1, NULL);
        if (strncmp(p, "train-", 6) == 0 && isnan(*train)) {
            *train = v;
            size_t n = (size_t)(colon - dash - 1);
            if (n >= metric_cap)
                n = metric_cap - 1;
            memcpy(metric, dash + 1, n);
            metric[n] = '\0';
        } else if (strncmp(p, "eval-", 5) == 0 && isnan(*eval)) {
            *eval = v;
        }
    }
}

int qml_xgb_train(const qml_xgb_data *train, const qml_xgb_train_opts *opts, qml_xgb **out,
                  qn_err *err)
{
    int rc = 0;
    DMatrixHandle dtrain = NULL, deval = NULL;
    BoosterHandle h = NULL;
    const char *objective = "reg:squarederror";
    int num_round = 100, num_class = 0, nthread = 0;
    static const qml_xgb_train_opts no_opts;
    if (!opts)
        opts = &no_opts;
    if (!train || !out)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "qml_xgb_train: no data or output");
    if ((rc = qml__need_xgb(err)) < 0)
        return rc;

    for (size_t i = 0; i < opts->n_params; i++) {
        double v = 0;
        if ((rc = check_param(&opts->params[i], &v, err)) < 0)
            return rc;
        const char *k = opts->params[i].key;
        if (strcmp(k, "objective") == 0)
            objective = opts->params[i].value;
        else if (strcmp(k, "num_round") == 0)
            num_round = (int)v;
        else if (strcmp(k, "num_class") == 0)
            num_class = (int)v;
        else if (strcmp(k, "nthread") == 0)
            nthread = (int)v;
    }
    int multi = strncmp(objective, "multi:", 6) == 0;
    if (multi && num_class < 2)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "xgboost parameter num_class: %s needs num_class >= 2", objective);
    if (!multi && num_class)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "xgboost parameter num_class: only multi:* objectives take it, not %s",
                          objective);
    if ((rc = check_data(train, "training", 0, objective, num_class, err)) < 0)
        return rc;
    if (opts->eval &&
        (rc = check_data(opts->eval, "eval", train->n_cols, objective, num_class, err)) < 0)
        return rc;

    if ((rc = make_dmatrix(train, nthread, &dtrain, err)) < 0)
        goto out;
    if (opts->eval && (rc = make_dmatrix(opts->eval, nthread, &deval, err)) < 0)
        goto out;
    DMatrixHandle cache[2] = {dtrain, deval};
    if (qml__xgb.BoosterCreate(cache, deval ? 2 : 1, &h) != 0) {
        rc = xgb_fail(err, QN_INTERNAL, "creating the booster");
        goto out;
    }
    for (size_t i = 0; i < opts->n_params; i++) {
        if (strcmp(opts->params[i].key, "num_round") == 0)
            continue;
        if (qml__xgb.BoosterSetParam(h, opts->params[i].key, opts->params[i].value) != 0) {
            rc = xgb_fail(err, QN_INVALID_ARGUMENT, opts->params[i].key);
            goto out;
        }
    }
    const char *names[2] = {"train", "eval"};
    for (int r = 0; r < num_round; r++) {
        if (qml__xgb.BoosterUpdateOneIter(h, r, dtrain) != 0) {
            rc = xgb_fail(err, QN_INTERNAL, "boosting");
            goto out;
        }
        if (!opts->progress)
            continue;
        const char *res = NULL;
        if (qml__xgb.BoosterEvalOneIter(h, r, cache, names, deval ? 2 : 1, &res) != 0) {
            rc = xgb_fail(err, QN_INTERNAL, "evaluating");
            goto out;
        }
        char metric[64] = "";
        qml_xgb_progress p = {.round = r, .num_round = num_round, .metric = metric};
        parse_eval(res, metric, sizeof metric, &p.train, &p.eval);
        if (opts->progress(&p, opts->progress_ctx)) {
            rc = qn_err_set(err, QN_CANCELLED, "xgboost training cancelled after round %d of %d",
                            r + 1, num_round);
            goto out;
        }
    }
    rc = pin(h, nthread, out, err);
    h = NULL;  /* pin owns it now */
out:
    if (h)
        qml__xgb.BoosterFree(h);
    if (dtrain)
        qml__xgb.DMatrixFree(dtrain);
    if (deval)
        qml__xgb.DMatrixFree(deval);
    return rc;
}

/* ---- load and save ------------------------------------------------------------ */

/* Probe rows for a forest: every feature takes a value from its own splits
 * (exactly at a threshold, which goes right, or just below it, which goes
 * left), a missing value, or 0, so the probes walk the trees' branches and
 * default directions. Returns 1 when the forest and XGBoost agree on them. */
static int forest_agrees(const qml_xgb *m, qn_err *err)
{
    enum { ROWS = 256 };
    size_t nf = m->n_features, no = m->n_outputs;
    float *x = malloc(ROWS * nf * sizeof *x), *mine = malloc(ROWS * no * sizeof *mine);
    const bst_ulong *shape;
    bst_ulong dim;
    const float *theirs;
    int ok = 0;
    if (!x || !mine)
        goto out;
    uint64_t s = 0x9E3779B97F4A7C15ULL;
    for (size_t r = 0; r < ROWS; r++) {
        for (size_t j = 0; j < nf; j++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            float v = qml__forest_split_value(m->forest, j, s);
            switch (s % 8) {
            case 0: v = NAN; break;
            case 1: v = 0; break;
            case 2: case 3: v = nextafterf(v, -INFINITY); break;
            default: break;
            }
            x[r * nf + j] = v;
        }
    }
    qml__forest_predict(m->forest, x, ROWS, nf, mine);
    if (predict_raw(m, x, ROWS, nf, &shape, &dim, &theirs, err) < 0 || dim != 2 || shape[0] != ROWS ||
        shape[1] != no)
        goto out;
    ok = 1;
    for (size_t i = 0; i < ROWS * no && ok; i++)
        ok = fabsf(mine[i] - theirs[i]) <= 1e-6f;
out:
    free(x);
    free(mine);
    return ok;
}

int qml_xgb_load_buffer(const void *buf, size_t len, int nthread, qml_xgb **out, qn_err *err)
{
    const char *s = buf;
    size_t i = 0;
    while (i < len && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t'))
        i++;
    /* XGBoost guesses a buffer's format; we only take its JSON format, so a
     * stray binary never reaches its legacy loader. */
    if (i == len || s[i] != '{')
        return qn_err_set(err, QN_INVALID_ARGUMENT, "xgboost model: not a JSON document");
    if (nthread < 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "xgboost model: nthread %d < 0", nthread);
    int rc = qml__need_xgb(err);
    if (rc < 0)
        return rc;
    BoosterHandle h = NULL;
    if (qml__xgb.BoosterCreate(NULL, 0, &h) != 0)
        return xgb_fail(err, QN_INTERNAL, "creating the booster");
    if (qml__xgb.BoosterLoadModelFromBuffer(h, buf, len) != 0) {
        rc = xgb_fail(err, QN_INVALID_ARGUMENT, "xgboost model");
        qml__xgb.BoosterFree(h);
        return rc;
    }
    rc = pin(h, nthread, out, err);
    if (rc < 0)
        return rc;
    /* Our own walk of the trees, kept only when it is of a form we take and
     * gives XGBoost's answers on probe rows; otherwise the C API serves. */
    qml_xgb *m = *out;
    qn_err ignored;
    if (qml__forest_parse(buf, len, &m->forest) == 0 &&
        (qml__forest_n_features(m->forest) != m->n_features ||
         qml__forest_n_outputs(m->forest) != m->n_outputs || !forest_agrees(m, &ignored))) {
        qml__forest_free(m->forest);
        m->forest = NULL;
    }
    return 0;
}

int qml_xgb_native(const qml_xgb *m)
{
    return m->forest != NULL;
}

int qml_xgb_load_file(const char *path, int nthread, qml_xgb **out, qn_err *err)
{
    int rc = 0;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return qn_err_set(err, errno == ENOENT ? QN_NOT_FOUND : QN_INTERNAL, "cannot open %s: %s",
                          path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "%s: not a regular file", path);
        goto out;
    }
    if ((size_t)st.st_size > MAX_MODEL_BYTES) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "%s: %lld bytes is over the 1 GiB limit", path,
                        (long long)st.st_size);
        goto out;
    }
    size_t len = (size_t)st.st_size;
    buf = malloc(len ? len : 1);
    if (!buf) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory reading %s", path);
        goto out;
    }
    if (fread(buf, 1, len, f) != len) {
        rc = qn_err_set(err, QN_INTERNAL, "cannot read %s", path);
        goto out;
    }
    if ((rc = qml_xgb_load_buffer(buf, len, nthread, out, err)) < 0)
        qn_err_wrap(err, "%s", path);
out:
    free(buf);
    fclose(f);
    return rc;
}

int qml_xgb_save_buffer(const qml_xgb *m, char **out, size_t *len, qn_err *err)
{
    bst_ulong n = 0;
    const char *p = NULL;
    if (qml__xgb.BoosterSaveModelToBuffer(m->h, "{\"format\":\"json\"}", &n, &p) != 0)
        return xgb_fail(err, QN_INTERNAL, "saving the model");
    char *copy = malloc(n + 1);
    if (!copy)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    memcpy(copy, p, n);
    copy[n] = '\0';
    *out = copy;
    *len = n;
    return 0;
}

int qml_xgb_save(const qml_xgb *m, const char *path, qn_err *err)
{
    char *buf = NULL, *tmp = NULL;
    size_t len = 0;
    int rc = qml_xgb_save_buffer(m, &buf, &len, err);
    if (rc < 0)
        return rc;
    size_t tl = strlen(path) + 16;
    tmp = malloc(tl);
    if (!tmp) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    snprintf(tmp, tl, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        rc = qn_err_set(err, QN_INTERNAL, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, buf + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    int ok = off == len && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        rc = qn_err_set(err, QN_INTERNAL, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
    }
out:
    free(tmp);
    free(buf);
    return rc;
}

/* ---- reading a pinned booster ---------------------------------------------------- */

size_t qml_xgb_n_features(const qml_xgb *m) { return m->n_features; }
size_t qml_xgb_n_outputs(const qml_xgb *m) { return m->n_outputs; }
int qml_xgb_n_classes(const qml_xgb *m) { return m->n_classes; }
const char *qml_xgb_objective(const qml_xgb *m) { return m->objective; }
int qml_xgb_n_rounds(const qml_xgb *m) { return m->n_rounds; }

int qml_xgb_predict(const qml_xgb *m, const float *x, size_t n_rows, size_t n_cols, float *out,
                    qn_err *err)
{
    if (n_cols != m->n_features)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input has %zu features per row but the model expects %zu", n_cols,
                          m->n_features);
    if (n_rows == 0)
        return 0;
    if (!x || !out)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "prediction input or output is NULL");
    if (n_rows > (size_t)INT64_MAX / n_cols / m->n_outputs)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "prediction batch of %zu rows is too large",
                          n_rows);
    if (m->forest) {
        qml__forest_predict(m->forest, x, n_rows, n_cols, out);
        return 0;
    }
    const bst_ulong *shape;
    bst_ulong dim;
    const float *res;
    int rc = predict_raw(m, x, n_rows, n_cols, &shape, &dim, &res, err);
    if (rc < 0)
        return rc;
    if (dim != 2 || shape[0] != n_rows || shape[1] != m->n_outputs)
        return qn_err_set(err, QN_INTERNAL,
                          "xgboost returned a prediction of an unexpected shape for %zu rows",
                          n_rows);
    /* res lives in XGBoost's per-thread buffer: copy before the next call. */
    memcpy(out, res, n_rows * m->n_outputs * sizeof *out);
    return 0;
}

size_t qml_xgb_n_groups(const qml_xgb *m)
{
    return m->n_classes > 0 ? (size_t)m->n_classes : 1;
}

int qml_xgb_contribs(const qml_xgb *m, const float *x, size_t n_rows, size_t n_cols,
                     float *contribs, float *margin, qn_err *err)
{
    if (n_cols != m->n_features)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input has %zu features per row but the model expects %zu", n_cols,
                          m->n_features);
    if (n_rows == 0)
        return 0;
    if (!x || !contribs)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "explanation input or output is NULL");
    size_t ng = qml_xgb_n_groups(m), w = n_cols + 1;
    if (n_rows > (size_t)INT64_MAX / w / ng)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "explanation batch of %zu rows is too large",
                          n_rows);
    /* In-place prediction refuses contributions ("Unsupported prediction
     * type"), so this goes through a DMatrix, as Python's predict does. */
    DMatrixHandle d = NULL;
    int rc = 0;
    const bst_ulong *shape;
    bst_ulong dim;
    const float *res;
    if (qml__xgb.DMatrixCreateFromMat_omp(x, n_rows, n_cols, NAN, &d, m->nthread) != 0)
        return xgb_fail(err, QN_INTERNAL, "building the XGBoost matrix");
    static const char contrib_cfg[] = "{\"type\":2,\"training\":false,\"iteration_begin\":0,"
                                      "\"iteration_end\":0,\"strict_shape\":true}";
    if (qml__xgb.BoosterPredictFromDMatrix(m->h, d, contrib_cfg, &shape, &dim, &res) != 0) {
        rc = xgb_fail(err, QN_INTERNAL, "xgboost contributions");
        goto out;
    }
    if (dim != 3 || shape[0] != n_rows || shape[1] != ng || shape[2] != w) {
        rc = qn_err_set(err, QN_INTERNAL,
                        "xgboost returned contributions of an unexpected shape for %zu rows",
                        n_rows);
        goto out;
    }
    /* res lives in XGBoost's per-thread buffer, which the margin call reuses. */
    memcpy(contribs, res, n_rows * ng * w * sizeof *contribs);
    if (margin) {
        static const char margin_cfg[] = "{\"type\":1,\"training\":false,"
                                         "\"iteration_begin\":0,\"iteration_end\":0,"
                                         "\"strict_shape\":true}";
        if (qml__xgb.BoosterPredictFromDMatrix(m->h, d, margin_cfg, &shape, &dim, &res) != 0) {
            rc = xgb_fail(err, QN_INTERNAL, "xgboost margin");
            goto out;
        }
        if (dim != 2 || shape[0] != n_rows || shape[1] != ng) {
            rc = qn_err_set(err, QN_INTERNAL,
                            "xgboost returned margins of an unexpected shape for %zu rows",
                            n_rows);
            goto out;
        }
        memcpy(margin, res, n_rows * ng * sizeof *margin);
    }
out:
    qml__xgb.DMatrixFree(d);
    return rc;
}

void qml_xgb_free(qml_xgb *m)
{
    if (!m)
        return;
    if (m->h)
        qml__xgb.BoosterFree(m->h);
    qml__forest_free(m->forest);
    free(m);
}
