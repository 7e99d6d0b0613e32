/*
 * db.c - the registry's data layer (see db.h).
 *
 * Version numbers come from a counter on the parent row (models.next_version,
 * datasets.latest_version), read and bumped in the same write transaction
 * that inserts the version, so concurrent creators get 1, 2, 3... with no gap
 * and no reuse. An alias move is an upsert plus an outbox event
 * (quern.model.promoted) in one transaction: either both happen or neither.
 */
#include "registry/db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bus/bus.h"
#include "core/digest.h"
#include "core/json.h"
#include "core/outbox.h"
#include "registry/tracking.h"

/* Schema. Versions are numbered from models.next_version inside a write
 * transaction, so numbers are gapless and never reused. Tags are stored both
 * as a JSON object (to return) and as rows (to filter on). Times are ms since
 * the epoch. */
const qn_migration reg_db_migrations[] = {
    {1,
     "CREATE TABLE models ("
     "  id INTEGER PRIMARY KEY,"
     "  name TEXT NOT NULL UNIQUE,"
     "  description TEXT NOT NULL DEFAULT '',"
     "  tags TEXT NOT NULL DEFAULT '{}',"
     "  next_version INTEGER NOT NULL DEFAULT 1,"
     "  created_at INTEGER NOT NULL,"
     "  updated_at INTEGER NOT NULL);"
     "CREATE TABLE model_tags ("
     "  model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,"
     "  key TEXT NOT NULL, value TEXT NOT NULL,"
     "  PRIMARY KEY (model_id, key));"
     "CREATE TABLE versions ("
     "  model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,"
     "  version INTEGER NOT NULL,"
     "  manifest TEXT NOT NULL,"
     "  manifest_digest TEXT NOT NULL,"
     "  metrics TEXT NOT NULL DEFAULT '{}',"
     "  params TEXT NOT NULL DEFAULT '{}',"
     "  tags TEXT NOT NULL DEFAULT '{}',"
     "  dataset TEXT,"
     "  description TEXT NOT NULL DEFAULT '',"
     "  status TEXT NOT NULL DEFAULT 'ready',"
     "  created_at INTEGER NOT NULL,"
     "  updated_at INTEGER NOT NULL,"
     "  PRIMARY KEY (model_id, version));"
     "CREATE TABLE version_tags ("
     "  model_id INTEGER NOT NULL,"
     "  version INTEGER NOT NULL,"
     "  key TEXT NOT NULL, value TEXT NOT NULL,"
     "  PRIMARY KEY (model_id, version, key),"
     "  FOREIGN KEY (model_id, version) REFERENCES versions(model_id, version) ON DELETE CASCADE);"
     "CREATE TABLE aliases ("
     "  model_id INTEGER NOT NULL,"
     "  alias TEXT NOT NULL,"
     "  version INTEGER NOT NULL,"
     "  updated_at INTEGER NOT NULL,"
     "  PRIMARY KEY (model_id, alias),"
     "  FOREIGN KEY (model_id, version) REFERENCES versions(model_id, version) ON DELETE CASCADE);"
     "CREATE TABLE datasets ("
     "  id INTEGER PRIMARY KEY,"
     "  name TEXT NOT NULL UNIQUE,"
     "  latest_version INTEGER NOT NULL DEFAULT 1,"
     "  created_at INTEGER NOT NULL,"
     "  updated_at INTEGER NOT NULL);"
     "CREATE TABLE dataset_versions ("
     "  dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,"
     "  version INTEGER NOT NULL,"
     "  manifest TEXT NOT NULL,"
     "  manifest_digest TEXT NOT NULL,"
     "  description TEXT NOT NULL DEFAULT '',"
     "  tags TEXT NOT NULL DEFAULT '{}',"
     "  created_at INTEGER NOT NULL,"
     "  PRIMARY KEY (dataset_id, version));"
     QN_OUTBOX_SCHEMA},
    /* Alias history: one row per move, written in the move's transaction and
     * never deleted (keyed by model name, so it outlives a deleted model).
     * from_version NULL: the alias was new; to_version NULL: it was deleted.
     * mlflow_versions: what MLflow knows of a version that Quern does not
     * (source URI, run id and link, the artifact directory it came from).
     * Artifacts: MLflow's artifact paths over content-addressed blobs
     * (artifacts.c); the blob files stay the truth of the bytes. */
    {2,
     "CREATE TABLE alias_history ("
     "  id INTEGER PRIMARY KEY,"
     "  model TEXT NOT NULL,"
     "  alias TEXT NOT NULL,"
     "  from_version INTEGER,"
     "  to_version INTEGER,"
     "  reason TEXT NOT NULL DEFAULT '',"
     "  who TEXT NOT NULL,"
     "  at INTEGER NOT NULL);"
     "CREATE INDEX alias_history_by_alias ON alias_history (model, alias, id);"
     "CREATE TABLE mlflow_versions ("
     "  model_id INTEGER NOT NULL,"
     "  version INTEGER NOT NULL,"
     "  source TEXT NOT NULL DEFAULT '',"
     "  run_id TEXT NOT NULL DEFAULT '',"
     "  run_link TEXT NOT NULL DEFAULT '',"
     "  artifact_dir TEXT,"
     "  PRIMARY KEY (model_id, version),"
     "  FOREIGN KEY (model_id, version) REFERENCES versions(model_id, version) ON DELETE CASCADE);"
     "CREATE TABLE artifacts ("
     "  path TEXT PRIMARY KEY,"
     "  digest TEXT NOT NULL,"
     "  size INTEGER NOT NULL,"
     "  updated_at INTEGER NOT NULL);"},
    {3, REG_TRACKING_SCHEMA}, /* experiments and runs: tracking.h */
    /* Traffic policies (traffic_db.c): one per model, canonical JSON, gone
     * with the model. No row: all traffic to production. */
    {4,
     "CREATE TABLE traffic ("
     "  model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,"
     "  policy TEXT NOT NULL,"
     "  updated_at INTEGER NOT NULL,"
     "  PRIMARY KEY (model_id));"},
    /* The evidence of an automatic move (the monitor's promotion policy):
     * a JSON object, NULL for a move by hand. */
    {5, "ALTER TABLE alias_history ADD COLUMN evidence TEXT;"},
    /* MLflow 3's logged models (mlflow_logged.c): tags and params are JSON
     * objects; artifact_location is under the experiment's. */
    {6,
     "CREATE TABLE logged_models ("
     "  id TEXT PRIMARY KEY,"
     "  experiment_id BIGINT NOT NULL,"
     "  name TEXT NOT NULL,"
     "  model_type TEXT NOT NULL DEFAULT '',"
     "  source_run_id TEXT NOT NULL DEFAULT '',"
     "  status TEXT NOT NULL,"
     "  status_message TEXT NOT NULL DEFAULT '',"
     "  artifact_location TEXT NOT NULL,"
     "  created_at BIGINT NOT NULL,"
     "  updated_at BIGINT NOT NULL,"
     "  tags TEXT NOT NULL DEFAULT '{}',"
     "  params TEXT NOT NULL DEFAULT '{}');"
     "CREATE INDEX logged_models_by_experiment ON logged_models (experiment_id, created_at);"},
};
const size_t reg_db_nmigrations = sizeof reg_db_migrations / sizeof reg_db_migrations[0];

/* ---- transactions ------------------------------------------------------------ */

qn_conn *reg_db_begin(qn_store *db, int mode, qn_err *err)
{
    qn_conn *c = qn_store_acquire(db, err);
    if (c && qn_tx_begin(c, mode, err) < 0) {
        qn_store_release(db, c);
        return NULL;
    }
    return c;
}

int reg_db_end(qn_store *db, qn_conn *c, int rc, qn_err *err)
{
    if (!c)
        return rc;
    if (rc >= 0)
        rc = qn_tx_commit(c, err);
    qn_store_release(db, c); /* rolls back what is still open */
    return rc;
}

/* Runs a statement that returns no rows (or whose rows are not wanted). */
static int step_done(qn_stmt *st, qn_err *err)
{
    int rc;
    while ((rc = qn_step(st, err)) == 1)
        ;
    return rc;
}

int reg_db_one(qn_conn *c, qn_stmt *st, json_t *(*row_json)(qn_conn *c, qn_stmt *st, qn_err *err), json_t **out,
               qn_err *err)
{
    int rc = qn_step(st, err);
    if (rc <= 0)
        return rc;
    json_t *v = row_json(c, st, err);
    if (!v)
        return err->code;
    if (step_done(st, err) < 0) {
        json_decref(v);
        return err->code;
    }
    *out = v;
    return 1;
}

/* ---- kinds ------------------------------------------------------------------- */

typedef json_t *(*row_json_fn)(qn_conn *c, qn_stmt *st, qn_err *err);

struct reg_db_kind {
    const char *noun;     /* "model", "dataset" */
    const char *id_sql;   /* -> id; binds name */
    const char *get_sql;  /* -> a version row; binds id, n, n (n 0: latest) */
    const char *page_sql; /* -> version rows; binds id, before, before, each filter twice, limit */
    int nfilters;
    int version_col;      /* column of the version number in those rows */
    row_json_fn row_json;
};

/* {"production": 3, ...} for a model, or the alias names of one version. */
static json_t *aliases_json(qn_conn *c, int64_t id, int64_t version, qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "SELECT alias, version FROM aliases WHERE model_id = ? ORDER BY alias", err);
    if (!st)
        return NULL;
    qn_bind_int64(st, 1, id);
    json_t *out = version ? json_array() : json_object();
    int rc;
    while ((rc = qn_step(st, err)) == 1) {
        if (!version)
            json_object_set_new(out, qn_col_text(st, 0), json_integer(qn_col_int64(st, 1)));
        else if (qn_col_int64(st, 1) == version)
            json_array_append_new(out, json_string(qn_col_text(st, 0)));
    }
    if (rc < 0) {
        json_decref(out);
        return NULL;
    }
    return out;
}

#define VERSION_COLS                                                                       \
    "v.model_id, m.name, v.version, v.manifest, v.manifest_digest, v.metrics, v.params, " \
    "v.tags, v.dataset, v.description, v.status, v.created_at, v.updated_at"
#define VERSION_FROM " FROM versions v JOIN models m ON m.id = v.model_id "

static json_t *model_version_json(qn_conn *c, qn_stmt *st, qn_err *err)
{
    int64_t id = qn_col_int64(st, 0), version = qn_col_int64(st, 2);
    json_t *v = json_pack("{s:s, s:I, s:o, s:s, s:o, s:o, s:o, s:o, s:s, s:s, s:o, s:o}", "model",
                          qn_col_text(st, 1), "version", (json_int_t)version, "manifest",
                          qn_json_from_text(qn_col_text(st, 3)), "manifest_digest", qn_col_text(st, 4), "metrics",
                          qn_json_from_text(qn_col_text(st, 5)), "params", qn_json_from_text(qn_col_text(st, 6)),
                          "tags", qn_json_from_text(qn_col_text(st, 7)), "dataset",
                          qn_json_from_text(qn_col_text(st, 8)), "description", qn_col_text(st, 9), "status",
                          qn_col_text(st, 10), "created_at", qn_json_time(qn_col_int64(st, 11)), "updated_at",
                          qn_json_time(qn_col_int64(st, 12)));
    json_t *al = aliases_json(c, id, version, err);
    if (!al) {
        json_decref(v);
        return NULL;
    }
    json_object_set_new(v, "aliases", al);
    char *run_id = NULL; /* lineage: the run that produced it (tracking.c) */
    if (trk_run_of_version(c, qn_col_text(st, 1), version, &run_id, err) < 0) {
        json_decref(v);
        return NULL;
    }
    json_object_set_new(v, "run_id", run_id ? json_string(run_id) : json_null());
    free(run_id);
    return v;
}

#define DSV_COLS "d.name, v.version, v.manifest, v.manifest_digest, v.description, v.tags, v.created_at"
#define DSV_FROM " FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id "

static json_t *dataset_version_json(qn_conn *c, qn_stmt *st, qn_err *err)
{
    (void)c;
    json_t *v = json_pack("{s:s, s:I, s:o, s:s, s:s, s:o, s:o}", "dataset", qn_col_text(st, 0), "version",
                          (json_int_t)qn_col_int64(st, 1), "manifest", qn_json_from_text(qn_col_text(st, 2)),
                          "manifest_digest", qn_col_text(st, 3), "description", qn_col_text(st, 4), "tags",
                          qn_json_from_text(qn_col_text(st, 5)), "created_at", qn_json_time(qn_col_int64(st, 6)));
    if (!v)
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    return v;
}

const reg_db_kind reg_db_models = {
    .noun = "model",
    .id_sql = "SELECT id FROM models WHERE name = ?",
    .get_sql = "SELECT " VERSION_COLS VERSION_FROM "WHERE v.model_id = ? AND (? = 0 OR v.version = ?) "
               "ORDER BY v.version DESC LIMIT 1",
    .page_sql = "SELECT " VERSION_COLS VERSION_FROM "WHERE v.model_id = ? AND (? = 0 OR v.version < ?) "
                "AND (CAST(? AS TEXT) IS NULL OR v.status = ?) "
                "AND (CAST(? AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM version_tags t "
                "WHERE t.model_id = v.model_id AND t.version = v.version AND t.key = ? "
                "AND (CAST(? AS TEXT) IS NULL OR t.value = ?))) "
                "ORDER BY v.version DESC LIMIT ?",
    .nfilters = 3,
    .version_col = 2,
    .row_json = model_version_json,
};

const reg_db_kind reg_db_datasets = {
    .noun = "dataset",
    .id_sql = "SELECT id FROM datasets WHERE name = ?",
    .get_sql = "SELECT " DSV_COLS DSV_FROM "WHERE v.dataset_id = ? AND (? = 0 OR v.version = ?) "
               "ORDER BY v.version DESC LIMIT 1",
    .page_sql = "SELECT " DSV_COLS DSV_FROM "WHERE v.dataset_id = ? AND (? = 0 OR v.version < ?) "
                "ORDER BY v.version DESC LIMIT ?",
    .nfilters = 0,
    .version_col = 1,
    .row_json = dataset_version_json,
};

/* ---- what models and datasets share ------------------------------------------ */

int reg_db_id(qn_conn *c, const reg_db_kind *k, const char *name, int64_t *id, qn_err *err)
{
    *id = 0;
    qn_stmt *st = qn_prepare(c, k->id_sql, err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, name, -1);
    int rc = qn_step(st, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return qn_err_set(err, QN_NOT_FOUND, "%s \"%s\" does not exist", k->noun, name);
    *id = qn_col_int64(st, 0);
    return step_done(st, err) < 0 ? err->code : 0;
}

int reg_db_next_version(qn_conn *c, const reg_db_kind *k, const char *name, int64_t now, int64_t *id,
                        int64_t *version, qn_err *err)
{
    qn_stmt *st;
    if (k == &reg_db_models) {
        st = qn_prepare(c,
                        "UPDATE models SET next_version = next_version + 1, updated_at = ? "
                        "WHERE name = ? RETURNING id, next_version - 1",
                        err);
        if (!st)
            return err->code;
        qn_bind_int64(st, 1, now);
        qn_bind_text(st, 2, name, -1);
    } else {
        /* A new dataset starts at latest_version 1 (this, its first version);
         * an existing one is bumped, so latest_version is the number this takes. */
        st = qn_prepare(c,
                        "INSERT INTO datasets (name, created_at, updated_at) VALUES (?, ?, ?) "
                        "ON CONFLICT (name) DO UPDATE SET latest_version = datasets.latest_version + 1, "
                        "updated_at = excluded.updated_at RETURNING id, latest_version",
                        err);
        if (!st)
            return err->code;
        qn_bind_text(st, 1, name, -1);
        qn_bind_int64(st, 2, now);
        qn_bind_int64(st, 3, now);
    }
    int rc = qn_step(st, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return qn_err_set(err, QN_NOT_FOUND, "%s \"%s\" does not exist; create it with POST /v1/%ss", k->noun,
                          name, k->noun);
    *id = qn_col_int64(st, 0);
    *version = qn_col_int64(st, 1);
    return step_done(st, err) < 0 ? err->code : 0;
}

/* Version n (0: the latest) of the thing with this id, as JSON. */
static int version_by_id(qn_conn *c, const reg_db_kind *k, const char *name, int64_t id, int64_t n,
                         json_t **out, qn_err *err)
{
    qn_stmt *st = qn_prepare(c, k->get_sql, err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, id);
    qn_bind_int64(st, 2, n);
    qn_bind_int64(st, 3, n);
    int rc = reg_db_one(c, st, k->row_json, out, err);
    if (rc == 0 && n)
        return qn_err_set(err, QN_NOT_FOUND, "%s \"%s\" has no version %lld", k->noun, name, (long long)n);
    if (rc == 0)
        return qn_err_set(err, QN_NOT_FOUND, "%s \"%s\" has no versions yet", k->noun, name);
    return rc < 0 ? rc : 0;
}

int reg_db_version_get(qn_conn *c, const reg_db_kind *k, const char *name, int64_t n, json_t **out,
                       qn_err *err)
{
    int64_t id;
    if (reg_db_id(c, k, name, &id, err) < 0)
        return err->code;
    return version_by_id(c, k, name, id, n, out, err);
}

int reg_db_versions_page(qn_conn *c, const reg_db_kind *k, const char *name, int64_t before,
                         const char *const filters[3], qn_page *pg, qn_err *err)
{
    int64_t id;
    if (reg_db_id(c, k, name, &id, err) < 0)
        return err->code;
    qn_stmt *st = qn_prepare(c, k->page_sql, err);
    if (!st)
        return err->code;
    int i = 1;
    qn_bind_int64(st, i++, id);
    qn_bind_int64(st, i++, before);
    qn_bind_int64(st, i++, before);
    for (int f = 0; f < k->nfilters; f++)
        for (int twice = 0; twice < 2; twice++, i++)
            filters && filters[f] ? qn_bind_text(st, i, filters[f], -1) : qn_bind_null(st, i);
    qn_bind_int64(st, i, pg->limit + 1);
    int rc;
    while ((rc = qn_step(st, err)) == 1 && !qn_page_full(pg)) {
        json_t *v = k->row_json(c, st, err);
        if (!v)
            return err->code;
        qn_page_add_int(pg, v, qn_col_int64(st, k->version_col));
    }
    return rc < 0 ? rc : 0;
}

/* Stores a flat object of string tags as rows of a tag table (sql binds the
 * owner id, the version when > 0, key and value). */
static int store_tags(qn_conn *c, const char *sql, int64_t id, int64_t version, const json_t *tags,
                      qn_err *err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)tags, k, v) {
        qn_stmt *st = qn_prepare(c, sql, err);
        if (!st)
            return err->code;
        int i = 1;
        qn_bind_int64(st, i++, id);
        if (version > 0)
            qn_bind_int64(st, i++, version);
        qn_bind_text(st, i++, k, -1);
        qn_bind_text(st, i, json_string_value(v), -1);
        int rc = qn_step(st, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- models ------------------------------------------------------------------ */

#define MODEL_COLS "id, name, description, tags, created_at, updated_at"

static json_t *model_json(qn_conn *c, qn_stmt *st, qn_err *err)
{
    int64_t id = qn_col_int64(st, 0);
    json_t *m = json_pack("{s:s, s:s, s:o, s:o, s:o}", "name", qn_col_text(st, 1), "description",
                          qn_col_text(st, 2), "tags", qn_json_from_text(qn_col_text(st, 3)), "created_at",
                          qn_json_time(qn_col_int64(st, 4)), "updated_at", qn_json_time(qn_col_int64(st, 5)));
    /* The caller's statement stays valid: these use other statements. */
    qn_stmt *lv = qn_prepare(c, "SELECT MAX(version) FROM versions WHERE model_id = ?", err);
    if (!lv)
        goto fail;
    qn_bind_int64(lv, 1, id);
    if (qn_step(lv, err) < 0)
        goto fail;
    json_object_set_new(m, "latest_version", qn_col_is_null(lv, 0) ? json_null() : json_integer(qn_col_int64(lv, 0)));
    json_t *al = aliases_json(c, id, 0, err);
    if (!al)
        goto fail;
    json_object_set_new(m, "aliases", al);
    return m;
fail:
    json_decref(m);
    return NULL;
}

int reg_db_model_create(qn_conn *c, const char *name, const char *desc, const json_t *tags, int64_t now,
                        json_t **out, qn_err *err)
{
    char *tags_text = tags ? qn_json_canonical(tags) : strdup("{}");
    json_t *m = NULL;
    int rc;
    if (!tags_text)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    qn_stmt *st = qn_prepare(c,
                             "INSERT INTO models (name, description, tags, created_at, updated_at) "
                             "VALUES (?, ?, ?, ?, ?) RETURNING " MODEL_COLS,
                             err);
    if (!st) {
        rc = err->code;
        goto out;
    }
    qn_bind_text(st, 1, name, -1);
    qn_bind_text(st, 2, desc, -1);
    qn_bind_text(st, 3, tags_text, -1);
    qn_bind_int64(st, 4, now);
    qn_bind_int64(st, 5, now);
    rc = qn_step(st, err);
    if (rc == QN_ALREADY_EXISTS)
        rc = qn_err_set(err, QN_ALREADY_EXISTS, "model \"%s\" already exists", name);
    if (rc < 0)
        goto out;
    int64_t id = qn_col_int64(st, 0);
    if (!(m = model_json(c, st, err)) || step_done(st, err) < 0 || /* finish RETURNING before more */
        (tags && store_tags(c, "INSERT INTO model_tags (model_id, key, value) VALUES (?, ?, ?)", id, 0, tags,
                            err) < 0)) {
        rc = err->code;
        goto out;
    }
    *out = m;
    m = NULL;
    rc = 0;
out:
    json_decref(m);
    free(tags_text);
    return rc;
}

int reg_db_model_get(qn_conn *c, const char *name, json_t **out, qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "SELECT " MODEL_COLS " FROM models WHERE name = ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, name, -1);
    int rc = reg_db_one(c, st, model_json, out, err);
    if (rc == 0)
        return qn_err_set(err, QN_NOT_FOUND, "model \"%s\" does not exist", name);
    return rc < 0 ? rc : 0;
}

int reg_db_models_page(qn_conn *c, const char *after, const char *tkey, const char *tval, qn_page *pg,
                       qn_err *err)
{
    qn_stmt *st = qn_prepare(c,
                             "SELECT " MODEL_COLS " FROM models WHERE name > ? AND "
                             "(CAST(? AS TEXT) IS NULL OR id IN (SELECT model_id FROM model_tags "
                             "WHERE key = ? AND (CAST(? AS TEXT) IS NULL OR value = ?))) "
                             "ORDER BY name LIMIT ?",
                             err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, after, -1);
    tkey ? qn_bind_text(st, 2, tkey, -1) : qn_bind_null(st, 2);
    tkey ? qn_bind_text(st, 3, tkey, -1) : qn_bind_null(st, 3);
    tval ? qn_bind_text(st, 4, tval, -1) : qn_bind_null(st, 4);
    tval ? qn_bind_text(st, 5, tval, -1) : qn_bind_null(st, 5);
    qn_bind_int64(st, 6, pg->limit + 1);
    int rc;
    while ((rc = qn_step(st, err)) == 1 && !qn_page_full(pg)) {
        json_t *m = model_json(c, st, err);
        if (!m)
            return err->code;
        qn_page_add(pg, m, qn_col_text(st, 1));
    }
    return rc < 0 ? rc : 0;
}

int reg_db_model_delete(qn_conn *c, const char *name, qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "DELETE FROM models WHERE name = ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, name, -1);
    int rc = qn_step(st, err);
    if (rc < 0)
        return rc;
    if (qn_changes(c) == 0)
        return qn_err_set(err, QN_NOT_FOUND, "model \"%s\" does not exist", name);
    return 0;
}

int reg_db_model_version_create(qn_conn *c, const char *name, const reg_db_version_in *in, int64_t now,
                                int64_t *version, json_t **out, qn_err *err)
{
    int64_t id;
    int rc;
    if ((rc = reg_db_next_version(c, &reg_db_models, name, now, &id, version, err)) < 0)
        return rc;
    char *tags_text = in->tags ? qn_json_canonical(in->tags) : NULL;
    if (in->tags && !tags_text)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    qn_stmt *st = qn_prepare(c,
                             "INSERT INTO versions (model_id, version, manifest, manifest_digest, metrics, "
                             "params, tags, dataset, description, created_at, updated_at) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             err);
    if (!st) {
        free(tags_text);
        return err->code;
    }
    qn_bind_int64(st, 1, id);
    qn_bind_int64(st, 2, *version);
    qn_bind_text(st, 3, in->manifest.text, -1);
    qn_bind_text(st, 4, in->manifest.digest, -1);
    qn_bind_text(st, 5, in->metrics ? in->metrics : "{}", -1);
    qn_bind_text(st, 6, in->params ? in->params : "{}", -1);
    qn_bind_text(st, 7, tags_text ? tags_text : "{}", -1);
    in->dataset ? qn_bind_text(st, 8, in->dataset, -1) : qn_bind_null(st, 8);
    qn_bind_text(st, 9, in->description ? in->description : "", -1);
    qn_bind_int64(st, 10, now);
    qn_bind_int64(st, 11, now);
    rc = qn_step(st, err);
    free(tags_text);
    if (rc < 0)
        return rc;
    if (in->tags &&
        (rc = store_tags(c, "INSERT INTO version_tags (model_id, version, key, value) VALUES (?, ?, ?, ?)", id,
                         *version, in->tags, err)) < 0)
        return rc;
    if (in->run_id && (rc = trk_link_version(c, in->run_id, name, *version, err)) < 0)
        return rc;
    return version_by_id(c, &reg_db_models, name, id, *version, out, err);
}

int reg_db_model_version_patch(qn_conn *c, const char *name, int64_t n, const char *desc,
                               const char *status, const json_t *tags, json_t **out, qn_err *err)
{
    json_t *cur = NULL;
    char *tags_text = NULL;
    int64_t id;
    int rc;
    if ((rc = reg_db_id(c, &reg_db_models, name, &id, err)) < 0 ||
        (rc = version_by_id(c, &reg_db_models, name, id, n, &cur, err)) < 0)
        return rc;
    if (tags) {
        json_t *merged = json_deep_copy(json_object_get(cur, "tags"));
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)tags, k, v) {
            qn_stmt *st;
            if (json_is_null(v)) {
                json_object_del(merged, k);
                st = qn_prepare(c, "DELETE FROM version_tags WHERE model_id = ? AND version = ? AND key = ?", err);
            } else {
                json_object_set(merged, k, v);
                st = qn_prepare(c, "INSERT INTO version_tags (model_id, version, key, value) VALUES (?, ?, ?, ?) "
                                   "ON CONFLICT (model_id, version, key) DO UPDATE SET value = excluded.value",
                                err);
            }
            if (!st) {
                json_decref(merged);
                rc = err->code;
                goto out;
            }
            qn_bind_int64(st, 1, id);
            qn_bind_int64(st, 2, n);
            qn_bind_text(st, 3, k, -1);
            if (!json_is_null(v))
                qn_bind_text(st, 4, json_string_value(v), -1);
            if ((rc = qn_step(st, err)) < 0) {
                json_decref(merged);
                goto out;
            }
        }
        if (json_object_size(merged) > 64) {
            json_decref(merged);
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "a version may have at most 64 tags");
            goto out;
        }
        tags_text = qn_json_canonical(merged);
        json_decref(merged);
    }
    qn_stmt *st = qn_prepare(c,
                             "UPDATE versions SET description = COALESCE(?, description), "
                             "status = COALESCE(?, status), tags = COALESCE(?, tags), updated_at = ? "
                             "WHERE model_id = ? AND version = ?",
                             err);
    if (!st) {
        rc = err->code;
        goto out;
    }
    desc ? qn_bind_text(st, 1, desc, -1) : qn_bind_null(st, 1);
    status ? qn_bind_text(st, 2, status, -1) : qn_bind_null(st, 2);
    tags_text ? qn_bind_text(st, 3, tags_text, -1) : qn_bind_null(st, 3);
    qn_bind_int64(st, 4, qn_now_ms());
    qn_bind_int64(st, 5, id);
    qn_bind_int64(st, 6, n);
    if ((rc = qn_step(st, err)) < 0)
        goto out;
    rc = version_by_id(c, &reg_db_models, name, id, n, out, err);
out:
    json_decref(cur);
    free(tags_text);
    return rc;
}

/* ---- aliases ----------------------------------------------------------------- */

int reg_db_aliases_list(qn_conn *c, const char *name, json_t **out, qn_err *err)
{
    int64_t id;
    int rc;
    if ((rc = reg_db_id(c, &reg_db_models, name, &id, err)) < 0)
        return rc;
    qn_stmt *st = qn_prepare(c, "SELECT alias, version, updated_at FROM aliases WHERE model_id = ? ORDER BY alias",
                             err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, id);
    json_t *list = json_array();
    while ((rc = qn_step(st, err)) == 1)
        json_array_append_new(list, json_pack("{s:s, s:I, s:o}", "alias", qn_col_text(st, 0), "version",
                                              (json_int_t)qn_col_int64(st, 1), "updated_at",
                                              qn_json_time(qn_col_int64(st, 2))));
    if (rc < 0) {
        json_decref(list);
        return rc;
    }
    *out = json_pack("{s:s, s:o}", "model", name, "aliases", list);
    return 0;
}

/* The version alias points at into *version (1), or 0 when it has none. */
static int alias_version(qn_conn *c, int64_t id, const char *alias, int64_t *version, int64_t *updated,
                         qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "SELECT version, updated_at FROM aliases WHERE model_id = ? AND alias = ?", err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, id);
    qn_bind_text(st, 2, alias, -1);
    int rc = qn_step(st, err);
    if (rc != 1)
        return rc;
    *version = qn_col_int64(st, 0);
    if (updated)
        *updated = qn_col_int64(st, 1);
    return step_done(st, err) < 0 ? err->code : 1;
}

int reg_db_alias_get(qn_conn *c, const char *name, const char *alias, json_t **out, qn_err *err)
{
    int64_t id, version = 0, updated = 0;
    int rc;
    if ((rc = reg_db_id(c, &reg_db_models, name, &id, err)) < 0 ||
        (rc = alias_version(c, id, alias, &version, &updated, err)) < 0)
        return rc;
    if (rc == 0)
        return qn_err_set(err, QN_NOT_FOUND, "model \"%s\" has no alias \"%s\"", name, alias);
    *out = json_pack("{s:s, s:s, s:I, s:o}", "model", name, "alias", alias, "version", (json_int_t)version,
                     "updated_at", qn_json_time(updated));
    return 0;
}

int reg_event_append(qn_conn *c, const char *type, json_t *data, const char *traceparent, qn_err *err)
{
    json_t *ev = qn_event_new(type, "quern-registry", data, traceparent);
    if (!ev)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    int rc = qn_outbox_append(c, ev, err);
    json_decref(ev);
    return rc;
}

/* Appends one move of alias to its history (from or to 0: none). */
static int history_add(qn_conn *c, const char *name, const char *alias, int64_t from, int64_t to,
                       const reg_db_move *mv, qn_err *err)
{
    qn_stmt *st = qn_prepare(c,
                             "INSERT INTO alias_history (model, alias, from_version, to_version, reason, who, at, "
                             "evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, name, -1);
    qn_bind_text(st, 2, alias, -1);
    from ? qn_bind_int64(st, 3, from) : qn_bind_null(st, 3);
    to ? qn_bind_int64(st, 4, to) : qn_bind_null(st, 4);
    qn_bind_text(st, 5, mv && mv->reason ? mv->reason : "", -1);
    qn_bind_text(st, 6, mv && mv->who && *mv->who ? mv->who : "anonymous", -1);
    qn_bind_int64(st, 7, qn_now_ms());
    mv && mv->evidence ? qn_bind_text(st, 8, mv->evidence, -1) : qn_bind_null(st, 8);
    return step_done(st, err);
}

int reg_db_alias_set(qn_conn *c, const char *name, const char *alias, int64_t version,
                     const char *traceparent, const reg_db_move *mv, int64_t *previous, qn_err *err)
{
    int64_t id;
    int rc;
    *previous = 0;
    if ((rc = reg_db_id(c, &reg_db_models, name, &id, err)) < 0)
        return rc;
    qn_stmt *st = qn_prepare(c, "SELECT 1 FROM versions WHERE model_id = ? AND version = ?", err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, id);
    qn_bind_int64(st, 2, version);
    if ((rc = qn_step(st, err)) < 0)
        return rc;
    if (rc == 0)
        return qn_err_set(err, QN_NOT_FOUND, "model \"%s\" has no version %lld", name, (long long)version);
    if (step_done(st, err) < 0 || (rc = alias_version(c, id, alias, previous, NULL, err)) < 0)
        return err->code;
    if (*previous == version)
        return 0;
    st = qn_prepare(c,
                    "INSERT INTO aliases (model_id, alias, version, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (model_id, alias) DO UPDATE SET version = excluded.version, "
                    "updated_at = excluded.updated_at",
                    err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, id);
    qn_bind_text(st, 2, alias, -1);
    qn_bind_int64(st, 3, version);
    qn_bind_int64(st, 4, qn_now_ms());
    if ((rc = qn_step(st, err)) < 0 || (rc = history_add(c, name, alias, *previous, version, mv, err)) < 0)
        return rc;
    json_t *data = json_pack("{s:s, s:s, s:I, s:o}", "model", name, "alias", alias, "version", (json_int_t)version,
                             "previous_version", *previous ? json_integer(*previous) : json_null());
    if (mv && mv->reason && *mv->reason)
        json_object_set_new(data, "reason", json_string(mv->reason));
    if (mv && mv->evidence)
        json_object_set_new(data, "evidence", qn_json_from_text(mv->evidence));
    return reg_event_append(c, "quern.model.promoted", data, traceparent, err);
}

int reg_db_alias_delete(qn_conn *c, const char *name, const char *alias, const reg_db_move *mv, qn_err *err)
{
    int64_t id, version = 0;
    int rc;
    if ((rc = reg_db_id(c, &reg_db_models, name, &id, err)) < 0 ||
        (rc = alias_version(c, id, alias, &version, NULL, err)) < 0)
        return rc;
    if (rc == 0)
        return qn_err_set(err, QN_NOT_FOUND, "model \"%s\" has no alias \"%s\"", name, alias);
    qn_stmt *st = qn_prepare(c, "DELETE FROM aliases WHERE model_id = ? AND alias = ?", err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, id);
    qn_bind_text(st, 2, alias, -1);
    if ((rc = qn_step(st, err)) < 0)
        return rc;
    return history_add(c, name, alias, version, 0, mv, err);
}

static json_t *history_json(qn_stmt *st)
{
    json_t *h = json_pack("{s:I, s:s, s:o, s:o, s:s, s:s, s:o}", "id", (json_int_t)qn_col_int64(st, 0), "alias",
                     qn_col_text(st, 1),
                     "from_version", qn_col_is_null(st, 2) ? json_null() : json_integer(qn_col_int64(st, 2)),
                     "to_version", qn_col_is_null(st, 3) ? json_null() : json_integer(qn_col_int64(st, 3)),
                     "reason", qn_col_text(st, 4), "who", qn_col_text(st, 5), "at",
                     qn_json_time(qn_col_int64(st, 6)));
    if (h && !qn_col_is_null(st, 7)) {
        json_t *ev = qn_json_from_text(qn_col_text(st, 7));
        if (ev)
            json_object_set_new(h, "evidence", ev);
    }
    return h;
}

int reg_db_alias_history_page(qn_conn *c, const char *name, const char *alias, int64_t before, qn_page *pg,
                              qn_err *err)
{
    qn_stmt *st = qn_prepare(c,
                             "SELECT id, alias, from_version, to_version, reason, who, at, evidence FROM alias_history "
                             "WHERE model = ? AND alias = ? AND (? = 0 OR id < ?) ORDER BY id DESC LIMIT ?",
                             err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, name, -1);
    qn_bind_text(st, 2, alias, -1);
    qn_bind_int64(st, 3, before);
    qn_bind_int64(st, 4, before);
    qn_bind_int64(st, 5, pg->limit + 1);
    int rc;
    while ((rc = qn_step(st, err)) == 1 && !qn_page_full(pg))
        qn_page_add_int(pg, history_json(st), qn_col_int64(st, 0));
    if (rc < 0)
        return rc;
    if (before == 0 && json_array_size(pg->items) == 0) {
        /* An empty history of a model that never existed is a 404, not []. */
        int64_t id;
        if ((rc = reg_db_id(c, &reg_db_models, name, &id, err)) == QN_NOT_FOUND)
            return qn_err_set(err, QN_NOT_FOUND, "model \"%s\" has no alias \"%s\" and never had one",
                              name, alias);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int reg_db_alias_rollback(qn_conn *c, const char *name, const char *alias, const char *traceparent,
                          const reg_db_move *mv, int64_t *from, int64_t *to, qn_err *err)
{
    int64_t id, cur = 0;
    int rc;
    *from = *to = 0;
    if ((rc = reg_db_id(c, &reg_db_models, name, &id, err)) < 0 ||
        (rc = alias_version(c, id, alias, &cur, NULL, err)) < 0)
        return rc;
    if (rc == 0)
        return qn_err_set(err, QN_NOT_FOUND, "model \"%s\" has no alias \"%s\" to roll back", name, alias);
    /* The move that brought the alias to where it is says where it was. */
    qn_stmt *st = qn_prepare(c,
                             "SELECT from_version FROM alias_history WHERE model = ? AND alias = ? "
                             "ORDER BY id DESC LIMIT 1",
                             err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, name, -1);
    qn_bind_text(st, 2, alias, -1);
    if ((rc = qn_step(st, err)) < 0)
        return rc;
    int64_t prev = rc == 1 && !qn_col_is_null(st, 0) ? qn_col_int64(st, 0) : 0;
    if (rc == 1 && step_done(st, err) < 0)
        return err->code;
    if (prev == 0 || prev == cur)
        return qn_err_set(err, QN_FAILED_PRECONDITION,
                          "alias \"%s\" of model \"%s\" has pointed at no version before version %lld; "
                          "nothing to roll back to (use PUT /v1/models/%s/aliases/%s to move it)",
                          alias, name, (long long)cur, name, alias);
    reg_db_move rb = {.reason = mv && mv->reason && *mv->reason ? mv->reason : "rollback",
                      .who = mv ? mv->who : NULL};
    int64_t was;
    if ((rc = reg_db_alias_set(c, name, alias, prev, traceparent, &rb, &was, err)) < 0) {
        if (rc == QN_NOT_FOUND)
            return qn_err_set(err, QN_FAILED_PRECONDITION,
                              "alias \"%s\" of model \"%s\" pointed at version %lld before, "
                              "which no longer exists", alias, name, (long long)prev);
        return rc;
    }
    *from = cur;
    *to = prev;
    return 0;
}

/* ---- datasets ---------------------------------------------------------------- */

int reg_db_datasets_page(qn_conn *c, const char *after, qn_page *pg, qn_err *err)
{
    qn_stmt *st = qn_prepare(c,
                             "SELECT name, latest_version, created_at, updated_at FROM datasets "
                             "WHERE name > ? ORDER BY name LIMIT ?",
                             err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, after, -1);
    qn_bind_int64(st, 2, pg->limit + 1);
    int rc;
    while ((rc = qn_step(st, err)) == 1 && !qn_page_full(pg))
        qn_page_add(pg,
                    json_pack("{s:s, s:I, s:o, s:o}", "name", qn_col_text(st, 0), "latest_version",
                              (json_int_t)qn_col_int64(st, 1), "created_at", qn_json_time(qn_col_int64(st, 2)),
                              "updated_at", qn_json_time(qn_col_int64(st, 3))),
                    qn_col_text(st, 0));
    return rc < 0 ? rc : 0;
}

int reg_db_dataset_version_create(qn_conn *c, const char *name, const reg_db_manifest *manifest,
                                  const char *desc, const char *tags_text, int64_t now, int64_t *version,
                                  json_t **out, qn_err *err)
{
    char digest[80];
    if (manifest->digest) {
        snprintf(digest, sizeof digest, "%s", manifest->digest);
    } else {
        char hex[QN_SHA256_HEX + 1];
        qn_sha256_buf(manifest->text, strlen(manifest->text), hex);
        snprintf(digest, sizeof digest, "sha256:%s", hex);
    }
    int64_t id;
    int rc;
    if ((rc = reg_db_next_version(c, &reg_db_datasets, name, now, &id, version, err)) < 0)
        return rc;
    qn_stmt *st = qn_prepare(c,
                             "INSERT INTO dataset_versions (dataset_id, version, manifest, manifest_digest, "
                             "description, tags, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                             err);
    if (!st)
        return err->code;
    qn_bind_int64(st, 1, id);
    qn_bind_int64(st, 2, *version);
    qn_bind_text(st, 3, manifest->text, -1);
    qn_bind_text(st, 4, digest, -1);
    qn_bind_text(st, 5, desc ? desc : "", -1);
    qn_bind_text(st, 6, tags_text ? tags_text : "{}", -1);
    qn_bind_int64(st, 7, now);
    if ((rc = qn_step(st, err)) < 0)
        return rc;
    return version_by_id(c, &reg_db_datasets, name, id, *version, out, err);
}
