/*
 * http_route.h - internal to http.c: splitting a raw request path into
 * percent-decoded segments and matching them against route templates.
 *
 * Exposed (with the qn__ prefix) only so that the fuzz target and the unit
 * tests can reach the parser of outside input directly:
 *
 *     char buf[256];
 *     const char *segs[QN__MAX_SEGMENTS];
 *     size_t nsegs, np;
 *     qn__param ps[QN__MAX_PARAMS];
 *     if (qn__path_split("/v1/models/a%20b", buf, sizeof buf, segs, QN__MAX_SEGMENTS, &nsegs) == 0 &&
 *         qn__template_match("/v1/models/{name}", segs, nsegs, ps, QN__MAX_PARAMS, &np))
 *         ... ps[0].name is "name" (name_len 4), ps[0].value is "a b"
 *
 * Pure functions on caller memory; thread-safe.
 */
#ifndef QN_HTTP_ROUTE_H
#define QN_HTTP_ROUTE_H

#include <stddef.h>

#define QN__MAX_SEGMENTS 32
#define QN__MAX_PARAMS 16

typedef struct qn__param {
    const char *name;   /* points into the template; not NUL-terminated */
    size_t name_len;
    const char *value;  /* a decoded segment (NUL-terminated) */
} qn__param;

/* Decodes the %XX escapes of in[0..len) into out (room for len + 1 bytes),
 * NUL-terminated; '+' stays '+' (paths are not forms). Returns the decoded
 * length, or -1 for a truncated or non-hex escape or an escaped NUL byte. */
long qn__pct_decode(const char *in, size_t len, char *out);

/* Splits the raw path (up to '?' or the end; must start with '/') into
 * decoded segments stored in buf (bufsize >= path length + 1). "/" is one
 * empty segment; "/a/" is "a" and "". Returns 0, QN_INVALID_ARGUMENT for a
 * path without the leading '/' or with a bad escape, QN_OUT_OF_RANGE when
 * there are more than maxsegs segments or buf is too small. */
int qn__path_split(const char *path, char *buf, size_t bufsize, const char **segs,
                   size_t maxsegs, size_t *nsegs);

/* 1 when the template ("/v1/models/{name}") matches the segments exactly:
 * literal segments byte for byte, a {param} any non-empty segment. params
 * receives one entry per {param} (at most maxparams; more is no match). */
int qn__template_match(const char *tmpl, const char *const *segs, size_t nsegs,
                       qn__param *params, size_t maxparams, size_t *nparams);

/* 1 when a template is well-formed: starts with '/', every '{' opens a
 * whole segment "{name}" with a non-empty name of [A-Za-z0-9_]. */
int qn__template_valid(const char *tmpl);

#endif
