/*
 * config.c - table-driven service configuration (see config.h).
 *
 * Two passes: the command line is scanned first and only remembers which
 * option got which text (so a repeated flag simply wins by coming last, and
 * --help can be answered before anything is parsed); then every option is
 * resolved once, from the flag, else the environment, else the default, and
 * parsed and bounds-checked with an error naming where the text came from.
 */
#include "core/config.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef QUERN_VERSION
#define QUERN_VERSION "unknown"
#endif

#define HOME_VAR "${QUERN_HOME}"

static int parse_ll(const char *s, long long *out, const char **rest)
{
    char *end;
    if (!s || !*s || (*s != '-' && *s != '+' && (*s < '0' || *s > '9')))
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE || end == s)
        return -1;
    *out = v;
    *rest = end;
    return 0;
}

/* Multiplies with an overflow check. */
static int scale(long long v, long long mul, long long *out)
{
    if (v != 0 && (v > LLONG_MAX / mul || v < LLONG_MIN / mul))
        return -1;
    *out = v * mul;
    return 0;
}

int qn_parse_size(const char *s, long long *out)
{
    long long v, mul = 1;
    const char *rest;
    if (parse_ll(s, &v, &rest) < 0)
        return QN_INVALID_ARGUMENT;
    switch (*rest) {
    case '\0': break;
    case 'k': case 'K': mul = 1LL << 10; rest++; break;
    case 'm': case 'M': mul = 1LL << 20; rest++; break;
    case 'g': case 'G': mul = 1LL << 30; rest++; break;
    case 't': case 'T': mul = 1LL << 40; rest++; break;
    case 'b': case 'B': break;
    default: return QN_INVALID_ARGUMENT;
    }
    /* Accept the usual spellings after the multiplier: K, KB, KiB; and B. */
    if (strcasecmp(rest, "") != 0 && strcasecmp(rest, "b") != 0 &&
        !(mul > 1 && strcasecmp(rest, "ib") == 0))
        return QN_INVALID_ARGUMENT;
    if (scale(v, mul, out) < 0)
        return QN_OUT_OF_RANGE;
    return 0;
}

int qn_parse_duration_ms(const char *s, long long *out)
{
    long long v, mul;
    const char *rest;
    if (parse_ll(s, &v, &rest) < 0)
        return QN_INVALID_ARGUMENT;
    if (strcmp(rest, "ms") == 0)
        mul = 1;
    else if (strcmp(rest, "s") == 0)
        mul = 1000;
    else if (strcmp(rest, "m") == 0)
        mul = 60 * 1000;
    else if (strcmp(rest, "h") == 0)
        mul = 3600 * 1000;
    else if (*rest == '\0' && v == 0)
        mul = 1; /* zero needs no unit */
    else
        return QN_INVALID_ARGUMENT;
    if (scale(v, mul, out) < 0)
        return QN_OUT_OF_RANGE;
    return 0;
}

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < QN_NELEM(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0)
            return *out = 1, 0;
        if (strcasecmp(s, no[i]) == 0)
            return *out = 0, 0;
    }
    return QN_INVALID_ARGUMENT;
}

/* A copy of s with every ${QUERN_HOME} replaced; NULL when out of memory. */
static char *expand_home(const char *s)
{
    const char *home = getenv("QUERN_HOME");
    if (!home || !*home)
        home = "./.quern";
    size_t hl = strlen(home), vl = strlen(HOME_VAR), n = 0;
    for (const char *p = strstr(s, HOME_VAR); p; p = strstr(p + vl, HOME_VAR))
        n++;
    char *out = malloc(strlen(s) + n * hl + 1), *o = out;
    if (!out)
        return NULL;
    for (const char *p = s;;) {
        const char *q = strstr(p, HOME_VAR);
        size_t l = q ? (size_t)(q - p) : strlen(p);
        memcpy(o, p, l);
        o += l;
        if (!q)
            break;
        memcpy(o, home, hl);
        o += hl;
        p = q + vl;
    }
    *o = '\0';
    return out;
}

static const char *type_hint(qn_cfg_type t)
{
    switch (t) {
    case QN_CFG_STRING: return " STR";
    case QN_CFG_INT: return " N";
    case QN_CFG_BOOL: return "[=BOOL]";
    case QN_CFG_SIZE: return " SIZE";
    case QN_CFG_DURATION: return " DURATION";
    }
    return "";
}

void qn_config_help(FILE *out, const qn_cfg_opt *opts, size_t n, const char *prog,
                    const char *summary)
{
    fprintf(out, "Usage: %s [OPTIONS]\n", prog);
    if (summary && *summary)
        fprintf(out, "%s\n", summary);
    fprintf(out, "\nOptions (a flag beats the environment, which beats the default):\n");
    for (size_t i = 0; i < n; i++) {
        const qn_cfg_opt *o = &opts[i];
        char flag[96];
        snprintf(flag, sizeof flag, "--%s%s", o->name, type_hint(o->type));
        fprintf(out, "  %-26s %s", flag, o->help ? o->help : "");
        if (o->env)
            fprintf(out, " [env %s]", o->env);
        if (o->def)
            fprintf(out, " [default %s]", o->def);
        if ((o->type == QN_CFG_INT || o->type == QN_CFG_SIZE || o->type == QN_CFG_DURATION) &&
            !(o->min == 0 && o->max == 0))
            fprintf(out, " [%lld..%lld%s]", o->min, o->max,
                    o->type == QN_CFG_DURATION ? " ms" : o->type == QN_CFG_SIZE ? " bytes" : "");
        fputc('\n', out);
    }
    fprintf(out, "  %-26s %s\n", "--help", "Print this help and exit");
    fprintf(out, "  %-26s %s\n", "--version", "Print the version and exit");
    fprintf(out, "\nSizes take K, M, G, T (powers of 1024); durations take ms, s, m, h.\n");
}

void qn_config_free(const qn_cfg_opt *opts, size_t n, void *cfg)
{
    for (size_t i = 0; i < n; i++)
        if (opts[i].type == QN_CFG_STRING) {
            char **slot = (char **)((char *)cfg + opts[i].offset);
            free(*slot);
            *slot = NULL;
        }
}

/* Where a value came from, for error messages. */
static void source_name(const qn_cfg_opt *o, int src, char *buf, size_t cap)
{
    if (src == 0)
        snprintf(buf, cap, "--%s", o->name);
    else if (src == 1)
        snprintf(buf, cap, "%s", o->env);
    else
        snprintf(buf, cap, "the default of --%s", o->name);
}

static int store(const qn_cfg_opt *o, void *cfg, const char *text, int src, qn_err *err)
{
    char where[128];
    char *base = (char *)cfg + o->offset;
    long long v = 0;
    int rc = 0;

    source_name(o, src, where, sizeof where);
    switch (o->type) {
    case QN_CFG_STRING: {
        char **slot = (char **)base;
        free(*slot);
        *slot = NULL;
        if (!text)
            return 0;
        *slot = src == 2 ? expand_home(text) : strdup(text);
        if (!*slot)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "%s: out of memory", where);
        return 0;
    }
    case QN_CFG_BOOL: {
        int b = 0;
        if (text && parse_bool(text, &b) < 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "%s: \"%s\" is not a boolean (true/false, 1/0, yes/no, on/off)",
                              where, text);
        *(int *)base = b;
        return 0;
    }
    case QN_CFG_INT: {
        const char *rest = NULL;
        if (text && (parse_ll(text, &v, &rest) < 0 || *rest))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: \"%s\" is not an integer", where,
                              text);
        break;
    }
    case QN_CFG_SIZE:
        if (text && (rc = qn_parse_size(text, &v)) < 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              rc == QN_OUT_OF_RANGE ? "%s: \"%s\" is too large"
                                                    : "%s: \"%s\" is not a size (e.g. 512K, 4G)",
                              where, text);
        break;
    case QN_CFG_DURATION:
        if (text && (rc = qn_parse_duration_ms(text, &v)) < 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              rc == QN_OUT_OF_RANGE
                                  ? "%s: \"%s\" is too long"
                                  : "%s: \"%s\" is not a duration (e.g. 250ms, 10s, 2m, 1h)",
                              where, text);
        break;
    }
    if (text && !(o->min == 0 && o->max == 0) && (v < o->min || v > o->max))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: %s is out of range %lld..%lld%s", where,
                          text, o->min, o->max,
                          o->type == QN_CFG_DURATION ? " ms" : o->type == QN_CFG_SIZE ? " bytes" : "");
    *(long long *)base = v;
    return 0;
}

static const qn_cfg_opt *find_opt(const qn_cfg_opt *opts, size_t n, const char *name, size_t len,
                                  size_t *idx)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0) {
            *idx = i;
            return &opts[i];
        }
    return NULL;
}

int qn_config_parse(const qn_cfg_opt *opts, size_t n, void *cfg, const char *prog,
                    const char *summary, int argc, char **argv, qn_err *err)
{
    const char **given = calloc(n ? n : 1, sizeof *given);
    int rc = 0;

    if (!given)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory parsing the command line");
    /* Strings start NULL so that a failure half-way frees cleanly. */
    for (size_t i = 0; i < n; i++)
        if (opts[i].type == QN_CFG_STRING)
            *(char **)((char *)cfg + opts[i].offset) = NULL;

    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            qn_config_help(stdout, opts, n, prog, summary);
            rc = QN_CONFIG_EXIT;
            goto out;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("%s %s\n", prog, QUERN_VERSION);
            rc = QN_CONFIG_EXIT;
            goto out;
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "unexpected argument \"%s\"; see --help",
                            arg);
            goto out;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name), i;
        const qn_cfg_opt *o = find_opt(opts, n, name, len, &i);
        if (!o) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "unknown flag --%.*s; see --help",
                            (int)len, name);
            goto out;
        }
        if (eq)
            given[i] = eq + 1;
        else if (o->type == QN_CFG_BOOL)
            given[i] = "true";
        else if (a + 1 < argc)
            given[i] = argv[++a];
        else {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "flag --%s needs a value", o->name);
            goto out;
        }
    }

    for (size_t i = 0; i < n; i++) {
        const qn_cfg_opt *o = &opts[i];
        const char *text = given[i];
        int src = 0;
        if (!text && o->env) {
            const char *e = getenv(o->env);
            if (e && *e) {
                text = e;
                src = 1;
            }
        }
        if (!text) {
            text = o->def;
            src = 2;
        }
        if ((rc = store(o, cfg, text, src, err)) < 0)
            goto out;
    }
out:
    if (rc != 0)
        qn_config_free(opts, n, cfg);
    free(given);
    return rc;
}
