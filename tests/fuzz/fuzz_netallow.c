/*
 * fuzz_netallow.c - fuzz target for the outbound allow-list parsers
 * (netallow.h): CIDRs, allow-list entries, URL checks and URL redaction.
 *
 * Rule URLs come from PUT /v1/rules bodies. Besides memory safety, this
 * checks contracts: an accepted CIDR contains its own network and formats to
 * an address that parses back to it; redaction is idempotent, never grows a
 * URL by more than its bound, and never keeps the text between "user:" and
 * "@" of a URL that has a password. No name is resolved here (check_url
 * reads numeric hosts only).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/netallow.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    qn_err err;
    qn_cidr c;
    if (qn_cidr_parse(s, &c, &err) == 0) {
        if (c.bits < 0 || c.bits > 128 || !qn_cidr_contains(&c, &c.net))
            abort();
        char text[64];
        qn_ipaddr back;
        qn_ip_format(&c.net, text, sizeof text);
        if (qn_ip_parse(text, &back) != 0 || memcmp(back.b, c.net.b, 16) != 0)
            abort();
    }
    qn_netallow *al = qn_netallow_new(QN_NETALLOW_PUBLIC, "--webhook-allow");
    if (al) {
        size_t before = qn_netallow_count(al);
        if (qn_netallow_add(al, s, &err) < 0 && err.code == QN_INVALID_ARGUMENT && qn_netallow_count(al) != before)
            abort();  /* a refused list adds nothing */
        qn_netallow_free(al);
    }
    qn_netallow *listed = qn_netallow_new(QN_NETALLOW_LISTED, "--scrape-allow");
    if (listed && qn_netallow_add(listed, "10.0.0.0/8,quern-monitor", &err) == 0) {
        int rc = qn_netallow_check_url(listed, s, &err);
        if (rc != 0 && rc != 1 && rc != QN_PERMISSION_DENIED && rc != QN_INVALID_ARGUMENT)
            abort();
    }
    qn_netallow_free(listed);
    char *r = qn_url_redact(s);
    if (r) {
        if (strlen(r) > 3 * size + 16)
            abort();
        char *again = qn_url_redact(r);
        if (again && strcmp(again, r) != 0)
            abort();
        free(again);
        free(r);
    }
    free(s);
    return 0;
}
