/*
 * grpc_lib.c - gRPC core opened on first use (grpc_lib.h).
 *
 * GRPC_FUNCTIONS lists every gRPC core function quern_serve_grpc calls, with
 * its return type, parameters and arguments. From it come the table of
 * pointers (each typed from the function's own prototype in the gRPC
 * headers, so a wrong entry does not compile), the symbol names dlsym
 * resolves, and one forwarder per function. The forwarders are hidden: were
 * they exported, libgrpc's calls to its own functions would bind to them.
 */
#include "serve/grpc_lib.h"

#include <dlfcn.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* grpc_security.h declares it without a prototype. */
grpc_server_credentials *grpc_insecure_server_credentials_create(void);

#ifndef SERVE_GRPC_SONAME
#error "SERVE_GRPC_SONAME (libgrpc's soname) comes from src/serve/CMakeLists.txt"
#endif

/* VOID(name, (parameters), (arguments)) / RET(type, name, (parameters), (arguments)) */
#define GRPC_FUNCTIONS(VOID, RET) \
    VOID(grpc_init, (void), ()) \
    VOID(grpc_shutdown, (void), ()) \
    RET(grpc_server *, grpc_server_create, (const grpc_channel_args *a, void *b), (a, b)) \
    VOID(grpc_server_register_completion_queue, \
        (grpc_server *a, grpc_completion_queue *b, void *c), (a, b, c)) \
    RET(void *, grpc_server_register_method, \
        (grpc_server *a, const char *b, const char *c, \
         grpc_server_register_method_payload_handling d, uint32_t e), \
        (a, b, c, d, e)) \
    VOID(grpc_server_start, (grpc_server *a), (a)) \
    VOID(grpc_server_add_channel_from_fd, \
        (grpc_server *a, int b, grpc_server_credentials *c), (a, b, c)) \
    VOID(grpc_server_shutdown_and_notify, \
        (grpc_server *a, grpc_completion_queue *b, void *c), (a, b, c)) \
    VOID(grpc_server_cancel_all_calls, (grpc_server *a), (a)) \
    VOID(grpc_server_destroy, (grpc_server *a), (a)) \
    RET(grpc_call_error, grpc_server_request_call, \
        (grpc_server *a, grpc_call **b, grpc_call_details *c, grpc_metadata_array *d, \
         grpc_completion_queue *e, grpc_completion_queue *f, void *g), \
        (a, b, c, d, e, f, g)) \
    RET(grpc_call_error, grpc_server_request_registered_call, \
        (grpc_server *a, void *b, grpc_call **c, gpr_timespec *d, grpc_metadata_array *e, \
         grpc_byte_buffer **f, grpc_completion_queue *g, grpc_completion_queue *h, void *i), \
        (a, b, c, d, e, f, g, h, i)) \
    RET(grpc_server_credentials *, grpc_insecure_server_credentials_create, (void), ()) \
    VOID(grpc_server_credentials_release, (grpc_server_credentials *a), (a)) \
    RET(grpc_completion_queue *, grpc_completion_queue_create_for_next, (void *a), (a)) \
    RET(grpc_event, grpc_completion_queue_next, \
        (grpc_completion_queue *a, gpr_timespec b, void *c), (a, b, c)) \
    VOID(grpc_completion_queue_shutdown, (grpc_completion_queue *a), (a)) \
    VOID(grpc_completion_queue_destroy, (grpc_completion_queue *a), (a)) \
    RET(grpc_call_error, grpc_call_start_batch, \
        (grpc_call *a, const grpc_op *b, size_t c, void *d, void *e), (a, b, c, d, e)) \
    VOID(grpc_call_unref, (grpc_call *a), (a)) \
    VOID(grpc_call_details_init, (grpc_call_details *a), (a)) \
    VOID(grpc_call_details_destroy, (grpc_call_details *a), (a)) \
    VOID(grpc_metadata_array_init, (grpc_metadata_array *a), (a)) \
    VOID(grpc_metadata_array_destroy, (grpc_metadata_array *a), (a)) \
    RET(grpc_byte_buffer *, grpc_raw_byte_buffer_create, (grpc_slice *a, size_t b), (a, b)) \
    VOID(grpc_byte_buffer_destroy, (grpc_byte_buffer *a), (a)) \
    RET(int, grpc_byte_buffer_reader_init, \
        (grpc_byte_buffer_reader *a, grpc_byte_buffer *b), (a, b)) \
    RET(grpc_slice, grpc_byte_buffer_reader_readall, (grpc_byte_buffer_reader *a), (a)) \
    VOID(grpc_byte_buffer_reader_destroy, (grpc_byte_buffer_reader *a), (a)) \
    RET(grpc_slice, grpc_slice_malloc, (size_t a), (a)) \
    RET(grpc_slice, grpc_slice_new, (void *a, size_t b, void (*c)(void *)), (a, b, c)) \
    RET(grpc_slice, grpc_slice_from_copied_string, (const char *a), (a)) \
    VOID(grpc_slice_unref, (grpc_slice a), (a)) \
    RET(int, grpc_slice_str_cmp, (grpc_slice a, const char *b), (a, b)) \
    RET(gpr_timespec, gpr_now, (gpr_clock_type a), (a)) \
    RET(gpr_timespec, gpr_inf_future, (gpr_clock_type a), (a)) \
    RET(int, gpr_time_cmp, (gpr_timespec a, gpr_timespec b), (a, b)) \
    RET(gpr_timespec, gpr_time_add, (gpr_timespec a, gpr_timespec b), (a, b)) \
    RET(gpr_timespec, gpr_time_from_millis, (int64_t a, gpr_clock_type b), (a, b)) \
    VOID(gpr_set_log_function, (gpr_log_func a), (a)) \
    /* Not called yet; here for call metadata handling (trailing metadata, \
     * the peer's address) so that using them needs no change here. */ \
    RET(grpc_slice, grpc_slice_from_static_string, (const char *a), (a)) \
    RET(grpc_slice, grpc_slice_from_copied_buffer, (const char *a, size_t b), (a, b)) \
    RET(char *, grpc_slice_to_c_string, (grpc_slice a), (a)) \
    RET(char *, grpc_call_get_peer, (grpc_call *a), (a)) \
    VOID(gpr_free, (void *a), (a))

static struct {
#define SLOT_V(name, params, args) __typeof__(name) *name;
#define SLOT_R(type, name, params, args) __typeof__(name) *name;
    GRPC_FUNCTIONS(SLOT_V, SLOT_R)
#undef SLOT_V
#undef SLOT_R
} api;

static const char *const symbols[] = {
#define NAME_V(name, params, args) #name,
#define NAME_R(type, name, params, args) #name,
    GRPC_FUNCTIONS(NAME_V, NAME_R)
#undef NAME_V
#undef NAME_R
};

_Static_assert(sizeof api == sizeof symbols, "one table slot per symbol name");

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char open_error[512]; /* "" once open */

static void open_lib(void)
{
    void *h = dlopen(SERVE_GRPC_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(open_error, sizeof open_error, "gRPC core (%s) cannot be opened: %s",
                 SERVE_GRPC_SONAME, dlerror());
        return;
    }
    void **slot = (void **)&api;
    for (size_t i = 0; i < sizeof symbols / sizeof *symbols; i++) {
        /* dlsym of the handle searches libgrpc and what it loads (libgpr). */
        if (!(slot[i] = dlsym(h, symbols[i]))) {
            snprintf(open_error, sizeof open_error, "gRPC core (%s) lacks %s", SERVE_GRPC_SONAME,
                     symbols[i]);
            memset(&api, 0, sizeof api);
            return;
        }
    }
    open_error[0] = '\0';
}

int serve_grpc_lib_open(qn_err *err)
{
    pthread_once(&once, open_lib);
    if (api.grpc_init)
        return 0;
    return qn_err_set(err, QN_UNAVAILABLE, "%s", open_error);
}

int serve_grpc_lib_loaded(void)
{
    pthread_once(&once, open_lib);
    return api.grpc_init != NULL;
}

/* Every caller opens the library first (serve_grpc_lib_open), so reaching a
 * forwarder without it is a programmer error. */
static void need(const char *name)
{
    pthread_once(&once, open_lib);
    if (!api.grpc_init) {
        fprintf(stderr, "quern-serve: %s called but %s\n", name, open_error);
        abort();
    }
}

#define HIDDEN __attribute__((visibility("hidden")))
#define DEF_V(name, params, args) \
    HIDDEN void name params \
    { \
        need(#name); \
        api.name args; \
    }
#define DEF_R(type, name, params, args) \
    HIDDEN type name params \
    { \
        need(#name); \
        return api.name args; \
    }
GRPC_FUNCTIONS(DEF_V, DEF_R)
