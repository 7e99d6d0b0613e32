/* fuzz_link_header.c - the Link header of an http source's page comes from an
 * outside server: finding its rel="next" target must never read past the
 * value or overflow the output, and what it finds is a <...> target of the
 * value, without the brackets. Each input is tried with a roomy and a tiny
 * output buffer. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy: reading past it is caught by the sanitizers. */
    char *v = malloc(size ? size : 1);
    if (!v)
        return 0;
    memcpy(v, data, size);
    static const size_t caps[] = {2048, 8, 1};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        char out[2048];
        memset(out, 'Z', sizeof out);
        if (qn_link_next(v, size, out, caps[i]) == 0) {
            size_t n = strlen(out);
            assert(n < caps[i]);
            assert(!memchr(out, '>', n));
            /* the target appears in the value between '<' and '>' */
            int found = 0;
            for (size_t j = 0; !found && j + n + 2 <= size; j++)
                found = v[j] == '<' && memcmp(v + j + 1, out, n) == 0 && v[j + n + 1] == '>';
            assert(found);
        }
    }
    free(v);
    return 0;
}
