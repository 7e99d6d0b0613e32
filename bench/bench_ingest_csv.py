#!/usr/bin/python3
"""bench_ingest_csv.py - `quern ingest FILE.csv` into a real quern-ingest, in rows/s,
beside a plain SQLite insert loop of the same rows in the same run.

    /usr/bin/python3 bench/bench_ingest_csv.py [--build DIR] [--csv FILE] [--batch N]

quern: quern-ingest on an ephemeral loopback port (embedded SQLite bus, WAL),
`quern ingest DATASET FILE` with its default options (CSV dialect sniffed,
--batch 5000 unless given), timed from start to exit: every row parsed,
checked, stored as canonical JSON with its seq, committed (a 2xx means it is
in the WAL) and announced in the outbox.
SQLite: /usr/bin/python3's csv module reads the same file and sqlite3
inserts the rows (the 8 cells as columns) with executemany, one transaction,
WAL, synchronous=NORMAL (ingest's settings), into a fresh file on the same
disk: the floor any ingest path pays to read and store these rows.
Default file: the shipped Online Retail (541,909 rows).
"""
import argparse
import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def sqlite_loop(src, db):
    t0 = time.perf_counter()
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    with open(src, newline="", encoding="utf-8") as f:
        r = csv.reader(f)
        header = next(r)
        cols = ", ".join(f'"{c}"' for c in header)
        con.execute(f"CREATE TABLE rows (seq INTEGER PRIMARY KEY, {cols})")
        marks = ", ".join("?" * (len(header) + 1))
        n = 0
        with con:
            def gen():
                nonlocal n
                for row in r:
                    n += 1
                    yield (n, *row)
            con.executemany(f"INSERT INTO rows VALUES ({marks})", gen())
    con.close()
    return n, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--csv")
    ap.add_argument("--batch", type=int, default=0, help="quern ingest --batch (default: its own)")
    a = ap.parse_args()
    bindir = os.path.join(os.path.abspath(a.build), "bin")
    os.environ["QUERN_BIN"] = bindir
    sys.path.insert(0, os.path.join(ROOT, "tests", "service"))
    from harness import Service  # noqa: E402
    src = a.csv or os.path.join(ROOT, "build", "datasets", "online_retail.csv")
    work = tempfile.mkdtemp(prefix="quern-bench-ingest-csv-")
    ing = None
    try:
        ing = Service("ingest", data=os.path.join(work, "ingest"), env={"QUERN_HOME": work})
        os.makedirs(ing.data)
        ing.start()
        env = dict(os.environ, QUERN_HOME=work, QUERN_INGEST=f"http://127.0.0.1:{ing.port}")
        cmd = [os.path.join(bindir, "quern"), "--json", "ingest", "bench", src]
        if a.batch:
            cmd += ["--batch", str(a.batch)]
        print(f"load average before quern ingest: {loadavg()}", flush=True)
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        t_q = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"quern ingest failed:\n{p.stderr}{p.stdout}")
        n_q = json.loads(p.stdout)["accepted"]
        ing.stop()
        ing = None
        print(f"load average before the SQLite loop: {loadavg()}", flush=True)
        n_s, t_s = sqlite_loop(src, os.path.join(work, "plain.db"))
        print(f"load average after: {loadavg()}")
        print(f"{'quern ingest ' + os.path.basename(src):40}{n_q:>10,} rows {t_q:7.2f} s {n_q / t_q:>10,.0f} rows/s")
        print(f"{'python csv + sqlite3 executemany, 1 tx':40}{n_s:>10,} rows {t_s:7.2f} s {n_s / t_s:>10,.0f} rows/s")
        print(f"quern / plain SQLite: {(n_q / t_q) / (n_s / t_s):.2f} (target >= 0.5)")
    finally:
        if ing:
            ing.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
