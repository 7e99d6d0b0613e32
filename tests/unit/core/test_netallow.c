/* test_netallow.c - outbound allow-lists (core/netallow.h): CIDR parsing edge
 * cases, matching across families (IPv4-mapped, NAT64, 6to4), the
 * special-purpose ranges, list parsing errors, URL checks, resolve + pin
 * against the real resolver ("localhost"), and URL redaction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "core/netallow.h"

static int contains(const char *cidr, const char *ip)
{
    qn_cidr c;
    qn_ipaddr a;
    qn_err err;
    assert_int_equal(qn_cidr_parse(cidr, &c, &err), 0);
    assert_int_equal(qn_ip_parse(ip, &a), 0);
    return qn_cidr_contains(&c, &a);
}

static void test_cidr_parse(void **state)
{
    (void)state;
    qn_cidr c;
    qn_err err;
    const char *good[] = {"10.0.0.0/8", "0.0.0.0/0", "::/0", "1.2.3.4", "1.2.3.4/32", "::1", "fe80::/10",
                          "2001:db8::/32", "::ffff:10.0.0.0/104", "192.168.0.0/16", "255.255.255.255/32"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        qn_err_clear(&err);
        assert_int_equal(qn_cidr_parse(good[i], &c, &err), 0);
    }
    assert_int_equal(qn_cidr_parse("10.0.0.0/8", &c, &err), 0);
    assert_int_equal(c.bits, 104);  /* 96 + 8 over the 16-byte form */
    assert_int_equal(qn_cidr_parse("fe80::/10", &c, &err), 0);
    assert_int_equal(c.bits, 10);
    struct {
        const char *in, *needle;
    } bad[] = {
        {"", "not an IP address"},
        {"/8", "not an IP address"},
        {"10.0.0.0/", "prefix length"},
        {"10.0.0.0/33", "0..32"},
        {"::/129", "0..128"},
        {"10.0.0.0/-1", "prefix length"},
        {"10.0.0.0/08", "prefix length"},
        {"10.0.0.0/8x", "prefix length"},
        {"10.0.0.0/1000", "prefix length"},
        {"10.0.0.1/8", "the network is 10.0.0.0/8"},
        {"fe80::1/10", "the network is fe80::/10"},
        {"10.0.0", "not an IP address"},
        {"10.0.0.256", "not an IP address"},
        {"010.0.0.1", "not an IP address"},  /* octal-looking octets are ambiguous: refused */
        {"0x7f.0.0.1", "not an IP address"},
        {"fe80::1%eth0", "no zone"},
        {"[::1]", "not an IP address"},
        {" 10.0.0.0/8", "not an IP address"},
        {"1.2.3.4:80", "not an IP address"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        qn_err_clear(&err);
        assert_int_equal(qn_cidr_parse(bad[i].in, &c, &err), QN_INVALID_ARGUMENT);
        if (!strstr(err.msg, bad[i].needle))
            fail_msg("%s: got \"%s\", want \"%s\"", bad[i].in, err.msg, bad[i].needle);
    }
}

static void test_cidr_contains(void **state)
{
    (void)state;
    assert_true(contains("10.0.0.0/8", "10.255.1.2"));
    assert_false(contains("10.0.0.0/8", "11.0.0.0"));
    assert_true(contains("172.16.0.0/12", "172.31.255.255"));
    assert_false(contains("172.16.0.0/12", "172.32.0.0"));
    assert_true(contains("0.0.0.0/0", "8.8.8.8"));
    assert_false(contains("0.0.0.0/0", "2001:db8::1"));  /* an IPv4 network holds no IPv6 address */
    assert_true(contains("::/0", "8.8.8.8"));            /* ::/0 is every address */
    assert_true(contains("1.2.3.4", "1.2.3.4"));
    assert_false(contains("1.2.3.4", "1.2.3.5"));
    /* an IPv4-mapped IPv6 address is the IPv4 address, both ways */
    assert_true(contains("127.0.0.0/8", "::ffff:127.0.0.1"));
    assert_true(contains("::ffff:127.0.0.0/104", "127.0.0.1"));
    assert_true(contains("fe80::/10", "febf::1"));
    assert_false(contains("fe80::/10", "fec0::1"));
    assert_true(contains("fc00::/7", "fd12:3456::1"));
}

static void test_special_ranges(void **state)
{
    (void)state;
    struct {
        const char *ip, *needle;
    } refused[] = {
        {"127.0.0.1", "loopback"}, {"127.255.255.254", "loopback"}, {"::1", "loopback"},
        {"::ffff:127.0.0.1", "loopback"}, {"169.254.169.254", "link-local"}, {"::ffff:169.254.169.254", "link-local"},
        {"fe80::1", "link-local"}, {"10.1.2.3", "private"}, {"172.20.0.1", "private"}, {"192.168.1.1", "private"},
        {"fd00::1", "unique local"}, {"0.0.0.0", "unspecified"}, {"0.1.2.3", "unspecified"}, {"::", "unspecified"},
        {"224.0.0.1", "multicast"}, {"ff02::1", "multicast"}, {"255.255.255.255", "broadcast"},
        {"100.64.0.1", "carrier-grade"}, {"::127.0.0.1", "IPv4-compatible"},
        {"64:ff9b::7f00:1", "loopback"},    /* NAT64 of 127.0.0.1 */
        {"2002:a9fe:a9fe::1", "link-local"}, /* 6to4 of 169.254.169.254 */
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        qn_ipaddr a;
        assert_int_equal(qn_ip_parse(refused[i].ip, &a), 0);
        const char *why = qn_ip_special(&a);
        if (!why || !strstr(why, refused[i].needle))
            fail_msg("%s: got %s, want %s", refused[i].ip, why ? why : "(public)", refused[i].needle);
    }
    const char *public[] = {"8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "172.32.0.1", "64:ff9b::808:808",
                            "169.255.0.1", "11.0.0.1"};
    for (size_t i = 0; i < sizeof public / sizeof *public; i++) {
        qn_ipaddr a;
        assert_int_equal(qn_ip_parse(public[i], &a), 0);
        if (qn_ip_special(&a))
            fail_msg("%s is public, got %s", public[i], qn_ip_special(&a));
    }
}

static void test_list_parse_and_check(void **state)
{
    (void)state;
    qn_err err;
    qn_netallow *al = qn_netallow_new(QN_NETALLOW_PUBLIC, "--webhook-allow");
    assert_non_null(al);
    assert_int_equal(qn_netallow_add(al, NULL, &err), 0);
    assert_int_equal(qn_netallow_add(al, "", &err), 0);
    assert_int_equal(qn_netallow_count(al), 0);
    assert_int_equal(qn_netallow_add(al, " 127.0.0.1 , Hooks.Internal.,,fd00::/8,", &err), 0);
    assert_int_equal(qn_netallow_count(al), 3);
    assert_true(qn_netallow_has_name(al, "hooks.internal"));
    assert_true(qn_netallow_has_name(al, "HOOKS.internal."));
    assert_false(qn_netallow_has_name(al, "internal"));
    /* a bad entry names the flag and the entry, and adds nothing of its list */
    struct {
        const char *list, *needle;
    } bad[] = {
        {"8.8.8.8,10.0.0.1/8", "10.0.0.0/8"},
        {"a.example,http://x", "\"http://x\" is not a host name"},
        {"a..b", "\"a..b\" is not a host name"},
        {"x y", "\"x y\" is not a host name"},
        {"10.0.0.0/33", "0..32"},
        {"1.2.3", "not an IP address"},
        {"*.example.com", "not a host name"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        qn_err_clear(&err);
        assert_int_equal(qn_netallow_add(al, bad[i].list, &err), QN_INVALID_ARGUMENT);
        if (!strstr(err.msg, "--webhook-allow") || !strstr(err.msg, bad[i].needle))
            fail_msg("%s: got \"%s\"", bad[i].list, err.msg);
        assert_int_equal(qn_netallow_count(al), 3);
    }
    qn_ipaddr a;
    assert_int_equal(qn_ip_parse("127.0.0.1", &a), 0);
    assert_int_equal(qn_netallow_check_addr(al, "127.0.0.1", &a, &err), 0);
    assert_int_equal(qn_ip_parse("::ffff:127.0.0.1", &a), 0);  /* mapped: allowed by the IPv4 entry */
    assert_int_equal(qn_netallow_check_addr(al, "x", &a, &err), 0);
    assert_int_equal(qn_ip_parse("127.0.0.2", &a), 0);
    assert_int_equal(qn_netallow_check_addr(al, "127.0.0.2", &a, &err), QN_PERMISSION_DENIED);
    assert_non_null(strstr(err.msg, "loopback"));
    assert_non_null(strstr(err.msg, "--webhook-allow"));
    assert_int_equal(qn_ip_parse("fd00::5", &a), 0);
    assert_int_equal(qn_netallow_check_addr(al, "h", &a, &err), 0);
    assert_int_equal(qn_ip_parse("fc00::5", &a), 0);
    assert_int_equal(qn_netallow_check_addr(al, "h.example", &a, &err), QN_PERMISSION_DENIED);
    assert_non_null(strstr(err.msg, "h.example (resolving to fc00::5)"));
    assert_int_equal(qn_ip_parse("93.184.216.34", &a), 0);
    assert_int_equal(qn_netallow_check_addr(al, "example.com", &a, &err), 0);
    qn_netallow_free(al);

    /* listed-only mode: public addresses are refused too */
    al = qn_netallow_new(QN_NETALLOW_LISTED, "--scrape-allow");
    assert_int_equal(qn_netallow_add(al, "10.0.0.0/8", &err), 0);
    assert_int_equal(qn_netallow_check_addr(al, "8.8.8.8", &a, &err), QN_PERMISSION_DENIED);
    assert_non_null(strstr(err.msg, "not in --scrape-allow"));
    assert_int_equal(qn_ip_parse("10.9.9.9", &a), 0);
    assert_int_equal(qn_netallow_check_addr(al, "10.9.9.9", &a, &err), 0);
    qn_netallow_free(al);
}

static void test_check_url(void **state)
{
    (void)state;
    qn_err err;
    qn_netallow *al = qn_netallow_new(QN_NETALLOW_PUBLIC, "--webhook-allow");
    assert_int_equal(qn_netallow_add(al, "hooks.internal", &err), 0);
    assert_int_equal(qn_netallow_check_url(al, "http://8.8.8.8/x", &err), 0);
    assert_int_equal(qn_netallow_check_url(al, "http://hooks.internal:9000/x", &err), 0);
    assert_int_equal(qn_netallow_check_url(al, "https://example.com/x", &err), 1);
    struct {
        const char *url, *needle;
    } refused[] = {
        {"http://127.0.0.1:7702/v1/datasets/x/events", "127.0.0.1 is a loopback address"},
        {"http://169.254.169.254/latest/meta-data/", "link-local"},
        {"http://[::1]:8080/", "::1 is the loopback address"},
        {"http://[::ffff:127.0.0.1]/", "loopback"},
        {"http://[::ffff:169.254.169.254]/", "link-local"},
        {"http://0x7f.0.0.1/", "loopback"},   /* what the resolver makes of the name */
        {"http://2130706433/", "loopback"},
        {"http://127.1/", "loopback"},
        {"http://0/", "unspecified"},
        {"http://user:pw@10.0.0.1/", "10.0.0.1 is a private address"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        qn_err_clear(&err);
        assert_int_equal(qn_netallow_check_url(al, refused[i].url, &err), QN_PERMISSION_DENIED);
        if (!strstr(err.msg, refused[i].needle) || !strstr(err.msg, "--webhook-allow") || strstr(err.msg, "pw"))
            fail_msg("%s: got \"%s\"", refused[i].url, err.msg);
    }
    assert_int_equal(qn_netallow_check_url(al, "ftp://example.com/", &err), QN_INVALID_ARGUMENT);
    assert_int_equal(qn_netallow_check_url(al, "not a url", &err), QN_INVALID_ARGUMENT);
    assert_int_equal(qn_netallow_check_url(al, "http://[fe80::1%25eth0]/", &err), QN_INVALID_ARGUMENT);
    qn_netallow_free(al);

    al = qn_netallow_new(QN_NETALLOW_LISTED, "--scrape-allow");
    assert_int_equal(qn_netallow_add(al, "quern-monitor", &err), 0);
    assert_int_equal(qn_netallow_check_url(al, "http://quern-monitor:7707/metrics", &err), 0);
    assert_int_equal(qn_netallow_check_url(al, "http://evil.example/metrics", &err), QN_PERMISSION_DENIED);
    assert_non_null(strstr(err.msg, "evil.example is not in --scrape-allow"));
    qn_netallow_free(al);

    char host[256], path[64];
    int port, q;
    assert_int_equal(qn_url_parts("https://u:p@[::1]/metrics?x=1", host, sizeof host, &port, path, sizeof path, &q, &err), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 443);
    assert_string_equal(path, "/metrics");
    assert_true(q);
    assert_int_equal(qn_url_parts("http://h:81", host, sizeof host, &port, path, sizeof path, &q, &err), 0);
    assert_int_equal(port, 81);
    assert_string_equal(path, "/");
    assert_false(q);
}

/* The resolver's answer for "localhost" is loopback: refused unless listed by
 * address or name; when listed, the handle is pinned to those addresses. */
static void test_pin_localhost(void **state)
{
    (void)state;
    qn_err err;
    qn_netpin *pin = NULL;
    CURL *h = curl_easy_init();
    assert_non_null(h);
    qn_netallow *al = qn_netallow_new(QN_NETALLOW_PUBLIC, "--webhook-allow");
    assert_int_equal(qn_netallow_pin(al, h, "http://localhost:9/hook", &pin, &err), QN_PERMISSION_DENIED);
    assert_null(pin);
    assert_non_null(strstr(err.msg, "localhost (resolving to "));
    assert_non_null(strstr(err.msg, "loopback"));
    assert_int_equal(qn_netallow_pin(al, h, "http://127.0.0.1:9/hook", &pin, &err), QN_PERMISSION_DENIED);
    assert_int_equal(qn_netallow_pin(al, h, "http://no-such-host.invalid/", &pin, &err), QN_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "no-such-host.invalid"));
    qn_netallow_free(al);

    al = qn_netallow_new(QN_NETALLOW_PUBLIC, "--webhook-allow");
    assert_int_equal(qn_netallow_add(al, "localhost", &err), 0);
    assert_int_equal(qn_netallow_pin(al, h, "http://localhost:9/hook", &pin, &err), 0);
    assert_non_null(pin);
    assert_non_null(strstr(qn_netpin_addrs(pin), "127.0.0.1"));
    curl_easy_cleanup(h);
    qn_netpin_free(pin);
    qn_netallow_free(al);

    /* a connection goes only where the pin says: the URL's host is pinned
     * to 127.0.0.1; nothing listens on port 9, so curl reports that */
    h = curl_easy_init();
    al = qn_netallow_new(QN_NETALLOW_PUBLIC, "--webhook-allow");
    assert_int_equal(qn_netallow_add(al, "127.0.0.1", &err), 0);
    assert_int_equal(qn_netallow_pin(al, h, "http://127.0.0.1:9/", &pin, &err), 0);
    assert_string_equal(qn_netpin_addrs(pin), "127.0.0.1");
    curl_easy_setopt(h, CURLOPT_URL, "http://127.0.0.1:9/");
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 3000L);
    assert_int_equal(curl_easy_perform(h), CURLE_COULDNT_CONNECT);
    curl_easy_cleanup(h);
    qn_netpin_free(pin);
    /* an address other than the pinned one is refused at the socket: the pin
     * says 127.0.0.1 and the handle is pointed at 127.0.0.2 afterwards */
    h = curl_easy_init();
    assert_int_equal(qn_netallow_pin(al, h, "http://127.0.0.1:9/", &pin, &err), 0);
    curl_easy_setopt(h, CURLOPT_URL, "http://127.0.0.2:9/");
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 3000L);
    char ebuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
    assert_int_equal(curl_easy_perform(h), CURLE_COULDNT_CONNECT);
    curl_easy_cleanup(h);
    qn_netpin_free(pin);
    qn_netallow_free(al);
}

static void test_redact(void **state)
{
    (void)state;
    struct {
        const char *in, *want;
    } cases[] = {
        {"https://user:pass@host/x", "https://user:***@host/x"},
        {"https://tok3n@host/x", "https://***@host/x"},
        {"https://host/x?a=1&token=abc&api_key=zz#frag", "https://host/x?a=1&token=***&api_key=***#frag"},
        {"http://u:p@h:8080/p?Signature=s&x", "http://u:***@h:8080/p?Signature=***&x"},
        {"http://h/a@b?k", "http://h/a@b?k"},  /* an @ in the path is no userinfo */
        {"http://h/p", "http://h/p"},
        {"http://a:b@c@h/", "http://a:***@h/"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *got = qn_url_redact(cases[i].in);
        assert_non_null(got);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("%s: got %s, want %s", cases[i].in, got, cases[i].want);
        free(got);
    }
    assert_null(qn_url_redact(NULL));
    /* worst case growth: every parameter redacted */
    char in[4000] = "http://@h/?";
    for (int i = 0; i < 700; i++)
        strcat(in, "key=&");
    char *got = qn_url_redact(in);
    assert_non_null(got);
    assert_non_null(strstr(got, "http://***@h/?key=***&key=***"));
    assert_int_equal(strlen(got), strlen(in) + 3 + 700 * 3);
    free(got);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cidr_parse),   cmocka_unit_test(test_cidr_contains),
        cmocka_unit_test(test_special_ranges), cmocka_unit_test(test_list_parse_and_check),
        cmocka_unit_test(test_check_url),    cmocka_unit_test(test_pin_localhost),
        cmocka_unit_test(test_redact),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
