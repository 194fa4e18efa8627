"""The CRDs are generated from the models and kept in step with them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from patchwarden.api.crd import KINDS, crd, render, render_peering

CRDS = Path(__file__).resolve().parents[3] / "crds"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_crds_directory_is_generated_from_the_models(kind: object) -> None:
    path = CRDS / f"patchwarden.io_{kind.plural}.yaml"  # type: ignore[attr-defined]
    assert path.exists(), f"{path} is missing: run `make crds`"
    assert path.read_text() == render(kind), f"{path} is stale: run `make crds`"  # type: ignore[arg-type]


def test_peering_crds_are_generated_too() -> None:
    path = CRDS / "kopf.dev_peerings.yaml"
    assert path.read_text() == render_peering(), f"{path} is stale: run `make crds`"
    assert sorted(p.name for p in CRDS.iterdir()) == [
        "kopf.dev_peerings.yaml",
        *sorted(f"patchwarden.io_{k.plural}.yaml" for k in KINDS),
    ]


def walk(node: object, path: str = "") -> list[tuple[str, dict[str, object]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.get("properties", {}).items():
            out += walk(value, f"{path}.{key}")
        if "items" in node:
            out += walk(node["items"], f"{path}[]")
    return out


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schemas_are_structural(kind: object) -> None:
    schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[arg-type]
    for path, node in walk(schema):
        assert "type" in node, f"{path} has no type"
        assert not {"$ref", "anyOf", "title", "const"} & set(node), f"{path} is not structural"


def test_conditions_are_a_map_keyed_by_type_and_cross_field_rules_name_a_field() -> None:
    system = crd(KINDS[0])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    conditions = system["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    rules = system["properties"]["spec"]["x-kubernetes-validations"]
    assert {r["fieldPath"] for r in rules} == {
        ".workloads",
        ".components",
        ".package",
        ".maintenance.cadence",
        ".updates.classes",
        ".updates.approval",
    }


def test_every_kind_has_status_subresource_printer_columns_short_names_and_category() -> None:
    for kind in KINDS:
        doc = yaml.safe_load(render(kind))
        version = doc["spec"]["versions"][0]
        # A ReleaseCatalog is written by the provider only: it has no status.
        expected = {"status": {}} if kind.status is not None else None
        assert version.get("subresources") == expected
        assert doc["spec"]["scope"] == (
            "Cluster" if kind.kind == "ReleaseCatalog" else "Namespaced"
        )
        assert version["additionalPrinterColumns"]
        assert doc["spec"]["names"]["shortNames"]
        assert doc["spec"]["names"]["categories"] == ["patchwarden"]


def test_the_reference_documentation_is_generated_from_the_models() -> None:
    from patchwarden.api.reference import render as render_reference

    path = CRDS.parent / "docs" / "reference.md"
    assert path.read_text() == render_reference(), f"{path} is stale: run `make crds`"
    text = path.read_text()
    assert "| `spec.maintenance.windows[].cron` |" in text
    assert "rule: a PaaS system needs a package" in text
