/*
 * backend.h - what a bus backend provides to the front (bus.c), and the
 * helpers the front shares with the backends. Internal to src/core/bus/.
 *
 * The front parses the URL, fills the defaults, validates envelopes and
 * patterns, owns the metric families and frees messages; a backend moves
 * bytes. Each backend embeds struct qn_bus / struct qn_consumer as the first
 * member of its own handle.
 */
#ifndef QN_BUS_BACKEND_H
#define QN_BUS_BACKEND_H

#include "core/bus/bus.h"

typedef struct qn__bus_ops {
    const char *name;
    void (*close)(qn_bus *bus);
    /* topics[i] and bodies[i] (lens[i] bytes, serialized envelopes) */
    int (*publish)(qn_bus *bus, const char *const *topics, const char *const *ids,
                   const char *const *bodies, const size_t *lens, size_t n, qn_err *err);
    qn_consumer *(*subscribe)(qn_bus *bus, const char *group, const char *const *patterns,
                              qn_err *err);
    /* 1 with *out (qn__topic, qn__body/len, attempt and the backend fields
     * filled); 0 on timeout. */
    int (*receive)(qn_consumer *c, int timeout_ms, qn_msg **out, qn_err *err);
    int (*ack)(qn_consumer *c, qn_msg *m, qn_err *err);
    /* dead != 0: move to "<topic>.dead" now (attempts exhausted or invalid) */
    int (*nack)(qn_consumer *c, qn_msg *m, int dead, qn_err *err);
    void (*consumer_close)(qn_consumer *c);
} qn__bus_ops;

struct qn_bus {
    const qn__bus_ops *ops;
    qn_bus_opts o;          /* defaults filled */
    qn_metric *published;   /* {topic} */
    qn_metric *consumed;    /* {topic,group} */
    qn_metric *redelivered; /* {topic,group} */
    qn_metric *dead;        /* {topic,group} */
    qn_metric *lag;         /* {topic,group}: topic is the group's patterns */
};

struct qn_consumer {
    qn_bus *bus;
    char group[65];
    char patterns[1024]; /* comma-joined, the lag gauge's topic label */
};

/* Backends: open with url after "scheme://" */
qn_bus *qn__bus_sqlite_open(const char *rest, const qn_bus_opts *o, qn_err *err);
qn_bus *qn__bus_amqp_open(const char *url, const qn_bus_opts *o, qn_err *err);

/* The redelivery delay after attempt n (1-based): base * 2^(n-1), capped. */
int64_t qn__bus_retry_delay(const qn_bus_opts *o, int attempt);
/* Monotonic milliseconds. */
int64_t qn__mono_ms(void);
/* Full-jitter backoff: a random delay in [0, min(cap, base * 2^n)] ms. */
int64_t qn__backoff_jitter(int64_t base, int64_t cap, int n);
/* Fills the consumer's common part; 0 or QN_INVALID_ARGUMENT. */
int qn__consumer_init(qn_consumer *c, qn_bus *bus, const char *group,
                      const char *const *patterns, qn_err *err);
/* Metric helpers (no-ops without a registry). */
void qn__bus_count(qn_metric *m, const char *topic, const char *group, double v);

#endif
