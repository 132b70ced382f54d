"""Which daily partition a record belongs to (docs/architecture.md §4.3): the UTC day of its partition field.

The loader computes this in Python while it streams pages into the landing table, so the landing
rows carry their day and a record from outside the range being landed is caught at the door.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from rutter_pipeline.entities import EntitySpec
from rutter_pipeline.warehouse.errors import MissingPartitionField


def parse_timestamp(value: str) -> datetime:
    """Rutter's ISO 8601 timestamps (``2023-01-02T02:34:56.000Z``); no offset means UTC."""
    ts = datetime.fromisoformat(value)
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def partition_day(spec: EntitySpec, record: dict[str, Any]) -> date:
    """The UTC day of ``spec.partition_field``, or of ``spec.partition_fallback`` when that is null."""
    value = record.get(spec.partition_field)
    if value is None and spec.partition_fallback:
        value = record.get(spec.partition_fallback)
    if value is None:
        fields = " or ".join(f for f in (spec.partition_field, spec.partition_fallback) if f)
        raise MissingPartitionField(
            f"{spec.name} record {record.get('id')!r} has no {fields}: it cannot be assigned to a day"
        )
    if not isinstance(value, str):
        raise MissingPartitionField(
            f"{spec.name} record {record.get('id')!r}: {spec.partition_field} is not an ISO timestamp"
        )
    try:
        ts = parse_timestamp(value)
    except ValueError as exc:
        raise MissingPartitionField(
            f"{spec.name} record {record.get('id')!r}: cannot read a day from {value!r}"
        ) from exc
    return ts.astimezone(UTC).date()
