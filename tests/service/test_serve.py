"""test_serve.py - black-box tests of quern-serve beside a real quern-registry.

No training service: the test builds bundles itself and registers them over the
registry's API (blobs, versions, aliases):
  adult  XGBoost trained here with Python's xgboost on numeric Adult columns
         (two versions: 60 and 100 trees), files model.json, inputs declared,
  lr     a logistic model with fitted transforms (standardize + one-hot with an
         unknown bucket on the BYTES input "workclass"), written by hand in
         libquern-ml's formats, so the expected probability is computed here,
  recs   an ALS recommender written as .npy files with numpy.
Serve follows the production alias of each; the tests move aliases and kill
processes. Prediction logs are checked by reading the embedded bus's SQLite
file (read-only): the quern.predictions.logged events serve published.
Run by /usr/bin/python3 (numpy, xgboost).
"""
import concurrent.futures
import hashlib
import json
import math
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

import numpy as np
import xgboost as xgb

sys.path.insert(0, os.path.dirname(__file__))
from harness import WORK, Service  # noqa: E402

DATASETS = os.environ.get("QUERN_DATASETS", os.path.join(os.path.dirname(__file__),
                                                          "../../build/datasets"))
NUMERIC = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
ADULT_COLS = {"age": 0, "fnlwgt": 2, "education_num": 4, "capital_gain": 10, "capital_loss": 11,
              "hours_per_week": 12}


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def load_adult(path, limit):
    X, y, work = [], [], []
    with open(path) as f:
        for line in f:
            p = [x.strip() for x in line.split(",")]
            if len(p) < 15 or p[0].startswith("|"):
                continue
            X.append([float(p[ADULT_COLS[c]]) for c in NUMERIC])
            y.append(1 if p[14].startswith(">50K") else 0)
            work.append(p[1])
            if len(X) >= limit:
                break
    return np.array(X), np.array(y), work


class ServeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.home = tempfile.mkdtemp(prefix="quern-serve-home-", dir=WORK)
        cls.env = {"QUERN_HOME": cls.home}
        for d in ("registry", "serve"):
            os.makedirs(os.path.join(cls.home, d))
        cls.reg = Service("registry", data=os.path.join(cls.home, "registry"), env=cls.env).start()
        cls.X, cls.y, cls.work = load_adult(os.path.join(DATASETS, "adult.data"), 4000)
        cls.Xt, _, cls.work_t = load_adult(os.path.join(DATASETS, "adult.test"), 300)
        cls.boosters = {}
        for v, trees in ((1, 100), (2, 60)):
            b = xgb.train({"objective": "binary:logistic", "max_depth": 4, "eta": 0.2 + 0.1 * v,
                           "seed": v, "nthread": 1}, xgb.DMatrix(cls.X, label=cls.y), trees)
            path = os.path.join(cls.home, f"adult-{v}.json")
            b.save_model(path)
            cls.boosters[v] = b
            cls.register_adult(Path(path).read_bytes())
        cls.register_lr()
        cls.register_als()
        for m in ("adult", "lr", "recs"):
            cls.put_alias(m, 1)
        cls.serve_data = os.path.join(cls.home, "serve")
        cls.serve = cls.start_serve()

    @classmethod
    def tearDownClass(cls):
        for s in (getattr(cls, "serve", None), getattr(cls, "reg", None)):
            if s:
                s.stop()

    # ---- registering -------------------------------------------------------

    @classmethod
    def register(cls, model, manifest):
        cls.reg.request("POST", "/v1/models", {"name": model})
        st, _, body = cls.reg.request("POST", f"/v1/models/{model}/versions", {"manifest": manifest})
        assert st == 201, body
        return body["version"]

    @classmethod
    def put_alias(cls, model, version, alias="production"):
        st, _, body = cls.reg.request("PUT", f"/v1/models/{model}/aliases/{alias}",
                                      {"version": version})
        assert st == 200, body

    @classmethod
    def adult_manifest(cls, model_json, bare=False):
        m = {"format": "quern.model/1", "kind": "xgboost",
             "inputs": [{"name": c, "datatype": "FP64", "shape": [-1]} for c in NUMERIC],
             "outputs": [{"name": "probability", "datatype": "FP32", "shape": [-1]}],
             "files": {"model.json": cls.reg.put_blob(model_json)}}
        if not bare:
            # Pass-through transforms and the task, until libquern-ml accepts an
            # imported XGBoost manifest without them (test_python_xgboost_bare).
            m["transforms"] = {"format": "quern.features/1", "n_features": len(NUMERIC),
                               "columns": [{"name": c, "type": "numeric", "steps": []}
                                           for c in NUMERIC]}
            m["params"] = {"task": "binary", "classes": [0, 1]}
        return m

    @classmethod
    def register_adult(cls, model_json):
        return cls.register("adult", cls.adult_manifest(model_json))

    @classmethod
    def register_lr(cls):
        mean = cls.X.mean(axis=0)
        std = cls.X.std(axis=0)
        cls.lr_cats = ["Private", "Self-emp-not-inc", "Local-gov"]
        d = len(NUMERIC) + len(cls.lr_cats) + 1
        rng = np.random.default_rng(7)
        cls.lr_coef = rng.normal(0, 0.5, d)
        cls.lr_b = -0.3
        cls.lr_mean, cls.lr_std = mean, std
        cols = [{"name": c, "type": "numeric",
                 "steps": [{"op": "standardize", "mean": float(mean[i]), "std": float(std[i])}]}
                for i, c in enumerate(NUMERIC)]
        cols.append({"name": "workclass", "type": "categorical",
                     "steps": [{"op": "onehot", "categories": cls.lr_cats,
                                "max_categories": 0, "min_frequency": 0}]})
        model = {"format": "quern.linear/1", "kind": "logistic", "n_features": d,
                 "coef": [[float(x) for x in cls.lr_coef]], "intercept": [cls.lr_b],
                 "classes": [0, 1]}
        inputs = [{"name": c, "datatype": "FP64", "shape": [-1]} for c in NUMERIC]
        inputs.append({"name": "workclass", "datatype": "BYTES", "shape": [-1]})
        man = {"format": "quern.model/1", "kind": "logistic", "inputs": inputs,
               "outputs": [{"name": "probability", "datatype": "FP32", "shape": [-1]}],
               "transforms": {"format": "quern.features/1", "n_features": d, "columns": cols},
               "params": {"task": "binary", "classes": [0, 1]},
               "files": {"model.json": cls.reg.put_blob(json.dumps(model).encode())}}
        cls.register("lr", man)

    def lr_expect(self, row, work):
        z = (np.array(row) - self.lr_mean) / self.lr_std
        oh = [1.0 if work == c else 0.0 for c in self.lr_cats]
        oh.append(0.0 if work in self.lr_cats else 1.0)
        x = np.concatenate([z.astype(np.float32), np.array(oh, dtype=np.float32)])
        return 1 / (1 + math.exp(-(float(np.dot(self.lr_coef, x)) + self.lr_b)))

    @classmethod
    def register_als(cls):
        rng = np.random.default_rng(3)
        nu, ni, f = 20, 30, 4
        cls.uf = rng.normal(0, 1, (nu, f)).astype(np.float32)
        cls.itf = rng.normal(0, 1, (ni, f)).astype(np.float32)
        seen = [sorted(rng.choice(ni, 3, replace=False).tolist()) for _ in range(nu)]
        cls.seen = seen
        indptr = np.array([0] + list(np.cumsum([len(s) for s in seen])), dtype=np.int64)
        indices = np.array([i for s in seen for i in s], dtype=np.int32)
        pop = np.zeros(ni, dtype=np.float32)
        for i in indices:
            pop[i] += 1
        cls.pop = pop
        cls.users = [f"u{i}" for i in range(nu)]
        cls.items = [f"item-{i}" for i in range(ni)]
        files = {}
        d = os.path.join(cls.home, "als")
        os.makedirs(d, exist_ok=True)
        for name, arr in (("user_factors.npy", cls.uf), ("item_factors.npy", cls.itf),
                          ("popularity.npy", pop), ("user_items_indptr.npy", indptr),
                          ("user_items_indices.npy", indices)):
            p = os.path.join(d, name)
            np.save(p, arr)
            files[name] = cls.reg.put_blob(Path(p).read_bytes())
        files["user_ids.json"] = cls.reg.put_blob(json.dumps(cls.users).encode())
        files["item_ids.json"] = cls.reg.put_blob(json.dumps(cls.items).encode())
        man = {"format": "quern.model/1", "kind": "als",
               "inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [-1]}],
               "outputs": [{"name": "item_id", "datatype": "BYTES", "shape": [-1, 5]},
                           {"name": "score", "datatype": "FP32", "shape": [-1, 5]}],
               "params": {"task": "ranking", "k": 5}, "files": files}
        cls.register("recs", man)

    @classmethod
    def start_serve(cls, extra=()):
        s = Service("serve", data=cls.serve_data, env=cls.env,
                    args=["--models", "adult,lr,recs", "--poll-interval", "1s",
                          "--log-sample-rate", "1", "--grpc-listen", "127.0.0.1:0",
                          "--registry", f"http://127.0.0.1:{cls.reg.port}", *extra])
        return s.start(timeout=30)

    # ---- helpers ---------------------------------------------------------------

    def infer(self, model, inputs, path=None, **kw):
        body = {"inputs": inputs, **kw}
        return self.serve.request("POST", path or f"/v2/models/{model}/infer", body)

    def adult_inputs(self, rows, dt="FP64"):
        return [{"name": c, "datatype": dt, "shape": [len(rows)], "data": [r[i] for r in rows]}
                for i, c in enumerate(NUMERIC)]

    def assertOipError(self, resp, status, *needles):
        st, _, body = resp
        self.assertEqual(st, status, body)
        self.assertIsInstance(body, dict, body)
        self.assertIsInstance(body.get("error"), str, body)  # the protocol's own shape
        for n in needles:
            self.assertIn(n, body["error"])

    def wait_version(self, model, version, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            st, _, body = self.serve.request("GET", f"/v2/models/{model}")
            if st == 200 and body["versions"] == [str(version)]:
                return body
            time.sleep(0.05)
        self.fail(f"{model} did not reach version {version}: {body}")

    def metrics(self):
        st, _, body = self.serve.request("GET", "/metrics", raw=True)
        self.assertEqual(st, 200)
        return body.decode()

    # ---- the protocol's endpoints ----------------------------------------------

    def test_01_health_and_metadata(self):
        s = self.serve
        self.assertEqual(s.request("GET", "/v2/health/live")[0], 200)
        st, _, body = s.request("GET", "/v2/health/ready")
        self.assertEqual(st, 200)
        self.assertEqual(body["models"], {"adult": "1", "lr": "1", "recs": "1"})
        st, _, body = s.request("GET", "/v2")
        self.assertEqual((st, body["name"]), (200, "quern"))
        self.assertIn("version", body)
        self.assertIsInstance(body["extensions"], list)
        st, _, body = s.request("GET", "/v2/models/adult")
        self.assertEqual(st, 200)
        self.assertEqual(body["name"], "adult")
        self.assertEqual(body["versions"], ["1"])
        self.assertEqual(body["platform"], "quern-xgboost")
        self.assertEqual([i["name"] for i in body["inputs"]], NUMERIC)
        self.assertEqual(body["inputs"][0], {"name": "age", "datatype": "FP64", "shape": [-1]})
        self.assertEqual(body["outputs"], [{"name": "probability", "datatype": "FP32",
                                            "shape": [-1]}])
        self.assertEqual(body["quern"]["version"], "1")
        self.assertEqual(body["quern"]["state"], "ready")
        st, _, body = s.request("GET", "/v2/models/lr/versions/1")
        self.assertEqual(st, 200)
        self.assertEqual(body["inputs"][-1]["datatype"], "BYTES")
        self.assertEqual(s.request("GET", "/v2/models/adult/ready")[0], 200)
        self.assertEqual(s.request("GET", "/v2/models/adult/versions/1/ready")[0], 200)
        self.assertOipError(s.request("GET", "/v2/models/adult/versions/7"), 404, "7")
        self.assertOipError(s.request("GET", "/v2/models/adult/versions/7/ready"), 404, "7")
        self.assertOipError(s.request("GET", "/v2/models/nope"), 404, "nope")
        self.assertOipError(s.request("GET", "/v2/models/nope/ready"), 404, "nope")
        st, _, body = s.request("GET", "/v1/models")
        self.assertEqual(sorted(m["name"] for m in body["models"]), ["adult", "lr", "recs"])
        st, _, body = s.request("GET", "/readyz")
        self.assertEqual(st, 200)

    def test_02_xgboost_matches_python(self):
        rows = self.Xt[:200].tolist()
        st, h, body = self.infer("adult", self.adult_inputs(rows), id="req-1")
        self.assertEqual(st, 200, body)
        self.assertEqual(body["model_name"], "adult")
        self.assertEqual(body["model_version"], "1")
        self.assertEqual(body["id"], "req-1")
        self.assertEqual(h["x-quern-model-version"], "1")
        out = body["outputs"][0]
        self.assertEqual((out["name"], out["datatype"], out["shape"]), ("probability", "FP32",
                                                                        [200]))
        want = self.boosters[1].predict(xgb.DMatrix(np.array(rows, dtype=np.float32)))
        got = np.array(out["data"])
        self.assertLess(float(np.max(np.abs(got - want))), 1e-6)
        # the versioned route, [n,1] shapes and requested outputs
        inputs = self.adult_inputs(rows[:3])
        for t in inputs:
            t["shape"] = [3, 1]
        st, _, body = self.infer("adult", inputs, path="/v2/models/adult/versions/1/infer",
                                 outputs=[{"name": "probability"}])
        self.assertEqual(st, 200, body)
        self.assertLess(abs(body["outputs"][0]["data"][0] - float(want[0])), 1e-6)

    def test_03_transforms_and_bytes(self):
        rows = self.Xt[:20].tolist()
        inputs = self.adult_inputs(rows)
        work = self.work_t[:20]
        work[0] = "Never-seen-before"  # the unknown bucket
        inputs.append({"name": "workclass", "datatype": "BYTES", "shape": [20], "data": work})
        st, _, body = self.infer("lr", inputs)
        self.assertEqual(st, 200, body)
        for r in range(20):
            self.assertAlmostEqual(body["outputs"][0]["data"][r], self.lr_expect(rows[r], work[r]),
                                   delta=1e-5)

    def test_04_all_datatypes(self):
        row = [39, 77516, 13, 0, 0, 40]
        st, _, base = self.infer("adult", self.adult_inputs([row]))
        self.assertEqual(st, 200, base)
        p = base["outputs"][0]["data"][0]
        for dt in ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                   "FP32", "FP64"):
            inputs = self.adult_inputs([row])
            for t in inputs:
                if t["name"] in ("age", "education_num", "hours_per_week"):
                    t["datatype"] = dt
            st, _, body = self.infer("adult", inputs)
            self.assertEqual(st, 200, (dt, body))
            self.assertAlmostEqual(body["outputs"][0]["data"][0], p, delta=1e-7, msg=dt)
        inputs = self.adult_inputs([row])
        inputs[3] = {"name": "capital_gain", "datatype": "BOOL", "shape": [1], "data": [False]}
        st, _, body = self.infer("adult", inputs)
        self.assertEqual(st, 200, body)
        self.assertAlmostEqual(body["outputs"][0]["data"][0], p, delta=1e-7)
        # nested data is flattened row-major
        inputs = self.adult_inputs([row, row])
        inputs[0] = {"name": "age", "datatype": "FP64", "shape": [2, 1], "data": [[39], [39]]}
        st, _, body = self.infer("adult", inputs)
        self.assertEqual((st, body["outputs"][0]["shape"]), (200, [2]), body)
        # out-of-range integers are refused, naming the input
        inputs = self.adult_inputs([row])
        inputs[0]["datatype"] = "INT8"
        inputs[0]["data"] = [300]
        self.assertOipError(self.infer("adult", inputs), 400, "age", "INT8")
        # FP16: JSON refused with a clear message; raw (binary extension) accepted
        inputs = self.adult_inputs([row])
        inputs[0]["datatype"] = "FP16"
        self.assertOipError(self.infer("adult", inputs), 400, "age", "FP16", "binary")
        st, body = self.binary_infer("adult", row, fp16_age=True)
        self.assertEqual(st, 200, body)
        self.assertAlmostEqual(body["outputs"][0]["data"][0], p, delta=1e-7)

    def binary_infer(self, model, row, fp16_age=False, extra=None, raw_tensors=None):
        """Triton's binary tensor extension: JSON header, then raw tensors."""
        inputs, blobs = [], []
        for i, c in enumerate(NUMERIC):
            if c == "age" and fp16_age:
                raw, dt = struct.pack("<e", row[i]), "FP16"
            else:
                raw, dt = struct.pack("<d", row[i]), "FP64"
            if raw_tensors and c in raw_tensors:
                raw, dt = raw_tensors[c]
            inputs.append({"name": c, "datatype": dt, "shape": [1],
                           "parameters": {"binary_data_size": len(raw)}})
            blobs.append(raw)
        for t, raw in (extra or []):
            t["parameters"] = {"binary_data_size": len(raw)}
            inputs.append(t)
            blobs.append(raw)
        head = json.dumps({"inputs": inputs}).encode()
        st, _, body = self.serve.request(
            "POST", f"/v2/models/{model}/infer", body=head + b"".join(blobs),
            headers={"Inference-Header-Content-Length": str(len(head)),
                     "Content-Type": "application/octet-stream"})
        return st, body

    def test_05_bad_input(self):
        row = [39, 77516, 13, 0, 0, 40]
        # wrong datatype
        inputs = self.adult_inputs([row])
        inputs[1] = {"name": "fnlwgt", "datatype": "BYTES", "shape": [1], "data": ["x"]}
        self.assertOipError(self.infer("adult", inputs), 400, "fnlwgt", "BYTES", "FP64")
        inputs = self.adult_inputs([row])
        inputs[0]["datatype"] = "FP128"
        self.assertOipError(self.infer("adult", inputs), 400, "age", "FP128")
        # shape that does not match the data length
        inputs = self.adult_inputs([row])
        inputs[2]["shape"] = [3]
        self.assertOipError(self.infer("adult", inputs), 400, "education_num", "3", "1")
        inputs = self.adult_inputs([row])
        inputs[2]["shape"] = [1, 2]
        self.assertOipError(self.infer("adult", inputs), 400, "education_num")
        # batch sizes that disagree
        inputs = self.adult_inputs([row])
        inputs[5] = {"name": "hours_per_week", "datatype": "FP64", "shape": [2], "data": [1, 2]}
        self.assertOipError(self.infer("adult", inputs), 400, "hours_per_week", "rows")
        # unknown model or version
        self.assertOipError(self.infer("nope", self.adult_inputs([row])), 404, "nope")
        self.assertOipError(self.infer("adult", self.adult_inputs([row]),
                                       path="/v2/models/adult/versions/99/infer"), 404, "99")
        # missing input, unexpected input, unknown output
        inputs = self.adult_inputs([row])[1:]
        self.assertOipError(self.infer("adult", inputs), 400, "age", "missing")
        inputs = self.adult_inputs([row]) + [{"name": "agee", "datatype": "FP64", "shape": [1],
                                              "data": [1]}]
        self.assertOipError(self.infer("adult", inputs), 400, "agee")
        self.assertOipError(self.infer("adult", self.adult_inputs([row]),
                                       outputs=[{"name": "logits"}]), 400, "logits")
        # NaN where the model cannot take it: null in JSON, NaN raw
        inputs = self.adult_inputs([row])
        inputs[4]["data"] = [None]
        self.assertOipError(self.infer("lr", inputs + [{"name": "workclass", "datatype": "BYTES",
                                                        "shape": [1], "data": ["Private"]}]),
                            400, "capital_loss")
        st, body = self.binary_infer("adult", row,
                                     raw_tensors={"hours_per_week": (struct.pack("<d", math.nan),
                                                                     "FP64")})
        self.assertEqual(st, 400, body)
        self.assertIn("hours_per_week", body["error"])
        # BYTES with invalid UTF-8 where text is needed (raw and in the JSON text)
        w = b"\xff\xfeoops"
        st, body = self.binary_infer("lr", row, extra=[({"name": "workclass", "datatype": "BYTES",
                                                         "shape": [1]},
                                                        struct.pack("<I", len(w)) + w)])
        self.assertEqual(st, 400, body)
        self.assertIn("workclass", body["error"])
        self.assertIn("UTF-8", body["error"])
        head = json.dumps({"inputs": self.adult_inputs([row])})[:-2]
        bad = (head + ', {"name": "workclass", "datatype": "BYTES", "shape": [1], "data": ["').encode()
        bad += b"\xc3\x28" + b'"]}]}'
        st, _, body = self.serve.request("POST", "/v2/models/lr/infer", body=bad,
                                         headers={"Content-Type": "application/json"})
        self.assertEqual(st, 400, body)
        self.assertIn("workclass", body["error"])
        # not JSON, unknown fields, no inputs
        st, _, body = self.serve.request("POST", "/v2/models/adult/infer", body=b"{",
                                         headers={"Content-Type": "application/json"})
        self.assertOipError((st, _, body), 400, "JSON")
        self.assertOipError(self.serve.request("POST", "/v2/models/adult/infer",
                                               {"inputs": [], "x": 1}), 400, "x")
        self.assertOipError(self.serve.request("POST", "/v2/models/adult/infer", {"inputs": []}),
                            400, "inputs")
        # a 100 MB body: 413 in the protocol's shape
        big = b'{"inputs":[{"name":"age","datatype":"BYTES","shape":[1],"data":["' + \
            b"a" * (100 * 1024 * 1024) + b'"]}]}'
        try:
            st, _, body = self.serve.request("POST", "/v2/models/adult/infer", body=big,
                                             headers={"Content-Type": "application/json"})
            self.assertOipError((st, _, body), 413)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close before reading it all; the answer was still a 413
        # a BYTES model input fed numbers
        inputs = self.adult_inputs([row]) + [{"name": "workclass", "datatype": "INT32",
                                              "shape": [1], "data": [3]}]
        self.assertOipError(self.infer("lr", inputs), 400, "workclass", "BYTES")

    def test_06_recommendations(self):
        s = self.serve
        st, h, body = s.request("GET", "/v1/models/recs/recommend?user=u3&k=4")
        self.assertEqual(st, 200, body)
        self.assertEqual((body["model"], body["version"], body["user"], body["fallback"]),
                         ("recs", "1", "u3", False))
        scores = self.itf @ self.uf[3]
        want = [self.items[i] for i in np.argsort(-scores)[:4]]
        self.assertEqual([x["item"] for x in body["items"]], want)
        self.assertAlmostEqual(body["items"][0]["score"], float(np.max(scores)), places=4)
        st, _, body = s.request("GET", "/v1/models/recs/recommend?user=u3&k=4&exclude_seen=true")
        self.assertEqual(st, 200, body)
        seen = {self.items[i] for i in self.seen[3]}
        self.assertFalse(seen & {x["item"] for x in body["items"]})
        st, _, body = s.request("GET", "/v1/models/recs/recommend?user=stranger&k=3")
        self.assertEqual(st, 200, body)
        self.assertTrue(body["fallback"])
        self.assertEqual(body["items"][0]["item"], self.items[int(np.argmax(self.pop))])
        st, _, body = s.request("GET", "/v1/models/recs/similar?item=item-2&k=3")
        self.assertEqual(st, 200, body)
        n = self.itf / np.linalg.norm(self.itf, axis=1, keepdims=True)
        sim = n @ n[2]
        sim[2] = -9
        self.assertEqual(body["items"][0]["item"], self.items[int(np.argmax(sim))])
        self.assertError(s.request("GET", "/v1/models/recs/similar?item=nope"), 404, "not_found",
                         "nope")
        self.assertError(s.request("GET", "/v1/models/recs/recommend"), 400, "invalid_argument",
                         "user")
        self.assertError(s.request("GET", "/v1/models/recs/recommend?user=u1&k=0"), 400,
                         "invalid_argument", "k")
        self.assertError(s.request("GET", "/v1/models/adult/recommend?user=u1"), 400,
                         "failed_precondition", "ALS")
        self.assertError(s.request("GET", "/v1/models/zzz/recommend?user=u1"), 404, "not_found")
        # through infer
        st, _, body = self.infer("recs", [{"name": "user_id", "datatype": "BYTES", "shape": [2],
                                           "data": ["u3", "stranger"]}], parameters={"k": 4})
        self.assertEqual(st, 200, body)
        outs = {o["name"]: o for o in body["outputs"]}
        self.assertEqual(outs["item_id"]["shape"], [2, 4])
        self.assertEqual(outs["item_id"]["data"][:4], want)
        self.assertEqual(outs["score"]["datatype"], "FP32")
        self.assertEqual(outs["fallback"]["data"], [False, True])
        self.assertOipError(self.infer("recs", [{"name": "user_id", "datatype": "BYTES",
                                                 "shape": [1], "data": ["u1"]}],
                                       parameters={"k": 0}), 400, "k")

    # ---- bad input: always a 4xx with a message, never a 5xx, serve stays up -------

    def vm_peak_kb(self):
        with open(f"/proc/{self.serve.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmPeak:"):
                    return int(line.split()[1])
        return 0

    def bad_cases(self):
        """(label, method, path, body bytes or JSON or None, headers, status, needles)."""
        row = [39, 77516, 13, 0, 0, 40]
        J = {"Content-Type": "application/json"}
        inf = "/v2/models/adult/infer"
        good = self.adult_inputs([row])

        def with_input(i, **kw):
            ins = self.adult_inputs([row])
            ins[i] = dict(ins[i], **kw)
            return {"inputs": ins}

        def raw_json(text):
            return text if isinstance(text, bytes) else text.encode()

        def binary(inputs, blob, hcl=None, ctype="application/octet-stream"):
            head = json.dumps({"inputs": inputs}).encode()
            return (head + blob, {"Inference-Header-Content-Length":
                                  str(len(head)) if hcl is None else hcl,
                                  "Content-Type": ctype})

        def bin_inputs(sizes, dt="FP64", shape=(1,)):
            return [{"name": c, "datatype": dt, "shape": list(shape),
                     "parameters": {"binary_data_size": n}} for c, n in zip(NUMERIC, sizes)]

        eight = b"\0" * 8
        work_bytes = lambda blob, shape, size=None: binary(
            bin_inputs([8] * 6) + [{"name": "workclass", "datatype": "BYTES", "shape": shape,
                                    "parameters": {"binary_data_size":
                                                   len(blob) if size is None else size}}],
            eight * 6 + blob)
        pre = struct.pack
        cases = []

        def add(label, body, status, *needles, path=inf, method="POST", headers=None):
            cases.append((label, method, path, body, headers, status, needles))

        # invalid UTF-8 where the message would echo it (name, id, outputs, params)
        add("utf8 input name", raw_json(b'{"inputs":[{"name":"ag\xffe","datatype":"FP64",'
                                        b'"shape":[1],"data":[1]}]}'), 400, headers=J)
        add("utf8 input name, valid data after", raw_json(
            json.dumps({"inputs": good})[:-2].encode() +
            b', {"name": "w\xc3\x28", "datatype": "FP64", "shape": [1], "data": [1]}]}'),
            400, headers=J)
        add("utf8 id", raw_json(b'{"id":"r\xfe","inputs":' + json.dumps(good).encode() + b"}"),
            400, headers=J)
        add("utf8 output name", raw_json(b'{"inputs":' + json.dumps(good).encode() +
                                         b',"outputs":[{"name":"p\x80"}]}'), 400, headers=J)
        add("utf8 parameter key", raw_json(b'{"parameters":{"k\xff":1},"inputs":' +
                                           json.dumps(good).encode() + b"}"), 400, headers=J)
        add("utf8 cut at the end", raw_json(b'{"inputs":[{"name":"\xe2\x82'), 400, headers=J)
        add("valid multibyte unknown input", with_input(0, name="\u00e2ge\u20ac"), 400,
            "\u00e2ge\u20ac")
        # shapes: empty, negative, zero, huge, overflowing, too many dims, not integers
        add("shape []", with_input(0, shape=[]), 400, "age", "shape")
        add("shape [-1]", with_input(0, shape=[-1]), 400, "age", "shape")
        add("shape [1.5]", with_input(0, shape=[1.5]), 400, "age", "shape")
        add("shape ['1']", with_input(0, shape=["1"]), 400, "age", "shape")
        add("shape [2**40]", with_input(0, shape=[2 ** 40]), 400, "age")
        add("shape [2**62, 2**62]", with_input(0, shape=[2 ** 62, 2 ** 62]), 400, "age")
        add("shape 9 dims", with_input(0, shape=[1] * 9, data=[1]), 400, "age")
        add("shape [0] vs data [1]", with_input(0, shape=[0]), 400, "age")
        add("shape [1,0]", with_input(0, shape=[1, 0], data=[]), 400, "age")
        add("shape [64M] data [1] FP64", with_input(0, shape=[64 * 1024 * 1024]), 400, "age")
        add("shape [64M] data [1] BYTES", with_input(0, shape=[64 * 1024 * 1024],
                                                     datatype="BYTES", data=["a"]), 400, "age")
        add("data nested 9 deep", with_input(0, data=[[[[[[[[[1]]]]]]]]]), 400, "age")
        add("data more than shape", with_input(0, data=[1, 2]), 400, "age")
        # datatypes against data and against the model
        add("BOOL given 1", with_input(0, datatype="BOOL", data=[1]), 400, "age", "BOOL")
        add("INT32 given 1.5", with_input(0, datatype="INT32", data=[1.5]), 400, "age")
        add("UINT8 given -1", with_input(0, datatype="UINT8", data=[-1]), 400, "age")
        add("INT64 given 2**63", raw_json(json.dumps({"inputs": good}).replace(
            '"data": [39]', '"data": [9223372036854775808]')), 400, headers=J)
        add("FP64 given text", with_input(0, data=["x"]), 400, "age")
        add("FP64 given object", with_input(0, data=[{"a": 1}]), 400, "age")
        add("BYTES given number", with_input(0, datatype="BYTES", data=[1]), 400, "age")
        add("datatype lowercase", with_input(0, datatype="fp64"), 400, "age", "fp64")
        add("datatype not a string", with_input(0, datatype=64), 400, "age")
        add("no data, no binary", {"inputs": [{"name": "age", "datatype": "FP64",
                                               "shape": [1]}] + good[1:]}, 400, "age")
        add("input not an object", {"inputs": [1]}, 400, "inputs[0]")
        add("input without name", {"inputs": [{"datatype": "FP64"}]}, 400, "inputs[0]")
        add("input name not a string", {"inputs": [{"name": 7}]}, 400, "inputs[0]")
        add("input unknown key", with_input(0, colour="red"), 400, "age", "colour")
        add("inputs an object", {"inputs": {"age": 1}}, 400, "inputs")
        add("257 inputs", {"inputs": [good[0]] * 257}, 400, "inputs")
        add("input twice", {"inputs": good + [good[0]]}, 400, "age", "twice")
        # outputs, id, parameters, top level
        add("outputs not a list", {"inputs": good, "outputs": {"name": "p"}}, 400, "outputs")
        add("output without name", {"inputs": good, "outputs": [{}]}, 400, "outputs[0]")
        add("output name a number", {"inputs": good, "outputs": [{"name": 1}]}, 400, "outputs[0]")
        add("65 outputs", {"inputs": good, "outputs": [{"name": "probability"}] * 65}, 400,
            "outputs")
        add("unknown output", {"inputs": good, "outputs": [{"name": "logits"}]}, 400, "logits")
        add("id a number", {"inputs": good, "id": 5}, 400, "id")
        add("id 257 bytes", {"inputs": good, "id": "x" * 257}, 400, "id")
        add("parameters a list", {"inputs": good, "parameters": [1]}, 400, "parameters")
        add("input parameters a list", with_input(0, parameters=[1]), 400, "age")
        add("body a list", raw_json("[1]"), 400, headers=J)
        add("body null", raw_json("null"), 400, headers=J)
        add("body empty", b"", 400, headers=J)
        add("duplicate keys", raw_json('{"inputs":[],"inputs":[]}'), 400, headers=J)
        add("NUL in a name", raw_json('{"inputs":[{"name":"a\\u0000b","datatype":"FP64",'
                                      '"shape":[1],"data":[1]}]}'), 400, headers=J)
        add("lone surrogate escape", raw_json('{"inputs":[{"name":"\\ud800","datatype":"FP64",'
                                              '"shape":[1],"data":[1]}]}'), 400, headers=J)
        # Triton's binary tensor extension
        b, h = binary(bin_inputs([8] * 6), eight * 6 + b"x")
        add("binary: one byte after the last tensor", b, 400, "after the last binary tensor",
            headers=h)
        b, h = binary(bin_inputs([8] * 6), eight * 7)
        add("binary: a tensor's worth after", b, 400, "8 bytes after", headers=h)
        b, h = binary(good, eight)
        add("binary: JSON data and trailing bytes", b, 400, "after the last", headers=h)
        b, h = binary(bin_inputs([8] * 6), eight * 5 + b"\0" * 7)
        add("binary: one byte short", b, 400, "hours_per_week", headers=h)
        b, h = binary(bin_inputs([8] * 5 + [16]), eight * 7)
        add("binary: size over the shape", b, 400, "hours_per_week", headers=h)
        b, h = binary(bin_inputs([8] * 5 + [-8]), eight * 6)
        add("binary: negative size", b, 400, "hours_per_week", headers=h)
        b, h = binary(bin_inputs([8] * 5 + ["8"]), eight * 6)
        add("binary: size as text", b, 400, "hours_per_week", headers=h)
        b, h = binary(bin_inputs([8] * 6), eight * 6, hcl="100000")
        add("binary: header length past the body", b, 400, "Inference-Header-Content-Length",
            headers=h)
        b, h = binary(bin_inputs([8] * 6), eight * 6, hcl="12x")
        add("binary: header length not a number", b, 400, "Inference-Header-Content-Length",
            headers=h)
        b, h = binary(bin_inputs([8] * 6), eight * 6, hcl="0")
        add("binary: header length 0", b, 400, headers=h)
        b, h = binary(bin_inputs([8] * 6), eight * 6, hcl="-1")
        add("binary: header length negative", b, 400, headers=h)
        b, h = work_bytes(pre("<I", 100) + b"abc", [1])
        add("binary BYTES: length past the data", b, 400, "workclass", path="/v2/models/lr/infer",
            headers=h)
        b, h = work_bytes(b"\1\0", [1])
        add("binary BYTES: truncated length", b, 400, "workclass", path="/v2/models/lr/infer",
            headers=h)
        b, h = work_bytes(pre("<I", 1) + b"a" + pre("<I", 1) + b"b", [1])
        add("binary BYTES: more elements than the shape", b, 400, "workclass",
            path="/v2/models/lr/infer", headers=h)
        b, h = work_bytes(pre("<I", 1) + b"a", [2])
        add("binary BYTES: too few bytes for the shape", b, 400, "workclass",
            path="/v2/models/lr/infer", headers=h)
        b, h = work_bytes(pre("<I", 5) + b"abcde", [2])
        add("binary BYTES: fewer elements than the shape", b, 400, "workclass",
            "elements", path="/v2/models/lr/infer", headers=h)
        b, h = work_bytes(pre("<I", 1) + b"a", [2 ** 40])
        add("binary BYTES: huge shape", b, 400, "workclass", path="/v2/models/lr/infer",
            headers=h)
        b, h = work_bytes(pre("<I", 2) + b"\xff\xfe", [1])
        add("binary BYTES: not UTF-8", b, 400, "workclass", "UTF-8",
            path="/v2/models/lr/infer", headers=h)
        b, h = binary(bin_inputs([8] * 6), eight * 6, hcl="1\xff")
        add("binary: header length not UTF-8", b, 400, headers=h)
        # recommendations: k, user, exclude_seen; infer parameters
        rec = "/v1/models/recs/recommend"
        for q, needle in (("user=u1&k=0", "k"), ("user=u1&k=-1", "k"), ("user=u1&k=abc", "k"),
                          ("user=u1&k=1001", "k"), ("user=u1&k=99999999999999999999", "k"),
                          ("user=u1&k=1.5", "k"), ("user=u1&k=", "k"),
                          ("user=" + "a" * 300, "user"), ("user=", "user"),
                          ("user=u1&exclude_seen=maybe", "exclude_seen"),
                          ("user=u1&exclude_seen=1", "exclude_seen"),
                          ("user=u%FF1", "user"), ("user=%C3%28", "user")):
            add(f"recommend ?{q}", None, 400, needle, method="GET", path=f"{rec}?{q}")
        add("similar with exclude_seen", None, 400, "exclude_seen", method="GET",
            path="/v1/models/recs/similar?item=item-1&exclude_seen=true")
        add("similar item not UTF-8", None, 400, "item", method="GET",
            path="/v1/models/recs/similar?item=%FE")
        add("recommend on a tabular model", None, 400, "ALS", method="GET",
            path="/v1/models/adult/recommend?user=u1")
        recs = "/v2/models/recs/infer"
        uid = [{"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["u1"]}]
        for k in (0, -5, 1001, 10 ** 12, 1.5, "abc", "", [3], None, True):
            add(f"recs infer k={k!r}", {"inputs": uid, "parameters": {"k": k}}, 400, "k",
                path=recs)
        add("recs infer exclude_seen=yes", {"inputs": uid, "parameters": {"exclude_seen": "yes"}},
            400, "exclude_seen", path=recs)
        add("recs infer FP32 user", {"inputs": [{"name": "user_id", "datatype": "FP32",
                                                 "shape": [1], "data": [1]}]}, 400, "user_id",
            path=recs)
        add("recs infer two inputs", {"inputs": uid + [dict(uid[0], name="item_id")]}, 400,
            path=recs)
        add("recs infer no known input", {"inputs": [dict(uid[0], name="who")]}, 400, "user_id",
            path=recs)
        add("recs infer 1001 rows", {"inputs": [{"name": "user_id", "datatype": "BYTES",
                                                 "shape": [1001], "data": ["u1"] * 1001}]},
            400, "user_id", path=recs)
        add("recs infer [1,2] shape", {"inputs": [{"name": "user_id", "datatype": "BYTES",
                                                   "shape": [1, 2], "data": ["u1", "u2"]}]},
            400, "user_id", path=recs)
        add("recs infer item_id with exclude_seen",
            {"inputs": [dict(uid[0], name="item_id", data=["item-1"])],
             "parameters": {"exclude_seen": True}}, 400, "exclude_seen", path=recs)
        add("recs infer unknown output", {"inputs": uid, "outputs": [{"name": "nope"}]}, 400,
            "nope", path=recs)
        # paths with bytes that are not UTF-8
        for path, method in (("/v2/models/%FF", "GET"), ("/v2/models/%FF/ready", "GET"),
                             ("/v2/models/adult/versions/%FF", "GET"),
                             ("/v2/models/%FF/infer", "POST"),
                             ("/v1/models/%FF/recommend?user=u1", "GET")):
            add(f"{method} {path}", {"inputs": good} if method == "POST" else None, None,
                method=method, path=path)
        return cases

    def test_08_bad_input_battery(self):
        """Every case is a 4xx (or the status given) with a JSON message that is
        valid UTF-8 and names what to fix; serve answers a good request after each."""
        row = [39, 77516, 13, 0, 0, 40]
        peak0 = self.vm_peak_kb()
        cases = self.bad_cases()
        failures = []
        for label, method, path, body, headers, status, needles in cases:
            try:
                st, h, raw = self.serve.request(method, path, body=body, headers=headers,
                                                raw=True)
                text = raw.decode("utf-8")  # raises on invalid UTF-8
                doc = json.loads(text)
                err = doc.get("error")
                msg = err if isinstance(err, str) else (err or {}).get("message")
                if status is None:
                    ok = 400 <= st < 500
                else:
                    ok = st == status
                if not ok or not isinstance(msg, str) or not msg:
                    failures.append((label, st, text[:300]))
                    continue
                for n in needles:
                    if n not in msg:
                        failures.append((label, st, f"{n!r} not in {msg!r}"))
            except Exception as e:  # noqa: BLE001 - collect, then report them all
                failures.append((label, "exception", repr(e)))
            if self.serve.proc.poll() is not None:
                self.fail(f"serve died on {label}: {failures[-1:]}\n{self.serve.log()[-3000:]}")
        self.maxDiff = None
        self.assertEqual(failures, [], f"{len(failures)} of {len(cases)} cases failed")
        self.assertGreater(len(cases), 100)
        st, _, body = self.infer("adult", self.adult_inputs([row]))
        self.assertEqual(st, 200, body)
        # the huge shapes with one value were refused before their memory was taken
        self.assertLess(self.vm_peak_kb() - peak0, 400 * 1024, "VmPeak grew by over 400 MiB")
        self.assertNotIn('"internal error"', self.serve.log())

    def assertError(self, resp, status, code, *needles):
        st, _, body = resp
        self.assertEqual(st, status, body)
        self.assertEqual(body["error"]["code"], code, body)
        for n in needles:
            self.assertIn(n, body["error"]["message"])

    def test_07_traceparent(self):
        row = [39, 77516, 13, 0, 0, 40]
        st, _, body = self.serve.request(
            "POST", "/v2/models/adult/infer", {"inputs": self.adult_inputs([row])},
            headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
        self.assertEqual(st, 200, body)

    # ---- hot swap, refusal, logs ---------------------------------------------------

    def test_10_hot_swap_under_load(self):
        rows = self.Xt[:4].tolist()
        inputs = self.adult_inputs(rows)
        want = {v: self.boosters[v].predict(xgb.DMatrix(np.array(rows, dtype=np.float32)))
                for v in (1, 2)}
        stop = threading.Event()
        failures, seen, count = [], set(), [0]
        lock = threading.Lock()
        flip_log = []  # (time the alias moved, version)

        def client():
            import http.client
            conn = http.client.HTTPConnection("127.0.0.1", self.serve.port, timeout=30)
            body = json.dumps({"inputs": inputs})
            while not stop.is_set():
                try:
                    conn.request("POST", "/v2/models/adult/infer", body=body,
                                 headers={"Content-Type": "application/json"})
                    r = conn.getresponse()
                    data = json.loads(r.read())
                    t = time.time()
                except Exception as e:  # noqa: BLE001
                    with lock:
                        failures.append(repr(e))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.serve.port, timeout=30)
                    continue
                with lock:
                    count[0] += 1
                    if r.status != 200:
                        failures.append((r.status, data))
                        continue
                    v = int(data["model_version"])
                    seen.add((t, v))
                    got = np.array(data["outputs"][0]["data"])
                    if v not in want or np.max(np.abs(got - want[v])) > 1e-6:
                        failures.append(("wrong prediction for version", v))

        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        try:
            for i in range(6):
                v = 2 if i % 2 == 0 else 1
                self.put_alias("adult", v)
                self.wait_version("adult", v)
                flip_log.append((time.time(), v))
                time.sleep(0.4)
            while count[0] < 2000:
                time.sleep(0.1)
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(failures, [])
        self.assertGreaterEqual(count[0], 2000)
        self.assertEqual({v for _, v in seen}, {1, 2})
        # once a flip has settled (serve reports it), responses name the new version
        for i, (t0, v) in enumerate(flip_log):
            t1 = flip_log[i + 1][0] if i + 1 < len(flip_log) else float("inf")
            late = [sv for (t, sv) in seen if t0 + 0.05 < t < t1 - 0.5]
            self.assertTrue(all(sv == v for sv in late), (i, v, set(late)))
        m = self.metrics()
        self.assertRegex(m, r'quern_model_swaps_total\{service="serve",model="adult"\} ([7-9]|\d\d)')
        self.assertIn('quern_model_info{service="serve",model="adult",version="1",alias="production"} 1', m)

    def test_11_bad_version_refused(self):
        self.put_alias("adult", 1)
        self.wait_version("adult", 1)
        man = self.adult_manifest(b'{"learner": "this is not an xgboost model"}')
        bad = self.register("adult", man)
        self.put_alias("adult", bad)
        deadline = time.time() + 20
        while time.time() < deadline:
            st, _, body = self.serve.request("GET", "/v2/models/adult")
            ref = body["quern"].get("last_refusal")
            if ref and ref["version"] == bad:
                break
            time.sleep(0.05)
        self.assertEqual(body["versions"], ["1"])
        self.assertEqual(ref["reason"], "load")
        self.assertIn("model.json", ref["message"])
        st, _, body = self.infer("adult", self.adult_inputs([[39, 77516, 13, 0, 0, 40]]))
        self.assertEqual((st, body["model_version"]), (200, "1"))
        self.assertIn('quern_model_refusals_total{service="serve",model="adult",reason="load"} 1',
                      self.metrics())
        self.assertFalse(os.path.exists(os.path.join(self.serve_data, "cache", "adult", str(bad))))
        self.put_alias("adult", 1)

    def test_12_prediction_logs_reach_the_bus(self):
        row = [39, 77516, 13, 0, 0, 40]
        for _ in range(5):
            self.infer("adult", self.adult_inputs([row]), id="logged-req")
        deadline = time.time() + 15
        events = []
        while time.time() < deadline:
            db = sqlite3.connect(f"file:{os.path.join(self.home, 'bus.db')}?mode=ro", uri=True)
            try:
                events = [json.loads(b) for (b,) in db.execute(
                    "SELECT body FROM bus_messages WHERE topic = 'quern.predictions.logged'")]
            finally:
                db.close()
            preds = [p for e in events for p in e["data"]["predictions"]
                     if p["request_id"] == "logged-req"]
            if len(preds) >= 5:
                break
            time.sleep(0.2)
        self.assertGreaterEqual(len(preds), 5)
        ev = next(e for e in events if any(p["request_id"] == "logged-req"
                                           for p in e["data"]["predictions"]))
        self.assertEqual(ev["source"], "quern-serve")
        self.assertEqual(ev["data"]["model"], "adult")
        self.assertEqual(preds[0]["features"]["age"], 39)
        self.assertIsInstance(preds[0]["prediction"], float)
        m = self.metrics()
        self.assertRegex(m, r"quern_prediction_log_sent_total\{service=\"serve\"\} [1-9]")
        self.assertIn("quern_prediction_log_dropped_total", m)

    def test_13_metrics_promtool_clean(self):
        text = self.metrics()
        self.assertIn('quern_inference_requests_total{service="serve",model="adult",version="1",'
                      'protocol="rest"}', text)
        if shutil.which("promtool"):
            p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                               capture_output=True)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_20_python_xgboost_bare_manifest(self):
        """A Python-trained XGBoost JSON registered as is: kind xgboost, inputs
        declared, no transforms, no params (what `quern models import` will do)."""
        man = self.adult_manifest(Path(self.home, "adult-1.json").read_bytes(),
                                  bare=True)
        self.register("bare", man)
        self.put_alias("bare", 1)
        s = Service("serve", env=self.env,
                    args=["--models", "bare", "--grpc-listen", "off",
                          "--registry", f"http://127.0.0.1:{self.reg.port}"])
        s.start(timeout=20)
        try:
            st, _, meta = s.request("GET", "/v2/models/bare")
            self.assertEqual(st, 200, meta)
            rows = self.Xt[:50].tolist()
            st, _, body = s.request("POST", "/v2/models/bare/infer",
                                    {"inputs": self.adult_inputs(rows)})
            self.assertEqual(st, 200, body)
            want = self.boosters[1].predict(xgb.DMatrix(np.array(rows, dtype=np.float32)))
            self.assertLess(float(np.max(np.abs(np.array(body["outputs"][0]["data"]) - want))),
                            1e-6)
        finally:
            s.stop()

    def test_21_dynamic_batching(self):
        """--batching: concurrent small requests share predictions and each gets
        its own rows back (equal to Python xgboost's); a request whose value
        the model refuses (an infinity, sent raw) fails alone with a 400 while
        the requests batched with it succeed."""
        s = Service("serve", env=self.env,
                    args=["--models", "adult", "--grpc-listen", "off", "--batching",
                          "adult:8:3000", "--registry", f"http://127.0.0.1:{self.reg.port}"])
        s.start(timeout=30)
        rows = self.Xt[:120].tolist()
        want = self.boosters[1].predict(xgb.DMatrix(np.array(rows, dtype=np.float32)))
        errors = []

        def bad_request():
            inputs, blobs = [], []
            for i, c in enumerate(NUMERIC):
                inputs.append({"name": c, "datatype": "FP64", "shape": [1],
                               "parameters": {"binary_data_size": 8}})
                blobs.append(struct.pack("<d", math.inf if c == "age" else rows[0][i]))
            head = json.dumps({"inputs": inputs}).encode()
            st, _, body = s.request("POST", "/v2/models/adult/infer", body=head + b"".join(blobs),
                                    headers={"Inference-Header-Content-Length": str(len(head))})
            if st != 400 or "age" not in body.get("error", ""):
                errors.append(("bad", st, body))

        def work(k):
            try:
                for j in range(15):
                    if k == 0 and j % 5 == 0:
                        bad_request()
                    lo = (k * 15 + j) % 118
                    n = 1 + (j % 3)
                    st, _, body = s.request("POST", "/v2/models/adult/infer",
                                            {"inputs": self.adult_inputs(rows[lo:lo + n])})
                    if st != 200:
                        errors.append((k, j, st, body))
                        continue
                    got = np.array(body["outputs"][0]["data"])
                    if got.shape != (n,) or float(np.max(np.abs(got - want[lo:lo + n]))) > 1e-6:
                        errors.append((k, j, got.tolist(), want[lo:lo + n].tolist()))
            except Exception as e:  # noqa: BLE001 - report, don't hide
                errors.append(repr(e))

        try:
            ts = [threading.Thread(target=work, args=(k,)) for k in range(8)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            self.assertEqual(errors, [])
        finally:
            self.assertEqual(s.stop(), 0)
        self.assertIn('"dynamic batching"', s.log())

    # ---- the token on REST and gRPC ------------------------------------------------

    @classmethod
    def grpc_stubs(cls):
        """grpcio stubs generated from proto/ (once per run)."""
        if not hasattr(cls, "_pb"):
            import grpc  # noqa: F401 - /usr/bin/python3 has python3-grpcio
            proto = os.path.join(os.path.dirname(__file__), "../../proto")
            out = tempfile.mkdtemp(prefix="grpc_stubs_", dir=WORK)
            subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", proto,
                            "--python_out", out, "--grpc_python_out", out,
                            os.path.join(proto, "grpc_service.proto"),
                            os.path.join(proto, "health.proto")], check=True)
            sys.path.insert(0, out)
            import grpc_service_pb2
            import grpc_service_pb2_grpc
            import health_pb2
            import health_pb2_grpc
            cls._pb = (grpc_service_pb2, grpc_service_pb2_grpc, health_pb2, health_pb2_grpc)
        return cls._pb

    @staticmethod
    def grpc_port(svc):
        for line in svc.log().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("msg") == "grpc listening":
                port = ev["port"]
        return port

    def check_token_rules(self, svc, token, auth_reads):
        import grpc
        pb, pbg, hpb, hpbg = self.grpc_stubs()
        row = [39, 77516, 13, 0, 0, 40]
        good = {"Authorization": f"Bearer {token}"}
        wrong = {"Authorization": "Bearer not-the-token"}
        body = {"inputs": self.adult_inputs([row])}
        # REST: infer always needs the token; probes never; reads with --auth-reads
        inf = "/v2/models/adult/infer"
        self.assertOipError(svc.request("POST", inf, body), 401, "Bearer")
        self.assertOipError(svc.request("POST", inf, body, headers=wrong), 401, "token")
        st, _, out = svc.request("POST", inf, body, headers=good)
        self.assertEqual(st, 200, out)
        for path in ("/v2/health/live", "/v2/health/ready", "/healthz", "/readyz"):
            self.assertEqual(svc.request("GET", path)[0], 200, path)
        for path in ("/v2", "/v2/models/adult", "/v2/models/adult/ready", "/v1/models"):
            self.assertEqual(svc.request("GET", path)[0], 401 if auth_reads else 200, path)
            self.assertEqual(svc.request("GET", path, headers=good)[0], 200, path)
        # gRPC: the same rules
        ch = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port(svc)}")
        try:
            stub, health = pbg.GRPCInferenceServiceStub(ch), hpbg.HealthStub(ch)
            rq = pb.ModelInferRequest(model_name="adult")
            for i, c in enumerate(NUMERIC):
                rq.inputs.add(name=c, datatype="FP64", shape=[1]).contents.fp64_contents.append(
                    float(row[i]))
            md = [("authorization", f"Bearer {token}")]

            def code_of(call, req, metadata=None):
                try:
                    call(req, timeout=20, metadata=metadata)
                    return grpc.StatusCode.OK
                except grpc.RpcError as e:
                    if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                        self.assertTrue(e.details(), "UNAUTHENTICATED without a message")
                    return e.code()

            U, OK = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.OK
            self.assertEqual(code_of(stub.ModelInfer, rq), U)
            self.assertEqual(code_of(stub.ModelInfer, rq, [("authorization", "Bearer x")]), U)
            r = stub.ModelInfer(rq, timeout=20, metadata=md)
            self.assertAlmostEqual(r.outputs[0].contents.fp32_contents[0],
                                   out["outputs"][0]["data"][0], places=6)
            # no id given: each answer carries the one serve made (and logs under)
            self.assertEqual((len(r.id), len(out["id"])), (36, 36), (r.id, out.get("id")))
            self.assertNotEqual(r.id, out["id"])
            self.assertEqual(health.Check(hpb.HealthCheckRequest(), timeout=20).status,
                             hpb.HealthCheckResponse.SERVING)
            self.assertTrue(stub.ServerLive(pb.ServerLiveRequest(), timeout=20).live)
            self.assertTrue(stub.ServerReady(pb.ServerReadyRequest(), timeout=20).ready)
            for call, req in ((stub.ModelMetadata, pb.ModelMetadataRequest(name="adult")),
                              (stub.ServerMetadata, pb.ServerMetadataRequest()),
                              (stub.ModelReady, pb.ModelReadyRequest(name="adult"))):
                self.assertEqual(code_of(call, req), U if auth_reads else OK, call)
                self.assertEqual(code_of(call, req, md), OK, call)
        finally:
            ch.close()

    def test_31_grpc_bad_input(self):
        """gRPC against the real backend: each bad call is INVALID_ARGUMENT (or
        NOT_FOUND) with a valid UTF-8 message, and serve keeps answering."""
        import grpc
        pb, pbg, hpb, hpbg = self.grpc_stubs()
        S = grpc.StatusCode
        row = [39, 77516, 13, 0, 0, 40]
        ch = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port(self.serve)}")
        stub = pbg.GRPCInferenceServiceStub(ch)
        raw_infer = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                   request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)

        def adult(**kw):
            rq = pb.ModelInferRequest(model_name="adult", **kw)
            for i, c in enumerate(NUMERIC):
                rq.inputs.add(name=c, datatype="FP64", shape=[1]).contents.fp64_contents.append(
                    float(row[i]))
            return rq

        def recs(name="user_id", value=b"u1", **params):
            rq = pb.ModelInferRequest(model_name="recs")
            rq.inputs.add(name=name, datatype="BYTES", shape=[1]).contents.bytes_contents.append(
                value)
            for k, v in params.items():
                if isinstance(v, bool):
                    rq.parameters[k].bool_param = v
                elif isinstance(v, int):
                    rq.parameters[k].int64_param = v
                else:
                    rq.parameters[k].string_param = v
            return rq

        def ser(rq):
            return rq.SerializeToString()

        def field(num, payload):
            out, n = bytearray(), num << 3 | 2
            for x in (n, len(payload)):
                while True:
                    b, x = x & 0x7F, x >> 7
                    out.append(b | (0x80 if x else 0))
                    if not x:
                        break
            return bytes(out) + payload

        huge = adult()
        huge.inputs[0].shape[:] = [2 ** 40]
        zero = adult()
        zero.inputs[0].shape[:] = [0]
        wrong_dt = adult()
        wrong_dt.inputs[1].datatype = "BYTES"
        wrong_dt.inputs[1].contents.Clear()
        wrong_dt.inputs[1].contents.bytes_contents.append(b"x")
        cases = [
            ("input name not UTF-8", ser(adult()) + field(5, field(1, b"a\xffge") + field(
                2, b"FP64")), S.INVALID_ARGUMENT, "inputs[6].name"),
            ("model name not UTF-8", field(1, b"adu\xfflt"), S.INVALID_ARGUMENT, "model_name"),
            ("id 300 bytes", ser(adult(id="i" * 300)), S.INVALID_ARGUMENT, "id"),
            ("shape 2**40", ser(huge), S.INVALID_ARGUMENT, "age"),
            ("shape 0 vs data 1", ser(zero), S.INVALID_ARGUMENT, "age"),
            ("BYTES for a number", ser(wrong_dt), S.INVALID_ARGUMENT, "fnlwgt"),
            ("unknown model", ser(pb.ModelInferRequest(model_name="nope")), S.NOT_FOUND, "nope"),
            ("unknown output", ser(adult()) + field(6, field(1, b"logits")), S.INVALID_ARGUMENT,
             "logits"),
            ("user not UTF-8", ser(recs(value=b"\xc3\x28")), S.INVALID_ARGUMENT, "UTF-8"),
            ("k as text", ser(recs(k="abc")), S.INVALID_ARGUMENT, "k"),
            ("k huge", ser(recs(k=10 ** 12)), S.INVALID_ARGUMENT, "k"),
            ("k zero", ser(recs(k=0)), S.INVALID_ARGUMENT, "k"),
            ("exclude_seen as text", ser(recs(exclude_seen="yes")), S.INVALID_ARGUMENT,
             "exclude_seen"),
            ("exclude_seen on item_id", ser(recs(name="item_id", value=b"item-1",
                                                 exclude_seen=True)),
             S.INVALID_ARGUMENT, "exclude_seen"),
            ("unknown user input", ser(recs(name="who")), S.INVALID_ARGUMENT, "user_id"),
        ]
        failures = []
        try:
            for label, msg, code, needle in cases:
                try:
                    raw_infer(msg, timeout=20)
                    failures.append((label, "succeeded"))
                except grpc.RpcError as e:
                    d = e.details() or ""
                    d.encode("utf-8")
                    if e.code() != code or needle not in d:
                        failures.append((label, e.code(), d))
                self.assertIsNone(self.serve.proc.poll(), label)
            r = stub.ModelInfer(adult(), timeout=20)
            self.assertEqual(len(r.outputs[0].contents.fp32_contents), 1)
        finally:
            ch.close()
        self.assertEqual(failures, [])

    def test_30_token_rest_and_grpc(self):
        """--token: infer needs it on both protocols; --auth-reads adds the
        reads; health probes (REST /v2/health/*, gRPC Health, ServerLive/Ready)
        stay open."""
        token = "serve-t0ken-42"
        tf = os.path.join(tempfile.mkdtemp(prefix="quern-serve-tok-", dir=WORK), "token")
        Path(tf).write_text(token + "\n")
        for auth_reads, extra in ((0, ["--token", token]),
                                  (1, ["--token-file", tf, "--auth-reads"])):
            s = Service("serve", env=self.env,
                        args=["--models", "adult", "--grpc-listen", "127.0.0.1:0",
                              "--registry", f"http://127.0.0.1:{self.reg.port}", *extra])
            s.start(timeout=30)
            try:
                self.check_token_rules(s, token, auth_reads)
            finally:
                self.assertEqual(s.stop(), 0)
            self.assertNotIn(token, s.log())

    # ---- registry down, restart from cache, SIGTERM ------------------------------

    def test_90_registry_down_and_cache(self):
        self.wait_version("adult", 1)
        row = [39, 77516, 13, 0, 0, 40]
        self.reg.kill9()
        try:
            for _ in range(20):
                st, _, body = self.infer("adult", self.adult_inputs([row]))
                self.assertEqual(st, 200, body)
            time.sleep(1.5)  # a poll against the dead registry must not disturb serving
            st, _, body = self.infer("adult", self.adult_inputs([row]))
            self.assertEqual((st, body["model_version"]), (200, "1"))
            # restart serve while the registry is down: it serves from its cache
            self.assertEqual(self.serve.stop(), 0)
            type(self).serve = self.start_serve()
            st, _, body = self.serve.request("GET", "/v2/health/ready")
            self.assertEqual(st, 200, body)
            self.assertEqual(body["models"], {"adult": "1", "lr": "1", "recs": "1"})
            st, _, body = self.serve.request("GET", "/v2/models/adult")
            self.assertEqual(body["quern"]["source"], "cache")
            st, _, body = self.infer("adult", self.adult_inputs([row]))
            self.assertEqual((st, body["model_version"]), (200, "1"))
            st, _, body = self.serve.request("GET", "/v1/models/recs/recommend?user=u3&k=2")
            self.assertEqual(st, 200, body)
        finally:
            self.reg.start()

    def test_99_sigterm_exits_zero(self):
        self.assertEqual(self.serve.stop(signal.SIGTERM), 0)
        self.assertIn('"stopped"', self.serve.log())
        type(self).serve = self.start_serve()


class ServeConfigTest(unittest.TestCase):
    def test_bad_flags(self):
        for args, needle in ((["--models", ""], "models"), (["--models", "a@b@c"], "alias"),
                             (["--models", "a,a"], "twice"),
                             (["--models", "a", "--batching", "b:4:100"], "batching"),
                             (["--models", "a", "--log-sample-rate", "2"], "rate")):
            d = tempfile.mkdtemp(prefix="quern-serve-cfg-", dir=WORK)
            p = subprocess.run([os.path.join(os.environ.get("QUERN_BIN", "build/bin"),
                                             "quern-serve"), "--data", d, "--listen",
                                "127.0.0.1:0", "--grpc-listen", "off", *args],
                               capture_output=True, timeout=20, env=dict(os.environ, QUERN_HOME=d))
            self.assertNotEqual(p.returncode, 0, args)
            self.assertIn(needle, p.stderr.decode(), args)


if __name__ == "__main__":
    unittest.main(verbosity=2)
