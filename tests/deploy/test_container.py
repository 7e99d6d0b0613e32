#!/usr/bin/python3
"""test_container.py - the pieces of the image that run without an engine.

- deploy/container/Containerfile: a build stage on debian:bookworm, then
  targets FROM scratch (one per service, layered runtime -> ml -> grpc), the
  same as Containerfile.roots; non-root uid 10001, /data volume owned by it,
  every port exposed, a HEALTHCHECK with `quern healthcheck`, the entrypoint.
- deploy/container/entrypoint.sh, run with a stand-in quern-<service> on PATH:
  sets QUERN_LISTEN=0.0.0.0:<port> (and serve's gRPC) only when neither the
  flag nor the variable is given, and execs the command.
- mkroot.sh over the built binaries: every library each binary loads is in
  its image's layers, the light layer holds none of the heavy ones.
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
         "serve": 7705, "monitor": 7707, "alert": 7708, "console": 7709}


def stages(text):
    """The targets from `FROM scratch AS runtime` on, COPY sources normalised
    (a stage's /out/roots/X or the context's X)."""
    tail = text[re.search(r"(?m)^FROM scratch AS runtime$", text).start():]
    tail = re.sub(r"--from=build ", "", tail)
    return re.sub(r"/out/roots/", "", tail)


class Containerfile(unittest.TestCase):
    def setUp(self):
        with open(os.path.join(CONTAINER, "Containerfile"), encoding="utf-8") as f:
            self.text = f.read()
        with open(os.path.join(CONTAINER, "Containerfile.roots"), encoding="utf-8") as f:
            self.roots = f.read()

    def test_stages_user_ports_health(self):
        froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", self.text, re.M)
        self.assertEqual(froms[0], ("debian:bookworm", "build"))
        self.assertEqual(froms[1], ("scratch", "runtime"))
        targets = {alias for _, alias in froms[1:]}
        self.assertEqual(targets, {"runtime", "ml", "grpc", "quern"} | {f"quern-{s}" for s in PORTS})
        runtime = stages(self.text)
        self.assertRegex(runtime, r"(?m)^USER 10001:10001$")
        self.assertRegex(runtime, r"(?m)^COPY --chown=10001:10001 data/ /data/$")
        self.assertRegex(runtime, r'(?m)^VOLUME \["/data"\]$')
        exposed = {int(p) for p in re.search(r"(?m)^EXPOSE (.*)$", runtime).group(1).split()}
        self.assertEqual(exposed, set(PORTS.values()) | {7706})
        self.assertRegex(runtime, r'(?m)^HEALTHCHECK .*\n\s*CMD \["quern", "healthcheck"\]')
        self.assertRegex(runtime, r'(?m)^ENTRYPOINT \["/usr/local/bin/quern-entrypoint"\]')
        # Nothing but layer roots in the images: no package manager, no build tools.
        self.assertNotRegex(runtime, r"(?m)^RUN ")
        self.assertIn("mkroot.sh", self.text)

    def test_both_files_build_the_same_targets(self):
        self.assertEqual(stages(self.text), stages(self.roots))
        # Only the heavy services' images carry the heavy layers.
        for svc in ("registry", "ingest", "prep", "monitor"):
            self.assertIn(f"FROM runtime AS quern-{svc}", self.roots)
        for svc in ("train", "alert"):
            self.assertIn(f"FROM ml AS quern-{svc}", self.roots)
        self.assertIn("FROM grpc AS quern-serve", self.roots)

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


def needed(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=60).stdout
    return {l.split()[0] for l in out.splitlines() if "=>" in l and "/" in l.split("=>")[1]}


class MkRoot(unittest.TestCase):
    """mkroot.sh over the built binaries: each image's layers hold every library
    its binary loads, the light layer none of the heavy ones."""

    @classmethod
    def setUpClass(cls):
        if not all(os.path.exists(os.path.join(BIN, b)) for b in ["quern"] + [f"quern-{s}" for s in PORTS]):
            raise unittest.SkipTest("binaries not built")
        cls.out = tempfile.mkdtemp(dir=WORK, prefix="mkroot.")
        p = subprocess.run(["sh", os.path.join(CONTAINER, "mkroot.sh"), os.path.join(cls.out, "r"), BIN],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        cls.r = os.path.join(cls.out, "r")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.out, ignore_errors=True)

    def libs(self, *layers):
        have = set()
        for layer in layers:
            d = os.path.join(self.r, layer, "usr/lib/x86_64-linux-gnu")
            if os.path.isdir(d):
                have |= set(os.listdir(d))
        return have

    def test_every_library_in_the_layers_of_its_image(self):
        layers = {"registry": ["runtime"], "ingest": ["runtime"], "prep": ["runtime"], "monitor": ["runtime"],
                  "console": ["runtime"],
                  "train": ["runtime", "ml"], "alert": ["runtime", "ml"], "serve": ["runtime", "ml", "grpc"]}
        for svc, ls in layers.items():
            missing = needed(os.path.join(BIN, f"quern-{svc}")) - self.libs(*ls)
            self.assertEqual(missing, set(), svc)
            self.assertTrue(os.path.exists(os.path.join(self.r, "bin", f"quern-{svc}")))
        self.assertEqual(needed(os.path.join(BIN, "quern")) - self.libs("runtime"), set())
        # serve opens gRPC core on the first gRPC client (src/serve/grpc_lib.h):
        # not in ldd's answer, but in serve's image.
        self.assertIn("libgrpc.so.29", self.libs("runtime", "ml", "grpc"))

    def test_light_layer_has_no_heavy_library(self):
        light = self.libs("runtime")
        heavy = ["libopenblas.so.0", "libxgboost.so.0", "libgrpc.so.29"]
        # A sanitizer build's binaries load libasan, which loads libstdc++
        # itself: only a normal build keeps C++ out of the light layer.
        if "libasan.so.8" not in light:
            heavy.append("libstdc++.so.6")
        for lib in heavy:
            self.assertNotIn(lib, light)
        # each library once across the layers
        self.assertEqual(self.libs("runtime") & self.libs("ml"), set())
        self.assertEqual((self.libs("runtime") | self.libs("ml")) & self.libs("grpc"), set())

    def test_root_skeleton(self):
        rt = os.path.join(self.r, "runtime")
        for path in ("usr/lib64/ld-linux-x86-64.so.2", "usr/bin/sh", "usr/local/bin/quern",
                     "usr/local/bin/quern-entrypoint", "etc/nsswitch.conf"):
            self.assertTrue(os.path.exists(os.path.join(rt, path)), path)
        self.assertEqual(os.readlink(os.path.join(rt, "lib64")), "usr/lib64")
        with open(os.path.join(rt, "etc/passwd")) as f:
            self.assertIn("quern:x:10001:10001:", f.read())
        self.assertEqual(os.stat(os.path.join(rt, "tmp")).st_mode & 0o7777, 0o1777)
        self.assertTrue(os.path.isdir(os.path.join(self.r, "data")))
        self.assertFalse(os.path.exists(os.path.join(rt, "usr/bin/apt-get")))

    def test_fails_on_a_missing_binary(self):
        p = subprocess.run(["sh", os.path.join(CONTAINER, "mkroot.sh"), os.path.join(self.out, "x"),
                            os.path.join(self.out, "nothing-here")], capture_output=True, text=True)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("missing", p.stderr)


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
