"""Black-box tests of the quern command: quern up/status/down as a supervisor
of real service processes, and the client commands with their exit codes."""
import json
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
import unittest

BIN = os.environ.get("QUERN_BIN", os.path.join(os.path.dirname(__file__), "../../build/bin"))
WORK = os.environ.get("QUERN_TEST_WORK", tempfile.gettempdir())


def free_base():
    """A port base whose 10 ports are all free on loopback."""
    for _ in range(200):
        base = random.randrange(20000, 60000, 10)
        ok = True
        for off in range(10):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", base + off))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return base
    raise RuntimeError("no free port range")


class CliTest(unittest.TestCase):
    def setUp(self):
        self.home = tempfile.mkdtemp(prefix="quern-cli-", dir=WORK)
        self.env = dict(os.environ, QUERN_HOME=self.home, QUERN_PORT_BASE=str(free_base()))
        for k in ("QUERN_REGISTRY", "QUERN_INGEST", "QUERN_PREP", "QUERN_TRAIN", "QUERN_SERVE",
                  "QUERN_MONITOR", "QUERN_ALERT"):
            self.env.pop(k, None)

    def tearDown(self):
        self.quern("down")

    def quern(self, *args, stdin=None):
        p = subprocess.run([os.path.join(BIN, "quern"), *args], env=self.env, capture_output=True,
                           text=True, input=stdin, timeout=120)
        return p.returncode, p.stdout, p.stderr

    def status(self):
        rc, out, err = self.quern("--json", "status")
        return rc, {s["service"]: s for s in json.loads(out)}

    def test_up_status_restart_down(self):
        rc, out, err = self.quern("up", "--detach", "--services", "registry")
        self.assertEqual(rc, 0, err)
        self.assertIn("registry", out)
        rc, st = self.status()
        self.assertEqual(rc, 0)
        reg = st["registry"]
        self.assertTrue(reg["ready"])
        self.assertEqual(reg["port"], int(self.env["QUERN_PORT_BASE"]) + 1)
        self.assertRegex(reg["version"], r"^\d+\.\d+\.\d+$")
        self.assertTrue(os.path.exists(os.path.join(self.home, "logs", "registry.log")))

        rc, out, err = self.quern("up", "--detach")
        self.assertEqual(rc, 4, "a second up must refuse")
        self.assertIn("already", err)

        # A crashed service is restarted by the supervisor.
        os.kill(reg["pid"], signal.SIGKILL)
        deadline = time.time() + 15
        while time.time() < deadline:
            rc, st = self.status()
            if st["registry"]["ready"] and st["registry"]["pid"] != reg["pid"]:
                break
            time.sleep(0.2)
        self.assertNotEqual(st["registry"]["pid"], reg["pid"])
        self.assertTrue(st["registry"]["ready"])
        self.assertEqual(st["registry"]["restarts"], 1)

        restarted = st["registry"]["pid"]
        rc, out, err = self.quern("down")
        self.assertEqual(rc, 0, err)
        rc, st = self.status()
        self.assertEqual(rc, 1)
        self.assertFalse(st["registry"]["ready"])
        with self.assertRaises(ProcessLookupError):
            os.kill(restarted, 0)

    def test_models_commands_and_exit_codes(self):
        rc, out, err = self.quern("models", "list")
        self.assertEqual(rc, 1, "registry down is a failure")
        self.assertIn("quern up", err)
        self.assertEqual(self.quern("up", "--detach", "--services", "registry")[0], 0)

        model = os.path.join(self.home, "model.json")
        with open(model, "w") as f:
            json.dump({"learner": {"note": "a model file is opaque to the registry"}}, f)
        rc, out, err = self.quern("models", "import", "--name", "adult", "--kind", "xgboost", "--file", model,
                                  "--inputs", "age:FP64,workclass:BYTES", "--promote", "production")
        self.assertEqual(rc, 0, err)
        self.assertIn("version 1", out)
        rc, out, err = self.quern("--json", "models", "versions", "adult")
        versions = json.loads(out)
        self.assertEqual([v["version"] for v in versions], [1])
        self.assertEqual(versions[0]["manifest"]["inputs"][1], {"name": "workclass", "datatype": "BYTES",
                                                                "shape": [-1]})
        self.assertEqual(versions[0]["aliases"], ["production"])
        rc, out, err = self.quern("models", "list")
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"adult\s+1\s+")
        # Piped output is a plain table (no escape codes).
        self.assertNotIn("\033", out)

        self.assertEqual(self.quern("models", "show", "ghost")[0], 3)
        rc, out, err = self.quern("models", "promote", "adult", "9")
        self.assertEqual(rc, 3)
        self.assertIn("version 9", err)
        self.assertEqual(self.quern("models", "import", "--name", "adult")[0], 2)
        self.assertEqual(self.quern("models", "bogus")[0], 2)
        self.assertEqual(self.quern("bogus")[0], 2)
        rc, out, err = self.quern("models", "import", "--name", "bad", "--kind", "xgboost", "--file", model,
                                  "--inputs", "age:FLOAT")
        self.assertEqual(rc, 2)
        self.assertIn("FLOAT", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
