/*
 * fuzz_grpc_infer.c - the whole ModelInfer path of quern-serve's gRPC front
 * on arbitrary bytes, without the transport: protobuf decoding under its
 * memory budget, typed/raw tensor conversion (BYTES length prefixes, shapes,
 * narrow integer ranges), parameters, the test backend's "sum" and "echo"
 * models, and encoding the reply. Every input must end in a reply or in an
 * error with a code and a message; sanitizers catch the rest.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/utf8.h"
#include "serve/grpc_server.h"
#include "../unit/serve/sum_backend.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sum_backend sb;
    static int ready;
    if (!ready) {
        sum_backend_init(&sb);
        ready = 1;
    }
    qn_err err;
    qn_err_clear(&err);
    serve__grpc_infer_out out;
    int rc = serve__grpc_infer(&sb.be, data, size, NULL, &out, &err);
    if (rc == 0) {
        assert(out.reply && out.reply_len > 0);
    } else {
        assert(rc < 0 && err.code == rc && err.msg[0]);
        assert(qn_utf8_valid(err.msg, strlen(err.msg))); /* a status any client can decode */
        assert(!out.reply);
    }
    serve__grpc_infer_out_free(&out);
    return 0;
}
