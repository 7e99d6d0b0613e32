"""Fault: 1,500 slow connections (slowloris) against one service (issue 10, item 5).

Each slow connection sends one byte of a request head every 2 s, which used
to reset libmicrohttpd's idle timeout forever: 1,100 of them stopped a
service from answering /healthz. They come from 30 loopback addresses
(127.0.0.2..31), 50 each, and reconnect whenever the server closes them, so
1,500 stay open or opening the whole time. Meanwhile a normal client on
127.0.0.1 calls /healthz (a new connection each time) and GET /v1/models (on
a kept-alive connection) four times a second. Proves, on quern-registry with
--max-connections 1024 --max-connections-per-client 32 --header-timeout 4s:
- the normal client gets every answer, each within 3 s (the machine is
  shared and loaded; typical answers take milliseconds);
- the slow connections really held the server: at least 500 open at once,
  never more than --max-connections;
- the per-client cap refused connections and the head deadline cut slow
  ones (quern_http_connections_refused_total{reason="client_limit"} and
  {reason="head_timeout"} both grew);
- the service then stops cleanly (exit 0) and its log holds no sanitizer report.
Bounded: about 40 s; every socket is closed at the end.
"""
import http.client
import os
import resource
import selectors
import shutil
import socket
import tempfile
import threading
import time
import unittest

from faults import ServiceTest, WORK, metric, metrics_of, no_sanitizer_reports

SLOW = 1500
ADDRS = [f"127.0.0.{i}" for i in range(2, 32)]
TICK = 2.0
STEADY = 24.0
HEAD = b"GET /v1/models HTTP/1.1\r\nHost: registry\r\nX-Slow: "
MAX_LATENCY = 3.0


class SlowClients:
    """SLOW connections, each sending one more byte of a request head per tick."""

    def __init__(self, port):
        self.port = port
        self.sel = selectors.DefaultSelector()
        self.socks = [None] * SLOW
        self.sent = [0] * SLOW
        self.connects = self.closed_by_server = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def connect(self, i):
        s = socket.socket()
        s.setblocking(False)
        s.bind((ADDRS[i % len(ADDRS)], 0))
        s.connect_ex(("127.0.0.1", self.port))
        self.socks[i] = s
        self.sent[i] = 0
        self.sel.register(s, selectors.EVENT_READ, i)
        self.connects += 1

    def drop(self, i):
        s = self.socks[i]
        if s is not None:
            self.sel.unregister(s)
            s.close()
            self.socks[i] = None

    def open_now(self):
        return sum(1 for s in self.socks if s is not None)

    def run(self):
        while not self.stopping.is_set():
            t0 = time.time()
            for i in range(SLOW):
                if self.socks[i] is None:
                    try:
                        self.connect(i)
                    except OSError:
                        self.drop(i)
                    continue
                byte = HEAD[self.sent[i]:self.sent[i] + 1] or b"a"
                try:
                    self.socks[i].send(byte)
                    self.sent[i] += 1
                except (BlockingIOError, InterruptedError):
                    pass  # still connecting: next tick
                except OSError:
                    self.closed_by_server += 1
                    self.drop(i)
            # Whatever the server says (a 429/503 refusal) or an EOF: it closed us.
            while time.time() - t0 < TICK and not self.stopping.is_set():
                for key, _ in self.sel.select(timeout=0.1):
                    i = key.data
                    try:
                        data = self.socks[i].recv(4096)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    self.closed_by_server += 1
                    self.drop(i)
                    del data
        for i in range(SLOW):
            self.drop(i)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(30)
        self.sel.close()


class NormalClient:
    """/healthz on a new connection and /v1/models on a kept-alive one, 4 per second."""

    def __init__(self, port):
        self.port = port
        self.latencies = []
        self.failures = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def timed(self, fn):
        t0 = time.time()
        try:
            ok = fn()
        except Exception as e:  # noqa: BLE001 - every failure counts
            ok = repr(e)
        dt = time.time() - t0
        self.latencies.append(dt)
        if ok is not True:
            self.failures.append(ok)

    def run(self):
        keep = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

        def healthz():
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                c.request("GET", "/healthz")
                r = c.getresponse()
                r.read()
                return True if r.status == 200 else f"healthz {r.status}"
            finally:
                c.close()

        def models():
            keep.request("GET", "/v1/models")
            r = keep.getresponse()
            body = r.read()
            return True if r.status == 200 and b"m0" in body else f"models {r.status} {body[:200]!r}"

        while not self.stopping.is_set():
            self.timed(healthz)
            self.timed(models)
            time.sleep(0.25)
        keep.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(30)


class SlowConnectionsTest(ServiceTest):
    def setUp(self):
        super().setUp()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = SLOW + 512
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        self.home = tempfile.mkdtemp(prefix="quern-fault-slow-", dir=WORK)

    def tearDown(self):
        super().tearDown()
        no_sanitizer_reports(self, self.services)
        if not os.environ.get("QUERN_KEEP"):
            shutil.rmtree(self.home, ignore_errors=True)

    def test_normal_client_served_under_1500_slow_connections(self):
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < SLOW + 256:
            self.fail(f"RLIMIT_NOFILE is {soft}: this test needs {SLOW + 256} descriptors")
        reg = self.start("registry", data=self.home, env={"QUERN_HOME": self.home},
                         args=["--max-connections", "1024", "--max-connections-per-client", "32",
                               "--header-timeout", "4s", "--threads", "4"])
        for i in range(3):
            st, _, body = reg.request("POST", "/v1/models", {"name": f"m{i}"})
            self.assertEqual(st, 201, body)
        before = metrics_of(reg)
        self.assertEqual(metric(before, "quern_http_connections_refused_total", reason="head_timeout"), 0)

        peak_server = peak_client = 0
        t0 = time.time()
        with SlowClients(reg.port) as slow, NormalClient(reg.port) as normal:
            while time.time() - t0 < STEADY:
                time.sleep(1.0)
                text = metrics_of(reg)
                open_now = metric(text, "quern_http_connections_open") or 0
                peak_server = max(peak_server, open_now)
                peak_client = max(peak_client, slow.open_now())
                self.assertLessEqual(open_now, 1024 + 8)  # + the normal client's own
                self.assertIsNone(reg.proc.poll(), "the registry died")
            connects, cut = slow.connects, slow.closed_by_server
        after = metrics_of(reg)
        refused_client = metric(after, "quern_http_connections_refused_total", reason="client_limit")
        refused_head = metric(after, "quern_http_connections_refused_total", reason="head_timeout")
        lat = sorted(normal.latencies)

        self.assertEqual(normal.failures, [], normal.failures[:5])
        self.assertGreater(len(lat), 4 * STEADY)
        self.assertLess(lat[-1], MAX_LATENCY, f"slowest answer {lat[-1]:.2f}s")
        self.assertGreaterEqual(peak_server, 500, "the slow connections never held the server")
        self.assertGreater(refused_client, 0)
        self.assertGreater(refused_head, 0)
        self.assertEqual(reg.stop(), 0, reg.log()[-3000:])
        print(f"{SLOW} slow connections from {len(ADDRS)} addresses for {STEADY:.0f}s "
              f"({connects} connects, {cut} closed by the server; up to {peak_client} open "
              f"client-side, {peak_server:.0f} server-side): normal client {len(lat)} answers, "
              f"0 failed, p50 {lat[len(lat) // 2] * 1e3:.1f} ms, p99 "
              f"{lat[int(len(lat) * 0.99)] * 1e3:.1f} ms, max {lat[-1] * 1e3:.1f} ms; refused "
              f"client_limit {refused_client:.0f}, head_timeout {refused_head:.0f}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
