"""Adult end to end through the services: the raw census rows go into
quern-ingest (as CSV), quern-prep cleans them with the shipped example
pipeline, quern-train fits XGBoost and logistic models on the snapshot, and
quern-serve answers with the production version: its predictions on raw rows
(categories as text, numbers as they are) are those of the registered model.
"""
import csv
import io
import json
import os
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "service"))
from harness import ServiceTest  # noqa: E402

ROOT = os.environ.get("QUERN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
DATASETS = os.environ.get("QUERN_DATASETS", os.path.join(ROOT, "build", "datasets"))
COLS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
        "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
        "income"]
NUM = {"age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"}


def adult_csv():
    """adult.data (", "-separated, no header) as a CSV file with a header."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLS)
    with open(os.path.join(DATASETS, "adult.data")) as f:
        for line in f:
            parts = [p.strip() for p in line.strip().split(",")]
            if len(parts) == len(COLS):
                w.writerow(parts)
    return out.getvalue().encode()


class AdultEndToEnd(ServiceTest):
    def test_adult_ingest_prep_train_serve(self):
        home = tempfile.mkdtemp(prefix="quern-adult-", dir=os.environ.get("QUERN_TEST_WORK"))
        env = {"QUERN_HOME": home}
        reg = self.start("registry", env=env)
        regurl = f"http://127.0.0.1:{reg.port}"
        ing = self.start("ingest", env=env, args=["--registry", regurl])
        prep = self.start("prep", env=env, args=["--registry", regurl, "--ingest", f"http://127.0.0.1:{ing.port}"])
        train = self.start("train", env=env, args=["--registry", regurl])

        st, _, ans = ing.request("POST", "/v1/datasets/adult-raw/events", body=adult_csv(),
                                 headers={"Content-Type": "text/csv"})
        self.assertEqual(st, 201, ans)
        self.assertEqual(ans["accepted"], 32561)

        with open(os.path.join(ROOT, "examples", "pipelines", "adult.json")) as f:
            pipeline = json.load(f)
        st, _, ans = prep.request("PUT", "/v1/pipelines/adult", pipeline)
        self.assertIn(st, (200, 201), ans)
        st, _, run = prep.request("POST", "/v1/pipelines/adult/runs")
        self.assertEqual(st, 202, run)
        for _ in range(600):
            st, _, run = prep.request("GET", f"/v1/pipelines/adult/runs/{run['run_id']}")
            if run["state"] not in ("queued", "running"):
                break
            time.sleep(0.1)
        self.assertEqual(run["state"], "succeeded", run)
        self.assertEqual(run["report"]["rows_out"], 30162)  # the complete rows of adult.data

        results = {}
        for kind in ("xgboost", "logistic"):
            with open(os.path.join(ROOT, "examples", "train", f"adult-{kind}.json")) as f:
                spec = json.load(f)
            spec.pop("kind")
            job = {"model": "adult", "kind": kind, "dataset": "adult-clean", "spec": spec,
                   "promote_policy": {"metric": "roc_auc", "mode": "always" if kind == "xgboost" else "never"}}
            st, _, j = train.request("POST", "/v1/jobs", job)
            self.assertEqual(st, 202, j)
            for _ in range(1200):
                st, _, j = train.request("GET", f"/v1/jobs/{j['id']}")
                if j["state"] in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.1)
            self.assertEqual(j["state"], "succeeded", j)
            results[kind] = j["result"]
        xgb_auc = results["xgboost"]["metrics"]["roc_auc"]
        lr_auc = results["logistic"]["metrics"]["roc_auc"]
        print(f"adult through the services: XGBoost ROC AUC {xgb_auc:.4f}, logistic {lr_auc:.4f}")
        self.assertGreater(xgb_auc, 0.90)
        self.assertGreater(lr_auc, 0.88)
        self.assertEqual(results["xgboost"]["outcome"], "promoted")
        self.assertEqual(results["logistic"]["outcome"], "registered")
        st, _, v = reg.request("GET", "/v1/models/adult/versions/1")
        self.assertEqual(v["dataset"]["name"], "adult-clean")
        self.assertEqual(v["aliases"], ["production"])

        serve = self.start("serve", env=env, args=["--registry", regurl, "--models", "adult",
                                                   "--grpc-listen", "off"])
        for _ in range(200):
            if serve.request("GET", "/v2/health/ready")[0] == 200:
                break
            time.sleep(0.1)
        row = {"age": 52, "workclass": "Self-emp-inc", "fnlwgt": 287927, "education": "HS-grad",
               "education-num": 9, "marital-status": "Married-civ-spouse", "occupation": "Exec-managerial",
               "relationship": "Wife", "race": "White", "sex": "Female", "capital-gain": 15024,
               "capital-loss": 0, "hours-per-week": 40, "native-country": "United-States"}
        inputs = [{"name": k, "shape": [1], "datatype": "FP64" if k in NUM else "BYTES", "data": [v]}
                  for k, v in row.items()]
        st, _, ans = serve.request("POST", "/v2/models/adult/infer", {"inputs": inputs})
        self.assertEqual(st, 200, ans)
        self.assertEqual(ans["model_version"], "1")
        p = ans["outputs"][0]["data"][0]
        self.assertGreater(p, 0.5, "a married executive with a 15,024 capital gain earns >50K in this data")


if __name__ == "__main__":
    unittest.main(verbosity=2)
