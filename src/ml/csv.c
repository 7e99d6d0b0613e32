/*
 * csv.c - the streaming CSV reader (see csv.h for the dialect and contract).
 *
 * Three layers:
 * - the window: a fixed 1 MiB buffer refilled from the file (or the caller's
 *   whole buffer), so input memory never grows with the file; bytes are
 *   checked as UTF-8 as they come in (a character cut by a read is judged
 *   when its end arrives), or decoded from Latin-1/Windows-1252 by iconv
 *   into the window (a memory buffer to decode is read through a window too);
 * - the record parser: a small state machine that copies one record's field
 *   bytes into one growable, bounded buffer (every field NUL-terminated, no
 *   per-cell allocation) and notes where each field starts;
 * - rows: each record is checked (field count) and its cells parsed
 *   into the chunk's columns; a record that fails anywhere is rolled back and
 *   counted in the report.
 * The first infer_rows records are parsed once at open, kept, used to infer
 * the types, and then emitted as the first rows.
 */
#include "ml/csv.h"

#include <errno.h>
#include <fcntl.h>
#include <iconv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/utf8.h"

#define WINDOW_BYTES (1u << 20)
#define SEP_MAX 8
#define RAW_BYTES (WINDOW_BYTES / 4)   /* a single-byte charset grows at most 3x */
#define SNIFF_BYTES (64u << 10)
#define SNIFF_LINES 20
#define NO_QUOTE 256

/* One parsed record: field bytes back to back, each followed by a NUL. */
typedef struct rec {
    char *buf;
    size_t len, cap;
    size_t *off, *flen;
    size_t nf, capf;
    uint64_t line;          /* physical line where the record starts */
    int first_quoted;       /* to tell a blank line from "" */
    int bad;
    qml_bad_reason reason;
    size_t bad_field;       /* 0-based field the fault is in */
    const char *why;        /* static text */
} rec;

struct qml_csv_reader {
    int fd;
    char *win;                       /* file window (NULL for memory input) */
    const char *p, *end;
    int eof;
    uint64_t lines;                  /* newlines consumed so far */
    char *path;                      /* for messages */
    const char *src, *src_end;       /* memory input read through the window */
    iconv_t cd;                      /* (iconv_t)-1: input is UTF-8 */
    char *raw;                       /* undecoded bytes (RAW_BYTES) */
    uint64_t in_off, in_lines;       /* input bytes / newlines checked so far */
    int u8_need;                     /* streaming UTF-8 check: continuation bytes due */
    uint8_t u8_lo, u8_hi;            /* range of the next continuation byte */
    uint64_t u8_start;               /* offset of the character being checked */

    char sep[SEP_MAX + 1];
    size_t seplen;
    int quote;                       /* quote byte, or NO_QUOTE */
    char quote_ch;
    int trim;
    int decimal_comma;
    int drop_extra;                  /* header had trailing empty names */
    char **na;
    size_t *nalen, nna;
    size_t max_field, max_record, max_fields;
    uint8_t special[256];            /* bytes that stop an unquoted run */

    size_t ncols;
    char **names;
    qml_type *types;

    rec cur;
    rec *pend;                       /* the inference sample, emitted first */
    size_t npend, ipend;

    qml_read_report rep;
};

/* ---- records ------------------------------------------------------------- */

static void rec_free(rec *rc)
{
    free(rc->buf);
    free(rc->off);
    free(rc->flen);
    memset(rc, 0, sizeof *rc);
}

static void rec_bad(rec *rc, qml_bad_reason reason, const char *why)
{
    if (rc->bad)
        return;
    rc->bad = 1;
    rc->reason = reason;
    rc->bad_field = rc->nf;
    rc->why = why;
}

static int rec_copy(rec *dst, const rec *src)
{
    memset(dst, 0, sizeof *dst);
    dst->buf = malloc(src->len ? src->len : 1);
    dst->off = malloc((src->nf ? src->nf : 1) * sizeof *dst->off);
    dst->flen = malloc((src->nf ? src->nf : 1) * sizeof *dst->flen);
    if (!dst->buf || !dst->off || !dst->flen) {
        rec_free(dst);
        return QN_RESOURCE_EXHAUSTED;
    }
    /* A bad record is only reported, never read: keep its reason, not its
     * fields (past a bound it counted fields it did not store). */
    size_t len = src->bad ? 0 : src->len, nf = src->bad ? 0 : src->nf;
    if (len)
        memcpy(dst->buf, src->buf, len);
    if (nf) {
        memcpy(dst->off, src->off, nf * sizeof *dst->off);
        memcpy(dst->flen, src->flen, nf * sizeof *dst->flen);
    }
    dst->len = dst->cap = len;
    dst->nf = dst->capf = nf;
    dst->line = src->line;
    dst->first_quoted = src->first_quoted;
    dst->bad = src->bad;
    dst->reason = src->reason;
    dst->bad_field = src->bad_field;
    dst->why = src->why;
    return 0;
}

/* Parser state for the record being read. */
typedef struct pstate {
    size_t fstart;   /* offset of the current field in rc->buf */
    int storing;     /* 0 once a bound is hit: keep scanning, stop copying */
} pstate;

static int buf_reserve(qml_csv_reader *r, rec *rc, size_t extra)
{
    size_t need = rc->len + extra;
    if (need <= rc->cap)
        return 0;
    size_t cap = rc->cap ? rc->cap : 4096;
    while (cap < need)
        cap *= 2;
    char *b = realloc(rc->buf, cap);
    if (!b)
        return QN_RESOURCE_EXHAUSTED;
    rc->buf = b;
    rc->cap = cap;
    return 0;
}

static int field_append(qml_csv_reader *r, rec *rc, pstate *ps, const char *s, size_t n)
{
    if (!ps->storing || n == 0)
        return 0;
    if (rc->len - ps->fstart + n > r->max_field || rc->len + n > r->max_record) {
        rec_bad(rc, QML_BAD_TOO_LONG, "longer than max_field_bytes or max_record_bytes");
        ps->storing = 0;
        return 0;
    }
    if (buf_reserve(r, rc, n + 1) < 0)
        return QN_RESOURCE_EXHAUSTED;
    memcpy(rc->buf + rc->len, s, n);
    rc->len += n;
    return 0;
}

static int field_begin(qml_csv_reader *r, rec *rc, pstate *ps)
{
    if (rc->nf >= r->max_fields) {
        rec_bad(rc, QML_BAD_FIELD_COUNT, "more fields than max_fields");
        ps->storing = 0;
    }
    ps->fstart = rc->len;
    return 0;
}

static int field_end(qml_csv_reader *r, rec *rc, pstate *ps, int quoted, int strip_cr)
{
    if (!ps->storing) {
        rc->nf++;
        return 0;
    }
    if (strip_cr && rc->len > ps->fstart && rc->buf[rc->len - 1] == '\r')
        rc->len--;
    if (r->trim && !quoted)
        while (rc->len > ps->fstart && (rc->buf[rc->len - 1] == ' ' || rc->buf[rc->len - 1] == '\t'))
            rc->len--;
    if (rc->nf == rc->capf) {
        size_t capf = rc->capf ? rc->capf * 2 : 32;
        size_t *o = realloc(rc->off, capf * sizeof *o);
        if (!o)
            return QN_RESOURCE_EXHAUSTED;
        rc->off = o;
        size_t *l = realloc(rc->flen, capf * sizeof *l);
        if (!l)
            return QN_RESOURCE_EXHAUSTED;
        rc->flen = l;
        rc->capf = capf;
    }
    if (buf_reserve(r, rc, 1) < 0)
        return QN_RESOURCE_EXHAUSTED;
    rc->off[rc->nf] = ps->fstart;
    rc->flen[rc->nf] = rc->len - ps->fstart;
    rc->buf[rc->len++] = '\0';
    rc->nf++;
    return 0;
}

/* ---- the window ---------------------------------------------------------- */

static int bad_input(qml_csv_reader *r, uint64_t off, const char *what, qn_err *err)
{
    uint64_t line = r->in_lines + 1;
    return qn_err_set(err, QN_INVALID_ARGUMENT,
                      "%s: %s at line %llu, byte offset %llu; the file is refused (give its "
                      "encoding: utf-8, latin-1 or windows-1252)",
                      r->path, what, (unsigned long long)line, (unsigned long long)off);
}

/* Counts newlines in s[0..n) into in_lines. */
static void count_lines(qml_csv_reader *r, const char *s, size_t n)
{
    const char *e = s + n;
    while ((s = memchr(s, '\n', (size_t)(e - s))) != NULL) {
        r->in_lines++;
        s++;
    }
}

/* Strict UTF-8 (RFC 3629), checked as bytes arrive, so a character cut by a
 * read is judged once its end is in. final: no more bytes follow. */
static int utf8_feed(qml_csv_reader *r, const char *s, size_t n, int final, qn_err *err)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = (uint8_t)s[i];
        if (r->u8_need) {
            if (c < r->u8_lo || c > r->u8_hi)
                goto bad;
            r->u8_lo = 0x80;
            r->u8_hi = 0xbf;
            r->u8_need--;
            r->in_off++;
            i++;
            continue;
        }
        if (c < 0x80) {
            /* ASCII run, 8 bytes at a time. */
            size_t j = i + 1;
            while (j + 8 <= n) {
                uint64_t w;
                memcpy(&w, s + j, 8);
                if (w & 0x8080808080808080ULL)
                    break;
                j += 8;
            }
            while (j < n && (uint8_t)s[j] < 0x80)
                j++;
            count_lines(r, s + i, j - i);
            r->in_off += j - i;
            i = j;
            continue;
        }
        r->u8_start = r->in_off;
        r->u8_lo = 0x80;
        r->u8_hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf)
            r->u8_need = 1;
        else if (c >= 0xe0 && c <= 0xef) {
            r->u8_need = 2;
            if (c == 0xe0)
                r->u8_lo = 0xa0;
            else if (c == 0xed)
                r->u8_hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            r->u8_need = 3;
            if (c == 0xf0)
                r->u8_lo = 0x90;
            else if (c == 0xf4)
                r->u8_hi = 0x8f;
        } else {
            goto bad;
        }
        i++;
        r->in_off++;
        continue;
    bad:
        return bad_input(r, r->u8_need ? r->u8_start : r->in_off, "invalid UTF-8", err);
    }
    if (final && r->u8_need)
        return bad_input(r, r->u8_start, "invalid UTF-8 (a character cut by the end of input)", err);
    return 0;
}

/* Reads up to cap undecoded bytes from the file or the memory source. */
static ssize_t read_src(qml_csv_reader *r, char *dst, size_t cap, qn_err *err)
{
    if (r->fd < 0) {
        size_t n = (size_t)(r->src_end - r->src);
        if (n > cap)
            n = cap;
        memcpy(dst, r->src, n);
        r->src += n;
        return (ssize_t)n;
    }
    for (;;) {
        ssize_t n = read(r->fd, dst, cap);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return qn_err_set(err, QN_INTERNAL, "%s: read failed: %s", r->path, strerror(errno));
        return n;
    }
}

/* Decodes n raw bytes (a single-byte charset) into dst; returns the bytes written. */
static int decode(qml_csv_reader *r, const char *in, size_t n, char *dst, size_t cap, size_t *out,
                  qn_err *err)
{
    char *ip = (char *)in, *op = dst;
    size_t il = n, ol = cap;
    if (iconv(r->cd, &ip, &il, &op, &ol) == (size_t)-1) {
        size_t done = (size_t)(ip - in);
        count_lines(r, in, done);
        if (errno == E2BIG)
            return qn_err_set(err, QN_INTERNAL, "%s: decoding overflowed the window", r->path);
        return bad_input(r, r->in_off + done, "a byte with no character in the given encoding", err);
    }
    count_lines(r, in, n);
    r->in_off += n;
    *out = (size_t)(op - dst);
    return 0;
}

/* Makes more bytes available, keeping the unread tail. Returns 1 when it got
 * some, 0 at the end of input, QN_INTERNAL on a read error, or
 * QN_INVALID_ARGUMENT when the input is not valid in its encoding. */
static int refill(qml_csv_reader *r, qn_err *err)
{
    if (!r->win || r->eof)
        return 0;
    size_t keep = (size_t)(r->end - r->p);
    memmove(r->win, r->p, keep);
    r->p = r->win;
    r->end = r->win + keep;
    size_t room = WINDOW_BYTES - keep;
    int decoding = r->cd != (iconv_t)-1;
    size_t want_raw = decoding ? (room / 3 < RAW_BYTES ? room / 3 : RAW_BYTES) : room;
    if (want_raw == 0)
        return qn_err_set(err, QN_INTERNAL, "%s: window full", r->path);
    ssize_t n = read_src(r, decoding ? r->raw : r->win + keep, want_raw, err);
    if (n < 0)
        return (int)n;
    if (n == 0) {
        r->eof = 1;
        if (!decoding && utf8_feed(r, "", 0, 1, err) < 0)
            return err->code;
        return 0;
    }
    if (decoding) {
        size_t got = 0;
        if (decode(r, r->raw, (size_t)n, r->win + keep, room, &got, err) < 0)
            return err->code;
        r->end += got;
    } else {
        if (utf8_feed(r, r->win + keep, (size_t)n, 0, err) < 0)
            return err->code;
        r->end += n;
    }
    return 1;
}

/* Ensures at least n bytes at r->p unless the input ends first. */
static int want(qml_csv_reader *r, size_t n, qn_err *err)
{
    while ((size_t)(r->end - r->p) < n) {
        int k = refill(r, err);
        if (k <= 0)
            return k;
    }
    return 1;
}

static int is_space(const qml_csv_reader *r, char c)
{
    return (c == ' ' || c == '\t') && c != r->sep[0];
}

/* Reads one record into rc. Returns 1, 0 at the end of input, or < 0. */
static int read_record(qml_csv_reader *r, rec *rc, qn_err *err)
{
    pstate ps = {0, 1};
    int k, quoted;
    rc->len = 0;
    rc->nf = 0;
    rc->bad = 0;
    rc->first_quoted = 0;
    rc->line = r->lines + 1;
    if ((k = want(r, 1, err)) <= 0)
        return k;

next_field:
    field_begin(r, rc, &ps);
    quoted = 0;
    if (r->trim) {
        for (;;) {
            if ((k = want(r, 1, err)) < 0)
                return k;
            if (k == 0 || !is_space(r, *r->p))
                break;
            r->p++;
        }
    }
    if ((k = want(r, 1, err)) < 0)
        return k;
    if (k > 0 && (uint8_t)*r->p == r->quote) {
        quoted = 1;
        if (rc->nf == 0)
            rc->first_quoted = 1;
        r->p++;
        goto in_quotes;
    }

unquoted:
    for (;;) {
        if (r->p == r->end) {
            if ((k = refill(r, err)) < 0)
                return k;
            if (k == 0) {
                if (field_end(r, rc, &ps, quoted, 1) < 0)
                    return QN_RESOURCE_EXHAUSTED;
                return 1;
            }
        }
        const char *q = r->p;
        while (q < r->end && !r->special[(uint8_t)*q])
            q++;
        if (field_append(r, rc, &ps, r->p, (size_t)(q - r->p)) < 0)
            return QN_RESOURCE_EXHAUSTED;
        r->p = q;
        if (q == r->end)
            continue;
        if (*q == '\n') {
            r->p++;
            r->lines++;
            if (field_end(r, rc, &ps, quoted, 1) < 0)
                return QN_RESOURCE_EXHAUSTED;
            return 1;
        }
        /* The separator's first byte: a separator only if the rest follows. */
        if ((k = want(r, r->seplen, err)) < 0)
            return k;
        if (k > 0 && memcmp(r->p, r->sep, r->seplen) == 0) {
            r->p += r->seplen;
            if (field_end(r, rc, &ps, quoted, 0) < 0)
                return QN_RESOURCE_EXHAUSTED;
            goto next_field;
        }
        if (field_append(r, rc, &ps, r->p, 1) < 0)
            return QN_RESOURCE_EXHAUSTED;
        r->p++;
    }

in_quotes:
    for (;;) {
        if (r->p == r->end) {
            if ((k = refill(r, err)) < 0)
                return k;
            if (k == 0) {
                rec_bad(rc, QML_BAD_QUOTE, "quoted field not closed before the end of input");
                if (field_end(r, rc, &ps, quoted, 0) < 0)
                    return QN_RESOURCE_EXHAUSTED;
                return 1;
            }
        }
        const char *q = r->p;
        while (q < r->end && (uint8_t)*q != r->quote) {
            if (*q == '\n')
                r->lines++;
            q++;
        }
        if (field_append(r, rc, &ps, r->p, (size_t)(q - r->p)) < 0)
            return QN_RESOURCE_EXHAUSTED;
        r->p = q;
        if (q == r->end)
            continue;
        if ((k = want(r, 2, err)) < 0)
            return k;
        if (k > 0 && (uint8_t)r->p[1] == r->quote) {
            if (field_append(r, rc, &ps, &r->quote_ch, 1) < 0)
                return QN_RESOURCE_EXHAUSTED;
            r->p += 2;
            continue;
        }
        r->p++;
        break;
    }

    /* After the closing quote: the separator or the end of the record. */
    if (r->trim) {
        for (;;) {
            if ((k = want(r, 1, err)) < 0)
                return k;
            if (k == 0 || !is_space(r, *r->p))
                break;
            r->p++;
        }
    }
    if ((k = want(r, r->seplen > 2 ? r->seplen : 2, err)) < 0)
        return k;
    if (r->p == r->end) {
        if (field_end(r, rc, &ps, quoted, 0) < 0)
            return QN_RESOURCE_EXHAUSTED;
        return 1;
    }
    if (*r->p == '\n' || (*r->p == '\r' && r->end - r->p >= 2 && r->p[1] == '\n')) {
        r->p += *r->p == '\r' ? 2 : 1;
        r->lines++;
        if (field_end(r, rc, &ps, quoted, 0) < 0)
            return QN_RESOURCE_EXHAUSTED;
        return 1;
    }
    if ((size_t)(r->end - r->p) >= r->seplen && memcmp(r->p, r->sep, r->seplen) == 0) {
        r->p += r->seplen;
        if (field_end(r, rc, &ps, quoted, 0) < 0)
            return QN_RESOURCE_EXHAUSTED;
        goto next_field;
    }
    rec_bad(rc, QML_BAD_QUOTE, "unexpected character after a closing quote");
    goto unquoted;
}

static int is_blank(const rec *rc)
{
    return !rc->bad && rc->nf == 1 && rc->flen[0] == 0 && !rc->first_quoted;
}

/* Reads the next record that is not a blank line. */
static int read_nonblank(qml_csv_reader *r, rec *rc, qn_err *err)
{
    int k;
    do
        k = read_record(r, rc, err);
    while (k > 0 && is_blank(rc));
    /* "a;b;;" headers: the empty trailing fields of each record go too. */
    if (k > 0 && r->drop_extra && !rc->bad && rc->nf > r->ncols) {
        size_t i = r->ncols;
        while (i < rc->nf && rc->flen[i] == 0)
            i++;
        if (i == rc->nf)
            rc->nf = r->ncols;
    }
    if (k == QN_RESOURCE_EXHAUSTED) /* read_record's buffers return the bare code */
        qn_err_set(err, k, "%s: out of memory near line %llu", r->path,
                   (unsigned long long)r->lines);
    return k;
}

static int skip_lines(qml_csv_reader *r, size_t n, qn_err *err)
{
    while (n > 0) {
        if (r->p == r->end) {
            int k = refill(r, err);
            if (k <= 0)
                return k;
        }
        const char *nl = memchr(r->p, '\n', (size_t)(r->end - r->p));
        if (!nl) {
            r->p = r->end;
            continue;
        }
        r->p = nl + 1;
        r->lines++;
        n--;
    }
    return 0;
}

/* ---- rows ---------------------------------------------------------------- */

static int is_na(const qml_csv_reader *r, const char *s, size_t len)
{
    if (len == 0)
        return 1;
    for (size_t i = 0; i < r->nna; i++)
        if (r->nalen[i] == len && memcmp(r->na[i], s, len) == 0)
            return 1;
    return 0;
}

int qml_csv_is_missing(const qml_csv_reader *r, const char *s, size_t len)
{
    return is_na(r, s, len);
}

const char *qml_csv_number_text(const qml_csv_reader *r, const char *s, size_t *len, char *buf,
                                size_t cap)
{
    if (!r->decimal_comma || *len >= cap)
        return s;
    const char *c = memchr(s, ',', *len);
    if (!c)
        return s;
    memcpy(buf, s, *len);
    buf[*len] = '\0';
    buf[c - s] = '.';
    return buf;
}

/* The checks every record passes before its cells are read: the parser's
 * own verdict, the field count and UTF-8. Returns 0 when the record is fine,
 * else 1 with *why and msg (naming the column) filled. */
static int check_record(const qml_csv_reader *r, const rec *rc, qml_bad_reason *why, char *msg,
                        size_t cap)
{
    if (rc->bad) {
        if (rc->bad_field < r->ncols)
            snprintf(msg, cap, "column %s: %s", r->names[rc->bad_field], rc->why);
        else
            snprintf(msg, cap, "field %zu: %s", rc->bad_field + 1, rc->why);
        *why = rc->reason;
        return 1;
    }
    if (rc->nf != r->ncols) {
        snprintf(msg, cap, "expected %zu fields, found %zu", r->ncols, rc->nf);
        *why = QML_BAD_FIELD_COUNT;
        return 1;
    }
    /* No UTF-8 check here: every byte was checked (or decoded) as it was
     * read, and records are cut only at ASCII bytes. */
    return 0;
}

/* Appends one record to f, or counts it as bad. Returns 0 or < 0 (OOM). */
static int emit(qml_csv_reader *r, qml_frame *f, const rec *rc)
{
    char msg[QML_REPORT_MSG];
    qml_bad_reason why;
    if (check_record(r, rc, &why, msg, sizeof msg)) {
        qml_read_report_bad(&r->rep, rc->line, why, msg);
        return 0;
    }
    for (size_t i = 0; i < r->ncols; i++) {
        qml_column *c = qml_frame_col(f, i);
        const char *s = rc->buf + rc->off[i];
        size_t len = rc->flen[i];
        int rcode;
        char num[64];
        if (is_na(r, s, len))
            rcode = qml_col_push_missing(c);
        else {
            if (r->types[i] == QML_NUMERIC)
                s = qml_csv_number_text(r, s, &len, num, sizeof num);
            rcode = qml_col_push_text(c, s, len, msg, sizeof msg);
        }
        if (rcode == QN_INVALID_ARGUMENT) {
            qml_frame_abort_row(f);
            qml_read_report_bad(&r->rep, rc->line, QML_BAD_TYPE, msg);
            return 0;
        }
        if (rcode < 0) {
            qml_frame_abort_row(f);
            return QN_RESOURCE_EXHAUSTED;
        }
    }
    if (qml_frame_end_row(f) < 0)
        return QN_INTERNAL;
    r->rep.rows_read++;
    r->rep.rows_ok++;
    return 0;
}

/* ---- opening ------------------------------------------------------------- */

void qml_csv_opts_init(qml_csv_opts *o)
{
    memset(o, 0, sizeof *o);
    o->sep = ",";
    o->quote = '"';
    o->has_header = 1;
    o->infer_rows = 1000;
    o->max_field_bytes = 1u << 20;
    o->max_record_bytes = 16u << 20;
    o->max_fields = 4096;
}

void qml_csv_close(qml_csv_reader *r)
{
    if (!r)
        return;
    if (r->fd >= 0)
        close(r->fd);
    free(r->win);
    free(r->raw);
    if (r->cd != (iconv_t)-1 && r->cd != NULL)
        iconv_close(r->cd);
    free(r->path);
    for (size_t i = 0; i < r->nna; i++)
        free(r->na[i]);
    free(r->na);
    free(r->nalen);
    for (size_t i = 0; i < r->ncols; i++)
        free(r->names ? r->names[i] : NULL);
    free(r->names);
    free(r->types);
    rec_free(&r->cur);
    for (size_t i = 0; i < r->npend; i++)
        rec_free(&r->pend[i]);
    free(r->pend);
    free(r);
}

/* Field counts of the first lines for one candidate separator: the count
 * when every record agrees, else 0. */
static size_t sniff_count(const char *p, const char *end, char sep, int quote, int at_eof)
{
    size_t want = 0, nf = 1, nrec = 0;
    int inq = 0, atstart = 1, empty = 1;
    for (; p < end && nrec < SNIFF_LINES; p++) {
        int c = (uint8_t)*p;
        if (c != '\r' && c != '\n')
            empty = 0;
        if (inq) {
            if (c == quote)
                inq = 0;
            continue;
        }
        if (c == quote && atstart) {
            inq = 1;
            continue;
        }
        atstart = 0;
        if (c == (uint8_t)sep) {
            nf++;
            atstart = 1;
        } else if (c == '\n') {
            if (!empty) { /* blank lines are not records */
                if (nrec && nf != want)
                    return 0;
                want = nf;
                nrec++;
            }
            nf = 1;
            atstart = 1;
            empty = 1;
        }
    }
    if (at_eof && p == end && !empty && nrec < SNIFF_LINES) { /* a last line without LF */
        if (nrec && nf != want)
            return 0;
        want = nf;
        nrec++;
    }
    return nrec ? want : 0;
}

/* Picks the separator of the first lines: of ',' ';' tab '|', the one with
 * the same field count (> 1) on every line, the most fields winning, ties
 * going to the earlier candidate; ',' when none fits. */
static int sniff(qml_csv_reader *r, qn_err *err)
{
    int k = want(r, SNIFF_BYTES, err);
    if (k < 0)
        return k;
    static const char cand[] = {',', ';', '\t', '|'};
    const char *end = r->end;
    if ((size_t)(end - r->p) > SNIFF_BYTES)
        end = r->p + SNIFF_BYTES;
    int at_eof = end == r->end && (r->eof || !r->win);
    char best = ',';
    size_t bestn = 1;
    for (size_t i = 0; i < sizeof cand; i++) {
        size_t n = sniff_count(r->p, end, cand[i], r->quote, at_eof);
        if (n > bestn) {
            best = cand[i];
            bestn = n;
        }
    }
    r->sep[0] = best;
    r->sep[1] = '\0';
    r->seplen = 1;
    r->special[(uint8_t)best] = 1;
    return 0;
}

static int set_encoding(qml_csv_reader *r, const char *enc, qn_err *err)
{
    r->cd = (iconv_t)-1;
    if (!enc || !strcasecmp(enc, "utf-8") || !strcasecmp(enc, "utf8"))
        return 0;
    const char *from = NULL;
    if (!strcasecmp(enc, "latin-1") || !strcasecmp(enc, "latin1") || !strcasecmp(enc, "iso-8859-1"))
        from = "ISO-8859-1";
    else if (!strcasecmp(enc, "windows-1252") || !strcasecmp(enc, "cp1252"))
        from = "WINDOWS-1252";
    else
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "encoding \"%.32s\" is not known; use utf-8, latin-1 or windows-1252", enc);
    r->cd = iconv_open("UTF-8", from);
    if (r->cd == (iconv_t)-1)
        return qn_err_set(err, QN_INTERNAL, "iconv cannot convert from %s: %s", from, strerror(errno));
    if (!(r->raw = malloc(RAW_BYTES)))
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    return 0;
}

static int set_opts(qml_csv_reader *r, const qml_csv_opts *o, qn_err *err)
{
    const char *sep = o->sep ? o->sep : ",";
    int auto_sep = strcmp(sep, "auto") == 0;
    r->quote = o->quote == 0 ? '"' : o->quote == QML_CSV_NO_QUOTE ? NO_QUOTE : o->quote;
    if (r->quote != NO_QUOTE && (r->quote < 1 || r->quote > 127 || r->quote == '\n' || r->quote == '\r'))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "quote must be one ASCII character other than a line break");
    r->quote_ch = (char)r->quote;
    r->seplen = strlen(sep);
    if (!auto_sep) {
        if (r->seplen == 0 || r->seplen > SEP_MAX || strpbrk(sep, "\r\n") || !qn_utf8_valid(sep, r->seplen) ||
            (r->quote != NO_QUOTE && strchr(sep, r->quote)))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "separator must be 1 to %d bytes of UTF-8 without the quote or line breaks", SEP_MAX);
        memcpy(r->sep, sep, r->seplen + 1);
        r->special[(uint8_t)sep[0]] = 1;
    }
    if (o->decimal_comma && !auto_sep && strchr(sep, ','))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "decimal_comma needs a separator other than ','");
    r->decimal_comma = o->decimal_comma;
    if (set_encoding(r, o->encoding, err) < 0)
        return err->code;
    r->trim = o->trim;
    r->max_field = o->max_field_bytes ? o->max_field_bytes : (1u << 20);
    r->max_record = o->max_record_bytes ? o->max_record_bytes : (16u << 20);
    r->max_fields = o->max_fields ? o->max_fields : 4096;
    r->special[(uint8_t)'\n'] = 1;
    if (o->n_na_values) {
        r->na = calloc(o->n_na_values, sizeof *r->na);
        r->nalen = calloc(o->n_na_values, sizeof *r->nalen);
        if (!r->na || !r->nalen)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        for (size_t i = 0; i < o->n_na_values; i++) {
            if (!o->na_values[i])
                return qn_err_set(err, QN_INVALID_ARGUMENT, "na_values[%zu] is NULL", i);
            if (!(r->na[i] = strdup(o->na_values[i])))
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            r->nalen[i] = strlen(r->na[i]);
            r->nna++;
        }
    }
    for (size_t i = 0; i < o->n_fields; i++) {
        if (!o->fields[i].name || !o->fields[i].name[0])
            return qn_err_set(err, QN_INVALID_ARGUMENT, "fields[%zu] has no name", i);
        if (o->fields[i].type != QML_INFER && (o->fields[i].type < 0 || o->fields[i].type > QML_TIMESTAMP))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "fields[%zu] (%s): unknown type %d", i,
                              o->fields[i].name, o->fields[i].type);
    }
    return 0;
}

static int alloc_schema(qml_csv_reader *r, size_t n, qn_err *err)
{
    r->names = calloc(n ? n : 1, sizeof *r->names);
    r->types = calloc(n ? n : 1, sizeof *r->types);
    if (!r->names || !r->types)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    r->ncols = n;
    return 0;
}

static int set_name(qml_csv_reader *r, size_t i, const char *s, size_t len, qn_err *err)
{
    char tmp[32];
    if (len == 0) {
        len = (size_t)snprintf(tmp, sizeof tmp, "column_%zu", i + 1);
        s = tmp;
    }
    if (!(r->names[i] = strndup(s, len)))
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t j = 0; j < i; j++)
        if (strcmp(r->names[j], r->names[i]) == 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: column %s appears twice", r->path,
                              r->names[i]);
    return 0;
}

static int find_name(const qml_csv_reader *r, const char *name)
{
    for (size_t i = 0; i < r->ncols; i++)
        if (strcmp(r->names[i], name) == 0)
            return (int)i;
    return -1;
}

static int resolve_schema(qml_csv_reader *r, const qml_csv_opts *o, qn_err *err)
{
    int k;
    if (o->has_header) {
        if ((k = read_nonblank(r, &r->cur, err)) < 0)
            return k;
        if (k == 0) /* empty input */
            return alloc_schema(r, 0, err);
        rec *h = &r->cur;
        if (h->bad)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: header (line %llu), field %zu: %s", r->path,
                              (unsigned long long)h->line, h->bad_field + 1, h->why);
        if (!qml_utf8_valid(h->buf, h->len))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: header is not valid UTF-8", r->path);
        size_t nf = h->nf;
        while (nf > 1 && h->flen[nf - 1] == 0)
            nf--;
        r->drop_extra = nf < h->nf;
        if ((k = alloc_schema(r, nf, err)) < 0)
            return k;
        for (size_t i = 0; i < nf; i++) {
            r->types[i] = (qml_type)QML_INFER;
            if ((k = set_name(r, i, h->buf + h->off[i], h->flen[i], err)) < 0)
                return k;
        }
        for (size_t i = 0; i < o->n_fields; i++) {
            int j = find_name(r, o->fields[i].name);
            if (j < 0)
                return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: schema column %s is not in the header",
                                  r->path, o->fields[i].name);
            r->types[j] = (qml_type)o->fields[i].type;
        }
    } else if (o->n_fields) {
        if ((k = alloc_schema(r, o->n_fields, err)) < 0)
            return k;
        for (size_t i = 0; i < o->n_fields; i++) {
            r->types[i] = (qml_type)o->fields[i].type;
            if ((k = set_name(r, i, o->fields[i].name, strlen(o->fields[i].name), err)) < 0)
                return k;
        }
    }

    int need_sample = !o->has_header && !o->n_fields;
    for (size_t i = 0; i < r->ncols; i++)
        need_sample |= (int)r->types[i] == QML_INFER;
    if (!need_sample)
        return 0;

    size_t want_rows = o->infer_rows ? o->infer_rows : 1;
    r->pend = calloc(want_rows, sizeof *r->pend);
    if (!r->pend)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    while (r->npend < want_rows) {
        if ((k = read_nonblank(r, &r->cur, err)) < 0)
            return k;
        if (k == 0)
            break;
        if (rec_copy(&r->pend[r->npend], &r->cur) < 0)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        r->npend++;
    }

    if (!o->has_header && !o->n_fields) {
        /* Column count from the first record that parsed. */
        size_t n = 0;
        for (size_t i = 0; i < r->npend && !n; i++)
            if (!r->pend[i].bad)
                n = r->pend[i].nf;
        if ((k = alloc_schema(r, n, err)) < 0)
            return k;
        for (size_t i = 0; i < n; i++) {
            r->types[i] = (qml_type)QML_INFER;
            if ((k = set_name(r, i, "", 0, err)) < 0)
                return k;
        }
    }

    for (size_t j = 0; j < r->ncols; j++) {
        if ((int)r->types[j] != QML_INFER)
            continue;
        qml_infer in = {0};
        for (size_t i = 0; i < r->npend; i++) {
            const rec *rc = &r->pend[i];
            if (rc->bad || rc->nf != r->ncols)
                continue;
            const char *s = rc->buf + rc->off[j];
            size_t len = rc->flen[j];
            char num[64];
            if (!is_na(r, s, len)) {
                s = qml_csv_number_text(r, s, &len, num, sizeof num);
                qml_infer_text(&in, s, len);
            }
        }
        r->types[j] = qml_infer_result(&in);
    }
    return 0;
}

/* Sets up the window over a memory source that needs decoding, checks
 * undecoded memory input as a whole, and drops a UTF-8 byte order mark. */
static int start_input(qml_csv_reader *r, qn_err *err)
{
    if (!r->win && r->cd != (iconv_t)-1) {
        /* Memory input to decode: read it through a window like a file. */
        r->src = r->p;
        r->src_end = r->end;
        if (!(r->win = malloc(WINDOW_BYTES)))
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        r->p = r->end = r->win;
        r->eof = 0;
    } else if (!r->win) {
        if (utf8_feed(r, r->p, (size_t)(r->end - r->p), 1, err) < 0)
            return err->code;
    }
    int k = want(r, 3, err);
    if (k < 0)
        return k;
    if (r->end - r->p >= 3 && memcmp(r->p, "\xef\xbb\xbf", 3) == 0)
        r->p += 3;
    return 0;
}

static qml_csv_reader *open_common(qml_csv_reader *r, const qml_csv_opts *o, qn_err *err)
{
    qml_csv_opts def;
    if (!o) {
        qml_csv_opts_init(&def);
        o = &def;
    }
    if (set_opts(r, o, err) < 0 || start_input(r, err) < 0 ||
        skip_lines(r, o->skip_lines, err) < 0 ||
        ((!o->sep || strcmp(o->sep, "auto") != 0) ? 0 : sniff(r, err)) < 0 ||
        (r->decimal_comma && r->sep[0] == ',' && r->seplen == 1 &&
         qn_err_set(err, QN_INVALID_ARGUMENT,
                    "%s: decimal_comma needs a separator other than ',' (the first lines use ',')",
                    r->path) < 0) ||
        resolve_schema(r, o, err) < 0) {
        qml_csv_close(r);
        return NULL;
    }
    return r;
}

qml_csv_reader *qml_csv_open(const char *path, const qml_csv_opts *o, qn_err *err)
{
    qml_csv_reader *r = calloc(1, sizeof *r);
    if (!r) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory opening %s", path);
        return NULL;
    }
    r->fd = -1;
    r->cd = (iconv_t)-1;
    r->path = strdup(path);
    r->win = malloc(WINDOW_BYTES);
    if (!r->path || !r->win) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory opening %s", path);
        qml_csv_close(r);
        return NULL;
    }
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        qn_err_set(err, errno == ENOENT ? QN_NOT_FOUND : QN_INTERNAL, "%s: cannot open: %s", path,
                   strerror(errno));
        qml_csv_close(r);
        return NULL;
    }
    r->p = r->end = r->win;
    return open_common(r, o, err);
}

qml_csv_reader *qml_csv_open_mem(const void *data, size_t len, const qml_csv_opts *o, qn_err *err)
{
    qml_csv_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup("(memory)"))) {
        free(r);
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    r->fd = -1;
    r->cd = (iconv_t)-1;
    r->p = data ? (const char *)data : "";
    r->end = r->p + (data ? len : 0);
    r->eof = 1;
    return open_common(r, o, err);
}

/* ---- reading ------------------------------------------------------------- */

static qml_frame *new_chunk(const qml_csv_reader *r, qn_err *err)
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

static int fill(qml_csv_reader *r, qml_frame *f, size_t max_rows, qn_err *err)
{
    int k;
    while (qml_frame_nrows(f) < max_rows) {
        if (r->ipend < r->npend) {
            rec *rc = &r->pend[r->ipend++];
            k = emit(r, f, rc);
            rec_free(rc);
            if (r->ipend == r->npend) {
                free(r->pend);
                r->pend = NULL;
                r->npend = r->ipend = 0;
            }
        } else {
            if ((k = read_nonblank(r, &r->cur, err)) < 0)
                return k;
            if (k == 0)
                return 0;
            k = emit(r, f, &r->cur);
        }
        if (k < 0)
            return qn_err_set(err, k, "%s: out of memory near line %llu", r->path,
                              (unsigned long long)r->lines);
    }
    return 0;
}

int qml_csv_next(qml_csv_reader *r, size_t max_rows, qml_frame **chunk, qn_err *err)
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

int qml_csv_next_record(qml_csv_reader *r, qml_csv_record *out, qn_err *err)
{
    const rec *rc;
    int k;
    /* A record taken from the inference sample is freed on the next call,
     * so the pointers handed out stay valid until then. */
    if (r->ipend > 0 && r->ipend <= r->npend)
        rec_free(&r->pend[r->ipend - 1]);
    if (r->ipend < r->npend) {
        rc = &r->pend[r->ipend++];
    } else {
        if (r->pend) {
            free(r->pend);
            r->pend = NULL;
            r->npend = r->ipend = 0;
        }
        if ((k = read_nonblank(r, &r->cur, err)) <= 0)
            return k;
        rc = &r->cur;
    }
    out->line = rc->line;
    out->nfields = rc->nf;
    out->buf = rc->buf;
    out->off = rc->off;
    out->flen = rc->flen;
    out->msg[0] = '\0';
    out->bad = check_record(r, rc, &out->reason, out->msg, sizeof out->msg);
    if (out->bad) {
        qml_read_report_bad(&r->rep, rc->line, out->reason, out->msg);
    } else {
        r->rep.rows_read++;
        r->rep.rows_ok++;
    }
    return 1;
}

const qml_read_report *qml_csv_report(const qml_csv_reader *r) { return &r->rep; }
const char *qml_csv_sep(const qml_csv_reader *r) { return r->sep; }
size_t qml_csv_ncols(const qml_csv_reader *r) { return r->ncols; }
const char *qml_csv_col_name(const qml_csv_reader *r, size_t i) { return i < r->ncols ? r->names[i] : NULL; }
qml_type qml_csv_col_type(const qml_csv_reader *r, size_t i) { return r->types[i]; }

static int read_all(qml_csv_reader *r, qml_frame **out, qml_read_report *rep, qn_err *err)
{
    *out = NULL;
    if (!r)
        return err ? err->code : QN_INTERNAL;
    qml_frame *f = new_chunk(r, err);
    int k = f ? fill(r, f, SIZE_MAX, err) : (err ? err->code : QN_RESOURCE_EXHAUSTED);
    if (rep)
        *rep = r->rep;
    qml_csv_close(r);
    if (k < 0) {
        qml_frame_free(f);
        return k;
    }
    *out = f;
    return 0;
}

int qml_csv_read_all(const char *path, const qml_csv_opts *o, qml_frame **out,
                     qml_read_report *rep, qn_err *err)
{
    return read_all(qml_csv_open(path, o, err), out, rep, err);
}

int qml_csv_read_all_mem(const void *data, size_t len, const qml_csv_opts *o, qml_frame **out,
                         qml_read_report *rep, qn_err *err)
{
    return read_all(qml_csv_open_mem(data, len, o, err), out, rep, err);
}
