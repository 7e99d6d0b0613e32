/*
 * cli.h - what the commands of `quern` share.
 *
 * The quern command is a table of commands (main.c), each a cli_cmd: its
 * name ("ingest", "models show"), a summary, and a table of its arguments
 * and options (name, type, bounds, default, help). args.c parses argv from
 * that table into the command's own options struct and prints `quern help
 * CMD` / `quern CMD --help` from the same table; an unknown option, a missing
 * argument or a value out of bounds is a usage error (exit 2). The global
 * options (--json, --help, --version) are accepted anywhere on the line.
 *
 *     typedef struct { const char *model; long long k; int exclude; } rec_opts;
 *     static const cli_opt rec_table[] = {
 *         {"MODEL", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the served model", offsetof(rec_opts, model)},
 *         {"k", 0, CLI_INT, "10", 1, 1000, NULL, 0, "how many items", offsetof(rec_opts, k)},
 *     };
 *     static int recommend(const void *o) { const rec_opts *r = o; ... }
 *     const cli_cmd cli_cmd_recommend = CLI_CMD("recommend", "top-k items", NULL, rec_table,
 *                                               rec_opts, recommend);
 *
 * Each command talks to a service's HTTP API through core/client, prints a
 * table on a terminal or JSON with --json, and exits with a code that means
 * something:
 *
 *   0 done; 1 the service failed or is unreachable; 2 bad usage or a request
 *   the service refused as invalid; 3 not found; 4 conflict (already exists).
 *
 * Service addresses: $QUERN_<SERVICE> (QUERN_REGISTRY, QUERN_INGEST, ...) or
 * http://127.0.0.1:<base + n>, base from $QUERN_PORT_BASE (default 7700):
 * registry +1, ingest +2, prep +3, train +4, serve +5 (gRPC +6), monitor +7,
 * alert +8 - the same ports `quern up` gives the services.
 *
 * Memory: strings the helpers below return (paths, encoded names, fields)
 * live in arenas owned by the process and freed when main returns, so no
 * command has a fixed-size path buffer to overflow or truncate.
 */
#ifndef QUERN_CLI_H
#define QUERN_CLI_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

#include "core/arena.h"
#include "core/client.h"
#include "core/err.h"

enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2, CLI_NOT_FOUND = 3, CLI_CONFLICT = 4 };

typedef struct cli {
    int json;           /* --json: machine-readable output */
    int help;           /* --help / -h */
    int version;        /* --version */
    int tty;            /* stdout is a terminal */
    int line_open;      /* a progress line on stderr waits for its newline */
    const char *home;   /* $QUERN_HOME or ./.quern */
    int port_base;
    qn_arena *arena;    /* paths and names: freed at exit */
    qn_arena *scratch;  /* cli_field's strings: a polling loop may reset it */
} cli;

extern cli g_cli;

/* ---- argument and option tables (args.c) --------------------------------- */

typedef enum cli_type {
    CLI_STR,   /* const char * (points into argv) */
    CLI_INT,   /* long long within [min, max] */
    CLI_SIZE,  /* long long bytes (K, M, G suffixes) within [min, max] */
    CLI_FLAG,  /* int 0/1; takes no value */
    CLI_LIST,  /* cli_list: every occurrence, in order */
} cli_type;

typedef struct cli_list {
    const char **v;
    size_t n;
} cli_list;

typedef struct cli_opt {
    const char *name;     /* "batch" for --batch; upper case ("DATASET") for an argument */
    char short_name;      /* 'd' for -d, or 0 */
    cli_type type;
    const char *def;      /* default, as it would be typed (NULL: none) */
    long long min, max;   /* bounds of INT and SIZE */
    const char *choices;  /* "csv|ndjson": the only values a STR takes, or NULL */
    int required;         /* an option that must be given; 0 makes an argument optional */
    const char *help;
    size_t offset;        /* offsetof the field in the command's options struct */
} cli_opt;

typedef struct cli_cmd {
    const char *name;     /* "ingest", "models show" */
    const char *summary;  /* one line in `quern help` (NULL: hidden) */
    const char *about;    /* more text for `quern help CMD`, or NULL */
    const cli_opt *opts;  /* arguments in order, and options */
    size_t nopts;
    size_t size;          /* sizeof the options struct */
    int (*run)(const void *opts);
} cli_cmd;

#define CLI_CMD(name, summary, about, table, type, fn) \
    {name, summary, about, table, sizeof(table) / sizeof((table)[0]), sizeof(type), fn}
#define CLI_CMD_NOOPTS(name, summary, about, fn) {name, summary, about, NULL, 0, 0, fn}

/* Parses argv (the command's words already removed) into a zeroed options
 * struct allocated from g_cli.arena, applying defaults, bounds and choices;
 * global options go to g_cli. Returns CLI_OK with *out set, or CLI_USAGE
 * after printing what is wrong and the command's usage line. */
int cli_parse(const cli_cmd *c, int argc, char **argv, void **out);
/* `quern help CMD`: usage, summary, arguments and options from the table. */
void cli_help_cmd(FILE *f, const cli_cmd *c);
/* The one-line usage after prefix: "usage: quern ingest DATASET FILE [OPTIONS]". */
void cli_usage_line(FILE *f, const char *prefix, const cli_cmd *c);
/* The global options, for `quern --help`. */
void cli_help_globals(FILE *f);

/* ---- services, memory, errors (main.c) ------------------------------------- */

/* The services, in start order, with their port offsets. */
typedef struct cli_service {
    const char *name;   /* "registry" */
    int offset;         /* port = base + offset */
    const char *env;    /* "QUERN_REGISTRY" */
} cli_service;

extern const cli_service cli_services[];
extern const size_t cli_nservices;

const cli_service *cli_service_find(const char *name);
/* "http://127.0.0.1:7701" or $QUERN_REGISTRY. */
const char *cli_service_url(const cli_service *s);
/* A client for a service by name (cached for the process). */
qn_client *cli_client(const char *service);

/* printf into g_cli.arena; exits with CLI_FAILED when out of memory. */
char *cli_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* s percent-encoded for a path segment or query value (g_cli.arena). */
const char *cli_enc(const char *s);

/* Exit code for a qn_code. */
int cli_exit_code(int code);
/* The one error printer: "quern: <message>\n" on stderr, always ending
 * with exactly one newline, after closing any progress line. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* cli_err(err->msg) and, when the service is unreachable, what to do.
 * Returns the exit code for err. */
int cli_fail(const char *service, const qn_err *err);
/* Marks that stderr holds a progress line without its newline. */
void cli_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Output: JSON (with --json) or a table with the given columns, where each
 * column is a dotted path into each row ("name", "metrics.auc"). */
void cli_print_json(const json_t *v);
void cli_print_table(const json_t *rows, const char *const *headers, const char *const *paths);
/* An object as "key  value" lines (JSON with --json): nested objects of
 * scalars as k=v lists, arrays of scalars comma-separated. */
void cli_print_kv(const json_t *obj);
/* One value at a dotted path of an object, as text: "-" when absent. The
 * string lives in g_cli.scratch (valid until cli_scratch_reset). */
const char *cli_field(const json_t *row, const char *path);
/* Frees what cli_field returned so far (a polling loop calls it per round). */
void cli_scratch_reset(void);

/* ---- the commands ------------------------------------------------------------ */

/* supervise.c */
extern const cli_cmd cli_cmd_up, cli_cmd_down, cli_cmd_status;
/* commands.c */
extern const cli_cmd cli_cmd_sources_list, cli_cmd_sources_show, cli_cmd_sources_put, cli_cmd_sources_run,
    cli_cmd_sources_history;
extern const cli_cmd cli_cmd_ingest, cli_cmd_pipelines_list, cli_cmd_pipelines_show,
    cli_cmd_pipelines_put, cli_cmd_pipelines_run, cli_cmd_train, cli_cmd_jobs_list, cli_cmd_jobs_show,
    cli_cmd_jobs_follow, cli_cmd_jobs_cancel, cli_cmd_models_list, cli_cmd_models_show,
    cli_cmd_models_versions, cli_cmd_models_promote, cli_cmd_models_rollback, cli_cmd_models_history, cli_cmd_models_import, cli_cmd_predict,
    cli_cmd_recommend, cli_cmd_drift, cli_cmd_alerts;
/* traffic.c: a model's traffic policy in the registry. */
extern const cli_cmd cli_cmd_traffic_set, cli_cmd_traffic_show, cli_cmd_traffic_clear;
/* healthcheck.c: GET /healthz of the service beside it (container health check). */
extern const cli_cmd cli_cmd_healthcheck;
/* runs.c: tracking (experiments and runs) */
extern const cli_cmd cli_cmd_experiments_list, cli_cmd_runs_list, cli_cmd_runs_show, cli_cmd_runs_compare,
    cli_cmd_runs_metrics;

#endif
