#!/usr/bin/python3
"""prune_k8s_schemas.py SRC DEST - the Kubernetes schemas the deploy tests need.

SRC holds the Kubernetes OpenAPI v3 documents (api__v1_openapi.json,
apis__apps__v1_openapi.json, ...; see SRC/SOURCE.txt). The full set is about
4 MB, mostly descriptions and API paths the tests never read. For each document
that defines one of KINDS, this writes DEST/<same name> holding only
components.schemas, only the schemas reachable through $ref from those kinds,
and no "description" anywhere (nor the paths). Everything else is kept byte
for byte in meaning: types, formats, required lists, defaults, allOf/oneOf,
x-kubernetes-* extensions. The output is deterministic (sorted keys, fixed
separators), so running it again over the same SRC gives the same files;
tests/deploy/test_k8s.py checks that when SRC is at hand.

Add a kind here when deploy/k8s starts using it, and run:
  /usr/bin/python3 tests/deploy/prune_k8s_schemas.py ../shared/k8s-schemas/v1.35 tests/data/k8s-schemas/v1.35
"""
import json
import os
import sys

# (group, version, kind) of every object deploy/k8s renders.
KINDS = {
    ("", "v1", "ConfigMap"),
    ("", "v1", "Namespace"),
    ("", "v1", "PersistentVolumeClaim"),
    ("", "v1", "Secret"),
    ("", "v1", "Service"),
    ("", "v1", "ServiceAccount"),
    ("apps", "v1", "Deployment"),
    ("apps", "v1", "StatefulSet"),
    ("autoscaling", "v2", "HorizontalPodAutoscaler"),
    ("policy", "v1", "PodDisruptionBudget"),
}

REF = "#/components/schemas/"


def strip(node):
    """node without "description" keys, recursively (property names kept)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "description" and isinstance(v, str):
                continue
            # "properties" maps field names to schemas: a field may be named
            # "description", so keep its keys and strip inside the values.
            out[k] = {pk: strip(pv) for pk, pv in v.items()} if k == "properties" else strip(v)
        return out
    if isinstance(node, list):
        return [strip(x) for x in node]
    return node


def refs(node, found):
    if isinstance(node, dict):
        r = node.get("$ref")
        if isinstance(r, str) and r.startswith(REF):
            found.add(r[len(REF):])
        for v in node.values():
            refs(v, found)
    elif isinstance(node, list):
        for x in node:
            refs(x, found)


def prune(doc):
    schemas = doc["components"]["schemas"]
    roots = set()
    for name, s in schemas.items():
        for gvk in s.get("x-kubernetes-group-version-kind", []):
            if (gvk.get("group", ""), gvk.get("version"), gvk.get("kind")) in KINDS:
                roots.add(name)
    if not roots:
        return None
    keep, todo = set(), sorted(roots)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        if name not in schemas:
            raise SystemExit(f"dangling $ref {REF}{name}")
        keep.add(name)
        found = set()
        refs(schemas[name], found)
        todo.extend(sorted(found - keep))
    return {"components": {"schemas": {n: strip(schemas[n]) for n in sorted(keep)}},
            "info": doc.get("info", {}), "openapi": doc.get("openapi", "3.0.0")}


def main(argv):
    if len(argv) != 3:
        raise SystemExit(__doc__)
    src, dest = argv[1], argv[2]
    os.makedirs(dest, exist_ok=True)
    for fn in sorted(os.listdir(src)):
        if not fn.endswith(".json"):
            continue
        with open(os.path.join(src, fn), encoding="utf-8") as f:
            out = prune(json.load(f))
        if out is None:
            continue
        with open(os.path.join(dest, fn), "w", encoding="utf-8") as f:
            json.dump(out, f, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            f.write("\n")
        print(f"{fn}: {len(out['components']['schemas'])} schemas")


if __name__ == "__main__":
    main(sys.argv)
