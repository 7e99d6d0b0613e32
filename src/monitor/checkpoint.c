/*
 * checkpoint.c - the monitor's in-memory state across a restart.
 *
 * What the store does not hold (quality.c and promote.c keep it in memory:
 * pending predictions, held labels, open quality and estimation windows,
 * the promotion evidence, per-version serving latencies) is written as one
 * row per part ("quality", "promote") of the checkpoint table, in one write
 * transaction: at a graceful stop (after the consumer stopped) and every
 * --checkpoint-interval from the ticker. At start, before the consumer,
 * the rows are read back; the ticker then expires what is past its horizon
 * as it would have been.
 *
 * Encoding: per part a 12-byte header ("QMCK", the format number, a
 * byte-order mark) and the part's fields in host byte order, strings with a
 * 16-bit length. A part whose header or body does not read (corrupt, from
 * another format or machine) is logged and ignored: that part starts empty.
 *
 * After a crash (kill -9) the state is the last checkpoint's: events
 * handled since were already marked in the inbox, so their effect on this
 * state is lost (docs/monitor.md, "State across a restart").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "monitor/monitor.h"

#define CK_MAGIC "QMCK"
#define CK_FORMAT 1u
#define CK_BOM 0x01020304u
#define CK_HEADER 12
/* The most one part may take (500,000 pending predictions are ~25 MB). */
#define CK_PART_MAX (1ull << 30)

/* ---- the buffer and the reader ------------------------------------------- */

void mon_buf_i64(qn_buf *b, int64_t v)
{
    qn_buf_append(b, &v, sizeof v);
}

void mon_buf_f64(qn_buf *b, double v)
{
    qn_buf_append(b, &v, sizeof v);
}

void mon_buf_str(qn_buf *b, const char *s)
{
    size_t n = strlen(s);
    uint16_t l = n > 65535 ? 65535 : (uint16_t)n;
    qn_buf_append(b, &l, sizeof l);
    qn_buf_append(b, s, l);
}

int mon_rd_get(mon_rd *r, void *out, size_t n)
{
    if (r->bad || r->n - r->off < n) {
        r->bad = 1;
        memset(out, 0, n);
        return -1;
    }
    memcpy(out, r->p + r->off, n);
    r->off += n;
    return 0;
}

int64_t mon_rd_i64(mon_rd *r)
{
    int64_t v;
    mon_rd_get(r, &v, sizeof v);
    return v;
}

double mon_rd_f64(mon_rd *r)
{
    double v;
    mon_rd_get(r, &v, sizeof v);
    return v;
}

void mon_rd_str(mon_rd *r, char *out, size_t cap)
{
    uint16_t l;
    out[0] = 0;
    if (mon_rd_get(r, &l, sizeof l) < 0)
        return;
    if (l >= cap || r->n - r->off < l) {
        r->bad = 1;
        return;
    }
    memcpy(out, r->p + r->off, l);
    out[l] = 0;
    r->off += l;
}

size_t mon_rd_count(mon_rd *r, size_t min_size)
{
    int64_t n = mon_rd_i64(r);
    if (r->bad || n < 0 || (min_size && (uint64_t)n > (r->n - r->off) / min_size)) {
        r->bad = 1;
        return 0;
    }
    return (size_t)n;
}

/* ---- write ---------------------------------------------------------------- */

static void header(qn_buf *b)
{
    uint32_t f = CK_FORMAT, bom = CK_BOM;
    qn_buf_append(b, CK_MAGIC, 4);
    qn_buf_append(b, &f, sizeof f);
    qn_buf_append(b, &bom, sizeof bom);
}

int mon_checkpoint_write(monitor *m, qn_err *err)
{
    int64_t t0 = qn_now_ms();
    qn_buf bq, bp;
    qn_buf_init(&bq, CK_PART_MAX);
    qn_buf_init(&bp, CK_PART_MAX);
    header(&bq);
    header(&bp);
    pthread_mutex_lock(&m->mu);
    mon_quality_save(m, &bq);
    mon_promote_save(m, &bp);
    pthread_mutex_unlock(&m->mu);
    int64_t t1 = qn_now_ms();
    int rc;
    qn_conn *c = NULL;
    if (qn_buf_error(&bq) < 0 || qn_buf_error(&bp) < 0) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory copying the state for the checkpoint");
        goto out;
    }
    if (!(c = qn_store_acquire(m->db, err))) {
        rc = err->code;
        goto out;
    }
    if ((rc = qn_tx_begin(c, QN_TX_WRITE, err)) < 0)
        goto out;
    const struct { const char *part; const qn_buf *b; } parts[] = {{"quality", &bq}, {"promote", &bp}};
    for (size_t i = 0; i < 2; i++) {
        qn_stmt *st = qn_prepare(c, "INSERT INTO checkpoint (part, data, written_at) VALUES (?, ?, ?) "
                                    "ON CONFLICT (part) DO UPDATE SET data = excluded.data, "
                                    "written_at = excluded.written_at", err);
        if (!st) {
            rc = err->code;
            goto fail;
        }
        qn_bind_text(st, 1, parts[i].part, -1);
        qn_bind_blob(st, 2, parts[i].b->data, parts[i].b->len);
        qn_bind_int64(st, 3, t0);
        if ((rc = qn_step(st, err)) < 0)
            goto fail;
    }
    if ((rc = qn_tx_commit(c, err)) < 0)
        goto fail;
    rc = 0;
    qn_log_debug(NULL, "checkpoint written", "{s:I, s:I, s:I, s:I}", "quality_bytes", (json_int_t)bq.len,
                 "promote_bytes", (json_int_t)bp.len, "copy_ms", (json_int_t)(t1 - t0), "ms",
                 (json_int_t)(qn_now_ms() - t0));
    goto out;
fail:
    qn_tx_rollback(c);
out:
    if (c)
        qn_store_release(m->db, c);
    qn_buf_free(&bq);
    qn_buf_free(&bp);
    return rc;
}

/* ---- load ----------------------------------------------------------------- */

static int load_part(monitor *m, const char *part, const uint8_t *p, size_t n, qn_err *err)
{
    mon_rd r = {.p = p, .n = n};
    char magic[4];
    uint32_t f = 0, bom = 0;
    mon_rd_get(&r, magic, 4);
    mon_rd_get(&r, &f, sizeof f);
    mon_rd_get(&r, &bom, sizeof bom);
    if (r.bad || memcmp(magic, CK_MAGIC, 4) != 0 || bom != CK_BOM)
        return qn_err_set(err, QN_DATA_LOSS, "not a checkpoint of this format and byte order (%zu bytes)", n);
    if (f != CK_FORMAT)
        return qn_err_set(err, QN_DATA_LOSS, "checkpoint format %u, this monitor reads %u", f, CK_FORMAT);
    int rc = strcmp(part, "quality") == 0 ? mon_quality_load(m, &r, err) : mon_promote_load(m, &r, err);
    if (rc < 0)
        return rc;
    if (r.bad || r.off != r.n)
        return qn_err_set(err, QN_DATA_LOSS, "checkpoint truncated or with trailing bytes (read %zu of %zu)", r.off,
                          r.n);
    return 0;
}

void mon_checkpoint_load(monitor *m)
{
    static const char *const names[] = {"promote", "quality"};
    struct { void *data; size_t n; int64_t at; int have; } parts[2] = {{0}};
    qn_err err = {0};
    qn_conn *c = qn_store_acquire(m->db, &err);
    qn_stmt *st = NULL;
    int rc = 0;
    /* read both rows first: loading may write (counts of what expires or
     * makes way) and must not hold this connection meanwhile */
    if (!c || !(st = qn_prepare(c, "SELECT part, data, written_at FROM checkpoint", &err))) {
        rc = -1;
    } else {
        while ((rc = qn_step(st, &err)) == 1) {
            const char *part = qn_col_text(st, 0);
            size_t n = 0;
            const void *data = qn_col_blob(st, 1, &n);
            for (size_t i = 0; i < 2; i++) {
                if (!part || strcmp(part, names[i]) != 0 || parts[i].have)
                    continue;
                parts[i].have = 1;
                parts[i].n = n;
                parts[i].at = qn_col_int64(st, 2);
                if (data && n && !(parts[i].data = malloc(n)))
                    parts[i].have = 0;
                else if (data && n)
                    memcpy(parts[i].data, data, n);
            }
        }
    }
    if (c)
        qn_store_release(m->db, c);
    if (rc < 0)
        qn_log_warn(NULL, "checkpoint not read", "{s:s}", "detail", err.msg);
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < 2; i++) {
        if (!parts[i].have)
            continue;
        const char *part = names[i];
        qn_err e = {0};
        int64_t t0 = qn_now_ms();
        if (!parts[i].data || load_part(m, part, parts[i].data, parts[i].n, &e) < 0) {
            qn_log_warn(NULL, "checkpoint ignored", "{s:s, s:s}", "part", part,
                        "detail", parts[i].data ? e.msg : "no data");
            /* that part starts empty */
            if (strcmp(part, "quality") == 0) {
                mon_quality_free(m);
                if (mon_quality_new(m, &e) < 0)
                    qn_log_error(NULL, "quality state not made", "{s:s}", "detail", e.msg);
            } else {
                mon_promote_free(m);
                if (mon_promote_new(m, &e) < 0)
                    qn_log_error(NULL, "promotion state not made", "{s:s}", "detail", e.msg);
            }
            continue;
        }
        qn_log_info(NULL, "checkpoint loaded", "{s:s, s:I, s:o, s:I}", "part", part, "bytes",
                    (json_int_t)parts[i].n, "written_at", qn_json_time(parts[i].at), "ms",
                    (json_int_t)(qn_now_ms() - t0));
    }
    /* what is past its horizon (or grace) goes now, as it would have */
    if (m->quality)
        mon_quality_tick(m, 0, NULL);
    pthread_mutex_unlock(&m->mu);
    free(parts[0].data);
    free(parts[1].data);
}
