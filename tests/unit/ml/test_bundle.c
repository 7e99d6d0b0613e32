/*
 * test_bundle.c - model bundles: manifest fixtures (every file in
 * tests/data/bundles/good/ must parse; each file of bad/ listed in bad.txt
 * must be refused with an error
 * containing the phrase given there), the writer/reader round trip, canonical
 * digests, and tampered, missing, traversing and oversized bundles.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/digest.h"
#include "ml/bundle.h"

static char data_dir[1024], work[1024];

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void spit(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

/* A fresh, empty directory under the test work dir. */
static const char *fresh_dir(const char *name)
{
    static char dir[1100];
    char cmd[1300];
    snprintf(dir, sizeof dir, "%s/%s", work, name);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    return dir;
}

static int setup(void **state)
{
    const char *td = getenv("QUERN_TEST_DATA"), *tw = getenv("QUERN_TEST_WORK");
    if (!td || !tw)
        return -1;
    snprintf(data_dir, sizeof data_dir, "%s/bundles", td);
    snprintf(work, sizeof work, "%s/bundle", tw);
    mkdir(work, 0755);
    return 0;
}

static qml_manifest *parse_fixture(const char *rel, char digest[QML_DIGEST_STR])
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", data_dir, rel);
    size_t len;
    char *text = slurp(path, &len);
    qn_err err;
    qml_manifest *m = NULL;
    int rc = qml_manifest_parse(text, len, &m, &err);
    if (rc != 0)
        fail_msg("%s: %s", rel, err.msg);
    assert_int_equal(qml_manifest_digest(m, digest, &err), 0);
    free(text);
    return m;
}

static void test_good_fixtures(void **state)
{
    char d1[QML_DIGEST_STR], d2[QML_DIGEST_STR], d3[QML_DIGEST_STR], d4[QML_DIGEST_STR];
    qml_manifest *full = parse_fixture("good/full.json", d1);
    qml_manifest *reordered = parse_fixture("good/full_reordered.json", d2);
    qml_manifest *minimal = parse_fixture("good/minimal.json", d3);
    qml_manifest *als = parse_fixture("good/als.json", d4);

    /* Spacing and key order do not change the digest; content does. */
    assert_string_equal(d1, d2);
    assert_string_not_equal(d1, d3);
    assert_int_equal(strncmp(d1, "sha256:", 7), 0);
    assert_true(qn_sha256_hex_valid(d1 + 7, 64));

    /* The canonical bytes hash to the digest and parse back to themselves. */
    qn_err err;
    char *canon, *canon2, hex[QN_SHA256_HEX + 1];
    size_t len, len2;
    assert_int_equal(qml_manifest_canonical(full, &canon, &len, &err), 0);
    qn_sha256_buf(canon, len, hex);
    assert_string_equal(hex, d1 + 7);
    assert_non_null(strstr(canon, "{\"dataset\":{\"name\":\"adult\",\"version\":3},\"files\""));
    qml_manifest *again;
    assert_int_equal(qml_manifest_parse(canon, len, &again, &err), 0);
    assert_int_equal(qml_manifest_canonical(again, &canon2, &len2, &err), 0);
    assert_int_equal(len, len2);
    assert_memory_equal(canon, canon2, len);
    free(canon);
    free(canon2);
    qml_manifest_free(again);

    assert_string_equal(qml_manifest_kind(full), "xgboost");
    assert_int_equal(qml_manifest_n_inputs(full), 1);
    const qml_tensor_spec *in = qml_manifest_input(full, 0);
    assert_string_equal(in->name, "features");
    assert_string_equal(in->datatype, "FP32");
    assert_int_equal(in->ndim, 2);
    assert_int_equal(in->shape[0], -1);
    assert_int_equal(in->shape[1], 14);
    assert_null(qml_manifest_input(full, 1));
    assert_int_equal(qml_manifest_n_files(full), 2);
    assert_string_equal(qml_manifest_file_digest(full, "profile.json"),
                        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_null(qml_manifest_file_digest(full, "nope"));
    const json_t *t = qml_manifest_get(full, "transforms");
    assert_true(json_is_array(json_object_get(t, "steps")));
    assert_true(json_real_value(json_object_get(qml_manifest_get(full, "metrics"), "auc")) > 0.92);
    assert_null(qml_manifest_get(minimal, "metrics"));

    assert_string_equal(qml_manifest_kind(als), "als");
    assert_int_equal(qml_manifest_n_outputs(als), 2);
    assert_string_equal(qml_manifest_output(als, 0)->datatype, "BYTES");
    assert_int_equal(qml_manifest_n_files(als), 3);

    qml_manifest_free(full);
    qml_manifest_free(reordered);
    qml_manifest_free(minimal);
    qml_manifest_free(als);
}

static void test_bad_fixtures(void **state)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/bad.txt", data_dir);
    FILE *list = fopen(path, "r");
    assert_non_null(list);
    char line[512];
    int cases = 0;
    while (fgets(line, sizeof line, list)) {
        if (line[0] == '#' || line[0] == '\n')
            continue;
        line[strcspn(line, "\n")] = '\0';
        char *tab = strchr(line, '\t');
        assert_non_null(tab);
        *tab = '\0';
        const char *needle = tab + 1;
        snprintf(path, sizeof path, "%s/bad/%s", data_dir, line);
        size_t len;
        char *text = slurp(path, &len);
        qn_err err;
        qml_manifest *m = NULL;
        int rc = qml_manifest_parse(text, len, &m, &err);
        if (rc != QN_INVALID_ARGUMENT)
            fail_msg("%s: expected invalid_argument, got %d", line, rc);
        if (!strstr(err.msg, needle))
            fail_msg("%s: message \"%s\" lacks \"%s\"", line, err.msg, needle);
        assert_null(m);
        free(text);
        cases++;
    }
    fclose(list);
    assert_true(cases >= 40);
}

/* Writes a small, complete xgboost bundle into dir; returns its digest. */
static void write_bundle(const char *dir, char digest[QML_DIGEST_STR])
{
    qn_err err;
    qml_bundle_writer *w;
    assert_int_equal(qml_bundle_writer_open(dir, &w, &err), 0);
    assert_int_equal(qml_bundle_writer_set_kind(w, "xgboost", &err), 0);
    int64_t in_shape[] = {-1, 3}, out_shape[] = {-1, 1};
    assert_int_equal(qml_bundle_writer_add_input(w, "features", "FP32", in_shape, 2, &err), 0);
    assert_int_equal(qml_bundle_writer_add_output(w, "probability", "FP32", out_shape, 2, &err), 0);
    const char *model = "{\"learner\":{}}";
    assert_int_equal(qml_bundle_writer_write_file(w, "model.json", model, strlen(model), &err), 0);
    char src[1200];
    snprintf(src, sizeof src, "%s/good/full.json", data_dir);
    assert_int_equal(qml_bundle_writer_copy_file(w, "reference.json", src, &err), 0);
    json_t *params = json_pack("{s:i,s:f}", "max_depth", 6, "eta", 0.1);
    json_t *metrics = json_pack("{s:f}", "auc", 0.927);
    json_t *transforms = json_pack("{s:[]}", "steps");
    assert_int_equal(qml_bundle_writer_set_json(w, "params", params, &err), 0);
    assert_int_equal(qml_bundle_writer_set_json(w, "metrics", metrics, &err), 0);
    assert_int_equal(qml_bundle_writer_set_json(w, "transforms", transforms, &err), 0);
    json_decref(params);
    json_decref(metrics);
    json_decref(transforms);
    assert_int_equal(qml_bundle_writer_set_dataset(w, "adult", 2, &err), 0);
    assert_int_equal(qml_bundle_writer_set_profile(
                         w, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                         &err), 0);

    /* Refusals while writing. */
    assert_int_equal(qml_bundle_writer_write_file(w, "model.json", "x", 1, &err),
                     QN_ALREADY_EXISTS);
    assert_int_equal(qml_bundle_writer_write_file(w, "../escape", "x", 1, &err),
                     QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "is a path"));
    assert_int_equal(qml_bundle_writer_set_kind(w, "svm", &err), QN_INVALID_ARGUMENT);
    assert_int_equal(qml_bundle_writer_set_profile(w, "sha256:xyz", &err), QN_INVALID_ARGUMENT);
    json_t *empty = json_object(), *arr = json_array();
    assert_int_equal(qml_bundle_writer_set_json(w, "weights", empty, &err), QN_INVALID_ARGUMENT);
    assert_int_equal(qml_bundle_writer_set_json(w, "params", arr, &err), QN_INVALID_ARGUMENT);
    json_decref(empty);
    json_decref(arr);
    assert_int_equal(qml_bundle_writer_copy_file(w, "other.bin", "/no/such/file", &err),
                     QN_NOT_FOUND);

    assert_int_equal(qml_bundle_writer_finish(w, digest, &err), 0);
    qml_bundle_writer_free(w);
}

static void test_write_then_open(void **state)
{
    const char *d = fresh_dir("roundtrip");
    char dir[1100], digest[QML_DIGEST_STR];
    snprintf(dir, sizeof dir, "%s", d);
    write_bundle(dir, digest);

    /* manifest.json holds exactly the canonical bytes: its SHA-256 is the digest. */
    char mpath[1200], hex[QN_SHA256_HEX + 1];
    qn_err err;
    snprintf(mpath, sizeof mpath, "%s/manifest.json", dir);
    assert_int_equal(qn_sha256_file(mpath, hex, &err), 0);
    assert_string_equal(hex, digest + 7);

    qml_bundle *b;
    int rc = qml_bundle_open(dir, &b, &err);
    if (rc != 0)
        fail_msg("%s", err.msg);
    const qml_manifest *m = qml_bundle_manifest(b);
    char d2[QML_DIGEST_STR];
    assert_int_equal(qml_manifest_digest(m, d2, &err), 0);
    assert_string_equal(d2, digest);
    assert_string_equal(qml_manifest_kind(m), "xgboost");
    assert_int_equal(qml_manifest_input(m, 0)->shape[1], 3);
    assert_string_equal(qml_manifest_output(m, 0)->name, "probability");
    assert_int_equal(json_integer_value(json_object_get(qml_manifest_get(m, "params"),
                                                        "max_depth")), 6);
    assert_int_equal(json_integer_value(json_object_get(qml_manifest_get(m, "dataset"),
                                                        "version")), 2);
    const char *model = qml_bundle_file_path(b, "model.json");
    assert_non_null(model);
    size_t len;
    char *text = slurp(model, &len);
    assert_string_equal(text, "{\"learner\":{}}");
    free(text);
    assert_null(qml_bundle_file_path(b, "missing.bin"));
    assert_string_equal(qml_bundle_dir(b), dir);
    qml_bundle_close(b);

    /* A bundle is written once. */
    qml_bundle_writer *w;
    assert_int_equal(qml_bundle_writer_open(dir, &w, &err), QN_ALREADY_EXISTS);

    /* finish validates: a bad datatype writes no manifest. */
    const char *d3 = fresh_dir("badtype");
    char dir3[1100];
    snprintf(dir3, sizeof dir3, "%s", d3);
    assert_int_equal(qml_bundle_writer_open(dir3, &w, &err), 0);
    int64_t shape[] = {-1};
    assert_int_equal(qml_bundle_writer_set_kind(w, "linear", &err), 0);
    assert_int_equal(qml_bundle_writer_add_input(w, "x", "FLOAT", shape, 1, &err), 0);
    assert_int_equal(qml_bundle_writer_add_output(w, "y", "FP64", shape, 1, &err), 0);
    assert_int_equal(qml_bundle_writer_finish(w, NULL, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "datatype \"FLOAT\""));
    qml_bundle_writer_free(w);
    snprintf(mpath, sizeof mpath, "%s/manifest.json", dir3);
    assert_int_equal(access(mpath, F_OK), -1);
}

static void expect_open_fails(const char *dir, int code, const char *needle)
{
    qn_err err;
    qml_bundle *b = NULL;
    int rc = qml_bundle_open(dir, &b, &err);
    if (rc != code)
        fail_msg("%s: expected %d, got %d (%s)", dir, code, rc, err.msg);
    if (!strstr(err.msg, needle))
        fail_msg("%s: message \"%s\" lacks \"%s\"", dir, err.msg, needle);
    assert_null(b);
}

static void test_bad_bundles(void **state)
{
    char dir[1100], path[1200], digest[QML_DIGEST_STR];

    /* One byte changed in a file after writing. */
    snprintf(dir, sizeof dir, "%s", fresh_dir("tampered"));
    write_bundle(dir, digest);
    snprintf(path, sizeof path, "%s/model.json", dir);
    spit(path, "{\"learner\":[]}", 14);
    expect_open_fails(dir, QN_INVALID_ARGUMENT, "file \"model.json\" has digest sha256:");

    /* A listed file removed. */
    snprintf(dir, sizeof dir, "%s", fresh_dir("missing"));
    write_bundle(dir, digest);
    snprintf(path, sizeof path, "%s/reference.json", dir);
    assert_int_equal(unlink(path), 0);
    expect_open_fails(dir, QN_INVALID_ARGUMENT, "file \"reference.json\" listed in the manifest is missing");

    /* A listed file replaced by a symlink (it could point anywhere). */
    assert_int_equal(symlink("/etc/hostname", path), 0);
    expect_open_fails(dir, QN_INVALID_ARGUMENT, "\"reference.json\" is not a regular file");

    /* No manifest at all. */
    snprintf(dir, sizeof dir, "%s", fresh_dir("empty"));
    assert_int_equal(mkdir(dir, 0755), 0);
    expect_open_fails(dir, QN_NOT_FOUND, "manifest.json");

    /* Manifests from the bad fixtures, placed in a directory. */
    struct {
        const char *fixture, *needle;
    } cases[] = {
        {"format_v2.json", "format \"quern.model/2\" is not supported (this build reads quern.model/1)"},
        {"files_traversal.json", "\"../../etc/passwd\" is a path"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(dir, sizeof dir, "%s", fresh_dir("fixture"));
        assert_int_equal(mkdir(dir, 0755), 0);
        snprintf(path, sizeof path, "%s/bad/%s", data_dir, cases[i].fixture);
        size_t len;
        char *text = slurp(path, &len);
        snprintf(path, sizeof path, "%s/manifest.json", dir);
        spit(path, text, len);
        free(text);
        expect_open_fails(dir, QN_INVALID_ARGUMENT, cases[i].needle);
    }

    /* A manifest over the size bound is refused before it is parsed. */
    snprintf(dir, sizeof dir, "%s", fresh_dir("huge"));
    assert_int_equal(mkdir(dir, 0755), 0);
    size_t big = QML_MANIFEST_MAX + 10;
    char *text = malloc(big);
    memset(text, ' ', big);
    text[0] = '{';
    text[big - 1] = '}';
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    spit(path, text, big);
    free(text);
    expect_open_fails(dir, QN_INVALID_ARGUMENT, "over the");
    qn_err err;
    qml_manifest *m = NULL;
    assert_int_equal(qml_manifest_parse("{}", QML_MANIFEST_MAX + 1, &m, &err), QN_INVALID_ARGUMENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_fixtures),
        cmocka_unit_test(test_bad_fixtures),
        cmocka_unit_test(test_write_then_open),
        cmocka_unit_test(test_bad_bundles),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
