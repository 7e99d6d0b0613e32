/*
 * transform.c - fitted feature pipelines (see transform.h).
 *
 * One fitted column holds everything needed to turn one input value into its
 * slice of the output row: the impute fill, the encoder's state and the
 * slice's offset and width. Frame rows and raw request values go through the
 * same two functions (encode_num, encode_key), which is what guarantees that
 * serving reproduces training exactly.
 */
#include "ml/transform.h"
#include "core/json.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENC_NONE (-1)
#define KEY_MAX 32 /* "%.15g" of any double fits */

typedef struct col_fit {
    char *name;
    int categorical;            /* input kind: strings (1) or numbers (0) */
    int has_impute;
    qml_impute_strategy strategy;
    double fill_num;            /* numeric input */
    char *fill_str;             /* categorical input */
    int enc;                    /* ENC_NONE or a qml_tf_op encoder */
    double a, b;                /* standardize: mean, std; minmax: min, max */
    qml_dict *cats;             /* onehot: category -> position */
    int max_categories, min_frequency;
    int n_buckets, hash_signed;
    size_t offset, width;
} col_fit;

struct qml_features {
    col_fit *cols;
    size_t n_cols;
    size_t n_features;
    char **names;
};

static const char *const strategy_names[] = {"mean", "median", "most_frequent", "constant"};
static const char *const op_names[] = {"impute", "standardize", "minmax", "onehot", "hash"};

/* ---- encoding (shared by fit-time, frame and raw transforms) --------------- */

static uint64_t fnv1a64(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* The key of a numeric value for one-hot and hashing; -0 and 0 share a key. */
static size_t num_key(double v, char buf[KEY_MAX])
{
    if (v == 0)
        v = 0;
    int n = snprintf(buf, KEY_MAX, "%.15g", v);
    return (size_t)n;
}

static void encode_num(const col_fit *c, double v, float *row)
{
    float *o = row + c->offset;
    switch (c->enc) {
    case QML_TF_STANDARDIZE:
        *o = (float)((v - c->a) / c->b);
        break;
    case QML_TF_MINMAX: {
        double range = c->b - c->a;
        *o = (float)((v - c->a) / (range > 0 ? range : 1.0));
        break;
    }
    default:
        *o = (float)v;
    }
}

static void encode_key(const col_fit *c, const char *s, size_t len, float *row)
{
    float *o = row + c->offset;
    if (c->enc == QML_TF_ONEHOT) {
        int32_t k = qml_dict_find(c->cats, s, len);
        o[k >= 0 ? (size_t)k : c->width - 1] = 1.0f;
    } else {
        uint64_t h = fnv1a64(s, len);
        float sign = (c->hash_signed && (h >> 63)) ? -1.0f : 1.0f;
        o[h % (uint64_t)c->n_buckets] += sign;
    }
}

static int uses_key(const col_fit *c)
{
    return c->enc == QML_TF_ONEHOT || c->enc == QML_TF_HASH;
}

/* Encodes a numeric value of a numeric input (NaN = missing). row is the output row. */
static int put_number(const col_fit *c, double v, float *row, size_t r, qn_err *err)
{
    if (isnan(v)) {
        if (!c->has_impute)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input %s, row %zu: value is missing and the pipeline has no "
                              "impute step for it", c->name, r);
        v = c->fill_num;
    }
    if (isinf(v))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "input %s, row %zu: value is infinite",
                          c->name, r);
    if (uses_key(c)) {
        char buf[KEY_MAX];
        size_t n = num_key(v, buf);
        encode_key(c, buf, n, row);
    } else {
        encode_num(c, v, row);
    }
    return 0;
}

/* Encodes a string of a categorical input (NULL or "" = missing). */
static int put_string(const col_fit *c, const char *s, float *row, size_t r, qn_err *err)
{
    if (!s || !*s) {
        if (!c->has_impute)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input %s, row %zu: value is missing and the pipeline has no "
                              "impute step for it", c->name, r);
        s = c->fill_str;
    }
    encode_key(c, s, strlen(s), row);
    return 0;
}

/* ---- lifetime and accessors ----------------------------------------------- */

static void col_free(col_fit *c)
{
    free(c->name);
    free(c->fill_str);
    qml_dict_free(c->cats);
}

void qml_features_free(qml_features *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_cols; i++)
        col_free(&f->cols[i]);
    free(f->cols);
    if (f->names)
        for (size_t i = 0; i < f->n_features; i++)
            free(f->names[i]);
    free(f->names);
    free(f);
}

size_t qml_features_n_features(const qml_features *f) { return f->n_features; }
size_t qml_features_n_inputs(const qml_features *f) { return f->n_cols; }

const char *qml_features_name(const qml_features *f, size_t i)
{
    return i < f->n_features ? f->names[i] : NULL;
}

const char *qml_features_input(const qml_features *f, size_t i)
{
    return i < f->n_cols ? f->cols[i].name : NULL;
}

int qml_features_slice(const qml_features *f, size_t i, size_t *offset, size_t *width)
{
    if (i >= f->n_cols)
        return -1;
    *offset = f->cols[i].offset;
    *width = f->cols[i].width;
    return 0;
}

/* Lays out offsets and names once every column's width is known. */
static int finish_layout(qml_features *f, qn_err *err)
{
    size_t total = 0;
    for (size_t i = 0; i < f->n_cols; i++) {
        col_fit *c = &f->cols[i];
        c->offset = total;
        if (c->width > QML_TF_MAX_FEATURES - total)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "column %s: the pipeline would exceed %d features", c->name,
                              QML_TF_MAX_FEATURES);
        total += c->width;
    }
    if (total == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "the pipeline has no input columns");
    f->names = calloc(total, sizeof *f->names);
    if (!f->names)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory naming %zu features", total);
    f->n_features = total;
    for (size_t i = 0; i < f->n_cols; i++) {
        const col_fit *c = &f->cols[i];
        for (size_t j = 0; j < c->width; j++) {
            char *name = NULL;
            int n;
            if (c->enc == QML_TF_ONEHOT)
                n = asprintf(&name, "%s=%s", c->name,
                             j + 1 < c->width ? qml_dict_str(c->cats, (int32_t)j) : QML_TF_UNKNOWN);
            else if (c->enc == QML_TF_HASH)
                n = asprintf(&name, "%s#%zu", c->name, j);
            else
                n = asprintf(&name, "%s", c->name);
            if (n < 0)
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory naming features");
            f->names[c->offset + j] = name;
        }
    }
    return 0;
}

/* ---- fitting --------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Checks the chain's shape: [impute] [one encoder]. */
static int check_chain(const char *col, const qml_tf_step *steps, size_t n, qn_err *err)
{
    size_t i = 0;
    if (n > 0 && steps[0].op == QML_TF_IMPUTE)
        i = 1;
    if (n - i > 1 || (i < n && (steps[i].op < QML_TF_STANDARDIZE || steps[i].op > QML_TF_HASH)))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "column %s: a chain is an optional impute step followed by at most "
                          "one of standardize, minmax, onehot, hash", col);
    return 0;
}

/* Fills the numeric values of column src (after imputation) into vals. */
static void numeric_values(const col_fit *c, const qml_column *src, double *vals)
{
    for (size_t r = 0; r < src->len; r++)
        vals[r] = src->missing[r] ? c->fill_num : src->num[r];
}

static int fit_impute_numeric(col_fit *c, const qml_tf_step *s, const qml_column *src,
                              qn_err *err)
{
    if (s->impute == QML_IMPUTE_CONSTANT) {
        if (!isfinite(s->fill_num))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "column %s: the constant impute value must be finite", c->name);
        c->fill_num = s->fill_num;
        return 0;
    }
    size_t n = src->len - src->n_missing;
    if (n == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "column %s: every value is missing, nothing to fit impute %s on",
                          c->name, strategy_names[s->impute]);
    double *v = malloc(n * sizeof *v);
    if (!v)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory", c->name);
    size_t k = 0;
    for (size_t r = 0; r < src->len; r++)
        if (!src->missing[r])
            v[k++] = src->num[r];
    if (s->impute == QML_IMPUTE_MEAN) {
        double sum = 0;
        for (size_t i = 0; i < n; i++)
            sum += v[i];
        c->fill_num = sum / (double)n;
    } else {
        qsort(v, n, sizeof *v, cmp_double);
        if (s->impute == QML_IMPUTE_MEDIAN) {
            c->fill_num = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
        } else {
            size_t best = 0, best_run = 0;
            for (size_t i = 0; i < n;) {
                size_t j = i;
                while (j < n && v[j] == v[i])
                    j++;
                if (j - i > best_run) {
                    best_run = j - i;
                    best = i;
                }
                i = j;
            }
            c->fill_num = v[best];
        }
    }
    free(v);
    if (!isfinite(c->fill_num))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "column %s: the fitted impute value is not finite", c->name);
    return 0;
}

static int fit_impute_categorical(col_fit *c, const qml_tf_step *s, const qml_column *src,
                                  qn_err *err)
{
    const char *fill = NULL;
    size_t *counts = NULL;
    if (s->impute == QML_IMPUTE_CONSTANT) {
        if (!s->fill_str || !*s->fill_str)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "column %s: impute constant on a categorical column needs a "
                              "non-empty fill_str", c->name);
        fill = s->fill_str;
    } else if (s->impute == QML_IMPUTE_MOST_FREQUENT) {
        size_t nd = qml_dict_size(src->dict);
        counts = calloc(nd ? nd : 1, sizeof *counts);
        if (!counts)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory", c->name);
        for (size_t r = 0; r < src->len; r++)
            if (!src->missing[r] && src->cat[r] >= 0)
                counts[src->cat[r]]++;
        size_t best = 0;
        for (size_t k = 0; k < nd; k++) {
            const char *sk = qml_dict_str(src->dict, (int32_t)k);
            if (counts[k] && (!fill || counts[k] > best ||
                              (counts[k] == best && strcmp(sk, fill) < 0))) {
                fill = sk;
                best = counts[k];
            }
        }
        if (!fill) {
            free(counts);
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "column %s: every value is missing, nothing to fit impute "
                              "most_frequent on", c->name);
        }
    } else {
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "column %s: impute %s needs a numeric column; use most_frequent or "
                          "constant for a categorical one", c->name, strategy_names[s->impute]);
    }
    c->fill_str = strdup(fill);
    free(counts);
    if (!c->fill_str)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory", c->name);
    return 0;
}

typedef struct cat_count {
    const char *key;
    double num;      /* numeric inputs: the value the key came from (for ordering) */
    size_t count;
} cat_count;

static int cmp_count_desc(const void *a, const void *b)
{
    const cat_count *x = a, *y = b;
    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return strcmp(x->key, y->key);
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(((const cat_count *)a)->key, ((const cat_count *)b)->key);
}

static int cmp_num(const void *a, const void *b)
{
    return cmp_double(&((const cat_count *)a)->num, &((const cat_count *)b)->num);
}

/* Learns the categories of one-hot: counts keys (after imputation), drops the
 * rare ones, keeps the max_categories most frequent, orders them (by value
 * for numeric inputs, by string otherwise). */
static int fit_onehot(col_fit *c, const qml_tf_step *s, const qml_column *src, qn_err *err)
{
    int rc = 0;
    qml_dict *seen = qml_dict_new();
    size_t *counts = NULL, cap = 0;
    double *nums = NULL;
    cat_count *cc = NULL;
    if (!seen)
        goto oom;
    if (s->max_categories < 0 || s->min_frequency < 0) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                        "column %s: max_categories and min_frequency must be >= 0", c->name);
        goto out;
    }
    for (size_t r = 0; r < src->len; r++) {
        char buf[KEY_MAX];
        const char *key;
        size_t len;
        double v = 0;
        if (c->categorical) {
            key = src->missing[r] ? c->fill_str : qml_col_str(src, r);
            len = strlen(key);
        } else {
            v = src->missing[r] ? c->fill_num : src->num[r];
            if (v == 0)
                v = 0;
            len = num_key(v, buf);
            key = buf;
        }
        int32_t k = qml_dict_intern(seen, key, len);
        if (k < 0)
            goto oom;
        if ((size_t)k >= cap) {
            size_t ncap = cap ? cap * 2 : 64;
            size_t *nc = realloc(counts, ncap * sizeof *nc);
            if (!nc)
                goto oom;
            counts = nc;
            double *nn = realloc(nums, ncap * sizeof *nn);
            if (!nn)
                goto oom;
            nums = nn;
            memset(counts + cap, 0, (ncap - cap) * sizeof *counts);
            cap = ncap;
        }
        counts[k]++;
        nums[k] = v;
    }
    size_t nk = qml_dict_size(seen), kept = 0;
    cc = malloc((nk ? nk : 1) * sizeof *cc);
    if (!cc)
        goto oom;
    for (size_t k = 0; k < nk; k++)
        if (counts[k] >= (size_t)s->min_frequency)
            cc[kept++] = (cat_count){qml_dict_str(seen, (int32_t)k), nums[k], counts[k]};
    if (s->max_categories > 0 && kept > (size_t)s->max_categories) {
        qsort(cc, kept, sizeof *cc, cmp_count_desc);
        kept = (size_t)s->max_categories;
    }
    qsort(cc, kept, sizeof *cc, c->categorical ? cmp_key : cmp_num);
    c->cats = qml_dict_new();
    if (!c->cats)
        goto oom;
    for (size_t i = 0; i < kept; i++)
        if (qml_dict_intern(c->cats, cc[i].key, strlen(cc[i].key)) < 0)
            goto oom;
    c->max_categories = s->max_categories;
    c->min_frequency = s->min_frequency;
    c->width = kept + 1;
    goto out;
oom:
    rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory fitting onehot", c->name);
out:
    qml_dict_free(seen);
    free(counts);
    free(nums);
    free(cc);
    return rc;
}

static int fit_column(col_fit *c, const qml_feature_spec *sp, const qml_frame *frame, qn_err *err)
{
    int idx = qml_frame_find(frame, sp->column);
    if (idx < 0)
        return qn_err_set(err, QN_NOT_FOUND, "column %s: not in the frame", sp->column);
    const qml_column *src = qml_frame_col(frame, (size_t)idx);
    int rc = check_chain(sp->column, sp->steps, sp->n_steps, err);
    if (rc < 0)
        return rc;
    c->categorical = src->type == QML_CATEGORICAL;
    const qml_tf_step *imp = NULL, *enc = NULL;
    for (size_t i = 0; i < sp->n_steps; i++) {
        if (sp->steps[i].op == QML_TF_IMPUTE)
            imp = &sp->steps[i];
        else
            enc = &sp->steps[i];
    }
    c->enc = enc ? (int)enc->op : ENC_NONE;
    if (c->categorical && !uses_key(c))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "column %s is categorical: its chain must end in onehot or hash",
                          c->name);
    if (imp && ((int)imp->impute < 0 || imp->impute > QML_IMPUTE_CONSTANT))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "column %s: unknown impute strategy",
                          c->name);
    if (src->n_missing && !imp)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "column %s: %zu values are missing and its chain has no impute step",
                          c->name, src->n_missing);
    if (src->len == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "column %s: the frame has no rows", c->name);
    if (imp) {
        c->has_impute = 1;
        c->strategy = imp->impute;
        rc = c->categorical ? fit_impute_categorical(c, imp, src, err)
                            : fit_impute_numeric(c, imp, src, err);
        if (rc < 0)
            return rc;
    }
    if (c->categorical && !c->fill_str) {
        c->fill_str = strdup("");
        if (!c->fill_str)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    c->width = 1;
    if (c->enc == QML_TF_STANDARDIZE || c->enc == QML_TF_MINMAX) {
        double *v = malloc(src->len * sizeof *v);
        if (!v)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory", c->name);
        numeric_values(c, src, v);
        size_t n = src->len;
        if (c->enc == QML_TF_STANDARDIZE) {
            double mean = 0, ss = 0;
            for (size_t i = 0; i < n; i++)
                mean += v[i];
            mean /= (double)n;
            for (size_t i = 0; i < n; i++)
                ss += (v[i] - mean) * (v[i] - mean);
            double sd = sqrt(ss / (double)n);
            c->a = mean;
            c->b = sd > 0 ? sd : 1.0;
        } else {
            c->a = c->b = v[0];
            for (size_t i = 1; i < n; i++) {
                if (v[i] < c->a) c->a = v[i];
                if (v[i] > c->b) c->b = v[i];
            }
        }
        free(v);
        if (!isfinite(c->a) || !isfinite(c->b) || !isfinite(c->b - c->a))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "column %s: values are not finite, cannot fit %s", c->name,
                              op_names[c->enc]);
    } else if (c->enc == QML_TF_ONEHOT) {
        rc = fit_onehot(c, enc, src, err);
        if (rc < 0)
            return rc;
    } else if (c->enc == QML_TF_HASH) {
        if (enc->n_buckets < 1 || enc->n_buckets > QML_TF_MAX_BUCKETS)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "column %s: hash buckets must be in 1..%d, got %d", c->name,
                              QML_TF_MAX_BUCKETS, enc->n_buckets);
        c->n_buckets = enc->n_buckets;
        c->hash_signed = enc->hash_signed != 0;
        c->width = (size_t)enc->n_buckets;
    }
    return 0;
}

int qml_features_fit(const qml_feature_spec *spec, size_t n, const qml_frame *frame,
                     qml_features **out, qn_err *err)
{
    int rc = 0;
    *out = NULL;
    qml_features *f = calloc(1, sizeof *f);
    if (!f || !(f->cols = calloc(n ? n : 1, sizeof *f->cols))) {
        free(f);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        if (!spec[i].column || !*spec[i].column) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "spec entry %zu has no column name", i);
            goto out;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(spec[i].column, spec[j].column) == 0) {
                rc = qn_err_set(err, QN_INVALID_ARGUMENT, "column %s appears twice in the spec",
                                spec[i].column);
                goto out;
            }
        col_fit *c = &f->cols[f->n_cols++];
        c->name = strdup(spec[i].column);
        if (!c->name) {
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        if ((rc = fit_column(c, &spec[i], frame, err)) < 0)
            goto out;
    }
    rc = finish_layout(f, err);
out:
    if (rc < 0)
        qml_features_free(f);
    else
        *out = f;
    return rc;
}

/* ---- transforming ---------------------------------------------------------- */

int qml_features_transform(const qml_features *f, const qml_frame *frame, float *out,
                           qn_err *err)
{
    size_t nr = qml_frame_nrows(frame), d = f->n_features;
    memset(out, 0, nr * d * sizeof *out);
    for (size_t i = 0; i < f->n_cols; i++) {
        const col_fit *c = &f->cols[i];
        int idx = qml_frame_find(frame, c->name);
        if (idx < 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "input %s: not in the frame", c->name);
        const qml_column *src = qml_frame_col(frame, (size_t)idx);
        int is_cat = src->type == QML_CATEGORICAL;
        if (is_cat && !c->categorical)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input %s: expected a numeric column, the frame's is categorical",
                              c->name);
        for (size_t r = 0; r < nr; r++) {
            int rc;
            float *row = out + r * d;
            if (is_cat)
                rc = put_string(c, src->missing[r] ? NULL : qml_col_str(src, r), row, r, err);
            else if (c->categorical) {
                char buf[KEY_MAX];
                if (src->missing[r])
                    rc = put_string(c, NULL, row, r, err);
                else if (isinf(src->num[r]))
                    rc = qn_err_set(err, QN_INVALID_ARGUMENT, "input %s, row %zu: value is "
                                    "infinite", c->name, r);
                else {
                    num_key(src->num[r], buf);
                    rc = put_string(c, buf, row, r, err);
                }
            } else
                rc = put_number(c, src->missing[r] ? NAN : src->num[r], row, r, err);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

/* Parses a whole string as a number; returns 0 or -1. */
static int parse_number(const char *s, double *v)
{
    char *end;
    *v = strtod(s, &end);
    return (end != s && *end == '\0') ? 0 : -1;
}

int qml_features_transform_raw(const qml_features *f, const qml_raw_input *inputs,
                               size_t n_inputs, size_t n_rows, float *out, qn_err *err)
{
    size_t d = f->n_features;
    memset(out, 0, n_rows * d * sizeof *out);
    for (size_t i = 0; i < f->n_cols; i++) {
        const col_fit *c = &f->cols[i];
        const qml_raw_input *in = NULL;
        for (size_t j = 0; j < n_inputs; j++) {
            if (!inputs[j].name || strcmp(inputs[j].name, c->name) != 0)
                continue;
            if (in)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "input %s: given twice", c->name);
            in = &inputs[j];
        }
        if (!in)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "input %s: missing from the request",
                              c->name);
        if (n_rows && !in->values)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "input %s: no values", c->name);
        for (size_t r = 0; r < n_rows; r++) {
            const qml_raw_value *v = &in->values[r];
            float *row = out + r * d;
            int rc;
            if (v->kind == QML_RAW_MISSING) {
                rc = c->categorical ? put_string(c, NULL, row, r, err)
                                    : put_number(c, NAN, row, r, err);
            } else if (v->kind == QML_RAW_NUM) {
                if (!c->categorical)
                    rc = put_number(c, v->num, row, r, err);
                else if (isnan(v->num))
                    rc = put_string(c, NULL, row, r, err);
                else if (isinf(v->num))
                    rc = qn_err_set(err, QN_INVALID_ARGUMENT, "input %s, row %zu: value is "
                                    "infinite", c->name, r);
                else {
                    char buf[KEY_MAX];
                    num_key(v->num, buf);
                    rc = put_string(c, buf, row, r, err);
                }
            } else if (v->kind == QML_RAW_STR) {
                double x;
                if (c->categorical)
                    rc = put_string(c, v->str, row, r, err);
                else if (!v->str || !*v->str)
                    rc = put_number(c, NAN, row, r, err);
                else if (parse_number(v->str, &x) < 0)
                    rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                                    "input %s, row %zu: expected a number, got \"%.40s\"",
                                    c->name, r, v->str);
                else
                    rc = put_number(c, x, row, r, err);
            } else {
                rc = qn_err_set(err, QN_INVALID_ARGUMENT, "input %s, row %zu: unknown value "
                                "kind %d", c->name, r, (int)v->kind);
            }
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

/* ---- JSON ------------------------------------------------------------------ */

static json_t *step_json(const col_fit *c)
{
    switch (c->enc) {
    case QML_TF_STANDARDIZE:
        return json_pack("{s:s, s:f, s:f}", "op", "standardize", "mean", c->a, "std", c->b);
    case QML_TF_MINMAX:
        return json_pack("{s:s, s:f, s:f}", "op", "minmax", "min", c->a, "max", c->b);
    case QML_TF_HASH:
        return json_pack("{s:s, s:i, s:b}", "op", "hash", "buckets", c->n_buckets, "signed",
                         c->hash_signed);
    case QML_TF_ONEHOT: {
        json_t *cats = json_array();
        for (size_t k = 0; cats && k + 1 < c->width; k++)
            if (json_array_append_new(cats, json_string(qml_dict_str(c->cats, (int32_t)k))) < 0) {
                json_decref(cats);
                return NULL;
            }
        return json_pack("{s:s, s:o, s:i, s:i}", "op", "onehot", "categories", cats,
                         "max_categories", c->max_categories, "min_frequency", c->min_frequency);
    }
    default:
        return NULL;
    }
}

char *qml_features_to_json(const qml_features *f, qn_err *err)
{
    char *text = NULL;
    json_t *cols = json_array();
    json_t *root = json_pack("{s:s, s:I, s:o}", "format", "quern.features/1", "n_features",
                             (json_int_t)f->n_features, "columns", cols);
    if (!root)
        goto out;
    for (size_t i = 0; i < f->n_cols; i++) {
        const col_fit *c = &f->cols[i];
        json_t *steps = json_array();
        json_t *col = json_pack("{s:s, s:s, s:o}", "name", c->name, "type",
                                c->categorical ? "categorical" : "numeric", "steps", steps);
        if (!col || json_array_append_new(cols, col) < 0)
            goto out;
        if (c->has_impute) {
            json_t *imp = c->categorical
                ? json_pack("{s:s, s:s, s:s}", "op", "impute", "strategy",
                            strategy_names[c->strategy], "value", c->fill_str)
                : json_pack("{s:s, s:s, s:f}", "op", "impute", "strategy",
                            strategy_names[c->strategy], "value", c->fill_num);
            if (!imp || json_array_append_new(steps, imp) < 0)
                goto out;
        }
        if (c->enc != ENC_NONE) {
            json_t *s = step_json(c);
            if (!s || json_array_append_new(steps, s) < 0)
                goto out;
        }
    }
    text = qn_json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
out:
    json_decref(root);
    if (!text)
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory writing the pipeline as JSON");
    return text;
}

/* Reads a finite number member; returns 0 or fills err. */
static int get_num(json_t *obj, const char *key, const char *where, double *v, qn_err *err)
{
    json_t *x = json_object_get(obj, key);
    if (!json_is_number(x))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s.%s: expected a number", where, key);
    *v = json_number_value(x);
    if (!isfinite(*v))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s.%s: not finite", where, key);
    return 0;
}

static int get_int(json_t *obj, const char *key, const char *where, long lo, long hi, int *v,
                   qn_err *err)
{
    json_t *x = json_object_get(obj, key);
    if (!json_is_integer(x) || json_integer_value(x) < lo || json_integer_value(x) > hi)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s.%s: expected an integer in %ld..%ld",
                          where, key, lo, hi);
    *v = (int)json_integer_value(x);
    return 0;
}

static int parse_op(const char *s)
{
    for (int i = 0; i < (int)(sizeof op_names / sizeof *op_names); i++)
        if (strcmp(s, op_names[i]) == 0)
            return i;
    return -1;
}

static int load_step(col_fit *c, json_t *st, size_t k, const char *col_where, qn_err *err)
{
    char where[96];
    snprintf(where, sizeof where, "%s.steps[%zu]", col_where, k);
    if (!json_is_object(st))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: expected an object", where);
    const char *ops = json_string_value(json_object_get(st, "op"));
    int op = ops ? parse_op(ops) : -1;
    if (op < 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s.op: expected one of impute, "
                          "standardize, minmax, onehot, hash", where);
    if (op == QML_TF_IMPUTE) {
        if (k != 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: impute must be the first step",
                              where);
        const char *strat = json_string_value(json_object_get(st, "strategy"));
        int si = -1;
        for (int i = 0; strat && i < 4; i++)
            if (strcmp(strat, strategy_names[i]) == 0)
                si = i;
        if (si < 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s.strategy: expected mean, median, "
                              "most_frequent or constant", where);
        c->has_impute = 1;
        c->strategy = (qml_impute_strategy)si;
        if (c->categorical) {
            const char *v = json_string_value(json_object_get(st, "value"));
            if (!v || !*v)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "%s.value: expected a non-empty "
                                  "string for a categorical column", where);
            free(c->fill_str);
            if (!(c->fill_str = strdup(v)))
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            return 0;
        }
        return get_num(st, "value", where, &c->fill_num, err);
    }
    if (c->enc != ENC_NONE)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: a column has at most one encoder "
                          "step", where);
    c->enc = op;
    c->width = 1;
    int rc = 0;
    switch (op) {
    case QML_TF_STANDARDIZE:
        if ((rc = get_num(st, "mean", where, &c->a, err)) < 0 ||
            (rc = get_num(st, "std", where, &c->b, err)) < 0)
            return rc;
        if (!(c->b > 0))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s.std: must be > 0", where);
        break;
    case QML_TF_MINMAX:
        if ((rc = get_num(st, "min", where, &c->a, err)) < 0 ||
            (rc = get_num(st, "max", where, &c->b, err)) < 0)
            return rc;
        if (!(c->b >= c->a) || !isfinite(c->b - c->a))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: needs finite min <= max", where);
        break;
    case QML_TF_HASH:
        if ((rc = get_int(st, "buckets", where, 1, QML_TF_MAX_BUCKETS, &c->n_buckets, err)) < 0)
            return rc;
        if (!json_is_boolean(json_object_get(st, "signed")))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s.signed: expected true or false",
                              where);
        c->hash_signed = json_is_true(json_object_get(st, "signed"));
        c->width = (size_t)c->n_buckets;
        break;
    case QML_TF_ONEHOT: {
        json_t *cats = json_object_get(st, "categories");
        if (!json_is_array(cats) || json_array_size(cats) >= QML_TF_MAX_FEATURES)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s.categories: expected an array of "
                              "fewer than %d strings", where, QML_TF_MAX_FEATURES);
        if ((rc = get_int(st, "max_categories", where, 0, INT32_MAX, &c->max_categories, err)) < 0 ||
            (rc = get_int(st, "min_frequency", where, 0, INT32_MAX, &c->min_frequency, err)) < 0)
            return rc;
        if (!(c->cats = qml_dict_new()))
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        size_t i;
        json_t *v;
        json_array_foreach(cats, i, v) {
            const char *s = json_string_value(v);
            if (!s)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "%s.categories[%zu]: expected a "
                                  "string", where, i);
            size_t len = strlen(s);
            if (qml_dict_find(c->cats, s, len) >= 0)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "%s.categories[%zu]: \"%.40s\" "
                                  "appears twice", where, i, s);
            if (qml_dict_intern(c->cats, s, len) < 0)
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        }
        c->width = json_array_size(cats) + 1;
        break;
    }
    }
    return 0;
}

static int load_column(col_fit *c, json_t *jc, size_t i, qn_err *err)
{
    char where[64];
    snprintf(where, sizeof where, "columns[%zu]", i);
    if (!json_is_object(jc))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: expected an object", where);
    const char *name = json_string_value(json_object_get(jc, "name"));
    const char *type = json_string_value(json_object_get(jc, "type"));
    json_t *steps = json_object_get(jc, "steps");
    if (!name || !*name)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s.name: expected a non-empty string",
                          where);
    if (!type || (strcmp(type, "numeric") != 0 && strcmp(type, "categorical") != 0))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s.type: expected numeric or categorical",
                          where);
    if (!json_is_array(steps) || json_array_size(steps) > 2)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s.steps: expected an array of at most "
                          "2 steps", where);
    if (!(c->name = strdup(name)))
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    c->categorical = strcmp(type, "categorical") == 0;
    c->enc = ENC_NONE;
    c->width = 1;
    size_t k;
    json_t *st;
    json_array_foreach(steps, k, st) {
        int rc = load_step(c, st, k, where, err);
        if (rc < 0)
            return rc;
    }
    if (c->categorical && !uses_key(c))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s (%s): a categorical column must end "
                          "in onehot or hash", where, c->name);
    if (c->categorical && !c->fill_str && !(c->fill_str = strdup("")))
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    return 0;
}

int qml_features_from_json(const char *json, size_t len, qml_features **out, qn_err *err)
{
    int rc = 0;
    json_error_t jerr;
    qml_features *f = NULL;
    *out = NULL;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return qn_err_set(err, qn_json_load_code(&jerr), "feature pipeline JSON, line %d column %d: %s",
                          jerr.line, jerr.column, jerr.text);
    const char *format = json_string_value(json_object_get(root, "format"));
    json_t *cols = json_object_get(root, "columns");
    json_t *nf = json_object_get(root, "n_features");
    if (!format || strcmp(format, "quern.features/1") != 0) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "format: expected \"quern.features/1\"");
        goto out;
    }
    if (!json_is_array(cols) || json_array_size(cols) == 0 ||
        json_array_size(cols) > QML_TF_MAX_FEATURES) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "columns: expected a non-empty array");
        goto out;
    }
    if (!json_is_integer(nf)) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "n_features: expected an integer");
        goto out;
    }
    size_t n = json_array_size(cols);
    f = calloc(1, sizeof *f);
    if (!f || !(f->cols = calloc(n, sizeof *f->cols))) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        col_fit *c = &f->cols[f->n_cols++];
        if ((rc = load_column(c, json_array_get(cols, i), i, err)) < 0)
            goto out;
        for (size_t j = 0; j < i; j++)
            if (strcmp(f->cols[j].name, c->name) == 0) {
                rc = qn_err_set(err, QN_INVALID_ARGUMENT, "columns[%zu].name: %s appears twice",
                                i, c->name);
                goto out;
            }
    }
    if ((rc = finish_layout(f, err)) < 0)
        goto out;
    if (json_integer_value(nf) != (json_int_t)f->n_features)
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "n_features: says %lld but the columns make %zu",
                        (long long)json_integer_value(nf), f->n_features);
out:
    json_decref(root);
    if (rc < 0)
        qml_features_free(f);
    else
        *out = f;
    return rc;
}
