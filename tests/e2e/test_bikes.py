"""The second closed loop end to end, on model quality (issue 14): scripts/demo.py
--case bikes on every 2nd day of the Bike Sharing data, every service a separate
process on embedded defaults, on free ports.

Asserts each step: version 1 (2011) is promoted; on 2012's hours its live RMSE,
measured by the monitor from feedback joined by request id, is degraded beyond
the margin in every window while the drift report stays below dataset drift;
the quality rule fires after 2 windows and requests a retrain; version 2 beats
version 1 on the fresh holdout and is promoted; on 2012 hours no model saw, live
RMSE is back under 1.5x version 2's holdout and no request failed."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_loop import ROOT, WORK, free_base  # noqa: E402


class BikesTest(unittest.TestCase):
    def test_quality_loop(self):
        home = tempfile.mkdtemp(prefix="quern-bikes-", dir=WORK)
        env = dict(os.environ, QUERN_DEMO_HOME=home, QUERN_PORT_BASE=str(free_base()))
        p = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "demo.py"), "--case", "bikes",
                            "--subset", "2", "--json"], env=env, capture_output=True, text=True, timeout=900)
        self.assertEqual(p.returncode, 0, p.stdout[-3000:] + p.stderr[-3000:])
        story = json.loads(p.stdout)
        v1, v2 = story["v1"], story["v2"]
        self.assertEqual((v1["version"], v1["outcome"]), (1, "promoted"))
        self.assertEqual(story["served_2"]["failed"], 0)

        windows = story["quality_v1"]
        self.assertGreaterEqual(len(windows), 2)
        for w in windows:
            self.assertGreater(w["rmse"], 1.5 * w["reference_rmse"], w)
            self.assertTrue(w["degraded"], w)
            self.assertLess(w["mean_error"], 0, "2012 rents more bikes: v1 predicts too few")
            self.assertAlmostEqual(w["reference_rmse"], v1["rmse"], places=6)
        self.assertFalse(story["drift_2"]["dataset_drift"], story["drift_2"]["features"])

        self.assertIn("retrain:requested", story["alert"]["actions"])
        self.assertEqual((v2["version"], v2["outcome"]), (2, "promoted"))
        self.assertLess(v2["challenger_score"], v2["champion_score"])

        self.assertEqual(story["served_3"]["failed"], 0)
        self.assertEqual(story["served_3"]["versions"], ["2"])
        after = story["quality_v2"]
        self.assertGreaterEqual(len(after), 1)
        for w in after:
            self.assertLess(w["rmse"], 1.5 * w["reference_rmse"], w)
        print(f"bikes: v1 live RMSE {windows[-1]['rmse']:.1f} vs holdout {v1['rmse']:.1f}; v2 fresh holdout "
              f"{v2['challenger_score']:.1f} vs v1 {v2['champion_score']:.1f}; live after {after[-1]['rmse']:.1f}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
