/* fuzz_mlflow_parse.c - the MLflow API's parsers of client text
 * (src/registry/mlflow_parse.c): a search filter, and an MLmodel file.
 * The first byte picks which ('f' filter, anything else MLmodel). A filter
 * either fails with a message or yields 1..MLF_MAX_CONDS conditions, each
 * with a known comparator and at least one value, and evaluating them
 * against a model never crashes; an MLmodel never fails, and what it reads
 * is NUL-terminated text. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "registry/mlflow_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    char *text = malloc(size);
    if (!text)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    if (data[0] == 'f') {
        static const char *const keys[] = {"name", "run_id", "source_path", "version_number", NULL};
        qn_arena *a = qn_arena_new(4096);
        mlf_cond conds[MLF_MAX_CONDS];
        int n = -1;
        qn_err err;
        if (a && mlf_filter(a, text, keys, conds, &n, &err) == 0) {
            assert(n >= 0 && n <= MLF_MAX_CONDS);
            for (int i = 0; i < n; i++) {
                assert(conds[i].nvals >= 1 && conds[i].nvals <= 32);
                assert(strstr("= != LIKE ILIKE IN", conds[i].op));
            }
            json_t *item = json_pack("{s:s, s:s, s:s, s:s, s:[{s:s, s:s}]}", "name", "ads-ctr", "version", "3",
                                     "run_id", "r1", "source", "s3://b/x", "tags", "key", "team", "value", "ml");
            (void)mlf_matches(item, conds, n);
            json_decref(item);
        } else if (a) {
            assert(err.msg[0]);
        }
        qn_arena_free(a);
    } else {
        mlf_mlmodel m;
        mlf_mlmodel_parse(text, &m);
        assert(!m.xgb_data || strlen(m.xgb_data) < size);
        assert(!m.sig_inputs || strlen(m.sig_inputs) < size);
        mlf_mlmodel_free(&m);
    }
    free(text);
    return 0;
}
