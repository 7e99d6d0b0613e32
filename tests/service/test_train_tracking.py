"""Black-box test: quern-train logs each job as a run of the registry's
tracking store. One ALS job on the retail dataset, then the run is read back
through /v1 and MLflow's API: the spec's params, the per-iteration loss (one
point per ALS iteration), the dataset version as input, the final metrics
with the baseline's, FINISHED, and the registered version naming the run."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import test_train as tt
from harness import BIN, WORK, ServiceTest


class TrainTrackingTest(ServiceTest):
    # the job helpers of test_train.TrainTest, without its tests
    mkdir = tt.TrainTest.mkdir
    trainer = tt.TrainTest.trainer
    dataset = tt.TrainTest.dataset
    retail = tt.TrainTest.retail
    post_job = tt.TrainTest.post_job
    als_job = tt.TrainTest.als_job
    wait = tt.TrainTest.wait

    def setUp(self):
        super().setUp()
        self.home = tempfile.mkdtemp(prefix="quern-home-", dir=WORK)
        self.env = {"QUERN_HOME": self.home}
        self.reg = self.start("registry", data=self.mkdir("registry"), env=self.env)

    def tearDown(self):
        super().tearDown()
        if not os.environ.get("QUERN_KEEP"):
            shutil.rmtree(self.home, ignore_errors=True)

    def test_job_is_a_run(self):
        ds = self.retail(rows=6000)
        tr = self.trainer()
        job = self.post_job(tr, self.als_job())
        done = self.wait(tr, job["id"])
        self.assertEqual(done["state"], "succeeded", done)
        r = self.reg.request
        st, _, found = r("POST", "/v1/runs/search", {"filter": f"tags.`quern.job_id` = '{job['id']}'"})
        self.assertEqual(st, 200, found)
        self.assertEqual(len(found["runs"]), 1, found)
        run = found["runs"][0]
        self.assertEqual((run["status"], run["name"]), ("FINISHED", job["id"]))
        self.assertEqual(run["params"]["factors"], str(tt.ALS_PARAMS["factors"]))
        self.assertEqual(run["params"]["kind"], "als")
        self.assertIn("map@10", run["metrics"])
        self.assertIn("baseline.map@10", run["metrics"])
        self.assertEqual(run["metrics"]["map@10"]["value"], done["result"]["metrics"]["map@10"])
        self.assertEqual((run["inputs"][0]["name"], run["inputs"][0]["source_type"]), ("retail", "quern"))
        st, _, hist = r("GET", f"/v1/runs/{run['run_id']}/metrics/loss")
        steps = [p["step"] for p in hist["history"]]
        self.assertEqual(steps, list(range(1, len(steps) + 1)))
        self.assertEqual(len(steps), tt.ALS_PARAMS.get("iterations", len(steps)))
        # lineage both ways
        st, _, ver = r("GET", f"/v1/models/recs/versions/{done['result']['version']}")
        self.assertEqual(ver["run_id"], run["run_id"])
        st, _, vs = r("GET", f"/v1/runs/{run['run_id']}/versions")
        self.assertEqual(vs["versions"], [{"model": "recs", "version": done["result"]["version"]}])
        st, _, rs = r("GET", f"/v1/datasets/retail/versions/{ds['version']}/runs")
        self.assertEqual([x["run_id"] for x in rs["runs"]], [run["run_id"]])
        # and through MLflow's API, in the experiment named after the model
        st, _, exp = r("GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=recs")
        self.assertEqual(st, 200, exp)
        self.assertEqual(exp["experiment"]["experiment_id"], run["experiment_id"])

    def test_cli_follows_the_run_series(self):
        """`quern train` without a terminal prints one plain line per change:
        the iteration advances through the fit, the loss is a number, elapsed
        moves, and the job's run holds one loss point per iteration."""
        self.retail()
        tr = self.trainer()
        iters = 250  # 40-150 iterations a second here: one or more 1 s polls during the fit
        env = dict(os.environ, QUERN_HOME=self.home, QUERN_REGISTRY=f"http://127.0.0.1:{self.reg.port}",
                   QUERN_TRAIN=f"http://127.0.0.1:{tr.port}")
        params = dict(tt.ALS_PARAMS, factors=64, iterations=iters)
        spec = os.path.join(self.home, "spec.json")
        with open(spec, "w") as f:
            json.dump(tt.ALS_SPEC, f)
        p = subprocess.run([os.path.join(BIN, "quern"), "train", "recs", "--kind", "als", "--dataset", "retail",
                            "--spec", spec, "--params", json.dumps(params)], env=env, capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertNotIn("\r", p.stdout)
        lines = [l for l in p.stdout.splitlines() if " iteration=" in l and " iteration=-" not in l]
        seen = []
        for l in lines:
            m = re.search(r"iteration=(\d+)/(\d+) loss=(\S+) elapsed=([\d.]+)s", l)
            self.assertIsNotNone(m, l)
            self.assertEqual(int(m.group(2)), iters, l)
            if int(m.group(1)) > 0:
                float(m.group(3))  # a number once the fit has a point
            seen.append(int(m.group(1)))
        fit = sorted(set(i for i in seen if 0 < i < iters))
        # at least one point while the fit runs (a quiet machine fits 250
        # iterations in about two of the follower's 1 s polls)
        self.assertGreaterEqual(len(fit), 1, p.stdout)
        self.assertEqual(seen, sorted(seen), p.stdout)
        self.assertEqual(seen[-1], iters, p.stdout)  # the last line shows where the fit ended
        self.assertRegex(p.stdout, r"job \S+ succeeded: recs version 1")
        job_id = re.search(r"job (\S+) succeeded", p.stdout).group(1)
        st, _, found = self.reg.request("POST", "/v1/runs/search",
                                        {"filter": f"tags.`quern.job_id` = '{job_id}'"})
        run = found["runs"][0]
        st, _, hist = self.reg.request("GET", f"/v1/runs/{run['run_id']}/metrics/loss")
        self.assertEqual([x["step"] for x in hist["history"]], list(range(1, iters + 1)))
        self.assertTrue(all(isinstance(x["value"], float) for x in hist["history"]), hist)
        # the job's progress names the run its series is in
        _, _, job = tr.request("GET", f"/v1/jobs/{job_id}")
        self.assertEqual(job["progress"]["run_id"], run["run_id"])
        self.assertEqual(job["progress"]["iteration"], iters)


if __name__ == "__main__":
    unittest.main()
