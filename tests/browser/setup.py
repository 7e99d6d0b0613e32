#!/usr/bin/python3
"""setup.py - the browser suite's world: every service and quern-console on
free ports with real data flowing, left running for the Node driver.

It runs scripts/demo.py on a deterministic subset of Online Retail (every 3rd
customer): ingest, prep, train version 1, serve, predictions, a control and a
shifted monitor window (a drift report), the alert and its retrain (version
2). Then a second model, "demand" (y = 2x + 1, a linear regressor published
directly, with a shadow version), gets predictions through serve and labels
for them through ingest's feedback, so the monitor makes live quality reports
(quality windows of 20 labels) and measures shadow agreement. QUERN_TOKEN is set, so every mutating call (the console's promote too)
needs it. Prints one JSON line: {"home", "base", "console", "token"}; stop
everything with `QUERN_HOME=<home> QUERN_PORT_BASE=<base> quern down`.
"""
import hashlib
import json
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


def call(port, method, path, body=None, token=None, raw=None, timeout=60):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
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


def main():
    home = tempfile.mkdtemp(prefix="quern-browser-", dir=WORK)
    base = free_base()
    token = "browser-suite-token"
    # serve follows every model's production alias (QUERN_MODELS empty), small quality windows
    env = dict(os.environ, QUERN_DEMO_HOME=home, QUERN_PORT_BASE=str(base), QUERN_TOKEN=token, DEMO_KEEP="1",
               QUERN_MODELS="", QUERN_MONITOR_QUALITY_WINDOW=str(QUALITY_WINDOW))
    p = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "demo.py"), "--subset", "3", "--json",
                        "--keep"], env=env, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-3000:] + p.stderr[-3000:])
        sys.exit(1)
    quality_loop(base, token)
    print(json.dumps({"home": home, "base": base, "console": f"http://127.0.0.1:{base + 9}", "token": token,
                      "story": json.loads(p.stdout)}))


if __name__ == "__main__":
    main()
