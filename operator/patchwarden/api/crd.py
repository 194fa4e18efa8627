"""Generate the CustomResourceDefinitions from the pydantic models.

``python -m patchwarden.api.crd DIR`` (``make crds``) writes one YAML file per
kind; a test fails when ``crds/`` differs from what this module generates.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from patchwarden.api.catalog import ReleaseCatalogSpec, ReleaseCatalogStatus
from patchwarden.api.common import GROUP, VERSION
from patchwarden.api.request import UpdateRequestSpec, UpdateRequestStatus
from patchwarden.api.run import UpdateRunSpec, UpdateRunStatus
from patchwarden.api.system import ManagedSystemSpec, ManagedSystemStatus

# Keywords a structural schema may carry; everything else pydantic emits
# (title, examples, additionalProperties: false, const …) is dropped.
_KEEP = {
    "type",
    "properties",
    "required",
    "items",
    "enum",
    "pattern",
    "format",
    "description",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "additionalProperties",
}


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn pydantic's JSON schema into a Kubernetes structural schema.

    References are inlined, ``Optional`` unions collapse to their type (an
    absent field is how Kubernetes says "none"), and only keywords a CRD
    accepts are kept.
    """
    node = dict(schema)
    while "$ref" in node or "anyOf" in node:
        if "$ref" in node:
            target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
            node = {**target, **node}
        else:
            options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
            if len(options) != 1:
                raise ValueError(f"cannot express a union of {options} structurally")
            node = {**options[0], **node}
    if "default" in node and node["default"] is None:
        del node["default"]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            out[key] = value
        elif key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict) and value:
                out[key] = structural(value, defs)
        elif key in _KEEP:
            out[key] = value
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out["type"] = "object"
    return out


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.pop("$defs", {})
    return structural(schema, defs)


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_names: list[str]
    spec: type[BaseModel]
    status: type[BaseModel] | None
    columns: list[dict[str, str]] = field(default_factory=list)
    scope: str = "Namespaced"
    fixed: tuple[str, str] | None = None
    """A transition rule on the spec (CEL, ``oldSelf`` the spec before the edit) and the
    message the API server gives an edit that breaks it."""

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"


def _col(name: str, path: str, kind: str = "string", priority: int = 0) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": kind, "jsonPath": path}
    if priority:
        col["priority"] = priority
    return col


_READY = _col("Ready", '.status.conditions[?(@.type=="Ready")].status')
_AGE = _col("Age", ".metadata.creationTimestamp", "date")

KINDS = [
    Kind(
        "ManagedSystem",
        "managedsystems",
        ["msys"],
        ManagedSystemSpec,
        ManagedSystemStatus,
        [
            _col("Customer", ".spec.customer"),
            _col("Model", ".spec.serviceModel"),
            _col("Package", ".spec.package"),
            _col("Workloads", ".spec.workloads[*].name", priority=1),
            _col("Eligible", ".status.eligible", "boolean"),
            _col("Next Window", ".status.nextWindow.start"),
            _col("Scheduled", '.status.conditions[?(@.type=="Scheduled")].status'),
            _col("Last Result", ".status.lastRun.result"),
            _READY,
            _AGE,
        ],
    ),
    Kind(
        "UpdateRequest",
        "updaterequests",
        ["ureq"],
        UpdateRequestSpec,
        UpdateRequestStatus,
        [
            _col("System", ".spec.systemRef.name"),
            _col("Ticket", ".spec.ticket"),
            _col("State", ".status.state"),
            _col("Window", ".status.scheduledWindow.start"),
            _col("Message", ".status.message", priority=1),
            _AGE,
        ],
        # What a request is about and where it comes from; its classes, notBefore, reason
        # and retries may change (they count for the runs it starts after the edit).
        fixed=(
            "self.systemRef == oldSelf.systemRef && self.ticket == oldSelf.ticket",
            "an UpdateRequest's systemRef and ticket are fixed when it is created; file a new "
            "request",
        ),
    ),
    Kind(
        "UpdateRun",
        "updateruns",
        ["urun"],
        UpdateRunSpec,
        UpdateRunStatus,
        [
            _col("System", ".spec.systemRef.name"),
            _col("Trigger", ".spec.trigger"),
            _col("Phase", ".status.phase"),
            _col("Window", ".spec.window.start"),
            _col("Changes", ".status.summary"),
            _col("Message", ".status.message", priority=1),
            _AGE,
        ],
        # A run's targets, window and trigger are what it was decided with: a run edited
        # mid-way would set images no one planned (issue 35, part 4).
        fixed=(
            "self == oldSelf",
            "an UpdateRun's spec is fixed when the run is created; delete the run to stop it",
        ),
    ),
    Kind(
        "ReleaseCatalog",
        "releasecatalogs",
        ["rcat"],
        ReleaseCatalogSpec,
        ReleaseCatalogStatus,
        [
            _col("Components", ".spec.components[*].name", priority=1),
            _col("Halted", ".status.rollout[?(@.halted)].version"),
            _AGE,
        ],
        scope="Cluster",
    ),
]


def crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    spec_schema = model_schema(kind.spec)
    if kind.fixed:
        rule = {"rule": kind.fixed[0], "message": kind.fixed[1]}
        spec_schema["x-kubernetes-validations"] = [
            *spec_schema.get("x-kubernetes-validations", []),
            rule,
        ]
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": spec_schema,
    }
    version: dict[str, Any] = {"name": VERSION, "served": True, "storage": True}
    if kind.status is not None:
        properties["status"] = model_schema(kind.status)
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.name},
        "spec": {
            "group": GROUP,
            "scope": kind.scope,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": kind.short_names,
                "categories": ["patchwarden"],
            },
            "versions": [
                {
                    **version,
                    "additionalPrinterColumns": kind.columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": spec_schema.get("description", ""),
                            "required": ["spec"],
                            "properties": properties,
                        }
                    },
                }
            ],
        },
    }


def _peering(kind: str, plural: str, scope: str) -> dict[str, Any]:
    """kopf's peering resources (kopf.dev/v1), where operator replicas meet."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kopf.dev"},
        "spec": {
            "group": "kopf.dev",
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


PEERING = [
    _peering("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
    _peering("KopfPeering", "kopfpeerings", "Namespaced"),
]


def all_crds() -> list[dict[str, Any]]:
    """Every CRD patchwarden needs: its four kinds and kopf's peering."""
    return [crd(k) for k in KINDS] + PEERING


HEADER = "# Generated by `make crds` from operator/patchwarden/api; do not edit.\n"


def render(kind: Kind) -> str:
    return HEADER + yaml.safe_dump(crd(kind), sort_keys=False, width=100)


def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in KINDS:
        path = directory / f"{GROUP}_{kind.plural}.yaml"
        path.write_text(render(kind))
        written.append(path)
    path = directory / "kopf.dev_peerings.yaml"
    path.write_text(render_peering())
    written.append(path)
    return written


def render_peering() -> str:
    return HEADER + "---\n".join(yaml.safe_dump(c, sort_keys=False, width=100) for c in PEERING)


if __name__ == "__main__":
    from patchwarden.api.reference import render as render_reference

    for target in sys.argv[1:] or ["crds"]:
        for written_path in write_all(Path(target)):
            print(written_path)
    Path("docs/reference.md").write_text(render_reference())
    print("docs/reference.md")
