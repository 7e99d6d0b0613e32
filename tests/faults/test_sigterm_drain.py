"""Fault: SIGTERM while requests are in flight.

The registry serves a 24 MiB blob to six slow readers (small receive buffers,
a pause per 64 KiB) and gets SIGTERM while every reader still has most of the
body to come (more than the kernel's socket buffers can hold, so the server is
provably still sending). Proves DESIGN.md section 1's stop contract:
- every in-flight request completes: 200 and the whole body, its SHA-256 right;
- a new connection made after the signal is refused (the listener is closed
  at once, so load balancers move on) while the process is still draining;
- the process exits 0 once the last response is out.
serve under a recommendation loop gets the same treatment with many short
requests: every request the server accepted gets a 200 (a connection still
in the kernel's listen backlog when the listener closes is reset unaccepted;
those are counted and printed, as clients see them as refused; so are
requests that reached an accepted connection only after the signal, which
get 503 "the service is stopping" with Connection: close).
"""
import hashlib
import http.client
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import unittest

from faults import (Load, ServiceTest, WORK, als_job, no_sanitizer_reports, register_dataset, interactions_csv,
                    wait_for)

BLOB = 24 << 20
READERS = 6
CHUNK = 64 << 10


class Reader(threading.Thread):
    def __init__(self, port, digest, pause):
        super().__init__(daemon=True)
        self.port, self.digest, self.pause = port, digest, pause
        self.read = 0
        self.status = None
        self.sha = None
        self.error = None
        self.started = threading.Event()

    def run(self):
        try:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)
            s.connect(("127.0.0.1", self.port))
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            conn.sock = s
            conn.request("GET", f"/v1/blobs/{self.digest}")
            resp = conn.getresponse()
            self.status = resp.status
            h = hashlib.sha256()
            while True:
                b = resp.read(CHUNK)
                if not b:
                    break
                h.update(b)
                self.read += len(b)
                self.started.set()
                time.sleep(self.pause)
            self.sha = "sha256:" + h.hexdigest()
            conn.close()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = repr(e)
        finally:
            self.started.set()


class SigtermTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.home = tempfile.mkdtemp(prefix="quern-fault-term-", dir=WORK)
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

    def test_registry_drains_blob_downloads(self):
        reg = self.start("registry", data=self.sub("registry"), env=self.env,
                         args=["--drain-timeout", "60s", "--threads", "8"])
        data = os.urandom(BLOB)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        st, _, body = reg.request("PUT", f"/v1/blobs/{digest}", body=data)
        self.assertIn(st, (200, 201), body)
        del data

        readers = [Reader(reg.port, digest, pause=0.004) for _ in range(READERS)]
        for r in readers:
            r.start()
        for r in readers:
            self.assertTrue(r.started.wait(20))
        wait_for("every reader to be under way", lambda: all(r.read >= 1 << 20 for r in readers), timeout=20)
        at_signal = [r.read for r in readers]
        reg.proc.send_signal(signal.SIGTERM)
        t0 = time.time()

        # New connections are refused while the old ones drain.
        time.sleep(0.3)
        self.assertIsNone(reg.proc.poll(), "the registry exited before its readers were served")
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", reg.port), timeout=2).close()

        for r in readers:
            r.join(90)
        rc = reg.proc.wait(30)
        took = time.time() - t0
        for r in readers:
            self.assertIsNone(r.error, r.error)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.read, BLOB)
            self.assertEqual(r.sha, digest)
        # Each reader still had most of the blob to come: more than any socket
        # buffer holds, so the server was sending when the signal came.
        self.assertTrue(all(a < BLOB // 2 for a in at_signal), at_signal)
        self.assertEqual(rc, 0, reg.log()[-2000:])
        print(f"SIGTERM with {READERS} downloads in flight ({min(at_signal) >> 20}-{max(at_signal) >> 20} MiB "
              f"of {BLOB >> 20} read): all completed, exit 0 after {took:.1f}s")

    def test_serve_drains_under_load(self):
        reg = self.start("registry", data=self.sub("registry"), env=self.env)
        register_dataset(reg, "clicks", interactions_csv())
        tr = self.start("train", data=self.sub("train"), env=self.env,
                        args=["--registry", f"http://127.0.0.1:{reg.port}"])
        st, _, job = tr.request("POST", "/v1/jobs", als_job("recs", "clicks"))
        self.assertEqual(st, 202, job)
        wait_for("version 1", lambda: tr.request("GET", f"/v1/jobs/{job['id']}")[2]["state"] == "succeeded",
                 timeout=120)
        sv = self.start("serve", data=self.sub("serve"), env=self.env,
                        args=["--registry", f"http://127.0.0.1:{reg.port}", "--models", "recs",
                              "--grpc-listen", "off", "--drain-timeout", "30s"])
        refused, unaccepted, stopping, signalled = [0], [0], [0], threading.Event()

        def recommend():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", sv.port, timeout=10)
                conn.connect()
            except ConnectionRefusedError:
                refused[0] += 1  # after the signal: not a request in flight
                time.sleep(0.05)
                return True
            except ConnectionResetError:
                # The handshake completed in the kernel, then the listener
                # closed before connect() returned: reset unaccepted, as below.
                if not signalled.is_set():
                    raise
                unaccepted[0] += 1
                return True
            try:
                conn.request("GET", f"/v1/models/recs/recommend?user=u{refused[0] % 50}&k=10")
                resp = conn.getresponse()
                resp.read()
                if (resp.status == 503 and signalled.is_set()
                        and (resp.getheader("Connection") or "").lower() == "close"):
                    # Accepted, but its request came in after the signal: the
                    # stop contract answers it 503 "the service is stopping"
                    # without running the handler. Counted apart.
                    stopping[0] += 1
                    return True
                return resp.status == 200
            except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError):
                # A connection still in the kernel's listen backlog when the
                # listener closes is reset without a byte: the server never
                # accepted it. Counted and reported; only after the signal.
                if not signalled.is_set():
                    raise
                unaccepted[0] += 1
                return True
            finally:
                conn.close()

        with Load(recommend, threads=6, pause=0) as load:
            time.sleep(1.0)
            before = load.ok
            signalled.set()
            sv.proc.send_signal(signal.SIGTERM)
            rc = sv.proc.wait(30)
            time.sleep(0.3)
        self.assertEqual(rc, 0, sv.log()[-2000:])
        self.assertEqual(load.failed, 0, load.errors)
        self.assertGreater(before, 20)
        self.assertGreater(refused[0], 0)
        print(f"serve: {load.ok} requests under load, 0 failed ({unaccepted[0]} connections reset unaccepted "
              f"from the backlog, {refused[0]} refused and {stopping[0]} answered 503 stopping after the "
              f"signal); exit 0 on SIGTERM")


if __name__ == "__main__":
    unittest.main(verbosity=2)
