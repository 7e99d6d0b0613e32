/*
 * json.h - small helpers over jansson for reading request bodies strictly.
 *
 * Every service validates JSON bodies the same way: refuse unknown fields
 * (a typo should fail loudly, not be ignored), check each field's type and
 * bounds, and say exactly which field is wrong.
 *
 *     static const char *const allowed[] = {"name", "description", "tags", NULL};
 *     const char *name, *desc = "";
 *     json_t *tags = NULL;
 *     if (qn_json_only(body, allowed, &err) < 0 ||
 *         qn_json_str(body, "name", 1, 128, &name, &err) < 0 ||
 *         qn_json_str(body, "description", 0, 4096, &desc, &err) < 0 ||
 *         qn_json_tags(body, "tags", &tags, &err) < 0)
 *         return qn_res_error(res, err.code, "%s", err.msg);
 *
 * Strings returned point into the JSON value (valid while it lives).
 */
#ifndef QN_JSON_H
#define QN_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* QN_INVALID_ARGUMENT naming the first key of obj not in the NULL-terminated
 * allowed list (or if obj is not an object). */
QN_MUST_CHECK int qn_json_only(const json_t *obj, const char *const *allowed, qn_err *err);

/* A string field of at most maxlen bytes (valid UTF-8 by jansson's contract).
 * Absent: QN_INVALID_ARGUMENT when required, else *out is left unchanged and 0. */
QN_MUST_CHECK int qn_json_str(const json_t *obj, const char *key, int required, size_t maxlen,
                const char **out, qn_err *err);
/* An integer field within [min, max]; absent as above. */
QN_MUST_CHECK int qn_json_int(const json_t *obj, const char *key, int required, int64_t min, int64_t max,
                int64_t *out, qn_err *err);
/* An object field (borrowed); absent as above. */
QN_MUST_CHECK int qn_json_obj(const json_t *obj, const char *key, int required, json_t **out, qn_err *err);

/* A tags object: at most 64 keys of at most 128 bytes, string values of at
 * most 1024 bytes. *out borrowed, NULL when absent. */
QN_MUST_CHECK int qn_json_tags(const json_t *obj, const char *key, json_t **out, qn_err *err);

/* Serializes compactly with sorted keys: the canonical form used for digests
 * and storage. Caller frees. NULL when out of memory. */
QN_MUST_CHECK char *qn_json_canonical(const json_t *v);

/* json_dumps(v, flags), but NULL when any allocation fails: jansson 2.14's
 * json_dumps ignores a failed append of an object key and returns the text
 * without it (a digest or a response body silently altered). Use this, not
 * json_dumps. Caller frees. */
char *qn_json_dumps(const json_t *v, size_t flags);

/* The code for a jansson reader's failure (json_loadb and kin): the server's
 * QN_RESOURCE_EXHAUSTED when it ran out of memory, else the text's
 * QN_INVALID_ARGUMENT. */
int qn_json_load_code(const json_error_t *je);

/* Milliseconds since the epoch, and RFC 3339 UTC with milliseconds
 * ("2026-11-28T13:30:00.123Z") into out[32]. */
int64_t qn_now_ms(void);
void qn_time_rfc3339(int64_t ms, char out[32]);
/* The same as a JSON string (new reference). */
json_t *qn_json_time(int64_t ms);
/* Parses stored JSON text (e.g. a TEXT column); NULL text or bad JSON gives
 * JSON null. Always a new reference. */
json_t *qn_json_from_text(const char *text);

#endif
