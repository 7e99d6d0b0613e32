/*
 * log.c - JSON-lines logging (see log.h).
 *
 * Each event becomes one JSON object, built with jansson and written with a
 * single write(2) of the whole line under a mutex, so lines from many threads
 * never interleave (and lines up to PIPE_BUF are atomic between processes
 * sharing a pipe too). Key order is fixed: ts, level, service, msg, then the
 * caller's fields, then trace_id, so logs read the same every time.
 * Logging never fails its caller: if something cannot be encoded, the line
 * degrades (fields dropped, bad bytes replaced) rather than disappearing.
 */
#include "core/log.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"
#include "core/json.h"

static atomic_int log_min = QN_LOG_INFO;
static atomic_int log_fd = 2;
static char log_service[64] = "quern";
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void qn_log_init(const char *service, qn_log_level min)
{
    pthread_mutex_lock(&log_mu);
    snprintf(log_service, sizeof log_service, "%s", service ? service : "quern");
    pthread_mutex_unlock(&log_mu);
    atomic_store(&log_min, (int)min);
}

int qn_log_level_parse(const char *s, qn_log_level *out)
{
    static const struct { const char *name; qn_log_level level; } names[] = {
        {"debug", QN_LOG_DEBUG}, {"info", QN_LOG_INFO}, {"warn", QN_LOG_WARN},
        {"warning", QN_LOG_WARN}, {"error", QN_LOG_ERROR},
    };
    for (size_t i = 0; s && i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    }
    return QN_INVALID_ARGUMENT;
}

void qn_log_set_fd(int fd)
{
    atomic_store(&log_fd, fd);
}

/* A JSON string from bytes that may not be UTF-8 (jansson refuses those):
 * non-ASCII bytes are replaced by '?' so the message still gets out. */
static json_t *safe_string(const char *s)
{
    json_t *j = json_string(s);
    if (j)
        return j;
    char *copy = strdup(s);
    if (!copy)
        return json_string("?");
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

static void format_ts(char out[32])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ts.tv_nsec / 1000000));
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a logging failure */
        }
        p += w;
        n -= (size_t)w;
    }
}

void qn_log(qn_log_level level, const char *trace_id, const char *msg, const char *fields, ...)
{
    if ((int)level < atomic_load(&log_min))
        return;
    if ((int)level < QN_LOG_DEBUG || (int)level > QN_LOG_ERROR)
        level = QN_LOG_ERROR;

    char ts[32];
    format_ts(ts);
    json_t *obj = json_object();
    if (!obj)
        return;
    json_object_set_new(obj, "ts", json_string(ts));
    json_object_set_new(obj, "level", json_string(level_names[level]));
    pthread_mutex_lock(&log_mu);
    json_object_set_new(obj, "service", safe_string(log_service));
    pthread_mutex_unlock(&log_mu);
    json_object_set_new(obj, "msg", safe_string(msg ? msg : ""));

    if (fields) {
        va_list ap;
        json_error_t jerr;
        va_start(ap, fields);
        json_t *extra = json_vpack_ex(&jerr, 0, fields, ap);
        va_end(ap);
        if (json_is_object(extra)) {
            const char *key;
            json_t *val;
            json_object_foreach(extra, key, val) {
                /* The fixed keys keep their meaning whatever a caller passes. */
                if (strcmp(key, "ts") && strcmp(key, "level") && strcmp(key, "service") &&
                    strcmp(key, "msg") && strcmp(key, "trace_id"))
                    json_object_set(obj, key, val);
            }
        }
        json_decref(extra);
    }
    if (trace_id && *trace_id)
        json_object_set_new(obj, "trace_id", safe_string(trace_id));

    char *line = qn_json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!line)
        return;
    size_t n = strlen(line);
    char *full = realloc(line, n + 2);
    if (!full) {
        free(line);
        return;
    }
    full[n] = '\n';
    full[n + 1] = '\0';
    pthread_mutex_lock(&log_mu);
    write_all(atomic_load(&log_fd), full, n + 1);
    pthread_mutex_unlock(&log_mu);
    free(full);
}
