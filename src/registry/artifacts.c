/*
 * artifacts.c - MLflow's artifacts proxy (mlflow_artifacts.proto) over the
 * registry's content-addressed blobs.
 *
 * PUT /api/2.0/mlflow-artifacts/artifacts/<path> streams the body into a
 * temp file under <data>/blobs/tmp while hashing it, then moves it into the
 * blob store under its SHA-256 (fsync, rename, fsync of the directory, as
 * blobs.c does) and points the path at that digest in the artifacts table
 * (path -> digest, size). GET of the same URL streams the blob back; GET
 * /api/2.0/mlflow-artifacts/artifacts?path=DIR lists one level of DIR the
 * way MLflow's server does (base names, is_dir, file_size). Identical files
 * share one blob; a path written twice points at the newest bytes. Bodies
 * have the blob routes' bound (--max-blob-size).
 *
 * The route table cannot match a variable number of segments, so main.c
 * lists the path templates /{p1} .. /{p1}/../{p16} (REG_ARTIFACT_ROUTES); the
 * handlers join the decoded segments back into the path.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/digest.h"
#include "core/json.h"
#include "core/log.h"
#include "core/service.h"
#include "core/trace.h"
#include "registry/mlflow_registry.h"
#include "registry/registry.h"

#define MAX_PATH_BYTES 1024

int reg_artifact_path_check(const char *path, qn_err *err)
{
    size_t n = strlen(path);
    if (n == 0 || n > MAX_PATH_BYTES)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "artifact path must be 1 to %d bytes", MAX_PATH_BYTES);
    if (path[0] == '/' || path[n - 1] == '/' || strstr(path, "//"))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "artifact path \"%.200s\" must be relative, without empty segments", path);
    for (const char *s = path; s && *s;) {
        const char *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
            return qn_err_set(err, QN_INVALID_ARGUMENT, "artifact path \"%.200s\" may not contain . or ..",
                              path);
        s = e ? e + 1 : NULL;
    }
    for (const unsigned char *p = (const unsigned char *)path; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '\\')
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "artifact path \"%.200s\" holds a control character or a backslash", path);
    return 0;
}

/* The artifact path of the request: its {p1}..{pN} segments joined by '/'
 * (in the request's arena). Answers 400 (MLflow's shape) and returns NULL
 * when it is not a safe relative path. */
static const char *req_artifact_path(qn_req *req, qn_res *res)
{
    char buf[MAX_PATH_BYTES + 2];
    size_t n = 0;
    qn_err err;
    for (int i = 1; i <= REG_ARTIFACT_DEPTH; i++) {
        char key[8];
        snprintf(key, sizeof key, "p%d", i);
        const char *seg = qn_req_param(req, key);
        if (!seg)
            break;
        size_t len = strlen(seg);
        if (n + len + 1 > MAX_PATH_BYTES || strchr(seg, '/')) {
            mlf_error(res, QN_INVALID_ARGUMENT, "artifact path is longer than %d bytes or holds an encoded '/'",
                      MAX_PATH_BYTES);
            return NULL;
        }
        if (n)
            buf[n++] = '/';
        memcpy(buf + n, seg, len);
        n += len;
    }
    buf[n] = '\0';
    if (reg_artifact_path_check(buf, &err) < 0) {
        mlf_error(res, err.code, "%s", err.msg);
        return NULL;
    }
    return qn_arena_strdup(qn_req_arena(req), buf);
}

int reg_artifact_put_chunk(qn_req *req, qn_res *res, const char *data, size_t len, void *ud)
{
    registry *r = ud;
    reg_upload *u = qn_req_state(req);
    int code;
    if (!u && !req_artifact_path(req, res))
        return -1;
    if (!u && !(u = reg_upload_of(req, r, &code))) {
        mlf_error(res, code, "%s",
                  code == QN_RESOURCE_EXHAUSTED ? "the registry is out of memory; retry later"
                                                : "the registry cannot store artifacts right now");
        return -1;
    }
    if (reg_upload_write(u, data, len) < 0) {
        qn_log_error(qn_req_trace_id(req), "artifact write failed", "{s:s}", "error", strerror(errno));
        mlf_error(res, QN_UNAVAILABLE, "the registry cannot store this artifact now (%s)",
                  errno == ENOSPC ? "disk full" : "write failed");
        return -1;
    }
    return 0;
}

int reg_artifact_index(qn_conn *c, const char *path, const char *digest, int64_t size, qn_err *err)
{
    qn_stmt *st = qn_prepare(c,
                             "INSERT INTO artifacts (path, digest, size, updated_at) VALUES (?, ?, ?, ?) "
                             "ON CONFLICT (path) DO UPDATE SET digest = excluded.digest, size = excluded.size, "
                             "updated_at = excluded.updated_at",
                             err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, path, -1);
    qn_bind_text(st, 2, digest, -1);
    qn_bind_int64(st, 3, size);
    qn_bind_int64(st, 4, qn_now_ms());
    int rc;
    while ((rc = qn_step(st, err)) == 1)
        ;
    return rc;
}

int reg_artifact_put(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    char hex[QN_SHA256_HEX + 1];
    qn_err err;
    const char *path = req_artifact_path(req, res);
    if (!path)
        return 0;
    reg_upload *u = qn_req_state(req);
    if (!u) { /* an empty body: an empty file */
        if (reg_artifact_put_chunk(req, res, "", 0, ud) < 0)
            return 0;
        u = qn_req_state(req);
    }
    reg_upload_digest(u, hex);
    if (reg_upload_commit(r, u, hex) < 0) {
        qn_log_error(qn_req_trace_id(req), "cannot commit artifact", "{s:s, s:s}", "path", path, "error",
                     strerror(errno));
        return mlf_error(res, QN_UNAVAILABLE, "the registry cannot store artifacts right now");
    }
    int64_t bytes = (int64_t)reg_upload_bytes(u);
    char *digest = qn_arena_printf(qn_req_arena(req), "sha256:%s", hex);
    qn_conn *c = reg_db_begin(r->db, QN_TX_WRITE, &err);
    int rc = c ? reg_artifact_index(c, path, digest, bytes, &err) : err.code;
    if (reg_db_end(r->db, c, rc, &err) < 0)
        return mlf_fail(req, res, &err);
    qn_log_info(qn_req_trace_id(req), "artifact stored", "{s:s, s:s, s:I}", "path", path, "digest", digest,
                "bytes", (json_int_t)bytes);
    return qn_res_json(res, 200, json_object());
}

int reg_artifact_lookup(qn_conn *c, const char *path, char digest[80], int64_t *size, qn_err *err)
{
    qn_stmt *st = qn_prepare(c, "SELECT digest, size FROM artifacts WHERE path = ?", err);
    if (!st)
        return err->code;
    qn_bind_text(st, 1, path, -1);
    int rc = qn_step(st, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return qn_err_set(err, QN_NOT_FOUND, "artifact \"%.300s\" does not exist", path);
    snprintf(digest, 80, "%s", qn_col_text(st, 0));
    if (size)
        *size = qn_col_int64(st, 1);
    while ((rc = qn_step(st, err)) == 1)
        ;
    return rc < 0 ? rc : 0;
}

int reg_artifact_get(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    char digest[80], file[PATH_MAX];
    const char *path = req_artifact_path(req, res);
    if (!path)
        return 0;
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? reg_artifact_lookup(c, path, digest, NULL, &err) : err.code;
    if (reg_db_end(r->db, c, rc, &err) < 0)
        return mlf_fail(req, res, &err);
    snprintf(file, sizeof file, "%s/%.2s/%s", r->blob_dir, digest + 7, digest + 7);
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0) {
        if (fd >= 0)
            close(fd);
        qn_log_error(qn_req_trace_id(req), "artifact blob missing", "{s:s, s:s}", "path", path, "digest", digest);
        return mlf_error(res, QN_INTERNAL, "artifact \"%.300s\" names blob %s, which cannot be read", path,
                         digest);
    }
    return qn_res_file(res, 200, "application/octet-stream", fd, 0, (uint64_t)sb.st_size);
}

int reg_artifact_list(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    qn_err err;
    const char *dir = qn_req_query(req, "path");
    if (dir && *dir) {
        while (*dir == '/') /* the client joins "" and a path with '/' */
            dir++;
        size_t n = strlen(dir);
        char *d = qn_arena_strdup(qn_req_arena(req), dir);
        while (n > 0 && d[n - 1] == '/')
            d[--n] = '\0';
        dir = d;
        if (n && reg_artifact_path_check(dir, &err) < 0)
            return mlf_error(res, err.code, "%s", err.msg);
    }
    size_t plen = dir ? strlen(dir) : 0;
    char *prefix = qn_arena_printf(qn_req_arena(req), "%s/", dir ? dir : "");
    json_t *files = json_array(), *dirs = json_object();
    qn_conn *c = reg_db_begin(r->db, QN_TX_READ, &err);
    int rc = c ? 0 : err.code;
    qn_stmt *st = c ? qn_prepare(c,
                                 "SELECT path, size FROM artifacts WHERE (? = 0 OR substr(path, 1, ?) = ?) "
                                 "ORDER BY path",
                                 &err)
                    : NULL;
    if (c && !st)
        rc = err.code;
    if (st) {
        qn_bind_int64(st, 1, (int64_t)plen);
        qn_bind_int64(st, 2, (int64_t)plen + 1);
        qn_bind_text(st, 3, prefix, -1);
        while ((rc = qn_step(st, &err)) == 1) {
            const char *rest = qn_col_text(st, 0) + (plen ? plen + 1 : 0);
            const char *slash = strchr(rest, '/');
            if (slash) {
                char *name = qn_arena_strndup(qn_req_arena(req), rest, (size_t)(slash - rest));
                if (!json_object_get(dirs, name)) {
                    json_object_set_new(dirs, name, json_true());
                    json_array_append_new(files, json_pack("{s:s, s:b}", "path", name, "is_dir", 1));
                }
            } else {
                json_array_append_new(files, json_pack("{s:s, s:b, s:I}", "path", rest, "is_dir", 0, "file_size",
                                                       (json_int_t)qn_col_int64(st, 1)));
            }
        }
    }
    json_decref(dirs);
    if (reg_db_end(r->db, c, rc < 0 ? rc : 0, &err) < 0) {
        json_decref(files);
        return mlf_fail(req, res, &err);
    }
    json_t *out = json_object();
    if (json_array_size(files))
        json_object_set_new(out, "files", files);
    else
        json_decref(files);
    return qn_res_json(res, 200, out);
}
