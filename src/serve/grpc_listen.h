/*
 * grpc_listen.h - the listening socket of quern-serve's gRPC front, held by
 * serve itself so that gRPC core starts only when a client first connects.
 *
 * gRPC core's start-up (grpc_init, a server, its pollers and timer threads)
 * touches about 5 MB of library pages and adds six threads; most serve
 * replicas are asked over REST only, so grpc_server.c binds the port here at
 * start, and starts gRPC on the first accepted connection, handing it and
 * every later one over with grpc_server_add_channel_from_fd. Meanwhile the
 * port is bound (a client can connect at once, and a second server on the
 * port fails to start), and one thread waits in poll(2).
 *
 *     qn_err err;
 *     serve_listener *l = serve_listener_open("127.0.0.1:7706", &err);
 *     if (!l) { qn_log_error(NULL, err.msg, NULL); return 1; }
 *     printf("port %d\n", serve_listener_port(l));
 *     if (serve_listener_start(l, on_conn, ud, &err) < 0) ...
 *     ... on_conn(ud, fd) runs on the listener's thread for each client ...
 *     serve_listener_close(l);   // no on_conn runs after this returns
 */
#ifndef QUERN_SERVE_GRPC_LISTEN_H
#define QUERN_SERVE_GRPC_LISTEN_H

#include "core/err.h"

/* Addresses one listener binds at most (a name such as localhost gives
 * one per address family). */
#define SERVE_LISTEN_MAX_FDS 4

typedef struct serve_listener serve_listener;

/* Takes ownership of fd: a connected TCP socket, non-blocking, close-on-exec,
 * TCP_NODELAY set. Runs on the listener's thread, one call at a time. */
typedef void (*serve_listen_fn)(void *ud, int fd);

/*
 * Binds and listens on listen, "HOST:PORT", "[IPV6]:PORT" or ":PORT" (port
 * 0: any free port), as gRPC's own listener did: every address the host
 * resolves to on one port; a wildcard host (empty, 0.0.0.0, ::) as one
 * dual-stack [::] socket where IPv6 is available, else 0.0.0.0; no
 * SO_REUSEPORT, so a port in use fails. Returns the listener, or NULL with
 * err filled: QN_INVALID_ARGUMENT naming listen when it is malformed, does
 * not resolve, or no address could be bound; QN_RESOURCE_EXHAUSTED out of
 * memory.
 */
serve_listener *serve_listener_open(const char *listen, qn_err *err);

/* The port bound (the one picked, with port 0). */
int serve_listener_port(const serve_listener *l);

/*
 * Starts the thread that accepts connections and passes each to fn(ud, fd).
 * Accept errors are logged and retried (after 100 ms when out of descriptors
 * or memory). Returns 0, or QN_INTERNAL with err filled when the thread
 * cannot start. Call at most once.
 */
int serve_listener_start(serve_listener *l, serve_listen_fn fn, void *ud, qn_err *err);

/* Stops the thread (waiting for an fn call in progress), closes the
 * sockets (clients still in the backlog see a reset) and frees l. NULL is
 * fine. */
void serve_listener_close(serve_listener *l);

#endif
