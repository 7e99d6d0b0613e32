/*
 * runs.c - `quern experiments list` and `quern runs list|show|compare|metrics`:
 * the registry's tracking API (/v1/experiments, /v1/runs) as tables on a
 * terminal and JSON with --json.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/client.h"
#include "core/json.h"

/* A JSON call to the registry; prints the failure and returns an exit code,
 * or CLI_OK with *out set. */
static int reg_call(const char *method, const char *path, const json_t *body, json_t **out)
{
    qn_err err;
    if (qn_client_json(cli_client("registry"), method, path, body, NULL, out, &err) < 0)
        return cli_fail("registry", &err);
    return CLI_OK;
}

static int experiments_list(const void *opts)
{
    (void)opts;
    static const char *const h[] = {"ID", "NAME", "STAGE", "ARTIFACTS", NULL};
    static const char *const p[] = {"experiment_id", "name", "lifecycle_stage", "artifact_location"};
    json_t *out = NULL;
    int rc = reg_call("GET", "/v1/experiments?limit=1000&view=all", NULL, &out);
    if (rc == CLI_OK)
        cli_print_table(json_object_get(out, "experiments"), h, p);
    json_decref(out);
    return rc;
}

typedef struct runs_list_opts {
    const char *experiment, *filter, *order_by;
    long long limit;
} runs_list_opts;

static const cli_opt runs_list_table[] = {
    {"experiment", 'e', CLI_STR, NULL, 0, 0, NULL, 0, "only this experiment's runs (an id)",
     offsetof(runs_list_opts, experiment)},
    {"filter", 'f', CLI_STR, NULL, 0, 0, NULL, 0, "MLflow's search filter, e.g. \"metrics.auc > 0.9\"",
     offsetof(runs_list_opts, filter)},
    {"order-by", 'o', CLI_STR, NULL, 0, 0, NULL, 0, "e.g. \"metrics.auc DESC\" (default: newest first)",
     offsetof(runs_list_opts, order_by)},
    {"limit", 'n', CLI_INT, "50", 1, 50000, NULL, 0, "at most this many runs", offsetof(runs_list_opts, limit)},
};

static int runs_list(const void *opts)
{
    const runs_list_opts *o = opts;
    static const char *const h[] = {"RUN", "NAME", "EXPERIMENT", "STATUS", "START", NULL};
    static const char *const p[] = {"run_id", "name", "experiment_id", "status", "start_time"};
    json_t *body = json_pack("{s:I}", "max_results", (json_int_t)o->limit), *out = NULL;
    if (o->experiment)
        json_object_set_new(body, "experiment_ids", json_pack("[s]", o->experiment));
    if (o->filter)
        json_object_set_new(body, "filter", json_string(o->filter));
    if (o->order_by)
        json_object_set_new(body, "order_by", json_pack("[s]", o->order_by));
    int rc = reg_call("POST", "/v1/runs/search", body, &out);
    if (rc == CLI_OK)
        cli_print_table(json_object_get(out, "runs"), h, p);
    json_decref(body);
    json_decref(out);
    return rc;
}

typedef struct run_opts {
    const char *run, *key;
} run_opts;

static const cli_opt run_table[] = {
    {"RUN", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the run id", offsetof(run_opts, run)},
};

static int runs_show(const void *opts)
{
    const run_opts *o = opts;
    json_t *out = NULL;
    int rc = reg_call("GET", cli_printf("/v1/runs/%s", cli_enc(o->run)), NULL, &out);
    if (rc == CLI_OK)
        cli_print_kv(out);
    json_decref(out);
    return rc;
}

static const cli_opt run_key_table[] = {
    {"RUN", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the run id", offsetof(run_opts, run)},
    {"KEY", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the metric", offsetof(run_opts, key)},
};

static int runs_metrics(const void *opts)
{
    const run_opts *o = opts;
    static const char *const h[] = {"STEP", "VALUE", "TIMESTAMP", NULL};
    static const char *const p[] = {"step", "value", "timestamp"};
    json_t *out = NULL;
    int rc = reg_call("GET", cli_printf("/v1/runs/%s/metrics/%s?limit=100000", cli_enc(o->run), cli_enc(o->key)),
                      NULL, &out);
    if (rc == CLI_OK)
        cli_print_table(json_object_get(out, "history"), h, p);
    json_decref(out);
    return rc;
}

#define COMPARE_MAX 6
typedef struct compare_opts {
    const char *runs[COMPARE_MAX];
} compare_opts;

static const cli_opt compare_table[] = {
    {"RUN", 0, CLI_STR, NULL, 0, 0, NULL, 1, "a run id", offsetof(compare_opts, runs[0])},
    {"OTHER", 0, CLI_STR, NULL, 0, 0, NULL, 1, "another run id", offsetof(compare_opts, runs[1])},
    {"RUN3", 0, CLI_STR, NULL, 0, 0, NULL, 0, "more runs (up to six in all)", offsetof(compare_opts, runs[2])},
    {"RUN4", 0, CLI_STR, NULL, 0, 0, NULL, 0, "", offsetof(compare_opts, runs[3])},
    {"RUN5", 0, CLI_STR, NULL, 0, 0, NULL, 0, "", offsetof(compare_opts, runs[4])},
    {"RUN6", 0, CLI_STR, NULL, 0, 0, NULL, 0, "", offsetof(compare_opts, runs[5])},
};

/* Adds "<prefix>.<key>" rows for every key of obj (a run's params or metrics). */
static void compare_keys(json_t *rows, const char *prefix, const json_t *obj)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v) {
        char *name = cli_printf("%s.%s", prefix, k);
        if (!json_object_get(rows, name))
            json_object_set_new(rows, name, json_object());
    }
}

static int runs_compare(const void *opts)
{
    const compare_opts *o = opts;
    json_t *runs[COMPARE_MAX] = {0}, *rows = json_object(), *table = json_array();
    size_t n = 0;
    int rc = CLI_OK;
    for (size_t i = 0; i < COMPARE_MAX && o->runs[i]; i++, n++)
        if ((rc = reg_call("GET", cli_printf("/v1/runs/%s", cli_enc(o->runs[i])), NULL, &runs[i])) != CLI_OK)
            goto out;
    if (g_cli.json) {
        json_t *all = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append(all, runs[i]);
        cli_print_json(all);
        json_decref(all);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        compare_keys(rows, "params", json_object_get(runs[i], "params"));
        compare_keys(rows, "metrics", json_object_get(runs[i], "metrics"));
    }
    /* one row per key, one column per run; a run without the key shows "-" */
    const char *h[COMPARE_MAX + 2] = {"KEY"}, *p[COMPARE_MAX + 1] = {"key"};
    for (size_t i = 0; i < n; i++) {
        h[i + 1] = cli_printf("%.8s %s", json_string_value(json_object_get(runs[i], "run_id")),
                              json_string_value(json_object_get(runs[i], "name")));
        p[i + 1] = cli_printf("r%zu", i);
    }
    h[n + 1] = NULL;
    const char *key;
    json_t *unused;
    json_object_foreach(rows, key, unused) {
        json_t *row = json_pack("{s:s}", "key", key);
        int metric = strncmp(key, "metrics.", 8) == 0;
        const char *k = key + (metric ? 8 : 7);
        for (size_t i = 0; i < n; i++) {
            json_t *v = json_object_get(json_object_get(runs[i], metric ? "metrics" : "params"), k);
            if (metric)
                v = json_object_get(v, "value");
            json_object_set_new(row, p[i + 1], v ? json_incref(v) : json_string("-"));
        }
        json_array_append_new(table, row);
    }
    cli_print_table(table, h, p);
out:
    for (size_t i = 0; i < COMPARE_MAX; i++)
        json_decref(runs[i]);
    json_decref(rows);
    json_decref(table);
    return rc;
}

const cli_cmd cli_cmd_experiments_list =
    CLI_CMD_NOOPTS("experiments list", "every experiment (MLflow's too): id, name, stage", NULL, experiments_list);
const cli_cmd cli_cmd_runs_list =
    CLI_CMD("runs list", "runs, newest first, or as --filter and --order-by say",
            "filters are MLflow's grammar: quern runs list -f \"metrics.auc > 0.9 and params.kind = 'xgboost'\" "
            "-o \"metrics.auc DESC\"",
            runs_list_table, runs_list_opts, runs_list);
const cli_cmd cli_cmd_runs_show =
    CLI_CMD("runs show", "a run: status, params, tags, latest metrics, inputs and outputs", NULL, run_table, run_opts,
            runs_show);
const cli_cmd cli_cmd_runs_compare =
    CLI_CMD("runs compare", "runs side by side: every param and latest metric", NULL, compare_table, compare_opts,
            runs_compare);
const cli_cmd cli_cmd_runs_metrics =
    CLI_CMD("runs metrics", "the whole history of one metric of a run", NULL, run_key_table, run_opts, runs_metrics);
