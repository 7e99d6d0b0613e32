/*
 * source_files.c - the files kind: CSV and NDJSON files that appear in a
 * directory, each taken once, by the digest of its content.
 *
 * A run lists the directory (names in byte order), skips names starting
 * with '.' or ending in .tmp or .part (write a file elsewhere or under such
 * a name, then rename it), and takes each regular file whose SHA-256 is not
 * yet recorded for the source: the whole file is checked as a push body
 * would be (qml_rec_parse, the dataset's schema and CSV dialect) and its
 * rows are committed with its digest in one transaction, so a file is taken
 * whole, once, or not at all. Renaming or copying a taken file takes
 * nothing; changing it makes a new file. A file that cannot be read as a
 * whole (its header, its encoding, columns that do not line up) is refused:
 * its digest is recorded with rows -1 so it is not tried again, and the run
 * fails naming the file and the line.
 *
 * A file written in place rather than renamed may be read while it is being
 * written: a short read, or a size or modification time (to the nanosecond)
 * that differs after the read from before it, leaves the file for a later
 * run rather than taking a torn copy under a digest of its own. (A writer
 * that pauses mid-file can still be read at the pause: rename is the way.)
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/digest.h"
#include "ingest/sources.h"

#define FILE_MAX_DEFAULT (64LL << 20)

static const char *const keys[] = {"dir", "format", "max_file_bytes", NULL};

static int check(json_t *spec, const src_limits *lim, qn_err *err)
{
    const char *dir, *fmt;
    int rc;
    if ((rc = src_known_keys(spec, keys, err)) < 0 || (rc = src_str(spec, "dir", 4096, 1, &dir, err)) < 0 ||
        (rc = src_str(spec, "format", 16, 0, &fmt, err)) < 0)
        return rc;
    if ((rc = src_path_ok(lim, "dir", dir, err)) < 0)
        return rc;
    if (!fmt)
        json_object_set_new(spec, "format", json_string("auto"));
    else if (strcmp(fmt, "auto") && strcmp(fmt, "csv") && strcmp(fmt, "ndjson"))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "format must be auto, csv or ndjson");
    json_t *m = json_object_get(spec, "max_file_bytes");
    if (!m)
        json_object_set_new(spec, "max_file_bytes", json_integer(FILE_MAX_DEFAULT));
    else if (!json_is_integer(m) || json_integer_value(m) < 1 || json_integer_value(m) > (1LL << 30))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "max_file_bytes must be an integer from 1 to 1073741824");
    return 0;
}

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcasecmp(s + n - m, suf) == 0;
}

/* The format of a file by its name; -1 to leave it alone. */
static int format_of(const char *fmt, const char *name)
{
    if (strcmp(fmt, "csv") == 0)
        return QML_REC_CSV;
    if (strcmp(fmt, "ndjson") == 0)
        return QML_REC_NDJSON;
    if (ends_with(name, ".csv") || ends_with(name, ".tsv") || ends_with(name, ".txt"))
        return QML_REC_CSV;
    if (ends_with(name, ".ndjson") || ends_with(name, ".jsonl"))
        return QML_REC_NDJSON;
    return -1;
}

static int taken(src_run *r, const char *digest, qn_err *err)
{
    qn_conn *c = qn_store_acquire(r->g->db, err);
    if (!c)
        return err->code;
    qn_stmt *st = qn_prepare(c, "SELECT 1 FROM source_files WHERE source = ? AND digest = ?", err);
    int rc = st ? (qn_bind_text(st, 1, r->name, -1), qn_bind_text(st, 2, digest, -1), qn_step(st, err)) : err->code;
    qn_store_release(r->g->db, c);
    return rc;
}

/* Whether the file changed between two looks at it. */
static int changed(const struct stat *a, const struct stat *b)
{
    return a->st_size != b->st_size || a->st_mtim.tv_sec != b->st_mtim.tv_sec ||
           a->st_mtim.tv_nsec != b->st_mtim.tv_nsec;
}

/* Reads the regular file path whole into *data (malloc'd, *len bytes).
 * 0; 1 with *data NULL to leave it alone this run (not a regular file, or
 * one that changed while it was read); or a negative code. */
static int read_file(const char *path, int64_t max, char **data, size_t *len, qn_err *err)
{
    FILE *f = fopen(path, "rb");
    *data = NULL;
    if (!f)
        return qn_err_set(err, QN_UNAVAILABLE, "cannot open %s: %s", path, strerror(errno));
    struct stat sb, after;
    int rc = 0;
    if (fstat(fileno(f), &sb) < 0 || !S_ISREG(sb.st_mode)) {
        rc = 1; /* not a regular file: not ours */
        goto out;
    }
    if (sb.st_size > max) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "%s is %lld bytes, over max_file_bytes (%lld)", path,
                        (long long)sb.st_size, (long long)max);
        goto out;
    }
    *data = malloc((size_t)sb.st_size + 1);
    if (!*data) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory reading %s", path);
        goto out;
    }
    *len = fread(*data, 1, (size_t)sb.st_size, f);
    if (ferror(f))
        rc = qn_err_set(err, QN_UNAVAILABLE, "cannot read %s: %s", path, strerror(errno));
    else if (*len != (size_t)sb.st_size || fstat(fileno(f), &after) < 0 || changed(&sb, &after))
        rc = 1; /* still being written: the next run takes it whole */
    if (rc) {
        free(*data);
        *data = NULL;
    }
out:
    fclose(f);
    return rc;
}

static int take(src_run *r, const char *dir, const char *name, int fmt, int64_t max, json_t **refused, qn_err *err)
{
    char path[4600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *data = NULL, digest[QN_SHA256_HEX + 8];
    size_t len = 0;
    int rc = read_file(path, max, &data, &len, err);
    if (rc != 0)
        return rc > 0 ? 0 : rc;
    qn_sha256 *h = qn_sha256_new();
    if (!h) {
        free(data);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
    }
    qn_sha256_update(h, data, len);
    memcpy(digest, "sha256:", 7);
    qn_sha256_final(h, digest + 7);
    qn_sha256_free(h);
    if ((rc = taken(r, digest, err)) != 0) {
        free(data);
        return rc < 0 ? rc : 0;
    }
    qml_rec_batch b;
    qml_rec_batch_init(&b);
    qml_rec_opts o = r->opts;
    o.max_rows = (size_t)max; /* a file is bounded by its bytes */
    qn_err perr;
    rc = qml_rec_parse(data, len, (qml_rec_format)fmt, r->schema, &o, &b, &perr);
    free(data);
    json_t *where = json_string(name);
    if (rc == QN_INVALID_ARGUMENT && (strstr(perr.msg, "holds no rows") || strstr(perr.msg, "is empty"))) {
        /* An empty file, or a header alone: taken, with no rows. */
        qml_rec_batch_free(&b);
        qml_rec_batch_init(&b);
        rc = 0;
    }
    if (rc == QN_INVALID_ARGUMENT) {
        /* Refused whole: remember it so it is not read again, and say why. */
        qml_rec_batch_free(&b);
        qml_rec_batch_init(&b);
        if (!*refused)
            *refused = json_pack("{s:s, s:s}", "file", name, "reason", perr.msg);
        json_t *e = json_pack("{s:I, s:O, s:s}", "row", (json_int_t)0, "file", where, "reason", perr.msg);
        if (json_array_size(r->errors) < SRC_MAX_ERRORS)
            json_array_append_new(r->errors, e);
        else
            json_decref(e);
        b.nbad = 0;
        r->file_refused = 1; /* recorded with rows -1 */
        rc = src_commit(r, &b, NULL, NULL, digest, path, err);
        r->file_refused = 0;
        json_decref(where);
        return rc;
    }
    if (rc < 0) {
        qml_rec_batch_free(&b);
        json_decref(where);
        *err = perr;
        return rc;
    }
    src_note_errors(r, &b, "file", where);
    json_decref(where);
    rc = src_commit(r, &b, NULL, NULL, digest, path, err);
    qml_rec_batch_free(&b);
    return rc;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int pull(src_run *r, qn_err *err)
{
    const char *dir = json_string_value(json_object_get(r->spec, "dir"));
    const char *fmt = json_string_value(json_object_get(r->spec, "format"));
    int64_t max = json_integer_value(json_object_get(r->spec, "max_file_bytes"));
    struct dirent **names = NULL;
    json_t *refused = NULL;
    int rc = src_path_ok(r->lim, "dir", dir, err);
    if (rc < 0)
        return rc;
    int n = scandir(dir, &names, NULL, by_name);
    if (n < 0)
        return qn_err_set(err, QN_UNAVAILABLE, "cannot list %s: %s", dir, strerror(errno));
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        int f = format_of(fmt, name);
        if (rc == 0 && name[0] != '.' && !ends_with(name, ".tmp") && !ends_with(name, ".part") && f >= 0) {
            if (atomic_load(r->stop))
                rc = qn_err_set(err, QN_CANCELLED, "the service is stopping; the next run takes the rest");
            else
                rc = take(r, dir, name, f, max, &refused, err);
        }
        free(names[i]);
    }
    free(names);
    if (rc == 0 && refused)
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "file %s was refused whole and will not be read again: %s",
                        json_string_value(json_object_get(refused, "file")),
                        json_string_value(json_object_get(refused, "reason")));
    json_decref(refused);
    return rc;
}

const src_kind src_files = {"files", check, pull};
