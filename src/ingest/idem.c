/*
 * idem.c - Idempotency-Key: a retried write counts once.
 *
 * The key, a digest of the request and the answer given are stored in the
 * same transaction as the rows, so "stored" and "remembered" are one fact:
 * after a crash either both happened or neither did. A retry with the same
 * key and the same request gets the first answer back (200, header
 * Idempotent-Replayed: true) and stores nothing; the same key with another
 * request is a client bug and gets 409. Only successful answers are kept: a
 * refused batch may be fixed and sent again under its key.
 */
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "ingest/ingest.h"

#define KEY_MAX 256

int ing_idem_init(qn_req *req, qn_res *res, const char *scope, ing_idem *id)
{
    memset(id, 0, sizeof *id);
    const char *k = qn_req_header(req, "Idempotency-Key");
    if (!k)
        return 0;
    size_t n = strlen(k);
    int ok = n > 0 && n <= KEY_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = k[i] >= 0x21 && k[i] <= 0x7e;
    if (!ok) {
        qn_res_error(res, QN_INVALID_ARGUMENT,
                     "Idempotency-Key must be 1-%d printable ASCII characters without spaces", KEY_MAX);
        return -1;
    }
    id->key = k;
    id->scope = qn_arena_strdup(qn_req_arena(req), scope);
    /* What makes two requests "the same": where they go, how the body is to
     * be read, and the body. Fields are NUL-separated so they cannot run
     * into each other. */
    qn_sha256 *h = qn_sha256_new();
    if (!h || !id->scope) {
        qn_sha256_free(h);
        qn_res_error(res, QN_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    const char *ct = qn_req_header(req, "Content-Type"), *oe = qn_req_query(req, "on_error");
    size_t blen;
    const char *body = qn_req_body(req, &blen);
    qn_sha256_update(h, scope, strlen(scope) + 1);
    qn_sha256_update(h, ct ? ct : "", strlen(ct ? ct : "") + 1);
    qn_sha256_update(h, oe ? oe : "reject", strlen(oe ? oe : "reject") + 1);
    /* The CSV dialect decides what the body means. */
    static const char *const dialect[] = {"delimiter", "quote", "decimal_comma", "encoding", "na"};
    for (size_t i = 0; i < sizeof dialect / sizeof dialect[0]; i++) {
        const char *v = qn_req_query(req, dialect[i]);
        qn_sha256_update(h, v ? "=" : "-", 1);
        qn_sha256_update(h, v ? v : "", v ? strlen(v) + 1 : 0);
    }
    qn_sha256_update(h, body ? body : "", body ? blen : 0);
    qn_sha256_final(h, id->digest);
    qn_sha256_free(h);
    return 0;
}

int ing_idem_check(qn_conn *c, const ing_idem *id, qn_res *res, qn_err *err)
{
    if (!id->key)
        return 0;
    qn_stmt *st = qn_prepare(c, "SELECT digest, status, answer FROM idempotency WHERE scope = ? AND key = ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, id->scope, -1);
    qn_bind_text(st, 2, id->key, -1);
    int rc = qn_step(st, err);
    if (rc <= 0)
        return rc;
    if (strcmp(qn_col_text(st, 0), id->digest) != 0) {
        qn_res_error_details(res, QN_ALREADY_EXISTS, json_pack("{s:s}", "idempotency_key", id->key),
                             "Idempotency-Key %.256s was already used with a different request; "
                             "use a new key for new data",
                             id->key);
        return 1;
    }
    const char *answer = qn_col_text(st, 2);
    qn_res_header(res, "Idempotent-Replayed", "true");
    qn_res_text(res, 200, "application/json", answer, strlen(answer));
    return 1;
}

int ing_idem_store(qn_conn *c, const ing_idem *id, int status, const char *answer, qn_err *err)
{
    if (!id->key)
        return 0;
    qn_stmt *st = qn_prepare(c, "INSERT INTO idempotency (scope, key, digest, status, answer, created_at) "
                                "VALUES (?, ?, ?, ?, ?, ?)", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, id->scope, -1);
    qn_bind_text(st, 2, id->key, -1);
    qn_bind_text(st, 3, id->digest, -1);
    qn_bind_int64(st, 4, status);
    qn_bind_text(st, 5, answer, -1);
    qn_bind_int64(st, 6, qn_now_ms());
    int rc = qn_step(st, err);
    return rc < 0 ? rc : 0;
}

void ing_idem_sweep(ingest *g)
{
    int64_t now = qn_now_ms(), last = atomic_load(&g->swept_at);
    if (now - last < 60000 || !atomic_compare_exchange_strong(&g->swept_at, &last, now))
        return;
    qn_err err;
    if (ing_write_lock(g, &err) < 0)
        return;
    qn_conn *c = qn_store_acquire(g->db, &err);
    if (c) {
        qn_stmt *st = qn_prepare(c, "DELETE FROM idempotency WHERE created_at < ?", &err);
        if (st) {
            qn_bind_int64(st, 1, now - g->idem_ttl_ms);
            st = qn_step(st, &err) < 0 ? NULL : st;
        }
        if (!st) /* harmless: expired keys only take room until the next sweep */
            qn_log_warn(NULL, "idempotency sweep failed", "{s:s}", "detail", err.msg);
        qn_store_release(g->db, c);
    }
    ing_write_unlock(g);
}
