/*
 * trace.h - W3C trace context (traceparent), random ids and UUIDs.
 *
 *     qn_trace_ctx in, span;
 *     if (qn_traceparent_parse(header, &in) < 0)  // absent or malformed:
 *         qn_trace_new(&in);                        //   start a new trace
 *     qn_trace_child(&in, &span);                   // our span in that trace
 *     char tp[QN_TRACEPARENT_LEN + 1];
 *     qn_traceparent_format(&span, tp);             // "00-<32 hex>-<16 hex>-01"
 *
 * This carries context; spans and their export are core/otel.h. Thread-safe.
 */
#ifndef QN_TRACE_H
#define QN_TRACE_H

#include <stddef.h>
#include <stdint.h>

#define QN_TRACEPARENT_LEN 55
#define QN_TRACE_ID_HEX 32
#define QN_UUID_LEN 36

typedef struct qn_trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_span_id[8]; /* zero when this span has no parent */
    uint8_t flags;             /* bit 0: sampled */
} qn_trace_ctx;

/* Parses a version-00 traceparent (and accepts higher versions per the spec's
 * forward-compatibility rules). All-zero ids and bad hex are QN_INVALID_ARGUMENT. */
int qn_traceparent_parse(const char *s, qn_trace_ctx *out);
/* Writes "00-<trace>-<span>-<flags>" (55 chars + NUL). */
void qn_traceparent_format(const qn_trace_ctx *c, char out[QN_TRACEPARENT_LEN + 1]);
/* A new trace with random ids, sampled. */
void qn_trace_new(qn_trace_ctx *out);
/* A child span: same trace id and flags, new span id, parent = parent's span. */
void qn_trace_child(const qn_trace_ctx *parent, qn_trace_ctx *out);
/* The trace id as 32 lower-case hex chars. */
void qn_trace_id_hex(const qn_trace_ctx *c, char out[QN_TRACE_ID_HEX + 1]);

/* Cryptographically random bytes (getrandom(2)). */
void qn_random_bytes(void *buf, size_t n);
/* A random (version 4) UUID, lower-case, 36 chars + NUL. */
void qn_uuid4(char out[QN_UUID_LEN + 1]);

#endif
