"""test_serve_traffic.py - traffic policies, from the registry to every answer
(DESIGN.md sections 4 and 5).

A real quern-registry and quern-serve share one QUERN_HOME (so one embedded
bus). Model "shop" has three logistic versions written by hand in
libquern-ml's formats, each with its own coefficients, so an answer says
which version computed it: v1 production, v2 candidate, v3 challenger (which
takes other inputs, so every request it shadows fails there). Serve polls
only every minute, so a policy that takes effect within seconds was picked
up from quern.traffic.changed, without a restart.

It asserts: no policy serves production and says so (X-Quern-Model-Alias);
bad policies are 400s naming the field; an 80/20 canary splits 1000 requests
within five binomial standard deviations, every answer's version header,
body model_version and prediction agreeing; sticky policies send one user
(or one header value) to one version; a 100% shadow logs every request
twice under one request id (primary and shadow, their aliases and
versions), also for requests that came without an id (the answer then
carries the one serve made); a shadow that fails every request leaves every
caller answered correctly and is counted; clearing the policy goes back to
production; a second replica (without --models) routes a sticky user to
the same version as the first; `quern traffic set|show|clear` drive the same API (a bad route
word is exit 2 before any request, a refused policy exit 2 naming the
field); quern-monitor's agreement report joins the two sides of shadowed
requests by id (the pair of versions, how many, how often they agree, the
mean difference). Run by /usr/bin/python3.
"""
import hashlib
import http.client
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import BIN, WORK, Service  # noqa: E402

COLS = ["x0", "x1"]
ROW = [0.5, -1.25]
MODEL = "shop"
# ROW as the inputs of an Open Inference Protocol request
INPUTS = [{"name": c, "datatype": "FP64", "shape": [1], "data": [ROW[i]]} for i, c in enumerate(COLS)]


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def coef(version):
    h = hashlib.sha256(f"{MODEL}/{version}".encode()).digest()
    return [(h[0] - 128) / 64, (h[1] - 128) / 64], (h[2] - 128) / 128


def expect(version):
    w, b = coef(version)
    return 1 / (1 + math.exp(-(w[0] * ROW[0] + w[1] * ROW[1] + b)))


def publish(reg, version, alias, cols=COLS):
    """Registers version of MODEL (the two-column logistic model of coef(version)) under alias."""
    reg.request("POST", "/v1/models", {"name": MODEL})
    w, b = coef(version)
    lin = {"format": "quern.linear/1", "kind": "logistic", "n_features": 2,
           "coef": [w], "intercept": [b], "classes": [0, 1]}
    man = {"format": "quern.model/1", "kind": "logistic",
           "inputs": [{"name": c, "datatype": "FP64", "shape": [-1]} for c in cols],
           "outputs": [{"name": "probability", "datatype": "FP32", "shape": [-1]}],
           "transforms": {"format": "quern.features/1", "n_features": 2,
                          "columns": [{"name": c, "type": "numeric", "steps": []} for c in cols]},
           "params": {"task": "binary", "classes": [0, 1]},
           "files": {"model.json": reg.put_blob(json.dumps(lin).encode())}}
    st, _, body = reg.request("POST", f"/v1/models/{MODEL}/versions", {"manifest": man})
    assert st == 201 and body["version"] == version, body
    st, _, body = reg.request("PUT", f"/v1/models/{MODEL}/aliases/{alias}", {"version": version})
    assert st == 200, body


class Conn:
    """One keep-alive connection (1000 requests should not be 1000 handshakes)."""

    def __init__(self, port):
        self.port = port
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path, body, headers=None):
        h = {"Content-Type": "application/json", **(headers or {})}
        data = json.dumps(body).encode()
        for attempt in range(2):
            try:
                self.c.request("POST", path, body=data, headers=h)
                r = self.c.getresponse()
                raw = r.read()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(raw)
            except (http.client.HTTPException, ConnectionError):
                if attempt:
                    raise
                self.c.close()
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def close(self):
        self.c.close()


class TrafficFixture(unittest.TestCase):
    """What the traffic tests (REST here, gRPC in test_serve_traffic_grpc) start
    and the helpers they share: a registry and a serve in one QUERN_HOME
    (cls.home, cls.env, cls.reg, cls.serve), MODEL's VERSIONS published under
    their aliases, and a keep-alive connection to serve (cls.conn). After
    the class: both stopped, neither with a sanitizer report, home removed.
    A subclass sets HOME_PREFIX, VERSIONS ((version, alias[, cols]), ...) and
    GRPC_LISTEN (serve's --grpc-listen) before this setUpClass runs."""
    HOME_PREFIX = "quern-traffic-"
    VERSIONS = ((1, "production"), (2, "candidate"))
    GRPC_LISTEN = "off"

    @classmethod
    def setUpClass(cls):
        cls.home = tempfile.mkdtemp(prefix=cls.HOME_PREFIX, dir=WORK)
        cls.env = {"QUERN_HOME": cls.home}
        for d in ("registry", "serve"):
            os.makedirs(os.path.join(cls.home, d))
        cls.reg = Service("registry", data=os.path.join(cls.home, "registry"), env=cls.env).start(timeout=60)
        cls.serve = None
        try:
            for v in cls.VERSIONS:
                publish(cls.reg, *v)
            cls.serve = Service("serve", data=os.path.join(cls.home, "serve"), env=cls.env,
                                args=["--poll-interval", "60s", "--grpc-listen", cls.GRPC_LISTEN,
                                      "--log-sample-rate", "0", "--models", MODEL,
                                      "--registry", f"http://127.0.0.1:{cls.reg.port}"]).start(timeout=60)
        except Exception:
            cls.reg.stop()
            raise
        cls.conn = Conn(cls.serve.port)

    @classmethod
    def tearDownClass(cls):
        cls.conn.close()
        bad = []
        for s in (cls.serve, cls.reg):
            if s:
                s.stop()
                report = s.sanitizer_report()
                bad += [f"{s.name}: {report}"] if report else []
        shutil.rmtree(cls.home, ignore_errors=True)
        assert not bad, bad

    def infer(self, rid=None, params=None, headers=None):
        """One REST infer of ROW: (version, alias, body), the version header
        checked against the body's model_version and the prediction."""
        body = {"inputs": INPUTS}
        if rid:
            body["id"] = rid
        if params:
            body["parameters"] = params
        st, h, out = self.conn.post(f"/v2/models/{MODEL}/infer", body, headers)
        self.assertEqual(st, 200, out)
        v = h.get("x-quern-model-version")
        self.assertEqual(out["model_version"], v)
        self.assertAlmostEqual(out["outputs"][0]["data"][0], expect(int(v)), places=5)
        return int(v), h.get("x-quern-model-alias"), out

    def set_policy(self, policy):
        """Sets policy and waits until serve follows it (its GET /v1/models shows
        the same policy, with a version loaded behind every alias)."""
        st, _, body = self.reg.request("PUT", f"/v1/models/{MODEL}/traffic", policy)
        self.assertEqual(st, 200, body)
        self.wait_for(lambda: self.follows(body["updated_at"]), "serve did not follow the new policy")
        return body

    def clear_policy(self):
        """Clears the policy and waits until serve has dropped it."""
        st, _, body = self.reg.request("DELETE", f"/v1/models/{MODEL}/traffic")
        self.assertIn(st, (200, 204), body)
        self.wait_for(lambda: self.follows(None), "serve did not drop the policy")

    def follows(self, updated_at):
        st, _, out = self.serve.request("GET", "/v1/models")
        tr = next(m for m in out["models"] if m["name"] == MODEL)["traffic"]
        if updated_at is None:
            return tr is None
        return bool(tr) and tr["updated_at"] == updated_at and all(tr["versions"].values())

    def wait_for(self, pred, what, timeout=30):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if pred():
                return
            time.sleep(0.05)
        self.fail(f"{what} within {timeout} s\n{self.serve.log()[-3000:]}")


class TrafficTest(TrafficFixture):
    VERSIONS = ((1, "production"), (2, "candidate"), (3, "challenger", ["y0", "y1"]))

    # ---- helpers ---------------------------------------------------------------

    def seen(self, version, n=60):
        return any(self.infer()[0] == version for _ in range(n))

    def logged(self):
        db = sqlite3.connect(f"file:{os.path.join(self.home, 'bus.db')}?mode=ro", uri=True)
        try:
            evs = [json.loads(b) for (b,) in db.execute(
                "SELECT body FROM bus_messages WHERE topic = 'quern.predictions.logged'")]
        finally:
            db.close()
        return [dict(p, version=e["data"]["version"]) for e in evs for p in e["data"]["predictions"]]

    def metric(self, name, **labels):
        st, _, text = self.serve.request("GET", "/metrics", raw=True)
        self.assertEqual(st, 200)
        total = 0.0
        for line in text.decode().splitlines():
            if not line.startswith(name + "{"):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    # ---- the cases -------------------------------------------------------------

    def test_1_no_policy_is_production(self):
        st, _, body = self.reg.request("GET", f"/v1/models/{MODEL}/traffic")
        self.assertEqual(st, 200, body)
        self.assertTrue(body["default"])
        self.assertEqual(body["routes"], [{"alias": "production", "weight": 100}])
        for _ in range(20):
            v, alias, _ = self.infer()
            self.assertEqual((v, alias), (1, "production"))

    def test_2_bad_policies_name_the_field(self):
        cases = [
            ({"routes": [{"alias": "production", "weight": 90}]}, "weights sum to 90"),
            ({"routes": [{"alias": "production", "weight": 90}, {"alias": "nope", "weight": 10}]},
             "routes[1].alias"),
            ({"routes": [{"alias": "production", "weight": 100}],
              "shadow": {"alias": "candidate", "fraction": 2}}, "shadow.fraction"),
            ({"routes": [{"alias": "production", "weight": 100}], "sticky": "cookie"}, "sticky"),
            ({"routes": [{"alias": "production", "weight": 100.5}]}, "routes[0].weight"),
            ({"routes": "production"}, "routes"),
        ]
        for body, needle in cases:
            st, _, out = self.reg.request("PUT", f"/v1/models/{MODEL}/traffic", body)
            self.assertEqual(st, 400, (body, out))
            self.assertIn(needle, json.dumps(out), body)
        st, _, out = self.reg.request("PUT", "/v1/models/nomodel/traffic",
                                      {"routes": [{"alias": "production", "weight": 100}]})
        self.assertEqual(st, 404, out)
        st, _, out = self.reg.request("GET", f"/v1/models/{MODEL}/traffic")
        self.assertTrue(out["default"], out)  # nothing refused was stored

    def test_3_canary_split(self):
        self.set_policy({"routes": [{"alias": "production", "weight": 80},
                                    {"alias": "candidate", "weight": 20}]})
        n, cand = 1000, 0
        for _ in range(n):
            v, alias, _ = self.infer()
            self.assertEqual(alias, {1: "production", 2: "candidate"}[v])
            cand += v == 2
        sd = math.sqrt(n * 0.2 * 0.8)
        self.assertLess(abs(cand - 200), 5 * sd, f"{cand} of {n} went to the candidate")
        self.assertGreaterEqual(self.metric("quern_traffic_requests_total", model=MODEL, alias="candidate",
                                            role="primary"), cand)
        # a version asked for by number is answered by the alias serving it
        body = {"inputs": INPUTS}
        for _ in range(10):
            st, h, out = self.conn.post(f"/v2/models/{MODEL}/versions/2/infer", body)
            self.assertEqual((st, h.get("x-quern-model-alias"), out["model_version"]), (200, "candidate", "2"), out)
        st, _, out = self.conn.post(f"/v2/models/{MODEL}/versions/3/infer", body)
        self.assertEqual(st, 404, out)

    def test_4_sticky(self):
        self.set_policy({"routes": [{"alias": "production", "weight": 50},
                                    {"alias": "candidate", "weight": 50}], "sticky": "user"})
        got = {}
        for u in range(24):
            vs = {self.infer(params={"user": f"user-{u}"})[0] for _ in range(8)}
            self.assertEqual(len(vs), 1, f"user-{u} saw versions {vs}")
            got[u] = vs.pop()
        self.assertEqual(set(got.values()), {1, 2}, "24 users all on one side of a 50/50 split")
        self.set_policy({"routes": [{"alias": "production", "weight": 50},
                                    {"alias": "candidate", "weight": 50}], "sticky": "header:X-Tenant"})
        tenants = {}
        for t in range(24):
            vs = {self.infer(headers={"X-Tenant": f"t{t}"})[0] for _ in range(6)}
            self.assertEqual(len(vs), 1, f"tenant t{t} saw versions {vs}")
            tenants[t] = vs.pop()
        self.assertEqual(set(tenants.values()), {1, 2})

    def test_5_shadow_logs_both_under_one_id(self):
        self.set_policy({"routes": [{"alias": "production", "weight": 100}],
                         "shadow": {"alias": "candidate", "fraction": 1.0}})
        ids = [f"shadow-{i}" for i in range(40)]
        for rid in ids:
            v, alias, out = self.infer(rid=rid)
            self.assertEqual((v, alias, out["id"]), (1, "production", rid))
        _, _, out = self.infer()
        made = out.get("id")
        self.assertTrue(made, "a shadowed request without an id is answered with the id serve made")
        want = set(ids) | {made}
        by = {}

        def all_logged():
            by.clear()
            for p in self.logged():
                if p["request_id"] in want:
                    by.setdefault(p["request_id"], []).append(p)
            return len(by) == len(want) and all(len(v) >= 2 for v in by.values())
        self.wait_for(all_logged, "every shadowed request logged twice")
        for rid, ps in by.items():
            self.assertEqual(len(ps), 2, ps)
            roles = {p["role"]: p for p in ps}
            self.assertEqual(set(roles), {"primary", "shadow"}, ps)
            self.assertEqual((roles["primary"]["alias"], roles["primary"]["version"]), ("production", "1"))
            self.assertEqual((roles["shadow"]["alias"], roles["shadow"]["version"]), ("candidate", "2"))
            self.assertAlmostEqual(roles["shadow"]["prediction"], expect(2), places=5)
            self.assertAlmostEqual(roles["primary"]["prediction"], expect(1), places=5)

    def test_6_failing_shadow_never_touches_callers(self):
        before = self.metric("quern_traffic_shadow_errors_total", model=MODEL, alias="challenger")
        self.set_policy({"routes": [{"alias": "production", "weight": 100}],
                         "shadow": {"alias": "challenger", "fraction": 1.0}})
        t0 = time.time()
        for i in range(200):
            v, alias, _ = self.infer()
            self.assertEqual((v, alias), (1, "production"))
        self.assertLess(time.time() - t0, 60)
        # and from four connections at once (the queue filled from several threads)
        bad = []

        def client():
            c = Conn(self.serve.port)
            body = {"inputs": INPUTS}
            try:
                for _ in range(150):
                    st, h, out = c.post(f"/v2/models/{MODEL}/infer", body)
                    if st != 200 or h.get("x-quern-model-version") != "1":
                        bad.append((st, out))
            finally:
                c.close()
        threads = [threading.Thread(target=client) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.assertEqual(bad, [])
        self.wait_for(lambda: self.metric("quern_traffic_shadow_errors_total", model=MODEL,
                                          alias="challenger") + self.metric("quern_traffic_shadow_dropped_total",
                                                                            model=MODEL) >= before + 800,
                      "every failed or dropped shadow request counted")

    def test_7_clear_goes_back_to_production(self):
        self.set_policy({"routes": [{"alias": "candidate", "weight": 100}]})
        for _ in range(20):
            self.assertEqual(self.infer()[:2], (2, "candidate"))
        st, _, body = self.reg.request("DELETE", f"/v1/models/{MODEL}/traffic")
        self.assertEqual(st, 204, body)
        self.wait_for(lambda: self.follows(None), "serve did not drop the cleared policy")
        # the arms left with the policy: only production is shown as served
        self.assertEqual(self.metric("quern_model_info", model=MODEL, alias="candidate"), 0)
        self.assertEqual(self.metric("quern_model_info", model=MODEL, alias="production"), 1)
        for _ in range(100):
            self.assertEqual(self.infer()[:2], (1, "production"))
        st, _, body = self.reg.request("GET", f"/v1/models/{MODEL}/traffic")
        self.assertTrue(body["default"])

    def test_8_cli(self):
        env = dict(os.environ, QUERN_REGISTRY=f"http://127.0.0.1:{self.reg.port}")

        def quern(*args):
            p = subprocess.run([os.path.join(BIN, "quern"), *args], env=env, capture_output=True, timeout=60)
            return p.returncode, p.stdout.decode(), p.stderr.decode()
        rc, out, err = quern("traffic", "set", MODEL, "production=70", "candidate=30", "--shadow",
                             "challenger:0.25", "--sticky", "header:X-Tenant")
        self.assertEqual(rc, 0, err)
        self.assertIn("production=70 candidate=30", out)
        rc, out, err = quern("--json", "traffic", "show", MODEL)
        self.assertEqual(rc, 0, err)
        shown = json.loads(out)
        self.assertEqual(shown["routes"], [{"alias": "production", "weight": 70},
                                           {"alias": "candidate", "weight": 30}])
        self.assertEqual(shown["shadow"], {"alias": "challenger", "fraction": 0.25})
        self.assertEqual(shown["sticky"], "header:X-Tenant")
        self.wait_for(lambda: self.follows(shown["updated_at"]), "serve did not follow the CLI's policy")
        rc, out, err = quern("traffic", "set", MODEL, "production=70", "candidate=20")
        self.assertEqual(rc, 2, out)
        self.assertIn("weights sum to 90", err)
        rc, out, err = quern("traffic", "set", MODEL, "production")
        self.assertEqual(rc, 2, out)
        self.assertIn("ALIAS=WEIGHT", err)
        # --auto: the rules quern-monitor acts on, as JSON or @FILE; the registry names a bad field
        rules = {"challenger": "candidate", "metric": "rmse", "min_labelled": 100,
                 "rollback": {"latency_p95_ratio": 2}}
        rc, out, err = quern("traffic", "set", MODEL, "production=90", "candidate=10", "--auto", json.dumps(rules))
        self.assertEqual(rc, 0, err)
        self.assertIn('auto     {"challenger":"candidate"', out)
        rc, out, err = quern("--json", "traffic", "show", MODEL)
        shown = json.loads(out)["auto"]
        self.assertEqual((shown["challenger"], shown["metric"], shown["min_labelled"]), ("candidate", "rmse", 100))
        self.assertEqual(shown["rollback"]["latency_p95_ratio"], 2)
        path = os.path.join(self.home, "auto.json")
        with open(path, "w") as f:
            json.dump(dict(rules, promote=False), f)
        rc, out, err = quern("--json", "traffic", "set", MODEL, "production=90", "candidate=10", "--auto", "@" + path)
        self.assertEqual(rc, 0, err)
        self.assertIs(json.loads(out)["auto"]["promote"], False)
        rc, out, err = quern("traffic", "set", MODEL, "production=100", "--auto", '{"metric":')
        self.assertEqual(rc, 2, out)
        self.assertIn("--auto: not JSON at line 1", err)
        rc, out, err = quern("traffic", "set", MODEL, "production=100", "--auto", "[1]")
        self.assertEqual(rc, 2, out)
        self.assertIn("expected a JSON object", err)
        rc, out, err = quern("traffic", "set", MODEL, "production=100", "--auto",
                             '{"challenger":"candidate","metric":"bogus"}')
        self.assertEqual(rc, 2, out)
        self.assertIn("auto.metric", err)
        rc, out, err = quern("traffic", "show", "nomodel")
        self.assertEqual(rc, 3, out)
        rc, out, err = quern("traffic", "clear", MODEL)
        self.assertEqual(rc, 0, err)
        rc, out, err = quern("traffic", "show", MODEL)
        self.assertEqual(rc, 0, err)
        self.assertIn("default", out)
        self.wait_for(lambda: self.follows(None), "serve did not drop the cleared policy")

    def test_9_monitor_agreement(self):
        os.makedirs(os.path.join(self.home, "monitor"), exist_ok=True)
        mon = Service("monitor", data=os.path.join(self.home, "monitor"), env=self.env,
                      args=["--registry", f"http://127.0.0.1:{self.reg.port}", "--window-rows", "100000",
                            "--window-seconds", "3600", "--tick", "200ms"]).start(timeout=60)
        try:
            self.set_policy({"routes": [{"alias": "production", "weight": 100}],
                             "shadow": {"alias": "candidate", "fraction": 1.0}})
            for i in range(30):
                self.infer(rid=f"agree-{i}")
            report = {}

            def paired():
                st, _, out = mon.request("GET", f"/v1/monitors/{MODEL}/agreement")
                self.assertEqual(st, 200, out)
                report.update(out)
                return any(p["versions"] == [1, 2] and p["requests"] >= 30 for p in out["pairs"])
            self.wait_for(paired, "the monitor did not pair the shadowed requests")
            p = next(p for p in report["pairs"] if p["versions"] == [1, 2])
            e1, e2 = expect(1), expect(2)
            self.assertEqual(p["agreement"], 1.0 if (e1 >= 0.5) == (e2 >= 0.5) else 0.0)
            self.assertAlmostEqual(p["mean_abs_diff"], abs(e1 - e2), places=5)
            self.assertAlmostEqual(p["mean_prediction"]["a"], e1, places=5)
            self.assertAlmostEqual(p["mean_prediction"]["b"], e2, places=5)
            st, _, out = mon.request("GET", "/v1/monitors/..%2f/agreement")
            self.assertEqual(st, 400, out)
        finally:
            mon.stop()

    def test_9z_every_replica_agrees(self):
        """A second replica, without --models (following every model's production
        alias), follows the same policy: a sticky user lands on the same version
        on both replicas."""
        data = os.path.join(self.home, "serve2")
        os.makedirs(data, exist_ok=True)
        other = Service("serve", data=data, env=self.env,
                        args=["--poll-interval", "60s", "--grpc-listen", "off", "--log-sample-rate", "0",
                              "--registry", f"http://127.0.0.1:{self.reg.port}"]).start(timeout=60)
        c2 = Conn(other.port)
        try:
            body = self.set_policy({"routes": [{"alias": "production", "weight": 50},
                                               {"alias": "candidate", "weight": 50}], "sticky": "user"})

            def follows2():
                _, _, out = other.request("GET", "/v1/models")
                tr = next((m for m in out["models"] if m["name"] == MODEL), {}).get("traffic")
                return bool(tr) and tr["updated_at"] == body["updated_at"] and all(tr["versions"].values())
            self.wait_for(follows2, "the second replica did not follow the policy")
            req = {"inputs": INPUTS}
            seen = set()
            for u in range(16):
                v1 = self.infer(params={"user": f"r-{u}"})[0]
                st, h, out = c2.post(f"/v2/models/{MODEL}/infer", dict(req, parameters={"user": f"r-{u}"}))
                self.assertEqual(st, 200, out)
                self.assertEqual(int(h["x-quern-model-version"]), v1, f"user r-{u}")
                seen.add(v1)
            self.assertEqual(seen, {1, 2})
        finally:
            c2.close()
            other.stop()


if __name__ == "__main__":
    unittest.main()
