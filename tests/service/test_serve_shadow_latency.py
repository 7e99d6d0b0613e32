"""test_serve_shadow_latency.py - a shadowed request's primary side is logged
with the latency its caller saw, measured as for any request (docs/serve.md,
"Traffic policies" and the prediction log).

A real quern-registry and quern-serve share one QUERN_HOME (one embedded
bus). Model "price" (y = 2x + 1) has a fast version, a libquern-ml linear
model written by hand (microseconds a request), as production, and a slow
one, an XGBoost regressor of 800 trees of depth 6 trained here by Python
xgboost (a millisecond or more a request), as candidate; nothing is slowed
on purpose. Serve logs every request (--log-sample-rate 1).

It asserts: unshadowed requests to production log latency_us (an integer
>= 0); requests routed to the slow candidate log latency_us far above the
fast ones (the measurement sees the model); with production answering and
the slow candidate shadowing every request, every request is logged twice
under its id, the primary side carrying latency_us (an integer >= 0, which
it did not before) and the shadow side none (no caller waited for it); the
shadowed primary's latencies stay of the fast model's order (their median
under a third of the slow model's median, and within a small bound of the
unshadowed median): the slow shadow does not inflate them. Run by
/usr/bin/python3 (numpy, xgboost).
"""
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import unittest

import numpy as np
import xgboost as xgb

sys.path.insert(0, os.path.dirname(__file__))
from harness import WORK, Service, one_input_manifest  # noqa: E402

MODEL = "price"


class ShadowLatencyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.home = tempfile.mkdtemp(prefix="quern-shlat-", dir=WORK)
        cls.env = {"QUERN_HOME": cls.home}
        for d in ("registry", "serve"):
            os.makedirs(os.path.join(cls.home, d))
        cls.reg = Service("registry", data=os.path.join(cls.home, "registry"), env=cls.env).start(timeout=60)
        cls.serve = None
        try:
            cls.reg.request("POST", "/v1/models", {"name": MODEL})
            lin = {"format": "quern.linear/1", "kind": "linear", "n_features": 1, "coef": [[2.0]],
                   "intercept": [1.0]}
            cls.register("linear", json.dumps(lin).encode(), "production")
            rng = np.random.default_rng(3)
            x = rng.uniform(0, 10, size=(300, 1))
            y = 2 * x[:, 0] + 1 + rng.normal(0, 0.5, size=300)
            b = xgb.train({"max_depth": 6, "eta": 0.01, "lambda": 0, "min_child_weight": 0,
                           "tree_method": "hist", "nthread": 1, "objective": "reg:squarederror"},
                          xgb.DMatrix(x, label=y), num_boost_round=800)
            cls.register("xgboost", bytes(b.save_raw("json")), "candidate")
            cls.serve = Service("serve", data=os.path.join(cls.home, "serve"), env=cls.env,
                                args=["--poll-interval", "60s", "--grpc-listen", "off",
                                      "--log-sample-rate", "1", "--models", MODEL,
                                      "--registry", f"http://127.0.0.1:{cls.reg.port}"]).start(timeout=60)
        except Exception:
            cls.reg.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        bad = []
        for s in (cls.serve, cls.reg):
            if s:
                s.stop()
                report = s.sanitizer_report()
                bad += [f"{s.name}: {report}"] if report else []
        assert not bad, bad

    @classmethod
    def register(cls, kind, model_json, alias):
        man = one_input_manifest(kind, cls.reg.put_blob(model_json))
        st, _, body = cls.reg.request("POST", f"/v1/models/{MODEL}/versions", {"manifest": man})
        assert st == 201, body
        st, _, body = cls.reg.request("PUT", f"/v1/models/{MODEL}/aliases/{alias}",
                                      {"version": body["version"]})
        assert st == 200, body

    # ---- helpers ---------------------------------------------------------------

    def wait_for(self, pred, what, timeout=60):
        t0 = time.time()
        while time.time() - t0 < timeout:
            got = pred()
            if got:
                return got
            time.sleep(0.1)
        self.fail(f"{what} within {timeout} s\n{self.serve.log()[-3000:]}")

    def set_policy(self, policy):
        st, _, body = self.reg.request("PUT", f"/v1/models/{MODEL}/traffic", policy)
        self.assertEqual(st, 200, body)

        def follows():
            tr = next(m for m in self.serve.request("GET", "/v1/models")[2]["models"]
                      if m["name"] == MODEL)["traffic"]
            return bool(tr) and tr["updated_at"] == body["updated_at"] and all(tr["versions"].values())
        self.wait_for(follows, "serve did not follow the policy")

    def infer(self, rid, n):
        for i in range(n):
            st, h, out = self.serve.request("POST", f"/v2/models/{MODEL}/infer",
                                            {"id": f"{rid}-{i}",
                                             "inputs": [{"name": "x", "datatype": "FP64", "shape": [1],
                                                         "data": [1.0 + i % 9]}]})
            self.assertEqual(st, 200, out)

    def logged(self, prefix):
        db = sqlite3.connect(f"file:{os.path.join(self.home, 'bus.db')}?mode=ro", uri=True)
        try:
            evs = [json.loads(b) for (b,) in db.execute(
                "SELECT body FROM bus_messages WHERE topic = 'quern.predictions.logged'")]
        finally:
            db.close()
        return [dict(p, version=e["data"]["version"]) for e in evs for p in e["data"]["predictions"]
                if p["request_id"].startswith(prefix + "-")]

    def latencies(self, entries):
        out = []
        for p in entries:
            self.assertIsInstance(p.get("latency_us"), int, p)
            self.assertGreaterEqual(p["latency_us"], 0, p)
            out.append(p["latency_us"])
        return out

    # ---- the case --------------------------------------------------------------

    def test_shadowed_primary_latency(self):
        n = 60
        # unshadowed, no policy: the fast model's latencies
        self.infer("plain", n)
        plain = self.wait_for(lambda: (lambda l: l if len(l) >= n else None)(self.logged("plain")),
                              "every unshadowed request logged")
        fast = self.latencies(plain)

        # everything to the slow candidate: what that model costs a request
        self.set_policy({"routes": [{"alias": "candidate", "weight": 100}]})
        self.infer("slow", n)
        slow_l = self.wait_for(lambda: (lambda l: l if len(l) >= n else None)(self.logged("slow")),
                               "every request to the slow version logged")
        self.assertEqual({p["alias"] for p in slow_l}, {"candidate"})
        slow = self.latencies(slow_l)

        # production answers, the slow candidate shadows every request
        self.set_policy({"routes": [{"alias": "production", "weight": 100}],
                         "shadow": {"alias": "candidate", "fraction": 1.0}})
        self.infer("shadowed", n)
        both = self.wait_for(lambda: (lambda l: l if len(l) >= 2 * n else None)(self.logged("shadowed")),
                             "every shadowed request logged on both sides", timeout=120)
        by_role = {"primary": [], "shadow": []}
        for p in both:
            by_role[p["role"]].append(p)
        self.assertEqual(len(by_role["primary"]), n, both)
        self.assertEqual(len(by_role["shadow"]), n, both)
        self.assertEqual({p["alias"] for p in by_role["primary"]}, {"production"})
        for p in by_role["shadow"]:
            self.assertNotIn("latency_us", p, p)   # no caller waited for the shadow
        shadowed = self.latencies(by_role["primary"])

        m_fast, m_slow, m_sh = (statistics.median(x) for x in (fast, slow, shadowed))
        print(f"median latency_us: unshadowed {m_fast}, slow version {m_slow}, "
              f"shadowed primary {m_sh}", file=sys.stderr)
        # the measurement sees the model: the slow version is far slower
        self.assertGreater(m_slow, 3 * m_fast, (fast, slow))
        # a slow shadow does not inflate the primary's latency
        self.assertLess(m_sh, m_slow / 3, (shadowed, slow))
        self.assertLess(m_sh, 5 * m_fast + 500, (shadowed, fast))


if __name__ == "__main__":
    unittest.main()
