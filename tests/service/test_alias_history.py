"""Black-box tests of the alias history and rollback of quern-registry
(DESIGN.md section 4): every move recorded with who made it (the token's
name, or anonymous), paged newest first, never deleted; rollback over the
API and through `quern models rollback`, with its quern.model.promoted."""
import hashlib
import os
import subprocess
import unittest

from harness import BIN, ServiceTest


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


TOKEN = "s3cret-token-for-tests"


class AliasHistoryTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.reg = self.start("registry", args=["--token", TOKEN, "--token-name", "ci-bot"])
        self.auth = {"Authorization": f"Bearer {TOKEN}"}

    def r(self, method, path, body=None):
        return self.reg.request(method, path, body, headers=self.auth)

    def model_with_versions(self, name, n):
        payload = b"weights of " + name.encode()
        st, _, _ = self.reg.request("PUT", f"/v1/blobs/{sha(payload)}", body=payload, headers=self.auth)
        self.assertIn(st, (200, 201))
        self.assertEqual(self.r("POST", "/v1/models", {"name": name})[0], 201)
        manifest = {"format": "quern.model/1", "kind": "xgboost",
                    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
                    "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1]}],
                    "files": {"model.json": sha(payload)}}
        for _ in range(n):
            st, _, body = self.r("POST", f"/v1/models/{name}/versions", {"manifest": manifest})
            self.assertEqual(st, 201, body)

    def test_history_records_every_move_with_who_and_reason(self):
        self.model_with_versions("churn", 3)
        p = "/v1/models/churn/aliases/production"
        self.assertEqual(self.r("PUT", p, {"version": 1})[0], 200)
        self.assertEqual(self.r("PUT", p, {"version": 1})[0], 200)  # no move, no history
        st, _, body = self.r("PUT", p, {"version": 3, "reason": "auc 0.91 > 0.88"})
        self.assertEqual((st, body["previous_version"]), (200, 1), body)
        self.assertError(self.r("PUT", p, {"version": 2, "reason": "x" * 1025}), 400,
                         "invalid_argument", "reason")
        self.assertError(self.r("PUT", p, {"version": 9}), 404, "not_found", "no version 9")
        self.assertEqual(self.r("DELETE", p)[0], 204)
        self.assertEqual(self.r("PUT", p, {"version": 2})[0], 200)

        st, _, body = self.r("GET", p + "/history")
        self.assertEqual(st, 200, body)
        self.assertEqual((body["model"], body["alias"]), ("churn", "production"))
        moves = [(h["from_version"], h["to_version"], h["reason"], h["who"]) for h in body["history"]]
        self.assertEqual(moves, [(None, 2, "", "ci-bot"), (3, None, "", "ci-bot"),
                                 (1, 3, "auc 0.91 > 0.88", "ci-bot"), (None, 1, "", "ci-bot")])
        self.assertTrue(all(h["at"].endswith("Z") for h in body["history"]), body)

        # paged newest first, the token resuming below the last row
        st, _, page = self.r("GET", p + "/history?limit=3")
        self.assertEqual(len(page["history"]), 3)
        st, _, rest = self.r("GET", p + f"/history?limit=3&page_token={page['next_page_token']}")
        self.assertEqual(rest["history"], body["history"][3:])
        self.assertNotIn("next_page_token", rest)

        # history survives the model; a model that never was is a 404
        self.assertEqual(self.r("DELETE", "/v1/models/churn")[0], 204)
        st, _, after = self.r("GET", p + "/history")
        self.assertEqual((st, after["history"]), (200, body["history"]))
        self.assertError(self.r("GET", "/v1/models/nope/aliases/production/history"), 404, "not_found",
                         "nope")
        self.assertError(self.r("GET", "/v1/models/churn/aliases/latest/history"), 400,
                         "invalid_argument", "latest")

    def test_rollback_api_and_events(self):
        self.model_with_versions("recs", 3)
        p = "/v1/models/recs/aliases/production"
        self.assertError(self.r("POST", p + "/rollback"), 404, "not_found", "no alias")
        self.r("PUT", p, {"version": 1})
        self.assertError(self.r("POST", p + "/rollback"), 400, "failed_precondition",
                         "nothing to roll back to")
        self.r("PUT", p, {"version": 2})
        self.r("PUT", p, {"version": 3})
        # without the token: 401, nothing moves
        st, _, _ = self.reg.request("POST", p + "/rollback")
        self.assertEqual(st, 401)
        st, _, body = self.r("POST", p + "/rollback")
        self.assertEqual(st, 200, body)
        self.assertEqual((body["from_version"], body["version"], body["reason"]), (3, 2, "rollback"))
        self.assertEqual(self.r("GET", p)[2]["version"], 2)
        st, _, body = self.r("POST", p + "/rollback", {"reason": "bad canary"})
        self.assertEqual((body["from_version"], body["version"]), (2, 3))
        self.assertError(self.r("POST", p + "/rollback", {"why": "x"}), 400, "invalid_argument", "why")
        hist = self.r("GET", p + "/history")[2]["history"]
        self.assertEqual([(h["from_version"], h["to_version"], h["reason"]) for h in hist[:2]],
                         [(2, 3, "rollback: bad canary"), (3, 2, "rollback")])
        # every move, rollbacks included, published quern.model.promoted
        evs = [e["event"] for e in self.r("GET", "/v1/events")[2]["events"]]
        data = [(e["data"]["previous_version"], e["data"]["version"]) for e in evs
                if e["type"] == "quern.model.promoted"]
        self.assertEqual(data, [(None, 1), (1, 2), (2, 3), (3, 2), (2, 3)])
        self.assertEqual(evs[3]["data"]["reason"], "rollback")

    def test_cli_rollback_says_from_and_to(self):
        self.model_with_versions("adult", 2)
        p = "/v1/models/adult/aliases/staging"
        self.r("PUT", p, {"version": 1})
        self.r("PUT", p, {"version": 2})
        env = dict(os.environ, QUERN_REGISTRY=f"http://127.0.0.1:{self.reg.port}", QUERN_TOKEN=TOKEN,
                   QUERN_HOME=self.reg.data)

        def quern(*args):
            return subprocess.run([os.path.join(BIN, "quern"), *args], env=env, capture_output=True,
                                  text=True, timeout=60)

        out = quern("models", "rollback", "adult", "--alias", "staging", "--reason", "latency")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("adult: staging rolled back from version 2 to version 1", out.stdout)
        self.assertEqual(self.r("GET", p)[2]["version"], 1)
        out = quern("models", "history", "adult", "--alias", "staging")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("rollback: latency", out.stdout)
        self.assertIn("ci-bot", out.stdout)
        # production was never set: the CLI fails with the registry's sentence
        out = quern("models", "rollback", "adult")
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("no alias \"production\"", out.stderr)


class AnonymousHistoryTest(ServiceTest):
    def test_without_a_token_moves_are_anonymous(self):
        reg = self.start("registry")
        payload = b"w"
        reg.request("PUT", f"/v1/blobs/{sha(payload)}", body=payload)
        reg.request("POST", "/v1/models", {"name": "m"})
        manifest = {"format": "quern.model/1", "kind": "xgboost",
                    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
                    "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1]}],
                    "files": {"model.json": sha(payload)}}
        reg.request("POST", "/v1/models/m/versions", {"manifest": manifest})
        reg.request("PUT", "/v1/models/m/aliases/production", {"version": 1})
        st, _, body = reg.request("GET", "/v1/models/m/aliases/production/history")
        self.assertEqual([h["who"] for h in body["history"]], ["anonymous"])


if __name__ == "__main__":
    unittest.main()
