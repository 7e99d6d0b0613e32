/*
 * config.h - service configuration from a table: flag > environment > default.
 *
 * Each service describes its options as data; parsing, bounds checks, the
 * environment fallback and --help all come from that one table (as redis'
 * static_configs). The common options of every service (DESIGN.md section 1)
 * come from QN_CFG_COMMON.
 *
 *     typedef struct { qn_common_cfg common; long long max_blob; } registry_cfg;
 *     static const qn_cfg_opt opts[] = {
 *         QN_CFG_COMMON(registry_cfg, "127.0.0.1:7701", "registry"),
 *         {"max-blob-size", "QUERN_MAX_BLOB_SIZE", QN_CFG_SIZE, "4G", 1, 1LL << 40,
 *          "Largest blob accepted", offsetof(registry_cfg, max_blob)},
 *     };
 *     registry_cfg cfg;
 *     int rc = qn_config_parse(opts, QN_NELEM(opts), &cfg, "quern-registry",
 *                              "Models, versions, aliases, datasets and blobs.", argc, argv, &err);
 *     if (rc == QN_CONFIG_EXIT) return 0;      // --help or --version was printed
 *     if (rc < 0) { fprintf(stderr, "%s\n", err.msg); return 2; }
 *     ...
 *     qn_config_free(opts, QN_NELEM(opts), &cfg);
 *
 * Flags are --name VALUE or --name=VALUE; QN_CFG_BOOL flags also take no value
 * (--name means true). Defaults may contain ${QUERN_HOME}, which expands to
 * $QUERN_HOME or ./.quern. Sizes take K/M/G suffixes (powers of 1024);
 * durations take ms/s/m/h (stored as milliseconds).
 */
#ifndef QN_CONFIG_H
#define QN_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "core/err.h"

#define QN_NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define QN_CONFIG_EXIT 1

typedef enum qn_cfg_type {
    QN_CFG_STRING,    /* char *  (owned by the config struct; NULL when default is NULL) */
    QN_CFG_INT,       /* long long, within [min, max] */
    QN_CFG_BOOL,      /* int, 0/1; accepts true/false/1/0/yes/no/on/off */
    QN_CFG_SIZE,      /* long long bytes, within [min, max] */
    QN_CFG_DURATION,  /* long long milliseconds, within [min, max] */
} qn_cfg_type;

typedef struct qn_cfg_opt {
    const char *name;    /* flag without dashes: "listen" */
    const char *env;     /* environment variable: "QUERN_LISTEN" (NULL: none) */
    qn_cfg_type type;
    const char *def;     /* default, as it would be typed (NULL: unset) */
    long long min, max;  /* bounds for INT/SIZE/DURATION */
    const char *help;
    size_t offset;       /* offsetof() the field in the config struct */
} qn_cfg_opt;

/* The options every service has (DESIGN.md section 1). */
typedef struct qn_common_cfg {
    char *listen;        /* HOST:PORT; port 0 picks a free one */
    char *data;          /* the service's own state directory */
    char *bus;           /* bus URL */
    char *registry;      /* registry base URL */
    char *log_level;
    char *token;         /* bearer token (QUERN_TOKEN) */
    char *token_file;    /* file holding the token (QUERN_TOKEN_FILE) */
    int auth_reads;      /* QUERN_AUTH_READS=1: reads need the token too */
    long long threads;   /* HTTP worker threads */
    long long drain_ms;  /* SIGTERM drain deadline */
    char *otlp_endpoint; /* OTLP/HTTP collector base URL; NULL or "": tracing off */
    long long breaker_failures;    /* consecutive upstream failures that open a circuit */
    long long breaker_cooldown_ms; /* first open period of a circuit (doubles, capped) */
    long long max_connections;     /* HTTP connections open at once */
    long long max_client_conns;    /* per client address (0: no cap) */
    long long header_timeout_ms;   /* deadline for a request line and headers */
    long long idle_timeout_ms;     /* a silent connection is closed after this */
} qn_common_cfg;

#define QN_CFG_COMMON(type, listen_def, service)                                                \
    {"listen", "QUERN_LISTEN", QN_CFG_STRING, listen_def, 0, 0,                                 \
     "Address to listen on, HOST:PORT (port 0: any free port)", offsetof(type, common.listen)}, \
    {"data", "QUERN_DATA", QN_CFG_STRING, "${QUERN_HOME}/" service, 0, 0,                       \
     "Directory for this service's own state", offsetof(type, common.data)},                   \
    {"bus", "QUERN_BUS", QN_CFG_STRING, "sqlite://${QUERN_HOME}/bus.db", 0, 0,                  \
     "Message bus URL (sqlite://PATH or amqp://user:pass@host:5672/vhost)",                     \
     offsetof(type, common.bus)},                                                               \
    {"registry", "QUERN_REGISTRY", QN_CFG_STRING, "http://127.0.0.1:7701", 0, 0,                \
     "Base URL of quern-registry", offsetof(type, common.registry)},                            \
    {"log-level", "QUERN_LOG_LEVEL", QN_CFG_STRING, "info", 0, 0,                               \
     "Lowest level logged: debug, info, warn, error", offsetof(type, common.log_level)},        \
    {"token", "QUERN_TOKEN", QN_CFG_STRING, NULL, 0, 0,                                         \
     "Bearer token required on mutating requests (unset: no auth)", offsetof(type, common.token)}, \
    {"token-file", "QUERN_TOKEN_FILE", QN_CFG_STRING, NULL, 0, 0,                               \
     "File holding the bearer token (beats --token)", offsetof(type, common.token_file)},       \
    {"auth-reads", "QUERN_AUTH_READS", QN_CFG_BOOL, "false", 0, 1,                              \
     "Require the token on reads too", offsetof(type, common.auth_reads)},                      \
    {"threads", "QUERN_THREADS", QN_CFG_INT, "4", 1, 256,                                       \
     "HTTP worker threads", offsetof(type, common.threads)},                                    \
    {"drain-timeout", "QUERN_DRAIN_TIMEOUT", QN_CFG_DURATION, "10s", 0, 3600000,                \
     "How long SIGTERM waits for in-flight requests", offsetof(type, common.drain_ms)},         \
    {"otlp-endpoint", "QUERN_OTLP_ENDPOINT", QN_CFG_STRING, NULL, 0, 0,                         \
     "OpenTelemetry collector (OTLP/HTTP) base URL, e.g. http://127.0.0.1:4318 (unset: no tracing)", \
     offsetof(type, common.otlp_endpoint)},                                                     \
    {"breaker-failures", "QUERN_BREAKER_FAILURES", QN_CFG_INT, "5", 0, 1000,                    \
     "Consecutive failures of an upstream that open its circuit (0: never)",                    \
     offsetof(type, common.breaker_failures)},                                                  \
    {"breaker-cooldown", "QUERN_BREAKER_COOLDOWN", QN_CFG_DURATION, "1s", 10, 600000,           \
     "First wait of an open circuit before a probe (doubles per failed probe, to 30s)",         \
     offsetof(type, common.breaker_cooldown_ms)},                                               \
    {"max-connections", "QUERN_MAX_CONNECTIONS", QN_CFG_INT, "1024", 1, 1000000,                \
     "HTTP connections open at once; more are answered 503 and closed (lowered to fit the open-file limit)", \
     offsetof(type, common.max_connections)},                                                   \
    {"max-connections-per-client", "QUERN_MAX_CONNECTIONS_PER_CLIENT", QN_CFG_INT, "128", 0,    \
     1000000, "HTTP connections open at once from one client IP address; more are answered 429 and closed (0: no cap; raise it behind a proxy)", \
     offsetof(type, common.max_client_conns)},                                                  \
    {"header-timeout", "QUERN_HEADER_TIMEOUT", QN_CFG_DURATION, "10s", 100, 3600000,            \
     "Time a client has to send a request line and headers, from connecting or from the first byte of a later request", \
     offsetof(type, common.header_timeout_ms)},                                                 \
    {"idle-timeout", "QUERN_IDLE_TIMEOUT", QN_CFG_DURATION, "60s", 1000, 86400000,              \
     "A connection silent both ways this long is closed (whole seconds)",                       \
     offsetof(type, common.idle_timeout_ms)}

/* Fills cfg from argv, then the environment, then defaults, checking types and
 * bounds. Returns 0; QN_CONFIG_EXIT after printing --help or --version to
 * stdout; or QN_INVALID_ARGUMENT with err naming the flag or variable at
 * fault (unknown flag, missing value, bad number, out of bounds). */
int qn_config_parse(const qn_cfg_opt *opts, size_t n, void *cfg, const char *prog,
                    const char *summary, int argc, char **argv, qn_err *err);

/* Prints the generated help (one line per option: flag, env, default, help). */
void qn_config_help(FILE *out, const qn_cfg_opt *opts, size_t n, const char *prog,
                    const char *summary);

/* Frees the strings qn_config_parse stored in cfg. */
void qn_config_free(const qn_cfg_opt *opts, size_t n, void *cfg);

/* Parses "10s", "250ms", "2m" into milliseconds; "4G", "512K", "100" into bytes. */
QN_MUST_CHECK int qn_parse_duration_ms(const char *s, long long *out);
QN_MUST_CHECK int qn_parse_size(const char *s, long long *out);

#endif
