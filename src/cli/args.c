/*
 * args.c - the command line of a quern command, parsed from its table (see
 * cli.h), and the help printed from the same table.
 *
 * An entry whose name is upper case is an argument, taken in table order
 * from the words that are not options; the others are --options (--name
 * VALUE or --name=VALUE; flags take no value). "--" ends the options. The
 * global options (--json, --help/-h, --version) are accepted anywhere. What
 * is wrong is said once, with the usage line, and exits 2: an unknown
 * option, a missing value or argument, a number out of bounds, a value not
 * among the choices.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/config.h"

static const cli_opt globals[] = {
    {"json", 0, CLI_FLAG, NULL, 0, 0, NULL, 0, "machine-readable output (JSON)", offsetof(cli, json)},
    {"help", 'h', CLI_FLAG, NULL, 0, 0, NULL, 0, "describe the command and exit", offsetof(cli, help)},
    {"version", 0, CLI_FLAG, NULL, 0, 0, NULL, 0, "print the version and exit", offsetof(cli, version)},
};

static int is_arg(const cli_opt *o)
{
    return isupper((unsigned char)o->name[0]);
}

static const char *type_hint(const cli_opt *o)
{
    if (o->choices)
        return o->choices;
    switch (o->type) {
    case CLI_INT: return "N";
    case CLI_SIZE: return "SIZE";
    case CLI_FLAG: return NULL;
    case CLI_STR: case CLI_LIST: break;
    }
    /* --file FILE, --dataset NAME...: the name in capitals says it best */
    static char up[32];
    size_t i = 0;
    for (; o->name[i] && i + 1 < sizeof up; i++)
        up[i] = o->name[i] == '-' ? '_' : (char)toupper((unsigned char)o->name[i]);
    up[i] = '\0';
    return up;
}

void cli_usage_line(FILE *f, const char *prefix, const cli_cmd *c)
{
    int optional = 0;
    fprintf(f, "%squern %s", prefix, c->name);
    for (size_t i = 0; i < c->nopts; i++) {
        const cli_opt *o = &c->opts[i];
        if (is_arg(o))
            fprintf(f, o->required ? " %s%s" : " [%s%s]", o->name, o->type == CLI_LIST ? "..." : "");
        else if (o->required)
            fprintf(f, " --%s %s", o->name, type_hint(o));
        else
            optional = 1;
    }
    fprintf(f, "%s\n", optional ? " [OPTIONS]" : "");
}

static void opt_line(FILE *f, const cli_opt *o)
{
    char flag[96];
    const char *hint = type_hint(o);
    if (is_arg(o))
        snprintf(flag, sizeof flag, "%s", o->name);
    else if (o->short_name)
        snprintf(flag, sizeof flag, "-%c, --%s%s%s", o->short_name, o->name, hint ? " " : "", hint ? hint : "");
    else
        snprintf(flag, sizeof flag, "--%s%s%s", o->name, hint ? " " : "", hint ? hint : "");
    fprintf(f, "  %-24s %s", flag, o->help ? o->help : "");
    if (o->required && !is_arg(o))
        fprintf(f, " (required)");
    if (o->type == CLI_LIST)
        fprintf(f, " (may be repeated)");
    if (o->def)
        fprintf(f, " [default %s]", o->def);
    if ((o->type == CLI_INT || o->type == CLI_SIZE) && !(o->min == 0 && o->max == 0))
        fprintf(f, " [%lld..%lld%s]", o->min, o->max, o->type == CLI_SIZE ? " bytes" : "");
    fputc('\n', f);
}

void cli_help_globals(FILE *f)
{
    for (size_t i = 0; i < sizeof globals / sizeof globals[0]; i++)
        opt_line(f, &globals[i]);
}

void cli_help_cmd(FILE *f, const cli_cmd *c)
{
    cli_usage_line(f, "usage: ", c);
    if (c->summary)
        fprintf(f, "\n%s\n", c->summary);
    if (c->about)
        fprintf(f, "%s\n", c->about);
    int args = 0, opts = 0;
    for (size_t i = 0; i < c->nopts; i++) {
        if (is_arg(&c->opts[i]))
            args++;
        else
            opts++;
    }
    if (args) {
        fprintf(f, "\narguments:\n");
        for (size_t i = 0; i < c->nopts; i++)
            if (is_arg(&c->opts[i]))
                opt_line(f, &c->opts[i]);
    }
    if (opts) {
        fprintf(f, "\noptions:\n");
        for (size_t i = 0; i < c->nopts; i++)
            if (!is_arg(&c->opts[i]))
                opt_line(f, &c->opts[i]);
    }
    fprintf(f, "\nglobal options (anywhere on the line):\n");
    cli_help_globals(f);
    fprintf(f, "\nSizes take K, M, G (powers of 1024). Exit codes: 0 done, 1 failed or unreachable,\n"
               "2 bad usage or invalid request, 3 not found, 4 conflict.\n");
}

static int usage_error(const cli_cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const cli_cmd *c, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    char *msg = n >= 0 ? qn_arena_alloc(g_cli.arena, (size_t)n + 1) : NULL;
    if (msg)
        vsnprintf(msg, (size_t)n + 1, fmt, ap);
    va_end(ap);
    cli_err("%s %s", c->name, msg ? msg : "was given bad arguments");
    cli_usage_line(stderr, "usage: ", c);
    fprintf(stderr, "`quern help %s` describes every option.\n", c->name);
    return CLI_USAGE;
}

/* Stores text as o's value in base. */
static int store(const cli_cmd *c, const cli_opt *o, void *base, const char *text)
{
    char *slot = (char *)base + o->offset;
    char label[160];
    snprintf(label, sizeof label, is_arg(o) ? "%s" : "--%s", o->name);
    switch (o->type) {
    case CLI_FLAG:
        *(int *)slot = 1;
        return CLI_OK;
    case CLI_STR:
        if (o->choices) {
            size_t n = strlen(text);
            const char *p = o->choices;
            int ok = 0;
            while (*p && !ok) {
                size_t k = strcspn(p, "|");
                ok = k == n && strncmp(p, text, n) == 0;
                p += k + (p[k] == '|');
            }
            if (!ok) {
                char want[200];
                snprintf(want, sizeof want, "\"%.60s\" is not one of %s", text, o->choices);
                return usage_error(c, "%s: %s", label, want);
            }
        }
        *(const char **)slot = text;
        return CLI_OK;
    case CLI_LIST: {
        cli_list *l = (cli_list *)slot;
        const char **v = qn_arena_alloc(g_cli.arena, (l->n + 1) * sizeof *v);
        if (!v) {
            cli_err("out of memory");
            exit(CLI_FAILED);
        }
        if (l->n)
            memcpy(v, l->v, l->n * sizeof *v);
        v[l->n++] = text;
        l->v = v;
        return CLI_OK;
    }
    case CLI_INT:
    case CLI_SIZE: {
        long long v = 0;
        int bad;
        if (o->type == CLI_SIZE) {
            bad = qn_parse_size(text, &v) < 0;
        } else {
            char *end;
            errno = 0;
            v = strtoll(text, &end, 10);
            bad = !*text || *end || errno == ERANGE;
        }
        char why[200];
        if (bad) {
            snprintf(why, sizeof why, "\"%.60s\" is not %s", text,
                     o->type == CLI_SIZE ? "a size (e.g. 16M)" : "a whole number");
            return usage_error(c, "%s: %s", label, why);
        }
        if (!(o->min == 0 && o->max == 0) && (v < o->min || v > o->max)) {
            snprintf(why, sizeof why, "%.60s is out of range %lld..%lld", text, o->min, o->max);
            return usage_error(c, "%s: %s", label, why);
        }
        *(long long *)slot = v;
        return CLI_OK;
    }
    }
    return CLI_OK;
}

/* The option named name (without dashes, n bytes) in c's table or the globals. */
static const cli_opt *find_opt(const cli_cmd *c, const char *name, size_t n, char short_name, void **base,
                               void *opts)
{
    for (size_t i = 0; i < c->nopts; i++) {
        const cli_opt *o = &c->opts[i];
        if (is_arg(o))
            continue;
        if (short_name ? o->short_name == short_name : strlen(o->name) == n && strncmp(o->name, name, n) == 0) {
            *base = opts;
            return o;
        }
    }
    for (size_t i = 0; i < sizeof globals / sizeof globals[0]; i++) {
        const cli_opt *o = &globals[i];
        if (short_name ? o->short_name == short_name : strlen(o->name) == n && strncmp(o->name, name, n) == 0) {
            *base = &g_cli;
            return o;
        }
    }
    return NULL;
}

int cli_parse(const cli_cmd *c, int argc, char **argv, void **out)
{
    void *opts = qn_arena_calloc(g_cli.arena, 1, c->size ? c->size : 1);
    if (!opts) {
        cli_err("out of memory");
        return CLI_FAILED;
    }
    int rc;
    for (size_t i = 0; i < c->nopts; i++)
        if (c->opts[i].def && (rc = store(c, &c->opts[i], opts, c->opts[i].def)) != CLI_OK)
            return rc;
    /* Each argument table entry, in order; past the last, words are extra. */
    size_t next_arg = 0;
    int only_args = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!only_args && strcmp(a, "--") == 0) {
            only_args = 1;
            continue;
        }
        if (!only_args && a[0] == '-' && a[1]) {
            const char *name = a[1] == '-' ? a + 2 : a + 1;
            const char *eq = a[1] == '-' ? strchr(name, '=') : NULL;
            size_t n = eq ? (size_t)(eq - name) : strlen(name);
            void *base = NULL;
            const cli_opt *o = a[1] == '-' ? find_opt(c, name, n, 0, &base, opts)
                               : n == 1    ? find_opt(c, NULL, 0, name[0], &base, opts)
                                           : NULL;
            if (!o)
                return usage_error(c, "has no option %s", a);
            const char *value = NULL;
            if (o->type == CLI_FLAG) {
                if (eq)
                    return usage_error(c, "--%s takes no value", o->name);
            } else if (eq) {
                value = eq + 1;
            } else if (i + 1 < argc) {
                value = argv[++i];
            } else {
                return usage_error(c, "--%s needs a value", o->name);
            }
            if ((rc = store(c, o, base, value)) != CLI_OK)
                return rc;
            continue;
        }
        while (next_arg < c->nopts && !is_arg(&c->opts[next_arg]))
            next_arg++;
        if (next_arg >= c->nopts)
            return usage_error(c, "takes no argument \"%.100s\" here", a);
        if ((rc = store(c, &c->opts[next_arg], opts, a)) != CLI_OK)
            return rc;
        if (c->opts[next_arg].type != CLI_LIST) /* a list argument takes every word left */
            next_arg++;
    }
    if (g_cli.help || g_cli.version) {
        *out = opts;
        return CLI_OK;
    }
    for (size_t i = 0; i < c->nopts; i++) {
        const cli_opt *o = &c->opts[i];
        if (!o->required || o->def)
            continue;
        if (is_arg(o) && (o->type == CLI_LIST ? ((const cli_list *)((const char *)opts + o->offset))->n == 0
                                              : i >= next_arg))
            return usage_error(c, "needs %s", o->name);
        if (!is_arg(o)) {
            const char *slot = (const char *)opts + o->offset;
            int given = o->type == CLI_LIST ? ((const cli_list *)slot)->n > 0
                        : o->type == CLI_STR ? *(const char *const *)slot != NULL
                                             : 1;
            if (!given)
                return usage_error(c, "needs --%s", o->name);
        }
    }
    *out = opts;
    return CLI_OK;
}
