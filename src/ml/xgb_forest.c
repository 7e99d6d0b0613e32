/*
 * xgb_forest.c - walking XGBoost's trees from their JSON (see xgb_forest.h).
 *
 * Every tree's nodes go into one flat array of {left, right, feature,
 * default_left, value}; a node is a leaf when left < 0 and its value is then
 * the leaf weight (XGBoost keeps leaf weights in split_conditions). A row
 * goes left when its value is below the split condition, and follows
 * default_left when it is missing (NaN), as XGBoost's predictor does.
 */
#include "ml/xgb_forest.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef enum { OBJ_LOGISTIC, OBJ_IDENTITY, OBJ_SOFTPROB } objective;

typedef struct node {
    int32_t left, right, feature;
    uint8_t default_left;
    float value; /* split condition, or leaf weight */
} node;

struct qml__forest {
    node *nodes;
    size_t n_nodes;
    int32_t *roots;    /* first node of each tree */
    int32_t *group;    /* output each tree adds to (class for softprob) */
    size_t n_trees;
    size_t n_features;
    size_t n_outputs;
    objective obj;
    float base_margin;
};

void qml__forest_free(qml__forest *f)
{
    if (!f)
        return;
    free(f->nodes);
    free(f->roots);
    free(f->group);
    free(f);
}

size_t qml__forest_n_outputs(const qml__forest *f) { return f->n_outputs; }
size_t qml__forest_n_features(const qml__forest *f) { return f->n_features; }

static const json_t *path(const json_t *v, const char *const *keys)
{
    for (; v && *keys; keys++)
        v = json_object_get(v, *keys);
    return v;
}

/* XGBoost writes its parameters as strings ("5E-1", "14"). */
static int num_param(const json_t *v, double *out)
{
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return 0;
    }
    if (!json_is_string(v))
        return -1;
    char *end;
    *out = strtod(json_string_value(v), &end);
    return *end ? -1 : 0;
}

static int read_tree(const json_t *t, qml__forest *f, size_t *used, size_t cap, size_t n_features)
{
    const json_t *left = json_object_get(t, "left_children"), *right = json_object_get(t, "right_children"),
                 *feat = json_object_get(t, "split_indices"), *cond = json_object_get(t, "split_conditions"),
                 *dl = json_object_get(t, "default_left"), *st = json_object_get(t, "split_type");
    size_t n = json_array_size(left);
    if (n == 0 || json_array_size(right) != n || json_array_size(feat) != n || json_array_size(cond) != n ||
        json_array_size(dl) != n || *used + n > cap)
        return -1;
    for (size_t i = 0; st && i < json_array_size(st); i++)
        if (json_integer_value(json_array_get(st, i)) != 0)
            return -1; /* categorical splits: left to XGBoost */
    node *base = f->nodes + *used;
    for (size_t i = 0; i < n; i++) {
        json_int_t l = json_integer_value(json_array_get(left, i));
        json_int_t r = json_integer_value(json_array_get(right, i));
        json_int_t k = json_integer_value(json_array_get(feat, i));
        if (!json_is_number(json_array_get(cond, i)))
            return -1;
        node *nd = &base[i];
        nd->value = (float)json_number_value(json_array_get(cond, i));
        nd->default_left = json_integer_value(json_array_get(dl, i)) != 0;
        if (l < 0) { /* a leaf */
            nd->left = nd->right = -1;
            nd->feature = 0;
            continue;
        }
        if (l <= (json_int_t)i || r <= (json_int_t)i || l >= (json_int_t)n || r >= (json_int_t)n || k < 0 ||
            (size_t)k >= n_features)
            return -1; /* children come after their parent in XGBoost's order */
        nd->left = (int32_t)(*used + (size_t)l);
        nd->right = (int32_t)(*used + (size_t)r);
        nd->feature = (int32_t)k;
    }
    *used += n;
    return 0;
}

int qml__forest_parse(const char *json, size_t len, qml__forest **out)
{
    *out = NULL;
    json_t *root = json_loadb(json, len, 0, NULL);
    qml__forest *f = calloc(1, sizeof *f);
    int rc = -1;
    if (!root || !f)
        goto out;
    const json_t *learner = json_object_get(root, "learner");
    static const char *const gb_name[] = {"gradient_booster", "name", NULL};
    static const char *const trees_p[] = {"gradient_booster", "model", "trees", NULL};
    static const char *const info_p[] = {"gradient_booster", "model", "tree_info", NULL};
    static const char *const obj_p[] = {"objective", "name", NULL};
    static const char *const base_p[] = {"learner_model_param", "base_score", NULL};
    static const char *const nf_p[] = {"learner_model_param", "num_feature", NULL};
    static const char *const nc_p[] = {"learner_model_param", "num_class", NULL};
    const char *booster = json_string_value(path(learner, gb_name));
    const char *obj = json_string_value(path(learner, obj_p));
    const json_t *trees = path(learner, trees_p), *info = path(learner, info_p);
    double base, nf, nc;
    if (!booster || strcmp(booster, "gbtree") != 0 || !obj || !json_is_array(trees) ||
        json_array_size(info) != json_array_size(trees) || num_param(path(learner, base_p), &base) < 0 ||
        num_param(path(learner, nf_p), &nf) < 0 || num_param(path(learner, nc_p), &nc) < 0 || nf < 1 ||
        nf > 1e7 || nc < 0 || nc > 1e5)
        goto out;
    f->n_features = (size_t)nf;
    if (!strcmp(obj, "binary:logistic")) {
        if (!(base > 0 && base < 1))
            goto out;
        f->obj = OBJ_LOGISTIC;
        f->n_outputs = 1;
        f->base_margin = (float)-log(1.0 / base - 1.0); /* XGBoost's ProbToMargin */
    } else if (!strcmp(obj, "reg:squarederror") || !strcmp(obj, "binary:logitraw")) {
        f->obj = OBJ_IDENTITY;
        f->n_outputs = 1;
        f->base_margin = (float)base;
    } else if (!strcmp(obj, "multi:softprob") && nc >= 2) {
        f->obj = OBJ_SOFTPROB;
        f->n_outputs = (size_t)nc;
        f->base_margin = (float)base;
    } else {
        goto out;
    }
    size_t nt = json_array_size(trees), total = 0, used = 0;
    for (size_t i = 0; i < nt; i++)
        total += json_array_size(json_object_get(json_array_get(trees, i), "left_children"));
    if (nt == 0 || total == 0 || total > INT32_MAX)
        goto out;
    f->nodes = malloc(total * sizeof *f->nodes);
    f->roots = malloc(nt * sizeof *f->roots);
    f->group = malloc(nt * sizeof *f->group);
    if (!f->nodes || !f->roots || !f->group)
        goto out;
    for (size_t i = 0; i < nt; i++) {
        json_int_t g = json_integer_value(json_array_get(info, i));
        if (g < 0 || (size_t)g >= f->n_outputs)
            goto out;
        f->group[i] = (int32_t)g;
        f->roots[i] = (int32_t)used;
        if (read_tree(json_array_get(trees, i), f, &used, total, f->n_features) < 0)
            goto out;
    }
    f->n_trees = nt;
    f->n_nodes = used;
    *out = f;
    f = NULL;
    rc = 0;
out:
    qml__forest_free(f);
    json_decref(root);
    return rc;
}

static float leaf(const node *nodes, int32_t i, const float *row)
{
    while (nodes[i].left >= 0) {
        const node *nd = &nodes[i];
        float v = row[nd->feature];
        i = isnan(v) ? (nd->default_left ? nd->left : nd->right) : (v < nd->value ? nd->left : nd->right);
    }
    return nodes[i].value;
}

void qml__forest_predict(const qml__forest *f, const float *x, size_t n_rows, size_t n_cols, float *out)
{
    for (size_t r = 0; r < n_rows; r++) {
        const float *row = x + r * n_cols;
        float *o = out + r * f->n_outputs;
        for (size_t k = 0; k < f->n_outputs; k++)
            o[k] = f->base_margin;
        for (size_t t = 0; t < f->n_trees; t++)
            o[f->group[t]] += leaf(f->nodes, f->roots[t], row);
        if (f->obj == OBJ_LOGISTIC) {
            o[0] = 1.0f / (1.0f + expf(-o[0]));
        } else if (f->obj == OBJ_SOFTPROB) {
            float mx = o[0], sum = 0;
            for (size_t k = 1; k < f->n_outputs; k++)
                mx = o[k] > mx ? o[k] : mx;
            for (size_t k = 0; k < f->n_outputs; k++)
                sum += (o[k] = expf(o[k] - mx));
            for (size_t k = 0; k < f->n_outputs; k++)
                o[k] /= sum;
        }
    }
}

float qml__forest_split_value(const qml__forest *f, size_t j, uint64_t k)
{
    size_t total = 0, n = 0;
    for (size_t i = 0; i < f->n_nodes; i++)
        total += f->nodes[i].left >= 0 && (size_t)f->nodes[i].feature == j;
    if (total == 0)
        return 0;
    k %= total;
    for (size_t i = 0; i < f->n_nodes; i++)
        if (f->nodes[i].left >= 0 && (size_t)f->nodes[i].feature == j && n++ == k)
            return f->nodes[i].value;
    return 0;
}
