/*
 * fsort.h - sorting doubles fast: an LSD radix sort on their bits.
 *
 * Drift statistics (KS, Wasserstein) spend most of their time sorting a
 * window of doubles. A comparison sort pays O(n log n) comparisons through a
 * function pointer; this sorts the order-preserving unsigned image of each
 * IEEE-754 double (flip every bit of a negative, the sign bit of a positive)
 * in at most 6 passes of 11 bits, skipping the passes in which every key has
 * the same digit, and decodes while writing the last pass.
 *
 *     double *tmp = malloc(n * sizeof *tmp);
 *     qml_fsort_into(window, n, sorted, tmp);   // window untouched
 *     // or, in place with its own scratch:
 *     if (qml_fsort(x, n) < 0) ...              // out of memory only
 *
 * The order is IEEE-754's totalOrder on the non-NaN values: -inf < negatives
 * < -0.0 < +0.0 < positives < +inf, so -0.0 comes before +0.0 (a comparison
 * sort with < leaves them in any order; every statistic here treats them as
 * equal). NaN policy: every NaN, whatever its sign or payload, sorts last,
 * after +inf, and comes out as the canonical quiet NaN (NAN) - numpy.sort's
 * placement. Callers that must refuse NaN (KS) check before sorting.
 * Pure functions, thread-safe on distinct buffers.
 */
#ifndef QML_FSORT_H
#define QML_FSORT_H

#include <stddef.h>

/* Writes src[0..n) sorted ascending to dst[0..n), using tmp[0..n) as scratch.
 * src may equal dst (in place); tmp must not overlap either. Allocates
 * nothing, cannot fail. */
void qml_fsort_into(const double *src, size_t n, double *dst, double *tmp);

/* Sorts x[0..n) in place, allocating its own scratch for n above a small
 * threshold. Returns 0, or QN_RESOURCE_EXHAUSTED (x then unchanged). */
int qml_fsort(double *x, size_t n);

#endif
