/* test_eval.c - splits, metrics (hand-computed cases and a numpy/scipy
 * reference, ref_eval.py), recommender evaluation and the popularity baseline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ml/eval.h"

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v ? v : dflt;
}

static void test_classifier_regressor_by_hand(void **state)
{
    qn_err err;
    double v;
    /* AUC: positives 0.35, 0.8; negatives 0.1, 0.4. Pairs right: (0.35>0.1),
     * (0.8>0.1), (0.8>0.4) = 3 of 4. */
    double y[] = {0, 0, 1, 1}, s[] = {0.1, 0.4, 0.35, 0.8};
    assert_int_equal(qml_metric_roc_auc(y, s, 4, &v, &err), 0);
    assert_float_equal(v, 0.75, 1e-15);
    /* Ties count 1/2: scores all equal -> 0.5; one tie across classes. */
    double t[] = {0.5, 0.5, 0.5, 0.5};
    assert_int_equal(qml_metric_roc_auc(y, t, 4, &v, &err), 0);
    assert_float_equal(v, 0.5, 1e-15);
    double t2[] = {0.1, 0.4, 0.4, 0.8};   /* (0.4 vs 0.4) tie: 3.5 / 4 */
    assert_int_equal(qml_metric_roc_auc(y, t2, 4, &v, &err), 0);
    assert_float_equal(v, 0.875, 1e-15);
    double one_class[] = {1, 1, 1, 1};
    assert_int_equal(qml_metric_roc_auc(one_class, s, 4, &v, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "both classes"));

    /* Log loss: -(log .9 + log .8 + log(1-.3) + log(1-.4))/4; clipping keeps
     * p = 0 for a positive finite: -log(1e-15)/1. */
    double yl[] = {1, 1, 0, 0}, pl[] = {0.9, 0.8, 0.3, 0.4};
    assert_int_equal(qml_metric_log_loss(yl, pl, 4, 0, &v, &err), 0);
    assert_float_equal(v, -(log(0.9) + log(0.8) + log(0.7) + log(0.6)) / 4, 1e-15);
    double y1[] = {1}, p0[] = {0};
    assert_int_equal(qml_metric_log_loss(y1, p0, 1, 0, &v, &err), 0);
    assert_float_equal(v, -log(1e-15), 1e-12);
    double y2[] = {2};
    assert_int_equal(qml_metric_log_loss(y2, p0, 1, 0, &v, &err), QN_INVALID_ARGUMENT);

    double a[] = {1, 2, 3, 4}, b[] = {1, 2, 3, 5};
    assert_int_equal(qml_metric_accuracy(a, b, 4, &v, &err), 0);
    assert_float_equal(v, 0.75, 0);
    assert_int_equal(qml_metric_rmse(a, b, 4, &v, &err), 0);
    assert_float_equal(v, 0.5, 1e-15);           /* sqrt(1/4) */
    assert_int_equal(qml_metric_mae(a, b, 4, &v, &err), 0);
    assert_float_equal(v, 0.25, 1e-15);
    assert_int_equal(qml_metric_r2(a, b, 4, &v, &err), 0);
    assert_float_equal(v, 1 - 1.0 / 5.0, 1e-15); /* SS_tot = 2.25+.25+.25+2.25 = 5 */
    double c[] = {2, 2}, c2[] = {2, 3};
    assert_int_equal(qml_metric_r2(c, c, 2, &v, &err), 0);
    assert_float_equal(v, 1, 0);
    assert_int_equal(qml_metric_r2(c, c2, 2, &v, &err), 0);
    assert_float_equal(v, 0, 0);
    assert_int_equal(qml_metric_rmse(a, b, 0, &v, &err), QN_INVALID_ARGUMENT);
}

static void test_rec_user_by_hand(void **state)
{
    /* recs 1 2 3 4 5, relevant {2, 5, 9}, k = 5, 10 candidates.
     * hits at 2 and 5: P = 2/5, R = 2/3, AP = (1/2 + 2/5) / min(5, 3) = 0.3,
     * NDCG = (1/log2 3 + 1/log2 6) / (1 + 1/log2 3 + 1/log2 4),
     * AUC: 7 negatives (3 listed, 4 not); item 2 beats 3, 4 and the 4 unlisted
     * = 6; item 5 beats the 4 unlisted = 4; item 9 (unlisted) ties the 4
     * unlisted = 2; (6 + 4 + 2) / (3 * 7) = 12/21. */
    int32_t recs[] = {1, 2, 3, 4, 5}, rel[] = {9, 5, 2};
    qml_rec_user m;
    qn_err err;
    assert_int_equal(qml_rec_user_metrics(recs, 5, rel, 3, 5, 10, &m, &err), 0);
    assert_float_equal(m.precision, 0.4, 1e-15);
    assert_float_equal(m.recall, 2.0 / 3, 1e-15);
    assert_float_equal(m.ap, 0.3, 1e-15);
    assert_float_equal(m.ndcg, (1 / log2(3) + 1 / log2(6)) / (1 + 1 / log2(3) + 0.5), 1e-15);
    assert_float_equal(m.auc, 12.0 / 21, 1e-15);
    /* k = 2: P = 1/2, R = 1/3, AP = (1/2) / min(2, 3) = 0.25. */
    assert_int_equal(qml_rec_user_metrics(recs, 5, rel, 3, 2, 10, &m, &err), 0);
    assert_float_equal(m.precision, 0.5, 1e-15);
    assert_float_equal(m.ap, 0.25, 1e-15);
    /* A perfect list. */
    int32_t best[] = {2, 5, 9};
    assert_int_equal(qml_rec_user_metrics(best, 3, rel, 3, 3, 10, &m, &err), 0);
    assert_float_equal(m.ap, 1, 1e-15);
    assert_float_equal(m.ndcg, 1, 1e-15);
    assert_float_equal(m.auc, 1, 1e-15);
    assert_int_equal(qml_rec_user_metrics(recs, 5, rel, 0, 5, 10, &m, &err), QN_INVALID_ARGUMENT);
    assert_int_equal(qml_rec_user_metrics(recs, 5, rel, 3, 5, 4, &m, &err), QN_INVALID_ARGUMENT);
}

/* Every metric against ref_eval.py (numpy + scipy.stats.rankdata) on 1000
 * random rows with tied scores and 60 random ranking cases.
 * Tolerance: 1e-12 relative (only summation order differs). */
static void test_against_numpy(void **state)
{
    char data[512], cmd[1536];
    snprintf(data, sizeof data, "%s/eval_ref.txt", env_or("QUERN_TEST_WORK", "/tmp"));
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/unit/ml/ref_eval.py %s",
             env_or("QUERN_SOURCE_DIR", "."), data);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    double want[11];
    for (int i = 0; i < 11; i++)
        assert_int_equal(fscanf(p, "%lf", &want[i]), 1);
    assert_int_equal(pclose(p), 0);

    FILE *f = fopen(data, "r");
    assert_non_null(f);
    size_t n;
    assert_int_equal(fscanf(f, "%zu", &n), 1);
    double *col[6];
    for (int c = 0; c < 6; c++)
        col[c] = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < 6; c++)
            assert_int_equal(fscanf(f, "%lf", &col[c][i]), 1);
    double got[11];
    qn_err err;
    assert_int_equal(qml_metric_accuracy(col[0], col[5], n, &got[0], &err), 0);
    assert_int_equal(qml_metric_log_loss(col[0], col[2], n, 0, &got[1], &err), 0);
    assert_int_equal(qml_metric_roc_auc(col[0], col[1], n, &got[2], &err), 0);
    assert_int_equal(qml_metric_rmse(col[3], col[4], n, &got[3], &err), 0);
    assert_int_equal(qml_metric_mae(col[3], col[4], n, &got[4], &err), 0);
    assert_int_equal(qml_metric_r2(col[3], col[4], n, &got[5], &err), 0);

    size_t nu, k;
    assert_int_equal(fscanf(f, "%zu %zu", &nu, &k), 2);
    double sum[5] = {0};
    size_t n_auc = 0;
    for (size_t u = 0; u < nu; u++) {
        size_t n_cand, n_rel, n_recs;
        int32_t rel[16], recs[64];
        assert_int_equal(fscanf(f, "%zu %zu", &n_cand, &n_rel), 2);
        for (size_t i = 0; i < n_rel; i++)
            assert_int_equal(fscanf(f, "%d", &rel[i]), 1);
        assert_int_equal(fscanf(f, "%zu", &n_recs), 1);
        for (size_t i = 0; i < n_recs; i++)
            assert_int_equal(fscanf(f, "%d", &recs[i]), 1);
        qml_rec_user m;
        assert_int_equal(qml_rec_user_metrics(recs, n_recs, rel, n_rel, k, n_cand, &m, &err), 0);
        sum[0] += m.precision;
        sum[1] += m.recall;
        sum[2] += m.ap;
        sum[3] += m.ndcg;
        if (!isnan(m.auc)) {
            sum[4] += m.auc;
            n_auc++;
        }
    }
    fclose(f);
    for (int i = 0; i < 4; i++)
        got[6 + i] = sum[i] / (double)nu;
    got[10] = sum[4] / (double)n_auc;
    static const char *names[] = {"accuracy", "log_loss", "roc_auc", "rmse", "mae", "r2",
                                  "precision@k", "recall@k", "map@k", "ndcg@k", "auc"};
    for (int i = 0; i < 11; i++) {
        if (fabs(got[i] - want[i]) > 1e-12 * fabs(want[i]) + 1e-15)
            fail_msg("%s: got %.17g, numpy %.17g", names[i], got[i], want[i]);
    }
    for (int c = 0; c < 6; c++)
        free(col[c]);
}

static void test_splits(void **state)
{
    qn_err err;
    qml_split a, b, c;
    assert_int_equal(qml_split_random(1000, 0.25, 1, &a, &err), 0);
    assert_int_equal(a.n_test, 250);
    assert_int_equal(a.n_train, 750);
    /* disjoint, covering, ascending */
    uint8_t seen[1000] = {0};
    for (size_t i = 0; i < a.n_test; i++) {
        seen[a.test[i]]++;
        if (i) assert_true(a.test[i] > a.test[i - 1]);
    }
    for (size_t i = 0; i < a.n_train; i++)
        seen[a.train[i]]++;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(seen[i], 1);
    assert_int_equal(qml_split_random(1000, 0.25, 1, &b, &err), 0);
    assert_memory_equal(a.test, b.test, a.n_test * sizeof *a.test);
    assert_int_equal(qml_split_random(1000, 0.25, 2, &c, &err), 0);
    assert_true(memcmp(a.test, c.test, a.n_test * sizeof *a.test) != 0);
    qml_split_free(&a);
    qml_split_free(&b);
    qml_split_free(&c);
    assert_int_equal(qml_split_random(10, 1.5, 1, &a, &err), QN_INVALID_ARGUMENT);

    double t[] = {5, 1, 9, 3, 7};
    assert_int_equal(qml_split_by_time(t, 5, 5, &a, &err), 0);
    assert_int_equal(a.n_train, 2);
    assert_int_equal(a.train[0], 1);
    assert_int_equal(a.train[1], 3);
    assert_int_equal(a.n_test, 3);
    qml_split_free(&a);
    t[2] = NAN;
    assert_int_equal(qml_split_by_time(t, 5, 5, &a, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "row 2"));
}

static void test_leave_k_out(void **state)
{
    qn_err err;
    /* 50 users; user u has u % 7 items (0..6). */
    int32_t r[400], c[400];
    float v[400];
    size_t n = 0;
    for (int u = 0; u < 50; u++)
        for (int j = 0; j < u % 7; j++) {
            r[n] = u;
            c[n] = (u * 3 + j * 5) % 40;
            v[n++] = 1.0f + (float)j;
        }
    qml_csr *m, *tr, *te;
    assert_int_equal(qml_csr_from_coo(50, 40, r, c, v, n, &m, &err), 0);
    assert_int_equal(qml_split_csr_leave_k_out(m, 2, 9, &tr, &te, &err), 0);
    assert_int_equal(tr->nnz + te->nnz, m->nnz);
    for (int u = 0; u < 50; u++) {
        int64_t all = m->indptr[u + 1] - m->indptr[u];
        int64_t held = te->indptr[u + 1] - te->indptr[u];
        assert_int_equal(held, all > 2 ? 2 : 0);
        /* disjoint: no held-out item stays in train */
        for (int64_t i = te->indptr[u]; i < te->indptr[u + 1]; i++)
            for (int64_t j = tr->indptr[u]; j < tr->indptr[u + 1]; j++)
                assert_int_not_equal(te->indices[i], tr->indices[j]);
    }
    qml_csr_free(tr);
    qml_csr_free(te);
    qml_csr_free(m);

    /* Interactions with times: the latest distinct item is held out, with
     * every event of that (user, item) pair. User 0: item 3 at t=1 and t=9,
     * item 4 at t=5 -> item 3 held out (latest 9), both its events summed. */
    int32_t users[] = {0, 0, 0, 1, 1, 2};
    int32_t items[] = {3, 4, 3, 1, 2, 0};
    double times[] = {1, 5, 9, 2, 1, 4};
    qml_events in = {6, users, items, NULL, times, 3, 5};
    assert_int_equal(qml_split_events_leave_k_out(&in, 1, 0, &tr, &te, &err), 0);
    assert_int_equal(te->indptr[1] - te->indptr[0], 1);
    assert_int_equal(te->indices[te->indptr[0]], 3);
    assert_float_equal(te->data[te->indptr[0]], 2.0, 0);
    assert_int_equal(te->indices[te->indptr[1]], 1);        /* user 1: item 1 at t=2 */
    assert_int_equal(te->indptr[3] - te->indptr[2], 0);     /* user 2 has one item: kept */
    assert_int_equal(tr->nnz, 3);
    qml_csr_free(tr);
    qml_csr_free(te);
    assert_int_equal(qml_split_events_by_time(&in, 4, &tr, &te, &err), 0);
    assert_int_equal(tr->nnz, 3);   /* (0,3) t1, (1,1) t2, (1,2) t1 */
    assert_int_equal(te->nnz, 3);   /* (0,4) t5, (0,3) t9, (2,0) t4 */
    qml_csr_free(tr);
    qml_csr_free(te);
    items[2] = 5;
    assert_int_equal(qml_split_events_leave_k_out(&in, 1, 0, &tr, &te, &err),
                     QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "interaction 2"));
}

/* An oracle that knows the test set: returns the held-out items first. */
static int oracle(void *ctx, int32_t user, size_t n, int32_t *items, size_t *n_out, qn_err *err)
{
    const qml_csr *test = ctx;
    size_t got = 0;
    for (int64_t i = test->indptr[user]; i < test->indptr[user + 1] && got < n; i++)
        items[got++] = test->indices[i];
    *n_out = got;
    return 0;
}

static int failing(void *ctx, int32_t user, size_t n, int32_t *items, size_t *n_out, qn_err *err)
{
    return qn_err_set(err, QN_UNAVAILABLE, "model for user %d not loaded", user);
}

static void test_popularity_and_evaluator(void **state)
{
    qn_err err;
    /* 4 users x 5 items. Training counts: item 0: 3 users, item 1: 2,
     * item 2: 1, items 3, 4: 0. */
    int32_t tr_r[] = {0, 0, 1, 1, 2, 3}, tr_c[] = {0, 1, 0, 2, 0, 1};
    float ones[] = {1, 1, 1, 1, 1, 1};
    int32_t te_r[] = {0, 1, 2, 2}, te_c[] = {2, 3, 1, 4};
    qml_csr *tr, *te;
    assert_int_equal(qml_csr_from_coo(4, 5, tr_r, tr_c, ones, 6, &tr, &err), 0);
    assert_int_equal(qml_csr_from_coo(4, 5, te_r, te_c, ones, 4, &te, &err), 0);

    qml_popularity *pop = qml_popularity_new(tr, &err);
    int32_t items[5];
    size_t got;
    /* user 0 saw 0, 1 -> 2, 3, 4 */
    assert_int_equal(qml_popularity_recommend(pop, 0, 5, items, &got, &err), 0);
    assert_int_equal(got, 3);
    assert_int_equal(items[0], 2);
    assert_int_equal(items[1], 3);
    assert_int_equal(items[2], 4);
    qml_popularity_free(pop);

    /* k = 1: user 0 gets [2] (hit), user 1 (saw 0, 2) gets [1] (miss, wants 3),
     * user 2 (saw 0) gets [1] (hit; wants 1, 4); user 3 has no test items.
     * P = (1 + 0 + 1)/3, R = (1 + 0 + 1/2)/3, MAP = (1 + 0 + 1)/3,
     * NDCG = (1 + 0 + 1)/3 (IDCG counts min(k, |R|) = 1 hit), coverage = |{1, 2}|/5. */
    qml_rec_report rep;
    assert_int_equal(qml_eval_popularity(tr, te, 1, 0, &rep, &err), 0);
    assert_int_equal(rep.n_users, 3);
    assert_float_equal(rep.precision, 2.0 / 3, 1e-15);
    assert_float_equal(rep.recall, 1.5 / 3, 1e-15);
    assert_float_equal(rep.map, 2.0 / 3, 1e-15);
    assert_float_equal(rep.ndcg, 2.0 / 3, 1e-15);
    assert_float_equal(rep.coverage, 0.4, 1e-15);
    /* AUC with the full ranking (rank_depth 5): user 0 candidates {2,3,4},
     * ranked 2,3,4, relevant 2 -> 1. User 1 candidates {1,3,4}: ranked 1,3,4,
     * relevant 3 beats 4 only -> 1/2. User 2 candidates {1,2,3,4}: ranked
     * 1,2,3,4, relevant {1,4}: 1 beats 2,3; 4 beats none -> 2/4. */
    assert_int_equal(qml_eval_popularity(tr, te, 1, 5, &rep, &err), 0);
    assert_float_equal(rep.auc, (1 + 0.5 + 0.5) / 3, 1e-15);
    assert_int_equal(rep.n_auc_users, 3);
    assert_float_equal(rep.precision, 2.0 / 3, 1e-15);  /* unchanged by depth */

    /* The oracle: perfect recall and AUC. */
    assert_int_equal(qml_eval_recommender(tr, te, oracle, te, 2, 0, &rep, &err), 0);
    assert_float_equal(rep.recall, 1, 1e-15);
    assert_float_equal(rep.ndcg, 1, 1e-15);
    assert_float_equal(rep.auc, 1, 1e-15);

    /* A callback's error comes through; shapes must agree. */
    assert_int_equal(qml_eval_recommender(tr, te, failing, NULL, 2, 0, &rep, &err),
                     QN_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "user 0"));
    qml_csr *small;
    assert_int_equal(qml_csr_from_coo(4, 4, NULL, NULL, NULL, 0, &small, &err), 0);
    assert_int_equal(qml_eval_popularity(tr, small, 2, 0, &rep, &err), QN_INVALID_ARGUMENT);
    qml_csr_free(small);
    qml_csr_free(tr);
    qml_csr_free(te);
}

/* Brier, mean error, the calibration table and CBPE against ref_quality.py
 * (numpy) on 20000 calibrated rows (y ~ Bernoulli(p)); by hand on small
 * cases; and the CBPE estimate close to the realised accuracy and AUC. */
static void test_quality_metrics(void **state)
{
    qn_err err;
    double v, acc, auc;
    double yb[] = {1, 0, 1, 0}, pb[] = {0.9, 0.2, 0.6, 0.5};
    assert_int_equal(qml_metric_brier(yb, pb, 4, &v, &err), 0);
    assert_float_equal(v, (0.01 + 0.04 + 0.16 + 0.25) / 4, 1e-15);
    double bad[] = {1.5};
    assert_int_equal(qml_metric_brier(yb, bad, 1, &v, &err), QN_INVALID_ARGUMENT);
    double yr[] = {1, 2, 3}, yh[] = {2, 2, 5};
    assert_int_equal(qml_metric_mean_error(yr, yh, 3, &v, &err), 0);
    assert_float_equal(v, 1.0, 1e-15);
    /* CBPE by hand: p = {1, 0}: sure of both, AUC 1, accuracy 1; all p = 1:
     * no expected negatives, AUC undefined (NaN). */
    double sure[] = {1, 0};
    assert_int_equal(qml_cbpe_binary(NULL, sure, 2, &acc, &auc, &err), 0);
    assert_float_equal(acc, 1.0, 1e-15);
    assert_float_equal(auc, 1.0, 1e-15);
    double ones[] = {1, 1};
    assert_int_equal(qml_cbpe_binary(NULL, ones, 2, &acc, &auc, &err), 0);
    assert_true(isnan(auc));
    /* All p = 0.5: a coin; AUC 0.5 (one step, one trapezoid). */
    double half[] = {0.5, 0.5, 0.5};
    assert_int_equal(qml_cbpe_binary(NULL, half, 3, &acc, &auc, &err), 0);
    assert_float_equal(auc, 0.5, 1e-15);
    assert_float_equal(acc, 0.5, 1e-15);
    /* The model's score ranks and decides; the calibrated p weighs. */
    double sc[] = {0.9, 0.2}, pcal[] = {0.6, 0.3};
    assert_int_equal(qml_cbpe_binary(sc, pcal, 2, &acc, &auc, &err), 0);
    assert_float_equal(acc, (0.6 + 0.7) / 2, 1e-15);
    assert_float_equal(auc, (0.4 / 1.1) * 0.5 * (0.6 / 0.9) + (0.7 / 1.1) * 0.5 * (1.5 / 0.9), 1e-15);
    /* Calibration: the rate of p's bin, p itself when the bin is empty. */
    qml_calibration cal;
    double yc[] = {1, 0, 0, 1}, pc[] = {0.15, 0.12, 0.18, 1.0};
    assert_int_equal(qml_calibration_table(yc, pc, 4, &cal, &err), 0);
    assert_float_equal(cal.n[1], 3, 0);
    assert_float_equal(cal.rate[1], 1.0 / 3, 1e-15);
    assert_float_equal(cal.n[9], 1, 0);
    assert_true(isnan(cal.rate[5]));
    assert_float_equal(qml_calibrate(&cal, 0.11), 1.0 / 3, 1e-15);
    assert_float_equal(qml_calibrate(&cal, 0.55), 0.55, 1e-15);

    char data[512], cmd[1536];
    snprintf(data, sizeof data, "%s/quality_ref.txt", env_or("QUERN_TEST_WORK", "/tmp"));
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/unit/ml/ref_quality.py %s",
             env_or("QUERN_SOURCE_DIR", "."), data);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    double want[26];
    for (int i = 0; i < 26; i++)
        assert_int_equal(fscanf(p, "%lf", &want[i]), 1);
    assert_int_equal(pclose(p), 0);
    FILE *f = fopen(data, "r");
    assert_non_null(f);
    size_t n;
    assert_int_equal(fscanf(f, "%zu", &n), 1);
    double *y = malloc(n * sizeof *y), *pr = malloc(n * sizeof *pr), *r = malloc(n * sizeof *r),
           *h = malloc(n * sizeof *h), *cls = malloc(n * sizeof *cls);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(fscanf(f, "%lf %lf %lf %lf", &y[i], &pr[i], &r[i], &h[i]), 4);
        cls[i] = pr[i] >= 0.5;
    }
    fclose(f);
    assert_int_equal(qml_metric_brier(y, pr, n, &v, &err), 0);
    assert_float_equal(v, want[0], 1e-12 * fabs(want[0]));
    assert_int_equal(qml_metric_mean_error(r, h, n, &v, &err), 0);
    assert_float_equal(v, want[1], 1e-10 * fabs(want[1]));
    assert_int_equal(qml_calibration_table(y, pr, n, &cal, &err), 0);
    for (int b = 0; b < QML_CAL_BINS; b++) {
        assert_float_equal(cal.n[b], want[2 + b], 0);
        if (cal.n[b] > 0)
            assert_float_equal(cal.rate[b], want[12 + b], 1e-12);
    }
    assert_int_equal(qml_cbpe_binary(NULL, pr, n, &acc, &auc, &err), 0);
    assert_float_equal(acc, want[22], 1e-12);
    assert_float_equal(auc, want[23], 1e-9);
    /* On calibrated data the estimate is close to what the labels say. */
    double racc, rauc;
    assert_int_equal(qml_metric_accuracy(y, cls, n, &racc, &err), 0);
    assert_int_equal(qml_metric_roc_auc(y, pr, n, &rauc, &err), 0);
    assert_float_equal(racc, want[24], 1e-12);
    assert_float_equal(rauc, want[25], 1e-12);
    assert_true(fabs(acc - racc) < 0.01);
    assert_true(fabs(auc - rauc) < 0.01);
    free(y);
    free(pr);
    free(r);
    free(h);
    free(cls);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classifier_regressor_by_hand),
        cmocka_unit_test(test_rec_user_by_hand),
        cmocka_unit_test(test_against_numpy),
        cmocka_unit_test(test_quality_metrics),
        cmocka_unit_test(test_splits),
        cmocka_unit_test(test_leave_k_out),
        cmocka_unit_test(test_popularity_and_evaluator),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
