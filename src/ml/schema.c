/*
 * schema.c - cell text <-> typed values, type inference and the read report
 * (see schema.h). Used by csv.c, ndjson.c and clean.c so that every path that
 * turns text into a value agrees on what a number or a timestamp is.
 *
 * Numbers take a fast exact path (Clinger's: a mantissa below 2^53 times or
 * divided by an exact power of ten is correctly rounded by one IEEE operation)
 * and fall back to strtod for the rest, so the result is always the correctly
 * rounded double, as strtod would give.
 */
#include "ml/schema.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const reason_names[] = {
#define QML__XX(e, s) s,
    QML_BAD_REASON_MAP(QML__XX)
#undef QML__XX
};

const char *qml_bad_reason_name(qml_bad_reason r)
{
    return (unsigned)r < QML_BAD__COUNT ? reason_names[r] : "unknown";
}

void qml_read_report_init(qml_read_report *r)
{
    memset(r, 0, sizeof *r);
}

void qml_read_report_bad(qml_read_report *r, uint64_t line, qml_bad_reason why, const char *msg)
{
    r->rows_read++;
    r->rows_bad++;
    if ((unsigned)why < QML_BAD__COUNT)
        r->by_reason[why]++;
    if (r->n_first_bad < QML_REPORT_KEEP) {
        qml_bad_row *b = &r->first_bad[r->n_first_bad++];
        b->line = line;
        b->reason = why;
        snprintf(b->msg, sizeof b->msg, "%s", msg ? msg : "");
    }
}

/* ---- numbers ------------------------------------------------------------- */

static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static int is_digit(char c) { return c >= '0' && c <= '9'; }

int qml_parse_number(const char *s, size_t len, double *out)
{
    size_t i = 0;
    int neg = 0;
    if (i < len && (s[i] == '+' || s[i] == '-'))
        neg = s[i++] == '-';
    uint64_t mant = 0;
    int ndig = 0, nint = 0, nfrac = 0, exp10 = 0;
    while (i < len && is_digit(s[i])) {
        if (mant < 100000000000000000ULL) {
            mant = mant * 10 + (uint64_t)(s[i] - '0');
            if (mant)
                ndig++;
        } else {
            ndig = 99; /* too many digits for the fast path */
            exp10++;
        }
        nint++;
        i++;
    }
    if (i < len && s[i] == '.') {
        i++;
        while (i < len && is_digit(s[i])) {
            if (mant < 100000000000000000ULL) {
                mant = mant * 10 + (uint64_t)(s[i] - '0');
                if (mant)
                    ndig++;
                exp10--;
            } else {
                ndig = 99;
            }
            nfrac++;
            i++;
        }
    }
    if (nint + nfrac == 0)
        return QN_INVALID_ARGUMENT;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        int eneg = 0, e = 0, edig = 0;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            eneg = s[i++] == '-';
        while (i < len && is_digit(s[i])) {
            if (e < 100000)
                e = e * 10 + (s[i] - '0');
            edig++;
            i++;
        }
        if (!edig)
            return QN_INVALID_ARGUMENT;
        exp10 += eneg ? -e : e;
    }
    if (i != len)
        return QN_INVALID_ARGUMENT;
    if (ndig <= 15 && mant < (1ULL << 53) && exp10 >= -22 && exp10 <= 22) {
        double v = (double)mant;
        v = exp10 < 0 ? v / pow10_exact[-exp10] : v * pow10_exact[exp10];
        *out = neg ? -v : v;
        return 0;
    }
    /* The slow, always-right path: strtod on a NUL-terminated copy. */
    char stack[128];
    char *tmp = len < sizeof stack ? stack : malloc(len + 1);
    if (!tmp)
        return QN_RESOURCE_EXHAUSTED;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    double v = strtod(tmp, NULL);
    if (tmp != stack)
        free(tmp);
    if (!isfinite(v))
        return QN_INVALID_ARGUMENT;
    *out = v;
    return 0;
}

int qml_format_number(double v, char *buf, size_t cap)
{
    if (v == floor(v) && fabs(v) < 1e15)
        return snprintf(buf, cap, "%.0f", v == 0 ? 0.0 : v);
    for (int prec = 15; prec <= 17; prec++) {
        int n = snprintf(buf, cap, "%.*g", prec, v);
        if (prec == 17 || strtod(buf, NULL) == v)
            return n;
    }
    return 0;
}

/* ---- booleans ------------------------------------------------------------ */

static int ieq(const char *s, size_t len, const char *word)
{
    size_t n = strlen(word);
    if (len != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != word[i])
            return 0;
    }
    return 1;
}

int qml_parse_bool(const char *s, size_t len, int allow_digits, double *out)
{
    if (ieq(s, len, "true") || ieq(s, len, "yes") || (allow_digits && len == 1 && s[0] == '1')) {
        *out = 1;
        return 0;
    }
    if (ieq(s, len, "false") || ieq(s, len, "no") || (allow_digits && len == 1 && s[0] == '0')) {
        *out = 0;
        return 0;
    }
    return QN_INVALID_ARGUMENT;
}

/* ---- timestamps ---------------------------------------------------------- */

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar, by
 * counting in 400-year eras (146097 days each) from 0000-03-01. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int digits(const char *s, size_t len, size_t at, int n, int *out)
{
    if (at + (size_t)n > len)
        return -1;
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!is_digit(s[at + (size_t)i]))
            return -1;
        v = v * 10 + (s[at + (size_t)i] - '0');
    }
    *out = v;
    return 0;
}

static int days_in_month(int y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return dm[m - 1];
}

int qml_parse_timestamp(const char *s, size_t len, double *out)
{
    int y, mo, d, h = 0, mi = 0, sec = 0;
    double frac = 0;
    if (len < 10 || digits(s, len, 0, 4, &y) < 0 || s[4] != '-' || digits(s, len, 5, 2, &mo) < 0 ||
        s[7] != '-' || digits(s, len, 8, 2, &d) < 0)
        return QN_INVALID_ARGUMENT;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
        return QN_INVALID_ARGUMENT;
    size_t i = 10;
    int offset_min = 0;
    if (i < len) {
        int iso = s[i] == 'T';
        if (s[i] != 'T' && s[i] != ' ')
            return QN_INVALID_ARGUMENT;
        i++;
        if (digits(s, len, i, 2, &h) < 0 || i + 2 >= len || s[i + 2] != ':' ||
            digits(s, len, i + 3, 2, &mi) < 0)
            return QN_INVALID_ARGUMENT;
        i += 5;
        if (i < len && s[i] == ':') {
            if (digits(s, len, i + 1, 2, &sec) < 0)
                return QN_INVALID_ARGUMENT;
            i += 3;
            if (i < len && s[i] == '.') {
                size_t j = ++i;
                double scale = 0.1;
                while (i < len && is_digit(s[i])) {
                    frac += (s[i] - '0') * scale;
                    scale /= 10;
                    i++;
                }
                if (i == j)
                    return QN_INVALID_ARGUMENT;
            }
        }
        if (h > 23 || mi > 59 || sec > 59)
            return QN_INVALID_ARGUMENT;
        /* Zones belong to the ISO form; a space-separated time has none. */
        if (i < len && iso) {
            if (s[i] == 'Z' && i + 1 == len) {
                i++;
            } else if (s[i] == '+' || s[i] == '-') {
                int sign = s[i] == '-' ? -1 : 1, oh, om;
                if (digits(s, len, i + 1, 2, &oh) < 0)
                    return QN_INVALID_ARGUMENT;
                size_t k = i + 3;
                if (k < len && s[k] == ':')
                    k++;
                if (digits(s, len, k, 2, &om) < 0 || oh > 23 || om > 59)
                    return QN_INVALID_ARGUMENT;
                i = k + 2;
                offset_min = sign * (oh * 60 + om);
            }
        }
        if (i != len)
            return QN_INVALID_ARGUMENT;
    }
    int64_t days = days_from_civil(y, mo, d);
    int64_t t = days * 86400 + h * 3600 + mi * 60 + sec - (int64_t)offset_min * 60;
    *out = (double)t + frac;
    return 0;
}

int qml_format_timestamp(double ts, char *buf, size_t cap)
{
    double whole = floor(ts);
    int64_t t = (int64_t)whole;
    int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
    int64_t rem = t - days * 86400;
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    int n = snprintf(buf, cap, "%04lld-%02d-%02d %02d:%02d:%02d", (long long)y, m, d,
                     (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60));
    double frac = ts - whole;
    if (frac > 0 && n > 0 && (size_t)n < cap) {
        char f[32];
        snprintf(f, sizeof f, "%.6f", frac);
        size_t fl = strlen(f);
        while (fl > 2 && f[fl - 1] == '0')
            f[--fl] = '\0';
        n += snprintf(buf + n, cap - (size_t)n, "%s", f + 1);
    }
    return n;
}

/* ---- cells --------------------------------------------------------------- */

/* Shows a cell in a message without letting a huge or binary cell flood it. */
static void quote_cell(char *dst, size_t cap, const char *s, size_t len)
{
    size_t j = 0;
    for (size_t i = 0; i < len && j + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[j++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
        if (i + 1 < len && j + 5 >= cap) {
            memcpy(dst + j, "...", 3);
            j += 3;
        }
    }
    dst[j] = '\0';
}

int qml_col_push_text(qml_column *c, const char *s, size_t len, char *msg, size_t msgcap)
{
    double v;
    int rc;
    const char *what;
    switch (c->type) {
    case QML_CATEGORICAL:
        return qml_col_push_str(c, s, len);
    case QML_NUMERIC:
        rc = qml_parse_number(s, len, &v);
        what = "is not a number";
        break;
    case QML_BOOLEAN:
        rc = qml_parse_bool(s, len, 1, &v);
        what = "is not a boolean (true/false/yes/no/1/0)";
        break;
    case QML_TIMESTAMP:
        rc = qml_parse_timestamp(s, len, &v);
        what = "is not a timestamp";
        break;
    default:
        return QN_INVALID_ARGUMENT;
    }
    if (rc == QN_RESOURCE_EXHAUSTED)
        return rc;
    if (rc < 0) {
        if (msg) {
            char shown[64];
            quote_cell(shown, sizeof shown, s, len);
            snprintf(msg, msgcap, "column %s: \"%s\" %s", c->name, shown, what);
        }
        return QN_INVALID_ARGUMENT;
    }
    return qml_col_push_num(c, v);
}

int qml_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (len - i < n + 1)
            return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n + 1;
    }
    return 1;
}

/* ---- inference ----------------------------------------------------------- */

void qml_infer_text(qml_infer *in, const char *s, size_t len)
{
    double v;
    in->seen++;
    if (!in->not_num && qml_parse_number(s, len, &v) < 0)
        in->not_num = 1;
    if (!in->not_bool && qml_parse_bool(s, len, 0, &v) < 0)
        in->not_bool = 1;
    if (!in->not_ts && qml_parse_timestamp(s, len, &v) < 0)
        in->not_ts = 1;
}

qml_type qml_infer_result(const qml_infer *in)
{
    if (!in->seen)
        return QML_CATEGORICAL;
    if (!in->not_num)
        return QML_NUMERIC;
    if (!in->not_bool)
        return QML_BOOLEAN;
    if (!in->not_ts)
        return QML_TIMESTAMP;
    return QML_CATEGORICAL;
}
