/*
 * triggers.c - what queues runs besides POST: new rows and schedules.
 *
 * "rows" triggers: a subscriber (consumer group "prep") on
 * quern.events.ingested adds each batch's row count to every pipeline that
 * reads that dataset, and queues a run when the count reaches the pipeline's
 * threshold (then starts counting again). The count, the queued run and the
 * event id (the inbox) change in one transaction, so a redelivered event is
 * never counted twice.
 *
 * "schedule" triggers: a thread wakes twice a second and queues a run of each
 * pipeline whose next_run_at has passed, moving next_run_at one interval on.
 * Runs queued by a trigger coalesce: while one is waiting, no second is added.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"
#include "core/log.h"
#include "core/validate.h"
#include "prep/prep.h"

#define MAX_TRIGGERED 256

/* The rows-trigger bookkeeping of one quern.events.ingested event. */
typedef struct ingested_tx {
    const qn_msg *msg;
    const char *dataset;
    int64_t rows;
    size_t queued; /* runs queued (out) */
} ingested_tx;

/* Adds the event's rows to every rows-triggered pipeline reading its dataset,
 * queueing a run for each one that reached its threshold. */
static int ingested_body(qn_conn *c, void *arg, qn_err *err)
{
    ingested_tx *x = arg;
    char names[MAX_TRIGGERED][QN_NAME_MAX + 1];
    int64_t every[MAX_TRIGGERED], pending[MAX_TRIGGERED];
    size_t k = 0;
    int rc;
    qn_stmt *st = qn_prepare(c, "SELECT name, trigger_every, pending_rows FROM pipelines "
                                "WHERE source = ? AND trigger_kind = 'rows' ORDER BY name",
                             err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, x->dataset, -1);
    while ((rc = qn_step(st, err)) == 1 && k < MAX_TRIGGERED) {
        snprintf(names[k], sizeof names[k], "%s", qn_col_text(st, 0));
        every[k] = qn_col_int64(st, 1);
        pending[k] = qn_col_int64(st, 2);
        k++;
    }
    if (rc == 1)
        while ((rc = qn_step(st, err)) == 1)
            ;
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < k; i++) {
        int64_t total = pending[i] + x->rows;
        char id[PREP_RUN_ID_HEX + 1] = "";
        if (total >= every[i]) {
            if ((rc = prep_enqueue(c, names[i], "rows", 1, qn_subscriber_trace(x->msg), id, err)) < 0)
                return rc;
            total = 0;
            x->queued += id[0] != '\0';
            qn_log_info(NULL, "rows threshold reached", "{s:s, s:s, s:I, s:s}", "pipeline", names[i], "dataset",
                        x->dataset, "every", (json_int_t)every[i], "run_id", id[0] ? id : "(one already queued)");
        }
        if (!(st = qn_prepare(c, "UPDATE pipelines SET pending_rows = ? WHERE name = ?", err)))
            return err->code;
        qn_bind_int64(st, 1, total);
        qn_bind_text(st, 2, names[i], -1);
        if ((rc = qn_step(st, err)) < 0)
            return rc;
    }
    return 0;
}

int prep_on_ingested(const qn_msg *msg, void *ud, qn_err *err)
{
    prep *p = ud;
    json_t *data = json_object_get(msg->event, "data");
    const char *dataset = json_string_value(json_object_get(data, "dataset"));
    json_t *rows = json_object_get(data, "rows");
    if (!dataset || !json_is_integer(rows) || json_integer_value(rows) < 0) {
        /* Redelivering would not make it better: acknowledge and say so. */
        qn_log_warn(NULL, "quern.events.ingested without dataset and rows ignored", "{s:s}", "id", msg->id);
        return 0;
    }
    ingested_tx x = {.msg = msg, .dataset = dataset, .rows = json_integer_value(rows)};
    int rc = qn_subscriber_tx(p->db, msg, ingested_body, &x, err);
    if (rc == 0 && x.queued)
        prep_kick(p);
    return rc < 0 ? rc : 0; /* 1: counted already */
}

/* Queues the runs of schedules that are due. */
static int schedule_tick(prep *p, qn_err *err)
{
    char names[MAX_TRIGGERED][QN_NAME_MAX + 1];
    int64_t interval[MAX_TRIGGERED];
    size_t k = 0, queued = 0;
    int64_t now = qn_now_ms();
    int rc;
    qn_conn *c = qn_store_acquire(p->db, err);
    if (!c)
        return err->code;
    if ((rc = qn_tx_begin(c, QN_TX_WRITE, err)) < 0)
        goto out;
    qn_stmt *st = qn_prepare(c, "SELECT name, interval_ms FROM pipelines WHERE trigger_kind = 'schedule' AND "
                                "next_run_at <= ? ORDER BY next_run_at LIMIT 256",
                             err);
    if (!st) {
        rc = err->code;
        goto out;
    }
    qn_bind_int64(st, 1, now);
    while ((rc = qn_step(st, err)) == 1 && k < MAX_TRIGGERED) {
        snprintf(names[k], sizeof names[k], "%s", qn_col_text(st, 0));
        interval[k] = qn_col_int64(st, 1);
        k++;
    }
    if (rc == 1)
        while ((rc = qn_step(st, err)) == 1)
            ;
    if (rc < 0)
        goto out;
    for (size_t i = 0; i < k; i++) {
        char id[PREP_RUN_ID_HEX + 1];
        if ((rc = prep_enqueue(c, names[i], "schedule", 1, NULL, id, err)) < 0)
            goto out;
        queued += id[0] != '\0';
        if (!(st = qn_prepare(c, "UPDATE pipelines SET next_run_at = ? WHERE name = ?", err))) {
            rc = err->code;
            goto out;
        }
        qn_bind_int64(st, 1, now + interval[i]);
        qn_bind_text(st, 2, names[i], -1);
        if ((rc = qn_step(st, err)) < 0)
            goto out;
    }
    rc = qn_tx_commit(c, err);
    if (rc == 0 && queued)
        prep_kick(p);
out:
    qn_store_release(p->db, c);
    return rc;
}

static void *scheduler(void *arg)
{
    prep *p = arg;
    while (!atomic_load(&p->stopping)) {
        qn_err err;
        if (schedule_tick(p, &err) < 0)
            qn_log_warn(NULL, "scheduler tick failed", "{s:s}", "detail", err.msg);
        for (int i = 0; i < 5 && !atomic_load(&p->stopping); i++) {
            struct timespec nap = {0, 100 * 1000000};
            nanosleep(&nap, NULL);
        }
    }
    return NULL;
}

int prep_triggers_start(prep *p, qn_err *err)
{
    static const char *const topics[] = {"quern.events.ingested", NULL};
    p->sub = qn_subscriber_start(p->bus, "prep", topics, p->db, prep_on_ingested, p, err);
    if (!p->sub)
        return err->code;
    if (pthread_create(&p->scheduler, NULL, scheduler, p) != 0)
        return qn_err_set(err, QN_INTERNAL, "cannot start the scheduler thread");
    p->scheduler_started = 1;
    return 0;
}

void prep_triggers_stop(prep *p)
{
    atomic_store(&p->stopping, 1);
    qn_subscriber_stop(p->sub);
    p->sub = NULL;
    if (p->scheduler_started)
        pthread_join(p->scheduler, NULL);
    p->scheduler_started = 0;
}
