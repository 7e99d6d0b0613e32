/*
 * oip.c - the small helpers of the Open Inference Protocol data model
 * (oip.h): datatype names and sizes from the one OIP_DATATYPE_MAP table,
 * element counts, UTF-8 checks and escaping for text that came from a
 * client, and releasing a backend's response. Both protocol fronts
 * (REST and gRPC) and the backends use them.
 */
#include "serve/oip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} datatypes[] = {
    [OIP_INVALID] = {"INVALID", 0},
#define OIP__XX(e, nm, sz) [OIP_##e] = {nm, sz},
    OIP_DATATYPE_MAP(OIP__XX)
#undef OIP__XX
};

#define NDATATYPES (sizeof datatypes / sizeof datatypes[0])

oip_datatype oip_datatype_parse(const char *s)
{
    if (!s)
        return OIP_INVALID;
    for (size_t i = 1; i < NDATATYPES; i++)
        if (strcmp(s, datatypes[i].name) == 0)
            return (oip_datatype)i;
    return OIP_INVALID;
}

const char *oip_datatype_name(oip_datatype t)
{
    if ((size_t)t >= NDATATYPES)
        return datatypes[OIP_INVALID].name;
    return datatypes[t].name;
}

size_t oip_datatype_size(oip_datatype t)
{
    if ((size_t)t >= NDATATYPES)
        return 0;
    return datatypes[t].size;
}

int64_t oip_tensor_nelem(const oip_tensor *t)
{
    if (t->ndim < 0 || t->ndim > OIP_MAX_DIMS)
        return -1;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0)
            return -1;
        if (__builtin_mul_overflow(n, t->shape[i], &n))
            return -1;
    }
    return n;
}

void oip_response_free(oip_infer_response *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->noutputs; i++) {
        oip_output *o = &r->outputs[i];
        free(o->name);
        free(o->data);
        for (size_t j = 0; j < o->nbytes; j++)
            free((void *)o->bytes[j].p);
        free(o->bytes);
    }
    free(r->outputs);
    free(r->model);
    free(r->version);
    free(r->id);
    json_decref(r->parameters);
    memset(r, 0, sizeof *r);
}
