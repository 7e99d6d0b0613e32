/*
 * utf8.h - UTF-8 checks for text that came from outside.
 *
 * Every message a service builds from its input ends up in a JSON error
 * body or a log line, and JSON text must be valid UTF-8 (jansson refuses
 * anything else, which used to turn a client's bad byte into a 500). These
 * three functions are what the error paths use: validate, cut on a
 * character boundary, and copy with bad bytes made visible.
 *
 *     if (qn_utf8_check(name, strlen(name)) != strlen(name))
 *         return qn_res_error(res, QN_INVALID_ARGUMENT, "name is not valid UTF-8");
 *
 *     char msg[64];
 *     qn_utf8_escape(msg, sizeof msg, input, input_len);  // "ab\xFFc" -> "ab\\xFFc"
 *
 * Strict UTF-8 (RFC 3629): no overlong forms, no surrogates (U+D800..DFFF),
 * nothing above U+10FFFF. Pure functions; thread-safe.
 */
#ifndef QN_UTF8_H
#define QN_UTF8_H

#include <stddef.h>

/* The length of the longest valid UTF-8 prefix of s[0..len): len when the
 * whole of it is valid, else the offset of the first byte that is not part
 * of a valid character. NUL bytes count as valid (U+0000). */
size_t qn_utf8_check(const char *s, size_t len);

/* 1 when s[0..len) is valid UTF-8, else 0. */
int qn_utf8_valid(const char *s, size_t len);

/* The largest n <= max such that s[0..n) does not end inside a multi-byte
 * character of s[0..len) (max > len is treated as len). Only moves back over
 * continuation bytes of a character that starts before max and would end
 * after it, so a prefix of valid text stays valid. */
size_t qn_utf8_trunc(const char *s, size_t len, size_t max);

/* Copies in[0..len) into out (cap bytes, cap >= 1), NUL-terminated, with
 * every byte that is not part of a valid character written as the four
 * characters \xHH (upper-case hex) and NUL bytes as \x00. The copy is cut
 * at a character or escape boundary when it does not fit. Returns the
 * length written (excluding the NUL). The output is always valid UTF-8. */
size_t qn_utf8_escape(char *out, size_t cap, const char *in, size_t len);

#endif
