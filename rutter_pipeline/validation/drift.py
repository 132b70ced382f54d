"""Drift: fields Rutter sends that its 2023-03-14 spec does not define.

New fields are how an API grows, so they are reported (a warning on the schema check) and kept in the
``extra`` JSONB column, never treated as failures. The common case, no new field at all, costs one
C-level set union over the batch's keys.
"""

from __future__ import annotations

from rutter_pipeline.validation.jsonvalues import json_type
from rutter_pipeline.validation.report import DriftField


def detect_drift(rows: list[dict], known: frozenset[str], prefix: str) -> list[DriftField]:
    """Keys of ``rows`` outside ``known``, each with how many rows carry it and a value's JSON type.

    ``prefix`` makes the path: ``"orders."`` gives ``orders.loyalty_points``, ``"line_items[]."``
    gives ``line_items[].gift``.
    """
    if not rows:
        return []
    unknown = set().union(*rows) - known
    drift = []
    for key in sorted(unknown, key=str):
        carriers = [row[key] for row in rows if key in row]
        example = next((value for value in carriers if value is not None), None)
        drift.append(DriftField(f"{prefix}{key}", len(carriers), json_type(example)))
    return drift
