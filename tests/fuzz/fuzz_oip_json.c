/*
 * fuzz_oip_json.c - quern-serve's two readers of an infer request's JSON
 * (src/serve/oip_json.c) on arbitrary bytes, against each other. The fast
 * reader may decline anything; whatever it accepts, the general (jansson)
 * reader must accept too and read into the same request: id, every input's
 * name, datatype, shape and data bytes (NaN bit patterns included), the
 * requested outputs. Sanitizers catch the rest.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/utf8.h"
#include "serve/oip_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void same_request(const oip_infer_request *f, const oip_infer_request *t)
{
    if (!same_str(f->id, t->id) || t->parameters || f->ninputs != t->ninputs ||
        f->noutputs != t->noutputs || !f->outputs != !t->outputs)
        abort();
    for (size_t i = 0; i < f->ninputs; i++) {
        const oip_tensor *a = &f->inputs[i], *b = &t->inputs[i];
        if (!same_str(a->name, b->name) || a->datatype != b->datatype || a->ndim != b->ndim ||
            memcmp(a->shape, b->shape, sizeof a->shape) != 0 || a->data_len != b->data_len ||
            a->nbytes != b->nbytes || b->parameters)
            abort();
        if (a->data_len && memcmp(a->data, b->data, a->data_len) != 0)
            abort();
        for (size_t k = 0; k < a->nbytes; k++)
            if (a->bytes[k].len != b->bytes[k].len ||
                memcmp(a->bytes[k].p, b->bytes[k].p, a->bytes[k].len) != 0)
                abort();
    }
    for (size_t i = 0; i < f->noutputs; i++)
        if (!same_str(f->outputs[i], t->outputs[i]))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qn_arena *a = qn_arena_new(0);
    if (!a)
        return 0;
    oip_json_req fast, tree;
    memset(&fast, 0, sizeof fast);
    memset(&tree, 0, sizeof tree);
    qn_err err;
    qn_err_clear(&err);
    const char *body = (const char *)data;
    int fr = oip_json_parse_fast(body, size, a, &fast);
    int tr = oip_json_parse_tree(body, size, size, a, &tree, &err);
    if (fr == 0) {
        if (tr != 0)
            abort(); /* the fast reader took a body the general one refuses */
        same_request(&fast.rq, &tree.rq);
    } else if (fr != 1) {
        abort();
    } else if (tr < 0 && (!err.msg[0] || !qn_utf8_valid(err.msg, strlen(err.msg)))) {
        abort(); /* an error must say what is wrong, in text any client can take */
    }
    /* The entry point must answer as the general reader does. */
    oip_json_req both;
    qn_err e2;
    qn_err_clear(&e2);
    int br = oip_json_parse_infer(body, size, size, a, &both, &e2);
    if ((br < 0) != (tr < 0) || (br < 0 && (e2.code != err.code || strcmp(e2.msg, err.msg))))
        abort();
    oip_json_req_free(&both);
    oip_json_req_free(&tree);
    qn_arena_free(a);
    return 0;
}
