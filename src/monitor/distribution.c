/*
 * distribution.c - reference versus current distribution of one feature, kept
 * with each drift report (see distribution.h for the binning and why).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/distribution.h"

static json_t *counts_json(const double *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_integer((json_int_t)v[i])) < 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *numeric(const qml_profile_column *pc, const qml_column *cur)
{
    if (pc->nbins == 0 || !pc->edges || !pc->hist)
        return NULL;
    /* adjacent reference bins merged g at a time: the edges stay the reference's */
    size_t g = (pc->nbins + MON_DIST_MAX_BINS - 1) / MON_DIST_MAX_BINS;
    size_t nb = (pc->nbins + g - 1) / g;
    json_t *out = NULL;
    double *edges = malloc((nb + 1) * sizeof *edges);
    double *ref = calloc(nb, sizeof *ref);
    double *cnt = calloc(nb, sizeof *cnt);
    double *vals = malloc((cur->len ? cur->len : 1) * sizeof *vals);
    if (!edges || !ref || !cnt || !vals)
        goto out;
    for (size_t b = 0; b < nb; b++) {
        edges[b] = pc->edges[b * g];
        for (size_t k = b * g; k < (b + 1) * g && k < pc->nbins; k++)
            ref[b] += (double)pc->hist[k];
    }
    edges[nb] = pc->edges[pc->nbins];
    uint64_t missing = 0, below = 0, above = 0, ref_n = 0;
    size_t n = 0;
    for (size_t i = 0; i < cur->len; i++) {
        double x = cur->num ? cur->num[i] : NAN;
        if (qml_col_is_missing(cur, i) || isnan(x)) {
            missing++;
            continue;
        }
        below += x < edges[0];
        above += x > edges[nb];
        vals[n++] = x;
    }
    qml_histogram_clamped(vals, n, edges, nb, cnt);
    for (size_t k = 0; k < pc->nbins; k++)
        ref_n += pc->hist[k];
    json_t *je = json_array();
    for (size_t b = 0; je && b <= nb; b++)
        if (json_array_append_new(je, json_real(edges[b])) < 0) {
            json_decref(je);
            je = NULL;
        }
    json_t *jr = counts_json(ref, nb), *jc = counts_json(cnt, nb);
    if (je && jr && jc)
        out = json_pack("{s:s, s:s, s:o, s:o, s:o, s:I, s:I, s:I, s:I, s:I, s:I}", "type", "numeric", "binning",
                        "reference_equal_width", "edges", je, "reference", jr, "current", jc, "reference_missing",
                        (json_int_t)pc->missing, "current_missing", (json_int_t)missing, "current_below",
                        (json_int_t)below, "current_above", (json_int_t)above, "reference_total",
                        (json_int_t)(ref_n + pc->missing), "current_total", (json_int_t)cur->len);
    else {
        json_decref(je);
        json_decref(jr);
        json_decref(jc);
    }
out:
    free(edges);
    free(ref);
    free(cnt);
    free(vals);
    return out;
}

typedef struct cat_row {
    const char *name;
    double ref, cur, score;
    size_t order;  /* reference rank, then first sight in the window: ties keep it */
} cat_row;

static int by_score(const void *a, const void *b)
{
    const cat_row *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static json_t *categorical(const qml_profile_column *pc, const qml_column *cur)
{
    json_t *out = NULL;
    size_t ncode = cur->dict ? qml_dict_size(cur->dict) : 0;
    double *by_code = calloc(ncode ? ncode : 1, sizeof *by_code);
    cat_row *rows = calloc(pc->ncat + ncode + 1, sizeof *rows);
    qml_dict *refd = qml_dict_new();
    if (!by_code || !rows || !refd)
        goto out;
    uint64_t missing = 0, ref_n = pc->other;
    for (size_t i = 0; i < cur->len; i++) {
        if (qml_col_is_missing(cur, i) || !cur->cat || cur->cat[i] < 0 || (size_t)cur->cat[i] >= ncode)
            missing++;
        else
            by_code[cur->cat[i]] += 1;
    }
    /* one row per reference category (the dict gives its row), then the window's new ones */
    size_t nrows = 0;
    for (size_t k = 0; k < pc->ncat; k++) {
        if (qml_dict_intern(refd, pc->cats[k], strlen(pc->cats[k])) < 0)
            goto out;
        rows[nrows++] = (cat_row){.name = pc->cats[k], .ref = (double)pc->cat_counts[k], .order = k};
        ref_n += pc->cat_counts[k];
    }
    for (size_t c = 0; c < ncode; c++) {
        if (by_code[c] == 0)
            continue;
        const char *s = qml_dict_str(cur->dict, (int32_t)c);
        int32_t r = qml_dict_find(refd, s, strlen(s));
        if (r >= 0 && (size_t)r < pc->ncat) {
            rows[r].cur += by_code[c];
        } else {
            rows[nrows] = (cat_row){.name = s, .cur = by_code[c], .order = pc->ncat + c};
            nrows++;
        }
    }
    double rn = ref_n ? (double)ref_n : 1, cn = cur->len - missing ? (double)(cur->len - missing) : 1;
    for (size_t k = 0; k < nrows; k++)
        rows[k].score = fmax(rows[k].ref / rn, rows[k].cur / cn);
    qsort(rows, nrows, sizeof *rows, by_score);
    size_t top = nrows < MON_DIST_TOP_K ? nrows : MON_DIST_TOP_K;
    double ref_other = (double)pc->other, cur_other = 0;
    for (size_t k = top; k < nrows; k++) {
        ref_other += rows[k].ref;
        cur_other += rows[k].cur;
    }
    json_t *names = json_array(), *jr = json_array(), *jc = json_array();
    int ok = names && jr && jc;
    for (size_t k = 0; ok && k < top; k++)
        ok = json_array_append_new(names, json_string(rows[k].name)) == 0 &&
             json_array_append_new(jr, json_integer((json_int_t)rows[k].ref)) == 0 &&
             json_array_append_new(jc, json_integer((json_int_t)rows[k].cur)) == 0;
    if (ok)
        out = json_pack("{s:s, s:o, s:o, s:o, s:I, s:I, s:I, s:I, s:I, s:I}", "type", "categorical", "categories",
                        names, "reference", jr, "current", jc, "reference_other", (json_int_t)ref_other,
                        "current_other", (json_int_t)cur_other, "reference_missing", (json_int_t)pc->missing,
                        "current_missing", (json_int_t)missing, "reference_total",
                        (json_int_t)(ref_n + pc->missing), "current_total", (json_int_t)cur->len);
    else {
        json_decref(names);
        json_decref(jr);
        json_decref(jc);
    }
out:
    free(by_code);
    free(rows);
    qml_dict_free(refd);
    return out;
}

json_t *mon_distribution(const qml_profile_column *pc, const qml_column *cur)
{
    if (pc->categorical != (cur->type == QML_CATEGORICAL))
        return NULL;
    return pc->categorical ? categorical(pc, cur) : numeric(pc, cur);
}
