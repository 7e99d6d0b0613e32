/*
 * als.h - implicit-feedback matrix factorization (ALS), the recommender model
 * of Quern (DESIGN.md section 6).
 *
 * The model of Hu, Koren and Volinsky (2008): from raw interaction weights r_ui
 * (counts, event weights) it derives a preference p_ui = 1 where r_ui > 0 and a
 * confidence c_ui = 1 + alpha * r_ui, and finds user factors X and item
 * factors Y minimising
 *     sum over all (u, i) of c_ui (p_ui - x_u . y_i)^2 + lambda (|X|^2 + |Y|^2).
 * Each half-step (users given items, then items given users) is a
 * least-squares problem per row, solved approximately by a few steps of
 * conjugate gradient warm-started from the current factors (Takacs, Pilaszy
 * and Tikk 2011), which is what the `implicit` library does on the CPU.
 *
 *     qn_err err;
 *     qml_als_params p;
 *     qml_als_params_init(&p);           // 64 factors, 15 iterations, 3 CG steps
 *     p.threads = 2;
 *     qml_als *m;
 *     if (qml_als_fit(user_items, &p, &m, &err) < 0) ...   // user_items: a qml_csr
 *     qml_als_set_ids(m, user_names, item_names, &err);    // optional, for serving
 *
 *     qml_als_rec top[10];
 *     int fallback;
 *     int n = qml_als_recommend_id(m, "alice", 10, 1, top, &fallback, &err);
 *     // n <= 10 items, best first; fallback != 0 when "alice" was unknown and
 *     // the items are the most popular ones instead
 *
 *     qml_als_save(m, "bundle/", &err);  // user_factors.npy, item_factors.npy, ...
 *     qml_als_free(m);
 *
 * Bundle layout written by qml_als_save (all arrays little-endian, C order,
 * readable with numpy.load):
 *     user_factors.npy        float32 (n_users, factors)
 *     item_factors.npy        float32 (n_items, factors)
 *     popularity.npy          float32 (n_items,)  users who interacted with each item
 *     user_items_indptr.npy   int64   (n_users + 1,)  the training interactions as CSR,
 *     user_items_indices.npy  int32   (nnz,)          used to exclude seen items
 *     user_ids.json           JSON array of n_users strings; index = row of user_factors
 *     item_ids.json           JSON array of n_items strings; index = row of item_factors
 * A model without ids saves its indices in decimal as ids ("0", "1", ...).
 *
 * Ownership: a qml_als owns all its arrays and id maps.
 * Thread safety: training mutates the model and must not overlap any other use
 * of it. The query functions (recommend, similar, lookups) only read, allocate
 * nothing shared, and may run concurrently on one model from many threads.
 */
#ifndef QML_ALS_H
#define QML_ALS_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "ml/csr.h"

typedef struct qml_als qml_als;

/* What the progress callback sees after each iteration. */
typedef struct qml_als_progress {
    int iteration;   /* iterations finished, 1-based */
    int iterations;  /* iterations requested */
    double loss;     /* the loss of qml_als_loss when compute_loss is set, else NAN */
    double elapsed;  /* seconds since training began */
} qml_als_progress;

/* Returns 0 to go on, non-zero to cancel training (qml_als_train then returns
 * QN_CANCELLED; the model keeps the factors of the finished iterations). */
typedef int (*qml_als_progress_fn)(const qml_als_progress *p, void *userdata);

typedef struct qml_als_params {
    int factors;           /* latent dimensions, >= 1 (default 64) */
    float regularization;  /* lambda, >= 0 (default 0.01) */
    float alpha;           /* confidence slope: c = 1 + alpha * r, >= 0 (default 1) */
    int iterations;        /* full passes (users then items), >= 0 (default 15) */
    int cg_steps;          /* conjugate-gradient steps per row and half-step, >= 1 (default 3) */
    uint64_t seed;         /* initial factors (default 42) */
    int threads;           /* worker threads, >= 1 (default 1); rows are shared among them */
    int compute_loss;      /* compute the loss after every iteration (costs ~1 CG step) */
    qml_als_progress_fn progress; /* may be NULL */
    void *progress_userdata;
} qml_als_params;

/* One scored item: an item index and its score. */
typedef struct qml_als_rec {
    int32_t item;
    float score;
} qml_als_rec;

/* Fills p with the defaults above. */
void qml_als_params_init(qml_als_params *p);

/* A model of n_users x n_items with factors drawn uniformly from [0, 0.01)
 * by seed (the initialisation `implicit` uses). Returns NULL with err filled
 * on a bad shape or out of memory. Caller owns; free with qml_als_free. */
qml_als *qml_als_new(int32_t n_users, int32_t n_items, int factors, uint64_t seed, qn_err *err);

/* Runs p->iterations ALS iterations on m, starting from m's current factors
 * (so a second call continues training). user_items (n_users x n_items, raw
 * weights r >= 0, must match m's shape) is only read; the model also keeps a
 * copy of its pattern (for exclude-seen) and the item popularity.
 * p->factors must equal m's. Returns 0; QN_INVALID_ARGUMENT for bad params,
 * a shape mismatch or a negative/non-finite weight (naming the cell);
 * QN_RESOURCE_EXHAUSTED; QN_CANCELLED when the progress callback asked. */
int qml_als_train(qml_als *m, const qml_csr *user_items, const qml_als_params *p, qn_err *err);

/* qml_als_new(shape of user_items, p->factors, p->seed) then qml_als_train.
 * On success *out is the caller's; on failure *out is NULL. */
int qml_als_fit(const qml_csr *user_items, const qml_als_params *p, qml_als **out, qn_err *err);

/* The training loss of `implicit`: the confidence-weighted squared error over
 * all cells plus lambda (|X|^2 + |Y|^2), divided by the total confidence
 * (sum of c over non-zero cells plus one per zero cell). Uses `threads`
 * workers. Returns the loss, or NAN with err filled (shape mismatch, memory). */
double qml_als_loss(const qml_als *m, const qml_csr *user_items, float regularization,
                    float alpha, int threads, qn_err *err);

/* Shape and direct access to the factors (row-major, n x factors). The
 * pointers stay valid until the model is freed; writing through them (to set
 * initial factors) is allowed only while no other thread uses the model. */
int32_t qml_als_n_users(const qml_als *m);
int32_t qml_als_n_items(const qml_als *m);
int qml_als_factors(const qml_als *m);
float *qml_als_user_factors(qml_als *m);
float *qml_als_item_factors(qml_als *m);
/* Users who interacted with each item in the training data (n_items values),
 * or NULL before training. */
const float *qml_als_popularity(const qml_als *m);

/* The items user interacted with in training (ascending item indices) in
 * *items and their count, or 0 (and *items NULL) for a user out of range or a
 * model never trained nor loaded. Borrowed from the model. Thread-safe. */
int64_t qml_als_seen(const qml_als *m, int32_t user, const int32_t **items);

/* Attaches string ids: user_ids[n_users], item_ids[n_items], copied. A
 * duplicate id is QN_INVALID_ARGUMENT naming it; the old ids are then kept. */
int qml_als_set_ids(qml_als *m, const char *const *user_ids, const char *const *item_ids,
                    qn_err *err);
/* Index of an id, or -1 when unknown (or when the model has no ids). */
int32_t qml_als_user_index(const qml_als *m, const char *id);
int32_t qml_als_item_index(const qml_als *m, const char *id);
/* The id of an index, or NULL when out of range or the model has no ids. */
const char *qml_als_user_id(const qml_als *m, int32_t user);
const char *qml_als_item_id(const qml_als *m, int32_t item);

/* Top-k items for user index `user` by score x_u . y_i, best first (ties by
 * lower item index), skipping the items the user interacted with in training
 * when exclude_seen is set. out has room for k entries. Returns the number
 * written (k, or fewer when fewer items remain), or QN_INVALID_ARGUMENT
 * (k < 1, user out of range). O(n_items * (factors + log k)); no allocation. */
int qml_als_recommend(const qml_als *m, int32_t user, int k, int exclude_seen, qml_als_rec *out,
                      qn_err *err);

/* The k most popular training items, best first; score = popularity. Returns
 * the number written, or QN_INVALID_ARGUMENT (k < 1) / QN_FAILED_PRECONDITION
 * (the model was never trained nor loaded). */
int qml_als_recommend_popular(const qml_als *m, int k, qml_als_rec *out, qn_err *err);

/* Recommendations by user id. A user unknown to the model, or known but with
 * no training interactions (their factors carry no signal), gets the
 * popularity fallback and *fallback = 1; otherwise *fallback = 0 and the
 * result is qml_als_recommend's. Returns as those functions do. */
int qml_als_recommend_id(const qml_als *m, const char *user_id, int k, int exclude_seen,
                         qml_als_rec *out, int *fallback, qn_err *err);

/* The k items most similar to `item` by cosine of item factors, best first,
 * the item itself excluded; items with all-zero factors score 0. Returns the
 * number written, or QN_INVALID_ARGUMENT (k < 1, item out of range). */
int qml_als_similar_items(const qml_als *m, int32_t item, int k, qml_als_rec *out, qn_err *err);

/* Writes the bundle described at the top into directory dir (created if
 * absent; existing files replaced). Returns 0 or QN_INTERNAL (I/O) /
 * QN_FAILED_PRECONDITION (never trained: no popularity) with err naming the file. */
int qml_als_save(const qml_als *m, const char *dir, qn_err *err);

/* Reads a bundle written by qml_als_save (or by numpy with the same layout)
 * and checks that it agrees with itself: dtypes, ranks, the factor counts of
 * both matrices, n_users/n_items across all files, a monotone indptr, item
 * indices in range, unique ids. Returns 0 and *out, or QN_NOT_FOUND (missing
 * file), QN_INVALID_ARGUMENT (naming the file and the disagreement),
 * QN_RESOURCE_EXHAUSTED, QN_INTERNAL. */
int qml_als_load(const char *dir, qml_als **out, qn_err *err);

void qml_als_free(qml_als *m);

#endif
