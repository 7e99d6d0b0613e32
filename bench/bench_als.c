/*
 * bench_als.c - implicit ALS training speed on a synthetic matrix shaped like
 * last.fm 360k (about 360k users, 160k items, 17M non-zeros, power-law item
 * popularity, fixed seed), printed beside the `implicit` library's published
 * CPU figure for last.fm at 64 factors.
 *
 *     build/bench/bench_als [--scale S] [--threads T] [--factors F]
 *                           [--iterations N] [--cg-steps C]
 *
 * --scale 0.1 runs a tenth of the users, items and non-zeros. GFLOP/s counts
 * the nominal work of one iteration (both half-steps): the Gram matrices
 * (f^2 per row of the fixed side, as ssyrk does), and per solved row the
 * residual and each CG step (2f^2 for the f x f product, 4f per non-zero for
 * its dot and axpy, 10f of vector updates). Rows that converge early do less,
 * so the rate is a lower bound.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ml/als.h"
#include "ml/csr.h"

static uint64_t rng = 0x2545F4914F6CDD1DULL;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double unif(void)
{
    return (double)(next() >> 11) * 0x1p-53;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Wall and process CPU time per iteration: on a shared machine the CPU time
 * (core-seconds actually spent) is the steadier figure. */
typedef struct {
    double last, cpu_last;
    double iter_s[256], cpu_s[256];
    int n;
} timing;

static int on_progress(const qml_als_progress *p, void *ud)
{
    timing *t = ud;
    double e = p->elapsed;
    double c = cpu_now();
    if (t->n < 256) {
        t->cpu_s[t->n] = c - t->cpu_last;
        t->iter_s[t->n++] = e - t->last;
    }
    t->last = e;
    t->cpu_last = c;
    fprintf(stderr, "  iteration %d: %.2f s wall, %.2f s CPU\n", p->iteration, t->iter_s[t->n - 1],
            t->cpu_s[t->n - 1]);
    return 0;
}

int main(int argc, char **argv)
{
    double scale = 1.0;
    int threads = 2, factors = 64, iterations = 3, cg_steps = 3;
    for (int a = 1; a < argc; a++) {
        if (a + 1 < argc && strcmp(argv[a], "--scale") == 0)
            scale = atof(argv[++a]);
        else if (a + 1 < argc && strcmp(argv[a], "--threads") == 0)
            threads = atoi(argv[++a]);
        else if (a + 1 < argc && strcmp(argv[a], "--factors") == 0)
            factors = atoi(argv[++a]);
        else if (a + 1 < argc && strcmp(argv[a], "--iterations") == 0)
            iterations = atoi(argv[++a]);
        else if (a + 1 < argc && strcmp(argv[a], "--cg-steps") == 0)
            cg_steps = atoi(argv[++a]);
        else {
            fprintf(stderr, "usage: %s [--scale S] [--threads T] [--factors F] [--iterations N] "
                            "[--cg-steps C]\n", argv[0]);
            return 2;
        }
    }
    if (!(scale > 0) || threads < 1 || factors < 1 || iterations < 1 || cg_steps < 1) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    int32_t nu = (int32_t)(358868 * scale), ni = (int32_t)(160112 * scale);
    size_t n = (size_t)(17535655 * scale);
    if (nu < 1 || ni < 1) {
        fprintf(stderr, "scale too small\n");
        return 2;
    }

    /* Item popularity ~ 1/(rank + 10)^0.9, ranks scattered over item ids. */
    double g0 = now();
    double *cdf = malloc((size_t)ni * sizeof *cdf);
    int32_t *perm = malloc((size_t)ni * sizeof *perm);
    int32_t *rows = malloc(n * sizeof *rows), *cols = malloc(n * sizeof *cols);
    float *vals = malloc(n * sizeof *vals);
    if (!cdf || !perm || !rows || !cols || !vals) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    double acc = 0;
    for (int32_t i = 0; i < ni; i++) {
        acc += pow(i + 10.0, -0.9);
        cdf[i] = acc;
        perm[i] = i;
    }
    for (int32_t i = ni - 1; i > 0; i--) {
        int32_t j = (int32_t)(next() % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (size_t k = 0; k < n; k++) {
        double x = unif() * acc;
        int32_t lo = 0, hi = ni - 1;
        while (lo < hi) {
            int32_t mid = (lo + hi) / 2;
            if (cdf[mid] < x)
                lo = mid + 1;
            else
                hi = mid;
        }
        rows[k] = (int32_t)(k % (size_t)nu);
        cols[k] = perm[lo];
        vals[k] = (float)(1 + (int)(-log(1 - unif()) * 20)); /* play counts */
    }
    free(cdf);
    free(perm);
    qn_err err;
    qml_csr *m;
    if (qml_csr_from_coo(nu, ni, rows, cols, vals, n, &m, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    free(rows);
    free(cols);
    free(vals);
    double gen_s = now() - g0;

    qml_als_params p;
    qml_als_params_init(&p);
    p.factors = factors;
    p.iterations = iterations;
    p.cg_steps = cg_steps;
    p.threads = threads;
    timing t = {0};
    p.progress = on_progress;
    p.progress_userdata = &t;
    fprintf(stderr, "matrix %d x %d, %lld non-zeros (built in %.1f s); training...\n", nu, ni,
            (long long)m->nnz, gen_s);
    qml_als *model;
    double t0 = now();
    t.cpu_last = cpu_now();
    if (qml_als_fit(m, &p, &model, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double total = now() - t0;
    /* The first iteration also carries the one-off setup (validation,
     * transpose, popularity), so it is left out when there are more. */
    int first = t.n > 1 ? 1 : 0;
    double best = t.iter_s[first], mean = 0, cpu = 0;
    for (int k = first; k < t.n; k++) {
        mean += t.iter_s[k];
        cpu += t.cpu_s[k];
        best = t.iter_s[k] < best ? t.iter_s[k] : best;
    }
    mean /= t.n - first;
    cpu /= t.n - first;

    double f = factors, rows_all = (double)nu + ni, nnz2 = 2.0 * (double)m->nnz;
    double flops = f * f * rows_all                                 /* two Gram matrices */
                   + rows_all * (2 * f * f + 3 * f)                  /* residual: symv */
                   + nnz2 * 4 * f                                    /* residual: non-zeros */
                   + cg_steps * (rows_all * (2 * f * f + 10 * f) + nnz2 * 4 * f);
    printf("ALS training, synthetic last.fm shape (scale %.3g): %d users x %d items, %lld nnz, "
           "%d factors, %d CG steps, %d threads\n", scale, nu, ni, (long long)m->nnz, factors,
           cg_steps, threads);
    printf("%-34s %14s %14s %12s\n", "", "s/iteration", "core-seconds", "GFLOP/s");
    printf("%-34s %14.2f %14.2f %12.1f\n", "quern (mean wall; CPU time)", mean, cpu,
           flops / mean * 1e-9);
    printf("%-34s %14.2f %14.2f %12.1f\n", "quern (best wall)", best, best * threads,
           flops / best * 1e-9);
    printf("%-34s %14s %14s %12.1f\n", "quern (per core-second of CPU)", "-", "-",
           flops / cpu * 1e-9);
    printf("%-34s %14.2f %14.2f %12s\n", "implicit, last.fm, 8 cores", 1.37, 10.96, "-");
    printf("%-34s %14.2f %14.2f %12s\n", "target, 2 cores", 5.5, 11.0, "-");
    if (scale != 1.0)
        printf("(scale %.3g: compare %.2f s x 1/%.3g = %.2f s/iteration extrapolated)\n", scale, mean,
               scale, mean / scale);
    printf("nominal work %.2f GFLOP per iteration; total %.1f s for %d iterations (first, with "
           "setup: %.2f s)\n", flops * 1e-9, total, iterations, t.iter_s[0]);
    qml_als_free(model);
    qml_csr_free(m);
    return 0;
}
