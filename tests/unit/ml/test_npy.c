/* test_npy.c - .npy writing and reading, both ways against numpy
 * (tests/unit/ml/npy_ref.py run by /usr/bin/python3), and the strict header
 * checks: every malformed input below must be refused with a message naming
 * the fault, never read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ml/npy.h"

static char workdir[1024];

static int setup(void **state)
{
    const char *w = getenv("QUERN_TEST_WORK");
    snprintf(workdir, sizeof workdir, "%s/npy", w ? w : "/tmp");
    mkdir(workdir, 0777);
    return 0;
}

static const char *wpath(const char *name)
{
    static char buf[1200];
    snprintf(buf, sizeof buf, "%s/%s", workdir, name);
    return buf;
}

static int run_ref(const char *mode)
{
    const char *src = getenv("QUERN_SOURCE_DIR");
    char cmd[2600];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/unit/ml/npy_ref.py %s %s",
             src ? src : ".", mode, workdir);
    return system(cmd);
}

static void test_written_files_load_in_numpy(void **state)
{
    qn_err err;
    float f4[12];
    for (int i = 0; i < 12; i++)
        f4[i] = (float)i / 8.0f;
    double f8[] = {1.5, -2.25, 1e300, 0.0};
    int32_t i4[] = {-3, -2, -1, 0, 1, 2};
    int64_t i8[] = {0, -1, (int64_t)1 << 40};
    int64_t s34[] = {3, 4}, s4[] = {4}, s23[] = {2, 3}, s3[] = {3}, s05[] = {0, 5};
    assert_int_equal(qml_npy_write(wpath("f4_2d.npy"), QML_NPY_F4, 2, s34, f4, &err), 0);
    assert_int_equal(qml_npy_write(wpath("f8_1d.npy"), QML_NPY_F8, 1, s4, f8, &err), 0);
    assert_int_equal(qml_npy_write(wpath("i4_2d.npy"), QML_NPY_I4, 2, s23, i4, &err), 0);
    assert_int_equal(qml_npy_write(wpath("i8_1d.npy"), QML_NPY_I8, 1, s3, i8, &err), 0);
    assert_int_equal(qml_npy_write(wpath("f4_empty.npy"), QML_NPY_F4, 2, s05, NULL, &err), 0);
    assert_int_equal(run_ref("check"), 0);

    /* The payload starts 64-byte aligned, as with numpy's own writer. */
    struct stat st;
    assert_int_equal(stat(wpath("f4_2d.npy"), &st), 0);
    assert_int_equal(st.st_size % 64, (12 * 4) % 64);

    /* And our reader gives back exactly what we wrote. */
    qml_npy a;
    assert_int_equal(qml_npy_read(wpath("f8_1d.npy"), &a, &err), 0);
    assert_int_equal(a.dtype, QML_NPY_F8);
    assert_int_equal(a.ndim, 1);
    assert_int_equal(a.shape[0], 4);
    assert_memory_equal(a.data, f8, sizeof f8);
    qml_npy_release(&a);

    int64_t s3d[] = {1, 1, 1};
    assert_int_equal(qml_npy_write(wpath("x.npy"), QML_NPY_F4, 3, s3d, f4, &err), QN_INVALID_ARGUMENT);
    assert_int_equal(qml_npy_write("/nonexistent-dir/x.npy", QML_NPY_F4, 1, s3, f4, &err), QN_INTERNAL);
    assert_non_null(strstr(err.msg, "/nonexistent-dir/x.npy"));
}

static void test_numpy_files_read(void **state)
{
    qn_err err;
    qml_npy a;
    assert_int_equal(run_ref("make"), 0);

    assert_int_equal(qml_npy_read(wpath("np_f4_2d.npy"), &a, &err), 0);
    assert_int_equal(a.dtype, QML_NPY_F4);
    assert_int_equal(a.ndim, 2);
    assert_int_equal(a.shape[0], 3);
    assert_int_equal(a.shape[1], 4);
    for (int i = 0; i < 12; i++)
        assert_true(((float *)a.data)[i] == (float)i / 8.0f);
    qml_npy_release(&a);

    assert_int_equal(qml_npy_read(wpath("np_i8_1d.npy"), &a, &err), 0);
    assert_int_equal(a.dtype, QML_NPY_I8);
    assert_int_equal(a.ndim, 1);
    assert_int_equal(a.shape[0], 3);
    assert_int_equal(a.shape[1], 1);
    assert_true(((int64_t *)a.data)[2] == (int64_t)1 << 40);
    qml_npy_release(&a);

    assert_int_equal(qml_npy_read(wpath("np_i4_2d.npy"), &a, &err), 0);
    assert_int_equal(((int32_t *)a.data)[0], -3);
    assert_int_equal(a.shape[1], 3);
    qml_npy_release(&a);

    assert_int_equal(qml_npy_read(wpath("np_f4_empty.npy"), &a, &err), 0);
    assert_int_equal(a.shape[0], 0);
    assert_int_equal(a.shape[1], 5);
    qml_npy_release(&a);

    struct { const char *file, *needle; } bad[] = {
        {"np_fortran.npy", "Fortran"},
        {"np_big.npy", ">f4"},
        {"np_3d.npy", "2-D"},
        {"np_u1.npy", "|u1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(qml_npy_read(wpath(bad[i].file), &a, &err), QN_INVALID_ARGUMENT);
        if (!strstr(err.msg, bad[i].needle))
            fail_msg("%s: message '%s' lacks '%s'", bad[i].file, err.msg, bad[i].needle);
        assert_non_null(strstr(err.msg, bad[i].file));
        assert_null(a.data);
    }
    assert_int_equal(qml_npy_read(wpath("absent.npy"), &a, &err), QN_NOT_FOUND);
}

/* Builds an in-memory .npy image from a header dict text and a payload size. */
static size_t image(unsigned char *buf, int major, const char *dict, size_t payload)
{
    size_t n = strlen(dict);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    buf[8] = (unsigned char)((n + 1) & 0xff);
    buf[9] = (unsigned char)((n + 1) >> 8);
    memcpy(buf + 10, dict, n);
    buf[10 + n] = '\n';
    memset(buf + 11 + n, 0, payload);
    return 11 + n + payload;
}

static void test_strict_header(void **state)
{
    static const struct {
        int major;
        const char *dict;
        size_t payload;
        int ok;
        const char *needle;
    } cases[] = {
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24, 1, NULL},
        {1, "{\"descr\": \"<i8\", \"fortran_order\": False, \"shape\": (5,)}", 40, 1, NULL},
        {1, "{'shape': (0,), 'fortran_order': False, 'descr': '<f8'}", 0, 1, NULL},
        {2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24, 0, "version 2.0"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20, 0, "needs 24"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 28, 0, "has 28"},
        {1, "{'descr': '<f4', 'shape': (2, 3), }", 24, 0, "lacks 'fortran_order'"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", 24, 0, "unknown key 'x'"},
        {1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (6,)}", 24, 0, "repeats"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6)}", 24, 0, "not a tuple"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': ()}", 4, 0, "0-D"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", 4, 0, "bad dimension"},
        {1, "{'descr': '<f4', 'fortran_order': false, 'shape': (1,)}", 4, 0, "True or False"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999)}", 4, 0, "too large"},
        {1, "{'descr': '<f2', 'fortran_order': False, 'shape': (1,)}", 4, 0, "'<f2'"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} junk", 4, 0, "trailing"},
        {1, "['descr', '<f4']", 4, 0, "not a dict"},
    };
    unsigned char buf[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        qn_err err;
        qml_npy a;
        size_t len = image(buf, cases[i].major, cases[i].dict, cases[i].payload);
        int rc = qml_npy_parse(buf, len, "case", &a, &err);
        if (cases[i].ok) {
            if (rc != 0)
                fail_msg("case %zu refused: %s", i, err.msg);
            qml_npy_release(&a);
        } else {
            if (rc != QN_INVALID_ARGUMENT || !strstr(err.msg, cases[i].needle))
                fail_msg("case %zu: rc %d, message '%s' lacks '%s'", i, rc, err.msg, cases[i].needle);
            assert_null(a.data);
        }
    }
    /* Bad magic, and a header length that runs past the end. */
    qn_err err;
    qml_npy a;
    size_t len = image(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", 4);
    buf[1] = 'X';
    assert_int_equal(qml_npy_parse(buf, len, "m", &a, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "magic"));
    buf[1] = 'N';
    buf[9] = 0x7f;
    assert_int_equal(qml_npy_parse(buf, len, "m", &a, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "truncated"));
    assert_int_equal(qml_npy_parse(buf, 7, "m", &a, &err), QN_INVALID_ARGUMENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_written_files_load_in_numpy),
        cmocka_unit_test(test_numpy_files_read),
        cmocka_unit_test(test_strict_header),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
