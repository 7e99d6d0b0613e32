/* fuzz_csv.c - libFuzzer target for the CSV reader. The first byte picks the
 * dialect (separator, header, trim, skip, tiny limits; separators 5-7 add
 * sniffing, decimal comma, Latin-1/Windows-1252 and other quotes) so one
 * corpus covers them all; the rest is the CSV text, read in small chunks and
 * all at once. */
#include <stdint.h>
#include <stdlib.h>

#include "ml/csv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *seps[] = {",", ", ", ";", "\t", "||", "auto", ";", "auto"};
    static const char *na[] = {"?", "NA"};
    static const qml_field_spec fs[] = {{"a", QML_NUMERIC}, {"b", QML_INFER}, {"c", QML_TIMESTAMP}};
    uint8_t sel = size ? data[0] : 0;
    if (size) {
        data++;
        size--;
    }
    qml_csv_opts o;
    qml_csv_opts_init(&o);
    o.sep = seps[sel & 7];
    switch (sel & 7) {
    case 5: /* sniffed; no quoting with trim */
        o.quote = (sel & 16) ? QML_CSV_NO_QUOTE : '"';
        break;
    case 6:
        o.decimal_comma = 1;
        o.encoding = "latin-1";
        break;
    case 7:
        o.decimal_comma = 1;
        o.encoding = "windows-1252";
        o.quote = '\'';
        break;
    }
    o.has_header = !(sel & 8);
    o.trim = (sel & 16) != 0;
    o.skip_lines = (sel & 32) ? 1 : 0;
    o.na_values = na;
    o.n_na_values = 2;
    if (sel & 64) {
        o.max_field_bytes = 7;
        o.max_fields = 5;
        o.infer_rows = 2;
    }
    if ((sel & 128) && (sel & 8)) {
        o.fields = fs;
        o.n_fields = 3;
    }
    qn_err err;
    qml_csv_reader *r = qml_csv_open_mem(data, size, &o, &err);
    if (r) {
        qml_frame *f;
        while (qml_csv_next(r, 3, &f, &err) > 0)
            qml_frame_free(f);
        const qml_read_report *rep = qml_csv_report(r);
        if (rep->rows_read != rep->rows_ok + rep->rows_bad)
            abort();
        qml_csv_close(r);
    }
    qml_frame *all;
    qml_read_report rep;
    if (qml_csv_read_all_mem(data, size, &o, &all, &rep, &err) == 0) {
        if (qml_frame_nrows(all) != rep.rows_ok)
            abort();
        qml_frame_free(all);
    }
    return 0;
}
