/*
 * bench_drift.c - the C side of the drift benchmark (bench/bench_drift.sh).
 *
 *     bench_drift FILE     (written by bench_drift.py gen)
 *
 * Per column: two-sample KS (asymptotic p-value) and, over bins from the
 * reference (Sturges' count, uniform over its range, current values clamped
 * into the end bins, Evidently's empty-bin fill), PSI and Jensen-Shannon - the
 * same work bench_drift.py times in scipy. Two paths in the same run, each
 * over every column, one after the other:
 *  - "old", sort both: qml_ks_2samp sorts copies of the reference and the
 *    current sample, and both are binned, as for a one-off comparison;
 *  - "new", the monitor's: the reference is fixed for a version's life, so it
 *    is sorted and binned once (timed apart as "prep", as a profile does when
 *    built or loaded) and each window sorts and bins only itself
 *    (qml_ks_2samp_ref).
 * The two paths must give bit-identical statistics (exit 1 otherwise). Prints
 * one JSON line with the times and every statistic so that the script can
 * compare them with scipy's.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ml/drift.h"
#include "ml/fsort.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define MAX_BINS 128

/* Sturges' uniform bins over the reference range. */
static size_t ref_edges(const double *ref, size_t rows, double *edges)
{
    size_t nb = (size_t)ceil(log2((double)rows)) + 1;
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < rows; i++) {
        lo = fmin(lo, ref[i]);
        hi = fmax(hi, ref[i]);
    }
    for (size_t b = 0; b <= nb; b++)
        edges[b] = b == nb ? hi : lo + (hi - lo) * (double)b / (double)nb;
    return nb;
}

/* Proportions of x over the bins, empty bins filled. */
static void proportions(const double *x, size_t n, const double *edges, size_t nb, double *pct)
{
    qml_histogram_clamped(x, n, edges, nb, pct);
    for (size_t b = 0; b < nb; b++)
        pct[b] /= (double)n;
    qml_drift_fill_empty(pct, nb);
}

typedef struct stats {
    double ks_d, ks_p, psi, js;
} stats;

static int psi_js(const double *rp, const double *cp, size_t nb, stats *st, qn_err *err)
{
    if (qml_psi(rp, cp, nb, &st->psi, err) < 0 ||
        qml_jensenshannon(rp, cp, nb, 0, &st->js, err) < 0)
        return -1;
    return 0;
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
    double *sref = malloc(rows * sizeof *sref);
    if (!data || !sref || fread(data, sizeof *data, 2 * rows * cols, f) != 2 * rows * cols) {
        fprintf(stderr, "%s: short file\n", argv[1]);
        return 1;
    }
    fclose(f);
    double t_ks = 0, t_bins = 0, t_prep = 0, t_nks = 0, t_nbins = 0;
    stats *old = calloc(cols, sizeof *old), *new = calloc(cols, sizeof *new);
    if (!old || !new) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    qn_err err;
    qml_ks_result ks;
    double edges[MAX_BINS + 1], rp[MAX_BINS], cp[MAX_BINS];
    /* old, every column: sort both, bin both */
    for (size_t c = 0; c < cols; c++) {
        const double *ref = data + c * rows, *cur = data + (cols + c) * rows;
        double t0 = now();
        if (qml_ks_2samp(ref, rows, cur, rows, QML_KS_AUTO, &ks, &err) < 0)
            goto fail;
        old[c].ks_d = ks.statistic;
        old[c].ks_p = ks.p_value;
        double t1 = now();
        size_t nb = ref_edges(ref, rows, edges);
        if (nb > MAX_BINS) {
            fprintf(stderr, "too many rows for %d bins\n", MAX_BINS);
            return 1;
        }
        proportions(ref, rows, edges, nb, rp);
        proportions(cur, rows, edges, nb, cp);
        if (psi_js(rp, cp, nb, &old[c], &err) < 0)
            goto fail;
        double t2 = now();
        t_ks += t1 - t0;
        t_bins += t2 - t1;
    }
    /* new, every column: the reference prepared once per version (as a
     * profile is when built or loaded), then the window sorted and binned.
     * The paths run one after the other, as in a process that only monitors,
     * so neither one's allocations are returned to the kernel by the other's. */
    for (size_t c = 0; c < cols; c++) {
        const double *ref = data + c * rows, *cur = data + (cols + c) * rows;
        double t2 = now();
        memcpy(sref, ref, rows * sizeof *sref);
        if (qml_fsort(sref, rows) < 0) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        size_t nb = ref_edges(ref, rows, edges);
        proportions(ref, rows, edges, nb, rp);
        double t3 = now();
        if (qml_ks_2samp_ref(sref, rows, cur, rows, QML_KS_AUTO, &ks, &err) < 0)
            goto fail;
        new[c].ks_d = ks.statistic;
        new[c].ks_p = ks.p_value;
        double t4 = now();
        proportions(cur, rows, edges, nb, cp);
        if (psi_js(rp, cp, nb, &new[c], &err) < 0)
            goto fail;
        double t5 = now();
        if (memcmp(&old[c], &new[c], sizeof old[c]) != 0) {
            fprintf(stderr, "column %zu: the pre-sorted path gave other statistics\n", c);
            return 1;
        }
        t_prep += t3 - t2;
        t_nks += t4 - t3;
        t_nbins += t5 - t4;
    }
    printf("{\"rows\":%zu,\"cols\":%zu,\"columns\":[", rows, cols);
    for (size_t c = 0; c < cols; c++)
        printf("%s{\"ks_d\":%.17g,\"ks_p\":%.17g,\"psi\":%.17g,\"js\":%.17g}", c ? "," : "",
               new[c].ks_d, new[c].ks_p, new[c].psi, new[c].js);
    printf("],\"ks_s\":%.6f,\"psi_js_s\":%.6f,\"total_s\":%.6f,"
           "\"prep_s\":%.6f,\"new_ks_s\":%.6f,\"new_psi_js_s\":%.6f,\"new_total_s\":%.6f}\n",
           t_ks, t_bins, t_ks + t_bins, t_prep, t_nks, t_nbins, t_nks + t_nbins);
    free(old);
    free(new);
    free(data);
    free(sref);
    return 0;
fail:
    fprintf(stderr, "%s\n", err.msg);
    return 1;
}
