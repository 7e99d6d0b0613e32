/*
 * err.h - the one error convention of Quern.
 *
 * Every function that can fail returns 0 on success and a negative qn_code on
 * failure, and fills a caller-provided qn_err with a human sentence that names
 * the input at fault. The codes are the gRPC canonical ones; the same table
 * gives their snake_case names (the "code" of the JSON error model, DESIGN.md
 * section 1) and the HTTP status a service answers with.
 *
 *     qn_err err;
 *     if (qn_frame_read_csv(path, &opts, &frame, &err) < 0) {
 *         fprintf(stderr, "%s: %s\n", qn_code_name(err.code), err.msg);
 *         ...
 *     }
 *
 *     // inside a library function
 *     if (k <= 0)
 *         return qn_err_set(err, QN_INVALID_ARGUMENT, "k must be > 0, got %d", k);
 *
 * Client faults (bad input) and server faults (I/O, out of memory) stay
 * distinct: the former map to 4xx, the latter to 5xx.
 */
#ifndef QN_ERR_H
#define QN_ERR_H

#include <stdarg.h>
#include <stddef.h>

/* XX(NAME, grpc number, snake_case name, HTTP status) */
#define QN_CODE_MAP(XX)                                         \
    XX(CANCELLED,           1,  "cancelled",           499)     \
    XX(UNKNOWN,             2,  "unknown",             500)     \
    XX(INVALID_ARGUMENT,    3,  "invalid_argument",    400)     \
    XX(DEADLINE_EXCEEDED,   4,  "deadline_exceeded",   504)     \
    XX(NOT_FOUND,           5,  "not_found",           404)     \
    XX(ALREADY_EXISTS,      6,  "already_exists",      409)     \
    XX(PERMISSION_DENIED,   7,  "permission_denied",   403)     \
    XX(RESOURCE_EXHAUSTED,  8,  "resource_exhausted",  429)     \
    XX(FAILED_PRECONDITION, 9,  "failed_precondition", 400)     \
    XX(ABORTED,             10, "aborted",             409)     \
    XX(OUT_OF_RANGE,        11, "out_of_range",        400)     \
    XX(UNIMPLEMENTED,       12, "unimplemented",       501)     \
    XX(INTERNAL,            13, "internal",            500)     \
    XX(UNAVAILABLE,         14, "unavailable",         503)     \
    XX(DATA_LOSS,           15, "data_loss",           500)     \
    XX(UNAUTHENTICATED,     16, "unauthenticated",     401)

typedef enum qn_code {
    QN_OK = 0,
#define QN__XX(name, num, str, http) QN_##name = -(num),
    QN_CODE_MAP(QN__XX)
#undef QN__XX
} qn_code;

#define QN_ERR_MSG_MAX 512

/* On a fallible function whose result must be looked at: the compiler warns
 * (an error under -Werror) when a caller drops it. Ignoring one on purpose is
 * rare and takes a (void) cast with a comment saying why. Where errors are
 * sticky (qn_buf appends, statement binds) the attribute sits on the call
 * that reports them at the end (qn_buf_error, qn_step), not on each step. */
#if defined(__GNUC__) || defined(__clang__)
#define QN_MUST_CHECK __attribute__((warn_unused_result))
#else
#define QN_MUST_CHECK
#endif

/* Plain data: a code and the sentence that explains it. */
typedef struct qn_err {
    int code;                  /* a qn_code, QN_OK when nothing failed */
    char msg[QN_ERR_MSG_MAX];  /* NUL-terminated, truncated if longer */
} qn_err;

/* Fills err (which may be NULL) with code and a printf-style message and
 * returns code, so that `return qn_err_set(err, QN_..., "...")` reads well.
 * The message is always valid UTF-8: bytes of the arguments that are not
 * are written as \xHH, and a message too long for msg is cut on a
 * character boundary. */
int qn_err_set(qn_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes err->msg with "prefix: " (context added by a caller); returns
 * err->code. Same UTF-8 guarantee as qn_err_set. */
int qn_err_wrap(qn_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* vsnprintf for messages: formats into out (cap bytes, cap <= 2 *
 * QN_ERR_MSG_MAX for the cut to stay on a boundary) with the guarantee of
 * qn_err_set. Used by the HTTP error responses too. */
void qn_err_format_v(char *out, size_t cap, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Resets err to QN_OK with an empty message. err may be NULL. */
void qn_err_clear(qn_err *err);

/* "invalid_argument" for QN_INVALID_ARGUMENT; "ok" for 0; "unknown" otherwise. */
const char *qn_code_name(int code);

/* The HTTP status for a code (200 for QN_OK, 500 for unknown codes). */
int qn_code_http_status(int code);

/* The code for a snake_case name, or QN_UNKNOWN. */
int qn_code_from_name(const char *name);

/* True for codes that are the caller's fault (a 4xx). */
int qn_code_is_client(int code);

#endif
