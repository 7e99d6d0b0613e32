/*
 * err.c - error codes, names and messages (see err.h).
 *
 * Messages quote their input ("model %s does not exist"), and input is any
 * bytes: a message is formatted into a scratch buffer twice its size, then
 * copied with bytes that are not UTF-8 escaped as \xHH and cut on a
 * character boundary (core/utf8), so that err->msg is always valid UTF-8
 * and can go into a JSON error body as it is.
 */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/utf8.h"

void qn_err_format_v(char *out, size_t cap, const char *fmt, va_list ap)
{
    char tmp[2 * QN_ERR_MSG_MAX];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1;
    /* A character cut by vsnprintf lies past what fits in out anyway when
     * cap <= sizeof tmp / 2: every input byte becomes at least one byte. */
    qn_utf8_escape(out, cap, tmp, len);
}

int qn_err_set(qn_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        qn_err_format_v(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

int qn_err_wrap(qn_err *err, const char *fmt, ...)
{
    char prefix[QN_ERR_MSG_MAX], old[QN_ERR_MSG_MAX];
    va_list ap;

    if (!err)
        return QN_UNKNOWN;
    va_start(ap, fmt);
    qn_err_format_v(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    old[sizeof old - 1] = '\0';
    /* Truncation is fine here: the message is for humans and stays bounded;
     * it never cuts a character in two. */
    size_t n = strlen(prefix);
    n = qn_utf8_trunc(prefix, n, sizeof err->msg - 3);
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    size_t rest = sizeof err->msg - n - 3;
    size_t olen = strlen(old);
    olen = qn_utf8_trunc(old, olen, rest);
    memcpy(err->msg + n + 2, old, olen);
    err->msg[n + 2 + olen] = '\0';
    return err->code;
}

void qn_err_clear(qn_err *err)
{
    if (err) {
        err->code = QN_OK;
        err->msg[0] = '\0';
    }
}

const char *qn_code_name(int code)
{
    switch (code) {
    case QN_OK: return "ok";
#define QN__XX(name, num, str, http) case QN_##name: return str;
    QN_CODE_MAP(QN__XX)
#undef QN__XX
    }
    return "unknown";
}

int qn_code_http_status(int code)
{
    switch (code) {
    case QN_OK: return 200;
#define QN__XX(name, num, str, http) case QN_##name: return http;
    QN_CODE_MAP(QN__XX)
#undef QN__XX
    }
    return 500;
}

int qn_code_from_name(const char *name)
{
#define QN__XX(n, num, str, http) if (strcmp(name, str) == 0) return QN_##n;
    QN_CODE_MAP(QN__XX)
#undef QN__XX
    return strcmp(name, "ok") == 0 ? QN_OK : QN_UNKNOWN;
}

int qn_code_is_client(int code)
{
    int s = qn_code_http_status(code);
    return s >= 400 && s < 500;
}
