/* fuzz_clean_json.c - libFuzzer target for cleaning-step JSON: parse it and,
 * when it parses, apply it to a small frame of every column type and build
 * interactions from the result. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ml/clean.h"
#include "ml/csv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char frame_csv[] =
    "user,event,qty,ts,code,flag\n"
    "u1,view,1,2011-01-01,C100,true\n"
    "u1,cart,,2011-01-02,A200,false\n"
    "u2,purchase,5,2011-01-03 10:00:00,A300,\n"
    ",view,100,2011-01-05,B400,true\n"
    "3,share,-3.5,2011-02-01,,false\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qn_err err;
    qml_clean_steps *s;
    if (qml_clean_parse((const char *)data, size, &s, &err) < 0)
        return 0;
    qml_frame *in, *out;
    if (qml_csv_read_all_mem(frame_csv, strlen(frame_csv), NULL, &in, NULL, &err) < 0)
        abort();
    qml_clean_report rep;
    if (qml_clean_apply(in, s, &out, &rep, &err) == 0) {
        if (rep.rows_out != qml_frame_nrows(out))
            abort();
        qml_interactions ia;
        if (qml_frame_ncols(out) >= 2 &&
            qml_interactions_build(out, qml_frame_col(out, 0)->name, qml_frame_col(out, 1)->name,
                                   NULL, &ia, &err) == 0)
            qml_interactions_free(&ia);
        qml_frame_free(out);
    }
    qml_frame_free(in);
    qml_clean_free(s);
    return 0;
}
