/*
 * metrics.c - Prometheus registry and text-format 0.0.4 renderer (see metrics.h).
 *
 * Layout: a registry holds an array of families; a family holds its series in
 * a chained hash table keyed by the label values, plus a doubly linked list in
 * creation order so the output is stable between scrapes. Each family has its
 * own mutex, so hot-path updates to different families never contend; the
 * registry mutex is taken only to create families and to render.
 *
 * Lock order: registry mutex, then a family mutex. Updates take only a family
 * mutex; the dropped-series counter is bumped after that mutex is released.
 * on_render hooks run before any lock is held, so a hook may update gauges or
 * even create families.
 *
 * Output follows the text exposition format 0.0.4: "# HELP" (help escaped:
 * backslash and newline), "# TYPE", then one line per sample; label values
 * escape backslash, double quote and newline, and invalid UTF-8 is replaced by
 * U+FFFD (label values may come from users; Prometheus rejects bad UTF-8).
 * Floats print in the shortest form that reads back exactly, and as "+Inf",
 * "-Inf", "NaN", which is how Prometheus spells them.
 */
#include "core/metrics.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

enum mtype { M_COUNTER, M_GAUGE, M_HISTOGRAM };
static const char *const type_names[] = {"counter", "gauge", "histogram"};

typedef struct series {
    struct series *hnext;          /* hash chain */
    struct series *prev, *next;    /* creation order */
    uint64_t hash;
    char **values;                 /* nlabels copies */
    double value;                  /* counter, gauge */
    double sum;                    /* histogram */
    uint64_t count;
    uint64_t *counts;              /* histogram: nbuckets + 1, not cumulative */
} series;

struct qn_metric {
    qn_metrics *reg;
    enum mtype type;
    char *name, *help;
    size_t nlabels;
    char **labels;
    double *buckets;
    size_t nbuckets;
    pthread_mutex_t mu;
    series **table;
    size_t tsize;                  /* power of two */
    size_t nseries;
    series *head, *tail;
};

typedef struct hook {
    void (*fn)(qn_metrics *m, void *ud);
    void *ud;
} hook;

struct qn_metrics {
    pthread_mutex_t mu;
    qn_metric **fams;
    size_t nfams, capfams;
    char **cl_names, **cl_values;
    size_t ncl;
    hook *hooks;
    size_t nhooks;
    qn_metric *dropped;
};

static const double default_buckets[] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

/* ---- allocation helpers: metrics are created at start, so running out of
 * memory there is fatal to the caller's setup and treated as such (assert-free
 * NULL returns would only move the crash to the first update). */

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        abort();
    return p;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        abort();
    return p;
}

static int valid_name(const char *s, int colon_ok)
{
    if (!s || !*s)
        return 0;
    for (const char *p = s; *p; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 (colon_ok && c == ':') || (p > s && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

__attribute__((unused)) static int valid_label_name(const char *s)
{
    return valid_name(s, 0) && strncmp(s, "__", 2) != 0;
}

qn_metrics *qn_metrics_new(void)
{
    qn_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    pthread_mutex_init(&m->mu, NULL);
    static const char *const dl[] = {"metric", NULL};
    m->dropped = qn_metrics_counter(m, "quern_metrics_series_dropped_total",
                                    "Updates dropped because their metric had reached its "
                                    "series limit.", dl);
    return m;
}

static void series_free(series *s, size_t nlabels)
{
    for (size_t i = 0; i < nlabels; i++)
        free(s->values[i]);
    free(s->values);
    free(s->counts);
    free(s);
}

static void family_free(qn_metric *f)
{
    series *s = f->head;
    while (s) {
        series *next = s->next;
        series_free(s, f->nlabels);
        s = next;
    }
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    free(f->labels);
    free(f->table);
    free(f->buckets);
    free(f->name);
    free(f->help);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void qn_metrics_free(qn_metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nfams; i++)
        family_free(m->fams[i]);
    free(m->fams);
    for (size_t i = 0; i < m->ncl; i++) {
        free(m->cl_names[i]);
        free(m->cl_values[i]);
    }
    free(m->cl_names);
    free(m->cl_values);
    free(m->hooks);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void qn_metrics_const_labels(qn_metrics *m, const char *const *names, const char *const *values)
{
    size_t n = 0;
    while (names && names[n])
        n++;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->ncl; i++) {
        free(m->cl_names[i]);
        free(m->cl_values[i]);
    }
    free(m->cl_names);
    free(m->cl_values);
    m->cl_names = xcalloc(n, sizeof *m->cl_names);
    m->cl_values = xcalloc(n, sizeof *m->cl_values);
    for (size_t i = 0; i < n; i++) {
        assert(valid_label_name(names[i]) && values[i]);
        m->cl_names[i] = xstrdup(names[i]);
        m->cl_values[i] = xstrdup(values[i]);
    }
    m->ncl = n;
    pthread_mutex_unlock(&m->mu);
}

static series *find_or_create(qn_metric *f, const char *const *values, int *dropped);

static qn_metric *family_get(qn_metrics *m, enum mtype type, const char *name, const char *help,
                             const char *const *labels, const double *buckets, size_t nbuckets)
{
    assert(m && valid_name(name, 1));
    pthread_mutex_lock(&m->mu);
    qn_metric *f = NULL;
    for (size_t i = 0; i < m->nfams; i++) {
        if (strcmp(m->fams[i]->name, name) == 0) {
            f = m->fams[i];
            assert(f->type == type);
            goto out;
        }
    }
    f = xcalloc(1, sizeof *f);
    f->reg = m;
    f->type = type;
    f->name = xstrdup(name);
    f->help = xstrdup(help ? help : "");
    while (labels && labels[f->nlabels])
        f->nlabels++;
    f->labels = xcalloc(f->nlabels, sizeof *f->labels);
    for (size_t i = 0; i < f->nlabels; i++) {
        assert(valid_label_name(labels[i]));
        assert(type != M_HISTOGRAM || strcmp(labels[i], "le") != 0);
        f->labels[i] = xstrdup(labels[i]);
    }
    if (type == M_HISTOGRAM) {
        if (!buckets || nbuckets == 0) {
            buckets = default_buckets;
            nbuckets = sizeof default_buckets / sizeof default_buckets[0];
        }
        if (isinf(buckets[nbuckets - 1]) && buckets[nbuckets - 1] > 0)
            nbuckets--; /* +Inf is always there; do not print it twice */
        f->buckets = xcalloc(nbuckets, sizeof *f->buckets);
        for (size_t i = 0; i < nbuckets; i++) {
            assert(!isnan(buckets[i]) && (i == 0 || buckets[i] > buckets[i - 1]));
            f->buckets[i] = buckets[i];
        }
        f->nbuckets = nbuckets;
    }
    f->tsize = 16;
    f->table = xcalloc(f->tsize, sizeof *f->table);
    pthread_mutex_init(&f->mu, NULL);
    if (m->nfams == m->capfams) {
        size_t cap = m->capfams ? m->capfams * 2 : 16;
        qn_metric **fams = realloc(m->fams, cap * sizeof *fams);
        if (!fams)
            abort();
        m->fams = fams;
        m->capfams = cap;
    }
    m->fams[m->nfams++] = f;
    if (f->nlabels == 0) {
        /* An unlabelled metric exists from the start, so it renders as 0
         * rather than being absent until first touched. */
        int dropped = 0;
        find_or_create(f, NULL, &dropped);
    }
out:
    pthread_mutex_unlock(&m->mu);
    return f;
}

qn_metric *qn_metrics_counter(qn_metrics *m, const char *name, const char *help,
                              const char *const *labels)
{
    return family_get(m, M_COUNTER, name, help, labels, NULL, 0);
}

qn_metric *qn_metrics_gauge(qn_metrics *m, const char *name, const char *help,
                            const char *const *labels)
{
    return family_get(m, M_GAUGE, name, help, labels, NULL, 0);
}

qn_metric *qn_metrics_histogram(qn_metrics *m, const char *name, const char *help,
                                const char *const *labels, const double *buckets,
                                size_t nbuckets)
{
    return family_get(m, M_HISTOGRAM, name, help, labels, buckets, nbuckets);
}

/* FNV-1a over the values, each followed by a 0xff byte (never in UTF-8 text,
 * and harmless when it is) so ("ab","c") and ("a","bc") differ. */
static uint64_t hash_values(const qn_metric *f, const char *const *values)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < f->nlabels; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++)
            h = (h ^ *p) * 1099511628211ULL;
        h = (h ^ 0xff) * 1099511628211ULL;
    }
    return h;
}

static series *lookup(qn_metric *f, const char *const *values, uint64_t h)
{
    for (series *s = f->table[h & (f->tsize - 1)]; s; s = s->hnext) {
        if (s->hash != h)
            continue;
        size_t i = 0;
        while (i < f->nlabels && strcmp(s->values[i], values[i]) == 0)
            i++;
        if (i == f->nlabels)
            return s;
    }
    return NULL;
}

static void grow_table(qn_metric *f)
{
    size_t nsize = f->tsize * 2;
    series **t = calloc(nsize, sizeof *t);
    if (!t)
        return; /* longer chains, still correct */
    for (series *s = f->head; s; s = s->next) {
        size_t b = s->hash & (nsize - 1);
        s->hnext = t[b];
        t[b] = s;
    }
    free(f->table);
    f->table = t;
    f->tsize = nsize;
}

/* The series for values, created if new. Called with f->mu held. NULL when
 * the family is full (*dropped set) or memory ran out. */
static series *find_or_create(qn_metric *f, const char *const *values, int *dropped)
{
    assert(f->nlabels == 0 || values);
    uint64_t h = hash_values(f, values);
    series *s = lookup(f, values, h);
    if (s)
        return s;
    if (f->nseries >= QN_METRICS_MAX_SERIES) {
        *dropped = 1;
        return NULL;
    }
    s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->hash = h;
    s->values = calloc(f->nlabels ? f->nlabels : 1, sizeof *s->values);
    if (f->type == M_HISTOGRAM)
        s->counts = calloc(f->nbuckets + 1, sizeof *s->counts);
    int ok = s->values && (f->type != M_HISTOGRAM || s->counts);
    for (size_t i = 0; ok && i < f->nlabels; i++) {
        assert(values[i]);
        ok = (s->values[i] = strdup(values[i])) != NULL;
    }
    if (!ok) {
        if (s->values)
            for (size_t i = 0; i < f->nlabels; i++)
                free(s->values[i]);
        free(s->values);
        free(s->counts);
        free(s);
        return NULL;
    }
    size_t b = h & (f->tsize - 1);
    s->hnext = f->table[b];
    f->table[b] = s;
    s->prev = f->tail;
    if (f->tail)
        f->tail->next = s;
    else
        f->head = s;
    f->tail = s;
    if (++f->nseries > f->tsize)
        grow_table(f);
    return s;
}

static void note_dropped(qn_metric *f)
{
    qn_metric *d = f->reg->dropped;
    if (d && d != f) {
        const char *v[] = {f->name};
        qn_counter_add(d, v, 1);
    }
}

enum op { OP_ADD, OP_SET, OP_OBSERVE };

static void update(qn_metric *f, const char *const *values, enum op op, double v)
{
    int dropped = 0;
    pthread_mutex_lock(&f->mu);
    series *s = find_or_create(f, values, &dropped);
    if (s) {
        if (op == OP_ADD) {
            s->value += v;
        } else if (op == OP_SET) {
            s->value = v;
        } else {
            size_t i = 0;
            while (i < f->nbuckets && !(v <= f->buckets[i]))
                i++; /* NaN lands in +Inf only, like the Go client */
            s->counts[i]++;
            s->count++;
            s->sum += v;
        }
    }
    pthread_mutex_unlock(&f->mu);
    if (dropped)
        note_dropped(f);
}

void qn_counter_add(qn_metric *c, const char *const *values, double v)
{
    assert(c->type == M_COUNTER);
    /* A counter only goes up; a negative or NaN increment would corrupt
     * every rate() over it, so it is ignored. */
    if (!(v >= 0))
        return;
    update(c, values, OP_ADD, v);
}

void qn_gauge_set(qn_metric *g, const char *const *values, double v)
{
    assert(g->type == M_GAUGE);
    update(g, values, OP_SET, v);
}

void qn_gauge_add(qn_metric *g, const char *const *values, double v)
{
    assert(g->type == M_GAUGE);
    update(g, values, OP_ADD, v);
}

void qn_histogram_observe(qn_metric *h, const char *const *values, double v)
{
    assert(h->type == M_HISTOGRAM);
    update(h, values, OP_OBSERVE, v);
}

void qn_metric_remove(qn_metric *f, const char *const *values)
{
    assert(f->nlabels == 0 || values);
    pthread_mutex_lock(&f->mu);
    uint64_t h = hash_values(f, values);
    series *s = lookup(f, values, h);
    if (s) {
        series **pp = &f->table[h & (f->tsize - 1)];
        while (*pp != s)
            pp = &(*pp)->hnext;
        *pp = s->hnext;
        if (s->prev)
            s->prev->next = s->next;
        else
            f->head = s->next;
        if (s->next)
            s->next->prev = s->prev;
        else
            f->tail = s->prev;
        f->nseries--;
        series_free(s, f->nlabels);
    }
    pthread_mutex_unlock(&f->mu);
}

void qn_metrics_on_render(qn_metrics *m, void (*fn)(qn_metrics *m, void *ud), void *ud)
{
    pthread_mutex_lock(&m->mu);
    hook *h = realloc(m->hooks, (m->nhooks + 1) * sizeof *h);
    if (!h)
        abort();
    m->hooks = h;
    m->hooks[m->nhooks++] = (hook){fn, ud};
    pthread_mutex_unlock(&m->mu);
}

/* ---- rendering ---- */

/* Length of the valid UTF-8 sequence at p (1-4), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *p)
{
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned min;
    if ((c & 0xe0) == 0xc0) { n = 2; min = 0x80; c &= 0x1f; }
    else if ((c & 0xf0) == 0xe0) { n = 3; min = 0x800; c &= 0x0f; }
    else if ((c & 0xf8) == 0xf0) { n = 4; min = 0x10000; c &= 0x07; }
    else return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (p[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    return n;
}

/* Appends s escaped: always backslash and newline, double quote when quote. */
static int put_escaped(qn_buf *b, const char *s, int quote)
{
    const unsigned char *p = (const unsigned char *)s;
    int rc = 0;
    while (*p && rc == 0) {
        size_t run = 0;
        size_t n;
        while (p[run] && p[run] != '\\' && p[run] != '\n' && !(quote && p[run] == '"') &&
               (n = utf8_len(p + run)) > 0)
            run += n;
        if (run) {
            rc = qn_buf_append(b, p, run);
            p += run;
            continue;
        }
        if (*p == '\\')
            rc = qn_buf_append(b, "\\\\", 2);
        else if (*p == '\n')
            rc = qn_buf_append(b, "\\n", 2);
        else if (*p == '"')
            rc = qn_buf_append(b, "\\\"", 2);
        else
            rc = qn_buf_append(b, "\xef\xbf\xbd", 3); /* U+FFFD for a bad byte */
        p++;
    }
    return rc;
}

/* Shortest decimal form that parses back to the same double. */
static void fmt_double(double v, char out[32])
{
    if (isnan(v)) {
        strcpy(out, "NaN");
        return;
    }
    if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, 32, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

static int put_double(qn_buf *b, double v)
{
    char num[32];
    fmt_double(v, num);
    return qn_buf_puts(b, num);
}

/* One sample line: name[suffix]{const, labels, extra_name=extra_val} value */
static int put_sample(qn_buf *b, const qn_metrics *m, const qn_metric *f, const series *s,
                      const char *suffix, const char *extra_name, const char *extra_val,
                      double v)
{
    qn_buf_puts(b, f->name);
    if (suffix)
        qn_buf_puts(b, suffix);
    size_t nl = m->ncl + f->nlabels + (extra_name ? 1 : 0);
    if (nl) {
        const char *sep = "{";
        for (size_t i = 0; i < m->ncl; i++, sep = ",") {
            qn_buf_printf(b, "%s%s=\"", sep, m->cl_names[i]);
            put_escaped(b, m->cl_values[i], 1);
            qn_buf_puts(b, "\"");
        }
        for (size_t i = 0; i < f->nlabels; i++, sep = ",") {
            qn_buf_printf(b, "%s%s=\"", sep, f->labels[i]);
            put_escaped(b, s->values[i], 1);
            qn_buf_puts(b, "\"");
        }
        if (extra_name) {
            qn_buf_printf(b, "%s%s=\"", sep, extra_name);
            put_escaped(b, extra_val, 1);
            qn_buf_puts(b, "\"");
        }
        qn_buf_puts(b, "}");
    }
    qn_buf_puts(b, " ");
    put_double(b, v);
    qn_buf_puts(b, "\n");
    return qn_buf_error(b); /* appends are sticky: any failure above shows here */
}

static int render_family(qn_buf *b, const qn_metrics *m, qn_metric *f)
{
    qn_buf_printf(b, "# HELP %s ", f->name);
    put_escaped(b, f->help, 0);
    qn_buf_printf(b, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
    int rc = qn_buf_error(b);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&f->mu);
    for (series *s = f->head; s && rc == 0; s = s->next) {
        if (f->type != M_HISTOGRAM) {
            rc = put_sample(b, m, f, s, NULL, NULL, NULL, s->value);
            continue;
        }
        uint64_t cum = 0;
        for (size_t i = 0; i <= f->nbuckets && rc == 0; i++) {
            char le[32];
            if (i < f->nbuckets)
                fmt_double(f->buckets[i], le);
            else
                strcpy(le, "+Inf");
            cum += s->counts[i];
            rc = put_sample(b, m, f, s, "_bucket", "le", le, (double)cum);
        }
        if (rc == 0)
            rc = put_sample(b, m, f, s, "_sum", NULL, NULL, s->sum);
        if (rc == 0)
            rc = put_sample(b, m, f, s, "_count", NULL, NULL, (double)s->count);
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

int qn_metrics_render(qn_metrics *m, qn_buf *out)
{
    /* Hooks run unlocked (they update gauges, may create families). */
    pthread_mutex_lock(&m->mu);
    size_t nh = m->nhooks;
    hook *hooks = nh ? malloc(nh * sizeof *hooks) : NULL;
    if (hooks)
        memcpy(hooks, m->hooks, nh * sizeof *hooks);
    pthread_mutex_unlock(&m->mu);
    if (nh && !hooks)
        return QN_RESOURCE_EXHAUSTED;
    for (size_t i = 0; i < nh; i++)
        hooks[i].fn(m, hooks[i].ud);
    free(hooks);

    int rc = 0;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->nfams && rc == 0; i++)
        rc = render_family(out, m, m->fams[i]);
    pthread_mutex_unlock(&m->mu);
    return rc;
}
