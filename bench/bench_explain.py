"""bench_explain.py - helpers of bench_explain.sh (run by /usr/bin/python3).

  setup REGISTRY_URL DIR   trains the Adult XGBoost model of bench_serve.py (100
                           trees, depth 6, the 6 numeric Adult columns) with
                           Python's xgboost, registers it as "adult" with
                           pass-through transforms and points production at it;
                           writes DIR/adult.json and the request bodies
                           DIR/explain-N.body (the first N Adult test rows, one
                           2-D input__0 [N, 6] FP32 tensor) for N in ROWS.
  python DIR N SECONDS     Python xgboost's predict(DMatrix(rows), pred_contribs=True)
                           on the same model and the same first N test rows, in a
                           loop for SECONDS; prints explained rows/s. nthread 1
                           per call, as quern-serve runs XGBoost (1 OpenMP thread
                           per request; its 2 cores go to concurrent requests).
  check URL DIR N          one explain request of N rows against Python's
                           pred_contribs: prints the largest difference.
"""
import json
import os
import sys
import time
import urllib.request

import numpy as np
import xgboost as xgb

sys.path.insert(0, os.path.dirname(__file__))
import bench_serve as bs  # noqa: E402  (registry helpers)

ROWS = (1, 64, 1024)


def test_rows(n):
    X = []
    with open(os.path.join(os.environ.get("QUERN_DATASETS", "build/datasets"), "adult.test")) as f:
        for line in f:
            p = [x.strip() for x in line.split(",")]
            if len(p) < 15 or p[0].startswith("|"):
                continue
            X.append([float(p[i]) for i in bs.IDX])
            if len(X) >= n:
                break
    return np.array(X, dtype=np.float32)


def setup(reg, out):
    X, y = [], []
    with open(os.path.join(os.environ.get("QUERN_DATASETS", "build/datasets"), "adult.data")) as f:
        for line in f:
            p = [x.strip() for x in line.split(",")]
            if len(p) < 15:
                continue
            X.append([float(p[i]) for i in bs.IDX])
            y.append(1 if p[14].startswith(">50K") else 0)
    b = xgb.train({"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "nthread": 2},
                  xgb.DMatrix(np.array(X), label=np.array(y)), 100)
    path = os.path.join(out, "adult.json")
    b.save_model(path)
    inputs = [{"name": c, "datatype": "FP64", "shape": [-1]} for c in bs.NUMERIC]
    cols = [{"name": c, "type": "numeric", "steps": []} for c in bs.NUMERIC]
    bs.register(reg, "adult", {
        "format": "quern.model/1", "kind": "xgboost", "inputs": inputs,
        "outputs": [{"name": "probability", "datatype": "FP32", "shape": [-1]}],
        "transforms": {"format": "quern.features/1", "n_features": 6, "columns": cols},
        "params": {"task": "binary", "classes": [0, 1]},
        "files": {"model.json": bs.blob(reg, open(path, "rb").read())}})
    for n in ROWS:
        x = test_rows(n)
        body = {"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [n, 6],
                            "data": [float(v) for v in x.ravel()]}]}
        with open(os.path.join(out, f"explain-{n}.body"), "w") as f:
            json.dump(body, f)


def python(out, n, seconds):
    b = xgb.Booster(model_file=os.path.join(out, "adult.json"))
    b.set_param({"nthread": 1})
    x = test_rows(n)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b.predict(xgb.DMatrix(x, nthread=1), pred_contribs=True)
        done += n
    print(f"{done / (time.perf_counter() - t0):.0f}")


def check(url, out, n):
    b = xgb.Booster(model_file=os.path.join(out, "adult.json"))
    x = test_rows(n)
    want = b.predict(xgb.DMatrix(x), pred_contribs=True)
    body = open(os.path.join(out, f"explain-{n}.body"), "rb").read()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        got = json.loads(r.read())
    c = np.array([t["values"] for t in got["contributions"]]).T
    diff = max(np.abs(c - want[:, :6]).max(), np.abs(np.array(got["bias"]) - want[:, 6]).max())
    print(f"{diff:.2e}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "setup":
        setup(sys.argv[2], sys.argv[3])
    elif cmd == "python":
        python(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    elif cmd == "check":
        check(sys.argv[2], sys.argv[3], int(sys.argv[4]))
