/*
 * metrics.h - a Prometheus metrics registry rendered in text format 0.0.4.
 *
 *     qn_metrics *m = qn_metrics_new();
 *     static const char *const labels[] = {"route", "method", "code", NULL};
 *     qn_metric *reqs = qn_metrics_counter(m, "quern_http_requests_total",
 *                                          "HTTP requests served.", labels);
 *     const char *vals[] = {"/v1/models/{name}", "GET", "200"};
 *     qn_counter_add(reqs, vals, 1);
 *     qn_metric *lat = qn_metrics_histogram(m, "quern_http_request_duration_seconds",
 *                                           "Time to answer.", labels, NULL, 0);
 *     qn_histogram_observe(lat, vals, 0.0012);
 *     qn_buf out; qn_buf_init(&out, 1 << 24);
 *     qn_metrics_render(m, &out);       // "# HELP ...\n# TYPE ...\n..."
 *
 * Families are created at start (not on hot paths) and live as long as the
 * registry. Series are created on first use of a label-value combination; the
 * number of series per family is bounded (QN_METRICS_MAX_SERIES): past it,
 * updates to new combinations are dropped and counted in
 * quern_metrics_series_dropped_total, so a bad label can never exhaust memory.
 * Label values are escaped on output. All functions are thread-safe.
 */
#ifndef QN_METRICS_H
#define QN_METRICS_H

#include <stddef.h>

#include "core/buf.h"
#include "core/err.h"

#define QN_METRICS_MAX_SERIES 10000

typedef struct qn_metrics qn_metrics;
typedef struct qn_metric qn_metric;

qn_metrics *qn_metrics_new(void);
void qn_metrics_free(qn_metrics *m);

/* Constant labels added to every series (e.g. service="registry"); call
 * before any family is created. names/values NULL-terminated / same count. */
void qn_metrics_const_labels(qn_metrics *m, const char *const *names, const char *const *values);

/* labels: NULL-terminated list of label names (NULL for none). Names are
 * validated (programmer error if invalid: asserts). Returns the family
 * (owned by m); asking twice for the same name returns the same family. */
qn_metric *qn_metrics_counter(qn_metrics *m, const char *name, const char *help,
                              const char *const *labels);
qn_metric *qn_metrics_gauge(qn_metrics *m, const char *name, const char *help,
                            const char *const *labels);
/* buckets: ascending upper bounds (+Inf is implicit); NULL/0 picks a default
 * latency ladder from 100 us to 10 s. */
qn_metric *qn_metrics_histogram(qn_metrics *m, const char *name, const char *help,
                                const char *const *labels, const double *buckets,
                                size_t nbuckets);

/* values: one per label name, in order (NULL when the family has no labels). */
void qn_counter_add(qn_metric *c, const char *const *values, double v);
void qn_gauge_set(qn_metric *g, const char *const *values, double v);
void qn_gauge_add(qn_metric *g, const char *const *values, double v);
void qn_histogram_observe(qn_metric *h, const char *const *values, double v);
/* Removes one series (a gauge for a model that is no longer served). */
void qn_metric_remove(qn_metric *f, const char *const *values);

/* Called at the start of every render, to refresh gauges computed on demand. */
void qn_metrics_on_render(qn_metrics *m, void (*fn)(qn_metrics *m, void *ud), void *ud);

/* Appends the whole registry in text format 0.0.4 to out. 0 or QN_RESOURCE_EXHAUSTED. */
QN_MUST_CHECK int qn_metrics_render(qn_metrics *m, qn_buf *out);

#endif
