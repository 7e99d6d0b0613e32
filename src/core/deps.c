/* deps.c - opens and closes a service's store, bus and outbox (see deps.h). */
#include "core/deps.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

int qn_deps_open(const qn_deps_opts *o, qn_store **db, qn_bus **bus, qn_outbox **outbox,
                 qn_err *err)
{
    qn_store *s = NULL;
    qn_bus *b = NULL;
    qn_outbox *ob = NULL;
    char *url = NULL;
    int rc = 0;
    if (db && (o->db_url || o->db_file)) {
        if (o->db_url)
            url = strdup(o->db_url);
        else if (asprintf(&url, "sqlite://%s/%s", o->data ? o->data : ".", o->db_file) < 0)
            url = NULL;
        if (!url) {
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        if (!(s = qn_store_open(url, o->migrations, o->nmigrations, err))) {
            rc = err->code;
            goto out;
        }
    }
    qn_bus_opts bo = {.metrics = o->metrics, .visibility_ms = o->visibility_ms};
    if (!(b = qn_bus_open(o->bus_url, &bo, err))) {
        rc = err->code;
        goto out;
    }
    if (outbox && s && o->source && !(ob = qn_outbox_start(s, b, o->source, o->metrics, err))) {
        rc = err->code;
        goto out;
    }
out:
    free(url);
    if (rc < 0) {
        qn_deps_close(s, b, ob);
        s = NULL;
        b = NULL;
        ob = NULL;
    }
    if (db)
        *db = s;
    *bus = b;
    if (outbox)
        *outbox = ob;
    return rc < 0 ? rc : 0;
}

void qn_deps_flush(qn_outbox *outbox, long long timeout_ms)
{
    if (outbox && qn_outbox_flush(outbox, timeout_ms) < 0)
        qn_log_warn(NULL, "events left in the outbox for the next start", "{s:I}", "pending",
                    (json_int_t)qn_outbox_pending(outbox));
}

void qn_deps_close(qn_store *db, qn_bus *bus, qn_outbox *outbox)
{
    qn_outbox_stop(outbox);
    qn_bus_close(bus);
    qn_store_close(db);
}
