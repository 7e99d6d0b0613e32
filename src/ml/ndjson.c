/*
 * ndjson.c - the NDJSON reader (see ndjson.h).
 *
 * Lines come from a fixed 1 MiB window over the file (or straight from the
 * caller's buffer); a line that crosses the window is gathered in a line
 * buffer bounded by max_line_bytes. The first infer_rows lines are parsed by
 * jansson at open, kept as JSON, used for the schema and emitted first.
 *
 * After them, a line that is one flat object (string keys naming columns,
 * each once; values strings, numbers, true, false or null) is read straight
 * into the row by a small scanner, without building JSON values: that is
 * every row quern-ingest stores, and it is most of the time of a prep run.
 * Any other line (nested values, keys outside the schema, duplicates,
 * escapes it does not decode, a syntax error, invalid UTF-8, an integer
 * beyond 18 digits) is handed to jansson as before, so the scanner never
 * decides what a row is: a row it takes gets the same cells jansson's values
 * would give, and every row it declines gets jansson's verdict.
 */
#include "ml/ndjson.h"
#include "core/json.h"
#include "ml/colblock.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
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

/* One value of a line read by the scanner. */
typedef enum vkind { V_NULL, V_STR, V_NUM, V_TRUE, V_FALSE } vkind;
typedef struct slot {
    uint64_t row;               /* the scanner's row this value belongs to (0: none yet) */
    vkind kind;
    const char *s;              /* V_STR: the decoded text (in the line or sbuf) */
    size_t len;
    double num;                 /* V_NUM */
} slot;

/* Per column, the last string value the scanner pushed and the cell it made
 * (a code, or a parsed number or time): a source sorted by invoice repeats
 * its invoice, date, customer and country over consecutive rows, and a
 * repeat costs a memcmp instead of a dictionary probe or a parse. Reset for
 * each frame filled (dictionaries are per frame). */
#define CACHE_BYTES 48
typedef struct vcache {
    size_t len;                 /* SIZE_MAX: empty */
    char s[CACHE_BYTES];
    int32_t code;               /* CATEGORICAL */
    double num;                 /* the other types */
} vcache;

struct qml_ndjson_reader {
    int fd;
    qml_ndjson_chunk_fn fn;     /* or chunks from here */
    void *ud;
    char *win;
    const char *p, *end;
    int eof;
    char *path;
    uint64_t lines;
    size_t expect;              /* rows expected in all (a hint) */
    char *lbuf;                 /* a line that crossed the window */
    size_t llen, lcap, max_line;

    size_t ncols;
    char **names;
    qml_type *types;

    pend *pend;
    size_t npend, ipend;
    qml_read_report rep;

    slot *slots;                /* ncols, for the scanner */
    uint64_t srow;
    size_t *nlen;               /* ncols: strlen of each name */
    uint8_t *rawkey;            /* ncols: 1 when the name can be matched as raw bytes in a line */
    size_t *order;              /* the columns of the last row scanned, in its key order */
    size_t norder;
    vcache *cache;              /* ncols */
    char *sbuf;                 /* decoded strings of the current line */
    size_t scap;

    /* Column blocks (qml_ndjson_open_blocks): p..end is the rest of the
     * page, blk the block being read, brow its next row. */
    int blocks;
    int have_blk;
    int keys_mapped;            /* bcol and unknown are blk's (set once the schema is known) */
    qml_colblock blk;
    uint32_t brow;
    qn_buf rowtext;             /* a row rendered for the inference sample */
    struct vmap *vmap;          /* blk.ncols, for the frame filled vmap_fill */
    uint64_t fills, vmap_fill;  /* frames filled so far (codes belong to one) */
    int *bcol;                  /* ncols: the block column of each reader column, -1 none */
    uint32_t *unknown;          /* block columns outside the schema */
    uint32_t nunknown;
};

void qml_ndjson_opts_init(qml_ndjson_opts *o)
{
    memset(o, 0, sizeof *o);
    o->infer_rows = 1000;
    o->max_line_bytes = 1u << 20;
}

static void drop_block(qml_ndjson_reader *r);

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
    free(r->slots);
    free(r->nlen);
    free(r->rawkey);
    free(r->order);
    free(r->cache);
    free(r->sbuf);
    drop_block(r);
    qn_buf_free(&r->rowtext);
    free(r->bcol);
    free(r->unknown);
    free(r);
}

/* ---- lines --------------------------------------------------------------- */

static int refill(qml_ndjson_reader *r, qn_err *err)
{
    if (r->eof)
        return 0;
    if (r->fn) {
        const char *d = NULL;
        size_t n = 0;
        int k = r->fn(r->ud, &d, &n);
        if (k < 0)
            return qn_err_set(err, k, "%s: reading the source failed", r->path);
        if (k == 0) {
            r->eof = 1;
            return 0;
        }
        r->p = d ? d : "";
        r->end = r->p + (d ? n : 0);
        return 1;
    }
    if (!r->win)
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

static int next_block(qml_ndjson_reader *r, qn_err *err);

/* The next line (without its LF or CRLF): 1, 0 at the end, or < 0. From
 * column blocks, the next row rendered as its canonical text. */
static int next_line(qml_ndjson_reader *r, const char **s, size_t *len, int *too_long,
                     qn_err *err)
{
    int got = 0, k;
    if (r->blocks) {
        if ((k = next_block(r, err)) <= 0)
            return k;
        qn_buf_reset(&r->rowtext);
        if (qml_colblock_render(&r->blk, r->brow++, &r->rowtext) < 0)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory reading %s", r->path);
        *s = r->rowtext.data;
        *len = r->rowtext.len;
        *too_long = *len > r->max_line;
        r->lines++;
        return 1;
    }
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

/* The next line that is not blank (or is too long). 1, 0 at end, < 0. */
static int next_nonblank(qml_ndjson_reader *r, const char **s, size_t *len, int *too_long, qn_err *err)
{
    int k;
    do {
        if ((k = next_line(r, s, len, too_long, err)) <= 0)
            return k;
    } while (!*too_long && is_blank(*s, *len));
    return 1;
}

/* Parses a line with jansson into *pd. 1, or < 0 when out of memory. */
static int parse_line(qml_ndjson_reader *r, const char *s, size_t len, int too_long, pend *pd, qn_err *err)
{
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

/* Reads and parses the next non-blank line into *pd. 1, 0 at end, < 0. */
static int next_object(qml_ndjson_reader *r, pend *pd, qn_err *err)
{
    const char *s = NULL;
    size_t len = 0;
    int too_long, k;
    if ((k = next_nonblank(r, &s, &len, &too_long, err)) <= 0)
        return k;
    return parse_line(r, s, len, too_long, pd, err);
}

/* ---- cells --------------------------------------------------------------- */

static int find_col(const qml_ndjson_reader *r, const char *name)
{
    for (size_t i = 0; i < r->ncols; i++)
        if (strcmp(r->names[i], name) == 0)
            return (int)i;
    return -1;
}

/* Pushes one scalar into c: the cell a JSON value of that kind makes. 0,
 * QN_INVALID_ARGUMENT (msg filled) or QN_RESOURCE_EXHAUSTED. */
static int push_scalar(qml_column *c, vkind k, const char *s, size_t len, double x, char *msg, size_t cap)
{
    if (k == V_NULL || (k == V_STR && len == 0))
        return qml_col_push_missing(c);
    char tmp[40];
    if (k == V_STR)
        return qml_col_push_text(c, s, len, msg, cap);
    if (k == V_NUM) {
        if (c->type == QML_CATEGORICAL) {
            int n = qml_format_number(x, tmp, sizeof tmp);
            return qml_col_push_str(c, tmp, (size_t)n);
        }
        if (c->type == QML_BOOLEAN && x != 0 && x != 1)
            goto bad;
        return qml_col_push_num(c, x);
    }
    if (c->type == QML_CATEGORICAL)
        return k == V_TRUE ? qml_col_push_str(c, "true", 4) : qml_col_push_str(c, "false", 5);
    if (c->type != QML_BOOLEAN)
        goto bad;
    return qml_col_push_num(c, k == V_TRUE);
bad:
    snprintf(msg, cap, "column %s: a JSON %s does not fit a %s column", c->name, k == V_NUM ? "number" : "boolean",
             qml_type_name(c->type));
    return QN_INVALID_ARGUMENT;
}

/* Pushes one JSON value into c. 0, QN_INVALID_ARGUMENT (msg filled) or OOM. */
static int push_value(qml_column *c, json_t *v, char *msg, size_t cap)
{
    if (!v || json_is_null(v))
        return push_scalar(c, V_NULL, NULL, 0, 0, msg, cap);
    if (json_is_string(v))
        return push_scalar(c, V_STR, json_string_value(v), json_string_length(v), 0, msg, cap);
    if (json_is_number(v))
        return push_scalar(c, V_NUM, NULL, 0, json_number_value(v), msg, cap);
    if (json_is_boolean(v))
        return push_scalar(c, json_is_true(v) ? V_TRUE : V_FALSE, NULL, 0, 0, msg, cap);
    if (c->type == QML_CATEGORICAL) {
        char *text = qn_json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        if (!text)
            return QN_RESOURCE_EXHAUSTED;
        int rc = qml_col_push_str(c, text, strlen(text));
        free(text);
        return rc;
    }
    snprintf(msg, cap, "column %s: a JSON %s does not fit a %s column", c->name,
             json_is_object(v) ? "object" : "array", qml_type_name(c->type));
    return QN_INVALID_ARGUMENT;
}

/* Closes a row whose cells push() fills in column order, as emit() does:
 * a cell that does not fit makes the row bad. 0 or < 0 (out of memory). */
static int row_failed(qml_ndjson_reader *r, qml_frame *f, uint64_t line, int rc, const char *msg)
{
    qml_frame_abort_row(f);
    if (rc == QN_INVALID_ARGUMENT) {
        qml_read_report_bad(&r->rep, line, QML_BAD_TYPE, msg);
        return 0;
    }
    return QN_RESOURCE_EXHAUSTED;
}

/* ---- the scanner (see the top of the file) ---------------------------------- */

#define DECLINE 1

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }
static int is_dig(char c) { return c >= '0' && c <= '9'; }

static int hex4(const char *p, const char *e, uint32_t *out)
{
    if (e - p < 4)
        return -1;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static size_t utf8_put(char *d, uint32_t cp)
{
    if (cp < 0x80) {
        d[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (char)(0xc0 | (cp >> 6));
        d[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (char)(0xe0 | (cp >> 12));
        d[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        d[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    d[0] = (char)(0xf0 | (cp >> 18));
    d[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    d[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    d[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static inline uint64_t load64(const char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v); /* the first byte lowest, as special8's callers count */
#endif
    return v;
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* The high bit of each byte of v (little-endian, as read by load64) that is
 * '"', '\\', below 0x20 or above 0x7f. Exact for the lowest such byte: a
 * borrow only starts at a byte that matches, so a false mark can only sit
 * above a true one. */
static inline uint64_t special8(uint64_t v)
{
    uint64_t q = v ^ (ONES * '"'), b = v ^ (ONES * '\\');
    return (((q - ONES) & ~q) | ((b - ONES) & ~b) | ((v - ONES * 0x20) & ~v) | v) & HIGHS;
}

/* A string whose opening quote is at *pp. On success *pp is past its closing
 * quote and (*out, *len) its text: in the line when it has no escape, else
 * decoded into r->sbuf at *used (which the caller sized to the line, and a
 * decoded string is never longer than its escaped form). Declines control
 * characters, invalid UTF-8 (jansson's rules: RFC 3629), \u0000 and lone
 * surrogates, as jansson refuses them. */
static int scan_string(qml_ndjson_reader *r, const char **pp, const char *e, size_t *used, const char **out,
                       size_t *len)
{
    const char *p = *pp + 1, *start = p;
    int high = 0;
    /* Eight bytes at a time up to the first quote, backslash or control
     * byte; a byte >= 0x80 only marks the string for the UTF-8 check. */
    while (e - p >= 8) {
        uint64_t m = special8(load64(p));
        if (!m) {
            p += 8;
            continue;
        }
        p += __builtin_ctzll(m) >> 3;
        if ((unsigned char)*p < 0x80)
            break;
        high = 1;
        p++;
    }
    while (p < e && *p != '"' && *p != '\\') {
        unsigned char c = (unsigned char)*p++;
        if (c < 0x20)
            return DECLINE;
        high |= c >= 0x80;
    }
    if (p == e)
        return DECLINE;
    if (*p == '"') {
        if (high && !qml_utf8_valid(start, (size_t)(p - start)))
            return DECLINE;
        *out = start;
        *len = (size_t)(p - start);
        *pp = p + 1;
        return 0;
    }
    char *d0 = r->sbuf + *used, *d = d0;
    memcpy(d, start, (size_t)(p - start));
    d += p - start;
    while (p < e && *p != '"') {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20)
            return DECLINE;
        if (c != '\\') {
            high |= c >= 0x80;
            *d++ = *p++;
            continue;
        }
        if (++p == e)
            return DECLINE;
        switch (*p++) {
        case '"': *d++ = '"'; break;
        case '\\': *d++ = '\\'; break;
        case '/': *d++ = '/'; break;
        case 'b': *d++ = '\b'; break;
        case 'f': *d++ = '\f'; break;
        case 'n': *d++ = '\n'; break;
        case 'r': *d++ = '\r'; break;
        case 't': *d++ = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (hex4(p, e, &cp) < 0)
                return DECLINE;
            p += 4;
            if (cp == 0 || (cp >= 0xdc00 && cp <= 0xdfff))
                return DECLINE;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (e - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, e, &lo) < 0 || lo < 0xdc00 ||
                    lo > 0xdfff)
                    return DECLINE;
                p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            d += utf8_put(d, cp);
            break;
        }
        default:
            return DECLINE;
        }
    }
    if (p == e)
        return DECLINE;
    /* Escapes decode to ASCII or to whole sequences, never to a lone
     * continuation byte, so the decoded text is valid iff the raw runs are. */
    if (high && !qml_utf8_valid(d0, (size_t)(d - d0)))
        return DECLINE;
    *out = d0;
    *len = (size_t)(d - d0);
    *used += *len;
    *pp = p + 1;
    return 0;
}

/* A JSON number at *pp (RFC 8259 grammar). Integers of more than 18 digits
 * are declined (jansson refuses those beyond 64 bits); -0 as an integer is
 * 0, as jansson's integer is; a real goes through qml_parse_number, which
 * rounds as strtod does. */
static int scan_number(const char **pp, const char *e, double *out)
{
    const char *p = *pp, *digits;
    int real = 0;
    if (*p == '-')
        p++;
    digits = p;
    if (p == e)
        return DECLINE;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (p < e && is_dig(*p))
            p++;
    else
        return DECLINE;
    if (p < e && *p == '.') {
        real = 1;
        if (++p == e || !is_dig(*p))
            return DECLINE;
        while (p < e && is_dig(*p))
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        real = 1;
        if (++p < e && (*p == '+' || *p == '-'))
            p++;
        if (p == e || !is_dig(*p))
            return DECLINE;
        while (p < e && is_dig(*p))
            p++;
    }
    if (!real && p - digits > 18)
        return DECLINE;
    double v;
    if (qml_parse_number(*pp, (size_t)(p - *pp), &v) < 0)
        return DECLINE;
    *out = !real && v == 0 ? 0.0 : v;
    *pp = p;
    return 0;
}

static inline int skip_ws(const char **pp, const char *e)
{
    if (*pp < e && !is_ws(**pp))
        return 1;
    while (*pp < e && is_ws(**pp))
        (*pp)++;
    return *pp < e;
}

/* The column named (k, kn), trying hint first (rows keep their key order). */
static long scan_col(const qml_ndjson_reader *r, const char *k, size_t kn, size_t hint)
{
    for (size_t n = 0; n < r->ncols; n++) {
        size_t i = (hint + n) % r->ncols;
        if (strncmp(r->names[i], k, kn) == 0 && r->names[i][kn] == '\0')
            return (long)i;
    }
    return -1;
}

/* The scanner's per-column state, made at its first line: name lengths,
 * which names may be matched as raw bytes (valid UTF-8 with nothing JSON
 * would escape, so the raw bytes then a quote are that key and nothing
 * else), the key order and the value caches. 0 or QN_RESOURCE_EXHAUSTED. */
static int scanner_init(qml_ndjson_reader *r)
{
    if (r->slots)
        return 0;
    slot *slots = calloc(r->ncols, sizeof *slots);
    r->nlen = calloc(r->ncols, sizeof *r->nlen);
    r->rawkey = calloc(r->ncols, 1);
    r->order = calloc(r->ncols, sizeof *r->order);
    r->cache = calloc(r->ncols, sizeof *r->cache);
    if (!slots || !r->nlen || !r->rawkey || !r->order || !r->cache) {
        free(slots);
        free(r->nlen);
        free(r->rawkey);
        free(r->order);
        free(r->cache);
        r->nlen = NULL;
        r->rawkey = NULL;
        r->order = NULL;
        r->cache = NULL;
        return QN_RESOURCE_EXHAUSTED;
    }
    for (size_t i = 0; i < r->ncols; i++) {
        const char *n = r->names[i];
        size_t len = strlen(n), j = 0;
        while (j < len && (unsigned char)n[j] >= 0x20 && n[j] != '"' && n[j] != '\\')
            j++;
        r->nlen[i] = len;
        r->rawkey[i] = j == len && qml_utf8_valid(n, len);
        r->cache[i].len = SIZE_MAX;
    }
    r->slots = slots; /* last: the state is whole once slots is set */
    return 0;
}

static void cache_reset(qml_ndjson_reader *r)
{
    for (size_t i = 0; r->cache && i < r->ncols; i++)
        r->cache[i].len = SIZE_MAX;
}

/* Pushes a scanned value into column i, through the column's cache for a
 * string the previous rows ended with. The same result push_scalar gives. */
static int push_slot(qml_ndjson_reader *r, qml_column *c, size_t i, const slot *sl, char *msg, size_t cap)
{
    if (sl->kind != V_STR || sl->len == 0 || sl->len > CACHE_BYTES)
        return push_scalar(c, sl->kind, sl->s, sl->len, sl->num, msg, cap);
    vcache *vc = &r->cache[i];
    if (vc->len == sl->len && memcmp(vc->s, sl->s, sl->len) == 0)
        return c->type == QML_CATEGORICAL ? qml_col_push_code(c, vc->code) : qml_col_push_num(c, vc->num);
    int rc = push_scalar(c, V_STR, sl->s, sl->len, 0, msg, cap);
    if (rc == 0) {
        vc->len = sl->len;
        memcpy(vc->s, sl->s, sl->len);
        if (c->type == QML_CATEGORICAL)
            vc->code = c->cat[c->len - 1];
        else
            vc->num = c->num[c->len - 1];
    }
    return rc;
}

/* Reads one line into the next row when it is a flat object of known keys.
 * 0 when the row was emitted (or counted bad because a value does not fit
 * its column, as emit() would count it); DECLINE when the line is not one
 * the scanner takes (nothing was changed); < 0 when out of memory. Keys are
 * first tried as the raw bytes of the column the last row had at the same
 * place (rows keep their key order), then decoded and looked up. */
static int emit_fast(qml_ndjson_reader *r, qml_frame *f, const char *s, size_t len)
{
    const char *p = s, *e = s + len;
    size_t used = 0, hint = 0, k = 0;
    if (r->ncols == 0)
        return DECLINE;
    if (scanner_init(r) < 0)
        return QN_RESOURCE_EXHAUSTED;
    if (len > r->scap) {
        size_t cap = r->scap ? r->scap : 4096;
        while (cap < len)
            cap *= 2;
        char *b = realloc(r->sbuf, cap);
        if (!b)
            return QN_RESOURCE_EXHAUSTED;
        r->sbuf = b;
        r->scap = cap;
    }
    uint64_t row = ++r->srow;
    if (!skip_ws(&p, e) || *p++ != '{' || !skip_ws(&p, e))
        return DECLINE;
    if (*p == '}')
        p++;
    else
        for (;;) {
            long ci = -1;
            if (*p != '"')
                return DECLINE;
            if (k < r->norder) {
                size_t c = r->order[k], n = r->nlen[c];
                if (r->rawkey[c] && (size_t)(e - p) > n + 1 && p[n + 1] == '"' && memcmp(p + 1, r->names[c], n) == 0) {
                    ci = (long)c;
                    p += n + 2;
                }
            }
            if (ci < 0) {
                const char *kt;
                size_t kn;
                if (scan_string(r, &p, e, &used, &kt, &kn))
                    return DECLINE;
                if ((ci = scan_col(r, kt, kn, hint)) < 0) /* a key outside the schema */
                    return DECLINE;
            }
            slot *sl = &r->slots[ci];
            if (sl->row == row) /* a key twice */
                return DECLINE;
            sl->row = row;
            hint = (size_t)ci + 1;
            r->order[k++] = (size_t)ci; /* at most ncols: each column once */
            if (!skip_ws(&p, e) || *p++ != ':' || !skip_ws(&p, e))
                return DECLINE;
            switch (*p) {
            case '"':
                sl->kind = V_STR;
                if (scan_string(r, &p, e, &used, &sl->s, &sl->len))
                    return DECLINE;
                break;
            case 't':
                sl->kind = V_TRUE;
                if (e - p < 4 || memcmp(p, "true", 4) != 0)
                    return DECLINE;
                p += 4;
                break;
            case 'f':
                sl->kind = V_FALSE;
                if (e - p < 5 || memcmp(p, "false", 5) != 0)
                    return DECLINE;
                p += 5;
                break;
            case 'n':
                sl->kind = V_NULL;
                if (e - p < 4 || memcmp(p, "null", 4) != 0)
                    return DECLINE;
                p += 4;
                break;
            default:
                sl->kind = V_NUM;
                if (scan_number(&p, e, &sl->num))
                    return DECLINE;
            }
            if (!skip_ws(&p, e))
                return DECLINE;
            if (*p == '}') {
                p++;
                break;
            }
            if (*p++ != ',' || !skip_ws(&p, e))
                return DECLINE;
        }
    skip_ws(&p, e);
    if (p != e)
        return DECLINE;
    r->norder = k;

    char msg[QML_REPORT_MSG];
    for (size_t i = 0; i < r->ncols; i++) {
        const slot *sl = &r->slots[i];
        qml_column *c = qml_frame_col(f, i);
        int rc = sl->row == row ? push_slot(r, c, i, sl, msg, sizeof msg) : qml_col_push_missing(c);
        if (rc < 0)
            return row_failed(r, f, r->lines, rc, msg);
    }
    if (qml_frame_end_row(f) < 0)
        return QN_INTERNAL;
    r->rep.rows_read++;
    r->rep.rows_ok++;
    return 0;
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
        if (rc < 0)
            return row_failed(r, f, pd->line, rc, msg);
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

/* ---- column blocks --------------------------------------------------------- */

/* What each value of a block column makes in its frame column: worked out
 * the first time a row uses it (so dictionaries fill in row order, as
 * lines would fill them), through the same push a line's value takes. */
/* V_PENDING: a categorical value known to make a cell whose code is not
 * taken yet (codes are taken in row order, as lines take them). */
enum { V_UNSEEN, V_CELL_MISSING, V_CELL, V_PENDING, V_BAD };
typedef struct vmap {
    uint8_t *state;             /* nvalues: V_UNSEEN ... */
    double *num;                /* nvalues: the cell, for numeric-like columns */
    int32_t *code;              /* nvalues: the code, for a categorical column */
    char **msg;                 /* nvalues: why a V_BAD value does not fit (allocated) */
    uint8_t *json;              /* nvalues: 1 when V_BAD because it is not JSON */
    /* Indexed by cell (nvalues + 1, 0: no key), for emit_columns: */
    uint8_t *miss_of;
    int32_t *code_of;
    double *num_of;
} vmap;

static void vmap_free(qml_ndjson_reader *r)
{
    for (uint32_t j = 0; r->vmap && j < r->blk.ncols; j++) {
        vmap *m = &r->vmap[j];
        for (uint32_t v = 0; m->msg && v < r->blk.cols[j].nvalues; v++)
            free(m->msg[v]);
        free(m->state);
        free(m->num);
        free(m->code);
        free(m->msg);
        free(m->json);
        free(m->miss_of);
        free(m->code_of);
        free(m->num_of);
    }
    free(r->vmap);
    r->vmap = NULL;
}

static void drop_block(qml_ndjson_reader *r)
{
    vmap_free(r);
    qml_colblock_view_free(&r->blk);
    r->have_blk = 0;
    r->keys_mapped = 0;
    r->nunknown = 0;
}

/* Matches the block's keys to the reader's columns (bcol, unknown). 0, or
 * QN_INVALID_ARGUMENT for a key that is not a string or comes twice. */
static int map_keys(qml_ndjson_reader *r, qn_err *err)
{
    free(r->bcol);
    free(r->unknown);
    r->bcol = malloc((r->ncols ? r->ncols : 1) * sizeof *r->bcol);
    r->unknown = malloc((r->blk.ncols ? r->blk.ncols : 1) * sizeof *r->unknown);
    if (!r->bcol || !r->unknown)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory reading %s", r->path);
    for (size_t i = 0; i < r->ncols; i++)
        r->bcol[i] = -1;
    r->nunknown = 0;
    for (uint32_t j = 0; j < r->blk.ncols; j++) {
        const qml_colblock_col *c = &r->blk.cols[j];
        json_error_t je;
        json_t *k = json_loadb(c->key, c->keylen, JSON_DECODE_ANY, &je);
        if (!k && json_error_code(&je) == json_error_out_of_memory)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory reading %s", r->path);
        int i = json_is_string(k) ? find_col(r, json_string_value(k)) : -2;
        json_decref(k);
        if (i == -2 || (i >= 0 && r->bcol[i] >= 0))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: a column block with the key %.*s %s", r->path,
                              (int)(c->keylen < 64 ? c->keylen : 64), c->key, i == -2 ? "(not a string)" : "twice");
        if (i >= 0)
            r->bcol[i] = (int)j;
        else
            r->unknown[r->nunknown++] = j;
    }
    return 0;
}

/* Makes sure a block with a row left is at hand. 1, 0 at the end, < 0. A
 * page (a chunk of the source) must hold whole blocks. */
static int next_block(qml_ndjson_reader *r, qn_err *err)
{
    if (r->have_blk && r->brow < r->blk.nrows)
        return 1;
    drop_block(r);
    while (r->p == r->end) {
        int k = refill(r, err);
        if (k <= 0)
            return k;
    }
    size_t used;
    qn_err why;
    int rc = qml_colblock_view(r->p, (size_t)(r->end - r->p), &r->blk, &used, &why);
    if (rc < 0)
        return qn_err_set(err, rc, "%s: after row %llu: %s", r->path, (unsigned long long)r->lines, why.msg);
    r->p += used;
    r->have_blk = 1;
    r->brow = 0;
    return 1;
}

/* Works out value v of block column j for frame column c (at its next
 * cell, left empty again): a JSON text takes the path a line's value takes,
 * the scanner's for plain strings and numbers, jansson's for the rest. 0 or
 * QN_RESOURCE_EXHAUSTED. */
static int map_value(qml_column *c, const qml_colblock_col *bc, vmap *m, uint32_t v)
{
    size_t n;
    const char *t = qml_colblock_value(bc, v, &n), *e = t + n;
    char msg[QML_REPORT_MSG];
    int rc = DECLINE;
    double x;
    const char *q = t;
    if (t[0] == '"' && n >= 2 && t[n - 1] == '"' && !memchr(t, '\\', n) && qml_utf8_valid(t + 1, n - 2))
        rc = push_scalar(c, V_STR, t + 1, n - 2, 0, msg, sizeof msg);
    else if ((t[0] == '-' || is_dig(t[0])) && scan_number(&q, e, &x) == 0 && q == e)
        rc = push_scalar(c, V_NUM, NULL, 0, x, msg, sizeof msg);
    else if (n == 4 && !memcmp(t, "null", 4))
        rc = push_scalar(c, V_NULL, NULL, 0, 0, msg, sizeof msg);
    else if (n == 4 && !memcmp(t, "true", 4))
        rc = push_scalar(c, V_TRUE, NULL, 0, 0, msg, sizeof msg);
    else if (n == 5 && !memcmp(t, "false", 5))
        rc = push_scalar(c, V_FALSE, NULL, 0, 0, msg, sizeof msg);
    if (rc == DECLINE) {
        json_error_t je;
        json_t *j = json_loadb(t, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
        if (!j && json_error_code(&je) == json_error_out_of_memory)
            return QN_RESOURCE_EXHAUSTED;
        if (j)
            rc = push_value(c, j, msg, sizeof msg);
        else {
            m->json[v] = 1;
            snprintf(msg, sizeof msg, "column %s: not JSON: %s", c->name, je.text);
            rc = QN_INVALID_ARGUMENT;
        }
        json_decref(j);
    }
    if (rc == QN_INVALID_ARGUMENT) {
        if (!(m->msg[v] = strdup(msg)))
            return QN_RESOURCE_EXHAUSTED;
        m->state[v] = V_BAD;
        return 0;
    }
    if (rc < 0)
        return rc;
    m->state[v] = c->missing[c->len - 1] ? V_CELL_MISSING : V_CELL;
    if (c->type == QML_CATEGORICAL)
        m->code[v] = c->cat[c->len - 1];
    else
        m->num[v] = c->num[c->len - 1];
    qml_col_pop(c);
    return 0;
}

/* The value maps of the block for the frame being filled (a new frame has
 * new codes; it may sit at the address of the last one, so frames are told
 * apart by count). */
static int vmap_for(qml_ndjson_reader *r)
{
    if (r->vmap && r->vmap_fill == r->fills)
        return 0;
    vmap_free(r);
    if (!(r->vmap = calloc(r->blk.ncols ? r->blk.ncols : 1, sizeof *r->vmap)))
        return QN_RESOURCE_EXHAUSTED;
    r->vmap_fill = r->fills;
    for (uint32_t j = 0; j < r->blk.ncols; j++) {
        size_t nv = r->blk.cols[j].nvalues ? r->blk.cols[j].nvalues : 1;
        vmap *m = &r->vmap[j];
        m->state = calloc(nv, 1);
        m->num = malloc(nv * sizeof *m->num);
        m->code = malloc(nv * sizeof *m->code);
        m->msg = calloc(nv, sizeof *m->msg);
        m->json = calloc(nv, 1);
        m->miss_of = malloc(nv + 1);
        m->code_of = malloc((nv + 1) * sizeof *m->code_of);
        m->num_of = malloc((nv + 1) * sizeof *m->num_of);
        if (!m->state || !m->num || !m->code || !m->msg || !m->json || !m->miss_of || !m->code_of || !m->num_of)
            return QN_RESOURCE_EXHAUSTED;
    }
    return 0;
}

/* Sorts value v of block column j before any code is taken: a categorical
 * column's value is missing (null, ""), a cell (V_PENDING) or not JSON;
 * any other column's is worked out (map_value: no dictionary, nothing
 * kept). 0 or QN_RESOURCE_EXHAUSTED. */
static int classify(qml_column *c, const qml_colblock_col *bc, vmap *m, uint32_t v)
{
    if (c->type != QML_CATEGORICAL)
        return map_value(c, bc, m, v);
    size_t n;
    const char *t = qml_colblock_value(bc, v, &n);
    if ((n == 4 && !memcmp(t, "null", 4)) || (n == 2 && !memcmp(t, "\"\"", 2))) {
        m->state[v] = V_CELL_MISSING;
        return 0;
    }
    int plain = t[0] == '"' && n >= 2 && t[n - 1] == '"' && !memchr(t, '\\', n) && qml_utf8_valid(t + 1, n - 2);
    if (!plain) {
        /* Numbers, booleans, nested values and escaped strings: the JSON
         * must read (a bad one is worked out in full, for its message). */
        json_error_t je;
        json_t *j = json_loadb(t, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
        if (!j && json_error_code(&je) == json_error_out_of_memory)
            return QN_RESOURCE_EXHAUSTED;
        int ok = j && !json_is_null(j) && !(json_is_string(j) && json_string_length(j) == 0);
        json_decref(j);
        if (!ok)
            return map_value(c, bc, m, v);
    }
    m->state[v] = V_PENDING;
    return 0;
}

/* Rows [from, to) of the block with no value that makes a row bad, into f
 * column by column: a categorical column first takes the codes of its new
 * values in row order (as lines would), then every column is copied through
 * a table from cell to (value, missing). 0 or QN_RESOURCE_EXHAUSTED. */
static int emit_columns(qml_ndjson_reader *r, qml_frame *f, uint32_t from, uint32_t to)
{
    size_t n = to - from, base = qml_frame_nrows(f);
    for (size_t i = 0; i < r->ncols; i++) {
        qml_column *c = qml_frame_col(f, i);
        int j = r->bcol[i];
        if (j < 0) {
            for (size_t t = 0; t < n; t++)
                if (qml_col_push_missing(c) < 0)
                    goto oom;
            continue;
        }
        const qml_colblock_col *bc = &r->blk.cols[j];
        vmap *m = &r->vmap[j];
        if (c->type == QML_CATEGORICAL)
            for (uint32_t row = from; row < to; row++) {
                uint32_t k = qml_colblock_cell(bc, row);
                if (k && m->state[k - 1] == V_PENDING && map_value(c, bc, m, k - 1) < 0)
                    goto oom;
            }
        /* The table: cell k (0: no key) -> the cell it makes. */
        uint8_t *miss = m->miss_of;
        for (uint32_t v = 0; v < bc->nvalues; v++) {
            miss[v + 1] = m->state[v] != V_CELL;
            if (c->type == QML_CATEGORICAL)
                m->code_of[v + 1] = miss[v + 1] ? -1 : m->code[v];
            else
                m->num_of[v + 1] = miss[v + 1] ? 0 : m->num[v];
        }
        miss[0] = 1;
        size_t missing = 0;
        uint8_t *mout = c->missing + base;
#define COPY(W, GET)                                                                       \
    do {                                                                                   \
        const unsigned char *p = bc->cells + (size_t)from * (W);                           \
        if (c->type == QML_CATEGORICAL) {                                                  \
            int32_t *out = c->cat + base;                                                  \
            for (size_t t = 0; t < n; t++) {                                               \
                uint32_t k = GET;                                                          \
                out[t] = m->code_of[k];                                                    \
                missing += mout[t] = miss[k];                                              \
            }                                                                              \
        } else {                                                                           \
            double *out = c->num + base;                                                   \
            for (size_t t = 0; t < n; t++) {                                               \
                uint32_t k = GET;                                                          \
                out[t] = m->num_of[k];                                                     \
                missing += mout[t] = miss[k];                                              \
            }                                                                              \
        }                                                                                  \
    } while (0)
        if (bc->width == 1)
            COPY(1, p[t]);
        else if (bc->width == 2)
            COPY(2, (uint32_t)p[2 * t] | (uint32_t)p[2 * t + 1] << 8);
        else
            COPY(4, qml_colblock_u32(p + 4 * t));
#undef COPY
        c->len = base + n;
        c->n_missing += missing;
    }
    for (uint32_t u = 0; u < r->nunknown; u++)
        for (uint32_t row = from; row < to; row++)
            r->rep.unknown_keys += qml_colblock_cell(&r->blk.cols[r->unknown[u]], row) != 0;
    r->rep.rows_read += n;
    r->rep.rows_ok += n;
    r->lines += n;
    return qml_frame_end_rows(f, n);
oom:
    qml_frame_abort_row(f); /* every column back to the frame's rows */
    return QN_RESOURCE_EXHAUSTED;
}

/* Rows [from, to) of the block row by row and cell by cell in column order,
 * as emit() takes a line: the first value that does not fit makes the row
 * bad, and keys outside the schema are counted on good rows. */
static int emit_rows(qml_ndjson_reader *r, qml_frame *f, uint32_t from, uint32_t to)
{
    for (uint32_t row = from; row < to; row++) {
        uint64_t line = ++r->lines;
        int rc = 0;
        for (size_t i = 0; i < r->ncols && rc == 0; i++) {
            qml_column *c = qml_frame_col(f, i);
            int j = r->bcol[i];
            uint32_t k = j < 0 ? 0 : qml_colblock_cell(&r->blk.cols[j], row);
            if (!k) {
                rc = qml_col_push_missing(c);
                continue;
            }
            vmap *m = &r->vmap[j];
            if (m->state[k - 1] == V_PENDING && (rc = map_value(c, &r->blk.cols[j], m, k - 1)) < 0)
                break;
            switch (m->state[k - 1]) {
            case V_CELL_MISSING:
                rc = qml_col_push_missing(c);
                break;
            case V_CELL:
                rc = c->type == QML_CATEGORICAL ? qml_col_push_code(c, m->code[k - 1]) : qml_col_push_num(c, m->num[k - 1]);
                break;
            default:
                qml_frame_abort_row(f);
                qml_read_report_bad(&r->rep, line, m->json[k - 1] ? QML_BAD_JSON : QML_BAD_TYPE, m->msg[k - 1]);
                rc = DECLINE;
            }
        }
        if (rc == DECLINE)
            continue;
        if (rc < 0) {
            qml_frame_abort_row(f);
            return rc;
        }
        if (qml_frame_end_row(f) < 0)
            return QN_INTERNAL;
        for (uint32_t u = 0; u < r->nunknown; u++)
            r->rep.unknown_keys += qml_colblock_cell(&r->blk.cols[r->unknown[u]], row) != 0;
        r->rep.rows_read++;
        r->rep.rows_ok++;
    }
    return 0;
}

/* Up to want rows of the current block into f. First every value of the
 * block is sorted (classify: no code taken); when none makes a row bad, the
 * rows go in column by column, else row by row as lines would. Either way
 * the frame, its dictionaries and the report are what the rows' texts read
 * as lines give. 0 or QN_RESOURCE_EXHAUSTED. */
static int emit_block(qml_ndjson_reader *r, qml_frame *f, size_t want)
{
    uint32_t from = r->brow, to = r->blk.nrows;
    if ((size_t)(to - from) > want)
        to = from + (uint32_t)want;
    if (vmap_for(r) < 0 || qml_frame_reserve(f, to - from) < 0)
        return QN_RESOURCE_EXHAUSTED;
    /* Every value of the block once (sorting takes no code), then, only if
     * some value is bad, whether a row of the range uses one. */
    int bad = 0;
    for (size_t i = 0; i < r->ncols; i++) {
        int j = r->bcol[i];
        if (j < 0)
            continue;
        const qml_colblock_col *bc = &r->blk.cols[j];
        vmap *m = &r->vmap[j];
        int some = 0;
        for (uint32_t v = 0; v < bc->nvalues; v++) {
            if (m->state[v] == V_UNSEEN && classify(qml_frame_col(f, i), bc, m, v) < 0)
                return QN_RESOURCE_EXHAUSTED;
            some |= m->state[v] == V_BAD;
        }
        for (uint32_t row = from; some && !bad && row < to; row++) {
            uint32_t k = qml_colblock_cell(bc, row);
            bad = k && m->state[k - 1] == V_BAD;
        }
    }
    int rc = bad ? emit_rows(r, f, from, to) : emit_columns(r, f, from, to);
    if (rc == 0)
        r->brow = to;
    return rc;
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
    r->expect = o->expect_rows;
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

/* A reader of fn's chunks: lines, or column blocks when blocks is 1. */
static qml_ndjson_reader *open_stream(qml_ndjson_chunk_fn fn, void *ud, int blocks, const qml_ndjson_opts *o,
                                      qn_err *err)
{
    qml_ndjson_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(blocks ? "(column blocks)" : "(stream)"))) {
        free(r);
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    r->fd = -1;
    r->fn = fn;
    r->ud = ud;
    r->p = r->end = "";
    r->blocks = blocks;
    qn_buf_init(&r->rowtext, SIZE_MAX - 1);
    return open_common(r, o, err);
}

qml_ndjson_reader *qml_ndjson_open_fn(qml_ndjson_chunk_fn fn, void *ud, const qml_ndjson_opts *o, qn_err *err)
{
    return open_stream(fn, ud, 0, o, err);
}

qml_ndjson_reader *qml_ndjson_open_blocks(qml_ndjson_chunk_fn fn, void *ud, const qml_ndjson_opts *o,
                                          qn_err *err)
{
    return open_stream(fn, ud, 1, o, err);
}

/* ---- reading ------------------------------------------------------------- */

static int fill(qml_ndjson_reader *r, qml_frame *f, size_t max_rows, qn_err *err)
{
    cache_reset(r); /* a new frame: new dictionaries */
    r->fills++;
    /* Room for the rows still expected at once: growing by doubling copies
     * the columns and touches their pages twice. A failure here is not the
     * read's: the frame grows as it goes. */
    if (r->expect > r->rep.rows_read) {
        size_t left = r->expect - (size_t)r->rep.rows_read;
        (void)qml_frame_reserve(f, left < max_rows ? left : max_rows);
    }
    while (qml_frame_nrows(f) < max_rows) {
        int k;
        if (r->ipend < r->npend) {
            pend *pd = &r->pend[r->ipend++];
            k = emit(r, f, pd);
            json_decref(pd->obj);
            pd->obj = NULL;
        } else if (r->blocks) {
            if ((k = next_block(r, err)) <= 0)
                return k;
            if (!r->keys_mapped && (k = map_keys(r, err)) < 0)
                return k;
            r->keys_mapped = 1;
            k = emit_block(r, f, max_rows - qml_frame_nrows(f));
        } else {
            const char *s = NULL;
            size_t len = 0;
            int too_long;
            if ((k = next_nonblank(r, &s, &len, &too_long, err)) <= 0)
                return k;
            k = too_long ? DECLINE : emit_fast(r, f, s, len);
            if (k == DECLINE) {
                pend pd;
                if ((k = parse_line(r, s, len, too_long, &pd, err)) < 0)
                    return k;
                k = emit(r, f, &pd);
                json_decref(pd.obj);
            }
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

int qml_ndjson_read_all_fn(qml_ndjson_chunk_fn fn, void *ud, const qml_ndjson_opts *o, qml_frame **out,
                           qml_read_report *rep, qn_err *err)
{
    return read_all(qml_ndjson_open_fn(fn, ud, o, err), out, rep, err);
}

int qml_ndjson_read_all_mem(const void *data, size_t len, const qml_ndjson_opts *o,
                            qml_frame **out, qml_read_report *rep, qn_err *err)
{
    return read_all(qml_ndjson_open_mem(data, len, o, err), out, rep, err);
}

int qml_ndjson_read_all_blocks(qml_ndjson_chunk_fn fn, void *ud, const qml_ndjson_opts *o, qml_frame **out,
                               qml_read_report *rep, qn_err *err)
{
    return read_all(qml_ndjson_open_blocks(fn, ud, o, err), out, rep, err);
}
