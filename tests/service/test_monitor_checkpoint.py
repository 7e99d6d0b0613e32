"""test_monitor_checkpoint.py - quern-monitor's in-memory state across a
restart (the checkpoint table, docs/monitor.md "State across a restart").

- CheckpointQualityTest (registry + monitor, events on a shared sqlite bus):
  predictions logged and half labelled, the monitor SIGTERMed and started
  again: the pending predictions and the open quality window are back, the
  labels sent after the restart join (none unjoined) and the window closes
  at --quality-window rows counting those labelled before the restart, with
  the accuracy of exactly those rows; a corrupt or truncated checkpoint row
  (written with sqlite3) is logged as ignored and the monitor serves and
  joins; truncated, extended or bit-flipped copies of a real checkpoint
  never stop a start (and a truncated one is logged as ignored), the
  intact one then loads whole (pending, held labels, open window); a
  calibrated classifier's estimation window open at a restart closes after
  it over the predictions of both runs, and one closed at a restart is
  realised by labels sent after it; predictions past --label-horizon by
  the time of the start expire at once (their labels unjoined); after kill -9 the monitor starts and serves with the state of the
  last checkpoint (a periodic one, or the one of the last graceful stop:
  what was logged after it is lost, its labels unjoined).
- CheckpointPromoteTest (registry + serve + ingest + monitor): 25 labelled
  shadowed requests before a SIGTERM restart and 15 after it reach
  auto.min_labelled 30 together: production moves, with evidence over >= 30
  requests (15 alone would move nothing); the kept serving latencies
  (agreement's latency_us) are the same after the restart.
Run by /usr/bin/python3.
"""
import os
import random
import shutil
import signal
import sqlite3
import tempfile
import time
import unittest

import events
import test_auto_promote as ap
from harness import PG, ServiceTest, WORK
from test_monitor import sha, wait_for


class CheckpointQualityTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.home = tempfile.mkdtemp(prefix="quern-ckpt-", dir=WORK)
        self.bus = f"sqlite://{self.home}/bus.db"
        self.env = {"QUERN_HOME": self.home}
        for d in ("registry", "monitor"):
            os.makedirs(os.path.join(self.home, d))
        self.reg = self.start("registry", data=os.path.join(self.home, "registry"), env=self.env)
        self.db = os.path.join(self.home, "monitor", "monitor.db")

    def tearDown(self):
        super().tearDown()
        self.assertNoSanitizerReports()
        shutil.rmtree(self.home, ignore_errors=True)

    def start_monitor(self, *extra):
        self.mon = self.start("monitor", data=os.path.join(self.home, "monitor"), env=self.env,
                              args=["--registry", f"http://127.0.0.1:{self.reg.port}", "--tick", "200ms",
                                    "--bus-lease", "2s", "--label-grace", "1s", "--label-horizon", "1h", *extra])

    def restart(self, sig=signal.SIGTERM):
        if sig == signal.SIGKILL:
            self.mon.kill9()
        else:
            self.assertEqual(self.mon.stop(sig), 0)
        self.mon.start(timeout=60)

    def register(self, model, metrics=None):
        st, _, body = self.reg.request("PUT", f"/v1/blobs/{sha(b'weights')}", body=b"weights",
                                       headers={"Content-Type": "application/octet-stream"})
        self.assertIn(st, (200, 201), body)
        self.reg.request("POST", "/v1/models", {"name": model})
        manifest = {"format": "quern.model/1", "kind": "xgboost",
                    "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1]}],
                    "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1]}],
                    "files": {"model.json": sha(b"weights")},
                    "params": {"task": "binary", "classes": [0, 1]}}
        st, _, body = self.reg.request("POST", f"/v1/models/{model}/versions",
                                       {"manifest": manifest, "metrics": metrics or {"accuracy": 0.7}})
        self.assertEqual(st, 201, body)
        return body["version"]

    def log_predictions(self, model, version, preds, prefix):
        events.publish_predictions(self.bus, model, version, preds, prefix)

    def feedback(self, model, labels, prefix, start=0):
        events.publish(self.bus, [events.envelope("quern.feedback.received",
                                                  {"model": model, "request_id": f"{prefix}{start + i}", "label": y})
                                  for i, y in enumerate(labels)])

    def quality(self, model):
        st, _, body = self.mon.request("GET", f"/v1/monitors/{model}/quality?history=20")
        self.assertEqual(st, 200, body)
        return body

    def labelled(self, model):
        w = self.quality(model)["state"]["windows"]
        return w[0]["labelled"] if w else 0

    def checkpoint_written_at(self):
        try:
            with sqlite3.connect(self.db, timeout=30) as c:
                rows = c.execute("SELECT part, written_at FROM checkpoint").fetchall()
        except sqlite3.Error:
            return 0
        return min((r[1] for r in rows), default=0) if len(rows) == 2 else 0

    def test_pending_and_open_window_survive_sigterm(self):
        v = self.register("cls")
        self.start_monitor("--quality-window", "40", "--checkpoint-interval", "0")
        rng = random.Random(7)
        preds = [round(rng.random(), 4) for _ in range(60)]
        labels = [1 if rng.random() < p else 0 for p in preds]
        self.log_predictions("cls", v, preds, "q")
        wait_for(lambda: self.quality("cls")["state"]["pending"] == 60, timeout=60)
        self.feedback("cls", labels[:20], "q")
        wait_for(lambda: self.labelled("cls") == 20, timeout=60)
        self.restart()
        self.assertIn("checkpoint written at stop", self.mon.log())
        q = self.quality("cls")
        self.assertEqual(q["state"]["pending"], 40, q)
        self.assertEqual(q["state"]["windows"][0]["labelled"], 20, q)
        self.assertEqual(q["reports"], [], q)
        # the labels after the restart join predictions logged before it
        self.feedback("cls", labels[20:], "q", start=20)
        q = wait_for(lambda: (lambda b: b if b["reports"] and b["labels"]["joined"] == 60 else None)(
            self.quality("cls")), timeout=60)
        self.assertEqual(q["labels"]["unjoined"], 0, q)
        self.assertEqual(q["state"]["pending"], 0, q)
        self.assertEqual(len(q["reports"]), 1, q)
        r = q["reports"][0]
        self.assertEqual(r["window"]["labelled"], 40, r)
        # the window holds rows 0..39: 20 labelled before the restart, 20 after
        acc = sum((p >= 0.5) == (y == 1) for p, y in zip(preds[:40], labels[:40])) / 40
        self.assertAlmostEqual(r["metrics"]["accuracy"]["live"], acc, places=9)
        self.assertEqual(q["state"]["windows"][0]["labelled"], 20, q)

    def test_estimation_windows_survive(self):
        # a calibrated binary classifier: CBPE estimation windows
        rng = random.Random(3)
        hold = [rng.random() for _ in range(4000)]
        hy = [1 if rng.random() < p else 0 for p in hold]
        metrics = {"accuracy": 0.74, "roc_auc": 0.83}
        for b in range(10):
            rows = [y for p, y in zip(hold, hy) if min(int(p * 10), 9) == b]
            metrics[f"calibration.n.{b}"] = len(rows)
            metrics[f"calibration.rate.{b}"] = sum(rows) / len(rows)
        v = self.register("cal", metrics)
        self.start_monitor("--quality-window", "40", "--checkpoint-interval", "0")
        preds = [round(rng.random(), 4) for _ in range(40)]
        labels = [1 if rng.random() < p else 0 for p in preds]
        self.log_predictions("cal", v, preds[:30], "e")
        wait_for(lambda: self.quality("cal")["state"]["pending"] == 30, timeout=60)
        self.restart()  # the open estimation window holds 30 predictions
        self.assertEqual(self.quality("cal")["estimates"], [])
        self.log_predictions("cal", v, preds[30:], "e30-")
        est = wait_for(lambda: self.quality("cal")["estimates"], timeout=60)[0]
        self.assertEqual(est["window"]["predictions"], 40, est)
        self.assertFalse(est["realised_ready"], est)
        self.restart()  # closed, awaiting its labels
        self.feedback("cal", labels[:30], "e")
        events.publish(self.bus, [events.envelope("quern.feedback.received",
                                                  {"model": "cal", "request_id": f"e30-{i}", "label": y})
                                  for i, y in enumerate(labels[30:])])
        est = wait_for(lambda: (lambda e: e if e and e[0]["realised_ready"] else None)(
            self.quality("cal")["estimates"]), timeout=60)[0]
        self.assertEqual(est["realised"]["labelled"], 40, est)
        acc = sum((p >= 0.5) == (y == 1) for p, y in zip(preds, labels)) / 40
        self.assertAlmostEqual(est["realised"]["accuracy"], acc, places=9)

    @unittest.skipIf(PG, "reads or writes monitor.db with sqlite3")
    def test_damaged_checkpoints_never_stop_the_start(self):
        v = self.register("cls")
        self.start_monitor("--quality-window", "50", "--checkpoint-interval", "0", "--label-grace", "1h")
        self.log_predictions("cls", v, [0.7] * 40, "d")
        wait_for(lambda: self.quality("cls")["state"]["pending"] == 40, timeout=60)
        self.feedback("cls", [1] * 10, "d")
        self.feedback("cls", [1] * 5, "held-")  # held: no prediction yet
        wait_for(lambda: self.labelled("cls") == 10 and self.quality("cls")["state"]["held_labels"] == 5, timeout=60)
        self.assertEqual(self.mon.stop(), 0)
        with sqlite3.connect(self.db, timeout=30) as c:
            good = c.execute("SELECT data FROM checkpoint WHERE part = 'quality'").fetchone()[0]
        rng = random.Random(11)
        damaged = [good[:n] for n in (12, 20, len(good) // 2, len(good) - 1)] + [good + b"x"]
        for _ in range(6):
            b = bytearray(good)
            for _ in range(3):
                b[rng.randrange(12, len(b))] ^= 0xFF
            damaged.append(bytes(b))
        for d in damaged:
            with sqlite3.connect(self.db, timeout=30) as c:
                c.execute("UPDATE checkpoint SET data = ? WHERE part = 'quality'", (d,))
            self.mon.start(timeout=60)
            self.assertEqual(self.quality("cls")["model"], "cls")
            self.assertEqual(self.mon.stop(), 0, self.mon.log()[-3000:])
        self.assertGreaterEqual(self.mon.log().count('"checkpoint ignored"'), 5)
        # the good one still loads whole
        with sqlite3.connect(self.db, timeout=30) as c:
            c.execute("UPDATE checkpoint SET data = ? WHERE part = 'quality'", (good,))
        self.mon.start(timeout=60)
        q = self.quality("cls")
        self.assertEqual((q["state"]["pending"], q["state"]["held_labels"], q["state"]["windows"][0]["labelled"]),
                         (30, 5, 10), q)

    def test_past_the_horizon_at_start_expires(self):
        v = self.register("cls")
        self.start_monitor("--quality-window", "10", "--checkpoint-interval", "0", "--label-horizon", "3s")
        self.log_predictions("cls", v, [0.6] * 5, "h")
        wait_for(lambda: self.quality("cls")["state"]["pending"] == 5, timeout=60)
        self.assertEqual(self.mon.stop(), 0)
        time.sleep(3.5)
        self.mon.start(timeout=60)
        q = self.quality("cls")  # expired before the first event of this run
        self.assertEqual((q["state"]["pending"], q["state"]["expired"]), (0, 5), q)
        self.feedback("cls", [1] * 5, "h")
        q = wait_for(lambda: (lambda b: b if b["labels"]["unjoined"] == 5 else None)(self.quality("cls")), timeout=60)
        self.assertEqual(q["labels"]["joined"], 0, q)

    @unittest.skipIf(PG, "reads or writes monitor.db with sqlite3")
    def test_corrupt_checkpoint_ignored(self):
        v = self.register("cls")
        self.start_monitor("--quality-window", "10", "--checkpoint-interval", "0")
        self.log_predictions("cls", v, [0.9] * 5, "a")
        wait_for(lambda: self.quality("cls")["state"]["pending"] == 5, timeout=60)
        self.assertEqual(self.mon.stop(), 0)
        with sqlite3.connect(self.db, timeout=30) as c:
            # the right header, a body cut short; and bytes that are no checkpoint at all
            c.execute("UPDATE checkpoint SET data = X'514D434B0100000004030201FF' WHERE part = 'quality'")
            c.execute("UPDATE checkpoint SET data = X'DEADBEEF' WHERE part = 'promote'")
            self.assertEqual(c.total_changes, 2)
        self.mon.start(timeout=60)
        log = self.mon.log()
        self.assertIn('"checkpoint ignored"', log)
        self.assertIn("the quality checkpoint does not read", log)
        self.assertIn("not a checkpoint of this format", log)
        q = self.quality("cls")
        self.assertEqual(q["state"]["pending"], 0, q)
        # it serves and joins as a fresh start does
        self.log_predictions("cls", v, [0.9] * 10, "b")
        wait_for(lambda: self.quality("cls")["state"]["pending"] == 10, timeout=60)
        self.feedback("cls", [1] * 10, "b")
        q = wait_for(lambda: (lambda b: b if b["reports"] else None)(self.quality("cls")), timeout=60)
        self.assertEqual(q["reports"][0]["metrics"]["accuracy"]["live"], 1.0, q)
        st, _, _ = self.mon.request("GET", "/readyz")
        self.assertEqual(st, 200)

    def test_kill9_restarts_from_the_last_checkpoint(self):
        v = self.register("cls")
        # only at stop: what is logged after the last graceful stop is lost to a kill -9
        self.start_monitor("--quality-window", "100", "--checkpoint-interval", "0")
        self.log_predictions("cls", v, [0.8] * 10, "a")
        wait_for(lambda: self.quality("cls")["state"]["pending"] == 10, timeout=60)
        self.restart()
        self.log_predictions("cls", v, [0.8] * 10, "b")
        wait_for(lambda: self.quality("cls")["state"]["pending"] == 20, timeout=60)
        self.restart(signal.SIGKILL)
        q = self.quality("cls")
        self.assertEqual(q["state"]["pending"], 10, q)
        self.feedback("cls", [1] * 10, "a")
        self.feedback("cls", [1] * 10, "b")
        q = wait_for(lambda: (lambda b: b if b["labels"]["joined"] == 10 and b["labels"]["unjoined"] == 10
                              else None)(self.quality("cls")), timeout=60)
        self.assertEqual(q["state"]["windows"][0]["labelled"], 10, q)

    @unittest.skipIf(PG, "reads or writes monitor.db with sqlite3")
    def test_kill9_after_a_periodic_checkpoint(self):
        v = self.register("cls")
        self.start_monitor("--quality-window", "100", "--checkpoint-interval", "1s")
        self.log_predictions("cls", v, [0.3] * 30, "p")
        wait_for(lambda: self.quality("cls")["state"]["pending"] == 30, timeout=60)
        seen = int(time.time() * 1000)
        wait_for(lambda: self.checkpoint_written_at() > seen, timeout=30)
        self.restart(signal.SIGKILL)
        q = self.quality("cls")
        self.assertEqual(q["state"]["pending"], 30, q)
        self.feedback("cls", [0] * 30, "p")
        q = wait_for(lambda: (lambda b: b if b["labels"]["joined"] == 30 else None)(self.quality("cls")), timeout=60)
        self.assertEqual(q["labels"]["unjoined"], 0, q)
        self.assertEqual(q["state"]["windows"][0]["labelled"], 30, q)


class CheckpointPromoteTest(ap.AutoFixture):
    publish = ap.AutoPromoteTest.publish
    start_rest = ap.AutoPromoteTest.start_rest
    set_traffic = ap.AutoPromoteTest.set_traffic
    infer_many = ap.AutoPromoteTest.infer_many
    pending = ap.AutoPromoteTest.pending
    feedback = ap.AutoPromoteTest.feedback
    alias = ap.AutoPromoteTest.alias

    def latencies(self):
        st, _, b = self.mon.request("GET", f"/v1/monitors/{ap.MODEL}/agreement")
        self.assertEqual(st, 200, b)
        return b["latency_us"]

    def test_evidence_counts_across_a_restart(self):
        v1 = self.publish(3.0, "production")   # RMSE 3
        v2 = self.publish(0.5, "candidate")    # RMSE 0.5
        self.set_traffic({"routes": [{"alias": "production", "weight": 100}],
                          "shadow": {"alias": "candidate", "fraction": 1.0},
                          "auto": {"challenger": "candidate", "metric": "rmse", "min_labelled": 30,
                                   "margin": 0.1}})
        self.start_rest()
        truths = self.infer_many(40, "sh", 5)
        wait_for(lambda: self.pending() >= 80, timeout=60)
        time.sleep(1.5)
        before = self.pending()
        self.feedback(truths[:25])
        wait_for(lambda: self.pending() <= before - 50, timeout=60)
        time.sleep(2)  # evaluated: 25 < min_labelled moves nothing
        self.assertEqual(self.alias("production"), v1)
        left = self.pending()
        lat = self.latencies()
        self.assertTrue(lat, lat)  # the shadow side's serving latencies
        self.assertEqual(self.mon.stop(), 0)
        self.mon.start(timeout=60)
        self.assertEqual(self.pending(), left)
        self.assertEqual(self.latencies(), lat)
        # 15 more: with the 25 from before the restart, 40 >= 30
        self.feedback(truths[25:])
        try:
            wait_for(lambda: self.alias("production") == v2, timeout=60)
        except AssertionError:
            raise AssertionError(self.mon.log()[-4000:])
        st, _, h = self.reg.request("GET", f"/v1/models/{ap.MODEL}/aliases/production/history")
        self.assertEqual(st, 200, h)
        ev = h["history"][0]["evidence"]
        self.assertEqual((ev["challenger_version"], ev["champion_version"]), (v2, v1))
        self.assertGreaterEqual(ev["labelled"], 30)
        self.assertLessEqual(ev["labelled"], 40)


if __name__ == "__main__":
    unittest.main()
