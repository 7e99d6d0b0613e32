#!/usr/bin/python3
"""test_container.py - the pieces of the image that run without an engine.

- deploy/container/Containerfile: multi-stage from debian:bookworm to
  debian:bookworm-slim, non-root uid 10001, /data volume, every port exposed,
  a HEALTHCHECK with `quern healthcheck`, the entrypoint.
- deploy/container/entrypoint.sh, run with a stand-in quern-<service> on PATH:
  sets QUERN_LISTEN=0.0.0.0:<port> (and serve's gRPC) only when neither the
  flag nor the variable is given, and execs the command.
- runtime-packages.sh maps the built binaries' libraries to packages and fails
  loudly on something that is not a dynamic executable.
- `quern healthcheck` against a real quern-registry: 0 when healthy/ready, 1
  when nothing answers or the path is wrong, the URL taken from an argument or
  from QUERN_LISTEN (wildcard host asked on loopback).
The image itself is built and run by `make image` (docs/operations.md).
"""
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("QUERN_SOURCE_DIR", os.path.abspath(os.path.join(HERE, "..", "..")))
BIN = os.environ.get("QUERN_BIN", os.path.join(SRC, "build", "bin"))
WORK = os.environ.get("QUERN_TEST_WORK", tempfile.gettempdir())
CONTAINER = os.path.join(SRC, "deploy", "container")

PORTS = {"registry": 7701, "ingest": 7702, "prep": 7703, "train": 7704,
         "serve": 7705, "monitor": 7707, "alert": 7708}


class Containerfile(unittest.TestCase):
    def setUp(self):
        with open(os.path.join(CONTAINER, "Containerfile"), encoding="utf-8") as f:
            self.text = f.read()

    def test_stages_user_ports_health(self):
        froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", self.text, re.M)
        self.assertEqual(froms, [("debian:bookworm", "build"), ("debian:bookworm-slim", "")])
        runtime = self.text.split("FROM debian:bookworm-slim", 1)[1]
        self.assertRegex(runtime, r"useradd --uid 10001")
        self.assertRegex(runtime, r"(?m)^USER 10001:10001$")
        self.assertRegex(runtime, r'(?m)^VOLUME \["/data"\]$')
        exposed = {int(p) for p in re.search(r"(?m)^EXPOSE (.*)$", runtime).group(1).split()}
        self.assertEqual(exposed, set(PORTS.values()) | {7706})
        self.assertRegex(runtime, r'(?m)^HEALTHCHECK .*\n\s*CMD \["quern", "healthcheck"\]')
        self.assertRegex(runtime, r'(?m)^ENTRYPOINT \["/usr/local/bin/quern-entrypoint"\]')
        # No build tools in the runtime stage: only the derived package list.
        self.assertNotRegex(runtime, r"build-essential|cmake|-dev\b")
        self.assertIn("runtime-packages", runtime)

    def test_entrypoint_knows_every_port(self):
        with open(os.path.join(CONTAINER, "entrypoint.sh"), encoding="utf-8") as f:
            text = f.read()
        arms = dict(re.findall(r"quern-(\w+)\)\s+port=(\d+)", text))
        self.assertEqual({k: int(v) for k, v in arms.items()}, PORTS)


class Entrypoint(unittest.TestCase):
    def run_ep(self, args, env=None):
        with tempfile.TemporaryDirectory(dir=WORK) as tmp:
            for name in [f"quern-{s}" for s in PORTS] + ["quern"]:
                p = os.path.join(tmp, name)
                with open(p, "w") as f:
                    f.write('#!/bin/sh\necho "ARGS=$*"\necho "LISTEN=${QUERN_LISTEN:-}"\n'
                            'echo "GRPC=${QUERN_GRPC_LISTEN:-}"\n')
                os.chmod(p, 0o755)
            e = {"PATH": tmp + ":/usr/bin:/bin"}
            e.update(env or {})
            out = subprocess.run(["sh", os.path.join(CONTAINER, "entrypoint.sh")] + args,
                                 capture_output=True, text=True, env=e, timeout=10)
            self.assertEqual(out.returncode, 0, out.stderr)
            return dict(line.split("=", 1) for line in out.stdout.splitlines())

    def test_listens_on_all_interfaces_by_default(self):
        for svc, port in PORTS.items():
            r = self.run_ep([f"quern-{svc}"])
            self.assertEqual(r["LISTEN"], f"0.0.0.0:{port}", svc)
            self.assertEqual(r["GRPC"], "0.0.0.0:7706" if svc == "serve" else "", svc)

    def test_flag_or_environment_wins(self):
        self.assertEqual(self.run_ep(["quern-registry", "--listen", "1.2.3.4:1"])["LISTEN"], "")
        self.assertEqual(self.run_ep(["quern-registry", "--listen=1.2.3.4:1"])["LISTEN"], "")
        self.assertEqual(self.run_ep(["quern-registry"], {"QUERN_LISTEN": "127.0.0.1:9"})["LISTEN"], "127.0.0.1:9")
        r = self.run_ep(["quern-serve", "--grpc-listen", "0.0.0.0:9"])
        self.assertEqual((r["LISTEN"], r["GRPC"]), ("0.0.0.0:7705", ""))

    def test_other_commands_untouched(self):
        r = self.run_ep(["quern", "models", "list"])
        self.assertEqual((r["ARGS"], r["LISTEN"]), ("models list", ""))
        self.assertEqual(self.run_ep([])["ARGS"], "--help")


class RuntimePackages(unittest.TestCase):
    def test_maps_libraries_to_packages(self):
        binary = os.path.join(BIN, "quern-registry")
        if not shutil.which("dpkg-query") or not os.path.exists(binary):
            self.skipTest("needs dpkg and the built quern-registry")
        out = subprocess.run(["sh", os.path.join(CONTAINER, "runtime-packages.sh"), binary],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        pkgs = out.stdout.split()
        for p in ("libmicrohttpd12", "libjansson4", "libsqlite3-0", "librabbitmq4", "libssl3", "libc6"):
            self.assertIn(p, pkgs)
        self.assertEqual(pkgs, sorted(set(pkgs)))
        bad = subprocess.run(["sh", os.path.join(CONTAINER, "runtime-packages.sh"), binary,
                              os.path.join(CONTAINER, "entrypoint.sh")], capture_output=True, text=True)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("not a dynamic executable", bad.stderr)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Healthcheck(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.quern = os.path.join(BIN, "quern")
        reg = os.path.join(BIN, "quern-registry")
        if not (os.path.exists(cls.quern) and os.path.exists(reg)):
            raise unittest.SkipTest("binaries not built")
        cls.tmp = tempfile.mkdtemp(dir=WORK, prefix="healthcheck.")
        cls.port = free_port()
        env = dict(os.environ, QUERN_HOME=cls.tmp)
        cls.log = open(os.path.join(cls.tmp, "registry.log"), "wb")
        cls.proc = subprocess.Popen([reg, "--listen", f"127.0.0.1:{cls.port}"], env=env,
                                    stdout=cls.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{cls.port}/readyz", timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        cls.tearDownClass()
        raise AssertionError("quern-registry did not become ready")

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(timeout=20)
        cls.log.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def hc(self, *args, env=None):
        e = dict(os.environ)
        e.pop("QUERN_LISTEN", None)
        e.update(env or {})
        return subprocess.run([self.quern, "healthcheck", *args], capture_output=True, text=True,
                              env=e, timeout=20)

    def test_healthy_and_ready(self):
        base = f"http://127.0.0.1:{self.port}"
        self.assertEqual(self.hc(base).returncode, 0)
        self.assertEqual(self.hc("--ready", base).returncode, 0)
        self.assertEqual(self.hc(base + "/metrics").returncode, 0)

    def test_failures(self):
        r = self.hc(f"http://127.0.0.1:{self.port}/no-such-route")
        self.assertEqual(r.returncode, 1)
        r = self.hc(f"http://127.0.0.1:{free_port()}")
        self.assertEqual(r.returncode, 1)
        self.assertIn("healthcheck", r.stderr)
        self.assertEqual(self.hc("--bogus").returncode, 2)

    def test_address_from_quern_listen(self):
        # Used when PID 1 is not a quern-<service> (outside a container).
        with open("/proc/1/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0")[0]
        if os.path.basename(argv0).startswith(b"quern-"):
            self.skipTest("PID 1 is a quern service: its address wins")
        r = self.hc(env={"QUERN_LISTEN": f"0.0.0.0:{self.port}"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.hc(env={"QUERN_LISTEN": "no-port"}).returncode, 2)

    def test_hidden_from_help(self):
        out = subprocess.run([self.quern, "--help"], capture_output=True, text=True)
        self.assertNotIn("healthcheck", out.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
