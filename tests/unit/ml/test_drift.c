/* test_drift.c - drift statistics against scipy 1.10, reference profiles, the
 * per-column default choice and the dataset verdict.
 *
 * drift_reference.py (run here with /usr/bin/python3) writes every statistic
 * case with scipy's answer; each is recomputed in C and must agree to 1e-6
 * relative (REL_TOL; an absolute floor of 1e-300 lets a p-value that both
 * sides put at or below the double range pass). Where scipy is itself an
 * approximation (Pelz-Good for large N, the Miller-style two-sided tail
 * 2*smirnov) the same approximation is implemented, so the tolerance holds. */
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


#define REL_TOL 1e-6

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
    size_t na, nb;
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
        size_t nx, ne, nexp;
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
            size_t na, nb;
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_scipy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
