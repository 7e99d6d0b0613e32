/*
 * grpc_server.c - the gRPC front of quern-serve (see grpc_server.h for the
 * behaviour on the wire).
 *
 * Built on gRPC core's C API, which has no handler callbacks: the server
 * "requests" calls, and each arriving call is an event on a completion
 * queue. One queue is polled by SERVE_GRPC_THREADS workers. Every method is
 * registered (so its first message is read for us) and keeps a few
 * outstanding requests; when a call arrives the worker that sees it posts a
 * fresh request for the same method, then answers the call synchronously:
 * unpack the protobuf (protobuf-c), translate to oip.h, ask the backend,
 * translate back, pack, and start one batch that sends metadata, message and
 * status. That batch's completion (seen by any worker) frees the call.
 * Calls to methods we do not serve arrive through the generic request and
 * answer UNIMPLEMENTED, so they never wait in gRPC's queue until their
 * deadline.
 *
 * Each in-flight call is an `rpc` that owns everything it needs; the server
 * counts them (live) so shutdown can wait until none is left before it shuts
 * the queue and joins the workers.
 *
 * gRPC core is opened (grpc_lib.h) and started only when the first client
 * connects: until then serve holds the port itself (grpc_listen.h), and one
 * thread waits for a connection. The first one starts gRPC core (server,
 * queue, workers) and is handed to it with grpc_server_add_channel_from_fd,
 * as is every later one; a client sees the same server either way.
 *
 * Memory per ModelInfer call: the unpacked request (protobuf-c, malloc) is
 * the input tensors' storage (raw bytes and fixed-width typed arrays are used
 * in place); conversions (narrow ints, BOOL, BYTES lists, response
 * structures) go to one arena freed when the reply is packed.
 */
#include "serve/grpc_server.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/json.h"
#include "core/log.h"
#include "core/otel.h"
#include "core/trace.h"
#include "core/utf8.h"
#include "serve/grpc_lib.h"
#include "serve/grpc_listen.h"
#include "grpc_service.pb-c.h"
#include "health.pb-c.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the raw tensor layout is little-endian; this file assumes a little-endian host"
#endif

/* Who may call a method when a token is set (REST's rules, core/http.h):
 * probes are open, reads need the token under --auth-reads, the rest always. */
typedef enum { AUTH_OPEN, AUTH_READ, AUTH_ALWAYS } auth_class;

/* XX(enum suffix, full method path, outstanding requests, auth class) */
#define METHOD_MAP(XX)                                                               \
    XX(SERVER_LIVE, "/inference.GRPCInferenceService/ServerLive", 2, AUTH_OPEN)      \
    XX(SERVER_READY, "/inference.GRPCInferenceService/ServerReady", 2, AUTH_OPEN)    \
    XX(MODEL_READY, "/inference.GRPCInferenceService/ModelReady", 2, AUTH_READ)      \
    XX(SERVER_META, "/inference.GRPCInferenceService/ServerMetadata", 2, AUTH_READ)  \
    XX(MODEL_META, "/inference.GRPCInferenceService/ModelMetadata", 2, AUTH_READ)    \
    XX(MODEL_INFER, "/inference.GRPCInferenceService/ModelInfer", 8, AUTH_ALWAYS)    \
    XX(HEALTH_CHECK, "/grpc.health.v1.Health/Check", 2, AUTH_OPEN)

enum {
#define XX(e, path, n, a) M_##e,
    METHOD_MAP(XX)
#undef XX
    M_COUNT,
    M_GENERIC = M_COUNT, /* any other method: answered UNIMPLEMENTED */
};

static const struct {
    const char *path;
    int outstanding;
    auth_class auth;
} methods[] = {
#define XX(e, p, n, a) [M_##e] = {p, n, a},
    METHOD_MAP(XX)
#undef XX
};

#define GENERIC_OUTSTANDING 2
#define TRACEPARENT_MAX 256

struct serve_grpc {
    grpc_server *server;        /* NULL until the first client connects */
    grpc_completion_queue *cq;
    const oip_backend *be;
    char *token;        /* NULL: no auth */
    size_t token_len;
    int auth_reads;
    void *method_tags[M_COUNT];
    serve_listener *lis;              /* the port, accepted by serve itself */
    grpc_server_credentials *creds;   /* insecure, for each connection handed over */
    int core_failed;                  /* gRPC core could not start: connections are closed */
    int port;
    pthread_t threads[SERVE_GRPC_THREADS];
    int nthreads;
    atomic_int stopping;
    int shutdown_tag; /* its address is the tag of grpc_server_shutdown_and_notify */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int shutdown_done;  /* under mu */
    long live;          /* rpcs allocated and not yet freed, under mu */
    qn_metric *m_requests, *m_latency, *m_handled;
};

typedef enum { RPC_REQUESTED, RPC_SENDING } rpc_phase;

/* One call, from the request we post to the completion of our reply. */
typedef struct rpc {
    serve_grpc *g;
    int method;
    rpc_phase phase;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details; /* generic calls only */
    grpc_byte_buffer *reply;
    grpc_slice status_details;
    int has_status_details;
    int cancelled;
    /* Tracing on: the SERVER span's traceparent, which the backend sees. */
    char span_tp[QN_TRACEPARENT_LEN + 1];
    /* ModelInfer: the initial metadata sent (which version and alias
     * answered); the values are owned here until the batch completes. */
    grpc_metadata send_md[2];
    size_t n_send_md;
} rpc;

/* What a method handler produces besides the reply. */
typedef struct call_out {
    grpc_byte_buffer *reply;
    /* ModelInfer only: labels for the inference metrics (NULL: not counted). */
    char *model;
    char *version;
    /* ModelInfer only: served, version names the version chosen for the
     * call (it answered, or failed after it was chosen); alias the alias
     * that served it (NULL: unknown). */
    int served;
    char *alias;
} call_out;

/* ------------------------------------------------------------------ */
/* rpc lifecycle                                                        */

static void live_add(serve_grpc *g, long d)
{
    pthread_mutex_lock(&g->mu);
    g->live += d;
    if (g->live == 0)
        pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void rpc_free(rpc *r)
{
    serve_grpc *g = r->g;
    if (r->call)
        grpc_call_unref(r->call);
    grpc_metadata_array_destroy(&r->md);
    if (r->method == M_GENERIC)
        grpc_call_details_destroy(&r->details);
    if (r->payload)
        grpc_byte_buffer_destroy(r->payload);
    if (r->reply)
        grpc_byte_buffer_destroy(r->reply);
    if (r->has_status_details)
        grpc_slice_unref(r->status_details);
    for (size_t i = 0; i < r->n_send_md; i++)
        grpc_slice_unref(r->send_md[i].value);
    free(r);
    live_add(g, -1);
}

/* Posts one request for the next call of a method. Failure is only possible
 * while shutting down (the server then fails the tag) or out of memory, when
 * the method keeps its other outstanding requests. */
static void request_call(serve_grpc *g, int method)
{
    if (atomic_load(&g->stopping))
        return;
    rpc *r = calloc(1, sizeof *r);
    if (!r) {
        qn_log_error(NULL, "grpc: out of memory posting a call request", NULL);
        return;
    }
    r->g = g;
    r->method = method;
    r->phase = RPC_REQUESTED;
    grpc_metadata_array_init(&r->md);
    live_add(g, 1);
    grpc_call_error e;
    if (method == M_GENERIC) {
        grpc_call_details_init(&r->details);
        e = grpc_server_request_call(g->server, &r->call, &r->details, &r->md, g->cq, g->cq, r);
    } else {
        e = grpc_server_request_registered_call(g->server, g->method_tags[method], &r->call,
                                                &r->deadline, &r->md, &r->payload, g->cq, g->cq,
                                                r);
    }
    if (e != GRPC_CALL_OK) {
        qn_log_error(NULL, "grpc: cannot request a call", "{s:i}", "grpc_call_error", (int)e);
        rpc_free(r);
    }
}

/* ------------------------------------------------------------------ */
/* helpers                                                              */

static int pack_reply(const ProtobufCMessage *msg, call_out *out, qn_err *err)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (n > SERVE_GRPC_MAX_MESSAGE)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED,
                          "the response is %zu bytes, over the %d-byte message limit", n,
                          SERVE_GRPC_MAX_MESSAGE);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    out->reply = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return 0;
}

/* Backends return a negative qn_code; anything else is a bug we report as INTERNAL. */
static int backend_fail(int rc, qn_err *err, const char *what)
{
    if (rc >= 0 || rc < QN_UNAUTHENTICATED)
        return qn_err_set(err, QN_INTERNAL, "%s: backend returned %d", what, rc);
    if (err->code != rc)
        err->code = rc;
    if (!err->msg[0])
        qn_err_set(err, rc, "%s: %s", what, qn_code_name(rc));
    return rc;
}

static char *fmt_shape(char *buf, size_t n, const int64_t *shape, size_t ndim)
{
    size_t k = 0;
    buf[0] = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (size_t i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
    return buf;
}

/* Equal in time that depends only on the wanted token's length: every byte
 * of it is visited whatever the given one holds (as core/http.c does). */
static int token_equal(const uint8_t *given, size_t glen, const char *want, size_t wlen)
{
    unsigned diff = (unsigned)(glen != wlen);
    for (size_t i = 0; i < wlen; i++) {
        unsigned char c = i < glen ? given[i] : 0;
        diff |= (unsigned)(c ^ (unsigned char)want[i]);
    }
    return diff == 0;
}

/* 0 when the call may go ahead, else QN_UNAUTHENTICATED with err filled. */
static int check_auth(const serve_grpc *g, const rpc *r, qn_err *err)
{
    auth_class need = r->method == M_GENERIC ? AUTH_OPEN : methods[r->method].auth;
    if (!g->token || need == AUTH_OPEN || (need == AUTH_READ && !g->auth_reads))
        return 0;
    const grpc_slice *v = NULL;
    for (size_t i = 0; i < r->md.count && !v; i++)
        if (grpc_slice_str_cmp(r->md.metadata[i].key, "authorization") == 0)
            v = &r->md.metadata[i].value;
    const uint8_t *p = v ? GRPC_SLICE_START_PTR(*v) : NULL;
    size_t n = v ? GRPC_SLICE_LENGTH(*v) : 0;
    if (!v || n < 7 || strncasecmp((const char *)p, "Bearer ", 7) != 0)
        return qn_err_set(err, QN_UNAUTHENTICATED,
                          "this call needs an `authorization: Bearer <token>` metadata entry");
    p += 7;
    n -= 7;
    while (n > 0 && *p == ' ')
        p++, n--;
    if (!token_equal(p, n, g->token, g->token_len))
        return qn_err_set(err, QN_UNAUTHENTICATED, "the bearer token is not valid");
    return 0;
}

/* A well-formed traceparent from the call's metadata into buf, or NULL. */
static const char *find_traceparent(const grpc_metadata_array *md, char buf[TRACEPARENT_MAX])
{
    for (size_t i = 0; i < md->count; i++) {
        if (grpc_slice_str_cmp(md->metadata[i].key, "traceparent") != 0)
            continue;
        size_t len = GRPC_SLICE_LENGTH(md->metadata[i].value);
        if (len == 0 || len >= TRACEPARENT_MAX)
            return NULL;
        memcpy(buf, GRPC_SLICE_START_PTR(md->metadata[i].value), len);
        buf[len] = 0;
        qn_trace_ctx ctx;
        return qn_traceparent_parse(buf, &ctx) == 0 ? buf : NULL;
    }
    return NULL;
}

/* protobuf-c does not check that string fields are UTF-8 (proto3 says they
 * are): INVALID_ARGUMENT naming the field when s is not, quoting it escaped. */
static int check_text(const char *field, const char *s, qn_err *err)
{
    size_t n = s ? strlen(s) : 0;
    if (!s || qn_utf8_valid(s, n))
        return 0;
    char esc[160];
    qn_utf8_escape(esc, sizeof esc, s, n);
    return qn_err_set(err, QN_INVALID_ARGUMENT, "%s \"%s\" is not valid UTF-8", field, esc);
}

/* Decoding can multiply a message's size (a packed bool is 1 byte on the
 * wire and 4 in memory, an empty bytes element 2 and 16), so ModelInfer
 * requests are unpacked through an allocator with a budget: past it
 * protobuf-c fails cleanly and the call gets RESOURCE_EXHAUSTED. */
#define DECODE_BUDGET ((size_t)4 * SERVE_GRPC_MAX_MESSAGE)

typedef struct budget_alloc {
    ProtobufCAllocator base;
    size_t used;
    int exhausted;  /* past the budget: the message's fault */
    int oom;        /* malloc failed: the server's */
} budget_alloc;

static void *budget_malloc(void *ud, size_t n)
{
    budget_alloc *b = ud;
    if (n > DECODE_BUDGET - b->used) {
        b->exhausted = 1;
        return NULL;
    }
    void *p = malloc(n ? n : 1);
    if (p)
        b->used += n;
    else
        b->oom = 1;
    return p;
}

static void budget_free(void *ud, void *p)
{
    free(p);
}

static void budget_init(budget_alloc *b)
{
    memset(b, 0, sizeof *b);
    b->base.alloc = budget_malloc;
    b->base.free = budget_free;
    b->base.allocator_data = b;
}

/* ------------------------------------------------------------------ */
/* parameters: protobuf map <-> JSON object                            */

static int param_to_json(const char *key, const Inference__InferParameter *p, json_t *obj,
                         const char *where, qn_err *err)
{
    json_t *v = NULL;
    if (!key)
        key = "";
    int rc = check_text("parameter key", key, err);
    if (rc < 0)
        return rc;
    if (!p)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s parameter \"%s\": no value", where, key);
    switch (p->parameter_choice_case) {
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM:
        v = json_boolean(p->bool_param);
        break;
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM:
        v = json_integer(p->int64_param);
        break;
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM:
        if (!p->string_param || !qn_utf8_valid(p->string_param, strlen(p->string_param)))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "%s parameter \"%s\": string_param is not UTF-8", where, key);
        v = json_string(p->string_param);
        break;
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_DOUBLE_PARAM:
        v = json_real(p->double_param);
        break;
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM:
        if (p->uint64_param > INT64_MAX)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "%s parameter \"%s\": uint64_param %llu is over the int64 range",
                              where, key, (unsigned long long)p->uint64_param);
        v = json_integer((json_int_t)p->uint64_param);
        break;
    default:
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s parameter \"%s\": no value set", where,
                          key);
    }
    /* The key and the text are valid UTF-8 (checked above): a failure here
     * is memory. */
    if (!v || json_object_set_new(obj, key, v) < 0)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "%s parameter \"%s\": out of memory",
                          where, key);
    return 0;
}

/* Every map<string, InferParameter> entry type has the same two fields, so
 * one macro converts any of them; rc gets 0 or a negative qn_code. */
#define PARAMS_TO_JSON(rc, entries, n, out, where, err)                              \
    do {                                                                             \
        (rc) = 0;                                                                    \
        *(out) = NULL;                                                               \
        if ((n) == 0)                                                                \
            break;                                                                   \
        if (!(*(out) = json_object())) {                                             \
            (rc) = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");          \
            break;                                                                   \
        }                                                                            \
        for (size_t i_ = 0; (rc) == 0 && i_ < (n); i_++)                             \
            (rc) = param_to_json((entries)[i_]->key, (entries)[i_]->value, *(out),   \
                                 where, err);                                        \
    } while (0)

/* JSON object -> response parameter entries in arena a. Values that are not
 * scalars travel as their compact JSON text in string_param. */
static int json_to_params(json_t *obj, qn_arena *a, Inference__ModelInferResponse__ParametersEntry ***out,
                          size_t *n, qn_err *err)
{
    *out = NULL;
    *n = 0;
    if (!obj || !json_is_object(obj) || json_object_size(obj) == 0)
        return 0;
    size_t cap = json_object_size(obj);
    Inference__ModelInferResponse__ParametersEntry **es = qn_arena_calloc(a, cap, sizeof *es);
    if (!es)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    const char *key;
    json_t *v;
    size_t k = 0;
    json_object_foreach(obj, key, v) {
        Inference__ModelInferResponse__ParametersEntry *e = qn_arena_alloc(a, sizeof *e);
        Inference__InferParameter *p = qn_arena_alloc(a, sizeof *p);
        if (!e || !p)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        inference__model_infer_response__parameters_entry__init(e);
        inference__infer_parameter__init(p);
        e->key = (char *)key;
        e->value = p;
        if (json_is_boolean(v)) {
            p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM;
            p->bool_param = json_is_true(v);
        } else if (json_is_integer(v)) {
            p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
            p->int64_param = json_integer_value(v);
        } else if (json_is_real(v)) {
            p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_DOUBLE_PARAM;
            p->double_param = json_real_value(v);
        } else if (json_is_string(v)) {
            p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
            p->string_param = (char *)json_string_value(v);
        } else {
            char *s = qn_json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            char *copy = s ? qn_arena_strdup(a, s) : NULL;
            free(s);
            if (!copy)
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
            p->string_param = copy;
        }
        es[k++] = e;
    }
    *out = es;
    *n = k;
    return 0;
}

/* ------------------------------------------------------------------ */
/* ModelInfer: request -> oip                                           */

static int contents_empty(const Inference__InferTensorContents *c)
{
    return !c || (c->n_bool_contents | c->n_int_contents | c->n_int64_contents |
                  c->n_uint_contents | c->n_uint64_contents | c->n_fp32_contents |
                  c->n_fp64_contents | c->n_bytes_contents) == 0;
}

/* raw BYTES: each element a 4-byte little-endian length, then its bytes. */
static int parse_raw_bytes(const char *name, const ProtobufCBinaryData *raw, int64_t nelem,
                           qn_arena *a, oip_tensor *t, qn_err *err)
{
    if ((uint64_t)nelem > raw->len / 4)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input %s: raw_input_contents holds %zu bytes, too few for %lld BYTES "
                          "elements (each needs a 4-byte length)",
                          name, raw->len, (long long)nelem);
    oip_bytes *els = qn_arena_calloc(a, nelem ? (size_t)nelem : 1, sizeof *els);
    if (!els)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    size_t off = 0;
    for (int64_t i = 0; i < nelem; i++) {
        if (raw->len - off < 4)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input %s: raw_input_contents ends inside the length of element %lld",
                              name, (long long)i);
        const uint8_t *p = raw->data + off;
        uint32_t len = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                       (uint32_t)p[3] << 24;
        off += 4;
        if (len > raw->len - off)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input %s: element %lld claims %u bytes, only %zu remain in "
                              "raw_input_contents",
                              name, (long long)i, len, raw->len - off);
        els[i].p = raw->data + off;
        els[i].len = len;
        off += len;
    }
    if (off != raw->len)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input %s: raw_input_contents has %zu bytes after the %lld elements "
                          "its shape holds",
                          name, raw->len - off, (long long)nelem);
    t->bytes = els;
    t->nbytes = (size_t)nelem;
    return 0;
}

/* Which typed field each datatype uses. */
static const char *contents_field(oip_datatype dt)
{
    switch (dt) {
    case OIP_BOOL: return "bool_contents";
    case OIP_INT8: case OIP_INT16: case OIP_INT32: return "int_contents";
    case OIP_INT64: return "int64_contents";
    case OIP_UINT8: case OIP_UINT16: case OIP_UINT32: return "uint_contents";
    case OIP_UINT64: return "uint64_contents";
    case OIP_FP32: return "fp32_contents";
    case OIP_FP64: return "fp64_contents";
    case OIP_BYTES: return "bytes_contents";
    default: return NULL;
    }
}

/* Typed contents: check that only the datatype's field is used, that it
 * holds nelem values, and produce the little-endian raw layout (in place for
 * widths that match, converted into the arena otherwise). */
static int convert_typed(const char *name, const Inference__InferTensorContents *c,
                         int64_t nelem, qn_arena *a, oip_tensor *t, qn_err *err)
{
    static const Inference__InferTensorContents empty = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
    if (!c)
        c = &empty;
    oip_datatype dt = t->datatype;
    const char *want = contents_field(dt);
    if (!want)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input %s: %s data can only be sent in raw_input_contents", name,
                          oip_datatype_name(dt));
    struct {
        const char *field;
        size_t n;
    } fields[] = {
        {"bool_contents", c->n_bool_contents},     {"int_contents", c->n_int_contents},
        {"int64_contents", c->n_int64_contents},   {"uint_contents", c->n_uint_contents},
        {"uint64_contents", c->n_uint64_contents}, {"fp32_contents", c->n_fp32_contents},
        {"fp64_contents", c->n_fp64_contents},     {"bytes_contents", c->n_bytes_contents},
    };
    size_t have = 0;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (strcmp(fields[i].field, want) == 0) {
            have = fields[i].n;
        } else if (fields[i].n > 0) {
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input %s: datatype %s takes its data in %s, got %zu values in %s",
                              name, oip_datatype_name(dt), want, fields[i].n, fields[i].field);
        }
    }
    if ((uint64_t)nelem != have) {
        char sb[160];
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input %s: shape %s holds %lld elements but %s has %zu", name,
                          fmt_shape(sb, sizeof sb, t->shape, (size_t)t->ndim), (long long)nelem,
                          want, have);
    }
    size_t n = have;
    size_t sz = oip_datatype_size(dt);
    if (dt == OIP_BYTES) {
        oip_bytes *els = qn_arena_calloc(a, n ? n : 1, sizeof *els);
        if (!els)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        for (size_t i = 0; i < n; i++) {
            els[i].p = c->bytes_contents[i].data;
            els[i].len = c->bytes_contents[i].len;
        }
        t->bytes = els;
        t->nbytes = n;
        return 0;
    }
    t->data_len = n * sz;
    switch (dt) {
    case OIP_INT32: t->data = c->int_contents; return 0;
    case OIP_INT64: t->data = c->int64_contents; return 0;
    case OIP_UINT32: t->data = c->uint_contents; return 0;
    case OIP_UINT64: t->data = c->uint64_contents; return 0;
    case OIP_FP32: t->data = c->fp32_contents; return 0;
    case OIP_FP64: t->data = c->fp64_contents; return 0;
    default: break;
    }
    uint8_t *buf = qn_arena_alloc(a, t->data_len ? t->data_len : 1);
    if (!buf)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        int64_t lo, hi;
        switch (dt) {
        case OIP_BOOL: v = c->bool_contents[i] ? 1 : 0; lo = 0; hi = 1; break;
        case OIP_INT8: v = c->int_contents[i]; lo = INT8_MIN; hi = INT8_MAX; break;
        case OIP_INT16: v = c->int_contents[i]; lo = INT16_MIN; hi = INT16_MAX; break;
        case OIP_UINT8: v = c->uint_contents[i]; lo = 0; hi = UINT8_MAX; break;
        case OIP_UINT16: v = c->uint_contents[i]; lo = 0; hi = UINT16_MAX; break;
        default: return qn_err_set(err, QN_INTERNAL, "input %s: unhandled datatype", name);
        }
        if (v < lo || v > hi)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input %s: element %zu is %lld, out of the %s range", name, i,
                              (long long)v, oip_datatype_name(dt));
        if (sz == 1) {
            buf[i] = (uint8_t)v;
        } else {
            uint16_t u = (uint16_t)v;
            memcpy(buf + 2 * i, &u, 2);
        }
    }
    t->data = buf;
    return 0;
}

static int convert_input(const Inference__ModelInferRequest__InferInputTensor *in, size_t idx,
                         const ProtobufCBinaryData *raw, qn_arena *a, oip_tensor *t, qn_err *err)
{
    const char *name = in->name;
    if (!name || !*name)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "inputs[%zu]: name is required", idx);
    char field[48];
    snprintf(field, sizeof field, "inputs[%zu].name", idx);
    int rc = check_text(field, name, err);
    if (rc < 0)
        return rc;
    t->name = name;
    t->datatype = oip_datatype_parse(in->datatype);
    if (t->datatype == OIP_INVALID)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "input %s: unknown datatype \"%s\"", name,
                          in->datatype ? in->datatype : "");
    if (in->n_shape > OIP_MAX_DIMS)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input %s: shape has %zu dimensions, at most %d are supported", name,
                          in->n_shape, OIP_MAX_DIMS);
    t->ndim = (int)in->n_shape;
    for (size_t i = 0; i < in->n_shape; i++) {
        if (in->shape[i] < 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input %s: shape[%zu] is %lld, dimensions must be >= 0", name, i,
                              (long long)in->shape[i]);
        t->shape[i] = in->shape[i];
    }
    int64_t nelem = oip_tensor_nelem(t);
    if (nelem < 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "input %s: the shape's product overflows",
                          name);
    PARAMS_TO_JSON(rc, in->parameters, in->n_parameters, &t->parameters, "input", err);
    if (rc < 0)
        return qn_err_wrap(err, "input %s", name);
    if (!raw)
        return convert_typed(name, in->contents, nelem, a, t, err);

    if (!contents_empty(in->contents))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input %s: has typed contents while the request uses "
                          "raw_input_contents (use one or the other)",
                          name);
    if (t->datatype == OIP_BYTES)
        return parse_raw_bytes(name, raw, nelem, a, t, err);
    size_t sz = oip_datatype_size(t->datatype);
    if (raw->len % sz != 0 || (uint64_t)nelem != raw->len / sz) {
        char sb[160];
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "input %s: raw_input_contents[%zu] has %zu bytes but shape %s of %s "
                          "needs %llu",
                          name, idx, raw->len, fmt_shape(sb, sizeof sb, t->shape, in->n_shape),
                          oip_datatype_name(t->datatype),
                          (unsigned long long)((uint64_t)nelem * sz));
    }
    /* protobuf-c copies bytes fields into their own malloc'd buffers, so
     * the data is aligned for any element type; check rather than trust. */
    if (((uintptr_t)raw->data % 8) != 0 && raw->len > 0) {
        void *copy = qn_arena_alloc(a, raw->len);
        if (!copy)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        memcpy(copy, raw->data, raw->len);
        t->data = copy;
    } else {
        t->data = raw->data;
    }
    t->data_len = raw->len;
    return 0;
}

/* ------------------------------------------------------------------ */
/* ModelInfer: oip -> response                                          */

static int output_check(const oip_output *o, qn_err *err)
{
    oip_tensor tmp = {.ndim = o->ndim};
    if (o->ndim < 0 || o->ndim > OIP_MAX_DIMS)
        return qn_err_set(err, QN_INTERNAL, "output %s: backend gave %d dimensions",
                          o->name ? o->name : "?", o->ndim);
    memcpy(tmp.shape, o->shape, sizeof tmp.shape);
    int64_t nelem = oip_tensor_nelem(&tmp);
    size_t sz = oip_datatype_size(o->datatype);
    if (!o->name || o->datatype == OIP_INVALID || nelem < 0)
        return qn_err_set(err, QN_INTERNAL, "output %s: backend gave a malformed tensor",
                          o->name ? o->name : "?");
    if (o->datatype == OIP_BYTES ? (uint64_t)nelem != o->nbytes
                                 : (uint64_t)nelem * sz != o->data_len)
        return qn_err_set(err, QN_INTERNAL,
                          "output %s: backend's data does not match its shape", o->name);
    return 0;
}

static int raw_output(const oip_output *o, qn_arena *a, ProtobufCBinaryData *raw, qn_err *err)
{
    if (o->datatype != OIP_BYTES) {
        raw->data = o->data;
        raw->len = o->data_len;
        return 0;
    }
    size_t total = 0;
    for (size_t i = 0; i < o->nbytes; i++) {
        if (o->bytes[i].len > UINT32_MAX)
            return qn_err_set(err, QN_INTERNAL, "output %s: element %zu over 4 GiB", o->name, i);
        total += 4 + o->bytes[i].len;
        if (total > SERVE_GRPC_MAX_MESSAGE)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED,
                              "output %s: over the %d-byte message limit", o->name,
                              SERVE_GRPC_MAX_MESSAGE);
    }
    uint8_t *buf = qn_arena_alloc(a, total ? total : 1);
    if (!buf)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    size_t off = 0;
    for (size_t i = 0; i < o->nbytes; i++) {
        uint32_t len = (uint32_t)o->bytes[i].len;
        buf[off] = (uint8_t)len;
        buf[off + 1] = (uint8_t)(len >> 8);
        buf[off + 2] = (uint8_t)(len >> 16);
        buf[off + 3] = (uint8_t)(len >> 24);
        if (len)
            memcpy(buf + off + 4, o->bytes[i].p, len);
        off += 4 + len;
    }
    raw->data = buf;
    raw->len = total;
    return 0;
}

static int typed_output(const oip_output *o, qn_arena *a, Inference__InferTensorContents *c,
                        qn_err *err)
{
    size_t sz = oip_datatype_size(o->datatype);
    size_t n = o->datatype == OIP_BYTES ? o->nbytes : o->data_len / sz;
    const uint8_t *d = o->data;
    switch (o->datatype) {
    case OIP_INT32: c->n_int_contents = n; c->int_contents = o->data; return 0;
    case OIP_INT64: c->n_int64_contents = n; c->int64_contents = o->data; return 0;
    case OIP_UINT32: c->n_uint_contents = n; c->uint_contents = o->data; return 0;
    case OIP_UINT64: c->n_uint64_contents = n; c->uint64_contents = o->data; return 0;
    case OIP_FP32: c->n_fp32_contents = n; c->fp32_contents = o->data; return 0;
    case OIP_FP64: c->n_fp64_contents = n; c->fp64_contents = o->data; return 0;
    case OIP_BYTES: {
        ProtobufCBinaryData *bs = qn_arena_calloc(a, n ? n : 1, sizeof *bs);
        if (!bs)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        for (size_t i = 0; i < n; i++) {
            bs[i].data = (uint8_t *)o->bytes[i].p;
            bs[i].len = o->bytes[i].len;
        }
        c->n_bytes_contents = n;
        c->bytes_contents = bs;
        return 0;
    }
    case OIP_BOOL: {
        protobuf_c_boolean *bs = qn_arena_calloc(a, n ? n : 1, sizeof *bs);
        if (!bs)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        for (size_t i = 0; i < n; i++)
            bs[i] = d[i] != 0;
        c->n_bool_contents = n;
        c->bool_contents = bs;
        return 0;
    }
    case OIP_INT8:
    case OIP_INT16: {
        int32_t *vs = qn_arena_calloc(a, n ? n : 1, sizeof *vs);
        if (!vs)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        for (size_t i = 0; i < n; i++) {
            int16_t v16 = 0;
            if (sz == 2)
                memcpy(&v16, d + 2 * i, 2);
            vs[i] = sz == 1 ? (int8_t)d[i] : v16;
        }
        c->n_int_contents = n;
        c->int_contents = vs;
        return 0;
    }
    case OIP_UINT8:
    case OIP_UINT16: {
        uint32_t *vs = qn_arena_calloc(a, n ? n : 1, sizeof *vs);
        if (!vs)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        for (size_t i = 0; i < n; i++) {
            uint16_t v16 = 0;
            if (sz == 2)
                memcpy(&v16, d + 2 * i, 2);
            vs[i] = sz == 1 ? d[i] : v16;
        }
        c->n_uint_contents = n;
        c->uint_contents = vs;
        return 0;
    }
    default:
        return qn_err_set(err, QN_INTERNAL, "output %s: %s has no typed representation",
                          o->name, oip_datatype_name(o->datatype));
    }
}

static int build_infer_reply(const Inference__ModelInferRequest *rq, const oip_infer_response *rs,
                             int raw_in, qn_arena *a, serve__grpc_infer_out *out, qn_err *err)
{
    Inference__ModelInferResponse resp = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    resp.model_name = rs->model ? rs->model : rq->model_name;
    resp.model_version = rs->version ? rs->version : rq->model_version;
    resp.id = rs->id ? rs->id : rq->id;
    int rc = json_to_params(rs->parameters, a, &resp.parameters, &resp.n_parameters, err);
    if (rc < 0)
        return rc;
    int use_raw = raw_in;
    for (size_t i = 0; i < rs->noutputs; i++) {
        if ((rc = output_check(&rs->outputs[i], err)) < 0)
            return rc;
        if (rs->outputs[i].datatype == OIP_FP16)
            use_raw = 1;
    }
    size_t n = rs->noutputs;
    Inference__ModelInferResponse__InferOutputTensor **outs = qn_arena_calloc(a, n ? n : 1, sizeof *outs);
    ProtobufCBinaryData *raws = qn_arena_calloc(a, n ? n : 1, sizeof *raws);
    if (!outs || !raws)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const oip_output *o = &rs->outputs[i];
        Inference__ModelInferResponse__InferOutputTensor *t = qn_arena_alloc(a, sizeof *t);
        if (!t)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        inference__model_infer_response__infer_output_tensor__init(t);
        t->name = o->name;
        t->datatype = (char *)oip_datatype_name(o->datatype);
        t->n_shape = (size_t)o->ndim;
        t->shape = (int64_t *)o->shape;
        if (use_raw) {
            rc = raw_output(o, a, &raws[i], err);
        } else {
            Inference__InferTensorContents *c = qn_arena_alloc(a, sizeof *c);
            if (!c)
                return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            inference__infer_tensor_contents__init(c);
            t->contents = c;
            rc = typed_output(o, a, c, err);
        }
        if (rc < 0)
            return rc;
        outs[i] = t;
    }
    resp.n_outputs = n;
    resp.outputs = outs;
    if (use_raw) {
        resp.n_raw_output_contents = n;
        resp.raw_output_contents = raws;
    }
    size_t len = protobuf_c_message_get_packed_size(&resp.base);
    if (len > SERVE_GRPC_MAX_MESSAGE)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED,
                          "the response is %zu bytes, over the %d-byte message limit", len,
                          SERVE_GRPC_MAX_MESSAGE);
    if (!(out->reply = malloc(len ? len : 1)))
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    out->reply_len = protobuf_c_message_pack(&resp.base, out->reply);
    return 0;
}

int serve__grpc_infer(const oip_backend *be, const uint8_t *in, size_t inlen,
                      const char *traceparent, serve__grpc_infer_out *out, qn_err *err)
{
    return serve__grpc_infer_md(be, in, inlen, traceparent, NULL, NULL, out, err);
}

int serve__grpc_infer_md(const oip_backend *be, const uint8_t *in, size_t inlen, const char *traceparent,
                         const char *(*header)(void *hctx, const char *name), void *hctx,
                         serve__grpc_infer_out *out, qn_err *err)
{
    oip_infer_request orq = {0};
    oip_infer_response ors = {0};
    oip_tensor *inputs = NULL;
    size_t ninputs = 0;
    int rc = 0;
    memset(out, 0, sizeof *out);
    qn_arena *a = NULL;
    budget_alloc ba;
    budget_init(&ba);
    Inference__ModelInferRequest *rq =
        inference__model_infer_request__unpack(&ba.base, inlen, in);
    if (!rq) {
        if (ba.exhausted)
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED,
                            "ModelInferRequest: decoding it needs more than %zu MiB",
                            DECODE_BUDGET >> 20);
        else if (ba.oom)
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "ModelInferRequest: out of memory decoding it");
        else
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "ModelInferRequest: not a valid message");
        goto out;
    }
    if (!(a = qn_arena_new(0))) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if (!rq->model_name || !*rq->model_name) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "model_name is required");
        goto out;
    }
    if ((rc = check_text("model_name", rq->model_name, err)) < 0 ||
        (rc = check_text("model_version", rq->model_version, err)) < 0 ||
        (rc = check_text("id", rq->id, err)) < 0)
        goto out;
    if (rq->id && strlen(rq->id) > OIP_MAX_ID) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "id is %zu bytes; at most %d", strlen(rq->id),
                        OIP_MAX_ID);
        goto out;
    }
    int raw = rq->n_raw_input_contents > 0;
    if (raw && rq->n_raw_input_contents != rq->n_inputs) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                        "raw_input_contents has %zu entries for %zu inputs (one per input, in "
                        "order)",
                        rq->n_raw_input_contents, rq->n_inputs);
        goto out;
    }
    if (rq->n_inputs > OIP_MAX_INPUTS || rq->n_outputs > OIP_MAX_OUTPUTS) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                        "%zu inputs and %zu outputs requested; at most %d and %d", rq->n_inputs,
                        rq->n_outputs, OIP_MAX_INPUTS, OIP_MAX_OUTPUTS);
        goto out;
    }
    inputs = calloc(rq->n_inputs ? rq->n_inputs : 1, sizeof *inputs);
    if (!inputs) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < rq->n_inputs; i++) {
        ninputs = i + 1;
        rc = convert_input(rq->inputs[i], i, raw ? &rq->raw_input_contents[i] : NULL, a,
                           &inputs[i], err);
        if (rc < 0)
            goto out;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(inputs[j].name, inputs[i].name) == 0) {
                rc = qn_err_set(err, QN_INVALID_ARGUMENT, "input %s: given twice",
                                inputs[i].name);
                goto out;
            }
        }
    }
    const char **onames = qn_arena_calloc(a, rq->n_outputs ? rq->n_outputs : 1, sizeof *onames);
    if (!onames) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < rq->n_outputs; i++) {
        onames[i] = rq->outputs[i]->name;
        if (!onames[i] || !*onames[i]) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "outputs[%zu]: name is required", i);
            goto out;
        }
        char field[48];
        snprintf(field, sizeof field, "outputs[%zu].name", i);
        if ((rc = check_text(field, onames[i], err)) < 0)
            goto out;
    }
    PARAMS_TO_JSON(rc, rq->parameters, rq->n_parameters, &orq.parameters, "request", err);
    if (rc < 0)
        goto out;
    orq.model = rq->model_name;
    orq.version = rq->model_version && *rq->model_version ? rq->model_version : NULL;
    orq.id = rq->id && *rq->id ? rq->id : NULL;
    orq.inputs = inputs;
    orq.ninputs = rq->n_inputs;
    orq.outputs = rq->n_outputs ? onames : NULL;
    orq.noutputs = rq->n_outputs;
    orq.traceparent = traceparent;
    orq.header = header;
    orq.hctx = hctx;

    rc = be->infer(be->ud, &orq, &ors, err);
    /* Count calls that reached a model; an unknown model's name is the
     * client's text and must not become a metric series. */
    if (rc != QN_NOT_FOUND) {
        out->model = strdup(rq->model_name);
        out->version = strdup(ors.version ? ors.version : (orq.version ? orq.version : ""));
        if (!out->model || !out->version) { /* out of memory: the call is not counted */
            free(out->model);
            free(out->version);
            out->model = out->version = NULL;
        }
        /* Which version (and alias) was chosen, as REST's X-Quern-Model-*
         * headers say: on success, and on a failure after the version was
         * resolved (a bad tensor for that version), not before it (an
         * unknown version, nothing loaded). */
        out->served = out->version && ors.version;
        if (out->served && ors.alias)
            out->alias = strdup(ors.alias); /* out of memory: the metadata goes without it */
    }
    if (rc < 0) {
        rc = backend_fail(rc, err, "infer");
        goto out;
    }
    rc = build_infer_reply(rq, &ors, raw, a, out, err);
out:
    for (size_t i = 0; i < ninputs; i++)
        json_decref(inputs[i].parameters);
    free(inputs);
    json_decref(orq.parameters);
    oip_response_free(&ors);
    qn_arena_free(a);
    if (rq)
        inference__model_infer_request__free_unpacked(rq, &ba.base);
    if (rc < 0) {
        free(out->reply);
        out->reply = NULL;
        out->reply_len = 0;
    }
    return rc;
}

void serve__grpc_infer_out_free(serve__grpc_infer_out *out)
{
    free(out->reply);
    free(out->model);
    free(out->version);
    free(out->alias);
    memset(out, 0, sizeof *out);
}

/* The call's request metadata, as a traffic policy sticky on a header reads
 * it (oip_infer_request.header): the value of the first entry whose key is
 * name (metadata keys are lower case on the wire; name is matched
 * case-insensitively, as an HTTP header name is over REST), NULL when there
 * is none or it is binary (a "-bin" key). The value lives in val until the
 * call's handler returns. */
typedef struct md_lookup {
    const grpc_metadata_array *md;
    char *val;
} md_lookup;

static const char *md_header(void *hctx, const char *name)
{
    md_lookup *l = hctx;
    size_t n = strlen(name);
    if (n >= 4 && strcasecmp(name + n - 4, "-bin") == 0)
        return NULL;
    for (size_t i = 0; i < l->md->count; i++) {
        const grpc_slice *k = &l->md->metadata[i].key;
        if (GRPC_SLICE_LENGTH(*k) != n || strncasecmp((const char *)GRPC_SLICE_START_PTR(*k), name, n) != 0)
            continue;
        const grpc_slice *v = &l->md->metadata[i].value;
        free(l->val);
        l->val = strndup((const char *)GRPC_SLICE_START_PTR(*v), GRPC_SLICE_LENGTH(*v));
        return l->val; /* out of memory: as if absent (the request is routed at random) */
    }
    return NULL;
}

static int do_model_infer(serve_grpc *g, rpc *r, const uint8_t *in, size_t inlen, call_out *out,
                          qn_err *err)
{
    char tp[TRACEPARENT_MAX];
    serve__grpc_infer_out o;
    md_lookup look = {.md = &r->md};
    int rc = serve__grpc_infer_md(g->be, in, inlen, r->span_tp[0] ? r->span_tp : find_traceparent(&r->md, tp),
                                  md_header, &look, &o, err);
    free(look.val);
    if (rc == 0) {
        /* The slice takes the packed reply without a copy and frees it. */
        grpc_slice s = grpc_slice_new(o.reply, o.reply_len, free);
        out->reply = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
        o.reply = NULL;
    }
    out->model = o.model;
    out->version = o.version;
    out->served = o.served;
    out->alias = o.alias;
    o.model = o.version = o.alias = NULL;
    serve__grpc_infer_out_free(&o);
    return rc;
}

/* ------------------------------------------------------------------ */
/* the small methods                                                    */

static int do_server_live(serve_grpc *g, rpc *r, const uint8_t *in, size_t inlen, call_out *out,
                          qn_err *err)
{
    Inference__ServerLiveResponse resp = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
    resp.live = g->be->server_live ? g->be->server_live(g->be->ud) > 0 : 1;
    return pack_reply(&resp.base, out, err);
}

static int do_server_ready(serve_grpc *g, rpc *r, const uint8_t *in, size_t inlen, call_out *out,
                           qn_err *err)
{
    Inference__ServerReadyResponse resp = INFERENCE__SERVER_READY_RESPONSE__INIT;
    resp.ready = g->be->server_ready ? g->be->server_ready(g->be->ud) > 0 : 1;
    return pack_reply(&resp.base, out, err);
}

static int do_model_ready(serve_grpc *g, rpc *r, const uint8_t *in, size_t inlen, call_out *out,
                          qn_err *err)
{
    int rc;
    Inference__ModelReadyRequest *rq = inference__model_ready_request__unpack(NULL, inlen, in);
    if (!rq)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "ModelReadyRequest: not a valid message");
    if (!rq->name || !*rq->name) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "name is required");
        goto out;
    }
    if ((rc = check_text("name", rq->name, err)) < 0 ||
        (rc = check_text("version", rq->version, err)) < 0)
        goto out;
    rc = g->be->model_ready(g->be->ud, rq->name, *rq->version ? rq->version : NULL, err);
    if (rc < 0) {
        rc = backend_fail(rc, err, "model_ready");
        goto out;
    }
    Inference__ModelReadyResponse resp = INFERENCE__MODEL_READY_RESPONSE__INIT;
    resp.ready = rc > 0;
    rc = pack_reply(&resp.base, out, err);
out:
    inference__model_ready_request__free_unpacked(rq, NULL);
    return rc;
}

static int do_server_meta(serve_grpc *g, rpc *r, const uint8_t *in, size_t inlen, call_out *out,
                          qn_err *err)
{
    Inference__ServerMetadataResponse resp = INFERENCE__SERVER_METADATA_RESPONSE__INIT;
    resp.name = (char *)(g->be->server_name ? g->be->server_name : "quern-serve");
    resp.version = (char *)(g->be->server_version ? g->be->server_version : "");
    resp.n_extensions = g->be->nextensions;
    resp.extensions = (char **)g->be->extensions;
    return pack_reply(&resp.base, out, err);
}

static int do_model_meta(serve_grpc *g, rpc *r, const uint8_t *in, size_t inlen, call_out *out,
                         qn_err *err)
{
    int rc;
    void *hold = NULL;
    int held = 0;
    Inference__ModelMetadataResponse__TensorMetadata *tms = NULL, **tmp = NULL;
    Inference__ModelMetadataRequest *rq = inference__model_metadata_request__unpack(NULL, inlen, in);
    if (!rq)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "ModelMetadataRequest: not a valid message");
    if (!rq->name || !*rq->name) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "name is required");
        goto out;
    }
    if ((rc = check_text("name", rq->name, err)) < 0 ||
        (rc = check_text("version", rq->version, err)) < 0)
        goto out;
    oip_model_meta meta = {0};
    rc = g->be->model_metadata(g->be->ud, rq->name, *rq->version ? rq->version : NULL, &meta,
                               &hold, err);
    if (rc < 0) {
        rc = backend_fail(rc, err, "model_metadata");
        goto out;
    }
    held = 1;
    size_t nt = meta.ninputs + meta.noutputs;
    tms = calloc(nt ? nt : 1, sizeof *tms);
    tmp = calloc(nt ? nt : 1, sizeof *tmp);
    if (!tms || !tmp) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nt; i++) {
        const oip_tensor_meta *m = i < meta.ninputs ? &meta.inputs[i]
                                                    : &meta.outputs[i - meta.ninputs];
        inference__model_metadata_response__tensor_metadata__init(&tms[i]);
        tms[i].name = (char *)m->name;
        tms[i].datatype = (char *)oip_datatype_name(m->datatype);
        tms[i].n_shape = m->ndim > 0 ? (size_t)m->ndim : 0;
        tms[i].shape = (int64_t *)m->shape;
        tmp[i] = &tms[i];
    }
    Inference__ModelMetadataResponse resp = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
    resp.name = (char *)(meta.name ? meta.name : rq->name);
    resp.n_versions = meta.nversions;
    resp.versions = (char **)meta.versions;
    resp.platform = (char *)(meta.platform ? meta.platform : "");
    resp.n_inputs = meta.ninputs;
    resp.inputs = tmp;
    resp.n_outputs = meta.noutputs;
    resp.outputs = tmp + meta.ninputs;
    rc = pack_reply(&resp.base, out, err);
out:
    if (held && g->be->release_meta)
        g->be->release_meta(g->be->ud, hold);
    free(tms);
    free(tmp);
    inference__model_metadata_request__free_unpacked(rq, NULL);
    return rc;
}

static int do_health_check(serve_grpc *g, rpc *r, const uint8_t *in, size_t inlen, call_out *out,
                           qn_err *err)
{
    int rc;
    Grpc__Health__V1__HealthCheckRequest *rq =
        grpc__health__v1__health_check_request__unpack(NULL, inlen, in);
    if (!rq)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "HealthCheckRequest: not a valid message");
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    int ready;
    if ((rc = check_text("service", rq->service, err)) < 0)
        goto out;
    if (!*rq->service || strcmp(rq->service, "inference.GRPCInferenceService") == 0) {
        ready = g->be->server_ready ? g->be->server_ready(g->be->ud) > 0 : 1;
    } else {
        /* A named service is a model: unknown ones are NOT_FOUND, as the
         * health protocol asks. */
        rc = g->be->model_ready(g->be->ud, rq->service, NULL, err);
        if (rc < 0) {
            rc = backend_fail(rc, err, "health");
            goto out;
        }
        ready = rc > 0;
    }
    resp.status = ready ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                        : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    rc = pack_reply(&resp.base, out, err);
out:
    grpc__health__v1__health_check_request__free_unpacked(rq, NULL);
    return rc;
}

typedef int (*method_fn)(serve_grpc *g, rpc *r, const uint8_t *in, size_t inlen, call_out *out,
                         qn_err *err);

static const method_fn handlers[M_COUNT] = {
    [M_SERVER_LIVE] = do_server_live,   [M_SERVER_READY] = do_server_ready,
    [M_MODEL_READY] = do_model_ready,   [M_SERVER_META] = do_server_meta,
    [M_MODEL_META] = do_model_meta,     [M_MODEL_INFER] = do_model_infer,
    [M_HEALTH_CHECK] = do_health_check,
};

/* ------------------------------------------------------------------ */
/* answering a call                                                     */

static double mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *method_label(int m)
{
    if (m == M_GENERIC)
        return "unimplemented";
    const char *p = strrchr(methods[m].path, '/');
    return p ? p + 1 : methods[m].path;
}

static void answer(serve_grpc *g, rpc *r)
{
    double t0 = mono_seconds();
    qn_err err;
    qn_err_clear(&err);
    call_out out = {0};
    int rc;

    /* A SERVER span continuing the caller's trace from the metadata. */
    char in_tp[TRACEPARENT_MAX];
    qn_trace_ctx parent;
    const char *tps = find_traceparent(&r->md, in_tp);
    int have_parent = tps && qn_traceparent_parse(tps, &parent) == 0;
    const char *full = r->method == M_GENERIC ? "unimplemented" : methods[r->method].path;
    qn_span span;
    qn_span_start(&span, full[0] == '/' ? full + 1 : full, QN_SPAN_SERVER, have_parent ? &parent : NULL);
    r->span_tp[0] = '\0';
    if (span.rec)
        qn_traceparent_format(&span.ctx, r->span_tp);
    if (r->method == M_GENERIC) {
        char path[256];
        size_t n = GRPC_SLICE_LENGTH(r->details.method);
        if (n >= sizeof path)
            n = sizeof path - 1;
        memcpy(path, GRPC_SLICE_START_PTR(r->details.method), n);
        path[n] = 0;
        rc = qn_err_set(&err, QN_UNIMPLEMENTED, "method %s is not served here", path);
    } else if ((rc = check_auth(g, r, &err)) < 0) {
        /* refused before the message is looked at */
    } else if (!r->payload) {
        rc = qn_err_set(&err, QN_INVALID_ARGUMENT, "the call carried no request message");
    } else if (gpr_time_cmp(r->deadline, gpr_now(r->deadline.clock_type)) < 0) {
        /* Queued past the client's deadline: the client has given up, so
         * spend nothing on it (this sheds load under overload). */
        rc = qn_err_set(&err, QN_DEADLINE_EXCEEDED, "the call's deadline passed before it ran");
    } else {
        grpc_byte_buffer_reader rd;
        if (!grpc_byte_buffer_reader_init(&rd, r->payload)) {
            rc = qn_err_set(&err, QN_INVALID_ARGUMENT, "cannot decompress the request message");
        } else {
            grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
            grpc_byte_buffer_reader_destroy(&rd);
            rc = handlers[r->method](g, r, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), &out,
                                     &err);
            grpc_slice_unref(s);
        }
    }
    int code = rc < 0 ? -rc : 0;
    if (code < 0 || code > 16)
        code = GRPC_STATUS_UNKNOWN;
    if (r->method == M_HEALTH_CHECK) {
        qn_span_discard(&span); /* probes would drown the traces that matter */
    } else {
        qn_span_attr_str(&span, "rpc.system", "grpc");
        qn_span_attr_str(&span, "rpc.method", method_label(r->method));
        qn_span_attr_int(&span, "rpc.grpc.status_code", code);
        if (out.model)
            qn_span_attr_str(&span, "quern.model", out.model);
        if (out.version)
            qn_span_attr_str(&span, "quern.version", out.version);
        if (rc < 0 && (rc == QN_INTERNAL || rc == QN_UNKNOWN || rc == QN_DATA_LOSS || rc == QN_UNAVAILABLE ||
                       rc == QN_DEADLINE_EXCEEDED))
            qn_span_error(&span, err.msg);
        qn_span_end(&span);
    }
    if (rc < 0 && out.reply) {
        grpc_byte_buffer_destroy(out.reply);
        out.reply = NULL;
    }
    if (rc < 0 && (rc == QN_INTERNAL || rc == QN_UNKNOWN || rc == QN_DATA_LOSS)) {
        char tid[QN_TRACE_ID_HEX + 1];
        qn_trace_id_hex(&span.ctx, tid);
        qn_log_error(tid, "grpc call failed", "{s:s, s:s}", "method",
                     method_label(r->method), "error", err.msg);
    }

    r->reply = out.reply;
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t nops = 0;
    /* ModelInfer says which version and alias answered (or were chosen
     * before it failed), as REST's X-Quern-Model-Version and
     * X-Quern-Model-Alias headers do. */
    if (out.served && out.version) {
        r->send_md[r->n_send_md].key = grpc_slice_from_static_string("x-quern-model-version");
        r->send_md[r->n_send_md++].value = grpc_slice_from_copied_string(out.version);
    }
    if (out.served && out.alias) {
        r->send_md[r->n_send_md].key = grpc_slice_from_static_string("x-quern-model-alias");
        r->send_md[r->n_send_md++].value = grpc_slice_from_copied_string(out.alias);
    }
    ops[nops].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[nops].data.send_initial_metadata.count = r->n_send_md;
    ops[nops].data.send_initial_metadata.metadata = r->n_send_md ? r->send_md : NULL;
    nops++;
    if (r->reply) {
        ops[nops].op = GRPC_OP_SEND_MESSAGE;
        ops[nops].data.send_message.send_message = r->reply;
        nops++;
    }
    ops[nops].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[nops].data.send_status_from_server.trailing_metadata_count = 0;
    ops[nops].data.send_status_from_server.status = (grpc_status_code)code;
    if (code != 0) {
        r->status_details = grpc_slice_from_copied_string(err.msg);
        r->has_status_details = 1;
        ops[nops].data.send_status_from_server.status_details = &r->status_details;
    }
    nops++;
    ops[nops].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[nops].data.recv_close_on_server.cancelled = &r->cancelled;
    nops++;

    if (g->m_handled) {
        const char *vals[] = {method_label(r->method), qn_code_name(rc < 0 ? rc : 0)};
        qn_counter_add(g->m_handled, vals, 1);
    }
    if (out.model && g->m_requests) {
        const char *vals[] = {out.model, out.version ? out.version : "", "grpc"};
        qn_counter_add(g->m_requests, vals, 1);
        qn_histogram_observe(g->m_latency, vals, mono_seconds() - t0);
    }
    free(out.model);
    free(out.version);
    free(out.alias);

    r->phase = RPC_SENDING;
    grpc_call_error e = grpc_call_start_batch(r->call, ops, nops, r, NULL);
    if (e != GRPC_CALL_OK) {
        qn_log_error(NULL, "grpc: cannot send a reply", "{s:i}", "grpc_call_error", (int)e);
        rpc_free(r);
    }
}

static void *worker(void *arg)
{
    serve_grpc *g = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        if (ev.tag == &g->shutdown_tag) {
            pthread_mutex_lock(&g->mu);
            g->shutdown_done = 1;
            pthread_cond_broadcast(&g->cv);
            pthread_mutex_unlock(&g->mu);
            continue;
        }
        rpc *r = ev.tag;
        if (r->phase == RPC_SENDING || !ev.success) {
            /* Reply done (or the client went away), or a request failed
             * because the server is shutting down. */
            rpc_free(r);
            continue;
        }
        request_call(g, r->method);
        answer(g, r);
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* start and shutdown                                                   */

static void metrics_init(serve_grpc *g, qn_metrics *m)
{
    if (!m)
        return;
    static const char *const inf_labels[] = {"model", "version", "protocol", NULL};
    static const char *const handled_labels[] = {"method", "code", NULL};
    g->m_requests = qn_metrics_counter(m, "quern_inference_requests_total",
                                       "Inference requests that reached a model.", inf_labels);
    g->m_latency = qn_metrics_histogram(m, "quern_inference_request_duration_seconds",
                                        "Time to answer an inference request, in seconds.",
                                        inf_labels, NULL, 0);
    g->m_handled = qn_metrics_counter(m, "quern_grpc_server_handled_total",
                                      "gRPC calls answered, by method and status code.",
                                      handled_labels);
}

static void core_stop(serve_grpc *g, long long deadline_ms);

/* gRPC core's own log lines (bind failures, transport errors) go out as
 * the service's JSON lines rather than gRPC's plain stderr format. */
static void grpc_log_to_qn(gpr_log_func_args *a)
{
    qn_log_level lv = a->severity == GPR_LOG_SEVERITY_ERROR  ? QN_LOG_ERROR
                      : a->severity == GPR_LOG_SEVERITY_INFO ? QN_LOG_INFO
                                                             : QN_LOG_DEBUG;
    qn_log(lv, NULL, a->message, "{s:s, s:s, s:i}", "component", "grpc", "file",
           a->file ? a->file : "", "line", a->line);
}

/* Starts gRPC core: the server (with no port of its own: connections come
 * from the listener), the completion queue, the outstanding requests and
 * the workers. Runs on the listener's thread when the first client
 * connects. On failure, what was started is stopped again (core_stop) and
 * g->server is NULL. */
static int core_start(serve_grpc *g, qn_err *err)
{
    int rc = serve_grpc_lib_open(err);
    if (rc < 0)
        return rc;
    gpr_set_log_function(grpc_log_to_qn);
    grpc_init();

    /* Message bounds both ways. */
    grpc_arg args[2];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = SERVE_GRPC_MAX_MESSAGE;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = SERVE_GRPC_MAX_MESSAGE;
    grpc_channel_args cargs = {.num_args = 2, .args = args};
    g->server = grpc_server_create(&cargs, NULL);
    g->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(g->server, g->cq, NULL);
    for (int m = 0; m < M_COUNT; m++) {
        g->method_tags[m] = grpc_server_register_method(
            g->server, methods[m].path, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!g->method_tags[m]) {
            rc = qn_err_set(err, QN_INTERNAL, "grpc: cannot register %s", methods[m].path);
            /* A server that never started still needs the shutdown
             * handshake before it can be destroyed. */
            grpc_server_start(g->server);
            core_stop(g, 0);
            return rc;
        }
    }
    g->creds = grpc_insecure_server_credentials_create();
    grpc_server_start(g->server);
    for (int m = 0; m < M_COUNT; m++)
        for (int k = 0; k < methods[m].outstanding; k++)
            request_call(g, m);
    for (int k = 0; k < GENERIC_OUTSTANDING; k++)
        request_call(g, M_GENERIC);
    for (int t = 0; t < SERVE_GRPC_THREADS; t++) {
        if (pthread_create(&g->threads[t], NULL, worker, g) != 0) {
            rc = qn_err_set(err, QN_INTERNAL, "grpc: cannot start worker thread %d", t);
            core_stop(g, 0);
            return rc;
        }
        pthread_setname_np(g->threads[t], "grpc-worker");
        g->nthreads++;
    }
    return 0;
}

/* The listener's callback: the first connection starts gRPC core, and
 * every connection is handed to it. Only the listener's thread runs it, and
 * shutdown closes the listener first, so core_failed and g->server need no
 * lock here. */
static void on_connection(void *ud, int fd)
{
    serve_grpc *g = ud;
    if (!g->server && !g->core_failed) {
        qn_err err;
        qn_err_clear(&err);
        if (core_start(g, &err) < 0) {
            g->core_failed = 1;
            qn_log_error(NULL, "grpc: cannot start gRPC core; gRPC connections are refused",
                         "{s:s}", "error", err.msg);
        } else {
            qn_log_info(NULL, "grpc started on the first connection", "{s:i}", "port", g->port);
        }
    }
    if (!g->server) {
        close(fd);
        return;
    }
    /* gRPC owns fd from here, and closes it when the connection ends. */
    grpc_server_add_channel_from_fd(g->server, fd, g->creds);
}

serve_grpc *serve_grpc_start(const serve_grpc_opts *o, qn_err *err)
{
    const oip_backend *backend = o->backend;
    if (!backend || !backend->infer || !backend->model_ready || !backend->model_metadata) {
        qn_err_set(err, QN_INVALID_ARGUMENT, "grpc: the backend lacks infer/model_ready/model_metadata");
        return NULL;
    }
    serve_grpc *g = calloc(1, sizeof *g);
    if (!g || (o->token && *o->token && !(g->token = strdup(o->token)))) {
        free(g);
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "grpc: out of memory");
        return NULL;
    }
    g->token_len = g->token ? strlen(g->token) : 0;
    g->auth_reads = o->auth_reads;
    g->be = backend;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    metrics_init(g, o->metrics);

    /* The port is bound now (so a bad or busy address fails the start);
     * gRPC core starts with the first client (grpc_listen.h). */
    if (!(g->lis = serve_listener_open(o->listen, err)))
        goto fail;
    g->port = serve_listener_port(g->lis);
    if (serve_listener_start(g->lis, on_connection, g, err) < 0)
        goto fail;
    return g;
fail:
    serve_grpc_shutdown(g, 0);
    return NULL;
}

int serve_grpc_port(const serve_grpc *g)
{
    return g ? g->port : 0;
}

static void drain_queue_until_done(serve_grpc *g)
{
    /* Without workers (start failed before any ran), this thread polls. */
    while (!(g->shutdown_done && g->live == 0)) {
        pthread_mutex_unlock(&g->mu);
        grpc_event ev = grpc_completion_queue_next(
            g->cq, gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(100, GPR_TIMESPAN)),
            NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            if (ev.tag == &g->shutdown_tag)
                g->shutdown_done = 1;
            else
                rpc_free(ev.tag);
        }
        pthread_mutex_lock(&g->mu);
    }
}

/* Stops gRPC core (see serve_grpc_shutdown for the drain) and sets
 * g->server to NULL. g->stopping stays set: no request is posted after. */
static void core_stop(serve_grpc *g, long long deadline_ms)
{
    atomic_store(&g->stopping, 1);
    grpc_server_shutdown_and_notify(g->server, g->cq, &g->shutdown_tag);

    pthread_mutex_lock(&g->mu);
    if (g->nthreads == 0) {
        grpc_server_cancel_all_calls(g->server);
        drain_queue_until_done(g);
    } else {
        int cancelled = 0;
        while (!(g->shutdown_done && g->live == 0)) {
            if (!cancelled) {
                struct timespec ts = {.tv_sec = deadline_ms / 1000,
                                      .tv_nsec = (deadline_ms % 1000) * 1000000};
                int w = deadline_ms > 0 ? pthread_cond_timedwait(&g->cv, &g->mu, &ts) : ETIMEDOUT;
                if (w != 0 && !(g->shutdown_done && g->live == 0)) {
                    pthread_mutex_unlock(&g->mu);
                    grpc_server_cancel_all_calls(g->server);
                    pthread_mutex_lock(&g->mu);
                    cancelled = 1;
                }
            } else {
                pthread_cond_wait(&g->cv, &g->mu);
            }
        }
    }
    pthread_mutex_unlock(&g->mu);

    grpc_completion_queue_shutdown(g->cq);
    for (int t = 0; t < g->nthreads; t++)
        pthread_join(g->threads[t], NULL);
    if (g->nthreads == 0) {
        while (grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
            ;
    }
    g->nthreads = 0;
    grpc_server_destroy(g->server);
    grpc_completion_queue_destroy(g->cq);
    if (g->creds)
        grpc_server_credentials_release(g->creds);
    g->server = NULL;
    g->cq = NULL;
    g->creds = NULL;
    grpc_shutdown();
}

void serve_grpc_shutdown(serve_grpc *g, long long deadline_ms)
{
    if (!g)
        return;
    /* No new connection first; then gRPC, if a client ever started it. */
    serve_listener_close(g->lis);
    if (g->server)
        core_stop(g, deadline_ms);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g->token);
    free(g);
}
