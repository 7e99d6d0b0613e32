"""Black-box tests of quern-monitor with a real registry and the shared sqlite
bus: drift detected on a shifted window and not on an unshifted control,
restart mid-window (SIGKILL, redelivery, duplicates) losing and doubling
nothing, per-model overrides, reports and history, gauges under promtool,
live hit-rate@k from purchase feedback, and windows reset by a promotion."""
import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
import unittest

import events
from harness import ServiceTest, WORK


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def wait_for(fn, timeout=30, every=0.1):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"condition not met in {timeout}s (last: {last!r})")


class MonitorTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.home = tempfile.mkdtemp(prefix="quern-mon-", dir=WORK)
        self.bus = f"sqlite://{self.home}/bus.db"
        env = {"QUERN_HOME": self.home}
        for d in ("registry", "monitor"):
            os.makedirs(os.path.join(self.home, d))
        self.reg = self.start("registry", data=os.path.join(self.home, "registry"), env=env)
        self.mon_args = ["--registry", f"http://127.0.0.1:{self.reg.port}", "--window-rows", "200",
                         "--window-seconds", "3600", "--bus-lease", "2s", "--tick", "200ms"]
        self.mon = self.start("monitor", data=os.path.join(self.home, "monitor"), env=env,
                              args=self.mon_args)
        events.subscribe(self.bus, "t-drift", "quern.drift.detected")

    def tearDown(self):
        super().tearDown()
        self.assertNoSanitizerReports(("monitor", "alert"))
        shutil.rmtree(self.home, ignore_errors=True)

    # -- helpers ------------------------------------------------------------

    def register(self, model, csv_text, kind="xgboost"):
        csv = os.path.join(self.home, f"{model}.csv")
        with open(csv, "w") as f:
            f.write(csv_text)
        prof = events.profile(csv, csv + ".profile.json")
        for blob in (prof, b"weights"):
            st, _, _ = self.reg.request("PUT", f"/v1/blobs/{sha(blob)}", body=blob,
                                        headers={"Content-Type": "application/octet-stream"})
            self.assertIn(st, (200, 201))
        st, _, body = self.reg.request("POST", "/v1/models", {"name": model})
        self.assertIn(st, (201, 409), body)
        manifest = {"format": "quern.model/1", "kind": kind,
                    "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1]}],
                    "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1]}],
                    "files": {"model.json": sha(b"weights")}, "profile": sha(prof)}
        st, _, body = self.reg.request("POST", f"/v1/models/{model}/versions", {"manifest": manifest})
        self.assertEqual(st, 201, body)
        return body["version"]

    @staticmethod
    def tabular_rows(rng, n, shift=0.0):
        rows = []
        for _ in range(n):
            c = rng.choices(["a", "b", "c"], [0.6 - shift / 4, 0.3, 0.1 + shift / 4])[0]
            rows.append({"x": rng.gauss(shift, 1.0), "y": rng.uniform(0, 10 + 10 * shift), "c": c})
        return rows

    def predictions(self, model, version, rows, batch=10, start=0):
        evs = []
        for i in range(0, len(rows), batch):
            preds = [{"request_id": f"r{start + i + j}", "time": time.time(), "features": r,
                      "prediction": 0.5} for j, r in enumerate(rows[i:i + batch])]
            evs.append(events.envelope("quern.predictions.logged",
                                       {"model": model, "version": version, "predictions": preds}))
        return evs

    def state(self, model):
        st, _, body = self.mon.request("GET", f"/v1/monitors/{model}")
        return body if st == 200 else None

    def counted(self, model):
        s = self.state(model)
        return s["counts"]["predictions"] if s else 0

    def churn(self):
        rng = random.Random(7)
        ref = self.tabular_rows(rng, 500)
        text = "x,y,c\n" + "".join(f"{r['x']:.6f},{r['y']:.6f},{r['c']}\n" for r in ref)
        return self.register("churn", text), rng

    # -- tests --------------------------------------------------------------

    def test_drift_on_shifted_window_not_on_control(self):
        v, rng = self.churn()
        events.publish(self.bus, self.predictions("churn", v, self.tabular_rows(rng, 200)))
        r1 = wait_for(lambda: (lambda s: s and s["latest_report"])(self.state("churn")))
        events.publish(self.bus, self.predictions("churn", v, self.tabular_rows(rng, 200, shift=1.0)))
        wait_for(lambda: self.state("churn")["latest_report"]["id"] != r1["id"])
        st, _, hist = self.mon.request("GET", "/v1/monitors/churn/report?history=10")
        self.assertEqual(st, 200, hist)
        shifted, control = hist["reports"]
        self.assertEqual(control["window"]["rows"], 200)
        self.assertFalse(control["dataset_drift"], control)
        self.assertTrue(shifted["dataset_drift"], shifted)
        by = {f["column"]: f for f in shifted["features"]}
        self.assertEqual(set(by), {"x", "y", "c"})
        self.assertEqual((by["x"]["method"], by["c"]["method"]), ("ks", "chisquare"))
        self.assertTrue(by["x"]["drifted"] and by["x"]["p_value"] < 0.05)
        self.assertLess(control["share_drifted"], 0.5)
        st, _, latest = self.mon.request("GET", "/v1/monitors/churn/report")
        self.assertEqual((st, latest["id"]), (200, shifted["id"]))
        # exactly one event: only the drifted window is published
        got = events.read(self.bus, "t-drift", "quern.drift.detected", quiet_ms=1500)
        self.assertEqual(len(got), 1, got)
        d = got[0]["data"]
        self.assertEqual((d["model"], d["version"], d["dataset_drift"]), ("churn", v, True))
        self.assertEqual(d["window"]["rows"], 200)
        self.assertEqual({f["column"] for f in d["features"]}, {"x", "y", "c"})
        self.assertGreaterEqual(d["share_drifted"], 0.5)
        # gauges, promtool-clean
        st, _, text = self.mon.request("GET", "/metrics", raw=True)
        text = text.decode()
        self.assertIn('quern_drift_score{service="monitor",model="churn",feature="x",method="ks"}', text)
        self.assertIn('quern_drift_detected{service="monitor",model="churn"} 1', text)
        self.assertIn('quern_monitor_predictions_total{service="monitor",model="churn"} 400', text)
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool)
        p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_report_carries_distributions(self):
        """The latest report (and one by id) carries each feature's reference and
        current distribution: bins from the reference profile, counts summing to
        the window, outsiders in the end bins, missing cells apart."""
        rng = random.Random(7)
        ref = self.tabular_rows(rng, 500)
        csv_text = "x,y,c\n" + "".join(f"{r['x']:.6f},{r['y']:.6f},{r['c']}\n" for r in ref)
        v = self.register("churn", csv_text)
        with open(os.path.join(self.home, "churn.csv.profile.json")) as f:
            prof = {c["name"]: c for c in json.load(f)["columns"]}
        rows = self.tabular_rows(rng, 200, shift=0.5)
        for r in rows[:7]:
            r["x"] = 1e6          # far above the reference
        for r in rows[7:10]:
            r["x"] = -1e6         # far below
        for r in rows[10:15]:
            del r["x"]            # missing
        for r in rows[15:19]:
            r["c"] = "zzz"        # a category the reference never saw
        events.publish(self.bus, self.predictions("churn", v, rows))
        wait_for(lambda: (lambda s: s and s["latest_report"])(self.state("churn")))
        st, _, rep = self.mon.request("GET", "/v1/monitors/churn/report")
        self.assertEqual(st, 200, rep)
        d = rep["distributions"]
        self.assertEqual(set(d), {"x", "y", "c"})
        x = d["x"]
        self.assertEqual((x["type"], x["binning"]), ("numeric", "reference_equal_width"))
        self.assertEqual(x["edges"], prof["x"]["edges"])            # the reference's own bins
        self.assertEqual(x["reference"], prof["x"]["hist"])
        self.assertEqual(x["reference_total"], 500)
        self.assertEqual((x["current_total"], x["current_missing"]), (200, 5))
        self.assertEqual(sum(x["current"]) + x["current_missing"], 200)
        xs = [r["x"] for r in rows if "x" in r]
        below = sum(1 for v in xs if v < x["edges"][0])
        above = sum(1 for v in xs if v > x["edges"][-1])
        self.assertGreaterEqual((below, above), (3, 7))
        self.assertEqual((x["current_below"], x["current_above"]), (below, above))
        # the outsiders are in the end bins, and every bin holds what falls in it
        for b in range(len(x["current"])):
            lo, hi = x["edges"][b], x["edges"][b + 1]
            last = b == len(x["current"]) - 1
            want = sum(1 for v in xs if (lo <= v < hi or (last and v == hi)))
            want += below if b == 0 else 0
            want += above if last else 0
            self.assertEqual(x["current"][b], want, b)
        y = d["y"]
        self.assertEqual(sum(y["current"]) + y["current_missing"], 200)
        c = d["c"]
        self.assertEqual(c["type"], "categorical")
        self.assertIn("zzz", c["categories"])
        i = c["categories"].index("zzz")
        self.assertEqual((c["reference"][i], c["current"][i]), (0, 4))
        self.assertEqual(sum(c["current"]) + c["current_other"] + c["current_missing"], 200)
        self.assertEqual(sum(c["reference"]) + c["reference_other"] + c["reference_missing"], 500)
        for name, n in zip(prof["c"]["categories"], prof["c"]["counts"]):
            self.assertEqual(c["reference"][c["categories"].index(name)], n)
        # one report by id: the same; the history list leaves them out
        st, _, one = self.mon.request("GET", f"/v1/monitors/churn/reports/{rep['id']}")
        self.assertEqual(st, 200, one)
        self.assertEqual(one["distributions"], d)
        st, _, hist = self.mon.request("GET", "/v1/monitors/churn/report?history=5")
        self.assertEqual(st, 200)
        self.assertNotIn("distributions", hist["reports"][0])
        self.assertError(self.mon.request("GET", "/v1/monitors/churn/reports/999"), 404, "not_found", "999")
        self.assertError(self.mon.request("GET", "/v1/monitors/churn/reports/x1"), 400, "invalid_argument", "report id")

    def test_restart_mid_window_loses_and_doubles_nothing(self):
        v, rng = self.churn()
        evs = self.predictions("churn", v, self.tabular_rows(rng, 120))
        events.publish(self.bus, evs + [evs[0], evs[1]])  # two duplicates (same ids)
        wait_for(lambda: self.counted("churn") == 120)
        time.sleep(0.5)
        self.assertEqual(self.counted("churn"), 120)
        self.assertEqual(self.state("churn")["windows"][0]["rows"], 120)
        # killed with events in flight: some received and not acked
        more = self.predictions("churn", v, self.tabular_rows(rng, 60), batch=1, start=1000)
        events.publish(self.bus, more)
        time.sleep(0.05)
        self.mon.kill9()
        events.publish(self.bus, more[:5])  # redelivered duplicates while down
        self.mon.start()
        wait_for(lambda: self.counted("churn") == 180, timeout=40)
        time.sleep(3)  # past the bus lease: any redelivery has happened
        s = self.state("churn")
        self.assertEqual(s["counts"]["predictions"], 180)
        self.assertEqual(s["windows"][0]["rows"], 180)
        # the window closes at exactly 200 counted rows
        events.publish(self.bus, self.predictions("churn", v, self.tabular_rows(rng, 20), start=2000))
        rep = wait_for(lambda: (lambda s: s["latest_report"])(self.state("churn")))
        st, _, full = self.mon.request("GET", "/v1/monitors/churn/report")
        self.assertEqual(full["window"]["rows"], 200)
        self.assertEqual(self.state("churn")["windows"], [])
        # SIGTERM exits 0
        self.assertEqual(self.mon.stop(), 0)

    def test_overrides_close_by_time_and_bad_input(self):
        v, rng = self.churn()
        bad = [({"window_rows": 0}, "window_rows"), ({"share": 2}, "share"),
               ({"methods": {"x": {"method": "magic"}}}, "magic"), ({"nope": 1}, "nope"),
               ({"methods": {"x": {"method": "ks", "threshold": -1}}}, "threshold")]
        for body, needle in bad:
            self.assertError(self.mon.request("PUT", "/v1/monitors/churn", body), 400, "invalid_argument", needle)
        self.assertError(self.mon.request("PUT", "/v1/monitors/-bad", {}), 400, "invalid_argument")
        self.assertError(self.mon.request("GET", "/v1/monitors/churn"), 404, "not_found", "churn")
        self.assertError(self.mon.request("GET", "/v1/monitors/churn/report"), 404, "not_found")
        self.assertError(self.mon.request("GET", "/v1/monitors/churn/report?history=0"), 400, "invalid_argument")
        st, _, body = self.mon.request("PUT", "/v1/monitors/churn",
                                       {"window_rows": 1000, "window_seconds": 1, "min_rows": 30,
                                        "methods": {"x": {"method": "wasserstein", "threshold": 0.2}},
                                        "share": 0.3})
        self.assertEqual(st, 200, body)
        self.assertEqual(body["settings"]["window_rows"], 1000)
        self.assertEqual(body["settings"]["methods"]["x"], {"method": "wasserstein", "threshold": 0.2})
        # 20 rows: too few to close by time
        events.publish(self.bus, self.predictions("churn", v, self.tabular_rows(rng, 20)))
        wait_for(lambda: self.counted("churn") == 20)
        time.sleep(1.6)
        self.assertIsNone(self.state("churn")["latest_report"])
        events.publish(self.bus, self.predictions("churn", v, self.tabular_rows(rng, 20, shift=2.0)))
        rep = wait_for(lambda: self.state("churn")["latest_report"], timeout=10)
        st, _, full = self.mon.request("GET", "/v1/monitors/churn/report")
        self.assertEqual(full["window"]["rows"], 40)
        by = {f["column"]: f for f in full["features"]}
        self.assertEqual((by["x"]["method"], by["x"]["threshold"]), ("wasserstein", 0.2))
        self.assertEqual(full["share_threshold"], 0.3)
        st, _, lst = self.mon.request("GET", "/v1/monitors")
        self.assertEqual([m["model"] for m in lst["monitors"]], ["churn"])
        st, _, _ = self.mon.request("DELETE", "/v1/monitors/churn")
        self.assertEqual(st, 204)
        self.assertError(self.mon.request("DELETE", "/v1/monitors/churn"), 404, "not_found")
        self.assertEqual(self.state("churn")["settings"]["window_rows"], 200)

    def test_missing_profile_is_reported_not_fatal(self):
        # a version the registry does not know: the window closes with an error report
        evs = self.predictions("ghost", 3, self.tabular_rows(random.Random(1), 30))
        events.publish(self.bus, evs)
        wait_for(lambda: self.counted("ghost") == 30)
        st, _, body = self.mon.request("POST", "/v1/monitors/ghost/close")
        self.assertEqual((st, body["closed"]), (200, 1))
        st, _, rep = self.mon.request("GET", "/v1/monitors/ghost/report")
        self.assertIn("error", rep)
        self.assertFalse(rep["dataset_drift"])
        self.assertFalse(rep["published"])
        # malformed events are ignored, not retried forever
        events.publish(self.bus, [events.envelope("quern.predictions.logged", {"model": "../x", "version": 1})])
        wait_for(lambda: b"quern_monitor_events_ignored_total" in self.mon.request("GET", "/metrics", raw=True)[2])

    def test_recommender_hit_rate_and_popularity_drift(self):
        rng = random.Random(3)
        users = [f"u{i}" for i in range(40)]
        items = [f"i{i}" for i in range(30)]
        lines = ["user_id,item_id\n"]
        for _ in range(800):
            lines.append(f"{rng.choice(users)},{rng.choice(items[:20])}\n")
        v = self.register("shop", "".join(lines), kind="als")
        preds = []
        now = time.time()
        for n in range(100):
            u = users[n % 40]
            recs = rng.sample(items[20:], 5) if n >= 50 else rng.sample(items[:20], 5)
            preds.append({"request_id": f"q{n}", "time": now, "features": {"user_id": u},
                          "prediction": {"items": recs, "scores": [0.9, 0.8, 0.7, 0.6, 0.5],
                                         "fallback": False}})
        ev = events.envelope("quern.predictions.logged", {"model": "shop", "version": v, "predictions": preds})
        events.publish(self.bus, [ev])
        wait_for(lambda: self.counted("shop") == 100)
        # feedback: 2 hits (by request id and by user), 1 miss, 1 unjoined, 1 view
        first = preds[0]["prediction"]["items"]
        u5_items = preds[5]["prediction"]["items"]
        miss = next(i for i in items if i not in preds[7]["prediction"]["items"]
                    and i not in preds[47]["prediction"]["items"] and i not in preds[87]["prediction"]["items"])
        fb = [{"model": "shop", "request_id": "q0", "item": first[2], "outcome": "purchase"},
              {"model": "shop", "user": "u5", "item": u5_items[0], "label": "purchase"},
              {"model": "shop", "user": "u7", "item": miss, "outcome": "purchase"},
              {"model": "shop", "user": "nobody", "item": "i1", "outcome": "purchase"},
              {"model": "shop", "user": "u1", "item": first[0], "outcome": "view"}]
        events.publish(self.bus, [events.envelope("quern.feedback.received", d) for d in fb])
        s = wait_for(lambda: (lambda s: s if s["counts"]["feedback"] == 5 else None)(self.state("shop")))
        self.assertEqual((s["hit_rate"]["hits"], s["hit_rate"]["joined"]), (2, 3))
        self.assertAlmostEqual(s["hit_rate"]["rate"], 2 / 3)
        st, _, text = self.mon.request("GET", "/metrics", raw=True)
        self.assertIn('quern_live_hit_rate{service="monitor",model="shop",k="10"} 0.6666', text.decode())
        # half the recommendations from items training never saw: item_id drifts
        st, _, body = self.mon.request("POST", "/v1/monitors/shop/close")
        st, _, rep = self.mon.request("GET", "/v1/monitors/shop/report")
        self.assertTrue(rep["recommender"])
        by = {f["column"]: f for f in rep["features"]}
        self.assertEqual(set(by), {"user_id", "item_id"})
        self.assertEqual(by["item_id"]["n_current"], 500)
        self.assertTrue(by["item_id"]["drifted"], by)
        self.assertFalse(by["user_id"]["drifted"], by)

    def test_promotion_resets_windows(self):
        v, rng = self.churn()
        events.publish(self.bus, self.predictions("churn", v, self.tabular_rows(rng, 30)))
        wait_for(lambda: self.counted("churn") == 30)
        events.publish(self.bus, [events.envelope("quern.model.promoted",
                                                  {"model": "churn", "alias": "staging", "version": v + 1,
                                                   "previous_version": v})])
        time.sleep(1)
        self.assertEqual(len(self.state("churn")["windows"]), 1)
        events.publish(self.bus, [events.envelope("quern.model.promoted",
                                                  {"model": "churn", "alias": "production", "version": v + 1,
                                                   "previous_version": v})])
        wait_for(lambda: self.state("churn")["windows"] == [])
        self.assertEqual(self.counted("churn"), 30)


if __name__ == "__main__":
    unittest.main()
