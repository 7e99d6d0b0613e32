/*
 * ticker.h - a background thread that runs a function at a fixed interval
 * until it is stopped (time-based window closing, metric polling...).
 *
 *     static void tick(void *ud) { ... }
 *     qn_ticker *t = qn_ticker_start(tick, state, 1000, &err);   // every second
 *     ...
 *     qn_ticker_stop(t);   // wakes the thread at once, waits for a tick in progress
 *
 * The first call comes one interval after the start. fn runs on the ticker's
 * own thread, never concurrently with itself.
 */
#ifndef QN_TICKER_H
#define QN_TICKER_H

#include "core/err.h"

typedef struct qn_ticker qn_ticker;

/* NULL with err (QN_RESOURCE_EXHAUSTED) when the thread cannot start. */
qn_ticker *qn_ticker_start(void (*fn)(void *ud), void *ud, long long interval_ms, qn_err *err);
/* Stops, joins and frees the ticker. NULL is a no-op. */
void qn_ticker_stop(qn_ticker *t);

#endif
