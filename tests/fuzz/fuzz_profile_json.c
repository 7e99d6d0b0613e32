/*
 * fuzz_profile_json.c - the reference-profile loader (ml/profile.h) on
 * arbitrary bytes. A profile arrives inside a model bundle, i.e. from outside;
 * whatever loads must also survive a JSON re-dump and a drift run against a
 * small fixed window, since that is what quern-monitor does with it next.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ml/frame.h"
#include "ml/profile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static qml_frame *window(const qml_profile *p)
{
    qn_err err;
    qml_frame *f = qml_frame_new();
    if (!f)
        return NULL;
    for (size_t i = 0; i < p->ncols; i++)
        if (qml_frame_add_column(f, p->cols[i].name, p->cols[i].type, &err) < 0)
            goto fail;
    for (int r = 0; r < 8; r++) {
        for (size_t i = 0; i < p->ncols; i++) {
            qml_column *c = qml_frame_col(f, i);
            if (c->type == QML_CATEGORICAL) {
                const char *s = p->cols[i].ncat ? p->cols[i].cats[r % p->cols[i].ncat] : "u";
                if (r == 7)
                    s = "unseen";
                qml_col_push_str(c, s, strlen(s));
            } else {
                qml_col_push_num(c, c->type == QML_BOOLEAN ? r % 2 : r * 0.37 - 1);
            }
        }
        qml_frame_end_row(f);
    }
    return f;
fail:
    qml_frame_free(f);
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qn_err err;
    qml_profile *p;
    if (qml_profile_from_json((const char *)data, size, &p, &err) < 0)
        return 0;
    char *s = qml_profile_to_json(p, &err);
    if (s) {
        qml_profile *q;
        if (qml_profile_from_json(s, strlen(s), &q, &err) < 0)
            abort();  /* whatever we write we must read back */
        char *s2 = qml_profile_to_json(q, &err);
        if (!s2 || strcmp(s, s2) != 0)
            abort();
        free(s2);
        qml_profile_free(q);
        free(s);
    }
    qml_frame *f = window(p);
    if (f) {
        qml_drift_opts o;
        qml_drift_opts_default(&o);
        for (int m = 0; m <= QML_DRIFT_PSI; m++) {
            qml_drift_column_opts co[64];
            size_t n = p->ncols < 64 ? p->ncols : 64;
            for (size_t i = 0; i < n; i++)
                co[i] = (qml_drift_column_opts){p->cols[i].name, (qml_drift_method)m, 0.05};
            o.columns = co;
            o.n_columns = n;
            qml_drift_report *r;
            if (qml_profile_drift(p, f, &o, &r, &err) == 0)
                qml_drift_report_free(r);
        }
        qml_frame_free(f);
    }
    static const double vals[5] = {-1.5, 0, NAN, 0.25, 3e9};
    for (size_t i = 0; i < p->ncols; i++) {
        qml_drift_feature ft;
        if (qml_profile_drift_values(p, p->cols[i].name, vals, 5, NULL, &ft, &err) == 0)
            free(ft.column);
    }
    qml_profile_free(p);
    return 0;
}
