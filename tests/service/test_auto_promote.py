"""test_auto_promote.py - the automatic promotion / rollback policy (the
"auto" object of a traffic policy), end to end: registry + serve + ingest +
monitor on one QUERN_HOME (one embedded bus).

Model "price" is a regressor written by hand (libquern-ml's linear format);
the truth is y = 2x + 1. Each version is the truth plus a constant offset,
so its live RMSE is known exactly.

It asserts: a bad "auto" is a 400 naming the field (auto.metric,
auto.challenger, auto.min_labelled, auto.rollback.error_rate); with a 100%
shadow to a better candidate, labels sent to ingest join both versions'
predictions of each request id, and nothing moves before min_labelled
labelled requests; once there are enough, production moves to the
candidate's version, the alias history records the move with reason
"auto-promote: rmse ..." and the evidence (both figures, how many
requests), quern.model.auto_promoted is published and the traffic goes to
production only; a 50/50 canary to a much worse version is rolled back
(its weight 0, its share to production) with the evidence in
quern.traffic.rolled_back, and production does not move. Run by
/usr/bin/python3.
"""
import json
import os
import random
import shutil
import tempfile
import time
import unittest

import events
from harness import ServiceTest, WORK
from test_monitor import wait_for

MODEL = "price"


def ev_n(move):
    return move["evidence"]["labelled"]


class AutoFixture(ServiceTest):
    """A registry holding MODEL, on a home and SQLite bus of the test's own, with the events of
    SUBSCRIBE subscribed (group, type); at the end no service logged a sanitizer report."""
    DIRS = ("registry", "serve", "ingest", "monitor")
    SUBSCRIBE = (("t-ap", "quern.model.auto_promoted"), ("t-rb", "quern.traffic.rolled_back"))

    def setUp(self):
        super().setUp()
        self.home = tempfile.mkdtemp(prefix="quern-auto-", dir=WORK)
        self.bus = f"sqlite://{self.home}/bus.db"
        self.env = {"QUERN_HOME": self.home}
        for d in self.DIRS:
            os.makedirs(os.path.join(self.home, d))
        for g, p in self.SUBSCRIBE:
            events.subscribe(self.bus, g, p)
        self.reg = self.start("registry", data=os.path.join(self.home, "registry"), env=self.env)
        self.regurl = f"http://127.0.0.1:{self.reg.port}"
        self.reg.request("POST", "/v1/models", {"name": MODEL})

    def tearDown(self):
        super().tearDown()
        self.assertNoSanitizerReports()
        shutil.rmtree(self.home, ignore_errors=True)


class AutoPromoteTest(AutoFixture):
    def publish(self, offset, alias):
        """A version predicting 2x + 1 + offset, under alias."""
        lin = {"format": "quern.linear/1", "kind": "linear", "n_features": 1, "coef": [[2.0]],
               "intercept": [1.0 + offset]}
        man = {"format": "quern.model/1", "kind": "linear",
               "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1]}],
               "outputs": [{"name": "prediction", "datatype": "FP32", "shape": [-1]}],
               "transforms": {"format": "quern.features/1", "n_features": 1,
                              "columns": [{"name": "x", "type": "numeric", "steps": []}]},
               "params": {"task": "regression"},
               "files": {"model.json": self.reg.put_blob(json.dumps(lin).encode())}}
        st, _, body = self.reg.request("POST", f"/v1/models/{MODEL}/versions",
                                       {"manifest": man, "metrics": {"rmse": 1.0, "mae": 1.0, "r2": 0.9}})
        self.assertEqual(st, 201, body)
        v = body["version"]
        st, _, body = self.reg.request("PUT", f"/v1/models/{MODEL}/aliases/{alias}", {"version": v})
        self.assertEqual(st, 200, body)
        return v

    def start_rest(self):
        self.serve = self.start("serve", data=os.path.join(self.home, "serve"), env=self.env,
                                args=["--registry", self.regurl, "--grpc-listen", "off", "--poll-interval", "200ms",
                                      "--log-sample-rate", "1"])
        self.ing = self.start("ingest", data=os.path.join(self.home, "ingest"), env=self.env)
        self.mon = self.start("monitor", data=os.path.join(self.home, "monitor"), env=self.env,
                              args=["--registry", self.regurl, "--tick", "200ms", "--bus-lease", "2s",
                                    "--quality-window", "20", "--label-grace", "2s", "--label-horizon", "1h"])
        wait_for(lambda: self.serve.request("POST", f"/v2/models/{MODEL}/infer",
                                            {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1],
                                                         "data": [0.0]}]})[0] == 200, timeout=60)

    def set_traffic(self, policy, status=200):
        st, _, body = self.reg.request("PUT", f"/v1/models/{MODEL}/traffic", policy)
        self.assertEqual(st, status, body)
        return body

    def infer_many(self, n, prefix, seed):
        rng = random.Random(seed)
        out = []
        for i in range(n):
            x = rng.uniform(0, 10)
            rid = f"{prefix}-{i}"
            st, hdr, body = self.serve.request("POST", f"/v2/models/{MODEL}/infer",
                                               {"id": rid, "inputs": [{"name": "x", "datatype": "FP64",
                                                                       "shape": [1], "data": [x]}]})
            self.assertEqual(st, 200, body)
            out.append((rid, 2 * x + 1))
        return out

    def pending(self):
        st, _, b = self.mon.request("GET", f"/v1/monitors/{MODEL}/quality")
        return b["state"]["pending"] if st == 200 else 0

    def feedback(self, truths):
        st, _, body = self.ing.request("POST", "/v1/feedback",
                                       [{"model": MODEL, "request_id": rid, "value": y} for rid, y in truths])
        self.assertEqual(st, 201, body)

    def alias(self, name):
        st, _, b = self.reg.request("GET", f"/v1/models/{MODEL}/aliases/{name}")
        self.assertEqual(st, 200, b)
        return b["version"]

    def test_1_bad_auto_names_the_field(self):
        self.publish(0.0, "production")
        self.publish(0.0, "candidate")
        base = {"routes": [{"alias": "production", "weight": 100}]}
        for auto, field in (({"challenger": "candidate", "metric": "speed"}, "auto.metric"),
                            ({"metric": "rmse"}, "auto.challenger"),
                            ({"challenger": "nobody", "metric": "rmse"}, "auto.challenger"),
                            ({"challenger": "candidate", "metric": "rmse", "min_labelled": 0}, "auto.min_labelled"),
                            ({"challenger": "candidate", "metric": "rmse", "rollback": {"error_rate": 2}},
                             "auto.rollback.error_rate"),
                            ({"challenger": "candidate", "metric": "rmse", "rollback": {"p99": 2}},
                             "auto.rollback"),
                            ("yes", "auto")):
            body = self.set_traffic(dict(base, auto=auto), 400)
            self.assertIn(field, json.dumps(body), (auto, body))
        got = self.set_traffic(dict(base, auto={"challenger": "candidate", "metric": "rmse"}))
        self.assertEqual(got["auto"], {"challenger": "candidate", "metric": "rmse", "min_labelled": 500,
                                       "margin": 0.0, "promote": True, "rollback": None})
        # evidence on a hand move must be an object
        st, _, body = self.reg.request("PUT", f"/v1/models/{MODEL}/aliases/production",
                                       {"version": 2, "evidence": "because"})
        self.assertEqual(st, 400, body)
        self.assertIn("evidence", json.dumps(body))

    def test_2_shadow_challenger_promoted_with_evidence(self):
        v1 = self.publish(3.0, "production")   # RMSE 3
        v2 = self.publish(0.5, "candidate")    # RMSE 0.5
        self.set_traffic({"routes": [{"alias": "production", "weight": 100}],
                          "shadow": {"alias": "candidate", "fraction": 1.0},
                          "auto": {"challenger": "candidate", "metric": "rmse", "min_labelled": 30,
                                   "margin": 0.1}})
        self.start_rest()
        truths = self.infer_many(40, "sh", 5)
        # both versions logged every request under its id
        wait_for(lambda: self.pending() >= 80, timeout=60)
        time.sleep(1.5)
        before = self.pending()
        self.feedback(truths[:25])
        # each label joined both versions' predictions of its id
        wait_for(lambda: self.pending() <= before - 50, timeout=60)
        time.sleep(3)  # several evaluations: 25 < min_labelled moves nothing
        self.assertEqual(self.alias("production"), v1)
        self.feedback(truths[25:])
        try:
            wait_for(lambda: self.alias("production") == v2, timeout=60)
        except AssertionError:
            raise AssertionError(self.mon.log()[-4000:])
        st, _, h = self.reg.request("GET", f"/v1/models/{MODEL}/aliases/production/history")
        self.assertEqual(st, 200, h)
        move = h["history"][0]
        self.assertEqual((move["from_version"], move["to_version"]), (v1, v2))
        self.assertTrue(move["reason"].startswith("auto-promote: rmse 0.5"), move)
        self.assertIn(" vs 3", move["reason"])
        self.assertIn(f"over {ev_n(move)} labelled requests", move["reason"])
        ev = move["evidence"]
        self.assertEqual((ev["challenger_version"], ev["champion_version"]), (v2, v1))
        self.assertGreaterEqual(ev["labelled"], 30)
        self.assertLessEqual(ev["labelled"], 40)
        self.assertAlmostEqual(ev["challenger"], 0.5, places=4)
        self.assertAlmostEqual(ev["champion"], 3.0, places=4)
        # the hand-made move before it has no evidence
        self.assertNotIn("evidence", h["history"][-1])
        evs = wait_for(lambda: events.read(self.bus, "t-ap", "quern.model.auto_promoted", quiet_ms=500), timeout=30)
        self.assertEqual(len(evs), 1, evs)
        self.assertEqual(evs[0]["data"]["version"], v2)
        self.assertEqual(evs[0]["data"]["evidence"]["labelled"], ev["labelled"])
        pol = wait_for(lambda: (lambda b: b if b["shadow"] is None else None)(
            self.reg.request("GET", f"/v1/models/{MODEL}/traffic")[2]), timeout=30)
        self.assertEqual(pol["routes"], [{"alias": "production", "weight": 100}])
        self.assertEqual(pol["auto"]["challenger"], "candidate")
        # the live quality reports are per version: both versions have them
        st, _, q = self.mon.request("GET", f"/v1/monitors/{MODEL}/quality?history=20")
        self.assertEqual({r["version"] for r in q["reports"]}, {v1, v2}, q)

    def test_3_bad_canary_rolled_back(self):
        v1 = self.publish(0.2, "production")   # RMSE 0.2
        v3 = self.publish(20.0, "canary")      # RMSE 20
        self.set_traffic({"routes": [{"alias": "production", "weight": 50}, {"alias": "canary", "weight": 50}],
                          "auto": {"challenger": "canary", "metric": "rmse", "min_labelled": 10, "promote": False,
                                   "rollback": {"quality_margin": 0.5}}})
        self.start_rest()
        truths = self.infer_many(60, "cn", 9)
        wait_for(lambda: self.pending() >= 60, timeout=60)
        self.feedback(truths)

        def rolled():
            b = self.reg.request("GET", f"/v1/models/{MODEL}/traffic")[2]
            return b if {r["alias"]: r["weight"] for r in b["routes"]}.get("canary") == 0 else None
        try:
            pol = wait_for(rolled, timeout=60)
        except AssertionError:
            raise AssertionError(self.mon.log()[-4000:])
        self.assertEqual({r["alias"]: r["weight"] for r in pol["routes"]}, {"production": 100, "canary": 0})
        evs = wait_for(lambda: events.read(self.bus, "t-rb", "quern.traffic.rolled_back", quiet_ms=500), timeout=30)
        self.assertEqual(len(evs), 1, evs)
        d = evs[0]["data"]
        self.assertEqual((d["alias"], d["version"], d["weight"]), ("canary", v3, 0))
        ev = d["evidence"]
        self.assertEqual(ev["cause"], "quality")
        self.assertEqual((ev["canary_version"], ev["production_version"]), (v3, v1))
        self.assertAlmostEqual(ev["canary"], 20.0, places=3)
        self.assertAlmostEqual(ev["production"], 0.2, places=3)
        self.assertGreaterEqual(min(ev["canary_labelled"], ev["production_labelled"]), 10)
        self.assertEqual(ev["weight_before"], 50)
        # no alias moved
        self.assertEqual(self.alias("production"), v1)
        self.assertEqual(self.alias("canary"), v3)
        self.assertIn("canary rolled back", self.mon.log())


if __name__ == "__main__":
    unittest.main()
