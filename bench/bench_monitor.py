"""bench_monitor.py - quern-monitor throughput with the label join, beside the
raw bus consume rate, in the same run (see bench_monitor.sh).

Logged predictions (events of 100, a regressor's) and one feedback event per
prediction (its label, by request id) are published to a fresh SQLite bus
while the monitor is stopped; then (1) the raw consume rate: quern-events
reads every event through its own durable group (receive + ack, nothing
else), and (2) the monitor is started and timed until every label has been
through the join (joined + unjoined == predictions), windows, counters and
quality reports included. Both rates are in rows/s: a prediction is a row, a
feedback event is a row. Prints one JSON line.

    bench_monitor.py BUILD_DIR [PREDICTIONS]
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
here = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("QUERN_BIN", os.path.join(build, "bin"))
os.environ.setdefault("QUERN_TOOLS", os.path.join(build, "tests"))
sys.path.insert(0, os.path.join(here, "..", "tests", "service"))
import events  # noqa: E402
from harness import Service  # noqa: E402

home = tempfile.mkdtemp(prefix="quern-bench-mon-")
env = {"QUERN_HOME": home}
bus = f"sqlite://{home}/bus.db"
for d in ("registry", "monitor"):
    os.makedirs(os.path.join(home, d))
reg = mon = None
try:
    reg = Service("registry", data=os.path.join(home, "registry"), env=env).start(timeout=60)
    w = b"weights"
    import hashlib
    dg = "sha256:" + hashlib.sha256(w).hexdigest()
    reg.request("PUT", f"/v1/blobs/{dg}", body=w, headers={"Content-Type": "application/octet-stream"})
    reg.request("POST", "/v1/models", {"name": "bench"})
    man = {"format": "quern.model/1", "kind": "xgboost",
           "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1]}],
           "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1]}],
           "files": {"model.json": dg}, "params": {"task": "regression"}}
    st, _, body = reg.request("POST", "/v1/models/bench/versions", {"manifest": man, "metrics": {"rmse": 1.0}})
    assert st == 201, body
    args = ["--registry", f"http://127.0.0.1:{reg.port}", "--quality-window", "1000", "--tick", "200ms"]
    mon = Service("monitor", data=os.path.join(home, "monitor"), env=env, args=args).start(timeout=60)
    mon.stop()  # its durable group now exists: what is published next waits for it
    events.subscribe(bus, "raw", "quern.#")

    rng = random.Random(1)
    evs = []
    for i in range(0, n, 100):
        evs.append(events.envelope("quern.predictions.logged", {
            "model": "bench", "version": 1,
            "predictions": [{"request_id": f"r{i + j}", "time": time.time(),
                             "features": {"x": rng.random(), "y": rng.random(), "c": "a"},
                             "prediction": rng.random() * 10} for j in range(min(100, n - i))]}))
    n_pred_events = len(evs)
    evs += [events.envelope("quern.feedback.received", {"model": "bench", "request_id": f"r{i}",
                                                         "value": rng.random() * 10}) for i in range(n)]
    for k in range(0, len(evs), 5000):
        events.publish(bus, evs[k:k + 5000])
    rows = 2 * n

    # (1) raw consume: receive + ack every event through its own group
    quiet = 500
    t0 = time.time()
    p = subprocess.run([events.TOOL, "read", bus, "raw", "quern.#", str(len(evs)), str(quiet)],
                       capture_output=True, timeout=3600)
    t_raw = time.time() - t0
    got = sum(1 for line in p.stdout.splitlines() if line.strip())
    assert got == len(evs), (got, len(evs), p.stderr[-500:])
    # the tool stops when it has MAX events; the quiet wait applies only when short

    # (2) the monitor through the same events
    mon.start(timeout=60)
    t0 = time.time()
    joined = unjoined = 0
    while True:
        st, _, q = mon.request("GET", "/v1/monitors/bench/quality")
        if st == 200:
            joined, unjoined = q["labels"]["joined"], q["labels"]["unjoined"]
            if joined + unjoined >= n:
                break
        time.sleep(0.05)
    t_mon = time.time() - t0
    st, _, q = mon.request("GET", "/v1/monitors/bench/quality?history=1000")
    print(json.dumps({"predictions": n, "feedback": n, "events": len(evs), "prediction_events": n_pred_events,
                      "rows": rows, "raw_s": t_raw, "raw_rows_per_s": rows / t_raw,
                      "raw_events_per_s": len(evs) / t_raw, "monitor_s": t_mon,
                      "monitor_rows_per_s": rows / t_mon, "monitor_events_per_s": len(evs) / t_mon,
                      "ratio": (rows / t_mon) / (rows / t_raw), "joined": joined, "unjoined": unjoined,
                      "quality_reports": len(q["reports"]) if st == 200 else None}))
finally:
    for s in (mon, reg):
        if s and s.proc and s.proc.poll() is None:
            s.stop()
    shutil.rmtree(home, ignore_errors=True)
