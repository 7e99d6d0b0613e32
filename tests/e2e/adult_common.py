"""What the Adult end-to-end tests (test_adult, test_adult_cbpe) share: the
census data as the services take it, and the path from raw rows to a trained
model through the services - ingest the raw rows, clean them with the shipped
example pipeline (quern-prep), train on the snapshot (quern-train).

    class MyTest(AdultServices):
        def test_it(self):
            self.start_adult_services("quern-my-")  # registry, ingest, prep, train
            accepted, run = self.clean_adult()      # adult-raw -> adult-clean
            job = self.train_adult("xgboost", promote="always")   # version 1, production
            serve = self.start("serve", env=self.env, args=["--registry", self.regurl, "--models", "adult"])
            serve.request("POST", "/v2/models/adult/infer", {"inputs": infer_inputs(row)})
"""
import csv
import io
import json
import os
import sys
import tempfile
import time

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


def infer_inputs(row):
    """One row of features (name -> value) as Open Inference Protocol inputs:
    numbers FP64, categories BYTES."""
    return [{"name": k, "shape": [1], "datatype": "FP64" if k in NUM else "BYTES", "data": [v]}
            for k, v in row.items()]


def wait_for(fn, timeout=120, every=0.2):
    """fn()'s first true value, asked every `every` seconds; AssertionError
    after timeout seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s")


def poll(service, path, done, timeout):
    """The record service answers at path once done(record), asked every 0.1 s;
    AssertionError after timeout seconds."""
    def record_if_done():
        record = service.request("GET", path)[2]
        return record if done(record) else None
    return wait_for(record_if_done, timeout=timeout, every=0.1)


class AdultServices(ServiceTest):
    def start_adult_services(self, prefix):
        """Starts registry, ingest, prep and train in a new QUERN_HOME (self.env)
        and keeps them as self.reg, self.ing, self.prep, self.train (self.regurl:
        the registry's URL)."""
        home = tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("QUERN_TEST_WORK"))
        self.env = {"QUERN_HOME": home}
        self.reg = self.start("registry", env=self.env)
        self.regurl = f"http://127.0.0.1:{self.reg.port}"
        self.ing = self.start("ingest", env=self.env, args=["--registry", self.regurl])
        self.prep = self.start("prep", env=self.env, args=["--registry", self.regurl,
                                                           "--ingest", f"http://127.0.0.1:{self.ing.port}"])
        self.train = self.start("train", env=self.env, args=["--registry", self.regurl])

    def clean_adult(self):
        """Ingests adult.data as the dataset adult-raw and runs the example
        pipeline (examples/pipelines/adult.json) over it to its end, which must
        succeed: (the rows ingest accepted, the pipeline run's record)."""
        st, _, ingested = self.ing.request("POST", "/v1/datasets/adult-raw/events", body=adult_csv(),
                                           headers={"Content-Type": "text/csv"})
        self.assertEqual(st, 201, ingested)
        with open(os.path.join(ROOT, "examples", "pipelines", "adult.json")) as f:
            pipeline = json.load(f)
        st, _, ans = self.prep.request("PUT", "/v1/pipelines/adult", pipeline)
        self.assertIn(st, (200, 201), ans)
        st, _, run = self.prep.request("POST", "/v1/pipelines/adult/runs")
        self.assertEqual(st, 202, run)
        path = f"/v1/pipelines/adult/runs/{run['run_id']}"
        run = poll(self.prep, path, lambda r: r["state"] not in ("queued", "running"), timeout=120)
        self.assertEqual(run["state"], "succeeded", run)
        return ingested["accepted"], run

    def train_adult(self, kind, promote):
        """Trains a `kind` model of adult on adult-clean with its example spec
        (examples/train/adult-<kind>.json) and the promote policy mode `promote`
        on roc_auc; the job, which must succeed."""
        with open(os.path.join(ROOT, "examples", "train", f"adult-{kind}.json")) as f:
            spec = json.load(f)
        spec.pop("kind")
        job = {"model": "adult", "kind": kind, "dataset": "adult-clean", "spec": spec,
               "promote_policy": {"metric": "roc_auc", "mode": promote}}
        st, _, j = self.train.request("POST", "/v1/jobs", job)
        self.assertEqual(st, 202, j)
        path = f"/v1/jobs/{j['id']}"
        j = poll(self.train, path, lambda j: j["state"] in ("succeeded", "failed", "cancelled"), timeout=300)
        self.assertEqual(j["state"], "succeeded", j)
        return j

