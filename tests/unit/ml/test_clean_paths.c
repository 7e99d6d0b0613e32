/* test_clean_paths.c - the fast paths of the cleaning steps against the plain
 * ones, on random frames and random step lists:
 * - qml_clean_apply_owned (kept rows compacted in place, arrays moved, the
 *   derive adding its column to them) against qml_clean_apply (every frame
 *   copied): the same result frame, cell for cell and dictionary for
 *   dictionary, the same report, the same error; qml_clean_apply leaves its
 *   input as it was;
 * - the row steps (filters decided once per dictionary entry, comparisons
 *   chosen once per step, masks fused) against a per-row evaluation written
 *   here from the documented semantics: the same rows kept, the same counts
 *   per step, the same count of missing cells in each filter's note.
 * Frames have missing cells, an empty dictionary (a column all missing),
 * codes the dictionary does not have, and dictionaries larger than the
 * frame (entries no row uses). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ml/clean.h"

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return n ? (uint32_t)((rng_state >> 33) % n) : 0;
}

static const char *const words[] = {"C100", "C2", "A200", "A", "", "POST", "gift_0001", "gift_0001x",
                                    "B", "b", "12346", "zz", "C", "DOT", "17850", "m"};
#define NWORDS (sizeof words / sizeof words[0])

/* Columns: cat a (a few words), cat b (dictionary larger than the frame),
 * cat e (all missing: empty dictionary), num x, ts t, bool f. Some cells of
 * a and b carry a code the dictionary does not have. */
static qml_frame *random_frame(size_t n)
{
    qn_err err;
    qml_frame *f = qml_frame_new();
    static const char *const names[] = {"a", "b", "e", "x", "t", "f"};
    static const qml_type types[] = {QML_CATEGORICAL, QML_CATEGORICAL, QML_CATEGORICAL,
                                     QML_NUMERIC, QML_TIMESTAMP, QML_BOOLEAN};
    for (int j = 0; j < 6; j++)
        assert_true(qml_frame_add_column(f, names[j], types[j], &err) >= 0);
    /* b's dictionary: every word, and more entries than rows. */
    qml_column *b = qml_frame_col(f, 1);
    for (size_t k = 0; k < n + NWORDS + 3; k++) {
        char w[32];
        if (k < NWORDS)
            snprintf(w, sizeof w, "%s", words[k]);
        else
            snprintf(w, sizeof w, "extra%zu", k);
        assert_true(qml_dict_intern(b->dict, w, strlen(w)) >= 0);
    }
    int miss_pct = (int)rnd(40);
    for (size_t r = 0; r < n; r++) {
        qml_column *c;
        c = qml_frame_col(f, 0);
        if ((int)rnd(100) < miss_pct)
            qml_col_push_missing(c);
        else {
            const char *w = words[rnd(8)];
            qml_col_push_str(c, w, strlen(w));
        }
        c = qml_frame_col(f, 1);
        if ((int)rnd(100) < miss_pct)
            qml_col_push_missing(c);
        else
            qml_col_push_code(c, (int32_t)rnd((uint32_t)NWORDS));
        qml_col_push_missing(qml_frame_col(f, 2));
        static const double xs[] = {-3, 0, 0.5, 1, 5, 100, -0.0};
        c = qml_frame_col(f, 3);
        if ((int)rnd(100) < miss_pct)
            qml_col_push_missing(c);
        else
            qml_col_push_num(c, xs[rnd(7)]);
        c = qml_frame_col(f, 4);
        if ((int)rnd(100) < miss_pct)
            qml_col_push_missing(c);
        else
            qml_col_push_num(c, 1293840000.0 + 86400.0 * rnd(60));
        c = qml_frame_col(f, 5);
        if ((int)rnd(100) < miss_pct)
            qml_col_push_missing(c);
        else
            qml_col_push_num(c, rnd(2));
        assert_int_equal(qml_frame_end_row(f), 0);
    }
    qml_column *a = qml_frame_col(f, 0);
    /* Codes absent from the dictionary, on cells not flagged missing. */
    for (size_t r = 0; r < n; r++) {
        if (rnd(12) == 0 && !a->missing[r])
            a->cat[r] = rnd(2) ? (int32_t)(qml_dict_size(a->dict) + rnd(5)) : -1;
        if (rnd(15) == 0 && !b->missing[r])
            b->cat[r] = (int32_t)(qml_dict_size(b->dict) + rnd(3));
    }
    return f;
}

static qml_frame *copy_of(const qml_frame *f)
{
    size_t n = qml_frame_nrows(f);
    size_t *all = malloc((n ? n : 1) * sizeof *all);
    for (size_t r = 0; r < n; r++)
        all[r] = r;
    qn_err err;
    qml_frame *g = qml_frame_take(f, all, n, &err);
    free(all);
    assert_non_null(g);
    return g;
}

static void frames_equal(const qml_frame *x, const qml_frame *y, const char *what)
{
    if (qml_frame_ncols(x) != qml_frame_ncols(y) || qml_frame_nrows(x) != qml_frame_nrows(y))
        fail_msg("%s: %zux%zu against %zux%zu", what, qml_frame_nrows(x), qml_frame_ncols(x),
                 qml_frame_nrows(y), qml_frame_ncols(y));
    for (size_t j = 0; j < qml_frame_ncols(x); j++) {
        const qml_column *a = qml_frame_col(x, j), *b = qml_frame_col(y, j);
        if (strcmp(a->name, b->name) || a->type != b->type || a->len != b->len || a->n_missing != b->n_missing)
            fail_msg("%s: column %zu: %s/%d/%zu/%zu against %s/%d/%zu/%zu", what, j, a->name, a->type, a->len,
                     a->n_missing, b->name, b->type, b->len, b->n_missing);
        for (size_t r = 0; r < a->len; r++) {
            int same = a->missing[r] == b->missing[r] &&
                       (a->type == QML_CATEGORICAL ? a->cat[r] == b->cat[r]
                                                   : memcmp(&a->num[r], &b->num[r], sizeof(double)) == 0);
            if (!same)
                fail_msg("%s: column %s row %zu differs", what, a->name, r);
        }
        if (a->type == QML_CATEGORICAL) {
            assert_int_equal(qml_dict_size(a->dict), qml_dict_size(b->dict));
            for (size_t k = 0; k < qml_dict_size(a->dict); k++)
                assert_string_equal(qml_dict_str(a->dict, (int32_t)k), qml_dict_str(b->dict, (int32_t)k));
        }
    }
}

static void reports_equal(const qml_clean_report *x, const qml_clean_report *y, const char *what)
{
    if (x->rows_in != y->rows_in || x->rows_out != y->rows_out || x->nsteps != y->nsteps)
        fail_msg("%s: report %zu/%zu/%zu against %zu/%zu/%zu", what, x->rows_in, x->rows_out, x->nsteps,
                 y->rows_in, y->rows_out, y->nsteps);
    for (size_t i = 0; i < x->nsteps; i++) {
        const qml_clean_step_report *a = &x->steps[i], *b = &y->steps[i];
        if (strcmp(a->op, b->op) || a->rows_in != b->rows_in || a->rows_out != b->rows_out ||
            a->cells_changed != b->cells_changed || strcmp(a->note, b->note))
            fail_msg("%s: step %zu: %s %zu->%zu \"%s\" against %s %zu->%zu \"%s\"", what, i, a->op, a->rows_in,
                     a->rows_out, a->note, b->op, b->rows_in, b->rows_out, b->note);
    }
}

static const char *const cmps[] = {"==", "!=", "<", "<=", ">", ">=", "starts_with", "not_starts_with", "in",
                                   "not_in"};

/* A random row step (row_only) or any step, as a JSON object. */
static json_t *random_step(int row_only)
{
    static const char *const cats[] = {"a", "b", "e"};
    static const char *const others[] = {"x", "t", "f"};
    int kind = (int)rnd(row_only ? 3 : 10);
    if (kind == 0) {
        json_t *cols = json_array();
        static const char *const all[] = {"a", "b", "e", "x", "t", "f"};
        for (int j = 0; j < 6; j++)
            if (rnd(4) == 0 && strcmp(all[j], "e") != 0)
                json_array_append_new(cols, json_string(all[j]));
        if (json_array_size(cols) == 0)
            json_array_append_new(cols, json_string(all[rnd(2) ? 0 : 3]));
        return json_pack("{s:s, s:o}", "op", "drop_missing", "columns", cols);
    }
    if (kind == 1) { /* a categorical filter */
        const char *cmp = cmps[rnd(10)];
        json_t *v;
        if (!strcmp(cmp, "in") || !strcmp(cmp, "not_in")) {
            v = json_array();
            for (uint32_t i = 0, m = rnd(5); i < m; i++)
                json_array_append_new(v, rnd(6) ? json_string(words[rnd(NWORDS)]) : json_integer(12346));
        } else {
            v = json_string(rnd(8) ? words[rnd(NWORDS)] : "absent");
        }
        return json_pack("{s:s, s:s, s:s, s:o, s:b}", "op", "filter", "column", cats[rnd(3)], "cmp", cmp,
                         "value", v, "keep_missing", rnd(4) == 0);
    }
    if (kind == 2) { /* a numeric, time or boolean filter */
        int c = (int)rnd(3);
        const char *cmp = cmps[rnd(6)];
        json_t *v = c == 0 ? json_real((double)rnd(7) - 1.5 + (rnd(2) ? 0.5 : 0))
                  : c == 1 ? json_string("2011-01-20")
                           : json_true();
        if (rnd(5) == 0 && c != 1) {
            cmp = rnd(2) ? "in" : "not_in";
            json_decref(v);
            v = json_pack("[f, f]", (double)rnd(6), c == 0 ? 100.0 : 0.0);
        }
        return json_pack("{s:s, s:s, s:s, s:o, s:b}", "op", "filter", "column", others[c], "cmp", cmp, "value",
                         v, "keep_missing", rnd(4) == 0);
    }
    if (kind == 3)
        return json_pack("{s:s, s:s, s:s}", "op", "time_window", "column", "t", "from", "2011-01-10");
    if (kind == 4 || kind == 5) { /* derive: a constant or a copy, new or replacing */
        static const char *const outs[] = {"weight", "a", "b", "x", "t", "f"};
        const char *out = outs[rnd(6)];
        if (rnd(2))
            return json_pack("{s:s, s:s, s:f}", "op", "derive", "output", out, "value", 1.0 + rnd(3));
        static const char *const srcs[] = {"a", "b", "e", "x", "t", "f"};
        return json_pack("{s:s, s:s, s:s}", "op", "derive", "output", out, "column", srcs[rnd(6)]);
    }
    if (kind == 6)
        return json_pack("{s:s, s:[s]}", "op", "dedupe", "keys", rnd(2) ? "a" : "x");
    if (kind == 7)
        return json_pack("{s:s, s:s, s:s}", "op", "impute", "column", rnd(2) ? "x" : "a", "strategy", "mode");
    if (kind == 8)
        return json_pack("{s:s, s:s, s:f}", "op", "clip", "column", "x", "max", 2.0);
    return json_pack("{s:s, s:s, s:s}", "op", "cast", "column", "a", "type", "numeric");
}

static void test_owned_equals_copying(void **state)
{
    (void)state;
    rng_state = 42;
    static const size_t sizes[] = {0, 1, 2, 7, 64, 300};
    for (int iter = 0; iter < 600; iter++) {
        size_t n = sizes[rnd(6)];
        qml_frame *f = random_frame(n), *before = copy_of(f);
        json_t *steps = json_array();
        for (uint32_t i = 0, m = 1 + rnd(7); i < m; i++)
            json_array_append_new(steps, random_step(0));
        char *js = json_dumps(steps, JSON_COMPACT);
        qml_clean_steps *s;
        qn_err e1, e2;
        assert_int_equal(qml_clean_from_json(steps, &s, &e1), 0);
        qml_frame *o1 = NULL, *o2 = NULL;
        qml_clean_report r1, r2;
        int rc1 = qml_clean_apply(f, s, &o1, &r1, &e1);
        int rc2 = qml_clean_apply_owned(copy_of(f), s, &o2, &r2, &e2);
        if (rc1 != rc2 || (rc1 < 0 && strcmp(e1.msg, e2.msg)))
            fail_msg("%s on %zu rows: %d \"%s\" against %d \"%s\"", js, n, rc1, rc1 < 0 ? e1.msg : "", rc2,
                     rc2 < 0 ? e2.msg : "");
        if (rc1 == 0) {
            frames_equal(o1, o2, js);
            reports_equal(&r1, &r2, js);
        }
        frames_equal(f, before, "the input of qml_clean_apply");
        qml_frame_free(o1);
        qml_frame_free(o2);
        qml_frame_free(f);
        qml_frame_free(before);
        qml_clean_free(s);
        json_decref(steps);
        free(js);
    }
}

/* ---- a per-row evaluation of the row steps ------------------------------- */

static const char *cell_str(const qml_column *c, size_t r)
{
    if (c->missing[r])
        return NULL;
    return qml_dict_str(c->dict, c->cat[r]); /* NULL: a code the dictionary lacks */
}

static int text_of(const json_t *v, char *buf, size_t cap, const char **out)
{
    if (json_is_string(v))
        *out = json_string_value(v);
    else if (json_is_integer(v))
        snprintf(buf, cap, "%lld", (long long)json_integer_value(v)), *out = buf;
    else
        return -1;
    return 0;
}

/* Whether row r passes the step; *miss set when the cell counts as missing. */
static int row_passes(const qml_frame *f, const json_t *st, size_t r, int *miss)
{
    const char *op = json_string_value(json_object_get(st, "op"));
    *miss = 0;
    if (!strcmp(op, "drop_missing")) {
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(st, "columns"), i, c) {
            if (qml_frame_col(f, (size_t)qml_frame_find(f, json_string_value(c)))->missing[r])
                return 0;
        }
        return 1;
    }
    if (!strcmp(op, "time_window")) {
        const qml_column *c = qml_frame_col(f, (size_t)qml_frame_find(f, "t"));
        *miss = c->missing[r];
        return !c->missing[r] && c->num[r] >= 1294617600.0; /* 2011-01-10 */
    }
    const qml_column *c = qml_frame_col(f, (size_t)qml_frame_find(f, json_string_value(json_object_get(st, "column"))));
    const char *cmp = json_string_value(json_object_get(st, "cmp"));
    json_t *v = json_object_get(st, "value");
    int keep_missing = json_is_true(json_object_get(st, "keep_missing"));
    if (c->type == QML_CATEGORICAL) {
        const char *s = cell_str(c, r);
        if (!s) {
            *miss = 1;
            return keep_missing;
        }
        char tb[40];
        const char *t = NULL;
        if (!strcmp(cmp, "in") || !strcmp(cmp, "not_in")) {
            int found = 0;
            for (size_t i = 0; i < json_array_size(v); i++)
                found |= text_of(json_array_get(v, i), tb, sizeof tb, &t) == 0 && !strcmp(s, t);
            return !strcmp(cmp, "in") ? found : !found;
        }
        assert_int_equal(text_of(v, tb, sizeof tb, &t), 0);
        if (!strcmp(cmp, "starts_with"))
            return !strncmp(s, t, strlen(t));
        if (!strcmp(cmp, "not_starts_with"))
            return strncmp(s, t, strlen(t)) != 0;
        int d = strcmp(s, t);
        return !strcmp(cmp, "==") ? d == 0 : !strcmp(cmp, "!=") ? d != 0 : !strcmp(cmp, "<") ? d < 0
             : !strcmp(cmp, "<=") ? d <= 0 : !strcmp(cmp, ">") ? d > 0 : d >= 0;
    }
    if (c->missing[r]) {
        *miss = 1;
        return keep_missing;
    }
    double x = c->num[r];
    if (!strcmp(cmp, "in") || !strcmp(cmp, "not_in")) {
        int found = 0;
        for (size_t i = 0; i < json_array_size(v); i++)
            found |= x == json_number_value(json_array_get(v, i));
        return !strcmp(cmp, "in") ? found : !found;
    }
    double y = c->type == QML_TIMESTAMP ? 1295481600.0 /* 2011-01-20 */
             : c->type == QML_BOOLEAN ? 1.0 : json_number_value(v);
    return !strcmp(cmp, "==") ? x == y : !strcmp(cmp, "!=") ? x != y : !strcmp(cmp, "<") ? x < y
         : !strcmp(cmp, "<=") ? x <= y : !strcmp(cmp, ">") ? x > y : x >= y;
}

static void test_row_steps_against_per_row(void **state)
{
    (void)state;
    rng_state = 7;
    static const size_t sizes[] = {0, 1, 5, 40, 257};
    for (int iter = 0; iter < 600; iter++) {
        size_t n = sizes[rnd(5)];
        qml_frame *f = random_frame(n);
        json_t *steps = json_array();
        for (uint32_t i = 0, m = 1 + rnd(6); i < m; i++)
            json_array_append_new(steps, random_step(1));
        char *js = json_dumps(steps, JSON_COMPACT);
        qml_clean_steps *s;
        qn_err err;
        assert_int_equal(qml_clean_from_json(steps, &s, &err), 0);
        uint8_t *alive = malloc(n ? n : 1);
        memset(alive, 1, n);
        size_t nalive = n;
        qml_clean_report want;
        memset(&want, 0, sizeof want);
        want.nsteps = json_array_size(steps);
        size_t want_missing[QML_CLEAN_MAX_STEPS] = {0};
        for (size_t i = 0; i < want.nsteps; i++) {
            want.steps[i].rows_in = nalive;
            size_t k = 0;
            for (size_t r = 0; r < n; r++) {
                int miss;
                int pass = row_passes(f, json_array_get(steps, i), r, &miss);
                want_missing[i] += miss && alive[r];
                alive[r] = alive[r] && pass;
                k += alive[r];
            }
            want.steps[i].rows_out = nalive = k;
        }
        for (int owned = 0; owned < 2; owned++) {
            qml_frame *out;
            qml_clean_report rep;
            int rc = owned ? qml_clean_apply_owned(copy_of(f), s, &out, &rep, &err)
                           : qml_clean_apply(f, s, &out, &rep, &err);
            if (rc < 0)
                fail_msg("%s: %s", js, err.msg);
            assert_int_equal(rep.nsteps, want.nsteps);
            for (size_t i = 0; i < want.nsteps; i++) {
                if (rep.steps[i].rows_in != want.steps[i].rows_in || rep.steps[i].rows_out != want.steps[i].rows_out)
                    fail_msg("%s step %zu: %zu->%zu, per row %zu->%zu", js, i, rep.steps[i].rows_in,
                             rep.steps[i].rows_out, want.steps[i].rows_in, want.steps[i].rows_out);
                char had[48];
                snprintf(had, sizeof had, "(%zu had it missing)", want_missing[i]);
                if (!strcmp(rep.steps[i].op, "filter") && !strstr(rep.steps[i].note, had))
                    fail_msg("%s step %zu: \"%s\", per row %s", js, i, rep.steps[i].note, had);
            }
            /* The kept rows, in order: x's cells (or their missing flags) match. */
            assert_int_equal(qml_frame_nrows(out), nalive);
            const qml_column *ox = qml_frame_col(out, 3), *fx = qml_frame_col(f, 3);
            for (size_t r = 0, k = 0; r < n; r++) {
                if (!alive[r])
                    continue;
                assert_int_equal(ox->missing[k], fx->missing[r]);
                if (!fx->missing[r])
                    assert_true(ox->num[k] == fx->num[r]);
                k++;
            }
            qml_frame_free(out);
        }
        free(alive);
        qml_frame_free(f);
        qml_clean_free(s);
        json_decref(steps);
        free(js);
    }
}

/* The Online Retail steps on a frame shaped like it, both ways: the owned
 * path's frame is the copying path's, and the derived weight is 1. */
static void test_owned_online_retail_steps(void **state)
{
    (void)state;
    const char *js =
        "[{\"op\":\"drop_missing\",\"columns\":[\"b\"]},"
        " {\"op\":\"filter\",\"column\":\"a\",\"cmp\":\"not_starts_with\",\"value\":\"C\"},"
        " {\"op\":\"filter\",\"column\":\"x\",\"cmp\":\">\",\"value\":0},"
        " {\"op\":\"filter\",\"column\":\"b\",\"cmp\":\"not_in\",\"value\":[\"POST\",\"D\",\"M\",\"DOT\"]},"
        " {\"op\":\"filter\",\"column\":\"b\",\"cmp\":\"not_starts_with\",\"value\":\"gift_0001\"},"
        " {\"op\":\"derive\",\"output\":\"weight\",\"value\":1}]";
    qml_clean_steps *s;
    qn_err err;
    assert_int_equal(qml_clean_parse(js, strlen(js), &s, &err), 0);
    rng_state = 99;
    qml_frame *f = random_frame(5000), *o1, *o2;
    qml_clean_report r1, r2;
    assert_int_equal(qml_clean_apply(f, s, &o1, &r1, &err), 0);
    assert_int_equal(qml_clean_apply_owned(copy_of(f), s, &o2, &r2, &err), 0);
    frames_equal(o1, o2, js);
    reports_equal(&r1, &r2, js);
    assert_true(qml_frame_nrows(o2) > 0 && qml_frame_nrows(o2) < 5000);
    const qml_column *w = qml_frame_col(o2, (size_t)qml_frame_find(o2, "weight"));
    for (size_t r = 0; r < w->len; r++)
        assert_true(w->num[r] == 1 && !w->missing[r]);
    qml_frame_free(o1);
    qml_frame_free(o2);
    qml_frame_free(f);
    qml_clean_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_owned_equals_copying),
        cmocka_unit_test(test_row_steps_against_per_row),
        cmocka_unit_test(test_owned_online_retail_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
