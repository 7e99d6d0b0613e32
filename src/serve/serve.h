/*
 * serve.h - the modules of quern-serve and what they share (internal).
 *
 *   main.c     configuration, start/stop, the REST route table
 *   models.c   the model manager: one slot per configured model, each
 *              following a registry alias; versions are refcounted and
 *              swapped atomically; downloads into the on-disk cache, loads,
 *              smoke-tests, remembers the last good version
 *   backend.c  the oip_backend both protocol fronts call (infer, metadata,
 *              readiness) over the model manager and libquern-ml
 *   rest.c     the Open Inference Protocol over HTTP/JSON (and Triton's
 *              binary tensor extension) plus the /v1 recommendation routes
 *   explain.c  POST /v1/models/{m}/explain: contributions behind a prediction
 *   batch.c    optional dynamic batching per model
 *   predlog.c  sampled prediction logging to the bus, off the request path
 *   traffic.c  the model's traffic policy from the registry: weighted (or
 *              sticky) routes between aliases, and shadow traffic run off
 *              the request path by its own worker
 *   grpc_server.c, oip.c  the gRPC front and the protocol data model
 *   oip_json.c the JSON body of an infer request (a fast reader, jansson behind it)
 *
 * A request holds a reference to the version it runs on (serve_acquire /
 * serve_release) from the first byte of model work to the last byte of
 * output, so a swap never pulls a model from under it.
 */
#ifndef QUERN_SERVE_SERVE_H
#define QUERN_SERVE_SERVE_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/bus/bus.h"
#include "core/client.h"
#include "core/config.h"
#include "core/http.h"
#include "core/metrics.h"
#include "core/subscriber.h"
#include "core/trace.h"
#include "ml/model.h"
#include "serve/oip.h"

/* Slots are never freed while serve runs (a model whose alias goes away
 * keeps its slot), so the table only grows: append-only, published by
 * nmodels (see serve_model_add). */
#define SERVE_MAX_MODELS 1024

typedef struct serve_cfg {
    qn_common_cfg common;
    char *grpc_listen;
    char *models;           /* NAME[@ALIAS][,...] */
    char *instance;
    long long poll_ms;
    char *sample_rates;     /* MODEL:RATE[,...] */
    char *log_sample_rate;  /* default rate, text ("0.1") */
    long long log_queue;
    long long log_batch;
    char *batching;         /* MODEL:MAX_BATCH:MAX_DELAY_US[,...] */
    long long max_rows;
    long long xgb_threads;
} serve_cfg;

typedef struct serve_batcher serve_batcher;
typedef struct serve_predlog serve_predlog;
typedef struct serve_traffic serve_traffic;

/* One loaded version of a model. Immutable once published; freed when the
 * last reference goes (the slot's own reference is one of them). */
typedef struct serve_version {
    atomic_long refs;
    int64_t version;
    char vstr[24];          /* the version as the protocol names it: "3" */
    const char *vlist[1];   /* {vstr}: the metadata's versions list */
    qml_model *model;
    int is_als;
    int k;                  /* ALS: declared ranking cutoff */
    oip_tensor_meta *inputs;
    size_t ninputs;
    oip_tensor_meta *outputs;
    size_t noutputs;
    char platform[32];
    /* Tabular models whose inputs are all numbers also take them as one 2-D
     * tensor [N, ninputs] named SERVE_TENSOR_INPUT (backend.c). unnamed: the
     * columns are f0..f{n-1} (imported without names), so the metadata
     * advertises only the 2-D input (tensor_in). tensor_col: a column is
     * itself named SERVE_TENSOR_INPUT (it then keeps its column meaning). */
    int numeric;
    int unnamed;
    int tensor_col;
    oip_tensor_meta tensor_in;
} serve_version;

/* The name of the one 2-D input [N, F] (Triton FIL's name for it, so clients
 * written for Triton's FIL backend work unchanged). */
#define SERVE_TENSOR_INPUT "input__0"

typedef struct serve_model {
    char *name;
    char *alias;
    pthread_mutex_t mu;     /* guards cur (only to copy it and bump refs), and the status below */
    serve_version *cur;
    const char *state;      /* "loading", "ready", "unavailable" */
    int64_t target;         /* the version the alias names, as last seen; 0 unknown */
    int64_t refused;        /* the last version refused (not retried until the alias moves) */
    json_t *last_refusal;   /* {"version","reason","message","time"} or NULL */
    const char *source;     /* "registry" or "cache" (static) for the current version */
    double sample_rate;
    serve_batcher *batcher; /* NULL: batching off */
    /* The trace of the last promotion received and not yet followed (under
     * mu): the follower's next round for this model continues it. */
    qn_trace_ctx promo_trace;
    int has_promo_trace;
    /* Counts toward readiness: every --models entry; without --models, the
     * models promoted when serve started (or found in the cache). */
    int required;
    /* A traffic arm (traffic.c): another alias of a served model that its
     * traffic policy routes to or shadows. Not in the slot table, never the
     * last good version on disk. */
    int arm;
} serve_model;

typedef struct serve {
    serve_cfg *cfg;
    serve_model models[SERVE_MAX_MODELS];
    /* Slots in use. Request threads read it without a lock: a slot is fully
     * set up before the store that counts it (amu serialises the adders). */
    atomic_size_t nmodels;
    pthread_mutex_t amu;
    /* No --models: follow the production alias of every model the registry
     * lists, adding a slot when a model is first promoted. */
    int follow_all;
    /* follow_all: 1 once the registry's list was read (or the cache gave a
     * model), so readiness can be decided. */
    atomic_int synced;
    int listed;             /* follow_all: the registry's list was read once (follower only) */
    double default_rate;    /* the sample rate of slots added later */
    char *cache_dir;        /* <data>/cache */
    char instance[80];
    qn_client *registry;
    qn_bus *bus;
    qn_subscriber *sub;
    serve_predlog *predlog;
    serve_traffic *traffic;
    qn_metrics *metrics;
    qn_metric *m_requests, *m_latency, *m_info, *m_swaps, *m_refusals, *m_rows;
    /* the follower thread: loads and swaps versions */
    pthread_t follower;
    int follower_started;
    pthread_mutex_t fmu;
    pthread_cond_t fcv;
    int kick;
    int stopping;
    oip_backend backend;
} serve;

/* ---- models.c ----------------------------------------------------------- */

/* Parses --models into s->models (names checked, alias default production).
 * spec NULL: no list, follow the production alias of every model (follow_all).
 * 0 or QN_INVALID_ARGUMENT naming the entry at fault. */
int serve_models_parse(serve *s, const char *spec, qn_err *err);
/* The slot of name (following alias), added when missing. Thread-safe; NULL
 * when every slot is taken (logged). */
serve_model *serve_model_add(serve *s, const char *name, const char *alias);
/* Starts following: loads the cached last good versions, then the registry's,
 * on a background thread; subscribes to quern.model.promoted. */
int serve_models_start(serve *s, qn_err *err);
/* Stops the follower and the subscriber and frees every version. */
void serve_models_stop(serve *s);
serve_model *serve_model_find(serve *s, const char *name);
/* The served version with a reference taken, or NULL when none is loaded. */
serve_version *serve_acquire(serve_model *m);
void serve_release(serve_version *v);
/* 1 when every required model has a version loaded (without --models: once
 * the registry was read and the models promoted then are loaded or refused;
 * zero models promoted is ready). */
int serve_all_ready(serve *s);
/* {"model":{"version","alias","state","source","last_refusal"}} for status answers. */
json_t *serve_model_status(serve_model *m);
/* One follower round for slot m (a served model or a traffic arm): reads its
 * alias and loads and swaps in the version it names. Follower thread only. */
void serve_model_follow(serve *s, serve_model *m);

/* ---- backend.c ---------------------------------------------------------- */

void serve_backend_init(serve *s);
/* The model named model and its served version (when version is given, it
 * must be the one served), with a reference taken (*vo; serve_release it).
 * 0, or QN_NOT_FOUND (no such model or version) / QN_UNAVAILABLE (nothing
 * loaded yet) with err saying so. Thread-safe. */
int serve_lookup(serve *s, const char *model, const char *version, serve_model **mo,
                 serve_version **vo, qn_err *err);
/* How an answer is logged to the prediction log: alias and role ("primary",
 * "shadow") recorded with it when not NULL, rid the request id to log under
 * (NULL: the request's, or a fresh one), force: log it whatever the sample
 * rate says (the two sides of a shadowed request), off: not here (the
 * shadow worker logs a shadowed request's primary side). latency_us, the
 * caller's serving latency: with off, where the latency measured here (as
 * an unshadowed request's would be) is stored, so that the worker logs it
 * with the primary side; with force, the latency_us to log (NULL or < 0:
 * none, e.g. the shadow side, which no caller waited for). */
typedef struct serve_logctx {
    const char *alias;
    const char *role;
    const char *rid;
    int force;
    int off;
    int64_t *latency_us;
} serve_logctx;
/* Runs rq on version v of slot m (a served model or a traffic arm) into rs,
 * logging as lc says (NULL: sampled, no alias). Thread-safe. */
int serve_infer_on(serve *s, serve_model *m, serve_version *v, const oip_infer_request *rq,
                   oip_infer_response *rs, const serve_logctx *lc, qn_err *err);
/* Predicts rows of b with v (through the batcher when m has one). out has
 * b->n_rows * output width floats. Thread-safe. */
int serve_predict(serve_model *m, serve_version *v, const qml_input_batch *b, float *out,
                  qn_err *err);

/* A tabular request's features as libquern-ml's raw columns (b), read by
 * serve_rows_read for infer and explain alike. Owns cols and data; b's
 * columns also point into the request's tensors, so rq must outlive it. */
typedef struct serve_rows {
    qml_input_batch b;
    float *out;             /* room for b.n_rows * out_width floats */
    qml_input_col *cols;
    unsigned char *data;
} serve_rows;

/* Checks rq's inputs against v (every column once, or the one 2-D tensor;
 * datatypes, shapes, one row count, at most --max-rows rows) and converts
 * them into *r, with room for out_width floats per row. 0, or
 * QN_INVALID_ARGUMENT naming the input at fault / QN_RESOURCE_EXHAUSTED;
 * *r then holds nothing to free. Free with serve_rows_free. */
int serve_rows_read(serve *s, serve_version *v, const oip_infer_request *rq, size_t out_width,
                    serve_rows *r, qn_err *err);
void serve_rows_free(serve_rows *r);

/* ---- rest.c --------------------------------------------------------------- */

/* The request's JSON (and Triton's binary tensors) into pr, as infer reads
 * it; 0 or an error naming the input at fault. oip_json_req_free pr either way. */
struct oip_json_req;
int serve_read_infer(qn_req *req, struct oip_json_req *pr, qn_err *err);

extern const qn_route serve_routes[];
extern const size_t serve_nroutes;
#define SERVE_MAX_INFER_BODY (64ull * 1024 * 1024)

/* ---- explain.c -------------------------------------------------------------- */

/* POST /v1/models/{m}[/versions/{v}]/explain (DESIGN.md section 5). */
int serve_h_explain(qn_req *req, qn_res *res, void *ud);

/* ---- batch.c -------------------------------------------------------------- */

/* Parses --batching and attaches batchers to the named models. */
int serve_batching_setup(serve *s, const char *spec, qn_err *err);
void serve_batcher_free(serve_batcher *b);
int serve_batcher_predict(serve_batcher *b, serve_version *v, const qml_input_batch *in,
                          float *out, qn_err *err);

/* ---- predlog.c -------------------------------------------------------------- */

serve_predlog *serve_predlog_start(qn_bus *bus, qn_metrics *metrics, size_t queue, size_t batch,
                                   qn_err *err);
/* Flushes what is queued (bounded wait) and stops the thread. NULL is fine. */
void serve_predlog_stop(serve_predlog *p);
/* Queues one sampled prediction (features and prediction are stolen). Never
 * blocks: when the queue is full the sample is dropped and counted. */
void serve_predlog_add(serve_predlog *p, const char *model, const char *version,
                       const char *request_id, json_t *features, json_t *prediction);
/* serve_predlog_add with the alias that answered and its role ("primary",
 * "shadow"), each recorded with the prediction when not NULL, and the
 * request's serving latency in microseconds ("latency_us"; < 0: none). */
void serve_predlog_add_role(serve_predlog *p, const char *model, const char *version, const char *alias,
                            const char *role, const char *request_id, int64_t latency_us, json_t *features,
                            json_t *prediction);
/* 1 when this request should be sampled at rate. */
int serve_predlog_sample(double rate);

/* ---- traffic.c -------------------------------------------------------------- */

/* Where one request goes: the slot and version (a reference taken) that
 * answer it, the alias to name in the answer, and the shadow slot to run it
 * on too (NULL: none). */
typedef struct serve_route {
    serve_model *slot;
    serve_version *v;
    serve_model *shadow;
    int policy;             /* 1: a traffic policy chose it (log alias and role) */
} serve_route;

/* Starts the shadow worker and the metrics. 0 or a negative code. */
int serve_traffic_start(serve *s, qn_err *err);
/* Stops the worker (queued shadow requests are dropped) and frees the arms.
 * Call after the follower stopped and before the slots are freed. */
void serve_traffic_stop(serve *s);
/* Follower thread: reads m's policy from the registry, follows the aliases
 * it names (loading their versions) and swaps it in. A registry that cannot
 * be read keeps the policy in force. */
void serve_traffic_follow(serve *s, serve_model *m);
/* Routes rq for m. rq naming a version: the arm serving it, if any. Else
 * by m's policy: weighted, or by the hash of the sticky key (the "user"
 * parameter or input, or the header), falling back to m when the chosen
 * alias has no version loaded. rt->slot NULL: no policy applies (serve m as
 * always). Thread-safe, never blocks on the registry. */
void serve_traffic_route(serve *s, serve_model *m, const oip_infer_request *rq, serve_route *rt);
/* The policy m follows as the registry gave it, plus "versions": {alias:
 * the version loaded or null}; JSON null when none (all to m's alias). */
json_t *serve_traffic_status(serve *s, serve_model *m);
/* Counts one answered request by rt (when a policy chose it) and queues the
 * shadow run when rt has one: a copy of rq (and a reference to rt->v), which
 * the worker runs on rt->v again to log the primary side (with latency_us,
 * the caller's serving latency measured on the request path; < 0: none) and
 * then on the shadow, both logged under rid; never blocks (a full queue
 * drops and counts, and then neither side is logged). */
void serve_traffic_done(serve *s, serve_model *m, const serve_route *rt, const oip_infer_request *rq,
                        const char *rid, int64_t latency_us);

#endif
