/*
 * commands.c - the client commands of quern: each one is a thin layer over a
 * service's HTTP API (docs/<service>.md), printing tables on a terminal and
 * JSON with --json.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/buf.h"
#include "core/digest.h"

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

/* Percent-encodes s for a path segment or query value. */
static const char *enc(const char *s)
{
    static char bufs[4][1024];
    static int k;
    char *out = bufs[k++ & 3];
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && o + 4 < sizeof bufs[0]; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~')
            out[o++] = (char)*p;
        else
            o += (size_t)snprintf(out + o, 4, "%%%02X", *p);
    }
    out[o] = '\0';
    return out;
}

static int read_file(const char *path, qn_buf *b)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "quern: cannot open %s: %s\n", path, strerror(errno));
        return CLI_USAGE;
    }
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (qn_buf_append(b, chunk, n) < 0) {
            fprintf(stderr, "quern: %s is larger than %zu bytes\n", path, b->max);
            if (f != stdin)
                fclose(f);
            return CLI_USAGE;
        }
    if (f != stdin)
        fclose(f);
    return CLI_OK;
}

static json_t *load_json_file(const char *path)
{
    json_error_t je;
    json_t *v = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!v)
        fprintf(stderr, "quern: %s:%d:%d: %s\n", path, je.line, je.column, je.text);
    return v;
}

static json_t *parse_json_arg(const char *what, const char *s)
{
    json_error_t je;
    json_t *v = json_loads(s, JSON_REJECT_DUPLICATES, &je);
    if (!v)
        fprintf(stderr, "quern: %s is not valid JSON (column %d: %s)\n", what, je.column, je.text);
    return v;
}

/* ---- models ---------------------------------------------------------------- */

/* "age:FP64,workclass:BYTES" -> [{"name","datatype","shape":[-1]}] */
static json_t *parse_tensors(const char *spec, const char *what)
{
    json_t *out = json_array();
    char *copy = strdup(spec), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(t, ':');
        if (!colon || colon == t || !colon[1]) {
            fprintf(stderr, "quern: %s entry \"%s\" must be NAME:DATATYPE (e.g. age:FP64)\n", what, t);
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

static int models_import(int argc, char **argv)
{
    const char *name = NULL, *kind = NULL, *file = NULL, *inputs = NULL, *outputs = NULL,
               *alias = NULL, *file_name = NULL;
    cli_args a = {argc, argv, 2};
    for (; a.i < argc; a.i++) {
        const char *v;
        if ((v = cli_opt(&a, "--name"))) name = v;
        else if ((v = cli_opt(&a, "--kind"))) kind = v;
        else if ((v = cli_opt(&a, "--file"))) file = v;
        else if ((v = cli_opt(&a, "--inputs"))) inputs = v;
        else if ((v = cli_opt(&a, "--outputs"))) outputs = v;
        else if ((v = cli_opt(&a, "--promote"))) alias = v;
        else if ((v = cli_opt(&a, "--file-name"))) file_name = v;
        else name = NULL, kind = NULL, file = NULL, a.i = argc + 1;
    }
    if (a.i > argc || !name || !kind || !file || !inputs)
        return cli_usage("quern models import --name NAME --kind xgboost|logistic|linear --file MODEL "
                         "--inputs NAME:TYPE,... [--outputs NAME:TYPE,...] [--promote ALIAS]\n"
                         "  registers a model trained elsewhere (e.g. Python xgboost's JSON) so serve runs it");
    json_t *in = parse_tensors(inputs, "--inputs");
    json_t *out = outputs ? parse_tensors(outputs, "--outputs")
                          : json_pack("[{s:s, s:s, s:[i]}]", "name",
                                      strcmp(kind, "linear") == 0 ? "prediction" : "probability",
                                      "datatype", "FP32", "shape", -1);
    if (!in || !out) {
        json_decref(in);
        json_decref(out);
        return CLI_USAGE;
    }
    qn_err err;
    char hex[QN_SHA256_HEX + 1], path[128];
    if (qn_sha256_file(file, hex, &err) < 0) {
        json_decref(in);
        json_decref(out);
        return cli_fail(NULL, &err);
    }
    snprintf(path, sizeof path, "/v1/blobs/sha256:%s", hex);
    int rc = qn_client_put_file(cli_client("registry"), path, file, NULL, &err);
    if (rc < 0) {
        json_decref(in);
        json_decref(out);
        return cli_fail("registry", &err);
    }
    json_t *created = NULL;
    json_t *body = json_pack("{s:s}", "name", name);
    rc = qn_client_json(cli_client("registry"), "POST", "/v1/models", body, NULL, &created, &err);
    json_decref(body);
    json_decref(created);
    if (rc < 0 && err.code != QN_ALREADY_EXISTS) {
        json_decref(in);
        json_decref(out);
        return cli_fail("registry", &err);
    }
    char digest[80];
    snprintf(digest, sizeof digest, "sha256:%s", hex);
    const char *fname = file_name ? file_name : strcmp(kind, "xgboost") == 0 ? "model.json" : "linear.json";
    json_t *manifest = json_pack("{s:s, s:s, s:o, s:o, s:{s:s}}", "format", "quern.model/1", "kind", kind,
                                 "inputs", in, "outputs", out, "files", fname, digest);
    json_t *req = json_pack("{s:o, s:s}", "manifest", manifest, "description", "imported with quern models import");
    json_t *version = NULL;
    snprintf(path, sizeof path, "/v1/models/%s/versions", enc(name));
    rc = call("registry", "POST", path, req, &version);
    json_decref(req);
    if (rc != CLI_OK)
        return rc;
    long long v = (long long)json_integer_value(json_object_get(version, "version"));
    if (alias) {
        snprintf(path, sizeof path, "/v1/models/%s/aliases/%s", enc(name), enc(alias));
        json_t *ab = json_pack("{s:I}", "version", (json_int_t)v);
        rc = call("registry", "PUT", path, ab, NULL);
        json_decref(ab);
        if (rc != CLI_OK) {
            json_decref(version);
            return rc;
        }
    }
    if (g_cli.json)
        cli_print_json(version);
    else
        printf("Registered %s version %lld (blob %s)%s%s\n", name, v, digest, alias ? ", now " : "",
               alias ? alias : "");
    json_decref(version);
    return CLI_OK;
}

int cmd_models(int argc, char **argv)
{
    static const char *usage =
        "quern models list | show NAME | versions NAME | promote NAME VERSION [--alias production]\n"
        "       quern models import --name NAME --kind KIND --file FILE --inputs NAME:TYPE,...";
    if (argc < 2)
        return cli_usage(usage);
    const char *sub = argv[1];
    char path[512];
    json_t *out = NULL;
    int rc;
    if (strcmp(sub, "list") == 0) {
        if ((rc = call("registry", "GET", "/v1/models?limit=1000", NULL, &out)) != CLI_OK)
            return rc;
        static const char *const h[] = {"MODEL", "LATEST", "ALIASES", "UPDATED", NULL};
        static const char *const p[] = {"name", "latest_version", "aliases", "updated_at"};
        cli_print_table(json_object_get(out, "models"), h, p);
    } else if (strcmp(sub, "show") == 0 && argc == 3) {
        snprintf(path, sizeof path, "/v1/models/%s", enc(argv[2]));
        if ((rc = call("registry", "GET", path, NULL, &out)) != CLI_OK)
            return rc;
        cli_print_json(out);
    } else if (strcmp(sub, "versions") == 0 && argc == 3) {
        snprintf(path, sizeof path, "/v1/models/%s/versions?limit=1000", enc(argv[2]));
        if ((rc = call("registry", "GET", path, NULL, &out)) != CLI_OK)
            return rc;
        static const char *const h[] = {"VERSION", "STATUS", "ALIASES", "DATASET", "CREATED", "METRICS", NULL};
        static const char *const p[] = {"version", "status", "aliases", "dataset", "created_at", "metrics"};
        cli_print_table(json_object_get(out, "versions"), h, p);
    } else if (strcmp(sub, "promote") == 0 && argc >= 4) {
        const char *alias = "production";
        cli_args a = {argc, argv, 4};
        for (; a.i < argc; a.i++) {
            const char *v = cli_opt(&a, "--alias");
            if (!v)
                return cli_usage(usage);
            alias = v;
        }
        char *end;
        long long v = strtoll(argv[3], &end, 10);
        if (*end || v < 1)
            return cli_usage(usage);
        snprintf(path, sizeof path, "/v1/models/%s/aliases/%s", enc(argv[2]), enc(alias));
        json_t *body = json_pack("{s:I}", "version", (json_int_t)v);
        rc = call("registry", "PUT", path, body, &out);
        json_decref(body);
        if (rc != CLI_OK)
            return rc;
        if (g_cli.json)
            cli_print_json(out);
        else
            printf("%s: %s -> version %lld (was %s)\n", argv[2], alias, v,
                   cli_field(out, "previous_version"));
    } else if (strcmp(sub, "import") == 0) {
        return models_import(argc, argv);
    } else {
        return cli_usage(usage);
    }
    json_decref(out);
    return CLI_OK;
}

/* ---- ingest ---------------------------------------------------------------- */

/* Sends one batch; returns an exit code and adds to the counters. */
static int ingest_batch(const char *dataset, const char *ctype, const char *data, size_t len,
                        const char *key, int skip, long long *accepted, long long *rejected)
{
    char path[512];
    qn_err err;
    qn_buf out;
    qn_buf_init(&out, 16 << 20);
    snprintf(path, sizeof path, "/v1/datasets/%s/events%s", enc(dataset), skip ? "?on_error=skip" : "");
    /* A key per batch (file digest + offset) makes retries count once. */
    (void)key;
    int rc = qn_client_raw(cli_client("ingest"), "POST", path, ctype, data, len, NULL, &out, &err);
    if (rc < 0) {
        qn_buf_free(&out);
        return cli_fail("ingest", &err);
    }
    json_t *ans = out.len ? json_loadb(out.data, out.len, 0, NULL) : NULL;
    *accepted += json_integer_value(json_object_get(ans, "accepted"));
    *rejected += json_integer_value(json_object_get(ans, "rejected"));
    json_decref(ans);
    qn_buf_free(&out);
    return CLI_OK;
}

int cmd_ingest(int argc, char **argv)
{
    static const char *usage = "quern ingest DATASET FILE [--format csv|ndjson] [--batch ROWS] [--skip-invalid]\n"
                               "  sends FILE (or - for stdin) in batches; CSV keeps its header in every batch";
    const char *dataset = NULL, *file = NULL, *format = NULL;
    long batch = 5000;
    int skip = 0;
    cli_args a = {argc, argv, 1};
    for (; a.i < argc; a.i++) {
        const char *v;
        if ((v = cli_opt(&a, "--format"))) format = v;
        else if ((v = cli_opt(&a, "--batch"))) batch = strtol(v, NULL, 10);
        else if (cli_flag(&a, "--skip-invalid")) skip = 1;
        else if (!dataset) dataset = argv[a.i];
        else if (!file) file = argv[a.i];
        else return cli_usage(usage);
    }
    if (!dataset || !file || batch < 1 || batch > 100000)
        return cli_usage(usage);
    if (!format)
        format = strstr(file, ".csv") ? "csv" : "ndjson";
    int csv = strcmp(format, "csv") == 0;
    if (!csv && strcmp(format, "ndjson") != 0)
        return cli_usage(usage);
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "rb");
    if (!f) {
        fprintf(stderr, "quern: cannot open %s: %s\n", file, strerror(errno));
        return CLI_USAGE;
    }
    qn_buf header, body;
    qn_buf_init(&header, 1 << 20);
    qn_buf_init(&body, 64u << 20);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long rows = 0;
    long long accepted = 0, rejected = 0, batches = 0;
    int rc = CLI_OK, in_quotes = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (csv && header.len == 0) {
            qn_buf_append(&header, line, (size_t)n);
            qn_buf_append(&body, line, (size_t)n);
            continue;
        }
        qn_buf_append(&body, line, (size_t)n);
        if (csv) /* a quoted field may hold newlines: a record ends outside quotes */
            for (ssize_t i = 0; i < n; i++)
                in_quotes ^= line[i] == '"';
        if (in_quotes)
            continue;
        ++rows;
        if (qn_buf_error(&header) < 0 || qn_buf_error(&body) < 0) {
            /* appends are sticky: the batch is cut short, never send it */
            fprintf(stderr, "quern: %s: row %ld: the batch outgrew %zu bytes; send with a smaller --batch\n",
                    file, rows, body.max);
            rc = CLI_FAILED;
            break;
        }
        if (rows % batch == 0) {
            rc = ingest_batch(dataset, csv ? "text/csv" : "application/x-ndjson", body.data, body.len, NULL,
                              skip, &accepted, &rejected);
            if (rc != CLI_OK)
                break;
            batches++;
            if (!g_cli.json && g_cli.tty)
                fprintf(stderr, "\r%lld rows sent", accepted + rejected);
            qn_buf_reset(&body);
            if (csv)
                qn_buf_append(&body, header.data, header.len);
        }
    }
    if (rc == CLI_OK && (qn_buf_error(&header) < 0 || qn_buf_error(&body) < 0)) {
        fprintf(stderr, "quern: %s: the last batch outgrew %zu bytes; send with a smaller --batch\n", file,
                body.max);
        rc = CLI_FAILED;
    }
    if (rc == CLI_OK && body.len > (csv ? header.len : 0)) {
        rc = ingest_batch(dataset, csv ? "text/csv" : "application/x-ndjson", body.data, body.len, NULL, skip,
                          &accepted, &rejected);
        batches++;
    }
    free(line);
    if (f != stdin)
        fclose(f);
    qn_buf_free(&header);
    qn_buf_free(&body);
    if (rc != CLI_OK)
        return rc;
    if (g_cli.json) {
        json_t *o = json_pack("{s:s, s:I, s:I, s:I}", "dataset", dataset, "accepted", (json_int_t)accepted,
                              "rejected", (json_int_t)rejected, "batches", (json_int_t)batches);
        cli_print_json(o);
        json_decref(o);
    } else {
        printf("%s%s: %lld rows accepted, %lld rejected, in %lld batches\n", g_cli.tty ? "\r" : "", dataset,
               accepted, rejected, batches);
    }
    return rejected && !skip ? CLI_USAGE : CLI_OK;
}

/* ---- pipelines --------------------------------------------------------------- */

int cmd_pipelines(int argc, char **argv)
{
    static const char *usage = "quern pipelines list | show NAME | put NAME FILE | run NAME";
    char path[512];
    json_t *out = NULL;
    int rc;
    if (argc == 2 && strcmp(argv[1], "list") == 0) {
        if ((rc = call("prep", "GET", "/v1/pipelines", NULL, &out)) != CLI_OK)
            return rc;
        static const char *const h[] = {"PIPELINE", "SOURCE", "OUTPUT", "TRIGGER", NULL};
        static const char *const p[] = {"name", "source", "output", "trigger.kind"};
        cli_print_table(json_object_get(out, "pipelines"), h, p);
    } else if (argc == 3 && strcmp(argv[1], "show") == 0) {
        snprintf(path, sizeof path, "/v1/pipelines/%s", enc(argv[2]));
        if ((rc = call("prep", "GET", path, NULL, &out)) != CLI_OK)
            return rc;
        cli_print_json(out);
    } else if (argc == 4 && strcmp(argv[1], "put") == 0) {
        json_t *body = load_json_file(argv[3]);
        if (!body)
            return CLI_USAGE;
        snprintf(path, sizeof path, "/v1/pipelines/%s", enc(argv[2]));
        rc = call("prep", "PUT", path, body, &out);
        json_decref(body);
        if (rc != CLI_OK)
            return rc;
        if (g_cli.json)
            cli_print_json(out);
        else
            printf("Pipeline %s stored\n", argv[2]);
    } else if (argc == 3 && strcmp(argv[1], "run") == 0) {
        snprintf(path, sizeof path, "/v1/pipelines/%s/runs", enc(argv[2]));
        if ((rc = call("prep", "POST", path, NULL, &out)) != CLI_OK)
            return rc;
        const char *id = json_string_value(json_object_get(out, "run_id"));
        for (int i = 0; id && i < 6000; i++) { /* follow the run for up to 10 minutes */
            json_t *run = NULL;
            snprintf(path, sizeof path, "/v1/pipelines/%s/runs/%s", enc(argv[2]), enc(id));
            if ((rc = call("prep", "GET", path, NULL, &run)) != CLI_OK)
                break;
            const char *state = json_string_value(json_object_get(run, "state"));
            if (state && strcmp(state, "queued") != 0 && strcmp(state, "running") != 0) {
                json_decref(out);
                out = run;
                break;
            }
            json_decref(run);
            usleep(100000);
        }
        if (g_cli.json) {
            cli_print_json(out);
        } else {
            printf("run %s: %s", cli_field(out, "run_id"), cli_field(out, "state"));
            if (json_object_get(out, "dataset_version"))
                printf(", dataset version %s", cli_field(out, "dataset_version"));
            if (json_object_get(out, "report"))
                printf(", rows in %s, out %s", cli_field(out, "report.rows_in"), cli_field(out, "report.rows_out"));
            if (json_object_get(out, "error") && !json_is_null(json_object_get(out, "error")))
                printf("\nerror: %s", cli_field(out, "error"));
            printf("\n");
        }
        const char *state = json_string_value(json_object_get(out, "state"));
        rc = state && strcmp(state, "failed") == 0 ? CLI_FAILED : CLI_OK;
        json_decref(out);
        return rc;
    } else {
        return cli_usage(usage);
    }
    json_decref(out);
    return CLI_OK;
}

/* ---- train and jobs --------------------------------------------------------------- */

static void progress_line(const json_t *job, int final)
{
    const char *state = cli_field(job, "state");
    const json_t *p = json_object_get(job, "progress");
    double frac = json_number_value(json_object_get(p, "fraction"));
    if (g_cli.tty) {
        char bar[31];
        int fill = (int)(frac * 30 + 0.5);
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r[%s] %3.0f%% %-11s iter %-5s loss %-10s elapsed %ss eta %ss   ", bar, frac * 100,
                state, cli_field(p, "iteration"), cli_field(p, "loss"), cli_field(p, "elapsed"),
                cli_field(p, "eta"));
        if (final)
            fputc('\n', stderr);
    } else {
        printf("%s iteration=%s loss=%s elapsed=%s eta=%s\n", state, cli_field(p, "iteration"),
               cli_field(p, "loss"), cli_field(p, "elapsed"), cli_field(p, "eta"));
    }
}

static int follow_job(const char *id)
{
    char path[256];
    char last[512] = "";
    snprintf(path, sizeof path, "/v1/jobs/%s", enc(id));
    for (;;) {
        json_t *job = NULL;
        int rc = call("train", "GET", path, NULL, &job);
        if (rc != CLI_OK)
            return rc;
        const char *state = cli_field(job, "state");
        int done = strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0 ||
                   strcmp(state, "cancelled") == 0;
        char *now = json_dumps(json_object_get(job, "progress"), JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        char key[512];
        snprintf(key, sizeof key, "%s %s", state, now ? now : "");
        free(now);
        if (!g_cli.json && (g_cli.tty || strcmp(key, last) != 0))
            progress_line(job, done);
        snprintf(last, sizeof last, "%s", key);
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
            return rc;
        }
        json_decref(job);
        usleep(g_cli.tty ? 200000 : 1000000);
    }
}

int cmd_train(int argc, char **argv)
{
    static const char *usage =
        "quern train MODEL --kind als|logistic|linear|xgboost --dataset NAME [--dataset-version N]\n"
        "            [--spec FILE.json] [--params JSON] [--detach]\n"
        "  starts a training job and follows it (a progress bar on a terminal, lines when piped)";
    const char *model = NULL, *kind = NULL, *dataset = NULL, *spec = NULL, *params = NULL;
    long long dsv = 0;
    int detach = 0;
    cli_args a = {argc, argv, 1};
    for (; a.i < argc; a.i++) {
        const char *v;
        if ((v = cli_opt(&a, "--kind"))) kind = v;
        else if ((v = cli_opt(&a, "--dataset"))) dataset = v;
        else if ((v = cli_opt(&a, "--dataset-version"))) dsv = strtoll(v, NULL, 10);
        else if ((v = cli_opt(&a, "--spec"))) spec = v;
        else if ((v = cli_opt(&a, "--params"))) params = v;
        else if (cli_flag(&a, "--detach")) detach = 1;
        else if (!model && argv[a.i][0] != '-') model = argv[a.i];
        else return cli_usage(usage);
    }
    if (!model || !kind || !dataset)
        return cli_usage(usage);
    json_t *body = json_pack("{s:s, s:s, s:s}", "model", model, "kind", kind, "dataset", dataset);
    if (dsv > 0)
        json_object_set_new(body, "dataset_version", json_integer(dsv));
    if (spec) {
        json_t *s = load_json_file(spec);
        if (!s) {
            json_decref(body);
            return CLI_USAGE;
        }
        json_object_set_new(body, "spec", s);
    }
    if (params) {
        json_t *p = parse_json_arg("--params", params);
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
    char id[64];
    snprintf(id, sizeof id, "%s", cli_field(out, "id"));
    if (detach || g_cli.json) {
        if (g_cli.json && detach)
            cli_print_json(out);
        json_decref(out);
        if (detach) {
            if (!g_cli.json)
                printf("job %s queued; follow it with: quern jobs show %s\n", id, id);
            return CLI_OK;
        }
    } else {
        json_decref(out);
        printf("job %s queued\n", id);
    }
    return follow_job(id);
}

int cmd_jobs(int argc, char **argv)
{
    static const char *usage = "quern jobs list | show ID | follow ID | cancel ID";
    char path[256];
    json_t *out = NULL;
    int rc;
    if (argc == 2 && strcmp(argv[1], "list") == 0) {
        if ((rc = call("train", "GET", "/v1/jobs?limit=100", NULL, &out)) != CLI_OK)
            return rc;
        static const char *const h[] = {"JOB", "MODEL", "KIND", "STATE", "CREATED", "VERSION", "OUTCOME", NULL};
        static const char *const p[] = {"id", "model", "kind", "state", "created_at", "result.version",
                                        "result.outcome"};
        cli_print_table(json_object_get(out, "jobs"), h, p);
    } else if (argc == 3 && strcmp(argv[1], "show") == 0) {
        snprintf(path, sizeof path, "/v1/jobs/%s", enc(argv[2]));
        if ((rc = call("train", "GET", path, NULL, &out)) != CLI_OK)
            return rc;
        cli_print_json(out);
    } else if (argc == 3 && strcmp(argv[1], "follow") == 0) {
        return follow_job(argv[2]);
    } else if (argc == 3 && strcmp(argv[1], "cancel") == 0) {
        snprintf(path, sizeof path, "/v1/jobs/%s", enc(argv[2]));
        if ((rc = call("train", "DELETE", path, NULL, &out)) != CLI_OK)
            return rc;
        if (!g_cli.json)
            printf("job %s cancelled\n", argv[2]);
        else
            cli_print_json(out);
    } else {
        return cli_usage(usage);
    }
    json_decref(out);
    return CLI_OK;
}

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

int cmd_predict(int argc, char **argv)
{
    static const char *usage = "quern predict MODEL (--row JSON | --file ROWS.ndjson)\n"
                               "  e.g. quern predict adult --row '{\"age\":39,\"workclass\":\"State-gov\",...}'";
    const char *model = NULL;
    json_t *rows = json_array();
    cli_args a = {argc, argv, 1};
    for (; a.i < argc; a.i++) {
        const char *v;
        if ((v = cli_opt(&a, "--row"))) {
            json_t *r = parse_json_arg("--row", v);
            if (!json_is_object(r)) {
                json_decref(r);
                json_decref(rows);
                return cli_usage(usage);
            }
            json_array_append_new(rows, r);
        } else if ((v = cli_opt(&a, "--file"))) {
            qn_buf b;
            qn_buf_init(&b, 64u << 20);
            if (read_file(v, &b) != CLI_OK) {
                qn_buf_free(&b);
                json_decref(rows);
                return CLI_USAGE;
            }
            char *save = NULL;
            for (char *l = b.data ? strtok_r(b.data, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save)) {
                json_t *r = json_loads(l, 0, NULL);
                if (!json_is_object(r)) {
                    fprintf(stderr, "quern: %s: every line must be a JSON object\n", v);
                    json_decref(r);
                    qn_buf_free(&b);
                    json_decref(rows);
                    return CLI_USAGE;
                }
                json_array_append_new(rows, r);
            }
            qn_buf_free(&b);
        } else if (!model) {
            model = argv[a.i];
        } else {
            json_decref(rows);
            return cli_usage(usage);
        }
    }
    if (!model || json_array_size(rows) == 0) {
        json_decref(rows);
        return cli_usage(usage);
    }
    json_t *req = rows_to_infer(rows), *out = NULL;
    json_decref(rows);
    char path[256];
    snprintf(path, sizeof path, "/v2/models/%s/infer", enc(model));
    int rc = call("serve", "POST", path, req, &out);
    json_decref(req);
    if (rc != CLI_OK)
        return rc;
    if (g_cli.json) {
        cli_print_json(out);
    } else {
        printf("%s version %s\n", model, cli_field(out, "model_version"));
        size_t i;
        json_t *o;
        json_array_foreach(json_object_get(out, "outputs"), i, o) {
            char *d = json_dumps(json_object_get(o, "data"), JSON_COMPACT);
            printf("%s: %s\n", cli_field(o, "name"), d ? d : "");
            free(d);
        }
    }
    json_decref(out);
    return CLI_OK;
}

int cmd_recommend(int argc, char **argv)
{
    static const char *usage = "quern recommend MODEL USER [--k 10] [--exclude-seen]";
    const char *model = NULL, *user = NULL;
    long k = 10;
    int exclude = 0;
    cli_args a = {argc, argv, 1};
    for (; a.i < argc; a.i++) {
        const char *v;
        if ((v = cli_opt(&a, "--k"))) k = strtol(v, NULL, 10);
        else if (cli_flag(&a, "--exclude-seen")) exclude = 1;
        else if (!model) model = argv[a.i];
        else if (!user) user = argv[a.i];
        else return cli_usage(usage);
    }
    if (!model || !user || k < 1 || k > 1000)
        return cli_usage(usage);
    char path[512];
    snprintf(path, sizeof path, "/v1/models/%s/recommend?user=%s&k=%ld%s", enc(model), enc(user), k,
             exclude ? "&exclude_seen=true" : "");
    json_t *out = NULL;
    int rc = call("serve", "GET", path, NULL, &out);
    if (rc != CLI_OK)
        return rc;
    if (g_cli.json) {
        cli_print_json(out);
    } else {
        printf("%s version %s, user %s%s\n", model, cli_field(out, "version"), user,
               json_is_true(json_object_get(out, "fallback")) ? " (unknown user: popular items)" : "");
        static const char *const h[] = {"ITEM", "SCORE", NULL};
        static const char *const p[] = {"item", "score"};
        cli_print_table(json_object_get(out, "items"), h, p);
    }
    json_decref(out);
    return CLI_OK;
}

/* ---- drift and alerts --------------------------------------------------------------- */

int cmd_drift(int argc, char **argv)
{
    if (argc != 2)
        return cli_usage("quern drift MODEL\n  the latest drift report of MODEL's served version");
    char path[256];
    snprintf(path, sizeof path, "/v1/monitors/%s/report", enc(argv[1]));
    json_t *out = NULL;
    int rc = call("monitor", "GET", path, NULL, &out);
    if (rc != CLI_OK)
        return rc;
    if (g_cli.json) {
        cli_print_json(out);
    } else {
        json_t *rep = json_object_get(out, "report") ? json_object_get(out, "report") : out;
        printf("%s version %s: window of %s rows, dataset drift: %s (share %s)\n", argv[1],
               cli_field(rep, "version"), cli_field(rep, "window.rows"), cli_field(rep, "dataset_drift"),
               cli_field(rep, "share_drifted"));
        static const char *const h[] = {"FEATURE", "METHOD", "STATISTIC", "P_VALUE", "THRESHOLD", "DRIFTED", NULL};
        static const char *const p[] = {"column", "method", "statistic", "p_value", "threshold", "drifted"};
        cli_print_table(json_object_get(rep, "features"), h, p);
    }
    json_decref(out);
    return CLI_OK;
}

int cmd_alerts(int argc, char **argv)
{
    const char *state = NULL;
    cli_args a = {argc, argv, 1};
    for (; a.i < argc; a.i++) {
        const char *v = cli_opt(&a, "--state");
        if (!v)
            return cli_usage("quern alerts [--state firing|resolved]");
        state = v;
    }
    char path[256];
    snprintf(path, sizeof path, "/v1/alerts%s%s", state ? "?state=" : "", state ? enc(state) : "");
    json_t *out = NULL;
    int rc = call("alert", "GET", path, NULL, &out);
    if (rc != CLI_OK)
        return rc;
    static const char *const h[] = {"ALERT", "RULE", "SEVERITY", "STATE", "SUBJECT", "FIRED", "RESOLVED", NULL};
    static const char *const p[] = {"id", "rule", "severity", "state", "dedupe_key", "fired_at", "resolved_at"};
    cli_print_table(json_object_get(out, "alerts"), h, p);
    json_decref(out);
    return CLI_OK;
}
