"""The entity table's ``known_fields`` list every field Rutter's 2023-03-14 spec defines, no more.

Drift detection is only as good as these sets: a field missing here would be reported as drift on
every page, a field too many would hide a real addition. The spec excerpt is kept in the repository
(``docs/reference/``, see its README) so a clone runs this test; ``RUTTER_SPEC_PATH`` points elsewhere,
e.g. at a newer spec to see what a version upgrade would change.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from rutter_pipeline.entities import ENTITIES

SPEC_PATH = Path(
    os.environ.get(
        "RUTTER_SPEC_PATH",
        Path(__file__).resolve().parents[2] / "docs/reference/rutter-openapi-2023-03-14-commerce.yaml",
    )
)
# entity -> (spec schema of a record, {child field: path to the child's item schema})
SPEC_OBJECTS = {
    "orders": ("Order", {"line_items": ("line_items", "items")}),
    "products": ("Product", {"variants": ("variants", "items")}),
    "customers": ("Customer", {}),
    "transactions": ("OrderTransaction", {}),
}


@pytest.fixture(scope="module")
def schemas() -> dict:
    assert SPEC_PATH.exists(), f"Rutter spec excerpt not found at {SPEC_PATH} (RUTTER_SPEC_PATH overrides it)"
    return yaml.safe_load(SPEC_PATH.read_text())["components"]["schemas"]


@pytest.mark.parametrize("entity", list(ENTITIES))
def test_known_fields_match_the_spec(schemas, entity):
    spec = ENTITIES[entity]
    schema_name, children = SPEC_OBJECTS[entity]
    schema = schemas[schema_name]
    assert spec.known_fields == set(schema["properties"])
    assert {c.field for c in spec.children} == set(children)
    for child in spec.children:
        node = schema["properties"]
        for key in children[child.field]:
            node = node[key]
        assert child.known_fields == set(node["properties"]), child.field
        assert child.required is (child.field in schema["required"])


@pytest.mark.parametrize("entity", list(ENTITIES))
def test_typed_columns_read_known_fields(entity):
    spec = ENTITIES[entity]
    assert spec.typed_keys <= spec.known_fields
    for child in spec.children:
        assert {c.path[0] for c in child.columns} <= child.known_fields
