#!/usr/bin/python3
"""bench_prep.py - a quern-prep run on the full Online Retail pipeline beside
pandas doing the same work (read, the same steps, write CSV), in one run.

    /usr/bin/python3 bench/bench_prep.py [--build DIR] [--csv FILE] [--rows N]
    /usr/bin/python3 bench/bench_prep.py pandas IN.csv OUT.csv     (the baseline alone)

What it does: starts quern-registry, quern-ingest and quern-prep on ephemeral
loopback ports with one temporary QUERN_HOME (the embedded SQLite bus), as the
demo does; ingests the CSV with `quern ingest --batch 20000` (timed, rows/s);
puts examples/pipelines/online-retail.json with a manual trigger and runs it.
The prep figure is the run's own duration (finished_at - started_at of the
run resource, what a user sees), with the per-phase timing of the run's
report; the client's wall time from POST to seeing the run finished is shown
beside it. Peak memory of prep is VmHWM of the quern-prep process (which did
nothing but this run). Then pandas (/usr/bin/python3, Debian's python3-pandas)
reads the same CSV, applies the same steps and writes CSV, under
/usr/bin/time -v; its figure is the time from read_csv to the end of to_csv
(interpreter and import not counted), its memory the process's maximum RSS.

Both outputs are compared: prep's data.csv (from the registry) and pandas'
file must hold the same rows (numbers compared as numbers: pandas writes 165.0
where prep writes 165); the SHA-256 of prep's output is printed, to compare
builds. Everything talks to 127.0.0.1 only and is stopped at the end.
"""
import argparse
import csv
import hashlib
import itertools
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP_NOT_IN = ["POST", "D", "M", "m", "DOT", "C2", "S", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS", "B"]


def pandas_work(src, out):
    """The pipeline of examples/pipelines/online-retail.json in pandas. Prints the seconds
    from read to written and the rows out as JSON."""
    import pandas as pd
    t0 = time.perf_counter()
    df = pd.read_csv(src, dtype={"InvoiceNo": str, "StockCode": str, "Description": str, "CustomerID": str,
                                 "Country": str, "Quantity": "float64", "UnitPrice": "float64"},
                     keep_default_na=False, na_values=[""])
    df["InvoiceDate"] = pd.to_datetime(df["InvoiceDate"], format="%Y-%m-%d %H:%M:%S")
    t_read = time.perf_counter()
    df = df.dropna(subset=["CustomerID"])
    df = df[~df["InvoiceNo"].str.startswith("C")]
    df = df[df["Quantity"] > 0]
    df = df[df["UnitPrice"] > 0]
    df = df[~df["StockCode"].isin(STEP_NOT_IN)]
    df = df[~df["StockCode"].str.startswith("gift_0001")]
    df["weight"] = 1
    t_clean = time.perf_counter()
    df.to_csv(out, index=False)
    t_end = time.perf_counter()
    print(json.dumps({"seconds": t_end - t0, "read": t_read - t0, "clean": t_clean - t_read,
                      "write": t_end - t_clean, "rows_out": len(df)}))


def same_rows(a, b):
    """Whether two CSV files hold the same rows, numbers compared as numbers (pandas
    writes 165.0 where prep writes 165). (True, "") or (False, the first difference)."""
    with open(a, newline="") as fa, open(b, newline="") as fb:
        ra, rb = csv.reader(fa), csv.reader(fb)
        for n, (x, y) in enumerate(itertools.zip_longest(ra, rb), 1):
            if x == y:
                continue
            if x is None or y is None or len(x) != len(y):
                return False, f"line {n}: {x} / {y}"
            for u, v in zip(x, y):
                if u != v:
                    try:
                        if float(u) == float(v):
                            continue
                    except ValueError:
                        pass
                    return False, f"line {n}: {x} / {y}"
    return True, ""


def find_csv(work):
    for p in (os.path.join(ROOT, "build", "datasets", "online_retail.csv"),
              os.path.join(ROOT, "..", "shared", "data", "online-retail", "online_retail.csv")):
        if os.path.exists(p):
            return p
    out = os.path.join(work, "online_retail.csv")
    with lzma.open(os.path.join(ROOT, "data", "online-retail", "online_retail.csv.xz"), "rb") as f, \
            open(out, "wb") as o:
        shutil.copyfileobj(f, o)
    return out


def head_rows(src, n, work):
    out = os.path.join(work, f"head{n}.csv")
    with open(src, "rb") as f, open(out, "wb") as o:
        for i, line in enumerate(f):
            if i > n:
                break
            o.write(line)
    return out


def rfc3339_ms(s):
    """'2026-12-02T03:04:05.678Z' -> ms since the epoch."""
    import calendar
    base, frac = s.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) * 1000 + int(frac)


def vm_hwm_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--csv", help="the Online Retail CSV (default: the shipped one)")
    ap.add_argument("--rows", type=int, default=0, help="only the first N rows")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--perf", metavar="FILE", help="record the prep run with perf record -g into FILE (ingest's and the registry's into FILE.ingest, FILE.registry)")
    a = ap.parse_args()
    bindir = os.path.join(os.path.abspath(a.build), "bin")
    os.environ["QUERN_BIN"] = bindir
    sys.path.insert(0, os.path.join(ROOT, "tests", "service"))
    from harness import Service  # noqa: E402

    work = tempfile.mkdtemp(prefix="quern-bench-prep-")
    services = []
    try:
        src = a.csv or find_csv(work)
        if a.rows:
            src = head_rows(src, a.rows, work)
        env = {"QUERN_HOME": work}
        reg = Service("registry", data=os.path.join(work, "registry"), env=env)
        ing = Service("ingest", data=os.path.join(work, "ingest"), env=env)
        for s in (reg, ing):
            os.makedirs(s.data)
            services.append(s.start())
        prep = Service("prep", data=os.path.join(work, "prep"), env=env,
                       args=["--registry", f"http://127.0.0.1:{reg.port}",
                             "--ingest", f"http://127.0.0.1:{ing.port}"])
        os.makedirs(prep.data)
        services.append(prep.start())

        cli_env = dict(os.environ, QUERN_HOME=work, QUERN_INGEST=f"http://127.0.0.1:{ing.port}",
                       QUERN_PREP=f"http://127.0.0.1:{prep.port}", QUERN_REGISTRY=f"http://127.0.0.1:{reg.port}")
        print(f"load average before ingest: {loadavg()}", flush=True)
        t0 = time.perf_counter()
        p = subprocess.run([os.path.join(bindir, "quern"), "--json", "ingest", "online-retail-raw", src,
                            "--batch", "20000"], env=cli_env, capture_output=True, text=True)
        t_ing = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"quern ingest failed:\n{p.stderr}{p.stdout}")
        accepted = json.loads(p.stdout)["accepted"]
        print(f"quern ingest: {accepted:,} rows in {t_ing:.2f} s = {accepted / t_ing:,.0f} rows/s "
              f"(--batch 20000; context only, bench_ingest.sh measures ingest)")

        spec = json.load(open(os.path.join(ROOT, "examples", "pipelines", "online-retail.json")))
        spec["trigger"] = {"kind": "manual"}
        st, _, body = prep.request("PUT", "/v1/pipelines/online-retail", spec)
        assert st in (200, 201), body
        hwm_idle = vm_hwm_mib(prep.proc.pid)
        print(f"load average before prep: {loadavg()}", flush=True)
        perf = None
        if a.perf:
            perf = [subprocess.Popen(["perf", "record", "-g", "-o", out, "-p", str(svc.proc.pid)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    for out, svc in ((a.perf, prep), (a.perf + ".ingest", ing), (a.perf + ".registry", reg))]
            time.sleep(1)
        t0 = time.perf_counter()
        st, _, body = prep.request("POST", "/v1/pipelines/online-retail/runs")
        assert st == 202, body
        rid = body["run_id"]
        while True:
            st, _, run = prep.request("GET", f"/v1/pipelines/online-retail/runs/{rid}")
            if run["state"] in ("succeeded", "failed", "skipped"):
                break
            time.sleep(0.02)
        t_client = time.perf_counter() - t0
        for pp in perf or ():
            pp.send_signal(2)
            pp.wait()
        if run["state"] != "succeeded":
            raise SystemExit(f"the prep run did not succeed: {run}")
        prep_s = (rfc3339_ms(run["finished_at"]) - rfc3339_ms(run["started_at"])) / 1000
        hwm = vm_hwm_mib(prep.proc.pid)
        timing = run["report"].get("timing", {})
        st, _, v = reg.request("GET", f"/v1/datasets/online-retail-purchases/versions/{run['dataset_version']}")
        digest = v["manifest"]["files"]["data.csv"]
        st, _, blob = reg.request("GET", f"/v1/blobs/{digest}", raw=True, timeout=120)
        assert st == 200
        prep_out = os.path.join(work, "prep.csv")
        with open(prep_out, "wb") as f:
            f.write(blob)
        for s in services:
            s.stop()
        services = []

        print(f"load average before pandas: {loadavg()}", flush=True)
        pd_out = os.path.join(work, "pandas.csv")
        p = subprocess.run(["/usr/bin/time", "-v", "/usr/bin/python3", os.path.abspath(__file__), "pandas", src,
                            pd_out], capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"pandas failed:\n{p.stderr}{p.stdout}")
        pd_res = json.loads(p.stdout.strip().splitlines()[-1])
        pd_rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1)) / 1024
        print(f"load average after pandas: {loadavg()}")

        same, diff = same_rows(prep_out, pd_out)
        print()
        print(f"rows in {run['report']['rows_in']:,}, out: prep {run['rows_out']:,}, pandas {pd_res['rows_out']:,}")
        print(f"prep output sha256:{hashlib.sha256(blob).hexdigest()} ({len(blob):,} bytes); pandas' rows: "
              f"{'the same' if same else 'DIFFERENT: ' + diff}")
        print()
        print(f"{'':34}{'seconds':>9}{'peak RSS MiB':>14}")
        print(f"{'quern-prep run (started->finished)':34}{prep_s:9.2f}{hwm:14.1f}   (idle before: {hwm_idle:.1f})")
        print(f"{'  client: POST -> seen finished':34}{t_client:9.2f}")
        for k, val in timing.items():
            print(f"{'    ' + k:34}{val:9.3f}")
        print(f"{'pandas read+clean+write':34}{pd_res['seconds']:9.2f}{pd_rss:14.1f}")
        print(f"{'    read / clean / write':34}   {pd_res['read']:.2f} / {pd_res['clean']:.2f} / {pd_res['write']:.2f}")
        print(f"prep / pandas time: {prep_s / pd_res['seconds']:.3f} (target < 0.2)")
        print(f"prep / pandas peak memory: {hwm / pd_rss:.2f}")
        if not same:
            sys.exit(1)
    finally:
        for s in services:
            s.stop()
        if a.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "pandas":
        pandas_work(sys.argv[2], sys.argv[3])
    else:
        main()
