/* bus_amqp.c - placeholder until the RabbitMQ backend lands. */
#include "core/bus/backend.h"

qn_bus *qn__bus_amqp_open(const char *url, const qn_bus_opts *o, qn_err *err)
{
    (void)o;
    return qn_err_set(err, QN_UNIMPLEMENTED, "bus: %s: amqp not built yet", url), NULL;
}
