"""Fault: RabbitMQ killed (SIGKILL) and restarted under a steady ingest load.

Run by tests/unit/core/run_bus_amqp.sh, which starts a private broker and
sets QUERN_TEST_AMQP (its URL) and QUERN_TEST_AMQP_RESTART (kill -9 it and
start it again on the same ports and data). quern-ingest runs with --bus
amqp://...; three client threads post 25-row CSV batches, each with its own
Idempotency-Key, the whole time; a test consumer group subscribes to
quern.events.ingested before the load starts.

Proves that no acknowledged write or event is lost and none is doubled:
- every batch that got a 2xx is in ingest exactly once: its rows, in its
  first_seq..last_seq range, each once (GET /v1/datasets/clicks/events);
  batches whose answer was lost or refused during the outage are resent with
  the same key until acknowledged, and are then in ingest exactly once too;
- the outbox drains once the broker is back: every row of GET /v1/outbox
  shows published;
- the test consumer receives a quern.events.ingested for every acknowledged
  batch (at least once: the bus redelivers, consumers dedupe by event id;
  distinct event ids are counted once each).
"""
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

from faults import TOOLS, ServiceTest, WORK, metric, metrics_of, no_sanitizer_reports, wait_for

AMQP = os.environ.get("QUERN_TEST_AMQP")
RESTART = os.environ.get("QUERN_TEST_AMQP_RESTART")
ROWS = 25
GROUP = "faults-consumer"


def events_tool(*args, timeout=120):
    p = subprocess.run([os.path.join(TOOLS, "quern-events"), *args], capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"quern-events {args[0]} failed: {p.stderr}")
    return p.stdout


@unittest.skipUnless(AMQP and RESTART, "needs QUERN_TEST_AMQP (run through tests/unit/core/run_bus_amqp.sh)")
class AmqpRestartTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.home = tempfile.mkdtemp(prefix="quern-fault-amqp-", dir=WORK)
        self.lock = threading.Lock()
        self.acked = {}     # key -> answer
        self.pending = {}   # key -> body, answer not (yet) 2xx
        self.outcomes = {"2xx": 0, "error_status": 0, "no_answer": 0}

    def tearDown(self):
        super().tearDown()
        no_sanitizer_reports(self, self.services)
        if not os.environ.get("QUERN_KEEP"):
            shutil.rmtree(self.home, ignore_errors=True)

    def batch(self, key):
        lines = ["batch,row,user,item"] + [f"{key},{r},u{r % 7},i{(r * 3) % 11}" for r in range(ROWS)]
        return ("\n".join(lines) + "\n").encode()

    def post(self, ing, key, body):
        try:
            st, _, ans = ing.request("POST", "/v1/datasets/clicks/events", body=body, timeout=10,
                                     headers={"Content-Type": "text/csv", "Idempotency-Key": key})
        except OSError:
            with self.lock:
                self.outcomes["no_answer"] += 1
                self.pending[key] = body
            return False
        with self.lock:
            if 200 <= st < 300:
                self.outcomes["2xx"] += 1
                self.acked[key] = ans
                self.pending.pop(key, None)
                return True
            self.outcomes["error_status"] += 1
            self.pending[key] = body
        return False

    def loader(self, ing, t, stop):
        n = 0
        while not stop.is_set():
            key = f"t{t}-b{n}"
            n += 1
            self.post(ing, key, self.batch(key))
            time.sleep(0.02)

    def test_broker_killed_under_ingest_load(self):
        events_tool("subscribe", AMQP, GROUP, "quern.events.ingested")
        os.makedirs(os.path.join(self.home, "ingest"))
        ing = self.start("ingest", data=os.path.join(self.home, "ingest"), args=["--bus", AMQP],
                         env={"QUERN_HOME": self.home})
        stop = threading.Event()
        threads = [threading.Thread(target=self.loader, args=(ing, t, stop), daemon=True) for t in range(3)]
        for th in threads:
            th.start()
        wait_for("batches before the fault", lambda: self.outcomes["2xx"] >= 30, timeout=30)
        before = self.outcomes["2xx"]
        t0 = time.time()
        subprocess.run(RESTART, shell=True, check=True, timeout=180)
        outage = time.time() - t0
        during = self.outcomes["2xx"] - before
        wait_for("batches after the broker came back", lambda: self.outcomes["2xx"] >= before + during + 30,
                 timeout=60)
        stop.set()
        for th in threads:
            th.join(30)

        # Resend what was not acknowledged, same key, until it is.
        for key, body in list(self.pending.items()):
            wait_for(f"batch {key} acknowledged on resend", lambda: self.post(ing, key, body), timeout=60, every=0.5)
        self.assertEqual(self.pending, {})

        # Exactly once in ingest.
        rows = {}
        after = 0
        while True:
            st, _, page = ing.request("GET", f"/v1/datasets/clicks/events?after={after}&limit=10000")
            self.assertEqual(st, 200, page)
            for ev in page["events"]:
                k = (ev["data"]["batch"], ev["data"]["row"])
                self.assertNotIn(k, rows, f"row {k} stored twice")
                rows[k] = ev["seq"]
            if page["next_after"] == after or page["next_after"] >= page["last_seq"]:
                break
            after = page["next_after"]
        self.assertEqual(len(rows), ROWS * len(self.acked))
        for key, ans in self.acked.items():
            seqs = sorted(rows.get((key, str(r)), rows.get((key, r))) for r in range(ROWS))
            self.assertEqual(seqs, list(range(ans["first_seq"], ans["last_seq"] + 1)), key)

        # The outbox drains: every event published.
        def drained():
            after, unpublished, total = 0, 0, 0
            while True:
                st, _, page = ing.request("GET", f"/v1/outbox?after={after}&limit=1000")
                self.assertEqual(st, 200, page)
                for row in page["events"]:
                    total += 1
                    unpublished += 0 if row["published"] else 1
                if not page["events"]:
                    break
                after = page["next_after"]
            return unpublished == 0 and total
        total = wait_for("the outbox to drain", drained, timeout=120, every=0.5)
        self.assertGreaterEqual(total, len(self.acked))

        # The consumer gets an event for every acknowledged batch.
        got, ids, deliveries = set(), set(), 0
        deadline = time.time() + 120
        while not {a["batch_id"] for a in self.acked.values()} <= got and time.time() < deadline:
            for line in events_tool("read", AMQP, GROUP, "quern.events.ingested", "100000", "2000").splitlines():
                ev = json.loads(line)
                deliveries += 1
                ids.add(ev["id"])
                got.add(ev["data"]["batch_id"])
        missing = {a["batch_id"] for a in self.acked.values()} - got
        self.assertEqual(missing, set(), f"{len(missing)} acknowledged batches never reached the consumer")
        m = metrics_of(ing)
        print(f"broker down and back in {outage:.1f}s; {len(self.acked)} batches acknowledged "
              f"({during} during the outage), answers {self.outcomes}; {total} events published, "
              f"{len(ids)} distinct consumed in {deliveries} deliveries; "
              f"publish failures seen by ingest: {metric(m, 'quern_bus_publish_failures_total')}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
