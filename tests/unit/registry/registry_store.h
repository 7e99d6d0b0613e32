/*
 * registry_store.h - the store fixture of the registry's unit tests: a fresh
 * registry schema per test, on SQLite (a file under $QUERN_TEST_WORK) or, when
 * $QUERN_TEST_PG is set (tests/unit/core/run_store_pg.sh), in a schema of its
 * own on that PostgreSQL.
 *
 *     static int setup(void **state) { (void)state; return reg_store_setup("trk"); }
 *     ... cmocka_unit_test_setup_teardown(test_x, setup, reg_store_teardown) ...
 * main sets pg_base and on_pg from $QUERN_TEST_PG before the postgres group.
 *
 * Included by one test file each (static state: url, dbpath, on_pg, db).
 */
#ifndef QUERN_TEST_REGISTRY_STORE_H
#define QUERN_TEST_REGISTRY_STORE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "registry/db.h"

static char url[512], dbpath[300];
static const char *pg_base;
static int on_pg;
static qn_store *db;

/* Opens a fresh store named after tag (a schema or a file) into db. */
static int reg_store_setup(const char *tag)
{
    static int n;
    qn_err err;
    if (on_pg) {
        snprintf(url, sizeof url, "%s%cschema=%s_%d_%d", pg_base, strchr(pg_base, '?') ? '&' : '?', tag,
                 (int)getpid(), n++);
    } else {
        const char *work = getenv("QUERN_TEST_WORK");
        snprintf(dbpath, sizeof dbpath, "%s/registry_%s_%d_%d.db", work ? work : "/tmp", tag, (int)getpid(), n++);
        unlink(dbpath);
        snprintf(url, sizeof url, "sqlite://%s", dbpath);
    }
    db = qn_store_open(url, reg_db_migrations, reg_db_nmigrations, &err);
    if (!db)
        fprintf(stderr, "cannot open %s: %s\n", url, err.msg);
    assert_non_null(db);
    return 0;
}

static int reg_store_teardown(void **state)
{
    (void)state;
    qn_store_close(db);
    db = NULL;
    if (!on_pg) {
        char p[340];
        unlink(dbpath);
        snprintf(p, sizeof p, "%s-wal", dbpath);
        unlink(p);
        snprintf(p, sizeof p, "%s-shm", dbpath);
        unlink(p);
    }
    return 0;
}

#endif
