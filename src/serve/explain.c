/*
 * explain.c - POST /v1/models/{m}[/versions/{v}]/explain: why the served
 * version predicted what it did (DESIGN.md section 5; the maths is
 * libquern-ml's explain.h).
 *
 * The body is an infer request, read by the same code as infer (rest.c's
 * serve_read_infer, backend.c's serve_rows_read), so every form infer takes
 * works here: one input per column or one 2-D tensor, JSON or Triton's
 * binary extension. Tabular models answer
 *   {"model","version","id","kind","method","link","by","rows","classes"?,
 *    "bias":[..],"margin":[..],"contributions":[{"feature","values":[..]}]}
 * where every per-row list holds one number per row, or (multiclass) one
 * list per row in the order of "classes". ALS models take
 * "user_id" (BYTES [n]) and optionally "item_id" (BYTES [n], the item to
 * explain; else the user's top recommendation) and answer
 *   {"model","version","id","kind":"als","method","explanations":[{"user",
 *    "item","recommended","score","explained_score","past_items",
 *    "contributions":[{"item","score"}]}]}.
 * "id" is the request's id, or a UUID made here when it has none.
 * Parameters: "by" ("column", the default, or "feature") for tabular
 * models; "k" (past items shown, default 10) and "exclude_seen" for ALS.
 * Errors follow DESIGN.md section 1 (this is a /v1 route): 400
 * invalid_argument naming the input or parameter, 404 for an unknown model,
 * version, user or item, 400 failed_precondition when there is nothing to
 * explain (a user without past items).
 */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/trace.h"
#include "core/utf8.h"
#include "ml/explain.h"
#include "serve/oip_json.h"
#include "serve/serve.h"

#define EXPLAIN_MAX_K 1000
#define EXPLAIN_MAX_USERS 100

static int oom(qn_err *err)
{
    return qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
}

static const json_t *param(const oip_infer_request *rq, const char *name)
{
    return rq->parameters ? json_object_get(rq->parameters, name) : NULL;
}

/* A parameter that is a boolean, or the text "true"/"false". */
static int param_bool(const oip_infer_request *rq, const char *name, int *out, qn_err *err)
{
    const json_t *p = param(rq, name);
    if (!p)
        return 0;
    if (json_is_boolean(p)) {
        *out = json_is_true(p);
        return 0;
    }
    const char *t = json_string_value(p);
    if (t && (!strcmp(t, "true") || !strcmp(t, "false"))) {
        *out = !strcmp(t, "true");
        return 0;
    }
    return qn_err_set(err, QN_INVALID_ARGUMENT, "parameter %s must be true or false", name);
}

/* One number per row, or one list of n_outputs per row. */
static json_t *per_row(const double *v, size_t rows, size_t no, size_t stride, size_t off)
{
    json_t *a = json_array();
    for (size_t r = 0; r < rows && a; r++) {
        json_t *x;
        if (no == 1) {
            x = json_real(v[r * stride + off]);
        } else {
            x = json_array();
            for (size_t k = 0; k < no && x; k++)
                json_array_append_new(x, json_real(v[(r * no + k) * stride + off]));
        }
        if (!x || json_array_append_new(a, x) < 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static int explain_tabular(serve *s, serve_version *v, const oip_infer_request *rq, json_t *out,
                           qn_err *err)
{
    qml_explain_by by = QML_EXPLAIN_BY_COLUMN;
    const json_t *p = param(rq, "by");
    if (p) {
        const char *t = json_string_value(p);
        if (t && !strcmp(t, "feature"))
            by = QML_EXPLAIN_BY_FEATURE;
        else if (!t || strcmp(t, "column"))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "parameter by must be \"column\" (per input column) or "
                              "\"feature\" (per transformed feature)");
    }
    serve_rows rr;
    qml_explanation e;
    int rc = serve_rows_read(s, v, rq, 0, &rr, err);
    if (rc < 0)
        return rc;
    if ((rc = qml_model_explain(v->model, &rr.b, by, &e, err)) < 0)
        goto out;
    size_t n = e.n_rows, no = e.n_outputs;
    json_t *contrib = json_array();
    for (size_t j = 0; j < e.n_terms && contrib; j++) {
        json_t *vals = per_row(e.contrib, n, no, e.n_terms, j);
        json_t *o = vals ? json_pack("{s:s, s:o}", "feature", e.names[j], "values", vals) : NULL;
        if (!o || json_array_append_new(contrib, o) < 0) {
            json_decref(contrib);
            contrib = NULL;
        }
    }
    json_t *bias = per_row(e.bias, n, no, 1, 0), *margin = per_row(e.margin, n, no, 1, 0);
    int bad = !contrib || !bias || !margin;
    bad |= json_object_set_new(out, "method", json_string(e.method)) < 0;
    bad |= json_object_set_new(out, "link", json_string(e.link)) < 0;
    bad |= json_object_set_new(out, "by", json_string(by == QML_EXPLAIN_BY_FEATURE ? "feature"
                                                                                  : "column")) < 0;
    bad |= json_object_set_new(out, "rows", json_integer((json_int_t)n)) < 0;
    if (no > 1) {
        /* Multiclass: the classes, in the order of each row's list. */
        size_t nc = 0;
        const double *cl = qml_model_classes(v->model, &nc);
        json_t *cls = json_array();
        for (size_t k = 0; k < nc && k < no && cls; k++)
            json_array_append_new(cls, json_real(cl[k]));
        bad |= json_object_set_new(out, "classes", cls) < 0;
    }
    bad |= json_object_set_new(out, "bias", bias) < 0;
    bad |= json_object_set_new(out, "margin", margin) < 0;
    bad |= json_object_set_new(out, "contributions", contrib) < 0;
    if (bad)
        rc = oom(err);
    qml_explanation_free(&e);
out:
    serve_rows_free(&rr);
    return rc;
}

/* A BYTES input of n elements as NUL-terminated text in *ids (strndup'd
 * each; caller frees n of them and the array). */
static int read_ids(const oip_tensor *t, size_t n, char ***ids, qn_err *err)
{
    char **a = calloc(n ? n : 1, sizeof *a);
    if (!a)
        return oom(err);
    *ids = a;
    for (size_t i = 0; i < n; i++) {
        const oip_bytes *b = &t->bytes[i];
        if (!b->len || b->len > 256 || memchr(b->p, '\0', b->len) ||
            !qn_utf8_valid((const char *)b->p, b->len))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input '%s', element %zu: an id is 1 to 256 bytes of UTF-8 text "
                              "without NUL",
                              t->name, i);
        if (!(a[i] = strndup((const char *)b->p, b->len)))
            return oom(err);
    }
    return 0;
}

static void free_ids(char **ids, size_t n)
{
    for (size_t i = 0; ids && i < n; i++)
        free(ids[i]);
    free(ids);
}

static int explain_als(serve_version *v, const oip_infer_request *rq, json_t *out, qn_err *err)
{
    const oip_tensor *user = NULL, *item = NULL;
    for (size_t i = 0; i < rq->ninputs; i++) {
        const oip_tensor *t = &rq->inputs[i];
        const char *name = t->name ? t->name : "";
        const oip_tensor **slot = !strcmp(name, "user_id") ? &user
                                  : !strcmp(name, "item_id") ? &item
                                                             : NULL;
        if (!slot)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "unexpected input '%s': explaining a recommendation takes "
                              "'user_id' and optionally 'item_id' (BYTES, shape [n])",
                              name);
        if (*slot)
            return qn_err_set(err, QN_INVALID_ARGUMENT, "input '%s' is given twice", name);
        *slot = t;
    }
    if (!user)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "missing input 'user_id' (BYTES, shape [n]): an ALS explanation is "
                          "for a user's recommendation");
    const oip_tensor *ts[2] = {user, item};
    size_t n = 0;
    for (int i = 0; i < 2 && ts[i]; i++) {
        const oip_tensor *t = ts[i];
        if (t->datatype != OIP_BYTES || t->ndim != 1 || t->shape[0] < 1 ||
            t->shape[0] > EXPLAIN_MAX_USERS || (size_t)t->shape[0] != t->nbytes)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input '%s' must be BYTES of shape [n], 1 <= n <= %d, with n "
                              "elements",
                              t->name, EXPLAIN_MAX_USERS);
        if (i == 1 && t->nbytes != n)
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "input 'item_id' has %zu elements but 'user_id' has %zu (one item "
                              "per user)",
                              t->nbytes, n);
        n = t->nbytes;
    }
    int k = 10, exclude = 0;
    const json_t *pk = param(rq, "k");
    if (pk) {
        long long x = json_is_integer(pk) ? json_integer_value(pk)
                      : json_is_string(pk) ? strtoll(json_string_value(pk), NULL, 10)
                                           : 0;
        if (x < 1 || x > EXPLAIN_MAX_K ||
            (json_is_string(pk) && strspn(json_string_value(pk), "0123456789") !=
                                       strlen(json_string_value(pk))))
            return qn_err_set(err, QN_INVALID_ARGUMENT,
                              "parameter k must be an integer in [1, %d]", EXPLAIN_MAX_K);
        k = (int)x;
    }
    int rc = param_bool(rq, "exclude_seen", &exclude, err);
    if (rc < 0)
        return rc;
    if (item && param(rq, "exclude_seen"))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "parameter exclude_seen picks the recommended item; it does not "
                          "apply when 'item_id' names the item");
    char **uids = NULL, **iids = NULL;
    qml_model_rec *top = malloc((size_t)k * sizeof *top);
    json_t *list = json_array();
    if (!top || !list) {
        rc = oom(err);
        goto out;
    }
    if ((rc = read_ids(user, n, &uids, err)) < 0 ||
        (item && (rc = read_ids(item, n, &iids, err)) < 0))
        goto out;
    for (size_t r = 0; r < n; r++) {
        qml_rec_explanation x;
        int got = qml_model_explain_rec(v->model, uids[r], iids ? iids[r] : NULL, exclude, k, top,
                                        &x, err);
        if (got < 0) {
            rc = got;
            goto out;
        }
        json_t *cs = json_array();
        for (int j = 0; j < got && cs; j++)
            json_array_append_new(cs, json_pack("{s:s, s:f}", "item", top[j].item_id, "score",
                                                (double)top[j].score));
        json_t *o = cs ? json_pack("{s:s, s:s, s:b, s:f, s:f, s:I, s:o}", "user", uids[r], "item",
                                   x.item_id, "recommended", x.recommended, "score",
                                   (double)x.score, "explained_score", x.total, "past_items",
                                   (json_int_t)x.n_past, "contributions", cs)
                       : NULL;
        if (!o || json_array_append_new(list, o) < 0) {
            rc = oom(err);
            goto out;
        }
    }
    if (json_object_set_new(out, "method", json_string("als_explain")) < 0 ||
        json_object_set(out, "explanations", list) < 0)
        rc = oom(err);
out:
    json_decref(list);
    free(top);
    free_ids(uids, n);
    free_ids(iids, n);
    return rc;
}

int serve_h_explain(qn_req *req, qn_res *res, void *ud)
{
    serve *s = ud;
    const char *model = qn_req_param(req, "m"), *version = qn_req_param(req, "v");
    oip_json_req pr;
    memset(&pr, 0, sizeof pr);
    serve_model *m = NULL;
    serve_version *v = NULL;
    json_t *out = NULL;
    qn_err err;
    qn_err_clear(&err);
    /* The model first: an unknown model is a 404 whatever the body holds. */
    int rc = serve_lookup(s, model, version, &m, &v, &err);
    if (rc == 0)
        rc = serve_read_infer(req, &pr, &err);
    if (rc == 0) {
        pr.rq.model = model;
        pr.rq.version = version;
        out = json_pack("{s:s, s:s, s:s}", "model", m->name, "version", v->vstr, "kind",
                        qml_model_kind(v->model));
        /* Every answer carries the request id: the client's, or one made here. */
        char rid[QN_UUID_LEN + 1];
        if (!pr.rq.id || !*pr.rq.id)
            qn_uuid4(rid);
        if (out && json_object_set_new(out, "id", json_string(pr.rq.id && *pr.rq.id ? pr.rq.id
                                                                                     : rid)) < 0)
            json_decref(out), out = NULL;
        if (!out)
            rc = oom(&err);
        else if (v->is_als)
            rc = explain_als(v, &pr.rq, out, &err);
        else
            rc = explain_tabular(s, v, &pr.rq, out, &err);
    }
    if (v)
        qn_res_header(res, "X-Quern-Model-Version", v->vstr);
    if (rc == 0) {
        qn_res_json(res, 200, out);
        out = NULL;
    } else {
        qn_res_error(res, rc, "%s", err.msg);
    }
    json_decref(out);
    serve_release(v);
    oip_json_req_free(&pr);
    return 0;
}
