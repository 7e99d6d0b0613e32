"""test_serve_follow.py - quern-serve without --models (DESIGN.md section 5).

Serve beside a real quern-registry (one QUERN_HOME, so one embedded bus):
without --models it follows the production alias of every model; a model
promoted after serve started is served within seconds (the poll is set to a
minute, so only the quern.model.promoted event can explain it); an empty
registry leaves serve live and ready, never exiting; --models narrows it;
a removed alias keeps the last good version serving.
The models are logistic models written by hand in libquern-ml's formats, each
with its own coefficients, so an answer says which model gave it.
Run by /usr/bin/python3.
"""
import hashlib
import json
import math
import os
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import WORK, Service  # noqa: E402

COLS = ["x0", "x1"]
ROW = [0.5, -1.25]


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


class FollowTest(unittest.TestCase):
    def setUp(self):
        self.home = tempfile.mkdtemp(prefix="quern-follow-", dir=WORK)
        self.env = {"QUERN_HOME": self.home}
        for d in ("registry", "serve"):
            os.makedirs(os.path.join(self.home, d))
        self.reg = Service("registry", data=os.path.join(self.home, "registry"),
                           env=self.env).start(timeout=30)
        self.serve = None

    def tearDown(self):
        for s in (self.serve, self.reg):
            if s:
                s.stop()

    # ---- the registry side -------------------------------------------------

    def coef(self, model, version):
        """Each model and version its own weights: the answer names its maker."""
        h = hashlib.sha256(f"{model}/{version}".encode()).digest()
        return [(h[0] - 128) / 64, (h[1] - 128) / 64], (h[2] - 128) / 128

    def expect(self, model, version):
        w, b = self.coef(model, version)
        return 1 / (1 + math.exp(-(w[0] * ROW[0] + w[1] * ROW[1] + b)))

    def publish(self, model, alias="production"):
        """Registers a new version of model and points alias at it."""
        self.reg.request("POST", "/v1/models", {"name": model})
        st, _, body = self.reg.request("GET", f"/v1/models/{model}/versions")
        version = len(body.get("versions", [])) + 1 if st == 200 else 1
        w, b = self.coef(model, version)
        lin = {"format": "quern.linear/1", "kind": "logistic", "n_features": 2,
               "coef": [w], "intercept": [b], "classes": [0, 1]}
        man = {"format": "quern.model/1", "kind": "logistic",
               "inputs": [{"name": c, "datatype": "FP64", "shape": [-1]} for c in COLS],
               "outputs": [{"name": "probability", "datatype": "FP32", "shape": [-1]}],
               "transforms": {"format": "quern.features/1", "n_features": 2,
                              "columns": [{"name": c, "type": "numeric", "steps": []}
                                          for c in COLS]},
               "params": {"task": "binary", "classes": [0, 1]},
               "files": {"model.json": self.reg.put_blob(json.dumps(lin).encode())}}
        st, _, body = self.reg.request("POST", f"/v1/models/{model}/versions", {"manifest": man})
        self.assertEqual(st, 201, body)
        self.assertEqual(body["version"], version)
        st, _, body = self.reg.request("PUT", f"/v1/models/{model}/aliases/{alias}",
                                       {"version": version})
        self.assertEqual(st, 200, body)
        return version

    # ---- the serve side ----------------------------------------------------

    def start_serve(self, *extra, poll="60s"):
        self.serve = Service("serve", data=os.path.join(self.home, "serve"), env=self.env,
                             args=["--poll-interval", poll, "--grpc-listen", "off",
                                   "--registry", f"http://127.0.0.1:{self.reg.port}", *extra])
        return self.serve.start(timeout=30)

    def infer(self, model):
        body = {"inputs": [{"name": c, "datatype": "FP64", "shape": [1], "data": [ROW[i]]}
                           for i, c in enumerate(COLS)]}
        return self.serve.request("POST", f"/v2/models/{model}/infer", body)

    def wait_serving(self, model, version, timeout):
        """Seconds until serve answers model's infer with version's prediction."""
        t0 = time.time()
        body = None
        while time.time() - t0 < timeout:
            st, h, body = self.infer(model)
            if st == 200 and h.get("x-quern-model-version") == str(version):
                self.assertAlmostEqual(body["outputs"][0]["data"][0],
                                       self.expect(model, version), places=5)
                return time.time() - t0
            time.sleep(0.05)
        self.fail(f"serve did not serve {model} v{version} within {timeout} s: {body}\n"
                  f"{self.serve.log()[-3000:]}")

    def assertReady(self):
        st, _, body = self.serve.request("GET", "/readyz")
        self.assertEqual(st, 200, body)
        st, _, body = self.serve.request("GET", "/v2/health/ready")
        self.assertEqual(st, 200, body)
        return body

    # ---- the tests -----------------------------------------------------------

    def test_empty_registry_live_ready_and_stays(self):
        self.start_serve()  # returns once /readyz answers 200
        self.assertReady()
        st, _, body = self.serve.request("GET", "/v2/health/live")
        self.assertEqual(st, 200, body)
        time.sleep(2)
        self.assertIsNone(self.serve.proc.poll(), self.serve.log())
        body = self.assertReady()
        self.assertEqual(body["models"], {})
        st, _, body = self.serve.request("GET", "/v1/models")
        self.assertEqual(body["models"], [])
        st, _, body = self.infer("nothing")
        self.assertEqual(st, 404, body)

    def test_follows_every_model_and_picks_up_promotions(self):
        self.publish("early")
        self.start_serve()
        self.wait_serving("early", 1, 10)
        body = self.assertReady()
        self.assertEqual(body["models"], {"early": "1"})

        # Promoted after serve started: the event loads it, not the 60 s poll.
        self.publish("late1")
        took = self.wait_serving("late1", 1, 10)
        self.assertLess(took, 10)
        self.publish("late2")
        self.wait_serving("late2", 1, 10)
        # A new version of a followed model swaps in the same way.
        self.publish("late1")
        self.wait_serving("late1", 2, 10)
        # A model with only a staging alias is not served.
        self.publish("staged", alias="staging")
        time.sleep(1)
        st, _, body = self.infer("staged")
        self.assertEqual(st, 404, body)
        body = self.assertReady()
        self.assertEqual(body["models"], {"early": "1", "late1": "2", "late2": "1"})

        # Paging: a restarted serve lists them all again (here from the cache
        # first, then the registry), ready with every one loaded.
        self.serve.stop()
        self.start_serve()
        body = self.assertReady()
        self.assertEqual(body["models"], {"early": "1", "late1": "2", "late2": "1"})

    def test_many_models_listed_across_pages(self):
        # serve reads the list 100 models a page: 105 take two pages.
        names = [f"m{i:03d}" for i in range(105)]
        for n in names:
            self.publish(n)
        self.start_serve()
        body = self.assertReady()
        self.assertEqual(body["models"], {n: "1" for n in names})
        self.wait_serving("m104", 1, 5)

    def test_models_flag_narrows(self):
        self.publish("a")
        self.publish("b")
        self.start_serve("--models", "a")
        self.wait_serving("a", 1, 10)
        st, _, body = self.infer("b")
        self.assertEqual(st, 404, body)
        self.publish("b")  # a promotion of a model outside --models
        self.publish("c")
        time.sleep(1.5)
        for m in ("b", "c"):
            st, _, body = self.infer(m)
            self.assertEqual(st, 404, body)
        st, _, body = self.serve.request("GET", "/v1/models")
        self.assertEqual([m["name"] for m in body["models"]], ["a"])

    def test_per_model_flags_name_models_not_promoted_yet(self):
        # Without --models these name models that do not exist yet: no error,
        # and they apply once the model is promoted.
        self.start_serve("--batching", "later:8:100", "--log-sample-rates", "later:1")
        body = self.assertReady()  # the slot made for the flags holds nothing back
        self.publish("later")
        self.wait_serving("later", 1, 10)
        self.assertReady()
        st, _, body = self.serve.request("GET", "/v1/models")
        self.assertEqual([m["name"] for m in body["models"]], ["later"])
        # With --models, a name outside the list is still a start error.
        os.makedirs(os.path.join(self.home, "serve2"))
        st = Service("serve", data=os.path.join(self.home, "serve2"), env=self.env,
                     args=["--models", "a", "--batching", "later:8:100", "--grpc-listen", "off",
                           "--registry", f"http://127.0.0.1:{self.reg.port}"])
        with self.assertRaises(RuntimeError) as cm:
            st.start(timeout=30)
        self.assertIn("--batching: model later is not in --models", str(cm.exception))

    def test_removed_alias_keeps_the_last_good_version(self):
        self.publish("kept")
        self.start_serve(poll="200ms")
        self.wait_serving("kept", 1, 10)
        st, _, body = self.reg.request("DELETE", "/v1/models/kept/aliases/production")
        self.assertIn(st, (200, 204), body)
        # Several polls read the alias as missing; the version keeps serving.
        deadline = time.time() + 10
        while "cannot read the alias" not in self.serve.log() and time.time() < deadline:
            time.sleep(0.1)
        self.assertIn("cannot read the alias", self.serve.log())
        time.sleep(1)
        st, h, body = self.infer("kept")
        self.assertEqual(st, 200, body)
        self.assertEqual(h.get("x-quern-model-version"), "1")
        self.assertReady()
        # Promoting it again is followed as before.
        self.publish("kept")
        self.wait_serving("kept", 2, 10)


if __name__ == "__main__":
    unittest.main()
