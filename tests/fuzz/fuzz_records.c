/* fuzz_records.c - libFuzzer target for ml/records: request bodies of events
 * (JSON, NDJSON, CSV) into canonical rows, as quern-ingest reads them. The
 * first byte picks the format, a schema and tight limits. Checks: every good
 * row is a JSON object that parses back, within the row bound, and the
 * error list never exceeds its bound. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ml/records.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static qml_rec_schema *schema[2];
    if (!schema[0]) {
        static const char *const docs[2] = {
            "{\"columns\":[{\"name\":\"user\",\"type\":\"categorical\",\"required\":true},"
            "{\"name\":\"n\",\"type\":\"numeric\"},{\"name\":\"t\",\"type\":\"timestamp\"},"
            "{\"name\":\"b\",\"type\":\"boolean\"}],\"additional_columns\":false}",
            "{\"columns\":[{\"name\":\"n\",\"type\":\"numeric\"}]}"};
        for (int i = 0; i < 2; i++) {
            json_t *d = json_loads(docs[i], 0, NULL);
            qn_err err;
            if (!d || qml_rec_schema_parse(d, &schema[i], &err) < 0)
                abort();
            json_decref(d);
        }
    }
    uint8_t sel = size ? data[0] : 0;
    if (size) {
        data++;
        size--;
    }
    qml_rec_opts o;
    qml_rec_opts_init(&o);
    if (sel & 16) {
        o.max_rows = 4;
        o.max_row_bytes = 24;
        o.max_cols = 3;
        o.max_errors = 2;
    }
    qml_rec_format fmt = (qml_rec_format)((sel & 3) % 3);
    const qml_rec_schema *s = (sel & 4) ? schema[(sel >> 3) & 1] : NULL;
    qml_rec_batch b;
    qn_err err;
    qml_rec_batch_init(&b);
    if (qml_rec_parse((const char *)data, size, fmt, s, &o, &b, &err) == 0) {
        if (b.nerrors > o.max_errors || b.nerrors > b.nbad)
            abort();
        for (size_t i = 0; i < b.nrows; i++) {
            size_t n = b.off[i + 1] - b.off[i];
            json_t *v = json_loadb(b.text + b.off[i], n, 0, NULL);
            if (!v || !json_is_object(v) || n > o.max_row_bytes)
                abort();
            json_decref(v);
        }
    }
    qml_rec_batch_free(&b);
    return 0;
}
