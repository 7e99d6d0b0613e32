/*
 * netallow.c - outbound allow-lists: CIDR parsing and matching, the table of
 * special-purpose ranges, resolve + check + pin for libcurl, URL redaction.
 *
 * See netallow.h for the contract. Every address is kept in its 16-byte IPv6
 * form (IPv4 as ::ffff:a.b.c.d), so one prefix comparison serves both
 * families and a mapped address can never slip past an IPv4 rule.
 */
#include "core/netallow.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PIN_MAX 16

struct qn_netallow {
    qn_netallow_mode mode;
    char *flag;
    qn_cidr *cidrs;
    size_t ncidrs;
    char **names;  /* lowercase, no trailing dot */
    size_t nnames;
};

struct qn_netpin {
    struct curl_slist *resolve;
    qn_ipaddr addrs[PIN_MAX];
    size_t n;
    char text[PIN_MAX * 48];
};

/* ---- addresses and networks ---------------------------------------------- */

static const uint8_t v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void from_v4(const uint8_t v4[4], qn_ipaddr *out)
{
    memcpy(out->b, v4_prefix, 12);
    memcpy(out->b + 12, v4, 4);
}

int qn_ip_is_v4(const qn_ipaddr *a)
{
    return memcmp(a->b, v4_prefix, 12) == 0;
}

int qn_ip_parse(const char *s, qn_ipaddr *out)
{
    uint8_t v4[4];
    if (!s)
        return QN_INVALID_ARGUMENT;
    if (inet_pton(AF_INET, s, v4) == 1) {
        from_v4(v4, out);
        return 0;
    }
    if (inet_pton(AF_INET6, s, out->b) == 1)
        return 0;
    return QN_INVALID_ARGUMENT;
}

int qn_ip_from_sockaddr(const struct sockaddr *sa, qn_ipaddr *out)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        from_v4((const uint8_t *)&in->sin_addr, out);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(out->b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return 0;
    }
    return QN_INVALID_ARGUMENT;
}

void qn_ip_format(const qn_ipaddr *a, char *out, size_t cap)
{
    char tmp[INET6_ADDRSTRLEN] = "?";
    if (qn_ip_is_v4(a))
        inet_ntop(AF_INET, a->b + 12, tmp, sizeof tmp);
    else
        inet_ntop(AF_INET6, a->b, tmp, sizeof tmp);
    snprintf(out, cap, "%s", tmp);
}

int qn_cidr_contains(const qn_cidr *c, const qn_ipaddr *a)
{
    int full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->net.b, a->b, (size_t)full) != 0)
        return 0;
    if (!rest)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (c->net.b[full] & mask) == (a->b[full] & mask);
}

int qn_cidr_parse(const char *s, qn_cidr *out, qn_err *err)
{
    char addr[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t al = slash ? (size_t)(slash - s) : strlen(s);
    if (al == 0 || al >= sizeof addr)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "\"%.80s\" is not an IP address or CIDR", s);
    memcpy(addr, s, al);
    addr[al] = 0;
    uint8_t v4[4];
    int is_v4 = inet_pton(AF_INET, addr, v4) == 1;
    if (is_v4)
        from_v4(v4, &out->net);
    else if (inet_pton(AF_INET6, addr, out->net.b) != 1)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "\"%.80s\" is not an IP address or CIDR (IPv4 as a.b.c.d[/n], IPv6 as x::y[/n], no zone)", s);
    int max = is_v4 ? 32 : 128, bits = max;
    if (slash) {
        const char *p = slash + 1;
        size_t n = strlen(p);
        if (n == 0 || n > 3 || (n > 1 && p[0] == '0'))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "\"%.80s\": the prefix length after / must be 0..%d", s, max);
        bits = 0;
        for (size_t i = 0; i < n; i++) {
            if (!isdigit((unsigned char)p[i]))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "\"%.80s\": the prefix length after / must be 0..%d", s,
                                  max);
            bits = bits * 10 + (p[i] - '0');
        }
        if (bits > max)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "\"%.80s\": the prefix length after / must be 0..%d", s, max);
    }
    out->bits = is_v4 ? bits + 96 : bits;
    /* host bits set are most likely a typo for another network: say so */
    qn_cidr masked = *out;
    for (int i = out->bits; i < 128; i++)
        masked.net.b[i / 8] &= (uint8_t) ~(0x80 >> (i % 8));
    if (memcmp(masked.net.b, out->net.b, 16) != 0) {
        char net[INET6_ADDRSTRLEN];
        qn_ip_format(&masked.net, net, sizeof net);
        return qn_err_set(err, QN_INVALID_ARGUMENT, "\"%.80s\" has bits set past its /%d prefix (the network is %s/%d)",
                          s, bits, net, bits);
    }
    return 0;
}

typedef struct special {
    const char *cidr, *what;
} special;

/* Ranges refused under QN_NETALLOW_PUBLIC unless listed (IANA special-purpose
 * registries, RFC 6890 and successors). Order matters only for the message. */
static const special specials[] = {
    {"0.0.0.0/8", "an unspecified (\"this network\") address (0.0.0.0/8)"},
    {"10.0.0.0/8", "a private address (10.0.0.0/8)"},
    {"100.64.0.0/10", "a shared carrier-grade NAT address (100.64.0.0/10)"},
    {"127.0.0.0/8", "a loopback address (127.0.0.0/8)"},
    {"169.254.0.0/16", "a link-local address (169.254.0.0/16, where cloud metadata services answer)"},
    {"172.16.0.0/12", "a private address (172.16.0.0/12)"},
    {"192.0.0.0/24", "an IETF protocol address (192.0.0.0/24)"},
    {"192.168.0.0/16", "a private address (192.168.0.0/16)"},
    {"198.18.0.0/15", "a benchmarking address (198.18.0.0/15)"},
    {"224.0.0.0/4", "a multicast address (224.0.0.0/4)"},
    {"240.0.0.0/4", "a reserved or broadcast address (240.0.0.0/4)"},
    {"::/128", "the unspecified address (::)"},
    {"::1/128", "the loopback address (::1)"},
    {"::/96", "a deprecated IPv4-compatible address (::/96)"},
    {"100::/64", "a discard-only address (100::/64)"},
    {"fc00::/7", "a unique local (private) address (fc00::/7)"},
    {"fe80::/10", "a link-local address (fe80::/10)"},
    {"fec0::/10", "a site-local address (fec0::/10)"},
    {"ff00::/8", "a multicast address (ff00::/8)"},
};

/* The IPv4 address carried by a NAT64 (64:ff9b::/96) or 6to4 (2002::/16)
 * address, mapped; otherwise a itself. */
static qn_ipaddr effective(const qn_ipaddr *a)
{
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    qn_ipaddr e = *a;
    if (memcmp(a->b, nat64, 12) == 0)
        from_v4(a->b + 12, &e);
    else if (a->b[0] == 0x20 && a->b[1] == 0x02)
        from_v4(a->b + 2, &e);
    return e;
}

const char *qn_ip_special(const qn_ipaddr *a)
{
    qn_ipaddr e = effective(a);
    for (size_t i = 0; i < sizeof specials / sizeof *specials; i++) {
        qn_cidr c;
        if (qn_cidr_parse(specials[i].cidr, &c, NULL) < 0)
            continue;  /* the table is constant and parses: see test_netallow */
        if (qn_cidr_contains(&c, &e))
            return specials[i].what;
    }
    return NULL;
}

/* ---- allow-lists ---------------------------------------------------------- */

qn_netallow *qn_netallow_new(qn_netallow_mode mode, const char *flag)
{
    qn_netallow *al = calloc(1, sizeof *al);
    if (!al || !(al->flag = strdup(flag ? flag : "the allow-list"))) {
        free(al);
        return NULL;
    }
    al->mode = mode;
    return al;
}

void qn_netallow_free(qn_netallow *al)
{
    if (!al)
        return;
    for (size_t i = 0; i < al->nnames; i++)
        free(al->names[i]);
    free(al->names);
    free(al->cidrs);
    free(al->flag);
    free(al);
}

size_t qn_netallow_count(const qn_netallow *al)
{
    return al->ncidrs + al->nnames;
}

/* Lowercase copy of a host name without its trailing dot into out[cap]; -1
 * when it is not a plausible DNS name (letters, digits, '-', '.', '_'; labels
 * of 1..63 bytes; at most 253 bytes). */
static int host_norm(const char *s, size_t n, char *out, size_t cap)
{
    if (n && s[n - 1] == '.')
        n--;
    if (n == 0 || n > 253 || n >= cap)
        return -1;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0)
                return -1;
            label = 0;
        } else if (isalnum(c) || c == '-' || c == '_') {
            if (++label > 63)
                return -1;
        } else {
            return -1;
        }
        out[i] = (char)tolower(c);
    }
    if (label == 0)
        return -1;
    out[n] = 0;
    return 0;
}

int qn_netallow_add(qn_netallow *al, const char *list, qn_err *err)
{
    if (!list)
        return 0;
    /* two passes: validate and count, then add, so a bad list adds nothing */
    size_t ncidr = 0, nname = 0;
    qn_cidr *cidrs = NULL;
    char **names = NULL;
    int rc = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            cidrs = realloc(al->cidrs, (al->ncidrs + ncidr + 1) * sizeof *cidrs);
            if (cidrs)
                al->cidrs = cidrs;
            names = realloc(al->names, (al->nnames + nname + 1) * sizeof *names);
            if (names)
                al->names = names;
            if (!cidrs || !names)
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        }
        for (const char *p = list; *p;) {
            const char *end = strchr(p, ',');
            size_t n = end ? (size_t)(end - p) : strlen(p);
            const char *next = end ? end + 1 : p + n;
            while (n && isspace((unsigned char)*p))
                p++, n--;
            while (n && isspace((unsigned char)p[n - 1]))
                n--;
            if (n == 0) {
                p = next;
                continue;
            }
            char entry[300], name[256];
            if (n >= sizeof entry) {
                return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: entry \"%.40s...\" is too long", al->flag, p);
            }
            memcpy(entry, p, n);
            entry[n] = 0;
            qn_cidr c;
            qn_err e;
            if (strstr(entry, "://"))
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "%s: \"%s\" is not a host name, IP address or CIDR but a URL: give only its host",
                                  al->flag, entry);
            /* an entry that looks numeric (or has '/' or ':') must be an address or CIDR */
            int numeric = strchr(entry, '/') || strchr(entry, ':') || strspn(entry, "0123456789.") == n;
            if (numeric) {
                if (qn_cidr_parse(entry, &c, &e) < 0)
                    return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: %s", al->flag, e.msg);
                if (pass == 1)
                    al->cidrs[al->ncidrs++] = c;
                else
                    ncidr++;
            } else if (host_norm(entry, n, name, sizeof name) < 0) {
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "%s: \"%s\" is not a host name, IP address or CIDR (give entries like "
                                  "hooks.example.com, 10.0.0.0/8, fd00::/8, separated by commas)",
                                  al->flag, entry);
            } else if (pass == 1) {
                if (!(al->names[al->nnames] = strdup(name)))
                    return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
                al->nnames++;
            } else {
                nname++;
            }
            p = next;
        }
    }
    return rc;
}

int qn_netallow_has_name(const qn_netallow *al, const char *host)
{
    char name[256];
    if (host_norm(host, strlen(host), name, sizeof name) < 0)
        return 0;
    for (size_t i = 0; i < al->nnames; i++)
        if (strcmp(al->names[i], name) == 0)
            return 1;
    return 0;
}

int qn_netallow_check_addr(const qn_netallow *al, const char *host, const qn_ipaddr *a, qn_err *err)
{
    qn_ipaddr e = effective(a);
    for (size_t i = 0; i < al->ncidrs; i++)
        if (qn_cidr_contains(&al->cidrs[i], a) || qn_cidr_contains(&al->cidrs[i], &e))
            return 0;
    char ip[INET6_ADDRSTRLEN];
    qn_ip_format(a, ip, sizeof ip);
    int literal = host && qn_ip_parse(host, &(qn_ipaddr){{0}}) == 0;
    char who[600];
    if (!host || literal)
        snprintf(who, sizeof who, "%s", ip);
    else
        snprintf(who, sizeof who, "%.255s (resolving to %s)", host, ip);
    if (al->mode == QN_NETALLOW_LISTED)
        return qn_err_set(err, QN_PERMISSION_DENIED, "%s is not in %s: add the host name or an address range to %s",
                          who, al->flag, al->flag);
    const char *why = qn_ip_special(a);
    if (why)
        return qn_err_set(err, QN_PERMISSION_DENIED, "%s is %s, refused unless listed in %s", who, why, al->flag);
    return 0;
}

/* ---- URLs ------------------------------------------------------------------ */

int qn_url_parts(const char *url, char *host, size_t hcap, int *port, char *path, size_t pcap, int *has_query,
                 qn_err *err)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *h = NULL, *po = NULL, *pa = NULL, *q = NULL, *zone = NULL;
    int rc = 0;
    if (!u)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "not a valid URL (%s)", curl_url_strerror(uc));
        goto out;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "the URL must start with http:// or https://");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK || !*h) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "the URL has no host");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_ZONEID, &zone, 0) == CURLUE_OK && zone && *zone) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "the URL's host has an IPv6 zone (%%%.40s), which is not allowed", zone);
        goto out;
    }
    size_t hl = strlen(h);
    const char *hs = h;
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']')
        hs = h + 1, hl -= 2;
    if (hl >= hcap) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "the URL's host is longer than %zu bytes", hcap - 1);
        goto out;
    }
    memcpy(host, hs, hl);
    host[hl] = 0;
    if (port) {
        if (curl_url_get(u, CURLUPART_PORT, &po, CURLU_DEFAULT_PORT) != CURLUE_OK) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "the URL has no usable port");
            goto out;
        }
        *port = atoi(po);
    }
    if (path) {
        if (curl_url_get(u, CURLUPART_PATH, &pa, 0) != CURLUE_OK) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "the URL has no path");
            goto out;
        }
        snprintf(path, pcap, "%s", *pa ? pa : "/");
    }
    if (has_query)
        *has_query = curl_url_get(u, CURLUPART_QUERY, &q, 0) == CURLUE_OK && q && *q;
out:
    curl_free(scheme);
    curl_free(h);
    curl_free(po);
    curl_free(pa);
    curl_free(q);
    curl_free(zone);
    curl_url_cleanup(u);
    return rc;
}

/* The address a numeric host stands for, the way the resolver reads it (so
 * "127.1" and "0x7f.0.0.1" are 127.0.0.1 here too); -1 for a name. */
static int numeric_host(const char *host, qn_ipaddr *out)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return -1;
    int rc = qn_ip_from_sockaddr(res->ai_addr, out);
    freeaddrinfo(res);
    return rc < 0 ? -1 : 0;
}

int qn_netallow_check_url(const qn_netallow *al, const char *url, qn_err *err)
{
    char host[256];
    int rc = qn_url_parts(url, host, sizeof host, NULL, NULL, 0, NULL, err);
    if (rc < 0)
        return rc;
    qn_ipaddr a;
    if (numeric_host(host, &a) == 0)
        return qn_netallow_check_addr(al, host, &a, err);
    if (qn_netallow_has_name(al, host))
        return 0;
    if (al->mode == QN_NETALLOW_LISTED && al->ncidrs == 0)
        return qn_err_set(err, QN_PERMISSION_DENIED, "host %.255s is not in %s: add it to %s", host, al->flag,
                          al->flag);
    return 1;
}

/* ---- resolve, check, pin ---------------------------------------------------- */

static curl_socket_t open_checked(void *ud, curlsocktype purpose, struct curl_sockaddr *sa)
{
    const qn_netpin *p = ud;
    qn_ipaddr a;
    if (purpose != CURLSOCKTYPE_IPCXN || qn_ip_from_sockaddr(&sa->addr, &a) < 0)
        return CURL_SOCKET_BAD;
    for (size_t i = 0; i < p->n; i++)
        if (memcmp(p->addrs[i].b, a.b, 16) == 0)
            return socket(sa->family, sa->socktype | SOCK_CLOEXEC, sa->protocol);
    return CURL_SOCKET_BAD;
}

static void pin_add(qn_netpin *p, const qn_ipaddr *a)
{
    for (size_t i = 0; i < p->n; i++)
        if (memcmp(p->addrs[i].b, a->b, 16) == 0)
            return;
    if (p->n < PIN_MAX)
        p->addrs[p->n++] = *a;
}

int qn_netallow_pin(const qn_netallow *al, CURL *h, const char *url, qn_netpin **out, qn_err *err)
{
    char host[256];
    int port = 0, rc;
    struct addrinfo *res = NULL;
    *out = NULL;
    if ((rc = qn_url_parts(url, host, sizeof host, &port, NULL, 0, NULL, err)) < 0)
        return rc;
    qn_netpin *p = calloc(1, sizeof *p);
    if (!p)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    qn_ipaddr a;
    int literal = numeric_host(host, &a) == 0;
    if (literal) {
        if ((rc = qn_netallow_check_addr(al, host, &a, err)) < 0)
            goto out;
        pin_add(p, &a);
    } else {
        int listed = qn_netallow_has_name(al, host);
        char portstr[16];
        snprintf(portstr, sizeof portstr, "%d", port);
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        int gai = getaddrinfo(host, portstr, &hints, &res);
        if (gai != 0 || !res) {
            rc = qn_err_set(err, QN_UNAVAILABLE, "cannot resolve %.255s: %s", host,
                            gai == EAI_SYSTEM ? "system error" : gai_strerror(gai));
            goto out;
        }
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
            if (qn_ip_from_sockaddr(ai->ai_addr, &a) < 0)
                continue;
            if (!listed && (rc = qn_netallow_check_addr(al, host, &a, err)) < 0)
                goto out;
            pin_add(p, &a);
        }
        if (p->n == 0) {
            rc = qn_err_set(err, QN_UNAVAILABLE, "%.255s has no IPv4 or IPv6 address", host);
            goto out;
        }
    }
    /* "host:port:addr,[v6addr]" for CURLOPT_RESOLVE; "addr,[v6]" for logs */
    char *t = p->text;
    size_t left = sizeof p->text;
    for (size_t i = 0; i < p->n; i++) {
        char ip[INET6_ADDRSTRLEN];
        qn_ip_format(&p->addrs[i], ip, sizeof ip);
        int k = snprintf(t, left, "%s%s%s%s", i ? "," : "", qn_ip_is_v4(&p->addrs[i]) ? "" : "[", ip,
                         qn_ip_is_v4(&p->addrs[i]) ? "" : "]");
        if (k < 0 || (size_t)k >= left)
            break;
        t += k;
        left -= (size_t)k;
    }
    if (!literal) {
        char *entry = NULL;
        if (asprintf(&entry, "%s:%d:%s", host, port, p->text) < 0 ||
            !(p->resolve = curl_slist_append(NULL, entry))) {
            free(entry);
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        free(entry);
        curl_easy_setopt(h, CURLOPT_RESOLVE, p->resolve);
    }
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_checked);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, p);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    rc = 0;
out:
    if (res)
        freeaddrinfo(res);
    if (rc < 0)
        qn_netpin_free(p);
    else
        *out = p;
    return rc;
}

const char *qn_netpin_addrs(const qn_netpin *p)
{
    return p ? p->text : "";
}

void qn_netpin_free(qn_netpin *p)
{
    if (!p)
        return;
    curl_slist_free_all(p->resolve);
    free(p);
}

/* ---- redaction ---------------------------------------------------------------- */

static int secret_name(const char *s, size_t n)
{
    static const char *const words[] = {"token", "secret", "password", "passwd", "key", "sig", "auth", "credential"};
    char low[64];
    if (n >= sizeof low)
        n = sizeof low - 1;
    for (size_t i = 0; i < n; i++)
        low[i] = (char)tolower((unsigned char)s[i]);
    low[n] = 0;
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (strstr(low, words[i]))
            return 1;
    return 0;
}

char *qn_url_redact(const char *url)
{
    if (!url)
        return NULL;
    size_t len = strlen(url);
    /* each redacted part grows by at most 3 bytes and takes at least 2: 3x
     * plus slack is always enough */
    char *out = malloc(len * 3 + 16);
    if (!out)
        return NULL;
    size_t o = 0;
    const char *p = url, *end = url + len;
    const char *sep = strstr(url, "://");
    if (sep) {
        const char *auth = sep + 3;
        size_t alen = strcspn(auth, "/?#");
        const char *at = NULL;
        for (const char *q = auth; q < auth + alen; q++)
            if (*q == '@')
                at = q;
        memcpy(out, url, (size_t)(auth - url));
        o = (size_t)(auth - url);
        p = auth;
        if (at) {
            const char *colon = memchr(auth, ':', (size_t)(at - auth));
            if (colon) {
                memcpy(out + o, auth, (size_t)(colon - auth) + 1);
                o += (size_t)(colon - auth) + 1;
            }
            memcpy(out + o, "***", 3);
            o += 3;
            p = at;
        }
    }
    const char *qm = strchr(p, '?');
    const char *frag = strchr(p, '#');
    if (qm && frag && frag < qm)
        qm = NULL;
    if (!qm) {
        memcpy(out + o, p, (size_t)(end - p));
        o += (size_t)(end - p);
        out[o] = 0;
        return out;
    }
    memcpy(out + o, p, (size_t)(qm - p) + 1);
    o += (size_t)(qm - p) + 1;
    const char *qend = frag && frag > qm ? frag : end;
    for (const char *q = qm + 1; q < qend;) {
        size_t n = strcspn(q, "&#");
        if (q + n > qend)
            n = (size_t)(qend - q);
        const char *eq = memchr(q, '=', n);
        if (eq && secret_name(q, (size_t)(eq - q))) {
            memcpy(out + o, q, (size_t)(eq - q) + 1);
            o += (size_t)(eq - q) + 1;
            memcpy(out + o, "***", 3);
            o += 3;
        } else {
            memcpy(out + o, q, n);
            o += n;
        }
        q += n;
        if (q < qend && *q == '&')
            out[o++] = *q++;
    }
    memcpy(out + o, qend, (size_t)(end - qend));
    o += (size_t)(end - qend);
    out[o] = 0;
    return out;
}
