"""Fault: SIGTERM with idle keep-alive connections open (issue 10, item 9).

The registry used to free its state after draining but before joining its
HTTP threads, so a request arriving on an idle kept-alive connection right
after SIGTERM ran reg_models_list on freed memory (AddressSanitizer:
heap-use-after-free; two 200s after the signal; exit 1). Proves the nginx
order (stop accepting; answer what arrives on open connections with 503 and
Connection: close without running a handler; drain; join; then free):
- race: 50 connections, each having done one request, send a request after
  SIGTERM (staggered over 200 ms, across the whole stop sequence) and go on
  sending for as long as the server keeps them open;
  each answer is complete (200 if it beat the signal, 503 with Connection:
  close after) or the connection closes cleanly, never a partial answer; the
  process exits 0 within the drain deadline, and its log holds no sanitizer
  report;
- held open: a slow blob download keeps the drain going; the 50 requests
  sent during it are all answered 503 {"code":"unavailable"} with
  Connection: close and then closed, the download completes, exit 0.
Run it under the ASan build with QUERN_BIN=build-asan/bin.
"""
import hashlib
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import unittest

from faults import ServiceTest, WORK, no_sanitizer_reports, wait_for

CONNS = 50
DRAIN_S = 20
REQ = b"GET /v1/models HTTP/1.1\r\nHost: registry\r\n\r\n"


def read_response(sock, timeout=10):
    """('ok', status, headers, body) for a whole response; ('closed',) when the
    peer closed (or reset) before sending a byte; ('partial', data) else."""
    sock.settimeout(timeout)
    data = b""
    while True:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1")
            lines = head.split("\r\n")
            status = int(lines[0].split()[1])
            hdrs = {}
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            need = head_end + 4 + int(hdrs.get("content-length", "0"))
            if len(data) >= need:
                return ("ok", status, hdrs, data[head_end + 4:need])
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        except socket.timeout:
            return ("partial", data)
        if not chunk:
            return ("closed",) if not data else ("partial", data)
        data += chunk


class SigtermKeepAliveTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.home = tempfile.mkdtemp(prefix="quern-fault-keepalive-", dir=WORK)

    def tearDown(self):
        super().tearDown()
        no_sanitizer_reports(self, self.services)
        if not os.environ.get("QUERN_KEEP"):
            shutil.rmtree(self.home, ignore_errors=True)

    def registry(self, name):
        data = os.path.join(self.home, name)
        os.makedirs(data, exist_ok=True)
        reg = self.start("registry", data=data, env={"QUERN_HOME": data},
                         args=["--drain-timeout", f"{DRAIN_S}s", "--threads", "4"])
        for i in range(3):
            st, _, body = reg.request("POST", "/v1/models", {"name": f"m{i}"})
            self.assertEqual(st, 201, body)
        return reg

    def keepalive_conns(self, reg):
        conns = []
        for _ in range(CONNS):
            s = socket.create_connection(("127.0.0.1", reg.port), timeout=10)
            s.sendall(REQ)
            r = read_response(s)
            self.assertEqual(r[0], "ok", r)
            self.assertEqual(r[1], 200, r)
            self.assertNotEqual(r[2].get("connection", "").lower(), "close")
            conns.append(s)
        return conns

    def fire(self, conns):
        for s in conns:
            try:
                s.sendall(REQ)
            except OSError:
                pass  # already closed by the server: read_response says so

    def test_race_after_sigterm(self):
        reg = self.registry("race")
        conns = self.keepalive_conns(reg)
        seen = {"200": 0, "503": 0, "closed": 0}
        bad = []
        lock = threading.Lock()
        signalled = threading.Event()

        # Connection i sends its first request i * 4 ms after the signal
        # (0-200 ms: across the whole stop sequence), then goes on sending for
        # as long as the server keeps it open. A request the server took after
        # the service state was gone would show (ASan report, exit code).
        def client(i, s):
            signalled.wait()
            time.sleep(i * 0.004)
            end = time.time() + DRAIN_S + 5
            while time.time() < end:
                try:
                    s.sendall(REQ)
                except OSError:
                    pass  # closed by the server: read_response says so
                r = read_response(s)
                with lock:
                    if r[0] == "closed":
                        seen["closed"] += 1
                        return
                    if r[0] != "ok" or r[1] not in (200, 503):
                        bad.append(r)
                        return
                    json.loads(r[3])
                    seen[str(r[1])] += 1
                if r[1] == 503 or r[2].get("connection", "").lower() == "close":
                    if read_response(s, 5) != ("closed",):
                        with lock:
                            bad.append(("not closed after Connection: close", r))
                    return

        threads = [threading.Thread(target=client, args=(i, s), daemon=True) for i, s in enumerate(conns)]
        for t in threads:
            t.start()
        t0 = time.time()
        reg.proc.send_signal(signal.SIGTERM)
        signalled.set()
        for t in threads:
            t.join(DRAIN_S + 10)
        rc = reg.proc.wait(DRAIN_S + 10)
        took = time.time() - t0
        for s in conns:
            s.close()
        self.assertEqual(bad, [], f"partial or unexpected answers: {bad[:3]!r}")
        self.assertEqual(rc, 0, reg.log()[-3000:])
        self.assertLess(took, DRAIN_S)
        print(f"SIGTERM, then {CONNS} kept-alive connections send (first ones at once, the last "
              f"200 ms later) while kept open: {seen}; exit 0 after {took:.2f}s")

    def test_requests_during_drain_get_503(self):
        reg = self.registry("held")
        blob = os.urandom(16 << 20)
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        st, _, body = reg.request("PUT", f"/v1/blobs/{digest}", body=blob)
        self.assertIn(st, (200, 201), body)
        conns = self.keepalive_conns(reg)

        # A slow reader keeps one request in flight, so the drain lasts.
        got = {"n": 0, "err": None}
        started = threading.Event()

        def slow_reader():
            try:
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
                s.connect(("127.0.0.1", reg.port))
                s.sendall(f"GET /v1/blobs/{digest} HTTP/1.1\r\nHost: r\r\n\r\n".encode())
                h = b""
                while b"\r\n\r\n" not in h:
                    h += s.recv(4096)
                got["n"] = len(h) - h.index(b"\r\n\r\n") - 4
                started.set()
                while True:
                    b = s.recv(64 << 10)
                    if not b:
                        break
                    got["n"] += len(b)
                    time.sleep(0.01)
                s.close()
            except Exception as e:  # noqa: BLE001 - reported below
                got["err"] = repr(e)
            finally:
                started.set()

        t = threading.Thread(target=slow_reader, daemon=True)
        t.start()
        self.assertTrue(started.wait(20))
        reg.proc.send_signal(signal.SIGTERM)
        # Readiness off and the listener closed: the drain has begun.
        wait_for("the listener to close", lambda: not can_connect(reg.port), timeout=10, every=0.02)
        self.assertIsNone(reg.proc.poll(), "the registry exited before its download was done")
        self.fire(conns)
        for s in conns:
            r = read_response(s)
            self.assertEqual(r[0], "ok", r)
            self.assertEqual(r[1], 503, r)
            self.assertEqual(r[2].get("connection", "").lower(), "close", r)
            err = json.loads(r[3])["error"]
            self.assertEqual(err["code"], "unavailable")
            self.assertEqual(err["message"], "the service is stopping")
            self.assertEqual(read_response(s, timeout=5), ("closed",))
            s.close()
        t.join(60)
        self.assertIsNone(got["err"], got["err"])
        self.assertEqual(got["n"], len(blob))
        rc = reg.proc.wait(DRAIN_S + 10)
        self.assertEqual(rc, 0, reg.log()[-3000:])
        print(f"{CONNS} requests during the drain: all 503 + Connection: close; the download "
              f"in flight completed ({len(blob) >> 20} MiB); exit 0")


def can_connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    unittest.main(verbosity=2)
