/*
 * filter.h - MLflow's run search grammar (filter and order_by), parsed and
 * compiled to SQL with bound parameters.
 *
 * The grammar is MLflow's (search_runs): conditions joined by AND (no OR,
 * no parentheses), each `<type>.<key> <comparator> <constant>`:
 *   type        metrics|metric, params|param|parameters|parameter,
 *               tags|tag, attributes|attribute|attr|run
 *   key         a bare word ([A-Za-z0-9_.]+) or quoted with "...", `...`
 *               or '...' (spaces, dashes and the like)
 *   metrics     = != > >= < <=  against a number
 *   params,tags = != LIKE ILIKE  against a quoted string
 *   attributes  run_id, run_name, status, artifact_uri, user_id:
 *               = != LIKE ILIKE IN NOT IN against strings ('a' or ('a','b'));
 *               start_time (created), end_time: numeric comparators
 * Keywords are case-insensitive. order_by clauses are `<type>.<key>
 * [ASC|DESC]`. A filter that does not parse is QN_INVALID_ARGUMENT whose
 * message names the 1-based character position and the token found there.
 *
 *     trk_filter *f = NULL;
 *     if (trk_filter_parse("metrics.auc > 0.9 and params.kind = 'xgb'", &f, &err) < 0) -> 400
 *     trk_query q;
 *     trk_query_init(&q, is_postgres);
 *     trk_query_where(&q, f);     // appends " AND EXISTS (...)" with '?' binds
 *     ... qn_prepare(c, q.sql.data), trk_query_bind(&q, st) ...
 *     trk_query_free(&q);
 *     trk_filter_free(f);
 *
 * Values never enter SQL text: each is a bound parameter. Plain data, one
 * thread at a time.
 */
#ifndef QUERN_REGISTRY_FILTER_H
#define QUERN_REGISTRY_FILTER_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/store/store.h"

#define TRK_FILTER_MAX_TEXT 16384 /* bytes of a filter string */
#define TRK_FILTER_MAX_CONDS 50
#define TRK_FILTER_MAX_VALUES 200 /* IN-list values, over the whole filter */
#define TRK_ORDER_MAX 10
#define TRK_QUERY_MAX_BINDS 512

/* TRK_DATASET: datasets.name / datasets.digest of a run's inputs (key: the column). */
typedef enum { TRK_METRIC, TRK_PARAM, TRK_TAG, TRK_ATTR, TRK_DATASET } trk_kind;
typedef enum { TRK_EQ, TRK_NE, TRK_GT, TRK_GE, TRK_LT, TRK_LE, TRK_LIKE, TRK_ILIKE, TRK_IN, TRK_NOT_IN } trk_op;

typedef struct trk_cond {
    trk_kind kind;
    char *key;       /* metric/param/tag key; for attributes the column (e.g. "r.status") */
    trk_op op;
    int numeric;     /* value is num, else strs */
    double num;
    char **strs;     /* nstrs strings (1 unless IN / NOT IN) */
    size_t nstrs;
} trk_cond;

typedef struct trk_filter {
    trk_cond conds[TRK_FILTER_MAX_CONDS];
    size_t n;
    int experiments;  /* parsed by trk_filter_parse_experiments */
} trk_filter;

typedef struct trk_order {
    trk_kind kind;
    char *key;       /* as in trk_cond */
    int desc;
} trk_order;

typedef struct trk_orders {
    trk_order o[TRK_ORDER_MAX];
    size_t n;
} trk_orders;

/* Parses text (NULL or blank: no conditions) into *out (caller frees with
 * trk_filter_free, also on failure: *out is then NULL). QN_INVALID_ARGUMENT
 * naming the position and token at fault. */
int trk_filter_parse(const char *text, trk_filter **out, qn_err *err);
/* The same grammar for search_experiments: attributes name (strings),
 * creation_time and last_update_time (numbers), and tags.<key>; metrics and
 * params are refused. It compiles over experiments aliased e. */
int trk_filter_parse_experiments(const char *text, trk_filter **out, qn_err *err);
void trk_filter_free(trk_filter *f);

/* Parses one order_by clause into o->o[o->n++]. QN_INVALID_ARGUMENT naming
 * the clause and position. */
int trk_order_parse(const char *clause, trk_orders *o, qn_err *err);
void trk_orders_free(trk_orders *o);

/* A statement under construction and its bound values, in '?' order. */
typedef struct trk_bind {
    char type;       /* 'i' int64, 'd' double, 't' text */
    int64_t i;
    double d;
    const char *t;   /* borrowed from the filter/orders, or owned by the query */
} trk_bind;

typedef struct trk_query {
    qn_buf sql;
    int pg;          /* PostgreSQL dialect (LIKE/ILIKE); else SQLite */
    trk_bind b[TRK_QUERY_MAX_BINDS];
    size_t n;
    char *owned[TRK_QUERY_MAX_BINDS];
    size_t nowned;
    int err;         /* sticky: too many binds or out of memory */
} trk_query;

void trk_query_init(trk_query *q, int pg);
void trk_query_free(trk_query *q);
void trk_query_text(trk_query *q, const char *t);
void trk_query_int(trk_query *q, int64_t v);
void trk_query_str(trk_query *q, const char *s);
/* Appends " AND <condition>" for each condition of f; runs are aliased r
 * (r.id the integer key; latest_metrics, params and run_tags by run_id). */
void trk_query_where(trk_query *q, const trk_filter *f);
/* LEFT JOINs for the order keys (call before WHERE), then the ORDER BY list
 * (call after it); ties break by start_time DESC, then the newest row (r.id
 * DESC), so that runs started in the same millisecond keep one order on
 * every page. MLflow's order:
 * values first, then NaN (metrics), then runs without the key. */
void trk_query_order_joins(trk_query *q, const trk_orders *o);
void trk_query_order_by(trk_query *q, const trk_orders *o);
/* Binds the collected values to st (NULL: only checks). 0, or the query's
 * error (too many values: QN_INVALID_ARGUMENT). */
int trk_query_bind(const trk_query *q, qn_stmt *st, qn_err *err);

#endif
