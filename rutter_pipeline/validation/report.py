"""The outcome of validating a batch of Rutter records: valid records, rejects, schema failures, drift.

Validation runs page by page, so a report must combine: ``merge`` adds two reports as if their
records had been validated together. That holds for schema failures too (a field missing from every
record of one page but present on the next is not a schema change), which is why each report keeps
per-field tallies (``FieldStats``) and decides schema failures from them rather than from its pages.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rutter_pipeline.validation.jsonvalues import json_safe


@dataclass
class Reject:
    """A record that failed row-level validation, with every reason (validation is lazy).

    ``record`` is the object as received: a dict, except for the rare non-object item of a page,
    which is kept as it was so that ``rutter.rejects`` shows exactly what Rutter sent. Each error is
    ``{"field", "check", "failure_case", "message"}`` with ``field`` a path such as ``total_price``,
    ``customer.id`` or ``line_items[2].price``.
    """

    record: Any
    errors: list[dict]


@dataclass
class DriftField:
    """A field Rutter sends that its 2023-03-14 spec does not define (it lands in ``extra``)."""

    path: str  # "orders.loyalty_points" or "line_items[].gift"
    count: int  # how many objects carry it
    example_type: str  # JSON type of a non-null value ("null" when every value was null)


@dataclass
class FieldStats:
    """Tallies of one typed field over a batch: enough to tell "Rutter changed" from "a few bad rows"."""

    required: bool
    expected: str  # the JSON type the field should have
    rows: int = 0  # objects that should carry the field
    absent: int = 0  # ... of which lacked the key
    wrong_type: int = 0  # ... of which had a non-null value of another JSON type
    well_typed: bool = False  # whether any object had a non-null value of the expected type
    seen_type: str | None = None  # a JSON type seen instead of ``expected``

    def merged(self, other: FieldStats) -> FieldStats:
        return FieldStats(
            required=self.required or other.required,
            expected=self.expected,
            rows=self.rows + other.rows,
            absent=self.absent + other.absent,
            wrong_type=self.wrong_type + other.wrong_type,
            well_typed=self.well_typed or other.well_typed,
            seen_type=self.seen_type or other.seen_type,
        )

    def failure(self, path: str) -> dict | None:
        """The schema-level failure these tallies show (docs/architecture.md §5.2), if any."""
        if self.required and self.rows and self.absent == self.rows:
            detail = f"required field absent from all {self.rows} objects that should carry it"
            return {"field": path, "kind": "missing", "detail": detail, "count": self.rows}
        if self.wrong_type and not self.well_typed:
            detail = f"expected {self.expected}, got {self.seen_type} in all {self.wrong_type} non-null values"
            return {"field": path, "kind": "retyped", "detail": detail, "count": self.wrong_type}
        return None


def schema_failures_from(stats: dict[str, FieldStats]) -> list[dict]:
    """Schema-level failures of a batch, in the entity table's column order."""
    return [failure for path, s in stats.items() if (failure := s.failure(path)) is not None]


_INDEX = re.compile(r"\[\d+\]")


@dataclass
class ValidationReport:
    """Everything the landing asset and its blocking check need to know about a batch."""

    entity: str
    total: int
    valid: list[dict]  # records that passed, in input order (the same objects)
    rejects: list[Reject]
    schema_failures: list[dict]  # {"field", "kind": "missing" | "retyped", "detail", "count"}
    drift: list[DriftField]
    tolerance: float = 0.0
    field_stats: dict[str, FieldStats] = field(default_factory=dict, repr=False, compare=False)

    @property
    def reject_rate(self) -> float:
        return len(self.rejects) / self.total if self.total else 0.0

    @property
    def passed(self) -> bool:
        """No schema failure and rejects within the tolerance (drift never fails a batch)."""
        return not self.schema_failures and self.reject_rate <= self.tolerance

    def failure_cases(self, limit: int = 20) -> list[dict]:
        """Schema failures first, then row errors in record order, for check metadata (JSON-safe)."""
        cases = [
            {
                "id": None,
                "field": f["field"],
                "check": f"schema_{f['kind']}",
                "failure_case": None,
                "message": f["detail"],
            }
            for f in self.schema_failures[:limit]
        ]
        for reject in self.rejects:
            record_id = reject.record.get("id") if isinstance(reject.record, dict) else None
            for error in reject.errors:
                if len(cases) >= limit:
                    return cases
                cases.append({"id": json_safe(record_id), **error})
        return cases

    def metadata(self) -> dict:
        """A JSON-safe summary: counts, errors by check and by field, schema failures and drift."""
        errors = [error for reject in self.rejects for error in reject.errors]
        return {
            "entity": self.entity,
            "total": self.total,
            # every record is either valid or rejected; ``valid`` may have been dropped after loading
            "valid": self.total - len(self.rejects),
            "rejected": len(self.rejects),
            "reject_rate": round(self.reject_rate, 6),
            "tolerance": self.tolerance,
            "passed": self.passed,
            "error_counts": dict(Counter(e["check"] for e in errors).most_common()),
            "error_fields": dict(Counter(_INDEX.sub("[]", e["field"]) for e in errors).most_common()),
            "schema_failures": [dict(f) for f in self.schema_failures],
            "drift": [{"path": d.path, "count": d.count, "example_type": d.example_type} for d in self.drift],
        }

    def merge(self, other: ValidationReport) -> ValidationReport:
        """The report of both batches together (per-page reports of one partition, in page order)."""
        if other.entity != self.entity:
            raise ValueError(f"cannot merge a {other.entity} report into a {self.entity} report")
        if other.tolerance != self.tolerance:
            raise ValueError(f"cannot merge reports with tolerances {self.tolerance} and {other.tolerance}")
        stats = dict(self.field_stats)
        for path, s in other.field_stats.items():
            stats[path] = stats[path].merged(s) if path in stats else s
        if _has_stats(self) and _has_stats(other):
            failures = schema_failures_from(stats)
        else:  # a report built by hand: keep what it says
            failures = _merge_listed_failures(self.schema_failures, other.schema_failures)
        drift: dict[str, DriftField] = {d.path: DriftField(d.path, d.count, d.example_type) for d in self.drift}
        for d in other.drift:
            if d.path in drift:
                drift[d.path].count += d.count
                if drift[d.path].example_type == "null":
                    drift[d.path].example_type = d.example_type
            else:
                drift[d.path] = DriftField(d.path, d.count, d.example_type)
        return ValidationReport(
            entity=self.entity,
            total=self.total + other.total,
            valid=[*self.valid, *other.valid],
            rejects=[*self.rejects, *other.rejects],
            schema_failures=failures,
            drift=list(drift.values()),
            tolerance=self.tolerance,
            field_stats=stats,
        )


def _has_stats(report: ValidationReport) -> bool:
    return bool(report.field_stats) or report.total == 0


def _merge_listed_failures(first: list[dict], second: list[dict]) -> list[dict]:
    merged: dict[tuple[str, str], dict] = {}
    for failure in [*first, *second]:
        key = (failure["field"], failure["kind"])
        if key in merged:
            merged[key]["count"] += failure["count"]
        else:
            merged[key] = dict(failure)
    return list(merged.values())
