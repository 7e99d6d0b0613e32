#!/usr/bin/python3
"""test_compose.py - deploy/compose.yaml and the files it mounts say what
DESIGN.md says: every service in its own container from its own image, with
its port, health check, volume, storage URL and start order; RabbitMQ,
PostgreSQL (a schema per service) and Prometheus from images made here,
Prometheus scraping every service, tracing to a configurable OTLP endpoint
(Jaeger only in the "tracing" profile).

The file is parsed (PyYAML, merge keys resolved as compose resolves them) and
checked field by field; the ${VAR} interpolation is checked against the compose
rules. Where docker-compose or `docker compose` is installed, `config -q` runs
as well. tests/deploy/stack_loop.py (`make test-deploy`) runs the stack.
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
COMPOSE = os.path.join(DEPLOY, "compose.yaml")

PORTS = {"registry": 7701, "ingest": 7702, "prep": 7703, "train": 7704,
         "serve": 7705, "monitor": 7707, "alert": 7708, "console": 7709}
GRPC_PORT = 7706
NO_DB = {"serve", "console"}
NO_BUS = {"console"}  # the console only proxies HTTP to the others
# What each service talks to (DESIGN.md section 1), so must start after.
NEEDS = {"registry": set(), "ingest": {"registry"}, "prep": {"registry", "ingest"},
         "train": {"registry"}, "serve": {"registry"}, "monitor": {"registry"},
         "alert": {"registry"}, "console": {"registry"}}


def load():
    with open(COMPOSE, encoding="utf-8") as f:
        text = f.read()
    return text, yaml.safe_load(text)


class Compose(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.text, cls.doc = load()
        cls.services = cls.doc["services"]

    def test_interpolation_is_valid(self):
        # Compose: "$$" is a literal $, otherwise $NAME or ${NAME[:-|-|:?|?]...}.
        text = re.sub(r"^\s*#.*$", "", self.text, flags=re.M).replace("$$", "")
        for m in re.finditer(r"\$", text):
            rest = text[m.end():]
            ok = re.match(r"[A-Za-z_][A-Za-z0-9_]*", rest) or \
                re.match(r"\{[A-Za-z_][A-Za-z0-9_]*((:?[-?])[^}$]*)?\}", rest)
            self.assertTrue(ok, f"bad interpolation near: {text[m.start():m.start() + 40]!r}")

    def test_every_service_in_its_own_container(self):
        expected = {f"quern-{s}" for s in PORTS} | {"quern", "rabbitmq", "postgres", "prometheus", "jaeger"}
        self.assertEqual(set(self.services), expected)
        for svc, port in PORTS.items():
            s = self.services[f"quern-{svc}"]
            self.assertEqual(s["image"], f"quern-{svc}:${{QUERN_TAG:-latest}}")
            self.assertEqual(s["command"][0], f"quern-{svc}")
            self.assertEqual(s["command"][1:3], ["--listen", f"0.0.0.0:{port}"])
            self.assertIn(f"${{QUERN_{svc.upper()}_PORT:-{port}}}:{port}", s["ports"])
            self.assertIn(f"{svc}-data:/data", s["volumes"])
            self.assertIn(f"{svc}-data", self.doc["volumes"])
            self.assertTrue(s["read_only"])
            self.assertIn("/tmp", s["tmpfs"])
            self.assertEqual(s["user"], "10001:10001")
            self.assertEqual(s["restart"], "unless-stopped")
        serve = self.services["quern-serve"]
        self.assertIn(f"${{QUERN_SERVE_GRPC_PORT:-{GRPC_PORT}}}:{GRPC_PORT}", serve["ports"])
        self.assertIn(f"0.0.0.0:{GRPC_PORT}", serve["command"])
        # The CLI container is on demand only.
        self.assertEqual(self.services["quern"]["profiles"], ["cli"])

    def test_health_checks(self):
        for svc, port in PORTS.items():
            test = self.services[f"quern-{svc}"]["healthcheck"]["test"]
            self.assertEqual(test[:3], ["CMD", "quern", "healthcheck"])
            self.assertEqual(test[-1], f"http://127.0.0.1:{port}")
            # Readiness, except serve: its /readyz waits for models, which is no fault.
            self.assertEqual("--ready" in test, svc != "serve", svc)
        for other in ("rabbitmq", "postgres", "prometheus"):
            self.assertIn("healthcheck", self.services[other], other)

    def test_environment(self):
        for svc in PORTS:
            env = self.services[f"quern-{svc}"]["environment"]
            if svc in NO_BUS:
                self.assertNotIn("QUERN_BUS", env, svc)
            else:
                self.assertRegex(env["QUERN_BUS"], r"^amqp://quern:[^@]+@rabbitmq:5672/")
            self.assertEqual(env["QUERN_REGISTRY"], "http://quern-registry:7701")
            self.assertEqual(env["QUERN_OTLP_ENDPOINT"], "${QUERN_OTLP_ENDPOINT:-}")
            self.assertEqual(env["QUERN_DATA"], "/data")
            self.assertIn(":?", env["QUERN_TOKEN"], "the token has no default: compose refuses to start without one")
            db = env.get(f"QUERN_{svc.upper()}_DB")
            if svc in NO_DB:
                self.assertIsNone(db)
            else:
                self.assertRegex(db, rf"^postgres://quern:[^@]+@postgres:5432/quern\?schema={svc}$")
        self.assertEqual(self.services["quern-prep"]["environment"]["QUERN_INGEST"], "http://quern-ingest:7702")
        cli = self.services["quern"]["environment"]
        for svc, port in PORTS.items():
            self.assertEqual(cli[f"QUERN_{svc.upper()}"], f"http://quern-{svc}:{port}")

    def test_start_order(self):
        for name, s in self.services.items():
            for dep, cond in s.get("depends_on", {}).items():
                self.assertIn(dep, self.services, name)
                if cond["condition"] == "service_healthy":
                    self.assertIn("healthcheck", self.services[dep], f"{name} waits on {dep}'s health")
        for svc, needs in NEEDS.items():
            deps = self.services[f"quern-{svc}"]["depends_on"]
            want = (set() if svc in NO_BUS else {"rabbitmq"}) | {f"quern-{n}" for n in needs} | (set() if svc in NO_DB else {"postgres"})
            for w in want:
                self.assertEqual(deps.get(w, {}).get("condition"), "service_healthy", f"{svc} -> {w}")
        # A start order exists (no cycle).
        order, left = [], dict(self.services)
        while left:
            ready = [n for n, s in left.items() if all(d in order for d in s.get("depends_on", {}))]
            self.assertTrue(ready, f"dependency cycle among {sorted(left)}")
            for n in sorted(ready):
                order.append(n)
                del left[n]
        self.assertLess(order.index("quern-registry"), order.index("quern-ingest"))
        self.assertLess(order.index("quern-ingest"), order.index("quern-prep"))

    def test_backends(self):
        rmq, pg = self.services["rabbitmq"], self.services["postgres"]
        self.assertEqual(rmq["image"], "quern-rabbitmq:${QUERN_TAG:-latest}")
        self.assertEqual(rmq["environment"]["RABBITMQ_DEFAULT_USER"], "quern")
        self.assertEqual(pg["image"], "quern-postgres:${QUERN_TAG:-latest}")
        self.assertEqual(self.services["prometheus"]["image"], "quern-prometheus:${QUERN_TAG:-latest}")
        for b in ("rabbitmq", "postgres", "prometheus"):
            self.assertTrue(os.path.exists(os.path.join(DEPLOY, b, "Containerfile")), b)
        self.assertEqual(pg["environment"]["POSTGRES_DB"], "quern")
        init = [v for v in pg["volumes"] if "docker-entrypoint-initdb.d" in v]
        self.assertEqual(len(init), 1)
        host = os.path.join(DEPLOY, init[0].split(":")[0])
        with open(host, encoding="utf-8") as f:
            sql = f.read()
        made = set(re.findall(r"CREATE SCHEMA IF NOT EXISTS (\w+)", sql))
        self.assertEqual(made, set(PORTS) - NO_DB)
        jaeger = self.services["jaeger"]
        self.assertEqual(jaeger["profiles"], ["tracing"])
        self.assertEqual(jaeger["environment"]["COLLECTOR_OTLP_ENABLED"], "true")
        self.assertIn("4318:4318", jaeger["ports"])
        for name, svc in self.services.items():
            self.assertNotIn("jaeger", svc.get("depends_on", {}), name)

    def test_prometheus_scrapes_every_service(self):
        prom = self.services["prometheus"]
        mount = [v for v in prom["volumes"] if v.endswith("/etc/prometheus/prometheus.yml:ro")]
        self.assertEqual(len(mount), 1)
        path = os.path.join(DEPLOY, mount[0].split(":")[0])
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
        targets = set()
        for job in cfg["scrape_configs"]:
            if job["job_name"] == "prometheus":
                continue
            self.assertEqual(job.get("metrics_path", "/metrics"), "/metrics")
            for sc in job["static_configs"]:
                targets |= set(sc["targets"])
        self.assertEqual(targets, {f"quern-{s}:{p}" for s, p in PORTS.items()})
        promtool = shutil.which("promtool")
        if promtool:
            out = subprocess.run([promtool, "check", "config", path], capture_output=True, text=True)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_engine_config_if_available(self):
        docker = shutil.which("docker")
        engines = []
        if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
            engines.append([docker, "compose"])
        if shutil.which("docker-compose"):
            engines.append(["docker-compose"])
        if not engines:
            self.skipTest("neither docker compose nor docker-compose here")
        env = dict(os.environ, QUERN_TOKEN="test", QUERN_LOOP_RULES="/dev/null")
        for cmd in engines:
            for files in (["-f", COMPOSE], ["-f", COMPOSE, "-f", os.path.join(HERE, "compose.loop.yaml")]):
                out = subprocess.run(cmd + files + ["config", "-q"], capture_output=True, text=True, env=env)
                self.assertEqual(out.returncode, 0, f"{cmd} {files}: {out.stderr}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
