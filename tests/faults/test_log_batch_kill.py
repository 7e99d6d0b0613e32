"""Fault: the registry is killed (SIGKILL) while clients log batches of 1,000
metrics through MLflow's runs/log-batch.

Proves that a batch is logged whole or not at all: after each kill and a
restart on the same data, every run's metric history holds only complete
batches (a multiple of 1,000 points whose steps form whole batches), each
batch that was answered 200 before the kill is there, and latest_metrics
agrees with the history (the latest step logged). Several rounds, each
killed at a different moment while batches are in flight.
"""
import json
import random
import threading
import time
import unittest

from faults import ServiceTest, no_sanitizer_reports

BATCH = 1000
ROUNDS = 4


class LogBatchKillTest(ServiceTest):
    def tearDown(self):
        super().tearDown()
        no_sanitizer_reports(self, self.services)

    def test_kill_during_log_batch(self):
        reg = self.start("registry")
        st, _, out = reg.request("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": "0"})
        self.assertEqual(st, 200, out)
        rid = out["run"]["info"]["run_id"]
        acked = set()          # batch numbers answered 200
        next_batch = [0]
        rnd = random.Random(5)
        for rnd_no in range(ROUNDS):
            stop = threading.Event()
            lock = threading.Lock()

            def client():
                while not stop.is_set():
                    with lock:
                        b = next_batch[0]
                        next_batch[0] += 1
                    now = int(time.time() * 1000)
                    body = json.dumps({"run_id": rid, "metrics": [
                        {"key": "loss", "value": b + i / BATCH, "timestamp": now, "step": b * BATCH + i}
                        for i in range(BATCH)]}).encode()
                    try:
                        st, _, _ = reg.request("POST", "/api/2.0/mlflow/runs/log-batch", body,
                                               headers={"Content-Type": "application/json"}, timeout=10)
                    except OSError:
                        return
                    if st == 200:
                        with lock:
                            acked.add(b)

            threads = [threading.Thread(target=client) for _ in range(3)]
            for t in threads:
                t.start()
            time.sleep(0.3 + rnd.random() * 0.7)
            reg.kill9()
            stop.set()
            for t in threads:
                t.join(30)
            reg.start()

            steps, token = [], ""
            while True:  # the history comes in pages of at most 25,000 points
                st, _, out = reg.request("GET", f"/api/2.0/mlflow/metrics/get-history?run_id={rid}"
                                                f"&metric_key=loss&page_token={token}")
                self.assertEqual(st, 200, out)
                steps += [m["step"] for m in out["metrics"]]
                token = out.get("next_page_token")
                if not token:
                    break
            steps.sort()
            self.assertEqual(len(steps) % BATCH, 0, f"round {rnd_no}: {len(steps)} points is not whole batches")
            batches = {}
            for s in steps:
                batches.setdefault(s // BATCH, []).append(s)
            for b, ss in batches.items():
                self.assertEqual(ss, list(range(b * BATCH, (b + 1) * BATCH)), f"batch {b} is partial")
            with lock:
                missing = acked - set(batches)
            self.assertEqual(missing, set(), f"acknowledged batches lost: {sorted(missing)[:5]}")
            st, _, run = reg.request("GET", f"/api/2.0/mlflow/runs/get?run_id={rid}")
            latest = [m for m in run["run"]["data"]["metrics"] if m["key"] == "loss"]
            if steps:
                self.assertEqual(latest[0]["step"], steps[-1])
        self.assertGreater(len(acked), ROUNDS, "too few batches got through to prove anything")


if __name__ == "__main__":
    unittest.main()
