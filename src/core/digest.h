/*
 * digest.h - SHA-256 content digests, as the registry names blobs.
 *
 *     qn_sha256 *h = qn_sha256_new();
 *     qn_sha256_update(h, buf, n);            // as often as data arrives
 *     char hex[QN_SHA256_HEX + 1];
 *     qn_sha256_final(h, hex);                // 64 lower-case hex chars
 *     qn_sha256_free(h);
 *
 *     char want[QN_SHA256_HEX + 1];
 *     if (qn_digest_parse("sha256:ab12...", want, &err) < 0) -> 400 to the client
 *
 * A digest string is "sha256:" followed by exactly 64 lower-case hex
 * characters; anything else is refused, so a digest is never a path.
 * A qn_sha256 is used by one thread at a time.
 */
#ifndef QN_DIGEST_H
#define QN_DIGEST_H

#include <stddef.h>

#include "core/err.h"

#define QN_SHA256_HEX 64

typedef struct qn_sha256 qn_sha256;

/* NULL when out of memory. */
qn_sha256 *qn_sha256_new(void);
void qn_sha256_update(qn_sha256 *h, const void *data, size_t len);
/* Writes 64 hex chars and a NUL into hex; the context is then reset for reuse. */
void qn_sha256_final(qn_sha256 *h, char hex[QN_SHA256_HEX + 1]);
void qn_sha256_free(qn_sha256 *h);

/* One-shot digest of a buffer. */
void qn_sha256_buf(const void *data, size_t len, char hex[QN_SHA256_HEX + 1]);
/* Digest of a file's content, streamed; QN_NOT_FOUND / QN_INTERNAL on I/O errors. */
QN_MUST_CHECK int qn_sha256_file(const char *path, char hex[QN_SHA256_HEX + 1], qn_err *err);

/* True when s is exactly 64 lower-case hex characters. */
int qn_sha256_hex_valid(const char *s, size_t len);
/* Parses "sha256:<hex>" into hex; QN_INVALID_ARGUMENT with a message saying
 * what is wrong (prefix, length, characters) otherwise. */
QN_MUST_CHECK int qn_digest_parse(const char *s, char hex[QN_SHA256_HEX + 1], qn_err *err);

#endif
