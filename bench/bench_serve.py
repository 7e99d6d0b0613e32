"""bench_serve.py - helpers of bench_serve.sh (run by /usr/bin/python3).

  setup REGISTRY_URL DIR   trains the Adult XGBoost model (100 trees, depth 6,
                           the 6 numeric Adult columns) with Python's xgboost,
                           writes a logistic bundle with fitted transforms and an
                           ALS model (20,000 users x 5,000 items x 64 factors),
                           registers all three and points production at them.
                           Writes DIR/adult.json (for the FastAPI baseline) and
                           DIR/{adult,lr}.body (one-row infer requests).
  FastAPI app: DIR/fastapi_app.py is written by setup; uvicorn serves it.
"""
import hashlib
import json
import os
import sys
import urllib.request

import numpy as np
import xgboost as xgb

NUMERIC = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
IDX = [0, 2, 4, 10, 11, 12]


def call(reg, method, path, body=None, raw=False):
    data = body if raw else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(reg + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        if e.code == 409:
            return None
        raise RuntimeError(f"{method} {path}: {e.code} {e.read()[:300]}")


def blob(reg, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    call(reg, "PUT", f"/v1/blobs/{d}", data, raw=True)
    return d


def register(reg, name, manifest):
    call(reg, "POST", "/v1/models", {"name": name})
    v = call(reg, "POST", f"/v1/models/{name}/versions", {"manifest": manifest})["version"]
    call(reg, "PUT", f"/v1/models/{name}/aliases/production", {"version": v})


def setup(reg, out):
    X, y = [], []
    with open(os.path.join(os.environ.get("QUERN_DATASETS", "build/datasets"), "adult.data")) as f:
        for line in f:
            p = [x.strip() for x in line.split(",")]
            if len(p) < 15:
                continue
            X.append([float(p[i]) for i in IDX])
            y.append(1 if p[14].startswith(">50K") else 0)
    X, y = np.array(X), np.array(y)
    b = xgb.train({"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "nthread": 2},
                  xgb.DMatrix(X, label=y), 100)
    path = os.path.join(out, "adult.json")
    b.save_model(path)
    inputs = [{"name": c, "datatype": "FP64", "shape": [-1]} for c in NUMERIC]
    outputs = [{"name": "probability", "datatype": "FP32", "shape": [-1]}]
    cols = [{"name": c, "type": "numeric", "steps": []} for c in NUMERIC]
    register(reg, "adult", {
        "format": "quern.model/1", "kind": "xgboost", "inputs": inputs, "outputs": outputs,
        "transforms": {"format": "quern.features/1", "n_features": 6, "columns": cols},
        "params": {"task": "binary", "classes": [0, 1]},
        "files": {"model.json": blob(reg, open(path, "rb").read())}})
    mean, std = X.mean(axis=0), X.std(axis=0)
    cols = [{"name": c, "type": "numeric",
             "steps": [{"op": "standardize", "mean": float(mean[i]), "std": float(std[i])}]}
            for i, c in enumerate(NUMERIC)]
    lin = {"format": "quern.linear/1", "kind": "logistic", "n_features": 6,
           "coef": [[0.5, 0.01, 0.8, 2.0, 0.3, 0.4]], "intercept": [-1.5], "classes": [0, 1]}
    register(reg, "lr", {
        "format": "quern.model/1", "kind": "logistic", "inputs": inputs, "outputs": outputs,
        "transforms": {"format": "quern.features/1", "n_features": 6, "columns": cols},
        "params": {"task": "binary", "classes": [0, 1]},
        "files": {"model.json": blob(reg, json.dumps(lin).encode())}})
    rng = np.random.default_rng(1)
    nu, ni, f = 20000, 5000, 64
    files = {}
    seen = [rng.choice(ni, 10, replace=False) for _ in range(nu)]
    arrays = {"user_factors.npy": rng.normal(0, 0.3, (nu, f)).astype(np.float32),
              "item_factors.npy": rng.normal(0, 0.3, (ni, f)).astype(np.float32),
              "popularity.npy": np.bincount(np.concatenate(seen), minlength=ni).astype(np.float32),
              "user_items_indptr.npy": np.arange(0, nu * 10 + 1, 10, dtype=np.int64),
              "user_items_indices.npy": np.sort(np.array(seen), axis=1).astype(np.int32).ravel()}
    for name, a in arrays.items():
        p = os.path.join(out, name)
        np.save(p, a)
        files[name] = blob(reg, open(p, "rb").read())
    files["user_ids.json"] = blob(reg, json.dumps([f"u{i}" for i in range(nu)]).encode())
    files["item_ids.json"] = blob(reg, json.dumps([f"i{i}" for i in range(ni)]).encode())
    register(reg, "recs", {
        "format": "quern.model/1", "kind": "als",
        "inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "item_id", "datatype": "BYTES", "shape": [-1, 10]},
                    {"name": "score", "datatype": "FP32", "shape": [-1, 10]}],
        "params": {"task": "ranking", "k": 10}, "files": files})
    row = [39, 77516, 13, 2174, 0, 40]
    body = {"inputs": [{"name": c, "datatype": "FP64", "shape": [1], "data": [row[i]]}
                       for i, c in enumerate(NUMERIC)]}
    for m in ("adult", "lr"):
        with open(os.path.join(out, f"{m}.body"), "w") as fh:
            json.dump(body, fh)
    with open(os.path.join(out, "fastapi_app.py"), "w") as fh:
        fh.write(FASTAPI_APP.replace("MODEL_PATH", path))


# The baseline the way people write it: FastAPI + pydantic parsing the same
# Open Inference Protocol body, xgboost predicting one row.
FASTAPI_APP = '''
from typing import Any, List, Optional
import numpy as np
import xgboost as xgb
from fastapi import FastAPI
from pydantic import BaseModel

NAMES = %r
booster = xgb.Booster()
booster.load_model("MODEL_PATH")
booster.set_param({"nthread": 1})
app = FastAPI()

class Tensor(BaseModel):
    name: str
    datatype: str
    shape: List[int]
    data: List[Any]

class InferRequest(BaseModel):
    id: Optional[str] = None
    inputs: List[Tensor]

@app.post("/v2/models/adult/infer")
def infer(rq: InferRequest):
    cols = {t.name: t.data for t in rq.inputs}
    X = np.array([cols[n] for n in NAMES], dtype=np.float32).T
    p = booster.predict(xgb.DMatrix(X))
    return {"model_name": "adult", "model_version": "1",
            "outputs": [{"name": "probability", "datatype": "FP32", "shape": [len(p)],
                         "data": p.tolist()}]}
''' % (NUMERIC,)

if __name__ == "__main__":
    if sys.argv[1] == "setup":
        setup(sys.argv[2], sys.argv[3])
