"""What a parsed JSON value may look like for each warehouse type, and how to echo values in reports.

Records arrive as parsed JSON, so a field's JSON type is its Python type.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from rutter_pipeline.entities import PgType

NoneType = type(None)
# How a report names the JSON type a warehouse type expects.
EXPECTED_JSON: dict[PgType, str] = {
    "numeric": "number",
    "text": "string",
    "timestamptz": "string",
    "boolean": "boolean",
}

_MAX_ECHO_CHARS = 300


def accepts(pg_type: PgType, value: Any) -> bool:
    """Whether a non-null value has the JSON type ``pg_type`` expects (bools are not numbers).

    This decides the value-by-value path; it agrees with the whole-column verdict of pandas'
    ``infer_dtype`` used on the fast path (numpy scalars included).
    """
    if isinstance(value, bool | np.bool_):
        return pg_type == "boolean"
    if pg_type == "numeric":
        return isinstance(value, int | float | np.integer | np.floating)
    if pg_type == "boolean":
        return False
    return isinstance(value, str)


def json_type(value: Any) -> str:
    """The JSON type name of a parsed value ("string", "number", ...), or the Python type for non-JSON values."""
    if value is None:
        return "null"
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, int | float | np.integer | np.floating):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def json_safe(value: Any) -> Any:
    """A value that ``json.dumps`` accepts, for failure cases in reports and Dagster metadata.

    Scalars pass through (non-finite floats become strings); containers are kept when they serialise
    to a few hundred characters and are otherwise replaced by a truncated JSON string, so one
    runaway value cannot bloat check metadata. Anything that is not JSON becomes its ``repr``.
    """
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, str) and len(value) > _MAX_ECHO_CHARS:
            return value[:_MAX_ECHO_CHARS] + "..."
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
            return str(value)
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        text = repr(value)
        return text if len(text) <= _MAX_ECHO_CHARS else text[:_MAX_ECHO_CHARS] + "..."
    if len(text) > _MAX_ECHO_CHARS:
        return text[:_MAX_ECHO_CHARS] + "..."
    return orjson.loads(text)
