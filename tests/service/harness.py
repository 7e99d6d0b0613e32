"""harness.py - start Quern services as real processes and talk HTTP to them.

Black-box tests use only the standard library (run by /usr/bin/python3). A
service is started on 127.0.0.1:0 with its own temporary --data dir; the port
it bound is read from its "listening" log line. Every process started here is
stopped by PID when the test ends.

With QUERN_TEST_PG set (tests/unit/core/run_store_pg.sh sets it), services
that keep metadata (registry, ingest, prep, monitor) store it in that PostgreSQL
database instead of SQLite: they get --db URL?schema=NAME, one schema per
service and --data dir, so a restart on the same --data finds its data again
and tests never see each other's rows. Without it nothing changes.
"""
import hashlib
import http.client
import json
import os
import signal
import subprocess
import tempfile
import time
import unittest

BIN = os.environ.get("QUERN_BIN", os.path.join(os.path.dirname(__file__), "../../build/bin"))
WORK = os.environ.get("QUERN_TEST_WORK", tempfile.gettempdir())
PG = os.environ.get("QUERN_TEST_PG")
DB_SERVICES = ("registry", "ingest", "prep", "monitor")


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def sha(data):
    """A blob's digest: "sha256:" and the hex SHA-256 of the bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def one_input_manifest(kind, model_digest):
    """The manifest of a regression model of one numeric input "x" (FP64) whose
    model.json is the blob model_digest: the smallest model serve loads."""
    return {"format": "quern.model/1", "kind": kind,
            "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1]}],
            "outputs": [{"name": "prediction", "datatype": "FP32", "shape": [-1]}],
            "transforms": {"format": "quern.features/1", "n_features": 1,
                           "columns": [{"name": "x", "type": "numeric", "steps": []}]},
            "params": {"task": "regression"},
            "files": {"model.json": model_digest}}


def pg_url(name, data):
    """The --db URL of service name with its --data dir on QUERN_TEST_PG."""
    tag = hashlib.sha1(os.path.abspath(data).encode()).hexdigest()[:12]
    sep = "&" if "?" in PG else "?"
    return f"{PG}{sep}schema={name}_{tag}"


class Service:
    """One running service binary."""

    def __init__(self, name, data=None, args=(), env=None):
        self.name = name
        self.data = data or tempfile.mkdtemp(prefix=f"quern-{name}-", dir=WORK)
        self.args = list(args)
        self.env = dict(os.environ, **(env or {}))
        self.env.setdefault("QUERN_HOME", self.data)
        self.proc = None
        self.port = None
        self.log_path = None

    def start(self, timeout=15):
        self.log_path = os.path.join(self.data, f"{self.name}.log")
        self.port = None
        log = open(self.log_path, "ab")
        offset = log.tell()  # a restart appends: read only this run's lines
        cmd = [os.path.join(BIN, f"quern-{self.name}"), "--listen", "127.0.0.1:0",
               "--data", self.data] + self.args
        if PG and self.name in DB_SERVICES and not any(a.startswith("--db") for a in self.args):
            cmd += ["--db", pg_url(self.name, self.data)]
        self.proc = subprocess.Popen(cmd, stderr=log, stdout=log, env=self.env)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            for line in self.log()[offset:].splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("msg") == "listening" and ev.get("port"):
                    self.port = int(ev["port"])
            if self.port and self.ready():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not become ready:\n{self.log()}")

    def log(self):
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def sanitizer_report(self):
        """The first ASan/LSan/UBSan report in this service's log (its first
        3,000 characters), or None: a sanitizer build writes them there."""
        log = self.log() if self.log_path else ""
        for mark in SANITIZER_MARKS:
            if mark in log:
                return log[log.find(mark):][:3000]
        return None

    def put_blob(self, data):
        """Stores bytes in this registry's blob store; returns their digest."""
        d = sha(data)
        status, _, body = self.request("PUT", f"/v1/blobs/{d}", body=data)
        if status not in (200, 201):
            raise AssertionError(f"PUT /v1/blobs/{d}: {status} {body}")
        return d

    def ready(self):
        try:
            status, _, _ = self.request("GET", "/readyz")
            return status == 200
        except OSError:
            return False

    def request(self, method, path, body=None, headers=None, timeout=30, raw=False):
        """Returns (status, headers dict (lower-case keys), parsed JSON or bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        hdrs = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, bytearray)) and not hasattr(body, "read"):
            body = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            h = {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()
        if not raw and h.get("content-type", "").startswith("application/json") and data:
            return resp.status, h, json.loads(data)
        return resp.status, h, data

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class ServiceTest(unittest.TestCase):
    """Base class: tracks services started in a test and stops them after it."""

    def setUp(self):
        self.services = []

    def tearDown(self):
        for s in self.services:
            s.stop()

    def start(self, name, **kw):
        s = Service(name, **kw).start()
        self.services.append(s)
        return s

    def assertNoSanitizerReports(self, names=None):
        """No service of this test (or those named) logged a sanitizer report."""
        for s in self.services:
            if names is None or s.name in names:
                report = s.sanitizer_report()
                self.assertIsNone(report, f"{s.name}: {report}")

    def assertError(self, resp, status, code, *needles):
        """An error answer in the model of DESIGN.md section 1, naming what to fix."""
        st, _, body = resp
        self.assertEqual(st, status, body)
        self.assertIsInstance(body, dict, body)
        self.assertIn("error", body)
        self.assertEqual(body["error"]["code"], code, body)
        msg = body["error"]["message"]
        for n in needles:
            self.assertIn(n, msg)
        return body["error"]
