"""test_serve_2d.py - one 2-D tensor [N, F] for tabular models, beside quern-registry.

A numeric Adult XGBoost model (six numeric Adult columns, trained here with
Python's xgboost) is registered four ways:
  adult  named FP64 columns with pass-through transforms (as test_serve does),
  num    `quern models import --inputs 6` (unnamed: f0..f5, one 2-D input),
  auto   `quern models import` without --inputs from the numpy-trained JSON
         (no feature names: its feature count, so f0..f5 too),
  named  `quern models import` without --inputs from a JSON trained with
         feature_names (the names and types come from the file),
and lr is a logistic model with a BYTES input, which cannot take the 2-D form.
The same rows are sent per column and as one [N, 6] tensor (REST JSON flat and
nested, the binary extension, gRPC contents and raw_input_contents): the
predictions must be exactly equal. Every bad 2-D request is a 4xx (or
INVALID_ARGUMENT) with a message saying what to fix.
Run by /usr/bin/python3 (numpy, xgboost, grpcio).
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import xgboost as xgb

sys.path.insert(0, os.path.dirname(__file__))
from harness import BIN, WORK, Service  # noqa: E402
import test_serve as ts  # noqa: E402  (helpers only: its test class is not imported)

NUMERIC = ts.NUMERIC
F = len(NUMERIC)


class Serve2DTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.home = tempfile.mkdtemp(prefix="quern-serve2d-", dir=WORK)
        cls.env = {"QUERN_HOME": cls.home}
        for d in ("registry", "serve"):
            os.makedirs(os.path.join(cls.home, d))
        cls.reg = Service("registry", data=os.path.join(cls.home, "registry"), env=cls.env).start()
        X, y, _ = ts.load_adult(os.path.join(ts.DATASETS, "adult.data"), 3000)
        cls.Xt = ts.load_adult(os.path.join(ts.DATASETS, "adult.test"), 200)[0]
        params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.3, "seed": 1,
                  "nthread": 1}
        cls.booster = xgb.train(params, xgb.DMatrix(X, label=y), 40)
        cls.plain = os.path.join(cls.home, "plain.json")
        cls.booster.save_model(cls.plain)
        named = xgb.train(params, xgb.DMatrix(X, label=y, feature_names=NUMERIC,
                                              feature_types=["float"] * F), 40)
        cls.named_json = os.path.join(cls.home, "named.json")
        named.save_model(cls.named_json)
        cls.register_adult()
        cls.register_lr()
        for args in (("--name", "num", "--file", cls.plain, "--inputs", str(F)),
                     ("--name", "auto", "--file", cls.plain),
                     ("--name", "named", "--file", cls.named_json)):
            rc, out, err = cls.quern("models", "import", "--kind", "xgboost", *args,
                                     "--promote", "production")
            assert rc == 0, (args, out, err)
        s = Service("serve", data=os.path.join(cls.home, "serve"), env=cls.env,
                    args=["--models", "adult,num,auto,named,lr", "--grpc-listen", "127.0.0.1:0",
                          "--registry", f"http://127.0.0.1:{cls.reg.port}"])
        cls.serve = s.start(timeout=30)

    @classmethod
    def tearDownClass(cls):
        for s in (getattr(cls, "serve", None), getattr(cls, "reg", None)):
            if s:
                s.stop()

    @classmethod
    def quern(cls, *args):
        env = dict(os.environ, QUERN_HOME=cls.home,
                   QUERN_REGISTRY=f"http://127.0.0.1:{cls.reg.port}")
        p = subprocess.run([os.path.join(BIN, "quern"), *args], env=env, capture_output=True,
                           text=True, timeout=120)
        return p.returncode, p.stdout, p.stderr

    @classmethod
    def register(cls, model, manifest):
        cls.reg.request("POST", "/v1/models", {"name": model})
        st, _, body = cls.reg.request("POST", f"/v1/models/{model}/versions", {"manifest": manifest})
        assert st == 201, body
        st, _, body = cls.reg.request("PUT", f"/v1/models/{model}/aliases/production",
                                      {"version": body["version"]})
        assert st == 200, body

    @classmethod
    def register_adult(cls):
        with open(cls.plain, "rb") as f:
            blob = cls.reg.put_blob(f.read())
        cls.register("adult", {
            "format": "quern.model/1", "kind": "xgboost",
            "inputs": [{"name": c, "datatype": "FP64", "shape": [-1]} for c in NUMERIC],
            "outputs": [{"name": "probability", "datatype": "FP32", "shape": [-1]}],
            "transforms": {"format": "quern.features/1", "n_features": F,
                           "columns": [{"name": c, "type": "numeric", "steps": []}
                                       for c in NUMERIC]},
            "params": {"task": "binary", "classes": [0, 1]},
            "files": {"model.json": blob}})

    @classmethod
    def register_lr(cls):
        cats = ["Private", "Local-gov"]
        cols = [{"name": "age", "type": "numeric", "steps": []},
                {"name": "workclass", "type": "categorical",
                 "steps": [{"op": "onehot", "categories": cats, "max_categories": 0,
                            "min_frequency": 0}]}]
        model = {"format": "quern.linear/1", "kind": "logistic", "n_features": 4,
                 "coef": [[0.01, 0.5, -0.5, 0.1]], "intercept": [-0.2], "classes": [0, 1]}
        cls.register("lr", {
            "format": "quern.model/1", "kind": "logistic",
            "inputs": [{"name": "age", "datatype": "FP64", "shape": [-1]},
                       {"name": "workclass", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "probability", "datatype": "FP32", "shape": [-1]}],
            "transforms": {"format": "quern.features/1", "n_features": 4, "columns": cols},
            "params": {"task": "binary", "classes": [0, 1]},
            "files": {"model.json": cls.reg.put_blob(json.dumps(model).encode())}})

    # ---- helpers ---------------------------------------------------------------

    def infer(self, model, inputs):
        return self.serve.request("POST", f"/v2/models/{model}/infer", {"inputs": inputs})

    def probs(self, model, inputs):
        st, _, body = self.infer(model, inputs)
        self.assertEqual(st, 200, body)
        return body["outputs"][0]["data"]

    def columns(self, names, rows, dt):
        return [{"name": c, "datatype": dt, "shape": [len(rows)], "data": [r[i] for r in rows]}
                for i, c in enumerate(names)]

    def binary(self, model, name, arr, dt, shape=None):
        raw = arr.tobytes()
        head = json.dumps({"inputs": [{"name": name, "datatype": dt,
                                       "shape": list(shape or arr.shape),
                                       "parameters": {"binary_data_size": len(raw)}}]}).encode()
        return self.serve.request(
            "POST", f"/v2/models/{model}/infer", body=head + raw,
            headers={"Inference-Header-Content-Length": str(len(head)),
                     "Content-Type": "application/octet-stream"})

    def assertOipError(self, resp, status, *needles):
        st, _, body = resp
        self.assertEqual(st, status, body)
        self.assertIsInstance(body.get("error"), str, body)
        for n in needles:
            self.assertIn(n, body["error"])

    # ---- tests -------------------------------------------------------------------

    def test_01_metadata(self):
        want2d = [{"name": "input__0", "datatype": "FP32", "shape": [-1, F]}]
        for m in ("num", "auto"):
            st, _, meta = self.serve.request("GET", f"/v2/models/{m}")
            self.assertEqual(st, 200, meta)
            self.assertEqual(meta["inputs"], want2d, m)
        st, _, meta = self.serve.request("GET", "/v2/models/named")
        self.assertEqual([i["name"] for i in meta["inputs"]], NUMERIC)
        st, _, meta = self.serve.request("GET", "/v2/models/adult")
        self.assertEqual([(i["name"], i["shape"]) for i in meta["inputs"]],
                         [(c, [-1]) for c in NUMERIC])
        # what the CLI registered
        st, _, body = self.reg.request("GET", "/v1/models/named/versions")
        man = body["versions"][0]["manifest"] if isinstance(body, dict) else body[0]["manifest"]
        self.assertEqual([(i["name"], i["datatype"]) for i in man["inputs"]],
                         [(c, "FP32") for c in NUMERIC])

    def test_02_rest_json_same_predictions(self):
        rows = self.Xt[:60]
        expect = self.booster.predict(xgb.DMatrix(rows.astype(np.float32)))
        for model, names in (("adult", NUMERIC), ("named", NUMERIC),
                             ("num", [f"f{i}" for i in range(F)]),
                             ("auto", [f"f{i}" for i in range(F)])):
            for dt in ("FP32", "FP64"):
                percol = self.probs(model, self.columns(names, rows.tolist(), dt))
                flat = self.probs(model, [{"name": "input__0", "datatype": dt,
                                           "shape": [len(rows), F],
                                           "data": rows.flatten().tolist()}])
                nested = self.probs(model, [{"name": "input__0", "datatype": dt,
                                             "shape": [len(rows), F], "data": rows.tolist()}])
                anyname = self.probs(model, [{"name": "predict", "datatype": dt,
                                              "shape": [len(rows), F], "data": rows.tolist()}])
                self.assertEqual(flat, percol, (model, dt))
                self.assertEqual(nested, percol, (model, dt))
                self.assertEqual(anyname, percol, (model, dt))
                self.assertLess(float(np.max(np.abs(np.array(percol) - expect))), 1e-6)
        # one row, and zero rows
        one = self.probs("num", [{"name": "input__0", "datatype": "FP32", "shape": [1, F],
                                  "data": rows[0].tolist()}])
        self.assertEqual(one, self.probs("num", self.columns([f"f{i}" for i in range(F)],
                                                             rows[:1].tolist(), "FP32")))
        self.assertEqual(self.probs("num", [{"name": "input__0", "datatype": "FP32",
                                             "shape": [0, F], "data": []}]), [])

    def test_03_binary_same_predictions(self):
        rows = self.Xt[:40]
        percol = self.probs("adult", self.columns(NUMERIC, rows.tolist(), "FP64"))
        for arr, dt in ((rows.astype("<f8"), "FP64"), (rows.astype("<f4"), "FP32")):
            for model in ("adult", "num"):
                st, _, body = self.binary(model, "input__0", arr, dt)
                self.assertEqual(st, 200, body)
                got = body["outputs"][0]["data"]
                if dt == "FP64":
                    self.assertEqual(got, percol, model)
                else:
                    self.assertEqual(got, self.probs(model, [
                        {"name": "input__0", "datatype": "FP32", "shape": list(arr.shape),
                         "data": arr.flatten().tolist()}]), model)
        st, _, body = self.binary("num", "input__0", rows.astype("<f4"), "FP32",
                                  shape=[len(rows) + 1, F])
        self.assertOipError((st, None, body), 400, "input__0")
        st, _, body = self.binary("num", "input__0", rows.astype("<i8"), "INT64")
        self.assertOipError((st, None, body), 400, "FP32 or FP64")

    def test_04_rest_bad_input(self):
        row = self.Xt[0].tolist()
        t = lambda shape, data, dt="FP32", name="input__0": {  # noqa: E731
            "name": name, "datatype": dt, "shape": shape, "data": data}
        cases = [
            ("wrong F", "num", [t([1, F - 1], row[:-1])], "[N, 6]"),
            ("wrong F 1", "adult", [t([2, 1], row[:2])], "[N, 6]"),
            ("3-D", "num", [t([1, F, 1], row)], "[N, 6]"),
            ("1-D", "num", [t([F], row)], "[N, 6]"),
            ("INT64", "num", [t([1, F], [int(x) for x in row], "INT64")], "FP32 or FP64"),
            ("FP16", "num", [t([1, F], row, "FP16")], "FP16"),
            ("BYTES", "num", [t([1, F], [str(x) for x in row], "BYTES")], "FP32 or FP64"),
            ("data too short", "num", [t([2, F], row)], "holds 12"),
            ("data too long", "num", [t([1, F], row + row)], "more elements"),
            ("mixed with a column", "adult",
             [t([1, F], row)] + self.columns(["age"], [row], "FP64"), "alone"),
            ("mixed with f0", "num",
             self.columns(["f0"], [row], "FP32") + [t([1, F], row)], "alone"),
            ("twice", "num", [t([1, F], row), t([1, F], row)], "alone"),
            ("BYTES model", "lr", [t([1, 2], row[:2])], "workclass"),
            ("unnamed 3-D", "num", [t([1, F, 1], row, name="x")], "[N, 6]"),
            ("no inputs", "num", [], "inputs"),
            ("unnamed wrong F", "adult", [t([1, F - 1], row[:-1], name="x")], "[N, 6]"),
            # a misspelt column stays a column error, not a 2-D one
            ("misspelt column [n,1]", "adult", [t([1, 1], row[:1], name="agee")],
             "unexpected input 'agee'"),
            ("2-D to a BYTES model, unnamed", "lr", [t([1, 2], row[:2], name="x")],
             "unexpected input 'x'"),
        ]
        failures = []
        for label, model, inputs, needle in cases:
            st, _, body = self.infer(model, inputs)
            if st != 400 or not isinstance(body, dict) or needle not in body.get("error", ""):
                failures.append((label, st, body))
        self.assertEqual(failures, [])
        st, _, body = self.infer("lr", [t([1, 2], row[:2])])
        self.assertIn("BYTES", body["error"])
        # negative row count
        self.assertOipError(self.infer("num", [t([-1, F], row)]), 400, "input__0")
        self.assertIsNone(self.serve.proc.poll())

    def grpc_stubs(self):
        return ts.ServeTest.grpc_stubs.__func__(type(self))

    def test_05_grpc(self):
        import grpc
        pb, pbg, _, _ = self.grpc_stubs()
        S = grpc.StatusCode
        ch = grpc.insecure_channel(f"127.0.0.1:{ts.ServeTest.grpc_port(self.serve)}")
        stub = pbg.GRPCInferenceServiceStub(ch)
        rows = self.Xt[:30]
        try:
            md = stub.ModelMetadata(pb.ModelMetadataRequest(name="num"), timeout=20)
            self.assertEqual([(i.name, i.datatype, list(i.shape)) for i in md.inputs],
                             [("input__0", "FP32", [-1, F])])
            percol = self.probs("adult", self.columns(NUMERIC, rows.tolist(), "FP64"))
            percol32 = self.probs("adult", self.columns(NUMERIC, rows.tolist(), "FP32"))

            def req(model, dt="FP64", shape=(len(rows), F), data=rows, raw=False, name="input__0",
                    extra=()):
                rq = pb.ModelInferRequest(model_name=model)
                t = rq.inputs.add(name=name, datatype=dt, shape=list(shape))
                arr = np.asarray(data, dtype="<f8" if dt == "FP64" else "<f4").flatten()
                if raw:
                    rq.raw_input_contents.append(arr.tobytes())
                elif dt == "FP64":
                    t.contents.fp64_contents.extend(arr.tolist())
                elif dt == "FP32":
                    t.contents.fp32_contents.extend(arr.tolist())
                else:
                    t.contents.int64_contents.extend(int(x) for x in arr)
                for c in extra:
                    rq.inputs.add(name=c, datatype="FP64", shape=[len(rows)]).contents \
                        .fp64_contents.extend(rows[:, 0].tolist())
                return rq

            for model in ("adult", "num", "named"):
                for dt, want in (("FP64", percol), ("FP32", percol32)):
                    for raw in (False, True):
                        r = stub.ModelInfer(req(model, dt, raw=raw), timeout=20)
                        got = list(r.outputs[0].contents.fp32_contents) or list(
                            np.frombuffer(r.raw_output_contents[0], "<f4"))
                        # REST prints float32 shortest; compare as float32, exactly
                        self.assertTrue(np.array_equal(np.array(got, dtype=np.float32),
                                                       np.array(want, dtype=np.float32)),
                                        (model, dt, raw))
            cases = [
                ("wrong F", req("num", shape=(len(rows) * F // (F - 1), F - 1)), "[N, 6]"),
                ("3-D", req("num", shape=(len(rows), F, 1)), "[N, 6]"),
                ("INT64", req("num", "INT64"), "FP32 or FP64"),
                ("mixed", req("adult", extra=("age",)), "alone"),
                ("data short", req("num", shape=(len(rows) + 1, F)), "input__0"),
                ("raw data short", req("num", shape=(len(rows) + 1, F), raw=True), "input__0"),
                ("BYTES model", req("lr", shape=(len(rows) * 3, 2)), "workclass"),
            ]
            failures = []
            for label, rq, needle in cases:
                try:
                    stub.ModelInfer(rq, timeout=20)
                    failures.append((label, "succeeded"))
                except grpc.RpcError as e:
                    if e.code() != S.INVALID_ARGUMENT or needle not in (e.details() or ""):
                        failures.append((label, e.code(), e.details()))
            self.assertEqual(failures, [])
        finally:
            ch.close()

    def test_06_cli_import_refusals(self):
        rc, out, err = self.quern("models", "import", "--name", "x", "--kind", "xgboost",
                                  "--file", self.plain, "--inputs", "0")
        self.assertEqual(rc, 2, err)
        self.assertIn("1 to 100000", err)
        rc, out, err = self.quern("models", "import", "--name", "x", "--kind", "logistic",
                                  "--file", self.plain)
        self.assertEqual(rc, 2, err)
        self.assertIn("--inputs", err)
        rc, out, err = self.quern("models", "import", "--name", "x", "--kind", "xgboost",
                                  "--file", self.plain, "--inputs", str(F + 1))
        self.assertEqual(rc, 2, err)
        self.assertIn("model of 6 features", err)
        rc, out, err = self.quern("models", "import", "--name", "x", "--kind", "xgboost",
                                  "--file", self.plain, "--inputs", "a:FP32,b:FP64")
        self.assertEqual(rc, 2, err)
        self.assertIn("declares 2 inputs", err)
        with open(self.named_json) as f:
            doc = json.load(f)
        doc["learner"]["feature_types"][2] = "c"
        cat = os.path.join(self.home, "cat.json")
        with open(cat, "w") as f:
            json.dump(doc, f)
        rc, out, err = self.quern("models", "import", "--name", "x", "--kind", "xgboost",
                                  "--file", cat)
        self.assertEqual(rc, 2, err)
        self.assertIn("education_num", err)
        junk = os.path.join(self.home, "junk.json")
        with open(junk, "w") as f:
            f.write("{}")
        rc, out, err = self.quern("models", "import", "--name", "x", "--kind", "xgboost",
                                  "--file", junk)
        self.assertEqual(rc, 2, err)
        self.assertIn("--inputs is needed", err)
        st, _, _ = self.reg.request("GET", "/v1/models/x")
        self.assertEqual(st, 404)

    def test_99_clean_exit(self):
        """Last: serve stops cleanly after all of the above (and, in a sanitizer
        build, with no report in its log)."""
        self.assertEqual(self.serve.stop(), 0)
        self.assertNotIn("Sanitizer", self.serve.log())
        self.assertNotIn("runtime error", self.serve.log())


if __name__ == "__main__":
    unittest.main()
