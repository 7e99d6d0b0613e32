/*
 * clean.c - cleaning steps and interaction matrices (see clean.h).
 *
 * Parsing checks every step fully (known op, required fields of the right
 * JSON type, no unknown fields) so that a bad config fails before any data
 * is touched. Values whose meaning depends on a column's type (a filter's
 * value, an impute constant) stay JSON until apply time, when the column is
 * known. Row steps compute a keep mask and take the kept rows; cell steps
 * copy the frame and change the copy; type-changing steps rebuild it.
 */
#include "ml/clean.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ml/schema.h"
#include "core/json.h"
#include "core/validate.h"

typedef enum op {
    OP_DROP_MISSING, OP_FILTER, OP_IMPUTE, OP_DEDUPE, OP_CLIP, OP_CAST, OP_MAP_WEIGHTS,
    OP_TIME_WINDOW, OP_DERIVE, OP_RENAME, OP_SELECT, OP__COUNT
} op;

static const char *const op_names[] = {"drop_missing", "filter", "impute", "dedupe", "clip",
                                       "cast", "map_weights", "time_window", "derive",
                                       "rename", "select"};

/* Which fields each op allows; the first `required` are required. */
static const struct {
    const char *fields[6];
    int required;
} op_fields[] = {
    [OP_DROP_MISSING] = {{"columns"}, 0},
    [OP_FILTER] = {{"column", "cmp", "value", "keep_missing"}, 3},
    [OP_IMPUTE] = {{"column", "strategy", "value"}, 2},
    [OP_DEDUPE] = {{"keys"}, 0},
    [OP_CLIP] = {{"column", "min", "max"}, 1},
    [OP_CAST] = {{"column", "type", "on_error"}, 2},
    [OP_MAP_WEIGHTS] = {{"column", "map", "output", "default"}, 2},
    [OP_TIME_WINDOW] = {{"column", "from", "to"}, 1},
    [OP_DERIVE] = {{"output", "value", "column"}, 1},
    [OP_RENAME] = {{"columns"}, 1},
    [OP_SELECT] = {{"columns"}, 1},
};

typedef enum cmp { EQ, NE, LT, LE, GT, GE, STARTS, NOT_STARTS, IN, NOT_IN } cmp;
static const char *const cmp_names[] = {"==", "!=", "<", "<=", ">", ">=", "starts_with",
                                        "not_starts_with", "in", "not_in"};

enum strategy { S_MEAN, S_MEDIAN, S_MODE, S_CONSTANT };
static const char *const strategy_names[] = {"mean", "median", "mode", "constant"};

typedef struct step {
    op op;
    size_t index;
    json_t *spec;        /* the step's JSON object (a reference) */
    const char *column;  /* points into spec */
    cmp cmp;
    int strategy;
    int keep_missing;
    qml_type to;
    int cast_drop;
    int has_min, has_max;
    double min, max;     /* clip; time_window from/to */
    const char *output;
    int has_default;
    double dflt;
} step;

struct qml_clean_steps {
    step *steps;
    size_t n;
};

void qml_clean_free(qml_clean_steps *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        json_decref(s->steps[i].spec);
    free(s->steps);
    free(s);
}

size_t qml_clean_count(const qml_clean_steps *s) { return s->n; }

/* ---- parsing ------------------------------------------------------------- */

#define STEP_ERR(st, ...) step_err(err, (st), __VA_ARGS__)

static int step_err(qn_err *err, const step *st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int step_err(qn_err *err, const step *st, const char *fmt, ...)
{
    char buf[QN_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return qn_err_set(err, QN_INVALID_ARGUMENT, "steps[%zu] (%s): %s", st->index,
                      (unsigned)st->op < OP__COUNT ? op_names[st->op] : "?", buf);
}

static int pick(const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

/* A timestamp given as a string or as epoch seconds. */
static int json_ts(const json_t *v, double *out)
{
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return 0;
    }
    if (json_is_string(v))
        return qml_parse_timestamp(json_string_value(v), json_string_length(v), out);
    return QN_INVALID_ARGUMENT;
}

static int check_names(const step *st, const json_t *arr, const char *field, qn_err *err)
{
    if (!arr)
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return STEP_ERR(st, "field \"%s\" must be a non-empty array of column names", field);
    for (size_t i = 0; i < json_array_size(arr); i++)
        if (!json_is_string(json_array_get(arr, i)))
            return STEP_ERR(st, "field \"%s\"[%zu] must be a string", field, i);
    return 0;
}

static int parse_step(step *st, json_t *o, qn_err *err)
{
    st->op = OP__COUNT;
    if (!json_is_object(o))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "steps[%zu]: must be a JSON object", st->index);
    json_t *opv = json_object_get(o, "op");
    if (!json_is_string(opv))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "steps[%zu]: field \"op\" must be a string", st->index);
    int opi = pick(json_string_value(opv), op_names, OP__COUNT);
    if (opi < 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "steps[%zu]: unknown op \"%s\"", st->index,
                          json_string_value(opv));
    st->op = (op)opi;
    st->spec = json_incref(o);

    const char *key;
    json_t *val;
    json_object_foreach(o, key, val) {
        if (strcmp(key, "op") == 0)
            continue;
        int known = 0;
        for (int i = 0; i < 6 && op_fields[st->op].fields[i]; i++)
            known |= strcmp(key, op_fields[st->op].fields[i]) == 0;
        if (!known)
            return STEP_ERR(st, "unknown field \"%s\"", key);
    }
    for (int i = 0; i < op_fields[st->op].required; i++)
        if (!json_object_get(o, op_fields[st->op].fields[i]))
            return STEP_ERR(st, "field \"%s\" is required", op_fields[st->op].fields[i]);

    json_t *col = json_object_get(o, "column");
    if (col) {
        if (!json_is_string(col) || json_string_length(col) == 0)
            return STEP_ERR(st, "field \"column\" must be a non-empty string");
        st->column = json_string_value(col);
    }

    switch (st->op) {
    case OP_DROP_MISSING:
        return check_names(st, json_object_get(o, "columns"), "columns", err);
    case OP_DEDUPE:
        return check_names(st, json_object_get(o, "keys"), "keys", err);
    case OP_SELECT: {
        json_t *arr = json_object_get(o, "columns");
        int rc = check_names(st, arr, "columns", err);
        for (size_t i = 0; rc == 0 && i < json_array_size(arr); i++)
            for (size_t j = 0; j < i; j++)
                if (strcmp(json_string_value(json_array_get(arr, i)), json_string_value(json_array_get(arr, j))) == 0)
                    return STEP_ERR(st, "column %s is selected twice", json_string_value(json_array_get(arr, i)));
        return rc;
    }
    case OP_RENAME: {
        json_t *m = json_object_get(o, "columns");
        if (!json_is_object(m) || json_object_size(m) == 0)
            return STEP_ERR(st, "field \"columns\" must be a non-empty object of old name -> new name");
        const char *k2;
        json_t *v2;
        json_object_foreach(m, key, val) {
            qn_err e;
            if (!json_is_string(val))
                return STEP_ERR(st, "field \"columns\".\"%s\" must be a string (the new name)", key);
            if (qn_colname_check("new column", json_string_value(val), &e) < 0)
                return STEP_ERR(st, "field \"columns\".\"%s\": %s", key, e.msg);
            json_object_foreach(m, k2, v2) {
                if (k2 == key)
                    break;
                if (strcmp(json_string_value(v2), json_string_value(val)) == 0)
                    return STEP_ERR(st, "columns %s and %s would both be named %s", k2, key,
                                    json_string_value(val));
            }
        }
        return 0;
    }
    case OP_FILTER: {
        json_t *c = json_object_get(o, "cmp"), *v = json_object_get(o, "value");
        int ci = json_is_string(c) ? pick(json_string_value(c), cmp_names, 10) : -1;
        if (ci < 0)
            return STEP_ERR(st, "field \"cmp\" must be one of == != < <= > >= starts_with "
                                "not_starts_with in not_in");
        st->cmp = (cmp)ci;
        if (st->cmp == IN || st->cmp == NOT_IN) {
            if (!json_is_array(v))
                return STEP_ERR(st, "field \"value\" must be an array for %s", cmp_names[ci]);
            for (size_t i = 0; i < json_array_size(v); i++) {
                json_t *e = json_array_get(v, i);
                if (!json_is_string(e) && !json_is_number(e) && !json_is_boolean(e))
                    return STEP_ERR(st, "field \"value\"[%zu] must be a string, number or boolean", i);
            }
        } else if (st->cmp == STARTS || st->cmp == NOT_STARTS) {
            if (!json_is_string(v))
                return STEP_ERR(st, "field \"value\" must be a string for %s", cmp_names[ci]);
        } else if (!json_is_string(v) && !json_is_number(v) && !json_is_boolean(v)) {
            return STEP_ERR(st, "field \"value\" must be a string, number or boolean");
        }
        json_t *km = json_object_get(o, "keep_missing");
        if (km && !json_is_boolean(km))
            return STEP_ERR(st, "field \"keep_missing\" must be true or false");
        st->keep_missing = json_is_true(km);
        return 0;
    }
    case OP_IMPUTE: {
        json_t *s = json_object_get(o, "strategy");
        int si = json_is_string(s) ? pick(json_string_value(s), strategy_names, 4) : -1;
        if (si < 0)
            return STEP_ERR(st, "field \"strategy\" must be one of mean median mode constant");
        st->strategy = si;
        json_t *v = json_object_get(o, "value");
        if (si == S_CONSTANT && (!v || (!json_is_string(v) && !json_is_number(v) && !json_is_boolean(v))))
            return STEP_ERR(st, "field \"value\" (a string, number or boolean) is required for constant");
        if (si != S_CONSTANT && v)
            return STEP_ERR(st, "field \"value\" is only for the constant strategy");
        return 0;
    }
    case OP_CLIP: {
        json_t *mn = json_object_get(o, "min"), *mx = json_object_get(o, "max");
        if (!mn && !mx)
            return STEP_ERR(st, "needs \"min\", \"max\" or both");
        if ((mn && !json_is_number(mn)) || (mx && !json_is_number(mx)))
            return STEP_ERR(st, "fields \"min\" and \"max\" must be numbers");
        st->has_min = mn != NULL;
        st->has_max = mx != NULL;
        st->min = mn ? json_number_value(mn) : 0;
        st->max = mx ? json_number_value(mx) : 0;
        if (mn && mx && st->min > st->max)
            return STEP_ERR(st, "\"min\" is greater than \"max\"");
        return 0;
    }
    case OP_CAST: {
        json_t *t = json_object_get(o, "type"), *oe = json_object_get(o, "on_error");
        if (!json_is_string(t) || qml_type_parse(json_string_value(t), &st->to) < 0)
            return STEP_ERR(st, "field \"type\" must be numeric, categorical, boolean or timestamp");
        st->cast_drop = 1;
        if (oe) {
            if (!json_is_string(oe) || (strcmp(json_string_value(oe), "drop") && strcmp(json_string_value(oe), "missing")))
                return STEP_ERR(st, "field \"on_error\" must be \"drop\" or \"missing\"");
            st->cast_drop = strcmp(json_string_value(oe), "drop") == 0;
        }
        return 0;
    }
    case OP_MAP_WEIGHTS: {
        json_t *m = json_object_get(o, "map"), *out = json_object_get(o, "output"),
               *d = json_object_get(o, "default");
        if (!json_is_object(m) || json_object_size(m) == 0)
            return STEP_ERR(st, "field \"map\" must be a non-empty object of value -> weight");
        json_object_foreach(m, key, val) {
            if (!json_is_number(val))
                return STEP_ERR(st, "field \"map\".\"%s\" must be a number", key);
        }
        if (out && (!json_is_string(out) || json_string_length(out) == 0))
            return STEP_ERR(st, "field \"output\" must be a non-empty string");
        st->output = out ? json_string_value(out) : "weight";
        if (d && !json_is_number(d))
            return STEP_ERR(st, "field \"default\" must be a number");
        st->has_default = d != NULL;
        st->dflt = d ? json_number_value(d) : 0;
        return 0;
    }
    case OP_TIME_WINDOW: {
        json_t *from = json_object_get(o, "from"), *to = json_object_get(o, "to");
        if (!from && !to)
            return STEP_ERR(st, "needs \"from\", \"to\" or both");
        if (from && json_ts(from, &st->min) < 0)
            return STEP_ERR(st, "field \"from\" must be a timestamp (\"YYYY-MM-DD[ HH:MM:SS]\" or seconds)");
        if (to && json_ts(to, &st->max) < 0)
            return STEP_ERR(st, "field \"to\" must be a timestamp (\"YYYY-MM-DD[ HH:MM:SS]\" or seconds)");
        st->has_min = from != NULL;
        st->has_max = to != NULL;
        return 0;
    }
    case OP_DERIVE: {
        json_t *out = json_object_get(o, "output"), *v = json_object_get(o, "value");
        if (!json_is_string(out) || json_string_length(out) == 0)
            return STEP_ERR(st, "field \"output\" must be a non-empty string");
        st->output = json_string_value(out);
        if ((v != NULL) == (st->column != NULL))
            return STEP_ERR(st, "needs exactly one of \"value\" (a number) and \"column\"");
        if (v && !json_is_number(v))
            return STEP_ERR(st, "field \"value\" must be a number");
        st->dflt = v ? json_number_value(v) : 0;
        return 0;
    }
    default:
        return 0;
    }
}

int qml_clean_from_json(const json_t *arr, qml_clean_steps **out, qn_err *err)
{
    *out = NULL;
    if (!json_is_array(arr))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "cleaning steps must be a JSON array");
    size_t n = json_array_size(arr);
    if (n > QML_CLEAN_MAX_STEPS)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%zu cleaning steps, at most %d allowed", n,
                          QML_CLEAN_MAX_STEPS);
    qml_clean_steps *s = calloc(1, sizeof *s);
    if (!s || !(s->steps = calloc(n ? n : 1, sizeof *s->steps))) {
        free(s);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        s->steps[i].index = i;
        int rc = parse_step(&s->steps[i], json_array_get(arr, i), err);
        s->n = i + 1;
        if (rc < 0) {
            qml_clean_free(s);
            return rc;
        }
    }
    *out = s;
    return 0;
}

int qml_clean_parse(const char *json, size_t len, qml_clean_steps **out, qn_err *err)
{
    json_error_t je;
    *out = NULL;
    json_t *arr = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!arr)
        return qn_err_set(err, qn_json_load_code(&je), "cleaning steps: not JSON (line %d column %d): %s",
                          je.line, je.column, je.text);
    int rc = qml_clean_from_json(arr, out, err);
    json_decref(arr);
    return rc;
}

/* ---- helpers ------------------------------------------------------------- */

static int col_of(const qml_frame *f, const step *st, const char *name, qn_err *err)
{
    int c = qml_frame_find(f, name);
    if (c < 0)
        return STEP_ERR(st, "no column named %s", name);
    return c;
}

static int is_num_type(qml_type t) { return t != QML_CATEGORICAL; }

/* Keeps the rows whose keep[] is set; *out is a new frame. */
static int take_kept(const qml_frame *f, const uint8_t *keep, qml_frame **out, qn_err *err)
{
    size_t n = qml_frame_nrows(f), k = 0;
    size_t *rows = malloc((n ? n : 1) * sizeof *rows);
    if (!rows)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < n; i++)
        if (keep[i])
            rows[k++] = i;
    *out = qml_frame_take(f, rows, k, err);
    free(rows);
    return *out ? 0 : (err ? err->code : QN_RESOURCE_EXHAUSTED);
}

static int copy_frame(const qml_frame *f, qml_frame **out, qn_err *err)
{
    size_t n = qml_frame_nrows(f);
    uint8_t *keep = malloc(n ? n : 1);
    if (!keep)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    memset(keep, 1, n);
    int rc = take_kept(f, keep, out, err);
    free(keep);
    return rc;
}

/* A new frame like f where column `name` (replaced in place, or appended) has
 * type t and the cells given by num/codes (with dict) and miss, indexed by
 * f's rows. rows (NULL: all of f's rows) lists the rows of f it has, nrows
 * of them, so that a step after row filters reads the kept rows itself. */
static int rebuild_rows(const qml_frame *f, const size_t *rows, size_t nrows, const char *name, qml_type t,
                        const double *num, const int32_t *codes, const qml_dict *dict, const uint8_t *miss,
                        qml_frame **out, qn_err *err)
{
    size_t nc = qml_frame_ncols(f), nr = rows ? nrows : qml_frame_nrows(f);
    int at = qml_frame_find(f, name);
    qml_frame *g = qml_frame_new();
    if (!g)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    size_t gn = at >= 0 ? nc : nc + 1;
    for (size_t j = 0; j < gn; j++) {
        int is_new = (int)j == at || j == nc;
        const qml_column *src = j < nc ? qml_frame_col(f, j) : NULL;
        if (qml_frame_add_column(g, is_new ? name : src->name, is_new ? t : src->type, err) < 0)
            goto fail;
        const qml_dict *d = is_new ? (t == QML_CATEGORICAL ? dict : NULL) :
                            (src->type == QML_CATEGORICAL ? src->dict : NULL);
        for (size_t k = 0; d && k < qml_dict_size(d); k++) {
            const char *s = qml_dict_str(d, (int32_t)k);
            if (qml_dict_intern(qml_frame_col(g, j)->dict, s, strlen(s)) < 0)
                goto oom;
        }
    }
    /* Column by column, straight into the arrays: a copied column is three
     * memcpy, not a push per cell. */
    if (qml_frame_reserve(g, nr) < 0)
        goto oom;
    for (size_t j = 0; j < gn; j++) {
        qml_column *dst = qml_frame_col(g, j);
        int is_new = (int)j == at || j == nc;
        const qml_column *src = is_new ? NULL : qml_frame_col(f, j);
        const uint8_t *m = is_new ? miss : src->missing;
        size_t nm = 0;
        /* As qml_col_push_missing / push_code / push_num would set them. */
        if (dst->type == QML_CATEGORICAL) {
            const int32_t *v = is_new ? codes : src->cat;
            for (size_t r = 0; r < nr; r++) {
                size_t i = rows ? rows[r] : r;
                uint8_t ms = m[i] || v[i] < 0;
                dst->cat[r] = m[i] ? -1 : v[i];
                dst->missing[r] = ms;
                nm += ms;
            }
        } else {
            const double *v = is_new ? num : src->num;
            for (size_t r = 0; r < nr; r++) {
                size_t i = rows ? rows[r] : r;
                uint8_t ms = m[i] != 0;
                dst->num[r] = ms ? 0 : v[i];
                dst->missing[r] = ms;
                nm += ms;
            }
        }
        dst->len = nr;
        dst->n_missing = nm;
    }
    if (qml_frame_end_rows(g, nr) < 0)
        goto oom;
    *out = g;
    return 0;
oom:
    qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
fail:
    qml_frame_free(g);
    return err ? err->code : QN_RESOURCE_EXHAUSTED;
}

static int rebuild(const qml_frame *f, const char *name, qml_type t, const double *num, const int32_t *codes,
                   const qml_dict *dict, const uint8_t *miss, qml_frame **out, qn_err *err)
{
    return rebuild_rows(f, NULL, 0, name, t, num, codes, dict, miss, out, err);
}

/* The text of a cell (categorical string, or a number written shortest). */
const char *qml_cell_text(const qml_column *c, size_t r, char *buf, size_t cap)
{
    if (c->type == QML_CATEGORICAL)
        return qml_dict_str(c->dict, c->cat[r]);
    if (c->type == QML_TIMESTAMP)
        qml_format_timestamp(c->num[r], buf, cap);
    else if (c->type == QML_BOOLEAN)
        snprintf(buf, cap, "%s", c->num[r] != 0 ? "true" : "false");
    else
        qml_format_number(c->num[r], buf, cap);
    return buf;
}

/* A JSON scalar as a value of a numeric-like column type. */
static int json_as_num(const json_t *v, qml_type t, double *out)
{
    if (t == QML_TIMESTAMP)
        return json_ts(v, out);
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return t == QML_BOOLEAN ? 0 : QN_INVALID_ARGUMENT;
    }
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        if (t == QML_BOOLEAN)
            return qml_parse_bool(json_string_value(v), json_string_length(v), 1, out);
        return qml_parse_number(json_string_value(v), json_string_length(v), out);
    }
    return QN_INVALID_ARGUMENT;
}

/* A JSON scalar as text (for categorical columns). */
static const char *json_as_text(const json_t *v, char *buf, size_t cap)
{
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_number(v)) {
        qml_format_number(json_number_value(v), buf, cap);
        return buf;
    }
    if (json_is_boolean(v))
        return json_is_true(v) ? "true" : "false";
    return NULL;
}

/* ---- row steps ----------------------------------------------------------- */

static int cmp_num(cmp c, double a, double b)
{
    switch (c) {
    case EQ: return a == b;
    case NE: return a != b;
    case LT: return a < b;
    case LE: return a <= b;
    case GT: return a > b;
    case GE: return a >= b;
    default: return 0;
    }
}

/* keep[r] for every row of f; *n_missing counts the missing cells of the
 * rows still alive (alive NULL: all). */
static int filter_mask(const qml_frame *f, const step *st, const uint8_t *alive, uint8_t *keep,
                       size_t *n_missing, qn_err *err)
{
    int ci = col_of(f, st, st->column, err);
    if (ci < 0)
        return ci;
    const qml_column *c = qml_frame_col(f, (size_t)ci);
    json_t *v = json_object_get(st->spec, "value");
    size_t n = qml_frame_nrows(f);
    char tb[40];
    *n_missing = 0;

    if (c->type == QML_CATEGORICAL) {
        /* Evaluate the predicate once per dictionary entry. */
        size_t nd = qml_dict_size(c->dict);
        uint8_t *ok = calloc(nd ? nd : 1, 1);
        if (!ok)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        for (size_t k = 0; k < nd; k++) {
            const char *s = qml_dict_str(c->dict, (int32_t)k);
            int res = 0;
            if (st->cmp == IN || st->cmp == NOT_IN) {
                for (size_t i = 0; i < json_array_size(v) && !res; i++) {
                    const char *t = json_as_text(json_array_get(v, i), tb, sizeof tb);
                    res = t && strcmp(s, t) == 0;
                }
                res = st->cmp == IN ? res : !res;
            } else {
                const char *t = json_as_text(v, tb, sizeof tb);
                if (st->cmp == STARTS || st->cmp == NOT_STARTS) {
                    res = strncmp(s, t, strlen(t)) == 0;
                    res = st->cmp == STARTS ? res : !res;
                } else {
                    res = cmp_num(st->cmp, (double)strcmp(s, t), 0);
                }
            }
            ok[k] = (uint8_t)res;
        }
        /* Per row a look-up. A code the dictionary does not have (no
         * string) counts as a missing cell. */
        for (size_t r = 0; r < n; r++) {
            uint32_t code = (uint32_t)c->cat[r];
            if (!c->missing[r] && code < nd) {
                keep[r] = ok[code];
            } else {
                *n_missing += !alive || alive[r];
                keep[r] = (uint8_t)st->keep_missing;
            }
        }
        free(ok);
        return 0;
    }

    if (st->cmp == STARTS || st->cmp == NOT_STARTS)
        return STEP_ERR(st, "column %s is %s; %s needs a categorical column", c->name,
                        qml_type_name(c->type), cmp_names[st->cmp]);
    double x = 0, *set = NULL;
    size_t nset = 0;
    if (st->cmp == IN || st->cmp == NOT_IN) {
        nset = json_array_size(v);
        set = malloc((nset ? nset : 1) * sizeof *set);
        if (!set)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        for (size_t i = 0; i < nset; i++) {
            if (json_as_num(json_array_get(v, i), c->type, &set[i]) < 0) {
                free(set);
                return STEP_ERR(st, "value[%zu] is not a %s value for column %s", i,
                                qml_type_name(c->type), c->name);
            }
        }
    } else if (json_as_num(v, c->type, &x) < 0) {
        return STEP_ERR(st, "value is not a %s value for column %s", qml_type_name(c->type), c->name);
    }
    const double *num = c->num;
    const uint8_t *miss = c->missing;
    if (set) {
        for (size_t r = 0; r < n; r++) {
            int res = 0;
            for (size_t i = 0; i < nset && !res; i++)
                res = num[r] == set[i];
            keep[r] = (uint8_t)(st->cmp == IN ? res : !res);
        }
    } else {
        /* The comparison is chosen once; each loop is branch-free. */
#define CMP_LOOP(op)                                \
        for (size_t r = 0; r < n; r++)              \
            keep[r] = (uint8_t)(num[r] op x);       \
        break
        switch (st->cmp) {
        case EQ: CMP_LOOP(==);
        case NE: CMP_LOOP(!=);
        case LT: CMP_LOOP(<);
        case LE: CMP_LOOP(<=);
        case GT: CMP_LOOP(>);
        case GE: CMP_LOOP(>=);
        default:
            memset(keep, 0, n);
        }
#undef CMP_LOOP
    }
    /* Missing cells: keep_missing decides, and they are counted. */
    for (size_t r = 0; r < n; r++) {
        if (miss[r]) {
            *n_missing += !alive || alive[r];
            keep[r] = (uint8_t)st->keep_missing;
        }
    }
    free(set);
    return 0;
}

static int names_to_cols(const qml_frame *f, const step *st, const char *field, int **cols,
                         size_t *n, qn_err *err)
{
    json_t *arr = json_object_get(st->spec, field);
    *n = arr ? json_array_size(arr) : qml_frame_ncols(f);
    *cols = malloc((*n ? *n : 1) * sizeof **cols);
    if (!*cols)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < *n; i++) {
        (*cols)[i] = arr ? qml_frame_find(f, json_string_value(json_array_get(arr, i))) : (int)i;
        if ((*cols)[i] < 0) {
            int rc = STEP_ERR(st, "no column named %s", json_string_value(json_array_get(arr, i)));
            free(*cols);
            *cols = NULL;
            return rc;
        }
    }
    return 0;
}

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h * 0xff51afd7ed558ccdULL;
}

static uint64_t row_hash(const qml_frame *f, const int *cols, size_t nk, size_t r)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < nk; i++) {
        const qml_column *c = qml_frame_col(f, (size_t)cols[i]);
        uint64_t v;
        if (c->missing[r])
            v = 0x5bd1e995u;
        else if (c->type == QML_CATEGORICAL)
            v = (uint64_t)(uint32_t)c->cat[r];
        else {
            double d = c->num[r] == 0 ? 0.0 : c->num[r];
            memcpy(&v, &d, sizeof v);
        }
        h = mix(h, v);
    }
    return h;
}

static int rows_equal(const qml_frame *f, const int *cols, size_t nk, size_t a, size_t b)
{
    for (size_t i = 0; i < nk; i++) {
        const qml_column *c = qml_frame_col(f, (size_t)cols[i]);
        if (c->missing[a] != c->missing[b])
            return 0;
        if (c->missing[a])
            continue;
        if (c->type == QML_CATEGORICAL ? c->cat[a] != c->cat[b] : c->num[a] != c->num[b])
            return 0;
    }
    return 1;
}

static int dedupe_mask(const qml_frame *f, const step *st, uint8_t *keep, qn_err *err)
{
    int *cols;
    size_t nk, n = qml_frame_nrows(f);
    int rc = names_to_cols(f, st, "keys", &cols, &nk, err);
    if (rc < 0)
        return rc;
    size_t ns = 16;
    while (ns < 2 * n)
        ns *= 2;
    size_t *slots = malloc(ns * sizeof *slots);
    if (!slots) {
        free(cols);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    memset(slots, 0xff, ns * sizeof *slots);
    for (size_t r = 0; r < n; r++) {
        size_t i = row_hash(f, cols, nk, r) & (ns - 1);
        keep[r] = 1;
        while (slots[i] != SIZE_MAX) {
            if (rows_equal(f, cols, nk, slots[i], r)) {
                keep[r] = 0;
                break;
            }
            i = (i + 1) & (ns - 1);
        }
        if (keep[r])
            slots[i] = r;
    }
    free(slots);
    free(cols);
    return 0;
}

/* ---- cell steps ---------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int do_impute(const qml_frame *f, const step *st, qml_frame **out, size_t *changed,
                     qn_err *err)
{
    int ci = col_of(f, st, st->column, err);
    if (ci < 0)
        return ci;
    const qml_column *c = qml_frame_col(f, (size_t)ci);
    size_t n = qml_frame_nrows(f);
    double fillv = 0;
    const char *fills = NULL;
    char tb[40];
    if ((st->strategy == S_MEAN || st->strategy == S_MEDIAN) &&
        (c->type == QML_CATEGORICAL || c->type == QML_BOOLEAN))
        return STEP_ERR(st, "column %s is %s; %s needs a numeric or timestamp column", c->name,
                        qml_type_name(c->type), strategy_names[st->strategy]);
    if (c->n_missing == n && st->strategy != S_CONSTANT)
        return STEP_ERR(st, "column %s has no values to take the %s of", c->name,
                        strategy_names[st->strategy]);
    if (st->strategy == S_MEAN) {
        double s = 0;
        for (size_t r = 0; r < n; r++)
            if (!c->missing[r])
                s += c->num[r];
        fillv = s / (double)(n - c->n_missing);
    } else if (st->strategy == S_MEDIAN) {
        size_t m = n - c->n_missing, k = 0;
        double *v = malloc(m * sizeof *v);
        if (!v)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        for (size_t r = 0; r < n; r++)
            if (!c->missing[r])
                v[k++] = c->num[r];
        qsort(v, m, sizeof *v, cmp_double);
        fillv = m % 2 ? v[m / 2] : (v[m / 2 - 1] + v[m / 2]) / 2;
        free(v);
    } else if (st->strategy == S_MODE) {
        if (c->type == QML_CATEGORICAL) {
            size_t nd = qml_dict_size(c->dict), best = 0;
            size_t *cnt = calloc(nd ? nd : 1, sizeof *cnt);
            if (!cnt)
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            size_t *first = malloc((nd ? nd : 1) * sizeof *first);
            if (!first) {
                free(cnt);
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            }
            for (size_t k = 0; k < nd; k++)
                first[k] = SIZE_MAX;
            for (size_t r = 0; r < n; r++) {
                size_t k = (size_t)(uint32_t)c->cat[r];
                if (c->missing[r] || k >= nd) /* a code the dictionary lacks has no value */
                    continue;
                if (!cnt[k]++)
                    first[k] = r;
            }
            for (size_t k = 1; k < nd; k++)
                if (cnt[k] > cnt[best] || (cnt[k] == cnt[best] && first[k] < first[best]))
                    best = k;
            int none = cnt[best] == 0; /* only codes the dictionary lacks */
            fills = qml_dict_str(c->dict, (int32_t)best);
            free(cnt);
            free(first);
            if (none)
                return STEP_ERR(st, "column %s has no values to take the %s of", c->name,
                                strategy_names[st->strategy]);
        } else {
            size_t m = n - c->n_missing, k = 0;
            double *v = malloc(m * sizeof *v);
            if (!v)
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            for (size_t r = 0; r < n; r++)
                if (!c->missing[r])
                    v[k++] = c->num[r];
            qsort(v, m, sizeof *v, cmp_double);
            /* Ties go to the smallest value (the sorted order's first). */
            size_t best = 0, bestn = 0;
            for (size_t i = 0; i < m;) {
                size_t j = i;
                while (j < m && v[j] == v[i])
                    j++;
                if (j - i > bestn) {
                    bestn = j - i;
                    best = i;
                }
                i = j;
            }
            fillv = v[best];
            free(v);
        }
    } else {
        json_t *v = json_object_get(st->spec, "value");
        if (c->type == QML_CATEGORICAL) {
            fills = json_as_text(v, tb, sizeof tb);
        } else if (json_as_num(v, c->type, &fillv) < 0) {
            return STEP_ERR(st, "value is not a %s value for column %s", qml_type_name(c->type), c->name);
        }
    }
    int rc = copy_frame(f, out, err);
    if (rc < 0)
        return rc;
    qml_column *d = qml_frame_col(*out, (size_t)ci);
    int32_t code = -1;
    if (d->type == QML_CATEGORICAL && (code = qml_dict_intern(d->dict, fills, strlen(fills))) < 0) {
        qml_frame_free(*out);
        *out = NULL;
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t r = 0; r < n; r++) {
        if (!d->missing[r])
            continue;
        d->missing[r] = 0;
        if (d->type == QML_CATEGORICAL)
            d->cat[r] = code;
        else
            d->num[r] = fillv;
        (*changed)++;
    }
    d->n_missing = 0;
    return 0;
}

static int do_clip(const qml_frame *f, const step *st, qml_frame **out, size_t *changed, qn_err *err)
{
    int ci = col_of(f, st, st->column, err);
    if (ci < 0)
        return ci;
    const qml_column *c = qml_frame_col(f, (size_t)ci);
    if (c->type != QML_NUMERIC && c->type != QML_TIMESTAMP)
        return STEP_ERR(st, "column %s is %s; clip needs a numeric or timestamp column", c->name,
                        qml_type_name(c->type));
    int rc = copy_frame(f, out, err);
    if (rc < 0)
        return rc;
    qml_column *d = qml_frame_col(*out, (size_t)ci);
    for (size_t r = 0; r < d->len; r++) {
        if (d->missing[r])
            continue;
        if (st->has_min && d->num[r] < st->min) {
            d->num[r] = st->min;
            (*changed)++;
        } else if (st->has_max && d->num[r] > st->max) {
            d->num[r] = st->max;
            (*changed)++;
        }
    }
    return 0;
}

/* Converts a column to another type; cells that do not convert become
 * missing and are flagged in bad[]. */
static int do_cast(const qml_frame *f, const step *st, qml_frame **out, uint8_t *bad,
                   size_t *nbad, qn_err *err)
{
    int ci = col_of(f, st, st->column, err);
    if (ci < 0)
        return ci;
    const qml_column *c = qml_frame_col(f, (size_t)ci);
    size_t n = qml_frame_nrows(f);
    double *num = malloc((n ? n : 1) * sizeof *num);
    int32_t *codes = malloc((n ? n : 1) * sizeof *codes);
    uint8_t *miss = malloc(n ? n : 1);
    qml_dict *dict = qml_dict_new();
    int rc = 0;
    char tb[64];
    if (!num || !codes || !miss || !dict) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t r = 0; r < n; r++) {
        /* A code the dictionary lacks has no text: a missing cell. */
        miss[r] = c->missing[r] || (c->type == QML_CATEGORICAL && !qml_dict_str(c->dict, c->cat[r]));
        bad[r] = 0;
        if (miss[r])
            continue;
        if (st->to == QML_CATEGORICAL) {
            const char *s = qml_cell_text(c, r, tb, sizeof tb);
            if ((codes[r] = qml_dict_intern(dict, s, strlen(s))) < 0) {
                rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
                goto out;
            }
            continue;
        }
        int ok;
        if (c->type == QML_CATEGORICAL) {
            const char *s = qml_dict_str(c->dict, c->cat[r]);
            size_t l = strlen(s);
            ok = (st->to == QML_NUMERIC ? qml_parse_number(s, l, &num[r]) :
                  st->to == QML_BOOLEAN ? qml_parse_bool(s, l, 1, &num[r]) :
                  qml_parse_timestamp(s, l, &num[r])) == 0;
        } else {
            num[r] = c->num[r];
            ok = st->to != QML_BOOLEAN || num[r] == 0 || num[r] == 1;
        }
        if (!ok) {
            miss[r] = 1;
            bad[r] = 1;
            (*nbad)++;
        }
    }
    rc = rebuild(f, c->name, st->to, num, codes, dict, miss, out, err);
out:
    free(num);
    free(codes);
    free(miss);
    qml_dict_free(dict);
    return rc;
}

static int do_map_weights(const qml_frame *f, const step *st, qml_frame **out, uint8_t *keep,
                          size_t *unmapped, size_t *nmissing, qn_err *err)
{
    int ci = col_of(f, st, st->column, err);
    if (ci < 0)
        return ci;
    const qml_column *c = qml_frame_col(f, (size_t)ci);
    size_t n = qml_frame_nrows(f);
    json_t *map = json_object_get(st->spec, "map");
    double *num = malloc((n ? n : 1) * sizeof *num);
    uint8_t *miss = calloc(n ? n : 1, 1);
    int rc;
    char tb[64];
    if (!num || !miss) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t r = 0; r < n; r++) {
        keep[r] = 1;
        if (c->missing[r]) {
            miss[r] = 1;
            keep[r] = 0;
            (*nmissing)++;
            continue;
        }
        json_t *w = json_object_get(map, qml_cell_text(c, r, tb, sizeof tb));
        if (w) {
            num[r] = json_number_value(w);
        } else if (st->has_default) {
            num[r] = st->dflt;
        } else {
            miss[r] = 1;
            keep[r] = 0;
            (*unmapped)++;
        }
    }
    rc = rebuild(f, st->output, QML_NUMERIC, num, NULL, NULL, miss, out, err);
out:
    free(num);
    free(miss);
    return rc;
}

/* derive: a constant numeric column, or a copy of a column under a new name
 * (its type, cells and dictionary kept), added or replacing `output`. */
static int do_derive(const qml_frame *f, const step *st, const size_t *rows, size_t nrows, qml_frame **out,
                     qn_err *err)
{
    size_t n = qml_frame_nrows(f);
    if (st->column) {
        int ci = col_of(f, st, st->column, err);
        if (ci < 0)
            return ci;
        const qml_column *c = qml_frame_col(f, (size_t)ci);
        return rebuild_rows(f, rows, nrows, st->output, c->type, c->num, c->cat, c->dict, c->missing, out, err);
    }
    double *num = malloc((n ? n : 1) * sizeof *num);
    uint8_t *miss = calloc(n ? n : 1, 1);
    int rc;
    if (!num || !miss) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t r = 0; r < n; r++)
        num[r] = st->dflt;
    rc = rebuild_rows(f, rows, nrows, st->output, QML_NUMERIC, num, NULL, NULL, miss, out, err);
out:
    free(num);
    free(miss);
    return rc;
}

/* A copy of f with the columns named in the step's map renamed. */
static int do_rename(const qml_frame *f, const step *st, qml_frame **out, qn_err *err)
{
    json_t *m = json_object_get(st->spec, "columns");
    const char *key;
    json_t *val;
    json_object_foreach(m, key, val) {
        if (qml_frame_find(f, key) < 0)
            return STEP_ERR(st, "no column named %s", key);
    }
    /* A new name may only be taken by a column that is itself renamed. */
    json_object_foreach(m, key, val) {
        int at = qml_frame_find(f, json_string_value(val));
        if (at >= 0 && strcmp(qml_frame_col(f, (size_t)at)->name, key) != 0 &&
            !json_object_get(m, qml_frame_col(f, (size_t)at)->name))
            return STEP_ERR(st, "cannot rename %s to %s: a column has that name", key, json_string_value(val));
    }
    int rc = copy_frame(f, out, err);
    if (rc < 0)
        return rc;
    for (size_t j = 0; j < qml_frame_ncols(*out); j++) {
        qml_column *c = qml_frame_col(*out, j);
        json_t *to = json_object_get(m, c->name);
        if (!to)
            continue;
        char *nn = strdup(json_string_value(to));
        if (!nn) {
            qml_frame_free(*out);
            *out = NULL;
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        }
        free(c->name);
        c->name = nn;
    }
    return 0;
}

/* ---- moving an owned frame ------------------------------------------------ */

/* Swaps the cells of two columns of one type (arrays, capacity, dictionary,
 * counts); their names stay. */
static void swap_cells(qml_column *a, qml_column *b)
{
    qml_column t = *a;
    a->num = b->num;
    a->cat = b->cat;
    a->dict = b->dict;
    a->missing = b->missing;
    a->len = b->len;
    a->cap = b->cap;
    a->n_missing = b->n_missing;
    b->num = t.num;
    b->cat = t.cat;
    b->dict = t.dict;
    b->missing = t.missing;
    b->len = t.len;
    b->cap = t.cap;
    b->n_missing = t.n_missing;
}

/* Compacts the rows of c that keep marks (NULL: all) to its front, in place
 * (row k comes from a row r >= k, so nothing is read after it is written).
 * norm: as rebuild_rows writes a copied column (a missing cell's value 0 or
 * -1, a negative code missing); else the cells as they are, as
 * qml_frame_take copies them. Sets len and n_missing. */
/* One loop per case (kept rows given or all; cells as they are or
 * written as rebuild_rows writes them), each branch-free: every row is
 * written at k, and k moves past the kept ones. */
#define COMPACT(V, MS, X)                                  \
    do {                                                   \
        for (size_t r = 0; r < n; r++) {                   \
            uint8_t ms = (MS);                             \
            size_t kept = keep ? keep[r] != 0 : 1;         \
            V[k] = (X);                                    \
            m[k] = ms;                                     \
            nm += kept * ms;                               \
            k += kept;                                     \
        }                                                  \
    } while (0)

static void compact_col(qml_column *c, const uint8_t *keep, size_t n, int norm)
{
    size_t k = 0, nm = 0;
    uint8_t *m = c->missing;
    if (c->type == QML_CATEGORICAL) {
        int32_t *v = c->cat;
        if (norm)
            COMPACT(v, (uint8_t)(m[r] || v[r] < 0), m[r] ? -1 : v[r]);
        else
            COMPACT(v, m[r], v[r]);
    } else {
        double *v = c->num;
        if (norm)
            COMPACT(v, (uint8_t)(m[r] != 0), ms ? 0 : v[r]);
        else
            COMPACT(v, m[r], v[r]);
    }
    c->len = k;
    c->n_missing = nm;
}
#undef COMPACT

/* The rows of f that keep marks (NULL: all) as a new frame, f's arrays moved
 * into it rather than copied: a derive or take over a frame that is the
 * caller's to consume. The kept cells are compacted in place and each
 * column's arrays handed over whole, so no fresh memory is touched (on a
 * virtual machine a first touch of a page costs more than the copy). With
 * derive (an OP_DERIVE step) its output column is added or replaced as
 * rebuild_rows makes it, and every column written as rebuild_rows writes
 * it; without, the cells are as qml_frame_take copies them. f is freed
 * whatever happens. */
static int move_rows(qml_frame *f, const uint8_t *keep, const step *derive, qml_frame **out, qn_err *err)
{
    size_t n = qml_frame_nrows(f), nc = qml_frame_ncols(f), k = 0;
    int at = -1, ci = -1, rc = 0;
    qml_frame *g = NULL;
    qml_type t = QML_NUMERIC;
    *out = NULL;
    for (size_t r = 0; r < n; r++)
        k += !keep || keep[r];
    if (derive) {
        if (derive->column && (ci = col_of(f, derive, derive->column, err)) < 0) {
            rc = ci;
            goto out;
        }
        if (ci >= 0)
            t = qml_frame_col(f, (size_t)ci)->type;
        at = qml_frame_find(f, derive->output);
    }
    size_t gn = derive && at < 0 ? nc + 1 : nc;
    if (!(g = qml_frame_new())) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t j = 0; j < gn; j++) {
        int is_new = derive && ((int)j == at || j == nc);
        const qml_column *src = j < nc ? qml_frame_col(f, j) : NULL;
        int added = qml_frame_add_column(g, is_new ? derive->output : src->name, is_new ? t : src->type, err);
        if (added < 0) {
            rc = added;
            goto out;
        }
    }
    /* The derived column first, when it copies a column it replaces (its
     * cells are read before the column goes away with f). */
    qml_column *dc = derive ? qml_frame_col(g, at >= 0 ? (size_t)at : nc) : NULL;
    if (dc && ci >= 0 && ci == at) {
        /* A column derived from itself: its cells and dictionary (a copy
         * would have the same entries, code for code) move. */
        qml_column *src = qml_frame_col(f, (size_t)ci);
        compact_col(src, keep, n, 1);
        swap_cells(dc, src);
    } else if (dc && ci >= 0 && dc->dict) {
        const qml_column *src = qml_frame_col(f, (size_t)ci);
        for (size_t e = 0; e < qml_dict_size(src->dict); e++) {
            const char *str = qml_dict_str(src->dict, (int32_t)e);
            if (qml_dict_intern(dc->dict, str, strlen(str)) < 0)
                goto oom;
        }
    }
    for (size_t j = 0; j < nc; j++) {
        if ((int)j == at)
            continue;
        qml_column *src = qml_frame_col(f, j);
        compact_col(src, keep, n, derive != NULL);
        swap_cells(qml_frame_col(g, j), src);
    }
    if (dc && !(ci >= 0 && ci == at)) {
        /* Every moved column has room for n >= k rows: only dc is new. */
        if (qml_frame_reserve(g, k) < 0)
            goto oom;
        if (ci >= 0 && k > 0) {
            /* The moved source is already written as rebuild_rows would
             * write the copy. */
            const qml_column *src = qml_frame_col(g, (size_t)ci);
            memcpy(dc->missing, src->missing, k);
            if (t == QML_CATEGORICAL)
                memcpy(dc->cat, src->cat, k * sizeof *dc->cat);
            else
                memcpy(dc->num, src->num, k * sizeof *dc->num);
            dc->n_missing = src->n_missing;
        } else if (ci < 0) {
            for (size_t r = 0; r < k; r++) {
                dc->num[r] = derive->dflt;
                dc->missing[r] = 0;
            }
            dc->n_missing = 0;
        }
        dc->len = k;
    }
    if (qml_frame_end_rows(g, k) < 0) {
        rc = qn_err_set(err, QN_INTERNAL, "moving the kept rows left columns of different lengths");
        goto out;
    }
    *out = g;
    g = NULL;
    goto out;
oom:
    rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
out:
    qml_frame_free(g);
    qml_frame_free(f);
    return rc;
}

/* ---- apply --------------------------------------------------------------- */

/* Steps that keep or drop each row on its own cells (drop_missing, filter,
 * time_window): several in a row are evaluated on one frame and the rows
 * taken once, not once per step. */
static int row_local(const step *st)
{
    return st->op == OP_DROP_MISSING || st->op == OP_FILTER || st->op == OP_TIME_WINDOW;
}

/* keep[r] for every row of f by a row_local step; the note's counts are of
 * the rows still alive (alive NULL: all). */
static int row_mask(const qml_frame *f, const step *st, const uint8_t *alive, uint8_t *keep,
                    qml_clean_step_report *sr, qn_err *err)
{
    size_t n = qml_frame_nrows(f);
    int rc = 0;
    switch (st->op) {
    case OP_DROP_MISSING: {
        int *cols;
        size_t nk;
        if ((rc = names_to_cols(f, st, "columns", &cols, &nk, err)) < 0)
            break;
        /* Column by column: keep[r] is 1 only when no named cell is missing. */
        memset(keep, 1, n);
        for (size_t i = 0; i < nk; i++) {
            const uint8_t *m = qml_frame_col(f, (size_t)cols[i])->missing;
            for (size_t r = 0; r < n; r++)
                keep[r] &= (uint8_t)!m[r];
        }
        free(cols);
        snprintf(sr->note, sizeof sr->note, "rows with a missing cell dropped");
        break;
    }
    case OP_FILTER: {
        size_t nm;
        if ((rc = filter_mask(f, st, alive, keep, &nm, err)) < 0)
            break;
        char *val = qn_json_dumps(json_object_get(st->spec, "value"), JSON_COMPACT | JSON_ENCODE_ANY);
        snprintf(sr->note, sizeof sr->note, "rows failing %s %s %.60s%s dropped (%zu had it missing)",
                 st->column, cmp_names[st->cmp], val ? val : "",
                 val && strlen(val) > 60 ? "..." : "", nm);
        free(val);
        break;
    }
    case OP_TIME_WINDOW: {
        int ci = col_of(f, st, st->column, err);
        if ((rc = ci) < 0)
            break;
        const qml_column *c = qml_frame_col(f, (size_t)ci);
        if (!is_num_type(c->type) || c->type == QML_BOOLEAN) {
            rc = STEP_ERR(st, "column %s is %s; time_window needs a timestamp column", c->name,
                          qml_type_name(c->type));
            break;
        }
        size_t nm = 0;
        for (size_t r = 0; r < n; r++) {
            nm += c->missing[r] && (!alive || alive[r]);
            keep[r] = !c->missing[r] && (!st->has_min || c->num[r] >= st->min) &&
                      (!st->has_max || c->num[r] < st->max);
        }
        snprintf(sr->note, sizeof sr->note, "rows outside the window dropped (%zu had no time)", nm);
        break;
    }
    default:
        rc = qn_err_set(err, QN_INTERNAL, "not a row step");
    }
    return rc;
}

static void derive_note(const step *st, qml_clean_step_report *sr)
{
    if (st->column)
        snprintf(sr->note, sizeof sr->note, "%s copied to %s", st->column, st->output);
    else
        snprintf(sr->note, sizeof sr->note, "%s set to %g on every row", st->output, st->dflt);
}

/* rows (NULL: all; only for a derive) are the rows of f the step keeps. */
static int apply_step(const qml_frame *f, const step *st, const size_t *rows, size_t nrows, qml_frame **out,
                      qml_clean_step_report *sr, qn_err *err)
{
    size_t n = qml_frame_nrows(f);
    uint8_t *keep = malloc(n ? n : 1);
    qml_frame *mid = NULL;
    int rc = 0;
    if (!keep)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    *out = NULL;
    switch (st->op) {
    case OP_DROP_MISSING:
    case OP_FILTER:
    case OP_TIME_WINDOW:
        if ((rc = row_mask(f, st, NULL, keep, sr, err)) < 0)
            break;
        rc = take_kept(f, keep, out, err);
        break;
    case OP_DEDUPE:
        if ((rc = dedupe_mask(f, st, keep, err)) < 0)
            break;
        rc = take_kept(f, keep, out, err);
        snprintf(sr->note, sizeof sr->note, "repeated keys dropped (first kept)");
        break;
    case OP_IMPUTE:
        rc = do_impute(f, st, out, &sr->cells_changed, err);
        snprintf(sr->note, sizeof sr->note, "missing %s cells filled (%s)", st->column,
                 strategy_names[st->strategy]);
        break;
    case OP_CLIP:
        rc = do_clip(f, st, out, &sr->cells_changed, err);
        snprintf(sr->note, sizeof sr->note, "%s cells clipped", st->column);
        break;
    case OP_CAST: {
        size_t nbad = 0;
        if ((rc = do_cast(f, st, &mid, keep, &nbad, err)) < 0)
            break;
        if (st->cast_drop) {
            for (size_t r = 0; r < n; r++)
                keep[r] = !keep[r];
            rc = take_kept(mid, keep, out, err);
            snprintf(sr->note, sizeof sr->note, "%zu rows whose %s is not %s dropped", nbad,
                     st->column, qml_type_name(st->to));
        } else {
            *out = mid;
            mid = NULL;
            sr->cells_changed = nbad;
            snprintf(sr->note, sizeof sr->note, "%zu cells of %s not %s made missing", nbad,
                     st->column, qml_type_name(st->to));
        }
        break;
    }
    case OP_MAP_WEIGHTS: {
        size_t unmapped = 0, nm = 0;
        if ((rc = do_map_weights(f, st, &mid, keep, &unmapped, &nm, err)) < 0)
            break;
        rc = take_kept(mid, keep, out, err);
        snprintf(sr->note, sizeof sr->note, "%zu rows with a %s not in the map and %zu with it missing dropped",
                 unmapped, st->column, nm);
        break;
    }
    case OP_SELECT: {
        json_t *arr = json_object_get(st->spec, "columns");
        size_t nk = json_array_size(arr);
        const char **names = malloc((nk ? nk : 1) * sizeof *names);
        if (!names) {
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
        for (size_t i = 0; i < nk; i++)
            names[i] = json_string_value(json_array_get(arr, i));
        for (size_t i = 0; i < nk && rc == 0; i++)
            if (qml_frame_find(f, names[i]) < 0)
                rc = STEP_ERR(st, "no column named %s", names[i]);
        if (rc == 0 && !(*out = qml_frame_select(f, names, nk, err)))
            rc = err ? err->code : QN_RESOURCE_EXHAUSTED;
        free(names);
        snprintf(sr->note, sizeof sr->note, "%zu of %zu columns kept", nk, qml_frame_ncols(f));
        break;
    }
    case OP_RENAME:
        rc = do_rename(f, st, out, err);
        snprintf(sr->note, sizeof sr->note, "%zu columns renamed",
                 json_object_size(json_object_get(st->spec, "columns")));
        break;
    case OP_DERIVE:
        rc = do_derive(f, st, rows, nrows, out, err);
        derive_note(st, sr);
        break;
    default:
        rc = qn_err_set(err, QN_INTERNAL, "unknown step");
    }
    qml_frame_free(mid);
    free(keep);
    if (rc < 0) {
        qml_frame_free(*out);
        *out = NULL;
        return rc;
    }
    return 0;
}

/* The steps over in (own NULL), or over own, which is consumed: the frames
 * the row steps leave and a derive's are then made by moving own's arrays
 * (move_rows), not by copying them. */
static int apply_all(const qml_frame *in, qml_frame *own, const qml_clean_steps *s, qml_frame **out,
                     qml_clean_report *rep, qn_err *err)
{
    qml_clean_report local;
    if (!rep)
        rep = &local;
    memset(rep, 0, sizeof *rep);
    if (own)
        in = own;
    rep->rows_in = qml_frame_nrows(in);
    *out = NULL;
    /* cur is the frame the steps see: in itself until a step makes a new
     * one (owned; own from the start when given). alive marks the rows of
     * cur that the row steps since the last new frame kept (NULL: all);
     * they are taken when a step of another kind comes, or at the end. */
    const qml_frame *cur = in;
    qml_frame *owned = own, *next = NULL;
    uint8_t *alive = NULL, *keep = NULL;
    size_t nalive = qml_frame_nrows(in);
    int rc = 0;
    for (size_t i = 0; i < s->n; i++) {
        const step *st = &s->steps[i];
        qml_clean_step_report *sr = &rep->steps[i];
        size_t n = qml_frame_nrows(cur);
        snprintf(sr->op, sizeof sr->op, "%s", op_names[st->op]);
        sr->rows_in = nalive;
        if (row_local(st)) {
            if (!alive) {
                alive = malloc(n ? n : 1);
                keep = malloc(n ? n : 1);
                if (!alive || !keep) {
                    rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
                    goto out;
                }
                memset(alive, 1, n);
            }
            if ((rc = row_mask(cur, st, alive, keep, sr, err)) < 0)
                goto out;
            nalive = 0;
            for (size_t r = 0; r < n; r++)
                nalive += alive[r] &= keep[r];
            sr->rows_out = nalive;
            rep->nsteps = i + 1;
            continue;
        }
        if (own && owned && st->op == OP_DERIVE) {
            /* The kept rows and the derived column in one frame made of
             * owned's arrays. */
            rc = move_rows(owned, alive, st, &next, err);
            cur = owned = next;
            next = NULL;
            free(alive);
            free(keep);
            alive = keep = NULL;
            if (rc < 0)
                goto out;
            derive_note(st, sr);
            nalive = sr->rows_out = qml_frame_nrows(cur);
            rep->nsteps = i + 1;
            continue;
        }
        size_t *rows = NULL, nk = 0;
        if (alive && st->op == OP_DERIVE) {
            /* The derive reads the kept rows itself: one new frame, not a
             * take and then a copy of it. */
            if (!(rows = malloc((n ? n : 1) * sizeof *rows))) {
                rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
                goto out;
            }
            for (size_t r = 0; r < n; r++)
                if (alive[r])
                    rows[nk++] = r;
            free(alive);
            free(keep);
            alive = keep = NULL;
        } else if (alive) {
            if (own && owned)
                rc = move_rows(owned, alive, NULL, &next, err);
            else
                rc = take_kept(cur, alive, &next, err);
            if (own && owned)
                owned = NULL; /* consumed, whatever the outcome */
            if (rc < 0)
                goto out;
            qml_frame_free(owned);
            cur = owned = next;
            next = NULL;
            free(alive);
            free(keep);
            alive = keep = NULL;
        }
        rc = apply_step(cur, st, rows, nk, &next, sr, err);
        free(rows);
        if (rc < 0)
            goto out;
        qml_frame_free(owned);
        cur = owned = next;
        next = NULL;
        nalive = sr->rows_out = qml_frame_nrows(cur);
        rep->nsteps = i + 1;
    }
    if (alive && own && owned) {
        rc = move_rows(owned, alive, NULL, &next, err);
        owned = next;
        next = NULL;
        if (rc < 0)
            goto out;
    } else if (alive || !owned) {
        if (alive)
            rc = take_kept(cur, alive, &next, err);
        else
            rc = copy_frame(cur, &next, err);
        if (rc < 0)
            goto out;
        qml_frame_free(owned);
        owned = next;
    }
    rep->rows_out = qml_frame_nrows(owned);
    *out = owned;
    owned = NULL;
out:
    qml_frame_free(owned);
    free(alive);
    free(keep);
    return rc;
}

int qml_clean_apply(const qml_frame *in, const qml_clean_steps *s, qml_frame **out,
                    qml_clean_report *rep, qn_err *err)
{
    return apply_all(in, NULL, s, out, rep, err);
}

int qml_clean_apply_owned(qml_frame *in, const qml_clean_steps *s, qml_frame **out,
                          qml_clean_report *rep, qn_err *err)
{
    return apply_all(NULL, in, s, out, rep, err);
}

/* ---- interactions -------------------------------------------------------- */

void qml_interactions_free(qml_interactions *ia)
{
    if (!ia)
        return;
    qml_csr_free(ia->matrix);
    qml_dict_free(ia->users);
    qml_dict_free(ia->items);
    memset(ia, 0, sizeof *ia);
}

/* Codes of one id column in a new dictionary for the rows in use; -1 elsewhere. */
static int code_ids(const qml_column *c, const uint8_t *use, qml_dict *d, int32_t *codes)
{
    char tb[64];
    int32_t *map = NULL;
    if (c->type == QML_CATEGORICAL) {
        /* Translate per dictionary entry, in order of first appearance. */
        size_t nd = qml_dict_size(c->dict);
        if (!(map = malloc((nd ? nd : 1) * sizeof *map)))
            return QN_RESOURCE_EXHAUSTED;
        memset(map, 0xff, (nd ? nd : 1) * sizeof *map);
    }
    for (size_t r = 0; r < c->len; r++) {
        if (!use[r]) {
            codes[r] = -1;
            continue;
        }
        if (map) {
            int32_t k = c->cat[r];
            if (map[k] < 0) {
                const char *s = qml_dict_str(c->dict, k);
                map[k] = qml_dict_intern(d, s, strlen(s));
            }
            codes[r] = map[k];
        } else {
            const char *s = qml_cell_text(c, r, tb, sizeof tb);
            codes[r] = qml_dict_intern(d, s, strlen(s));
        }
        if (codes[r] < 0) {
            free(map);
            return QN_RESOURCE_EXHAUSTED;
        }
    }
    free(map);
    return 0;
}

int qml_interactions_build(const qml_frame *f, const char *user_col, const char *item_col,
                           const char *weight_col, qml_interactions *out, qn_err *err)
{
    memset(out, 0, sizeof *out);
    int ui = qml_frame_find(f, user_col), ii = qml_frame_find(f, item_col);
    int wi = weight_col ? qml_frame_find(f, weight_col) : -1;
    if (ui < 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "interactions: no user column named %s", user_col);
    if (ii < 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "interactions: no item column named %s", item_col);
    if (weight_col && wi < 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "interactions: no weight column named %s", weight_col);
    const qml_column *w = wi >= 0 ? qml_frame_col(f, (size_t)wi) : NULL;
    if (w && w->type == QML_CATEGORICAL)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "interactions: weight column %s is categorical",
                          weight_col);
    size_t n = qml_frame_nrows(f), k = 0;
    int32_t *uc = malloc((n ? n : 1) * sizeof *uc), *ic = malloc((n ? n : 1) * sizeof *ic);
    float *v = malloc((n ? n : 1) * sizeof *v);
    uint8_t *use = malloc(n ? n : 1);
    const qml_column *u = qml_frame_col(f, (size_t)ui), *it = qml_frame_col(f, (size_t)ii);
    int rc;
    out->users = qml_dict_new();
    out->items = qml_dict_new();
    if (!uc || !ic || !v || !use || !out->users || !out->items) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory building interactions");
        goto out;
    }
    for (size_t r = 0; r < n; r++)
        use[r] = !u->missing[r] && !it->missing[r] && !(w && w->missing[r]);
    if (code_ids(u, use, out->users, uc) < 0 || code_ids(it, use, out->items, ic) < 0) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory building interactions");
        goto out;
    }
    for (size_t r = 0; r < n; r++) {
        if (!use[r]) {
            out->rows_skipped++;
            continue;
        }
        uc[k] = uc[r];
        ic[k] = ic[r];
        v[k++] = w ? (float)w->num[r] : 1.0f;
    }
    out->rows_used = k;
    rc = qml_csr_from_coo((int32_t)qml_dict_size(out->users), (int32_t)qml_dict_size(out->items),
                          uc, ic, v, k, &out->matrix, err);
out:
    free(uc);
    free(ic);
    free(v);
    free(use);
    if (rc < 0)
        qml_interactions_free(out);
    return rc;
}
