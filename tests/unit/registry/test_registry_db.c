/* test_registry_db.c - the registry's data layer (src/registry/db.c),
 * in-process over the real schema: on SQLite, and on PostgreSQL too when
 * QUERN_TEST_PG names a server (run_store_pg.sh; a new schema per test).
 *
 * It checks what the HTTP tests can only see from outside: gapless version
 * numbers shared by models and datasets (a rolled-back version gives its
 * number back), "latest", paging newest first with filters, tag patches,
 * alias moves with their outbox event (and none when the alias stays), and
 * the not-found and clash errors naming what is missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/digest.h"
#include "core/json.h"
#include "registry/db.h"

#include "registry_store.h"

static int setup(void **state)
{
    (void)state;
    return reg_store_setup("reg");
}

#define MANIFEST "{\"format\":\"quern.model/1\",\"kind\":\"linear\"}"
#define DIGEST "sha256:0000000000000000000000000000000000000000000000000000000000000001"

/* Registers the next version of model name; returns its number. */
static int64_t add_version(const char *name, const char *tag_value)
{
    qn_err err;
    json_t *tags = tag_value ? json_pack("{s:s}", "stage", tag_value) : NULL;
    reg_db_version_in in = {.manifest = {MANIFEST, DIGEST}, .metrics = "{\"auc\":0.9}", .tags = tags};
    json_t *out = NULL;
    int64_t v = 0;
    qn_conn *c = reg_db_begin(db, QN_TX_WRITE, &err);
    assert_non_null(c);
    int rc = reg_db_model_version_create(c, name, &in, qn_now_ms(), &v, &out, &err);
    assert_int_equal(reg_db_end(db, c, rc, &err), 0);
    assert_int_equal(json_integer_value(json_object_get(out, "version")), v);
    assert_string_equal(json_string_value(json_object_get(out, "manifest_digest")), DIGEST);
    assert_true(json_real_value(json_object_get(json_object_get(out, "metrics"), "auc")) == 0.9);
    json_decref(out);
    json_decref(tags);
    return v;
}

static void create_model(const char *name)
{
    qn_err err;
    json_t *out = NULL;
    json_t *tags = json_pack("{s:s}", "team", "growth");
    qn_conn *c = reg_db_begin(db, QN_TX_WRITE, &err);
    assert_non_null(c);
    int rc = reg_db_model_create(c, name, "a model", tags, qn_now_ms(), &out, &err);
    assert_int_equal(reg_db_end(db, c, rc, &err), 0);
    assert_string_equal(json_string_value(json_object_get(out, "name")), name);
    assert_true(json_is_null(json_object_get(out, "latest_version")));
    json_decref(out);
    json_decref(tags);
}

static void test_models_and_versions(void **state)
{
    (void)state;
    qn_err err;
    create_model("churn");

    /* a second create clashes, naming the model */
    json_t *out = NULL;
    qn_conn *c = reg_db_begin(db, QN_TX_WRITE, &err);
    int rc = reg_db_model_create(c, "churn", "", NULL, qn_now_ms(), &out, &err);
    assert_int_equal(rc, QN_ALREADY_EXISTS);
    assert_non_null(strstr(err.msg, "\"churn\" already exists"));
    assert_null(out);
    assert_int_equal(reg_db_end(db, c, rc, &err), QN_ALREADY_EXISTS);

    /* no versions yet: "latest" says so */
    c = reg_db_begin(db, QN_TX_READ, &err);
    rc = reg_db_version_get(c, &reg_db_models, "churn", 0, &out, &err);
    assert_int_equal(rc, QN_NOT_FOUND);
    assert_non_null(strstr(err.msg, "has no versions yet"));
    reg_db_end(db, c, rc, &err);

    assert_int_equal(add_version("churn", "a"), 1);
    assert_int_equal(add_version("churn", "b"), 2);

    /* a version whose transaction rolls back gives its number back */
    reg_db_version_in in = {.manifest = {MANIFEST, DIGEST}};
    int64_t v = 0;
    c = reg_db_begin(db, QN_TX_WRITE, &err);
    assert_int_equal(reg_db_model_version_create(c, "churn", &in, qn_now_ms(), &v, &out, &err), 0);
    assert_int_equal(v, 3);
    json_decref(out);
    out = NULL;
    assert_int_equal(reg_db_end(db, c, QN_ABORTED, &err), QN_ABORTED);
    assert_int_equal(add_version("churn", "a"), 3);

    /* versions of a model that does not exist */
    c = reg_db_begin(db, QN_TX_WRITE, &err);
    rc = reg_db_model_version_create(c, "nope", &in, qn_now_ms(), &v, &out, &err);
    assert_int_equal(rc, QN_NOT_FOUND);
    assert_non_null(strstr(err.msg, "model \"nope\" does not exist"));
    reg_db_end(db, c, rc, &err);

    /* latest, a number, a missing number */
    c = reg_db_begin(db, QN_TX_READ, &err);
    assert_int_equal(reg_db_version_get(c, &reg_db_models, "churn", 0, &out, &err), 0);
    assert_int_equal(json_integer_value(json_object_get(out, "version")), 3);
    json_decref(out);
    assert_int_equal(reg_db_version_get(c, &reg_db_models, "churn", 2, &out, &err), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(out, "tags"), "stage")), "b");
    json_decref(out);
    assert_int_equal(reg_db_version_get(c, &reg_db_models, "churn", 9, &out, &err), QN_NOT_FOUND);
    assert_non_null(strstr(err.msg, "model \"churn\" has no version 9"));
    assert_int_equal(reg_db_model_get(c, "churn", &out, &err), 0);
    assert_int_equal(json_integer_value(json_object_get(out, "latest_version")), 3);
    json_decref(out);
    reg_db_end(db, c, 0, &err);

    /* pages newest first; a tag filter; the page after a key */
    qn_page pg;
    char after[QN_PAGE_KEY_MAX];
    assert_int_equal(qn_page_begin(&pg, "versions", "2", 50, 1000, NULL, after, &err), 0);
    c = reg_db_begin(db, QN_TX_READ, &err);
    assert_int_equal(reg_db_versions_page(c, &reg_db_models, "churn", 0, NULL, &pg, &err), 0);
    reg_db_end(db, c, 0, &err);
    json_t *page = qn_page_finish(&pg, "versions");
    json_t *items = json_object_get(page, "versions");
    assert_int_equal(json_array_size(items), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(items, 0), "version")), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(items, 1), "version")), 2);
    assert_true(json_is_string(json_object_get(page, "next_page_token")));
    json_decref(page);

    const char *const only_a[3] = {NULL, "stage", "a"};
    assert_int_equal(qn_page_begin(&pg, "versions", NULL, 50, 1000, NULL, after, &err), 0);
    c = reg_db_begin(db, QN_TX_READ, &err);
    assert_int_equal(reg_db_versions_page(c, &reg_db_models, "churn", 3, only_a, &pg, &err), 0);
    reg_db_end(db, c, 0, &err);
    page = qn_page_finish(&pg, "versions");
    items = json_object_get(page, "versions");
    assert_int_equal(json_array_size(items), 1); /* below 3, tagged a: version 1 */
    assert_int_equal(json_integer_value(json_object_get(json_array_get(items, 0), "version")), 1);
    json_decref(page);

    /* a tag patch: set one, remove one; the stored JSON follows */
    json_t *patch = json_pack("{s:s, s:n}", "owner", "ana", "stage");
    c = reg_db_begin(db, QN_TX_WRITE, &err);
    rc = reg_db_model_version_patch(c, "churn", 1, "first", "deprecated", patch, &out, &err);
    assert_int_equal(reg_db_end(db, c, rc, &err), 0);
    json_decref(patch);
    assert_string_equal(json_string_value(json_object_get(out, "status")), "deprecated");
    assert_string_equal(json_string_value(json_object_get(out, "description")), "first");
    assert_int_equal(json_object_size(json_object_get(out, "tags")), 1);
    assert_string_equal(json_string_value(json_object_get(json_object_get(out, "tags"), "owner")), "ana");
    json_decref(out);

    /* models page with a tag filter, then delete */
    create_model("other");
    assert_int_equal(qn_page_begin(&pg, "models", NULL, 50, 1000, NULL, after, &err), 0);
    c = reg_db_begin(db, QN_TX_READ, &err);
    assert_int_equal(reg_db_models_page(c, "", "team", "growth", &pg, &err), 0);
    reg_db_end(db, c, 0, &err);
    page = qn_page_finish(&pg, "models");
    assert_int_equal(json_array_size(json_object_get(page, "models")), 2);
    json_decref(page);
    c = reg_db_begin(db, QN_TX_WRITE, &err);
    assert_int_equal(reg_db_end(db, c, reg_db_model_delete(c, "other", &err), &err), 0);
    c = reg_db_begin(db, QN_TX_WRITE, &err);
    rc = reg_db_model_delete(c, "other", &err);
    assert_int_equal(rc, QN_NOT_FOUND);
    reg_db_end(db, c, rc, &err);
}

static int64_t outbox_count(void)
{
    qn_err err;
    qn_conn *c = qn_store_acquire(db, &err);
    assert_non_null(c);
    qn_stmt *st = qn_prepare(c, "SELECT COUNT(*) FROM outbox WHERE type = 'quern.model.promoted'", &err);
    assert_non_null(st);
    assert_int_equal(qn_step(st, &err), 1);
    int64_t n = qn_col_int64(st, 0);
    assert_int_equal(qn_step(st, &err), 0);
    qn_store_release(db, c);
    return n;
}

static void test_aliases(void **state)
{
    (void)state;
    qn_err err;
    int64_t prev = -1;
    json_t *out = NULL;
    create_model("recs");
    add_version("recs", NULL);
    add_version("recs", NULL);

    qn_conn *c = reg_db_begin(db, QN_TX_WRITE, &err);
    int rc = reg_db_alias_set(c, "recs", "production", 7, NULL, NULL, &prev, &err);
    assert_int_equal(rc, QN_NOT_FOUND);
    assert_non_null(strstr(err.msg, "has no version 7"));
    reg_db_end(db, c, rc, &err);

    c = reg_db_begin(db, QN_TX_WRITE, &err);
    assert_int_equal(reg_db_end(db, c, reg_db_alias_set(c, "recs", "production", 1, NULL, NULL, &prev, &err), &err), 0);
    assert_int_equal(prev, 0);
    c = reg_db_begin(db, QN_TX_WRITE, &err);
    assert_int_equal(reg_db_end(db, c, reg_db_alias_set(c, "recs", "production", 2, NULL, NULL, &prev, &err), &err), 0);
    assert_int_equal(prev, 1);
    /* the same version again: no move, no event */
    c = reg_db_begin(db, QN_TX_WRITE, &err);
    assert_int_equal(reg_db_end(db, c, reg_db_alias_set(c, "recs", "production", 2, NULL, NULL, &prev, &err), &err), 0);
    assert_int_equal(prev, 2);
    assert_int_equal(outbox_count(), 2);

    c = reg_db_begin(db, QN_TX_READ, &err);
    assert_int_equal(reg_db_alias_get(c, "recs", "production", &out, &err), 0);
    assert_int_equal(json_integer_value(json_object_get(out, "version")), 2);
    json_decref(out);
    assert_int_equal(reg_db_version_get(c, &reg_db_models, "recs", 2, &out, &err), 0);
    assert_string_equal(json_string_value(json_array_get(json_object_get(out, "aliases"), 0)), "production");
    json_decref(out);
    assert_int_equal(reg_db_aliases_list(c, "recs", &out, &err), 0);
    assert_int_equal(json_array_size(json_object_get(out, "aliases")), 1);
    json_decref(out);
    reg_db_end(db, c, 0, &err);

    c = reg_db_begin(db, QN_TX_WRITE, &err);
    assert_int_equal(reg_db_end(db, c, reg_db_alias_delete(c, "recs", "production", NULL, &err), &err), 0);
    c = reg_db_begin(db, QN_TX_READ, &err);
    rc = reg_db_alias_get(c, "recs", "production", &out, &err);
    assert_int_equal(rc, QN_NOT_FOUND);
    assert_non_null(strstr(err.msg, "model \"recs\" has no alias \"production\""));
    reg_db_end(db, c, rc, &err);
}

static void test_datasets(void **state)
{
    (void)state;
    qn_err err;
    const char *text = "{\"files\":{\"data.csv\":\"sha256:ab\"},\"format\":\"quern.dataset/1\"}";
    reg_db_manifest mf = {.text = text, .digest = NULL};
    json_t *out = NULL;
    int64_t v = 0;
    char hex[QN_SHA256_HEX + 1], want[80];
    qn_sha256_buf(text, strlen(text), hex);
    snprintf(want, sizeof want, "sha256:%s", hex);
    for (int i = 1; i <= 3; i++) {
        qn_conn *c = reg_db_begin(db, QN_TX_WRITE, &err);
        int rc = reg_db_dataset_version_create(c, "events", &mf, "snap", NULL, qn_now_ms(), &v, &out, &err);
        assert_int_equal(reg_db_end(db, c, rc, &err), 0);
        assert_int_equal(v, i); /* the first version creates the dataset */
        assert_int_equal(json_integer_value(json_object_get(out, "version")), i);
        /* the digest is the manifest text's own */
        assert_string_equal(json_string_value(json_object_get(out, "manifest_digest")), want);
        json_decref(out);
    }
    qn_conn *c = reg_db_begin(db, QN_TX_READ, &err);
    assert_int_equal(reg_db_version_get(c, &reg_db_datasets, "events", 0, &out, &err), 0);
    assert_int_equal(json_integer_value(json_object_get(out, "version")), 3);
    assert_string_equal(json_string_value(json_object_get(out, "dataset")), "events");
    json_decref(out);
    int rc = reg_db_version_get(c, &reg_db_datasets, "missing", 1, &out, &err);
    assert_int_equal(rc, QN_NOT_FOUND);
    assert_non_null(strstr(err.msg, "dataset \"missing\" does not exist"));
    reg_db_end(db, c, 0, &err);

    qn_page pg;
    char after[QN_PAGE_KEY_MAX];
    assert_int_equal(qn_page_begin(&pg, "dataset_versions", NULL, 50, 1000, NULL, after, &err), 0);
    c = reg_db_begin(db, QN_TX_READ, &err);
    assert_int_equal(reg_db_versions_page(c, &reg_db_datasets, "events", 3, NULL, &pg, &err), 0);
    reg_db_end(db, c, 0, &err);
    json_t *page = qn_page_finish(&pg, "versions");
    json_t *items = json_object_get(page, "versions");
    assert_int_equal(json_array_size(items), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(items, 0), "version")), 2);
    json_decref(page);

    assert_int_equal(qn_page_begin(&pg, "datasets", NULL, 50, 1000, NULL, after, &err), 0);
    c = reg_db_begin(db, QN_TX_READ, &err);
    assert_int_equal(reg_db_datasets_page(c, "", &pg, &err), 0);
    reg_db_end(db, c, 0, &err);
    page = qn_page_finish(&pg, "datasets");
    items = json_object_get(page, "datasets");
    assert_int_equal(json_array_size(items), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(items, 0), "latest_version")), 3);
    json_decref(page);
}

/* Runs one move (set to version, or delete when version is 0) as who. */
static int move(const char *alias, int64_t version, const char *reason, const char *who)
{
    qn_err err;
    int64_t prev;
    reg_db_move mv = {.reason = reason, .who = who};
    qn_conn *c = reg_db_begin(db, QN_TX_WRITE, &err);
    assert_non_null(c);
    int rc = version ? reg_db_alias_set(c, "recs", alias, version, NULL, &mv, &prev, &err)
                     : reg_db_alias_delete(c, "recs", alias, &mv, &err);
    return reg_db_end(db, c, rc, &err);
}

/* The history page of alias, newest first (before: id to resume below). */
static json_t *history(const char *alias, const char *limit, int64_t before)
{
    qn_err err;
    qn_page pg;
    char after[QN_PAGE_KEY_MAX];
    assert_int_equal(qn_page_begin(&pg, "alias_history", limit, 50, 1000, NULL, after, &err), 0);
    qn_conn *c = reg_db_begin(db, QN_TX_READ, &err);
    int rc = reg_db_alias_history_page(c, "recs", alias, before, &pg, &err);
    assert_int_equal(reg_db_end(db, c, rc, &err), 0);
    return qn_page_finish(&pg, "history");
}

static int64_t vfield(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_null(v) ? 0 : (int64_t)json_integer_value(v);
}

static void test_alias_history_and_rollback(void **state)
{
    (void)state;
    qn_err err;
    int64_t from = -1, to = -1;
    create_model("recs");
    for (int i = 0; i < 3; i++)
        add_version("recs", NULL);

    /* a rollback of an alias that is not set is a 404; of one set once, a 400 */
    qn_conn *c = reg_db_begin(db, QN_TX_WRITE, &err);
    int rc = reg_db_alias_rollback(c, "recs", "production", NULL, NULL, &from, &to, &err);
    assert_int_equal(rc, QN_NOT_FOUND);
    reg_db_end(db, c, rc, &err);
    assert_int_equal(move("production", 1, "first", "alice"), 0);
    c = reg_db_begin(db, QN_TX_WRITE, &err);
    rc = reg_db_alias_rollback(c, "recs", "production", NULL, NULL, &from, &to, &err);
    assert_int_equal(rc, QN_FAILED_PRECONDITION);
    assert_non_null(strstr(err.msg, "no version before version 1"));
    reg_db_end(db, c, rc, &err);

    /* a no-op move is not history; a move that fails leaves none */
    assert_int_equal(move("production", 1, NULL, "alice"), 0);
    assert_int_equal(move("production", 9, NULL, "alice"), QN_NOT_FOUND);
    assert_int_equal(move("production", 2, NULL, NULL), 0);
    assert_int_equal(move("production", 3, "better auc", "ci"), 0);
    assert_int_equal(move("staging", 3, NULL, "ci"), 0);

    /* rollback: 3 -> 2, recorded with reason rollback and who */
    reg_db_move mv = {.who = "ops"};
    c = reg_db_begin(db, QN_TX_WRITE, &err);
    rc = reg_db_alias_rollback(c, "recs", "production", NULL, &mv, &from, &to, &err);
    assert_int_equal(reg_db_end(db, c, rc, &err), 0);
    assert_int_equal(from, 3);
    assert_int_equal(to, 2);
    json_t *out = NULL;
    c = reg_db_begin(db, QN_TX_READ, &err);
    assert_int_equal(reg_db_end(db, c, reg_db_alias_get(c, "recs", "production", &out, &err), &err), 0);
    assert_int_equal(vfield(out, "version"), 2);
    json_decref(out);
    /* its event is in the outbox like any other move */
    c = reg_db_begin(db, QN_TX_READ, &err);
    qn_stmt *st = qn_prepare(c, "SELECT COUNT(*) FROM outbox WHERE type = 'quern.model.promoted'", &err);
    assert_non_null(st);
    assert_int_equal(qn_step(st, &err), 1);
    assert_int_equal(qn_col_int64(st, 0), 5); /* 1, 2, 3, staging 3, rollback 2 */
    qn_store_release(db, c);

    assert_int_equal(move("production", 0, NULL, "ops"), 0); /* delete */

    json_t *page = history("production", NULL, 0);
    json_t *items = json_object_get(page, "history");
    assert_int_equal(json_array_size(items), 5);
    /* newest first: delete(2->none), rollback(3->2), 2->3, 1->2, none->1 */
    static const int64_t want[5][2] = {{2, 0}, {3, 2}, {2, 3}, {1, 2}, {0, 1}};
    static const char *const reasons[5] = {"", "rollback", "better auc", "", "first"};
    static const char *const whos[5] = {"ops", "ops", "ci", "anonymous", "alice"};
    for (size_t i = 0; i < 5; i++) {
        json_t *h = json_array_get(items, i);
        assert_int_equal(vfield(h, "from_version"), want[i][0]);
        assert_int_equal(vfield(h, "to_version"), want[i][1]);
        assert_string_equal(json_string_value(json_object_get(h, "reason")), reasons[i]);
        assert_string_equal(json_string_value(json_object_get(h, "who")), whos[i]);
        assert_string_equal(json_string_value(json_object_get(h, "alias")), "production");
        assert_non_null(json_string_value(json_object_get(h, "at")));
    }
    int64_t third = vfield(json_array_get(items, 2), "id");
    json_decref(page);

    /* paging: two, then the rest below the second's id */
    page = history("production", "2", 0);
    assert_int_equal(json_array_size(json_object_get(page, "history")), 2);
    assert_non_null(json_object_get(page, "next_page_token"));
    int64_t second = vfield(json_array_get(json_object_get(page, "history"), 1), "id");
    json_decref(page);
    page = history("production", NULL, second);
    assert_int_equal(json_array_size(json_object_get(page, "history")), 3);
    assert_int_equal(vfield(json_array_get(json_object_get(page, "history"), 0), "id"), third);
    json_decref(page);

    /* the history outlives the model; no model and no history is a 404 */
    c = reg_db_begin(db, QN_TX_WRITE, &err);
    assert_int_equal(reg_db_end(db, c, reg_db_model_delete(c, "recs", &err), &err), 0);
    page = history("staging", NULL, 0);
    assert_int_equal(json_array_size(json_object_get(page, "history")), 1);
    json_decref(page);
    qn_page pg;
    char after[QN_PAGE_KEY_MAX];
    assert_int_equal(qn_page_begin(&pg, "alias_history", NULL, 50, 1000, NULL, after, &err), 0);
    c = reg_db_begin(db, QN_TX_READ, &err);
    rc = reg_db_alias_history_page(c, "recs", "canary", 0, &pg, &err);
    assert_int_equal(rc, QN_NOT_FOUND);
    reg_db_end(db, c, rc, &err);
    qn_page_free(&pg);
}

#define CASE(f) cmocka_unit_test_setup_teardown(f, setup, reg_store_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        CASE(test_models_and_versions),
        CASE(test_aliases),
        CASE(test_alias_history_and_rollback),
        CASE(test_datasets),
    };
    int failed = cmocka_run_group_tests_name("registry data layer on sqlite", tests, NULL, NULL);
    pg_base = getenv("QUERN_TEST_PG");
    if (pg_base && *pg_base) {
        on_pg = 1;
        failed += cmocka_run_group_tests_name("registry data layer on postgres", tests, NULL, NULL);
    }
    return failed;
}
