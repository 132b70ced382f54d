"""The pre-pass: pull typed columns out of records into arrays the pandera models can check.

A pandas column cannot hold "a number, except this one string" as a typed column, so the JSON-level
facts are settled here, per value, before the model sees the frame: a missing key, a value of the
wrong JSON type, a parent on the path that is not an object, a child array that is not an array.
Those cells enter the frame as null and are marked *settled* so the model's verdict on them (null in
a non-nullable column) does not repeat the reason. Everything else (nullability, enums, timestamp
parsing, dtypes) is the model's call.

Speed matters (every page of every partition passes here), and the cost is touching each value
once: all keys of a table are read in one C-level pass (``itemgetter`` into ``np.fromiter``), each
column's JSON types are confirmed by one vectorised call (``infer_dtype``, or building the
``string`` array), and the value-by-value path runs only for a column that holds something
unexpected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

from rutter_pipeline.entities import ChildSpec, Column, PgType
from rutter_pipeline.validation.jsonvalues import EXPECTED_JSON, NoneType, accepts, json_safe, json_type
from rutter_pipeline.validation.models import BOOLEAN_DTYPE
from rutter_pipeline.validation.report import FieldStats


class _Marker:
    """A sentinel that can never be a parsed JSON value."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


MISSING = _Marker("missing")  # the key is absent
_BROKEN = _Marker("broken")  # a parent on the path is not an object (already reported)


@dataclass(slots=True)
class Issue:
    """One reason a row fails: ``row`` is its position in the rows being checked."""

    row: int
    path: str
    check: str
    value: Any
    reason: str  # what is wrong, without the path (child issues get their parent's path later)


@dataclass
class ColumnData:
    """One typed column extracted from the rows: the frame array, what the pre-pass found, tallies."""

    name: str
    path: str
    column: Column
    array: Any
    stats: FieldStats
    issues: list[Issue] = field(default_factory=list)
    settled: set[int] = field(default_factory=set)


def follow(row: dict, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in a row whose path the pre-pass found intact (for error messages)."""
    value: Any = row
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


# ``infer_dtype`` verdicts (nulls skipped) meaning "every value has the JSON type the column expects"
# (text has its own check: see ``_clean_array``).
# Anything else (a sentinel for a missing key, a bool among numbers, a number among strings) sends
# the column down the value-by-value path.
_CLEAN_VERDICTS: dict[PgType, frozenset[str]] = {
    "numeric": frozenset({"integer", "floating", "mixed-integer-float", "empty"}),
    "timestamptz": frozenset({"string", "empty"}),
    "boolean": frozenset({"boolean", "empty"}),
}


# Strings pandas' ISO 8601 parser turns into a null or into the current time instead of refusing them.
_NOT_TIMESTAMPS = frozenset({"", "NaT", "nat", "NAT", "nan", "NaN", "NAN", "now", "today"})


def timestamp_reason(value: Any) -> str:
    return f"{json_safe(value)!r} is not an ISO 8601 timestamp"


def key_sets(columns: tuple[Column, ...], children: tuple[ChildSpec, ...] = ()) -> tuple[list[str], list[str]]:
    """The top-level keys the typed columns and child arrays read: (required ones, optional ones)."""
    required = [c.path[0] for c in columns if c.required] + [c.field for c in children if c.required]
    every = [c.path[0] for c in columns] + [c.field for c in children]
    required = list(dict.fromkeys(required))
    return required, [key for key in dict.fromkeys(every) if key not in required]


def read_keys(rows: list[dict], required: list[str], optional: list[str]) -> dict[str, np.ndarray]:
    """Each key's values over ``rows`` (all dicts) as an object array, ``MISSING`` where a row lacks it.

    One C-level pass reads every key when no row lacks one (the common case); otherwise the
    required keys are read in one pass again and the rest key by key.
    """
    values = _grid(rows, required + optional)
    if values is None:
        values = {**(_grid(rows, required) or _grid_by_key(rows, required)), **_grid_by_key(rows, optional)}
    return values


def extract_columns(count: int, columns: tuple[Column, ...], keys: dict[str, np.ndarray]) -> list[ColumnData]:
    """Every typed column of ``count`` rows from their top-level ``keys``, checked for presence and JSON type."""
    return [_extract(count, column, keys[column.path[0]]) for column in columns]


def _grid(rows: list[dict], keys: list[str]) -> dict[str, np.ndarray] | None:
    """The keys' values as object arrays in one C-level pass, or None if a row lacks one of them.

    ``itemgetter`` pulls all keys of a row at once and ``np.fromiter`` stores each tuple as a record
    of object fields as soon as it is made (values kept as they are, arrays included), so no list
    of tuples builds up for the garbage collector to walk.
    """
    if not keys:
        return {}
    if not rows:
        return {key: np.empty(0, dtype=object) for key in keys}
    getter = itemgetter(*keys)
    try:
        if len(keys) == 1:
            return {keys[0]: np.fromiter(map(getter, rows), dtype=object, count=len(rows))}
        grid = np.fromiter(map(getter, rows), dtype=np.dtype([(k, object) for k in keys]), count=len(rows))
    except KeyError:
        return None
    return {key: grid[key] for key in keys}


def _grid_by_key(rows: list[dict], keys: list[str]) -> dict[str, np.ndarray]:
    """The slower, exact path: one pass per key, ``MISSING`` where a row lacks it."""
    return {key: np.fromiter((r.get(key, MISSING) for r in rows), dtype=object, count=len(rows)) for key in keys}


def _extract(count: int, column: Column, head_values: np.ndarray) -> ColumnData:
    path = column.path
    data = ColumnData(
        name=column.name,
        path=".".join(path),
        column=column,
        array=None,
        stats=FieldStats(required=column.required, expected=EXPECTED_JSON[column.pg_type], rows=count),
    )
    values = head_values
    if len(path) > 1:
        nested = values.tolist()
        for depth in range(1, len(path)):
            nested = _descend(nested, path, depth, data)
        values = np.fromiter(nested, dtype=object, count=len(nested))
    has_value = any(v is not None for v in values)  # stops at the first value, as a rule
    data.array = _clean_array(column.pg_type, values)
    if data.array is None:
        cleaned = _sort_out(values.tolist(), data)
        data.array = _frame_array(column.pg_type, np.fromiter(cleaned, dtype=object, count=len(cleaned)))
    else:
        data.stats.well_typed = has_value
    return data


def _clean_array(pg_type: PgType, values: np.ndarray) -> Any:
    """The frame array when every non-null value has the expected JSON type, else None (one pass).

    A ``string`` array accepts only str and nulls, so building it is the check for text; the other
    types ask ``infer_dtype`` first because their conversions would accept "12.5" or True. Timestamp
    strings that pandas would quietly read as null or as "now" take the value-by-value path too.
    """
    if pg_type == "text":
        try:
            return _frame_array(pg_type, values)
        except ValueError:
            return None
    if infer_dtype(values, skipna=True) not in _CLEAN_VERDICTS[pg_type]:
        return None
    if pg_type == "timestamptz" and not _NOT_TIMESTAMPS.isdisjoint(values):
        return None
    return _frame_array(pg_type, values)


def _descend(values: list[Any], path: tuple[str, ...], depth: int, data: ColumnData) -> list[Any]:
    """One step down a nested source: a null parent gives null, a non-object parent is an issue."""
    key = path[depth]
    if set(map(type, values)) <= {dict, NoneType}:
        return [None if v is None else v.get(key, MISSING) for v in values]
    parent = ".".join(path[:depth])
    out: list[Any] = []
    for row, value in enumerate(values):
        if isinstance(value, dict):
            out.append(value.get(key, MISSING))
        elif value is None or value is MISSING or value is _BROKEN:
            out.append(value)
        else:
            seen = json_type(value)
            data.issues.append(Issue(row, parent, "json_type", value, f"should be an object, got {seen}"))
            data.settled.add(row)
            _count_wrong(data.stats, seen)
            out.append(_BROKEN)
    return out


def _sort_out(values: list[Any], data: ColumnData) -> list[Any]:
    """The value-by-value path: report missing keys and wrong JSON types, null them for the frame."""
    column, stats = data.column, data.stats
    expected = EXPECTED_JSON[column.pg_type]
    out: list[Any] = []
    for row, value in enumerate(values):
        if value is None or value is _BROKEN:
            out.append(None)
        elif value is MISSING:
            stats.absent += 1
            data.settled.add(row)  # an absent optional key is fine even where an explicit null is not
            if column.required:
                data.issues.append(Issue(row, data.path, "required", None, "required field is missing"))
            out.append(None)
        elif accepts(column.pg_type, value):
            stats.well_typed = True
            if column.pg_type == "timestamptz" and value in _NOT_TIMESTAMPS:
                data.issues.append(Issue(row, data.path, "timestamp", value, timestamp_reason(value)))
                data.settled.add(row)
                value = None
            out.append(value)
        else:
            seen = json_type(value)
            data.issues.append(Issue(row, data.path, "json_type", value, f"should be a {expected}, got {seen}"))
            data.settled.add(row)
            _count_wrong(stats, seen)
            out.append(None)
    return out


def _count_wrong(stats: FieldStats, seen: str) -> None:
    stats.wrong_type += 1
    stats.seen_type = stats.seen_type or seen


def _frame_array(pg_type: PgType, values: np.ndarray) -> Any:
    """The array the model expects for a warehouse type (see ``models``), from JSON-clean values."""
    if pg_type == "numeric":
        try:
            return values.astype(np.float64)
        except OverflowError:  # an integer beyond float range: still a JSON number, so keep it as inf
            return np.array([_as_float(v) for v in values.tolist()], dtype=np.float64)
    if pg_type == "text":  # a copy: StringArray turns None into NA in place, and arrays may be shared
        return pd.arrays.StringArray(values.copy())
    if pg_type == "boolean":
        return pd.array(values, dtype=BOOLEAN_DTYPE)
    return values  # timestamps: ISO strings, parsed by the model


def _as_float(value: Any) -> float:
    if value is None:
        return float("nan")
    try:
        return float(value)
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")


@dataclass
class ChildRows:
    """A child array of every row, flattened: each child row knows its parent row and its index."""

    rows: list[dict]
    parents: np.ndarray  # parent row of each child row
    positions: np.ndarray  # index of each child row in its parent's array
    stats: FieldStats
    issues: list[Issue] = field(default_factory=list)  # on parent rows: the array or an element is not right


def flatten_children(values: np.ndarray, child: ChildSpec) -> ChildRows:
    """The child objects in ``values`` (each row's ``child.field``), array-level problems as parent-row issues."""
    name = child.field
    arrays = values.tolist()
    stats = FieldStats(required=child.required, expected="array", rows=len(arrays))
    issues: list[Issue] = []
    if set(map(type, arrays)) <= {list}:
        stats.well_typed = bool(arrays)
    else:
        arrays = [_child_array(row, value, child, stats, issues) for row, value in enumerate(arrays)]
    lengths = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
    items = list(chain.from_iterable(arrays))
    parents = np.repeat(np.arange(len(arrays)), lengths)
    positions = np.arange(len(items)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    if not set(map(type, items)) <= {dict}:
        keep = np.fromiter((isinstance(item, dict) for item in items), dtype=bool, count=len(items))
        for k in np.flatnonzero(~keep).tolist():
            path = f"{name}[{positions[k]}]"
            message = f"should be an object, got {json_type(items[k])}"
            issues.append(Issue(int(parents[k]), path, "json_type", items[k], message))
        items = [item for item, kept in zip(items, keep.tolist(), strict=True) if kept]
        parents, positions = parents[keep], positions[keep]
    return ChildRows(items, parents, positions, stats, issues)


def _child_array(row: int, value: Any, child: ChildSpec, stats: FieldStats, issues: list[Issue]) -> Any:
    """A child array checked value by value; anything but an array counts as an empty one."""
    name = child.field
    if isinstance(value, list):
        stats.well_typed = True
        return value
    if value is MISSING:
        stats.absent += 1
        if child.required:
            issues.append(Issue(row, name, "required", None, "required field is missing"))
    elif value is None:
        issues.append(Issue(row, name, "not_nullable", None, "is null; Rutter always sends an array"))
    else:
        seen = json_type(value)
        _count_wrong(stats, seen)
        issues.append(Issue(row, name, "json_type", value, f"should be an array, got {seen}"))
    return ()
