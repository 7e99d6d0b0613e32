/*
 * filter.c - MLflow's search grammar for runs: a small hand-written lexer
 * and parser (filter.h says what it accepts) and the compiler that turns a
 * parsed filter and order into SQL over the tracking tables with every
 * value bound, never pasted.
 *
 * Errors point at the token: "filter: expected a comparator at character 14
 * (near \"~ 3\")". Positions are 1-based bytes into the text the client sent.
 */
#include "registry/filter.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- lexer ---------------------------------------------------------------- */

typedef enum { T_END, T_WORD, T_STRING, T_BQUOTE, T_NUMBER, T_OP, T_LPAREN, T_RPAREN, T_COMMA, T_DOT, T_BAD } tok_type;

typedef struct tok {
    tok_type type;
    const char *start; /* in the text */
    size_t len;
    char *text;        /* unquoted string / word (malloc'd), NULL otherwise */
} tok;

typedef struct lexer {
    const char *src;
    const char *p;
    const char *what; /* "filter" or "order_by" */
    int experiments;  /* experiments' grammar: attributes name and times, tags */
    tok cur;
    int oom;
} lexer;

static void tok_clear(tok *t)
{
    free(t->text);
    t->text = NULL;
}

static int is_word(int ch)
{
    return isalnum(ch) || ch == '_';
}

/* Reads a quoted token closed by q; a doubled q stands for one. */
static void lex_quoted(lexer *lx, char q, tok_type type)
{
    const char *s = lx->p + 1;
    size_t cap = strlen(s) + 1, n = 0;
    char *out = malloc(cap);
    if (!out) {
        lx->oom = 1;
        lx->cur.type = T_BAD;
        return;
    }
    while (*s) {
        if (*s == q) {
            if (s[1] == q) {
                out[n++] = q;
                s += 2;
                continue;
            }
            break;
        }
        out[n++] = *s++;
    }
    if (*s != q) { /* unterminated */
        free(out);
        lx->cur.type = T_BAD;
        lx->cur.len = strlen(lx->p);
        return;
    }
    out[n] = '\0';
    lx->cur.type = type;
    lx->cur.text = out;
    lx->cur.len = (size_t)(s + 1 - lx->p);
    lx->p = s + 1;
}

static void lex_next(lexer *lx)
{
    tok_clear(&lx->cur);
    while (*lx->p && isspace((unsigned char)*lx->p))
        lx->p++;
    const char *p = lx->p;
    lx->cur.start = p;
    lx->cur.len = 1;
    lx->cur.type = T_BAD;
    if (!*p) {
        lx->cur.type = T_END;
        lx->cur.len = 0;
        return;
    }
    if (*p == '\'' || *p == '"') {
        lex_quoted(lx, *p, T_STRING);
        return;
    }
    if (*p == '`') {
        lex_quoted(lx, '`', T_BQUOTE);
        return;
    }
    if (isdigit((unsigned char)*p) || ((*p == '-' || *p == '+' || *p == '.') && isdigit((unsigned char)p[1]))) {
        char *end;
        errno = 0;
        (void)strtod(p, &end);
        /* a number must end where a word would not go on (1abc is no number) */
        if (end > p && !is_word((unsigned char)*end) && *end != '.') {
            lx->cur.type = T_NUMBER;
            lx->cur.len = (size_t)(end - p);
            lx->cur.text = strndup(p, lx->cur.len);
            if (!lx->cur.text)
                lx->oom = 1;
            lx->p = end;
            return;
        }
    }
    if (is_word((unsigned char)*p)) {
        const char *e = p;
        while (is_word((unsigned char)*e))
            e++;
        lx->cur.type = T_WORD;
        lx->cur.len = (size_t)(e - p);
        lx->cur.text = strndup(p, lx->cur.len);
        if (!lx->cur.text)
            lx->oom = 1;
        lx->p = e;
        return;
    }
    static const char *const ops[] = {"!=", ">=", "<=", "=", ">", "<", NULL};
    for (int i = 0; ops[i]; i++) {
        size_t n = strlen(ops[i]);
        if (strncmp(p, ops[i], n) == 0) {
            lx->cur.type = T_OP;
            lx->cur.len = n;
            lx->p += n;
            return;
        }
    }
    lx->p++;
    switch (*p) {
    case '(': lx->cur.type = T_LPAREN; break;
    case ')': lx->cur.type = T_RPAREN; break;
    case ',': lx->cur.type = T_COMMA; break;
    case '.': lx->cur.type = T_DOT; break;
    default: lx->cur.type = T_BAD; break;
    }
}

/* The error naming where the current token starts and what is there. */
static int lx_fail(lexer *lx, qn_err *err, const char *expected)
{
    if (lx->oom)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory parsing the %s", lx->what);
    size_t pos = (size_t)(lx->cur.start - lx->src) + 1;
    if (lx->cur.type == T_END)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: expected %s at character %zu (the end of \"%.200s\")",
                          lx->what, expected, pos, lx->src);
    int n = (int)(lx->cur.len ? lx->cur.len : 1);
    if (n > 40)
        n = 40;
    return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: expected %s at character %zu, found \"%.*s\"", lx->what,
                      expected, pos, n, lx->cur.start);
}

static int word_is(const tok *t, const char *w)
{
    return t->type == T_WORD && strcasecmp(t->text, w) == 0;
}

/* ---- identifiers ------------------------------------------------------------ */

typedef struct attr_def {
    const char *name;
    const char *col;
    int numeric;
} attr_def;

static const attr_def attrs[] = {
    {"run_id", "r.run_uuid", 0},       {"run_name", "r.name", 0},   {"status", "r.status", 0},
    {"artifact_uri", "r.artifact_uri", 0}, {"user_id", "r.user_id", 0}, {"start_time", "r.start_time", 1},
    {"created", "r.start_time", 1},    {"end_time", "r.end_time", 1}, {NULL, NULL, 0},
};

/* search_experiments: name and the two times, on experiments aliased e */
static const attr_def exp_attrs[] = {
    {"name", "e.name", 0}, {"creation_time", "e.created_at", 1}, {"last_update_time", "e.updated_at", 1},
    {NULL, NULL, 0},
};

static const attr_def *attr_find(const lexer *lx, const char *name)
{
    for (const attr_def *a = lx->experiments ? exp_attrs : attrs; a->name; a++)
        if (strcasecmp(a->name, name) == 0 ||
            (strcmp(a->col, "r.name") == 0 && strcasecmp(name, "run name") == 0))
            return a;
    return NULL;
}

/* Parses `<type>.<key>`: *kind, *key (malloc'd; an attribute's column), and
 * *numeric for attributes. */
static int parse_ident(lexer *lx, trk_kind *kind, char **key, int *numeric, qn_err *err)
{
    static const struct { const char *w; trk_kind k; } types[] = {
        {"metrics", TRK_METRIC}, {"metric", TRK_METRIC},  {"params", TRK_PARAM},      {"param", TRK_PARAM},
        {"parameters", TRK_PARAM}, {"parameter", TRK_PARAM}, {"tags", TRK_TAG},    {"tag", TRK_TAG},
        {"attributes", TRK_ATTR}, {"attribute", TRK_ATTR}, {"attr", TRK_ATTR},     {"run", TRK_ATTR},
        {"datasets", TRK_DATASET}, {"dataset", TRK_DATASET},
    };
    *key = NULL;
    *numeric = 0;
    size_t i;
    if (lx->cur.type != T_WORD)
        return lx_fail(lx, err, "an identifier such as metrics.<key>, params.<key>, tags.<key> or attributes.<key>");
    for (i = 0; i < sizeof types / sizeof types[0]; i++)
        if (word_is(&lx->cur, types[i].w))
            break;
    if (i == sizeof types / sizeof types[0])
        return lx_fail(lx, err, "metrics., params., tags. or attributes. (the type of the key)");
    *kind = types[i].k;
    lex_next(lx);
    if (lx->cur.type != T_DOT)
        return lx_fail(lx, err, "'.' and a key after the type");
    lex_next(lx);
    const char *kstart = lx->cur.start;
    char *k = NULL;
    if (lx->cur.type == T_STRING || lx->cur.type == T_BQUOTE) {
        k = lx->cur.text;
        lx->cur.text = NULL;
        lex_next(lx);
    } else if (lx->cur.type == T_WORD || lx->cur.type == T_NUMBER) {
        /* a bare key: words and dots, e.g. metrics.val.auc or params.2nd */
        const char *e = lx->cur.start;
        while (is_word((unsigned char)*e) || (*e == '.' && is_word((unsigned char)e[1])))
            e++;
        lx->p = e;
        k = strndup(kstart, (size_t)(e - kstart));
        if (!k)
            lx->oom = 1;
        lex_next(lx);
    } else {
        return lx_fail(lx, err, "a key (a word, or quoted with \"...\" or `...`)");
    }
    if (!k)
        return lx_fail(lx, err, "a key");
    if (!*k) {
        free(k);
        lx->cur.start = kstart;
        lx->cur.len = 2;
        return lx_fail(lx, err, "a non-empty key");
    }
    if (*kind == TRK_DATASET) {
        const char *col = strcasecmp(k, "name") == 0 ? "i.name" : strcasecmp(k, "digest") == 0 ? "i.digest" : NULL;
        if (!col || lx->experiments) {
            size_t pos = (size_t)(kstart - lx->src) + 1;
            int rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                                "%s: datasets.\"%.100s\" at character %zu is not supported; use datasets.name or "
                                "datasets.digest (runs only)", lx->what, k, pos);
            free(k);
            return rc;
        }
        free(k);
        if (!(k = strdup(col)))
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory parsing the %s", lx->what);
    }
    if (*kind == TRK_ATTR) {
        const attr_def *a = attr_find(lx, k);
        if (!a) {
            size_t pos = (size_t)(kstart - lx->src) + 1;
            int rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                                "%s: unknown attribute \"%.100s\" at character %zu; use %s", lx->what, k, pos,
                                lx->experiments ? "name, creation_time or last_update_time"
                                                : "run_id, run_name, status, artifact_uri, user_id, start_time or "
                                                  "end_time");
            free(k);
            return rc;
        }
        free(k);
        k = strdup(a->col);
        *numeric = a->numeric;
        if (!k)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory parsing the %s", lx->what);
    }
    *key = k;
    return 0;
}

/* ---- filter ------------------------------------------------------------------ */

static void cond_clear(trk_cond *c)
{
    free(c->key);
    for (size_t i = 0; i < c->nstrs; i++)
        free(c->strs[i]);
    free(c->strs);
    memset(c, 0, sizeof *c);
}

void trk_filter_free(trk_filter *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++)
        cond_clear(&f->conds[i]);
    free(f);
}

static int parse_op(lexer *lx, trk_op *op, qn_err *err)
{
    const char *s = lx->cur.start;
    if (lx->cur.type == T_OP) {
        if (lx->cur.len == 1)
            *op = *s == '=' ? TRK_EQ : *s == '>' ? TRK_GT : TRK_LT;
        else
            *op = *s == '!' ? TRK_NE : *s == '>' ? TRK_GE : TRK_LE;
        lex_next(lx);
        return 0;
    }
    if (word_is(&lx->cur, "LIKE") || word_is(&lx->cur, "ILIKE") || word_is(&lx->cur, "IN")) {
        *op = word_is(&lx->cur, "LIKE") ? TRK_LIKE : word_is(&lx->cur, "ILIKE") ? TRK_ILIKE : TRK_IN;
        lex_next(lx);
        return 0;
    }
    if (word_is(&lx->cur, "NOT")) {
        lex_next(lx);
        if (!word_is(&lx->cur, "IN"))
            return lx_fail(lx, err, "IN after NOT");
        *op = TRK_NOT_IN;
        lex_next(lx);
        return 0;
    }
    return lx_fail(lx, err, "a comparator (=, !=, >, >=, <, <=, LIKE, ILIKE, IN, NOT IN)");
}

static const char *op_name(trk_op op)
{
    static const char *const names[] = {"=", "!=", ">", ">=", "<", "<=", "LIKE", "ILIKE", "IN", "NOT IN"};
    return names[op];
}

static int add_str(trk_cond *c, char *s)
{
    char **n = realloc(c->strs, (c->nstrs + 1) * sizeof *n);
    if (!n) {
        free(s);
        return -1;
    }
    c->strs = n;
    c->strs[c->nstrs++] = s;
    return 0;
}

static int parse_cond(lexer *lx, trk_cond *c, size_t *nvalues, qn_err *err)
{
    int numeric_attr = 0;
    const char *at = lx->cur.start;
    if (parse_ident(lx, &c->kind, &c->key, &numeric_attr, err) < 0)
        return err->code;
    if (lx->experiments && (c->kind == TRK_METRIC || c->kind == TRK_PARAM))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "%s: experiments have no metrics or params (character %zu); use attributes.name, "
                          "attributes.creation_time, attributes.last_update_time or tags.<key>",
                          lx->what, (size_t)(at - lx->src) + 1);
    const char *opat = lx->cur.start;
    if (parse_op(lx, &c->op, err) < 0)
        return err->code;
    int numeric = c->kind == TRK_METRIC || (c->kind == TRK_ATTR && numeric_attr);
    int allowed = numeric ? c->op <= TRK_LE
                          : (c->op == TRK_EQ || c->op == TRK_NE || c->op == TRK_LIKE || c->op == TRK_ILIKE ||
                             ((c->kind == TRK_ATTR || c->kind == TRK_DATASET) &&
                              (c->op == TRK_IN || c->op == TRK_NOT_IN)));
    if (!allowed) {
        const char *which = c->kind == TRK_METRIC ? "metrics"
                            : numeric              ? "numeric attributes"
                            : c->kind == TRK_ATTR  ? "string attributes"
                            : c->kind == TRK_DATASET ? "datasets"
                                                   : c->kind == TRK_PARAM ? "params" : "tags";
        const char *ok = numeric ? "=, !=, >, >=, <, <="
                         : c->kind == TRK_ATTR || c->kind == TRK_DATASET ? "=, !=, LIKE, ILIKE, IN, NOT IN"
                                               : "=, !=, LIKE, ILIKE";
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "%s: comparator %s at character %zu is not allowed for %s (use %s)", lx->what,
                          op_name(c->op), (size_t)(opat - lx->src) + 1, which, ok);
    }
    c->numeric = numeric;
    if (numeric) {
        if (lx->cur.type != T_NUMBER)
            return lx_fail(lx, err, c->kind == TRK_METRIC ? "a number (metrics compare with numbers)"
                                                          : "a number (this attribute is a time in ms)");
        char *end;
        c->num = strtod(lx->cur.text, &end);
        if (!isfinite(c->num))
            return lx_fail(lx, err, "a finite number");
        lex_next(lx);
        return 0;
    }
    if (c->op == TRK_IN || c->op == TRK_NOT_IN) {
        if (lx->cur.type != T_LPAREN)
            return lx_fail(lx, err, "'(' opening a list of quoted strings");
        lex_next(lx);
        for (;;) {
            if (lx->cur.type != T_STRING)
                return lx_fail(lx, err, "a quoted string in the list");
            if (++*nvalues > TRK_FILTER_MAX_VALUES)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: at most %d values in IN lists", lx->what,
                                  TRK_FILTER_MAX_VALUES);
            char *s = lx->cur.text;
            lx->cur.text = NULL;
            if (add_str(c, s) < 0)
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory parsing the %s", lx->what);
            lex_next(lx);
            if (lx->cur.type == T_RPAREN)
                break;
            if (lx->cur.type != T_COMMA)
                return lx_fail(lx, err, "',' or ')' in the list");
            lex_next(lx);
        }
        lex_next(lx);
        return 0;
    }
    if (lx->cur.type != T_STRING)
        return lx_fail(lx, err, c->kind == TRK_ATTR ? "a quoted string" : "a quoted string (params and tags are strings)");
    char *s = lx->cur.text;
    lx->cur.text = NULL;
    if (add_str(c, s) < 0)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory parsing the %s", lx->what);
    lex_next(lx);
    return 0;
}

static int filter_parse(const char *text, int experiments, trk_filter **out, qn_err *err);

int trk_filter_parse(const char *text, trk_filter **out, qn_err *err)
{
    return filter_parse(text, 0, out, err);
}

int trk_filter_parse_experiments(const char *text, trk_filter **out, qn_err *err)
{
    int rc = filter_parse(text, 1, out, err);
    if (*out)
        (*out)->experiments = 1;
    return rc;
}

static int filter_parse(const char *text, int experiments, trk_filter **out, qn_err *err)
{
    *out = NULL;
    if (text && strlen(text) > TRK_FILTER_MAX_TEXT)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "filter: at most %d bytes", TRK_FILTER_MAX_TEXT);
    trk_filter *f = calloc(1, sizeof *f);
    if (!f)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory parsing the filter");
    lexer lx = {.src = text ? text : "", .p = text ? text : "", .what = "filter", .experiments = experiments};
    size_t nvalues = 0;
    int rc = 0;
    lex_next(&lx);
    if (lx.cur.type != T_END) {
        for (;;) {
            if (f->n == TRK_FILTER_MAX_CONDS) {
                rc = qn_err_set(err, QN_INVALID_ARGUMENT, "filter: at most %d conditions", TRK_FILTER_MAX_CONDS);
                break;
            }
            trk_cond *c = &f->conds[f->n++];
            if ((rc = parse_cond(&lx, c, &nvalues, err)) < 0)
                break;
            if (lx.cur.type == T_END)
                break;
            if (word_is(&lx.cur, "OR")) {
                rc = lx_fail(&lx, err, "AND (OR is not supported in MLflow's search grammar)");
                break;
            }
            if (!word_is(&lx.cur, "AND")) {
                rc = lx_fail(&lx, err, "AND or the end of the filter");
                break;
            }
            lex_next(&lx);
        }
    }
    tok_clear(&lx.cur);
    if (rc < 0) {
        trk_filter_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

/* ---- order_by ------------------------------------------------------------------ */

void trk_orders_free(trk_orders *o)
{
    for (size_t i = 0; i < o->n; i++)
        free(o->o[i].key);
    o->n = 0;
}

int trk_order_parse(const char *clause, trk_orders *o, qn_err *err)
{
    if (o->n == TRK_ORDER_MAX)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "order_by: at most %d clauses", TRK_ORDER_MAX);
    if (strlen(clause) > 1024)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "order_by: a clause has at most 1024 bytes");
    lexer lx = {.src = clause, .p = clause, .what = "order_by"};
    trk_order *ord = &o->o[o->n];
    int numeric, rc;
    memset(ord, 0, sizeof *ord);
    lex_next(&lx);
    if ((rc = parse_ident(&lx, &ord->kind, &ord->key, &numeric, err)) < 0)
        goto out;
    if (ord->kind == TRK_DATASET) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "order_by: runs cannot be ordered by datasets.*");
        goto out;
    }
    if (word_is(&lx.cur, "ASC") || word_is(&lx.cur, "DESC")) {
        ord->desc = word_is(&lx.cur, "DESC");
        lex_next(&lx);
    }
    if (lx.cur.type != T_END) {
        rc = lx_fail(&lx, err, "ASC, DESC or the end of the clause");
        goto out;
    }
    o->n++;
    rc = 0;
out:
    if (rc < 0) {
        free(ord->key);
        ord->key = NULL;
    }
    tok_clear(&lx.cur);
    return rc;
}

/* ---- the SQL compiler ------------------------------------------------------------ */

void trk_query_init(trk_query *q, int pg)
{
    memset(q, 0, sizeof *q);
    qn_buf_init(&q->sql, 1 << 20);
    q->pg = pg;
}

void trk_query_free(trk_query *q)
{
    qn_buf_free(&q->sql);
    for (size_t i = 0; i < q->nowned; i++)
        free(q->owned[i]);
    q->nowned = q->n = 0;
}

void trk_query_text(trk_query *q, const char *t)
{
    qn_buf_puts(&q->sql, t);
}

static trk_bind *next_bind(trk_query *q)
{
    if (q->n == TRK_QUERY_MAX_BINDS) {
        q->err = QN_INVALID_ARGUMENT;
        return NULL;
    }
    trk_bind *b = &q->b[q->n++];
    memset(b, 0, sizeof *b);
    return b;
}

void trk_query_int(trk_query *q, int64_t v)
{
    trk_bind *b = next_bind(q);
    if (b) {
        b->type = 'i';
        b->i = v;
    }
    qn_buf_puts(&q->sql, "?");
}

static void query_double(trk_query *q, double v)
{
    trk_bind *b = next_bind(q);
    if (b) {
        b->type = 'd';
        b->d = v;
    }
    qn_buf_puts(&q->sql, "?");
}

void trk_query_str(trk_query *q, const char *s)
{
    trk_bind *b = next_bind(q);
    if (b) {
        b->type = 't';
        b->t = s;
    }
    qn_buf_puts(&q->sql, "?");
}

/* A bound string the query owns (a converted pattern). */
static void query_owned(trk_query *q, char *s)
{
    if (!s || q->nowned == TRK_QUERY_MAX_BINDS) {
        free(s);
        q->err = s ? QN_INVALID_ARGUMENT : QN_RESOURCE_EXHAUSTED;
        qn_buf_puts(&q->sql, "?");
        return;
    }
    q->owned[q->nowned++] = s;
    trk_query_str(q, s);
}

/* SQLite's LIKE ignores ASCII case, so MLflow's case-sensitive LIKE becomes
 * GLOB: % -> *, _ -> ?, and GLOB's own specials taken literally. */
static char *like_to_glob(const char *like)
{
    char *out = malloc(strlen(like) * 3 + 1), *o = out;
    if (!out)
        return NULL;
    for (const char *p = like; *p; p++) {
        if (*p == '%')
            *o++ = '*';
        else if (*p == '_')
            *o++ = '?';
        else if (*p == '*' || *p == '?' || *p == '[') {
            *o++ = '[';
            *o++ = *p;
            *o++ = ']';
        } else
            *o++ = *p;
    }
    *o = '\0';
    return out;
}

/* "<col> <op> ?" for a string comparison. */
static void str_cmp(trk_query *q, const char *col, const trk_cond *c)
{
    qn_buf_puts(&q->sql, col);
    switch (c->op) {
    case TRK_EQ:
        qn_buf_puts(&q->sql, " = ");
        trk_query_str(q, c->strs[0]);
        break;
    case TRK_NE:
        qn_buf_puts(&q->sql, " <> ");
        trk_query_str(q, c->strs[0]);
        break;
    case TRK_LIKE:
        if (q->pg) {
            qn_buf_puts(&q->sql, " LIKE ");
            trk_query_str(q, c->strs[0]);
        } else {
            qn_buf_puts(&q->sql, " GLOB ");
            query_owned(q, like_to_glob(c->strs[0]));
        }
        break;
    case TRK_ILIKE:
        qn_buf_puts(&q->sql, q->pg ? " ILIKE " : " LIKE ");
        trk_query_str(q, c->strs[0]);
        break;
    case TRK_IN:
    case TRK_NOT_IN:
        qn_buf_puts(&q->sql, c->op == TRK_IN ? " IN (" : " NOT IN (");
        for (size_t i = 0; i < c->nstrs; i++) {
            if (i)
                qn_buf_puts(&q->sql, ", ");
            trk_query_str(q, c->strs[i]);
        }
        qn_buf_puts(&q->sql, ")");
        break;
    default:
        break; /* the parser allows no others on strings */
    }
}

static const char *num_op(trk_op op)
{
    static const char *const sql[] = {" = ", " <> ", " > ", " >= ", " < ", " <= "};
    return sql[op];
}

void trk_query_where(trk_query *q, const trk_filter *f)
{
    for (size_t i = 0; f && i < f->n; i++) {
        const trk_cond *c = &f->conds[i];
        qn_buf_puts(&q->sql, " AND ");
        switch (c->kind) {
        case TRK_METRIC:
            /* NaN is stored as 0 with is_nan set: it compares with nothing */
            qn_buf_puts(&q->sql, "EXISTS (SELECT 1 FROM latest_metrics m WHERE m.run_id = r.id AND m.key = ");
            trk_query_str(q, c->key);
            qn_buf_printf(&q->sql, " AND m.is_nan = 0 AND m.value%s", num_op(c->op));
            query_double(q, c->num);
            qn_buf_puts(&q->sql, ")");
            break;
        case TRK_PARAM:
        case TRK_TAG:
            if (f->experiments)
                qn_buf_puts(&q->sql, "EXISTS (SELECT 1 FROM experiment_tags p WHERE p.experiment_id = e.id AND "
                                     "p.key = ");
            else
                qn_buf_printf(&q->sql, "EXISTS (SELECT 1 FROM %s p WHERE p.run_id = r.id AND p.key = ",
                              c->kind == TRK_PARAM ? "params" : "run_tags");
            trk_query_str(q, c->key);
            qn_buf_puts(&q->sql, " AND ");
            str_cmp(q, "p.value", c);
            qn_buf_puts(&q->sql, ")");
            break;
        case TRK_DATASET: /* a run with an input whose name / digest matches */
            qn_buf_puts(&q->sql, "EXISTS (SELECT 1 FROM run_inputs i WHERE i.run_id = r.id AND ");
            str_cmp(q, c->key, c);
            qn_buf_puts(&q->sql, ")");
            break;
        case TRK_ATTR:
            if (c->numeric) {
                qn_buf_printf(&q->sql, "%s%s", c->key, num_op(c->op));
                trk_query_int(q, (int64_t)c->num);
            } else {
                str_cmp(q, c->key, c);
            }
            break;
        }
    }
}

void trk_query_order_joins(trk_query *q, const trk_orders *o)
{
    for (size_t i = 0; o && i < o->n; i++) {
        const trk_order *ord = &o->o[i];
        if (ord->kind == TRK_ATTR)
            continue;
        static const char *const tables[] = {"latest_metrics", "params", "run_tags"};
        qn_buf_printf(&q->sql, " LEFT JOIN %s o%zu ON o%zu.run_id = r.id AND o%zu.key = ", tables[ord->kind], i, i,
                      i);
        trk_query_str(q, ord->key);
    }
}

void trk_query_order_by(trk_query *q, const trk_orders *o)
{
    qn_buf_puts(&q->sql, " ORDER BY ");
    for (size_t i = 0; o && i < o->n; i++) {
        const trk_order *ord = &o->o[i];
        const char *dir = ord->desc ? "DESC" : "ASC";
        if (ord->kind == TRK_ATTR)
            qn_buf_printf(&q->sql, "CASE WHEN %s IS NULL THEN 1 ELSE 0 END, %s %s, ", ord->key, ord->key, dir);
        else if (ord->kind == TRK_METRIC)
            qn_buf_printf(&q->sql,
                          "CASE WHEN o%zu.value IS NULL THEN 2 WHEN o%zu.is_nan = 1 THEN 1 ELSE 0 END, o%zu.value %s, ",
                          i, i, i, dir);
        else
            qn_buf_printf(&q->sql, "CASE WHEN o%zu.value IS NULL THEN 1 ELSE 0 END, o%zu.value %s, ", i, i, dir);
    }
    /* Runs started in the same millisecond come newest row first, so that
     * the order is total and the same on every page and on both stores. */
    qn_buf_puts(&q->sql, "r.start_time DESC, r.id DESC");
}

int trk_query_bind(const trk_query *q, qn_stmt *st, qn_err *err)
{
    if (q->err == QN_INVALID_ARGUMENT)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "search: too many values in filter and order_by (at most %d)",
                          TRK_QUERY_MAX_BINDS);
    if (q->err || qn_buf_error(&q->sql) < 0)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory building the search");
    for (size_t i = 0; st && i < q->n; i++) {
        const trk_bind *b = &q->b[i];
        int idx = (int)i + 1;
        if (b->type == 'i')
            qn_bind_int64(st, idx, b->i);
        else if (b->type == 'd')
            qn_bind_double(st, idx, b->d);
        else
            qn_bind_text(st, idx, b->t, -1);
    }
    return 0;
}
