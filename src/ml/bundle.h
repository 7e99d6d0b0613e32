/*
 * bundle.h - the model bundle: a directory of files plus manifest.json that
 * names each file by its SHA-256 digest (DESIGN.md section 4).
 *
 * train writes bundles, the registry stores their manifests (by the digest of
 * the manifest's canonical bytes) and files (as blobs), and serve opens them.
 * The manifest:
 *
 *   {"format":"quern.model/1", "kind":"als|logistic|linear|xgboost",
 *    "inputs":[{"name":"x","datatype":"FP32","shape":[-1,14]}], "outputs":[...],
 *    "transforms":{...}, "files":{"model.json":"sha256:<hex>"},
 *    "profile":"sha256:<hex>", "dataset":{"name":"adult","version":3},
 *    "params":{...}, "metrics":{"auc":0.92}}
 *
 * format, kind, inputs, outputs and files are required; the rest optional.
 * transforms and params are opaque objects owned by their modules; metrics
 * values are numbers. Datatypes are the Open Inference Protocol's; a shape
 * has 1 to 8 dimensions, each >= 1, and the first may be -1 (any batch size).
 * File names are 1-255 characters of [A-Za-z0-9._-], not starting with '.',
 * so no name is ever a path; "manifest.json" is reserved.
 *
 *     qml_bundle_writer *w;
 *     qml_bundle_writer_open("out/adult-xgb", &w, &err);
 *     qml_bundle_writer_set_kind(w, "xgboost", &err);
 *     int64_t in_shape[] = {-1, 14}, out_shape[] = {-1, 1};
 *     qml_bundle_writer_add_input(w, "features", "FP32", in_shape, 2, &err);
 *     qml_bundle_writer_add_output(w, "probability", "FP32", out_shape, 2, &err);
 *     qml_bundle_writer_write_file(w, "model.json", buf, len, &err);
 *     qml_bundle_writer_set_json(w, "params", params_obj, &err);
 *     char digest[QML_DIGEST_STR];
 *     qml_bundle_writer_finish(w, digest, &err);   // manifest.json, atomically
 *     qml_bundle_writer_free(w);
 *
 *     qml_bundle *b;
 *     if (qml_bundle_open("out/adult-xgb", &b, &err) < 0) -> refuse, keep the old model
 *     const char *path = qml_bundle_file_path(b, "model.json");
 *     qml_bundle_close(b);
 *
 * Every function returns 0 or a negative qn_code with err naming the problem.
 * A qml_manifest / qml_bundle is read-only after it is made, so any number of
 * threads may read one. A writer is used by one thread.
 */
#ifndef QML_BUNDLE_H
#define QML_BUNDLE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define QML_BUNDLE_FORMAT "quern.model/1"
#define QML_MANIFEST_MAX ((size_t)1 << 20)   /* bytes */
#define QML_TENSOR_MAX_DIMS 8
#define QML_DIGEST_STR (7 + 64 + 1)          /* "sha256:" + hex + NUL */

/* One input or output of the model, as the Open Inference Protocol describes it. */
typedef struct qml_tensor_spec {
    const char *name;       /* borrowed from the manifest */
    const char *datatype;   /* "FP32", "BYTES", ... */
    int ndim;
    int64_t shape[QML_TENSOR_MAX_DIMS];  /* -1 only first: any batch size */
} qml_tensor_spec;

/* ---- manifests ------------------------------------------------------------- */

typedef struct qml_manifest qml_manifest;

/* Parses and validates a manifest of at most QML_MANIFEST_MAX bytes (nothing
 * on disk is checked). Returns 0 and *out (free with qml_manifest_free), or
 * QN_INVALID_ARGUMENT naming the field at fault; an unknown format version is
 * refused naming that version. */
int qml_manifest_parse(const void *buf, size_t len, qml_manifest **out, qn_err *err);
void qml_manifest_free(qml_manifest *m);

const char *qml_manifest_kind(const qml_manifest *m);
size_t qml_manifest_n_inputs(const qml_manifest *m);
const qml_tensor_spec *qml_manifest_input(const qml_manifest *m, size_t i);
size_t qml_manifest_n_outputs(const qml_manifest *m);
const qml_tensor_spec *qml_manifest_output(const qml_manifest *m, size_t i);
size_t qml_manifest_n_files(const qml_manifest *m);
const char *qml_manifest_file_name(const qml_manifest *m, size_t i);
/* The "sha256:<hex>" listed for a file name, or NULL when not listed. */
const char *qml_manifest_file_digest(const qml_manifest *m, const char *name);

/* The parsed document and its pieces, borrowed (NULL when absent): "transforms",
 * "params", "metrics", "dataset", "profile", or any top-level field. */
const json_t *qml_manifest_json(const qml_manifest *m);
const json_t *qml_manifest_get(const qml_manifest *m, const char *field);

/* The canonical bytes (compact, keys sorted, UTF-8; malloc'd in *out, caller
 * frees) and their digest "sha256:<hex>" in out: the registry's name for the
 * manifest. Two manifests with the same content have the same digest whatever
 * their spacing or key order. */
int qml_manifest_canonical(const qml_manifest *m, char **out, size_t *len, qn_err *err);
int qml_manifest_digest(const qml_manifest *m, char out[QML_DIGEST_STR], qn_err *err);

/* ---- reading a bundle directory ---------------------------------------------- */

typedef struct qml_bundle qml_bundle;

/* Opens dir: reads and validates dir/manifest.json, then checks that every
 * listed file is a regular file in dir whose SHA-256 matches. Returns 0 and
 * *out (close with qml_bundle_close), QN_NOT_FOUND without a manifest, or
 * QN_INVALID_ARGUMENT naming the file or field at fault (missing file,
 * digest mismatch, bad manifest). */
int qml_bundle_open(const char *dir, qml_bundle **out, qn_err *err);
const qml_manifest *qml_bundle_manifest(const qml_bundle *b);
const char *qml_bundle_dir(const qml_bundle *b);
/* dir/name for a listed file, or NULL when name is not in the manifest. */
const char *qml_bundle_file_path(const qml_bundle *b, const char *name);
void qml_bundle_close(qml_bundle *b);

/* ---- writing a bundle directory ------------------------------------------------ */

typedef struct qml_bundle_writer qml_bundle_writer;

/* Starts a bundle in dir (created if missing). QN_ALREADY_EXISTS when dir
 * already holds a manifest.json: bundles are written once. */
int qml_bundle_writer_open(const char *dir, qml_bundle_writer **out, qn_err *err);

/* Adds a file by name, written (or copied from src_path) to a temporary file,
 * synced, renamed into place, and hashed on the way. A name may be added once. */
int qml_bundle_writer_write_file(qml_bundle_writer *w, const char *name, const void *data,
                                 size_t len, qn_err *err);
int qml_bundle_writer_copy_file(qml_bundle_writer *w, const char *name, const char *src_path,
                                qn_err *err);

int qml_bundle_writer_set_kind(qml_bundle_writer *w, const char *kind, qn_err *err);
int qml_bundle_writer_add_input(qml_bundle_writer *w, const char *name, const char *datatype,
                                const int64_t *shape, int ndim, qn_err *err);
int qml_bundle_writer_add_output(qml_bundle_writer *w, const char *name, const char *datatype,
                                 const int64_t *shape, int ndim, qn_err *err);
/* Sets "transforms", "params" or "metrics" to a deep copy of value (an object). */
int qml_bundle_writer_set_json(qml_bundle_writer *w, const char *field, const json_t *value,
                               qn_err *err);
int qml_bundle_writer_set_profile(qml_bundle_writer *w, const char *digest, qn_err *err);
int qml_bundle_writer_set_dataset(qml_bundle_writer *w, const char *name, int64_t version,
                                  qn_err *err);

/* Validates the manifest as qml_manifest_parse would, writes its canonical
 * bytes to manifest.json atomically (temporary file, fsync, rename, fsync of
 * the directory) and, when digest is not NULL, stores the manifest's digest
 * there (equal to the SHA-256 of manifest.json). */
int qml_bundle_writer_finish(qml_bundle_writer *w, char digest[QML_DIGEST_STR], qn_err *err);
/* Frees the writer; files already written stay. */
void qml_bundle_writer_free(qml_bundle_writer *w);

#endif
