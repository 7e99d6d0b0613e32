/*
 * bench_prep_clean.c - prep's work after the frame exists, alone: the
 * cleaning steps of a pipeline (qml_clean_apply) and the CSV writer
 * (prep_csv_write, src/prep/csvout.c, compiled in), on the Online Retail CSV.
 *
 *     build/bench/bench_prep_clean CSV [PIPELINE.json] [--rows N] [--reps K] [--out FILE] [--copy] [--grow]
 *                                  [--registry URL [--registry2 URL]]
 *
 * Reads the first N rows of CSV (all by default) with the pipeline's schema,
 * then K times: cleans, writes the CSV (to FILE, default /dev/null) and
 * prints the best time of each phase, the rows out, the output's bytes and
 * SHA-256 (the same for the same input whatever the code does: compare
 * builds with it). With --registry, each repetition then also uploads the
 * CSV both ways prep has done it, one after the other, and times each: as a
 * file (written under /tmp, then PUT /v1/blobs/{digest}), and streamed (a
 * thread writing into a pipe that a chunked POST /v1/blobs reads, as
 * src/prep/execute.c does now; to --registry2 when given, so that both
 * store a new blob: bench_blob_put.py --prep runs it so). By default the frame read is given up to the cleaning
 * (qml_clean_apply_owned on a fresh copy made before the clock starts, as
 * prep does; --grow makes the copy cell by cell, its arrays growing by
 * realloc as a reader's do); --copy cleans it with qml_clean_apply (the input kept). Meant for callgrind (--rows 100000 --reps 1) and perf
 * stat, where the services' noise is absent; bench_prep.sh measures the
 * whole run.
 */
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/client.h"

#include "ml/clean.h"
#include "ml/csv.h"
#include "prep/prep.h"

static double now_s(void);

/* The streamed upload, as write_and_upload in src/prep/execute.c does it. */
typedef struct writer {
    const qml_frame *f;
    FILE *w;
    char hex[QN_SHA256_HEX + 1];
    uint64_t bytes;
    int rc;
    qn_err err;
} writer;

static void *writer_main(void *arg)
{
    writer *cw = arg;
    cw->rc = prep_csv_write(cw->f, cw->w, cw->hex, &cw->bytes, &cw->err);
    fclose(cw->w);
    return NULL;
}

static int upload_streamed(qn_client *reg, const qml_frame *f, qn_err *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    (void)fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);
    writer cw = {.f = f, .w = fdopen(fds[1], "w")};
    FILE *rd = fdopen(fds[0], "r");
    pthread_t th;
    pthread_create(&th, NULL, writer_main, &cw);
    qn_buf ans;
    qn_buf_init(&ans, 65536);
    int rc = qn_client_post_stream(reg, "/v1/blobs", "application/octet-stream", rd, NULL, &ans, err);
    fclose(rd);
    pthread_join(th, NULL);
    if (rc >= 0 && !strstr(ans.data ? ans.data : "", cw.hex))
        rc = qn_err_set(err, QN_INTERNAL, "the registry answered another digest: %s", ans.data);
    qn_buf_free(&ans);
    return rc < 0 ? rc : cw.rc;
}

static int upload_file(qn_client *reg, const qml_frame *f, double *write_s, qn_err *err)
{
    char hex[QN_SHA256_HEX + 1], path[128];
    uint64_t bytes;
    double t0 = now_s();
    FILE *fp = fopen("/tmp/bench_prep_clean.csv", "w");
    if (!fp || prep_csv_write(f, fp, hex, &bytes, err) < 0)
        return -1;
    fclose(fp);
    *write_s = now_s() - t0;
    snprintf(path, sizeof path, "/v1/blobs/sha256:%s", hex);
    int rc = qn_client_put_file(reg, path, "/tmp/bench_prep_clean.csv", NULL, err);
    unlink("/tmp/bench_prep_clean.csv");
    return rc;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    const char *csv = NULL, *pipe = "examples/pipelines/online-retail.json", *outp = "/dev/null", *regurl = NULL, *regurl2 = NULL;
    size_t rows = 0;
    int reps = 3, npos = 0, copy = 0, grow = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rows") == 0 && i + 1 < argc)
            rows = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--registry") == 0 && i + 1 < argc)
            regurl = argv[++i];
        else if (strcmp(argv[i], "--registry2") == 0 && i + 1 < argc)
            regurl2 = argv[++i];
        else if (strcmp(argv[i], "--copy") == 0)
            copy = 1;
        else if (strcmp(argv[i], "--grow") == 0)
            grow = 1;
        else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
            outp = argv[++i];
        else if (npos++ == 0)
            csv = argv[i];
        else
            pipe = argv[i];
    }
    signal(SIGPIPE, SIG_IGN); /* a failed upload: the writer gets EPIPE, not a signal */
    if (!csv || reps < 1) {
        fprintf(stderr, "usage: %s CSV [PIPELINE.json] [--rows N] [--reps K] [--out FILE] [--copy] [--grow]\n", argv[0]);
        return 2;
    }
    json_error_t je;
    json_t *spec = json_load_file(pipe, 0, &je);
    if (!spec) {
        fprintf(stderr, "%s: %s\n", pipe, je.text);
        return 1;
    }
    qml_field_spec fs[64];
    size_t nf = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(json_object_get(spec, "schema"), "columns"), i, c) {
        qml_type t;
        if (nf == 64 || qml_type_parse(json_string_value(json_object_get(c, "type")), &t) < 0)
            return 1;
        fs[nf].name = json_string_value(json_object_get(c, "name"));
        fs[nf++].type = (int)t;
    }
    qn_err err;
    qml_csv_opts o;
    qml_csv_opts_init(&o);
    o.fields = fs;
    o.n_fields = nf;
    qml_csv_reader *r = qml_csv_open(csv, &o, &err);
    qml_frame *raw = NULL;
    if (!r || qml_csv_next(r, rows ? rows : SIZE_MAX, &raw, &err) < 0) {
        fprintf(stderr, "%s: %s\n", csv, err.msg);
        return 1;
    }
    qml_csv_close(r);
    qml_clean_steps *steps;
    if (qml_clean_from_json(json_object_get(spec, "steps"), &steps, &err) < 0) {
        fprintf(stderr, "%s: %s\n", pipe, err.msg);
        return 1;
    }
    double best_clean = 1e9, best_write = 1e9;
    char hex[QN_SHA256_HEX + 1] = "";
    uint64_t bytes = 0;
    size_t out_rows = 0;
    for (int k = 0; k < reps; k++) {
        qml_frame *clean;
        qml_clean_report rep;
        qml_frame *mine = NULL;
        if (!copy) {
            size_t n = qml_frame_nrows(raw), *all = malloc((n ? n : 1) * sizeof *all);
            for (size_t q = 0; all && q < n; q++)
                all[q] = q;
            if (!all || !(mine = qml_frame_take(raw, all, grow ? 0 : n, &err))) {
                fprintf(stderr, "copy: out of memory\n");
                return 1;
            }
            free(all);
            /* --grow: cell by cell, the arrays growing as a reader's do. */
            for (size_t q = 0; grow && q < n; q++) {
                for (size_t j = 0; j < qml_frame_ncols(raw); j++) {
                    const qml_column *sc = qml_frame_col(raw, j);
                    qml_column *dc = qml_frame_col(mine, j);
                    if (sc->missing[q])
                        qml_col_push_missing(dc);
                    else if (sc->type == QML_CATEGORICAL)
                        qml_col_push_code(dc, sc->cat[q]);
                    else
                        qml_col_push_num(dc, sc->num[q]);
                }
                qml_frame_end_row(mine);
            }
        }
        if (getenv("BENCH_FLUSH")) { /* evict the copy from the caches */
            size_t big = (size_t)256 << 20;
            volatile char *junk = malloc(big);
            for (size_t q = 0; junk && q < big; q += 64)
                junk[q] = (char)q;
            free((void *)junk);
        }
        double t0 = now_s();
        if ((copy ? qml_clean_apply(raw, steps, &clean, &rep, &err)
                  : qml_clean_apply_owned(mine, steps, &clean, &rep, &err)) < 0) {
            fprintf(stderr, "clean: %s\n", err.msg);
            return 1;
        }
        double t1 = now_s();
        FILE *f = fopen(outp, "w");
        if (!f || prep_csv_write(clean, f, hex, &bytes, &err) < 0) {
            fprintf(stderr, "write: %s\n", f ? err.msg : "cannot open the output");
            return 1;
        }
        fclose(f);
        double t2 = now_s();
        if (getenv("BENCH_VERBOSE"))
            printf("rep %d: clean %.4f s, write %.4f s\n", k, t1 - t0, t2 - t1);
        best_clean = t1 - t0 < best_clean ? t1 - t0 : best_clean;
        best_write = t2 - t1 < best_write ? t2 - t1 : best_write;
        if (regurl) {
            /* Streamed to the second registry (or the same one, where the
             * blob is then already stored: no fsync). */
            qn_client_opts co = {.base_url = regurl, .timeout_ms = 120000};
            qn_client_opts co2 = {.base_url = regurl2 ? regurl2 : regurl, .timeout_ms = 120000};
            qn_client *reg = qn_client_new(&co, &err), *reg2 = qn_client_new(&co2, &err);
            double wr = 0, ta = now_s();
            int ra = reg ? upload_file(reg, clean, &wr, &err) : -1;
            double tb = now_s();
            int rb = ra >= 0 && reg2 ? upload_streamed(reg2, clean, &err) : -1;
            double tc = now_s();
            qn_client_free(reg2);
            if (ra < 0 || rb < 0) {
                fprintf(stderr, "upload: %s\n", err.msg);
                return 1;
            }
            printf("rep %d: as a file %.4f s (write %.4f, upload %.4f); streamed %.4f s\n", k, tb - ta, wr,
                   tb - ta - wr, tc - tb);
            qn_client_free(reg);
        }
        out_rows = qml_frame_nrows(clean);
        if (k == 0)
            for (size_t s = 0; s < rep.nsteps; s++)
                printf("  %-13s %8zu -> %8zu  %s\n", rep.steps[s].op, rep.steps[s].rows_in, rep.steps[s].rows_out,
                       rep.steps[s].note);
        qml_frame_free(clean);
    }
    printf("rows %zu -> %zu, clean %.4f s, write %.4f s (best of %d), %llu bytes, sha256 %s\n",
           qml_frame_nrows(raw), out_rows, best_clean, best_write, reps, (unsigned long long)bytes, hex);
    qml_clean_free(steps);
    qml_frame_free(raw);
    json_decref(spec);
    return 0;
}
