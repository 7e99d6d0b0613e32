#!/usr/bin/python3
"""bench_console.py - quern-console under a loaded registry and monitor.

Starts registry, monitor, train, alert and the console on free ports (ingest,
prep and serve stay down: the overview shows them so), registers one model
with 1,000 versions (metrics on each) and plays 500 closed monitor windows
(500 drift reports, the monitor keeping --history 1000), then runs
bench_console.js in headless Chromium: for every page, a fresh load and
  - first contentful paint (Navigation Timing / Paint Timing),
  - content: when the page's data is on screen (body[data-page] set),
median of 5 loads; then the assets' bytes (gzip, as served) and the console's
resident memory idle (VmRSS) before and after. Prints a table with the load
average. Not a test: nothing fails on a slow run.
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "service"))
os.environ.setdefault("QUERN_BIN", os.path.join(ROOT, "build", "bin"))
os.environ.setdefault("QUERN_TOOLS", os.path.join(ROOT, "build", "tests"))
import events  # noqa: E402
from harness import Service  # noqa: E402
import hashlib  # noqa: E402

VERSIONS = int(os.environ.get("BENCH_VERSIONS", "1000"))
REPORTS = int(os.environ.get("BENCH_REPORTS", "500"))
ROWS = 50  # per window


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    home = tempfile.mkdtemp(prefix="quern-bench-console-")
    env = {"QUERN_HOME": home}
    bus = f"sqlite://{home}/bus.db"
    svcs = []
    for d in ("registry", "monitor", "train", "alert", "console"):
        os.makedirs(os.path.join(home, d))
    try:
        reg = Service("registry", data=f"{home}/registry", env=env).start()
        svcs.append(reg)
        base = f"http://127.0.0.1:{reg.port}"
        mon = Service("monitor", data=f"{home}/monitor", env=env,
                      args=["--registry", base, "--window-rows", str(ROWS), "--window-seconds", "3600",
                            "--history", "1000", "--tick", "200ms"]).start()
        svcs.append(mon)
        train = Service("train", data=f"{home}/train", env=env, args=["--registry", base]).start()
        svcs.append(train)
        alert = Service("alert", data=f"{home}/alert", env=env).start()
        svcs.append(alert)

        # one model, VERSIONS versions
        csv = os.path.join(home, "ref.csv")
        rng = random.Random(7)
        with open(csv, "w") as f:
            f.write("x,y,c\n")
            for _ in range(500):
                f.write(f"{rng.gauss(0, 1):.4f},{rng.uniform(0, 10):.4f},{rng.choice('abc')}\n")
        prof = events.profile(csv, csv + ".profile.json")
        for blob in (prof, b"weights"):
            reg.request("PUT", f"/v1/blobs/{sha(blob)}", body=blob, headers={"Content-Type": "application/octet-stream"})
        reg.request("POST", "/v1/models", {"name": "bench"})
        manifest = {"format": "quern.model/1", "kind": "xgboost",
                    "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1]}],
                    "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1]}],
                    "files": {"model.json": sha(b"weights")}, "profile": sha(prof)}
        t0 = time.time()
        for i in range(VERSIONS):
            m = {"auc": 0.8 + 0.1 * rng.random(), "accuracy": 0.7 + 0.2 * rng.random(),
                 "baseline.auc": 0.75, "log_loss": 0.3 + 0.2 * rng.random()}
            st, _, body = reg.request("POST", "/v1/models/bench/versions", {"manifest": manifest, "metrics": m})
            assert st == 201, body
        reg.request("PUT", "/v1/models/bench/aliases/production", {"version": VERSIONS})
        t_versions = time.time() - t0

        # REPORTS windows of ROWS predictions each
        t0 = time.time()
        batch = []
        for w in range(REPORTS):
            shift = 1.5 if w % 5 == 4 else 0.0
            preds = [{"request_id": f"r{w}-{j}", "time": time.time(),
                      "features": {"x": rng.gauss(shift, 1), "y": rng.uniform(0, 10 + 10 * shift), "c": rng.choice("abc")},
                      "prediction": 0.5} for j in range(ROWS)]
            batch.append(events.envelope("quern.predictions.logged", {"model": "bench", "version": VERSIONS, "predictions": preds}))
            if len(batch) == 50:
                events.publish(bus, batch)
                batch = []
        if batch:
            events.publish(bus, batch)
        deadline = time.time() + 600
        n = 0
        while time.time() < deadline:
            st, _, body = mon.request("GET", "/v1/monitors/bench/report?history=1000")
            n = len(body.get("reports", [])) if st == 200 else 0
            if n >= REPORTS:
                break
            time.sleep(1)
        t_reports = time.time() - t0

        dead = "http://127.0.0.1:9"
        con = Service("console", data=f"{home}/console", env=env, args=[
            "--registry", base, "--monitor", f"http://127.0.0.1:{mon.port}", "--train", f"http://127.0.0.1:{train.port}",
            "--alert", f"http://127.0.0.1:{alert.port}", "--ingest", dead, "--prep", dead, "--serve", dead]).start()
        svcs.append(con)
        time.sleep(1)
        rss0 = rss_kb(con.proc.pid)
        p = subprocess.run(["node", os.path.join(ROOT, "bench", "bench_console.js"), f"http://127.0.0.1:{con.port}"],
                           capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            print(p.stdout, p.stderr)
            return 1
        res = json.loads(p.stdout)
        time.sleep(2)
        rss1 = rss_kb(con.proc.pid)
        load = open("/proc/loadavg").read().split()[:3]
        print(f"machine: {os.cpu_count()} cores, load {' '.join(load)}; registry: {VERSIONS} versions "
              f"(registered in {t_versions:.1f} s), monitor: {n} drift reports (played in {t_reports:.1f} s)")
        print(f"{'page':<28} {'FCP ms':>8} {'content ms':>11}   (median of {res['runs']} fresh loads; aim < 300)")
        for name, r in res["pages"].items():
            print(f"{name:<28} {r['fcp']:>8.0f} {r['content']:>11.0f}")
        print(f"assets, gzip as served: {res['asset_bytes']:,} bytes ({res['asset_bytes'] / 1024:.1f} KiB; aim < 150 KiB), "
              f"{res['asset_count']} files")
        print(f"quern-console RSS idle: {rss0 / 1024:.1f} MiB at start, {rss1 / 1024:.1f} MiB after the run (aim < 16 MiB)")
        return 0
    finally:
        for s in reversed(svcs):
            s.stop()


if __name__ == "__main__":
    sys.exit(main())
