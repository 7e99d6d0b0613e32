/*
 * profile.c - reference profiles: build, JSON round trip, drift (profile.h).
 *
 * The profile is the only memory of the training data that the monitor has,
 * so everything drift needs is here: the histogram (JS/PSI on numeric
 * columns share its edges), the reservoir (KS/Wasserstein), the population
 * std (to norm Wasserstein), the category counts (chi-square, z, JS, PSI).
 * The loader validates every invariant the drift code relies on, because a
 * bundle is outside input (tests/fuzz/fuzz_profile_json.c).
 */
#include "ml/profile.h"
#include "core/json.h"
#include "ml/fsort.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PROFILE_FORMAT "quern.profile/1"
#define MAX_RESERVOIR 10000000u
#define MAX_BINS 100000u
#define MAX_JSON_BYTES (1u << 30)

const double qml_profile_quantile_levels[QML_PROFILE_NQ] = {0.01, 0.05, 0.25, 0.5,
                                                            0.75, 0.95, 0.99};

void qml_profile_opts_default(qml_profile_opts *o)
{
    o->reservoir_size = 5000;
    o->seed = 42;
    o->max_categories = 256;
    o->nbins = 0;
}

static void column_clear(qml_profile_column *c)
{
    free(c->name);
    free(c->edges);
    free(c->hist);
    free(c->sample);
    free(c->sample_sorted);
    for (size_t i = 0; i < c->ncat; i++)
        free(c->cats[i]);
    free(c->cats);
    free(c->cat_counts);
}

void qml_profile_free(qml_profile *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->ncols; i++)
        column_clear(&p->cols[i]);
    free(p->cols);
    free(p);
}

/* ---- build ------------------------------------------------------------------ */

/* splitmix64 seeds xoshiro256**, the reservoir's generator. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

typedef struct rng { uint64_t s[4]; } rng;

static void rng_seed(rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s, res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

/* Uniform in [0, n), without modulo bias (Lemire). */
static uint64_t rng_below(rng *r, uint64_t n)
{
    unsigned __int128 m = (unsigned __int128)rng_next(r) * n;
    uint64_t l = (uint64_t)m;
    if (l < n) {
        uint64_t t = -n % n;
        while (l < t) {
            m = (unsigned __int128)rng_next(r) * n;
            l = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

/* The reservoir sorted once, for every window compared with this profile
 * (KS and Wasserstein then sort only the window). */
static int sort_sample(qml_profile_column *c, qn_err *err)
{
    size_t n = c->sample_len;
    c->sample_sorted = malloc((n ? n : 1) * sizeof *c->sample_sorted);
    if (!c->sample_sorted)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory", c->name);
    memcpy(c->sample_sorted, c->sample, n * sizeof *c->sample_sorted);
    if (qml_fsort(c->sample_sorted, n) < 0)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory", c->name);
    return 0;
}

static int build_numeric(const qml_column *col, size_t ci, const qml_profile_opts *o,
                         qml_profile_column *pc, qn_err *err)
{
    size_t n = col->len - col->n_missing;
    pc->count = n;
    pc->mean = pc->std = pc->min = pc->max = NAN;
    for (int q = 0; q < QML_PROFILE_NQ; q++)
        pc->quantiles[q] = NAN;
    if (n == 0)
        return 0;
    double *v = malloc(n * sizeof *v);
    if (!v)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory", col->name);
    size_t k = 0;
    for (size_t i = 0; i < col->len; i++)
        if (!col->missing[i])
            v[k++] = col->num[i];
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) {
            free(v);
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "column %s: value at row %zu is not finite", col->name, i);
        }

    /* Reservoir first, over the values in row order (Algorithm R). */
    size_t cap = o->reservoir_size < n ? o->reservoir_size : n;
    pc->sample = malloc((cap ? cap : 1) * sizeof *pc->sample);
    if (!pc->sample) {
        free(v);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory", col->name);
    }
    rng r;
    rng_seed(&r, o->seed ^ (0x9e3779b97f4a7c15ull * (ci + 1)));
    for (size_t i = 0; i < n; i++) {
        if (i < cap) {
            pc->sample[i] = v[i];
        } else {
            uint64_t j = rng_below(&r, (uint64_t)i + 1);
            if (j < cap)
                pc->sample[j] = v[i];
        }
    }
    pc->sample_len = cap;
    int rc = sort_sample(pc, err);
    if (rc < 0) {
        free(v);
        return rc;
    }

    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += v[i];
    pc->mean = s / (double)n;
    double ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += (v[i] - pc->mean) * (v[i] - pc->mean);
    pc->std = sqrt(ss / (double)n);

    if (qml_fsort(v, n) < 0) {
        free(v);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory", col->name);
    }
    pc->min = v[0];
    pc->max = v[n - 1];
    for (int q = 0; q < QML_PROFILE_NQ; q++) {
        double pos = qml_profile_quantile_levels[q] * (double)(n - 1);
        size_t lo = (size_t)floor(pos);
        double frac = pos - (double)lo;
        pc->quantiles[q] = lo + 1 < n ? v[lo] + (v[lo + 1] - v[lo]) * frac : v[lo];
    }

    size_t nb = o->nbins ? o->nbins : (size_t)ceil(log2((double)n)) + 1;
    double lo = pc->min, hi = pc->max;
    if (lo == hi) {  /* numpy widens a degenerate range the same way */
        lo -= 0.5;
        hi += 0.5;
    }
    pc->nbins = nb;
    pc->edges = malloc((nb + 1) * sizeof *pc->edges);
    pc->hist = calloc(nb, sizeof *pc->hist);
    double *cnt = malloc(nb * sizeof *cnt);
    if (!pc->edges || !pc->hist || !cnt) {
        free(cnt);
        free(v);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory", col->name);
    }
    for (size_t b = 0; b <= nb; b++)
        pc->edges[b] = b == nb ? hi : lo + (hi - lo) * (double)b / (double)nb;
    qml_histogram_clamped(v, n, pc->edges, nb, cnt);
    for (size_t b = 0; b < nb; b++)
        pc->hist[b] = (uint64_t)cnt[b];
    free(cnt);
    free(v);
    return 0;
}

typedef struct catcount {
    const char *name;
    uint64_t count;
} catcount;

static int cmp_catcount(const void *a, const void *b)
{
    const catcount *x = a, *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int build_categorical(const qml_column *col, const qml_profile_opts *o,
                             qml_profile_column *pc, qn_err *err)
{
    int rc = 0;
    int boolean = col->type == QML_BOOLEAN;
    size_t nd = boolean ? 2 : qml_dict_size(col->dict);
    catcount *cc = calloc(nd ? nd : 1, sizeof *cc);
    if (!cc)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory", col->name);
    for (size_t i = 0; i < nd; i++)
        cc[i].name = boolean ? (i ? "1" : "0") : qml_dict_str(col->dict, (int32_t)i);
    for (size_t i = 0; i < col->len; i++) {
        if (col->missing[i])
            continue;
        size_t code = boolean ? (col->num[i] != 0) : (size_t)col->cat[i];
        cc[code].count++;
        pc->count++;
    }
    qsort(cc, nd, sizeof *cc, cmp_catcount);
    size_t keep = 0;
    while (keep < nd && keep < o->max_categories && cc[keep].count > 0)
        keep++;
    pc->cats = calloc(keep ? keep : 1, sizeof *pc->cats);
    pc->cat_counts = calloc(keep ? keep : 1, sizeof *pc->cat_counts);
    if (!pc->cats || !pc->cat_counts) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory", col->name);
        goto out;
    }
    for (size_t i = 0; i < keep; i++) {
        pc->cats[i] = strdup(cc[i].name);
        if (!pc->cats[i]) {
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory", col->name);
            goto out;
        }
        pc->cat_counts[i] = cc[i].count;
        pc->ncat++;
    }
    for (size_t i = keep; i < nd; i++)
        pc->other += cc[i].count;
out:
    free(cc);
    return rc;
}

int qml_profile_build(const qml_frame *f, const qml_profile_opts *o, qml_profile **out,
                      qn_err *err)
{
    qml_profile_opts def;
    if (!o) {
        qml_profile_opts_default(&def);
        o = &def;
    }
    if (o->reservoir_size == 0 || o->reservoir_size > MAX_RESERVOIR)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "profile: reservoir_size must be in 1..%u",
                          MAX_RESERVOIR);
    if (o->max_categories == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "profile: max_categories must be >= 1");
    if (o->nbins > MAX_BINS)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "profile: nbins must be <= %u", MAX_BINS);
    int rc = 0;
    qml_profile *p = calloc(1, sizeof *p);
    size_t nc = qml_frame_ncols(f);
    if (!p || !(p->cols = calloc(nc ? nc : 1, sizeof *p->cols))) {
        free(p);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "profile: out of memory");
    }
    p->nrows = qml_frame_nrows(f);
    p->reservoir_size = o->reservoir_size;
    p->seed = o->seed;
    p->max_categories = o->max_categories;
    for (size_t i = 0; i < nc; i++) {
        const qml_column *col = qml_frame_col(f, i);
        qml_profile_column *pc = &p->cols[i];
        p->ncols++;
        pc->type = col->type;
        pc->missing = col->n_missing;
        pc->categorical = col->type == QML_CATEGORICAL || col->type == QML_BOOLEAN;
        if (!(pc->name = strdup(col->name))) {
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "profile: out of memory");
            goto out;
        }
        rc = pc->categorical ? build_categorical(col, o, pc, err)
                             : build_numeric(col, i, o, pc, err);
        if (rc < 0)
            goto out;
    }
out:
    if (rc < 0) {
        qml_profile_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* ---- JSON ------------------------------------------------------------------- */

static json_t *real_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *real_array(const double *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_real(v[i]))) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *int_array(const uint64_t *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_integer((json_int_t)v[i]))) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *column_json(const qml_profile_column *c)
{
    json_t *o = json_object();
    int bad = !o ||
              json_object_set_new(o, "name", json_string(c->name)) ||
              json_object_set_new(o, "type", json_string(qml_type_name(c->type))) ||
              json_object_set_new(o, "count", json_integer((json_int_t)c->count)) ||
              json_object_set_new(o, "missing", json_integer((json_int_t)c->missing));
    if (!bad && c->categorical) {
        json_t *names = json_array();
        for (size_t i = 0; names && i < c->ncat; i++)
            if (json_array_append_new(names, json_string(c->cats[i]))) {
                json_decref(names);
                names = NULL;
            }
        bad = !names || json_object_set_new(o, "categories", names) ||
              json_object_set_new(o, "counts", int_array(c->cat_counts, c->ncat)) ||
              json_object_set_new(o, "other", json_integer((json_int_t)c->other));
    } else if (!bad) {
        json_t *q = json_array();
        for (int i = 0; q && i < QML_PROFILE_NQ; i++)
            if (json_array_append_new(q, real_or_null(c->quantiles[i]))) {
                json_decref(q);
                q = NULL;
            }
        bad = !q || json_object_set_new(o, "mean", real_or_null(c->mean)) ||
              json_object_set_new(o, "std", real_or_null(c->std)) ||
              json_object_set_new(o, "min", real_or_null(c->min)) ||
              json_object_set_new(o, "max", real_or_null(c->max));
        if (bad) /* q was not handed over yet */
            json_decref(q);
        bad = bad || json_object_set_new(o, "quantiles", q) ||
              json_object_set_new(o, "edges", real_array(c->edges, c->nbins ? c->nbins + 1 : 0)) ||
              json_object_set_new(o, "hist", int_array(c->hist, c->nbins)) ||
              json_object_set_new(o, "sample", real_array(c->sample, c->sample_len));
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

char *qml_profile_to_json(const qml_profile *p, qn_err *err)
{
    char *s = NULL;
    json_t *root = json_object(), *cols = json_array();
    if (!root || !cols ||
        json_object_set_new(root, "format", json_string(PROFILE_FORMAT)) ||
        json_object_set_new(root, "nrows", json_integer((json_int_t)p->nrows)) ||
        json_object_set_new(root, "reservoir_size", json_integer((json_int_t)p->reservoir_size)) ||
        json_object_set_new(root, "seed", json_integer((json_int_t)p->seed)) ||
        json_object_set_new(root, "max_categories", json_integer((json_int_t)p->max_categories)))
        goto out;
    for (size_t i = 0; i < p->ncols; i++)
        if (json_array_append_new(cols, column_json(&p->cols[i])))
            goto out;
    if (json_object_set(root, "columns", cols))
        goto out;
    s = qn_json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(17));
out:
    json_decref(cols);
    json_decref(root);
    if (!s)
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "profile: out of memory writing JSON");
    return s;
}

/* Field readers: each returns 0 or fills err naming the field. */
static int get_u64(json_t *o, const char *key, const char *ctx, uint64_t *v, qn_err *err)
{
    json_t *x = json_object_get(o, key);
    if (!json_is_integer(x) || json_integer_value(x) < 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "profile %s: \"%s\" must be an integer >= 0",
                          ctx, key);
    *v = (uint64_t)json_integer_value(x);
    return 0;
}

static int get_real(json_t *x, const char *key, const char *ctx, int allow_null, double *v,
                    qn_err *err)
{
    if (allow_null && json_is_null(x)) {
        *v = NAN;
        return 0;
    }
    if (!json_is_number(x) || !isfinite(json_number_value(x)))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "profile %s: \"%s\" must be a finite number",
                          ctx, key);
    *v = json_number_value(x);
    return 0;
}

static int get_array(json_t *o, const char *key, const char *ctx, json_t **a, qn_err *err)
{
    *a = json_object_get(o, key);
    if (!json_is_array(*a))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "profile %s: \"%s\" must be an array",
                          ctx, key);
    return 0;
}

static int load_numeric(json_t *o, const qml_profile *p, qml_profile_column *c, qn_err *err)
{
    const char *ctx = c->name;
    int rc, empty = c->count == 0;
    json_t *q, *edges, *hist, *sample;
    if ((rc = get_real(json_object_get(o, "mean"), "mean", ctx, empty, &c->mean, err)) < 0 ||
        (rc = get_real(json_object_get(o, "std"), "std", ctx, empty, &c->std, err)) < 0 ||
        (rc = get_real(json_object_get(o, "min"), "min", ctx, empty, &c->min, err)) < 0 ||
        (rc = get_real(json_object_get(o, "max"), "max", ctx, empty, &c->max, err)) < 0 ||
        (rc = get_array(o, "quantiles", ctx, &q, err)) < 0 ||
        (rc = get_array(o, "edges", ctx, &edges, err)) < 0 ||
        (rc = get_array(o, "hist", ctx, &hist, err)) < 0 ||
        (rc = get_array(o, "sample", ctx, &sample, err)) < 0)
        return rc;
    if (!empty && (c->std < 0 || c->min > c->max || c->mean < c->min || c->mean > c->max))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "profile %s: inconsistent mean/std/min/max",
                          ctx);
    if (json_array_size(q) != QML_PROFILE_NQ)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "profile %s: \"quantiles\" must have %d values",
                          ctx, QML_PROFILE_NQ);
    for (int i = 0; i < QML_PROFILE_NQ; i++)
        if ((rc = get_real(json_array_get(q, (size_t)i), "quantiles", ctx, empty,
                           &c->quantiles[i], err)) < 0)
            return rc;
    size_t ne = json_array_size(edges), nb = json_array_size(hist);
    if (empty ? (ne != 0 || nb != 0) : (nb == 0 || nb > MAX_BINS || ne != nb + 1))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "profile %s: \"edges\" must have one more value than \"hist\" (1..%u bins)",
                          ctx, MAX_BINS);
    c->nbins = nb;
    c->edges = malloc((ne ? ne : 1) * sizeof *c->edges);
    c->hist = malloc((nb ? nb : 1) * sizeof *c->hist);
    size_t ns = json_array_size(sample);
    c->sample = malloc((ns ? ns : 1) * sizeof *c->sample);
    if (!c->edges || !c->hist || !c->sample)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "profile %s: out of memory", ctx);
    for (size_t i = 0; i < ne; i++) {
        if ((rc = get_real(json_array_get(edges, i), "edges", ctx, 0, &c->edges[i], err)) < 0)
            return rc;
        if (i > 0 && !(c->edges[i] > c->edges[i - 1]))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "profile %s: \"edges\" must be strictly ascending", ctx);
    }
    uint64_t total = 0;
    for (size_t i = 0; i < nb; i++) {
        json_t *x = json_array_get(hist, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "profile %s: \"hist\" must hold integers >= 0", ctx);
        c->hist[i] = (uint64_t)json_integer_value(x);
        if (c->hist[i] > c->count || total + c->hist[i] > c->count)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "profile %s: \"hist\" counts exceed \"count\"", ctx);
        total += c->hist[i];
    }
    if (total != c->count)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "profile %s: \"hist\" counts must add up to \"count\"", ctx);
    if (ns > p->reservoir_size || ns > c->count || (!empty && ns == 0))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "profile %s: \"sample\" size must be in 1..min(count, reservoir_size)",
                          ctx);
    for (size_t i = 0; i < ns; i++)
        if ((rc = get_real(json_array_get(sample, i), "sample", ctx, 0, &c->sample[i], err)) < 0)
            return rc;
    c->sample_len = ns;
    return sort_sample(c, err);
}

static int load_categorical(json_t *o, const qml_profile *p, qml_profile_column *c, qn_err *err)
{
    const char *ctx = c->name;
    int rc;
    json_t *names, *counts;
    if ((rc = get_array(o, "categories", ctx, &names, err)) < 0 ||
        (rc = get_array(o, "counts", ctx, &counts, err)) < 0 ||
        (rc = get_u64(o, "other", ctx, &c->other, err)) < 0)
        return rc;
    size_t k = json_array_size(names);
    if (json_array_size(counts) != k || k > p->max_categories)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "profile %s: \"categories\" and \"counts\" must have the same length "
                          "<= max_categories", ctx);
    c->cats = calloc(k ? k : 1, sizeof *c->cats);
    c->cat_counts = calloc(k ? k : 1, sizeof *c->cat_counts);
    if (!c->cats || !c->cat_counts)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "profile %s: out of memory", ctx);
    uint64_t total = c->other;
    if (total > c->count)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "profile %s: counts exceed \"count\"", ctx);
    for (size_t i = 0; i < k; i++) {
        json_t *s = json_array_get(names, i), *x = json_array_get(counts, i);
        if (!json_is_string(s) || !json_is_integer(x) || json_integer_value(x) < 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "profile %s: category %zu must be a string with an integer count",
                              ctx, i);
        const char *str = json_string_value(s);
        if (strlen(str) != json_string_length(s))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "profile %s: category %zu contains a NUL byte", ctx, i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->cats[j], str) == 0)
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "profile %s: category \"%s\" appears twice", ctx, str);
        if (!(c->cats[i] = strdup(str)))
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "profile %s: out of memory", ctx);
        c->ncat++;
        uint64_t v = (uint64_t)json_integer_value(x);
        if (v > c->count || total + v > c->count)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "profile %s: counts exceed \"count\"",
                              ctx);
        c->cat_counts[i] = v;
        total += v;
    }
    if (total != c->count)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "profile %s: category counts must add up to \"count\"", ctx);
    return 0;
}

int qml_profile_from_json(const char *json, size_t len, qml_profile **out, qn_err *err)
{
    if (len > MAX_JSON_BYTES)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "profile: JSON larger than %u bytes",
                          MAX_JSON_BYTES);
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return qn_err_set(err, qn_json_load_code(&je), "profile: bad JSON at line %d: %s", je.line,
                          je.text);
    int rc = 0;
    qml_profile *p = calloc(1, sizeof *p);
    json_t *cols, *fmt = json_object_get(root, "format");
    uint64_t rs = 0, mc = 0;
    if (!p) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "profile: out of memory");
        goto out;
    }
    if (!json_is_string(fmt) || strcmp(json_string_value(fmt), PROFILE_FORMAT) != 0) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "profile: \"format\" must be \"%s\"",
                        PROFILE_FORMAT);
        goto out;
    }
    json_t *seed = json_object_get(root, "seed");
    if ((rc = get_u64(root, "nrows", "header", &p->nrows, err)) < 0 ||
        (rc = get_u64(root, "reservoir_size", "header", &rs, err)) < 0 ||
        (rc = get_u64(root, "max_categories", "header", &mc, err)) < 0 ||
        (rc = get_array(root, "columns", "header", &cols, err)) < 0)
        goto out;
    if (!json_is_integer(seed)) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "profile header: \"seed\" must be an integer");
        goto out;
    }
    p->seed = (uint64_t)json_integer_value(seed);
    if (rs == 0 || rs > MAX_RESERVOIR || mc == 0 || mc > SIZE_MAX) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                        "profile header: reservoir_size must be in 1..%u, max_categories >= 1",
                        MAX_RESERVOIR);
        goto out;
    }
    p->reservoir_size = (size_t)rs;
    p->max_categories = (size_t)mc;
    size_t nc = json_array_size(cols);
    if (!(p->cols = calloc(nc ? nc : 1, sizeof *p->cols))) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "profile: out of memory");
        goto out;
    }
    for (size_t i = 0; i < nc; i++) {
        json_t *o = json_array_get(cols, i);
        qml_profile_column *c = &p->cols[i];
        p->ncols++;
        json_t *name = json_object_get(o, "name"), *type = json_object_get(o, "type");
        if (!json_is_object(o) || !json_is_string(name) || !json_is_string(type) ||
            strlen(json_string_value(name)) != json_string_length(name) ||
            qml_type_parse(json_string_value(type), &c->type) < 0) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                            "profile column %zu: needs a \"name\" and a known \"type\"", i);
            goto out;
        }
        if (!(c->name = strdup(json_string_value(name)))) {
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "profile: out of memory");
            goto out;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(p->cols[j].name, c->name) == 0) {
                rc = qn_err_set(err, QN_INVALID_ARGUMENT, "profile column %s appears twice",
                                c->name);
                goto out;
            }
        if ((rc = get_u64(o, "count", c->name, &c->count, err)) < 0 ||
            (rc = get_u64(o, "missing", c->name, &c->missing, err)) < 0)
            goto out;
        if (c->count > p->nrows || c->missing != p->nrows - c->count) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                            "profile %s: count + missing must equal nrows", c->name);
            goto out;
        }
        c->categorical = c->type == QML_CATEGORICAL || c->type == QML_BOOLEAN;
        rc = c->categorical ? load_categorical(o, p, c, err) : load_numeric(o, p, c, err);
        if (rc < 0)
            goto out;
    }
out:
    json_decref(root);
    if (rc < 0) {
        qml_profile_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* ---- drift against a current window ----------------------------------------- */

static int numeric_drift(const qml_profile_column *pc, const qml_column *col,
                         const qml_drift_opts *o, qml_drift_feature *ft, qn_err *err)
{
    int rc = 0;
    size_t n = col->len - col->n_missing, k = 0;
    /* the window's values, then the sort's scratch: one block (see drift.c) */
    double *cur = malloc((n ? 2 * n : 1) * sizeof *cur), *a = NULL, *b = NULL;
    if (!cur)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory", pc->name);
    for (size_t i = 0; i < col->len; i++)
        if (!col->missing[i]) {
            if (!isfinite(col->num[i])) {
                rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                                "column %s: current value at row %zu is not finite", pc->name, i);
                goto out;
            }
            cur[k++] = col->num[i];
        }
    ft->n_current = n;
    switch (ft->method) {
    case QML_DRIFT_KS:
    case QML_DRIFT_WASSERSTEIN:
        /* the reservoir stands in for the reference, sorted when the
         * profile was built or loaded: only the window is sorted here */
        ft->n_reference = pc->sample_len;
        qml_fsort_into(cur, n, cur, cur + n);  /* cur is our copy, all finite */
        if (ft->method == QML_DRIFT_KS) {
            qml_ks_result r;
            rc = qml_ks_2samp_sorted(pc->sample_sorted, pc->sample_len, cur, n, o->ks_mode, &r,
                                     err);
            ft->statistic = r.statistic;
            ft->p_value = r.p_value;
        } else {
            double w;
            rc = qml_wasserstein_sorted(pc->sample_sorted, pc->sample_len, cur, n, &w, err);
            ft->statistic = qml_wasserstein_normed(w, pc->std);
        }
        break;
    case QML_DRIFT_JENSENSHANNON:
    case QML_DRIFT_PSI:
        ft->n_reference = pc->count;
        a = malloc(pc->nbins * sizeof *a);
        b = malloc(pc->nbins * sizeof *b);
        if (!a || !b) {
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory", pc->name);
            goto out;
        }
        qml_histogram_clamped(cur, n, pc->edges, pc->nbins, b);
        for (size_t i = 0; i < pc->nbins; i++) {
            a[i] = (double)pc->hist[i] / (double)pc->count;
            b[i] /= (double)n;
        }
        qml_drift_fill_empty(a, pc->nbins);
        qml_drift_fill_empty(b, pc->nbins);
        rc = ft->method == QML_DRIFT_PSI
                 ? qml_psi(a, b, pc->nbins, &ft->statistic, err)
                 : qml_jensenshannon(a, b, pc->nbins, o->js_base, &ft->statistic, err);
        break;
    default:
        rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                        "column %s: method %s needs a categorical column", pc->name,
                        qml_drift_method_name(ft->method));
    }
out:
    free(cur);
    free(a);
    free(b);
    return rc;
}

static int categorical_drift(const qml_profile_column *pc, const qml_column *col,
                             const qml_drift_opts *o, qml_drift_feature *ft, qn_err *err)
{
    int rc = 0;
    /* Cells: the profile's categories, then one for everything else (the
     * reference's "other", and values the reference never saw). */
    size_t k = pc->ncat + 1;
    double *ref = calloc(k, sizeof *ref), *cur = calloc(k, sizeof *cur);
    int32_t *map = NULL;
    size_t nd = col->type == QML_BOOLEAN ? 0 : qml_dict_size(col->dict);
    if (!ref || !cur || !(map = malloc((nd ? nd : 1) * sizeof *map))) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory", pc->name);
        goto out;
    }
    for (size_t i = 0; i < pc->ncat; i++)
        ref[i] = (double)pc->cat_counts[i];
    ref[pc->ncat] = (double)pc->other;
    /* current dictionary code -> profile cell, resolved once per code */
    for (size_t d = 0; d < nd; d++) {
        const char *s = qml_dict_str(col->dict, (int32_t)d);
        map[d] = (int32_t)pc->ncat;
        for (size_t i = 0; i < pc->ncat; i++)
            if (strcmp(pc->cats[i], s) == 0) {
                map[d] = (int32_t)i;
                break;
            }
    }
    size_t n = 0;
    for (size_t i = 0; i < col->len; i++) {
        if (col->missing[i])
            continue;
        size_t cell;
        if (col->type == QML_BOOLEAN) {
            const char *s = col->num[i] != 0 ? "1" : "0";
            cell = pc->ncat;
            for (size_t j = 0; j < pc->ncat; j++)
                if (strcmp(pc->cats[j], s) == 0)
                    cell = j;
        } else {
            cell = (size_t)map[col->cat[i]];
        }
        cur[cell] += 1;
        n++;
    }
    ft->n_reference = pc->count;
    ft->n_current = n;
    if (ref[pc->ncat] == 0 && cur[pc->ncat] == 0)
        k--;  /* nothing outside the kept categories on either side */
    switch (ft->method) {
    case QML_DRIFT_CHISQUARE:
        rc = qml_chisquare_drift(ref, cur, k, &ft->statistic, &ft->p_value, err);
        break;
    case QML_DRIFT_ZTEST:
        /* the first (most frequent) reference category against the rest */
        rc = qml_ztest_proportions(ref[0], (double)pc->count, cur[0], (double)n,
                                   &ft->statistic, &ft->p_value, err);
        break;
    case QML_DRIFT_JENSENSHANNON:
    case QML_DRIFT_PSI:
        for (size_t i = 0; i < k; i++) {
            ref[i] /= (double)pc->count;
            cur[i] /= (double)n;
        }
        qml_drift_fill_empty(ref, k);
        qml_drift_fill_empty(cur, k);
        rc = ft->method == QML_DRIFT_PSI
                 ? qml_psi(ref, cur, k, &ft->statistic, err)
                 : qml_jensenshannon(ref, cur, k, o->js_base, &ft->statistic, err);
        break;
    default:
        rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                        "column %s: method %s needs a numeric column", pc->name,
                        qml_drift_method_name(ft->method));
    }
out:
    free(ref);
    free(cur);
    free(map);
    return rc;
}

/* One profiled column against one current column: checks, method and
 * threshold resolution, the statistic, the verdict. ft->column is set by the
 * caller. */
static int column_drift(const qml_profile *p, const qml_profile_column *pc,
                        const qml_column *col, const qml_drift_opts *o, qml_drift_feature *ft,
                        qn_err *err)
{
    int rc;
    int cur_cat = col->type == QML_CATEGORICAL || col->type == QML_BOOLEAN;
    if (cur_cat != pc->categorical)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "column %s: %s in the current window but %s in the profile",
                          pc->name, qml_type_name(col->type), qml_type_name(pc->type));
    if (pc->count == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "column %s: every reference value is missing", pc->name);
    if (col->len == col->n_missing)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "column %s: every current value is missing", pc->name);
    ft->method = QML_DRIFT_AUTO;
    ft->threshold = NAN;
    ft->p_value = NAN;
    for (size_t j = 0; j < o->n_columns; j++)
        if (strcmp(o->columns[j].column, pc->name) == 0) {
            ft->method = o->columns[j].method;
            ft->threshold = o->columns[j].threshold;
        }
    if (ft->method == QML_DRIFT_AUTO)
        ft->method = qml_drift_default_method(o, pc->categorical, pc->ncat + (pc->other > 0),
                                              (size_t)p->nrows);
    if (isnan(ft->threshold))
        ft->threshold = qml_drift_default_threshold(o, ft->method);
    rc = pc->categorical ? categorical_drift(pc, col, o, ft, err)
                         : numeric_drift(pc, col, o, ft, err);
    if (rc < 0) {
        /* the statistics name themselves; add the column unless already there */
        if (err && strncmp(err->msg, "column ", 7) != 0)
            qn_err_wrap(err, "column %s", pc->name);
        return rc;
    }
    ft->drifted = qml_drift_method_is_test(ft->method) ? ft->p_value <= ft->threshold
                                                       : ft->statistic >= ft->threshold;
    return 0;
}

int qml_profile_drift_values(const qml_profile *p, const char *column, const double *values,
                             size_t n, const qml_drift_opts *o, qml_drift_feature *out,
                             qn_err *err)
{
    qml_drift_opts def;
    if (!o) {
        qml_drift_opts_default(&def);
        o = &def;
    }
    memset(out, 0, sizeof *out);
    size_t i = 0;
    while (i < p->ncols && strcmp(p->cols[i].name, column) != 0)
        i++;
    if (i == p->ncols)
        return qn_err_set(err, QN_NOT_FOUND, "column %s: not in the profile", column);
    if (p->cols[i].categorical)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "column %s: categorical in the profile; pass a frame", column);
    /* A borrowed view: values as a numeric column, NaN as missing. */
    qml_column col = {.name = (char *)column, .type = QML_NUMERIC, .len = n, .cap = n,
                      .num = (double *)values};
    col.missing = calloc(n ? n : 1, 1);
    if (!col.missing)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory", column);
    for (size_t k = 0; k < n; k++)
        if (isnan(values[k])) {
            col.missing[k] = 1;
            col.n_missing++;
        }
    int rc = column_drift(p, &p->cols[i], &col, o, out, err);
    free(col.missing);
    if (rc < 0)
        return rc;
    if (!(out->column = strdup(column)))
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "column %s: out of memory", column);
    return 0;
}

int qml_profile_drift(const qml_profile *p, const qml_frame *cur, const qml_drift_opts *o,
                      qml_drift_report **out, qn_err *err)
{
    qml_drift_opts def;
    if (!o) {
        qml_drift_opts_default(&def);
        o = &def;
    }
    for (size_t j = 0; j < o->n_columns; j++) {
        size_t i = 0;
        while (i < p->ncols && strcmp(p->cols[i].name, o->columns[j].column) != 0)
            i++;
        if (i == p->ncols)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "drift option for column %s: no such column in the profile",
                              o->columns[j].column);
    }
    int rc = 0;
    qml_drift_report *r = calloc(1, sizeof *r);
    if (!r || !(r->features = calloc(p->ncols ? p->ncols : 1, sizeof *r->features))) {
        free(r);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "drift: out of memory");
    }
    for (size_t i = 0; i < p->ncols; i++) {
        const qml_profile_column *pc = &p->cols[i];
        qml_drift_feature *ft = &r->features[i];
        r->n_features++;
        if (!(ft->column = strdup(pc->name))) {
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "drift: out of memory");
            goto out;
        }
        int ci = qml_frame_find(cur, pc->name);
        if (ci < 0) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                            "column %s: absent from the current window", pc->name);
            goto out;
        }
        rc = column_drift(p, pc, qml_frame_col(cur, (size_t)ci), o, ft, err);
        if (rc < 0)
            goto out;
    }
    qml_drift_report_finish(r, o->share_threshold);
out:
    if (rc < 0) {
        qml_drift_report_free(r);
        return rc;
    }
    *out = r;
    return 0;
}
