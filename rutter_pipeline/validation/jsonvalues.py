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


NUL = "\x00"
# How a NUL character is written in what ``escape_nul`` returns: the six characters of its JSON escape.
NUL_ESCAPED = "\\u0000"


def nul_paths(value: Any, path: str = "") -> list[str]:
    """Paths (``title``, ``line_items[2].name``, a key's own path) of the strings in ``value`` holding a NUL.

    PostgreSQL's text and jsonb types cannot hold U+0000 (jsonb refuses even its ``\\u0000``
    escape), so a record with one cannot be landed as it is. A walk of the whole record, meant
    for the rare record whose JSON showed a NUL escape: the loader looks at the bytes first.
    """
    found: list[str] = []
    if isinstance(value, str):
        if NUL in value:
            found.append(path or "$")
    elif isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and NUL in key:
                found.append(child.replace(NUL, NUL_ESCAPED))
            found.extend(nul_paths(item, child.replace(NUL, NUL_ESCAPED)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found.extend(nul_paths(item, f"{path}[{index}]"))
    return found


def escape_nul(value: Any) -> Any:
    """``value`` with every NUL in its strings and keys written as the text ``\\u0000``, for jsonb.

    Used to store a record in ``rutter.rejects`` that jsonb would refuse. Every other character is
    kept; the reject's errors name the paths that held a NUL, so a literal ``\\u0000`` already in
    the record stays distinguishable in practice.
    """
    if isinstance(value, str):
        return value.replace(NUL, NUL_ESCAPED) if NUL in value else value
    if isinstance(value, dict):
        return {(k.replace(NUL, NUL_ESCAPED) if isinstance(k, str) else k): escape_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [escape_nul(v) for v in value]
    return value
