"""``validate_records``: one batch (a page) of Rutter records through the pre-pass and the pandera models.

The flow per batch: records that are not objects are rejected outright; each typed column is pulled
out by the pre-pass (``extract``); the entity's model checks the frame lazily, so every failure of
every row is found in one go; each child array is flattened and checked by its own model, a child
problem rejecting the whole parent record (``line_items[2].price``); pandera's failure cases, which
carry the row index, become per-record errors. Per-field tallies decide schema-level failures
(Rutter changed) and unknown keys are reported as drift.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.config import ValidationDepth, config_context

from rutter_pipeline.entities import Column, EntitySpec
from rutter_pipeline.validation.drift import detect_drift
from rutter_pipeline.validation.extract import (
    ColumnData,
    Issue,
    extract_columns,
    flatten_children,
    follow,
    key_sets,
    read_keys,
    timestamp_reason,
)
from rutter_pipeline.validation.jsonvalues import json_safe, json_type
from rutter_pipeline.validation.models import child_model_for, model_for
from rutter_pipeline.validation.report import FieldStats, Reject, ValidationReport, schema_failures_from


class ModelMismatch(RuntimeError):
    """The frame built by the pre-pass does not fit the model: a bug here, not a data problem."""


def validate_records(spec: EntitySpec, records: Sequence[Any], *, tolerance: float = 0.0) -> ValidationReport:
    """Validate one batch of ``spec`` records as fetched from Rutter (before anything is loaded).

    ``tolerance`` is the share of rejected records the batch may have and still pass (0 = strict).
    """
    if not 0.0 <= tolerance <= 1.0:
        raise ValueError(f"tolerance is a share of records between 0 and 1, got {tolerance}")
    records = records if isinstance(records, list) else list(records)
    errors: dict[int, list[dict]] = {}
    if set(map(type, records)) <= {dict}:
        rows, positions = records, None
    else:
        rows, positions = [], []
        for index, record in enumerate(records):
            if isinstance(record, dict):
                rows.append(record)
                positions.append(index)
            else:
                reason = f"each {spec.name} record should be an object, got {json_type(record)}"
                errors[index] = [_error("$", "record_type", record, reason)]

    stats: dict[str, FieldStats] = {}
    keys = read_keys(rows, *key_sets(spec.columns, spec.children))
    issues = _check_table(model_for(spec), spec.columns, rows, keys, stats, "")
    drift = detect_drift(rows, spec.known_fields | spec.typed_keys, f"{spec.name}.")
    for child in spec.children:
        kids = flatten_children(keys[child.field], child)
        stats[child.field] = kids.stats
        issues.extend(kids.issues)
        child_keys = read_keys(kids.rows, *key_sets(child.columns))
        model = child_model_for(child)
        for issue in _check_table(model, child.columns, kids.rows, child_keys, stats, f"{child.field}[]."):
            path = f"{child.field}[{kids.positions[issue.row]}].{issue.path}"
            issues.append(Issue(int(kids.parents[issue.row]), path, issue.check, issue.value, issue.reason))
        known = child.known_fields | {c.path[0] for c in child.columns}
        drift.extend(detect_drift(kids.rows, known, f"{child.field}[]."))

    for issue in issues:
        index = issue.row if positions is None else positions[issue.row]
        errors.setdefault(index, []).append(_error(issue.path, issue.check, issue.value, issue.reason))
    valid = [record for index, record in enumerate(records) if index not in errors] if errors else list(records)
    return ValidationReport(
        entity=spec.name,
        total=len(records),
        valid=valid,
        rejects=[Reject(records[index], errors[index]) for index in sorted(errors)],
        schema_failures=schema_failures_from(stats),
        drift=drift,
        tolerance=tolerance,
        field_stats=stats,
    )


def _error(field: str, check: str, value: Any, reason: str) -> dict:
    message = reason if field == "$" else f"{field}: {reason}"
    return {"field": field, "check": check, "failure_case": json_safe(value), "message": message}


def _check_table(
    model: type[pa.DataFrameModel],
    columns: tuple[Column, ...],
    rows: list[dict],
    keys: dict[str, np.ndarray],
    stats: dict[str, FieldStats],
    prefix: str,
) -> list[Issue]:
    """Pre-pass and model over one table's rows (all dicts, their top-level ``keys`` read already).

    Tallies go into ``stats`` under ``prefix``.
    """
    extracted = extract_columns(len(rows), columns, keys)
    for data in extracted:
        stats[prefix + data.path] = data.stats
    found: dict[str, list[Issue]] = {}
    if rows:
        frame = pd.DataFrame({data.name: data.array for data in extracted})
        for issue in _model_issues(model, frame, rows, extracted):
            found.setdefault(issue.path, []).append(issue)
    # In column order, so that a record's errors read like the entity table.
    return [issue for data in extracted for issue in (*data.issues, *found.get(data.path, ()))]


def _model_issues(
    model: type[pa.DataFrameModel], frame: pd.DataFrame, rows: list[dict], extracted: list[ColumnData]
) -> list[Issue]:
    """Run the model lazily and turn its failure cases (column, check, row index) into issues."""
    # Pandera can be switched off or limited to schema-only checks through the environment; this gate
    # must always check the data.
    with (
        config_context(validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA),
        warnings.catch_warnings(),
    ):
        # pandera's failure-case formatting trips a pandas deprecation on every failing batch: pandera's
        # to fix, and only noise in run logs.
        warnings.filterwarnings("ignore", "The behavior of DataFrame concatenation", FutureWarning)
        try:
            model.validate(frame, lazy=True, inplace=True)
        except pa.errors.SchemaErrors as exc:
            failures = exc.failure_cases
        else:
            return []
    by_name = {data.name: data for data in extracted}
    seen: set[tuple[int, str]] = set()
    issues = []
    columns = ("column", "check", "index", "failure_case")
    for name, check, index, case in zip(*(failures[c].tolist() for c in columns), strict=True):
        data = by_name.get(name)
        if data is None or index is None or (isinstance(index, float) and math.isnan(index)):
            raise ModelMismatch(f"{model.__name__}: {check} failed on {name!r} as a whole ({case!r})")
        row = int(index)
        if row in data.settled or (row, name) in seen:
            continue  # the pre-pass gave the reason, or an earlier check of this cell did
        seen.add((row, name))
        value = follow(rows[row], data.column.path)
        short, reason = _describe(data, check, value)
        issues.append(Issue(row, data.path, short, value, reason))
    return issues


def _describe(data: ColumnData, check: str, value: Any) -> tuple[str, str]:
    """A stable check name and a reason that says what Rutter sent and what was expected."""
    name = check.split("(", 1)[0]
    shown = repr(json_safe(value))
    if name == "not_nullable":
        return name, "is null but Rutter marks it non-nullable"
    if name == "isin":
        return name, f"{shown} is not one of Rutter's values ({', '.join(data.column.enum or ())})"
    if name in {"coerce_dtype", "dtype"} and data.column.pg_type == "timestamptz":
        return "timestamp", timestamp_reason(value)
    return name, f"{shown} failed {check}"
