"""Black-box tests of quern-train beside a real quern-registry on one bus
(a shared QUERN_HOME): jobs end to end (dataset snapshot -> registered,
maybe promoted version), champion/challenger, bad input, cancellation, a
trainer killed mid-job, competing trainers, requests that cross trainers,
SIGTERM and /metrics under promtool.

Data: a deterministic subset of Online Retail purchases (ALS) and of Adult
(logistic), cleaned here with the csv module and stored in the registry as
dataset versions, as prep would."""
import csv
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from harness import ServiceTest, Service, WORK

DATASETS = os.environ.get("QUERN_DATASETS", os.path.join(os.path.dirname(__file__), "../../build/datasets"))

ALS_SPEC = {"user": "user", "item": "item", "weight": "weight", "k": 10,
            "split": {"kind": "leave_k_out", "k": 1, "seed": 7}}
ALS_PARAMS = {"factors": 16, "iterations": 6, "regularization": 0.05, "alpha": 5, "seed": 3}


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def retail_csv(max_rows=20000):
    """Purchases (positive quantity, known customer) as user,item,weight."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["user", "item", "weight"])
    n = 0
    with open(os.path.join(DATASETS, "online_retail.csv"), newline="", encoding="utf-8", errors="replace") as f:
        for row in csv.DictReader(f):
            if not row["CustomerID"] or not row["Quantity"] or float(row["Quantity"]) <= 0:
                continue
            if row["InvoiceNo"].startswith("C"):
                continue
            w.writerow([row["CustomerID"].split(".")[0], row["StockCode"], 1])
            n += 1
            if n >= max_rows:
                break
    return out.getvalue().encode()


ADULT_COLS = [("age", "numeric"), ("workclass", "categorical"), ("fnlwgt", "numeric"),
              ("education", "categorical"), ("education_num", "numeric"),
              ("marital_status", "categorical"), ("occupation", "categorical"),
              ("relationship", "categorical"), ("race", "categorical"), ("sex", "categorical"),
              ("capital_gain", "numeric"), ("capital_loss", "numeric"),
              ("hours_per_week", "numeric"), ("native_country", "categorical"),
              ("income", "numeric")]


def adult_csv(max_rows=4000):
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([c for c, _ in ADULT_COLS])
    n = 0
    with open(os.path.join(DATASETS, "adult.data"), newline="") as f:
        for row in csv.reader(f, skipinitialspace=True):
            if len(row) != 15:
                continue
            row = ["" if v == "?" else v for v in row]
            row[14] = "1" if row[14].startswith(">50K") else "0"
            w.writerow(row)
            n += 1
            if n >= max_rows:
                break
    return out.getvalue().encode()


class TrainTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.home = tempfile.mkdtemp(prefix="quern-home-", dir=WORK)
        self.env = {"QUERN_HOME": self.home}
        self.reg = self.start("registry", data=self.mkdir("registry"), env=self.env)

    def tearDown(self):
        super().tearDown()
        # Under the sanitizers, a report in any log fails the test.
        for svc in self.services:
            for needle in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
                self.assertNotIn(needle, svc.log(), f"{svc.name} log ({svc.log_path})")
        if not os.environ.get("QUERN_KEEP"):
            shutil.rmtree(self.home, ignore_errors=True)

    # -- helpers ------------------------------------------------------------

    def mkdir(self, name):
        path = os.path.join(self.home, name)
        os.makedirs(path, exist_ok=True)
        return path

    def trainer(self, name="train", args=(), data=None):
        return self.start("train", data=data or self.mkdir(name), env=self.env,
                          args=["--registry", f"http://127.0.0.1:{self.reg.port}",
                                "--progress-interval", "50ms"] + list(args))

    def dataset(self, name, data, columns):
        st, _, body = self.reg.request("PUT", f"/v1/blobs/{sha(data)}", body=data,
                                       headers={"Content-Type": "text/csv"})
        self.assertIn(st, (200, 201), body)
        rows = data.count(b"\n") - 1
        manifest = {"format": "quern.dataset/1", "files": {"data.csv": sha(data)},
                    "schema": {"columns": [{"name": n, "type": t} for n, t in columns]},
                    "rows": rows}
        st, _, body = self.reg.request("POST", f"/v1/datasets/{name}/versions", {"manifest": manifest})
        self.assertEqual(st, 201, body)
        return body

    def retail(self, name="retail", rows=20000):
        return self.dataset(name, retail_csv(rows), [("user", "categorical"), ("item", "categorical"),
                                                      ("weight", "numeric")])

    def adult(self, name="adult", rows=4000):
        return self.dataset(name, adult_csv(rows), ADULT_COLS)

    def post_job(self, svc, body, status=202):
        st, h, job = svc.request("POST", "/v1/jobs", body)
        self.assertEqual(st, status, job)
        if status == 202:
            # Read back after the commit: a fast worker may have taken it already.
            self.assertIn(job["state"], ("queued", "running", "failed"))
            self.assertEqual(job["attempts"] == 0, job["state"] == "queued", job)
            self.assertEqual(h["location"], f"/v1/jobs/{job['id']}")
        return job

    def als_job(self, model="recs", params=None, **extra):
        body = {"model": model, "kind": "als", "dataset": "retail", "spec": dict(ALS_SPEC),
                "params": dict(params or ALS_PARAMS)}
        body.update(extra)
        return body

    def wait(self, svc, job_id, states=("succeeded", "failed", "cancelled"), timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            st, _, job = svc.request("GET", f"/v1/jobs/{job_id}")
            self.assertEqual(st, 200, job)
            if job["state"] in states:
                return job
            time.sleep(0.1)
        self.fail(f"job {job_id} still {job['state']} after {timeout}s: {job}")

    def versions(self, model):
        st, _, body = self.reg.request("GET", f"/v1/models/{model}/versions?limit=1000")
        if st == 404:
            return []
        self.assertEqual(st, 200, body)
        return body["versions"]

    def alias(self, model, alias="production"):
        st, _, body = self.reg.request("GET", f"/v1/models/{model}/aliases/{alias}")
        return body["version"] if st == 200 else None

    # -- end to end -----------------------------------------------------------

    def test_als_job_registers_and_promotes_then_champion_challenger(self):
        ds = self.retail()
        tr = self.trainer()
        job = self.post_job(tr, self.als_job(reason="first model"))
        done = self.wait(tr, job["id"])
        self.assertEqual(done["state"], "succeeded", done)
        res = done["result"]
        self.assertEqual((res["outcome"], res["version"], res["metric"]), ("promoted", 1, "map@10"))
        self.assertTrue(res["higher_is_better"])
        self.assertNotIn("champion_version", res)
        self.assertEqual(done["progress"]["stage"], "done")
        self.assertGreater(done["progress"]["elapsed_s"], 0)
        self.assertEqual(done["attempts"], 1)

        v1 = self.versions("recs")
        self.assertEqual(len(v1), 1)
        v1 = v1[0]
        for m in ("map@10", "baseline.map@10", "ndcg@10", "n_train"):
            self.assertIn(m, v1["metrics"])
        self.assertEqual(v1["metrics"]["map@10"], res["metrics"]["map@10"])
        # The factors beat the popularity baseline on the same holdout.
        self.assertGreater(v1["metrics"]["map@10"], 1.5 * v1["metrics"]["baseline.map@10"])
        self.assertEqual(v1["dataset"], {"name": "retail", "version": ds["version"],
                                         "digest": ds["manifest_digest"]})
        self.assertEqual(v1["params"]["factors"], 16)
        self.assertEqual(v1["tags"]["quern.job_id"], job["id"])
        self.assertEqual(v1["tags"]["decision"], "promoted")
        self.assertIn("first model", v1["description"])
        self.assertEqual(v1["manifest"]["kind"], "als")
        self.assertEqual(self.alias("recs"), 1)
        # Every file of the bundle is a blob in the registry.
        for digest in v1["manifest"]["files"].values():
            st, _, _ = self.reg.request("HEAD", f"/v1/blobs/{digest}")
            self.assertEqual(st, 200)

        # A deliberately poor challenger (1 factor, 1 iteration) keeps the champion.
        bad = self.post_job(tr, self.als_job(params={"factors": 1, "iterations": 1, "seed": 3}))
        bad = self.wait(tr, bad["id"])
        self.assertEqual(bad["state"], "succeeded", bad)
        r = bad["result"]
        self.assertEqual((r["outcome"], r["version"], r["champion_version"]), ("kept_champion", 2, 1))
        self.assertLess(r["scores"]["challenger"], r["scores"]["champion"])
        self.assertEqual(self.alias("recs"), 1)
        v2 = [v for v in self.versions("recs") if v["version"] == 2][0]
        self.assertEqual(v2["tags"]["decision"], "kept_champion")
        self.assertEqual(v2["tags"]["champion_version"], "1")
        self.assertAlmostEqual(float(v2["tags"]["champion_score"]), r["champion_score"], places=6)
        self.assertAlmostEqual(float(v2["tags"]["challenger_score"]), r["challenger_score"], places=6)
        # The champion is scored on the same holdout: same rows, same metric as its own run.
        self.assertAlmostEqual(r["champion_score"], res["metrics"]["map@10"], places=5)

        # A better one (more factors and iterations) is promoted.
        good = self.post_job(tr, self.als_job(params={"factors": 32, "iterations": 10,
                                                      "regularization": 0.05, "alpha": 5, "seed": 3}))
        good = self.wait(tr, good["id"])
        r = good["result"]
        self.assertEqual(good["state"], "succeeded", good)
        self.assertGreater(r["scores"]["challenger"], r["scores"]["champion"])
        self.assertEqual((r["outcome"], r["version"], self.alias("recs")), ("promoted", 3, 3))
        v3 = [v for v in self.versions("recs") if v["version"] == 3][0]
        self.assertEqual((v3["tags"]["decision"], v3["tags"]["champion_version"]), ("promoted", "1"))

        # An impossible margin keeps the champion whatever the scores.
        m = self.post_job(tr, self.als_job(promote_policy={"metric": "map@10", "margin": 1.0}))
        m = self.wait(tr, m["id"])
        self.assertEqual(m["result"]["outcome"], "kept_champion")
        # mode never registers without promoting; mode always promotes.
        before = self.alias("recs")
        n = self.wait(tr, self.post_job(tr, self.als_job(promote_policy={"mode": "never"}))["id"])
        self.assertEqual((n["result"]["outcome"], self.alias("recs")), ("registered", before))
        a = self.wait(tr, self.post_job(tr, self.als_job(
            params={"factors": 1, "iterations": 1}, promote_policy={"mode": "always"}))["id"])
        self.assertEqual(a["result"]["outcome"], "promoted")
        self.assertEqual(self.alias("recs"), a["result"]["version"])

        # Listing, filters and paging.
        st, _, page = tr.request("GET", "/v1/jobs?limit=2")
        self.assertEqual((st, len(page["jobs"])), (200, 2))
        self.assertEqual(page["jobs"][0]["id"], a["id"])
        seen, token = [], None
        while True:
            q = "/v1/jobs?limit=4&model=recs&state=succeeded" + (f"&page_token={token}" if token else "")
            st, _, page = tr.request("GET", q)
            self.assertEqual(st, 200, page)
            seen += [j["id"] for j in page["jobs"]]
            token = page.get("next_page_token")
            if not token:
                break
        self.assertEqual(len(seen), 6)
        self.assertEqual(len(set(seen)), 6)

    def test_logistic_job_on_adult(self):
        self.adult()
        tr = self.trainer()
        body = {"model": "income", "kind": "logistic", "dataset": "adult",
                "spec": {"label": "income"}, "params": {"C": 1.0},
                "split": {"kind": "random", "ratio": 0.25, "seed": 1}}
        job = self.wait(tr, self.post_job(tr, body)["id"])
        self.assertEqual(job["state"], "succeeded", job)
        r = job["result"]
        self.assertEqual((r["metric"], r["outcome"]), ("roc_auc", "promoted"))
        self.assertGreater(r["metrics"]["roc_auc"], 0.8)
        first_auc = r["metrics"]["roc_auc"]
        self.assertEqual(self.alias("income"), 1)
        # Same spec again: same data, same split, same score -> not better by > 0.
        job = self.wait(tr, self.post_job(tr, body)["id"])
        r = job["result"]
        self.assertEqual(r["outcome"], "kept_champion", r)
        self.assertAlmostEqual(r["scores"]["challenger"], r["scores"]["champion"], places=9)
        # XGBoost challenges the logistic champion on the same holdout.
        xgb = dict(body, kind="xgboost", params={"num_round": 60, "max_depth": 4, "eta": 0.2, "nthread": 1})
        job = self.wait(tr, self.post_job(tr, xgb)["id"])
        self.assertEqual(job["state"], "succeeded", job)
        r = job["result"]
        self.assertEqual((r["version"], r["champion_version"]), (3, 1))
        self.assertGreater(r["metrics"]["roc_auc"], 0.85)
        # The logistic champion is scored with its own spec on the same rows: its own AUC.
        self.assertAlmostEqual(r["scores"]["champion"], first_auc, places=9)
        self.assertEqual(r["outcome"], "promoted" if r["scores"]["challenger"] > r["scores"]["champion"]
                         else "kept_champion")

    # -- bad input --------------------------------------------------------------

    def test_bad_jobs(self):
        self.retail(rows=3000)
        tr = self.trainer()
        good = self.als_job()
        cases = [
            (dict(good, kind="svm"), "kind"),
            (dict(good, colour="blue"), "colour"),
            (dict(good, model="../x"), "model"),
            (dict(good, dataset=""), "dataset"),
            (dict(good, dataset_version=0), "dataset_version"),
            (dict(good, promote_policy={"mode": "sometimes"}), "mode"),
            (dict(good, promote_policy={"margin": -1}), "margin"),
            (dict(good, promote_policy={"alias": "latest"}), "latest"),
            (dict(good, promote_policy={"metrc": "x"}), "metrc"),
            (dict(good, params={"factors": 0}), "factors"),
            (dict(good, spec=dict(ALS_SPEC, lable="x")), "lable"),
            (dict(good, spec=dict(ALS_SPEC, kind="xgboost")), "kind"),
            (dict(good, spec=dict(ALS_SPEC, params={"factors": 3})), "params"),
            ({k: v for k, v in good.items() if k != "model"}, "model"),
        ]
        for body, needle in cases:
            self.assertError(tr.request("POST", "/v1/jobs", body), 400, "invalid_argument", needle)
        st, _, body = tr.request("POST", "/v1/jobs", body=b"{not json",
                                 headers={"Content-Type": "application/json"})
        self.assertEqual(st, 400)
        self.assertError(tr.request("GET", "/v1/jobs/nope"), 404, "not_found", "nope")
        self.assertError(tr.request("GET", "/v1/jobs/..%2Fx"), 400, "invalid_argument")
        self.assertError(tr.request("GET", "/v1/jobs?state=done"), 400, "invalid_argument", "state")
        self.assertError(tr.request("GET", "/v1/jobs?page_token=zzz"), 400, "invalid_argument")
        self.assertError(tr.request("DELETE", "/v1/jobs/nope"), 404, "not_found")

        # Accepted, then failed with a message that says what to fix.
        job = self.wait(tr, self.post_job(tr, dict(good, dataset="nosuch"))["id"])
        self.assertEqual(job["state"], "failed")
        self.assertEqual(job["error"]["code"], "not_found")
        self.assertIn("nosuch", job["error"]["message"])
        job = self.wait(tr, self.post_job(tr, dict(good, dataset_version=9))["id"])
        self.assertEqual(job["state"], "failed")
        self.assertIn("version 9", job["error"]["message"])
        job = self.wait(tr, self.post_job(tr, dict(good, spec=dict(ALS_SPEC, user="customer")))["id"])
        self.assertEqual(job["state"], "failed")
        self.assertIn("customer", job["error"]["message"])
        self.assertError(tr.request("DELETE", f"/v1/jobs/{job['id']}"), 400, "failed_precondition", "failed")
        self.assertEqual(self.versions("recs"), [])

    # -- cancel -----------------------------------------------------------------

    def test_cancel_a_running_job(self):
        self.retail()
        tr = self.trainer()
        job = self.post_job(tr, self.als_job(params={"factors": 64, "iterations": 1000}))
        deadline = time.time() + 60
        while time.time() < deadline:
            _, _, j = tr.request("GET", f"/v1/jobs/{job['id']}")
            if j["progress"].get("stage") == "fit" and j["progress"].get("iteration", 0) >= 2:
                break
            time.sleep(0.05)
        self.assertEqual(j["state"], "running", j)
        self.assertEqual(j["progress"]["iterations"], 1000)
        self.assertIsNotNone(j["progress"]["eta_s"])
        self.assertGreater(j["progress"]["elapsed_s"], 0)
        st, _, body = tr.request("DELETE", f"/v1/jobs/{job['id']}")
        self.assertEqual(st, 202, body)
        done = self.wait(tr, job["id"], timeout=30)
        self.assertEqual(done["state"], "cancelled", done)
        self.assertEqual(self.versions("recs"), [])
        # The trainer takes the next job.
        nxt = self.wait(tr, self.post_job(tr, self.als_job())["id"])
        self.assertEqual(nxt["state"], "succeeded", nxt)

    # -- crash ---------------------------------------------------------------------

    def test_killed_trainer_retries_the_job_on_restart(self):
        self.retail()
        data = self.mkdir("train")
        tr = self.trainer(data=data)
        job = self.post_job(tr, self.als_job(params={"factors": 32, "iterations": 60, "seed": 3}))
        deadline = time.time() + 60
        while time.time() < deadline:
            _, _, j = tr.request("GET", f"/v1/jobs/{job['id']}")
            if j["progress"].get("stage") == "fit":
                break
            time.sleep(0.05)
        self.assertEqual(j["state"], "running", j)
        tr.kill9()
        self.assertEqual(self.versions("recs"), [])
        tr2 = self.trainer(data=data)
        done = self.wait(tr2, job["id"])
        self.assertEqual(done["state"], "succeeded", done)
        self.assertEqual(done["attempts"], 2)
        self.assertEqual(len(self.versions("recs")), 1)
        self.assertIn("queued again", tr2.log())

    # -- several trainers -------------------------------------------------------

    def test_competing_trainers_run_each_job_once(self):
        self.retail(rows=6000)
        a = self.trainer("train-a")
        b = self.trainer("train-b")
        params = {"factors": 8, "iterations": 3, "seed": 1}
        jobs = [self.post_job(a if i % 2 else b, self.als_job(params=params))["id"] for i in range(8)]
        runners = set()
        for i, jid in enumerate(jobs):
            svc = a if i % 2 else b
            done = self.wait(svc, jid)
            self.assertEqual(done["state"], "succeeded", done)
            runners.add(done["runner"])
        vs = self.versions("recs")
        self.assertEqual(len(vs), 8)
        self.assertEqual(sorted(v["tags"]["quern.job_id"] for v in vs), sorted(jobs))
        self.assertEqual(len(runners), 2, "both trainers should have taken jobs")

    def test_job_posted_on_one_trainer_runs_on_another(self):
        self.retail(rows=6000)
        # A has no workers free: one long job occupies its only worker.
        a = self.trainer("train-a")
        long = self.post_job(a, self.als_job(params={"factors": 64, "iterations": 1000}))
        deadline = time.time() + 30
        while time.time() < deadline:
            _, _, j = a.request("GET", f"/v1/jobs/{long['id']}")
            if j["state"] == "running":
                break
            time.sleep(0.05)
        b = self.trainer("train-b")
        job = self.post_job(a, self.als_job(model="other", params={"factors": 8, "iterations": 3}))
        done = self.wait(a, job["id"])
        self.assertEqual(done["state"], "succeeded", done)
        self.assertNotEqual(done["runner"], j["runner"])
        self.assertEqual(done["result"]["version"], 1)
        _, _, on_b = b.request("GET", f"/v1/jobs/{job['id']}")
        self.assertEqual((on_b["state"], on_b["runner"]), ("succeeded", done["runner"]))
        # Cancelling on A the job that B... here A's own long job; and a remote one.
        remote = self.post_job(a, self.als_job(model="other", params={"factors": 64, "iterations": 1000}))
        deadline = time.time() + 30
        while time.time() < deadline:
            _, _, r = a.request("GET", f"/v1/jobs/{remote['id']}")
            if r["state"] == "running":
                break
            time.sleep(0.05)
        self.assertEqual(r["runner"], done["runner"], r)
        st, _, _ = a.request("DELETE", f"/v1/jobs/{remote['id']}")
        self.assertEqual(st, 202)
        self.assertEqual(self.wait(a, remote["id"], timeout=30)["state"], "cancelled")
        st, _, _ = a.request("DELETE", f"/v1/jobs/{long['id']}")
        self.assertEqual(st, 202)
        self.assertEqual(self.wait(a, long["id"], timeout=30)["state"], "cancelled")

    def publish(self, event):
        """Publishes a CloudEvent on the embedded bus the way qn_bus_publish's
        sqlite backend does (one row; groups fan out lazily), as the CLI or
        quern-alert would through the core API."""
        import sqlite3
        db = sqlite3.connect(os.path.join(self.home, "bus.db"), timeout=10)
        with db:
            db.execute("INSERT INTO bus_messages (id, topic, body, published_at) VALUES (?, ?, ?, ?)",
                       (event["id"], event["type"], json.dumps(event), int(time.time() * 1000)))
        db.close()

    def test_request_published_on_the_bus(self):
        import uuid
        self.retail(rows=6000)
        tr = self.trainer()
        data = {"model": "recs", "kind": "als", "dataset": "retail", "spec": dict(ALS_SPEC),
                "params": {"factors": 8, "iterations": 3}, "reason": "drift"}
        ev = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "quern-alert",
              "type": "quern.train.requested", "time": "2026-11-28T13:30:00.000Z",
              "datacontenttype": "application/json", "data": data}
        self.publish(ev)
        self.publish(ev)  # delivered twice (at least once): runs once
        bad = dict(ev, id=str(uuid.uuid4()), data=dict(data, kind="svm"))
        self.publish(bad)
        deadline = time.time() + 60
        while time.time() < deadline:
            st, _, job = tr.request("GET", f"/v1/jobs/{ev['id']}")
            if st == 200 and job["state"] in ("succeeded", "failed"):
                break
            time.sleep(0.1)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertIsNone(job["origin"])
        self.assertEqual(job["result"]["version"], 1)
        failed = self.wait(tr, bad["id"])
        self.assertEqual(failed["state"], "failed")
        self.assertIn("svm", failed["error"]["message"])
        time.sleep(1)
        self.assertEqual(len(self.versions("recs")), 1)
        st, _, page = tr.request("GET", "/v1/jobs")
        self.assertEqual(len(page["jobs"]), 2)

    # -- service hygiene -----------------------------------------------------------

    def test_sigterm_and_metrics(self):
        self.retail(rows=3000)
        tr = self.trainer()
        job = self.wait(tr, self.post_job(tr, self.als_job(params={"factors": 4, "iterations": 2}))["id"])
        self.assertEqual(job["state"], "succeeded")
        st, _, text = tr.request("GET", "/metrics", raw=True)
        self.assertEqual(st, 200)
        text = text.decode()
        for needle in ('quern_train_jobs_total{service="train",outcome="promoted"} 1',
                       "quern_train_job_duration_seconds_count", "quern_train_jobs_running",
                       "quern_train_promotions_total"):
            self.assertIn(needle, text)
        promtool = shutil.which("promtool")
        if promtool:
            p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        st, _, ready = tr.request("GET", "/readyz")
        self.assertEqual(st, 200)
        # SIGTERM while a job runs: exit 0, and the job is back in the queue for the next start.
        long = self.post_job(tr, self.als_job(params={"factors": 64, "iterations": 1000}))
        deadline = time.time() + 30
        while time.time() < deadline:
            _, _, j = tr.request("GET", f"/v1/jobs/{long['id']}")
            if j["state"] == "running":
                break
            time.sleep(0.05)
        self.assertEqual(tr.stop(), 0)
        tr2 = self.trainer(data=tr.data)
        _, _, j = tr2.request("GET", f"/v1/jobs/{long['id']}")
        self.assertIn(j["state"], ("queued", "running"), j)
        self.assertEqual(self.wait(tr2, long["id"], states=("running",))["attempts"], 1)
        tr2.request("DELETE", f"/v1/jobs/{long['id']}")
        self.assertEqual(self.wait(tr2, long["id"])["state"], "cancelled")


if __name__ == "__main__":
    unittest.main()
