"""faults.py - what the fault tests share: the service harness of tests/service,
a fixed-port service (a service restarted after a fault must come back where
its clients look for it), a small synthetic interactions dataset with
structure ALS can learn, metrics parsing, polling, and a client loop that
counts failures.

Standard library only; run by /usr/bin/python3. Nothing here talks to
anything but the processes the tests start themselves.
"""
import csv
import hashlib
import io
import json
import os
import random
import re
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "service"))
from harness import Service, ServiceTest, WORK, BIN  # noqa: E402,F401

TOOLS = os.environ.get("QUERN_TOOLS", os.path.join(os.path.dirname(__file__), "../../build/tests"))

ALS_SPEC = {"user": "user", "item": "item", "weight": "weight", "k": 10,
            "split": {"kind": "leave_k_out", "k": 1, "seed": 7}}
ALS_PARAMS = {"factors": 8, "iterations": 5, "regularization": 0.05, "alpha": 5, "seed": 3}


def free_port(host="127.0.0.1"):
    s = socket.socket()
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class FixedService(Service):
    """A service on a fixed HOST:PORT: a restart comes back on the same address."""

    def __init__(self, name, port, host="127.0.0.1", **kw):
        super().__init__(name, **kw)
        self.fixed = f"{host}:{port}"

    def start(self, timeout=20):
        # The harness passes --listen 127.0.0.1:0 first; a later flag wins.
        base = list(self.args)
        self.args = base + ["--listen", self.fixed]
        try:
            return super().start(timeout)
        finally:
            self.args = base

    @property
    def url(self):
        return f"http://{self.fixed}"


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def interactions_csv(users=160, items=60, per_user=10, seed=11, prefix=""):
    """user,item,weight rows: four taste groups, each user mostly buys its group's items."""
    rnd = random.Random(seed)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["user", "item", "weight"])
    for u in range(users):
        g = u % 4
        mine = [i for i in range(items) if i % 4 == g]
        seen = set()
        while len(seen) < per_user:
            i = rnd.choice(mine) if rnd.random() < 0.85 else rnd.randrange(items)
            seen.add(i)
        for i in sorted(seen):
            w.writerow([f"{prefix}u{u}", f"i{i}", 1])
    return out.getvalue().encode()


def register_dataset(reg, name, data):
    """A dataset version in the registry, as prep would make it (blob + manifest)."""
    st, _, body = reg.request("PUT", f"/v1/blobs/{sha(data)}", body=data, headers={"Content-Type": "text/csv"})
    assert st in (200, 201), body
    manifest = {"format": "quern.dataset/1", "files": {"data.csv": sha(data)},
                "schema": {"columns": [{"name": "user", "type": "categorical"},
                                       {"name": "item", "type": "categorical"},
                                       {"name": "weight", "type": "numeric"}]},
                "rows": data.count(b"\n") - 1}
    st, _, body = reg.request("POST", f"/v1/datasets/{name}/versions", {"manifest": manifest})
    assert st == 201, body
    return body


def als_job(model, dataset, mode="always", **extra):
    body = {"model": model, "kind": "als", "dataset": dataset, "spec": dict(ALS_SPEC),
            "params": dict(ALS_PARAMS), "promote_policy": {"mode": mode}}
    body.update(extra)
    return body


def wait_for(what, fn, timeout=60, every=0.2):
    """Polls fn until it returns a true value; returns it, or raises naming what."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
        except OSError as e:  # refused, reset, timed out: the fault at work
            last = e
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


_SERIES = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric(text, name, **labels):
    """The value of the first series of name whose labels include labels, or None."""
    if isinstance(text, bytes):
        text = text.decode()
    for line in text.splitlines():
        m = _SERIES.match(line)
        if not m or m.group(1) != name:
            continue
        have = dict(_LABEL.findall(m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


def metrics_of(svc):
    st, _, body = svc.request("GET", "/metrics", raw=True, timeout=5)
    assert st == 200, body
    return body.decode()


class Load:
    """Client threads calling fn in a loop; fn returns True (ok) or False/raises (failed)."""

    def __init__(self, fn, threads=2, pause=0.01):
        self.fn, self.pause = fn, pause
        self.ok = self.failed = 0
        self.errors = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        while not self.stopping.is_set():
            try:
                good = self.fn()
                err = None if good else "refused"
            except Exception as e:  # noqa: BLE001 - every failure counts
                good, err = False, repr(e)
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
                    if len(self.errors) < 10:
                        self.errors.append(err)
            time.sleep(self.pause)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for t in self.threads:
            t.join(30)


def log_has(svc, msg, **fields):
    """The service logged a JSON line with this msg (and these fields)."""
    for line in svc.log().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("msg") == msg and all(ev.get(k) == v for k, v in fields.items()):
            return True
    return False


def no_sanitizer_reports(test, services):
    for svc in services:
        if svc.log_path and os.path.exists(svc.log_path):
            for needle in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
                test.assertNotIn(needle, svc.log(), f"{svc.name} log ({svc.log_path})")
