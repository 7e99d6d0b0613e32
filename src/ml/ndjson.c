/*
 * ndjson.c - the NDJSON reader (see ndjson.h).
 *
 * Lines come from a fixed 1 MiB window over the file (or straight from the
 * caller's buffer); a line that crosses the window is gathered in a line
 * buffer bounded by max_line_bytes. Each line is parsed by jansson, then its
 * values are converted to the column types. The first infer_rows lines are
 * parsed at open, kept as JSON, used for the schema and emitted first.
 */
#include "ml/ndjson.h"
#include "core/json.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WINDOW_BYTES (1u << 20)

/* One line of the inference sample: its JSON object, or why it is bad. */
typedef struct pend {
    uint64_t line;
    json_t *obj;
    qml_bad_reason reason;
    char msg[QML_REPORT_MSG];
} pend;

struct qml_ndjson_reader {
    int fd;
    char *win;
    const char *p, *end;
    int eof;
    char *path;
    uint64_t lines;
    char *lbuf;                 /* a line that crossed the window */
    size_t llen, lcap, max_line;

    size_t ncols;
    char **names;
    qml_type *types;

    pend *pend;
    size_t npend, ipend;
    qml_read_report rep;
};

void qml_ndjson_opts_init(qml_ndjson_opts *o)
{
    memset(o, 0, sizeof *o);
    o->infer_rows = 1000;
    o->max_line_bytes = 1u << 20;
}

void qml_ndjson_close(qml_ndjson_reader *r)
{
    if (!r)
        return;
    if (r->fd >= 0)
        close(r->fd);
    free(r->win);
    free(r->path);
    free(r->lbuf);
    for (size_t i = 0; i < r->ncols; i++)
        free(r->names[i]);
    free(r->names);
    free(r->types);
    for (size_t i = r->ipend; i < r->npend; i++)
        json_decref(r->pend[i].obj);
    free(r->pend);
    free(r);
}

/* ---- lines --------------------------------------------------------------- */

static int refill(qml_ndjson_reader *r, qn_err *err)
{
    if (!r->win || r->eof)
        return 0;
    for (;;) {
        ssize_t n = read(r->fd, r->win, WINDOW_BYTES);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return qn_err_set(err, QN_INTERNAL, "%s: read failed: %s", r->path, strerror(errno));
        if (n == 0) {
            r->eof = 1;
            return 0;
        }
        r->p = r->win;
        r->end = r->win + n;
        return 1;
    }
}

static int lbuf_add(qml_ndjson_reader *r, const char *s, size_t n, int *too_long)
{
    if (*too_long)
        return 0;
    if (r->llen + n > r->max_line) {
        *too_long = 1;
        return 0;
    }
    if (r->llen + n > r->lcap) {
        size_t cap = r->lcap ? r->lcap : 4096;
        while (cap < r->llen + n)
            cap *= 2;
        char *b = realloc(r->lbuf, cap);
        if (!b)
            return QN_RESOURCE_EXHAUSTED;
        r->lbuf = b;
        r->lcap = cap;
    }
    memcpy(r->lbuf + r->llen, s, n);
    r->llen += n;
    return 0;
}

/* The next line (without its LF or CRLF): 1, 0 at the end, or < 0. */
static int next_line(qml_ndjson_reader *r, const char **s, size_t *len, int *too_long,
                     qn_err *err)
{
    int got = 0, k;
    r->llen = 0;
    *too_long = 0;
    for (;;) {
        if (r->p == r->end) {
            if ((k = refill(r, err)) < 0)
                return k;
            if (k == 0) {
                if (!got)
                    return 0;
                *s = r->lbuf;
                *len = r->llen;
                break;
            }
        }
        got = 1;
        const char *nl = memchr(r->p, '\n', (size_t)(r->end - r->p));
        if (nl && r->llen == 0 && !*too_long) {
            *s = r->p;
            *len = (size_t)(nl - r->p);
            r->p = nl + 1;
            if (*len > r->max_line)
                *too_long = 1;
            break;
        }
        const char *stop = nl ? nl : r->end;
        if (lbuf_add(r, r->p, (size_t)(stop - r->p), too_long) < 0)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory reading %s", r->path);
        r->p = nl ? nl + 1 : r->end;
        if (nl) {
            *s = r->lbuf;
            *len = r->llen;
            break;
        }
    }
    r->lines++;
    if (*len && (*s)[*len - 1] == '\r')
        (*len)--;
    return 1;
}

static int is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t')
            return 0;
    return 1;
}

/* Reads and parses the next non-blank line into *pd. 1, 0 at end, < 0. */
static int next_object(qml_ndjson_reader *r, pend *pd, qn_err *err)
{
    const char *s = NULL;
    size_t len = 0;
    int too_long, k;
    do {
        if ((k = next_line(r, &s, &len, &too_long, err)) <= 0)
            return k;
    } while (!too_long && is_blank(s, len));
    pd->line = r->lines;
    pd->obj = NULL;
    if (too_long) {
        pd->reason = QML_BAD_TOO_LONG;
        snprintf(pd->msg, sizeof pd->msg, "line longer than max_line_bytes (%zu)", r->max_line);
        return 1;
    }
    json_error_t je;
    json_t *v = json_loadb(s, len, JSON_REJECT_DUPLICATES, &je);
    if (!v && json_error_code(&je) == json_error_out_of_memory) /* not the row's fault */
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "%s: out of memory reading line %llu",
                          r->path, (unsigned long long)r->lines);
    if (!v) {
        pd->reason = QML_BAD_JSON;
        snprintf(pd->msg, sizeof pd->msg, "not JSON at column %d: %s", je.column, je.text);
        return 1;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        pd->reason = QML_BAD_JSON;
        snprintf(pd->msg, sizeof pd->msg, "not a JSON object");
        return 1;
    }
    pd->obj = v;
    return 1;
}

/* ---- cells --------------------------------------------------------------- */

static int find_col(const qml_ndjson_reader *r, const char *name)
{
    for (size_t i = 0; i < r->ncols; i++)
        if (strcmp(r->names[i], name) == 0)
            return (int)i;
    return -1;
}

/* Pushes one JSON value into c. 0, QN_INVALID_ARGUMENT (msg filled) or OOM. */
static int push_value(qml_column *c, json_t *v, char *msg, size_t cap)
{
    if (!v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0))
        return qml_col_push_missing(c);
    char tmp[40];
    if (json_is_string(v))
        return qml_col_push_text(c, json_string_value(v), json_string_length(v), msg, cap);
    if (json_is_number(v)) {
        double x = json_number_value(v);
        if (c->type == QML_CATEGORICAL) {
            int n = qml_format_number(x, tmp, sizeof tmp);
            return qml_col_push_str(c, tmp, (size_t)n);
        }
        if (c->type == QML_BOOLEAN && x != 0 && x != 1)
            goto bad;
        return qml_col_push_num(c, x);
    }
    if (json_is_boolean(v)) {
        if (c->type == QML_CATEGORICAL)
            return json_is_true(v) ? qml_col_push_str(c, "true", 4) : qml_col_push_str(c, "false", 5);
        if (c->type != QML_BOOLEAN)
            goto bad;
        return qml_col_push_num(c, json_is_true(v));
    }
    if (c->type == QML_CATEGORICAL) {
        char *text = qn_json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        if (!text)
            return QN_RESOURCE_EXHAUSTED;
        int rc = qml_col_push_str(c, text, strlen(text));
        free(text);
        return rc;
    }
bad:
    snprintf(msg, cap, "column %s: a JSON %s does not fit a %s column", c->name,
             json_is_object(v) ? "object" : json_is_array(v) ? "array" :
             json_is_boolean(v) ? "boolean" : "number", qml_type_name(c->type));
    return QN_INVALID_ARGUMENT;
}

static int emit(qml_ndjson_reader *r, qml_frame *f, const pend *pd)
{
    char msg[QML_REPORT_MSG];
    if (!pd->obj) {
        qml_read_report_bad(&r->rep, pd->line, pd->reason, pd->msg);
        return 0;
    }
    for (size_t i = 0; i < r->ncols; i++) {
        int rc = push_value(qml_frame_col(f, i), json_object_get(pd->obj, r->names[i]), msg, sizeof msg);
        if (rc == QN_INVALID_ARGUMENT) {
            qml_frame_abort_row(f);
            qml_read_report_bad(&r->rep, pd->line, QML_BAD_TYPE, msg);
            return 0;
        }
        if (rc < 0) {
            qml_frame_abort_row(f);
            return QN_RESOURCE_EXHAUSTED;
        }
    }
    const char *key;
    json_t *val;
    json_object_foreach(pd->obj, key, val) {
        if (find_col(r, key) < 0)
            r->rep.unknown_keys++;
    }
    if (qml_frame_end_row(f) < 0)
        return QN_INTERNAL;
    r->rep.rows_read++;
    r->rep.rows_ok++;
    return 0;
}

/* ---- schema -------------------------------------------------------------- */

static int add_col(qml_ndjson_reader *r, const char *name, int type, qn_err *err)
{
    if (find_col(r, name) >= 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "column %s appears twice in the schema", name);
    char **names = realloc(r->names, (r->ncols + 1) * sizeof *names);
    if (!names)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    r->names = names;
    qml_type *types = realloc(r->types, (r->ncols + 1) * sizeof *types);
    if (!types)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    r->types = types;
    if (!(r->names[r->ncols] = strdup(name)))
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    r->types[r->ncols++] = (qml_type)type;
    return 0;
}

static qml_type infer_json(const qml_ndjson_reader *r, const char *name)
{
    int num = 0, boo = 0, str = 0, other = 0;
    qml_infer in = {0};
    for (size_t i = 0; i < r->npend; i++) {
        json_t *v = r->pend[i].obj ? json_object_get(r->pend[i].obj, name) : NULL;
        if (!v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0))
            continue;
        if (json_is_number(v))
            num = 1;
        else if (json_is_boolean(v))
            boo = 1;
        else if (json_is_string(v)) {
            str = 1;
            qml_infer_text(&in, json_string_value(v), json_string_length(v));
        } else
            other = 1;
    }
    if (other || num + boo + str > 1)
        return QML_CATEGORICAL;
    if (num)
        return QML_NUMERIC;
    if (boo)
        return QML_BOOLEAN;
    if (str && !in.not_ts)
        return QML_TIMESTAMP;
    return QML_CATEGORICAL;
}

static qml_ndjson_reader *open_common(qml_ndjson_reader *r, const qml_ndjson_opts *o, qn_err *err)
{
    qml_ndjson_opts def;
    if (!o) {
        qml_ndjson_opts_init(&def);
        o = &def;
    }
    r->max_line = o->max_line_bytes ? o->max_line_bytes : (1u << 20);
    for (size_t i = 0; i < o->n_fields; i++) {
        const qml_field_spec *fs = &o->fields[i];
        if (!fs->name || !fs->name[0]) {
            qn_err_set(err, QN_INVALID_ARGUMENT, "fields[%zu] has no name", i);
            goto fail;
        }
        if (fs->type != QML_INFER && (fs->type < 0 || fs->type > QML_TIMESTAMP)) {
            qn_err_set(err, QN_INVALID_ARGUMENT, "fields[%zu] (%s): unknown type %d", i, fs->name, fs->type);
            goto fail;
        }
        if (add_col(r, fs->name, fs->type, err) < 0)
            goto fail;
    }
    int need = !o->fields_only;
    for (size_t i = 0; i < r->ncols; i++)
        need |= (int)r->types[i] == QML_INFER;
    if (!need)
        return r;
    size_t want = o->infer_rows ? o->infer_rows : 1;
    if (!(r->pend = calloc(want, sizeof *r->pend))) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    while (r->npend < want) {
        int k = next_object(r, &r->pend[r->npend], err);
        if (k < 0)
            goto fail;
        if (k == 0)
            break;
        r->npend++;
    }
    if (!o->fields_only) {
        for (size_t i = 0; i < r->npend; i++) {
            const char *key;
            json_t *val;
            if (!r->pend[i].obj)
                continue;
            json_object_foreach(r->pend[i].obj, key, val) {
                if (find_col(r, key) < 0 && add_col(r, key, QML_INFER, err) < 0)
                    goto fail;
            }
        }
    }
    for (size_t i = 0; i < r->ncols; i++)
        if ((int)r->types[i] == QML_INFER)
            r->types[i] = infer_json(r, r->names[i]);
    return r;
fail:
    qml_ndjson_close(r);
    return NULL;
}

qml_ndjson_reader *qml_ndjson_open(const char *path, const qml_ndjson_opts *o, qn_err *err)
{
    qml_ndjson_reader *r = calloc(1, sizeof *r);
    if (!r) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory opening %s", path);
        return NULL;
    }
    r->fd = -1;
    r->path = strdup(path);
    r->win = malloc(WINDOW_BYTES);
    if (!r->path || !r->win) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory opening %s", path);
        qml_ndjson_close(r);
        return NULL;
    }
    r->p = r->end = r->win;
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        qn_err_set(err, errno == ENOENT ? QN_NOT_FOUND : QN_INTERNAL, "%s: cannot open: %s", path,
                   strerror(errno));
        qml_ndjson_close(r);
        return NULL;
    }
    return open_common(r, o, err);
}

qml_ndjson_reader *qml_ndjson_open_mem(const void *data, size_t len, const qml_ndjson_opts *o,
                                       qn_err *err)
{
    qml_ndjson_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup("(memory)"))) {
        free(r);
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    r->fd = -1;
    r->p = data ? (const char *)data : "";
    r->end = r->p + (data ? len : 0);
    r->eof = 1;
    return open_common(r, o, err);
}

/* ---- reading ------------------------------------------------------------- */

static int fill(qml_ndjson_reader *r, qml_frame *f, size_t max_rows, qn_err *err)
{
    while (qml_frame_nrows(f) < max_rows) {
        int k;
        if (r->ipend < r->npend) {
            pend *pd = &r->pend[r->ipend++];
            k = emit(r, f, pd);
            json_decref(pd->obj);
            pd->obj = NULL;
        } else {
            pend pd;
            if ((k = next_object(r, &pd, err)) < 0)
                return k;
            if (k == 0)
                return 0;
            k = emit(r, f, &pd);
            json_decref(pd.obj);
        }
        if (k < 0)
            return qn_err_set(err, k, "%s: out of memory near line %llu", r->path,
                              (unsigned long long)r->lines);
    }
    return 0;
}

static qml_frame *new_chunk(const qml_ndjson_reader *r, qn_err *err)
{
    qml_frame *f = qml_frame_new();
    if (!f) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < r->ncols; i++) {
        if (qml_frame_add_column(f, r->names[i], r->types[i], err) < 0) {
            qml_frame_free(f);
            return NULL;
        }
    }
    return f;
}

int qml_ndjson_next(qml_ndjson_reader *r, size_t max_rows, qml_frame **chunk, qn_err *err)
{
    *chunk = NULL;
    if (max_rows == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "max_rows must be > 0");
    qml_frame *f = new_chunk(r, err);
    if (!f)
        return err ? err->code : QN_RESOURCE_EXHAUSTED;
    int k = fill(r, f, max_rows, err);
    if (k < 0 || qml_frame_nrows(f) == 0) {
        qml_frame_free(f);
        return k < 0 ? k : 0;
    }
    *chunk = f;
    return 1;
}

const qml_read_report *qml_ndjson_report(const qml_ndjson_reader *r) { return &r->rep; }

static int read_all(qml_ndjson_reader *r, qml_frame **out, qml_read_report *rep, qn_err *err)
{
    *out = NULL;
    if (!r)
        return err ? err->code : QN_INTERNAL;
    qml_frame *f = new_chunk(r, err);
    int k = f ? fill(r, f, SIZE_MAX, err) : (err ? err->code : QN_RESOURCE_EXHAUSTED);
    if (rep)
        *rep = r->rep;
    qml_ndjson_close(r);
    if (k < 0) {
        qml_frame_free(f);
        return k;
    }
    *out = f;
    return 0;
}

int qml_ndjson_read_all(const char *path, const qml_ndjson_opts *o, qml_frame **out,
                        qml_read_report *rep, qn_err *err)
{
    return read_all(qml_ndjson_open(path, o, err), out, rep, err);
}

int qml_ndjson_read_all_mem(const void *data, size_t len, const qml_ndjson_opts *o,
                            qml_frame **out, qml_read_report *rep, qn_err *err)
{
    return read_all(qml_ndjson_open_mem(data, len, o, err), out, rep, err);
}
