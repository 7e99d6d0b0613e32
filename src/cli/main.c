/*
 * main.c - the quern command: a table of subcommands and what they share
 * (service addresses, output, exit codes). See cli.h.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/json.h"

cli g_cli;

const cli_service cli_services[] = {
    {"registry", 1, "QUERN_REGISTRY"}, {"ingest", 2, "QUERN_INGEST"},   {"prep", 3, "QUERN_PREP"},
    {"train", 4, "QUERN_TRAIN"},       {"serve", 5, "QUERN_SERVE"},     {"monitor", 7, "QUERN_MONITOR"},
    {"alert", 8, "QUERN_ALERT"},       {"console", 9, "QUERN_CONSOLE"},
};
const size_t cli_nservices = sizeof cli_services / sizeof cli_services[0];

/* Every command, in the order `quern help` lists them. A name with a space
 * is a subcommand of a group ("models show"). */
static const cli_cmd *const commands[] = {
    &cli_cmd_up, &cli_cmd_down, &cli_cmd_status,
    &cli_cmd_ingest,
    &cli_cmd_sources_list, &cli_cmd_sources_show, &cli_cmd_sources_put, &cli_cmd_sources_run,
    &cli_cmd_sources_history,
    &cli_cmd_pipelines_list, &cli_cmd_pipelines_show, &cli_cmd_pipelines_put, &cli_cmd_pipelines_run,
    &cli_cmd_train,
    &cli_cmd_jobs_list, &cli_cmd_jobs_show, &cli_cmd_jobs_follow, &cli_cmd_jobs_cancel,
    &cli_cmd_models_list, &cli_cmd_models_show, &cli_cmd_models_versions, &cli_cmd_models_promote,
    &cli_cmd_models_rollback, &cli_cmd_models_history, &cli_cmd_models_import,
    &cli_cmd_experiments_list, &cli_cmd_runs_list, &cli_cmd_runs_show, &cli_cmd_runs_compare, &cli_cmd_runs_metrics,
    &cli_cmd_traffic_set, &cli_cmd_traffic_show, &cli_cmd_traffic_clear,
    &cli_cmd_predict, &cli_cmd_recommend, &cli_cmd_drift, &cli_cmd_alerts,
    &cli_cmd_healthcheck, /* hidden (no summary): the container health check */
};

/* What a group of subcommands is for, in `quern help`. */
static const struct {
    const char *name, *summary;
} groups[] = {
    {"sources", "list, show, put, run and history of ingest's pull sources"},
    {"pipelines", "list, show, put and run cleaning pipelines"},
    {"jobs", "list, show, follow and cancel training jobs"},
    {"models", "list, show, versions, promote, import"},
    {"experiments", "list experiments (tracking)"},
    {"runs", "list, show, compare runs and a metric's history"},
    {"traffic", "set, show and clear a model's traffic policy (canary, sticky, shadow)"},
};

/* 1 when c is word, or a subcommand of group word. */
static int in_group(const cli_cmd *c, const char *word)
{
    size_t n = strlen(word);
    return strncmp(c->name, word, n) == 0 && c->name[n] == ' ';
}

static const cli_cmd *find_cmd(const char *w1, const char *w2)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        const char *name = commands[i]->name;
        size_t n = strlen(w1);
        if (strcmp(name, w1) == 0)
            return commands[i];
        if (w2 && strncmp(name, w1, n) == 0 && name[n] == ' ' && strcmp(name + n + 1, w2) == 0)
            return commands[i];
    }
    return NULL;
}

static int is_group(const char *word)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (in_group(commands[i], word))
            return 1;
    return 0;
}

static void help(FILE *out)
{
    fprintf(out, "usage: quern [--json] COMMAND [ARGS]\n\n"
                 "Quern: from raw events to a model in production, and back when the world changes.\n\n"
                 "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        const cli_cmd *c = commands[i];
        const char *sp = strchr(c->name, ' ');
        if (!c->summary)
            continue;
        if (!sp) {
            fprintf(out, "  %-10s %s\n", c->name, c->summary);
            continue;
        }
        if (i > 0 && strncmp(commands[i - 1]->name, c->name, (size_t)(sp - c->name + 1)) == 0)
            continue; /* the group is listed once */
        size_t glen = (size_t)(sp - c->name);
        for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
            if (glen == strlen(groups[g].name) && strncmp(c->name, groups[g].name, glen) == 0)
                fprintf(out, "  %-10s %s\n", groups[g].name, groups[g].summary);
    }
    fprintf(out, "\nglobal options (anywhere on the line):\n");
    cli_help_globals(out);
    fprintf(out, "\nenvironment: QUERN_HOME (state, default ./.quern), QUERN_PORT_BASE (default 7700),\n"
                 "QUERN_REGISTRY, QUERN_INGEST, QUERN_PREP, QUERN_TRAIN, QUERN_SERVE, QUERN_MONITOR,\n"
                 "QUERN_ALERT (service URLs), QUERN_TOKEN (bearer token).\n"
                 "`quern help COMMAND` (or `quern COMMAND --help`) describes a command. Exit codes: 0 done,\n"
                 "1 failed or unreachable, 2 bad usage or invalid request, 3 not found, 4 conflict.\n");
}

/* `quern models` alone: the subcommands of the group. */
static void help_group(FILE *out, const char *group)
{
    fprintf(out, "usage: quern %s SUBCOMMAND [ARGS]\n\nsubcommands:\n", group);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (in_group(commands[i], group) && commands[i]->summary) {
            cli_usage_line(out, "  ", commands[i]);
            fprintf(out, "      %s\n", commands[i]->summary);
        }
    fprintf(out, "`quern help %s SUBCOMMAND` describes one.\n", group);
}

/* The words naming the command: the first two arguments that are not
 * options (options may come before, between or after them). */
static int command_words(int argc, char **argv, int *w)
{
    int n = 0;
    for (int i = 1; i < argc && n < 3; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (argv[i][0] == '-' && argv[i][1])
            continue;
        w[n++] = i;
    }
    return n;
}

static int run(int argc, char **argv)
{
    int w[3] = {0, 0, 0};
    int nw = command_words(argc, argv, w);
    const char *w1 = nw > 0 ? argv[w[0]] : NULL, *w2 = nw > 1 ? argv[w[1]] : NULL;
    int asking = 0; /* `quern help ...` */
    if (w1 && strcmp(w1, "help") == 0) {
        asking = 1;
        w[0] = w[1], w[1] = w[2];
        w1 = w2, w2 = nw > 2 ? argv[w[2]] : NULL;
        nw--;
    }
    /* The global options before the command. */
    for (int i = 1; i < argc && (nw == 0 || i < w[0]); i++) {
        if (strcmp(argv[i], "--json") == 0)
            g_cli.json = 1;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            g_cli.help = 1;
        else if (strcmp(argv[i], "--version") == 0)
            g_cli.version = 1;
        else if (argv[i][0] == '-' && nw == 0) {
            cli_err("unknown option %s", argv[i]);
            help(stderr);
            return CLI_USAGE;
        }
    }
    if (!w1) {
        if (g_cli.version && !asking) {
            printf("quern %s\n", QUERN_VERSION);
            return CLI_OK;
        }
        help(asking || g_cli.help ? stdout : stderr);
        return asking || g_cli.help ? CLI_OK : CLI_USAGE;
    }
    const cli_cmd *c = find_cmd(w1, w2);
    if (!c) {
        if (is_group(w1)) {
            if (w2 && !asking && !g_cli.help) {
                cli_err("%s has no subcommand \"%s\"", w1, w2);
                help_group(stderr, w1);
                return CLI_USAGE;
            }
            help_group(asking || g_cli.help ? stdout : stderr, w1);
            return asking || g_cli.help ? CLI_OK : CLI_USAGE;
        }
        cli_err("unknown command \"%s\"; `quern help` lists them", w1);
        return CLI_USAGE;
    }
    if (asking) {
        cli_help_cmd(stdout, c);
        return CLI_OK;
    }
    /* Everything but the command's words goes to its parser. */
    int skip1 = w[0], skip2 = strchr(c->name, ' ') ? w[1] : -1;
    char **rest = qn_arena_alloc(g_cli.arena, (size_t)argc * sizeof *rest);
    int nrest = 0;
    if (!rest) {
        cli_err("out of memory");
        return CLI_FAILED;
    }
    for (int i = 1; i < argc; i++)
        if (i != skip1 && i != skip2)
            rest[nrest++] = argv[i];
    void *opts = NULL;
    int rc = cli_parse(c, nrest, rest, &opts);
    if (rc != CLI_OK)
        return rc;
    if (g_cli.help) {
        cli_help_cmd(stdout, c);
        return CLI_OK;
    }
    if (g_cli.version) {
        printf("quern %s\n", QUERN_VERSION);
        return CLI_OK;
    }
    return c->run(opts);
}

int main(int argc, char **argv)
{
    g_cli.tty = isatty(STDOUT_FILENO);
    g_cli.home = getenv("QUERN_HOME") && *getenv("QUERN_HOME") ? getenv("QUERN_HOME") : "./.quern";
    const char *base = getenv("QUERN_PORT_BASE");
    g_cli.port_base = base && atoi(base) > 0 && atoi(base) < 65000 ? atoi(base) : 7700;
    g_cli.arena = qn_arena_new(0);
    g_cli.scratch = qn_arena_new(0);
    if (!g_cli.arena || !g_cli.scratch) {
        fprintf(stderr, "quern: out of memory\n");
        return CLI_FAILED;
    }
    int rc = run(argc, argv);
    fflush(stdout);
    qn_arena_free(g_cli.scratch);
    qn_arena_free(g_cli.arena);
    return rc;
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
    /* "http://127.0.0.1:" and a port below 65536 always fit. */
    static char urls[16][32];
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
            cli_err("%s", err.msg);
            exit(CLI_USAGE);
        }
    }
    return clients[k];
}

/* ---- memory ---------------------------------------------------------------- */

static void out_of_memory(void)
{
    cli_err("out of memory");
    exit(CLI_FAILED);
}

static char *vformat(qn_arena *a, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    char *s = n >= 0 ? qn_arena_alloc(a, (size_t)n + 1) : NULL;
    if (!s)
        out_of_memory();
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

char *cli_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = vformat(g_cli.arena, fmt, ap);
    va_end(ap);
    return s;
}

static char *scratch_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *scratch_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = vformat(g_cli.scratch, fmt, ap);
    va_end(ap);
    return s;
}

void cli_scratch_reset(void)
{
    qn_arena_reset(g_cli.scratch);
}

const char *cli_enc(const char *s)
{
    /* At most three bytes out per byte in. */
    char *out = qn_arena_alloc(g_cli.arena, strlen(s) * 3 + 1);
    if (!out)
        out_of_memory();
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            out[o++] = (char)*p;
        } else {
            static const char hex[] = "0123456789ABCDEF";
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
    return out;
}

/* ---- errors ---------------------------------------------------------------- */

int cli_exit_code(int code)
{
    switch (code) {
    case QN_OK: return CLI_OK;
    case QN_NOT_FOUND: return CLI_NOT_FOUND;
    case QN_ALREADY_EXISTS: case QN_ABORTED: return CLI_CONFLICT;
    }
    return qn_code_is_client(code) ? CLI_USAGE : CLI_FAILED;
}

void cli_progress(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
    g_cli.line_open = 1;
}

void cli_err(const char *fmt, ...)
{
    char small[1024], *msg = small;
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    if (n >= (int)sizeof small && (msg = malloc((size_t)n + 1)) != NULL)
        vsnprintf(msg, (size_t)n + 1, fmt, ap2);
    else if (n >= (int)sizeof small)
        msg = small; /* out of memory: the message cut short beats none */
    va_end(ap2);
    va_end(ap);
    size_t len = strlen(msg);
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
        len--;
    fflush(stdout);
    if (g_cli.line_open) {
        fputc('\n', stderr);
        g_cli.line_open = 0;
    }
    fprintf(stderr, "quern: %.*s\n", (int)len, msg);
    if (msg != small)
        free(msg);
}

int cli_fail(const char *service, const qn_err *err)
{
    cli_err("%s", err->msg);
    if (service && (err->code == QN_UNAVAILABLE || err->code == QN_DEADLINE_EXCEEDED))
        cli_err("is quern-%s running? `quern up --detach` starts every service; `quern status` shows them",
                service);
    return cli_exit_code(err->code);
}

/* ---- output --------------------------------------------------------------- */

void cli_print_json(const json_t *v)
{
    char *s = qn_json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY);
    if (s)
        puts(s);
    free(s);
}

/* v as text: strings as they are, numbers short, others compact JSON. */
static const char *value_text(const json_t *v)
{
    if (!v || json_is_null(v))
        return "-";
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v))
        return scratch_printf("%lld", (long long)json_integer_value(v));
    if (json_is_real(v))
        return scratch_printf("%.4g", json_real_value(v));
    if (json_is_boolean(v))
        return json_is_true(v) ? "yes" : "no";
    char *s = qn_json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s)
        out_of_memory();
    const char *out = scratch_printf("%s", s);
    free(s);
    return out;
}

const char *cli_field(const json_t *row, const char *path)
{
    const json_t *v = row;
    const char *p = path;
    while (v && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        v = json_object_getn(v, p, n);
        p += n + (dot ? 1 : 0);
    }
    return value_text(v);
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

/* Objects of scalars as "k=v, k=v"; arrays of scalars as "a, b"; else JSON. */
static const char *kv_value(const json_t *v)
{
    const char *key;
    const json_t *x;
    size_t i;
    if (json_is_object(v)) {
        if (json_object_size(v) == 0)
            return "-";
        json_object_foreach((json_t *)v, key, x)
            if (json_is_object(x) || json_is_array(x))
                return value_text(v);
        const char *out = "";
        json_object_foreach((json_t *)v, key, x)
            out = scratch_printf("%s%s%s=%s", out, *out ? ", " : "", key, value_text(x));
        return out;
    }
    if (json_is_array(v)) {
        if (json_array_size(v) == 0)
            return "-";
        json_array_foreach(v, i, x)
            if (json_is_object(x) || json_is_array(x))
                return value_text(v);
        const char *out = "";
        json_array_foreach(v, i, x)
            out = scratch_printf("%s%s%s", out, i ? ", " : "", value_text(x));
        return out;
    }
    return value_text(v);
}

void cli_print_kv(const json_t *obj)
{
    if (g_cli.json || !json_is_object(obj)) {
        cli_print_json(obj);
        return;
    }
    const char *key;
    const json_t *v;
    int width = 0;
    json_object_foreach((json_t *)obj, key, v)
        if ((int)strlen(key) > width)
            width = (int)strlen(key);
    json_object_foreach((json_t *)obj, key, v)
        printf(g_cli.tty ? "\033[1m%-*s\033[0m  %s\n" : "%-*s  %s\n", width, key, kv_value(v));
}
