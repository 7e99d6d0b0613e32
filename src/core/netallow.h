/*
 * netallow.h - which outbound addresses a service may connect to, and
 * connecting only to the addresses that were checked.
 *
 * A service that connects where a user tells it (alert's webhooks and metric
 * scrapes, later ingest's HTTP sources) is a server-side request forgery
 * waiting to happen: a URL naming 127.0.0.1, 169.254.169.254 (a cloud's
 * metadata service) or a private address reaches what only the service itself
 * should reach. A qn_netallow is an allow-list of host names and CIDRs under
 * one of two modes:
 *
 *   QN_NETALLOW_PUBLIC  listed entries, plus any public address; loopback,
 *                       link-local, private, shared, unspecified, multicast
 *                       and reserved addresses only when listed (webhooks);
 *   QN_NETALLOW_LISTED  listed entries only (metric scrapes).
 *
 * A listed host name allows that name whatever it resolves to (the operator
 * trusts that name); every other name is resolved and *every* address it
 * resolves to must be allowed. IPv4-mapped (::ffff:a.b.c.d), NAT64
 * (64:ff9b::/96) and 6to4 (2002::/16) addresses are judged by the IPv4
 * address they carry. The check runs after resolution and qn_netallow_pin
 * makes libcurl connect only to the addresses that passed (CURLOPT_RESOLVE,
 * plus an open-socket callback that refuses any other address, so a DNS
 * answer that changes between the check and the connection gains nothing),
 * with redirects and proxies off.
 *
 *     qn_err err;
 *     qn_netallow *al = qn_netallow_new(QN_NETALLOW_PUBLIC, "--webhook-allow");
 *     if (!al || qn_netallow_add(al, "10.1.2.0/24,hooks.internal", &err) < 0) ...
 *     // when the URL is configured: literal addresses and listed names
 *     if (qn_netallow_check_url(al, url, &err) < 0) -> 400 with err.msg
 *     // when connecting
 *     CURL *h = curl_easy_init();
 *     qn_netpin *pin = NULL;
 *     if (qn_netallow_pin(al, h, url, &pin, &err) < 0)
 *         ... QN_PERMISSION_DENIED: refused for good (err.msg says why and
 *             which flag allows it); QN_UNAVAILABLE: resolution failed
 *     curl_easy_setopt(h, CURLOPT_URL, url); ... curl_easy_perform(h);
 *     curl_easy_cleanup(h);
 *     qn_netpin_free(pin);             // after the handle is cleaned up
 *     qn_netallow_free(al);
 *
 * qn_url_redact gives the form of a URL that may be shown or logged: the
 * password (or a user part alone, which is often a token) and the values of
 * query parameters named like secrets become "***".
 *
 * A qn_netallow is immutable once filled: any number of threads may check
 * and pin against it at once.
 */
#ifndef QN_NETALLOW_H
#define QN_NETALLOW_H

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/err.h"

/* An IP address in its 16-byte IPv6 form; IPv4 is ::ffff:a.b.c.d. */
typedef struct qn_ipaddr {
    uint8_t b[16];
} qn_ipaddr;

/* A network: the first `bits` bits of net (over the 16-byte form, so an IPv4
 * /8 is bits 104). */
typedef struct qn_cidr {
    qn_ipaddr net;
    int bits;
} qn_cidr;

/* Parses a numeric address (IPv4 dotted quad or IPv6, no zone, no brackets).
 * 0, or QN_INVALID_ARGUMENT (no message: the caller knows the context). */
int qn_ip_parse(const char *s, qn_ipaddr *out);

/* 0 and *out for an AF_INET or AF_INET6 socket address; QN_INVALID_ARGUMENT
 * for any other family. */
int qn_ip_from_sockaddr(const struct sockaddr *sa, qn_ipaddr *out);

/* 1 when a is an IPv4 address (::ffff:0:0/96). */
int qn_ip_is_v4(const qn_ipaddr *a);

/* Writes a as text into out (IPv4 as a dotted quad); out needs 46 bytes. */
void qn_ip_format(const qn_ipaddr *a, char *out, size_t cap);

/* Parses "A.B.C.D/N" (N 0..32), "X::Y/N" (N 0..128) or a bare address (/32,
 * /128). Bits set past the prefix ("10.0.0.1/8") are refused, as are zones,
 * brackets, spaces, leading zeros in N and anything else: QN_INVALID_ARGUMENT
 * naming s. */
int qn_cidr_parse(const char *s, qn_cidr *out, qn_err *err);

/* 1 when c contains a (an IPv4 a is also matched by a ::ffff:... network). */
int qn_cidr_contains(const qn_cidr *c, const qn_ipaddr *a);

/* The special-purpose range a falls in, as "a loopback address
 * (127.0.0.0/8)", or NULL for an ordinary public address. A mapped, NAT64 or
 * 6to4 address is judged by the IPv4 address inside it. */
const char *qn_ip_special(const qn_ipaddr *a);

typedef enum qn_netallow_mode {
    QN_NETALLOW_PUBLIC,  /* listed entries and public addresses */
    QN_NETALLOW_LISTED,  /* listed entries only */
} qn_netallow_mode;

typedef struct qn_netallow qn_netallow;

/* A new, empty allow-list. flag ("--webhook-allow") is named in every refusal
 * so the reader knows what to set; it is copied. NULL when out of memory. */
qn_netallow *qn_netallow_new(qn_netallow_mode mode, const char *flag);

/* Adds the entries of a comma-separated list (NULL or "" adds nothing): host
 * names (letters, digits, '-', '.'; matched case-insensitively, a trailing
 * dot ignored), IPv4/IPv6 addresses and CIDRs. Spaces around entries and empty
 * entries are ignored. 0, or QN_INVALID_ARGUMENT naming the flag and the bad
 * entry (nothing of the list is added then). */
int qn_netallow_add(qn_netallow *al, const char *list, qn_err *err);

/* Number of entries (host names and CIDRs). */
size_t qn_netallow_count(const qn_netallow *al);

/* 1 when host is listed by name. */
int qn_netallow_has_name(const qn_netallow *al, const char *host);

/* Whether a connection for host (the name in the URL, for messages) to
 * address a is allowed: 0, or QN_PERMISSION_DENIED with a sentence naming
 * the host, the address, why, and the flag to set. */
int qn_netallow_check_addr(const qn_netallow *al, const char *host, const qn_ipaddr *a, qn_err *err);

/* Checks an http(s) URL without resolving it: 0 when it is allowed whatever
 * its name resolves to (a listed name or an allowed literal address), 1 when
 * only the addresses at connection time can tell (a name not listed, under
 * QN_NETALLOW_PUBLIC or with CIDRs listed), QN_PERMISSION_DENIED when it can
 * never be allowed, QN_INVALID_ARGUMENT when it is not an http(s) URL with a
 * host. Messages name the host, never the credentials of the URL. */
int qn_netallow_check_url(const qn_netallow *al, const char *url, qn_err *err);

typedef struct qn_netpin qn_netpin;

/* Resolves the host of url (getaddrinfo), checks every address it gives, and
 * on success sets on h: CURLOPT_RESOLVE pinning the name to those addresses,
 * an open-socket callback that refuses any address but those, no redirects
 * (CURLOPT_FOLLOWLOCATION 0), no proxy, http and https only. *out then owns
 * what h points to: free it with qn_netpin_free after curl_easy_cleanup(h).
 * The caller still sets CURLOPT_URL (to the same url) and the rest.
 * Errors: QN_PERMISSION_DENIED (an address is not allowed: do not retry),
 * QN_UNAVAILABLE (the name does not resolve now), QN_INVALID_ARGUMENT (not an
 * http(s) URL), QN_RESOURCE_EXHAUSTED. Thread-safe. */
int qn_netallow_pin(const qn_netallow *al, CURL *h, const char *url, qn_netpin **out, qn_err *err);

/* The addresses url was pinned to, as "127.0.0.1,[::1]" (for logs). */
const char *qn_netpin_addrs(const qn_netpin *p);

void qn_netpin_free(qn_netpin *p);

void qn_netallow_free(qn_netallow *al);

/* A copy of url that is safe to show: "https://user:***@host/p?token=***".
 * Userinfo with a password keeps the user; userinfo alone becomes "***";
 * values of query parameters whose name contains token, secret, password,
 * passwd, key, sig, auth or credential become "***". Anything else is kept.
 * Malloc'ed (the caller frees); NULL when out of memory; url NULL gives NULL. */
char *qn_url_redact(const char *url);

/* Splits an http(s) URL: host (brackets of an IPv6 literal removed, into
 * host[hcap]), port (the scheme's default when absent) and path (into
 * path[pcap], "/" when empty) and whether it has a query. 0, or
 * QN_INVALID_ARGUMENT naming what is wrong (never echoing credentials). */
int qn_url_parts(const char *url, char *host, size_t hcap, int *port, char *path, size_t pcap, int *has_query,
                 qn_err *err);

#endif
