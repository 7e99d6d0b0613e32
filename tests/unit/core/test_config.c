/* test_config.c - flag > environment > default, bounds, suffixes, help, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"

typedef struct test_cfg {
    qn_common_cfg common;
    long long max_blob;
    long long poll_ms;
    int verbose;
    char *models;
} test_cfg;

static const qn_cfg_opt opts[] = {
    QN_CFG_COMMON(test_cfg, "127.0.0.1:7701", "registry"),
    {"max-blob-size", "QUERN_MAX_BLOB_SIZE", QN_CFG_SIZE, "4G", 1, 1LL << 40, "Largest blob",
     offsetof(test_cfg, max_blob)},
    {"poll", NULL, QN_CFG_DURATION, "30s", 10, 3600000, "Poll interval",
     offsetof(test_cfg, poll_ms)},
    {"verbose", "QUERN_TEST_VERBOSE", QN_CFG_BOOL, "no", 0, 1, "Chatty",
     offsetof(test_cfg, verbose)},
    {"models", "QUERN_MODELS", QN_CFG_STRING, NULL, 0, 0, "Models", offsetof(test_cfg, models)},
};

static const char *const env_vars[] = {"QUERN_HOME", "QUERN_LISTEN", "QUERN_THREADS",
                                       "QUERN_MAX_BLOB_SIZE", "QUERN_TEST_VERBOSE", "QUERN_MODELS",
                                       "QUERN_DATA", "QUERN_TOKEN", "QUERN_DRAIN_TIMEOUT",
                                       "QUERN_AUTH_READS"};

static int clean_env(void **state)
{
    for (size_t i = 0; i < QN_NELEM(env_vars); i++)
        unsetenv(env_vars[i]);
    return 0;
}

static int parse(test_cfg *c, qn_err *err, int argc, ...)
{
    char *argv[32];
    va_list ap;
    va_start(ap, argc);
    argv[0] = "quern-test";
    for (int i = 1; i < argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    memset(c, 0x5a, sizeof *c);
    return qn_config_parse(opts, QN_NELEM(opts), c, "quern-test", "A test.", argc, argv, err);
}

static void test_defaults(void **state)
{
    test_cfg c;
    qn_err err;
    assert_int_equal(parse(&c, &err, 1), 0);
    assert_string_equal(c.common.listen, "127.0.0.1:7701");
    assert_string_equal(c.common.data, "./.quern/registry");
    assert_string_equal(c.common.bus, "sqlite://./.quern/bus.db");
    assert_null(c.common.token);
    assert_null(c.models);
    assert_int_equal(c.common.threads, 4);
    assert_int_equal(c.common.drain_ms, 10000);
    assert_int_equal(c.common.auth_reads, 0);
    assert_int_equal(c.max_blob, 4LL << 30);
    assert_int_equal(c.poll_ms, 30000);
    assert_int_equal(c.verbose, 0);
    qn_config_free(opts, QN_NELEM(opts), &c);
    assert_null(c.common.listen);
}

static void test_precedence(void **state)
{
    test_cfg c;
    qn_err err;
    setenv("QUERN_HOME", "/srv/q", 1);
    setenv("QUERN_LISTEN", "0.0.0.0:9000", 1);
    setenv("QUERN_THREADS", "8", 1);
    setenv("QUERN_TEST_VERBOSE", "on", 1);
    setenv("QUERN_MODELS", "", 1); /* empty counts as unset */
    assert_int_equal(parse(&c, &err, 1), 0);
    assert_string_equal(c.common.listen, "0.0.0.0:9000");
    assert_string_equal(c.common.data, "/srv/q/registry");
    assert_int_equal(c.common.threads, 8);
    assert_int_equal(c.verbose, 1);
    assert_null(c.models);
    qn_config_free(opts, QN_NELEM(opts), &c);

    /* Flags beat the environment, both spellings; the last flag wins. */
    assert_int_equal(parse(&c, &err, 8, "--listen", "127.0.0.1:0", "--threads=2", "--verbose=false",
                           "--data", "/a", "--data=/b"), 0);
    assert_string_equal(c.common.listen, "127.0.0.1:0");
    assert_int_equal(c.common.threads, 2);
    assert_int_equal(c.verbose, 0);
    assert_string_equal(c.common.data, "/b");
    qn_config_free(opts, QN_NELEM(opts), &c);

    /* A bare bool flag means true. */
    assert_int_equal(parse(&c, &err, 3, "--auth-reads", "--max-blob-size=512K"), 0);
    assert_int_equal(c.common.auth_reads, 1);
    assert_int_equal(c.max_blob, 512 * 1024);
    qn_config_free(opts, QN_NELEM(opts), &c);
}

static void test_errors_name_the_source(void **state)
{
    test_cfg c;
    qn_err err;
    assert_int_equal(parse(&c, &err, 2, "--nope"), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "--nope"));
    assert_null(c.common.listen); /* freed on failure */

    assert_int_equal(parse(&c, &err, 2, "--listen"), QN_INVALID_ARGUMENT);
    assert_string_equal(err.msg, "flag --listen needs a value");

    assert_int_equal(parse(&c, &err, 3, "--threads", "abc"), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "--threads"));
    assert_non_null(strstr(err.msg, "abc"));

    assert_int_equal(parse(&c, &err, 3, "--threads", "0"), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "out of range 1..256"));

    assert_int_equal(parse(&c, &err, 2, "--threads=4x"), QN_INVALID_ARGUMENT);

    setenv("QUERN_THREADS", "999", 1);
    assert_int_equal(parse(&c, &err, 1), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "QUERN_THREADS"));
    unsetenv("QUERN_THREADS");

    setenv("QUERN_DRAIN_TIMEOUT", "10", 1);
    assert_int_equal(parse(&c, &err, 1), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "QUERN_DRAIN_TIMEOUT"));
    assert_non_null(strstr(err.msg, "duration"));
    unsetenv("QUERN_DRAIN_TIMEOUT");

    assert_int_equal(parse(&c, &err, 2, "--verbose=maybe"), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "boolean"));
    assert_int_equal(parse(&c, &err, 2, "stray"), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "stray"));
    assert_int_equal(parse(&c, &err, 2, "--max-blob-size=2T"), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "--max-blob-size"));
    assert_int_equal(parse(&c, &err, 2, "--poll=5ms"), QN_INVALID_ARGUMENT);
}

static void test_units(void **state)
{
    long long v;
    assert_int_equal(qn_parse_size("100", &v), 0);
    assert_int_equal(v, 100);
    assert_int_equal(qn_parse_size("4G", &v), 0);
    assert_int_equal(v, 4LL << 30);
    assert_int_equal(qn_parse_size("512k", &v), 0);
    assert_int_equal(v, 512 << 10);
    assert_int_equal(qn_parse_size("3MiB", &v), 0);
    assert_int_equal(v, 3 << 20);
    assert_int_equal(qn_parse_size("2MB", &v), 0);
    assert_int_equal(v, 2 << 20);
    assert_int_equal(qn_parse_size("1X", &v), QN_INVALID_ARGUMENT);
    assert_int_equal(qn_parse_size("", &v), QN_INVALID_ARGUMENT);
    assert_int_equal(qn_parse_size("K", &v), QN_INVALID_ARGUMENT);
    assert_int_equal(qn_parse_size("99999999999T", &v), QN_OUT_OF_RANGE);
    assert_int_equal(qn_parse_duration_ms("250ms", &v), 0);
    assert_int_equal(v, 250);
    assert_int_equal(qn_parse_duration_ms("10s", &v), 0);
    assert_int_equal(v, 10000);
    assert_int_equal(qn_parse_duration_ms("2m", &v), 0);
    assert_int_equal(v, 120000);
    assert_int_equal(qn_parse_duration_ms("1h", &v), 0);
    assert_int_equal(v, 3600000);
    assert_int_equal(qn_parse_duration_ms("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(qn_parse_duration_ms("10", &v), QN_INVALID_ARGUMENT);
    assert_int_equal(qn_parse_duration_ms("10d", &v), QN_INVALID_ARGUMENT);
    assert_int_equal(qn_parse_duration_ms("s", &v), QN_INVALID_ARGUMENT);
}

/* Runs a parse with stdout captured into buf. */
static int parse_captured(char *buf, size_t cap, const char *flag)
{
    test_cfg c;
    qn_err err;
    char path[] = "/tmp/quern_cfg_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stdout);
    int saved = dup(1);
    dup2(fd, 1);
    int rc = parse(&c, &err, 2, flag);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, buf, cap - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    return rc;
}

static void test_help_and_version(void **state)
{
    char out[8192];
    assert_int_equal(parse_captured(out, sizeof out, "--help"), QN_CONFIG_EXIT);
    assert_non_null(strstr(out, "Usage: quern-test"));
    assert_non_null(strstr(out, "A test."));
    /* One line per option, with flag, env and default. */
    for (size_t i = 0; i < QN_NELEM(opts); i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", opts[i].name);
        const char *line = strstr(out, flag);
        assert_non_null(line);
        const char *eol = strchr(line, '\n');
        if (opts[i].env) {
            const char *e = strstr(line, opts[i].env);
            assert_true(e && e < eol);
        }
    }
    assert_non_null(strstr(out, "[default ${QUERN_HOME}/registry]"));
    assert_non_null(strstr(out, "[env QUERN_LISTEN]"));

    assert_int_equal(parse_captured(out, sizeof out, "--version"), QN_CONFIG_EXIT);
    assert_string_equal(out, "quern-test " QUERN_VERSION "\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, clean_env),
        cmocka_unit_test_setup(test_precedence, clean_env),
        cmocka_unit_test_setup(test_errors_name_the_source, clean_env),
        cmocka_unit_test(test_units),
        cmocka_unit_test_setup(test_help_and_version, clean_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
