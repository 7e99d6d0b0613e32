"""Black-box tests of `quern experiments list` and `quern runs list|show|compare|metrics`
against a real quern-registry (QUERN_REGISTRY points the CLI at it)."""
import json
import os
import subprocess
import unittest

from harness import BIN, ServiceTest


class CliRunsTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.reg = self.start("registry")
        self.env = dict(os.environ, QUERN_REGISTRY=f"http://127.0.0.1:{self.reg.port}")

    def quern(self, *args):
        p = subprocess.run([os.path.join(BIN, "quern"), *args], env=self.env, capture_output=True, text=True,
                           timeout=120)
        return p.returncode, p.stdout, p.stderr

    def run_with(self, name, params, metrics):
        st, _, run = self.reg.request("POST", "/v1/runs", {"name": name})
        self.assertEqual(st, 201, run)
        st, _, out = self.reg.request("POST", f"/v1/runs/{run['run_id']}/log", {"params": params, "metrics": metrics})
        self.assertEqual(st, 204, out)
        return run["run_id"]

    def test_runs_commands(self):
        a = self.run_with("als-32", {"factors": "32"}, [{"key": "auc", "value": 0.81},
                                                         {"key": "loss", "value": 2.5, "step": 0},
                                                         {"key": "loss", "value": 1.25, "step": 1}])
        b = self.run_with("als-64", {"factors": "64", "reg": "0.1"}, [{"key": "auc", "value": 0.92}])
        rc, out, err = self.quern("experiments", "list")
        self.assertEqual(rc, 0, err)
        self.assertIn("Default", out)
        rc, out, err = self.quern("runs", "list")
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith("RUN"))
        self.assertEqual([l.split()[0] for l in lines[1:]], [b, a])  # newest first
        rc, out, err = self.quern("runs", "list", "-f", "metrics.auc > 0.9", "-o", "metrics.auc DESC")
        self.assertEqual((rc, [l.split()[0] for l in out.splitlines()[1:]]), (0, [b]), err)
        rc, out, err = self.quern("runs", "list", "-f", "metrics.auc >> 1")
        self.assertNotEqual(rc, 0)
        self.assertIn("character 14", err)
        rc, out, err = self.quern("runs", "compare", a, b)
        self.assertEqual(rc, 0, err)
        rows = {l.split()[0]: l.split()[1:] for l in out.splitlines()[1:]}
        self.assertEqual(rows["params.factors"], ["32", "64"])
        self.assertEqual(rows["params.reg"], ["-", "0.1"])
        self.assertEqual(rows["metrics.auc"], ["0.81", "0.92"])
        rc, out, err = self.quern("runs", "metrics", a, "loss")
        self.assertEqual(rc, 0, err)
        self.assertEqual([l.split()[:2] for l in out.splitlines()[1:]], [["0", "2.5"], ["1", "1.25"]])
        rc, out, err = self.quern("--json", "runs", "show", a)
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["params"], {"factors": "32"})
        rc, out, err = self.quern("runs", "show", "ffffffffffffffffffffffffffffffff")
        self.assertNotEqual(rc, 0)
        self.assertIn("does not exist", err)


if __name__ == "__main__":
    unittest.main()
