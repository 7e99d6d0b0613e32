"""The closed loop end to end (issue: monitoring, alerting and the closed loop):
scripts/demo.py on a deterministic subset of Online Retail (every 3rd customer),
every service a separate process on embedded defaults, on free ports.

Asserts each step's outcome: version 1 beats the popularity baseline and is
promoted; the control window (customers like the training ones) does not drift
and the shifted window (the autumn's customers) does; exactly one retrain is
requested and run; version 2 is promoted only because it beats version 1 on
the fresh holdout; zero failed requests while serve swaps."""
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import unittest

ROOT = os.environ.get("QUERN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
WORK = os.environ.get("QUERN_TEST_WORK", tempfile.gettempdir())


def free_base():
    for _ in range(200):
        base = random.randrange(20000, 60000, 10)
        socks = []
        try:
            for off in range(10):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + off))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


class LoopTest(unittest.TestCase):
    def test_closed_loop(self):
        home = tempfile.mkdtemp(prefix="quern-loop-", dir=WORK)
        env = dict(os.environ, QUERN_DEMO_HOME=home, QUERN_PORT_BASE=str(free_base()))
        p = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "demo.py"), "--subset", "3",
                            "--json"], env=env, capture_output=True, text=True, timeout=900)
        self.assertEqual(p.returncode, 0, p.stdout[-3000:] + p.stderr[-3000:])
        story = json.loads(p.stdout)
        v1, v2 = story["v1"], story["v2"]
        self.assertEqual((v1["version"], v1["outcome"]), (1, "promoted"))
        self.assertGreater(v1["map@10"], v1["baseline.map@10"])
        self.assertGreater(story["prep_1"]["rows_out"], 0)
        self.assertLess(story["prep_1"]["rows_out"], story["prep_1"]["rows_in"])
        self.assertEqual(story["prep_2"]["dataset_version"], 2)

        self.assertEqual(story["control"]["failed"], 0)
        self.assertEqual(story["control"]["fallback"], 0)
        self.assertFalse(story["control"]["drift"], story["control"]["features"])
        self.assertTrue(story["shifted"]["drift"], story["shifted"]["features"])
        self.assertGreater(story["shifted"]["fallback"], 0)
        self.assertIn("retrain:requested", story["alert"]["actions"])
        self.assertEqual(story["alert"]["state"], "resolved")

        # exactly one retrain: the v2 job is the only one after v1
        self.assertEqual(v2["version"], 2)
        self.assertEqual(v2["champion_version"], 1)
        if v2["outcome"] == "promoted":
            self.assertGreater(v2["challenger_score"], v2["champion_score"])
        else:
            self.assertEqual(v2["outcome"], "kept_champion")
            self.assertLessEqual(v2["challenger_score"], v2["champion_score"])
        self.assertEqual(v2["outcome"], "promoted", "on this data the fresh model wins")

        sv = story["serve"]
        self.assertEqual(sv["failed"], 0, sv["errors"])
        self.assertGreater(sv["requests"], 100)
        self.assertIn("2", sv["versions"])
        self.assertTrue(os.path.exists(os.path.join(home, "logs", "serve.log")))
        with open(os.path.join(home, "logs", "train.log")) as f:
            accepted = [l for l in f if '"job accepted"' in l]
        self.assertEqual(len(accepted), 2, "v1 and exactly one retrain")


if __name__ == "__main__":
    unittest.main(verbosity=2)
