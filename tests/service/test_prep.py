"""test_prep.py - black-box tests of quern-prep: pipelines, runs, snapshots in the
registry, triggers, crash retry, errors, metrics and SIGTERM.

The registry, quern-ingest and prep run as real processes sharing one
QUERN_HOME (one bus). Rows go in through ingest (CSV and NDJSON); ingest's
quern.events.ingested events drive the rows trigger. To make prep wait on
ingest mid-run (crash and SIGTERM tests), ingest is paused with SIGSTOP.

Expected snapshots are computed here independently with the csv module: the
rows each step keeps, the per-step counts of the report, and the exact bytes
of the cleaned CSV.
"""
import csv
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import BIN, WORK, ServiceTest  # noqa: E402

DATASETS = os.environ.get("QUERN_DATASETS", os.path.join(os.path.dirname(__file__), "../../build/datasets"))
SOURCE = os.environ.get("QUERN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
EXAMPLES = os.path.join(SOURCE, "examples/pipelines")
RETAIL_ROWS = 20000

ADULT_COLS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
              "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
              "native-country", "income"]
ADULT_NUM = {"age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"}


class Ingest:
    """Writes to the real quern-ingest, and can redeliver one of its events."""

    def __init__(self, svc, bus_path):
        self.svc = svc
        self.bus_path = bus_path

    def append(self, name, objs):
        body = "".join(json.dumps(o) + "\n" for o in objs).encode()
        st, _, ans = self.svc.request("POST", f"/v1/datasets/{name}/events", body,
                                      {"Content-Type": "application/x-ndjson"})
        assert st == 201, (st, ans)
        assert ans["accepted"] == len(objs), ans
        return ans["first_seq"], ans["last_seq"]

    def post_csv(self, name, header, rows):
        st, _, ans = self.svc.request("POST", f"/v1/datasets/{name}/events", to_csv(header, rows),
                                      {"Content-Type": "text/csv"})
        assert st == 201, (st, ans)
        assert ans["accepted"] == len(rows), ans
        return ans["first_seq"], ans["last_seq"]

    def ingested_events(self, name):
        st, _, ans = self.svc.request("GET", "/v1/outbox?limit=1000")
        assert st == 200, ans
        return [e["event"] for e in ans["events"]
                if e["event"]["type"] == "quern.events.ingested" and e["event"]["data"]["dataset"] == name]

    def redeliver(self, event):
        """The bus delivers at least once: put the same envelope (same id) on it again, as the
        embedded backend's publish does (one INSERT)."""
        db = sqlite3.connect(self.bus_path, timeout=10)
        with db:
            db.execute("INSERT INTO bus_messages (id, topic, body, published_at) VALUES (?, ?, ?, ?)",
                       (event["id"], event["type"], json.dumps(event), int(time.time() * 1000)))
        db.close()


def fmt_num(s):
    """A number as libquern-ml writes it: the shortest text that reads back."""
    f = float(s)
    if f.is_integer() and abs(f) < 1e15:
        return str(int(f))
    return repr(f)


def to_csv(header, rows):
    out = io.StringIO(newline="")
    w = csv.writer(out)  # RFC 4180: CRLF, minimal quoting
    w.writerow(header)
    w.writerows(rows)
    return out.getvalue().encode()


def retail_rows():
    with open(os.path.join(DATASETS, "online_retail.csv"), newline="") as f:
        r = csv.reader(f)
        header = next(r)
        rows = [row for _, row in zip(range(RETAIL_ROWS), r)]
    return header, rows


def retail_expected(header, rows):
    """The example pipeline, step by step: (kept rows, [(op, rows_in, rows_out)])."""
    ix = {c: i for i, c in enumerate(header)}
    bad_codes = {"POST", "D", "M", "m", "DOT", "C2", "S", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS", "B"}
    preds = [
        ("drop_missing", lambda r: r[ix["CustomerID"]] != ""),
        ("filter", lambda r: not r[ix["InvoiceNo"]].startswith("C")),
        ("filter", lambda r: float(r[ix["Quantity"]]) > 0),
        ("filter", lambda r: float(r[ix["UnitPrice"]]) > 0),
        ("filter", lambda r: r[ix["StockCode"]] not in bad_codes),
        ("filter", lambda r: not r[ix["StockCode"]].startswith("gift_0001")),
        ("derive", lambda r: True),
    ]
    counts = []
    for op, keep in preds:
        before = len(rows)
        rows = [r for r in rows if keep(r)]
        counts.append((op, before, len(rows)))
    out = []
    for r in rows:
        r = list(r)
        for c in ("Quantity", "UnitPrice"):
            r[ix[c]] = fmt_num(r[ix[c]])
        out.append(r + ["1"])
    return out, counts


def adult_objects(name, limit):
    objs = []
    with open(os.path.join(DATASETS, name)) as f:
        for line in f:
            parts = [p.strip() for p in line.strip().split(",")]
            if len(parts) != len(ADULT_COLS):
                continue  # the test file's "|1x3 Cross validator" line, blank lines
            o = {c: (int(v) if c in ADULT_NUM else v) for c, v in zip(ADULT_COLS, parts)}
            objs.append(o)
            if len(objs) == limit:
                break
    return objs


class PrepTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.home = tempfile.mkdtemp(prefix="quern-prep-home-", dir=WORK)
        env = {"QUERN_HOME": self.home}
        self.reg = self.start("registry", env=env)
        self.ing = self.start("ingest", env=env)
        self.ingest = Ingest(self.ing, os.path.join(self.home, "bus.db"))
        self.env = env
        self.prep = self.start_prep()

    def start_prep(self, data=None):
        return self.start("prep", data=data, env=self.env,
                          args=["--registry", f"http://127.0.0.1:{self.reg.port}", "--ingest", f"http://127.0.0.1:{self.ing.port}"])

    def tearDown(self):
        self.resume_ingest()
        super().tearDown()
        self.assertNoSanitizerReports()

    def wait_running(self, pipeline, rid, timeout=60):
        """Until a worker has taken the run (it then waits on the paused ingest);
        on a loaded machine that can take more than a moment."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.prep.request("GET", f"/v1/pipelines/{pipeline}/runs/{rid}")[2]["state"] == "running":
                return
            time.sleep(0.05)
        self.fail(f"run {rid} never started")

    def pause_ingest(self):
        os.kill(self.ing.proc.pid, signal.SIGSTOP)

    def resume_ingest(self):
        if self.ing.proc.poll() is None:
            os.kill(self.ing.proc.pid, signal.SIGCONT)

    def put_pipeline(self, name, spec, status=(200, 201)):
        st, _, body = self.prep.request("PUT", f"/v1/pipelines/{name}", spec)
        self.assertIn(st, status, body)
        return body

    def example(self, name):
        with open(os.path.join(EXAMPLES, name)) as f:
            return json.load(f)

    def wait_run(self, pipeline, run_id, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            st, _, run = self.prep.request("GET", f"/v1/pipelines/{pipeline}/runs/{run_id}")
            self.assertEqual(st, 200, run)
            if run["state"] in ("succeeded", "failed", "skipped"):
                return run
            time.sleep(0.1)
        self.fail(f"run {run_id} of {pipeline} did not finish: {run}")

    def run_now(self, pipeline):
        st, h, body = self.prep.request("POST", f"/v1/pipelines/{pipeline}/runs")
        self.assertEqual(st, 202, body)
        self.assertEqual(body["state"], "queued")
        self.assertEqual(h["location"], f"/v1/pipelines/{pipeline}/runs/{body['run_id']}")
        return self.wait_run(pipeline, body["run_id"])

    def post_csv(self, dataset, header, rows):
        return self.ingest.post_csv(dataset, header, rows)

    def runs(self, pipeline):
        st, _, body = self.prep.request("GET", f"/v1/pipelines/{pipeline}/runs")
        self.assertEqual(st, 200, body)
        return body["runs"]

    def prep_events(self):
        st, _, body = self.prep.request("GET", "/v1/events")
        self.assertEqual(st, 200, body)
        return [e["event"] for e in body["events"] if e["event"]["type"] == "quern.dataset.ready"]

    def check_snapshot(self, dataset, version, header, rows, counts, rows_in, last_seq):
        st, _, v = self.reg.request("GET", f"/v1/datasets/{dataset}/versions/{version}")
        self.assertEqual(st, 200, v)
        m = v["manifest"]
        want = to_csv(header, rows)
        self.assertEqual(m["format"], "quern.dataset/1")
        self.assertEqual(m["rows"], len(rows))
        self.assertEqual(m["source"]["last_seq"], last_seq)
        self.assertEqual([c["name"] for c in m["schema"]["columns"]], header)
        rep = m["report"]
        self.assertEqual(rep["rows_in"], rows_in)
        self.assertEqual(rep["rows_out"], len(rows))
        self.assertEqual([(s["op"], s["rows_in"], s["rows_out"]) for s in rep["steps"]], counts)
        for s in rep["steps"]:
            self.assertEqual(s["dropped"], s["rows_in"] - s["rows_out"])
            self.assertTrue(s["reason"])
        digest = m["files"]["data.csv"]
        st, _, blob = self.reg.request("GET", f"/v1/blobs/{digest}", raw=True)
        self.assertEqual(st, 200)
        self.assertEqual(len(blob), len(want))
        self.assertEqual(blob, want)  # byte for byte: the cleaned CSV
        return v

    # ------------------------------------------------------------------ tests

    def test_online_retail_snapshot_report_skip_and_next_version(self):
        header, rows = retail_rows()
        for i in range(0, len(rows), 5000):  # four ingest batches
            self.post_csv("online-retail-raw", header, rows[i:i + 5000])
        spec = self.example("online-retail.json")
        spec["trigger"] = {"kind": "manual"}
        created = self.put_pipeline("online-retail", spec, status=(201,))
        self.assertEqual(created["revision"], 1)
        self.assertEqual(created["source"], "online-retail-raw")

        t0 = time.time()
        run = self.run_now("online-retail")
        took = time.time() - t0
        self.assertEqual(run["state"], "succeeded", run)
        want, counts = retail_expected(header, rows)
        self.assertGreater(len(rows) - len(want), 1000)  # the steps really drop rows
        v = self.check_snapshot("online-retail-purchases", run["dataset_version"], header + ["weight"], want,
                                counts, len(rows), len(rows))
        self.assertEqual(run["dataset_version"], 1)
        self.assertEqual(run["rows_in"], len(rows))
        self.assertEqual(run["rows_out"], len(want))
        self.assertEqual(run["manifest_digest"], v["manifest_digest"])
        self.assertEqual(v["manifest"]["pipeline"], "online-retail")
        self.assertEqual(v["manifest"]["source"]["dataset"], "online-retail-raw")
        print(f"\nonline retail: {len(rows)} rows -> {len(want)} in {took:.2f} s (run, incl. polling)",
              file=sys.stderr)

        # quern.dataset.ready leaves through the outbox (and is published).
        deadline = time.time() + 10
        while time.time() < deadline:
            st, _, out = self.prep.request("GET", "/v1/events")
            evs = [e for e in out["events"] if e["event"]["type"] == "quern.dataset.ready"]
            if evs and evs[0]["published"]:
                break
            time.sleep(0.1)
        self.assertEqual(len(evs), 1)
        self.assertTrue(evs[0]["published"])
        self.assertEqual(evs[0]["event"]["data"], {"dataset": "online-retail-purchases", "version": 1,
                                                   "manifest_digest": v["manifest_digest"], "rows": len(want),
                                                   "pipeline": "online-retail"})

        # Nothing new: skipped, no second snapshot.
        again = self.run_now("online-retail")
        self.assertEqual(again["state"], "skipped", again)
        self.assertEqual(again["dataset_version"], 1)
        st, _, vs = self.reg.request("GET", "/v1/datasets/online-retail-purchases/versions")
        self.assertEqual(len(vs["versions"]), 1)
        self.assertEqual(len(self.prep_events()), 1)

        # A changed spec is a new snapshot even without new rows.
        spec["steps"] = spec["steps"][:-1]
        self.assertEqual(self.put_pipeline("online-retail", spec, status=(200,))["revision"], 2)
        changed = self.run_now("online-retail")
        self.assertEqual(changed["state"], "succeeded", changed)
        self.assertEqual(changed["dataset_version"], 2)

        # New rows: a new version reaching the new last_seq.
        with open(os.path.join(DATASETS, "online_retail.csv"), newline="") as f:
            r = csv.reader(f)
            next(r)
            more = [row for _, row in zip(range(RETAIL_ROWS + 1000), r)][RETAIL_ROWS:]
        self.post_csv("online-retail-raw", header, more)
        run3 = self.run_now("online-retail")
        self.assertEqual(run3["state"], "succeeded", run3)
        self.assertEqual(run3["dataset_version"], 3)
        self.assertEqual(run3["source_last_seq"], RETAIL_ROWS + 1000)
        want3, counts3 = retail_expected(header, rows + more)
        self.check_snapshot("online-retail-purchases", 3, header, [w[:-1] for w in want3], counts3[:-1],
                            RETAIL_ROWS + 1000, RETAIL_ROWS + 1000)

        runs = self.runs("online-retail")
        self.assertEqual([r["state"] for r in runs], ["succeeded", "succeeded", "skipped", "succeeded"])

    def test_small_pages_fetched_four_at_a_time_make_the_same_snapshot(self):
        """With --page-rows 1500 the 20,000 rows come in 14 ranges fetched four at a time
        while the reader parses the previous four: the snapshot is byte for byte the
        csv-module reference, and the report says where the time went."""
        header, rows = retail_rows()
        self.post_csv("online-retail-raw", header, rows)
        self.prep.stop()
        self.services.remove(self.prep)
        self.prep = self.start("prep", data=self.prep.data, env=self.env,
                               args=["--registry", f"http://127.0.0.1:{self.reg.port}",
                                     "--ingest", f"http://127.0.0.1:{self.ing.port}", "--page-rows", "1500"])
        spec = self.example("online-retail.json")
        spec["trigger"] = {"kind": "manual"}
        self.put_pipeline("online-retail", spec)
        run = self.run_now("online-retail")
        self.assertEqual(run["state"], "succeeded", run)
        want, counts = retail_expected(header, rows)
        self.check_snapshot("online-retail-purchases", run["dataset_version"], header + ["weight"], want,
                            counts, len(rows), len(rows))
        timing = run["report"]["timing"]
        self.assertEqual(set(timing), {"read", "parse", "clean", "write", "upload", "register", "total"})
        self.assertTrue(all(v >= 0 for v in timing.values()), timing)
        # each figure is rounded to the millisecond
        self.assertLessEqual(timing["read"] + timing["parse"] + timing["clean"] + timing["write"], timing["total"] + 0.005)

    def test_adult_train_and_test_labels(self):
        train, test = adult_objects("adult.data", 3000), adult_objects("adult.test", 2000)
        self.assertTrue(all(o["income"].endswith(".") for o in test))
        self.ingest.append("adult-raw", train)
        self.ingest.append("adult-raw", test)
        self.put_pipeline("adult", self.example("adult.json"), status=(201,))
        run = self.run_now("adult")
        self.assertEqual(run["state"], "succeeded", run)

        rows = train + test
        counts = [("drop_missing", len(rows), len(rows))]
        for col in ("workclass", "occupation", "native-country"):
            before = len(rows)
            rows = [o for o in rows if o[col] != "?"]
            counts.append(("filter", before, len(rows)))
        label = {"<=50K": "0", "<=50K.": "0", ">50K": "1", ">50K.": "1"}
        counts.append(("map_weights", len(rows), len(rows)))
        want = [[str(o[c]) if c != "income" else label[o[c]] for c in ADULT_COLS] for o in rows]
        self.assertGreater(len(train) + len(test) - len(want), 100)
        self.assertEqual({w[-1] for w in want}, {"0", "1"})
        v = self.check_snapshot("adult-clean", 1, ADULT_COLS, want, counts, 5000, 5000)
        types = {c["name"]: c["type"] for c in v["manifest"]["schema"]["columns"]}
        self.assertEqual(types["income"], "numeric")
        self.assertEqual(types["age"], "numeric")
        self.assertEqual(types["workclass"], "categorical")

    def test_rows_trigger_fires_after_n_rows_and_dedupes_events(self):
        header = ["user", "item", "qty"]
        # An ingest schema types qty; the pipeline gives none of its own.
        st, _, ans = self.ing.request("PUT", "/v1/datasets/clicks/schema", {"columns": [
            {"name": "user", "type": "categorical"}, {"name": "item", "type": "categorical"},
            {"name": "qty", "type": "numeric"}]})
        self.assertIn(st, (200, 201), ans)
        spec = {"source": "clicks", "output": "clicks-clean", "steps": [],
                "trigger": {"kind": "rows", "every": 500}}
        self.put_pipeline("clicks", spec, status=(201,))
        self.post_csv("clicks", header, [[f"u{i}", f"i{i % 7}", str(i)] for i in range(300)])
        # The same event delivered again (at least once) must not count twice.
        first = self.ingest.ingested_events("clicks")
        self.assertEqual(len(first), 1)
        self.assertEqual(first[0]["data"]["rows"], 300)
        deadline = time.time() + 15
        while time.time() < deadline and self.prep.request("GET", "/v1/pipelines/clicks")[2]["pending_rows"] != 300:
            time.sleep(0.05)
        self.ingest.redeliver(first[0])
        self.ingest.append("clicks", [{"user": "u", "item": "i", "qty": 1}] * 100)
        deadline = time.time() + 15
        while time.time() < deadline:
            st, _, p = self.prep.request("GET", "/v1/pipelines/clicks")
            if p["pending_rows"] != 300:
                break
            time.sleep(0.05)
        self.assertEqual(p["pending_rows"], 400)  # 300 + 100, the redelivery ignored
        time.sleep(0.5)
        self.assertEqual(self.runs("clicks"), [])  # below the threshold: nothing
        self.post_csv("clicks", header, [[f"v{i}", "i0", "1"] for i in range(150)])
        deadline = time.time() + 30
        while time.time() < deadline and not self.runs("clicks"):
            time.sleep(0.1)
        runs = self.runs("clicks")
        self.assertEqual(len(runs), 1)
        self.assertEqual(runs[0]["trigger"], "rows")
        run = self.wait_run("clicks", runs[0]["run_id"])
        self.assertEqual(run["state"], "succeeded", run)
        self.assertEqual(run["rows_out"], 550)
        st, _, p = self.prep.request("GET", "/v1/pipelines/clicks")
        self.assertEqual(p["pending_rows"], 0)
        st, _, v = self.reg.request("GET", "/v1/datasets/clicks-clean/versions/1")
        self.assertEqual(v["manifest"]["schema"]["columns"],
                         [{"name": "user", "type": "categorical"}, {"name": "item", "type": "categorical"},
                          {"name": "qty", "type": "numeric"}])

    def test_schedule_trigger(self):
        self.ingest.append("ticks", [{"n": i} for i in range(10)])
        spec = {"source": "ticks", "output": "ticks-clean", "steps": [],
                "trigger": {"kind": "schedule", "interval": "1s"}}
        self.put_pipeline("ticks", spec, status=(201,))
        deadline = time.time() + 20
        while time.time() < deadline and len([r for r in self.runs("ticks") if r["state"] == "skipped"]) < 1:
            time.sleep(0.2)
        runs = self.runs("ticks")
        self.assertTrue(all(r["trigger"] == "schedule" for r in runs), runs)
        states = [r["state"] for r in reversed(runs)]
        self.assertEqual(states[0], "succeeded", runs)  # the first snapshot, then nothing new
        self.assertIn("skipped", states)
        st, _, vs = self.reg.request("GET", "/v1/datasets/ticks-clean/versions")
        self.assertEqual(len(vs["versions"]), 1)

    def test_bad_pipelines(self):
        good = {"source": "s", "output": "o", "steps": [{"op": "drop_missing"}]}
        cases = [
            (dict(good, steps=[{"op": "drop_missing"}, {"op": "frobnicate"}]), "steps[1]", "unknown op"),
            (dict(good, steps=[{"op": "filter", "column": "x", "cmp": "~", "value": 1}]), "steps[0] (filter)",
             "cmp"),
            (dict(good, steps=[{"op": "filter", "column": "x", "cmp": ">", "value": 1, "colour": 2}]),
             "steps[0] (filter)", "unknown field \"colour\""),
            (dict(good, steps=[{"op": "derive", "output": "w"}]), "steps[0] (derive)", "exactly one"),
            (dict(good, steps={"op": "drop_missing"}), "array"),
            ({"output": "o", "steps": []}, "source"),
            (dict(good, source="../etc"), "source dataset"),
            (dict(good, output=""), "output"),
            (dict(good, colour=1), "colour"),
            (dict(good, trigger={"kind": "rows"}), "every"),
            (dict(good, trigger={"kind": "rows", "every": 0}), "every"),
            (dict(good, trigger={"kind": "schedule", "interval": "soon"}), "interval"),
            (dict(good, trigger={"kind": "schedule", "interval": "10ms"}), "interval"),
            (dict(good, trigger={"kind": "cron"}), "manual, rows or schedule"),
            (dict(good, output_format="parquet"), "csv"),
            (dict(good, schema={"columns": [{"name": "a", "type": "float"}]}), "schema.columns[0]", "type"),
            (dict(good, schema={"columns": [{"name": "a", "type": "numeric"}, {"name": "a", "type": "numeric"}]}),
             "twice"),
        ]
        for case in cases:
            body, needles = case[0], case[1:]
            with self.subTest(needles=needles):
                self.assertError(self.prep.request("PUT", "/v1/pipelines/p", body), 400, "invalid_argument",
                                 *needles)
        self.assertError(self.prep.request("PUT", "/v1/pipelines/p", b"{not json",
                                           {"Content-Type": "application/json"}), 400, "invalid_argument")
        self.assertError(self.prep.request("PUT", "/v1/pipelines/bad%20name", good), 400, "invalid_argument",
                         "pipeline")
        self.assertError(self.prep.request("GET", "/v1/pipelines/nope"), 404, "not_found", "nope")
        self.assertError(self.prep.request("POST", "/v1/pipelines/nope/runs"), 404, "not_found", "nope")
        self.assertError(self.prep.request("GET", "/v1/pipelines/nope/runs"), 404, "not_found", "nope")
        self.assertError(self.prep.request("DELETE", "/v1/pipelines/nope"), 404, "not_found")
        self.assertEqual(self.prep.request("GET", "/v1/pipelines")[2], {"pipelines": []})

        self.put_pipeline("p", good, status=(201,))
        self.assertError(self.prep.request("POST", "/v1/pipelines/p/runs", {"x": 1}), 400, "invalid_argument", "x")
        self.assertError(self.prep.request("GET", "/v1/pipelines/p/runs/xyz"), 400, "invalid_argument", "hex")
        self.assertError(self.prep.request("GET", "/v1/pipelines/p/runs/" + "0" * 32), 404, "not_found")
        self.assertError(self.prep.request("GET", "/v1/pipelines?page_token=garbage"), 400, "invalid_argument")
        self.assertEqual(self.prep.request("PUT", "/v1/pipelines/p", b"x" * (300 * 1024),
                                           {"Content-Type": "application/json"})[0], 413)
        for i in range(3):
            self.put_pipeline(f"q{i}", good, status=(201,))
        st, _, page = self.prep.request("GET", "/v1/pipelines?limit=2")
        self.assertEqual([p["name"] for p in page["pipelines"]], ["p", "q0"])
        st, _, page2 = self.prep.request("GET", "/v1/pipelines?limit=2&page_token=" + page["next_page_token"])
        self.assertEqual([p["name"] for p in page2["pipelines"]], ["q1", "q2"])
        self.assertNotIn("next_page_token", page2)
        self.assertEqual(self.prep.request("DELETE", "/v1/pipelines/p")[0], 204)
        self.assertError(self.prep.request("GET", "/v1/pipelines/p"), 404, "not_found")

    def test_run_failures_say_why(self):
        self.put_pipeline("ghost", {"source": "no-such-dataset", "output": "x", "steps": []}, status=(201,))
        run = self.run_now("ghost")
        self.assertEqual(run["state"], "failed", run)
        self.assertIn("no-such-dataset", run["error"])
        self.assertIn("does not exist", run["error"])

        self.ingest.append("small", [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])
        self.put_pipeline("wrongcol", {"source": "small", "output": "y",
                                       "steps": [{"op": "filter", "column": "zz", "cmp": ">", "value": 0}]},
                          status=(201,))
        run = self.run_now("wrongcol")
        self.assertEqual(run["state"], "failed", run)
        self.assertIn("steps[0] (filter)", run["error"])
        self.assertIn("zz", run["error"])

        # Rows that do not fit the schema are reported as a "read" step.
        self.ingest.append("mixed", [{"a": 1}, {"a": "one"}, {"a": 3}])
        self.put_pipeline("mixed", {"source": "mixed", "output": "mixed-clean", "steps": [],
                                    "schema": {"columns": [{"name": "a", "type": "numeric"}]}}, status=(201,))
        run = self.run_now("mixed")
        self.assertEqual(run["state"], "succeeded", run)
        self.assertEqual(run["report"]["steps"][0]["op"], "read")
        self.assertEqual(run["report"]["steps"][0]["dropped"], 1)
        self.assertEqual(run["rows_out"], 2)

        st, _, body = self.prep.request("GET", "/metrics")
        text = body.decode()
        self.assertIn('quern_prep_runs_total{service="prep",pipeline="ghost",outcome="failed"} 1', text)
        self.assertIn('quern_prep_rows_total{service="prep",pipeline="mixed",stage="in"} 3', text)
        self.assertIn('quern_prep_rows_total{service="prep",pipeline="mixed",stage="dropped"} 1', text)
        self.assertIn("quern_prep_run_duration_seconds_bucket", text)
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool missing: run make deps")
        p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_crash_mid_run_is_retried_at_start(self):
        self.ingest.append("slow", [{"k": i} for i in range(50)])
        self.put_pipeline("slow", {"source": "slow", "output": "slow-clean", "steps": []}, status=(201,))
        self.pause_ingest()  # the run waits on its first page
        st, _, body = self.prep.request("POST", "/v1/pipelines/slow/runs")
        rid = body["run_id"]
        self.wait_running("slow", rid)
        self.prep.kill9()
        self.resume_ingest()
        self.services.remove(self.prep)
        self.prep = self.start_prep(data=self.prep.data)
        run = self.wait_run("slow", rid)
        self.assertEqual(run["state"], "succeeded", run)
        self.assertEqual(run["attempts"], 2)
        self.assertEqual(run["rows_out"], 50)

    def test_sigterm_exits_zero_and_stops_a_run(self):
        self.ingest.append("slow", [{"k": i} for i in range(5)])
        self.put_pipeline("slow", {"source": "slow", "output": "slow-clean", "steps": []}, status=(201,))
        self.pause_ingest()
        st, _, body = self.prep.request("POST", "/v1/pipelines/slow/runs")
        self.wait_running("slow", body["run_id"])
        threading.Timer(1.0, self.resume_ingest).start()  # the page arrives while prep is stopping
        self.assertEqual(self.prep.stop(signal.SIGTERM), 0)
        self.assertIn('"stopped"', self.prep.log())
        self.assertIn("run interrupted", self.prep.log())
        self.services.remove(self.prep)
        self.prep = self.start_prep(data=self.prep.data)
        run = self.wait_run("slow", body["run_id"])
        self.assertEqual(run["state"], "succeeded", run)
        self.assertEqual(run["attempts"], 1)  # a clean stop does not use up an attempt

    def test_help(self):
        p = subprocess.run([os.path.join(BIN, "quern-prep"), "--help"],
                           capture_output=True)
        self.assertEqual(p.returncode, 0)
        self.assertIn(b"--ingest", p.stdout)
        self.assertIn(b"QUERN_INGEST", p.stdout)


if __name__ == "__main__":
    unittest.main()
