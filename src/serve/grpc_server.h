/*
 * grpc_server.h - quern-serve's gRPC front: the Open Inference Protocol
 * service `inference.GRPCInferenceService` (ServerLive, ServerReady,
 * ModelReady, ServerMetadata, ModelMetadata, ModelInfer) and the standard
 * `grpc.health.v1.Health/Check`, on gRPC core's C API with protobuf-c
 * (proto/grpc_service.proto, proto/health.proto).
 *
 * Every call is translated into the protocol-neutral structs of oip.h and
 * answered by the same oip_backend as the REST front, so the two protocols
 * cannot drift apart. serve's main starts it beside the REST server:
 *
 *     qn_err err;
 *     serve_grpc_opts o = {.listen = "127.0.0.1:7706", .backend = &backend,
 *                          .metrics = metrics, .token = token, .auth_reads = 0};
 *     serve_grpc *g = serve_grpc_start(&o, &err);
 *     if (!g) { qn_log_error(NULL, err.msg, NULL); return 1; }
 *     qn_log_info(NULL, "grpc listening", "{s:i}", "port", serve_grpc_port(g));
 *     ... wait for SIGTERM ...
 *     serve_grpc_shutdown(g, qn_now_ms() + 10000);   // drain 10 s, then cancel
 *
 * Behaviour on the wire:
 * - Errors are gRPC statuses with the backend's qn_code (the numbers are the
 *   gRPC canonical codes) and its message, which names the input at fault:
 *   INVALID_ARGUMENT for a malformed tensor, NOT_FOUND for an unknown model,
 *   UNAVAILABLE for a model that is not ready, RESOURCE_EXHAUSTED for a
 *   message over SERVE_GRPC_MAX_MESSAGE (enforced by gRPC itself) or one
 *   whose decoding would take more than 4x that (a ModelInfer request is
 *   unpacked under that memory budget), DEADLINE_EXCEEDED for a call whose
 *   deadline passed while it waited for a worker.
 * - ModelInfer accepts typed `contents` or `raw_input_contents` (one entry
 *   per input; BYTES elements as 4-byte little-endian length + bytes). The
 *   response mirrors the request: raw_output_contents when the request used
 *   raw inputs (or when an output is FP16, which has no typed field), typed
 *   contents otherwise. Clients that send raw get raw back, which is what
 *   Triton's clients expect; KServe's typed-only clients get typed data.
 * - Auth follows REST's rules (core/http.h): with a token set, a call must
 *   carry `authorization: Bearer <token>` metadata or it fails with
 *   UNAUTHENTICATED. ModelInfer always needs it; the read calls
 *   (ModelMetadata, ServerMetadata, ModelReady) only with auth_reads on; the
 *   probes (ServerLive, ServerReady, grpc.health.v1 Check) never. The token
 *   is compared in constant time.
 * - Text in a request (model name, version, id, input, output and
 *   parameter names) must be valid UTF-8 (INVALID_ARGUMENT otherwise), and
 *   status messages are always valid UTF-8 (client bytes escaped as \xHH).
 *   As on REST, an id is at most OIP_MAX_ID bytes and a request holds at
 *   most OIP_MAX_INPUTS inputs and OIP_MAX_OUTPUTS requested outputs.
 * - A `traceparent` in the call's metadata (W3C trace context) reaches the
 *   backend as oip_infer_request.traceparent when it is well formed; a
 *   malformed one is ignored, as the W3C rules say.
 * - Unknown methods (Triton's extra RPCs, Health/Watch) answer UNIMPLEMENTED.
 * - Metrics (when a registry is given): quern_inference_requests_total and
 *   quern_inference_request_duration_seconds {model,version,protocol="grpc"}
 *   for ModelInfer calls that reached a known model, and
 *   quern_grpc_server_handled_total{method,code} for every call.
 */
#ifndef QUERN_SERVE_GRPC_SERVER_H
#define QUERN_SERVE_GRPC_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/metrics.h"
#include "serve/oip.h"

/* Largest request or response message, in bytes; larger ones fail with
 * RESOURCE_EXHAUSTED. */
#define SERVE_GRPC_MAX_MESSAGE (64 * 1024 * 1024)
/* Worker threads polling the completion queue; each answers one call at a
 * time and blocks in the backend meanwhile, so at most this many backend
 * calls run at once and other calls (health checks too) queue behind them. */
#define SERVE_GRPC_THREADS 4

typedef struct serve_grpc serve_grpc;

typedef struct serve_grpc_opts {
    const char *listen;          /* "HOST:PORT"; port 0 picks a free one */
    const oip_backend *backend;  /* must outlive the server, thread-safe */
    qn_metrics *metrics;         /* may be NULL */
    const char *token;           /* NULL or "": no auth; copied */
    int auth_reads;              /* 1: the read calls need the token too */
} serve_grpc_opts;

/*
 * Starts the server on o->listen with insecure (plaintext) HTTP/2, answering
 * with o->backend. The port is bound now and the metric families are created
 * in o->metrics now; gRPC core itself (the library, its threads and the
 * SERVE_GRPC_THREADS workers) starts when the first client connects
 * (grpc_listen.h), which a client cannot tell apart. If gRPC core cannot
 * start then (libgrpc missing, no threads), the error is logged and gRPC
 * connections are closed; REST is unaffected.
 * Returns the running server, or NULL with err filled: QN_INVALID_ARGUMENT
 * when listen cannot be bound (malformed, or in use) or the backend lacks a
 * method, QN_RESOURCE_EXHAUSTED / QN_INTERNAL when threads or memory fail.
 */
serve_grpc *serve_grpc_start(const serve_grpc_opts *o, qn_err *err);

/* The port actually bound (useful with port 0). */
int serve_grpc_port(const serve_grpc *g);

/*
 * Stops accepting calls and lets in-flight calls finish until deadline_ms
 * (wall-clock milliseconds since the epoch, as qn_now_ms() of core/json.h
 * gives; 0 or past: cancel at once), then cancels the rest (their clients
 * see UNAVAILABLE), waits for backend calls still running (a backend call
 * cannot be interrupted), joins the workers and frees everything. NULL is
 * fine. Call once, from one thread.
 */
void serve_grpc_shutdown(serve_grpc *g, long long deadline_ms);

/*
 * Internal, for tests and fuzzing: one ModelInfer without the transport.
 * in/inlen: a serialized ModelInferRequest; traceparent may be NULL. On
 * success (0) out->reply holds the serialized ModelInferResponse; on failure
 * a negative qn_code with err filled (a valid UTF-8 message), as the call's
 * status would be.
 * out->model/version are the metric labels (NULL when not counted);
 * out->served is 1 when a model version was chosen for the call (it
 * answered, or the call failed after the version was resolved, e.g. a bad
 * tensor), so version names it, and out->alias is then the alias that
 * served it (NULL when unknown): the call's x-quern-model-version and
 * x-quern-model-alias response metadata, as REST's headers. Free out with
 * serve__grpc_infer_out_free either way. Thread-safe if be is.
 */
typedef struct serve__grpc_infer_out {
    uint8_t *reply;
    size_t reply_len;
    char *model;
    char *version;
    char *alias;
    int served;
} serve__grpc_infer_out;

int serve__grpc_infer(const oip_backend *be, const uint8_t *in, size_t inlen,
                      const char *traceparent, serve__grpc_infer_out *out, qn_err *err);
/* serve__grpc_infer with the call's request metadata: header(hctx, name)
 * answers the value of the metadata entry name (case-insensitive) or NULL,
 * for a traffic policy sticky on a header. header NULL: no metadata. */
int serve__grpc_infer_md(const oip_backend *be, const uint8_t *in, size_t inlen, const char *traceparent,
                         const char *(*header)(void *hctx, const char *name), void *hctx,
                         serve__grpc_infer_out *out, qn_err *err);
void serve__grpc_infer_out_free(serve__grpc_infer_out *out);

#endif
