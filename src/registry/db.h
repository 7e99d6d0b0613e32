/*
 * db.h - the registry's data layer: models, versions, aliases and datasets
 * as plain functions over an open store connection.
 *
 * The HTTP handlers (models.c, datasets.c) parse and check a request, open a
 * transaction with reg_db_begin, call these functions, and end it with
 * reg_db_end; nothing here knows about HTTP, so the layer is tested
 * in-process (tests/unit/registry/test_registry_db.c). Every function takes
 * a connection inside a transaction (read or write as its contract says),
 * returns 0 or a negative qn_code with err naming the input at fault
 * (QN_NOT_FOUND for a missing model, dataset, version or alias;
 * QN_ALREADY_EXISTS for a clash), and hands back JSON owned by the caller
 * only on success.
 *
 * Models and datasets share their versions' machinery through a kind
 * (reg_db_models, reg_db_datasets): gapless numbering in the write
 * transaction that inserts the version, one version by number or the latest,
 * and pages of versions newest first.
 *
 *     qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
 *     json_t *m = NULL;
 *     int rc = c ? reg_db_model_get(c, "churn", &m, &err) : err.code;
 *     if ((rc = reg_db_end(r->db, c, rc, &err)) < 0)
 *         ... json_decref(m); answer err ...
 */
#ifndef QUERN_REGISTRY_DB_H
#define QUERN_REGISTRY_DB_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/store/store.h"
#include "core/validate.h"

#define REG_MAX_VERSION 1000000000LL

/* The registry's schema (models, versions, aliases, datasets, the outbox). */
extern const qn_migration reg_db_migrations[];
extern const size_t reg_db_nmigrations;

/* Acquires a connection of db and begins a transaction (QN_TX_READ or
 * QN_TX_WRITE). NULL with err on failure (nothing is held then). */
qn_conn *reg_db_begin(qn_store *db, int mode, qn_err *err);
/* Ends what reg_db_begin started: commits when rc >= 0 (a read transaction
 * too: it only ends the snapshot), rolls back otherwise, releases c.
 * Returns rc, or the commit's error. c NULL: returns rc. */
int reg_db_end(qn_store *db, qn_conn *c, int rc, qn_err *err);
/* Reads the one row st finds (prepared and bound; rows after it are read
 * past) as row_json makes it: 1 with *out (the caller's), 0 when st finds
 * no row (the caller says what is missing), or a negative code with err. */
int reg_db_one(qn_conn *c, qn_stmt *st, json_t *(*row_json)(qn_conn *c, qn_stmt *st, qn_err *err), json_t **out,
               qn_err *err);

/* What models and datasets share: the kind of thing that has versions. */
typedef struct reg_db_kind reg_db_kind;
extern const reg_db_kind reg_db_models;
extern const reg_db_kind reg_db_datasets;

/* The id of the model or dataset name; QN_NOT_FOUND naming it when absent. */
int reg_db_id(qn_conn *c, const reg_db_kind *k, const char *name, int64_t *id, qn_err *err);
/* Takes the next version number of name in the caller's write transaction
 * (gapless: a rollback gives it back). Models must exist (QN_NOT_FOUND);
 * a dataset is created by its first version. */
int reg_db_next_version(qn_conn *c, const reg_db_kind *k, const char *name, int64_t now, int64_t *id,
                        int64_t *version, qn_err *err);
/* Version n of name (0: the latest) as JSON into *out. */
int reg_db_version_get(qn_conn *c, const reg_db_kind *k, const char *name, int64_t n, json_t **out,
                       qn_err *err);
/* Adds to pg the versions of name below `before` (0: from the newest),
 * newest first, at most pg->limit + 1 read. filters: for models, the
 * version status, tag key and tag value (each NULL: any); NULL for
 * datasets. */
int reg_db_versions_page(qn_conn *c, const reg_db_kind *k, const char *name, int64_t before,
                         const char *const filters[3], qn_page *pg, qn_err *err);

/* The stored form of a version's manifest: canonical text and its digest
 * ("sha256:<hex>", the digest the caller checked, or one taken of the text
 * when digest is NULL). */
typedef struct reg_db_manifest {
    const char *text;
    const char *digest;
} reg_db_manifest;

/* ---- models ---------------------------------------------------------------- */

/* Creates a model (tags: a flat object of strings, or NULL); *out the model
 * as GET shows it. QN_ALREADY_EXISTS naming the model. Write transaction. */
int reg_db_model_create(qn_conn *c, const char *name, const char *desc, const json_t *tags, int64_t now,
                        json_t **out, qn_err *err);
/* One model as JSON. */
int reg_db_model_get(qn_conn *c, const char *name, json_t **out, qn_err *err);
/* Adds to pg the models named after `after`, by name; tag filter tkey
 * (and tval) or NULL. */
int reg_db_models_page(qn_conn *c, const char *after, const char *tkey, const char *tval, qn_page *pg,
                       qn_err *err);
/* Deletes a model with its versions and aliases. Write transaction. */
int reg_db_model_delete(qn_conn *c, const char *name, qn_err *err);

/* A model version to register. JSON texts are canonical; metrics, params
 * and tags default to "{}", dataset to NULL. */
typedef struct reg_db_version_in {
    reg_db_manifest manifest;
    const char *metrics, *params, *dataset, *description;
    const json_t *tags;  /* flat object of strings, or NULL */
    const char *run_id;  /* the run that produced it (tracking.h), or NULL */
} reg_db_version_in;

/* Registers the next version of model name; *version its number, *out the
 * version as GET shows it. Write transaction. */
int reg_db_model_version_create(qn_conn *c, const char *name, const reg_db_version_in *in, int64_t now,
                                int64_t *version, json_t **out, qn_err *err);
/* Applies a PATCH to version n: desc and status when not NULL, tags as a
 * JSON merge patch (a string sets, null removes; at most 64 after it).
 * *out the version after. Write transaction. */
int reg_db_model_version_patch(qn_conn *c, const char *name, int64_t n, const char *desc,
                               const char *status, const json_t *tags, json_t **out, qn_err *err);

/* {"model", "aliases": [{"alias", "version", "updated_at"}]} */
int reg_db_aliases_list(qn_conn *c, const char *name, json_t **out, qn_err *err);
/* {"model", "alias", "version", "updated_at"} */
int reg_db_alias_get(qn_conn *c, const char *name, const char *alias, json_t **out, qn_err *err);
/* Why and by whom an alias moves, as its history records it: reason ""
 * or NULL when none was given, who the token's name (NULL: "anonymous"). */
typedef struct reg_db_move {
    const char *reason;
    const char *who;
    const char *evidence;      /* canonical JSON object of an automatic move's evidence, or NULL */
} reg_db_move;

/* Points alias at version (which must exist); *previous the version it
 * pointed at (0: none). When it moves, appends a row to the alias history
 * (with mv, which may be NULL) and quern.model.promoted (with traceparent)
 * to the outbox, both in the same transaction. Write transaction. */
int reg_db_alias_set(qn_conn *c, const char *name, const char *alias, int64_t version,
                     const char *traceparent, const reg_db_move *mv, int64_t *previous, qn_err *err);
/* Removes an alias, recording the move (to no version) in its history.
 * Write transaction. */
int reg_db_alias_delete(qn_conn *c, const char *name, const char *alias, const reg_db_move *mv, qn_err *err);
/* Adds to pg the moves of alias (history rows below id `before`, 0: from
 * the newest), newest first: {"id","alias","from_version","to_version",
 * "reason","who","at"}; versions null for none. History is never deleted,
 * so it outlives the alias and the model; QN_NOT_FOUND only when there is
 * no history and no such model. */
int reg_db_alias_history_page(qn_conn *c, const char *name, const char *alias, int64_t before, qn_page *pg,
                              qn_err *err);
/* Moves alias back to the version it pointed at before its current one
 * (the from_version of its latest move), as a move by mv->who with reason
 * mv->reason (NULL or "": "rollback"); *from and *to the versions. QN_NOT_FOUND when the alias is
 * not set, QN_FAILED_PRECONDITION when it had no earlier version (or that
 * version is gone). Write transaction. */
int reg_db_alias_rollback(qn_conn *c, const char *name, const char *alias, const char *traceparent,
                          const reg_db_move *mv, int64_t *from, int64_t *to, qn_err *err);

/* Appends a CloudEvent of type with data (stolen) to the outbox, inside the
 * caller's write transaction. */
int reg_event_append(qn_conn *c, const char *type, json_t *data, const char *traceparent, qn_err *err);

/* ---- datasets -------------------------------------------------------------- */

/* Adds to pg the datasets named after `after`, by name. */
int reg_db_datasets_page(qn_conn *c, const char *after, qn_page *pg, qn_err *err);
/* Registers the next version of dataset name (created by its first). When
 * manifest.digest is NULL the digest of manifest.text is stored. Write
 * transaction. */
int reg_db_dataset_version_create(qn_conn *c, const char *name, const reg_db_manifest *manifest,
                                  const char *desc, const char *tags_text, int64_t now, int64_t *version,
                                  json_t **out, qn_err *err);

#endif
