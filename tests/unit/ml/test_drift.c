/* test_drift.c - drift statistics against scipy 1.10, reference profiles, the
 * per-column default choice and the dataset verdict.
 *
 * drift_reference.py (run here with /usr/bin/python3) writes every statistic
 * case with scipy's answer; each is recomputed in C and must agree to 1e-6
 * relative (REL_TOL; an absolute floor of 1e-300 lets a p-value that both
 * sides put at or below the double range pass). Where scipy is itself an
 * approximation (Pelz-Good for large N, 2*smirnov as the two-sided tail,
 * smirnov's exp(-(6nd+1)^2/18n) above n = 1e6) the same approximation is
 * implemented, so the tolerance holds there too; the exact methods agree to
 * about 1e-12 in practice. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ml/drift.h"
#include "ml/frame.h"
#include "ml/profile.h"


#define REL_TOL 1e-6
#define assert_near(a, b, eps) assert_true(fabs((double)(a) - (double)(b)) <= (eps))

/* ---- the case file ---------------------------------------------------------- */

#define MAX_KEYS 8

typedef struct tcase {
    char kind[32], name[96];
    int nkeys;
    char key[MAX_KEYS][16];
    double *val[MAX_KEYS];
    size_t len[MAX_KEYS];
} tcase;

static void tcase_clear(tcase *c)
{
    for (int i = 0; i < c->nkeys; i++)
        free(c->val[i]);
    memset(c, 0, sizeof *c);
}

static const double *get(const tcase *c, const char *key, size_t *len)
{
    for (int i = 0; i < c->nkeys; i++)
        if (strcmp(c->key[i], key) == 0) {
            if (len)
                *len = c->len[i];
            return c->val[i];
        }
    fail_msg("case %s %s: no key %s", c->kind, c->name, key);
    return NULL;
}

/* Reads the next case; returns 0 at end of file. */
static int read_case(FILE *f, tcase *c, char **line, size_t *cap)
{
    tcase_clear(c);
    ssize_t n;
    while ((n = getline(line, cap, f)) > 0) {
        char *s = *line;
        if (strncmp(s, "case ", 5) == 0) {
            assert_int_equal(sscanf(s, "case %31s %95s", c->kind, c->name), 2);
            continue;
        }
        if (strncmp(s, "end", 3) == 0)
            return 1;
        assert_true(c->nkeys < MAX_KEYS);
        int k = c->nkeys++;
        char *sp = strchr(s, ' ');
        assert_non_null(sp);
        *sp = 0;
        snprintf(c->key[k], sizeof c->key[k], "%s", s);
        size_t vcap = 16, len = 0;
        double *v = malloc(vcap * sizeof *v);
        char *p = sp + 1, *endp;
        for (;;) {
            double x = strtod(p, &endp);
            if (endp == p)
                break;
            if (len == vcap)
                v = realloc(v, (vcap *= 2) * sizeof *v);
            v[len++] = x;
            p = endp;
        }
        c->val[k] = v;
        c->len[k] = len;
    }
    return 0;
}

static int close_enough(double got, double want)
{
    if (isnan(want))
        return isnan(got);
    if (isinf(want))
        return got == want;
    return fabs(got - want) <= REL_TOL * fabs(want) + 1e-300;
}

static int check(const tcase *c, const char *what, double got, double want)
{
    if (close_enough(got, want))
        return 0;
    print_message("MISMATCH %s %s %s: got %.17g want %.17g (rel %.3g)\n", c->kind, c->name,
                  what, got, want, fabs(got - want) / fabs(want));
    return 1;
}

static int run_case(const tcase *c)
{
    qn_err err;
    size_t na = 0, nb = 0;
    const double *e = get(c, "expect", NULL);
    if (strcmp(c->kind, "ks") == 0) {
        const double *a = get(c, "a", &na), *b = get(c, "b", &nb);
        qml_ks_result r;
        assert_int_equal(qml_ks_2samp(a, na, b, nb, (qml_ks_mode)get(c, "mode", NULL)[0], &r,
                                      &err), 0);
        return check(c, "D", r.statistic, e[0]) + check(c, "p", r.p_value, e[1]);
    }
    if (strcmp(c->kind, "kstwo") == 0)
        return check(c, "sf", qml_kolmogorov_sf((int64_t)get(c, "n", NULL)[0],
                                                get(c, "d", NULL)[0]), e[0]);
    if (strcmp(c->kind, "smirnov") == 0)
        return check(c, "sf", qml_smirnov_sf((int64_t)get(c, "n", NULL)[0],
                                             get(c, "d", NULL)[0]), e[0]);
    if (strcmp(c->kind, "chi2sf") == 0)
        return check(c, "sf", qml_chi2_sf(get(c, "x", NULL)[0], get(c, "dof", NULL)[0]), e[0]);
    if (strcmp(c->kind, "chisq") == 0 || strcmp(c->kind, "chidrift") == 0) {
        double s, p;
        int drift = strcmp(c->kind, "chidrift") == 0;
        const double *a = get(c, drift ? "ref" : "obs", &na);
        const double *b = get(c, drift ? "cur" : "exp", &nb);
        assert_int_equal(na, nb);
        if (drift)
            assert_int_equal(qml_chisquare_drift(a, b, na, &s, &p, &err), 0);
        else
            assert_int_equal(qml_chisquare(a, b, na, &s, &p, &err), 0);
        return check(c, "stat", s, e[0]) + check(c, "p", p, e[1]);
    }
    if (strcmp(c->kind, "ztest") == 0) {
        const double *x = get(c, "x", NULL);
        double z, p;
        assert_int_equal(qml_ztest_proportions(x[0], x[1], x[2], x[3], &z, &p, &err), 0);
        return check(c, "z", z, e[0]) + check(c, "p", p, e[1]);
    }
    if (strcmp(c->kind, "wasserstein") == 0) {
        const double *a = get(c, "a", &na), *b = get(c, "b", &nb);
        double w;
        assert_int_equal(qml_wasserstein(a, na, b, nb, &w, &err), 0);
        int bad = check(c, "w", w, e[0]);
        /* normed by the population std of the reference */
        bad += check(c, "normed", qml_wasserstein_normed(w, e[1]),
                     e[1] > 0.001 ? e[0] / e[1] : e[0] / 0.001);
        return bad;
    }
    if (strcmp(c->kind, "hist") == 0) {
        size_t nx = 0, ne = 0, nexp = 0;
        const double *x = get(c, "x", &nx), *edges = get(c, "edges", &ne);
        get(c, "expect", &nexp);
        assert_int_equal(nexp, ne - 1);
        double *counts = malloc(nexp * sizeof *counts);
        qml_histogram_clamped(x, nx, edges, ne - 1, counts);
        int bad = 0;
        for (size_t i = 0; i < nexp; i++)
            bad += check(c, "count", counts[i], e[i]);
        free(counts);
        return bad;
    }
    if (strcmp(c->kind, "js") == 0 || strcmp(c->kind, "psi") == 0) {
        const double *p = get(c, "p", &na), *q = get(c, "q", &nb);
        double v;
        if (c->kind[0] == 'j')
            assert_int_equal(qml_jensenshannon(p, q, na, get(c, "base", NULL)[0], &v, &err), 0);
        else
            assert_int_equal(qml_psi(p, q, na, &v, &err), 0);
        return check(c, c->kind, v, e[0]);
    }
    if (strcmp(c->kind, "fill") == 0) {
        const double *x = get(c, "x", &na);
        double *y = malloc(na * sizeof *y);
        memcpy(y, x, na * sizeof *y);
        qml_drift_fill_empty(y, na);
        int bad = 0;
        for (size_t i = 0; i < na; i++)
            bad += check(c, "pct", y[i], e[i]);
        free(y);
        return bad;
    }
    fail_msg("unknown case kind %s", c->kind);
    return 1;
}

static void test_against_scipy(void **state)
{
    const char *src = getenv("QUERN_SOURCE_DIR"), *work = getenv("QUERN_TEST_WORK");
    assert_non_null(src);
    assert_non_null(work);
    char path[4096], cmd[8192];
    snprintf(path, sizeof path, "%s/drift_cases.txt", work);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/unit/ml/drift_reference.py %s",
             src, path);
    assert_int_equal(system(cmd), 0);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    tcase c = {0};
    char *line = NULL;
    size_t cap = 0;
    int ncases = 0, bad = 0, ks_exact = 0, ks_asymp = 0;
    while (read_case(f, &c, &line, &cap)) {
        int b = run_case(&c);
        bad += b != 0;
        ncases++;
        if (strcmp(c.kind, "ks") == 0) {
            size_t na = 0, nb = 0;
            qml_ks_result r;
            qn_err err;
            get(&c, "a", &na);
            get(&c, "b", &nb);
            qml_ks_2samp(get(&c, "a", NULL), na, get(&c, "b", NULL), nb,
                         (qml_ks_mode)get(&c, "mode", NULL)[0], &r, &err);
            ks_exact += r.mode == QML_KS_EXACT;
            ks_asymp += r.mode == QML_KS_ASYMP;
        }
    }
    tcase_clear(&c);
    free(line);
    fclose(f);
    print_message("%d cases against scipy, %d mismatched (KS exact %d, asymptotic %d)\n",
                  ncases, bad, ks_exact, ks_asymp);
    assert_true(ncases > 300);
    assert_true(ks_exact >= 10 && ks_asymp >= 5);  /* both p-value paths exercised */
    assert_int_equal(bad, 0);
}


/* ---- profiles and drift decisions --------------------------------------------- */

static uint64_t rs = 88172645463325252ull;
static double unif(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return ((rs >> 11) + 0.5) * 0x1p-53;
}
static double gauss(void)
{
    return sqrt(-2 * log(unif())) * cos(2 * M_PI * unif());
}

/* A frame of n rows: x, y ~ N(0,1) (+ shift_x on x), c in {a,b,c} with
 * probabilities .5/.3/.2, flag boolean with P(1) = .3, and 2% of x missing. */
static qml_frame *make_frame(size_t n, double shift_x, uint64_t seed)
{
    qn_err err;
    rs = seed;
    qml_frame *f = qml_frame_new();
    assert_int_equal(qml_frame_add_column(f, "x", QML_NUMERIC, &err), 0);
    assert_int_equal(qml_frame_add_column(f, "y", QML_NUMERIC, &err), 1);
    assert_int_equal(qml_frame_add_column(f, "c", QML_CATEGORICAL, &err), 2);
    assert_int_equal(qml_frame_add_column(f, "flag", QML_BOOLEAN, &err), 3);
    for (size_t i = 0; i < n; i++) {
        if (unif() < 0.02)
            qml_col_push_missing(qml_frame_col(f, 0));
        else
            qml_col_push_num(qml_frame_col(f, 0), gauss() + shift_x);
        qml_col_push_num(qml_frame_col(f, 1), gauss());
        double u = unif();
        qml_col_push_str(qml_frame_col(f, 2), u < 0.5 ? "a" : u < 0.8 ? "b" : "c", 1);
        qml_col_push_num(qml_frame_col(f, 3), unif() < 0.3);
        assert_int_equal(qml_frame_end_row(f), 0);
    }
    return f;
}

static const qml_drift_feature *feature(const qml_drift_report *r, const char *name)
{
    for (size_t i = 0; i < r->n_features; i++)
        if (strcmp(r->features[i].column, name) == 0)
            return &r->features[i];
    fail_msg("no feature %s", name);
    return NULL;
}

static void test_profile_build_and_round_trip(void **state)
{
    qn_err err;
    qml_frame *f = make_frame(20000, 0, 7);
    qml_profile_opts po;
    qml_profile_opts_default(&po);
    qml_profile *p, *q, *p2;
    assert_int_equal(qml_profile_build(f, &po, &p, &err), 0);
    assert_int_equal(p->nrows, 20000);
    assert_int_equal(p->ncols, 4);

    /* numeric summaries against a direct computation */
    const qml_column *x = qml_frame_col(f, 0);
    const qml_profile_column *px = &p->cols[0];
    assert_int_equal(px->count + px->missing, 20000);
    assert_int_equal(px->missing, x->n_missing);
    assert_true(px->missing > 300 && px->missing < 500);
    double s = 0, mn = INFINITY;
    for (size_t i = 0; i < x->len; i++)
        if (!x->missing[i]) {
            s += x->num[i];
            mn = fmin(mn, x->num[i]);
        }
    assert_near(px->mean, s / (double)px->count, 1e-12);
    assert_true(px->min == mn);
    assert_true(fabs(px->std - 1) < 0.03);
    assert_true(fabs(px->quantiles[3]) < 0.05);                 /* median of N(0,1) */
    assert_true(fabs(px->quantiles[6] - 2.326) < 0.1);          /* 99th percentile */
    assert_int_equal(px->nbins, (size_t)ceil(log2((double)px->count)) + 1);
    uint64_t hs = 0;
    for (size_t b = 0; b < px->nbins; b++)
        hs += px->hist[b];
    assert_int_equal(hs, px->count);
    assert_true(px->edges[0] == px->min && px->edges[px->nbins] == px->max);
    assert_int_equal(px->sample_len, 5000);

    /* categorical: by count, names kept; boolean as "0"/"1" */
    const qml_profile_column *pcat = &p->cols[2], *pb = &p->cols[3];
    assert_int_equal(pcat->ncat, 3);
    assert_string_equal(pcat->cats[0], "a");
    assert_string_equal(pcat->cats[2], "c");
    assert_int_equal(pcat->cat_counts[0] + pcat->cat_counts[1] + pcat->cat_counts[2], 20000);
    assert_int_equal(pb->ncat, 2);
    assert_string_equal(pb->cats[0], "0");

    /* The reservoir depends on the seed only. */
    assert_int_equal(qml_profile_build(f, &po, &p2, &err), 0);
    assert_memory_equal(p->cols[0].sample, p2->cols[0].sample, 5000 * sizeof(double));
    qml_profile_free(p2);
    po.seed = 43;
    assert_int_equal(qml_profile_build(f, &po, &p2, &err), 0);
    assert_true(memcmp(p->cols[0].sample, p2->cols[0].sample, 5000 * sizeof(double)) != 0);
    qml_profile_free(p2);

    /* JSON round trip: the same bytes. */
    char *j1 = qml_profile_to_json(p, &err);
    assert_non_null(j1);
    assert_int_equal(qml_profile_from_json(j1, strlen(j1), &q, &err), 0);
    char *j2 = qml_profile_to_json(q, &err);
    assert_non_null(j2);
    assert_string_equal(j1, j2);
    assert_memory_equal(q->cols[0].sample, p->cols[0].sample, 5000 * sizeof(double));
    assert_true(q->cols[0].std == p->cols[0].std);

    /* The loader refuses broken invariants, naming the column. */
    char *bad = strdup(j1), *h = strstr(bad, "\"count\":");
    h[8] = h[8] == '9' ? '8' : '9';  /* first column's count no longer adds up */
    qml_profile *r;
    assert_int_equal(qml_profile_from_json(bad, strlen(bad), &r, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "profile x:"));
    assert_int_equal(qml_profile_from_json("{\"format\":\"other\"}", 18, &r, &err),
                     QN_INVALID_ARGUMENT);
    assert_int_equal(qml_profile_from_json("[1,", 3, &r, &err), QN_INVALID_ARGUMENT);
    free(bad);
    free(j1);
    free(j2);
    qml_profile_free(q);
    qml_profile_free(p);
    qml_frame_free(f);
}

static void test_default_methods_small_and_large(void **state)
{
    qn_err err;
    qml_drift_opts o;
    qml_drift_opts_default(&o);
    assert_int_equal(qml_drift_default_method(&o, 0, 0, 1000), QML_DRIFT_KS);
    assert_int_equal(qml_drift_default_method(&o, 1, 3, 1000), QML_DRIFT_CHISQUARE);
    assert_int_equal(qml_drift_default_method(&o, 1, 2, 10), QML_DRIFT_ZTEST);
    assert_int_equal(qml_drift_default_method(&o, 0, 0, 1001), QML_DRIFT_WASSERSTEIN);
    assert_int_equal(qml_drift_default_method(&o, 1, 2, 1001), QML_DRIFT_JENSENSHANNON);

    /* Through a profile: the full reference row count decides, not the reservoir. */
    for (int big = 0; big <= 1; big++) {
        qml_frame *ref = make_frame(big ? 3000 : 800, 0, 11), *cur = make_frame(700, 0, 12);
        qml_profile_opts po;
        qml_profile_opts_default(&po);
        po.reservoir_size = 500;  /* smaller than either reference */
        qml_profile *p;
        qml_drift_report *r;
        assert_int_equal(qml_profile_build(ref, &po, &p, &err), 0);
        assert_int_equal(qml_profile_drift(p, cur, &o, &r, &err), 0);
        assert_int_equal(feature(r, "x")->method, big ? QML_DRIFT_WASSERSTEIN : QML_DRIFT_KS);
        assert_int_equal(feature(r, "c")->method,
                         big ? QML_DRIFT_JENSENSHANNON : QML_DRIFT_CHISQUARE);
        assert_int_equal(feature(r, "flag")->method,
                         big ? QML_DRIFT_JENSENSHANNON : QML_DRIFT_ZTEST);
        assert_int_equal(feature(r, "x")->n_reference, 500);  /* the reservoir */
        assert_true(isnan(feature(r, "x")->p_value) == big);
        assert_near(feature(r, "x")->threshold, big ? 0.1 : 0.05, 0);
        qml_drift_report_free(r);
        qml_profile_free(p);
        qml_frame_free(ref);
        qml_frame_free(cur);
    }
}

static void test_shifted_column_flagged(void **state)
{
    qn_err err;
    qml_drift_opts o;
    qml_drift_opts_default(&o);
    qml_profile_opts po;
    qml_profile_opts_default(&po);
    for (int big = 0; big <= 1; big++) {
        qml_frame *ref = make_frame(big ? 50000 : 1000, 0, 21);
        qml_frame *cur = make_frame(big ? 20000 : 900, 0.5, 22);
        qml_profile *p;
        qml_drift_report *r;
        assert_int_equal(qml_profile_build(ref, &po, &p, &err), 0);
        assert_int_equal(qml_profile_drift(p, cur, &o, &r, &err), 0);
        const qml_drift_feature *x = feature(r, "x"), *y = feature(r, "y");
        assert_true(x->drifted);
        assert_false(y->drifted);
        assert_false(feature(r, "c")->drifted);
        assert_false(feature(r, "flag")->drifted);
        if (big) {
            /* W1 of a 0.5 shift normed by std 1 is about 0.5 */
            assert_true(fabs(x->statistic - 0.5) < 0.05);
            assert_true(y->statistic < 0.05);
        } else {
            assert_true(x->p_value < 1e-10);
            assert_true(y->p_value > 0.05);
        }
        assert_int_equal(r->n_drifted, 1);
        assert_false(r->dataset_drift);  /* 1/4 < 0.5 */

        /* The same column as a plain array (NaN = missing) gives the same answer. */
        const qml_column *cx = qml_frame_col(cur, 0);
        double *vals = malloc(cx->len * sizeof *vals);
        for (size_t i = 0; i < cx->len; i++)
            vals[i] = cx->missing[i] ? NAN : cx->num[i];
        qml_drift_feature fv;
        assert_int_equal(qml_profile_drift_values(p, "x", vals, cx->len, &o, &fv, &err), 0);
        assert_int_equal(fv.method, x->method);
        assert_true(fv.statistic == x->statistic && fv.drifted == x->drifted);
        assert_int_equal(fv.n_current, cx->len - cx->n_missing);
        free(fv.column);
        assert_int_equal(qml_profile_drift_values(p, "c", vals, cx->len, &o, &fv, &err),
                         QN_INVALID_ARGUMENT);
        assert_int_equal(qml_profile_drift_values(p, "nope", vals, cx->len, &o, &fv, &err),
                         QN_NOT_FOUND);
        free(vals);
        qml_drift_report_free(r);

        /* Per-column overrides: method and threshold, and a looser share rule. */
        qml_drift_column_opts cols[] = {{"y", QML_DRIFT_PSI, 1e-9},
                                        {"c", QML_DRIFT_JENSENSHANNON, NAN}};
        o.columns = cols;
        o.n_columns = 2;
        o.share_threshold = 0.5;
        assert_int_equal(qml_profile_drift(p, cur, &o, &r, &err), 0);
        assert_int_equal(feature(r, "y")->method, QML_DRIFT_PSI);
        assert_true(feature(r, "y")->drifted);  /* any PSI > 1e-9 */
        assert_int_equal(feature(r, "c")->method, QML_DRIFT_JENSENSHANNON);
        assert_near(feature(r, "c")->threshold, 0.1, 0);
        assert_int_equal(r->n_drifted, 2);
        assert_true(r->dataset_drift);  /* 2/4 >= 0.5 */
        json_t *js = qml_drift_report_to_json(r);
        assert_non_null(js);
        assert_true(json_is_true(json_object_get(js, "dataset_drift")));
        assert_int_equal(json_array_size(json_object_get(js, "features")), 4);
        json_t *f0 = json_array_get(json_object_get(js, "features"), 0);
        assert_string_equal(json_string_value(json_object_get(f0, "column")), "x");
        json_decref(js);
        qml_drift_report_free(r);
        o.columns = NULL;
        o.n_columns = 0;
        qml_profile_free(p);
        qml_frame_free(ref);
        qml_frame_free(cur);
    }
}

static void test_dataset_share_rule(void **state)
{
    qml_drift_feature f[4] = {{0}};
    qml_drift_report r = {.features = f, .n_features = 4};
    f[0].drifted = 1;
    qml_drift_report_finish(&r, 0.5);
    assert_false(r.dataset_drift);
    assert_near(r.share, 0.25, 0);
    f[1].drifted = 1;
    qml_drift_report_finish(&r, 0.5);
    assert_true(r.dataset_drift);  /* share >= threshold, equality counts */
    qml_drift_report_finish(&r, 0.51);
    assert_false(r.dataset_drift);
    qml_drift_report empty = {0};
    qml_drift_report_finish(&empty, 0.0);
    assert_false(empty.dataset_drift);
}

static void test_errors(void **state)
{
    qn_err err;
    qml_ks_result k;
    double one = 1, v, pv;
    assert_int_equal(qml_ks_2samp(&one, 0, &one, 1, QML_KS_AUTO, &k, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "empty"));
    double withnan[3] = {1, NAN, 2}, nanlast[2] = {1, NAN};
    assert_int_equal(qml_ks_2samp(&one, 1, withnan, 3, QML_KS_AUTO, &k, &err),
                     QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "second sample contains NaN"));
    assert_int_equal(qml_ks_2samp_sorted(nanlast, 2, nanlast, 2, QML_KS_AUTO, &k, &err),
                     QN_INVALID_ARGUMENT);  /* and no endless loop */
    assert_int_equal(qml_wasserstein(&one, 1, &one, 0, &v, &err), QN_INVALID_ARGUMENT);
    double z[2] = {0, 0}, pq[2] = {0.5, 0.5};
    assert_int_equal(qml_jensenshannon(z, pq, 2, 0, &v, &err), QN_INVALID_ARGUMENT);
    assert_int_equal(qml_psi(z, pq, 2, &v, &err), QN_INVALID_ARGUMENT);
    assert_int_equal(qml_chisquare_drift(z, pq, 2, &v, &pv, &err), QN_INVALID_ARGUMENT);
    assert_int_equal(qml_ztest_proportions(1, 0, 1, 2, &v, &pv, &err), QN_INVALID_ARGUMENT);

    /* all-missing columns on either side, absent columns, ill-fitting methods */
    qml_frame *ref = make_frame(300, 0, 31), *cur = make_frame(300, 0, 32);
    qml_column *cx = qml_frame_col(cur, 1);
    for (size_t i = 0; i < cx->len; i++) {
        cx->missing[i] = 1;
    }
    cx->n_missing = cx->len;
    qml_profile *p;
    qml_drift_report *r;
    assert_int_equal(qml_profile_build(ref, NULL, &p, &err), 0);
    assert_int_equal(qml_profile_drift(p, cur, NULL, &r, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "column y"));
    assert_non_null(strstr(err.msg, "missing"));
    qml_frame_free(cur);
    cur = make_frame(300, 0, 32);
    qml_drift_opts o;
    qml_drift_opts_default(&o);
    qml_drift_column_opts bad1 = {"c", QML_DRIFT_KS, NAN}, bad2 = {"nope", QML_DRIFT_KS, NAN},
                          bad3 = {"x", QML_DRIFT_CHISQUARE, NAN};
    o.n_columns = 1;
    o.columns = &bad1;
    assert_int_equal(qml_profile_drift(p, cur, &o, &r, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "column c"));
    o.columns = &bad2;
    assert_int_equal(qml_profile_drift(p, cur, &o, &r, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "nope"));
    o.columns = &bad3;
    assert_int_equal(qml_profile_drift(p, cur, &o, &r, &err), QN_INVALID_ARGUMENT);
    qml_profile_free(p);

    qml_column *rx = qml_frame_col(ref, 0);
    for (size_t i = 0; i < rx->len; i++)
        rx->missing[i] = 1;
    rx->n_missing = rx->len;
    assert_int_equal(qml_profile_build(ref, NULL, &p, &err), 0);
    assert_int_equal(p->cols[0].count, 0);
    char *js = qml_profile_to_json(p, &err);  /* an all-missing column still round-trips */
    qml_profile *q;
    assert_int_equal(qml_profile_from_json(js, strlen(js), &q, &err), 0);
    free(js);
    qml_profile_free(q);
    assert_int_equal(qml_profile_drift(p, cur, NULL, &r, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "column x: every reference value is missing"));
    qml_profile_free(p);
    qml_frame_free(ref);
    qml_frame_free(cur);
}

static void test_unseen_category_is_drift(void **state)
{
    qn_err err;
    qml_frame *ref = make_frame(500, 0, 41), *cur = make_frame(500, 0, 42);
    qml_column *c = qml_frame_col(cur, 2);
    int32_t code = qml_dict_intern(c->dict, "zzz", 3);
    for (size_t i = 0; i < 100; i++)
        c->cat[i] = code;
    qml_profile *p;
    qml_drift_report *r;
    assert_int_equal(qml_profile_build(ref, NULL, &p, &err), 0);
    assert_int_equal(qml_profile_drift(p, cur, NULL, &r, &err), 0);
    const qml_drift_feature *f = feature(r, "c");
    assert_int_equal(f->method, QML_DRIFT_CHISQUARE);
    assert_true(isinf(f->statistic));  /* expected 0, observed 100: as scipy */
    assert_true(f->p_value == 0 && f->drifted);
    json_t *j = qml_drift_report_to_json(r);
    assert_true(json_is_null(json_object_get(json_array_get(json_object_get(j, "features"), 2),
                                             "statistic")));
    json_decref(j);
    qml_drift_report_free(r);
    qml_profile_free(p);
    qml_frame_free(ref);
    qml_frame_free(cur);
}

/* The fuzz seeds: valid.json must load (so fuzzing starts past the checks),
 * the broken ones must not. */
static void test_fuzz_seeds(void **state)
{
    const char *src = getenv("QUERN_SOURCE_DIR");
    const char *names[] = {"valid", "single", "bad_hist_sum", "bad_edges", "dup_category",
                           "truncated"};
    for (int i = 0; i < 6; i++) {
        char path[4096], buf[8192];
        snprintf(path, sizeof path, "%s/tests/fuzz/corpus/fuzz_profile_json/%s.json", src,
                 names[i]);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        qn_err err;
        qml_profile *p = NULL;
        int rc = qml_profile_from_json(buf, n, &p, &err);
        assert_int_equal(rc, i < 2 ? 0 : QN_INVALID_ARGUMENT);
        qml_profile_free(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_scipy),
        cmocka_unit_test(test_profile_build_and_round_trip),
        cmocka_unit_test(test_default_methods_small_and_large),
        cmocka_unit_test(test_shifted_column_flagged),
        cmocka_unit_test(test_dataset_share_rule),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_unseen_category_is_drift),
        cmocka_unit_test(test_fuzz_seeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
