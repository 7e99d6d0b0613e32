/*
 * promote.c - the automatic promotion and rollback policy of quern-monitor
 * (the "auto" object of a model's traffic policy, owned by the registry).
 *
 * Evidence. Every label that joins (quality.c) is offered here with every
 * version's prediction of its request id (a shadowed request was predicted
 * by production and by the shadow under one id): one entry per labelled
 * request, at most MAX_LABELLED per model (a ring grown on demand, the
 * oldest make way: 80 bytes an entry, 8 MB a model at most, MAX_MODELS
 * models). In memory; checkpoint.c saves it with the latencies
 * (mon_promote_save) and a restart loads it back (mon_promote_load).
 *
 * Evaluation, on the ticker at most every EVAL_MS (a model without new
 * labels every IDLE_EVAL_MS), outside m->mu for the registry calls (two
 * GETs per model evaluated): for each model with labelled requests whose traffic
 * policy has "auto", with the champion C the version of alias production
 * and the challenger X the version of auto.challenger:
 * - promote (auto.promote): over the requests labelled for both C and X,
 *   once there are >= auto.min_labelled, auto.metric of X better than C's
 *   by more than auto.margin (relative to |C's|) moves production to X
 *   through the registry's alias PUT, with the reason and the evidence
 *   (both figures, n, metric, margin) in the alias history, then sets the
 *   traffic to production only (the same sticky and auto), and publishes
 *   quern.model.auto_promoted.
 * - roll back (auto.rollback): every weighted route to an alias whose
 *   version K is not C, once K and C each have >= min_labelled labelled
 *   requests: K's metric worse than C's by more than quality_margin
 *   (relative), or, for classifiers, K's error rate (1 - accuracy) above
 *   C's by more than error_rate, sets that route's weight to 0 (its share
 *   goes to production) through the traffic PUT, logs it and publishes
 *   quern.traffic.rolled_back with the evidence. No alias moves.
 *   Latency: serve logs each request's serving latency with its
 *   prediction (latency_us); the last MAX_LATENCIES requests of each
 *   version are kept here (mon_promote_latencies; labels not needed), and
 *   once K and C each have >= min_labelled of them, K's p95 above C's p95
 *   times latency_p95_ratio (or p50 and latency_p50_ratio), and above it
 *   by more than latency_margin_ms, rolls K back the same way (cause
 *   "latency").
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "ml/eval.h"
#include "monitor/monitor.h"

#define MAX_LABELLED 100000 /* labelled requests kept per model */
#define MAX_VERS 4          /* versions credited per request */
#define EVAL_MS 1000        /* evaluations at most this often */
#define IDLE_EVAL_MS 30000  /* and a model without new labels this often */
#define MAX_MODELS 64
#define MAX_LATENCIES 20000 /* latencies kept per version (4 bytes each) */
#define MAX_LAT_VERS 8      /* versions with latencies kept per model, the least recent make way */
#define LAT_EVAL_MS 5000    /* a model with new latencies and no "auto" policy seen: this often */

typedef struct plab {
    double y;
    int n;
    int64_t ver[MAX_VERS];
    double score[MAX_VERS];
} plab;

/* The serving latencies (microseconds) of one version's latest requests. */
typedef struct plat {
    int64_t ver;
    uint32_t *ring;
    size_t n, cap, head;
    int64_t used_ms;     /* when a latency last arrived */
} plat;

typedef struct pmodel {
    char name[129];
    plab *ring;
    size_t n, cap, head; /* entries held, room (grows to MAX_LABELLED), next slot */
    int64_t seen;        /* labelled requests since start */
    int64_t seen_eval, eval_at; /* seen at the last evaluation, and when */
    plat lat[MAX_LAT_VERS];
    int64_t lat_seen, lat_seen_eval; /* latencies since start, and at the last evaluation */
    int has_auto;        /* the last evaluation found an "auto" policy */
    struct pmodel *next;
} pmodel;

struct mon_promote {
    pmodel *models;
    int64_t last_eval;
};

int mon_promote_new(monitor *m, qn_err *err)
{
    if (!(m->promote = calloc(1, sizeof *m->promote)))
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    return 0;
}

void mon_promote_free(monitor *m)
{
    if (!m->promote)
        return;
    for (pmodel *pm = m->promote->models, *nx; pm; pm = nx) {
        nx = pm->next;
        free(pm->ring);
        for (int i = 0; i < MAX_LAT_VERS; i++)
            free(pm->lat[i].ring);
        free(pm);
    }
    free(m->promote);
    m->promote = NULL;
}

/* The entry of model, made when missing (NULL: MAX_MODELS reached, or out of memory). */
static pmodel *model_get(monitor *m, const char *model)
{
    pmodel *pm = m->promote->models;
    size_t count = 0;
    for (; pm && strcmp(pm->name, model) != 0; pm = pm->next)
        count++;
    if (!pm) {
        if (count >= MAX_MODELS || !(pm = calloc(1, sizeof *pm)))
            return NULL;
        snprintf(pm->name, sizeof pm->name, "%s", model);
        pm->next = m->promote->models;
        m->promote->models = pm;
    }
    return pm;
}

/* Appends one latency to pl's ring (grown on demand up to MAX_LATENCIES,
 * then the oldest make way). -1 when out of memory. */
static int lat_push(plat *pl, uint32_t us)
{
    if (pl->n == pl->cap && pl->cap < MAX_LATENCIES) { /* not wrapped yet: head == n */
        size_t nc = pl->cap ? pl->cap * 2 : 256;
        if (nc > MAX_LATENCIES)
            nc = MAX_LATENCIES;
        uint32_t *r = realloc(pl->ring, nc * sizeof *r);
        if (!r)
            return -1;
        pl->ring = r;
        pl->cap = nc;
    }
    pl->ring[pl->head] = us;
    pl->head = (pl->head + 1) % pl->cap;
    if (pl->n < pl->cap)
        pl->n++;
    return 0;
}

void mon_promote_latencies(monitor *m, const char *model, int64_t version, const json_t *preds)
{
    if (!m->promote)
        return;
    pmodel *pm = NULL;
    plat *pl = NULL;
    const char *last_id = NULL;
    size_t i;
    const json_t *p;
    json_array_foreach(preds, i, p) {
        const json_t *lv = json_object_get(p, "latency_us");
        if (!json_is_integer(lv) || json_integer_value(lv) < 0)
            continue; /* an older serve, or logged off the request path */
        /* the rows of one request share its latency: counted once */
        const char *id = json_string_value(json_object_get(p, "request_id"));
        if (id && last_id && strcmp(id, last_id) == 0)
            continue;
        last_id = id;
        if (!pm && !(pm = model_get(m, model)))
            return;
        if (!pl) {
            int free_at = -1, oldest = 0;
            for (int k = 0; k < MAX_LAT_VERS && !pl; k++) {
                if (pm->lat[k].ver == version)
                    pl = &pm->lat[k];
                else if (pm->lat[k].ver == 0 && free_at < 0)
                    free_at = k;
                else if (pm->lat[k].used_ms < pm->lat[oldest].used_ms)
                    oldest = k;
            }
            if (!pl) {
                pl = &pm->lat[free_at >= 0 ? free_at : oldest];
                pl->ver = version;
                pl->n = pl->head = 0;
            }
        }
        json_int_t us = json_integer_value(lv);
        if (lat_push(pl, us > UINT32_MAX ? UINT32_MAX : (uint32_t)us) < 0)
            return;
        pl->used_ms = qn_now_ms();
        pm->lat_seen++;
    }
}

void mon_promote_label(monitor *m, const char *model, double y, size_t n, const int64_t *versions,
                       const double *scores)
{
    if (!m->promote || n == 0)
        return;
    pmodel *pm = model_get(m, model);
    if (!pm)
        return;
    if (pm->n == pm->cap && pm->cap < MAX_LABELLED) { /* not wrapped yet: head == n */
        size_t nc = pm->cap ? pm->cap * 2 : 1024;
        if (nc > MAX_LABELLED)
            nc = MAX_LABELLED;
        plab *r = realloc(pm->ring, nc * sizeof *r);
        if (!r)
            return;
        pm->ring = r;
        pm->cap = nc;
    }
    plab *e = &pm->ring[pm->head];
    e->y = y;
    e->n = 0;
    for (size_t i = 0; i < n && e->n < MAX_VERS; i++) {
        e->ver[e->n] = versions[i];
        e->score[e->n++] = scores[i];
    }
    pm->head = (pm->head + 1) % pm->cap;
    if (pm->n < pm->cap)
        pm->n++;
    pm->seen++;
}

/* ---- metrics ------------------------------------------------------------------ */

static int lower_better(const char *metric)
{
    return strcmp(metric, "rmse") == 0 || strcmp(metric, "mae") == 0 || strcmp(metric, "log_loss") == 0 ||
           strcmp(metric, "brier") == 0;
}

/* metric over (y, s) of n; NAN when undefined. */
static double metric_of(const char *metric, const double *y, const double *s, size_t n)
{
    qn_err err;
    double v = NAN;
    int rc = -1;
    if (n == 0)
        return NAN;
    if (strcmp(metric, "rmse") == 0)
        rc = qml_metric_rmse(y, s, n, &v, &err);
    else if (strcmp(metric, "mae") == 0)
        rc = qml_metric_mae(y, s, n, &v, &err);
    else if (strcmp(metric, "r2") == 0)
        rc = qml_metric_r2(y, s, n, &v, &err);
    else if (strcmp(metric, "log_loss") == 0)
        rc = qml_metric_log_loss(y, s, n, 1e-15, &v, &err);
    else if (strcmp(metric, "brier") == 0)
        rc = qml_metric_brier(y, s, n, &v, &err);
    else if (strcmp(metric, "roc_auc") == 0)
        rc = qml_metric_roc_auc(y, s, n, &v, &err);
    else if (strcmp(metric, "accuracy") == 0) {
        size_t ok = 0;
        for (size_t i = 0; i < n; i++)
            ok += (s[i] >= 0.5 ? 1.0 : 0.0) == y[i];
        v = (double)ok / (double)n;
        rc = 0;
    }
    return rc < 0 ? NAN : v;
}

/* Classifier error rate: a score >= 0.5 is class 1 (binary). */
static double error_rate(const double *y, const double *s, size_t n)
{
    if (n == 0)
        return NAN;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (y[i] != 0 && y[i] != 1)
            return NAN; /* not a binary label: no error rate */
        bad += (s[i] >= 0.5 ? 1.0 : 0.0) != y[i];
    }
    return (double)bad / (double)n;
}

static int find_ver(const plab *e, int64_t v)
{
    for (int i = 0; i < e->n; i++)
        if (e->ver[i] == v)
            return i;
    return -1;
}

/* The (label, score) pairs of version a (and of b when pair, over the same
 * requests) of model. Under m->mu. */
typedef struct pairs {
    double *y, *a, *b;
    size_t n;
} pairs;

static int collect(monitor *m, const char *model, int64_t va, int64_t vb, int pair, pairs *out)
{
    memset(out, 0, sizeof *out);
    pmodel *pm = m->promote->models;
    while (pm && strcmp(pm->name, model) != 0)
        pm = pm->next;
    if (!pm || pm->n == 0)
        return 0;
    out->y = malloc(pm->n * sizeof(double));
    out->a = malloc(pm->n * sizeof(double));
    out->b = malloc(pm->n * sizeof(double));
    if (!out->y || !out->a || !out->b)
        return -1;
    for (size_t i = 0; i < pm->n; i++) {
        const plab *e = &pm->ring[i];
        int ia = find_ver(e, va), ib = pair ? find_ver(e, vb) : 0;
        if (ia < 0 || ib < 0)
            continue;
        out->y[out->n] = e->y;
        out->a[out->n] = e->score[ia];
        out->b[out->n] = pair ? e->score[ib] : 0;
        out->n++;
    }
    return 0;
}

static void pairs_free(pairs *p)
{
    free(p->y);
    free(p->a);
    free(p->b);
}

/* One version's latency summary: how many requests, p50 and p95 (us). */
typedef struct lat_sum {
    size_t n;
    double p50, p95;
} lat_sum;

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* The nearest-rank quantile q of sorted v[n] (n > 0). */
static double quantile(const uint32_t *v, size_t n, double q)
{
    size_t r = (size_t)ceil(q * (double)n);
    return v[r ? r - 1 : 0];
}

/* The latency summary of version v of model into *out (n 0: none). Under m->mu. */
static int latency_of(monitor *m, const char *model, int64_t v, lat_sum *out)
{
    memset(out, 0, sizeof *out);
    pmodel *pm = m->promote->models;
    while (pm && strcmp(pm->name, model) != 0)
        pm = pm->next;
    const plat *pl = NULL;
    for (int k = 0; pm && k < MAX_LAT_VERS && !pl; k++)
        if (pm->lat[k].ver == v)
            pl = &pm->lat[k];
    if (!pl || pl->n == 0)
        return 0;
    uint32_t *s = malloc(pl->n * sizeof *s);
    if (!s)
        return -1;
    memcpy(s, pl->ring, pl->n * sizeof *s);
    qsort(s, pl->n, sizeof *s, cmp_u32);
    out->n = pl->n;
    out->p50 = quantile(s, pl->n, 0.5);
    out->p95 = quantile(s, pl->n, 0.95);
    free(s);
    return 0;
}

static json_t *lat_json(const lat_sum *l)
{
    return json_pack("{s:f, s:f, s:I}", "p50", l->p50, "p95", l->p95, "requests", (json_int_t)l->n);
}

json_t *mon_promote_latency_json(monitor *m, const char *model)
{
    json_t *out = json_object();
    if (!out || !m->promote)
        return out;
    pthread_mutex_lock(&m->mu);
    pmodel *pm = m->promote->models;
    while (pm && strcmp(pm->name, model) != 0)
        pm = pm->next;
    for (int k = 0; pm && k < MAX_LAT_VERS; k++) {
        lat_sum l;
        char v[24];
        if (pm->lat[k].ver <= 0 || latency_of(m, model, pm->lat[k].ver, &l) < 0 || l.n == 0)
            continue;
        snprintf(v, sizeof v, "%lld", (long long)pm->lat[k].ver);
        json_object_set_new(out, v, lat_json(&l));
    }
    pthread_mutex_unlock(&m->mu);
    return out;
}

/* ---- the registry and the outbox ----------------------------------------------- */

static void publish(monitor *m, const char *type, json_t *data)
{
    qn_err err;
    qn_conn *c = qn_store_acquire(m->db, &err);
    json_t *ev = qn_event_new(type, "quern-monitor", data, NULL);
    if (!c || !ev)
        goto fail;
    if (qn_tx_begin(c, QN_TX_WRITE, &err) < 0 || qn_outbox_append(c, ev, &err) < 0 || qn_tx_commit(c, &err) < 0) {
        qn_tx_rollback(c);
        goto fail;
    }
    qn_store_release(m->db, c);
    json_decref(ev);
    qn_outbox_kick(m->outbox);
    return;
fail:
    if (c)
        qn_store_release(m->db, c);
    json_decref(ev);
    qn_log_warn(NULL, "event not stored", "{s:s}", "type", type);
}

static int64_t alias_version(const json_t *aliases, const char *alias)
{
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(aliases, "aliases"), i, a)
        if (json_is_string(json_object_get(a, "alias")) &&
            strcmp(json_string_value(json_object_get(a, "alias")), alias) == 0)
            return json_integer_value(json_object_get(a, "version"));
    return 0;
}

/* The policy to PUT: pol's routes, sticky and auto; shadow as given. */
static json_t *policy_body(const json_t *pol, json_t *routes, json_t *shadow)
{
    json_t *b = json_pack("{s:o, s:o, s:O}", "routes", routes, "shadow", shadow, "sticky",
                          json_object_get(pol, "sticky") ? json_object_get(pol, "sticky") : json_null());
    if (b && json_is_object(json_object_get(pol, "auto")))
        json_object_set(b, "auto", json_object_get(pol, "auto"));
    return b;
}

static void try_promote(monitor *m, const char *model, const json_t *pol, const json_t *au, int64_t champ,
                        int64_t chal)
{
    const char *metric = json_string_value(json_object_get(au, "metric"));
    json_int_t min_lab = json_integer_value(json_object_get(au, "min_labelled"));
    double margin = json_number_value(json_object_get(au, "margin"));
    pairs p;
    pthread_mutex_lock(&m->mu);
    int rc = collect(m, model, champ, chal, 1, &p);
    pthread_mutex_unlock(&m->mu);
    if (rc < 0 || p.n < (size_t)min_lab) {
        pairs_free(&p);
        return;
    }
    double mc = metric_of(metric, p.y, p.a, p.n), mx = metric_of(metric, p.y, p.b, p.n);
    size_t n = p.n;
    pairs_free(&p);
    if (!isfinite(mc) || !isfinite(mx))
        return;
    double need = margin * fabs(mc);
    int wins = lower_better(metric) ? mx < mc - need : mx > mc + need;
    if (!wins)
        return;
    const char *challenger = json_string_value(json_object_get(au, "challenger"));
    char reason[256];
    snprintf(reason, sizeof reason, "auto-promote: %s %.6g vs %.6g over %zu labelled requests", metric, mx, mc, n);
    json_t *evidence = json_pack("{s:s, s:s, s:I, s:I, s:f, s:f, s:I, s:f, s:I}", "policy", "auto-promote",
                                 "metric", metric, "challenger_version", (json_int_t)chal, "champion_version",
                                 (json_int_t)champ, "challenger", mx, "champion", mc, "labelled", (json_int_t)n,
                                 "margin", margin, "min_labelled", min_lab);
    json_object_set_new(evidence, "challenger_alias", json_string(challenger));
    json_t *body = json_pack("{s:I, s:s, s:O}", "version", (json_int_t)chal, "reason", reason, "evidence", evidence);
    char path[384];
    snprintf(path, sizeof path, "/v1/models/%.128s/aliases/production", model);
    qn_err err;
    if (qn_client_json(m->registry, "PUT", path, body, NULL, NULL, &err) < 0) {
        qn_log_warn(NULL, "auto-promote failed", "{s:s, s:s}", "model", model, "detail", err.msg);
        goto out;
    }
    qn_log_info(NULL, "auto-promoted", "{s:s, s:I, s:I, s:s, s:O}", "model", model, "version", (json_int_t)chal,
                "previous_version", (json_int_t)champ, "reason", reason, "evidence", evidence);
    /* The challenger is production now: all traffic to it, no shadow. */
    json_t *tb = policy_body(pol, json_pack("[{s:s, s:i}]", "alias", "production", "weight", 100), json_null());
    snprintf(path, sizeof path, "/v1/models/%.128s/traffic", model);
    if (tb && qn_client_json(m->registry, "PUT", path, tb, NULL, NULL, &err) < 0)
        qn_log_warn(NULL, "traffic not reset after auto-promote", "{s:s, s:s}", "model", model, "detail", err.msg);
    json_decref(tb);
    json_t *data = json_pack("{s:s, s:s, s:I, s:I, s:s, s:O}", "model", model, "alias", "production", "version",
                             (json_int_t)chal, "previous_version", (json_int_t)champ, "reason", reason, "evidence",
                             evidence);
    publish(m, "quern.model.auto_promoted", data);
out:
    json_decref(body);
    json_decref(evidence);
}

/* 1 with the evidence when route alias (version k) is worse than production (c). */
static int canary_worse(monitor *m, const char *model, const json_t *au, int64_t c, int64_t k, json_t **evidence)
{
    const char *metric = json_string_value(json_object_get(au, "metric"));
    json_int_t min_lab = json_integer_value(json_object_get(au, "min_labelled"));
    const json_t *rb = json_object_get(au, "rollback");
    const json_t *qmv = json_object_get(rb, "quality_margin"), *erv = json_object_get(rb, "error_rate");
    const json_t *l95 = json_object_get(rb, "latency_p95_ratio"), *l50 = json_object_get(rb, "latency_p50_ratio");
    double lmargin = json_number_value(json_object_get(rb, "latency_margin_ms")) * 1000.0;
    pairs pc, pk;
    lat_sum lc, lk;
    pthread_mutex_lock(&m->mu);
    int rc1 = collect(m, model, c, 0, 0, &pc), rc2 = collect(m, model, k, 0, 0, &pk);
    int rc3 = latency_of(m, model, c, &lc), rc4 = latency_of(m, model, k, &lk);
    pthread_mutex_unlock(&m->mu);
    int worse = 0;
    int labelled = rc1 == 0 && rc2 == 0 && pc.n >= (size_t)min_lab && pk.n >= (size_t)min_lab;
    int timed = rc3 == 0 && rc4 == 0 && lc.n >= (size_t)min_lab && lk.n >= (size_t)min_lab;
    double mc = NAN, mk = NAN, ec = NAN, ek = NAN;
    const char *why = NULL, *quant = NULL;
    double ratio = 0;
    if (labelled) {
        mc = metric_of(metric, pc.y, pc.a, pc.n);
        mk = metric_of(metric, pk.y, pk.a, pk.n);
        ec = error_rate(pc.y, pc.a, pc.n);
        ek = error_rate(pk.y, pk.a, pk.n);
        if (json_is_number(qmv) && isfinite(mc) && isfinite(mk)) {
            double need = json_number_value(qmv) * fabs(mc);
            if (lower_better(metric) ? mk > mc + need : mk < mc - need)
                why = "quality";
        }
        if (!why && json_is_number(erv) && isfinite(ec) && isfinite(ek) && ek > ec + json_number_value(erv))
            why = "error_rate";
    }
    /* Slower by the ratio and by the absolute margin: a microsecond model
     * twice as slow as another is not worth a rollback unless asked. */
    if (!why && timed && json_is_number(l95) && lk.p95 > lc.p95 * json_number_value(l95) &&
        lk.p95 - lc.p95 > lmargin) {
        why = "latency";
        quant = "p95";
        ratio = json_number_value(l95);
    }
    if (!why && timed && json_is_number(l50) && lk.p50 > lc.p50 * json_number_value(l50) &&
        lk.p50 - lc.p50 > lmargin) {
        why = "latency";
        quant = "p50";
        ratio = json_number_value(l50);
    }
    if (!why)
        goto out;
    worse = 1;
    *evidence = json_pack("{s:s, s:s, s:s, s:I, s:I, s:O}", "policy", "auto-rollback", "cause", why, "metric",
                          metric, "canary_version", (json_int_t)k, "production_version", (json_int_t)c, "rollback",
                          rb);
    if (!*evidence)
        goto out;
    if (labelled) {
        json_object_set_new(*evidence, "canary_labelled", json_integer((json_int_t)pk.n));
        json_object_set_new(*evidence, "production_labelled", json_integer((json_int_t)pc.n));
        if (isfinite(mk) && isfinite(mc)) {
            json_object_set_new(*evidence, "canary", json_real(mk));
            json_object_set_new(*evidence, "production", json_real(mc));
        }
        if (isfinite(ek) && isfinite(ec)) {
            json_object_set_new(*evidence, "canary_error_rate", json_real(ek));
            json_object_set_new(*evidence, "production_error_rate", json_real(ec));
        }
    }
    if (timed) {
        json_object_set_new(*evidence, "canary_latency_us", lat_json(&lk));
        json_object_set_new(*evidence, "production_latency_us", lat_json(&lc));
    }
    if (quant) {
        json_object_set_new(*evidence, "quantile", json_string(quant));
        json_object_set_new(*evidence, "latency_ratio", json_real(ratio));
    }
out:
    pairs_free(&pc);
    pairs_free(&pk);
    return worse;
}

static void try_rollback(monitor *m, const char *model, const json_t *pol, const json_t *au,
                         const json_t *aliases, int64_t champ)
{
    const json_t *routes = json_object_get(pol, "routes");
    size_t i;
    json_t *r;
    json_array_foreach(routes, i, r) {
        const char *alias = json_string_value(json_object_get(r, "alias"));
        json_int_t w = json_integer_value(json_object_get(r, "weight"));
        if (!alias || w <= 0 || strcmp(alias, "production") == 0)
            continue;
        int64_t k = alias_version(aliases, alias);
        json_t *evidence = NULL;
        if (k <= 0 || k == champ || !canary_worse(m, model, au, champ, k, &evidence))
            continue;
        /* its weight to 0, its share to production */
        json_t *nr = json_array();
        int have_prod = 0;
        size_t j;
        json_t *o;
        json_array_foreach(routes, j, o) {
            const char *a = json_string_value(json_object_get(o, "alias"));
            json_int_t ow = json_integer_value(json_object_get(o, "weight"));
            if (j == i)
                ow = 0;
            else if (strcmp(a, "production") == 0) {
                ow += w;
                have_prod = 1;
            }
            json_array_append_new(nr, json_pack("{s:s, s:I}", "alias", a, "weight", ow));
        }
        if (!have_prod)
            json_array_append_new(nr, json_pack("{s:s, s:I}", "alias", "production", "weight", w));
        json_object_set_new(evidence, "alias", json_string(alias));
        json_object_set_new(evidence, "weight_before", json_integer(w));
        json_t *shadow = json_object_get(pol, "shadow");
        json_t *tb = policy_body(pol, nr, shadow ? json_incref(shadow) : json_null());
        char path[384];
        qn_err err;
        snprintf(path, sizeof path, "/v1/models/%.128s/traffic", model);
        if (!tb || qn_client_json(m->registry, "PUT", path, tb, NULL, NULL, &err) < 0) {
            qn_log_warn(NULL, "auto-rollback failed", "{s:s, s:s, s:s}", "model", model, "alias", alias, "detail",
                        tb ? err.msg : "out of memory");
        } else {
            qn_log_info(NULL, "canary rolled back", "{s:s, s:s, s:I, s:O}", "model", model, "alias", alias,
                        "version", (json_int_t)k, "evidence", evidence);
            publish(m, "quern.traffic.rolled_back",
                    json_pack("{s:s, s:s, s:I, s:I, s:O}", "model", model, "alias", alias, "version", (json_int_t)k,
                              "weight", (json_int_t)0, "evidence", evidence));
        }
        json_decref(tb);
        json_decref(evidence);
        return; /* one move per evaluation: the next sees the new policy */
    }
}

static void evaluate(monitor *m, const char *model)
{
    char path[384];
    qn_err err;
    json_t *pol = NULL, *aliases = NULL;
    snprintf(path, sizeof path, "/v1/models/%.128s/traffic", model);
    if (qn_client_json(m->registry, "GET", path, NULL, NULL, &pol, &err) < 0)
        goto out;
    const json_t *au = json_object_get(pol, "auto");
    pthread_mutex_lock(&m->mu);
    for (pmodel *pm = m->promote->models; pm; pm = pm->next)
        if (strcmp(pm->name, model) == 0)
            pm->has_auto = json_is_object(au);
    pthread_mutex_unlock(&m->mu);
    if (!json_is_object(au))
        goto out;
    snprintf(path, sizeof path, "/v1/models/%.128s/aliases", model);
    if (qn_client_json(m->registry, "GET", path, NULL, NULL, &aliases, &err) < 0)
        goto out;
    int64_t champ = alias_version(aliases, "production");
    int64_t chal = alias_version(aliases, json_string_value(json_object_get(au, "challenger")));
    if (champ <= 0)
        goto out;
    if (json_is_object(json_object_get(au, "rollback")))
        try_rollback(m, model, pol, au, aliases, champ);
    if (json_is_true(json_object_get(au, "promote")) && chal > 0 && chal != champ)
        try_promote(m, model, pol, au, champ, chal);
out:
    json_decref(pol);
    json_decref(aliases);
}

void mon_promote_tick(monitor *m)
{
    if (!m->promote)
        return;
    int64_t now = qn_now_ms();
    char names[MAX_MODELS][129];
    size_t n = 0;
    pthread_mutex_lock(&m->mu);
    if (now - m->promote->last_eval >= EVAL_MS) {
        m->promote->last_eval = now;
        /* models with new labels, with new latencies (every LAT_EVAL_MS
         * while no "auto" policy was seen: most models have none), and
         * each at least every IDLE_EVAL_MS */
        for (pmodel *pm = m->promote->models; pm && n < MAX_MODELS; pm = pm->next) {
            int fresh = pm->seen != pm->seen_eval ||
                        (pm->lat_seen != pm->lat_seen_eval && (pm->has_auto || now - pm->eval_at >= LAT_EVAL_MS));
            if (!fresh && now - pm->eval_at < IDLE_EVAL_MS)
                continue;
            pm->seen_eval = pm->seen;
            pm->lat_seen_eval = pm->lat_seen;
            pm->eval_at = now;
            snprintf(names[n++], sizeof names[0], "%s", pm->name);
        }
    }
    pthread_mutex_unlock(&m->mu);
    for (size_t i = 0; i < n; i++)
        evaluate(m, names[i]);
}

/* ---- checkpoint (checkpoint.c) ---------------------------------------------- */

/* The index of the oldest entry of a ring of n entries, room cap, next slot
 * head: 0 until it wrapped, head after. */
static size_t ring_oldest(size_t n, size_t cap, size_t head)
{
    return n == cap ? head % (cap ? cap : 1) : 0;
}

/* Per model: its name, labelled requests since start, the labelled requests
 * oldest first, then each version's latencies oldest first. */
void mon_promote_save(monitor *m, qn_buf *b)
{
    size_t nm = 0;
    for (pmodel *pm = m->promote->models; pm; pm = pm->next)
        nm++;
    mon_buf_i64(b, (int64_t)nm);
    for (pmodel *pm = m->promote->models; pm; pm = pm->next) {
        mon_buf_str(b, pm->name);
        mon_buf_i64(b, pm->seen);
        mon_buf_i64(b, pm->lat_seen);
        mon_buf_i64(b, (int64_t)pm->n);
        size_t o = ring_oldest(pm->n, pm->cap, pm->head);
        for (size_t i = 0; i < pm->n; i++) {
            const plab *e = &pm->ring[(o + i) % pm->cap];
            mon_buf_f64(b, e->y);
            mon_buf_i64(b, e->n);
            for (int k = 0; k < e->n; k++) {
                mon_buf_i64(b, e->ver[k]);
                mon_buf_f64(b, e->score[k]);
            }
        }
        for (int k = 0; k < MAX_LAT_VERS; k++) {
            const plat *pl = &pm->lat[k];
            mon_buf_i64(b, pl->ver);
            mon_buf_i64(b, pl->used_ms);
            mon_buf_i64(b, (int64_t)pl->n);
            size_t lo = ring_oldest(pl->n, pl->cap, pl->head);
            for (size_t i = 0; i < pl->n; i++)
                qn_buf_append(b, &pl->ring[(lo + i) % pl->cap], sizeof(uint32_t));
        }
    }
}

int mon_promote_load(monitor *m, mon_rd *r, qn_err *err)
{
    size_t nm = mon_rd_count(r, 26 + MAX_LAT_VERS * 24);
    for (size_t i = 0; i < nm && !r->bad; i++) {
        char name[129];
        mon_rd_str(r, name, sizeof name);
        int64_t seen = mon_rd_i64(r), lat_seen = mon_rd_i64(r);
        if (r->bad || !name[0])
            break;
        pmodel *pm = model_get(m, name);
        if (!pm)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "promotion checkpoint: no room for model \"%s\"", name);
        size_t n = mon_rd_count(r, 16);
        for (size_t j = 0; j < n && !r->bad; j++) {
            double y = mon_rd_f64(r), scores[MAX_VERS];
            int64_t nv = mon_rd_i64(r), vers[MAX_VERS];
            if (nv < 1 || nv > MAX_VERS) {
                r->bad = 1;
                break;
            }
            for (int k = 0; k < nv; k++) {
                vers[k] = mon_rd_i64(r);
                scores[k] = mon_rd_f64(r);
            }
            if (!r->bad)
                mon_promote_label(m, name, y, (size_t)nv, vers, scores);
        }
        pm->seen = seen;
        for (int k = 0; k < MAX_LAT_VERS && !r->bad; k++) {
            plat *pl = &pm->lat[k];
            pl->ver = mon_rd_i64(r);
            pl->used_ms = mon_rd_i64(r);
            size_t nl = mon_rd_count(r, sizeof(uint32_t));
            if (nl > MAX_LATENCIES)
                r->bad = 1;
            for (size_t j = 0; j < nl && !r->bad; j++) {
                uint32_t us;
                mon_rd_get(r, &us, sizeof us);
                if (lat_push(pl, us) < 0)
                    return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory loading the checkpoint");
            }
        }
        pm->lat_seen = lat_seen;
        /* evaluated at the next tick, with the evidence as it stood */
        pm->seen_eval = pm->lat_seen_eval = 0;
        pm->eval_at = 0;
    }
    if (r->bad)
        return qn_err_set(err, QN_DATA_LOSS, "the promotion checkpoint does not read (truncated or corrupt)");
    return 0;
}
