#!/usr/bin/python3
"""test_compose_k8s.py - deploy/compose.yaml and deploy/k8s say the same thing
where they overlap. `make test-deploy` proves the compose stack runs; no
cluster runs here, so this test makes sure the manifests declare what that run
proves. For each service, compose against the base and both overlays rendered
with `kubectl kustomize`:

- image: the same per-service image (quern-<service>);
- ports: the container ports and the listen addresses (compose's --listen /
  --grpc-listen flags, k8s's QUERN_LISTEN / QUERN_GRPC_LISTEN);
- probes: compose's health check `quern healthcheck [--ready] URL` asks the
  path and port that k8s's readiness (with --ready) or liveness probe asks;
- settings: the QUERN_* names compose gives a service, k8s gives it too (env,
  the shared ConfigMap, or a flag), and k8s gives nothing compose does not,
  beyond the other services' URLs of the shared ConfigMap; the token is
  QUERN_TOKEN in one and QUERN_TOKEN_FILE in the other; the store URL names
  the service's own schema on both;
- non-root uid 10001, read-only root filesystem, /tmp and /data writable, no
  privilege escalation, restarted when the process dies;
- graceful stop: compose's stop_grace_period equals terminationGracePeriodSeconds,
  and both leave room for the preStop pause + the services' SIGTERM drain
  (QUERN_DRAIN_TIMEOUT, default read from src/core/config.h) + the 3 s span flush;
- every command k8s executes in a container exists in the image (the images
  hold only quern, quern-<service> and sh: no `sleep`).
A mismatch fails with the service and the two values.
"""
import os
import re
import shutil
import subprocess
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("QUERN_SOURCE_DIR", os.path.abspath(os.path.join(HERE, "..", "..")))
DEPLOY = os.path.join(SRC, "deploy")
SERVICES = ["registry", "ingest", "prep", "train", "serve", "monitor", "alert", "console"]
IN_IMAGE = {"quern", "sh", "/bin/sh"} | {f"quern-{s}" for s in SERVICES}
OTEL_FLUSH_S = 3  # src/core/service.c: OTEL_FLUSH_MS


def duration_s(v):
    m = re.fullmatch(r"(\d+)(ms|s|m)?", str(v))
    assert m, f"unreadable duration {v!r}"
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n / 1000 if unit == "ms" else n * 60 if unit == "m" else n


def drain_default_s():
    with open(os.path.join(SRC, "src", "core", "config.h"), encoding="utf-8") as f:
        m = re.search(r'"drain-timeout",\s*"QUERN_DRAIN_TIMEOUT",\s*QN_CFG_DURATION,\s*"([^"]+)"', f.read())
    assert m, "QUERN_DRAIN_TIMEOUT's default not found in src/core/config.h"
    return duration_s(m.group(1))


def flags(argv):
    """--name value / --name=value pairs of a command line."""
    out, i = {}, 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--"):
            if "=" in a:
                k, v = a[2:].split("=", 1)
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                k, v = a[2:], argv[i + 1]
                i += 1
            else:
                k, v = a[2:], True
            out[k] = v
        i += 1
    return out


def port_of(addr):
    return int(str(addr).rsplit(":", 1)[1])


class Compose:
    def __init__(self):
        with open(os.path.join(DEPLOY, "compose.yaml"), encoding="utf-8") as f:
            self.doc = yaml.safe_load(f)

    def service(self, s):
        c = self.doc["services"][f"quern-{s}"]
        cmd = c["command"]
        f = flags(cmd[1:])
        settings = dict(c.get("environment") or {})
        if "listen" in f:
            settings["QUERN_LISTEN"] = f["listen"]
        if "grpc-listen" in f:
            settings["QUERN_GRPC_LISTEN"] = f["grpc-listen"]
        hc = c["healthcheck"]["test"]
        assert hc[:3] == ["CMD", "quern", "healthcheck"], hc
        ready = "--ready" in hc
        url = hc[-1]
        return {
            "image": re.sub(r":\$\{[^}]*\}$|:[^/:]+$", "", c["image"]),
            "program": cmd[0],
            "ports": {int(p.rsplit(":", 1)[1]) for p in c.get("ports", [])},
            "settings": settings,
            "probe": ("readiness" if ready else "liveness", "/readyz" if ready else "/healthz", port_of(url)),
            "user": str(c.get("user", "")),
            "read_only": c.get("read_only") is True,
            "tmp": "/tmp" in (c.get("tmpfs") or []),
            "data": any(str(v).split(":")[1] == "/data" for v in c.get("volumes", [])),
            "no_new_privs": "no-new-privileges:true" in (c.get("security_opt") or []),
            "restart": c.get("restart"),
            "grace": duration_s(c.get("stop_grace_period", "10s")),
        }


def render(path):
    p = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path}: {p.stderr}")
    return [d for d in yaml.safe_load_all(p.stdout) if d]


class K8s:
    def __init__(self, docs):
        self.docs = docs
        cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("quern-config")]
        assert len(cms) == 1, "one quern-config ConfigMap"
        self.config = cms[0]["data"]

    def service(self, s):
        dep = next(d for d in self.docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"quern-{s}")
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        settings = {}
        for ef in c.get("envFrom", []):
            if "configMapRef" in ef:
                settings.update(self.config)
        for e in c.get("env", []):
            settings[e["name"]] = e.get("value", "<from " + ",".join(e.get("valueFrom", {})) + ">")
        probes = {}
        for kind in ("readiness", "liveness", "startup"):
            p = c.get(f"{kind}Probe")
            if not p:
                continue
            if "httpGet" in p:
                port = p["httpGet"]["port"]
                if isinstance(port, str):
                    port = next(x["containerPort"] for x in c["ports"] if x["name"] == port)
                probes[kind] = ("http", p["httpGet"]["path"], port)
            elif "grpc" in p:
                probes[kind] = ("grpc", None, p["grpc"]["port"])
        psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        execs = []
        for kind in ("preStop", "postStart"):
            h = (c.get("lifecycle") or {}).get(kind) or {}
            if "exec" in h:
                execs.append(h["exec"]["command"])
        for kind in ("readiness", "liveness", "startup"):
            p = c.get(f"{kind}Probe") or {}
            if "exec" in p:
                execs.append(p["exec"]["command"])
        pre = (c.get("lifecycle") or {}).get("preStop") or {}
        return {
            "image": c["image"].rsplit("/", 1)[-1].split(":")[0],
            "program": (c.get("args") or c.get("command"))[0],
            "ports": {p["containerPort"] for p in c["ports"]},
            "settings": settings,
            "probes": probes,
            "user": f"{psc.get('runAsUser', csc.get('runAsUser'))}:{psc.get('runAsGroup', csc.get('runAsGroup'))}",
            "non_root": psc.get("runAsNonRoot", csc.get("runAsNonRoot")) is True,
            "read_only": csc.get("readOnlyRootFilesystem") is True,
            "tmp": "/tmp" in mounts and "emptyDir" in vols.get(mounts["/tmp"], {}),
            "data": "/data" in mounts,
            "no_new_privs": csc.get("allowPrivilegeEscalation") is False,
            "restart": pod.get("restartPolicy", "Always"),
            "grace": pod.get("terminationGracePeriodSeconds", 30),
            "pre_stop_s": (pre.get("sleep") or {}).get("seconds", 0),
            "execs": execs,
        }


# Names only one side may give, and why.
K8S_ONLY = {
    # the other services' URLs: one ConfigMap for every pod
    "QUERN_REGISTRY", "QUERN_INGEST", "QUERN_PREP", "QUERN_TRAIN", "QUERN_SERVE", "QUERN_MONITOR",
    "QUERN_ALERT",
}
SAME = {"QUERN_TOKEN_FILE": "QUERN_TOKEN"}  # the token: a variable in compose, a mounted Secret in k8s


@unittest.skipUnless(shutil.which("kubectl"), "kubectl (Debian: kubernetes-client) renders the manifests")
class ComposeMatchesK8s(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.compose = Compose()
        cls.rendered = {name: K8s(render(os.path.join(DEPLOY, "k8s", *path)))
                        for name, path in (("base", ["base"]), ("dev", ["overlays", "dev"]),
                                           ("prod", ["overlays", "prod"]))}

    def each(self):
        return [(name, s, self.compose.service(s), k.service(s))
                for name, k in self.rendered.items() for s in SERVICES]

    def test_image_and_program(self):
        for mf, s, c, k in self.each():
            with self.subTest(manifests=mf, service=s):
                self.assertEqual(c["image"], f"quern-{s}")
                self.assertEqual(k["image"], c["image"])
                self.assertEqual(k["program"], c["program"])

    def test_ports_and_listen_addresses(self):
        for mf, s, c, k in self.each():
            with self.subTest(manifests=mf, service=s):
                self.assertEqual(k["ports"], c["ports"])
                for var in ("QUERN_LISTEN", "QUERN_GRPC_LISTEN"):
                    self.assertEqual(var in k["settings"], var in c["settings"], var)
                    if var in c["settings"]:
                        self.assertEqual(k["settings"][var], c["settings"][var], var)
                        self.assertIn(port_of(c["settings"][var]), c["ports"])

    def test_probes(self):
        for mf, s, c, k in self.each():
            with self.subTest(manifests=mf, service=s):
                kind, path, port = c["probe"]
                self.assertIn(kind, k["probes"], f"compose checks {kind}; k8s has no {kind} probe")
                proto, kpath, kport = k["probes"][kind]
                if proto == "grpc":
                    # serve's readiness over gRPC health: compose checks liveness for serve
                    self.fail(f"compose's {kind} check is HTTP {path}; k8s's is gRPC on {kport}")
                self.assertEqual((kpath, kport), (path, port), f"{kind} probe")
                # liveness is /healthz on both sides whatever compose checks
                self.assertEqual(k["probes"]["liveness"][1:], ("/healthz", port), "liveness probe")

    def test_settings(self):
        for name, s, c, k in self.each():
            with self.subTest(manifests=name, service=s):
                cn = {SAME.get(n, n) for n in c["settings"] if n.startswith("QUERN_")}
                kn = {SAME.get(n, n) for n in k["settings"] if n.startswith("QUERN_")}
                self.assertEqual(cn - kn, set(), "given by compose, not by k8s")
                self.assertEqual(kn - cn - K8S_ONLY, set(), "given by k8s, not by compose")
                own = c["settings"].get(f"QUERN_{s.upper()}_DB")
                if own:
                    self.assertIn(f"schema={s}", own)
                    self.assertIn(f"schema={s}", k["settings"][f"QUERN_{s.upper()}_DB"])
                self.assertEqual(k["settings"]["QUERN_REGISTRY"], c["settings"]["QUERN_REGISTRY"])
                self.assertEqual(k["settings"]["QUERN_DATA"], c["settings"]["QUERN_DATA"])
                if "QUERN_INGEST" in c["settings"]:
                    self.assertEqual(k["settings"]["QUERN_INGEST"], c["settings"]["QUERN_INGEST"])

    def test_non_root_read_only_restarted(self):
        for mf, s, c, k in self.each():
            with self.subTest(manifests=mf, service=s):
                self.assertEqual(c["user"], "10001:10001")
                self.assertEqual(k["user"], c["user"])
                self.assertTrue(k["non_root"])
                self.assertTrue(c["read_only"] and k["read_only"], "read-only root filesystem")
                self.assertTrue(c["tmp"] and k["tmp"], "/tmp writable")
                self.assertTrue(c["data"] and k["data"], "/data a volume")
                self.assertTrue(c["no_new_privs"] and k["no_new_privs"], "no privilege escalation")
                self.assertIn(c["restart"], ("always", "unless-stopped"))
                self.assertEqual(k["restart"], "Always")

    def test_graceful_stop(self):
        drain = drain_default_s()
        for mf, s, c, k in self.each():
            with self.subTest(manifests=mf, service=s):
                d = duration_s(c["settings"].get("QUERN_DRAIN_TIMEOUT", drain))
                kd = duration_s(k["settings"].get("QUERN_DRAIN_TIMEOUT", drain))
                self.assertEqual(k["grace"], c["grace"], "terminationGracePeriodSeconds vs stop_grace_period")
                self.assertGreaterEqual(c["grace"], d + OTEL_FLUSH_S, "compose: drain + span flush")
                self.assertGreaterEqual(k["grace"], k["pre_stop_s"] + kd + OTEL_FLUSH_S,
                                        "k8s: preStop + drain + span flush")

    def test_commands_exist_in_the_image(self):
        for mf, s, c, k in self.each():
            with self.subTest(manifests=mf, service=s):
                for cmd in k["execs"]:
                    self.assertIn(cmd[0], IN_IMAGE, f"k8s runs {cmd} in a container that has no {cmd[0]}")


class Parsing(unittest.TestCase):
    """The comparison's own helpers can tell values apart."""

    def test_duration_and_flags(self):
        self.assertEqual([duration_s(v) for v in ("30s", "60", "1m", "500ms")], [30, 60, 60, 0.5])
        self.assertEqual(flags(["--listen", "0.0.0.0:1", "--x=2", "--ready"]),
                         {"listen": "0.0.0.0:1", "x": "2", "ready": True})
        self.assertGreater(drain_default_s(), 0)

    def test_a_mismatch_is_seen(self):
        c = Compose()
        c.doc["services"]["quern-train"]["stop_grace_period"] = "31s"
        c.doc["services"]["quern-train"]["environment"]["QUERN_EXTRA"] = "1"
        got = c.service("train")
        self.assertEqual(got["grace"], 31)
        self.assertIn("QUERN_EXTRA", got["settings"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
