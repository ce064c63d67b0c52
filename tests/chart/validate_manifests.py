#!/usr/bin/env python3
"""Validates Kubernetes manifests offline.

    validate_manifests.py [-k 1.37]... [--crd FILE]... [--skip GROUP/KIND]... FILE...

Every YAML document in each FILE must pass, for every -k version:
  * built-in kinds: kubernetes-validate's bundled schemas, strict (unknown
    fields are errors, as with `kubectl apply --validate=strict`);
  * kinds defined by a --crd file: that CRD's openAPIV3Schema (strict too,
    except under x-kubernetes-preserve-unknown-fields);
  * kinds named by --skip (e.g. monitoring.coreos.com/ServiceMonitor or
    cert-manager.io/Certificate, whose CRDs are not available offline):
    reported as skipped, not checked;
  * any other kind fails: a kind nobody has a schema for is usually a typo.
Also fails on documents without apiVersion/kind/metadata.name and on two
objects with the same apiVersion group, kind, namespace and name.

Prints one line per failure and a last line "N objects ok, N skipped, N failed";
exits 1 when anything failed.

kubernetes-validate's own CLI is not used: it only warns (exit 0) about kinds
it has no schema for, so a typo'd kind or a custom resource would pass unseen.
"""
import argparse
import copy
import re
import sys

import jsonschema
import yaml
from kubernetes_validate import utils as kv


def group_of(api_version):
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def crd_schema_to_jsonschema(node, strict):
    """Turns a CRD structural schema into a JSON Schema jsonschema accepts."""
    if isinstance(node, list):
        return [crd_schema_to_jsonschema(n, strict) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {k: crd_schema_to_jsonschema(v, strict) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = crd_schema_to_jsonschema(value, strict)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [crd_schema_to_jsonschema(v, strict) for v in value]
        elif key in ("nullable",) or key.startswith("x-kubernetes-"):
            continue
        else:
            out[key] = copy.deepcopy(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        strict
        and "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def load_crds(paths, strict):
    """Maps (group, version, kind) to a JSON Schema validator."""
    schemas = {}
    for path in paths:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            if doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec.get("versions", []):
                raw = version.get("schema", {}).get("openAPIV3Schema", {"type": "object"})
                schema = crd_schema_to_jsonschema(raw, strict)
                # The API server supplies these; a CRD schema rarely lists them.
                props = schema.setdefault("properties", {})
                props.setdefault("apiVersion", {"type": "string"})
                props.setdefault("kind", {"type": "string"})
                props.setdefault("metadata", {"type": "object"})
                jsonschema.Draft7Validator.check_schema(schema)
                key = (spec["group"], version["name"], spec["names"]["kind"])
                schemas[key] = jsonschema.Draft7Validator(schema)
    return schemas


def load_docs(path):
    """[(source, object)]: source is the template named by helm's "# Source:"
    comment before the document, or None."""
    with open(path) as f:
        text = f.read()
    out = []
    for chunk in re.split(r"^---[ \t]*$", text, flags=re.M):
        m = re.search(r"^# Source: (.+)$", chunk, flags=re.M)
        for doc in yaml.safe_load_all(chunk):
            if doc is not None:
                out.append((m.group(1).strip() if m else None, doc))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", "--kubernetes-version", action="append", dest="versions")
    ap.add_argument("--crd", action="append", default=[], help="CRD file(s) whose kinds may appear")
    ap.add_argument("--skip", action="append", default=[], help="GROUP/KIND to accept unchecked")
    ap.add_argument("--no-strict", action="store_true", help="allow unknown fields")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    strict = not args.no_strict
    versions = args.versions or [kv.latest_version()]
    crds = load_crds(args.crd, strict)
    skip = set(args.skip)

    ok = skipped = failed = 0
    seen = {}

    def fail(where, msg):
        nonlocal failed
        failed += 1
        print(f"FAIL {where}: {msg}")

    for path in args.files:
        try:
            docs = load_docs(path)
        except yaml.YAMLError as e:
            fail(path, f"YAML does not parse: {e}")
            continue
        for i, (source, doc) in enumerate(docs):
            where = source or f"{path}#{i}"
            if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
                fail(where, "not a Kubernetes object (no apiVersion/kind)")
                continue
            name = (doc.get("metadata") or {}).get("name")
            if not name:
                fail(where, f"{doc['kind']} has no metadata.name")
                continue
            api, kind = doc["apiVersion"], doc["kind"]
            group = group_of(api)
            ns = doc["metadata"].get("namespace", "")
            where = f"{source or path}: {kind}/{name}"
            ident = (group, kind, ns, name)
            if ident in seen:
                fail(where, f"duplicate object (also in {seen[ident]})")
                continue
            seen[ident] = source or path

            crd_key = (group, api.rsplit("/", 1)[-1], kind)
            if crd_key in crds:
                errors = sorted(crds[crd_key].iter_errors(doc), key=lambda e: list(e.path))
                if errors:
                    for e in errors:
                        fail(where, f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message} (CRD schema)")
                else:
                    ok += 1
                continue
            if f"{group}/{kind}" in skip:
                skipped += 1
                print(f"SKIP {where}: no schema for {api} {kind} (--skip)")
                continue

            good = True
            for version in versions:
                try:
                    kv.validate(doc, version, strict)
                except kv.ValidationError as e:
                    good = False
                    fail(where, f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message} (Kubernetes {e.version})")
                except kv.SchemaNotFoundError as e:
                    good = False
                    fail(where, f"{e.message}; unknown kind or removed API version")
                except kv.VersionNotSupportedError as e:
                    print(f"FATAL {e.message}")
                    return 2
            ok += good

    print(f"{ok} objects ok, {skipped} skipped, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
