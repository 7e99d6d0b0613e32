/*
 * grpc_lib.h - gRPC core, opened with dlopen the first time serve needs it.
 *
 * Linked, gRPC core costs every serve process about 4 MB of touched library
 * pages before it is used: the dynamic loader relocates libgrpc, Abseil,
 * re2 and libstdc++ and runs their C++ constructors at start. Most replicas
 * are asked over REST only, so quern_serve_grpc is not linked against
 * libgrpc: grpc_lib.c defines each gRPC core function serve calls as a
 * forwarder to the same function in libgrpc, which the first call (or
 * serve_grpc_lib_open) opens. Callers include <grpc/...> and call gRPC as
 * usual; the gRPC server calls serve_grpc_lib_open before anything else so a
 * missing library is an error it can report, not an abort.
 *
 *     qn_err err;
 *     if (serve_grpc_lib_open(&err) < 0) { qn_log_error(NULL, err.msg, NULL); ... }
 *     grpc_init();
 *
 * A gRPC function used anywhere in quern_serve_grpc must be in the list in
 * grpc_lib.c: one missing is an undefined reference at link time.
 */
#ifndef QUERN_SERVE_GRPC_LIB_H
#define QUERN_SERVE_GRPC_LIB_H

#include "core/err.h"

/*
 * Opens gRPC core (SERVE_GRPC_SONAME, libgrpc.so.N) and resolves every
 * function of the list, once per process; later calls return the first
 * answer. Returns 0, or QN_UNAVAILABLE with err naming the library and
 * dlerror's reason. Thread-safe.
 */
int serve_grpc_lib_open(qn_err *err);

/* 1 once gRPC core is open in this process (for tests). */
int serve_grpc_lib_loaded(void);

#endif
