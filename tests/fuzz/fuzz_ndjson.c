/* fuzz_ndjson.c - libFuzzer target for the NDJSON reader (memory input, as
 * ingest uses it). The first byte picks inferred or given schema and limits. */
#include <stdint.h>
#include <stdlib.h>

#include "ml/ndjson.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const qml_field_spec fs[] = {{"user", QML_CATEGORICAL}, {"n", QML_NUMERIC},
                                        {"t", QML_TIMESTAMP}, {"b", QML_BOOLEAN}};
    uint8_t sel = size ? data[0] : 0;
    if (size) {
        data++;
        size--;
    }
    qml_ndjson_opts o;
    qml_ndjson_opts_init(&o);
    if (sel & 1) {
        o.fields = fs;
        o.n_fields = 4;
        o.fields_only = (sel & 2) != 0;
    }
    if (sel & 4) {
        o.max_line_bytes = 16;
        o.infer_rows = 2;
    }
    qn_err err;
    qml_ndjson_reader *r = qml_ndjson_open_mem(data, size, &o, &err);
    if (r) {
        qml_frame *f;
        while (qml_ndjson_next(r, 2, &f, &err) > 0)
            qml_frame_free(f);
        const qml_read_report *rep = qml_ndjson_report(r);
        if (rep->rows_read != rep->rows_ok + rep->rows_bad)
            abort();
        qml_ndjson_close(r);
    }
    return 0;
}
