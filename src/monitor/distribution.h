/*
 * distribution.h - the reference and current distribution of one feature,
 * compact enough to keep with every drift report (the console draws it).
 *
 *     json_t *d = mon_distribution(&profile->cols[c], qml_frame_col(window, 0));
 *     json_object_set_new(dists, profile->cols[c].name, d);   // NULL: out of memory
 *
 * Numeric columns use the reference profile's own histogram: its bin edges
 * (equal-width over the training set's [min, max], Sturges' count; runs of
 * adjacent bins merged when there are more than MON_DIST_MAX_BINS) and its
 * exact counts over the whole training set. They are the bins PSI and
 * Jensen-Shannon compare, so the picture and the statistic agree. Current
 * values below the first edge count in the first bin and above the last in
 * the last (also counted in current_below / current_above); missing or NaN
 * cells count in current_missing only.
 *
 * Categorical columns keep the MON_DIST_TOP_K categories with the largest
 * share on either side (a category new in the window shows as well as one
 * that vanished), in that order; the rest add up in reference_other /
 * current_other.
 *
 * Every count array sums, with its other and missing counts, to its total:
 * reference_total is the training set's cells, current_total the window's.
 * docs/monitor.md shows the JSON.
 */
#ifndef QUERN_MONITOR_DISTRIBUTION_H
#define QUERN_MONITOR_DISTRIBUTION_H

#include <jansson.h>

#include "ml/frame.h"
#include "ml/profile.h"

#define MON_DIST_MAX_BINS 40
#define MON_DIST_TOP_K 10

/* The distribution of profile column pc against the window's cells cur (a
 * column of the same kind: NUMERIC for a numeric profile column, CATEGORICAL
 * for a categorical one). Returns a new JSON object (the caller owns it), or
 * NULL when out of memory or when pc has no values to bin (a numeric column
 * profiled without any value). Thread-safe; reads its inputs only. */
json_t *mon_distribution(const qml_profile_column *pc, const qml_column *cur);

#endif
