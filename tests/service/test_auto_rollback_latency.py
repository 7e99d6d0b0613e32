"""test_auto_rollback_latency.py - a canary rolled back because it serves
slower than production, end to end: registry + serve + monitor on one
QUERN_HOME (one embedded bus); no labels are involved.

Model "price" (y = 2x + 1): the fast versions are libquern-ml linear models
written by hand (microseconds a request); the slow one is a genuinely bigger
model, an XGBoost regressor of 800 trees of depth 6 trained here by Python
xgboost (a millisecond or more a request), so nothing in serve is slowed on
purpose.

It asserts: every prediction serve logs carries its serving latency
(latency_us, an integer >= 0); the registry takes latency_p95_ratio and
latency_margin_ms and refuses bad ones naming the field; with a 50/50
canary to another fast version (the same latencies), nothing moves over
several evaluations; once the canary alias moves to the slow version, the
monitor sets its weight to 0 (its share to production) with the evidence in
quern.traffic.rolled_back (cause "latency", quantile p95, both versions'
p50/p95 and request counts, the canary's p95 above production's times the
ratio), logs "canary rolled back", and no alias moves; the monitor's
agreement report shows each version's p50/p95 and request count. Run by
/usr/bin/python3 (numpy, xgboost).
"""
import json
import os
import random
import sqlite3
import time

import numpy as np
import xgboost as xgb

import events
from test_auto_promote import AutoFixture
from test_monitor import wait_for
from harness import one_input_manifest

MODEL = "price"
POLICY_RB = {"latency_p95_ratio": 3, "latency_margin_ms": 0.05}


class AutoRollbackLatencyTest(AutoFixture):
    DIRS = ("registry", "serve", "monitor")
    SUBSCRIBE = (("t-rb", "quern.traffic.rolled_back"),)

    def register(self, kind, model_json, alias):
        man = one_input_manifest(kind, self.reg.put_blob(model_json))
        st, _, body = self.reg.request("POST", f"/v1/models/{MODEL}/versions", {"manifest": man})
        self.assertEqual(st, 201, body)
        v = body["version"]
        self.move(alias, v)
        return v

    def move(self, alias, v):
        st, _, body = self.reg.request("PUT", f"/v1/models/{MODEL}/aliases/{alias}", {"version": v})
        self.assertEqual(st, 200, body)

    def publish_fast(self, alias):
        lin = {"format": "quern.linear/1", "kind": "linear", "n_features": 1, "coef": [[2.0]], "intercept": [1.0]}
        return self.register("linear", json.dumps(lin).encode(), alias)

    def publish_slow(self, alias):
        rng = np.random.default_rng(3)
        x = rng.uniform(0, 10, size=(300, 1))
        y = 2 * x[:, 0] + 1 + rng.normal(0, 0.5, size=300)
        b = xgb.train({"max_depth": 6, "eta": 0.01, "lambda": 0, "min_child_weight": 0, "tree_method": "hist",
                       "nthread": 1, "objective": "reg:squarederror"}, xgb.DMatrix(x, label=y),
                      num_boost_round=800)
        return self.register("xgboost", bytes(b.save_raw("json")), alias)

    def set_traffic(self, policy, status=200):
        st, _, body = self.reg.request("PUT", f"/v1/models/{MODEL}/traffic", policy)
        self.assertEqual(st, status, body)
        return body

    def weights(self):
        b = self.reg.request("GET", f"/v1/models/{MODEL}/traffic")[2]
        return {r["alias"]: r["weight"] for r in b["routes"]}

    def infer_many(self, n, seed):
        rng = random.Random(seed)
        seen = set()
        for _ in range(n):
            st, h, body = self.serve.request("POST", f"/v2/models/{MODEL}/infer",
                                             {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1],
                                                          "data": [rng.uniform(0, 10)]}]})
            self.assertEqual(st, 200, body)
            seen.add(h["x-quern-model-alias"])
        return seen

    def logged(self):
        db = sqlite3.connect(f"file:{os.path.join(self.home, 'bus.db')}?mode=ro", uri=True)
        try:
            evs = [json.loads(b) for (b,) in db.execute(
                "SELECT body FROM bus_messages WHERE topic = 'quern.predictions.logged'")]
        finally:
            db.close()
        return [dict(p, version=e["data"]["version"]) for e in evs for p in e["data"]["predictions"]]

    def pending(self):
        st, _, b = self.mon.request("GET", f"/v1/monitors/{MODEL}/quality")
        return b["state"]["pending"] if st == 200 else 0

    def test_1_bad_latency_fields_name_the_field(self):
        self.publish_fast("production")
        self.publish_fast("canary")
        base = {"routes": [{"alias": "production", "weight": 100}]}
        for rb, field in (({"latency_p95_ratio": 0.5}, "auto.rollback.latency_p95_ratio"),
                          ({"latency_margin_ms": -1}, "auto.rollback.latency_margin_ms"),
                          ({"latency_p99_ratio": 2}, "auto.rollback")):
            body = self.set_traffic(dict(base, auto={"challenger": "canary", "metric": "rmse", "rollback": rb}), 400)
            self.assertIn(field, json.dumps(body), (rb, body))
        got = self.set_traffic(dict(base, auto={"challenger": "canary", "metric": "rmse", "rollback": POLICY_RB}))
        self.assertEqual(got["auto"]["rollback"], {"latency_p95_ratio": 3.0, "latency_margin_ms": 0.05})

    def test_2_slow_canary_rolled_back_equal_one_kept(self):
        v1 = self.publish_fast("production")
        v2 = self.publish_fast("canary")      # the same model: the same latencies
        self.set_traffic({"routes": [{"alias": "production", "weight": 50}, {"alias": "canary", "weight": 50}],
                          "auto": {"challenger": "canary", "metric": "rmse", "min_labelled": 20, "promote": False,
                                   "rollback": POLICY_RB}})
        self.serve = self.start("serve", data=os.path.join(self.home, "serve"), env=self.env,
                                args=["--registry", self.regurl, "--grpc-listen", "off", "--poll-interval", "200ms",
                                      "--log-sample-rate", "1"])
        self.mon = self.start("monitor", data=os.path.join(self.home, "monitor"), env=self.env,
                              args=["--registry", self.regurl, "--tick", "200ms", "--bus-lease", "2s",
                                    "--label-horizon", "1h"])
        wait_for(lambda: self.serve.request("GET", f"/v2/models/{MODEL}/ready")[0] == 200, timeout=60)
        wait_for(lambda: self.infer_many(1, 0) and all(
            (self.serve.request("GET", "/v1/models")[2]["models"][0].get("traffic") or {}).get(
                "versions", {"x": None}).values()), timeout=60)

        # equal latencies: nothing moves
        self.assertEqual(self.infer_many(100, 1), {"production", "canary"})
        wait_for(lambda: self.pending() >= 100, timeout=60)
        logged = wait_for(lambda: (lambda l: l if len(l) >= 100 else None)(self.logged()), timeout=30)
        for p in logged:
            self.assertIsInstance(p.get("latency_us"), int, p)
            self.assertGreaterEqual(p["latency_us"], 0, p)
        time.sleep(4)  # several evaluations (each model with new latencies is evaluated every second)
        self.assertEqual(self.weights(), {"production": 50, "canary": 50}, self.mon.log()[-3000:])
        self.assertEqual(events.read(self.bus, "t-rb", "quern.traffic.rolled_back", quiet_ms=300), [])

        # the canary alias moves to a slower model: it is rolled back
        v3 = self.publish_slow("canary")
        wait_for(lambda: self.serve.request("GET", "/v1/models")[2]["models"][0]["traffic"]["versions"].get(
            "canary") == str(v3), timeout=60)
        self.infer_many(100, 2)

        def rolled():
            return self.weights().get("canary") == 0
        try:
            wait_for(rolled, timeout=60)
        except AssertionError:
            lat = {}
            for p in self.logged():
                lat.setdefault(p["version"], []).append(p.get("latency_us"))
            raise AssertionError(f"{self.weights()} {lat}\n{self.mon.log()[-4000:]}")
        self.assertEqual(self.weights(), {"production": 100, "canary": 0})
        evs = wait_for(lambda: events.read(self.bus, "t-rb", "quern.traffic.rolled_back", quiet_ms=500), timeout=30)
        self.assertEqual(len(evs), 1, evs)
        d = evs[0]["data"]
        self.assertEqual((d["alias"], d["version"], d["weight"]), ("canary", v3, 0))
        ev = d["evidence"]
        self.assertEqual((ev["cause"], ev["quantile"], ev["latency_ratio"]), ("latency", "p95", 3.0))
        self.assertEqual((ev["canary_version"], ev["production_version"]), (v3, v1))
        can, prod = ev["canary_latency_us"], ev["production_latency_us"]
        self.assertGreaterEqual(min(can["requests"], prod["requests"]), 20)
        self.assertGreater(can["p95"], 3 * prod["p95"])
        self.assertGreater(can["p95"] - prod["p95"], 50)
        self.assertGreaterEqual(can["p95"], can["p50"])
        self.assertEqual(ev["rollback"], {"latency_p95_ratio": 3.0, "latency_margin_ms": 0.05})
        self.assertNotIn("canary_labelled", ev)  # no labels were involved
        self.assertIn("canary rolled back", self.mon.log())
        # no alias moved
        for alias, v in (("production", v1), ("canary", v3)):
            self.assertEqual(self.reg.request("GET", f"/v1/models/{MODEL}/aliases/{alias}")[2]["version"], v)
        self.assertNotEqual(v2, v3)
        # the agreement report shows each version's serving latency
        st, _, ag = self.mon.request("GET", f"/v1/monitors/{MODEL}/agreement")
        self.assertEqual(st, 200, ag)
        lat = ag["latency_us"]
        self.assertGreaterEqual(set(lat), {str(v1), str(v2), str(v3)}, ag)
        self.assertGreaterEqual(lat[str(v3)]["requests"], can["requests"])
        self.assertGreater(lat[str(v3)]["p95"], 3 * lat[str(v1)]["p95"], ag)


if __name__ == "__main__":
    import unittest
    unittest.main()
