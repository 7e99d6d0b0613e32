/*
 * validate.h - names, page tokens and list limits, checked the same way by
 * every service.
 *
 *     if (qn_name_check("model", name, &err) < 0) -> 400
 *     int64_t limit;
 *     if (qn_limit_parse(qn_req_query(req, "limit"), 50, 1000, &limit, &err) < 0) -> 400
 *     char key[256];
 *     if (qn_page_token_decode(qn_req_query(req, "page_token"), "models", key, sizeof key, &err) < 0) -> 400
 *     ...
 *     char *next = qn_page_token_encode("models", last_name);   // caller frees
 *
 * A page token is opaque to clients (base64url of a scope and the last key
 * seen); a token from another listing or a mangled one is a 400.
 */
#ifndef QN_VALIDATE_H
#define QN_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define QN_NAME_MAX 128

/* Names of models, datasets, aliases, pipelines: 1..128 bytes of
 * [A-Za-z0-9._-], starting with a letter or digit (so never "..", never a
 * path). what: "model", "alias"... used in the message. */
int qn_name_check(const char *what, const char *name, qn_err *err);

/* Parses a positive decimal integer in [1, max] (e.g. a version number in a
 * path); QN_INVALID_ARGUMENT naming `what` otherwise. */
int qn_uint_parse(const char *what, const char *s, int64_t max, int64_t *out, qn_err *err);

/* NULL -> def; otherwise 1..max. */
int qn_limit_parse(const char *s, int64_t def, int64_t max, int64_t *out, qn_err *err);

/* Encodes scope and key; caller frees. NULL when out of memory. */
char *qn_page_token_encode(const char *scope, const char *key);
/* NULL or "" token -> key = "" and 0. Otherwise decodes and checks the
 * scope; QN_INVALID_ARGUMENT on anything malformed. */
int qn_page_token_decode(const char *token, const char *scope, char *key, size_t keycap,
                         qn_err *err);

#endif
