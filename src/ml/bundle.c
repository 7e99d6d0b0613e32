/*
 * bundle.c - model bundles: manifest validation, canonical digests, and the
 * directory reader and writer (see bundle.h).
 *
 * The manifest is outside input (it arrives from the registry, possibly from
 * another machine), so every field is checked before any is used, and file
 * names are restricted to a small alphabet so that none can leave the
 * bundle's directory. The writer validates what it wrote with the same parser,
 * so a bundle it writes is one the reader accepts.
 */
#include "ml/bundle.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/digest.h"
#include "core/json.h"
#include "core/validate.h"

#define MAX_TENSORS 1024
#define MAX_FILES 4096
#define MAX_NAME 255

struct qml_manifest {
    json_t *root;
    const char *kind;
    qml_tensor_spec *inputs, *outputs;
    size_t n_inputs, n_outputs;
    const char **files;  /* names, in the document's order */
    size_t n_files;
};

static const char *const kinds[] = {"als", "logistic", "linear", "xgboost"};
static const char *const datatypes[] = {"BOOL",  "UINT8", "UINT16", "UINT32", "UINT64",
                                        "INT8",  "INT16", "INT32",  "INT64",  "FP16",
                                        "FP32",  "FP64",  "BYTES"};
static const char *const fields[] = {"format", "kind",    "inputs",  "outputs", "transforms",
                                     "files",  "profile", "dataset", "params",  "metrics"};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static int in_list(const char *s, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, list[i]) == 0)
            return 1;
    return 0;
}

/* A file name that can only ever mean a file directly inside the bundle. */
static int check_file_name(const char *name, qn_err *err)
{
    size_t n = strlen(name);
    if (n == 0 || n > MAX_NAME)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "manifest files: a file name must be 1 to %d characters", MAX_NAME);
    if (strchr(name, '/') || strstr(name, ".."))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "manifest files: \"%.64s\" is a path, not a file name", name);
    if (name[0] == '.')
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "manifest files: \"%.64s\" starts with '.'", name);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "manifest files: \"%.64s\" has a character outside [A-Za-z0-9._-]",
                              name);
    }
    if (strcmp(name, "manifest.json") == 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "manifest files: \"manifest.json\" is reserved for the manifest");
    return 0;
}

static int check_digest(const char *what, const json_t *v, qn_err *err)
{
    char hex[QN_SHA256_HEX + 1];
    if (!json_is_string(v))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest %s: the digest is not a string",
                          what);
    if (qn_digest_parse(json_string_value(v), hex, err) < 0)
        return qn_err_wrap(err, "manifest %s", what);
    return 0;
}

static int parse_tensors(const json_t *arr, const char *field, qml_tensor_spec **out,
                         size_t *n_out, qn_err *err)
{
    if (!json_is_array(arr))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest %s: missing or not an array",
                          field);
    size_t n = json_array_size(arr);
    if (n == 0 || n > MAX_TENSORS)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest %s: needs 1 to %d entries, has %zu",
                          field, MAX_TENSORS, n);
    qml_tensor_spec *t = calloc(n, sizeof *t);
    if (!t)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(arr, i);
        if (!json_is_object(e)) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "manifest %s[%zu]: not an object", field, i);
            goto out;
        }
        const char *key;
        const json_t *v;
        json_object_foreach((json_t *)e, key, v) {
            if (strcmp(key, "name") && strcmp(key, "datatype") && strcmp(key, "shape")) {
                rc = qn_err_set(err, QN_INVALID_ARGUMENT, "manifest %s[%zu]: unknown field \"%.64s\"",
                                field, i, key);
                goto out;
            }
        }
        const json_t *name = json_object_get(e, "name");
        const json_t *dt = json_object_get(e, "datatype");
        const json_t *shape = json_object_get(e, "shape");
        qn_err ne;
        if (!json_is_string(name) || strlen(json_string_value(name)) != json_string_length(name) ||
            qn_colname_check("input", json_string_value(name), &ne) < 0) {
            /* Inputs are columns: named as written (core/validate.h's column-name rule). */
            rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                            "manifest %s[%zu]: name must be a column name of 1 to %d bytes of UTF-8 "
                            "without control characters", field, i, QN_COLNAME_MAX);
            goto out;
        }
        t[i].name = json_string_value(name);
        for (size_t k = 0; k < i; k++)
            if (strcmp(t[k].name, t[i].name) == 0) {
                rc = qn_err_set(err, QN_INVALID_ARGUMENT, "manifest %s: name \"%s\" appears twice",
                                field, t[i].name);
                goto out;
            }
        if (!json_is_string(dt) || !in_list(json_string_value(dt), datatypes, COUNT(datatypes))) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                            "manifest %s \"%s\": datatype %.32s%s%s is not an Open Inference "
                            "Protocol type (BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, "
                            "BYTES)", field, t[i].name, json_is_string(dt) ? "\"" : "",
                            json_is_string(dt) ? json_string_value(dt) : "(not a string)",
                            json_is_string(dt) ? "\"" : "");
            goto out;
        }
        t[i].datatype = json_string_value(dt);
        size_t nd = json_array_size(shape);
        if (!json_is_array(shape) || nd == 0 || nd > QML_TENSOR_MAX_DIMS) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                            "manifest %s \"%s\": shape must be an array of 1 to %d integers", field,
                            t[i].name, QML_TENSOR_MAX_DIMS);
            goto out;
        }
        t[i].ndim = (int)nd;
        for (size_t d = 0; d < nd; d++) {
            const json_t *dim = json_array_get(shape, d);
            json_int_t v2 = json_is_integer(dim) ? json_integer_value(dim) : 0;
            if (!json_is_integer(dim) || (v2 < 1 && !(v2 == -1 && d == 0))) {
                rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                                "manifest %s \"%s\": shape[%zu] must be an integer >= 1 "
                                "(or -1 for the batch dimension, first)", field, t[i].name, d);
                goto out;
            }
            t[i].shape[d] = (int64_t)v2;
        }
    }
out:
    if (rc < 0) {
        free(t);
        return rc;
    }
    *out = t;
    *n_out = n;
    return 0;
}

static int validate(qml_manifest *m, qn_err *err)
{
    json_t *root = m->root;
    const char *key;
    json_t *v;
    if (!json_is_object(root))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest: not a JSON object");
    json_object_foreach(root, key, v) {
        if (!in_list(key, fields, COUNT(fields)))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest: unknown field \"%.64s\"", key);
    }
    const json_t *format = json_object_get(root, "format");
    if (!json_is_string(format))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest format: missing or not a string");
    if (strcmp(json_string_value(format), QML_BUNDLE_FORMAT) != 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "manifest format \"%.64s\" is not supported (this build reads %s)",
                          json_string_value(format), QML_BUNDLE_FORMAT);
    const json_t *kind = json_object_get(root, "kind");
    if (!json_is_string(kind))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest kind: missing or not a string");
    if (!in_list(json_string_value(kind), kinds, COUNT(kinds)))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "manifest kind: \"%.32s\" is not one of als, logistic, linear, xgboost",
                          json_string_value(kind));
    m->kind = json_string_value(kind);

    int rc;
    if ((rc = parse_tensors(json_object_get(root, "inputs"), "inputs", &m->inputs, &m->n_inputs,
                            err)) < 0 ||
        (rc = parse_tensors(json_object_get(root, "outputs"), "outputs", &m->outputs,
                            &m->n_outputs, err)) < 0)
        return rc;

    for (size_t i = 0; i < 3; i++) {
        const char *f = (const char *[]){"transforms", "params", "metrics"}[i];
        const json_t *o = json_object_get(root, f);
        if (o && !json_is_object(o))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest %s: not an object", f);
    }
    json_object_foreach(json_object_get(root, "metrics"), key, v) {
        if (!json_is_number(v))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest metrics \"%.64s\": not a number",
                              key);
    }

    const json_t *files = json_object_get(root, "files");
    if (!json_is_object(files))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest files: missing or not an object");
    m->n_files = json_object_size(files);
    if (m->n_files > MAX_FILES)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest files: %zu files, the limit is %d",
                          m->n_files, MAX_FILES);
    m->files = calloc(m->n_files ? m->n_files : 1, sizeof *m->files);
    if (!m->files)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    size_t i = 0;
    json_object_foreach((json_t *)files, key, v) {
        if ((rc = check_file_name(key, err)) < 0)
            return rc;
        char what[MAX_NAME + 32];
        snprintf(what, sizeof what, "files \"%s\"", key);
        if ((rc = check_digest(what, v, err)) < 0)
            return rc;
        m->files[i++] = key;
    }

    const json_t *profile = json_object_get(root, "profile");
    if (profile && (rc = check_digest("profile", profile, err)) < 0)
        return rc;
    const json_t *ds = json_object_get(root, "dataset");
    if (ds) {
        const json_t *name = json_object_get(ds, "name"), *ver = json_object_get(ds, "version");
        if (!json_is_object(ds) || json_object_size(ds) != 2 || !json_is_string(name) ||
            json_string_length(name) == 0 || !json_is_integer(ver) || json_integer_value(ver) < 1)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "manifest dataset: must be {\"name\": a non-empty string, "
                              "\"version\": an integer >= 1}");
    }
    return 0;
}

int qml_manifest_parse(const void *buf, size_t len, qml_manifest **out, qn_err *err)
{
    if (len > QML_MANIFEST_MAX)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest: %zu bytes is over the %zu limit",
                          len, QML_MANIFEST_MAX);
    qml_manifest *m = calloc(1, sizeof *m);
    if (!m)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    json_error_t jerr;
    m->root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    int rc;
    if (!m->root)
        rc = qn_err_set(err, qn_json_load_code(&jerr), "manifest: invalid JSON at line %d column %d: %s",
                        jerr.line, jerr.column, jerr.text);
    else
        rc = validate(m, err);
    if (rc < 0) {
        qml_manifest_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void qml_manifest_free(qml_manifest *m)
{
    if (!m)
        return;
    free(m->inputs);
    free(m->outputs);
    free(m->files);
    json_decref(m->root);
    free(m);
}

const char *qml_manifest_kind(const qml_manifest *m) { return m->kind; }
size_t qml_manifest_n_inputs(const qml_manifest *m) { return m->n_inputs; }
size_t qml_manifest_n_outputs(const qml_manifest *m) { return m->n_outputs; }
size_t qml_manifest_n_files(const qml_manifest *m) { return m->n_files; }
const json_t *qml_manifest_json(const qml_manifest *m) { return m->root; }

const qml_tensor_spec *qml_manifest_input(const qml_manifest *m, size_t i)
{
    return i < m->n_inputs ? &m->inputs[i] : NULL;
}

const qml_tensor_spec *qml_manifest_output(const qml_manifest *m, size_t i)
{
    return i < m->n_outputs ? &m->outputs[i] : NULL;
}

const char *qml_manifest_file_name(const qml_manifest *m, size_t i)
{
    return i < m->n_files ? m->files[i] : NULL;
}

const char *qml_manifest_file_digest(const qml_manifest *m, const char *name)
{
    return json_string_value(json_object_get(json_object_get(m->root, "files"), name));
}

const json_t *qml_manifest_get(const qml_manifest *m, const char *field)
{
    return json_object_get(m->root, field);
}

static int canonical(const json_t *root, char **out, size_t *len, qn_err *err)
{
    char *s = qn_json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    if (!s)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory encoding the manifest");
    *out = s;
    *len = strlen(s);
    return 0;
}

int qml_manifest_canonical(const qml_manifest *m, char **out, size_t *len, qn_err *err)
{
    return canonical(m->root, out, len, err);
}

int qml_manifest_digest(const qml_manifest *m, char out[QML_DIGEST_STR], qn_err *err)
{
    char *s = NULL;
    size_t len = 0;
    int rc = canonical(m->root, &s, &len, err);
    if (rc < 0)
        return rc;
    char hex[QN_SHA256_HEX + 1];
    qn_sha256_buf(s, len, hex);
    snprintf(out, QML_DIGEST_STR, "sha256:%s", hex);
    free(s);
    return 0;
}

/* ---- reader ------------------------------------------------------------------ */

struct qml_bundle {
    char *dir;
    qml_manifest *m;
    char **paths;  /* dir/name per manifest file, same order */
};

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Reads a whole regular file of at most max bytes. */
static int read_bounded(const char *path, size_t max, char **out, size_t *len, qn_err *err)
{
    int rc = 0;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return qn_err_set(err, errno == ENOENT ? QN_NOT_FOUND : QN_INTERNAL, "cannot open %s: %s",
                          path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "%s: not a regular file", path);
        goto out;
    }
    if ((size_t)st.st_size > max) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "%s: %lld bytes is over the %zu limit", path,
                        (long long)st.st_size, max);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory reading %s", path);
        goto out;
    }
    *len = fread(buf, 1, (size_t)st.st_size, f);
    if (*len != (size_t)st.st_size) {
        rc = qn_err_set(err, QN_INTERNAL, "cannot read %s", path);
        goto out;
    }
    *out = buf;
    buf = NULL;
out:
    free(buf);
    fclose(f);
    return rc;
}

int qml_bundle_open(const char *dir, qml_bundle **out, qn_err *err)
{
    int rc = 0;
    char *mpath = NULL, *text = NULL;
    size_t len = 0;
    qml_bundle *b = calloc(1, sizeof *b);
    if (!b || !(b->dir = strdup(dir)) || !(mpath = join(dir, "manifest.json"))) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if ((rc = read_bounded(mpath, QML_MANIFEST_MAX, &text, &len, err)) < 0)
        goto out;
    if ((rc = qml_manifest_parse(text, len, &b->m, err)) < 0) {
        qn_err_wrap(err, "bundle %s", dir);
        goto out;
    }
    size_t n = qml_manifest_n_files(b->m);
    b->paths = calloc(n ? n : 1, sizeof *b->paths);
    if (!b->paths) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = qml_manifest_file_name(b->m, i);
        if (!(b->paths[i] = join(dir, name))) {
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        struct stat st;
        if (lstat(b->paths[i], &st) != 0) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                            "bundle %s: file \"%s\" listed in the manifest is missing (%s)", dir,
                            name, strerror(errno));
            goto out;
        }
        if (!S_ISREG(st.st_mode)) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                            "bundle %s: file \"%s\" is not a regular file", dir, name);
            goto out;
        }
        char hex[QN_SHA256_HEX + 1];
        if ((rc = qn_sha256_file(b->paths[i], hex, err)) < 0)
            goto out;
        const char *want = qml_manifest_file_digest(b->m, name) + 7;
        if (strcmp(hex, want) != 0) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                            "bundle %s: file \"%s\" has digest sha256:%s but the manifest lists "
                            "sha256:%s", dir, name, hex, want);
            goto out;
        }
    }
out:
    free(mpath);
    free(text);
    if (rc < 0) {
        qml_bundle_close(b);
        return rc;
    }
    *out = b;
    return 0;
}

const qml_manifest *qml_bundle_manifest(const qml_bundle *b) { return b->m; }
const char *qml_bundle_dir(const qml_bundle *b) { return b->dir; }

const char *qml_bundle_file_path(const qml_bundle *b, const char *name)
{
    for (size_t i = 0; i < qml_manifest_n_files(b->m); i++)
        if (strcmp(qml_manifest_file_name(b->m, i), name) == 0)
            return b->paths[i];
    return NULL;
}

void qml_bundle_close(qml_bundle *b)
{
    if (!b)
        return;
    if (b->paths)
        for (size_t i = 0; i < qml_manifest_n_files(b->m); i++)
            free(b->paths[i]);
    free(b->paths);
    qml_manifest_free(b->m);
    free(b->dir);
    free(b);
}

/* ---- writer -------------------------------------------------------------------- */

struct qml_bundle_writer {
    char *dir;
    json_t *doc;
};

int qml_bundle_writer_open(const char *dir, qml_bundle_writer **out, qn_err *err)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return qn_err_set(err, QN_INTERNAL, "cannot create bundle directory %s: %s", dir,
                          strerror(errno));
    char *mpath = join(dir, "manifest.json");
    if (!mpath)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    int exists = access(mpath, F_OK) == 0;
    free(mpath);
    if (exists)
        return qn_err_set(err, QN_ALREADY_EXISTS, "bundle %s already has a manifest.json", dir);
    qml_bundle_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->dir = strdup(dir)) || !(w->doc = json_pack("{s:s,s:[],s:[],s:{},s:{},s:{}}",
                                                             "format", QML_BUNDLE_FORMAT, "inputs",
                                                             "outputs", "transforms", "files",
                                                             "params"))) {
        qml_bundle_writer_free(w);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    *out = w;
    return 0;
}

void qml_bundle_writer_free(qml_bundle_writer *w)
{
    if (!w)
        return;
    json_decref(w->doc);
    free(w->dir);
    free(w);
}

static int oom(qn_err *err) { return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory"); }

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Writes name in the bundle directory from either a buffer or src (streamed),
 * through a temporary file renamed into place, hashing as it goes. */
static int put_file(qml_bundle_writer *w, const char *name, const void *data, size_t len,
                    FILE *src, char hex[QN_SHA256_HEX + 1], qn_err *err)
{
    int rc = 0, fd = -1;
    char *path = join(w->dir, name), *tmp = NULL;
    qn_sha256 *h = qn_sha256_new();
    if (!path || !h || !(tmp = malloc(strlen(path) + 16))) {
        rc = oom(err);
        goto out;
    }
    sprintf(tmp, "%s.tmp.XXXXXX", path);
    if ((fd = mkstemp(tmp)) < 0) {
        rc = qn_err_set(err, QN_INTERNAL, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    if (src) {
        char buf[1 << 16];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, src)) > 0) {
            qn_sha256_update(h, buf, n);
            if (write_all(fd, buf, n) < 0)
                goto io;
        }
        if (ferror(src)) {
            rc = qn_err_set(err, QN_INTERNAL, "cannot read the source of %s", name);
            goto out;
        }
    } else {
        qn_sha256_update(h, data, len);
        if (write_all(fd, data, len) < 0)
            goto io;
    }
    if (fsync(fd) != 0)
        goto io;
    int c = close(fd);
    fd = -1;
    if (c != 0 || rename(tmp, path) != 0)
        goto io;
    free(tmp);
    tmp = NULL;
    qn_sha256_final(h, hex);
    goto out;
io:
    rc = qn_err_set(err, QN_INTERNAL, "cannot write %s: %s", path, strerror(errno));
out:
    if (fd >= 0)
        close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    qn_sha256_free(h);
    free(path);
    return rc;
}

static int add_file(qml_bundle_writer *w, const char *name, const void *data, size_t len,
                    const char *src_path, qn_err *err)
{
    int rc = check_file_name(name, err);
    if (rc < 0)
        return rc;
    json_t *files = json_object_get(w->doc, "files");
    if (json_object_get(files, name))
        return qn_err_set(err, QN_ALREADY_EXISTS, "bundle %s: file \"%s\" was already added",
                          w->dir, name);
    FILE *src = NULL;
    if (src_path && !(src = fopen(src_path, "rb")))
        return qn_err_set(err, errno == ENOENT ? QN_NOT_FOUND : QN_INTERNAL, "cannot open %s: %s",
                          src_path, strerror(errno));
    char hex[QN_SHA256_HEX + 1], digest[QML_DIGEST_STR];
    rc = put_file(w, name, data, len, src, hex, err);
    if (src)
        fclose(src);
    if (rc < 0)
        return rc;
    snprintf(digest, sizeof digest, "sha256:%s", hex);
    if (json_object_set_new(files, name, json_string(digest)) != 0)
        return oom(err);
    return 0;
}

int qml_bundle_writer_write_file(qml_bundle_writer *w, const char *name, const void *data,
                                 size_t len, qn_err *err)
{
    return add_file(w, name, data ? data : "", len, NULL, err);
}

int qml_bundle_writer_copy_file(qml_bundle_writer *w, const char *name, const char *src_path,
                                qn_err *err)
{
    return add_file(w, name, NULL, 0, src_path, err);
}

int qml_bundle_writer_set_kind(qml_bundle_writer *w, const char *kind, qn_err *err)
{
    if (!kind || !in_list(kind, kinds, COUNT(kinds)))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "bundle kind \"%s\" is not one of als, logistic, linear, xgboost",
                          kind ? kind : "(null)");
    return json_object_set_new(w->doc, "kind", json_string(kind)) ? oom(err) : 0;
}

static int add_tensor(qml_bundle_writer *w, const char *field, const char *name,
                      const char *datatype, const int64_t *shape, int ndim, qn_err *err)
{
    if (ndim < 0 || ndim > QML_TENSOR_MAX_DIMS)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "bundle %s \"%s\": %d dimensions", field,
                          name ? name : "", ndim);
    json_t *dims = json_array();
    for (int d = 0; dims && d < ndim; d++)
        if (json_array_append_new(dims, json_integer(shape[d])) != 0) {
            json_decref(dims);
            dims = NULL;
        }
    json_t *t = dims ? json_pack("{s:s?,s:s?,s:o}", "name", name, "datatype", datatype, "shape",
                                 dims)
                     : NULL;
    if (!t || json_array_append_new(json_object_get(w->doc, field), t) != 0)
        return oom(err);
    return 0;  /* checked in full by finish */
}

int qml_bundle_writer_add_input(qml_bundle_writer *w, const char *name, const char *datatype,
                                const int64_t *shape, int ndim, qn_err *err)
{
    return add_tensor(w, "inputs", name, datatype, shape, ndim, err);
}

int qml_bundle_writer_add_output(qml_bundle_writer *w, const char *name, const char *datatype,
                                 const int64_t *shape, int ndim, qn_err *err)
{
    return add_tensor(w, "outputs", name, datatype, shape, ndim, err);
}

int qml_bundle_writer_set_json(qml_bundle_writer *w, const char *field, const json_t *value,
                               qn_err *err)
{
    if (!field || (strcmp(field, "transforms") && strcmp(field, "params") &&
                   strcmp(field, "metrics")))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "bundle field \"%s\" is not transforms, params or metrics",
                          field ? field : "(null)");
    if (!json_is_object(value))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "bundle %s: not a JSON object", field);
    json_t *copy = json_deep_copy(value);
    return !copy || json_object_set_new(w->doc, field, copy) ? oom(err) : 0;
}

int qml_bundle_writer_set_profile(qml_bundle_writer *w, const char *digest, qn_err *err)
{
    char hex[QN_SHA256_HEX + 1];
    if (qn_digest_parse(digest ? digest : "", hex, err) < 0)
        return qn_err_wrap(err, "bundle profile");
    return json_object_set_new(w->doc, "profile", json_string(digest)) ? oom(err) : 0;
}

int qml_bundle_writer_set_dataset(qml_bundle_writer *w, const char *name, int64_t version,
                                  qn_err *err)
{
    if (!name || !*name || version < 1)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "bundle dataset: needs a name and a version >= 1");
    json_t *d = json_pack("{s:s,s:I}", "name", name, "version", (json_int_t)version);
    return !d || json_object_set_new(w->doc, "dataset", d) ? oom(err) : 0;
}

int qml_bundle_writer_finish(qml_bundle_writer *w, char digest[QML_DIGEST_STR], qn_err *err)
{
    char *text = NULL, *tmp = NULL, *path = NULL;
    size_t len = 0;
    qml_manifest *m = NULL;
    int fd = -1;
    int rc = canonical(w->doc, &text, &len, err);
    if (rc < 0)
        return rc;
    if ((rc = qml_manifest_parse(text, len, &m, err)) < 0) {
        qn_err_wrap(err, "bundle %s", w->dir);
        goto out;
    }
    if (!(path = join(w->dir, "manifest.json")) || !(tmp = malloc(strlen(path) + 16))) {
        rc = oom(err);
        goto out;
    }
    sprintf(tmp, "%s.tmp.XXXXXX", path);
    if ((fd = mkstemp(tmp)) < 0) {
        rc = qn_err_set(err, QN_INTERNAL, "cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        tmp = NULL;
        goto out;
    }
    /* 0644 like the data files: mkstemp makes it private. */
    if (fchmod(fd, 0644) != 0 || write_all(fd, text, len) < 0 || fsync(fd) != 0) {
        rc = qn_err_set(err, QN_INTERNAL, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    int c = close(fd);
    fd = -1;
    if (c != 0 || rename(tmp, path) != 0) {
        rc = qn_err_set(err, QN_INTERNAL, "cannot write %s: %s", path, strerror(errno));
        goto out;
    }
    free(tmp);
    tmp = NULL;
    sync_dir(w->dir);
    if (digest) {
        char hex[QN_SHA256_HEX + 1];
        qn_sha256_buf(text, len, hex);
        snprintf(digest, QML_DIGEST_STR, "sha256:%s", hex);
    }
out:
    if (fd >= 0)
        close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(path);
    qml_manifest_free(m);
    free(text);
    return rc;
}
