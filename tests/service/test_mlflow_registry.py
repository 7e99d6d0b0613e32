"""The MLflow model registry and artifacts proxy of quern-registry, driven
the way the stock mlflow Python client drives them (the package cannot be
installed here): the request sequences of log_artifact(s),
mlflow.register_model, MlflowClient.set_registered_model_alias,
get_model_version_by_alias, loading models:/name@alias, and the searches,
with the response fields the client parses. GET requests carry their
fields in the query string, others in a JSON body (mlflow's
rest_utils.call_endpoint). An XGBoost model logged as an MLflow model
directory, registered and aliased production is served by quern-serve with
Python xgboost's predictions.

Run by /usr/bin/python3 (numpy, xgboost)."""
import hashlib
import json
import os
import tempfile
import time
import unittest
import urllib.parse

import numpy as np
import xgboost as xgb

from harness import WORK, Service, ServiceTest

API = "/api/2.0/mlflow"
ART = "/api/2.0/mlflow-artifacts/artifacts"
FEATURES = ["age", "income", "tenure", "visits"]
TOKEN = "mlflow-test-token"

MLMODEL = """artifact_path: model
flavors:
  python_function:
    data: model.json
    env:
      conda: conda.yaml
      virtualenv: python_env.yaml
    loader_module: mlflow.xgboost
    python_version: 3.11.2
  xgboost:
    code: null
    data: model.json
    model_class: xgboost.core.Booster
    model_format: json
    xgb_version: 2.0.3
mlflow_version: 2.16.2
model_size_bytes: 12345
model_uuid: 0f1e2d3c4b5a69788796a5b4c3d2e1f0
run_id: {run_id}
signature:
  inputs: '[{{"type": "double", "name": "age", "required": true}}, {{"type": "double",
    "name": "income", "required": true}}, {{"type": "double", "name": "tenure", "required":
    true}}, {{"type": "double", "name": "visits", "required": true}}]'
  outputs: null
  params: null
utc_time_created: '2026-12-02 03:00:00.000000'
"""


def q(base, **params):
    """A GET URL as requests builds it from params (lists repeat the key)."""
    return base + "?" + urllib.parse.urlencode(params, doseq=True)


class MlflowRegistryTest(ServiceTest):
    @classmethod
    def setUpClass(cls):
        rng = np.random.default_rng(11)
        cls.X = rng.normal(size=(400, 4))
        y = (cls.X[:, 0] + 0.5 * cls.X[:, 1] - cls.X[:, 3] + rng.normal(0, 0.3, 400) > 0).astype(int)
        cls.booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "seed": 1,
                                 "nthread": 1}, xgb.DMatrix(cls.X, label=y), 12)
        d = tempfile.mkdtemp(prefix="quern-mlflow-", dir=WORK)
        p = os.path.join(d, "model.json")
        cls.booster.save_model(p)
        with open(p, "rb") as f:
            cls.model_json = f.read()

    def setUp(self):
        super().setUp()
        self.reg = self.start("registry", args=["--token", TOKEN, "--token-name", "mlflow-ci"])
        self.auth = {"Authorization": f"Bearer {TOKEN}"}

    # what the client sends: Bearer MLFLOW_TRACKING_TOKEN, JSON bodies
    def call(self, method, url, body=None, **params):
        if params:
            url = q(url, **params)
        return self.reg.request(method, url, body, headers=self.auth)

    def ok(self, method, url, body=None, **params):
        st, _, out = self.call(method, url, body, **params)
        self.assertEqual(st, 200, out)
        self.assertIsInstance(out, dict, out)
        return out

    def mlflow_error(self, resp, status, code, *needles):
        st, _, body = resp
        self.assertEqual(st, status, body)
        self.assertEqual(body["error_code"], code, body)
        for n in needles:
            self.assertIn(n, body["message"])

    def log_model_dir(self, run_id, exp="0", path="model"):
        """mlflow.xgboost.log_model -> log_artifacts: one PUT per file of the
        model directory under the run's artifact root."""
        root = f"{exp}/{run_id}/artifacts/{path}"
        files = {"MLmodel": MLMODEL.format(run_id=run_id).encode(), "model.json": self.model_json,
                 "conda.yaml": b"name: mlflow-env\n", "python_env.yaml": b"python: 3.11.2\n",
                 "requirements.txt": b"mlflow==2.16.2\nxgboost==2.0.3\n"}
        for name, data in files.items():
            st, _, body = self.reg.request("PUT", f"{ART}/{root}/{name}", body=data,
                                           headers={**self.auth, "Content-Type": "application/octet-stream"})
            self.assertEqual((st, body), (200, {}))
        return root, files

    def register_model(self, name, source, run_id):
        """mlflow.register_model: create the registered model (an existing one
        is fine), create the version, then poll it until READY."""
        st, _, body = self.call("POST", f"{API}/registered-models/create", {"name": name})
        if st != 200:
            self.mlflow_error((st, None, body), 400, "RESOURCE_ALREADY_EXISTS", name)
        mv = self.ok("POST", f"{API}/model-versions/create",
                     {"name": name, "source": source, "run_id": run_id, "tags": [], "description": None})
        mv = mv["model_version"]
        self.assertEqual(mv["status"], "READY")
        got = self.ok("GET", f"{API}/model-versions/get", name=name, version=mv["version"])["model_version"]
        self.assertEqual(got["status"], "READY")
        return mv

    # -- tests -------------------------------------------------------------------

    def test_artifacts_upload_list_download(self):
        run = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
        root, files = self.log_model_dir(run)
        # log_artifact of one file at the root and in a nested dir
        for path, data in (("notes.txt", b"hello"), ("plots/roc/auc.png", b"\x89PNG...")):
            st, _, _ = self.reg.request("PUT", f"{ART}/0/{run}/artifacts/{path}", body=data, headers=self.auth)
            self.assertEqual(st, 200)
        listing = self.ok("GET", ART, path=f"0/{run}/artifacts")
        self.assertEqual(sorted((f["path"], f["is_dir"]) for f in listing["files"]),
                         [("model", True), ("notes.txt", False), ("plots", True)])
        self.assertEqual([f["file_size"] for f in listing["files"] if f["path"] == "notes.txt"], [5])
        self.assertNotIn("file_size", [f for f in listing["files"] if f["is_dir"]][0])
        listing = self.ok("GET", ART, path=root)
        self.assertEqual(sorted(f["path"] for f in listing["files"]), sorted(files))
        self.assertTrue(all(not f["is_dir"] and f["file_size"] == len(files[f["path"]])
                            for f in listing["files"]))
        self.assertEqual(self.ok("GET", ART, path="nothing/here"), {})
        st, h, data = self.reg.request("GET", f"{ART}/{root}/model.json", raw=True)
        self.assertEqual((st, data), (200, self.model_json))
        # the bytes are a blob of the store, under their digest
        st, _, data = self.reg.request("GET", "/v1/blobs/sha256:" + hashlib.sha256(self.model_json).hexdigest(),
                                       raw=True)
        self.assertEqual((st, data), (200, self.model_json))
        # an overwrite points the path at the new bytes
        self.reg.request("PUT", f"{ART}/0/{run}/artifacts/notes.txt", body=b"bye", headers=self.auth)
        self.assertEqual(self.reg.request("GET", f"{ART}/0/{run}/artifacts/notes.txt", raw=True)[2], b"bye")
        self.mlflow_error(self.reg.request("GET", f"{ART}/0/{run}/artifacts/missing"), 404,
                          "RESOURCE_DOES_NOT_EXIST", "missing")
        self.mlflow_error(self.reg.request("PUT", f"{ART}/0/../etc", body=b"x", headers=self.auth), 400,
                          "INVALID_PARAMETER_VALUE", "..")
        st, _, _ = self.reg.request("PUT", f"{ART}/0/x", body=b"x")  # no token
        self.assertEqual(st, 401)

    def test_artifact_uploads_have_the_blob_bound(self):
        reg = self.start("registry", args=["--max-blob-size", "1K"])
        st, _, body = reg.request("PUT", f"{ART}/0/r/artifacts/big.bin", body=b"x" * 2048)
        self.assertEqual(st, 413, body)
        st, _, _ = reg.request("PUT", f"{ART}/0/r/artifacts/small.bin", body=b"x" * 1024)
        self.assertEqual(st, 200)
        st, _, listing = reg.request("GET", q(ART, path="0/r/artifacts"))
        self.assertEqual(listing["files"], [{"path": "small.bin", "is_dir": False, "file_size": 1024}])
        # nothing of the refused upload is left behind
        self.assertEqual(os.listdir(os.path.join(reg.data, "blobs", "tmp")), [])

    def test_kill9_during_an_upload_leaves_no_artifact(self):
        """A registry killed mid-upload: after a restart on the same data, the
        path does not exist and no temp file is left."""
        import socket
        reg = self.start("registry")
        sock = socket.create_connection(("127.0.0.1", reg.port), timeout=30)
        sock.sendall(f"PUT {ART}/0/r/artifacts/model.json HTTP/1.1\r\nHost: x\r\n"
                     f"Content-Length: {4 << 20}\r\n\r\n".encode() + b"{" * (256 << 10))
        tmp = os.path.join(reg.data, "blobs", "tmp")
        deadline = time.time() + 20
        while time.time() < deadline and not os.listdir(tmp):
            time.sleep(0.05)
        self.assertTrue(os.listdir(tmp), "the upload never reached the temp dir")
        reg.kill9()
        sock.close()
        reg.start()
        self.assertEqual(os.listdir(tmp), [])
        st, _, body = reg.request("GET", f"{ART}/0/r/artifacts/model.json")
        self.assertEqual((st, body["error_code"]), (404, "RESOURCE_DOES_NOT_EXIST"))
        self.assertEqual(reg.request("GET", q(ART, path="0/r/artifacts"))[2], {})

    def test_register_alias_load_and_serve(self):
        run = "0123456789abcdef0123456789abcdef"
        root, files = self.log_model_dir(run)
        mv = self.register_model("churn", f"mlflow-artifacts:/{root}", run)
        self.assertEqual((mv["name"], mv["version"], mv["current_stage"], mv["run_id"], mv["source"]),
                         ("churn", "1", "None", run, f"mlflow-artifacts:/{root}"))
        self.assertIsInstance(mv["creation_timestamp"], int)
        self.assertEqual(mv["aliases"], [])
        # the same model through Quern's API: an xgboost manifest from the MLmodel
        st, _, v = self.reg.request("GET", "/v1/models/churn/versions/1")
        self.assertEqual(v["manifest"]["kind"], "xgboost")
        self.assertEqual([i["name"] for i in v["manifest"]["inputs"]], FEATURES)
        self.assertEqual(v["manifest"]["files"]["model.json"],
                         "sha256:" + hashlib.sha256(self.model_json).hexdigest())

        # a second version from runs:/ (what register_model("runs:/RUN/model") may send)
        run2 = "fedcba9876543210fedcba9876543210"
        self.log_model_dir(run2, exp="3")
        mv2 = self.register_model("churn", f"runs:/{run2}/model", run2)
        self.assertEqual(mv2["version"], "2")
        st, _, v2 = self.reg.request("GET", "/v1/models/churn/versions/2")
        self.assertEqual(v2["manifest"]["kind"], "xgboost")

        # MlflowClient.set_registered_model_alias: a Quern alias move
        self.assertEqual(self.ok("POST", f"{API}/registered-models/alias",
                                 {"name": "churn", "alias": "production", "version": "2"}), {})
        self.assertEqual(self.ok("POST", f"{API}/registered-models/alias",
                                 {"name": "churn", "alias": "production", "version": "1"}), {})
        st, _, a = self.reg.request("GET", "/v1/models/churn/aliases/production")
        self.assertEqual(a["version"], 1)
        hist = self.reg.request("GET", "/v1/models/churn/aliases/production/history")[2]["history"]
        self.assertEqual([(h["from_version"], h["to_version"], h["who"]) for h in hist],
                         [(2, 1, "mlflow-ci"), (None, 2, "mlflow-ci")])
        evs = [e["event"] for e in self.reg.request("GET", "/v1/events")[2]["events"]]
        self.assertEqual([e["data"]["version"] for e in evs if e["type"] == "quern.model.promoted"], [2, 1])

        # get_model_version_by_alias
        got = self.ok("GET", f"{API}/registered-models/alias", name="churn", alias="production")["model_version"]
        self.assertEqual((got["version"], got["aliases"]), ("1", ["production"]))
        self.mlflow_error(self.call("GET", f"{API}/registered-models/alias", name="churn", alias="canary"),
                          404, "RESOURCE_DOES_NOT_EXIST", "canary")

        # loading models:/churn@production: by alias, download URI, list, download
        uri = self.ok("GET", f"{API}/model-versions/get-download-uri", name="churn",
                      version=got["version"])["artifact_uri"]
        self.assertEqual(uri, f"mlflow-artifacts:/{root}")
        listing = self.ok("GET", ART, path=uri[len("mlflow-artifacts:/"):])
        for f in listing["files"]:
            st, _, data = self.reg.request("GET", f"{ART}/{root}/{f['path']}", raw=True)
            self.assertEqual((st, data), (200, files[f["path"]]))

        # registered model as get shows it
        rm = self.ok("GET", f"{API}/registered-models/get", name="churn")["registered_model"]
        self.assertEqual(rm["aliases"], [{"alias": "production", "version": "1"}])
        self.assertEqual([v["version"] for v in rm["latest_versions"]], ["2"])

        # quern-serve follows production and answers as Python xgboost does
        serve = Service("serve", env={"QUERN_HOME": self.reg.data},
                        args=["--models", "churn", "--grpc-listen", "off",
                              "--registry", f"http://127.0.0.1:{self.reg.port}"])
        self.services.append(serve)
        serve.start(timeout=30)
        rows = self.X[:40]
        body = {"inputs": [{"name": c, "datatype": "FP64", "shape": [len(rows)],
                            "data": rows[:, i].tolist()} for i, c in enumerate(FEATURES)]}
        st, _, out = serve.request("POST", "/v2/models/churn/infer", body)
        self.assertEqual(st, 200, out)
        want = self.booster.predict(xgb.DMatrix(rows.astype(np.float32)))
        got = np.array(out["outputs"][0]["data"])
        self.assertLess(float(np.max(np.abs(got - want))), 1e-6)
        self.assertEqual(out.get("model_version"), "1")

    def test_mlflow3_log_model_then_register_models_uri(self):
        """MLflow 3: mlflow.xgboost.log_model(booster, name="model") in a run is
        POST logged-models, one artifacts PUT per file under its artifact_uri,
        PATCH logged-models/<id> READY, runs/outputs; register_model("models:/m-...")
        is GET logged-models/<id>, registered-models/create, model-versions/create
        with that source, which becomes a servable xgboost version."""
        run = self.ok("POST", f"{API}/runs/create", {"experiment_id": "0", "start_time": 1764640000000})
        run_id = run["run"]["info"]["run_id"]
        lm = self.ok("POST", f"{API}/logged-models",
                     {"experiment_id": "0", "name": "model", "model_type": None, "source_run_id": run_id,
                      "params": [{"key": "max_depth", "value": "3"}],
                      "tags": [{"key": "mlflow.source.name", "value": "train.py"}]})["model"]
        info = lm["info"]
        mid = info["model_id"]
        self.assertRegex(mid, r"^m-[0-9a-f]{32}$")
        self.assertEqual((info["experiment_id"], info["name"], info["source_run_id"], info["status"]),
                         ("0", "model", run_id, "LOGGED_MODEL_PENDING"))
        self.assertEqual(info["artifact_uri"], f"mlflow-artifacts:/0/models/{mid}/artifacts")
        self.assertEqual(info["tags"], [{"key": "mlflow.source.name", "value": "train.py"}])
        self.assertEqual(lm["data"]["params"], [{"key": "max_depth", "value": "3"}])
        self.assertIsInstance(info["creation_timestamp_ms"], int)
        # the files, through the artifacts proxy under artifact_uri
        root = f"0/models/{mid}/artifacts"
        for name, data in {"MLmodel": MLMODEL.format(run_id=run_id).encode(), "model.json": self.model_json,
                           "requirements.txt": b"mlflow==3.1.0\nxgboost==2.0.3\n"}.items():
            st, _, body = self.reg.request("PUT", f"{ART}/{root}/{name}", body=data,
                                           headers={**self.auth, "Content-Type": "application/octet-stream"})
            self.assertEqual((st, body), (200, {}))
        done = self.ok("PATCH", f"{API}/logged-models/{mid}", {"model_id": mid, "status": "LOGGED_MODEL_READY"})
        self.assertEqual(done["model"]["info"]["status"], "LOGGED_MODEL_READY")
        self.assertEqual(self.ok("POST", f"{API}/runs/outputs",
                                 {"run_id": run_id, "models": [{"model_id": mid, "step": 0}]}), {})
        # tags, params, search
        got = self.ok("PATCH", f"{API}/logged-models/{mid}/tags",
                      {"tags": [{"key": "team", "value": "growth"}]})["model"]
        self.assertEqual(sorted(t["key"] for t in got["info"]["tags"]), ["mlflow.source.name", "team"])
        self.assertEqual(self.ok("DELETE", f"{API}/logged-models/{mid}/tags/team"), {})
        self.assertEqual(self.ok("POST", f"{API}/logged-models/{mid}/params",
                                 {"params": [{"key": "eta", "value": "0.3"}]}), {})
        got = self.ok("GET", f"{API}/logged-models/{mid}")["model"]
        self.assertEqual([t["key"] for t in got["info"]["tags"]], ["mlflow.source.name"])
        self.assertEqual(got["data"]["params"], [{"key": "eta", "value": "0.3"}, {"key": "max_depth", "value": "3"}])
        found = self.ok("POST", f"{API}/logged-models/search", {"experiment_ids": ["0"], "max_results": 10})
        self.assertEqual([m["info"]["model_id"] for m in found["models"]], [mid])
        self.assertEqual(self.ok("POST", f"{API}/logged-models/search", {"experiment_ids": ["7"]})["models"], [])
        # bad input: unknown ids 404, a bad status or experiment 400/404, in MLflow's shape
        self.mlflow_error(self.call("GET", f"{API}/logged-models/m-{'0' * 32}"), 404, "RESOURCE_DOES_NOT_EXIST",
                          "not found")
        self.mlflow_error(self.call("PATCH", f"{API}/logged-models/{mid}", {"status": "DONE"}), 400,
                          "INVALID_PARAMETER_VALUE", "LOGGED_MODEL_READY")
        self.mlflow_error(self.call("POST", f"{API}/logged-models", {"experiment_id": "42"}), 404,
                          "RESOURCE_DOES_NOT_EXIST", "42")
        self.mlflow_error(self.call("POST", f"{API}/logged-models", {"name": "x"}), 400,
                          "INVALID_PARAMETER_VALUE", "experiment_id")
        # register_model("models:/m-...", "churn")
        self.ok("GET", f"{API}/logged-models/{mid}")
        mv = self.register_model("churn", f"models:/{mid}", run_id)
        self.assertEqual((mv["version"], mv["source"], mv["run_id"]), ("1", f"models:/{mid}", run_id))
        st, _, v = self.reg.request("GET", "/v1/models/churn/versions/1")
        self.assertEqual(v["manifest"]["kind"], "xgboost")
        self.assertEqual(v["manifest"]["files"]["model.json"],
                         "sha256:" + hashlib.sha256(self.model_json).hexdigest())
        self.mlflow_error(self.call("POST", f"{API}/model-versions/create",
                                    {"name": "churn", "source": f"models:/m-{'1' * 32}"}),
                          400, "INVALID_PARAMETER_VALUE", "no logged model")
        self.assertEqual(self.ok("DELETE", f"{API}/logged-models/{mid}"), {})
        self.mlflow_error(self.call("GET", f"{API}/logged-models/{mid}"), 404, "RESOURCE_DOES_NOT_EXIST")

    def test_manifest_inputs_fall_back_and_bad_models(self):
        run = "11112222333344445555666677778888"
        base = f"0/{run}/artifacts"
        # no signature, no feature names: f0..f3 from num_feature
        mlmodel = MLMODEL.format(run_id=run).split("signature:")[0]
        for p, d in ((f"{base}/bare/MLmodel", mlmodel.encode()), (f"{base}/bare/model.json", self.model_json),
                     (f"{base}/ubj/MLmodel", mlmodel.replace("model_format: json", "model_format: ubj")
                      .replace("data: model.json", "data: model.ubj").encode()),
                     (f"{base}/sk/MLmodel", b"flavors:\n  sklearn:\n    pickled_model: model.pkl\n")):
            self.assertEqual(self.reg.request("PUT", f"{ART}/{p}", body=d, headers=self.auth)[0], 200)
        self.ok("POST", f"{API}/registered-models/create", {"name": "m"})
        self.ok("POST", f"{API}/model-versions/create", {"name": "m", "source": f"mlflow-artifacts:/{base}/bare"})
        man = self.reg.request("GET", "/v1/models/m/versions/1")[2]["manifest"]
        self.assertEqual([i["name"] for i in man["inputs"]], ["f0", "f1", "f2", "f3"])
        # a binary XGBoost model: refused, saying how to log it
        self.mlflow_error(self.call("POST", f"{API}/model-versions/create",
                                    {"name": "m", "source": f"mlflow-artifacts:/{base}/ubj"}),
                          400, "INVALID_PARAMETER_VALUE", "ubj", "model_format")
        # another flavour, or a source elsewhere: registered, kind mlflow (not servable)
        for src in (f"mlflow-artifacts:/{base}/sk", "s3://bucket/models/x"):
            mv = self.ok("POST", f"{API}/model-versions/create", {"name": "m", "source": src})["model_version"]
            man = self.reg.request("GET", f"/v1/models/m/versions/{mv['version']}")[2]["manifest"]
            self.assertEqual((man["kind"], man["source"]), ("mlflow", src))
        self.mlflow_error(self.call("POST", f"{API}/model-versions/create", {"name": "nope", "source": "s3://x"}),
                          404, "RESOURCE_DOES_NOT_EXIST", "nope")
        self.mlflow_error(self.call("POST", f"{API}/model-versions/create", {"name": "m"}),
                          400, "INVALID_PARAMETER_VALUE", "source")

    def test_registered_models_crud_tags_and_search(self):
        for n in ("ads-ctr", "Ads-Rank", "churn", "recs"):
            rm = self.ok("POST", f"{API}/registered-models/create",
                         {"name": n, "tags": [{"key": "team", "value": "growth" if n != "recs" else "ml"}],
                          "description": f"the {n} model"})["registered_model"]
            self.assertEqual((rm["name"], rm["tags"], rm["description"]),
                             (n, [{"key": "team", "value": "growth" if n != "recs" else "ml"}], f"the {n} model"))
        self.mlflow_error(self.call("POST", f"{API}/registered-models/create", {"name": "churn"}),
                          400, "RESOURCE_ALREADY_EXISTS", "churn")
        self.mlflow_error(self.call("POST", f"{API}/registered-models/create", {}),
                          400, "INVALID_PARAMETER_VALUE", "name")
        self.mlflow_error(self.call("GET", f"{API}/registered-models/get", name="ghost"),
                          404, "RESOURCE_DOES_NOT_EXIST", "ghost")

        # search_registered_models (GET, max_results=100 by default in the client)
        def names(**params):
            out = self.ok("GET", f"{API}/registered-models/search", **params)
            return [m["name"] for m in out.get("registered_models", [])], out.get("next_page_token")

        self.assertEqual(names(max_results=100)[0], ["Ads-Rank", "ads-ctr", "churn", "recs"])
        self.assertEqual(names(filter="name LIKE 'ads%'")[0], ["ads-ctr"])
        self.assertEqual(names(filter="name ILIKE 'ads%'")[0], ["Ads-Rank", "ads-ctr"])
        self.assertEqual(names(filter="name = 'churn'")[0], ["churn"])
        self.assertEqual(names(filter="tags.team = 'ml'")[0], ["recs"])
        self.assertEqual(names(filter="name ILIKE '%a%' AND tags.team != 'ml'")[0],
                         ["Ads-Rank", "ads-ctr"])
        self.assertEqual(names(order_by=["name DESC"])[0], ["recs", "churn", "ads-ctr", "Ads-Rank"])
        first, tok = names(max_results=3)
        self.assertEqual(len(first), 3)
        rest, tok2 = names(max_results=3, page_token=tok)
        self.assertEqual((rest, tok2), (["recs"], None))
        self.mlflow_error(self.call("GET", f"{API}/registered-models/search", filter="name ~ 'x'"),
                          400, "INVALID_PARAMETER_VALUE", "character 6")
        self.mlflow_error(self.call("GET", f"{API}/registered-models/search", filter="run_id = 'x'"),
                          400, "INVALID_PARAMETER_VALUE", "run_id")

        # update, tags, rename, delete
        rm = self.ok("PATCH", f"{API}/registered-models/update",
                     {"name": "churn", "description": "who leaves"})["registered_model"]
        self.assertEqual(rm["description"], "who leaves")
        self.assertEqual(self.ok("POST", f"{API}/registered-models/set-tag",
                                 {"name": "churn", "key": "owner", "value": "ana"}), {})
        tags = self.ok("GET", f"{API}/registered-models/get", name="churn")["registered_model"]["tags"]
        self.assertEqual(sorted((t["key"], t["value"]) for t in tags), [("owner", "ana"), ("team", "growth")])
        self.assertEqual(self.reg.request("GET", "/v1/models?tag=owner:ana")[2]["models"][0]["name"], "churn")
        self.assertEqual(self.ok("DELETE", f"{API}/registered-models/delete-tag", {"name": "churn", "key": "owner"}),
                         {})
        self.mlflow_error(self.call("DELETE", f"{API}/registered-models/delete-tag", {"name": "churn", "key": "owner"}),
                          404, "RESOURCE_DOES_NOT_EXIST", "owner")
        rm = self.ok("POST", f"{API}/registered-models/rename", {"name": "churn", "new_name": "attrition"})
        self.assertEqual(rm["registered_model"]["name"], "attrition")
        self.mlflow_error(self.call("POST", f"{API}/registered-models/rename", {"name": "recs", "new_name": "attrition"}),
                          400, "RESOURCE_ALREADY_EXISTS", "attrition")
        self.assertEqual(self.reg.request("GET", "/v1/models/attrition")[0], 200)
        self.assertEqual(self.ok("DELETE", f"{API}/registered-models/delete", {"name": "attrition"}), {})
        self.mlflow_error(self.call("DELETE", f"{API}/registered-models/delete", {"name": "attrition"}),
                          404, "RESOURCE_DOES_NOT_EXIST")

    def test_model_versions_search_tags_latest_and_delete(self):
        for name in ("a", "b"):
            self.ok("POST", f"{API}/registered-models/create", {"name": name})
        for i, (name, run) in enumerate((("a", "r1"), ("a", "r2"), ("b", "r1"), ("a", "r3"))):
            self.ok("POST", f"{API}/model-versions/create",
                    {"name": name, "source": f"s3://bucket/{name}/{i}", "run_id": run,
                     "tags": [{"key": "k", "value": str(i)}]})

        def versions(**params):
            out = self.ok("GET", f"{API}/model-versions/search", **params)
            return [(m["name"], m["version"]) for m in out.get("model_versions", [])]

        # search_model_versions (max_results=10000 in the client by default)
        self.assertEqual(versions(max_results=10000), [("a", "3"), ("a", "2"), ("a", "1"), ("b", "1")])
        self.assertEqual(versions(filter="name='a'"), [("a", "3"), ("a", "2"), ("a", "1")])
        self.assertEqual(versions(filter="run_id = 'r1'"), [("a", "1"), ("b", "1")])
        self.assertEqual(versions(filter="run_id IN ('r2', 'r3')"), [("a", "3"), ("a", "2")])
        self.assertEqual(versions(filter="source_path = 's3://bucket/b/2'"), [("b", "1")])
        self.assertEqual(versions(filter="tags.k = '1' AND name = 'a'"), [("a", "2")])
        self.assertEqual(versions(filter="name = 'a'", order_by=["version_number ASC"]),
                         [("a", "1"), ("a", "2"), ("a", "3")])
        self.mlflow_error(self.call("GET", f"{API}/model-versions/search", filter="name = 'a' OR name = 'b'"),
                          400, "INVALID_PARAMETER_VALUE", "OR")

        mv = self.ok("GET", f"{API}/model-versions/get", name="a", version="2")["model_version"]
        self.assertEqual((mv["tags"], mv["run_id"], mv["source"]),
                         ([{"key": "k", "value": "1"}], "r2", "s3://bucket/a/1"))
        self.ok("PATCH", f"{API}/model-versions/update", {"name": "a", "version": "2", "description": "d"})
        self.ok("POST", f"{API}/model-versions/set-tag", {"name": "a", "version": "2", "key": "x", "value": "y"})
        self.ok("DELETE", f"{API}/model-versions/delete-tag", {"name": "a", "version": "2", "key": "k"})
        mv = self.ok("GET", f"{API}/model-versions/get", name="a", version="2")["model_version"]
        self.assertEqual((mv["description"], mv["tags"]), ("d", [{"key": "x", "value": "y"}]))
        self.mlflow_error(self.call("GET", f"{API}/model-versions/get", name="a", version="9"),
                          404, "RESOURCE_DOES_NOT_EXIST", "version=9")
        self.mlflow_error(self.call("GET", f"{API}/model-versions/get", name="a", version="x"),
                          400, "INVALID_PARAMETER_VALUE", "version")

        # get_latest_versions: every stage is None
        lv = self.ok("POST", f"{API}/registered-models/get-latest-versions", {"name": "a"})["model_versions"]
        self.assertEqual([v["version"] for v in lv], ["3"])
        self.assertEqual(self.ok("POST", f"{API}/registered-models/get-latest-versions",
                                 {"name": "a", "stages": ["Production"]})["model_versions"], [])

        # deleting a version takes its aliases with it, as moves in the history
        self.ok("POST", f"{API}/registered-models/alias", {"name": "a", "alias": "champion", "version": "2"})
        self.mlflow_error(self.call("POST", f"{API}/registered-models/alias",
                                    {"name": "a", "alias": "latest", "version": "2"}),
                          400, "INVALID_PARAMETER_VALUE", "reserved")
        self.mlflow_error(self.call("POST", f"{API}/registered-models/alias",
                                    {"name": "a", "alias": "x", "version": "7"}),
                          404, "RESOURCE_DOES_NOT_EXIST", "version=7")
        self.assertEqual(self.ok("DELETE", f"{API}/model-versions/delete", {"name": "a", "version": "2"}), {})
        self.mlflow_error(self.call("GET", f"{API}/model-versions/get", name="a", version="2"),
                          404, "RESOURCE_DOES_NOT_EXIST")
        hist = self.reg.request("GET", "/v1/models/a/aliases/champion/history")[2]["history"]
        self.assertEqual([(h["from_version"], h["to_version"], h["reason"]) for h in hist],
                         [(2, None, "version deleted"), (None, 2, "")])
        # numbers are never reused
        mv = self.ok("POST", f"{API}/model-versions/create", {"name": "a", "source": "s3://x"})["model_version"]
        self.assertEqual(mv["version"], "4")
        # alias delete through MLflow
        self.ok("POST", f"{API}/registered-models/alias", {"name": "a", "alias": "champion", "version": "4"})
        self.assertEqual(self.ok("DELETE", f"{API}/registered-models/alias", {"name": "a", "alias": "champion"}), {})
        self.assertEqual(self.reg.request("GET", "/v1/models/a/aliases/champion")[0], 404)

    def test_download_uri_of_a_quern_native_version(self):
        data = b"native weights"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.reg.request("PUT", f"/v1/blobs/{digest}", body=data, headers=self.auth)
        self.call("POST", "/v1/models", {"name": "native"})
        man = {"format": "quern.model/1", "kind": "xgboost",
               "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
               "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1]}], "files": {"model.json": digest}}
        self.assertEqual(self.call("POST", "/v1/models/native/versions", {"manifest": man})[0], 201)
        uri = self.ok("GET", f"{API}/model-versions/get-download-uri", name="native", version="1")["artifact_uri"]
        self.assertEqual(uri, "mlflow-artifacts:/quern-models/native/1")
        listing = self.ok("GET", ART, path="quern-models/native/1")
        self.assertEqual(listing["files"], [{"path": "model.json", "is_dir": False, "file_size": len(data)}])
        self.assertEqual(self.reg.request("GET", f"{ART}/quern-models/native/1/model.json", raw=True)[2], data)


if __name__ == "__main__":
    unittest.main()
