/*
 * cli.h - what the commands of `quern` share.
 *
 * The quern command is a table of subcommands (main.c). Each one talks to a
 * service's HTTP API through core/client, prints a table on a terminal or
 * JSON with --json, and exits with a code that means something:
 *
 *   0 done; 1 the service failed or is unreachable; 2 bad usage or a request
 *   the service refused as invalid; 3 not found; 4 conflict (already exists).
 *
 * Service addresses: $QUERN_<SERVICE> (QUERN_REGISTRY, QUERN_INGEST, ...) or
 * http://127.0.0.1:<base + n>, base from $QUERN_PORT_BASE (default 7700):
 * registry +1, ingest +2, prep +3, train +4, serve +5 (gRPC +6), monitor +7,
 * alert +8 - the same ports `quern up` gives the services.
 */
#ifndef QUERN_CLI_H
#define QUERN_CLI_H

#include <jansson.h>
#include <stdio.h>

#include "core/client.h"
#include "core/err.h"

enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2, CLI_NOT_FOUND = 3, CLI_CONFLICT = 4 };

typedef struct cli {
    int json;           /* --json: machine-readable output */
    int tty;            /* stdout is a terminal */
    const char *home;   /* $QUERN_HOME or ./.quern */
    int port_base;
} cli;

extern cli g_cli;

/* The services, in start order, with their port offsets. */
typedef struct cli_service {
    const char *name;   /* "registry" */
    int offset;         /* port = base + offset */
    const char *env;    /* "QUERN_REGISTRY" */
} cli_service;

extern const cli_service cli_services[];
extern const size_t cli_nservices;

const cli_service *cli_service_find(const char *name);
/* "http://127.0.0.1:7701" or $QUERN_REGISTRY; static buffer per service. */
const char *cli_service_url(const cli_service *s);
/* A client for a service by name (cached for the process). */
qn_client *cli_client(const char *service);

/* Exit code for a qn_code. */
int cli_exit_code(int code);
/* Prints "quern: <message>" and, when the service is unreachable, what to do. */
int cli_fail(const char *service, const qn_err *err);
/* Prints usage text for a command and returns CLI_USAGE. */
int cli_usage(const char *usage);

/* Output: JSON (with --json) or a table with the given columns, where each
 * column is a JSON pointer-ish path into each row ("name", "metrics.auc"). */
void cli_print_json(const json_t *v);
void cli_print_table(const json_t *rows, const char *const *headers, const char *const *paths);
/* One value at a dotted path of an object, as text (static buffer). */
const char *cli_field(const json_t *row, const char *path);

/* Option parsing helpers for "--name VALUE" / "--name=VALUE" / "--flag". */
typedef struct cli_args {
    int argc;
    char **argv;
    int i;
} cli_args;
/* Returns the value of option name at argv[i] (advancing), or NULL. */
const char *cli_opt(cli_args *a, const char *name);
int cli_flag(cli_args *a, const char *name);

/* supervise.c */
int cmd_up(int argc, char **argv);
int cmd_down(int argc, char **argv);
int cmd_status(int argc, char **argv);

/* commands.c */
int cmd_models(int argc, char **argv);
int cmd_ingest(int argc, char **argv);
int cmd_pipelines(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_jobs(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_recommend(int argc, char **argv);
int cmd_drift(int argc, char **argv);
int cmd_alerts(int argc, char **argv);

/* healthcheck.c: GET /healthz of the service beside it (container health check). */
int cmd_healthcheck(int argc, char **argv);

#endif
