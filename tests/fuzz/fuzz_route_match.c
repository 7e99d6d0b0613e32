/*
 * fuzz_route_match.c - the request-path parser of the HTTP server: percent
 * decoding, segment splitting and template matching, on arbitrary bytes.
 *
 * Input: a template, a newline, then a raw path. Checks that nothing reads or
 * writes out of bounds and that what matches is consistent: each parameter
 * value is a non-empty decoded segment without NUL bytes, and decoding the
 * whole path never yields more bytes than it was given.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/http_route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *in = malloc(size + 1);
    if (!in)
        return 0;
    memcpy(in, data, size);
    in[size] = '\0';
    char *nl = memchr(in, '\n', size);
    const char *tmpl = "/v1/models/{name}/versions/{n}";
    const char *path = in;
    if (nl) {
        *nl = '\0';
        tmpl = in;
        path = nl + 1;
    }

    char *dec = malloc(size + 1);
    long d = qn__pct_decode(path, strlen(path), dec);
    assert(d < 0 || (size_t)d <= strlen(path));

    size_t cap = strlen(path) + 1;
    char *buf = malloc(cap);
    const char *segs[QN__MAX_SEGMENTS];
    size_t nsegs = 0, np = 0;
    qn__param ps[QN__MAX_PARAMS];
    if (dec && buf && qn__path_split(path, buf, cap, segs, QN__MAX_SEGMENTS, &nsegs) == 0) {
        assert(nsegs >= 1 && nsegs <= QN__MAX_SEGMENTS);
        (void)qn__template_valid(tmpl);
        if (qn__template_match(tmpl, segs, nsegs, ps, QN__MAX_PARAMS, &np)) {
            assert(np <= nsegs);
            for (size_t i = 0; i < np; i++) {
                assert(ps[i].value[0] != '\0');
                assert(ps[i].name >= tmpl && ps[i].name + ps[i].name_len <= tmpl + strlen(tmpl));
            }
        }
    }
    free(buf);
    free(dec);
    free(in);
    return 0;
}
