/* test_fsort.c - the radix sort of doubles (ml/fsort.h) against qsort, and the
 * pre-sorted reference paths of drift (qml_ks_2samp_ref, qml_wasserstein_ref,
 * profiles that keep their reservoir sorted) against the sort-both path.
 *
 * The sort is checked on adversarial inputs: negatives, -0.0 and +0.0,
 * subnormals, +-DBL_MAX, infinities, many duplicates, NaNs of both signs and
 * several payloads, at sizes on both sides of the insertion-sort threshold
 * and with data whose keys differ in one, two or all digits (so the skipped
 * passes and both buffer parities are exercised, in place and not). The
 * oracle is qsort with IEEE totalOrder on the non-NaN values and every NaN
 * last; the sorted output must match it bit for bit, NaNs coming out as the
 * canonical NAN. The drift paths must agree exactly (==), not to a tolerance:
 * they walk the same sorted values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ml/drift.h"
#include "ml/frame.h"
#include "ml/fsort.h"
#include "ml/profile.h"

static uint64_t bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double from_bits(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* totalOrder on non-NaN (so -0.0 < +0.0), every NaN equal and last. */
static int cmp_total(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    if (isnan(a) || isnan(b))
        return isnan(a) - isnan(b);
    if (a < b)
        return -1;
    if (a > b)
        return 1;
    return (signbit(b) != 0) - (signbit(a) != 0);  /* -0.0 before +0.0 */
}

/* The comparator drift used before: < and >, -0.0 == +0.0. */
static int cmp_plain(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint64_t next_u64(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static const double specials[] = {
    0.0, -0.0, 1.0, -1.0, DBL_MIN, -DBL_MIN, 4.9406564584124654e-324 /* smallest subnormal */,
    -4.9406564584124654e-324, 2.2250738585072009e-308 /* largest subnormal */,
    -2.2250738585072009e-308, 1e-310, -1e-310, DBL_MAX, -DBL_MAX, INFINITY, -INFINITY,
    0.5, -0.5, 3.0, -3.0, 1e300, -1e300, 1.0000000000000002, 0.9999999999999999,
};

/* One adversarial value: a special, a random double of any bit pattern
 * (NaNs included), or a NaN of chosen sign and payload. */
static double adversarial(int with_nan)
{
    uint64_t r = next_u64();
    switch (r % 8) {
    case 0:
    case 1:
    case 2:
        return specials[(r >> 8) % (sizeof specials / sizeof specials[0])];
    case 3:
        if (with_nan)
            return from_bits(((r >> 8) & 1 ? 0xfff0000000000000ull : 0x7ff0000000000000ull) |
                             (((r >> 9) & 0xfffffffffffull) | 1));  /* NaN, any sign/payload */
        return (double)(int)((r >> 8) % 7) - 3;
    case 4:
        return (double)(int64_t)((r >> 8) % 100) - 50;  /* duplicates */
    default: {
        double d = from_bits(next_u64());
        return !with_nan && isnan(d) ? -0.0 : d;
    }
    }
}

/* Sorts x with fsort (out of place and in place) and checks both against the
 * qsort oracle, bit for bit. */
static void check_sort(const double *x, size_t n)
{
    size_t sz = (n ? n : 1) * sizeof(double);
    double *want = malloc(sz), *got = malloc(sz), *tmp = malloc(sz), *copy = malloc(sz),
           *inplace = malloc(sz);
    assert_non_null(want && got && tmp && copy && inplace);
    memcpy(want, x, n * sizeof *x);
    memcpy(copy, x, n * sizeof *x);
    memcpy(inplace, x, n * sizeof *x);
    qsort(want, n, sizeof *want, cmp_total);
    qml_fsort_into(x, n, got, tmp);
    assert_memory_equal(copy, x, n * sizeof *x);  /* the source is left alone */
    assert_int_equal(qml_fsort(inplace, n), 0);
    for (size_t i = 0; i < n; i++) {
        uint64_t w = isnan(want[i]) ? bits(NAN) : bits(want[i]);
        if (bits(got[i]) != w || bits(inplace[i]) != w)
            fail_msg("n %zu, index %zu: want %a (%016llx), got %a / in place %a", n, i, want[i],
                     (unsigned long long)w, got[i], inplace[i]);
    }
    /* and, without NaNs, equal (==) to what the old qsort comparator gave */
    int has_nan = 0;
    for (size_t i = 0; i < n; i++)
        has_nan |= isnan(x[i]);
    if (!has_nan) {
        qsort(copy, n, sizeof *copy, cmp_plain);
        for (size_t i = 0; i < n; i++)
            assert_true(copy[i] == got[i]);
    }
    free(want);
    free(got);
    free(tmp);
    free(copy);
    free(inplace);
}

static void test_fsort_matches_qsort(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 2, 3, 17, 63, 64, 65, 100, 1000, 4097, 100000};
    double *x = malloc(100000 * sizeof *x);
    assert_non_null(x);
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        for (int with_nan = 0; with_nan <= 1; with_nan++) {
            for (size_t i = 0; i < n; i++)
                x[i] = adversarial(with_nan);
            check_sort(x, n);
        }
        /* keys differing in the low digit only (one pass: odd, in place
         * encodes first), in two digits, and all equal (no pass) */
        for (size_t i = 0; i < n; i++)
            x[i] = from_bits(bits(1.0) + (next_u64() & 0x7ff));
        check_sort(x, n);
        for (size_t i = 0; i < n; i++)
            x[i] = -from_bits(bits(1.0) + (next_u64() & 0x3fffff));
        check_sort(x, n);
        for (size_t i = 0; i < n; i++)
            x[i] = -0.0;
        check_sort(x, n);
        for (size_t i = 0; i < n; i++)
            x[i] = i % 2 ? -0.0 : 0.0;
        check_sort(x, n);
        for (size_t i = 0; i < n; i++)
            x[i] = from_bits(0x7ff8000000000000ull | (i & 0xff));  /* NaNs only */
        check_sort(x, n);
        for (size_t i = 0; i < n; i++)
            x[i] = (double)(n - i);  /* descending */
        check_sort(x, n);
    }
    free(x);
}

/* Reference samples: normal-ish with ties, and a discretized one. */
static void fill_sample(double *x, size_t n, double shift, int ties)
{
    for (size_t i = 0; i < n; i++) {
        double u = ((double)(next_u64() >> 11) + 0.5) / 9007199254740992.0;
        double v = ((double)(next_u64() >> 11) + 0.5) / 9007199254740992.0;
        double z = sqrt(-2 * log(u)) * cos(6.283185307179586 * v) + shift;
        x[i] = ties ? floor(z * 4) / 4 : z;
        if (i % 97 == 0)
            x[i] = -0.0;  /* signed zeros on both sides of the walk */
        if (i % 89 == 0)
            x[i] = 0.0;
    }
}

static void test_presorted_reference_identical(void **state)
{
    (void)state;
    static const size_t sizes[][2] = {{50, 70}, {300, 300}, {1000, 800}, {20000, 15000}};
    static const qml_ks_mode modes[] = {QML_KS_AUTO, QML_KS_EXACT, QML_KS_ASYMP};
    qn_err err;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t nr = sizes[si][0], nc = sizes[si][1];
        double *ref = malloc(nr * sizeof *ref), *cur = malloc(nc * sizeof *cur),
               *sref = malloc(nr * sizeof *sref), *cur0 = malloc(nc * sizeof *cur0);
        assert_non_null(ref && cur && sref && cur0);
        for (int ties = 0; ties <= 1; ties++) {
            fill_sample(ref, nr, 0, ties);
            fill_sample(cur, nc, 0.1, ties);
            memcpy(sref, ref, nr * sizeof *ref);
            memcpy(cur0, cur, nc * sizeof *cur);
            assert_int_equal(qml_fsort(sref, nr), 0);
            for (size_t mi = 0; mi < sizeof modes / sizeof modes[0]; mi++) {
                qml_ks_result a, b;
                assert_int_equal(qml_ks_2samp(ref, nr, cur, nc, modes[mi], &a, &err), 0);
                assert_int_equal(qml_ks_2samp_ref(sref, nr, cur, nc, modes[mi], &b, &err), 0);
                assert_true(a.statistic == b.statistic);
                assert_true(a.p_value == b.p_value);
                assert_int_equal(a.mode, b.mode);
                assert_true(a.statistic > 0);
            }
            double w1, w2;
            assert_int_equal(qml_wasserstein(ref, nr, cur, nc, &w1, &err), 0);
            assert_int_equal(qml_wasserstein_ref(sref, nr, cur, nc, &w2, &err), 0);
            assert_true(w1 == w2 && w1 > 0);
            assert_memory_equal(cur, cur0, nc * sizeof *cur);  /* cur is not modified */
        }
        /* a NaN in the current window is refused by the _ref path too */
        cur[nc / 2] = NAN;
        qml_ks_result r;
        assert_int_equal(qml_ks_2samp_ref(sref, nr, cur, nc, QML_KS_AUTO, &r, &err),
                         QN_INVALID_ARGUMENT);
        assert_int_equal(qml_ks_2samp_ref(sref, 0, cur, nc, QML_KS_AUTO, &r, &err),
                         QN_INVALID_ARGUMENT);
        free(ref);
        free(cur);
        free(sref);
        free(cur0);
    }
}

/* A profile keeps its reservoir sorted (built and loaded), and its KS and
 * Wasserstein features equal the sort-both statistics on the reservoir. */
static void test_profile_sorted_reservoir(void **state)
{
    (void)state;
    qn_err err;
    for (int big = 0; big <= 1; big++) {
        size_t nr = big ? 30000 : 900, nc = big ? 12000 : 700;
        qml_frame *f = qml_frame_new();
        assert_non_null(f);
        assert_int_equal(qml_frame_add_column(f, "x", QML_NUMERIC, &err), 0);
        double *v = malloc(nr * sizeof *v), *cur = malloc(nc * sizeof *cur);
        assert_non_null(v && cur);
        fill_sample(v, nr, 0, big);
        for (size_t i = 0; i < nr; i++) {
            assert_int_equal(qml_col_push_num(qml_frame_col(f, 0), v[i]), 0);
            assert_int_equal(qml_frame_end_row(f), 0);
        }
        fill_sample(cur, nc, 0.05, big);
        cur[3] = NAN;  /* missing, skipped by both */
        qml_profile_opts po;
        qml_profile_opts_default(&po);
        qml_profile *p, *q;
        assert_int_equal(qml_profile_build(f, &po, &p, &err), 0);
        char *json = qml_profile_to_json(p, &err);
        assert_non_null(json);
        assert_int_equal(qml_profile_from_json(json, strlen(json), &q, &err), 0);
        for (int k = 0; k < 2; k++) {
            const qml_profile_column *pc = &(k ? q : p)->cols[0];
            size_t n = pc->sample_len;
            double *want = malloc(n * sizeof *want);
            assert_non_null(want);
            memcpy(want, pc->sample, n * sizeof *want);
            qsort(want, n, sizeof *want, cmp_total);
            assert_memory_equal(want, pc->sample_sorted, n * sizeof *want);
            free(want);

            /* cur without its missing value, for the direct computation */
            double *dense = malloc(nc * sizeof *dense);
            assert_non_null(dense);
            size_t nd = 0;
            for (size_t i = 0; i < nc; i++)
                if (!isnan(cur[i]))
                    dense[nd++] = cur[i];
            qml_drift_opts o;
            qml_drift_opts_default(&o);
            qml_drift_column_opts co[1] = {{"x", QML_DRIFT_KS, NAN}};
            o.columns = co;
            o.n_columns = 1;
            qml_drift_feature ft;
            qml_ks_result ks;
            assert_int_equal(qml_profile_drift_values(k ? q : p, "x", cur, nc, &o, &ft, &err), 0);
            assert_int_equal(qml_ks_2samp(pc->sample, n, dense, nd, o.ks_mode, &ks, &err), 0);
            assert_true(ft.statistic == ks.statistic && ft.p_value == ks.p_value);
            assert_int_equal(ft.n_current, nd);
            free(ft.column);
            co[0].method = QML_DRIFT_WASSERSTEIN;
            double w;
            assert_int_equal(qml_profile_drift_values(k ? q : p, "x", cur, nc, &o, &ft, &err), 0);
            assert_int_equal(qml_wasserstein(pc->sample, n, dense, nd, &w, &err), 0);
            assert_true(ft.statistic == qml_wasserstein_normed(w, pc->std));
            free(ft.column);
            free(dense);
        }
        free(json);
        qml_profile_free(p);
        qml_profile_free(q);
        qml_frame_free(f);
        free(v);
        free(cur);
    }
}

/* The histogram's guessed bin is always the binary search's, on uniform and
 * on uneven edges, for values on edges, between, outside, infinite, NaN. */
static void test_histogram_guess_matches_search(void **state)
{
    (void)state;
    double edges[3][9] = {{0}, {-1, -0.5, 0, 0.001, 0.002, 5, 6, 100, 1e6}, {0}};
    size_t nb[3] = {8, 8, 1};
    for (int b = 0; b <= 8; b++)
        edges[0][b] = b == 8 ? 3.7 : -1.3 + (3.7 - -1.3) * b / 8.0;
    edges[2][0] = 2;
    edges[2][1] = 3;
    double x[4000];
    for (int e = 0; e < 3; e++) {
        for (size_t i = 0; i < 4000; i++) {
            uint64_t r = next_u64();
            switch (r % 4) {
            case 0: x[i] = edges[e][(r >> 8) % (nb[e] + 1)]; break;  /* exactly on an edge */
            case 1: x[i] = nextafter(edges[e][(r >> 8) % (nb[e] + 1)], -INFINITY); break;
            case 2: x[i] = specials[(r >> 8) % (sizeof specials / sizeof specials[0])]; break;
            default: x[i] = edges[e][0] - 1 + (edges[e][nb[e]] - edges[e][0] + 2) *
                                              (double)(r >> 11) / 9007199254740992.0;
            }
            if (i % 501 == 0)
                x[i] = NAN;
        }
        double got[8], want[8] = {0};
        qml_histogram_clamped(x, 4000, edges[e], nb[e], got);
        for (size_t i = 0; i < 4000; i++) {
            if (isnan(x[i]))
                continue;
            size_t k = 0;  /* last bin whose left edge is <= x, bins clamped at both ends */
            for (size_t b = 1; b < nb[e]; b++)
                if (edges[e][b] <= x[i])
                    k = b;
            want[k] += 1;
        }
        for (size_t b = 0; b < nb[e]; b++)
            assert_true(got[b] == want[b]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsort_matches_qsort),
        cmocka_unit_test(test_presorted_reference_identical),
        cmocka_unit_test(test_profile_sorted_reservoir),
        cmocka_unit_test(test_histogram_guess_matches_search),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
