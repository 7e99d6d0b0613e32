/*
 * fuzz_cloudevent.c - the consumer side of the bus parses every incoming
 * envelope with qn_event_parse (bounded size, strict JSON, CloudEvents 1.0
 * checks) before a handler sees it. Invariants checked here: no crash or
 * leak on any input; an accepted envelope really satisfies the contract
 * (specversion "1.0"; id, source, type non-empty strings; type a topic that a
 * pattern equal to itself matches and "#" matches; data, when present, an
 * object); and accepting is stable: the re-serialized envelope parses again.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/bus/bus.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *ev = NULL;
    qn_err err;
    int rc = qn_event_parse((const char *)data, size, 64 * 1024, &ev, &err);
    if (rc < 0) {
        assert(ev == NULL);
        assert(err.code == rc && err.msg[0] != '\0');
        return 0;
    }
    assert(json_is_object(ev));
    assert(strcmp(json_string_value(json_object_get(ev, "specversion")), "1.0") == 0);
    const char *keys[] = {"id", "source", "type"};
    for (size_t i = 0; i < 3; i++) {
        const char *s = json_string_value(json_object_get(ev, keys[i]));
        assert(s && s[0]);
    }
    const char *type = json_string_value(json_object_get(ev, "type"));
    assert(qn_topic_pattern_valid(type) == 0);
    assert(qn_topic_match(type, type));
    assert(qn_topic_match("#", type));
    json_t *d = json_object_get(ev, "data");
    assert(!d || json_is_object(d));

    char *again = json_dumps(ev, JSON_COMPACT);
    assert(again);
    json_t *ev2 = NULL;
    assert(qn_event_parse(again, strlen(again), 0, &ev2, &err) == 0);
    assert(json_equal(ev, ev2));
    free(again);
    json_decref(ev2);
    json_decref(ev);
    return 0;
}
