/*
 * store_pg.c - the PostgreSQL backend of the store (libpq); the scale-out
 * twin of store_sqlite.c (see store.h, backend.h, DESIGN.md section 2).
 *
 * URL: postgres://user:pass@host:port/dbname?schema=NAME&busy_timeout=MS
 * (postgresql:// too). Every other query parameter is libpq's own (sslmode,
 * connect_timeout, application_name...) and is passed through; `options` is
 * refused because the store sets it.
 *
 * One schema per service. Each store lives in its own schema of the database:
 * `schema` in the URL, else the program's name without its "quern-" prefix
 * (quern-registry -> "registry"), so services given the same URL never see
 * each other's tables and need no change. The schema is created on first use
 * (under the store's advisory lock, so two processes never race on it) and
 * every connection starts with search_path set to it (connection options,
 * which PQreset keeps).
 *
 * What QN_TX_WRITE means here. Services rely on SQLite's BEGIN IMMEDIATE:
 * write transactions of one database run one at a time, so "read a counter,
 * then write with it" (gapless version numbers, ingest's event seq) is safe.
 * The same holds here: a write transaction is READ COMMITTED and first takes
 * a transaction-level advisory lock keyed by the schema
 * (pg_advisory_xact_lock), so the writers of one service serialise exactly as
 * on SQLite, each statement seeing everything committed before the lock was
 * granted, while readers never wait. The wait is bounded by busy_timeout
 * (lock_timeout, default 5 s), then QN_UNAVAILABLE, as SQLite's busy timeout.
 * QN_TX_READ is REPEATABLE READ: one snapshot for the whole transaction, as a
 * deferred SQLite transaction reading a WAL database. Statements outside a
 * transaction autocommit and do not take the lock. Migrations run in write
 * transactions (store.c), so the advisory lock also guarantees that two
 * processes never both apply a migration.
 *
 * Unlike SQLite, a failed statement aborts the whole PostgreSQL transaction;
 * the caller can only roll back (which every service does), and a commit of
 * such a transaction answers QN_ABORTED.
 *
 * Dialect. Prepared SQL is sent as written but for '?' placeholders, which
 * become $1..$n outside string literals, quoted identifiers and comments.
 * DDL run through exec (migrations) is translated in one place, ddl_translate
 * below, so the services' SQLite-flavoured schemas work unchanged:
 * INTEGER/INT -> BIGINT (SQLite integers are 64-bit), "INTEGER PRIMARY KEY"
 * -> an identity column (SQLite's auto-assigned rowid; explicit values are
 * still accepted, but an identity does not advance past them), REAL -> DOUBLE
 * PRECISION, BLOB -> BYTEA. Booleans read as integers 1/0 (text "1"/"0") as
 * SQLite's do, bytea columns decode to their bytes.
 *
 * Statements: one server-side prepared statement per cached qn_stmt, named
 * per connection; results come back whole (text format; blobs are sent as
 * binary bytea) and qn_step walks them row by row, so several statements can
 * be "active" on one connection as on SQLite. Evicted statements are
 * DEALLOCATEd lazily, batched with the next prepare.
 *
 * Reconnect. Before using an idle connection (no transaction open), the
 * backend checks without a round trip whether the server has closed it (a
 * readable socket: the goodbye of a restarted server, or EOF); a broken
 * connection is reset (PQreset) and its statements are prepared again on
 * first use. A connection that breaks mid-statement answers QN_UNAVAILABLE
 * once; inside a transaction it keeps answering QN_UNAVAILABLE until the
 * caller rolls back, so a transaction is never silently continued on a new
 * session. A COMMIT that fails because the connection broke is reported as
 * QN_UNAVAILABLE although it may have been applied.
 */
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/store/backend.h"
#include "core/store/store.h"

/* Fixed type OIDs (pg_type.dat) for the two types read specially. */
enum { OID_BOOL = 16, OID_BYTEA = 17 };

#define SCHEMA_MAX 63 /* NAMEDATALEN - 1 */

typedef struct pg_ctx {
    char *conninfo;                /* the URL for libpq, our parameters removed */
    char schema[SCHEMA_MAX + 1];
    char options[128];             /* search_path, lock_timeout, bytea_output */
    int64_t lock_key;              /* advisory lock of this schema's writers */
    pthread_mutex_t mu;
    int schema_ready;
} pg_ctx;

typedef struct pg_conn {
    pg_ctx *ctx;
    PGconn *pg;
    unsigned gen;                  /* bumped per reconnect: server statements are gone */
    unsigned next_id;              /* statement names q1, q2... */
    int in_tx;                     /* a transaction was begun and not ended */
    int64_t changes;
    char *dealloc;                 /* pending "DEALLOCATE qN;" texts */
    size_t dealloc_len, dealloc_cap;
} pg_conn;

typedef struct pg_stmt {
    pg_conn *pc;
    char name[16];
    char *sql;                     /* with $n placeholders */
    unsigned gen;                  /* pc->gen when prepared on the server */
    int nparams;
    char **vals;                   /* owned; NULL binds SQL NULL */
    int *lens, *fmts;
    PGresult *res;
    int row, nrows;
    enum { ST_FRESH, ST_ROWS, ST_DONE } state;
    int ncols;
    char **bin;                    /* decoded bytea of the current row, per column */
    size_t *binlen;
} pg_stmt;

/* ---- errors ---- */

/* The qn_code for a SQLSTATE (per store.h). Serialization failures and
 * deadlocks are transient like SQLite's BUSY: QN_UNAVAILABLE, retry. */
static int map_state(const char *st)
{
    if (!st || strlen(st) != 5)
        return QN_INTERNAL;
    if (strcmp(st, "23505") == 0)
        return QN_ALREADY_EXISTS;
    if (strncmp(st, "23", 2) == 0)
        return QN_FAILED_PRECONDITION;
    if (strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0 || strcmp(st, "55P03") == 0 ||
        strcmp(st, "57014") == 0 || strcmp(st, "53300") == 0 || strncmp(st, "08", 2) == 0 ||
        strncmp(st, "57P", 3) == 0)
        return QN_UNAVAILABLE;
    if (strcmp(st, "25P02") == 0)
        return QN_ABORTED;
    if (strncmp(st, "22", 2) == 0)
        return QN_INVALID_ARGUMENT;
    if (strncmp(st, "53", 2) == 0)
        return QN_RESOURCE_EXHAUSTED;
    if (strncmp(st, "XX", 2) == 0)
        return QN_DATA_LOSS;
    return QN_INTERNAL;
}

/* The primary message without libpq's "ERROR:  " prefix and trailing newline. */
static void clean_msg(const char *in, char *out, size_t cap)
{
    if (!in)
        in = "unknown error";
    if (strncmp(in, "ERROR:  ", 8) == 0)
        in += 8;
    snprintf(out, cap, "%s", in);
    size_t n = strlen(out);
    while (n && (out[n - 1] == '\n' || out[n - 1] == ' '))
        out[--n] = '\0';
}

/* Fills err for a failed result (res may be NULL) on pc; sql names the statement. */
static int res_fail(pg_conn *pc, const PGresult *res, const char *sql, qn_err *err)
{
    char msg[384];
    if (PQstatus(pc->pg) != CONNECTION_OK) {
        clean_msg(PQerrorMessage(pc->pg), msg, sizeof msg);
        return qn_err_set(err, QN_UNAVAILABLE, "postgres: connection lost: %s (in \"%.80s\")", msg,
                          sql);
    }
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    clean_msg(primary ? primary : PQerrorMessage(pc->pg), msg, sizeof msg);
    if (!res)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "postgres: %s (in \"%.80s\")", msg, sql);
    return qn_err_set(err, map_state(state), "postgres: %s [%s] (in \"%.80s\")", msg,
                      state ? state : "no sqlstate", sql);
}

/* ---- SQL rewriting ---- */

/* Length of the quoted run (string literal, quoted identifier, comment) that
 * starts at s, or 0 when s does not start one. Unterminated runs take the rest. */
static size_t quoted_len(const char *s)
{
    const char *p;
    if (*s == '\'' || *s == '"') {
        char q = *s;
        for (p = s + 1; *p; p++) {
            if (*p == q) {
                if (p[1] == q) { /* doubled quote */
                    p++;
                    continue;
                }
                return (size_t)(p + 1 - s);
            }
        }
        return strlen(s);
    }
    if (s[0] == '-' && s[1] == '-') {
        p = strchr(s, '\n');
        return p ? (size_t)(p + 1 - s) : strlen(s);
    }
    if (s[0] == '/' && s[1] == '*') {
        p = strstr(s + 2, "*/");
        return p ? (size_t)(p + 2 - s) : strlen(s);
    }
    return 0;
}

/* sql with '?' -> $1..$n and trailing ';' and blanks dropped. Malloc'd; NULL
 * on out of memory. *n gets the number of placeholders. */
static char *placeholders(const char *sql, int *n)
{
    size_t len = strlen(sql), cnt = 0;
    for (const char *p = sql; *p; p++)
        cnt += *p == '?';
    char *out = malloc(len + cnt * 11 + 1), *o = out;
    if (!out)
        return NULL;
    int k = 0;
    for (const char *p = sql; *p;) {
        size_t q = quoted_len(p);
        if (q) {
            memcpy(o, p, q);
            o += q;
            p += q;
        } else if (*p == '?') {
            o += sprintf(o, "$%d", ++k);
            p++;
        } else {
            *o++ = *p++;
        }
    }
    while (o > out && (o[-1] == ';' || o[-1] == ' ' || o[-1] == '\n' || o[-1] == '\t' ||
                       o[-1] == '\r'))
        o--;
    *o = '\0';
    *n = k;
    return out;
}

static int is_word_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '$';
}

/* Whether the words of phrase (single spaces) follow at p, case-insensitively,
 * separated by any blanks; *end gets the position after them. */
static int match_words(const char *p, const char *phrase, const char **end)
{
    for (;;) {
        size_t w = strcspn(phrase, " ");
        if (strncasecmp(p, phrase, w) != 0 || is_word_char(p[w]))
            return 0;
        p += w;
        phrase += w;
        if (!*phrase) {
            *end = p;
            return 1;
        }
        phrase++;
        if (!strchr(" \t\r\n", *p))
            return 0;
        while (*p && strchr(" \t\r\n", *p))
            p++;
    }
}

/* The one place where the services' SQLite-flavoured DDL becomes
 * PostgreSQL's (see the top of this file). Words inside literals, quoted
 * identifiers and comments are left alone. Malloc'd; NULL on out of memory. */
static char *ddl_translate(const char *sql)
{
    static const struct { const char *from, *to; } rules[] = {
        {"INTEGER PRIMARY KEY", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"},
        {"INTEGER", "BIGINT"},
        {"INT", "BIGINT"},
        {"REAL", "DOUBLE PRECISION"},
        {"BLOB", "BYTEA"},
    };
    size_t cap = strlen(sql) * 5 + 64; /* the longest expansion is < 5x its match */
    char *out = malloc(cap), *o = out;
    if (!out)
        return NULL;
    const char *p = sql;
    while (*p) {
        size_t q = quoted_len(p);
        if (q) {
            memcpy(o, p, q);
            o += q;
            p += q;
            continue;
        }
        if (is_word_char(*p) && (p == sql || !is_word_char(p[-1]))) {
            const char *end = NULL;
            size_t i;
            for (i = 0; i < sizeof rules / sizeof rules[0]; i++)
                if (match_words(p, rules[i].from, &end))
                    break;
            if (i < sizeof rules / sizeof rules[0]) {
                o += sprintf(o, "%s", rules[i].to);
                p = end;
                continue;
            }
            while (is_word_char(*p))
                *o++ = *p++;
            continue;
        }
        *o++ = *p++;
    }
    *o = '\0';
    return out;
}

/* ---- store-level ---- */

static int valid_schema(const char *s)
{
    if (!*s || strlen(s) > SCHEMA_MAX || (*s >= '0' && *s <= '9'))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return 0;
    return 1;
}

/* The default schema: the program's name less "quern-", as an identifier. */
static void default_schema(char *out)
{
    const char *name = program_invocation_short_name;
    if (strncmp(name, "quern-", 6) == 0 && name[6])
        name += 6;
    size_t n = 0;
    if (*name >= '0' && *name <= '9')
        out[n++] = '_';
    for (; *name && n < SCHEMA_MAX; name++) {
        char c = *name;
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        out[n++] = ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) ? c : '_';
    }
    if (!n)
        out[n++] = 'q';
    out[n] = '\0';
}

static int64_t schema_lock_key(const char *schema)
{
    uint64_t h = 14695981039346656037ULL;
    for (const char *s = "quern.store:"; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    for (const char *s = schema; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (int64_t)h;
}

static void ctx_free(pg_ctx *c)
{
    if (!c)
        return;
    free(c->conninfo);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Splits target's query into ours (schema, busy_timeout) and libpq's, and
 * checks what is left with libpq's own parser. */
static int pg_open(const char *target, void **out, qn_err *err)
{
    pg_ctx *c = calloc(1, sizeof *c);
    char *copy = strdup(target);
    size_t cap = strlen(target) + 32;
    char *info = malloc(cap);
    long busy_ms = 5000;
    int rc = 0;
    if (!c || !copy || !info) {
        free(c);
        free(copy);
        free(info);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory opening a postgres store");
    }
    pthread_mutex_init(&c->mu, NULL);
    default_schema(c->schema);
    char *q = strchr(copy, '?');
    if (q)
        *q++ = '\0';
    int o = snprintf(info, cap, "postgresql://%s", copy);
    char sep = '?';
    char *save = NULL;
    for (char *kv = q ? strtok_r(q, "&", &save) : NULL; kv && rc == 0;
         kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        const char *val = eq ? eq + 1 : "";
        size_t klen = eq ? (size_t)(eq - kv) : strlen(kv);
        if (klen == 6 && strncmp(kv, "schema", 6) == 0) {
            if (!valid_schema(val))
                rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                                "store URL: schema must be 1-63 of [a-z0-9_], not starting with a "
                                "digit, got '%s'",
                                val);
            else
                snprintf(c->schema, sizeof c->schema, "%s", val);
        } else if (klen == 12 && strncmp(kv, "busy_timeout", 12) == 0) {
            char *end;
            errno = 0;
            busy_ms = strtol(val, &end, 10);
            if (errno || end == val || *end || busy_ms < 0 || busy_ms > INT_MAX)
                rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                                "store URL: busy_timeout must be milliseconds, got '%s'", val);
        } else if (klen == 7 && strncmp(kv, "options", 7) == 0) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                            "store URL: 'options' is set by the store (search_path, lock_timeout)");
        } else {
            o += snprintf(info + o, cap - (size_t)o, "%c%s", sep, kv);
            sep = '&';
        }
    }
    free(copy);
    if (rc == 0) {
        char *perr = NULL;
        PQconninfoOption *opts = PQconninfoParse(info, &perr);
        if (!opts) {
            char msg[256];
            clean_msg(perr ? perr : "out of memory", msg, sizeof msg);
            rc = qn_err_set(err, perr ? QN_INVALID_ARGUMENT : QN_RESOURCE_EXHAUSTED,
                            "store URL: %s", msg);
        }
        PQfreemem(perr);
        PQconninfoFree(opts);
    }
    if (rc < 0) {
        free(info);
        ctx_free(c);
        return rc;
    }
    c->conninfo = info;
    /* lock_timeout bounds the write-lock wait as SQLite's busy timeout does
     * (0 would mean forever, as there: "busy_timeout=0" fails at once on
     * SQLite, so 1 ms is the closest); hex bytea is what col_blob decodes. */
    snprintf(c->options, sizeof c->options,
             "-c search_path=%s -c lock_timeout=%ld -c bytea_output=hex", c->schema,
             busy_ms ? busy_ms : 1);
    c->lock_key = schema_lock_key(c->schema);
    *out = c;
    return 0;
}

static void pg_close(void *ctx)
{
    ctx_free(ctx);
}

static void quiet_notices(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* "schema already exists, skipping" and the like */
}

/* One command without parameters; 0 or a filled err. */
static int run(pg_conn *pc, const char *sql, qn_err *err)
{
    PGresult *r = PQexec(pc->pg, sql);
    ExecStatusType s = PQresultStatus(r);
    int rc = 0;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
        rc = res_fail(pc, r, sql, err);
    PQclear(r);
    return rc;
}

/* Creates the store's schema when it is missing, once per store. */
static int ensure_schema(pg_conn *pc, qn_err *err)
{
    pg_ctx *c = pc->ctx;
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    if (c->schema_ready)
        goto out;
    const char *params[1] = {c->schema};
    PGresult *r = PQexecParams(pc->pg, "SELECT 1 FROM pg_namespace WHERE nspname = $1", 1, NULL,
                               params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = res_fail(pc, r, "schema lookup", err);
        PQclear(r);
        goto out;
    }
    int exists = PQntuples(r) > 0;
    PQclear(r);
    if (!exists) {
        /* Under the schema's lock: two processes creating it at once could
         * otherwise clash on pg_namespace's unique index. */
        char sql[256];
        snprintf(sql, sizeof sql,
                 "BEGIN; SELECT pg_advisory_xact_lock(%" PRId64 "); "
                 "CREATE SCHEMA IF NOT EXISTS \"%s\"; COMMIT",
                 c->lock_key, c->schema);
        if ((rc = run(pc, sql, err)) < 0) {
            if (PQtransactionStatus(pc->pg) != PQTRANS_IDLE)
                PQclear(PQexec(pc->pg, "ROLLBACK"));
            qn_err_wrap(err, "creating schema %s", c->schema);
            goto out;
        }
    }
    c->schema_ready = 1;
out:
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static int pg_conn_open(void *ctx, void **out, qn_err *err)
{
    pg_ctx *c = ctx;
    pg_conn *pc = calloc(1, sizeof *pc);
    if (!pc)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory opening a connection");
    pc->ctx = c;
    /* Later keywords override what the URL says: the URL cannot carry
     * `options` (refused at open), and text is always UTF-8 on the wire. */
    const char *const kw[] = {"dbname", "options", "client_encoding", "fallback_application_name",
                              NULL};
    const char *const vals[] = {c->conninfo, c->options, "UTF8", program_invocation_short_name,
                                NULL};
    pc->pg = PQconnectdbParams(kw, vals, 1);
    int rc;
    if (!pc->pg) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "postgres: out of memory connecting");
        goto fail;
    }
    if (PQstatus(pc->pg) != CONNECTION_OK) {
        char msg[384];
        clean_msg(PQerrorMessage(pc->pg), msg, sizeof msg);
        rc = qn_err_set(err, QN_UNAVAILABLE, "postgres: cannot connect: %s", msg);
        goto fail;
    }
    PQsetNoticeProcessor(pc->pg, quiet_notices, NULL);
    if ((rc = ensure_schema(pc, err)) < 0)
        goto fail;
    *out = pc;
    return 0;
fail:
    PQfinish(pc->pg);
    free(pc);
    return rc;
}

static void pg_conn_close(void *conn)
{
    pg_conn *pc = conn;
    if (!pc)
        return;
    PQfinish(pc->pg);
    free(pc->dealloc);
    free(pc);
}

/* Makes pc usable: outside a transaction, a connection the server has closed
 * (found without a round trip: a readable socket, then EOF) is reset. Inside
 * one, a lost connection stays an error until the caller rolls back. */
static int conn_ready(pg_conn *pc, qn_err *err)
{
    PGconn *pg = pc->pg;
    if (PQstatus(pg) == CONNECTION_OK && PQtransactionStatus(pg) == PQTRANS_IDLE) {
        /* A notice, or the server's goodbye: its FATAL message, then EOF
         * on a later read. A few rounds reach the EOF without ever blocking. */
        struct pollfd p = {.fd = PQsocket(pg), .events = POLLIN};
        for (int i = 0; i < 4 && p.fd >= 0 && poll(&p, 1, 0) > 0; i++) {
            if (!PQconsumeInput(pg))
                break;
            PGnotify *n;
            while ((n = PQnotifies(pg)))
                PQfreemem(n);
        }
    }
    if (PQstatus(pg) == CONNECTION_OK)
        return 0;
    if (pc->in_tx)
        return qn_err_set(err, QN_UNAVAILABLE,
                          "postgres: connection lost inside a transaction; roll back and retry");
    PQreset(pg);
    pc->gen++;
    pc->dealloc_len = 0; /* the old session's statements went with it */
    if (PQstatus(pg) != CONNECTION_OK) {
        char msg[384];
        clean_msg(PQerrorMessage(pg), msg, sizeof msg);
        return qn_err_set(err, QN_UNAVAILABLE, "postgres: connection lost, reconnect failed: %s",
                          msg);
    }
    PQsetNoticeProcessor(pg, quiet_notices, NULL);
    return 0;
}

/* Rows changed, from a command's status ("INSERT 0 3", "UPDATE 2"...); SELECT
 * and utility commands leave the count alone, as sqlite3_changes does. */
static void note_changes(pg_conn *pc, const PGresult *r)
{
    const char *cmd = PQcmdStatus((PGresult *)r);
    if (strncmp(cmd, "INSERT", 6) == 0 || strncmp(cmd, "UPDATE", 6) == 0 ||
        strncmp(cmd, "DELETE", 6) == 0 || strncmp(cmd, "MERGE", 5) == 0)
        pc->changes = strtoll(PQcmdTuples((PGresult *)r), NULL, 10);
}

static int pg_exec(void *conn, const char *sql, qn_err *err)
{
    pg_conn *pc = conn;
    int rc = conn_ready(pc, err);
    if (rc < 0)
        return rc;
    char *text = ddl_translate(sql);
    if (!text)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory running \"%.80s\"", sql);
    PGresult *r = PQexec(pc->pg, text);
    ExecStatusType s = PQresultStatus(r);
    if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK || s == PGRES_EMPTY_QUERY)
        note_changes(pc, r);
    else
        rc = res_fail(pc, r, sql, err);
    PQclear(r);
    free(text);
    return rc;
}

static int pg_tx_begin(void *conn, int mode, qn_err *err)
{
    pg_conn *pc = conn;
    int rc = conn_ready(pc, err);
    if (rc < 0)
        return rc;
    char sql[128];
    if (mode == QN_TX_WRITE)
        snprintf(sql, sizeof sql,
                 "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(%" PRId64 ")",
                 pc->ctx->lock_key);
    else
        snprintf(sql, sizeof sql, "BEGIN ISOLATION LEVEL REPEATABLE READ");
    if ((rc = run(pc, sql, err)) < 0) {
        if (PQstatus(pc->pg) == CONNECTION_OK && PQtransactionStatus(pc->pg) != PQTRANS_IDLE)
            PQclear(PQexec(pc->pg, "ROLLBACK"));
        if (rc == QN_UNAVAILABLE && PQstatus(pc->pg) == CONNECTION_OK)
            qn_err_wrap(err, "waiting for the write lock of schema %s", pc->ctx->schema);
        return rc;
    }
    pc->in_tx = 1;
    return 0;
}

static void pg_tx_rollback(void *conn)
{
    pg_conn *pc = conn;
    PGTransactionStatusType t = PQtransactionStatus(pc->pg);
    if (PQstatus(pc->pg) == CONNECTION_OK && (t == PQTRANS_INTRANS || t == PQTRANS_INERROR))
        PQclear(PQexec(pc->pg, "ROLLBACK"));
    pc->in_tx = 0;
}

static int pg_tx_commit(void *conn, qn_err *err)
{
    pg_conn *pc = conn;
    if (PQstatus(pc->pg) != CONNECTION_OK)
        return qn_err_set(err, QN_UNAVAILABLE, "postgres: connection lost before COMMIT");
    if (PQtransactionStatus(pc->pg) == PQTRANS_INERROR) {
        pg_tx_rollback(pc);
        return qn_err_set(err, QN_ABORTED,
                          "postgres: the transaction was aborted by an earlier error; rolled back");
    }
    PGresult *r = PQexec(pc->pg, "COMMIT");
    int rc = 0;
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        rc = res_fail(pc, r, "COMMIT", err);
    else if (strcmp(PQcmdStatus(r), "COMMIT") != 0)
        rc = qn_err_set(err, QN_ABORTED, "postgres: COMMIT answered %s", PQcmdStatus(r));
    PQclear(r);
    pc->in_tx = 0;
    return rc;
}

static int64_t pg_changes(void *conn)
{
    return ((pg_conn *)conn)->changes;
}

/* ---- statements ---- */

static void free_row(pg_stmt *st)
{
    for (int i = 0; i < st->ncols && st->bin; i++) {
        free(st->bin[i]);
        st->bin[i] = NULL;
    }
}

static void drop_result(pg_stmt *st)
{
    free_row(st);
    free(st->bin);
    free(st->binlen);
    st->bin = NULL;
    st->binlen = NULL;
    st->ncols = 0;
    PQclear(st->res);
    st->res = NULL;
    st->state = ST_FRESH;
}

/* Sends the DEALLOCATEs of evicted statements, batched in one command. */
static void flush_dealloc(pg_conn *pc)
{
    if (!pc->dealloc_len || PQtransactionStatus(pc->pg) == PQTRANS_INERROR)
        return;
    PGresult *r = PQexec(pc->pg, pc->dealloc);
    PQclear(r);
    pc->dealloc_len = 0;
}

/* Prepares st on pc's current session. */
static int server_prepare(pg_stmt *st, qn_err *err)
{
    pg_conn *pc = st->pc;
    flush_dealloc(pc);
    PGresult *r = PQprepare(pc->pg, st->name, st->sql, st->nparams, NULL);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        rc = res_fail(pc, r, st->sql, err);
    else
        st->gen = pc->gen;
    PQclear(r);
    return rc;
}

static void stmt_free(pg_stmt *st)
{
    if (!st)
        return;
    drop_result(st);
    for (int i = 0; i < st->nparams && st->vals; i++)
        free(st->vals[i]);
    free(st->vals);
    free(st->lens);
    free(st->fmts);
    free(st->sql);
    free(st);
}

static int pg_prepare(void *conn, const char *sql, void **out, qn_err *err)
{
    pg_conn *pc = conn;
    int rc = conn_ready(pc, err);
    if (rc < 0)
        return rc;
    pg_stmt *st = calloc(1, sizeof *st);
    if (!st || !(st->sql = placeholders(sql, &st->nparams)))
        goto oom;
    if (!*st->sql) {
        stmt_free(st);
        return qn_err_set(err, QN_INTERNAL, "postgres: no statement in \"%.80s\"", sql);
    }
    if (st->nparams && (!(st->vals = calloc((size_t)st->nparams, sizeof *st->vals)) ||
                        !(st->lens = calloc((size_t)st->nparams, sizeof *st->lens)) ||
                        !(st->fmts = calloc((size_t)st->nparams, sizeof *st->fmts))))
        goto oom;
    st->pc = pc;
    snprintf(st->name, sizeof st->name, "q%u", ++pc->next_id);
    if ((rc = server_prepare(st, err)) < 0) {
        stmt_free(st);
        return rc;
    }
    *out = st;
    return 0;
oom:
    stmt_free(st);
    return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory preparing \"%.80s\"", sql);
}

static void pg_finalize(void *stmt)
{
    pg_stmt *st = stmt;
    pg_conn *pc = st->pc;
    if (st->gen == pc->gen) {
        /* Queued, not sent: this also runs for every statement when the
         * connection closes, where a round trip each would be waste. */
        size_t need = pc->dealloc_len + strlen(st->name) + 16;
        if (need > pc->dealloc_cap) {
            size_t cap = need * 2;
            char *p = realloc(pc->dealloc, cap);
            if (p) {
                pc->dealloc = p;
                pc->dealloc_cap = cap;
            }
        }
        if (need <= pc->dealloc_cap)
            pc->dealloc_len += (size_t)sprintf(pc->dealloc + pc->dealloc_len, "DEALLOCATE %s;",
                                               st->name);
    }
    stmt_free(st);
}

static void clear_binds(pg_stmt *st)
{
    for (int i = 0; i < st->nparams; i++) {
        free(st->vals[i]);
        st->vals[i] = NULL;
        st->lens[i] = 0;
        st->fmts[i] = 0;
    }
}

static void pg_reset(void *stmt)
{
    pg_stmt *st = stmt;
    drop_result(st);
    clear_binds(st);
}

/* Binds a copy of n bytes (plus a NUL) at 1-based idx in format fmt. */
static int bind(pg_stmt *st, int idx, const void *p, size_t n, int fmt)
{
    if (idx < 1 || idx > st->nparams)
        return QN_OUT_OF_RANGE;
    if (n > INT_MAX)
        return QN_OUT_OF_RANGE;
    char *v = NULL;
    if (p) {
        if (!(v = malloc(n + 1)))
            return QN_RESOURCE_EXHAUSTED;
        memcpy(v, p, n);
        v[n] = '\0';
    }
    if (st->state != ST_FRESH)
        drop_result(st);
    free(st->vals[idx - 1]);
    st->vals[idx - 1] = v;
    st->lens[idx - 1] = (int)n;
    st->fmts[idx - 1] = fmt;
    return 0;
}

static int pg_bind_int64(void *stmt, int idx, int64_t v)
{
    char buf[24];
    int n = snprintf(buf, sizeof buf, "%" PRId64, v);
    return bind(stmt, idx, buf, (size_t)n, 0);
}

static int pg_bind_double(void *stmt, int idx, double v)
{
    char buf[32];
    int n;
    if (isnan(v))
        n = snprintf(buf, sizeof buf, "NaN");
    else if (isinf(v))
        n = snprintf(buf, sizeof buf, v > 0 ? "Infinity" : "-Infinity");
    else
        n = snprintf(buf, sizeof buf, "%.17g", v); /* round-trips exactly */
    return bind(stmt, idx, buf, (size_t)n, 0);
}

static int pg_bind_text(void *stmt, int idx, const char *s, ssize_t len)
{
    /* Text goes in text format, NUL-terminated: bytes after an embedded NUL
     * are lost (PostgreSQL text cannot hold NUL; use a blob). */
    return bind(stmt, idx, s, len < 0 ? strlen(s) : (size_t)len, 0);
}

static int pg_bind_blob(void *stmt, int idx, const void *p, size_t len)
{
    /* Binary format: raw bytes into bytea, no escaping. An empty blob is
     * still a blob (a non-NULL pointer), as on SQLite. */
    return bind(stmt, idx, p ? p : "", len, 1);
}

static int pg_bind_null(void *stmt, int idx)
{
    return bind(stmt, idx, NULL, 0, 0);
}

static int pg_step(void *stmt, qn_err *err)
{
    pg_stmt *st = stmt;
    pg_conn *pc = st->pc;
    int rc;
    if (st->state == ST_DONE)
        drop_result(st); /* stepping past the end runs it again, as SQLite does */
    if (st->state == ST_FRESH) {
        if ((rc = conn_ready(pc, err)) < 0)
            return rc;
        if (st->gen != pc->gen && (rc = server_prepare(st, err)) < 0)
            return rc;
        PGresult *r = PQexecPrepared(pc->pg, st->name, st->nparams,
                                     (const char *const *)st->vals, st->lens, st->fmts, 0);
        ExecStatusType s = PQresultStatus(r);
        if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK) {
            rc = res_fail(pc, r, st->sql, err);
            PQclear(r);
            return rc;
        }
        note_changes(pc, r);
        st->res = r;
        st->nrows = PQntuples(r);
        st->ncols = PQnfields(r);
        st->row = -1;
        st->state = ST_ROWS;
        if (st->ncols && (!(st->bin = calloc((size_t)st->ncols, sizeof *st->bin)) ||
                          !(st->binlen = calloc((size_t)st->ncols, sizeof *st->binlen)))) {
            drop_result(st);
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory reading rows");
        }
    }
    free_row(st);
    if (++st->row < st->nrows)
        return 1;
    st->state = ST_DONE;
    return 0;
}

static int has_value(pg_stmt *st, int col)
{
    return st->state == ST_ROWS && st->row >= 0 && st->row < st->nrows && col >= 0 &&
           col < st->ncols && !PQgetisnull(st->res, st->row, col);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The bytes of a bytea value of the current row, decoded from hex output
 * once per row and column. NULL on out of memory or a malformed value. */
static const char *bytea(pg_stmt *st, int col, size_t *len)
{
    if (!st->bin[col]) {
        const char *t = PQgetvalue(st->res, st->row, col);
        size_t n = strlen(t);
        if (n < 2 || t[0] != '\\' || t[1] != 'x' || n % 2)
            return NULL;
        char *b = malloc((n - 2) / 2 + 1);
        if (!b)
            return NULL;
        size_t k = 0;
        for (size_t i = 2; i < n; i += 2) {
            int hi = hexval(t[i]), lo = hexval(t[i + 1]);
            if (hi < 0 || lo < 0) {
                free(b);
                return NULL;
            }
            b[k++] = (char)(hi << 4 | lo);
        }
        b[k] = '\0';
        st->bin[col] = b;
        st->binlen[col] = k;
    }
    *len = st->binlen[col];
    return st->bin[col];
}

static int pg_col_is_null(void *stmt, int col)
{
    return !has_value(stmt, col);
}

static int64_t pg_col_int64(void *stmt, int col)
{
    pg_stmt *st = stmt;
    if (!has_value(st, col))
        return 0;
    const char *t = PQgetvalue(st->res, st->row, col);
    if (PQftype(st->res, col) == OID_BOOL)
        return *t == 't';
    return strtoll(t, NULL, 10);
}

static double pg_col_double(void *stmt, int col)
{
    pg_stmt *st = stmt;
    if (!has_value(st, col))
        return 0.0;
    const char *t = PQgetvalue(st->res, st->row, col);
    if (PQftype(st->res, col) == OID_BOOL)
        return *t == 't';
    return strtod(t, NULL);
}

static const char *pg_col_text(void *stmt, int col)
{
    pg_stmt *st = stmt;
    if (!has_value(st, col))
        return NULL;
    size_t len;
    switch (PQftype(st->res, col)) {
    case OID_BOOL:
        return *PQgetvalue(st->res, st->row, col) == 't' ? "1" : "0";
    case OID_BYTEA:
        return bytea(st, col, &len);
    }
    return PQgetvalue(st->res, st->row, col);
}

static const void *pg_col_blob(void *stmt, int col, size_t *len)
{
    pg_stmt *st = stmt;
    size_t n = 0;
    const void *p = NULL;
    if (has_value(st, col)) {
        if (PQftype(st->res, col) == OID_BYTEA) {
            p = bytea(st, col, &n);
        } else {
            p = pg_col_text(st, col);
            n = p ? strlen(p) : 0;
        }
    }
    if (len)
        *len = n;
    return p;
}

static const char *const pg_schemes[] = {"postgres", "postgresql", NULL};

const qn__store_ops qn__store_pg = {
    .name = "postgres",
    .schemes = pg_schemes,
    .open = pg_open,
    .close = pg_close,
    .conn_open = pg_conn_open,
    .conn_close = pg_conn_close,
    .exec = pg_exec,
    .tx_begin = pg_tx_begin,
    .tx_commit = pg_tx_commit,
    .tx_rollback = pg_tx_rollback,
    .changes = pg_changes,
    .prepare = pg_prepare,
    .finalize = pg_finalize,
    .reset = pg_reset,
    .bind_int64 = pg_bind_int64,
    .bind_double = pg_bind_double,
    .bind_text = pg_bind_text,
    .bind_blob = pg_bind_blob,
    .bind_null = pg_bind_null,
    .step = pg_step,
    .col_is_null = pg_col_is_null,
    .col_int64 = pg_col_int64,
    .col_double = pg_col_double,
    .col_text = pg_col_text,
    .col_blob = pg_col_blob,
};
