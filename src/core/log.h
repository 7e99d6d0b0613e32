/*
 * log.h - JSON-lines logging to stderr, one line per event (DESIGN.md section 1):
 *   {"ts":"2026-11-28T13:30:00.123Z","level":"info","service":"registry",
 *    "msg":"blob stored","digest":"sha256:...","size":42,"trace_id":"4bf9..."}
 *
 *     qn_log_init("registry", QN_LOG_INFO);
 *     qn_log_info(NULL, "listening", "{s:s, s:i}", "addr", "127.0.0.1", "port", 7701);
 *     qn_log_warn(req_trace_id, "digest mismatch", "{s:s}", "want", hex);
 *     qn_log_error(NULL, "cannot open store", NULL);
 *
 * Extra fields use jansson's json_pack format (NULL for none); a format that
 * fails to pack logs the message alone. Each line is written with a single
 * write(2), so lines from many threads never interleave. Thread-safe.
 */
#ifndef QN_LOG_H
#define QN_LOG_H

typedef enum qn_log_level {
    QN_LOG_DEBUG = 0,
    QN_LOG_INFO,
    QN_LOG_WARN,
    QN_LOG_ERROR,
} qn_log_level;

/* Sets the service name and the lowest level written. Call once at start. */
void qn_log_init(const char *service, qn_log_level min);
/* "debug", "info", "warn" (or "warning"), "error" -> 0 and *out; else QN_INVALID_ARGUMENT. */
int qn_log_level_parse(const char *s, qn_log_level *out);
/* Redirects output to fd (tests); default 2. */
void qn_log_set_fd(int fd);

/* trace_id: 32 hex chars or NULL. fields: json_pack format or NULL. */
void qn_log(qn_log_level level, const char *trace_id, const char *msg, const char *fields, ...);

#define qn_log_debug(tid, msg, ...) qn_log(QN_LOG_DEBUG, tid, msg, __VA_ARGS__)
#define qn_log_info(tid, msg, ...)  qn_log(QN_LOG_INFO, tid, msg, __VA_ARGS__)
#define qn_log_warn(tid, msg, ...)  qn_log(QN_LOG_WARN, tid, msg, __VA_ARGS__)
#define qn_log_error(tid, msg, ...) qn_log(QN_LOG_ERROR, tid, msg, __VA_ARGS__)

#endif
