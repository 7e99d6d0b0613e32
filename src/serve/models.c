/*
 * models.c - the model manager of quern-serve (DESIGN.md section 5).
 *
 * One slot per configured model, each following a registry alias. A slot
 * holds a pointer to the version it serves; requests copy that pointer and
 * take a reference under the slot's mutex (held for nothing else on the hot
 * path), so a swap is one pointer store and the old version is freed by
 * whichever request drops its last reference.
 *
 * One background thread (the follower) does all the slow work: at start it
 * loads each model's last good version from the on-disk cache, so serve comes
 * up even while the registry is down; then, whenever quern.model.promoted
 * names one of our models (or every --poll-interval as a safety net), it reads
 * the alias from the registry, downloads a new version's files into
 * <data>/cache/<model>/<version>/ (written to a temporary directory and
 * renamed, so the cache never holds half a bundle), loads it with
 * libquern-ml (which checks every file's digest), runs the smoke prediction,
 * and only then swaps it in and records it as the last good version. A
 * version that fails is refused: the old one keeps serving, and the refusal
 * is logged, counted and shown in GET /v2/models/{m}.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/json.h"
#include "core/log.h"
#include "core/service.h"
#include "core/otel.h"
#include "core/trace.h"
#include "core/validate.h"
#include "ml/bundle.h"
#include "serve/serve.h"

/* ---- parsing --models ------------------------------------------------------ */

/* Sets up slot nmodels for name@alias and counts it. The caller holds amu
 * (or is alone: parsing) and checked name, alias and room. */
static serve_model *slot_add(serve *s, const char *name, const char *alias, int required)
{
    size_t n = atomic_load(&s->nmodels);
    serve_model *m = &s->models[n];
    memset(m, 0, sizeof *m);
    m->name = strdup(name);
    m->alias = strdup(alias);
    if (!m->name || !m->alias) {
        free(m->name);
        free(m->alias);
        return NULL;
    }
    pthread_mutex_init(&m->mu, NULL);
    m->state = "loading";
    m->sample_rate = s->default_rate;
    m->required = required;
    atomic_store(&s->nmodels, n + 1); /* publishes the slot to request threads */
    return m;
}

int serve_models_parse(serve *s, const char *spec, qn_err *err)
{
    pthread_mutex_init(&s->amu, NULL);
    if (!spec) {
        s->follow_all = 1;
        return 0;
    }
    if (!*spec)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "--models is empty: name at least one model (NAME[@ALIAS],...), or "
                          "leave it unset to serve every model's production alias");
    char *copy = strdup(spec), *save = NULL;
    if (!copy)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    int rc = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        char *at = strchr(tok, '@');
        const char *alias = "production";
        if (at) {
            *at = '\0';
            alias = at + 1;
        }
        if ((rc = qn_name_check("model", tok, err)) < 0 ||
            (rc = qn_name_check("alias", alias, err)) < 0) {
            qn_err_wrap(err, "--models");
            break;
        }
        if (serve_model_find(s, tok)) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "--models: model %s is listed twice", tok);
            break;
        }
        if (s->nmodels == SERVE_MAX_MODELS) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "--models: at most %d models",
                            SERVE_MAX_MODELS);
            break;
        }
        if (!slot_add(s, tok, alias, 1)) {
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
    }
    free(copy);
    if (rc == 0 && s->nmodels == 0)
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "--models names no model");
    return rc;
}

serve_model *serve_model_add(serve *s, const char *name, const char *alias)
{
    qn_err err;
    if (qn_name_check("model", name, &err) < 0)
        return NULL;
    pthread_mutex_lock(&s->amu);
    serve_model *m = serve_model_find(s, name);
    if (!m) {
        if (s->nmodels == SERVE_MAX_MODELS)
            qn_log_warn(NULL, "every model slot is taken; not serving this model", "{s:s, s:i}",
                        "model", name, "max", SERVE_MAX_MODELS);
        else if (!(m = slot_add(s, name, alias, 0)))
            qn_log_warn(NULL, "out of memory adding a model", "{s:s}", "model", name);
        else
            qn_log_info(NULL, "model added", "{s:s, s:s}", "model", name, "alias", alias);
    }
    pthread_mutex_unlock(&s->amu);
    return m;
}

serve_model *serve_model_find(serve *s, const char *name)
{
    size_t n = atomic_load(&s->nmodels);
    for (size_t i = 0; i < n; i++)
        if (strcmp(s->models[i].name, name) == 0)
            return &s->models[i];
    return NULL;
}

/* ---- versions ---------------------------------------------------------------- */

static void version_free(serve_version *v)
{
    if (!v)
        return;
    qml_model_free(v->model);
    free(v->inputs);
    free(v->outputs);
    free(v);
}

serve_version *serve_acquire(serve_model *m)
{
    pthread_mutex_lock(&m->mu);
    serve_version *v = m->cur;
    if (v)
        atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&m->mu);
    return v;
}

void serve_release(serve_version *v)
{
    if (v && atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) == 1)
        version_free(v);
}

static int spec_meta(const qml_tensor_spec *sp, oip_tensor_meta *out)
{
    out->name = sp->name;
    out->datatype = oip_datatype_parse(sp->datatype);
    out->ndim = sp->ndim;
    for (int d = 0; d < sp->ndim && d < OIP_MAX_DIMS; d++)
        out->shape[d] = sp->shape[d];
    return out->datatype == OIP_INVALID ? -1 : 0;
}

/* Loads dir as version `version`, smoke-tests it, and builds its metadata.
 * *reason says which step failed ("load", "smoke"). */
static serve_version *version_load(serve *s, const char *dir, int64_t version,
                                   const char **reason, qn_err *err)
{
    serve_version *v = calloc(1, sizeof *v);
    if (!v) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        *reason = "load";
        return NULL;
    }
    qml_model_opts o = {.threads = (int)s->cfg->xgb_threads};
    *reason = "load";
    if (qml_model_load(dir, &o, &v->model, err) < 0)
        goto fail;
    *reason = "smoke";
    if (qml_model_smoke(v->model, err) < 0)
        goto fail;
    *reason = "load";
    v->version = version;
    snprintf(v->vstr, sizeof v->vstr, "%lld", (long long)version);
    v->vlist[0] = v->vstr;
    snprintf(v->platform, sizeof v->platform, "quern-%s", qml_model_kind(v->model));
    v->is_als = strcmp(qml_model_kind(v->model), "als") == 0;
    v->ninputs = qml_model_n_inputs(v->model);
    v->noutputs = qml_model_n_outputs(v->model);
    v->inputs = calloc(v->ninputs ? v->ninputs : 1, sizeof *v->inputs);
    v->outputs = calloc(v->noutputs ? v->noutputs : 1, sizeof *v->outputs);
    if (!v->inputs || !v->outputs) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < v->ninputs; i++)
        if (spec_meta(qml_model_input(v->model, i), &v->inputs[i]) < 0) {
            qn_err_set(err, QN_INVALID_ARGUMENT, "input %s: unknown datatype %s",
                       qml_model_input(v->model, i)->name, qml_model_input(v->model, i)->datatype);
            goto fail;
        }
    v->numeric = !v->is_als && v->ninputs > 0;
    v->unnamed = v->numeric;
    for (size_t i = 0; i < v->ninputs; i++) {
        char fname[32];
        snprintf(fname, sizeof fname, "f%zu", i);
        if (v->inputs[i].datatype == OIP_BYTES)
            v->numeric = v->unnamed = 0;
        if (strcmp(v->inputs[i].name, fname) != 0)
            v->unnamed = 0;
        if (strcmp(v->inputs[i].name, SERVE_TENSOR_INPUT) == 0)
            v->tensor_col = 1;
    }
    v->tensor_in = (oip_tensor_meta){SERVE_TENSOR_INPUT, OIP_FP32, 2, {-1, (int64_t)v->ninputs}};
    v->k = 10;
    for (size_t i = 0; i < v->noutputs; i++) {
        if (spec_meta(qml_model_output(v->model, i), &v->outputs[i]) < 0) {
            qn_err_set(err, QN_INVALID_ARGUMENT, "output %s: unknown datatype %s",
                       qml_model_output(v->model, i)->name,
                       qml_model_output(v->model, i)->datatype);
            goto fail;
        }
        if (v->is_als && v->outputs[i].ndim == 2 && v->outputs[i].shape[1] > 0)
            v->k = (int)v->outputs[i].shape[1];
    }
    atomic_init(&v->refs, 1);
    return v;
fail:
    version_free(v);
    return NULL;
}

/* ---- the cache ------------------------------------------------------------------ */

static char *model_dir(serve *s, serve_model *m)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", s->cache_dir, m->name) < 0)
        return NULL;
    return p;
}

static char *version_dir(serve *s, serve_model *m, int64_t version)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s/%lld", s->cache_dir, m->name, (long long)version) < 0)
        return NULL;
    return p;
}

static void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char *p = NULL;
            if (asprintf(&p, "%s/%s", dir, e->d_name) >= 0) {
                struct stat st;
                if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                    rm_tree(p);
                else
                    unlink(p);
                free(p);
            }
        }
        closedir(d);
    }
    rmdir(dir);
}

/* Writes text to path atomically (temp file, fsync, rename). */
static int write_atomic(const char *path, const char *text, qn_err *err)
{
    char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp", path) < 0)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = 0;
    size_t len = strlen(text);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len || fsync(fd) < 0) {
        rc = qn_err_set(err, QN_INTERNAL, "cannot write %s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        unlink(tmp);
    } else if (close(fd) < 0 || rename(tmp, path) < 0) {
        rc = qn_err_set(err, QN_INTERNAL, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    return rc;
}

static void save_last_good(serve *s, serve_model *m, int64_t version)
{
    char *dir = model_dir(s, m), *path = NULL;
    qn_err err;
    if (dir && asprintf(&path, "%s/last_good.json", dir) >= 0) {
        char text[QN_NAME_MAX + 64]; /* a name of the longest allowed length fits whole */
        snprintf(text, sizeof text, "{\"model\":\"%s\",\"version\":%lld}\n", m->name,
                 (long long)version);
        if (write_atomic(path, text, &err) < 0)
            qn_log_warn(NULL, "cannot record the last good version", "{s:s, s:s}", "model",
                        m->name, "error", err.msg);
    }
    free(dir);
    free(path);
}

/* The last good version recorded for m, or 0. */
static int64_t read_last_good(serve *s, serve_model *m)
{
    char *dir = model_dir(s, m), *path = NULL;
    int64_t v = 0;
    if (dir && asprintf(&path, "%s/last_good.json", dir) >= 0) {
        json_error_t je;
        json_t *doc = json_load_file(path, 0, &je);
        json_t *jv = doc ? json_object_get(doc, "version") : NULL;
        if (json_is_integer(jv) && json_integer_value(jv) > 0)
            v = json_integer_value(jv);
        json_decref(doc);
    }
    free(dir);
    free(path);
    return v;
}

/* ---- swapping and refusing ---------------------------------------------------- */

static void install(serve *s, serve_model *m, serve_version *v, const char *source)
{
    pthread_mutex_lock(&m->mu);
    serve_version *old = m->cur;
    m->cur = v;
    m->state = "ready";
    m->source = source; /* a string literal: nothing to copy, nothing to fail */
    pthread_mutex_unlock(&m->mu);

    if (old) {
        const char *ov[] = {m->name, old->vstr, m->alias};
        qn_metric_remove(s->m_info, ov);
    }
    const char *nv[] = {m->name, v->vstr, m->alias};
    qn_gauge_set(s->m_info, nv, 1);
    const char *mv[] = {m->name};
    qn_counter_add(s->m_swaps, mv, 1);
    qn_log_info(NULL, "model version serving", "{s:s, s:s, s:I, s:I, s:s}", "model", m->name,
                "alias", m->alias, "version", (json_int_t)v->version, "previous",
                (json_int_t)(old ? old->version : 0), "source", source);
    serve_release(old); /* freed now, or by the last request still running on it */
    if (!m->arm)
        save_last_good(s, m, v->version);
}

static void refuse(serve *s, serve_model *m, int64_t version, const char *reason,
                   const qn_err *err)
{
    char ts[32];
    qn_time_rfc3339(qn_now_ms(), ts);
    json_t *r = json_pack("{s:I, s:s, s:s, s:s}", "version", (json_int_t)version, "reason",
                          reason, "message", err->msg, "time", ts);
    pthread_mutex_lock(&m->mu);
    json_decref(m->last_refusal);
    m->last_refusal = r;
    m->refused = version;
    int64_t serving = m->cur ? m->cur->version : 0;
    pthread_mutex_unlock(&m->mu);
    const char *lv[] = {m->name, reason};
    qn_counter_add(s->m_refusals, lv, 1);
    qn_log_warn(NULL, "model version refused", "{s:s, s:I, s:s, s:s, s:I}", "model", m->name,
                "version", (json_int_t)version, "reason", reason, "error", err->msg,
                "still_serving", (json_int_t)serving);
}

/* ---- downloading -------------------------------------------------------------- */

/* Fetches version's manifest and files into a temporary directory and
 * renames it to dest. Transport failures are QN_UNAVAILABLE (retried at the
 * next poll); a bad manifest is QN_INVALID_ARGUMENT (refused). */
static int download(serve *s, serve_model *m, int64_t version, const char *dest, const qn_trace_ctx *tc,
                    qn_err *err)
{
    char path[512], *tmp = NULL, *file = NULL, *text = NULL;
    json_t *doc = NULL;
    qml_manifest *man = NULL;
    int rc;
    snprintf(path, sizeof path, "/v1/models/%s/versions/%lld", m->name, (long long)version);
    if ((rc = qn_client_json(s->registry, "GET", path, NULL, tc, &doc, err)) < 0)
        goto out;
    json_t *mj = json_object_get(doc, "manifest");
    if (!json_is_object(mj)) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "the registry's version %lld has no manifest",
                        (long long)version);
        goto out;
    }
    if (!(text = qn_json_dumps(mj, JSON_COMPACT | JSON_SORT_KEYS))) {
        /* out of memory: retried at the next poll, not a refusal */
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory writing the manifest");
        goto out;
    }
    if ((rc = qml_manifest_parse(text, strlen(text), &man, err)) < 0)
        goto out;
    char rnd[QN_UUID_LEN + 1];
    qn_uuid4(rnd);
    if (asprintf(&tmp, "%s/%s/.tmp-%lld-%s", s->cache_dir, m->name, (long long)version, rnd) < 0) {
        tmp = NULL;
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if ((rc = qn_mkdir_p(tmp, err)) < 0)
        goto out;
    for (size_t i = 0; i < qml_manifest_n_files(man); i++) {
        const char *name = qml_manifest_file_name(man, i);
        const char *digest = qml_manifest_file_digest(man, name);
        free(file);
        if (asprintf(&file, "%s/%s", tmp, name) < 0) {
            file = NULL;
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        snprintf(path, sizeof path, "/v1/blobs/%s", digest);
        if ((rc = qn_client_get_file(s->registry, path, file, tc, err)) < 0) {
            qn_err_wrap(err, "file %s", name);
            goto out;
        }
    }
    free(file);
    if (asprintf(&file, "%s/manifest.json", tmp) < 0) {
        file = NULL;
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if ((rc = write_atomic(file, text, err)) < 0)
        goto out;
    rm_tree(dest); /* a leftover that failed to load */
    if (rename(tmp, dest) < 0) {
        rc = qn_err_set(err, QN_INTERNAL, "cannot rename %s: %s", tmp, strerror(errno));
        goto out;
    }
out:
    if (rc < 0 && tmp)
        rm_tree(tmp);
    free(tmp);
    free(file);
    free(text);
    json_decref(doc);
    qml_manifest_free(man);
    return rc;
}

/* ---- following the alias ------------------------------------------------------- */

static void load_from_cache(serve *s, serve_model *m)
{
    int64_t v = read_last_good(s, m);
    if (v <= 0)
        return;
    char *dir = version_dir(s, m, v);
    const char *reason;
    qn_err err;
    serve_version *sv = dir ? version_load(s, dir, v, &reason, &err) : NULL;
    if (sv)
        install(s, m, sv, "cache");
    else
        qn_log_warn(NULL, "cached version does not load", "{s:s, s:I, s:s}", "model", m->name,
                    "version", (json_int_t)v, "error", dir ? err.msg : "out of memory");
    free(dir);
}

/* One round for one model: what does the alias say, and is that what we
 * serve? tc: the promotion's trace being followed, or NULL (a poll). */
static void follow_one_in(serve *s, serve_model *m, qn_span *span)
{
    const qn_trace_ctx *tc = span ? &span->ctx : NULL;
    char path[512];
    json_t *doc = NULL;
    qn_err err;
    snprintf(path, sizeof path, "/v1/models/%s/aliases/%s", m->name, m->alias);
    if (qn_client_json(s->registry, "GET", path, NULL, tc, &doc, &err) < 0) {
        if (span)
            qn_span_error(span, err.msg);
        qn_log(err.code == QN_NOT_FOUND ? QN_LOG_WARN : QN_LOG_DEBUG, NULL,
               "cannot read the alias from the registry", "{s:s, s:s, s:s}", "model", m->name,
               "alias", m->alias, "error", err.msg);
        return;
    }
    json_t *jv = json_object_get(doc, "version");
    int64_t want = json_is_integer(jv) ? json_integer_value(jv) : 0;
    json_decref(doc);
    if (want <= 0)
        return;

    pthread_mutex_lock(&m->mu);
    if (want != m->target)
        m->refused = 0; /* the alias moved: a refused version may be tried again later */
    m->target = want;
    int64_t serving = m->cur ? m->cur->version : 0, refused = m->refused;
    pthread_mutex_unlock(&m->mu);
    if (want == serving || want == refused)
        return;

    char *dir = version_dir(s, m, want), *mpath = NULL;
    if (!dir || asprintf(&mpath, "%s/manifest.json", dir) < 0) {
        free(dir);
        qn_log_warn(NULL, "out of memory following the alias; retrying at the next poll",
                    "{s:s, s:I}", "model", m->name, "version", (json_int_t)want);
        return;
    }
    const char *reason = "download";
    serve_version *v = NULL;
    if (access(mpath, F_OK) == 0)
        v = version_load(s, dir, want, &reason, &err); /* cached earlier: digests rechecked */
    if (!v) {
        int rc = download(s, m, want, dir, tc, &err);
        if (rc < 0) {
            if (rc == QN_UNAVAILABLE || rc == QN_DEADLINE_EXCEEDED || rc == QN_INTERNAL ||
                rc == QN_RESOURCE_EXHAUSTED)
                qn_log_warn(NULL, "cannot download the model version; retrying later",
                            "{s:s, s:I, s:s}", "model", m->name, "version", (json_int_t)want,
                            "error", err.msg);
            else
                refuse(s, m, want, "download", &err);
            goto out;
        }
        v = version_load(s, dir, want, &reason, &err);
    }
    if (!v) {
        rm_tree(dir); /* never left for a restart to pick up; gone before the refusal shows */
        refuse(s, m, want, reason, &err);
        goto out;
    }
    install(s, m, v, "registry");
    if (span)
        qn_span_attr_int(span, "quern.version", want);
out:
    free(dir);
    free(mpath);
}

static void follow_one(serve *s, serve_model *m)
{
    pthread_mutex_lock(&m->mu);
    qn_trace_ctx parent = m->promo_trace;
    int have = m->has_promo_trace;
    m->has_promo_trace = 0;
    pthread_mutex_unlock(&m->mu);
    if (!have) {
        follow_one_in(s, m, NULL);
        return;
    }
    qn_span span;
    qn_span_start(&span, "serve follow alias", QN_SPAN_INTERNAL, &parent);
    qn_span_attr_str(&span, "quern.model", m->name);
    qn_span_attr_str(&span, "quern.alias", m->alias);
    follow_one_in(s, m, &span);
    qn_span_end(&span);
}

void serve_model_follow(serve *s, serve_model *m)
{
    follow_one(s, m);
}

/* Without --models: a slot for every model whose last good version is in
 * the cache, loaded from it, so serve serves them while the registry is
 * down. Those that load count toward readiness. */
static void load_cached_models(serve *s)
{
    DIR *d = opendir(s->cache_dir);
    struct dirent *e;
    size_t loaded = 0;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char *path = NULL;
        qn_err err;
        if (qn_name_check("model", e->d_name, &err) < 0 ||
            asprintf(&path, "%s/%s/last_good.json", s->cache_dir, e->d_name) < 0)
            continue;
        int cached = access(path, F_OK) == 0;
        free(path);
        serve_model *m = cached ? serve_model_add(s, e->d_name, "production") : NULL;
        if (!m)
            continue;
        load_from_cache(s, m);
        pthread_mutex_lock(&m->mu);
        if (m->cur) {
            m->required = 1;
            loaded++;
        }
        pthread_mutex_unlock(&m->mu);
    }
    if (d)
        closedir(d);
    /* Ready on the cache only once every cached model had its turn: marked
     * inside the loop, /readyz could answer between two of them with the
     * later ones not even added. */
    if (loaded)
        atomic_store(&s->synced, 1);
}

/* Without --models: reads every page of GET /v1/models and adds a slot for
 * each model that has a production alias. The first complete read makes
 * those models required for readiness and the service able to turn ready
 * (with zero models when none is promoted yet). */
static void list_registry(serve *s)
{
    char path[1024] = "/v1/models?limit=100";
    int first = !s->listed;
    serve_model *found[SERVE_MAX_MODELS];
    size_t nfound = 0;
    for (int page = 0; page < 10000; page++) {
        json_t *doc = NULL;
        qn_err err;
        if (qn_client_json(s->registry, "GET", path, NULL, NULL, &doc, &err) < 0) {
            qn_log(page ? QN_LOG_WARN : QN_LOG_DEBUG, NULL,
                   "cannot list the registry's models; retrying at the next poll", "{s:s}",
                   "error", err.msg);
            return;
        }
        size_t i;
        json_t *mj;
        json_array_foreach(json_object_get(doc, "models"), i, mj) {
            const char *name = json_string_value(json_object_get(mj, "name"));
            json_t *pv = json_object_get(json_object_get(mj, "aliases"), "production");
            serve_model *m = name && json_is_integer(pv) ? serve_model_add(s, name, "production")
                                                         : NULL;
            if (m && nfound < SERVE_MAX_MODELS)
                found[nfound++] = m;
        }
        const char *tok = json_string_value(json_object_get(doc, "next_page_token"));
        int more = tok && *tok && strlen(tok) < sizeof path - 64;
        if (more)
            snprintf(path, sizeof path, "/v1/models?limit=100&page_token=%s", tok);
        json_decref(doc);
        if (!more)
            break;
    }
    if (!first)
        return;
    s->listed = 1;
    for (size_t i = 0; i < nfound; i++) {
        pthread_mutex_lock(&found[i]->mu);
        found[i]->required = 1;
        pthread_mutex_unlock(&found[i]->mu);
    }
    atomic_store(&s->synced, 1);
    qn_log_info(NULL, "following every model's production alias", "{s:I}", "models",
                (json_int_t)nfound);
}

static void *follower_main(void *arg)
{
    serve *s = arg;
    if (s->follow_all)
        load_cached_models(s);
    else
        for (size_t i = 0; i < s->nmodels; i++)
            load_from_cache(s, &s->models[i]);
    pthread_mutex_lock(&s->fmu);
    while (!s->stopping) {
        s->kick = 0;
        pthread_mutex_unlock(&s->fmu);
        if (s->follow_all)
            list_registry(s);
        for (size_t i = 0; i < s->nmodels; i++) {
            pthread_mutex_lock(&s->fmu);
            int stop = s->stopping;
            pthread_mutex_unlock(&s->fmu);
            if (stop)
                break;
            follow_one(s, &s->models[i]);
            serve_model *m = &s->models[i];
            serve_traffic_follow(s, m);
            pthread_mutex_lock(&m->mu);
            if (!m->cur)
                m->state = "unavailable";
            pthread_mutex_unlock(&m->mu);
        }
        pthread_mutex_lock(&s->fmu);
        if (s->stopping || s->kick)
            continue;
        /* Until the registry's list was read once (it may start after us),
         * retry every second rather than every poll: readiness waits on it. */
        long long wait = s->cfg->poll_ms;
        if (s->follow_all && !atomic_load(&s->synced) && wait > 1000)
            wait = 1000;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long ns = ts.tv_nsec + (wait % 1000) * 1000000LL;
        ts.tv_sec += wait / 1000 + ns / 1000000000LL;
        ts.tv_nsec = ns % 1000000000LL;
        while (!s->stopping && !s->kick)
            if (pthread_cond_timedwait(&s->fcv, &s->fmu, &ts) == ETIMEDOUT)
                break;
    }
    pthread_mutex_unlock(&s->fmu);
    return NULL;
}

static void kick(serve *s)
{
    pthread_mutex_lock(&s->fmu);
    s->kick = 1;
    pthread_cond_signal(&s->fcv);
    pthread_mutex_unlock(&s->fmu);
}

static int on_promoted(const qn_msg *msg, void *ud, qn_err *err)
{
    serve *s = ud;
    json_t *data = json_object_get(msg->event, "data");
    const char *model = json_string_value(json_object_get(data, "model"));
    const char *alias = json_string_value(json_object_get(data, "alias"));
    serve_model *m = model ? serve_model_find(s, model) : NULL;
    /* A traffic policy changed, or another alias of a served model moved
     * (its traffic policy may route to it): the next round reads them. */
    if (m && (strcmp(msg->topic, "quern.traffic.changed") == 0 || (alias && strcmp(alias, m->alias) != 0))) {
        qn_log_info(NULL, "traffic change received", "{s:s, s:s}", "model", model, "event", msg->topic);
        kick(s);
        return 0;
    }
    /* Without --models, a model first promoted after start gets its slot
     * here, and the kick below loads it now rather than at the next poll. */
    if (!m && model && s->follow_all && alias && strcmp(alias, "production") == 0)
        m = serve_model_add(s, model, "production");
    if (m && alias && strcmp(alias, m->alias) == 0) {
        qn_log_info(NULL, "promotion received", "{s:s, s:s, s:O}", "model", model, "alias", alias,
                    "version", json_object_get(data, "version"));
        const qn_trace_ctx *tc = qn_subscriber_trace(msg);
        if (tc) {
            pthread_mutex_lock(&m->mu);
            m->promo_trace = *tc;
            m->has_promo_trace = 1;
            pthread_mutex_unlock(&m->mu);
        }
        kick(s);
    }
    return 0;
}

/* The consumer group must be unique per replica: every replica must see every
 * promotion. --instance, else an id kept in the data directory. */
static int instance_id(serve *s, qn_err *err)
{
    if (s->cfg->instance && *s->cfg->instance) {
        snprintf(s->instance, sizeof s->instance, "%s", s->cfg->instance);
        return 0;
    }
    char *path = NULL;
    if (asprintf(&path, "%s/instance-id", s->cfg->common.data) < 0)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    FILE *f = fopen(path, "r");
    char id[QN_UUID_LEN + 2] = "";
    if (f) {
        if (!fgets(id, sizeof id, f))
            id[0] = '\0';
        fclose(f);
        id[strcspn(id, "\n")] = '\0';
    }
    int rc = 0;
    if (strlen(id) != QN_UUID_LEN) {
        qn_uuid4(id);
        char line[QN_UUID_LEN + 8];
        snprintf(line, sizeof line, "%.36s\n", id);
        rc = write_atomic(path, line, err);
    }
    free(path);
    snprintf(s->instance, sizeof s->instance, "%.36s", id);
    return rc;
}

int serve_models_start(serve *s, qn_err *err)
{
    int rc;
    if ((rc = qn_mkdir_p(s->cache_dir, err)) < 0)
        return rc;
    for (size_t i = 0; i < s->nmodels; i++) {
        char *d = model_dir(s, &s->models[i]);
        rc = d ? qn_mkdir_p(d, err) : qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        free(d);
        if (rc < 0)
            return rc;
    }
    if ((rc = instance_id(s, err)) < 0)
        return rc;
    char group[128];
    snprintf(group, sizeof group, "serve-%.56s", s->instance);
    for (char *p = group; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_'))
            *p = '-';
    static const char *const topics[] = {"quern.model.promoted", "quern.traffic.changed", NULL};
    s->sub = qn_subscriber_start(s->bus, group, topics, NULL, on_promoted, s, err);
    if (!s->sub)
        return err->code;
    pthread_mutex_init(&s->fmu, NULL);
    pthread_cond_init(&s->fcv, NULL);
    if (pthread_create(&s->follower, NULL, follower_main, s) != 0) {
        qn_subscriber_stop(s->sub);
        s->sub = NULL;
        return qn_err_set(err, QN_INTERNAL, "cannot start the follower thread");
    }
    s->follower_started = 1;
    qn_log_info(NULL, "following the registry", "{s:s, s:s, s:I}", "registry",
                s->cfg->common.registry, "group", group, "poll_ms", (json_int_t)s->cfg->poll_ms);
    return 0;
}

void serve_models_stop(serve *s)
{
    if (s->sub)
        qn_subscriber_stop(s->sub);
    s->sub = NULL;
    if (s->follower_started) {
        pthread_mutex_lock(&s->fmu);
        s->stopping = 1;
        pthread_cond_signal(&s->fcv);
        pthread_mutex_unlock(&s->fmu);
        pthread_join(s->follower, NULL);
        s->follower_started = 0;
    }
    serve_traffic_stop(s);
    for (size_t i = 0; i < s->nmodels; i++) {
        serve_model *m = &s->models[i];
        serve_release(m->cur);
        m->cur = NULL;
        json_decref(m->last_refusal);
        free(m->name);
        free(m->alias);
        serve_batcher_free(m->batcher);
        pthread_mutex_destroy(&m->mu);
    }
    s->nmodels = 0;
    pthread_mutex_destroy(&s->amu);
}

int serve_all_ready(serve *s)
{
    if (s->follow_all && !atomic_load(&s->synced))
        return 0;
    for (size_t i = 0; i < s->nmodels; i++) {
        serve_model *m = &s->models[i];
        pthread_mutex_lock(&m->mu);
        /* Without --models one bad version (refused, nothing cached) does not
         * hold every other model's traffic back. */
        int ok = !m->required || m->cur != NULL || (s->follow_all && m->refused);
        pthread_mutex_unlock(&m->mu);
        if (!ok)
            return 0;
    }
    return 1;
}

json_t *serve_model_status(serve_model *m)
{
    pthread_mutex_lock(&m->mu);
    json_t *o = json_pack("{s:s, s:s, s:o, s:o, s:o, s:O}", "alias", m->alias, "state", m->state,
                          "version", m->cur ? json_string(m->cur->vstr) : json_null(),
                          "alias_version", m->target ? json_integer(m->target) : json_null(),
                          "source", m->source ? json_string(m->source) : json_null(),
                          "last_refusal", m->last_refusal ? m->last_refusal : json_null());
    pthread_mutex_unlock(&m->mu);
    return o;
}
