/* test_tracking.c - the tracking store (src/registry/tracking.c) and the
 * search grammar (filter.c), in-process over the registry's real schema: on
 * SQLite, and on PostgreSQL too when QUERN_TEST_PG names a server
 * (run_store_pg.sh; a new schema per test).
 *
 * It checks MLflow's rules as the store keeps them: the Default experiment,
 * name clashes, params immutable (same value accepted), a failed batch
 * leaving nothing behind, the latest metric by (step, timestamp), NaN and
 * infinities, search filters and orders against a brute-force reference on
 * the same runs, paging, deleted runs, and lineage both ways. Filters that
 * do not parse must name the character where they go wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/json.h"
#include "registry/db.h"

#include "registry_store.h"
#include "registry/filter.h"
#include "registry/tracking.h"

static int setup(void **state)
{
    (void)state;
    return reg_store_setup("trk");
}

/* ---- the grammar -------------------------------------------------------------------- */

static void test_filter_parses(void **state)
{
    (void)state;
    qn_err err;
    trk_filter *f = NULL;
    assert_int_equal(trk_filter_parse("metrics.x > 0.9 and params.kind = 'xgboost' and tags.\"a b\" != 'c' and "
                                      "attributes.status = 'FINISHED'",
                                      &f, &err),
                     0);
    assert_int_equal(f->n, 4);
    assert_int_equal(f->conds[0].kind, TRK_METRIC);
    assert_string_equal(f->conds[0].key, "x");
    assert_int_equal(f->conds[0].op, TRK_GT);
    assert_true(f->conds[0].numeric && f->conds[0].num == 0.9);
    assert_int_equal(f->conds[1].kind, TRK_PARAM);
    assert_string_equal(f->conds[1].strs[0], "xgboost");
    assert_int_equal(f->conds[2].kind, TRK_TAG);
    assert_string_equal(f->conds[2].key, "a b");
    assert_int_equal(f->conds[2].op, TRK_NE);
    assert_int_equal(f->conds[3].kind, TRK_ATTR);
    assert_string_equal(f->conds[3].key, "r.status");
    trk_filter_free(f);

    /* aliases, backticks, dotted keys, IN, LIKE, ILIKE, case-insensitive keywords */
    assert_int_equal(trk_filter_parse("metric.`val auc` <= -1e-3 AND param.a.b LIKE '%x_' And tag.t ILIKE 'A%' "
                                      "and run.run_id IN ('a', 'b''c') and attribute.start_time >= 10 and "
                                      "attributes.run_name NOT IN (\"x\")",
                                      &f, &err),
                     0);
    assert_int_equal(f->n, 6);
    assert_string_equal(f->conds[0].key, "val auc");
    assert_true(f->conds[0].num == -1e-3);
    assert_string_equal(f->conds[1].key, "a.b");
    assert_int_equal(f->conds[1].op, TRK_LIKE);
    assert_int_equal(f->conds[2].op, TRK_ILIKE);
    assert_int_equal(f->conds[3].op, TRK_IN);
    assert_int_equal(f->conds[3].nstrs, 2);
    assert_string_equal(f->conds[3].strs[1], "b'c");
    assert_true(f->conds[4].numeric);
    assert_int_equal(f->conds[5].op, TRK_NOT_IN);
    trk_filter_free(f);

    assert_int_equal(trk_filter_parse("", &f, &err), 0);
    assert_int_equal(f->n, 0);
    trk_filter_free(f);
    assert_int_equal(trk_filter_parse(NULL, &f, &err), 0);
    trk_filter_free(f);
}

static void test_filter_errors_point_at_the_token(void **state)
{
    (void)state;
    static const struct {
        const char *text, *needle;
    } bad[] = {
        {"metrics.auc >> 0.9", "character 14"},
        {"metrics.auc > 'x'", "character 15"},
        {"params.kind = 3", "character 15"},
        {"params.kind > 'a'", "comparator > at character 13"},
        {"metrics.auc > 1 or params.a = 'b'", "character 17, found \"or\""},
        {"metrics.auc > 1 params.a = 'b'", "character 17"},
        {"foo.bar = 'x'", "character 1, found \"foo\""},
        {"attributes.colour = 'x'", "unknown attribute \"colour\" at character 12"},
        {"metrics auc > 1", "character 9"},
        {"params.a = 'unterminated", "character 12"},
        {"metrics.a > 1 and", "the end"},
        {"tags.t IN ('a')", "not allowed for tags"},
        {"attributes.run_id IN ('a' 'b')", "character 27"},
        {"metrics.a ~ 1", "comparator"},
        {"metrics. > 1", "a key"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qn_err err = {0};
        trk_filter *f = (trk_filter *)1;
        int rc = trk_filter_parse(bad[i].text, &f, &err);
        if (rc != QN_INVALID_ARGUMENT || !strstr(err.msg, bad[i].needle))
            fail_msg("filter %s: rc %d, message \"%s\" lacks \"%s\"", bad[i].text, rc, err.msg, bad[i].needle);
        assert_null(f);
    }
    trk_orders o = {.n = 0};
    qn_err err;
    assert_int_equal(trk_order_parse("metrics.auc DESC", &o, &err), 0);
    assert_int_equal(trk_order_parse("attributes.start_time", &o, &err), 0);
    assert_int_equal(o.n, 2);
    assert_true(o.o[0].desc && !o.o[1].desc);
    assert_int_equal(trk_order_parse("metrics.auc DOWN", &o, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "character 13"));
    trk_orders_free(&o);
}

/* Values are bound, never pasted into the SQL text. */
static void test_filter_compiles_to_bound_sql(void **state)
{
    (void)state;
    qn_err err;
    trk_filter *f = NULL;
    assert_int_equal(trk_filter_parse("params.p = 'x''; DROP TABLE runs; --' and metrics.m < 5 and "
                                      "tags.t LIKE 'a%_*'",
                                      &f, &err),
                     0);
    for (int pg = 0; pg < 2; pg++) {
        trk_query q;
        trk_query_init(&q, pg);
        trk_query_text(&q, "SELECT r.id FROM runs r WHERE 1 = 1");
        trk_query_where(&q, f);
        assert_int_equal(trk_query_bind(&q, NULL, &err), 0);
        assert_null(strstr(q.sql.data, "DROP"));
        assert_null(strstr(q.sql.data, "'x"));
        assert_int_equal(q.n, 6); /* key and value of each condition */
        assert_string_equal(q.b[1].t, "x'; DROP TABLE runs; --");
        assert_true(q.b[3].type == 'd' && q.b[3].d == 5);
        /* SQLite's LIKE ignores case: case-sensitive LIKE becomes GLOB */
        assert_non_null(strstr(q.sql.data, pg ? "LIKE ?" : "GLOB ?"));
        assert_string_equal(q.b[5].t, pg ? "a%_*" : "a*?[*]");
        trk_query_free(&q);
    }
    trk_filter_free(f);
}

/* ---- the store ---------------------------------------------------------------------- */

static qn_conn *wbegin(void)
{
    qn_err err;
    qn_conn *c = reg_db_begin(db, QN_TX_WRITE, &err);
    assert_non_null(c);
    return c;
}

static void end_ok(qn_conn *c, int rc, qn_err *err)
{
    if (rc < 0)
        fail_msg("%s", err->msg);
    assert_int_equal(reg_db_end(db, c, rc, err), 0);
}

static char *new_run(const char *exp, const char *name, int64_t start)
{
    qn_err err;
    json_t *run = NULL;
    qn_conn *c = wbegin();
    trk_run_in in = {.experiment_id = exp, .name = name, .start_time = start};
    int rc = trk_run_create(c, &in, &run, &err);
    end_ok(c, rc, &err);
    char *id = strdup(json_string_value(json_object_get(json_object_get(run, "info"), "run_id")));
    json_decref(run);
    return id;
}

/* Logs a batch given as JSON text {"metrics":[...],"params":[...],"tags":[...]}; returns rc. */
static int log_json(const char *run_id, const char *text, qn_err *err)
{
    json_t *b = json_loads(text, 0, NULL);
    assert_non_null(b);
    trk_batch batch;
    int rc = trk_batch_parse(json_object_get(b, "metrics"), json_object_get(b, "params"), json_object_get(b, "tags"),
                             1000, &batch, err);
    if (rc >= 0) {
        qn_conn *c = wbegin();
        rc = trk_log_batch(c, run_id, &batch, err);
        rc = reg_db_end(db, c, rc, err);
    }
    trk_batch_free(&batch);
    json_decref(b);
    return rc;
}

static json_t *get_run(const char *id)
{
    qn_err err;
    json_t *run = NULL;
    qn_conn *c = reg_db_begin(db, QN_TX_READ, &err);
    int rc = trk_run_get(c, id, &run, &err);
    end_ok(c, rc, &err);
    return run;
}

/* The value of key in an MLflow [{key, value...}] list, or NULL. */
static json_t *kv_get(json_t *list, const char *key)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) if (strcmp(json_string_value(json_object_get(e, "key")), key) == 0) return e;
    return NULL;
}

static void test_experiments(void **state)
{
    (void)state;
    qn_err err;
    json_t *e = NULL;
    qn_conn *c = reg_db_begin(db, QN_TX_READ, &err);
    int rc = trk_experiment_get(c, "0", &e, &err);
    end_ok(c, rc, &err);
    assert_string_equal(json_string_value(json_object_get(e, "name")), "Default");
    json_decref(e);

    int64_t id = 0;
    c = wbegin();
    json_t *tags = json_loads("[{\"key\":\"team\",\"value\":\"growth\"}]", 0, NULL);
    rc = trk_experiment_create(c, "churn", NULL, tags, 5, &id, &err);
    end_ok(c, rc, &err);
    assert_true(id >= 1);
    c = wbegin();
    rc = trk_experiment_create(c, "churn", NULL, NULL, 5, &id, &err);
    assert_int_equal(rc, QN_ALREADY_EXISTS);
    assert_non_null(strstr(err.msg, "churn"));
    reg_db_end(db, c, rc, &err);

    c = reg_db_begin(db, QN_TX_READ, &err);
    rc = trk_experiment_by_name(c, "churn", &e, &err);
    end_ok(c, rc, &err);
    char loc[64];
    snprintf(loc, sizeof loc, "mlflow-artifacts:/%lld", (long long)id);
    assert_string_equal(json_string_value(json_object_get(e, "artifact_location")), loc);
    assert_string_equal(json_string_value(json_object_get(kv_get(json_object_get(e, "tags"), "team"), "value")),
                        "growth");
    json_decref(e);

    c = reg_db_begin(db, QN_TX_READ, &err);
    assert_int_equal(trk_experiment_get(c, "999", &e, &err), QN_NOT_FOUND);
    assert_int_equal(trk_experiment_get(c, "abc", &e, &err), QN_NOT_FOUND);
    assert_int_equal(trk_experiment_by_name(c, "nope", &e, &err), QN_NOT_FOUND);
    reg_db_end(db, c, 0, &err);

    /* deleted: listed only under view 2, and no new runs */
    char ids[24];
    snprintf(ids, sizeof ids, "%lld", (long long)id);
    c = wbegin();
    rc = trk_experiment_set_stage(c, ids, 1, &err);
    end_ok(c, rc, &err);
    json_t *list = json_array();
    int more;
    c = reg_db_begin(db, QN_TX_READ, &err);
    rc = trk_experiments_list(c, on_pg, 2, NULL, NULL, -1, 10, list, &more, &err);
    end_ok(c, rc, &err);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);
    /* search_experiments' grammar: name and tags */
    trk_filter *f = NULL;
    assert_int_equal(trk_filter_parse_experiments("attributes.name LIKE 'ch%' and tags.team = 'growth'", &f, &err), 0);
    list = json_array();
    c = reg_db_begin(db, QN_TX_READ, &err);
    rc = trk_experiments_list(c, on_pg, 3, f, NULL, -1, 10, list, &more, &err);
    end_ok(c, rc, &err);
    assert_int_equal(json_array_size(list), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "name")), "churn");
    json_decref(list);
    trk_filter_free(f);
    assert_int_equal(trk_filter_parse_experiments("metrics.auc > 1", &f, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "no metrics"));
    assert_int_equal(trk_filter_parse_experiments("attributes.status = 'x'", &f, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "creation_time"));
    c = wbegin();
    trk_run_in in = {.experiment_id = ids};
    json_t *run = NULL;
    assert_int_equal(trk_run_create(c, &in, &run, &err), QN_INVALID_ARGUMENT);
    reg_db_end(db, c, -1, &err);
    json_decref(tags);
}

static void test_runs_params_metrics(void **state)
{
    (void)state;
    qn_err err;
    char *id = new_run(NULL, "first", 100);
    assert_int_equal(strlen(id), 32);
    json_t *run = get_run(id);
    json_t *info = json_object_get(run, "info");
    assert_string_equal(json_string_value(json_object_get(info, "experiment_id")), "0");
    assert_string_equal(json_string_value(json_object_get(info, "status")), "RUNNING");
    assert_string_equal(json_string_value(json_object_get(info, "run_name")), "first");
    assert_null(json_object_get(info, "end_time"));
    json_decref(run);

    assert_int_equal(log_json(id,
                              "{\"params\":[{\"key\":\"lr\",\"value\":\"0.1\"}],"
                              "\"tags\":[{\"key\":\"t\",\"value\":\"1\"}],"
                              "\"metrics\":[{\"key\":\"loss\",\"value\":3,\"step\":0,\"timestamp\":5},"
                              "{\"key\":\"loss\",\"value\":2,\"step\":1,\"timestamp\":4},"
                              "{\"key\":\"loss\",\"value\":9,\"step\":0,\"timestamp\":9},"
                              "{\"key\":\"n\",\"value\":\"NaN\"},{\"key\":\"big\",\"value\":\"Infinity\"}]}",
                              &err),
                     0);
    /* the same param value again is fine; another value is refused, and the
     * whole batch with it: its metric and tag are not logged */
    assert_int_equal(log_json(id, "{\"params\":[{\"key\":\"lr\",\"value\":\"0.1\"}]}", &err), 0);
    assert_int_equal(log_json(id,
                              "{\"params\":[{\"key\":\"lr\",\"value\":\"0.2\"}],\"tags\":[{\"key\":\"t\",\"value\":\"2\"}],"
                              "\"metrics\":[{\"key\":\"loss\",\"value\":0,\"step\":7}]}",
                              &err),
                     QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "lr"));
    assert_non_null(strstr(err.msg, "0.1"));

    run = get_run(id);
    json_t *data = json_object_get(run, "data");
    json_t *loss = kv_get(json_object_get(data, "metrics"), "loss");
    assert_int_equal(json_integer_value(json_object_get(loss, "step")), 1); /* the largest step wins */
    assert_true(json_real_value(json_object_get(loss, "value")) == 2);
    assert_string_equal(json_string_value(json_object_get(kv_get(json_object_get(data, "metrics"), "n"), "value")),
                        "NaN");
    assert_true(json_real_value(json_object_get(kv_get(json_object_get(data, "metrics"), "big"), "value")) == DBL_MAX);
    assert_string_equal(json_string_value(json_object_get(kv_get(json_object_get(data, "tags"), "t"), "value")), "1");
    json_decref(run);

    json_t *hist = json_array();
    int more = 0;
    qn_conn *c = reg_db_begin(db, QN_TX_READ, &err);
    int rc = trk_metric_history(c, id, "loss", 0, 2, hist, &more, &err);
    end_ok(c, rc, &err);
    assert_int_equal(json_array_size(hist), 2);
    assert_true(more); /* three points, one never logged (the refused batch) */
    assert_int_equal(json_integer_value(json_object_get(json_array_get(hist, 0), "timestamp")), 5);
    json_decref(hist);

    /* limits and bad values name what is wrong */
    trk_batch b;
    json_t *many = json_array();
    for (int i = 0; i < 101; i++)
        json_array_append_new(many, json_pack("{s:s, s:s}", "key", "k", "value", "v"));
    assert_int_equal(trk_batch_parse(NULL, many, NULL, 0, &b, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "limit of 100 params"));
    trk_batch_free(&b);
    json_decref(many);
    json_t *bad = json_loads("[{\"key\":\"x\",\"value\":\"abc\"}]", 0, NULL);
    assert_int_equal(trk_batch_parse(bad, NULL, NULL, 0, &b, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "'x'"));
    trk_batch_free(&b);
    json_decref(bad);
    bad = json_loads("[{\"key\":\"../x\",\"value\":1}]", 0, NULL);
    assert_int_equal(trk_batch_parse(bad, NULL, NULL, 0, &b, &err), QN_INVALID_ARGUMENT);
    trk_batch_free(&b);
    json_decref(bad);

    /* update, tags, delete */
    c = wbegin();
    json_t *inf = NULL;
    rc = trk_run_update(c, id, "FINISHED", 1796180298558LL, NULL, &inf, &err); /* past 2^31 */
    end_ok(c, rc, &err);
    assert_string_equal(json_string_value(json_object_get(inf, "status")), "FINISHED");
    assert_int_equal(json_integer_value(json_object_get(inf, "end_time")), 1796180298558LL);
    json_decref(inf);
    c = wbegin();
    assert_int_equal(trk_run_update(c, id, "DONE", -1, NULL, NULL, &err), QN_INVALID_ARGUMENT);
    reg_db_end(db, c, -1, &err);
    c = wbegin();
    rc = trk_tag_delete(c, id, "t", &err);
    end_ok(c, rc, &err);
    c = wbegin();
    assert_int_equal(trk_tag_delete(c, id, "t", &err), QN_NOT_FOUND);
    reg_db_end(db, c, -1, &err);
    c = wbegin();
    rc = trk_run_set_stage(c, id, 1, &err);
    end_ok(c, rc, &err);
    assert_int_equal(log_json(id, "{\"tags\":[{\"key\":\"u\",\"value\":\"1\"}]}", &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "deleted"));
    assert_int_equal(log_json("0123456789abcdef0123456789abcdef", "{}", &err), QN_NOT_FOUND);
    free(id);
}

/* ---- search against a reference ------------------------------------------------------------ */

#define NRUNS 40

typedef struct ref_run {
    char *id;
    double auc;     /* NAN: not logged */
    const char *kind;
    int64_t start;
    int finished;
} ref_run;

static ref_run runs[NRUNS];

static void make_runs(void)
{
    qn_err err;
    for (int i = 0; i < NRUNS; i++) {
        ref_run *r = &runs[i];
        r->start = 1000 + (i * 7) % NRUNS; /* distinct starts, shuffled */
        r->id = new_run("0", NULL, r->start);
        r->kind = i % 3 == 0 ? "xgboost" : i % 3 == 1 ? "als" : "XGBoost";
        r->auc = i % 5 == 4 ? NAN : (double)((i * 13) % NRUNS) / NRUNS;
        r->finished = i % 2;
        char text[512];
        if (isnan(r->auc))
            snprintf(text, sizeof text, "{\"params\":[{\"key\":\"kind\",\"value\":\"%s\"}]}", r->kind);
        else
            snprintf(text, sizeof text,
                     "{\"params\":[{\"key\":\"kind\",\"value\":\"%s\"}],"
                     "\"metrics\":[{\"key\":\"auc\",\"step\":0,\"value\":%.0f}]}",
                     r->kind, r->auc * NRUNS);
        assert_int_equal(log_json(r->id, text, &err), 0);
        if (!isnan(r->auc)) { /* log the real value at a later step: it becomes the latest */
            snprintf(text, sizeof text, "{\"metrics\":[{\"key\":\"auc\",\"step\":1,\"value\":%.17g}]}", r->auc);
            assert_int_equal(log_json(r->id, text, &err), 0);
        }
        if (r->finished) {
            qn_conn *c = wbegin();
            int rc = trk_run_update(c, r->id, "FINISHED", r->start + 1, NULL, NULL, &err);
            end_ok(c, rc, &err);
        }
    }
}

static int ref_cmp(const void *a, const void *b)
{
    const ref_run *x = *(ref_run *const *)a, *y = *(ref_run *const *)b;
    if (x->auc != y->auc)
        return x->auc < y->auc ? 1 : -1; /* auc DESC */
    return x->start < y->start ? 1 : -1;  /* then start_time DESC */
}

static void search(const char *filter, const char *order, int64_t offset, int64_t limit, json_t **out, int *more)
{
    qn_err err;
    trk_filter *f = NULL;
    trk_orders o = {.n = 0};
    assert_int_equal(trk_filter_parse(filter, &f, &err), 0);
    if (order)
        assert_int_equal(trk_order_parse(order, &o, &err), 0);
    int64_t exp0 = 0;
    trk_search s = {.experiments = &exp0, .nexperiments = 1, .view = 1, .filter = f, .order = &o, .offset = offset,
                    .limit = limit};
    *out = json_array();
    qn_conn *c = reg_db_begin(db, QN_TX_READ, &err);
    int rc = trk_runs_search(c, on_pg, &s, *out, more, &err);
    end_ok(c, rc, &err);
    trk_filter_free(f);
    trk_orders_free(&o);
}

static void test_search_matches_reference(void **state)
{
    (void)state;
    make_runs();
    /* metric and param filter, ordered by the metric, paged by 4 */
    ref_run *want[NRUNS];
    size_t nwant = 0;
    for (int i = 0; i < NRUNS; i++)
        if (!isnan(runs[i].auc) && runs[i].auc > 0.3 && strcmp(runs[i].kind, "xgboost") == 0)
            want[nwant++] = &runs[i];
    qsort(want, nwant, sizeof want[0], ref_cmp);
    assert_true(nwant >= 3);
    size_t got = 0;
    for (int64_t off = 0;; off += 4) {
        json_t *page;
        int more;
        search("metrics.auc > 0.3 and params.kind = 'xgboost'", "metrics.auc DESC", off, 4, &page, &more);
        size_t i;
        json_t *run;
        json_array_foreach(page, i, run) {
            assert_true(got < nwant);
            assert_string_equal(json_string_value(json_object_get(json_object_get(run, "info"), "run_id")),
                                want[got]->id);
            got++;
        }
        json_decref(page);
        if (!more)
            break;
    }
    assert_int_equal(got, nwant);

    /* ILIKE ignores case, LIKE does not; attributes; NOT IN */
    json_t *page;
    int more;
    search("params.kind ILIKE 'xg%'", NULL, 0, 1000, &page, &more);
    size_t n_ilike = json_array_size(page);
    json_decref(page);
    search("params.kind LIKE 'xg%'", NULL, 0, 1000, &page, &more);
    size_t n_like = json_array_size(page);
    json_decref(page);
    size_t exp_ilike = 0, exp_like = 0, exp_fin = 0;
    for (int i = 0; i < NRUNS; i++) {
        exp_ilike += strcasecmp(runs[i].kind, "xgboost") == 0;
        exp_like += strcmp(runs[i].kind, "xgboost") == 0;
        exp_fin += runs[i].finished && runs[i].start >= 1020;
    }
    assert_int_equal(n_ilike, exp_ilike);
    assert_int_equal(n_like, exp_like);
    search("attributes.status = 'FINISHED' and attributes.start_time >= 1020", "attributes.start_time ASC", 0, 1000,
           &page, &more);
    assert_int_equal(json_array_size(page), exp_fin);
    int64_t prev = 0;
    size_t i;
    json_t *run;
    json_array_foreach(page, i, run) {
        int64_t st = json_integer_value(json_object_get(json_object_get(run, "info"), "start_time"));
        assert_true(st > prev);
        prev = st;
    }
    json_decref(page);
    char f[200];
    snprintf(f, sizeof f, "attributes.run_id IN ('%s', '%s')", runs[0].id, runs[1].id);
    search(f, NULL, 0, 1000, &page, &more);
    assert_int_equal(json_array_size(page), 2);
    json_decref(page);

    /* ordering by a metric puts NaN after numbers and runs without it last:
     * here every NaN run is last (they logged no auc at all) */
    search("", "metrics.auc ASC", 0, 1000, &page, &more);
    assert_int_equal(json_array_size(page), NRUNS);
    run = json_array_get(page, NRUNS - 1);
    assert_null(kv_get(json_object_get(json_object_get(run, "data"), "metrics"), "auc"));
    json_decref(page);
    for (i = 0; i < NRUNS; i++)
        free(runs[i].id);
}

/* ---- lineage ----------------------------------------------------------------------------------- */

static void test_lineage(void **state)
{
    (void)state;
    qn_err err;
    char *id = new_run(NULL, "train", 0);
    int64_t v = 0;
    json_t *out = NULL;
    qn_conn *c = wbegin();
    reg_db_manifest man = {"{\"rows\":10}", NULL};
    int rc = reg_db_dataset_version_create(c, "events", &man, NULL, NULL, 1, &v, &out, &err);
    end_ok(c, rc, &err);
    json_decref(out);
    c = wbegin();
    rc = trk_log_dataset_version(c, id, "events", v, &err);
    end_ok(c, rc, &err);
    c = wbegin();
    assert_int_equal(trk_log_dataset_version(c, id, "events", 9, &err), QN_NOT_FOUND);
    reg_db_end(db, c, -1, &err);

    c = wbegin();
    rc = reg_db_model_create(c, "churn", "", NULL, 1, &out, &err);
    end_ok(c, rc, &err);
    json_decref(out);
    reg_db_version_in in = {.manifest = {"{}", "sha256:00"}, .run_id = id};
    int64_t mv = 0;
    c = wbegin();
    rc = reg_db_model_version_create(c, "churn", &in, 1, &mv, &out, &err);
    end_ok(c, rc, &err);
    assert_string_equal(json_string_value(json_object_get(out, "run_id")), id);
    json_decref(out);

    c = reg_db_begin(db, QN_TX_READ, &err);
    rc = trk_runs_of_dataset(c, "events", v, &out, &err);
    end_ok(c, rc, &err);
    assert_int_equal(json_array_size(out), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(out, 0), "run_id")), id);
    json_decref(out);
    c = reg_db_begin(db, QN_TX_READ, &err);
    rc = trk_versions_of_run(c, id, &out, &err);
    end_ok(c, rc, &err);
    json_t *vs = json_object_get(out, "versions");
    assert_int_equal(json_array_size(vs), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(vs, 0), "model")), "churn");
    json_decref(out);
    json_t *run = get_run(id);
    json_t *ds = json_object_get(json_array_get(json_object_get(json_object_get(run, "inputs"), "dataset_inputs"), 0),
                                 "dataset");
    assert_string_equal(json_string_value(json_object_get(ds, "name")), "events");
    assert_string_equal(json_string_value(json_object_get(ds, "source_type")), "quern");
    json_decref(run);

    /* a version naming a run that does not exist is refused, and not registered */
    in.run_id = "ffffffffffffffffffffffffffffffff";
    c = wbegin();
    assert_int_equal(reg_db_model_version_create(c, "churn", &in, 1, &mv, &out, &err), QN_NOT_FOUND);
    reg_db_end(db, c, -1, &err);
    free(id);
}

#define CASE(f) cmocka_unit_test_setup_teardown(f, setup, reg_store_teardown)

int main(void)
{
    const struct CMUnitTest grammar[] = {
        cmocka_unit_test(test_filter_parses),
        cmocka_unit_test(test_filter_errors_point_at_the_token),
        cmocka_unit_test(test_filter_compiles_to_bound_sql),
    };
    const struct CMUnitTest store[] = {
        CASE(test_experiments),
        CASE(test_runs_params_metrics),
        CASE(test_search_matches_reference),
        CASE(test_lineage),
    };
    int failed = cmocka_run_group_tests_name("search grammar", grammar, NULL, NULL);
    failed += cmocka_run_group_tests_name("tracking store on sqlite", store, NULL, NULL);
    pg_base = getenv("QUERN_TEST_PG");
    if (pg_base && *pg_base) {
        on_pg = 1;
        failed += cmocka_run_group_tests_name("tracking store on postgres", store, NULL, NULL);
    }
    return failed;
}
