/*
 * quern_events.c - a small dev/test tool for the black-box service tests:
 * puts events on the bus, reads them back, and builds reference profiles,
 * so that tests of quern-monitor and quern-alert can play the other services.
 *
 *   quern-events publish BUS [TYPE]   reads NDJSON from stdin; each line is a
 *                                     whole CloudEvent, or (with TYPE) the
 *                                     data of a new event of that type.
 *                                     Prints each published event's id.
 *   quern-events read BUS GROUP PATTERN [MAX] [TIMEOUT_MS]
 *                                     receives up to MAX events (default
 *                                     1000) of PATTERN through the durable
 *                                     group, acks each, prints NDJSON, stops
 *                                     after TIMEOUT_MS (default 1000) of quiet.
 *   quern-events subscribe BUS GROUP PATTERN
 *                                     creates the group (so that later events
 *                                     are kept for it) and exits.
 *   quern-events profile CSV OUT      builds a libquern-ml profile of the CSV
 *                                     (types inferred) and writes its JSON.
 *
 * Exit 0 on success, 1 on failure (message on stderr), 2 on bad usage.
 * Built into build/tests/, never installed.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bus/bus.h"
#include "core/err.h"
#include "ml/csv.h"
#include "ml/profile.h"

static int usage(void)
{
    fprintf(stderr, "usage: quern-events publish BUS [TYPE] | read BUS GROUP PATTERN [MAX] "
                    "[TIMEOUT_MS] | subscribe BUS GROUP PATTERN | profile CSV OUT\n");
    return 2;
}

static int publish(const char *url, const char *type)
{
    qn_err err;
    qn_bus *bus = qn_bus_open(url, NULL, &err);
    if (!bus) {
        fprintf(stderr, "bus: %s\n", err.msg);
        return 1;
    }
    int ret = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (n <= 1)
            continue;
        json_error_t je;
        json_t *v = json_loadb(line, (size_t)n, 0, &je);
        if (!v) {
            fprintf(stderr, "stdin: %s\n", je.text);
            ret = 1;
            break;
        }
        json_t *ev = type ? qn_event_new(type, "quern-test", v, NULL) : v;
        if (qn_bus_publish(bus, ev, &err) < 0) {
            fprintf(stderr, "publish: %s\n", err.msg);
            json_decref(ev);
            ret = 1;
            break;
        }
        printf("%s\n", json_string_value(json_object_get(ev, "id")));
        json_decref(ev);
    }
    free(line);
    qn_bus_close(bus);
    return ret;
}

static int readev(const char *url, const char *group, const char *pattern, long max, int timeout,
                  int subscribe_only)
{
    qn_err err;
    qn_bus *bus = qn_bus_open(url, NULL, &err);
    if (!bus) {
        fprintf(stderr, "bus: %s\n", err.msg);
        return 1;
    }
    const char *pats[] = {pattern, NULL};
    qn_consumer *c = qn_bus_subscribe(bus, group, pats, &err);
    if (!c) {
        fprintf(stderr, "subscribe: %s\n", err.msg);
        qn_bus_close(bus);
        return 1;
    }
    int ret = 0;
    for (long got = 0; !subscribe_only && got < max;) {
        qn_msg *m;
        int rc = qn_consumer_receive(c, timeout, &m, &err);
        if (rc < 0) {
            fprintf(stderr, "receive: %s\n", err.msg);
            ret = 1;
            break;
        }
        if (rc == 0)
            break;
        char *s = json_dumps(m->event, JSON_COMPACT);
        printf("%s\n", s ? s : "null");
        fflush(stdout);
        free(s);
        if (qn_consumer_ack(c, m, &err) < 0) /* printed already; it comes again */
            fprintf(stderr, "quern_events: ack failed: %s\n", err.msg);
        qn_msg_free(m);
        got++;
    }
    qn_consumer_close(c);
    qn_bus_close(bus);
    return ret;
}

static int profile(const char *csv, const char *out)
{
    qn_err err;
    qml_csv_opts o;
    qml_csv_opts_init(&o);
    qml_frame *f = NULL;
    qml_profile *p = NULL;
    char *json = NULL;
    int ret = 1;
    qml_profile_opts po;
    qml_profile_opts_default(&po);
    if (qml_csv_read_all(csv, &o, &f, NULL, &err) < 0 || qml_profile_build(f, &po, &p, &err) < 0 ||
        !(json = qml_profile_to_json(p, &err))) {
        fprintf(stderr, "%s: %s\n", csv, err.msg);
        goto out;
    }
    FILE *fp = fopen(out, "w");
    if (!fp || fputs(json, fp) < 0 || fclose(fp) != 0) {
        fprintf(stderr, "%s: cannot write\n", out);
        goto out;
    }
    ret = 0;
out:
    free(json);
    qml_profile_free(p);
    qml_frame_free(f);
    return ret;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    if (strcmp(argv[1], "publish") == 0 && (argc == 3 || argc == 4))
        return publish(argv[2], argc == 4 ? argv[3] : NULL);
    if (strcmp(argv[1], "read") == 0 && argc >= 5 && argc <= 7)
        return readev(argv[2], argv[3], argv[4], argc > 5 ? atol(argv[5]) : 1000,
                      argc > 6 ? atoi(argv[6]) : 1000, 0);
    if (strcmp(argv[1], "subscribe") == 0 && argc == 5)
        return readev(argv[2], argv[3], argv[4], 0, 0, 1);
    if (strcmp(argv[1], "profile") == 0 && argc == 4)
        return profile(argv[2], argv[3]);
    return usage();
}
