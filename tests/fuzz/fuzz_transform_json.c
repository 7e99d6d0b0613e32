/* fuzz_transform_json.c - the feature-pipeline JSON loader (it reads
 * manifests fetched from the registry). Whatever loads must serialize back to
 * text that loads to the same text, and transform a row of missing values
 * without crashing. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ml/transform.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qml_features *f;
    qn_err err;
    if (qml_features_from_json((const char *)data, size, &f, &err) < 0)
        return 0;
    char *j1 = qml_features_to_json(f, &err);
    qml_features *g;
    if (j1 && qml_features_from_json(j1, strlen(j1), &g, &err) == 0) {
        char *j2 = qml_features_to_json(g, &err);
        assert(j2 && strcmp(j1, j2) == 0);
        free(j2);
        qml_features_free(g);
    }
    free(j1);
    size_t n = qml_features_n_inputs(f), d = qml_features_n_features(f);
    qml_raw_input *in = calloc(n, sizeof *in);
    qml_raw_value miss = {QML_RAW_STR, .str = "1"};
    float *row = malloc(d * sizeof *row);
    if (in && row) {
        for (size_t i = 0; i < n; i++)
            in[i] = (qml_raw_input){qml_features_input(f, i), &miss};
        qml_features_transform_raw(f, in, n, 1, row, &err);
        miss.kind = QML_RAW_MISSING;
        qml_features_transform_raw(f, in, n, 1, row, &err);
    }
    free(in);
    free(row);
    qml_features_free(f);
    return 0;
}
