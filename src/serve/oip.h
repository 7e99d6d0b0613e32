/*
 * oip.h - the Open Inference Protocol (KServe V2) data model inside quern-serve.
 *
 * REST (JSON) and gRPC (protobuf) requests are both translated into these
 * structs, and one backend answers them, so the two protocols cannot drift
 * apart. A tensor's data is always kept as flat, row-major, little-endian raw
 * bytes of its datatype (what gRPC's raw_input_contents carries); BYTES
 * tensors are a list of (pointer, length) elements.
 *
 *     oip_infer_request rq = {.model = "adult", .ninputs = 1, .inputs = &t};
 *     oip_infer_response rs;
 *     if (backend->infer(backend->ud, &rq, &rs, &err) < 0) -> status from err.code
 *     ...
 *     oip_response_free(&rs);
 *
 * Memory: a request's arrays point into memory the protocol layer owns for
 * the duration of the call (request arena or the decoded protobuf). A
 * response's outputs are allocated by the backend with malloc and released
 * with oip_response_free.
 */
#ifndef QUERN_SERVE_OIP_H
#define QUERN_SERVE_OIP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define OIP_MAX_DIMS 8
/* Longest request id (bytes) either protocol takes: it is echoed and logged. */
#define OIP_MAX_ID 256
/* Most inputs and requested outputs in one request, on either protocol
 * (names are compared pairwise). */
#define OIP_MAX_INPUTS 256
#define OIP_MAX_OUTPUTS 64

/* XX(enum suffix, protocol name, element size in bytes (0 = variable)) */
#define OIP_DATATYPE_MAP(XX) \
    XX(BOOL, "BOOL", 1)      \
    XX(UINT8, "UINT8", 1)    \
    XX(UINT16, "UINT16", 2)  \
    XX(UINT32, "UINT32", 4)  \
    XX(UINT64, "UINT64", 8)  \
    XX(INT8, "INT8", 1)      \
    XX(INT16, "INT16", 2)    \
    XX(INT32, "INT32", 4)    \
    XX(INT64, "INT64", 8)    \
    XX(FP16, "FP16", 2)      \
    XX(FP32, "FP32", 4)      \
    XX(FP64, "FP64", 8)      \
    XX(BYTES, "BYTES", 0)

typedef enum oip_datatype {
    OIP_INVALID = 0,
#define OIP__XX(e, name, size) OIP_##e,
    OIP_DATATYPE_MAP(OIP__XX)
#undef OIP__XX
} oip_datatype;

/* "FP32" -> OIP_FP32; unknown -> OIP_INVALID. */
oip_datatype oip_datatype_parse(const char *s);
const char *oip_datatype_name(oip_datatype t);
/* Bytes per element; 0 for BYTES (and OIP_INVALID). */
size_t oip_datatype_size(oip_datatype t);

typedef struct oip_bytes {
    const uint8_t *p;
    size_t len;
} oip_bytes;

typedef struct oip_tensor {
    const char *name;
    oip_datatype datatype;
    int ndim;
    int64_t shape[OIP_MAX_DIMS];
    /* Fixed-size datatypes: nelem * size bytes, row-major, little-endian. */
    const void *data;
    size_t data_len;
    /* BYTES: nelem elements. */
    const oip_bytes *bytes;
    size_t nbytes;
    json_t *parameters;   /* borrowed; NULL when none */
} oip_tensor;

/* Product of the shape; -1 when a dimension is negative or it overflows. */
int64_t oip_tensor_nelem(const oip_tensor *t);

/*
 * Text from clients (names, ids, BYTES elements) is checked and every
 * message that may hold some of it is made valid UTF-8 before it leaves, so
 * a bad byte gives a 400 / INVALID_ARGUMENT that says so, never a message
 * the JSON writer or a gRPC client cannot take.
 * core/utf8 does the checking and escaping; qn_err messages are valid UTF-8
 * by construction.
 */

typedef struct oip_infer_request {
    const char *model;
    const char *version;        /* NULL or "": the version the server picks */
    const char *id;             /* may be NULL */
    json_t *parameters;         /* borrowed; may be NULL */
    const oip_tensor *inputs;
    size_t ninputs;
    const char *const *outputs; /* requested output names; NULL/0: all */
    size_t noutputs;
    const char *traceparent;    /* may be NULL */
    /* The transport's request headers (REST headers, gRPC request
     * metadata), for a traffic policy sticky on a header: the value of name
     * (matched case-insensitively) or NULL. header NULL: none. */
    const char *(*header)(void *hctx, const char *name);
    void *hctx;
} oip_infer_request;

/* An owned output tensor (malloc'd name, shape, data). */
typedef struct oip_output {
    char *name;
    oip_datatype datatype;
    int ndim;
    int64_t shape[OIP_MAX_DIMS];
    void *data;                 /* fixed-size types */
    size_t data_len;
    oip_bytes *bytes;           /* BYTES: elements, each p malloc'd */
    size_t nbytes;
} oip_output;

typedef struct oip_infer_response {
    char *model;
    char *version;
    char *id;                   /* echoes the request id, may be NULL */
    json_t *parameters;         /* owned, may be NULL */
    oip_output *outputs;
    size_t noutputs;
    const char *alias;          /* the alias that answered (borrowed, static while serving); may be NULL */
} oip_infer_response;

void oip_response_free(oip_infer_response *r);

/* Metadata of a model (for GET /v2/models/{m} and ModelMetadata). */
typedef struct oip_tensor_meta {
    const char *name;
    oip_datatype datatype;
    int ndim;
    int64_t shape[OIP_MAX_DIMS];   /* -1 for a variable dimension */
} oip_tensor_meta;

typedef struct oip_model_meta {
    const char *name;
    const char *const *versions;
    size_t nversions;
    const char *platform;          /* "quern-xgboost", "quern-als", ... */
    const oip_tensor_meta *inputs;
    size_t ninputs;
    const oip_tensor_meta *outputs;
    size_t noutputs;
} oip_model_meta;

/*
 * What answers the protocol. Each function returns 0 or a negative qn_code
 * with err filled (QN_NOT_FOUND for an unknown model or version,
 * QN_INVALID_ARGUMENT naming the input at fault, QN_UNAVAILABLE when a model
 * is not ready). All are called from many threads at once.
 */
typedef struct oip_backend {
    void *ud;
    int (*server_live)(void *ud);
    int (*server_ready)(void *ud);
    /* 1 ready, 0 not ready; negative when the model/version is unknown. */
    int (*model_ready)(void *ud, const char *model, const char *version, qn_err *err);
    /* name, version, extensions for GET /v2 and ServerMetadata. */
    const char *server_name;
    const char *server_version;
    const char *const *extensions;
    size_t nextensions;
    /* Fills meta; the pointed-to data stays valid until release_meta. */
    int (*model_metadata)(void *ud, const char *model, const char *version, oip_model_meta *meta,
                          void **hold, qn_err *err);
    void (*release_meta)(void *ud, void *hold);
    int (*infer)(void *ud, const oip_infer_request *rq, oip_infer_response *rs, qn_err *err);
} oip_backend;

#endif
