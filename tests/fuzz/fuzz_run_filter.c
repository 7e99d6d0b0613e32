/* fuzz_run_filter.c - MLflow search filters and order_by clauses come from
 * clients (runs/search): parsing must never crash, a refusal must say where
 * (a character position) or which limit, and whatever parses compiles to
 * SQL for both dialects with no quote in the text: every value is bound. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "registry/filter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    qn_err err = {0};
    trk_filter *f = NULL;
    int rc = trk_filter_parse(text, &f, &err);
    if (rc < 0) {
        assert(f == NULL);
        assert(rc == QN_INVALID_ARGUMENT || rc == QN_RESOURCE_EXHAUSTED);
        assert(rc != QN_INVALID_ARGUMENT || strstr(err.msg, "character") || strstr(err.msg, "at most"));
    } else {
        assert(f && f->n <= TRK_FILTER_MAX_CONDS);
        for (int pg = 0; pg < 2; pg++) {
            trk_query q;
            trk_query_init(&q, pg);
            trk_query_where(&q, f);
            if (trk_query_bind(&q, NULL, &err) == 0 && q.sql.data)
                assert(!strchr(q.sql.data, '\'') && !strchr(q.sql.data, '"') && !strchr(q.sql.data, ';'));
            trk_query_free(&q);
        }
        trk_filter_free(f);
    }
    if (trk_filter_parse_experiments(text, &f, &err) == 0) {
        assert(f && f->experiments);
        for (size_t i = 0; i < f->n; i++)
            assert(f->conds[i].kind == TRK_TAG || f->conds[i].kind == TRK_ATTR);
        trk_filter_free(f);
    } else {
        assert(f == NULL);
    }
    trk_orders o = {.n = 0};
    if (trk_order_parse(text, &o, &err) == 0) {
        assert(o.n == 1 && o.o[0].key);
        trk_query q;
        trk_query_init(&q, 0);
        trk_query_order_joins(&q, &o);
        trk_query_order_by(&q, &o);
        if (trk_query_bind(&q, NULL, &err) == 0)
            assert(!strchr(q.sql.data, '\''));
        trk_query_free(&q);
    }
    trk_orders_free(&o);
    free(text);
    return 0;
}
