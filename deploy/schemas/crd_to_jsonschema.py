"""Convert a CustomResourceDefinition's openAPIV3Schema into a strict JSON Schema file.

    python deploy/schemas/crd_to_jsonschema.py CRD.yaml [CRD.yaml ...]

writes deploy/schemas/<group>/<kind>_<version>.json for every served version. Strict, as the
API server is with field validation on (kubectl's default since 1.25): every object that
lists its properties and neither sets additionalProperties nor
x-kubernetes-preserve-unknown-fields gets additionalProperties: false, so a misspelled
field fails instead of being pruned in silence. apiVersion and kind are pinned. Descriptions
are dropped (they are most of a CRD's size and none of its rules); CEL rules
(x-kubernetes-validations) cannot be checked by JSON Schema and are left as inert keys.
A Go (RE2) pattern that starts ``^(?i)`` becomes ``(?i)^``: Python wants global flags first.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

SCHEMAS = Path(__file__).resolve().parent
DRAFT = "http://json-schema.org/draft-07/schema#"


def strict(node: Any) -> Any:
    """A copy of an OpenAPI v3 schema node as strict JSON Schema (draft 7)."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "exclusiveMinimum" in node or "exclusiveMaximum" in node or "$ref" in node:
        # OpenAPI 3.0 booleans mean something else in draft 7; no CRD used here has them
        raise ValueError(f"unsupported keyword in {sorted(node)}")
    out = {key: strict(value) for key, value in node.items() if key != "description"}
    if isinstance(node.get("pattern"), str):
        out["pattern"] = re.sub(r"^\^(\(\?[a-zA-Z]+\))", r"\1^", node["pattern"])
        re.compile(out["pattern"])  # re.error: a pattern Python cannot read
    if "properties" in node:
        out["properties"] = {name: strict(sub) for name, sub in node["properties"].items()}
        if "additionalProperties" not in node and not node.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    if node.get("nullable") and "type" in node:
        out["type"] = [node["type"], "null"]
    return out


def convert(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """JSON Schemas of a CRD's served versions, by file name relative to deploy/schemas."""
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    schemas = {}
    for version in crd["spec"]["versions"]:
        if not version.get("served", True):
            continue
        schema = strict(version["schema"]["openAPIV3Schema"])
        schema["properties"]["apiVersion"] = {"enum": [f"{group}/{version['name']}"]}
        schema["properties"]["kind"] = {"enum": [kind]}
        schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind"})
        name = f"{group}/{kind.lower()}_{version['name']}.json"
        schemas[name] = {"$schema": DRAFT, "title": f"{kind} {group}/{version['name']}", **schema}
    return schemas


def main(paths: list[str]) -> None:
    for path in paths:
        for name, schema in convert(yaml.safe_load(Path(path).read_text())).items():
            target = SCHEMAS / name
            target.parent.mkdir(exist_ok=True)
            target.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
            print(f"{path} -> {target.relative_to(SCHEMAS.parent.parent)}")


if __name__ == "__main__":
    main(sys.argv[1:])
