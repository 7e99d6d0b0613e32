/*
 * otel.h - spans and their export as OTLP/HTTP JSON (DESIGN.md section 8).
 *
 * A span is one timed operation in a trace: an HTTP request served (SERVER),
 * a call to another service (CLIENT), an event put on the bus (PRODUCER) or
 * taken from it (CONSUMER), a step of a job (INTERNAL). Its context (trace
 * id, span id) is what travels on as the W3C traceparent, so the spans of
 * every service that took part in one request join up in one trace.
 *
 *     qn_otel_opts o = {.endpoint = "http://127.0.0.1:4318", .service = "quern-train"};
 *     qn_otel_start(&o, &err);                 // once, in main (qn_service_main does it)
 *     ...
 *     qn_span s;
 *     qn_span_start(&s, "fit", QN_SPAN_INTERNAL, &job_ctx);   // s.ctx: a child of job_ctx
 *     qn_span_attr_int(&s, "rows", 5000);
 *     qn_client_json(reg, "GET", "/v1/...", NULL, &s.ctx, &out, &err);  // carries s.ctx on
 *     if (rc < 0) qn_span_error(&s, err.msg);
 *     qn_span_end(&s);                         // queued for export
 *     ...
 *     qn_otel_shutdown(2000);                  // flush what is queued, stop the thread
 *
 * Export: ended spans go to a bounded in-memory queue; a background thread
 * batches them (up to batch_max, or every flush_ms) and POSTs the protobuf-
 * JSON form of ExportTraceServiceRequest to {endpoint}/v1/traces. A full
 * queue drops the span (quern_otel_spans_dropped_total{reason="queue_full"});
 * a batch the collector cannot take after a few retries is dropped too
 * (reason "export_failed"); nothing ever waits on the collector but that
 * thread. Spans whose trace is not sampled (traceparent flags bit 0 clear)
 * are not recorded.
 *
 * Off (no qn_otel_start, or an empty endpoint): qn_span_start still fills
 * s.ctx (context keeps flowing for logs), nothing is recorded, and every
 * other call is a check of one pointer.
 *
 * Thread-safety: the exporter is process-wide and thread-safe. One qn_span is
 * used by one thread at a time.
 */
#ifndef QN_OTEL_H
#define QN_OTEL_H

#include <stdint.h>

#include "core/err.h"
#include "core/metrics.h"
#include "core/trace.h"

/* The OTLP SpanKind numbers. */
typedef enum qn_span_kind {
    QN_SPAN_INTERNAL = 1,
    QN_SPAN_SERVER = 2,
    QN_SPAN_CLIENT = 3,
    QN_SPAN_PRODUCER = 4,
    QN_SPAN_CONSUMER = 5,
} qn_span_kind;

typedef struct qn__span_rec qn__span_rec;

/* Plain data owned by whoever declared it; rec belongs to the span. */
typedef struct qn_span {
    qn_trace_ctx ctx;  /* this span's context: pass it on to what it causes */
    qn__span_rec *rec; /* NULL when not recorded (tracing off, not sampled, ended) */
} qn_span;

typedef struct qn_otel_opts {
    const char *endpoint;  /* collector base URL; spans go to {endpoint}/v1/traces */
    const char *service;   /* resource attribute service.name, e.g. "quern-registry" */
    qn_metrics *metrics;   /* quern_otel_* counters go here; NULL: none (must outlive the exporter) */
    unsigned queue_max;    /* spans waiting for export [4096] */
    unsigned batch_max;    /* spans per POST [512] */
    long flush_ms;         /* longest wait before a partial batch goes [1000] */
    long timeout_ms;       /* one POST [5000] */
    int max_retries;       /* retries of a failed POST before the batch is dropped [2] */
} qn_otel_opts;

/* Counts since qn_otel_start (for tests and the shutdown log line). */
typedef struct qn_otel_stats {
    uint64_t recorded;        /* spans ended and queued */
    uint64_t exported;        /* spans the collector accepted */
    uint64_t dropped_queue;   /* the queue was full */
    uint64_t dropped_export;  /* the collector refused them or could not be reached */
    uint64_t posts;           /* POST attempts, retries included */
} qn_otel_stats;

/* Starts the exporter thread. An empty or NULL endpoint leaves tracing off
 * and returns 0. QN_INVALID_ARGUMENT for an endpoint that is not http(s)://,
 * QN_FAILED_PRECONDITION when already started, QN_RESOURCE_EXHAUSTED when
 * the thread cannot start. Not thread-safe against qn_otel_shutdown. */
QN_MUST_CHECK int qn_otel_start(const qn_otel_opts *opts, qn_err *err);
/* Exports what is queued (waiting up to timeout_ms), then stops the thread
 * and turns tracing off; spans still open are then dropped at their end.
 * A no-op when tracing is off. */
void qn_otel_shutdown(long long timeout_ms);
/* 1 when spans are being recorded. Cheap (one atomic load). */
int qn_otel_enabled(void);
/* Waits up to timeout_ms until every span queued so far was exported or
 * dropped. 0, or QN_DEADLINE_EXCEEDED. */
int qn_otel_flush(long long timeout_ms);
void qn_otel_stats_get(qn_otel_stats *out);

/* Starts a span: s->ctx becomes a child of parent (same trace, new span id,
 * parent's flags) or, with parent NULL, the root of a new sampled trace.
 * Records it when tracing is on and the trace is sampled. name is copied
 * (at most 127 bytes kept). Never fails: out of memory only leaves it
 * unrecorded. */
void qn_span_start(qn_span *s, const char *name, qn_span_kind kind, const qn_trace_ctx *parent);
/* Replaces the name (for spans whose name is known later, e.g. the route). */
void qn_span_set_name(qn_span *s, const char *name);
/* Attributes (at most 16 per span; later ones are ignored). Keys and string
 * values are copied (values cut at 256 bytes). */
void qn_span_attr_str(qn_span *s, const char *key, const char *value);
void qn_span_attr_int(qn_span *s, const char *key, long long value);
void qn_span_attr_double(qn_span *s, const char *key, double value);
void qn_span_attr_bool(qn_span *s, const char *key, int value);
/* Status: error with a message (cut at 256 bytes), or ok. Unset by default. */
void qn_span_error(qn_span *s, const char *message);
void qn_span_ok(qn_span *s);
/* Forgets the span without exporting it (e.g. a health check). */
void qn_span_discard(qn_span *s);
/* Ends the span: its end time is now, and it is queued for export (or
 * dropped and counted when the queue is full). s->ctx stays valid; rec
 * becomes NULL, so ending twice is harmless. */
void qn_span_end(qn_span *s);

#endif
