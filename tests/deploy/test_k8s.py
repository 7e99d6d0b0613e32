#!/usr/bin/python3
"""test_k8s.py - deploy/k8s renders with kubectl kustomize, and what it renders
is valid Kubernetes 1.35 and says what DESIGN.md says.

Both overlays (dev, prod) are rendered with `kubectl kustomize` ($QUERN_KUBECTL
or kubectl on PATH; works with Debian's kubectl 1.20, kustomize v2.0.3, and
current ones). Every rendered object is validated strictly (unknown fields are
errors) against the OpenAPI v3 schemas in tests/data/k8s-schemas/v1.35 by
k8s_schema.py, and the validator is shown to reject what it must. Then the
wiring: names, ports, probes, env, HPAs, PDBs, security, per overlay.
Rendering tests are skipped when no kubectl is installed.
"""
import copy
import filecmp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import k8s_schema  # noqa: E402

SRC = os.environ.get("QUERN_SOURCE_DIR", os.path.abspath(os.path.join(HERE, "..", "..")))
SCHEMAS = os.path.join(SRC, "tests", "data", "k8s-schemas", "v1.35")
K8S = os.path.join(SRC, "deploy", "k8s")

# DESIGN.md section 1: service -> HTTP port (serve's gRPC is 7706).
PORTS = {"registry": 7701, "ingest": 7702, "prep": 7703, "train": 7704,
         "serve": 7705, "monitor": 7707, "alert": 7708}
GRPC_PORT = 7706
NO_DB = {"serve"}  # serve keeps no metadata store of its own

_schemas = None


def schemas():
    global _schemas
    if _schemas is None:
        _schemas = k8s_schema.Schemas(SCHEMAS)
    return _schemas


def kubectl():
    k = os.environ.get("QUERN_KUBECTL") or shutil.which("kubectl")
    return k if k and os.access(k, os.X_OK) else None


_renders = {}


def render(overlay):
    if overlay not in _renders:
        k = kubectl()
        if not k:
            raise unittest.SkipTest("no kubectl: install kubernetes-client (scripts/deps.sh)")
        out = subprocess.run([k, "kustomize", os.path.join(K8S, "overlays", overlay)],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise AssertionError(f"kubectl kustomize {overlay} failed:\n{out.stderr}")
        _renders[overlay] = [d for d in yaml.safe_load_all(out.stdout) if d]
    return _renders[overlay]


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def minimal_deployment():
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "x", "labels": {"a": "b"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{
                    "name": "c", "image": "quern",
                    "ports": [{"name": "http", "containerPort": 7701}],
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}},
                    "resources": {"limits": {"cpu": "500m", "memory": 1073741824}},
                }]},
            },
        },
    }


class ValidatorBites(unittest.TestCase):
    """The validator must fail the things a strict validator fails."""

    def errors(self, obj):
        return schemas().validate(obj)

    def test_accepts_a_valid_object(self):
        self.assertEqual(self.errors(minimal_deployment()), [])

    def test_unknown_field_rejected_at_every_depth(self):
        for where in ("top", "meta", "spec", "container", "probe"):
            d = minimal_deployment()
            c = d["spec"]["template"]["spec"]["containers"][0]
            {"top": d, "meta": d["metadata"], "spec": d["spec"], "container": c,
             "probe": c["readinessProbe"]["httpGet"]}[where]["bogusField"] = 1
            errs = self.errors(d)
            self.assertTrue(any("unknown field 'bogusField'" in e for e in errs), (where, errs))

    def test_misspelt_field_rejected(self):
        d = minimal_deployment()
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
        self.assertIn("unknown field 'imagePullPolcy'", " ".join(self.errors(d)))

    def test_wrong_types_rejected(self):
        cases = [
            (lambda d: d["spec"].__setitem__("replicas", "2"), "spec.replicas: expected integer"),
            (lambda d: d["spec"].__setitem__("replicas", True), "spec.replicas: expected integer"),
            (lambda d: d["metadata"]["labels"].__setitem__("a", 3), "labels.a: expected string"),
            (lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__("ports", {}),
             "ports: expected array"),
            # IntOrString and Quantity are oneOf integer|string and string|number.
            (lambda d: d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
             .__setitem__("port", 1.5), "allowed forms"),
            (lambda d: d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
             .__setitem__("cpu", [1]), "allowed forms"),
            (lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0]
             .__setitem__("containerPort", 2**40), "out of int32 range"),
        ]
        for mutate, expect in cases:
            d = minimal_deployment()
            mutate(d)
            errs = self.errors(d)
            self.assertTrue(any(expect in e for e in errs), (expect, errs))

    def test_missing_required_and_duplicates_rejected(self):
        d = minimal_deployment()
        del d["spec"]["template"]["spec"]["containers"][0]["name"]
        self.assertIn("required field 'name' is missing", " ".join(self.errors(d)))
        d = minimal_deployment()
        c = d["spec"]["template"]["spec"]["containers"][0]
        c["env"] = [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]
        self.assertIn("duplicate item", " ".join(self.errors(d)))

    def test_unknown_kind_and_bad_base64_rejected(self):
        self.assertIn("no schema", " ".join(self.errors({"apiVersion": "apps/v1", "kind": "Deploymnet"})))
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "not base64!"}}
        self.assertIn("not base64", " ".join(self.errors(secret)))
        secret["data"]["k"] = "dG9rZW4="
        self.assertEqual(self.errors(secret), [])


class SchemaFiles(unittest.TestCase):
    def test_attribution_and_size(self):
        src = os.path.join(SCHEMAS, "SOURCE.txt")
        self.assertTrue(os.path.exists(src))
        with open(src, encoding="utf-8") as f:
            text = f.read()
        self.assertIn("Apache License, Version 2.0", text)
        size = sum(os.path.getsize(os.path.join(SCHEMAS, f)) for f in os.listdir(SCHEMAS))
        self.assertLess(size, 300_000, "the carried schemas should stay small (pruned)")

    def test_pruned_copy_matches_its_source(self):
        # Where the full upstream documents are at hand (the shared checkout
        # beside the repository), pruning them again gives the same bytes.
        cands = [os.environ.get("QUERN_K8S_SCHEMAS_SRC", ""),
                 os.path.join(SRC, "..", "shared", "k8s-schemas", "v1.35"),
                 os.path.join(SRC, "..", "..", "shared", "k8s-schemas", "v1.35")]
        full = next((c for c in cands if c and os.path.isdir(c)), None)
        if not full:
            self.skipTest("full upstream schemas not present")
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, os.path.join(HERE, "prune_k8s_schemas.py"), full, tmp],
                           check=True, capture_output=True)
            names = sorted(f for f in os.listdir(tmp))
            self.assertEqual(names, sorted(f for f in os.listdir(SCHEMAS) if f.endswith(".json")))
            for n in names:
                self.assertTrue(filecmp.cmp(os.path.join(tmp, n), os.path.join(SCHEMAS, n), shallow=False), n)


class Kustomizations(unittest.TestCase):
    def test_old_kustomize_compatible(self):
        # kubectl 1.20 (Debian 12) embeds kustomize v2.0.3, which knows none of these.
        for root, _, files in os.walk(K8S):
            if "kustomization.yaml" in files:
                with open(os.path.join(root, "kustomization.yaml"), encoding="utf-8") as f:
                    k = yaml.safe_load(f)
                for key in ("labels", "replicas", "components", "patches", "sortOptions"):
                    self.assertNotIn(key, k, f"{root}: {key} needs a newer kustomize")

    def test_dev_postgres_init_matches_compose(self):
        self.assertTrue(filecmp.cmp(os.path.join(SRC, "deploy", "postgres", "init.sql"),
                                    os.path.join(K8S, "overlays", "dev", "postgres-init.sql"),
                                    shallow=False))


class Rendered:
    """Checks shared by both overlays; subclasses set OVERLAY."""
    OVERLAY = None

    def docs(self):
        return render(self.OVERLAY)

    def test_every_object_is_valid(self):
        errs = []
        for d in self.docs():
            errs += schemas().validate(d)
        self.assertEqual(errs, [])
        kinds = {d["kind"] for d in self.docs()}
        for k in ("Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler",
                  "PodDisruptionBudget", "Namespace", "ServiceAccount"):
            self.assertIn(k, kinds)

    def test_one_namespace_for_everything(self):
        ns = by_kind(self.docs(), "Namespace")
        self.assertEqual(len(ns), 1)
        (name,) = ns
        for d in self.docs():
            if d["kind"] != "Namespace":
                self.assertEqual(d["metadata"].get("namespace"), name, d["metadata"]["name"])

    def container(self, svc):
        dep = by_kind(self.docs(), "Deployment")[f"quern-{svc}"]
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        return dep, c

    def test_deployment_and_service_per_service(self):
        deps, svcs = by_kind(self.docs(), "Deployment"), by_kind(self.docs(), "Service")
        for svc, port in PORTS.items():
            name = f"quern-{svc}"
            self.assertIn(name, deps)
            self.assertIn(name, svcs)
            dep, c = self.container(svc)
            self.assertEqual(c["args"], [name])
            env = {e["name"]: e for e in c["env"]}
            self.assertEqual(env["QUERN_LISTEN"]["value"], f"0.0.0.0:{port}")
            cports = {p["name"]: p["containerPort"] for p in c["ports"]}
            self.assertEqual(cports["http"], port)
            sports = {p["name"]: p for p in svcs[name]["spec"]["ports"]}
            self.assertEqual(sports["http"]["port"], port)
            self.assertEqual(sports["http"]["targetPort"], "http")
            # The Service and the Deployment select the pods the template makes.
            labels = dep["spec"]["template"]["metadata"]["labels"]
            for sel in (svcs[name]["spec"]["selector"], dep["spec"]["selector"]["matchLabels"]):
                self.assertTrue(sel and all(labels.get(k) == v for k, v in sel.items()), name)
            self.assertEqual(dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"], str(port))
        _, c = self.container("serve")
        self.assertEqual({p["name"]: p["containerPort"] for p in c["ports"]}["grpc"], GRPC_PORT)
        self.assertEqual({e["name"]: e.get("value") for e in c["env"]}["QUERN_GRPC_LISTEN"], f"0.0.0.0:{GRPC_PORT}")
        self.assertEqual({p["name"]: p["port"] for p in svcs["quern-serve"]["spec"]["ports"]}["grpc"], GRPC_PORT)

    def test_probes(self):
        for svc in PORTS:
            _, c = self.container(svc)
            self.assertEqual(c["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "http"})
            self.assertEqual(c["startupProbe"]["httpGet"]["path"], "/healthz")
            if svc == "serve":
                self.assertEqual(c["readinessProbe"]["grpc"], {"port": GRPC_PORT})
            else:
                self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "http"})

    def test_security_and_resources(self):
        for svc in PORTS:
            dep, c = self.container(svc)
            pod = dep["spec"]["template"]["spec"]
            self.assertTrue(pod["securityContext"]["runAsNonRoot"])
            self.assertEqual(pod["securityContext"]["runAsUser"], 10001)
            self.assertFalse(pod["automountServiceAccountToken"])
            self.assertTrue(c["securityContext"]["readOnlyRootFilesystem"])
            self.assertFalse(c["securityContext"]["allowPrivilegeEscalation"])
            self.assertEqual(c["securityContext"]["capabilities"]["drop"], ["ALL"])
            for k in ("requests", "limits"):
                self.assertEqual(set(c["resources"][k]), {"cpu", "memory"}, svc)
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            vols = {v["name"]: v for v in pod["volumes"]}
            self.assertIn("/data", mounts)
            self.assertIn("/tmp", mounts)
            self.assertEqual(vols[mounts["/run/secrets/quern"]]["secret"]["secretName"], "quern-token")

    def test_env_references_resolve(self):
        docs = self.docs()
        cms, secrets = by_kind(docs, "ConfigMap"), by_kind(docs, "Secret")
        for svc in PORTS:
            _, c = self.container(svc)
            defined = set()
            for ef in c["envFrom"]:
                cm = cms[ef["configMapRef"]["name"]]
                defined |= set(cm["data"])
            for e in c["env"]:
                for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", e.get("value", "")):
                    self.assertIn(ref, defined, f"{svc}: {e['name']} uses $({ref}) before it is defined")
                skr = e.get("valueFrom", {}).get("secretKeyRef")
                if skr:
                    self.assertIn(skr["name"], secrets)
                defined.add(e["name"])
            env = {e["name"]: e.get("value") for e in c["env"]}
            self.assertEqual(env["QUERN_TOKEN_FILE"], "/run/secrets/quern/token")
            self.assertTrue(env["QUERN_BUS"].startswith("amqp://"))
            db = env.get(f"QUERN_{svc.upper()}_DB")
            if svc in NO_DB:
                self.assertIsNone(db)
            else:
                self.assertRegex(db, rf"^postgres://.*\?schema={svc}$")
                self.assertIn("PGPASSWORD", env)
            self.assertIn("QUERN_REGISTRY", defined)
        (cm,) = [v for k, v in cms.items() if k.startswith("quern-config")]
        self.assertEqual(cm["data"]["QUERN_REGISTRY"], "http://quern-registry:7701")
        self.assertEqual(cm["data"]["QUERN_INGEST"], "http://quern-ingest:7702")

    def test_hpa_and_pdb(self):
        docs = self.docs()
        hpas = by_kind(docs, "HorizontalPodAutoscaler")
        self.assertEqual(set(hpas), {"quern-serve", "quern-train"})
        for name, h in hpas.items():
            self.assertEqual(h["spec"]["scaleTargetRef"], {"apiVersion": "apps/v1", "kind": "Deployment", "name": name})
            self.assertLessEqual(h["spec"]["minReplicas"], h["spec"]["maxReplicas"])
        pdbs = by_kind(docs, "PodDisruptionBudget")
        self.assertIn("quern-serve", pdbs)
        deps = by_kind(docs, "Deployment")
        for name, p in pdbs.items():
            spec = p["spec"]
            self.assertEqual(("minAvailable" in spec) + ("maxUnavailable" in spec), 1, name)
            labels = deps[name]["spec"]["template"]["metadata"]["labels"]
            sel = spec["selector"]["matchLabels"]
            self.assertTrue(all(labels.get(k) == v for k, v in sel.items()), name)
            if "minAvailable" in spec:
                # A budget that can never be met blocks every drain.
                replicas = hpas[name]["spec"]["minReplicas"] if name in hpas else deps[name]["spec"]["replicas"]
                self.assertLess(spec["minAvailable"], replicas, name)

    def test_registry_storage(self):
        docs = self.docs()
        dep, _ = self.container("registry")
        vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        claim = vols["data"]["persistentVolumeClaim"]["claimName"]
        self.assertIn(claim, by_kind(docs, "PersistentVolumeClaim"))
        return dep, by_kind(docs, "PersistentVolumeClaim")[claim]


class Dev(Rendered, unittest.TestCase):
    OVERLAY = "dev"

    def test_backends_run_in_the_namespace(self):
        docs = self.docs()
        sts, svcs = by_kind(docs, "StatefulSet"), by_kind(docs, "Service")
        self.assertEqual(set(sts), {"rabbitmq", "postgres"})
        for name, port in (("rabbitmq", 5672), ("postgres", 5432)):
            self.assertEqual(sts[name]["spec"]["replicas"], 1)
            self.assertIn(port, [p["port"] for p in svcs[name]["spec"]["ports"]])
        (cm,) = [v for k, v in by_kind(docs, "ConfigMap").items() if k.startswith("quern-config")]
        self.assertEqual(cm["data"]["RABBITMQ_HOST"], "rabbitmq")
        self.assertEqual(cm["data"]["POSTGRES_HOST"], "postgres")
        secrets = by_kind(docs, "Secret")
        self.assertTrue(secrets["quern-token"]["stringData"]["token"])
        self.assertEqual(set(secrets["quern-backends"]["stringData"]),
                         {"RABBITMQ_USER", "RABBITMQ_PASSWORD", "PGUSER", "PGPASSWORD"})

    def test_single_node_scale(self):
        for name, d in by_kind(self.docs(), "Deployment").items():
            self.assertEqual(d["spec"]["replicas"], 1, name)
        dep, pvc = self.test_registry_storage()
        self.assertEqual(pvc["spec"]["accessModes"], ["ReadWriteOnce"])
        self.assertEqual(dep["spec"]["strategy"]["type"], "Recreate")


class Prod(Rendered, unittest.TestCase):
    OVERLAY = "prod"

    def test_external_backends_and_no_default_credentials(self):
        docs = self.docs()
        self.assertEqual(by_kind(docs, "StatefulSet"), {})
        (cm,) = [v for k, v in by_kind(docs, "ConfigMap").items() if k.startswith("quern-config")]
        for key in ("RABBITMQ_HOST", "POSTGRES_HOST"):
            self.assertIn(".", cm["data"][key], "prod points at a service outside the namespace")
        self.assertTrue(cm["data"]["QUERN_OTLP_ENDPOINT"].endswith(":4318"))
        for s in by_kind(docs, "Secret").values():
            self.assertFalse(s.get("data") or s.get("stringData"), "prod ships no secret values")

    def test_scaled_out(self):
        deps = by_kind(self.docs(), "Deployment")
        for name, d in deps.items():
            if name not in ("quern-train",):
                self.assertGreaterEqual(d["spec"]["replicas"], 2, name)
        dep, pvc = self.test_registry_storage()
        self.assertEqual(pvc["spec"]["accessModes"], ["ReadWriteMany"])
        self.assertEqual(dep["spec"]["strategy"]["type"], "RollingUpdate")
        hpas = by_kind(self.docs(), "HorizontalPodAutoscaler")
        self.assertGreaterEqual(hpas["quern-serve"]["spec"]["minReplicas"], 3)
        pod = deps["quern-serve"]["spec"]["template"]["spec"]
        self.assertTrue(pod["topologySpreadConstraints"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
