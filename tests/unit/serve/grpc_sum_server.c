/*
 * grpc_sum_server.c - the gRPC front with the test backend (sum_backend.h)
 * as a process, for bench/bench_grpc.py: listens on argv[1] (default
 * 127.0.0.1:0), prints "port N" on stdout once ready, and shuts down
 * gracefully on SIGTERM or SIGINT.
 */
#include <signal.h>
#include <stdio.h>

#include "core/json.h"
#include "serve/grpc_server.h"
#include "sum_backend.h"

int main(int argc, char **argv)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    /* Block before gRPC starts its threads, so only sigwait sees them. */
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    sum_backend sb;
    sum_backend_init(&sb);
    qn_err err;
    serve_grpc_opts o = {.listen = argc > 1 ? argv[1] : "127.0.0.1:0", .backend = &sb.be};
    serve_grpc *g = serve_grpc_start(&o, &err);
    if (!g) {
        fprintf(stderr, "grpc_sum_server: %s\n", err.msg);
        return 1;
    }
    printf("port %d\n", serve_grpc_port(g));
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    serve_grpc_shutdown(g, qn_now_ms() + 5000);
    return 0;
}
