#!/usr/bin/python3
"""setup.py - the browser suite's world: every service and quern-console on
free ports with real data flowing, left running for the Node driver.

It runs scripts/demo.py on a deterministic subset of Online Retail (every 3rd
customer): ingest, prep, train version 1, serve, predictions, a control and a
shifted monitor window (a drift report), the alert and its retrain (version
2). Then a second model, "demand" (y = 2x + 1, a linear regressor published
directly, with a shadow version), gets predictions through serve and labels
for them through ingest's feedback, so the monitor makes live quality reports
(quality windows of 20 labels) and measures shadow agreement. Last, a
classifier, "adult": logistic regression trained by quern-train on every 8th
row of UCI Adult (ingest, prep's example pipeline, train; the holdout
calibration table comes with it), answering adult.test rows through serve, so
the monitor estimates its accuracy and ROC AUC before any label (CBPE, one
estimate per 20 predictions); then the labels of the first two windows land
and those estimates get their realised values, and its drift window is closed
on demand (a report with categorical features). QUERN_TOKEN is set, so every
mutating call (the console's promote too) needs it. Prints one JSON line: {"home", "base", "console", "token"}; stop
everything with `QUERN_HOME=<home> QUERN_PORT_BASE=<base> quern down`.
"""
import csv
import hashlib
import io
import json
import lzma
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.environ.get("QUERN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
WORK = os.environ.get("QUERN_TEST_WORK", tempfile.gettempdir())


def free_base():
    for _ in range(200):
        base = random.randrange(20000, 60000, 10)
        socks = []
        try:
            for off in range(10):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + off))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


QUALITY_WINDOW = 20


def call(port, method, path, body=None, token=None, raw=None, timeout=60, content_type=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Content-Type", content_type or ("application/octet-stream" if raw is not None else "application/json"))
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text.decode(errors="replace")


def wait(what, fn, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        got = fn()
        if got:
            return got
        time.sleep(0.25)
    raise RuntimeError(f"timed out waiting for {what}")


def must(st, body, want=(200, 201, 204)):
    if st not in want:
        raise RuntimeError(f"HTTP {st}: {body}")
    return body


def quality_loop(base, token):
    """A regressor with labelled predictions: live quality reports, and shadow agreement."""
    reg, ing, srv, mon = base + 1, base + 2, base + 5, base + 7
    must(*call(reg, "POST", "/v1/models", {"name": "demand", "description": "y = 2x + 1, a linear regressor"}, token),
         want=(201, 409))
    for coef, alias in ((2.0, "production"), (2.1, "shadow")):
        lin = json.dumps({"format": "quern.linear/1", "kind": "linear", "n_features": 1, "coef": [[coef]],
                          "intercept": [1.0]}).encode()
        digest = "sha256:" + hashlib.sha256(lin).hexdigest()
        must(*call(reg, "PUT", f"/v1/blobs/{digest}", raw=lin, token=token))
        man = {"format": "quern.model/1", "kind": "linear",
               "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1]}],
               "outputs": [{"name": "prediction", "datatype": "FP32", "shape": [-1]}],
               "transforms": {"format": "quern.features/1", "n_features": 1,
                              "columns": [{"name": "x", "type": "numeric", "steps": []}]},
               "params": {"task": "regression"}, "files": {"model.json": digest}}
        v = must(*call(reg, "POST", "/v1/models/demand/versions",
                       {"manifest": man, "metrics": {"rmse": 1.0, "mae": 0.8, "r2": 0.9}}, token))["version"]
        must(*call(reg, "PUT", f"/v1/models/demand/aliases/{alias}", {"version": v}, token))

    def infer(x):
        return call(srv, "POST", "/v2/models/demand/infer",
                    {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [x]}]}, token)
    wait("serve to load demand", lambda: infer(1.0)[0] == 200)
    rng = random.Random(12)
    answers = []
    for _ in range(3 * QUALITY_WINDOW):
        st, out = infer(rng.uniform(0, 10))
        answers.append((must(st, out)["id"], out["outputs"][0]["data"][0]))

    def pending():
        st, b = call(mon, "GET", "/v1/monitors/demand/quality")
        return st == 200 and b["state"]["pending"] >= len(answers)
    wait("the monitor to log demand's predictions", pending)
    # three windows, the truth drifting further from the predictions each time
    for w in range(3):
        batch = answers[w * QUALITY_WINDOW:(w + 1) * QUALITY_WINDOW]
        must(*call(ing, "POST", "/v1/feedback",
                   [{"model": "demand", "request_id": rid, "value": p + rng.choice([-1.0, 1.0]) * (0.5 + 1.5 * w)}
                    for rid, p in batch], token))

        def reports(n=w + 1):
            st, b = call(mon, "GET", "/v1/monitors/demand/quality?history=100")
            return st == 200 and len(b["reports"]) >= n
        wait(f"quality report {w + 1}", reports)
    # then the shadow version answers the same requests (no labels for these)
    must(*call(reg, "PUT", "/v1/models/demand/traffic",
               {"routes": [{"alias": "production", "weight": 100}], "shadow": {"alias": "shadow", "fraction": 1.0}}, token))

    def agreement():
        st, out = infer(rng.uniform(0, 10))
        must(st, out)
        st, b = call(mon, "GET", "/v1/monitors/demand/agreement")
        return st == 200 and any(p["requests"] >= 10 for p in b["pairs"])
    wait("shadow agreement", agreement)


ADULT_COLS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
              "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
              "income"]
ADULT_NUM = {"age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"}
CBPE_WINDOWS = 3          # estimate windows of QUALITY_WINDOW predictions; the last stays unlabelled


def adult_lines(name):
    """The complete rows of adult.data or adult.test as lists of stripped fields."""
    plain = os.path.join(os.environ.get("QUERN_DATASETS", os.path.join(ROOT, "build", "datasets")), name)
    if os.path.exists(plain):
        with open(plain) as f:
            text = f.read()
    else:
        with lzma.open(os.path.join(ROOT, "data", "adult", name + ".xz"), "rt") as f:
            text = f.read()
    rows = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == len(ADULT_COLS) and "?" not in parts:
            rows.append(parts)
    return rows


def cbpe_loop(base, token):
    """A binary classifier trained by the platform, estimated before labels (CBPE)."""
    reg, ing, prep, trn, srv, mon = base + 1, base + 2, base + 3, base + 4, base + 5, base + 7
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(ADULT_COLS)
    w.writerows(adult_lines("adult.data")[::8])
    must(*call(ing, "POST", "/v1/datasets/adult-raw/events", raw=out.getvalue().encode(), token=token,
               content_type="text/csv"))
    with open(os.path.join(ROOT, "examples", "pipelines", "adult.json")) as f:
        must(*call(prep, "PUT", "/v1/pipelines/adult", json.load(f), token))
    run = must(*call(prep, "POST", "/v1/pipelines/adult/runs", None, token), want=(202,))
    run = wait("prep's adult run", lambda: (lambda r: r if isinstance(r[1], dict) and r[1].get("state") not in (None, "queued", "running") else None)(
        call(prep, "GET", f"/v1/pipelines/adult/runs/{run['run_id']}")))[1]
    if run["state"] != "succeeded":
        raise RuntimeError(f"prep adult: {run}")
    with open(os.path.join(ROOT, "examples", "train", "adult-logistic.json")) as f:
        spec = json.load(f)
    spec.pop("kind")
    job = must(*call(trn, "POST", "/v1/jobs", {"model": "adult", "kind": "logistic", "dataset": "adult-clean",
                                               "spec": spec, "promote_policy": {"metric": "roc_auc", "mode": "always"}},
                     token), want=(202,))
    job = wait("adult's training", lambda: (lambda r: r if isinstance(r[1], dict) and r[1].get("state") in ("succeeded", "failed", "cancelled") else None)(
        call(trn, "GET", f"/v1/jobs/{job['id']}")), timeout=300)[1]
    if job["state"] != "succeeded":
        raise RuntimeError(f"train adult: {job}")

    def infer(parts):
        inputs = [{"name": k, "shape": [1], "datatype": "FP64" if k in ADULT_NUM else "BYTES",
                   "data": [float(v) if k in ADULT_NUM else v]} for k, v in zip(ADULT_COLS[:-1], parts[:-1])]
        return call(srv, "POST", "/v2/models/adult/infer", {"inputs": inputs}, token)
    test = adult_lines("adult.test")[::40][:CBPE_WINDOWS * QUALITY_WINDOW]
    truth = [1 if parts[-1].rstrip(".") == ">50K" else 0 for parts in test]
    # the first answer that comes is the first prediction of the first window
    first = wait("serve to load adult", lambda: (lambda r: r[1] if r[0] == 200 else None)(infer(test[0])))
    sent = [(first["id"], truth[0])]
    for i, (parts, y) in enumerate(zip(test[1:], truth[1:]), 1):
        if i % QUALITY_WINDOW == 0:
            time.sleep(1.0)  # each window closes at its own time, as traffic would spread them
        st, ans = infer(parts)
        sent.append((must(st, ans)["id"], y))

    def estimates(n, realised=0):
        st, b = call(mon, "GET", "/v1/monitors/adult/quality?history=100")
        if st != 200 or len(b["estimates"]) < n:
            return None
        return sum(1 for e in b["estimates"] if e.get("realised_ready")) >= realised
    wait("the monitor's CBPE estimates", lambda: estimates(CBPE_WINDOWS))
    for w in range(CBPE_WINDOWS - 1):
        if w:
            time.sleep(1.0)
        labelled = sent[w * QUALITY_WINDOW:(w + 1) * QUALITY_WINDOW]
        must(*call(ing, "POST", "/v1/feedback", [{"model": "adult", "request_id": rid, "label": y} for rid, y in labelled],
                   token))
    wait("the estimates' realised values", lambda: estimates(CBPE_WINDOWS, CBPE_WINDOWS - 1))
    # and its drift window (60 rows), closed now: a report with categorical features
    must(*call(mon, "POST", "/v1/monitors/adult/close", None, token))
    wait("adult's drift report", lambda: call(mon, "GET", "/v1/monitors/adult/report")[0] == 200)


def main():
    home = tempfile.mkdtemp(prefix="quern-browser-", dir=WORK)
    base = free_base()
    token = "browser-suite-token"
    # serve follows every model's production alias (QUERN_MODELS empty), small quality windows
    env = dict(os.environ, QUERN_DEMO_HOME=home, QUERN_PORT_BASE=str(base), QUERN_TOKEN=token, DEMO_KEEP="1",
               QUERN_MODELS="", QUERN_MONITOR_QUALITY_WINDOW=str(QUALITY_WINDOW))
    t_demo = time.time()
    p = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "demo.py"), "--subset", "3", "--json",
                        "--keep"], env=env, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-3000:] + p.stderr[-3000:])
        sys.exit(1)
    t0 = time.time()
    quality_loop(base, token)
    t1 = time.time()
    cbpe_loop(base, token)
    sys.stderr.write(f"setup: demo {t0 - t_demo:.1f} s, quality loop {t1 - t0:.1f} s, CBPE loop {time.time() - t1:.1f} s\n")
    print(json.dumps({"home": home, "base": base, "console": f"http://127.0.0.1:{base + 9}", "token": token,
                      "story": json.loads(p.stdout)}))


if __name__ == "__main__":
    main()
