"""k8s_schema.py - a small strict validator of Kubernetes objects against the
Kubernetes OpenAPI v3 documents (tests/data/k8s-schemas/v1.35, pruned by
prune_k8s_schemas.py). Standard library only.

Strict the way kubectl-validate or kubeconform --strict are: an object schema
that lists "properties" is closed (a field it does not list is an error)
unless it says otherwise with additionalProperties or
x-kubernetes-preserve-unknown-fields; the Kubernetes documents never set
additionalProperties: false themselves, so without this a misspelt field
(`imagePullPolcy`) would pass, and the API server would drop it silently.

What it checks: $ref (within a document), allOf (every branch), oneOf
(exactly one branch; how IntOrString and Quantity are written), anyOf, type,
required, enum, additionalProperties as a map's value schema, formats int32,
int64, byte (base64) and int-or-string, x-kubernetes-int-or-string, and
x-kubernetes-list-type map/set uniqueness (two env vars or ports with the same
name). Not checked: the API server's own validation beyond the schema
(name syntax, cross-field rules such as minAvailable vs maxUnavailable).

    schemas = Schemas("tests/data/k8s-schemas/v1.35")
    errors = schemas.validate(obj)      # [] when obj is valid
"""
import base64
import binascii
import json
import os

REF = "#/components/schemas/"


class Schemas:
    def __init__(self, directory):
        self.docs = {}       # file name -> {schema name -> schema}
        self.by_gvk = {}     # (group, version, kind) -> (file name, schema name)
        for fn in sorted(os.listdir(directory)):
            if not fn.endswith(".json"):
                continue
            with open(os.path.join(directory, fn), encoding="utf-8") as f:
                schemas = json.load(f)["components"]["schemas"]
            self.docs[fn] = schemas
            for name, s in schemas.items():
                for gvk in s.get("x-kubernetes-group-version-kind", []):
                    key = (gvk.get("group", ""), gvk["version"], gvk["kind"])
                    self.by_gvk.setdefault(key, (fn, name))

    def kinds(self):
        return sorted(self.by_gvk)

    def validate(self, obj):
        """Errors of one whole object (list of "path: message" strings)."""
        if not isinstance(obj, dict):
            return ["$: not an object"]
        api, kind = obj.get("apiVersion"), obj.get("kind")
        if not isinstance(api, str) or not isinstance(kind, str):
            return ["$: apiVersion and kind are required strings"]
        group, _, version = api.rpartition("/")
        key = (group, version, kind)
        if key not in self.by_gvk:
            return [f"$: no schema for {api} {kind}"]
        fn, name = self.by_gvk[key]
        errors = []
        _Walker(self.docs[fn], errors).check(obj, {"$ref": REF + name}, f"{kind}/{_name(obj)}")
        return errors


def _name(obj):
    meta = obj.get("metadata")
    return meta.get("name", "?") if isinstance(meta, dict) else "?"


def _type_ok(value, t):
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    raise ValueError(f"schema type {t!r} unknown to the validator")


class _Walker:
    def __init__(self, schemas, errors):
        self.schemas = schemas
        self.errors = errors

    def resolve(self, schema):
        seen = set()
        while "$ref" in schema:
            ref = schema["$ref"]
            if not ref.startswith(REF) or ref in seen:
                raise ValueError(f"cannot resolve $ref {ref}")
            seen.add(ref)
            target = self.schemas.get(ref[len(REF):])
            if target is None:
                raise ValueError(f"dangling $ref {ref}")
            schema = target
        return schema

    def flatten(self, schema):
        """One schema from schema, its $ref and its allOf branches: the union of
        properties and required, the first type/format/additionalProperties."""
        schema = self.resolve(schema)
        if "allOf" not in schema:
            return schema
        out = {k: v for k, v in schema.items() if k != "allOf"}
        for branch in schema["allOf"]:
            b = self.flatten(branch)
            for k, v in b.items():
                if k == "properties":
                    out.setdefault("properties", {})
                    out["properties"] = {**v, **out["properties"]}
                elif k == "required":
                    out["required"] = sorted(set(out.get("required", [])) | set(v))
                elif k == "oneOf" and "oneOf" in out:
                    out.setdefault("allOf", []).append({"oneOf": v})
                else:
                    out.setdefault(k, v)
        return out

    def fits(self, value, schema, path):
        trial = _Walker(self.schemas, [])
        trial.check(value, schema, path)
        return not trial.errors

    def check(self, value, schema, path):
        s = self.flatten(schema)
        err = self.errors.append

        for branch in s.get("allOf", []):  # left over by flatten: nested oneOfs
            self.check(value, branch, path)
        if "oneOf" in s:
            n = sum(self.fits(value, b, path) for b in s["oneOf"])
            if n != 1:
                kinds = "/".join(self.flatten(b).get("type", "?") for b in s["oneOf"])
                err(f"{path}: {value!r} matches {n} of the allowed forms ({kinds}), not exactly one")
                return
        if "anyOf" in s and not any(self.fits(value, b, path) for b in s["anyOf"]):
            err(f"{path}: {value!r} matches none of the allowed forms")
            return

        if value is None:
            if not s.get("nullable"):
                err(f"{path}: null is not allowed")
            return
        if s.get("x-kubernetes-int-or-string"):
            if not (_type_ok(value, "integer") or _type_ok(value, "string")):
                err(f"{path}: expected an integer or a string, got {type(value).__name__}")
            return

        t = s.get("type")
        if t and not _type_ok(value, t):
            err(f"{path}: expected {t}, got {type(value).__name__} {value!r}")
            return
        if "enum" in s and value not in s["enum"]:
            err(f"{path}: {value!r} is not one of {s['enum']}")
        self.check_format(value, s.get("format"), path)

        if isinstance(value, dict):
            self.check_object(value, s, path)
        elif isinstance(value, list):
            self.check_array(value, s, path)

    def check_format(self, value, fmt, path):
        if fmt == "int32" and isinstance(value, int) and not -(2**31) <= value < 2**31:
            self.errors.append(f"{path}: {value} is out of int32 range")
        elif fmt == "int64" and isinstance(value, int) and not -(2**63) <= value < 2**63:
            self.errors.append(f"{path}: {value} is out of int64 range")
        elif fmt == "byte" and isinstance(value, str):
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                self.errors.append(f"{path}: not base64")

    def check_object(self, value, s, path):
        props = s.get("properties")
        extra = s.get("additionalProperties")
        for req in s.get("required", []):
            if req not in value:
                self.errors.append(f"{path}: required field {req!r} is missing")
        for k, v in value.items():
            if props is not None and k in props:
                self.check(v, props[k], f"{path}.{k}")
            elif isinstance(extra, dict):
                self.check(v, extra, f"{path}.{k}")
            elif extra is True or s.get("x-kubernetes-preserve-unknown-fields"):
                continue
            elif props is not None:
                self.errors.append(f"{path}: unknown field {k!r}")
            # neither properties nor additionalProperties: a free-form object
            # (FieldsV1, RawExtension), open by definition.

    def check_array(self, value, s, path):
        items = s.get("items")
        for i, v in enumerate(value):
            if items is not None:
                self.check(v, items, f"{path}[{i}]")
        lt = s.get("x-kubernetes-list-type")
        if lt == "set":
            seen = []
            for v in value:
                if v in seen:
                    self.errors.append(f"{path}: duplicate set item {v!r}")
                seen.append(v)
        elif lt == "map":
            keys = s.get("x-kubernetes-list-map-keys", [])
            seen = set()
            for v in value:
                if not isinstance(v, dict):
                    continue
                k = tuple(json.dumps(v.get(key), sort_keys=True) for key in keys)
                if k in seen:
                    self.errors.append(f"{path}: duplicate item with {dict(zip(keys, k))}")
                seen.add(k)
