/*
 * bench_recommend.c - top-10 latency for one user at 64 factors over ~4000
 * items (the size of the Online Retail catalogue; synthetic factors), p50 and
 * p99 over many users, beside a naive baseline in the same process: score
 * every item, copy into an array, full qsort, take 10.
 *
 *     build/bench/bench_recommend [--items N] [--users N] [--factors F] [--queries Q]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ml/als.h"
#include "ml/csr.h"

static uint64_t rng = 88172645463325252ULL;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int rec_desc(const void *a, const void *b)
{
    const qml_als_rec *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return (x->item > y->item) - (x->item < y->item);
}

/* The baseline: every score, seen items dropped, a full sort. */
static int naive_topk(qml_als *m, const qml_csr *ui, int32_t u, int k, qml_als_rec *all,
                      qml_als_rec *out)
{
    int f = qml_als_factors(m), ni = qml_als_n_items(m), n = 0;
    const float *x = qml_als_user_factors(m) + (size_t)u * f, *V = qml_als_item_factors(m);
    int64_t e = ui->indptr[u];
    for (int32_t i = 0; i < ni; i++) {
        if (e < ui->indptr[u + 1] && ui->indices[e] == i) {
            e++;
            continue;
        }
        float s = 0;
        for (int a = 0; a < f; a++)
            s += x[a] * V[(size_t)i * f + a];
        all[n++] = (qml_als_rec){i, s};
    }
    qsort(all, (size_t)n, sizeof *all, rec_desc);
    n = n < k ? n : k;
    memcpy(out, all, (size_t)n * sizeof *out);
    return n;
}

static void pct(double *v, int n, double *p50, double *p99)
{
    qsort(v, (size_t)n, sizeof *v, dbl_cmp);
    *p50 = v[n / 2];
    *p99 = v[(int)(n * 0.99)];
}

int main(int argc, char **argv)
{
    int ni = 4070, nu = 4372, factors = 64, queries = 20000, k = 10;
    for (int a = 1; a + 1 < argc; a += 2) {
        if (strcmp(argv[a], "--items") == 0)
            ni = atoi(argv[a + 1]);
        else if (strcmp(argv[a], "--users") == 0)
            nu = atoi(argv[a + 1]);
        else if (strcmp(argv[a], "--factors") == 0)
            factors = atoi(argv[a + 1]);
        else if (strcmp(argv[a], "--queries") == 0)
            queries = atoi(argv[a + 1]);
    }
    if (ni < k || nu < 1 || factors < 1 || queries < 100) {
        fprintf(stderr, "usage: %s [--items N>=10] [--users N] [--factors F] [--queries Q>=100]\n",
                argv[0]);
        return 2;
    }
    /* ~20 interactions per user, skewed towards low item ids. */
    size_t n = (size_t)nu * 20;
    int32_t *rows = malloc(n * sizeof *rows), *cols = malloc(n * sizeof *cols);
    float *vals = malloc(n * sizeof *vals);
    for (size_t e = 0; e < n; e++) {
        int32_t a = (int32_t)(next() % (uint64_t)ni), b = (int32_t)(next() % (uint64_t)ni);
        rows[e] = (int32_t)(e / 20);
        cols[e] = a < b ? a : b;
        vals[e] = 1;
    }
    qn_err err;
    qml_csr *ui;
    qml_als *m;
    qml_als_params p;
    qml_als_params_init(&p);
    p.factors = factors;
    p.iterations = 3;
    p.threads = 2;
    if (qml_csr_from_coo(nu, ni, rows, cols, vals, n, &ui, &err) < 0 ||
        qml_als_fit(ui, &p, &m, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    free(rows);
    free(cols);
    free(vals);

    double *lat_q = malloc((size_t)queries * sizeof *lat_q);
    double *lat_n = malloc((size_t)queries * sizeof *lat_n);
    qml_als_rec out[10], ref[10], *all = malloc((size_t)ni * sizeof *all);
    int mismatched = 0;
    for (int q = 0; q < queries; q++) {
        int32_t u = (int32_t)(next() % (uint64_t)nu);
        double t0 = now();
        int a = qml_als_recommend(m, u, k, 1, out, &err);
        double t1 = now();
        int b = naive_topk(m, ui, u, k, all, ref);
        double t2 = now();
        lat_q[q] = (t1 - t0) * 1e6;
        lat_n[q] = (t2 - t1) * 1e6;
        for (int j = 0; j < (a < b ? a : b); j++)
            mismatched += out[j].item != ref[j].item;
        mismatched += a != b;
    }
    double q50, q99, n50, n99;
    pct(lat_q, queries, &q50, &q99);
    pct(lat_n, queries, &n50, &n99);
    printf("top-%d recommendation, one user, %d items x %d factors, exclude seen, %d queries\n", k, ni,
           factors, queries);
    printf("%-36s %10s %10s\n", "", "p50 (us)", "p99 (us)");
    printf("%-36s %10.1f %10.1f\n", "quern (heap selection)", q50, q99);
    printf("%-36s %10.1f %10.1f\n", "naive (score all, full qsort)", n50, n99);
    printf("speed-up at p50: %.1fx; ranks differing from the baseline: %d of %d\n", n50 / q50,
           mismatched, queries * k);
    free(lat_q);
    free(lat_n);
    free(all);
    qml_als_free(m);
    qml_csr_free(ui);
    return 0;
}
