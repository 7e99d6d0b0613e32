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
 *
 * A listing handler uses a qn_page: query LIMIT limit + 1 rows after the
 * key, add rows until the page is full (the extra row only says there is
 * more), then finish into {"<field>":[...],"next_page_token":"..."}:
 *
 *     qn_page pg;
 *     char after[QN_PAGE_KEY_MAX];
 *     if (qn_page_begin(&pg, "models", qn_req_query(req, "limit"), 50, 1000,
 *                       qn_req_query(req, "page_token"), after, &err) < 0) -> 400
 *     ... bind after and pg.limit + 1 ...
 *     while ((rc = qn_step(st, &err)) == 1 && !qn_page_full(&pg))
 *         qn_page_add(&pg, item_json, name);
 *     json_t *out = qn_page_finish(&pg, "models");
 */
#ifndef QN_VALIDATE_H
#define QN_VALIDATE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define QN_NAME_MAX 128

/* Names of models, datasets, aliases, pipelines: 1..128 bytes of
 * [A-Za-z0-9._-], starting with a letter or digit (so never "..", never a
 * path). what: "model", "alias"... used in the message. */
QN_MUST_CHECK int qn_name_check(const char *what, const char *name, qn_err *err);

#define QN_COLNAME_MAX 256

/* Names of COLUMNS (CSV headers, JSON keys of rows, schema columns, prep
 * steps, train specs, manifest inputs): any text as people write it
 * ("Customer ID", "CO(GT)", "Temp\u00e9rature") kept exactly: 1..256 bytes of
 * valid UTF-8 without control characters (U+0000..U+001F, U+007F..U+009F).
 * Names of resources keep qn_name_check. what: "column"... used in the message. */
QN_MUST_CHECK int qn_colname_check(const char *what, const char *name, qn_err *err);

/* Parses a positive decimal integer in [1, max] (e.g. a version number in a
 * path); QN_INVALID_ARGUMENT naming `what` otherwise. */
QN_MUST_CHECK int qn_uint_parse(const char *what, const char *s, int64_t max, int64_t *out, qn_err *err);

/* NULL -> def; otherwise 1..max. */
QN_MUST_CHECK int qn_limit_parse(const char *s, int64_t def, int64_t max, int64_t *out, qn_err *err);

/* Encodes scope and key; caller frees. NULL when out of memory. */
char *qn_page_token_encode(const char *scope, const char *key);
/* NULL or "" token -> key = "" and 0. Otherwise decodes and checks the
 * scope; QN_INVALID_ARGUMENT on anything malformed. */
int qn_page_token_decode(const char *token, const char *scope, char *key, size_t keycap,
                         qn_err *err);

#define QN_PAGE_KEY_MAX 256

typedef struct qn_page {
    const char *scope;
    int64_t limit;
    json_t *items;              /* owned until qn_page_finish */
    char last[QN_PAGE_KEY_MAX]; /* key of the last item added */
    int more;                   /* a row past the limit was seen */
} qn_page;

/* Parses limit (absent: def; 1..max) and the page token of scope into after
 * ("" on the first page). 0, or QN_INVALID_ARGUMENT naming the parameter. */
int qn_page_begin(qn_page *pg, const char *scope, const char *limit, int64_t def, int64_t max,
                  const char *token, char after[QN_PAGE_KEY_MAX], qn_err *err);
/* 1 when limit items are in: the row in hand belongs to the next page. */
int qn_page_full(qn_page *pg);
/* Adds an item (stolen) whose key the next page starts after. */
void qn_page_add(qn_page *pg, json_t *item, const char *key);
void qn_page_add_int(qn_page *pg, json_t *item, int64_t key);
/* {"<field>": items, "next_page_token": ...when more}; the page is spent. */
json_t *qn_page_finish(qn_page *pg, const char *field);
/* Releases an unfinished page (failure paths). */
void qn_page_free(qn_page *pg);

#endif
