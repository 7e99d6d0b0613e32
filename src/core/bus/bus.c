/*
 * bus.c - the front of the bus: URL dispatch, defaults, CloudEvent envelopes
 * (build, validate, parse), topic matching, metrics, and the rules both
 * backends share (when to redeliver, when to dead-letter). The backends
 * (bus_sqlite.c, bus_amqp.c) only store and move serialized envelopes.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/bus/backend.h"
#include "core/json.h"
#include "core/otel.h"
#include "core/trace.h"

#define DEFAULT_MAX_BYTES ((size_t)1 << 20)

int64_t qn__mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t qn__bus_retry_delay(const qn_bus_opts *o, int attempt)
{
    int64_t d = o->retry_base_ms;
    for (int i = 1; i < attempt && d < o->retry_max_ms; i++)
        d *= 2;
    return d < o->retry_max_ms ? d : o->retry_max_ms;
}

int64_t qn__backoff_jitter(int64_t base, int64_t cap, int n)
{
    int64_t d = base;
    for (int i = 0; i < n && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    uint64_t r;
    qn_random_bytes(&r, sizeof r);
    return d > 0 ? (int64_t)(r % (uint64_t)(d + 1)) : 0;
}

void qn__bus_count(qn_metric *m, const char *topic, const char *group, double v)
{
    if (!m)
        return;
    const char *vals[] = {topic, group};
    qn_counter_add(m, vals, v);
}

/* --- topics ------------------------------------------------------------- */

static int word_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-';
}

/* Words of word_char separated by single dots; wild allows '*' and '#' words. */
static int topic_syntax_ok(const char *s, int wild)
{
    size_t n = strlen(s);
    if (n == 0 || n > 255)
        return 0;
    const char *w = s;
    for (;;) {
        const char *e = strchr(w, '.');
        size_t len = e ? (size_t)(e - w) : strlen(w);
        if (len == 0)
            return 0;
        if (wild && len == 1 && (*w == '*' || *w == '#')) {
            /* ok */
        } else {
            for (size_t i = 0; i < len; i++)
                if (!word_char(w[i]))
                    return 0;
        }
        if (!e)
            return 1;
        w = e + 1;
    }
}

static int last_word_is_dead(const char *s)
{
    size_t n = strlen(s);
    return (n == 4 && memcmp(s, "dead", 4) == 0) ||
           (n > 4 && memcmp(s + n - 5, ".dead", 5) == 0);
}

int qn_topic_pattern_valid(const char *s)
{
    return s && topic_syntax_ok(s, 1) ? 0 : QN_INVALID_ARGUMENT;
}

/* p and t point at the start of a word (or at the end, "" ). */
static int match_words(const char *p, const char *t)
{
    for (;;) {
        if (*p == '\0')
            return *t == '\0';
        const char *pe = strchr(p, '.');
        size_t pl = pe ? (size_t)(pe - p) : strlen(p);
        if (pl == 1 && *p == '#') {
            const char *prest = pe ? pe + 1 : "";
            /* '#' eats zero words, or one word and tries again */
            if (match_words(prest, t))
                return 1;
            for (const char *q = t; *q;) {
                const char *te = strchr(q, '.');
                q = te ? te + 1 : q + strlen(q);
                if (match_words(prest, q))
                    return 1;
                if (!te)
                    break;
            }
            return 0;
        }
        if (*t == '\0')
            return 0;
        const char *te = strchr(t, '.');
        size_t tl = te ? (size_t)(te - t) : strlen(t);
        if (!(pl == 1 && *p == '*') && (pl != tl || memcmp(p, t, pl) != 0))
            return 0;
        /* both advance one word; a trailing '.' in one and not the other cannot
         * happen with valid syntax */
        if (!pe && !te)
            return 1;
        if (!pe) /* pattern ended, topic has more words */
            return 0;
        if (!te) { /* topic ended: the rest of the pattern must match "" */
            p = pe + 1;
            t = "";
            continue;
        }
        p = pe + 1;
        t = te + 1;
    }
}

int qn_topic_match(const char *pattern, const char *topic)
{
    if (last_word_is_dead(pattern) != last_word_is_dead(topic))
        return 0;
    return match_words(pattern, topic);
}

/* --- envelopes ---------------------------------------------------------- */

json_t *qn_event_new(const char *type, const char *source, json_t *data, const char *traceparent)
{
    char id[QN_UUID_LEN + 1], ts[32];
    qn_uuid4(id);
    qn_time_rfc3339(qn_now_ms(), ts);
    json_t *ev = json_object();
    if (!data)
        data = json_object();
    if (!ev || !data)
        goto fail;
    if (json_object_set_new(ev, "specversion", json_string("1.0")) < 0 ||
        json_object_set_new(ev, "id", json_string(id)) < 0 ||
        json_object_set_new(ev, "source", json_string(source ? source : "")) < 0 ||
        json_object_set_new(ev, "type", json_string(type ? type : "")) < 0 ||
        json_object_set_new(ev, "time", json_string(ts)) < 0 ||
        json_object_set_new(ev, "datacontenttype", json_string("application/json")) < 0)
        goto fail;
    /* Tracing on: the event is sent by a PRODUCER span of the caller's
     * trace, and carries that span's context to its consumers (the outbox
     * may publish it later, from another thread: the context is fixed now). */
    char tp[QN_TRACEPARENT_LEN + 1];
    qn_trace_ctx parent;
    if (traceparent && qn_otel_enabled() && qn_traceparent_parse(traceparent, &parent) == 0) {
        qn_span s;
        char name[300];
        snprintf(name, sizeof name, "publish %s", type ? type : "");
        qn_span_start(&s, name, QN_SPAN_PRODUCER, &parent);
        qn_span_attr_str(&s, "messaging.system", "quern");
        qn_span_attr_str(&s, "messaging.destination.name", type ? type : "");
        qn_span_attr_str(&s, "messaging.message.id", id);
        qn_traceparent_format(&s.ctx, tp);
        traceparent = tp;
        qn_span_end(&s);
    }
    if (traceparent && json_object_set_new(ev, "traceparent", json_string(traceparent)) < 0)
        goto fail;
    if (json_object_set_new(ev, "data", data) < 0) {
        data = NULL;
        goto fail;
    }
    return ev;
fail:
    json_decref(data);
    json_decref(ev);
    return NULL;
}

static int want_str(const json_t *ev, const char *key, int required, size_t maxlen,
                    const char **out, qn_err *err)
{
    json_t *v = json_object_get(ev, key);
    if (!v) {
        if (required)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "cloudevent: \"%s\" is required", key);
        return 0;
    }
    if (!json_is_string(v))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "cloudevent: \"%s\" must be a string", key);
    size_t n = json_string_length(v);
    if ((required && n == 0) || n > maxlen)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "cloudevent: \"%s\" must be 1..%zu bytes, got %zu", key, maxlen, n);
    if (out)
        *out = json_string_value(v);
    return 0;
}

int qn_event_validate(const json_t *ev, qn_err *err)
{
    const char *sv = NULL, *type = NULL, *tp = NULL;
    if (!json_is_object(ev))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "cloudevent: the envelope must be an object");
    int rc;
    if ((rc = want_str(ev, "specversion", 1, 16, &sv, err)) < 0 ||
        (rc = want_str(ev, "id", 1, 256, NULL, err)) < 0 ||
        (rc = want_str(ev, "source", 1, 256, NULL, err)) < 0 ||
        (rc = want_str(ev, "type", 1, 255, &type, err)) < 0 ||
        (rc = want_str(ev, "time", 0, 64, NULL, err)) < 0 ||
        (rc = want_str(ev, "datacontenttype", 0, 128, NULL, err)) < 0 ||
        (rc = want_str(ev, "subject", 0, 1024, NULL, err)) < 0 ||
        (rc = want_str(ev, "traceparent", 0, 64, &tp, err)) < 0)
        return rc;
    if (strcmp(sv, "1.0") != 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "cloudevent: specversion must be \"1.0\", got \"%s\"", sv);
    if (!topic_syntax_ok(type, 0) || last_word_is_dead(type))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "cloudevent: type \"%s\" is not a topic (dot-separated words of "
                          "[A-Za-z0-9_-], last word not \"dead\")",
                          type);
    qn_trace_ctx tc;
    if (tp && qn_traceparent_parse(tp, &tc) < 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "cloudevent: traceparent \"%s\" is malformed",
                          tp);
    json_t *data = json_object_get(ev, "data");
    if (data && !json_is_object(data))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "cloudevent: \"data\" must be an object");
    return 0;
}

int qn_event_parse(const char *buf, size_t len, size_t max_bytes, json_t **out, qn_err *err)
{
    *out = NULL;
    if (max_bytes == 0)
        max_bytes = DEFAULT_MAX_BYTES;
    if (len > max_bytes)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "cloudevent: %zu bytes exceed the limit of %zu",
                          len, max_bytes);
    json_error_t je;
    /* JSON_REJECT_DUPLICATES: an envelope with two "type"s is ambiguous */
    json_t *v = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (!v) {
        if (json_error_code(&je) == json_error_out_of_memory)
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "cloudevent: out of memory");
        return qn_err_set(err, QN_INVALID_ARGUMENT, "cloudevent: not JSON: %s at byte %d", je.text,
                          je.position);
    }
    int rc = qn_event_validate(v, err);
    if (rc < 0) {
        json_decref(v);
        return rc;
    }
    *out = v;
    return 0;
}

/* --- the bus ------------------------------------------------------------ */

static const char *const topic_label[] = {"topic", NULL};
static const char *const topic_group_labels[] = {"topic", "group", NULL};

qn_bus *qn_bus_open(const char *url, const qn_bus_opts *opts, qn_err *err)
{
    qn_bus_opts o = {0};
    if (opts)
        o = *opts;
    if (!url)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "bus: url is NULL"), NULL;
    if (o.max_attempts < 0 || o.retry_base_ms < 0 || o.retry_max_ms < 0 || o.visibility_ms < 0 ||
        o.retention_ms < 0 || o.publish_timeout_ms < 0 || o.prefetch < 0 || o.prefetch > 65535)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "bus: negative or out-of-range option"), NULL;
    if (!o.max_attempts)
        o.max_attempts = 5;
    if (!o.retry_base_ms)
        o.retry_base_ms = 1000;
    if (!o.retry_max_ms)
        o.retry_max_ms = 60000;
    if (o.retry_max_ms < o.retry_base_ms)
        o.retry_max_ms = o.retry_base_ms;
    if (!o.visibility_ms)
        o.visibility_ms = 30000;
    if (!o.retention_ms)
        o.retention_ms = 86400000;
    if (!o.publish_timeout_ms)
        o.publish_timeout_ms = 30000;
    if (!o.prefetch)
        o.prefetch = 64;
    if (!o.max_message_bytes)
        o.max_message_bytes = DEFAULT_MAX_BYTES;

    qn_bus *bus = NULL;
    if (strncasecmp(url, "sqlite://", 9) == 0)
        bus = qn__bus_sqlite_open(url + 9, &o, err);
    else if (strncasecmp(url, "amqp://", 7) == 0)
        bus = qn__bus_amqp_open(url, &o, err);
    else
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "bus: url \"%.64s\" must start with sqlite:// or amqp://", url),
               NULL;
    if (!bus)
        return NULL;
    bus->o = o;
    if (o.metrics) {
        bus->published = qn_metrics_counter(o.metrics, "quern_bus_published_total",
                                            "Messages published durably, by topic.", topic_label);
        bus->consumed = qn_metrics_counter(o.metrics, "quern_bus_consumed_total",
                                           "Messages acknowledged, by topic and consumer group.",
                                           topic_group_labels);
        bus->redelivered = qn_metrics_counter(
            o.metrics, "quern_bus_redelivered_total",
            "Deliveries after the first (nack, lost lease or connection), by topic and group.",
            topic_group_labels);
        bus->dead = qn_metrics_counter(o.metrics, "quern_bus_dead_lettered_total",
                                       "Messages moved to <topic>.dead, by topic and group.",
                                       topic_group_labels);
        bus->lag = qn_metrics_gauge(o.metrics, "quern_bus_consumer_lag",
                                    "Messages waiting for a consumer group (topic: its patterns).",
                                    topic_group_labels);
    }
    return bus;
}

void qn_bus_close(qn_bus *bus)
{
    if (bus)
        bus->ops->close(bus);
}

const char *qn_bus_backend(const qn_bus *bus)
{
    return bus->ops->name;
}

int qn_bus_publish(qn_bus *bus, const json_t *event, qn_err *err)
{
    json_t *one = (json_t *)event;
    return qn_bus_publish_batch(bus, &one, 1, err);
}

/* json_dump_callback sink: appends to one buffer per batch (one allocation
 * for a whole batch instead of one per event: serialization is most of the
 * cost of a batched publish). */
typedef struct sink {
    char *p;
    size_t len, cap;
    int oom;
} sink;

static int sink_put(const char *b, size_t n, void *ud)
{
    sink *s = ud;
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n)
            cap *= 2;
        char *p = realloc(s->p, cap);
        if (!p) {
            s->oom = 1;
            return -1;
        }
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->len, b, n);
    s->len += n;
    return 0;
}

int qn_bus_publish_batch(qn_bus *bus, json_t *const *events, size_t n, qn_err *err)
{
    if (n == 0)
        return 0;
    int rc = 0;
    sink sk = {0};
    const char **topics = calloc(n, sizeof *topics);
    const char **ids = calloc(n, sizeof *ids);
    const char **bodies = calloc(n, sizeof *bodies);
    size_t *offs = calloc(n, sizeof *offs);
    size_t *lens = calloc(n, sizeof *lens);
    if (!topics || !ids || !bodies || !offs || !lens) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "bus: out of memory for a batch of %zu", n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if ((rc = qn_event_validate(events[i], err)) < 0) {
            qn_err_wrap(err, "event %zu of the batch", i);
            goto out;
        }
        topics[i] = json_string_value(json_object_get(events[i], "type"));
        ids[i] = json_string_value(json_object_get(events[i], "id"));
        offs[i] = sk.len;
        if (json_dump_callback(events[i], sink_put, &sk, JSON_COMPACT) < 0 || sk.oom) {
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "bus: out of memory serializing event %zu",
                            i);
            goto out;
        }
        lens[i] = sk.len - offs[i];
        if (lens[i] > bus->o.max_message_bytes) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                            "event %zu of the batch: %zu bytes exceed the limit of %zu", i,
                            lens[i], bus->o.max_message_bytes);
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++)
        bodies[i] = sk.p + offs[i];
    rc = bus->ops->publish(bus, topics, ids, bodies, lens, n, err);
    if (rc == 0 && bus->published) {
        /* count runs of one topic with one update: batches are mostly one type */
        size_t i = 0;
        while (i < n) {
            size_t j = i + 1;
            while (j < n && strcmp(topics[j], topics[i]) == 0)
                j++;
            const char *vals[] = {topics[i]};
            qn_counter_add(bus->published, vals, (double)(j - i));
            i = j;
        }
    }
out:
    free(sk.p);
    free(topics);
    free(ids);
    free(bodies);
    free(offs);
    free(lens);
    return rc;
}

int qn__consumer_init(qn_consumer *c, qn_bus *bus, const char *group,
                      const char *const *patterns, qn_err *err)
{
    size_t gl = group ? strlen(group) : 0;
    if (gl == 0 || gl > 64)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "bus: group name must be 1..64 characters");
    for (size_t i = 0; i < gl; i++)
        if (!word_char(group[i]))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "bus: group \"%s\" may only hold [A-Za-z0-9_-]", group);
    if (!patterns || !patterns[0])
        return qn_err_set(err, QN_INVALID_ARGUMENT, "bus: group %s: no topic pattern given", group);
    c->bus = bus;
    memcpy(c->group, group, gl + 1);
    size_t off = 0;
    c->patterns[0] = '\0';
    for (size_t i = 0; patterns[i]; i++) {
        if (qn_topic_pattern_valid(patterns[i]) < 0)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "bus: group %s: pattern \"%.255s\" is not dot-separated words, "
                              "'*' or '#'",
                              group, patterns[i]);
        size_t pl = strlen(patterns[i]);
        if (off + pl + 2 > sizeof c->patterns)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "bus: group %s: too many patterns", group);
        if (off)
            c->patterns[off++] = ',';
        memcpy(c->patterns + off, patterns[i], pl + 1);
        off += pl;
    }
    return 0;
}

qn_consumer *qn_bus_subscribe(qn_bus *bus, const char *group, const char *const *patterns,
                              qn_err *err)
{
    qn_consumer probe;
    if (qn__consumer_init(&probe, bus, group, patterns, err) < 0)
        return NULL;
    return bus->ops->subscribe(bus, group, patterns, err);
}

int qn_consumer_receive(qn_consumer *c, int timeout_ms, qn_msg **out, qn_err *err)
{
    qn_bus *bus = c->bus;
    *out = NULL;
    int64_t deadline = qn__mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        int64_t left = deadline - qn__mono_ms();
        qn_msg *m = NULL;
        int rc = bus->ops->receive(c, left > 0 ? (int)left : 0, &m, err);
        if (rc <= 0)
            return rc;
        qn_err perr;
        json_t *ev = NULL;
        int bad = qn_event_parse(m->qn__body, m->qn__len, bus->o.max_message_bytes, &ev, &perr);
        if (bad == QN_RESOURCE_EXHAUSTED) {
            qn_msg_free(m);
            return qn_err_set(err, bad, "%s", perr.msg);
        }
        if (bad < 0 || m->attempt > bus->o.max_attempts) {
            /* poison: invalid, or its lease ran out on the last allowed attempt */
            json_decref(ev);
            if ((rc = bus->ops->nack(c, m, 1, err)) == 0)
                qn__bus_count(bus->dead, m->qn__topic, c->group, 1);
            qn_msg_free(m);
            if (rc < 0 && rc != QN_ABORTED)
                return rc;
            if (qn__mono_ms() >= deadline)
                return 0;
            continue;
        }
        m->event = ev;
        m->id = json_string_value(json_object_get(ev, "id"));
        m->topic = m->qn__topic;
        if (m->attempt > 1)
            qn__bus_count(bus->redelivered, m->topic, c->group, 1);
        *out = m;
        return 1;
    }
}

int qn_consumer_ack(qn_consumer *c, qn_msg *msg, qn_err *err)
{
    int rc = c->bus->ops->ack(c, msg, err);
    if (rc == 0)
        qn__bus_count(c->bus->consumed, msg->topic, c->group, 1);
    return rc;
}

int qn_consumer_nack(qn_consumer *c, qn_msg *msg, qn_err *err)
{
    int dead = msg->attempt >= c->bus->o.max_attempts;
    int rc = c->bus->ops->nack(c, msg, dead, err);
    if (rc == 0 && dead)
        qn__bus_count(c->bus->dead, msg->topic, c->group, 1);
    return rc;
}

void qn_consumer_close(qn_consumer *c)
{
    if (c)
        c->bus->ops->consumer_close(c);
}

void qn_msg_free(qn_msg *m)
{
    if (!m)
        return;
    json_decref(m->event);
    free(m->qn__topic);
    free(m->qn__body);
    free(m);
}
