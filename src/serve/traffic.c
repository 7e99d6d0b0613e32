/*
 * traffic.c - quern-serve follows each model's traffic policy (DESIGN.md
 * sections 4 and 5): weighted canary routes between aliases, sticky per key
 * when asked, and shadow traffic.
 *
 * The registry owns the policy, so every replica routes alike. The follower
 * thread reads it at start, on quern.traffic.changed (or a move of any alias
 * of the model) and at every poll; each alias it names other than the one
 * the model's slot follows gets an arm: a serve_model of its own, outside
 * the slot table, loaded and swapped exactly as slots are (models.c), and
 * never freed while serve runs, so a request may keep a pointer to it. The
 * compiled policy is swapped under a per-model mutex that requests hold only
 * to pick a route; a model without a policy costs one atomic load.
 *
 * Routing: a fast thread-local xorshift draws 0..99 against the cumulative
 * weights; sticky policies draw the same number from a hash of the key (the
 * request's "user" parameter, else its "user"/"user_id" input's first
 * element, or the named header), so one key always lands on one alias while
 * the policy stands. A chosen alias with no version loaded falls back to
 * the model's own alias, so a canary that failed to load never fails calls.
 *
 * Shadow: after the caller's answer is computed, a fraction of requests is
 * copied into a bounded queue; one worker thread runs them on the shadow
 * alias's version and logs that prediction beside the primary's under the
 * same request id (roles "primary" and "shadow"; the primary's with the
 * latency measured on the request path). A full queue drops and
 * counts; a shadow that fails is counted; neither touches the caller.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"
#include "core/log.h"
#include "core/trace.h"
#include "core/validate.h"
#include "serve/serve.h"

#define MAX_ROUTES 8
#define MAX_ARMS 16
#define QUEUE_CAP 1024
/* The worker is woken by a request only when this many copies wait; else it
 * finds them at its next tick, so a shadowed request makes no system call. */
#define WAKE_AT 64
#define TICK_MS 5

typedef struct policy {
    int nroutes;
    serve_model *slot[MAX_ROUTES];
    int upto[MAX_ROUTES];          /* cumulative weights: route i takes draws below upto[i] */
    serve_model *shadow;
    double fraction;
    int sticky;                    /* 0 none, 1 user, 2 header */
    char header[72];
    json_t *doc;                   /* the registry's answer it was compiled from */
} policy;

typedef struct model_traffic {
    pthread_mutex_t mu;            /* guards pol */
    atomic_int active;             /* pol != NULL, read without the lock */
    policy *pol;
    serve_model *arms[MAX_ARMS];   /* follower thread only (and stop) */
    int narms;
} model_traffic;

typedef struct job {
    serve_model *m, *shadow;
    serve_model *pslot;            /* the slot that answered the caller, and its version (a reference) */
    serve_version *pv;
    int64_t primary_us;            /* the caller's serving latency (< 0: none) */
    oip_infer_request rq;
    json_t *params;
    void *blob;                    /* the inputs, their names and data, in one allocation */
    char rid[257];
} job;

struct serve_traffic {
    model_traffic models[SERVE_MAX_MODELS];
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    job *queue[QUEUE_CAP];
    size_t head, count;
    int stopping;
    pthread_t worker;
    int started;
    qn_metric *requests, *dropped, *shadow_errors;
};

/* ---- random draws and keys ------------------------------------------------------ */

static _Thread_local uint64_t rng;

static uint64_t draw64(void)
{
    if (!rng)
        qn_random_bytes(&rng, sizeof rng);
    if (!rng)
        rng = 0x9e3779b97f4a7c15ull;
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* FNV-1a, then a finalising mix so nearby keys spread over 0..99. */
static uint64_t hash_key(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

/* The sticky key of rq under pol into *key and *len; 0 when it has none. */
static int sticky_key(const policy *pol, const oip_infer_request *rq, char *buf, size_t cap, const char **key,
                      size_t *len)
{
    if (pol->sticky == 2) {
        const char *h = rq->header ? rq->header(rq->hctx, pol->header) : NULL;
        if (!h || !*h)
            return 0;
        *key = h;
        *len = strlen(h);
        return 1;
    }
    json_t *u = rq->parameters ? json_object_get(rq->parameters, "user") : NULL;
    if (json_is_string(u)) {
        *key = json_string_value(u);
        *len = json_string_length(u);
        return 1;
    }
    if (json_is_integer(u)) {
        *len = (size_t)snprintf(buf, cap, "%lld", (long long)json_integer_value(u));
        *key = buf;
        return 1;
    }
    for (size_t i = 0; i < rq->ninputs; i++) {
        const oip_tensor *t = &rq->inputs[i];
        if (!t->name || (strcmp(t->name, "user") != 0 && strcmp(t->name, "user_id") != 0))
            continue;
        if (t->datatype == OIP_BYTES && t->nbytes > 0) {
            *key = (const char *)t->bytes[0].p;
            *len = t->bytes[0].len;
            return 1;
        }
        size_t sz = oip_datatype_size(t->datatype);
        if (sz && t->data_len >= sz) {
            /* the first element's bytes: the same number, the same key */
            *key = t->data;
            *len = sz;
            return 1;
        }
    }
    return 0;
}

/* ---- arms --------------------------------------------------------------------- */

static serve_model *arm_new(serve_model *m, const char *alias)
{
    serve_model *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->name = strdup(m->name);
    a->alias = strdup(alias);
    if (!a->name || !a->alias) {
        free(a->name);
        free(a->alias);
        free(a);
        return NULL;
    }
    pthread_mutex_init(&a->mu, NULL);
    a->state = "loading";
    a->sample_rate = m->sample_rate;
    a->arm = 1;
    return a;
}

static void arm_free(serve_model *a)
{
    serve_release(a->cur);
    json_decref(a->last_refusal);
    free(a->name);
    free(a->alias);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

/* Drops what arm a serves (it left the policy); it loads again if it returns. */
static void arm_unload(serve *s, serve_model *a)
{
    pthread_mutex_lock(&a->mu);
    serve_version *old = a->cur;
    a->cur = NULL;
    a->target = 0;
    a->refused = 0;
    a->state = "loading";
    pthread_mutex_unlock(&a->mu);
    if (old) {
        const char *lv[] = {a->name, old->vstr, a->alias};
        qn_metric_remove(s->m_info, lv);
    }
    serve_release(old);
}

/* The slot for alias of m: m itself, or its arm (made when missing; NULL
 * when every arm is taken). */
static serve_model *arm_get(model_traffic *mt, serve_model *m, const char *alias)
{
    if (strcmp(alias, m->alias) == 0)
        return m;
    for (int i = 0; i < mt->narms; i++)
        if (strcmp(mt->arms[i]->alias, alias) == 0)
            return mt->arms[i];
    if (mt->narms == MAX_ARMS) {
        qn_log_warn(NULL, "every traffic arm of the model is taken; not routing to this alias", "{s:s, s:s, s:i}",
                    "model", m->name, "alias", alias, "max", MAX_ARMS);
        return NULL;
    }
    serve_model *a = arm_new(m, alias);
    if (a)
        mt->arms[mt->narms++] = a;
    return a;
}

/* ---- following the policy ------------------------------------------------------- */

static void policy_free(policy *pol)
{
    if (pol)
        json_decref(pol->doc);
    free(pol);
}

static void swap_policy(model_traffic *mt, policy *pol)
{
    pthread_mutex_lock(&mt->mu);
    policy *old = mt->pol;
    mt->pol = pol;
    atomic_store(&mt->active, pol != NULL);
    pthread_mutex_unlock(&mt->mu);
    policy_free(old);
}

/* Compiles the registry's answer for m into a policy (NULL: the default, all
 * to m's alias), following each alias it names. */
static int compile(serve *s, model_traffic *mt, serve_model *m, const json_t *doc, policy **out)
{
    *out = NULL;
    if (json_is_true(json_object_get(doc, "default")))
        return 0;
    const json_t *routes = json_object_get(doc, "routes");
    size_t n = json_array_size(routes);
    if (n == 0 || n > MAX_ROUTES)
        return -1;
    policy *pol = calloc(1, sizeof *pol);
    if (!pol)
        return -1;
    int sum = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *r = json_array_get(routes, i);
        const char *alias = json_string_value(json_object_get(r, "alias"));
        json_int_t w = json_integer_value(json_object_get(r, "weight"));
        if (!alias || w < 0 || w > 100)
            goto bad;
        serve_model *slot = arm_get(mt, m, alias);
        if (!slot)
            continue;
        sum += (int)w;
        pol->slot[pol->nroutes] = slot;
        pol->upto[pol->nroutes++] = sum;
    }
    if (sum != 100 && pol->nroutes == (int)n)
        goto bad;
    const json_t *sh = json_object_get(doc, "shadow");
    if (json_is_object(sh)) {
        const char *alias = json_string_value(json_object_get(sh, "alias"));
        pol->fraction = json_number_value(json_object_get(sh, "fraction"));
        pol->shadow = alias && pol->fraction > 0 ? arm_get(mt, m, alias) : NULL;
    }
    const char *st = json_string_value(json_object_get(doc, "sticky"));
    if (st && strcmp(st, "user") == 0) {
        pol->sticky = 1;
    } else if (st && strncmp(st, "header:", 7) == 0 && strlen(st + 7) < sizeof pol->header) {
        pol->sticky = 2;
        snprintf(pol->header, sizeof pol->header, "%s", st + 7);
    }
    pol->doc = json_deep_copy(doc);
    *out = pol;
    return 0;
bad:
    free(pol);
    return -1;
}

static int uses(const policy *pol, const serve_model *a)
{
    for (int i = 0; pol && i < pol->nroutes; i++)
        if (pol->slot[i] == a)
            return 1;
    return pol && pol->shadow == a;
}

void serve_traffic_follow(serve *s, serve_model *m)
{
    serve_traffic *t = s->traffic;
    if (!t)
        return;
    model_traffic *mt = &t->models[m - s->models];
    char path[512];
    json_t *doc = NULL;
    qn_err err;
    snprintf(path, sizeof path, "/v1/models/%s/traffic", m->name);
    int rc = qn_client_json(s->registry, "GET", path, NULL, NULL, &doc, &err);
    if (rc < 0 && rc != QN_NOT_FOUND) {
        qn_log(QN_LOG_DEBUG, NULL, "cannot read the traffic policy; keeping the one in force", "{s:s, s:s}",
               "model", m->name, "error", err.msg);
        return;
    }
    policy *pol = NULL;
    if (rc >= 0 && compile(s, mt, m, doc, &pol) < 0) {
        qn_log_warn(NULL, "the registry's traffic policy does not compile; keeping the one in force",
                    "{s:s}", "model", m->name);
        json_decref(doc);
        return;
    }
    /* Load what the new policy routes to before it takes effect. */
    for (int i = 0; i < mt->narms; i++)
        if (uses(pol, mt->arms[i]))
            serve_model_follow(s, mt->arms[i]);
    pthread_mutex_lock(&mt->mu);
    int changed = (pol == NULL) != (mt->pol == NULL) || (pol && !json_equal(pol->doc, mt->pol->doc));
    pthread_mutex_unlock(&mt->mu);
    if (changed)
        qn_log_info(NULL, "traffic policy in force", "{s:s, s:O}", "model", m->name, "policy",
                    pol ? doc : json_null());
    swap_policy(mt, pol);
    for (int i = 0; i < mt->narms; i++)
        if (!uses(pol, mt->arms[i]))
            arm_unload(s, mt->arms[i]);
    json_decref(doc);
}

json_t *serve_traffic_status(serve *s, serve_model *m)
{
    serve_traffic *t = s->traffic;
    if (!t)
        return json_null();
    model_traffic *mt = &t->models[m - s->models];
    pthread_mutex_lock(&mt->mu);
    policy *pol = mt->pol;
    json_t *out = pol && pol->doc ? json_deep_copy(pol->doc) : NULL;
    serve_model *slots[MAX_ROUTES + 1] = {0};
    int n = pol ? pol->nroutes : 0;
    for (int i = 0; i < n; i++)
        slots[i] = pol->slot[i];
    slots[n] = pol ? pol->shadow : NULL;
    pthread_mutex_unlock(&mt->mu);
    if (!out)
        return json_null();
    json_object_del(out, "model");
    json_t *served = json_object();
    for (int i = 0; i <= n; i++) {
        serve_version *v = slots[i] ? serve_acquire(slots[i]) : NULL;
        if (slots[i])
            json_object_set_new(served, slots[i]->alias, v ? json_string(v->vstr) : json_null());
        serve_release(v);
    }
    json_object_set_new(out, "versions", served);
    return out;
}

/* ---- the request path ------------------------------------------------------------ */

void serve_traffic_route(serve *s, serve_model *m, const oip_infer_request *rq, serve_route *rt)
{
    serve_traffic *t = s->traffic;
    memset(rt, 0, sizeof *rt);
    if (!t)
        return;
    model_traffic *mt = &t->models[m - s->models];
    if (!atomic_load_explicit(&mt->active, memory_order_acquire))
        return;
    char buf[32];
    const char *key;
    size_t klen;
    pthread_mutex_lock(&mt->mu);
    policy *pol = mt->pol;
    if (!pol) {
        pthread_mutex_unlock(&mt->mu);
        return;
    }
    if (rq->version && *rq->version) {
        /* a version asked for by number: whichever alias serves it */
        serve_model *found = NULL;
        for (int i = 0; i < pol->nroutes + 1 && !found; i++) {
            serve_model *a = i < pol->nroutes ? pol->slot[i] : pol->shadow;
            if (!a || a == m)
                continue;
            serve_version *v = serve_acquire(a);
            if (v && strcmp(v->vstr, rq->version) == 0) {
                found = a;
                rt->v = v;
            } else {
                serve_release(v);
            }
        }
        pthread_mutex_unlock(&mt->mu);
        rt->slot = found;
        return;
    }
    int d = pol->sticky && sticky_key(pol, rq, buf, sizeof buf, &key, &klen) ? (int)(hash_key(key, klen) % 100)
                                                                               : (int)(draw64() % 100);
    serve_model *slot = m;
    for (int i = 0; i < pol->nroutes; i++)
        if (d < pol->upto[i]) {
            slot = pol->slot[i];
            break;
        }
    serve_model *shadow = pol->shadow;
    double fraction = pol->fraction;
    pthread_mutex_unlock(&mt->mu);

    rt->policy = 1;
    rt->v = serve_acquire(slot);
    if (!rt->v && slot != m) {
        slot = m; /* the alias has nothing loaded (yet): its share stays on the model's own alias */
        rt->v = serve_acquire(m);
    }
    rt->slot = rt->v ? slot : NULL;
    if (!rt->v)
        rt->policy = 0; /* nothing loaded at all: the caller answers as it always has */
    if (rt->v && shadow && shadow != slot && (fraction >= 1 || (double)(draw64() >> 11) * 0x1.0p-53 < fraction))
        rt->shadow = shadow;
}

/* A copy of rq the worker owns: inputs, names, data and bytes in one block. */
static job *job_new(serve_model *m, const serve_route *rt, const oip_infer_request *rq, const char *rid)
{
    size_t n = rq->ninputs, size = n * sizeof(oip_tensor);
    for (size_t i = 0; i < n; i++) {
        const oip_tensor *t = &rq->inputs[i];
        size += strlen(t->name ? t->name : "") + 1 + t->data_len + 16 + t->nbytes * sizeof(oip_bytes);
        for (size_t j = 0; j < t->nbytes; j++)
            size += t->bytes[j].len;
    }
    job *jb = calloc(1, sizeof *jb);
    char *blob = malloc(size ? size : 1);
    if (!jb || !blob) {
        free(jb);
        free(blob);
        return NULL;
    }
    oip_tensor *ts = (oip_tensor *)(void *)blob;
    char *p = blob + n * sizeof(oip_tensor);
    for (size_t i = 0; i < n; i++) {
        const oip_tensor *t = &rq->inputs[i];
        ts[i] = *t;
        ts[i].parameters = NULL;
        p += (8 - ((uintptr_t)p & 7)) & 7; /* oip_bytes and data aligned for their widest member */
        if (t->nbytes) {
            oip_bytes *b = (oip_bytes *)(void *)p;
            p += t->nbytes * sizeof(oip_bytes);
            for (size_t j = 0; j < t->nbytes; j++) {
                memcpy(p, t->bytes[j].p, t->bytes[j].len);
                b[j].p = (const uint8_t *)p;
                b[j].len = t->bytes[j].len;
                p += t->bytes[j].len;
            }
            ts[i].bytes = b;
        }
        p += (8 - ((uintptr_t)p & 7)) & 7;
        if (t->data_len) {
            memcpy(p, t->data, t->data_len);
            ts[i].data = p;
            p += t->data_len;
        }
        size_t nl = strlen(t->name ? t->name : "") + 1;
        memcpy(p, t->name ? t->name : "", nl);
        ts[i].name = p;
        p += nl;
    }
    jb->blob = blob;
    jb->m = m;
    jb->shadow = rt->shadow;
    jb->pslot = rt->slot;
    jb->pv = rt->v;
    atomic_fetch_add_explicit(&rt->v->refs, 1, memory_order_relaxed);
    jb->params = rq->parameters ? json_deep_copy(rq->parameters) : NULL;
    snprintf(jb->rid, sizeof jb->rid, "%s", rid);
    jb->rq = (oip_infer_request){.model = m->name, .id = jb->rid, .parameters = jb->params, .inputs = ts,
                                 .ninputs = n};
    return jb;
}

static void job_free(job *jb)
{
    if (!jb)
        return;
    json_decref(jb->params);
    serve_release(jb->pv);
    free(jb->blob);
    free(jb);
}

void serve_traffic_done(serve *s, serve_model *m, const serve_route *rt, const oip_infer_request *rq,
                        const char *rid, int64_t latency_us)
{
    serve_traffic *t = s->traffic;
    if (!t || !rt->policy)
        return;
    const char *lv[] = {m->name, rt->slot->alias, "primary"};
    qn_counter_add(t->requests, lv, 1);
    if (!rt->shadow)
        return;
    const char *dv[] = {m->name};
    job *jb = job_new(m, rt, rq, rid);
    if (!jb) {
        qn_counter_add(t->dropped, dv, 1);
        return;
    }
    jb->primary_us = latency_us;
    pthread_mutex_lock(&t->qmu);
    if (t->count == QUEUE_CAP || t->stopping) {
        pthread_mutex_unlock(&t->qmu);
        qn_counter_add(t->dropped, dv, 1);
        job_free(jb);
        return;
    }
    t->queue[(t->head + t->count++) % QUEUE_CAP] = jb;
    if (t->count == WAKE_AT)
        pthread_cond_signal(&t->qcv);
    pthread_mutex_unlock(&t->qmu);
}

static void run_shadow(serve *s, job *jb)
{
    serve_traffic *t = s->traffic;
    oip_infer_response rs;
    qn_err err;
    /* the primary side first, on the very version that answered the caller,
     * with the latency the caller saw (not this rerun's) */
    serve_logctx lp = {.alias = jb->pslot->alias, .role = "primary", .rid = jb->rid, .force = 1,
                       .latency_us = &jb->primary_us};
    if (serve_infer_on(s, jb->pslot, jb->pv, &jb->rq, &rs, &lp, &err) < 0)
        qn_log(QN_LOG_DEBUG, NULL, "logging a shadowed request's primary side failed", "{s:s, s:s}", "model",
               jb->m->name, "error", err.msg);
    oip_response_free(&rs);
    const char *ev[] = {jb->m->name, jb->shadow->alias, NULL};
    serve_version *v = serve_acquire(jb->shadow);
    if (!v) {
        ev[2] = "unavailable";
        qn_counter_add(t->shadow_errors, ev, 1);
        return;
    }
    serve_logctx lc = {.alias = jb->shadow->alias, .role = "shadow", .rid = jb->rid, .force = 1};
    int rc = serve_infer_on(s, jb->shadow, v, &jb->rq, &rs, &lc, &err);
    oip_response_free(&rs);
    serve_release(v);
    const char *lv[] = {jb->m->name, jb->shadow->alias, "shadow"};
    qn_counter_add(t->requests, lv, 1);
    if (rc < 0) {
        ev[2] = qn_code_name(rc);
        qn_counter_add(t->shadow_errors, ev, 1);
        qn_log(QN_LOG_DEBUG, NULL, "shadow request failed", "{s:s, s:s, s:s, s:s}", "model", jb->m->name,
               "alias", jb->shadow->alias, "request_id", jb->rid, "error", err.msg);
    }
}

static void *worker_main(void *arg)
{
    serve *s = arg;
    serve_traffic *t = s->traffic;
    /* Shadow work takes only CPU time that requests leave idle. */
    struct sched_param sp = {0};
    if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp) != 0)
        qn_log_warn(NULL, "cannot lower the shadow worker's priority", "{s:s}", "error", strerror(errno));
    pthread_mutex_lock(&t->qmu);
    for (;;) {
        if (!t->stopping && t->count == 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += TICK_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&t->qcv, &t->qmu, &ts);
            continue;
        }
        if (t->stopping)
            break;
        job *jb = t->queue[t->head];
        t->head = (t->head + 1) % QUEUE_CAP;
        t->count--;
        pthread_mutex_unlock(&t->qmu);
        run_shadow(s, jb);
        job_free(jb);
        pthread_mutex_lock(&t->qmu);
    }
    pthread_mutex_unlock(&t->qmu);
    return NULL;
}

int serve_traffic_start(serve *s, qn_err *err)
{
    serve_traffic *t = calloc(1, sizeof *t);
    if (!t)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < SERVE_MAX_MODELS; i++)
        pthread_mutex_init(&t->models[i].mu, NULL);
    pthread_mutex_init(&t->qmu, NULL);
    pthread_cond_init(&t->qcv, NULL);
    static const char *const req[] = {"model", "alias", "role", NULL};
    static const char *const mdl[] = {"model", NULL};
    static const char *const sherr[] = {"model", "alias", "reason", NULL};
    t->requests = qn_metrics_counter(s->metrics, "quern_traffic_requests_total",
                                     "Requests a traffic policy routed, by the alias that answered and its role "
                                     "(primary: the caller's answer; shadow: the copy run off the request path).",
                                     req);
    t->dropped = qn_metrics_counter(s->metrics, "quern_traffic_shadow_dropped_total",
                                    "Shadow requests dropped because the shadow queue was full.", mdl);
    t->shadow_errors = qn_metrics_counter(s->metrics, "quern_traffic_shadow_errors_total",
                                          "Shadow requests that failed (the caller was answered regardless).",
                                          sherr);
    s->traffic = t;
    if (pthread_create(&t->worker, NULL, worker_main, s) != 0) {
        s->traffic = NULL;
        free(t);
        return qn_err_set(err, QN_INTERNAL, "cannot start the shadow worker thread");
    }
    t->started = 1;
    return 0;
}

void serve_traffic_stop(serve *s)
{
    serve_traffic *t = s->traffic;
    if (!t)
        return;
    pthread_mutex_lock(&t->qmu);
    t->stopping = 1;
    pthread_cond_signal(&t->qcv);
    pthread_mutex_unlock(&t->qmu);
    if (t->started)
        pthread_join(t->worker, NULL);
    for (; t->count > 0; t->count--) {
        job_free(t->queue[t->head]);
        t->head = (t->head + 1) % QUEUE_CAP;
    }
    for (size_t i = 0; i < SERVE_MAX_MODELS; i++) {
        model_traffic *mt = &t->models[i];
        policy_free(mt->pol);
        for (int j = 0; j < mt->narms; j++)
            arm_free(mt->arms[j]);
        pthread_mutex_destroy(&mt->mu);
    }
    pthread_mutex_destroy(&t->qmu);
    pthread_cond_destroy(&t->qcv);
    free(t);
    s->traffic = NULL;
}
