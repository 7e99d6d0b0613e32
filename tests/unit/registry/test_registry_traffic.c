/* test_registry_traffic.c - traffic policies in the registry's data layer
 * (src/registry/traffic_db.c), in-process over the real schema: on SQLite,
 * and on PostgreSQL too when QUERN_TEST_PG names a server.
 *
 * It checks the body checks name the field at fault (weights, sums,
 * duplicates, fractions, sticky forms, unknown fields), that a stored policy
 * reads back complete, that aliases must exist on the model, that set and
 * clear each append one quern.traffic.changed in their transaction (and a
 * refused set appends none), the default when no policy is stored, and that
 * the policy goes with its model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/json.h"
#include "registry/db.h"

#include "registry_store.h"
#include "registry/traffic_db.h"

static int setup(void **state)
{
    (void)state;
    return reg_store_setup("trf");
}

/* A model with versions 1 and 2, production -> 1, candidate -> 2. */
static void model_with_aliases(const char *name)
{
    qn_err err;
    json_t *out = NULL;
    int64_t v, prev;
    qn_conn *c = reg_db_begin(db, QN_TX_WRITE, &err);
    assert_non_null(c);
    int rc = reg_db_model_create(c, name, "", NULL, qn_now_ms(), &out, &err);
    json_decref(out);
    reg_db_version_in in = {.manifest = {"{\"format\":\"quern.model/1\",\"kind\":\"linear\"}",
                                          "sha256:0000000000000000000000000000000000000000000000000000000000000001"}};
    for (int i = 0; i < 2 && rc == 0; i++) {
        out = NULL;
        rc = reg_db_model_version_create(c, name, &in, qn_now_ms(), &v, &out, &err);
        json_decref(out);
    }
    if (rc == 0)
        rc = reg_db_alias_set(c, name, "production", 1, NULL, NULL, &prev, &err);
    if (rc == 0)
        rc = reg_db_alias_set(c, name, "candidate", 2, NULL, NULL, &prev, &err);
    if (reg_db_end(db, c, rc, &err) < 0)
        fail_msg("%s", err.msg);
}

static int64_t events_of(const char *type)
{
    qn_err err;
    qn_conn *c = qn_store_acquire(db, &err);
    assert_non_null(c);
    qn_stmt *st = qn_prepare(c, "SELECT COUNT(*) FROM outbox WHERE type = ?", &err);
    assert_non_null(st);
    qn_bind_text(st, 1, type, -1);
    assert_int_equal(qn_step(st, &err), 1);
    int64_t n = qn_col_int64(st, 0);
    assert_int_equal(qn_step(st, &err), 0);
    qn_store_release(db, c);
    return n;
}

/* Parses text as a body; returns the code, err filled. */
static int parse(const char *text, json_t **policy, qn_err *err)
{
    json_error_t je;
    json_t *body = json_loads(text, 0, &je);
    assert_non_null(body);
    int rc = reg_traffic_parse(body, policy, err);
    json_decref(body);
    return rc;
}

/* A body the parse must refuse, and what its message must name. */
typedef struct bad_body {
    const char *body, *msg;
} bad_body;

/* Each of the n bodies is refused with QN_INVALID_ARGUMENT naming its msg,
 * and no policy comes back. */
static void assert_refused(const bad_body *bad, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        qn_err err;
        json_t *p = NULL;
        int rc = parse(bad[i].body, &p, &err);
        if (rc != QN_INVALID_ARGUMENT || !strstr(err.msg, bad[i].msg))
            fail_msg("case %zu (%s): rc %d, message \"%s\", want \"%s\"", i, bad[i].body, rc,
                     rc ? err.msg : "", bad[i].msg);
        assert_null(p);
    }
}

static void test_parse_checks(void **state)
{
    (void)state;
    static const bad_body bad[] = {
        {"{}", "routes: is required"},
        {"{\"routes\":[]}", "routes: 0 routes"},
        {"{\"routes\":{}}", "routes: must be an array"},
        {"{\"routes\":[{\"alias\":\"production\",\"weight\":90}]}", "weights sum to 90"},
        {"{\"routes\":[{\"alias\":\"production\",\"weight\":90},{\"alias\":\"candidate\",\"weight\":20}]}",
         "weights sum to 110"},
        {"{\"routes\":[{\"alias\":\"production\",\"weight\":101}]}", "routes[0].weight"},
        {"{\"routes\":[{\"alias\":\"production\",\"weight\":-1}]}", "routes[0].weight"},
        {"{\"routes\":[{\"alias\":\"production\",\"weight\":50.5}]}", "routes[0].weight"},
        {"{\"routes\":[{\"alias\":\"production\",\"weight\":\"90\"}]}", "routes[0].weight"},
        {"{\"routes\":[{\"weight\":100}]}", "routes[0].alias: is required"},
        {"{\"routes\":[{\"alias\":\"../x\",\"weight\":100}]}", "routes[0].alias"},
        {"{\"routes\":[{\"alias\":\"latest\",\"weight\":100}]}", "routes[0].alias"},
        {"{\"routes\":[{\"alias\":\"a\",\"weight\":50},{\"alias\":\"a\",\"weight\":50}]}",
         "routes[1].alias: \"a\" is routed twice"},
        {"{\"routes\":[{\"alias\":\"a\",\"weight\":100,\"x\":1}]}", "routes[0]"},
        {"{\"routes\":[{\"alias\":\"a\",\"weight\":100}],\"shadow\":{\"alias\":\"b\",\"fraction\":1.5}}",
         "shadow.fraction"},
        {"{\"routes\":[{\"alias\":\"a\",\"weight\":100}],\"shadow\":{\"alias\":\"b\"}}",
         "shadow.fraction: is required"},
        {"{\"routes\":[{\"alias\":\"a\",\"weight\":100}],\"shadow\":{\"fraction\":0.5}}", "shadow.alias"},
        {"{\"routes\":[{\"alias\":\"a\",\"weight\":100}],\"shadow\":7}", "shadow: must be null"},
        {"{\"routes\":[{\"alias\":\"a\",\"weight\":100}],\"sticky\":\"session\"}", "sticky"},
        {"{\"routes\":[{\"alias\":\"a\",\"weight\":100}],\"sticky\":\"header:\"}", "sticky: the header name"},
        {"{\"routes\":[{\"alias\":\"a\",\"weight\":100}],\"sticky\":\"header:X Y\"}", "sticky"},
        {"{\"routes\":[{\"alias\":\"a\",\"weight\":100}],\"sticky\":3}", "sticky"},
        {"{\"routes\":[{\"alias\":\"a\",\"weight\":100}],\"canary\":1}", "canary"},
        {"{\"routes\":[{\"alias\":\"a\",\"weight\":10},{\"alias\":\"b\",\"weight\":10},{\"alias\":\"c\",\"weight\":10},"
         "{\"alias\":\"d\",\"weight\":10},{\"alias\":\"e\",\"weight\":10},{\"alias\":\"f\",\"weight\":10},"
         "{\"alias\":\"g\",\"weight\":10},{\"alias\":\"h\",\"weight\":10},{\"alias\":\"i\",\"weight\":20}]}",
         "routes: 9 routes"},
    };
    assert_refused(bad, sizeof bad / sizeof *bad);
    /* a complete form from a short one: shadow and sticky default to null */
    qn_err err;
    json_t *p = NULL;
    assert_int_equal(parse("{\"routes\":[{\"alias\":\"production\",\"weight\":0},"
                           "{\"alias\":\"candidate\",\"weight\":100}],\"sticky\":\"header:X-User\","
                           "\"shadow\":{\"alias\":\"challenger\",\"fraction\":0}}",
                           &p, &err),
                     0);
    assert_int_equal(json_array_size(json_object_get(p, "routes")), 2);
    assert_string_equal(json_string_value(json_object_get(p, "sticky")), "header:X-User");
    assert_true(json_real_value(json_object_get(json_object_get(p, "shadow"), "fraction")) == 0.0);
    json_decref(p);
    assert_int_equal(parse("{\"routes\":[{\"alias\":\"production\",\"weight\":100}],\"shadow\":null}", &p, &err),
                     0);
    assert_true(json_is_null(json_object_get(p, "shadow")));
    assert_true(json_is_null(json_object_get(p, "sticky")));
    json_decref(p);
}

/* The auto promotion policy: each bad field named; defaults filled in. */
static void test_parse_auto(void **state)
{
    (void)state;
#define R "{\"routes\":[{\"alias\":\"production\",\"weight\":100}],\"auto\":"
    static const bad_body bad[] = {
        {R "7}", "auto: must be null"},
        {R "{\"metric\":\"rmse\"}}", "auto.challenger: is required"},
        {R "{\"challenger\":\"latest\",\"metric\":\"rmse\"}}", "auto.challenger"},
        {R "{\"challenger\":\"production\",\"metric\":\"rmse\"}}", "auto.challenger: is the champion"},
        {R "{\"challenger\":\"candidate\"}}", "auto.metric: is required"},
        {R "{\"challenger\":\"candidate\",\"metric\":\"speed\"}}", "auto.metric"},
        {R "{\"challenger\":\"candidate\",\"metric\":\"rmse\",\"min_labelled\":0}}", "auto.min_labelled"},
        {R "{\"challenger\":\"candidate\",\"metric\":\"rmse\",\"min_labelled\":1.5}}", "auto.min_labelled"},
        {R "{\"challenger\":\"candidate\",\"metric\":\"rmse\",\"margin\":-1}}", "auto.margin"},
        {R "{\"challenger\":\"candidate\",\"metric\":\"rmse\",\"promote\":1}}", "auto.promote"},
        {R "{\"challenger\":\"candidate\",\"metric\":\"rmse\",\"rollback\":[]}}", "auto.rollback: must be"},
        {R "{\"challenger\":\"candidate\",\"metric\":\"rmse\",\"rollback\":{\"error_rate\":2}}}",
         "auto.rollback.error_rate"},
        {R "{\"challenger\":\"candidate\",\"metric\":\"rmse\",\"rollback\":{\"latency_p50_ratio\":0.5}}}",
         "auto.rollback.latency_p50_ratio"},
        {R "{\"challenger\":\"candidate\",\"metric\":\"rmse\",\"rollback\":{\"p99\":1}}}", "auto.rollback"},
        {R "{\"challenger\":\"candidate\",\"metric\":\"rmse\",\"when\":1}}", "auto"},
    };
    assert_refused(bad, sizeof bad / sizeof *bad);
    qn_err err;
    json_t *p = NULL;
    assert_int_equal(parse(R "{\"challenger\":\"candidate\",\"metric\":\"roc_auc\"}}", &p, &err), 0);
    const json_t *a = json_object_get(p, "auto");
    assert_string_equal(json_string_value(json_object_get(a, "challenger")), "candidate");
    assert_int_equal(json_integer_value(json_object_get(a, "min_labelled")), 500);
    assert_true(json_is_true(json_object_get(a, "promote")));
    assert_true(json_is_null(json_object_get(a, "rollback")));
    json_decref(p);
    assert_int_equal(parse(R "{\"challenger\":\"candidate\",\"metric\":\"rmse\",\"min_labelled\":30,"
                           "\"margin\":0.1,\"promote\":false,\"rollback\":{\"quality_margin\":0.2}}}",
                           &p, &err),
                     0);
    a = json_object_get(p, "auto");
    assert_int_equal(json_integer_value(json_object_get(a, "min_labelled")), 30);
    assert_true(json_is_false(json_object_get(a, "promote")));
    assert_true(json_real_value(json_object_get(json_object_get(a, "rollback"), "quality_margin")) == 0.2);
    assert_null(json_object_get(json_object_get(a, "rollback"), "error_rate"));
    json_decref(p);
    /* null: no auto key at all */
    assert_int_equal(parse(R "null}", &p, &err), 0);
    assert_null(json_object_get(p, "auto"));
    json_decref(p);
#undef R
}

/* Stores the policy text for model in one write transaction (traceparent
 * may be NULL): 0, or the refusal's code with err. */
static int set_policy(const char *model, const char *text, const char *traceparent, qn_err *err)
{
    json_t *p = NULL, *out = NULL;
    assert_int_equal(parse(text, &p, err), 0);
    qn_conn *c = reg_db_begin(db, QN_TX_WRITE, err);
    assert_non_null(c);
    int rc = reg_db_end(db, c, reg_db_traffic_set(c, model, p, traceparent, &out, err), err);
    json_decref(out);
    json_decref(p);
    return rc;
}

/* The policy of model as the registry reads it back (the caller frees it). */
static json_t *get_policy(const char *model)
{
    qn_err err;
    json_t *out = NULL;
    qn_conn *c = reg_db_begin(db, QN_TX_READ, &err);
    assert_non_null(c);
    assert_int_equal(reg_db_traffic_get(c, model, &out, &err), 0);
    reg_db_end(db, c, 0, &err);
    return out;
}

static void test_store(void **state)
{
    (void)state;
    qn_err err;
    model_with_aliases("churn");

    /* no policy: all to production */
    json_t *out = get_policy("churn");
    assert_true(json_is_true(json_object_get(out, "default")));
    json_t *r0 = json_array_get(json_object_get(out, "routes"), 0);
    assert_string_equal(json_string_value(json_object_get(r0, "alias")), "production");
    assert_int_equal(json_integer_value(json_object_get(r0, "weight")), 100);
    json_decref(out);

    /* an alias the model does not have: refused, nothing stored, no event */
    assert_int_equal(set_policy("churn",
                                "{\"routes\":[{\"alias\":\"production\",\"weight\":90},{\"alias\":\"candidate\","
                                "\"weight\":10}],\"shadow\":{\"alias\":\"challenger\",\"fraction\":0.5}}",
                                NULL, &err),
                     QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "shadow.alias: model \"churn\" has no alias \"challenger\""));
    assert_int_equal(events_of("quern.traffic.changed"), 0);

    /* a missing model */
    assert_int_equal(set_policy("nope", "{\"routes\":[{\"alias\":\"production\",\"weight\":100}]}", NULL, &err),
                     QN_NOT_FOUND);

    /* set, read back, one event */
    assert_int_equal(set_policy("churn",
                                "{\"routes\":[{\"alias\":\"production\",\"weight\":80},{\"alias\":\"candidate\","
                                "\"weight\":20}],\"shadow\":{\"alias\":\"candidate\",\"fraction\":0.25},"
                                "\"sticky\":\"user\"}",
                                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", &err),
                     0);
    assert_int_equal(events_of("quern.traffic.changed"), 1);
    out = get_policy("churn");
    assert_true(json_is_false(json_object_get(out, "default")));
    assert_string_equal(json_string_value(json_object_get(out, "sticky")), "user");
    json_t *r1 = json_array_get(json_object_get(out, "routes"), 1);
    assert_string_equal(json_string_value(json_object_get(r1, "alias")), "candidate");
    assert_int_equal(json_integer_value(json_object_get(r1, "weight")), 20);
    assert_true(json_real_value(json_object_get(json_object_get(out, "shadow"), "fraction")) == 0.25);
    assert_true(json_is_string(json_object_get(out, "updated_at")));
    json_decref(out);

    /* replaced: a second event, the new policy reads back */
    assert_int_equal(set_policy("churn", "{\"routes\":[{\"alias\":\"candidate\",\"weight\":100}]}", NULL, &err), 0);
    out = get_policy("churn");
    assert_int_equal(json_array_size(json_object_get(out, "routes")), 1);
    assert_true(json_is_null(json_object_get(out, "shadow")));
    json_decref(out);
    assert_int_equal(events_of("quern.traffic.changed"), 2);

    /* cleared: an event; clearing again: none */
    int removed = 0;
    qn_conn *c = reg_db_begin(db, QN_TX_WRITE, &err);
    assert_int_equal(reg_db_end(db, c, reg_db_traffic_delete(c, "churn", NULL, &removed, &err), &err), 0);
    assert_int_equal(removed, 1);
    c = reg_db_begin(db, QN_TX_WRITE, &err);
    assert_int_equal(reg_db_end(db, c, reg_db_traffic_delete(c, "churn", NULL, &removed, &err), &err), 0);
    assert_int_equal(removed, 0);
    assert_int_equal(events_of("quern.traffic.changed"), 3);
    out = get_policy("churn");
    assert_true(json_is_true(json_object_get(out, "default")));
    json_decref(out);

    /* the policy goes with its model */
    assert_int_equal(set_policy("churn", "{\"routes\":[{\"alias\":\"candidate\",\"weight\":100}]}", NULL, &err), 0);
    c = reg_db_begin(db, QN_TX_WRITE, &err);
    assert_int_equal(reg_db_end(db, c, reg_db_model_delete(c, "churn", &err), &err), 0);
    c = reg_db_begin(db, QN_TX_READ, &err);
    qn_stmt *st = qn_prepare(c, "SELECT COUNT(*) FROM traffic", &err);
    assert_non_null(st);
    assert_int_equal(qn_step(st, &err), 1);
    assert_int_equal(qn_col_int64(st, 0), 0);
    assert_int_equal(qn_step(st, &err), 0);
    reg_db_end(db, c, 0, &err);
    model_with_aliases("churn");
    out = get_policy("churn");
    assert_true(json_is_true(json_object_get(out, "default")));
    json_decref(out);
}

#define CASE(f) cmocka_unit_test_setup_teardown(f, setup, reg_store_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        CASE(test_parse_checks),
        CASE(test_parse_auto),
        CASE(test_store),
    };
    int failed = cmocka_run_group_tests_name("registry traffic policies on sqlite", tests, NULL, NULL);
    pg_base = getenv("QUERN_TEST_PG");
    if (pg_base && *pg_base) {
        on_pg = 1;
        failed += cmocka_run_group_tests_name("registry traffic policies on postgres", tests, NULL, NULL);
    }
    return failed;
}
