/*
 * main.c - the quern command: a table of subcommands and what they share
 * (service addresses, output, exit codes). See cli.h.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

cli g_cli;

const cli_service cli_services[] = {
    {"registry", 1, "QUERN_REGISTRY"}, {"ingest", 2, "QUERN_INGEST"},   {"prep", 3, "QUERN_PREP"},
    {"train", 4, "QUERN_TRAIN"},       {"serve", 5, "QUERN_SERVE"},     {"monitor", 7, "QUERN_MONITOR"},
    {"alert", 8, "QUERN_ALERT"},
};
const size_t cli_nservices = sizeof cli_services / sizeof cli_services[0];

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"up", cmd_up, "start every service on embedded defaults (--detach to return once ready)"},
    {"down", cmd_down, "stop the services started by `quern up`"},
    {"status", cmd_status, "a table of the services: pid, port, ready, uptime, version"},
    {"ingest", cmd_ingest, "send events or rows to a dataset (CSV, NDJSON, JSON)"},
    {"pipelines", cmd_pipelines, "list, show, put and run cleaning pipelines"},
    {"train", cmd_train, "start a training job and follow it"},
    {"jobs", cmd_jobs, "list, show and cancel training jobs"},
    {"models", cmd_models, "list, show, versions, promote, import"},
    {"predict", cmd_predict, "send rows to a served model"},
    {"recommend", cmd_recommend, "top-k items for a user from a served recommender"},
    {"drift", cmd_drift, "the latest drift report of a model"},
    {"alerts", cmd_alerts, "firing and resolved alerts"},
    /* Hidden (no summary): the container health check, see healthcheck.c. */
    {"healthcheck", cmd_healthcheck, NULL},
};

static void help(FILE *out)
{
    fprintf(out, "usage: quern [--json] COMMAND [ARGS]\n\n"
                 "Quern: from raw events to a model in production, and back when the world changes.\n\n"
                 "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (commands[i].summary)
            fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nglobal options:\n"
                 "  --json       machine-readable output\n"
                 "  --version    print the version\n\n"
                 "environment: QUERN_HOME (state, default ./.quern), QUERN_PORT_BASE (default 7700),\n"
                 "QUERN_REGISTRY, QUERN_INGEST, QUERN_PREP, QUERN_TRAIN, QUERN_SERVE, QUERN_MONITOR,\n"
                 "QUERN_ALERT (service URLs), QUERN_TOKEN (bearer token).\n"
                 "`quern COMMAND --help` describes a command. Exit codes: 0 done, 1 failed or\n"
                 "unreachable, 2 bad usage or invalid request, 3 not found, 4 conflict.\n");
}

int main(int argc, char **argv)
{
    g_cli.tty = isatty(STDOUT_FILENO);
    g_cli.home = getenv("QUERN_HOME") && *getenv("QUERN_HOME") ? getenv("QUERN_HOME") : "./.quern";
    const char *base = getenv("QUERN_PORT_BASE");
    g_cli.port_base = base && atoi(base) > 0 && atoi(base) < 65000 ? atoi(base) : 7700;

    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            g_cli.json = 1;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("quern %s\n", QUERN_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            help(stdout);
            return 0;
        } else {
            fprintf(stderr, "quern: unknown option %s\n\n", argv[i]);
            help(stderr);
            return CLI_USAGE;
        }
    }
    if (i >= argc) {
        help(stderr);
        return CLI_USAGE;
    }
    for (size_t c = 0; c < sizeof commands / sizeof commands[0]; c++)
        if (strcmp(argv[i], commands[c].name) == 0)
            return commands[c].fn(argc - i, argv + i);
    fprintf(stderr, "quern: unknown command \"%s\"; `quern --help` lists them\n", argv[i]);
    return CLI_USAGE;
}

/* ---- services ------------------------------------------------------------- */

const cli_service *cli_service_find(const char *name)
{
    for (size_t i = 0; i < cli_nservices; i++)
        if (strcmp(cli_services[i].name, name) == 0)
            return &cli_services[i];
    return NULL;
}

const char *cli_service_url(const cli_service *s)
{
    static char urls[16][64];
    size_t k = (size_t)(s - cli_services);
    const char *env = getenv(s->env);
    if (env && *env)
        return env;
    snprintf(urls[k], sizeof urls[k], "http://127.0.0.1:%d", g_cli.port_base + s->offset);
    return urls[k];
}

qn_client *cli_client(const char *service)
{
    static qn_client *clients[16];
    const cli_service *s = cli_service_find(service);
    size_t k = (size_t)(s - cli_services);
    if (!clients[k]) {
        qn_err err;
        qn_client_opts o = {.base_url = cli_service_url(s), .timeout_ms = 60000, .max_retries = 2,
                            .token = getenv("QUERN_TOKEN"), .user_agent = "quern-cli/" QUERN_VERSION};
        clients[k] = qn_client_new(&o, &err);
        if (!clients[k]) {
            fprintf(stderr, "quern: %s\n", err.msg);
            exit(CLI_USAGE);
        }
    }
    return clients[k];
}

int cli_exit_code(int code)
{
    switch (code) {
    case QN_OK: return CLI_OK;
    case QN_NOT_FOUND: return CLI_NOT_FOUND;
    case QN_ALREADY_EXISTS: case QN_ABORTED: return CLI_CONFLICT;
    }
    return qn_code_is_client(code) ? CLI_USAGE : CLI_FAILED;
}

int cli_fail(const char *service, const qn_err *err)
{
    fprintf(stderr, "quern: %s\n", err->msg);
    if (service && (err->code == QN_UNAVAILABLE || err->code == QN_DEADLINE_EXCEEDED))
        fprintf(stderr, "quern: is quern-%s running? `quern up --detach` starts every service; "
                        "`quern status` shows them\n", service);
    return cli_exit_code(err->code);
}

int cli_usage(const char *usage)
{
    fprintf(stderr, "usage: %s\n", usage);
    return CLI_USAGE;
}

/* ---- output --------------------------------------------------------------- */

void cli_print_json(const json_t *v)
{
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY);
    if (s)
        puts(s);
    free(s);
}

const char *cli_field(const json_t *row, const char *path)
{
    static char buf[256];
    char key[128];
    const json_t *v = row;
    const char *p = path;
    while (v && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n >= sizeof key)
            return "";
        memcpy(key, p, n);
        key[n] = '\0';
        v = json_object_get(v, key);
        p += n + (dot ? 1 : 0);
    }
    if (!v || json_is_null(v))
        return "-";
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v))
        snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, sizeof buf, "%.4g", json_real_value(v));
    else if (json_is_boolean(v))
        snprintf(buf, sizeof buf, "%s", json_is_true(v) ? "yes" : "no");
    else {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        snprintf(buf, sizeof buf, "%s", s ? s : "");
        free(s);
    }
    return buf;
}

void cli_print_table(const json_t *rows, const char *const *headers, const char *const *paths)
{
    if (g_cli.json) {
        cli_print_json(rows);
        return;
    }
    size_t ncols = 0, width[16] = {0};
    while (headers[ncols] && ncols < 16) {
        width[ncols] = strlen(headers[ncols]);
        ncols++;
    }
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) {
        for (size_t c = 0; c < ncols; c++) {
            size_t n = strlen(cli_field(row, paths[c]));
            if (n > width[c])
                width[c] = n > 60 ? 60 : n;
        }
    }
    /* Bold headers on a terminal; plain text when piped, so scripts can cut. */
    for (size_t c = 0; c < ncols; c++)
        printf(g_cli.tty ? "\033[1m%-*s\033[0m%s" : "%-*s%s", (int)width[c], headers[c],
               c + 1 < ncols ? "  " : "\n");
    json_array_foreach(rows, i, row) {
        for (size_t c = 0; c < ncols; c++)
            printf("%-*.*s%s", (int)width[c], (int)width[c], cli_field(row, paths[c]),
                   c + 1 < ncols ? "  " : "\n");
    }
}

const char *cli_opt(cli_args *a, const char *name)
{
    const char *arg = a->argv[a->i];
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0)
        return NULL;
    if (arg[n] == '=')
        return arg + n + 1;
    if (arg[n] == '\0' && a->i + 1 < a->argc)
        return a->argv[++a->i];
    return NULL;
}

int cli_flag(cli_args *a, const char *name)
{
    return strcmp(a->argv[a->i], name) == 0;
}
