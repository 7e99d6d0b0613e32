/*
 * blobs.c - content-addressed blobs of quern-registry.
 *
 * A blob is a file named by the SHA-256 of its content:
 * <data>/blobs/sha256/<first 2 hex>/<64 hex>. An upload streams into a fresh
 * file under <data>/blobs/tmp while being hashed; only when the digest
 * matches the one in the URL is the file fsynced and renamed into place (and
 * the directory fsynced), so a blob is never visible half-written or wrong,
 * whatever happens to the process. Received pieces are gathered into 1 MiB
 * writes, and the disk writes start while the upload is still coming (every WRITEBACK_AT bytes a sync_file_range asks for
 * them), so the final fsync waits for the last part, not for the whole
 * blob; it alone is what makes the blob durable before the answer. Leftover temp files of killed uploads are
 * removed at start. The file system is the index: a blob exists exactly when
 * its file does, so there is no table to fall out of step with.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/digest.h"
#include "core/log.h"
#include "core/service.h"
#include "core/trace.h"
#include "core/validate.h"
#include "registry/registry.h"

/* Bytes received between two requests to start writing them to disk. */
#define WRITEBACK_AT (4u << 20)
/* The body comes in pieces of at most the server's 16 KiB connection
 * memory: they are gathered into writes of this size (a 36 MB blob is then
 * ~36 write calls, not ~4,500). */
#define GATHER (1u << 20)

struct reg_upload {
    int fd; /* -1 once the file is committed or removed */
    char tmp_path[PATH_MAX];
    qn_sha256 *hash;
    uint64_t bytes;    /* received */
    uint64_t written;  /* in the file */
    uint64_t queued;   /* bytes whose writeback was started */
    char *gather;      /* GATHER bytes (NULL: pieces written as they come) */
    size_t ngather;
};

static void upload_cleanup(void *p)
{
    reg_upload *u = p;
    if (u->fd >= 0) {
        close(u->fd);
        unlink(u->tmp_path); /* not renamed: the upload did not complete */
    }
    qn_sha256_free(u->hash);
    free(u->gather);
    free(u);
}

static void blob_path(const registry *r, const char *hex, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%.2s/%s", r->blob_dir, hex, hex);
}

int reg_blob_exists(const registry *r, const char *hex)
{
    char path[PATH_MAX];
    struct stat st;
    blob_path(r, hex, path, sizeof path);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int reg_blobs_init(registry *r, qn_err *err)
{
    if (qn_mkdir_p(r->blob_dir, err) < 0 || qn_mkdir_p(r->tmp_dir, err) < 0)
        return err->code;
    DIR *d = opendir(r->tmp_dir);
    if (!d)
        return qn_err_set(err, QN_INTERNAL, "cannot open %s: %s", r->tmp_dir, strerror(errno));
    struct dirent *e;
    int removed = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            removed++;
    }
    closedir(d);
    if (removed)
        qn_log_info(NULL, "removed unfinished uploads", "{s:i}", "count", removed);
    return 0;
}

/* The {digest} path parameter as 64 hex chars; answers 400 when malformed. */
static int digest_param(qn_req *req, qn_res *res, char hex[QN_SHA256_HEX + 1])
{
    qn_err err;
    if (qn_digest_parse(qn_req_param(req, "digest"), hex, &err) < 0) {
        qn_res_error(res, err.code, "%s", err.msg);
        return -1;
    }
    return 0;
}

reg_upload *reg_upload_of(qn_req *req, registry *r, int *code)
{
    reg_upload *u = qn_req_state(req);
    if (u)
        return u;
    char uuid[QN_UUID_LEN + 1];
    u = calloc(1, sizeof *u);
    if (!u || !(u->hash = qn_sha256_new())) {
        free(u);
        *code = QN_RESOURCE_EXHAUSTED;
        return NULL;
    }
    qn_uuid4(uuid);
    snprintf(u->tmp_path, sizeof u->tmp_path, "%s/%s", r->tmp_dir, uuid);
    u->fd = open(u->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (u->fd < 0) {
        qn_log_error(qn_req_trace_id(req), "cannot create upload file", "{s:s, s:s}", "path",
                     u->tmp_path, "error", strerror(errno));
        qn_sha256_free(u->hash);
        free(u);
        *code = QN_UNAVAILABLE;
        return NULL;
    }
    qn_req_set_state(req, u, upload_cleanup);
    return u;
}

static int write_all(reg_upload *u, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(u->fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        data += n;
        len -= (size_t)n;
        u->written += (uint64_t)n;
    }
#ifdef SYNC_FILE_RANGE_WRITE
    /* Starts the disk writes of what came so far (it does not wait for
     * them; a failure here is the final fsync's to report). */
    if (u->written - u->queued >= WRITEBACK_AT) {
        (void)sync_file_range(u->fd, (off64_t)u->queued, (off64_t)(u->written - u->queued), SYNC_FILE_RANGE_WRITE);
        u->queued = u->written;
    }
#endif
    return 0;
}

/* Writes what was gathered. 0 or -1 (errno set). */
static int gather_flush(reg_upload *u)
{
    size_t n = u->ngather;
    u->ngather = 0;
    return n ? write_all(u, u->gather, n) : 0;
}

int reg_upload_write(reg_upload *u, const char *data, size_t len)
{
    qn_sha256_update(u->hash, data, len);
    u->bytes += len;
    if (!u->gather && len < GATHER)
        u->gather = malloc(GATHER); /* without it, pieces are written as they come */
    if (!u->gather || len >= GATHER)
        return gather_flush(u) < 0 ? -1 : write_all(u, data, len);
    if (u->ngather + len > GATHER && gather_flush(u) < 0)
        return -1;
    memcpy(u->gather + u->ngather, data, len);
    u->ngather += len;
    return 0;
}

uint64_t reg_upload_bytes(const reg_upload *u)
{
    return u->bytes;
}

void reg_upload_digest(reg_upload *u, char hex[QN_SHA256_HEX + 1])
{
    qn_sha256_final(u->hash, hex);
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int reg_upload_commit(registry *r, reg_upload *u, const char *hex)
{
    char dir[PATH_MAX], final[PATH_MAX];
    qn_err err;
    snprintf(dir, sizeof dir, "%s/%.2s", r->blob_dir, hex);
    blob_path(r, hex, final, sizeof final);
    int created = !reg_blob_exists(r, hex);
    if (created) {
        if (gather_flush(u) < 0 || fsync(u->fd) < 0 || qn_mkdir_p(dir, &err) < 0 || rename(u->tmp_path, final) < 0 || fsync_dir(dir) < 0)
            return -1;
        qn_counter_add(r->blob_bytes, NULL, (double)u->bytes);
    } else {
        unlink(u->tmp_path);
    }
    close(u->fd);
    u->fd = -1; /* the blob is in place (or was): cleanup must not unlink */
    return created;
}

void reg_upload_discard(reg_upload *u)
{
    close(u->fd);
    unlink(u->tmp_path);
    u->fd = -1;
}

/* Answers an upload that could not begin (reg_upload_of's code). */
static int upload_refused(qn_res *res, int code)
{
    return qn_res_error(res, code, "%s",
                        code == QN_RESOURCE_EXHAUSTED ? "the registry is out of memory; retry later"
                                                      : "the registry cannot store blobs right now");
}

/* Takes one piece of an upload's body into req's upload u (begun at the
 * first piece when u is NULL): 0, or -1 with res answered. */
static int upload_piece(qn_req *req, qn_res *res, registry *r, reg_upload *u, const char *data, size_t len)
{
    int code;
    if (!u && !(u = reg_upload_of(req, r, &code))) {
        upload_refused(res, code);
        return -1;
    }
    if (reg_upload_write(u, data, len) < 0) {
        qn_log_error(qn_req_trace_id(req), "blob write failed", "{s:s}", "error", strerror(errno));
        qn_counter_add(r->blob_uploads, (const char *[]){"io_error"}, 1);
        qn_res_error(res, QN_UNAVAILABLE, "the registry cannot store this blob now (%s)",
                     errno == ENOSPC ? "disk full" : "write failed");
        return -1;
    }
    return 0;
}

int reg_blob_put_chunk(qn_req *req, qn_res *res, const char *data, size_t len, void *ud)
{
    reg_upload *u = qn_req_state(req);
    char hex[QN_SHA256_HEX + 1];
    if (!u && digest_param(req, res, hex) < 0)
        return -1;
    return upload_piece(req, res, ud, u, data, len);
}

/* Makes a whole, checked upload the blob of digest hex and answers: 201
 * stored, 200 already stored (either way its digest, size and Location),
 * 503 when it cannot be stored. */
static int commit_and_answer(qn_req *req, qn_res *res, registry *r, reg_upload *u, const char *hex)
{
    int created = reg_upload_commit(r, u, hex);
    if (created < 0) {
        qn_log_error(qn_req_trace_id(req), "cannot commit blob", "{s:s, s:s}", "digest", hex,
                     "error", strerror(errno));
        qn_counter_add(r->blob_uploads, (const char *[]){"io_error"}, 1);
        return qn_res_error(res, QN_UNAVAILABLE, "the registry cannot store blobs right now");
    }
    qn_counter_add(r->blob_uploads, (const char *[]){created ? "created" : "exists"}, 1);
    qn_log_info(qn_req_trace_id(req), created ? "blob stored" : "blob already stored", "{s:s+, s:I}",
                "digest", "sha256:", hex, "bytes", (json_int_t)u->bytes);
    qn_res_header(res, "Location", qn_arena_printf(qn_req_arena(req), "/v1/blobs/sha256:%s", hex));
    return qn_res_json(res, created ? 201 : 200,
                       json_pack("{s:s+, s:I, s:b}", "digest", "sha256:", hex, "size",
                                 (json_int_t)u->bytes, "created", created));
}

int reg_blob_put(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    char want[QN_SHA256_HEX + 1], got[QN_SHA256_HEX + 1];
    int code;
    if (digest_param(req, res, want) < 0)
        return 0;
    reg_upload *u = reg_upload_of(req, r, &code); /* an empty body is an empty blob */
    if (!u)
        return upload_refused(res, code);
    reg_upload_digest(u, got);
    if (strcmp(want, got) != 0) {
        /* Remove it before answering, not in the request cleanup, so that a
         * client that saw the 400 can never see the file. */
        reg_upload_discard(u);
        qn_counter_add(r->blob_uploads, (const char *[]){"digest_mismatch"}, 1);
        return qn_res_error_details(
            res, QN_INVALID_ARGUMENT,
            json_pack("{s:s+, s:s+, s:I}", "expected", "sha256:", want, "actual", "sha256:", got,
                      "bytes", (json_int_t)u->bytes),
            "the %llu bytes received hash to sha256:%s, not the sha256:%s named in the URL; "
            "nothing was stored", (unsigned long long)u->bytes, got, want);
    }
    return commit_and_answer(req, res, r, u, want);
}

/* POST /v1/blobs: a blob whose digest the client does not name up front (it
 * streams the bytes as it makes them, chunked, and learns its digest only at
 * the end). The registry hashes what it receives and stores the blob under
 * that digest, with the same guarantees as PUT (durable before the answer,
 * never visible half-written); the answer names the digest, which the client
 * compares with its own. */
int reg_blob_post_chunk(qn_req *req, qn_res *res, const char *data, size_t len, void *ud)
{
    return upload_piece(req, res, ud, qn_req_state(req), data, len);
}

int reg_blob_post(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    char got[QN_SHA256_HEX + 1];
    int code;
    reg_upload *u = reg_upload_of(req, r, &code); /* an empty body is an empty blob */
    if (!u)
        return upload_refused(res, code);
    reg_upload_digest(u, got);
    return commit_and_answer(req, res, r, u, got);
}

/* Parses a single "bytes=" range against size. Returns 1 with [*lo, *hi]
 * inclusive, 0 to serve the whole blob (no header, or a form we ignore, as
 * RFC 9110 allows), -1 when unsatisfiable. */
static int parse_range(const char *h, uint64_t size, uint64_t *lo, uint64_t *hi)
{
    if (!h || strncmp(h, "bytes=", 6) != 0 || strchr(h, ','))
        return 0;
    const char *p = h + 6, *dash = strchr(p, '-');
    if (!dash)
        return 0;
    char *end;
    if (p == dash) { /* suffix: the last N bytes */
        errno = 0;
        unsigned long long n = strtoull(dash + 1, &end, 10);
        if (errno || *end || end == dash + 1)
            return 0;
        if (n == 0 || size == 0)
            return -1;
        *lo = n >= size ? 0 : size - n;
        *hi = size - 1;
        return 1;
    }
    errno = 0;
    unsigned long long a = strtoull(p, &end, 10);
    if (errno || end != dash || *p == '-')
        return 0;
    unsigned long long b = size ? size - 1 : 0;
    if (dash[1]) {
        b = strtoull(dash + 1, &end, 10);
        if (errno || *end || dash[1] == '-' || b < a)
            return 0;
        if (b >= size)
            b = size ? size - 1 : 0;
    }
    if (a >= size)
        return -1;
    *lo = a;
    *hi = b;
    return 1;
}

int reg_blob_get(qn_req *req, qn_res *res, void *ud)
{
    registry *r = ud;
    char hex[QN_SHA256_HEX + 1], path[PATH_MAX], buf[96];
    if (digest_param(req, res, hex) < 0)
        return 0;
    blob_path(r, hex, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return qn_res_error(res, QN_NOT_FOUND, "blob sha256:%s is not stored", hex);
        qn_log_error(qn_req_trace_id(req), "cannot open blob", "{s:s, s:s}", "digest", hex, "error",
                     strerror(errno));
        return qn_res_error(res, QN_INTERNAL, "internal error");
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return qn_res_error(res, QN_INTERNAL, "internal error");
    }
    uint64_t size = (uint64_t)st.st_size, lo = 0, hi = size ? size - 1 : 0;
    int ranged = parse_range(qn_req_header(req, "Range"), size, &lo, &hi);
    snprintf(buf, sizeof buf, "\"sha256:%s\"", hex);
    qn_res_header(res, "ETag", buf);
    qn_res_header(res, "Accept-Ranges", "bytes");
    qn_res_header(res, "Cache-Control", "public, max-age=31536000, immutable");
    if (ranged < 0) {
        close(fd);
        snprintf(buf, sizeof buf, "bytes */%llu", (unsigned long long)size);
        qn_res_header(res, "Content-Range", buf);
        return qn_res_json(res, 416,
                           json_pack("{s:{s:s, s:s}}", "error", "code", "out_of_range", "message",
                                     "the requested range starts past the end of the blob"));
    }
    if (ranged > 0) {
        snprintf(buf, sizeof buf, "bytes %llu-%llu/%llu", (unsigned long long)lo,
                 (unsigned long long)hi, (unsigned long long)size);
        qn_res_header(res, "Content-Range", buf);
        return qn_res_file(res, 206, "application/octet-stream", fd, lo, hi - lo + 1);
    }
    return qn_res_file(res, 200, "application/octet-stream", fd, 0, size);
}

static int check_blob_ref(const registry *r, const char *what, const char *name, const json_t *v,
                          qn_err *err)
{
    char hex[QN_SHA256_HEX + 1];
    if (!json_is_string(v))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s \"%s\" must be a digest string \"sha256:<hex>\"",
                          what, name);
    if (qn_digest_parse(json_string_value(v), hex, err) < 0)
        return qn_err_wrap(err, "%s \"%s\"", what, name);
    if (!reg_blob_exists(r, hex))
        return qn_err_set(err, QN_FAILED_PRECONDITION,
                          "%s \"%s\" names blob sha256:%s, which is not stored; upload it first "
                          "with PUT /v1/blobs/sha256:%s", what, name, hex, hex);
    return 0;
}

int reg_manifest_check_blobs(const registry *r, const json_t *manifest, qn_err *err)
{
    json_t *files = json_object_get(manifest, "files"), *v;
    const char *name;
    if (files && !json_is_object(files))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest \"files\" must be an object of name: digest");
    if (json_object_size(files) > 1024)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "manifest lists more than 1024 files");
    json_object_foreach(files, name, v) {
        if (qn_name_check("manifest file", name, err) < 0)
            return err->code;
        if (check_blob_ref(r, "manifest file", name, v, err) < 0)
            return err->code;
    }
    json_t *profile = json_object_get(manifest, "profile");
    if (profile && !json_is_null(profile) && check_blob_ref(r, "manifest", "profile", profile, err) < 0)
        return err->code;
    return 0;
}
