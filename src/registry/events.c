/*
 * events.c - the registry's outbox of CloudEvents.
 *
 * Events are appended to the outbox in the same transaction as the change
 * they describe, so a promotion and its quern.model.promoted event commit
 * together or not at all; core/outbox publishes them to the bus in order.
 * GET /v1/events lets operators and tests read the outbox (published rows are
 * kept for a day).
 */

#include "core/outbox.h"
#include "registry/registry.h"

int reg_events_list(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    return qn_outbox_list(r->db, req, res);
}
