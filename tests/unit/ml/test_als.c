/* test_als.c - implicit ALS against simple references.
 *
 * Data: synthetic users and items in planted clusters (a user interacts
 * mostly with its own cluster's items, some popular ones anywhere), so the
 * model has structure to find and the popularity baseline does not.
 * Tolerances are stated where they are used. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ml/als.h"
#include "ml/npy.h"

#define NU 600
#define NI 200
#define NCLUSTER 5
#define PER_USER 12
#define HELD 3

static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int cluster_of_item(int i) { return i % NCLUSTER; }

/* An item of cluster c, skewed towards low ranks within the cluster. */
static int item_in_cluster(int c)
{
    int per = NI / NCLUSTER;
    int a = (int)(rnd() % per), b = (int)(rnd() % per);
    return (a < b ? a : b) * NCLUSTER + c;
}

typedef struct {
    qml_csr *train;
    int held[NU][HELD];
} dataset;

static int has(const int *v, int n, int x)
{
    for (int k = 0; k < n; k++)
        if (v[k] == x)
            return 1;
    return 0;
}

static void make_data(dataset *d, uint64_t seed)
{
    int32_t rows[NU * PER_USER], cols[NU * PER_USER];
    float vals[NU * PER_USER];
    size_t n = 0;
    rng_state = seed;
    for (int u = 0; u < NU; u++) {
        int c = u % NCLUSTER, mine[PER_USER + HELD], nm = 0;
        while (nm < PER_USER) {
            int i = rnd() % 10 < 8 ? item_in_cluster(c) : item_in_cluster((int)(rnd() % NCLUSTER));
            if (has(mine, nm, i))
                continue;
            mine[nm++] = i;
            rows[n] = u;
            cols[n] = i;
            vals[n++] = (float)(1 + rnd() % 4);
        }
        for (int h = 0; h < HELD;) {
            int i = item_in_cluster(c);
            if (has(mine, nm, i))
                continue;
            mine[nm++] = i;
            d->held[u][h++] = i;
        }
    }
    qn_err err;
    assert_int_equal(qml_csr_from_coo(NU, NI, rows, cols, vals, n, &d->train, &err), 0);
}

static dataset data;
static char workdir[1024];

static int setup(void **state)
{
    make_data(&data, 12345);
    const char *w = getenv("QUERN_TEST_WORK");
    snprintf(workdir, sizeof workdir, "%s/als", w ? w : "/tmp");
    mkdir(workdir, 0777);
    return 0;
}

static int teardown(void **state)
{
    qml_csr_free(data.train);
    return 0;
}

static void base_params(qml_als_params *p)
{
    qml_als_params_init(p);
    p->factors = 16;
    p->regularization = 0.1f;
    p->alpha = 2.0f;
    p->iterations = 10;
}

/* ---- (a) one iteration against an exact dense solve ---- */

/* Solves S z = b for symmetric positive definite S (n x n) by Cholesky, in double. */
static void cholesky_solve(double *S, double *b, int n)
{
    for (int j = 0; j < n; j++) {
        for (int k = 0; k < j; k++)
            S[j * n + j] -= S[j * n + k] * S[j * n + k];
        S[j * n + j] = sqrt(S[j * n + j]);
        for (int i = j + 1; i < n; i++) {
            for (int k = 0; k < j; k++)
                S[i * n + j] -= S[i * n + k] * S[j * n + k];
            S[i * n + j] /= S[j * n + j];
        }
    }
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < i; k++)
            b[i] -= S[i * n + k] * b[k];
        b[i] /= S[i * n + i];
    }
    for (int i = n - 1; i >= 0; i--) {
        for (int k = i + 1; k < n; k++)
            b[i] -= S[k * n + i] * b[k];
        b[i] /= S[i * n + i];
    }
}

/* X[r] = argmin of the row's weighted least squares, exactly: the dense
 * (Y^T C_r Y + lambda I) x = Y^T C_r p_r over all ny columns, zeros included. */
static void exact_half(const qml_csr *m, double *X, const double *Y, int ny, int f, double lambda,
                       double alpha)
{
    double *S = malloc(sizeof(double) * f * f), *b = malloc(sizeof(double) * f);
    double *c = malloc(sizeof(double) * ny), *pref = malloc(sizeof(double) * ny);
    for (int r = 0; r < m->nrows; r++) {
        for (int i = 0; i < ny; i++)
            c[i] = 1, pref[i] = 0;
        for (int64_t e = m->indptr[r]; e < m->indptr[r + 1]; e++) {
            c[m->indices[e]] = 1 + alpha * m->data[e];
            pref[m->indices[e]] = 1;
        }
        for (int a = 0; a < f; a++) {
            b[a] = 0;
            for (int bb = 0; bb < f; bb++)
                S[a * f + bb] = a == bb ? lambda : 0;
        }
        for (int i = 0; i < ny; i++) {
            const double *y = Y + (size_t)i * f;
            for (int a = 0; a < f; a++) {
                b[a] += c[i] * pref[i] * y[a];
                for (int bb = 0; bb < f; bb++)
                    S[a * f + bb] += c[i] * y[a] * y[bb];
            }
        }
        cholesky_solve(S, b, f);
        memcpy(X + (size_t)r * f, b, sizeof(double) * f);
    }
    free(S);
    free(b);
    free(c);
    free(pref);
}

static void test_one_iteration_matches_exact_solve(void **state)
{
    qn_err err;
    qml_als_params p;
    base_params(&p);
    p.factors = 8;
    p.iterations = 1;
    p.cg_steps = 32; /* >= factors: CG is exact in exact arithmetic */
    qml_als *m = qml_als_new(NU, NI, p.factors, 7, &err);
    assert_non_null(m);
    int f = p.factors;
    double *X = malloc(sizeof(double) * NU * f), *Y = malloc(sizeof(double) * NI * f);
    for (int k = 0; k < NI * f; k++)
        Y[k] = qml_als_item_factors(m)[k];
    assert_int_equal(qml_als_train(m, data.train, &p, &err), 0);

    qml_csr *iu = qml_csr_transpose(data.train, &err);
    exact_half(data.train, X, Y, NI, f, p.regularization, p.alpha);
    exact_half(iu, Y, X, NU, f, p.regularization, p.alpha);
    /* Tolerance: 1e-3 of the largest factor magnitude (float32 CG against a
     * double Cholesky solve; a wrong term in the normal equations is off by
     * far more). */
    double maxabs = 0, maxdiff = 0;
    for (int k = 0; k < NU * f; k++) {
        maxabs = fmax(maxabs, fabs(X[k]));
        maxdiff = fmax(maxdiff, fabs(X[k] - qml_als_user_factors(m)[k]));
    }
    for (int k = 0; k < NI * f; k++) {
        maxabs = fmax(maxabs, fabs(Y[k]));
        maxdiff = fmax(maxdiff, fabs(Y[k] - qml_als_item_factors(m)[k]));
    }
    if (maxdiff > 1e-3 * maxabs)
        fail_msg("factors differ from the exact solve by %g (max |factor| %g)", maxdiff, maxabs);
    assert_true(maxabs > 0.05);

    /* The loss against a naive dense evaluation over every cell, in double:
     * relative tolerance 1e-4. */
    double num = 0, conf_total = 0, reg = 0;
    const float *U = qml_als_user_factors(m), *V = qml_als_item_factors(m);
    for (int u = 0; u < NU; u++) {
        double c[NI] = {0}, pr[NI] = {0};
        for (int i = 0; i < NI; i++)
            c[i] = 1;
        for (int64_t e = data.train->indptr[u]; e < data.train->indptr[u + 1]; e++) {
            c[data.train->indices[e]] = 1 + p.alpha * data.train->data[e];
            pr[data.train->indices[e]] = 1;
        }
        for (int i = 0; i < NI; i++) {
            double s = 0;
            for (int a = 0; a < f; a++)
                s += (double)U[u * f + a] * V[i * f + a];
            num += c[i] * (pr[i] - s) * (pr[i] - s);
            conf_total += c[i];
        }
    }
    for (int k = 0; k < NU * f; k++)
        reg += (double)U[k] * U[k];
    for (int k = 0; k < NI * f; k++)
        reg += (double)V[k] * V[k];
    double want = (num + p.regularization * reg) / conf_total;
    double got = qml_als_loss(m, data.train, p.regularization, p.alpha, 2, &err);
    if (fabs(got - want) > 1e-4 * want)
        fail_msg("loss %.8g, dense reference %.8g", got, want);

    qml_csr_free(iu);
    free(X);
    free(Y);
    qml_als_free(m);
}

/* ---- loss decreases with 3 CG steps; cancellation ---- */

typedef struct {
    double loss[64];
    int n, cancel_at;
} progress_log;

static int record(const qml_als_progress *pr, void *ud)
{
    progress_log *log = ud;
    assert_int_equal(pr->iteration, log->n + 1);
    assert_true(pr->elapsed >= 0);
    log->loss[log->n++] = pr->loss;
    return log->cancel_at && pr->iteration == log->cancel_at;
}

static void test_loss_decreases_with_three_cg_steps(void **state)
{
    qn_err err;
    qml_als_params p;
    base_params(&p);
    p.iterations = 12;
    p.compute_loss = 1;
    progress_log log = {.n = 0};
    p.progress = record;
    p.progress_userdata = &log;
    qml_als *m;
    assert_int_equal(qml_als_fit(data.train, &p, &m, &err), 0);
    assert_int_equal(log.n, 12);
    /* Monotone up to float32 rounding (relative 1e-6 per step). */
    for (int k = 1; k < log.n; k++) {
        if (log.loss[k] > log.loss[k - 1] * (1 + 1e-6))
            fail_msg("loss rose at iteration %d: %.9g -> %.9g", k + 1, log.loss[k - 1], log.loss[k]);
    }
    assert_true(log.loss[log.n - 1] < 0.9 * log.loss[0]);
    qml_als_free(m);

    progress_log stop = {.n = 0, .cancel_at = 2};
    p.progress_userdata = &stop;
    p.compute_loss = 0;
    assert_int_equal(qml_als_fit(data.train, &p, &m, &err), QN_CANCELLED);
    assert_null(m);
    assert_int_equal(stop.n, 2);
    assert_true(isnan(stop.loss[0]));
}

/* ---- (b) top-k against a brute-force full sort; (c) fallback; recall ---- */

typedef struct {
    double score;
    int item;
} scored;

static int scored_desc(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->item - y->item;
}

static int seen(int u, int i)
{
    for (int64_t e = data.train->indptr[u]; e < data.train->indptr[u + 1]; e++)
        if (data.train->indices[e] == i)
            return 1;
    return 0;
}

static qml_als *trained(int threads)
{
    qn_err err;
    qml_als_params p;
    base_params(&p);
    p.threads = threads;
    p.iterations = 15;
    qml_als *m;
    assert_int_equal(qml_als_fit(data.train, &p, &m, &err), 0);
    return m;
}

static void test_recommend_matches_full_sort(void **state)
{
    qn_err err;
    qml_als *m = trained(1);
    const float *U = qml_als_user_factors(m), *V = qml_als_item_factors(m);
    int f = qml_als_factors(m);
    qml_als_rec out[NI];
    scored all[NI];
    for (int u = 0; u < NU; u += 7) {
        for (int excl = 0; excl <= 1; excl++) {
            int k = 10 + u % 5;
            int n = qml_als_recommend(m, u, k, excl, out, &err);
            assert_int_equal(n, k);
            int na = 0;
            for (int i = 0; i < NI; i++) {
                if (excl && seen(u, i))
                    continue;
                double s = 0;
                for (int a = 0; a < f; a++)
                    s += (double)U[u * f + a] * V[i * f + a];
                all[na++] = (scored){s, i};
            }
            qsort(all, (size_t)na, sizeof *all, scored_desc);
            /* Same ranking up to float32 rounding of the scores (1e-5). */
            for (int j = 0; j < n; j++) {
                if (excl)
                    assert_false(seen(u, out[j].item));
                if (j > 0)
                    assert_true(out[j].score <= out[j - 1].score);
                if (fabs(out[j].score - all[j].score) > 1e-5)
                    fail_msg("user %d rank %d: score %g, full sort %g", u, j, out[j].score, all[j].score);
            }
            if (excl == 0) {
                /* Without exclusion, seen items do appear (the model fits them). */
                int any_seen = 0;
                for (int j = 0; j < n; j++)
                    any_seen |= seen(u, out[j].item);
                assert_true(any_seen);
            }
        }
    }
    /* k beyond the items left returns just those. */
    int nseen = (int)(data.train->indptr[1] - data.train->indptr[0]);
    assert_int_equal(qml_als_recommend(m, 0, NI + 5, 1, out, &err), NI - nseen);
    qml_als_rec big[NI + 5];
    assert_int_equal(qml_als_recommend(m, 0, NI + 5, 0, big, &err), NI);
    assert_int_equal(qml_als_recommend(m, NU, 5, 1, out, &err), QN_INVALID_ARGUMENT);
    assert_int_equal(qml_als_recommend(m, 0, 0, 1, out, &err), QN_INVALID_ARGUMENT);
    qml_als_free(m);
}

static void test_similar_items_matches_full_sort(void **state)
{
    qn_err err;
    qml_als *m = trained(1);
    const float *V = qml_als_item_factors(m);
    int f = qml_als_factors(m);
    qml_als_rec out[10];
    scored all[NI];
    int same = 0, nq = 0;
    for (int q = 0; q < NI; q += 13) {
        int n = qml_als_similar_items(m, q, 10, out, &err);
        assert_int_equal(n, 10);
        int na = 0;
        double qn = 0;
        for (int a = 0; a < f; a++)
            qn += (double)V[q * f + a] * V[q * f + a];
        for (int i = 0; i < NI; i++) {
            if (i == q)
                continue;
            double s = 0, in = 0;
            for (int a = 0; a < f; a++) {
                s += (double)V[q * f + a] * V[i * f + a];
                in += (double)V[i * f + a] * V[i * f + a];
            }
            all[na++] = (scored){s / sqrt(qn * in), i};
        }
        qsort(all, (size_t)na, sizeof *all, scored_desc);
        for (int j = 0; j < n; j++) {
            assert_int_not_equal(out[j].item, q);
            if (fabs(out[j].score - all[j].score) > 1e-5)
                fail_msg("item %d rank %d: cosine %g, full sort %g", q, j, out[j].score, all[j].score);
        }
        for (int j = 0; j < n; j++)
            same += cluster_of_item(out[j].item) == cluster_of_item(q);
        nq++;
    }
    /* Planted structure: most neighbours share the item's cluster (chance: 1 in 5). */
    print_message("same-cluster neighbours: %.2f\n", (double)same / (10 * nq));
    assert_true(same >= 6 * nq);
    assert_int_equal(qml_als_similar_items(m, -1, 10, out, &err), QN_INVALID_ARGUMENT);
    qml_als_free(m);
}

static void set_ids(qml_als *m)
{
    static char ubuf[NU][16], ibuf[NI][16];
    const char *uids[NU], *iids[NI];
    for (int u = 0; u < NU; u++) {
        snprintf(ubuf[u], sizeof ubuf[u], "user-%d", u);
        uids[u] = ubuf[u];
    }
    for (int i = 0; i < NI; i++) {
        snprintf(ibuf[i], sizeof ibuf[i], "item-%d", i);
        iids[i] = ibuf[i];
    }
    qn_err err;
    assert_int_equal(qml_als_set_ids(m, uids, iids, &err), 0);
    iids[5] = "item-4";
    assert_int_equal(qml_als_set_ids(m, uids, iids, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "item-4"));
    assert_string_equal(qml_als_item_id(m, 5), "item-5"); /* old ids kept */
}

static void test_popularity_fallback_and_recall(void **state)
{
    qn_err err;
    qml_als *m = trained(2);
    set_ids(m);

    /* Popularity from the training matrix: users per item. */
    scored pop[NI];
    for (int i = 0; i < NI; i++)
        pop[i] = (scored){0, i};
    for (int64_t e = 0; e < data.train->nnz; e++)
        pop[data.train->indices[e]].score += 1;
    for (int i = 0; i < NI; i++)
        assert_true(qml_als_popularity(m)[i] == (float)pop[i].score);
    qsort(pop, NI, sizeof *pop, scored_desc);

    qml_als_rec out[10];
    int fallback = -1;
    assert_int_equal(qml_als_recommend_id(m, "nobody", 10, 1, out, &fallback, &err), 10);
    assert_int_equal(fallback, 1);
    for (int j = 0; j < 10; j++) {
        assert_int_equal(out[j].item, pop[j].item);
        assert_true(out[j].score == (float)pop[j].score);
    }
    assert_int_equal(qml_als_recommend_id(m, "user-3", 10, 1, out, &fallback, &err), 10);
    assert_int_equal(fallback, 0);
    assert_int_equal(qml_als_user_index(m, "user-3"), 3);

    /* Recall@10 on the held-out items: ALS against popularity (both skip
     * seen items). The planted clusters make ALS far better; a model that
     * learned nothing would sit at popularity's level. */
    double r_als = 0, r_pop = 0;
    for (int u = 0; u < NU; u++) {
        int n = qml_als_recommend(m, u, 10, 1, out, &err);
        assert_int_equal(n, 10);
        for (int j = 0; j < n; j++)
            r_als += has(data.held[u], HELD, out[j].item);
        for (int j = 0, taken = 0; j < NI && taken < 10; j++) {
            if (seen(u, pop[j].item))
                continue;
            taken++;
            r_pop += has(data.held[u], HELD, pop[j].item);
        }
    }
    r_als /= NU * HELD;
    r_pop /= NU * HELD;
    print_message("recall@10: ALS %.3f, popularity %.3f\n", r_als, r_pop);
    assert_true(r_als > 1.5 * r_pop);
    assert_true(r_als > r_pop + 0.1);
    qml_als_free(m);
}

/* A user without training interactions also gets the fallback. */
static void test_fallback_for_user_without_history(void **state)
{
    qn_err err;
    int32_t r[] = {0, 0, 2}, c[] = {0, 1, 1};
    float v[] = {1, 2, 1};
    qml_csr *x;
    assert_int_equal(qml_csr_from_coo(3, 3, r, c, v, 3, &x, &err), 0);
    qml_als_params p;
    qml_als_params_init(&p);
    p.factors = 2;
    p.iterations = 2;
    qml_als *m;
    assert_int_equal(qml_als_fit(x, &p, &m, &err), 0);
    const char *u[] = {"a", "b", "c"}, *i[] = {"x", "y", "z"};
    assert_int_equal(qml_als_set_ids(m, u, i, &err), 0);
    qml_als_rec out[3];
    int fb;
    assert_int_equal(qml_als_recommend_id(m, "b", 3, 1, out, &fb, &err), 3);
    assert_int_equal(fb, 1);
    assert_int_equal(out[0].item, 1); /* two users */
    assert_int_equal(out[1].item, 0); /* one user, lower index than z */
    assert_int_equal(qml_als_recommend_id(m, "a", 3, 1, out, &fb, &err), 1);
    assert_int_equal(fb, 0);
    assert_int_equal(out[0].item, 2);
    qml_als_free(m);

    /* Bad input is refused, naming it. */
    v[1] = -1;
    qml_csr *neg;
    assert_int_equal(qml_csr_from_coo(3, 3, r, c, v, 3, &neg, &err), 0);
    assert_int_equal(qml_als_fit(neg, &p, &m, &err) , QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "(0, 1)"));
    p.cg_steps = 0;
    assert_int_equal(qml_als_fit(x, &p, &m, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "cg_steps"));
    assert_null(m);
    qml_csr_free(neg);
    qml_csr_free(x);
}

/* ---- (d) save / load; numpy reads the bundle; concurrent queries ---- */

typedef struct {
    const qml_als *m;
    const qml_als_rec *want; /* NU x 10 */
    int mismatches;
} query_job;

static void *query_worker(void *arg)
{
    query_job *j = arg;
    qml_als_rec out[10];
    qn_err err;
    for (int rep = 0; rep < 3; rep++)
        for (int u = 0; u < NU; u++) {
            int n = qml_als_recommend(j->m, u, 10, 1, out, &err);
            if (n != 10 || memcmp(out, j->want + u * 10, sizeof out) != 0)
                j->mismatches++;
        }
    return NULL;
}

static void test_save_load_round_trip(void **state)
{
    qn_err err;
    qml_als *m = trained(1);
    set_ids(m);
    char dir[1100], cmd[3000], path[1200];
    snprintf(dir, sizeof dir, "%s/bundle", workdir);
    assert_int_equal(qml_als_save(m, dir, &err), 0);

    qml_als *l;
    if (qml_als_load(dir, &l, &err) < 0)
        fail_msg("load: %s", err.msg);
    assert_int_equal(qml_als_n_users(l), NU);
    assert_int_equal(qml_als_n_items(l), NI);
    static qml_als_rec want[NU * 10];
    qml_als_rec a[10], b[10];
    for (int u = 0; u < NU; u++) {
        assert_int_equal(qml_als_recommend(m, u, 10, 1, want + u * 10, &err), 10);
        assert_int_equal(qml_als_recommend(l, u, 10, 1, a, &err), 10);
        assert_memory_equal(a, want + u * 10, sizeof a); /* identical, bit for bit */
    }
    for (int i = 0; i < NI; i++) {
        assert_int_equal(qml_als_similar_items(m, i, 10, a, &err), 10);
        assert_int_equal(qml_als_similar_items(l, i, 10, b, &err), 10);
        assert_memory_equal(a, b, sizeof a);
    }
    int fa, fb;
    assert_int_equal(qml_als_recommend_id(l, "nobody", 10, 1, a, &fa, &err), 10);
    assert_int_equal(qml_als_recommend_id(m, "nobody", 10, 1, b, &fb, &err), 10);
    assert_true(fa && fb);
    assert_memory_equal(a, b, sizeof a);
    assert_string_equal(qml_als_user_id(l, 17), "user-17");
    assert_int_equal(qml_als_item_index(l, "item-33"), 33);

    /* Four threads query the loaded model at once and all agree. */
    pthread_t t[4];
    query_job jobs[4];
    for (int k = 0; k < 4; k++) {
        jobs[k] = (query_job){l, want, 0};
        assert_int_equal(pthread_create(&t[k], NULL, query_worker, &jobs[k]), 0);
    }
    for (int k = 0; k < 4; k++) {
        pthread_join(t[k], NULL);
        assert_int_equal(jobs[k].mismatches, 0);
    }

    /* numpy reads the factors: shapes, dtypes, and the same sums. */
    const char *src = getenv("QUERN_SOURCE_DIR");
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/unit/ml/npy_ref.py factors %s",
             src ? src : ".", dir);
    FILE *py = popen(cmd, "r");
    assert_non_null(py);
    char line[3][256];
    for (int k = 0; k < 3; k++)
        assert_non_null(fgets(line[k], sizeof line[k], py));
    assert_int_equal(pclose(py), 0);
    char name[64], dtype[16], shape[32];
    double sum;
    assert_int_equal(sscanf(line[0], "%63s %15s %31s %lf", name, dtype, shape, &sum), 4);
    assert_string_equal(dtype, "float32");
    assert_string_equal(shape, "600x16");
    double mine = 0;
    for (int k = 0; k < NU * 16; k++)
        mine += fabs(qml_als_user_factors(m)[k]);
    assert_true(fabs(mine - sum) < 1e-4 * mine);
    assert_int_equal(sscanf(line[1], "%63s %15s %31s %lf", name, dtype, shape, &sum), 4);
    assert_string_equal(shape, "200x16");
    assert_int_equal(sscanf(line[2], "%63s %15s %31s %lf", name, dtype, shape, &sum), 4);
    assert_string_equal(shape, "200");

    /* A bundle that disagrees with itself is refused, naming the file. */
    qml_als_free(l);
    float junk[NI * 8] = {0};
    int64_t s2[2] = {NI, 8};
    snprintf(path, sizeof path, "%s/item_factors.npy", dir);
    assert_int_equal(qml_npy_write(path, QML_NPY_F4, 2, s2, junk, &err), 0);
    assert_int_equal(qml_als_load(dir, &l, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "item_factors.npy"));
    assert_null(l);
    s2[0] = NI + 1;
    s2[1] = 16;
    float *junk2 = calloc((NI + 1) * 16, sizeof *junk2);
    assert_int_equal(qml_npy_write(path, QML_NPY_F4, 2, s2, junk2, &err), 0);
    free(junk2);
    assert_int_equal(qml_als_load(dir, &l, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "popularity.npy"));
    remove(path);
    assert_int_equal(qml_als_load(dir, &l, &err), QN_NOT_FOUND);
    assert_int_equal(qml_als_save(m, dir, &err), 0);
    snprintf(path, sizeof path, "%s/user_ids.json", dir);
    FILE *fp = fopen(path, "w");
    fputs("[\"a\", \"a\"]", fp);
    fclose(fp);
    assert_int_equal(qml_als_load(dir, &l, &err), QN_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "user_ids.json"));
    qml_als_free(m);
}

/* ---- (e) threads ---- */

static void test_threads_agree_with_single_thread(void **state)
{
    qml_als *a = trained(1), *b = trained(2), *c = trained(3);
    int f = qml_als_factors(a);
    /* Rows are solved independently, so the thread count should not matter;
     * tolerance 1e-6 absolute on every factor. */
    double d = 0;
    for (int k = 0; k < NU * f; k++) {
        d = fmax(d, fabs(qml_als_user_factors(a)[k] - qml_als_user_factors(b)[k]));
        d = fmax(d, fabs(qml_als_user_factors(a)[k] - qml_als_user_factors(c)[k]));
    }
    for (int k = 0; k < NI * f; k++) {
        d = fmax(d, fabs(qml_als_item_factors(a)[k] - qml_als_item_factors(b)[k]));
        d = fmax(d, fabs(qml_als_item_factors(a)[k] - qml_als_item_factors(c)[k]));
    }
    assert_true(d <= 1e-6);
    qml_als_free(a);
    qml_als_free(b);
    qml_als_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_iteration_matches_exact_solve),
        cmocka_unit_test(test_loss_decreases_with_three_cg_steps),
        cmocka_unit_test(test_recommend_matches_full_sort),
        cmocka_unit_test(test_similar_items_matches_full_sort),
        cmocka_unit_test(test_popularity_fallback_and_recall),
        cmocka_unit_test(test_fallback_for_user_without_history),
        cmocka_unit_test(test_save_load_round_trip),
        cmocka_unit_test(test_threads_agree_with_single_thread),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
