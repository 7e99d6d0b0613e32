/* err.c - error codes, names and messages (see err.h). */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int qn_err_set(qn_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
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
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* Truncation is fine here: the message is for humans and stays bounded. */
    size_t n = strlen(prefix);
    if (n > sizeof err->msg - 3)
        n = sizeof err->msg - 3;
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    size_t rest = sizeof err->msg - n - 3;
    size_t olen = strnlen(old, rest);
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
