/*
 * eval.c - splits and metrics (see eval.h for the definitions).
 *
 * Randomness comes from splitmix64 so that a seed gives the same split on
 * every platform and libc (rand() would not). Split outputs for interactions
 * go through qml_csr_from_coo, which sorts and sums, so the two sides of a
 * split are ordinary CSRs that models and evaluators read directly.
 */
#include "ml/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n); the modulo bias is below 2^-40 for any n we split. */
static size_t rand_below(uint64_t *s, size_t n)
{
    return (size_t)(splitmix64(s) % (uint64_t)n);
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* ---- splits ---------------------------------------------------------------- */

void qml_split_free(qml_split *s)
{
    if (!s)
        return;
    free(s->train);
    free(s->test);
    memset(s, 0, sizeof *s);
}

static int split_alloc(qml_split *out, size_t n, qn_err *err)
{
    memset(out, 0, sizeof *out);
    out->train = malloc((n ? n : 1) * sizeof *out->train);
    out->test = malloc((n ? n : 1) * sizeof *out->test);
    if (!out->train || !out->test) {
        qml_split_free(out);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory splitting %zu rows", n);
    }
    return 0;
}

int qml_split_random(size_t n, double test_ratio, uint64_t seed, qml_split *out, qn_err *err)
{
    memset(out, 0, sizeof *out);
    if (!(test_ratio >= 0 && test_ratio <= 1))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "test ratio must be in [0, 1], got %g",
                          test_ratio);
    int rc = split_alloc(out, n, err);
    if (rc < 0)
        return rc;
    size_t *perm = out->train; /* permuted in place, then split */
    for (size_t i = 0; i < n; i++)
        perm[i] = i;
    size_t n_test = (size_t)llround((double)n * test_ratio);
    uint64_t s = seed;
    /* Partial Fisher-Yates: the first n_test slots become a uniform sample. */
    for (size_t i = 0; i < n_test; i++) {
        size_t j = i + rand_below(&s, n - i);
        size_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    memcpy(out->test, perm, n_test * sizeof *perm);
    memmove(perm, perm + n_test, (n - n_test) * sizeof *perm);
    out->n_test = n_test;
    out->n_train = n - n_test;
    qsort(out->test, out->n_test, sizeof *out->test, cmp_size);
    qsort(out->train, out->n_train, sizeof *out->train, cmp_size);
    return 0;
}

int qml_split_by_time(const double *time, size_t n, double cutoff, qml_split *out, qn_err *err)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < n; i++)
        if (isnan(time[i]))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "row %zu has no time (NaN)", i);
    int rc = split_alloc(out, n, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (time[i] < cutoff)
            out->train[out->n_train++] = i;
        else
            out->test[out->n_test++] = i;
    }
    return 0;
}

/* Builds train and test CSRs from triplets and a side flag per triplet. */
static int build_pair(int32_t nr, int32_t nc, const int32_t *r, const int32_t *c,
                      const float *v, const uint8_t *to_test, size_t n, qml_csr **train,
                      qml_csr **test, qn_err *err)
{
    int rc = 0;
    int32_t *rr = malloc((n ? n : 1) * 2 * sizeof *rr);
    float *vv = malloc((n ? n : 1) * sizeof *vv);
    *train = *test = NULL;
    if (!rr || !vv) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory splitting %zu entries", n);
        goto out;
    }
    int32_t *cc = rr + n;
    for (int side = 0; side < 2; side++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (to_test[i] == side) {
                rr[m] = r[i];
                cc[m] = c[i];
                vv[m++] = v ? v[i] : 1.0f;
            }
        rc = qml_csr_from_coo(nr, nc, rr, cc, vv, m, side ? test : train, err);
        if (rc < 0)
            goto out;
    }
out:
    if (rc < 0) {
        qml_csr_free(*train);
        qml_csr_free(*test);
        *train = *test = NULL;
    }
    free(rr);
    free(vv);
    return rc;
}

int qml_split_csr_leave_k_out(const qml_csr *m, int k, uint64_t seed, qml_csr **train,
                              qml_csr **test, qn_err *err)
{
    *train = *test = NULL;
    if (k < 1)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "leave-k-out: k must be >= 1, got %d", k);
    size_t n = (size_t)m->nnz;
    int32_t *rows = malloc((n ? n : 1) * sizeof *rows);
    uint8_t *side = calloc(n ? n : 1, 1);
    size_t *pos = NULL;
    int rc = 0;
    int64_t max_row = 0;
    for (int32_t u = 0; u < m->nrows; u++)
        if (m->indptr[u + 1] - m->indptr[u] > max_row)
            max_row = m->indptr[u + 1] - m->indptr[u];
    pos = malloc(((size_t)max_row + 1) * sizeof *pos);
    if (!rows || !side || !pos) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory splitting %zu entries", n);
        goto out;
    }
    uint64_t s = seed;
    for (int32_t u = 0; u < m->nrows; u++) {
        int64_t b = m->indptr[u], e = m->indptr[u + 1];
        size_t len = (size_t)(e - b);
        for (int64_t i = b; i < e; i++)
            rows[i] = u;
        if (len <= (size_t)k)
            continue;
        for (size_t i = 0; i < len; i++)
            pos[i] = i;
        for (size_t i = 0; i < (size_t)k; i++) {
            size_t j = i + rand_below(&s, len - i);
            size_t t = pos[i];
            pos[i] = pos[j];
            pos[j] = t;
            side[b + (int64_t)pos[i]] = 1;
        }
    }
    rc = build_pair(m->nrows, m->ncols, rows, m->indices, m->data, side, n, train, test, err);
out:
    free(rows);
    free(side);
    free(pos);
    return rc;
}

static int check_events(const qml_events *in, qn_err *err)
{
    if (in->n_users < 0 || in->n_items < 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "negative shape %d users x %d items",
                          in->n_users, in->n_items);
    for (size_t i = 0; i < in->n; i++) {
        if (in->user[i] < 0 || in->user[i] >= in->n_users || in->item[i] < 0 ||
            in->item[i] >= in->n_items)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "interaction %zu: (user %d, item %d) "
                              "outside %d users x %d items", i, in->user[i], in->item[i],
                              in->n_users, in->n_items);
        if (in->time && isnan(in->time[i]))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "interaction %zu has no time (NaN)", i);
    }
    return 0;
}

typedef struct event {
    int32_t user, item;
    size_t idx;
} event;

static int cmp_event(const void *a, const void *b)
{
    const event *x = a, *y = b;
    if (x->user != y->user)
        return x->user < y->user ? -1 : 1;
    if (x->item != y->item)
        return x->item < y->item ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* One distinct (user, item) pair: its events are ev[first .. first+count). */
typedef struct pair {
    int32_t item;
    double key;     /* latest time (held out first) or a random draw */
    size_t first, count;
} pair;

/* Latest first (then lower item id), so the first k pairs are held out. */
static int cmp_pair(const void *a, const void *b)
{
    const pair *x = a, *y = b;
    if (x->key != y->key)
        return x->key > y->key ? -1 : 1;
    return (x->item > y->item) - (x->item < y->item);
}

/* Marks in side[] (1 = test) the events of each user's k held-out pairs. */
static int leave_k_out_sides(const qml_events *in, int k, uint64_t seed, uint8_t *side,
                             qn_err *err)
{
    int rc = 0;
    size_t n = in->n;
    event *ev = malloc((n ? n : 1) * sizeof *ev);
    pair *pairs = malloc((n ? n : 1) * sizeof *pairs);
    if (!ev || !pairs) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory splitting %zu events", n);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        ev[i] = (event){in->user[i], in->item[i], i};
    qsort(ev, n, sizeof *ev, cmp_event);
    uint64_t s = seed;
    for (size_t b = 0; b < n;) {
        size_t e = b, np = 0;
        while (e < n && ev[e].user == ev[b].user)
            e++;
        for (size_t i = b; i < e;) {
            size_t j = i;
            double latest = -INFINITY;
            while (j < e && ev[j].item == ev[i].item) {
                if (in->time && in->time[ev[j].idx] > latest)
                    latest = in->time[ev[j].idx];
                j++;
            }
            if (!in->time)
                latest = (double)(splitmix64(&s) >> 11);
            pairs[np++] = (pair){ev[i].item, latest, i, j - i};
            i = j;
        }
        if (np > (size_t)k) {
            qsort(pairs, np, sizeof *pairs, cmp_pair);
            for (size_t p = 0; p < (size_t)k; p++)
                for (size_t q = 0; q < pairs[p].count; q++)
                    side[ev[pairs[p].first + q].idx] = 1;
        }
        b = e;
    }
out:
    free(ev);
    free(pairs);
    return rc;
}

int qml_split_events_leave_k_out(const qml_events *in, int k, uint64_t seed, qml_csr **train,
                                 qml_csr **test, qn_err *err)
{
    *train = *test = NULL;
    if (k < 1)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "leave-k-out: k must be >= 1, got %d", k);
    int rc = check_events(in, err);
    if (rc < 0)
        return rc;
    uint8_t *side = calloc(in->n ? in->n : 1, 1);
    if (!side)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory splitting %zu events", in->n);
    if ((rc = leave_k_out_sides(in, k, seed, side, err)) == 0)
        rc = build_pair(in->n_users, in->n_items, in->user, in->item, in->value, side, in->n,
                        train, test, err);
    free(side);
    return rc;
}

int qml_split_events_leave_k_out_rows(const qml_events *in, int k, uint64_t seed,
                                      qml_split *out, qn_err *err)
{
    memset(out, 0, sizeof *out);
    if (k < 1)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "leave-k-out: k must be >= 1, got %d", k);
    int rc = check_events(in, err);
    if (rc < 0)
        return rc;
    size_t n = in->n;
    uint8_t *side = calloc(n ? n : 1, 1);
    if (!side)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory splitting %zu events", n);
    if ((rc = leave_k_out_sides(in, k, seed, side, err)) < 0)
        goto out;
    size_t nt = 0;
    for (size_t i = 0; i < n; i++)
        nt += side[i];
    out->train = malloc((n - nt ? n - nt : 1) * sizeof *out->train);
    out->test = malloc((nt ? nt : 1) * sizeof *out->test);
    if (!out->train || !out->test) {
        qml_split_free(out);
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory splitting %zu events", n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (side[i])
            out->test[out->n_test++] = i;
        else
            out->train[out->n_train++] = i;
    }
out:
    free(side);
    return rc;
}

int qml_split_events_by_time(const qml_events *in, double cutoff, qml_csr **train,
                                   qml_csr **test, qn_err *err)
{
    *train = *test = NULL;
    if (!in->time)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "a split by time needs event times");
    int rc = check_events(in, err);
    if (rc < 0)
        return rc;
    uint8_t *side = malloc(in->n ? in->n : 1);
    if (!side)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < in->n; i++)
        side[i] = in->time[i] >= cutoff;
    rc = build_pair(in->n_users, in->n_items, in->user, in->item, in->value, side, in->n, train,
                    test, err);
    free(side);
    return rc;
}

/* ---- classifier and regressor metrics -------------------------------------- */

static int need_rows(size_t n, qn_err *err)
{
    return n ? 0 : qn_err_set(err, QN_INVALID_ARGUMENT, "a metric needs at least one row");
}

static int check_binary(const double *y, size_t n, qn_err *err)
{
    for (size_t i = 0; i < n; i++)
        if (y[i] != 0 && y[i] != 1)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "label of row %zu is %g, expected 0 or 1",
                              i, y[i]);
    return 0;
}

int qml_metric_accuracy(const double *y_true, const double *y_pred, size_t n, double *out,
                        qn_err *err)
{
    int rc = need_rows(n, err);
    if (rc < 0)
        return rc;
    size_t ok = 0;
    for (size_t i = 0; i < n; i++)
        ok += y_true[i] == y_pred[i];
    *out = (double)ok / (double)n;
    return 0;
}

int qml_metric_log_loss(const double *y, const double *p, size_t n, double eps, double *out,
                        qn_err *err)
{
    int rc = need_rows(n, err);
    if (rc < 0 || (rc = check_binary(y, n, err)) < 0)
        return rc;
    if (eps <= 0)
        eps = 1e-15;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(p[i]))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "probability of row %zu is NaN", i);
        double q = p[i] < eps ? eps : p[i] > 1 - eps ? 1 - eps : p[i];
        sum -= y[i] == 1 ? log(q) : log1p(-q);
    }
    *out = sum / (double)n;
    return 0;
}

typedef struct scored {
    double s;
    size_t i;
} scored;

static int cmp_scored(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->s != y->s)
        return x->s < y->s ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

int qml_metric_roc_auc(const double *y, const double *score, size_t n, double *out, qn_err *err)
{
    int rc = need_rows(n, err);
    if (rc < 0 || (rc = check_binary(y, n, err)) < 0)
        return rc;
    scored *a = malloc(n * sizeof *a);
    if (!a)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory ranking %zu scores", n);
    for (size_t i = 0; i < n; i++) {
        if (isnan(score[i])) {
            free(a);
            return qn_err_set(err, QN_INVALID_ARGUMENT, "score of row %zu is NaN", i);
        }
        a[i] = (scored){score[i], i};
    }
    qsort(a, n, sizeof *a, cmp_scored);
    /* Sum of the (1-based, tie-averaged) ranks of the positives. */
    double rank_sum = 0, n_pos = 0;
    for (size_t b = 0; b < n;) {
        size_t e = b;
        double pos = 0;
        while (e < n && a[e].s == a[b].s)
            pos += y[a[e++].i];
        rank_sum += pos * (0.5 * (double)(b + 1 + e));
        n_pos += pos;
        b = e;
    }
    free(a);
    double n_neg = (double)n - n_pos;
    if (n_pos == 0 || n_neg == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "ROC AUC needs both classes; the labels "
                          "have only %s", n_pos ? "positives" : "negatives");
    *out = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg);
    return 0;
}

int qml_metric_rmse(const double *y, const double *yhat, size_t n, double *out, qn_err *err)
{
    int rc = need_rows(n, err);
    if (rc < 0)
        return rc;
    double ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += (y[i] - yhat[i]) * (y[i] - yhat[i]);
    *out = sqrt(ss / (double)n);
    return 0;
}

int qml_metric_mae(const double *y, const double *yhat, size_t n, double *out, qn_err *err)
{
    int rc = need_rows(n, err);
    if (rc < 0)
        return rc;
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += fabs(y[i] - yhat[i]);
    *out = s / (double)n;
    return 0;
}

int qml_metric_r2(const double *y, const double *yhat, size_t n, double *out, qn_err *err)
{
    int rc = need_rows(n, err);
    if (rc < 0)
        return rc;
    double mean = 0, ss_res = 0, ss_tot = 0;
    for (size_t i = 0; i < n; i++)
        mean += y[i];
    mean /= (double)n;
    for (size_t i = 0; i < n; i++) {
        ss_res += (y[i] - yhat[i]) * (y[i] - yhat[i]);
        ss_tot += (y[i] - mean) * (y[i] - mean);
    }
    *out = ss_tot > 0 ? 1 - ss_res / ss_tot : (ss_res == 0 ? 1.0 : 0.0);
    return 0;
}

int qml_metric_mean_error(const double *y, const double *yhat, size_t n, double *out, qn_err *err)
{
    int rc = need_rows(n, err);
    if (rc < 0)
        return rc;
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += yhat[i] - y[i];
    *out = s / (double)n;
    return 0;
}

/* 0 when every y is 0 or 1 and every p in [0, 1]; else QN_INVALID_ARGUMENT naming the row. */
static int binary_pairs(const double *y, const double *p, size_t n, qn_err *err)
{
    int rc = need_rows(n, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (y && y[i] != 0 && y[i] != 1)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "row %zu: label %g is not 0 or 1", i, y[i]);
        if (!(p[i] >= 0 && p[i] <= 1))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "row %zu: probability %g is not in [0, 1]", i, p[i]);
    }
    return 0;
}

int qml_metric_brier(const double *y, const double *p, size_t n, double *out, qn_err *err)
{
    int rc = binary_pairs(y, p, n, err);
    if (rc < 0)
        return rc;
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (p[i] - y[i]) * (p[i] - y[i]);
    *out = s / (double)n;
    return 0;
}

static size_t cal_bin(double p)
{
    size_t b = (size_t)(p * QML_CAL_BINS);
    return b >= QML_CAL_BINS ? QML_CAL_BINS - 1 : b;
}

int qml_calibration_table(const double *y, const double *p, size_t n, qml_calibration *out,
                          qn_err *err)
{
    int rc = binary_pairs(y, p, n, err);
    if (rc < 0)
        return rc;
    double sp[QML_CAL_BINS] = {0}, sy[QML_CAL_BINS] = {0};
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        size_t b = cal_bin(p[i]);
        out->n[b] += 1;
        sp[b] += p[i];
        sy[b] += y[i];
    }
    for (size_t b = 0; b < QML_CAL_BINS; b++) {
        out->mean_p[b] = out->n[b] > 0 ? sp[b] / out->n[b] : NAN;
        out->rate[b] = out->n[b] > 0 ? sy[b] / out->n[b] : NAN;
    }
    return 0;
}

double qml_calibrate(const qml_calibration *cal, double p)
{
    if (!(p >= 0 && p <= 1))
        return p;
    size_t b = cal_bin(p);
    return cal->n[b] > 0 && isfinite(cal->rate[b]) ? cal->rate[b] : p;
}

typedef struct cbpe_row {
    double s, p;
} cbpe_row;

static int cmp_cbpe_desc(const void *a, const void *b)
{
    double x = ((const cbpe_row *)a)->s, y = ((const cbpe_row *)b)->s;
    return (x < y) - (x > y);
}

int qml_cbpe_binary(const double *score, const double *p, size_t n, double *accuracy,
                    double *auc, qn_err *err)
{
    int rc = binary_pairs(NULL, p, n, err);
    if (rc < 0)
        return rc;
    cbpe_row *r = malloc(n * sizeof *r);
    if (!r)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    double acc = 0, pos = 0, neg = 0;
    for (size_t i = 0; i < n; i++) {
        r[i].s = score ? score[i] : p[i];
        r[i].p = p[i];
        acc += r[i].s >= 0.5 ? p[i] : 1 - p[i];
        pos += p[i];
        neg += 1 - p[i];
    }
    *accuracy = acc / (double)n;
    if (pos <= 0 || neg <= 0) {
        *auc = NAN;
        free(r);
        return 0;
    }
    qsort(r, n, sizeof *r, cmp_cbpe_desc);
    /* Lower the threshold one distinct score at a time: the expected TP and
     * FP grow by the p and 1 - p of the rows at that score; add the trapezoid. */
    double tp = 0, fp = 0, area = 0;
    for (size_t b = 0; b < n;) {
        double tp0 = tp, fp0 = fp;
        size_t e = b;
        while (e < n && r[e].s == r[b].s) {
            tp += r[e].p;
            fp += 1 - r[e].p;
            e++;
        }
        area += (fp - fp0) / neg * 0.5 * (tp + tp0) / pos;
        b = e;
    }
    free(r);
    *auc = area;
    return 0;
}

/* ---- recommender metrics --------------------------------------------------- */

int qml_rec_user_metrics(const int32_t *recs, size_t n_recs, const int32_t *relevant,
                         size_t n_rel, size_t k, size_t n_candidates, qml_rec_user *out,
                         qn_err *err)
{
    if (k == 0 || n_rel == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "user metrics need k >= 1 and at least one "
                          "relevant item (k %zu, relevant %zu)", k, n_rel);
    if (n_candidates < n_rel || n_candidates < n_recs)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%zu candidates cannot hold %zu relevant "
                          "and %zu recommended items", n_candidates, n_rel, n_recs);
    int32_t *rel = malloc(n_rel * sizeof *rel);
    if (!rel)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    memcpy(rel, relevant, n_rel * sizeof *rel);
    qsort(rel, n_rel, sizeof *rel, cmp_i32);

    size_t hits_k = 0, hits_all = 0, kk = k < n_rel ? k : n_rel;
    double ap = 0, dcg = 0, idcg = 0;
    /* For AUC: correctly ordered (relevant, non-relevant) pairs. Walk the list
     * from the bottom so each relevant item sees the negatives listed after it. */
    for (size_t i = 0; i < n_recs; i++) {
        int hit = bsearch(&recs[i], rel, n_rel, sizeof *rel, cmp_i32) != NULL;
        hits_all += hit;
        if (i < k && hit) {
            hits_k++;
            ap += (double)hits_k / (double)(i + 1);
            dcg += 1.0 / log2((double)i + 2);
        }
    }
    for (size_t i = 0; i < kk; i++)
        idcg += 1.0 / log2((double)i + 2);
    size_t n_neg = n_candidates - n_rel;
    size_t listed_neg = n_recs - hits_all;
    size_t unlisted_neg = n_neg >= listed_neg ? n_neg - listed_neg : 0;
    double correct = 0;
    size_t neg_below = unlisted_neg;
    for (size_t i = n_recs; i-- > 0;) {
        if (bsearch(&recs[i], rel, n_rel, sizeof *rel, cmp_i32))
            correct += (double)neg_below;
        else
            neg_below++;
    }
    correct += 0.5 * (double)(n_rel - hits_all) * (double)unlisted_neg;
    free(rel);
    out->precision = (double)hits_k / (double)k;
    out->recall = (double)hits_k / (double)n_rel;
    out->ap = ap / (double)kk;
    out->ndcg = dcg / idcg;
    out->auc = n_neg ? correct / ((double)n_rel * (double)n_neg) : NAN;
    return 0;
}

/* Is item in row u of m (columns sorted)? */
static int csr_has(const qml_csr *m, int32_t u, int32_t item)
{
    if (u < 0 || u >= m->nrows)
        return 0;
    const int32_t *b = m->indices + m->indptr[u];
    size_t len = (size_t)(m->indptr[u + 1] - m->indptr[u]);
    return bsearch(&item, b, len, sizeof *b, cmp_i32) != NULL;
}

int qml_eval_recommender(const qml_csr *train, const qml_csr *test, qml_recommend_fn fn,
                         void *ctx, size_t k, size_t rank_depth, qml_rec_report *report,
                         qn_err *err)
{
    memset(report, 0, sizeof *report);
    if (k == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "k must be >= 1");
    if (train->nrows != test->nrows || train->ncols != test->ncols)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "train (%d x %d) and test (%d x %d) differ "
                          "in shape", train->nrows, train->ncols, test->nrows, test->ncols);
    size_t depth = rank_depth > k ? rank_depth : k;
    if (depth > (size_t)train->ncols)
        depth = (size_t)train->ncols;
    if (depth == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "the catalog is empty");
    int rc = 0;
    int32_t *items = malloc(depth * sizeof *items), *clean = malloc(depth * sizeof *clean);
    uint8_t *covered = calloc((size_t)train->ncols, 1);
    size_t n_covered = 0;
    double sp = 0, sr = 0, sap = 0, sndcg = 0, sauc = 0;
    if (!items || !clean || !covered) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (int32_t u = 0; u < test->nrows; u++) {
        int64_t tb = test->indptr[u], te = test->indptr[u + 1];
        if (te == tb)
            continue;
        size_t got = 0;
        if ((rc = fn(ctx, u, depth, items, &got, err)) < 0)
            goto out;
        if (got > depth) {
            rc = qn_err_set(err, QN_INTERNAL, "recommender returned %zu items for user %d, asked "
                            "for %zu", got, u, depth);
            goto out;
        }
        /* Candidates: items not seen in training, plus the held-out ones. */
        size_t seen_not_rel = 0;
        for (int64_t i = train->indptr[u]; i < train->indptr[u + 1]; i++)
            seen_not_rel += !csr_has(test, u, train->indices[i]);
        size_t n_cand = (size_t)train->ncols - seen_not_rel, n_clean = 0;
        for (size_t i = 0; i < got; i++) {
            if (items[i] < 0 || items[i] >= train->ncols) {
                rc = qn_err_set(err, QN_INTERNAL, "recommender returned item %d for user %d, "
                                "outside the %d-item catalog", items[i], u, train->ncols);
                goto out;
            }
            if (i < k && !covered[items[i]]) {
                covered[items[i]] = 1;
                n_covered++;
            }
            /* Seen items are not candidates: a list that repeats them only
             * loses precision; they take no place in the AUC ranking. */
            if (!csr_has(train, u, items[i]) || csr_has(test, u, items[i]))
                clean[n_clean++] = items[i];
        }
        qml_rec_user m;
        /* precision..NDCG on the list as returned; AUC on the candidate list. */
        if ((rc = qml_rec_user_metrics(items, got < k ? got : k, test->indices + tb,
                                       (size_t)(te - tb), k, (size_t)train->ncols, &m, err)) < 0)
            goto out;
        qml_rec_user ma;
        if ((rc = qml_rec_user_metrics(clean, n_clean, test->indices + tb, (size_t)(te - tb), k,
                                       n_cand, &ma, err)) < 0)
            goto out;
        report->n_users++;
        sp += m.precision;
        sr += m.recall;
        sap += m.ap;
        sndcg += m.ndcg;
        if (!isnan(ma.auc)) {
            sauc += ma.auc;
            report->n_auc_users++;
        }
    }
    report->k = k;
    if (report->n_users) {
        double nu = (double)report->n_users;
        report->precision = sp / nu;
        report->recall = sr / nu;
        report->map = sap / nu;
        report->ndcg = sndcg / nu;
    }
    report->auc = report->n_auc_users ? sauc / (double)report->n_auc_users : NAN;
    report->coverage = train->ncols ? (double)n_covered / (double)train->ncols : 0;
out:
    free(items);
    free(clean);
    free(covered);
    return rc;
}

/* ---- popularity baseline --------------------------------------------------- */

struct qml_popularity {
    const qml_csr *train;   /* borrowed: seen items are looked up in it */
    int32_t *ranked;        /* all items, most popular first */
    int32_t n_items;
};

typedef struct item_count {
    int32_t item;
    int64_t count;
} item_count;

static int cmp_item_count(const void *a, const void *b)
{
    const item_count *x = a, *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return (x->item > y->item) - (x->item < y->item);
}

qml_popularity *qml_popularity_new(const qml_csr *train, qn_err *err)
{
    qml_popularity *p = calloc(1, sizeof *p);
    size_t ni = (size_t)train->ncols;
    item_count *ic = calloc(ni ? ni : 1, sizeof *ic);
    if (p)
        p->ranked = malloc((ni ? ni : 1) * sizeof *p->ranked);
    if (!p || !ic || !p->ranked) {
        free(ic);
        qml_popularity_free(p);
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < ni; i++)
        ic[i].item = (int32_t)i;
    for (int64_t i = 0; i < train->nnz; i++)
        ic[train->indices[i]].count++;
    qsort(ic, ni, sizeof *ic, cmp_item_count);
    for (size_t i = 0; i < ni; i++)
        p->ranked[i] = ic[i].item;
    free(ic);
    p->train = train;
    p->n_items = train->ncols;
    return p;
}

void qml_popularity_free(qml_popularity *p)
{
    if (!p)
        return;
    free(p->ranked);
    free(p);
}

int qml_popularity_recommend(void *ctx, int32_t user, size_t n, int32_t *items, size_t *n_out,
                             qn_err *err)
{
    const qml_popularity *p = ctx;
    size_t got = 0;
    for (int32_t i = 0; i < p->n_items && got < n; i++)
        if (!csr_has(p->train, user, p->ranked[i]))
            items[got++] = p->ranked[i];
    *n_out = got;
    return 0;
}

int qml_eval_popularity(const qml_csr *train, const qml_csr *test, size_t k, size_t rank_depth,
                        qml_rec_report *report, qn_err *err)
{
    qml_popularity *p = qml_popularity_new(train, err);
    if (!p)
        return err ? err->code : QN_RESOURCE_EXHAUSTED;
    int rc = qml_eval_recommender(train, test, qml_popularity_recommend, p, k, rank_depth, report,
                                  err);
    qml_popularity_free(p);
    return rc;
}
