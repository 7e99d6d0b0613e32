/*
 * fuzz_manifest.c - libFuzzer target for the model manifest parser and
 * validator (src/ml/bundle.h), the first code to touch a manifest that came
 * from the registry.
 *
 * Beyond "no crash, no leak": a manifest that is accepted must have canonical
 * bytes that are themselves accepted and canonicalise to the same bytes (so
 * its digest is stable), and every accessor must answer within bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ml/bundle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qn_err err;
    qml_manifest *m = NULL;
    if (qml_manifest_parse(data, size, &m, &err) < 0)
        return 0;
    for (size_t i = 0; i < qml_manifest_n_inputs(m); i++)
        if (qml_manifest_input(m, i)->ndim < 1)
            abort();
    for (size_t i = 0; i < qml_manifest_n_outputs(m); i++)
        if (qml_manifest_output(m, i)->ndim < 1)
            abort();
    for (size_t i = 0; i < qml_manifest_n_files(m); i++) {
        const char *name = qml_manifest_file_name(m, i);
        if (strchr(name, '/') || strstr(name, "..") || !qml_manifest_file_digest(m, name))
            abort();
    }
    char *c1 = NULL, *c2 = NULL;
    size_t l1 = 0, l2 = 0;
    qml_manifest *again = NULL;
    char digest[QML_DIGEST_STR];
    if (qml_manifest_canonical(m, &c1, &l1, &err) == 0) {
        if (qml_manifest_parse(c1, l1, &again, &err) < 0)
            abort();  /* accepted once, refused in canonical form */
        if (qml_manifest_canonical(again, &c2, &l2, &err) == 0 &&
            (l1 != l2 || memcmp(c1, c2, l1) != 0))
            abort();  /* canonical form is not a fixed point */
        qml_manifest_digest(m, digest, &err);
    }
    free(c1);
    free(c2);
    qml_manifest_free(again);
    qml_manifest_free(m);
    return 0;
}
