"""bench_tracking.py - run search and log-batch in quern-registry, each beside
a hand-written SQLite baseline on the same machine in the same run.

1. runs/search over RUNS runs x 10 metrics x 10 params (default 100,000):
   filter on one metric and one param, order by another metric, first page
   of 100, through MLflow's API (POST /api/2.0/mlflow/runs/search, full runs
   in JSON over HTTP) -> p50/p99; beside the same query written by hand in
   SQL (run ids only) on the same SQLite file with Python's sqlite3.
   The runs are written straight into the registry's SQLite file (its own
   schema, created by starting the registry once): logging 100,000 runs over
   HTTP would take the benchmark's whole budget and measure something else.
2. log-batch of 1,000 metrics into one run over HTTP -> p50 and rows/s;
   beside a plain loop of 1,000 INSERTs in one transaction (WAL,
   synchronous=NORMAL, as the registry opens SQLite).

Prints the load average before and after: the machine is shared.

    /usr/bin/python3 bench/bench_tracking.py [RUNS] [REPEATS]
    BENCH_QUERIES=N (20): searches timed per repeat; BENCH_TRACKING_DB=FILE: start
    from a registry.db an earlier run populated with the same RUNS
"""
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../tests/service"))
import harness  # noqa: E402

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
REPEATS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
QUERIES = int(os.environ.get("BENCH_QUERIES", "20"))
BATCHES = 30
# A file populated by an earlier run (same RUNS) skips the 3-minute load.
TEMPLATE = os.environ.get("BENCH_TRACKING_DB")

FILTER = "metrics.m1 > 0.5 and params.p1 = 'v3'"
ORDER = "metrics.m2 DESC"
HAND_SQL = """
SELECT r.run_uuid FROM runs r
  JOIN latest_metrics f ON f.run_id = r.id AND f.key = 'm1'
  JOIN params p ON p.run_id = r.id AND p.key = 'p1'
  LEFT JOIN latest_metrics o ON o.run_id = r.id AND o.key = 'm2'
WHERE r.experiment_id = 1 AND r.lifecycle_stage = 'active' AND f.value > 0.5 AND p.value = 'v3'
ORDER BY o.value DESC, r.start_time DESC, r.run_uuid LIMIT 100
"""


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def populate(path, n):
    """Writes experiment 1 with n runs x 10 metrics x 10 params into the registry's schema."""
    rnd = random.Random(11)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    now = int(time.time() * 1000)
    db.execute("INSERT INTO experiments (id, name, artifact_location, created_at, updated_at) "
               "VALUES (1, 'bench', 'mlflow-artifacts:/1', ?, ?)", (now, now))
    runs, metrics, latest, params, tags = [], [], [], [], []
    for i in range(1, n + 1):
        uuid = "%032x" % rnd.getrandbits(128)
        runs.append((i, uuid, 1, f"run-{i}", "bench", "FINISHED", now - i, now - i + 1000,
                     f"mlflow-artifacts:/1/{uuid}/artifacts"))
        for k in range(10):
            v = rnd.random()
            metrics.append((i, f"m{k}", v, 9, now))
            latest.append((i, f"m{k}", v, 9, now))
            params.append((i, f"p{k}", f"v{rnd.randrange(10)}"))
        tags.append((i, "mlflow.runName", f"run-{i}"))
    db.executemany("INSERT INTO runs (id, run_uuid, experiment_id, name, user_id, status, start_time, end_time, "
                   "artifact_uri) VALUES (?,?,?,?,?,?,?,?,?)", runs)
    db.executemany("INSERT INTO metrics (run_id, key, value, step, timestamp) VALUES (?,?,?,?,?)", metrics)
    db.executemany("INSERT INTO latest_metrics (run_id, key, value, step, timestamp) VALUES (?,?,?,?,?)", latest)
    db.executemany("INSERT INTO params (run_id, key, value) VALUES (?,?,?)", params)
    db.executemany("INSERT INTO run_tags (run_id, key, value) VALUES (?,?,?)", tags)
    db.commit()
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def bench_search(reg, dbfile):
    body = {"experiment_ids": ["1"], "filter": FILTER, "order_by": [ORDER], "max_results": 100}
    st, _, out = reg.request("POST", "/api/2.0/mlflow/runs/search", body)  # warm
    assert st == 200 and len(out["runs"]) == 100, (st, str(out)[:300])
    api = []
    for _ in range(QUERIES):
        t = time.perf_counter()
        st, _, out = reg.request("POST", "/api/2.0/mlflow/runs/search", body)
        api.append(time.perf_counter() - t)
        assert st == 200
    api_ids = [r["info"]["run_id"] for r in out["runs"]]
    db = sqlite3.connect(f"file:{dbfile}?mode=ro", uri=True)
    hand_ids = [r[0] for r in db.execute(HAND_SQL)]
    hand = []
    for _ in range(QUERIES):
        t = time.perf_counter()
        rows = db.execute(HAND_SQL).fetchall()
        hand.append(time.perf_counter() - t)
    db.close()
    assert api_ids == hand_ids, "the API and the hand-written query disagree"
    assert len(rows) == 100
    return api, hand


def bench_log_batch(reg, work):
    st, _, out = reg.request("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": "1"})
    assert st == 200, out
    rid = out["run"]["info"]["run_id"]
    lat = []
    for b in range(BATCHES + 1):
        now = int(time.time() * 1000)
        metrics = [{"key": f"k{i % 10}", "value": random.random(), "timestamp": now, "step": b * 100 + i // 10}
                   for i in range(1000)]
        data = json.dumps({"run_id": rid, "metrics": metrics}).encode()
        t = time.perf_counter()
        st, _, out = reg.request("POST", "/api/2.0/mlflow/runs/log-batch", data,
                                 headers={"Content-Type": "application/json"})
        if b:  # the first warms the statement cache
            lat.append(time.perf_counter() - t)
        assert st == 200, out
    # the baseline: a plain loop of inserts in one transaction
    path = os.path.join(work, "plain.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE m (run_id INTEGER, key TEXT, value REAL, step INTEGER, timestamp INTEGER)")
    plain = []
    for b in range(BATCHES):
        now = int(time.time() * 1000)
        t = time.perf_counter()
        db.execute("BEGIN")
        for i in range(1000):
            db.execute("INSERT INTO m VALUES (?, ?, ?, ?, ?)", (1, f"k{i % 10}", random.random(), b * 100 + i // 10, now))
        db.execute("COMMIT")
        plain.append(time.perf_counter() - t)
    db.close()
    return lat, plain


def main():
    print(f"load average before: {os.getloadavg()}")
    base = harness.Service("registry")
    base.start()
    base.stop()
    template = os.path.join(base.data, "registry.db")
    if TEMPLATE:
        shutil.copy(TEMPLATE, template)
        print(f"reusing {TEMPLATE} ({os.path.getsize(template) / 1e6:.0f} MB)")
    else:
        t = time.perf_counter()
        populate(template, RUNS)
        print(f"populated {RUNS} runs x 10 metrics x 10 params in {time.perf_counter() - t:.1f} s "
              f"({os.path.getsize(template) / 1e6:.0f} MB)")
    for rep in range(1, REPEATS + 1):
        reg = harness.Service("registry")
        os.makedirs(reg.data, exist_ok=True)
        shutil.copy(template, os.path.join(reg.data, "registry.db"))
        reg.start(timeout=60)
        try:
            api, hand = bench_search(reg, os.path.join(reg.data, "registry.db"))
            lat, plain = bench_log_batch(reg, reg.data)
        finally:
            reg.stop()
        a50, a99, h50, h99 = (pct(api, 50) * 1e3, pct(api, 99) * 1e3, pct(hand, 50) * 1e3, pct(hand, 99) * 1e3)
        l50, p50 = statistics.median(lat) * 1e3, statistics.median(plain) * 1e3
        print(f"run {rep}: search p50 {a50:.1f} ms p99 {a99:.1f} ms | hand SQL p50 {h50:.1f} ms p99 {h99:.1f} ms | "
              f"ratio p50 {a50 / h50:.2f}x")
        print(f"run {rep}: log-batch 1000 metrics p50 {l50:.1f} ms = {1000 / (l50 / 1e3):,.0f} rows/s | "
              f"plain insert loop p50 {p50:.1f} ms = {1000 / (p50 / 1e3):,.0f} rows/s | ratio {l50 / p50:.2f}x")
        shutil.rmtree(reg.data, ignore_errors=True)
    shutil.rmtree(base.data, ignore_errors=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
