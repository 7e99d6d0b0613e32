/*
 * traffic_db.h - a model's traffic policy: how its requests are split
 * between aliases (weighted canary routes, sticky per key) and which alias
 * shadows them (DESIGN.md section 4). Parsed and checked here, stored beside
 * the model (table traffic, migration 3 of db.c), read by every serve replica.
 *
 *     json_t *policy = NULL;
 *     if (reg_traffic_parse(body, &policy, &err) < 0) -> 400 naming the field
 *     qn_conn *c = reg_db_begin(db, QN_TX_WRITE, &err);
 *     int rc = c ? reg_db_traffic_set(c, "churn", policy, tp, &out, &err) : err.code;
 *     rc = reg_db_end(db, c, rc, &err);
 *
 * The stored and answered form is always complete:
 *   {"routes":[{"alias","weight"}...],"shadow":null|{"alias","fraction"},
 *    "sticky":null|"user"|"header:<Name>"}
 * No policy means every request goes to production (GET answers that
 * default with "default": true).
 */
#ifndef QUERN_REGISTRY_TRAFFIC_DB_H
#define QUERN_REGISTRY_TRAFFIC_DB_H

#include <jansson.h>

#include "core/err.h"
#include "core/store/store.h"

#define REG_TRAFFIC_MAX_ROUTES 8
#define REG_TRAFFIC_MAX_HEADER 64

/* Checks a PUT body (routes: 1..8 distinct aliases, integer weights 0..100
 * summing to exactly 100; shadow: null or {alias, fraction 0..1}; sticky:
 * null, "user" or "header:<Name>") and builds its complete form into
 * *policy (caller owns). QN_INVALID_ARGUMENT naming the field at fault
 * ("routes[1].weight: ..."). Whether the aliases exist is checked by
 * reg_db_traffic_set. */
int reg_traffic_parse(const json_t *body, json_t **policy, qn_err *err);

/* Stores policy (from reg_traffic_parse) as model name's traffic policy,
 * replacing any, and appends quern.traffic.changed (with traceparent) to the
 * outbox in the same transaction. Every alias it names must exist on the
 * model (QN_INVALID_ARGUMENT naming the field); QN_NOT_FOUND for a missing
 * model. *out: the policy as GET answers it (caller owns). Write transaction. */
int reg_db_traffic_set(qn_conn *c, const char *name, const json_t *policy, const char *traceparent, json_t **out,
                       qn_err *err);
/* {"model","routes","shadow","sticky","default","updated_at"}: the stored
 * policy, or the default (all to production, "default": true, updated_at
 * null) when none is stored. QN_NOT_FOUND for a missing model. */
int reg_db_traffic_get(qn_conn *c, const char *name, json_t **out, qn_err *err);
/* Removes model name's policy (back to the default); *removed 1 when there
 * was one, and then quern.traffic.changed is appended in the same
 * transaction. QN_NOT_FOUND for a missing model. Write transaction. */
int reg_db_traffic_delete(qn_conn *c, const char *name, const char *traceparent, int *removed, qn_err *err);

#endif
