/*
 * bench_drift.c - the C side of the drift benchmark (bench/bench_drift.sh).
 *
 *     bench_drift FILE     (written by bench_drift.py gen)
 *
 * Per column: two-sample KS (sort copies, walk, asymptotic p-value) and, over
 * bins from the reference (Sturges' count, uniform over its range, current
 * values clamped into the end bins, Evidently's empty-bin fill), PSI and
 * Jensen-Shannon - the same work bench_drift.py times in scipy. Prints one
 * JSON line with the times and every statistic so the two can be compared.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ml/drift.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DATAFILE\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    int64_t hdr[2];
    if (!f || fread(hdr, sizeof hdr, 1, f) != 1 || hdr[0] <= 0 || hdr[1] <= 0) {
        fprintf(stderr, "%s: cannot read the header\n", argv[1]);
        return 1;
    }
    size_t rows = (size_t)hdr[0], cols = (size_t)hdr[1];
    double *data = malloc(2 * rows * cols * sizeof *data);
    if (!data || fread(data, sizeof *data, 2 * rows * cols, f) != 2 * rows * cols) {
        fprintf(stderr, "%s: short file\n", argv[1]);
        return 1;
    }
    fclose(f);
    double t_ks = 0, t_bins = 0;
    qn_err err;
    printf("{\"rows\":%zu,\"cols\":%zu,\"columns\":[", rows, cols);
    for (size_t c = 0; c < cols; c++) {
        const double *ref = data + c * rows, *cur = data + (cols + c) * rows;
        double t0 = now();
        qml_ks_result ks;
        if (qml_ks_2samp(ref, rows, cur, rows, QML_KS_AUTO, &ks, &err) < 0) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        double t1 = now();
        size_t nb = (size_t)ceil(log2((double)rows)) + 1;
        double lo = INFINITY, hi = -INFINITY;
        for (size_t i = 0; i < rows; i++) {
            lo = fmin(lo, ref[i]);
            hi = fmax(hi, ref[i]);
        }
        double edges[128], rp[128], cp[128], psi, js;
        for (size_t b = 0; b <= nb; b++)
            edges[b] = b == nb ? hi : lo + (hi - lo) * (double)b / (double)nb;
        qml_histogram_clamped(ref, rows, edges, nb, rp);
        qml_histogram_clamped(cur, rows, edges, nb, cp);
        for (size_t b = 0; b < nb; b++) {
            rp[b] /= (double)rows;
            cp[b] /= (double)rows;
        }
        qml_drift_fill_empty(rp, nb);
        qml_drift_fill_empty(cp, nb);
        if (qml_psi(rp, cp, nb, &psi, &err) < 0 || qml_jensenshannon(rp, cp, nb, 0, &js, &err) < 0) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        double t2 = now();
        t_ks += t1 - t0;
        t_bins += t2 - t1;
        printf("%s{\"ks_d\":%.17g,\"ks_p\":%.17g,\"psi\":%.17g,\"js\":%.17g}", c ? "," : "",
               ks.statistic, ks.p_value, psi, js);
    }
    printf("],\"ks_s\":%.6f,\"psi_js_s\":%.6f,\"total_s\":%.6f}\n", t_ks, t_bins, t_ks + t_bins);
    free(data);
    return 0;
}
