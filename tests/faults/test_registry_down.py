"""Fault: the registry dies (SIGKILL) while serve serves and train trains.

Proves, on real processes sharing an embedded bus:
- serve keeps answering from the version it loaded: zero failed requests from
  a client loop that runs through the whole outage, and /readyz stays 200;
- serve's circuit for the registry opens (quern_circuit_state{upstream=
  "registry"} 1 in its /metrics) and its polls then fail fast
  (outcome="circuit_open" counted) instead of hammering a dead upstream;
- a training job posted while the registry is down waits (the job stays
  running, quern_train_upstream_waits_total grows) and, once the registry is
  back on the same address and data, succeeds and registers version 2;
- after recovery both circuits close (state 0) and serve catches up to
  version 2.
The breaker cool-down is 300 ms here (--breaker-cooldown) to keep the test short.
"""
import os
import shutil
import tempfile
import time
import unittest

from faults import (FixedService, Load, ServiceTest, WORK, als_job, free_port, interactions_csv, metric,
                    metrics_of, no_sanitizer_reports, register_dataset, wait_for)

BREAKER = ["--breaker-failures", "3", "--breaker-cooldown", "300ms"]


class RegistryDownTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.home = tempfile.mkdtemp(prefix="quern-fault-reg-", dir=WORK)
        self.env = {"QUERN_HOME": self.home}

    def tearDown(self):
        super().tearDown()
        no_sanitizer_reports(self, self.services)
        if not os.environ.get("QUERN_KEEP"):
            shutil.rmtree(self.home, ignore_errors=True)

    def sub(self, name):
        path = os.path.join(self.home, name)
        os.makedirs(path, exist_ok=True)
        return path

    def job(self, tr, job_id):
        st, _, job = tr.request("GET", f"/v1/jobs/{job_id}")
        self.assertEqual(st, 200, job)
        return job

    def test_registry_down_while_serving_and_training(self):
        reg = FixedService("registry", free_port(), data=self.sub("registry"), env=self.env).start()
        self.services.append(reg)
        register_dataset(reg, "clicks", interactions_csv())
        tr = self.start("train", data=self.sub("train"), env=self.env,
                        args=["--registry", reg.url, "--progress-interval", "50ms", "--upstream-wait", "2m"] + BREAKER)
        st, _, j1 = tr.request("POST", "/v1/jobs", als_job("recs", "clicks"))
        self.assertEqual(st, 202, j1)
        j1 = wait_for("job 1", lambda: (lambda j: j if j["state"] in ("succeeded", "failed") else None)(
            self.job(tr, j1["id"])), timeout=120)
        self.assertEqual(j1["state"], "succeeded", j1)
        self.assertEqual(j1["result"]["version"], 1)

        sv = self.start("serve", data=self.sub("serve"), env=self.env,
                        args=["--registry", reg.url, "--models", "recs", "--poll-interval", "200ms",
                              "--grpc-listen", "off"] + BREAKER)

        def recommend():
            st, _, body = sv.request("GET", "/v1/models/recs/recommend?user=u3&k=5", timeout=5)
            return st == 200 and int(body["version"]) in (1, 2) and len(body["items"]) == 5

        wait_for("serve on version 1", recommend, timeout=30)
        with Load(recommend, threads=2) as load:
            time.sleep(0.5)
            reg.kill9()
            t_down = time.time()

            # serve: the circuit opens, polls fail fast, requests still answered.
            wait_for("serve's registry circuit to open",
                     lambda: metric(metrics_of(sv), "quern_circuit_state", upstream="registry") == 1, timeout=20)
            self.assertEqual(sv.request("GET", "/readyz")[0], 200)
            wait_for("fail-fast calls from serve",
                     lambda: (metric(metrics_of(sv), "quern_client_requests_total", upstream="registry",
                                     outcome="circuit_open") or 0) > 0, timeout=20)

            # train: a job posted now waits for the registry.
            st, _, j2 = tr.request("POST", "/v1/jobs", als_job("recs", "clicks", params={
                "factors": 8, "iterations": 6, "regularization": 0.05, "alpha": 5, "seed": 4}))
            self.assertEqual(st, 202, j2)
            wait_for("train to wait for the registry",
                     lambda: (metric(metrics_of(tr), "quern_train_upstream_waits_total") or 0) >= 2, timeout=30)
            self.assertEqual(self.job(tr, j2["id"])["state"], "running")
            self.assertEqual(metric(metrics_of(tr), "quern_circuit_state", upstream="registry"), 1)
            time.sleep(max(0.0, 3.0 - (time.time() - t_down)))  # a few failed probes, growing cool-downs
            self.assertEqual(self.job(tr, j2["id"])["state"], "running")
            down_for = time.time() - t_down

            reg.start()  # same address, same data
            t_up = time.time()
            j2 = wait_for("job 2 after the registry came back",
                          lambda: (lambda j: j if j["state"] in ("succeeded", "failed") else None)(
                              self.job(tr, j2["id"])), timeout=120)
            self.assertEqual(j2["state"], "succeeded", j2)
            self.assertEqual(j2["result"]["version"], 2)
            self.assertEqual(j2["attempts"], 1)  # waited inside one attempt
            wait_for("serve on version 2", lambda: sv.request(
                "GET", "/v1/models/recs/recommend?user=u3&k=5")[2]["version"] == "2", timeout=60)
            closed_after = wait_for("serve's circuit to close", lambda: metric(
                metrics_of(sv), "quern_circuit_state", upstream="registry") == 0 and time.time() - t_up, timeout=60)
            self.assertEqual(metric(metrics_of(tr), "quern_circuit_state", upstream="registry"), 0)
            time.sleep(0.3)
        self.assertEqual(load.failed, 0, load.errors)
        self.assertGreater(load.ok, 50)
        print(f"registry down {down_for:.1f}s; serve answered {load.ok} requests, {load.failed} failed; "
              f"circuit closed {closed_after:.1f}s after the registry came back")


if __name__ == "__main__":
    unittest.main(verbosity=2)
