/* fuzz_npy.c - the .npy header parser on arbitrary bytes: it must accept or
 * refuse, never crash, read out of bounds or leak. */
#include <stddef.h>
#include <stdint.h>

#include "ml/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qml_npy a;
    qn_err err;
    if (qml_npy_parse(data, size, "fuzz", &a, &err) == 0)
        qml_npy_release(&a);
    return 0;
}
