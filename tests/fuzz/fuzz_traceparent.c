/*
 * fuzz_traceparent.c - fuzz target for the traceparent parser (trace.h).
 *
 * The header value comes straight off the network. Besides memory safety,
 * this checks the parser's contract: anything it accepts re-formats to a
 * version-00 header that it accepts again with the same ids, whose ids are
 * not all zero and whose hex is lower case.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    qn_trace_ctx c;
    if (qn_traceparent_parse(s, &c) == 0) {
        char out[QN_TRACEPARENT_LEN + 1];
        qn_traceparent_format(&c, out);
        if (strlen(out) != QN_TRACEPARENT_LEN)
            abort();
        qn_trace_ctx again;
        if (qn_traceparent_parse(out, &again) != 0)
            abort();
        if (memcmp(again.trace_id, c.trace_id, 16) || memcmp(again.span_id, c.span_id, 8) ||
            again.flags != c.flags)
            abort();
        static const uint8_t zero[16];
        if (!memcmp(c.trace_id, zero, 16) || !memcmp(c.span_id, zero, 8))
            abort();
        /* What was accepted as version 00 is byte-identical when re-emitted. */
        if (s[0] == '0' && s[1] == '0' && memcmp(out, s, QN_TRACEPARENT_LEN) != 0)
            abort();
    }
    free(s);
    return 0;
}
