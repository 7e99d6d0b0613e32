/*
 * sum_backend.h - a small oip_backend for the gRPC tests and benchmark.
 *
 * Models:
 * - "sum" (version "1"): input "x" FP32 [-1,3] (required) -> output "y" FP32
 *   [-1] (row sums); input "name" BYTES [-1] (optional) -> output "greeting"
 *   BYTES [-1] ("hello, <name>"). Wrong datatype or shape -> INVALID_ARGUMENT
 *   naming the input. The response's parameters echo the request's
 *   parameters and add "traceparent" when the call carried one. A request
 *   parameter "sleep_ms" (int, at most 5000) makes the call sleep first when
 *   allow_sleep is set (shutdown tests).
 * - "echo" (version "1"): returns every input unchanged as an output of the
 *   same name, datatype and shape (conversion round trips).
 * - "sleepy": known but never ready.
 * Anything else is NOT_FOUND.
 */
#ifndef QUERN_TEST_SUM_BACKEND_H
#define QUERN_TEST_SUM_BACKEND_H

#include <stdatomic.h>

#include "serve/oip.h"

typedef struct sum_backend {
    oip_backend be;
    atomic_int ready;    /* server_ready answer; 1 after sum_backend_init */
    int allow_sleep;     /* honour "sleep_ms" (off by default, so fuzzing never sleeps) */
    atomic_long infers;  /* infer calls entered */
    atomic_long done;    /* infer calls returned */
} sum_backend;

void sum_backend_init(sum_backend *s);

#endif
