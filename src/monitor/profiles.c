/*
 * profiles.c - reference profiles of model versions, from the registry.
 *
 * The version's manifest (GET /v1/models/{m}/versions/{v}) names the profile
 * blob by digest ("profile":"sha256:<hex>"); the blob is the JSON of
 * qml_profile_to_json, parsed and validated by qml_profile_from_json before
 * any drift code sees it. A profile is immutable (content-addressed), so it is
 * cached for the life of the process; a failure is cached too and retried
 * after RETRY_MS, so a registry outage does not turn every event into a call.
 * Callers hold m->mu: the cache is not locked on its own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/json.h"
#include "core/log.h"
#include "monitor/monitor.h"

#define RETRY_MS 10000
#define MAX_CACHED 256

static void entry_free(mon_profile *e)
{
    qml_profile_free(e->profile);
    json_decref(e->metrics);
    json_decref(e->classes);
    free(e);
}

static void fetch(monitor *m, mon_profile *e)
{
    qn_err err = {0};
    json_t *ver = NULL;
    qn_buf body;
    qn_buf_init(&body, 256u << 20);
    char path[512];
    snprintf(path, sizeof path, "/v1/models/%s/versions/%lld", e->model, (long long)e->version);
    e->error[0] = 0;
    e->fetched_at = qn_now_ms();
    if (qn_client_json(m->registry, "GET", path, NULL, NULL, &ver, &err) < 0) {
        snprintf(e->error, sizeof e->error, "registry: %.400s", err.msg);
        goto out;
    }
    json_t *man = json_object_get(ver, "manifest");
    const char *kind = json_string_value(json_object_get(man, "kind"));
    const char *digest = json_string_value(json_object_get(man, "profile"));
    snprintf(e->kind, sizeof e->kind, "%s", kind ? kind : "");
    /* For quality: the task, the classes and the holdout metrics (the
     * registry's flat map, with the calibration table of binary classifiers). */
    const json_t *params = json_object_get(man, "params");
    const char *task = json_string_value(json_object_get(params, "task"));
    snprintf(e->task, sizeof e->task, "%s", task ? task : "");
    json_decref(e->metrics);
    json_decref(e->classes);
    e->metrics = json_incref(json_object_get(ver, "metrics"));
    e->classes = json_is_array(json_object_get(params, "classes")) ? json_incref(json_object_get(params, "classes")) : NULL;
    e->have_version = 1;
    if (!digest) {
        snprintf(e->error, sizeof e->error, "version %lld of model %s has no reference profile",
                 (long long)e->version, e->model);
        goto out;
    }
    if (strncmp(digest, "sha256:", 7) != 0 || strlen(digest) != 71) {
        snprintf(e->error, sizeof e->error, "model %s version %lld: malformed profile digest",
                 e->model, (long long)e->version);
        goto out;
    }
    snprintf(path, sizeof path, "/v1/blobs/%s", digest);
    if (qn_client_raw(m->registry, "GET", path, NULL, NULL, 0, NULL, &body, &err) < 0) {
        snprintf(e->error, sizeof e->error, "profile blob %.80s: %.400s", digest, err.msg);
        goto out;
    }
    if (qml_profile_from_json(body.data ? body.data : "", body.len, &e->profile, &err) < 0) {
        snprintf(e->error, sizeof e->error, "profile %.80s: %.400s", digest, err.msg);
        e->profile = NULL;
        goto out;
    }
    qn_log_info(NULL, "reference profile loaded", "{s:s, s:I, s:s, s:i}", "model", e->model,
                "version", (json_int_t)e->version, "digest", digest, "columns", (int)e->profile->ncols);
out:
    if (e->error[0])
        qn_log_warn(NULL, "no reference profile", "{s:s, s:I, s:s}", "model", e->model, "version",
                    (json_int_t)e->version, "detail", e->error);
    json_decref(ver);
    qn_buf_free(&body);
}

static mon_profile *entry_get(monitor *m, const char *model, int64_t version, qn_err *err);

const mon_profile *mon_profile_get(monitor *m, const char *model, int64_t version, qn_err *err)
{
    mon_profile *e = entry_get(m, model, version, err);
    if (e && !e->profile) {
        qn_err_set(err, QN_FAILED_PRECONDITION, "%s", e->error);
        return NULL;
    }
    return e;
}

const mon_profile *mon_version_get(monitor *m, const char *model, int64_t version, qn_err *err)
{
    mon_profile *e = entry_get(m, model, version, err);
    if (e && !e->have_version) {
        qn_err_set(err, QN_FAILED_PRECONDITION, "%s", e->error);
        return NULL;
    }
    return e;
}

static mon_profile *entry_get(monitor *m, const char *model, int64_t version, qn_err *err)
{
    mon_profile *e = m->profiles, *prev = NULL;
    while (e && !(e->version == version && strcmp(e->model, model) == 0)) {
        prev = e;
        e = e->next;
    }
    if (!e) {
        if (!(e = calloc(1, sizeof *e))) {
            qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            return NULL;
        }
        snprintf(e->model, sizeof e->model, "%s", model);
        e->version = version;
        e->next = m->profiles;
        m->profiles = e;
        m->n_profiles++;
        fetch(m, e);
        /* bounded: drop the oldest (the tail) */
        if (m->n_profiles > MAX_CACHED) {
            mon_profile *p = m->profiles;
            while (p->next && p->next->next)
                p = p->next;
            if (p->next) {
                entry_free(p->next);
                p->next = NULL;
                m->n_profiles--;
            }
        }
    } else if (!e->profile && qn_now_ms() - e->fetched_at >= RETRY_MS) {
        fetch(m, e);
    }
    (void)prev;
    return e;
}

void mon_profiles_forget(monitor *m, const char *model)
{
    mon_profile **pp = &m->profiles;
    while (*pp) {
        mon_profile *e = *pp;
        if (strcmp(e->model, model) == 0 && !e->profile) {
            /* only failures: a profile never changes, a missing one may appear */
            *pp = e->next;
            entry_free(e);
            m->n_profiles--;
        } else {
            pp = &e->next;
        }
    }
}

void mon_profiles_free(monitor *m)
{
    while (m->profiles) {
        mon_profile *e = m->profiles;
        m->profiles = e->next;
        entry_free(e);
    }
    m->n_profiles = 0;
}
