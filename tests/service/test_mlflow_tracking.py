"""Black-box tests of tracking in quern-registry: MLflow's tracking REST API
as the stock mlflow Python client calls it, and Quern's own /v1 runs API.

The mlflow package cannot be installed here, so each test replays the
requests the client makes for one everyday call (mlflow/tracking/fluent.py
and its RestStore: the endpoints, methods, and the fields it sends, with
GETs as query strings) and checks the response fields the client reads.
  set_experiment(name): GET experiments/get-by-name (404 -> None), POST
      experiments/create, GET experiments/get
  start_run(): POST runs/create {experiment_id, user_id, start_time, tags, run_name}
  log_param / set_tag / log_metric: runs/log-parameter, runs/set-tag,
      runs/log-metric {run_uuid, run_id, key, value, timestamp, step}
  log_params / log_metrics / set_tags: runs/log-batch
  end_run(): POST runs/update {run_uuid, run_id, status, end_time}
  search_runs(filter_string, order_by): POST runs/search, paged by next_page_token
  get_metric_history: GET metrics/get-history
"""
import hashlib
import json
import time
import unittest
import urllib.parse

from harness import ServiceTest

API = "/api/2.0/mlflow/"


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class MlflowTrackingTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.reg = self.start("registry")

    # -- helpers ------------------------------------------------------------

    def call(self, method, endpoint, body=None, prefix=API):
        """One MLflow call: GETs send body as a query string, POSTs as JSON."""
        path = prefix + endpoint
        if method == "GET":
            if body:
                path += "?" + urllib.parse.urlencode(body, doseq=True)
            body = None
        return self.reg.request(method, path, body)

    def ok(self, method, endpoint, body=None):
        st, _, out = self.call(method, endpoint, body)
        self.assertEqual(st, 200, out)
        return out

    def mlflow_error(self, resp, status, code, *needles):
        st, h, body = resp
        self.assertEqual(st, status, body)
        self.assertTrue(h.get("content-type", "").startswith("application/json"))
        self.assertEqual(body["error_code"], code, body)
        for n in needles:
            self.assertIn(n, body["message"])

    def set_experiment(self, name):
        st, _, body = self.call("GET", "experiments/get-by-name", {"experiment_name": name})
        if st == 404:
            self.assertEqual(body["error_code"], "RESOURCE_DOES_NOT_EXIST")
            eid = self.ok("POST", "experiments/create", {"name": name})["experiment_id"]
            return self.ok("GET", "experiments/get", {"experiment_id": eid})["experiment"]
        self.assertEqual(st, 200, body)
        return body["experiment"]

    def start_run(self, experiment_id, run_name=None, tags=None, start_time=None):
        now = start_time or int(time.time() * 1000)
        t = {"mlflow.user": "ada", "mlflow.source.name": "train.py", "mlflow.source.type": "LOCAL"}
        if run_name:
            t["mlflow.runName"] = run_name
        t.update(tags or {})
        body = {"experiment_id": experiment_id, "user_id": "ada", "start_time": now,
                "tags": [{"key": k, "value": v} for k, v in t.items()]}
        if run_name:
            body["run_name"] = run_name
        return self.ok("POST", "runs/create", body)["run"]

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        now = int(time.time() * 1000)
        return self.call("POST", "runs/log-batch", {
            "run_id": run_id,
            "metrics": [{"key": k, "value": v, "timestamp": now, "step": s} for k, v, s in metrics],
            "params": [{"key": k, "value": str(v)} for k, v in params],
            "tags": [{"key": k, "value": str(v)} for k, v in tags]})

    def search_all(self, body):
        """The run ids search_runs answers for body, page after page until
        next_page_token is absent."""
        got, token = [], None
        while True:
            out = self.ok("POST", "runs/search", dict(body, page_token=token) if token else body)
            got += [r["info"]["run_id"] for r in out.get("runs", [])]
            token = out.get("next_page_token")
            if not token:
                return got

    # -- the everyday calls -------------------------------------------------

    def test_set_experiment(self):
        exp = self.set_experiment("churn")
        self.assertEqual(exp["name"], "churn")
        self.assertEqual(exp["lifecycle_stage"], "active")
        self.assertEqual(exp["artifact_location"], f"mlflow-artifacts:/{exp['experiment_id']}")
        self.assertIsInstance(exp["creation_time"], int)
        self.assertNotEqual(exp["experiment_id"], "0")
        # the second time it is found by name, not created
        again = self.set_experiment("churn")
        self.assertEqual(again["experiment_id"], exp["experiment_id"])
        self.mlflow_error(self.call("POST", "experiments/create", {"name": "churn"}),
                          400, "RESOURCE_ALREADY_EXISTS", "churn")
        # the Default experiment exists from the start
        default = self.ok("GET", "experiments/get", {"experiment_id": "0"})["experiment"]
        self.assertEqual(default["name"], "Default")
        self.mlflow_error(self.call("GET", "experiments/get", {"experiment_id": "42"}),
                          404, "RESOURCE_DOES_NOT_EXIST", "42")
        # search lists both; rename, tag, delete and restore
        exps = self.ok("POST", "experiments/search", {"max_results": 1000, "view_type": "ACTIVE_ONLY"})
        self.assertEqual({e["name"] for e in exps["experiments"]}, {"Default", "churn"})
        page = self.ok("POST", "experiments/search", {"max_results": 1})
        self.assertEqual(len(page["experiments"]), 1)
        rest = self.ok("POST", "experiments/search", {"max_results": 1, "page_token": page["next_page_token"]})
        self.assertEqual(rest["experiments"][0]["name"], "churn")
        # order_by: a field and ASC/DESC, ties by id; ordered pages go on in that order
        self.set_experiment("attrition")
        names = lambda b: [e["name"] for e in b["experiments"]]
        self.assertEqual(names(self.ok("POST", "experiments/search", {"order_by": ["name DESC"]})),
                         ["churn", "attrition", "Default"])
        self.assertEqual(names(self.ok("POST", "experiments/search", {"order_by": ["name"]})),
                         ["Default", "attrition", "churn"])
        self.assertEqual(names(self.ok("POST", "experiments/search",
                                       {"order_by": ["creation_time DESC", "experiment_id ASC"]})),
                         ["attrition", "churn", "Default"])
        first = self.ok("POST", "experiments/search", {"order_by": ["name DESC"], "max_results": 2})
        self.assertEqual(names(first), ["churn", "attrition"])
        second = self.ok("POST", "experiments/search", {"order_by": ["name DESC"], "max_results": 2,
                                                        "page_token": first["next_page_token"]})
        self.assertEqual(names(second), ["Default"])
        self.assertNotIn("next_page_token", second)
        self.mlflow_error(self.call("POST", "experiments/search", {"order_by": ["artifact_location"]}),
                          400, "INVALID_PARAMETER_VALUE", "artifact_location")
        self.mlflow_error(self.call("POST", "experiments/search", {"order_by": ["name UP"]}),
                          400, "INVALID_PARAMETER_VALUE", "ASC or DESC")
        att = self.ok("GET", "experiments/get-by-name", {"experiment_name": "attrition"})["experiment"]
        self.ok("POST", "experiments/delete", {"experiment_id": att["experiment_id"]})
        eid = exp["experiment_id"]
        self.ok("POST", "experiments/set-experiment-tag", {"experiment_id": eid, "key": "team", "value": "growth"})
        found = self.ok("POST", "experiments/search", {"filter": "name LIKE 'ch%' and tags.team = 'growth'"
                                                       .replace("name", "attributes.name", 1)})
        self.assertEqual([e["name"] for e in found["experiments"]], ["churn"])
        self.mlflow_error(self.call("POST", "experiments/search", {"filter": "params.a = 'b'"}),
                          400, "INVALID_PARAMETER_VALUE", "no metrics or params")
        self.ok("POST", "experiments/update", {"experiment_id": eid, "new_name": "churn2"})
        got = self.ok("GET", "experiments/get-by-name", {"experiment_name": "churn2"})["experiment"]
        self.assertEqual(got["tags"], [{"key": "team", "value": "growth"}])
        self.ok("POST", "experiments/delete", {"experiment_id": eid})
        got = self.ok("GET", "experiments/get", {"experiment_id": eid})["experiment"]
        self.assertEqual(got["lifecycle_stage"], "deleted")
        self.mlflow_error(self.call("POST", "runs/create", {"experiment_id": eid}),
                          400, "INVALID_PARAMETER_VALUE", "active")
        self.ok("POST", "experiments/restore", {"experiment_id": eid})
        # the UI's prefix answers too
        st, _, body = self.call("GET", "experiments/get", {"experiment_id": "0"}, prefix="/ajax-api/2.0/mlflow/")
        self.assertEqual((st, body["experiment"]["name"]), (200, "Default"))

    def test_start_log_end_run(self):
        exp = self.set_experiment("als")
        run = self.start_run(exp["experiment_id"], run_name="first")
        info = run["info"]
        rid = info["run_id"]
        self.assertRegex(rid, r"^[0-9a-f]{32}$")
        self.assertEqual(info["run_uuid"], rid)
        self.assertEqual((info["status"], info["run_name"], info["lifecycle_stage"]), ("RUNNING", "first", "active"))
        self.assertEqual(info["experiment_id"], exp["experiment_id"])
        self.assertEqual(info["artifact_uri"], f"mlflow-artifacts:/{exp['experiment_id']}/{rid}/artifacts")
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        self.assertEqual((tags["mlflow.runName"], tags["mlflow.user"]), ("first", "ada"))

        ids = {"run_uuid": rid, "run_id": rid}
        self.ok("POST", "runs/log-parameter", {**ids, "key": "factors", "value": "64"})
        self.ok("POST", "runs/log-parameter", {**ids, "key": "factors", "value": "64"})  # same value: fine
        self.mlflow_error(self.call("POST", "runs/log-parameter", {**ids, "key": "factors", "value": "32"}),
                          400, "INVALID_PARAMETER_VALUE", "factors", "64", "32")
        self.ok("POST", "runs/set-tag", {**ids, "key": "stage", "value": "dev"})
        now = int(time.time() * 1000)
        for step, loss in enumerate([0.9, 0.5, 0.3]):
            self.ok("POST", "runs/log-metric", {**ids, "key": "loss", "value": loss, "timestamp": now + step,
                                                "step": step})
        st, _, out = self.log_batch(rid, metrics=[("auc", 0.81, 3), ("ndcg", 0.4, 3)],
                                    params=[("reg", 0.01), ("iters", 15)], tags=[("owner", "ada")])
        self.assertEqual((st, out), (200, {}))
        self.ok("POST", "runs/log-metric", {**ids, "key": "bad", "value": "NaN", "timestamp": now})
        self.mlflow_error(self.call("POST", "runs/log-metric", {**ids, "key": "x", "value": "abc"}),
                          400, "INVALID_PARAMETER_VALUE", "'x'")
        end = now + 100
        out = self.ok("POST", "runs/update", {**ids, "status": "FINISHED", "end_time": end})
        self.assertEqual((out["run_info"]["status"], out["run_info"]["end_time"]), ("FINISHED", end))

        got = self.ok("GET", "runs/get", {"run_id": rid})["run"]
        data = got["data"]
        self.assertEqual({p["key"]: p["value"] for p in data["params"]},
                         {"factors": "64", "reg": "0.01", "iters": "15"})
        metrics = {m["key"]: m for m in data["metrics"]}
        self.assertEqual((metrics["loss"]["value"], metrics["loss"]["step"]), (0.3, 2))
        self.assertEqual(metrics["auc"]["value"], 0.81)
        self.assertEqual(metrics["bad"]["value"], "NaN")
        tags = {t["key"]: t["value"] for t in data["tags"]}
        self.assertEqual((tags["stage"], tags["owner"]), ("dev", "ada"))
        hist = self.ok("GET", "metrics/get-history", {"run_id": rid, "metric_key": "loss"})["metrics"]
        self.assertEqual([(m["step"], m["value"]) for m in hist], [(0, 0.9), (1, 0.5), (2, 0.3)])
        page = self.ok("GET", "metrics/get-history", {"run_id": rid, "metric_key": "loss", "max_results": 2})
        self.assertEqual(len(page["metrics"]), 2)
        rest = self.ok("GET", "metrics/get-history", {"run_id": rid, "metric_key": "loss",
                                                      "page_token": page["next_page_token"]})
        self.assertEqual([m["step"] for m in rest["metrics"]], [2])

        # delete-tag, delete and restore
        self.ok("POST", "runs/delete-tag", {"run_id": rid, "key": "stage"})
        self.mlflow_error(self.call("POST", "runs/delete-tag", {"run_id": rid, "key": "stage"}),
                          404, "RESOURCE_DOES_NOT_EXIST", "stage")
        self.ok("POST", "runs/delete", {"run_id": rid})
        self.assertEqual(self.ok("GET", "runs/get", {"run_id": rid})["run"]["info"]["lifecycle_stage"], "deleted")
        self.mlflow_error(self.call("POST", "runs/set-tag", {"run_id": rid, "key": "a", "value": "b"}),
                          400, "INVALID_PARAMETER_VALUE", "deleted")
        self.ok("POST", "runs/restore", {"run_id": rid})
        self.ok("POST", "runs/set-tag", {"run_id": rid, "key": "a", "value": "b"})

    def test_inputs_and_outputs(self):
        run = self.start_run("0")
        rid = run["info"]["run_id"]
        self.ok("POST", "runs/log-inputs", {"run_id": rid, "datasets": [{
            "tags": [{"key": "mlflow.data.context", "value": "training"}],
            "dataset": {"name": "retail", "digest": "abc123", "source_type": "local",
                        "source": "{\"uri\": \"/data/retail.csv\"}", "schema": "{}"}}]})
        self.ok("POST", "runs/outputs", {"run_id": rid, "models": [{"model_id": "m-123", "step": 3}]})
        got = self.ok("GET", "runs/get", {"run_id": rid})["run"]
        ds = got["inputs"]["dataset_inputs"][0]
        self.assertEqual((ds["dataset"]["name"], ds["dataset"]["digest"]), ("retail", "abc123"))
        self.assertEqual(ds["tags"][0]["value"], "training")
        self.assertEqual(got["outputs"]["model_outputs"], [{"model_id": "m-123", "step": 3}])
        self.mlflow_error(self.call("POST", "runs/log-inputs", {"run_id": rid, "datasets": [{"dataset": {}}]}),
                          400, "INVALID_PARAMETER_VALUE", "name")
        # search_runs(filter_string="datasets.name = ...") finds the run by its inputs
        other = self.start_run("0")["info"]["run_id"]
        ids = lambda flt: sorted(r["info"]["run_id"] for r in self.ok(
            "POST", "runs/search", {"experiment_ids": ["0"], "filter": flt})["runs"])
        self.assertEqual(ids("datasets.name = 'retail'"), [rid])
        self.assertEqual(ids("datasets.digest IN ('abc123', 'zzz') and datasets.name LIKE 'ret%'"), [rid])
        self.assertEqual(ids("datasets.name = 'adult'"), [])
        self.assertNotIn(other, ids("datasets.name ILIKE 'RETAIL'"))
        self.mlflow_error(self.call("POST", "runs/search", {"experiment_ids": ["0"],
                                                            "filter": "datasets.context = 'training'"}),
                          400, "INVALID_PARAMETER_VALUE", "datasets.name or datasets.digest")
        self.mlflow_error(self.call("POST", "runs/search", {"experiment_ids": ["0"],
                                                            "order_by": ["datasets.name"]}),
                          400, "INVALID_PARAMETER_VALUE", "datasets")

    def test_search_runs(self):
        exp = self.set_experiment("search")["experiment_id"]
        want = []
        for i in range(20):
            rid = self.start_run(exp, run_name=f"r{i}")["info"]["run_id"]
            kind = "xgboost" if i % 2 else "als"
            auc = round(0.5 + i * 0.02, 2)
            self.assertEqual(self.log_batch(rid, metrics=[("auc", auc, 0)], params=[("kind", kind)],
                                            tags=[("a b", "c" if i % 3 else "d")])[0], 200)
            if i % 4 != 1:
                self.ok("POST", "runs/update", {"run_id": rid, "status": "FINISHED",
                                                "end_time": int(time.time() * 1000)})
            if auc > 0.6 and kind == "xgboost" and i % 3 and i % 4 != 1:
                want.append((auc, rid))
        want = [rid for _, rid in sorted(want, reverse=True)]
        flt = ("metrics.auc > 0.6 and params.kind = 'xgboost' and tags.\"a b\" != 'd' "
               "and attributes.status = 'FINISHED'")
        # search_runs pages with next_page_token until it is absent
        got = self.search_all({"experiment_ids": [exp], "filter": flt, "run_view_type": "ACTIVE_ONLY",
                               "max_results": 2, "order_by": ["metrics.auc DESC"]})
        self.assertEqual(got, want)
        self.assertGreaterEqual(len(want), 2)
        # LIKE, ILIKE and attributes
        out = self.ok("POST", "runs/search", {"experiment_ids": [exp], "filter": "params.kind ILIKE 'XG%'"})
        self.assertEqual(len(out["runs"]), 10)
        out = self.ok("POST", "runs/search", {"experiment_ids": [exp], "filter": "params.kind LIKE 'XG%'"})
        self.assertEqual(out["runs"], [])
        out = self.ok("POST", "runs/search", {"experiment_ids": [exp], "filter": "attributes.run_name = 'r3'"})
        self.assertEqual([r["info"]["run_name"] for r in out["runs"]], ["r3"])
        # default order: newest first
        out = self.ok("POST", "runs/search", {"experiment_ids": [exp], "max_results": 3})
        self.assertEqual([r["info"]["run_name"] for r in out["runs"]], ["r19", "r18", "r17"])
        # a bad filter names the character where it goes wrong
        self.mlflow_error(self.call("POST", "runs/search", {"experiment_ids": [exp], "filter": "metrics.auc >> 1"}),
                          400, "INVALID_PARAMETER_VALUE", "character 14")
        self.mlflow_error(self.call("POST", "runs/search", {"experiment_ids": [exp], "order_by": ["metrics.auc UP"]}),
                          400, "INVALID_PARAMETER_VALUE", "character 13")
        self.mlflow_error(self.call("POST", "runs/search", {"experiment_ids": [exp], "page_token": "garbage"}),
                          400, "INVALID_PARAMETER_VALUE", "page_token")

    def test_search_runs_same_start_time(self):
        # Runs started in the same millisecond (a fast client, a batch on one
        # clock reading) come newest first, in one order on every page and
        # under every order_by that leaves them tied: the last tiebreak is the
        # order they were created in, never the random run id.
        exp = self.set_experiment("same-millisecond")["experiment_id"]
        created = [self.start_run(exp, run_name=f"t{i}", start_time=1700000000000)["info"]["run_id"]
                   for i in range(7)]
        for rid in created[::2]:
            self.assertEqual(self.log_batch(rid, params=[("kind", "als")])[0], 200)
        newest_first = created[::-1]
        for page_size in (1, 2, 3, 100):
            for order in ([], ["attributes.start_time DESC"], ["attributes.start_time ASC"], ["params.none"]):
                body = {"experiment_ids": [exp], "max_results": page_size, "order_by": order}
                self.assertEqual(self.search_all(body), newest_first, (page_size, order))
        # ties within an order_by value keep the same order: the runs with the
        # param first (ASC puts runs without the key last), each group newest first
        with_param = [rid for rid in newest_first if rid in created[::2]]
        without = [rid for rid in newest_first if rid not in created[::2]]
        self.assertEqual(self.search_all({"experiment_ids": [exp], "max_results": 2, "order_by": ["params.kind"]}),
                         with_param + without)

    def test_bad_input(self):
        rid = self.start_run("0")["info"]["run_id"]
        unknown = "0123456789abcdef0123456789abcdef"
        self.mlflow_error(self.call("GET", "runs/get", {"run_id": unknown}), 404, "RESOURCE_DOES_NOT_EXIST", unknown)
        self.mlflow_error(self.call("POST", "runs/log-metric", {"run_id": unknown, "key": "a", "value": 1}),
                          404, "RESOURCE_DOES_NOT_EXIST")
        self.mlflow_error(self.call("GET", "runs/get", {}), 400, "INVALID_PARAMETER_VALUE",
                          "Missing value for required parameter 'run_id'")
        self.mlflow_error(self.call("POST", "runs/create", {"experiment_id": "77"}), 404, "RESOURCE_DOES_NOT_EXIST")
        now = int(time.time() * 1000)
        over = [("m", 1.0, i) for i in range(1001)]
        self.mlflow_error(self.log_batch(rid, metrics=over), 400, "INVALID_PARAMETER_VALUE", "1000 metrics")
        self.mlflow_error(self.log_batch(rid, params=[(f"p{i}", 1) for i in range(101)]),
                          400, "INVALID_PARAMETER_VALUE", "100 params")
        self.mlflow_error(self.log_batch(rid, tags=[(f"t{i}", 1) for i in range(101)]),
                          400, "INVALID_PARAMETER_VALUE", "100 tags")
        # exactly at the limit is accepted, all of it in one go
        st, _, _ = self.log_batch(rid, metrics=[("m", float(i), i) for i in range(1000)])
        self.assertEqual(st, 200)
        hist = self.ok("GET", "metrics/get-history", {"run_id": rid, "metric_key": "m"})["metrics"]
        self.assertEqual(len(hist), 1000)
        # a batch that fails leaves nothing behind
        self.ok("POST", "runs/log-parameter", {"run_id": rid, "key": "p", "value": "1"})
        st, _, _ = self.log_batch(rid, metrics=[("after", 1.0, 0)], params=[("p", "2")])
        self.assertEqual(st, 400)
        run = self.ok("GET", "runs/get", {"run_id": rid})["run"]
        self.assertNotIn("after", [m["key"] for m in run["data"]["metrics"]])
        st, _, body = self.reg.request("POST", API + "runs/log-batch", b"{not json",
                                       headers={"Content-Type": "application/json"})
        self.assertEqual((st, body["error_code"]), (400, "INVALID_PARAMETER_VALUE"))
        self.mlflow_error(self.call("POST", "runs/log-metric", {"run_id": rid, "key": "../up", "value": 1,
                                                                "timestamp": now}),
                          400, "INVALID_PARAMETER_VALUE", "../up")
        self.mlflow_error(self.call("POST", "runs/update", {"run_id": rid, "status": "DONE"}),
                          400, "INVALID_PARAMETER_VALUE", "DONE")


class RunsV1Test(ServiceTest):
    """Quern's own tracking API: /v1/experiments, /v1/runs, search and lineage."""

    def setUp(self):
        super().setUp()
        self.reg = self.start("registry")

    def test_runs_and_lineage(self):
        r = self.reg.request
        st, h, exp = r("POST", "/v1/experiments", {"name": "churn", "tags": {"team": "growth"}})
        self.assertEqual(st, 201, exp)
        self.assertEqual((exp["name"], exp["tags"]), ("churn", {"team": "growth"}))
        self.assertEqual(h["location"], f"/v1/experiments/{exp['experiment_id']}")
        self.assertError(r("POST", "/v1/experiments", {"name": "churn"}), 409, "already_exists", "churn")
        self.assertError(r("POST", "/v1/experiments", {"name": "x", "colour": 1}), 400, "invalid_argument", "colour")
        st, _, lst = r("GET", "/v1/experiments?limit=1")
        self.assertEqual((st, len(lst["experiments"])), (200, 1))
        st, _, lst = r("GET", "/v1/experiments?limit=1&page_token=" + lst["next_page_token"])
        self.assertEqual(lst["experiments"][0]["name"], "churn")
        self.assertError(r("GET", "/v1/experiments/99"), 404, "not_found", "99")

        st, _, run = r("POST", "/v1/runs", {"experiment_id": exp["experiment_id"], "name": "als-64",
                                             "tags": {"trigger": "manual"}})
        self.assertEqual(st, 201, run)
        rid = run["run_id"]
        self.assertEqual((run["status"], run["name"], run["end_time"]), ("RUNNING", "als-64", None))

        data = b"user,item\n1,2\n"
        self.assertIn(r("PUT", f"/v1/blobs/{sha(data)}", body=data)[0], (200, 201))
        st, _, dsv = r("POST", "/v1/datasets/retail/versions",
                       {"manifest": {"format": "quern.dataset/1", "files": {"data.csv": sha(data)}}})
        self.assertEqual(st, 201, dsv)
        st, _, out = r("POST", f"/v1/runs/{rid}/log", {
            "params": {"factors": "64"}, "tags": {"stage": "dev"},
            "metrics": [{"key": "loss", "value": v, "step": i} for i, v in enumerate([3.0, 2.0, 1.5])],
            "inputs": [{"dataset": "retail", "version": dsv["version"]}]})
        self.assertEqual(st, 204, out)
        self.assertError(r("POST", f"/v1/runs/{rid}/log", {"params": {"factors": "32"}}),
                         400, "invalid_argument", "factors")
        self.assertError(r("POST", f"/v1/runs/{rid}/log", {"metrics": [{"key": "x", "value": "high"}]}),
                         400, "invalid_argument", "'x'")
        st, _, run = r("PATCH", f"/v1/runs/{rid}", {"status": "FINISHED"})
        self.assertEqual((st, run["status"]), (200, "FINISHED"), run)
        self.assertIsInstance(run["end_time"], int)
        self.assertEqual(run["params"], {"factors": "64"})
        self.assertEqual(run["metrics"]["loss"]["value"], 1.5)
        self.assertEqual(run["inputs"][0]["name"], "retail")
        st, _, hist = r("GET", f"/v1/runs/{rid}/metrics/loss")
        self.assertEqual([p["value"] for p in hist["history"]], [3.0, 2.0, 1.5])
        self.assertError(r("GET", "/v1/runs/ffffffffffffffffffffffffffffffff"), 404, "not_found")

        st, _, found = r("POST", "/v1/runs/search", {"filter": "metrics.loss < 2 and params.factors = '64'",
                                                    "order_by": ["metrics.loss DESC"]})
        self.assertEqual((st, [x["run_id"] for x in found["runs"]]), (200, [rid]), found)
        self.assertError(r("POST", "/v1/runs/search", {"filter": "metrics.loss < 2 or params.a = 'b'"}),
                         400, "invalid_argument", "character 18", "OR")

        # lineage: dataset -> run -> model version -> alias, both ways
        payload = b"model"
        r("PUT", f"/v1/blobs/{sha(payload)}", body=payload)
        self.assertEqual(r("POST", "/v1/models", {"name": "churn"})[0], 201)
        manifest = {"format": "quern.model/1", "kind": "xgboost",
                    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
                    "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1]}],
                    "files": {"model.json": sha(payload)},
                    "dataset": {"name": "retail", "version": dsv["version"]}}
        st, _, ver = r("POST", "/v1/models/churn/versions",
                       {"manifest": manifest, "run_id": rid, "dataset": {"name": "retail", "version": dsv["version"]}})
        self.assertEqual((st, ver["run_id"]), (201, rid), ver)
        self.assertError(r("POST", "/v1/models/churn/versions", {"manifest": manifest, "run_id": "nope"}),
                         404, "not_found", "nope")
        st, _, vs = r("GET", f"/v1/runs/{rid}/versions")
        self.assertEqual(vs["versions"], [{"model": "churn", "version": ver["version"]}])
        st, _, rs = r("GET", f"/v1/datasets/retail/versions/{dsv['version']}/runs")
        self.assertEqual((st, [x["run_id"] for x in rs["runs"]]), (200, [rid]))
        self.assertError(r("GET", "/v1/datasets/retail/versions/9/runs"), 404, "not_found")
        r("PUT", "/v1/models/churn/aliases/production", {"version": ver["version"]})
        st, _, lin = r("GET", "/v1/models/churn/aliases/production/lineage")
        self.assertEqual(st, 200, lin)
        self.assertEqual((lin["version"], lin["run_id"], lin["dataset"]["name"], lin["run"]["params"]["factors"]),
                         (ver["version"], rid, "retail", "64"))
        # the same run seen through MLflow's API
        st, _, mr = r("GET", f"/api/2.0/mlflow/runs/get?run_id={rid}")
        self.assertEqual((st, mr["run"]["info"]["status"]), (200, "FINISHED"))


if __name__ == "__main__":
    unittest.main()
