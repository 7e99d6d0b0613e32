/*
 * mlflow_parse.c - the two parsers of outside text behind the MLflow API
 * (mlflow_parse.h): the registry search filter and the few keys of an
 * MLmodel file. Pure functions over their input, kept apart from the
 * handlers so that the fuzz target (tests/fuzz/fuzz_mlflow_parse.c) reaches
 * them without a store.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "registry/mlflow_parse.h"

/* Parses MLflow's registry filter grammar as model_registry.proto and the
 * MLflow docs give it: conditions `key op value` joined by AND (any case),
 * key an identifier (name, run_id, source_path, version_number,
 * tags.<key>, a key in backticks or double quotes), op one of = != LIKE
 * ILIKE IN, value a quoted string ('..' or "..", a quote doubled or
 * backslashed inside), a number, or for IN a parenthesized list of strings.
 * allowed lists the keys this search takes (tags.* always allowed). 0 or
 * QN_INVALID_ARGUMENT naming the offset of the bad token. */
int mlf_filter(qn_arena *a, const char *f, const char *const *allowed, mlf_cond *conds, int *n,
                      qn_err *err)
{
    const char *p = f;
    *n = 0;
#define SKIP() while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++
#define BAD(...) return qn_err_set(err, QN_INVALID_ARGUMENT, __VA_ARGS__)
    SKIP();
    if (!*p)
        return 0;
    for (;;) {
        if (*n == MLF_MAX_CONDS)
            BAD("filter has more than %d conditions", MLF_MAX_CONDS);
        mlf_cond *cd = &conds[(*n)++];
        memset(cd, 0, sizeof *cd);
        /* key */
        size_t k = 0;
        const char *start = p;
        while (*p && (isalnum((unsigned char)*p) || *p == '_' || *p == '.') && k < sizeof cd->key - 1)
            cd->key[k++] = *p++;
        if (k && cd->key[k - 1] == '.' && (*p == '`' || *p == '"')) { /* tags.`my key` */
            char q = *p++;
            while (*p && *p != q && k < sizeof cd->key - 1)
                cd->key[k++] = *p++;
            if (*p != q)
                BAD("filter: unterminated quoted key at character %ld", (long)(start - f) + 1);
            p++;
        }
        cd->key[k] = '\0';
        int ok = strncmp(cd->key, "tags.", 5) == 0 && cd->key[5];
        if (strcmp(cd->key, "tag.") == 0 || strncmp(cd->key, "tag.", 4) == 0) { /* MLflow accepts tag. too */
            memmove(cd->key + 5, cd->key + 4, strlen(cd->key + 4) + 1);
            memcpy(cd->key, "tags.", 5);
            ok = cd->key[5] != '\0';
        }
        for (const char *const *al = allowed; !ok && *al; al++)
            ok = strcmp(cd->key, *al) == 0;
        if (!ok)
            BAD("filter: invalid attribute key '%.64s' at character %ld; valid keys are tags.<key> and %s%s%s%s%s",
                k ? cd->key : start, (long)(start - f) + 1, allowed[0], allowed[1] ? ", " : "",
                allowed[1] ? allowed[1] : "", allowed[1] && allowed[2] ? ", " : "",
                allowed[1] && allowed[2] ? allowed[2] : "");
        SKIP();
        /* op */
        static const char *const ops[] = {"!=", "=", "ILIKE", "LIKE", "IN", NULL};
        const char *opstart = p;
        for (const char *const *o = ops; *o; o++) {
            size_t ol = strlen(*o);
            if (strncasecmp(p, *o, ol) == 0 && (isalpha((unsigned char)**o) ? !isalnum((unsigned char)p[ol]) : 1)) {
                snprintf(cd->op, sizeof cd->op, "%s", *o);
                p += ol;
                break;
            }
        }
        if (!cd->op[0])
            BAD("filter: expected a comparator (=, !=, LIKE, ILIKE, IN) at character %ld", (long)(opstart - f) + 1);
        SKIP();
        /* value(s) */
        int list = strcmp(cd->op, "IN") == 0;
        if (list) {
            if (*p != '(')
                BAD("filter: IN needs a list like ('a', 'b') at character %ld", (long)(p - f) + 1);
            p++;
            SKIP();
        }
        for (;;) {
            const char *vs = p;
            char *buf = qn_arena_alloc(a, strlen(p) + 1);
            size_t bl = 0;
            if (*p == '\'' || *p == '"') {
                char q = *p++;
                for (;;) {
                    if (!*p)
                        BAD("filter: unterminated string at character %ld", (long)(vs - f) + 1);
                    if (*p == '\\' && p[1]) {
                        buf[bl++] = p[1];
                        p += 2;
                    } else if (*p == q && p[1] == q) {
                        buf[bl++] = q;
                        p += 2;
                    } else if (*p == q) {
                        p++;
                        break;
                    } else {
                        buf[bl++] = *p++;
                    }
                }
            } else if (!list && (isdigit((unsigned char)*p) || *p == '-')) {
                while (isdigit((unsigned char)*p) || *p == '-' || *p == '.')
                    buf[bl++] = *p++;
            } else {
                BAD("filter: expected a quoted value at character %ld", (long)(vs - f) + 1);
            }
            buf[bl] = '\0';
            if (cd->nvals == 32)
                BAD("filter: an IN list holds at most 32 values");
            cd->vals[cd->nvals++] = buf;
            SKIP();
            if (!list)
                break;
            if (*p == ',') {
                p++;
                SKIP();
                continue;
            }
            if (*p != ')')
                BAD("filter: expected ',' or ')' at character %ld", (long)(p - f) + 1);
            p++;
            SKIP();
            break;
        }
        if (!*p)
            return 0;
        if (strncasecmp(p, "AND", 3) != 0 || !(p[3] == ' ' || p[3] == '\t' || p[3] == '\n'))
            BAD("filter: expected AND or the end at character %ld (OR is not supported)", (long)(p - f) + 1);
        p += 3;
        SKIP();
    }
#undef SKIP
#undef BAD
}

/* SQL LIKE: % any run, _ any one byte; ci folds ASCII case. Greedy with
 * a return to the last %, so O(len(s) * len(pat)) whatever the pattern
 * (a naive recursion is exponential in the number of %). */
static int like(const char *s, const char *pat, int ci)
{
    const char *star = NULL, *from = NULL;
    while (*s) {
        if (*pat == '%') {
            star = pat++;
            from = s;
        } else if (*pat && (*pat == '_' || (ci ? tolower((unsigned char)*pat) == tolower((unsigned char)*s)
                                               : *pat == *s))) {
            pat++;
            s++;
        } else if (star) {
            pat = star + 1;
            s = ++from;
        } else {
            return 0;
        }
    }
    while (*pat == '%')
        pat++;
    return *pat == '\0';
}

/* The value key names in a RegisteredModel or ModelVersion; NULL when unset. */
static const char *item_value(const json_t *item, const char *key)
{
    if (strncmp(key, "tags.", 5) == 0) {
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(item, "tags"), i, t) {
            if (strcmp(json_string_value(json_object_get(t, "key")), key + 5) == 0)
                return json_string_value(json_object_get(t, "value"));
        }
        return NULL;
    }
    if (strcmp(key, "source_path") == 0)
        key = "source";
    else if (strcmp(key, "version_number") == 0)
        key = "version";
    return json_string_value(json_object_get(item, key));
}

int mlf_matches(const json_t *item, const mlf_cond *conds, int n)
{
    for (int i = 0; i < n; i++) {
        const mlf_cond *cd = &conds[i];
        const char *v = item_value(item, cd->key);
        int hit = 0;
        if (!strcmp(cd->op, "="))
            hit = v && !strcmp(v, cd->vals[0]);
        else if (!strcmp(cd->op, "!="))
            hit = v && strcmp(v, cd->vals[0]);
        else if (!strcmp(cd->op, "LIKE"))
            hit = v && like(v, cd->vals[0], 0);
        else if (!strcmp(cd->op, "ILIKE"))
            hit = v && like(v, cd->vals[0], 1);
        else
            for (int j = 0; v && j < cd->nvals && !hit; j++)
                hit = !strcmp(v, cd->vals[j]);
        if (!hit)
            return 0;
    }
    return 1;
}

/* The scalar value of `key:` on an indented line, unquoted, in buf; a
 * single-quoted value folded over later lines is joined (YAML folding: a
 * line break is a space, '' is '). NULL when the line holds no such key. */
static char *yaml_value(const char *line, const char *next, const char *key, int indent, char **end_line)
{
    int ind = 0;
    while (line[ind] == ' ')
        ind++;
    size_t kl = strlen(key);
    if (ind != indent || strncmp(line + ind, key, kl) != 0 || line[ind + kl] != ':')
        return NULL;
    const char *v = line + ind + kl + 1;
    while (*v == ' ')
        v++;
    size_t cap = strlen(v) + (next ? strlen(next) : 0) + 1;
    char *out = malloc(cap), *o = out;
    if (!out)
        return NULL;
    *end_line = NULL;
    if (*v != '\'') {
        size_t n = strcspn(v, "\n");
        memcpy(o, v, n);
        o[n] = '\0';
        while (n && (o[n - 1] == ' ' || o[n - 1] == '\r'))
            o[--n] = '\0';
        if (n >= 2 && o[0] == '"' && o[n - 1] == '"') {
            memmove(o, o + 1, n - 2);
            o[n - 2] = '\0';
        }
        return out;
    }
    const char *p = v + 1;
    for (;;) {
        if (!*p)
            break;
        if (*p == '\'' && p[1] == '\'') {
            *o++ = '\'';
            p += 2;
        } else if (*p == '\'') {
            p++;
            break;
        } else if (*p == '\n') {
            while (o > out && o[-1] == ' ')
                o--;
            *o++ = ' ';
            p++;
            while (*p == ' ')
                p++;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    *end_line = (char *)p;
    return out;
}

void mlf_mlmodel_free(mlf_mlmodel *m)
{
    free(m->xgb_data);
    free(m->xgb_format);
    free(m->sig_inputs);
}

/* Reads the keys we use: flavors.xgboost.{data,model_format} and
 * signature.inputs. */
void mlf_mlmodel_parse(const char *text, mlf_mlmodel *m)
{
    enum { NONE, FLAVORS, XGB, SIGNATURE } sect = NONE;
    memset(m, 0, sizeof *m);
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        const char *next = nl ? nl + 1 : NULL;
        int ind = 0;
        while (line[ind] == ' ')
            ind++;
        if (line[ind] && line[ind] != '\n' && line[ind] != '#') {
            if (ind == 0)
                sect = strncmp(line, "flavors:", 8) == 0 ? FLAVORS : strncmp(line, "signature:", 10) == 0 ? SIGNATURE
                                                                                                         : NONE;
            else if (ind == 2 && (sect == FLAVORS || sect == XGB))
                sect = strncmp(line + 2, "xgboost:", 8) == 0 ? (m->has_xgboost = 1, XGB) : FLAVORS;
            char *endl = NULL, *v;
            if (sect == XGB && ind == 4) {
                if ((v = yaml_value(line, next, "data", 4, &endl))) {
                    free(m->xgb_data);
                    m->xgb_data = v;
                } else if ((v = yaml_value(line, next, "model_format", 4, &endl))) {
                    free(m->xgb_format);
                    m->xgb_format = v;
                }
            } else if (sect == SIGNATURE && ind == 2 && (v = yaml_value(line, next, "inputs", 2, &endl))) {
                free(m->sig_inputs);
                m->sig_inputs = v;
            }
            if (endl) { /* a folded value: go on after its closing quote's line */
                nl = strchr(endl, '\n');
                next = nl ? nl + 1 : NULL;
            }
        }
        line = next;
    }
}

