/*
 * source_pg.c - the postgres kind: rows of a query on a PostgreSQL server
 * after the committed cursor, read through a server-side cursor.
 *
 * The declaration holds a URL without a password and where the password is:
 * password_file (read at each run, first line) or password_env (an
 * environment variable of quern-ingest). The password is never stored nor
 * shown. A run opens one REPEATABLE READ, READ ONLY transaction, declares
 *     DECLARE quern_src NO SCROLL CURSOR FOR
 *       SELECT * FROM (query) AS q WHERE cursor IS NOT NULL AND cursor > $1 ORDER BY cursor
 * and FETCHes `batch` rows at a time, so memory holds about one chunk. Types
 * map to JSON by OID: booleans, integers and floating/numeric values become
 * JSON booleans and numbers, NULL null, anything else its text form. The
 * cursor is kept as a JSON integer for integer columns, else as its text
 * form, and sent back as text ($1 takes the column's type).
 */
#include <ctype.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "ingest/sources.h"

static const char *const keys[] = {"url", "password_file", "password_env", "query", "cursor", "connect_timeout", NULL};

static int check(json_t *spec, const src_limits *lim, qn_err *err)
{
    const char *url, *pf, *pe;
    int rc;
    if ((rc = src_known_keys(spec, keys, err)) < 0 || (rc = src_str(spec, "url", 2048, 1, &url, err)) < 0 ||
        (rc = src_str(spec, "password_file", 4096, 0, &pf, err)) < 0 ||
        (rc = src_str(spec, "password_env", 128, 0, &pe, err)) < 0)
        return rc;
    if (strncmp(url, "postgres://", 11) && strncmp(url, "postgresql://", 13))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "url must start with postgres:// or postgresql://");
    const char *auth = strstr(url, "://") + 3, *at = strchr(auth, '@'), *slash = strchr(auth, '/');
    if (at && (!slash || at < slash) && memchr(auth, ':', (size_t)(at - auth)))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "url must not hold a password (it would be stored); give password_file or password_env");
    if (strstr(url, "password="))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "url must not hold a password parameter; give password_file or password_env");
    if (pf && pe)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "give password_file or password_env, not both");
    if (pf && (rc = src_path_ok(lim, "password_file", pf, err)) < 0)
        return rc;
    /* Only variables meant for it: a declaration must not send ingest's own
     * secrets (QUERN_TOKEN...) to a server it names. */
    if (pe && strncmp(pe, "QUERN_SOURCE_", 13) != 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "password_env must name a variable starting with QUERN_SOURCE_");
    if (pe) {
        for (const char *p = pe; *p; p++)
            if (!(isupper((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_') || isdigit((unsigned char)pe[0]))
                return qn_err_set(err, QN_INVALID_ARGUMENT, "password_env must be an environment variable name (A-Z, 0-9, _)");
    }
    json_t *t = json_object_get(spec, "connect_timeout");
    if (t && (!json_is_integer(t) || json_integer_value(t) < 1 || json_integer_value(t) > 300))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "connect_timeout must be seconds from 1 to 300");
    return src_sql_check(spec, err);
}

/* The password from where the declaration says; *pw malloc'ed or NULL. */
static int password(const src_run *r, char **pw, qn_err *err)
{
    const json_t *spec = r->spec;
    const char *pf = json_string_value(json_object_get(spec, "password_file"));
    const char *pe = json_string_value(json_object_get(spec, "password_env"));
    *pw = NULL;
    if (pe) {
        const char *v = getenv(pe);
        if (!v)
            return qn_err_set(err, QN_FAILED_PRECONDITION, "password_env %s is not set in quern-ingest's environment", pe);
        return (*pw = strdup(v)) ? 0 : qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    if (!pf)
        return 0;
    int rc = src_path_ok(r->lim, "password_file", pf, err);
    if (rc < 0)
        return rc;
    FILE *f = fopen(pf, "r");
    if (!f)
        return qn_err_set(err, QN_FAILED_PRECONDITION, "password_file %s cannot be read: %s", pf, strerror(errno));
    char line[1024];
    if (!fgets(line, sizeof line, f))
        line[0] = '\0';
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    *pw = strdup(line);
    explicit_bzero(line, sizeof line);
    return *pw ? 0 : qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
}

enum { OID_BOOL = 16, OID_INT8 = 20, OID_INT2 = 21, OID_INT4 = 23, OID_FLOAT4 = 700, OID_FLOAT8 = 701, OID_NUMERIC = 1700 };

static json_t *value_json(PGresult *res, int row, int col, int as_cursor)
{
    if (PQgetisnull(res, row, col))
        return json_null();
    const char *v = PQgetvalue(res, row, col);
    Oid t = PQftype(res, col);
    switch (t) {
    case OID_BOOL: if (!as_cursor) return json_boolean(v[0] == 't'); break;
    case OID_INT2: case OID_INT4: case OID_INT8: return json_integer((json_int_t)strtoll(v, NULL, 10));
    case OID_FLOAT4: case OID_FLOAT8: case OID_NUMERIC:
        if (!as_cursor) {
            char *end;
            double d = strtod(v, &end);
            if (*end == '\0')
                return json_real(d);
        }
        break;
    }
    return json_string(v);
}

static int pg_fail(PGconn *pg, const char *what, qn_err *err)
{
    const char *m = PQerrorMessage(pg);
    size_t n = strcspn(m, "\n");
    return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: %.*s", what, (int)n, m);
}

static int pull(src_run *r, qn_err *err)
{
    const char *url = json_string_value(json_object_get(r->spec, "url"));
    const char *query = json_string_value(json_object_get(r->spec, "query"));
    const char *curname = json_string_value(json_object_get(r->spec, "cursor"));
    json_t *to = json_object_get(r->spec, "connect_timeout");
    char *pw = NULL, *ident = src_sql_ident(curname), *sql = NULL, timeout[16], fetch[64];
    PGconn *pg = NULL;
    PGresult *res = NULL;
    src_chunk k;
    src_chunk_init(&k);
    int rc = password(r, &pw, err);
    if (rc < 0)
        goto out;
    if (!ident || asprintf(&sql, "DECLARE quern_src NO SCROLL CURSOR FOR SELECT * FROM (%s) AS q WHERE %s IS NOT NULL%s%s%s ORDER BY %s",
                           query, ident, r->cursor ? " AND " : "", r->cursor ? ident : "", r->cursor ? " > $1" : "",
                           ident) < 0) {
        sql = NULL;
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    snprintf(timeout, sizeof timeout, "%lld", to ? (long long)json_integer_value(to) : 10LL);
    const char *kw[] = {"dbname", "password", "connect_timeout", "application_name", NULL};
    const char *val[] = {url, pw, timeout, "quern-ingest", NULL};
    if (!pw) {
        kw[1] = "connect_timeout", val[1] = timeout;
        kw[2] = "application_name", val[2] = "quern-ingest";
        kw[3] = NULL;
    }
    pg = PQconnectdbParams(kw, val, 1);
    if (pw) {
        explicit_bzero(pw, strlen(pw));
        free(pw);
        pw = NULL;
    }
    if (!pg || PQstatus(pg) != CONNECTION_OK) {
        const char *m = pg ? PQerrorMessage(pg) : "out of memory";
        char *shown = qn_url_redact(url);
        rc = qn_err_set(err, QN_UNAVAILABLE, "cannot connect to %s: %.*s", shown ? shown : "the server",
                        (int)strcspn(m, "\n"), m);
        free(shown);
        goto out;
    }
    res = PQexec(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = pg_fail(pg, "BEGIN", err);
        goto out;
    }
    PQclear(res);
    char *cur_text = NULL;
    if (r->cursor)
        cur_text = json_is_string(r->cursor) ? strdup(json_string_value(r->cursor))
                                             : qn_json_dumps(r->cursor, JSON_ENCODE_ANY);
    const char *params[1] = {cur_text};
    res = PQexecParams(pg, sql, r->cursor ? 1 : 0, NULL, params, NULL, NULL, 0);
    free(cur_text);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = pg_fail(pg, "the query fails", err);
        goto out;
    }
    PQclear(res);
    res = NULL;
    snprintf(fetch, sizeof fetch, "FETCH %lld FROM quern_src", (long long)r->batch);
    int ci = -1;
    for (;;) {
        res = PQexec(pg, fetch);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            rc = pg_fail(pg, "FETCH", err);
            goto out;
        }
        int n = PQntuples(res), nc = PQnfields(res);
        if (ci < 0) {
            for (int i = 0; i < nc; i++)
                if (strcmp(PQfname(res, i), curname) == 0)
                    ci = i;
            if (ci < 0) {
                rc = qn_err_set(err, QN_INVALID_ARGUMENT, "the query's result has no column %s (the cursor)", curname);
                goto out;
            }
        }
        if (n == 0)
            break;
        for (int row = 0; row < n; row++) {
            json_t *obj = json_object();
            if (!obj) {
                rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
                goto out;
            }
            for (int i = 0; i < nc; i++)
                json_object_set_new(obj, PQfname(res, i), value_json(res, row, i, 0));
            if ((rc = src_chunk_row(r, &k, obj, value_json(res, row, ci, 1), err)) < 0)
                goto out;
        }
        PQclear(res);
        res = NULL;
        if (atomic_load(r->stop)) {
            rc = src_chunk_flush(r, &k, err);
            if (rc == 0)
                rc = qn_err_set(err, QN_CANCELLED, "the service is stopping; the next run goes on from the cursor");
            goto out;
        }
    }
    rc = src_chunk_flush(r, &k, err);
out:
    src_chunk_free(&k);
    PQclear(res);
    if (pg)
        PQfinish(pg); /* ends the read-only transaction */
    if (pw) {
        explicit_bzero(pw, strlen(pw));
        free(pw);
    }
    free(sql);
    free(ident);
    return rc;
}

const src_kind src_postgres = {"postgres", check, pull};
