/* fuzz_page_token.c - page tokens come from clients' query strings: decoding
 * must never crash, and whatever decodes re-encodes to a token that decodes to
 * the same key. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *tok = malloc(size + 1);
    if (!tok)
        return 0;
    memcpy(tok, data, size);
    tok[size] = '\0';
    char key[QN_PAGE_KEY_MAX], again[QN_PAGE_KEY_MAX];
    qn_err err;
    if (qn_page_token_decode(tok, "models", key, sizeof key, &err) == 0 && *tok) {
        char *re = qn_page_token_encode("models", key);
        assert(re);
        assert(qn_page_token_decode(re, "models", again, sizeof again, &err) == 0);
        assert(strcmp(key, again) == 0);
        free(re);
    }
    free(tok);
    return 0;
}
