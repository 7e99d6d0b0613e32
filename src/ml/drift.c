/*
 * drift.c - drift statistics and the per-column drift decision (drift.h).
 *
 * The p-values follow the same algorithm choices as scipy 1.10 so that a
 * drift verdict computed here and one computed by a data scientist in a
 * notebook agree to 1e-6 (tests/unit/ml/drift_reference.py checks it):
 *  - KS exact, equal sizes: the closed alternating sum for P(D_{n,n} >= h/n)
 *    (Gnedenko-Korolyuk), evaluated in nested (Horner) form;
 *  - KS exact, unequal sizes: the lattice-path count of Hodges, as a walk over
 *    the grid (0,0)..(m,n) carrying the probability that a uniformly random
 *    path has already left the band |x/m - y/n| < D;
 *  - KS asymptotic: the exact distribution of the one-sample statistic D_N
 *    with N = round(mn/(m+n)), evaluated with Simard and L'Ecuyer's choice of
 *    method (Ruben-Gambino ends, Durbin's matrix as Marsaglia-Tsang-Wang,
 *    twice the Birnbaum-Tingey one-sided tail, Pelz-Good). Where scipy uses
 *    Pomeranz's recursion (N <= 140, 0.754693 < N d^2 <= 4) we use Durbin's
 *    matrix: both are exact, so the results agree to rounding.
 */
#include "ml/drift.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ml/fsort.h"

#define KS_MAX_AUTO_N 10000

/* Sorting dominates KS and Wasserstein on large windows: copies are sorted by
 * the radix sort of fsort.h. A reference fixed for a model version's life is
 * sorted once by the caller (the profile does it when built or loaded) and
 * handed to the _ref functions, which sort only the current window.
 * The copy and the sort's scratch are one block of 2n (the caller frees the
 * returned pointer): with glibc, two separate blocks of n above the mmap
 * threshold are trimmed back to the kernel on free, and a million-row window
 * then paid more in page faults on each call than the sort itself. */
static double *sorted_copy(const double *x, size_t n)
{
    double *c = malloc((n ? 2 * n : 1) * sizeof *c);
    if (c)
        qml_fsort_into(x, n, c, c + n);
    return c;
}

/* Both samples sorted, for the sort-both functions, in one block for the same
 * reason: a then b then the scratch both sorts share. Free the return value;
 * b's copy starts at ret + na. */
static double *sorted_pair(const double *a, size_t na, const double *b, size_t nb)
{
    double *c = malloc((na + nb + (na > nb ? na : nb)) * sizeof *c);
    if (c) {
        qml_fsort_into(a, na, c, c + na + nb);
        qml_fsort_into(b, nb, c + na, c + na + nb);
    }
    return c;
}

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static int64_t ceil_div(int64_t a, int64_t b)
{
    return -floor_div(-a, b);
}

static double clip01(double p)
{
    return p < 0 ? 0 : p > 1 ? 1 : p;
}

/* ---- one-sided tail: Birnbaum-Tingey ----------------------------------------- */

double qml_smirnov_sf(int64_t n, double d)
{
    if (n <= 0 || isnan(d))
        return NAN;
    if (d <= 0)
        return 1.0;
    if (d >= 1)
        return 0.0;
    double dn = (double)n;
    if (n > 1000000) {
        /* Beyond a million terms scipy (cephes smirnov) switches to the
         * approximation exp(-(6nd+1)^2 / 18n); follow it so that large KS
         * windows give the same p-values (it differs from the exact sum by
         * about 3e-4 relative at p ~ 1e-22). */
        double t = 6.0 * dn * d + 1.0;
        return clip01(exp(-t * t / 18.0 / dn));
    }
    /* P(D+ >= d) = d * sum_{j=0}^{floor(n(1-d))} C(n,j) (1-d-j/n)^(n-j) (d+j/n)^(j-1).
     * Every term is positive, so summing in log space loses nothing to
     * cancellation; terms far below the largest are skipped. */
    int64_t jmax = (int64_t)floor(dn * (1.0 - d) + 1e-12);
    if (jmax > n)
        jmax = n;
    double lc = 0.0;  /* log C(n, j), updated incrementally */
    double *lt = NULL;
    double stack[256];
    size_t nterms = (size_t)jmax + 1;
    lt = nterms <= 256 ? stack : malloc(nterms * sizeof *lt);
    if (!lt)
        return NAN;
    double best = -INFINITY;
    for (int64_t j = 0; j <= jmax; j++) {
        if (j > 0)
            lc += log((double)(n - j + 1)) - log((double)j);
        double a = (double)(n - j) / dn - d;  /* 1 - d - j/n */
        double b = d + (double)j / dn;
        double t;
        if (a <= 0)
            t = (n - j == 0) ? lc + (double)(j - 1) * log(b) : -INFINITY;
        else
            t = lc + (double)(n - j) * log(a) + (double)(j - 1) * log(b);
        lt[j] = t;
        if (t > best)
            best = t;
    }
    double s = 0.0;
    for (size_t j = 0; j < nterms; j++)
        if (lt[j] > best - 745)
            s += exp(lt[j] - best);
    if (lt != stack)
        free(lt);
    return clip01(d * s * exp(best));
}

/* ---- two-sided one-sample Kolmogorov distribution ---------------------------- */

/* C = A * B for m x m row-major matrices. */
static void matmul(const double *A, const double *B, double *C, int m)
{
    for (int i = 0; i < m * m; i++)
        C[i] = 0.0;
    for (int i = 0; i < m; i++)
        for (int k = 0; k < m; k++) {
            double a = A[i * m + k];
            if (a == 0.0)
                continue;
            const double *b = B + k * m;
            double *c = C + i * m;
            for (int j = 0; j < m; j++)
                c[j] += a * b[j];
        }
}

/* P(D_n <= d) by Durbin's matrix, in Marsaglia, Tsang and Wang's form:
 * d = (k - h)/n, H the (2k-1)^2 matrix of the paper, and the answer
 * n!/n^n (H^n)_{kk}. Powers are rescaled by 2^-128 steps to stay finite. */
static double kolmogorov_cdf_durbin(int64_t n, double d)
{
    double nd = (double)n * d;
    if (d >= 1.0)
        return 1.0;
    if (nd <= 0.5)
        return 0.0;
    int k = (int)ceil(nd);
    double h = k - nd;
    int m = 2 * k - 1;
    if (m > 510)  /* callers stay far below: N d^2 <= 4 or N d^1.5 <= 1.4 */
        return NAN;
    size_t mm = (size_t)m * (size_t)m;
    double *H = calloc(4 * mm, sizeof *H);
    if (!H)
        return NAN;
    double *P = H + mm, *T = H + 2 * mm, *S = H + 3 * mm;
    /* H[i][j] = 1/(i-j+1)! on and below the first superdiagonal. */
    double fact[512 + 2];
    fact[0] = 1.0;
    for (int i = 1; i <= m + 1 && i < 512 + 2; i++)
        fact[i] = fact[i - 1] * i;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < m; j++)
            if (i - j + 1 >= 0)
                H[i * m + j] = 1.0 / fact[i - j + 1];
    for (int i = 0; i < m; i++) {
        H[i * m] -= pow(h, i + 1) / fact[i + 1];
        H[(m - 1) * m + i] -= pow(h, m - i) / fact[m - i];
    }
    if (2 * h - 1 > 0)
        H[(m - 1) * m] += pow(2 * h - 1, m) / fact[m];

    for (int i = 0; i < m; i++)
        P[i * m + i] = 1.0;
    int64_t pexp = 0, hexp = 0, nn = n;
    while (nn > 0) {
        if (nn & 1) {
            matmul(P, H, T, m);
            memcpy(P, T, mm * sizeof *P);
            pexp += hexp;
            if (fabs(P[(k - 1) * m + (k - 1)]) > 0x1p128) {
                for (size_t i = 0; i < mm; i++)
                    P[i] *= 0x1p-128;
                pexp += 128;
            }
        }
        nn >>= 1;
        if (!nn)
            break;
        matmul(H, H, S, m);
        memcpy(H, S, mm * sizeof *H);
        hexp *= 2;
        if (fabs(H[(k - 1) * m + (k - 1)]) > 0x1p128) {
            for (size_t i = 0; i < mm; i++)
                H[i] *= 0x1p-128;
            hexp += 128;
        }
    }
    double p = P[(k - 1) * m + (k - 1)];
    free(H);
    for (int64_t i = 1; i <= n; i++) {
        p = p * (double)i / (double)n;
        if (fabs(p) < 0x1p-128) {
            p *= 0x1p128;
            pexp -= 128;
        }
    }
    return ldexp(p, (int)pexp);
}

/* Pelz and Good's expansion of P(D_n <= d) for small d (Simard-L'Ecuyer's
 * large-n branch): P ~ K0 + K1/sqrt(n) + K2/n + K3/n^1.5 with z = d sqrt(n),
 * each K_i written with theta-function sums that converge fast for small z. */
static double kolmogorov_cdf_pelz_good(int64_t n, double d)
{
    const double pi2 = M_PI * M_PI, pi4 = pi2 * pi2, pi6 = pi4 * pi2;
    const double sqrt2pi = sqrt(2 * M_PI);
    if (d <= 0)
        return 0.0;
    if (d >= 1)
        return 1.0;
    double z = sqrt((double)n) * d;
    double z2 = z * z, z3 = z2 * z, z4 = z2 * z2, z6 = z4 * z2, z8 = z4 * z4;
    if (-pi2 / 8 / z2 < -708)
        return 0.0;
    int maxk = (int)ceil(16 * z / M_PI);
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int k = maxk; k >= 1; k--) {
        double m = 2.0 * k - 1, m2 = m * m, m4 = m2 * m2, m6 = m4 * m2;
        double e = exp(-m2 * pi2 / (8 * z2));
        s0 += e;
        s1 += (-z2 + pi2 / 4 * m2) * e;
        s2 += (6 * z6 + 2 * z4 + (2 * z4 - 5 * z2) * pi2 / 4 * m2 + pi4 * (1 - 2 * z2) / 16 * m4) * e;
        s3 += (-30 * z6 - 90 * z8 + pi2 * (135 * z4 - 96 * z6) / 4 * m2
               + pi4 * (-60 * z2 + 212 * z4) / 16 * m4 + pi6 * (5 - 30 * z2) / 64 * m6) * e;
    }
    double K0 = sqrt2pi * s0 / z;
    double K1 = sqrt2pi * s1 / (6 * z4);
    double K2 = sqrt2pi * s2 / (72 * z4 * z3);
    double K3 = sqrt2pi * s3 / (6480 * z8 * z2);
    double e2 = 0, e3 = 0;
    for (int k = maxk; k >= 1; k--) {
        double kk = (double)k * k;
        double e = exp(-kk * pi2 / (2 * z2));
        e2 += kk * e;
        e3 += (3 * z2 - pi2 * kk) * kk * e;
    }
    K2 += e2 * pi2 * sqrt2pi / (-36 * z3);
    K3 += e3 * pi2 * sqrt2pi / (216 * z6);
    double sn = sqrt((double)n);
    return K0 + K1 / sn + K2 / (double)n + K3 / ((double)n * sn);
}

double qml_kolmogorov_sf(int64_t n, double x)
{
    if (n <= 0 || isnan(x))
        return NAN;
    if (x >= 1.0)
        return 0.0;
    if (x <= 0.0)
        return 1.0;
    double dn = (double)n, t = dn * x;
    if (t <= 1.0) {
        /* Ruben-Gambino: P(D_n <= x) = n!/n^n (2t-1)^n for 1/2n <= x <= 1/n. */
        if (t <= 0.5)
            return 1.0;
        double lp = lgamma(dn + 1) - dn * log(dn) + dn * log(2 * t - 1);
        return clip01(1.0 - exp(lp));
    }
    if (t >= dn - 1)
        return clip01(2 * pow(1.0 - x, dn));
    if (x >= 0.5)  /* the two one-sided events cannot both happen */
        return clip01(2 * qml_smirnov_sf(n, x));
    double nx2 = t * x;
    if (n <= 140) {
        if (nx2 <= 4)
            return clip01(1.0 - kolmogorov_cdf_durbin(n, x));
        return clip01(2 * qml_smirnov_sf(n, x));
    }
    if (nx2 >= 370.0)
        return 0.0;
    if (nx2 >= 2.2)
        return clip01(2 * qml_smirnov_sf(n, x));
    double cdf;
    if (n <= 100000 && dn * pow(x, 1.5) <= 1.4)
        cdf = kolmogorov_cdf_durbin(n, x);
    else
        cdf = kolmogorov_cdf_pelz_good(n, x);
    return clip01(1.0 - cdf);
}

/* ---- two-sample exact p-values ---------------------------------------------- */

/* P(D_{n,n} >= h/n) = 2 sum_{k>=1} (-1)^(k+1) C(2n, n-kh) / C(2n, n), written as
 * 2 A0 (1 - A1 (1 - A2 (...))) with A_k = C(2n, n-(k+1)h) / C(2n, n-kh) so that
 * no large binomial is formed and the alternating sum does not cancel. */
static double ks_exact_equal(int64_t n, int64_t h)
{
    double P = 0.0;
    for (int64_t k = n / h; k >= 0; k--) {
        double a = 1.0;
        for (int64_t j = 0; j < h; j++)
            a = (double)(n - k * h - j) * a / (double)(n + k * h + j + 1);
        P = a * (1.0 - P);
    }
    return 2 * P;
}

/* Probability that a uniformly random monotone lattice path from (0,0) to
 * (m,n) touches or leaves the band |ng x - mg y| < h (ng = n/g, mg = m/g),
 * i.e. P(D_{m,n} >= h/lcm). A(x,y) is that probability for the path's prefix
 * ending at (x,y); it is 1 outside the band and, inside, the average of its
 * two predecessors weighted by the chance the last step came from each:
 * A(x,y) = (x A(x-1,y) + y A(x,y-1)) / (x+y). Only the band of one column is
 * live; cells left behind are reset to 1. */
static double ks_exact_unequal(int64_t m, int64_t n, int64_t g, int64_t h, int *ok)
{
    if (m < n) {
        int64_t t = m;
        m = n;
        n = t;
    }
    int64_t mg = m / g, ng = n / g;
    double *A = malloc((size_t)(n + 1) * sizeof *A);
    if (!A) {
        *ok = 0;
        return NAN;
    }
    *ok = 1;
    for (int64_t y = 0; y <= n; y++)
        A[y] = 1.0;
    /* x = 0: inside while mg*y < h. */
    int64_t lo = 0, hi = ceil_div(h, mg) - 1;
    if (hi > n)
        hi = n;
    for (int64_t y = lo; y <= hi; y++)
        A[y] = 0.0;
    double res;
    for (int64_t x = 1; x <= m; x++) {
        int64_t nlo = floor_div(ng * x - h, mg) + 1, nhi = ceil_div(ng * x + h, mg) - 1;
        if (nlo < 0)
            nlo = 0;
        if (nhi > n)
            nhi = n;
        if (nhi < nlo) {
            res = 1.0;
            goto out;
        }
        for (int64_t y = lo; y < nlo && y <= hi; y++)
            A[y] = 1.0;
        double below = nlo > 0 ? 1.0 : 0.0;
        for (int64_t y = nlo; y <= nhi; y++) {
            below = ((double)x * A[y] + (double)y * below) / (double)(x + y);
            A[y] = below;
        }
        lo = nlo;
        hi = nhi;
    }
    res = A[n];
out:
    free(A);
    return res;
}

int qml_ks_2samp_sorted(const double *a, size_t na, const double *b, size_t nb,
                        qml_ks_mode mode, qml_ks_result *out, qn_err *err)
{
    if (na == 0 || nb == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "ks_2samp: %s sample is empty", na == 0 ? "first" : "second");
    int64_t n1 = (int64_t)na, n2 = (int64_t)nb;
    /* Walk both sorted samples over the distinct values of their union: after
     * passing every copy of a value v, F1(v) = i/n1 and F2(v) = j/n2 (ties are
     * consumed together, like searchsorted(side='right')). */
    size_t i = 0, j = 0;
    int64_t best_pos = 0, best_neg = 0;
    size_t pi = 0, pj = 0, ni = 0, nj = 0;
    while (i < na && j < nb) {
        double v = a[i] < b[j] ? a[i] : b[j];
        size_t i0 = i, j0 = j;
        while (i < na && a[i] == v)
            i++;
        while (j < nb && b[j] == v)
            j++;
        if (i == i0 && j == j0)  /* only NaN compares unequal to itself */
            return qn_err_set(err, QN_INVALID_ARGUMENT, "ks_2samp: a sample contains NaN");
        int64_t diff = (int64_t)i * n2 - (int64_t)j * n1;
        if (diff > best_pos) {
            best_pos = diff;
            pi = i;
            pj = j;
        }
        if (-diff > best_neg) {
            best_neg = -diff;
            ni = i;
            nj = j;
        }
    }
    /* scipy keeps the positive side on a tie. */
    int64_t best = best_pos >= best_neg ? best_pos : best_neg;
    double d = best_pos >= best_neg ? (double)pi / n1 - (double)pj / n2
                                    : (double)nj / n2 - (double)ni / n1;
    if (d < 0)
        d = 0;
    int64_t g = gcd64(n1, n2);
    if (mode == QML_KS_AUTO)
        mode = (n1 > KS_MAX_AUTO_N || n2 > KS_MAX_AUTO_N) ? QML_KS_ASYMP : QML_KS_EXACT;
    else if (mode == QML_KS_EXACT && n1 / g >= INT32_MAX / (n2 / g))
        mode = QML_KS_ASYMP;
    double p = NAN;
    if (mode == QML_KS_EXACT) {
        int64_t lcm = (n1 / g) * n2;
        int64_t h = best / g;  /* D * lcm, an integer */
        d = (double)h / (double)lcm;
        if (h == 0) {
            p = 1.0;
        } else if (n1 == n2) {
            p = ks_exact_equal(n1, h);
        } else {
            int ok;
            p = ks_exact_unequal(n1, n2, g, h, &ok);
            if (!ok)
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "ks_2samp: out of memory");
        }
        if (!(p >= 0 && p <= 1))  /* rounding broke the sum: scipy falls back too */
            mode = QML_KS_ASYMP;
    }
    if (mode == QML_KS_ASYMP) {
        double m = (double)(n1 > n2 ? n1 : n2), n = (double)(n1 > n2 ? n2 : n1);
        double en = m * n / (m + n);
        p = qml_kolmogorov_sf((int64_t)nearbyint(en), d);  /* half to even, as np.round */
    }
    out->statistic = d;
    out->p_value = clip01(p);
    out->mode = mode;
    return 0;
}

int qml_ks_2samp(const double *a, size_t na, const double *b, size_t nb, qml_ks_mode mode,
                 qml_ks_result *out, qn_err *err)
{
    if (na == 0 || nb == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "ks_2samp: %s sample is empty", na == 0 ? "first" : "second");
    for (size_t i = 0; i < na || i < nb; i++)
        if ((i < na && isnan(a[i])) || (i < nb && isnan(b[i])))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "ks_2samp: %s sample contains NaN",
                              i < na && isnan(a[i]) ? "first" : "second");
    double *sa = sorted_pair(a, na, b, nb);
    if (!sa)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "ks_2samp: out of memory");
    int rc = qml_ks_2samp_sorted(sa, na, sa + na, nb, mode, out, err);
    free(sa);
    return rc;
}

int qml_ks_2samp_ref(const double *ref_sorted, size_t nref, const double *cur, size_t ncur,
                     qml_ks_mode mode, qml_ks_result *out, qn_err *err)
{
    if (nref == 0 || ncur == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "ks_2samp: %s sample is empty", nref == 0 ? "first" : "second");
    double *sc = sorted_copy(cur, ncur);
    if (!sc)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "ks_2samp: out of memory");
    int rc;
    if (isnan(sc[ncur - 1]))  /* fsort puts every NaN last: no separate scan */
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "ks_2samp: second sample contains NaN");
    else
        rc = qml_ks_2samp_sorted(ref_sorted, nref, sc, ncur, mode, out, err);
    free(sc);
    return rc;
}

/* ---- chi-square ------------------------------------------------------------- */

double qml_gamma_q(double a, double x)
{
    if (!(a > 0) || !(x >= 0))
        return NAN;
    if (x == 0)
        return 1.0;
    if (isinf(x))
        return 0.0;
    double lpre = -x + a * log(x) - lgamma(a);
    if (x < a + 1) {
        /* P(a,x) = x^a e^-x / Gamma(a+1) * sum x^k / ((a+1)...(a+k)); Q = 1 - P
         * is not small here, so the subtraction is harmless. */
        double term = 1.0 / a, sum = term;
        for (int k = 1; k < 100000; k++) {
            term *= x / (a + k);
            sum += term;
            if (fabs(term) < fabs(sum) * 1e-17)
                break;
        }
        return clip01(1.0 - sum * exp(lpre));
    }
    /* Q(a,x) by its continued fraction (modified Lentz). */
    const double tiny = 1e-300;
    double bb = x + 1 - a, c = 1 / tiny, dd = 1 / bb, f = dd;
    for (int i = 1; i < 100000; i++) {
        double an = -i * (i - a);
        bb += 2;
        dd = an * dd + bb;
        if (fabs(dd) < tiny)
            dd = tiny;
        c = bb + an / c;
        if (fabs(c) < tiny)
            c = tiny;
        dd = 1 / dd;
        double delta = dd * c;
        f *= delta;
        if (fabs(delta - 1) < 1e-16)
            break;
    }
    return clip01(exp(lpre) * f);
}

double qml_chi2_sf(double x, double dof)
{
    if (!(dof > 0) || isnan(x))
        return NAN;
    if (x <= 0)
        return 1.0;
    return qml_gamma_q(dof / 2, x / 2);
}

int qml_chisquare(const double *obs, const double *exp, size_t k, double *stat, double *p,
                  qn_err *err)
{
    if (k == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "chisquare: no categories");
    double s = 0;
    for (size_t i = 0; i < k; i++) {
        if (!(obs[i] >= 0) || !(exp[i] >= 0))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "chisquare: count %zu is negative or NaN", i);
        if (exp[i] == 0) {
            if (obs[i] > 0)
                s = INFINITY;
            continue;
        }
        double dlt = obs[i] - exp[i];
        s += dlt * dlt / exp[i];
    }
    *stat = s;
    *p = k < 2 ? NAN : isinf(s) ? 0.0 : qml_chi2_sf(s, (double)(k - 1));
    return 0;
}

int qml_chisquare_drift(const double *ref_counts, const double *cur_counts, size_t k,
                        double *stat, double *p, qn_err *err)
{
    if (k == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "chisquare: no categories");
    double nr = 0, nc = 0;
    for (size_t i = 0; i < k; i++) {
        nr += ref_counts[i];
        nc += cur_counts[i];
    }
    if (!(nr > 0) || !(nc > 0))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "chisquare: the %s sample is empty",
                          nr > 0 ? "current" : "reference");
    double *e = malloc(k * sizeof *e);
    if (!e)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "chisquare: out of memory");
    double scale = nc / nr;
    for (size_t i = 0; i < k; i++)
        e[i] = ref_counts[i] * scale;
    int rc = qml_chisquare(cur_counts, e, k, stat, p, err);
    free(e);
    return rc;
}

int qml_ztest_proportions(double x1, double n1, double x2, double n2, double *z, double *p,
                          qn_err *err)
{
    if (!(n1 > 0) || !(n2 > 0))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "ztest: the %s sample is empty",
                          n1 > 0 ? "current" : "reference");
    if (!(x1 >= 0 && x1 <= n1) || !(x2 >= 0 && x2 <= n2))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "ztest: successes exceed the sample size");
    double p1 = x1 / n1, p2 = x2 / n2, P = (x1 + x2) / (n1 + n2);
    double var = P * (1 - P) * (1 / n1 + 1 / n2);
    if (!(var > 0)) {
        *z = 0;
        *p = 1;
        return 0;
    }
    *z = (p1 - p2) / sqrt(var);
    *p = erfc(fabs(*z) / M_SQRT2);
    return 0;
}

/* ---- distances -------------------------------------------------------------- */

int qml_wasserstein_sorted(const double *a, size_t na, const double *b, size_t nb, double *out,
                           qn_err *err)
{
    if (na == 0 || nb == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "wasserstein: %s sample is empty",
                          na == 0 ? "first" : "second");
    /* Integral of |F_a - F_b| over the merged support: between consecutive
     * values both CDFs are flat at (count <= left value) / size. */
    size_t i = 0, j = 0;
    double prev = 0, total = 0;
    double ra = 1.0 / (double)na, rb = 1.0 / (double)nb;
    while (i < na || j < nb) {
        double v;
        int from_a = j >= nb || (i < na && a[i] <= b[j]);
        v = from_a ? a[i] : b[j];
        if (i + j > 0)
            total += fabs((double)i * ra - (double)j * rb) * (v - prev);
        if (from_a)
            i++;
        else
            j++;
        prev = v;
    }
    *out = total;
    return 0;
}

int qml_wasserstein(const double *a, size_t na, const double *b, size_t nb, double *out,
                    qn_err *err)
{
    if (na == 0 || nb == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "wasserstein: %s sample is empty",
                          na == 0 ? "first" : "second");
    double *sa = sorted_pair(a, na, b, nb);
    if (!sa)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "wasserstein: out of memory");
    int rc = qml_wasserstein_sorted(sa, na, sa + na, nb, out, err);
    free(sa);
    return rc;
}

int qml_wasserstein_ref(const double *ref_sorted, size_t nref, const double *cur, size_t ncur,
                        double *out, qn_err *err)
{
    if (nref == 0 || ncur == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "wasserstein: %s sample is empty",
                          nref == 0 ? "first" : "second");
    double *sc = sorted_copy(cur, ncur);
    if (!sc)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "wasserstein: out of memory");
    int rc = qml_wasserstein_sorted(ref_sorted, nref, sc, ncur, out, err);
    free(sc);
    return rc;
}

double qml_wasserstein_normed(double distance, double ref_std)
{
    return distance / (ref_std > 0.001 ? ref_std : 0.001);
}

static int check_weights(const char *what, const double *p, size_t k, double *sum, qn_err *err)
{
    double s = 0;
    for (size_t i = 0; i < k; i++) {
        if (!(p[i] >= 0) || isinf(p[i]))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: cell %zu is negative or not finite",
                              what, i);
        s += p[i];
    }
    if (!(s > 0))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: a distribution sums to 0", what);
    *sum = s;
    return 0;
}

static double rel_entr(double x, double y)
{
    if (x > 0 && y > 0)
        return x * log(x / y);
    if (x == 0 && y >= 0)
        return 0;
    return INFINITY;
}

int qml_jensenshannon(const double *p, const double *q, size_t k, double base, double *out,
                      qn_err *err)
{
    if (k == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "jensenshannon: no cells");
    double sp = 0, sq = 0;
    int rc;
    if ((rc = check_weights("jensenshannon", p, k, &sp, err)) < 0 ||
        (rc = check_weights("jensenshannon", q, k, &sq, err)) < 0)
        return rc;
    double js = 0;
    for (size_t i = 0; i < k; i++) {
        double a = p[i] / sp, b = q[i] / sq, m = (a + b) / 2;
        js += rel_entr(a, m) + rel_entr(b, m);
    }
    if (base > 0)
        js /= log(base);
    *out = js > 0 ? sqrt(js / 2) : 0.0;
    return 0;
}

int qml_psi(const double *p, const double *q, size_t k, double *out, qn_err *err)
{
    if (k == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "psi: no cells");
    double s = 0;
    for (size_t i = 0; i < k; i++) {
        if (!(p[i] > 0) || !(q[i] > 0) || isinf(p[i]) || isinf(q[i]))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "psi: cell %zu is not a positive proportion (fill empty bins)", i);
        s += (p[i] - q[i]) * log(p[i] / q[i]);
    }
    *out = s;
    return 0;
}

void qml_drift_fill_empty(double *pct, size_t k)
{
    double mn = INFINITY;
    for (size_t i = 0; i < k; i++)
        if (pct[i] != 0 && pct[i] < mn)
            mn = pct[i];
    if (isinf(mn))
        mn = 1.0;  /* all empty: Evidently would fail; use the plain epsilon */
    double fill = mn <= 0.0001 ? mn / 1e6 : 0.0001;
    for (size_t i = 0; i < k; i++)
        if (pct[i] == 0)
            pct[i] = fill;
}

/* The bin of v: the last b in [0, nbins-1] with edges[b] <= v (0 below the
 * first edge), by binary search. */
static size_t bin_search(const double *edges, size_t nbins, double v)
{
    size_t lo = 0, hi = nbins;  /* answer in [0, nbins-1] */
    if (v >= edges[nbins - 1])
        return nbins - 1;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (edges[mid] <= v)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

void qml_histogram_clamped(const double *x, size_t n, const double *edges, size_t nbins,
                           double *counts)
{
    for (size_t b = 0; b < nbins; b++)
        counts[b] = 0;
    if (nbins == 0)
        return;
    /* Profile edges are uniform, so (v - e0) / width guesses the bin; the
     * guess is kept only when the edges themselves confirm it (edges[g] <= v
     * < edges[g+1], with the end bins open outward), else the binary search
     * decides. The bin is therefore the binary search's, whatever the edges. */
    double e0 = edges[0], scale = (double)nbins / (edges[nbins] - edges[0]);
    int guess = isfinite(scale) && scale > 0;
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        if (isnan(v))
            continue;
        size_t b;
        double g = (v - e0) * scale;
        if (guess && g >= 0 && g < (double)nbins) {
            b = (size_t)g;
            if (!((b == 0 || edges[b] <= v) && (b + 1 == nbins || v < edges[b + 1])))
                b = bin_search(edges, nbins, v);
        } else {
            b = bin_search(edges, nbins, v);
        }
        counts[b] += 1;
    }
}

/* ---- methods, options, reports ---------------------------------------------- */

static const struct {
    qml_drift_method m;
    const char *name;
    int is_test;
} methods[] = {
    {QML_DRIFT_AUTO, "auto", 0},
    {QML_DRIFT_KS, "ks", 1},
    {QML_DRIFT_CHISQUARE, "chisquare", 1},
    {QML_DRIFT_ZTEST, "ztest", 1},
    {QML_DRIFT_WASSERSTEIN, "wasserstein", 0},
    {QML_DRIFT_JENSENSHANNON, "jensenshannon", 0},
    {QML_DRIFT_PSI, "psi", 0},
};

const char *qml_drift_method_name(qml_drift_method m)
{
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (methods[i].m == m)
            return methods[i].name;
    return "unknown";
}

int qml_drift_method_parse(const char *s, qml_drift_method *m)
{
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (s && strcmp(s, methods[i].name) == 0) {
            *m = methods[i].m;
            return 0;
        }
    return QN_INVALID_ARGUMENT;
}

int qml_drift_method_is_test(qml_drift_method m)
{
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (methods[i].m == m)
            return methods[i].is_test;
    return 0;
}

void qml_drift_opts_default(qml_drift_opts *o)
{
    memset(o, 0, sizeof *o);
    o->small_reference_rows = 1000;
    o->share_threshold = 0.5;
    o->ks_threshold = 0.05;
    o->chisquare_threshold = 0.05;
    o->ztest_threshold = 0.05;
    o->wasserstein_threshold = 0.1;
    o->jensenshannon_threshold = 0.1;
    o->psi_threshold = 0.1;
    o->js_base = 0;
    o->ks_mode = QML_KS_AUTO;
}

qml_drift_method qml_drift_default_method(const qml_drift_opts *o, int categorical,
                                          size_t n_categories, size_t reference_rows)
{
    if (reference_rows <= o->small_reference_rows) {
        if (!categorical)
            return QML_DRIFT_KS;
        return n_categories == 2 ? QML_DRIFT_ZTEST : QML_DRIFT_CHISQUARE;
    }
    return categorical ? QML_DRIFT_JENSENSHANNON : QML_DRIFT_WASSERSTEIN;
}

double qml_drift_default_threshold(const qml_drift_opts *o, qml_drift_method m)
{
    switch (m) {
    case QML_DRIFT_KS: return o->ks_threshold;
    case QML_DRIFT_CHISQUARE: return o->chisquare_threshold;
    case QML_DRIFT_ZTEST: return o->ztest_threshold;
    case QML_DRIFT_WASSERSTEIN: return o->wasserstein_threshold;
    case QML_DRIFT_JENSENSHANNON: return o->jensenshannon_threshold;
    case QML_DRIFT_PSI: return o->psi_threshold;
    case QML_DRIFT_AUTO: break;
    }
    return NAN;
}

void qml_drift_report_finish(qml_drift_report *r, double share_threshold)
{
    r->n_drifted = 0;
    for (size_t i = 0; i < r->n_features; i++)
        r->n_drifted += r->features[i].drifted != 0;
    r->share = r->n_features ? (double)r->n_drifted / (double)r->n_features : 0.0;
    r->share_threshold = share_threshold;
    r->dataset_drift = r->n_features > 0 && r->share >= share_threshold;
}

void qml_drift_report_free(qml_drift_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_features; i++)
        free(r->features[i].column);
    free(r->features);
    free(r);
}

static json_t *num_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

json_t *qml_drift_report_to_json(const qml_drift_report *r)
{
    json_t *root = json_object(), *feats = json_array();
    if (!root || !feats)
        goto fail;
    if (json_object_set_new(root, "dataset_drift", json_boolean(r->dataset_drift)) ||
        json_object_set_new(root, "share", json_real(r->share)) ||
        json_object_set_new(root, "share_threshold", json_real(r->share_threshold)) ||
        json_object_set_new(root, "n_drifted", json_integer((json_int_t)r->n_drifted)) ||
        json_object_set_new(root, "n_features", json_integer((json_int_t)r->n_features)))
        goto fail;
    for (size_t i = 0; i < r->n_features; i++) {
        const qml_drift_feature *f = &r->features[i];
        json_t *o = json_object();
        if (!o || json_array_append_new(feats, o) ||
            json_object_set_new(o, "column", json_string(f->column)) ||
            json_object_set_new(o, "method", json_string(qml_drift_method_name(f->method))) ||
            json_object_set_new(o, "statistic", num_or_null(f->statistic)) ||
            json_object_set_new(o, "p_value", num_or_null(f->p_value)) ||
            json_object_set_new(o, "threshold", num_or_null(f->threshold)) ||
            json_object_set_new(o, "drifted", json_boolean(f->drifted)) ||
            json_object_set_new(o, "n_reference", json_integer((json_int_t)f->n_reference)) ||
            json_object_set_new(o, "n_current", json_integer((json_int_t)f->n_current)))
            goto fail;
    }
    if (json_object_set_new(root, "features", feats))
        goto fail_root;
    return root;
fail:
    json_decref(feats);
fail_root:
    json_decref(root);
    return NULL;
}
