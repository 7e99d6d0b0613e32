"""test_serve_explain.py - POST /v1/models/{m}/explain on quern-serve, beside quern-registry.

Models, registered over the registry's API as test_serve does:
  adult  XGBoost (binary:logistic) trained here with Python's xgboost on six
         numeric Adult columns, pass-through transforms,
  multi  XGBoost multi:softprob (3 classes: hours-per-week bands) on the same,
  oh     XGBoost trained on the six columns plus a one-hot of workclass (3
         categories and the unknown bucket), declared as transforms,
  lr     a logistic model with standardize + one-hot transforms, written by hand,
  recs   an ALS recommender written with numpy, its training spec naming
         regularization and alpha.
Expected values come from Python: xgboost's predict(pred_contribs=True) and
output_margin=True on the same Adult test rows (within 1e-5), the linear
model's coefficients, and a numpy reimplementation of implicit's ALS explain
(W_u = (Y'C_uY + lambda I)^-1 by Cholesky; item i contributes c * y_j' W_u y_i).
Run by /usr/bin/python3 (numpy, xgboost).
"""
import json
import os
import struct
import sys
import tempfile
import unittest

import numpy as np
import xgboost as xgb

sys.path.insert(0, os.path.dirname(__file__))
from harness import WORK, Service  # noqa: E402
import test_serve as ts  # noqa: E402  (helpers only: its test class is not imported)

NUMERIC = ts.NUMERIC
F = len(NUMERIC)
TOL = 1e-5
CATS = ["Private", "Self-emp-not-inc", "Local-gov"]
REG, ALPHA = 0.1, 2.0


def onehot(work):
    return [1.0 if work == c else 0.0 for c in CATS] + [0.0 if work in CATS else 1.0]


class ServeExplainTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.home = tempfile.mkdtemp(prefix="quern-explain-", dir=WORK)
        cls.env = {"QUERN_HOME": cls.home}
        for d in ("registry", "serve"):
            os.makedirs(os.path.join(cls.home, d))
        cls.reg = Service("registry", data=os.path.join(cls.home, "registry"), env=cls.env).start()
        X, y, work = ts.load_adult(os.path.join(ts.DATASETS, "adult.data"), 3000)
        cls.Xt, _, cls.work_t = ts.load_adult(os.path.join(ts.DATASETS, "adult.test"), 200)
        cls.X = X
        p = {"max_depth": 4, "eta": 0.3, "seed": 1, "nthread": 1}
        cls.adult = xgb.train({**p, "objective": "binary:logistic"},
                              xgb.DMatrix(X, label=y), 40)
        band = np.digitize(X[:, 5], [35, 45])  # hours_per_week: <35, 35-44, >=45
        cls.multi = xgb.train({**p, "objective": "multi:softprob", "num_class": 3},
                              xgb.DMatrix(X, label=band), 15)
        Xoh = np.hstack([X, np.array([onehot(w) for w in work])])
        cls.oh = xgb.train({**p, "objective": "binary:logistic"}, xgb.DMatrix(Xoh, label=y), 30)
        cls.register_xgb("adult", cls.adult, "binary", [0, 1], "probability", [-1])
        cls.register_xgb("multi", cls.multi, "multiclass", [0, 1, 2], "probabilities", [-1, 3])
        cls.register_xgb("oh", cls.oh, "binary", [0, 1], "probability", [-1], workclass=True)
        cls.register_lr()
        cls.register_als()
        for m in ("adult", "multi", "oh", "lr", "recs"):
            cls.put_alias(m, 1)
        s = Service("serve", data=os.path.join(cls.home, "serve"), env=cls.env,
                    args=["--models", "adult,multi,oh,lr,recs", "--grpc-listen", "127.0.0.1:0",
                          "--registry", f"http://127.0.0.1:{cls.reg.port}"])
        cls.serve = s.start(timeout=60)

    @classmethod
    def tearDownClass(cls):
        for s in (getattr(cls, "serve", None), getattr(cls, "reg", None)):
            if s:
                s.stop()

    # ---- registering ---------------------------------------------------------------

    @classmethod
    def register(cls, model, manifest):
        cls.reg.request("POST", "/v1/models", {"name": model})
        st, _, body = cls.reg.request("POST", f"/v1/models/{model}/versions",
                                      {"manifest": manifest})
        assert st == 201, body

    @classmethod
    def put_alias(cls, model, version):
        st, _, body = cls.reg.request("PUT", f"/v1/models/{model}/aliases/production",
                                      {"version": version})
        assert st == 200, body

    @classmethod
    def register_xgb(cls, name, booster, task, classes, out, shape, workclass=False):
        path = os.path.join(cls.home, f"{name}.json")
        booster.save_model(path)
        inputs = [{"name": c, "datatype": "FP64", "shape": [-1]} for c in NUMERIC]
        cols = [{"name": c, "type": "numeric", "steps": []} for c in NUMERIC]
        nf = F
        if workclass:
            inputs.append({"name": "workclass", "datatype": "BYTES", "shape": [-1]})
            cols.append({"name": "workclass", "type": "categorical",
                         "steps": [{"op": "onehot", "categories": CATS, "max_categories": 0,
                                    "min_frequency": 0}]})
            nf += len(CATS) + 1
        with open(path, "rb") as f:
            blob = cls.reg.put_blob(f.read())
        cls.register(name, {
            "format": "quern.model/1", "kind": "xgboost", "inputs": inputs,
            "outputs": [{"name": out, "datatype": "FP32", "shape": shape}],
            "transforms": {"format": "quern.features/1", "n_features": nf, "columns": cols},
            "params": {"task": task, "classes": classes}, "files": {"model.json": blob}})

    @classmethod
    def register_lr(cls):
        cls.lr_mean, cls.lr_std = cls.X.mean(axis=0), cls.X.std(axis=0)
        d = F + len(CATS) + 1
        cls.lr_coef = np.random.default_rng(7).normal(0, 0.5, d)
        cls.lr_b = -0.3
        cols = [{"name": c, "type": "numeric",
                 "steps": [{"op": "standardize", "mean": float(cls.lr_mean[i]),
                            "std": float(cls.lr_std[i])}]} for i, c in enumerate(NUMERIC)]
        cols.append({"name": "workclass", "type": "categorical",
                     "steps": [{"op": "onehot", "categories": CATS, "max_categories": 0,
                                "min_frequency": 0}]})
        model = {"format": "quern.linear/1", "kind": "logistic", "n_features": d,
                 "coef": [[float(x) for x in cls.lr_coef]], "intercept": [cls.lr_b],
                 "classes": [0, 1]}
        inputs = [{"name": c, "datatype": "FP64", "shape": [-1]} for c in NUMERIC]
        inputs.append({"name": "workclass", "datatype": "BYTES", "shape": [-1]})
        cls.register("lr", {
            "format": "quern.model/1", "kind": "logistic", "inputs": inputs,
            "outputs": [{"name": "probability", "datatype": "FP32", "shape": [-1]}],
            "transforms": {"format": "quern.features/1", "n_features": d, "columns": cols},
            "params": {"task": "binary", "classes": [0, 1]},
            "files": {"model.json": cls.reg.put_blob(json.dumps(model).encode())}})

    @classmethod
    def register_als(cls):
        rng = np.random.default_rng(5)
        nu, ni, f = 25, 40, 6
        cls.uf = rng.normal(0, 1, (nu, f)).astype(np.float32)
        cls.itf = rng.normal(0, 1, (ni, f)).astype(np.float32)
        # user 0 has one past item; user 24 none (the popularity fallback)
        cls.seen = [sorted(rng.choice(ni, 1 if u == 0 else 0 if u == nu - 1 else 2 + u % 7,
                                      replace=False).tolist()) for u in range(nu)]
        indptr = np.array([0] + list(np.cumsum([len(s) for s in cls.seen])), dtype=np.int64)
        indices = np.array([i for s in cls.seen for i in s], dtype=np.int32)
        pop = np.bincount(indices, minlength=ni).astype(np.float32)
        cls.users = [f"u{i}" for i in range(nu)]
        cls.items = [f"item-{i}" for i in range(ni)]
        d = os.path.join(cls.home, "als")
        os.makedirs(d, exist_ok=True)
        files = {}
        for name, arr in (("user_factors.npy", cls.uf), ("item_factors.npy", cls.itf),
                          ("popularity.npy", pop), ("user_items_indptr.npy", indptr),
                          ("user_items_indices.npy", indices)):
            np.save(os.path.join(d, name), arr)
            with open(os.path.join(d, name), "rb") as fh:
                files[name] = cls.reg.put_blob(fh.read())
        files["user_ids.json"] = cls.reg.put_blob(json.dumps(cls.users).encode())
        files["item_ids.json"] = cls.reg.put_blob(json.dumps(cls.items).encode())
        spec = {"kind": "als", "params": {"factors": f, "regularization": REG, "alpha": ALPHA}}
        cls.register("recs", {
            "format": "quern.model/1", "kind": "als",
            "inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "item_id", "datatype": "BYTES", "shape": [-1, 5]},
                        {"name": "score", "datatype": "FP32", "shape": [-1, 5]}],
            "params": {"task": "ranking", "k": 5, "spec": spec}, "files": files})

    # ---- helpers ---------------------------------------------------------------------

    def explain(self, model, inputs, path=None, **kw):
        return self.serve.request("POST", path or f"/v1/models/{model}/explain",
                                  {"inputs": inputs, **kw})

    def columns(self, rows, work=None):
        ins = [{"name": c, "datatype": "FP64", "shape": [len(rows)],
                "data": [float(r[i]) for r in rows]} for i, c in enumerate(NUMERIC)]
        if work is not None:
            ins.append({"name": "workclass", "datatype": "BYTES", "shape": [len(work)],
                        "data": list(work)})
        return ins

    def assertStdError(self, resp, status, code, *needles):
        st, _, body = resp
        self.assertEqual(st, status, body)
        self.assertEqual(body["error"]["code"], code, body)
        for n in needles:
            self.assertIn(n, body["error"]["message"])

    def contrib_matrix(self, body):
        """[rows, terms(, outputs)] from the columnar answer, and the term names."""
        names = [c["feature"] for c in body["contributions"]]
        m = np.array([c["values"] for c in body["contributions"]], dtype=np.float64)
        return np.moveaxis(m, 0, 1), names

    # ---- XGBoost -----------------------------------------------------------------------

    def test_xgboost_matches_python_pred_contribs(self):
        rows = self.Xt[:120]
        st, h, body = self.explain("adult", self.columns(rows), id="ex-1")
        self.assertEqual(st, 200, body)
        self.assertEqual(h["x-quern-model-version"], "1")
        self.assertEqual((body["model"], body["version"], body["kind"], body["method"],
                          body["link"], body["by"], body["rows"], body["id"]),
                         ("adult", "1", "xgboost", "treeshap", "logistic", "column", 120, "ex-1"))
        c, names = self.contrib_matrix(body)
        self.assertEqual(names, NUMERIC)
        want = self.adult.predict(xgb.DMatrix(rows), pred_contribs=True)  # [rows, F + 1]
        margin = self.adult.predict(xgb.DMatrix(rows), output_margin=True)
        np.testing.assert_allclose(c, want[:, :F], rtol=0, atol=TOL)
        np.testing.assert_allclose(body["bias"], want[:, F], rtol=0, atol=TOL)
        np.testing.assert_allclose(body["margin"], margin, rtol=0, atol=TOL)
        # additivity: bias + contributions = the margin
        np.testing.assert_allclose(c.sum(axis=1) + np.array(body["bias"]), margin, rtol=0,
                                   atol=TOL)
        # and the margin is what infer's probability comes from
        st, _, inf = self.serve.request("POST", "/v2/models/adult/infer",
                                        {"inputs": self.columns(rows[:5])})
        self.assertEqual(st, 200, inf)
        np.testing.assert_allclose(inf["outputs"][0]["data"],
                                   1 / (1 + np.exp(-np.array(body["margin"][:5]))), atol=1e-6)

    def test_xgboost_2d_tensor_and_missing_values(self):
        rows = self.Xt[:30].copy()
        st, _, cols = self.explain("adult", self.columns(rows))
        self.assertEqual(st, 200, cols)
        t = [{"name": "input__0", "datatype": "FP32", "shape": [30, F],
              "data": [float(x) for x in rows.astype(np.float32).ravel()]}]
        st, _, two = self.explain("adult", t)
        self.assertEqual(st, 200, two)
        self.assertEqual(two["contributions"], cols["contributions"])
        self.assertEqual(two["bias"], cols["bias"])
        # null is a missing value: without an impute step, refused as infer refuses it
        ins = self.columns(rows[:4])
        ins[1]["data"][0] = None
        self.assertStdError(self.explain("adult", ins), 400, "invalid_argument", "fnlwgt",
                            "missing")

    def test_xgboost_multiclass_one_list_per_class(self):
        rows = self.Xt[:50]
        st, _, body = self.explain("multi", self.columns(rows))
        self.assertEqual(st, 200, body)
        self.assertEqual(body["link"], "softmax")
        self.assertEqual(body["classes"], [0.0, 1.0, 2.0])
        c, _ = self.contrib_matrix(body)  # [rows, F, 3]
        want = self.multi.predict(xgb.DMatrix(rows), pred_contribs=True)  # [rows, 3, F + 1]
        margin = self.multi.predict(xgb.DMatrix(rows), output_margin=True)  # [rows, 3]
        np.testing.assert_allclose(np.moveaxis(c, 1, 2), want[:, :, :F], atol=TOL)
        np.testing.assert_allclose(body["bias"], want[:, :, F], atol=TOL)
        np.testing.assert_allclose(body["margin"], margin, atol=TOL)
        np.testing.assert_allclose(c.sum(axis=1) + np.array(body["bias"]), margin, atol=TOL)

    def test_xgboost_one_hot_by_feature_and_by_column(self):
        rows = self.Xt[:60]
        work = self.work_t[:60]
        Xoh = np.hstack([rows, np.array([onehot(w) for w in work])])
        want = self.oh.predict(xgb.DMatrix(Xoh), pred_contribs=True)
        st, _, feat = self.explain("oh", self.columns(rows, work), parameters={"by": "feature"})
        self.assertEqual(st, 200, feat)
        c, names = self.contrib_matrix(feat)
        self.assertEqual(names, NUMERIC + [f"workclass={x}" for x in CATS] +
                         ["workclass=__unknown__"])
        np.testing.assert_allclose(c, want[:, :-1], atol=TOL)
        st, _, col = self.explain("oh", self.columns(rows, work))
        self.assertEqual(st, 200, col)
        c, names = self.contrib_matrix(col)
        self.assertEqual(names, NUMERIC + ["workclass"])
        np.testing.assert_allclose(c[:, :F], want[:, :F], atol=TOL)
        np.testing.assert_allclose(c[:, F], want[:, F:-1].sum(axis=1), atol=TOL)
        np.testing.assert_allclose(col["bias"], want[:, -1], atol=TOL)

    # ---- linear ---------------------------------------------------------------------

    def test_linear_coef_times_transformed_value_per_raw_column(self):
        rows = self.Xt[:40]
        work = self.work_t[:40]
        st, _, body = self.explain("lr", self.columns(rows, work))
        self.assertEqual(st, 200, body)
        self.assertEqual((body["kind"], body["method"], body["link"]),
                         ("logistic", "linear", "logistic"))
        c, names = self.contrib_matrix(body)
        self.assertEqual(names, NUMERIC + ["workclass"])
        z = ((rows - self.lr_mean) / self.lr_std).astype(np.float32).astype(np.float64)
        np.testing.assert_allclose(c[:, :F], z * self.lr_coef[:F], atol=1e-9)
        oh = np.array([onehot(w) for w in work])
        np.testing.assert_allclose(c[:, F], oh @ self.lr_coef[F:], atol=1e-12)
        np.testing.assert_allclose(body["bias"], [self.lr_b] * 40, atol=0)
        np.testing.assert_allclose(c.sum(axis=1) + self.lr_b, body["margin"], atol=1e-9)
        st, _, inf = self.serve.request("POST", "/v2/models/lr/infer",
                                        {"inputs": self.columns(rows, work)})
        self.assertEqual(st, 200, inf)
        np.testing.assert_allclose(inf["outputs"][0]["data"],
                                   1 / (1 + np.exp(-np.array(body["margin"]))), atol=1e-6)
        # per feature: one term per one-hot bucket, the buckets adding up to the column
        st, _, feat = self.explain("lr", self.columns(rows, work), parameters={"by": "feature"})
        self.assertEqual(st, 200, feat)
        cf, names = self.contrib_matrix(feat)
        self.assertEqual(len(names), F + len(CATS) + 1)
        np.testing.assert_allclose(cf[:, F:], oh * self.lr_coef[F:], atol=1e-12)
        np.testing.assert_allclose(cf[:, F:].sum(axis=1), c[:, F], atol=1e-12)

    # ---- ALS ---------------------------------------------------------------------------

    def numpy_explain(self, u, j, k):
        Y = self.itf.astype(np.float64)
        past = self.seen[u]
        c = 1 + ALPHA
        A = Y.T @ Y + REG * np.eye(Y.shape[1])
        for i in past:
            A += (c - 1) * np.outer(Y[i], Y[i])
        L = np.linalg.cholesky(A)
        w = np.linalg.solve(L.T, np.linalg.solve(L, Y[j]))
        s = [(c * float(w @ Y[i]), i) for i in past]
        total = sum(x for x, _ in s)
        top = sorted(s, key=lambda t: (-t[0], t[1]))[:k]
        return total, [(f"item-{i}", x) for x, i in top]

    def test_als_explains_the_top_recommendation(self):
        users = ["u3", "u7", "u0"]
        body_in = [{"name": "user_id", "datatype": "BYTES", "shape": [3], "data": users}]
        st, _, body = self.explain("recs", body_in, parameters={"k": 3})
        self.assertEqual(st, 200, body)
        self.assertEqual((body["kind"], body["method"]), ("als", "als_explain"))
        self.assertRegex(body["id"], r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-")  # made by serve
        self.assertEqual(len(body["explanations"]), 3)
        for e, user in zip(body["explanations"], users):
            u = int(user[1:])
            scores = self.uf[u] @ self.itf.T
            j = int(np.argmax(scores))
            st, _, rec = self.serve.request("GET", f"/v1/models/recs/recommend?user={user}&k=1")
            self.assertEqual(rec["items"][0]["item"], f"item-{j}")
            self.assertEqual((e["user"], e["item"], e["recommended"]), (user, f"item-{j}", True))
            self.assertAlmostEqual(e["score"], float(scores[j]), places=4)
            self.assertEqual(e["past_items"], len(self.seen[u]))
            total, top = self.numpy_explain(u, j, 3)
            self.assertAlmostEqual(e["explained_score"], total, delta=1e-4 * max(1, abs(total)))
            self.assertEqual([x["item"] for x in e["contributions"]], [i for i, _ in top])
            for got, (_, want) in zip(e["contributions"], top):
                self.assertAlmostEqual(got["score"], want, delta=1e-4 * max(1, abs(want)))
            # past items only
            self.assertTrue(set(x["item"] for x in e["contributions"]) <=
                            {f"item-{i}" for i in self.seen[u]})

    def test_als_given_item_and_exclude_seen(self):
        ins = [{"name": "user_id", "datatype": "BYTES", "shape": [2], "data": ["u5", "u9"]},
               {"name": "item_id", "datatype": "BYTES", "shape": [2], "data": ["item-4", "item-0"]}]
        st, _, body = self.explain("recs", ins)
        self.assertEqual(st, 200, body)
        for e, (u, j) in zip(body["explanations"], ((5, 4), (9, 0))):
            self.assertEqual((e["item"], e["recommended"]), (f"item-{j}", False))
            total, top = self.numpy_explain(u, j, 10)
            self.assertEqual([x["item"] for x in e["contributions"]], [i for i, _ in top])
            self.assertAlmostEqual(e["explained_score"], total, delta=1e-4 * max(1, abs(total)))
        ins = [{"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["u6"]}]
        st, _, body = self.explain("recs", ins, parameters={"exclude_seen": True})
        self.assertEqual(st, 200, body)
        scores = self.uf[6] @ self.itf.T
        scores[self.seen[6]] = -np.inf
        self.assertEqual(body["explanations"][0]["item"], f"item-{int(np.argmax(scores))}")

    # ---- refusals ------------------------------------------------------------------------

    def test_bad_requests_say_what_to_fix(self):
        row = self.Xt[:2]
        e = self.explain
        self.assertStdError(e("nope", self.columns(row)), 404, "not_found", "nope")
        self.assertStdError(e("adult", self.columns(row), path="/v1/models/adult/versions/9/explain"),
                            404, "not_found", "9")
        st, _, ok = e("adult", self.columns(row), path="/v1/models/adult/versions/1/explain")
        self.assertEqual(st, 200, ok)
        self.assertStdError(e("adult", self.columns(row)[1:]), 400, "invalid_argument", "age",
                            "missing")
        bad = self.columns(row)
        bad[2]["shape"] = [3]
        self.assertStdError(e("adult", bad), 400, "invalid_argument", "education_num")
        self.assertStdError(e("adult", self.columns(row), parameters={"by": "row"}), 400,
                            "invalid_argument", "by", "column", "feature")
        self.assertStdError(e("adult", [{"name": "input__0", "datatype": "FP32", "shape": [1, 5],
                                         "data": [1, 2, 3, 4, 5]}]),
                            400, "invalid_argument", "input__0", "[N, 6]")
        self.assertStdError(e("lr", self.columns(row)), 400, "invalid_argument", "workclass")
        self.assertStdError(e("adult", [{"name": "user_id", "datatype": "BYTES", "shape": [1],
                                         "data": ["u1"]}]), 400, "invalid_argument", "user_id")
        st, _, body = self.serve.request("POST", "/v1/models/adult/explain", b'{"inputs":')
        self.assertEqual(st, 400, body)
        # ALS
        self.assertStdError(e("recs", []), 400, "invalid_argument", "inputs")
        self.assertStdError(e("recs", self.columns(row)), 400, "invalid_argument", "age",
                            "user_id")
        uid = [{"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["u1"]}]
        self.assertStdError(e("recs", uid, parameters={"k": 0}), 400, "invalid_argument", "k")
        self.assertStdError(e("recs", uid, parameters={"k": "3x"}), 400, "invalid_argument", "k")
        self.assertStdError(e("recs", uid, parameters={"exclude_seen": "maybe"}), 400,
                            "invalid_argument", "exclude_seen")
        self.assertStdError(e("recs", [{"name": "user_id", "datatype": "BYTES", "shape": [1],
                                        "data": ["stranger"]}]), 404, "not_found", "stranger")
        self.assertStdError(e("recs", [{"name": "user_id", "datatype": "BYTES", "shape": [1],
                                        "data": ["u24"]}]), 400, "failed_precondition",
                            "u24", "no past items")
        self.assertStdError(e("recs", uid + [{"name": "item_id", "datatype": "BYTES",
                                              "shape": [1], "data": ["item-999"]}]),
                            404, "not_found", "item-999")
        self.assertStdError(e("recs", uid + [{"name": "item_id", "datatype": "BYTES",
                                              "shape": [2], "data": ["item-1", "item-2"]}]),
                            400, "invalid_argument", "item_id")
        self.assertStdError(e("recs", [{"name": "user_id", "datatype": "FP32", "shape": [1],
                                        "data": [1]}]), 400, "invalid_argument", "user_id",
                            "BYTES")
        # an id that is not UTF-8 text (only the binary extension can carry one)
        head = json.dumps({"inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [1],
                                       "parameters": {"binary_data_size": 6}}]}).encode()
        self.assertStdError(self.serve.request(
            "POST", "/v1/models/recs/explain", head + struct.pack("<I", 2) + b"u\xff",
            headers={"Content-Type": "application/octet-stream",
                     "Inference-Header-Content-Length": str(len(head))}),
            400, "invalid_argument", "user_id", "UTF-8")
        st, _, _ = self.serve.request("GET", "/v1/models/adult/explain")
        self.assertEqual(st, 405)

    def test_token_required_as_for_infer(self):
        token = "explain-t0ken"
        s = Service("serve", env=self.env,
                    args=["--models", "adult", "--grpc-listen", "127.0.0.1:0", "--token", token,
                          "--registry", f"http://127.0.0.1:{self.reg.port}"])
        s.start(timeout=60)
        try:
            body = {"inputs": self.columns(self.Xt[:1])}
            self.assertStdError(s.request("POST", "/v1/models/adult/explain", body), 401,
                                "unauthenticated")
            self.assertStdError(s.request("POST", "/v1/models/adult/explain", body,
                                          headers={"Authorization": "Bearer wrong"}), 401,
                                "unauthenticated")
            st, _, out = s.request("POST", "/v1/models/adult/explain", body,
                                   headers={"Authorization": f"Bearer {token}"})
            self.assertEqual(st, 200, out)
        finally:
            s.stop()


if __name__ == "__main__":
    unittest.main()
