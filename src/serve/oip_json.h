/*
 * oip_json.h - the JSON body of an Open Inference Protocol infer request
 * (REST, KServe V2) read into the protocol-neutral oip structs (oip.h).
 *
 * Two readers, one answer. The fast reader scans the body once and writes the
 * tensors straight into typed arrays in the request arena; it takes the
 * shape every client sends (names, datatype and shape before data, plain
 * strings, no parameters) and declines anything else. A declined body goes
 * to the general reader (a jansson tree, Triton's binary extension, every
 * error message), so the fast reader never has to produce an error: for any
 * body it accepts, the general reader accepts it too and yields the same
 * request (tests/fuzz/fuzz_oip_json.c checks exactly that).
 *
 *     oip_json_req pr;
 *     if (oip_json_parse_infer(body, len, jlen, arena, &pr, &err) < 0)
 *         -> 400 with err.msg (names the input at fault)
 *     ... pr.rq ...
 *     oip_json_req_free(&pr);
 */
#ifndef QUERN_SERVE_OIP_JSON_H
#define QUERN_SERVE_OIP_JSON_H

#include <jansson.h>
#include <stddef.h>

#include "core/arena.h"
#include "core/err.h"
#include "serve/oip.h"

#define OIP_JSON_MAX_INPUTS OIP_MAX_INPUTS
#define OIP_JSON_MAX_OUTPUTS OIP_MAX_OUTPUTS
#define OIP_JSON_MAX_ID OIP_MAX_ID
/* Elements per input at most (a body cannot hold more anyway). */
#define OIP_JSON_MAX_ELEMS (64ull * 1024 * 1024)

typedef struct oip_json_req {
    json_t *doc;             /* general reader: the tree the strings point into */
    oip_infer_request rq;    /* model and version are left to the caller */
} oip_json_req;

/* Reads body[0..jlen) as the JSON of an infer request; body[jlen..len) holds
 * the binary tensors (jlen == len: none), which must be used exactly. Arrays
 * and strings go in a (or point into the body or pr->doc). 0, or
 * QN_INVALID_ARGUMENT naming the input at fault, QN_RESOURCE_EXHAUSTED; the
 * message is valid UTF-8 whatever the body held. Call oip_json_req_free
 * either way. Thread-safe (no shared state). */
int oip_json_parse_infer(const char *body, size_t len, size_t jlen, qn_arena *a,
                         oip_json_req *pr, qn_err *err);
void oip_json_req_free(oip_json_req *pr);

/* The two readers, for the fuzz target. The fast one returns 1 when it
 * declines the body (pr untouched but for arena memory), else 0. */
int oip_json_parse_fast(const char *body, size_t len, qn_arena *a, oip_json_req *pr);
int oip_json_parse_tree(const char *body, size_t len, size_t jlen, qn_arena *a, oip_json_req *pr,
                        qn_err *err);

#endif
