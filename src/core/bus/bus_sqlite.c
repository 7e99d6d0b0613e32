/*
 * bus_sqlite.c - the embedded bus: a durable queue in one SQLite file (WAL),
 * shared by the processes of one host (DESIGN.md section 2).
 *
 * Tables (docs/bus.md has the full story):
 *   bus_messages   (seq, id, topic, body, published_at): every message once.
 *   bus_groups     (name, patterns, cursor, created_at): a durable consumer
 *                  group; cursor is the last seq it has scanned. A new group
 *                  starts at the current MAX(seq): it sees what is published
 *                  after it was created.
 *   bus_deliveries (grp, seq, attempt, visible_at, lease): what a group still
 *                  owes. A row is created when the group's cursor passes a
 *                  matching message; it is claimed by setting a lease
 *                  (visible_at = now + visibility, a random lease token) in a
 *                  short BEGIN IMMEDIATE transaction, so two processes never
 *                  hold the same message; ack deletes it (if the lease still
 *                  matches); nack pushes visible_at into the future; an
 *                  expired lease is simply claimable again, with attempt + 1.
 * Fan-out is lazy: publishing is one INSERT per message whatever the number
 * of groups, which is what makes batches fast.
 *
 * Durability: the publishing connection commits with synchronous=FULL (the
 * WAL is fsynced before publish returns). Consumer connections use NORMAL: a
 * claim or ack lost to a power cut only means a redelivery, which
 * at-least-once allows.
 *
 * Idle consumers poll with a cheap read (no write lock) and sleep 1..50 ms
 * with backoff; a publish in the same process wakes them at once.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/bus/backend.h"
#include "core/json.h"
#include "core/service.h"
#include "core/trace.h"

#define BUSY_MS 10000
#define SCAN_CHUNK 1000
#define SWEEP_CHUNK 20000
#define MAX_PATTERNS 64

typedef struct sq_bus {
    qn_bus base;
    char *path;
    sqlite3 *db; /* the publishing connection, under mu */
    sqlite3_stmt *ins;
    pthread_mutex_t mu;
    /* wake-up hint: publishes in this process bump gen */
    pthread_mutex_t wmu;
    pthread_cond_t wcond;
    uint64_t gen;
    int64_t last_sweep;
} sq_bus;

typedef struct sq_consumer {
    qn_consumer base;
    sqlite3 *db;
    sqlite3_stmt *probe, *claim, *body, *group, *scan, *deliver, *cursor, *ack, *retry, *dead,
        *undeliver;
    int64_t last_tick;
} sq_consumer;

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS bus_messages ("
    " seq INTEGER PRIMARY KEY, id TEXT NOT NULL, topic TEXT NOT NULL, body TEXT NOT NULL,"
    " published_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS bus_groups ("
    " name TEXT PRIMARY KEY, patterns TEXT NOT NULL, cursor INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS bus_deliveries ("
    " grp TEXT NOT NULL, seq INTEGER NOT NULL, attempt INTEGER NOT NULL,"
    " visible_at INTEGER NOT NULL, lease INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (grp, seq)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS bus_deliveries_ready ON bus_deliveries (grp, visible_at);";

static int64_t wall_ms(void)
{
    return qn_now_ms();
}

static int sq_fail(sqlite3 *db, qn_err *err, const char *what)
{
    int ec = sqlite3_errcode(db);
    int code = (ec == SQLITE_BUSY || ec == SQLITE_LOCKED)  ? QN_UNAVAILABLE
               : (ec == SQLITE_NOMEM)                      ? QN_RESOURCE_EXHAUSTED
               : (ec == SQLITE_FULL || ec == SQLITE_IOERR) ? QN_UNAVAILABLE
                                                           : QN_INTERNAL;
    return qn_err_set(err, code, "bus sqlite: %s: %s", what, sqlite3_errmsg(db));
}

static int exec(sqlite3 *db, const char *sql, qn_err *err)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return sq_fail(db, err, sql);
    return 0;
}

static sqlite3 *open_conn(const char *path, int full_sync, qn_err *err)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        qn_err_set(err, QN_UNAVAILABLE, "bus sqlite: cannot open %s: %s", path,
                   db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, BUSY_MS);
    if (exec(db, "PRAGMA journal_mode=WAL", err) < 0 ||
        exec(db, full_sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL", err) < 0 ||
        exec(db, "BEGIN IMMEDIATE", err) < 0)
        goto fail;
    if (exec(db, schema, err) < 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        goto fail;
    }
    if (exec(db, "COMMIT", err) < 0)
        goto fail;
    return db;
fail:
    qn_err_wrap(err, "bus %s", path);
    sqlite3_close(db);
    return NULL;
}

static int prep(sqlite3 *db, const char *sql, sqlite3_stmt **st, qn_err *err)
{
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
        return sq_fail(db, err, sql);
    return 0;
}

static void wake(sq_bus *b)
{
    pthread_mutex_lock(&b->wmu);
    b->gen++;
    pthread_cond_broadcast(&b->wcond);
    pthread_mutex_unlock(&b->wmu);
}

/* Deletes acked messages older than the retention, in chunks. Never the
 * newest row (seq must not be reused: INTEGER PRIMARY KEY picks MAX+1), never
 * one a group has not scanned yet or still owes. */
static void sweep(sqlite3 *db, const qn_bus_opts *o)
{
    static const char sql[] =
        "DELETE FROM bus_messages WHERE seq IN (SELECT seq FROM bus_messages"
        " WHERE published_at < ?1"
        "   AND seq < (SELECT MAX(seq) FROM bus_messages)"
        "   AND seq <= IFNULL((SELECT MIN(cursor) FROM bus_groups), 9223372036854775807)"
        "   AND seq NOT IN (SELECT seq FROM bus_deliveries)"
        " ORDER BY seq LIMIT ?2)";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_int64(st, 1, wall_ms() - o->retention_ms);
    sqlite3_bind_int(st, 2, SWEEP_CHUNK);
    sqlite3_step(st);
    sqlite3_finalize(st);
}

static int64_t sweep_every(const qn_bus_opts *o)
{
    int64_t e = o->retention_ms / 10;
    return e < 1000 ? 1000 : e > 60000 ? 60000 : e;
}

/* Creates the directory that will hold the database file path (the default
 * ./.quern/bus.db on a fresh checkout), so a service started alone works.
 * A path without a directory part needs nothing. */
static int make_parent_dir(const char *path, qn_err *err)
{
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path)
        return 0;
    size_t n = (size_t)(slash - path);
    char *dir = strndup(path, n);
    if (!dir)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "bus: out of memory");
    int rc = qn_mkdir_p(dir, err);
    free(dir);
    if (rc < 0)
        qn_err_wrap(err, "bus sqlite: the directory of %s", path);
    return rc;
}

/* --- publishing --------------------------------------------------------- */

static int sq_publish(qn_bus *bus, const char *const *topics, const char *const *ids,
                      const char *const *bodies, const size_t *lens, size_t n, qn_err *err)
{
    sq_bus *b = (sq_bus *)bus;
    int rc = 0;
    pthread_mutex_lock(&b->mu);
    if (exec(b->db, "BEGIN IMMEDIATE", err) < 0) {
        rc = err ? err->code : QN_UNAVAILABLE;
        goto out;
    }
    int64_t now = wall_ms();
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_text(b->ins, 1, ids[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(b->ins, 2, topics[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(b->ins, 3, bodies[i], (int)lens[i], SQLITE_STATIC);
        sqlite3_bind_int64(b->ins, 4, now);
        int src = sqlite3_step(b->ins);
        sqlite3_reset(b->ins);
        if (src != SQLITE_DONE) {
            rc = sq_fail(b->db, err, "insert");
            sqlite3_exec(b->db, "ROLLBACK", NULL, NULL, NULL);
            goto out;
        }
    }
    sqlite3_clear_bindings(b->ins);
    if (exec(b->db, "COMMIT", err) < 0) {
        rc = err ? err->code : QN_UNAVAILABLE;
        sqlite3_exec(b->db, "ROLLBACK", NULL, NULL, NULL);
        goto out;
    }
    if (now - b->last_sweep > sweep_every(&bus->o)) {
        b->last_sweep = now;
        sweep(b->db, &bus->o);
    }
out:
    pthread_mutex_unlock(&b->mu);
    if (rc == 0)
        wake(b);
    return rc;
}

/* --- consuming ---------------------------------------------------------- */

static void sq_consumer_close(qn_consumer *qc)
{
    sq_consumer *c = (sq_consumer *)qc;
    sqlite3_stmt *all[] = {c->probe, c->claim, c->body, c->group, c->scan, c->deliver,
                           c->cursor, c->ack, c->retry, c->dead, c->undeliver};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        sqlite3_finalize(all[i]);
    sqlite3_close(c->db);
    free(c);
}

static qn_consumer *sq_subscribe(qn_bus *bus, const char *group, const char *const *patterns,
                                 qn_err *err)
{
    sq_bus *b = (sq_bus *)bus;
    sq_consumer *c = calloc(1, sizeof *c);
    sqlite3_stmt *st = NULL;
    char *merged = NULL;
    if (!c)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "bus: out of memory"), NULL;
    if (qn__consumer_init(&c->base, bus, group, patterns, err) < 0)
        goto fail;
    if (!(c->db = open_conn(b->path, 0, err)))
        goto fail;
    if (prep(c->db,
             "SELECT EXISTS (SELECT 1 FROM bus_deliveries WHERE grp = ?1 AND visible_at <= ?2)"
             " OR IFNULL((SELECT MAX(seq) FROM bus_messages), 0) >"
             " (SELECT cursor FROM bus_groups WHERE name = ?1)",
             &c->probe, err) < 0 ||
        prep(c->db,
             "UPDATE bus_deliveries SET attempt = attempt + 1, visible_at = ?3, lease = ?4"
             " WHERE grp = ?1 AND seq = (SELECT seq FROM bus_deliveries WHERE grp = ?1 AND"
             " visible_at <= ?2 ORDER BY visible_at, seq LIMIT 1) RETURNING seq, attempt",
             &c->claim, err) < 0 ||
        prep(c->db, "SELECT topic, body FROM bus_messages WHERE seq = ?1", &c->body, err) < 0 ||
        prep(c->db, "SELECT patterns, cursor FROM bus_groups WHERE name = ?1", &c->group, err) < 0 ||
        prep(c->db, "SELECT seq, topic FROM bus_messages WHERE seq > ?1 ORDER BY seq LIMIT ?2",
             &c->scan, err) < 0 ||
        prep(c->db,
             "INSERT OR IGNORE INTO bus_deliveries (grp, seq, attempt, visible_at, lease)"
             " VALUES (?1, ?2, 0, 0, 0)",
             &c->deliver, err) < 0 ||
        prep(c->db, "UPDATE bus_groups SET cursor = ?2 WHERE name = ?1", &c->cursor, err) < 0 ||
        prep(c->db, "DELETE FROM bus_deliveries WHERE grp = ?1 AND seq = ?2 AND lease = ?3",
             &c->ack, err) < 0 ||
        prep(c->db,
             "UPDATE bus_deliveries SET visible_at = ?4, lease = 0"
             " WHERE grp = ?1 AND seq = ?2 AND lease = ?3",
             &c->retry, err) < 0 ||
        prep(c->db,
             "INSERT INTO bus_messages (id, topic, body, published_at)"
             " SELECT id, topic || '.dead', body, ?2 FROM bus_messages WHERE seq = ?1",
             &c->dead, err) < 0 ||
        prep(c->db, "DELETE FROM bus_deliveries WHERE grp = ?1 AND seq = ?2 AND lease = ?3",
             &c->undeliver, err) < 0)
        goto fail;

    /* Create the group, or add the new patterns to it. */
    if (exec(c->db, "BEGIN IMMEDIATE", err) < 0)
        goto fail;
    if (prep(c->db, "SELECT patterns FROM bus_groups WHERE name = ?1", &st, err) < 0)
        goto rollback;
    sqlite3_bind_text(st, 1, group, -1, SQLITE_STATIC);
    int src = sqlite3_step(st);
    size_t cap = 2;
    if (src == SQLITE_ROW)
        cap += (size_t)sqlite3_column_bytes(st, 0);
    for (size_t i = 0; patterns[i]; i++)
        cap += strlen(patterns[i]) + 1;
    if (!(merged = malloc(cap))) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "bus: out of memory");
        goto rollback;
    }
    merged[0] = '\0';
    int exists = src == SQLITE_ROW;
    if (exists)
        strcpy(merged, (const char *)sqlite3_column_text(st, 0));
    else if (src != SQLITE_DONE) {
        sq_fail(c->db, err, "read group");
        goto rollback;
    }
    sqlite3_finalize(st);
    st = NULL;
    for (size_t i = 0; patterns[i]; i++) {
        /* patterns are stored one per line */
        size_t pl = strlen(patterns[i]);
        int have = 0;
        for (const char *p = merged; *p;) {
            const char *e = strchr(p, '\n');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            if (l == pl && memcmp(p, patterns[i], pl) == 0)
                have = 1;
            p += l + (e ? 1 : 0);
        }
        if (!have) {
            if (merged[0])
                strcat(merged, "\n");
            strcat(merged, patterns[i]);
        }
    }
    if (prep(c->db,
             exists ? "UPDATE bus_groups SET patterns = ?2 WHERE name = ?1"
                    : "INSERT INTO bus_groups (name, patterns, cursor, created_at) VALUES"
                      " (?1, ?2, IFNULL((SELECT MAX(seq) FROM bus_messages), 0), ?3)",
             &st, err) < 0)
        goto rollback;
    sqlite3_bind_text(st, 1, group, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, merged, -1, SQLITE_STATIC);
    if (!exists)
        sqlite3_bind_int64(st, 3, wall_ms());
    if (sqlite3_step(st) != SQLITE_DONE) {
        sq_fail(c->db, err, "write group");
        goto rollback;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (exec(c->db, "COMMIT", err) < 0)
        goto rollback;
    free(merged);
    return &c->base;
rollback:
    sqlite3_finalize(st);
    st = NULL;
    sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
fail:
    sqlite3_finalize(st);
    free(merged);
    qn_err_wrap(err, "subscribe %s", group);
    sq_consumer_close(&c->base);
    return NULL;
}

/* Advances the group's cursor over at most a few chunks of new messages,
 * creating a delivery for each match. Inside the claim transaction. Returns
 * the number of deliveries created, or a negative code. */
static int scan_new(sq_consumer *c, qn_err *err)
{
    const char *g = c->base.group;
    sqlite3_bind_text(c->group, 1, g, -1, SQLITE_STATIC);
    if (sqlite3_step(c->group) != SQLITE_ROW) {
        sqlite3_reset(c->group);
        return qn_err_set(err, QN_NOT_FOUND, "bus: group %s vanished", g);
    }
    char pats[4096];
    snprintf(pats, sizeof pats, "%s", (const char *)sqlite3_column_text(c->group, 0));
    int64_t cursor = sqlite3_column_int64(c->group, 1);
    sqlite3_reset(c->group);
    const char *pv[MAX_PATTERNS];
    size_t np = 0;
    for (char *save = NULL, *p = strtok_r(pats, "\n", &save); p && np < MAX_PATTERNS;
         p = strtok_r(NULL, "\n", &save))
        pv[np++] = p;

    int made = 0;
    for (int chunk = 0; chunk < 8 && made == 0; chunk++) {
        int rows = 0;
        int64_t last = cursor;
        sqlite3_bind_int64(c->scan, 1, cursor);
        sqlite3_bind_int(c->scan, 2, SCAN_CHUNK);
        int src;
        while ((src = sqlite3_step(c->scan)) == SQLITE_ROW) {
            rows++;
            last = sqlite3_column_int64(c->scan, 0);
            const char *topic = (const char *)sqlite3_column_text(c->scan, 1);
            for (size_t i = 0; i < np; i++) {
                if (!qn_topic_match(pv[i], topic))
                    continue;
                sqlite3_bind_text(c->deliver, 1, g, -1, SQLITE_STATIC);
                sqlite3_bind_int64(c->deliver, 2, last);
                int drc = sqlite3_step(c->deliver);
                sqlite3_reset(c->deliver);
                if (drc != SQLITE_DONE) {
                    sqlite3_reset(c->scan);
                    return sq_fail(c->db, err, "insert delivery");
                }
                made++;
                break;
            }
        }
        sqlite3_reset(c->scan);
        if (src != SQLITE_DONE)
            return sq_fail(c->db, err, "scan");
        if (last != cursor) {
            sqlite3_bind_text(c->cursor, 1, g, -1, SQLITE_STATIC);
            sqlite3_bind_int64(c->cursor, 2, last);
            int urc = sqlite3_step(c->cursor);
            sqlite3_reset(c->cursor);
            if (urc != SQLITE_DONE)
                return sq_fail(c->db, err, "advance cursor");
            cursor = last;
        }
        if (rows < SCAN_CHUNK)
            break;
    }
    return made;
}

/* One claim attempt: 1 with *out, 0 when nothing is ready. */
static int try_claim(sq_consumer *c, qn_msg **out, qn_err *err)
{
    const qn_bus_opts *o = &c->base.bus->o;
    const char *g = c->base.group;
    int64_t now = wall_ms();

    /* a read first: idle consumers must not take the write lock */
    sqlite3_bind_text(c->probe, 1, g, -1, SQLITE_STATIC);
    sqlite3_bind_int64(c->probe, 2, now);
    int src = sqlite3_step(c->probe);
    int any = src == SQLITE_ROW && sqlite3_column_int(c->probe, 0);
    sqlite3_reset(c->probe);
    if (src != SQLITE_ROW)
        return sq_fail(c->db, err, "probe");
    if (!any)
        return 0;

    if (exec(c->db, "BEGIN IMMEDIATE", err) < 0)
        return err ? err->code : QN_UNAVAILABLE;
    int rc = 0;
    qn_msg *m = NULL;
    for (int round = 0; round < 2; round++) {
        uint64_t lease;
        qn_random_bytes(&lease, sizeof lease);
        lease = (lease >> 1) | 1; /* positive, never the "no lease" 0 */
        sqlite3_bind_text(c->claim, 1, g, -1, SQLITE_STATIC);
        sqlite3_bind_int64(c->claim, 2, now);
        sqlite3_bind_int64(c->claim, 3, now + o->visibility_ms);
        sqlite3_bind_int64(c->claim, 4, (int64_t)lease);
        src = sqlite3_step(c->claim);
        if (src == SQLITE_ROW) {
            int64_t seq = sqlite3_column_int64(c->claim, 0);
            int attempt = sqlite3_column_int(c->claim, 1);
            sqlite3_step(c->claim); /* finish the statement (RETURNING) */
            sqlite3_reset(c->claim);
            sqlite3_bind_int64(c->body, 1, seq);
            if (sqlite3_step(c->body) != SQLITE_ROW) {
                sqlite3_reset(c->body);
                rc = qn_err_set(err, QN_DATA_LOSS, "bus: message %lld of group %s is missing",
                                (long long)seq, g);
                goto rollback;
            }
            m = calloc(1, sizeof *m);
            const char *topic = (const char *)sqlite3_column_text(c->body, 0);
            int blen = sqlite3_column_bytes(c->body, 1);
            const void *body = sqlite3_column_blob(c->body, 1);
            if (m) {
                m->qn__topic = strdup(topic);
                m->qn__body = malloc((size_t)blen + 1);
            }
            if (!m || !m->qn__topic || !m->qn__body) {
                sqlite3_reset(c->body);
                qn_msg_free(m);
                m = NULL;
                rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "bus: out of memory");
                goto rollback;
            }
            memcpy(m->qn__body, body, (size_t)blen);
            m->qn__body[blen] = '\0';
            m->qn__len = (size_t)blen;
            sqlite3_reset(c->body);
            m->qn__seq = seq;
            m->qn__tag = lease;
            m->attempt = attempt;
            break;
        }
        sqlite3_reset(c->claim);
        if (src != SQLITE_DONE) {
            rc = sq_fail(c->db, err, "claim");
            goto rollback;
        }
        if (round == 1)
            break;
        int made = scan_new(c, err);
        if (made < 0) {
            rc = made;
            goto rollback;
        }
        if (made == 0)
            break;
    }
    if (exec(c->db, "COMMIT", err) < 0) {
        rc = err ? err->code : QN_UNAVAILABLE;
        goto rollback;
    }
    *out = m;
    return m ? 1 : 0;
rollback:
    sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    qn_msg_free(m);
    return rc;
}

/* Every few seconds: the retention sweep and the lag gauge. */
static void tick(sq_consumer *c)
{
    qn_bus *bus = c->base.bus;
    int64_t now = wall_ms();
    if (now - c->last_tick < 1000)
        return;
    c->last_tick = now;
    if (bus->lag) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(c->db,
                               "SELECT (SELECT COUNT(*) FROM bus_deliveries WHERE grp = ?1) +"
                               " IFNULL((SELECT MAX(seq) FROM bus_messages), 0) -"
                               " (SELECT cursor FROM bus_groups WHERE name = ?1)",
                               -1, &st, NULL) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, c->base.group, -1, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW) {
                const char *vals[] = {c->base.patterns, c->base.group};
                qn_gauge_set(bus->lag, vals, (double)sqlite3_column_int64(st, 0));
            }
            sqlite3_finalize(st);
        }
    }
    sq_bus *b = (sq_bus *)bus;
    pthread_mutex_lock(&b->mu);
    int due = now - b->last_sweep > sweep_every(&bus->o);
    if (due)
        b->last_sweep = now;
    pthread_mutex_unlock(&b->mu);
    if (due)
        sweep(c->db, &bus->o);
}

static int sq_receive(qn_consumer *qc, int timeout_ms, qn_msg **out, qn_err *err)
{
    sq_consumer *c = (sq_consumer *)qc;
    sq_bus *b = (sq_bus *)qc->bus;
    int64_t deadline = qn__mono_ms() + timeout_ms;
    int64_t backoff = 1;
    for (;;) {
        tick(c);
        pthread_mutex_lock(&b->wmu);
        uint64_t seen = b->gen;
        pthread_mutex_unlock(&b->wmu);
        int rc = try_claim(c, out, err);
        if (rc == QN_UNAVAILABLE)
            rc = 0; /* busy beyond the timeout: try again later, like a timeout */
        if (rc != 0)
            return rc;
        int64_t left = deadline - qn__mono_ms();
        if (left <= 0)
            return 0;
        int64_t wait = backoff < left ? backoff : left;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (wait % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&b->wmu);
        while (b->gen == seen) {
            if (pthread_cond_timedwait(&b->wcond, &b->wmu, &ts) != 0)
                break;
        }
        int woken = b->gen != seen;
        pthread_mutex_unlock(&b->wmu);
        backoff = woken ? 1 : (backoff * 2 > 50 ? 50 : backoff * 2);
    }
}

static int run_lease_stmt(sq_consumer *c, sqlite3_stmt *st, qn_msg *m, int64_t extra, int use_extra,
                          qn_err *err, const char *what)
{
    sqlite3_bind_text(st, 1, c->base.group, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, m->qn__seq);
    sqlite3_bind_int64(st, 3, (int64_t)m->qn__tag);
    if (use_extra)
        sqlite3_bind_int64(st, 4, extra);
    int src = sqlite3_step(st);
    sqlite3_reset(st);
    if (src != SQLITE_DONE)
        return sq_fail(c->db, err, what);
    if (sqlite3_changes(c->db) == 0)
        return qn_err_set(err, QN_ABORTED,
                          "bus: the lease on message %s of group %s expired; it was redelivered",
                          m->id ? m->id : "?", c->base.group);
    return 0;
}

static int sq_ack(qn_consumer *qc, qn_msg *m, qn_err *err)
{
    return run_lease_stmt((sq_consumer *)qc, ((sq_consumer *)qc)->ack, m, 0, 0, err, "ack");
}

static int sq_nack(qn_consumer *qc, qn_msg *m, int dead, qn_err *err)
{
    sq_consumer *c = (sq_consumer *)qc;
    if (!dead) {
        int64_t at = wall_ms() + qn__bus_retry_delay(&qc->bus->o, m->attempt);
        return run_lease_stmt(c, c->retry, m, at, 1, err, "nack");
    }
    if (exec(c->db, "BEGIN IMMEDIATE", err) < 0)
        return err ? err->code : QN_UNAVAILABLE;
    int rc = run_lease_stmt(c, c->undeliver, m, 0, 0, err, "dead-letter");
    if (rc == 0) {
        sqlite3_bind_int64(c->dead, 1, m->qn__seq);
        sqlite3_bind_int64(c->dead, 2, wall_ms());
        int src = sqlite3_step(c->dead);
        sqlite3_reset(c->dead);
        if (src != SQLITE_DONE)
            rc = sq_fail(c->db, err, "insert dead letter");
    }
    if (rc == 0 && exec(c->db, "COMMIT", err) < 0)
        rc = err ? err->code : QN_UNAVAILABLE;
    if (rc < 0)
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    else
        wake((sq_bus *)qc->bus);
    return rc;
}

static void sq_close(qn_bus *bus)
{
    sq_bus *b = (sq_bus *)bus;
    sqlite3_finalize(b->ins);
    sqlite3_close(b->db);
    pthread_mutex_destroy(&b->mu);
    pthread_mutex_destroy(&b->wmu);
    pthread_cond_destroy(&b->wcond);
    free(b->path);
    free(b);
}

static const qn__bus_ops sqlite_ops = {
    .name = "sqlite",
    .close = sq_close,
    .publish = sq_publish,
    .subscribe = sq_subscribe,
    .receive = sq_receive,
    .ack = sq_ack,
    .nack = sq_nack,
    .consumer_close = sq_consumer_close,
};

qn_bus *qn__bus_sqlite_open(const char *rest, const qn_bus_opts *o, qn_err *err)
{
    if (!rest[0])
        return qn_err_set(err, QN_INVALID_ARGUMENT, "bus: sqlite:// needs a path"), NULL;
    sq_bus *b = calloc(1, sizeof *b);
    if (!b || !(b->path = strdup(rest))) {
        free(b);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "bus: out of memory"), NULL;
    }
    b->base.ops = &sqlite_ops;
    pthread_mutex_init(&b->mu, NULL);
    pthread_mutex_init(&b->wmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->wcond, &ca);
    pthread_condattr_destroy(&ca);
    b->last_sweep = wall_ms();
    if (make_parent_dir(b->path, err) < 0 || !(b->db = open_conn(b->path, 1, err)) ||
        prep(b->db,
             "INSERT INTO bus_messages (id, topic, body, published_at) VALUES (?1, ?2, ?3, ?4)",
             &b->ins, err) < 0) {
        sq_close(&b->base);
        return NULL;
    }
    (void)o;
    return &b->base;
}
