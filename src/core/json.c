/* json.c - strict field access and canonical serialization (see json.h). */
#include "core/json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int qn_json_only(const json_t *obj, const char *const *allowed, qn_err *err)
{
    const char *key;
    json_t *v;

    if (!json_is_object(obj))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "the body must be a JSON object");
    json_object_foreach((json_t *)obj, key, v) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++) {
            if (strcmp(*a, key) == 0) {
                ok = 1;
                break;
            }
        }
        if (!ok) {
            char list[256] = "";
            for (const char *const *a = allowed; *a; a++) {
                if (a != allowed)
                    strncat(list, ", ", sizeof list - strlen(list) - 1);
                strncat(list, *a, sizeof list - strlen(list) - 1);
            }
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "unknown field \"%.64s\"; this request takes: %s", key, list);
        }
    }
    return 0;
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "unknown";
}

static int absent(const char *key, int required, qn_err *err)
{
    if (required)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "field \"%s\" is required", key);
    return 1;
}

int qn_json_str(const json_t *obj, const char *key, int required, size_t maxlen,
                const char **out, qn_err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        int rc = absent(key, required, err);
        return rc > 0 ? 0 : rc;
    }
    if (!json_is_string(v))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "field \"%s\" must be a string, not %s",
                          key, type_name(v));
    if (json_string_length(v) > maxlen)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "field \"%s\" is %zu bytes long; the limit is %zu", key,
                          json_string_length(v), maxlen);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "field \"%s\" contains a NUL character", key);
    *out = json_string_value(v);
    return 0;
}

int qn_json_int(const json_t *obj, const char *key, int required, int64_t min, int64_t max,
                int64_t *out, qn_err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        int rc = absent(key, required, err);
        return rc > 0 ? 0 : rc;
    }
    if (!json_is_integer(v))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "field \"%s\" must be an integer, not %s",
                          key, type_name(v));
    json_int_t x = json_integer_value(v);
    if (x < min || x > max)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "field \"%s\" is %lld; it must be between %lld and %lld", key,
                          (long long)x, (long long)min, (long long)max);
    *out = x;
    return 0;
}

int qn_json_obj(const json_t *obj, const char *key, int required, json_t **out, qn_err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        int rc = absent(key, required, err);
        return rc > 0 ? 0 : rc;
    }
    if (!json_is_object(v))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "field \"%s\" must be an object, not %s",
                          key, type_name(v));
    *out = v;
    return 0;
}

int qn_json_tags(const json_t *obj, const char *key, json_t **out, qn_err *err)
{
    json_t *tags = NULL;
    int rc = qn_json_obj(obj, key, 0, &tags, err);
    if (rc < 0)
        return rc;
    *out = tags;
    if (!tags)
        return 0;
    if (json_object_size(tags) > 64)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "field \"%s\" has %zu tags; the limit is 64",
                          key, json_object_size(tags));
    const char *k;
    json_t *v;
    json_object_foreach(tags, k, v) {
        if (!*k || strlen(k) > 128)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "tag keys must be 1 to 128 bytes long (in \"%s\")", key);
        if (!json_is_string(v))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "tag \"%.128s\" must be a string, not %s",
                              k, type_name(v));
        if (json_string_length(v) > 1024)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "tag \"%.128s\" is %zu bytes long; the limit is 1024", k,
                              json_string_length(v));
    }
    return 0;
}

/* json_dump_callback sink whose first failure sticks: jansson does not check
 * every callback's answer, so the sink must refuse everything after one. */
typedef struct dump_sink {
    char *p;
    size_t len, cap;
    int failed;
} dump_sink;

static int dump_put(const char *b, size_t n, void *ud)
{
    dump_sink *s = ud;
    if (s->failed)
        return -1;
    if (n >= s->cap - s->len) {
        size_t cap = s->cap ? s->cap : 256;
        while (n >= cap - s->len) {
            if (cap > SIZE_MAX / 2) {
                s->failed = 1;
                return -1;
            }
            cap *= 2;
        }
        char *p = realloc(s->p, cap);
        if (!p) {
            s->failed = 1;
            return -1;
        }
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->len, b, n);
    s->len += n;
    s->p[s->len] = '\0';
    return 0;
}

char *qn_json_dumps(const json_t *v, size_t flags)
{
    dump_sink s = {0};
    if (json_dump_callback(v, dump_put, &s, flags) < 0 || s.failed || !s.p) {
        free(s.p);
        return NULL;
    }
    return s.p;
}

int qn_json_load_code(const json_error_t *je)
{
    return json_error_code(je) == json_error_out_of_memory ? QN_RESOURCE_EXHAUSTED
                                                            : QN_INVALID_ARGUMENT;
}

char *qn_json_canonical(const json_t *v)
{
    return qn_json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}

int64_t qn_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void qn_time_rfc3339(int64_t ms, char out[32])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

json_t *qn_json_time(int64_t ms)
{
    char t[32];
    qn_time_rfc3339(ms, t);
    return json_string(t);
}

json_t *qn_json_from_text(const char *text)
{
    json_t *v = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    return v ? v : json_null();
}
