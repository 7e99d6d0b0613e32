"""Black-box test: quern-train logs each job as a run of the registry's
tracking store. One ALS job on the retail dataset, then the run is read back
through /v1 and MLflow's API: the spec's params, the per-iteration loss (one
point per ALS iteration), the dataset version as input, the final metrics
with the baseline's, FINISHED, and the registered version naming the run."""
import os
import shutil
import tempfile
import unittest

import test_train as tt
from harness import WORK, ServiceTest


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


if __name__ == "__main__":
    unittest.main()
