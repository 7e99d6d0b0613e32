/* fuzz_linear_json.c - the linear-model JSON loader (model files come from
 * the registry). Whatever loads must round-trip to the same text and predict
 * one row without crashing. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ml/linear.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qml_linear *m;
    qn_err err;
    if (qml_linear_from_json((const char *)data, size, &m, &err) < 0)
        return 0;
    char *j1 = qml_linear_to_json(m, &err);
    qml_linear *g;
    if (j1 && qml_linear_from_json(j1, strlen(j1), &g, &err) == 0) {
        char *j2 = qml_linear_to_json(g, &err);
        assert(j2 && strcmp(j1, j2) == 0);
        free(j2);
        qml_linear_free(g);
    }
    free(j1);
    size_t d = qml_linear_n_features(m);
    float *x = calloc(d, sizeof *x);
    double *out = malloc(qml_linear_n_outputs(m) * sizeof *out);
    if (x && out) {
        x[0] = 1.0f;
        qml_linear_predict(m, x, 1, d, out, &err);
    }
    free(x);
    free(out);
    qml_linear_free(m);
    return 0;
}
