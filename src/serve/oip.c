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

/* Length of the well-formed character at p[0..n), or 0 when p starts
 * with a byte that begins none. */
static size_t utf8_char(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
        len = 2;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3;
        cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((p[k] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

int oip_utf8_valid(const void *src, size_t n)
{
    const uint8_t *p = src;
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) { /* the common case, byte by byte */
            i++;
            continue;
        }
        size_t len = utf8_char(p + i, n - i);
        if (!len)
            return 0;
        i += len;
    }
    return 1;
}

size_t oip_utf8_escape(char *dst, size_t cap, const void *src, size_t n)
{
    const uint8_t *p = src;
    size_t o = 0;
    for (size_t i = 0; i < n && p[i];) {
        size_t len = utf8_char(p + i, n - i);
        if (len) {
            if (o + len >= cap)
                break;
            memcpy(dst + o, p + i, len);
            o += len;
            i += len;
        } else {
            if (o + 4 >= cap)
                break;
            snprintf(dst + o, 5, "\\x%02X", p[i]);
            o += 4;
            i++;
        }
    }
    dst[o] = '\0';
    return o;
}

void oip_err_utf8(qn_err *err)
{
    if (!err)
        return;
    size_t n = strnlen(err->msg, sizeof err->msg);
    if (n == sizeof err->msg) /* not terminated: never from qn_err_set, but be safe */
        n--;
    if (n == sizeof err->msg - 1) {
        /* Possibly cut by the buffer's end: drop a character cut in half. */
        size_t k = n, cont = 0;
        while (k > 0 && cont < 3 && ((uint8_t)err->msg[k - 1] & 0xC0) == 0x80)
            k--, cont++;
        if (k > 0 && (uint8_t)err->msg[k - 1] >= 0xC0) {
            uint8_t lead = (uint8_t)err->msg[k - 1];
            size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
            if (cont + 1 < want)
                n = k - 1;
        }
    }
    if (oip_utf8_valid(err->msg, n)) {
        err->msg[n] = '\0';
        return;
    }
    char tmp[sizeof err->msg];
    oip_utf8_escape(tmp, sizeof tmp, err->msg, n);
    memcpy(err->msg, tmp, sizeof tmp);
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
