/*
 * commands.c - the client commands of quern: each one is a thin layer over a
 * service's HTTP API (docs/<service>.md), printing tables on a terminal and
 * JSON with --json. Each command is a table of its arguments and options (see
 * cli.h) and a function that gets them parsed.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/buf.h"
#include "core/digest.h"
#include "core/json.h"
#include "core/trace.h"
#include "ml/csv.h"

/* ---- helpers ---------------------------------------------------------------- */

/* GET/POST/... a JSON API; prints the failure and returns an exit code, or
 * CLI_OK with *out set (may be NULL). */
static int call(const char *service, const char *method, const char *path, const json_t *body,
                json_t **out)
{
    qn_err err;
    json_t *tmp = NULL;
    int rc = qn_client_json(cli_client(service), method, path, body, NULL, out ? out : &tmp, &err);
    json_decref(tmp);
    return rc < 0 ? cli_fail(service, &err) : CLI_OK;
}

static int read_file(const char *path, qn_buf *b)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    int rc = CLI_OK;
    if (!f) {
        cli_err("cannot open %s: %s", path, strerror(errno));
        return CLI_USAGE;
    }
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (qn_buf_append(b, chunk, n) < 0) {
            cli_err("%s is larger than %zu bytes", path, b->max);
            rc = CLI_USAGE;
            goto out;
        }
    if (ferror(f)) {
        cli_err("cannot read %s: %s", path, strerror(errno));
        rc = CLI_FAILED;
    }
out:
    if (f != stdin)
        fclose(f);
    return rc;
}

static json_t *load_json_file(const char *path)
{
    json_error_t je;
    json_t *v = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!v)
        cli_err("%s:%d:%d: %s", path, je.line, je.column, je.text);
    return v;
}

static json_t *parse_json_arg(const char *what, const char *s)
{
    json_error_t je;
    json_t *v = json_loads(s, JSON_REJECT_DUPLICATES, &je);
    if (!v)
        cli_err("%s is not valid JSON (column %d: %s)", what, je.column, je.text);
    return v;
}

/* Most commands take one name (a model, a pipeline, a job). */
typedef struct name_opts {
    const char *name;
} name_opts;

/* A run that `pipelines run` or `sources run` started, and how to follow it. */
typedef struct run_follow {
    const char *service;     /* the service that runs it */
    const char *path;        /* GET: the run's record; NULL: do not poll */
    const char *list_key;    /* NULL: path answers the run; else an array of runs under this key... */
    long long id;            /* ...of which the run is the one with this "id" */
    const char *state_key;   /* the record's state: "state" or "status" */
    const char *const *live; /* the states of a run not ended yet (NULL-terminated) */
    int max_polls;           /* 100 ms apart */
    const char *name;        /* the pipeline or source */
    void (*summary)(const json_t *run, const char *name); /* the run's end without --json */
} run_follow;

/* The run with this "id" in an array of runs, or NULL (borrowed). */
static json_t *run_by_id(const json_t *runs, long long id)
{
    size_t k;
    json_t *r;
    json_array_foreach(runs, k, r)
        if (json_integer_value(json_object_get(r, "id")) == id)
            return r;
    return NULL;
}

/* 1 while run's state is missing or one of f's live states. */
static int run_live(const run_follow *f, const json_t *run)
{
    const char *state = json_string_value(json_object_get(run, f->state_key));
    for (int i = 0; state && f->live[i]; i++)
        if (strcmp(state, f->live[i]) == 0)
            return 1;
    return !state;
}

/* Follows f's run from run (the POST's answer; taken) to its end, polling
 * while it is live, then prints its last record (--json) or f->summary.
 * CLI_FAILED when the run failed, CLI_OK when it did not, or a failed
 * poll's code (said). */
static int follow_run(const run_follow *f, json_t *run)
{
    for (int i = 0; f->path && i < f->max_polls && run_live(f, run); i++) {
        usleep(100000);
        json_t *got = NULL;
        int rc = call(f->service, "GET", f->path, NULL, &got);
        if (rc != CLI_OK) {
            json_decref(run);
            return rc;
        }
        json_t *newer = f->list_key ? run_by_id(json_object_get(got, f->list_key), f->id) : got;
        if (newer) {
            json_decref(run);
            run = json_incref(newer);
        }
        json_decref(got);
    }
    if (g_cli.json)
        cli_print_json(run);
    else
        f->summary(run, f->name);
    const char *state = json_string_value(json_object_get(run, f->state_key));
    int failed = state && strcmp(state, "failed") == 0;
    json_decref(run);
    return failed ? CLI_FAILED : CLI_OK;
}

/* ---- models ---------------------------------------------------------------- */

/* "age:FP64,workclass:BYTES" -> [{"name","datatype","shape":[-1]}] */
static json_t *parse_tensors(const char *spec, const char *what)
{
    json_t *out = json_array();
    char *copy = strdup(spec), *save = NULL;
    if (!out || !copy) {
        cli_err("out of memory");
        json_decref(out);
        free(copy);
        return NULL;
    }
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(t, ':');
        if (!colon || colon == t || !colon[1]) {
            cli_err("%s entry \"%s\" must be NAME:DATATYPE (e.g. age:FP64)", what, t);
            json_decref(out);
            free(copy);
            return NULL;
        }
        *colon = '\0';
        json_array_append_new(out, json_pack("{s:s, s:s, s:[i]}", "name", t, "datatype", colon + 1,
                                             "shape", -1));
    }
    free(copy);
    return out;
}

/* --inputs N: N unnamed numeric features f0..f{N-1} (FP32), which serve also
 * takes as one 2-D tensor [N rows, N features] and advertises that way.
 * Returns NULL (with 0 in *n) when spec is not a plain number. */
static json_t *unnamed_inputs(const char *spec, long *n)
{
    char *end;
    *n = 0;
    if (!spec[0] || spec[strspn(spec, "0123456789")] != '\0')
        return NULL;
    errno = 0;
    long v = strtol(spec, &end, 10);
    if (errno || v < 1 || v > 100000) {
        cli_err("--inputs %s: the number of features must be 1 to 100000", spec);
        *n = -1;
        return NULL;
    }
    json_t *out = json_array();
    for (long i = 0; out && i < v; i++) {
        char name[24];
        snprintf(name, sizeof name, "f%ld", i);
        json_array_append_new(out, json_pack("{s:s, s:s, s:[i]}", "name", name, "datatype", "FP32",
                                             "shape", -1));
    }
    if (!out)
        cli_err("out of memory");
    *n = v;
    return out;
}

/* The inputs an XGBoost JSON model declares: learner.feature_names with
 * feature_types (float, q, int, i: numbers), or when it carries no names (a
 * model trained from a numpy array), learner_model_param.num_feature unnamed
 * features f0..f{n-1}. NULL with the reason printed when it has neither. */
static json_t *xgb_inputs(const char *file)
{
    json_t *doc = load_json_file(file), *out = NULL;
    if (!doc) {
        cli_err("--inputs is needed: %s is not an XGBoost JSON model to read feature names from",
                file);
        return NULL;
    }
    const json_t *learner = json_object_get(doc, "learner");
    const json_t *names = json_object_get(learner, "feature_names");
    const json_t *types = json_object_get(learner, "feature_types");
    if (json_is_array(names) && json_array_size(names) > 0) {
        if (types && (!json_is_array(types) ||
                      (json_array_size(types) && json_array_size(types) != json_array_size(names)))) {
            cli_err("%s: learner.feature_types does not match learner.feature_names; give --inputs", file);
            goto out;
        }
        out = json_array();
        for (size_t i = 0; out && i < json_array_size(names); i++) {
            const char *nm = json_string_value(json_array_get(names, i));
            const char *ty = json_array_size(types) ? json_string_value(json_array_get(types, i)) : "float";
            if (!nm || !*nm || !ty) {
                cli_err("%s: learner.feature_names[%zu] is not a name; give --inputs", file, i);
                goto fail;
            }
            if (strcmp(ty, "float") && strcmp(ty, "q") && strcmp(ty, "int") && strcmp(ty, "i")) {
                cli_err("%s: feature '%s' has type '%s'; quern serves numeric XGBoost features "
                        "(float, q, int, i); give --inputs", file, nm, ty);
                goto fail;
            }
            json_array_append_new(out, json_pack("{s:s, s:s, s:[i]}", "name", nm, "datatype", "FP32",
                                                 "shape", -1));
        }
        goto out;
    }
    const char *nf = json_string_value(
        json_object_get(json_object_get(learner, "learner_model_param"), "num_feature"));
    long n;
    if (nf && (out = unnamed_inputs(nf, &n)) != NULL)
        goto out;
    cli_err("--inputs is needed: %s carries neither feature names nor a feature count", file);
    goto out;
fail:
    json_decref(out);
    out = NULL;
out:
    json_decref(doc);
    return out;
}

/* The feature count an XGBoost JSON model declares
 * (learner.learner_model_param.num_feature), or -1 when the file is not such
 * JSON (then serve's load is the check). */
static long xgb_num_feature(const char *file)
{
    json_error_t je;
    json_t *doc = json_load_file(file, 0, &je);
    const char *nf = json_string_value(json_object_get(
        json_object_get(json_object_get(doc, "learner"), "learner_model_param"), "num_feature"));
    char *end;
    long n = nf && *nf ? strtol(nf, &end, 10) : -1;
    if (nf && *nf && *end)
        n = -1;
    json_decref(doc);
    return n;
}

typedef struct import_opts {
    const char *name, *kind, *file, *inputs, *outputs, *alias, *file_name;
} import_opts;

static const cli_opt import_table[] = {
    {"name", 0, CLI_STR, NULL, 0, 0, NULL, 1, "model name (created if needed)", offsetof(import_opts, name)},
    {"kind", 0, CLI_STR, NULL, 0, 0, "xgboost|logistic|linear", 1, "what the file holds",
     offsetof(import_opts, kind)},
    {"file", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the model file (e.g. Python xgboost's JSON)",
     offsetof(import_opts, file)},
    {"inputs", 0, CLI_STR, NULL, 0, 0, NULL, 0,
     "input tensors, NAME:DATATYPE,... (e.g. age:FP64,workclass:BYTES), or N for N unnamed numeric "
     "features f0..f{N-1} served as one 2-D input (default for xgboost: the feature names and types "
     "the JSON carries)",
     offsetof(import_opts, inputs)},
    {"outputs", 0, CLI_STR, NULL, 0, 0, NULL, 0,
     "output tensors, NAME:DATATYPE,... (default probability:FP32, prediction:FP32 for linear)",
     offsetof(import_opts, outputs)},
    {"promote", 0, CLI_STR, NULL, 0, 0, NULL, 0, "point this alias (e.g. production) at the new version",
     offsetof(import_opts, alias)},
    {"file-name", 0, CLI_STR, NULL, 0, 0, NULL, 0, "the file's name in the manifest (default model.json, linear.json)",
     offsetof(import_opts, file_name)},
};

static int models_import(const void *opts)
{
    const import_opts *o = opts;
    long nfeat = 0;
    json_t *in = NULL;
    if (o->inputs) {
        in = unnamed_inputs(o->inputs, &nfeat);
        if (!in && nfeat == 0)
            in = parse_tensors(o->inputs, "--inputs");
    } else if (strcmp(o->kind, "xgboost") == 0) {
        in = xgb_inputs(o->file);
    } else {
        cli_err("--inputs is needed for a %s model (NAME:DATATYPE,... or a feature count)", o->kind);
    }
    json_t *out = o->outputs ? parse_tensors(o->outputs, "--outputs")
                             : json_pack("[{s:s, s:s, s:[i]}]", "name",
                                         strcmp(o->kind, "linear") == 0 ? "prediction" : "probability",
                                         "datatype", "FP32", "shape", -1);
    json_t *version = NULL;
    int rc = CLI_USAGE;
    if (!in || !out)
        goto out;
    if (o->inputs && strcmp(o->kind, "xgboost") == 0) {
        /* an imported model has no transforms: one input per model feature */
        long nf = xgb_num_feature(o->file);
        if (nf >= 0 && (size_t)nf != json_array_size(in)) {
            cli_err("--inputs declares %zu inputs but %s is a model of %ld features", json_array_size(in),
                    o->file, nf);
            goto out;
        }
    }
    qn_err err;
    char hex[QN_SHA256_HEX + 1];
    if (qn_sha256_file(o->file, hex, &err) < 0) {
        rc = cli_fail(NULL, &err);
        goto out;
    }
    const char *digest = cli_printf("sha256:%s", hex);
    if (qn_client_put_file(cli_client("registry"), cli_printf("/v1/blobs/%s", digest), o->file, NULL, &err) < 0) {
        rc = cli_fail("registry", &err);
        goto out;
    }
    json_t *created = NULL;
    json_t *body = json_pack("{s:s}", "name", o->name);
    int st = qn_client_json(cli_client("registry"), "POST", "/v1/models", body, NULL, &created, &err);
    json_decref(body);
    json_decref(created);
    if (st < 0 && err.code != QN_ALREADY_EXISTS) {
        rc = cli_fail("registry", &err);
        goto out;
    }
    const char *fname = o->file_name ? o->file_name : strcmp(o->kind, "xgboost") == 0 ? "model.json" : "linear.json";
    json_t *manifest = json_pack("{s:s, s:s, s:O, s:O, s:{s:s}}", "format", "quern.model/1", "kind", o->kind,
                                 "inputs", in, "outputs", out, "files", fname, digest);
    json_t *req = json_pack("{s:o, s:s}", "manifest", manifest, "description", "imported with quern models import");
    rc = call("registry", "POST", cli_printf("/v1/models/%s/versions", cli_enc(o->name)), req, &version);
    json_decref(req);
    if (rc != CLI_OK)
        goto out;
    long long v = (long long)json_integer_value(json_object_get(version, "version"));
    if (o->alias) {
        json_t *ab = json_pack("{s:I}", "version", (json_int_t)v);
        rc = call("registry", "PUT", cli_printf("/v1/models/%s/aliases/%s", cli_enc(o->name), cli_enc(o->alias)),
                  ab, NULL);
        json_decref(ab);
        if (rc != CLI_OK)
            goto out;
    }
    if (g_cli.json)
        cli_print_json(version);
    else
        printf("Registered %s version %lld (blob %s)%s%s\n", o->name, v, digest, o->alias ? ", now " : "",
               o->alias ? o->alias : "");
out:
    json_decref(in);
    json_decref(out);
    json_decref(version);
    return rc;
}

/* GETs path from the service svc and prints the array under key as a table
 * of the given columns (JSON with --json). */
static int get_table(const char *svc, const char *path, const char *key,
                     const char *const *headers, const char *const *paths)
{
    json_t *out = NULL;
    int rc = call(svc, "GET", path, NULL, &out);
    if (rc != CLI_OK)
        return rc;
    cli_print_table(json_object_get(out, key), headers, paths);
    json_decref(out);
    return CLI_OK;
}

/* GETs path from the service svc and prints the object as key/value lines
 * (JSON with --json). */
static int get_kv(const char *svc, const char *path)
{
    json_t *out = NULL;
    int rc = call(svc, "GET", path, NULL, &out);
    if (rc != CLI_OK)
        return rc;
    cli_print_kv(out);
    json_decref(out);
    return CLI_OK;
}

static int models_list(const void *opts)
{
    (void)opts;
    static const char *const h[] = {"MODEL", "LATEST", "ALIASES", "UPDATED", NULL};
    static const char *const p[] = {"name", "latest_version", "aliases", "updated_at"};
    return get_table("registry", "/v1/models?limit=1000", "models", h, p);
}

static int models_show(const void *opts)
{
    const name_opts *o = opts;
    return get_kv("registry", cli_printf("/v1/models/%s", cli_enc(o->name)));
}

static int models_versions(const void *opts)
{
    const name_opts *o = opts;
    static const char *const h[] = {"VERSION", "STATUS", "ALIASES", "DATASET", "CREATED", "METRICS", NULL};
    static const char *const p[] = {"version", "status", "aliases", "dataset", "created_at", "metrics"};
    return get_table("registry", cli_printf("/v1/models/%s/versions?limit=1000", cli_enc(o->name)), "versions", h, p);
}

typedef struct promote_opts {
    const char *name;
    long long version;
    const char *alias;
} promote_opts;

static const cli_opt promote_table[] = {
    {"NAME", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the model", offsetof(promote_opts, name)},
    {"VERSION", 0, CLI_INT, NULL, 1, 2147483647, NULL, 1, "the version the alias points at",
     offsetof(promote_opts, version)},
    {"alias", 0, CLI_STR, "production", 0, 0, NULL, 0, "the alias to move", offsetof(promote_opts, alias)},
};

static int models_promote(const void *opts)
{
    const promote_opts *o = opts;
    json_t *out = NULL;
    json_t *body = json_pack("{s:I}", "version", (json_int_t)o->version);
    int rc = call("registry", "PUT", cli_printf("/v1/models/%s/aliases/%s", cli_enc(o->name), cli_enc(o->alias)),
                  body, &out);
    json_decref(body);
    if (rc != CLI_OK)
        return rc;
    if (g_cli.json)
        cli_print_json(out);
    else
        printf("%s: %s -> version %lld (was %s)\n", o->name, o->alias, o->version,
               cli_field(out, "previous_version"));
    json_decref(out);
    return CLI_OK;
}

typedef struct rollback_opts {
    const char *name, *alias, *reason;
} rollback_opts;

static const cli_opt rollback_table[] = {
    {"NAME", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the model", offsetof(rollback_opts, name)},
    {"alias", 0, CLI_STR, "production", 0, 0, NULL, 0, "the alias to move back", offsetof(rollback_opts, alias)},
    {"reason", 0, CLI_STR, NULL, 0, 0, NULL, 0, "why, kept in the alias history after \"rollback: \"",
     offsetof(rollback_opts, reason)},
};

/* Moves the alias back to the version it held before its current one; the
 * registry picks that version from the alias history and records the move. */
static int models_rollback(const void *opts)
{
    const rollback_opts *o = opts;
    json_t *out = NULL;
    json_t *body = o->reason ? json_pack("{s:s}", "reason", o->reason) : NULL;
    int rc = call("registry", "POST",
                  cli_printf("/v1/models/%s/aliases/%s/rollback", cli_enc(o->name), cli_enc(o->alias)), body, &out);
    json_decref(body);
    if (rc != CLI_OK)
        return rc;
    if (g_cli.json)
        cli_print_json(out);
    else
        printf("%s: %s rolled back from version %s to version %s\n", o->name, o->alias,
               cli_field(out, "from_version"), cli_field(out, "version"));
    json_decref(out);
    return CLI_OK;
}

typedef struct history_opts {
    const char *name, *alias;
} history_opts;

static const cli_opt history_table[] = {
    {"NAME", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the model", offsetof(history_opts, name)},
    {"alias", 0, CLI_STR, "production", 0, 0, NULL, 0, "the alias", offsetof(history_opts, alias)},
};

static int models_history(const void *opts)
{
    const history_opts *o = opts;
    static const char *const h[] = {"AT", "FROM", "TO", "REASON", "WHO", NULL};
    static const char *const p[] = {"at", "from_version", "to_version", "reason", "who"};
    return get_table("registry",
                     cli_printf("/v1/models/%s/aliases/%s/history?limit=1000", cli_enc(o->name), cli_enc(o->alias)),
                     "history", h, p);
}

static const cli_opt model_name_table[] = {
    {"NAME", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the model", offsetof(name_opts, name)},
};

const cli_cmd cli_cmd_models_list = CLI_CMD_NOOPTS("models list", "every model: latest version, aliases", NULL,
                                                   models_list);
const cli_cmd cli_cmd_models_show = CLI_CMD("models show", "a model: description, tags, latest version, aliases",
                                            NULL, model_name_table, name_opts, models_show);
const cli_cmd cli_cmd_models_versions = CLI_CMD("models versions",
                                                "a model's versions with status, aliases and metrics", NULL,
                                                model_name_table, name_opts, models_versions);
const cli_cmd cli_cmd_models_promote = CLI_CMD("models promote", "point an alias (production) at a version", NULL,
                                               promote_table, promote_opts, models_promote);
const cli_cmd cli_cmd_models_rollback = CLI_CMD(
    "models rollback", "move an alias (production) back to the version it held before", NULL, rollback_table,
    rollback_opts, models_rollback);
const cli_cmd cli_cmd_models_history = CLI_CMD("models history", "every move of an alias: when, from, to, why, who",
                                               NULL, history_table, history_opts, models_history);
const cli_cmd cli_cmd_models_import = CLI_CMD(
    "models import", "register a model trained elsewhere so serve runs it unchanged",
    "e.g. quern models import --name adult --kind xgboost --file model.json --inputs age:FP64,workclass:BYTES "
    "--promote production; --inputs 14 for 14 unnamed numeric features; without --inputs an XGBoost JSON's "
    "own feature names",
    import_table, import_opts, models_import);

/* ---- ingest ---------------------------------------------------------------- */

typedef struct ingest_opts {
    const char *dataset, *file, *format;
    long long batch, batch_bytes;
    int skip;
    const char *delimiter, *encoding, *na;
    int decimal_comma;
} ingest_opts;

static const cli_opt ingest_table[] = {
    {"DATASET", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the dataset (created if needed)", offsetof(ingest_opts, dataset)},
    {"FILE", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the rows, or - for stdin", offsetof(ingest_opts, file)},
    {"format", 0, CLI_STR, NULL, 0, 0, "csv|ndjson", 0, "how FILE is written (default: csv when its name says .csv)",
     offsetof(ingest_opts, format)},
    {"batch", 0, CLI_INT, "5000", 1, 100000, NULL, 0, "rows per request at most", offsetof(ingest_opts, batch)},
    {"batch-bytes", 0, CLI_SIZE, "16M", 1024, 1LL << 30, NULL, 0,
     "bytes per request at most (ingest takes 64M by default; less when it says so)",
     offsetof(ingest_opts, batch_bytes)},
    {"skip-invalid", 0, CLI_FLAG, NULL, 0, 0, NULL, 0, "store the valid rows of a batch and report the others",
     offsetof(ingest_opts, skip)},
    {"delimiter", 0, CLI_STR, NULL, 0, 0, NULL, 0,
     "CSV separator: , ; tab | or auto (default: sniffed from the first lines)", offsetof(ingest_opts, delimiter)},
    {"decimal-comma", 0, CLI_FLAG, NULL, 0, 0, NULL, 0, "numeric CSV cells write their point as a comma (3,5)",
     offsetof(ingest_opts, decimal_comma)},
    {"encoding", 0, CLI_STR, NULL, 0, 0, "utf-8|latin-1|windows-1252", 0, "of a CSV file (default utf-8)",
     offsetof(ingest_opts, encoding)},
    {"na", 0, CLI_STR, NULL, 0, 0, NULL, 0, "CSV cells that mean missing, comma-separated (NA,?,-200)",
     offsetof(ingest_opts, na)},
};

/* The batch being filled: the CSV header, then whole records, each with the
 * line of the file where it starts, so that a refusal names the line and a
 * batch ingest finds too large is sent again in smaller requests. */
typedef struct ingest_run {
    const ingest_opts *o;
    const char *path, *ctype;
    int csv;
    int dialect_done;     /* the CSV query (delimiter...) is in path */
    qn_buf body;          /* the CSV header (header_len bytes), then the records */
    size_t header_len;
    long long header_lines;
    size_t *off;          /* record i starts at body.data + off[i] ... */
    long long *line;      /* ... and at this line of the file */
    size_t n;             /* records in the batch (at most o->batch) */
    int nonblank;         /* the batch has a record that is not blank */
    long long max_bytes;  /* of one request: --batch-bytes, or ingest's limit when smaller */
    long long accepted, rejected, requests, reported;
    char run_id[QN_UUID_LEN + 1]; /* this run's part of each request's Idempotency-Key */
} ingest_run;

static size_t rec_end(const ingest_run *r, size_t i)
{
    return i < r->n ? r->off[i] : r->body.len;
}

/* A line of a request body (1-based, header included) as a line of the file. */
static long long file_line(const ingest_run *r, size_t from, long long body_line)
{
    return r->line[from] + (body_line - r->header_lines - 1);
}

/* The errors ingest lists (refused or skipped rows), with their file lines. */
static void print_row_errors(ingest_run *r, size_t from, const json_t *errors)
{
    size_t i;
    const json_t *e;
    json_array_foreach(errors, i, e) {
        if (r->reported++ >= 10)
            return;
        const json_t *l = json_object_get(e, "line");
        const char *why = json_string_value(json_object_get(e, "reason"));
        if (json_is_integer(l))
            cli_err("  line %lld of %s: %s", file_line(r, from, json_integer_value(l)), r->o->file,
                    why ? why : "invalid");
        else
            cli_err("  row %s of the batch from line %lld: %s", cli_field(e, "row"), r->line[from],
                    why ? why : "invalid");
    }
}

static int send_range(ingest_run *r, size_t from, size_t to);

/* Sends [from, to) again in requests of at most r->max_bytes. */
static int send_smaller(ingest_run *r, size_t from, size_t to)
{
    for (size_t a = from; a < to;) {
        size_t b = a + 1;
        while (b < to && r->header_len + (rec_end(r, b + 1) - r->off[a]) <= (size_t)r->max_bytes)
            b++;
        int rc = send_range(r, a, b);
        if (rc != CLI_OK)
            return rc;
        a = b;
    }
    return CLI_OK;
}

/* POSTs records [from, to) with the header; adds to the counters, or prints
 * where it failed and how much ingest acknowledged before. */
static int send_range(ingest_run *r, size_t from, size_t to)
{
    qn_buf req, ans;
    qn_err err;
    qn_buf_init(&req, r->body.len); /* a part of the batch is never larger than the batch */
    qn_buf_init(&ans, 16u << 20);
    json_t *a = NULL;
    const char *data = r->body.data;
    size_t len = rec_end(r, to);
    int rc = CLI_OK;
    if (from > 0) { /* a part of the batch: header + those records */
        if (qn_buf_append(&req, r->body.data, r->header_len) < 0 ||
            qn_buf_append(&req, r->body.data + r->off[from], rec_end(r, to) - r->off[from]) < 0) {
            cli_err("out of memory building a request for the rows from line %lld", r->line[from]);
            rc = CLI_FAILED;
            goto out;
        }
        data = req.data;
        len = req.len;
    }
    /* One key per request of this run: a request whose answer was lost (a
     * connection cut after ingest stored the rows) is sent again under it,
     * and ingest answers it from what it stored instead of storing twice. */
    char key[QN_UUID_LEN + 48];
    snprintf(key, sizeof key, "%s:%lld-%lld", r->run_id, r->line[from], r->line[to - 1]);
    int st = qn_client_raw_idem(cli_client("ingest"), "POST", r->path, r->ctype, data, len, key, NULL, &ans, &err);
    a = ans.len ? json_loadb(ans.data, ans.len, 0, NULL) : NULL;
    if (st >= 0) {
        r->requests++;
        r->accepted += json_integer_value(json_object_get(a, "accepted"));
        r->rejected += json_integer_value(json_object_get(a, "rejected"));
        print_row_errors(r, from, json_object_get(a, "errors"));
        goto out;
    }
    const json_t *details = json_object_get(json_object_get(a, "error"), "details");
    const json_t *limit = json_object_get(details, "limit");
    if (err.code == QN_RESOURCE_EXHAUSTED && json_is_integer(limit) && to - from > 1 &&
        json_integer_value(limit) > 0) {
        /* 413: this ingest takes less than --batch-bytes; so be it from now on. */
        if (json_integer_value(limit) < r->max_bytes) {
            r->max_bytes = json_integer_value(limit);
            cli_err("note: ingest accepts at most %lld bytes per request; sending smaller batches", r->max_bytes);
        }
        rc = send_smaller(r, from, to);
        goto out;
    }
    /* Where it happened: the first row ingest names, else the first of the request. */
    long long at = r->line[from];
    const json_t *first = json_array_get(json_object_get(details, "errors"), 0);
    if (json_is_integer(json_object_get(first, "line")))
        at = file_line(r, from, json_integer_value(json_object_get(first, "line")));
    cli_err("%s: failed at line %lld (a request of the rows at lines %lld-%lld): %s", r->o->file, at, r->line[from],
            r->line[to - 1], err.msg);
    print_row_errors(r, from, json_object_get(details, "errors"));
    cli_err("%lld rows before line %lld were acknowledged by ingest (%lld accepted, %lld rejected); "
            "nothing from line %lld on was stored",
            r->accepted + r->rejected, r->line[from], r->accepted, r->rejected, r->line[from]);
    if (err.code == QN_UNAVAILABLE || err.code == QN_DEADLINE_EXCEEDED) {
        /* A service that refuses a body as too large may close the connection
         * before the client can read why: say so when ingest still answers. */
        qn_err live;
        if (qn_client_json(cli_client("ingest"), "GET", "/healthz", NULL, NULL, NULL, &live) >= 0)
            cli_err("ingest answers, but the connection broke while %zu bytes were sent: if its --max-body "
                    "is smaller, send with a smaller --batch-bytes", len);
        else
            cli_err("is quern-ingest running? `quern up --detach` starts every service; `quern status` shows them");
    }
    rc = cli_exit_code(err.code);
out:
    json_decref(a);
    qn_buf_free(&req);
    qn_buf_free(&ans);
    return rc;
}

/* The CSV dialect as query parameters, fixed with the first batch so that
 * every batch is read the same way: the delimiter given, or the one the
 * first batch's lines show (libquern-ml's sniffer, the same as ingest's). */
static void csv_dialect(ingest_run *r)
{
    const ingest_opts *o = r->o;
    if (!r->csv || r->dialect_done)
        return;
    r->dialect_done = 1;
    const char *sep = o->delimiter && strcmp(o->delimiter, "auto") ? o->delimiter : NULL;
    int stored = 0;
    if (!o->delimiter) {
        /* A delimiter stored with the dataset's schema is ingest's to apply. */
        json_t *sch = NULL;
        qn_err e;
        if (qn_client_json(cli_client("ingest"), "GET", cli_printf("/v1/datasets/%s/schema", cli_enc(o->dataset)),
                           NULL, NULL, &sch, &e) >= 0)
            stored = json_object_get(json_object_get(json_object_get(sch, "schema"), "csv"), "delimiter") != NULL;
        json_decref(sch);
    }
    if (!sep && !stored) {
        qml_csv_opts co;
        qml_csv_opts_init(&co);
        co.sep = "auto";
        co.encoding = o->encoding;
        co.infer_rows = 1;
        qn_err e;
        qml_csv_reader *cr = qml_csv_open_mem(r->body.data, r->body.len, &co, &e);
        if (cr) /* else ingest sniffs, and says what is wrong with the file */
            sep = cli_printf("%s", qml_csv_sep(cr));
        qml_csv_close(cr);
    }
    const char *q = r->path;
    char c = strchr(q, '?') ? '&' : '?';
    if (sep) {
        q = cli_printf("%s%cdelimiter=%s", q, c, strcmp(sep, "\t") ? cli_enc(sep) : "tab");
        c = '&';
    }
    if (o->decimal_comma) {
        q = cli_printf("%s%cdecimal_comma=true", q, c);
        c = '&';
    }
    if (o->encoding) {
        q = cli_printf("%s%cencoding=%s", q, c, cli_enc(o->encoding));
        c = '&';
    }
    if (o->na)
        q = cli_printf("%s%cna=%s", q, c, cli_enc(o->na));
    r->path = q;
}

/* Sends the batch, then starts the next one (the header stays). */
static int flush_batch(ingest_run *r)
{
    int rc = CLI_OK;
    csv_dialect(r);
    if (r->n && r->nonblank)
        rc = send_range(r, 0, r->n);
    r->body.len = r->header_len;
    r->n = 0;
    r->nonblank = 0;
    if (rc == CLI_OK && !g_cli.json && g_cli.tty)
        cli_progress("\r%lld rows sent", r->accepted + r->rejected);
    return rc;
}

static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return 0;
    return 1;
}

/* Adds one whole record (a CSV record may span lines), sending the batch
 * first when the record would take it past its rows or bytes. */
static int add_record(ingest_run *r, const char *rec, size_t len, long long line, long long nlines)
{
    if (r->csv && r->header_len == 0) {
        if (qn_buf_append(&r->body, rec, len) < 0)
            goto too_big;
        r->header_len = len;
        r->header_lines = nlines;
        return CLI_OK;
    }
    int rc;
    if (r->n > 0 && r->body.len + len > (size_t)r->max_bytes && (rc = flush_batch(r)) != CLI_OK)
        return rc;
    if (r->header_len + len > (size_t)r->max_bytes || qn_buf_append(&r->body, rec, len) < 0)
        goto too_big;
    r->off[r->n] = r->body.len - len;
    r->line[r->n] = line;
    r->n++;
    r->nonblank |= !is_blank(rec, len);
    if (r->n >= (size_t)r->o->batch)
        return flush_batch(r);
    return CLI_OK;
too_big:
    cli_err("%s: line %lld: a record of %zu bytes does not fit in one request of %lld bytes (--batch-bytes)",
            r->o->file, line, len, r->max_bytes);
    cli_err("%lld rows before it were acknowledged by ingest (%lld accepted, %lld rejected)",
            r->accepted + r->rejected, r->accepted, r->rejected);
    return CLI_USAGE;
}

static int ingest(const void *opts)
{
    const ingest_opts *o = opts;
    ingest_run r = {.o = o, .max_bytes = o->batch_bytes};
    qn_uuid4(r.run_id);
    const char *format = o->format ? o->format : strstr(o->file, ".csv") ? "csv" : "ndjson";
    r.csv = strcmp(format, "csv") == 0;
    if (!r.csv && (o->delimiter || o->decimal_comma || o->encoding || o->na)) {
        cli_err("--delimiter, --decimal-comma, --encoding and --na apply to CSV files only");
        return CLI_USAGE;
    }
    if (o->delimiter && strcmp(o->delimiter, ",") && strcmp(o->delimiter, ";") && strcmp(o->delimiter, "tab") &&
        strcmp(o->delimiter, "\t") && strcmp(o->delimiter, "|") && strcmp(o->delimiter, "auto")) {
        cli_err("--delimiter must be one of , ; tab | auto, not \"%s\"", o->delimiter);
        return CLI_USAGE;
    }
    r.ctype = r.csv ? "text/csv" : "application/x-ndjson";
    r.path = cli_printf("/v1/datasets/%s/events%s", cli_enc(o->dataset), o->skip ? "?on_error=skip" : "");
    r.off = calloc((size_t)o->batch, sizeof *r.off);
    r.line = calloc((size_t)o->batch, sizeof *r.line);
    qn_buf_init(&r.body, (size_t)o->batch_bytes);
    qn_buf rec;
    qn_buf_init(&rec, (size_t)o->batch_bytes);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long long lineno = 0, rec_line = 0, rec_lines = 0;
    int rc = CLI_OK, in_quotes = 0;
    FILE *f = strcmp(o->file, "-") == 0 ? stdin : fopen(o->file, "rb");
    if (!f) {
        cli_err("cannot open %s: %s", o->file, strerror(errno));
        rc = CLI_USAGE;
        goto out;
    }
    if (!r.off || !r.line) {
        cli_err("out of memory");
        rc = CLI_FAILED;
        goto out;
    }
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (rec.len == 0)
            rec_line = lineno, rec_lines = 0;
        rec_lines++;
        if (qn_buf_append(&rec, line, (size_t)n) < 0) {
            /* What came before is sent, so that the count below is all of it. */
            if ((rc = flush_batch(&r)) != CLI_OK)
                goto out;
            cli_err("%s: line %lld: a record of more than %lld bytes does not fit in one request (--batch-bytes)",
                    o->file, rec_line, r.max_bytes);
            cli_err("%lld rows before it were acknowledged by ingest (%lld accepted, %lld rejected)",
                    r.accepted + r.rejected, r.accepted, r.rejected);
            rc = CLI_USAGE;
            goto out;
        }
        if (r.csv) /* a quoted field may hold newlines: a record ends outside quotes */
            for (ssize_t i = 0; i < n; i++)
                in_quotes ^= line[i] == '"';
        if (in_quotes)
            continue;
        if ((rc = add_record(&r, rec.data, rec.len, rec_line, rec_lines)) != CLI_OK)
            goto out;
        qn_buf_reset(&rec);
    }
    if (ferror(f)) {
        cli_err("cannot read %s at line %lld: %s", o->file, lineno + 1, strerror(errno));
        cli_err("%lld rows before it were acknowledged by ingest", r.accepted + r.rejected);
        rc = CLI_FAILED;
        goto out;
    }
    /* An unterminated quote: ingest says what is wrong with it. */
    if (rec.len && (rc = add_record(&r, rec.data, rec.len, rec_line, rec_lines)) != CLI_OK)
        goto out;
    if ((rc = flush_batch(&r)) != CLI_OK)
        goto out;
    if (g_cli.json) {
        json_t *j = json_pack("{s:s, s:I, s:I, s:I}", "dataset", o->dataset, "accepted", (json_int_t)r.accepted,
                              "rejected", (json_int_t)r.rejected, "batches", (json_int_t)r.requests);
        cli_print_json(j);
        json_decref(j);
    } else {
        if (g_cli.line_open)
            fputc('\r', stderr), g_cli.line_open = 0;
        printf("%s: %lld rows accepted, %lld rejected, in %lld batches\n", o->dataset, r.accepted, r.rejected,
               r.requests);
    }
    rc = r.rejected && !o->skip ? CLI_USAGE : CLI_OK;
out:
    free(line);
    if (f && f != stdin)
        fclose(f);
    qn_buf_free(&rec);
    qn_buf_free(&r.body);
    free(r.off);
    free(r.line);
    return rc;
}

const cli_cmd cli_cmd_ingest = CLI_CMD(
    "ingest", "send events or rows to a dataset (CSV, NDJSON)",
    "Sends FILE in batches cut by rows and by bytes; CSV keeps its header in every batch and a quoted\n"
    "record is never split. A failure names the line of FILE where it happened and how many rows\n"
    "ingest acknowledged before it, and exits non-zero.",
    ingest_table, ingest_opts, ingest);

/* ---- pipelines --------------------------------------------------------------- */

static const cli_opt pipeline_name_table[] = {
    {"NAME", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the pipeline", offsetof(name_opts, name)},
};

typedef struct put_opts {
    const char *name, *file;
} put_opts;

static const cli_opt pipeline_put_table[] = {
    {"NAME", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the pipeline", offsetof(put_opts, name)},
    {"FILE", 0, CLI_STR, NULL, 0, 0, NULL, 1, "its spec, JSON (docs/prep.md)", offsetof(put_opts, file)},
};

static int pipelines_list(const void *opts)
{
    (void)opts;
    static const char *const h[] = {"PIPELINE", "SOURCE", "OUTPUT", "TRIGGER", NULL};
    static const char *const p[] = {"name", "source", "output", "trigger.kind"};
    return get_table("prep", "/v1/pipelines", "pipelines", h, p);
}

static int pipelines_show(const void *opts)
{
    const name_opts *o = opts;
    return get_kv("prep", cli_printf("/v1/pipelines/%s", cli_enc(o->name)));
}

/* PUTs the JSON document in file to path of service, as `pipelines put` and
 * `sources put` store what they declare. CLI_OK with *out the answer (the
 * caller frees it), which --json has printed; else the failure, said. */
static int put_file(const char *service, const char *path, const char *file, json_t **out)
{
    *out = NULL;
    json_t *body = load_json_file(file);
    if (!body)
        return CLI_USAGE;
    int rc = call(service, "PUT", path, body, out);
    json_decref(body);
    if (rc == CLI_OK && g_cli.json)
        cli_print_json(*out);
    return rc;
}

static int pipelines_put(const void *opts)
{
    const put_opts *o = opts;
    json_t *out;
    int rc = put_file("prep", cli_printf("/v1/pipelines/%s", cli_enc(o->name)), o->file, &out);
    if (rc == CLI_OK && !g_cli.json)
        printf("Pipeline %s stored\n", o->name);
    json_decref(out);
    return rc;
}

/* The run's own record: rows_in and rows_out are what it read and wrote. */
static void pipeline_run_summary(const json_t *run, const char *name)
{
    (void)name;
    printf("run %s: %s", cli_field(run, "run_id"), cli_field(run, "state"));
    if (json_object_get(run, "dataset_version"))
        printf(", dataset version %s", cli_field(run, "dataset_version"));
    if (json_object_get(run, "rows_in") || json_object_get(run, "rows_out"))
        printf(", rows in %s, out %s", cli_field(run, "rows_in"), cli_field(run, "rows_out"));
    else if (json_object_get(run, "report"))
        printf(", rows in %s, out %s", cli_field(run, "report.rows_in"), cli_field(run, "report.rows_out"));
    if (json_object_get(run, "error") && !json_is_null(json_object_get(run, "error")))
        printf("\nerror: %s", cli_field(run, "error"));
    printf("\n");
}

static int pipelines_run(const void *opts)
{
    static const char *const live[] = {"queued", "running", NULL};
    const name_opts *o = opts;
    json_t *out = NULL;
    int rc = call("prep", "POST", cli_printf("/v1/pipelines/%s/runs", cli_enc(o->name)), NULL, &out);
    if (rc != CLI_OK)
        return rc;
    const char *id = json_string_value(json_object_get(out, "run_id"));
    run_follow f = {.service = "prep",
                    .path = id ? cli_printf("/v1/pipelines/%s/runs/%s", cli_enc(o->name), cli_enc(id)) : NULL,
                    .state_key = "state",
                    .live = live,
                    .max_polls = 6000, /* 10 minutes */
                    .name = o->name,
                    .summary = pipeline_run_summary};
    return follow_run(&f, out);
}

const cli_cmd cli_cmd_pipelines_list = CLI_CMD_NOOPTS("pipelines list", "every pipeline: source, output, trigger",
                                                      NULL, pipelines_list);
const cli_cmd cli_cmd_pipelines_show = CLI_CMD("pipelines show", "a pipeline's spec", NULL, pipeline_name_table,
                                               name_opts, pipelines_show);
const cli_cmd cli_cmd_pipelines_put = CLI_CMD("pipelines put", "store a pipeline from its JSON spec", NULL,
                                              pipeline_put_table, put_opts, pipelines_put);
const cli_cmd cli_cmd_pipelines_run = CLI_CMD("pipelines run", "run a pipeline now and follow the run to its end",
                                              NULL, pipeline_name_table, name_opts, pipelines_run);

/* ---- sources (quern-ingest pull sources) ------------------------------------------ */

static const cli_opt source_name_table[] = {
    {"NAME", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the source", offsetof(name_opts, name)},
};

static const cli_opt source_put_table[] = {
    {"NAME", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the source", offsetof(put_opts, name)},
    {"FILE", 0, CLI_STR, NULL, 0, 0, NULL, 1, "its declaration, JSON (docs/ingest.md, Sources)",
     offsetof(put_opts, file)},
};

typedef struct source_history_opts {
    const char *name;
    long long limit;
} source_history_opts;

static const cli_opt source_history_table[] = {
    {"NAME", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the source", offsetof(source_history_opts, name)},
    {"limit", 0, CLI_INT, "20", 1, 1000, NULL, 0, "runs shown, newest first",
     offsetof(source_history_opts, limit)},
};

static int sources_list(const void *opts)
{
    (void)opts;
    static const char *const h[] = {"SOURCE", "KIND", "DATASET", "INTERVAL", "CURSOR", "RUNNING", NULL};
    static const char *const p[] = {"name", "kind", "dataset", "interval", "cursor", "running"};
    return get_table("ingest", "/v1/sources", "sources", h, p);
}

static int sources_show(const void *opts)
{
    const name_opts *o = opts;
    return get_kv("ingest", cli_printf("/v1/sources/%s", cli_enc(o->name)));
}

static int sources_put(const void *opts)
{
    const put_opts *o = opts;
    json_t *out;
    int rc = put_file("ingest", cli_printf("/v1/sources/%s", cli_enc(o->name)), o->file, &out);
    if (rc == CLI_OK && !g_cli.json)
        printf("Source %s stored (%s into dataset %s)\n", o->name, cli_field(out, "kind"), cli_field(out, "dataset"));
    json_decref(out);
    return rc;
}

static int sources_history(const void *opts)
{
    const source_history_opts *o = opts;
    static const char *const h[] = {"RUN", "CAUSE", "STATUS", "ROWS", "REJECTED", "MS", "STARTED", "ERROR", NULL};
    static const char *const p[] = {"id", "cause", "status", "rows", "rejected", "duration_ms", "started_at", "error"};
    return get_table("ingest", cli_printf("/v1/sources/%s/runs?limit=%lld", cli_enc(o->name), o->limit), "runs", h,
                     p);
}

static void source_run_summary(const json_t *run, const char *name)
{
    printf("run %s of %s: %s, %s rows stored, %s rejected, %s ms", cli_field(run, "id"), name, cli_field(run, "status"),
           cli_field(run, "rows"), cli_field(run, "rejected"), cli_field(run, "duration_ms"));
    if (json_string_value(json_object_get(run, "error")))
        printf("\nerror: %s", cli_field(run, "error"));
    printf("\n");
}

/* Starts a run and follows it to its end (the run's record is the answer).
 * ingest answers a source's recent runs, not one run: the run is found among
 * them by its id. */
static int sources_run(const void *opts)
{
    static const char *const live[] = {"running", NULL};
    const name_opts *o = opts;
    json_t *out = NULL;
    int rc = call("ingest", "POST", cli_printf("/v1/sources/%s/runs", cli_enc(o->name)), NULL, &out);
    if (rc != CLI_OK)
        return rc;
    run_follow f = {.service = "ingest",
                    .path = cli_printf("/v1/sources/%s/runs?limit=20", cli_enc(o->name)),
                    .list_key = "runs",
                    .id = (long long)json_integer_value(json_object_get(out, "id")),
                    .state_key = "status",
                    .live = live,
                    .max_polls = 36000, /* an hour */
                    .name = o->name,
                    .summary = source_run_summary};
    return follow_run(&f, out);
}

const cli_cmd cli_cmd_sources_list = CLI_CMD_NOOPTS("sources list", "every pull source of quern-ingest", NULL,
                                                    sources_list);
const cli_cmd cli_cmd_sources_show = CLI_CMD("sources show", "a source: declaration, cursor, last run", NULL,
                                             source_name_table, name_opts, sources_show);
const cli_cmd cli_cmd_sources_put = CLI_CMD(
    "sources put", "declare or change a pull source from its JSON declaration",
    "Kinds: postgres, sqlite, http, files (docs/ingest.md). A postgres password is given by where it is\n"
    "(password_file, password_env), never in the declaration.",
    source_put_table, put_opts, sources_put);
const cli_cmd cli_cmd_sources_run = CLI_CMD("sources run", "run a source now and follow the run to its end", NULL,
                                            source_name_table, name_opts, sources_run);
const cli_cmd cli_cmd_sources_history = CLI_CMD("sources history", "a source's runs: rows, duration, error", NULL,
                                                source_history_table, source_history_opts, sources_history);

/* ---- train and jobs --------------------------------------------------------------- */

/* A progress number (seconds: one decimal and "s"), or "-" when absent / null. */
static const char *progress_num(const json_t *p, const char *key, int seconds)
{
    const json_t *v = json_object_get(p, key);
    if (!json_is_number(v))
        return "-";
    return seconds ? cli_printf("%.1fs", json_number_value(v)) : cli_printf("%.6g", json_number_value(v));
}

/* One progress report of a job: the stage, the last point of its run's fit
 * series (iteration of iterations, loss), elapsed and ETA. A bar redrawn in
 * place on a terminal, else one plain line per change. */
static void progress_line(const json_t *job, int final)
{
    const char *state = cli_field(job, "state");
    const json_t *p = json_object_get(job, "progress");
    double frac = json_number_value(json_object_get(p, "fraction"));
    const char *iter = json_object_get(p, "iterations")
                           ? cli_printf("%s/%s", cli_field(p, "iteration"), cli_field(p, "iterations"))
                           : cli_field(p, "iteration");
    const char *loss = progress_num(p, "loss", 0);
    const char *elapsed = progress_num(p, "elapsed_s", 1);
    const char *eta = progress_num(p, "eta_s", 1);
    const char *stage = json_string_value(json_object_get(p, "stage")) ? cli_field(p, "stage") : state;
    if (g_cli.tty) {
        char bar[31];
        int fill = (int)(frac * 30 + 0.5);
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        cli_progress("\r[%s] %3.0f%% %-10s iter %-9s loss %-10s elapsed %-7s eta %-7s ", bar, frac * 100, stage,
                     iter, loss, elapsed, eta);
        if (final) {
            fputc('\n', stderr);
            g_cli.line_open = 0;
        }
    } else {
        printf("%s stage=%s iteration=%s loss=%s elapsed=%s eta=%s\n", state, stage, iter, loss, elapsed, eta);
        fflush(stdout);
    }
}

static int follow_job(const char *id)
{
    const char *path = cli_printf("/v1/jobs/%s", cli_enc(id));
    char *last = NULL;
    int rc;
    for (;;) {
        json_t *job = NULL;
        cli_scratch_reset();
        if ((rc = call("train", "GET", path, NULL, &job)) != CLI_OK)
            break;
        const char *state = cli_field(job, "state");
        int done = strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0 ||
                   strcmp(state, "cancelled") == 0;
        json_t *seen = json_pack("[s, O?]", state, json_object_get(job, "progress"));
        char *now = seen ? qn_json_dumps(seen, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
        json_decref(seen);
        if (!g_cli.json && (g_cli.tty || !last || !now || strcmp(now, last) != 0))
            progress_line(job, done);
        free(last);
        last = now;
        if (done) {
            if (g_cli.json) {
                cli_print_json(job);
            } else {
                const json_t *r = json_object_get(job, "result");
                printf("job %s %s", id, state);
                if (json_object_get(r, "version"))
                    printf(": %s version %s, %s", cli_field(job, "model"), cli_field(r, "version"),
                           cli_field(r, "outcome"));
                if (strcmp(state, "failed") == 0)
                    printf(": %s", cli_field(job, "error"));
                printf("\n");
            }
            rc = strcmp(state, "succeeded") == 0 ? CLI_OK : CLI_FAILED;
            json_decref(job);
            break;
        }
        json_decref(job);
        usleep(g_cli.tty ? 200000 : 1000000);
    }
    free(last);
    return rc;
}

typedef struct train_opts {
    const char *model, *kind, *dataset, *spec, *params;
    long long dataset_version;
    int detach;
} train_opts;

static const cli_opt train_table[] = {
    {"MODEL", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the model the job registers a version of", offsetof(train_opts, model)},
    {"kind", 0, CLI_STR, NULL, 0, 0, NULL, 1, "als, logistic, linear or xgboost (docs/train.md)",
     offsetof(train_opts, kind)},
    {"dataset", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the registry dataset to train on", offsetof(train_opts, dataset)},
    {"dataset-version", 0, CLI_INT, NULL, 1, 2147483647, NULL, 0, "that version of it (default: the latest)",
     offsetof(train_opts, dataset_version)},
    {"spec", 0, CLI_STR, NULL, 0, 0, NULL, 0, "a JSON file with the job's spec", offsetof(train_opts, spec)},
    {"params", 0, CLI_STR, NULL, 0, 0, NULL, 0, "the learner's parameters, JSON (e.g. '{\"factors\":64}')",
     offsetof(train_opts, params)},
    {"detach", 0, CLI_FLAG, NULL, 0, 0, NULL, 0, "queue the job and return", offsetof(train_opts, detach)},
};

static int train(const void *opts)
{
    const train_opts *o = opts;
    json_t *body = json_pack("{s:s, s:s, s:s}", "model", o->model, "kind", o->kind, "dataset", o->dataset);
    if (o->dataset_version > 0)
        json_object_set_new(body, "dataset_version", json_integer(o->dataset_version));
    if (o->spec) {
        json_t *s = load_json_file(o->spec);
        if (!s) {
            json_decref(body);
            return CLI_USAGE;
        }
        json_object_set_new(body, "spec", s);
    }
    if (o->params) {
        json_t *p = parse_json_arg("--params", o->params);
        if (!p) {
            json_decref(body);
            return CLI_USAGE;
        }
        json_object_set_new(body, "params", p);
    }
    json_t *out = NULL;
    int rc = call("train", "POST", "/v1/jobs", body, &out);
    json_decref(body);
    if (rc != CLI_OK)
        return rc;
    const char *id = cli_printf("%s", cli_field(out, "id"));
    if (o->detach) {
        if (g_cli.json)
            cli_print_json(out);
        else
            printf("job %s queued; follow it with: quern jobs follow %s\n", id, id);
        json_decref(out);
        return CLI_OK;
    }
    json_decref(out);
    if (!g_cli.json)
        printf("job %s queued\n", id);
    return follow_job(id);
}

const cli_cmd cli_cmd_train = CLI_CMD("train", "start a training job and follow it",
                                      "A progress bar on a terminal, one line per change when piped.", train_table,
                                      train_opts, train);

static const cli_opt job_id_table[] = {
    {"ID", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the job", offsetof(name_opts, name)},
};

static int jobs_list(const void *opts)
{
    (void)opts;
    static const char *const h[] = {"JOB", "MODEL", "KIND", "STATE", "CREATED", "VERSION", "OUTCOME", NULL};
    static const char *const p[] = {"id", "model", "kind", "state", "created_at", "result.version", "result.outcome"};
    return get_table("train", "/v1/jobs?limit=100", "jobs", h, p);
}

static int jobs_show(const void *opts)
{
    const name_opts *o = opts;
    return get_kv("train", cli_printf("/v1/jobs/%s", cli_enc(o->name)));
}

static int jobs_follow(const void *opts)
{
    return follow_job(((const name_opts *)opts)->name);
}

static int jobs_cancel(const void *opts)
{
    const name_opts *o = opts;
    json_t *out = NULL;
    int rc = call("train", "DELETE", cli_printf("/v1/jobs/%s", cli_enc(o->name)), NULL, &out);
    if (rc != CLI_OK)
        return rc;
    if (g_cli.json)
        cli_print_json(out);
    else
        printf("job %s cancelled\n", o->name);
    json_decref(out);
    return CLI_OK;
}

const cli_cmd cli_cmd_jobs_list = CLI_CMD_NOOPTS("jobs list", "the latest 100 training jobs", NULL, jobs_list);
const cli_cmd cli_cmd_jobs_show = CLI_CMD("jobs show", "a job: state, progress, result", NULL, job_id_table,
                                          name_opts, jobs_show);
const cli_cmd cli_cmd_jobs_follow = CLI_CMD("jobs follow", "follow a job to its end", NULL, job_id_table, name_opts,
                                            jobs_follow);
const cli_cmd cli_cmd_jobs_cancel = CLI_CMD("jobs cancel", "cancel a queued or running job", NULL, job_id_table,
                                            name_opts, jobs_cancel);

/* ---- predict and recommend ------------------------------------------------------ */

/* Rows (JSON objects) -> an Open Inference Protocol request: one tensor per
 * column, FP64 for numbers, BOOL for booleans, BYTES otherwise. */
static json_t *rows_to_infer(json_t *rows)
{
    json_t *first = json_array_get(rows, 0), *inputs = json_array();
    const char *key;
    json_t *v;
    json_object_foreach(first, key, v) {
        const char *dt = json_is_number(v) ? "FP64" : json_is_boolean(v) ? "BOOL" : "BYTES";
        json_t *data = json_array();
        size_t i;
        json_t *row;
        json_array_foreach(rows, i, row) {
            json_t *cell = json_object_get(row, key);
            json_array_append(data, cell ? cell : json_null());
        }
        json_array_append_new(inputs, json_pack("{s:s, s:s, s:[I], s:o}", "name", key, "datatype", dt,
                                                "shape", (json_int_t)json_array_size(rows), "data", data));
    }
    return json_pack("{s:o}", "inputs", inputs);
}

typedef struct predict_opts {
    const char *model;
    cli_list rows, files;
} predict_opts;

static const cli_opt predict_table[] = {
    {"MODEL", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the served model", offsetof(predict_opts, model)},
    {"row", 0, CLI_LIST, NULL, 0, 0, NULL, 0,
     "one row, a JSON object (e.g. '{\"age\":39,\"workclass\":\"State-gov\"}')",
     offsetof(predict_opts, rows)},
    {"file", 0, CLI_LIST, NULL, 0, 0, NULL, 0, "rows, one JSON object per line", offsetof(predict_opts, files)},
};

/* Appends the rows of an NDJSON file. */
static int rows_from_file(const char *file, json_t *rows)
{
    qn_buf b;
    qn_buf_init(&b, 64u << 20);
    int rc = read_file(file, &b);
    char *save = NULL;
    long long lineno = 0;
    for (char *l = rc == CLI_OK && b.data ? strtok_r(b.data, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save)) {
        json_t *r = json_loads(l, 0, NULL);
        lineno++;
        if (!json_is_object(r)) {
            cli_err("%s: every line must be a JSON object (line %lld is not)", file, lineno);
            json_decref(r);
            rc = CLI_USAGE;
            break;
        }
        json_array_append_new(rows, r);
    }
    qn_buf_free(&b);
    return rc;
}

static int predict(const void *opts)
{
    const predict_opts *o = opts;
    json_t *rows = json_array(), *req = NULL, *out = NULL;
    int rc = CLI_OK;
    for (size_t i = 0; i < o->rows.n && rc == CLI_OK; i++) {
        json_t *r = parse_json_arg("--row", o->rows.v[i]);
        if (!json_is_object(r)) {
            if (r)
                cli_err("--row must be a JSON object");
            json_decref(r);
            rc = CLI_USAGE;
            break;
        }
        json_array_append_new(rows, r);
    }
    for (size_t i = 0; i < o->files.n && rc == CLI_OK; i++)
        rc = rows_from_file(o->files.v[i], rows);
    if (rc != CLI_OK)
        goto out;
    if (json_array_size(rows) == 0) {
        cli_err("predict needs rows: --row JSON or --file ROWS.ndjson");
        rc = CLI_USAGE;
        goto out;
    }
    req = rows_to_infer(rows);
    if ((rc = call("serve", "POST", cli_printf("/v2/models/%s/infer", cli_enc(o->model)), req, &out)) != CLI_OK)
        goto out;
    if (g_cli.json) {
        cli_print_json(out);
    } else {
        printf("%s version %s\n", o->model, cli_field(out, "model_version"));
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(out, "outputs"), i, t) {
            char *d = qn_json_dumps(json_object_get(t, "data"), JSON_COMPACT);
            printf("%s: %s\n", cli_field(t, "name"), d ? d : "");
            free(d);
        }
    }
out:
    json_decref(rows);
    json_decref(req);
    json_decref(out);
    return rc;
}

const cli_cmd cli_cmd_predict = CLI_CMD("predict", "send rows to a served model",
                                        "An Open Inference Protocol infer with one tensor per column (FP64 numbers, "
                                        "BOOL booleans, BYTES otherwise).",
                                        predict_table, predict_opts, predict);

typedef struct recommend_opts {
    const char *model, *user;
    long long k;
    int exclude;
} recommend_opts;

static const cli_opt recommend_table[] = {
    {"MODEL", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the served recommender", offsetof(recommend_opts, model)},
    {"USER", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the user", offsetof(recommend_opts, user)},
    {"k", 0, CLI_INT, "10", 1, 1000, NULL, 0, "how many items", offsetof(recommend_opts, k)},
    {"exclude-seen", 0, CLI_FLAG, NULL, 0, 0, NULL, 0, "leave out items the user already has",
     offsetof(recommend_opts, exclude)},
};

static int recommend(const void *opts)
{
    const recommend_opts *o = opts;
    json_t *out = NULL;
    int rc = call("serve", "GET",
                  cli_printf("/v1/models/%s/recommend?user=%s&k=%lld%s", cli_enc(o->model), cli_enc(o->user), o->k,
                             o->exclude ? "&exclude_seen=true" : ""),
                  NULL, &out);
    if (rc != CLI_OK)
        return rc;
    if (g_cli.json) {
        cli_print_json(out);
    } else {
        printf("%s version %s, user %s%s\n", o->model, cli_field(out, "version"), o->user,
               json_is_true(json_object_get(out, "fallback")) ? " (unknown user: popular items)" : "");
        static const char *const h[] = {"ITEM", "SCORE", NULL};
        static const char *const p[] = {"item", "score"};
        cli_print_table(json_object_get(out, "items"), h, p);
    }
    json_decref(out);
    return CLI_OK;
}

const cli_cmd cli_cmd_recommend = CLI_CMD("recommend", "top-k items for a user from a served recommender",
                                          "An unknown user gets popular items, and the answer says so.",
                                          recommend_table, recommend_opts, recommend);

/* ---- drift and alerts --------------------------------------------------------------- */

static const cli_opt drift_table[] = {
    {"MODEL", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the monitored model", offsetof(name_opts, name)},
};

static int drift(const void *opts)
{
    const name_opts *o = opts;
    json_t *out = NULL;
    int rc = call("monitor", "GET", cli_printf("/v1/monitors/%s/report", cli_enc(o->name)), NULL, &out);
    if (rc != CLI_OK)
        return rc;
    if (g_cli.json) {
        cli_print_json(out);
    } else {
        json_t *rep = json_object_get(out, "report") ? json_object_get(out, "report") : out;
        printf("%s version %s: window of %s rows, dataset drift: %s (share %s)\n", o->name,
               cli_field(rep, "version"), cli_field(rep, "window.rows"), cli_field(rep, "dataset_drift"),
               cli_field(rep, "share_drifted"));
        static const char *const h[] = {"FEATURE", "METHOD", "STATISTIC", "P_VALUE", "THRESHOLD", "DRIFTED", NULL};
        static const char *const p[] = {"column", "method", "statistic", "p_value", "threshold", "drifted"};
        cli_print_table(json_object_get(rep, "features"), h, p);
    }
    json_decref(out);
    return CLI_OK;
}

const cli_cmd cli_cmd_drift = CLI_CMD("drift", "the latest drift report of a model's served version", NULL,
                                      drift_table, name_opts, drift);

typedef struct alerts_opts {
    const char *state;
} alerts_opts;

static const cli_opt alerts_table[] = {
    {"state", 0, CLI_STR, NULL, 0, 0, NULL, 0, "only alerts in this state: firing or resolved",
     offsetof(alerts_opts, state)},
};

static int alerts(const void *opts)
{
    const alerts_opts *o = opts;
    json_t *out = NULL;
    int rc = call("alert", "GET", o->state ? cli_printf("/v1/alerts?state=%s", cli_enc(o->state)) : "/v1/alerts",
                  NULL, &out);
    if (rc != CLI_OK)
        return rc;
    static const char *const h[] = {"ALERT", "RULE", "SEVERITY", "STATE", "SUBJECT", "FIRED", "RESOLVED", NULL};
    static const char *const p[] = {"id", "rule", "severity", "state", "dedupe_key", "fired_at", "resolved_at"};
    cli_print_table(json_object_get(out, "alerts"), h, p);
    json_decref(out);
    return CLI_OK;
}

const cli_cmd cli_cmd_alerts = CLI_CMD("alerts", "firing and resolved alerts", NULL, alerts_table, alerts_opts,
                                       alerts);
