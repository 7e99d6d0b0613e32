/* fuzz_xgb_forest.c - the XGBoost model JSON read by libquern-ml's own tree
 * walker (model files come from outside: quern models import). Parsing must
 * never crash; a forest that parses walks any row to a finite-or-NaN answer
 * without reading out of bounds. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "ml/xgb_forest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qml__forest *f;
    if (qml__forest_parse((const char *)data, size, &f) < 0)
        return 0;
    size_t nf = qml__forest_n_features(f), no = qml__forest_n_outputs(f);
    if (nf <= 4096) {
        float *x = calloc(2 * nf, sizeof *x), *out = calloc(2 * no, sizeof *out);
        if (x && out) {
            for (size_t j = 0; j < nf; j++)
                x[nf + j] = NAN;
            qml__forest_predict(f, x, 2, nf, out);
        }
        free(x);
        free(out);
    }
    qml__forest_free(f);
    return 0;
}
