"""sources_kill.py - the exactly-once check the pull-source fault tests share:
start a run, kill -9 quern-ingest once it has committed part of the pull (and
before it finished), restart it on the same data, run again to the end, and
check every source row is in the dataset exactly once under gapless seqs."""
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "service"))
from sources_common import put, run, read_all, last_run  # noqa: E402


def kill_mid_pull(test, ing, name, spec, total, key="id", rounds=2):
    st, _, body = put(ing, name, spec)
    test.assertIn(st, (200, 201), body)
    for _ in range(rounds):
        st, _, r = ing.request("POST", f"/v1/sources/{name}/runs")
        test.assertIn(st, (200, 202), r)
        # Kill at a random point after the first commit of this run.
        want = random.randint(1, max(1, total // 4))
        deadline = time.time() + 120
        cur = last_run(ing, name)
        while time.time() < deadline and cur["status"] == "running" and cur["rows"] < want:
            time.sleep(0.005)
            cur = last_run(ing, name)
        test.assertEqual(cur["status"], "running", f"the run ended before it could be killed: {cur}")
        ing.kill9()
        ing.start(timeout=60)
        after = last_run(ing, name)
        test.assertEqual(after["status"], "failed", after)
        test.assertIn("interrupted", after["error"])
    r = run(ing, name, timeout=600)
    test.assertEqual(r["status"], "succeeded", r)
    rows, seqs = read_all(ing, spec["dataset"])
    ids = [int(x[key]) for x in rows]
    test.assertEqual(len(ids), total, "rows lost or duplicated")
    test.assertEqual(sorted(ids), list(range(1, total + 1)))
    test.assertEqual(seqs, list(range(1, total + 1)), "seqs not gapless")
    # And nothing more on a further run.
    test.assertEqual(run(ing, name)["rows"], 0)
