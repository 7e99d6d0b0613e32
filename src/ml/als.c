/*
 * als.c - implicit ALS training by conjugate gradient, recommendation, and the
 * model bundle (see als.h for the model and the bundle layout).
 *
 * Training. A half-step recomputes every row x of X from the fixed factors Y
 * of the other side. With A = YtY + lambda I (computed once per half-step by
 * cblas_ssyrk, on the calling thread, outside the worker threads) the row's
 * normal equations are
 *     (A + sum_i w_i y_i y_i^T) x = sum_i (1 + w_i) y_i,   w_i = alpha r_i,
 * summing only over the row's non-zeros, which is what makes implicit ALS
 * cheap: the dense part is shared. Instead of factorising that matrix per row
 * (O(f^3)), cg_row runs a few conjugate-gradient steps from the current x;
 * each step costs one f x f product plus, per non-zero, a dot and an axpy on
 * one row of Y, and never decreases the row's objective, so the loss falls
 * monotonically across iterations even with 3 steps.
 *
 * Threads: the rows of a half-step are independent, so workers take chunks of
 * rows from an atomic counter (dynamic partitioning, because row lengths are
 * power-law). Each worker owns its scratch vectors, allocated once per
 * half-step, never per row. A row's result does not depend on which thread
 * solved it, so training is bitwise the same for any thread count.
 *
 * Kernels use GCC vector extensions (8 floats), which compile to SSE on the
 * baseline x86-64 target and to AVX2 with FMA in the clone picked at run
 * time on CPUs that have them (target_clones below).
 */
#include "ml/als.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/json.h"
#include "ml/frame.h"
#include "ml/libs.h"
#include "ml/npy.h"

#define ALS_MAX_FACTORS 4096
#define ALS_MAX_THREADS 256
#define ALS_CHUNK 64          /* rows a worker takes at a time */
#define ALS_EPS 1e-20f        /* residual norm^2 below which a row is solved */

struct qml_als {
    int32_t n_users, n_items;
    int factors;
    float *user_factors;   /* n_users x factors */
    float *item_factors;   /* n_items x factors */
    float *item_norms;     /* n_items, |y_i|, for cosine similarity */
    float *popularity;     /* n_items, NULL until trained or loaded */
    int32_t *pop_order;    /* items by popularity, descending */
    int64_t *seen_indptr;  /* n_users + 1 */
    int32_t *seen_indices; /* items each user interacted with, ascending */
    qml_dict *user_ids, *item_ids; /* NULL when the model has no ids */
};

/* ---- small vector kernels ---- */

/* The kernels below pass 32-byte vectors by value, which GCC warns changes
 * the ABI without AVX; they are static and always inlined, so no call with
 * that ABI ever exists. */
#pragma GCC diagnostic ignored "-Wpsabi"
#define ALS_INLINE static inline __attribute__((always_inline))

typedef float v8 __attribute__((vector_size(32)));

ALS_INLINE v8 ld8(const float *p)
{
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

ALS_INLINE void st8(float *p, v8 v)
{
    memcpy(p, &v, sizeof v);
}

ALS_INLINE float hsum8(v8 v)
{
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

ALS_INLINE float dot(const float *a, const float *b, int n)
{
    v8 s0 = {0}, s1 = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 += ld8(a + i) * ld8(b + i);
        s1 += ld8(a + i + 8) * ld8(b + i + 8);
    }
    for (; i + 8 <= n; i += 8)
        s0 += ld8(a + i) * ld8(b + i);
    float s = hsum8(s0 + s1);
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* y += a x */
ALS_INLINE void axpy(float a, const float *x, float *y, int n)
{
    v8 va = {a, a, a, a, a, a, a, a};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        st8(y + i, ld8(y + i) + va * ld8(x + i));
    for (; i < n; i++)
        y[i] += a * x[i];
}

/* out = S v for a symmetric n x n S, as a sum of S's rows (contiguous). */
ALS_INLINE void symv(const float *S, const float *v, float *out, int n)
{
    memset(out, 0, (size_t)n * sizeof *out);
    for (int k = 0; k < n; k++)
        axpy(v[k], S + (size_t)k * n, out, n);
}

/* ---- the per-row conjugate-gradient solve ---- */

/* How many non-zeros ahead to prefetch the other side's factor row: the rows
 * are scattered over a matrix far larger than the caches, so the first pass
 * over a row's non-zeros is bound by memory latency unless it is overlapped. */
#define ALS_PREFETCH 16

ALS_INLINE void prefetch_row(const float *Y, const int32_t *indices, int64_t e, int64_t end, int f)
{
    if (e + ALS_PREFETCH < end) {
        const char *row = (const char *)(Y + (size_t)indices[e + ALS_PREFETCH] * f);
        for (int b = 0; b < f * (int)sizeof(float); b += 64)
            __builtin_prefetch(row + b);
    }
}

typedef struct {
    const int64_t *indptr;
    const int32_t *indices;
    const float *data;
    float *X;          /* rows being solved */
    const float *Y;    /* fixed side */
    const float *A;    /* YtY + lambda I, f x f */
    int f, cg_steps;
    float alpha;
    int32_t nrows;
    int64_t nnz;
    atomic_int next;   /* next chunk start */
    atomic_int failed; /* set by a worker that could not allocate */
} half_job;

/* Improves x towards the solution of the row's normal equations (above) by
 * `steps` CG steps. r, p, Ap: scratch of f floats each. */
__attribute__((target_clones("arch=x86-64-v3", "default")))
static void cg_row(const half_job *j, int64_t lo, int64_t hi, float *x, float *r, float *p,
                   float *Ap)
{
    const int f = j->f;
    const float *Y = j->Y;
    symv(j->A, x, r, f);
    for (int k = 0; k < f; k++)
        r[k] = -r[k];
    for (int64_t e = lo; e < hi; e++) {
        float v = j->data[e];
        if (!(v > 0))
            continue;
        prefetch_row(Y, j->indices, e, j->nnz, f); /* runs on into the next rows */
        float w = j->alpha * v;
        const float *y = Y + (size_t)j->indices[e] * f;
        axpy((1 + w) - w * dot(y, x, f), y, r, f);
    }
    float rs = dot(r, r, f);
    if (rs < ALS_EPS)
        return;
    memcpy(p, r, (size_t)f * sizeof *p);
    for (int s = 0; s < j->cg_steps; s++) {
        symv(j->A, p, Ap, f);
        for (int64_t e = lo; e < hi; e++) {
            float v = j->data[e];
            if (!(v > 0))
                continue;
            const float *y = Y + (size_t)j->indices[e] * f;
            axpy(j->alpha * v * dot(y, p, f), y, Ap, f);
        }
        float pAp = dot(p, Ap, f);
        if (!(pAp > 0))
            break;
        float a = rs / pAp;
        axpy(a, p, x, f);
        axpy(-a, Ap, r, f);
        float rs_new = dot(r, r, f);
        if (rs_new < ALS_EPS)
            break;
        float beta = rs_new / rs;
        for (int k = 0; k < f; k++)
            p[k] = r[k] + beta * p[k];
        rs = rs_new;
    }
}

static void *half_worker(void *arg)
{
    half_job *j = arg;
    float *scratch = malloc((size_t)j->f * 3 * sizeof *scratch);
    if (!scratch) {
        atomic_store(&j->failed, 1);
        return NULL;
    }
    float *r = scratch, *p = r + j->f, *Ap = p + j->f;
    for (;;) {
        int32_t start = atomic_fetch_add(&j->next, ALS_CHUNK);
        if (start >= j->nrows)
            break;
        int32_t end = start + ALS_CHUNK < j->nrows ? start + ALS_CHUNK : j->nrows;
        for (int32_t u = start; u < end; u++)
            cg_row(j, j->indptr[u], j->indptr[u + 1], j->X + (size_t)u * j->f, r, p, Ap);
    }
    free(scratch);
    return NULL;
}

/* Runs fn(jobs + t * job_size) for t < threads, on threads-1 new threads and
 * the calling one, and waits. A thread that cannot be started leaves its job
 * undone; returns how many jobs ran, so callers whose jobs share a work
 * counter (job_size 0) lose only speed, and the others can finish the rest. */
static int run_parallel(void *(*fn)(void *), void *jobs, size_t job_size, int threads)
{
    pthread_t tid[ALS_MAX_THREADS];
    int started = 0;
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&tid[started], NULL, fn, (char *)jobs + (size_t)(started + 1) * job_size) != 0)
            break;
        started++;
    }
    fn(jobs);
    for (int t = 0; t < started; t++)
        pthread_join(tid[t], NULL);
    return started + 1;
}

/* A = Y^T Y (+ lambda I), full symmetric f x f, from n rows of Y. */
static void gram(const float *Y, int32_t n, int f, float lambda, float *A)
{
    if (n > 0)
        qml__blas.ssyrk(CblasRowMajor, CblasUpper, CblasTrans, f, n, 1.0f, Y, f, 0.0f, A, f);
    else
        memset(A, 0, (size_t)f * f * sizeof *A);
    for (int a = 0; a < f; a++) {
        for (int b = 0; b < a; b++)
            A[(size_t)a * f + b] = A[(size_t)b * f + a];
        A[(size_t)a * f + a] += lambda;
    }
}

/* One half-step: every row of X (rows of m) from Y. Single-threaded is the
 * same code with one worker. A worker that failed to allocate leaves its
 * chunks to the others, so the step completes unless every worker failed. */
static int half_step(const qml_csr *m, float *X, const float *Y, int32_t y_rows, int f,
                     const qml_als_params *p, float *A, qn_err *err)
{
    gram(Y, y_rows, f, p->regularization, A);
    half_job job = {
        .indptr = m->indptr, .indices = m->indices, .data = m->data, .X = X, .Y = Y, .A = A,
        .f = f, .cg_steps = p->cg_steps, .alpha = p->alpha, .nrows = m->nrows,
        .nnz = m->indptr[m->nrows],
    };
    atomic_init(&job.next, 0);
    atomic_init(&job.failed, 0);
    /* job_size 0: every thread gets the same job and they share its counter. */
    run_parallel(half_worker, &job, 0, p->threads);
    if (atomic_load(&job.failed) && atomic_load(&job.next) < job.nrows)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory for ALS worker scratch");
    return 0;
}

/* ---- loss ---- */

typedef struct {
    const qml_csr *m;
    const float *X, *Y, *G; /* G = YtY, no regularization */
    int f;
    float alpha;
    atomic_int next;
    atomic_int failed;
    double *parts;           /* per chunk: weighted error, total confidence, |x|^2 */
} loss_job;

/* Per user, sum over all items of c (p - x.y)^2 is
 *     x.(YtY x) + sum over non-zeros of [(c - 1)(x.y)^2 - 2 c (x.y) + c],
 * so only the non-zeros are visited. Chunks write their own slot of parts,
 * reduced in order by the caller: the sum does not depend on the threads. */
static void *loss_worker(void *arg)
{
    loss_job *j = arg;
    const int f = j->f;
    float *r = malloc((size_t)f * sizeof *r);
    if (!r) {
        atomic_store(&j->failed, 1);
        return NULL;
    }
    for (;;) {
        int32_t start = atomic_fetch_add(&j->next, ALS_CHUNK);
        if (start >= j->m->nrows)
            break;
        int32_t end = start + ALS_CHUNK < j->m->nrows ? start + ALS_CHUNK : j->m->nrows;
        double err_sum = 0, conf = 0, xnorm = 0;
        for (int32_t u = start; u < end; u++) {
            const float *x = j->X + (size_t)u * f;
            symv(j->G, x, r, f);
            for (int64_t e = j->m->indptr[u]; e < j->m->indptr[u + 1]; e++) {
                float v = j->m->data[e];
                if (!(v > 0))
                    continue;
                float c = 1 + j->alpha * v;
                const float *y = j->Y + (size_t)j->m->indices[e] * f;
                axpy((c - 1) * dot(y, x, f) - 2 * c, y, r, f);
                conf += c;
                err_sum += c;
            }
            err_sum += dot(x, r, f);
            xnorm += dot(x, x, f);
        }
        double *out = j->parts + 3 * (size_t)(start / ALS_CHUNK);
        out[0] = err_sum;
        out[1] = conf;
        out[2] = xnorm;
    }
    free(r);
    return NULL;
}

double qml_als_loss(const qml_als *m, const qml_csr *ui, float regularization, float alpha,
                    int threads, qn_err *err)
{
    if (ui->nrows != m->n_users || ui->ncols != m->n_items) {
        qn_err_set(err, QN_INVALID_ARGUMENT, "user-item matrix is %d x %d, the model %d x %d",
                   ui->nrows, ui->ncols, m->n_users, m->n_items);
        return NAN;
    }
    const int f = m->factors;
    size_t nchunks = ((size_t)ui->nrows + ALS_CHUNK - 1) / ALS_CHUNK;
    float *G = malloc((size_t)f * f * sizeof *G);
    double *parts = calloc(3 * nchunks + 1, sizeof *parts);
    double loss = NAN;
    if (!G || !parts) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory computing the ALS loss");
        goto out;
    }
    gram(m->item_factors, m->n_items, f, 0.0f, G);
    loss_job job = {.m = ui, .X = m->user_factors, .Y = m->item_factors, .G = G, .f = f,
                    .alpha = alpha, .parts = parts};
    atomic_init(&job.next, 0);
    atomic_init(&job.failed, 0);
    run_parallel(loss_worker, &job, 0, threads < 1 ? 1 : threads > ALS_MAX_THREADS ? ALS_MAX_THREADS : threads);
    if (atomic_load(&job.failed) && atomic_load(&job.next) < ui->nrows) {
        qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory computing the ALS loss");
        goto out;
    }
    double err_sum = 0, conf = 0, xnorm = 0, ynorm = 0;
    for (size_t c = 0; c < nchunks; c++) {
        err_sum += parts[3 * c];
        conf += parts[3 * c + 1];
        xnorm += parts[3 * c + 2];
    }
    for (int32_t i = 0; i < m->n_items; i++) {
        const float *y = m->item_factors + (size_t)i * f;
        ynorm += dot(y, y, f);
    }
    int64_t npos = 0;
    for (int64_t e = 0; e < ui->nnz; e++)
        npos += ui->data[e] > 0;
    double total = conf + (double)m->n_users * m->n_items - (double)npos;
    loss = (err_sum + regularization * (xnorm + ynorm)) / (total > 0 ? total : 1);
out:
    free(G);
    free(parts);
    return loss;
}

/* ---- model lifetime and accessors ---- */

void qml_als_params_init(qml_als_params *p)
{
    *p = (qml_als_params){
        .factors = 64, .regularization = 0.01f, .alpha = 1.0f, .iterations = 15,
        .cg_steps = 3, .seed = 42, .threads = 1,
    };
}

static float *alloc_factors(int32_t n, int f)
{
    size_t bytes = (size_t)(n ? n : 1) * (size_t)f * sizeof(float);
    bytes = (bytes + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

void qml_als_free(qml_als *m)
{
    if (!m)
        return;
    free(m->user_factors);
    free(m->item_factors);
    free(m->item_norms);
    free(m->popularity);
    free(m->pop_order);
    free(m->seen_indptr);
    free(m->seen_indices);
    qml_dict_free(m->user_ids);
    qml_dict_free(m->item_ids);
    free(m);
}

static qml_als *als_alloc(int32_t n_users, int32_t n_items, int factors, qn_err *err)
{
    if (n_users < 0 || n_items < 0) {
        qn_err_set(err, QN_INVALID_ARGUMENT, "negative model shape %d x %d", n_users, n_items);
        return NULL;
    }
    if (factors < 1 || factors > ALS_MAX_FACTORS) {
        qn_err_set(err, QN_INVALID_ARGUMENT, "factors must be in [1, %d], got %d", ALS_MAX_FACTORS,
                   factors);
        return NULL;
    }
    qml_als *m = calloc(1, sizeof *m);
    if (!m)
        goto oom;
    m->n_users = n_users;
    m->n_items = n_items;
    m->factors = factors;
    m->user_factors = alloc_factors(n_users, factors);
    m->item_factors = alloc_factors(n_items, factors);
    m->item_norms = calloc((size_t)n_items + 1, sizeof *m->item_norms);
    if (!m->user_factors || !m->item_factors || !m->item_norms)
        goto oom;
    return m;
oom:
    qml_als_free(m);
    qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory for a %d x %d model of %d factors",
               n_users, n_items, factors);
    return NULL;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

qml_als *qml_als_new(int32_t n_users, int32_t n_items, int factors, uint64_t seed, qn_err *err)
{
    qml_als *m = als_alloc(n_users, n_items, factors, err);
    if (!m)
        return NULL;
    uint64_t s = seed;
    size_t nu = (size_t)n_users * factors, ni = (size_t)n_items * factors;
    for (size_t k = 0; k < nu; k++)
        m->user_factors[k] = (float)(splitmix64(&s) >> 40) * 0x1p-24f * 0.01f;
    for (size_t k = 0; k < ni; k++)
        m->item_factors[k] = (float)(splitmix64(&s) >> 40) * 0x1p-24f * 0.01f;
    return m;
}

int32_t qml_als_n_users(const qml_als *m) { return m->n_users; }
int32_t qml_als_n_items(const qml_als *m) { return m->n_items; }
int qml_als_factors(const qml_als *m) { return m->factors; }
float *qml_als_user_factors(qml_als *m) { return m->user_factors; }
float *qml_als_item_factors(qml_als *m) { return m->item_factors; }
const float *qml_als_popularity(const qml_als *m) { return m->popularity; }

static void update_item_norms(qml_als *m)
{
    for (int32_t i = 0; i < m->n_items; i++) {
        const float *y = m->item_factors + (size_t)i * m->factors;
        m->item_norms[i] = sqrtf(dot(y, y, m->factors));
    }
}

static int pop_cmp(const void *a, const void *b, void *ctx)
{
    const float *pop = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (pop[x] != pop[y])
        return pop[x] > pop[y] ? -1 : 1;
    return (x > y) - (x < y);
}

/* Orders items by popularity (descending, ties by index) for the fallback. */
static int build_pop_order(qml_als *m, qn_err *err)
{
    int32_t *order = malloc(((size_t)m->n_items + 1) * sizeof *order);
    if (!order)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory ordering item popularity");
    for (int32_t i = 0; i < m->n_items; i++)
        order[i] = i;
    qsort_r(order, (size_t)m->n_items, sizeof *order, pop_cmp, m->popularity);
    free(m->pop_order);
    m->pop_order = order;
    return 0;
}

/* Keeps the pattern of the positive cells (for exclude-seen) and the item
 * popularity (distinct users per item). */
static int keep_training_pattern(qml_als *m, const qml_csr *ui, qn_err *err)
{
    int64_t npos = 0;
    for (int64_t e = 0; e < ui->nnz; e++)
        npos += ui->data[e] > 0;
    int64_t *indptr = malloc(((size_t)ui->nrows + 1) * sizeof *indptr);
    int32_t *indices = malloc((size_t)(npos ? npos : 1) * sizeof *indices);
    float *pop = calloc((size_t)ui->ncols + 1, sizeof *pop);
    if (!indptr || !indices || !pop) {
        free(indptr);
        free(indices);
        free(pop);
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory keeping the training pattern");
    }
    int64_t w = 0;
    indptr[0] = 0;
    for (int32_t u = 0; u < ui->nrows; u++) {
        for (int64_t e = ui->indptr[u]; e < ui->indptr[u + 1]; e++) {
            if (ui->data[e] > 0) {
                indices[w++] = ui->indices[e];
                pop[ui->indices[e]] += 1;
            }
        }
        indptr[u + 1] = w;
    }
    free(m->seen_indptr);
    free(m->seen_indices);
    free(m->popularity);
    m->seen_indptr = indptr;
    m->seen_indices = indices;
    m->popularity = pop;
    return build_pop_order(m, err);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int check_params(const qml_als_params *p, qn_err *err)
{
    if (p->factors < 1 || p->factors > ALS_MAX_FACTORS)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "factors must be in [1, %d], got %d",
                          ALS_MAX_FACTORS, p->factors);
    if (!(p->regularization >= 0) || !isfinite(p->regularization))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "regularization must be >= 0, got %g",
                          (double)p->regularization);
    if (!(p->alpha >= 0) || !isfinite(p->alpha))
        return qn_err_set(err, QN_INVALID_ARGUMENT, "alpha must be >= 0, got %g", (double)p->alpha);
    if (p->iterations < 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "iterations must be >= 0, got %d", p->iterations);
    if (p->cg_steps < 1)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "cg_steps must be >= 1, got %d", p->cg_steps);
    if (p->threads < 1 || p->threads > ALS_MAX_THREADS)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "threads must be in [1, %d], got %d",
                          ALS_MAX_THREADS, p->threads);
    return 0;
}

int qml_als_train(qml_als *m, const qml_csr *ui, const qml_als_params *p, qn_err *err)
{
    int rc;
    float *A = NULL;
    qml_csr *iu = NULL;
    if ((rc = check_params(p, err)) < 0 || (rc = qml__need_blas(err)) < 0)
        return rc;
    if (p->factors != m->factors)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "params ask for %d factors, the model has %d",
                          p->factors, m->factors);
    if (ui->nrows != m->n_users || ui->ncols != m->n_items)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "user-item matrix is %d x %d, the model %d x %d",
                          ui->nrows, ui->ncols, m->n_users, m->n_items);
    for (int32_t u = 0; u < ui->nrows; u++) {
        for (int64_t e = ui->indptr[u]; e < ui->indptr[u + 1]; e++) {
            if (!(ui->data[e] >= 0) || !isfinite(ui->data[e]))
                return qn_err_set(err, QN_INVALID_ARGUMENT,
                                  "user-item weight at (%d, %d) is %g; weights must be finite and >= 0",
                                  u, ui->indices[e], (double)ui->data[e]);
        }
    }
    const int f = m->factors;
    double t0 = now_seconds();
    if ((rc = keep_training_pattern(m, ui, err)) < 0)
        goto out;
    A = malloc((size_t)f * f * sizeof *A);
    iu = qml_csr_transpose(ui, err);
    if (!A || !iu) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory for ALS training");
        goto out;
    }
    for (int it = 0; it < p->iterations; it++) {
        if ((rc = half_step(ui, m->user_factors, m->item_factors, m->n_items, f, p, A, err)) < 0 ||
            (rc = half_step(iu, m->item_factors, m->user_factors, m->n_users, f, p, A, err)) < 0)
            goto out;
        if (!p->progress)
            continue;
        qml_als_progress pr = {.iteration = it + 1, .iterations = p->iterations, .loss = NAN};
        if (p->compute_loss) {
            pr.loss = qml_als_loss(m, ui, p->regularization, p->alpha, p->threads, err);
            if (isnan(pr.loss)) {
                rc = err ? err->code : QN_RESOURCE_EXHAUSTED;
                goto out;
            }
        }
        pr.elapsed = now_seconds() - t0;
        if (p->progress(&pr, p->progress_userdata) != 0) {
            rc = qn_err_set(err, QN_CANCELLED, "ALS training cancelled after iteration %d of %d",
                            it + 1, p->iterations);
            goto out;
        }
    }
out:
    update_item_norms(m);
    free(A);
    qml_csr_free(iu);
    return rc;
}

int qml_als_fit(const qml_csr *ui, const qml_als_params *p, qml_als **out, qn_err *err)
{
    int rc;
    *out = NULL;
    if ((rc = check_params(p, err)) < 0)
        return rc;
    qml_als *m = qml_als_new(ui->nrows, ui->ncols, p->factors, p->seed, err);
    if (!m)
        return err ? err->code : QN_RESOURCE_EXHAUSTED;
    if ((rc = qml_als_train(m, ui, p, err)) < 0) {
        qml_als_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

/* ---- ids ---- */

static int build_dict(const char *const *ids, int32_t n, const char *what, qml_dict **out,
                      qn_err *err)
{
    qml_dict *d = qml_dict_new();
    if (!d)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory for %s ids", what);
    for (int32_t k = 0; k < n; k++) {
        int32_t code = qml_dict_intern(d, ids[k], strlen(ids[k]));
        if (code < 0) {
            qml_dict_free(d);
            return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory for %s ids", what);
        }
        if (code != k) {
            qml_dict_free(d);
            return qn_err_set(err, QN_INVALID_ARGUMENT, "%s id '%s' appears twice (at %d and %d)",
                              what, ids[k], code, k);
        }
    }
    *out = d;
    return 0;
}

int qml_als_set_ids(qml_als *m, const char *const *user_ids, const char *const *item_ids,
                    qn_err *err)
{
    qml_dict *du = NULL, *di = NULL;
    int rc;
    if ((rc = build_dict(user_ids, m->n_users, "user", &du, err)) < 0)
        return rc;
    if ((rc = build_dict(item_ids, m->n_items, "item", &di, err)) < 0) {
        qml_dict_free(du);
        return rc;
    }
    qml_dict_free(m->user_ids);
    qml_dict_free(m->item_ids);
    m->user_ids = du;
    m->item_ids = di;
    return 0;
}

int32_t qml_als_user_index(const qml_als *m, const char *id)
{
    return m->user_ids ? qml_dict_find(m->user_ids, id, strlen(id)) : -1;
}

int32_t qml_als_item_index(const qml_als *m, const char *id)
{
    return m->item_ids ? qml_dict_find(m->item_ids, id, strlen(id)) : -1;
}

const char *qml_als_user_id(const qml_als *m, int32_t user)
{
    return m->user_ids && user >= 0 && user < m->n_users ? qml_dict_str(m->user_ids, user) : NULL;
}

const char *qml_als_item_id(const qml_als *m, int32_t item)
{
    return m->item_ids && item >= 0 && item < m->n_items ? qml_dict_str(m->item_ids, item) : NULL;
}

/* ---- top-k selection ---- */

/* a ranks below b: lower score, or equal score and higher index. */
ALS_INLINE int worse(qml_als_rec a, qml_als_rec b)
{
    return a.score < b.score || (a.score == b.score && a.item > b.item);
}

/* A min-heap of the best k so far in out[0..*n), the worst at the root. */
ALS_INLINE void topk_push(qml_als_rec *h, int *n, int k, qml_als_rec c)
{
    int i;
    if (*n < k) {
        i = (*n)++;
        while (i > 0 && worse(c, h[(i - 1) / 2])) {
            h[i] = h[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        h[i] = c;
        return;
    }
    if (!worse(h[0], c))
        return;
    i = 0;
    for (;;) {
        int l = 2 * i + 1, s = i;
        qml_als_rec least = c;
        if (l < k && worse(h[l], least)) {
            s = l;
            least = h[l];
        }
        if (l + 1 < k && worse(h[l + 1], least))
            s = l + 1;
        if (s == i)
            break;
        h[i] = h[s];
        i = s;
    }
    h[i] = c;
}

static int better_cmp(const void *a, const void *b)
{
    qml_als_rec x = *(const qml_als_rec *)a, y = *(const qml_als_rec *)b;
    return worse(y, x) ? -1 : worse(x, y) ? 1 : 0;
}

/* Scores items [0, n) against q (dot products, or cosines when norms is
 * given, qn being |q|), skips those in the ascending list [seen, seen_end)
 * and the item `skip`, and leaves the best k in out as a heap. Returns how
 * many. Cloned for AVX2 like cg_row: this loop is all of a query's time. */
__attribute__((target_clones("arch=x86-64-v3", "default")))
static int score_topk(const float *q, const float *V, int32_t n, int f, const int32_t *seen,
                      const int32_t *seen_end, int32_t skip, const float *norms, float qn, int k,
                      qml_als_rec *out)
{
    int have = 0;
    for (int32_t i = 0; i < n; i++) {
        if (seen != seen_end && *seen == i) {
            seen++;
            continue;
        }
        if (i == skip)
            continue;
        float s = dot(q, V + (size_t)i * f, f);
        if (norms) {
            float d = qn * norms[i];
            s = d > 0 ? s / d : 0.0f;
        }
        topk_push(out, &have, k, (qml_als_rec){i, s});
    }
    return have;
}

int qml_als_recommend(const qml_als *m, int32_t user, int k, int exclude_seen, qml_als_rec *out,
                      qn_err *err)
{
    if (k < 1)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "k must be >= 1, got %d", k);
    if (user < 0 || user >= m->n_users)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "user index %d is outside [0, %d)", user,
                          m->n_users);
    const int f = m->factors;
    const float *x = m->user_factors + (size_t)user * f;
    const int32_t *seen = NULL, *seen_end = NULL;
    if (exclude_seen && m->seen_indptr) {
        seen = m->seen_indices + m->seen_indptr[user];
        seen_end = m->seen_indices + m->seen_indptr[user + 1];
    }
    int n = score_topk(x, m->item_factors, m->n_items, f, seen, seen_end, -1, NULL, 0, k, out);
    qsort(out, (size_t)n, sizeof *out, better_cmp);
    return n;
}

int qml_als_recommend_popular(const qml_als *m, int k, qml_als_rec *out, qn_err *err)
{
    if (k < 1)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "k must be >= 1, got %d", k);
    if (!m->popularity || !m->pop_order)
        return qn_err_set(err, QN_FAILED_PRECONDITION,
                          "the model has no item popularity (never trained nor loaded)");
    int n = k < m->n_items ? k : m->n_items;
    for (int j = 0; j < n; j++) {
        out[j].item = m->pop_order[j];
        out[j].score = m->popularity[m->pop_order[j]];
    }
    return n;
}

int64_t qml_als_seen(const qml_als *m, int32_t user, const int32_t **items)
{
    *items = NULL;
    if (!m->seen_indptr || user < 0 || user >= m->n_users)
        return 0;
    *items = m->seen_indices + m->seen_indptr[user];
    return m->seen_indptr[user + 1] - m->seen_indptr[user];
}

int qml_als_recommend_id(const qml_als *m, const char *user_id, int k, int exclude_seen,
                         qml_als_rec *out, int *fallback, qn_err *err)
{
    int32_t u = qml_als_user_index(m, user_id);
    *fallback = u < 0 || (m->seen_indptr && m->seen_indptr[u] == m->seen_indptr[u + 1]);
    if (*fallback)
        return qml_als_recommend_popular(m, k, out, err);
    return qml_als_recommend(m, u, k, exclude_seen, out, err);
}

int qml_als_similar_items(const qml_als *m, int32_t item, int k, qml_als_rec *out, qn_err *err)
{
    if (k < 1)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "k must be >= 1, got %d", k);
    if (item < 0 || item >= m->n_items)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "item index %d is outside [0, %d)", item,
                          m->n_items);
    const int f = m->factors;
    const float *q = m->item_factors + (size_t)item * f;
    float qn = m->item_norms[item];
    int n = score_topk(q, m->item_factors, m->n_items, f, NULL, NULL, item, m->item_norms, qn, k,
                       out);
    qsort(out, (size_t)n, sizeof *out, better_cmp);
    return n;
}

/* ---- the bundle ---- */

static const char *join(char *buf, size_t cap, const char *dir, const char *name)
{
    snprintf(buf, cap, "%s/%s", dir, name);
    return buf;
}

static int write_ids(const char *path, const qml_dict *d, int32_t n, qn_err *err)
{
    json_t *arr = json_array();
    int rc = 0;
    if (!arr)
        return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory writing %s", path);
    for (int32_t k = 0; k < n; k++) {
        char num[16];
        const char *s = d ? qml_dict_str(d, k) : num;
        if (!d)
            snprintf(num, sizeof num, "%d", k);
        if (json_array_append_new(arr, json_string(s)) != 0) {
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory writing %s", path);
            goto out;
        }
    }
    if (json_dump_file(arr, path, JSON_COMPACT) != 0)
        rc = qn_err_set(err, QN_INTERNAL, "%s: cannot write", path);
out:
    json_decref(arr);
    return rc;
}

int qml_als_save(const qml_als *m, const char *dir, qn_err *err)
{
    char path[4096];
    int rc;
    if (!m->popularity || !m->seen_indptr)
        return qn_err_set(err, QN_FAILED_PRECONDITION,
                          "the model was never trained: no popularity or interactions to save");
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return qn_err_set(err, QN_INTERNAL, "%s: cannot create directory: %s", dir, strerror(errno));
    int64_t su[2] = {m->n_users, m->factors}, si[2] = {m->n_items, m->factors};
    int64_t sn[1] = {m->n_items}, sp[1] = {(int64_t)m->n_users + 1};
    int64_t sx[1] = {m->seen_indptr[m->n_users]};
    if ((rc = qml_npy_write(join(path, sizeof path, dir, "user_factors.npy"), QML_NPY_F4, 2, su,
                            m->user_factors, err)) < 0 ||
        (rc = qml_npy_write(join(path, sizeof path, dir, "item_factors.npy"), QML_NPY_F4, 2, si,
                            m->item_factors, err)) < 0 ||
        (rc = qml_npy_write(join(path, sizeof path, dir, "popularity.npy"), QML_NPY_F4, 1, sn,
                            m->popularity, err)) < 0 ||
        (rc = qml_npy_write(join(path, sizeof path, dir, "user_items_indptr.npy"), QML_NPY_I8, 1,
                            sp, m->seen_indptr, err)) < 0 ||
        (rc = qml_npy_write(join(path, sizeof path, dir, "user_items_indices.npy"), QML_NPY_I4, 1,
                            sx, m->seen_indices, err)) < 0 ||
        (rc = write_ids(join(path, sizeof path, dir, "user_ids.json"), m->user_ids, m->n_users,
                        err)) < 0 ||
        (rc = write_ids(join(path, sizeof path, dir, "item_ids.json"), m->item_ids, m->n_items,
                        err)) < 0)
        return rc;
    return 0;
}

/* Reads a JSON array of n unique strings into a dictionary. */
static int read_ids(const char *path, int64_t n, qml_dict **out, qn_err *err)
{
    json_error_t jerr;
    qml_dict *d = NULL;
    int rc = 0;
    *out = NULL;
    json_t *arr = json_load_file(path, 0, &jerr);
    if (!arr) {
        struct stat st;
        if (stat(path, &st) != 0)
            return qn_err_set(err, QN_NOT_FOUND, "%s: missing from the bundle", path);
        return qn_err_set(err, qn_json_load_code(&jerr), "%s: line %d: %s", path, jerr.line,
                          jerr.text);
    }
    if (!json_is_array(arr) || (int64_t)json_array_size(arr) != n) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "%s: want a JSON array of %lld ids, found %s of %zu",
                        path, (long long)n, json_is_array(arr) ? "an array" : "something else",
                        json_is_array(arr) ? json_array_size(arr) : (size_t)0);
        goto out;
    }
    if (!(d = qml_dict_new())) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory reading %s", path);
        goto out;
    }
    for (size_t k = 0; k < json_array_size(arr); k++) {
        json_t *s = json_array_get(arr, k);
        if (!json_is_string(s)) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "%s: entry %zu is not a string", path, k);
            goto out;
        }
        int32_t code = qml_dict_intern(d, json_string_value(s), json_string_length(s));
        if (code < 0) {
            rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory reading %s", path);
            goto out;
        }
        if ((size_t)code != k) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "%s: id '%s' appears twice (entries %d and %zu)",
                            path, json_string_value(s), code, k);
            goto out;
        }
    }
    *out = d;
    d = NULL;
out:
    qml_dict_free(d);
    json_decref(arr);
    return rc;
}

static int expect(const qml_npy *a, const char *path, qml_npy_dtype dt, int ndim, qn_err *err)
{
    if (a->dtype != dt || a->ndim != ndim)
        return qn_err_set(err, QN_INVALID_ARGUMENT, "%s: want a %d-D %s array, found %d-D %s", path,
                          ndim, qml_npy_descr(dt), a->ndim, qml_npy_descr(a->dtype));
    return 0;
}

static int all_finite(const float *v, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (!isfinite(v[k]))
            return 0;
    return 1;
}

int qml_als_load(const char *dir, qml_als **out, qn_err *err)
{
    char pu[4096], pi[4096], pp[4096], pip[4096], pix[4096], path[4096];
    qml_npy U = {0}, V = {0}, P = {0}, IP = {0}, IX = {0};
    qml_als *m = NULL;
    int rc;
    *out = NULL;
    join(pu, sizeof pu, dir, "user_factors.npy");
    join(pi, sizeof pi, dir, "item_factors.npy");
    join(pp, sizeof pp, dir, "popularity.npy");
    join(pip, sizeof pip, dir, "user_items_indptr.npy");
    join(pix, sizeof pix, dir, "user_items_indices.npy");
    if ((rc = qml_npy_read(pu, &U, err)) < 0 || (rc = expect(&U, pu, QML_NPY_F4, 2, err)) < 0 ||
        (rc = qml_npy_read(pi, &V, err)) < 0 || (rc = expect(&V, pi, QML_NPY_F4, 2, err)) < 0 ||
        (rc = qml_npy_read(pp, &P, err)) < 0 || (rc = expect(&P, pp, QML_NPY_F4, 1, err)) < 0 ||
        (rc = qml_npy_read(pip, &IP, err)) < 0 || (rc = expect(&IP, pip, QML_NPY_I8, 1, err)) < 0 ||
        (rc = qml_npy_read(pix, &IX, err)) < 0 || (rc = expect(&IX, pix, QML_NPY_I4, 1, err)) < 0)
        goto out;
    int64_t nu = U.shape[0], ni = V.shape[0], f = U.shape[1];
    if (V.shape[1] != f) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "%s has %lld factors but %s has %lld", pu,
                        (long long)f, pi, (long long)V.shape[1]);
        goto out;
    }
    if (nu > INT32_MAX - 1 || ni > INT32_MAX - 1 || f < 1 || f > ALS_MAX_FACTORS) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "%s: shape %lld x %lld is out of range", pu,
                        (long long)nu, (long long)f);
        goto out;
    }
    if (P.shape[0] != ni) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "%s has %lld items but %s has %lld", pp,
                        (long long)P.shape[0], pi, (long long)ni);
        goto out;
    }
    if (IP.shape[0] != nu + 1) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "%s has %lld entries, want n_users + 1 = %lld", pip,
                        (long long)IP.shape[0], (long long)nu + 1);
        goto out;
    }
    const int64_t *ip = IP.data;
    const int32_t *ix = IX.data;
    if (ip[0] != 0 || ip[nu] != IX.shape[0]) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "%s must run from 0 to the %lld entries of %s", pip,
                        (long long)IX.shape[0], pix);
        goto out;
    }
    for (int64_t u = 0; u < nu; u++) {
        if (ip[u + 1] < ip[u]) {
            rc = qn_err_set(err, QN_INVALID_ARGUMENT, "%s decreases at user %lld", pip, (long long)u);
            goto out;
        }
        for (int64_t e = ip[u]; e < ip[u + 1]; e++) {
            if (ix[e] < 0 || ix[e] >= ni || (e > ip[u] && ix[e] <= ix[e - 1])) {
                rc = qn_err_set(err, QN_INVALID_ARGUMENT,
                                "%s: entry %lld (item %d of user %lld) is out of range or unsorted",
                                pix, (long long)e, ix[e], (long long)u);
                goto out;
            }
        }
    }
    if (!all_finite(U.data, (size_t)(nu * f)) || !all_finite(V.data, (size_t)(ni * f)) ||
        !all_finite(P.data, (size_t)ni)) {
        rc = qn_err_set(err, QN_INVALID_ARGUMENT, "%s: factors or popularity hold NaN or infinity", dir);
        goto out;
    }
    if (!(m = als_alloc((int32_t)nu, (int32_t)ni, (int)f, err))) {
        rc = err ? err->code : QN_RESOURCE_EXHAUSTED;
        goto out;
    }
    memcpy(m->user_factors, U.data, (size_t)(nu * f) * sizeof(float));
    memcpy(m->item_factors, V.data, (size_t)(ni * f) * sizeof(float));
    m->popularity = P.data;
    P.data = NULL;
    m->seen_indptr = IP.data;
    IP.data = NULL;
    m->seen_indices = IX.data;
    IX.data = NULL;
    if ((rc = build_pop_order(m, err)) < 0 ||
        (rc = read_ids(join(path, sizeof path, dir, "user_ids.json"), nu, &m->user_ids, err)) < 0 ||
        (rc = read_ids(join(path, sizeof path, dir, "item_ids.json"), ni, &m->item_ids, err)) < 0)
        goto out;
    update_item_norms(m);
    *out = m;
    m = NULL;
out:
    qml_als_free(m);
    qml_npy_release(&U);
    qml_npy_release(&V);
    qml_npy_release(&P);
    qml_npy_release(&IP);
    qml_npy_release(&IX);
    return rc;
}
