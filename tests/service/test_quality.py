"""Black-box tests of live model quality (quern-monitor's label join) and of
the second closed loop on it:

- QualityMonitorTest (registry + monitor, events on the shared sqlite bus):
  feedback joined to logged predictions by request id; unknown ids counted
  as unjoined, non-numeric labels as bad_label, neither stopping the
  consumer; a binary classifier's window measured (accuracy, ROC AUC, log
  loss, Brier, calibration) exactly as numpy-free Python computes it, beside
  the version's holdout figures; the CBPE estimate made before any label and
  close to the realised AUC once they land; a one-class window reports AUC
  undefined with the reason; predictions past --label-horizon expire and
  their late labels count as unjoined.
- QualityLoopTest (registry + serve + ingest + monitor + alert): serve answers
  every infer with the id it logs (its own when the request has none, also
  at a sample rate below 1, where every logged prediction still joins);
  feedback sent to ingest (a string value refused there with a message)
  joins in the monitor; a regressor's live RMSE beyond 1.2 x its holdout
  RMSE for 2 windows fires the quality rule, which requests a retrain.
"""
import json
import math
import os
import random
import shutil
import tempfile
import time
import unittest

import events
from harness import Service, ServiceTest, WORK
from test_monitor import sha, wait_for


def auc_of(y, s):
    """Mann-Whitney AUC with average ranks for ties."""
    order = sorted(range(len(s)), key=lambda i: s[i])
    ranks = [0.0] * len(s)
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and s[order[j]] == s[order[i]]:
            j += 1
        for k in range(i, j):
            ranks[order[k]] = (i + 1 + j) / 2.0
        i = j
    npos = sum(y)
    nneg = len(y) - npos
    return (sum(r for r, t in zip(ranks, y) if t == 1) - npos * (npos + 1) / 2) / (npos * nneg)


class QualityMonitorTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.home = tempfile.mkdtemp(prefix="quern-qual-", dir=WORK)
        self.bus = f"sqlite://{self.home}/bus.db"
        self.env = {"QUERN_HOME": self.home}
        for d in ("registry", "monitor"):
            os.makedirs(os.path.join(self.home, d))
        self.reg = self.start("registry", data=os.path.join(self.home, "registry"), env=self.env)
        events.subscribe(self.bus, "t-quality", "quern.quality.reported")

    def tearDown(self):
        super().tearDown()
        self.assertNoSanitizerReports()
        shutil.rmtree(self.home, ignore_errors=True)

    def start_monitor(self, *extra):
        self.mon = self.start("monitor", data=os.path.join(self.home, "monitor"), env=self.env,
                              args=["--registry", f"http://127.0.0.1:{self.reg.port}", "--tick", "200ms",
                                    "--bus-lease", "2s", "--label-grace", "2s", *extra])

    def register(self, model, task, metrics):
        st, _, body = self.reg.request("PUT", f"/v1/blobs/{sha(b'weights')}", body=b"weights",
                                       headers={"Content-Type": "application/octet-stream"})
        self.assertIn(st, (200, 201), body)
        self.reg.request("POST", "/v1/models", {"name": model})
        manifest = {"format": "quern.model/1", "kind": "xgboost",
                    "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1]}],
                    "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1]}],
                    "files": {"model.json": sha(b"weights")},
                    "params": {"task": task, **({"classes": [0, 1]} if task == "binary" else {})}}
        st, _, body = self.reg.request("POST", f"/v1/models/{model}/versions",
                                       {"manifest": manifest, "metrics": metrics})
        self.assertEqual(st, 201, body)
        return body["version"]

    def log_predictions(self, model, version, preds, prefix):
        events.publish_predictions(self.bus, model, version, preds, prefix)

    def feedback(self, model, labels, prefix, key="label"):
        events.publish(self.bus, [events.envelope("quern.feedback.received",
                                                  {"model": model, "request_id": f"{prefix}{i}", key: y})
                                  for i, y in enumerate(labels)])

    def quality(self, model):
        st, _, body = self.mon.request("GET", f"/v1/monitors/{model}/quality?history=20")
        self.assertEqual(st, 200, body)
        return body

    def test_binary_join_metrics_and_cbpe(self):
        rng = random.Random(5)
        # A calibrated holdout: its table maps p to about p.
        hold = [rng.random() for _ in range(5000)]
        hy = [1 if rng.random() < p else 0 for p in hold]
        metrics = {"accuracy": 0.74, "roc_auc": 0.83, "log_loss": 0.5, "brier": 0.17}
        for b in range(10):
            rows = [y for p, y in zip(hold, hy) if min(int(p * 10), 9) == b]
            metrics[f"calibration.n.{b}"] = len(rows)
            metrics[f"calibration.rate.{b}"] = sum(rows) / len(rows)
        v = self.register("cls", "binary", metrics)
        self.start_monitor("--quality-window", "400", "--label-horizon", "1h")
        preds = [round(rng.random(), 4) for _ in range(400)]
        labels = [1 if rng.random() < p else 0 for p in preds]
        self.log_predictions("cls", v, preds, "q")
        # the estimate comes with the 400th prediction, before any label
        est = wait_for(lambda: self.quality("cls")["estimates"], timeout=60)[0]
        self.assertFalse(est["realised_ready"], est)
        self.assertEqual(est["window"]["predictions"], 400)
        self.feedback("cls", labels, "q")
        self.feedback("cls", [1] * 5, "nobody-")              # unknown ids: unjoined
        self.feedback("cls", ["abc"], "q")                    # not a number: bad_label
        q = wait_for(lambda: (lambda b: b if b["reports"] and b["labels"]["unjoined"] == 5
                              and b["labels"]["bad_label"] == 1 else None)(self.quality("cls")), timeout=60)
        self.assertEqual(q["labels"]["joined"], 400, q)
        r = q["reports"][0]
        self.assertEqual((r["model"], r["version"], r["task"], r["window"]["labelled"]), ("cls", v, "binary", 400))
        m = r["metrics"]
        acc = sum((p >= 0.5) == (y == 1) for p, y in zip(preds, labels)) / 400
        eps = 1e-15
        ll = -sum(y * math.log(min(max(p, eps), 1 - eps)) + (1 - y) * math.log(1 - min(max(p, eps), 1 - eps))
                  for p, y in zip(preds, labels)) / 400
        brier = sum((p - y) ** 2 for p, y in zip(preds, labels)) / 400
        self.assertAlmostEqual(m["accuracy"]["live"], acc, places=9)
        self.assertAlmostEqual(m["roc_auc"]["live"], auc_of(labels, preds), places=9)
        self.assertAlmostEqual(m["log_loss"]["live"], ll, places=9)
        self.assertAlmostEqual(m["brier"]["live"], brier, places=9)
        self.assertEqual(m["roc_auc"]["reference"], 0.83)
        self.assertEqual(len(r["calibration"]), 10)
        self.assertEqual(sum(b["n"] for b in r["calibration"]), 400)
        # the estimate realised once every prediction of its window is labelled
        est = wait_for(lambda: (lambda e: e if e and e[0]["realised_ready"] else None)(self.quality("cls")["estimates"]),
                       timeout=30)[0]
        self.assertAlmostEqual(est["realised"]["roc_auc"], auc_of(labels, preds), places=9)
        self.assertLess(abs(est["error"]["roc_auc"]), 0.06, est)
        self.assertLess(abs(est["error"]["accuracy"]), 0.06, est)
        self.assertAlmostEqual(est["estimated"]["roc_auc"] - est["realised"]["roc_auc"], est["error"]["roc_auc"],
                               places=9)
        # published, and in the gauges
        evs = events.read(self.bus, "t-quality", "quern.quality.reported", quiet_ms=1000)
        self.assertEqual(len(evs), 1, evs)
        self.assertEqual(evs[0]["data"]["metrics"]["roc_auc"]["live"], m["roc_auc"]["live"])
        st, _, text = self.mon.request("GET", "/metrics", raw=True)
        text = text.decode()
        self.assertIn('quern_quality{service="monitor",model="cls",version="%d",metric="roc_auc"}' % v, text)
        self.assertIn('quern_quality_estimated{service="monitor",model="cls",version="%d",metric="roc_auc"}' % v, text)
        self.assertIn('quern_monitor_labels_total{service="monitor",model="cls",result="unjoined"} 5', text)

    def test_one_class_window_and_horizon(self):
        v = self.register("one", "binary", {"roc_auc": 0.9})
        self.start_monitor("--quality-window", "10", "--label-horizon", "4s")
        self.log_predictions("one", v, [0.9] * 8 + [0.2, 0.3], "a")
        wait_for(lambda: self.quality("one")["state"]["pending"] == 10, timeout=30)
        self.feedback("one", [1] * 10, "a")
        r = wait_for(lambda: self.quality("one")["reports"], timeout=60)[0]
        auc = r["metrics"]["roc_auc"]
        self.assertIsNone(auc["live"], r)
        self.assertIn("both classes", auc["undefined"])
        self.assertEqual(r["metrics"]["accuracy"]["live"], 0.8)
        # predictions past the horizon expire; their late labels are unjoined
        self.log_predictions("one", v, [0.5] * 4, "late")
        wait_for(lambda: self.quality("one")["state"]["pending"] == 4, timeout=30)
        wait_for(lambda: self.quality("one")["state"]["expired"] == 4, timeout=30)
        self.feedback("one", [1] * 4, "late")
        q = wait_for(lambda: (lambda b: b if b["labels"]["unjoined"] == 4 else None)(self.quality("one")), timeout=30)
        self.assertEqual(q["labels"]["joined"], 10, q)
        self.assertEqual(q["state"]["pending"], 0, q)


    def test_regressor_window_by_time_and_bad_labels(self):
        v = self.register("reg", "regression", {"rmse": 2.0, "mae": 1.5, "r2": 0.5})
        self.start_monitor("--quality-window", "1000", "--quality-window-seconds", "2", "--quality-min-rows", "5")
        preds = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        truth = [1.5, 1.0, 3.0, 6.0, 5.5, 6.0]
        self.log_predictions("reg", v, preds, "r")
        wait_for(lambda: self.quality("reg")["state"]["pending"] == 6, timeout=30)
        self.feedback("reg", truth, "r", key="value")
        self.feedback("reg", ["lots"], "r", key="label")        # a string label for a regressor
        q = wait_for(lambda: (lambda b: b if b["reports"] else None)(self.quality("reg")), timeout=60)
        self.assertEqual(q["labels"]["bad_label"], 1, q)
        r = q["reports"][0]
        self.assertEqual((r["task"], r["window"]["labelled"]), ("regression", 6))
        n = len(preds)
        err = [p - t for p, t in zip(preds, truth)]
        mean = sum(truth) / n
        want = {"rmse": math.sqrt(sum(e * e for e in err) / n), "mae": sum(abs(e) for e in err) / n,
                "r2": 1 - sum(e * e for e in err) / sum((t - mean) ** 2 for t in truth),
                "mean_error": sum(err) / n}
        for k, w in want.items():
            self.assertAlmostEqual(r["metrics"][k]["live"], w, places=12, msg=k)
        self.assertEqual(r["metrics"]["rmse"]["reference"], 2.0)
        self.assertFalse(r["degraded"], r)   # rmse 0.91 < 2.0; r2 ~0.87 > 0.5
        self.assertIsNone(r["metrics"]["mean_error"]["reference"])


    def test_label_before_its_prediction_still_joins(self):
        """A label may beat its prediction's log (serve publishes every second):
        held for --label-grace, joined when the prediction comes; one whose
        prediction never comes counts as unjoined once the grace is over."""
        v = self.register("early", "regression", {"rmse": 1.0})
        self.start_monitor("--quality-window", "5", "--label-grace", "20s")
        self.feedback("early", [1.0, 2.0, 3.0, 4.0, 5.0], "e")
        self.feedback("early", [9.0], "never-")
        wait_for(lambda: self.quality("early")["state"]["held_labels"] == 6, timeout=30)
        self.log_predictions("early", v, [1.0, 2.0, 3.0, 4.0, 6.0], "e")
        q = wait_for(lambda: (lambda b: b if b["reports"] else None)(self.quality("early")), timeout=30)
        self.assertEqual(q["labels"]["joined"], 5, q)
        self.assertAlmostEqual(q["reports"][0]["metrics"]["mae"]["live"], 0.2, places=12)
        q = wait_for(lambda: (lambda b: b if b["labels"]["unjoined"] == 1 else None)(self.quality("early")),
                     timeout=60)
        self.assertEqual(q["state"]["held_labels"], 0, q)


class QualityLoopTest(ServiceTest):
    """serve -> feedback at ingest -> monitor quality -> alert -> retrain requested."""

    def setUp(self):
        super().setUp()
        self.home = tempfile.mkdtemp(prefix="quern-qloop-", dir=WORK)
        self.bus = f"sqlite://{self.home}/bus.db"
        self.env = {"QUERN_HOME": self.home}
        for d in ("registry", "serve", "ingest", "monitor", "alert"):
            os.makedirs(os.path.join(self.home, d))
        for g, p in (("t-train", "quern.train.requested"), ("t-q", "quern.quality.reported")):
            events.subscribe(self.bus, g, p)
        self.reg = self.start("registry", data=os.path.join(self.home, "registry"), env=self.env)
        self.regurl = f"http://127.0.0.1:{self.reg.port}"

    def tearDown(self):
        super().tearDown()
        self.assertNoSanitizerReports()
        shutil.rmtree(self.home, ignore_errors=True)

    def publish_regressor(self, model):
        """y = 2x + 1, holdout RMSE 1.0."""
        self.reg.request("POST", "/v1/models", {"name": model})
        lin = {"format": "quern.linear/1", "kind": "linear", "n_features": 1, "coef": [[2.0]], "intercept": [1.0]}
        man = {"format": "quern.model/1", "kind": "linear",
               "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1]}],
               "outputs": [{"name": "prediction", "datatype": "FP32", "shape": [-1]}],
               "transforms": {"format": "quern.features/1", "n_features": 1,
                              "columns": [{"name": "x", "type": "numeric", "steps": []}]},
               "params": {"task": "regression"},
               "files": {"model.json": self.reg.put_blob(json.dumps(lin).encode())}}
        st, _, body = self.reg.request("POST", f"/v1/models/{model}/versions",
                                       {"manifest": man, "metrics": {"rmse": 1.0, "mae": 0.8, "r2": 0.9}})
        self.assertEqual(st, 201, body)
        v = body["version"]
        st, _, body = self.reg.request("PUT", f"/v1/models/{model}/aliases/production", {"version": v})
        self.assertEqual(st, 200, body)
        return v

    def infer(self, model, x, id_=None):
        body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [x]}]}
        if id_:
            body["id"] = id_
        st, _, out = self.serve.request("POST", f"/v2/models/{model}/infer", body)
        self.assertEqual(st, 200, out)
        return out

    def send_feedback(self, recs):
        st, _, body = self.ing.request("POST", "/v1/feedback", recs)
        self.assertEqual(st, 201, body)
        return body

    def test_regressor_quality_alert_requests_retrain(self):
        v = self.publish_regressor("demand")
        rules = {"rules": [{
            "name": "rmse-up", "severity": "warning", "dedupe": "{data.model}",
            "on": {"event": "quern.quality.reported", "where": {"data.model": "demand"},
                   "when": {"value": "data.metrics.rmse.live", "op": ">", "than": "data.metrics.rmse.reference",
                            "times": 1.2, "windows": 2}},
            "actions": [{"type": "log"},
                        {"type": "retrain", "model": "{data.model}",
                         "job": {"kind": "xgboost", "dataset": "demand-rows", "spec": {"label": "y"}}}]}]}
        rules_path = os.path.join(self.home, "rules.json")
        with open(rules_path, "w") as f:
            json.dump(rules, f)
        self.serve = self.start("serve", data=os.path.join(self.home, "serve"), env=self.env,
                                args=["--registry", self.regurl, "--grpc-listen", "off", "--poll-interval", "200ms",
                                      "--log-sample-rate", "1"])
        self.ing = self.start("ingest", data=os.path.join(self.home, "ingest"), env=self.env)
        self.mon = self.start("monitor", data=os.path.join(self.home, "monitor"), env=self.env,
                              args=["--registry", self.regurl, "--tick", "200ms", "--bus-lease", "2s",
                                    "--quality-window", "20", "--label-grace", "2s"])
        self.al = self.start("alert", data=os.path.join(self.home, "alert"), env=self.env,
                             args=["--rules", rules_path, "--bus-lease", "2s"])
        wait_for(lambda: self.serve.request("POST", "/v2/models/demand/infer",
                                            {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1],
                                                         "data": [0.0]}]})[0] == 200, timeout=30)
        rng = random.Random(3)
        # an id given is echoed; without one, serve makes one and returns it
        self.assertEqual(self.infer("demand", 1.0, "mine-1")["id"], "mine-1")
        answers = []
        for i in range(40):
            x = rng.uniform(0, 10)
            out = self.infer("demand", x)
            self.assertTrue(out.get("id"), out)
            answers.append((out["id"], out["outputs"][0]["data"][0]))
        self.assertEqual(len({a[0] for a in answers}), 40)
        # a string value is refused at ingest, with a message naming it
        st, _, body = self.ing.request("POST", "/v1/feedback",
                                       [{"model": "demand", "request_id": answers[0][0], "value": "lots"}])
        self.assertEqual(st, 400, body)
        self.assertIn("value", json.dumps(body))
        # labels come after the predictions are logged (serve drains its log every second)
        wait_for(lambda: self.mon.request("GET", "/v1/monitors/demand/quality")[2]["state"]["pending"] >= 41,
                 timeout=30)
        # the world changed: truths are far from the predictions (RMSE ~3 > 1.2 x 1.0)
        truth = [(rid, p + rng.choice([-3.0, 3.0])) for rid, p in answers]
        self.send_feedback([{"model": "demand", "request_id": rid, "value": y} for rid, y in truth[:20]])

        def reports(n):
            st, _, b = self.mon.request("GET", "/v1/monitors/demand/quality")
            return b if st == 200 and len(b["reports"]) >= n else None

        try:
            q = wait_for(lambda: reports(1), timeout=60)
        except AssertionError:
            raise AssertionError(self.mon.log()[-4000:] + "\n" + self.serve.log()[-2000:])
        r = q["reports"][0]
        self.assertEqual(r["task"], "regression")
        self.assertAlmostEqual(r["metrics"]["rmse"]["live"], 3.0, places=4)
        self.assertEqual(r["metrics"]["rmse"]["reference"], 1.0)
        self.assertTrue(r["degraded"])
        self.assertIn("rmse", r["degraded_metrics"])
        for k in ("mae", "r2", "mean_error"):
            self.assertIn(k, r["metrics"])
        # one window is not enough for the rule ("for 2 windows")
        time.sleep(1.5)
        st, _, al = self.al.request("GET", "/v1/alerts")
        self.assertEqual(al["alerts"], [], al)
        self.send_feedback([{"model": "demand", "request_id": rid, "value": y} for rid, y in truth[20:]])
        wait_for(lambda: reports(2), timeout=60)
        alerts = wait_for(lambda: self.al.request("GET", "/v1/alerts")[2]["alerts"], timeout=30)
        self.assertEqual(alerts[0]["rule"], "rmse-up")
        reqs = wait_for(lambda: events.read(self.bus, "t-train", "quern.train.requested", quiet_ms=500), timeout=30)
        self.assertEqual(reqs[0]["data"]["model"], "demand")
        evs = events.read(self.bus, "t-q", "quern.quality.reported", quiet_ms=500)
        self.assertEqual([e["data"]["degraded"] for e in evs], [True, True])

    def test_sampled_logging_still_joins(self):
        self.publish_regressor("half")
        self.serve = self.start("serve", data=os.path.join(self.home, "serve"), env=self.env,
                                args=["--registry", self.regurl, "--grpc-listen", "off", "--poll-interval", "200ms",
                                      "--log-sample-rate", "0.5"])
        self.ing = self.start("ingest", data=os.path.join(self.home, "ingest"), env=self.env)
        self.mon = self.start("monitor", data=os.path.join(self.home, "monitor"), env=self.env,
                              args=["--registry", self.regurl, "--tick", "200ms", "--bus-lease", "2s",
                                    "--quality-window", "1000", "--label-grace", "2s"])
        wait_for(lambda: self.serve.request("POST", "/v2/models/half/infer",
                                            {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1],
                                                         "data": [0.0]}]})[0] == 200, timeout=30)
        def sent():
            _, _, t = self.serve.request("GET", "/metrics", raw=True)
            for line in t.decode().splitlines():
                if line.startswith("quern_prediction_log_sent_total"):
                    return int(float(line.split()[-1]))
            return 0

        def settled():
            """The sent count once it stopped moving (the log thread drains every second)."""
            a = sent()
            time.sleep(2.5)
            b = sent()
            return [b] if a == b else None

        base = wait_for(settled, timeout=30)[0]
        ids = [self.infer("half", float(i))["id"] for i in range(80)]
        n_logged = wait_for(settled, timeout=30)[0] - base
        self.assertTrue(0 < n_logged < 80, n_logged)
        wait_for(lambda: self.mon.request("GET", "/v1/monitors/half/quality")[2]["state"]["pending"] >= n_logged,
                 timeout=30)
        self.send_feedback([{"model": "half", "request_id": i, "value": 1.0} for i in ids])

        def labels():
            st, _, b = self.mon.request("GET", "/v1/monitors/half/quality")
            return b if st == 200 and b["labels"]["joined"] + b["labels"]["unjoined"] == 80 else None

        q = wait_for(labels, timeout=60)
        self.assertEqual(q["labels"]["joined"], n_logged, q)   # every logged prediction joined
        self.assertEqual(q["labels"]["unjoined"], 80 - n_logged, q)


class QualityRuleTest(ServiceTest):
    """quern-alert's "when" condition on quern.quality.reported: N windows in a row."""

    def setUp(self):
        super().setUp()
        self.home = tempfile.mkdtemp(prefix="quern-qrule-", dir=WORK)
        self.bus = f"sqlite://{self.home}/bus.db"
        os.makedirs(os.path.join(self.home, "alert"))
        events.subscribe(self.bus, "t-train", "quern.train.requested")
        self.rules_path = os.path.join(self.home, "rules.json")
        with open(self.rules_path, "w") as f:
            json.dump({"rules": [self.rule()]}, f)
        self.al = self.start("alert", data=os.path.join(self.home, "alert"), env={"QUERN_HOME": self.home},
                             args=["--rules", self.rules_path, "--bus-lease", "2s"])

    def tearDown(self):
        super().tearDown()
        self.assertNoSanitizerReports()
        shutil.rmtree(self.home, ignore_errors=True)

    @staticmethod
    def rule(**when):
        w = {"value": "data.metrics.roc_auc.live", "op": "<", "than": "data.metrics.roc_auc.reference",
             "plus": -0.03, "windows": 2}
        w.update(when)
        return {"name": "auc-down", "dedupe": "{data.model}",
                "on": {"event": "quern.quality.reported", "where": {"data.model": "adult"}, "when": w},
                "actions": [{"type": "retrain", "model": "{data.model}",
                             "job": {"kind": "xgboost", "dataset": "adult"}}]}

    @staticmethod
    def report(auc, ref=0.9, model="adult"):
        return events.envelope("quern.quality.reported", {
            "model": model, "version": 1, "task": "binary",
            "metrics": {"roc_auc": {"live": auc, "reference": ref}}})

    def alerts(self):
        st, _, body = self.al.request("GET", "/v1/alerts")
        self.assertEqual(st, 200, body)
        return body["alerts"]

    def test_fires_after_two_windows_in_a_row_only(self):
        # 0.86 < 0.9 - 0.03, then 0.88 (not below 0.87) resets, then two in a row below
        # (an undefined AUC, null, resets too)
        events.publish(self.bus, [self.report(0.86), self.report(0.88), self.report(0.80), self.report(None),
                                  self.report(0.80), self.report(0.50, model="other")])
        time.sleep(3)
        self.assertEqual(self.alerts(), [])
        self.assertEqual(events.read(self.bus, "t-train", "quern.train.requested", quiet_ms=300), [])
        events.publish(self.bus, [self.report(0.85)])
        alerts = wait_for(self.alerts, timeout=30)
        self.assertEqual((len(alerts), alerts[0]["rule"], alerts[0]["dedupe_key"]), (1, "auc-down", "adult"))
        reqs = wait_for(lambda: events.read(self.bus, "t-train", "quern.train.requested", quiet_ms=300), timeout=30)
        self.assertEqual(reqs[0]["data"]["model"], "adult")

    def test_bad_when_refused_naming_the_field(self):
        cases = [(self.rule(op="=>"), "rules[0].on.when.op"),
                 (self.rule(than={"x": 1}), "rules[0].on.when.than"),
                 (self.rule(windows=0), "rules[0].on.when.windows"),
                 (self.rule(times="1.2"), "rules[0].on.when.times"),
                 (self.rule(extra=1), "rules[0].on.when"),
                 ({"name": "m", "on": {"metric": {"url": "http://127.0.0.1:1/metrics", "name": "x", "op": ">",
                                                  "value": 1}, "when": {"value": "a", "op": ">", "than": 1}},
                   "actions": [{"type": "log"}]}, "when")]
        for rule, needle in cases:
            st, _, body = self.al.request("PUT", "/v1/rules", {"rules": [rule]})
            self.assertEqual(st, 400, (rule, body))
            self.assertIn(needle, body["error"]["message"], rule)
        # the rules in force stayed
        st, _, body = self.al.request("GET", "/v1/rules")
        self.assertEqual(body["rules"][0]["on"]["when"]["windows"], 2)


if __name__ == "__main__":
    unittest.main()
